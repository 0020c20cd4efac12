/*
 * The pipeline: routing, the memory queue, the senders (batching, retry, in-order commit), the
 * group fdatasync, flush, drain and the counters. The disk queue is diskq.c, the splitter
 * split.c.
 *
 * One sender per upstream exporter x signal. Its queue is either
 *   - a memory queue: a FIFO of batches. A request is appended straight into the open batch at
 *     the tail (one copy), which is sealed when it is full by items or bytes, when its first
 *     request is batch_timeout old, or on flush; or
 *   - a disk queue: requests are appended as records to segment files; a batch is formed when
 *     the sender can send, by pread()ing records straight into the batch buffer (one copy), so
 *     memory holds only the batches in flight whatever the backlog.
 *
 * A sender keeps at most max_in_flight batches sent and unanswered (or waiting for a retry).
 * While one waits for a retry nothing new is sent, so order is kept and the backlog grows in
 * the queue (on disk, when there is one). Disk batches carry the position after their last
 * record; the committed position only moves over a contiguous prefix of finished batches.
 *
 * With a processor chain set for a signal, its requests take the decode path first: the bytes are
 * copied into a job, the chain runs on libuv's thread pool (uv_queue_work()), and the job's
 * after-work callback, back on the loop, continues as the fast path does (submit_encoded()). The
 * jobs of one signal run one at a time, in arrival order, from a FIFO per signal: requests leave
 * the chain in the order they came (the sender's batches keep that order upstream), a chain
 * never runs on two threads at once, and at most one pool thread per signal is busy with
 * processing, so the exporters' compression always finds a free thread in the default pool of
 * four. The pool rather than a thread of our own: it is there already, its after-work callback is
 * the hand-back to the loop, and a queued work request keeps the loop alive, so the daemon's
 * uv_run() cannot return (and the chains be freed) while a chain still runs.
 *
 * FUTURE OPTIMIZATIONS: the cursor file is rewritten after every delivered batch; a split
 * record's pieces are copied once more into their own batches; the jobs of one signal could run
 * on several threads with one chain state each, if one thread per signal ever falls behind.
 */
#include "pipeline/pipeline.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "pipeline/diskq.h"
#include "pipeline/pipeline_int.h"
#include "pipeline/split.h"

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)

#define DEFAULT_BATCH_ITEMS      8192
#define DEFAULT_BATCH_BYTES      (4 * MIB)
#define DEFAULT_BATCH_TIMEOUT_NS (200 * (uint64_t)1000000)
#define DEFAULT_MEMORY_MAX       (64 * MIB)
#define DEFAULT_RETRY_AFTER_NS   ((uint64_t)1000000000)

/* The processed request's buffer: twice the request, plus room for what processors add. */
#define PROCESS_OUT_SLACK (64 * KIB)

/* Batches finished out of order wait for the ones before them; this many at most. */
#define FLIGHT_LIST_FACTOR 16

/* The total size of the pieces of one split, relative to the request (see split_out_init). */
#define SPLIT_GROWTH 2

enum batch_state {
    B_OPEN,       /* Memory queue tail: still taking requests. */
    B_READY,      /* Sealed, waiting to be sent. */
    B_SENDING,    /* Handed to the exporter. */
    B_WAIT_RETRY, /* Failed with EXPORT_RETRY; resent by the retry timer. */
    B_DONE,       /* Finished (disk queue): waiting for the batches before it to finish. */
};

struct sender;

struct batch {
    struct batch *prev;
    struct batch *next;
    struct sender *sd; /* NULL once the pipeline is gone and the exporter may still answer. */
    struct buf data;
    uint64_t items;
    uint64_t len;         /* data.len, kept after the buffer is freed. */
    struct diskq_pos end; /* Disk: commit this when done. */
    enum batch_state state;
    unsigned attempts;
    uint64_t created_ms; /* Memory: when its first request came. */
    uint64_t first_send_ms;
    uint64_t next_try_ms;
    bool oversized;
};

struct blist {
    struct batch *head;
    struct batch *tail;
    size_t n;
};

/* One exporter and its options, shared by its senders. */
struct xport {
    struct exporter *e;
    char *name;
    struct pipeline_exporter_options o; /* Strings point at name and disk_path. */
    char *disk_path;
    uint64_t mem_bytes; /* Held by its memory queues, in flight included. */
    unsigned senders;   /* Signals it is attached to in this pipeline. */
};

/* The counters of struct pipeline_stats that are totals. */
struct counters {
    uint64_t sent_items, sent_batches, failed_items, failed_batches, retried_batches;
    uint64_t dropped_items, dropped_expired_items, dropped_cap_items, dropped_shutdown_items;
    uint64_t rejected_items, refused_requests, refused_items, oversized_batches;
    uint64_t last_success_unix_nano, last_error_unix_nano;
    uint64_t disk_dropped_seen; /* diskq's dropped_items already counted. */
    char last_error[256];
};

struct sender {
    struct pipeline *p;
    struct xport *x;
    enum otlp_signal signal;
    char name[96]; /* "exporter/signal", for logs. */
    bool queued;
    struct diskq *dq;   /* NULL: memory queue. */
    struct blist queue; /* Memory: batches, the open one last. Disk: pieces of a split record. */
    struct blist flight;
    uint32_t slots;   /* Batches SENDING or WAIT_RETRY. */
    uint32_t waiting; /* Batches WAIT_RETRY. */
    uint64_t mem_bytes;
    uint64_t queue_items, queue_bytes; /* Memory queue batches not sent yet. */
    uint64_t flight_bytes;
    size_t last_batch_len; /* Memory: the size of the last batch sealed, to size the next. */
    uint64_t oldest_ms;    /* Disk: arrival of the oldest unread record, as far as known. */
    bool flush_mark_set;
    struct diskq_pos flush_mark;
    uint64_t stall_until_ms; /* Disk: after a failed read, wait before trying again. */
    bool pumping, repump;
    uv_timer_t batch_timer;
    uv_timer_t retry_timer;
    struct counters c;
};

/* Where a memory queue stood before a submit, to take the submit back. */
struct mq_save {
    struct batch *tail;
    size_t tail_len;
    uint64_t tail_items;
    enum batch_state tail_state;
    uint64_t queue_items, queue_bytes, mem;
};

struct route {
    struct sender **v;
    size_t n;
    size_t cap;
};

/*
 * A request on the decode path: waiting for its signal's chain, or in it on a pool thread. The
 * worker touches only |in|, |out|, |counts| and |rc|; everything else is the loop's.
 */
struct proc_job {
    struct proc_job *next;
    uv_work_t req;
    struct pipeline *p;
    enum otlp_signal signal;
    pipeline_process_fn fn; /* As set when the request came. */
    void *fn_userdata;
    uint8_t *in; /* The copy of the client's bytes; the worker frees it once processed. */
    size_t len;
    uint64_t items; /* Before processing, as the receiver counted them. */
    struct buf out;
    struct otlp_counts counts;
    int rc;
    pipeline_done_fn done;
    void *userdata;
};

/* The jobs of one signal, oldest first; only the head is ever in the thread pool. */
struct proc_queue {
    struct proc_job *head;
    struct proc_job *tail;
    bool running;
};

/* A client waiting for the group fdatasync. */
struct ack {
    pipeline_done_fn done;
    void *userdata;
    int status;
};

struct pipeline {
    uv_loop_t *loop; /* NULL: synchronous exporters only. */
    struct pipeline_options o;
    struct route routes[OTLP_SIGNAL_COUNT];
    struct sender **senders; /* All, in the order they were added. */
    size_t nsenders;
    size_t capsenders;
    struct xport **xports;
    size_t nxports;
    size_t capxports;
    uint64_t mem_bytes;
    struct split_out split;
    uint64_t rng;
    struct diskq_undo *undo; /* One per sender of the largest route. */
    size_t capundo;
    struct mq_save *saves; /* Likewise. */
    size_t capsaves;

    struct ack *acks;
    size_t nacks;
    size_t capacks;
    uv_timer_t sync_timer;

    bool draining;
    bool stopped; /* The drain finished: nothing is sent any more. */
    bool closing; /* pipeline_free() runs. */
    uv_timer_t drain_timer;
    uint64_t drain_deadline_ms;
    pipeline_drained_fn drain_cb;
    void *drain_userdata;

    int handles; /* Open handles and jobs in the pool; the memory goes with the last. */
    struct pipeline_totals totals;
    struct {
        pipeline_process_fn fn;
        void *userdata;
    } processors[OTLP_SIGNAL_COUNT];
    struct proc_queue procq[OTLP_SIGNAL_COUNT];
    uint64_t proc_requests; /* Jobs waiting or running. */
    uint64_t proc_bytes;    /* Their requests' bytes, against processing_max_bytes. */
};

static void sender_pump(struct sender *sd);
static void check_drain(struct pipeline *p);
static void on_retry_timer(uv_timer_t *t);

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t ns_to_ms_ceil(uint64_t ns)
{
    return ns / 1000000 + (ns % 1000000 != 0);
}

