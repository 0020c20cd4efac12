/*
 * dlotel-loadgen: an OTLP load generator for the benchmarks (bench/, docs/benchmarks.md).
 *
 * It sends one payload file (an Export*ServiceRequest made by the OpenTelemetry JS SDK's own
 * serializers) over OTLP/HTTP (HTTP/1.1, keep-alive, optional pipelining) or OTLP/gRPC (HTTP/2
 * with prior knowledge, several streams per connection), from one thread on epoll, and reports
 * requests/s, items/s and latency percentiles as JSON.
 *
 * Two modes:
 *
 * - Closed loop (the default): every connection keeps --depth requests in flight; the next is sent
 *   as soon as a response arrives. This finds the maximum throughput. Latency is measured from
 *   the moment a request is handed to the socket.
 * - Open loop (--rate R): requests are scheduled at fixed intervals of 1/R seconds whatever the
 *   server does. A request that cannot go out on time (every connection slot busy) waits in a
 *   backlog, and its latency is measured from its *scheduled* time, so a stalled server shows up
 *   as latency instead of silently lowering the send rate ("coordinated omission").
 *
 * Why it is fast enough: request bytes are formatted once; HTTP/1.1 sends them with writev from
 * the preformatted header and the payload, and gRPC hands the payload to nghttp2 with
 * NGHTTP2_DATA_FLAG_NO_COPY so DATA frames are written from it directly. One core drives several
 * GB/s over loopback this way; the agent, not the generator, is the bottleneck.
 *
 * --unique-ids rewrites the trace and span ids of every request (XOR with a sequence number, the
 * same for all spans of a request so parent links and traces stay intact), so that a sink filled
 * with millions of spans holds millions of distinct traces, not the payload's 32 over and over.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <nghttp2/nghttp2.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/compress.h"
#include "dlotel.h"
#include "hist.h"
#include "otlp/otlp.h"

#define MAX_CONNECTIONS 1024
#define MAX_DEPTH       128
#define READ_CHUNK      (64 << 10)
/* Output a connection may have queued before nghttp2 is asked for more frames. */
#define OUT_HIGH_WATER (1 << 20)
/* Scheduled requests waiting for a free slot in open loop; past it they are counted as missed. */
#define BACKLOG_MAX (1u << 22)
#define PAYLOAD_MAX ((size_t)64 << 20)

enum proto { PROTO_HTTP, PROTO_GRPC };

/* ---- options --------------------------------------------------------------------------------- */

struct options {
    const char *target; /* HOST:PORT */
    enum proto proto;
    const char *payload_path;
    bool signal_given;
    enum otlp_signal signal;
    enum codec codec;
    unsigned connections;
    unsigned depth;
    double duration_s;
    double warmup_s;
    double rate;           /* Requests per second; 0 is closed loop. */
    double items_rate;     /* --items-rate: turned into |rate| once the payload is counted. */
    uint64_t max_requests; /* 0: run for the duration. */
    double drain_s;        /* How long to wait for in-flight requests at the end. */
    bool unique_ids;
    bool json;
    bool quiet;
};

/* ---- the payload ----------------------------------------------------------------------------- */

struct payload {
    enum otlp_signal signal;
    bool json;    /* OTLP/JSON body (HTTP only). */
    uint8_t *raw; /* The file as read (protobuf or JSON). */
    size_t raw_len;
    uint8_t *body; /* What goes on the wire as the HTTP body: raw, or raw compressed. */
    size_t body_len;
    uint8_t *grpc; /* The gRPC message: 5-byte prefix + body. */
    size_t grpc_len;
    char *http_head; /* "POST /v1/... HTTP/1.1\r\n...\r\n\r\n" */
    size_t http_head_len;
    const char *http_path;
    const char *grpc_path;
    uint64_t items;
    /* Offsets into raw of 16-byte trace ids and 8-byte span ids (--unique-ids). */
    uint32_t *trace_offs;
    size_t n_trace;
    uint32_t *span_offs;
    size_t n_span;
};

/* ---- connections and requests ---------------------------------------------------------------- */

struct seg {
    const uint8_t *p;
    size_t len;
    uint8_t *owned; /* Freed once written; NULL when p points at payload memory. */
};

struct outq {
    struct seg *v;
    size_t head;
    size_t n;
    size_t cap;
    size_t bytes;
};

struct conn;

struct req {
    struct conn *c;
    uint64_t sched_ns; /* When it was due (open loop) or sent (closed loop). */
    uint8_t *buf;      /* A private body copy with rewritten ids, or NULL for the payload. */
    size_t src_len;    /* gRPC: bytes of the message handed to nghttp2 so far. */
    int status;        /* HTTP status. */
    int grpc_status;   /* -1 until seen. */
    struct req *next_free;
};

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_OPEN };

struct conn {
    struct lg *g;
    unsigned idx;
    int fd;
    enum conn_state state;
    struct outq out;
    bool want_out; /* EPOLLOUT registered. */
    unsigned inflight;
    /* HTTP/1.1: responses come back in order, so in-flight requests are a FIFO. */
    struct req *fifo[MAX_DEPTH];
    unsigned fifo_head;
    llhttp_t parser;
    /* gRPC */
    nghttp2_session *h2;
    uint64_t retry_at_ns; /* Reconnect not before this (after a failure). */
};

struct stats {
    uint64_t ok;
    uint64_t failed;
    uint64_t ok_items;
    uint64_t bytes;
    struct hist lat;
};

struct lg {
    struct options o;
    struct payload pl;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char authority[300];
    int ep;
    int tfd;
    uint64_t tfd_armed;
    struct conn *conns;
    /* Request records and (with --unique-ids) body copies: one per slot, never reallocated. */
    struct req *reqs;
    struct req *free_reqs;
    uint64_t seq;

    uint64_t t0;           /* Start. */
    uint64_t measure_from; /* t0 + warmup */
    uint64_t issue_until;  /* measure_from + duration (no limit with --requests). */
    uint64_t interval_ns;  /* Open loop. */
    uint64_t next_sched;
    uint64_t *backlog; /* Ring of scheduled times. */
    size_t bl_head;
    size_t bl_n;
    unsigned rr; /* Round-robin cursor over connections. */

