/*
 * What the two receivers share inside this room: the receiver object and rate-limited warnings.
 */
#ifndef DLOTEL_RECEIVER_INTERNAL_H
#define DLOTEL_RECEIVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"
#include "net/http.h"
#include "receiver/receiver.h"

/*
 * Warnings about bad requests are capped at this many per second per receiver, so a client
 * stuck in a retry loop cannot flood the log; the number dropped is reported with the next one.
 */
#define RECEIVER_WARN_PER_SECOND 10

struct receiver {
    const char *name; /* "otlp_grpc", "otlp_http": static. */
    uv_loop_t *loop;
    struct http_server *server;
    struct pipeline *pipeline; /* Borrowed. */
    /*
     * Kept across requests so that steady traffic allocates nothing: the decompressed body, the
     * protobuf made from a JSON body, and the arena for that conversion. A request uses them
     * only until pipeline_submit() returns, which is all the pipeline borrows them for.
     */
    struct buf inflated;
    struct buf converted;
    struct arena arena;
    /* Rate limit for warnings: the current one-second window. */
    uint64_t warn_window_ms;
    uint32_t warn_count;
    uint32_t warn_dropped;
    /* The largest request (receiver_options.max_request_bytes), for checks and messages. */
    uint64_t max_request;
    /* Counters (receiver_get_stats()). */
    struct receiver_stats stats;
    /* receiver_free() ran while calls were in flight: the last one to end frees the memory. */
    bool closing;
};

/*
 * Allocates a receiver and starts its server with |o| (whose handler and userdata it fills in).
 * |inflated_max| and |converted_max| bound the two buffers; |max_request| is the request limit
 * the receiver checks and names in messages. Returns as receiver_otlp_*_new().
 */
int receiver_start(struct receiver **out, const char *name, uv_loop_t *loop, struct pipeline *p,
                   struct http_listen_options *o, size_t inflated_max, size_t converted_max,
                   uint64_t max_request);

/*
 * Counts one answered request: |sig| is an enum otlp_signal or RECEIVER_SIGNAL_UNKNOWN, |err| 0
 * or the dlotel_error it was answered with, |items| and |bytes| what is known of it.
 */
void receiver_count(struct receiver *r, int sig, int err, uint64_t items, uint64_t bytes);

/* A call was handed to the pipeline; it must end with receiver_call_end() once answered. */
void receiver_call_begin(struct receiver *r);

/* The call is answered; frees |r| when receiver_free() ran and this was the last call. */
void receiver_call_end(struct receiver *r);

/* Empties the per-request buffers, giving back memory that a rare big request made them take. */
void receiver_recycle(struct receiver *r);

/* True when another warning may be logged now; counts the ones that may not. */
bool receiver_warn_allowed(struct receiver *r);

/* Copies at most |max| bytes of untrusted |s| into |out| as printable ASCII, for messages. */
void receiver_sanitize(char *out, size_t outlen, const char *s, size_t max);

#endif
