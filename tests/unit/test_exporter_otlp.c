/*
 * The upstream exporters (otlp_http, otlp_grpc) end to end, over real sockets on one libuv loop.
 *
 * The upstream is the net room's HTTP server (HTTP/1.1 and h2c on one listener) scripted per
 * case: it records what arrived (path, headers, the body after decompression, which must equal
 * what was sent) and answers as the case says, now or later. A small TCP relay in front of it
 * counts connections, to prove that sends share one. For TLS and for a gRPC implementation that
 * nobody here wrote, a Python peer (tests/unit/test_exporter_otlp_peer.py: Python's ssl and
 * grpcio) runs as a subprocess with certificates made by openssl at test time; when openssl or
 * Python is missing those tests are skipped, not passed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>
#include <zlib.h>

#include "core/buf.h"
#include "core/compress.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "net/http.h"
#include "otlp/otlp.h"

extern char **environ;

#define SEC 1000000000ull
#define MS  1000000ull

/* -------------------------------------------------------------------------------------------- */
/* The scripted upstream */

#define MAX_HDRS 64

struct reply {
    int status;
    struct http_header headers[8];
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
    struct http_header trailers[4];
    size_t n_trailers;
    uint32_t delay_ms; /* Answer this much later, from a timer. */
};

struct rec {
    int n;       /* Requests seen. */
    int version; /* 11 or 20 */
    char method[16];
    char path[512];
    char *names[MAX_HDRS];
    char *values[MAX_HDRS];
    size_t n_hdrs;
    struct buf raw;   /* The body as it arrived. */
    struct buf plain; /* After Content-Encoding, or gRPC framing + grpc-encoding. */
    bool plain_ok;
    int grpc_flag; /* The gRPC compressed flag, -1 when no frame. */
};

struct delayed {
    uv_timer_t timer;
    struct http_stream *s;
    struct delayed *next;
    bool fired;
};

static struct {
    uv_loop_t loop;
    uv_timer_t guard;
    bool guard_fired;
    struct http_server *srv;
    uint16_t port;
    bool grpc; /* Decode request bodies as gRPC frames. */
    struct reply reply;
    struct rec rec;
    struct delayed *delayed;
} g;

static void rec_reset(void)
{
    for (size_t i = 0; i < g.rec.n_hdrs; i++) {
        free(g.rec.names[i]);
        free(g.rec.values[i]);
    }
    buf_cleanup(&g.rec.raw);
    buf_cleanup(&g.rec.plain);
    memset(&g.rec, 0, sizeof(g.rec));
    buf_init(&g.rec.raw, 64u << 20);
    buf_init(&g.rec.plain, 64u << 20);
    g.rec.grpc_flag = -1;
}

/* The value of the last recorded header |name| (lowercase), or NULL. */
static const char *rec_header(const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < g.rec.n_hdrs; i++) {
        if (strcmp(g.rec.names[i], name) == 0) {
            v = g.rec.values[i];
        }
    }
    return v;
}

static void record(const struct http_request *req)
{
    rec_reset();
    g.rec.n = 1;
    g.rec.version = req->version;
    snprintf(g.rec.method, sizeof(g.rec.method), "%s", req->method);
    snprintf(g.rec.path, sizeof(g.rec.path), "%s", req->path);
    for (size_t i = 0; i < req->n_headers && i < MAX_HDRS; i++) {
        g.rec.names[i] = strdup(req->headers[i].name);
        g.rec.values[i] = strdup(req->headers[i].value);
        g.rec.n_hdrs++;
    }
    assert_int_equal(buf_append(&g.rec.raw, req->body.data, req->body.len), 0);
    enum codec c = CODEC_NONE;
    const uint8_t *p = req->body.data;
    size_t len = req->body.len;
    if (g.grpc) {
        if (len < 5) {
            return;
        }
        uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        if (n != len - 5) {
            return;
        }
        g.rec.grpc_flag = p[0];
        const char *enc = http_request_header(req, "grpc-encoding");
        if (p[0] == 1 && (enc == NULL || codec_parse(enc, strlen(enc), &c) != 0)) {
            return;
        }
        if (p[0] == 0) {
            c = CODEC_NONE;
        }
        p += 5;
        len = n;
    } else {
        const char *enc = http_request_header(req, "content-encoding");
        if (enc != NULL && codec_parse(enc, strlen(enc), &c) != 0) {
            return;
        }
    }
    g.rec.plain_ok = codec_decompress(c, p, len, &g.rec.plain) == 0;
}

static void respond_now(struct http_stream *s, const struct reply *r)
{
    struct http_response resp = {
        .status = r->status,
        .headers = r->headers,
        .n_headers = r->n_headers,
        .body = r->body,
        .body_len = r->body_len,
        .trailers = r->trailers,
        .n_trailers = r->n_trailers,
    };
    (void)http_respond(s, &resp);
}

static void on_delayed_close(uv_handle_t *h)
{
    free(h->data);
}

static void on_delayed(uv_timer_t *t)
{
    struct delayed *d = t->data;
    d->fired = true;
    /* The client has usually given up by now: DLOTEL_ERR_CLOSED, and the stream is freed. */
    respond_now(d->s, &g.reply);
    d->s = NULL;
}

static void on_request(void *userdata, struct http_stream *s, const struct http_request *req)
{
    (void)userdata;
    record(req);
    if (g.reply.delay_ms == 0) {
        respond_now(s, &g.reply);
        return;
    }
    struct delayed *d = calloc(1, sizeof(*d));
    assert_non_null(d);
    d->s = s;
    d->timer.data = d;
    uv_timer_init(&g.loop, &d->timer);
    uv_timer_start(&d->timer, on_delayed, g.reply.delay_ms, 0);
    d->next = g.delayed;
    g.delayed = d;
}

static void on_guard(uv_timer_t *t)
{
    (void)t;
    g.guard_fired = true;
}

/* Runs the loop until |*flag| is set; false when |timeout_ms| passed first. */
static bool run_until(const bool *flag, uint64_t timeout_ms)
{
    g.guard_fired = false;
    uv_timer_start(&g.guard, on_guard, timeout_ms, 0);
    while (!*flag && !g.guard_fired) {
        uv_run(&g.loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&g.guard);
    return *flag;
}

/* Runs the loop for |ms| milliseconds. */
static void run_for(uint64_t ms)
{
    bool never = false;
    run_until(&never, ms);
}

static void ok_reply(void)
{
    memset(&g.reply, 0, sizeof(g.reply));
    if (g.grpc) {
        static const uint8_t empty_msg[5] = {0, 0, 0, 0, 0};
        g.reply.status = 200;
        g.reply.headers[0] = (struct http_header){"content-type", "application/grpc"};
        g.reply.n_headers = 1;
        g.reply.body = empty_msg;
        g.reply.body_len = 5;
        g.reply.trailers[0] = (struct http_header){"grpc-status", "0"};
        g.reply.n_trailers = 1;
    } else {
        g.reply.status = 200;
        g.reply.headers[0] = (struct http_header){"content-type", "application/x-protobuf"};
        g.reply.n_headers = 1;
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&g, 0, sizeof(g));
    /* Tests talk to 127.0.0.1 directly; a proxy from the caller's environment would interfere. */
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    assert_int_equal(uv_loop_init(&g.loop), 0);
    assert_int_equal(uv_timer_init(&g.loop, &g.guard), 0);
    struct http_listen_options o = {
        .name = "upstream",
        .host = "127.0.0.1",
        .port = 0,
        .http1 = true,
        .http2 = true,
        .max_body = 64u << 20,
        .handler = on_request,
    };
    assert_int_equal(http_server_new(&g.srv, &g.loop, &o), 0);
    g.port = http_server_port(g.srv);
    rec_reset();
    ok_reply();
    return 0;
}

static int setup_grpc(void **state)
{
    setup(state);
    g.grpc = true;
    ok_reply();
    return 0;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        print_error("handle of type %s left open\n", uv_handle_type_name(h->type));
    }
}

