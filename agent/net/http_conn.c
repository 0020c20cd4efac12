/*
 * HTTP/1.1 (llhttp, strict) and HTTP/2 (nghttp2) request collection and responses for one
 * connection, without any I/O. See http_conn.h for the split with http_server.c.
 *
 * Lifetimes, because handlers may answer later:
 *
 * - A stream is created when a request starts and sits in conn->streams. Until it is handed to
 *   the handler (COLLECTING) and after the handler answered an HTTP/2 stream (SENDING, while
 *   nghttp2 still reads the response body from it) the connection owns it and frees it.
 * - Between delivery and http_respond() (DELIVERED) the handler holds it. If the connection or
 *   the HTTP/2 stream dies first, the stream is unlinked and its conn pointer cleared: it is an
 *   orphan, and http_respond() frees it and returns DLOTEL_ERR_CLOSED.
 * - Handlers run from inside parsing (a synchronous answer is the fast path). conn->depth tells
 *   http_respond() whether it may drive the parser and nghttp2's sender itself or must leave
 *   that to the feed loop it is nested in.
 */
#include "net/http_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "dlotel.h"

/*
 * HTTP/2 server settings. A 4 MiB gRPC message must not wait for WINDOW_UPDATE round trips, so
 * the stream window is 1 MiB and the connection's 16 MiB (several such messages in flight).
 */
#define H2_MAX_CONCURRENT_STREAMS 128
#define H2_STREAM_WINDOW          (1 << 20)
#define H2_MAX_FRAME_SIZE         (1 << 18)
/*
 * The bytes of request bodies one HTTP/2 connection may hold (cfg->max_conn_body), which is also
 * its connection window: without a bound, 128 streams of max_body each pinned 2.5 GiB on one
 * connection. The default, max(2 x max_body, 64 MiB), lets 16 gRPC messages of 4 MiB or three
 * 20 MiB OTLP/HTTP bodies arrive side by side, and always leaves room for one whole body.
 */
#define H2_CONN_BODY_MIN ((size_t)64 << 20)
#define H2_CONN_BODY_MAX ((size_t)1 << 30)
/*
 * A connection window below this is as good as closed: clients do not all split their frames to
 * fit the last few bytes of a window.
 */
#define H2_WINDOW_STALLED (16 << 10)
/*
 * Output waiting for the socket past which the connection stops producing more: HTTP/2 stops
 * pulling frames from nghttp2 (whose flood limits then apply) and HTTP/1.1 stops parsing
 * pipelined requests.
 */
#define OUT_HIGH_WATER (256 << 10)
/* A hard bound on c->out: one response larger than this closes the connection. */
#define OUT_MAX ((size_t)256 << 20)
/*
 * While a response is owed the connection keeps reading (so that a reset or EOF is seen and the
 * handler's stream orphaned early) until this much pipelined input waits.
 */
#define PENDING_READ_LIMIT ((size_t)64 << 10)
/*
 * The hard bound on pipelined input kept. The I/O layer stops reading at PENDING_READ_LIMIT, so
 * this only guards against a caller that keeps feeding regardless.
 */
#define PENDING_MAX ((size_t)8 << 20)

static const uint8_t h2_preface[24] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum stream_state {
    STREAM_COLLECTING,
    STREAM_DELIVERED,
    STREAM_SENDING,
    STREAM_UPGRADED, /* The handle of a connection taken over by http_upgrade(). */
};

struct hdr_slot {
    size_t name_off;
    size_t value_off;
};

struct http_stream {
    struct http_conn *conn; /* NULL once orphaned. */
    struct http_stream *prev;
    struct http_stream *next;
    enum stream_state state;
    int32_t id; /* HTTP/2 stream id; 0 on HTTP/1.1. */

    struct http_request req; /* req.body is where the body is collected: one copy. */
    uint64_t started_ms;     /* cfg->clock when the request's first byte arrived. */
    size_t held;             /* HTTP/2: body bytes counted in conn->h2_held. */
    bool refused;            /* HTTP/2: reset with REFUSED_STREAM; its data is dropped. */
    bool reset_after;        /* HTTP/2: answered before its request ended; reset once sent. */

    /* Path, HTTP/2 method, header names and values, each NUL-terminated, by offset. */
    struct buf strings;
    struct hdr_slot *slots;
    size_t n_slots;
    size_t cap_slots;
    size_t header_bytes;
    size_t path_off;             /* SIZE_MAX until known. */
    size_t method_off;           /* SIZE_MAX until known (HTTP/2). */
    struct http_header *headers; /* Built from |slots| at delivery. */
    bool in_field;
    bool in_value;
    bool limit_hit; /* HTTP/2: header limits passed; answered 431 by the server. */
    bool keepalive; /* HTTP/1.1: the connection may carry another request. */
    bool head;      /* HTTP/1.1 HEAD: no body in the response. */
    bool grpc;      /* HTTP/2 content-type application/grpc: the body starts with a length. */

    /* HTTP/2 response, read by nghttp2 while SENDING. */
    uint8_t *resp;
    size_t resp_len;
    size_t resp_off;
    nghttp2_nv *trailers; /* One allocation: the array, then the strings. */
    size_t n_trailers;
};

/* -------------------------------------------------------------------------------------------- */
/* Body buffers */

/* Buffers smaller than this are cheap to allocate; larger than max_bytes / 2 would crowd out. */
#define POOL_MIN_CAP ((size_t)16 << 10)

void http_buf_pool_cleanup(struct http_buf_pool *pool)
{
    for (size_t i = 0; i < pool->n; i++) {
        free(pool->items[i].data);
    }
    pool->n = 0;
    pool->bytes = 0;
}

/*
 * Gives |b| (empty, nothing allocated) room for exactly |need| bytes, from the pool when it holds
 * a buffer that fits without wasting more than 4x. Failure is not an error: the buffer then
 * grows as bytes arrive.
 */
static void body_reserve(struct http_conn *c, struct buf *b, size_t need)
{
    if (need == 0 || b->cap != 0 || need > b->max) {
        return;
    }
    struct http_buf_pool *pool = c->cfg->pool;
    size_t want = need + 1; /* struct buf keeps one spare byte for buf_terminate(). */
    if (pool != NULL) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < pool->n; i++) {
            size_t cap = pool->items[i].cap;
            if (cap >= want && cap / 4 <= want &&
                (best == SIZE_MAX || cap < pool->items[best].cap)) {
                best = i;
            }
        }
        if (best != SIZE_MAX) {
            b->data = pool->items[best].data;
            b->cap = pool->items[best].cap;
            pool->bytes -= b->cap;
            pool->items[best] = pool->items[--pool->n];
            return;
        }
    }
    uint8_t *p = malloc(want);
    if (p != NULL) {
        b->data = p;
        b->cap = want;
    }
}

/* Frees |b|'s memory or keeps it in the pool; |b| is empty afterwards. */
static void body_release(struct http_conn *c, struct buf *b)
{
    struct http_buf_pool *pool = c != NULL ? c->cfg->pool : NULL;
    if (pool != NULL && b->data != NULL && b->cap >= POOL_MIN_CAP &&
        b->cap <= pool->max_bytes / 2 && pool->bytes + b->cap <= pool->max_bytes &&
        pool->n < HTTP_BUF_POOL_SLOTS) {
        pool->items[pool->n].data = b->data;
        pool->items[pool->n].cap = b->cap;
        pool->n++;
        pool->bytes += b->cap;
        buf_init(b, b->max);
        return;
    }
    buf_cleanup(b);
}

/* -------------------------------------------------------------------------------------------- */
/* Streams */

static uint64_t conn_now(const struct http_conn *c)
{
    return c->cfg->clock != NULL ? c->cfg->clock(c->cfg->clock_ctx) : 0;
}

/*
 * HTTP/2: the body bytes of |s| no longer count against the connection (released, dropped or
 * handed over): they go back to the connection window.
 */
