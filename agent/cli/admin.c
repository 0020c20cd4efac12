/*
 * The admin endpoint: /metrics and /healthz. See admin.h; the names are listed in
 * docs/operations.md, which scripts and dashboards rely on: rename nothing lightly.
 */
#include "cli/admin.h"

#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/log.h"
#include "dlotel.h"
#include "net/http.h"

#define NS_PER_S 1000000000ull

/* The largest response we build; the real ones are a few tens of KiB. */
#define ADMIN_MAX_RESPONSE (8u << 20)

void admin_snapshot_cleanup(struct admin_snapshot *s)
{
    free(s->exporters);
    s->exporters = NULL;
    s->n_exporters = 0;
}

uint64_t admin_rss_bytes(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    char text[128];
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    text[n] = '\0';
    /* "size resident shared text lib data dt", in pages. */
    const char *p = text;
    while (*p >= '0' && *p <= '9') {
        p++;
    }
    while (*p == ' ') {
        p++;
    }
    uint64_t pages = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        pages = pages * 10 + (uint64_t)(*p - '0');
    }
    long ps = sysconf(_SC_PAGESIZE);
    return pages * (uint64_t)(ps > 0 ? ps : 4096);
}

/* ---- Prometheus text ------------------------------------------------------------------------- */

struct label {
    const char *name;
    const char *value;
};

/* A label value as the exposition format wants it: \\, \" and \n escaped. */
static int put_label_value(struct buf *b, const char *v)
{
    int rc = 0;
    for (const char *c = v; rc == 0 && *c != '\0'; c++) {
        if (*c == '\\') {
            rc = buf_append(b, "\\\\", 2);
        } else if (*c == '"') {
            rc = buf_append(b, "\\\"", 2);
        } else if (*c == '\n') {
            rc = buf_append(b, "\\n", 2);
        } else {
            rc = buf_putc(b, (uint8_t)*c);
        }
    }
    return rc;
}

/* "# HELP" and "# TYPE" lines; HELP text escapes \\ and \n. Ours have neither. */
static int family(struct buf *b, const char *name, const char *type, const char *help)
{
    return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int sample(struct buf *b, const char *name, const struct label *l, size_t n, uint64_t v);

/* One counter of struct processor_stats, by its offset, and the label value it gets. */
struct proc_counter {
    const char *label;
    size_t offset;
};

/*
 * One counter family: a sample per signal that has a chain and per counter, labelled
 * {signal, |label_name|}, or {signal} alone when |label_name| is NULL.
 */
static int processor_family(struct buf *b, const struct admin_snapshot *s, const char *name,
                            const char *help, const char *label_name,
                            const struct proc_counter *counters, size_t n)
{
    int rc = family(b, name, "counter", help);
    for (int i = 0; i < OTLP_SIGNAL_COUNT && rc == 0; i++) {
        if (!s->has_processors[i]) {
            continue;
        }
        const unsigned char *ps = (const unsigned char *)&s->processors[i];
        const char *sig = otlp_signal_name((enum otlp_signal)i);
        for (size_t k = 0; k < n && rc == 0; k++) {
            uint64_t v;
            memcpy(&v, ps + counters[k].offset, sizeof(v));
            struct label l[] = {{"signal", sig}, {label_name, counters[k].label}};
            rc = sample(b, name, l, label_name != NULL ? 2 : 1, v);
        }
    }
    return rc;
}

#define PROC_COUNTER(label, member)                                                                \
    {                                                                                              \
        label, offsetof(struct processor_stats, member)                                            \
    }

/* The processors' counters, per signal with a chain; nothing at all when no chain exists. */
static int processor_families(struct buf *b, const struct admin_snapshot *s)
{
    bool any = false;
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        any = any || s->has_processors[i];
    }
    if (!any) {
        return 0;
    }
    static const struct proc_counter items[] = {
        PROC_COUNTER("in", items_in),
        PROC_COUNTER("out", items_out),
        PROC_COUNTER("filtered", filtered_items),
        PROC_COUNTER("sampled_out", sampled_out_items),
    };
    static const struct proc_counter values[] = {
        PROC_COUNTER("truncated", truncated_values),
        PROC_COUNTER("redacted", redacted_values),
        PROC_COUNTER("hashed", hashed_values),
        PROC_COUNTER("dropped_attribute", dropped_attributes),
    };
    static const struct proc_counter failed[] = {PROC_COUNTER(NULL, failed_requests)};
    int rc =
        processor_family(b, s, "dlotel_processor_items_total",
                         "Items through the processors: in, out, and dropped by filter or sample.",
                         "outcome", items, sizeof(items) / sizeof(items[0]));
    if (rc == 0) {
        rc = processor_family(b, s, "dlotel_processor_values_total",
                              "Attribute values changed by the processors: truncated, redacted, "
                              "hashed, and attributes dropped by limits.",
                              "action", values, sizeof(values) / sizeof(values[0]));
    }
    if (rc == 0) {
        rc = processor_family(b, s, "dlotel_processor_failed_requests_total",
                              "Requests the processors could not decode or encode again (refused).",
                              NULL, failed, 1);
    }
    if (rc == 0) {
        rc = family(b, "dlotel_processor_pending_requests", "gauge",
                    "Requests waiting for or in a processor chain now.");
    }
    if (rc == 0) {
        rc = sample(b, "dlotel_processor_pending_requests", NULL, 0, s->totals.processing_requests);
    }
    if (rc == 0) {
        rc = family(b, "dlotel_processor_pending_bytes", "gauge",
                    "Bytes of those requests (bounded by queue.memory_max_bytes; 429 beyond).");
    }
    if (rc == 0) {
        rc = sample(b, "dlotel_processor_pending_bytes", NULL, 0, s->totals.processing_bytes);
    }
    return rc;
}

