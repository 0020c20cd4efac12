/*
 * sink_tool: drives the DuckDB sink module (agent/sink/sink_module.h) from outside, through the
 * loader, as the daemon does. The integration tests and the crash tests run it as a separate
 * process (so it can be killed with SIGKILL at any moment); the benchmark is one of its commands.
 * It does not link DuckDB.
 *
 *   sink_tool [options] DATA_DIR ingest SIGNAL FILE [--count N] [--inflight K] [--uid U]
 *                                      [--uid-prefix P]
 *       Appends FILE (.pb, or OTLP/JSON when it ends in .json) N times, at most K appends in
 *       flight, and prints "acked I" (flushed) when request I is committed. With --uid-prefix
 *       request I is stored with user_uid P<I>. Exits 0 once all are acknowledged and the sink
 *       is closed (which flushes to Parquet).
 *   sink_tool [options] DATA_DIR query SQL [--user U | --admin] [--cap N] [--timeout-ms N]
 *                                      [--param V]...
 *       Prints the JSON answer; exits 0 on success, 3 when the query was refused or failed.
 *   sink_tool [options] DATA_DIR flush | maintain | stats
 *   sink_tool [options] DATA_DIR bench SIGNAL FILE [--seconds S] [--inflight K]
 *       Appends FILE as fast as the sink commits, for S seconds, and prints rows/s.
 *   sink_tool [options] DATA_DIR serve [--http HOST:PORT] [--grpc HOST:PORT] --ready-file PATH
 *       The receivers and the pipeline of the daemon with the sink exporter: OTLP in, SQL out.
 *       Reads commands from stdin, one per line ("query SQL", "flush", "stats") and answers each
 *       with one JSON line on stdout. Stops on SIGTERM or at the end of stdin.
 *
 * options: --rows-per-file N, --flush-interval-ms N, --retention-days N, --gc-grace-ms N,
 *          --disk-cap BYTES, --maintenance-interval-ms N, --module PATH
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"
#include "pipeline/pipeline.h"
#include "receiver/receiver.h"
#include "sink/sink_loader.h"
#include "sink/sink_module.h"

static const char *module_path;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sink_tool: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static uint64_t parse_u64(const char *s)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        die("not a number: %s", s);
    }
    return (uint64_t)v;
}

static int parse_signal(const char *s)
{
    enum otlp_signal sig;
    if (otlp_signal_parse(s, strlen(s), &sig) != 0) {
        die("unknown signal %s (traces, metrics or logs)", s);
    }
    return (int)sig;
}

/* Reads FILE; OTLP/JSON (*.json) is converted to protobuf with the otlp room's codec. */
static uint8_t *load(const char *path, int signal, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        die("cannot open %s", path);
    }
    struct buf b;
    buf_init(&b, (size_t)1 << 30);
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        if (buf_append(&b, tmp, n) != 0) {
            die("%s is too large", path);
        }
    }
    fclose(f);
    size_t plen = strlen(path);
    if (plen > 5 && strcmp(path + plen - 5, ".json") == 0) {
        struct arena a;
        arena_init(&a, (size_t)1 << 30);
        struct buf pb;
        buf_init(&pb, (size_t)1 << 30);
        char err[256];
        if (otlp_json_to_pb((enum otlp_signal)signal, (const char *)b.data, b.len, &a, &pb, err,
                            sizeof(err)) != 0) {
            die("cannot convert the JSON: %s", err);
        }
        arena_cleanup(&a);
        buf_cleanup(&b);
        b = pb;
    }
    return buf_take(&b, len);
}

static struct sink_loader *loader;

static const struct sink_module_api *open_sink(struct sink **out, struct sink_options *o)
{
    char detail[1024] = "";
    if (sink_loader_open(&loader, module_path, detail, sizeof(detail)) != 0) {
        die("%s", detail);
    }
    const struct sink_module_api *api = sink_loader_api(loader);
    int rc = api->open(out, o, detail, sizeof(detail));
    if (rc != 0) {
        fprintf(stderr, "sink_tool: cannot open the sink: %s (%s)\n", detail, dlotel_strerror(rc));
        exit(1);
    }
    return api;
}

