/*
 * `dlotel agent`: the forwarding daemon, in the foreground.
 *
 * Start-up builds everything from the finalized configuration before the first byte is accepted:
 * the log, the pipeline (batch.*, queue.*), every exporter by type with its queue options and
 * routing, the two receivers, the admin endpoint, the signal handlers; then it writes the ready
 * file. A failure at any step undoes the ones before and exits 1 (2 for a configuration problem).
 *
 * Stopping (SIGTERM or SIGINT) is a drain, in this order:
 *   1. the requests the pipeline has taken but not answered yet (they wait for the disk queue's
 *      group fdatasync, one loop turn) are answered; then the receivers stop accepting and
 *      close their listeners and connections;
 *   2. pipeline_drain(shutdown_timeout): batches keep going out until the queues are empty or
 *      the time is up; what is left on disk stays there for the next start;
 *   3. the admin endpoint and the signal handlers close, and pipeline_free() destroys the
 *      exporters, which answer what they still hold (exporter.h);
 *   4. the loop runs until every handle is closed, and uv_loop_close() must then succeed.
 * A second SIGTERM or SIGINT while draining exits at once (with 1): the disk queues already
 * hold everything acknowledged.
 *
 * SIGUSR1 flushes: partial batches go out now instead of after batch.timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cli/admin.h"
#include "cli/cli.h"
#include "cli/logsink.h"
#include "core/buf.h"
#include "core/compress.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "api/api.h"
#include "exporter/exporter.h"
#include "launcher/control.h"
#include "pipeline/pipeline.h"
#include "processor/processor.h"
#include "receiver/receiver.h"
#include "sink/sink_module.h"

#define NS_PER_S 1000000000ull

/* How long a stop waits for requests the pipeline has not answered yet (normally one turn). */
#define RECEIVER_STOP_WAIT_MS 2000

enum agent_state {
    AGENT_RUNNING,
    AGENT_DRAINING,
    AGENT_STOPPED,
};

struct agent {
    const struct config *cfg;
    uv_loop_t loop;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_usr1;
    bool signals_open;
    uv_prepare_t stop_prepare; /* Waits for the receivers' answers before they close... */
    uv_timer_t stop_timer;     /* ...but not longer than RECEIVER_STOP_WAIT_MS. */
    bool stop_handles_open;
    bool draining_started;
    struct pipeline *pipeline;
    struct processor_chain *chains[OTLP_SIGNAL_COUNT]; /* processors_*; NULL: the fast path. */
    /* Receivers, and their counters kept past receiver_free() for /metrics while draining. */
    struct receiver *receivers[2];
    struct receiver_stats receiver_final[2];
    bool receiver_gone[2];
    struct admin *admin;
    /* The query API (DESIGN.md section 6) over the sink exporter, when there is one. */
    struct exporter *sink_exporter; /* Owned by the pipeline. */
    struct api_server *api;
    enum agent_state state;
    uint64_t start_mono_ns;
    uint64_t start_unix_ns;
    int lock_fds[CONFIG_MAX_EXPORTERS]; /* flock()ed disk queue directories; -1: none. */
    /* Started by libdlotel (--runtime-dir): the control socket, and the daemon lock until the
     * control server owns it. */
    struct control_server *control;
    int daemon_lock_fd;
    /* The launcher's ready descriptor until the ready line is written (then -1), and why
     * start-up failed, for that line: a code and one sentence. */
    int ready_fd;
    int fail_code;
    char fail_msg[CONTROL_ERROR_MAX];
};

/* Remembers the first start-up failure for the ready line (the log has it too). */
static void start_failed(struct agent *a, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void start_failed(struct agent *a, int code, const char *fmt, ...)
{
    if (a->fail_code != 0) {
        return;
    }
    a->fail_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->fail_msg, sizeof(a->fail_msg), fmt, ap);
    va_end(ap);
}

/* ---- small helpers --------------------------------------------------------------------------- */

/*
 * |url| for a log line: scheme://host[:port]/path, without "user:password@" and without the
 * query or fragment, which may carry credentials. Writes into |out|.
 */
static void redact_url(const char *url, char *out, size_t outlen)
{
    const char *auth = strstr(url, "://");
    size_t scheme_len = auth != NULL ? (size_t)(auth + 3 - url) : 0;
    const char *rest = auth != NULL ? auth + 3 : url;
    size_t alen = strcspn(rest, "/?#");
    const char *at = NULL;
    for (const char *c = rest; c < rest + alen; c++) {
        if (*c == '@') {
            at = c;
        }
    }
    const char *host = at != NULL ? at + 1 : rest;
    size_t path_len = strcspn(rest + alen, "?#");
    snprintf(out, outlen, "%.*s%.*s%.*s", (int)scheme_len, url, (int)(rest + alen - host), host,
             (int)path_len, rest + alen);
}

static const char *const type_names[] = {"otlp_http", "otlp_grpc", "debug", "file", "sink"};

static const char *type_name(enum config_exporter_type t)
{
    return (unsigned)t < sizeof(type_names) / sizeof(type_names[0]) ? type_names[t] : "?";
}

