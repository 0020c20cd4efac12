/*
 * What a row of the sink holds, computed without DuckDB: the text of OTLP values (a map value,
 * a log body, the JSON of events, links and exemplars), the names of enums, the times as DuckDB
 * stores them, what every row of a resource shares, each metric data point flattened to the
 * metrics table's columns, and the walk over a decoded request that yields one row at a time.
 *
 * One implementation for the two places that turn requests into rows: the sink module
 * (sink_rows.c writes them into DuckDB vectors) and the live stream (api_rows.c renders them as
 * the JSON a REST query answers). The stream lives in the daemon, which must never map
 * libduckdb (DESIGN.md section 2), so this code is its own static library, dlotel_sink_values,
 * and includes nothing of DuckDB: only core/ and otlp/.
 */
#ifndef DLOTEL_SINK_VALUES_H
#define DLOTEL_SINK_VALUES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "otlp/otlp_pb.h"

typedef Opentelemetry__Proto__Common__V1__AnyValue sink_anyvalue;
typedef Opentelemetry__Proto__Common__V1__KeyValue sink_keyvalue;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope sink_scope;
typedef Opentelemetry__Proto__Resource__V1__Resource sink_resource;
typedef Opentelemetry__Proto__Trace__V1__Span sink_span;
typedef Opentelemetry__Proto__Logs__V1__LogRecord sink_log_record;
typedef Opentelemetry__Proto__Metrics__V1__Metric sink_metric;
typedef Opentelemetry__Proto__Metrics__V1__Exemplar sink_exemplar;
typedef Opentelemetry__Proto__Metrics__V1__SummaryDataPoint__ValueAtQuantile sink_quantile;

/* ---- numbers and times ---------------------------------------------------------------------- */

#define SINK_NS_PER_DAY ((uint64_t)86400 * 1000000000)

/* OTLP's unsigned 64-bit times and counts in a signed BIGINT: clamp instead of wrapping. */
static inline int64_t sink_clamp_u64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* A TIMESTAMPTZ from nanoseconds: DuckDB keeps microseconds. */
static inline int64_t sink_ns_to_us(uint64_t ns)
{
    return sink_clamp_u64(ns) / 1000;
}

/* A DATE (the hive partition column) from nanoseconds: days since the epoch. */
static inline int32_t sink_ns_to_days(uint64_t ns)
{
    return (int32_t)(sink_clamp_u64(ns) / (int64_t)SINK_NS_PER_DAY);
}

/* ---- JSON and value text (sink_json.c) ------------------------------------------------------ */

/*
 * How a double is written inside JSON text. The sink stores its JSON columns with
 * sink_json_double; the stream renders them as DuckDB's to_json re-renders them on the way out
 * (api_rows_put_double). Everything else about the JSON is the same for both.
 */
typedef int (*sink_double_fn)(struct buf *b, double d);

/* Appends |s| (|n| bytes) as a JSON string, quotes included. */
int sink_json_str(struct buf *b, const char *s, size_t n);
/* Appends a finite double as a JSON number, a NaN or an infinity as null. */
int sink_json_double(struct buf *b, double d);
/* Appends the shortest text that reads back as |d| ("0.1", "1e+300", "NaN", "Infinity"). */
int sink_double_text(struct buf *b, double d);
/* Appends an AnyValue as JSON (bytes as base64 strings, an empty value as null). */
int sink_json_anyvalue(struct buf *b, const sink_anyvalue *v, sink_double_fn dbl);
/* Appends attributes as one JSON object (the first of duplicate keys wins). */
int sink_json_attributes(struct buf *b, sink_keyvalue *const *kv, size_t n, sink_double_fn dbl);
/*
 * Appends the text a VARCHAR (a map value, a log body) holds for |v|: strings as they are,
 * numbers and booleans as their text, bytes as base64, arrays and maps as JSON (doubles inside
 * written by |dbl|). Returns 1 (nothing appended) for an empty value, which is stored as NULL;
 * otherwise 0 or a buf error.
 */
int sink_value_text(struct buf *b, const sink_anyvalue *v, sink_double_fn dbl);
/* Appends |n| bytes as lowercase hex. */
int sink_hex(struct buf *b, const uint8_t *p, size_t n);
/* Writes |n| (<= 16) bytes as lowercase hex to |out| (2n + 1 bytes, NUL-terminated). */
void sink_hex_id(char *out, const uint8_t *p, size_t n);

/* The JSON columns: a span's events and links, a data point's exemplars. */
int sink_json_events(struct buf *b, const sink_span *sp, sink_double_fn dbl);
int sink_json_links(struct buf *b, const sink_span *sp, sink_double_fn dbl);
int sink_json_exemplars(struct buf *b, sink_exemplar *const *ex, size_t n, sink_double_fn dbl);