    uint64_t issued;
    uint64_t missed; /* Open loop: scheduled but dropped because the backlog was full. */
    uint64_t connect_errors;
    uint64_t conn_resets;
    bool stop_issuing;
    uint64_t status_http[600];
    uint64_t status_grpc[18]; /* [17]: no grpc-status at all. */
    struct stats total;
    struct stats window;
    uint64_t last_done_ns;
    char last_error[256];
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("dlotel-loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void note_error(struct lg *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note_error(struct lg *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->last_error, sizeof(g->last_error), fmt, ap);
    va_end(ap);
    if (!g->o.quiet) {
        fprintf(stderr, "dlotel-loadgen: %s\n", g->last_error);
    }
}

/* ---- argument parsing ------------------------------------------------------------------------ */

static double parse_double(const char *flag, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(d >= lo && d <= hi)) {
        die("%s: expected a number from %g to %g, got '%s'", flag, lo, hi, v);
    }
    return d;
}

static uint64_t parse_u64(const char *flag, const char *v, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n < lo || n > hi) {
        die("%s: expected an integer from %" PRIu64 " to %" PRIu64 ", got '%s'", flag, lo, hi, v);
    }
    return n;
}

static void usage(FILE *f)
{
    fputs("usage: dlotel-loadgen --target HOST:PORT --payload FILE [options]\n"
          "  --proto http|grpc       OTLP/HTTP (HTTP/1.1) or OTLP/gRPC (h2c); default http\n"
          "  --signal traces|metrics|logs  default: guessed from the file name\n"
          "  --connections N         default 4\n"
          "  --depth N               requests in flight per connection (HTTP/1.1 pipelining,\n"
          "                          gRPC streams); default 1\n"
          "  --duration SECONDS      measured time; default 10\n"
          "  --warmup SECONDS        unmeasured time before it; default 0\n"
          "  --rate R                open loop: R requests/s at fixed intervals (latency from the\n"
          "                          scheduled time); default closed loop\n"
          "  --items-rate R          open loop, in items/s (spans, log records, data points)\n"
          "  --requests N            send exactly N requests (after which it drains and stops)\n"
          "  --compress none|gzip|zstd  compress the body once, send it with Content-Encoding\n"
          "  --unique-ids            new trace and span ids in every request (traces, logs)\n"
          "  --drain SECONDS         wait this long for in-flight requests at the end; default 10\n"
          "  --json                  print the summary as JSON\n"
          "  --quiet                 no progress or error lines on stderr\n",
          f);
}

static void parse_args(struct options *o, int argc, char **argv)
{
    *o = (struct options){
        .proto = PROTO_HTTP,
        .connections = 4,
        .depth = 1,
        .duration_s = 10,
        .drain_s = 10,
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (strcmp(a, "--unique-ids") == 0) {
            o->unique_ids = true;
            continue;
        }
        if (i + 1 >= argc) {
            die("%s needs a value (see --help)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--target") == 0) {
            o->target = v;
        } else if (strcmp(a, "--proto") == 0) {
            if (strcmp(v, "http") == 0) {
                o->proto = PROTO_HTTP;
            } else if (strcmp(v, "grpc") == 0) {
                o->proto = PROTO_GRPC;
            } else {
                die("--proto: expected http or grpc, got '%s'", v);
            }
        } else if (strcmp(a, "--payload") == 0) {
            o->payload_path = v;
        } else if (strcmp(a, "--signal") == 0) {
            if (otlp_signal_parse(v, strlen(v), &o->signal) != 0) {
                die("--signal: expected traces, metrics or logs, got '%s'", v);
            }
            o->signal_given = true;
        } else if (strcmp(a, "--connections") == 0) {
            o->connections = (unsigned)parse_u64(a, v, 1, MAX_CONNECTIONS);
        } else if (strcmp(a, "--depth") == 0) {
            o->depth = (unsigned)parse_u64(a, v, 1, MAX_DEPTH);
        } else if (strcmp(a, "--duration") == 0) {
            o->duration_s = parse_double(a, v, 0.001, 86400);
        } else if (strcmp(a, "--warmup") == 0) {
            o->warmup_s = parse_double(a, v, 0, 86400);
        } else if (strcmp(a, "--rate") == 0) {
            o->rate = parse_double(a, v, 0.001, 1e7);
        } else if (strcmp(a, "--items-rate") == 0) {
            o->items_rate = parse_double(a, v, 0.001, 1e10);
        } else if (strcmp(a, "--requests") == 0) {
            o->max_requests = parse_u64(a, v, 1, UINT64_MAX / 2);
        } else if (strcmp(a, "--drain") == 0) {
            o->drain_s = parse_double(a, v, 0, 3600);
        } else if (strcmp(a, "--compress") == 0) {
            if (strcmp(v, "none") == 0) {
                o->codec = CODEC_NONE;
            } else if (codec_parse(v, strlen(v), &o->codec) != 0) {
                die("--compress: expected none, gzip or zstd, got '%s'", v);
            }
        } else {
            die("unknown option '%s' (see --help)", a);
        }
    }
    if (o->target == NULL || o->payload_path == NULL) {
        usage(stderr);
        exit(2);
    }
    if (o->rate > 0 && o->items_rate > 0) {
        die("give --rate or --items-rate, not both");
    }
    if (o->unique_ids && o->codec != CODEC_NONE) {
        die("--unique-ids rewrites every request, so it cannot send a body compressed once");
    }
}

/* ---- payload preparation --------------------------------------------------------------------- */

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        die("cannot open %s: %s", path, strerror(errno));
    }
    struct buf b;
    buf_init(&b, PAYLOAD_MAX);
    uint8_t chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&b, chunk, n) != 0) {
            die("%s is larger than %zu bytes", path, PAYLOAD_MAX);
        }
    }
    if (ferror(f)) {
        die("cannot read %s", path);
    }
    fclose(f);
    uint8_t *p = buf_take(&b, len);
    if (p == NULL) {
        die("%s is empty", path);
    }
    return p;
}

