/*
 * dlotel-micro: the per-request cost of the building blocks of the forwarding path, on the
 * payload files, in one process with no I/O: otlp_scan() (the receiver's validation and count),
 * a memcpy of the body (what batching by concatenation costs), and gzip and zstd both ways at
 * the levels the exporters use (codec default) and at level 1. docs/benchmarks.md uses these to say
 * where an agent's CPU goes; instruction counts under valgrind --tool=callgrind are repeatable
 * where wall time on a shared machine is not.
 *
 * usage: dlotel-micro [--seconds S] [--reps N] [--op NAME] [--json] FILE...
 *        (the signal is guessed from each file name). --op runs one operation only; --reps runs
 *        it exactly N times without calibrating, for instruction counts under callgrind.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/compress.h"
#include "otlp/otlp.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct buf b;
    buf_init(&b, (size_t)256 << 20);
    uint8_t chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&b, chunk, n) != 0) {
            fclose(f);
            buf_cleanup(&b);
            return NULL;
        }
    }
    fclose(f);
    return buf_take(&b, len);
}

struct op {
    const char *name;
    int (*fn)(void *ctx);
};

struct ctx {
    enum otlp_signal signal;
    const uint8_t *data;
    size_t len;
    struct buf out;
    const uint8_t *gz;
    size_t gz_len;
    const uint8_t *zs;
    size_t zs_len;
    uint64_t items;
};

static int op_scan(void *p)
{
    struct ctx *c = p;
    struct otlp_counts counts;
    int rc = otlp_scan(c->signal, c->data, c->len, &counts, NULL);
    c->items = counts.items;
    return rc;
}

static int op_memcpy(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return buf_append(&c->out, c->data, c->len);
}

static int op_gzip(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return codec_compress(CODEC_GZIP, c->data, c->len, 0, &c->out);
}

static int op_zstd(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return codec_compress(CODEC_ZSTD, c->data, c->len, 0, &c->out);
}

static int op_gzip1(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return codec_compress(CODEC_GZIP, c->data, c->len, 1, &c->out);
}

static int op_zstd1(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return codec_compress(CODEC_ZSTD, c->data, c->len, 1, &c->out);
}

static int op_gunzip(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return codec_decompress(CODEC_GZIP, c->gz, c->gz_len, &c->out);
}

static int op_unzstd(void *p)
{
    struct ctx *c = p;
    buf_reset(&c->out);
    return codec_decompress(CODEC_ZSTD, c->zs, c->zs_len, &c->out);
}

int main(int argc, char **argv)
{
    double seconds = 1.0;
    uint64_t fixed_reps = 0;
    const char *only = NULL;
    bool json = false, any = false;
    int first = 1;
    while (first < argc && strncmp(argv[first], "--", 2) == 0) {
        if (strcmp(argv[first], "--json") == 0) {
            json = true;
            first++;
        } else if (strcmp(argv[first], "--seconds") == 0 && first + 1 < argc) {
            char *end;
            seconds = strtod(argv[first + 1], &end);
            if (*end != '\0' || !(seconds > 0)) {
                fprintf(stderr, "dlotel-micro: bad --seconds\n");
                return 2;
            }
            first += 2;
        } else if (strcmp(argv[first], "--reps") == 0 && first + 1 < argc) {
            char *end;
            unsigned long long r = strtoull(argv[first + 1], &end, 10);
            if (*end != '\0' || r == 0 || r > 100000000ull) {
                fprintf(stderr, "dlotel-micro: bad --reps (1 to 100000000)\n");
                return 2;
            }
            fixed_reps = r;
            first += 2;
        } else if (strcmp(argv[first], "--op") == 0 && first + 1 < argc) {
            only = argv[first + 1];
            first += 2;
        } else {
            break;
        }
    }
    if (first >= argc) {
        fprintf(stderr,
                "usage: dlotel-micro [--seconds S] [--reps N] [--op NAME] [--json] FILE...\n");
        return 2;
    }
    static const struct op ops[] = {
        {"otlp_scan", op_scan}, {"memcpy", op_memcpy}, {"gzip", op_gzip},     {"gzip-1", op_gzip1},
        {"zstd", op_zstd},      {"zstd-1", op_zstd1},  {"gunzip", op_gunzip}, {"unzstd", op_unzstd},
    };
    if (json) {
        printf("[");
    }
    for (int i = first; i < argc; i++) {
        struct ctx c = {0};
        const char *path = argv[i];
        if (strstr(path, "trace") != NULL) {
            c.signal = OTLP_TRACES;
        } else if (strstr(path, "log") != NULL) {
            c.signal = OTLP_LOGS;
        } else {
            c.signal = OTLP_METRICS;
        }
        uint8_t *data = slurp(path, &c.len);
        if (data == NULL) {
            fprintf(stderr, "dlotel-micro: cannot read %s\n", path);
            return 1;
        }
        c.data = data;
        buf_init(&c.out, (size_t)256 << 20);
        struct buf gz, zs;
        buf_init(&gz, (size_t)256 << 20);
        buf_init(&zs, (size_t)256 << 20);
        if (codec_compress(CODEC_GZIP, data, c.len, 0, &gz) != 0 ||
            codec_compress(CODEC_ZSTD, data, c.len, 0, &zs) != 0 || op_scan(&c) != 0) {
            fprintf(stderr, "dlotel-micro: %s: not a valid request\n", path);
            return 1;
        }
        c.gz = gz.data;
        c.gz_len = gz.len;
        c.zs = zs.data;
        c.zs_len = zs.len;
        for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
            if (only != NULL && strcmp(only, ops[k].name) != 0) {
                continue;
            }
            /* Calibrate, then run for about |seconds| (or exactly --reps times). */
            uint64_t reps = fixed_reps, t0, t;
            if (reps == 0) {
                uint64_t n = 0;
                t0 = now_ns();
                do {
                    ops[k].fn(&c);
                    n++;
                    t = now_ns();
                } while (t - t0 < (uint64_t)(seconds * 1e9 / 10));
                reps = n * 10;
            }
            t0 = now_ns();
            for (uint64_t r = 0; r < reps; r++) {
                ops[k].fn(&c);
            }
            double ns = (double)(now_ns() - t0) / (double)reps;
            double mbs = (double)c.len / ns * 1e3;
            double items_s = (double)c.items / ns * 1e9;
            if (json) {
                printf("%s{\"file\":\"%s\",\"op\":\"%s\",\"bytes\":%zu,\"items\":%" PRIu64
                       ",\"us_per_request\":%.1f,\"mb_per_s\":%.1f,\"items_per_s\":%.0f}",
                       any ? "," : "", path, ops[k].name, c.len, c.items, ns / 1e3, mbs, items_s);
            } else {
                printf("%-40s %-10s %8.1f us/request %8.1f MB/s %12.0f items/s\n", path,
                       ops[k].name, ns / 1e3, mbs, items_s);
            }
            any = true;
        }
        if (!json) {
            printf("%-40s gzip ratio %.2f, zstd ratio %.2f\n", path, (double)c.len / gz.len,
                   (double)c.len / zs.len);
        }
        buf_cleanup(&gz);
        buf_cleanup(&zs);
        buf_cleanup(&c.out);
        free(data);
    }
    if (json) {
        printf("]\n");
    }
    return 0;
}
