/*
 * The pipeline: receivers hand it validated, protobuf-encoded requests; it routes them to the
 * exporters of their signal.
 *
 * Synchronous exporters (ops->export: debug, file) are called directly from pipeline_submit().
 * Upstream exporters (ops->send: otlp_http, otlp_grpc) get one queue and one sender per exporter
 * x signal: the request's bytes go to a memory queue, or to a disk queue (segment files), and
 * the sender forms batches from the queue head by concatenation (two encoded requests
 * concatenated are one request), sends at most max_in_flight of them at a time, retries with
 * backoff, and commits the disk queue in order. Nothing is decoded on this path.
 *
 * Everything runs on the loop thread except the processor chains (pipeline_set_processor()):
 * they run on libuv's thread pool, one request per signal at a time, and the request continues
 * on the loop when its chain is done. The pipeline's timers do not keep the loop alive by
 * themselves (they are unreferenced), except while pipeline_drain() runs; a request in a chain
 * does, until it is back on the loop.
 */
#ifndef DLOTEL_PIPELINE_H
#define DLOTEL_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "otlp/otlp.h"

struct pipeline;
struct exporter;

/*
 * Called once when the pipeline has taken responsibility for a request (or refused it). |status|
 * is 0 or a dlotel_error; |detail| (may be NULL) is for the client. May be called before
 * pipeline_submit() returns.
 */
typedef void (*pipeline_done_fn)(void *userdata, int status, const char *detail);

/* Pipeline-wide settings: the config's batch.* and queue.* keys. Zero means the default. */
struct pipeline_options {
    uint64_t batch_max_items;      /* batch.max_size; default 8192. Reached by whole requests. */
    uint64_t batch_max_bytes;      /* batch.max_bytes; default 4 MiB. Only an unsplittable item
                                      passes it (see pipeline_submit()). */
    uint64_t batch_timeout_ns;     /* batch.timeout; default 200 ms. */
    uint64_t memory_max_bytes;     /* queue.memory_max_bytes: all memory queues; default 64 MiB. */
    uint64_t retry_after_ns;       /* queue.retry_after: the hint to shed clients; default 1 s. */
    uint64_t processing_max_bytes; /* Requests waiting for or in a processor chain (their
                                      copies); default memory_max_bytes, counted apart from
                                      the memory queues. */
};

/* Values of config's enum config_fsync, in the same order, so the CLI may cast. */
enum pipeline_fsync {
    PIPELINE_FSYNC_ALWAYS = 0, /* fdatasync before the client is answered (group commit). */
    PIPELINE_FSYNC_BATCH = 1,  /* fdatasync when a batch is formed from the queue. */
    PIPELINE_FSYNC_NEVER = 2,  /* The kernel decides. */
};

/*
 * Per upstream exporter: the config's exporters.<name>.{memory_queue_max_bytes, retry.*,
 * disk_queue.*}. Fill with pipeline_exporter_options_init() and change what differs.
 */
struct pipeline_exporter_options {
    const char *name;                /* Copied. Logs and stats; NULL: the exporter's kind. */
    uint64_t memory_queue_max_bytes; /* Held by this exporter's memory queues, all signals, in
                                        flight included; default 16 MiB. Unused with a disk
                                        queue, where memory holds only batches in flight. */
    uint32_t max_in_flight;          /* Batches sent and not answered, per signal; default 1. */
    struct {
        bool enabled;                 /* Default true. Off: EXPORT_RETRY drops the batch. */
        uint64_t initial_interval_ns; /* Default 5 s. */
        uint64_t max_interval_ns;     /* Default 30 s. */
        uint64_t max_elapsed_time_ns; /* Default 300 s; 0: never give up. Memory queue only. */
    } retry;
    struct {
        bool enabled;              /* Default false here (the config's default is true). */
        const char *path;          /* Copied. Queues live in <path>/<signal>/. Required. */
        uint64_t max_bytes;        /* Per signal; default 1 GiB. */
        enum pipeline_fsync fsync; /* Default PIPELINE_FSYNC_BATCH. */
        uint64_t segment_bytes;    /* Default 64 MiB (at most max_bytes / 4). */
    } disk_queue;
};

