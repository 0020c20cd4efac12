/*
 * dlotel-nullup: a null OTLP upstream for the benchmarks. It accepts OTLP/HTTP (POST /v1/traces,
 * /v1/metrics, /v1/logs) and OTLP/gRPC (the three Export methods, h2c) on one port, answers each
 * at once with the empty success response, and counts what it received: requests, wire bytes and
 * (unless --count none) items, after undoing gzip or zstd. The benchmarks then compare items
 * delivered here with items the load generator had acknowledged.
 *
 * It is built on the agent's own HTTP server (agent/net), so its cost per request is the same
 * as the agent's receiving side; run it on the load generator's core, not the agent's.
 *
 * Counters: GET /stats (JSON), SIGUSR1 (JSON on stderr), and at exit on SIGTERM/SIGINT (JSON on
 * stdout).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "core/buf.h"
#include "core/compress.h"
#include "core/log.h"
#include "dlotel.h"
#include "net/http.h"
#include "otlp/otlp.h"

#define DECODED_MAX ((size_t)256 << 20)

struct sig_counts {
    uint64_t requests;
    uint64_t items;
    uint64_t bytes;
};

struct nullup {
    uv_loop_t *loop;
    struct http_server *srv;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sigusr1;
    bool scan;      /* Decompress and count items (else requests and bytes only). */
    bool full_scan; /* Count with otlp_scan() (validating), and cross-check the fast count. */
    bool stopping;
    struct buf scratch; /* Decompressed bodies; reused. */

    uint64_t requests;
    uint64_t items;
    uint64_t wire_bytes;
    uint64_t decoded_bytes;
    uint64_t bad;
    uint64_t count_mismatch; /* --count full: the fast count disagreed with otlp_scan(). */
    uint64_t not_found;
    uint64_t grpc;
    uint64_t http1;
    uint64_t h2_plain; /* OTLP/HTTP over HTTP/2 */
    uint64_t by_codec[3];
    struct sig_counts by_signal[OTLP_SIGNAL_COUNT];
    uint64_t first_ns;
    uint64_t last_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int stats_json(const struct nullup *n, struct buf *out)
{
    int rc =
        buf_printf(out,
                   "{\"pid\":%ld,\"requests\":%" PRIu64 ",\"items\":%" PRIu64
                   ",\"wire_bytes\":%" PRIu64 ",\"decoded_bytes\":%" PRIu64 ",\"bad\":%" PRIu64
                   ",\"count_mismatch\":%" PRIu64 ",\"not_found\":%" PRIu64 ",\"grpc\":%" PRIu64
                   ",\"http1\":%" PRIu64 ",\"http2_plain\":%" PRIu64 ",\"count\":\"%s\","
                   "\"encodings\":{\"identity\":%" PRIu64 ",\"gzip\":%" PRIu64 ",\"zstd\":%" PRIu64
                   "},\"first_ns\":%" PRIu64 ",\"last_ns\":%" PRIu64 ",\"by_signal\":{",
                   (long)getpid(), n->requests, n->items, n->wire_bytes, n->decoded_bytes, n->bad,
                   n->count_mismatch, n->not_found, n->grpc, n->http1, n->h2_plain,
                   !n->scan       ? "none"
                   : n->full_scan ? "full"
                                  : "fast",
                   n->by_codec[CODEC_NONE], n->by_codec[CODEC_GZIP], n->by_codec[CODEC_ZSTD],
                   n->first_ns, n->last_ns);
    for (int s = 0; rc == 0 && s < OTLP_SIGNAL_COUNT; s++) {
        const struct sig_counts *c = &n->by_signal[s];
        rc = buf_printf(
            out, "%s\"%s\":{\"requests\":%" PRIu64 ",\"items\":%" PRIu64 ",\"bytes\":%" PRIu64 "}",
            s ? "," : "", otlp_signal_name((enum otlp_signal)s), c->requests, c->items, c->bytes);
    }
    if (rc == 0) {
        rc = buf_printf(out, "}}\n");
    }
    return rc;
}