static void h2_give_back(struct http_conn *c, struct http_stream *s)
{
    if (c == NULL || s->held == 0) {
        return;
    }
    c->h2_held -= s->held;
    if (c->h2 != NULL && !c->closed) {
        (void)nghttp2_session_consume_connection(c->h2, s->held);
    }
    s->held = 0;
}

static struct http_stream *stream_new(struct http_conn *c)
{
    struct http_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->conn = c;
    s->state = STREAM_COLLECTING;
    s->started_ms = conn_now(c);
    s->path_off = SIZE_MAX;
    s->method_off = SIZE_MAX;
    /* Room for every name and value plus their terminators; header_bytes enforces the limit. */
    buf_init(&s->strings, c->cfg->max_header_bytes + 2 * c->cfg->max_headers + 256);
    buf_init(&s->req.body, c->cfg->max_body);
    s->next = c->streams;
    if (c->streams != NULL) {
        c->streams->prev = s;
    }
    c->streams = s;
    return s;
}

static void stream_unlink(struct http_stream *s)
{
    struct http_conn *c = s->conn;
    if (c == NULL) {
        return;
    }
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        c->streams = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    s->prev = s->next = NULL;
    if (c->cur == s) {
        c->cur = NULL;
    }
    s->conn = NULL;
}

/* Frees what the request held; the response part may live on (HTTP/2 SENDING). */
static void stream_release_request(struct http_stream *s)
{
    h2_give_back(s->conn, s);
    buf_cleanup(&s->strings);
    body_release(s->conn, &s->req.body);
    free(s->slots);
    s->slots = NULL;
    s->n_slots = s->cap_slots = 0;
    free(s->headers);
    s->headers = NULL;
    s->req.headers = NULL;
    s->req.n_headers = 0;
}

static void stream_free(struct http_stream *s)
{
    stream_release_request(s); /* While s->conn still leads to the buffer pool. */
    stream_unlink(s);
    free(s->resp);
    free(s->trailers);
    free(s);
}

/* The handler no longer gets a connection for |s|; http_respond() will free it. */
static void stream_orphan(struct http_stream *s)
{
    struct http_conn *c = s->conn;
    if (c != NULL && s->state == STREAM_DELIVERED && c->n_awaiting > 0) {
        c->n_awaiting--;
    }
    /* The handler still holds the body, but the stream that sent it is gone. */
    h2_give_back(c, s);
    stream_unlink(s);
}

/* Counts |n| header bytes against the limit. */
static bool stream_budget(struct http_stream *s, const struct http_conn *c, size_t n)
{
    s->header_bytes += n;
    return s->header_bytes <= c->cfg->max_header_bytes;
}

/* Makes room for one more slot (the count limit is checked by the callers). */
static int stream_slot_reserve(struct http_stream *s)
{
    if (s->n_slots < s->cap_slots) {
        return 0;
    }
    size_t cap = s->cap_slots == 0 ? 16 : s->cap_slots * 2;
    struct hdr_slot *p = realloc(s->slots, cap * sizeof(*p));
    if (p == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    s->slots = p;
    s->cap_slots = cap;
    return 0;
}

/* Appends |n| bytes lowercased. */
static int strings_append_lower(struct buf *b, const char *p, size_t n)
{
    int rv = buf_reserve(b, n);
    if (rv != 0) {
        return rv;
    }
    uint8_t *d = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)p[i];
        d[i] = (ch >= 'A' && ch <= 'Z') ? (uint8_t)(ch + 32) : ch;
    }
    b->len += n;
    return 0;
}

static const char *stream_str(const struct http_stream *s, size_t off)
{
    return (const char *)s->strings.data + off;
}

/* Finds the value of header |name| (lowercase) while collecting. */
static const char *stream_find(const struct http_stream *s, const char *name)
{
    for (size_t i = 0; i < s->n_slots; i++) {
        if (strcmp(stream_str(s, s->slots[i].name_off), name) == 0) {
            return stream_str(s, s->slots[i].value_off);
        }
    }
    return NULL;
}

/* Fills s->req from the collected strings; they do not move any more after this. */
static int stream_finish_request(struct http_stream *s)
{
    if (s->n_slots > 0) {
        s->headers = malloc(s->n_slots * sizeof(*s->headers));
        if (s->headers == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        for (size_t i = 0; i < s->n_slots; i++) {
            s->headers[i].name = stream_str(s, s->slots[i].name_off);
            s->headers[i].value = stream_str(s, s->slots[i].value_off);
        }
    }
    s->req.headers = s->headers;
    s->req.n_headers = s->n_slots;
    s->req.path = s->path_off != SIZE_MAX ? stream_str(s, s->path_off) : "/";
    if (s->method_off != SIZE_MAX) {
        s->req.method = stream_str(s, s->method_off);
    }
    if (s->req.method == NULL) {
        s->req.method = "";
    }
    return 0;
}

const char *http_request_header(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].name, name) == 0) {
            return r->headers[i].value;
        }
    }
    return NULL;
}

/* -------------------------------------------------------------------------------------------- */
/* Shared helpers */

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {304, "Not Modified"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {426, "Upgrade Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

static const char *reason_phrase(int status)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        if (reasons[i].status == status) {
            return reasons[i].reason;
        }
    }
    return "Status"; /* Clients ignore the reason phrase; any token will do. */
}

/* A field the server writes itself, or one that would break the framing, is not copied. */
static bool header_skipped(const struct http_header *h)
{
    if (h->name == NULL || h->value == NULL || h->name[0] == '\0') {
        return true;
    }
    if (strcasecmp(h->name, "content-length") == 0 || strcasecmp(h->name, "connection") == 0 ||
        strcasecmp(h->name, "transfer-encoding") == 0 || strcasecmp(h->name, "keep-alive") == 0 ||
        strcasecmp(h->name, "upgrade") == 0 || strcasecmp(h->name, "proxy-connection") == 0) {
        return true;
    }
    /* A CR or LF would let a value end the header block (response splitting). */
    if (strpbrk(h->name, "\r\n: \t") != NULL || strpbrk(h->value, "\r\n") != NULL) {
        return true;
    }
    return false;
}

static void conn_run(struct http_conn *c);

/* Tells the I/O layer to look, unless a caller up the stack will. */
static void conn_notify(struct http_conn *c)
{
    if (c->depth == 0 && c->update != NULL) {
        c->update(c);
    }
}

/* -------------------------------------------------------------------------------------------- */
/* HTTP/1.1 */

static void h1_deliver(struct http_conn *c);

static int h1_on_message_begin(llhttp_t *p)
{
    struct http_conn *c = p->data;
    if (c->cur != NULL) {
        /* Parsing never runs while a request is open; this is a bug, not input. */
        c->h1_fail_status = 500;
        return -1;
    }
    struct http_stream *s = stream_new(c);
    if (s == NULL) {
        c->h1_fail_status = 503;
        return -1;
    }
    s->path_off = 0; /* The URL is the first string. */
    c->cur = s;
    return 0;
}

static int h1_on_url(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL) {
        return -1;
    }
    if (!stream_budget(s, c, len)) {
        c->h1_fail_status = 414;
        return -1;
    }
    if (buf_append(&s->strings, at, len) != 0) {
        c->h1_fail_status = 414;
        return -1;
    }
    return 0;
}

static int h1_on_url_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    if (c->cur == NULL || buf_putc(&c->cur->strings, 0) != 0) {
        c->h1_fail_status = 414;
        return -1;
    }
    return 0;
}

static int h1_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL) {
        return -1;
    }
    if (!s->in_field) {
        if (s->n_slots >= c->cfg->max_headers) {
            c->h1_fail_status = 431;
            return -1;
        }
        if (stream_slot_reserve(s) != 0) {
            c->h1_fail_status = 503;
            return -1;
        }
        s->slots[s->n_slots].name_off = s->strings.len;
        s->in_field = true;
    }
    if (!stream_budget(s, c, len) || strings_append_lower(&s->strings, at, len) != 0) {
        c->h1_fail_status = 431;
        return -1;
    }
    return 0;
}

