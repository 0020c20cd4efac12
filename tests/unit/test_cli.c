/*
 * Unit tests of the `dlotel` command's own pieces: the admin endpoint's renderers (Prometheus
 * text, /healthz JSON), the argument parser's mapping onto config settings, endpoint parsing,
 * and the log sink (JSON lines, rotation). The daemon itself is tested end to end by
 * tests/integration/test_forwarding*.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/admin.h"
#include "cli/cli.h"
#include "cli/logsink.h"
#include "core/log.h"

static char *text_of(struct buf *b)
{
    assert_int_equal(buf_terminate(b), 0);
    return (char *)b->data;
}

static void fill_snapshot(struct admin_snapshot *s, struct pipeline_stats *st, size_t n)
{
    memset(s, 0, sizeof(*s));
    s->version = "9.8.7";
    s->state = "running";
    s->uptime_s = 42;
    s->rss_bytes = 1234;
    s->n_receivers = 1;
    s->receivers[0].name = "otlp_http";
    s->receivers[0].requests[OTLP_TRACES][RECEIVER_ACCEPTED] = 3;
    s->receivers[0].items[OTLP_TRACES][RECEIVER_ACCEPTED] = 30;
    s->receivers[0].requests[OTLP_LOGS][RECEIVER_REFUSED_FULL] = 2;
    s->receivers[0].requests[RECEIVER_SIGNAL_UNKNOWN][RECEIVER_REFUSED_UNSUPPORTED] = 1;
    s->exporters = st;
    s->n_exporters = n;
}

static void test_metrics_text(void **state)
{
    (void)state;
    struct pipeline_stats st[2];
    memset(st, 0, sizeof(st));
    /* A name no config allows, to exercise escaping: quote, backslash, newline. */
    st[0].exporter = "we\"ird\\na\nme";
    st[0].kind = "otlp_http";
    st[0].signal = OTLP_TRACES;
    st[0].queued = true;
    st[0].disk = true;
    st[0].sent_items = 100;
    st[0].failed_items = 7;
    st[0].dropped_items = 7 + 5 + 1;
    st[0].dropped_cap_items = 5;
    st[0].disk_bytes = 4096;
    st[0].last_success_unix_nano = 3000000000ull;
    st[1] = st[0];
    st[1].exporter = "up";
    st[1].signal = OTLP_LOGS;
    struct admin_snapshot s;
    fill_snapshot(&s, st, 2);
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(admin_render_metrics(&s, &b), 0);
    const char *t = text_of(&b);

    assert_non_null(
        strstr(t, "# TYPE dlotel_build_info gauge\ndlotel_build_info{version=\"9.8.7\"} 1\n"));
    assert_non_null(strstr(t, "dlotel_process_resident_memory_bytes 1234\n"));
    assert_non_null(strstr(t, "dlotel_receiver_requests_total{receiver=\"otlp_http\",signal="
                              "\"traces\",outcome=\"accepted\"} 3\n"));
    assert_non_null(strstr(t, "dlotel_receiver_items_total{receiver=\"otlp_http\",signal="
                              "\"traces\",outcome=\"accepted\"} 30\n"));
    assert_non_null(strstr(t, "{receiver=\"otlp_http\",signal=\"logs\",outcome=\"full\"} 2\n"));
    assert_non_null(strstr(t, "signal=\"unknown\",outcome=\"unsupported\"} 1\n"));
    /* The unknown signal only appears once it happened. */
    assert_null(strstr(t, "signal=\"unknown\",outcome=\"accepted\""));
    assert_non_null(strstr(t, "dlotel_exporter_sent_items_total{exporter=\"we\\\"ird\\\\na\\nme\","
                              "signal=\"traces\"} 100\n"));
    assert_non_null(strstr(t, "dlotel_exporter_dropped_items_total{exporter=\"up\",signal=\"logs\","
                              "reason=\"permanent\"} 7\n"));
    assert_non_null(strstr(t, "reason=\"disk_cap\"} 5\n"));
    assert_non_null(strstr(t, "reason=\"retry_disabled\"} 1\n"));
    assert_non_null(strstr(t, "dlotel_exporter_last_success_timestamp_seconds{exporter=\"up\","
                              "signal=\"logs\"} 3\n"));
    assert_non_null(strstr(t, "dlotel_exporter_info{exporter=\"up\",kind=\"otlp_http\",queue="
                              "\"disk\"} 1\n"));

    /* Every sample line belongs to a family announced just before by HELP and TYPE. */
    char family[128] = "";
    for (const char *line = t; *line != '\0';) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        size_t len = (size_t)(end - line);
        if (strncmp(line, "# TYPE ", 7) == 0) {
            const char *name = line + 7;
            size_t nl = strcspn(name, " ");
            assert_true(nl < sizeof(family));
            memcpy(family, name, nl);
            family[nl] = '\0';
            assert_true(strncmp(name + nl, " counter\n", 9) == 0 ||
                        strncmp(name + nl, " gauge\n", 7) == 0);
        } else if (line[0] != '#') {
            size_t fl = strlen(family);
            assert_true(fl > 0 && len > fl && strncmp(line, family, fl) == 0 &&
                        (line[fl] == '{' || line[fl] == ' '));
            /* No raw newline can hide inside a label value: the line is one sample. */
            assert_non_null(memchr(line, ' ', len));
        }
        line = end + 1;
    }
    buf_cleanup(&b);
}

