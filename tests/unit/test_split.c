/*
 * The splitter: requests larger than a limit cut into valid requests under it, every item kept
 * byte for byte with its resource, scope (and metric) headers, for all three signals.
 *
 * The checks use a walker written here, independent of split.c: it flattens a request into one
 * "signature" per item (the headers of every container around the item, then the item's own
 * bytes). Splitting must not change the sequence of signatures: concatenating the signatures of
 * all pieces gives exactly those of the original.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/log.h"
#include "dlotel.h"
#include "otlp/otlp.h"
#include "pipeline/split.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

/* core/buf.c computes max + 1: SIZE_MAX would wrap. */
#define UNLIMITED ((size_t)1 << 40)

/* ---- a small protobuf writer ---------------------------------------------------------------- */

static void put_varint(struct buf *b, uint64_t v)
{
    while (v >= 0x80) {
        assert_int_equal(buf_putc(b, (uint8_t)(v | 0x80)), 0);
        v >>= 7;
    }
    assert_int_equal(buf_putc(b, (uint8_t)v), 0);
}

static void put_len(struct buf *b, unsigned field, const void *p, size_t n)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    assert_int_equal(buf_append(b, p, n), 0);
}

static void put_str(struct buf *b, unsigned field, const char *s)
{
    put_len(b, field, s, strlen(s));
}

static void put_msg(struct buf *b, unsigned field, struct buf *child)
{
    put_len(b, field, child->data, child->len);
    buf_reset(child);
}

static void put_fixed64(struct buf *b, unsigned field, uint64_t v)
{
    put_varint(b, (uint64_t)field << 3 | 1);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(buf_putc(b, (uint8_t)(v >> (8 * i))), 0);
    }
}

static void put_uint(struct buf *b, unsigned field, uint64_t v)
{
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}

/* A KeyValue with a string value of |vlen| bytes of 'v'. */
static void put_attr(struct buf *b, unsigned field, const char *key, size_t vlen)
{
    struct buf kv, any;
    buf_init(&kv, UNLIMITED);
    buf_init(&any, UNLIMITED);
    char *val = malloc(vlen + 1);
    assert_non_null(val);
    memset(val, 'v', vlen);
    val[vlen] = '\0';
    put_str(&any, 1, val);
    put_str(&kv, 1, key);
    put_msg(&kv, 2, &any);
    put_msg(b, field, &kv);
    free(val);
    buf_cleanup(&kv);
    buf_cleanup(&any);
}

static void put_resource(struct buf *b, unsigned field, const char *service, size_t extra)
{
    struct buf r;
    buf_init(&r, UNLIMITED);
    struct buf kv, any;
    buf_init(&kv, UNLIMITED);
    buf_init(&any, UNLIMITED);
    put_str(&any, 1, service);
    put_str(&kv, 1, "service.name");
    put_msg(&kv, 2, &any);
    put_msg(&r, 1, &kv);
    if (extra > 0) {
        put_attr(&r, 1, "host.padding", extra);
    }
    put_msg(b, field, &r);
    buf_cleanup(&r);
    buf_cleanup(&kv);
    buf_cleanup(&any);
}

static void put_scope(struct buf *b, unsigned field, const char *name)
{
    struct buf s;
    buf_init(&s, UNLIMITED);
    put_str(&s, 1, name);
    put_str(&s, 2, "1.0.0");
    put_msg(b, field, &s);
    buf_cleanup(&s);
}

/* A Span whose name says where it is and whose attribute makes it |pad| bytes larger. */
static void put_span(struct buf *b, unsigned n, size_t pad)
{
    struct buf s;
    buf_init(&s, UNLIMITED);
    uint8_t tid[16], sid[8];
    for (int i = 0; i < 16; i++) {
        tid[i] = (uint8_t)(n * 7 + (unsigned)i + 1);
    }
    for (int i = 0; i < 8; i++) {
        sid[i] = (uint8_t)(n * 13 + (unsigned)i + 1);
    }
    put_len(&s, 1, tid, sizeof(tid));
    put_len(&s, 2, sid, sizeof(sid));
    char name[32];
    snprintf(name, sizeof(name), "span-%u", n);
    put_str(&s, 5, name);
    put_uint(&s, 6, 2);
    put_fixed64(&s, 7, 1700000000000000000ull + n);
    put_fixed64(&s, 8, 1700000000000001000ull + n);
    if (pad > 0) {
        put_attr(&s, 9, "pad", pad);
    }
    put_msg(b, 2, &s);
    buf_cleanup(&s);
}

