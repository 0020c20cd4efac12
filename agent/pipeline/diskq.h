/*
 * The disk queue of one exporter x signal: an append-only log of segment files in one
 * directory, and a cursor file holding the committed position. Internal to the pipeline room;
 * the unit tests call it directly.
 *
 *   <dir>/00000000000000000001.seg   records, appended; a new segment past segment_bytes
 *   <dir>/cursor                      the committed position, replaced atomically
 *
 * A record is a 16-byte header, little-endian [magic u32][len u32][items u32][crc32c u32],
 * then |len| bytes of payload (one encoded Export*ServiceRequest). The CRC-32C covers len,
 * items and the payload, so a torn or corrupt record is recognised on start and cut off, with
 * everything before it kept.
 *
 * Positions are (segment id, byte offset). Records are read in order from the read position;
 * the committed position only moves forward, and segments wholly before it are deleted. After
 * a restart everything from the committed position on is unread again: at-least-once.
 *
 * Not thread-safe: one loop thread.
 */
#ifndef DLOTEL_PIPELINE_DISKQ_H
#define DLOTEL_PIPELINE_DISKQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "pipeline/pipeline.h"

#define DISKQ_HEADER_LEN 16
#define DISKQ_MAGIC      0x31514c44u /* "DLQ1" */

struct diskq;

struct diskq_pos {
    uint64_t seg;
    uint64_t off;
};

/* -1, 0 or 1 as |a| is before, at or after |b|. */
int diskq_pos_cmp(struct diskq_pos a, struct diskq_pos b);

struct diskq_options {
    const char *dir;        /* Created (0700, with parents) when missing. */
    const char *name;       /* For log lines, "up/traces". */
    uint64_t max_bytes;     /* All segment files together. */
    uint64_t segment_bytes; /* A segment is closed once a record would take it past this. */
    enum pipeline_fsync fsync;
};

/* One unread record, from diskq_peek(). */
struct diskq_record {
    struct diskq_pos start; /* Its header. */
    struct diskq_pos end;   /* The position after it: commit this once it is delivered. */
    uint32_t len;
    uint32_t items;
};

/* Enough to take back one append (see diskq_rollback()). */
struct diskq_undo {
    uint64_t seg;
    uint64_t size; /* The segment's size before the append. */
    uint32_t len;
    uint32_t items;
    bool created; /* The append created the segment. */
};

struct diskq_info {
    uint64_t pending_records; /* Written and not read yet. */
    uint64_t pending_items;
    uint64_t pending_bytes; /* Payload bytes. */
    uint64_t bytes;         /* Segment files on disk, headers included. */
    uint64_t segments;
    uint64_t dropped_items;     /* Unread items deleted at the cap or cut as corrupt, in total. */
    uint64_t recovered_records; /* Found unread by diskq_open(). */
    uint64_t recovered_items;
    uint64_t truncated_bytes; /* Cut by diskq_open() as torn or corrupt. */
    uint64_t syncs;           /* fdatasync() calls made by diskq_sync(). */
    struct diskq_pos read;
    struct diskq_pos committed;
    struct diskq_pos end; /* After the last record written. */
};

/*
 * Opens (creating when missing) the queue in o->dir and recovers it: segments before the
 * cursor are deleted, every other segment is checked record by record and cut at the first
 * torn or corrupt record, and everything from the cursor on becomes unread. Past max_bytes the
 * oldest segments are deleted and counted as dropped.
 *
 * Returns 0, DLOTEL_ERR_IO (cannot create or read the directory; logged with errno),
 * DLOTEL_ERR_INVALID_ARG or DLOTEL_ERR_NOMEM. *out is untouched on failure.
 */
int diskq_open(struct diskq **out, const struct diskq_options *o);

/* Syncs (unless fsync is never) and closes the files. NULL is a no-op. */
void diskq_close(struct diskq *q);

/*
 * Appends one record. At max_bytes the oldest segments are deleted first, even unsent, and
 * their unread items counted in dropped_items (with a warning in the log). |undo| (may be NULL)
 * receives what diskq_rollback() needs.
 *
 * Returns 0; DLOTEL_ERR_TOO_LARGE when the record alone is larger than max_bytes or 4 GiB;
 * DLOTEL_ERR_IO when the write fails (ENOSPC, EIO, EFBIG: logged, nothing of the record stays).
 */
int diskq_append(struct diskq *q, const uint8_t *data, size_t len, uint32_t items,
                 struct diskq_undo *undo);

/* Takes back the last append of |q|, which nothing may have read yet. */
void diskq_rollback(struct diskq *q, const struct diskq_undo *undo);

/* True when appends are not yet synced. */
bool diskq_dirty(const struct diskq *q);

/* fdatasync()s the segment written since the last sync. Returns 0 or DLOTEL_ERR_IO. */
int diskq_sync(struct diskq *q);

/*
 * Describes the next unread record without reading its payload. A record whose header does not
 * make sense (corruption since start) is skipped with the rest of its segment, counted as
 * dropped. Returns 0, DLOTEL_ERR_NOT_FOUND when nothing is unread, or DLOTEL_ERR_IO.
 */
int diskq_peek(struct diskq *q, struct diskq_record *r);

/*
 * Appends the payload of |r|, the record diskq_peek() just described, to |into| (pread straight
 * into the buffer) and moves the read position past it. Returns 0, DLOTEL_ERR_IO, or the error
 * of buf_reserve(); on failure nothing moves.
 */
int diskq_read(struct diskq *q, const struct diskq_record *r, struct buf *into);

/*
 * Moves the committed position forward to |pos| (a position before the current one is
 * ignored), deletes the segments wholly before it and rewrites the cursor file. Returns 0 or
 * DLOTEL_ERR_IO (the cursor could not be written: records may be sent again after a restart).
 */
int diskq_commit(struct diskq *q, struct diskq_pos pos);

void diskq_get_info(const struct diskq *q, struct diskq_info *out);

#endif
