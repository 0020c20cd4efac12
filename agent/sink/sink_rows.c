/*
 * OTLP requests to rows: one row per span, per log record and per metric data point, written
 * straight into DuckDB data chunks (vector by vector) and handed to the appender a chunk at a
 * time. This is the ingest hot path: no SQL, no per-value duckdb_value objects, strings copied
 * once from the decoded request into DuckDB's vectors.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"
#include "sink/sink_int.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest trace_req;
typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest logs_req;
typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest metrics_req;
typedef Opentelemetry__Proto__Resource__V1__Resource resource_t;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope scope_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;
typedef Opentelemetry__Proto__Logs__V1__LogRecord log_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__NumberDataPoint number_dp;
typedef Opentelemetry__Proto__Metrics__V1__HistogramDataPoint hist_dp;
typedef Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint exp_dp;
typedef Opentelemetry__Proto__Metrics__V1__SummaryDataPoint summary_dp;
typedef Opentelemetry__Proto__Metrics__V1__Exemplar exemplar_t;

/* Scratch text for one value (a map value, a JSON column) may not pass this. */
#define SINK_VALUE_MAX ((size_t)64 * 1024 * 1024)

#define NS_PER_DAY ((uint64_t)86400 * 1000000000)

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

/* OTLP's unsigned 64-bit times and counts in a signed BIGINT: clamp instead of wrapping. */
static inline int64_t clamp_u64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

static inline void cell_u64(struct sink_tw *tw, size_t c, uint64_t v)
{
    cell_i64(tw, c, clamp_u64(v));
}

/* TIMESTAMPTZ from nanoseconds: DuckDB keeps microseconds. */
static inline void cell_tstz(struct sink_tw *tw, size_t c, uint64_t ns)
{
    cell_i64(tw, c, clamp_u64(ns) / 1000);
}

