/*
 * The pipeline: routing by signal, exporter reference counts, failure propagation.
 *
 * The exporters here are recording exporters written against exporter.h, the same interface the
 * debug and file exporters implement: they count what they get and fail when told to.
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
#include <uv.h>

#include "core/buf.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"
#include "pipeline/pipeline.h"
#include "pipeline/pipeline_int.h"

struct recorder {
    struct exporter base;
    int calls[OTLP_SIGNAL_COUNT];
    size_t last_len;
    uint64_t last_items;
    int flushes;
    int fail_with;  /* Returned by export when non-zero. */
    int *destroyed; /* Incremented by destroy, so the test sees it after the free. */
};

static int rec_export(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                      const struct otlp_counts *counts)
{
    (void)pb;
    struct recorder *r = (struct recorder *)e;
    r->calls[s]++;
    r->last_len = len;
    r->last_items = counts->items;
    return r->fail_with;
}

static void rec_flush(struct exporter *e)
{
    ((struct recorder *)e)->flushes++;
}

static void rec_destroy(struct exporter *e)
{
    struct recorder *r = (struct recorder *)e;
    (*r->destroyed)++;
    free(r);
}

static const struct exporter_ops rec_ops = {
    .kind = "recorder",
    .export = rec_export,
    .flush = rec_flush,
    .destroy = rec_destroy,
};

static struct recorder *rec_new(int *destroyed)
{
    struct recorder *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->base.ops = &rec_ops;
    r->destroyed = destroyed;
    return r;
}

struct outcome {
    int calls;
    int status;
    char detail[128];
};

static void on_done(void *userdata, int status, const char *detail)
{
    struct outcome *o = userdata;
    o->calls++;
    o->status = status;
    snprintf(o->detail, sizeof(o->detail), "%s", detail != NULL ? detail : "");
}

static const uint8_t request[] = {0x0a, 0x00}; /* One empty ResourceSpans. */
static const struct otlp_counts counts = {.resources = 1, .scopes = 0, .items = 7};

static void test_routes_by_signal(void **state)
{
    (void)state;
    int destroyed = 0;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new(&p), 0);
    struct recorder *traces = rec_new(&destroyed);
    struct recorder *logs = rec_new(&destroyed);
    assert_int_equal(pipeline_add_exporter(p, OTLP_TRACES, &traces->base), 0);
    assert_int_equal(pipeline_add_exporter(p, OTLP_LOGS, &logs->base), 0);

    struct outcome o = {0};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 0);
    assert_int_equal(traces->calls[OTLP_TRACES], 1);
    assert_int_equal(traces->last_len, sizeof(request));
    assert_int_equal(traces->last_items, 7);
    assert_int_equal(logs->calls[OTLP_TRACES], 0);

    o = (struct outcome){0};
    pipeline_submit(p, OTLP_LOGS, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(logs->calls[OTLP_LOGS], 1);
    assert_int_equal(traces->calls[OTLP_LOGS], 0);

    /* A signal with no exporter is accepted (and dropped), not left unanswered. */
    o = (struct outcome){0};
    pipeline_submit(p, OTLP_METRICS, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 0);
    assert_int_equal(traces->calls[OTLP_METRICS] + logs->calls[OTLP_METRICS], 0);

    pipeline_free(p);
    assert_int_equal(destroyed, 2);
}

static void test_refcounts(void **state)
{
    (void)state;
    int destroyed = 0;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new(&p), 0);
    struct recorder *shared = rec_new(&destroyed);
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        assert_int_equal(pipeline_add_exporter(p, (enum otlp_signal)s, &shared->base), 0);
    }
    assert_int_equal(shared->base.refs, 3);
    /* Attaching again to the same signal is a no-op: no second copy, no extra reference. */
    assert_int_equal(pipeline_add_exporter(p, OTLP_TRACES, &shared->base), 0);
    assert_int_equal(shared->base.refs, 3);

    struct outcome o = {0};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(shared->calls[OTLP_TRACES], 1);

    /* Flushed once, although attached three times. */
    pipeline_flush(p);
    assert_int_equal(shared->flushes, 1);

    /* Freed exactly once, when the last reference goes. */
    pipeline_free(p);
    assert_int_equal(destroyed, 1);

    /* Two pipelines sharing one exporter: the second free destroys it. */
    destroyed = 0;
    struct pipeline *a = NULL, *b = NULL;
    assert_int_equal(pipeline_new(&a), 0);
    assert_int_equal(pipeline_new(&b), 0);
    struct recorder *r = rec_new(&destroyed);
    assert_int_equal(pipeline_add_exporter(a, OTLP_LOGS, &r->base), 0);
    assert_int_equal(pipeline_add_exporter(b, OTLP_LOGS, &r->base), 0);
    pipeline_free(a);
    assert_int_equal(destroyed, 0);
    assert_int_equal(r->base.refs, 1);
    pipeline_free(b);
    assert_int_equal(destroyed, 1);

    pipeline_free(NULL);
}

static void test_failure_propagates(void **state)
{
    (void)state;
    int destroyed = 0;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new(&p), 0);
    struct recorder *bad = rec_new(&destroyed);
    struct recorder *good = rec_new(&destroyed);
    bad->fail_with = DLOTEL_ERR_IO;
    assert_int_equal(pipeline_add_exporter(p, OTLP_METRICS, &bad->base), 0);
    assert_int_equal(pipeline_add_exporter(p, OTLP_METRICS, &good->base), 0);

    struct outcome o = {0};
    pipeline_submit(p, OTLP_METRICS, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, DLOTEL_ERR_IO);
    /* The detail names the exporter and the error, for the client's error message. */
    assert_non_null(strstr(o.detail, "recorder"));
    assert_non_null(strstr(o.detail, dlotel_strerror(DLOTEL_ERR_IO)));
    /* One failing exporter does not keep the request from the others. */
    assert_int_equal(good->calls[OTLP_METRICS], 1);

    /* Once the exporter recovers, requests succeed again. */
    bad->fail_with = 0;
    o = (struct outcome){0};
    pipeline_submit(p, OTLP_METRICS, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.status, 0);
    assert_int_equal(o.detail[0], '\0');

    /* The first failure is the one reported. */
    bad->fail_with = DLOTEL_ERR_TOO_LARGE;
    good->fail_with = DLOTEL_ERR_IO;
    o = (struct outcome){0};
    pipeline_submit(p, OTLP_METRICS, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, DLOTEL_ERR_TOO_LARGE);

    pipeline_free(p);
    assert_int_equal(destroyed, 2);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    int destroyed = 0;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new(&p), 0);
    struct recorder *r = rec_new(&destroyed);
    assert_int_equal(pipeline_add_exporter(p, (enum otlp_signal)7, &r->base),
                     DLOTEL_ERR_INVALID_ARG);
    assert_int_equal(r->base.refs, 0);
    struct outcome o = {0};
    pipeline_submit(p, (enum otlp_signal)7, request, sizeof(request), &counts, on_done, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, DLOTEL_ERR_INVALID_ARG);
    pipeline_free(p);
    r->base.ops->destroy(&r->base);
    assert_int_equal(destroyed, 1);
}

/* ---- the forwarding pipeline on a real loop --------------------------------------------------
 *
 * A scripted upstream exporter stands in for otlp_http/otlp_grpc: it implements the |send| op of
 * exporter.h, which is the pipeline's whole contract with them. Each send records what it got
 * and when, then answers from a uv timer as its script says: OK, RETRY (with retry_after),
 * PERMANENT, PARTIAL (rejected items), or HOLD (no answer until the test completes it, or never:
 * a stalled upstream).
 */

#define KIB       1024u
#define MIB       (1024u * 1024u)
#define MS        ((uint64_t)1000000)
#define SEC       ((uint64_t)1000000000)
#define UNLIMITED ((size_t)1 << 40) /* core/buf.c computes max + 1: never SIZE_MAX. */

enum step { STEP_OK, STEP_RETRY, STEP_PERMANENT, STEP_PARTIAL, STEP_HOLD };

struct script;

struct pending {
    uv_timer_t timer;
    struct script *x;
    export_done_fn done;
    void *userdata;
    struct export_result r;
    struct pending *prev, *next; /* In x->live. */
    size_t index;                /* Which send. */
};

struct sent {
    uint64_t at_ns; /* uv_hrtime() when send() was called. */
    uint8_t *data;
    size_t len;
    uint64_t items;
    struct pending *pend; /* Until answered. */
};

struct script {
    struct exporter base;
    uv_loop_t *loop;
    enum step steps[64];
    size_t nsteps;
    enum step dflt;
    uint64_t retry_after_ns;
    uint64_t rejected;
    unsigned latency_ms;
    struct sent *sent;
    size_t nsent;
    size_t capsent;
    size_t answered;
    struct pending *live;
    int *destroyed;
};

static void pending_closed(uv_handle_t *h)
{
    free(h->data);
}

static void pending_unlink(struct pending *pd)
{
    struct script *x = pd->x;
    if (pd->prev != NULL) {
        pd->prev->next = pd->next;
    } else {
        x->live = pd->next;
    }
    if (pd->next != NULL) {
        pd->next->prev = pd->prev;
    }
    x->sent[pd->index].pend = NULL;
}