static uint64_t rng_next(struct pipeline *p)
{
    /* splitmix64: plenty for jitter. */
    uint64_t z = (p->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t pipeline_backoff_ns(uint64_t initial_ns, uint64_t max_ns, unsigned attempt, uint64_t rnd)
{
    uint64_t iv = initial_ns;
    for (unsigned i = 1; i < attempt && iv < max_ns; i++) {
        iv = iv > UINT64_MAX / 3 ? UINT64_MAX / 2 : iv + iv / 2;
    }
    if (iv > max_ns) {
        iv = max_ns;
    }
    if (iv == 0) {
        return 0;
    }
    /* In integers: floating point could round the top of the range up to 1.5 * iv. */
    return iv / 2 + rnd % iv;
}

static void blist_push(struct blist *l, struct batch *b)
{
    b->next = NULL;
    b->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = b;
    } else {
        l->head = b;
    }
    l->tail = b;
    l->n++;
}

static void blist_remove(struct blist *l, struct batch *b)
{
    if (b->prev != NULL) {
        b->prev->next = b->next;
    } else {
        l->head = b->next;
    }
    if (b->next != NULL) {
        b->next->prev = b->prev;
    } else {
        l->tail = b->prev;
    }
    b->prev = b->next = NULL;
    l->n--;
}

static struct batch *batch_new(struct sender *sd, size_t max)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return NULL;
    }
    b->sd = sd;
    buf_init(&b->data, max);
    return b;
}

static void batch_free(struct batch *b)
{
    buf_cleanup(&b->data);
    free(b);
}

static uint64_t now_ms(const struct pipeline *p)
{
    return p->loop != NULL ? uv_now(p->loop) : time_monotonic_nano() / 1000000;
}

static void set_error(struct sender *sd, const char *msg)
{
    snprintf(sd->c.last_error, sizeof(sd->c.last_error), "%s", msg);
    sd->c.last_error_unix_nano = time_now_unix_nano();
}

/* Memory held by a memory-queue sender's batches, counted at three levels. */
static void mem_add(struct sender *sd, uint64_t n)
{
    sd->mem_bytes += n;
    sd->x->mem_bytes += n;
    sd->p->mem_bytes += n;
}

static void mem_sub(struct sender *sd, uint64_t n)
{
    sd->mem_bytes -= n;
    sd->x->mem_bytes -= n;
    sd->p->mem_bytes -= n;
}

/* ---- options and construction ------------------------------------------------------------- */

void pipeline_options_init(struct pipeline_options *o)
{
    *o = (struct pipeline_options){
        .batch_max_items = DEFAULT_BATCH_ITEMS,
        .batch_max_bytes = DEFAULT_BATCH_BYTES,
        .batch_timeout_ns = DEFAULT_BATCH_TIMEOUT_NS,
        .memory_max_bytes = DEFAULT_MEMORY_MAX,
        .retry_after_ns = DEFAULT_RETRY_AFTER_NS,
    };
}

void pipeline_exporter_options_init(struct pipeline_exporter_options *o)
{
    memset(o, 0, sizeof(*o));
    o->memory_queue_max_bytes = 16 * MIB;
    /*
     * One batch on the wire per exporter and signal: the upstream receives batches in the order
     * they were queued, also while a backlog drains after an outage. With two, a slow batch can
     * be overtaken by any number of later ones.
     */
    o->max_in_flight = 1;
    o->retry.enabled = true;
    o->retry.initial_interval_ns = 5 * (uint64_t)1000000000;
    o->retry.max_interval_ns = 30 * (uint64_t)1000000000;
    o->retry.max_elapsed_time_ns = 300 * (uint64_t)1000000000;
    o->disk_queue.enabled = false;
    o->disk_queue.max_bytes = 1024 * MIB;
    o->disk_queue.fsync = PIPELINE_FSYNC_BATCH;
    o->disk_queue.segment_bytes = 64 * MIB;
}

static void free_memory(struct pipeline *p)
{
    for (size_t i = 0; i < p->nsenders; i++) {
        free(p->senders[i]);
    }
    free(p->senders);
    free(p);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct pipeline *p = h->data;
    if (--p->handles == 0) {
        free_memory(p);
    }
}

int pipeline_new_on_loop(struct pipeline **out, uv_loop_t *loop, const struct pipeline_options *o)
{
    struct pipeline *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    pipeline_options_init(&p->o);
    if (o != NULL) {
        if (o->batch_max_items != 0) {
            p->o.batch_max_items = o->batch_max_items;
        }
        if (o->batch_max_bytes != 0) {
            p->o.batch_max_bytes = o->batch_max_bytes;
        }
        if (o->batch_timeout_ns != 0) {
            p->o.batch_timeout_ns = o->batch_timeout_ns;
        }
        if (o->memory_max_bytes != 0) {
            p->o.memory_max_bytes = o->memory_max_bytes;
        }
        if (o->retry_after_ns != 0) {
            p->o.retry_after_ns = o->retry_after_ns;
        }
        p->o.processing_max_bytes = o->processing_max_bytes;
    }
    if (p->o.processing_max_bytes == 0) {
        p->o.processing_max_bytes = p->o.memory_max_bytes;
    }
    if (p->o.batch_max_bytes > SIZE_MAX / (SPLIT_GROWTH + 2)) {
        free(p);
        return DLOTEL_ERR_INVALID_ARG;
    }
    p->loop = loop;
    p->rng = time_monotonic_nano() ^ (uint64_t)(uintptr_t)p;
    split_out_init(&p->split, 0);
    if (loop != NULL) {
        uv_timer_init(loop, &p->sync_timer);
        uv_timer_init(loop, &p->drain_timer);
        p->sync_timer.data = p;
        p->drain_timer.data = p;
        /* Only a drain keeps the loop alive for the pipeline (see pipeline.h). */
        uv_unref((uv_handle_t *)&p->drain_timer);
        p->handles = 2;
    }
    *out = p;
    return 0;
}

int pipeline_new(struct pipeline **out)
{
    return pipeline_new_on_loop(out, NULL, NULL);
}

uint64_t pipeline_retry_after_ns(const struct pipeline *p)
{
    return p != NULL ? p->o.retry_after_ns : DEFAULT_RETRY_AFTER_NS;
}

static bool route_has(const struct route *r, const struct exporter *e)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->v[i]->x->e == e) {
            return true;
        }
    }
    return false;
}

static struct xport *xport_find(struct pipeline *p, const struct exporter *e)
{
    for (size_t i = 0; i < p->nxports; i++) {
        if (p->xports[i]->e == e) {
            return p->xports[i];
        }
    }
    return NULL;
}

static void xport_free(struct xport *x)
{
    if (x != NULL) {
        free(x->name);
        free(x->disk_path);
        free(x);
    }
}

static int xport_new(struct xport **out, struct exporter *e,
                     const struct pipeline_exporter_options *o)
{
    struct xport *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    x->e = e;
    pipeline_exporter_options_init(&x->o);
    if (o != NULL) {
        x->o = *o;
    }
    const char *name = x->o.name != NULL ? x->o.name : e->ops->kind;
    x->name = strdup(name != NULL ? name : "exporter");
    if (x->name == NULL) {
        goto fail;
    }
    x->o.name = x->name;
    if (x->o.max_in_flight == 0) {
        x->o.max_in_flight = 1;
    }
    if (x->o.disk_queue.enabled) {
        if (x->o.disk_queue.path == NULL || x->o.disk_queue.path[0] == '\0') {
            free(x->name);
            free(x);
            return DLOTEL_ERR_INVALID_ARG;
        }
        if ((x->disk_path = strdup(x->o.disk_queue.path)) == NULL) {
            goto fail;
        }
        x->o.disk_queue.path = x->disk_path;
    } else {
        x->o.disk_queue.path = NULL;
    }
    *out = x;
    return 0;

fail:
    xport_free(x);
    return DLOTEL_ERR_NOMEM;
}

