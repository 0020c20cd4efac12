/*
 * OTLP requests to rows of the REST shape. What each column holds is the sink's own code: the
 * walk over the request, the resource's service and user, the metric data points, the text of
 * map values and log bodies and the JSON of events, links and exemplars all come from
 * dlotel_sink_values (agent/sink/sink_values.h), which sink_rows.c writes into DuckDB. What is
 * left here is the JSON row itself: agent/sink/sink_schema.c's column order of the views (the
 * table's columns, then the hive column "date", then the aliases), and the text DuckDB's to_json
 * gives each value (the sink's query answers are rendered by it). A change to either must be
 * mirrored here; tests/unit/test_api_stream.c compares both renderings of the same request
 * through the real sink.
 */
#include "api/api_rows.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlotel.h"
#include "otlp/otlp.h"
#include "sink/sink_values.h"

#define NO_STR SIZE_MAX

/* ---- values -------------------------------------------------------------------------------- */

int api_rows_put_double(struct buf *b, double d)
{
    if (!isfinite(d)) {
        return buf_append(b, "null", 4);
    }
    if (d == 0) {
        return signbit(d) ? buf_append(b, "-0.0", 4) : buf_append(b, "0.0", 3);
    }
    /* The shortest %e form that reads back as |d|: its digits and decimal exponent. */
    char tmp[48];
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec, d);
        if (strtod(tmp, NULL) == d) {
            break;
        }
    }
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg) {
        p++;
    }
    char digits[24];
    size_t k = 0;
    for (; *p != '\0' && *p != 'e' && k < sizeof(digits) - 1; p++) {
        if (*p >= '0' && *p <= '9') {
            digits[k++] = *p;
        }
    }
    while (k > 1 && digits[k - 1] == '0') {
        k--;
    }
    digits[k] = '\0';
    long e = *p == 'e' ? strtol(p + 1, NULL, 10) : 0;
    long n = e + 1; /* Where the decimal point goes, counted from the first digit. */

    char out[400];
    size_t o = 0;
    if (neg) {
        out[o++] = '-';
    }
    if ((long)k <= n && n <= 21) {
        memcpy(out + o, digits, k);
        o += k;
        for (long i = (long)k; i < n; i++) {
            out[o++] = '0';
        }
        memcpy(out + o, ".0", 2);
        o += 2;
    } else if (0 < n && n <= 21) {
        memcpy(out + o, digits, (size_t)n);
        o += (size_t)n;
        out[o++] = '.';
        memcpy(out + o, digits + n, k - (size_t)n);
        o += k - (size_t)n;
    } else if (-6 < n && n <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (long i = 0; i < -n; i++) {
            out[o++] = '0';
        }
        memcpy(out + o, digits, k);
        o += k;
    } else {
        out[o++] = digits[0];
        if (k > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, k - 1);
            o += k - 1;
        }
        o += (size_t)snprintf(out + o, sizeof(out) - o, "e%ld", n - 1);
    }
    return buf_append(b, out, o);
}

int api_rows_put_timestamp(struct buf *b, uint64_t ns)
{
    int64_t us = sink_ns_to_us(ns);
    time_t secs = (time_t)(us / 1000000);
    int frac = (int)(us % 1000000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        return buf_append(b, "null", 4);
    }
    char t[64];
    int n = snprintf(t, sizeof(t), "\"%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (frac != 0) {
        char f[8];
        snprintf(f, sizeof(f), "%06d", frac);
        size_t fl = 6;
        while (fl > 1 && f[fl - 1] == '0') {
            fl--;
        }
        f[fl] = '\0';
        n += snprintf(t + n, sizeof(t) - (size_t)n, ".%s", f);
    }
    n += snprintf(t + n, sizeof(t) - (size_t)n, "+00\"");
    return buf_append(b, t, (size_t)n);
}

static int put_date(struct buf *b, uint64_t ns)
{
    time_t secs = (time_t)sink_ns_to_days(ns) * 86400;
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        return buf_append(b, "null", 4);
    }
    return buf_printf(b, "\"%04d-%02d-%02d\"", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* ---- one row ------------------------------------------------------------------------------- */

/* Writes one JSON object key by key; the first error sticks. */
struct rw {
    struct api_rows *r;
    struct buf *b;
    int rc;
    bool first;
};

static bool key(struct rw *w, const char *name)
{
    if (w->rc != 0) {
        return false;
    }
    if (!w->first) {
        w->rc = buf_putc(w->b, ',');
    }
    w->first = false;
    if (w->rc == 0) {
        w->rc = sink_json_str(w->b, name, strlen(name));
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, ':');
    }
    return w->rc == 0;
}