static void on_answer(uv_timer_t *t)
{
    struct pending *pd = t->data;
    struct script *x = pd->x;
    pending_unlink(pd);
    x->answered++;
    uv_close((uv_handle_t *)&pd->timer, pending_closed);
    pd->done(pd->userdata, &pd->r);
}

static void fill_result(struct script *x, struct export_result *r, enum step st)
{
    memset(r, 0, sizeof(*r));
    r->grpc_status = -1;
    switch (st) {
    case STEP_RETRY:
        r->outcome = EXPORT_RETRY;
        r->retry_after_ns = x->retry_after_ns;
        r->http_status = 503;
        snprintf(r->message, sizeof(r->message), "upstream unavailable");
        break;
    case STEP_PERMANENT:
        r->outcome = EXPORT_PERMANENT;
        r->http_status = 400;
        snprintf(r->message, sizeof(r->message), "bad request: field x is wrong");
        break;
    case STEP_PARTIAL:
        r->outcome = EXPORT_OK;
        r->http_status = 200;
        r->rejected_items = x->rejected;
        snprintf(r->message, sizeof(r->message), "some items rejected");
        break;
    default:
        r->outcome = EXPORT_OK;
        r->http_status = 200;
        break;
    }
}

static int script_send(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                       uint64_t items, export_done_fn done, void *userdata)
{
    (void)s;
    struct script *x = (struct script *)e;
    if (x->nsent == x->capsent) {
        x->capsent = x->capsent == 0 ? 64 : x->capsent * 2;
        x->sent = realloc(x->sent, x->capsent * sizeof(*x->sent));
        assert_non_null(x->sent);
    }
    struct sent *se = &x->sent[x->nsent];
    se->at_ns = uv_hrtime();
    se->data = malloc(len + 1);
    assert_non_null(se->data);
    memcpy(se->data, pb, len);
    se->len = len;
    se->items = items;
    enum step st = x->nsent < x->nsteps ? x->steps[x->nsent] : x->dflt;

    struct pending *pd = calloc(1, sizeof(*pd));
    assert_non_null(pd);
    uv_timer_init(x->loop, &pd->timer);
    pd->timer.data = pd;
    pd->x = x;
    pd->done = done;
    pd->userdata = userdata;
    pd->index = x->nsent;
    fill_result(x, &pd->r, st);
    pd->next = x->live;
    if (x->live != NULL) {
        x->live->prev = pd;
    }
    x->live = pd;
    se->pend = pd;
    x->nsent++;
    if (st != STEP_HOLD) {
        uv_timer_start(&pd->timer, on_answer, x->latency_ms, 0);
    }
    return 0;
}

/* Answers held send |i| with |st|, from a timer as a real exporter would. */
static void script_complete(struct script *x, size_t i, enum step st)
{
    assert_true(i < x->nsent);
    struct pending *pd = x->sent[i].pend;
    assert_non_null(pd);
    fill_result(x, &pd->r, st);
    uv_timer_start(&pd->timer, on_answer, 0, 0);
}

/*
 * Destroy answers what is still pending, as the contract asks (every send is answered once),
 * with a retryable failure: the pipeline is going away and must neither commit nor count it.
 */
static void script_destroy(struct exporter *e)
{
    struct script *x = (struct script *)e;
    while (x->live != NULL) {
        struct pending *pd = x->live;
        pending_unlink(pd);
        fill_result(x, &pd->r, STEP_RETRY);
        snprintf(pd->r.message, sizeof(pd->r.message), "exporter destroyed");
        pd->done(pd->userdata, &pd->r);
        uv_close((uv_handle_t *)&pd->timer, pending_closed);
    }
    for (size_t i = 0; i < x->nsent; i++) {
        free(x->sent[i].data);
    }
    free(x->sent);
    if (x->destroyed != NULL) {
        (*x->destroyed)++;
    }
    free(x);
}

static const struct exporter_ops script_ops = {
    .kind = "script",
    .send = script_send,
    .destroy = script_destroy,
};

static struct script *script_new(uv_loop_t *loop, enum step dflt)
{
    struct script *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    x->base.ops = &script_ops;
    x->loop = loop;
    x->dflt = dflt;
    return x;
}

static uint64_t sent_items(const struct script *x)
{
    uint64_t n = 0;
    for (size_t i = 0; i < x->nsent; i++) {
        n += x->sent[i].items;
    }
    return n;
}

/* ---- loop helpers ---------------------------------------------------------------------------- */

static void tick(uv_timer_t *t)
{
    (void)t;
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until |pred| holds or |timeout_ms| passed; a 1 ms ticker keeps it turning. */
static bool run_until(uv_loop_t *loop, pred_fn pred, void *arg, uint64_t timeout_ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 1, 1);
    uint64_t deadline = uv_hrtime() + timeout_ms * MS;
    bool ok;
    while (!(ok = pred(arg)) && uv_hrtime() < deadline) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
    run_until(loop, never, NULL, ms);
}

struct want_sends {
    struct script *x;
    size_t n;
};

static bool has_sends(void *arg)
{
    struct want_sends *w = arg;
    return w->x->nsent >= w->n;
}

static bool has_answers(void *arg)
{
    struct want_sends *w = arg;
    return w->x->answered >= w->n;
}

static void wait_sends(uv_loop_t *loop, struct script *x, size_t n, uint64_t timeout_ms)
{
    struct want_sends w = {x, n};
    if (!run_until(loop, has_sends, &w, timeout_ms)) {
        fail_msg("%zu sends after %llu ms, wanted %zu", x->nsent, (unsigned long long)timeout_ms,
                 n);
    }
}

static void wait_answers(uv_loop_t *loop, struct script *x, size_t n, uint64_t timeout_ms)
{
    struct want_sends w = {x, n};
    if (!run_until(loop, has_answers, &w, timeout_ms)) {
        fail_msg("%zu answers after %llu ms, wanted %zu", x->answered,
                 (unsigned long long)timeout_ms, n);
    }
}

static void loop_finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- requests -------------------------------------------------------------------------------- */

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

/*
 * A valid ExportTraceServiceRequest: one resource, one scope, |n| spans named after |first|..,
 * each with a string attribute of |pad| bytes.
 */
static void make_traces(struct buf *out, unsigned first, unsigned n, size_t pad)
{
    struct buf spans, span, tmp;
    buf_init(&spans, UNLIMITED);
    buf_init(&span, UNLIMITED);
    buf_init(&tmp, UNLIMITED);
    char *val = malloc(pad + 1);
    assert_non_null(val);
    memset(val, 'x', pad);
    for (unsigned i = first; i < first + n; i++) {
        uint8_t tid[16], sid[8];
        memset(tid, (int)(i % 250 + 1), sizeof(tid));
        memset(sid, (int)(i % 240 + 3), sizeof(sid));
        put_len(&span, 1, tid, sizeof(tid));
        put_len(&span, 2, sid, sizeof(sid));
        char name[32];
        int nl = snprintf(name, sizeof(name), "span-%u", i);
        put_len(&span, 5, name, (size_t)nl);
        if (pad > 0) {
            /* KeyValue{key, AnyValue{string_value}} */
            struct buf any, kv;
            buf_init(&any, UNLIMITED);
            buf_init(&kv, UNLIMITED);
            put_len(&any, 1, val, pad);
            put_len(&kv, 1, "pad", 3);
            put_len(&kv, 2, any.data, any.len);
            put_len(&span, 9, kv.data, kv.len);
            buf_cleanup(&any);
            buf_cleanup(&kv);
        }
        put_len(&spans, 2, span.data, span.len);
        buf_reset(&span);
    }
    put_len(&tmp, 1,
            "\x0a\x07"
            "library",
            9); /* scope {name: "library"} */
    assert_int_equal(buf_append(&tmp, spans.data, spans.len), 0);
    struct buf rs;
    buf_init(&rs, UNLIMITED);
    put_len(&rs, 2, tmp.data, tmp.len);
    put_len(out, 1, rs.data, rs.len);
    free(val);
    buf_cleanup(&spans);
    buf_cleanup(&span);
    buf_cleanup(&tmp);
    buf_cleanup(&rs);
}

struct answer {
    int calls;
    int status;
    char detail[192];
};

static void on_answer_done(void *userdata, int status, const char *detail)
{
    struct answer *a = userdata;
    a->calls++;
    a->status = status;
    snprintf(a->detail, sizeof(a->detail), "%s", detail != NULL ? detail : "");
}

/* Submits a request; returns its status (the answer must come synchronously). */
static int submit_buf(struct pipeline *p, const struct buf *req)
{
    struct otlp_counts c;
    assert_int_equal(otlp_scan(OTLP_TRACES, req->data, req->len, &c, NULL), 0);
    struct answer a = {0};
    pipeline_submit(p, OTLP_TRACES, req->data, req->len, &c, on_answer_done, &a);
    assert_int_equal(a.calls, 1);
    return a.status;
}