static int teardown(void **state)
{
    (void)state;
    http_server_free(g.srv);
    while (g.delayed != NULL) {
        struct delayed *d = g.delayed;
        g.delayed = d->next;
        if (d->s != NULL) {
            respond_now(d->s, &g.reply); /* Frees the abandoned stream. */
        }
        uv_timer_stop(&d->timer);
        uv_close((uv_handle_t *)&d->timer, on_delayed_close);
    }
    uv_close((uv_handle_t *)&g.guard, NULL);
    /* Everything the exporters and the server opened must close by itself now. */
    for (int i = 0; i < 100 && uv_loop_alive(&g.loop); i++) {
        uv_run(&g.loop, UV_RUN_NOWAIT);
        if (uv_loop_alive(&g.loop)) {
            usleep(1000);
        }
    }
    uv_walk(&g.loop, walk_close, NULL);
    int rv = uv_loop_close(&g.loop);
    rec_reset();
    buf_cleanup(&g.rec.raw);
    buf_cleanup(&g.rec.plain);
    assert_int_equal(rv, 0);
    return 0;
}

/* -------------------------------------------------------------------------------------------- */
/* A TCP relay that counts the connections it accepts. */

struct relay {
    uv_tcp_t listener;
    uint16_t port;
    uint16_t target;
    int accepted;
    int open;
};

struct relay_conn {
    uv_tcp_t a; /* From the client. */
    uv_tcp_t b; /* To the target. */
    uv_connect_t creq;
    struct relay *r;
    int closed;
    bool closing;
};

static void relay_on_close(uv_handle_t *h)
{
    struct relay_conn *c = h->data;
    if (++c->closed == 2) {
        c->r->open--;
        free(c);
    }
}

static void relay_close(struct relay_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    uv_close((uv_handle_t *)&c->a, relay_on_close);
    uv_close((uv_handle_t *)&c->b, relay_on_close);
}

static void relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    b->base = malloc(suggested);
    b->len = suggested;
}

static void relay_on_write(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void relay_on_read(uv_stream_t *from, ssize_t n, const uv_buf_t *b)
{
    struct relay_conn *c = from->data;
    if (n < 0) {
        free(b->base);
        relay_close(c);
        return;
    }
    if (n == 0) {
        free(b->base);
        return;
    }
    uv_stream_t *to = from == (uv_stream_t *)&c->a ? (uv_stream_t *)&c->b : (uv_stream_t *)&c->a;
    uv_write_t *w = malloc(sizeof(*w));
    w->data = b->base;
    uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
    if (uv_write(w, to, &out, 1, relay_on_write) != 0) {
        free(b->base);
        free(w);
        relay_close(c);
    }
}

static void relay_on_connect(uv_connect_t *req, int status)
{
    struct relay_conn *c = req->data;
    if (status != 0 || c->closing) {
        relay_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->a, relay_alloc, relay_on_read);
    uv_read_start((uv_stream_t *)&c->b, relay_alloc, relay_on_read);
}

static void relay_on_conn(uv_stream_t *server, int status)
{
    struct relay *r = server->data;
    if (status != 0) {
        return;
    }
    struct relay_conn *c = calloc(1, sizeof(*c));
    c->r = r;
    uv_tcp_init(&g.loop, &c->a);
    uv_tcp_init(&g.loop, &c->b);
    c->a.data = c->b.data = c->creq.data = c;
    r->accepted++;
    r->open++;
    if (uv_accept(server, (uv_stream_t *)&c->a) != 0) {
        relay_close(c);
        return;
    }
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", r->target, &sa);
    if (uv_tcp_connect(&c->creq, &c->b, (const struct sockaddr *)&sa, relay_on_connect) != 0) {
        relay_close(c);
    }
}

static void relay_start(struct relay *r, uint16_t target)
{
    memset(r, 0, sizeof(*r));
    r->target = target;
    assert_int_equal(uv_tcp_init(&g.loop, &r->listener), 0);
    r->listener.data = r;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&r->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&r->listener, 16, relay_on_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&r->listener, (struct sockaddr *)&ss, &len);
    r->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void relay_stop(struct relay *r)
{
    uv_close((uv_handle_t *)&r->listener, NULL);
}

/* -------------------------------------------------------------------------------------------- */
/* Exporters and sends */

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *p = malloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static uint8_t *payload(enum otlp_signal s, size_t *len)
{
    static const char *const files[] = {"traces_512.pb", "metrics.pb", "logs_512.pb"};
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, files[s]);
    return read_file(path, len);
}

static const struct otlp_exporter_header HEADERS[] = {
    {"Authorization", "Bearer s3cret-token"},
    {"X-Tenant", "acme"},
    {"X-Empty", ""},
};

struct opts {
    const char *endpoint;
    enum codec codec;
    uint64_t timeout_ms;
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    bool insecure;
    const struct otlp_exporter_header *headers;
    size_t n_headers;
};

static struct exporter *make(bool grpc, const struct opts *p)
{
    struct otlp_exporter_options o = {
        .name = "test",
        .endpoint = p->endpoint,
        .headers = p->headers != NULL ? p->headers : HEADERS,
        .n_headers = p->headers != NULL ? p->n_headers : sizeof(HEADERS) / sizeof(HEADERS[0]),
        .compression = p->codec,
        .request_timeout_ns = (p->timeout_ms != 0 ? p->timeout_ms : 5000) * MS,
        .ca_file = p->ca_file,
        .cert_file = p->cert_file,
        .key_file = p->key_file,
        .insecure_skip_verify = p->insecure,
    };
    struct exporter *e = NULL;
    int rv =
        grpc ? exporter_otlp_grpc_new(&e, &g.loop, &o) : exporter_otlp_http_new(&e, &g.loop, &o);
    assert_int_equal(rv, 0);
    assert_non_null(e);
    assert_non_null(e->ops->send);
    assert_null(e->ops->export);
    assert_string_equal(e->ops->kind, grpc ? "otlp_grpc" : "otlp_http");
    return e;
}

static char *url(const char *scheme, uint16_t port, const char *path)
{
    static char buf[4][256];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof(buf[0]), "%s://127.0.0.1:%u%s", scheme, port, path);
    return b;
}

struct outcome {
    bool in_send;
    bool done;
    int calls;
    struct export_result r;
    uint64_t at;
};

static void on_done(void *ud, const struct export_result *r)
{
    struct outcome *o = ud;
    /* The contract: never from inside send(). */
    assert_false(o->in_send);
    o->calls++;
    o->r = *r;
    o->done = true;
    o->at = uv_hrtime();
}

static void start_send(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                       struct outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->in_send = true;
    assert_int_equal(e->ops->send(e, s, pb, len, 1, on_done, o), 0);
    o->in_send = false;
    assert_false(o->done);
}

static struct export_result send_wait(struct exporter *e, enum otlp_signal s, const uint8_t *pb,
                                      size_t len)
{
    struct outcome o;
    start_send(e, s, pb, len, &o);
    assert_true(run_until(&o.done, 15000));
    /* Exactly once, even after the loop runs on. */
    run_for(5);
    assert_int_equal(o.calls, 1);
    return o.r;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL) {
        print_error("'%s' does not contain '%s'\n", haystack, needle);
        fail();
    }
}

