/*
 * The net room's HTTP server over real sockets: a libuv loop runs the server on its own thread
 * and the tests talk to it with plain POSIX sockets (HTTP/1.1 written by hand, HTTP/2 through
 * nghttp2's client session).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "dlotel.h"
#include "net/http.h"

#define IO_TIMEOUT_MS 5000

/* -------------------------------------------------------------------------------------------- */
/* The server side: a loop thread and a handler whose behaviour each test picks. */

enum mode {
    MODE_ECHO,  /* 200 with the request body echoed, at once. */
    MODE_ASYNC, /* The same, 100 ms later from a uv timer. */
    MODE_HOLD,  /* Keep the stream; the test decides. */
    MODE_FREE,  /* Free the whole server from inside the handler, then answer. */
};

struct record {
    int n_requests;
    char method[16];
    char path[256];
    char content_type[64];
    size_t body_len;
    bool too_large;
    int version;
    int n_async_rv; /* Results of http_respond() called from timers. */
    int async_rv[16];
};

static struct {
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t thread;
    struct http_server *srv;
    uint16_t port;
    enum mode mode;
    struct http_stream *held;
    int held_rv; /* http_respond() on |held| after the server was freed. */
    uv_mutex_t mu;
    struct record rec;
} g;

static struct record rec_get(void)
{
    uv_mutex_lock(&g.mu);
    struct record r = g.rec;
    uv_mutex_unlock(&g.mu);
    return r;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src != NULL ? src : "");
}

static int respond_echo(struct http_stream *s, const struct http_request *req)
{
    if (req->body_too_large) {
        struct http_response r = {
            .status = 413, .body = (const uint8_t *)"too large\n", .body_len = 10};
        return http_respond(s, &r);
    }
    struct http_header hdrs[] = {
        {"content-type", "application/octet-stream"},
        {"x-method", req->method},
        {"x-path", req->path},
    };
    struct http_header trailers[] = {
        {"grpc-status", "0"},
        {"grpc-message", "ok"},
    };
    struct http_response r = {
        .status = 200,
        .headers = hdrs,
        .n_headers = 3,
        .body = req->body.data,
        .body_len = req->body.len,
        .trailers = trailers,
        .n_trailers = 2,
    };
    return http_respond(s, &r);
}

struct later {
    uv_timer_t timer;
    struct http_stream *s;
    const struct http_request *req;
};

static void on_later_close(uv_handle_t *h)
{
    free(h->data);
}

static void on_later(uv_timer_t *t)
{
    struct later *l = t->data;
    int rv = respond_echo(l->s, l->req);
    uv_mutex_lock(&g.mu);
    if (g.rec.n_async_rv < 16) {
        g.rec.async_rv[g.rec.n_async_rv++] = rv;
    }
    uv_mutex_unlock(&g.mu);
    uv_close((uv_handle_t *)&l->timer, on_later_close);
}

static void handler(void *userdata, struct http_stream *s, const struct http_request *req)
{
    (void)userdata;
    uv_mutex_lock(&g.mu);
    g.rec.n_requests++;
    copy_str(g.rec.method, sizeof(g.rec.method), req->method);
    copy_str(g.rec.path, sizeof(g.rec.path), req->path);
    copy_str(g.rec.content_type, sizeof(g.rec.content_type),
             http_request_header(req, "content-type"));
    g.rec.body_len = req->body.len;
    g.rec.too_large = req->body_too_large;
    g.rec.version = req->version;
    uv_mutex_unlock(&g.mu);

    switch (g.mode) {
    case MODE_ECHO:
        assert_int_equal(respond_echo(s, req), 0);
        break;
    case MODE_ASYNC: {
        struct later *l = calloc(1, sizeof(*l));
        assert_non_null(l);
        l->s = s;
        l->req = req;
        uv_timer_init(&g.loop, &l->timer);
        l->timer.data = l;
        uv_timer_start(&l->timer, on_later, 100, 0);
        break;
    }
    case MODE_HOLD:
        g.held = s;
        break;
    case MODE_FREE: {
        http_server_free(g.srv);
        g.srv = NULL;
        struct http_response r = {.status = 200};
        g.held_rv = http_respond(s, &r);
        break;
    }
    }
}

static void on_stop(uv_async_t *a)
{
    http_server_free(g.srv); /* NULL when a handler freed it already. */
    if (g.held != NULL) {
        /* The connection is gone: the stream is an orphan and responding just frees it. */
        struct http_response r = {.status = 200};
        g.held_rv = http_respond(g.held, &r);
        g.held = NULL;
    }
    uv_close((uv_handle_t *)a, NULL);
}

static void loop_thread(void *arg)
{
    (void)arg;
    uv_run(&g.loop, UV_RUN_DEFAULT);
}

static struct http_listen_options default_options(void)
{
    struct http_listen_options o = {
        .name = "test",
        .host = "127.0.0.1",
        .port = 0,
        .http1 = true,
        .http2 = true,
        .max_body = 1024,
        .max_header_bytes = 4096,
        .max_headers = 20,
        .idle_timeout_ms = 5000,
        .handler = handler,
    };
    return o;
}

static void server_start(struct http_listen_options o, enum mode mode)
{
    memset(&g.rec, 0, sizeof(g.rec));
    g.mode = mode;
    g.held = NULL;
    g.held_rv = 1;
    assert_int_equal(uv_loop_init(&g.loop), 0);
    assert_int_equal(uv_mutex_init(&g.mu), 0);
    assert_int_equal(uv_async_init(&g.loop, &g.stop, on_stop), 0);
    assert_int_equal(http_server_new(&g.srv, &g.loop, &o), 0);
    g.port = http_server_port(g.srv);
    assert_true(g.port != 0);
    assert_int_equal(uv_thread_create(&g.thread, loop_thread, NULL), 0);
}

/* Stops the server and checks that the loop ends with no handle left behind. */
static void server_stop(void)
{
    uv_async_send(&g.stop);
    uv_thread_join(&g.thread);
    assert_int_equal(uv_loop_close(&g.loop), 0);
    uv_mutex_destroy(&g.mu);
}