static int h1_on_header_field_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL) {
        return -1;
    }
    if (!s->in_field) {
        /* An empty name (llhttp rejects those, but do not depend on it). */
        if (h1_on_header_field(p, "", 0) != 0) {
            return -1;
        }
    }
    if (buf_putc(&s->strings, 0) != 0) {
        c->h1_fail_status = 431;
        return -1;
    }
    s->in_field = false;
    return 0;
}

static int h1_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL || s->n_slots >= s->cap_slots) {
        return -1;
    }
    if (!s->in_value) {
        s->slots[s->n_slots].value_off = s->strings.len;
        s->in_value = true;
    }
    if (!stream_budget(s, c, len) || buf_append(&s->strings, at, len) != 0) {
        c->h1_fail_status = 431;
        return -1;
    }
    return 0;
}

static int h1_on_header_value_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL || s->n_slots >= s->cap_slots) {
        return -1;
    }
    if (!s->in_value) {
        s->slots[s->n_slots].value_off = s->strings.len;
    }
    /* llhttp leaves trailing whitespace in the value; the field value does not include it. */
    size_t start = s->slots[s->n_slots].value_off;
    while (s->strings.len > start && (s->strings.data[s->strings.len - 1] == ' ' ||
                                      s->strings.data[s->strings.len - 1] == '\t')) {
        s->strings.len--;
    }
    if (buf_putc(&s->strings, 0) != 0) {
        c->h1_fail_status = 431;
        return -1;
    }
    s->in_value = false;
    s->n_slots++;
    return 0;
}

static int h1_on_headers_complete(llhttp_t *p)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL) {
        return -1;
    }
    s->req.version = p->http_major * 10 + p->http_minor;
    s->req.method = llhttp_method_name((llhttp_method_t)p->method);
    s->head = p->method == HTTP_HEAD;
    /*
     * After an Upgrade or CONNECT the bytes that follow are another protocol: answer the request
     * and close.
     */
    s->keepalive = llhttp_should_keep_alive(p) && !p->upgrade;

    bool has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    bool chunked = (p->flags & F_CHUNKED) != 0;
    const char *expect = stream_find(s, "expect");
    bool continue_100 = false;
    if (expect != NULL) {
        if (strcasecmp(expect, "100-continue") != 0) {
            c->h1_fail_status = 417;
            return -1;
        }
        continue_100 = s->req.version >= 11;
    }

    if (has_length && p->content_length > c->cfg->max_body) {
        /* Do not read a body we will not keep: answer now and close (see h1_parse()). */
        s->req.body_too_large = true;
        c->h1_deliver_early = true;
        return -1;
    }
    if (continue_100 && ((has_length && p->content_length > 0) || chunked)) {
        static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (buf_append(&c->out, msg, sizeof(msg) - 1) != 0) {
            c->h1_fail_status = 503;
            return -1;
        }
    }
    if (has_length && p->content_length > 0) {
        /* One allocation of the right size; pages not yet written cost nothing. */
        body_reserve(c, &s->req.body, (size_t)p->content_length);
    }
    return 0;
}

static int h1_on_body(llhttp_t *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    struct http_stream *s = c->cur;
    if (s == NULL) {
        return -1;
    }
    c->progress = true;
    int rv = buf_append(&s->req.body, at, len);
    if (rv == DLOTEL_ERR_TOO_LARGE) {
        body_release(c, &s->req.body);
        s->req.body_too_large = true;
        c->h1_deliver_early = true;
        return -1;
    }
    if (rv != 0) {
        c->h1_fail_status = 503;
        return -1;
    }
    return 0;
}

static int h1_on_message_complete(llhttp_t *p)
{
    (void)p;
    /* Stop right after this request: the next one is parsed once this one is answered. */
    return HPE_PAUSED;
}

static const llhttp_settings_t h1_settings = {
    .on_message_begin = h1_on_message_begin,
    .on_url = h1_on_url,
    .on_url_complete = h1_on_url_complete,
    .on_header_field = h1_on_header_field,
    .on_header_field_complete = h1_on_header_field_complete,
    .on_header_value = h1_on_header_value,
    .on_header_value_complete = h1_on_header_value_complete,
    .on_headers_complete = h1_on_headers_complete,
    .on_body = h1_on_body,
    .on_message_complete = h1_on_message_complete,
};

/*
 * Writes a whole response into c->out. Reserves the total first so that it is either all there or
 * not at all.
 */
static int h1_write_response(struct http_conn *c, const struct http_response *r, int version,
                             bool head, bool close, const char *upgrade)
{
    char line[96];
    int status = r->status >= 100 && r->status <= 999 ? r->status : 500;
    int n_line = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    /* 1xx, 204 and 304 responses have neither a body nor a content-length (RFC 9110 8.6). */
    bool bodiless = status < 200 || status == 204 || status == 304;
    char length[64] = "";
    int n_length = 0;
    if (!bodiless) {
        n_length = snprintf(length, sizeof(length), "content-length: %zu\r\n", r->body_len);
    }
    const char *conn_hdr = NULL;
    if (upgrade != NULL) {
        /* Upgrade is hop-by-hop: Connection must name it (a 426 may close as well). */
        conn_hdr = close ? "connection: close, upgrade\r\n" : "connection: upgrade\r\n";
    } else if (close) {
        conn_hdr = "connection: close\r\n";
    } else if (version < 11) {
        conn_hdr = "connection: keep-alive\r\n";
    }
    size_t total = (size_t)n_line + (size_t)n_length + 2 + (conn_hdr ? strlen(conn_hdr) : 0);
    if (upgrade != NULL) {
        total += strlen("upgrade: \r\n") + strlen(upgrade);
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        if (!header_skipped(&r->headers[i])) {
            total += strlen(r->headers[i].name) + strlen(r->headers[i].value) + 4;
        }
    }
    bool with_body = !head && !bodiless && r->body_len > 0;
    if (with_body) {
        total += r->body_len;
    }
    int rv = buf_reserve(&c->out, total);
    if (rv != 0) {
        return rv;
    }
    /* The reservation above covers every append below. */
    buf_append(&c->out, line, (size_t)n_line);
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (header_skipped(h)) {
            continue;
        }
        buf_append(&c->out, h->name, strlen(h->name));
        buf_append(&c->out, ": ", 2);
        buf_append(&c->out, h->value, strlen(h->value));
        buf_append(&c->out, "\r\n", 2);
    }
    if (n_length > 0) {
        buf_append(&c->out, length, (size_t)n_length);
    }
    if (conn_hdr != NULL) {
        buf_append(&c->out, conn_hdr, strlen(conn_hdr));
    }
    if (upgrade != NULL) {
        buf_append(&c->out, "upgrade: ", 9);
        buf_append(&c->out, upgrade, strlen(upgrade));
        buf_append(&c->out, "\r\n", 2);
    }
    buf_append(&c->out, "\r\n", 2);
    if (with_body) {
        buf_append(&c->out, r->body, r->body_len);
    }
    return 0;
}

/* A response the server writes itself (errors); the connection closes after it. */
static void h1_fail(struct http_conn *c, int status, const char *text)
{
    struct http_header hdr = {"content-type", "text/plain; charset=utf-8"};
    struct http_response r = {
        .status = status,
        .headers = &hdr,
        .n_headers = 1,
        .body = (const uint8_t *)text,
        .body_len = strlen(text),
    };
    if (c->cur != NULL && c->cur->state == STREAM_COLLECTING) {
        stream_free(c->cur);
    }
    (void)h1_write_response(c, &r, 11, false, true, NULL);
    c->h1_stopped = true;
    c->close_when_done = true;
}