/* Submits request |i| (|n| spans) and appends its bytes to |all| (when not NULL). */
static void submit_traces(struct pipeline *p, unsigned i, unsigned n, size_t pad, struct buf *all)
{
    struct buf req;
    buf_init(&req, UNLIMITED);
    make_traces(&req, i * 1000, n, pad);
    assert_int_equal(submit_buf(p, &req), 0);
    if (all != NULL) {
        assert_int_equal(buf_append(all, req.data, req.len), 0);
    }
    buf_cleanup(&req);
}

/* The bytes of every send of |x| from |from| on, concatenated, equal |want|. */
static void assert_sent_equal(const struct script *x, size_t from, const struct buf *want)
{
    struct buf got;
    buf_init(&got, UNLIMITED);
    for (size_t i = from; i < x->nsent; i++) {
        assert_int_equal(buf_append(&got, x->sent[i].data, x->sent[i].len), 0);
    }
    assert_int_equal(got.len, want->len);
    assert_memory_equal(got.data, want->data, want->len);
    buf_cleanup(&got);
}

static struct pipeline_stats stats_of(struct pipeline *p, size_t i)
{
    struct pipeline_stats st[8];
    assert_true(pipeline_get_stats(p, st, 8) > i);
    return st[i];
}

struct tmpdir {
    char path[64];
};

static void tmpdir_make(struct tmpdir *t)
{
    snprintf(t->path, sizeof(t->path), "/tmp/dlotel-test-pipeline-XXXXXX");
    assert_non_null(mkdtemp(t->path));
}

static void tmpdir_remove(struct tmpdir *t)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->path);
    assert_int_equal(system(cmd), 0);
}

static struct pipeline *new_pipeline(uv_loop_t *loop, uint64_t items, uint64_t bytes,
                                     uint64_t timeout_ns)
{
    struct pipeline_options o;
    pipeline_options_init(&o);
    o.batch_max_items = items;
    o.batch_max_bytes = bytes;
    o.batch_timeout_ns = timeout_ns;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new_on_loop(&p, loop, &o), 0);
    return p;
}

static struct pipeline_exporter_options xopts(const char *name, const char *disk_dir)
{
    struct pipeline_exporter_options o;
    pipeline_exporter_options_init(&o);
    /* One in flight is the default (in-order delivery); two exercise the in-order commit. */
    assert_int_equal(o.max_in_flight, 1);
    o.max_in_flight = 2;
    o.name = name;
    o.retry.initial_interval_ns = 10 * MS;
    o.retry.max_interval_ns = 50 * MS;
    if (disk_dir != NULL) {
        o.disk_queue.enabled = true;
        o.disk_queue.path = disk_dir;
        o.disk_queue.fsync = PIPELINE_FSYNC_NEVER;
    }
    return o;
}

/* ---- batching ------------------------------------------------------------------------------- */

/* Full by items: sent at once, not after the timeout. Flush seals a partial batch now. */
static void test_batch_by_items_and_flush(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 10, 4 * MIB, 10 * SEC);
    struct script *x = script_new(&loop, STEP_OK);
    struct pipeline_exporter_options o = xopts("up", NULL);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);

    struct buf all;
    buf_init(&all, UNLIMITED);
    for (unsigned i = 0; i < 3; i++) {
        submit_traces(p, i, 3, 10, &all);
    }
    assert_int_equal(x->nsent, 0); /* 9 items: not full, the timeout is 10 s. */
    submit_traces(p, 3, 3, 10, &all);
    assert_int_equal(x->nsent, 1); /* 12 items: sent from within the submit. */
    assert_int_equal(x->sent[0].items, 12);
    assert_sent_equal(x, 0, &all);
    wait_answers(&loop, x, 1, 1000);

    buf_reset(&all);
    submit_traces(p, 4, 2, 0, &all);
    submit_traces(p, 5, 2, 0, &all);
    assert_int_equal(x->nsent, 1);
    pipeline_flush(p);
    assert_int_equal(x->nsent, 2);
    assert_int_equal(x->sent[1].items, 4);
    assert_sent_equal(x, 1, &all);
    wait_answers(&loop, x, 2, 1000);

    struct pipeline_stats st = stats_of(p, 0);
    assert_string_equal(st.exporter, "up");
    assert_string_equal(st.kind, "script");
    assert_true(st.queued);
    assert_false(st.disk);
    assert_int_equal(st.sent_items, 16);
    assert_int_equal(st.sent_batches, 2);
    assert_int_equal(st.dropped_items, 0);
    assert_int_equal(st.queue_items, 0);
    assert_int_equal(st.in_flight_batches, 0);
    assert_true(st.last_success_unix_nano > 0);
    struct pipeline_totals tot;
    pipeline_get_totals(p, &tot);
    assert_int_equal(tot.accepted_requests, 6);
    assert_int_equal(tot.accepted_items, 16);
    assert_int_equal(tot.memory_bytes, 0);
    buf_cleanup(&all);
    pipeline_free(p);
    loop_finish(&loop);
}

/* Full by bytes: whole requests, greedily, never past max_bytes, in order. */
static void test_batch_by_bytes(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 100000, 4 * KIB, 10 * SEC);
    struct script *x = script_new(&loop, STEP_OK);
    struct pipeline_exporter_options o = xopts("up", NULL);
    o.max_in_flight = 100;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    struct buf all;
    buf_init(&all, UNLIMITED);
    size_t lens[40];
    for (unsigned i = 0; i < 40; i++) {
        size_t before = all.len;
        submit_traces(p, i, 1, 500 + (i * 37) % 700, &all);
        lens[i] = all.len - before;
    }
    pipeline_flush(p);
    wait_answers(&loop, x, x->nsent, 1000);
    assert_sent_equal(x, 0, &all);
    size_t k = 0;
    for (size_t i = 0; i < x->nsent; i++) {
        assert_true(x->sent[i].len <= 4 * KIB);
        size_t sum = 0;
        while (sum < x->sent[i].len) {
            sum += lens[k++];
        }
        assert_int_equal(sum, x->sent[i].len); /* Whole requests only. */
        if (i + 1 < x->nsent) {
            assert_true(sum + lens[k] > 4 * KIB); /* The next one did not fit. */
        }
    }
    assert_int_equal(k, 40);
    buf_cleanup(&all);
    pipeline_free(p);
    loop_finish(&loop);
}

/*
 * By time: a lone request is sent after about one timeout, measured on the clock; a request
 * arriving later joins the batch without pushing its deadline back.
 */
static void test_batch_by_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 100 * MS);
    struct script *x = script_new(&loop, STEP_OK);
    struct pipeline_exporter_options o = xopts("up", NULL);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);

    uv_update_time(&loop);
    uint64_t t0 = uv_hrtime();
    submit_traces(p, 0, 1, 0, NULL);
    wait_sends(&loop, x, 1, 2000);
    uint64_t waited = (x->sent[0].at_ns - t0) / MS;
    assert_true(waited >= 90);
    assert_true(waited <= 400);

    uv_update_time(&loop);
    t0 = uv_hrtime();
    submit_traces(p, 1, 1, 0, NULL);
    run_for(&loop, 60);
    assert_int_equal(x->nsent, 1);
    submit_traces(p, 2, 1, 0, NULL);
    wait_sends(&loop, x, 2, 2000);
    waited = (x->sent[1].at_ns - t0) / MS;
    assert_int_equal(x->sent[1].items, 2);
    assert_true(waited >= 90);
    assert_true(waited < 155); /* Not 60 + 100: the batch waits one timeout from its first. */
    pipeline_free(p);
    loop_finish(&loop);
}

/* Requests over max_bytes are split (memory: at submit, disk: when read back). */
static void test_split_large_requests(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 100000, 64 * KIB, 10 * MS);
    struct script *mem = script_new(&loop, STEP_OK);
    struct script *disk = script_new(&loop, STEP_OK);
    struct pipeline_exporter_options om = xopts("mem", NULL), od = xopts("disk", t.path);
    om.max_in_flight = od.max_in_flight = 50;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &mem->base, &om), 0);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &disk->base, &od), 0);

    struct buf req;
    buf_init(&req, UNLIMITED);
    make_traces(&req, 0, 3000, 80); /* About 400 KiB. */
    assert_true(req.len > 5 * 64 * KIB);
    assert_int_equal(submit_buf(p, &req), 0);
    /* And one span larger than a batch: sent alone, counted. */
    struct buf big;
    buf_init(&big, UNLIMITED);
    make_traces(&big, 5000, 1, 100 * KIB);
    assert_int_equal(submit_buf(p, &big), 0);

    struct script *xs[2] = {mem, disk};
    for (int k = 0; k < 2; k++) {
        struct script *x = xs[k];
        run_for(&loop, 100);
        wait_answers(&loop, x, x->nsent, 2000);
        uint64_t items = 0;
        size_t over = 0;
        for (size_t i = 0; i < x->nsent; i++) {
            struct otlp_counts c;
            assert_int_equal(otlp_scan(OTLP_TRACES, x->sent[i].data, x->sent[i].len, &c, NULL), 0);
            assert_int_equal(c.items, x->sent[i].items);
            items += c.items;
            if (x->sent[i].len > 64 * KIB) {
                assert_int_equal(c.items, 1);
                over++;
            }
        }
        assert_int_equal(items, 3001);
        assert_int_equal(over, 1);
        assert_true(x->nsent >= 7);
        struct pipeline_stats st = stats_of(p, (size_t)k);
        assert_int_equal(st.sent_items, 3001);
        assert_int_equal(st.oversized_batches, 1);
    }
    struct pipeline_totals tot;
    pipeline_get_totals(p, &tot);
    /* Split at submit: the memory queue's 400 KiB request (the disk queue splits when reading). */
    assert_int_equal(tot.split_requests, 1);
    buf_cleanup(&req);
    buf_cleanup(&big);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