/* -------------------------------------------------------------------------------------------- */
/* The client side. */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int connect_to(int family, uint16_t port)
{
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    int rv;
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        a.sin6_addr = in6addr_loopback;
        rv = connect(fd, (struct sockaddr *)&a, sizeof(a));
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rv = connect(fd, (struct sockaddr *)&a, sizeof(a));
    }
    if (rv != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

struct client {
    int fd;
    uint8_t *buf;
    size_t len;
    size_t cap;
};

static void client_open(struct client *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = connect_to(AF_INET, g.port);
    assert_true(c->fd >= 0);
}

static void client_close(struct client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* Closes with a reset (SO_LINGER 0), as a crashed client would. */
static void client_reset(struct client *c)
{
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    client_close(c);
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *d = p;
    while (n > 0) {
        ssize_t k = send(fd, d, n, MSG_NOSIGNAL);
        assert_true(k > 0);
        d += k;
        n -= (size_t)k;
    }
}

static void send_str(struct client *c, const char *s)
{
    send_all(c->fd, s, strlen(s));
}

/* Reads more bytes. Returns the count, 0 at EOF or reset, -1 on timeout. */
static ssize_t client_fill(struct client *c, int timeout_ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int rv = poll(&p, 1, timeout_ms);
    if (rv <= 0) {
        return -1;
    }
    if (c->cap - c->len < 65536) {
        c->cap = c->cap * 2 + 65536;
        c->buf = realloc(c->buf, c->cap);
        assert_non_null(c->buf);
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0) {
        return errno == ECONNRESET ? 0 : -1;
    }
    c->len += (size_t)n;
    return n;
}

struct response {
    int status;
    bool close; /* "connection: close" */
    char headers[2048];
    uint8_t *body;
    size_t body_len;
};

static const char *memfind(const uint8_t *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++) {
        if (memcmp(h + i, needle, k) == 0) {
            return (const char *)h + i;
        }
    }
    return NULL;
}

/* Finds header |name| (lowercase) in the response's header block. Returns its value or NULL. */
static const char *resp_header(const struct response *r, const char *name, char *out, size_t n)
{
    char key[64];
    snprintf(key, sizeof(key), "\r\n%s: ", name);
    const char *p = strstr(r->headers, key);
    if (p == NULL) {
        return NULL;
    }
    p += strlen(key);
    const char *e = strstr(p, "\r\n");
    size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
    if (len >= n) {
        len = n - 1;
    }
    memcpy(out, p, len);
    out[len] = '\0';
    return out;
}

/* Reads one response. Returns 0, or -1 when the connection ended or timed out first. */
static int read_response(struct client *c, struct response *r)
{
    memset(r, 0, sizeof(*r));
    const char *end;
    while ((end = memfind(c->buf, c->len, "\r\n\r\n")) == NULL) {
        if (client_fill(c, IO_TIMEOUT_MS) <= 0) {
            return -1;
        }
    }
    size_t head = (size_t)(end - (const char *)c->buf) + 4;
    size_t copy = head < sizeof(r->headers) - 1 ? head : sizeof(r->headers) - 1;
    memcpy(r->headers, c->buf, copy);
    r->headers[copy] = '\0';
    /* Lowercase the header names (not the values) so that lookups are simple. */
    bool in_name = false;
    for (char *p = r->headers; *p != '\0'; p++) {
        if (*p == '\n') {
            in_name = true;
        } else if (*p == ':') {
            in_name = false;
        } else if (in_name && *p >= 'A' && *p <= 'Z') {
            *p = (char)(*p + 32);
        }
    }
    if (sscanf(r->headers, "HTTP/1.1 %d", &r->status) != 1) {
        return -1;
    }
    char v[64];
    size_t body_len = 0;
    if (resp_header(r, "content-length", v, sizeof(v)) != NULL) {
        body_len = strtoul(v, NULL, 10);
    }
    r->close = resp_header(r, "connection", v, sizeof(v)) != NULL && strcmp(v, "close") == 0;
    while (c->len < head + body_len) {
        if (client_fill(c, IO_TIMEOUT_MS) <= 0) {
            return -1;
        }
    }
    r->body = malloc(body_len + 1);
    memcpy(r->body, c->buf + head, body_len);
    r->body[body_len] = 0;
    r->body_len = body_len;
    memmove(c->buf, c->buf + head + body_len, c->len - head - body_len);
    c->len -= head + body_len;
    return 0;
}

/* True when the server closes the connection within |ms| (buffered bytes are ignored). */
static bool closed_within(struct client *c, int ms)
{
    for (;;) {
        ssize_t n = client_fill(c, ms);
        if (n == 0) {
            return true;
        }
        if (n < 0) {
            return false;
        }
    }
}

static void response_free(struct response *r)
{
    free(r->body);
    r->body = NULL;
}

static void expect_echo(struct client *c, const char *body)
{
    struct response r;
    assert_int_equal(read_response(c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen(body));
    assert_memory_equal(r.body, body, r.body_len);
    response_free(&r);
}

static char *post_request(const char *path, const char *body, const char *extra)
{
    static char req[8192];
    snprintf(req, sizeof(req),
             "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\n"
             "%sContent-Length: %zu\r\n\r\n%s",
             path, extra != NULL ? extra : "", strlen(body), body);
    return req;
}

/* -------------------------------------------------------------------------------------------- */
/* HTTP/1.1 */

static void test_simple_post(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, post_request("/v1/traces", "hello", NULL));
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_false(r.close);
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(r.body, "hello", 5);
    char v[64];
    assert_non_null(resp_header(&r, "x-method", v, sizeof(v)));
    assert_string_equal(v, "POST");
    assert_non_null(resp_header(&r, "x-path", v, sizeof(v)));
    assert_string_equal(v, "/v1/traces");
    assert_null(resp_header(&r, "grpc-status", v, sizeof(v))); /* Trailers are HTTP/2 only. */
    response_free(&r);

    struct record rec = rec_get();
    assert_int_equal(rec.n_requests, 1);
    assert_string_equal(rec.method, "POST");
    assert_string_equal(rec.path, "/v1/traces");
    assert_string_equal(rec.content_type, "application/x-protobuf");
    assert_int_equal(rec.version, 11);
    client_close(&c);
    server_stop();
}

static void test_get_is_delivered(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, "GET /v1/traces?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    response_free(&r);
    struct record rec = rec_get();
    assert_string_equal(rec.method, "GET");
    assert_string_equal(rec.path, "/v1/traces?x=1");
    client_close(&c);
    server_stop();
}

static void test_keepalive(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, post_request("/a", "one", NULL));
    expect_echo(&c, "one");
    send_str(&c, post_request("/b", "two", NULL));
    expect_echo(&c, "two");
    assert_int_equal(rec_get().n_requests, 2);
    assert_string_equal(rec_get().path, "/b");

    /* Connection: close is honoured. */
    send_str(&c, post_request("/c", "three", "Connection: close\r\n"));
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_true(r.close);
    response_free(&r);
    assert_true(closed_within(&c, 2000));
    client_close(&c);
    server_stop();
}

