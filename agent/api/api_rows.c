/*
 * OTLP requests to rows of the REST shape. The columns, their order and their values follow the
 * sink exactly: agent/sink/sink_rows.c decides what each column holds (one row per span, log
 * record and metric data point), agent/sink/sink_schema.c the column order of the views (the
 * table's columns, then the hive column "date", then the aliases), and DuckDB's to_json the text
 * of each value (the sink's query answers are rendered by it). A change to any of those three
 * must be mirrored here; tests/unit/test_api_stream.c compares both renderings of the same
 * request through the real sink.
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
#include "otlp/otlp_pb.h"

typedef Opentelemetry__Proto__Common__V1__AnyValue anyvalue_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue keyvalue_t;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope scope_t;
typedef Opentelemetry__Proto__Resource__V1__Resource resource_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;
typedef Opentelemetry__Proto__Logs__V1__LogRecord log_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Metrics__V1__Exemplar exemplar_t;

#define NS_PER_DAY ((uint64_t)86400 * 1000000000)
#define NO_STR     SIZE_MAX

/* ---- values -------------------------------------------------------------------------------- */

static int64_t clamp_u64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

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

/* Map values are VARCHAR: the sink's text of a double (sink_double_text), not the JSON form. */
static int double_text(struct buf *b, double d)
{
    if (isnan(d)) {
        return buf_append(b, "NaN", 3);
    }
    if (isinf(d)) {
        return d > 0 ? buf_append(b, "Infinity", 8) : buf_append(b, "-Infinity", 9);
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (prec == 17 || strtod(tmp, NULL) == d) {
            break;
        }
    }
    return buf_append(b, tmp, strlen(tmp));
}

int api_rows_put_timestamp(struct buf *b, uint64_t ns)
{
    int64_t us = clamp_u64(ns) / 1000;
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
    time_t secs = (time_t)(clamp_u64(ns) / (int64_t)NS_PER_DAY) * 86400;
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        return buf_append(b, "null", 4);
    }
    return buf_printf(b, "\"%04d-%02d-%02d\"", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

static int put_str(struct buf *b, const char *s, size_t n)
{
    return otlp_json_put_string(b, s, n);
}

static int base64(struct buf *b, const uint8_t *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int rc = buf_reserve(b, (n + 2) / 3 * 4);
    for (size_t i = 0; rc == 0 && i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t left = n - i;
        if (left > 1) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (left > 2) {
            v |= p[i + 2];
        }
        char out[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63],
                       left > 1 ? tbl[(v >> 6) & 63] : '=', left > 2 ? tbl[v & 63] : '='};
        rc = buf_append(b, out, 4);
    }
    return rc;
}

static int put_hex(struct buf *b, const uint8_t *p, size_t n)
{
    static const char hexdigits[] = "0123456789abcdef";
    int rc = buf_putc(b, '"');
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char two[2] = {hexdigits[p[i] >> 4], hexdigits[p[i] & 15]};
        rc = buf_append(b, two, 2);
    }
    return rc == 0 ? buf_putc(b, '"') : rc;
}

/* An id inside a JSON column (events, links, exemplars): null when empty, as the sink writes. */
static int id_json(struct buf *b, const ProtobufCBinaryData *id)
{
    return id->len == 0 ? buf_append(b, "null", 4) : put_hex(b, id->data, id->len);
}

static int anyvalue_json(struct buf *b, const anyvalue_t *v);

static bool seen_before(keyvalue_t *const *kv, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (kv[j] != NULL && kv[j]->key != NULL && strcmp(kv[j]->key, kv[i]->key) == 0) {
            return true;
        }
    }
    return false;
}

/* Attributes as a JSON object inside a JSON column (sink_json_attributes()). */
static int attributes_json(struct buf *b, keyvalue_t *const *kv, size_t n)
{
    int rc = buf_putc(b, '{');
    bool first = true;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (kv[i] == NULL || kv[i]->key == NULL || (n <= 256 && seen_before(kv, i))) {
            continue;
        }
        if (!first) {
            rc = buf_putc(b, ',');
        }
        first = false;
        if (rc == 0) {
            rc = put_str(b, kv[i]->key, strlen(kv[i]->key));
        }
        if (rc == 0) {
            rc = buf_putc(b, ':');
        }
        if (rc == 0) {
            rc = anyvalue_json(b, kv[i]->value);
        }
    }
    return rc == 0 ? buf_putc(b, '}') : rc;
}

