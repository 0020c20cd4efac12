/*
 * The live stream (DESIGN.md section 6, WS /api/otel/v1/ws): rows pushed to WebSocket clients
 * as soon as the sink has committed them.
 *
 * Everything here runs on the daemon's loop thread. The sink exporter calls api_stream_publish()
 * for every committed request (exporter_sink_set_tap()); the stream turns the request into rows
 * of the REST shape (the columns of the spans, logs and metrics views) only when a client wants
 * them, and queues them per client, dropping for clients that do not keep up.
 */
#ifndef DLOTEL_API_STREAM_H
#define DLOTEL_API_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "api/api_principal.h"
#include "net/http.h"

struct api_stream;

struct api_stream_options {
    /* Bytes queued per client before messages are dropped for it; 0: the default (4 MiB). */
    size_t client_queue_max_bytes;
    /* Ping interval; 0: the default (20 s). */
    uint32_t ping_interval_ms;
    /* Connected clients at most; 0: the default (256). */
    uint32_t max_clients;
};

/* Returns 0 or DLOTEL_ERR_NOMEM; |*out| untouched on failure. |o| may be NULL (defaults). */
int api_stream_new(struct api_stream **out, uv_loop_t *loop, const struct api_stream_options *o);

/* Closes every client (close code 1001) and frees the stream. NULL is a no-op. */
void api_stream_free(struct api_stream *st);

/*
 * True when a connected client would get rows of |signal| now: the sink exporter keeps a
 * committed request's bytes for api_stream_publish() only then.
 */
bool api_stream_wants(const struct api_stream *st, int signal);

/*
 * One committed request of |signal| (SINK_SIGNAL_* numbering: 0 traces, 1 metrics, 2 logs).
 * |pb| is borrowed for the call. |user_uid|, when not NULL, overrides the rows' user_uid as the
 * sink's append() did. Cheap when no client is connected.
 */
void api_stream_publish(struct api_stream *st, int signal, const uint8_t *pb, size_t len,
                        const char *user_uid);

/*
 * Takes over the HTTP/1.1 request |req| on |s| (GET /api/otel/v1/ws with the Upgrade headers):
 * answers 101 and runs the WebSocket, or answers 400/426 when the handshake is malformed.
 * |who| is the auth decision of the caller (the token query parameter or the Authorization
 * header); NULL means the token was missing or bad: the socket is upgraded, then closed with
 * code 1008. Copies what it keeps of |who|.
 */
void api_stream_accept(struct api_stream *st, struct http_stream *s, const struct http_request *req,
                       const struct api_principal *who);

/* Connected clients now, for /stats and /system/stats. */
size_t api_stream_clients(const struct api_stream *st);

/* Messages dropped for clients that did not keep up, since the start (for /stats). */
uint64_t api_stream_dropped(const struct api_stream *st);

#endif