/* ---- retry ---------------------------------------------------------------------------------- */

static void test_backoff_bounds(void **state)
{
    (void)state;
    uint64_t initial = 100 * MS, max = 1 * SEC;
    uint64_t rnd = 12345;
    double iv = (double)initial;
    for (unsigned attempt = 1; attempt <= 12; attempt++) {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t b = pipeline_backoff_ns(initial, max, attempt, rnd);
            lo = b < lo ? b : lo;
            hi = b > hi ? b : hi;
        }
        /* +-50% around the interval, and the jitter really spreads over that range. */
        assert_true((double)lo >= iv * 0.5 - 1);
        assert_true((double)hi < iv * 1.5 + 1);
        assert_true((double)lo < iv * 0.55);
        assert_true((double)hi > iv * 1.45);
        iv = iv * 1.5 > (double)max ? (double)max : iv * 1.5;
    }
    assert_int_equal(pipeline_backoff_ns(initial, max, 1, 0), initial / 2);
    assert_int_equal(pipeline_backoff_ns(initial, max, 50, max - 1), max / 2 + max - 1);
    assert_int_equal(pipeline_backoff_ns(initial, max, 50, max), max / 2);
}

/* RETRY with retry_after: not sent again before it, then delivered, counted. */
static void test_retry_after_honoured(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 10 * MS);
    struct script *x = script_new(&loop, STEP_OK);
    x->steps[0] = STEP_RETRY;
    x->nsteps = 1;
    x->retry_after_ns = 300 * MS;
    struct pipeline_exporter_options o = xopts("up", NULL);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    submit_traces(p, 0, 4, 0, NULL);
    wait_answers(&loop, x, 1, 1000);
    uint64_t failed_at = uv_hrtime();
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.retried_batches, 1);
    assert_int_equal(st.in_flight_batches, 1);
    assert_string_equal(st.last_error, "upstream unavailable");
    assert_true(st.last_error_unix_nano > 0);
    wait_sends(&loop, x, 2, 2000);
    assert_true(x->sent[1].at_ns - failed_at >= 295 * MS);
    assert_true(x->sent[1].at_ns - x->sent[0].at_ns < 700 * MS);
    assert_int_equal(x->sent[1].len, x->sent[0].len);
    assert_memory_equal(x->sent[1].data, x->sent[0].data, x->sent[0].len);
    wait_answers(&loop, x, 2, 1000);
    st = stats_of(p, 0);
    assert_int_equal(st.sent_items, 4);
    assert_int_equal(st.dropped_items, 0);
    assert_int_equal(st.in_flight_batches, 0);
    pipeline_free(p);
    loop_finish(&loop);
}

/* Backoff grows by 1.5 per attempt up to max_interval, jittered within +-50%. */
static void test_backoff_growth_on_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_OK);
    for (int i = 0; i < 5; i++) {
        x->steps[i] = STEP_RETRY;
    }
    x->nsteps = 5;
    struct pipeline_exporter_options o = xopts("up", NULL);
    o.retry.initial_interval_ns = 40 * MS;
    o.retry.max_interval_ns = 100 * MS;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    submit_traces(p, 0, 1, 0, NULL);
    wait_answers(&loop, x, 6, 5000);
    static const double iv[] = {40, 60, 90, 100, 100};
    for (int i = 0; i < 5; i++) {
        double gap = (double)(x->sent[i + 1].at_ns - x->sent[i].at_ns) / (double)MS;
        if (gap < iv[i] * 0.5 - 1 || gap > iv[i] * 1.5 + 40) {
            fail_msg("retry %d came after %.1f ms; interval %.0f ms", i + 1, gap, iv[i]);
        }
    }
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.retried_batches, 5);
    assert_int_equal(st.sent_batches, 1);
    pipeline_free(p);
    loop_finish(&loop);
}

static bool expired(void *arg)
{
    struct pipeline *p = arg;
    return stats_of(p, 0).dropped_expired_items > 0;
}

/* Memory queue: retry.max_elapsed_time gives up, drops and counts. */
static void test_max_elapsed_drops_memory(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_RETRY);
    struct pipeline_exporter_options o = xopts("up", NULL);
    o.retry.initial_interval_ns = 10 * MS;
    o.retry.max_interval_ns = 20 * MS;
    o.retry.max_elapsed_time_ns = 150 * MS;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    uint64_t t0 = uv_hrtime();
    submit_traces(p, 0, 7, 0, NULL);
    assert_true(run_until(&loop, expired, p, 2000));
    uint64_t took = (uv_hrtime() - t0) / MS;
    assert_true(took >= 100 && took < 1000);
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.dropped_expired_items, 7);
    assert_int_equal(st.dropped_items, 7);
    assert_int_equal(st.sent_items, 0);
    assert_true(st.retried_batches >= 4);
    assert_int_equal(st.in_flight_batches, 0);
    struct pipeline_totals tot;
    pipeline_get_totals(p, &tot);
    assert_int_equal(tot.memory_bytes, 0);
    pipeline_free(p);
    loop_finish(&loop);
}

/* Disk queue: the same settings never drop for time; delivered once the upstream is back. */
static void test_disk_never_drops_for_time(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_RETRY);
    struct pipeline_exporter_options o = xopts("up", t.path);
    o.retry.initial_interval_ns = 10 * MS;
    o.retry.max_interval_ns = 20 * MS;
    o.retry.max_elapsed_time_ns = 100 * MS;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    submit_traces(p, 0, 7, 0, NULL);
    run_for(&loop, 400);
    /* While backing off nothing else is sent: the outage spools to disk. */
    submit_traces(p, 1, 5, 0, NULL);
    run_for(&loop, 100);
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.dropped_items, 0);
    assert_true(st.retried_batches >= 8);
    assert_int_equal(st.in_flight_batches, 1);
    assert_int_equal(st.disk_items, 5);
    for (size_t i = 0; i < x->nsent; i++) {
        assert_int_equal(x->sent[i].items, 7);
    }
    x->dflt = STEP_OK;
    for (int i = 0; i < 200 && stats_of(p, 0).sent_items < 12; i++) {
        run_for(&loop, 10);
    }
    st = stats_of(p, 0);
    assert_int_equal(st.sent_items, 12);
    assert_int_equal(st.disk_items, 0);
    assert_int_equal(st.dropped_items, 0);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

/* PERMANENT: dropped and counted with the server's message; partial success counted. */
static void test_permanent_and_partial(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 1 * SEC);
    struct script *x = script_new(&loop, STEP_OK);
    x->steps[0] = STEP_PERMANENT;
    x->steps[1] = STEP_PARTIAL;
    x->nsteps = 2;
    x->rejected = 2;
    struct pipeline_exporter_options o = xopts("up", NULL);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    submit_traces(p, 0, 3, 0, NULL);
    pipeline_flush(p);
    wait_answers(&loop, x, 1, 1000);
    submit_traces(p, 1, 5, 0, NULL);
    pipeline_flush(p);
    wait_answers(&loop, x, 2, 1000);
    submit_traces(p, 2, 6, 0, NULL);
    pipeline_flush(p);
    wait_answers(&loop, x, 3, 1000);
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.failed_items, 3);
    assert_int_equal(st.failed_batches, 1);
    assert_int_equal(st.dropped_items, 3);
    assert_int_equal(st.retried_batches, 0);
    assert_int_equal(st.rejected_items, 2);
    assert_int_equal(st.sent_items, 11);
    assert_int_equal(st.sent_batches, 2);
    assert_non_null(strstr(st.last_error, "field x is wrong"));
    pipeline_free(p);
    loop_finish(&loop);
}

static bool other_got_all(void *arg)
{
    struct script *x = arg;
    return x->answered >= 20;
}

/* The case: an upstream that never answers does not hold back another exporter. */
static void test_stalled_exporter_does_not_delay_other(void **state)
{
    (void)state;
    for (int disk = 0; disk < 2; disk++) {
        struct tmpdir t;
        tmpdir_make(&t);
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct pipeline *p = new_pipeline(&loop, 5, 4 * MIB, 20 * MS);
        struct script *stalled = script_new(&loop, STEP_HOLD);
        struct script *fine = script_new(&loop, STEP_OK);
        fine->latency_ms = 2;
        struct pipeline_exporter_options os = xopts("stalled", disk ? t.path : NULL);
        struct pipeline_exporter_options of = xopts("fine", NULL);
        of.max_in_flight = 1;
        assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &stalled->base, &os), 0);
        assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &fine->base, &of), 0);
        uint64_t t0 = uv_hrtime();
        for (unsigned i = 0; i < 20; i++) {
            submit_traces(p, i, 5, 0, NULL);
            run_for(&loop, 5);
        }
        assert_true(run_until(&loop, other_got_all, fine, 2000));
        assert_true((uv_hrtime() - t0) / MS < 1500);
        assert_int_equal(sent_items(fine), 100);
        struct pipeline_stats ss = stats_of(p, 0), sf = stats_of(p, 1);
        assert_int_equal(sf.sent_items, 100);
        assert_int_equal(ss.sent_items, 0);
        assert_int_equal(ss.in_flight_batches, 2);
        assert_int_equal(stalled->nsent, 2);
        assert_int_equal(disk ? ss.disk_items : ss.queue_items, 90);
        pipeline_free(p);
        loop_finish(&loop);
        tmpdir_remove(&t);
    }
}

