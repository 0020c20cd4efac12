/*
 * The debug and file exporters, fed the real OTLP requests that the OpenTelemetry JS SDK made
 * (DLOTEL_PAYLOADS_DIR). The file exporter's output is checked the way a user would: each line is
 * JSON, and converting it back gives a request with the same resources, scopes and items.
 */
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
#include <jansson.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct buf b;
    buf_init(&b, (size_t)1 << 30);
    uint8_t chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&b, chunk, n) != 0) {
            break;
        }
    }
    fclose(f);
    if (buf_terminate(&b) != 0) {
        buf_cleanup(&b);
        return NULL;
    }
    *len = b.len;
    /* Keep the NUL terminator: buf_take() would hand back the same block. */
    uint8_t *data = b.data;
    return data != NULL ? data : calloc(1, 1);
}

static uint8_t *read_payload(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, name);
    uint8_t *data = read_all(path, len);
    if (data == NULL) {
        fail_msg("cannot read %s", path);
    }
    return data;
}

struct dir {
    char path[64];
    char file[128];
};

static int setup_dir(void **state)
{
    struct dir *d = calloc(1, sizeof(*d));
    snprintf(d->path, sizeof(d->path), "/tmp/dlotel-test-exporter-XXXXXX");
    if (mkdtemp(d->path) == NULL) {
        free(d);
        return -1;
    }
    snprintf(d->file, sizeof(d->file), "%s/out.jsonl", d->path);
    *state = d;
    return 0;
}

static int teardown_dir(void **state)
{
    struct dir *d = *state;
    unlink(d->file);
    rmdir(d->path);
    free(d);
    return 0;
}

static const struct {
    const char *file;
    enum otlp_signal signal;
    uint64_t items; /* From the payloads' summary.json (0: not checked). */
} payloads[] = {
    {"traces_512.pb", OTLP_TRACES, 512},
    {"logs_512.pb", OTLP_LOGS, 512},
    {"metrics.pb", OTLP_METRICS, 0},
};
#define N_PAYLOADS (sizeof(payloads) / sizeof(payloads[0]))

