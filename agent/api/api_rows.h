/*
 * Committed OTLP requests as the rows of the sink's views (spans, logs, metrics), rendered the
 * way the sink's query JSON renders them (DuckDB's to_json: the REST API's row shape), so that a
 * WebSocket client sees exactly the keys and value formats a REST query returns.
 *
 * Internal to the stream (api_stream.c) and its tests.
 */
#ifndef DLOTEL_API_ROWS_H
#define DLOTEL_API_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"

/* One row: its JSON object in api_rows.text, and what the stream filters on. */
struct api_row {
    size_t off;
    size_t len;
    size_t uid_off;     /* In api_rows.strs, NUL-terminated; SIZE_MAX: the row has no user. */
    size_t service_off; /* Likewise for service_name. */
};

struct api_rows {
    struct buf text; /* Every row's object, back to back. */
    struct buf strs; /* user_uid and service_name strings. */
    struct api_row *rows;
    size_t n;
    size_t cap;
    size_t max_rows;
    struct buf scratch;
    struct arena arena; /* The decoded request. */
};

/* |max_bytes| bounds the rendered text (and, times two, the decode arena). Allocates nothing. */
void api_rows_init(struct api_rows *r, size_t max_bytes);

/* Frees everything; api_rows_init() makes it usable again. */
void api_rows_cleanup(struct api_rows *r);

/*
 * Decodes |pb| (an Export*ServiceRequest of |signal|, SINK_SIGNAL_* numbering) and renders its
 * rows, replacing what |r| held. |user_uid|, when not NULL, is every row's user_uid (the
 * append's override). Returns 0, DLOTEL_ERR_BAD_INPUT, DLOTEL_ERR_TOO_LARGE (the limit of
 * api_rows_init()), DLOTEL_ERR_INVALID_ARG (bad signal) or DLOTEL_ERR_NOMEM.
 */
int api_rows_build(struct api_rows *r, int signal, const uint8_t *pb, size_t len,
                   const char *user_uid);

/* The string at |off| in r->strs, or NULL for SIZE_MAX. */
const char *api_rows_str(const struct api_rows *r, size_t off);

/*
 * A double as DuckDB's to_json writes it: the shortest digits that read back as the same
 * double, plain notation with ".0" for whole numbers between 1e-7 and 1e21, exponent notation
 * ("1e21", "1.5e-7") outside, null for NaN and infinities. Exposed for the tests.
 */
int api_rows_put_double(struct buf *b, double d);

/* A time in nanoseconds as DuckDB writes a TIMESTAMPTZ: "2026-01-01 00:00:00.074+00". */
int api_rows_put_timestamp(struct buf *b, uint64_t ns);

#endif