static void print_stats(const struct nullup *n, FILE *f)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    if (stats_json(n, &b) == 0) {
        fwrite(b.data, 1, b.len, f);
        fflush(f);
    }
    buf_cleanup(&b);
}

static void respond_simple(struct http_stream *s, int status, const char *ctype, const char *body)
{
    struct http_header h[] = {{"content-type", ctype}};
    struct http_response r = {
        .status = status,
        .headers = h,
        .n_headers = 1,
        .body = (const uint8_t *)body,
        .body_len = strlen(body),
    };
    http_respond(s, &r);
}

/* A gRPC answer: HEADERS, one empty message (5-byte prefix, length 0), trailers with a status. */
static void respond_grpc(struct http_stream *s, int code, const char *message)
{
    static const uint8_t empty[5] = {0, 0, 0, 0, 0};
    char codebuf[8];
    snprintf(codebuf, sizeof(codebuf), "%d", code);
    struct http_header h[] = {{"content-type", "application/grpc"}};
    struct http_header t[] = {{"grpc-status", codebuf}, {"grpc-message", message}};
    struct http_response r = {
        .status = 200,
        .headers = h,
        .n_headers = 1,
        .body = code == 0 ? empty : NULL,
        .body_len = code == 0 ? sizeof(empty) : 0,
        .trailers = t,
        .n_trailers = message != NULL ? 2 : 1,
    };
    http_respond(s, &r);
}

/*
 * A shallow protobuf walk that counts items without validating them: it descends only the few
 * levels that lead to the repeated item field and skips each item by its length. The agent's
 * otlp_scan() validates every field of every item, which costs about as much as the agent's
 * whole forwarding path; the null upstream shares a core with the load generator and must stay
 * far cheaper than the agent, so it counts this way unless --count full is given.
 *
 * |path| lists the field numbers to descend (all length-delimited); the last one is counted.
 * Metrics have one more level, handled by count_metric(). Returns false on malformed input.
 */
struct pbr {
    const uint8_t *p;
    const uint8_t *end;
};

static bool pb_varint(struct pbr *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* Reads the next field; for wire type 2 sets |*sub| to its bytes. Skips other wire types. */
static bool pb_next(struct pbr *r, unsigned *field, unsigned *wire, struct pbr *sub)
{
    uint64_t key, v;
    if (!pb_varint(r, &key)) {
        return false;
    }
    *field = (unsigned)(key >> 3);
    *wire = (unsigned)(key & 7);
    switch (*wire) {
    case 0:
        return pb_varint(r, &v);
    case 1:
    case 5: {
        size_t n = *wire == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n) {
            return false;
        }
        r->p += n;
        return true;
    }
    case 2:
        if (!pb_varint(r, &v) || v > (uint64_t)(r->end - r->p)) {
            return false;
        }
        sub->p = r->p;
        sub->end = r->p + v;
        r->p += v;
        return true;
    default:
        return false;
    }
}

/* Metric: gauge 5, sum 7, histogram 9, exponential_histogram 10, summary 11; data_points 1. */
static bool count_metric(struct pbr m, uint64_t *items)
{
    unsigned f, w;
    struct pbr sub;
    while (m.p < m.end) {
        if (!pb_next(&m, &f, &w, &sub)) {
            return false;
        }
        if (w == 2 && (f == 5 || f == 7 || f == 9 || f == 10 || f == 11)) {
            struct pbr d = sub, pt;
            while (d.p < d.end) {
                if (!pb_next(&d, &f, &w, &pt)) {
                    return false;
                }
                if (w == 2 && f == 1) {
                    (*items)++;
                }
            }
        }
    }
    return true;
}

