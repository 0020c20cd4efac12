/*
 * OTLP requests to rows: one row per span, per log record and per metric data point, written
 * straight into DuckDB data chunks (vector by vector) and handed to the appender a chunk at a
 * time. This is the ingest hot path: no SQL, no per-value duckdb_value objects, strings copied
 * once from the decoded request into DuckDB's vectors. What each column holds comes from
 * sink_values.c (the walk, the values' text, the JSON columns), which the live stream shares.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"
#include "sink/sink_int.h"

/* Scratch text for one value (a map value, a JSON column) may not pass this. */
#define SINK_VALUE_MAX ((size_t)64 * 1024 * 1024)

/* ---- table writer -------------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *what, const char *detail)
{
    if (err != NULL && errlen > 0) {
        snprintf(err, errlen, "%s: %s", what, detail != NULL ? detail : "unknown error");
    }
}

/* Points the cached vector pointers at a fresh (reset) chunk. */
static void tw_bind(struct sink_tw *tw)
{
    for (size_t c = 0; c < tw->def->ncols; c++) {
        duckdb_vector v = duckdb_data_chunk_get_vector(tw->chunk, c);
        tw->vec[c] = v;
        tw->data[c] = duckdb_vector_get_data(v);
        duckdb_vector_ensure_validity_writable(v);
        tw->valid[c] = duckdb_vector_get_validity(v);
    }
    tw->row = 0;
}

static int tw_open_appender(struct sink_tw *tw, duckdb_connection conn, char *err, size_t errlen)
{
    if (duckdb_appender_create(conn, "main", tw->def->hot, &tw->app) != DuckDBSuccess) {
        set_err(err, errlen, "cannot create the appender", duckdb_appender_error(tw->app));
        duckdb_appender_destroy(&tw->app);
        tw->app = NULL;
        return DLOTEL_ERR_INTERNAL;
    }
    return 0;
}

int sink_tw_init(struct sink_tw *tw, duckdb_connection conn, const struct sink_table_def *def,
                 char *err, size_t errlen)
{
    memset(tw, 0, sizeof(*tw));
    tw->def = def;
    tw->cap = duckdb_vector_size();
    int rc = tw_open_appender(tw, conn, err, errlen);
    if (rc != 0) {
        return rc;
    }
    /*
     * The chunk takes its types from the appender, so that they match the table exactly
     * (duckdb_append_data_chunk does not cast), JSON's alias included.
     */
    idx_t n = duckdb_appender_column_count(tw->app);
    if (n != def->ncols) {
        set_err(err, errlen, "the hot table has an unexpected shape", def->hot);
        duckdb_appender_destroy(&tw->app);
        return DLOTEL_ERR_INTERNAL;
    }
    duckdb_logical_type types[SINK_MAX_COLS];
    for (idx_t i = 0; i < n; i++) {
        types[i] = duckdb_appender_column_type(tw->app, i);
    }
    tw->chunk = duckdb_create_data_chunk(types, n);
    for (idx_t i = 0; i < n; i++) {
        duckdb_destroy_logical_type(&types[i]);
    }
    if (tw->chunk == NULL) {
        duckdb_appender_destroy(&tw->app);
        return DLOTEL_ERR_NOMEM;
    }
    tw_bind(tw);
    return 0;
}

void sink_tw_cleanup(struct sink_tw *tw)
{
    if (tw->chunk != NULL) {
        duckdb_destroy_data_chunk(&tw->chunk);
    }
    if (tw->app != NULL) {
        /* Nothing is left to flush here: a clean shutdown flushed, a failed one must not. */
        duckdb_appender_destroy(&tw->app);
    }
}

static int tw_hand_over(struct sink_tw *tw, char *err, size_t errlen)
{
    if (tw->row == 0) {
        return 0;
    }
    duckdb_data_chunk_set_size(tw->chunk, tw->row);
    duckdb_state st = duckdb_append_data_chunk(tw->app, tw->chunk);
    duckdb_data_chunk_reset(tw->chunk);
    tw_bind(tw);
    if (st != DuckDBSuccess) {
        set_err(err, errlen, "cannot append rows", duckdb_appender_error(tw->app));
        return DLOTEL_ERR_IO;
    }
    return 0;
}