/* A port with nothing listening: bound, read, closed. */
static uint16_t dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

/* -------------------------------------------------------------------------------------------- */
/* otlp_http against the scripted server */

static void test_http_success(void **state)
{
    (void)state;
    static const char *const paths[] = {"/v1/traces", "/v1/metrics", "/v1/logs"};
    static const enum codec codecs[] = {CODEC_NONE, CODEC_GZIP, CODEC_ZSTD};
    for (size_t ci = 0; ci < 3; ci++) {
        struct opts p = {.endpoint = url("http", g.port, ""), .codec = codecs[ci]};
        struct exporter *e = make(false, &p);
        for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
            size_t len;
            uint8_t *pb = payload((enum otlp_signal)s, &len);
            struct export_result r = send_wait(e, (enum otlp_signal)s, pb, len);
            if (r.outcome != EXPORT_OK) {
                print_error("%s %s: %s\n", codec_name(codecs[ci]), paths[s], r.message);
            }
            assert_int_equal(r.outcome, EXPORT_OK);
            assert_int_equal(r.http_status, 200);
            assert_int_equal(r.grpc_status, -1);
            assert_int_equal(r.rejected_items, 0);
            assert_int_equal(r.retry_after_ns, 0);
            /* What arrived: the right request, the exact bytes. */
            assert_int_equal(g.rec.n, 1);
            assert_string_equal(g.rec.method, "POST");
            assert_string_equal(g.rec.path, paths[s]);
            assert_int_equal(g.rec.version, 11); /* Cleartext: HTTP/1.1. */
            assert_string_equal(rec_header("content-type"), "application/x-protobuf");
            if (codecs[ci] == CODEC_NONE) {
                assert_null(rec_header("content-encoding"));
                assert_int_equal(g.rec.raw.len, len);
            } else {
                assert_string_equal(rec_header("content-encoding"), codec_name(codecs[ci]));
                /* Really compressed, not just labelled. */
                assert_true(g.rec.raw.len < len / 2);
            }
            assert_true(g.rec.plain_ok);
            assert_int_equal(g.rec.plain.len, len);
            assert_memory_equal(g.rec.plain.data, pb, len);
            assert_string_equal(rec_header("authorization"), "Bearer s3cret-token");
            assert_string_equal(rec_header("x-tenant"), "acme");
            assert_string_equal(rec_header("x-empty"), "");
            assert_string_equal(rec_header("user-agent"), "dlotel/" DLOTEL_VERSION);
            assert_null(rec_header("expect"));
            free(pb);
        }
        e->ops->destroy(e);
    }
}

static void test_http_partial_success(void **state)
{
    (void)state;
    struct opts p = {.endpoint = url("http", g.port, "/")};
    struct exporter *e = make(false, &p);
    for (int json = 0; json < 2; json++) {
        for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
            struct buf body;
            buf_init(&body, 4096);
            assert_int_equal(
                otlp_response_encode((enum otlp_signal)s, 7, "7 items had no name", json, &body),
                0);
            ok_reply();
            g.reply.headers[0].value = json ? "application/json" : "application/x-protobuf";
            g.reply.body = body.data;
            g.reply.body_len = body.len;
            struct export_result r = send_wait(e, (enum otlp_signal)s, (const uint8_t *)"", 0);
            assert_int_equal(r.outcome, EXPORT_OK);
            assert_int_equal(r.rejected_items, 7);
            assert_string_equal(r.message, "7 items had no name");
            buf_cleanup(&body);
        }
    }
    /* The empty response is a full success; so is an unreadable one (the server took it). */
    ok_reply();
    g.reply.body = (const uint8_t *)"\xff\xff";
    g.reply.body_len = 2;
    struct export_result r = send_wait(e, OTLP_LOGS, (const uint8_t *)"", 0);
    assert_int_equal(r.outcome, EXPORT_OK);
    assert_int_equal(r.rejected_items, 0);
    e->ops->destroy(e);
}

static void fmt_http_date(char *out, size_t n, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void test_http_statuses(void **state)
{
    (void)state;
    char date[64];
    fmt_http_date(date, sizeof(date), time(NULL) + 10);
    struct buf status_pb;
    buf_init(&status_pb, 1024);
    assert_int_equal(otlp_status_encode(3, "bad payload: span id of 7 bytes", false, &status_pb),
                     0);
    static const char status_json[] = "{\"code\":3,\"message\":\"bad json payload\"}";
    struct {
        int status;
        const char *retry_after;
        const char *ctype;
        const uint8_t *body;
        size_t body_len;
        enum export_outcome want;
        uint64_t min_wait, max_wait;
        const char *msg;
    } cases[] = {
        {429, "3", NULL, NULL, 0, EXPORT_RETRY, 3 * SEC, 3 * SEC, "HTTP 429"},
        {429, date, NULL, NULL, 0, EXPORT_RETRY, 8 * SEC, 10 * SEC, "HTTP 429"},
        {429, NULL, NULL, NULL, 0, EXPORT_RETRY, 0, 0, "HTTP 429"},
        {503, "1", NULL, NULL, 0, EXPORT_RETRY, 1 * SEC, 1 * SEC, "HTTP 503"},
        {503, "soon", NULL, NULL, 0, EXPORT_RETRY, 0, 0, "HTTP 503"}, /* Malformed: ignored. */
        {502, NULL, NULL, NULL, 0, EXPORT_RETRY, 0, 0, "HTTP 502"},
        {504, NULL, NULL, NULL, 0, EXPORT_RETRY, 0, 0, "HTTP 504"},
        {400, NULL, "application/x-protobuf", status_pb.data, status_pb.len, EXPORT_PERMANENT, 0, 0,
         "HTTP 400: bad payload: span id of 7 bytes"},
        {400, NULL, "application/json", (const uint8_t *)status_json, sizeof(status_json) - 1,
         EXPORT_PERMANENT, 0, 0, "HTTP 400: bad json payload"},
        {413, NULL, NULL, NULL, 0, EXPORT_PERMANENT, 0, 0, "HTTP 413"},
        {404, NULL, "text/plain", (const uint8_t *)"no such path\n", 13, EXPORT_PERMANENT, 0, 0,
         "HTTP 404: no such path"},
        {500, "5", NULL, NULL, 0, EXPORT_PERMANENT, 5 * SEC, 5 * SEC, "HTTP 500"},
        {401, NULL, NULL, NULL, 0, EXPORT_PERMANENT, 0, 0, "HTTP 401"},
        {301, NULL, NULL, NULL, 0, EXPORT_PERMANENT, 0, 0, "redirects are not followed"},
        {202, NULL, NULL, NULL, 0, EXPORT_OK, 0, 0, ""},
        {204, NULL, NULL, NULL, 0, EXPORT_OK, 0, 0, ""},
    };
    struct opts p = {.endpoint = url("http", g.port, "")};
    struct exporter *e = make(false, &p);
    size_t len;
    uint8_t *pb = payload(OTLP_TRACES, &len);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&g.reply, 0, sizeof(g.reply));
        g.reply.status = cases[i].status;
        size_t nh = 0;
        if (cases[i].retry_after != NULL) {
            g.reply.headers[nh++] = (struct http_header){"retry-after", cases[i].retry_after};
        }
        if (cases[i].ctype != NULL) {
            g.reply.headers[nh++] = (struct http_header){"content-type", cases[i].ctype};
        }
        if (cases[i].status == 301) {
            g.reply.headers[nh++] = (struct http_header){"location", "http://elsewhere/"};
        }
        g.reply.n_headers = nh;
        g.reply.body = cases[i].body;
        g.reply.body_len = cases[i].body_len;
        struct export_result r = send_wait(e, OTLP_TRACES, pb, len);
        if (r.outcome != cases[i].want || r.retry_after_ns < cases[i].min_wait ||
            r.retry_after_ns > cases[i].max_wait || strstr(r.message, cases[i].msg) == NULL) {
            print_error("case %zu (HTTP %d): outcome %d, wait %llu, message '%s'\n", i,
                        cases[i].status, r.outcome, (unsigned long long)r.retry_after_ns,
                        r.message);
        }
        assert_int_equal(r.outcome, cases[i].want);
        assert_int_equal(r.http_status, cases[i].status);
        assert_true(r.retry_after_ns >= cases[i].min_wait);
        assert_true(r.retry_after_ns <= cases[i].max_wait);
        assert_contains(r.message, cases[i].msg);
        /* Every attempt carried the whole batch. */
        assert_int_equal(g.rec.plain.len, len);
    }
    free(pb);
    buf_cleanup(&status_pb);
    e->ops->destroy(e);
}