static int anyvalue_json(struct buf *b, const anyvalue_t *v)
{
    if (v == NULL) {
        return buf_append(b, "null", 4);
    }
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        return put_str(b, v->string_value, strlen(v->string_value));
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        return v->bool_value ? buf_append(b, "true", 4) : buf_append(b, "false", 5);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        return buf_printf(b, "%" PRId64, v->int_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        return api_rows_put_double(b, v->double_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE: {
        int rc = buf_putc(b, '"');
        if (rc == 0) {
            rc = base64(b, v->bytes_value.data, v->bytes_value.len);
        }
        return rc == 0 ? buf_putc(b, '"') : rc;
    }
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE: {
        /* Nesting is bounded by OTLP_MAX_DEPTH: otlp_unpack() refused anything deeper. */
        const Opentelemetry__Proto__Common__V1__ArrayValue *a = v->array_value;
        int rc = buf_putc(b, '[');
        for (size_t i = 0; rc == 0 && a != NULL && i < a->n_values; i++) {
            if (i > 0) {
                rc = buf_putc(b, ',');
            }
            if (rc == 0) {
                rc = anyvalue_json(b, a->values[i]);
            }
        }
        return rc == 0 ? buf_putc(b, ']') : rc;
    }
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE: {
        const Opentelemetry__Proto__Common__V1__KeyValueList *l = v->kvlist_value;
        return l == NULL ? buf_append(b, "{}", 2) : attributes_json(b, l->values, l->n_values);
    }
    default:
        return buf_append(b, "null", 4);
    }
}

/* The text of a value in a VARCHAR column (sink_value_text()). Returns 1 for NULL. */
static int value_text(struct buf *b, const anyvalue_t *v)
{
    if (v == NULL) {
        return 1;
    }
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        return buf_append(b, v->string_value, strlen(v->string_value));
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        return v->bool_value ? buf_append(b, "true", 4) : buf_append(b, "false", 5);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        return buf_printf(b, "%" PRId64, v->int_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        return double_text(b, v->double_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
        return base64(b, v->bytes_value.data, v->bytes_value.len);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
        return anyvalue_json(b, v);
    default:
        return 1;
    }
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
        w->rc = put_str(w->b, name, strlen(name));
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
        w->rc = put_str(w->b, s, strlen(s));
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
    } else if (key(w, name)) {
        w->rc = put_hex(w->b, id->data, id->len);
    }
}

static void v_list_u64(struct rw *w, const char *name, const uint64_t *v, size_t n)
{
    if (!key(w, name)) {
        return;
    }
    w->rc = buf_putc(w->b, '[');
    for (size_t i = 0; w->rc == 0 && i < n; i++) {
        w->rc = buf_printf(w->b, "%s%" PRId64, i > 0 ? "," : "", clamp_u64(v[i]));
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, ']');
    }
}

static void v_list_f64(struct rw *w, const char *name, const double *v, size_t n, size_t stride)
{
    if (!key(w, name)) {
        return;
    }
    w->rc = buf_putc(w->b, '[');
    for (size_t i = 0; w->rc == 0 && i < n; i++) {
        if (i > 0) {
            w->rc = buf_putc(w->b, ',');
        }
        if (w->rc == 0) {
            w->rc = api_rows_put_double(w->b, *(const double *)((const char *)v + i * stride));
        }
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, ']');
    }
}

/* A MAP(VARCHAR, VARCHAR) column: the first of duplicate keys wins; values as text. */
static void v_map(struct rw *w, const char *name, keyvalue_t *const *kv, size_t n)
{
    if (!key(w, name)) {
        return;
    }
    struct buf *s = &w->r->scratch;
    w->rc = buf_putc(w->b, '{');
    bool first = true;
    for (size_t i = 0; w->rc == 0 && i < n; i++) {
        if (kv[i] == NULL || kv[i]->key == NULL || seen_before(kv, i)) {
            continue;
        }
        if (!first) {
            w->rc = buf_putc(w->b, ',');
        }
        first = false;
        if (w->rc == 0) {
            w->rc = put_str(w->b, kv[i]->key, strlen(kv[i]->key));
        }
        if (w->rc == 0) {
            w->rc = buf_putc(w->b, ':');
        }
        if (w->rc != 0) {
            break;
        }
        buf_reset(s);
        int t = value_text(s, kv[i]->value);
        if (t < 0) {
            w->rc = t;
        } else if (t == 1) {
            w->rc = buf_append(w->b, "null", 4);
        } else {
            w->rc = put_str(w->b, (const char *)s->data, s->len);
        }
    }
    if (w->rc == 0) {
        w->rc = buf_putc(w->b, '}');
    }
}