int sink_tw_flush(struct sink_tw *tw, char *err, size_t errlen)
{
    int rc = tw_hand_over(tw, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (duckdb_appender_flush(tw->app) != DuckDBSuccess) {
        set_err(err, errlen, "cannot flush the appender", duckdb_appender_error(tw->app));
        return DLOTEL_ERR_IO;
    }
    return 0;
}

void sink_tw_discard(struct sink_tw *tw)
{
    duckdb_data_chunk_reset(tw->chunk);
    tw_bind(tw);
    if (tw->app != NULL) {
        /* Its flush goes into the caller's open (failed) transaction, or fails: either way the
           caller's rollback takes the rows with it. */
        duckdb_appender_destroy(&tw->app);
        tw->app = NULL;
    }
}

int sink_tw_reopen(struct sink_tw *tw, duckdb_connection conn, char *err, size_t errlen)
{
    if (tw->app != NULL) {
        return 0;
    }
    return tw_open_appender(tw, conn, err, errlen);
}

/* ---- cell setters -------------------------------------------------------------------------- */

static inline void cell_null(struct sink_tw *tw, size_t c)
{
    duckdb_validity_set_row_invalid(tw->valid[c], tw->row);
}

static inline void cell_valid(struct sink_tw *tw, size_t c)
{
    duckdb_validity_set_row_valid(tw->valid[c], tw->row);
}

static inline void cell_str(struct sink_tw *tw, size_t c, const char *s, size_t n)
{
    cell_valid(tw, c);
    duckdb_vector_assign_string_element_len(tw->vec[c], tw->row, s, n);
}

/* A string column where "" means "not set" (OTLP's proto3 default): NULL then. */
static inline void cell_opt_str(struct sink_tw *tw, size_t c, const char *s)
{
    if (s == NULL || s[0] == '\0') {
        cell_null(tw, c);
    } else {
        cell_str(tw, c, s, strlen(s));
    }
}

static inline void cell_i64(struct sink_tw *tw, size_t c, int64_t v)
{
    cell_valid(tw, c);
    ((int64_t *)tw->data[c])[tw->row] = v;
}

static inline void cell_i32(struct sink_tw *tw, size_t c, int32_t v)
{
    cell_valid(tw, c);
    ((int32_t *)tw->data[c])[tw->row] = v;
}

static inline void cell_f64(struct sink_tw *tw, size_t c, double v)
{
    cell_valid(tw, c);
    ((double *)tw->data[c])[tw->row] = v;
}

static inline void cell_bool(struct sink_tw *tw, size_t c, bool v)
{
    cell_valid(tw, c);
    ((bool *)tw->data[c])[tw->row] = v;
}

static inline void cell_u64(struct sink_tw *tw, size_t c, uint64_t v)
{
    cell_i64(tw, c, sink_clamp_u64(v));
}

static inline void cell_tstz(struct sink_tw *tw, size_t c, uint64_t ns)
{
    cell_i64(tw, c, sink_ns_to_us(ns));
}

static inline void cell_date(struct sink_tw *tw, size_t c, uint64_t ns)
{
    cell_i32(tw, c, sink_ns_to_days(ns));
}

static inline void cell_hex(struct sink_tw *tw, size_t c, const ProtobufCBinaryData *id)
{
    /* The scanner allows only 16- or 8-byte ids or none; anything else is stored as NULL. */
    if (id->len == 0 || id->len > 16) {
        cell_null(tw, c);
        return;
    }
    char hex[33];
    sink_hex_id(hex, id->data, id->len);
    cell_str(tw, c, hex, id->len * 2);
}

/* Reserves |n| more entries in list column |c| and points its entry for this row at them. */
static int list_begin(struct sink_tw *tw, size_t c, size_t n, idx_t *off)
{
    duckdb_vector lv = tw->vec[c];
    *off = duckdb_list_vector_get_size(lv);
    if (duckdb_list_vector_reserve(lv, *off + n) != DuckDBSuccess) {
        return DLOTEL_ERR_NOMEM;
    }
    duckdb_list_entry *e = tw->data[c];
    e[tw->row].offset = *off;
    e[tw->row].length = n;
    cell_valid(tw, c);
    return 0;
}

static int list_end(struct sink_tw *tw, size_t c, idx_t size)
{
    return duckdb_list_vector_set_size(tw->vec[c], size) == DuckDBSuccess ? 0 : DLOTEL_ERR_NOMEM;
}

static int cell_list_u64(struct sink_tw *tw, size_t c, const uint64_t *v, size_t n)
{
    idx_t off;
    int rc = list_begin(tw, c, n, &off);
    if (rc != 0) {
        return rc;
    }
    int64_t *d = duckdb_vector_get_data(duckdb_list_vector_get_child(tw->vec[c]));
    for (size_t i = 0; i < n; i++) {
        d[off + i] = sink_clamp_u64(v[i]);
    }
    return list_end(tw, c, off + n);
}

static int cell_list_f64(struct sink_tw *tw, size_t c, const double *v, size_t n)
{
    idx_t off;
    int rc = list_begin(tw, c, n, &off);
    if (rc != 0) {
        return rc;
    }
    double *d = duckdb_vector_get_data(duckdb_list_vector_get_child(tw->vec[c]));
    if (n > 0) {
        memcpy(d + off, v, n * sizeof(double));
    }
    return list_end(tw, c, off + n);
}

/* The quantiles of a summary (|values| false) or their values; an absent entry is 0. */
static int cell_list_quantiles(struct sink_tw *tw, size_t c, sink_quantile *const *q, size_t n,
                               bool values)
{
    idx_t off;
    int rc = list_begin(tw, c, n, &off);
    if (rc != 0) {
        return rc;
    }
    double *d = duckdb_vector_get_data(duckdb_list_vector_get_child(tw->vec[c]));
    for (size_t i = 0; i < n; i++) {
        d[off + i] = q[i] == NULL ? 0.0 : values ? q[i]->value : q[i]->quantile;
    }
    return list_end(tw, c, off + n);
}

/* A MAP(VARCHAR, VARCHAR) column: the entries sink_keys keeps, values as sink_value_text. */
static int cell_map(struct sink_emit *e, struct sink_tw *tw, size_t c, sink_keyvalue *const *kv,
                    size_t n)
{
    struct sink_keys ks;
    int rc = sink_keys_init(&ks, kv, n);
    if (rc != 0) {
        return rc;
    }
    idx_t off;
    rc = list_begin(tw, c, n, &off);
    if (rc != 0) {
        goto out;
    }
    duckdb_vector st = duckdb_list_vector_get_child(tw->vec[c]);
    duckdb_vector keys = duckdb_struct_vector_get_child(st, 0);
    duckdb_vector vals = duckdb_struct_vector_get_child(st, 1);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (sink_keys_skip(&ks, i)) {
            continue;
        }
        idx_t at = off + used;
        duckdb_vector_assign_string_element(keys, at, kv[i]->key);
        buf_reset(&e->scratch);
        int t = sink_value_text(&e->scratch, kv[i]->value, sink_json_double);
        if (t < 0) {
            rc = t;
            goto out;
        }
        if (t == 1) {
            duckdb_vector_ensure_validity_writable(vals);
            duckdb_validity_set_row_invalid(duckdb_vector_get_validity(vals), at);
        } else {
            uint64_t *vv = duckdb_vector_get_validity(vals);
            if (vv != NULL) {
                duckdb_validity_set_row_valid(vv, at);
            }
            duckdb_vector_assign_string_element_len(vals, at, (const char *)e->scratch.data,
                                                    e->scratch.len);
        }
        used++;
    }
    ((duckdb_list_entry *)tw->data[c])[tw->row].length = used;
    rc = list_end(tw, c, off + used);
out:
    sink_keys_cleanup(&ks);
    return rc;
}

