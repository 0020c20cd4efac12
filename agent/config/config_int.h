/*
 * Internal to agent/config: the option tables and the helpers the loaders share.
 */
#ifndef DLOTEL_CONFIG_INT_H
#define DLOTEL_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

enum config_kind {
    CONFIG_KIND_STRING,
    CONFIG_KIND_SECRET, /* A string printed as "***". */
    CONFIG_KIND_PATH,   /* A string; ~ expanded and made absolute by config_finalize(). */
    CONFIG_KIND_BOOL,
    CONFIG_KIND_INT,       /* int64_t */
    CONFIG_KIND_SIZE,      /* uint64_t bytes */
    CONFIG_KIND_DURATION,  /* uint64_t nanoseconds */
    CONFIG_KIND_ENUM,      /* an int-sized C enum, the index into |choices| */
    CONFIG_KIND_LIST,      /* struct config_list */
    CONFIG_KIND_MAP,       /* struct config_map */
    CONFIG_KIND_EXPORTERS, /* The `exporters` map: its fields are in config_exporter_table. */
    /* A list of processor mappings, kept as canonical JSON (char *). */
    CONFIG_KIND_PROCESSORS,
};

/* Option flags. */
#define CONFIG_OPT_BARE_MS       0x1u  /* A duration given as a bare number means milliseconds. */
#define CONFIG_OPT_ENDPOINT      0x2u  /* A string that must be host:port. */
#define CONFIG_OPT_URL           0x4u  /* A string that must be an http(s) URL. */
#define CONFIG_OPT_SENSITIVE_MAP 0x8u  /* A map whose sensitive-looking values are masked. */
#define CONFIG_OPT_REQUIRED      0x10u /* Must have a value after config_finalize(). */
#define CONFIG_OPT_MAX_EXCLUSIVE 0x20u /* The value must stay below |max|. */

/* Exporter type bits for config_option.types. */
#define CONFIG_T_OTLP_HTTP (1u << CONFIG_EXPORTER_OTLP_HTTP)
#define CONFIG_T_OTLP_GRPC (1u << CONFIG_EXPORTER_OTLP_GRPC)
#define CONFIG_T_DEBUG     (1u << CONFIG_EXPORTER_DEBUG)
#define CONFIG_T_FILE      (1u << CONFIG_EXPORTER_FILE)
#define CONFIG_T_SINK      (1u << CONFIG_EXPORTER_SINK)
#define CONFIG_T_OTLP      (CONFIG_T_OTLP_HTTP | CONFIG_T_OTLP_GRPC)

/* Sections of the global table, in the order the docs list them. */
enum config_section {
    CONFIG_SEC_GENERAL,
    CONFIG_SEC_RECEIVERS,
    CONFIG_SEC_BATCH,
    CONFIG_SEC_QUEUE,
    CONFIG_SEC_EXPORTERS,
    CONFIG_SEC_ROUTING,
    CONFIG_SEC_PROCESSORS,
    CONFIG_SEC_UPSTREAM,
    CONFIG_SEC_SINK,
    CONFIG_SEC_API,
    CONFIG_SEC_ADMIN,
    CONFIG_SEC_LOG,
    CONFIG_SEC_COUNT,
};

struct config_section_info {
    const char *title;
    const char *doc;
};

/*
 * One key. The same entry parses the YAML value, the environment variables and the flag,
 * validates bounds, prints, hashes and documents the key.
 */
struct config_option {
    const char *path; /* Dotted, relative to the table's root: "batch.timeout", "retry.enabled". */
    enum config_kind kind;
    size_t offset;   /* Into struct config, or struct config_exporter for the exporter table. */
    const char *def; /* The default as text, parsed by the same code as user input; NULL: unset. */
    const char *def_doc; /* How the docs show a default computed by config_finalize(). */
    const char *doc;     /* One or two sentences for docs/configuration.md. */
    const char *env[3];  /* Canonical name first, then aliases; NULL-terminated. */
    const char *flag;    /* "--batch-timeout", or NULL. Never set for secrets (argv is public). */
    int64_t min;         /* Bounds for INT, SIZE, DURATION when min < max (sizes and durations as */
    int64_t max;         /* bytes and nanoseconds). */
    const char *const *choices; /* ENUM: NULL-terminated names; the stored value is the index. */
    unsigned types; /* Exporter table: the CONFIG_T_* types the key applies to; 0: all. */
    unsigned flags; /* CONFIG_OPT_* */
    /* A boolean variable that, when true, sets |env_true_value| (DEBUG_LOG, OTEL_SDK_DISABLED). */
    const char *env_true;
    const char *env_true_value;
    enum config_section section;
};

