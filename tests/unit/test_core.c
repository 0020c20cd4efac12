/* Unit tests for agent/core: buffers, arena, compression, errors, logging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/compress.h"
#include "core/log.h"
#include "dlotel.h"

static void test_buf_limit_boundary(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 10);
    /* One byte past the limit is refused and leaves the buffer as it was. */
    assert_int_equal(buf_putc(&b, 'x'), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 10);
    assert_int_equal(buf_terminate(&b), 0);
    assert_string_equal((char *)b.data, "0123456789");
    buf_reset(&b);
    assert_int_equal(buf_printf(&b, "%d-%s", 42, "ab"), 0);
    assert_int_equal(b.len, 5);
    assert_int_equal(buf_printf(&b, "%s", "123456"), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 5);
    size_t n;
    uint8_t *p = buf_take(&b, &n);
    assert_non_null(p);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "42-ab", 5);
    free(p);
    assert_null(b.data);
    buf_cleanup(&b);
}

static void test_buf_long_printf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    char big[1000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    assert_int_equal(buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 1001);
    assert_int_equal(b.data[0], '[');
    assert_int_equal(b.data[1000], ']');
    buf_cleanup(&b);
}

static void test_buf_overflowing_size(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, SIZE_MAX);
    assert_int_equal(buf_append(&b, "x", 1), 0);
    /* An unbounded buffer must still grow normally (max + 1 must not wrap to 0). */
    assert_true(b.cap >= 2);
    assert_int_equal(buf_append(&b, "yz", 2), 0);
    assert_memory_equal(b.data, "xyz", 3);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), DLOTEL_ERR_TOO_LARGE);
    buf_cleanup(&b);
}

static void test_arena(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1 << 20);
    uint8_t *p = arena_alloc(&a, 3);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
    void *q = arena_alloc(&a, 100000);
    assert_non_null(q);
    assert_int_equal((uintptr_t)q % _Alignof(max_align_t), 0);
    /* Memory is zeroed, as protobuf-c and our decoders expect. */
    for (size_t i = 0; i < 100000; i++) {
        assert_int_equal(((uint8_t *)q)[i], 0);
    }
    memset(q, 0xab, 100000);
    assert_null(arena_alloc(&a, 2 << 20)); /* Past the cap: NULL, and the arena still works. */
    assert_non_null(arena_alloc(&a, 16));
    arena_reset(&a);
    uint8_t *r = arena_alloc(&a, 64);
    assert_non_null(r);
    assert_int_equal(r[0], 0);
    arena_cleanup(&a);
}

static void test_arena_cap_boundary(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 64 * 1024);
    size_t got = 0;
    while (arena_alloc(&a, 1024) != NULL) {
        got += 1024;
        assert_true(got <= 64 * 1024);
    }
    assert_true(got >= 32 * 1024);
    arena_cleanup(&a);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        /* Compressible but not trivial. */
        p[i] = (uint8_t)((x >> 16) % 17);
    }
    return p;
}