/*
 * Copies DuckDB to_json() text into |b|, replacing the bare tokens NaN, Infinity and -Infinity
 * (which DuckDB writes for non-finite doubles but JSON does not allow) with null.
 */
int sink_json_sanitize(struct buf *b, const char *s, size_t n);

/* ---- names (sink_values.c) ------------------------------------------------------------------ */

/* "INTERNAL", "SERVER", ...; "UNSPECIFIED" for anything else. */
const char *sink_span_kind_name(int kind);
/* "OK", "ERROR"; "UNSET" for anything else. */
const char *sink_status_name(int code);
/* "DELTA", "CUMULATIVE"; "UNSPECIFIED" for anything else. */
const char *sink_temporality_name(int t);

/* ---- map keys ------------------------------------------------------------------------------- */

/*
 * The entries of an attribute list that go into a MAP: DuckDB requires keys unique and not
 * NULL, and the first of duplicate keys wins, as in the collector. Short lists use a quadratic
 * scan; long ones a hash set, so that a hostile request with 100k attributes costs linear time.
 */
struct sink_keys {
    sink_keyvalue *const *kv;
    const char **slots;
    size_t cap;
};

/* Returns 0 or DLOTEL_ERR_NOMEM. */
int sink_keys_init(struct sink_keys *ks, sink_keyvalue *const *kv, size_t n);
/* Whether kv[i] is left out (no entry, no key, or a key seen before). Call for i = 0, 1, ... */
bool sink_keys_skip(struct sink_keys *ks, size_t i);
void sink_keys_cleanup(struct sink_keys *ks);

/* ---- rows ----------------------------------------------------------------------------------- */

/* What every row of one resource shares. */
struct sink_res {
    const char *service_name; /* NULL when the resource has none. */
    const char *user_uid;     /* NULL when none. */
    sink_keyvalue *const *attrs;
    size_t n_attrs;
};

/*
 * One metric data point, whatever its type, flattened to the metrics table's columns: a has_*
 * member false means the column is NULL in this row.
 */
struct sink_point {
    const struct sink_res *res;
    const sink_scope *scope; /* May be NULL. */
    const sink_metric *metric;
    const char *type;        /* "gauge", "sum", "histogram", "exponentialHistogram", "summary" */
    const char *temporality; /* NULL for gauges and summaries. */
    int monotonic;           /* -1: not a sum. */

    uint64_t start, time;
    uint32_t flags;
    sink_keyvalue *const *attrs;
    size_t n_attrs;
    sink_exemplar *const *ex;
    size_t n_ex;

    bool has_vd, has_vi, has_count, has_sum, has_min, has_max;
    double vd, sum, min, max;
    int64_t vi;
    uint64_t count;

    bool has_hist; /* bucket_counts, explicit_bounds */
    const uint64_t *buckets;
    size_t n_buckets;
    const double *bounds;
    size_t n_bounds;

    bool has_exp; /* scale ... negative_bucket_counts; a missing side: offset 0, no buckets. */
    int32_t scale, pos_off, neg_off;
    uint64_t zero_count;
    double zero_threshold;
    const uint64_t *pos;
    size_t n_pos;
    const uint64_t *neg;
    size_t n_neg;

    bool has_summary; /* quantiles, quantile_values; an absent entry is 0. */
    sink_quantile *const *q;
    size_t n_q;
};

/* The callbacks of a walk; each returns 0 to go on or an error that ends the walk. */
struct sink_walk {
    void *ctx;
    int (*span)(void *ctx, const struct sink_res *res, const sink_scope *sc, const sink_span *sp);
    int (*log)(void *ctx, const struct sink_res *res, const sink_scope *sc,
               const sink_log_record *lr);
    int (*point)(void *ctx, const struct sink_point *p);
    /* Overrides each resource's datalayer.user_uid when not NULL (the append's user). */
    const char *user_uid;
    /*
     * When a non-string datalayer.user_uid cannot be rendered (its text passes 4 KiB, or no
     * memory): true ends the walk with the error (the stream), false leaves the rows without
     * a user (the sink, which stores the request rather than refuse it).
     */
    bool uid_errors_fatal;
    /* Writes the doubles inside a uid that is an array or a map (its text is JSON). */
    sink_double_fn dbl;
};

/*
 * Walks a decoded request of |signal| (OTLP_TRACES, OTLP_LOGS, OTLP_METRICS) in order: one
 * callback per span, per log record and per metric data point. Returns 0, the first error of a
 * callback, DLOTEL_ERR_INVALID_ARG (bad signal) or, with uid_errors_fatal, the uid's error.
 */
int sink_walk_request(const struct sink_walk *w, int signal, const ProtobufCMessage *msg);

#endif