/* Stores the text in e->json as column |c|. */
static void cell_json(struct sink_emit *e, struct sink_tw *tw, size_t c)
{
    cell_str(tw, c, (const char *)e->json.data, e->json.len);
}

/* Finishes a row; hands a full chunk to the appender. */
static int row_end(struct sink_emit *e, struct sink_tw *tw, int table)
{
    tw->row++;
    e->rows[table]++;
    if (tw->row == tw->cap) {
        return tw_hand_over(tw, e->err, sizeof(e->err));
    }
    return 0;
}

/* ---- resources and scopes ------------------------------------------------------------------ */

static int put_resource(struct sink_emit *e, struct sink_tw *tw, const struct sink_res *ri,
                        size_t c_service, size_t c_uid, size_t c_attrs)
{
    cell_opt_str(tw, c_service, ri->service_name);
    cell_opt_str(tw, c_uid, ri->user_uid);
    return cell_map(e, tw, c_attrs, ri->attrs, ri->n_attrs);
}

static void put_scope(struct sink_tw *tw, const sink_scope *sc, size_t c_name, size_t c_version)
{
    cell_opt_str(tw, c_name, sc != NULL ? sc->name : NULL);
    cell_opt_str(tw, c_version, sc != NULL ? sc->version : NULL);
}