/* ---- ingest and bench ---------------------------------------------------------------------- */

struct inflight {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    uint64_t outstanding;
    uint64_t acked;
    uint64_t failed;
};

struct call {
    struct inflight *fl;
    uint64_t index;
    bool print;
};

static void on_done(void *userdata, int status, const char *message)
{
    struct call *c = userdata;
    struct inflight *fl = c->fl;
    if (status == 0 && c->print) {
        /* One write per line, flushed: a test that kills us reads whole lines. */
        printf("acked %" PRIu64 "\n", c->index);
        fflush(stdout);
    } else if (status != 0) {
        fprintf(stderr, "sink_tool: request %" PRIu64 " failed: %s (%s)\n", c->index,
                message != NULL ? message : "", dlotel_strerror(status));
    }
    pthread_mutex_lock(&fl->mu);
    fl->outstanding--;
    if (status == 0) {
        fl->acked++;
    } else {
        fl->failed++;
    }
    pthread_cond_broadcast(&fl->cond);
    pthread_mutex_unlock(&fl->mu);
    free(c);
}

/* Appends request |i|, waiting while |k| are in flight. */
static void submit(const struct sink_module_api *api, struct sink *s, struct inflight *fl, int sig,
                   const uint8_t *pb, size_t len, const char *uid, uint64_t i, uint64_t k,
                   bool print)
{
    pthread_mutex_lock(&fl->mu);
    while (fl->outstanding >= k) {
        pthread_cond_wait(&fl->cond, &fl->mu);
    }
    fl->outstanding++;
    pthread_mutex_unlock(&fl->mu);
    struct call *c = calloc(1, sizeof(*c));
    c->fl = fl;
    c->index = i;
    c->print = print;
    for (;;) {
        int rc = api->append(s, sig, pb, len, uid, on_done, c);
        if (rc == 0) {
            return;
        }
        if (rc != DLOTEL_ERR_FULL) {
            fprintf(stderr, "sink_tool: append: %s\n", dlotel_strerror(rc));
            exit(1);
        }
        usleep(1000);
    }
}

static void drain(struct inflight *fl)
{
    pthread_mutex_lock(&fl->mu);
    while (fl->outstanding > 0) {
        pthread_cond_wait(&fl->cond, &fl->mu);
    }
    pthread_mutex_unlock(&fl->mu);
}