/* Fills |o| with the defaults above. */
void pipeline_options_init(struct pipeline_options *o);
void pipeline_exporter_options_init(struct pipeline_exporter_options *o);

/*
 * Creates a pipeline that runs on |loop| (borrowed; must outlive the pipeline) with |o| (NULL:
 * defaults; copied). Returns 0, DLOTEL_ERR_NOMEM or DLOTEL_ERR_INVALID_ARG. *out is untouched
 * on failure.
 */
int pipeline_new_on_loop(struct pipeline **out, uv_loop_t *loop, const struct pipeline_options *o);

/*
 * Creates a pipeline without a loop, for synchronous exporters only (tests, tools): adding an
 * exporter with a |send| op to it fails with DLOTEL_ERR_INVALID_ARG.
 */
int pipeline_new(struct pipeline **out);

/*
 * Adds |e| to the exporters of signal |s| with default options: pipeline_add_exporter_opts(p,
 * s, e, NULL).
 */
int pipeline_add_exporter(struct pipeline *p, enum otlp_signal s, struct exporter *e);

/*
 * Adds |e| to the exporters of signal |s|. The pipeline takes a reference: one exporter may be
 * added to several signals and is destroyed by pipeline_free(). Adding it twice to one signal
 * is a no-op.
 *
 * For an exporter with a |send| op, |o| (NULL: defaults) configures its queue and sender for
 * |s|. Options are per exporter: the first call for |e| decides them (name, memory cap, retry,
 * disk queue path), later calls for other signals reuse them and ignore |o|. With a disk queue
 * this opens <path>/<signal>/ and recovers what a previous run left there; it is sent first.
 *
 * Returns 0, DLOTEL_ERR_INVALID_ARG (bad signal, NULL exporter, a send exporter on a pipeline
 * without a loop, a disk queue without a path), DLOTEL_ERR_IO (the disk queue cannot be opened;
 * logged) or DLOTEL_ERR_NOMEM. On failure no reference is taken.
 */
int pipeline_add_exporter_opts(struct pipeline *p, enum otlp_signal s, struct exporter *e,
                               const struct pipeline_exporter_options *o);

/*
 * Submits one validated request. |pb| is only borrowed for the duration of the call. |done| is
 * called exactly once, on the loop thread, and may be called before pipeline_submit() returns;
 * with a processor chain for |s| (on a pipeline with a loop) it is called after the chain ran,
 * from a later loop iteration, unless the request is refused before it:
 *   0                      every exporter of |s| has it (disk queue: written; with fsync
 *                          always, after the fdatasync of this loop iteration);
 *   DLOTEL_ERR_FULL        a memory queue is full: NO exporter got it (answer 429 /
 *                          RESOURCE_EXHAUSTED with pipeline_retry_after_ns());
 *   DLOTEL_ERR_TOO_LARGE   larger than a memory queue or a disk queue can ever hold;
 *   DLOTEL_ERR_IO          a disk queue write failed (ENOSPC...): NO queue got it (503);
 *   DLOTEL_ERR_CLOSED      after pipeline_drain() finished, or the pipeline was freed (or
 *                          the drain timed out) while the request waited for its processors;
 *   another error          a synchronous exporter failed (the queues took it already), or
 *                          the processors refused the request (pipeline_process_fn).
 * With a processor chain for |s|, also (before the chain ran; no exporter got it):
 *   DLOTEL_ERR_FULL        the requests waiting for or in the processors hold
 *                          processing_max_bytes: |len| more would pass it;
 *   DLOTEL_ERR_TOO_LARGE   |len| alone passes processing_max_bytes;
 *   DLOTEL_ERR_NOMEM       no memory for the copy.
 *
 * A request larger than batch_max_bytes is split at resource, scope and item boundaries (see
 * split.h): for a memory queue at submit, for a disk queue when it is read back. A single item
 * larger than batch_max_bytes cannot be split: it is sent alone, logged and counted
 * (oversized_batches). batch_max_items is reached by whole requests: a batch ends once it
 * holds at least that many items, so one large request makes one large batch.
 */