/* ---- spans --------------------------------------------------------------------------------- */

static int emit_span(void *ctx, const struct sink_res *ri, const sink_scope *sc,
                     const sink_span *sp)
{
    struct sink_emit *e = ctx;
    struct sink_tw *tw = e->tw[OTLP_TRACES];
    cell_i64(tw, SP_SEQ, (int64_t)(*e->next_seq)++);
    cell_date(tw, SP_DATE, sp->start_time_unix_nano);
    cell_hex(tw, SP_TRACE_ID, &sp->trace_id);
    cell_hex(tw, SP_SPAN_ID, &sp->span_id);
    cell_hex(tw, SP_PARENT_SPAN_ID, &sp->parent_span_id);
    cell_opt_str(tw, SP_TRACE_STATE, sp->trace_state);
    cell_str(tw, SP_SPAN_NAME, sp->name, strlen(sp->name));
    const char *kind = sink_span_kind_name(sp->kind);
    cell_str(tw, SP_SPAN_KIND, kind, strlen(kind));
    cell_u64(tw, SP_START_NS, sp->start_time_unix_nano);
    cell_u64(tw, SP_END_NS, sp->end_time_unix_nano);
    /* A span that ends before it starts (clock trouble) gets a negative duration, as sent. */
    cell_i64(tw, SP_DURATION_NS,
             sink_clamp_u64(sp->end_time_unix_nano) - sink_clamp_u64(sp->start_time_unix_nano));
    cell_tstz(tw, SP_START_TIME, sp->start_time_unix_nano);
    cell_tstz(tw, SP_END_TIME, sp->end_time_unix_nano);
    const char *st = sink_status_name(sp->status != NULL ? (int)sp->status->code : 0);
    cell_str(tw, SP_STATUS_CODE, st, strlen(st));
    cell_opt_str(tw, SP_STATUS_MESSAGE, sp->status != NULL ? sp->status->message : NULL);
    put_scope(tw, sc, SP_SCOPE_NAME, SP_SCOPE_VERSION);
    cell_i64(tw, SP_FLAGS, sp->flags);
    cell_i64(tw, SP_DROPPED_ATTRIBUTES, sp->dropped_attributes_count);
    cell_i64(tw, SP_DROPPED_EVENTS, sp->dropped_events_count);
    cell_i64(tw, SP_DROPPED_LINKS, sp->dropped_links_count);

    int rc = put_resource(e, tw, ri, SP_SERVICE_NAME, SP_USER_UID, SP_RESOURCE_ATTRIBUTES);
    if (rc == 0) {
        rc = cell_map(e, tw, SP_ATTRIBUTES, sp->attributes, sp->n_attributes);
    }
    if (rc == 0) {
        buf_reset(&e->json);
        rc = sink_json_events(&e->json, sp, sink_json_double);
    }
    if (rc == 0) {
        cell_json(e, tw, SP_EVENTS);
        buf_reset(&e->json);
        rc = sink_json_links(&e->json, sp, sink_json_double);
    }
    if (rc == 0) {
        cell_json(e, tw, SP_LINKS);
        rc = row_end(e, tw, OTLP_TRACES);
    }
    return rc;
}

/* ---- logs ---------------------------------------------------------------------------------- */