/* A protobuf reader just good enough to find id fields in a request we already validated. */
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

/* Skips a field's value of |wire| type. Returns false on malformed input. */
static bool pb_skip(struct pbr *r, unsigned wire)
{
    uint64_t v;
    switch (wire) {
    case 0:
        return pb_varint(r, &v);
    case 1:
        if (r->end - r->p < 8) {
            return false;
        }
        r->p += 8;
        return true;
    case 2:
        if (!pb_varint(r, &v) || v > (uint64_t)(r->end - r->p)) {
            return false;
        }
        r->p += v;
        return true;
    case 5:
        if (r->end - r->p < 4) {
            return false;
        }
        r->p += 4;
        return true;
    default:
        return false;
    }
}

struct id_offsets {
    struct payload *pl;
    size_t cap_trace;
    size_t cap_span;
};

static void push_off(uint32_t **v, size_t *n, size_t *cap, size_t off)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        uint32_t *nv = realloc(*v, ncap * sizeof(*nv));
        if (nv == NULL) {
            die("out of memory");
        }
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = (uint32_t)off;
}

/*
 * The message path down to the record that holds ids, and the id field numbers there:
 * traces: request.1 ResourceSpans .2 ScopeSpans .2 Span {1 trace_id, 2 span_id, 4 parent_span_id,
 * 13 links {1 trace_id, 2 span_id}}; logs: request.1 .2 .2 LogRecord {9 trace_id, 10 span_id}.
 */
static void find_ids(struct id_offsets *io, const uint8_t *base, const uint8_t *p, size_t len,
                     int depth, bool in_link)
{
    struct payload *pl = io->pl;
    struct pbr r = {p, p + len};
    while (r.p < r.end) {
        uint64_t key;
        if (!pb_varint(&r, &key)) {
            die("payload: malformed protobuf");
        }
        unsigned field = (unsigned)(key >> 3), wire = (unsigned)(key & 7);
        if (wire != 2) {
            if (!pb_skip(&r, wire)) {
                die("payload: malformed protobuf");
            }
            continue;
        }
        uint64_t n;
        if (!pb_varint(&r, &n) || n > (uint64_t)(r.end - r.p)) {
            die("payload: malformed protobuf");
        }
        const uint8_t *v = r.p;
        r.p += n;
        size_t off = (size_t)(v - base);
        bool trace = pl->signal == OTLP_TRACES;
        if (depth < 3) {
            /* request.1, Resource*.2, Scope*.2 */
            if ((depth == 0 && field == 1) || (depth > 0 && field == 2)) {
                find_ids(io, base, v, n, depth + 1, false);
            }
            continue;
        }
        unsigned f_trace = trace ? 1 : 9, f_span = trace ? 2 : 10;
        if (field == f_trace && n == 16) {
            push_off(&pl->trace_offs, &pl->n_trace, &io->cap_trace, off);
        } else if ((field == f_span || (trace && !in_link && field == 4)) && n == 8) {
            push_off(&pl->span_offs, &pl->n_span, &io->cap_span, off);
        } else if (trace && !in_link && field == 13) {
            find_ids(io, base, v, n, depth, true);
        }
    }
}

static void build_payload(struct lg *g)
{
    struct options *o = &g->o;
    struct payload *pl = &g->pl;
    pl->raw = read_file(o->payload_path, &pl->raw_len);
    if (o->signal_given) {
        pl->signal = o->signal;
    } else if (strstr(o->payload_path, "trace") != NULL) {
        pl->signal = OTLP_TRACES;
    } else if (strstr(o->payload_path, "log") != NULL) {
        pl->signal = OTLP_LOGS;
    } else if (strstr(o->payload_path, "metric") != NULL) {
        pl->signal = OTLP_METRICS;
    } else {
        die("cannot tell the signal from the file name %s: give --signal", o->payload_path);
    }
    size_t plen = strlen(o->payload_path);
    pl->json = plen > 5 && strcmp(o->payload_path + plen - 5, ".json") == 0;

    /* Count items with the agent's own scanner, so the figures match what the agent counts. */
    struct otlp_counts counts;
    struct otlp_error err = {0};
    if (pl->json) {
        if (o->proto == PROTO_GRPC) {
            die("gRPC carries protobuf: give a .pb payload");
        }
        if (o->unique_ids) {
            die("--unique-ids needs a protobuf payload");
        }
        struct arena arena;
        struct buf pb;
        char msg[256];
        arena_init(&arena, (size_t)512 << 20);
        buf_init(&pb, PAYLOAD_MAX);
        if (otlp_json_to_pb(pl->signal, (const char *)pl->raw, pl->raw_len, &arena, &pb, msg,
                            sizeof(msg)) != 0) {
            die("%s: not OTLP/JSON for %s: %s", o->payload_path, otlp_signal_name(pl->signal), msg);
        }
        if (otlp_scan(pl->signal, pb.data, pb.len, &counts, &err) != 0) {
            die("%s: converted request does not scan: %s", o->payload_path, err.message);
        }
        buf_cleanup(&pb);
        arena_cleanup(&arena);
    } else if (otlp_scan(pl->signal, pl->raw, pl->raw_len, &counts, &err) != 0) {
        die("%s: not an OTLP %s request: %s at byte %zu", o->payload_path,
            otlp_signal_name(pl->signal), err.message ? err.message : "?", err.offset);
    }
    pl->items = counts.items;

    if (o->unique_ids) {
        if (pl->signal == OTLP_METRICS) {
            die("--unique-ids applies to traces and logs");
        }
        struct id_offsets io = {.pl = pl};
        find_ids(&io, pl->raw, pl->raw, pl->raw_len, 0, false);
    }

    if (o->codec != CODEC_NONE) {
        struct buf z;
        buf_init(&z, PAYLOAD_MAX);
        if (codec_compress(o->codec, pl->raw, pl->raw_len, 0, &z) != 0) {
            die("cannot compress the payload");
        }
        pl->body = buf_take(&z, &pl->body_len);
    } else {
        pl->body = pl->raw;
        pl->body_len = pl->raw_len;
    }

    static const char *const http_paths[] = {"/v1/traces", "/v1/metrics", "/v1/logs"};
    static const char *const grpc_paths[] = {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    };
    pl->http_path = http_paths[pl->signal];
    pl->grpc_path = grpc_paths[pl->signal];

    struct buf h;
    buf_init(&h, 4096);
    int rc = buf_printf(&h,
                        "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dlotel-loadgen\r\n"
                        "Content-Type: %s\r\nContent-Length: %zu\r\n",
                        pl->http_path, g->authority,
                        pl->json ? "application/json" : "application/x-protobuf", pl->body_len);
    if (rc == 0 && o->codec != CODEC_NONE) {
        rc = buf_printf(&h, "Content-Encoding: %s\r\n", codec_name(o->codec));
    }
    if (rc == 0) {
        rc = buf_printf(&h, "\r\n");
    }
    if (rc != 0) {
        die("out of memory");
    }
    pl->http_head = (char *)buf_take(&h, &pl->http_head_len);

    if (pl->body_len > UINT32_MAX) {
        die("payload too large for gRPC");
    }
    pl->grpc_len = 5 + pl->body_len;
    pl->grpc = malloc(pl->grpc_len);
    if (pl->grpc == NULL) {
        die("out of memory");
    }
    pl->grpc[0] = o->codec != CODEC_NONE ? 1 : 0;
    uint32_t n = (uint32_t)pl->body_len;
    pl->grpc[1] = (uint8_t)(n >> 24);
    pl->grpc[2] = (uint8_t)(n >> 16);
    pl->grpc[3] = (uint8_t)(n >> 8);
    pl->grpc[4] = (uint8_t)n;
    memcpy(pl->grpc + 5, pl->body, pl->body_len);
}