/* request.1 -> Resource*.2 -> Scope*.2 -> items (or Metric, whose data points are counted). */
static bool count_level(struct pbr r, enum otlp_signal s, int depth, uint64_t *items)
{
    unsigned f, w;
    struct pbr sub;
    while (r.p < r.end) {
        if (!pb_next(&r, &f, &w, &sub)) {
            return false;
        }
        if (w != 2 || f != (depth == 0 ? 1u : 2u)) {
            continue;
        }
        if (depth < 2) {
            if (!count_level(sub, s, depth + 1, items)) {
                return false;
            }
        } else if (s == OTLP_METRICS) {
            if (!count_metric(sub, items)) {
                return false;
            }
        } else {
            (*items)++;
        }
    }
    return true;
}

static bool count_fast(enum otlp_signal s, const uint8_t *p, size_t len, uint64_t *items)
{
    struct pbr r = {p, p + len};
    *items = 0;
    return count_level(r, s, 0, items);
}

/*
 * Counts one request body of |signal|: decompresses it with |codec| and scans it. Returns 0, or
 * -1 with |*why| set for a body that is not a valid request.
 */
static int count_body(struct nullup *n, enum otlp_signal signal, enum codec codec,
                      const uint8_t *body, size_t len, const char **why)
{
    uint64_t t = now_ns();
    if (n->first_ns == 0) {
        n->first_ns = t;
    }
    n->last_ns = t;
    n->requests++;
    n->wire_bytes += len;
    n->by_codec[codec]++;
    n->by_signal[signal].requests++;
    n->by_signal[signal].bytes += len;
    if (!n->scan) {
        return 0;
    }
    const uint8_t *msg = body;
    size_t msg_len = len;
    if (codec != CODEC_NONE) {
        buf_reset(&n->scratch);
        if (codec_decompress(codec, body, len, &n->scratch) != 0) {
            *why = "bad compressed body";
            n->bad++;
            return -1;
        }
        msg = n->scratch.data;
        msg_len = n->scratch.len;
    }
    n->decoded_bytes += msg_len;
    uint64_t items;
    if (n->full_scan) {
        struct otlp_counts c;
        struct otlp_error e = {0};
        if (otlp_scan(signal, msg, msg_len, &c, &e) != 0) {
            *why = e.message != NULL ? e.message : "not an OTLP request";
            n->bad++;
            return -1;
        }
        items = c.items;
        uint64_t fast;
        if (!count_fast(signal, msg, msg_len, &fast) || fast != items) {
            n->count_mismatch++;
        }
    } else if (!count_fast(signal, msg, msg_len, &items)) {
        *why = "malformed protobuf";
        n->bad++;
        return -1;
    }
    n->items += items;
    n->by_signal[signal].items += items;
    return 0;
}

static bool grpc_path_signal(const char *path, enum otlp_signal *s)
{
    static const char *const paths[] = {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    };
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        if (strcmp(path, paths[i]) == 0) {
            *s = (enum otlp_signal)i;
            return true;
        }
    }
    return false;
}

static bool http_path_signal(const char *path, enum otlp_signal *s)
{
    static const char *const paths[] = {"/v1/traces", "/v1/metrics", "/v1/logs"};
    size_t plen = strcspn(path, "?");
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        size_t l = strlen(paths[i]);
        if (plen == l && memcmp(path, paths[i], l) == 0) {
            *s = (enum otlp_signal)i;
            return true;
        }
    }
    return false;
}