static int sample(struct buf *b, const char *name, const struct label *l, size_t n, uint64_t v)
{
    int rc = buf_printf(b, "%s", name);
    if (n > 0 && rc == 0) {
        rc = buf_putc(b, '{');
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = buf_printf(b, "%s%s=\"", i > 0 ? "," : "", l[i].name);
            if (rc == 0) {
                rc = put_label_value(b, l[i].value);
            }
            if (rc == 0) {
                rc = buf_putc(b, '"');
            }
        }
        if (rc == 0) {
            rc = buf_putc(b, '}');
        }
    }
    return rc == 0 ? buf_printf(b, " %llu\n", (unsigned long long)v) : rc;
}

static const char *signal_label(int s)
{
    return s < OTLP_SIGNAL_COUNT ? otlp_signal_name((enum otlp_signal)s) : "unknown";
}

enum rfield { RF_REQUESTS, RF_ITEMS, RF_BYTES };

static int receiver_family(struct buf *b, const struct admin_snapshot *s, const char *name,
                           const char *help, enum rfield f)
{
    int rc = family(b, name, "counter", help);
    for (size_t i = 0; i < s->n_receivers && rc == 0; i++) {
        const struct receiver_stats *r = &s->receivers[i];
        for (int sig = 0; sig <= RECEIVER_SIGNAL_UNKNOWN && rc == 0; sig++) {
            for (int o = 0; o < RECEIVER_OUTCOME_COUNT && rc == 0; o++) {
                uint64_t v = f == RF_REQUESTS ? r->requests[sig][o]
                             : f == RF_ITEMS  ? r->items[sig][o]
                                              : r->bytes[sig][o];
                /* Every real signal and outcome from the start (rates need a zero); the
                 * "unknown" signal (a wrong path) only once it happened. */
                if (sig == RECEIVER_SIGNAL_UNKNOWN && r->requests[sig][o] == 0) {
                    continue;
                }
                struct label l[] = {
                    {"receiver", r->name},
                    {"signal", signal_label(sig)},
                    {"outcome", receiver_outcome_name((enum receiver_outcome)o)},
                };
                rc = sample(b, name, l, 3, v);
            }
        }
    }
    return rc;
}

/* The counters of one exporter x signal, by offset into struct pipeline_stats. */
struct efamily {
    const char *name;
    const char *type;
    const char *help;
    size_t off;
    bool seconds; /* A unix-nano timestamp printed as seconds. */
};

#define EF(n, t, h, field)                                                                         \
    {                                                                                              \
        n, t, h, offsetof(struct pipeline_stats, field), false                                     \
    }