/* The otlp_signal for bit |s| of enum config_signal. */
static const unsigned signal_bits[OTLP_SIGNAL_COUNT] = {
    [OTLP_TRACES] = CONFIG_SIGNAL_TRACES,
    [OTLP_METRICS] = CONFIG_SIGNAL_METRICS,
    [OTLP_LOGS] = CONFIG_SIGNAL_LOGS,
};

/*
 * Takes <dir>/lock with flock() so that two agents never share one disk queue (they would both
 * append to and commit the same segments). The lock goes with the process, also on SIGKILL.
 * Returns the descriptor, or -1 after logging why.
 */
static int lock_queue_dir(const char *dir, const char *exporter)
{
    if (cli_mkdir_p(dir) != 0) {
        log_error("agent", "exporter %s: cannot create the disk queue directory %s: %s", exporter,
                  dir, strerror(errno));
        return -1;
    }
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/lock", dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        log_error("agent", "exporter %s: disk queue path too long", exporter);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("agent", "exporter %s: cannot open %s: %s", exporter, path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;
        char owner[32] = "";
        ssize_t r = pread(fd, owner, sizeof(owner) - 1, 0);
        owner[r > 0 ? r : 0] = '\0';
        owner[strcspn(owner, "\n")] = '\0';
        if (saved == EWOULDBLOCK) {
            log_error("agent",
                      "exporter %s: the disk queue %s is in use by another dlotel agent%s%s%s; "
                      "stop it, or give this one another state_dir or disk_queue.path",
                      exporter, dir, owner[0] != '\0' ? " (pid " : "", owner,
                      owner[0] != '\0' ? ")" : "");
        } else {
            log_error("agent", "exporter %s: cannot lock %s: %s", exporter, path, strerror(saved));
        }
        close(fd);
        return -1;
    }
    char pid[32];
    int pl = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)pl, 0) < 0) {
        /* Only informative. */
    }
    return fd;
}

/* ---- exporters ------------------------------------------------------------------------------- */

static enum codec codec_of(enum config_compression c)
{
    switch (c) {
    case CONFIG_COMPRESSION_GZIP:
        return CODEC_GZIP;
    case CONFIG_COMPRESSION_ZSTD:
        return CODEC_ZSTD;
    default:
        return CODEC_NONE;
    }
}

/*
 * Creates the exporter |ce| describes. Returns 0, EXIT_USAGE (the configuration asks for what
 * cannot be built) or EXIT_RUNTIME, after logging why.
 */
static int exporter_build(struct agent *a, const struct config_exporter *ce, struct exporter **out)
{
    int rc;
    switch (ce->type) {
    case CONFIG_EXPORTER_DEBUG:
        rc = exporter_debug_new(out, ce->verbosity == CONFIG_VERBOSITY_DETAILED ? DEBUG_DETAILED
                                                                                : DEBUG_SUMMARY);
        break;
    case CONFIG_EXPORTER_FILE:
        rc = exporter_file_new(out, ce->path);
        if (rc == DLOTEL_ERR_IO) {
            log_error("agent", "exporter %s: cannot open %s: %s", ce->name, ce->path,
                      strerror(errno));
            return EXIT_RUNTIME;
        }
        break;
    case CONFIG_EXPORTER_OTLP_HTTP:
    case CONFIG_EXPORTER_OTLP_GRPC: {
        struct otlp_exporter_header *hs = NULL;
        if (ce->headers.n > 0) {
            hs = calloc(ce->headers.n, sizeof(*hs));
            if (hs == NULL) {
                rc = DLOTEL_ERR_NOMEM;
                break;
            }
            for (size_t i = 0; i < ce->headers.n; i++) {
                hs[i] = (struct otlp_exporter_header){ce->headers.items[i].key,
                                                      ce->headers.items[i].value};
            }
        }
        struct otlp_exporter_options o = {
            .name = ce->name,
            .endpoint = ce->endpoint,
            .headers = hs,
            .n_headers = ce->headers.n,
            .compression = codec_of(ce->compression),
            .request_timeout_ns = ce->request_timeout_ns,
            .ca_file = ce->tls.ca_file,
            .cert_file = ce->tls.cert_file,
            .key_file = ce->tls.key_file,
            .insecure_skip_verify = ce->tls.insecure_skip_verify,
        };
        rc = ce->type == CONFIG_EXPORTER_OTLP_HTTP ? exporter_otlp_http_new(out, &a->loop, &o)
                                                   : exporter_otlp_grpc_new(out, &a->loop, &o);
        free(hs);
        if (rc == DLOTEL_ERR_INVALID_ARG) {
            /* The exporter logged which option (never a header value). */
            log_error("agent", "exporter %s: invalid options", ce->name);
            return EXIT_USAGE;
        }
        break;
    }
    case CONFIG_EXPORTER_SINK: {
        /*
         * The DuckDB sink: libdlotel_sink.so is loaded here, and only here, so an agent that
         * only forwards never maps libduckdb. The client's 200 waits for the commit
         * (export_async, awaited by the pipeline).
         */
        struct sink_options so;
        sink_options_init(&so);
        so.data_dir = a->cfg->sink.data_dir;
        so.max_rows_per_file = (uint64_t)a->cfg->sink.max_rows_per_file;
        so.retention_days = (uint32_t)a->cfg->sink.retention_days;
        so.flush_interval_ms = a->cfg->sink.flush_interval_ns / 1000000u;
        so.maintenance_interval_ms = a->cfg->sink.maintenance_interval_ns / 1000000u;
        so.disk_cap_bytes = a->cfg->sink.disk_cap_bytes;
        so.gc_grace_ms = a->cfg->sink.gc_grace_ns / 1000000u;
        so.queue_max_bytes = a->cfg->sink.queue_max_bytes;
        so.memory_limit_bytes = a->cfg->sink.memory_limit_bytes;
        so.threads = (uint32_t)a->cfg->sink.threads;
        char detail[512];
        rc = exporter_sink_new(out, &a->loop, &so, NULL, detail, sizeof(detail));
        if (rc == 0 && a->sink_exporter == NULL) {
            a->sink_exporter = *out;
        }
        if (rc != 0 && rc != DLOTEL_ERR_NOMEM) {
            log_error("agent", "exporter %s: cannot open the sink in %s: %s", ce->name,
                      so.data_dir != NULL ? so.data_dir : "(no sink.data_dir)", detail);
            return EXIT_RUNTIME;
        }
        if (rc == 0) {
            log_info("agent",
                     "exporter %s: sink in %s (%" PRId64 " rows per Parquet file, %" PRId64
                     " days kept)",
                     ce->name, so.data_dir, a->cfg->sink.max_rows_per_file,
                     a->cfg->sink.retention_days);
        }
        break;
    }
    default:
        log_error("agent", "exporter %s: unknown type", ce->name);
        return EXIT_USAGE;
    }
    if (rc != 0) {
        log_error("agent", "exporter %s: cannot create it: %s", ce->name, dlotel_strerror(rc));
        return EXIT_RUNTIME;
    }
    return 0;
}