static void test_http10(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, "POST /x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nab");
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    char v[64];
    assert_non_null(resp_header(&r, "connection", v, sizeof(v)));
    assert_string_equal(v, "keep-alive");
    response_free(&r);
    send_str(&c, "POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\ncd");
    assert_int_equal(read_response(&c, &r), 0);
    assert_true(r.close);
    assert_memory_equal(r.body, "cd", 2);
    response_free(&r);
    assert_true(closed_within(&c, 2000));
    assert_int_equal(rec_get().version, 10);
    client_close(&c);
    server_stop();
}

static void pipelined(enum mode mode)
{
    server_start(default_options(), mode);
    struct client c;
    client_open(&c);
    char both[20000];
    snprintf(both, sizeof(both), "%s", post_request("/1", "first", NULL));
    size_t n = strlen(both);
    snprintf(both + n, sizeof(both) - n, "%s", post_request("/2", "second!", NULL));
    n = strlen(both);
    snprintf(both + n, sizeof(both) - n, "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    send_str(&c, both);
    expect_echo(&c, "first");
    expect_echo(&c, "second!");
    expect_echo(&c, "");
    assert_int_equal(rec_get().n_requests, 3);
    client_close(&c);
    server_stop();
}

static void test_pipelining(void **state)
{
    (void)state;
    pipelined(MODE_ECHO);
}

static void test_pipelining_async(void **state)
{
    (void)state;
    /* Answers come 100 ms later; the order must still hold. */
    pipelined(MODE_ASYNC);
}

static void test_pipelining_flood_in_order(void **state)
{
    (void)state;
    /* 5000 pipelined requests written while reading: every answer comes, in order. */
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    enum { N = 5000 };
    size_t cap = N * 64, len = 0;
    char *all = malloc(cap);
    for (int i = 0; i < N; i++) {
        len += (size_t)snprintf(all + len, cap - len, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
    }
    size_t sent = 0;
    int got = 0;
    while (got < N) {
        struct pollfd p = {.fd = c.fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
        assert_true(poll(&p, 1, IO_TIMEOUT_MS) > 0);
        if ((p.revents & POLLOUT) && sent < len) {
            ssize_t k = send(c.fd, all + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            assert_true(k > 0);
            sent += (size_t)k;
        }
        if (p.revents & POLLIN) {
            assert_true(client_fill(&c, 0) > 0);
            while (memfind(c.buf, c.len, "\r\n\r\n") != NULL) {
                struct response r;
                assert_int_equal(read_response(&c, &r), 0);
                assert_int_equal(r.status, 200);
                char v[32], want[32];
                snprintf(want, sizeof(want), "/%d", got);
                assert_non_null(resp_header(&r, "x-path", v, sizeof(v)));
                assert_string_equal(v, want);
                response_free(&r);
                got++;
            }
        }
    }
    free(all);
    client_close(&c);
    server_stop();
}

static void test_half_close(void **state)
{
    (void)state;
    /* Two requests, then the client shuts its sending side: both answered, then EOF. */
    server_start(default_options(), MODE_ASYNC);
    struct client c;
    client_open(&c);
    char both[20000];
    snprintf(both, sizeof(both), "%s", post_request("/1", "one", NULL));
    size_t n = strlen(both);
    snprintf(both + n, sizeof(both) - n, "%s", post_request("/2", "two", NULL));
    send_str(&c, both);
    shutdown(c.fd, SHUT_WR);
    expect_echo(&c, "one");
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.close);
    assert_memory_equal(r.body, "two", 3);
    response_free(&r);
    assert_true(closed_within(&c, 2000));
    client_close(&c);
    server_stop();
}

static void test_chunked(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, "POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n");
    sleep_ms(20); /* The body arrives over several reads. */
    send_str(&c, "6;ext=1\r\n worl");
    sleep_ms(20);
    send_str(&c, "d\r\n0\r\n\r\n");
    expect_echo(&c, "hello world");
    /* And again on the same connection, all in one write. */
    send_str(&c, "POST /v1/logs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n");
    expect_echo(&c, "abc");
    client_close(&c);
    server_stop();
}

static char *body_of(size_t n)
{
    char *b = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        b[i] = (char)('a' + i % 26);
    }
    b[n] = 0;
    return b;
}

static void test_max_body_content_length(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO); /* max_body 1024 */
    struct client c;
    client_open(&c);
    char *ok = body_of(1024);
    send_str(&c, post_request("/", ok, NULL));
    expect_echo(&c, ok);
    assert_false(rec_get().too_large);

    char *big = body_of(1025);
    send_str(&c, post_request("/", big, NULL));
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 413);
    assert_true(r.close);
    response_free(&r);
    assert_true(rec_get().too_large);
    assert_int_equal(rec_get().body_len, 0);
    assert_true(closed_within(&c, 3000));
    client_close(&c);

    /* A declared length far beyond the limit is answered before any body byte is sent. */
    client_open(&c);
    send_str(&c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n");
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 413);
    response_free(&r);
    client_close(&c);
    free(ok);
    free(big);
    server_stop();
}