static void test_timeout(bool grpc)
{
    /* The upstream answers after 2 s; the exporter gives up after 300 ms. */
    g.reply.delay_ms = 2000;
    struct opts p = {.endpoint = url("http", g.port, ""), .timeout_ms = 300};
    struct exporter *e = make(grpc, &p);
    uint64_t t0 = uv_hrtime();
    struct export_result r = send_wait(e, OTLP_LOGS, (const uint8_t *)"", 0);
    uint64_t took = uv_hrtime() - t0;
    assert_int_equal(r.outcome, EXPORT_RETRY);
    assert_contains(r.message, "timeout");
    assert_int_equal(r.http_status, 0);
    assert_true(took >= 250 * MS);
    assert_true(took < 1500 * MS);
    if (grpc) {
        /* The deadline travelled with the call, too. */
        assert_string_equal(rec_header("grpc-timeout"), "300m");
    }
    e->ops->destroy(e);
}

static void test_http_timeout(void **state)
{
    (void)state;
    test_timeout(false);
}

static void test_refused(bool grpc)
{
    struct opts p = {.endpoint = url("http", dead_port(), "")};
    struct exporter *e = make(grpc, &p);
    struct export_result r = send_wait(e, OTLP_TRACES, (const uint8_t *)"", 0);
    assert_int_equal(r.outcome, EXPORT_RETRY);
    assert_int_equal(r.http_status, 0);
    assert_int_equal(r.grpc_status, -1);
    assert_contains(r.message, "could not connect");
    e->ops->destroy(e);
}

static void test_http_refused(void **state)
{
    (void)state;
    test_refused(false);
}

/* libcurl before 7.89.0 cannot reuse cleartext HTTP/2 connections (curl issue #10634). */
static bool h2c_reuse_broken(void)
{
    return curl_version_info(CURLVERSION_NOW)->version_num < 0x075900;
}

/*
 * Sends through a counting relay in front of |target|: sequential sends, concurrent ones (gRPC),
 * and a second exporter on the same loop. Returns how many connections the relay accepted, and
 * how many calls were made in |calls|.
 */
static int sends_through_relay(bool grpc, const char *scheme, uint16_t target, const char *ca,
                               int *calls)
{
    /* Static: libuv holds on to the handle until the loop has closed it, after we return. */
    static struct relay rl;
    relay_start(&rl, target);
    struct opts p = {.endpoint = url(scheme, rl.port, ""), .codec = CODEC_GZIP, .ca_file = ca};
    struct exporter *e = make(grpc, &p);
    size_t len;
    uint8_t *pb = payload(OTLP_TRACES, &len);
    *calls = 0;
    for (int i = 0; i < 3; i++) {
        struct export_result r = send_wait(e, (enum otlp_signal)(i % 3), pb, len);
        if (r.outcome != EXPORT_OK) {
            print_error("send %d: %s\n", i, r.message);
        }
        assert_int_equal(r.outcome, EXPORT_OK);
        ++*calls;
    }
    if (grpc) {
        /* Concurrent calls multiplex on the one HTTP/2 connection. */
        struct outcome o[4];
        for (int i = 0; i < 4; i++) {
            start_send(e, OTLP_TRACES, pb, len, &o[i]);
        }
        for (int i = 0; i < 4; i++) {
            assert_true(run_until(&o[i].done, 10000));
            if (o[i].r.outcome != EXPORT_OK) {
                print_error("concurrent send %d: %s\n", i, o[i].r.message);
            }
            assert_int_equal(o[i].r.outcome, EXPORT_OK);
            ++*calls;
        }
    }
    /* A second exporter on the same loop shares the connection cache. */
    struct exporter *e2 = make(grpc, &p);
    struct export_result r = send_wait(e2, OTLP_LOGS, pb, len);
    assert_int_equal(r.outcome, EXPORT_OK);
    ++*calls;
    e2->ops->destroy(e2);
    e->ops->destroy(e);
    free(pb);
    run_for(20);
    relay_stop(&rl);
    return rl.accepted;
}

static void test_reuse(bool grpc)
{
    int calls;
    int conns = sends_through_relay(grpc, "http", g.port, NULL, &calls);
    assert_int_equal(g.rec.plain.len, 243232);
    if (grpc && h2c_reuse_broken()) {
        /* The workaround: one connection per call, every call delivered. */
        print_message("libcurl %s: h2c reuse is broken, one connection per call\n",
                      curl_version_info(CURLVERSION_NOW)->version);
        assert_int_equal(conns, calls);
    } else {
        assert_int_equal(conns, 1);
    }
}

static void test_http_reuse(void **state)
{
    (void)state;
    test_reuse(false);
}