static const struct efamily efamilies[] = {
    EF("dlotel_exporter_sent_items_total", "counter",
       "Items delivered upstream (2xx / OK, partially rejected ones included).", sent_items),
    EF("dlotel_exporter_sent_batches_total", "counter", "Batches delivered upstream.",
       sent_batches),
    EF("dlotel_exporter_failed_items_total", "counter",
       "Items in batches the upstream refused for good (400, 413, non-retryable gRPC codes).",
       failed_items),
    EF("dlotel_exporter_failed_batches_total", "counter", "Batches refused for good.",
       failed_batches),
    EF("dlotel_exporter_retried_batches_total", "counter",
       "Retries scheduled after a retryable failure (429, 502, 503, 504, UNAVAILABLE, "
       "timeouts...).",
       retried_batches),
    EF("dlotel_exporter_rejected_items_total", "counter",
       "Items the upstream accepted the batch of but rejected (partial_success).", rejected_items),
    EF("dlotel_exporter_refused_requests_total", "counter",
       "Requests refused at the receiver because this exporter's queue was full.",
       refused_requests),
    EF("dlotel_exporter_refused_items_total", "counter",
       "Items in requests refused because this exporter's queue was full.", refused_items),
    EF("dlotel_exporter_oversized_batches_total", "counter",
       "Batches larger than batch.max_bytes: one item that cannot be split.", oversized_batches),
    EF("dlotel_exporter_queue_items", "gauge", "Items in the memory queue, not sent yet.",
       queue_items),
    EF("dlotel_exporter_queue_bytes", "gauge", "Bytes in the memory queue, not sent yet.",
       queue_bytes),
    EF("dlotel_exporter_disk_items", "gauge", "Items in the disk queue, not read into a batch yet.",
       disk_items),
    EF("dlotel_exporter_disk_bytes", "gauge", "Bytes of the disk queue's segment files.",
       disk_bytes),
    EF("dlotel_exporter_disk_syncs_total", "counter", "fdatasync() calls on the disk queue.",
       disk_syncs),
    EF("dlotel_exporter_in_flight_batches", "gauge",
       "Batches sent and not answered yet, or waiting for a retry.", in_flight_batches),
    EF("dlotel_exporter_in_flight_bytes", "gauge", "Bytes of the batches in flight.",
       in_flight_bytes),
    {"dlotel_exporter_last_success_timestamp_seconds", "gauge",
     "Unix time of the last delivered batch; 0: never.",
     offsetof(struct pipeline_stats, last_success_unix_nano), true},
    {"dlotel_exporter_last_error_timestamp_seconds", "gauge",
     "Unix time of the last failed attempt; 0: never.",
     offsetof(struct pipeline_stats, last_error_unix_nano), true},
};

static uint64_t field_u64(const struct pipeline_stats *st, size_t off)
{
    uint64_t v;
    memcpy(&v, (const char *)st + off, sizeof(v));
    return v;
}

/* The last attempt failed: an error newer than the last success. */
static bool last_attempt_failed(const struct pipeline_stats *st)
{
    return st->last_error_unix_nano != 0 && st->last_error_unix_nano >= st->last_success_unix_nano;
}