static void handle_grpc(struct nullup *n, struct http_stream *s, const struct http_request *req,
                        enum otlp_signal signal)
{
    n->grpc++;
    const char *why = "bad gRPC frame";
    const uint8_t *b = req->body.data;
    size_t len = req->body.len;
    if (len < 5 || (b[0] != 0 && b[0] != 1)) {
        n->bad++;
        respond_grpc(s, 3, why);
        return;
    }
    uint32_t mlen = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
    if (mlen != len - 5) {
        n->bad++;
        respond_grpc(s, 3, why);
        return;
    }
    enum codec codec = CODEC_NONE;
    if (b[0] == 1) {
        const char *enc = http_request_header(req, "grpc-encoding");
        if (enc == NULL || codec_parse(enc, strlen(enc), &codec) != 0 || codec == CODEC_NONE) {
            n->bad++;
            respond_grpc(s, 12, "unsupported grpc-encoding");
            return;
        }
    }
    if (count_body(n, signal, codec, b + 5, mlen, &why) != 0) {
        respond_grpc(s, 3, why);
        return;
    }
    respond_grpc(s, 0, NULL);
}

static void handle_http(struct nullup *n, struct http_stream *s, const struct http_request *req,
                        enum otlp_signal signal)
{
    if (req->version == 20) {
        n->h2_plain++;
    } else {
        n->http1++;
    }
    const char *ct = http_request_header(req, "content-type");
    bool json = ct != NULL && strncmp(ct, "application/json", 16) == 0;
    const char *rtype = json ? "application/json" : "application/x-protobuf";
    const char *enc = http_request_header(req, "content-encoding");
    enum codec codec = CODEC_NONE;
    if (enc != NULL && codec_parse(enc, strlen(enc), &codec) != 0) {
        n->bad++;
        respond_simple(s, 415, "text/plain", "unsupported content-encoding\n");
        return;
    }
    if (json) {
        /* The agent forwards protobuf; JSON is only counted as a request. */
        bool scan = n->scan;
        n->scan = false;
        const char *why;
        count_body(n, signal, codec, req->body.data, req->body.len, &why);
        n->scan = scan;
        respond_simple(s, 200, rtype, "{}");
        return;
    }
    const char *why = NULL;
    if (count_body(n, signal, codec, req->body.data, req->body.len, &why) != 0) {
        respond_simple(s, 400, "text/plain", why);
        return;
    }
    respond_simple(s, 200, rtype, "");
}

static void on_request(void *userdata, struct http_stream *s, const struct http_request *req)
{
    struct nullup *n = userdata;
    if (req->body_too_large) {
        n->bad++;
        respond_simple(s, 413, "text/plain", "too large\n");
        return;
    }
    if (strcmp(req->method, "GET") == 0 && strcmp(req->path, "/stats") == 0) {
        struct buf b;
        buf_init(&b, 1 << 16);
        if (stats_json(n, &b) != 0 || buf_terminate(&b) != 0) {
            respond_simple(s, 500, "text/plain", "out of memory\n");
        } else {
            respond_simple(s, 200, "application/json", (const char *)b.data);
        }
        buf_cleanup(&b);
        return;
    }
    enum otlp_signal signal;
    const char *ct = http_request_header(req, "content-type");
    if (req->version == 20 && ct != NULL && strncmp(ct, "application/grpc", 16) == 0) {
        if (strcmp(req->method, "POST") != 0 || !grpc_path_signal(req->path, &signal)) {
            n->not_found++;
            respond_grpc(s, 12, "unknown method");
            return;
        }
        handle_grpc(n, s, req, signal);
        return;
    }
    if (strcmp(req->method, "POST") == 0 && http_path_signal(req->path, &signal)) {
        handle_http(n, s, req, signal);
        return;
    }
    n->not_found++;
    respond_simple(s, 404, "text/plain", "not found\n");
}

