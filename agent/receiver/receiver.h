/*
 * OTLP receivers: bytes in from the network, validated protobuf requests out to a pipeline.
 *
 * Both receivers answer on the loop thread. A protobuf request is validated in place (no copy)
 * and handed to the pipeline as a borrowed pointer; only a compressed body is decompressed and
 * only a JSON body is converted, each into a buffer the receiver keeps for the next request.
 */
#ifndef DLOTEL_RECEIVER_H
#define DLOTEL_RECEIVER_H

#include <stdint.h>

#include <uv.h>

struct pipeline;
struct receiver;

/* The largest OTLP/HTTP body, before and after decompression (DESIGN.md section 4). */
#define RECEIVER_HTTP_MAX_BODY ((size_t)20 * 1024 * 1024)

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

/* The bound port. */
uint16_t receiver_port(const struct receiver *r);

/* "otlp_grpc" or "otlp_http". */
const char *receiver_name(const struct receiver *r);

/*
 * Stops accepting, closes the connections (requests not yet answered are abandoned) and frees
 * the receiver; libuv finishes closing the handles on the next turns of the loop, so keep running
 * the loop until it is empty. NULL is a no-op.
 */
void receiver_free(struct receiver *r);

#endif