extern const struct config_option config_table[];
extern const size_t config_table_len;
extern const struct config_option config_exporter_table[];
extern const size_t config_exporter_table_len;
extern const struct config_section_info config_sections[CONFIG_SEC_COUNT];

/* The via_ value for a source that had no variable name (files, flags, the env_true switch). */
#define CONFIG_VIA_NONE     0xffu
#define CONFIG_VIA_ENV_TRUE 0xfeu

#define CONFIG_EXPORTER_ENV_PREFIX "DATALAYER_OTEL_AGENT_EXPORTER_"
#define CONFIG_AGENT_ENV_PREFIX    "DATALAYER_OTEL_AGENT_"

/* Index of |path| in |table| or -1. */
int config_option_find(const struct config_option *table, size_t n, const char *path,
                       size_t path_len);

/* The rank a source has in the precedence order (FLAG and API equal). */
int config_source_rank(enum config_source s);

/* A parsed value before it is committed to a field. */
struct config_value {
    char *s;
    bool b;
    int64_t i;
    uint64_t u;
    int e;
    struct config_list list;
    struct config_map map;
};

void config_value_cleanup(struct config_value *v);

/*
 * Parses |text| for |opt| (scalar kinds; LIST comma-separated, MAP "k=v,k=v"). On a bad value
 * writes the reason ("'200' is not a duration (use e.g. 200ms)") to |why| and returns
 * DLOTEL_ERR_CONFIG; DLOTEL_ERR_NOMEM on allocation failure.
 */
int config_value_parse(const struct config_option *opt, const char *text, size_t len,
                       struct config_value *v, char *why, size_t why_len);

struct json_t;

/*
 * Checks |root| (a JSON array of objects, each with a string "kind") and stores its canonical
 * text (compact, keys in their order) in v->s; an empty array leaves v->s NULL. Takes no
 * reference. Returns 0, DLOTEL_ERR_CONFIG with |why|, or DLOTEL_ERR_NOMEM. The processors'
 * own options are checked by agent/processor when the agent builds its chains.
 */
int config_processors_canon(struct json_t *root, struct config_value *v, char *why, size_t why_len);

/* Checks one string for UTF-8, control characters and length; 0 or -1 with |why| filled. */
int config_check_string(const char *s, size_t len, char *why, size_t why_len);

/* List and map helpers that enforce CONFIG_MAX_ITEMS and uniqueness of map keys. */
int config_list_push(struct config_list *l, const char *s, size_t len);
void config_list_clear(struct config_list *l);
/* Returns 0, 1 when |key| is already there (nothing added), or DLOTEL_ERR_NOMEM. */
int config_map_put(struct config_map *m, const char *key, size_t klen, const char *val,
                   size_t vlen);
void config_map_clear(struct config_map *m);

/*
 * Commits |v| into the field |opt| of |base| when |src| ranks at least as high as |*source|,
 * taking ownership of its memory (|v| is left empty either way).
 */
void config_value_commit(void *base, const struct config_option *opt, struct config_value *v,
                         enum config_source src, uint8_t via, uint8_t *source, uint8_t *vias);

/* Formats |v| for YAML output and docs. */
int config_format_size(struct buf *out, uint64_t v);
int config_format_duration(struct buf *out, uint64_t ns);
int config_format_yaml_string(struct buf *out, const char *s);

/* Frees a field's memory and resets it to zero; used by config_free() and commits. */
void config_field_cleanup(void *base, const struct config_option *opt);

/* Problems. |where| and |path| may be NULL. Formatted message. */
void config_diag_add(struct config_errors *e, bool warning, const char *where, const char *path,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * The closest of |cands| to |word| when it is close enough to be a typo, else NULL
 * (Damerau-Levenshtein distance at most max(1, len/3), capped at 3).
 */
const char *config_did_you_mean(const char *word, size_t len, const char *const *cands, size_t n);

/* Finds the exporter |name| (creating it at its defaults when |create|). NULL: see |errs|. */
struct config_exporter *config_exporter_get(struct config *cfg, const char *name, size_t len,
                                            bool create, const char *where,
                                            struct config_errors *errs, int *rv);

/* Looks |name| up in |envp| (or environ when NULL); NULL when unset. */
const char *config_getenv(char **envp, const char *name);

/* Exporter name rule: [a-z][a-z0-9_-]*, at most CONFIG_MAX_NAME bytes. */
bool config_name_valid(const char *s, size_t len);

/* The env variable suffix for an exporter option: "retry.max_interval" -> "RETRY_MAX_INTERVAL". */
void config_env_suffix(const char *path, char *out, size_t out_len);

/* Whether a header name looks sensitive enough to mask its value. */
bool config_header_sensitive(const char *key);

#endif