/* ---- disk queue through the pipeline -------------------------------------------------------- */

/*
 * In-order commit: with three batches in flight, the third finishing first does not move the
 * committed cursor past the unfinished second. After a restart exactly the uncommitted batches
 * (the second and the third) are sent again, and not the first.
 */
static void test_in_order_commit_and_restart(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 1, 4 * MIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_HOLD);
    struct pipeline_exporter_options o = xopts("up", t.path);
    o.max_in_flight = 3;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    struct buf r[3];
    for (unsigned i = 0; i < 3; i++) {
        buf_init(&r[i], UNLIMITED);
        submit_traces(p, i, 1, 0, &r[i]);
    }
    wait_sends(&loop, x, 3, 1000);
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(x->sent[i].len, r[i].len);
        assert_memory_equal(x->sent[i].data, r[i].data, r[i].len);
    }
    script_complete(x, 0, STEP_OK);
    script_complete(x, 2, STEP_OK);
    wait_answers(&loop, x, 2, 1000);
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.sent_batches, 2);
    assert_int_equal(st.in_flight_batches, 1);
    /* Stop with the second still unanswered (the exporter is destroyed without answering). */
    pipeline_free(p);
    run_for(&loop, 5);

    p = new_pipeline(&loop, 100, 4 * MIB, 1 * MS);
    struct script *y = script_new(&loop, STEP_OK);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &y->base, &o), 0);
    wait_answers(&loop, y, 1, 1000);
    run_for(&loop, 50);
    struct buf want;
    buf_init(&want, UNLIMITED);
    assert_int_equal(buf_append(&want, r[1].data, r[1].len), 0);
    assert_int_equal(buf_append(&want, r[2].data, r[2].len), 0);
    assert_sent_equal(y, 0, &want);
    st = stats_of(p, 0);
    assert_int_equal(st.sent_items, 2);
    assert_int_equal(st.disk_items, 0);
    pipeline_free(p);
    loop_finish(&loop);
    for (int i = 0; i < 3; i++) {
        buf_cleanup(&r[i]);
    }
    buf_cleanup(&want);
    tmpdir_remove(&t);
}

/*
 * An upstream outage: batches spool to disk, the pipeline is freed mid-backlog (a restart), and
 * the next one sends every unsent request, in order, once the upstream is back.
 */
static void test_restart_resends_backlog_in_order(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 1, 4 * MIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_HOLD);
    struct pipeline_exporter_options o = xopts("up", t.path);
    o.disk_queue.segment_bytes = 4 * KIB; /* The backlog spans several segments. */
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    struct buf all;
    buf_init(&all, UNLIMITED);
    for (unsigned i = 0; i < 30; i++) {
        submit_traces(p, i, 2, 200, &all);
    }
    run_for(&loop, 30);
    assert_int_equal(x->nsent, 2);
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.disk_items, 56);
    assert_true(st.disk_bytes >= all.len);
    pipeline_free(p);
    run_for(&loop, 5);

    p = new_pipeline(&loop, 8192, 16 * KIB, 1 * MS);
    struct script *y = script_new(&loop, STEP_OK);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &y->base, &o), 0);
    for (int i = 0; i < 200 && sent_items(y) < 60; i++) {
        run_for(&loop, 5);
    }
    run_for(&loop, 20);
    assert_sent_equal(y, 0, &all);
    for (size_t i = 0; i < y->nsent; i++) {
        assert_true(y->sent[i].len <= 16 * KIB);
    }
    st = stats_of(p, 0);
    assert_int_equal(st.sent_items, 60);
    assert_int_equal(st.disk_items, 0);
    buf_cleanup(&all);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

/* A backlog far larger than memory_queue_max_bytes is held on disk, not in memory. */
static void test_backlog_held_on_disk(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 64 * KIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_HOLD);
    struct pipeline_exporter_options o = xopts("up", t.path);
    o.memory_queue_max_bytes = 64 * KIB;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    struct buf req;
    buf_init(&req, UNLIMITED);
    make_traces(&req, 0, 10, 1000);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(submit_buf(p, &req), 0);
    }
    run_for(&loop, 20);
    struct pipeline_stats st = stats_of(p, 0);
    assert_true(300 * req.len > 40 * o.memory_queue_max_bytes);
    assert_int_equal(st.refused_requests, 0);
    assert_int_equal(st.queue_bytes, 0);
    assert_int_equal(st.in_flight_batches, 2);
    assert_true(st.in_flight_bytes <= 2 * 64 * KIB);
    assert_int_equal(st.disk_items + sent_items(x), 3000);
    assert_true(st.disk_bytes >= 300 * req.len);
    struct pipeline_totals tot;
    pipeline_get_totals(p, &tot);
    assert_int_equal(tot.memory_bytes, 0);
    buf_cleanup(&req);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

struct drained {
    int calls;
    int status;
    uint64_t at_ns;
};

static void on_drained(void *userdata, int status)
{
    struct drained *d = userdata;
    d->calls++;
    d->status = status;
    d->at_ns = uv_hrtime();
}

static bool drain_done(void *arg)
{
    return ((struct drained *)arg)->calls > 0;
}

/* pipeline_drain: finishes as soon as everything is delivered; then refuses new requests. */
static void test_drain_empties_queues(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 10 * SEC);
    struct script *a = script_new(&loop, STEP_OK), *b = script_new(&loop, STEP_OK);
    a->latency_ms = b->latency_ms = 20;
    struct pipeline_exporter_options oa = xopts("a", NULL), ob = xopts("b", t.path);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &a->base, &oa), 0);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &b->base, &ob), 0);
    for (unsigned i = 0; i < 5; i++) {
        submit_traces(p, i, 3, 0, NULL);
    }
    struct drained d = {0};
    uint64_t t0 = uv_hrtime();
    assert_int_equal(pipeline_drain(p, 5 * SEC, on_drained, &d), 0);
    assert_int_equal(pipeline_drain(p, 5 * SEC, on_drained, &d), DLOTEL_ERR_CLOSED);
    assert_true(run_until(&loop, drain_done, &d, 3000));
    assert_int_equal(d.status, 0);
    assert_true((d.at_ns - t0) / MS < 1000);
    assert_int_equal(stats_of(p, 0).sent_items, 15);
    assert_int_equal(stats_of(p, 1).sent_items, 15);
    struct buf req;
    buf_init(&req, UNLIMITED);
    make_traces(&req, 0, 1, 0);
    assert_int_equal(submit_buf(p, &req), DLOTEL_ERR_CLOSED);
    buf_cleanup(&req);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

/*
 * Drain against a stalled upstream: at the timeout what is on disk stays for the next start
 * (which sends all of it), what is only in memory is dropped and counted.
 */
static void test_drain_timeout(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 1, 4 * MIB, 10 * SEC);
    struct script *m = script_new(&loop, STEP_HOLD), *dk = script_new(&loop, STEP_HOLD);
    struct pipeline_exporter_options om = xopts("mem", NULL), od = xopts("disk", t.path);
    om.max_in_flight = od.max_in_flight = 1;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &m->base, &om), 0);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &dk->base, &od), 0);
    struct buf all;
    buf_init(&all, UNLIMITED);
    for (unsigned i = 0; i < 5; i++) {
        submit_traces(p, i, 1, 0, &all);
    }
    struct drained d = {0};
    uint64_t t0 = uv_hrtime();
    assert_int_equal(pipeline_drain(p, 200 * MS, on_drained, &d), 0);
    /* Nothing else keeps the loop alive: the drain does, until it is over. */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, DLOTEL_ERR_TIMEOUT);
    uint64_t took = (d.at_ns - t0) / MS;
    assert_true(took >= 190 && took < 800);
    struct pipeline_stats sm = stats_of(p, 0), sd = stats_of(p, 1);
    assert_int_equal(sm.dropped_shutdown_items, 4); /* One is still in flight. */
    assert_int_equal(sm.queue_items, 0);
    assert_int_equal(sd.dropped_items, 0);
    assert_int_equal(sd.disk_items, 4);
    pipeline_free(p);
    run_for(&loop, 5);

    p = new_pipeline(&loop, 8192, 4 * MIB, 1 * MS);
    struct script *y = script_new(&loop, STEP_OK);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &y->base, &od), 0);
    wait_answers(&loop, y, 1, 1000);
    run_for(&loop, 20);
    assert_sent_equal(y, 0, &all); /* The one in flight at the stop too. */
    pipeline_free(p);
    loop_finish(&loop);
    buf_cleanup(&all);
    tmpdir_remove(&t);
}

struct answers {
    int calls;
    int status;
};