static void send_chunked(struct client *c, const char *body, size_t piece)
{
    send_str(c, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t n = strlen(body);
    for (size_t off = 0; off < n; off += piece) {
        size_t k = n - off < piece ? n - off : piece;
        char hdr[32];
        snprintf(hdr, sizeof(hdr), "%zx\r\n", k);
        send_str(c, hdr);
        send_all(c->fd, body + off, k);
        send_str(c, "\r\n");
    }
    send_str(c, "0\r\n\r\n");
}

static void test_large_bodies_reused(void **state)
{
    (void)state;
    /* Bodies big enough for the server's buffer pool, different each time, on one connection. */
    struct http_listen_options o = default_options();
    o.max_body = 1 << 20;
    server_start(o, MODE_ECHO);
    struct client c;
    client_open(&c);
    size_t sizes[] = {300000, 100000, 250000, 299999};
    for (int i = 0; i < 4; i++) {
        char *b = body_of(sizes[i]);
        b[0] = (char)('0' + i);
        char hdr[128];
        snprintf(hdr, sizeof(hdr), "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                 sizes[i]);
        send_str(&c, hdr);
        send_all(c.fd, b, sizes[i]);
        expect_echo(&c, b);
        free(b);
    }
    client_close(&c);
    server_stop();
}

static void test_max_body_chunked(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    char *ok = body_of(1024);
    send_chunked(&c, ok, 300);
    expect_echo(&c, ok);

    char *big = body_of(1025);
    send_chunked(&c, big, 1000);
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 413);
    assert_true(r.close);
    response_free(&r);
    assert_true(rec_get().too_large);
    assert_true(closed_within(&c, 3000));
    client_close(&c);
    free(ok);
    free(big);
    server_stop();
}

static void test_expect_continue(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c,
             "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 100);
    response_free(&r);
    assert_int_equal(rec_get().n_requests, 0);
    send_str(&c, "hello");
    expect_echo(&c, "hello");

    /* Too large: the final answer comes at once, no 100, and the body is never read. */
    send_str(&c, "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 "Content-Length: 5000\r\n\r\n");
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 413);
    assert_true(r.close);
    response_free(&r);
    client_close(&c);
    server_stop();
}

static void test_too_many_headers(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO); /* max_headers 20 */
    struct client c;
    client_open(&c);
    char req[4096] = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n";
    for (int i = 0; i < 30; i++) {
        size_t n = strlen(req);
        snprintf(req + n, sizeof(req) - n, "X-H%d: v\r\n", i);
    }
    size_t used = strlen(req);
    snprintf(req + used, sizeof(req) - used, "\r\n");
    send_str(&c, req);
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 431);
    assert_true(r.close);
    response_free(&r);
    assert_true(closed_within(&c, 3000));
    assert_int_equal(rec_get().n_requests, 0);
    client_close(&c);

    /* Few headers but too many bytes (max_header_bytes 4096). */
    client_open(&c);
    char *big = body_of(5000);
    char *req2 = malloc(6000);
    snprintf(req2, 6000, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
    send_str(&c, req2);
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 431);
    response_free(&r);
    free(big);
    free(req2);
    client_close(&c);
    server_stop();
}

static void test_smuggling_rejected(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(
        &c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 400);
    assert_true(r.close);
    assert_true(r.body_len > 0);
    response_free(&r);
    assert_true(closed_within(&c, 3000));
    assert_int_equal(rec_get().n_requests, 0);
    client_close(&c);

    /* Garbage gets a 400 too, and the server still serves the next client. */
    client_open(&c);
    send_str(&c, "\x01\x02 nonsense\r\n\r\n");
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 400);
    response_free(&r);
    client_close(&c);
    client_open(&c);
    send_str(&c, post_request("/ok", "fine", NULL));
    expect_echo(&c, "fine");
    client_close(&c);
    server_stop();
}