static void test_health_json(void **state)
{
    (void)state;
    struct pipeline_stats st[1];
    memset(st, 0, sizeof(st));
    st[0].exporter = "up";
    st[0].kind = "otlp_grpc";
    st[0].signal = OTLP_METRICS;
    st[0].queued = true;
    st[0].sent_items = 5;
    st[0].last_success_unix_nano = 1000000000ull * 100;
    struct admin_snapshot s;
    fill_snapshot(&s, st, 1);
    struct buf b;
    buf_init(&b, 1 << 20);
    bool degraded = true;
    assert_int_equal(admin_render_health(&s, &b, &degraded), 0);
    assert_false(degraded);
    json_error_t err;
    json_t *j = json_loadb((const char *)b.data, b.len, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    assert_string_equal(json_string_value(json_object_get(j, "version")), "9.8.7");
    assert_int_equal(json_integer_value(json_object_get(j, "uptime_s")), 42);
    json_t *m = json_object_get(json_object_get(json_object_get(j, "exporters"), "up"), "metrics");
    assert_non_null(m);
    assert_int_equal(json_integer_value(json_object_get(m, "sent")), 5);
    assert_int_equal(json_integer_value(json_object_get(m, "last_success_unix")), 100);
    assert_true(json_is_true(json_object_get(m, "upstream_reachable")));
    assert_true(json_is_null(json_object_get(m, "last_error_unix")));
    json_t *rt =
        json_object_get(json_object_get(json_object_get(j, "receivers"), "otlp_http"), "logs");
    assert_int_equal(json_integer_value(json_object_get(rt, "refused_requests")), 2);
    json_decref(j);

    /* The last attempt failed: degraded, and not reachable. */
    st[0].last_error_unix_nano = st[0].last_success_unix_nano + 1;
    snprintf(st[0].last_error, sizeof(st[0].last_error), "HTTP 503 \"quoted\"");
    buf_reset(&b);
    assert_int_equal(admin_render_health(&s, &b, &degraded), 0);
    assert_true(degraded);
    j = json_loadb((const char *)b.data, b.len, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "degraded");
    m = json_object_get(json_object_get(json_object_get(j, "exporters"), "up"), "metrics");
    assert_true(json_is_false(json_object_get(m, "upstream_reachable")));
    assert_string_equal(json_string_value(json_object_get(m, "last_error")), "HTTP 503 \"quoted\"");
    json_decref(j);
    buf_cleanup(&b);
}

static const char *setting(const struct cli_args *a, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < a->n_settings; i++) {
        if (strcmp(a->settings[i].key, key) == 0) {
            v = a->settings[i].value; /* The last one wins, as in config_build(). */
        }
    }
    return v;
}

static int parse(struct cli_args *a, enum cli_command cmd, const char *const *argv)
{
    int argc = 0;
    while (argv[argc] != NULL) {
        argc++;
    }
    return cli_parse_args(a, cmd, argc, (char **)argv);
}