static void queue_options(const struct config_exporter *ce, struct pipeline_exporter_options *o)
{
    pipeline_exporter_options_init(o);
    o->name = ce->name;
    if (ce->type != CONFIG_EXPORTER_OTLP_HTTP && ce->type != CONFIG_EXPORTER_OTLP_GRPC) {
        return; /* Synchronous: only the name matters. */
    }
    o->memory_queue_max_bytes = ce->memory_queue_max_bytes;
    o->retry.enabled = ce->retry.enabled;
    o->retry.initial_interval_ns = ce->retry.initial_interval_ns;
    o->retry.max_interval_ns = ce->retry.max_interval_ns;
    o->retry.max_elapsed_time_ns = ce->retry.max_elapsed_time_ns;
    o->disk_queue.enabled = ce->disk_queue.enabled;
    o->disk_queue.path = ce->disk_queue.path;
    o->disk_queue.max_bytes = ce->disk_queue.max_bytes;
    /* The two enums share their order (pipeline.h). */
    o->disk_queue.fsync = (enum pipeline_fsync)ce->disk_queue.fsync;
}

/* Builds every exporter and attaches it to its signals. Returns 0 or an exit code. */
static int exporters_start(struct agent *a)
{
    const struct config *cfg = a->cfg;
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        const struct config_exporter *ce = &cfg->exporters[i];
        unsigned sigs = config_exporter_signals(cfg, ce);
        if (sigs == 0) {
            log_warn("agent",
                     "exporter %s receives no signal (see exporters_traces, "
                     "exporters_metrics, exporters_logs): not started",
                     ce->name);
            continue;
        }
        bool upstream =
            ce->type == CONFIG_EXPORTER_OTLP_HTTP || ce->type == CONFIG_EXPORTER_OTLP_GRPC;
        if (upstream && ce->disk_queue.enabled) {
            a->lock_fds[i] = lock_queue_dir(ce->disk_queue.path, ce->name);
            if (a->lock_fds[i] < 0) {
                return EXIT_RUNTIME;
            }
        }
        struct exporter *e;
        int rc = exporter_build(a, ce, &e);
        if (rc != 0) {
            return rc;
        }
        struct pipeline_exporter_options o;
        queue_options(ce, &o);
        bool attached = false;
        char signals[64] = "";
        size_t sl = 0;
        for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
            if ((sigs & signal_bits[s]) == 0) {
                continue;
            }
            rc = pipeline_add_exporter_opts(a->pipeline, (enum otlp_signal)s, e, &o);
            if (rc != 0) {
                if (!attached) {
                    e->ops->destroy(e); /* No reference was taken. */
                }
                log_error("agent", "exporter %s: cannot attach it to %s: %s", ce->name,
                          otlp_signal_name((enum otlp_signal)s),
                          rc == DLOTEL_ERR_IO ? "the disk queue cannot be opened (see above)"
                                              : dlotel_strerror(rc));
                return EXIT_RUNTIME;
            }
            attached = true;
            int w = snprintf(signals + sl, sizeof(signals) - sl, "%s%s", sl > 0 ? ", " : "",
                             otlp_signal_name((enum otlp_signal)s));
            if (w > 0 && (size_t)w < sizeof(signals) - sl) {
                sl += (size_t)w;
            }
        }
        if (upstream) {
            char where[512];
            redact_url(ce->endpoint, where, sizeof(where));
            char headers[256] = "";
            size_t hl = 0;
            for (size_t k = 0; k < ce->headers.n; k++) {
                /* Names only: values are often credentials. */
                int w = snprintf(headers + hl, sizeof(headers) - hl, "%s%s", k > 0 ? ", " : "",
                                 ce->headers.items[k].key);
                if (w > 0 && (size_t)w < sizeof(headers) - hl) {
                    hl += (size_t)w;
                }
            }
            log_info(
                "agent", "exporter %s: %s to %s (%s), %s, headers [%s], %s queue%s%s", ce->name,
                type_name(ce->type), where, signals, codec_name(codec_of(ce->compression)), headers,
                ce->disk_queue.enabled ? "disk" : "memory", ce->disk_queue.enabled ? " in " : "",
                ce->disk_queue.enabled ? ce->disk_queue.path : "");
        } else {
            log_info("agent", "exporter %s: %s%s%s (%s)", ce->name, type_name(ce->type),
                     ce->type == CONFIG_EXPORTER_FILE ? " to " : "",
                     ce->type == CONFIG_EXPORTER_FILE ? ce->path : "", signals);
        }
    }
    return 0;
}

