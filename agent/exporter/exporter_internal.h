/*
 * Limits and helpers shared by the exporters in this room; not for other rooms.
 */
#ifndef DLOTEL_EXPORTER_INTERNAL_H
#define DLOTEL_EXPORTER_INTERNAL_H

#include "core/buf.h"

/*
 * A request reaches an exporter as at most 20 MiB of protobuf (the OTLP/HTTP limit). Decoded by
 * protobuf-c it takes several times that (every KeyValue becomes two structs and two strings),
 * and as JSON about 2.5 times that (hex ids, key names), more for pathological inputs made of
 * empty messages. The limits leave room for real requests and stop hostile ones.
 */
#define EXPORTER_ARENA_MAX ((size_t)256 * 1024 * 1024)
#define EXPORTER_JSON_MAX  ((size_t)256 * 1024 * 1024)

/*
 * Buffers and arenas are kept across requests so that a steady stream of requests allocates
 * nothing; one that grew past this for a rare big request gives its memory back.
 */
#define EXPORTER_KEEP_BYTES ((size_t)4 * 1024 * 1024)

/* Empties |b| for the next request, freeing its memory when it grew past EXPORTER_KEEP_BYTES. */
static inline void exporter_buf_recycle(struct buf *b)
{
    if (b->cap > EXPORTER_KEEP_BYTES) {
        buf_cleanup(b);
    } else {
        buf_reset(b);
    }
}

#endif