static void test_http_endpoint_paths(void **state)
{
    (void)state;
    static const struct {
        const char *base;
        enum otlp_signal s;
        const char *want;
    } cases[] = {
        {"", OTLP_TRACES, "/v1/traces"},
        {"/", OTLP_METRICS, "/v1/metrics"},
        {"//", OTLP_LOGS, "/v1/logs"},
        {"/api/otel/v1/otlp", OTLP_LOGS, "/api/otel/v1/otlp/v1/logs"},
        {"/api/otel/v1/otlp/", OTLP_TRACES, "/api/otel/v1/otlp/v1/traces"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct opts p = {.endpoint = url("http", g.port, cases[i].base)};
        struct exporter *e = make(false, &p);
        struct export_result r = send_wait(e, cases[i].s, (const uint8_t *)"", 0);
        assert_int_equal(r.outcome, EXPORT_OK);
        assert_string_equal(g.rec.path, cases[i].want);
        e->ops->destroy(e);
    }
}

static void test_http_proxy_from_env(void **state)
{
    (void)state;
    /*
     * libcurl must read http_proxy itself: point it at the scripted server, which then sees a
     * proxy request (absolute-form target) for a host that does not even resolve.
     */
    char proxy[64];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%u", g.port);
    char *old_no = getenv("no_proxy") != NULL ? strdup(getenv("no_proxy")) : NULL;
    char *old_NO = getenv("NO_PROXY") != NULL ? strdup(getenv("NO_PROXY")) : NULL;
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    setenv("http_proxy", proxy, 1);
    struct opts p = {.endpoint = "http://collector.invalid:4318"};
    struct exporter *e = make(false, &p);
    struct export_result r = send_wait(e, OTLP_METRICS, (const uint8_t *)"", 0);
    unsetenv("http_proxy");
    if (old_no != NULL) {
        setenv("no_proxy", old_no, 1);
    }
    if (old_NO != NULL) {
        setenv("NO_PROXY", old_NO, 1);
    }
    free(old_no);
    free(old_NO);
    assert_int_equal(r.outcome, EXPORT_OK);
    assert_string_equal(g.rec.path, "http://collector.invalid:4318/v1/metrics");
    e->ops->destroy(e);
}

/* The loop keeps turning while a 4 MiB batch is gzipped. */
struct ticker {
    uv_timer_t t;
    uint64_t last;
    uint64_t max_gap;
    int ticks;
};

static void on_tick(uv_timer_t *t)
{
    struct ticker *k = t->data;
    uint64_t now = uv_hrtime();
    if (g.rec.n == 0) {
        /* Only gaps before the upstream got the request: compression, then the transfer. */
        if (now - k->last > k->max_gap) {
            k->max_gap = now - k->last;
        }
        k->ticks++;
    }
    k->last = now;
}

static void test_http_gzip_off_loop(void **state)
{
    (void)state;
    size_t len = 4u << 20;
    uint8_t *big = malloc(len);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len; i++) {
        /* xorshift: incompressible bytes are the slowest case for deflate. */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big[i] = (uint8_t)x;
    }
    /* How long gzip takes here, on this thread, for scale. */
    struct buf z;
    buf_init(&z, len * 2);
    uint64_t t0 = uv_hrtime();
    assert_int_equal(codec_compress(CODEC_GZIP, big, len, 0, &z), 0);
    uint64_t tc = uv_hrtime() - t0;
    buf_cleanup(&z);

    struct opts p = {.endpoint = url("http", g.port, ""), .codec = CODEC_GZIP, .timeout_ms = 30000};
    struct exporter *e = make(false, &p);
    static struct ticker k;
    memset(&k, 0, sizeof(k));
    k.last = uv_hrtime();
    uv_timer_init(&g.loop, &k.t);
    k.t.data = &k;
    uv_timer_start(&k.t, on_tick, 2, 2);
    rec_reset();
    struct outcome o;
    uint64_t s0 = uv_hrtime();
    start_send(e, OTLP_TRACES, big, len, &o);
    uint64_t in_send = uv_hrtime() - s0;
    k.last = uv_hrtime();
    assert_true(run_until(&o.done, 30000));
    uv_close((uv_handle_t *)&k.t, NULL);
    print_message("gzip of 4 MiB: %llu ms on a thread; send() took %llu us; %d ticks, longest "
                  "gap %llu ms\n",
                  (unsigned long long)(tc / MS), (unsigned long long)(in_send / 1000), k.ticks,
                  (unsigned long long)(k.max_gap / MS));
    assert_int_equal(o.r.outcome, EXPORT_OK);
    assert_true(g.rec.plain_ok);
    assert_int_equal(g.rec.plain.len, len);
    assert_memory_equal(g.rec.plain.data, big, len);
    /* Compression on the loop would show as send() taking tc, or one gap of about tc. */
    assert_true(in_send < tc / 4);
    assert_true(k.ticks >= 5);
    assert_true(k.max_gap < tc / 2);
    e->ops->destroy(e);
    free(big);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct exporter *sentinel = (struct exporter *)(uintptr_t)0x1234;
    struct exporter *e = sentinel;
    struct otlp_exporter_options o = {.endpoint = "localhost:4318", .compression = CODEC_GZIP};
    assert_int_equal(exporter_otlp_http_new(&e, &g.loop, &o), DLOTEL_ERR_INVALID_ARG);
    o.endpoint = "ftp://example.com";
    assert_int_equal(exporter_otlp_grpc_new(&e, &g.loop, &o), DLOTEL_ERR_INVALID_ARG);
    o.endpoint = NULL;
    assert_int_equal(exporter_otlp_http_new(&e, &g.loop, &o), DLOTEL_ERR_INVALID_ARG);
    o.endpoint = "http://127.0.0.1:1";
    o.compression = (enum codec)7;
    assert_int_equal(exporter_otlp_http_new(&e, &g.loop, &o), DLOTEL_ERR_INVALID_ARG);
    o.compression = CODEC_NONE;
    /* A value with a line break would smuggle a header of its own. */
    struct otlp_exporter_header h[] = {{"X-Ok", "fine"}, {"X-Bad", "a\r\nInjected: yes"}};
    o.headers = h;
    o.n_headers = 2;
    assert_int_equal(exporter_otlp_http_new(&e, &g.loop, &o), DLOTEL_ERR_INVALID_ARG);
    struct otlp_exporter_header h2[] = {{"Bad Name", "v"}};
    o.headers = h2;
    o.n_headers = 1;
    assert_int_equal(exporter_otlp_grpc_new(&e, &g.loop, &o), DLOTEL_ERR_INVALID_ARG);
    assert_ptr_equal(e, sentinel);
    /* And the HTTPS scheme is accepted in any case. */
    o.headers = NULL;
    o.n_headers = 0;
    o.endpoint = "HTTPS://collector.example:4318/";
    assert_int_equal(exporter_otlp_http_new(&e, &g.loop, &o), 0);
    e->ops->destroy(e);
}

static void test_missing_ca(bool grpc)
{
    /* The CA file vanished: a clear, permanent error naming the problem. */
    struct opts p = {.endpoint = url("https", g.port, ""), .ca_file = "/nonexistent/dlotel-ca.pem"};
    struct exporter *e = make(grpc, &p);
    struct export_result r = send_wait(e, OTLP_TRACES, (const uint8_t *)"", 0);
    assert_int_equal(r.outcome, EXPORT_PERMANENT);
    assert_contains(r.message, "CA file unusable");
    assert_contains(r.message, "/nonexistent/dlotel-ca.pem");
    e->ops->destroy(e);
}

static void test_http_missing_ca(void **state)
{
    (void)state;
    test_missing_ca(false);
}

static void test_secrets_not_logged(void **state)
{
    (void)state;
    /* Debug logging on, a credential in a header and in the URL, successes and TLS failures. */
    FILE *logf = tmpfile();
    assert_non_null(logf);
    log_set_file(logf);
    enum log_level old = log_level_current;
    log_set_level(LOG_LEVEL_DEBUG);
    char ep[128];
    snprintf(ep, sizeof(ep), "http://agent:pa55word@127.0.0.1:%u", g.port);
    struct opts p = {.endpoint = ep};
    struct exporter *e = make(false, &p);
    struct export_result r = send_wait(e, OTLP_TRACES, (const uint8_t *)"", 0);
    assert_int_equal(r.outcome, EXPORT_OK);
    e->ops->destroy(e);
    snprintf(ep, sizeof(ep), "https://agent:pa55word@127.0.0.1:%u", g.port);
    p.ca_file = "/nonexistent/ca.pem";
    e = make(true, &p);
    r = send_wait(e, OTLP_TRACES, (const uint8_t *)"", 0);
    assert_int_equal(r.outcome, EXPORT_PERMANENT);
    e->ops->destroy(e);
    log_set_level(old);
    log_set_file(NULL);

    char text[8192];
    rewind(logf);
    size_t n = fread(text, 1, sizeof(text) - 1, logf);
    text[n] = 0;
    fclose(logf);
    assert_non_null(strstr(text, "TLS problem talking to https://127.0.0.1:"));
    assert_null(strstr(text, "s3cret"));
    assert_null(strstr(text, "pa55word"));
    assert_null(strstr(r.message, "pa55word"));
}

/* Counts the answers to sends destroyed in flight, and what they said. */
struct closed_answers {
    int n;
    enum export_outcome outcome;
    char message[256];
};