/* ---- the admin snapshot ---------------------------------------------------------------------- */

static int collect(void *userdata, struct admin_snapshot *s)
{
    struct agent *a = userdata;
    s->version = DLOTEL_VERSION;
    s->state = a->state == AGENT_RUNNING ? "running" : "draining";
    s->uptime_s = (time_monotonic_nano() - a->start_mono_ns) / NS_PER_S;
    s->start_unix = a->start_unix_ns / NS_PER_S;
    s->rss_bytes = admin_rss_bytes();
    for (size_t i = 0; i < 2 && s->n_receivers < ADMIN_MAX_RECEIVERS; i++) {
        if (a->receivers[i] != NULL) {
            receiver_get_stats(a->receivers[i], &s->receivers[s->n_receivers++]);
        } else if (a->receiver_gone[i]) {
            s->receivers[s->n_receivers++] = a->receiver_final[i];
        }
    }
    if (a->pipeline == NULL) {
        return 0;
    }
    pipeline_get_totals(a->pipeline, &s->totals);
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        if (a->chains[i] != NULL) {
            s->has_processors[i] = true;
            processor_chain_get_stats(a->chains[i], &s->processors[i]);
        }
    }
    size_t n = pipeline_get_stats(a->pipeline, NULL, 0);
    if (n == 0) {
        return 0;
    }
    s->exporters = calloc(n, sizeof(*s->exporters));
    if (s->exporters == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    s->n_exporters = pipeline_get_stats(a->pipeline, s->exporters, n);
    if (s->n_exporters > n) {
        s->n_exporters = n;
    }
    return 0;
}

/* ---- stopping -------------------------------------------------------------------------------- */

/* Names as config_table.c spells them (enum config_jwt_algorithm order). */
static const char *jwt_algorithm_name(enum config_jwt_algorithm alg)
{
    static const char *const names[] = {"HS256", "HS384", "HS512", "RS256"};
    return (size_t)alg < sizeof(names) / sizeof(names[0]) ? names[alg] : "HS256";
}

/* The API goes with the receivers: it ingests too, and it must not outlive the sink exporter. */
static void api_stop(struct agent *a)
{
    api_server_free(a->api);
    a->api = NULL;
}

static void receivers_stop(struct agent *a)
{
    for (size_t i = 0; i < 2; i++) {
        if (a->receivers[i] != NULL) {
            receiver_get_stats(a->receivers[i], &a->receiver_final[i]);
            a->receiver_final[i].port = 0;
            a->receiver_gone[i] = true;
            receiver_free(a->receivers[i]);
            a->receivers[i] = NULL;
        }
    }
}

static void stop_handles_close(struct agent *a)
{
    if (a->stop_handles_open) {
        a->stop_handles_open = false;
        uv_close((uv_handle_t *)&a->stop_prepare, NULL);
        uv_close((uv_handle_t *)&a->stop_timer, NULL);
    }
}

static void signals_close(struct agent *a)
{
    if (a->signals_open) {
        a->signals_open = false;
        uv_close((uv_handle_t *)&a->sig_term, NULL);
        uv_close((uv_handle_t *)&a->sig_int, NULL);
        uv_close((uv_handle_t *)&a->sig_usr1, NULL);
    }
}

