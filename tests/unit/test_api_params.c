/* Unit tests for the query API's parameter parsing (agent/api/api_params.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/api_params.h"
#include "dlotel.h"

#define NS 1000000000LL

static void test_query_string(void **state)
{
    (void)state;
    char path[64];
    struct api_params p;
    char why[80];
    assert_int_equal(api_params_parse("/api/otel/v1/traces/?service_name=a%20b&attr.http.route="
                                      "%2Fx%3Fy&limit=5&flag&q=c+d",
                                      path, sizeof(path), &p, why, sizeof(why)),
                     0);
    assert_string_equal(path, "/api/otel/v1/traces/");
    assert_int_equal(p.n, 5);
    assert_string_equal(api_params_get(&p, "service_name"), "a b");
    assert_string_equal(api_params_get(&p, "attr.http.route"), "/x?y");
    assert_string_equal(api_params_get(&p, "limit"), "5");
    assert_string_equal(api_params_get(&p, "flag"), "");
    assert_string_equal(api_params_get(&p, "q"), "c d");
    assert_null(api_params_get(&p, "nope"));
    api_params_cleanup(&p);

    /* No query string; empty pairs skipped. */
    assert_int_equal(api_params_parse("/x", path, sizeof(path), &p, why, sizeof(why)), 0);
    assert_int_equal(p.n, 0);
    assert_int_equal(api_params_parse("/x?&&a=1&", path, sizeof(path), &p, why, sizeof(why)), 0);
    assert_int_equal(p.n, 1);
    api_params_cleanup(&p);

    /* Bad escapes and %00 are refused, naming the parameter. */
    assert_int_equal(api_params_parse("/x?ok=1&bad=%zz", path, sizeof(path), &p, why, sizeof(why)),
                     DLOTEL_ERR_BAD_INPUT);
    assert_string_equal(why, "bad");
    assert_int_equal(p.n, 0);
    assert_int_equal(api_params_parse("/x?n=a%00b", path, sizeof(path), &p, why, sizeof(why)),
                     DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_params_parse("/x?n=a%4", path, sizeof(path), &p, why, sizeof(why)),
                     DLOTEL_ERR_BAD_INPUT);
    /* The path must fit. */
    assert_int_equal(api_params_parse("/0123456789", path, 11, &p, why, sizeof(why)),
                     DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_params_parse("/012345678", path, 11, &p, why, sizeof(why)), 0);
}

static void test_params_limits(void **state)
{
    (void)state;
    char path[64];
    struct api_params p;
    char q[8192];
    /* Exactly API_PARAMS_MAX parameters pass; one more is refused. */
    size_t o = (size_t)snprintf(q, sizeof(q), "/x?");
    for (int i = 0; i < API_PARAMS_MAX; i++) {
        o += (size_t)snprintf(q + o, sizeof(q) - o, "p%d=1&", i);
    }
    assert_int_equal(api_params_parse(q, path, sizeof(path), &p, NULL, 0), 0);
    assert_int_equal(p.n, API_PARAMS_MAX);
    api_params_cleanup(&p);
    snprintf(q + o, sizeof(q) - o, "one=more");
    assert_int_equal(api_params_parse(q, path, sizeof(path), &p, NULL, 0), DLOTEL_ERR_BAD_INPUT);

    /* A value of API_PARAM_VALUE_MAX bytes passes, one more byte does not. */
    static char big[API_PARAM_VALUE_MAX + 32];
    memcpy(big, "/x?v=", 5);
    memset(big + 5, 'a', API_PARAM_VALUE_MAX);
    big[5 + API_PARAM_VALUE_MAX] = '\0';
    assert_int_equal(api_params_parse(big, path, sizeof(path), &p, NULL, 0), 0);
    assert_int_equal(strlen(api_params_get(&p, "v")), API_PARAM_VALUE_MAX);
    api_params_cleanup(&p);
    big[5 + API_PARAM_VALUE_MAX] = 'a';
    big[6 + API_PARAM_VALUE_MAX] = '\0';
    assert_int_equal(api_params_parse(big, path, sizeof(path), &p, NULL, 0), DLOTEL_ERR_BAD_INPUT);
}

