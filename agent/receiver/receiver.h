/*
 * OTLP receivers: bytes in from the network, validated protobuf requests out to a pipeline.
 *
 * Both receivers answer on the loop thread. A protobuf request is validated in place (no copy)
 * and handed to the pipeline as a borrowed pointer; only a compressed body is decompressed and
 * only a JSON body is converted, each into a buffer the receiver keeps for the next request.
 */
#ifndef DLOTEL_RECEIVER_H
#define DLOTEL_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "otlp/otlp.h"

struct pipeline;
struct receiver;

/* The largest OTLP/HTTP body, before and after decompression (DESIGN.md section 4). */
#define RECEIVER_HTTP_MAX_BODY ((size_t)20 * 1024 * 1024)

/* Settings beyond the address; zero fields take the defaults. */
struct receiver_options {
    /*
     * The largest request accepted, before and after decompression (and, for OTLP/JSON, as
     * protobuf): the config's receivers.http_max_body_size (default RECEIVER_HTTP_MAX_BODY) or
     * receivers.grpc_max_message_size (one gRPC message; default GRPC_MAX_MESSAGE, 4 MiB).
     */
    uint64_t max_request_bytes;
    /* Connections open at once (receivers.max_connections); 0: 4096. */
    uint32_t max_connections;
    /* Whole-request deadline (receivers.request_timeout); 0: 60 s. */
    uint32_t request_timeout_ms;
};

/*
 * Starts an OTLP/gRPC receiver (HTTP/2 cleartext with prior knowledge) on |host|:|port| that
 * serves the Export methods of the trace, metrics and logs services. |port| 0 picks a free port
 * (see receiver_port()). |p| is borrowed and must outlive the receiver.
 *
 * Returns 0 and sets |*out|; DLOTEL_ERR_ADDR_IN_USE; DLOTEL_ERR_INVALID_ARG (host does not
 * resolve); DLOTEL_ERR_IO; DLOTEL_ERR_NOMEM. |*out| is untouched on failure.
 */
int receiver_otlp_grpc_new(struct receiver **out, uv_loop_t *loop, const char *host, uint16_t port,
                           struct pipeline *p);

/*
 * Starts an OTLP/HTTP receiver (HTTP/1.1 and HTTP/2 cleartext on one port): POST /v1/traces,
 * /v1/metrics and /v1/logs with protobuf or JSON bodies, gzip or zstd encoded or not. Arguments
 * and return codes as receiver_otlp_grpc_new().
 */
int receiver_otlp_http_new(struct receiver **out, uv_loop_t *loop, const char *host, uint16_t port,
                           struct pipeline *p);

/* As the two above, with |o| (NULL: defaults). */
int receiver_otlp_grpc_new_opts(struct receiver **out, uv_loop_t *loop, const char *host,
                                uint16_t port, struct pipeline *p,
                                const struct receiver_options *o);
int receiver_otlp_http_new_opts(struct receiver **out, uv_loop_t *loop, const char *host,
                                uint16_t port, struct pipeline *p,
                                const struct receiver_options *o);

/* The bound port. */
uint16_t receiver_port(const struct receiver *r);

/* "otlp_grpc" or "otlp_http". */
const char *receiver_name(const struct receiver *r);

/*
 * What became of a request, for the counters and the labels of /metrics. A request is counted
 * once, when it is answered.
 */
enum receiver_outcome {
    RECEIVER_ACCEPTED = 0,        /* 200 / OK: every exporter of its signal has it. */
    RECEIVER_REFUSED_INVALID,     /* 400 / INVALID_ARGUMENT, INTERNAL: not a valid request. */
    RECEIVER_REFUSED_TOO_LARGE,   /* 413 / RESOURCE_EXHAUSTED without RetryInfo. */
    RECEIVER_REFUSED_UNSUPPORTED, /* 404, 405, 415 / UNIMPLEMENTED: path, method, type, encoding. */
    RECEIVER_REFUSED_FULL,        /* 429 / RESOURCE_EXHAUSTED + RetryInfo: queues full (shed). */
    RECEIVER_REFUSED_UNAVAILABLE, /* 503 / UNAVAILABLE: disk queue write failed, stopping... */
    RECEIVER_REFUSED_FAILED,      /* 500 / INTERNAL, anything else. */
    RECEIVER_OUTCOME_COUNT,
};