static void test_idle_timeout(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.idle_timeout_ms = 300;
    server_start(o, MODE_ECHO);

    /* Half a request, then nothing. */
    struct client c;
    client_open(&c);
    send_str(&c, "POST / HTTP/1.1\r\nHost:");
    uint64_t t0 = uv_hrtime();
    assert_true(closed_within(&c, 3000));
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_true(ms >= 200 && ms < 2500);
    client_close(&c);

    /* A trickle of header bytes (slowloris) does not keep the connection open. */
    client_open(&c);
    t0 = uv_hrtime();
    const char *slow = "POST / HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    bool closed = false;
    for (size_t i = 0; slow[i] != '\0' && !closed; i++) {
        if (send(c.fd, slow + i, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        closed = closed_within(&c, 50);
    }
    if (!closed) {
        closed = closed_within(&c, 3000);
    }
    assert_true(closed);
    ms = (uv_hrtime() - t0) / 1000000;
    assert_true(ms < 1500);
    client_close(&c);

    /* An idle keep-alive connection is closed after its response too. */
    client_open(&c);
    send_str(&c, post_request("/", "x", NULL));
    expect_echo(&c, "x");
    assert_true(closed_within(&c, 3000));
    client_close(&c);
    server_stop();
}

static void test_async_response(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ASYNC);
    struct client c;
    client_open(&c);
    uint64_t t0 = uv_hrtime();
    send_str(&c, post_request("/later", "async body", NULL));
    expect_echo(&c, "async body");
    assert_true((uv_hrtime() - t0) / 1000000 >= 90);
    /* The answer can reach us before the server thread has recorded http_respond()'s return. */
    for (int i = 0; i < 200 && rec_get().n_async_rv < 1; i++) {
        sleep_ms(5);
    }
    struct record rec = rec_get();
    assert_int_equal(rec.n_async_rv, 1);
    assert_int_equal(rec.async_rv[0], 0);

    /* The client resets the connection before the answer: http_respond() says CLOSED. */
    send_str(&c, post_request("/gone", "x", NULL));
    for (int i = 0; i < 100 && rec_get().n_requests < 2; i++) {
        sleep_ms(5);
    }
    client_reset(&c);
    for (int i = 0; i < 200 && rec_get().n_async_rv < 2; i++) {
        sleep_ms(5);
    }
    rec = rec_get();
    assert_int_equal(rec.n_async_rv, 2);
    assert_int_equal(rec.async_rv[1], DLOTEL_ERR_CLOSED);
    server_stop();
}

static void test_free_with_held_stream(void **state)
{
    (void)state;
    server_start(default_options(), MODE_HOLD);
    struct client c;
    client_open(&c);
    send_str(&c, post_request("/held", "x", NULL));
    for (int i = 0; i < 200 && rec_get().n_requests < 1; i++) {
        sleep_ms(5);
    }
    assert_int_equal(rec_get().n_requests, 1);
    /* Freed with a connection open and a stream unanswered; the loop must still end clean. */
    server_stop();
    assert_int_equal(g.held_rv, DLOTEL_ERR_CLOSED);
    assert_true(closed_within(&c, 1000));
    client_close(&c);
}

static void test_free_inside_handler(void **state)
{
    (void)state;
    /* Pipelined requests: the first handler frees the server; nothing may run afterwards. */
    server_start(default_options(), MODE_FREE);
    struct client c;
    client_open(&c);
    char both[20000];
    snprintf(both, sizeof(both), "%s", post_request("/1", "one", NULL));
    size_t n = strlen(both);
    snprintf(both + n, sizeof(both) - n, "%s", post_request("/2", "two", NULL));
    send_str(&c, both);
    assert_true(closed_within(&c, 3000));
    client_close(&c);
    assert_int_equal(rec_get().n_requests, 1);
    server_stop();
    assert_int_equal(g.held_rv, DLOTEL_ERR_CLOSED);
}

static void test_max_connections(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.max_connections = 2;
    server_start(o, MODE_ECHO);
    struct client a, b, x;
    client_open(&a);
    client_open(&b);
    send_str(&a, post_request("/", "a", NULL));
    expect_echo(&a, "a");
    send_str(&b, post_request("/", "b", NULL));
    expect_echo(&b, "b");
    client_open(&x);
    assert_true(closed_within(&x, 2000));
    client_close(&x);
    client_close(&a);
    sleep_ms(100); /* Room again once one closed. */
    client_open(&x);
    send_str(&x, post_request("/", "x", NULL));
    expect_echo(&x, "x");
    client_close(&x);
    client_close(&b);
    server_stop();
}

static void test_h2_only_refuses_http1(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.http1 = false;
    server_start(o, MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, post_request("/", "x", NULL));
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    assert_int_equal(r.status, 505);
    response_free(&r);
    assert_true(closed_within(&c, 3000));
    client_close(&c);
    server_stop();
}

static void test_h1_only_refuses_h2(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.http2 = false;
    server_start(o, MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    /* SETTINGS (9 bytes), then GOAWAY with HTTP_1_1_REQUIRED. */
    while (c.len < 26 && client_fill(&c, IO_TIMEOUT_MS) > 0) {
    }
    assert_true(c.len >= 26);
    assert_int_equal(c.buf[3], NGHTTP2_SETTINGS);
    assert_int_equal(c.buf[12], NGHTTP2_GOAWAY);
    assert_int_equal(c.buf[25], NGHTTP2_HTTP_1_1_REQUIRED);
    assert_true(closed_within(&c, 3000));
    client_close(&c);
    server_stop();
}

static bool ipv6_loopback_available(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    a.sin6_addr = in6addr_loopback;
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void test_localhost_both_families(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.host = "localhost";
    server_start(o, MODE_ECHO);
    struct client c;
    client_open(&c);
    send_str(&c, post_request("/", "v4", NULL));
    expect_echo(&c, "v4");
    client_close(&c);
    if (ipv6_loopback_available()) {
        memset(&c, 0, sizeof(c));
        c.fd = connect_to(AF_INET6, g.port);
        assert_true(c.fd >= 0);
        send_str(&c, post_request("/", "v6", NULL));
        expect_echo(&c, "v6");
        client_close(&c);
    } else {
        print_message("::1 unavailable here; checked 127.0.0.1 only\n");
    }
    server_stop();
}

static void test_addr_in_use(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct http_listen_options o = default_options();
    o.port = g.port;
    struct http_server *srv = (struct http_server *)0x1;
    assert_int_equal(http_server_new(&srv, &loop, &o), DLOTEL_ERR_ADDR_IN_USE);
    assert_ptr_equal(srv, (struct http_server *)0x1); /* Untouched on failure. */
    uv_run(&loop, UV_RUN_DEFAULT);                    /* Lets the failed listener close. */
    assert_int_equal(uv_loop_close(&loop), 0);
    server_stop();
}

/* -------------------------------------------------------------------------------------------- */
/* HTTP/2, spoken by nghttp2's client session over a blocking socket. */

struct h2_stream {
    int32_t id;
    const uint8_t *upload;
    size_t upload_len;
    size_t upload_off;
    int status;
    uint8_t *body;
    size_t body_len;
    char grpc_status[16];
    char grpc_message[64];
    bool trailers;
    bool closed;
    bool hold_open; /* Never end the request: the upload waits after its bytes. */
    uint32_t error_code;
};

struct h2_client {
    int fd;
    nghttp2_session *session;
    int n_open;
    int goaway; /* The error code of a GOAWAY received, or -1. */
};

static int h2c_on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    (void)session;
    struct h2_client *c = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = (int)frame->goaway.error_code;
    }
    return 0;
}

static ssize_t h2c_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    struct h2_client *c = ud;
    send_all(c->fd, data, len);
    return (ssize_t)len;
}

