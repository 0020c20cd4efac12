/*
 * Unit tests of the client commands' own pieces: where the API is (URL resolution), the query
 * string, the argument parser, and the text tables. The commands against a real server are in
 * tests/integration/test_cli_client.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/client.h"

static char url[CLIENT_URL_MAX];

static const char *resolve(const char *flag, const char *otel, const char *run)
{
    const char *why = NULL;
    if (client_url_resolve(flag, otel, run, url, sizeof(url), &why) != 0) {
        assert_non_null(why);
        return NULL;
    }
    return url;
}

static void test_url_precedence(void **state)
{
    (void)state;
    assert_string_equal(resolve(NULL, NULL, NULL), "http://localhost:7800/api/otel/v1");
    assert_string_equal(resolve("", "", ""), "http://localhost:7800/api/otel/v1");
    assert_string_equal(resolve("http://a:1", "http://b:2", "http://c:3"),
                        "http://a:1/api/otel/v1");
    assert_string_equal(resolve(NULL, "http://b:2", "http://c:3"), "http://b:2/api/otel/v1");
    assert_string_equal(resolve("", "", "https://prod1.datalayer.run"),
                        "https://prod1.datalayer.run/api/otel/v1");
}

static void test_url_paths(void **state)
{
    (void)state;
    /* A path is the caller's: kept as is, trailing slashes dropped. */
    assert_string_equal(resolve("http://h:1/", NULL, NULL), "http://h:1/api/otel/v1");
    assert_string_equal(resolve("http://h:1//", NULL, NULL), "http://h:1/api/otel/v1");
    assert_string_equal(resolve("http://h/api/otel/v1/", NULL, NULL), "http://h/api/otel/v1");
    assert_string_equal(resolve("https://h/proxy/otel", NULL, NULL), "https://h/proxy/otel");
    assert_string_equal(resolve("localhost:7800", NULL, NULL), "http://localhost:7800/api/otel/v1");
    assert_string_equal(resolve("HTTP://[::1]:9", NULL, NULL), "HTTP://[::1]:9/api/otel/v1");
    assert_null(resolve("ftp://h/", NULL, NULL));
    assert_null(resolve("http://h/?x=1", NULL, NULL));
    assert_null(resolve("http://h/#f", NULL, NULL));
    assert_null(resolve("http://", NULL, NULL));
    assert_null(resolve("http://h /x", NULL, NULL));
}

static void test_url_length_limit(void **state)
{
    (void)state;
    /* The output buffer's size is the limit, exactly: a URL that fits with its NUL passes. */
    char big[64];
    const char *why = NULL;
    const char *u = "http://host/p"; /* 13 characters */
    assert_int_equal(client_url_resolve(u, NULL, NULL, big, 14, &why), 0);
    assert_string_equal(big, u);
    assert_int_equal(client_url_resolve(u, NULL, NULL, big, 13, &why), -1);
    assert_string_equal(why, "the URL is too long");
}

static void test_query_escaping(void **state)
{
    (void)state;
    struct buf q;
    buf_init(&q, 64);
    assert_int_equal(client_query_add(&q, "service_name", "a b&c=d/é"), 0);
    assert_int_equal(client_query_add(&q, "attr.http.method", "GET"), 0);
    assert_int_equal(buf_terminate(&q), 0);
    assert_string_equal((char *)q.data, "service_name=a%20b%26c%3Dd%2F%C3%A9&attr.http.method=GET");
    /* At its limit the query string is left as it was, not cut in the middle of a pair. */
    size_t before = q.len;
    assert_int_not_equal(client_query_add(&q, "k", "0123456789"), 0);
    assert_int_equal(q.len, before);
    buf_cleanup(&q);
}

static int parse(struct client_args *a, enum client_cmd cmd, int argc, ...)
{
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) {
        argv[i] = va_arg(ap, char *);
    }
    va_end(ap);
    return client_parse_args(a, cmd, argc, argv);
}

