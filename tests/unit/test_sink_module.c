/*
 * The DuckDB sink module and its loader (agent/sink/): the module loads from where the daemon
 * looks for it, runs DuckDB, and is refused cleanly when it is missing, foreign or from another
 * build. Also the footprint rule of DESIGN.md section 2: a process that has not loaded the module
 * has no libduckdb mapped.
 *
 * The tests run in the order listed in main(): the "nothing mapped yet" checks come before the
 * first successful load, because a dlclose'd C++ library may stay mapped.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dlotel.h"
#include "sink/sink_loader.h"

/* Returns 1 when any mapping of this process comes from a file whose path contains |needle|. */
static int mapped(const char *needle)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, needle) != NULL) {
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL) {
        print_error("expected \"%s\" to contain \"%s\"\n", haystack, needle);
        fail();
    }
}

/* A value no real loader pointer has, to check that failures leave *out untouched. */
#define SENTINEL ((struct sink_loader *)(uintptr_t)0x5eed)

static void test_duckdb_not_mapped_at_start(void **state)
{
    (void)state;
    /* The test links only the loader, as the daemon does: DuckDB must not be in the process. */
    assert_false(mapped("libduckdb"));
    assert_false(mapped("libdlotel_sink"));
}

static void test_find_default_is_bin_dot_dot_lib(void **state)
{
    (void)state;
    unsetenv(SINK_MODULE_ENV);
    char path[PATH_MAX];
    assert_int_equal(sink_loader_find(path, sizeof(path)), 0);
    assert_contains(path, "/../lib/" SINK_MODULE_FILENAME);

    /* It is the module this build made, reached from the test's own bin/ directory. */
    char a[PATH_MAX];
    char b[PATH_MAX];
    assert_non_null(realpath(path, a));
    assert_non_null(realpath(DLOTEL_SINK_MODULE_PATH, b));
    assert_string_equal(a, b);
}

