/*
 * The upstream exporters' response parsers and the outcome classification (exporter/upstream.h),
 * table-driven with the boundary cases: every HTTP status class, every gRPC code with and without
 * RetryInfo, curl's transport errors, the three HTTP-date formats, base64 padding rules,
 * percent-decoding edge cases, and partial_success as our own OTLP encoder writes it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "core/buf.h"
#include "dlotel.h"
#include "exporter/upstream.h"
#include "otlp/otlp.h"

#define SEC 1000000000ull

/* -------------------------------------------------------------------------------------------- */
/* A tiny protobuf writer for building server answers by hand. */

static void put_varint(struct buf *b, uint64_t v)
{
    while (v >= 0x80) {
        assert_int_equal(buf_putc(b, (uint8_t)(v | 0x80)), 0);
        v >>= 7;
    }
    assert_int_equal(buf_putc(b, (uint8_t)v), 0);
}

static void put_tag(struct buf *b, uint32_t field, int wt)
{
    put_varint(b, (uint64_t)field << 3 | (uint64_t)wt);
}

static void put_len(struct buf *b, uint32_t field, const void *p, size_t n)
{
    put_tag(b, field, 2);
    put_varint(b, n);
    if (n > 0) {
        assert_int_equal(buf_append(b, p, n), 0);
    }
}

static void put_uint(struct buf *b, uint32_t field, uint64_t v)
{
    put_tag(b, field, 0);
    put_varint(b, v);
}

/* An Any holding RetryInfo{retry_delay: Duration{seconds, nanos}}, fields in either order. */
static void put_retry_info(struct buf *status, int64_t seconds, int32_t nanos, bool value_first)
{
    struct buf dur, ri, any;
    buf_init(&dur, 1024);
    buf_init(&ri, 1024);
    buf_init(&any, 1024);
    if (seconds != 0) {
        put_uint(&dur, 1, (uint64_t)seconds);
    }
    if (nanos != 0) {
        put_uint(&dur, 2, (uint64_t)(int64_t)nanos);
    }
    put_len(&ri, 1, dur.data, dur.len);
    static const char type[] = "type.googleapis.com/google.rpc.RetryInfo";
    if (value_first) {
        put_len(&any, 2, ri.data, ri.len);
        put_len(&any, 1, type, strlen(type));
    } else {
        put_len(&any, 1, type, strlen(type));
        put_len(&any, 2, ri.data, ri.len);
    }
    put_len(status, 3, any.data, any.len);
    buf_cleanup(&dur);
    buf_cleanup(&ri);
    buf_cleanup(&any);
}

static void put_other_detail(struct buf *status)
{
    struct buf any;
    buf_init(&any, 1024);
    static const char type[] = "type.googleapis.com/google.rpc.BadRequest";
    put_len(&any, 1, type, strlen(type));
    put_len(&any, 2, "\x0a\x03\x0a\x01x", 5);
    put_len(status, 3, any.data, any.len);
    buf_cleanup(&any);
}

static char *base64(const uint8_t *p, size_t n, bool pad)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n / 3 * 4 + 8);
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        if (pad) {
            out[o++] = '=';
        }
    }
    out[o] = 0;
    return out;
}

/* -------------------------------------------------------------------------------------------- */
/* Classification */

struct class_case {
    bool grpc;
    int curl_code;
    int http_status;
    int grpc_status;
    bool retry_info;
    enum export_outcome want;
};

static void check_cases(const struct class_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct upstream_reply r = {
            .grpc = c[i].grpc,
            .curl_code = c[i].curl_code,
            .http_status = c[i].http_status,
            .grpc_status = c[i].grpc_status,
            .retry_info = c[i].retry_info,
        };
        enum export_outcome got = upstream_classify(&r);
        if (got != c[i].want) {
            print_error("case %zu: grpc=%d curl=%d http=%d grpc_status=%d retry_info=%d: "
                        "got %d want %d\n",
                        i, c[i].grpc, c[i].curl_code, c[i].http_status, c[i].grpc_status,
                        c[i].retry_info, got, c[i].want);
        }
        assert_int_equal(got, c[i].want);
    }
}

