/*
 * Allocation-failure tests in the nghttp2 style for the core rooms: run an operation once to
 * count its allocations, then again for every i, with exactly the i-th allocation failing,
 * until a run makes fewer than i allocations (so nothing was failed and it must succeed). Each
 * failed run must end with a clean error (DLOTEL_ERR_NOMEM, or the error the operation documents
 * for that step), never a crash, and leave nothing behind: LeakSanitizer checks the ASan build,
 * and the wrappers themselves keep a table of the run's live allocations, which must be empty
when the operation returns (so the gcc build checks leaks too).
 *
 * The rooms' code is not changed for this. The executable is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=free (and the init functions
of zlib
 * and zstd, which allocate inside those libraries): every call from our static room libraries
 * goes through the __wrap_ functions below, and so do jansson's, because agent/otlp/json.c
 * hands jansson its own malloc-based allocator. What the shared
 * libraries allocate inside themselves otherwise (libuv's loop, ZSTD_compress()'s context,
 * inflate's window once initialised) is out of reach; that is said, not hidden.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>
#include <zlib.h>
#include <zstd.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/compress.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"
#include "pipeline/diskq.h"
#include "pipeline/pipeline.h"
#include "pipeline/split.h"

#define MIB       ((size_t)1024 * 1024)
#define MAX_STEPS 20000 /* A run with more allocations than this is a test bug. */

/* ---- the failing allocator ------------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
int __real_inflateInit2_(z_streamp strm, int wbits, const char *version, int size);
int __real_deflateInit2_(z_streamp strm, int level, int method, int wbits, int mem, int strat,
                         const char *version, int size);
ZSTD_DCtx *__real_ZSTD_createDCtx(void);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *old, size_t n);
char *__wrap_strdup(const char *s);
void __wrap_free(void *p);
int __wrap_inflateInit2_(z_streamp strm, int wbits, const char *version, int size);
int __wrap_deflateInit2_(z_streamp strm, int level, int method, int wbits, int mem, int strat,
                         const char *version, int size);
ZSTD_DCtx *__wrap_ZSTD_createDCtx(void);

static struct {
    bool armed;
    unsigned long count;   /* Allocations seen since armed. */
    unsigned long fail_at; /* 1-based; 0: never. */
    bool failed;           /* The failure was injected in this run. */
} af;

/*
 * The allocations of the current run that are still live: pointer -> its number in the run.
 * Open addressing; a removed slot keeps a tombstone. Sized far beyond MAX_STEPS.
 */
#define LIVE_SLOTS (1u << 16)
#define TOMBSTONE  ((void *)1)
static struct live {
    void *p;
    unsigned long n;
} live[LIVE_SLOTS];
static unsigned long live_count;

static size_t live_hash(const void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) & (LIVE_SLOTS - 1);
}

static void live_add(void *p)
{
    if (!af.armed || p == NULL) {
        return;
    }
    size_t i = live_hash(p);
    while (live[i].p != NULL && live[i].p != TOMBSTONE) {
        i = (i + 1) & (LIVE_SLOTS - 1);
    }
    live[i].p = p;
    live[i].n = af.count;
    live_count++;
}

/* Forgets |p| if this run allocated it; pointers from elsewhere (libraries) are ignored. */
static void live_remove(void *p)
{
    if (p == NULL || live_count == 0) {
        return;
    }
    size_t i = live_hash(p);
    while (live[i].p != NULL) {
        if (live[i].p == p) {
            live[i].p = TOMBSTONE;
            live_count--;
            return;
        }
        i = (i + 1) & (LIVE_SLOTS - 1);
    }
}

/* The number (in its run) of one allocation still live, or 0. */
static unsigned long live_any(void)
{
    for (size_t i = 0; i < LIVE_SLOTS; i++) {
        if (live[i].p != NULL && live[i].p != TOMBSTONE) {
            return live[i].n;
        }
    }
    return 0;
}

static void live_clear(void)
{
    memset(live, 0, sizeof(live));
    live_count = 0;
}

