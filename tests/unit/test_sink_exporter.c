/*
 * The sink exporter (agent/exporter/sink.c) on a real libuv loop: export_async hands a request
 * to the module, and |done| comes back on the loop thread once the rows are committed (and so
 * queryable), or with EXPORT_PERMANENT for a request that does not decode. Also the synchronous
 * export, the flush op, and destroy (which writes the hot rows to Parquet).
 */
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/buf.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"
#include "sink/sink_module.h"

static char *payload(const char *name, size_t *len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *p = malloc((size_t)n);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

struct outcome {
    int calls;
    enum export_outcome outcome;
    char message[256];
    pthread_t thread;
};

static void on_done(void *userdata, const struct export_result *r)
{
    struct outcome *o = userdata;
    o->calls++;
    o->outcome = r->outcome;
    snprintf(o->message, sizeof(o->message), "%s", r->message);
    o->thread = pthread_self();
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/*
 * Runs |loop| until |o| has been answered. The exporter's async handle is unreferenced (it must
 * not keep a daemon's loop alive by itself), so a timer stands in for the receivers that keep a
 * real daemon's loop running.
 */
static void wait_for(uv_loop_t *loop, struct outcome *o, int n)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_tick, 1, 1);
    for (int i = 0; i < 10000 && o->calls < n; i++) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(o->calls, n);
}

static int64_t count_rows(struct exporter *e, const char *sql)
{
    const struct sink_module_api *api = NULL;
    struct sink *s = exporter_sink_store(e, &api);
    assert_non_null(s);
    assert_non_null(api);
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(api->query(s, sql, NULL, SINK_QUERY_ADMIN, NULL, 0, 0, 0, &out), 0);
    assert_int_equal(buf_terminate(&out), 0);
    const char *p = strstr((const char *)out.data, "\"n\":");
    assert_non_null(p);
    int64_t n = strtoll(p + 4, NULL, 10);
    buf_cleanup(&out);
    return n;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        n += de->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static void test_export_async(void **state)
{
    (void)state;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/dlotel-test-sinkexp-XXXXXX");
    assert_non_null(mkdtemp(dir));
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);

    struct sink_options o;
    sink_options_init(&o);
    o.data_dir = dir;
    o.retention_days = 0;
    o.flush_interval_ms = 0;
    o.maintenance_interval_ms = 0;
    struct exporter *e = NULL;
    char detail[512] = "";
    int rc = exporter_sink_new(&e, &loop, &o, DLOTEL_SINK_MODULE_PATH, detail, sizeof(detail));
    if (rc != 0) {
        print_error("exporter_sink_new: %s\n", detail);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(e->ops->kind, "sink");
    assert_non_null(e->ops->export_async);

    size_t len;
    char *pb = payload("traces_512.pb", &len);
    struct outcome ok = {0};
    assert_int_equal(
        e->ops->export_async(e, OTLP_TRACES, (const uint8_t *)pb, len, NULL, on_done, &ok), 0);
    /* The bytes were copied: the caller may reuse its buffer at once. */
    memset(pb, 0, len);
    /* Never from inside the call. */
    assert_int_equal(ok.calls, 0);
    wait_for(&loop, &ok, 1);
    assert_int_equal(ok.outcome, EXPORT_OK);
    assert_true(pthread_equal(ok.thread, pthread_self()));
    /* Acknowledged means committed: visible to SQL now. */
    assert_int_equal(count_rows(e, "SELECT count(*) AS n FROM spans"), 512);

    /* Several in flight: each answered once, all stored. */
    free(pb);
    pb = payload("logs_512.pb", &len);
    struct outcome many[8];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 8; i++) {
        assert_int_equal(
            e->ops->export_async(e, OTLP_LOGS, (const uint8_t *)pb, len, NULL, on_done, &many[i]),
            0);
    }
    for (int i = 0; i < 8; i++) {
        wait_for(&loop, &many[i], 1);
        assert_int_equal(many[i].outcome, EXPORT_OK);
    }
    assert_int_equal(count_rows(e, "SELECT count(*) AS n FROM logs"), 8 * 512);

    /* A request that does not decode: permanent, with a reason. */
    static const uint8_t junk[] = {0x0a, 0x05, 0x01, 0x02};
    struct outcome bad = {0};
    assert_int_equal(e->ops->export_async(e, OTLP_METRICS, junk, sizeof(junk), NULL, on_done, &bad),
                     0);
    wait_for(&loop, &bad, 1);
    assert_int_equal(bad.outcome, EXPORT_PERMANENT);
    assert_non_null(strstr(bad.message, "does not decode"));

    /* The synchronous form returns once committed. */
    free(pb);
    pb = payload("metrics.pb", &len);
    assert_int_equal(e->ops->export(e, OTLP_METRICS, (const uint8_t *)pb, len, NULL), 0);
    assert_int_equal(count_rows(e, "SELECT count(*) AS n FROM metrics"), 132);
    assert_int_equal(e->ops->export(e, OTLP_METRICS, junk, sizeof(junk), NULL),
                     DLOTEL_ERR_BAD_INPUT);

    /* flush does not block. Calls still in flight at destroy are stored and answered, once,
       from inside destroy; then everything is in Parquet. */
    e->ops->flush(e);
    struct outcome late[3];
    memset(late, 0, sizeof(late));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(e->ops->export_async(e, OTLP_METRICS, (const uint8_t *)pb, len, NULL,
                                              on_done, &late[i]),
                         0);
    }
    e->ops->destroy(e);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(late[i].calls, 1);
        assert_int_equal(late[i].outcome, EXPORT_OK);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    char sub[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/spans/date=2026-01-01", dir);
    assert_true(count_files(sub) >= 1);
    snprintf(sub, sizeof(sub), "%s/logs/date=2026-01-01", dir);
    assert_true(count_files(sub) >= 1);
    snprintf(sub, sizeof(sub), "%s/metrics/date=2026-01-01", dir);
    assert_true(count_files(sub) >= 1);
    free(pb);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_bad_module(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct sink_options o;
    sink_options_init(&o);
    o.data_dir = "/tmp";
    struct exporter *e = (struct exporter *)(uintptr_t)0x5eed;
    char detail[512] = "";
    assert_int_equal(
        exporter_sink_new(&e, &loop, &o, "/nonexistent/libdlotel_sink.so", detail, sizeof(detail)),
        DLOTEL_ERR_MODULE);
    assert_ptr_equal(e, (struct exporter *)(uintptr_t)0x5eed);
    assert_non_null(strstr(detail, "/nonexistent/libdlotel_sink.so"));
    /* A module that loads but a data directory it cannot use. */
    o.data_dir = "/proc/dlotel-no";
    assert_int_equal(
        exporter_sink_new(&e, &loop, &o, DLOTEL_SINK_MODULE_PATH, detail, sizeof(detail)),
        DLOTEL_ERR_IO);
    assert_ptr_equal(e, (struct exporter *)(uintptr_t)0x5eed);
    assert_null(exporter_sink_store(NULL, NULL));
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_async),
        cmocka_unit_test(test_bad_module),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