static void test_file_lines_round_trip(void **state)
{
    struct dir *d = *state;
    struct exporter *e = NULL;
    assert_int_equal(exporter_file_new(&e, d->file), 0);
    assert_non_null(e);
    assert_string_equal(e->ops->kind, "file");

    struct otlp_counts want[N_PAYLOADS];
    for (size_t i = 0; i < N_PAYLOADS; i++) {
        size_t len;
        uint8_t *pb = read_payload(payloads[i].file, &len);
        assert_int_equal(otlp_scan(payloads[i].signal, pb, len, &want[i], NULL), 0);
        if (payloads[i].items != 0) {
            assert_int_equal(want[i].items, payloads[i].items);
        }
        assert_int_equal(e->ops->export(e, payloads[i].signal, pb, len, &want[i]), 0);
        free(pb);
    }
    e->ops->flush(e);
    e->ops->destroy(e);

    size_t len;
    char *text = (char *)read_all(d->file, &len);
    assert_non_null(text);
    struct stat st;
    assert_int_equal(stat(d->file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* One line per request, each ending in a newline. */
    assert_true(len > 0);
    assert_int_equal(text[len - 1], '\n');
    size_t lines = 0;
    char *line = text;
    struct arena arena;
    arena_init(&arena, (size_t)256 << 20);
    while (line < text + len) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        assert_non_null(nl);
        size_t n = (size_t)(nl - line);
        assert_true(lines < N_PAYLOADS);

        json_error_t jerr;
        json_t *root = json_loadb(line, n, 0, &jerr);
        if (root == NULL) {
            fail_msg("line %zu is not JSON: %s at %d", lines + 1, jerr.text, jerr.position);
        }
        assert_true(json_is_object(root));
        json_decref(root);

        struct buf pb;
        buf_init(&pb, (size_t)64 << 20);
        char why[160] = "";
        enum otlp_signal sig = payloads[lines].signal;
        int rc = otlp_json_to_pb(sig, line, n, &arena, &pb, why, sizeof(why));
        if (rc != 0) {
            fail_msg("line %zu does not convert back: %s", lines + 1, why);
        }
        struct otlp_counts got;
        assert_int_equal(otlp_scan(sig, pb.data, pb.len, &got, NULL), 0);
        assert_int_equal(got.resources, want[lines].resources);
        assert_int_equal(got.scopes, want[lines].scopes);
        assert_int_equal(got.items, want[lines].items);
        buf_cleanup(&pb);
        arena_reset(&arena);

        lines++;
        line = nl + 1;
    }
    assert_int_equal(lines, N_PAYLOADS);
    arena_cleanup(&arena);
    free(text);
}

static void test_file_appends(void **state)
{
    struct dir *d = *state;
    /* What was in the file stays: the exporter appends. */
    FILE *f = fopen(d->file, "w");
    assert_non_null(f);
    fputs("{\"earlier\":true}\n", f);
    fclose(f);

    size_t len;
    uint8_t *pb = read_payload("logs_512.pb", &len);
    struct otlp_counts c;
    assert_int_equal(otlp_scan(OTLP_LOGS, pb, len, &c, NULL), 0);
    struct exporter *e = NULL;
    assert_int_equal(exporter_file_new(&e, d->file), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(e->ops->export(e, OTLP_LOGS, pb, len, &c), 0);
    }
    e->ops->destroy(e);
    free(pb);

    size_t tlen;
    char *text = (char *)read_all(d->file, &tlen);
    assert_non_null(text);
    assert_memory_equal(text, "{\"earlier\":true}\n", 17);
    size_t lines = 0;
    for (size_t i = 0; i < tlen; i++) {
        lines += text[i] == '\n';
    }
    assert_int_equal(lines, 4);
    free(text);
}

static void test_file_errors(void **state)
{
    struct dir *d = *state;
    struct exporter *e = (struct exporter *)(uintptr_t)0x1;
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/no/such/dir/out.jsonl", d->path);
    assert_int_equal(exporter_file_new(&e, missing), DLOTEL_ERR_IO);
    /* A failed constructor leaves *out alone. */
    assert_ptr_equal(e, (struct exporter *)(uintptr_t)0x1);

    /* A request that does not decode writes nothing, not even a newline. */
    e = NULL;
    assert_int_equal(exporter_file_new(&e, d->file), 0);
    static const uint8_t garbage[] = {0x0a, 0x05, 0x0a, 0x03, 0xff, 0xff, 0xff};
    struct otlp_counts c = {0};
    assert_int_not_equal(e->ops->export(e, OTLP_TRACES, garbage, sizeof(garbage), &c), 0);
    e->ops->destroy(e);
    struct stat st;
    assert_int_equal(stat(d->file, &st), 0);
    assert_int_equal(st.st_size, 0);

    /* A full disk is an I/O error the client hears about (and retries). */
    if (access("/dev/full", W_OK) == 0) {
        e = NULL;
        assert_int_equal(exporter_file_new(&e, "/dev/full"), 0);
        size_t len;
        uint8_t *pb = read_payload("metrics.pb", &len);
        assert_int_equal(otlp_scan(OTLP_METRICS, pb, len, &c, NULL), 0);
        assert_int_equal(e->ops->export(e, OTLP_METRICS, pb, len, &c), DLOTEL_ERR_IO);
        e->ops->destroy(e);
        free(pb);
    }
}

static void test_debug_exporter(void **state)
{
    struct dir *d = *state;
    FILE *logf = fopen(d->file, "w+");
    assert_non_null(logf);
    log_set_file(logf);
    log_set_level(LOG_LEVEL_INFO);

    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    struct otlp_counts c;
    assert_int_equal(otlp_scan(OTLP_TRACES, pb, len, &c, NULL), 0);

    struct exporter *e = NULL;
    assert_int_equal(exporter_debug_new(&e, DEBUG_SUMMARY), 0);
    assert_string_equal(e->ops->kind, "debug");
    assert_int_equal(e->ops->export(e, OTLP_TRACES, pb, len, &c), 0);
    e->ops->destroy(e);

    e = NULL;
    assert_int_equal(exporter_debug_new(&e, DEBUG_DETAILED), 0);
    assert_int_equal(e->ops->export(e, OTLP_TRACES, pb, len, &c), 0);
    assert_int_equal(e->ops->export(e, OTLP_TRACES, pb, len, &c), 0);
    e->ops->destroy(e);
    free(pb);

    log_set_file(NULL);
    log_set_level(LOG_LEVEL_ERROR);
    fflush(logf);
    fclose(logf);

    size_t tlen;
    char *text = (char *)read_all(d->file, &tlen);
    assert_non_null(text);
    char summary[128];
    snprintf(summary, sizeof(summary), "traces: 3 resources, 9 scopes, 512 spans, %zu bytes", len);
    assert_non_null(strstr(text, summary));
    /* Detailed: the request itself, as OTLP/JSON. */
    const char *detailed = strstr(text, "{\"resourceSpans\":[");
    assert_non_null(detailed);
    assert_non_null(strstr(detailed + 1, "{\"resourceSpans\":["));
    free(text);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_lines_round_trip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_appends, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_errors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_debug_exporter, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests_name("exporter", tests, NULL, NULL);
}
