/*
 * Fuzz target: gzip and zstd decompression with a limit. The first byte picks the codec; the
 * output limit is small so that bombs are found quickly. Must never crash, never pass the limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/compress.h"
#include "dlotel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    enum codec c = (data[0] & 1) ? CODEC_ZSTD : CODEC_GZIP;
    struct buf out;
    buf_init(&out, 1 << 20);
    int rv = codec_decompress(c, data + 1, size - 1, &out);
    if (out.len > out.max) {
        abort();
    }
    if (rv != 0 && rv != DLOTEL_ERR_BAD_INPUT && rv != DLOTEL_ERR_TOO_LARGE &&
        rv != DLOTEL_ERR_NOMEM) {
        abort();
    }
    if (rv == 0) {
        /* Whatever decompressed must compress and come back identical. */
        struct buf z, back;
        buf_init(&z, 4 << 20);
        buf_init(&back, 1 << 20);
        if (codec_compress(c, out.data, out.len, 1, &z) != 0 ||
            codec_decompress(c, z.data, z.len, &back) != 0 || back.len != out.len ||
            (out.len > 0 && memcmp(back.data, out.data, out.len) != 0)) {
            abort();
        }
        buf_cleanup(&z);
        buf_cleanup(&back);
    }
    buf_cleanup(&out);
    return 0;
}