static void stop(struct nullup *n)
{
    if (n->stopping) {
        return;
    }
    n->stopping = true;
    http_server_free(n->srv);
    n->srv = NULL;
    uv_close((uv_handle_t *)&n->sigterm, NULL);
    uv_close((uv_handle_t *)&n->sigint, NULL);
    uv_close((uv_handle_t *)&n->sigusr1, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct nullup *n = h->data;
    if (signum == SIGUSR1) {
        print_stats(n, stderr);
        return;
    }
    stop(n);
}

static int write_ready_file(const char *path, uint16_t port)
{
    char tmp[4096];
    int w = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (w < 0 || (size_t)w >= sizeof(tmp)) {
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "{\"pid\":%ld,\"port\":%u}\n", (long)getpid(), (unsigned)port);
    if (fclose(f) != 0) {
        unlink(tmp);
        return -1;
    }
    return rename(tmp, path);
}

static void usage(FILE *f)
{
    fputs(
        "usage: dlotel-nullup [--listen HOST:PORT] [--ready-file PATH] [--count MODE]\n"
        "  --listen HOST:PORT   default 127.0.0.1:0 (a free port, printed and in the ready file)\n"
        "  --ready-file PATH    once listening, write {\"pid\",\"port\"} here\n"
        "  --count fast|full|none  how items are counted after decompression: fast (default)\n"
        "                       walks only down to the items; full validates with otlp_scan()\n"
        "                       and cross-checks (count_mismatch); none counts requests and\n"
        "                       bytes only, without decompressing\n"
        "  GET /stats           the counters as JSON; SIGUSR1 prints them on stderr, and\n"
        "                       SIGTERM/SIGINT prints them on stdout before exiting\n",
        f);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0";
    const char *ready = NULL;
    static struct nullup n;
    n.scan = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--count") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "none") == 0) {
                n.scan = false;
            } else if (strcmp(v, "full") == 0) {
                n.full_scan = true;
            } else if (strcmp(v, "fast") != 0) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(a, "--listen") == 0 && i + 1 < argc) {
            listen = argv[++i];
        } else if (strcmp(a, "--ready-file") == 0 && i + 1 < argc) {
            ready = argv[++i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    char host[256];
    const char *colon = strrchr(listen, ':');
    size_t hl = colon != NULL ? (size_t)(colon - listen) : 0;
    if (colon == NULL || hl == 0 || hl >= sizeof(host)) {
        fprintf(stderr, "dlotel-nullup: --listen: expected HOST:PORT\n");
        return 2;
    }
    memcpy(host, listen, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port > 65535) {
        fprintf(stderr, "dlotel-nullup: --listen: bad port\n");
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LEVEL_WARN);
    buf_init(&n.scratch, DECODED_MAX);
    n.loop = uv_default_loop();
    struct http_listen_options o = {
        .name = "nullup",
        .host = host,
        .port = (uint16_t)port,
        .http1 = true,
        .http2 = true,
        .max_body = DECODED_MAX,
        .max_connections = 4096,
        .idle_timeout_ms = 600000,
        .handler = on_request,
        .userdata = &n,
    };
    int rc = http_server_new(&n.srv, n.loop, &o);
    if (rc != 0) {
        fprintf(stderr, "dlotel-nullup: cannot listen on %s: %s\n", listen, dlotel_strerror(rc));
        return 1;
    }
    uint16_t bound = http_server_port(n.srv);
    uv_signal_init(n.loop, &n.sigterm);
    uv_signal_init(n.loop, &n.sigint);
    uv_signal_init(n.loop, &n.sigusr1);
    n.sigterm.data = n.sigint.data = n.sigusr1.data = &n;
    uv_signal_start(&n.sigterm, on_signal, SIGTERM);
    uv_signal_start(&n.sigint, on_signal, SIGINT);
    uv_signal_start(&n.sigusr1, on_signal, SIGUSR1);
    fprintf(stderr, "dlotel-nullup: listening on %s:%u\n", host, (unsigned)bound);
    if (ready != NULL && write_ready_file(ready, bound) != 0) {
        fprintf(stderr, "dlotel-nullup: cannot write %s: %s\n", ready, strerror(errno));
        stop(&n);
        uv_run(n.loop, UV_RUN_DEFAULT);
        return 1;
    }
    uv_run(n.loop, UV_RUN_DEFAULT);
    print_stats(&n, stdout);
    buf_cleanup(&n.scratch);
    uv_loop_close(n.loop);
    return 0;
}