static int cmd_ingest(struct sink_options *o, int argc, char **argv, bool bench)
{
    if (argc < 2) {
        die("%s needs SIGNAL FILE", bench ? "bench" : "ingest");
    }
    int sig = parse_signal(argv[0]);
    size_t len;
    uint8_t *pb = load(argv[1], sig, &len);
    uint64_t count = 1, k = 1, seconds = 5;
    const char *uid = NULL, *prefix = NULL;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) {
            die("%s needs a value", argv[i]);
        }
        if (strcmp(argv[i], "--count") == 0) {
            count = parse_u64(argv[++i]);
        } else if (strcmp(argv[i], "--inflight") == 0) {
            k = parse_u64(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0) {
            seconds = parse_u64(argv[++i]);
        } else if (strcmp(argv[i], "--uid") == 0) {
            uid = argv[++i];
        } else if (strcmp(argv[i], "--uid-prefix") == 0) {
            prefix = argv[++i];
        } else {
            die("unknown option %s", argv[i]);
        }
    }
    if (k == 0) {
        k = 1;
    }
    struct otlp_counts counts;
    struct otlp_error oerr;
    if (otlp_scan((enum otlp_signal)sig, pb, len, &counts, &oerr) != 0) {
        die("the payload does not scan: %s", oerr.message);
    }
    struct sink *s;
    const struct sink_module_api *api = open_sink(&s, o);
    struct inflight fl = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};

    uint64_t t0 = time_monotonic_nano();
    uint64_t i = 0;
    char uidbuf[256];
    for (;; i++) {
        if (bench) {
            if (time_monotonic_nano() - t0 >= seconds * 1000000000u) {
                break;
            }
        } else if (i >= count) {
            break;
        }
        const char *u = uid;
        if (prefix != NULL) {
            snprintf(uidbuf, sizeof(uidbuf), "%s%" PRIu64, prefix, i);
            u = uidbuf;
        }
        submit(api, s, &fl, sig, pb, len, u, i, k, !bench);
    }
    drain(&fl);
    uint64_t t1 = time_monotonic_nano();
    if (bench) {
        char detail[256];
        double secs = (double)(t1 - t0) / 1e9;
        double rows = (double)fl.acked * (double)counts.items;
        struct buf st;
        buf_init(&st, 1 << 20);
        api->stats(s, &st);
        printf("{\"requests\":%" PRIu64 ",\"rows\":%.0f,\"seconds\":%.3f,\"rows_per_second\":%.0f,"
               "\"requests_per_second\":%.1f,\"inflight\":%" PRIu64 ",\"stats\":%s}\n",
               fl.acked, rows, secs, rows / secs, (double)fl.acked / secs, k,
               st.data != NULL ? (const char *)st.data : "null");
        buf_cleanup(&st);
        (void)detail;
    }
    api->close(s);
    sink_loader_free(loader);
    free(pb);
    return fl.failed > 0 ? 1 : 0;
}

/* ---- query, flush, maintain, stats --------------------------------------------------------- */

static int cmd_query(struct sink_options *o, int argc, char **argv)
{
    if (argc < 1) {
        die("%s", "query needs SQL");
    }
    const char *sql = argv[0];
    const char *user = NULL;
    unsigned flags = 0;
    uint64_t cap = 0, timeout = 0;
    const char *params[16];
    size_t np = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--admin") == 0) {
            flags |= SINK_QUERY_ADMIN;
            continue;
        }
        if (i + 1 >= argc) {
            die("%s needs a value", argv[i]);
        }
        if (strcmp(argv[i], "--user") == 0) {
            user = argv[++i];
        } else if (strcmp(argv[i], "--cap") == 0) {
            cap = parse_u64(argv[++i]);
        } else if (strcmp(argv[i], "--timeout-ms") == 0) {
            timeout = parse_u64(argv[++i]);
        } else if (strcmp(argv[i], "--param") == 0 && np < 16) {
            params[np++] = argv[++i];
        } else {
            die("unknown option %s", argv[i]);
        }
    }
    struct sink *s;
    const struct sink_module_api *api = open_sink(&s, o);
    struct buf out;
    buf_init(&out, (size_t)256 * 1024 * 1024);
    int rc = api->query(s, sql, user, flags, params, np, cap, timeout, &out);
    if (out.len > 0) {
        fwrite(out.data, 1, out.len, stdout);
        fputc('\n', stdout);
    }
    buf_cleanup(&out);
    api->close(s);
    sink_loader_free(loader);
    return rc == 0 ? 0 : 3;
}

static int cmd_simple(struct sink_options *o, const char *cmd)
{
    struct sink *s;
    const struct sink_module_api *api = open_sink(&s, o);
    char detail[512] = "";
    int rc = 0;
    if (strcmp(cmd, "flush") == 0) {
        rc = api->flush(s, detail, sizeof(detail));
    } else if (strcmp(cmd, "maintain") == 0) {
        rc = api->maintain(s, detail, sizeof(detail));
    } else {
        struct buf out;
        buf_init(&out, 1 << 24);
        rc = api->stats(s, &out);
        if (rc == 0) {
            printf("%s\n", (const char *)out.data);
        }
        buf_cleanup(&out);
    }
    if (rc != 0) {
        fprintf(stderr, "sink_tool: %s failed: %s (%s)\n", cmd, detail, dlotel_strerror(rc));
    }
    api->close(s);
    sink_loader_free(loader);
    return rc == 0 ? 0 : 1;
}