static void test_args_traces(void **state)
{
    (void)state;
    struct client_args a;
    assert_int_equal(parse(&a, CLIENT_TRACES, 12, "--service", "api", "--name=GET /", "--status",
                           "error", "--min-duration", "250ms", "--since", "15m", "--limit", "5",
                           "--json"),
                     0);
    assert_string_equal(a.service, "api");
    assert_string_equal(a.name, "GET /");
    assert_string_equal(a.status, "error");
    assert_true(a.has_min_duration);
    assert_int_equal(a.min_duration_ns, 250000000);
    assert_true(a.has_since);
    assert_int_equal(a.since_ns, 15ull * 60 * 1000000000ull);
    assert_int_equal(a.limit, 5);
    assert_true(a.json);
    assert_null(a.arg);
    /* A bare number is milliseconds for --min-duration. */
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--min-duration", "20"), 0);
    assert_int_equal(a.min_duration_ns, 20000000);

    assert_int_equal(parse(&a, CLIENT_TRACES, 1, "0123456789abcdef0123456789ABCDEF"), 0);
    assert_string_equal(a.arg, "0123456789abcdef0123456789ABCDEF");
    /* One trace takes no list filters; two ids are one too many. */
    assert_int_equal(parse(&a, CLIENT_TRACES, 3, "abc", "--service", "x"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "abc", "def"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--status", "bad"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_TRACES, 4, "--since", "1h", "--start", "0"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--since", "soon"), EXIT_USAGE);
    /* Days, up to five digits (273 years); more is refused rather than wrapped. */
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--since", "7d"), 0);
    assert_int_equal(a.since_ns, 7ull * 86400 * 1000000000ull);
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--since", "99999d"), 0);
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--since", "999999d"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--since", "d"), EXIT_USAGE);
}

static void test_args_limit_boundaries(void **state)
{
    (void)state;
    struct client_args a;
    assert_int_equal(parse(&a, CLIENT_LOGS, 2, "--limit", "1"), 0);
    assert_int_equal(a.limit, 1);
    assert_int_equal(parse(&a, CLIENT_LOGS, 2, "--limit", "10000"), 0);
    assert_int_equal(a.limit, 10000);
    assert_int_equal(parse(&a, CLIENT_LOGS, 2, "--limit", "0"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_LOGS, 2, "--limit", "10001"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_LOGS, 2, "--limit", "-1"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_LOGS, 2, "--limit", "5x"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_LOGS, 1, "--limit"), EXIT_USAGE);
}

static void test_args_per_command(void **state)
{
    (void)state;
    struct client_args a;
    /* A flag another command takes is still unknown here, not silently ignored. */
    assert_int_equal(parse(&a, CLIENT_TRACES, 2, "--severity", "ERROR"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_SERVICES, 2, "--service", "x"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_SMOKE, 1, "--json"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_STATS, 1, "extra"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_STATS, 1, "--json=yes"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_LOGS, 8, "--severity", "warn", "--trace-id", "ab", "--query",
                           "timeout", "--url", "http://x"),
                     0);
    assert_string_equal(a.severity, "warn");
    assert_string_equal(a.trace_id, "ab");
    assert_string_equal(a.text, "timeout");
    assert_string_equal(a.url, "http://x");
    assert_int_equal(parse(&a, CLIENT_SMOKE, 4, "--timeout", "5s", "--token", "t"), 0);
    assert_int_equal(a.timeout_ns, 5000000000ull);
    assert_string_equal(a.token, "t");
    assert_int_equal(parse(&a, CLIENT_SMOKE, 2, "--timeout", "0"), EXIT_USAGE);

    assert_int_equal(parse(&a, CLIENT_METRICS, 2, "--step", "60s"), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_METRICS, 5, "http.duration", "--step", "60s", "--agg", "max"),
                     0);
    assert_string_equal(a.arg, "http.duration");
    assert_int_equal(parse(&a, CLIENT_METRICS, 3, "m", "--agg", "median"), EXIT_USAGE);
}

static void test_args_query(void **state)
{
    (void)state;
    struct client_args a;
    assert_int_equal(parse(&a, CLIENT_QUERY, 0), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_QUERY, 1, ""), EXIT_USAGE);
    assert_int_equal(parse(&a, CLIENT_QUERY, 2, "SELECT", "1"), EXIT_USAGE);
    /* After --, an SQL text that starts with dashes is still the SQL. */
    assert_int_equal(parse(&a, CLIENT_QUERY, 2, "--", "--comment\nSELECT 1"), 0);
    assert_string_equal(a.arg, "--comment\nSELECT 1");
    /* CLIENT_MAX_PARAMS binds pass; one more is a usage error. */
    char *argv[2 * CLIENT_MAX_PARAMS + 3];
    int n = 0;
    argv[n++] = "SELECT 1";
    for (int i = 0; i < CLIENT_MAX_PARAMS + 1; i++) {
        argv[n++] = "--param";
        argv[n++] = "v";
    }
    assert_int_equal(client_parse_args(&a, CLIENT_QUERY, n - 2, argv), 0);
    assert_int_equal(a.n_params, CLIENT_MAX_PARAMS);
    assert_int_equal(client_parse_args(&a, CLIENT_QUERY, n, argv), EXIT_USAGE);
}

