/*
 * Processors: filter, sample, attributes, resource and limits, run per signal before a request
 * is queued (docs/processors.md).
 *
 * A chain is compiled once from configuration (a JSON array of processor objects, each with a
 * "kind": what the config room stores for processors_traces, processors_metrics and
 * processors_logs) and then run on every request of its signal: the request is unpacked with
 * protobuf-c into the chain's arena, each processor rewrites the message in place (items
 * dropped by compacting their arrays, new attributes allocated from the arena), and the result
 * is packed again. With no chain configured nothing here runs and the pipeline's fast path
 * (no decode) is untouched.
 *
 * A chain owns one decode arena that every run reuses, so runs of one chain take turns: a run
 * holds the chain's mutex (the pipeline never starts two at once anyway: it runs the requests of
 * a signal one at a time on libuv's thread pool). processor_chain_get_stats() may be called from
 * another thread meanwhile (the loop's admin endpoint): it reads a copy published at the end of
 * each run and never waits for a run.
 */
#ifndef DLOTEL_PROCESSOR_H
#define DLOTEL_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "otlp/otlp.h"

/* Processors in one chain. */
#define PROCESSOR_MAX_CHAIN 16
/* Attribute actions in one attributes processor. */
#define PROCESSOR_MAX_ACTIONS 64
/* Conditions in one filter processor. */
#define PROCESSOR_MAX_CONDITIONS 64
/* What one request may take once decoded (the arena's cap): a 20 MiB request fits. */
#define PROCESSOR_ARENA_MAX ((size_t)512 * 1024 * 1024)

struct processor_chain;

/* Counters of one chain since it was made. */
struct processor_stats {
    uint64_t requests;           /* Requests run through the chain. */
    uint64_t failed_requests;    /* Requests that could not be decoded or re-encoded. */
    uint64_t items_in;           /* Spans, log records or metric data points before... */
    uint64_t items_out;          /* ...and after the chain. */
    uint64_t filtered_items;     /* Dropped by filter processors. */
    uint64_t sampled_out_items;  /* Dropped by sample processors. */
    uint64_t truncated_values;   /* String values cut to limits.max_value_length. */
    uint64_t dropped_attributes; /* Attributes removed by limits.max_attributes. */
    uint64_t redacted_values;    /* Values replaced by "****". */
    uint64_t hashed_values;      /* Values replaced by their SHA-256. */
};

/*
 * Compiles the chain for signal |s| from |json|, a JSON array of processor objects. |path| names
 * the configuration key in messages ("processors_traces"); a problem is written to |why| as
 * "processors_traces[1].ratio: '2' is not a number between 0 and 1". Returns 0,
 * DLOTEL_ERR_CONFIG or DLOTEL_ERR_NOMEM; *out is untouched on failure. An empty array gives a
 * chain that does nothing (still decoding and re-encoding).
 */
int processor_chain_new(struct processor_chain **out, enum otlp_signal s, const char *json,
                        const char *path, char *why, size_t why_len);

/*
 * Runs the chain on one encoded request, from any thread (runs of one chain take turns):
 * appends the processed request to |out| (which may be empty when every item was dropped) and
 * fills |counts| with what it holds. |pb| is borrowed.
 * Returns 0, DLOTEL_ERR_BAD_INPUT (the request does not decode), DLOTEL_ERR_TOO_LARGE (arena
 * or |out| limit), or DLOTEL_ERR_NOMEM.
 */
int processor_chain_run(struct processor_chain *c, const uint8_t *pb, size_t len, struct buf *out,
                        struct otlp_counts *counts);

/* Copies the chain's counters as of the last run that ended. Thread-safe. */
void processor_chain_get_stats(const struct processor_chain *c, struct processor_stats *out);

/* The signal the chain was made for. */
enum otlp_signal processor_chain_signal(const struct processor_chain *c);

/* Frees the chain. NULL is a no-op. */
void processor_chain_free(struct processor_chain *c);

struct pipeline;
struct config;

/*
 * Compiles cfg->processors_{traces,metrics,logs} (those set) into |chains| (indexed by signal;
 * NULL where none) and hands each to the pipeline with pipeline_set_processor(). On failure
 * |why| names the key and the problem, |chains| holds what was made so far (free it with
 * processor_chains_free(), after pipeline_free()), and no chain is attached. Returns 0,
 * DLOTEL_ERR_CONFIG or DLOTEL_ERR_NOMEM.
 */
int processor_chains_attach(struct pipeline *p, const struct config *cfg,
                            struct processor_chain *chains[OTLP_SIGNAL_COUNT], char *why,
                            size_t why_len);

/* Frees the chains of processor_chains_attach() and sets them to NULL. */
void processor_chains_free(struct processor_chain *chains[OTLP_SIGNAL_COUNT]);

/*
 * The sampling decision of the OpenTelemetry consistent probability sampling (the W3C trace
 * context level 2 randomness): the lowest 56 bits of the 16-byte trace id, R, are compared
 * with the rejection threshold T = (1 - ratio) * 2^56; the trace is kept when R >= T. The
 * decision depends only on the trace id, so every agent and SDK using it agrees.
 */
uint64_t processor_sample_threshold(double ratio);
int processor_sample_keep(const uint8_t *trace_id, size_t len, uint64_t threshold);

/*
 * Finds the container id in the text of /proc/self/cgroup or /proc/self/mountinfo: the last run
 * of exactly 64 hexadecimal characters on a line that names a container runtime (docker,
 * containerd, cri-o, libpod, kubepods). Writes 65 bytes to |out|. Returns 1 when found, else 0.
 */
int processor_container_id_from(const char *text, size_t len, char out[65]);

#endif