static void h1_deliver(struct http_conn *c)
{
    struct http_stream *s = c->cur;
    if (s == NULL || s->state != STREAM_COLLECTING) {
        return;
    }
    if (stream_finish_request(s) != 0) {
        h1_fail(c, 503, "out of memory\n");
        return;
    }
    s->state = STREAM_DELIVERED;
    c->n_awaiting++;
    c->cfg->handler(c->cfg->userdata, s, &s->req);
}

/*
 * True when the next bytes may be parsed: no response is owed, and the responses already made
 * are not piling up unsent (a client that pipelines and never reads gets no more of them).
 */
static bool h1_can_parse(const struct http_conn *c)
{
    return !c->closed && !c->h1_stopped && (c->cur == NULL || c->cur->state == STREAM_COLLECTING) &&
           c->out.len < OUT_HIGH_WATER;
}

/*
 * Parses until the input ends, a request waits for its response, or the connection stops taking
 * requests. Returns the bytes consumed.
 */
static size_t h1_parse(struct http_conn *c, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len && h1_can_parse(c)) {
        llhttp_errno_t err = llhttp_execute(&c->parser, (const char *)data + off, len - off);
        if (err == HPE_OK) {
            return len;
        }
        if (err == HPE_PAUSED) {
            /* on_message_complete: a whole request. */
            off = (size_t)((const uint8_t *)llhttp_get_error_pos(&c->parser) - data);
            llhttp_resume(&c->parser);
            h1_deliver(c);
            continue;
        }
        if (c->h1_deliver_early) {
            /* Body too large: the handler answers at once and the connection closes. */
            c->h1_deliver_early = false;
            c->h1_stopped = true;
            if (c->cur != NULL) {
                c->cur->keepalive = false;
            }
            h1_deliver(c);
            return len;
        }
        int status = c->h1_fail_status;
        const char *text;
        switch (status) {
        case 414:
            text = "request target too long\n";
            break;
        case 417:
            text = "unsupported expectation\n";
            break;
        case 431:
            text = "request header fields too large\n";
            break;
        case 500:
        case 503:
            text = "server error\n";
            break;
        default:
            if (err == HPE_INVALID_VERSION) {
                status = 505;
                text = "unsupported HTTP version\n";
            } else {
                status = 400;
                text = "malformed HTTP/1.1 request\n";
            }
            break;
        }
        log_debug(c->cfg->name, "HTTP/1.1 request rejected with %d: %s (%s)", status,
                  llhttp_errno_name(err), llhttp_get_error_reason(&c->parser));
        h1_fail(c, status, text);
        return len;
    }
    return off;
}

/* Parses the bytes kept while a response was owed, as far as possible. */
static void h1_drain(struct http_conn *c)
{
    while (c->pending_off < c->pending.len && h1_can_parse(c)) {
        size_t n = h1_parse(c, c->pending.data + c->pending_off, c->pending.len - c->pending_off);
        if (c->closed) {
            return;
        }
        c->pending_off += n;
        if (n == 0) {
            break;
        }
    }
    if (c->h1_stopped || c->pending_off >= c->pending.len) {
        buf_reset(&c->pending);
        c->pending_off = 0;
    }
}

/* After the peer's EOF: close once every complete request received has been answered. */
static void h1_eof(struct http_conn *c)
{
    if (!c->peer_eof || c->closed || c->h1_stopped || !h1_can_parse(c) ||
        c->pending_off < c->pending.len) {
        return;
    }
    if (c->cur != NULL) {
        stream_free(c->cur); /* A partial request: it will never complete. */
    }
    c->h1_stopped = true;
    c->close_when_done = true;
}

static void h1_keep(struct http_conn *c, const uint8_t *data, size_t len)
{
    if (c->pending_off > 0) {
        memmove(c->pending.data, c->pending.data + c->pending_off, c->pending.len - c->pending_off);
        c->pending.len -= c->pending_off;
        c->pending_off = 0;
    }
    if (buf_append(&c->pending, data, len) != 0) {
        log_warn(c->cfg->name, "pipelined input passed %zu bytes; closing the connection",
                 (size_t)PENDING_MAX);
        c->h1_stopped = true;
        c->close_when_done = true;
    }
}

static void h1_feed(struct http_conn *c, const uint8_t *data, size_t len)
{
    if (c->h1_stopped) {
        return; /* Draining a connection that is about to close. */
    }
    if (c->pending_off < c->pending.len || !h1_can_parse(c)) {
        h1_keep(c, data, len);
        h1_drain(c);
        return;
    }
    size_t n = h1_parse(c, data, len);
    if (n < len && !c->closed && !c->h1_stopped) {
        h1_keep(c, data + n, len - n);
    }
}

/*
 * The protocol a 426 (Upgrade Required) names: RFC 9110 section 15.5.22 says the answer MUST
 * carry Upgrade, which header_skipped() otherwise drops. NULL for any other answer.
 */
static const char *h1_required_upgrade(const struct http_response *r)
{
    if (r->status != 426) {
        return NULL;
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct http_header *h = &r->headers[i];
        if (h->name != NULL && h->value != NULL && strcasecmp(h->name, "upgrade") == 0 &&
            h->value[0] != '\0' && strpbrk(h->value, "\r\n") == NULL) {
            return h->value;
        }
    }
    return NULL;
}

static int h1_respond(struct http_conn *c, struct http_stream *s, const struct http_response *r)
{
    bool close = !s->keepalive || s->req.body_too_large || c->close_when_done || c->h1_stopped ||
                 (c->peer_eof && c->pending_off >= c->pending.len);
    int rv = h1_write_response(c, r, s->req.version, s->head, close, h1_required_upgrade(r));
    stream_free(s);
    if (rv != 0 || close) {
        c->h1_stopped = true;
        c->close_when_done = true;
    }
    return rv;
}

static void h1_start(struct http_conn *c)
{
    c->proto = HTTP_CONN_H1;
    llhttp_init(&c->parser, HTTP_REQUEST, &h1_settings);
    c->parser.data = c;
}

/* -------------------------------------------------------------------------------------------- */
/* HTTP/2 */

static int h2_submit(struct http_conn *c, struct http_stream *s, const struct http_response *r);