static void on_done_closed(void *ud, const struct export_result *r)
{
    struct closed_answers *c = ud;
    c->n++;
    c->outcome = r->outcome;
    snprintf(c->message, sizeof(c->message), "%s", r->message);
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    /*
     * One send waiting for the server, one in the middle of compression: destroy both. Each is
     * answered exactly once with EXPORT_RETRY "exporter closed", the transfer from inside
     * destroy, the compression when the thread pool has let go of the body (so the owner frees
     * it only then: the pipeline relies on this to free batches at shutdown).
     */
    g.reply.delay_ms = 500;
    struct opts p = {.endpoint = url("http", g.port, ""), .codec = CODEC_NONE};
    struct exporter *e = make(g.grpc, &p);
    struct closed_answers a1 = {0};
    assert_int_equal(
        e->ops->send(e, OTLP_TRACES, (const uint8_t *)"abc", 3, 1, on_done_closed, &a1), 0);
    bool got = false;
    run_until(&got, 100);
    assert_int_equal(g.rec.n, 1);
    assert_int_equal(a1.n, 0);
    e->ops->destroy(e);
    assert_int_equal(a1.n, 1);
    assert_int_equal(a1.outcome, EXPORT_RETRY);
    assert_string_equal(a1.message, "exporter closed");

    size_t len = 4u << 20;
    uint8_t *big = calloc(1, len);
    p.codec = CODEC_GZIP;
    e = make(g.grpc, &p);
    struct closed_answers a2 = {0};
    assert_int_equal(e->ops->send(e, OTLP_LOGS, big, len, 1, on_done_closed, &a2), 0);
    e->ops->destroy(e);
    /* The thread pool finishes (or drops) the work; then, and only then, the send is answered. */
    run_for(300);
    assert_int_equal(a2.n, 1);
    assert_int_equal(a2.outcome, EXPORT_RETRY);
    assert_string_equal(a2.message, "exporter closed");
    free(big);
    run_for(20);
    assert_int_equal(a1.n, 1);
    assert_int_equal(a2.n, 1);
}

/* -------------------------------------------------------------------------------------------- */
/* otlp_grpc against the scripted server */

static const char *const GRPC_PATHS[] = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
};

static void test_grpc_success(void **state)
{
    (void)state;
    static const enum codec codecs[] = {CODEC_NONE, CODEC_GZIP, CODEC_ZSTD};
    for (size_t ci = 0; ci < 3; ci++) {
        struct opts p = {.endpoint = url("http", g.port, "/"), .codec = codecs[ci]};
        struct exporter *e = make(true, &p);
        for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
            size_t len;
            uint8_t *pb = payload((enum otlp_signal)s, &len);
            struct export_result r = send_wait(e, (enum otlp_signal)s, pb, len);
            if (r.outcome != EXPORT_OK) {
                print_error("%s: %s\n", codec_name(codecs[ci]), r.message);
            }
            assert_int_equal(r.outcome, EXPORT_OK);
            assert_int_equal(r.http_status, 200);
            assert_int_equal(r.grpc_status, 0);
            assert_int_equal(r.rejected_items, 0);
            assert_int_equal(g.rec.version, 20);
            assert_string_equal(g.rec.method, "POST");
            assert_string_equal(g.rec.path, GRPC_PATHS[s]);
            assert_string_equal(rec_header("content-type"), "application/grpc");
            assert_string_equal(rec_header("te"), "trailers");
            assert_string_equal(rec_header("grpc-timeout"), "5000m");
            assert_string_equal(rec_header("grpc-accept-encoding"), "identity,gzip,zstd");
            assert_string_equal(rec_header("user-agent"), "dlotel/" DLOTEL_VERSION);
            /* Metadata, lowercase on the wire. */
            assert_string_equal(rec_header("authorization"), "Bearer s3cret-token");
            assert_string_equal(rec_header("x-tenant"), "acme");
            if (codecs[ci] == CODEC_NONE) {
                assert_null(rec_header("grpc-encoding"));
                assert_int_equal(g.rec.grpc_flag, 0);
                assert_int_equal(g.rec.raw.len, len + 5);
            } else {
                assert_string_equal(rec_header("grpc-encoding"), codec_name(codecs[ci]));
                assert_int_equal(g.rec.grpc_flag, 1);
                assert_true(g.rec.raw.len < len / 2);
            }
            assert_true(g.rec.plain_ok);
            assert_int_equal(g.rec.plain.len, len);
            assert_memory_equal(g.rec.plain.data, pb, len);
            free(pb);
        }
        e->ops->destroy(e);
    }
}

static void test_grpc_partial_success(void **state)
{
    (void)state;
    struct opts p = {.endpoint = url("http", g.port, "")};
    struct exporter *e = make(true, &p);
    for (int compressed = 0; compressed < 2; compressed++) {
        struct buf msg, framed;
        buf_init(&msg, 4096);
        buf_init(&framed, 4096);
        assert_int_equal(otlp_response_encode(OTLP_METRICS, 12, "12 points dropped", false, &msg),
                         0);
        struct buf z;
        buf_init(&z, 4096);
        if (compressed) {
            assert_int_equal(codec_compress(CODEC_GZIP, msg.data, msg.len, 0, &z), 0);
        } else {
            assert_int_equal(buf_append(&z, msg.data, msg.len), 0);
        }
        uint8_t prefix[5] = {(uint8_t)compressed, 0, 0, (uint8_t)(z.len >> 8), (uint8_t)z.len};
        buf_append(&framed, prefix, 5);
        buf_append(&framed, z.data, z.len);
        ok_reply();
        if (compressed) {
            g.reply.headers[g.reply.n_headers++] = (struct http_header){"grpc-encoding", "gzip"};
        }
        g.reply.body = framed.data;
        g.reply.body_len = framed.len;
        struct export_result r = send_wait(e, OTLP_METRICS, (const uint8_t *)"", 0);
        assert_int_equal(r.outcome, EXPORT_OK);
        assert_int_equal(r.grpc_status, 0);
        assert_int_equal(r.rejected_items, 12);
        assert_string_equal(r.message, "12 points dropped");
        buf_cleanup(&msg);
        buf_cleanup(&framed);
        buf_cleanup(&z);
    }
    e->ops->destroy(e);
}

/* grpc-status-details-bin holding google.rpc.Status{8, "slow down", [RetryInfo{2.5 s}]}. */
static const char RETRY_INFO_B64[] =
    "CAgSCXNsb3cgZG93bho2Cih0eXBlLmdvb2dsZWFwaXMuY29tL2dvb2dsZS5ycGMuUmV0cnlJbmZvEgoKCAgCEIDKte4B";