/* What every row of one resource shares (the sink's struct res_info). */
struct res {
    const char *service_name;
    const char *user_uid;
    keyvalue_t *const *attrs;
    size_t n_attrs;
};

static int res_init(struct api_rows *r, struct res *ri, const resource_t *res, const char *override,
                    struct buf *uidbuf)
{
    memset(ri, 0, sizeof(*ri));
    ri->user_uid = override;
    if (res == NULL) {
        return 0;
    }
    (void)r;
    ri->attrs = res->attributes;
    ri->n_attrs = res->n_attributes;
    bool have_service = false;
    bool have_uid = override != NULL;
    for (size_t i = 0; i < res->n_attributes && (!have_service || !have_uid); i++) {
        const keyvalue_t *kv = res->attributes[i];
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
                buf_reset(uidbuf);
                int rc = value_text(uidbuf, kv->value);
                if (rc < 0) {
                    return rc;
                }
                if (rc == 0 && (rc = buf_terminate(uidbuf)) != 0) {
                    return rc;
                }
                if (uidbuf->len > 0) {
                    ri->user_uid = (const char *)uidbuf->data;
                }
            }
        }
    }
    return 0;
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
static int row_begin(struct api_rows *r, struct rw *w, const struct res *ri)
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

/* A JSON column (events, links, exemplars), built in the scratch buffer by |fn|. */
static void v_json(struct rw *w, const char *name, int rc_built)
{
    if (w->rc == 0 && rc_built != 0) {
        w->rc = rc_built;
    }
    if (key(w, name)) {
        w->rc = buf_append(w->b, w->r->scratch.data, w->r->scratch.len);
    }
}

/* ---- spans --------------------------------------------------------------------------------- */

static const char *span_kind_text(int k)
{
    static const char *const names[] = {"UNSPECIFIED", "INTERNAL", "SERVER",
                                        "CLIENT",      "PRODUCER", "CONSUMER"};
    return k >= 1 && k <= 5 ? names[k] : names[0];
}

static const char *status_text(int code)
{
    return code == 1 ? "OK" : code == 2 ? "ERROR" : "UNSET";
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
            rc = put_str(b, ev->name, strlen(ev->name));
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"time_unix_nano\":%" PRId64 ",\"attributes\":",
                            clamp_u64(ev->time_unix_nano));
        }
        if (rc == 0) {
            rc = attributes_json(b, ev->attributes, ev->n_attributes);
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"dropped_attributes_count\":%" PRIu32 "}",
                            ev->dropped_attributes_count);
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
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
            rc = put_str(b, l->trace_state, strlen(l->trace_state));
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"attributes\":", 14);
        }
        if (rc == 0) {
            rc = attributes_json(b, l->attributes, l->n_attributes);
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"dropped_attributes_count\":%" PRIu32 ",\"flags\":%" PRIu32 "}",
                            l->dropped_attributes_count, l->flags);
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