static int h2_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct http_conn *c = ud;
    if (c->closed) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct http_stream *s = stream_new(c);
    if (s == NULL) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* Resets this stream only. */
    }
    s->id = frame->hd.stream_id;
    s->req.version = 20;
    if (nghttp2_session_set_stream_user_data(session, s->id, s) != 0) {
        stream_free(s);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int h2_add_header(struct http_stream *s, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen, size_t *off_out)
{
    size_t name_off = s->strings.len;
    if (buf_reserve(&s->strings, namelen + valuelen + 2) != 0) {
        return -1;
    }
    buf_append(&s->strings, name, namelen);
    buf_putc(&s->strings, 0);
    size_t value_off = s->strings.len;
    buf_append(&s->strings, value, valuelen);
    buf_putc(&s->strings, 0);
    if (off_out != NULL) {
        *off_out = value_off;
        return 0;
    }
    if (stream_slot_reserve(s) != 0) {
        return -1;
    }
    s->slots[s->n_slots].name_off = name_off;
    s->slots[s->n_slots].value_off = value_off;
    s->n_slots++;
    return 0;
}

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    (void)flags;
    struct http_conn *c = ud;
    if (c->closed) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0; /* Request trailers are not kept. */
    }
    struct http_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL || s->limit_hit) {
        return 0;
    }
    bool pseudo = namelen > 0 && name[0] == ':';
    if (!stream_budget(s, c, namelen + valuelen) ||
        (!pseudo && s->n_slots >= c->cfg->max_headers)) {
        /* Keep decoding (HPACK state must stay in sync) but keep nothing; 431 at END_HEADERS. */
        s->limit_hit = true;
        stream_release_request(s);
        return 0;
    }
    int rv = 0;
    if (pseudo) {
        if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
            rv = h2_add_header(s, name, namelen, value, valuelen, &s->method_off);
        } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
            rv = h2_add_header(s, name, namelen, value, valuelen, &s->path_off);
        } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
            /* Handlers look for "host" whatever the protocol. */
            rv = h2_add_header(s, (const uint8_t *)"host", 4, value, valuelen, NULL);
        }
    } else {
        /* nghttp2 has already rejected upper-case names (RFC 9113 section 8.2). */
        rv = h2_add_header(s, name, namelen, value, valuelen, NULL);
    }
    if (rv != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/*
 * True when a body buffer of |n| bytes may be allocated ahead: a client's content-length is a
 * claim, and 128 streams claiming max_body would reserve (if not touch) gigabytes.
 */
static bool h2_may_reserve(const struct http_conn *c, size_t n)
{
    return c->h2_held + n <= (size_t)c->h2_window;
}

static int h2_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    struct http_conn *c = ud;
    if (c->closed) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    c->progress = true;
    struct http_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL || s->state != STREAM_COLLECTING || s->req.body_too_large || s->limit_hit ||
        s->refused) {
        /* Dropped: the window goes back to the client at once. */
        (void)nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    if (s->grpc && s->req.body.cap == 0 && len >= 5 && data[0] <= 1) {
        /*
         * gRPC clients send no content-length, but the message prefix says how large the
         * (usually only) message is: size the buffer once instead of doubling it eleven times.
         */
        uint32_t n =
            (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4];
        if ((size_t)n + 5 <= c->cfg->max_body && h2_may_reserve(c, (size_t)n + 5)) {
            body_reserve(c, &s->req.body, (size_t)n + 5);
        }
    }
    int rv = buf_append(&s->req.body, data, len);
    if (rv == DLOTEL_ERR_TOO_LARGE) {
        body_release(c, &s->req.body);
        s->req.body_too_large = true;
        h2_give_back(c, s);
        (void)nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    if (rv != 0) {
        /* nghttp2 resets the stream; the bytes were not kept. */
        (void)nghttp2_session_consume(session, stream_id, len);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    /*
     * The stream window is reopened at once (max_body bounds a stream), the connection window
     * only when the body is released: so the window is what bounds the bytes held (h2_flow()).
     */
    (void)nghttp2_session_consume_stream(session, stream_id, len);
    s->held += len;
    c->h2_held += len;
    return 0;
}

static void h2_deliver(struct http_conn *c, struct http_stream *s)
{
    if (s->state != STREAM_COLLECTING || s->limit_hit) {
        return;
    }
    if (stream_finish_request(s) != 0) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s->state = STREAM_DELIVERED;
    c->n_awaiting++;
    c->cfg->handler(c->cfg->userdata, s, &s->req);
}

/* A 431 the server sends itself when a request's header block passed the limits. */
static void h2_refuse_headers(struct http_conn *c, struct http_stream *s)
{
    static const char text[] = "request header fields too large\n";
    struct http_header hdr = {"content-type", "text/plain; charset=utf-8"};
    struct http_response r = {
        .status = 431,
        .headers = &hdr,
        .n_headers = 1,
        .body = (const uint8_t *)text,
        .body_len = sizeof(text) - 1,
    };
    if (h2_submit(c, s, &r) != 0) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    }
}

static int h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    struct http_conn *c = ud;
    if (c->closed) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
        return 0;
    }
    struct http_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s == NULL || s->state != STREAM_COLLECTING || s->refused) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (s->limit_hit) {
            h2_refuse_headers(c, s);
            return 0;
        }
        const char *ct = stream_find(s, "content-type");
        s->grpc = ct != NULL && strncmp(ct, "application/grpc", 16) == 0;
        /* Size the body buffer once when the client says how large the body is. */
        const char *cl = stream_find(s, "content-length");
        if (cl != NULL) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (end != cl && *end == '\0' && n > 0 && n <= c->cfg->max_body &&
                h2_may_reserve(c, (size_t)n)) {
                body_reserve(c, &s->req.body, (size_t)n);
            }
        }
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        h2_deliver(c, s);
    }
    return 0;
}

/* A late request's answer went out: the client may stop sending its body (RFC 9113 8.1). */
static int h2_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        return 0;
    }
    struct http_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s != NULL && s->reset_after) {
        s->reset_after = false;
        /* Not when the request ended meanwhile: the stream is then closed already. */
        if (nghttp2_session_get_stream_remote_close(session, s->id) == 0) {
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *ud)
{
    (void)error_code;
    struct http_conn *c = ud;
    if (c->closed) {
        return 0; /* http_conn_free() owns whatever is left. */
    }
    struct http_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s == NULL) {
        return 0;
    }
    if (s->state == STREAM_DELIVERED) {
        /* Reset before the handler answered: its http_respond() will free the orphan. */
        stream_orphan(s);
    } else {
        stream_free(s);
    }
    return 0;
}

static ssize_t h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *ud)
{
    (void)ud;
    struct http_stream *s = source->ptr;
    size_t n = s->resp_len - s->resp_off;
    if (n > length) {
        n = length;
    }
    if (n > 0) {
        memcpy(buf, s->resp + s->resp_off, n);
        s->resp_off += n;
    }
    if (s->resp_off == s->resp_len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (s->n_trailers > 0) {
            /* gRPC: grpc-status travels in trailers, which end the stream instead of DATA. */
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(session, stream_id, s->trailers, s->n_trailers) != 0) {
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
        }
    }
    return (ssize_t)n;
}

static int h2_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *ud)
{
    (void)session;
    (void)lib_error_code;
    struct http_conn *c = ud;
    log_debug(c->cfg->name, "HTTP/2: %.*s", (int)len, msg);
    return 0;
}

static bool nv_name_ok(const char *name)
{
    for (const char *p = name; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            return false;
        }
    }
    return true;
}

/*
 * Copies |hdrs| into one allocation holding the nghttp2_nv array and the strings, so that they
 * can be submitted later (trailers are submitted from the body callback).
 */
static nghttp2_nv *nv_copy(const struct http_header *hdrs, size_t n, size_t *n_out)
{
    size_t bytes = n * sizeof(nghttp2_nv);
    for (size_t i = 0; i < n; i++) {
        if (!header_skipped(&hdrs[i]) && nv_name_ok(hdrs[i].name)) {
            bytes += strlen(hdrs[i].name) + strlen(hdrs[i].value) + 2;
        }
    }
    nghttp2_nv *nv = malloc(bytes > 0 ? bytes : 1);
    if (nv == NULL) {
        return NULL;
    }
    char *p = (char *)(nv + n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (header_skipped(&hdrs[i]) || !nv_name_ok(hdrs[i].name)) {
            continue;
        }
        size_t nl = strlen(hdrs[i].name);
        size_t vl = strlen(hdrs[i].value);
        memcpy(p, hdrs[i].name, nl + 1);
        nv[k].name = (uint8_t *)p;
        nv[k].namelen = nl;
        p += nl + 1;
        memcpy(p, hdrs[i].value, vl + 1);
        nv[k].value = (uint8_t *)p;
        nv[k].valuelen = vl;
        p += vl + 1;
        nv[k].flags = NGHTTP2_NV_FLAG_NONE;
        k++;
    }
    *n_out = k;
    return nv;
}