static void test_classify_http(void **state)
{
    (void)state;
    static const struct class_case cases[] = {
        /* Any 2xx is success, the edges included. */
        {false, 0, 200, -1, false, EXPORT_OK},
        {false, 0, 201, -1, false, EXPORT_OK},
        {false, 0, 202, -1, false, EXPORT_OK},
        {false, 0, 204, -1, false, EXPORT_OK},
        {false, 0, 299, -1, false, EXPORT_OK},
        /* Exactly four statuses are retryable. */
        {false, 0, 429, -1, false, EXPORT_RETRY},
        {false, 0, 502, -1, false, EXPORT_RETRY},
        {false, 0, 503, -1, false, EXPORT_RETRY},
        {false, 0, 504, -1, false, EXPORT_RETRY},
        /* Their neighbours are not. */
        {false, 0, 428, -1, false, EXPORT_PERMANENT},
        {false, 0, 430, -1, false, EXPORT_PERMANENT},
        {false, 0, 500, -1, false, EXPORT_PERMANENT},
        {false, 0, 501, -1, false, EXPORT_PERMANENT},
        {false, 0, 505, -1, false, EXPORT_PERMANENT},
        {false, 0, 400, -1, false, EXPORT_PERMANENT},
        {false, 0, 401, -1, false, EXPORT_PERMANENT},
        {false, 0, 403, -1, false, EXPORT_PERMANENT},
        {false, 0, 404, -1, false, EXPORT_PERMANENT},
        {false, 0, 408, -1, false, EXPORT_PERMANENT},
        {false, 0, 413, -1, false, EXPORT_PERMANENT},
        {false, 0, 415, -1, false, EXPORT_PERMANENT},
        /* Redirects are not followed, and 1xx or 300 are not success. */
        {false, 0, 199, -1, false, EXPORT_PERMANENT},
        {false, 0, 300, -1, false, EXPORT_PERMANENT},
        {false, 0, 301, -1, false, EXPORT_PERMANENT},
        {false, 0, 308, -1, false, EXPORT_PERMANENT},
        /* A grpc-status beside an HTTP answer means nothing to otlp_http. */
        {false, 0, 200, 14, false, EXPORT_OK},
    };
    check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_classify_transport(void **state)
{
    (void)state;
    static const struct class_case cases[] = {
        {false, CURLE_COULDNT_CONNECT, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_OPERATION_TIMEDOUT, 0, -1, false, EXPORT_RETRY},
        /* A timeout after the status line arrived is still a timeout. */
        {false, CURLE_OPERATION_TIMEDOUT, 200, -1, false, EXPORT_RETRY},
        {false, CURLE_COULDNT_RESOLVE_HOST, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_COULDNT_RESOLVE_PROXY, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_SEND_ERROR, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_RECV_ERROR, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_GOT_NOTHING, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_PARTIAL_FILE, 200, -1, false, EXPORT_RETRY},
        {false, CURLE_HTTP2, 0, -1, false, EXPORT_RETRY},
        {true, CURLE_HTTP2_STREAM, 200, -1, false, EXPORT_RETRY},
        {false, CURLE_SSL_CONNECT_ERROR, 0, -1, false, EXPORT_RETRY},
        {false, CURLE_PROXY, 0, -1, false, EXPORT_RETRY},
        /* A server certificate that does not verify: retried (upstream.h says why). */
        {false, CURLE_PEER_FAILED_VERIFICATION, 0, -1, false, EXPORT_RETRY},
        {true, CURLE_PEER_FAILED_VERIFICATION, 0, -1, false, EXPORT_RETRY},
        /* Our own files and settings: permanent. */
        {false, CURLE_SSL_CACERT_BADFILE, 0, -1, false, EXPORT_PERMANENT},
        {true, CURLE_SSL_CACERT_BADFILE, 0, -1, false, EXPORT_PERMANENT},
        {false, CURLE_SSL_CERTPROBLEM, 0, -1, false, EXPORT_PERMANENT},
        {false, CURLE_SSL_CRL_BADFILE, 0, -1, false, EXPORT_PERMANENT},
        {false, CURLE_URL_MALFORMAT, 0, -1, false, EXPORT_PERMANENT},
        {false, CURLE_UNSUPPORTED_PROTOCOL, 0, -1, false, EXPORT_PERMANENT},
        /* The transport error wins over whatever status had arrived. */
        {true, CURLE_RECV_ERROR, 200, 0, false, EXPORT_RETRY},
        {false, CURLE_SSL_CACERT_BADFILE, 200, -1, false, EXPORT_PERMANENT},
    };
    check_cases(cases, sizeof(cases) / sizeof(cases[0]));
    assert_string_equal(upstream_curl_category(CURLE_OPERATION_TIMEDOUT), "timeout");
    assert_true(upstream_curl_is_tls_problem(CURLE_PEER_FAILED_VERIFICATION));
    assert_true(upstream_curl_is_tls_problem(CURLE_SSL_CACERT_BADFILE));
    assert_false(upstream_curl_is_tls_problem(CURLE_COULDNT_CONNECT));
}

static void test_classify_grpc(void **state)
{
    (void)state;
    /* The specification's table, code by code, with and without RetryInfo. */
    static const enum export_outcome want[17] = {
        EXPORT_OK,        /* OK */
        EXPORT_RETRY,     /* CANCELLED */
        EXPORT_PERMANENT, /* UNKNOWN */
        EXPORT_PERMANENT, /* INVALID_ARGUMENT */
        EXPORT_RETRY,     /* DEADLINE_EXCEEDED */
        EXPORT_PERMANENT, /* NOT_FOUND */
        EXPORT_PERMANENT, /* ALREADY_EXISTS */
        EXPORT_PERMANENT, /* PERMISSION_DENIED */
        EXPORT_PERMANENT, /* RESOURCE_EXHAUSTED (without RetryInfo) */
        EXPORT_PERMANENT, /* FAILED_PRECONDITION */
        EXPORT_RETRY,     /* ABORTED */
        EXPORT_RETRY,     /* OUT_OF_RANGE */
        EXPORT_PERMANENT, /* UNIMPLEMENTED */
        EXPORT_PERMANENT, /* INTERNAL */
        EXPORT_RETRY,     /* UNAVAILABLE */
        EXPORT_RETRY,     /* DATA_LOSS */
        EXPORT_PERMANENT, /* UNAUTHENTICATED */
    };
    for (int code = 0; code <= 16; code++) {
        struct upstream_reply r = {.grpc = true, .http_status = 200, .grpc_status = code};
        assert_int_equal(upstream_classify(&r), want[code]);
        r.retry_info = true;
        enum export_outcome with =
            code == UPSTREAM_GRPC_RESOURCE_EXHAUSTED ? EXPORT_RETRY : want[code];
        assert_int_equal(upstream_classify(&r), with);
    }
    static const struct class_case cases[] = {
        /* Codes past the table are unknown: permanent. */
        {true, 0, 200, 17, false, EXPORT_PERMANENT},
        {true, 0, 200, 9999, true, EXPORT_PERMANENT},
        /* No grpc-status at all on a 200: not a gRPC server. */
        {true, 0, 200, -1, false, EXPORT_PERMANENT},
        /* Non-200 statuses go through gRPC's HTTP mapping, whatever grpc-status says. */
        {true, 0, 429, -1, false, EXPORT_RETRY},
        {true, 0, 502, -1, false, EXPORT_RETRY},
        {true, 0, 503, 0, false, EXPORT_RETRY},
        {true, 0, 504, -1, false, EXPORT_RETRY},
        {true, 0, 400, -1, false, EXPORT_PERMANENT},
        {true, 0, 401, -1, false, EXPORT_PERMANENT},
        {true, 0, 404, 0, false, EXPORT_PERMANENT},
        {true, 0, 500, -1, false, EXPORT_PERMANENT},
        {true, 0, 204, 0, false, EXPORT_PERMANENT},
    };
    check_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_grpc_from_http(void **state)
{
    (void)state;
    static const int cases[][2] = {
        {400, UPSTREAM_GRPC_INTERNAL},
        {401, UPSTREAM_GRPC_UNAUTHENTICATED},
        {403, UPSTREAM_GRPC_PERMISSION_DENIED},
        {404, UPSTREAM_GRPC_UNIMPLEMENTED},
        {429, UPSTREAM_GRPC_UNAVAILABLE},
        {502, UPSTREAM_GRPC_UNAVAILABLE},
        {503, UPSTREAM_GRPC_UNAVAILABLE},
        {504, UPSTREAM_GRPC_UNAVAILABLE},
        {500, UPSTREAM_GRPC_UNKNOWN},
        {302, UPSTREAM_GRPC_UNKNOWN},
        {0, UPSTREAM_GRPC_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(upstream_grpc_from_http(cases[i][0]), cases[i][1]);
    }
    assert_string_equal(upstream_grpc_code_name(8), "RESOURCE_EXHAUSTED");
    assert_string_equal(upstream_grpc_code_name(16), "UNAUTHENTICATED");
    assert_string_equal(upstream_grpc_code_name(17), "UNKNOWN_CODE");
    assert_string_equal(upstream_grpc_code_name(-1), "UNKNOWN_CODE");
}

/* -------------------------------------------------------------------------------------------- */
/* Retry-After */

/* 1994-11-06 08:49:00 UTC, a minute before the RFC's example date. */
#define NOW_1994 ((uint64_t)784111740 * SEC)

static void test_http_date(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t want; /* -1: must be refused */
    } cases[] = {
        {"Thu, 01 Jan 1970 00:00:00 GMT", 0},
        {"Sun, 06 Nov 1994 08:49:37 GMT", 784111777},
        {"Sunday, 06-Nov-94 08:49:37 GMT", 784111777},
        {"Sun Nov  6 08:49:37 1994", 784111777},
        {"Sun Nov 16 08:49:37 1994", 784975777},
        {"Tue, 19 Jan 2038 03:14:08 GMT", 2147483648},
        {"Fri, 31 Dec 9999 23:59:59 GMT", 253402300799},
        {"Thu, 29 Feb 1996 00:00:00 GMT", 825552000},
        {"Tue, 29 Feb 2000 00:00:00 GMT", 951782400},
        {"Wed, 31 Dec 1969 23:59:59 GMT", -1}, /* Before the epoch. */
        /* RFC 850's two-digit years: 69 is 2069, 70 is 1970. */
        {"Thursday, 01-Jan-70 00:00:00 GMT", 0},
        {"Tuesday, 01-Jan-69 00:00:00 GMT", 3124224000},
        /* Leap second 60 is accepted. */
        {"Sat, 31 Dec 2016 23:59:60 GMT", 1483228800},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = 12345;
        assert_int_equal(upstream_http_date_parse(cases[i].text, strlen(cases[i].text), &got), 0);
        assert_int_equal(got, cases[i].want);
    }
    static const char *const bad[] = {
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",  /* Only GMT. */
        "Sun, 06 Nov 1994 08:49:37 GMT ", /* Trailing bytes (the caller trims). */
        "Sun, 6 Nov 1994 08:49:37 GMT",   /* Two-digit day. */
        "Sun, 06 nov 1994 08:49:37 GMT",  /* Month names are case-sensitive. */
        "Sun, 31 Feb 1994 08:49:37 GMT",  /* No such day. */
        "Sun, 29 Feb 1900 08:49:37 GMT",  /* 1900 is not a leap year. */
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT", /* IMF needs four digits. */
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994", /* asctime pads the day with a space. */
        "Sun Nov  6 08:49:37 94",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GM",
        "Sun, 06 Nov 1994 08:49:3",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t got = 777;
        if (upstream_http_date_parse(bad[i], strlen(bad[i]), &got) != DLOTEL_ERR_BAD_INPUT) {
            print_error("accepted: '%s'\n", bad[i]);
            fail();
        }
        assert_int_equal(got, 777);
    }
}

static void test_retry_after(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t now;
        uint64_t want;
    } cases[] = {
        {"0", NOW_1994, 0},
        {"1", NOW_1994, 1 * SEC},
        {"120", NOW_1994, 120 * SEC},
        {" 5 ", NOW_1994, 5 * SEC},
        {"\t7\t", NOW_1994, 7 * SEC},
        {"007", NOW_1994, 7 * SEC},
        {"3600", NOW_1994, 3600 * SEC},
        /* Clamped to an hour, however large, without overflowing. */
        {"3601", NOW_1994, 3600 * SEC},
        {"18446744073709551616", NOW_1994, 3600 * SEC},
        {"99999999999999999999999999999999", NOW_1994, 3600 * SEC},
        /* Dates: the wait until then, from now. */
        {"Sun, 06 Nov 1994 08:49:37 GMT", NOW_1994, 37 * SEC},
        {"Sunday, 06-Nov-94 08:49:37 GMT", NOW_1994, 37 * SEC},
        {"Sun Nov  6 08:49:37 1994", NOW_1994, 37 * SEC},
        {"  Sun, 06 Nov 1994 08:49:37 GMT  ", NOW_1994, 37 * SEC},
        /* The part of the current second already gone is not waited twice. */
        {"Sun, 06 Nov 1994 08:49:37 GMT", NOW_1994 + 250000000, 36 * SEC + 750000000},
        /* A date now or in the past: no wait. */
        {"Sun, 06 Nov 1994 08:49:00 GMT", NOW_1994, 0},
        {"Sun, 06 Nov 1994 08:48:59 GMT", NOW_1994, 0},
        {"Thu, 01 Jan 1970 00:00:00 GMT", NOW_1994, 0},
        /* Far future: clamped. */
        {"Fri, 31 Dec 9999 23:59:59 GMT", NOW_1994, 3600 * SEC},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = 12345;
        int rv =
            upstream_retry_after_parse(cases[i].text, strlen(cases[i].text), cases[i].now, &got);
        if (rv != 0 || got != cases[i].want) {
            print_error("'%s': rv %d got %llu want %llu\n", cases[i].text, rv,
                        (unsigned long long)got, (unsigned long long)cases[i].want);
        }
        assert_int_equal(rv, 0);
        assert_int_equal(got, cases[i].want);
    }
    static const char *const bad[] = {
        "", " ", "-1", "+1", "1.5", "5s", "1 2", "0x10", "tomorrow", "Sun, 06 Nov 1994",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t got = 777;
        assert_int_equal(upstream_retry_after_parse(bad[i], strlen(bad[i]), NOW_1994, &got),
                         DLOTEL_ERR_BAD_INPUT);
        assert_int_equal(got, 777);
    }
    /* Not NUL-terminated: only |len| bytes count. */
    uint64_t got = 0;
    assert_int_equal(upstream_retry_after_parse("12345", 2, NOW_1994, &got), 0);
    assert_int_equal(got, 12 * SEC);
}

/* -------------------------------------------------------------------------------------------- */
/* grpc-message and base64 */

static void test_grpc_message_decode(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"", ""},
        {"hello", "hello"},
        {"a%20b", "a b"},
        {"%E2%9C%93 done", "\xe2\x9c\x93 done"},
        {"%e2%9c%93", "\xe2\x9c\x93"}, /* Lowercase hex is accepted too. */
        {"100%", "100%"},              /* A lone '%' stays. */
        {"%4", "%4"},                  /* So does a short escape. */
        {"%zz", "%zz"},                /* And a non-hex one. */
        {"%%41", "%A"},                /* The first '%' is literal, then %41. */
        {"%41%", "A%"},
        {"%0A%0D", "\n\r"},
        {"%25", "%"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf out;
        buf_init(&out, 1024);
        assert_int_equal(upstream_grpc_message_decode(cases[i].in, strlen(cases[i].in), &out), 0);
        assert_int_equal(out.len, strlen(cases[i].want));
        assert_memory_equal(out.data == NULL ? (uint8_t *)"" : out.data, cases[i].want, out.len);
        buf_cleanup(&out);
    }
    /* The output limit holds. */
    struct buf small;
    buf_init(&small, 3);
    assert_int_equal(upstream_grpc_message_decode("abcdef", 6, &small), DLOTEL_ERR_TOO_LARGE);
    assert_true(small.len <= 3);
    buf_cleanup(&small);
}