int admin_render_metrics(const struct admin_snapshot *s, struct buf *b)
{
    int rc = family(b, "dlotel_build_info", "gauge", "Always 1; the version is a label.");
    struct label ver[] = {{"version", s->version}};
    if (rc == 0) {
        rc = sample(b, "dlotel_build_info", ver, 1, 1);
    }
    if (rc == 0 && (rc = family(b, "dlotel_uptime_seconds", "gauge",
                                "Seconds since the agent started.")) == 0) {
        rc = sample(b, "dlotel_uptime_seconds", NULL, 0, s->uptime_s);
    }
    if (rc == 0 && (rc = family(b, "dlotel_process_start_time_seconds", "gauge",
                                "Unix time the agent started.")) == 0) {
        rc = sample(b, "dlotel_process_start_time_seconds", NULL, 0, s->start_unix);
    }
    if (rc == 0 && (rc = family(b, "dlotel_process_resident_memory_bytes", "gauge",
                                "Resident memory of the agent process.")) == 0) {
        rc = sample(b, "dlotel_process_resident_memory_bytes", NULL, 0, s->rss_bytes);
    }
    if (rc == 0) {
        rc = receiver_family(b, s, "dlotel_receiver_requests_total",
                             "Requests answered, by outcome: accepted, or the refusal's reason.",
                             RF_REQUESTS);
    }
    if (rc == 0) {
        rc = receiver_family(
            b, s, "dlotel_receiver_items_total",
            "Items (spans, data points, log records) in answered requests, as far as counted.",
            RF_ITEMS);
    }
    if (rc == 0) {
        rc = receiver_family(b, s, "dlotel_receiver_bytes_total",
                             "Request bytes as received (compressed or not).", RF_BYTES);
    }
    if (rc == 0 && (rc = family(b, "dlotel_receiver_in_flight_requests", "gauge",
                                "Requests handed to the pipeline and not answered yet.")) == 0) {
        for (size_t i = 0; i < s->n_receivers && rc == 0; i++) {
            struct label l[] = {{"receiver", s->receivers[i].name}};
            rc = sample(b, "dlotel_receiver_in_flight_requests", l, 1, s->receivers[i].in_flight);
        }
    }
    if (rc == 0 && (rc = family(b, "dlotel_pipeline_memory_bytes", "gauge",
                                "Bytes held by all memory queues, in flight included.")) == 0) {
        rc = sample(b, "dlotel_pipeline_memory_bytes", NULL, 0, s->totals.memory_bytes);
    }
    rc = rc == 0 ? processor_families(b, s) : rc;
    if (rc == 0 && (rc = family(b, "dlotel_exporter_info", "gauge",
                                "Always 1: the exporter's kind and queue as labels.")) == 0) {
        for (size_t i = 0; i < s->n_exporters && rc == 0; i++) {
            const struct pipeline_stats *st = &s->exporters[i];
            /* One line per exporter: its first signal. */
            bool first = true;
            for (size_t j = 0; j < i; j++) {
                if (strcmp(s->exporters[j].exporter, st->exporter) == 0) {
                    first = false;
                }
            }
            if (!first) {
                continue;
            }
            struct label l[] = {
                {"exporter", st->exporter},
                {"kind", st->kind},
                {"queue", !st->queued ? "none"
                          : st->disk  ? "disk"
                                      : "memory"},
            };
            rc = sample(b, "dlotel_exporter_info", l, 3, 1);
        }
    }
    for (size_t f = 0; f < sizeof(efamilies) / sizeof(efamilies[0]) && rc == 0; f++) {
        const struct efamily *ef = &efamilies[f];
        rc = family(b, ef->name, ef->type, ef->help);
        for (size_t i = 0; i < s->n_exporters && rc == 0; i++) {
            const struct pipeline_stats *st = &s->exporters[i];
            struct label l[] = {{"exporter", st->exporter},
                                {"signal", otlp_signal_name(st->signal)}};
            uint64_t v = field_u64(st, ef->off);
            rc = sample(b, ef->name, l, 2, ef->seconds ? v / NS_PER_S : v);
        }
    }
    if (rc == 0 && (rc = family(b, "dlotel_exporter_dropped_items_total", "counter",
                                "Items given up on, by reason: permanent (refused for good), "
                                "expired (retry.max_elapsed_time), disk_cap (deleted unsent at "
                                "disk_queue.max_bytes, or corrupt), shutdown (only in memory at "
                                "stop), retry_disabled.")) == 0) {
        for (size_t i = 0; i < s->n_exporters && rc == 0; i++) {
            const struct pipeline_stats *st = &s->exporters[i];
            uint64_t known = st->failed_items + st->dropped_expired_items + st->dropped_cap_items +
                             st->dropped_shutdown_items;
            const struct {
                const char *reason;
                uint64_t v;
            } parts[] = {
                {"permanent", st->failed_items},
                {"expired", st->dropped_expired_items},
                {"disk_cap", st->dropped_cap_items},
                {"shutdown", st->dropped_shutdown_items},
                {"retry_disabled", st->dropped_items > known ? st->dropped_items - known : 0},
            };
            for (size_t k = 0; k < sizeof(parts) / sizeof(parts[0]) && rc == 0; k++) {
                struct label l[] = {{"exporter", st->exporter},
                                    {"signal", otlp_signal_name(st->signal)},
                                    {"reason", parts[k].reason}};
                rc = sample(b, "dlotel_exporter_dropped_items_total", l, 3, parts[k].v);
            }
        }
    }
    if (rc == 0 && (rc = family(b, "dlotel_exporter_upstream_reachable", "gauge",
                                "1 when the last attempt succeeded (or none was made), 0 when it "
                                "failed.")) == 0) {
        for (size_t i = 0; i < s->n_exporters && rc == 0; i++) {
            const struct pipeline_stats *st = &s->exporters[i];
            struct label l[] = {{"exporter", st->exporter},
                                {"signal", otlp_signal_name(st->signal)}};
            rc = sample(b, "dlotel_exporter_upstream_reachable", l, 2,
                        last_attempt_failed(st) ? 0 : 1);
        }
    }
    return rc;
}

