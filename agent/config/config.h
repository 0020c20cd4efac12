/*
 * The agent's configuration: one table per component (agent/config/config_table.c) drives the
 * YAML file, the environment, command-line flags, validation, `dlotel config --print` and
 * docs/configuration.md (DESIGN.md section 3).
 *
 * Precedence, lowest first: built-in defaults < YAML file < environment < command-line flags and
 * the Python typed config. Every value remembers where it came from, and a value never replaces
 * one from a higher source, so the order of the load calls does not matter: loading the
 * environment before the file gives the same configuration as the other way round.
 *
 * The one call path (what `dlotel agent` and the launcher do):
 *
 *     struct config_errors errs;
 *     config_errors_init(&errs);
 *     struct config *cfg;
 *     int rv = config_build(&cfg, file_or_NULL, environ, flags, n_flags, &errs);
 *     config_errors_format(&errs, &text, true);     (print warnings and errors either way)
 *     if (rv != 0) { exit 2 }                        (cfg is untouched on failure)
 *     ... read cfg->batch.max_size, cfg->exporters[i].compression ...
 *     config_free(cfg);
 *     config_errors_cleanup(&errs);
 *
 * or, step by step: config_new() -> config_load_yaml_file() -> config_load_env() -> config_set()
 * for each flag -> config_finalize(). Loaders collect every problem into a struct config_errors
 * (each with its key path) instead of stopping at the first, so a user fixes a file in one go.
 *
 * Not thread-safe; a finalized config is read-only and may be read from any thread.
 */
#ifndef DLOTEL_CONFIG_H
#define DLOTEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/log.h"

/* Where a value came from. Higher numbers win; FLAG and API rank the same (the later wins). */
enum config_source {
    CONFIG_SOURCE_DEFAULT = 0,
    CONFIG_SOURCE_FILE = 1, /* The YAML file (--config, DATALAYER_OTEL_CONFIG). */
    CONFIG_SOURCE_ENV = 2,  /* DATALAYER_* variables. */
    CONFIG_SOURCE_FLAG = 3, /* Command-line flags. */
    CONFIG_SOURCE_API = 4,  /* The Python typed config (key=value pairs), same rank as flags. */
};

/* Limits on what a configuration may hold; input past them is refused with a message. */
#define CONFIG_MAX_FILE_BYTES   (256u * 1024u) /* A config file. */
#define CONFIG_MAX_DEPTH        16             /* YAML nesting. */
#define CONFIG_MAX_NODES        10000          /* YAML nodes after alias expansion. */
#define CONFIG_MAX_MAPPING_KEYS 256            /* Keys in one YAML mapping. */
#define CONFIG_MAX_STRING       4096           /* Bytes in one string value. */
#define CONFIG_MAX_ITEMS        64             /* Items in one list or map value. */
#define CONFIG_MAX_EXPORTERS    32
#define CONFIG_MAX_NAME         63 /* Bytes in an exporter name. */
#define CONFIG_MAX_DIAGS        100
#define CONFIG_MAX_PROCESSORS   (64u * 1024u) /* Bytes of one processors_* list as JSON. */

/* The largest batch.max_bytes (exclusive): the Datalayer collector refuses larger requests. */
#define CONFIG_UPSTREAM_MAX_REQUEST (20u * 1024u * 1024u)

/*
 * The start of the one error config_finalize() reports when nothing is configured to receive
 * telemetry (no exporter, no upstream, no sink), with path "exporters". The launcher recognises
 * it to fall back to the local sink (docs/embedding.md).
 */
#define CONFIG_NO_DESTINATION_MESSAGE "nothing to send telemetry to"

/* Suffix appended to DATALAYER_RUN_URL to make the default upstream. */
#define CONFIG_RUN_URL_OTLP_PATH "/api/otel/v1/otlp"

/* Enum options are stored as these C enums; their order matches the tables' choice lists. */
enum config_exporter_type {
    CONFIG_EXPORTER_UNSET = -1, /* Only before config_finalize(), which requires a type. */
    CONFIG_EXPORTER_OTLP_HTTP = 0,
    CONFIG_EXPORTER_OTLP_GRPC = 1,
    CONFIG_EXPORTER_DEBUG = 2,
    CONFIG_EXPORTER_FILE = 3,
    CONFIG_EXPORTER_SINK = 4,
};

enum config_compression {
    CONFIG_COMPRESSION_GZIP = 0,
    CONFIG_COMPRESSION_ZSTD = 1,
    CONFIG_COMPRESSION_NONE = 2,
};

enum config_fsync {
    CONFIG_FSYNC_ALWAYS = 0, /* After every append: nothing acknowledged is ever lost. */
    CONFIG_FSYNC_BATCH = 1,  /* After each batch. */
    CONFIG_FSYNC_NEVER = 2,  /* Leave it to the kernel. */
};