static void test_base64(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *want;
        size_t want_len;
    } good[] = {
        {"", "", 0},
        {"Zg==", "f", 1},
        {"Zg", "f", 1},
        {"Zm8=", "fo", 2},
        {"Zm8", "fo", 2},
        {"Zm9v", "foo", 3},
        {"Zm9vYg==", "foob", 4},
        {"Zm9vYg", "foob", 4},
        {"Zm9vYmE=", "fooba", 5},
        {"Zm9vYmFy", "foobar", 6},
        {"AAEC/+/w", "\x00\x01\x02\xff\xef\xf0", 6},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct buf out;
        buf_init(&out, 64);
        int rv = upstream_base64_decode(good[i].in, strlen(good[i].in), &out);
        if (rv != 0) {
            print_error("refused '%s'\n", good[i].in);
        }
        assert_int_equal(rv, 0);
        assert_int_equal(out.len, good[i].want_len);
        if (out.len > 0) {
            assert_memory_equal(out.data, good[i].want, out.len);
        }
        buf_cleanup(&out);
    }
    static const char *const bad[] = {
        "Z",        /* Six bits. */
        "Zg=",      /* Padding that does not complete a quantum. */
        "Zm9vY",    /* 5 mod 4 == 1. */
        "Zh==",     /* Non-zero trailing bits. */
        "Zm9=",     /* Likewise for two bytes. */
        "Zm9v=",    /* Padding after a whole quantum. */
        "Zm9v====", /* Too much padding. */
        "Zg=a",     /* Padding inside. */
        "Zm 9v",    /* White space. */
        "Zm9v-_",   /* The URL-safe alphabet is not gRPC's. */
        "Zm9v\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct buf out;
        buf_init(&out, 64);
        if (upstream_base64_decode(bad[i], strlen(bad[i]), &out) != DLOTEL_ERR_BAD_INPUT) {
            print_error("accepted '%s'\n", bad[i]);
            fail();
        }
        buf_cleanup(&out);
    }
    /* The output limit holds: 8 characters make 6 bytes, more than 5. */
    struct buf small;
    buf_init(&small, 5);
    assert_int_equal(upstream_base64_decode("Zm9vYmFy", 8, &small), DLOTEL_ERR_TOO_LARGE);
    buf_cleanup(&small);
}