static void test_grpc_statuses(void **state)
{
    (void)state;
    struct {
        const char *what;
        int http;
        bool trailers_only; /* grpc-status in the headers, no body, no trailers. */
        const char *status;
        const char *message;
        const char *details;
        enum export_outcome want;
        int want_grpc;
        uint64_t want_wait;
        const char *msg;
    } cases[] = {
        {"unavailable", 200, false, "14", "try%20later", NULL, EXPORT_RETRY, 14, 0,
         "UNAVAILABLE: try later"},
        {"unavailable, trailers-only", 200, true, "14", "down", NULL, EXPORT_RETRY, 14, 0,
         "UNAVAILABLE: down"},
        {"exhausted with RetryInfo", 200, false, "8", "slow%20down", RETRY_INFO_B64, EXPORT_RETRY,
         8, 2 * SEC + 500000000, "RESOURCE_EXHAUSTED: slow down"},
        {"exhausted with RetryInfo, trailers-only", 200, true, "8", NULL, RETRY_INFO_B64,
         EXPORT_RETRY, 8, 2 * SEC + 500000000, "RESOURCE_EXHAUSTED: slow down"},
        {"exhausted without RetryInfo", 200, false, "8", "message%20too%20large", NULL,
         EXPORT_PERMANENT, 8, 0, "RESOURCE_EXHAUSTED: message too large"},
        {"exhausted with broken details", 200, false, "8", NULL, "!!!", EXPORT_PERMANENT, 8, 0,
         "RESOURCE_EXHAUSTED"},
        {"invalid argument", 200, false, "3", "bad%20span%20id%20%E2%9C%93", NULL, EXPORT_PERMANENT,
         3, 0, "INVALID_ARGUMENT: bad span id \xe2\x9c\x93"},
        {"deadline", 200, false, "4", NULL, NULL, EXPORT_RETRY, 4, 0, "DEADLINE_EXCEEDED"},
        {"unauthenticated", 200, true, "16", "who%3F", NULL, EXPORT_PERMANENT, 16, 0,
         "UNAUTHENTICATED: who?"},
        {"garbage status", 200, false, "x1", NULL, NULL, EXPORT_PERMANENT, 2, 0, "UNKNOWN"},
        {"no status", 200, false, NULL, NULL, NULL, EXPORT_PERMANENT, -1, 0, "without grpc-status"},
        {"HTTP 503", 503, true, NULL, NULL, NULL, EXPORT_RETRY, -1, 0,
         "HTTP 503 (gRPC UNAVAILABLE)"},
        {"HTTP 429 with a grpc-status", 429, true, "0", NULL, NULL, EXPORT_RETRY, -1, 0,
         "HTTP 429"},
        {"HTTP 404", 404, true, NULL, NULL, NULL, EXPORT_PERMANENT, -1, 0,
         "HTTP 404 (gRPC UNIMPLEMENTED)"},
    };
    struct opts p = {.endpoint = url("http", g.port, "")};
    struct exporter *e = make(true, &p);
    static const uint8_t empty_msg[5] = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&g.reply, 0, sizeof(g.reply));
        g.reply.status = cases[i].http;
        struct http_header *meta;
        size_t *n_meta;
        g.reply.headers[0] = (struct http_header){"content-type", "application/grpc"};
        g.reply.n_headers = 1;
        if (cases[i].trailers_only) {
            meta = g.reply.headers;
            n_meta = &g.reply.n_headers;
        } else {
            g.reply.body = empty_msg;
            g.reply.body_len = 5;
            meta = g.reply.trailers;
            n_meta = &g.reply.n_trailers;
        }
        if (cases[i].status != NULL) {
            meta[(*n_meta)++] = (struct http_header){"grpc-status", cases[i].status};
        }
        if (cases[i].message != NULL) {
            meta[(*n_meta)++] = (struct http_header){"grpc-message", cases[i].message};
        }
        if (cases[i].details != NULL) {
            meta[(*n_meta)++] = (struct http_header){"grpc-status-details-bin", cases[i].details};
        }
        struct export_result r = send_wait(e, OTLP_TRACES, (const uint8_t *)"x", 1);
        if (r.outcome != cases[i].want || r.grpc_status != cases[i].want_grpc ||
            r.retry_after_ns != cases[i].want_wait || strstr(r.message, cases[i].msg) == NULL) {
            print_error("case '%s': outcome %d grpc %d wait %llu message '%s'\n", cases[i].what,
                        r.outcome, r.grpc_status, (unsigned long long)r.retry_after_ns, r.message);
        }
        assert_int_equal(r.outcome, cases[i].want);
        assert_int_equal(r.http_status, cases[i].http);
        assert_int_equal(r.grpc_status, cases[i].want_grpc);
        assert_int_equal(r.retry_after_ns, cases[i].want_wait);
        assert_contains(r.message, cases[i].msg);
    }
    e->ops->destroy(e);
}

static void test_grpc_timeout(void **state)
{
    (void)state;
    test_timeout(true);
}

static void test_grpc_refused(void **state)
{
    (void)state;
    test_refused(true);
}

static void test_grpc_reuse(void **state)
{
    (void)state;
    test_reuse(true);
}

static void test_grpc_missing_ca(void **state)
{
    (void)state;
    test_missing_ca(true);
}

/* -------------------------------------------------------------------------------------------- */
/* TLS and grpcio: the Python peer */

static struct {
    bool ok;
    char dir[64];
    pid_t pid;
    int in_fd; /* Its stdin: closing it stops it. */
    int https, https_mtls, grpc, grpcs;
    char ca[128], cert[128], key[128], ccert[128], ckey[128];
} peer;