static inline void cell_date(struct sink_tw *tw, size_t c, uint64_t ns)
{
    cell_i32(tw, c, (int32_t)(clamp_u64(ns) / (int64_t)NS_PER_DAY));
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
        d[off + i] = clamp_u64(v[i]);
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

/*
 * Keys that may go into a MAP: DuckDB requires them unique and not NULL. Short lists use a
 * quadratic scan; long ones a hash set, so that a hostile request with 100k attributes costs
 * linear time.
 */
struct keyset {
    const char **slots;
    size_t cap;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

/* Returns 1 when |k| was already in the set, 0 when it was added, -1 on allocation failure. */
static int keyset_add(struct keyset *ks, const char *k)
{
    size_t i = (size_t)hash_str(k) & (ks->cap - 1);
    while (ks->slots[i] != NULL) {
        if (strcmp(ks->slots[i], k) == 0) {
            return 1;
        }
        i = (i + 1) & (ks->cap - 1);
    }
    ks->slots[i] = k;
    return 0;
}

static int cell_map(struct sink_emit *e, struct sink_tw *tw, size_t c, sink_keyvalue *const *kv,
                    size_t n)
{
    struct keyset ks = {NULL, 0};
    if (n > 32) {
        ks.cap = 64;
        while (ks.cap < n * 2) {
            ks.cap *= 2;
        }
        ks.slots = calloc(ks.cap, sizeof(*ks.slots));
        if (ks.slots == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
    }
    idx_t off;
    int rc = list_begin(tw, c, n, &off);
    if (rc != 0) {
        goto out;
    }
    duckdb_vector st = duckdb_list_vector_get_child(tw->vec[c]);
    duckdb_vector keys = duckdb_struct_vector_get_child(st, 0);
    duckdb_vector vals = duckdb_struct_vector_get_child(st, 1);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (kv[i] == NULL || kv[i]->key == NULL) {
            continue;
        }
        int dup;
        if (ks.slots != NULL) {
            dup = keyset_add(&ks, kv[i]->key);
        } else {
            dup = 0;
            for (size_t j = 0; j < i && !dup; j++) {
                dup = kv[j] != NULL && kv[j]->key != NULL && strcmp(kv[j]->key, kv[i]->key) == 0;
            }
        }
        if (dup) {
            continue; /* The first of duplicate keys wins, as in the collector. */
        }
        idx_t at = off + used;
        duckdb_vector_assign_string_element(keys, at, kv[i]->key);
        buf_reset(&e->scratch);
        int t = sink_value_text(&e->scratch, kv[i]->value);
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
    free(ks.slots);
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

/* What every row of one resource shares. */
struct res_info {
    const char *service_name; /* NULL when the resource has none. */
    const char *user_uid;     /* NULL when none. */
    sink_keyvalue *const *attrs;
    size_t n_attrs;
};

static void res_info_init(struct sink_emit *e, struct res_info *ri, const resource_t *r,
                          struct buf *uidbuf)
{
    memset(ri, 0, sizeof(*ri));
    ri->user_uid = e->user_uid;
    if (r == NULL) {
        return;
    }
    ri->attrs = r->attributes;
    ri->n_attrs = r->n_attributes;
    bool have_service = false;
    bool have_uid = e->user_uid != NULL;
    for (size_t i = 0; i < r->n_attributes && (!have_service || !have_uid); i++) {
        const sink_keyvalue *kv = r->attributes[i];
        if (kv == NULL || kv->key == NULL || kv->value == NULL) {
            continue;
        }
        if (!have_service && strcmp(kv->key, "service.name") == 0) {
            have_service = true;
            if (kv->value->value_case ==
                OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
                ri->service_name = kv->value->string_value;
            }
        } else if (!have_uid && strcmp(kv->key, "datalayer.user_uid") == 0) {
            have_uid = true;
            if (kv->value->value_case ==
                OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
                ri->user_uid = kv->value->string_value;
            } else {
                /* A number as the uid: keep its text. */
                buf_reset(uidbuf);
                if (sink_value_text(uidbuf, kv->value) == 0 && buf_terminate(uidbuf) == 0) {
                    ri->user_uid = (const char *)uidbuf->data;
                }
            }
        }
    }
}

static int put_resource(struct sink_emit *e, struct sink_tw *tw, const struct res_info *ri,
                        size_t c_service, size_t c_uid, size_t c_attrs)
{
    cell_opt_str(tw, c_service, ri->service_name);
    cell_opt_str(tw, c_uid, ri->user_uid);
    return cell_map(e, tw, c_attrs, ri->attrs, ri->n_attrs);
}

static void put_scope(struct sink_tw *tw, const scope_t *sc, size_t c_name, size_t c_version)
{
    cell_opt_str(tw, c_name, sc != NULL ? sc->name : NULL);
    cell_opt_str(tw, c_version, sc != NULL ? sc->version : NULL);
}

/* ---- spans --------------------------------------------------------------------------------- */

static const char *span_kind_text(int k)
{
    switch (k) {
    case 1:
        return "INTERNAL";
    case 2:
        return "SERVER";
    case 3:
        return "CLIENT";
    case 4:
        return "PRODUCER";
    case 5:
        return "CONSUMER";
    default:
        return "UNSPECIFIED";
    }
}

static const char *status_text(int code)
{
    switch (code) {
    case 1:
        return "OK";
    case 2:
        return "ERROR";
    default:
        return "UNSET";
    }
}

static int events_json(struct buf *b, const span_t *sp)
{
    int rc = buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < sp->n_events; i++) {
        const Opentelemetry__Proto__Trace__V1__Span__Event *ev = sp->events[i];
        if (ev == NULL) {
            continue;
        }
        rc = buf_printf(b, "%s{\"name\":", i > 0 ? "," : "");
        if (rc == 0) {
            rc = sink_json_str(b, ev->name, strlen(ev->name));
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"time_unix_nano\":%" PRId64 ",\"attributes\":",
                            clamp_u64(ev->time_unix_nano));
        }
        if (rc == 0) {
            rc = sink_json_attributes(b, ev->attributes, ev->n_attributes);
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"dropped_attributes_count\":%" PRIu32 "}",
                            ev->dropped_attributes_count);
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

static int id_json(struct buf *b, const ProtobufCBinaryData *id)
{
    if (id->len == 0) {
        return buf_append(b, "null", 4);
    }
    int rc = buf_putc(b, '"');
    if (rc == 0) {
        rc = sink_hex(b, id->data, id->len);
    }
    return rc == 0 ? buf_putc(b, '"') : rc;
}

static int links_json(struct buf *b, const span_t *sp)
{
    int rc = buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < sp->n_links; i++) {
        const Opentelemetry__Proto__Trace__V1__Span__Link *l = sp->links[i];
        if (l == NULL) {
            continue;
        }
        rc = buf_printf(b, "%s{\"trace_id\":", i > 0 ? "," : "");
        if (rc == 0) {
            rc = id_json(b, &l->trace_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"span_id\":", 11);
        }
        if (rc == 0) {
            rc = id_json(b, &l->span_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"trace_state\":", 15);
        }
        if (rc == 0) {
            rc = sink_json_str(b, l->trace_state, strlen(l->trace_state));
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"attributes\":", 14);
        }
        if (rc == 0) {
            rc = sink_json_attributes(b, l->attributes, l->n_attributes);
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"dropped_attributes_count\":%" PRIu32 ",\"flags\":%" PRIu32 "}",
                            l->dropped_attributes_count, l->flags);
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

static int emit_span(struct sink_emit *e, const struct res_info *ri, const scope_t *sc,
                     const span_t *sp)
{
    struct sink_tw *tw = e->tw[OTLP_TRACES];
    cell_i64(tw, SP_SEQ, (int64_t)(*e->next_seq)++);
    cell_date(tw, SP_DATE, sp->start_time_unix_nano);
    cell_hex(tw, SP_TRACE_ID, &sp->trace_id);
    cell_hex(tw, SP_SPAN_ID, &sp->span_id);
    cell_hex(tw, SP_PARENT_SPAN_ID, &sp->parent_span_id);
    cell_opt_str(tw, SP_TRACE_STATE, sp->trace_state);
    cell_str(tw, SP_SPAN_NAME, sp->name, strlen(sp->name));
    const char *kind = span_kind_text(sp->kind);
    cell_str(tw, SP_SPAN_KIND, kind, strlen(kind));
    cell_u64(tw, SP_START_NS, sp->start_time_unix_nano);
    cell_u64(tw, SP_END_NS, sp->end_time_unix_nano);
    /* A span that ends before it starts (clock trouble) gets a negative duration, as sent. */
    cell_i64(tw, SP_DURATION_NS,
             clamp_u64(sp->end_time_unix_nano) - clamp_u64(sp->start_time_unix_nano));
    cell_tstz(tw, SP_START_TIME, sp->start_time_unix_nano);
    cell_tstz(tw, SP_END_TIME, sp->end_time_unix_nano);
    const char *st = status_text(sp->status != NULL ? (int)sp->status->code : 0);
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
        rc = events_json(&e->json, sp);
    }
    if (rc == 0) {
        cell_json(e, tw, SP_EVENTS);
        buf_reset(&e->json);
        rc = links_json(&e->json, sp);
    }
    if (rc == 0) {
        cell_json(e, tw, SP_LINKS);
        rc = row_end(e, tw, OTLP_TRACES);
    }
    return rc;
}

static int emit_traces(struct sink_emit *e, const trace_req *r)
{
    struct buf uid;
    buf_init(&uid, 4096);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->n_resource_spans; i++) {
        const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = r->resource_spans[i];
        struct res_info ri;
        res_info_init(e, &ri, rs->resource, &uid);
        for (size_t j = 0; rc == 0 && j < rs->n_scope_spans; j++) {
            const Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = rs->scope_spans[j];
            for (size_t k = 0; rc == 0 && k < ss->n_spans; k++) {
                rc = emit_span(e, &ri, ss->scope, ss->spans[k]);
            }
        }
    }
    buf_cleanup(&uid);
    return rc;
}

/* ---- logs ---------------------------------------------------------------------------------- */

static int emit_log(struct sink_emit *e, const struct res_info *ri, const scope_t *sc,
                    const log_t *lr)
{
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
    int rc = sink_value_text(&e->scratch, lr->body);
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

static int emit_logs(struct sink_emit *e, const logs_req *r)
{
    struct buf uid;
    buf_init(&uid, 4096);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->n_resource_logs; i++) {
        const Opentelemetry__Proto__Logs__V1__ResourceLogs *rl = r->resource_logs[i];
        struct res_info ri;
        res_info_init(e, &ri, rl->resource, &uid);
        for (size_t j = 0; rc == 0 && j < rl->n_scope_logs; j++) {
            const Opentelemetry__Proto__Logs__V1__ScopeLogs *sl = rl->scope_logs[j];
            for (size_t k = 0; rc == 0 && k < sl->n_log_records; k++) {
                rc = emit_log(e, &ri, sl->scope, sl->log_records[k]);
            }
        }
    }
    buf_cleanup(&uid);
    return rc;
}

/* ---- metrics ------------------------------------------------------------------------------- */

/* The columns every data point has; the type-specific ones start out NULL. */
struct metric_ctx {
    const struct res_info *ri;
    const scope_t *sc;
    const metric_t *m;
    const char *type;
    const char *temporality; /* NULL for gauges and summaries. */
    int monotonic;           /* -1: not a sum. */
};

static const char *temporality_text(int t)
{
    switch (t) {
    case 1:
        return "DELTA";
    case 2:
        return "CUMULATIVE";
    default:
        return "UNSPECIFIED";
    }
}

static int exemplars_json(struct buf *b, exemplar_t *const *ex, size_t n)
{
    int rc = buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const exemplar_t *x = ex[i];
        if (x == NULL) {
            continue;
        }
        rc = buf_printf(b, "%s{\"time_unix_nano\":%" PRId64 ",\"value\":", i > 0 ? "," : "",
                        clamp_u64(x->time_unix_nano));
        if (rc == 0) {
            if (x->value_case == OPENTELEMETRY__PROTO__METRICS__V1__EXEMPLAR__VALUE_AS_INT) {
                rc = buf_printf(b, "%" PRId64, x->as_int);
            } else if (x->value_case ==
                       OPENTELEMETRY__PROTO__METRICS__V1__EXEMPLAR__VALUE_AS_DOUBLE) {
                rc = sink_json_double(b, x->as_double);
            } else {
                rc = buf_append(b, "null", 4);
            }
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"trace_id\":", 12);
        }
        if (rc == 0) {
            rc = id_json(b, &x->trace_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"span_id\":", 11);
        }
        if (rc == 0) {
            rc = id_json(b, &x->span_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"filtered_attributes\":", 23);
        }
        if (rc == 0) {
            rc = sink_json_attributes(b, x->filtered_attributes, x->n_filtered_attributes);
        }
        if (rc == 0) {
            rc = buf_putc(b, '}');
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

/* Writes the shared columns of a data point and sets the type-specific ones to NULL. */
static int point_begin(struct sink_emit *e, const struct metric_ctx *mc, uint64_t start,
                       uint64_t time, uint32_t flags, sink_keyvalue *const *attrs, size_t n_attrs,
                       exemplar_t *const *ex, size_t n_ex)
{
    struct sink_tw *tw = e->tw[OTLP_METRICS];
    static const size_t typed[] = {
        MT_VALUE_DOUBLE,
        MT_VALUE_INT,
        MT_COUNT,
        MT_SUM,
        MT_MIN,
        MT_MAX,
        MT_BUCKET_COUNTS,
        MT_EXPLICIT_BOUNDS,
        MT_SCALE,
        MT_ZERO_COUNT,
        MT_ZERO_THRESHOLD,
        MT_POS_OFFSET,
        MT_POS_BUCKETS,
        MT_NEG_OFFSET,
        MT_NEG_BUCKETS,
        MT_QUANTILES,
        MT_QUANTILE_VALUES,
    };
    for (size_t i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
        cell_null(tw, typed[i]);
    }
    cell_i64(tw, MT_SEQ, (int64_t)(*e->next_seq)++);
    cell_date(tw, MT_DATE, time);
    cell_str(tw, MT_METRIC_NAME, mc->m->name, strlen(mc->m->name));
    cell_opt_str(tw, MT_METRIC_DESCRIPTION, mc->m->description);
    cell_opt_str(tw, MT_METRIC_UNIT, mc->m->unit);
    cell_str(tw, MT_METRIC_TYPE, mc->type, strlen(mc->type));
    cell_u64(tw, MT_START_NS, start);
    cell_u64(tw, MT_TIME_NS, time);
    cell_tstz(tw, MT_TIMESTAMP, time);
    cell_opt_str(tw, MT_TEMPORALITY, mc->temporality);
    if (mc->monotonic < 0) {
        cell_null(tw, MT_MONOTONIC);
    } else {
        cell_bool(tw, MT_MONOTONIC, mc->monotonic != 0);
    }
    cell_i64(tw, MT_FLAGS, flags);
    put_scope(tw, mc->sc, MT_SCOPE_NAME, MT_SCOPE_VERSION);
    int rc = put_resource(e, tw, mc->ri, MT_SERVICE_NAME, MT_USER_UID, MT_RESOURCE_ATTRIBUTES);
    if (rc == 0) {
        rc = cell_map(e, tw, MT_ATTRIBUTES, attrs, n_attrs);
    }
    if (rc == 0) {
        buf_reset(&e->json);
        rc = exemplars_json(&e->json, ex, n_ex);
    }
    if (rc == 0) {
        cell_json(e, tw, MT_EXEMPLARS);
    }
    return rc;
}

static int emit_number(struct sink_emit *e, const struct metric_ctx *mc, const number_dp *dp)
{
    struct sink_tw *tw = e->tw[OTLP_METRICS];
    int rc = point_begin(e, mc, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                         dp->attributes, dp->n_attributes, dp->exemplars, dp->n_exemplars);
    if (rc != 0) {
        return rc;
    }
    if (dp->value_case == OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE) {
        cell_f64(tw, MT_VALUE_DOUBLE, dp->as_double);
    } else if (dp->value_case ==
               OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT) {
        cell_i64(tw, MT_VALUE_INT, dp->as_int);
    }
    return row_end(e, tw, OTLP_METRICS);
}

static int emit_histogram(struct sink_emit *e, const struct metric_ctx *mc, const hist_dp *dp)
{
    struct sink_tw *tw = e->tw[OTLP_METRICS];
    int rc = point_begin(e, mc, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                         dp->attributes, dp->n_attributes, dp->exemplars, dp->n_exemplars);
    if (rc != 0) {
        return rc;
    }
    cell_u64(tw, MT_COUNT, dp->count);
    /* sum, min and max are proto3 `optional`, generated as one-member oneofs (otlp_pb.h). */
    if (dp->_sum_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM) {
        cell_f64(tw, MT_SUM, dp->sum);
    }
    if (dp->_min_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MIN_MIN) {
        cell_f64(tw, MT_MIN, dp->min);
    }
    if (dp->_max_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MAX_MAX) {
        cell_f64(tw, MT_MAX, dp->max);
    }
    rc = cell_list_u64(tw, MT_BUCKET_COUNTS, dp->bucket_counts, dp->n_bucket_counts);
    if (rc == 0) {
        rc = cell_list_f64(tw, MT_EXPLICIT_BOUNDS, dp->explicit_bounds, dp->n_explicit_bounds);
    }
    return rc == 0 ? row_end(e, tw, OTLP_METRICS) : rc;
}

static int emit_exponential(struct sink_emit *e, const struct metric_ctx *mc, const exp_dp *dp)
{
    struct sink_tw *tw = e->tw[OTLP_METRICS];
    int rc = point_begin(e, mc, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                         dp->attributes, dp->n_attributes, dp->exemplars, dp->n_exemplars);
    if (rc != 0) {
        return rc;
    }
    cell_u64(tw, MT_COUNT, dp->count);
    if (dp->_sum_case ==
        OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___SUM_SUM) {
        cell_f64(tw, MT_SUM, dp->sum);
    }
    if (dp->_min_case ==
        OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___MIN_MIN) {
        cell_f64(tw, MT_MIN, dp->min);
    }
    if (dp->_max_case ==
        OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___MAX_MAX) {
        cell_f64(tw, MT_MAX, dp->max);
    }
    cell_i32(tw, MT_SCALE, dp->scale);
    cell_u64(tw, MT_ZERO_COUNT, dp->zero_count);
    cell_f64(tw, MT_ZERO_THRESHOLD, dp->zero_threshold);
    /* A missing side has offset 0 and no buckets, which is what an empty side means. */
    const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint__Buckets *p =
        dp->positive;
    const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint__Buckets *n =
        dp->negative;
    cell_i32(tw, MT_POS_OFFSET, p != NULL ? p->offset : 0);
    cell_i32(tw, MT_NEG_OFFSET, n != NULL ? n->offset : 0);
    rc = cell_list_u64(tw, MT_POS_BUCKETS, p != NULL ? p->bucket_counts : NULL,
                       p != NULL ? p->n_bucket_counts : 0);
    if (rc == 0) {
        rc = cell_list_u64(tw, MT_NEG_BUCKETS, n != NULL ? n->bucket_counts : NULL,
                           n != NULL ? n->n_bucket_counts : 0);
    }
    return rc == 0 ? row_end(e, tw, OTLP_METRICS) : rc;
}

static int emit_summary(struct sink_emit *e, const struct metric_ctx *mc, const summary_dp *dp)
{
    struct sink_tw *tw = e->tw[OTLP_METRICS];
    int rc = point_begin(e, mc, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                         dp->attributes, dp->n_attributes, NULL, 0);
    if (rc != 0) {
        return rc;
    }
    cell_u64(tw, MT_COUNT, dp->count);
    cell_f64(tw, MT_SUM, dp->sum);
    idx_t qoff, voff;
    size_t nq = dp->n_quantile_values;
    rc = list_begin(tw, MT_QUANTILES, nq, &qoff);
    if (rc == 0) {
        rc = list_begin(tw, MT_QUANTILE_VALUES, nq, &voff);
    }
    if (rc != 0) {
        return rc;
    }
    double *qs = duckdb_vector_get_data(duckdb_list_vector_get_child(tw->vec[MT_QUANTILES]));
    double *vs = duckdb_vector_get_data(duckdb_list_vector_get_child(tw->vec[MT_QUANTILE_VALUES]));
    for (size_t i = 0; i < nq; i++) {
        const Opentelemetry__Proto__Metrics__V1__SummaryDataPoint__ValueAtQuantile *q =
            dp->quantile_values[i];
        qs[qoff + i] = q != NULL ? q->quantile : 0.0;
        vs[voff + i] = q != NULL ? q->value : 0.0;
    }
    rc = list_end(tw, MT_QUANTILES, qoff + nq);
    if (rc == 0) {
        rc = list_end(tw, MT_QUANTILE_VALUES, voff + nq);
    }
    return rc == 0 ? row_end(e, tw, OTLP_METRICS) : rc;
}

static int emit_metric(struct sink_emit *e, const struct res_info *ri, const scope_t *sc,
                       const metric_t *m)
{
    struct metric_ctx mc = {.ri = ri, .sc = sc, .m = m, .monotonic = -1};
    int rc = 0;
    switch (m->data_case) {
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
        mc.type = "gauge";
        for (size_t i = 0; rc == 0 && m->gauge != NULL && i < m->gauge->n_data_points; i++) {
            rc = emit_number(e, &mc, m->gauge->data_points[i]);
        }
        break;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
        mc.type = "sum";
        if (m->sum != NULL) {
            mc.temporality = temporality_text(m->sum->aggregation_temporality);
            mc.monotonic = m->sum->is_monotonic ? 1 : 0;
        }
        for (size_t i = 0; rc == 0 && m->sum != NULL && i < m->sum->n_data_points; i++) {
            rc = emit_number(e, &mc, m->sum->data_points[i]);
        }
        break;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
        mc.type = "histogram";
        if (m->histogram != NULL) {
            mc.temporality = temporality_text(m->histogram->aggregation_temporality);
        }
        for (size_t i = 0; rc == 0 && m->histogram != NULL && i < m->histogram->n_data_points;
             i++) {
            rc = emit_histogram(e, &mc, m->histogram->data_points[i]);
        }
        break;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM: {
        const Opentelemetry__Proto__Metrics__V1__ExponentialHistogram *h = m->exponential_histogram;
        mc.type = "exponentialHistogram";
        if (h != NULL) {
            mc.temporality = temporality_text(h->aggregation_temporality);
        }
        for (size_t i = 0; rc == 0 && h != NULL && i < h->n_data_points; i++) {
            rc = emit_exponential(e, &mc, h->data_points[i]);
        }
        break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
        mc.type = "summary";
        for (size_t i = 0; rc == 0 && m->summary != NULL && i < m->summary->n_data_points; i++) {
            rc = emit_summary(e, &mc, m->summary->data_points[i]);
        }
        break;
    default:
        /* A metric with no data carries no data point: nothing to store. */
        break;
    }
    return rc;
}

static int emit_metrics(struct sink_emit *e, const metrics_req *r)
{
    struct buf uid;
    buf_init(&uid, 4096);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->n_resource_metrics; i++) {
        const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = r->resource_metrics[i];
        struct res_info ri;
        res_info_init(e, &ri, rm->resource, &uid);
        for (size_t j = 0; rc == 0 && j < rm->n_scope_metrics; j++) {
            const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[j];
            for (size_t k = 0; rc == 0 && k < sm->n_metrics; k++) {
                rc = emit_metric(e, &ri, sm->scope, sm->metrics[k]);
            }
        }
    }
    buf_cleanup(&uid);
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
    int rc;
    switch (signal) {
    case OTLP_TRACES:
        rc = emit_traces(e, (const trace_req *)msg);
        break;
    case OTLP_LOGS:
        rc = emit_logs(e, (const logs_req *)msg);
        break;
    case OTLP_METRICS:
        rc = emit_metrics(e, (const metrics_req *)msg);
        break;
    default:
        return DLOTEL_ERR_INVALID_ARG;
    }
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