static void v_null(struct rw *w, const char *name)
{
    if (key(w, name)) {
        w->rc = buf_append(w->b, "null", 4);
    }
}

static void v_str(struct rw *w, const char *name, const char *s)
{
    if (key(w, name)) {
        w->rc = sink_json_str(w->b, s, strlen(s));
    }
}

/* "" is OTLP's "not set": NULL, as the sink stores it. */
static void v_opt_str(struct rw *w, const char *name, const char *s)
{
    if (s == NULL || s[0] == '\0') {
        v_null(w, name);
    } else {
        v_str(w, name, s);
    }
}

static void v_i64(struct rw *w, const char *name, int64_t v)
{
    if (key(w, name)) {
        w->rc = buf_printf(w->b, "%" PRId64, v);
    }
}

static void v_f64(struct rw *w, const char *name, double v)
{
    if (key(w, name)) {
        w->rc = api_rows_put_double(w->b, v);
    }
}

/* A nullable DOUBLE column. */
static void v_opt_f64(struct rw *w, const char *name, bool has, double v)
{
    has ? v_f64(w, name, v) : v_null(w, name);
}

static void v_bool(struct rw *w, const char *name, bool v)
{
    if (key(w, name)) {
        w->rc = v ? buf_append(w->b, "true", 4) : buf_append(w->b, "false", 5);
    }
}

static void v_ts(struct rw *w, const char *name, uint64_t ns)
{
    if (key(w, name)) {
        w->rc = api_rows_put_timestamp(w->b, ns);
    }
}

static void v_date(struct rw *w, uint64_t ns)
{
    if (key(w, "date")) {
        w->rc = put_date(w->b, ns);
    }
}

/* Trace and span ids: hex, NULL when absent (the scanner allows 16 or 8 bytes or none). */
static void v_hex(struct rw *w, const char *name, const ProtobufCBinaryData *id)
{
    if (id->len == 0 || id->len > 16) {
        v_null(w, name);
        return;
    }
    char hex[33];
    sink_hex_id(hex, id->data, id->len);
    if (key(w, name)) {
        w->rc = sink_json_str(w->b, hex, id->len * 2);
    }
}

static void v_list_u64(struct rw *w, const char *name, const uint64_t *v, size_t n)
{
    if (!key(w, name)) {
        return;
    }
    w->rc = buf_putc(w->b, '[');
    for (size_t i = 0; w->rc == 0 && i < n; i++) {
        w->rc = buf_printf(w->b, "%s%" PRId64, i > 0 ? "," : "", sink_clamp_u64(v[i]));
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, ']');
    }
}

/*
 * A DOUBLE[] column: element i is |v|[i], or for a summary's quantile list (|q| not NULL) the
 * quantile (|values| false) or the value of q[i], 0 for an absent entry as the sink stores it.
 */
static void v_list_f64(struct rw *w, const char *name, const double *v, sink_quantile *const *q,
                       size_t n, bool values)
{
    if (!key(w, name)) {
        return;
    }
    w->rc = buf_putc(w->b, '[');
    for (size_t i = 0; w->rc == 0 && i < n; i++) {
        double d = q == NULL ? v[i] : q[i] == NULL ? 0.0 : values ? q[i]->value : q[i]->quantile;
        w->rc = i > 0 ? buf_putc(w->b, ',') : 0;
        if (w->rc == 0) {
            w->rc = api_rows_put_double(w->b, d);
        }
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, ']');
    }
}

/* A VARCHAR value's text (sink_value_text()) as a JSON string, or null. */
static int put_value_text(struct rw *w, const sink_anyvalue *v)
{
    struct buf *s = &w->r->scratch;
    buf_reset(s);
    int t = sink_value_text(s, v, sink_json_double); /* The text the sink stores. */
    if (t < 0) {
        return t;
    }
    return t == 1 ? buf_append(w->b, "null", 4)
                  : sink_json_str(w->b, (const char *)s->data, s->len);
}