/* -------------------------------------------------------------------------------------------- */
/* google.rpc.Status and RetryInfo */

static void test_rpc_status_retry_info(void **state)
{
    (void)state;
    struct {
        int64_t seconds;
        int32_t nanos;
        bool value_first;
        bool other_first;
        uint64_t want;
    } cases[] = {
        {2, 500000000, false, false, 2 * SEC + 500000000},
        {2, 500000000, true, true, 2 * SEC + 500000000}, /* Any's fields in the other order. */
        {0, 1, false, false, 1},
        {0, 0, false, false, 0},           /* An empty Duration: retry at once. */
        {-5, 0, false, false, 0},          /* Negative: treated as zero. */
        {-1, -500000000, false, false, 0}, /* Negative nanos with negative seconds. */
        {1, 2000000000, false, false, 1 * SEC + 999999999}, /* Nanos out of range: clamped. */
        {3600, 0, false, false, 3600 * SEC},
        {3601, 0, false, false, 3600 * SEC}, /* Clamped to an hour. */
        {INT64_MAX, 999999999, false, false, 3600 * SEC},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf st;
        buf_init(&st, 4096);
        put_uint(&st, 1, 8);
        put_len(&st, 2, "slow down", 9);
        if (cases[i].other_first) {
            put_other_detail(&st);
        }
        put_retry_info(&st, cases[i].seconds, cases[i].nanos, cases[i].value_first);
        if (!cases[i].other_first) {
            put_other_detail(&st);
        }
        /* An unknown field of each wire type is skipped. */
        put_uint(&st, 99, 1);
        put_tag(&st, 98, 1);
        assert_int_equal(buf_append(&st, "12345678", 8), 0);
        put_tag(&st, 97, 5);
        assert_int_equal(buf_append(&st, "1234", 4), 0);

        struct upstream_rpc_status out;
        assert_int_equal(upstream_rpc_status_parse(st.data, st.len, &out), 0);
        assert_int_equal(out.code, 8);
        assert_string_equal(out.message, "slow down");
        assert_true(out.has_retry_info);
        assert_int_equal(out.retry_delay_ns, cases[i].want);

        /* The same through the header, padded and unpadded. */
        for (int pad = 0; pad < 2; pad++) {
            char *b64 = base64(st.data, st.len, pad);
            struct buf scratch;
            buf_init(&scratch, 16384);
            struct upstream_rpc_status o2;
            assert_int_equal(upstream_grpc_details_parse(b64, strlen(b64), &scratch, &o2), 0);
            assert_int_equal(o2.code, 8);
            assert_true(o2.has_retry_info);
            assert_int_equal(o2.retry_delay_ns, cases[i].want);
            buf_cleanup(&scratch);
            free(b64);
        }
        buf_cleanup(&st);
    }
}