enum config_verbosity {
    CONFIG_VERBOSITY_SUMMARY = 0,
    CONFIG_VERBOSITY_DETAILED = 1,
};

enum config_overload {
    CONFIG_OVERLOAD_SHED = 0, /* Answer 429/RESOURCE_EXHAUSTED with Retry-After. */
};

enum config_jwt_algorithm {
    CONFIG_JWT_HS256 = 0,
    CONFIG_JWT_HS384 = 1,
    CONFIG_JWT_HS512 = 2,
    CONFIG_JWT_RS256 = 3,
};

enum config_log_format {
    CONFIG_LOG_TEXT = 0,
    CONFIG_LOG_JSON = 1,
};

/* Signals, as a bit mask (see config_exporter_signals()). */
enum config_signal {
    CONFIG_SIGNAL_TRACES = 1,
    CONFIG_SIGNAL_METRICS = 2,
    CONFIG_SIGNAL_LOGS = 4,
};

/* A list of strings. Owned by the config. */
struct config_list {
    char **items;
    size_t n;
};

struct config_kv {
    char *key;
    char *value;
};

/* A string map in insertion order; keys are unique. Owned by the config. */
struct config_map {
    struct config_kv *items;
    size_t n;
};

/*
 * One named exporter (the `exporters` map). Durations are in nanoseconds, sizes in bytes.
 * Strings are NULL when unset. After config_finalize() every exporter has a type, the defaults
 * that depend on the type are resolved, and paths are absolute.
 */
struct config_exporter {
    char *name;
    enum config_exporter_type type;
    char *endpoint; /* otlp_http: base URL, /v1/traces etc. appended. otlp_grpc: http(s)://host:port
                     */
    struct config_map headers;
    enum config_compression compression;
    uint64_t request_timeout_ns;
    struct {
        bool enabled;
        uint64_t initial_interval_ns;
        uint64_t max_interval_ns;
        uint64_t max_elapsed_time_ns; /* 0: retry until shutdown. */
    } retry;
    struct {
        char *ca_file;
        char *cert_file;
        char *key_file;
        bool insecure_skip_verify;
    } tls;
    struct {
        bool enabled;
        char *path;
        uint64_t max_bytes;
        enum config_fsync fsync;
    } disk_queue;
    uint64_t memory_queue_max_bytes;
    char *path;                      /* file exporter */
    enum config_verbosity verbosity; /* debug exporter */

    /* Internal to agent/config: where each field came from, and why the exporter exists. */
    uint8_t source_[32];
    uint8_t via_[32];
    const char *origin_;
};

/*
 * The effective configuration. A plain struct so that the rest of the agent reads typed fields
 * (cfg->batch.max_size, cfg->exporters[i].compression). Durations are in nanoseconds, sizes in
 * bytes, strings NULL when unset. Fields ending in '_' are internal to agent/config.
 */
struct config {
    struct {
        char *grpc_endpoint; /* host:port */
        char *http_endpoint; /* host:port */
        uint64_t grpc_max_message_size;
        uint64_t http_max_body_size;
        int64_t max_connections; /* per receiver */
        uint64_t request_timeout_ns;
    } receivers;
    struct {
        int64_t max_size; /* items */
        uint64_t max_bytes;
        uint64_t timeout_ns;
    } batch;
    struct {
        uint64_t memory_max_bytes;
        enum config_overload overload;
        uint64_t retry_after_ns;
    } queue;
    /* Sorted by name after config_finalize(). */
    struct config_exporter *exporters;
    size_t n_exporters;
    /* Exporter names per signal; after config_finalize() unset lists hold every exporter. */
    struct config_list exporters_traces;
    struct config_list exporters_metrics;
    struct config_list exporters_logs;
    /*
     * Processor chains per signal (docs/processors.md): a JSON array of processor objects
     * ({"kind":"filter",...}), NULL when none. agent/processor compiles them.
     */
    char *processors_traces;
    char *processors_metrics;
    char *processors_logs;
    struct {
        bool enabled;
        char *data_dir;
        int64_t max_rows_per_file;
        int64_t retention_days;           /* 0: keep forever. */
        uint64_t flush_interval_ns;       /* 0: no age flushes. */
        uint64_t maintenance_interval_ns; /* 0: maintenance only on demand. */
        uint64_t disk_cap_bytes;          /* 0: no cap. */
        uint64_t gc_grace_ns;
        uint64_t queue_max_bytes;
        uint64_t memory_limit_bytes;
        int64_t threads;
    } sink;
    struct {
        int64_t port; /* 0: any free port (tests). */
        char *host;
        char *jwt_secret;
        char *jwt_issuer;
        enum config_jwt_algorithm jwt_algorithm;
        char *iam_api_key;
        char *cors_origin;
        bool allow_unauthenticated;
        bool ingest_auth; /* POST /otlp/v1/ on the API port needs a token when auth is on. */
    } api;
    struct {
        char *otlp_url;
        char *run_url;
        char *api_key;
    } upstream;
    struct {
        char *endpoint; /* host:port */
    } admin;
    struct {
        enum log_level level;
        char *file; /* NULL: stderr */
        enum config_log_format format;
        uint64_t max_size;
    } log;
    uint64_t shutdown_timeout_ns;
    bool enabled;
    char *state_dir;