/* ---- /healthz JSON --------------------------------------------------------------------------- */

static json_t *unix_or_null(uint64_t ns)
{
    return ns == 0 ? json_null() : json_integer((json_int_t)(ns / NS_PER_S));
}

static json_t *receiver_json(const struct receiver_stats *r)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "port", json_integer(r->port));
    json_object_set_new(o, "in_flight", json_integer((json_int_t)r->in_flight));
    for (int sig = 0; sig <= RECEIVER_SIGNAL_UNKNOWN; sig++) {
        uint64_t refused_req = 0, refused_items = 0;
        json_t *reasons = json_object();
        for (int oc = RECEIVER_REFUSED_INVALID; oc < RECEIVER_OUTCOME_COUNT; oc++) {
            refused_req += r->requests[sig][oc];
            refused_items += r->items[sig][oc];
            if (r->requests[sig][oc] > 0) {
                json_object_set_new(reasons, receiver_outcome_name((enum receiver_outcome)oc),
                                    json_integer((json_int_t)r->requests[sig][oc]));
            }
        }
        if (sig == RECEIVER_SIGNAL_UNKNOWN && refused_req == 0) {
            json_decref(reasons);
            continue;
        }
        json_t *so = json_pack("{s:I,s:I,s:I,s:I,s:o}", "accepted_requests",
                               (json_int_t)r->requests[sig][RECEIVER_ACCEPTED], "accepted_items",
                               (json_int_t)r->items[sig][RECEIVER_ACCEPTED], "refused_requests",
                               (json_int_t)refused_req, "refused_items", (json_int_t)refused_items,
                               "refused_by_reason", reasons);
        json_object_set_new(o, signal_label(sig), so);
    }
    return o;
}

static json_t *exporter_signal_json(const struct pipeline_stats *st)
{
    bool failed = last_attempt_failed(st);
    json_t *reach;
    if (st->last_error_unix_nano == 0 && st->last_success_unix_nano == 0) {
        reach = json_null(); /* Nothing was tried yet. */
    } else {
        reach = json_boolean(!failed);
    }
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:o,s:o,s:o}", "sent",
        (json_int_t)st->sent_items, "sent_batches", (json_int_t)st->sent_batches, "failed",
        (json_int_t)st->failed_items, "dropped", (json_int_t)st->dropped_items, "rejected",
        (json_int_t)st->rejected_items, "retried_batches", (json_int_t)st->retried_batches,
        "queue_items", (json_int_t)st->queue_items, "queue_bytes", (json_int_t)st->queue_bytes,
        "disk_items", (json_int_t)st->disk_items, "disk_bytes", (json_int_t)st->disk_bytes,
        "in_flight", (json_int_t)st->in_flight_batches, "last_error", st->last_error,
        "last_error_unix", unix_or_null(st->last_error_unix_nano), "last_success_unix",
        unix_or_null(st->last_success_unix_nano), "upstream_reachable", reach);
}

int admin_render_health(const struct admin_snapshot *s, struct buf *out, bool *degraded)
{
    bool bad = false;
    json_t *receivers = json_object();
    json_t *exporters = json_object();
    json_t *root = NULL;
    int rc = DLOTEL_ERR_NOMEM;
    if (receivers == NULL || exporters == NULL) {
        goto done;
    }
    for (size_t i = 0; i < s->n_receivers; i++) {
        json_t *r = receiver_json(&s->receivers[i]);
        if (r == NULL || json_object_set_new(receivers, s->receivers[i].name, r) != 0) {
            goto done;
        }
    }
    for (size_t i = 0; i < s->n_exporters; i++) {
        const struct pipeline_stats *st = &s->exporters[i];
        json_t *e = json_object_get(exporters, st->exporter);
        if (e == NULL) {
            e = json_pack("{s:s,s:s}", "kind", st->kind, "queue",
                          !st->queued ? "none"
                          : st->disk  ? "disk"
                                      : "memory");
            if (e == NULL || json_object_set_new(exporters, st->exporter, e) != 0) {
                goto done;
            }
        }
        json_t *sj = exporter_signal_json(st);
        if (sj == NULL || json_object_set_new(e, otlp_signal_name(st->signal), sj) != 0) {
            goto done;
        }
        bad = bad || last_attempt_failed(st);
    }
    root =
        json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:O,s:O}", "status", bad ? "degraded" : "ok", "state",
                  s->state, "version", s->version, "pid", (json_int_t)getpid(), "uptime_s",
                  (json_int_t)s->uptime_s, "memory_bytes", (json_int_t)s->totals.memory_bytes,
                  "receivers", receivers, "exporters", exporters);
    if (root == NULL) {
        goto done;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    if (text == NULL) {
        goto done;
    }
    rc = buf_append(out, text, strlen(text));
    if (rc == 0) {
        rc = buf_putc(out, '\n');
    }
    free(text);
    *degraded = bad;
done:
    json_decref(root);
    json_decref(receivers);
    json_decref(exporters);
    return rc;
}

