/*
 * Splitting one encoded Export*ServiceRequest into pieces that each fit a byte limit, without
 * decoding it: the pieces re-emit the resource and scope header fields (and, for a metric cut
 * at data points, the metric's name/description/unit/metadata and its type's temporality), copy
 * the items' bytes as they are, and write fresh length prefixes.
 *
 * Internal to the pipeline room (the memory queue splits at submit, the disk queue when it reads
 * a record back); the unit tests and the fuzz target call it directly.
 */
#ifndef DLOTEL_PIPELINE_SPLIT_H
#define DLOTEL_PIPELINE_SPLIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "otlp/otlp.h"

/* One piece: a complete request of its own, at data.data + offset. */
struct split_piece {
    size_t offset;
    size_t len;
    uint64_t items;
};

/* The pieces of one split, back to back in |data|. Reused across calls. */
struct split_out {
    struct buf data;
    struct split_piece *pieces;
    size_t n;
    size_t cap;
    /*
     * Pieces longer than the limit. Each holds exactly one thing that cannot be cut further: one
     * span, log record or metric data point (with its resource and scope headers), or one
     * resource, scope or metric that has no items at all. They are sent alone, and counted.
     */
    size_t oversized;
};

/*
 * Initialises |o|. |max_bytes| bounds the total size of the pieces of one split: headers are
 * repeated in every piece, so a hostile request whose headers nearly fill the limit would
 * otherwise multiply its size by its item count. Allocates nothing.
 */
void split_out_init(struct split_out *o, size_t max_bytes);

/* Forgets the pieces of the last split and keeps the memory. */
void split_out_reset(struct split_out *o);

/* Frees everything; |o| may be initialised again. */
void split_out_cleanup(struct split_out *o);

/*
 * Splits |pb|, an encoded request of signal |s|, into pieces of at most |limit| bytes, appended
 * to |out| (which the caller resets first when it wants only these). Every item (span, log
 * record, metric data point) lands in exactly one piece, byte for byte, in the original order;
 * resources, scopes and metrics with no items are kept too. Traces and logs are cut between
 * items. Metrics are cut between metrics, and a single metric that does not fit a piece of its
 * own is cut between its data points, its header repeated in each part.
 *
 * Fields of the request other than its resources (field 1) carry nothing in OTLP and are
 * dropped. Only the structure down to the items is read: a request that otlp_scan() accepts is
 * always split; other input may be refused or split as far as it parses.
 *
 * Returns 0; DLOTEL_ERR_BAD_INPUT (malformed at the levels read), DLOTEL_ERR_TOO_LARGE (the
 * pieces would pass out->data's maximum) or DLOTEL_ERR_NOMEM. On failure |out| holds whatever
 * complete pieces came before; callers discard them.
 */
int split_request(enum otlp_signal s, const uint8_t *pb, size_t len, size_t limit,
                  struct split_out *out);

#endif
