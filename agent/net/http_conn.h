/*
 * The protocol half of one HTTP connection, without a socket: bytes go in with http_conn_feed(),
 * bytes to send collect in conn->out, and the I/O layer (http_server.c, or a fuzz target) is told
 * through one callback when there is something to do. Everything here runs on one thread.
 *
 * Internal to agent/net/: the server and the fuzz targets include it, nobody else.
 */
#ifndef DLOTEL_NET_HTTP_CONN_H
#define DLOTEL_NET_HTTP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <nghttp2/nghttp2.h>

#include "core/buf.h"
#include "net/http.h"

/*
 * Request body buffers kept for reuse. Bodies of a few hundred KiB are the common case; handing
 * each back to malloc makes glibc trim and regrow its heap, and the page faults that follow cost
 * more than parsing (measured: 3x the CPU per 240 KB request with 4 concurrent streams).
 */
#define HTTP_BUF_POOL_SLOTS 32
struct http_buf_pool {
    size_t max_bytes; /* Capacity kept in total. */
    size_t bytes;
    size_t n;
    struct {
        uint8_t *data;
        size_t cap;
    } items[HTTP_BUF_POOL_SLOTS];
};

/* Frees what the pool holds; the pool is empty and usable afterwards. */
void http_buf_pool_cleanup(struct http_buf_pool *pool);

/* Limits and the handler, shared by every connection of a listener. */
struct http_conn_config {
    const char *name; /* Log component. */
    bool http1;
    bool http2;
    size_t max_body;
    size_t max_header_bytes;
    size_t max_headers;
    http_handler_fn handler;
    void *userdata;
    struct http_buf_pool *pool; /* May be NULL. */
    /*
     * HTTP/2: request body bytes one connection may hold at once, which is also the connection's
     * flow-control window (see h2_flow()). 0 means max(2 x max_body, 64 MiB); clamped to
     * [max_body + 1 MiB, 1 GiB].
     */
    size_t max_conn_body;
    /* A request's headers and body must arrive within this long of its first byte; 0: no limit. */
    uint32_t request_timeout_ms;
    /* Milliseconds of a monotonic clock, for request deadlines; NULL reads as 0 (fuzzing). */
    uint64_t (*clock)(void *clock_ctx);
    void *clock_ctx;
};

struct http_conn;

/*
 * Called whenever the connection's state changed outside a nested call: output appeared in
 * c->out, the connection wants to stop or resume reading, or it is done. The callback inspects
 * the connection with the functions below. It must not free the connection.
 */
typedef void (*http_conn_update_fn)(struct http_conn *c);

enum http_conn_proto {
    HTTP_CONN_DETECT = 0, /* Waiting for enough bytes to tell HTTP/2's preface from HTTP/1.1. */
    HTTP_CONN_H1,
    HTTP_CONN_H2,
    HTTP_CONN_RAW, /* Taken over by http_upgrade(): bytes go to the new owner. */
};

struct http_conn {
    const struct http_conn_config *cfg;
    http_conn_update_fn update;
    void *io; /* The I/O layer's own object. */

    enum http_conn_proto proto;
    /* Bytes waiting to be written; the I/O layer takes them (see http_server.c). */
    struct buf out;
    /* Bytes the I/O layer took from |out| and is still writing (it keeps this up to date). */
    size_t io_pending;

    int depth;            /* > 0 while inside feed/respond; update() runs only at depth 0. */
    bool closed;          /* http_conn_shutdown() ran: no more processing at all. */
    bool close_when_done; /* Close once the output is flushed and no handler owes a response. */
    bool linger;          /* Half-close and drain before closing (off once the peer ended). */
    bool progress;        /* Body bytes or HTTP/2 frames arrived since the I/O layer looked. */
    bool peer_eof;        /* The peer will send nothing more. */
    size_t n_awaiting;    /* Streams handed to the handler and not answered yet. */
    struct http_stream *streams; /* Every stream the connection owns (doubly linked). */