static void roundtrip(enum codec c)
{
    size_t n = 300000;
    uint8_t *in = pattern(n);
    struct buf z, out;
    buf_init(&z, 1 << 24);
    buf_init(&out, n);
    assert_int_equal(codec_compress(c, in, n, 0, &z), 0);
    assert_true(z.len < n);
    assert_int_equal(codec_decompress(c, z.data, z.len, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, in, n);

    /* Exactly at the limit is fine; one byte under the needed size is TOO_LARGE. */
    struct buf tight;
    buf_init(&tight, n - 1);
    assert_int_equal(codec_decompress(c, z.data, z.len, &tight), DLOTEL_ERR_TOO_LARGE);
    buf_cleanup(&tight);

    /* Every truncation is malformed input, never a crash or a success. */
    for (size_t cut = 0; cut < z.len; cut += (cut < 64 ? 1 : 997)) {
        buf_reset(&out);
        assert_int_equal(codec_decompress(c, z.data, cut, &out), DLOTEL_ERR_BAD_INPUT);
    }
    /* Trailing garbage after a complete stream is malformed too. */
    assert_int_equal(buf_append(&z, "junk", 4), 0);
    struct buf roomy;
    buf_init(&roomy, 2 * n);
    assert_int_equal(codec_decompress(c, z.data, z.len, &roomy), DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&roomy);

    buf_cleanup(&z);
    buf_cleanup(&out);
    free(in);
}

static void test_gzip_roundtrip(void **state)
{
    (void)state;
    roundtrip(CODEC_GZIP);
}

static void test_zstd_roundtrip(void **state)
{
    (void)state;
    roundtrip(CODEC_ZSTD);
}

/* A decompression bomb: 64 MiB of zeros stops at the limit without allocating past it. */
static void bomb(enum codec c)
{
    size_t n = 64u << 20;
    uint8_t *zeros = calloc(1, n);
    struct buf z, out;
    buf_init(&z, 2 * n); /* Compression reserves its worst case up front. */
    assert_int_equal(codec_compress(c, zeros, n, 9, &z), 0);
    free(zeros);
    assert_true(z.len < 1 << 20);
    buf_init(&out, 20u << 20);
    assert_int_equal(codec_decompress(c, z.data, z.len, &out), DLOTEL_ERR_TOO_LARGE);
    assert_true(out.cap <= (20u << 20) + 1);
    buf_cleanup(&z);
    buf_cleanup(&out);
}

static void test_gzip_bomb(void **state)
{
    (void)state;
    bomb(CODEC_GZIP);
}

static void test_zstd_bomb(void **state)
{
    (void)state;
    bomb(CODEC_ZSTD);
}

static void test_gzip_concatenated_members(void **state)
{
    (void)state;
    struct buf z, out;
    buf_init(&z, 1 << 20);
    buf_init(&out, 1 << 20);
    assert_int_equal(codec_compress(CODEC_GZIP, (const uint8_t *)"hello ", 6, 0, &z), 0);
    assert_int_equal(codec_compress(CODEC_GZIP, (const uint8_t *)"world", 5, 0, &z), 0);
    assert_int_equal(codec_decompress(CODEC_GZIP, z.data, z.len, &out), 0);
    assert_int_equal(out.len, 11);
    assert_memory_equal(out.data, "hello world", 11);
    buf_cleanup(&z);
    buf_cleanup(&out);
}

static void test_codec_parse(void **state)
{
    (void)state;
    enum codec c;
    assert_int_equal(codec_parse("gzip", 4, &c), 0);
    assert_int_equal(c, CODEC_GZIP);
    assert_int_equal(codec_parse(" ZSTD ", 6, &c), 0);
    assert_int_equal(c, CODEC_ZSTD);
    assert_int_equal(codec_parse("identity", 8, &c), 0);
    assert_int_equal(c, CODEC_NONE);
    assert_int_equal(codec_parse("", 0, &c), 0);
    assert_int_equal(c, CODEC_NONE);
    assert_int_equal(codec_parse("br", 2, &c), DLOTEL_ERR_UNSUPPORTED);
    assert_int_equal(codec_parse("deflate", 7, &c), DLOTEL_ERR_UNSUPPORTED);
    assert_string_equal(codec_name(CODEC_ZSTD), "zstd");
}

static void test_strerror(void **state)
{
    (void)state;
    for (int code = 0; code >= DLOTEL_ERR_MODULE; code--) {
        assert_string_not_equal(dlotel_strerror(code), "unknown error");
    }
    assert_string_equal(dlotel_strerror(-9999), "unknown error");
    assert_string_equal(dlotel_version(), DLOTEL_VERSION);
}

static void test_log_level(void **state)
{
    (void)state;
    enum log_level l;
    assert_int_equal(log_level_parse("DEBUG", &l), 0);
    assert_int_equal(l, LOG_LEVEL_DEBUG);
    assert_int_equal(log_level_parse("warning", &l), 0);
    assert_int_equal(l, LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("loud", &l), DLOTEL_ERR_INVALID_ARG);

    FILE *f = tmpfile();
    assert_non_null(f);
    log_set_file(f);
    log_set_level(LOG_LEVEL_WARN);
    log_info("test", "hidden %d", 1);
    log_warn("test", "shown %d", 2);
    char big[5000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    log_error("test", "%s", big);
    log_set_file(NULL);
    log_set_level(LOG_LEVEL_INFO);
    rewind(f);
    char line[4096];
    assert_non_null(fgets(line, sizeof(line), f));
    assert_non_null(strstr(line, "warn  test: shown 2"));
    /* The long line is cut to one line that ends in "...". */
    assert_non_null(fgets(line, sizeof(line), f));
    assert_non_null(strstr(line, "...\n"));
    assert_null(fgets(line, sizeof(line), f));
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_limit_boundary),
        cmocka_unit_test(test_buf_long_printf),
        cmocka_unit_test(test_buf_overflowing_size),
        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_arena_cap_boundary),
        cmocka_unit_test(test_gzip_roundtrip),
        cmocka_unit_test(test_zstd_roundtrip),
        cmocka_unit_test(test_gzip_bomb),
        cmocka_unit_test(test_zstd_bomb),
        cmocka_unit_test(test_gzip_concatenated_members),
        cmocka_unit_test(test_codec_parse),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_log_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