static void test_rpc_status_edges(void **state)
{
    (void)state;
    struct upstream_rpc_status out;

    /* Empty: code 0, no message, no RetryInfo. */
    assert_int_equal(upstream_rpc_status_parse((const uint8_t *)"", 0, &out), 0);
    assert_int_equal(out.code, 0);
    assert_string_equal(out.message, "");
    assert_false(out.has_retry_info);

    /* Details of other types only: no RetryInfo. */
    struct buf st;
    buf_init(&st, 4096);
    put_uint(&st, 1, 8);
    put_other_detail(&st);
    assert_int_equal(upstream_rpc_status_parse(st.data, st.len, &out), 0);
    assert_false(out.has_retry_info);

    /* A type URL that merely contains the name is not RetryInfo. */
    buf_reset(&st);
    struct buf any;
    buf_init(&any, 256);
    put_len(&any, 1, "type.googleapis.com/google.rpc.RetryInfoX", 41);
    put_len(&st, 3, any.data, any.len);
    assert_int_equal(upstream_rpc_status_parse(st.data, st.len, &out), 0);
    assert_false(out.has_retry_info);
    buf_cleanup(&any);

    /* A message longer than the field is cut, and control characters are neutralised. */
    buf_reset(&st);
    char longmsg[600];
    memset(longmsg, 'x', sizeof(longmsg));
    longmsg[0] = '\n';
    put_len(&st, 2, longmsg, sizeof(longmsg));
    assert_int_equal(upstream_rpc_status_parse(st.data, st.len, &out), 0);
    assert_int_equal(strlen(out.message), sizeof(out.message) - 1);
    assert_int_equal(out.message[0], ' ');

    /* Malformed inputs. */
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"\x08", 1}, /* Truncated varint. */
        {"\x12\x05"
         "abc",
         5},              /* Length past the end. */
        {"\x0a\x01x", 3}, /* code with the LEN wire type. */
        {"\x10\x01", 2},  /* message with the VARINT wire type. */
        {"\x0b", 1},      /* Wire type 3 (start group). */
        {"\x0f", 1},      /* Wire type 7. */
        {"\x00\x01", 2},  /* Field 0. */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12}, /* 11-byte varint. */
        {"\x1a\x02\x0a\x05", 4}, /* An Any whose type_url overruns it. */
        {"\x19"
         "1234567",
         8}, /* A fixed64 cut short. */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (upstream_rpc_status_parse((const uint8_t *)bad[i].bytes, bad[i].len, &out) !=
            DLOTEL_ERR_BAD_INPUT) {
            print_error("accepted bad case %zu\n", i);
            fail();
        }
    }

    /* A RetryInfo whose Duration is malformed fails the whole Status. */
    buf_reset(&st);
    buf_init(&any, 256);
    put_len(&any, 1, "type.googleapis.com/google.rpc.RetryInfo", 40);
    put_len(&any, 2, "\x0a\x02\x08", 3);
    put_len(&st, 3, any.data, any.len);
    assert_int_equal(upstream_rpc_status_parse(st.data, st.len, &out), DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&any);
    buf_cleanup(&st);

    /* Header values that are not base64 are refused before parsing. */
    struct buf scratch;
    buf_init(&scratch, 64);
    assert_int_equal(upstream_grpc_details_parse("not base64!", 11, &scratch, &out),
                     DLOTEL_ERR_BAD_INPUT);
    /* And the decoded size is bounded by the scratch buffer. */
    assert_int_equal(upstream_grpc_details_parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                                 92, &scratch, &out),
                     DLOTEL_ERR_TOO_LARGE);
    buf_cleanup(&scratch);
}