/* A MAP(VARCHAR, VARCHAR) column: the entries the sink keeps (sink_keys), values as text. */
static void v_map(struct rw *w, const char *name, sink_keyvalue *const *kv, size_t n)
{
    if (!key(w, name)) {
        return;
    }
    struct sink_keys ks;
    w->rc = sink_keys_init(&ks, kv, n);
    if (w->rc != 0) {
        return;
    }
    w->rc = buf_putc(w->b, '{');
    bool first = true;
    for (size_t i = 0; w->rc == 0 && i < n; i++) {
        if (sink_keys_skip(&ks, i)) {
            continue;
        }
        if (!first) {
            w->rc = buf_putc(w->b, ',');
        }
        first = false;
        if (w->rc == 0) {
            w->rc = sink_json_str(w->b, kv[i]->key, strlen(kv[i]->key));
        }
        if (w->rc == 0) {
            w->rc = buf_putc(w->b, ':');
        }
        if (w->rc == 0) {
            w->rc = put_value_text(w, kv[i]->value);
        }
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, '}');
    }
    sink_keys_cleanup(&ks);
}

/* A JSON column (events, links, exemplars): |rc_built| is how building it in scratch went. */
static void v_json(struct rw *w, const char *name, int rc_built)
{
    if (w->rc == 0 && rc_built != 0) {
        w->rc = rc_built;
    }
    if (key(w, name)) {
        w->rc = buf_append(w->b, w->r->scratch.data, w->r->scratch.len);
    }
}

/* The columns every row of a resource and scope has. */
static void v_resource(struct rw *w, const struct sink_res *ri)
{
    v_opt_str(w, "service_name", ri->service_name);
    v_opt_str(w, "user_uid", ri->user_uid);
}

static void v_scope(struct rw *w, const sink_scope *sc)
{
    v_opt_str(w, "scope_name", sc != NULL ? sc->name : NULL);
    v_opt_str(w, "scope_version", sc != NULL ? sc->version : NULL);
}

static int strs_add(struct api_rows *r, const char *s, size_t *off)
{
    if (s == NULL || s[0] == '\0') {
        *off = NO_STR;
        return 0;
    }
    *off = r->strs.len;
    return buf_append(&r->strs, s, strlen(s) + 1);
}

/* Starts a row: its filter strings and the opening brace. */
static int row_begin(struct api_rows *r, struct rw *w, const struct sink_res *ri)
{
    if (r->n == r->cap) {
        size_t cap = r->cap == 0 ? 64 : r->cap * 2;
        if (cap > r->max_rows) {
            return DLOTEL_ERR_TOO_LARGE;
        }
        struct api_row *p = realloc(r->rows, cap * sizeof(*p));
        if (p == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        r->rows = p;
        r->cap = cap;
    }
    struct api_row *row = &r->rows[r->n];
    int rc = strs_add(r, ri->user_uid, &row->uid_off);
    if (rc == 0) {
        rc = strs_add(r, ri->service_name, &row->service_off);
    }
    if (rc != 0) {
        return rc;
    }
    row->off = r->text.len;
    w->r = r;
    w->b = &r->text;
    w->first = true;
    w->rc = buf_putc(&r->text, '{');
    return w->rc;
}

static int row_end(struct api_rows *r, struct rw *w)
{
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, '}');
    }
    if (w->rc != 0) {
        return w->rc;
    }
    r->rows[r->n].len = r->text.len - r->rows[r->n].off;
    r->n++;
    return 0;
}

/* ---- spans, logs, metric data points -------------------------------------------------------- */

static int span_row(void *ctx, const struct sink_res *ri, const sink_scope *sc, const sink_span *sp)
{
    struct api_rows *r = ctx;
    struct rw w;
    int rc = row_begin(r, &w, ri);
    if (rc != 0) {
        return rc;
    }
    int64_t dur = sink_clamp_u64(sp->end_time_unix_nano) - sink_clamp_u64(sp->start_time_unix_nano);
    v_hex(&w, "trace_id", &sp->trace_id);
    v_hex(&w, "span_id", &sp->span_id);
    v_hex(&w, "parent_span_id", &sp->parent_span_id);
    v_opt_str(&w, "trace_state", sp->trace_state);
    v_str(&w, "span_name", sp->name);
    v_str(&w, "span_kind", sink_span_kind_name(sp->kind));
    v_resource(&w, ri);
    v_i64(&w, "start_time_unix_nano", sink_clamp_u64(sp->start_time_unix_nano));
    v_i64(&w, "end_time_unix_nano", sink_clamp_u64(sp->end_time_unix_nano));
    v_i64(&w, "duration_ns", dur);
    v_ts(&w, "start_time", sp->start_time_unix_nano);
    v_ts(&w, "end_time", sp->end_time_unix_nano);
    v_str(&w, "status_code", sink_status_name(sp->status != NULL ? (int)sp->status->code : 0));
    v_opt_str(&w, "status_message", sp->status != NULL ? sp->status->message : NULL);
    v_scope(&w, sc);
    v_i64(&w, "flags", sp->flags);
    v_map(&w, "attributes", sp->attributes, sp->n_attributes);
    v_map(&w, "resource_attributes", ri->attrs, ri->n_attrs);
    buf_reset(&r->scratch);
    v_json(&w, "events", sink_json_events(&r->scratch, sp, api_rows_put_double));
    buf_reset(&r->scratch);
    v_json(&w, "links", sink_json_links(&r->scratch, sp, api_rows_put_double));
    v_i64(&w, "dropped_attributes_count", sp->dropped_attributes_count);
    v_i64(&w, "dropped_events_count", sp->dropped_events_count);
    v_i64(&w, "dropped_links_count", sp->dropped_links_count);
    v_date(&w, sp->start_time_unix_nano);
    v_str(&w, "operation_name", sp->name);
    v_f64(&w, "duration_ms", (double)dur / 1e6);
    return row_end(r, &w);
}