/* The last step: everything still open closes; uv_run() returns once libuv has closed it. */
static void agent_teardown(struct agent *a)
{
    a->state = AGENT_STOPPED;
    stop_handles_close(a);
    receivers_stop(a);
    api_stop(a);
    admin_free(a->admin);
    a->admin = NULL;
    signals_close(a);
    /* After the drain: processes attached until now saw the daemon answer to the end. Freeing
     * the server removes the socket file, then releases the daemon lock. */
    control_server_free(a->control);
    a->control = NULL;
    if (a->daemon_lock_fd >= 0) {
        close(a->daemon_lock_fd);
        a->daemon_lock_fd = -1;
    }
    pipeline_free(a->pipeline);
    a->pipeline = NULL;
}

static void on_drained(void *userdata, int status)
{
    struct agent *a = userdata;
    if (status == 0) {
        log_info("agent", "drained: every queue is empty");
    } else {
        log_warn("agent",
                 "shutdown_timeout (%" PRIu64 " ms) passed before the queues were empty: what is "
                 "in the disk queues is sent after the next start",
                 a->cfg->shutdown_timeout_ns / 1000000);
    }
    agent_teardown(a);
}

static bool receivers_busy(const struct agent *a)
{
    for (size_t i = 0; i < 2; i++) {
        if (a->receivers[i] != NULL) {
            struct receiver_stats st;
            receiver_get_stats(a->receivers[i], &st);
            if (st.in_flight > 0) {
                return true;
            }
        }
    }
    return false;
}

/* Step 2 of a stop: close the receivers and drain the pipeline. */
static void start_drain(struct agent *a)
{
    if (a->draining_started) {
        return;
    }
    a->draining_started = true;
    stop_handles_close(a);
    receivers_stop(a);
    api_stop(a);
    if (pipeline_drain(a->pipeline, a->cfg->shutdown_timeout_ns, on_drained, a) != 0) {
        agent_teardown(a);
    }
}

static void on_stop_prepare(uv_prepare_t *h)
{
    struct agent *a = h->data;
    if (!receivers_busy(a)) {
        start_drain(a);
    }
}

static void on_stop_timer(uv_timer_t *t)
{
    struct agent *a = t->data;
    log_warn("agent", "requests still unanswered after %d ms: closing their connections",
             RECEIVER_STOP_WAIT_MS);
    start_drain(a);
}

/* Starts the drain (see the top of this file); |name| says why, for the log. */
static void agent_begin_stop(struct agent *a, const char *name)
{
    a->state = AGENT_DRAINING;
    log_info("agent", "%s: no longer accepting; draining for at most %" PRIu64 " ms", name,
             a->cfg->shutdown_timeout_ns / 1000000);
    /*
     * Requests read in this loop turn may wait for the group fdatasync, which runs with the
     * timers of the next turn: close the receivers from the prepare phase after it, once every
     * request has its answer, so that no client loses an answer it was about to get.
     */
    uv_prepare_start(&a->stop_prepare, on_stop_prepare);
    uv_timer_start(&a->stop_timer, on_stop_timer, RECEIVER_STOP_WAIT_MS, 0);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct agent *a = h->data;
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (a->state != AGENT_RUNNING) {
        log_warn("agent",
                 "second %s while draining: exiting now; the disk queues keep what they "
                 "hold for the next start",
                 name);
        cli_log_close();
        _exit(EXIT_RUNTIME);
    }
    char why[32];
    snprintf(why, sizeof(why), "%s received", name);
    agent_begin_stop(a, why);
}

/* The control server asks to stop (a `stop` request, or its last user gone). The drain starts in
 * a later loop phase, so the server is never freed from inside its own callback. */
static void on_control_stop(void *userdata, const char *reason)
{
    struct agent *a = userdata;
    if (a->state == AGENT_RUNNING) {
        agent_begin_stop(a, reason);
    }
}

static void on_flush_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    struct agent *a = h->data;
    if (a->pipeline != NULL) {
        log_info("agent", "SIGUSR1 received: flushing partial batches");
        pipeline_flush(a->pipeline);
    }
}

/* ---- start-up -------------------------------------------------------------------------------- */

/*
 * Writes the ready file atomically: a reader that sees PATH sees all of it. Returns 0 or -1 with
 * errno set.
 */