/* Submits the response for |s| and makes it SENDING. On failure |s| is unchanged. */
static int h2_submit(struct http_conn *c, struct http_stream *s, const struct http_response *r)
{
    char status[8];
    char length[24];
    int st = r->status >= 100 && r->status <= 999 ? r->status : 500;
    snprintf(status, sizeof(status), "%d", st);
    int n_length = snprintf(length, sizeof(length), "%zu", r->body_len);

    size_t n_hdrs = 0;
    nghttp2_nv *hdrs = nv_copy(r->headers, r->n_headers, &n_hdrs);
    if (hdrs == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    nghttp2_nv *nva = malloc((n_hdrs + 2) * sizeof(*nva));
    uint8_t *body = NULL;
    nghttp2_nv *trailers = NULL;
    size_t n_trailers = 0;
    if (nva == NULL) {
        goto fail;
    }
    if (r->body_len > 0) {
        body = malloc(r->body_len);
        if (body == NULL) {
            goto fail;
        }
        memcpy(body, r->body, r->body_len);
    }
    if (r->n_trailers > 0) {
        trailers = nv_copy(r->trailers, r->n_trailers, &n_trailers);
        if (trailers == NULL) {
            goto fail;
        }
    }

    size_t n = 0;
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status),
                            NGHTTP2_NV_FLAG_NONE};
    memcpy(nva + n, hdrs, n_hdrs * sizeof(*nva));
    n += n_hdrs;
    if (n_trailers == 0) {
        nva[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)length, 14,
                                (size_t)n_length, NGHTTP2_NV_FLAG_NONE};
    }

    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2_read_body};
    bool with_data = r->body_len > 0 || n_trailers > 0;
    /* nghttp2 copies the header block; only the body and trailers must outlive this call. */
    int rv = nghttp2_submit_response(c->h2, s->id, nva, n, with_data ? &prd : NULL);
    free(nva);
    free(hdrs);
    if (rv != 0) {
        free(body);
        free(trailers);
        log_debug(c->cfg->name, "HTTP/2 response on stream %d failed: %s", (int)s->id,
                  nghttp2_strerror(rv));
        return DLOTEL_ERR_CLOSED;
    }
    stream_release_request(s);
    s->resp = body;
    s->resp_len = r->body_len;
    s->resp_off = 0;
    s->trailers = trailers;
    s->n_trailers = n_trailers;
    s->state = STREAM_SENDING;
    return 0;

fail:
    free(trailers);
    free(body);
    free(nva);
    free(hdrs);
    return DLOTEL_ERR_NOMEM;
}

static int h2_respond(struct http_conn *c, struct http_stream *s, const struct http_response *r)
{
    int rv = h2_submit(c, s, r);
    if (rv != 0) {
        /* The stream stays known to nghttp2 until it closes; it must not see freed memory. */
        nghttp2_session_set_stream_user_data(c->h2, s->id, NULL);
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
        stream_free(s);
    }
    return rv;
}

/* Moves frames from nghttp2 into c->out, up to the high-water mark. */
static void h2_pull(struct http_conn *c)
{
    while (c->out.len < OUT_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            log_debug(c->cfg->name, "HTTP/2 send failed: %s", nghttp2_strerror((int)n));
            c->h2_send_failed = true;
            c->close_when_done = true;
            return;
        }
        if (n == 0) {
            break;
        }
        if (buf_append(&c->out, data, (size_t)n) != 0) {
            log_warn(c->cfg->name, "HTTP/2 output buffer full; closing the connection");
            c->h2_send_failed = true;
            c->close_when_done = true;
            return;
        }
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        c->close_when_done = true;
    }
}

/* The connection window: cfg->max_conn_body, defaulted and clamped (see http_conn.h). */
static int32_t h2_conn_window(const struct http_conn_config *cfg)
{
    size_t w = cfg->max_conn_body;
    if (w == 0) {
        w = cfg->max_body <= H2_CONN_BODY_MIN / 2 ? H2_CONN_BODY_MIN : 2 * cfg->max_body;
    }
    /* One whole body must always fit, or a stream of max_body could never complete. */
    if (cfg->max_body <= H2_CONN_BODY_MAX && w < cfg->max_body + (64 << 10)) {
        w = cfg->max_body + (64 << 10);
    }
    if (w < (128 << 10)) {
        w = 128 << 10;
    }
    if (w > H2_CONN_BODY_MAX) {
        w = H2_CONN_BODY_MAX;
    }
    return (int32_t)w;
}

/*
 * HTTP/2 flow control on the connection's body budget, run after every change. The connection
 * window is h2_window and bytes held in bodies are given back only when released, so a client
 * that obeys flow control never makes the connection hold more than h2_window: it is slowed, not
 * refused. Two things remain to do here:
 *
 * - Bytes released go back to the client as soon as its window runs low, instead of when half
 *   the window was released (nghttp2's rule), so that the window never sits closed on bytes the
 *   server no longer holds.
 * - When the window is closed and every byte held belongs to a request still arriving, no
 *   request can complete and nothing will be released: the newest such stream is refused
 *   (RST_STREAM REFUSED_STREAM: nothing was processed, clients, gRPC's included, retry it) and
 *   its bytes go back to the client, so that the others can finish.
 */
static void h2_flow(struct http_conn *c)
{
    if (c->h2 == NULL || c->h2_window == 0 || c->close_when_done) {
        return;
    }
    for (;;) {
        int32_t avail = nghttp2_session_get_local_window_size(c->h2);
        int64_t unsent = (int64_t)c->h2_window - avail - (int64_t)c->h2_held;
        if (unsent > 0 && (avail < c->h2_window / 4 || avail < H2_WINDOW_STALLED)) {
            if (nghttp2_submit_window_update(c->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)unsent) != 0) {
                return;
            }
            avail = nghttp2_session_get_local_window_size(c->h2);
        }
        if (avail >= H2_WINDOW_STALLED) {
            return;
        }
        struct http_stream *victim = NULL;
        for (struct http_stream *s = c->streams; s != NULL; s = s->next) {
            if (s->held == 0) {
                continue;
            }
            if (s->state != STREAM_COLLECTING) {
                return; /* Its response will release it. */
            }
            if (!s->refused && (victim == NULL || s->id > victim->id)) {
                victim = s;
            }
        }
        if (victim == NULL) {
            return;
        }
        log_debug(c->cfg->name,
                  "HTTP/2: %zu body bytes held on one connection, its window: refusing stream %d",
                  c->h2_held, (int)victim->id);
        if (nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, victim->id,
                                      NGHTTP2_REFUSED_STREAM) != 0) {
            return;
        }
        victim->refused = true;
        c->h2_refused++;
        body_release(c, &victim->req.body);
        h2_give_back(c, victim);
    }
}

static int h2_start(struct http_conn *c)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    int rv = DLOTEL_ERR_NOMEM;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        return DLOTEL_ERR_NOMEM;
    }
    if (nghttp2_option_new(&opt) != 0) {
        goto fail_opt;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2_on_frame_send);
    nghttp2_session_callbacks_set_error_callback2(cbs, h2_error);
    /* Closed streams need not be kept for the priority tree (priorities are off, below). */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* The connection window bounds the body bytes held: it reopens as bodies are released. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /*
     * Flood limits: nghttp2's defaults (1000 queued SETTINGS/PING acks, 32 SETTINGS entries, 8
     * CONTINUATIONs, RST_STREAM rate 1000 burst / 33 per second) are what we want. Peers cannot
     * grow the outbound queue past them because h2_pull() stops draining it when the socket is
     * slow.
     */
    if (nghttp2_session_server_new2(&c->h2, cbs, c, opt) != 0) {
        goto fail_session;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_CONCURRENT_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, H2_MAX_FRAME_SIZE},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)(c->cfg->max_header_bytes + 32 * c->cfg->max_headers)},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    c->h2_window = h2_conn_window(c->cfg);
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, c->h2_window) != 0) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
        goto fail_session;
    }
    c->proto = HTTP_CONN_H2;
    rv = 0;

fail_session:
    nghttp2_option_del(opt);
fail_opt:
    nghttp2_session_callbacks_del(cbs);
    return rv;
}

