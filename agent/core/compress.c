#include "core/compress.h"

#include <string.h>
#include <strings.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "dlotel.h"

/* Output is produced in pieces of this size, so a bomb never allocates past out->max. */
#define CHUNK (64u * 1024u)

int codec_parse(const char *name, size_t len, enum codec *out)
{
    /* Trim the optional white space that HTTP allows around a token. */
    while (len > 0 && (name[0] == ' ' || name[0] == '\t')) {
        name++;
        len--;
    }
    while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t')) {
        len--;
    }
    if (len == 0 || (len == 8 && strncasecmp(name, "identity", 8) == 0)) {
        *out = CODEC_NONE;
    } else if (len == 4 && strncasecmp(name, "gzip", 4) == 0) {
        *out = CODEC_GZIP;
    } else if (len == 4 && strncasecmp(name, "zstd", 4) == 0) {
        *out = CODEC_ZSTD;
    } else {
        return DLOTEL_ERR_UNSUPPORTED;
    }
    return 0;
}

const char *codec_name(enum codec c)
{
    switch (c) {
    case CODEC_GZIP:
        return "gzip";
    case CODEC_ZSTD:
        return "zstd";
    case CODEC_NONE:
        break;
    }
    return "identity";
}

/* Room for the next piece of output: up to CHUNK bytes, never past out->max. */
static int grow(struct buf *out, size_t *avail)
{
    size_t room = out->max - out->len;
    if (room == 0) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    size_t want = room < CHUNK ? room : CHUNK;
    int rv = buf_reserve(out, want);
    if (rv != 0) {
        return rv;
    }
    *avail = want;
    return 0;
}

static int gunzip(const uint8_t *in, size_t len, struct buf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    /* 16 + MAX_WBITS: gzip framing only, as Content-Encoding: gzip means. */
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = 0;
    size_t consumed = 0;
    for (;;) {
        /* zlib counts in uInt: feed large inputs in pieces. */
        if (zs.avail_in == 0 && consumed < len) {
            size_t piece = len - consumed > (1u << 30) ? (1u << 30) : len - consumed;
            zs.next_in = (Bytef *)(uintptr_t)(in + consumed);
            zs.avail_in = (uInt)piece;
            consumed += piece;
        }
        size_t avail;
        rv = grow(out, &avail);
        if (rv != 0) {
            break;
        }
        zs.next_out = out->data + out->len;
        zs.avail_out = (uInt)avail;
        int z = inflate(&zs, Z_NO_FLUSH);
        out->len += avail - zs.avail_out;
        if (z == Z_STREAM_END) {
            /* Concatenated gzip members are legal (RFC 1952): continue with the next one. */
            if (zs.avail_in == 0 && consumed == len) {
                break;
            }
            if (inflateReset(&zs) != Z_OK) {
                rv = DLOTEL_ERR_BAD_INPUT;
                break;
            }
            continue;
        }
        if (z == Z_BUF_ERROR && zs.avail_in == 0 && consumed == len) {
            rv = DLOTEL_ERR_BAD_INPUT; /* Truncated stream. */
            break;
        }
        if (z != Z_OK && z != Z_BUF_ERROR) {
            rv = z == Z_MEM_ERROR ? DLOTEL_ERR_NOMEM : DLOTEL_ERR_BAD_INPUT;
            break;
        }
    }
    inflateEnd(&zs);
    return rv;
}

static int unzstd(const uint8_t *in, size_t len, struct buf *out)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (dctx == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    /* A frame may ask for a window of up to 2 GiB; refuse anything past 8 MiB (zstd's default
     * limit is 128 MiB) so that a hostile header cannot make us allocate a huge window. */
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 23);
    ZSTD_inBuffer ib = {in, len, 0};
    int rv = 0;
    size_t hint = 1; /* Non-zero while a frame is unfinished. */
    while (ib.pos < ib.size || hint != 0) {
        size_t avail;
        rv = grow(out, &avail);
        if (rv != 0) {
            break;
        }
        ZSTD_outBuffer ob = {out->data + out->len, avail, 0};
        size_t before = ib.pos;
        hint = ZSTD_decompressStream(dctx, &ob, &ib);
        out->len += ob.pos;
        if (ZSTD_isError(hint)) {
            rv = ZSTD_getErrorCode(hint) == ZSTD_error_memory_allocation ? DLOTEL_ERR_NOMEM
                                                                         : DLOTEL_ERR_BAD_INPUT;
            break;
        }
        if (ob.pos == 0 && ib.pos == before) {
            /* No progress with room to write: the input ended inside a frame. */
            rv = DLOTEL_ERR_BAD_INPUT;
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return rv;
}

int codec_decompress(enum codec c, const uint8_t *in, size_t len, struct buf *out)
{
    switch (c) {
    case CODEC_NONE:
        return buf_append(out, in, len);
    case CODEC_GZIP:
        return gunzip(in, len, out);
    case CODEC_ZSTD:
        if (len == 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        return unzstd(in, len, out);
    }
    return DLOTEL_ERR_UNSUPPORTED;
}

static int gzip_compress(const uint8_t *in, size_t len, int level, struct buf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, level == 0 ? Z_DEFAULT_COMPRESSION : level, Z_DEFLATED, 16 + MAX_WBITS, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = buf_reserve(out, deflateBound(&zs, (uLong)len));
    if (rv == 0) {
        zs.next_in = (Bytef *)(uintptr_t)in;
        zs.avail_in = (uInt)len;
        zs.next_out = out->data + out->len;
        zs.avail_out = (uInt)(out->cap - 1 - out->len);
        if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
            rv = DLOTEL_ERR_INTERNAL;
        } else {
            out->len += zs.total_out;
        }
    }
    deflateEnd(&zs);
    return rv;
}

static int zstd_compress(const uint8_t *in, size_t len, int level, struct buf *out)
{
    size_t bound = ZSTD_compressBound(len);
    int rv = buf_reserve(out, bound);
    if (rv != 0) {
        return rv;
    }
    size_t n = ZSTD_compress(out->data + out->len, bound, in, len, level == 0 ? 3 : level);
    if (ZSTD_isError(n)) {
        return DLOTEL_ERR_INTERNAL;
    }
    out->len += n;
    return 0;
}

int codec_compress(enum codec c, const uint8_t *in, size_t len, int level, struct buf *out)
{
    switch (c) {
    case CODEC_NONE:
        return buf_append(out, in, len);
    case CODEC_GZIP:
        return gzip_compress(in, len, level, out);
    case CODEC_ZSTD:
        return zstd_compress(in, len, level, out);
    }
    return DLOTEL_ERR_UNSUPPORTED;
}