static int h2c_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    (void)flags;
    (void)ud;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st == NULL) {
        return 0;
    }
    if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE && namelen == 7 &&
        memcmp(name, ":status", 7) == 0) {
        st->status = (int)strtol((const char *)value, NULL, 10);
    } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE && namelen == 11 &&
               memcmp(name, "grpc-status", 11) == 0) {
        /* Trailers-Only: the status is in the only header block. */
        snprintf(st->grpc_status, sizeof(st->grpc_status), "%.*s", (int)valuelen, value);
    } else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
        st->trailers = true;
        if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
            snprintf(st->grpc_status, sizeof(st->grpc_status), "%.*s", (int)valuelen, value);
        } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
            snprintf(st->grpc_message, sizeof(st->grpc_message), "%.*s", (int)valuelen, value);
        }
    }
    return 0;
}

static int h2c_on_data(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data,
                       size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
    if (st != NULL) {
        st->body = realloc(st->body, st->body_len + len + 1);
        memcpy(st->body + st->body_len, data, len);
        st->body_len += len;
    }
    return 0;
}

static int h2c_on_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *ud)
{
    struct h2_client *c = ud;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
    if (st != NULL) {
        st->closed = true;
        st->error_code = error_code;
        c->n_open--;
    }
    return 0;
}

static ssize_t h2c_read_upload(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                               uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    (void)session;
    (void)id;
    (void)ud;
    struct h2_stream *st = source->ptr;
    size_t n = st->upload_len - st->upload_off;
    if (n > length) {
        n = length;
    }
    if (n > 0) {
        memcpy(buf, st->upload + st->upload_off, n);
        st->upload_off += n;
    }
    if (st->upload_off == st->upload_len) {
        if (st->hold_open) {
            return n > 0 ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
        }
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static void h2c_open(struct h2_client *c)
{
    memset(c, 0, sizeof(*c));
    c->goaway = -1;
    c->fd = connect_to(AF_INET, g.port);
    assert_true(c->fd >= 0);
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2c_on_frame);
    nghttp2_session_callbacks_set_send_callback(cbs, h2c_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2c_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2c_on_close);
    assert_int_equal(nghttp2_session_client_new(&c->session, cbs, c), 0);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 8 << 20}};
    assert_int_equal(nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 1), 0);
    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 32 << 20);
}

static void h2c_close(struct h2_client *c)
{
    nghttp2_session_del(c->session);
    close(c->fd);
}

static void h2c_submit_extra(struct h2_client *c, struct h2_stream *st, const char *path,
                             const uint8_t *body, size_t len, size_t n_extra)
{
    memset(st, 0, sizeof(*st));
    st->upload = body;
    st->upload_len = len;
    nghttp2_nv nva[64] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
    };
    size_t n = 6;
    static char names[58][16];
    for (size_t i = 0; i < n_extra && n < 64; i++, n++) {
        snprintf(names[i], sizeof(names[i]), "x-extra-%zu", i);
        nva[n] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)"v", strlen(names[i]), 1, 0};
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = h2c_read_upload};
    st->id = nghttp2_submit_request(c->session, NULL, nva, n, &prd, st);
    assert_true(st->id > 0);
    c->n_open++;
}

static void h2c_submit(struct h2_client *c, struct h2_stream *st, const char *path,
                       const uint8_t *body, size_t len)
{
    h2c_submit_extra(c, st, path, body, len, 0);
}

/* Runs the session until every submitted stream closed. Returns false on timeout or EOF. */
static bool h2c_run(struct h2_client *c)
{
    uint8_t buf[65536];
    while (c->n_open > 0) {
        if (nghttp2_session_send(c->session) != 0) {
            return false;
        }
        if (c->n_open == 0) {
            break;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, IO_TIMEOUT_MS) <= 0) {
            return false;
        }
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            return false;
        }
        if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) != n) {
            return false;
        }
    }
    return nghttp2_session_send(c->session) == 0;
}

static void test_h2_post_with_trailers(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct h2_client c;
    h2c_open(&c);
    struct h2_stream st;
    const char *path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    h2c_submit(&c, &st, path, (const uint8_t *)"grpc-body", 9);
    assert_true(h2c_run(&c));
    assert_int_equal(st.error_code, 0);
    assert_int_equal(st.status, 200);
    assert_int_equal(st.body_len, 9);
    assert_memory_equal(st.body, "grpc-body", 9);
    assert_true(st.trailers);
    assert_string_equal(st.grpc_status, "0");
    assert_string_equal(st.grpc_message, "ok");
    struct record rec = rec_get();
    assert_int_equal(rec.version, 20);
    assert_string_equal(rec.method, "POST");
    assert_string_equal(rec.path, path);
    assert_string_equal(rec.content_type, "application/grpc");
    free(st.body);

    /* Many streams at once on the same connection, then an empty body. */
    struct h2_stream many[10];
    char bodies[10][32];
    for (int i = 0; i < 10; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "stream body %d", i);
        h2c_submit(&c, &many[i], "/p", (const uint8_t *)bodies[i], strlen(bodies[i]));
    }
    assert_true(h2c_run(&c));
    for (int i = 0; i < 10; i++) {
        assert_int_equal(many[i].status, 200);
        assert_int_equal(many[i].body_len, strlen(bodies[i]));
        assert_memory_equal(many[i].body, bodies[i], many[i].body_len);
        assert_string_equal(many[i].grpc_status, "0");
        free(many[i].body);
    }
    h2c_submit(&c, &st, "/empty", NULL, 0);
    assert_true(h2c_run(&c));
    assert_int_equal(st.status, 200);
    assert_int_equal(st.body_len, 0);
    assert_string_equal(st.grpc_status, "0");
    assert_int_equal(rec_get().n_requests, 12);
    h2c_close(&c);
    server_stop();
}

static void test_h2_too_many_headers(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO); /* max_headers 20 */
    struct h2_client c;
    h2c_open(&c);
    struct h2_stream bad, ok;
    h2c_submit_extra(&c, &bad, "/many", (const uint8_t *)"x", 1, 30);
    h2c_submit_extra(&c, &ok, "/few", (const uint8_t *)"y", 1, 5);
    assert_true(h2c_run(&c));
    assert_int_equal(bad.status, 431);
    assert_int_equal(ok.status, 200);
    assert_memory_equal(ok.body, "y", 1);
    assert_int_equal(rec_get().n_requests, 1); /* The handler never saw the bad one. */
    free(bad.body);
    free(ok.body);
    h2c_close(&c);
    server_stop();
}

