/*
 * gRPC framing and status mapping. See grpc.h.
 */
#include "receiver/grpc.h"

#include "dlotel.h"

int grpc_frame_parse(const uint8_t *body, size_t len, enum codec codec, struct buf *scratch,
                     const uint8_t **msg, size_t *msg_len, const char **why)
{
    return grpc_frame_parse_max(body, len, codec, GRPC_MAX_MESSAGE, scratch, msg, msg_len, why);
}

int grpc_frame_parse_max(const uint8_t *body, size_t len, enum codec codec, uint64_t max,
                         struct buf *scratch, const uint8_t **msg, size_t *msg_len,
                         const char **why)
{
    if (len < GRPC_PREFIX_LEN) {
        *why = len == 0 ? "empty request: expected one length-prefixed message"
                        : "truncated message prefix";
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint8_t flag = body[0];
    uint32_t n = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 | (uint32_t)body[3] << 8 |
                 (uint32_t)body[4];
    if (flag > 1) {
        *why = "invalid compressed flag in message prefix";
        return DLOTEL_ERR_BAD_INPUT;
    }
    /*
     * The declared length is checked before the body length so that an oversize message is
     * reported as such even when the client sent only part of it.
     */
    if (n > max) {
        *why = max == GRPC_MAX_MESSAGE ? "message larger than 4194304 bytes"
                                       : "message larger than the limit";
        return DLOTEL_ERR_TOO_LARGE;
    }
    size_t avail = len - GRPC_PREFIX_LEN;
    if (avail < n) {
        *why = "truncated message";
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (avail > n) {
        *why = "unexpected data after the message of a unary call";
        return DLOTEL_ERR_BAD_INPUT;
    }
    const uint8_t *payload = body + GRPC_PREFIX_LEN;
    if (flag == 0) {
        /* Not compressed, whatever grpc-encoding says: the spec lets a sender skip it. */
        *msg = payload;
        *msg_len = n;
        return 0;
    }
    if (codec == CODEC_NONE) {
        *why = "compressed flag set with identity or no grpc-encoding";
        return DLOTEL_ERR_BAD_INPUT;
    }
    int rc = codec_decompress(codec, payload, n, scratch);
    if (rc == DLOTEL_ERR_TOO_LARGE) {
        *why = max == GRPC_MAX_MESSAGE ? "decompressed message larger than 4194304 bytes"
                                       : "decompressed message larger than the limit";
        return rc;
    }
    if (rc == DLOTEL_ERR_NOMEM) {
        *why = "out of memory";
        return rc;
    }
    if (rc != 0) {
        *why = codec == CODEC_GZIP ? "malformed gzip message" : "malformed zstd message";
        return DLOTEL_ERR_BAD_INPUT;
    }
    *msg = scratch->data;
    *msg_len = scratch->len;
    return 0;
}

void grpc_frame_prefix(uint8_t out[GRPC_PREFIX_LEN], bool compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

int grpc_frame_build(struct buf *out, const uint8_t *msg, size_t len)
{
    if (len > GRPC_MAX_MESSAGE) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    int rc = buf_reserve(out, GRPC_PREFIX_LEN + len);
    if (rc != 0) {
        return rc;
    }
    uint8_t prefix[GRPC_PREFIX_LEN];
    grpc_frame_prefix(prefix, false, (uint32_t)len);
    /* Cannot fail now that the room is reserved. */
    buf_append(out, prefix, sizeof(prefix));
    if (len > 0) {
        buf_append(out, msg, len);
    }
    return 0;
}

int grpc_message_encode(struct buf *out, const char *msg, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)msg[i];
        int rc;
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            rc = buf_putc(out, c);
        } else {
            uint8_t enc[3] = {'%', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 0x0f]};
            rc = buf_append(out, enc, sizeof(enc));
        }
        if (rc != 0) {
            return rc;
        }
    }
    return buf_terminate(out);
}

enum grpc_status grpc_status_from_error(int err, bool framing)
{
    switch (err) {
    case DLOTEL_OK:
        return GRPC_STATUS_OK;
    case DLOTEL_ERR_BAD_INPUT:
        return framing ? GRPC_STATUS_INTERNAL : GRPC_STATUS_INVALID_ARGUMENT;
    case DLOTEL_ERR_TOO_LARGE:
    case DLOTEL_ERR_FULL:
        /*
         * OTLP clients retry RESOURCE_EXHAUSTED only when RetryInfo comes with it, so a message
         * that is too large is not retried, and shedding (FULL) adds RetryInfo.
         */
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case DLOTEL_ERR_UNSUPPORTED:
        return GRPC_STATUS_UNIMPLEMENTED;
    case DLOTEL_ERR_NOT_FOUND:
        return GRPC_STATUS_NOT_FOUND;
    case DLOTEL_ERR_NOMEM:
    case DLOTEL_ERR_IO:
    case DLOTEL_ERR_CLOSED:
    case DLOTEL_ERR_TIMEOUT:
        /* Transient trouble on our side: UNAVAILABLE is the code OTLP clients retry. */
        return GRPC_STATUS_UNAVAILABLE;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

int receiver_http_status(int err)
{
    switch (err) {
    case DLOTEL_OK:
        return 200;
    case DLOTEL_ERR_BAD_INPUT:
        return 400;
    case DLOTEL_ERR_NOT_FOUND:
        return 404;
    case DLOTEL_ERR_TOO_LARGE:
        return 413;
    case DLOTEL_ERR_UNSUPPORTED:
        return 415;
    case DLOTEL_ERR_FULL:
        return 429;
    case DLOTEL_ERR_NOMEM:
    case DLOTEL_ERR_IO:
    case DLOTEL_ERR_CLOSED:
    case DLOTEL_ERR_TIMEOUT:
        return 503;
    default:
        return 500;
    }
}

bool receiver_http_status_retryable(int status)
{
    return status == 429 || status == 503;
}
