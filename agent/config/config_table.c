/*
 * The option tables: the single source of truth for every configuration key. Parsing (YAML,
 * environment, flags), validation bounds, `config --print`, the hash and docs/configuration.md
 * all read these entries, so adding a key here is the whole job (plus a typed field in
 * config.h). Keys sharing a prefix must stay next to each other: the printer nests them.
 */
#include <stddef.h>

#include "config/config_int.h"

#define KIB  (1024LL)
#define MIB  (1024LL * KIB)
#define GIB  (1024LL * MIB)
#define TIB  (1024LL * GIB)
#define MS   (1000000LL)
#define SEC  (1000LL * MS)
#define MIN  (60LL * SEC)
#define HOUR (60LL * MIN)

#define G(p, k, field) .path = (p), .kind = (k), .offset = offsetof(struct config, field)
#define E(p, k, field) .path = (p), .kind = (k), .offset = offsetof(struct config_exporter, field)

static const char *const exporter_types[] = {"otlp_http", "otlp_grpc", "debug",
                                             "file",      "sink",      NULL};
static const char *const compressions[] = {"gzip", "zstd", "none", NULL};
static const char *const fsyncs[] = {"always", "batch", "never", NULL};
static const char *const verbosities[] = {"summary", "detailed", NULL};
static const char *const overloads[] = {"shed", NULL};
static const char *const jwt_algorithms[] = {"HS256", "HS384", "HS512", "RS256", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

const struct config_section_info config_sections[CONFIG_SEC_COUNT] = {
    [CONFIG_SEC_GENERAL] = {"General", "Top-level keys."},
    [CONFIG_SEC_RECEIVERS] = {"receivers",
                              "Where the agent listens for OTLP, and how large a request may be."},
    [CONFIG_SEC_BATCH] = {"batch",
                          "Requests are batched per exporter; a batch is sent when it reaches "
                          "`max_size` items or `max_bytes`, or after `timeout`."},
    [CONFIG_SEC_QUEUE] = {"queue", "Memory shared by the exporters' queues, and what the "
                                   "receivers do when it is full."},
    [CONFIG_SEC_EXPORTERS] =
        {"exporters",
         "A map of named exporters, each with its own queue so that a slow one stalls no "
         "other. Keys are relative to `exporters.<name>`; names are lowercase letters, digits, "
         "`_` and `-`, starting with a letter. In the environment a key is "
         "`DATALAYER_OTEL_AGENT_EXPORTER_<NAME>_<KEY>` (name upper-cased, `-` not expressible; "
         "the longest matching key wins), e.g. `DATALAYER_OTEL_AGENT_EXPORTER_UP_ENDPOINT`; a "
         "variable naming a new exporter creates it. Keys that do not apply to the exporter's "
         "type are refused."},
    [CONFIG_SEC_ROUTING] = {"Routing",
                            "Which exporters receive each signal, in rotel's shape. An unset "
                            "list means every exporter; an empty list drops that signal."},
    [CONFIG_SEC_PROCESSORS] =
        {"Processors",
         "Per-signal processor chains in rotel's shape: an ordered list of processors, each a "
         "mapping with a `kind` (`filter`, `sample`, `attributes`, `resource`, `limits`) and its "
         "options; see docs/processors.md. In the environment, flags and the Python config the "
         "list is written as JSON. Unset: no processors, and requests are forwarded without "
         "being decoded."},
    [CONFIG_SEC_UPSTREAM] = {"upstream",
                             "The default upstream, used only when no exporter is configured."},
    [CONFIG_SEC_SINK] = {"sink", "Local storage: DuckDB hot buffer, then Parquet files."},
    [CONFIG_SEC_API] = {"api", "The query API (REST, SQL, WebSocket) served in sink mode."},
    [CONFIG_SEC_ADMIN] = {"admin", "The agent's own health and metrics."},
    [CONFIG_SEC_LOG] = {"log", "The agent's own log."},
};

const struct config_option config_table[] = {
    /* General. */
    {G("enabled", CONFIG_KIND_BOOL, enabled), .def = "true",
     .doc = "Whether the agent starts at all; `OTEL_SDK_DISABLED` works as in the OpenTelemetry "
            "SDKs.",
     .env = {"DATALAYER_OTEL_AGENT_ENABLED"}, .env_true = "OTEL_SDK_DISABLED",
     .env_true_value = "false", .section = CONFIG_SEC_GENERAL},
    {G("shutdown_timeout", CONFIG_KIND_DURATION, shutdown_timeout_ns), .def = "5s",
     .doc = "How long a stopping agent keeps sending what is queued; what is left then stays in "
            "the disk queues for the next start.",
     .env = {"DATALAYER_OTEL_AGENT_SHUTDOWN_TIMEOUT"}, .flag = "--shutdown-timeout", .min = 0,
     .max = 10 * MIN, .section = CONFIG_SEC_GENERAL},
    {G("state_dir", CONFIG_KIND_PATH, state_dir), .def = "~/.local/state/dlotel",
     .def_doc = "`$XDG_STATE_HOME/dlotel`, else `~/.local/state/dlotel`",
     .doc = "The agent's own state: the exporters' disk queues live in `queue/<exporter>`.",
     .env = {"DATALAYER_OTEL_AGENT_STATE_DIR"}, .flag = "--state-dir", .flags = CONFIG_OPT_REQUIRED,
     .section = CONFIG_SEC_GENERAL},

    /* receivers */
    {G("receivers.grpc_endpoint", CONFIG_KIND_STRING, receivers.grpc_endpoint),
     .def = "localhost:4317",
     .doc = "OTLP/gRPC listen address, `host:port`; port 0 picks a free port.",
     .env = {"DATALAYER_OTEL_AGENT_GRPC_ENDPOINT"}, .flag = "--grpc-endpoint",
     .flags = CONFIG_OPT_ENDPOINT | CONFIG_OPT_REQUIRED, .section = CONFIG_SEC_RECEIVERS},
    {G("receivers.http_endpoint", CONFIG_KIND_STRING, receivers.http_endpoint),
     .def = "localhost:4318",
     .doc = "OTLP/HTTP listen address, `host:port`; port 0 picks a free port.",
     .env = {"DATALAYER_OTEL_AGENT_HTTP_ENDPOINT"}, .flag = "--http-endpoint",
     .flags = CONFIG_OPT_ENDPOINT | CONFIG_OPT_REQUIRED, .section = CONFIG_SEC_RECEIVERS},
    {G("receivers.grpc_max_message_size", CONFIG_KIND_SIZE, receivers.grpc_max_message_size),
     .def = "4MiB",
     .doc = "Largest gRPC message accepted, also after decompression; a larger one gets "
            "RESOURCE_EXHAUSTED.",
     .env = {"DATALAYER_OTEL_AGENT_GRPC_MAX_MESSAGE_SIZE"}, .min = KIB, .max = 256 * MIB,
     .section = CONFIG_SEC_RECEIVERS},
    {G("receivers.http_max_body_size", CONFIG_KIND_SIZE, receivers.http_max_body_size),
     .def = "20MiB",
     .doc = "Largest HTTP request body accepted, also after decompression; a larger one gets "
            "413.",
     .env = {"DATALAYER_OTEL_AGENT_HTTP_MAX_BODY_SIZE"}, .min = KIB, .max = 256 * MIB,
     .section = CONFIG_SEC_RECEIVERS},
    {G("receivers.max_connections", CONFIG_KIND_INT, receivers.max_connections), .def = "4096",
     .doc = "Connections each receiver holds open at once; more are accepted and closed at once. "
            "Each is a file descriptor: the agent raises its soft `RLIMIT_NOFILE` to the hard "
            "limit at start, and the hard limit must leave room for both receivers.",
     .env = {"DATALAYER_OTEL_AGENT_MAX_CONNECTIONS"}, .min = 1, .max = 1000000,
     .section = CONFIG_SEC_RECEIVERS},
    {G("receivers.request_timeout", CONFIG_KIND_DURATION, receivers.request_timeout_ns),
     .def = "60s",
     .doc = "A request's headers and body must all arrive within this long of its first byte, "
            "however steadily they trickle: HTTP/1.1 then gets 408 and the connection closes, an "
            "HTTP/2 stream gets 408 (gRPC: DEADLINE_EXCEEDED) and is reset.",
     .env = {"DATALAYER_OTEL_AGENT_REQUEST_TIMEOUT"}, .min = SEC, .max = HOUR,
     .section = CONFIG_SEC_RECEIVERS},

    /* batch */
    {G("batch.max_size", CONFIG_KIND_INT, batch.max_size), .def = "8192",
     .doc = "Items (spans, metric data points, log records) per batch.",
     .env = {"DATALAYER_OTEL_AGENT_BATCH_MAX_SIZE"}, .flag = "--batch-max-size", .min = 1,
     .max = 1000000, .section = CONFIG_SEC_BATCH},
    {G("batch.max_bytes", CONFIG_KIND_SIZE, batch.max_bytes), .def = "4MiB",
     .doc = "Encoded bytes per batch; must stay below 20MiB, the Datalayer collector's request "
            "limit.",
     .env = {"DATALAYER_OTEL_AGENT_BATCH_MAX_BYTES"}, .flag = "--batch-max-bytes", .min = KIB,
     .max = CONFIG_UPSTREAM_MAX_REQUEST, .flags = CONFIG_OPT_MAX_EXCLUSIVE,
     .section = CONFIG_SEC_BATCH},
    {G("batch.timeout", CONFIG_KIND_DURATION, batch.timeout_ns), .def = "200ms",
     .doc = "How long a batch may wait to fill before it is sent.",
     .env = {"DATALAYER_OTEL_AGENT_BATCH_TIMEOUT"}, .flag = "--batch-timeout", .min = MS,
     .max = HOUR, .section = CONFIG_SEC_BATCH},

    /* queue */
    {G("queue.memory_max_bytes", CONFIG_KIND_SIZE, queue.memory_max_bytes), .def = "64MiB",
     .doc = "Memory all exporter queues may hold together; past it the receivers shed load.",
     .env = {"DATALAYER_OTEL_AGENT_QUEUE_MEMORY_MAX_BYTES"}, .min = MIB, .max = 64 * GIB,
     .section = CONFIG_SEC_QUEUE},
    {G("queue.overload", CONFIG_KIND_ENUM, queue.overload), .def = "shed",
     .doc = "What the receivers do when the queues are full: `shed` answers 429 / "
            "RESOURCE_EXHAUSTED with a retry hint, counted; a request is never held open.",
     .env = {"DATALAYER_OTEL_AGENT_QUEUE_OVERLOAD"}, .choices = overloads,
     .section = CONFIG_SEC_QUEUE},
    {G("queue.retry_after", CONFIG_KIND_DURATION, queue.retry_after_ns), .def = "1s",
     .doc = "The delay suggested to shed clients (`Retry-After`, gRPC `RetryInfo`).",
     .env = {"DATALAYER_OTEL_AGENT_QUEUE_RETRY_AFTER"}, .min = SEC, .max = HOUR,
     .section = CONFIG_SEC_QUEUE},

    /* exporters: the fields are in config_exporter_table. */
    {.path = "exporters",
     .kind = CONFIG_KIND_EXPORTERS,
     .offset = 0,
     .doc = "Named exporters; see the exporter keys below.",
     .section = CONFIG_SEC_EXPORTERS},

    /* Routing */
    {G("exporters_traces", CONFIG_KIND_LIST, exporters_traces), .def_doc = "every exporter",
     .doc = "Exporters that receive traces.", .env = {"DATALAYER_OTEL_AGENT_EXPORTERS_TRACES"},
     .flag = "--exporters-traces", .section = CONFIG_SEC_ROUTING},
    {G("exporters_metrics", CONFIG_KIND_LIST, exporters_metrics), .def_doc = "every exporter",
     .doc = "Exporters that receive metrics.", .env = {"DATALAYER_OTEL_AGENT_EXPORTERS_METRICS"},
     .flag = "--exporters-metrics", .section = CONFIG_SEC_ROUTING},
    {G("exporters_logs", CONFIG_KIND_LIST, exporters_logs), .def_doc = "every exporter",
     .doc = "Exporters that receive logs.", .env = {"DATALAYER_OTEL_AGENT_EXPORTERS_LOGS"},
     .flag = "--exporters-logs", .section = CONFIG_SEC_ROUTING},

    /* Processors */
    {G("processors_traces", CONFIG_KIND_PROCESSORS, processors_traces),
     .doc = "Processors run on traces, in order.",
     .env = {"DATALAYER_OTEL_AGENT_PROCESSORS_TRACES"}, .flag = "--processors-traces",
     .section = CONFIG_SEC_PROCESSORS},
    {G("processors_metrics", CONFIG_KIND_PROCESSORS, processors_metrics),
     .doc = "Processors run on metrics, in order.",
     .env = {"DATALAYER_OTEL_AGENT_PROCESSORS_METRICS"}, .flag = "--processors-metrics",
     .section = CONFIG_SEC_PROCESSORS},
    {G("processors_logs", CONFIG_KIND_PROCESSORS, processors_logs),
     .doc = "Processors run on logs, in order.", .env = {"DATALAYER_OTEL_AGENT_PROCESSORS_LOGS"},
     .flag = "--processors-logs", .section = CONFIG_SEC_PROCESSORS},

    /* upstream */
    {G("upstream.otlp_url", CONFIG_KIND_STRING, upstream.otlp_url),
     .doc = "Upstream OTLP/HTTP base URL (`/v1/traces` etc. appended) for the default exporter; "
            "wins over `upstream.run_url`.",
     .env = {"DATALAYER_OTLP_URL"}, .flag = "--otlp-url", .flags = CONFIG_OPT_URL,
     .section = CONFIG_SEC_UPSTREAM},
    {G("upstream.run_url", CONFIG_KIND_STRING, upstream.run_url),
     .doc = "Datalayer platform base URL; the default exporter sends to it + "
            "`/api/otel/v1/otlp`.",
     .env = {"DATALAYER_OTEL_RUN_URL", "DATALAYER_RUN_URL"}, .flag = "--run-url",
     .flags = CONFIG_OPT_URL, .section = CONFIG_SEC_UPSTREAM},
    {G("upstream.api_key", CONFIG_KIND_SECRET, upstream.api_key),
     .doc = "Sent by the default exporter as `Authorization: Bearer <key>`.",
     .env = {"DATALAYER_API_KEY"}, .section = CONFIG_SEC_UPSTREAM},

    /* sink */
    {G("sink.enabled", CONFIG_KIND_BOOL, sink.enabled), .def = "false",
     .doc = "Store telemetry locally and serve the query API; adds an exporter `sink` of type "
            "`sink` when none is configured.",
     .env = {"DATALAYER_OTEL_AGENT_SINK"}, .flag = "--sink", .section = CONFIG_SEC_SINK},
    {G("sink.data_dir", CONFIG_KIND_PATH, sink.data_dir), .def = "~/.local/share/dlotel",
     .def_doc = "`$XDG_DATA_HOME/dlotel`, else `~/.local/share/dlotel`",
     .doc = "Where the Parquet files and the hot buffer live.",
     .env = {"DATALAYER_OTEL_DATA_DIR", "DATALAYER_OTEL_DATAFUSION_DATA_DIR"}, .flag = "--data-dir",
     .flags = CONFIG_OPT_REQUIRED, .section = CONFIG_SEC_SINK},
    {G("sink.max_rows_per_file", CONFIG_KIND_INT, sink.max_rows_per_file), .def = "100000",
     .doc = "Rows per Parquet file before a new file is started.",
     .env = {"DATALAYER_OTEL_MAX_ROWS_PER_FILE", "DATALAYER_OTEL_DATAFUSION_MAX_ROWS_PER_FILE"},
     .min = 1000, .max = 100000000, .section = CONFIG_SEC_SINK},
    {G("sink.retention_days", CONFIG_KIND_INT, sink.retention_days), .def = "30",
     .doc = "Days of data kept; older `date=` folders are dropped. 0 keeps everything.",
     .env = {"DATALAYER_OTEL_RETENTION_DAYS"}, .min = 0, .max = 36500, .section = CONFIG_SEC_SINK},
    {G("sink.flush_interval", CONFIG_KIND_DURATION, sink.flush_interval_ns), .def = "60s",
     .doc = "Hot rows older than this are written to Parquet; 0 flushes only by row count, on "
            "`POST /flush`, SIGUSR1 and at exit. Queries see hot rows either way.",
     .env = {"DATALAYER_OTEL_FLUSH_INTERVAL"}, .min = 0, .max = 24 * HOUR,
     .section = CONFIG_SEC_SINK},
    {G("sink.maintenance_interval", CONFIG_KIND_DURATION, sink.maintenance_interval_ns),
     .def = "10m",
     .doc = "How often compaction, retention and the disk cap run; 0: never on their own.",
     .env = {"DATALAYER_OTEL_MAINTENANCE_INTERVAL"}, .min = 0, .max = 24 * HOUR,
     .section = CONFIG_SEC_SINK},
    {G("sink.disk_cap", CONFIG_KIND_SIZE, sink.disk_cap_bytes), .def = "0",
     .doc = "Parquet plus hot buffer bytes above which the oldest dates are dropped; 0: no cap.",
     .env = {"DATALAYER_OTEL_DISK_CAP"}, .min = 0, .max = 1024 * 1024 * GIB,
     .section = CONFIG_SEC_SINK},
    {G("sink.gc_grace", CONFIG_KIND_DURATION, sink.gc_grace_ns), .def = "60s",
     .doc = "How long a file replaced by compaction or dropped by retention stays on disk, so "
            "that queries already planned with it finish.",
     .env = {"DATALAYER_OTEL_GC_GRACE"}, .min = 0, .max = 24 * HOUR, .section = CONFIG_SEC_SINK},
    {G("sink.queue_max_bytes", CONFIG_KIND_SIZE, sink.queue_max_bytes), .def = "256MiB",
     .doc = "Requests waiting for the sink's writer at most; beyond it ingest is shed with "
            "429 / RESOURCE_EXHAUSTED.",
     .env = {"DATALAYER_OTEL_SINK_QUEUE_MAX_BYTES"}, .min = MIB, .max = 64 * GIB,
     .section = CONFIG_SEC_SINK},
    {G("sink.memory_limit", CONFIG_KIND_SIZE, sink.memory_limit_bytes), .def = "1GiB",
     .doc = "DuckDB's memory limit, queries and ingest together.",
     .env = {"DATALAYER_OTEL_MEMORY_LIMIT"}, .min = 64 * MIB, .max = 1024 * GIB,
     .section = CONFIG_SEC_SINK},
    {G("sink.threads", CONFIG_KIND_INT, sink.threads), .def = "2",
     .doc = "DuckDB's worker threads for queries and Parquet writes.",
     .env = {"DATALAYER_OTEL_THREADS"}, .min = 1, .max = 256, .section = CONFIG_SEC_SINK},

    /* api */
    {G("api.host", CONFIG_KIND_STRING, api.host), .def = "localhost",
     .doc = "Address the query API binds. A non-loopback address needs `api.jwt_secret` or "
            "`api.iam_api_key`, or `api.allow_unauthenticated`.",
     .env = {"DATALAYER_OTEL_HOST"}, .flag = "--api-host", .flags = CONFIG_OPT_REQUIRED,
     .section = CONFIG_SEC_API},
    {G("api.port", CONFIG_KIND_INT, api.port), .def = "7800",
     .doc = "Port of the query API; 0 picks a free port.", .env = {"DATALAYER_OTEL_PORT"},
     .flag = "--port", .min = 0, .max = 65535, .section = CONFIG_SEC_API},
    {G("api.jwt_secret", CONFIG_KIND_SECRET, api.jwt_secret),
     .doc = "Key that verifies JWTs (the HMAC secret, or a PEM public key for RS256).",
     .env = {"DATALAYER_JWT_SECRET"}, .section = CONFIG_SEC_API},
    {G("api.jwt_issuer", CONFIG_KIND_STRING, api.jwt_issuer),
     .doc = "Required `iss` of JWTs; unset accepts any issuer.", .env = {"DATALAYER_JWT_ISSUER"},
     .section = CONFIG_SEC_API},
    {G("api.jwt_algorithm", CONFIG_KIND_ENUM, api.jwt_algorithm), .def = "HS256",
     .doc = "Signature algorithm JWTs must use.", .env = {"DATALAYER_JWT_ALGORITHM"},
     .choices = jwt_algorithms, .section = CONFIG_SEC_API},
    {G("api.iam_api_key", CONFIG_KIND_SECRET, api.iam_api_key),
     .doc = "An API key accepted as a Bearer token with admin rights.",
     .env = {"DATALAYER_IAM_API_KEY"}, .section = CONFIG_SEC_API},
    {G("api.cors_origin", CONFIG_KIND_STRING, api.cors_origin), .def = "*",
     .doc = "`Access-Control-Allow-Origin` of API responses.", .env = {"DATALAYER_CORS_ORIGIN"},
     .flags = CONFIG_OPT_REQUIRED, .section = CONFIG_SEC_API},
    {G("api.allow_unauthenticated", CONFIG_KIND_BOOL, api.allow_unauthenticated), .def = "false",
     .doc = "Serve a non-loopback `api.host` without any secret configured (anyone who can "
            "reach it reads everything).",
     .env = {"DATALAYER_OTEL_AGENT_API_ALLOW_UNAUTHENTICATED"}, .section = CONFIG_SEC_API},
    {G("api.ingest_auth", CONFIG_KIND_BOOL, api.ingest_auth), .def = "true",
     .doc = "OTLP ingest on the query API port (`/api/otel/v1/otlp/v1/...`) needs a Bearer token "
            "when auth is on; rows get the token's user. False accepts anonymous ingest (rows keep "
            "their `datalayer.user_uid` resource attribute).",
     .env = {"DATALAYER_OTEL_AGENT_API_INGEST_AUTH"}, .section = CONFIG_SEC_API},

    /* admin */
    {G("admin.endpoint", CONFIG_KIND_STRING, admin.endpoint), .def = "localhost:13133",
     .doc = "`host:port` serving `/metrics` (Prometheus text) and `/healthz`; keep it on "
            "loopback.",
     .env = {"DATALAYER_OTEL_AGENT_ADMIN_ENDPOINT"}, .flag = "--admin-endpoint",
     .flags = CONFIG_OPT_ENDPOINT | CONFIG_OPT_REQUIRED, .section = CONFIG_SEC_ADMIN},

    /* log */
    {G("log.level", CONFIG_KIND_ENUM, log.level), .def = "info",
     .doc = "Most verbose level written.", .env = {"DATALAYER_OTEL_AGENT_LOG_LEVEL"},
     .flag = "--log-level", .choices = log_levels, .env_true = "DATALAYER_OTEL_AGENT_DEBUG_LOG",
     .env_true_value = "debug", .section = CONFIG_SEC_LOG},
    {G("log.file", CONFIG_KIND_PATH, log.file), .def_doc = "stderr", .doc = "File the log goes to.",
     .env = {"DATALAYER_OTEL_AGENT_LOG_FILE"}, .flag = "--log-file", .section = CONFIG_SEC_LOG},
    {G("log.format", CONFIG_KIND_ENUM, log.format), .def = "text",
     .doc = "`text` lines for people or `json` lines for log collectors.",
     .env = {"DATALAYER_OTEL_AGENT_LOG_FORMAT"}, .flag = "--log-format", .choices = log_formats,
     .section = CONFIG_SEC_LOG},
    {G("log.max_size", CONFIG_KIND_SIZE, log.max_size), .def = "10MiB",
     .doc = "Size at which `log.file` is rotated (one old file, `.1`, is kept).",
     .env = {"DATALAYER_OTEL_AGENT_LOG_MAX_SIZE"}, .min = 64 * KIB, .max = GIB,
     .section = CONFIG_SEC_LOG},
};

const size_t config_table_len = sizeof(config_table) / sizeof(config_table[0]);

const struct config_option config_exporter_table[] = {
    {E("type", CONFIG_KIND_ENUM, type), .choices = exporter_types,
     .doc = "Required. `otlp_http` and `otlp_grpc` forward upstream, `debug` logs each request, "
            "`file` appends OTLP/JSON lines to `path`, `sink` stores locally."},
    {E("endpoint", CONFIG_KIND_STRING, endpoint), .types = CONFIG_T_OTLP, .flags = CONFIG_OPT_URL,
     .doc = "Required. `http://` or `https://` URL; for `otlp_http` the base that `/v1/traces`, "
            "`/v1/metrics` and `/v1/logs` are appended to."},
    {E("headers", CONFIG_KIND_MAP, headers), .types = CONFIG_T_OTLP,
     .flags = CONFIG_OPT_SENSITIVE_MAP,
     .doc = "Extra request headers (`k1=v1,k2=v2` outside YAML). Values of names containing "
            "auth, token, secret, key, password or cookie are masked when printed."},
    {E("compression", CONFIG_KIND_ENUM, compression), .def = "gzip", .choices = compressions,
     .types = CONFIG_T_OTLP, .doc = "Request body compression."},
    {E("request_timeout", CONFIG_KIND_DURATION, request_timeout_ns), .def = "10s", .min = MS,
     .max = 10 * MIN, .types = CONFIG_T_OTLP, .doc = "Time limit of one request."},
    {E("retry.enabled", CONFIG_KIND_BOOL, retry.enabled), .def = "true", .types = CONFIG_T_OTLP,
     .doc = "Retry 429, 502, 503, 504 and the retryable gRPC codes with exponential backoff and "
            "jitter, honouring Retry-After."},
    {E("retry.initial_interval", CONFIG_KIND_DURATION, retry.initial_interval_ns), .def = "5s",
     .min = MS, .max = HOUR, .types = CONFIG_T_OTLP, .doc = "First backoff."},
    {E("retry.max_interval", CONFIG_KIND_DURATION, retry.max_interval_ns), .def = "30s", .min = MS,
     .max = HOUR, .types = CONFIG_T_OTLP, .doc = "Longest backoff."},
    {E("retry.max_elapsed_time", CONFIG_KIND_DURATION, retry.max_elapsed_time_ns), .def = "300s",
     .min = 0, .max = 24 * HOUR, .types = CONFIG_T_OTLP,
     .doc = "Give up on a batch after this long; 0 retries until shutdown."},
    {E("tls.ca_file", CONFIG_KIND_PATH, tls.ca_file), .types = CONFIG_T_OTLP,
     .def_doc = "system store", .doc = "PEM file of the CAs trusted for the endpoint."},
    {E("tls.cert_file", CONFIG_KIND_PATH, tls.cert_file), .types = CONFIG_T_OTLP,
     .doc = "PEM client certificate (mutual TLS); needs `tls.key_file`."},
    {E("tls.key_file", CONFIG_KIND_PATH, tls.key_file), .types = CONFIG_T_OTLP,
     .doc = "PEM private key of `tls.cert_file`."},
    {E("tls.insecure_skip_verify", CONFIG_KIND_BOOL, tls.insecure_skip_verify), .def = "false",
     .types = CONFIG_T_OTLP, .doc = "Do not verify the server's certificate (tests only)."},
    {E("disk_queue.enabled", CONFIG_KIND_BOOL, disk_queue.enabled), .def = "true",
     .types = CONFIG_T_OTLP,
     .doc = "Keep batches on disk until the upstream accepts them, across restarts."},
    {E("disk_queue.path", CONFIG_KIND_PATH, disk_queue.path), .types = CONFIG_T_OTLP,
     .def_doc = "`<state_dir>/queue/<name>`", .doc = "Directory of the disk queue."},
    {E("disk_queue.max_bytes", CONFIG_KIND_SIZE, disk_queue.max_bytes), .def = "1GiB", .min = MIB,
     .max = TIB, .types = CONFIG_T_OTLP,
     .doc = "Disk the queue may use; past it the oldest batches are dropped, counted."},
    {E("disk_queue.fsync", CONFIG_KIND_ENUM, disk_queue.fsync), .def = "batch", .choices = fsyncs,
     .types = CONFIG_T_OTLP,
     .doc = "When queue writes are flushed to disk: `always`, each `batch`, or `never`."},
    {E("memory_queue_max_bytes", CONFIG_KIND_SIZE, memory_queue_max_bytes), .def = "16MiB",
     .min = 64 * KIB, .max = 64 * GIB,
     .doc = "Memory this exporter's queue may hold; at most `queue.memory_max_bytes`."},
    {E("path", CONFIG_KIND_PATH, path), .types = CONFIG_T_FILE,
     .doc = "Required for `file`: the output, one OTLP/JSON request per line."},
    {E("verbosity", CONFIG_KIND_ENUM, verbosity), .def = "summary", .choices = verbosities,
     .types = CONFIG_T_DEBUG,
     .doc = "`summary` logs one line per request, `detailed` the whole request as OTLP/JSON."},
};

const size_t config_exporter_table_len =
    sizeof(config_exporter_table) / sizeof(config_exporter_table[0]);

_Static_assert(sizeof(config_table) / sizeof(config_table[0]) <=
                   sizeof(((struct config *)0)->source_),
               "config.source_ too small for config_table");
_Static_assert(sizeof(config_exporter_table) / sizeof(config_exporter_table[0]) <=
                   sizeof(((struct config_exporter *)0)->source_),
               "config_exporter.source_ too small for config_exporter_table");