static void put_log(struct buf *b, unsigned n, size_t pad)
{
    struct buf l, any;
    buf_init(&l, UNLIMITED);
    buf_init(&any, UNLIMITED);
    put_fixed64(&l, 1, 1700000000000000000ull + n);
    put_uint(&l, 2, 9);
    char body[64];
    snprintf(body, sizeof(body), "log line %u", n);
    put_str(&any, 1, body);
    put_msg(&l, 5, &any);
    if (pad > 0) {
        put_attr(&l, 6, "pad", pad);
    }
    put_msg(b, 2, &l);
    buf_cleanup(&l);
    buf_cleanup(&any);
}

/* A NumberDataPoint as field 1 of a Gauge or Sum. */
static void put_point(struct buf *b, unsigned n, size_t pad)
{
    struct buf dp;
    buf_init(&dp, UNLIMITED);
    put_fixed64(&dp, 3, 1700000000000000000ull + n);
    put_fixed64(&dp, 4, 0x3ff0000000000000ull + n); /* as_double */
    if (pad > 0) {
        put_attr(&dp, 7, "pad", pad);
    }
    put_msg(b, 1, &dp);
    buf_cleanup(&dp);
}

/* A Metric: a monotonic cumulative Sum with |points| data points. */
static void put_metric(struct buf *b, const char *name, unsigned points, size_t pad)
{
    struct buf m, sum;
    buf_init(&m, UNLIMITED);
    buf_init(&sum, UNLIMITED);
    put_str(&m, 1, name);
    put_str(&m, 2, "a description");
    put_str(&m, 3, "ms");
    for (unsigned i = 0; i < points; i++) {
        put_point(&sum, i, pad);
    }
    put_uint(&sum, 2, 2); /* AGGREGATION_TEMPORALITY_CUMULATIVE */
    put_uint(&sum, 3, 1); /* is_monotonic */
    put_msg(&m, 7, &sum);
    put_msg(b, 2, &m);
    buf_cleanup(&m);
    buf_cleanup(&sum);
}

/* ---- the checking walker -------------------------------------------------------------------- */

struct sigs {
    struct buf all; /* Signatures, each prefixed by its length (8 bytes). */
    uint64_t items;
    uint64_t metrics; /* Metric messages seen. */
};

struct fld {
    unsigned number;
    unsigned wt;
    const uint8_t *start, *end, *payload;
};

static bool rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int s = 0; s < 70 && *p < end; s += 7) {
        uint8_t c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << s;
        if (c < 0x80) {
            *v = r;
            return true;
        }
    }
    return false;
}

static void next(const uint8_t **p, const uint8_t *end, struct fld *f)
{
    uint64_t tag = 0, v = 0; /* assert_true() does not tell gcc that a failed read ends the test. */
    f->start = *p;
    assert_true(rd_varint(p, end, &tag));
    f->number = (unsigned)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    switch (f->wt) {
    case 0:
        assert_true(rd_varint(p, end, &v));
        break;
    case 1:
        *p += 8;
        break;
    case 5:
        *p += 4;
        break;
    case 2:
        assert_true(rd_varint(p, end, &v));
        f->payload = *p;
        *p += v;
        break;
    default:
        fail_msg("wire type %u", f->wt);
    }
    assert_true(*p <= end);
    f->end = *p;
}