static bool af_fail_now(void)
{
    if (!af.armed) {
        return false;
    }
    af.count++;
    if (af.count == af.fail_at) {
        af.failed = true;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n)
{
    if (af_fail_now()) {
        return NULL;
    }
    void *p = __real_malloc(n);
    live_add(p);
    return p;
}

void *__wrap_calloc(size_t n, size_t m)
{
    if (af_fail_now()) {
        return NULL;
    }
    void *p = __real_calloc(n, m);
    live_add(p);
    return p;
}

void *__wrap_realloc(void *old, size_t n)
{
    if (af_fail_now()) {
        return NULL;
    }
    void *p = __real_realloc(old, n);
    if (p != NULL || n == 0) {
        live_remove(old);
    }
    live_add(p);
    return p;
}

char *__wrap_strdup(const char *s)
{
    if (af_fail_now()) {
        return NULL;
    }
    char *p = __real_strdup(s);
    live_add(p);
    return p;
}

void __wrap_free(void *p)
{
    live_remove(p);
    __real_free(p);
}

int __wrap_inflateInit2_(z_streamp strm, int wbits, const char *version, int size)
{
    return af_fail_now() ? Z_MEM_ERROR : __real_inflateInit2_(strm, wbits, version, size);
}

int __wrap_deflateInit2_(z_streamp strm, int level, int method, int wbits, int mem, int strat,
                         const char *version, int size)
{
    return af_fail_now()
               ? Z_MEM_ERROR
               : __real_deflateInit2_(strm, level, method, wbits, mem, strat, version, size);
}

ZSTD_DCtx *__wrap_ZSTD_createDCtx(void)
{
    return af_fail_now() ? NULL : __real_ZSTD_createDCtx();
}

/* The test's own allocations never fail. */
static void *xmalloc(size_t n)
{
    void *p = __real_malloc(n);
    assert_non_null(p);
    return p;
}

/*
 * One operation under test. Returns 0 on success or the error it ended with; must release
 * everything it allocated either way.
 */
typedef int (*op_fn)(void *arg);

struct af_result {
    unsigned long allocations; /* In the clean run. */
    unsigned long runs;
    unsigned long nomem;
    unsigned long recovered; /* A failure the operation got over (retried, fell back). */
    unsigned long other;     /* Another allowed error (TOO_LARGE, IO, TIMEOUT). */
};

/*
 * The loop: a clean run first (it must succeed, and counts the allocations), then one run per
 * allocation with that one failing. Each failed run must return an error in |allowed| (0
 * included only when |may_succeed|: an operation may recover from a failure, e.g. a cache).
 */
static struct af_result af_loop(const char *name, op_fn op, void *arg, const int *allowed,
                                size_t nallowed, bool may_succeed)
{
    struct af_result res = {0};
    /* Warm-up run: one-time initialisations (tables built once) are not leaks. */
    assert_int_equal(op(arg), 0);
    live_clear();
    af = (__typeof__(af)){.armed = true};
    int rc = op(arg);
    af.armed = false;
    assert_int_equal(rc, 0);
    res.allocations = af.count;
    if (live_count != 0) {
        fail_msg("%s: the clean run leaked %lu allocations (number %lu among them)", name,
                 live_count, live_any());
    }
    assert_true(res.allocations < MAX_STEPS);
    for (unsigned long i = 1;; i++) {
        live_clear();
        af = (__typeof__(af)){.armed = true, .fail_at = i};
        rc = op(arg);
        af.armed = false;
        res.runs++;
        if (live_count != 0) {
            fail_msg("%s: with allocation %lu failing (rc %d), %lu allocations leaked (number "
                     "%lu among them)",
                     name, i, rc, live_count, live_any());
        }
        if (!af.failed) {
            /* Fewer than i allocations: nothing failed, so the operation must have worked. */
            assert_int_equal(rc, 0);
            break;
        }
        assert_true(i < MAX_STEPS);
        if (rc == 0) {
            res.recovered++;
            if (!may_succeed) {
                fail_msg("%s: allocation %lu failed and the operation still returned 0", name, i);
            }
            continue;
        }
        bool ok = false;
        for (size_t k = 0; k < nallowed; k++) {
            ok = ok || rc == allowed[k];
        }
        if (!ok) {
            fail_msg("%s: allocation %lu failed and the operation returned %d (%s)", name, i, rc,
                     dlotel_strerror(rc));
        }
        if (rc == DLOTEL_ERR_NOMEM) {
            res.nomem++;
        } else {
            res.other++;
        }
    }
    print_message("%s: %lu allocations, %lu runs: %lu NOMEM, %lu other errors, %lu recovered\n",
                  name, res.allocations, res.runs, res.nomem, res.other, res.recovered);
    return res;
}

static const int NOMEM_ONLY[] = {DLOTEL_ERR_NOMEM};

/* ---- payloads -------------------------------------------------------------------------------- */

static uint8_t *read_payload(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail_msg("cannot open %s", path);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = xmalloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

struct payload {
    enum otlp_signal sig;
    uint8_t *data;
    size_t len;
    uint64_t items; /* What a correct decode holds (JSON cases). */
};

/* ---- codecs ---------------------------------------------------------------------------------- */

static int op_scan(void *arg)
{
    struct payload *p = arg;
    struct otlp_counts c;
    return otlp_scan(p->sig, p->data, p->len, &c, NULL);
}

static void test_scan_never_allocates(void **state)
{
    (void)state;
    struct payload p = {.sig = OTLP_TRACES};
    p.data = read_payload("traces_512.pb", &p.len);
    struct af_result r = af_loop("otlp_scan", op_scan, &p, NOMEM_ONLY, 1, false);
    assert_int_equal(r.allocations, 0);
    free(p.data);
}

static int op_json_to_pb(void *arg)
{
    struct payload *p = arg;
    struct arena a;
    struct buf out;
    char err[256];
    arena_init(&a, 256 * MIB);
    buf_init(&out, 64 * MIB);
    err[0] = '\0';
    int rc = otlp_json_to_pb(p->sig, (const char *)p->data, p->len, &a, &out, err, sizeof(err));
    if (rc == 0) {
        struct otlp_counts c;
        assert_int_equal(otlp_scan(p->sig, out.data, out.len, &c, NULL), 0);
        if (c.items != p->items) {
            fail_msg("json_to_pb returned 0 with %llu items, want %llu (allocation %lu failing)",
                     (unsigned long long)c.items, (unsigned long long)p->items,
                     af.failed ? af.fail_at : 0);
        }
    }
    buf_cleanup(&out);
    arena_cleanup(&a);
    return rc;
}

/*
 * Small requests for the JSON decoder: jansson makes one allocation per value, so the 512-item
 * payload files would take tens of thousands of runs of tens of thousands of allocations. These
 * touch every kind of value the decoder handles instead.
 */
static const char JSON_TRACES[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
    "{\"stringValue\":\"af\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"s\",\"version\":\"1\"},"
    "\"spans\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0102030405060708\","
    "\"parentSpanId\":\"0807060504030201\",\"name\":\"op\",\"kind\":2,\"startTimeUnixNano\":"
    "\"1767225600000000000\",\"endTimeUnixNano\":1767225600001000000,\"attributes\":["
    "{\"key\":\"i\",\"value\":{\"intValue\":\"42\"}},{\"key\":\"d\",\"value\":{\"doubleValue\":1.5}"
    "},"
    "{\"key\":\"b\",\"value\":{\"boolValue\":true}},{\"key\":\"y\",\"value\":{\"bytesValue\":"
    "\"AAEC\"}},{\"key\":\"a\",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":\"x\"},"
    "{\"intValue\":1}]}}},{\"key\":\"k\",\"value\":{\"kvlistValue\":{\"values\":[{\"key\":\"n\","
    "\"value\":{\"stringValue\":\"v\"}}]}}}],\"events\":[{\"timeUnixNano\":\"1767225600000000500\","
    "\"name\":\"ev\",\"attributes\":[{\"key\":\"e\",\"value\":{\"stringValue\":\"v\"}}]}],"
    "\"links\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f11\",\"spanId\":\"0102030405060709\"}]"
    ","
    "\"status\":{\"code\":\"STATUS_CODE_ERROR\",\"message\":\"bad\"}}]}]}]}";

static const char JSON_LOGS[] =
    "{\"resourceLogs\":[{\"resource\":{},\"scopeLogs\":[{\"scope\":{\"name\":\"s\"},\"logRecords\":"
    "["
    "{\"timeUnixNano\":\"1767225600000000000\",\"severityNumber\":9,\"severityText\":\"INFO\","
    "\"body\":{\"kvlistValue\":{\"values\":[{\"key\":\"msg\",\"value\":{\"stringValue\":\"hi\"}}]}}"
    ","
    "\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0102030405060708\","
    "\"attributes\":[{\"key\":\"n\",\"value\":{\"intValue\":7}}]},{\"body\":{\"stringValue\":\"x\"}"
    "}]}"
    "]}]}";

static const char JSON_METRICS[] =
    "{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":[{\"name\":\"g\",\"unit\":\"1\","
    "\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":\"1767225600000000000\",\"asDouble\":1.25}]}},"
    "{\"name\":\"c\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":["
    "{\"asInt\":\"5\",\"attributes\":[{\"key\":\"k\",\"value\":{\"stringValue\":\"v\"}}]}]}},"
    "{\"name\":\"h\",\"histogram\":{\"aggregationTemporality\":1,\"dataPoints\":[{\"count\":\"3\","
    "\"sum\":6,\"bucketCounts\":[\"1\",\"2\"],\"explicitBounds\":[1.0]}]}},"
    "{\"name\":\"s\",\"summary\":{\"dataPoints\":[{\"count\":\"2\",\"sum\":3,\"quantileValues\":["
    "{\"quantile\":0.5,\"value\":1}]}]}}]}]}]}";

static void json_to_pb_case(const char *name, const char *json, enum otlp_signal sig,
                            uint64_t items)
{
    struct payload p = {.sig = sig, .data = (uint8_t *)json, .len = strlen(json), .items = items};
    /* An arena that cannot grow reports TOO_LARGE or NOMEM; both are clean refusals. */
    static const int allowed[] = {DLOTEL_ERR_NOMEM, DLOTEL_ERR_TOO_LARGE};
    af_loop(name, op_json_to_pb, &p, allowed, 2, false);
}

static void test_json_to_pb_traces(void **state)
{
    (void)state;
    json_to_pb_case("json traces", JSON_TRACES, OTLP_TRACES, 1);
}

static void test_json_to_pb_logs(void **state)
{
    (void)state;
    json_to_pb_case("json logs", JSON_LOGS, OTLP_LOGS, 2);
}

static void test_json_to_pb_metrics(void **state)
{
    (void)state;
    json_to_pb_case("json metrics", JSON_METRICS, OTLP_METRICS, 4);
}

static int op_pb_to_json(void *arg)
{
    struct payload *p = arg;
    struct arena a;
    struct buf out;
    arena_init(&a, 256 * MIB);
    buf_init(&out, 64 * MIB);
    int rc = otlp_pb_to_json(p->sig, p->data, p->len, &a, &out);
    buf_cleanup(&out);
    arena_cleanup(&a);
    return rc;
}

static void test_pb_to_json(void **state)
{
    (void)state;
    static const char *files[] = {"traces_512.pb", "logs_512.pb", "metrics.pb"};
    static const enum otlp_signal sigs[] = {OTLP_TRACES, OTLP_LOGS, OTLP_METRICS};
    static const int allowed[] = {DLOTEL_ERR_NOMEM, DLOTEL_ERR_TOO_LARGE};
    for (size_t i = 0; i < 3; i++) {
        struct payload p = {.sig = sigs[i]};
        p.data = read_payload(files[i], &p.len);
        af_loop(files[i], op_pb_to_json, &p, allowed, 2, false);
        free(p.data);
    }
}

static int op_encode_status(void *arg)
{
    (void)arg;
    struct buf out;
    buf_init(&out, MIB);
    int rc = otlp_status_encode(3, "a \"message\" with\nescapes \xff", true, &out);
    if (rc == 0) {
        rc = otlp_response_encode(OTLP_TRACES, 7, "partial", false, &out);
    }
    buf_cleanup(&out);
    return rc;
}

static void test_status_encode(void **state)
{
    (void)state;
    af_loop("status_encode", op_encode_status, NULL, NOMEM_ONLY, 1, false);
}

struct split_arg {
    struct payload p;
    size_t limit;
};

static int op_split(void *arg)
{
    struct split_arg *s = arg;
    struct split_out o;
    split_out_init(&o, 64 * MIB);
    int rc = split_request(s->p.sig, s->p.data, s->p.len, s->limit, &o);
    if (rc == 0) {
        assert_true(o.n > 1);
        uint64_t items = 0;
        for (size_t i = 0; i < o.n; i++) {
            items += o.pieces[i].items;
        }
        struct otlp_counts c;
        assert_int_equal(otlp_scan(s->p.sig, s->p.data, s->p.len, &c, NULL), 0);
        assert_int_equal(items, c.items);
    }
    split_out_cleanup(&o);
    return rc;
}

static void test_split(void **state)
{
    (void)state;
    static const char *files[] = {"traces_512.pb", "logs_512.pb", "metrics.pb"};
    static const enum otlp_signal sigs[] = {OTLP_TRACES, OTLP_LOGS, OTLP_METRICS};
    for (size_t i = 0; i < 3; i++) {
        struct split_arg s = {.p = {.sig = sigs[i]}, .limit = 4096};
        s.p.data = read_payload(files[i], &s.p.len);
        af_loop(files[i], op_split, &s, NOMEM_ONLY, 1, false);
        free(s.p.data);
    }
}

struct codec_arg {
    enum codec codec;
    struct payload p;
};

static int op_codec_roundtrip(void *arg)
{
    struct codec_arg *c = arg;
    struct buf z, back;
    buf_init(&z, 64 * MIB);
    buf_init(&back, 64 * MIB);
    int rc = codec_compress(c->codec, c->p.data, c->p.len, 0, &z);
    if (rc == 0) {
        rc = codec_decompress(c->codec, z.data, z.len, &back);
    }
    if (rc == 0) {
        assert_int_equal(back.len, c->p.len);
        assert_memory_equal(back.data, c->p.data, c->p.len);
    }
    buf_cleanup(&z);
    buf_cleanup(&back);
    return rc;
}

static void test_compress(void **state)
{
    (void)state;
    struct codec_arg c = {.p = {.sig = OTLP_TRACES}};
    c.p.data = read_payload("traces_512.pb", &c.p.len);
    c.codec = CODEC_GZIP;
    af_loop("gzip", op_codec_roundtrip, &c, NOMEM_ONLY, 1, false);
    c.codec = CODEC_ZSTD;
    af_loop("zstd", op_codec_roundtrip, &c, NOMEM_ONLY, 1, false);
    free(c.p.data);
}

/* ---- disk queue ------------------------------------------------------------------------------ */

struct dq_arg {
    char dir[64];
    uint8_t rec[3000];
};

static int rm_rf(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

/*
 * Open, append 20 records over several segments, read half and commit, close; reopen (recovery
 * of what is left), read the rest, commit, close. Every step that may allocate is under test.
 */
static int op_diskq(void *arg)
{
    struct dq_arg *d = arg;
    assert_int_equal(rm_rf(d->dir), 0);
    struct diskq_options o = {
        .dir = d->dir,
        .name = "af/traces",
        .max_bytes = 10 * MIB,
        .segment_bytes = 16 * 1024,
        .fsync = PIPELINE_FSYNC_NEVER,
    };
    struct diskq *q = NULL;
    struct buf b;
    buf_init(&b, MIB);
    int rc = diskq_open(&q, &o);
    for (unsigned i = 0; rc == 0 && i < 20; i++) {
        d->rec[0] = (uint8_t)i;
        rc = diskq_append(q, d->rec, sizeof(d->rec), 1, NULL);
    }
    for (unsigned i = 0; rc == 0 && i < 10; i++) {
        struct diskq_record r;
        rc = diskq_peek(q, &r);
        if (rc == 0) {
            buf_reset(&b);
            rc = diskq_read(q, &r, &b);
        }
        if (rc == 0) {
            assert_int_equal(b.data[0], i);
            rc = diskq_commit(q, r.end);
        }
    }
    diskq_close(q);
    q = NULL;
    if (rc == 0) {
        rc = diskq_open(&q, &o);
    }
    unsigned seen = 0;
    while (rc == 0) {
        struct diskq_record r;
        rc = diskq_peek(q, &r);
        if (rc == DLOTEL_ERR_NOT_FOUND) {
            rc = seen == 10 ? 0 : DLOTEL_ERR_IO;
            break;
        }
        if (rc == 0) {
            buf_reset(&b);
            rc = diskq_read(q, &r, &b);
        }
        if (rc == 0) {
            assert_int_equal(b.data[0], 10 + seen);
            seen++;
            rc = diskq_commit(q, r.end);
        }
    }
    diskq_close(q);
    buf_cleanup(&b);
    return rc;
}

static void test_diskq(void **state)
{
    (void)state;
    struct dq_arg *d = xmalloc(sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "/tmp/dlotel-af-diskq-%d", (int)getpid());
    memset(d->rec, 'r', sizeof(d->rec));
    /* A failed commit (cursor file) is reported as IO by contract. */
    static const int allowed[] = {DLOTEL_ERR_NOMEM, DLOTEL_ERR_IO};
    af_loop("diskq", op_diskq, d, allowed, 2, false);
    assert_int_equal(rm_rf(d->dir), 0);
    free(d);
}

/* ---- pipeline: batcher, memory queue, disk queue --------------------------------------------- */

/* An upstream exporter that accepts every batch on the next loop turn. */
struct ok_exp {
    struct exporter base;
    uv_loop_t *loop;
    uint64_t items;
    uint64_t batches;
    struct pend *live;
};

struct pend {
    uv_timer_t timer;
    export_done_fn done;
    void *userdata;
    struct pend *next;
    struct ok_exp *x;
};

static void pend_closed(uv_handle_t *h)
{
    free(h->data);
}

static void pend_unlink(struct pend *pd)
{
    struct pend **pp = &pd->x->live;
    while (*pp != pd) {
        pp = &(*pp)->next;
    }
    *pp = pd->next;
}

static void on_answer(uv_timer_t *t)
{
    struct pend *pd = t->data;
    pend_unlink(pd);
    struct export_result r = {.outcome = EXPORT_OK, .grpc_status = -1, .http_status = 200};
    pd->done(pd->userdata, &r);
    uv_close((uv_handle_t *)&pd->timer, pend_closed);
}

static int ok_send(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                   uint64_t items, export_done_fn done, void *userdata)
{
    (void)s;
    (void)pb;
    (void)len;
    struct ok_exp *x = (struct ok_exp *)e;
    struct pend *pd = xmalloc(sizeof(*pd));
    memset(pd, 0, sizeof(*pd));
    pd->done = done;
    pd->userdata = userdata;
    pd->x = x;
    pd->timer.data = pd;
    uv_timer_init(x->loop, &pd->timer);
    uv_timer_start(&pd->timer, on_answer, 0, 0);
    pd->next = x->live;
    x->live = pd;
    x->items += items;
    x->batches++;
    return 0;
}

static void ok_destroy(struct exporter *e)
{
    struct ok_exp *x = (struct ok_exp *)e;
    while (x->live != NULL) {
        struct pend *pd = x->live;
        x->live = pd->next;
        struct export_result r = {.outcome = EXPORT_RETRY, .grpc_status = -1};
        snprintf(r.message, sizeof(r.message), "exporter destroyed");
        pd->done(pd->userdata, &r);
        uv_timer_stop(&pd->timer);
        uv_close((uv_handle_t *)&pd->timer, pend_closed);
    }
    free(x);
}

static const struct exporter_ops ok_ops = {
    .kind = "af_ok",
    .send = ok_send,
    .destroy = ok_destroy,
};

#define PL_REQUESTS 6

struct pl_arg {
    bool disk;
    char dir[64];
    struct payload traces, logs;
    /* Per run. */
    struct slot {
        int status;
        int calls;
    } slot[PL_REQUESTS];
    bool drained;
    int drain_status;
};

static void on_submit_done(void *userdata, int status, const char *detail)
{
    (void)detail;
    struct slot *slot = userdata;
    slot->status = status;
    slot->calls++;
}

static void on_drained(void *userdata, int status)
{
    struct pl_arg *a = userdata;
    a->drained = true;
    a->drain_status = status;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

/*
 * A pipeline on its own loop with one upstream exporter for traces and logs (memory queue, or
 * disk queue), six requests submitted, batches formed and sent, then drained and freed. Returns
 * 0 when every request was accepted and every accepted item delivered; otherwise the first
 * error any step reported. Every submit must be answered exactly once either way, and the loop
 * must close with no handle left.
 */
static int op_pipeline(void *arg)
{
    struct pl_arg *a = arg;
    memset(a->slot, 0, sizeof(a->slot));
    a->drained = false;
    if (a->disk) {
        assert_int_equal(rm_rf(a->dir), 0);
    }
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct pipeline_options po;
    pipeline_options_init(&po);
    po.batch_max_bytes = 64 * 1024; /* Splits the 512-span requests. */
    po.batch_timeout_ns = 1000000;
    struct pipeline *p = NULL;
    int rc = pipeline_new_on_loop(&p, &loop, &po);
    struct ok_exp *x = NULL;
    uint64_t want = 0;
    if (rc == 0) {
        x = xmalloc(sizeof(*x));
        memset(x, 0, sizeof(*x));
        x->base.ops = &ok_ops;
        x->loop = &loop;
        struct pipeline_exporter_options eo;
        pipeline_exporter_options_init(&eo);
        eo.name = "af";
        eo.retry.initial_interval_ns = 1000000;
        eo.retry.max_interval_ns = 1000000;
        if (a->disk) {
            eo.disk_queue.enabled = true;
            eo.disk_queue.path = a->dir;
            eo.disk_queue.fsync = PIPELINE_FSYNC_NEVER;
        }
        rc = pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &eo);
        if (rc != 0) {
            /* No reference taken: still ours. */
            free(x);
            x = NULL;
        } else {
            rc = pipeline_add_exporter_opts(p, OTLP_LOGS, &x->base, &eo);
        }
    }
    if (rc == 0) {
        for (int i = 0; i < PL_REQUESTS; i++) {
            struct payload *pl = i % 2 == 0 ? &a->traces : &a->logs;
            struct otlp_counts c;
            assert_int_equal(otlp_scan(pl->sig, pl->data, pl->len, &c, NULL), 0);
            pipeline_submit(p, pl->sig, pl->data, pl->len, &c, on_submit_done, &a->slot[i]);
        }
        /* Let batches form and go out. */
        for (int t = 0; t < 200; t++) {
            uv_run(&loop, UV_RUN_NOWAIT);
            usleep(200);
        }
        for (int i = 0; i < PL_REQUESTS; i++) {
            struct payload *pl = i % 2 == 0 ? &a->traces : &a->logs;
            struct otlp_counts c;
            otlp_scan(pl->sig, pl->data, pl->len, &c, NULL);
            if (a->slot[i].calls == 1 && a->slot[i].status == 0) {
                want += c.items;
            }
        }
        assert_int_equal(pipeline_drain(p, 2000000000ull, on_drained, a), 0);
        while (!a->drained) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        for (int i = 0; i < PL_REQUESTS; i++) {
            if (a->slot[i].calls != 1) {
                fail_msg("request %d answered %d times", i, a->slot[i].calls);
            }
            if (rc == 0 && a->slot[i].status != 0) {
                rc = a->slot[i].status;
            }
        }
        if (rc == 0 && a->drain_status != 0) {
            rc = a->drain_status;
        }
        /* Accepted items went out (at-least-once: a retried batch may go twice). */
        if (a->drain_status == 0 && x->items < want) {
            fail_msg("%llu items accepted, %llu sent", (unsigned long long)want,
                     (unsigned long long)x->items);
        }
    }
    pipeline_free(p);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_walk(&loop, walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    if (a->disk) {
        assert_int_equal(rm_rf(a->dir), 0);
    }
    return rc;
}

static void pipeline_case(bool disk)
{
    struct pl_arg *a = xmalloc(sizeof(*a));
    memset(a, 0, sizeof(*a));
    a->disk = disk;
    snprintf(a->dir, sizeof(a->dir), "/tmp/dlotel-af-pipeline-%d", (int)getpid());
    a->traces.sig = OTLP_TRACES;
    a->traces.data = read_payload("traces_512.pb", &a->traces.len);
    a->logs.sig = OTLP_LOGS;
    a->logs.data = read_payload("logs_512.pb", &a->logs.len);
    /* A request refused for memory is NOMEM (503); a failed disk queue open or write is IO. */
    static const int allowed[] = {DLOTEL_ERR_NOMEM, DLOTEL_ERR_IO, DLOTEL_ERR_TIMEOUT};
    af_loop(disk ? "pipeline+diskq" : "pipeline", op_pipeline, a, allowed, 3, true);
    free(a->traces.data);
    free(a->logs.data);
    free(a);
}

static void test_pipeline_memory_queue(void **state)
{
    (void)state;
    pipeline_case(false);
}

static void test_pipeline_disk_queue(void **state)
{
    (void)state;
    pipeline_case(true);
}

int main(void)
{
    /* Every injected failure is logged by the room that met it; keep the test output short. */
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull != NULL) {
        log_set_file(devnull);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_never_allocates),
        cmocka_unit_test(test_status_encode),
        cmocka_unit_test(test_json_to_pb_traces),
        cmocka_unit_test(test_json_to_pb_logs),
        cmocka_unit_test(test_json_to_pb_metrics),
        cmocka_unit_test(test_pb_to_json),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_compress),
        cmocka_unit_test(test_diskq),
        cmocka_unit_test(test_pipeline_memory_queue),
        cmocka_unit_test(test_pipeline_disk_queue),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    log_set_file(NULL);
    if (devnull != NULL) {
        fclose(devnull);
    }
    return rc;
}