/*
 * Writes the payload's ids XOR |seq| into |dst|, a copy of the body (HTTP) or gRPC message whose
 * protobuf starts at |dst + skew|. The same XOR for every span keeps traces and parent links.
 */
static void rewrite_ids(const struct payload *pl, uint8_t *dst, size_t skew, uint64_t seq)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++) {
        x[i] = (uint8_t)(seq >> (8 * i));
    }
    for (size_t i = 0; i < pl->n_trace; i++) {
        size_t off = pl->trace_offs[i];
        for (int k = 0; k < 8; k++) {
            dst[skew + off + k] = pl->raw[off + k] ^ x[k];
        }
    }
    for (size_t i = 0; i < pl->n_span; i++) {
        size_t off = pl->span_offs[i];
        for (int k = 0; k < 8; k++) {
            dst[skew + off + k] = pl->raw[off + k] ^ x[k];
        }
    }
}

/* ---- output queue ---------------------------------------------------------------------------- */

static void outq_push(struct outq *q, const uint8_t *p, size_t len, uint8_t *owned)
{
    if (len == 0) {
        free(owned);
        return;
    }
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        struct seg *v = malloc(ncap * sizeof(*v));
        if (v == NULL) {
            die("out of memory");
        }
        for (size_t i = 0; i < q->n; i++) {
            v[i] = q->v[(q->head + i) % q->cap];
        }
        free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = ncap;
    }
    q->v[(q->head + q->n) % q->cap] = (struct seg){p, len, owned};
    q->n++;
    q->bytes += len;
}

static void outq_push_copy(struct outq *q, const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len);
    if (c == NULL) {
        die("out of memory");
    }
    memcpy(c, p, len);
    outq_push(q, c, len, c);
}

static void outq_clear(struct outq *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->v[(q->head + i) % q->cap].owned);
    }
    q->head = 0;
    q->n = 0;
    q->bytes = 0;
}

/* Writes as much as the socket takes. Returns 0, or -1 with errno on a socket error. */
static int outq_flush(struct outq *q, int fd)
{
    while (q->n > 0) {
        struct iovec iov[64];
        int cnt = 0;
        for (size_t i = 0; i < q->n && cnt < 64; i++) {
            struct seg *s = &q->v[(q->head + i) % q->cap];
            iov[cnt].iov_base = (void *)s->p;
            iov[cnt].iov_len = s->len;
            cnt++;
        }
        ssize_t w = writev(fd, iov, cnt);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return -1;
        }
        size_t left = (size_t)w;
        q->bytes -= left;
        while (left > 0) {
            struct seg *s = &q->v[q->head];
            if (left >= s->len) {
                left -= s->len;
                free(s->owned);
                q->head = (q->head + 1) % q->cap;
                q->n--;
            } else {
                s->p += left;
                s->len -= left;
                left = 0;
            }
        }
    }
    return 0;
}

/* ---- accounting ------------------------------------------------------------------------------ */

static struct req *req_get(struct lg *g)
{
    struct req *r = g->free_reqs;
    g->free_reqs = r->next_free;
    return r;
}

static void req_put(struct lg *g, struct req *r)
{
    r->next_free = g->free_reqs;
    g->free_reqs = r;
}

/* Records the end of |r|: |ok| and a completed exchange, or a failure (no response). */
static void req_done(struct lg *g, struct req *r, bool ok, uint64_t t)
{
    uint64_t lat = t > r->sched_ns ? t - r->sched_ns : 0;
    bool in_window = t >= g->measure_from && (g->o.max_requests > 0 || t <= g->issue_until);
    struct stats *ss[2] = {&g->total, in_window ? &g->window : NULL};
    for (int i = 0; i < 2; i++) {
        struct stats *s = ss[i];
        if (s == NULL) {
            continue;
        }
        if (ok) {
            s->ok++;
            s->ok_items += g->pl.items;
            s->bytes += g->o.proto == PROTO_GRPC ? g->pl.grpc_len : g->pl.body_len;
            hist_record(&s->lat, lat);
        } else {
            s->failed++;
        }
    }
    g->last_done_ns = t;
    r->c->inflight--;
    r->c = NULL;
    req_put(g, r);
}

/* ---- connections ----------------------------------------------------------------------------- */

static void conn_close(struct conn *c, const char *why);
static void conn_update_events(struct conn *c);
static int h2_pump(struct conn *c);

