/*
 * The fuzz harness shared by fuzz_http1 and fuzz_http2: arbitrary bytes into one connection with
 * no socket. The first input byte steers the harness so that the fuzzer explores the
 * connection's lifetimes too, not only the parsers:
 *
 *   bits 0-4  feed the input in pieces of 1..32 bytes (pieces split requests and frames anywhere);
 *             an even piece size also means a small max_body (512), an odd one 64 KiB (bodies
 *             then go through the buffer pool)
 *   bit 5     feed it all at once instead
 *   bit 6     answer asynchronously: keep streams and answer them between pieces, some only after
 *             the connection is freed (they must come back DLOTEL_ERR_CLOSED)
 *   bit 7     end with EOF from the peer before freeing
 *
 * Output is dropped. Crashes, leaks and sanitizer reports are the findings.
 */
#include "net/http_conn_fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "dlotel.h"

#define MAX_HELD 8

static struct {
    struct http_buf_pool pool;
    bool async;
    struct http_stream *held[MAX_HELD];
    size_t n_held;
} fz;

static void answer(struct http_stream *s, const struct http_request *req)
{
    static const struct http_header hdrs[] = {{"content-type", "text/plain"}};
    static const struct http_header trailers[] = {{"grpc-status", "0"}};
    struct http_response r = {
        .status = req != NULL && req->body_too_large ? 413 : 200,
        .headers = hdrs,
        .n_headers = 1,
        .body = (const uint8_t *)"ok\n",
        .body_len = 3,
        .trailers = trailers,
        .n_trailers = 1,
    };
    (void)http_respond(s, &r);
}

static void handler(void *userdata, struct http_stream *s, const struct http_request *req)
{
    (void)userdata;
    /* Touch everything the handler may read, so the sanitizers check it is valid. */
    volatile size_t sum = strlen(req->method) + strlen(req->path) + req->body.len;
    for (size_t i = 0; i < req->n_headers; i++) {
        sum += strlen(req->headers[i].name) + strlen(req->headers[i].value);
    }
    if (req->body.len > 0) {
        sum += req->body.data[0] + req->body.data[req->body.len - 1];
    }
    (void)sum;
    if (fz.async && fz.n_held < MAX_HELD) {
        fz.held[fz.n_held++] = s;
        return;
    }
    answer(s, req);
}

static void answer_held(size_t keep)
{
    while (fz.n_held > keep) {
        struct http_stream *s = fz.held[0];
        memmove(fz.held, fz.held + 1, (fz.n_held - 1) * sizeof(fz.held[0]));
        fz.n_held--;
        answer(s, NULL);
    }
}

static void drain(struct http_conn *c)
{
    /* Pretend every byte was written; HTTP/2 then produces the next frames. */
    for (int i = 0; i < 1000 && c->out.len > 0; i++) {
        buf_reset(&c->out);
        http_conn_written(c);
    }
}

void http_conn_fuzz_run(const uint8_t *data, size_t size, const uint8_t *prefix, size_t prefix_len,
                        bool http1, bool http2)
{
    if (size < 1) {
        return;
    }
    uint8_t ctl = data[0];
    data++;
    size--;
    struct http_conn_config cfg = {
        .name = "fuzz",
        .http1 = http1,
        .http2 = http2,
        .max_body = (ctl & 1) ? 64 << 10 : 512,
        .max_header_bytes = 1024,
        .max_headers = 16,
        .handler = handler,
        .pool = &fz.pool,
    };
    memset(&fz, 0, sizeof(fz));
    fz.pool.max_bytes = 256 << 10;
    fz.async = (ctl & 0x40) != 0;
    struct http_conn *c;
    if (http_conn_new(&c, &cfg, NULL, NULL) != 0) {
        return;
    }
    if (prefix_len > 0) {
        http_conn_feed(c, prefix, prefix_len);
        drain(c);
    }
    size_t piece = (ctl & 0x20) ? size : (size_t)(ctl & 0x1f) + 1;
    size_t round = 0;
    for (size_t off = 0; off < size && !http_conn_finished(c); off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        http_conn_feed(c, data + off, n);
        drain(c);
        if (fz.async && (++round % 2) == 0) {
            answer_held(fz.n_held / 2);
            drain(c);
        }
    }
    if (ctl & 0x80) {
        http_conn_eof(c);
        answer_held(fz.n_held / 2);
        drain(c);
    }
    http_conn_free(c);
    /* These are orphans now. */
    answer_held(0);
    http_buf_pool_cleanup(&fz.pool);
}