    /* Protocol detection: the first bytes, while they still match the HTTP/2 preface. */
    uint8_t detect[24];
    size_t detect_len;

    /* HTTP/1.1. */
    llhttp_t parser;
    struct http_stream *cur; /* The request being parsed or waiting for its response. */
    struct buf pending;      /* Bytes received while a response is owed (pipelining). */
    size_t pending_off;      /* Bytes of |pending| already parsed. */
    int h1_fail_status;      /* Set by a callback that stops the parser with a status. */
    bool h1_deliver_early;   /* Set by a callback: the body is too large, deliver now. */
    bool h1_stopped;         /* No more requests will be parsed on this connection. */

    /* HTTP/2. */
    nghttp2_session *h2;
    bool h2_send_failed; /* nghttp2 cannot produce output any more: close without waiting. */
    int32_t h2_window;   /* The connection window advertised: the body bytes it may hold. */
    size_t h2_held;      /* Body bytes received and not yet given back to the window. */
    uint64_t h2_refused; /* Streams refused (REFUSED_STREAM) to stay under h2_window. */

    /* Upgraded (HTTP_CONN_RAW): the new owner; NULL once it closed or was told of the close. */
    const struct http_upgrade_handler *up_h;
    void *up_userdata;
    bool up_reading;      /* The owner wants input. */
    bool up_want_drained; /* Output was sent since the last on_drained. */
};

/*
 * Creates a connection. |cfg| must outlive it. |update| may be NULL (nothing to notify). Returns
 * 0 or DLOTEL_ERR_NOMEM; |*out| is untouched on failure.
 */
int http_conn_new(struct http_conn **out, const struct http_conn_config *cfg,
                  http_conn_update_fn update, void *io);

/*
 * Processes received bytes. They need not stay valid after the call: bytes that cannot be parsed
 * yet (a pipelined request while a response is owed) are copied.
 */
void http_conn_feed(struct http_conn *c, const uint8_t *data, size_t len);

/* The peer closed its sending side. */
void http_conn_eof(struct http_conn *c);

/* The I/O layer took c->out and wrote it: produce more output (HTTP/2) if there is any. */
void http_conn_written(struct http_conn *c);

/* True while the connection can take more input now (else the I/O layer stops reading). */
bool http_conn_wants_read(const struct http_conn *c);

/*
 * True when the connection should be closed as soon as c->out is empty and written: either the
 * protocol finished (Connection: close, GOAWAY) or an error ended it.
 */
bool http_conn_finished(const struct http_conn *c);

/*
 * The idle timer fired. Returns true when the connection says goodbye in its protocol first
 * (HTTP/2 GOAWAY) and closes once that is written; false when the caller should just close.
 */
bool http_conn_idle(struct http_conn *c);

/* True while a handler owes a response (the idle timer does not run then). */
bool http_conn_busy(const struct http_conn *c);

/*
 * The clock time (cfg->clock) by which the oldest request still being received must be complete,
 * or UINT64_MAX when none is (or there is no request timeout). Upgraded connections have none.
 */
uint64_t http_conn_request_due(const struct http_conn *c);

/*
 * The request deadline passed (|now| >= http_conn_request_due()): HTTP/1.1 answers 408 and
 * closes; HTTP/2 answers each late stream (408, or gRPC DEADLINE_EXCEEDED) and resets it with
 * NO_ERROR, keeping the connection.
 */
void http_conn_request_timeout(struct http_conn *c, uint64_t now);

/*
 * Stops all processing: streams the handler still holds become orphans (a later http_respond()
 * frees them and returns DLOTEL_ERR_CLOSED). Safe to call more than once and from inside a
 * handler; memory goes with http_conn_free().
 */
void http_conn_shutdown(struct http_conn *c);

/* Shuts down (if needed) and frees the connection. Must not be called from inside a handler. */
void http_conn_free(struct http_conn *c);

#endif