static void h2_feed(struct http_conn *c, const uint8_t *data, size_t len)
{
    if (c->h2 == NULL || c->close_when_done) {
        return;
    }
    c->progress = true;
    ssize_t n = nghttp2_session_mem_recv(c->h2, data, len);
    if (c->closed) {
        return; /* A handler shut the connection down; nghttp2 must not run again. */
    }
    if (n < 0) {
        log_debug(c->cfg->name, "HTTP/2 connection error: %s", nghttp2_strerror((int)n));
        nghttp2_session_terminate_session(
            c->h2, n == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
        c->close_when_done = true;
    }
}

/* -------------------------------------------------------------------------------------------- */
/* Protocol detection */

/* HTTP/1.1 on a listener that speaks only HTTP/2 (the OTLP/gRPC port). */
static void refuse_http1(struct http_conn *c)
{
    struct http_response r = {
        .status = 505,
        .body = (const uint8_t *)"this port speaks HTTP/2 only (gRPC)\n",
        .body_len = 36,
    };
    h1_start(c);
    (void)h1_write_response(c, &r, 11, false, true, NULL);
    c->h1_stopped = true;
    c->close_when_done = true;
}

/* The HTTP/2 preface on a listener that speaks only HTTP/1.1: SETTINGS, then GOAWAY. */
static void refuse_http2(struct http_conn *c)
{
    /* clang-format off */
    static const uint8_t frames[] = {
        0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0,   /* An empty SETTINGS frame. */
        0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0,     /* GOAWAY, 8 bytes of payload: */
        0, 0, 0, 0,                                 /* last stream id 0, */
        0, 0, 0, NGHTTP2_HTTP_1_1_REQUIRED,         /* error code. */
    };
    /* clang-format on */
    h1_start(c);
    (void)buf_append(&c->out, frames, sizeof(frames));
    c->h1_stopped = true;
    c->close_when_done = true;
}

static void detect_feed(struct http_conn *c, const uint8_t *data, size_t len)
{
    size_t want = sizeof(h2_preface) - c->detect_len;
    size_t n = len < want ? len : want;
    if (memcmp(data, h2_preface + c->detect_len, n) == 0) {
        memcpy(c->detect + c->detect_len, data, n);
        c->detect_len += n;
        if (c->detect_len < sizeof(h2_preface)) {
            return; /* The preface may arrive split across reads. */
        }
        if (!c->cfg->http2) {
            refuse_http2(c);
            return;
        }
        if (h2_start(c) != 0) {
            log_warn(c->cfg->name, "out of memory starting an HTTP/2 session");
            c->close_when_done = true;
            return;
        }
        h2_feed(c, c->detect, c->detect_len);
        if (n < len) {
            h2_feed(c, data + n, len - n);
        }
        return;
    }
    if (!c->cfg->http1) {
        refuse_http1(c);
        return;
    }
    h1_start(c);
    if (c->detect_len > 0) {
        h1_feed(c, c->detect, c->detect_len);
    }
    h1_feed(c, data, len);
}

/* -------------------------------------------------------------------------------------------- */
/* The connection */

int http_conn_new(struct http_conn **out, const struct http_conn_config *cfg,
                  http_conn_update_fn update, void *io)
{
    struct http_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    c->cfg = cfg;
    c->update = update;
    c->io = io;
    buf_init(&c->out, OUT_MAX);
    buf_init(&c->pending, PENDING_MAX);
    /*
     * Closing a socket with unread input makes the kernel send a reset, which can destroy the
     * last response before the client reads it; so every close drains first unless the peer
     * already ended (http_conn_eof()).
     */
    c->linger = true;
    /*
     * Detection runs even when one protocol is off, so that the other gets a proper refusal in
     * its own framing. It costs one byte comparison for HTTP/1.1.
     */
    *out = c;
    return 0;
}

/* Runs what can run now that nothing is nested (parsing kept bytes, nghttp2 output). */
static void conn_run(struct http_conn *c)
{
    if (c->depth > 0) {
        return;
    }
    c->depth++;
    if (!c->closed) {
        if (c->proto == HTTP_CONN_H1) {
            h1_drain(c);
            h1_eof(c);
        } else if (c->proto == HTTP_CONN_H2 && c->h2 != NULL && !c->h2_send_failed) {
            h2_flow(c);
            h2_pull(c);
        } else if (c->proto == HTTP_CONN_RAW && c->up_want_drained && c->out.len == 0 &&
                   c->io_pending == 0 && c->up_h != NULL) {
            c->up_want_drained = false;
            if (c->up_h->on_drained != NULL) {
                c->up_h->on_drained(c->up_userdata);
            }
        }
    }
    c->depth--;
    conn_notify(c);
}

void http_conn_feed(struct http_conn *c, const uint8_t *data, size_t len)
{
    if (c->closed || len == 0) {
        return;
    }
    c->depth++;
    switch (c->proto) {
    case HTTP_CONN_DETECT:
        detect_feed(c, data, len);
        break;
    case HTTP_CONN_H1:
        h1_feed(c, data, len);
        break;
    case HTTP_CONN_H2:
        h2_feed(c, data, len);
        break;
    case HTTP_CONN_RAW:
        if (c->up_h != NULL) {
            c->up_h->on_data(c->up_userdata, data, len);
        }
        break;
    }
    c->depth--;
    conn_run(c);
}

void http_conn_eof(struct http_conn *c)
{
    if (c->closed) {
        return;
    }
    c->linger = false; /* Nothing more will come to drain. */
    c->peer_eof = true;
    if (c->proto != HTTP_CONN_H1) {
        c->close_when_done = true;
    }
    /* HTTP/1.1 answers what it already received first (a client may half-close): h1_eof(). */
    conn_run(c);
}

void http_conn_written(struct http_conn *c)
{
    conn_run(c);
}

bool http_conn_wants_read(const struct http_conn *c)
{
    if (c->closed) {
        return false;
    }
    switch (c->proto) {
    case HTTP_CONN_H1:
        /* Once stopped, input is read and dropped until the connection closes. */
        return c->h1_stopped || c->pending.len - c->pending_off < PENDING_READ_LIMIT;
    case HTTP_CONN_H2:
        /* A peer that does not read what we send gets no more of our attention. */
        return c->out.len < OUT_HIGH_WATER;
    case HTTP_CONN_RAW:
        /* The new owner decides (http_upgraded_set_reading()); once closing, the server drains. */
        return c->up_reading || c->close_when_done;
    default:
        return true;
    }
}

bool http_conn_finished(const struct http_conn *c)
{
    if (c->closed) {
        return true;
    }
    if (!c->close_when_done) {
        return false;
    }
    if (c->proto == HTTP_CONN_H2 && c->h2 != NULL) {
        /* Whatever nghttp2 still queues (a GOAWAY) goes first; unanswered streams die. */
        return c->h2_send_failed || !nghttp2_session_want_write(c->h2);
    }
    return c->n_awaiting == 0;
}

bool http_conn_idle(struct http_conn *c)
{
    if (c->closed || c->proto != HTTP_CONN_H2 || c->h2 == NULL || c->close_when_done) {
        return false;
    }
    /* GOAWAY(NO_ERROR) lets gRPC clients retry elsewhere instead of failing a call in flight. */
    nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
    c->close_when_done = true;
    conn_run(c);
    return true;
}

bool http_conn_busy(const struct http_conn *c)
{
    /* An upgraded connection keeps itself alive (WebSocket pings): no idle timeout. */
    return !c->closed && (c->n_awaiting > 0 || (c->proto == HTTP_CONN_RAW && !c->close_when_done));
}

uint64_t http_conn_request_due(const struct http_conn *c)
{
    uint64_t t = c->cfg->request_timeout_ms;
    if (c->closed || c->close_when_done || t == 0) {
        return UINT64_MAX;
    }
    uint64_t due = UINT64_MAX;
    if (c->proto == HTTP_CONN_H1) {
        if (c->cur != NULL && c->cur->state == STREAM_COLLECTING && !c->h1_stopped) {
            due = c->cur->started_ms + t;
        }
    } else if (c->proto == HTTP_CONN_H2) {
        for (const struct http_stream *s = c->streams; s != NULL; s = s->next) {
            if (s->state == STREAM_COLLECTING && !s->refused && s->started_ms + t < due) {
                due = s->started_ms + t;
            }
        }
    }
    return due;
}

/*
 * Answers an HTTP/2 request that did not arrive in time, without a body so that the reset that
 * follows (RFC 9113 section 8.1: the client may stop sending) cannot overtake it. gRPC gets a
 * Trailers-Only DEADLINE_EXCEEDED it understands instead of an HTTP status.
 */
static void h2_expire(struct http_conn *c, struct http_stream *s)
{
    char msg[80];
    snprintf(msg, sizeof(msg), "request not complete within %u ms", c->cfg->request_timeout_ms);
#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }
    const nghttp2_nv grpc[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                               NV("grpc-status", "4"), NV("grpc-message", msg)};
    const nghttp2_nv plain[] = {NV(":status", "408"), NV("content-length", "0")};
#undef NV
    int rv = s->grpc ? nghttp2_submit_response(c->h2, s->id, grpc, 4, NULL)
                     : nghttp2_submit_response(c->h2, s->id, plain, 2, NULL);
    log_debug(c->cfg->name, "HTTP/2 stream %d: %s", (int)s->id, msg);
    if (rv == 0) {
        /* nghttp2 would send a reset submitted now before the answer: h2_on_frame_send(). */
        s->reset_after = true;
    } else {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    }
    /* Data still arriving for it is dropped; nghttp2's close callback frees it. */
    stream_release_request(s);
    s->state = STREAM_SENDING;
}

void http_conn_request_timeout(struct http_conn *c, uint64_t now)
{
    if (http_conn_request_due(c) > now) {
        return;
    }
    uint64_t t = c->cfg->request_timeout_ms;
    c->depth++;
    if (c->proto == HTTP_CONN_H1) {
        log_debug(c->cfg->name, "HTTP/1.1 request not complete within %u ms; answering 408",
                  c->cfg->request_timeout_ms);
        h1_fail(c, 408, "request not complete in time\n");
    } else if (c->proto == HTTP_CONN_H2 && c->h2 != NULL) {
        for (struct http_stream *s = c->streams; s != NULL; s = s->next) {
            if (s->state == STREAM_COLLECTING && !s->refused && s->started_ms + t <= now) {
                h2_expire(c, s);
            }
        }
    }
    c->depth--;
    conn_run(c);
}

void http_conn_shutdown(struct http_conn *c)
{
    if (c->closed) {
        return;
    }
    c->closed = true;
    struct http_stream *s = c->streams;
    while (s != NULL) {
        struct http_stream *next = s->next;
        if (s->state == STREAM_DELIVERED) {
            stream_orphan(s);
        }
        s = next;
    }
    c->cur = NULL;
    c->n_awaiting = 0;
}

void http_conn_free(struct http_conn *c)
{
    if (c == NULL) {
        return;
    }
    http_conn_shutdown(c);
    /* The owner of an upgraded connection hears of its end, once, before the handle goes. */
    if (c->up_h != NULL) {
        const struct http_upgrade_handler *h = c->up_h;
        c->up_h = NULL;
        if (h->on_close != NULL) {
            h->on_close(c->up_userdata);
        }
    }
    /* The session first: it may point at streams but never calls back while being deleted. */
    if (c->h2 != NULL) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    while (c->streams != NULL) {
        stream_free(c->streams);
    }
    buf_cleanup(&c->out);
    buf_cleanup(&c->pending);
    free(c);
}

/* -------------------------------------------------------------------------------------------- */

int http_respond(struct http_stream *s, const struct http_response *resp)
{
    struct http_conn *c = s->conn;
    if (c == NULL || s->state != STREAM_DELIVERED) {
        /* An orphan: the connection or the HTTP/2 stream went away first. */
        stream_free(s);
        return DLOTEL_ERR_CLOSED;
    }
    c->n_awaiting--;
    int rv;
    c->depth++;
    if (c->proto == HTTP_CONN_H2) {
        rv = h2_respond(c, s, resp);
    } else {
        rv = h1_respond(c, s, resp);
    }
    c->depth--;
    /* Outside a feed this is where the next pipelined request gets parsed or frames go out. */
    conn_run(c);
    return rv;
}

/* -------------------------------------------------------------------------------------------- */
/* Upgraded connections */

int http_upgrade(struct http_stream *s, const struct http_response *resp,
                 const struct http_upgrade_handler *h, void *userdata)
{
    if (resp == NULL || h == NULL || h->on_data == NULL || resp->status < 100 ||
        resp->status > 199) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct http_conn *c = s->conn;
    if (c == NULL || s->state != STREAM_DELIVERED) {
        stream_free(s);
        return DLOTEL_ERR_CLOSED;
    }
    if (c->proto != HTTP_CONN_H1 || s->req.version != 11) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    const char *proto = NULL;
    for (size_t i = 0; i < resp->n_headers; i++) {
        const struct http_header *hd = &resp->headers[i];
        if (hd->name != NULL && hd->value != NULL && strcasecmp(hd->name, "upgrade") == 0) {
            proto = hd->value;
        }
    }
    if (proto == NULL || proto[0] == '\0' || strpbrk(proto, "\r\n") != NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    c->n_awaiting--;
    c->depth++;
    int rv = h1_write_response(c, resp, 11, false, false, proto);
    if (rv != 0) {
        stream_free(s);
        c->h1_stopped = true;
        c->close_when_done = true;
        c->depth--;
        conn_run(c);
        return DLOTEL_ERR_NOMEM;
    }
    /* The request is done with; the stream lives on as the connection's handle. */
    stream_release_request(s);
    s->state = STREAM_UPGRADED;
    c->cur = NULL;
    c->proto = HTTP_CONN_RAW;
    c->up_h = h;
    c->up_userdata = userdata;
    c->up_reading = true;
    /* Whatever the client sent behind its request already belongs to the new protocol. */
    if (c->pending_off < c->pending.len) {
        c->up_h->on_data(c->up_userdata, c->pending.data + c->pending_off,
                         c->pending.len - c->pending_off);
    }
    buf_cleanup(&c->pending);
    c->pending_off = 0;
    c->depth--;
    conn_notify(c);
    return 0;
}

int http_upgraded_send(struct http_stream *s, const uint8_t *data, size_t len)
{
    struct http_conn *c = s->conn;
    if (c == NULL || c->closed || c->close_when_done || c->up_h == NULL) {
        return DLOTEL_ERR_CLOSED;
    }
    if (len == 0) {
        return 0;
    }
    int rv = buf_append(&c->out, data, len);
    if (rv != 0) {
        return rv == DLOTEL_ERR_NOMEM ? rv : DLOTEL_ERR_TOO_LARGE;
    }
    c->up_want_drained = true;
    conn_notify(c);
    return 0;
}

size_t http_upgraded_queued(const struct http_stream *s)
{
    const struct http_conn *c = s->conn;
    return c == NULL ? 0 : c->out.len + c->io_pending;
}

void http_upgraded_set_reading(struct http_stream *s, bool reading)
{
    struct http_conn *c = s->conn;
    if (c == NULL || c->closed || c->up_reading == reading) {
        return;
    }
    c->up_reading = reading;
    conn_notify(c);
}

void http_upgraded_close(struct http_stream *s)
{
    struct http_conn *c = s->conn;
    if (c == NULL) {
        return;
    }
    c->up_h = NULL;
    c->up_userdata = NULL;
    if (!c->closed && !c->close_when_done) {
        c->close_when_done = true;
        conn_notify(c);
    }
}
