/*
 * HTTP servers on libuv: HTTP/1.1 (llhttp, strict, keep-alive, pipelining) and HTTP/2 cleartext
 * (nghttp2, prior knowledge) on the same listener, told apart by the HTTP/2 connection preface.
 * The server collects a whole request (headers and body, body capped) and hands it to one
 * handler; the handler answers once with http_respond(), then or later.
 */
#ifndef DLOTEL_NET_HTTP_H
#define DLOTEL_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"

struct http_server;
struct http_stream; /* One request/response exchange. */

struct http_header {
    const char *name; /* Lowercase. */
    const char *value;
};

struct http_request {
    int version;                       /* 11 for HTTP/1.1, 20 for HTTP/2. */
    const char *method;                /* NUL-terminated; owned by the stream. */
    const char *path;                  /* The request target as sent, query string included. */
    const struct http_header *headers; /* Names lowercased; owned by the stream. */
    size_t n_headers;
    struct buf body; /* The whole body as received (still content-encoded). */
    /*
     * The body passed the listener's max_body. |body| is then empty and, for HTTP/1.1, the
     * connection is closed after the response. The handler answers 413 (or RESOURCE_EXHAUSTED).
     */
    bool body_too_large;
};

/* Returns the value of the first header named |name| (lowercase), or NULL. */
const char *http_request_header(const struct http_request *r, const char *name);

struct http_response {
    int status;
    const struct http_header *headers; /* content-length is added by the server. */
    size_t n_headers;
    const uint8_t *body; /* Copied by http_respond(). */
    size_t body_len;
    /* HTTP/2 only (gRPC): sent as a trailing HEADERS frame. Ignored on HTTP/1.1. */
    const struct http_header *trailers;
    size_t n_trailers;
};

/*
 * Called once per complete request. |req| and everything it points to stay valid until
 * http_respond() is called on |s|. The handler must call http_respond() exactly once, before it
 * returns or later from the same loop thread.
 */
typedef void (*http_handler_fn)(void *userdata, struct http_stream *s,
                                const struct http_request *req);

struct http_listen_options {
    const char *name;        /* For logs: "otlp_grpc", "otlp_http". */
    const char *host;        /* "localhost" binds 127.0.0.1 and ::1; else an IP literal or name. */
    uint16_t port;           /* 0 picks a free port (the same one on every address). */
    bool http1;              /* Accept HTTP/1.1. */
    bool http2;              /* Accept HTTP/2 with prior knowledge. */
    size_t max_body;         /* Bytes; larger bodies are not buffered (body_too_large). */
    size_t max_header_bytes; /* Sum of header names and values; 0 means 64 KiB. */
    size_t max_headers;      /* 0 means 100. */
    uint32_t
        idle_timeout_ms; /* Close a connection idle (or stuck mid-request) this long; 0 = 60 s. */
    /*
     * A request's headers and body must all arrive within this long of its first byte, however
     * steadily they trickle: HTTP/1.1 then gets 408 and the connection closes, an HTTP/2 stream
     * gets 408 (gRPC: DEADLINE_EXCEEDED) and RST_STREAM(NO_ERROR). 0 = 60 s; UINT32_MAX = none.
     * Upgraded connections and requests already handed to the handler are exempt.
     */
    uint32_t request_timeout_ms;
    /*
     * HTTP/2: request body bytes one connection may hold at once, enforced through its flow-
     * control window (a client is slowed, and refused a stream with REFUSED_STREAM only when its
     * unfinished requests alone fill the window). 0 = max(2 x max_body, 64 MiB).
     */
    size_t max_conn_body_bytes;
    uint32_t max_connections; /* Open at once; more are accepted and closed. 0 means 4096. */
    http_handler_fn handler;
    void *userdata;
};

/*
 * Binds and listens. On success |*out| owns the listeners and connections. Returns 0;
 * DLOTEL_ERR_ADDR_IN_USE naming nothing (the caller names the port); DLOTEL_ERR_IO;
 * DLOTEL_ERR_INVALID_ARG for an unresolvable host; DLOTEL_ERR_NOMEM. |*out| is untouched on
 * failure.
 */