static int span_row(struct api_rows *r, const struct res *ri, const scope_t *sc, const span_t *sp)
{
    struct rw w;
    int rc = row_begin(r, &w, ri);
    if (rc != 0) {
        return rc;
    }
    int64_t dur = clamp_u64(sp->end_time_unix_nano) - clamp_u64(sp->start_time_unix_nano);
    v_hex(&w, "trace_id", &sp->trace_id);
    v_hex(&w, "span_id", &sp->span_id);
    v_hex(&w, "parent_span_id", &sp->parent_span_id);
    v_opt_str(&w, "trace_state", sp->trace_state);
    v_str(&w, "span_name", sp->name);
    v_str(&w, "span_kind", span_kind_text(sp->kind));
    v_opt_str(&w, "service_name", ri->service_name);
    v_opt_str(&w, "user_uid", ri->user_uid);
    v_i64(&w, "start_time_unix_nano", clamp_u64(sp->start_time_unix_nano));
    v_i64(&w, "end_time_unix_nano", clamp_u64(sp->end_time_unix_nano));
    v_i64(&w, "duration_ns", dur);
    v_ts(&w, "start_time", sp->start_time_unix_nano);
    v_ts(&w, "end_time", sp->end_time_unix_nano);
    v_str(&w, "status_code", status_text(sp->status != NULL ? (int)sp->status->code : 0));
    v_opt_str(&w, "status_message", sp->status != NULL ? sp->status->message : NULL);
    v_opt_str(&w, "scope_name", sc != NULL ? sc->name : NULL);
    v_opt_str(&w, "scope_version", sc != NULL ? sc->version : NULL);
    v_i64(&w, "flags", sp->flags);
    v_map(&w, "attributes", sp->attributes, sp->n_attributes);
    v_map(&w, "resource_attributes", ri->attrs, ri->n_attrs);
    buf_reset(&r->scratch);
    v_json(&w, "events", events_json(&r->scratch, sp));
    buf_reset(&r->scratch);
    v_json(&w, "links", links_json(&r->scratch, sp));
    v_i64(&w, "dropped_attributes_count", sp->dropped_attributes_count);
    v_i64(&w, "dropped_events_count", sp->dropped_events_count);
    v_i64(&w, "dropped_links_count", sp->dropped_links_count);
    v_date(&w, sp->start_time_unix_nano);
    v_str(&w, "operation_name", sp->name);
    v_f64(&w, "duration_ms", (double)dur / 1e6);
    return row_end(r, &w);
}

static int traces_rows(struct api_rows *r, const ProtobufCMessage *msg, const char *override)
{
    const Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *req =
        (const void *)msg;
    struct buf uid;
    buf_init(&uid, 4096);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < req->n_resource_spans; i++) {
        const Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = req->resource_spans[i];
        struct res ri;
        rc = res_init(r, &ri, rs->resource, override, &uid);
        for (size_t j = 0; rc == 0 && j < rs->n_scope_spans; j++) {
            const Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = rs->scope_spans[j];
            for (size_t k = 0; rc == 0 && k < ss->n_spans; k++) {
                rc = span_row(r, &ri, ss->scope, ss->spans[k]);
            }
        }
    }
    buf_cleanup(&uid);
    return rc;
}

/* ---- logs ---------------------------------------------------------------------------------- */

static int log_row(struct api_rows *r, const struct res *ri, const scope_t *sc, const log_t *lr)
{
    struct rw w;
    int rc = row_begin(r, &w, ri);
    if (rc != 0) {
        return rc;
    }
    /* The record's time, or when the collector saw it if the source gave none (spec). */
    uint64_t t = lr->time_unix_nano != 0 ? lr->time_unix_nano : lr->observed_time_unix_nano;
    v_i64(&w, "timestamp_unix_nano", clamp_u64(lr->time_unix_nano));
    v_i64(&w, "observed_timestamp_unix_nano", clamp_u64(lr->observed_time_unix_nano));
    v_ts(&w, "timestamp", t);
    v_i64(&w, "severity_number", (int32_t)lr->severity_number);
    v_opt_str(&w, "severity_text", lr->severity_text);
    if (key(&w, "body")) {
        buf_reset(&r->scratch);
        int t2 = value_text(&r->scratch, lr->body);
        if (t2 < 0) {
            w.rc = t2;
        } else if (t2 == 1) {
            w.rc = buf_append(w.b, "null", 4);
        } else {
            w.rc = put_str(w.b, (const char *)r->scratch.data, r->scratch.len);
        }
    }
    v_hex(&w, "trace_id", &lr->trace_id);
    v_hex(&w, "span_id", &lr->span_id);
    v_i64(&w, "flags", lr->flags);
    v_opt_str(&w, "event_name", lr->event_name);
    v_opt_str(&w, "service_name", ri->service_name);
    v_opt_str(&w, "user_uid", ri->user_uid);
    v_opt_str(&w, "scope_name", sc != NULL ? sc->name : NULL);
    v_opt_str(&w, "scope_version", sc != NULL ? sc->version : NULL);
    v_map(&w, "attributes", lr->attributes, lr->n_attributes);
    v_map(&w, "resource_attributes", ri->attrs, ri->n_attrs);
    v_i64(&w, "dropped_attributes_count", lr->dropped_attributes_count);
    v_date(&w, t);
    return row_end(r, &w);
}