/* ---- the server ------------------------------------------------------------------------------ */

struct admin {
    struct http_server *server;
    admin_collect_fn collect;
    void *userdata;
};

static void respond_text(struct http_stream *s, int status, const char *ctype, const uint8_t *body,
                         size_t len, bool allow)
{
    struct http_header h[3];
    size_t n = 0;
    h[n++] = (struct http_header){"content-type", ctype};
    h[n++] = (struct http_header){"cache-control", "no-store"};
    if (allow) {
        h[n++] = (struct http_header){"allow", "GET"};
    }
    struct http_response resp = {
        .status = status, .headers = h, .n_headers = n, .body = body, .body_len = len};
    http_respond(s, &resp);
}

static void on_request(void *userdata, struct http_stream *s, const struct http_request *req)
{
    struct admin *a = userdata;
    size_t plen = strcspn(req->path, "?");
    bool metrics = plen == 8 && memcmp(req->path, "/metrics", 8) == 0;
    bool health = plen == 8 && memcmp(req->path, "/healthz", 8) == 0;
    static const char plain[] = "text/plain; charset=utf-8";
    if (!metrics && !health) {
        static const char msg[] = "not found: the admin endpoint serves /metrics and /healthz\n";
        respond_text(s, 404, plain, (const uint8_t *)msg, sizeof(msg) - 1, false);
        return;
    }
    if (strcmp(req->method, "GET") != 0) {
        static const char msg[] = "method not allowed: use GET\n";
        respond_text(s, 405, plain, (const uint8_t *)msg, sizeof(msg) - 1, true);
        return;
    }
    struct admin_snapshot snap;
    memset(&snap, 0, sizeof(snap));
    struct buf body;
    buf_init(&body, ADMIN_MAX_RESPONSE);
    int rc = a->collect(a->userdata, &snap);
    bool degraded = false;
    if (rc == 0) {
        rc = metrics ? admin_render_metrics(&snap, &body)
                     : admin_render_health(&snap, &body, &degraded);
    }
    admin_snapshot_cleanup(&snap);
    if (rc != 0) {
        static const char msg[] = "cannot build the response\n";
        log_warn("admin", "%s: cannot build the response: %s", metrics ? "/metrics" : "/healthz",
                 dlotel_strerror(rc));
        respond_text(s, 500, plain, (const uint8_t *)msg, sizeof(msg) - 1, false);
    } else if (metrics) {
        respond_text(s, 200, "text/plain; version=0.0.4; charset=utf-8", body.data, body.len,
                     false);
    } else {
        /* Degraded is still up: 200, so that a liveness probe does not restart a queueing
         * agent; the status field says it. */
        respond_text(s, 200, "application/json", body.data, body.len, false);
    }
    buf_cleanup(&body);
}

int admin_new(struct admin **out, uv_loop_t *loop, const char *host, uint16_t port,
              admin_collect_fn collect, void *userdata)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    a->collect = collect;
    a->userdata = userdata;
    struct http_listen_options o = {
        .name = "admin",
        .host = host,
        .port = port,
        .http1 = true,
        .http2 = true,
        .max_body = 64 * 1024,
        .max_connections = 64,
        .handler = on_request,
        .userdata = a,
    };
    int rc = http_server_new(&a->server, loop, &o);
    if (rc != 0) {
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

uint16_t admin_port(const struct admin *a)
{
    return http_server_port(a->server);
}

void admin_free(struct admin *a)
{
    if (a == NULL) {
        return;
    }
    http_server_free(a->server);
    free(a);
}