/* Appends the non-child fields of the container [p, end) to |hdr|. */
static void headers(const uint8_t *p, const uint8_t *end, bool (*child)(unsigned), struct buf *hdr)
{
    while (p < end) {
        struct fld f;
        next(&p, end, &f);
        if (!child(f.number)) {
            assert_int_equal(buf_append(hdr, f.start, (size_t)(f.end - f.start)), 0);
        }
    }
}

static bool child2(unsigned n)
{
    return n == 2;
}

static bool child_data(unsigned n)
{
    return n == 5 || n == 7 || n == 9 || n == 10 || n == 11;
}

static bool child1(unsigned n)
{
    return n == 1;
}

static void add_sig(struct sigs *s, const struct buf *ctx, const uint8_t *item, size_t len)
{
    uint64_t total = ctx->len + len;
    assert_int_equal(buf_append(&s->all, &total, sizeof(total)), 0);
    assert_int_equal(buf_append(&s->all, ctx->data, ctx->len), 0);
    assert_int_equal(buf_append(&s->all, item, len), 0);
    s->items++;
}

/* Adds the signature of every item in the request [p, p + len). */
static void walk(enum otlp_signal sig, const uint8_t *data, size_t len, struct sigs *s)
{
    struct buf ctx;
    buf_init(&ctx, UNLIMITED);
    const uint8_t *p = data, *end = data + len;
    while (p < end) {
        struct fld r;
        next(&p, end, &r);
        if (r.number != 1) {
            continue;
        }
        size_t c0 = ctx.len;
        headers(r.payload, r.end, child2, &ctx);
        const uint8_t *q = r.payload;
        while (q < r.end) {
            struct fld sc;
            next(&q, r.end, &sc);
            if (sc.number != 2) {
                continue;
            }
            size_t c1 = ctx.len;
            assert_int_equal(buf_putc(&ctx, '|'), 0);
            headers(sc.payload, sc.end, child2, &ctx);
            const uint8_t *t = sc.payload;
            while (t < sc.end) {
                struct fld it;
                next(&t, sc.end, &it);
                if (it.number != 2) {
                    continue;
                }
                if (sig != OTLP_METRICS) {
                    add_sig(s, &ctx, it.start, (size_t)(it.end - it.start));
                    continue;
                }
                s->metrics++;
                size_t c2 = ctx.len;
                assert_int_equal(buf_putc(&ctx, '|'), 0);
                headers(it.payload, it.end, child_data, &ctx);
                const uint8_t *u = it.payload;
                while (u < it.end) {
                    struct fld d;
                    next(&u, it.end, &d);
                    if (!child_data(d.number)) {
                        continue;
                    }
                    size_t c3 = ctx.len;
                    assert_int_equal(buf_putc(&ctx, (uint8_t)d.number), 0);
                    headers(d.payload, d.end, child1, &ctx);
                    const uint8_t *w = d.payload;
                    while (w < d.end) {
                        struct fld dp;
                        next(&w, d.end, &dp);
                        if (dp.number == 1) {
                            add_sig(s, &ctx, dp.start, (size_t)(dp.end - dp.start));
                        }
                    }
                    ctx.len = c3;
                }
                ctx.len = c2;
            }
            ctx.len = c1;
        }
        ctx.len = c0;
    }
    buf_cleanup(&ctx);
}

/*
 * Splits |req| under |limit| and checks everything: pieces scan valid, fit the limit (or hold a
 * single unsplittable item), carry all items with their headers in order, and their counts add
 * up. Returns the number of pieces; |out| keeps them for further checks.
 */
static size_t split_and_check(enum otlp_signal sig, const uint8_t *req, size_t len, size_t limit,
                              struct split_out *out)
{
    struct otlp_counts whole;
    struct otlp_error err;
    assert_int_equal(otlp_scan(sig, req, len, &whole, &err), 0);

    split_out_reset(out);
    assert_int_equal(split_request(sig, req, len, limit, out), 0);
    assert_true(out->n >= 1);

    struct sigs a = {0}, b = {0};
    buf_init(&a.all, UNLIMITED);
    buf_init(&b.all, UNLIMITED);
    walk(sig, req, len, &a);
    assert_int_equal(a.items, whole.items);