int http_server_new(struct http_server **out, uv_loop_t *loop, const struct http_listen_options *o);

/* The bound port (useful after port 0). */
uint16_t http_server_port(const struct http_server *srv);

/*
 * Raises this process's soft RLIMIT_NOFILE to its hard limit (once; later calls return the limit
 * found) and logs what changed: every connection is a descriptor, and the usual soft limit of
 * 1024 would cap max_connections long before memory does. Returns the soft limit in force.
 */
uint64_t http_raise_fd_limit(void);

/*
 * Stops accepting, closes every connection (streams not yet answered are abandoned: a later
 * http_respond() on them just frees them) and frees the server once libuv has closed the
 * handles. NULL is a no-op.
 */
void http_server_free(struct http_server *srv);

/*
 * Sends the response for |s| and releases the stream; |s| must not be used afterwards. Returns 0,
 * or DLOTEL_ERR_CLOSED when the client went away (the stream is released all the same).
 */
int http_respond(struct http_stream *s, const struct http_response *resp);

/*
 * Taking a connection over (RFC 9110 section 7.8 Upgrade, for WebSocket). After the 101 the
 * connection stops being HTTP: bytes from the peer go to |on_data| as they arrive, bytes given to
 * http_upgraded_send() go out unchanged, the idle timeout no longer applies (the new protocol
 * keeps itself alive) and closing is the new owner's decision. |s| becomes the handle of the
 * upgraded connection. Every callback runs on the loop thread, never from inside
 * http_upgraded_send() or http_upgraded_set_reading().
 */
struct http_upgrade_handler {
    /* Bytes from the peer; valid only during the call. May run before http_upgrade() returns,
       with bytes the client sent right behind its request. */
    void (*on_data)(void *userdata, const uint8_t *data, size_t len);
    /* Everything sent so far has been written to the socket (http_upgraded_queued() is 0).
       May be NULL. */
    void (*on_drained)(void *userdata);
    /* The connection is gone (peer closed, reset, server freed). Runs once, from the loop; |s|
       is freed right after it returns. Not called after http_upgraded_close(). */
    void (*on_close)(void *userdata);
};

/*
 * Answers the HTTP/1.1 request on |s| with |resp| (a 101 with its Upgrade headers; no body is
 * sent) and hands the connection to |h|. |h| must outlive the connection. Returns 0;
 * DLOTEL_ERR_INVALID_ARG (not HTTP/1.1, status not 1xx, NULL |h|): nothing happened and |s| still
 * needs http_respond(); DLOTEL_ERR_CLOSED (the client went away: |s| is released and no callback
 * will come); DLOTEL_ERR_NOMEM (the response could not be queued: the connection closes, |s| is
 * released, no callback will come).
 */
int http_upgrade(struct http_stream *s, const struct http_response *resp,
                 const struct http_upgrade_handler *h, void *userdata);

/*
 * Queues |len| bytes for the peer (copied). Returns 0, DLOTEL_ERR_CLOSED (the connection is
 * closing; on_close will follow unless the caller closed it) or DLOTEL_ERR_TOO_LARGE (more than
 * 256 MiB would be queued: nothing was added). The caller bounds what it queues with
 * http_upgraded_queued(): the server buffers whatever it is given.
 */
int http_upgraded_send(struct http_stream *s, const uint8_t *data, size_t len);

/* Bytes sent and not yet written to the socket (the kernel's buffer is full or a write runs). */
size_t http_upgraded_queued(const struct http_stream *s);

/* Stops (false) or resumes (true, the default) reading from the peer: backpressure on input. */
void http_upgraded_set_reading(struct http_stream *s, bool reading);

/*
 * Closes the connection once what was queued is written (then half-closes and drains briefly,
 * as HTTP responses do). No callback runs any more and |s| must not be used after this call; the
 * server frees it.
 */
void http_upgraded_close(struct http_stream *s);

#endif