/* ---- serve --------------------------------------------------------------------------------- */

struct serve {
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_async_t stop;
    struct pipeline *pipeline;
    struct receiver *http;
    struct receiver *grpc;
    struct exporter *sink;
    struct sink *store;
    const struct sink_module_api *api;
    bool stopping;
};

static void serve_stop(struct serve *sv)
{
    if (sv->stopping) {
        return;
    }
    sv->stopping = true;
    receiver_free(sv->http);
    receiver_free(sv->grpc);
    sv->http = sv->grpc = NULL;
    uv_close((uv_handle_t *)&sv->sigterm, NULL);
    uv_close((uv_handle_t *)&sv->stop, NULL);
}

static void on_sigterm(uv_signal_t *h, int signum)
{
    (void)signum;
    serve_stop(h->data);
}

static void on_stop(uv_async_t *h)
{
    serve_stop(h->data);
}

/* Reads commands from stdin on its own thread: the module's query() is thread-safe. */
static void *stdin_main(void *arg)
{
    struct serve *sv = arg;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct buf out;
    buf_init(&out, (size_t)256 * 1024 * 1024);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
            line[--n] = '\0';
        }
        buf_reset(&out);
        if (strncmp(line, "query ", 6) == 0) {
            sv->api->query(sv->store, line + 6, NULL, SINK_QUERY_ADMIN, NULL, 0, 100000, 30000,
                           &out);
        } else if (strncmp(line, "uquery ", 7) == 0) {
            /* uquery USER SQL: scoped to USER. */
            char *sp = strchr(line + 7, ' ');
            if (sp != NULL) {
                *sp = '\0';
                sv->api->query(sv->store, sp + 1, line + 7, 0, NULL, 0, 100000, 30000, &out);
            }
        } else if (strcmp(line, "flush") == 0) {
            char detail[256] = "";
            int rc = sv->api->flush(sv->store, detail, sizeof(detail));
            buf_printf(&out, "{\"success\":%s}", rc == 0 ? "true" : "false");
        } else if (strcmp(line, "stats") == 0) {
            sv->api->stats(sv->store, &out);
        } else {
            buf_printf(&out, "{\"success\":false,\"error\":\"unknown command\"}");
        }
        fwrite(out.data, 1, out.len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    free(line);
    buf_cleanup(&out);
    uv_async_send(&sv->stop);
    return NULL;
}

static int parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= hostlen) {
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (uint16_t)parse_u64(colon + 1);
    return 0;
}