void pipeline_submit(struct pipeline *p, enum otlp_signal s, const uint8_t *pb, size_t len,
                     const struct otlp_counts *counts, pipeline_done_fn done, void *userdata);

/*
 * The processor chain of one signal (agent/processor), seen by the pipeline as a transform: it
 * reads the request |pb|, appends the request to send to |out| (an empty buffer; it may stay
 * empty when every item was dropped) and fills |counts| with what |out| holds. Returns 0 or a
 * dlotel_error, which refuses the request (DLOTEL_ERR_BAD_INPUT: 400).
 */
typedef int (*pipeline_process_fn)(void *userdata, enum otlp_signal s, const uint8_t *pb,
                                   size_t len, struct buf *out, struct otlp_counts *counts);

/*
 * Runs |fn| on every request of signal |s| before it is queued or exported. NULL (the default)
 * leaves the fast path: nothing is copied or decoded.
 *
 * On a pipeline with a loop, pipeline_submit() copies the request and |fn| runs on a thread of
 * libuv's pool (uv_queue_work()), so the loop goes on serving while a request is processed. The
 * requests of one signal go through |fn| one at a time and in the order they were submitted, so
 * |fn| need not be thread-safe for one signal; |fn| of different signals may run at the same
 * time (a |userdata| shared between signals must then be). Without a loop |fn| runs inside
 * pipeline_submit().
 *
 * |userdata| is borrowed and must outlive the pipeline and every request still in |fn| when it
 * is freed: until the loop has run once more after pipeline_free() and uv_run() returned (a
 * request in the pool keeps the loop alive). A request whose every item is dropped is answered
 * as accepted and goes to no exporter; its items are counted in processed_dropped_items.
 */
void pipeline_set_processor(struct pipeline *p, enum otlp_signal s, pipeline_process_fn fn,
                            void *userdata);

/*
 * Seals every partial batch now (SIGUSR1): what was queued before the call is sent without
 * waiting for batch_timeout, as far as max_in_flight allows; then calls every exporter's flush
 * op once.
 */
void pipeline_flush(struct pipeline *p);

/*
 * Called once by pipeline_drain(): |status| is 0 (every queue is empty and nothing is in flight)
 * or DLOTEL_ERR_TIMEOUT. Runs from a timer callback, so it may free the pipeline (on a pipeline
 * without a loop: at once, from pipeline_drain()).
 */
typedef void (*pipeline_drained_fn)(void *userdata, int status);

/*
 * Shutdown (SIGTERM): flushes, keeps sending until the queues are empty and no request is
 * waiting for or in a processor chain, or |timeout_ns| passed, then calls |cb|. From then on the
 * pipeline sends nothing new and refuses submits (DLOTEL_ERR_CLOSED). At the timeout what is on
 * disk stays there for the next start; what is only in memory (memory queues) is counted as dropped
 * (dropped_shutdown_items) and logged; requests waiting for their processors are answered
 * DLOTEL_ERR_CLOSED, and those in a chain are when it ends. Batches still in flight are left to
 * finish; pipeline_free() counts those of memory queues as dropped. Keeps the loop alive until |cb|
 * runs. A second call returns DLOTEL_ERR_CLOSED; otherwise returns 0.
 */
int pipeline_drain(struct pipeline *p, uint64_t timeout_ns, pipeline_drained_fn cb, void *userdata);

/* The retry hint for clients refused with DLOTEL_ERR_FULL (queue.retry_after). */
uint64_t pipeline_retry_after_ns(const struct pipeline *p);