static int h1_on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct lg *g = c->g;
    if (c->inflight == 0) {
        note_error(g, "connection %u: a response nobody asked for", c->idx);
        return HPE_USER;
    }
    struct req *r = c->fifo[c->fifo_head];
    c->fifo_head = (c->fifo_head + 1) % MAX_DEPTH;
    int st = llhttp_get_status_code(p);
    if (st >= 0 && st < 600) {
        g->status_http[st]++;
    }
    r->status = st;
    req_done(g, r, st >= 200 && st < 300, now_ns());
    if (!llhttp_should_keep_alive(p)) {
        /* Handled after llhttp_execute returns: pause here so nothing more is parsed. */
        return HPE_PAUSED;
    }
    return HPE_OK;
}

static llhttp_settings_t h1_settings;

static ssize_t h2_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *src, void *user)
{
    (void)s;
    (void)stream_id;
    (void)buf;
    struct conn *c = user;
    struct req *r = src->ptr;
    size_t left = c->g->pl.grpc_len - r->src_len;
    size_t n = left < length ? left : length;
    r->src_len += n;
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (r->src_len == c->g->pl.grpc_len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* DATA frames go out from the payload itself: the 9-byte frame header is the only copy. */
static int h2_send_data_cb(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                           size_t length, nghttp2_data_source *src, void *user)
{
    (void)s;
    struct conn *c = user;
    struct req *r = src->ptr;
    const uint8_t *base = r->buf != NULL ? r->buf : c->g->pl.grpc;
    size_t start = r->src_len - length; /* h2_read_cb already advanced src_len. */
    outq_push_copy(&c->out, framehd, 9);
    if (frame->data.padlen > 0) {
        die("unexpected padding");
    }
    outq_push(&c->out, base + start, length, NULL);
    return 0;
}

static ssize_t h2_read_length_cb(nghttp2_session *s, uint8_t frame_type, int32_t stream_id,
                                 int32_t session_window, int32_t stream_window,
                                 uint32_t remote_max_frame, void *user)
{
    (void)s;
    (void)frame_type;
    (void)stream_id;
    (void)user;
    int32_t n = session_window < stream_window ? session_window : stream_window;
    if ((uint32_t)n > remote_max_frame) {
        n = (int32_t)remote_max_frame;
    }
    return n > 0 ? n : 1;
}

static int h2_on_header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                           size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                           void *user)
{
    (void)flags;
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct req *r = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (r == NULL) {
        return 0;
    }
    int v = 0;
    bool digits = valuelen > 0 && valuelen < 6;
    for (size_t i = 0; digits && i < valuelen; i++) {
        if (value[i] < '0' || value[i] > '9') {
            digits = false;
        } else {
            v = v * 10 + (value[i] - '0');
        }
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        r->status = digits ? v : -1;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        r->grpc_status = digits ? v : 16;
    }
    return 0;
}

static int h2_on_stream_close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                                 void *user)
{
    struct conn *c = user;
    struct lg *g = c->g;
    struct req *r = nghttp2_session_get_stream_user_data(s, stream_id);
    if (r == NULL) {
        return 0;
    }
    nghttp2_session_set_stream_user_data(s, stream_id, NULL);
    if (r->status > 0 && r->status < 600) {
        g->status_http[r->status]++;
    }
    if (r->grpc_status >= 0 && r->grpc_status <= 16) {
        g->status_grpc[r->grpc_status]++;
    } else {
        g->status_grpc[17]++;
    }
    bool ok = error_code == NGHTTP2_NO_ERROR && r->status == 200 && r->grpc_status == 0;
    if (!ok && error_code != NGHTTP2_NO_ERROR) {
        note_error(g, "stream reset: %s", nghttp2_http2_strerror(error_code));
    }
    req_done(g, r, ok, now_ns());
    return 0;
}

static void conn_start(struct conn *c);

static void conn_reset_later(struct conn *c, const char *why)
{
    c->g->conn_resets++;
    conn_close(c, why);
    c->retry_at_ns = now_ns() + 10 * 1000000u;
}

static void conn_setup_open(struct conn *c)
{
    struct lg *g = c->g;
    c->state = CONN_OPEN;
    c->fifo_head = 0;
    if (g->o.proto == PROTO_HTTP) {
        llhttp_init(&c->parser, HTTP_RESPONSE, &h1_settings);
        c->parser.data = c;
        return;
    }
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_data_callback(cbs, h2_send_data_cb);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, h2_read_length_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close_cb);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* Until the server's SETTINGS arrive, assume the RFC's suggested minimum of 100 streams. */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    int rc = nghttp2_session_client_new2(&c->h2, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) {
        die("nghttp2: %s", nghttp2_strerror(rc));
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
}

static void conn_start(struct conn *c)
{
    struct lg *g = c->g;
    int fd = socket(g->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->inflight = 0;
    int rc = connect(fd, (struct sockaddr *)&g->addr, g->addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
        g->connect_errors++;
        note_error(g, "connect: %s", strerror(errno));
        close(fd);
        c->fd = -1;
        c->state = CONN_IDLE;
        c->retry_at_ns = now_ns() + 100 * 1000000u;
        return;
    }
    c->state = CONN_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->want_out = true;
    if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        die("epoll_ctl: %s", strerror(errno));
    }
    if (rc == 0) {
        conn_setup_open(c);
    }
}