static void test_times(void **state)
{
    (void)state;
    int64_t ns;
    const int64_t t0 = 1767225600LL * NS; /* 2026-01-01T00:00:00Z */
    assert_int_equal(api_parse_time("2026-01-01T00:00:00Z", &ns), 0);
    assert_true(ns == t0);
    assert_int_equal(api_parse_time("2026-01-01t00:00:00z", &ns), 0);
    assert_true(ns == t0);
    assert_int_equal(api_parse_time("2026-01-01 02:00:00+02:00", &ns), 0);
    assert_true(ns == t0);
    assert_int_equal(api_parse_time("2025-12-31T19:00:00.5-05:00", &ns), 0);
    assert_true(ns == t0 + NS / 2);
    assert_int_equal(api_parse_time("2026-01-01T00:00:00.123456789Z", &ns), 0);
    assert_true(ns == t0 + 123456789);
    assert_int_equal(api_parse_time("2026-01-01", &ns), 0);
    assert_true(ns == t0);
    /* Epoch numbers by magnitude. */
    assert_int_equal(api_parse_time("1767225600", &ns), 0);
    assert_true(ns == t0);
    assert_int_equal(api_parse_time("1767225600.25", &ns), 0);
    assert_true(ns == t0 + NS / 4);
    assert_int_equal(api_parse_time("1767225600000", &ns), 0);
    assert_true(ns == t0);
    assert_int_equal(api_parse_time("1767225600000000", &ns), 0);
    assert_true(ns == t0);
    assert_int_equal(api_parse_time("1767225600000000000", &ns), 0);
    assert_true(ns == t0);
    /* Boundaries between the units: below 1e11 is seconds (but past 2262 does not fit), 1e11
       is milliseconds. */
    assert_int_equal(api_parse_time("9223372036", &ns), 0);
    assert_true(ns == 9223372036LL * NS);
    assert_int_equal(api_parse_time("9223372037", &ns), DLOTEL_ERR_BAD_INPUT);
    /* The last nanosecond of int64 in either form, and one past it (found by fuzz.api_params:
       an epoch number there formatted to a time the RFC 3339 parser refused). */
    assert_int_equal(api_parse_time("9223372036854775807", &ns), 0);
    assert_true(ns == INT64_MAX);
    assert_int_equal(api_parse_time("2262-04-11T23:47:16.854775807Z", &ns), 0);
    assert_true(ns == INT64_MAX);
    assert_int_equal(api_parse_time("2262-04-11T23:47:16.854775808Z", &ns), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_time("2262-04-11T23:47:17Z", &ns), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_time("2262-04-11T23:47:16.584775808Z", &ns), 0);
    assert_true(ns == 9223372036584775808LL);
    assert_int_equal(api_parse_time("99999999999", &ns), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_time("100000000000", &ns), 0);
    assert_true(ns == 100000000000LL * 1000000);
    assert_int_equal(api_parse_time("0", &ns), 0);
    assert_true(ns == 0);
    /* Refused. */
    const char *bad[] = {"",
                         "x",
                         "-5",
                         " 5",
                         "5 ",
                         "1e9",
                         "0x10",
                         "2026-13-01T00:00:00Z",
                         "2026-02-29T00:00:00Z",
                         "2026-01-01T24:00:00Z",
                         "2026-01-01T00:00:00",
                         "2026-01-01T00:00:00+0200",
                         "2026-01-01T00:00:00.Z",
                         "1969-12-31T23:59:59Z",
                         "2263-01-01T00:00:00Z",
                         "99999999999999999999",
                         "9223372036854775808"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (api_parse_time(bad[i], &ns) != DLOTEL_ERR_BAD_INPUT) {
            fail_msg("accepted time '%s'", bad[i]);
        }
    }
    assert_int_equal(api_parse_time("2024-02-29T00:00:00Z", &ns), 0);
    assert_int_equal(api_parse_time("9223372036854775807", &ns), 0);
    assert_true(ns == INT64_MAX);

    char out[40];
    api_format_time(t0, out, sizeof(out));
    assert_string_equal(out, "2026-01-01T00:00:00Z");
    api_format_time(t0 + 74000000, out, sizeof(out));
    assert_string_equal(out, "2026-01-01T00:00:00.074Z");
    api_format_time(t0 + 1500, out, sizeof(out));
    assert_string_equal(out, "2026-01-01T00:00:00.000001500Z");
    api_format_time(0, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00Z");
}

static void test_durations_numbers(void **state)
{
    (void)state;
    int64_t ns;
    assert_int_equal(api_parse_duration("60", &ns), 0);
    assert_true(ns == 60 * NS);
    assert_int_equal(api_parse_duration("60s", &ns), 0);
    assert_true(ns == 60 * NS);
    assert_int_equal(api_parse_duration("5m", &ns), 0);
    assert_true(ns == 300 * NS);
    assert_int_equal(api_parse_duration("1.5h", &ns), 0);
    assert_true(ns == 5400 * NS);
    assert_int_equal(api_parse_duration("250ms", &ns), 0);
    assert_true(ns == NS / 4);
    assert_int_equal(api_parse_duration("1d", &ns), 0);
    assert_true(ns == 86400 * NS);
    const char *bad[] = {"", "s", "0", "0s", "-1s", "1 s", "1x", "1e3", "1.2.3s", "inf"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (api_parse_duration(bad[i], &ns) != DLOTEL_ERR_BAD_INPUT) {
            fail_msg("accepted duration '%s'", bad[i]);
        }
    }
    uint64_t u;
    assert_int_equal(api_parse_uint("10000", 10000, &u), 0);
    assert_int_equal(u, 10000);
    assert_int_equal(api_parse_uint("10001", 10000, &u), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_uint("18446744073709551615", UINT64_MAX, &u), 0);
    assert_int_equal(api_parse_uint("18446744073709551616", UINT64_MAX, &u), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_uint("+1", 10, &u), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_uint("", 10, &u), DLOTEL_ERR_BAD_INPUT);
    double d;
    assert_int_equal(api_parse_double("12.5", &d), 0);
    assert_true(d == 12.5);
    assert_int_equal(api_parse_double("nan", &d), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_double("1e999", &d), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(api_parse_double("0x1p3", &d), DLOTEL_ERR_BAD_INPUT);
}

static void test_cursor_round_trip(void **state)
{
    (void)state;
    char c[API_CURSOR_MAX];
    char id[65];
    int64_t t;
    api_cursor_encode(1767225600123456789LL, "af9c0078d60d9708440f2fc887062cd7", c, sizeof(c));
    /* base64url: no padding, no '+' or '/'. */
    assert_null(strpbrk(c, "+/="));
    assert_int_equal(api_cursor_decode(c, &t, id, sizeof(id)), 0);
    assert_true(t == 1767225600123456789LL);
    assert_string_equal(id, "af9c0078d60d9708440f2fc887062cd7");
    for (int len = 1; len <= 64; len++) {
        char hex[65];
        memset(hex, '7', (size_t)len);
        hex[len] = '\0';
        api_cursor_encode(-5, hex, c, sizeof(c));
        assert_int_equal(api_cursor_decode(c, &t, id, sizeof(id)), 0);
        assert_true(t == -5);
        assert_string_equal(id, hex);
    }
    const char *bad[] = {"",        "A", "!!!!", "MTIz", /* "123" without ':' */
                         "eDp5",                         /* "x:y" */
                         "MTI6eic7"};                    /* "12:z';" */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (api_cursor_decode(bad[i], &t, id, sizeof(id)) != DLOTEL_ERR_BAD_INPUT) {
            fail_msg("accepted cursor '%s'", bad[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_string),
        cmocka_unit_test(test_params_limits),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_durations_numbers),
        cmocka_unit_test(test_cursor_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