static void test_rpc_status_json(void **state)
{
    (void)state;
    struct upstream_rpc_status out;
    const char *j = "{\"code\": 3, \"message\": \"bad \\u0001 span\", \"details\": []}";
    assert_int_equal(upstream_rpc_status_parse_json(j, strlen(j), &out), 0);
    assert_int_equal(out.code, 3);
    assert_string_equal(out.message, "bad   span");
    const char *const bad[] = {"", "[]", "{\"code\": \"x\"}", "{\"message\": 5}", "{", "null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(upstream_rpc_status_parse_json(bad[i], strlen(bad[i]), &out),
                         DLOTEL_ERR_BAD_INPUT);
    }
}

/* -------------------------------------------------------------------------------------------- */
/* partial_success */

static void test_partial_success_roundtrip(void **state)
{
    (void)state;
    /* What our own OTLP encoder writes (the receivers answer with it) must read back. */
    static const uint64_t counts[] = {0, 1, 127, 128, 300, 1ull << 32, (uint64_t)INT64_MAX};
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
            for (int json = 0; json < 2; json++) {
                struct buf enc;
                buf_init(&enc, 4096);
                assert_int_equal(otlp_response_encode((enum otlp_signal)s, counts[i],
                                                      "some were bad", json, &enc),
                                 0);
                struct upstream_partial ps;
                int rv = json ? upstream_partial_success_parse_json(
                                    (enum otlp_signal)s, (const char *)enc.data, enc.len, &ps)
                              : upstream_partial_success_parse(enc.data, enc.len, &ps);
                assert_int_equal(rv, 0);
                assert_true(ps.present);
                assert_int_equal(ps.rejected, counts[i]);
                assert_string_equal(ps.message, "some were bad");
                buf_cleanup(&enc);
            }
        }
        /* The empty response: a full success. */
        struct buf enc;
        buf_init(&enc, 64);
        assert_int_equal(otlp_response_encode((enum otlp_signal)s, 0, NULL, false, &enc), 0);
        struct upstream_partial ps;
        assert_int_equal(upstream_partial_success_parse(enc.data, enc.len, &ps), 0);
        assert_int_equal(ps.rejected, 0);
        buf_reset(&enc);
        assert_int_equal(otlp_response_encode((enum otlp_signal)s, 0, NULL, true, &enc), 0);
        assert_int_equal(upstream_partial_success_parse_json((enum otlp_signal)s,
                                                             (const char *)enc.data, enc.len, &ps),
                         0);
        assert_int_equal(ps.rejected, 0);
        buf_cleanup(&enc);
    }
}