static void test_args(void **state)
{
    (void)state;
    struct cli_args a;
    const char *ok[] = {"--exporter",
                        "file",
                        "--file-path",
                        "/tmp/o.json",
                        "--exporter=debug",
                        "--debug-verbosity",
                        "detailed",
                        "--batch-timeout",
                        "1s",
                        "--sink",
                        "--set",
                        "exporters.file.path=/tmp/p.json",
                        "--set=exporters.up.headers.x-a=b=c",
                        "--ready-file",
                        "/tmp/r",
                        "--config",
                        "/etc/dlotel.yaml",
                        NULL};
    assert_int_equal(parse(&a, CLI_AGENT, ok), 0);
    assert_string_equal(setting(&a, "exporters.file.type"), "file");
    assert_string_equal(setting(&a, "exporters.debug.type"), "debug");
    assert_string_equal(setting(&a, "exporters.debug.verbosity"), "detailed");
    /* The explicit --set comes after the convenience, so it wins. */
    assert_string_equal(setting(&a, "exporters.file.path"), "/tmp/p.json");
    assert_string_equal(setting(&a, "--batch-timeout"), "1s");
    assert_string_equal(setting(&a, "--sink"), "true");
    assert_string_equal(setting(&a, "exporters.up.headers.x-a"), "b=c");
    assert_string_equal(a.ready_file, "/tmp/r");
    assert_string_equal(a.config_file, "/etc/dlotel.yaml");
    cli_args_cleanup(&a);

    const char *unknown[] = {"--no-such-flag", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, unknown), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *no_path[] = {"--exporter", "file", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, no_path), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *bad_exporter[] = {"--exporter", "kafka", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, bad_exporter), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *missing[] = {"--batch-timeout", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, missing), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *bad_set[] = {"--set", "novalue", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, bad_set), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *positional[] = {"extra", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, positional), EXIT_USAGE);
    cli_args_cleanup(&a);
    /* --ready-file is the agent's; config needs --print or --check. */
    const char *cfg_ready[] = {"--print", "--ready-file", "/tmp/r", NULL};
    assert_int_equal(parse(&a, CLI_CONFIG, cfg_ready), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *cfg_none[] = {"--batch-timeout", "1s", NULL};
    assert_int_equal(parse(&a, CLI_CONFIG, cfg_none), EXIT_USAGE);
    cli_args_cleanup(&a);
    const char *cfg_ok[] = {"--check", NULL};
    assert_int_equal(parse(&a, CLI_CONFIG, cfg_ok), 0);
    assert_true(a.check);
    cli_args_cleanup(&a);
    /* --file-path alone is a warning, not an error. */
    const char *lone[] = {"--file-path", "/tmp/x", NULL};
    assert_int_equal(parse(&a, CLI_AGENT, lone), 0);
    assert_int_equal(a.n_warnings, 1);
    assert_null(setting(&a, "exporters.file.path"));
    cli_args_cleanup(&a);
}

static void test_endpoints(void **state)
{
    (void)state;
    struct cli_endpoint ep;
    const char *why;
    assert_int_equal(cli_endpoint_parse("localhost:4317", &ep, &why), 0);
    assert_string_equal(ep.host, "localhost");
    assert_int_equal(ep.port, 4317);
    assert_int_equal(cli_endpoint_parse("http://[::1]:0/", &ep, &why), 0);
    assert_string_equal(ep.host, "::1");
    assert_int_equal(ep.port, 0);
    assert_int_equal(cli_endpoint_parse("127.0.0.1:65536", &ep, &why), -1);
    assert_int_equal(cli_endpoint_parse("::1:80", &ep, &why), -1);
    assert_int_equal(cli_endpoint_parse(":80", &ep, &why), -1);
    assert_int_equal(cli_endpoint_parse("https://x:1", &ep, &why), -1);
    assert_int_equal(cli_endpoint_parse("host", &ep, &why), -1);
    char out[64];
    cli_endpoint_format(out, sizeof(out), "::1", 13133);
    assert_string_equal(out, "[::1]:13133");
}

static void test_log_sink(void **state)
{
    (void)state;
    char dir[] = "/tmp/dlotel-test-cli-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], path1[256];
    snprintf(path, sizeof(path), "%s/agent.log", dir);
    snprintf(path1, sizeof(path1), "%s/agent.log.1", dir);
    assert_int_equal(cli_log_open(path, true, 64 * 1024), 0);
    enum log_level old = log_level_current;
    log_set_level(LOG_LEVEL_INFO);
    log_info("agent", "quote \" backslash \\ tab \t control \x01 end");
    for (int i = 0; i < 1000; i++) {
        log_info("pipeline", "line %d of a log that grows past its limit", i);
    }
    log_set_level(old);
    cli_log_close();

    struct stat st1, st;
    assert_int_equal(stat(path1, &st1), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st1.st_size <= 64 * 1024);
    assert_true((st.st_mode & 0777) == 0600);
    /* Every line of both files is one JSON object with the four keys. */
    const char *files[] = {path1, path};
    int lines = 0;
    bool first_seen = false;
    for (int f = 0; f < 2; f++) {
        FILE *in = fopen(files[f], "r");
        assert_non_null(in);
        char line[4096];
        while (fgets(line, sizeof(line), in) != NULL) {
            json_error_t err;
            json_t *j = json_loads(line, 0, &err);
            assert_non_null(j);
            assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
            assert_non_null(json_object_get(j, "time"));
            const char *comp = json_string_value(json_object_get(j, "component"));
            const char *msg = json_string_value(json_object_get(j, "message"));
            assert_non_null(comp);
            assert_non_null(msg);
            if (strcmp(comp, "agent") == 0) {
                assert_string_equal(msg, "quote \" backslash \\ tab \t control \x01 end");
                first_seen = true;
            }
            lines++;
            json_decref(j);
        }
        fclose(in);
    }
    /* One old file is kept: the oldest lines are gone, the newest are all there. */
    assert_true(lines > 100 && lines <= 1001);
    (void)first_seen;
    unlink(path);
    unlink(path1);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_text), cmocka_unit_test(test_health_json),
        cmocka_unit_test(test_args),         cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_log_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