static void on_counted(void *userdata, int status, const char *detail)
{
    (void)detail;
    struct answers *a = userdata;
    a->calls++;
    if (status != 0) {
        a->status = status;
    }
}

static bool all_answered(void *arg)
{
    return ((struct answers *)arg)->calls == 8;
}

/* fsync=always: clients are answered after the fdatasync; one per loop iteration for all. */
static void test_group_commit(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 10 * SEC);
    struct script *x = script_new(&loop, STEP_OK);
    struct pipeline_exporter_options o = xopts("up", t.path);
    o.disk_queue.fsync = PIPELINE_FSYNC_ALWAYS;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    struct buf req;
    buf_init(&req, UNLIMITED);
    make_traces(&req, 0, 2, 0);
    struct otlp_counts c = {1, 1, 2};
    struct answers a = {0};
    for (int i = 0; i < 8; i++) {
        pipeline_submit(p, OTLP_TRACES, req.data, req.len, &c, on_counted, &a);
    }
    assert_int_equal(a.calls, 0); /* Not before the data is durable. */
    assert_true(run_until(&loop, all_answered, &a, 1000));
    assert_int_equal(a.status, 0);
    struct pipeline_stats st = stats_of(p, 0);
    assert_int_equal(st.disk_syncs, 1);
    assert_int_equal(st.disk_items, 16);
    buf_cleanup(&req);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

/* Synchronous exporters are counted too; exporters with send need a loop. */
static void test_sync_counters_and_args(void **state)
{
    (void)state;
    int destroyed = 0;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new(&p), 0);
    struct recorder *r = rec_new(&destroyed);
    assert_int_equal(pipeline_add_exporter(p, OTLP_LOGS, &r->base), 0);
    struct outcome o = {0};
    pipeline_submit(p, OTLP_LOGS, request, sizeof(request), &counts, on_done, &o);
    r->fail_with = DLOTEL_ERR_IO;
    pipeline_submit(p, OTLP_LOGS, request, sizeof(request), &counts, on_done, &o);
    struct pipeline_stats st;
    assert_int_equal(pipeline_get_stats(p, &st, 1), 1);
    assert_false(st.queued);
    assert_int_equal(st.sent_items, 7);
    assert_int_equal(st.failed_items, 7);
    assert_int_equal(st.failed_batches, 1);
    assert_string_equal(st.last_error, dlotel_strerror(DLOTEL_ERR_IO));

    uv_loop_t loop;
    uv_loop_init(&loop);
    struct script *x = script_new(&loop, STEP_OK);
    x->destroyed = &destroyed;
    assert_int_equal(pipeline_add_exporter(p, OTLP_LOGS, &x->base), DLOTEL_ERR_INVALID_ARG);
    struct pipeline_exporter_options eo;
    pipeline_exporter_options_init(&eo);
    eo.disk_queue.enabled = true; /* Without a path. */
    struct pipeline *q = new_pipeline(&loop, 10, 1000, 1 * MS);
    assert_int_equal(pipeline_add_exporter_opts(q, OTLP_LOGS, &x->base, &eo),
                     DLOTEL_ERR_INVALID_ARG);
    assert_int_equal(x->base.refs, 0);
    assert_int_equal(pipeline_retry_after_ns(q), SEC);
    pipeline_free(q);
    script_destroy(&x->base);
    pipeline_free(p);
    loop_finish(&loop);
    assert_int_equal(destroyed, 2);
}

/*
 * An exporter shared by two pipelines outlives the first: a batch it still holds when that
 * pipeline is freed stays valid, and its late answer is handled (ASan checks the memory).
 */
static void test_answer_after_free(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *a = new_pipeline(&loop, 1, 4 * MIB, 1 * MS);
    struct pipeline *b = new_pipeline(&loop, 1, 4 * MIB, 1 * MS);
    struct script *x = script_new(&loop, STEP_HOLD);
    struct pipeline_exporter_options o = xopts("shared", NULL);
    assert_int_equal(pipeline_add_exporter_opts(a, OTLP_TRACES, &x->base, &o), 0);
    assert_int_equal(pipeline_add_exporter_opts(b, OTLP_TRACES, &x->base, &o), 0);
    submit_traces(a, 0, 3, 100, NULL);
    wait_sends(&loop, x, 1, 1000);
    pipeline_free(a);
    assert_int_equal(x->base.refs, 1);
    script_complete(x, 0, STEP_OK);
    wait_answers(&loop, x, 1, 1000);
    x->dflt = STEP_OK;
    submit_traces(b, 1, 2, 0, NULL);
    wait_answers(&loop, x, 2, 1000);
    assert_int_equal(stats_of(b, 0).sent_items, 2);
    pipeline_free(b);
    loop_finish(&loop);
}

/* ---- storing exporters (export_async: the sink) ---------------------------------------------- */

/* A store that commits 20 ms after it is given a request, with a chosen outcome. */
struct store {
    struct exporter base;
    uv_timer_t timer;
    enum export_outcome outcome;
    export_done_fn done[8];
    void *ud[8];
    size_t n;
    size_t stored;
};

static void store_commit(uv_timer_t *t)
{
    struct store *st = t->data;
    size_t n = st->n;
    st->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct export_result r = {.outcome = st->outcome, .grpc_status = -1};
        snprintf(r.message, sizeof(r.message), "%s",
                 st->outcome == EXPORT_OK ? "" : "disk on fire");
        st->stored += st->outcome == EXPORT_OK;
        st->done[i](st->ud[i], &r);
    }
}

static int store_export_async(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                              const struct otlp_counts *c, export_done_fn done, void *userdata)
{
    (void)s, (void)pb, (void)len, (void)c;
    struct store *st = (struct store *)e;
    assert_true(st->n < 8);
    st->done[st->n] = done;
    st->ud[st->n++] = userdata;
    uv_timer_start(&st->timer, store_commit, 20, 0);
    return 0;
}

static int store_export(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                        const struct otlp_counts *c)
{
    (void)e, (void)s, (void)pb, (void)len, (void)c;
    fail_msg("the pipeline must use export_async when an exporter has it");
    return 0;
}

static void store_closed(uv_handle_t *h)
{
    free(h->data);
}

static void store_destroy(struct exporter *e)
{
    struct store *st = (struct store *)e;
    store_commit(&st->timer); /* Answer what is pending, as the contract says. */
    uv_close((uv_handle_t *)&st->timer, store_closed);
}

static const struct exporter_ops store_ops = {
    .kind = "store",
    .export = store_export,
    .export_async = store_export_async,
    .destroy = store_destroy,
};

static struct store *store_new(uv_loop_t *loop, enum export_outcome outcome)
{
    struct store *st = calloc(1, sizeof(*st));
    assert_non_null(st);
    st->base.ops = &store_ops;
    st->outcome = outcome;
    uv_timer_init(loop, &st->timer);
    st->timer.data = st;
    return st;
}

static bool answered_once(void *arg)
{
    return ((struct outcome *)arg)->calls == 1;
}

/* #5: the client's 200 comes only after the storing exporter has committed. */
static void test_async_store_answers_after_commit(void **state)
{
    (void)state;
    static const struct {
        enum export_outcome outcome;
        int status;
    } cases[] = {
        {EXPORT_OK, 0},
        {EXPORT_RETRY, DLOTEL_ERR_IO},            /* the receiver answers 503 */
        {EXPORT_PERMANENT, DLOTEL_ERR_BAD_INPUT}, /* the receiver answers 400 */
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 10 * SEC);
        int destroyed = 0;
        struct recorder *r = rec_new(&destroyed);
        struct store *st = store_new(&loop, cases[k].outcome);
        assert_int_equal(pipeline_add_exporter(p, OTLP_TRACES, &r->base), 0);
        assert_int_equal(pipeline_add_exporter(p, OTLP_TRACES, &st->base), 0);
        struct outcome o = {0};
        pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o);
        assert_int_equal(o.calls, 0); /* Not before the commit. */
        assert_int_equal(r->calls[OTLP_TRACES], 1);
        assert_true(run_until(&loop, answered_once, &o, 2000));
        assert_int_equal(o.status, cases[k].status);
        if (cases[k].status != 0) {
            assert_non_null(strstr(o.detail, "disk on fire"));
        }
        struct pipeline_stats s1 = stats_of(p, 1);
        assert_int_equal(s1.sent_items, cases[k].status == 0 ? 7 : 0);
        assert_int_equal(st->stored, cases[k].status == 0 ? 1 : 0);
        pipeline_free(p);
        assert_int_equal(o.calls, 1);
        loop_finish(&loop);
        assert_int_equal(destroyed, 1);
    }
}