static int write_ready_file(const char *path, uint16_t grpc_port, uint16_t http_port,
                            uint16_t admin_port, uint16_t api_port)
{
    char tmp[4096];
    int w = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (w < 0 || (size_t)w >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char json[200];
    char api[32] = "";
    if (api_port != 0) {
        snprintf(api, sizeof(api), ",\"api_port\":%u", (unsigned)api_port);
    }
    int n = snprintf(
        json, sizeof(json), "{\"pid\":%ld,\"grpc_port\":%u,\"http_port\":%u,\"admin_port\":%u%s}\n",
        (long)getpid(), (unsigned)grpc_port, (unsigned)http_port, (unsigned)admin_port, api);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    ssize_t done = write(fd, json, (size_t)n);
    int saved = errno;
    if (close(fd) != 0 && done == n) {
        saved = errno;
        done = -1;
    }
    if (done != n) {
        unlink(tmp);
        errno = done < 0 ? saved : ENOSPC;
        return -1;
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

/* Says on the log (and to the launcher) which address could not be bound and why. */
static void log_listen_error(struct agent *a, const char *what, const struct cli_endpoint *ep,
                             int rc)
{
    char where[CLI_HOST_MAX + 16];
    cli_endpoint_format(where, sizeof(where), ep->host, ep->port);
    const char *why = rc == DLOTEL_ERR_INVALID_ARG   ? "cannot resolve the host"
                      : rc == DLOTEL_ERR_ADDR_IN_USE ? "the address is in use (another agent?)"
                                                     : dlotel_strerror(rc);
    log_error("agent", "cannot listen on %s (%s): %s", where, what, why);
    if (rc == DLOTEL_ERR_ADDR_IN_USE) {
        start_failed(a, rc,
                     "port %u (%s, %s) is in use by another program; free it, or set %s to "
                     "another address",
                     (unsigned)ep->port, where, what,
                     strcmp(what, "otlp_grpc") == 0   ? "receivers.grpc_endpoint"
                     : strcmp(what, "otlp_http") == 0 ? "receivers.http_endpoint"
                                                      : "admin.endpoint");
    } else {
        start_failed(a, rc, "cannot listen on %s (%s): %s", where, what, why);
    }
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static int parse_endpoint(const char *key, const char *text, struct cli_endpoint *ep)
{
    const char *why = "";
    if (text == NULL || cli_endpoint_parse(text, ep, &why) != 0) {
        log_error("agent", "%s: invalid endpoint '%s': %s", key, text != NULL ? text : "", why);
        return -1;
    }
    return 0;
}

static int agent_run(struct agent *a, const struct cli_args *args)
{
    const struct config *cfg = a->cfg;
    int rc0;
    struct cli_endpoint grpc_ep, http_ep, admin_ep;
    if (parse_endpoint("receivers.grpc_endpoint", cfg->receivers.grpc_endpoint, &grpc_ep) != 0 ||
        parse_endpoint("receivers.http_endpoint", cfg->receivers.http_endpoint, &http_ep) != 0 ||
        parse_endpoint("admin.endpoint", cfg->admin.endpoint, &admin_ep) != 0) {
        start_failed(a, DLOTEL_ERR_CONFIG, "invalid listen address (see the log)");
        return EXIT_USAGE;
    }
    if (args->runtime_dir != NULL) {
        /* One daemon per runtime directory: taken before any port or disk queue, so that a
         * second daemon says so plainly instead of failing on a port. */
        char why[512];
        rc0 = control_lock_acquire(args->runtime_dir, &a->daemon_lock_fd, why, sizeof(why));
        if (rc0 != 0) {
            log_error("agent", "%s", why);
            start_failed(a, rc0, "%s", why);
            return EXIT_RUNTIME;
        }
    }

    struct pipeline_options po;
    pipeline_options_init(&po);
    po.batch_max_items = cfg->batch.max_size > 0 ? (uint64_t)cfg->batch.max_size : 0;
    po.batch_max_bytes = cfg->batch.max_bytes;
    po.batch_timeout_ns = cfg->batch.timeout_ns;
    po.memory_max_bytes = cfg->queue.memory_max_bytes;
    po.retry_after_ns = cfg->queue.retry_after_ns;
    int rc = pipeline_new_on_loop(&a->pipeline, &a->loop, &po);
    if (rc != 0) {
        log_error("agent", "cannot create the pipeline: %s", dlotel_strerror(rc));
        return EXIT_RUNTIME;
    }
    rc = exporters_start(a);
    if (rc != 0) {
        return rc;
    }
    char pwhy[600];
    rc = processor_chains_attach(a->pipeline, cfg, a->chains, pwhy, sizeof(pwhy));
    if (rc != 0) {
        log_error("agent", "%s", pwhy);
        start_failed(a, DLOTEL_ERR_CONFIG, "%s", pwhy);
        return rc == DLOTEL_ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
    }

    struct receiver_options grpc_o = {
        .max_request_bytes = cfg->receivers.grpc_max_message_size,
        .max_connections = (uint32_t)cfg->receivers.max_connections,
        .request_timeout_ms = (uint32_t)(cfg->receivers.request_timeout_ns / 1000000),
    };
    struct receiver_options http_o = grpc_o;
    http_o.max_request_bytes = cfg->receivers.http_max_body_size;
    rc = receiver_otlp_grpc_new_opts(&a->receivers[0], &a->loop, grpc_ep.host, grpc_ep.port,
                                     a->pipeline, &grpc_o);
    if (rc != 0) {
        log_listen_error(a, "otlp_grpc", &grpc_ep, rc);
        return EXIT_RUNTIME;
    }
    rc = receiver_otlp_http_new_opts(&a->receivers[1], &a->loop, http_ep.host, http_ep.port,
                                     a->pipeline, &http_o);
    if (rc != 0) {
        log_listen_error(a, "otlp_http", &http_ep, rc);
        return EXIT_RUNTIME;
    }
    rc = admin_new(&a->admin, &a->loop, admin_ep.host, admin_ep.port, collect, a);
    if (rc != 0) {
        log_listen_error(a, "admin", &admin_ep, rc);
        return EXIT_RUNTIME;
    }
    if (a->sink_exporter != NULL) {
        struct api_options ao = {
            .host = cfg->api.host,
            .port = (uint16_t)cfg->api.port,
            .jwt_secret = cfg->api.jwt_secret,
            .jwt_issuer = cfg->api.jwt_issuer,
            .jwt_algorithm = jwt_algorithm_name(cfg->api.jwt_algorithm),
            .iam_api_key = cfg->api.iam_api_key,
            .cors_origin = cfg->api.cors_origin,
            .allow_unauthenticated = cfg->api.allow_unauthenticated,
            .ingest_auth = cfg->api.ingest_auth,
            .sink = a->sink_exporter,
            .max_body = cfg->receivers.http_max_body_size,
        };
        char why[512] = "";
        rc = api_server_new(&a->api, &a->loop, &ao, why, sizeof(why));
        if (rc != 0) {
            log_error("agent", "query API: %s", why[0] != '\0' ? why : dlotel_strerror(rc));
            start_failed(a, rc, "query API: %s", why[0] != '\0' ? why : dlotel_strerror(rc));
            return rc == DLOTEL_ERR_CONFIG ? EXIT_USAGE : EXIT_RUNTIME;
        }
    }

    uv_prepare_init(&a->loop, &a->stop_prepare);
    uv_timer_init(&a->loop, &a->stop_timer);
    a->stop_prepare.data = a->stop_timer.data = a;
    a->stop_handles_open = true;
    uv_signal_init(&a->loop, &a->sig_term);
    uv_signal_init(&a->loop, &a->sig_int);
    uv_signal_init(&a->loop, &a->sig_usr1);
    a->signals_open = true;
    a->sig_term.data = a->sig_int.data = a->sig_usr1.data = a;
    uv_signal_start(&a->sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&a->sig_usr1, on_flush_signal, SIGUSR1);

    uint16_t grpc_port = receiver_port(a->receivers[0]);
    uint16_t http_port = receiver_port(a->receivers[1]);
    uint16_t adm_port = admin_port(a->admin);
    uint16_t api_port = a->api != NULL ? api_server_port(a->api) : 0;
    char gw[CLI_HOST_MAX + 16], hw[CLI_HOST_MAX + 16], aw[CLI_HOST_MAX + 16];
    cli_endpoint_format(gw, sizeof(gw), grpc_ep.host, grpc_port);
    cli_endpoint_format(hw, sizeof(hw), http_ep.host, http_port);
    cli_endpoint_format(aw, sizeof(aw), admin_ep.host, adm_port);
    log_info("agent",
             "dlotel %s listening: otlp_grpc on %s, otlp_http on %s; admin (/metrics, /healthz) "
             "on %s; pid %ld",
             DLOTEL_VERSION, gw, hw, aw, (long)getpid());
    if (a->api != NULL) {
        char pw[CLI_HOST_MAX + 16];
        cli_endpoint_format(pw, sizeof(pw), cfg->api.host, api_port);
        log_info("agent", "query API on http://%s/api/otel/v1 (auth %s)", pw,
                 cfg->api.jwt_secret != NULL || cfg->api.iam_api_key != NULL ? "on" : "off");
    }

    if (args->ready_file != NULL &&
        write_ready_file(args->ready_file, grpc_port, http_port, adm_port, api_port) != 0) {
        log_error("agent", "cannot write the ready file %s: %s", args->ready_file, strerror(errno));
        return EXIT_RUNTIME;
    }
    uint64_t hash = control_hash_mix(config_hash(cfg), args->exit_when_unused_ns);
    if (args->runtime_dir != NULL) {
        struct control_server_options co = {
            .dir = args->runtime_dir,
            .lock_fd = a->daemon_lock_fd,
            .config_hash = hash,
            .exit_when_unused_ms =
                args->exit_when_unused_ns < 0 ? -1 : (args->exit_when_unused_ns + 999999) / 1000000,
            .pipeline = a->pipeline,
            .grpc_port = grpc_port,
            .http_port = http_port,
            .api_port = api_port,
            .on_stop = on_control_stop,
            .userdata = a,
        };
        char why[512];
        rc = control_server_new(&a->control, &a->loop, &co, why, sizeof(why));
        if (rc != 0) {
            log_error("agent", "%s", why);
            start_failed(a, rc, "%s", why);
            return EXIT_RUNTIME;
        }
        a->daemon_lock_fd = -1; /* The server owns it now. */
    }
    if (a->ready_fd >= 0) {
        /* Only now does start() return in the host: every port listens and the control socket
         * accepts. */
        struct control_ready r = {.ok = true,
                                  .pid = getpid(),
                                  .config_hash = hash,
                                  .grpc_port = grpc_port,
                                  .http_port = http_port};
        control_ready_write(a->ready_fd, &r);
        a->ready_fd = -1;
    }

    uv_run(&a->loop, UV_RUN_DEFAULT);
    log_info("agent", "stopped");
    return 0;
}

/* Tells the launcher (--ready-fd) that start-up failed, once; |*fd| becomes -1. */
static void ready_fail(int *fd, int code, const char *msg)
{
    if (*fd >= 0) {
        struct control_ready r = {.ok = false, .code = code, .pid = getpid()};
        snprintf(r.error, sizeof(r.error), "%s", msg);
        control_ready_write(*fd, &r);
        *fd = -1;
    }
}

int cli_agent_main(const struct cli_args *args)
{
    int ready_fd = args->ready_fd;
    if (ready_fd >= 0 && fcntl(ready_fd, F_SETFD, FD_CLOEXEC) != 0) {
        fprintf(stderr, "dlotel: --ready-fd %d is not an open descriptor\n", ready_fd);
        return EXIT_USAGE;
    }
    /* Before anything opens a descriptor or a thread: the launcher reaps the process that
     * returns here, and the daemon lives on in a child of it. */
    if (args->daemonize && control_daemonize() != 0) {
        fprintf(stderr, "dlotel: cannot fork into the background: %s\n", strerror(errno));
        ready_fail(&ready_fd, DLOTEL_ERR_IO, "cannot fork into the background");
        return EXIT_RUNTIME;
    }
    struct config *cfg;
    int rc = cli_build_config(args, &cfg);
    if (rc != 0) {
        ready_fail(&ready_fd, DLOTEL_ERR_CONFIG,
                   "the daemon found its configuration invalid (its log says why)");
        return rc;
    }
    if (cli_log_open(cfg->log.file, cfg->log.format == CONFIG_LOG_JSON, cfg->log.max_size) != 0) {
        char msg[CONTROL_ERROR_MAX];
        snprintf(msg, sizeof(msg), "cannot open the log file %s: %s",
                 cfg->log.file != NULL ? cfg->log.file : "(stderr)", strerror(errno));
        fprintf(stderr, "dlotel: %s\n", msg);
        ready_fail(&ready_fd, DLOTEL_ERR_IO, msg);
        config_free(cfg);
        return EXIT_RUNTIME;
    }
    log_set_level(cfg->log.level);
    if (args->runtime_dir != NULL && args->config_file != NULL) {
        /* The launcher's copy of the configuration holds secrets; loaded, it has served. */
        char mine[CONTROL_PATH_MAX];
        if (control_path(mine, sizeof(mine), args->runtime_dir, CONTROL_CONFIG_NAME) == 0 &&
            strcmp(mine, args->config_file) == 0) {
            unlink(args->config_file);
        }
    }
    if (!cfg->enabled) {
        log_info("agent", "disabled (enabled=false: OTEL_SDK_DISABLED=true or "
                          "DATALAYER_OTEL_AGENT_ENABLED=false); not starting");
        ready_fail(&ready_fd, DLOTEL_ERR_DISABLED, "the agent is disabled by its configuration");
        cli_log_close();
        config_free(cfg);
        return 0;
    }

    /* A client that goes away mid-response must not kill the agent. */
    signal(SIGPIPE, SIG_IGN);

    struct agent *a = calloc(1, sizeof(*a));
    if (a == NULL || uv_loop_init(&a->loop) != 0) {
        log_error("agent", "cannot start the event loop");
        free(a);
        cli_log_close();
        config_free(cfg);
        return EXIT_RUNTIME;
    }
    a->cfg = cfg;
    a->daemon_lock_fd = -1;
    a->ready_fd = ready_fd;
    a->start_mono_ns = time_monotonic_nano();
    a->start_unix_ns = time_now_unix_nano();
    for (size_t i = 0; i < CONFIG_MAX_EXPORTERS; i++) {
        a->lock_fds[i] = -1;
    }

    rc = agent_run(a, args);
    if (rc != 0) {
        ready_fail(&a->ready_fd, a->fail_code != 0 ? a->fail_code : DLOTEL_ERR_DAEMON,
                   a->fail_code != 0 ? a->fail_msg
                                     : "the daemon could not start (its log says why)");
        /* A failed start: close what was opened, in the same order as a stop. */
        agent_teardown(a);
        uv_run(&a->loop, UV_RUN_DEFAULT);
        if (cfg->log.file != NULL) {
            /* Whoever started us may only watch the terminal. */
            fprintf(stderr, "dlotel: the agent did not start; the reason is in %s\n",
                    cfg->log.file);
        }
    }
    if (uv_loop_close(&a->loop) != 0) {
        /* Some handle outlived its owner: a bug worth a line in the log, not a hang. */
        log_error("agent", "internal: handles still open at exit; closing them");
        uv_walk(&a->loop, close_walk, NULL);
        uv_run(&a->loop, UV_RUN_DEFAULT);
        uv_loop_close(&a->loop);
    }
    for (size_t i = 0; i < CONFIG_MAX_EXPORTERS; i++) {
        if (a->lock_fds[i] >= 0) {
            close(a->lock_fds[i]);
        }
    }
    processor_chains_free(a->chains);
    free(a);
    cli_log_close();
    config_free(cfg);
    return rc;
}