    /* Internal to agent/config. */
    uint8_t source_[64];
    uint8_t via_[64];
    bool finalized_;
    char **envp_; /* The environment ${env:NAME} and ~ expansion read; NULL: environ. */
};

/* One problem found while loading or validating. */
struct config_diag {
    bool warning;  /* Warnings (unknown DATALAYER_OTEL_AGENT_* variables...) do not fail. */
    char *where;   /* "agent.yaml:12:5", "env DATALAYER_OTEL_PORT", "flag --grpc-endpoint", "" */
    char *path;    /* The key, "exporters.up.compression"; "" when not about one key. */
    char *message; /* "unknown key (did you mean 'compression'?)" */
};

/* A list of problems. Past CONFIG_MAX_DIAGS entries only |dropped| grows. */
struct config_errors {
    struct config_diag *items;
    size_t n;
    size_t n_errors;
    size_t n_warnings;
    size_t dropped;
};

void config_errors_init(struct config_errors *e);
void config_errors_cleanup(struct config_errors *e);

/*
 * Appends one line per problem, "error: <where>: <path>: <message>\n" (empty parts left out),
 * warnings only when |warnings| is true. Returns 0 or the buf_append() error.
 */
int config_errors_format(const struct config_errors *e, struct buf *out, bool warnings);

/*
 * Creates a configuration holding the built-in defaults. Returns 0, DLOTEL_ERR_NOMEM, or
 * DLOTEL_ERR_INTERNAL when a table default does not parse (a bug, caught by the unit tests).
 * *out is untouched on failure.
 */
int config_new(struct config **out);

/* Frees |cfg| and everything it owns. NULL is a no-op. */
void config_free(struct config *cfg);

/*
 * Loads a YAML file at CONFIG_SOURCE_FILE. Problems go to |errs| with their key path and
 * "file:line:column". Returns 0, DLOTEL_ERR_CONFIG (problems found; the valid keys were still
 * applied), DLOTEL_ERR_IO (cannot read; also added to |errs|), DLOTEL_ERR_TOO_LARGE (over
 * CONFIG_MAX_FILE_BYTES), DLOTEL_ERR_NOMEM, or DLOTEL_ERR_INVALID_ARG after config_finalize().
 */
int config_load_yaml_file(struct config *cfg, const char *path, struct config_errors *errs);

/*
 * Loads YAML from memory at CONFIG_SOURCE_FILE; |name| (may be NULL) names it in messages.
 * The text must be UTF-8, one document, nested at most CONFIG_MAX_DEPTH deep, at most
 * CONFIG_MAX_NODES nodes once aliases are expanded, with no duplicate keys. "<<" merge keys
 * are honoured. String values may use ${env:NAME} (and $$ for a literal $). An empty document
 * changes nothing. Returns as config_load_yaml_file().
 */
int config_load_yaml_string(struct config *cfg, const char *data, size_t len, const char *name,
                            struct config_errors *errs);

/*
 * Loads the DATALAYER_* variables (with their aliases) and the DATALAYER_OTEL_AGENT_EXPORTER_*
 * per-exporter variables from |envp| ("NAME=value" strings, NULL-terminated; NULL means the
 * process environment) at CONFIG_SOURCE_ENV. Empty values count as unset. An unknown
 * DATALAYER_OTEL_AGENT_* name is a warning, not an error, because the environment is shared.
 * |envp| is remembered (borrowed until config_finalize() returns) for ${env:NAME} in YAML
 * and for ~ and $XDG_* expansion. Returns 0, DLOTEL_ERR_CONFIG, DLOTEL_ERR_NOMEM or
 * DLOTEL_ERR_INVALID_ARG after config_finalize().
 */
int config_load_env(struct config *cfg, char **envp, struct config_errors *errs);

/*
 * Sets one key from text, the funnel for flags and the Python typed config. |key| is a dotted
 * path ("batch.timeout", "exporters.up.retry.max_interval") or a flag name ("--batch-timeout").
 * Lists are comma-separated ("a,b"), maps "k1=v1,k2=v2", an empty string unsets a string and
 * empties a list or map; "exporters.NAME.headers.KEY" sets one header (its value may hold
 * commas) and adds it to the headers already there. A value from a lower source than the current
 * one is validated, then ignored. Returns 0, DLOTEL_ERR_CONFIG (unknown key or bad value, in
 * |errs|), DLOTEL_ERR_NOMEM, or DLOTEL_ERR_INVALID_ARG after config_finalize().
 */