static void test_h2_large_and_too_large(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.max_body = 4 << 20;
    server_start(o, MODE_ASYNC);
    size_t n = 4 << 20;
    uint8_t *big = malloc(n + 1);
    for (size_t i = 0; i < n + 1; i++) {
        big[i] = (uint8_t)(i * 7 + 3);
    }
    struct h2_client c;
    h2c_open(&c);
    struct h2_stream a, b;
    h2c_submit(&c, &a, "/big", big, n);
    h2c_submit(&c, &b, "/bigger", big, n + 1);
    assert_true(h2c_run(&c));
    assert_int_equal(a.status, 200);
    assert_int_equal(a.body_len, n);
    assert_memory_equal(a.body, big, n);
    assert_int_equal(b.status, 413);
    assert_int_equal(rec_get().n_requests, 2);
    free(a.body);
    free(b.body);
    h2c_close(&c);
    free(big);
    server_stop();
}

static void test_h2_reset_before_answer(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ASYNC);
    struct h2_client c;
    h2c_open(&c);
    struct h2_stream st;
    h2c_submit(&c, &st, "/reset", (const uint8_t *)"x", 1);
    assert_int_equal(nghttp2_session_send(c.session), 0);
    for (int i = 0; i < 200 && rec_get().n_requests < 1; i++) {
        sleep_ms(5);
    }
    assert_int_equal(rec_get().n_requests, 1);
    nghttp2_submit_rst_stream(c.session, NGHTTP2_FLAG_NONE, st.id, NGHTTP2_CANCEL);
    assert_int_equal(nghttp2_session_send(c.session), 0);
    for (int i = 0; i < 200 && rec_get().n_async_rv < 1; i++) {
        sleep_ms(5);
    }
    struct record rec = rec_get();
    assert_int_equal(rec.n_async_rv, 1);
    assert_int_equal(rec.async_rv[0], DLOTEL_ERR_CLOSED);

    /* The connection still works. */
    c.n_open = 0;
    struct h2_stream ok;
    h2c_submit(&c, &ok, "/after", (const uint8_t *)"fine", 4);
    assert_true(h2c_run(&c));
    assert_int_equal(ok.status, 200);
    assert_memory_equal(ok.body, "fine", 4);
    free(ok.body);
    h2c_close(&c);
    server_stop();
}

static void test_h2_free_inside_handler(void **state)
{
    (void)state;
    /* The handler runs inside nghttp2's callbacks; freeing the server there must be safe. */
    server_start(default_options(), MODE_FREE);
    struct h2_client c;
    h2c_open(&c);
    struct h2_stream a, b;
    h2c_submit(&c, &a, "/a", (const uint8_t *)"x", 1);
    h2c_submit(&c, &b, "/b", (const uint8_t *)"y", 1);
    assert_false(h2c_run(&c)); /* The connection ends without answers. */
    h2c_close(&c);
    assert_int_equal(rec_get().n_requests, 1);
    server_stop();
    assert_int_equal(g.held_rv, DLOTEL_ERR_CLOSED);
}

static void test_h2_idle_goaway(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.idle_timeout_ms = 200;
    server_start(o, MODE_ECHO);
    struct h2_client c;
    h2c_open(&c);
    struct h2_stream st;
    h2c_submit(&c, &st, "/x", (const uint8_t *)"x", 1);
    assert_true(h2c_run(&c));
    assert_int_equal(st.status, 200);
    free(st.body);
    /* Idle now: a GOAWAY(NO_ERROR) then the end of the connection, not a bare close. */
    uint8_t buf[4096];
    uint64_t t0 = uv_hrtime();
    for (;;) {
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        assert_true(poll(&p, 1, 3000) > 0);
        ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            break;
        }
        assert_true(nghttp2_session_mem_recv(c.session, buf, (size_t)n) == n);
    }
    assert_int_equal(c.goaway, NGHTTP2_NO_ERROR);
    assert_true((uv_hrtime() - t0) / 1000000 < 2500);
    h2c_close(&c);
    server_stop();
}