/* Fails every request in flight on |c|, closes the socket and frees the protocol state. */
static void conn_close(struct conn *c, const char *why)
{
    struct lg *g = c->g;
    if (c->fd < 0) {
        return;
    }
    if (why != NULL) {
        note_error(g, "connection %u closed: %s", c->idx, why);
    }
    epoll_ctl(g->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    outq_clear(&c->out);
    uint64_t t = now_ns();
    if (g->o.proto == PROTO_HTTP) {
        while (c->inflight > 0) {
            struct req *r = c->fifo[c->fifo_head];
            c->fifo_head = (c->fifo_head + 1) % MAX_DEPTH;
            req_done(g, r, false, t);
        }
    } else if (c->h2 != NULL) {
        /* nghttp2_session_del() calls no stream-close callbacks: fail our records here. */
        for (size_t i = 0; i < (size_t)g->o.connections * g->o.depth; i++) {
            struct req *r = &g->reqs[i];
            if (r->c == c) {
                req_done(g, r, false, t);
            }
        }
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    c->inflight = 0;
    c->state = CONN_IDLE;
}

static void conn_update_events(struct conn *c)
{
    if (c->fd < 0) {
        return;
    }
    bool want = c->out.n > 0 || c->state == CONN_CONNECTING;
    if (want == c->want_out) {
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(c->g->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

/* Pulls frames from nghttp2 into the output queue until it has nothing or the queue is full. */
static int h2_pump(struct conn *c)
{
    while (c->out.bytes < OUT_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            note_error(c->g, "nghttp2: %s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) {
            break;
        }
        outq_push_copy(&c->out, data, (size_t)n);
    }
    return 0;
}

static bool conn_has_slot(const struct conn *c)
{
    return c->state == CONN_OPEN && c->inflight < c->g->o.depth;
}

/* Hands one request scheduled at |sched| to |c|. */
static void conn_send(struct conn *c, uint64_t sched)
{
    struct lg *g = c->g;
    const struct payload *pl = &g->pl;
    struct req *r = req_get(g);
    r->c = c;
    r->sched_ns = sched;
    r->status = 0;
    r->grpc_status = -1;
    r->src_len = 0;
    uint64_t seq = g->seq++;
    g->issued++;
    c->inflight++;
    if (g->o.proto == PROTO_HTTP) {
        if (r->buf != NULL) {
            rewrite_ids(pl, r->buf, 0, seq);
        }
        c->fifo[(c->fifo_head + c->inflight - 1) % MAX_DEPTH] = r;
        outq_push(&c->out, (const uint8_t *)pl->http_head, pl->http_head_len, NULL);
        outq_push(&c->out, r->buf != NULL ? r->buf : pl->body, pl->body_len, NULL);
    } else {
        if (r->buf != NULL) {
            rewrite_ids(pl, r->buf, 5, seq);
        }
        const char *ct = "application/grpc";
        const char *enc = codec_name(g->o.codec);
#define NV(n, v)                                                                                   \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                                     \
     NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
        nghttp2_nv nva[] = {
            NV(":method", "POST"),
            NV(":scheme", "http"),
            NV(":authority", g->authority),
            NV(":path", pl->grpc_path),
            NV("content-type", ct),
            NV("te", "trailers"),
            NV("user-agent", "dlotel-loadgen"),
            NV("grpc-encoding", enc),
        };
#undef NV
        size_t nvlen = sizeof(nva) / sizeof(nva[0]) - (g->o.codec == CODEC_NONE ? 1 : 0);
        nghttp2_data_provider prd = {.source.ptr = r, .read_callback = h2_read_cb};
        int32_t id = nghttp2_submit_request(c->h2, NULL, nva, nvlen, &prd, r);
        if (id < 0) {
            die("nghttp2_submit_request: %s", nghttp2_strerror(id));
        }
    }
}

/* ---- scheduling ------------------------------------------------------------------------------ */

static bool may_issue(struct lg *g, uint64_t t)
{
    if (g->stop_issuing || interrupted) {
        return false;
    }
    if (g->o.max_requests > 0) {
        return g->issued < g->o.max_requests;
    }
    return t < g->issue_until;
}

/* Sends whatever is due and fits, then flushes every connection with output. */
static void dispatch(struct lg *g, uint64_t t)
{
    unsigned nc = g->o.connections;
    if (g->o.rate > 0) {
        /* Open loop: move every due slot to the backlog, then drain the backlog. */
        while (g->next_sched <= t && may_issue(g, g->next_sched)) {
            if (g->o.max_requests > 0 && g->issued + g->bl_n + g->missed >= g->o.max_requests) {
                break;
            }
            if (g->bl_n == BACKLOG_MAX) {
                g->missed++;
            } else {
                g->backlog[(g->bl_head + g->bl_n) % BACKLOG_MAX] = g->next_sched;
                g->bl_n++;
            }
            g->next_sched += g->interval_ns;
        }
        while (g->bl_n > 0) {
            struct conn *c = NULL;
            for (unsigned k = 0; k < nc; k++) {
                struct conn *cand = &g->conns[(g->rr + k) % nc];
                if (conn_has_slot(cand)) {
                    c = cand;
                    g->rr = (g->rr + k + 1) % nc;
                    break;
                }
            }
            if (c == NULL) {
                break;
            }
            uint64_t s = g->backlog[g->bl_head];
            g->bl_head = (g->bl_head + 1) % BACKLOG_MAX;
            g->bl_n--;
            conn_send(c, s);
        }
    } else {
        for (unsigned k = 0; k < nc; k++) {
            struct conn *c = &g->conns[k];
            while (conn_has_slot(c) && may_issue(g, t)) {
                conn_send(c, t);
            }
        }
    }
    for (unsigned k = 0; k < nc; k++) {
        struct conn *c = &g->conns[k];
        if (c->state == CONN_IDLE && c->fd < 0 && may_issue(g, t) && t >= c->retry_at_ns) {
            conn_start(c);
            continue;
        }
        if (c->state != CONN_OPEN) {
            continue;
        }
        if (c->h2 != NULL && h2_pump(c) != 0) {
            conn_reset_later(c, "HTTP/2 error");
            continue;
        }
        if (c->out.n > 0 && outq_flush(&c->out, c->fd) != 0) {
            conn_reset_later(c, strerror(errno));
            continue;
        }
        conn_update_events(c);
    }
}

static void on_readable(struct conn *c)
{
    struct lg *g = c->g;
    static uint8_t rbuf[READ_CHUNK];
    for (int rounds = 0; rounds < 16 && c->fd >= 0; rounds++) {
        ssize_t n = read(c->fd, rbuf, sizeof(rbuf));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            conn_reset_later(c, strerror(errno));
            return;
        }
        if (n == 0) {
            conn_reset_later(c, c->inflight > 0 ? "closed by the server with requests in flight"
                                                : NULL);
            return;
        }
        if (g->o.proto == PROTO_HTTP) {
            llhttp_errno_t e = llhttp_execute(&c->parser, (const char *)rbuf, (size_t)n);
            if (e == HPE_PAUSED) {
                conn_reset_later(c, "server asked to close the connection");
                return;
            }
            if (e != HPE_OK) {
                conn_reset_later(c, llhttp_errno_name(e));
                return;
            }
        } else {
            ssize_t rc = nghttp2_session_mem_recv(c->h2, rbuf, (size_t)n);
            if (rc < 0) {
                conn_reset_later(c, nghttp2_strerror((int)rc));
                return;
            }
            if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
                conn_reset_later(c, "HTTP/2 session ended (GOAWAY)");
                return;
            }
        }
        if ((size_t)n < sizeof(rbuf)) {
            return;
        }
    }
}

static void on_event(struct conn *c, uint32_t events)
{
    struct lg *g = c->g;
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            g->connect_errors++;
            conn_reset_later(c, strerror(err));
            c->retry_at_ns = now_ns() + 100 * 1000000u;
            return;
        }
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
            return;
        }
        conn_setup_open(c);
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable(c);
    }
    if (c->fd >= 0 && (events & EPOLLOUT) && c->out.n > 0) {
        if (outq_flush(&c->out, c->fd) != 0) {
            conn_reset_later(c, strerror(errno));
        }
    }
}