static int log_row(void *ctx, const struct sink_res *ri, const sink_scope *sc,
                   const sink_log_record *lr)
{
    struct api_rows *r = ctx;
    struct rw w;
    int rc = row_begin(r, &w, ri);
    if (rc != 0) {
        return rc;
    }
    /* The record's time, or when the collector saw it if the source gave none (spec). */
    uint64_t t = lr->time_unix_nano != 0 ? lr->time_unix_nano : lr->observed_time_unix_nano;
    v_i64(&w, "timestamp_unix_nano", sink_clamp_u64(lr->time_unix_nano));
    v_i64(&w, "observed_timestamp_unix_nano", sink_clamp_u64(lr->observed_time_unix_nano));
    v_ts(&w, "timestamp", t);
    v_i64(&w, "severity_number", (int32_t)lr->severity_number);
    v_opt_str(&w, "severity_text", lr->severity_text);
    if (key(&w, "body")) {
        w.rc = put_value_text(&w, lr->body);
    }
    v_hex(&w, "trace_id", &lr->trace_id);
    v_hex(&w, "span_id", &lr->span_id);
    v_i64(&w, "flags", lr->flags);
    v_opt_str(&w, "event_name", lr->event_name);
    v_resource(&w, ri);
    v_scope(&w, sc);
    v_map(&w, "attributes", lr->attributes, lr->n_attributes);
    v_map(&w, "resource_attributes", ri->attrs, ri->n_attrs);
    v_i64(&w, "dropped_attributes_count", lr->dropped_attributes_count);
    v_date(&w, t);
    return row_end(r, &w);
}