/* "accepted", "invalid", "too_large", "unsupported", "full", "unavailable", "failed". */
const char *receiver_outcome_name(enum receiver_outcome o);

/* The outcome a dlotel_error answer counts as (0 is RECEIVER_ACCEPTED). */
enum receiver_outcome receiver_outcome_from_error(int err);

/* The signal index of requests whose path or method named no signal. */
#define RECEIVER_SIGNAL_UNKNOWN OTLP_SIGNAL_COUNT

/* Counters of one receiver since it started. Indexed [signal][outcome]. */
struct receiver_stats {
    const char *name; /* "otlp_grpc", "otlp_http": static. */
    uint16_t port;
    uint64_t requests[OTLP_SIGNAL_COUNT + 1][RECEIVER_OUTCOME_COUNT];
    uint64_t items[OTLP_SIGNAL_COUNT + 1][RECEIVER_OUTCOME_COUNT]; /* As far as counted. */
    uint64_t bytes[OTLP_SIGNAL_COUNT + 1][RECEIVER_OUTCOME_COUNT]; /* As received (encoded). */
    uint64_t in_flight; /* Now: handed to the pipeline, not answered yet. */
};

/* Copies |r|'s counters into |out|. */
void receiver_get_stats(const struct receiver *r, struct receiver_stats *out);

/*
 * Stops accepting, closes the connections and frees the receiver; libuv finishes closing the
 * handles on the next turns of the loop, so keep running the loop until it is empty. Requests
 * the pipeline has not answered yet keep the receiver's memory until it does (their client has
 * gone with the connection, so the answer is dropped); the pipeline must outlive them, which
 * pipeline_free() ensures by answering everything it holds. NULL is a no-op.
 */
void receiver_free(struct receiver *r);

/*
 * The OTLP/HTTP body handling of the receiver, for another server that takes OTLP/HTTP requests
 * (the query API's POST /api/otel/v1/otlp/v1/{signal}), so that both answer alike.
 */
struct http_request;
struct buf;
struct arena;

/* What receiver_otlp_http_decode() made of one request. */
struct receiver_http_body {
    const uint8_t *pb; /* The validated protobuf request (on success). */
    size_t len;
    struct otlp_counts counts;
    bool json;         /* The request was OTLP/JSON: answer in JSON (set on failure too). */
    int status;        /* On failure: the HTTP status to answer (400, 413, 415, ...). */
    char message[256]; /* On failure: a sentence for the client. */
};

/*
 * Checks and decodes the body of |req| (already routed to |sig| and known to be a POST) exactly
 * as the OTLP/HTTP receiver does: content type (415), content encoding (415), size (413,
 * |max_request| also after decompression, bounded by |inflated|'s and |converted|'s own max),
 * gzip/zstd, OTLP/JSON to protobuf, the validation walk (400). |inflated|, |converted| and
 * |arena| are the caller's scratch space: out->pb may point into them or into req->body, and
 * stays valid until they are reset or |req| is answered.
 *
 * Returns 0, or the dlotel_error behind the refusal with out->status and out->message set.
 */
int receiver_otlp_http_decode(const struct http_request *req, enum otlp_signal sig,
                              uint64_t max_request, struct buf *inflated, struct buf *converted,
                              struct arena *arena, struct receiver_http_body *out);

/*
 * Appends the body of an OTLP/HTTP error answer to |out|: a google.rpc.Status carrying the gRPC
 * code of |err| and |message|, as JSON when |json|, else protobuf. Returns 0 or a buf error.
 */
int receiver_otlp_http_error_body(bool json, int err, const char *message, struct buf *out);

#endif