/* A store and an fsync=always disk queue on one signal: the answer waits for both. */
static void test_async_store_with_group_commit(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct pipeline *p = new_pipeline(&loop, 8192, 4 * MIB, 10 * SEC);
    struct script *x = script_new(&loop, STEP_OK);
    struct pipeline_exporter_options o = xopts("up", t.path);
    o.disk_queue.fsync = PIPELINE_FSYNC_ALWAYS;
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &x->base, &o), 0);
    struct store *st = store_new(&loop, EXPORT_OK);
    assert_int_equal(pipeline_add_exporter(p, OTLP_TRACES, &st->base), 0);
    struct buf req;
    buf_init(&req, UNLIMITED);
    make_traces(&req, 0, 2, 0);
    struct otlp_counts c = {1, 1, 2};
    struct outcome a = {0};
    pipeline_submit(p, OTLP_TRACES, req.data, req.len, &c, on_done, &a);
    assert_int_equal(a.calls, 0);
    assert_true(run_until(&loop, answered_once, &a, 2000));
    assert_int_equal(a.status, 0);
    assert_int_equal(st->stored, 1);
    /* Both were done by the time the client heard: the store commits after 20 ms. */
    buf_cleanup(&req);
    pipeline_free(p);
    loop_finish(&loop);
    tmpdir_remove(&t);
}

/* ---- processors off the loop (pipeline_set_processor) -----------------------------------------
 */

/*
 * A transform in the shape of the processor chain: it copies the request (or drops every item,
 * or refuses it) and notes what it saw. It runs on a pool thread, so it never calls cmocka; the
 * test reads what it noted once the answers are back on the loop. With |gated| each run waits
 * for the test to open the gate once (gate_open()), so a request stays "in processing" as long
 * as the test wants; at most 10 s, so that a failed test cannot hang the pool threads for good.
 */
enum xform_mode { XF_COPY, XF_DROP_ALL, XF_REFUSE };

struct xform {
    enum xform_mode mode;
    bool gated;
    uv_mutex_t mu;
    uv_cond_t cond;
    int permits;
    uv_thread_t loop_thread;
    int runs;         /* Written by the worker; read after the answer came back. */
    int on_loop;      /* Runs that happened on the loop thread (must stay 0). */
    uint8_t seen[16]; /* The first byte of each request, in the order processed. */
};

static int xform_run(void *userdata, enum otlp_signal s, const uint8_t *pb, size_t len,
                     struct buf *out, struct otlp_counts *pc)
{
    (void)s;
    struct xform *x = userdata;
    if (x->gated) {
        uv_mutex_lock(&x->mu);
        uint64_t until = uv_hrtime() + 10 * SEC;
        while (x->permits == 0 && uv_hrtime() < until) {
            uv_cond_timedwait(&x->cond, &x->mu, 100 * MS);
        }
        x->permits -= x->permits > 0;
        uv_mutex_unlock(&x->mu);
    }
    uv_thread_t self = uv_thread_self();
    x->on_loop += uv_thread_equal(&self, &x->loop_thread);
    if (x->runs < (int)sizeof(x->seen) && len > 0) {
        x->seen[x->runs] = pb[0];
    }
    x->runs++;
    if (x->mode == XF_REFUSE) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *pc = (struct otlp_counts){.resources = 1, .items = x->mode == XF_DROP_ALL ? 0 : 3};
    return x->mode == XF_DROP_ALL ? 0 : buf_append(out, pb, len);
}

static void xform_init(struct xform *x, enum xform_mode mode, bool gated)
{
    *x = (struct xform){.mode = mode, .gated = gated};
    x->loop_thread = uv_thread_self();
    assert_int_equal(uv_mutex_init(&x->mu), 0);
    assert_int_equal(uv_cond_init(&x->cond), 0);
}

static void gate_open(struct xform *x)
{
    uv_mutex_lock(&x->mu);
    x->permits++;
    uv_cond_signal(&x->cond);
    uv_mutex_unlock(&x->mu);
}

static void xform_cleanup(struct xform *x)
{
    uv_cond_destroy(&x->cond);
    uv_mutex_destroy(&x->mu);
}

struct outcomes {
    struct outcome v[8];
    size_t n; /* How many must be answered. */
};

static bool outcomes_all(void *arg)
{
    struct outcomes *o = arg;
    for (size_t i = 0; i < o->n; i++) {
        if (o->v[i].calls == 0) {
            return false;
        }
    }
    return true;
}

static struct pipeline *proc_pipeline(uv_loop_t *loop, uint64_t processing_max, struct xform *x,
                                      struct recorder **rec, int *destroyed)
{
    struct pipeline_options o;
    pipeline_options_init(&o);
    o.processing_max_bytes = processing_max;
    struct pipeline *p = NULL;
    assert_int_equal(pipeline_new_on_loop(&p, loop, &o), 0);
    *rec = rec_new(destroyed);
    assert_int_equal(pipeline_add_exporter(p, OTLP_TRACES, &(*rec)->base), 0);
    assert_int_equal(pipeline_add_exporter(p, OTLP_LOGS, &(*rec)->base), 0);
    pipeline_set_processor(p, OTLP_TRACES, xform_run, x);
    return p;
}

/*
 * The chain runs on a pool thread, after pipeline_submit() returned, on a copy of the request;
 * the answer comes once, on the loop; requests leave the chain in the order they came. A signal
 * without processors still takes the fast path, answered within the call.
 */
static void test_process_off_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct xform x;
    xform_init(&x, XF_COPY, false);
    struct recorder *rec;
    int destroyed = 0;
    struct pipeline *p = proc_pipeline(&loop, 0, &x, &rec, &destroyed);

    struct outcomes o = {.n = 5};
    uint8_t req[5][64];
    for (size_t i = 0; i < 5; i++) {
        memset(req[i], (int)('a' + i), sizeof(req[i]));
        pipeline_submit(p, OTLP_TRACES, req[i], sizeof(req[i]), &counts, on_done, &o.v[i]);
        assert_int_equal(o.v[i].calls, 0);
    }
    /* |pb| is borrowed for the call only: scribbling on it now must not reach the exporter. */
    memset(req, 'z', sizeof(req));
    struct pipeline_totals t;
    pipeline_get_totals(p, &t);
    assert_int_equal(t.processing_requests, 5);
    assert_int_equal(t.processing_bytes, 5 * 64);
    assert_int_equal(rec->calls[OTLP_TRACES], 0);

    /* The fast path: no processor for logs, answered before pipeline_submit() returns. */
    struct outcome fast = {0};
    pipeline_submit(p, OTLP_LOGS, request, sizeof(request), &counts, on_done, &fast);
    assert_int_equal(fast.calls, 1);
    assert_int_equal(fast.status, 0);
    assert_int_equal(rec->calls[OTLP_LOGS], 1);

    assert_true(run_until(&loop, outcomes_all, &o, 5000));
    run_for(&loop, 20);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(o.v[i].calls, 1);
        assert_int_equal(o.v[i].status, 0);
        assert_int_equal(x.seen[i], 'a' + i);
    }
    assert_int_equal(x.runs, 5);
    assert_int_equal(x.on_loop, 0);
    assert_int_equal(rec->calls[OTLP_TRACES], 5);
    assert_int_equal(rec->last_len, 64);
    assert_int_equal(rec->last_items, 3); /* The chain's count, not the receiver's 7. */
    pipeline_get_totals(p, &t);
    assert_int_equal(t.processing_requests, 0);
    assert_int_equal(t.processing_bytes, 0);
    assert_int_equal(t.accepted_requests, 6);
    assert_int_equal(t.processed_dropped_items, 5 * (7 - 3));

    /* Every item dropped: accepted, no exporter. A refusal: the chain's code, no exporter. */
    x.mode = XF_DROP_ALL;
    struct outcome dropped = {0};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &dropped);
    assert_true(run_until(&loop, answered_once, &dropped, 5000));
    assert_int_equal(dropped.status, 0);
    x.mode = XF_REFUSE;
    struct outcome refused = {0};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &refused);
    assert_true(run_until(&loop, answered_once, &refused, 5000));
    assert_int_equal(refused.status, DLOTEL_ERR_BAD_INPUT);
    assert_string_equal(refused.detail, "the processors could not handle the request");
    run_for(&loop, 20);
    assert_int_equal(dropped.calls, 1);
    assert_int_equal(refused.calls, 1);
    assert_int_equal(rec->calls[OTLP_TRACES], 5);

    pipeline_free(p);
    assert_int_equal(destroyed, 1);
    loop_finish(&loop);
    xform_cleanup(&x);
}

/* pipeline_drain() waits for requests still in a chain: they reach the exporter first. */
static void test_process_drain_waits(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct xform x;
    xform_init(&x, XF_COPY, true);
    struct recorder *rec;
    int destroyed = 0;
    struct pipeline *p = proc_pipeline(&loop, 0, &x, &rec, &destroyed);

    struct outcomes o = {.n = 2};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o.v[0]);
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o.v[1]);
    struct drained d = {0};
    assert_int_equal(pipeline_drain(p, 10 * SEC, on_drained, &d), 0);
    run_for(&loop, 100);
    assert_int_equal(d.calls, 0); /* Both still in the pipeline: one in the chain, one waiting. */
    assert_int_equal(o.v[0].calls + o.v[1].calls, 0);

    gate_open(&x);
    assert_true(run_until(&loop, answered_once, &o.v[0], 5000));
    run_for(&loop, 50);
    assert_int_equal(d.calls, 0); /* The second is still in its chain. */

    gate_open(&x);
    assert_true(run_until(&loop, drain_done, &d, 5000));
    assert_int_equal(d.status, 0);
    assert_int_equal(o.v[0].status, 0);
    assert_int_equal(o.v[1].calls, 1);
    assert_int_equal(o.v[1].status, 0);
    assert_int_equal(rec->calls[OTLP_TRACES], 2);

    /* After the drain: refused at once, the chain is not run. */
    struct outcome late = {0};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &late);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.status, DLOTEL_ERR_CLOSED);
    assert_int_equal(x.runs, 2);
    pipeline_free(p);
    loop_finish(&loop);
    xform_cleanup(&x);
}

