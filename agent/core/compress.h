/*
 * gzip and zstd, both directions, for OTLP bodies and gRPC messages. Decompression writes into a
 * struct buf whose max is the limit, so a decompression bomb stops at the limit with
 * DLOTEL_ERR_TOO_LARGE instead of exhausting memory.
 */
#ifndef DLOTEL_CORE_COMPRESS_H
#define DLOTEL_CORE_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum codec {
    CODEC_NONE = 0,
    CODEC_GZIP = 1,
    CODEC_ZSTD = 2,
};

/*
 * Parses a Content-Encoding or grpc-encoding token: "gzip", "zstd", "identity" or empty (both
 * CODEC_NONE); case-insensitive. Returns 0 or DLOTEL_ERR_UNSUPPORTED.
 */
int codec_parse(const char *name, size_t len, enum codec *out);

/* Returns "gzip", "zstd" or "identity". */
const char *codec_name(enum codec c);

/*
 * Decompresses |in| and appends the result to |out|. Returns 0; DLOTEL_ERR_TOO_LARGE when the
 * output would pass out->max; DLOTEL_ERR_BAD_INPUT when |in| is malformed, truncated, or has
 * trailing bytes. CODEC_NONE copies. On failure |out| may hold a partial result.
 */
int codec_decompress(enum codec c, const uint8_t *in, size_t len, struct buf *out);

/*
 * Compresses |in| and appends the result to |out|. |level| 0 picks the codec's default. Returns
 * 0, DLOTEL_ERR_TOO_LARGE or DLOTEL_ERR_NOMEM.
 */
int codec_compress(enum codec c, const uint8_t *in, size_t len, int level, struct buf *out);

#endif