static void test_find_env_wins(void **state)
{
    (void)state;
    assert_int_equal(setenv(SINK_MODULE_ENV, "/opt/elsewhere/libdlotel_sink.so", 1), 0);
    char path[PATH_MAX];
    assert_int_equal(sink_loader_find(path, sizeof(path)), 0);
    assert_string_equal(path, "/opt/elsewhere/libdlotel_sink.so");

    /* A buffer too small is an error, never a silently truncated path. */
    char tiny[8];
    assert_int_equal(sink_loader_find(tiny, sizeof(tiny)), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(sink_loader_find(NULL, 10), DLOTEL_ERR_INVALID_ARG);
    unsetenv(SINK_MODULE_ENV);
}

static void test_missing_file_fails_cleanly(void **state)
{
    (void)state;
    struct sink_loader *l = SENTINEL;
    char detail[512] = "";
    int rv = sink_loader_open(&l, "/nonexistent/dir/libdlotel_sink.so", detail, sizeof(detail));
    assert_int_equal(rv, DLOTEL_ERR_MODULE);
    assert_ptr_equal(l, SENTINEL);
    /* The detail names the file and carries dlerror's reason. */
    assert_contains(detail, "/nonexistent/dir/libdlotel_sink.so");
    assert_contains(detail, "No such file");
    assert_false(mapped("libduckdb"));
}

static void test_env_pointing_nowhere_fails(void **state)
{
    (void)state;
    /* A wrong DLOTEL_SINK_MODULE must not fall back to another module silently. */
    assert_int_equal(setenv(SINK_MODULE_ENV, "/nonexistent/other.so", 1), 0);
    struct sink_loader *l = SENTINEL;
    char detail[512] = "";
    assert_int_equal(sink_loader_open(&l, NULL, detail, sizeof(detail)), DLOTEL_ERR_MODULE);
    assert_ptr_equal(l, SENTINEL);
    assert_contains(detail, "/nonexistent/other.so");
    unsetenv(SINK_MODULE_ENV);
}

static void test_not_an_elf_file(void **state)
{
    (void)state;
    struct sink_loader *l = SENTINEL;
    char detail[512] = "";
    const char *src = DLOTEL_SOURCE_DIR "/tests/unit/test_sink_module.c";
    assert_int_equal(sink_loader_open(&l, src, detail, sizeof(detail)), DLOTEL_ERR_MODULE);
    assert_ptr_equal(l, SENTINEL);
    assert_contains(detail, src);
}

static void test_library_without_entry_point(void **state)
{
    (void)state;
    /* A real shared library that is not a sink module: zlib, which every build has. */
    struct sink_loader *l = SENTINEL;
    char detail[512] = "";
    assert_int_equal(sink_loader_open(&l, "libz.so.1", detail, sizeof(detail)), DLOTEL_ERR_MODULE);
    assert_ptr_equal(l, SENTINEL);
    assert_contains(detail, "not a dlotel sink module");
    assert_contains(detail, SINK_MODULE_ENTRY);
}

static void test_other_abi_refused(void **state)
{
    (void)state;
    struct sink_loader *l = SENTINEL;
    char detail[512] = "";
    assert_int_equal(sink_loader_open(&l, DLOTEL_SINK_BADABI_PATH, detail, sizeof(detail)),
                     DLOTEL_ERR_MODULE);
    assert_ptr_equal(l, SENTINEL);
    char want[64];
    snprintf(want, sizeof(want), "ABI version %u", SINK_MODULE_ABI_VERSION + 1000u);
    assert_contains(detail, want);
    assert_false(mapped("libduckdb"));
}

static void test_null_out_and_small_detail(void **state)
{
    (void)state;
    char detail[4] = "xxx";
    assert_int_equal(sink_loader_open(NULL, NULL, detail, sizeof(detail)), DLOTEL_ERR_INVALID_ARG);
    /* A small detail buffer is truncated and still terminated. */
    struct sink_loader *l = SENTINEL;
    assert_int_equal(sink_loader_open(&l, "/nonexistent.so", detail, sizeof(detail)),
                     DLOTEL_ERR_MODULE);
    assert_int_equal(strlen(detail), 3);
    /* A NULL detail is allowed. */
    assert_int_equal(sink_loader_open(&l, "/nonexistent.so", NULL, 0), DLOTEL_ERR_MODULE);
    assert_ptr_equal(l, SENTINEL);
    sink_loader_free(NULL);
}

static void probe_module(struct sink_loader *l)
{
    const struct sink_module_api *api = sink_loader_api(l);
    assert_non_null(api);
    assert_int_equal(api->abi_version, SINK_MODULE_ABI_VERSION);
    assert_string_equal(api->name, "dlotel_sink");

    char version[64] = "";
    int answer = api->probe(version, sizeof(version));
    if (answer != 42) {
        print_error("probe returned %d: %s\n", answer, version);
    }
    assert_int_equal(answer, 42);
    /* DESIGN.md section 2 fixes one DuckDB release line, 1.4. */
    if (strncmp(version, "v1.4", 4) != 0) {
        print_error("DuckDB version \"%s\" is not v1.4.x\n", version);
        fail();
    }
    assert_int_equal(api->probe(NULL, 10), DLOTEL_ERR_INVALID_ARG);
    assert_int_equal(api->probe(version, 0), DLOTEL_ERR_INVALID_ARG);
}

static void test_load_default_and_probe(void **state)
{
    (void)state;
    unsetenv(SINK_MODULE_ENV);
    struct sink_loader *l = NULL;
    char detail[512] = "";
    int rv = sink_loader_open(&l, NULL, detail, sizeof(detail));
    if (rv != 0) {
        print_error("sink_loader_open: %d: %s\n", rv, detail);
    }
    assert_int_equal(rv, 0);
    assert_non_null(l);
    assert_contains(sink_loader_path(l), SINK_MODULE_FILENAME);
    probe_module(l);
    /* Now DuckDB is here: this proves that the "not mapped" checks above can fail. */
    assert_true(mapped("libduckdb"));
    assert_true(mapped("libdlotel_sink"));
    sink_loader_free(l);
}

static void test_load_from_env_twice(void **state)
{
    (void)state;
    assert_int_equal(setenv(SINK_MODULE_ENV, DLOTEL_SINK_MODULE_PATH, 1), 0);
    for (int i = 0; i < 2; i++) {
        struct sink_loader *l = NULL;
        char detail[512] = "";
        int rv = sink_loader_open(&l, NULL, detail, sizeof(detail));
        if (rv != 0) {
            print_error("sink_loader_open: %d: %s\n", rv, detail);
        }
        assert_int_equal(rv, 0);
        assert_string_equal(sink_loader_path(l), DLOTEL_SINK_MODULE_PATH);
        probe_module(l);
        sink_loader_free(l);
    }
    unsetenv(SINK_MODULE_ENV);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duckdb_not_mapped_at_start),
        cmocka_unit_test(test_find_default_is_bin_dot_dot_lib),
        cmocka_unit_test(test_find_env_wins),
        cmocka_unit_test(test_missing_file_fails_cleanly),
        cmocka_unit_test(test_env_pointing_nowhere_fails),
        cmocka_unit_test(test_not_an_elf_file),
        cmocka_unit_test(test_library_without_entry_point),
        cmocka_unit_test(test_other_abi_refused),
        cmocka_unit_test(test_null_out_and_small_detail),
        cmocka_unit_test(test_load_default_and_probe),
        cmocka_unit_test(test_load_from_env_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