/* ---- setup and report ------------------------------------------------------------------------ */

static void resolve(struct lg *g)
{
    const char *t = g->o.target;
    const char *colon = strrchr(t, ':');
    if (colon == NULL || colon == t) {
        die("--target: expected HOST:PORT, got '%s'", t);
    }
    char host[256];
    size_t hl = (size_t)(colon - t);
    if (t[0] == '[' && hl >= 2 && t[hl - 1] == ']') {
        t++;
        hl -= 2;
    }
    if (hl >= sizeof(host)) {
        die("--target: host too long");
    }
    memcpy(host, t, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        die("cannot resolve %s: %s", g->o.target, gai_strerror(rc));
    }
    memcpy(&g->addr, res->ai_addr, res->ai_addrlen);
    g->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    snprintf(g->authority, sizeof(g->authority), "%s", g->o.target);
}

static void arm_timer(struct lg *g, uint64_t at)
{
    if (at == g->tfd_armed) {
        return;
    }
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    if (at == 0) {
        its.it_value.tv_nsec = 1;
    }
    timerfd_settime(g->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    g->tfd_armed = at;
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void print_report(struct lg *g, uint64_t end)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    const struct stats *w = &g->window;
    double win_s;
    if (g->o.max_requests > 0) {
        uint64_t last = g->last_done_ns > g->measure_from ? g->last_done_ns : end;
        win_s = (double)(last - g->measure_from) / 1e9;
    } else {
        win_s = (double)(g->issue_until - g->measure_from) / 1e9;
    }
    if (win_s <= 0) {
        win_s = 1e-9;
    }
    uint64_t incomplete = g->issued - g->total.ok - g->total.failed;
    const char *proto = g->o.proto == PROTO_HTTP ? "http" : "grpc";
    if (!g->o.json) {
        printf("%s %s, %u connections x depth %u, %s%s\n", proto, otlp_signal_name(g->pl.signal),
               g->o.connections, g->o.depth, g->o.rate > 0 ? "open loop" : "closed loop",
               g->o.codec != CODEC_NONE ? ", compressed" : "");
        printf("  %.0f req/s, %.0f items/s, %.1f MB/s over %.2f s\n", (double)w->ok / win_s,
               (double)w->ok_items / win_s, (double)w->bytes / win_s / 1e6, win_s);
        printf("  latency us: p50 %.0f  p90 %.0f  p99 %.0f  p999 %.0f  max %.0f\n",
               us(hist_quantile(&w->lat, 0.5)), us(hist_quantile(&w->lat, 0.9)),
               us(hist_quantile(&w->lat, 0.99)), us(hist_quantile(&w->lat, 0.999)), us(w->lat.max));
        printf("  total: %" PRIu64 " issued, %" PRIu64 " ok (%" PRIu64 " items), %" PRIu64
               " failed, %" PRIu64 " incomplete, %" PRIu64 " missed; loadgen cpu %.2f s\n",
               g->issued, g->total.ok, g->total.ok_items, g->total.failed, incomplete, g->missed,
               cpu);
        return;
    }
    printf("{\"proto\":\"%s\",\"signal\":\"%s\",\"payload_bytes\":%zu,\"wire_bytes\":%zu,"
           "\"items_per_request\":%" PRIu64 ",\"compress\":\"%s\",\"mode\":\"%s\","
           "\"rate\":%.3f,\"connections\":%u,\"depth\":%u,\"unique_ids\":%s,\"warmup_s\":%.3f,",
           proto, otlp_signal_name(g->pl.signal), g->pl.raw_len,
           g->o.proto == PROTO_HTTP ? g->pl.body_len : g->pl.grpc_len, g->pl.items,
           g->o.codec == CODEC_NONE ? "none" : codec_name(g->o.codec),
           g->o.rate > 0 ? "open" : "closed", g->o.rate > 0 ? g->o.rate : 0.0, g->o.connections,
           g->o.depth, g->o.unique_ids ? "true" : "false", g->o.warmup_s);
    printf("\"window\":{\"seconds\":%.6f,\"requests\":%" PRIu64 ",\"failed\":%" PRIu64
           ",\"items\":%" PRIu64 ",\"requests_per_s\":%.3f,\"items_per_s\":%.3f,"
           "\"mbytes_per_s\":%.3f},",
           win_s, w->ok, w->failed, w->ok_items, (double)w->ok / win_s, (double)w->ok_items / win_s,
           (double)w->bytes / win_s / 1e6);
    printf("\"latency_us\":{\"count\":%" PRIu64 ",\"mean\":%.1f,\"min\":%.1f,\"p50\":%.1f,"
           "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f},",
           w->lat.count, w->lat.count ? us(w->lat.sum) / (double)w->lat.count : 0.0,
           w->lat.count ? us(w->lat.min) : 0.0, us(hist_quantile(&w->lat, 0.5)),
           us(hist_quantile(&w->lat, 0.9)), us(hist_quantile(&w->lat, 0.99)),
           us(hist_quantile(&w->lat, 0.999)), us(w->lat.max));
    printf("\"total\":{\"issued\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"ok_items\":%" PRIu64
           ",\"failed\":%" PRIu64 ",\"incomplete\":%" PRIu64 ",\"missed\":%" PRIu64
           ",\"connect_errors\":%" PRIu64 ",\"connection_resets\":%" PRIu64 ",\"elapsed_s\":%.6f},",
           g->issued, g->total.ok, g->total.ok_items, g->total.failed, incomplete, g->missed,
           g->connect_errors, g->conn_resets, (double)(end - g->t0) / 1e9);
    printf("\"http_status\":{");
    bool first = true;
    for (int i = 0; i < 600; i++) {
        if (g->status_http[i] > 0) {
            printf("%s\"%d\":%" PRIu64, first ? "" : ",", i, g->status_http[i]);
            first = false;
        }
    }
    printf("},\"grpc_status\":{");
    first = true;
    for (int i = 0; i < 18; i++) {
        if (g->status_grpc[i] > 0) {
            char key[8];
            snprintf(key, sizeof(key), "%d", i);
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", i == 17 ? "none" : key,
                   g->status_grpc[i]);
            first = false;
        }
    }
    printf("},\"loadgen_cpu_s\":%.3f,\"last_error\":\"", cpu);
    for (const char *p = g->last_error; *p; p++) {
        if (*p == '"' || *p == '\\') {
            putchar('\\');
        }
        putchar((unsigned char)*p >= 0x20 ? *p : ' ');
    }
    printf("\"}\n");
}