static int point_row(void *ctx, const struct sink_point *p)
{
    struct api_rows *r = ctx;
    struct rw w;
    int rc = row_begin(r, &w, p->res);
    if (rc != 0) {
        return rc;
    }
    v_str(&w, "metric_name", p->metric->name);
    v_opt_str(&w, "metric_description", p->metric->description);
    v_opt_str(&w, "metric_unit", p->metric->unit);
    v_str(&w, "metric_type", p->type);
    v_resource(&w, p->res);
    v_i64(&w, "start_time_unix_nano", sink_clamp_u64(p->start));
    v_i64(&w, "timestamp_unix_nano", sink_clamp_u64(p->time));
    v_ts(&w, "timestamp", p->time);
    v_opt_f64(&w, "value_double", p->has_vd, p->vd);
    p->has_vi ? v_i64(&w, "value_int", p->vi) : v_null(&w, "value_int");
    p->has_count ? v_i64(&w, "count", sink_clamp_u64(p->count)) : v_null(&w, "count");
    v_opt_f64(&w, "sum", p->has_sum, p->sum);
    v_opt_f64(&w, "min", p->has_min, p->min);
    v_opt_f64(&w, "max", p->has_max, p->max);
    if (p->has_hist) {
        v_list_u64(&w, "bucket_counts", p->buckets, p->n_buckets);
        v_list_f64(&w, "explicit_bounds", p->bounds, NULL, p->n_bounds, false);
    } else {
        v_null(&w, "bucket_counts");
        v_null(&w, "explicit_bounds");
    }
    if (p->has_exp) {
        v_i64(&w, "scale", p->scale);
        v_i64(&w, "zero_count", sink_clamp_u64(p->zero_count));
        v_f64(&w, "zero_threshold", p->zero_threshold);
        v_i64(&w, "positive_offset", p->pos_off);
        v_list_u64(&w, "positive_bucket_counts", p->pos, p->n_pos);
        v_i64(&w, "negative_offset", p->neg_off);
        v_list_u64(&w, "negative_bucket_counts", p->neg, p->n_neg);
    } else {
        static const char *const exp_cols[] = {"scale",
                                               "zero_count",
                                               "zero_threshold",
                                               "positive_offset",
                                               "positive_bucket_counts",
                                               "negative_offset",
                                               "negative_bucket_counts"};
        for (size_t i = 0; i < sizeof(exp_cols) / sizeof(exp_cols[0]); i++) {
            v_null(&w, exp_cols[i]);
        }
    }
    if (p->has_summary) {
        v_list_f64(&w, "quantiles", NULL, p->q, p->n_q, false);
        v_list_f64(&w, "quantile_values", NULL, p->q, p->n_q, true);
    } else {
        v_null(&w, "quantiles");
        v_null(&w, "quantile_values");
    }
    v_opt_str(&w, "aggregation_temporality", p->temporality);
    p->monotonic < 0 ? v_null(&w, "is_monotonic") : v_bool(&w, "is_monotonic", p->monotonic);
    v_i64(&w, "flags", p->flags);
    v_scope(&w, p->scope);
    v_map(&w, "attributes", p->attrs, p->n_attrs);
    v_map(&w, "resource_attributes", p->res->attrs, p->res->n_attrs);
    buf_reset(&r->scratch);
    v_json(&w, "exemplars", sink_json_exemplars(&r->scratch, p->ex, p->n_ex, api_rows_put_double));
    v_date(&w, p->time);
    /* The view's alias: coalesce(value_double, CAST(value_int AS DOUBLE), "sum"). */
    if (p->has_vd || p->has_vi) {
        v_f64(&w, "value", p->has_vd ? p->vd : (double)p->vi);
    } else {
        v_opt_f64(&w, "value", p->has_sum, p->sum);
    }
    return row_end(r, &w);
}

/* ---- entry --------------------------------------------------------------------------------- */

void api_rows_init(struct api_rows *r, size_t max_bytes)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->text, max_bytes);
    buf_init(&r->strs, max_bytes);
    buf_init(&r->scratch, max_bytes);
    /* A row takes more than 64 bytes of text, so this many rows can never fit anyway. */
    r->max_rows = max_bytes / 64 + 64;
    arena_init(&r->arena, max_bytes * 2);
}

void api_rows_cleanup(struct api_rows *r)
{
    buf_cleanup(&r->text);
    buf_cleanup(&r->strs);
    buf_cleanup(&r->scratch);
    free(r->rows);
    r->rows = NULL;
    r->n = r->cap = 0;
    arena_cleanup(&r->arena);
}

const char *api_rows_str(const struct api_rows *r, size_t off)
{
    return off == NO_STR ? NULL : (const char *)r->strs.data + off;
}

int api_rows_build(struct api_rows *r, int signal, const uint8_t *pb, size_t len,
                   const char *user_uid)
{
    buf_reset(&r->text);
    buf_reset(&r->strs);
    r->n = 0;
    if (signal < 0 || signal >= OTLP_SIGNAL_COUNT) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    arena_reset(&r->arena);
    ProtobufCMessage *msg = NULL;
    int rc = otlp_unpack((enum otlp_signal)signal, pb, len, &r->arena, &msg, NULL);
    if (rc != 0) {
        return rc;
    }
    /*
     * VARCHAR values (map values, log bodies, a non-string user id) are the very text the sink
     * stores, so their doubles are written with sink_json_double, as the sink writes them; the
     * JSON columns (events, links, exemplars) are rendered again by DuckDB's to_json in a REST
     * answer, and api_rows_put_double writes their doubles the way it does.
     */
    struct sink_walk w = {.ctx = r,
                          .span = span_row,
                          .log = log_row,
                          .point = point_row,
                          .user_uid = user_uid,
                          .uid_errors_fatal = true,
                          .dbl = sink_json_double};
    rc = sink_walk_request(&w, signal, msg);
    arena_reset(&r->arena);
    /* Buffers that grew for one huge request give their memory back. */
    if (r->scratch.cap > ((size_t)1 << 20)) {
        buf_cleanup(&r->scratch);
    }
    if (rc != 0) {
        buf_reset(&r->text);
        buf_reset(&r->strs);
        r->n = 0;
    }
    return rc;
}