static int sender_new(struct sender **out, struct pipeline *p, struct xport *x, enum otlp_signal s)
{
    struct sender *sd = calloc(1, sizeof(*sd));
    if (sd == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    sd->p = p;
    sd->x = x;
    sd->signal = s;
    sd->queued = x->e->ops->send != NULL;
    sd->oldest_ms = UINT64_MAX;
    snprintf(sd->name, sizeof(sd->name), "%s/%s", x->name, otlp_signal_name(s));
    if (sd->queued && x->o.disk_queue.enabled) {
        char dir[4096];
        int n = snprintf(dir, sizeof(dir), "%s/%s", x->o.disk_queue.path, otlp_signal_name(s));
        if (n < 0 || (size_t)n >= sizeof(dir)) {
            free(sd);
            return DLOTEL_ERR_INVALID_ARG;
        }
        struct diskq_options dqo = {
            .dir = dir,
            .name = sd->name,
            .max_bytes = x->o.disk_queue.max_bytes != 0 ? x->o.disk_queue.max_bytes : 1024 * MIB,
            .segment_bytes = x->o.disk_queue.segment_bytes,
            .fsync = x->o.disk_queue.fsync,
        };
        int rc = diskq_open(&sd->dq, &dqo);
        if (rc != 0) {
            free(sd);
            return rc;
        }
        struct diskq_info info;
        diskq_get_info(sd->dq, &info);
        sd->c.disk_dropped_seen = 0;
        if (info.pending_records > 0) {
            sd->oldest_ms = 0; /* Left by the last run: due now. */
        }
    }
    *out = sd;
    return 0;
}

int pipeline_add_exporter(struct pipeline *p, enum otlp_signal s, struct exporter *e)
{
    return pipeline_add_exporter_opts(p, s, e, NULL);
}

static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t n = *cap == 0 ? 4 : *cap;
    while (n < need) {
        n *= 2;
    }
    void *nv = realloc(*v, n * size);
    if (nv == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    *v = nv;
    *cap = n;
    return 0;
}

static void on_batch_timer(uv_timer_t *t);

int pipeline_add_exporter_opts(struct pipeline *p, enum otlp_signal s, struct exporter *e,
                               const struct pipeline_exporter_options *o)
{
    if (p == NULL || (unsigned)s >= OTLP_SIGNAL_COUNT || e == NULL || e->ops == NULL ||
        (e->ops->send == NULL && e->ops->export == NULL)) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (e->ops->send != NULL && p->loop == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct route *r = &p->routes[s];
    /* Attaching twice to one signal would export every request twice: make it a no-op. */
    if (route_has(r, e)) {
        return 0;
    }
    if (grow((void **)&r->v, &r->cap, r->n + 1, sizeof(*r->v)) != 0 ||
        grow((void **)&p->senders, &p->capsenders, p->nsenders + 1, sizeof(*p->senders)) != 0 ||
        grow((void **)&p->xports, &p->capxports, p->nxports + 1, sizeof(*p->xports)) != 0 ||
        grow((void **)&p->undo, &p->capundo, r->n + 1, sizeof(*p->undo)) != 0 ||
        grow((void **)&p->saves, &p->capsaves, r->n + 1, sizeof(*p->saves)) != 0) {
        return DLOTEL_ERR_NOMEM;
    }
    struct xport *x = xport_find(p, e);
    bool new_x = x == NULL;
    int rc;
    if (new_x && (rc = xport_new(&x, e, o)) != 0) {
        return rc;
    }
    struct sender *sd;
    if ((rc = sender_new(&sd, p, x, s)) != 0) {
        if (new_x) {
            xport_free(x);
        }
        return rc;
    }
    if (sd->queued) {
        uv_timer_init(p->loop, &sd->batch_timer);
        uv_timer_init(p->loop, &sd->retry_timer);
        sd->batch_timer.data = sd;
        sd->retry_timer.data = sd;
        uv_unref((uv_handle_t *)&sd->batch_timer);
        uv_unref((uv_handle_t *)&sd->retry_timer);
        if (sd->oldest_ms == 0) {
            /* Send what the last run left as soon as the loop runs. */
            uv_timer_start(&sd->batch_timer, on_batch_timer, 0, 0);
        }
    }
    if (new_x) {
        p->xports[p->nxports++] = x;
    }
    x->senders++;
    r->v[r->n++] = sd;
    p->senders[p->nsenders++] = sd;
    e->refs++;
    return 0;
}

/* ---- sending ------------------------------------------------------------------------------ */

static uint64_t max_bytes(const struct pipeline *p)
{
    return p->o.batch_max_bytes;
}

/* Finishes |b| (delivered or dropped): frees it, or for a disk queue commits what it can. */
static void finish_batch(struct sender *sd, struct batch *b)
{
    sd->slots--;
    sd->flight_bytes -= b->len;
    if (sd->dq == NULL) {
        mem_sub(sd, b->len);
        blist_remove(&sd->flight, b);
        batch_free(b);
        return;
    }
    b->state = B_DONE;
    buf_cleanup(&b->data);
    bool any = false;
    struct diskq_pos commit = {0, 0};
    while (sd->flight.head != NULL && sd->flight.head->state == B_DONE) {
        struct batch *h = sd->flight.head;
        if (!any || diskq_pos_cmp(h->end, commit) > 0) {
            commit = h->end;
        }
        any = true;
        blist_remove(&sd->flight, h);
        batch_free(h);
    }
    if (any) {
        diskq_commit(sd->dq, commit);
    }
}

static void drop_batch(struct sender *sd, struct batch *b, uint64_t *reason)
{
    sd->c.dropped_items += b->items;
    if (reason != NULL) {
        *reason += b->items;
    }
    finish_batch(sd, b);
}

static void arm_retry_timer(struct sender *sd)
{
    uint64_t next = UINT64_MAX;
    for (struct batch *b = sd->flight.head; b != NULL; b = b->next) {
        if (b->state == B_WAIT_RETRY && b->next_try_ms < next) {
            next = b->next_try_ms;
        }
    }
    if (next == UINT64_MAX) {
        uv_timer_stop(&sd->retry_timer);
        return;
    }
    uint64_t now = uv_now(sd->p->loop);
    uv_timer_start(&sd->retry_timer, on_retry_timer, next > now ? next - now : 0, 0);
}

static void handle_result(struct sender *sd, struct batch *b, const struct export_result *r)
{
    struct pipeline *p = sd->p;
    const struct pipeline_exporter_options *o = &sd->x->o;
    switch (r->outcome) {
    case EXPORT_OK:
        sd->c.sent_items += b->items;
        sd->c.sent_batches++;
        sd->c.rejected_items += r->rejected_items;
        sd->c.last_success_unix_nano = time_now_unix_nano();
        if (r->rejected_items > 0) {
            log_warn("pipeline", "%s: upstream rejected %" PRIu64 " of %" PRIu64 " items: %s",
                     sd->name, r->rejected_items, b->items, r->message);
        }
        finish_batch(sd, b);
        return;
    case EXPORT_RETRY: {
        set_error(sd, r->message);
        if (!o->retry.enabled) {
            log_warn("pipeline", "%s: batch of %" PRIu64 " items dropped (retry disabled): %s",
                     sd->name, b->items, r->message);
            drop_batch(sd, b, NULL);
            return;
        }
        uv_update_time(p->loop);
        uint64_t now = uv_now(p->loop);
        uint64_t backoff = pipeline_backoff_ns(o->retry.initial_interval_ns,
                                               o->retry.max_interval_ns, b->attempts, rng_next(p));
        uint64_t delay_ms =
            ns_to_ms_ceil(r->retry_after_ns > backoff ? r->retry_after_ns : backoff);
        if (delay_ms == 0) {
            delay_ms = 1; /* Never a busy loop, whatever the configuration says. */
        }
        uint64_t elapsed_ns = (now + delay_ms - b->first_send_ms) * 1000000;
        if (sd->dq == NULL && o->retry.max_elapsed_time_ns != 0 &&
            elapsed_ns > o->retry.max_elapsed_time_ns) {
            log_warn("pipeline",
                     "%s: batch of %" PRIu64 " items dropped after %u attempts "
                     "(retry.max_elapsed_time): %s",
                     sd->name, b->items, b->attempts, r->message);
            drop_batch(sd, b, &sd->c.dropped_expired_items);
            return;
        }
        if (b->attempts == 1) {
            log_warn("pipeline",
                     "%s: batch of %" PRIu64 " items failed, retrying in %" PRIu64 " ms: %s",
                     sd->name, b->items, delay_ms, r->message);
        } else {
            log_debug("pipeline", "%s: attempt %u failed, retrying in %" PRIu64 " ms: %s", sd->name,
                      b->attempts, delay_ms, r->message);
        }
        b->state = B_WAIT_RETRY;
        b->next_try_ms = now + delay_ms;
        sd->waiting++;
        sd->c.retried_batches++;
        arm_retry_timer(sd);
        return;
    }
    default:
        set_error(sd, r->message);
        log_warn("pipeline", "%s: batch of %" PRIu64 " items dropped, the upstream refused it: %s",
                 sd->name, b->items, r->message);
        sd->c.failed_items += b->items;
        sd->c.failed_batches++;
        drop_batch(sd, b, NULL);
        return;
    }
}

static void on_send_done(void *userdata, const struct export_result *r)
{
    struct batch *b = userdata;
    struct sender *sd = b->sd;
    if (sd == NULL) {
        /* The pipeline is gone; the exporter outlived it. */
        batch_free(b);
        return;
    }
    if (b->state != B_SENDING) {
        log_error("pipeline", "%s: exporter answered a batch twice (a bug)", sd->name);
        return;
    }
    handle_result(sd, b, r);
    sender_pump(sd);
    check_drain(sd->p);
}

static void send_batch(struct sender *sd, struct batch *b, uint64_t now)
{
    static const uint8_t empty[1];
    if (b->attempts == 0) {
        b->first_send_ms = now;
        b->len = b->data.len;
        blist_push(&sd->flight, b);
        sd->slots++;
        sd->flight_bytes += b->len;
        if (b->oversized) {
            sd->c.oversized_batches++;
        }
    }
    b->state = B_SENDING;
    b->attempts++;
    struct exporter *e = sd->x->e;
    const uint8_t *data = b->data.data != NULL ? b->data.data : empty;
    int rc = e->ops->send(e, sd->signal, data, b->data.len, b->items, on_send_done, b);
    if (rc != 0) {
        struct export_result r = {.outcome = EXPORT_RETRY, .grpc_status = -1};
        snprintf(r.message, sizeof(r.message), "cannot send: %s", dlotel_strerror(rc));
        handle_result(sd, b, &r);
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    struct sender *sd = t->data;
    if (sd->p->stopped || sd->p->closing) {
        return;
    }
    uint64_t now = uv_now(sd->p->loop);
    /* Restart the walk after each send: a send that fails at once may free batches. */
    for (;;) {
        struct batch *due = NULL;
        for (struct batch *b = sd->flight.head; b != NULL; b = b->next) {
            if (b->state == B_WAIT_RETRY && b->next_try_ms <= now) {
                due = b;
                break;
            }
        }
        if (due == NULL) {
            break;
        }
        sd->waiting--;
        send_batch(sd, due, now);
    }
    arm_retry_timer(sd);
    sender_pump(sd);
}

/* ---- forming batches ---------------------------------------------------------------------- */

static void seal(struct batch *b)
{
    if (b->state == B_OPEN) {
        b->state = B_READY;
        if (b->sd != NULL) {
            b->sd->last_batch_len = b->data.len;
        }
    }
}

/* The next batch of a memory queue, or NULL when none is due. */
static struct batch *next_memory_batch(struct sender *sd, uint64_t now)
{
    struct pipeline *p = sd->p;
    struct batch *b = sd->queue.head;
    if (b == NULL) {
        return NULL;
    }
    if (b->state == B_OPEN) {
        if (!p->draining && now < b->created_ms + ns_to_ms_ceil(p->o.batch_timeout_ns)) {
            return NULL;
        }
        b->state = B_READY;
    }
    blist_remove(&sd->queue, b);
    sd->queue_items -= b->items;
    sd->queue_bytes -= b->data.len;
    return b;
}

/*
 * Turns |rec|, a record too large for one batch whose payload is |whole|, into |b| (empty) and
 * batches of further pieces that wait in sd->queue. Every piece but the last commits nothing
 * new; the last commits the record. When it cannot be split (one item larger than a batch, or
 * no memory for the pieces), |b| takes the whole record, to be sent alone: once read, a record
 * is never left behind, or later commits would pass it.
 */
static void split_record(struct sender *sd, const struct diskq_record *rec, struct buf *whole,
                         struct batch *b)
{
    struct pipeline *p = sd->p;
    size_t max = max_bytes(p);
    split_out_reset(&p->split);
    p->split.data.max = (size_t)rec->len * SPLIT_GROWTH + max;
    int rc = split_request(sd->signal, whole->data, whole->len, max, &p->split);
    if (rc == 0 && p->split.n > 1) {
        struct blist rest = {0};
        bool ok = true;
        for (size_t i = 1; i < p->split.n && ok; i++) {
            const struct split_piece *pc = &p->split.pieces[i];
            struct batch *nb = batch_new(sd, pc->len > max ? pc->len : max);
            ok = nb != NULL && buf_append(&nb->data, p->split.data.data + pc->offset, pc->len) == 0;
            if (nb != NULL) {
                nb->items = pc->items;
                nb->state = B_READY;
                nb->oversized = pc->len > max;
                nb->end = i + 1 == p->split.n ? rec->end : rec->start;
                blist_push(&rest, nb);
            }
        }
        const struct split_piece *first = &p->split.pieces[0];
        if (ok) {
            buf_cleanup(&b->data);
            buf_init(&b->data, first->len > max ? first->len : max);
            ok = buf_append(&b->data, p->split.data.data + first->offset, first->len) == 0;
        }
        if (ok) {
            b->items = first->items;
            b->oversized = first->len > max;
            b->end = rec->start;
            while (rest.head != NULL) {
                struct batch *nb = rest.head;
                blist_remove(&rest, nb);
                blist_push(&sd->queue, nb);
            }
            split_out_reset(&p->split);
            return;
        }
        while (rest.head != NULL) {
            struct batch *nb = rest.head;
            blist_remove(&rest, nb);
            batch_free(nb);
        }
        rc = DLOTEL_ERR_NOMEM;
    }
    split_out_reset(&p->split);
    if (rc == 0 || rc == DLOTEL_ERR_TOO_LARGE) {
        log_warn("pipeline",
                 "%s: a request of %" PRIu32 " bytes holds an item larger than "
                 "batch.max_bytes: sent alone",
                 sd->name, rec->len);
    } else {
        log_warn("pipeline",
                 "%s: a queued request of %" PRIu32 " bytes cannot be split (%s): "
                 "sent whole",
                 sd->name, rec->len, dlotel_strerror(rc));
    }
    buf_cleanup(&b->data);
    b->data = *whole;
    buf_init(whole, 0);
    b->items = rec->items;
    b->oversized = true;
    b->end = rec->end;
}

/* The next batch of a disk queue, or NULL when none is due. */
static struct batch *next_disk_batch(struct sender *sd, uint64_t now)
{
    struct pipeline *p = sd->p;
    if (sd->queue.head != NULL) {
        struct batch *b = sd->queue.head;
        blist_remove(&sd->queue, b);
        return b;
    }
    if (now < sd->stall_until_ms) {
        return NULL;
    }
    struct diskq_info info;
    diskq_get_info(sd->dq, &info);
    if (info.pending_records == 0) {
        sd->oldest_ms = UINT64_MAX;
        sd->flush_mark_set = false;
        return NULL;
    }
    bool force = p->draining;
    if (sd->flush_mark_set) {
        if (diskq_pos_cmp(info.read, sd->flush_mark) < 0) {
            force = true;
        } else {
            sd->flush_mark_set = false;
        }
    }
    bool full = info.pending_items >= p->o.batch_max_items || info.pending_bytes >= max_bytes(p);
    bool due =
        sd->oldest_ms == UINT64_MAX || now >= sd->oldest_ms + ns_to_ms_ceil(p->o.batch_timeout_ns);
    if (!force && !full && !due) {
        return NULL;
    }
    if (sd->x->o.disk_queue.fsync == PIPELINE_FSYNC_BATCH) {
        diskq_sync(sd->dq);
    }

    struct batch *b = batch_new(sd, max_bytes(p));
    if (b == NULL) {
        sd->stall_until_ms = now + 1000;
        return NULL;
    }
    /* One allocation for the whole batch, which records are read straight into. */
    buf_reserve(&b->data, info.pending_bytes < max_bytes(p) ? info.pending_bytes : max_bytes(p));
    size_t records = 0;
    int rc = 0;
    for (;;) {
        struct diskq_record rec;
        if ((rc = diskq_peek(sd->dq, &rec)) != 0) {
            break;
        }
        if (records > 0 && b->data.len + rec.len > max_bytes(p)) {
            break;
        }
        if (records == 0 && rec.len > max_bytes(p)) {
            struct buf whole;
            buf_init(&whole, rec.len);
            if ((rc = diskq_read(sd->dq, &rec, &whole)) != 0) {
                buf_cleanup(&whole);
                break;
            }
            split_record(sd, &rec, &whole, b);
            buf_cleanup(&whole);
            records = 1;
            break;
        }
        if ((rc = diskq_read(sd->dq, &rec, &b->data)) != 0) {
            break;
        }
        b->items += rec.items;
        b->end = rec.end;
        records++;
        if (b->items >= p->o.batch_max_items) {
            break;
        }
    }
    if (rc != 0 && rc != DLOTEL_ERR_NOT_FOUND) {
        sd->stall_until_ms = now + 1000;
    }
    diskq_get_info(sd->dq, &info);
    if (info.pending_records == 0) {
        sd->oldest_ms = UINT64_MAX;
    }
    if (records == 0) {
        batch_free(b);
        return NULL;
    }
    b->state = B_READY;
    return b;
}

/*
 * From a failure until a retry of it succeeds the sender backs off: it sends nothing new, so
 * order is kept and the backlog waits in the queue (on disk, when there is one).
 */
static bool backing_off(const struct sender *sd)
{
    if (sd->waiting > 0) {
        return true;
    }
    for (const struct batch *b = sd->flight.head; b != NULL; b = b->next) {
        if (b->state == B_SENDING && b->attempts > 1) {
            return true;
        }
    }
    return false;
}

static bool sender_has_data(struct sender *sd)
{
    if (sd->queue.head != NULL) {
        return true;
    }
    if (sd->dq != NULL) {
        struct diskq_info info;
        diskq_get_info(sd->dq, &info);
        return info.pending_records > 0;
    }
    return false;
}

static void on_batch_timer(uv_timer_t *t)
{
    sender_pump(t->data);
}

/* Sets the batch timer for the moment the next batch is due, when the sender could send it. */
static void arm_batch_timer(struct sender *sd, uint64_t now)
{
    struct pipeline *p = sd->p;
    if (p->stopped || p->closing || backing_off(sd) || sd->slots >= sd->x->o.max_in_flight ||
        sd->flight.n >= (size_t)sd->x->o.max_in_flight * FLIGHT_LIST_FACTOR ||
        !sender_has_data(sd)) {
        uv_timer_stop(&sd->batch_timer);
        return;
    }
    uint64_t timeout = ns_to_ms_ceil(p->o.batch_timeout_ns);
    uint64_t due;
    if (sd->dq == NULL) {
        struct batch *h = sd->queue.head;
        due = h->state == B_OPEN ? h->created_ms + timeout : now;
    } else if (sd->queue.head != NULL) {
        due = now;
    } else {
        due = sd->oldest_ms == UINT64_MAX ? now : sd->oldest_ms + timeout;
        if (due < sd->stall_until_ms) {
            due = sd->stall_until_ms;
        }
    }
    if (p->draining && due > now && sd->stall_until_ms <= now) {
        due = now;
    }
    uv_timer_start(&sd->batch_timer, on_batch_timer, due > now ? due - now : 0, 0);
}

static void sender_pump(struct sender *sd)
{
    if (!sd->queued) {
        return;
    }
    if (sd->pumping) {
        sd->repump = true;
        return;
    }
    struct pipeline *p = sd->p;
    sd->pumping = true;
    uint64_t now = uv_now(p->loop);
    do {
        sd->repump = false;
        if (p->stopped || p->closing) {
            break;
        }
        uint32_t max = sd->x->o.max_in_flight;
        while (!backing_off(sd) && sd->slots < max &&
               sd->flight.n < (size_t)max * FLIGHT_LIST_FACTOR) {
            struct batch *b =
                sd->dq != NULL ? next_disk_batch(sd, now) : next_memory_batch(sd, now);
            if (b == NULL) {
                break;
            }
            send_batch(sd, b, now);
        }
    } while (sd->repump);
    sd->pumping = false;
    arm_batch_timer(sd, now);
}

/* ---- submitting --------------------------------------------------------------------------- */

static void mq_save(const struct sender *sd, struct mq_save *s)
{
    s->tail = sd->queue.tail;
    if (s->tail != NULL) {
        s->tail_len = s->tail->data.len;
        s->tail_items = s->tail->items;
        s->tail_state = s->tail->state;
    }
    s->queue_items = sd->queue_items;
    s->queue_bytes = sd->queue_bytes;
    s->mem = sd->mem_bytes;
}

static void mq_rollback(struct sender *sd, const struct mq_save *s)
{
    while (sd->queue.tail != s->tail) {
        struct batch *b = sd->queue.tail;
        blist_remove(&sd->queue, b);
        batch_free(b);
    }
    if (s->tail != NULL) {
        s->tail->data.len = s->tail_len;
        s->tail->items = s->tail_items;
        s->tail->state = s->tail_state;
    }
    sd->queue_items = s->queue_items;
    sd->queue_bytes = s->queue_bytes;
    mem_sub(sd, sd->mem_bytes - s->mem);
}

/* Appends one request (or piece) to the open batch of a memory queue. */
static int mq_append(struct sender *sd, const uint8_t *data, size_t len, uint64_t items,
                     uint64_t now)
{
    struct pipeline *p = sd->p;
    struct batch *b = sd->queue.tail;
    if (b != NULL && b->state == B_OPEN && b->data.len > 0 && b->data.len + len > max_bytes(p)) {
        seal(b);
    }
    if (b == NULL || b->state != B_OPEN) {
        b = batch_new(sd, len > max_bytes(p) ? len : max_bytes(p));
        if (b == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        b->state = B_OPEN;
        b->created_ms = now;
        b->oversized = len > max_bytes(p);
        blist_push(&sd->queue, b);
        /*
         * Sized like the last batch: under steady traffic the buffer is allocated once, and
         * requests are copied once, straight into it, rather than again on every doubling.
         */
        size_t want = sd->last_batch_len > len ? sd->last_batch_len : len;
        buf_reserve(&b->data, want < b->data.max ? want : b->data.max);
    }
    int rc = buf_append(&b->data, data, len);
    if (rc != 0) {
        return rc;
    }
    b->items += items;
    sd->queue_items += items;
    sd->queue_bytes += len;
    mem_add(sd, len);
    if (b->items >= p->o.batch_max_items || b->data.len >= max_bytes(p)) {
        seal(b);
    }
    return 0;
}

static void refuse(struct pipeline *p, uint64_t items, pipeline_done_fn done, void *userdata,
                   int status, const char *detail)
{
    p->totals.refused_requests++;
    p->totals.refused_items += items;
    done(userdata, status, detail);
}

static void on_sync_timer(uv_timer_t *t);

/*
 * A request that storing exporters (ops->export_async: the sink) take asynchronously is answered
 * only when every one of them has finished, so the client's 200 means "durable". The join holds
 * one reference for each pending export_async, plus one for pipeline_submit() itself until it has
 * called every exporter (and, with fsync=always, until the group commit).
 */
struct join {
    pipeline_done_fn done;
    void *userdata;
    int pending;
    int status;
    char detail[sizeof(((struct export_result *)0)->message) + 96];
};

struct async_call {
    struct join *j;
    struct sender *sd;
    uint64_t items;
};

static void join_release(struct join *j, int status, const char *detail)
{
    if (status != 0 && j->status == 0) {
        j->status = status;
        snprintf(j->detail, sizeof(j->detail), "%s", detail != NULL ? detail : "");
    }
    if (--j->pending > 0) {
        return;
    }
    j->done(j->userdata, j->status, j->status == 0 ? NULL : j->detail);
    free(j);
}

/* The group commit answers through this when a join waits for it (pipeline_done_fn). */
static void join_on_ack(void *userdata, int status, const char *detail)
{
    join_release(userdata, status, detail);
}

static void on_async_done(void *userdata, const struct export_result *res)
{
    struct async_call *ac = userdata;
    struct sender *sd = ac->sd;
    char detail[sizeof(res->message) + 96];
    int status = 0;
    if (res->outcome == EXPORT_OK) {
        sd->c.sent_items += ac->items;
        sd->c.sent_batches++;
        sd->c.last_success_unix_nano = time_now_unix_nano();
    } else {
        sd->c.failed_items += ac->items;
        sd->c.failed_batches++;
        sd->c.dropped_items += ac->items;
        set_error(sd, res->message);
        log_warn("pipeline", "exporter %s could not store a request: %s", sd->x->name,
                 res->message);
        /* EXPORT_RETRY: the client may send again (503); EXPORT_PERMANENT: it must not (400). */
        status = res->outcome == EXPORT_RETRY ? DLOTEL_ERR_IO : DLOTEL_ERR_BAD_INPUT;
        snprintf(detail, sizeof(detail), "exporter %s: %s", sd->x->name, res->message);
    }
    struct join *j = ac->j;
    free(ac);
    join_release(j, status, status == 0 ? NULL : detail);
}

static void submit_encoded(struct pipeline *p, enum otlp_signal s, const uint8_t *pb, size_t len,
                           const struct otlp_counts *counts, pipeline_done_fn done, void *userdata);

void pipeline_set_processor(struct pipeline *p, enum otlp_signal s, pipeline_process_fn fn,
                            void *userdata)
{
    if ((unsigned)s < OTLP_SIGNAL_COUNT) {
        p->processors[s].fn = fn;
        p->processors[s].userdata = userdata;
    }
}

/*
 * What follows a chain's run, on the loop: a refusal, an answer for a request whose every item
 * was dropped, or the fast path with the processed bytes. |out| stays the caller's.
 */
static void after_process(struct pipeline *p, enum otlp_signal s, int rc, uint64_t items,
                          const struct buf *out, const struct otlp_counts *pc,
                          pipeline_done_fn done, void *userdata)
{
    if (rc != 0) {
        p->totals.failed_requests++;
        done(userdata, rc, "the processors could not handle the request");
        return;
    }
    p->totals.processed_dropped_items += items > pc->items ? items - pc->items : 0;
    if (pc->items == 0) {
        /* Every item dropped, as configured: the client's request succeeded. */
        p->totals.accepted_requests++;
        done(userdata, 0, NULL);
        return;
    }
    submit_encoded(p, s, out->data, out->len, pc, done, userdata);
}

static void proc_work(uv_work_t *req);
static void proc_after(uv_work_t *req, int status);

/* Hands the oldest job of |s| to the thread pool unless one of |s| is there already. */
static void proc_start(struct pipeline *p, enum otlp_signal s)
{
    struct proc_queue *q = &p->procq[s];
    if (q->running || q->head == NULL || p->closing) {
        return;
    }
    q->running = true;
    /* The job holds the pipeline's memory until its after-work callback ran (pipeline_free). */
    p->handles++;
    q->head->req.data = q->head;
    uv_queue_work(p->loop, &q->head->req, proc_work, proc_after);
}

static void proc_job_free(struct proc_job *j)
{
    free(j->in);
    buf_cleanup(&j->out);
    free(j);
}

/* On a pool thread: the chain, and nothing of the pipeline's. */
static void proc_work(uv_work_t *req)
{
    struct proc_job *j = req->data;
    j->rc = j->fn(j->fn_userdata, j->signal, j->in, j->len, &j->out, &j->counts);
    free(j->in);
    j->in = NULL;
}

/* Removes the head job of its signal's queue and gives its bytes back. */
static void proc_pop(struct pipeline *p, struct proc_job *j)
{
    struct proc_queue *q = &p->procq[j->signal];
    q->head = j->next;
    if (q->head == NULL) {
        q->tail = NULL;
    }
    p->proc_requests--;
    p->proc_bytes -= j->len;
}

/*
 * Answers every job that is waiting for its chain (not the ones in the pool) with
 * DLOTEL_ERR_CLOSED: the drain gave up, or the pipeline is freed.
 */
static void proc_abort_waiting(struct pipeline *p)
{
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        struct proc_queue *q = &p->procq[s];
        struct proc_job **at = q->running ? &q->head->next : &q->head;
        while (*at != NULL) {
            struct proc_job *j = *at;
            *at = j->next;
            p->proc_requests--;
            p->proc_bytes -= j->len;
            p->totals.failed_requests++;
            j->done(j->userdata, DLOTEL_ERR_CLOSED, "the agent is shutting down");
            proc_job_free(j);
        }
        q->tail = q->running ? q->head : NULL;
    }
}

/* Back on the loop: continue as pipeline_submit() does without processors. */
static void proc_after(uv_work_t *req, int status)
{
    struct proc_job *j = req->data;
    struct pipeline *p = j->p;
    enum otlp_signal s = j->signal;
    proc_pop(p, j);
    p->procq[s].running = false;
    if (status != 0 || p->closing || p->stopped) {
        /* Cancelled (never, today), or the pipeline stopped while the chain ran. */
        p->totals.failed_requests++;
        j->done(j->userdata, DLOTEL_ERR_CLOSED, "the agent is shutting down");
    } else {
        /* May call back into the pipeline, even free it: this job's handle keeps |p| alive. */
        after_process(p, s, j->rc, j->items, &j->out, &j->counts, j->done, j->userdata);
    }
    proc_job_free(j);
    if (!p->closing) {
        proc_start(p, s);
        check_drain(p);
    }
    if (--p->handles == 0) {
        free_memory(p);
    }
}

/* A pipeline without a loop (tools, tests) runs the chain in the call, as there is no pool. */
static void process_inline(struct pipeline *p, enum otlp_signal s, const uint8_t *pb, size_t len,
                           uint64_t items, pipeline_done_fn done, void *userdata)
{
    struct buf out;
    buf_init(&out, len * 2 + PROCESS_OUT_SLACK);
    struct otlp_counts pc = {0};
    int rc = p->processors[s].fn(p->processors[s].userdata, s, pb, len, &out, &pc);
    /* The processed request lives in a buffer of its own for the length of this call
     * (exporters copy what they keep), so a done() that submits again is safe. */
    after_process(p, s, rc, items, &out, &pc, done, userdata);
    buf_cleanup(&out);
}

void pipeline_submit(struct pipeline *p, enum otlp_signal s, const uint8_t *pb, size_t len,
                     const struct otlp_counts *counts, pipeline_done_fn done, void *userdata)
{
    if ((unsigned)s >= OTLP_SIGNAL_COUNT || p->processors[s].fn == NULL || p->stopped ||
        p->closing) {
        submit_encoded(p, s, pb, len, counts, done, userdata);
        return;
    }
    uint64_t items = counts != NULL ? counts->items : 0;
    if (p->loop == NULL) {
        process_inline(p, s, pb, len, items, done, userdata);
        return;
    }
    /*
     * The decode path. |pb| is the caller's only for this call, so the job takes a copy; the
     * copies of all jobs are bounded by processing_max_bytes, so that a flood of requests
     * faster than the chains meets 429s rather than growing memory.
     */
    char detail[160];
    uint64_t max = p->o.processing_max_bytes;
    if (len > max) {
        snprintf(detail, sizeof(detail),
                 "request of %zu bytes larger than the processors may hold (%" PRIu64 " bytes)",
                 len, max);
        refuse(p, items, done, userdata, DLOTEL_ERR_TOO_LARGE, detail);
        return;
    }
    if (p->proc_bytes + len > max) {
        refuse(p, items, done, userdata, DLOTEL_ERR_FULL,
               "the processors are busy: too many bytes waiting for them");
        return;
    }
    struct proc_job *j = calloc(1, sizeof(*j));
    uint8_t *in = malloc(len > 0 ? len : 1);
    if (j == NULL || in == NULL) {
        free(j);
        free(in);
        p->totals.failed_requests++;
        done(userdata, DLOTEL_ERR_NOMEM, "out of memory");
        return;
    }
    if (len > 0) {
        memcpy(in, pb, len);
    }
    j->p = p;
    j->signal = s;
    j->fn = p->processors[s].fn;
    j->fn_userdata = p->processors[s].userdata;
    j->in = in;
    j->len = len;
    j->items = items;
    buf_init(&j->out, len * 2 + PROCESS_OUT_SLACK);
    j->done = done;
    j->userdata = userdata;
    struct proc_queue *q = &p->procq[s];
    if (q->tail != NULL) {
        q->tail->next = j;
    } else {
        q->head = j;
    }
    q->tail = j;
    p->proc_requests++;
    p->proc_bytes += len;
    proc_start(p, s);
}

static void submit_encoded(struct pipeline *p, enum otlp_signal s, const uint8_t *pb, size_t len,
                           const struct otlp_counts *counts, pipeline_done_fn done, void *userdata)
{
    if ((unsigned)s >= OTLP_SIGNAL_COUNT) {
        done(userdata, DLOTEL_ERR_INVALID_ARG, "unknown signal");
        return;
    }
    uint64_t items = counts != NULL ? counts->items : 0;
    if (p->stopped || p->closing) {
        p->totals.failed_requests++;
        done(userdata, DLOTEL_ERR_CLOSED, "the agent is shutting down");
        return;
    }
    const struct route *r = &p->routes[s];
    char detail[192];
    uint64_t now = now_ms(p);

    /*
     * First every memory queue must have room: a request refused by one goes to no exporter,
     * so a client's retry never duplicates it into the others.
     */
    size_t n_mem = 0;
    for (size_t i = 0; i < r->n; i++) {
        n_mem += r->v[i]->queued && r->v[i]->dq == NULL;
    }
    const struct split_out *pieces = NULL;
    uint64_t need = len;
    if (n_mem > 0 && len > max_bytes(p)) {
        split_out_reset(&p->split);
        p->split.data.max = len * SPLIT_GROWTH + max_bytes(p);
        int rc = split_request(s, pb, len, max_bytes(p), &p->split);
        if (rc == 0 && p->split.n > 1) {
            pieces = &p->split;
            need = p->split.data.len;
            p->totals.split_requests++;
        } else {
            log_warn("pipeline",
                     "a %s request of %zu bytes cannot be split under %" PRIu64
                     " bytes (%s): queued whole",
                     otlp_signal_name(s), len, max_bytes(p),
                     rc == 0 ? "one item larger than batch.max_bytes" : dlotel_strerror(rc));
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        struct sender *sd = r->v[i];
        if (!sd->queued || sd->dq != NULL) {
            continue;
        }
        uint64_t cap = sd->x->o.memory_queue_max_bytes;
        if (need > cap || need * n_mem > p->o.memory_max_bytes) {
            sd->c.refused_requests++;
            sd->c.refused_items += items;
            snprintf(detail, sizeof(detail),
                     "request of %" PRIu64 " bytes larger than the "
                     "queue of exporter %s",
                     need, sd->x->name);
            refuse(p, items, done, userdata, DLOTEL_ERR_TOO_LARGE, detail);
            return;
        }
        if (sd->x->mem_bytes + need > cap) {
            sd->c.refused_requests++;
            sd->c.refused_items += items;
            snprintf(detail, sizeof(detail), "the queue of exporter %s is full", sd->x->name);
            refuse(p, items, done, userdata, DLOTEL_ERR_FULL, detail);
            return;
        }
    }
    if (p->mem_bytes + need * n_mem > p->o.memory_max_bytes) {
        for (size_t i = 0; i < r->n; i++) {
            if (r->v[i]->queued && r->v[i]->dq == NULL) {
                r->v[i]->c.refused_requests++;
                r->v[i]->c.refused_items += items;
            }
        }
        refuse(p, items, done, userdata, DLOTEL_ERR_FULL, "the agent's queues are full");
        return;
    }

    /* Then the disk queues, which may fail (ENOSPC): taken back from all if one does. */
    bool ack_after_sync = false;
    int rc = 0;
    uint32_t items32 = items > UINT32_MAX ? UINT32_MAX : (uint32_t)items;
    for (size_t i = 0; i < r->n && len > 0; i++) {
        struct sender *sd = r->v[i];
        if (sd->dq == NULL) {
            continue;
        }
        struct diskq_info info;
        diskq_get_info(sd->dq, &info);
        if ((rc = diskq_append(sd->dq, pb, len, items32, &p->undo[i])) != 0) {
            snprintf(detail, sizeof(detail), "cannot queue for exporter %s: %s", sd->x->name,
                     rc == DLOTEL_ERR_TOO_LARGE ? "larger than its disk queue"
                                                : "disk write failed");
            for (size_t j = 0; j < i; j++) {
                if (r->v[j]->dq != NULL) {
                    diskq_rollback(r->v[j]->dq, &p->undo[j]);
                }
            }
            if (rc == DLOTEL_ERR_TOO_LARGE) {
                sd->c.refused_requests++;
                sd->c.refused_items += items;
                refuse(p, items, done, userdata, rc, detail);
            } else {
                p->totals.failed_requests++;
                done(userdata, rc, detail);
            }
            return;
        }
        if (info.pending_records == 0) {
            sd->oldest_ms = now;
        }
        if (sd->x->o.disk_queue.fsync == PIPELINE_FSYNC_ALWAYS) {
            ack_after_sync = true;
        }
    }

    /* Then the memory queues; only memory can fail here. */
    struct mq_save *saves = p->saves;
    for (size_t i = 0; i < r->n && len > 0; i++) {
        struct sender *sd = r->v[i];
        if (!sd->queued || sd->dq != NULL) {
            continue;
        }
        mq_save(sd, &saves[i]);
        if (pieces == NULL) {
            rc = mq_append(sd, pb, len, items, now);
        } else {
            for (size_t k = 0; k < pieces->n && rc == 0; k++) {
                const struct split_piece *pc = &pieces->pieces[k];
                rc = mq_append(sd, pieces->data.data + pc->offset, pc->len, pc->items, now);
            }
        }
        if (rc != 0) {
            for (size_t j = 0; j < r->n; j++) {
                if (r->v[j]->dq != NULL) {
                    diskq_rollback(r->v[j]->dq, &p->undo[j]);
                } else if (r->v[j]->queued && j <= i) {
                    mq_rollback(r->v[j], &saves[j]);
                }
            }
            p->totals.failed_requests++;
            done(userdata, DLOTEL_ERR_NOMEM, "out of memory");
            return;
        }
    }
    if (pieces != NULL) {
        split_out_reset(&p->split);
    }

    /* Synchronous and storing exporters last: they cannot be taken back. */
    int first_rc = 0;
    struct join *j = NULL;
    for (size_t i = 0; i < r->n; i++) {
        struct sender *sd = r->v[i];
        if (sd->queued) {
            continue;
        }
        struct exporter *e = sd->x->e;
        int erc;
        if (e->ops->export_async != NULL) {
            struct async_call *ac = malloc(sizeof(*ac));
            if (j == NULL && ac != NULL && (j = calloc(1, sizeof(*j))) != NULL) {
                *j = (struct join){.done = done, .userdata = userdata, .pending = 1};
            }
            if (ac == NULL || j == NULL) {
                free(ac);
                erc = DLOTEL_ERR_NOMEM;
            } else {
                *ac = (struct async_call){j, sd, items};
                j->pending++;
                erc = e->ops->export_async(e, s, pb, len, counts, on_async_done, ac);
                if (erc == 0) {
                    continue;
                }
                j->pending--;
                free(ac);
            }
        } else {
            erc = e->ops->export(e, s, pb, len, counts != NULL ? counts : &(struct otlp_counts){0});
        }
        if (erc == 0) {
            sd->c.sent_items += items;
            sd->c.sent_batches++;
            sd->c.last_success_unix_nano = time_now_unix_nano();
            continue;
        }
        sd->c.failed_items += items;
        sd->c.failed_batches++;
        sd->c.dropped_items += items;
        set_error(sd, dlotel_strerror(erc));
        log_warn("pipeline", "exporter %s failed on %s: %s", sd->x->name, otlp_signal_name(s),
                 dlotel_strerror(erc));
        if (first_rc == 0) {
            first_rc = erc;
            snprintf(detail, sizeof(detail), "exporter %s: %s", sd->x->name, dlotel_strerror(erc));
        }
    }
    if (r->n == 0) {
        log_debug("pipeline", "no exporter for %s: request dropped", otlp_signal_name(s));
    }
    p->totals.accepted_requests++;
    p->totals.accepted_items += items;

    for (size_t i = 0; i < r->n; i++) {
        sender_pump(r->v[i]);
    }

    if (j != NULL) {
        /* From here the join answers the client, once the storing exporters have finished. */
        if (first_rc != 0 && j->status == 0) {
            j->status = first_rc;
            snprintf(j->detail, sizeof(j->detail), "%s", detail);
        }
        done = join_on_ack;
        userdata = j;
        first_rc = 0;
    }
    if (ack_after_sync) {
        if (grow((void **)&p->acks, &p->capacks, p->nacks + 1, sizeof(*p->acks)) == 0) {
            p->acks[p->nacks++] = (struct ack){done, userdata, first_rc};
            /*
             * Group commit: every append of this loop iteration shares one fdatasync, made
             * when the loop comes round to its timers.
             */
            if (!uv_is_active((uv_handle_t *)&p->sync_timer)) {
                uv_timer_start(&p->sync_timer, on_sync_timer, 0, 0);
            }
            return;
        }
        /* No memory to wait: sync now. */
        for (size_t i = 0; i < r->n; i++) {
            if (r->v[i]->dq != NULL && diskq_sync(r->v[i]->dq) != 0 && first_rc == 0) {
                first_rc = DLOTEL_ERR_IO;
                snprintf(detail, sizeof(detail), "cannot sync the disk queue");
            }
        }
    }
    done(userdata, first_rc, first_rc == 0 ? NULL : detail);
}

/* Syncs every disk queue with fsync=always written to, then answers the waiting clients. */
static void run_group_commit(struct pipeline *p)
{
    int rc = 0;
    for (size_t i = 0; i < p->nsenders; i++) {
        struct sender *sd = p->senders[i];
        if (sd->dq != NULL && sd->x->o.disk_queue.fsync == PIPELINE_FSYNC_ALWAYS &&
            diskq_dirty(sd->dq) && diskq_sync(sd->dq) != 0) {
            rc = DLOTEL_ERR_IO;
        }
    }
    while (p->nacks > 0) {
        /* Answers may submit again (not today's receivers, but cheap to allow). */
        size_t n = p->nacks;
        struct ack *acks = p->acks;
        p->acks = NULL;
        p->nacks = 0;
        p->capacks = 0;
        for (size_t i = 0; i < n; i++) {
            int status = acks[i].status != 0 ? acks[i].status : rc;
            acks[i].done(acks[i].userdata, status,
                         status == 0 ? NULL
                         : rc != 0   ? "cannot sync the disk queue"
                                     : "an exporter failed");
        }
        free(acks);
    }
}

static void on_sync_timer(uv_timer_t *t)
{
    run_group_commit(t->data);
}

/* ---- flush, drain ------------------------------------------------------------------------- */

static void seal_all(struct sender *sd)
{
    if (sd->dq == NULL) {
        if (sd->queue.tail != NULL) {
            seal(sd->queue.tail);
        }
        return;
    }
    struct diskq_info info;
    diskq_get_info(sd->dq, &info);
    if (info.pending_records > 0) {
        sd->flush_mark = info.end;
        sd->flush_mark_set = true;
    }
}

void pipeline_flush(struct pipeline *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->nsenders; i++) {
        struct sender *sd = p->senders[i];
        if (sd->queued) {
            seal_all(sd);
            sender_pump(sd);
        }
    }
    /* An exporter attached to several signals is flushed once. */
    for (size_t i = 0; i < p->nxports; i++) {
        struct exporter *e = p->xports[i]->e;
        if (e->ops->flush != NULL) {
            e->ops->flush(e);
        }
    }
}

static bool sender_idle(struct sender *sd)
{
    return !sd->queued || (sd->flight.n == 0 && !sender_has_data(sd));
}

static void finish_drain(struct pipeline *p, int status)
{
    p->draining = false;
    p->stopped = true;
    uv_timer_stop(&p->drain_timer);
    uv_unref((uv_handle_t *)&p->drain_timer);
    /* At the timeout: what still waits for a chain is refused; what is in one, when it ends. */
    proc_abort_waiting(p);
    for (size_t i = 0; i < p->nsenders; i++) {
        struct sender *sd = p->senders[i];
        if (!sd->queued) {
            continue;
        }
        uv_timer_stop(&sd->batch_timer);
        uv_timer_stop(&sd->retry_timer);
        if (status == 0) {
            continue;
        }
        if (sd->dq != NULL) {
            struct diskq_info info;
            diskq_get_info(sd->dq, &info);
            if (info.pending_records > 0 || sd->flight.n > 0) {
                log_warn("pipeline", "%s: %" PRIu64 " items stay on disk for the next start",
                         sd->name, info.pending_items);
            }
            continue;
        }
        uint64_t items = 0;
        while (sd->queue.head != NULL) {
            struct batch *b = sd->queue.head;
            blist_remove(&sd->queue, b);
            items += b->items;
            mem_sub(sd, b->data.len);
            batch_free(b);
        }
        sd->queue_items = sd->queue_bytes = 0;
        if (items > 0) {
            sd->c.dropped_items += items;
            sd->c.dropped_shutdown_items += items;
            log_warn("pipeline", "%s: shutdown timeout: %" PRIu64 " queued items dropped", sd->name,
                     items);
        }
    }
    pipeline_drained_fn cb = p->drain_cb;
    p->drain_cb = NULL;
    if (cb != NULL) {
        cb(p->drain_userdata, status);
    }
}

static void on_drain_timer(uv_timer_t *t)
{
    struct pipeline *p = t->data;
    if (!p->draining) {
        return;
    }
    /* Requests in processing are in the pipeline: they still have exporters to reach. */
    bool idle = p->proc_requests == 0;
    for (size_t i = 0; i < p->nsenders && idle; i++) {
        idle = sender_idle(p->senders[i]);
    }
    uint64_t now = uv_now(p->loop);
    if (idle) {
        finish_drain(p, 0);
    } else if (now >= p->drain_deadline_ms) {
        finish_drain(p, DLOTEL_ERR_TIMEOUT);
    } else {
        uv_timer_start(&p->drain_timer, on_drain_timer, p->drain_deadline_ms - now, 0);
    }
}

/*
 * After a batch finished or a request left its processors: when draining and everything is sent,
 * finish from the timer.
 */
static void check_drain(struct pipeline *p)
{
    if (!p->draining || p->proc_requests > 0) {
        return;
    }
    for (size_t i = 0; i < p->nsenders; i++) {
        if (!sender_idle(p->senders[i])) {
            return;
        }
    }
    uv_timer_start(&p->drain_timer, on_drain_timer, 0, 0);
}

int pipeline_drain(struct pipeline *p, uint64_t timeout_ns, pipeline_drained_fn cb, void *userdata)
{
    if (p->draining || p->stopped || p->closing) {
        return DLOTEL_ERR_CLOSED;
    }
    if (p->loop == NULL) {
        p->stopped = true;
        if (cb != NULL) {
            cb(userdata, 0);
        }
        return 0;
    }
    p->draining = true;
    p->drain_cb = cb;
    p->drain_userdata = userdata;
    uv_update_time(p->loop);
    p->drain_deadline_ms = uv_now(p->loop) + ns_to_ms_ceil(timeout_ns);
    uv_ref((uv_handle_t *)&p->drain_timer);
    uv_timer_start(&p->drain_timer, on_drain_timer, 0, 0);
    for (size_t i = 0; i < p->nsenders; i++) {
        struct sender *sd = p->senders[i];
        if (sd->queued) {
            seal_all(sd);
            sender_pump(sd);
        }
    }
    return 0;
}

/* ---- counters ----------------------------------------------------------------------------- */

/* Folds the disk queue's drops (cap, corruption) into the sender's counters. */
static void sync_disk_drops(struct sender *sd, const struct diskq_info *info)
{
    uint64_t fresh = info->dropped_items - sd->c.disk_dropped_seen;
    if (fresh > 0) {
        sd->c.disk_dropped_seen = info->dropped_items;
        sd->c.dropped_items += fresh;
        sd->c.dropped_cap_items += fresh;
    }
}

size_t pipeline_get_stats(const struct pipeline *p, struct pipeline_stats *out, size_t max)
{
    for (size_t i = 0; i < p->nsenders && i < max; i++) {
        struct sender *sd = p->senders[i];
        struct pipeline_stats *st = &out[i];
        memset(st, 0, sizeof(*st));
        if (sd->dq != NULL) {
            struct diskq_info info;
            diskq_get_info(sd->dq, &info);
            sync_disk_drops(sd, &info);
            st->disk_items = info.pending_items;
            st->disk_bytes = info.bytes;
            st->disk_syncs = info.syncs;
            st->disk = true;
        }
        const struct counters *c = &sd->c;
        st->exporter = sd->x->name;
        st->kind = sd->x->e->ops->kind;
        st->signal = sd->signal;
        st->queued = sd->queued;
        st->sent_items = c->sent_items;
        st->sent_batches = c->sent_batches;
        st->failed_items = c->failed_items;
        st->failed_batches = c->failed_batches;
        st->retried_batches = c->retried_batches;
        st->dropped_items = c->dropped_items;
        st->dropped_expired_items = c->dropped_expired_items;
        st->dropped_cap_items = c->dropped_cap_items;
        st->dropped_shutdown_items = c->dropped_shutdown_items;
        st->rejected_items = c->rejected_items;
        st->refused_requests = c->refused_requests;
        st->refused_items = c->refused_items;
        st->oversized_batches = c->oversized_batches;
        st->queue_items = sd->queue_items;
        st->queue_bytes = sd->queue_bytes;
        st->in_flight_batches = sd->slots;
        st->in_flight_bytes = sd->flight_bytes;
        st->last_success_unix_nano = c->last_success_unix_nano;
        st->last_error_unix_nano = c->last_error_unix_nano;
        memcpy(st->last_error, c->last_error, sizeof(st->last_error));
    }
    return p->nsenders;
}

void pipeline_get_totals(const struct pipeline *p, struct pipeline_totals *out)
{
    *out = p->totals;
    out->memory_bytes = p->mem_bytes;
    out->processing_requests = p->proc_requests;
    out->processing_bytes = p->proc_bytes;
}

/* ---- teardown ----------------------------------------------------------------------------- */

/*
 * Hands the batches |sd| has in the exporter's hands to the exporter: their buffers must stay
 * valid until it answers (it may be reading them on a worker thread, compressing), so they are
 * freed by on_send_done() when it does, from destroy or later. An exporter that never answers a
 * send leaks that batch; one that answers after destroy returned would touch freed memory of
 * its own, so the contract is: every successful send() is answered exactly once.
 */
static void sender_orphan_sending(struct sender *sd)
{
    struct batch *b = sd->flight.head;
    while (b != NULL) {
        struct batch *next = b->next;
        if (b->state == B_SENDING) {
            blist_remove(&sd->flight, b);
            sd->slots--;
            if (sd->dq == NULL) {
                sd->c.dropped_items += b->items;
                sd->c.dropped_shutdown_items += b->items;
            }
            b->sd = NULL;
        }
        b = next;
    }
}

/* Frees what a sender still holds; memory-only items are counted as dropped. */
static void sender_release(struct sender *sd)
{
    uint64_t dropped = 0;
    while (sd->queue.head != NULL) {
        struct batch *b = sd->queue.head;
        blist_remove(&sd->queue, b);
        dropped += b->items;
        batch_free(b);
    }
    while (sd->flight.head != NULL) {
        struct batch *b = sd->flight.head;
        blist_remove(&sd->flight, b);
        if (b->state != B_DONE) {
            dropped += b->items;
        }
        batch_free(b);
    }
    if (sd->dq == NULL && dropped > 0) {
        sd->c.dropped_items += dropped;
        sd->c.dropped_shutdown_items += dropped;
        log_warn("pipeline", "%s: stopping: %" PRIu64 " items only in memory were dropped",
                 sd->name, dropped);
    }
    diskq_close(sd->dq);
    sd->dq = NULL;
}

void pipeline_free(struct pipeline *p)
{
    if (p == NULL) {
        return;
    }
    if (p->nacks > 0) {
        run_group_commit(p);
    }
    p->closing = true;
    if (p->draining) {
        p->draining = false;
        p->drain_cb = NULL;
    }
    /*
     * Requests waiting for a chain are refused now; a request in a chain on a pool thread is
     * refused by its after-work callback, which runs later on the loop and still reads the
     * pipeline: it holds one of |handles|, so the memory stays until it ran.
     */
    proc_abort_waiting(p);
    for (size_t i = 0; i < p->nsenders; i++) {
        if (p->senders[i]->queued) {
            uv_timer_stop(&p->senders[i]->batch_timer);
            uv_timer_stop(&p->senders[i]->retry_timer);
        }
    }
    for (size_t i = 0; i < p->nxports; i++) {
        struct xport *x = p->xports[i];
        struct exporter *e = x->e;
        for (size_t j = 0; j < p->nsenders; j++) {
            if (p->senders[j]->x == x) {
                sender_orphan_sending(p->senders[j]);
            }
        }
        e->refs -= (int)x->senders;
        if (e->refs <= 0) {
            e->ops->destroy(e);
        }
        for (size_t j = 0; j < p->nsenders; j++) {
            if (p->senders[j]->x == x) {
                sender_release(p->senders[j]);
            }
        }
    }
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        free(p->routes[s].v);
    }
    for (size_t i = 0; i < p->nxports; i++) {
        xport_free(p->xports[i]);
    }
    free(p->xports);
    free(p->undo);
    free(p->saves);
    free(p->acks);
    split_out_cleanup(&p->split);
    if (p->loop == NULL) {
        free_memory(p);
        return;
    }
    /*
     * The senders' timers live inside the senders, so the senders are freed with the pipeline
     * once every handle is closed.
     */
    for (size_t i = 0; i < p->nsenders; i++) {
        struct sender *sd = p->senders[i];
        if (sd->queued) {
            sd->batch_timer.data = p;
            sd->retry_timer.data = p;
            p->handles += 2;
            uv_close((uv_handle_t *)&sd->batch_timer, on_handle_closed);
            uv_close((uv_handle_t *)&sd->retry_timer, on_handle_closed);
        }
    }
    uv_close((uv_handle_t *)&p->sync_timer, on_handle_closed);
    uv_close((uv_handle_t *)&p->drain_timer, on_handle_closed);
}