static int logs_rows(struct api_rows *r, const ProtobufCMessage *msg, const char *override)
{
    const Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest *req =
        (const void *)msg;
    struct buf uid;
    buf_init(&uid, 4096);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < req->n_resource_logs; i++) {
        const Opentelemetry__Proto__Logs__V1__ResourceLogs *rl = req->resource_logs[i];
        struct res ri;
        rc = res_init(r, &ri, rl->resource, override, &uid);
        for (size_t j = 0; rc == 0 && j < rl->n_scope_logs; j++) {
            const Opentelemetry__Proto__Logs__V1__ScopeLogs *sl = rl->scope_logs[j];
            for (size_t k = 0; rc == 0 && k < sl->n_log_records; k++) {
                rc = log_row(r, &ri, sl->scope, sl->log_records[k]);
            }
        }
    }
    buf_cleanup(&uid);
    return rc;
}

/* ---- metrics ------------------------------------------------------------------------------- */

/* One data point, whatever its type; absent members render as null. */
struct point {
    uint64_t start, time;
    uint32_t flags;
    keyvalue_t *const *attrs;
    size_t n_attrs;
    exemplar_t *const *ex;
    size_t n_ex;
    bool has_vd, has_vi, has_count, has_sum, has_min, has_max, has_exp, has_summary;
    double vd, sum, min, max, zero_threshold;
    int64_t vi;
    uint64_t count, zero_count;
    const uint64_t *buckets;
    size_t n_buckets;
    const double *bounds;
    size_t n_bounds;
    bool has_hist;
    int32_t scale, pos_off, neg_off;
    const uint64_t *pos;
    size_t n_pos;
    const uint64_t *neg;
    size_t n_neg;
    Opentelemetry__Proto__Metrics__V1__SummaryDataPoint__ValueAtQuantile *const *q;
    size_t n_q;
};

struct metric_ctx {
    const struct res *ri;
    const scope_t *sc;
    const metric_t *m;
    const char *type;
    const char *temporality; /* NULL for gauges and summaries. */
    int monotonic;           /* -1: not a sum. */
};