static char *render(const struct table *t, size_t width)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(table_render(t, width, &out), 0);
    assert_int_equal(buf_terminate(&out), 0);
    return (char *)out.data; /* freed by the caller */
}

static void test_table_layout(void **state)
{
    (void)state;
    static const char *const hdr[] = {"NAME", "N", "BODY"};
    static const unsigned fl[] = {0, TABLE_RIGHT, TABLE_FLEX};
    struct table t;
    table_init(&t, 3, hdr, fl);
    const char *r1[] = {"alpha", "7", "short"};
    const char *r2[] = {"b", "1234", "a much longer body text"};
    assert_int_equal(table_add_row(&t, r1), 0);
    assert_int_equal(table_add_row(&t, r2), 0);
    char *s = render(&t, 0);
    assert_string_equal(s, "NAME      N  BODY\n"
                           "alpha     7  short\n"
                           "b      1234  a much longer body text\n");
    free(s);
    /* Exactly as wide as the terminal: nothing is cut. One column less: the flex column gives. */
    size_t full = strlen("b      1234  a much longer body text");
    s = render(&t, full);
    assert_non_null(strstr(s, "a much longer body text\n"));
    free(s);
    s = render(&t, full - 1);
    assert_non_null(strstr(s, "b      1234  a much longer body ...\n"));
    free(s);
    /* Never below the floor of 8 characters. */
    s = render(&t, 10);
    assert_non_null(strstr(s, "b      1234  a muc...\n"));
    free(s);
    table_cleanup(&t);
}

static void test_table_sanitizes_and_counts_utf8(void **state)
{
    (void)state;
    static const char *const hdr[] = {"A", "B"};
    struct table t;
    table_init(&t, 2, hdr, NULL);
    const char *r1[] = {"\x1b[2Jx\ny\tz\x7f", NULL};
    const char *r2[] = {"h\xc3\xa9llo", "ok"};
    assert_int_equal(table_add_row(&t, r1), 0);
    assert_int_equal(table_add_row(&t, r2), 0);
    char *s = render(&t, 0);
    /* ESC, newline, tab and DEL are spaces; "héllo" is 5 characters wide, not 6. */
    assert_null(strchr(s, '\x1b'));
    assert_string_equal(s, "A           B\n"
                           " [2Jx y z   \n"
                           "h\xc3\xa9llo       ok\n");
    free(s);
    table_cleanup(&t);
}

static void test_cells(void **state)
{
    (void)state;
    char b[32];
    static const struct {
        uint64_t bytes;
        const char *want;
    } sizes[] = {
        {0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {12u << 20, "12.0 MiB"},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        client_fmt_bytes(b, sizeof(b), sizes[i].bytes);
        assert_string_equal(b, sizes[i].want);
    }
    static const struct {
        double ms;
        const char *want;
    } durations[] = {
        {0.4213, "0.42ms"},
        {999.994, "999.99ms"},
        {1000, "1.00s"},
        {150000, "2.5m"},
    };
    for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
        client_fmt_ms(b, sizeof(b), durations[i].ms);
        assert_string_equal(b, durations[i].want);
    }

    json_t *j = json_loads("{\"s\":\"x\",\"i\":12345678901234,\"r\":0.1,\"n\":null,\"t\":true,"
                           "\"m\":{\"k\":\"v\"},\"ns\":\"2.5\"}",
                           0, NULL);
    assert_non_null(j);
    const char *keys[] = {"s", "i", "r", "n", "t", "m", "missing"};
    const char *want[] = {"x", "12345678901234", "0.1", "", "true", "{\"k\":\"v\"}", ""};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char *c = client_json_text(json_object_get(j, keys[i]));
        assert_string_equal(c, want[i]);
        free(c);
    }
    assert_true(client_json_number(json_object_get(j, "ns")) == 2.5);
    assert_true(client_json_number(json_object_get(j, "i")) == 12345678901234.0);
    assert_true(client_json_number(json_object_get(j, "s")) == 0);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_precedence),
        cmocka_unit_test(test_url_paths),
        cmocka_unit_test(test_url_length_limit),
        cmocka_unit_test(test_query_escaping),
        cmocka_unit_test(test_args_traces),
        cmocka_unit_test(test_args_limit_boundaries),
        cmocka_unit_test(test_args_per_command),
        cmocka_unit_test(test_args_query),
        cmocka_unit_test(test_table_layout),
        cmocka_unit_test(test_table_sanitizes_and_counts_utf8),
        cmocka_unit_test(test_cells),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