static int emit_log(void *ctx, const struct sink_res *ri, const sink_scope *sc,
                    const sink_log_record *lr)
{
    struct sink_emit *e = ctx;
    struct sink_tw *tw = e->tw[OTLP_LOGS];
    /* The record's time, or when the collector saw it if the source gave none (spec). */
    uint64_t t = lr->time_unix_nano != 0 ? lr->time_unix_nano : lr->observed_time_unix_nano;
    cell_i64(tw, LG_SEQ, (int64_t)(*e->next_seq)++);
    cell_date(tw, LG_DATE, t);
    cell_u64(tw, LG_TIME_NS, lr->time_unix_nano);
    cell_u64(tw, LG_OBSERVED_NS, lr->observed_time_unix_nano);
    cell_tstz(tw, LG_TIMESTAMP, t);
    cell_i32(tw, LG_SEVERITY_NUMBER, (int32_t)lr->severity_number);
    cell_opt_str(tw, LG_SEVERITY_TEXT, lr->severity_text);
    cell_hex(tw, LG_TRACE_ID, &lr->trace_id);
    cell_hex(tw, LG_SPAN_ID, &lr->span_id);
    cell_i64(tw, LG_FLAGS, lr->flags);
    cell_opt_str(tw, LG_EVENT_NAME, lr->event_name);
    put_scope(tw, sc, LG_SCOPE_NAME, LG_SCOPE_VERSION);
    cell_i64(tw, LG_DROPPED_ATTRIBUTES, lr->dropped_attributes_count);

    /* A string body as it is; any other body as its JSON text. */
    buf_reset(&e->scratch);
    int rc = sink_value_text(&e->scratch, lr->body, sink_json_double);
    if (rc == 1) {
        cell_null(tw, LG_BODY);
        rc = 0;
    } else if (rc == 0) {
        cell_str(tw, LG_BODY, (const char *)e->scratch.data, e->scratch.len);
    }
    if (rc == 0) {
        rc = put_resource(e, tw, ri, LG_SERVICE_NAME, LG_USER_UID, LG_RESOURCE_ATTRIBUTES);
    }
    if (rc == 0) {
        rc = cell_map(e, tw, LG_ATTRIBUTES, lr->attributes, lr->n_attributes);
    }
    if (rc == 0) {
        rc = row_end(e, tw, OTLP_LOGS);
    }
    return rc;
}

/* ---- metrics ------------------------------------------------------------------------------- */