int config_set(struct config *cfg, const char *key, const char *value, enum config_source src,
               struct config_errors *errs);

/* Like config_set() with "key=value" in one string (the Python typed config's pairs). */
int config_set_kv(struct config *cfg, const char *key_eq_value, enum config_source src,
                  struct config_errors *errs);

/*
 * Resolves and validates, once, after every load: expands ~ and makes paths absolute,
 * synthesizes the default exporters when none is configured ("datalayer", type otlp_http, from
 * upstream.otlp_url or upstream.run_url + CONFIG_RUN_URL_OTLP_PATH with
 * "Authorization: Bearer <upstream.api_key>"; "sink" when sink.enabled), fills the defaults
 * that depend on an exporter's type, sorts exporters by name, fills unset exporters_* lists
 * with every exporter, then checks everything (URLs, references, own listen addresses, bounds,
 * files) and reports every problem. Returns 0 or DLOTEL_ERR_CONFIG / DLOTEL_ERR_NOMEM; later
 * loads and sets return DLOTEL_ERR_INVALID_ARG.
 */
int config_finalize(struct config *cfg, struct config_errors *errs);

/* A flag or key=value pair for config_build(): |key| is "--flag" or a dotted path. */
struct config_setting {
    const char *key;
    const char *value;
};

/*
 * The one call path: defaults, the YAML file (|file|, else $DATALAYER_OTEL_CONFIG from |envp|,
 * else none), the environment, |flags| at CONFIG_SOURCE_FLAG, then config_finalize(). On
 * success *out is a finalized config the caller frees; on failure *out is untouched and |errs|
 * says why. |envp| is only borrowed during the call (NULL: the process environment). Returns
 * 0, DLOTEL_ERR_CONFIG, DLOTEL_ERR_IO, DLOTEL_ERR_TOO_LARGE or DLOTEL_ERR_NOMEM.
 */
int config_build(struct config **out, const char *file, char **envp,
                 const struct config_setting *flags, size_t n_flags, struct config_errors *errs);

/*
 * Appends the configuration as YAML, one key a line with a comment saying where its value came
 * from ("# default", "# file", "# env DATALAYER_RUN_URL", "# flag"). With |mask_secrets|,
 * secrets and sensitive header values (names containing auth, token, secret, key, password or
 * cookie) print as "***". Unmasked output loads back to the same configuration (same hash).
 * Returns 0 or a buf error.
 */
int config_print(const struct config *cfg, struct buf *out, bool mask_secrets);

/*
 * A stable 64-bit hash (FNV-1a) of the effective values, secrets included and sources not:
 * two processes that would run the same agent get the same hash (the launcher compares them).
 */
uint64_t config_hash(const struct config *cfg);

/*
 * Appends docs/configuration.md, generated from the tables: precedence, units, the default
 * upstream, then every key with its type, default, environment variables, flag and description.
 */
int config_markdown(struct buf *out);

/* Returns the exporter named |name| or NULL. */
const struct config_exporter *config_exporter_find(const struct config *cfg, const char *name);

/* Returns the signals (enum config_signal bits) routed to |e| in a finalized |cfg|. */
unsigned config_exporter_signals(const struct config *cfg, const struct config_exporter *e);

/* A command-line flag the tables define, for a CLI's parser and --help. */
struct config_flag_info {
    const char *flag;  /* "--batch-timeout" */
    const char *path;  /* "batch.timeout" */
    const char *value; /* What the value looks like: "DURATION", "HOST:PORT", "true|false"... */
    const char *doc;   /* One sentence. */
    bool is_bool;      /* "--flag" alone means true. */
};

/* Returns the table's flags; |*n| receives their count. The array is static. */
const struct config_flag_info *config_flags(size_t *n);

/* Returns the flag named |flag| ("--x" or "x", optionally "--x=value" up to the '=') or NULL. */
const struct config_flag_info *config_flag_find(const char *flag);

/*
 * Value parsers, shared with anything else that reads sizes and durations. Sizes: a whole
 * number of bytes with an optional unit, B, K/KB, M/MB, G/GB, T/TB (powers of 1000) or
 * Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB (powers of 1024), case-insensitive, a fraction allowed when
 * the result is a whole number of bytes ("1.5MiB" yes, "0.1KiB" no). Durations: one or more
 * number+unit parts ("1m30s", "1.5s"), units ns, us, ms, s, m, h; "0" alone is zero; a bare
 * number is milliseconds only when |bare_ms| is true. Return 0, DLOTEL_ERR_BAD_INPUT (not that
 * kind of value) or DLOTEL_ERR_TOO_LARGE (past 2^64-1).
 */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration(const char *s, bool bare_ms, uint64_t *out_ns);

#endif