static int cmd_serve(struct sink_options *o, int argc, char **argv)
{
    const char *http = "127.0.0.1:0", *grpc = "127.0.0.1:0", *ready = NULL;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            die("%s needs a value", argv[i]);
        }
        if (strcmp(argv[i], "--http") == 0) {
            http = argv[++i];
        } else if (strcmp(argv[i], "--grpc") == 0) {
            grpc = argv[++i];
        } else if (strcmp(argv[i], "--ready-file") == 0) {
            ready = argv[++i];
        } else {
            die("unknown option %s", argv[i]);
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct serve sv;
    memset(&sv, 0, sizeof(sv));
    uv_loop_init(&sv.loop);
    if (pipeline_new(&sv.pipeline) != 0) {
        die("%s", "cannot create the pipeline");
    }
    char detail[1024] = "";
    int rc = exporter_sink_new(&sv.sink, &sv.loop, o, module_path, detail, sizeof(detail));
    if (rc != 0) {
        fprintf(stderr, "sink_tool: cannot start the sink exporter: %s\n", detail);
        return 1;
    }
    sv.store = exporter_sink_store(sv.sink, &sv.api);
    for (int sig = 0; sig < OTLP_SIGNAL_COUNT; sig++) {
        if (pipeline_add_exporter(sv.pipeline, (enum otlp_signal)sig, sv.sink) != 0) {
            die("%s", "cannot attach the sink exporter");
        }
    }
    char host[256];
    uint16_t port;
    if (parse_hostport(http, host, sizeof(host), &port) != 0 ||
        receiver_otlp_http_new(&sv.http, &sv.loop, host, port, sv.pipeline) != 0) {
        die("cannot listen on %s", http);
    }
    if (parse_hostport(grpc, host, sizeof(host), &port) != 0 ||
        receiver_otlp_grpc_new(&sv.grpc, &sv.loop, host, port, sv.pipeline) != 0) {
        die("cannot listen on %s", grpc);
    }
    uv_signal_init(&sv.loop, &sv.sigterm);
    sv.sigterm.data = &sv;
    uv_signal_start(&sv.sigterm, on_sigterm, SIGTERM);
    uv_async_init(&sv.loop, &sv.stop, on_stop);
    sv.stop.data = &sv;
    if (ready != NULL) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", ready);
        FILE *f = fopen(tmp, "w");
        if (f == NULL) {
            die("cannot write %s", tmp);
        }
        fprintf(f, "{\"pid\":%ld,\"http_port\":%u,\"grpc_port\":%u}\n", (long)getpid(),
                receiver_port(sv.http), receiver_port(sv.grpc));
        fclose(f);
        rename(tmp, ready);
    }
    pthread_t th;
    pthread_create(&th, NULL, stdin_main, &sv);
    pthread_detach(th);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    /* The pipeline destroys the exporter: the sink stores what is queued and flushes. */
    pipeline_free(sv.pipeline);
    uv_run(&sv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&sv.loop);
    return 0;
}

int main(int argc, char **argv)
{
    struct sink_options o;
    sink_options_init(&o);
    o.flush_interval_ms = 0;
    o.maintenance_interval_ms = 0;
    o.gc_grace_ms = 0;
    o.log_level = 1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (i + 1 >= argc) {
            die("%s needs a value", argv[i]);
        }
        const char *v = argv[++i];
        const char *f = argv[i - 1];
        if (strcmp(f, "--rows-per-file") == 0) {
            o.max_rows_per_file = parse_u64(v);
        } else if (strcmp(f, "--flush-interval-ms") == 0) {
            o.flush_interval_ms = parse_u64(v);
        } else if (strcmp(f, "--retention-days") == 0) {
            o.retention_days = (uint32_t)parse_u64(v);
        } else if (strcmp(f, "--gc-grace-ms") == 0) {
            o.gc_grace_ms = parse_u64(v);
        } else if (strcmp(f, "--disk-cap") == 0) {
            o.disk_cap_bytes = parse_u64(v);
        } else if (strcmp(f, "--maintenance-interval-ms") == 0) {
            o.maintenance_interval_ms = parse_u64(v);
        } else if (strcmp(f, "--log-level") == 0) {
            o.log_level = (int)parse_u64(v);
        } else if (strcmp(f, "--module") == 0) {
            module_path = v;
        } else {
            die("unknown option %s", f);
        }
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: sink_tool [options] DATA_DIR ingest|query|flush|maintain|stats|"
                        "bench|serve ...\n");
        return 2;
    }
    o.data_dir = argv[i];
    const char *cmd = argv[i + 1];
    log_set_level((enum log_level)o.log_level);
    int rest = argc - i - 2;
    char **args = argv + i + 2;
    if (strcmp(cmd, "ingest") == 0) {
        return cmd_ingest(&o, rest, args, false);
    }
    if (strcmp(cmd, "bench") == 0) {
        return cmd_ingest(&o, rest, args, true);
    }
    if (strcmp(cmd, "query") == 0) {
        return cmd_query(&o, rest, args);
    }
    if (strcmp(cmd, "serve") == 0) {
        return cmd_serve(&o, rest, args);
    }
    if (strcmp(cmd, "flush") == 0 || strcmp(cmd, "maintain") == 0 || strcmp(cmd, "stats") == 0) {
        return cmd_simple(&o, cmd);
    }
    die("unknown command %s", cmd);
    return 2;
}