static const char *temporality_text(int t)
{
    return t == 1 ? "DELTA" : t == 2 ? "CUMULATIVE" : "UNSPECIFIED";
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
                rc = api_rows_put_double(b, x->as_double);
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
            rc = attributes_json(b, x->filtered_attributes, x->n_filtered_attributes);
        }
        if (rc == 0) {
            rc = buf_putc(b, '}');
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

static int point_row(struct api_rows *r, const struct metric_ctx *mc, const struct point *p)
{
    struct rw w;
    int rc = row_begin(r, &w, mc->ri);
    if (rc != 0) {
        return rc;
    }
    v_str(&w, "metric_name", mc->m->name);
    v_opt_str(&w, "metric_description", mc->m->description);
    v_opt_str(&w, "metric_unit", mc->m->unit);
    v_str(&w, "metric_type", mc->type);
    v_opt_str(&w, "service_name", mc->ri->service_name);
    v_opt_str(&w, "user_uid", mc->ri->user_uid);
    v_i64(&w, "start_time_unix_nano", clamp_u64(p->start));
    v_i64(&w, "timestamp_unix_nano", clamp_u64(p->time));
    v_ts(&w, "timestamp", p->time);
    p->has_vd ? v_f64(&w, "value_double", p->vd) : v_null(&w, "value_double");
    p->has_vi ? v_i64(&w, "value_int", p->vi) : v_null(&w, "value_int");
    p->has_count ? v_i64(&w, "count", clamp_u64(p->count)) : v_null(&w, "count");
    p->has_sum ? v_f64(&w, "sum", p->sum) : v_null(&w, "sum");
    p->has_min ? v_f64(&w, "min", p->min) : v_null(&w, "min");
    p->has_max ? v_f64(&w, "max", p->max) : v_null(&w, "max");
    if (p->has_hist) {
        v_list_u64(&w, "bucket_counts", p->buckets, p->n_buckets);
        v_list_f64(&w, "explicit_bounds", p->bounds, p->n_bounds, sizeof(double));
    } else {
        v_null(&w, "bucket_counts");
        v_null(&w, "explicit_bounds");
    }
    if (p->has_exp) {
        v_i64(&w, "scale", p->scale);
        v_i64(&w, "zero_count", clamp_u64(p->zero_count));
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
        /* Quantiles as two lists; an absent entry is 0, as the sink stores it. */
        if (key(&w, "quantiles")) {
            w.rc = buf_putc(w.b, '[');
            for (size_t i = 0; w.rc == 0 && i < p->n_q; i++) {
                w.rc = i > 0 ? buf_putc(w.b, ',') : 0;
                if (w.rc == 0) {
                    w.rc = api_rows_put_double(w.b, p->q[i] != NULL ? p->q[i]->quantile : 0.0);
                }
            }
            w.rc = w.rc == 0 ? buf_putc(w.b, ']') : w.rc;
        }
        if (key(&w, "quantile_values")) {
            w.rc = buf_putc(w.b, '[');
            for (size_t i = 0; w.rc == 0 && i < p->n_q; i++) {
                w.rc = i > 0 ? buf_putc(w.b, ',') : 0;
                if (w.rc == 0) {
                    w.rc = api_rows_put_double(w.b, p->q[i] != NULL ? p->q[i]->value : 0.0);
                }
            }
            w.rc = w.rc == 0 ? buf_putc(w.b, ']') : w.rc;
        }
    } else {
        v_null(&w, "quantiles");
        v_null(&w, "quantile_values");
    }
    v_opt_str(&w, "aggregation_temporality", mc->temporality);
    mc->monotonic < 0 ? v_null(&w, "is_monotonic") : v_bool(&w, "is_monotonic", mc->monotonic);
    v_i64(&w, "flags", p->flags);
    v_opt_str(&w, "scope_name", mc->sc != NULL ? mc->sc->name : NULL);
    v_opt_str(&w, "scope_version", mc->sc != NULL ? mc->sc->version : NULL);
    v_map(&w, "attributes", p->attrs, p->n_attrs);
    v_map(&w, "resource_attributes", mc->ri->attrs, mc->ri->n_attrs);
    buf_reset(&r->scratch);
    v_json(&w, "exemplars", exemplars_json(&r->scratch, p->ex, p->n_ex));
    v_date(&w, p->time);
    /* The view's alias: coalesce(value_double, CAST(value_int AS DOUBLE), "sum"). */
    if (p->has_vd) {
        v_f64(&w, "value", p->vd);
    } else if (p->has_vi) {
        v_f64(&w, "value", (double)p->vi);
    } else if (p->has_sum) {
        v_f64(&w, "value", p->sum);
    } else {
        v_null(&w, "value");
    }
    return row_end(r, &w);
}

static int metric_rows(struct api_rows *r, const struct res *ri, const scope_t *sc,
                       const metric_t *m)
{
    struct metric_ctx mc = {.ri = ri, .sc = sc, .m = m, .monotonic = -1};
    int rc = 0;
    switch (m->data_case) {
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM: {
        Opentelemetry__Proto__Metrics__V1__NumberDataPoint *const *dps = NULL;
        size_t n = 0;
        if (m->data_case == OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE) {
            mc.type = "gauge";
            if (m->gauge != NULL) {
                dps = m->gauge->data_points;
                n = m->gauge->n_data_points;
            }
        } else {
            mc.type = "sum";
            if (m->sum != NULL) {
                mc.temporality = temporality_text(m->sum->aggregation_temporality);
                mc.monotonic = m->sum->is_monotonic ? 1 : 0;
                dps = m->sum->data_points;
                n = m->sum->n_data_points;
            }
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            const Opentelemetry__Proto__Metrics__V1__NumberDataPoint *dp = dps[i];
            struct point p = {.start = dp->start_time_unix_nano,
                              .time = dp->time_unix_nano,
                              .flags = dp->flags,
                              .attrs = dp->attributes,
                              .n_attrs = dp->n_attributes,
                              .ex = dp->exemplars,
                              .n_ex = dp->n_exemplars};
            if (dp->value_case ==
                OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE) {
                p.has_vd = true;
                p.vd = dp->as_double;
            } else if (dp->value_case ==
                       OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT) {
                p.has_vi = true;
                p.vi = dp->as_int;
            }
            rc = point_row(r, &mc, &p);
        }
        break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
        mc.type = "histogram";
        if (m->histogram == NULL) {
            break;
        }
        mc.temporality = temporality_text(m->histogram->aggregation_temporality);
        for (size_t i = 0; rc == 0 && i < m->histogram->n_data_points; i++) {
            const Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *dp =
                m->histogram->data_points[i];
            struct point p = {
                .start = dp->start_time_unix_nano,
                .time = dp->time_unix_nano,
                .flags = dp->flags,
                .attrs = dp->attributes,
                .n_attrs = dp->n_attributes,
                .ex = dp->exemplars,
                .n_ex = dp->n_exemplars,
                .has_count = true,
                .count = dp->count,
                .has_sum = dp->_sum_case ==
                           OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM,
                .sum = dp->sum,
                .has_min = dp->_min_case ==
                           OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MIN_MIN,
                .min = dp->min,
                .has_max = dp->_max_case ==
                           OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MAX_MAX,
                .max = dp->max,
                .has_hist = true,
                .buckets = dp->bucket_counts,
                .n_buckets = dp->n_bucket_counts,
                .bounds = dp->explicit_bounds,
                .n_bounds = dp->n_explicit_bounds,
            };
            rc = point_row(r, &mc, &p);
        }
        break;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM: {
        const Opentelemetry__Proto__Metrics__V1__ExponentialHistogram *h = m->exponential_histogram;
        mc.type = "exponentialHistogram";
        if (h == NULL) {
            break;
        }
        mc.temporality = temporality_text(h->aggregation_temporality);
        for (size_t i = 0; rc == 0 && i < h->n_data_points; i++) {
            const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint *dp =
                h->data_points[i];
            const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint__Buckets *pos =
                dp->positive;
            const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint__Buckets *neg =
                dp->negative;
            struct point p = {
                .start = dp->start_time_unix_nano,
                .time = dp->time_unix_nano,
                .flags = dp->flags,
                .attrs = dp->attributes,
                .n_attrs = dp->n_attributes,
                .ex = dp->exemplars,
                .n_ex = dp->n_exemplars,
                .has_count = true,
                .count = dp->count,
                .has_sum =
                    dp->_sum_case ==
                    OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___SUM_SUM,
                .sum = dp->sum,
                .has_min =
                    dp->_min_case ==
                    OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___MIN_MIN,
                .min = dp->min,
                .has_max =
                    dp->_max_case ==
                    OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___MAX_MAX,
                .max = dp->max,
                .has_exp = true,
                .scale = dp->scale,
                .zero_count = dp->zero_count,
                .zero_threshold = dp->zero_threshold,
                .pos_off = pos != NULL ? pos->offset : 0,
                .neg_off = neg != NULL ? neg->offset : 0,
                .pos = pos != NULL ? pos->bucket_counts : NULL,
                .n_pos = pos != NULL ? pos->n_bucket_counts : 0,
                .neg = neg != NULL ? neg->bucket_counts : NULL,
                .n_neg = neg != NULL ? neg->n_bucket_counts : 0,
            };
            rc = point_row(r, &mc, &p);
        }
        break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
        mc.type = "summary";
        for (size_t i = 0; rc == 0 && m->summary != NULL && i < m->summary->n_data_points; i++) {
            const Opentelemetry__Proto__Metrics__V1__SummaryDataPoint *dp =
                m->summary->data_points[i];
            struct point p = {.start = dp->start_time_unix_nano,
                              .time = dp->time_unix_nano,
                              .flags = dp->flags,
                              .attrs = dp->attributes,
                              .n_attrs = dp->n_attributes,
                              .has_count = true,
                              .count = dp->count,
                              .has_sum = true,
                              .sum = dp->sum,
                              .has_summary = true,
                              .q = dp->quantile_values,
                              .n_q = dp->n_quantile_values};
            rc = point_row(r, &mc, &p);
        }
        break;
    default:
        /* A metric with no data carries no data point: no row, as in the sink. */
        break;
    }
    return rc;
}

static int metrics_rows(struct api_rows *r, const ProtobufCMessage *msg, const char *override)
{
    const Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest *req =
        (const void *)msg;
    struct buf uid;
    buf_init(&uid, 4096);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < req->n_resource_metrics; i++) {
        const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = req->resource_metrics[i];
        struct res ri;
        rc = res_init(r, &ri, rm->resource, override, &uid);
        for (size_t j = 0; rc == 0 && j < rm->n_scope_metrics; j++) {
            const Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[j];
            for (size_t k = 0; rc == 0 && k < sm->n_metrics; k++) {
                rc = metric_rows(r, &ri, sm->scope, sm->metrics[k]);
            }
        }
    }
    buf_cleanup(&uid);
    return rc;
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
    /* The sink stores an empty override as the resource's own uid would be: not at all. */
    const char *override = user_uid;
    switch (signal) {
    case OTLP_TRACES:
        rc = traces_rows(r, msg, override);
        break;
    case OTLP_LOGS:
        rc = logs_rows(r, msg, override);
        break;
    default:
        rc = metrics_rows(r, msg, override);
        break;
    }
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