/*
 * A drain that times out refuses what waits for a chain at once, and the request in a chain when
 * it ends: every client is answered once, DLOTEL_ERR_CLOSED, and no exporter got them.
 */
static void test_process_drain_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct xform x;
    xform_init(&x, XF_COPY, true);
    struct recorder *rec;
    int destroyed = 0;
    struct pipeline *p = proc_pipeline(&loop, 0, &x, &rec, &destroyed);

    struct outcomes o = {.n = 2};
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o.v[0]);
    pipeline_submit(p, OTLP_TRACES, request, sizeof(request), &counts, on_done, &o.v[1]);
    struct drained d = {0};
    assert_int_equal(pipeline_drain(p, 50 * MS, on_drained, &d), 0);
    assert_true(run_until(&loop, drain_done, &d, 5000));
    assert_int_equal(d.status, DLOTEL_ERR_TIMEOUT);
    assert_int_equal(o.v[0].calls, 0);
    assert_int_equal(o.v[1].calls, 1);
    assert_int_equal(o.v[1].status, DLOTEL_ERR_CLOSED);

    gate_open(&x);
    assert_true(run_until(&loop, answered_once, &o.v[0], 5000));
    run_for(&loop, 20);
    assert_int_equal(o.v[0].status, DLOTEL_ERR_CLOSED);
    assert_int_equal(o.v[1].calls, 1);
    assert_int_equal(x.runs, 1);
    assert_int_equal(rec->calls[OTLP_TRACES], 0);
    struct pipeline_totals t;
    pipeline_get_totals(p, &t);
    assert_int_equal(t.processing_requests, 0);
    assert_int_equal(t.failed_requests, 2);
    pipeline_free(p);
    loop_finish(&loop);
    xform_cleanup(&x);
}

/*
 * pipeline_free() while a request is in a chain on a pool thread and another waits for it: the
 * waiting one is answered at once, the other when its chain ends, both DLOTEL_ERR_CLOSED and
 * once; the pipeline's memory lives until then (ASan: no use after free, no leak).
 */
static void test_process_free_in_flight(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct xform x;
    xform_init(&x, XF_COPY, true);
    struct recorder *rec;
    int destroyed = 0;
    struct pipeline *p = proc_pipeline(&loop, 0, &x, &rec, &destroyed);

    struct outcomes o = {.n = 2};
    uint8_t big[4096];
    memset(big, 'q', sizeof(big));
    pipeline_submit(p, OTLP_TRACES, big, sizeof(big), &counts, on_done, &o.v[0]);
    pipeline_submit(p, OTLP_TRACES, big, sizeof(big), &counts, on_done, &o.v[1]);
    run_for(&loop, 20); /* The first is in its chain now, waiting for the gate. */
    pipeline_free(p);
    assert_int_equal(destroyed, 1);
    assert_int_equal(o.v[0].calls, 0);
    assert_int_equal(o.v[1].calls, 1);
    assert_int_equal(o.v[1].status, DLOTEL_ERR_CLOSED);

    gate_open(&x);
    loop_finish(&loop); /* Runs the after-work callback, which frees the pipeline's memory. */
    assert_int_equal(o.v[0].calls, 1);
    assert_int_equal(o.v[0].status, DLOTEL_ERR_CLOSED);
    assert_int_equal(o.v[1].calls, 1);
    assert_int_equal(x.runs, 1);
    xform_cleanup(&x);
}

/*
 * The bytes of requests waiting for or in a chain are bounded by processing_max_bytes: up to it
 * they are taken, one byte past it is refused with DLOTEL_ERR_FULL (429), and a request larger
 * than the whole bound with DLOTEL_ERR_TOO_LARGE. The default bound is queue.memory_max_bytes.
 */
static void test_process_memory_bound(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct xform x;
    xform_init(&x, XF_COPY, true);
    struct recorder *rec;
    int destroyed = 0;
    struct pipeline *p = proc_pipeline(&loop, 1000, &x, &rec, &destroyed);

    static uint8_t bytes[1001];
    struct outcomes o = {.n = 3};
    pipeline_submit(p, OTLP_TRACES, bytes, 400, &counts, on_done, &o.v[0]);
    pipeline_submit(p, OTLP_TRACES, bytes, 400, &counts, on_done, &o.v[1]);
    pipeline_submit(p, OTLP_TRACES, bytes, 200, &counts, on_done, &o.v[2]); /* Exactly 1000. */
    struct outcome full = {0}, large = {0};
    pipeline_submit(p, OTLP_TRACES, bytes, 1, &counts, on_done, &full);
    assert_int_equal(full.calls, 1);
    assert_int_equal(full.status, DLOTEL_ERR_FULL);
    pipeline_submit(p, OTLP_TRACES, bytes, 1001, &counts, on_done, &large);
    assert_int_equal(large.calls, 1);
    assert_int_equal(large.status, DLOTEL_ERR_TOO_LARGE);
    struct pipeline_totals t;
    pipeline_get_totals(p, &t);
    assert_int_equal(t.processing_bytes, 1000);
    assert_int_equal(t.processing_requests, 3);
    assert_int_equal(t.refused_requests, 2);
    assert_int_equal(t.refused_items, 14);
    assert_int_equal(o.v[0].calls + o.v[1].calls + o.v[2].calls, 0);

    /* As the chain gives bytes back, there is room again. */
    gate_open(&x);
    assert_true(run_until(&loop, answered_once, &o.v[0], 5000));
    struct outcome again = {0};
    pipeline_submit(p, OTLP_TRACES, bytes, 400, &counts, on_done, &again);
    pipeline_get_totals(p, &t);
    assert_int_equal(t.processing_bytes, 1000);
    assert_int_equal(again.calls, 0);
    for (int i = 0; i < 3; i++) {
        gate_open(&x);
    }
    assert_true(run_until(&loop, outcomes_all, &o, 5000));
    assert_true(run_until(&loop, answered_once, &again, 5000));
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(o.v[i].status, 0);
    }
    assert_int_equal(again.status, 0);
    pipeline_get_totals(p, &t);
    assert_int_equal(t.processing_bytes, 0);
    assert_int_equal(rec->calls[OTLP_TRACES], 4);
    pipeline_free(p);
    loop_finish(&loop);
    xform_cleanup(&x);

    /* The default: queue.memory_max_bytes. */
    uv_loop_init(&loop);
    struct pipeline_options po;
    pipeline_options_init(&po);
    po.memory_max_bytes = 500;
    assert_int_equal(pipeline_new_on_loop(&p, &loop, &po), 0);
    xform_init(&x, XF_COPY, false);
    pipeline_set_processor(p, OTLP_TRACES, xform_run, &x);
    struct outcome at = {0}, past = {0};
    pipeline_submit(p, OTLP_TRACES, bytes, 501, &counts, on_done, &past);
    assert_int_equal(past.status, DLOTEL_ERR_TOO_LARGE);
    pipeline_submit(p, OTLP_TRACES, bytes, 500, &counts, on_done, &at);
    assert_int_equal(at.calls, 0);
    assert_true(run_until(&loop, answered_once, &at, 5000));
    assert_int_equal(at.status, 0);
    pipeline_free(p);
    loop_finish(&loop);
    xform_cleanup(&x);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_by_signal),
        cmocka_unit_test(test_async_store_answers_after_commit),
        cmocka_unit_test(test_async_store_with_group_commit),
        cmocka_unit_test(test_refcounts),
        cmocka_unit_test(test_failure_propagates),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_batch_by_items_and_flush),
        cmocka_unit_test(test_batch_by_bytes),
        cmocka_unit_test(test_batch_by_timeout),
        cmocka_unit_test(test_split_large_requests),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_retry_after_honoured),
        cmocka_unit_test(test_backoff_growth_on_loop),
        cmocka_unit_test(test_max_elapsed_drops_memory),
        cmocka_unit_test(test_disk_never_drops_for_time),
        cmocka_unit_test(test_permanent_and_partial),
        cmocka_unit_test(test_stalled_exporter_does_not_delay_other),
        cmocka_unit_test(test_in_order_commit_and_restart),
        cmocka_unit_test(test_restart_resends_backlog_in_order),
        cmocka_unit_test(test_backlog_held_on_disk),
        cmocka_unit_test(test_drain_empties_queues),
        cmocka_unit_test(test_drain_timeout),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_sync_counters_and_args),
        cmocka_unit_test(test_answer_after_free),
        cmocka_unit_test(test_process_off_loop),
        cmocka_unit_test(test_process_drain_waits),
        cmocka_unit_test(test_process_drain_timeout),
        cmocka_unit_test(test_process_free_in_flight),
        cmocka_unit_test(test_process_memory_bound),
    };
    return cmocka_run_group_tests_name("pipeline", tests, NULL, NULL);
}
