/*
 * The sink exporter: the agent's side of the DuckDB sink (DESIGN.md section 5).
 *
 * It loads libdlotel_sink.so through the loader (sink/sink_loader.h; nothing here includes
 * duckdb.h) and passes each request's protobuf bytes to the module's append(). The module's
 * writer thread decodes, appends and commits (group commit), then calls back from its own
 * thread; the callback queues the outcome and wakes the loop with a uv_async, and the loop
 * thread calls the pipeline's |done|. So |done| of export_async means "durable" when the outcome
 * is EXPORT_OK.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "sink/sink_loader.h"
#include "sink/sink_module.h"

/* One export_async in flight. */
struct sink_call {
    struct sink_call *next;
    struct sink_exporter *x;
    export_done_fn done;
    void *userdata;
    int status;
    char message[256];
    /* A copy of the request for the tap, taken only when a tap was set at append time. */
    int signal;
    uint8_t *pb;
    size_t len;
    char *user_uid;
};

struct sink_exporter {
    struct exporter base; /* First, so that a struct exporter * converts back. */
    uv_loop_t *loop;
    uv_async_t async;
    struct sink_loader *loader;
    const struct sink_module_api *api;
    struct sink *sink;

    pthread_mutex_t mu;
    pthread_cond_t cond;        /* The synchronous export waits here. */
    struct sink_call *finished; /* Completed calls, newest first, for the loop thread. */

    /* Loop thread only: sees every committed request before its |done| (the live stream). */
    exporter_sink_tap_fn tap;
    exporter_sink_wants_fn tap_wants;
    void *tap_userdata;
};

/* A synchronous export waiting on the calling thread. */
struct sink_wait {
    struct sink_exporter *x;
    bool done;
    int status;
};

static void module_log(void *userdata, int level, const char *message)
{
    (void)userdata;
    DLOG((enum log_level)level, "sink", "%s", message);
}

/* The module's writer thread: hand the outcome to the loop. */
static void on_appended(void *userdata, int status, const char *message)
{
    struct sink_call *c = userdata;
    struct sink_exporter *x = c->x;
    c->status = status;
    c->message[0] = '\0';
    if (message != NULL) {
        size_t n = strlen(message);
        if (n >= sizeof(c->message)) {
            n = sizeof(c->message) - 1;
        }
        memcpy(c->message, message, n);
        c->message[n] = '\0';
    }
    pthread_mutex_lock(&x->mu);
    c->next = x->finished;
    x->finished = c;
    pthread_mutex_unlock(&x->mu);
    uv_async_send(&x->async);
}

/*
 * The one place that maps the module's status to an export outcome: a request that does not
 * decode (or cannot be decoded within the memory limit) will never be stored; anything else
 * (disk full, DuckDB failed, queue full, closing) may work later.
 */
static enum export_outcome outcome_of(int status)
{
    if (status == 0) {
        return EXPORT_OK;
    }
    if (status == DLOTEL_ERR_BAD_INPUT || status == DLOTEL_ERR_TOO_LARGE ||
        status == DLOTEL_ERR_INVALID_ARG) {
        return EXPORT_PERMANENT;
    }
    return EXPORT_RETRY;
}

static void call_free(struct sink_call *c)
{
    free(c->pb);
    free(c->user_uid);
    free(c);
}

static void deliver(struct sink_call *c)
{
    /* The tap hears of committed rows before the client does, so that a client that queries
       or subscribes right after its 200 does not miss them on the stream. */
    struct sink_exporter *x = c->x;
    if (c->status == 0 && c->pb != NULL && x->tap != NULL) {
        x->tap(x->tap_userdata, c->signal, c->pb, c->len, c->user_uid);
    }
    struct export_result r;
    memset(&r, 0, sizeof(r));
    r.outcome = outcome_of(c->status);
    r.grpc_status = -1;
    if (c->status != 0) {
        const char *m = c->message[0] != '\0' ? c->message : dlotel_strerror(c->status);
        size_t n = strlen(m);
        if (n >= sizeof(r.message)) {
            n = sizeof(r.message) - 1;
        }
        memcpy(r.message, m, n);
    }
    c->done(c->userdata, &r);
}

/* Answers every finished call, in commit order. */
static void deliver_finished(struct sink_exporter *x)
{
    pthread_mutex_lock(&x->mu);
    struct sink_call *list = x->finished;
    x->finished = NULL;
    pthread_mutex_unlock(&x->mu);

    /* The list is newest first: reverse it so that callers hear back in commit order. */
    struct sink_call *ordered = NULL;
    while (list != NULL) {
        struct sink_call *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered != NULL) {
        struct sink_call *next = ordered->next;
        deliver(ordered);
        call_free(ordered);
        ordered = next;
    }
}

static void on_async(uv_async_t *h)
{
    deliver_finished(h->data);
}

/*
 * Queues one request for the writer. When the tap wants it, the bytes (and |user_uid|) are copied
 * once more, because the module's own copy is gone by the time the loop learns of the commit.
 */
