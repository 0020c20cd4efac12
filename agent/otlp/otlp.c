/*
 * Signal names, the Export*ServiceResponse and google.rpc.Status encoders, and the JSON string
 * writer the room shares.
 *
 * Responses are encoded by hand: they are a handful of bytes, and writing them directly avoids
 * building a message only to pack it.
 */
#include <string.h>

#include "dlotel.h"
#include "otlp/otlp.h"
#include "otlp/otlp_int.h"

static const char *const signal_names[OTLP_SIGNAL_COUNT] = {
    [OTLP_TRACES] = "traces",
    [OTLP_METRICS] = "metrics",
    [OTLP_LOGS] = "logs",
};

const char *otlp_signal_name(enum otlp_signal s)
{
    if ((unsigned)s >= OTLP_SIGNAL_COUNT) {
        return "unknown";
    }
    return signal_names[s];
}

int otlp_signal_parse(const char *name, size_t len, enum otlp_signal *out)
{
    for (unsigned i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        if (strlen(signal_names[i]) == len && memcmp(signal_names[i], name, len) == 0) {
            *out = (enum otlp_signal)i;
            return 0;
        }
    }
    return DLOTEL_ERR_NOT_FOUND;
}

int otlp_json_put_string(struct buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)str;
    int rc = buf_putc(b, '"');
    size_t run = 0; /* Start of the bytes that need no escaping, not yet appended. */
    size_t i = 0;
    while (rc == 0 && i < n) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        size_t k;
        if (c >= 0x80 && (k = otlp_utf8_seq(s + i, n - i)) != 0) {
            i += k;
            continue;
        }
        rc = buf_append(b, s + run, i - run);
        if (rc != 0) {
            break;
        }
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"':
            rc = buf_append(b, "\\\"", 2);
            break;
        case '\\':
            rc = buf_append(b, "\\\\", 2);
            break;
        case '\n':
            rc = buf_append(b, "\\n", 2);
            break;
        case '\r':
            rc = buf_append(b, "\\r", 2);
            break;
        case '\t':
            rc = buf_append(b, "\\t", 2);
            break;
        case '\b':
            rc = buf_append(b, "\\b", 2);
            break;
        case '\f':
            rc = buf_append(b, "\\f", 2);
            break;
        default:
            if (c >= 0x80) {
                /* Not UTF-8: say so with the replacement character rather than fail. */
                rc = buf_append(b, "\\ufffd", 6);
            } else {
                rc = buf_append(b, esc, sizeof(esc));
            }
            break;
        }
        i++;
        run = i;
    }
    if (rc == 0) {
        rc = buf_append(b, s + run, n - run);
    }
    if (rc == 0) {
        rc = buf_putc(b, '"');
    }
    return rc;
}

int otlp_put_varint(struct buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    return buf_append(b, tmp, n);
}

size_t otlp_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/*
 * Appends a string field (tag, length, bytes). The bytes are copied with every byte that is not
 * part of well-formed UTF-8 replaced by '?', one for one, so that strict protobuf readers accept
 * the message whatever the caller passed.
 */
static int put_string_field(struct buf *b, uint32_t number, const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    int rc = otlp_put_varint(b, (uint64_t)number << 3 | 2);
    if (rc == 0) {
        rc = otlp_put_varint(b, n);
    }
    size_t run = 0;
    size_t i = 0;
    while (rc == 0 && i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = otlp_utf8_seq(s + i, n - i);
        if (k != 0) {
            i += k;
            continue;
        }
        rc = buf_append(b, s + run, i - run);
        if (rc == 0) {
            rc = buf_putc(b, '?');
        }
        i++;
        run = i;
    }
    if (rc == 0) {
        rc = buf_append(b, s + run, n - run);
    }
    return rc;
}

/* The JSON key of Export*PartialSuccess's rejected count, per signal. */
static const char *const rejected_keys[OTLP_SIGNAL_COUNT] = {
    [OTLP_TRACES] = "rejectedSpans",
    [OTLP_METRICS] = "rejectedDataPoints",
    [OTLP_LOGS] = "rejectedLogRecords",
};

int otlp_response_encode(enum otlp_signal s, uint64_t rejected, const char *message, bool json,
                         struct buf *out)
{
    if ((unsigned)s >= OTLP_SIGNAL_COUNT) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    size_t start = out->len;
    size_t mlen = message != NULL ? strlen(message) : 0;
    /* rejected_* is an int64 on the wire: a count that large is a bug, but must not wrap. */
    if (rejected > INT64_MAX) {
        rejected = INT64_MAX;
    }
    int rc = 0;
    if (json) {
        if (rejected == 0 && mlen == 0) {
            return buf_append(out, "{}", 2);
        }
        rc = buf_printf(out, "{\"partialSuccess\":{");
        if (rc == 0 && rejected != 0) {
            rc = buf_printf(out, "\"%s\":\"%llu\"%s", rejected_keys[s],
                            (unsigned long long)rejected, mlen != 0 ? "," : "");
        }
        if (rc == 0 && mlen != 0) {
            rc = buf_append(out, "\"errorMessage\":", 15);
            if (rc == 0) {
                rc = otlp_json_put_string(out, message, mlen);
            }
        }
        if (rc == 0) {
            rc = buf_append(out, "}}", 2);
        }
    } else {
        if (rejected == 0 && mlen == 0) {
            return 0;
        }
        /* partial_success (1) { rejected (1): varint, error_message (2): string }. */
        size_t inner = 0;
        if (rejected != 0) {
            inner += 1 + otlp_varint_size(rejected);
        }
        if (mlen != 0) {
            inner += 1 + otlp_varint_size(mlen) + mlen;
        }
        rc = buf_putc(out, 1 << 3 | 2);
        if (rc == 0) {
            rc = otlp_put_varint(out, inner);
        }
        if (rc == 0 && rejected != 0) {
            rc = buf_putc(out, 1 << 3 | 0);
            if (rc == 0) {
                rc = otlp_put_varint(out, rejected);
            }
        }
        if (rc == 0 && mlen != 0) {
            rc = put_string_field(out, 2, message, mlen);
        }
    }
    if (rc != 0) {
        out->len = start;
    }
    return rc;
}

int otlp_status_encode(int32_t code, const char *message, bool json, struct buf *out)
{
    size_t start = out->len;
    size_t mlen = message != NULL ? strlen(message) : 0;
    int rc;
    if (json) {
        rc = buf_printf(out, "{\"code\":%d", (int)code);
        if (rc == 0 && mlen != 0) {
            rc = buf_append(out, ",\"message\":", 11);
            if (rc == 0) {
                rc = otlp_json_put_string(out, message, mlen);
            }
        }
        if (rc == 0) {
            rc = buf_putc(out, '}');
        }
    } else {
        rc = 0;
        if (code != 0) {
            /* int32 on the wire: negative values are sign-extended to 10 bytes. */
            rc = buf_putc(out, 1 << 3 | 0);
            if (rc == 0) {
                rc = otlp_put_varint(out, (uint64_t)(int64_t)code);
            }
        }
        if (rc == 0 && mlen != 0) {
            rc = put_string_field(out, 2, message, mlen);
        }
    }
    if (rc != 0) {
        out->len = start;
    }
    return rc;
}
