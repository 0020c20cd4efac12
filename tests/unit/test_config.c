/* Unit tests for agent/config: tables, YAML, environment, flags, resolution, print, hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "config/config_int.h"
#include "dlotel.h"

#define MIB (1024ULL * 1024ULL)
#define MS  1000000ULL
#define SEC 1000000000ULL

/* ---- helpers ------------------------------------------------------------------------------- */

static void dump(const struct config_errors *e)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    if (config_errors_format(e, &b, true) == 0 && buf_terminate(&b) == 0 && b.data != NULL) {
        fprintf(stderr, "%s", (char *)b.data);
    }
    buf_cleanup(&b);
}

/* Whether |e| holds a problem at |path| whose message contains |msg|. */
static bool has_diag(const struct config_errors *e, bool warning, const char *path, const char *msg)
{
    for (size_t i = 0; i < e->n; i++) {
        const struct config_diag *d = &e->items[i];
        if (d->warning == warning && strcmp(d->path, path) == 0 &&
            strstr(d->message, msg) != NULL) {
            return true;
        }
    }
    return false;
}

#define assert_diag(e, path, msg)                                                                  \
    do {                                                                                           \
        if (!has_diag((e), false, (path), (msg))) {                                                \
            dump(e);                                                                               \
            fail_msg("no error at '%s' containing '%s'", (path), (msg));                           \
        }                                                                                          \
    } while (0)

#define assert_warning(e, path, msg)                                                               \
    do {                                                                                           \
        if (!has_diag((e), true, (path), (msg))) {                                                 \
            dump(e);                                                                               \
            fail_msg("no warning at '%s' containing '%s'", (path), (msg));                         \
        }                                                                                          \
    } while (0)