/* Counters of one exporter x signal. Totals since pipeline creation unless said. */
struct pipeline_stats {
    const char *exporter; /* The exporter's name; valid while the pipeline lives. */
    const char *kind;     /* Its ops->kind. */
    enum otlp_signal signal;
    bool queued;           /* An upstream exporter (send op); false: synchronous (export op). */
    bool disk;             /* It has a disk queue. */
    uint64_t sent_items;   /* Delivered (including rejected_items). */
    uint64_t sent_batches; /* Delivered batches, or requests for a synchronous exporter. */
    uint64_t failed_items; /* EXPORT_PERMANENT, or a synchronous export error. */
    uint64_t failed_batches;
    uint64_t retried_batches;        /* Retries scheduled. */
    uint64_t dropped_items;          /* failed + expired + disk cap + shutdown + retry disabled. */
    uint64_t dropped_expired_items;  /* retry.max_elapsed_time passed (memory queue). */
    uint64_t dropped_cap_items;      /* Deleted unsent at disk_queue.max_bytes, or corrupt. */
    uint64_t dropped_shutdown_items; /* Only in memory when the drain timed out or at free. */
    uint64_t rejected_items;         /* partial_success.rejected_*. */
    uint64_t refused_requests;       /* Submits refused because this exporter's queue was full. */
    uint64_t refused_items;
    uint64_t oversized_batches; /* Batches larger than batch_max_bytes: one unsplittable item. */
    uint64_t queue_items;       /* Now: in the memory queue, not yet sent. */
    uint64_t queue_bytes;
    uint64_t disk_items;        /* Now: on disk, not yet read into a batch. */
    uint64_t disk_bytes;        /* Now: segment files. */
    uint64_t disk_syncs;        /* fdatasync() calls on the disk queue. */
    uint64_t in_flight_batches; /* Now: sent and not answered, or waiting to be retried. */
    uint64_t in_flight_bytes;
    uint64_t last_success_unix_nano; /* 0: never. */
    uint64_t last_error_unix_nano;
    char last_error[256]; /* The exporter's message of the last failure; "" when none. */
};

/*
 * Copies the counters of at most |max| exporter x signal pairs into |out|, in the order they
 * were added. Returns the number of pairs (which may be larger than |max|: call again with a
 * larger array).
 */
size_t pipeline_get_stats(const struct pipeline *p, struct pipeline_stats *out, size_t max);

/* Pipeline-wide counters. */
struct pipeline_totals {
    uint64_t accepted_requests;
    uint64_t accepted_items;
    uint64_t refused_requests; /* DLOTEL_ERR_FULL or DLOTEL_ERR_TOO_LARGE */
    uint64_t refused_items;
    uint64_t failed_requests; /* DLOTEL_ERR_IO and other errors */
    uint64_t split_requests;  /* Requests split at submit for memory queues. */
    uint64_t memory_bytes;    /* Now: bytes held by all memory queues (in flight included). */
    uint64_t processed_dropped_items; /* Dropped by the processors (filter, sample). */
    uint64_t processing_requests;     /* Now: waiting for or in a processor chain. */
    uint64_t processing_bytes;        /* Now: their copies (against processing_max_bytes). */
};

void pipeline_get_totals(const struct pipeline *p, struct pipeline_totals *out);

/*
 * Frees the pipeline and destroys its exporters (the last reference). NULL is a no-op. Requests
 * waiting for a group fdatasync are answered first; memory queues are counted as dropped
 * (dropped_shutdown_items) and logged; disk queues keep everything not committed for the next
 * start. Batches in an exporter's hands stay allocated until it answers them (from destroy, or
 * later: it may still be reading one on a worker thread); an exporter must answer every
 * successful send() exactly once, or that batch leaks. A drain in progress is abandoned (its
 * callback is not called). Requests waiting for a processor chain are answered
 * DLOTEL_ERR_CLOSED; one in a chain on a pool thread is answered DLOTEL_ERR_CLOSED when the chain
 * ends, from the loop, and the pipeline's memory stays until then. With a loop, the pipeline's
 * handles are closed and its memory released in their close callbacks: run the loop once more
 * before uv_loop_close().
 */
void pipeline_free(struct pipeline *p);

#endif