static int run(char *const argv[])
{
    pid_t pid;
    if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0) {
        return -1;
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) {
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int json_port(const char *line, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *p = strstr(line, pat);
    if (p == NULL) {
        return 0;
    }
    p += strlen(pat);
    return (int)strtol(p, NULL, 10); /* "null" gives 0. */
}

static int peer_setup(void **state)
{
    memset(&peer, 0, sizeof(peer));
    snprintf(peer.dir, sizeof(peer.dir), "/tmp/dlotel-tls-XXXXXX");
    if (mkdtemp(peer.dir) == NULL || access("/usr/bin/python3", X_OK) != 0) {
        return setup(state);
    }
    /* A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate. */
    char script[2048];
    snprintf(script, sizeof(script),
             "set -e; cd %s; "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout ca.key -out ca.pem -days 2 -subj /CN=dlotel-test-ca 2>/dev/null; "
             "for n in server client; do "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null; done; "
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext; "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out server.pem -days 2 -extfile san.ext 2>/dev/null; "
             "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out client.pem -days 2 2>/dev/null",
             peer.dir);
    char *sh[] = {"/bin/sh", "-c", script, NULL};
    if (run(sh) != 0) {
        return setup(state);
    }
    snprintf(peer.ca, sizeof(peer.ca), "%s/ca.pem", peer.dir);
    snprintf(peer.cert, sizeof(peer.cert), "%s/server.pem", peer.dir);
    snprintf(peer.key, sizeof(peer.key), "%s/server.key", peer.dir);
    snprintf(peer.ccert, sizeof(peer.ccert), "%s/client.pem", peer.dir);
    snprintf(peer.ckey, sizeof(peer.ckey), "%s/client.key", peer.dir);

    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) {
        return setup(state);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char script_path[512];
    snprintf(script_path, sizeof(script_path), "%s/tests/unit/test_exporter_otlp_peer.py",
             DLOTEL_SOURCE_DIR);
    char *argv[] = {"/usr/bin/python3", script_path, peer.cert, peer.key, peer.ca, NULL};
    int rv = posix_spawn(&peer.pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    peer.in_fd = in[1];
    if (rv != 0) {
        close(out[0]);
        return setup(state);
    }
    /* One JSON line with the ports, within 20 s (grpcio takes a moment to import). */
    char line[512];
    size_t n = 0;
    struct pollfd pfd = {.fd = out[0], .events = POLLIN};
    while (n < sizeof(line) - 1 && (n == 0 || line[n - 1] != '\n')) {
        if (poll(&pfd, 1, 20000) <= 0) {
            break;
        }
        ssize_t k = read(out[0], line + n, sizeof(line) - 1 - n);
        if (k <= 0) {
            break;
        }
        n += (size_t)k;
    }
    close(out[0]);
    line[n] = 0;
    peer.https = json_port(line, "https");
    peer.https_mtls = json_port(line, "https_mtls");
    peer.grpc = json_port(line, "grpc");
    peer.grpcs = json_port(line, "grpcs");
    peer.ok = peer.https > 0 && peer.https_mtls > 0;
    if (!peer.ok) {
        print_message("TLS peer did not start: '%s'\n", line);
    }
    return setup(state);
}

static int peer_teardown(void **state)
{
    teardown(state);
    if (peer.pid > 0) {
        close(peer.in_fd);
        kill(peer.pid, SIGTERM);
        waitpid(peer.pid, NULL, 0);
    }
    if (peer.dir[0] != 0) {
        char *rm[] = {"rm", "-rf", peer.dir, NULL};
        run(rm);
    }
    return 0;
}

/* The peer's answer: rejected = message length, message = "<crc32>|<x-tenant>". */
static void assert_peer_got(const struct export_result *r, const uint8_t *pb, size_t len)
{
    char want[64];
    snprintf(want, sizeof(want), "%08lx|acme", crc32(0L, pb, (uInt)len));
    if (r->outcome != EXPORT_OK) {
        print_error("peer: %s\n", r->message);
    }
    assert_int_equal(r->outcome, EXPORT_OK);
    assert_int_equal(r->rejected_items, len);
    assert_string_equal(r->message, want);
}

static void test_tls_http(void **state)
{
    (void)state;
    if (!peer.ok) {
        skip();
    }
    size_t len;
    uint8_t *pb = payload(OTLP_LOGS, &len);
    /* Verified against our CA, with and without gzip. */
    for (int gz = 0; gz < 2; gz++) {
        struct opts p = {.endpoint = url("https", (uint16_t)peer.https, ""),
                         .codec = gz ? CODEC_GZIP : CODEC_NONE,
                         .ca_file = peer.ca};
        struct exporter *e = make(false, &p);
        struct export_result r = send_wait(e, OTLP_LOGS, pb, len);
        assert_peer_got(&r, pb, len);
        e->ops->destroy(e);
    }
    /* Not verifiable with the system CAs: retried (the certificate may be fixed), with a reason. */
    struct opts p = {.endpoint = url("https", (uint16_t)peer.https, "")};
    struct exporter *e = make(false, &p);
    struct export_result r = send_wait(e, OTLP_LOGS, pb, len);
    assert_int_equal(r.outcome, EXPORT_RETRY);
    assert_contains(r.message, "server certificate not trusted");
    assert_int_equal(r.http_status, 0);
    e->ops->destroy(e);
    /* Unless verification is off. */
    p.insecure = true;
    e = make(false, &p);
    r = send_wait(e, OTLP_LOGS, pb, len);
    assert_peer_got(&r, pb, len);
    e->ops->destroy(e);
    free(pb);
}

static void test_tls_mutual(void **state)
{
    (void)state;
    if (!peer.ok) {
        skip();
    }
    size_t len;
    uint8_t *pb = payload(OTLP_TRACES, &len);
    struct opts p = {.endpoint = url("https", (uint16_t)peer.https_mtls, ""),
                     .ca_file = peer.ca,
                     .cert_file = peer.ccert,
                     .key_file = peer.ckey};
    struct exporter *e = make(false, &p);
    struct export_result r = send_wait(e, OTLP_TRACES, pb, len);
    assert_peer_got(&r, pb, len);
    e->ops->destroy(e);
    /* Without a client certificate the server refuses the handshake: transport error, retried. */
    p.cert_file = p.key_file = NULL;
    e = make(false, &p);
    r = send_wait(e, OTLP_TRACES, pb, len);
    assert_int_equal(r.outcome, EXPORT_RETRY);
    assert_int_equal(r.http_status, 0);
    e->ops->destroy(e);
    /* A client certificate file that is not there: ours to fix, permanent. */
    p.cert_file = "/nonexistent/client.pem";
    p.key_file = peer.ckey;
    e = make(false, &p);
    r = send_wait(e, OTLP_TRACES, pb, len);
    assert_int_equal(r.outcome, EXPORT_PERMANENT);
    assert_contains(r.message, "client certificate or key unusable");
    e->ops->destroy(e);
    free(pb);
}

static void test_grpcio_tls_reuse(void **state)
{
    (void)state;
    if (!peer.ok || peer.grpcs <= 0) {
        skip();
    }
    /* Over TLS (ALPN h2) every call, sequential or concurrent, shares one connection. */
    int calls;
    int conns = sends_through_relay(true, "https", (uint16_t)peer.grpcs, peer.ca, &calls);
    assert_int_equal(calls, 8);
    assert_int_equal(conns, 1);
}

static void test_grpcio(void **state)
{
    (void)state;
    if (!peer.ok || peer.grpc <= 0 || peer.grpcs <= 0) {
        skip();
    }
    size_t len;
    uint8_t *pb = payload(OTLP_TRACES, &len);
    /* Plaintext h2c and TLS with ALPN h2; grpcio decompresses gzip itself. */
    for (int tls = 0; tls < 2; tls++) {
        for (int gz = 0; gz < 2; gz++) {
            struct opts p = {.endpoint = url(tls ? "https" : "http",
                                             (uint16_t)(tls ? peer.grpcs : peer.grpc), ""),
                             .codec = gz ? CODEC_GZIP : CODEC_NONE,
                             .ca_file = tls ? peer.ca : NULL};
            struct exporter *e = make(true, &p);
            for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
                struct export_result r = send_wait(e, (enum otlp_signal)s, pb, len);
                assert_peer_got(&r, pb, len);
                assert_int_equal(r.grpc_status, 0);
            }
            e->ops->destroy(e);
        }
    }
    /* grpcio's own encoding of failures: RetryInfo in the details, a percent-encoded message. */
    static const struct otlp_exporter_header exhausted[] = {{"X-Scenario", "exhausted"}};
    struct opts p = {
        .endpoint = url("http", (uint16_t)peer.grpc, ""), .headers = exhausted, .n_headers = 1};
    struct exporter *e = make(true, &p);
    struct export_result r = send_wait(e, OTLP_TRACES, pb, len);
    assert_int_equal(r.outcome, EXPORT_RETRY);
    assert_int_equal(r.grpc_status, 8);
    assert_int_equal(r.retry_after_ns, 1 * SEC + 250000000);
    assert_contains(r.message, "RESOURCE_EXHAUSTED: slow down");
    e->ops->destroy(e);
    static const struct otlp_exporter_header unavailable[] = {{"x-scenario", "unavailable"}};
    p.headers = unavailable;
    e = make(true, &p);
    r = send_wait(e, OTLP_TRACES, pb, len);
    assert_int_equal(r.outcome, EXPORT_RETRY);
    assert_int_equal(r.grpc_status, 14);
    assert_string_equal(r.message, "UNAVAILABLE: try later \xe2\x9c\x93 100%");
    e->ops->destroy(e);
    /* An otlp_grpc exporter pointed at an HTTP/1.1-only server is told so, permanently. */
    struct opts p3 = {.endpoint = url("https", (uint16_t)peer.https, ""), .ca_file = peer.ca};
    e = make(true, &p3);
    r = send_wait(e, OTLP_TRACES, pb, len);
    assert_int_equal(r.outcome, EXPORT_PERMANENT);
    assert_contains(r.message, "HTTP/1.x");
    e->ops->destroy(e);
    free(pb);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_http_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_partial_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_endpoint_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_proxy_from_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_gzip_off_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_missing_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_not_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_success, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_partial_success, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_statuses, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_timeout, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_refused, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_reuse, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_grpc_missing_ca, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_flight, setup_grpc, teardown),
        cmocka_unit_test_setup_teardown(test_tls_http, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_tls_mutual, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_grpcio, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_grpcio_tls_reuse, peer_setup, peer_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