#define assert_ok(rv, e)                                                                           \
    do {                                                                                           \
        int rv_ = (rv);                                                                            \
        if (rv_ != 0) {                                                                            \
            dump(e);                                                                               \
            fail_msg("%s returned %d (%s)", #rv, rv_, dlotel_strerror(rv_));                       \
        }                                                                                          \
    } while (0)

/*
 * defaults -> env -> YAML (order does not matter) -> finalize. Returns the first failure;
 * *out is set either way, for the caller to inspect and free.
 */
static int load(struct config **out, const char *yaml, char **env, struct config_errors *errs)
{
    struct config *cfg;
    assert_int_equal(config_new(&cfg), 0);
    *out = cfg;
    int rv = config_load_env(cfg, env, errs);
    if (yaml != NULL) {
        int r = config_load_yaml_string(cfg, yaml, strlen(yaml), "test.yaml", errs);
        rv = rv != 0 ? rv : r;
    }
    int r = config_finalize(cfg, errs);
    return rv != 0 ? rv : r;
}

static char *print(const struct config *cfg, bool mask)
{
    struct buf b;
    buf_init(&b, 1 << 22);
    assert_int_equal(config_print(cfg, &b, mask), 0);
    assert_int_equal(buf_terminate(&b), 0);
    return (char *)buf_take(&b, NULL);
}

static char *base_env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_SINK=true", NULL};

/* ---- tables -------------------------------------------------------------------------------- */

static void test_tables_consistent(void **state)
{
    (void)state;
    /* Every default parses (config_new would fail otherwise). */
    struct config *cfg;
    assert_int_equal(config_new(&cfg), 0);
    config_free(cfg);
    for (size_t i = 0; i < config_table_len; i++) {
        const struct config_option *a = &config_table[i];
        /* Secrets have no flag: argv is visible to every user of the machine. */
        if (a->kind == CONFIG_KIND_SECRET) {
            assert_null(a->flag);
        }
        assert_non_null(a->doc);
        for (size_t j = 0; j < i; j++) {
            const struct config_option *b = &config_table[j];
            assert_string_not_equal(a->path, b->path);
            if (a->flag != NULL && b->flag != NULL) {
                assert_string_not_equal(a->flag, b->flag);
            }
            for (size_t x = 0; x < 3 && a->env[x] != NULL; x++) {
                for (size_t y = 0; y < 3 && b->env[y] != NULL; y++) {
                    assert_string_not_equal(a->env[x], b->env[y]);
                }
            }
        }
    }
    /* The C enums follow the choice lists. */
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(config_new(&cfg), 0);
    assert_ok(config_set(cfg, "log.level", "debug", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(cfg->log.level, LOG_LEVEL_DEBUG);
    assert_ok(config_set(cfg, "log.level", "error", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(cfg->log.level, LOG_LEVEL_ERROR);
    assert_ok(config_set(cfg, "log.level", "warn", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(cfg->log.level, LOG_LEVEL_WARN);
    assert_ok(config_set(cfg, "log.format", "json", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(cfg->log.format, CONFIG_LOG_JSON);
    assert_ok(config_set(cfg, "api.jwt_algorithm", "rs256", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(cfg->api.jwt_algorithm, CONFIG_JWT_RS256);
    assert_ok(config_set(cfg, "exporters.a.type", "otlp_grpc", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_ok(config_set(cfg, "exporters.a.compression", "zstd", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_ok(config_set(cfg, "exporters.a.disk_queue.fsync", "never", CONFIG_SOURCE_FLAG, &errs),
              &errs);
    assert_ok(config_set(cfg, "exporters.b.type", "sink", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_ok(config_set(cfg, "exporters.c.type", "debug", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_ok(config_set(cfg, "exporters.c.verbosity", "detailed", CONFIG_SOURCE_FLAG, &errs),
              &errs);
    assert_int_equal(cfg->exporters[0].type, CONFIG_EXPORTER_OTLP_GRPC);
    assert_int_equal(cfg->exporters[0].compression, CONFIG_COMPRESSION_ZSTD);
    assert_int_equal(cfg->exporters[0].disk_queue.fsync, CONFIG_FSYNC_NEVER);
    assert_int_equal(cfg->exporters[1].type, CONFIG_EXPORTER_SINK);
    assert_int_equal(cfg->exporters[2].verbosity, CONFIG_VERBOSITY_DETAILED);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_flags_table(void **state)
{
    (void)state;
    size_t n;
    const struct config_flag_info *fs = config_flags(&n);
    assert_true(n >= 10);
    const struct config_flag_info *f = config_flag_find("--grpc-endpoint");
    assert_non_null(f);
    assert_string_equal(f->path, "receivers.grpc_endpoint");
    assert_string_equal(f->value, "HOST:PORT");
    assert_false(f->is_bool);
    f = config_flag_find("--sink");
    assert_non_null(f);
    assert_true(f->is_bool);
    f = config_flag_find("--log-level=debug");
    assert_non_null(f);
    assert_string_equal(f->value, "error|warn|info|debug");
    assert_null(config_flag_find("--no-such-flag"));
    assert_true(fs[0].flag[0] == '-');
}

/* ---- defaults and precedence --------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg;
    assert_int_equal(config_new(&cfg), 0);
    assert_string_equal(cfg->receivers.grpc_endpoint, "localhost:4317");
    assert_string_equal(cfg->receivers.http_endpoint, "localhost:4318");
    assert_int_equal(cfg->receivers.grpc_max_message_size, 4 * MIB);
    assert_int_equal(cfg->receivers.http_max_body_size, 20 * MIB);
    assert_int_equal(cfg->batch.max_size, 8192);
    assert_int_equal(cfg->batch.max_bytes, 4 * MIB);
    assert_int_equal(cfg->batch.timeout_ns, 200 * MS);
    assert_int_equal(cfg->queue.memory_max_bytes, 64 * MIB);
    assert_int_equal(cfg->queue.overload, CONFIG_OVERLOAD_SHED);
    assert_int_equal(cfg->queue.retry_after_ns, SEC);
    assert_int_equal(cfg->n_exporters, 0);
    assert_false(cfg->sink.enabled);
    assert_string_equal(cfg->sink.data_dir, "~/.local/share/dlotel");
    assert_int_equal(cfg->sink.max_rows_per_file, 100000);
    assert_int_equal(cfg->sink.retention_days, 30);
    assert_int_equal(cfg->api.port, 7800);
    assert_string_equal(cfg->api.host, "localhost");
    assert_null(cfg->api.jwt_secret);
    assert_int_equal(cfg->api.jwt_algorithm, CONFIG_JWT_HS256);
    assert_string_equal(cfg->api.cors_origin, "*");
    assert_null(cfg->upstream.otlp_url);
    assert_null(cfg->upstream.run_url);
    assert_null(cfg->upstream.api_key);
    assert_string_equal(cfg->admin.endpoint, "localhost:13133");
    assert_int_equal(cfg->log.level, LOG_LEVEL_INFO);
    assert_null(cfg->log.file);
    assert_int_equal(cfg->log.format, CONFIG_LOG_TEXT);
    assert_int_equal(cfg->log.max_size, 10 * MIB);
    assert_int_equal(cfg->shutdown_timeout_ns, 5 * SEC);
    assert_true(cfg->enabled);
    config_free(cfg);

    /* Finalized: ~ expanded from HOME, the sink exporter made, routed everywhere. */
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, base_env, &errs), &errs);
    assert_string_equal(cfg->sink.data_dir, "/home/test/.local/share/dlotel");
    assert_string_equal(cfg->state_dir, "/home/test/.local/state/dlotel");
    assert_int_equal(cfg->n_exporters, 1);
    assert_string_equal(cfg->exporters[0].name, "sink");
    assert_int_equal(cfg->exporters[0].type, CONFIG_EXPORTER_SINK);
    assert_false(cfg->exporters[0].disk_queue.enabled);
    assert_int_equal(config_exporter_signals(cfg, &cfg->exporters[0]),
                     CONFIG_SIGNAL_TRACES | CONFIG_SIGNAL_METRICS | CONFIG_SIGNAL_LOGS);
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* $XDG_DATA_HOME and $XDG_STATE_HOME replace the default directories. */
    char *xdg_env[] = {"HOME=/home/test", "XDG_DATA_HOME=/data/x", "XDG_STATE_HOME=/state/y",
                       "DATALAYER_OTEL_AGENT_SINK=1", NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, xdg_env, &errs), &errs);
    assert_string_equal(cfg->sink.data_dir, "/data/x/dlotel");
    assert_string_equal(cfg->state_dir, "/state/y/dlotel");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static const char *precedence_yaml = "batch:\n"
                                     "  max_size: 100\n"
                                     "  timeout: 1s\n"
                                     "  max_bytes: 1MiB\n"
                                     "log:\n"
                                     "  level: warn\n";

static void test_yaml_overrides_defaults(void **state)
{
    (void)state;
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, precedence_yaml, base_env, &errs), &errs);
    assert_int_equal(cfg->batch.max_size, 100);
    assert_int_equal(cfg->batch.timeout_ns, SEC);
    assert_int_equal(cfg->batch.max_bytes, MIB);
    assert_int_equal(cfg->log.level, LOG_LEVEL_WARN);
    /* Untouched keys keep their defaults. */
    assert_int_equal(cfg->queue.memory_max_bytes, 64 * MIB);
    assert_int_equal(errs.n_errors, 0);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_env_overrides_yaml_in_any_order(void **state)
{
    (void)state;
    char *env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_SINK=true",
                   "DATALAYER_OTEL_AGENT_BATCH_MAX_SIZE=200",
                   "DATALAYER_OTEL_AGENT_BATCH_TIMEOUT=50ms", NULL};
    struct config_errors errs;
    config_errors_init(&errs);

    /* File first, then the environment. */
    struct config *a;
    assert_int_equal(config_new(&a), 0);
    assert_ok(config_load_yaml_string(a, precedence_yaml, strlen(precedence_yaml), "a", &errs),
              &errs);
    assert_ok(config_load_env(a, env, &errs), &errs);
    assert_ok(config_finalize(a, &errs), &errs);
    assert_int_equal(a->batch.max_size, 200);
    assert_int_equal(a->batch.timeout_ns, 50 * MS);
    assert_int_equal(a->batch.max_bytes, MIB); /* From the file: the env does not set it. */

    /* The environment first, then the file: the file must not win. */
    struct config *b;
    assert_int_equal(config_new(&b), 0);
    assert_ok(config_load_env(b, env, &errs), &errs);
    assert_ok(config_load_yaml_string(b, precedence_yaml, strlen(precedence_yaml), "b", &errs),
              &errs);
    assert_ok(config_finalize(b, &errs), &errs);
    assert_int_equal(b->batch.max_size, 200);
    assert_int_equal(b->batch.timeout_ns, 50 * MS);
    assert_true(config_hash(a) == config_hash(b));
    config_free(a);
    config_free(b);
    config_errors_cleanup(&errs);
}

static void test_flags_override_env(void **state)
{
    (void)state;
    char *env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_SINK=true",
                   "DATALAYER_OTEL_AGENT_GRPC_ENDPOINT=127.0.0.1:5317",
                   "DATALAYER_OTEL_AGENT_BATCH_TIMEOUT=50ms", NULL};
    struct config_errors errs;
    config_errors_init(&errs);
    struct config *cfg;
    assert_int_equal(config_new(&cfg), 0);
    /* A flag set before the environment is loaded still wins. */
    assert_ok(config_set(cfg, "--grpc-endpoint", "127.0.0.1:0", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_ok(config_load_env(cfg, env, &errs), &errs);
    assert_ok(config_set(cfg, "batch.timeout", "2s", CONFIG_SOURCE_FLAG, &errs), &errs);
    /* The Python typed config ranks with flags: key=value pairs. */
    assert_ok(config_set_kv(cfg, "batch.max_size=77", CONFIG_SOURCE_API, &errs), &errs);
    /* A file loaded last does not override any of them. */
    const char *yaml = "batch: {timeout: 9s, max_size: 9}\nreceivers: {grpc_endpoint: "
                       "'10.0.0.1:1'}\n";
    assert_ok(config_load_yaml_string(cfg, yaml, strlen(yaml), "late", &errs), &errs);
    assert_ok(config_finalize(cfg, &errs), &errs);
    assert_string_equal(cfg->receivers.grpc_endpoint, "127.0.0.1:0");
    assert_int_equal(cfg->batch.timeout_ns, 2 * SEC);
    assert_int_equal(cfg->batch.max_size, 77);

    char *text = print(cfg, true);
    assert_non_null(strstr(text, "grpc_endpoint: \"127.0.0.1:0\""));
    assert_non_null(strstr(text, "# flag"));
    assert_non_null(strstr(text, "# api"));
    free(text);
    /* Nothing changes after finalize. */
    assert_int_equal(config_set(cfg, "batch.timeout", "1s", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_INVALID_ARG);
    assert_int_equal(config_load_env(cfg, env, &errs), DLOTEL_ERR_INVALID_ARG);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_env_aliases(void **state)
{
    (void)state;
    struct config *cfg;
    struct config_errors errs;

    char *alias_env[] = {"HOME=/home/test",
                         "DATALAYER_RUN_URL=https://alias.example",
                         "DATALAYER_OTEL_DATAFUSION_DATA_DIR=/srv/otel",
                         "DATALAYER_OTEL_DATAFUSION_MAX_ROWS_PER_FILE=5000",
                         "DATALAYER_OTEL_AGENT_DEBUG_LOG=true",
                         "OTEL_SDK_DISABLED=true",
                         NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, alias_env, &errs), &errs);
    assert_string_equal(cfg->upstream.run_url, "https://alias.example");
    assert_string_equal(cfg->sink.data_dir, "/srv/otel");
    assert_int_equal(cfg->sink.max_rows_per_file, 5000);
    assert_int_equal(cfg->log.level, LOG_LEVEL_DEBUG);
    assert_false(cfg->enabled);
    char *text = print(cfg, true);
    assert_non_null(strstr(text, "# env DATALAYER_RUN_URL"));
    assert_non_null(strstr(text, "# env DATALAYER_OTEL_AGENT_DEBUG_LOG"));
    free(text);
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* The canonical name wins over its alias, with a warning when they differ. */
    char *both_env[] = {"HOME=/home/test",
                        "DATALAYER_RUN_URL=https://alias.example",
                        "DATALAYER_OTEL_RUN_URL=https://canonical.example",
                        "DATALAYER_OTEL_DATA_DIR=/a",
                        "DATALAYER_OTEL_DATAFUSION_DATA_DIR=/b",
                        "DATALAYER_OTEL_AGENT_LOG_LEVEL=error",
                        "DATALAYER_OTEL_AGENT_DEBUG_LOG=true",
                        "OTEL_SDK_DISABLED=false",
                        NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, both_env, &errs), &errs);
    assert_string_equal(cfg->upstream.run_url, "https://canonical.example");
    assert_string_equal(cfg->sink.data_dir, "/a");
    assert_int_equal(cfg->log.level, LOG_LEVEL_ERROR);
    assert_true(cfg->enabled);
    assert_warning(&errs, "upstream.run_url", "DATALAYER_OTEL_RUN_URL is set and wins");
    assert_warning(&errs, "sink.data_dir", "DATALAYER_OTEL_DATA_DIR is set and wins");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_unknown_keys(void **state)
{
    (void)state;
    const char *yaml = "recievers:\n"
                       "  grpc_endpoint: localhost:4317\n"
                       "batch:\n"
                       "  timout: 1s\n"
                       "exporters:\n"
                       "  up:\n"
                       "    type: otlp_http\n"
                       "    endpoint: https://up.example\n"
                       "    compresion: zstd\n"
                       "    retry:\n"
                       "      max_intervall: 1s\n"
                       "    zzzzzzzzzz: 1\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, yaml, base_env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "recievers", "unknown key (did you mean 'receivers'?)");
    assert_diag(&errs, "batch.timout", "unknown key (did you mean 'timeout'?)");
    assert_diag(&errs, "exporters.up.compresion", "unknown key (did you mean 'compression'?)");
    assert_diag(&errs, "exporters.up.retry.max_intervall",
                "unknown key (did you mean 'max_interval'?)");
    assert_diag(&errs, "exporters.up.zzzzzzzzzz", "unknown key");
    /* Every problem, not just the first, each with file:line:column. */
    bool located = false;
    for (size_t i = 0; i < errs.n; i++) {
        if (strcmp(errs.items[i].path, "exporters.up.compresion") == 0) {
            located = strcmp(errs.items[i].where, "test.yaml:9:5") == 0;
        }
    }
    assert_true(located);
    /* The valid keys were still read. */
    assert_int_equal(cfg->n_exporters, 2); /* up, and the sink */
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* config_set and flags. */
    assert_int_equal(config_new(&cfg), 0);
    config_errors_init(&errs);
    assert_int_equal(config_set(cfg, "batch.timout", "1s", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "batch.timout", "unknown key (did you mean 'batch.timeout'?)");
    assert_int_equal(config_set(cfg, "--no-such", "1", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "--no-such", "unknown flag");
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* Unknown agent variables are warnings: the environment is shared. */
    char *env[] = {"HOME=/home/test",
                   "DATALAYER_OTEL_AGENT_SINK=true",
                   "DATALAYER_OTEL_AGENT_BATCH_TIMOUT=1s",
                   "DATALAYER_SOMETHING_ELSE=1",
                   "DATALAYER_OTEL_AGENT_EXPORTER_UP_BOGUS=1",
                   "DATALAYER_OTEL_AGENT_EXPORTER_A.B_TYPE=debug",
                   NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, env, &errs), &errs);
    assert_int_equal(errs.n_errors, 0);
    assert_int_equal(errs.n_warnings, 3);
    assert_true(has_diag(&errs, true, "", "'a.b' is not an exporter name"));
    assert_true(has_diag(&errs, true, "", "did you mean DATALAYER_OTEL_AGENT_BATCH_TIMEOUT?"));
    assert_true(has_diag(&errs, true, "", "unknown exporter variable"));
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_type_errors(void **state)
{
    (void)state;
    const char *yaml = "enabled: maybe\n"
                       "batch:\n"
                       "  timeout: 200\n"
                       "  max_size: 12x\n"
                       "  max_bytes: 4XB\n"
                       "sink:\n"
                       "  retention_days: 100000\n"
                       "  max_rows_per_file: 99999999999999999999\n"
                       "api:\n"
                       "  jwt_algorithm: none\n"
                       "  host: [a, b]\n"
                       "exporters_traces: up\n"
                       "exporters:\n"
                       "  up:\n"
                       "    type: otlp_http\n"
                       "    endpoint: https://up.example\n"
                       "    compression: brotli\n"
                       "    headers: [a, b]\n"
                       "    request_timeout: ~\n"
                       "  bad: 42\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, yaml, base_env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "enabled", "'maybe' is not a boolean (use true or false)");
    assert_diag(&errs, "batch.timeout", "'200' is not a duration (use e.g. 200ms)");
    assert_diag(&errs, "batch.max_size", "'12x' is not an integer");
    assert_diag(&errs, "batch.max_bytes", "'4XB' is not a size");
    assert_diag(&errs, "sink.retention_days", "'100000' is out of range (0 to 36500)");
    assert_diag(&errs, "sink.max_rows_per_file", "is too large");
    assert_diag(&errs, "api.jwt_algorithm", "'none' is not one of HS256, HS384, HS512, RS256");
    assert_diag(&errs, "api.host", "expected a single value, not a list");
    assert_diag(&errs, "exporters_traces", "expected a list, e.g. [a, b], not a single value");
    assert_diag(&errs, "exporters.up.compression", "'brotli' is not one of gzip, zstd, none");
    assert_diag(&errs, "exporters.up.headers", "expected a mapping of names to values, not a list");
    assert_diag(&errs, "exporters.up.request_timeout", "needs a value");
    assert_diag(&errs, "exporters.bad", "an exporter is a mapping of its keys");
    /* A bad value leaves the default in place. */
    assert_int_equal(cfg->batch.timeout_ns, 200 * MS);
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* The same checks apply to the environment and flags. */
    char *env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_SINK=yes please",
                   "DATALAYER_OTEL_PORT=70000", NULL};
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, NULL, env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "sink.enabled", "'yes please' is not a boolean");
    assert_diag(&errs, "api.port", "'70000' is out of range (0 to 65535)");
    bool where = false;
    for (size_t i = 0; i < errs.n; i++) {
        where = where || strcmp(errs.items[i].where, "env DATALAYER_OTEL_PORT") == 0;
    }
    assert_true(where);
    config_free(cfg);
    config_errors_cleanup(&errs);

    assert_int_equal(config_new(&cfg), 0);
    config_errors_init(&errs);
    assert_int_equal(config_set(cfg, "--batch-max-bytes", "20MiB", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "batch.max_bytes", "'20MiB' is out of range (1KiB to less than 20MiB)");
    assert_ok(config_set(cfg, "--batch-max-bytes", "20971519", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(cfg->batch.max_bytes, 20 * MIB - 1);
    assert_int_equal(config_set(cfg, "exporters.up.headers", "novalue", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "exporters.up.headers", "'novalue' is not key=value");
    assert_int_equal(config_set(cfg, "exporters_logs", "a,,b", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "exporters_logs", "empty item in list");
    assert_int_equal(config_set(cfg, "api.host", "bad\nhost", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "api.host", "control character 0x0a");
    assert_int_equal(config_set(cfg, "api.host", "\xc3\x28", CONFIG_SOURCE_FLAG, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "api.host", "not valid UTF-8");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_errors_format(void **state)
{
    (void)state;
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    const char *yaml = "batch:\n  timeout: 200\n";
    assert_int_equal(load(&cfg, yaml, base_env, &errs), DLOTEL_ERR_CONFIG);
    struct buf b;
    buf_init(&b, 1 << 16);
    assert_int_equal(config_errors_format(&errs, &b, true), 0);
    assert_int_equal(buf_terminate(&b), 0);
    assert_string_equal((char *)b.data, "error: test.yaml:2:12: batch.timeout: '200' is not a "
                                        "duration (use e.g. 200ms)\n");
    buf_cleanup(&b);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

/* ---- units --------------------------------------------------------------------------------- */

static void test_size_parsing(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rv;
        uint64_t v;
    } cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"65536", 0, 65536},
        {"4MiB", 0, 4 * MIB},
        {"4mib", 0, 4 * MIB},
        {"4MIB", 0, 4 * MIB},
        {"4 MiB", 0, 4 * MIB},
        {"512KiB", 0, 512 * 1024},
        {"512Ki", 0, 512 * 1024},
        {"1GB", 0, 1000000000ULL},
        {"1g", 0, 1000000000ULL},
        {"2TiB", 0, 2ULL << 40},
        {"10B", 0, 10},
        {"1.5MiB", 0, 3 * MIB / 2},
        {"1.5KB", 0, 1500},
        {"0.5B", DLOTEL_ERR_BAD_INPUT, 0},
        {"0.1KiB", DLOTEL_ERR_BAD_INPUT, 0}, /* 102.4 bytes */
        {"1.0000001GiB", DLOTEL_ERR_BAD_INPUT, 0},
        {"18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551616", DLOTEL_ERR_TOO_LARGE, 0},
        {"17179869183GiB", 0, 17179869183ULL << 30},
        {"17179869184GiB", DLOTEL_ERR_TOO_LARGE, 0},
        {"99999999999999999999GiB", DLOTEL_ERR_TOO_LARGE, 0},
        {"16EiB", DLOTEL_ERR_BAD_INPUT, 0},
        {"", DLOTEL_ERR_BAD_INPUT, 0},
        {"MiB", DLOTEL_ERR_BAD_INPUT, 0},
        {"-1", DLOTEL_ERR_BAD_INPUT, 0},
        {" 4MiB", DLOTEL_ERR_BAD_INPUT, 0},
        {"4MiB ", DLOTEL_ERR_BAD_INPUT, 0},
        {"1.2.3", DLOTEL_ERR_BAD_INPUT, 0},
        {"1.", DLOTEL_ERR_BAD_INPUT, 0},
        {"0x10", DLOTEL_ERR_BAD_INPUT, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        int rv = config_parse_size(cases[i].text, &v);
        if (rv != cases[i].rv || (rv == 0 && v != cases[i].v)) {
            fail_msg("size '%s': rv %d v %llu, want rv %d v %llu", cases[i].text, rv,
                     (unsigned long long)v, cases[i].rv, (unsigned long long)cases[i].v);
        }
    }
    /* Formatting picks the largest exact unit, and reads back. */
    uint64_t samples[] = {0, 1, 1000, 1024, 4 * MIB, 3 * MIB / 2, 1000000000ULL, UINT64_MAX};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        struct buf b;
        buf_init(&b, 64);
        assert_int_equal(config_format_size(&b, samples[i]), 0);
        assert_int_equal(buf_terminate(&b), 0);
        uint64_t back;
        assert_int_equal(config_parse_size((char *)b.data, &back), 0);
        assert_true(back == samples[i]);
        buf_cleanup(&b);
    }
}

static void test_duration_parsing(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool bare_ms;
        int rv;
        uint64_t v;
    } cases[] = {
        {"200ms", false, 0, 200 * MS},
        {"5s", false, 0, 5 * SEC},
        {"1m", false, 0, 60 * SEC},
        {"1h", false, 0, 3600 * SEC},
        {"1500us", false, 0, 1500000},
        {"1500\xc2\xb5s", false, 0, 1500000},
        {"7ns", false, 0, 7},
        {"1m30s", false, 0, 90 * SEC},
        {"1h1m1s1ms", false, 0, 3661 * SEC + MS},
        {"1.5s", false, 0, 1500 * MS},
        {"0.001s", false, 0, MS},
        {"0", false, 0, 0},
        {"0s", false, 0, 0},
        {"200", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"200", true, 0, 200 * MS},
        {"1.5ns", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"5124095h", false, 0, 5124095ULL * 3600 * SEC},
        {"5124096h", false, DLOTEL_ERR_TOO_LARGE, 0},
        {"99999999999999999999s", false, DLOTEL_ERR_TOO_LARGE, 0},
        {"5124095h5124095h", false, DLOTEL_ERR_TOO_LARGE, 0},
        {"-5s", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"5 s", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"5S", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"5d", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"1m30", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"", false, DLOTEL_ERR_BAD_INPUT, 0},
        {"s", false, DLOTEL_ERR_BAD_INPUT, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        int rv = config_parse_duration(cases[i].text, cases[i].bare_ms, &v);
        if (rv != cases[i].rv || (rv == 0 && v != cases[i].v)) {
            fail_msg("duration '%s': rv %d v %llu, want rv %d v %llu", cases[i].text, rv,
                     (unsigned long long)v, cases[i].rv, (unsigned long long)cases[i].v);
        }
    }
    uint64_t samples[] = {0, 1, 1500000, 200 * MS, 90 * SEC, 3600 * SEC, UINT64_MAX};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        struct buf b;
        buf_init(&b, 64);
        assert_int_equal(config_format_duration(&b, samples[i]), 0);
        assert_int_equal(buf_terminate(&b), 0);
        uint64_t back;
        assert_int_equal(config_parse_duration((char *)b.data, false, &back), 0);
        assert_true(back == samples[i]);
        buf_cleanup(&b);
    }
}

/* ---- print and hash ------------------------------------------------------------------------ */

static char *secret_env[] = {"HOME=/home/test",
                             "DATALAYER_RUN_URL=https://prod1.datalayer.run",
                             "DATALAYER_API_KEY=sk-very-secret-123",
                             "DATALAYER_JWT_SECRET=jwt-hush-456",
                             "DATALAYER_OTEL_AGENT_EXPORTER_UP_TYPE=otlp_http",
                             NULL};

static void test_secrets_masked(void **state)
{
    (void)state;
    const char *yaml = "exporters:\n"
                       "  up:\n"
                       "    endpoint: https://up.example/otlp/\n"
                       "    headers:\n"
                       "      X-Api-Key: header-secret-789\n"
                       "      X-Tenant: acme\n"
                       "  datalayer:\n"
                       "    type: otlp_http\n"
                       "    endpoint: https://prod1.datalayer.run/api/otel/v1/otlp\n"
                       "    headers: {Authorization: 'Bearer ${env:DATALAYER_API_KEY}'}\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, yaml, secret_env, &errs), &errs);
    const struct config_exporter *dl = config_exporter_find(cfg, "datalayer");
    assert_non_null(dl);
    assert_string_equal(dl->headers.items[0].value, "Bearer sk-very-secret-123");
    /* A trailing slash on a base URL is dropped: /v1/traces is appended to it. */
    assert_string_equal(config_exporter_find(cfg, "up")->endpoint, "https://up.example/otlp");

    char *masked = print(cfg, true);
    assert_null(strstr(masked, "sk-very-secret"));
    assert_null(strstr(masked, "jwt-hush"));
    assert_null(strstr(masked, "header-secret"));
    assert_non_null(strstr(masked, "api_key: \"***\""));
    assert_non_null(strstr(masked, "jwt_secret: \"***\""));
    assert_non_null(strstr(masked, "\"Authorization\": \"***\""));
    assert_non_null(strstr(masked, "\"X-Api-Key\": \"***\""));
    assert_non_null(strstr(masked, "\"X-Tenant\": \"acme\""));
    /* An unset secret is shown as unset, which reveals nothing. */
    assert_non_null(strstr(masked, "iam_api_key: ~"));
    char *plain = print(cfg, false);
    assert_non_null(strstr(plain, "sk-very-secret-123"));
    assert_non_null(strstr(plain, "jwt-hush-456"));
    free(masked);
    free(plain);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_print_sources_and_round_trip(void **state)
{
    (void)state;
    const char *yaml = "batch: {max_size: 1000}\n"
                       "exporters:\n"
                       "  dbg: {type: debug, verbosity: detailed}\n"
                       "  out: {type: file, path: /tmp/out \"quoted\".jsonl}\n"
                       "  up: {endpoint: 'https://up.example'}\n"
                       "exporters_logs: [dbg]\n"
                       "api: {cors_origin: 'x$$y${env:HOME}'}\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, yaml, secret_env, &errs), &errs);
    char *text = print(cfg, true);
    assert_non_null(strstr(text, "max_size: 1000"));
    assert_non_null(strstr(text, "# file"));
    assert_non_null(strstr(text, "# default"));
    assert_non_null(strstr(text, "# env DATALAYER_RUN_URL"));
    assert_non_null(strstr(text, "exporters_logs: [\"dbg\"]"));
    assert_non_null(strstr(text, "exporters_traces: [\"dbg\", \"out\", \"up\"]"));
    assert_non_null(strstr(text, "path: \"/tmp/out \\\"quoted\\\".jsonl\""));
    /* Keys that do not apply to an exporter's type are not printed for it. */
    assert_null(strstr(text, "verbosity: summary"));
    free(text);

    /* The unmasked print loads back to the same configuration. */
    char *plain = print(cfg, false);
    struct config *again;
    struct config_errors errs2;
    config_errors_init(&errs2);
    assert_ok(load(&again, plain, secret_env, &errs2), &errs2);
    assert_true(config_hash(cfg) == config_hash(again));
    assert_int_equal(again->n_exporters, 3);
    assert_string_equal(again->exporters[1].path, "/tmp/out \"quoted\".jsonl");
    /* Fuzzer find: a '$' in a value must not turn into ${env:...} when printed and reloaded. */
    assert_string_equal(cfg->api.cors_origin, "x$y/home/test");
    assert_string_equal(again->api.cors_origin, "x$y/home/test");
    free(plain);
    config_free(again);
    config_free(cfg);
    config_errors_cleanup(&errs);
    config_errors_cleanup(&errs2);
}

/* secret_env plus an endpoint for its exporter "up" from the file, then |key| = |value| as a flag.
 */
static uint64_t hash_with(const char *key, const char *value)
{
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(config_new(&cfg), 0);
    assert_ok(config_load_env(cfg, secret_env, &errs), &errs);
    assert_ok(
        config_set(cfg, "exporters.up.endpoint", "https://up.example", CONFIG_SOURCE_FILE, &errs),
        &errs);
    if (key != NULL) {
        assert_ok(config_set(cfg, key, value, CONFIG_SOURCE_FLAG, &errs), &errs);
    }
    assert_ok(config_finalize(cfg, &errs), &errs);
    uint64_t h = config_hash(cfg);
    assert_true(h == config_hash(cfg));
    config_free(cfg);
    config_errors_cleanup(&errs);
    return h;
}

static void test_hash(void **state)
{
    (void)state;
    uint64_t h0 = hash_with(NULL, NULL);
    assert_true(h0 == hash_with(NULL, NULL));
    /* The same values from another source give the same hash: sources are not hashed. */
    assert_true(h0 == hash_with("batch.max_size", "8192"));
    assert_true(h0 == hash_with("exporters.up.endpoint", "https://up.example"));

    /* Any value changes it, secrets included. */
    static const char *const changes[][2] = {
        {"batch.max_size", "8191"},
        {"batch.timeout", "201ms"},
        {"batch.max_bytes", "3MiB"},
        {"receivers.grpc_endpoint", "localhost:4319"},
        {"queue.retry_after", "2s"},
        {"upstream.api_key", "sk-other"},
        {"api.jwt_secret", "other"},
        {"api.jwt_algorithm", "HS512"},
        {"sink.enabled", "true"},
        {"log.file", "/tmp/x.log"},
        {"exporters_logs", ""},
        {"exporters.up.compression", "none"},
        {"exporters.up.endpoint", "https://other.example"},
        {"exporters.up.headers", "a=b"},
        {"exporters.up.retry.enabled", "false"},
        {"enabled", "false"},
    };
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        if (hash_with(changes[i][0], changes[i][1]) == h0) {
            fail_msg("setting %s did not change the hash", changes[i][0]);
        }
    }
}

/* ---- resolution ---------------------------------------------------------------------------- */

static void test_default_upstream(void **state)
{
    (void)state;
    static const struct {
        const char *env[4];
        const char *endpoint;
    } cases[] = {
        {{"DATALAYER_RUN_URL=https://prod1.datalayer.run"},
         "https://prod1.datalayer.run/api/otel/v1/otlp"},
        {{"DATALAYER_RUN_URL=https://prod1.datalayer.run/"},
         "https://prod1.datalayer.run/api/otel/v1/otlp"},
        {{"DATALAYER_RUN_URL=https://prod1.datalayer.run//"},
         "https://prod1.datalayer.run/api/otel/v1/otlp"},
        {{"DATALAYER_OTEL_RUN_URL=https://otel.example/base/", "DATALAYER_RUN_URL=https://x.io"},
         "https://otel.example/base/api/otel/v1/otlp"},
        {{"DATALAYER_OTLP_URL=https://otlp.example/v0", "DATALAYER_RUN_URL=https://x.io"},
         "https://otlp.example/v0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *env[8] = {"HOME=/home/test", "DATALAYER_API_KEY=sk-1"};
        size_t n = 2;
        for (size_t k = 0; k < 4 && cases[i].env[k] != NULL; k++) {
            env[n++] = (char *)cases[i].env[k];
        }
        struct config *cfg;
        struct config_errors errs;
        config_errors_init(&errs);
        assert_ok(load(&cfg, NULL, env, &errs), &errs);
        assert_int_equal(cfg->n_exporters, 1);
        const struct config_exporter *e = &cfg->exporters[0];
        assert_string_equal(e->name, "datalayer");
        assert_int_equal(e->type, CONFIG_EXPORTER_OTLP_HTTP);
        assert_string_equal(e->endpoint, cases[i].endpoint);
        assert_int_equal(e->headers.n, 1);
        assert_string_equal(e->headers.items[0].key, "Authorization");
        assert_string_equal(e->headers.items[0].value, "Bearer sk-1");
        assert_int_equal(e->compression, CONFIG_COMPRESSION_GZIP);
        assert_true(e->disk_queue.enabled);
        assert_string_equal(e->disk_queue.path, "/home/test/.local/state/dlotel/queue/datalayer");
        assert_int_equal(config_exporter_signals(cfg, e), 7);
        config_free(cfg);
        config_errors_cleanup(&errs);
    }

    /* Without DATALAYER_API_KEY: no header, and a warning that the platform will refuse. */
    char *nokey[] = {"HOME=/home/test", "DATALAYER_RUN_URL=https://prod1.datalayer.run", NULL};
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, nokey, &errs), &errs);
    assert_int_equal(cfg->exporters[0].headers.n, 0);
    assert_warning(&errs, "upstream.api_key", "DATALAYER_API_KEY");
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* Exporters in the file replace the default upstream. */
    char *upstream_env[] = {"HOME=/home/test", "DATALAYER_RUN_URL=https://prod1.datalayer.run",
                            "DATALAYER_API_KEY=k", NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, "exporters: {d: {type: debug}}\n", upstream_env, &errs), &errs);
    assert_null(config_exporter_find(cfg, "datalayer"));
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* Sink and upstream together: both exporters. */
    char *both[] = {"HOME=/home/test", "DATALAYER_RUN_URL=https://r.example", "DATALAYER_API_KEY=k",
                    "DATALAYER_OTEL_AGENT_SINK=true", NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, both, &errs), &errs);
    assert_int_equal(cfg->n_exporters, 2);
    assert_non_null(config_exporter_find(cfg, "datalayer"));
    assert_non_null(config_exporter_find(cfg, "sink"));
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_nothing_configured(void **state)
{
    (void)state;
    char *env[] = {"HOME=/home/test", NULL};
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, NULL, env, &errs), DLOTEL_ERR_CONFIG);
    assert_int_equal(errs.n_errors, 1);
    assert_diag(&errs, "exporters",
                "nothing to send telemetry to: set DATALAYER_RUN_URL and DATALAYER_API_KEY (the "
                "Datalayer platform), or DATALAYER_OTLP_URL (any OTLP/HTTP endpoint), or "
                "DATALAYER_OTEL_AGENT_SINK=true (store it locally), or configure exporters in "
                "the config file");
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* A disabled agent needs no destination. */
    char *off[] = {"HOME=/home/test", "OTEL_SDK_DISABLED=true", NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, NULL, off, &errs), &errs);
    assert_false(cfg->enabled);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_own_address_refused(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        bool refused;
    } cases[] = {
        {"exporters: {up: {type: otlp_http, endpoint: 'http://localhost:4318'}}\n", true},
        {"exporters: {up: {type: otlp_http, endpoint: 'http://127.0.0.1:4318/'}}\n", true},
        {"exporters: {up: {type: otlp_grpc, endpoint: 'http://[::1]:4317'}}\n", true},
        {"exporters: {up: {type: otlp_grpc, endpoint: 'http://LOCALHOST:4317'}}\n", true},
        {"exporters: {up: {type: otlp_http, endpoint: 'http://localhost:13133'}}\n", true},
        {"receivers: {http_endpoint: '0.0.0.0:4318'}\n"
         "exporters: {up: {type: otlp_http, endpoint: 'http://127.0.0.1:4318'}}\n",
         true},
        {"receivers: {http_endpoint: '10.1.2.3:80'}\n"
         "exporters: {up: {type: otlp_http, endpoint: 'http://10.1.2.3'}}\n",
         true},
        {"exporters: {up: {type: otlp_http, endpoint: 'http://localhost:4319'}}\n", false},
        {"exporters: {up: {type: otlp_http, endpoint: 'http://collector:4318'}}\n", false},
        {"receivers: {http_endpoint: '127.0.0.1:0'}\n"
         "exporters: {up: {type: otlp_http, endpoint: 'http://127.0.0.1:4318'}}\n",
         false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config *cfg;
        struct config_errors errs;
        config_errors_init(&errs);
        int rv = load(&cfg, cases[i].yaml, base_env, &errs);
        if (cases[i].refused) {
            assert_int_equal(rv, DLOTEL_ERR_CONFIG);
            assert_diag(&errs, "exporters.up.endpoint", "it would send telemetry to itself");
        } else {
            assert_ok(rv, &errs);
        }
        config_free(cfg);
        config_errors_cleanup(&errs);
    }

    /* The default upstream too. */
    char *env[] = {"HOME=/home/test", "DATALAYER_OTLP_URL=http://localhost:4318", NULL};
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, NULL, env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "exporters.datalayer.endpoint",
                "'http://localhost:4318' is the agent's own receivers.http_endpoint");
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* Two receivers on one address. */
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, "receivers: {grpc_endpoint: 'localhost:4318'}\n", base_env, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "receivers.http_endpoint", "same address as receivers.grpc_endpoint");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_exporter_rules(void **state)
{
    (void)state;
    char ca[1024];
    snprintf(ca, sizeof(ca), "%s/README.md", DLOTEL_SOURCE_DIR);
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "exporters:\n"
             "  up:\n"
             "    type: otlp_http\n"
             "    endpoint: https://up.example\n"
             "    verbosity: detailed\n"
             "    path: /tmp/x\n"
             "    headers: {Content-Type: text/plain, 'bad name': x}\n"
             "    retry: {initial_interval: 1m, max_interval: 30s}\n"
             "    tls: {ca_file: '%s', cert_file: /nonexistent/cert.pem}\n"
             "  nourl: {type: otlp_grpc}\n"
             "  ftp: {type: otlp_http, endpoint: 'ftp://x'}\n"
             "  creds: {type: otlp_http, endpoint: 'https://u:p@x.example'}\n"
             "  bare: {type: otlp_http, endpoint: 'localhost:4318'}\n"
             "  grpcpath: {type: otlp_grpc, endpoint: 'http://c:4317/v1/traces'}\n"
             "  query: {type: otlp_http, endpoint: 'http://c:4318/?a=b'}\n"
             "  port: {type: otlp_http, endpoint: 'http://c:99999'}\n"
             "  f1: {type: file}\n"
             "  f2: {type: file, path: /tmp/same.jsonl}\n"
             "  f3: {type: file, path: /tmp/same.jsonl}\n"
             "  notype: {endpoint: 'http://c:4318'}\n"
             "  big: {type: debug, memory_queue_max_bytes: 1GiB}\n"
             "  Bad-Name: {type: debug}\n"
             "  store: {type: sink}\n"
             "exporters_traces: [up, stroe, up]\n",
             ca);
    char *env[] = {"HOME=/home/test", "DATALAYER_RUN_URL=https://prod1.datalayer.run", NULL};
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, yaml, env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "exporters.up.verbosity",
                "only used by type debug; this exporter is otlp_http");
    assert_diag(&errs, "exporters.up.path", "only used by type file; this exporter is otlp_http");
    assert_diag(&errs, "exporters.up.headers.Content-Type", "set by the exporter itself");
    assert_diag(&errs, "exporters.up.headers.bad name", "not a valid HTTP header name");
    assert_diag(&errs, "exporters.up.retry.initial_interval", "longer than retry.max_interval");
    assert_diag(&errs, "exporters.up.tls.key_file", "tls.cert_file and tls.key_file go together");
    assert_diag(&errs, "exporters.up.tls.cert_file", "cannot read '/nonexistent/cert.pem'");
    assert_diag(&errs, "exporters.nourl.endpoint", "required for type otlp_grpc");
    assert_diag(&errs, "exporters.ftp.endpoint", "is not an http:// or https:// URL");
    assert_diag(&errs, "exporters.creds.endpoint", "has credentials in it");
    assert_diag(&errs, "exporters.bare.endpoint", "is not an http:// or https:// URL");
    assert_diag(&errs, "exporters.grpcpath.endpoint", "an otlp_grpc endpoint has no path");
    assert_diag(&errs, "exporters.query.endpoint", "may not have a query");
    assert_diag(&errs, "exporters.port.endpoint", "has a bad port");
    assert_diag(&errs, "exporters.f1.path", "required for type file");
    assert_diag(&errs, "exporters.f3.path", "same file as exporters.f2.path");
    assert_diag(&errs, "exporters.notype.type", "required (otlp_http, otlp_grpc");
    assert_diag(&errs, "exporters.big.memory_queue_max_bytes",
                "larger than queue.memory_max_bytes");
    assert_diag(&errs, "exporters.Bad-Name", "exporter names are 1 to 63 lowercase letters");
    assert_diag(&errs, "exporters.store.type", "a sink exporter needs sink.enabled: true");
    assert_diag(&errs, "exporters_traces", "no exporter named 'stroe' (did you mean 'store'?)");
    assert_diag(&errs, "exporters_traces", "'up' is listed twice");
    /* The CA file exists and is readable: no complaint about it. */
    assert_false(has_diag(&errs, false, "exporters.up.tls.ca_file", "cannot read"));
    /* No default upstream when exporters are configured. */
    assert_null(config_exporter_find(cfg, "datalayer"));
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* Too many exporters. */
    assert_int_equal(config_new(&cfg), 0);
    config_errors_init(&errs);
    for (int i = 0; i <= CONFIG_MAX_EXPORTERS; i++) {
        char key[64];
        snprintf(key, sizeof(key), "exporters.e%d.type", i);
        int rv = config_set(cfg, key, "debug", CONFIG_SOURCE_FLAG, &errs);
        assert_int_equal(rv, i < CONFIG_MAX_EXPORTERS ? 0 : DLOTEL_ERR_CONFIG);
    }
    assert_diag(&errs, "exporters.e32", "too many exporters (at most 32)");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_routing(void **state)
{
    (void)state;
    const char *yaml = "exporters:\n"
                       "  a: {type: debug}\n"
                       "  b: {type: debug}\n"
                       "  c: {type: debug}\n"
                       "exporters_traces: [a, b]\n"
                       "exporters_logs: []\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, yaml, base_env, &errs), &errs);
    /* sink.enabled adds the sink; unset lists (metrics) get every exporter. */
    assert_int_equal(cfg->n_exporters, 4);
    assert_int_equal(config_exporter_signals(cfg, config_exporter_find(cfg, "a")),
                     CONFIG_SIGNAL_TRACES | CONFIG_SIGNAL_METRICS);
    assert_int_equal(config_exporter_signals(cfg, config_exporter_find(cfg, "c")),
                     CONFIG_SIGNAL_METRICS);
    assert_int_equal(config_exporter_signals(cfg, config_exporter_find(cfg, "sink")),
                     CONFIG_SIGNAL_METRICS);
    assert_int_equal(cfg->exporters_logs.n, 0);
    assert_int_equal(cfg->exporters_metrics.n, 4);
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* An exporter no signal reaches is a warning. */
    char *home_only[] = {"HOME=/home/test", NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg,
                   "exporters: {a: {type: debug}, b: {type: debug}}\nexporters_traces: [a]\n"
                   "exporters_metrics: [a]\nexporters_logs: [a]\n",
                   home_only, &errs),
              &errs);
    assert_warning(&errs, "exporters.b", "receives no signal");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_exporter_env(void **state)
{
    (void)state;
    char *env[] = {"HOME=/home/test",
                   "DATALAYER_OTEL_AGENT_EXPORTER_UP_ENDPOINT=https://from-env.example",
                   "DATALAYER_OTEL_AGENT_EXPORTER_UP_DISK_QUEUE_PATH=/var/q",
                   "DATALAYER_OTEL_AGENT_EXPORTER_UP_HEADERS=X-A=1, X-B = two",
                   "DATALAYER_OTEL_AGENT_EXPORTER_MY_DBG_TYPE=debug",
                   "DATALAYER_OTEL_AGENT_EXPORTERS_TRACES=up,my_dbg",
                   NULL};
    const char *yaml = "exporters:\n"
                       "  up:\n"
                       "    type: otlp_http\n"
                       "    endpoint: https://from-file.example\n"
                       "    compression: zstd\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, yaml, env, &errs), &errs);
    const struct config_exporter *up = config_exporter_find(cfg, "up");
    assert_non_null(up);
    assert_string_equal(up->endpoint, "https://from-env.example");
    assert_int_equal(up->compression, CONFIG_COMPRESSION_ZSTD);
    assert_string_equal(up->disk_queue.path, "/var/q");
    assert_int_equal(up->headers.n, 2);
    assert_string_equal(up->headers.items[1].key, "X-B");
    assert_string_equal(up->headers.items[1].value, "two");
    const struct config_exporter *dbg = config_exporter_find(cfg, "my_dbg");
    assert_non_null(dbg);
    assert_int_equal(dbg->type, CONFIG_EXPORTER_DEBUG);
    assert_int_equal(cfg->exporters_traces.n, 2);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_header_entries(void **state)
{
    (void)state;
    char *env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_EXPORTER_UP_HEADERS=X-A=env,X-B=env",
                   NULL};
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(config_new(&cfg), 0);
    /* One header at a time, from the typed config: its value may hold commas and '='. */
    assert_ok(config_set_kv(cfg, "exporters.up.headers.X-B=a, b=c", CONFIG_SOURCE_API, &errs),
              &errs);
    assert_ok(config_load_env(cfg, env, &errs), &errs); /* Lower rank: ignored. */
    assert_ok(config_set(cfg, "exporters.up.type", "otlp_http", CONFIG_SOURCE_API, &errs), &errs);
    assert_ok(config_set(cfg, "exporters.up.endpoint", "http://c:4318", CONFIG_SOURCE_API, &errs),
              &errs);
    assert_ok(config_set(cfg, "exporters.up.headers.X-C", "3", CONFIG_SOURCE_FLAG, &errs), &errs);
    assert_int_equal(
        config_set(cfg, "exporters.up.headers.X-D", "a\r\nInjected: 1", CONFIG_SOURCE_FLAG, &errs),
        DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "exporters.up.headers.X-D", "control character 0x0d");
    assert_ok(config_finalize(cfg, &errs), &errs);
    const struct config_exporter *up = config_exporter_find(cfg, "up");
    assert_int_equal(up->headers.n, 2);
    assert_string_equal(up->headers.items[0].key, "X-B");
    assert_string_equal(up->headers.items[0].value, "a, b=c");
    assert_string_equal(up->headers.items[1].key, "X-C");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_sink_and_api_rules(void **state)
{
    (void)state;
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, "api: {host: 0.0.0.0}\n", base_env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "api.host", "reachable from other hosts and no secret is set");
    config_free(cfg);
    config_errors_cleanup(&errs);

    char *env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_SINK=true", "DATALAYER_JWT_SECRET=s",
                   NULL};
    config_errors_init(&errs);
    assert_ok(load(&cfg, "api: {host: 0.0.0.0, port: 0}\n", env, &errs), &errs);
    config_free(cfg);
    config_errors_cleanup(&errs);

    config_errors_init(&errs);
    assert_int_equal(load(&cfg, "api: {port: 4317}\n", base_env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "api.port", "same address as receivers.grpc_endpoint");
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* Keys that must have a value. */
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, "admin: {endpoint: ~}\nsink: {data_dir: ''}\n", base_env, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "admin.endpoint", "needs a value");
    assert_diag(&errs, "sink.data_dir", "needs a value");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_paths(void **state)
{
    (void)state;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(load(&cfg, "log: {file: dlotel.log}\nsink: {data_dir: '~/data/'}\n", base_env, &errs),
              &errs);
    char want[4200];
    snprintf(want, sizeof(want), "%s/dlotel.log", cwd);
    assert_string_equal(cfg->log.file, want);
    assert_string_equal(cfg->sink.data_dir, "/home/test/data");
    config_free(cfg);
    config_errors_cleanup(&errs);

    char *nohome[] = {"DATALAYER_OTEL_AGENT_SINK=true", "HOME=", NULL};
    config_errors_init(&errs);
    assert_int_equal(load(&cfg, NULL, nohome, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "sink.data_dir", "cannot expand '~': HOME is not set");
    config_free(cfg);
    config_errors_cleanup(&errs);

    config_errors_init(&errs);
    assert_int_equal(load(&cfg, "state_dir: ~other/x\n", base_env, &errs), DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "state_dir", "only ~/ is expanded");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

/* ---- YAML edge cases ----------------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void expect_yaml_error(const char *yaml, size_t len, const char *msg)
{
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(config_new(&cfg), 0);
    int rv = config_load_yaml_string(cfg, yaml, len, "edge.yaml", &errs);
    assert_true(rv == DLOTEL_ERR_CONFIG || rv == DLOTEL_ERR_TOO_LARGE);
    bool found = false;
    for (size_t i = 0; i < errs.n; i++) {
        found = found || strstr(errs.items[i].message, msg) != NULL;
    }
    if (!found) {
        dump(&errs);
        fail_msg("expected an error containing '%s'", msg);
    }
    config_free(cfg);
    config_errors_cleanup(&errs);
}

static void test_yaml_billion_laughs(void **state)
{
    (void)state;
    const char *yaml = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                       "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                       "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
                       "exporters_traces: [*i, *i, *i, *i, *i, *i, *i, *i, *i, *i]\n";
    double t0 = now_seconds();
    expect_yaml_error(yaml, strlen(yaml), "too many nodes once aliases are expanded");
    assert_true(now_seconds() - t0 < 1.0);

    /* An alias inside its own anchor is a cycle: refused, not followed forever. */
    const char *cycle = "exporters: &x {a: *x}\n";
    expect_yaml_error(cycle, strlen(cycle), "nested too deep");
    const char *merge_cycle = "batch: &x {<<: *x}\n";
    expect_yaml_error(merge_cycle, strlen(merge_cycle), "nested too deep");
}

static void test_yaml_depth(void **state)
{
    (void)state;
    /* 17 levels: one past the limit. */
    char yaml[64];
    memset(yaml, '[', 17);
    memset(yaml + 17, ']', 17);
    yaml[34] = 0;
    expect_yaml_error(yaml, strlen(yaml), "nested too deep (at most 16 levels)");

    /* Very deep input is refused quickly and without deep recursion. */
    size_t n = 100000;
    char *deep = malloc(2 * n + 1);
    assert_non_null(deep);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = 0;
    double t0 = now_seconds();
    expect_yaml_error(deep, 2 * n, "nested too deep");
    assert_true(now_seconds() - t0 < 2.0);
    free(deep);
}

static void test_yaml_structure_errors(void **state)
{
    (void)state;
    const char *dup = "batch:\n  max_size: 1\n  max_size: 2\n";
    expect_yaml_error(dup, strlen(dup), "duplicate key 'max_size'");
    const char *dup_top = "batch: {}\nbatch: {}\n";
    expect_yaml_error(dup_top, strlen(dup_top), "duplicate key 'batch'");
    const char *latin1 = "api:\n  host: caf\xe9\n";
    expect_yaml_error(latin1, strlen(latin1), "not valid UTF-8");
    const char utf16[] = "\xff\xfe"
                         "b\0a\0t\0c\0h\0:\0";
    expect_yaml_error(utf16, sizeof(utf16) - 1, "not valid UTF-8");
    const char *two = "batch: {}\n---\nbatch: {}\n";
    expect_yaml_error(two, strlen(two), "more than one YAML document");
    const char *list = "- a\n- b\n";
    expect_yaml_error(list, strlen(list), "the top level must be a mapping");
    const char *broken = "batch: {max_size: 1\n";
    expect_yaml_error(broken, strlen(broken), "not valid YAML");
    const char *undefined_alias = "batch: *nope\n";
    expect_yaml_error(undefined_alias, strlen(undefined_alias), "not valid YAML");
    const char *complex_key = "? [a]\n: 1\n";
    expect_yaml_error(complex_key, strlen(complex_key), "keys must be plain strings");
    const char *ctl = "api: {host: \"a\\x01b\"}\n";
    expect_yaml_error(ctl, strlen(ctl), "control character 0x01");
    const char *nul = "api: {host: \"a\\0b\"}\n";
    expect_yaml_error(nul, strlen(nul), "control character 0x00");
    const char *unset = "api: {host: '${env:DLOTEL_TEST_SURELY_UNSET}'}\n";
    expect_yaml_error(unset, strlen(unset),
                      "environment variable DLOTEL_TEST_SURELY_UNSET is not set");
    const char *badref = "api: {host: '${HOME}'}\n";
    expect_yaml_error(badref, strlen(badref), "must start ${env:NAME}");
    char *big = malloc(CONFIG_MAX_FILE_BYTES + 2);
    assert_non_null(big);
    memset(big, '#', CONFIG_MAX_FILE_BYTES + 1);
    big[CONFIG_MAX_FILE_BYTES + 1] = 0;
    expect_yaml_error(big, CONFIG_MAX_FILE_BYTES + 1, "larger than");
    free(big);
}

static void test_yaml_empty_and_merge(void **state)
{
    (void)state;
    struct config_errors errs;
    config_errors_init(&errs);
    struct config *ref;
    assert_ok(load(&ref, NULL, base_env, &errs), &errs);
    static const char *const empties[] = {"",      "\n",  "# only a comment\n",
                                          "---\n", "~\n", "\xef\xbb\xbf"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        struct config *cfg;
        assert_ok(load(&cfg, empties[i], base_env, &errs), &errs);
        assert_true(config_hash(cfg) == config_hash(ref));
        config_free(cfg);
    }
    config_free(ref);

    /* Anchors and "<<" merges: own keys win over merged ones, earlier merges over later. */
    const char *yaml = "x-common: &common\n"
                       "  type: otlp_http\n"
                       "  compression: zstd\n"
                       "  request_timeout: 3s\n"
                       "  headers: &h {X-A: a, X-B: b}\n"
                       "x-other: &other {compression: none, request_timeout: 4s}\n"
                       "exporters:\n"
                       "  one:\n"
                       "    <<: [*common, *other]\n"
                       "    endpoint: https://one.example\n"
                       "  two:\n"
                       "    <<: *common\n"
                       "    endpoint: https://two.example\n"
                       "    compression: gzip\n"
                       "    headers:\n"
                       "      <<: *h\n"
                       "      X-B: own\n"
                       "exporters_traces: &names [one, two]\n"
                       "exporters_logs: *names\n";
    struct config *cfg;
    assert_ok(load(&cfg, yaml, base_env, &errs), &errs);
    const struct config_exporter *one = config_exporter_find(cfg, "one");
    const struct config_exporter *two = config_exporter_find(cfg, "two");
    assert_non_null(one);
    assert_non_null(two);
    assert_int_equal(one->type, CONFIG_EXPORTER_OTLP_HTTP);
    assert_int_equal(one->compression, CONFIG_COMPRESSION_ZSTD);
    assert_int_equal(one->request_timeout_ns, 3 * SEC);
    assert_int_equal(two->compression, CONFIG_COMPRESSION_GZIP);
    assert_int_equal(two->headers.n, 2);
    assert_string_equal(two->headers.items[1].key, "X-B");
    assert_string_equal(two->headers.items[1].value, "own");
    assert_int_equal(cfg->exporters_logs.n, 2);
    config_free(cfg);

    /* ${env:NAME} and $$. */
    char *env[] = {"HOME=/home/test", "DATALAYER_OTEL_AGENT_SINK=true", "MY_HOST=127.0.0.2", NULL};
    assert_ok(load(&cfg, "api: {host: '${env:MY_HOST}', cors_origin: 'a$$b$c'}\n", env, &errs),
              &errs);
    assert_string_equal(cfg->api.host, "127.0.0.2");
    assert_string_equal(cfg->api.cors_origin, "a$b$c");
    config_free(cfg);
    config_errors_cleanup(&errs);
}

/* ---- the example files and config_build ---------------------------------------------------- */

static void test_example_files(void **state)
{
    (void)state;
    char *env[] = {"HOME=/home/test", "DATALAYER_API_KEY=sk-example", NULL};
    static const char *const files[] = {"agent.yaml", "sink.yaml", "minimal.yaml"};
    for (size_t i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/config/%s", DLOTEL_SOURCE_DIR, files[i]);
        struct config *cfg = NULL;
        struct config_errors errs;
        config_errors_init(&errs);
        int rv = config_build(&cfg, path, env, NULL, 0, &errs);
        if (rv != 0) {
            dump(&errs);
            fail_msg("%s does not validate: %s", files[i], dlotel_strerror(rv));
        }
        assert_int_equal(errs.n_warnings, 0);
        if (i == 0) {
            assert_int_equal(cfg->n_exporters, 2);
            const struct config_exporter *dl = config_exporter_find(cfg, "datalayer");
            const struct config_exporter *col = config_exporter_find(cfg, "collector");
            assert_string_equal(dl->headers.items[0].value, "Bearer sk-example");
            assert_int_equal(dl->retry.max_elapsed_time_ns, 300 * SEC);
            assert_int_equal(col->type, CONFIG_EXPORTER_OTLP_GRPC);
            assert_int_equal(col->compression, CONFIG_COMPRESSION_ZSTD);
            assert_int_equal(config_exporter_signals(cfg, col), CONFIG_SIGNAL_TRACES);
            assert_int_equal(config_exporter_signals(cfg, dl), 7);
        } else if (i == 1) {
            assert_true(cfg->sink.enabled);
            assert_string_equal(cfg->sink.data_dir, "/home/test/.local/share/dlotel");
            assert_int_equal(cfg->n_exporters, 1);
            assert_int_equal(cfg->exporters[0].type, CONFIG_EXPORTER_SINK);
        } else {
            assert_int_equal(cfg->n_exporters, 1);
            assert_string_equal(cfg->exporters[0].endpoint, "http://otel-collector:4318");
        }
        config_free(cfg);
        config_errors_cleanup(&errs);
    }
}

static void test_config_build(void **state)
{
    (void)state;
    char dir[] = "/tmp/dlotel-config-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/c.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("batch: {max_size: 10, timeout: 1s, max_bytes: 2MiB}\nsink: {enabled: true}\n", f);
    fclose(f);
    char cfg_var[300];
    snprintf(cfg_var, sizeof(cfg_var), "DATALAYER_OTEL_CONFIG=%s", path);
    char *env[] = {"HOME=/home/test", cfg_var, "DATALAYER_OTEL_AGENT_BATCH_MAX_SIZE=20",
                   "DATALAYER_OTEL_AGENT_BATCH_TIMEOUT=2s", NULL};
    struct config_setting flags[] = {{"--batch-timeout", "3s"}, {"log.level", "debug"}};
    struct config *cfg = NULL;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_ok(config_build(&cfg, NULL, env, flags, 2, &errs), &errs);
    assert_int_equal(cfg->batch.max_bytes, 2 * MIB);  /* file */
    assert_int_equal(cfg->batch.max_size, 20);        /* env over file */
    assert_int_equal(cfg->batch.timeout_ns, 3 * SEC); /* flag over env */
    assert_int_equal(cfg->log.level, LOG_LEVEL_DEBUG);
    config_free(cfg);
    config_errors_cleanup(&errs);

    /* A missing file is an I/O error, and *out is untouched. */
    struct config *untouched = (struct config *)&errs;
    config_errors_init(&errs);
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/missing.yaml", dir);
    assert_int_equal(config_build(&untouched, missing, base_env, NULL, 0, &errs), DLOTEL_ERR_IO);
    assert_true(untouched == (struct config *)&errs);
    assert_true(has_diag(&errs, false, "", "cannot open"));
    config_errors_cleanup(&errs);

    /* Errors from every stage come back together. */
    struct config_setting bad_flag[] = {{"--batch-timeout", "soon"}};
    config_errors_init(&errs);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("batch: {max_sise: 10}\n", f);
    fclose(f);
    char *bad_env[] = {"HOME=/home/test", cfg_var, "DATALAYER_OTEL_PORT=x", NULL};
    assert_int_equal(config_build(&untouched, NULL, bad_env, bad_flag, 1, &errs),
                     DLOTEL_ERR_CONFIG);
    assert_diag(&errs, "batch.max_sise", "did you mean 'max_size'?");
    assert_diag(&errs, "api.port", "'x' is not an integer");
    assert_diag(&errs, "batch.timeout", "'soon' is not a duration");
    assert_diag(&errs, "exporters", "nothing to send telemetry to");
    config_errors_cleanup(&errs);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_consistent),
        cmocka_unit_test(test_flags_table),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_yaml_overrides_defaults),
        cmocka_unit_test(test_env_overrides_yaml_in_any_order),
        cmocka_unit_test(test_flags_override_env),
        cmocka_unit_test(test_env_aliases),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_errors_format),
        cmocka_unit_test(test_size_parsing),
        cmocka_unit_test(test_duration_parsing),
        cmocka_unit_test(test_secrets_masked),
        cmocka_unit_test(test_print_sources_and_round_trip),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_default_upstream),
        cmocka_unit_test(test_nothing_configured),
        cmocka_unit_test(test_own_address_refused),
        cmocka_unit_test(test_exporter_rules),
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_exporter_env),
        cmocka_unit_test(test_header_entries),
        cmocka_unit_test(test_sink_and_api_rules),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_yaml_billion_laughs),
        cmocka_unit_test(test_yaml_depth),
        cmocka_unit_test(test_yaml_structure_errors),
        cmocka_unit_test(test_yaml_empty_and_merge),
        cmocka_unit_test(test_example_files),
        cmocka_unit_test(test_config_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
