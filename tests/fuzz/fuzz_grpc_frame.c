/*
 * Fuzzes gRPC framing and decompression: the first byte picks the grpc-encoding (identity, gzip
 * or zstd), the rest is the request body. Whatever the input, the parser must not crash, must not
 * read outside it, must not let the decompressed message pass GRPC_MAX_MESSAGE, and a message it
 * accepts must lie inside the body (identity) or the scratch buffer (compressed).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/compress.h"
#include "receiver/grpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    static const enum codec codecs[] = {CODEC_NONE, CODEC_GZIP, CODEC_ZSTD};
    enum codec codec = codecs[data[0] % 3];
    const uint8_t *body = data + 1;
    size_t len = size - 1;

    struct buf scratch;
    buf_init(&scratch, GRPC_MAX_MESSAGE);
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    const char *why = NULL;
    int rc = grpc_frame_parse(body, len, codec, &scratch, &msg, &msg_len, &why);
    if (scratch.len > GRPC_MAX_MESSAGE) {
        abort();
    }
    if (rc == 0) {
        if (msg_len > GRPC_MAX_MESSAGE) {
            abort();
        }
        bool in_body = msg >= body && msg + msg_len <= body + len;
        bool in_scratch = msg == scratch.data && msg_len == scratch.len;
        if (!in_body && !in_scratch && msg_len != 0) {
            abort();
        }
        /* Touch every byte so that ASan checks the bounds. */
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < msg_len; i++) {
            sink ^= msg[i];
        }
        (void)sink;
    } else if (why == NULL || why[0] == '\0') {
        abort();
    }
    buf_cleanup(&scratch);

    /* The grpc-message encoder over the same bytes: bounded, and never a raw control byte. */
    struct buf enc;
    buf_init(&enc, 3 * 4096 + 1);
    size_t n = len < 4096 ? len : 4096;
    if (grpc_message_encode(&enc, (const char *)body, n) == 0) {
        for (size_t i = 0; i < enc.len; i++) {
            if (enc.data[i] < 0x20 || enc.data[i] > 0x7e) {
                abort();
            }
        }
    }
    buf_cleanup(&enc);
    return 0;
}