/* One data point; the columns its type does not have are NULL. */
static int emit_point(void *ctx, const struct sink_point *p)
{
    struct sink_emit *e = ctx;
    struct sink_tw *tw = e->tw[OTLP_METRICS];
    cell_i64(tw, MT_SEQ, (int64_t)(*e->next_seq)++);
    cell_date(tw, MT_DATE, p->time);
    cell_str(tw, MT_METRIC_NAME, p->metric->name, strlen(p->metric->name));
    cell_opt_str(tw, MT_METRIC_DESCRIPTION, p->metric->description);
    cell_opt_str(tw, MT_METRIC_UNIT, p->metric->unit);
    cell_str(tw, MT_METRIC_TYPE, p->type, strlen(p->type));
    cell_u64(tw, MT_START_NS, p->start);
    cell_u64(tw, MT_TIME_NS, p->time);
    cell_tstz(tw, MT_TIMESTAMP, p->time);
    cell_opt_str(tw, MT_TEMPORALITY, p->temporality);
    if (p->monotonic < 0) {
        cell_null(tw, MT_MONOTONIC);
    } else {
        cell_bool(tw, MT_MONOTONIC, p->monotonic != 0);
    }
    cell_i64(tw, MT_FLAGS, p->flags);
    put_scope(tw, p->scope, MT_SCOPE_NAME, MT_SCOPE_VERSION);
    p->has_vd ? cell_f64(tw, MT_VALUE_DOUBLE, p->vd) : cell_null(tw, MT_VALUE_DOUBLE);
    p->has_vi ? cell_i64(tw, MT_VALUE_INT, p->vi) : cell_null(tw, MT_VALUE_INT);
    p->has_count ? cell_u64(tw, MT_COUNT, p->count) : cell_null(tw, MT_COUNT);
    p->has_sum ? cell_f64(tw, MT_SUM, p->sum) : cell_null(tw, MT_SUM);
    p->has_min ? cell_f64(tw, MT_MIN, p->min) : cell_null(tw, MT_MIN);
    p->has_max ? cell_f64(tw, MT_MAX, p->max) : cell_null(tw, MT_MAX);
    static const size_t exp_cols[] = {MT_SCALE,      MT_ZERO_COUNT,  MT_ZERO_THRESHOLD,
                                      MT_POS_OFFSET, MT_POS_BUCKETS, MT_NEG_OFFSET,
                                      MT_NEG_BUCKETS};
    if (p->has_exp) {
        cell_i32(tw, MT_SCALE, p->scale);
        cell_u64(tw, MT_ZERO_COUNT, p->zero_count);
        cell_f64(tw, MT_ZERO_THRESHOLD, p->zero_threshold);
        cell_i32(tw, MT_POS_OFFSET, p->pos_off);
        cell_i32(tw, MT_NEG_OFFSET, p->neg_off);
    } else {
        for (size_t i = 0; i < sizeof(exp_cols) / sizeof(exp_cols[0]); i++) {
            cell_null(tw, exp_cols[i]);
        }
    }
    int rc = 0;
    if (p->has_hist) {
        rc = cell_list_u64(tw, MT_BUCKET_COUNTS, p->buckets, p->n_buckets);
        if (rc == 0) {
            rc = cell_list_f64(tw, MT_EXPLICIT_BOUNDS, p->bounds, p->n_bounds);
        }
    } else {
        cell_null(tw, MT_BUCKET_COUNTS);
        cell_null(tw, MT_EXPLICIT_BOUNDS);
    }
    if (rc == 0 && p->has_exp) {
        rc = cell_list_u64(tw, MT_POS_BUCKETS, p->pos, p->n_pos);
        if (rc == 0) {
            rc = cell_list_u64(tw, MT_NEG_BUCKETS, p->neg, p->n_neg);
        }
    }
    if (rc == 0 && p->has_summary) {
        rc = cell_list_quantiles(tw, MT_QUANTILES, p->q, p->n_q, false);
        if (rc == 0) {
            rc = cell_list_quantiles(tw, MT_QUANTILE_VALUES, p->q, p->n_q, true);
        }
    } else if (rc == 0) {
        cell_null(tw, MT_QUANTILES);
        cell_null(tw, MT_QUANTILE_VALUES);
    }
    if (rc == 0) {
        rc = put_resource(e, tw, p->res, MT_SERVICE_NAME, MT_USER_UID, MT_RESOURCE_ATTRIBUTES);
    }
    if (rc == 0) {
        rc = cell_map(e, tw, MT_ATTRIBUTES, p->attrs, p->n_attrs);
    }
    if (rc == 0) {
        buf_reset(&e->json);
        rc = sink_json_exemplars(&e->json, p->ex, p->n_ex, sink_json_double);
    }
    if (rc == 0) {
        cell_json(e, tw, MT_EXEMPLARS);
        rc = row_end(e, tw, OTLP_METRICS);
    }
    return rc;
}

/* ---- entry --------------------------------------------------------------------------------- */

void sink_emit_init(struct sink_emit *e)
{
    memset(e, 0, sizeof(*e));
    buf_init(&e->scratch, SINK_VALUE_MAX);
    buf_init(&e->json, SINK_VALUE_MAX);
}

void sink_emit_cleanup(struct sink_emit *e)
{
    buf_cleanup(&e->scratch);
    buf_cleanup(&e->json);
}

int sink_emit_request(struct sink_emit *e, int signal, const ProtobufCMessage *msg)
{
    e->err[0] = '\0';
    if (signal != OTLP_TRACES && signal != OTLP_LOGS && signal != OTLP_METRICS) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    /*
     * A uid that cannot be rendered leaves the rows without a user rather than refusing the
     * request: the rows are stored, and an admin still sees them.
     */
    struct sink_walk w = {.ctx = e,
                          .span = emit_span,
                          .log = emit_log,
                          .point = emit_point,
                          .user_uid = e->user_uid,
                          .uid_errors_fatal = false,
                          .dbl = sink_json_double};
    int rc = sink_walk_request(&w, signal, msg);
    /* Scratch buffers that grew for a rare huge value give their memory back. */
    if (e->scratch.cap > ((size_t)1 << 20)) {
        buf_cleanup(&e->scratch);
    }
    if (e->json.cap > ((size_t)1 << 20)) {
        buf_cleanup(&e->json);
    }
    if (rc != 0 && e->err[0] == '\0') {
        snprintf(e->err, sizeof(e->err), "cannot build rows: %s", dlotel_strerror(rc));
    }
    return rc;
}
