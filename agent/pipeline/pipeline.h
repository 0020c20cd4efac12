/*
 * The pipeline: receivers hand it validated, protobuf-encoded requests; it routes them to the
 * exporters of their signal. For now it calls the exporters directly (debug, file); the batcher
 * and queues (forwarding issue) slot in here without changing the receivers.
 */
#ifndef DLOTEL_PIPELINE_H
#define DLOTEL_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "otlp/otlp.h"

struct pipeline;
struct exporter;

/*
 * Called once when the pipeline has taken responsibility for a request (or refused it). |status|
 * is 0 or a dlotel_error; |detail| (may be NULL) is for the client. May be called before
 * pipeline_submit() returns.
 */
typedef void (*pipeline_done_fn)(void *userdata, int status, const char *detail);

int pipeline_new(struct pipeline **out);

/*
 * Adds |e| to the exporters of signal |s|. The pipeline takes a reference: one exporter may be
 * added to several signals and is freed by pipeline_free(). Returns 0 or DLOTEL_ERR_NOMEM.
 */
int pipeline_add_exporter(struct pipeline *p, enum otlp_signal s, struct exporter *e);

/*
 * Submits one validated request. |pb| is only borrowed for the duration of the call. |done| is
 * called exactly once.
 */
void pipeline_submit(struct pipeline *p, enum otlp_signal s, const uint8_t *pb, size_t len,
                     const struct otlp_counts *counts, pipeline_done_fn done, void *userdata);

/* Flushes every exporter. */
void pipeline_flush(struct pipeline *p);

/* Frees the pipeline and its exporters. NULL is a no-op. */
void pipeline_free(struct pipeline *p);

#endif