    uint64_t items = 0;
    size_t oversized = 0;
    for (size_t i = 0; i < out->n; i++) {
        const struct split_piece *pc = &out->pieces[i];
        const uint8_t *piece = out->data.data + pc->offset;
        struct otlp_counts c;
        if (otlp_scan(sig, piece, pc->len, &c, &err) != 0) {
            fail_msg("piece %zu of %zu does not scan: %s at %zu", i, out->n, err.message,
                     err.offset);
        }
        assert_int_equal(c.items, pc->items);
        items += c.items;
        if (pc->len > limit) {
            /* Over the limit only when it cannot be cut: one item, one resource, one scope. */
            oversized++;
            assert_true(c.items <= 1);
            assert_int_equal(c.resources, 1);
            assert_true(c.scopes <= 1);
        }
        walk(sig, piece, pc->len, &b);
    }
    assert_int_equal(oversized, out->oversized);
    assert_int_equal(items, whole.items);
    assert_int_equal(b.items, a.items);
    assert_int_equal(b.all.len, a.all.len);
    assert_memory_equal(b.all.data, a.all.data, a.all.len);
    buf_cleanup(&a.all);
    buf_cleanup(&b.all);
    return out->n;
}

static uint8_t *read_payload(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *d = malloc((size_t)n + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return d;
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* A 20 MiB request of many resources (the SDK's own requests concatenated) under 1 MiB. */
static void test_traces_20mib_many_resources(void **state)
{
    (void)state;
    size_t n;
    uint8_t *one = read_payload("traces_512.pb", &n);
    if (one == NULL) {
        skip();
    }
    struct buf req;
    buf_init(&req, UNLIMITED);
    while (req.len + n <= 20 * MIB) {
        assert_int_equal(buf_append(&req, one, n), 0);
    }
    struct split_out out;
    split_out_init(&out, 3 * req.len);
    size_t pieces = split_and_check(OTLP_TRACES, req.data, req.len, MIB, &out);
    assert_true(pieces >= req.len / MIB);
    assert_true(pieces <= req.len / MIB + 3); /* Greedy filling: few pieces wasted. */
    assert_int_equal(out.oversized, 0);
    for (size_t i = 0; i + 1 < out.n; i++) {
        /* Every piece but the last is filled close to the limit. */
        assert_true(out.pieces[i].len > MIB - 16 * KIB);
    }
    split_out_cleanup(&out);
    buf_cleanup(&req);
    free(one);
}

/* One resource with many scopes, 5 MiB, under 1 MiB: the resource header is in every piece. */
static void test_traces_one_resource_many_scopes(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    put_resource(&rs, 1, "checkout", 2000);
    unsigned n = 0;
    for (unsigned scope = 0; rs.len < 5 * MIB; scope++) {
        char name[32];
        snprintf(name, sizeof(name), "scope-%u", scope);
        put_scope(&ss, 1, name);
        for (int i = 0; i < 5; i++) {
            put_span(&ss, n++, 150);
        }
        put_str(&ss, 3, "https://opentelemetry.io/schemas/1.21.0");
        put_msg(&rs, 2, &ss);
    }
    put_str(&rs, 3, "https://opentelemetry.io/schemas/1.21.0");
    put_msg(&req, 1, &rs);

    struct split_out out;
    split_out_init(&out, 3 * req.len);
    size_t pieces = split_and_check(OTLP_TRACES, req.data, req.len, MIB, &out);
    assert_true(pieces >= 5 && pieces <= 7);
    for (size_t i = 0; i < out.n; i++) {
        struct otlp_counts c;
        assert_int_equal(otlp_scan(OTLP_TRACES, out.data.data + out.pieces[i].offset,
                                   out.pieces[i].len, &c, NULL),
                         0);
        assert_int_equal(c.resources, 1);
        assert_true(c.scopes > 100 || i + 1 == out.n);
    }
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

/* One scope with 40000 spans (about 5 MiB) under 1 MiB: cut between spans. */
static void test_traces_one_scope_many_spans(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    put_resource(&rs, 1, "frontend", 0);
    put_scope(&ss, 1, "lib");
    for (unsigned i = 0; i < 40000; i++) {
        put_span(&ss, i, i % 97);
    }
    put_msg(&rs, 2, &ss);
    put_msg(&req, 1, &rs);
    assert_true(req.len > 4 * MIB);

    struct split_out out;
    split_out_init(&out, 3 * req.len);
    size_t pieces = split_and_check(OTLP_TRACES, req.data, req.len, MIB, &out);
    assert_true(pieces >= 5 && pieces <= 7);
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

static void test_logs_many_records(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    for (unsigned r = 0; r < 3; r++) {
        put_resource(&rs, 1, r == 0 ? "a" : r == 1 ? "b" : "c", 100);
        for (unsigned sc = 0; sc < 2; sc++) {
            put_scope(&ss, 1, sc == 0 ? "x" : "y");
            for (unsigned i = 0; i < 10000; i++) {
                put_log(&ss, i, (i * 31) % 200);
            }
            put_msg(&rs, 2, &ss);
        }
        put_msg(&req, 1, &rs);
    }
    struct split_out out;
    split_out_init(&out, 3 * req.len);
    split_and_check(OTLP_LOGS, req.data, req.len, MIB, &out);
    split_and_check(OTLP_LOGS, req.data, req.len, 64 * KIB, &out);
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

/* Many small metrics: cut between metrics, never inside one. */
static void test_metrics_metric_boundaries(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    put_resource(&rs, 1, "db", 50);
    put_scope(&ss, 1, "meter");
    unsigned metrics = 3000;
    for (unsigned i = 0; i < metrics; i++) {
        char name[32];
        snprintf(name, sizeof(name), "metric.%u", i);
        put_metric(&ss, name, 1 + i % 20, 16);
    }
    put_msg(&rs, 2, &ss);
    put_msg(&req, 1, &rs);

    struct split_out out;
    split_out_init(&out, 3 * req.len);
    size_t pieces = split_and_check(OTLP_METRICS, req.data, req.len, 256 * KIB, &out);
    assert_true(pieces > 1);
    /* No metric was cut: the pieces hold as many Metric messages as the request. */
    struct sigs s = {0};
    buf_init(&s.all, UNLIMITED);
    for (size_t i = 0; i < out.n; i++) {
        walk(OTLP_METRICS, out.data.data + out.pieces[i].offset, out.pieces[i].len, &s);
    }
    assert_int_equal(s.metrics, metrics);
    buf_cleanup(&s.all);
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

/*
 * A single metric with 30000 points (about 2 MiB) under 256 KiB: cut between data points, the
 * metric's name, description, unit, temporality and monotonicity repeated in every piece (the
 * signature check covers that: the headers are part of every point's signature).
 */
static void test_metrics_one_big_metric(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    put_resource(&rs, 1, "db", 0);
    put_scope(&ss, 1, "meter");
    put_metric(&ss, "small.before", 3, 0);
    put_metric(&ss, "http.server.duration", 30000, 20);
    put_metric(&ss, "small.after", 3, 0);
    put_msg(&rs, 2, &ss);
    put_msg(&req, 1, &rs);
    assert_true(req.len > 1 * MIB);

    struct split_out out;
    split_out_init(&out, 3 * req.len);
    size_t pieces = split_and_check(OTLP_METRICS, req.data, req.len, 256 * KIB, &out);
    assert_true(pieces >= req.len / (256 * KIB));
    assert_int_equal(out.oversized, 0);
    for (size_t i = 0; i < out.n; i++) {
        const uint8_t *pc = out.data.data + out.pieces[i].offset;
        size_t len = out.pieces[i].len;
        assert_non_null(memmem(pc, len, "a description", 13));
        assert_true(memmem(pc, len, "http.server.duration", 20) != NULL ||
                    memmem(pc, len, "small.", 6) != NULL);
    }
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

/*
 * Decision: a single item larger than the limit cannot be cut; it goes alone in its own piece
 * (over the limit, counted in |oversized|), and the items around it are not held back with it.
 * The upstream decides (413 is then a permanent failure, dropped and counted by the pipeline).
 */
static void test_single_item_over_limit(void **state)
{
    (void)state;
    for (int sig = 0; sig < OTLP_SIGNAL_COUNT; sig++) {
        struct buf req, rs, ss;
        buf_init(&req, UNLIMITED);
        buf_init(&rs, UNLIMITED);
        buf_init(&ss, UNLIMITED);
        put_resource(&rs, 1, "svc", 0);
        put_scope(&ss, 1, "lib");
        for (unsigned i = 0; i < 300; i++) {
            size_t pad = i == 150 ? 300 * KIB : 100;
            if (sig == OTLP_TRACES) {
                put_span(&ss, i, pad);
            } else if (sig == OTLP_LOGS) {
                put_log(&ss, i, pad);
            } else {
                char name[16];
                snprintf(name, sizeof(name), "m%u", i);
                put_metric(&ss, name, 1, pad);
            }
        }
        put_msg(&rs, 2, &ss);
        put_msg(&req, 1, &rs);

        struct split_out out;
        split_out_init(&out, 3 * req.len);
        size_t pieces = split_and_check((enum otlp_signal)sig, req.data, req.len, 32 * KIB, &out);
        assert_int_equal(out.oversized, 1);
        assert_true(pieces >= 3);
        size_t big = 0;
        for (size_t i = 0; i < out.n; i++) {
            if (out.pieces[i].len > 32 * KIB) {
                assert_int_equal(out.pieces[i].items, 1);
                big++;
            }
        }
        assert_int_equal(big, 1);
        split_out_cleanup(&out);
        buf_cleanup(&req);
        buf_cleanup(&rs);
        buf_cleanup(&ss);
    }
}

/* Resources and scopes without items are data too (resource attributes): kept. */
static void test_empty_containers_kept(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    put_resource(&rs, 1, "empty-resource", 0);
    put_msg(&req, 1, &rs);
    put_resource(&rs, 1, "empty-scope", 0);
    put_scope(&ss, 1, "nothing");
    put_msg(&rs, 2, &ss);
    put_msg(&req, 1, &rs);
    put_resource(&rs, 1, "full", 0);
    put_scope(&ss, 1, "lib");
    for (unsigned i = 0; i < 20; i++) {
        put_span(&ss, i, 10);
    }
    put_msg(&rs, 2, &ss);
    put_msg(&req, 1, &rs);

    struct otlp_counts whole;
    assert_int_equal(otlp_scan(OTLP_TRACES, req.data, req.len, &whole, NULL), 0);
    struct split_out out;
    split_out_init(&out, 64 * req.len);
    /* A limit so small that every piece holds one thing. */
    split_and_check(OTLP_TRACES, req.data, req.len, 1, &out);
    assert_int_equal(out.n, 2 + 20);
    uint32_t resources = 0, scopes = 0;
    bool saw_empty_resource = false, saw_empty_scope = false;
    for (size_t i = 0; i < out.n; i++) {
        struct otlp_counts c;
        const uint8_t *pc = out.data.data + out.pieces[i].offset;
        assert_int_equal(otlp_scan(OTLP_TRACES, pc, out.pieces[i].len, &c, NULL), 0);
        resources += c.resources;
        scopes += c.scopes;
        saw_empty_resource |= memmem(pc, out.pieces[i].len, "empty-resource", 14) != NULL;
        saw_empty_scope |= memmem(pc, out.pieces[i].len, "nothing", 7) != NULL;
    }
    assert_true(saw_empty_resource);
    assert_true(saw_empty_scope);
    assert_int_equal(resources, out.n);
    assert_int_equal(scopes, out.n - 1);

    /* With room to spare, one piece: the request as it was. */
    split_and_check(OTLP_TRACES, req.data, req.len, req.len, &out);
    assert_int_equal(out.n, 1);
    assert_int_equal(out.pieces[0].len, req.len);
    assert_memory_equal(out.data.data, req.data, req.len);
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

/* The SDK's requests, under limits from tiny to roomy. */
static void test_payloads_many_limits(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        enum otlp_signal sig;
    } files[] = {
        {"traces_512.pb", OTLP_TRACES},
        {"logs_512.pb", OTLP_LOGS},
        {"metrics.pb", OTLP_METRICS},
    };
    static const size_t limits[] = {1, 100, 1000, 4 * KIB, 10 * KIB, 64 * KIB, 200 * KIB};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        size_t n;
        uint8_t *req = read_payload(files[f].file, &n);
        if (req == NULL) {
            skip();
        }
        struct split_out out;
        split_out_init(&out, 1024 * n);
        for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
            split_and_check(files[f].sig, req, n, limits[l], &out);
        }
        /* Large enough: one piece, byte for byte the request (the SDK writes headers first). */
        split_and_check(files[f].sig, req, n, n, &out);
        assert_int_equal(out.n, 1);
        assert_memory_equal(out.data.data, req, n);
        split_out_cleanup(&out);
        free(req);
    }
}

static void test_bad_input_and_output_cap(void **state)
{
    (void)state;
    struct buf req, rs, ss;
    buf_init(&req, UNLIMITED);
    buf_init(&rs, UNLIMITED);
    buf_init(&ss, UNLIMITED);
    /* A 100 KiB resource header and a thousand tiny spans under a limit just above it. */
    put_resource(&rs, 1, "svc", 100 * KIB);
    put_scope(&ss, 1, "lib");
    for (unsigned i = 0; i < 1000; i++) {
        put_span(&ss, i, 0);
    }
    put_msg(&rs, 2, &ss);
    put_msg(&req, 1, &rs);

    struct split_out out;
    split_out_init(&out, 2 * req.len + 101 * KIB);
    split_out_reset(&out);
    /* Each piece would repeat the 100 KiB header: far past twice the request. Refused. */
    assert_int_equal(split_request(OTLP_TRACES, req.data, req.len, 101 * KIB, &out),
                     DLOTEL_ERR_TOO_LARGE);

    /* Truncated: refused, never read past the end. */
    for (size_t cut = 1; cut < 64; cut++) {
        split_out_reset(&out);
        int rc = split_request(OTLP_TRACES, req.data, req.len - cut, 4 * KIB, &out);
        assert_int_equal(rc, DLOTEL_ERR_BAD_INPUT);
    }
    /* A scope field that is not length-delimited. */
    static const uint8_t bad[] = {0x0a, 0x02, 0x10, 0x01};
    split_out_reset(&out);
    assert_int_equal(split_request(OTLP_TRACES, bad, sizeof(bad), 10, &out), DLOTEL_ERR_BAD_INPUT);
    split_out_reset(&out);
    assert_int_equal(split_request((enum otlp_signal)9, bad, sizeof(bad), 10, &out),
                     DLOTEL_ERR_INVALID_ARG);
    /* Empty request: no pieces. */
    split_out_reset(&out);
    assert_int_equal(split_request(OTLP_LOGS, bad, 0, 10, &out), 0);
    assert_int_equal(out.n, 0);
    split_out_cleanup(&out);
    buf_cleanup(&req);
    buf_cleanup(&rs);
    buf_cleanup(&ss);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traces_20mib_many_resources),
        cmocka_unit_test(test_traces_one_resource_many_scopes),
        cmocka_unit_test(test_traces_one_scope_many_spans),
        cmocka_unit_test(test_logs_many_records),
        cmocka_unit_test(test_metrics_metric_boundaries),
        cmocka_unit_test(test_metrics_one_big_metric),
        cmocka_unit_test(test_single_item_over_limit),
        cmocka_unit_test(test_empty_containers_kept),
        cmocka_unit_test(test_payloads_many_limits),
        cmocka_unit_test(test_bad_input_and_output_cap),
    };
    return cmocka_run_group_tests_name("split", tests, NULL, NULL);
}