int main(int argc, char **argv)
{
    static struct lg g;
    parse_args(&g.o, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    resolve(&g);
    build_payload(&g);
    if (g.o.items_rate > 0) {
        g.o.rate = g.o.items_rate / (double)(g.pl.items > 0 ? g.pl.items : 1);
    }

    llhttp_settings_init(&h1_settings);
    h1_settings.on_message_complete = h1_on_message_complete;

    size_t slots = (size_t)g.o.connections * g.o.depth;
    g.reqs = calloc(slots, sizeof(*g.reqs));
    if (g.reqs == NULL) {
        die("out of memory");
    }
    for (size_t i = slots; i-- > 0;) {
        struct req *r = &g.reqs[i];
        if (g.o.unique_ids) {
            size_t len = g.o.proto == PROTO_HTTP ? g.pl.body_len : g.pl.grpc_len;
            r->buf = malloc(len);
            if (r->buf == NULL) {
                die("out of memory");
            }
            memcpy(r->buf, g.o.proto == PROTO_HTTP ? g.pl.body : g.pl.grpc, len);
        }
        req_put(&g, r);
    }
    if (g.o.rate > 0) {
        g.backlog = malloc(BACKLOG_MAX * sizeof(*g.backlog));
        if (g.backlog == NULL) {
            die("out of memory");
        }
        g.interval_ns = (uint64_t)(1e9 / g.o.rate);
        if (g.interval_ns == 0) {
            g.interval_ns = 1;
        }
    }

    g.ep = epoll_create1(EPOLL_CLOEXEC);
    g.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (g.ep < 0 || g.tfd < 0) {
        die("epoll/timerfd: %s", strerror(errno));
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, g.tfd, &tev);

    g.conns = calloc(g.o.connections, sizeof(*g.conns));
    if (g.conns == NULL) {
        die("out of memory");
    }
    g.t0 = now_ns();
    g.measure_from = g.t0 + (uint64_t)(g.o.warmup_s * 1e9);
    g.issue_until = g.measure_from + (uint64_t)(g.o.duration_s * 1e9);
    g.next_sched = g.t0;
    hist_init(&g.total.lat);
    hist_init(&g.window.lat);
    for (unsigned i = 0; i < g.o.connections; i++) {
        struct conn *c = &g.conns[i];
        c->g = &g;
        c->idx = i;
        c->fd = -1;
        conn_start(c);
    }

    uint64_t drain_deadline = 0;
    for (;;) {
        uint64_t t = now_ns();
        bool issuing = may_issue(&g, t);
        unsigned inflight = 0;
        for (unsigned i = 0; i < g.o.connections; i++) {
            inflight += g.conns[i].inflight;
        }
        if (!issuing) {
            /* Open loop: requests already scheduled but still waiting for a slot are part of
             * the run, and are sent during the drain. */
            bool backlog = g.o.rate > 0 && g.bl_n > 0 && !interrupted;
            if (!backlog && inflight == 0) {
                break;
            }
            if (drain_deadline == 0) {
                drain_deadline = t + (uint64_t)(g.o.drain_s * 1e9);
            } else if (t >= drain_deadline) {
                break;
            }
        }
        dispatch(&g, t);

        /* Wake for the next scheduled send, the end of issuing, reconnects, or the drain end. */
        uint64_t wake = t + 100 * 1000000u;
        if (issuing && g.o.max_requests == 0 && g.issue_until < wake) {
            wake = g.issue_until;
        }
        if (issuing && g.o.rate > 0 && g.next_sched < wake) {
            wake = g.next_sched;
        }
        if (drain_deadline != 0 && drain_deadline < wake) {
            wake = drain_deadline;
        }
        arm_timer(&g, wake > t ? wake : t + 1000);
        struct epoll_event evs[64];
        int n = epoll_wait(g.ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t exp;
                ssize_t rr = read(g.tfd, &exp, sizeof(exp));
                (void)rr;
                g.tfd_armed = 0;
                continue;
            }
            on_event(evs[i].data.ptr, evs[i].events);
        }
    }
    uint64_t end = now_ns();
    for (unsigned i = 0; i < g.o.connections; i++) {
        conn_close(&g.conns[i], NULL);
    }
    print_report(&g, end);
    bool all_ok = g.total.failed == 0 && g.total.ok == g.issued && g.missed == 0;
    return all_ok ? 0 : 1;
}
