/*
 * gRPC over HTTP/2 framing for unary calls, and the two functions that turn a dlotel_error into
 * what a client sees (a gRPC status or an HTTP status). Nothing here touches a socket: the
 * receivers feed it whole request bodies, so it is easy to test and to fuzz.
 *
 * A gRPC message on the wire is a 5-byte prefix (a compressed flag, then the length as a 4-byte
 * big-endian integer) followed by the message. A unary Export call carries exactly one.
 */
#ifndef DLOTEL_RECEIVER_GRPC_H
#define DLOTEL_RECEIVER_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/compress.h"

/* The largest message accepted, before and after decompression (gRPC's usual default). */
#define GRPC_MAX_MESSAGE (4u * 1024u * 1024u)
#define GRPC_PREFIX_LEN  5

/* The grpc-accept-encoding we advertise: every codec codec_decompress() knows. */
#define GRPC_ACCEPT_ENCODING "identity,gzip,zstd"

/* gRPC status codes (the same numbers as google.rpc.Code). */
enum grpc_status {
    GRPC_STATUS_OK = 0,
    GRPC_STATUS_CANCELLED = 1,
    GRPC_STATUS_UNKNOWN = 2,
    GRPC_STATUS_INVALID_ARGUMENT = 3,
    GRPC_STATUS_DEADLINE_EXCEEDED = 4,
    GRPC_STATUS_NOT_FOUND = 5,
    GRPC_STATUS_ALREADY_EXISTS = 6,
    GRPC_STATUS_PERMISSION_DENIED = 7,
    GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
    GRPC_STATUS_FAILED_PRECONDITION = 9,
    GRPC_STATUS_ABORTED = 10,
    GRPC_STATUS_OUT_OF_RANGE = 11,
    GRPC_STATUS_UNIMPLEMENTED = 12,
    GRPC_STATUS_INTERNAL = 13,
    GRPC_STATUS_UNAVAILABLE = 14,
    GRPC_STATUS_DATA_LOSS = 15,
    GRPC_STATUS_UNAUTHENTICATED = 16,
};

/*
 * Parses the body of a unary gRPC request: exactly one length-prefixed message, nothing after it.
 * |codec| comes from the request's grpc-encoding header.
 *
 * An uncompressed message is not copied: |*msg| points into |body|. A compressed one is
 * decompressed into |scratch|, which the caller initialises with max GRPC_MAX_MESSAGE (so a
 * decompression bomb stops there) and empties between calls; |*msg| then points into
 * scratch->data and stays valid until |scratch| changes.
 *
 * Returns 0 and sets |*msg| and |*msg_len|, or on failure sets |*why| to a static string for
 * the client and returns:
 *   DLOTEL_ERR_TOO_LARGE     the declared length or the decompressed size passes
 *                            GRPC_MAX_MESSAGE;
 *   DLOTEL_ERR_BAD_INPUT     a truncated prefix or message, bytes after the message, a flag
 *                            other than 0 or 1, the compressed flag without a grpc-encoding,
 *                            or a malformed compressed message;
 *   DLOTEL_ERR_NOMEM.
 * These are framing errors: answer them with grpc_status_from_error(rc, true).
 */
int grpc_frame_parse(const uint8_t *body, size_t len, enum codec codec, struct buf *scratch,
                     const uint8_t **msg, size_t *msg_len, const char **why);

/*
 * As grpc_frame_parse(), with the limit |max| in place of GRPC_MAX_MESSAGE (the receiver's
 * configured receivers.grpc_max_message_size); |scratch| is then initialised with max |max|.
 */
int grpc_frame_parse_max(const uint8_t *body, size_t len, enum codec codec, uint64_t max,
                         struct buf *scratch, const uint8_t **msg, size_t *msg_len,
                         const char **why);

/* Writes the 5-byte prefix for a message of |len| bytes. */
void grpc_frame_prefix(uint8_t out[GRPC_PREFIX_LEN], bool compressed, uint32_t len);

/*
 * Appends one uncompressed length-prefixed message to |out|. Returns 0,
 * DLOTEL_ERR_TOO_LARGE (|len| over GRPC_MAX_MESSAGE, or |out| full) or DLOTEL_ERR_NOMEM.
 */
int grpc_frame_build(struct buf *out, const uint8_t *msg, size_t len);

/*
 * Appends |msg| percent-encoded for the grpc-message header: bytes 0x20-0x7E except '%' go as
 * they are, every other byte as %XX (uppercase hex), as the gRPC HTTP/2 spec says. The result is
 * NUL-terminated (not counted in out->len). Returns 0 or a buf error.
 */
int grpc_message_encode(struct buf *out, const char *msg, size_t len);

/*
 * The one place where a dlotel_error becomes a gRPC status. |framing| says the error came from
 * the gRPC framing layer (grpc_frame_parse) rather than from the payload: the gRPC spec answers
 * a broken frame or an undecodable compressed message with INTERNAL, while a message that frames
 * fine but is not a valid OTLP request is INVALID_ARGUMENT.
 */
enum grpc_status grpc_status_from_error(int err, bool framing);

/*
 * The one place where a dlotel_error becomes an HTTP status for OTLP/HTTP: 200, 400 (bad
 * payload), 404, 413 (too large), 415 (unsupported type or encoding), 429 (full: shed load),
 * 503 (transient failure: the client retries), 500 (a bug).
 */
int receiver_http_status(int err);

/* True when an HTTP status from receiver_http_status() asks the client to retry later. */
bool receiver_http_status_retryable(int status);

#endif