static void test_partial_success_edges(void **state)
{
    (void)state;
    struct upstream_partial ps;
    struct buf b, inner;
    buf_init(&b, 1024);
    buf_init(&inner, 1024);

    /* Negative counts (int64 on the wire) count as zero. */
    put_uint(&inner, 1, (uint64_t)-5);
    put_len(&b, 1, inner.data, inner.len);
    assert_int_equal(upstream_partial_success_parse(b.data, b.len, &ps), 0);
    assert_true(ps.present);
    assert_int_equal(ps.rejected, 0);

    /* partial_success twice: the later values win (protobuf merge). Unknown fields skipped. */
    buf_reset(&b);
    buf_reset(&inner);
    put_uint(&inner, 1, 3);
    put_len(&inner, 2, "first", 5);
    put_len(&b, 1, inner.data, inner.len);
    put_uint(&b, 7, 42);
    buf_reset(&inner);
    put_uint(&inner, 1, 9);
    put_uint(&inner, 3, 1);
    put_len(&b, 1, inner.data, inner.len);
    assert_int_equal(upstream_partial_success_parse(b.data, b.len, &ps), 0);
    assert_int_equal(ps.rejected, 9);
    assert_string_equal(ps.message, "first");

    /* Other fields only: no partial success. */
    buf_reset(&b);
    put_uint(&b, 2, 1);
    assert_int_equal(upstream_partial_success_parse(b.data, b.len, &ps), 0);
    assert_false(ps.present);

    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"\x0a", 1},             /* Length missing. */
        {"\x0a\x05\x08\x01", 4}, /* Length past the end. */
        {"\x08\x01", 2},         /* partial_success as a varint. */
        {"\x0a\x02\x0a\x00", 4}, /* rejected as LEN. */
        {"\x0a\x02\x10\x01", 4}, /* error_message as a varint. */
        {"\x0a\x01\x08", 3},     /* Varint cut. */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ps.rejected = 99;
        assert_int_equal(
            upstream_partial_success_parse((const uint8_t *)bad[i].bytes, bad[i].len, &ps),
            DLOTEL_ERR_BAD_INPUT);
    }
    buf_cleanup(&b);
    buf_cleanup(&inner);

    /* JSON: strings or numbers, camelCase or proto names, the signal's own field only. */
    static const struct {
        enum otlp_signal s;
        const char *json;
        bool present;
        uint64_t rejected;
        const char *message;
    } good[] = {
        {OTLP_TRACES, "{\"partialSuccess\":{\"rejectedSpans\":\"7\"}}", true, 7, ""},
        {OTLP_TRACES, "{\"partialSuccess\":{\"rejectedSpans\":7,\"errorMessage\":\"m\"}}", true, 7,
         "m"},
        {OTLP_TRACES, "{\"partialSuccess\":{\"rejectedLogRecords\":7}}", true, 0, ""},
        {OTLP_METRICS, "{\"partialSuccess\":{\"rejectedDataPoints\":\"12\"}}", true, 12, ""},
        {OTLP_LOGS, "{\"partial_success\":{\"rejected_log_records\":3,\"error_message\":\"x\"}}",
         true, 3, "x"},
        {OTLP_LOGS, "{\"partialSuccess\":{\"rejectedLogRecords\":\"-4\"}}", true, 0, ""},
        {OTLP_LOGS, "{}", false, 0, ""},
        {OTLP_LOGS, "{\"partialSuccess\":null}", false, 0, ""},
        {OTLP_LOGS, "{\"somethingElse\":1}", false, 0, ""},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(
            upstream_partial_success_parse_json(good[i].s, good[i].json, strlen(good[i].json), &ps),
            0);
        assert_int_equal(ps.present, good[i].present);
        assert_int_equal(ps.rejected, good[i].rejected);
        assert_string_equal(ps.message, good[i].message);
    }
    static const char *const bad_json[] = {
        "",
        "[]",
        "{",
        "{\"partialSuccess\":5}",
        "{\"partialSuccess\":{\"rejectedSpans\":\"x\"}}",
        "{\"partialSuccess\":{\"rejectedSpans\":\"\"}}",
        "{\"partialSuccess\":{\"rejectedSpans\":\"99999999999999999999\"}}",
        "{\"partialSuccess\":{\"rejectedSpans\":1.5}}",
        "{\"partialSuccess\":{\"errorMessage\":5}}",
    };
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        assert_int_equal(
            upstream_partial_success_parse_json(OTLP_TRACES, bad_json[i], strlen(bad_json[i]), &ps),
            DLOTEL_ERR_BAD_INPUT);
        assert_false(ps.present);
        assert_int_equal(ps.rejected, 0);
    }
}