static int append_call(struct sink_exporter *x, int signal, const uint8_t *pb, size_t len,
                       const char *user_uid, export_done_fn done, void *userdata)
{
    if (done == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct sink_call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    c->x = x;
    c->done = done;
    c->userdata = userdata;
    c->signal = signal;
    if (x->tap != NULL && (x->tap_wants == NULL || x->tap_wants(x->tap_userdata, signal))) {
        c->pb = malloc(len > 0 ? len : 1);
        if (c->pb == NULL) {
            goto fail_nomem;
        }
        if (len > 0) {
            memcpy(c->pb, pb, len);
        }
        c->len = len;
        if (user_uid != NULL) {
            size_t n = strlen(user_uid);
            c->user_uid = malloc(n + 1);
            if (c->user_uid == NULL) {
                goto fail_nomem;
            }
            memcpy(c->user_uid, user_uid, n + 1);
        }
    }
    /* The module copies |pb|: the caller's buffer is free again when this returns. */
    int rc = x->api->append(x->sink, signal, pb, len, user_uid, on_appended, c);
    if (rc != 0) {
        call_free(c);
    }
    return rc;

fail_nomem:
    call_free(c);
    return DLOTEL_ERR_NOMEM;
}

static int sink_export_async(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                             const struct otlp_counts *counts, export_done_fn done, void *userdata)
{
    (void)counts;
    return append_call((struct sink_exporter *)e, (int)s, pb, len, NULL, done, userdata);
}

static void on_appended_sync(void *userdata, int status, const char *message)
{
    struct sink_wait *w = userdata;
    struct sink_exporter *x = w->x;
    if (status != 0) {
        log_warn("sink", "request not stored: %s", message != NULL ? message : "unknown error");
    }
    pthread_mutex_lock(&x->mu);
    w->status = status;
    w->done = true;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->mu);
}

/*
 * The synchronous form, for a pipeline that calls export and answers the client when it
 * returns: it waits for the commit (a few milliseconds: one WAL fsync), so the answer still
 * means "durable". It blocks the calling thread meanwhile; export_async does not.
 */
static int sink_export(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                       const struct otlp_counts *counts)
{
    (void)counts;
    struct sink_exporter *x = (struct sink_exporter *)e;
    struct sink_wait w = {.x = x, .done = false, .status = 0};
    int rc = x->api->append(x->sink, (int)s, pb, len, NULL, on_appended_sync, &w);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&x->mu);
    while (!w.done) {
        pthread_cond_wait(&x->cond, &x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    return w.status;
}

static void sink_flush_op(struct exporter *e)
{
    struct sink_exporter *x = (struct sink_exporter *)e;
    x->api->request_flush(x->sink);
}

static void on_closed(uv_handle_t *h)
{
    struct sink_exporter *x = h->data;
    pthread_cond_destroy(&x->cond);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

static void sink_destroy(struct exporter *e)
{
    struct sink_exporter *x = (struct sink_exporter *)e;
    /* Stores what is queued (each callback runs, into our list), flushes, closes DuckDB. */
    x->api->close(x->sink);
    x->sink = NULL;
    /* No module code runs any more: unload it. */
    sink_loader_free(x->loader);
    x->loader = NULL;
    /* Every call is finished now: answer them here, as the exporter contract asks. */
    deliver_finished(x);
    uv_close((uv_handle_t *)&x->async, on_closed);
}

static const struct exporter_ops sink_ops = {
    .kind = "sink",
    .export = sink_export,
    .export_async = sink_export_async,
    .flush = sink_flush_op,
    .destroy = sink_destroy,
};

int exporter_sink_new(struct exporter **out, struct uv_loop_s *loop, const struct sink_options *o,
                      const char *module_path, char *detail, size_t detail_len)
{
    if (out == NULL || loop == NULL || o == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct sink_exporter *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    x->base.ops = &sink_ops;
    x->loop = loop;
    int rc = DLOTEL_ERR_NOMEM;
    if (pthread_mutex_init(&x->mu, NULL) != 0) {
        goto fail_mutex;
    }
    if (pthread_cond_init(&x->cond, NULL) != 0) {
        goto fail_cond;
    }
    rc = sink_loader_open(&x->loader, module_path, detail, detail_len);
    if (rc != 0) {
        goto fail_loader;
    }
    x->api = sink_loader_api(x->loader);

    struct sink_options so = *o;
    if (so.log == NULL) {
        so.log = module_log;
        so.log_userdata = NULL;
        so.log_level = (int)log_level_current;
    }
    rc = x->api->open(&x->sink, &so, detail, detail_len);
    if (rc != 0) {
        goto fail_open;
    }
    if (uv_async_init(loop, &x->async, on_async) != 0) {
        rc = DLOTEL_ERR_NOMEM;
        goto fail_async;
    }
    x->async.data = x;
    /* The handle must not keep the loop alive by itself: the daemon's loop ends when its
       receivers close, and this exporter is destroyed after that. */
    uv_unref((uv_handle_t *)&x->async);
    *out = &x->base;
    return 0;

fail_async:
    x->api->close(x->sink);
fail_open:
    sink_loader_free(x->loader);
fail_loader:
    pthread_cond_destroy(&x->cond);
fail_cond:
    pthread_mutex_destroy(&x->mu);
fail_mutex:
    free(x);
    return rc;
}

struct sink *exporter_sink_store(struct exporter *e, const struct sink_module_api **api)
{
    if (e == NULL || e->ops != &sink_ops) {
        return NULL;
    }
    struct sink_exporter *x = (struct sink_exporter *)e;
    if (api != NULL) {
        *api = x->api;
    }
    return x->sink;
}

int exporter_sink_append(struct exporter *e, int signal, const uint8_t *pb, size_t len,
                         const char *user_uid, export_done_fn done, void *userdata)
{
    if (e == NULL || e->ops != &sink_ops) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    return append_call((struct sink_exporter *)e, signal, pb, len, user_uid, done, userdata);
}

void exporter_sink_set_tap(struct exporter *e, exporter_sink_tap_fn fn,
                           exporter_sink_wants_fn wants, void *userdata)
{
    if (e == NULL || e->ops != &sink_ops) {
        return;
    }
    struct sink_exporter *x = (struct sink_exporter *)e;
    x->tap = fn;
    x->tap_wants = fn != NULL ? wants : NULL;
    x->tap_userdata = userdata;
}