static void test_h2_preface_split(void **state)
{
    (void)state;
    server_start(default_options(), MODE_ECHO);
    struct h2_client c;
    h2c_open(&c);
    /* The preface in three pieces before nghttp2 sends the rest. */
    send_all(c.fd, "PRI * HTT", 9);
    sleep_ms(20);
    send_all(c.fd, "P/2.0\r\n\r\nSM", 11);
    sleep_ms(20);
    send_all(c.fd, "\r\n\r\n", 4);
    nghttp2_session_del(c.session);
    /* A fresh client session that skips its own preface: it was sent by hand above. */
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_option_new(&opt);
    nghttp2_session_callbacks_set_send_callback(cbs, h2c_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2c_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2c_on_close);
    assert_int_equal(nghttp2_session_client_new2(&c.session, cbs, &c, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    /*
     * nghttp2's client always sends the preface itself, so the server sees it twice unless we
     * drop the first 24 bytes nghttp2 produces. Do that with mem_send.
     */
    nghttp2_submit_settings(c.session, NGHTTP2_FLAG_NONE, NULL, 0);
    struct h2_stream st;
    h2c_submit(&c, &st, "/split", (const uint8_t *)"abc", 3);
    size_t skip = 24;
    for (;;) {
        const uint8_t *data;
        ssize_t k = nghttp2_session_mem_send(c.session, &data);
        assert_true(k >= 0);
        if (k == 0) {
            break;
        }
        size_t drop = skip < (size_t)k ? skip : (size_t)k;
        skip -= drop;
        send_all(c.fd, data + drop, (size_t)k - drop);
    }
    assert_true(h2c_run(&c));
    assert_int_equal(st.status, 200);
    assert_memory_equal(st.body, "abc", 3);
    free(st.body);
    h2c_close(&c);
    server_stop();
}

static void test_request_timeout(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.request_timeout_ms = 400;
    o.idle_timeout_ms = 5000;
    server_start(o, MODE_ECHO);

    /* A body that keeps moving (the idle timer is pushed back) but not in time: 408, closed. */
    struct client c;
    client_open(&c);
    uint64_t t0 = uv_hrtime();
    send_str(&c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n");
    bool answered = false;
    for (int i = 0; i < 40 && !answered; i++) {
        sleep_ms(50);
        if (send(c.fd, "a", 1, MSG_NOSIGNAL) != 1) {
            break;
        }
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        answered = poll(&p, 1, 0) > 0;
    }
    struct response r;
    assert_int_equal(read_response(&c, &r), 0);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r.status, 408);
    assert_true(ms >= 350 && ms < 1500);
    response_free(&r);
    assert_true(closed_within(&c, 3000));
    client_close(&c);
    assert_int_equal(rec_get().n_requests, 0);

    /* The same trickle, complete within the deadline: answered. */
    client_open(&c);
    send_str(&c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        sleep_ms(50);
        send_all(c.fd, "b", 1);
    }
    expect_echo(&c, "bbbbb");

    /* The deadline is per request: the next one on the connection starts afresh, and a request
       handed to the handler is not cut however long the handler takes. */
    sleep_ms(300);
    send_str(&c, post_request("/again", "c", NULL));
    expect_echo(&c, "c");
    client_close(&c);
    server_stop();

    server_start(o, MODE_ASYNC);
    client_open(&c);
    send_str(&c, post_request("/held", "d", NULL));
    expect_echo(&c, "d"); /* 100 ms in the handler. */
    client_close(&c);
    server_stop();

    /* HTTP/2: the late stream is answered (gRPC: DEADLINE_EXCEEDED) and reset with NO_ERROR,
       the connection and another stream on it live on. */
    server_start(o, MODE_ECHO);
    struct h2_client hc;
    h2c_open(&hc);
    struct h2_stream slow, fast;
    h2c_submit(&hc, &slow, "/late", (const uint8_t *)"part", 4);
    slow.hold_open = true;
    t0 = uv_hrtime();
    assert_true(h2c_run(&hc));
    ms = (uv_hrtime() - t0) / 1000000;
    assert_true(ms >= 350 && ms < 1500);
    assert_int_equal(slow.status, 200);
    assert_string_equal(slow.grpc_status, "4");
    assert_int_equal(slow.error_code, NGHTTP2_NO_ERROR);
    h2c_submit(&hc, &fast, "/fast", (const uint8_t *)"quick", 5);
    assert_true(h2c_run(&hc));
    assert_int_equal(fast.status, 200);
    assert_memory_equal(fast.body, "quick", 5);
    assert_int_equal(rec_get().n_requests, 1);
    free(slow.body);
    free(fast.body);
    h2c_close(&hc);
    server_stop();
}

static void test_h2_connection_body_cap(void **state)
{
    (void)state;
    struct http_listen_options o = default_options();
    o.max_body = 128 << 10;
    o.max_conn_body_bytes = 256 << 10;
    server_start(o, MODE_ECHO);
    size_t n = 100 << 10;
    uint8_t *body = malloc(n);
    for (size_t i = 0; i < n; i++) {
        body[i] = (uint8_t)(i * 13 + 1);
    }
    struct h2_client c;
    h2c_open(&c);

    /* Under the cap side by side (200 KiB of 256): every one answered, none refused. */
    struct h2_stream st[4];
    for (int i = 0; i < 2; i++) {
        h2c_submit(&c, &st[i], "/under", body, n);
    }
    assert_true(h2c_run(&c));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(st[i].error_code, 0);
        assert_int_equal(st[i].status, 200);
        assert_int_equal(st[i].body_len, n);
        assert_memory_equal(st[i].body, body, n);
        free(st[i].body);
    }

    /* Over it (400 KiB), interleaved: the unfinished bodies fill the window, so the newest is
       refused (a client may retry it) and the others complete. */
    for (int i = 0; i < 4; i++) {
        h2c_submit(&c, &st[i], "/over", body, n);
    }
    assert_true(h2c_run(&c));
    int refused = 0;
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        if (st[i].error_code == NGHTTP2_REFUSED_STREAM) {
            refused++;
            assert_int_equal(st[i].status, 0);
        } else {
            assert_int_equal(st[i].error_code, 0);
            assert_int_equal(st[i].status, 200);
            assert_int_equal(st[i].body_len, n);
            assert_memory_equal(st[i].body, body, n);
            ok++;
        }
        free(st[i].body);
    }
    assert_true(refused >= 1 && refused <= 2);
    assert_int_equal(ok + refused, 4);
    assert_int_equal(rec_get().n_requests, 2 + ok);

    /* The window came back: many more bodies than the cap, one after another. */
    for (int round = 0; round < 6; round++) {
        h2c_submit(&c, &st[0], "/seq", body, n);
        assert_true(h2c_run(&c));
        assert_int_equal(st[0].status, 200);
        free(st[0].body);
    }
    h2c_close(&c);
    free(body);
    server_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_post),
        cmocka_unit_test(test_get_is_delivered),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_pipelining_async),
        cmocka_unit_test(test_pipelining_flood_in_order),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_max_body_content_length),
        cmocka_unit_test(test_large_bodies_reused),
        cmocka_unit_test(test_max_body_chunked),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_smuggling_rejected),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_async_response),
        cmocka_unit_test(test_free_with_held_stream),
        cmocka_unit_test(test_free_inside_handler),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_h2_only_refuses_http1),
        cmocka_unit_test(test_h1_only_refuses_h2),
        cmocka_unit_test(test_localhost_both_families),
        cmocka_unit_test(test_addr_in_use),
        cmocka_unit_test(test_h2_post_with_trailers),
        cmocka_unit_test(test_h2_too_many_headers),
        cmocka_unit_test(test_h2_large_and_too_large),
        cmocka_unit_test(test_h2_reset_before_answer),
        cmocka_unit_test(test_h2_free_inside_handler),
        cmocka_unit_test(test_h2_idle_goaway),
        cmocka_unit_test(test_h2_preface_split),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_h2_connection_body_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