/* -------------------------------------------------------------------------------------------- */
/* Text for logs */

static void test_text_copy(void **state)
{
    (void)state;
    char out[8];
    static const struct {
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"abc", 3, "abc"},
        {"a\r\nb", 4, "a  b"}, /* Line breaks cannot forge log lines. */
        {"a\x7f"
         "b",
         3, "a b"},
        {"\xff\xfe", 2, "??"},               /* Invalid UTF-8. */
        {"\xc0\x80", 2, "??"},               /* Overlong NUL. */
        {"\xed\xa0\x80", 3, "???"},          /* A UTF-16 surrogate. */
        {"\xe2\x9c\x93", 3, "\xe2\x9c\x93"}, /* Valid: kept. */
        {"abcdef\xe2\x9c\x93", 9, "abcdef"}, /* Cut before, never inside, a character. */
        {"abcdefghij", 10, "abcdefg"},
        {"a\0b", 3, "a b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = upstream_text_copy(out, sizeof(out), (const uint8_t *)cases[i].in, cases[i].len);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
    char one[1];
    assert_int_equal(upstream_text_copy(one, 1, (const uint8_t *)"abc", 3), 0);
    assert_int_equal(one[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_http),
        cmocka_unit_test(test_classify_transport),
        cmocka_unit_test(test_classify_grpc),
        cmocka_unit_test(test_grpc_from_http),
        cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_grpc_message_decode),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_rpc_status_retry_info),
        cmocka_unit_test(test_rpc_status_edges),
        cmocka_unit_test(test_rpc_status_json),
        cmocka_unit_test(test_partial_success_roundtrip),
        cmocka_unit_test(test_partial_success_edges),
        cmocka_unit_test(test_text_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
