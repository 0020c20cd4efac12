/*
 * Fuzz target: what an upstream server sends back to the exporters. The first byte picks the
 * parser (Retry-After, grpc-status-details-bin, protobuf and JSON partial_success, protobuf and
 * JSON google.rpc.Status, grpc-message, base64); the rest is the input. Besides not crashing,
 * each parser must keep its promises: waits within the clamp, outputs within their limits,
 * messages NUL-terminated valid text without control characters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "dlotel.h"
#include "exporter/upstream.h"

static void check_text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap) {
        abort(); /* Not NUL-terminated. */
    }
    for (size_t i = 0; i < n; i++) {
        if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] == 0x7f) {
            abort();
        }
    }
}

static void check_rv(int rv)
{
    if (rv != 0 && rv != DLOTEL_ERR_BAD_INPUT && rv != DLOTEL_ERR_TOO_LARGE &&
        rv != DLOTEL_ERR_NOMEM) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t which = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (which % 8) {
    case 0: {
        uint64_t wait = 0;
        /* A fixed "now" (2024-01-01) so that dates both before and after it are reached. */
        int rv =
            upstream_retry_after_parse((const char *)p, n, 1704067200ull * 1000000000ull, &wait);
        check_rv(rv);
        if (rv == 0 && wait > UPSTREAM_RETRY_AFTER_MAX_NS) {
            abort();
        }
        int64_t t;
        check_rv(upstream_http_date_parse((const char *)p, n, &t));
        break;
    }
    case 1: {
        struct buf scratch;
        buf_init(&scratch, 16384);
        struct upstream_rpc_status st;
        int rv = upstream_grpc_details_parse((const char *)p, n, &scratch, &st);
        check_rv(rv);
        if (scratch.len > scratch.max) {
            abort();
        }
        if (rv == 0) {
            check_text(st.message, sizeof(st.message));
            if (st.retry_delay_ns > UPSTREAM_RETRY_AFTER_MAX_NS) {
                abort();
            }
        }
        buf_cleanup(&scratch);
        break;
    }
    case 2: {
        struct upstream_rpc_status st;
        int rv = upstream_rpc_status_parse(p, n, &st);
        check_rv(rv);
        if (rv == 0) {
            check_text(st.message, sizeof(st.message));
            if (st.retry_delay_ns > UPSTREAM_RETRY_AFTER_MAX_NS ||
                (!st.has_retry_info && st.retry_delay_ns != 0)) {
                abort();
            }
        }
        break;
    }
    case 3: {
        struct upstream_partial ps;
        int rv = upstream_partial_success_parse(p, n, &ps);
        check_rv(rv);
        check_text(ps.message, sizeof(ps.message));
        if (rv == 0 && ps.rejected > (uint64_t)INT64_MAX) {
            abort();
        }
        break;
    }
    case 4: {
        struct upstream_partial ps;
        int rv = upstream_partial_success_parse_json((enum otlp_signal)((which >> 3) % 3),
                                                     (const char *)p, n, &ps);
        check_rv(rv);
        check_text(ps.message, sizeof(ps.message));
        if (rv != 0 && (ps.present || ps.rejected != 0)) {
            abort();
        }
        break;
    }
    case 5: {
        struct upstream_rpc_status st;
        int rv = upstream_rpc_status_parse_json((const char *)p, n, &st);
        check_rv(rv);
        if (rv == 0) {
            check_text(st.message, sizeof(st.message));
        }
        break;
    }
    case 6: {
        struct buf out;
        buf_init(&out, 4096);
        check_rv(upstream_grpc_message_decode((const char *)p, n, &out));
        /* Decoding never makes text longer. */
        if (out.len > out.max || out.len > n) {
            abort();
        }
        char text[256];
        upstream_text_copy(text, sizeof(text), out.data, out.len);
        check_text(text, sizeof(text));
        buf_cleanup(&out);
        break;
    }
    case 7: {
        struct buf out;
        buf_init(&out, 4096);
        int rv = upstream_base64_decode((const char *)p, n, &out);
        check_rv(rv);
        if (out.len > out.max || (rv == 0 && out.len > n * 3 / 4 + 1)) {
            abort();
        }
        buf_cleanup(&out);
        break;
    }
    }
    return 0;
}
