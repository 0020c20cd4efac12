/*
 * The rows of a decoded request, without DuckDB (sink_values.h): the walk over resources, scopes
 * and records, what a resource gives its rows, each metric data point flattened to the metrics
 * table's columns, and the enum names the tables store. The sink writes these rows into DuckDB
 * vectors (sink_rows.c), the live stream into JSON (api_rows.c): both see the same values
 * because both take them from here.
 */
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"
#include "otlp/otlp.h"
#include "sink/sink_values.h"

/* A uid's text (a non-string datalayer.user_uid) may not pass this. */
#define SINK_UID_MAX 4096

/* ---- names ---------------------------------------------------------------------------------- */

const char *sink_span_kind_name(int kind)
{
    static const char *const names[] = {"UNSPECIFIED", "INTERNAL", "SERVER",
                                        "CLIENT",      "PRODUCER", "CONSUMER"};
    return kind >= 1 && kind <= 5 ? names[kind] : names[0];
}

const char *sink_status_name(int code)
{
    return code == 1 ? "OK" : code == 2 ? "ERROR" : "UNSET";
}

const char *sink_temporality_name(int t)
{
    return t == 1 ? "DELTA" : t == 2 ? "CUMULATIVE" : "UNSPECIFIED";
}

/* ---- map keys ------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

int sink_keys_init(struct sink_keys *ks, sink_keyvalue *const *kv, size_t n)
{
    ks->kv = kv;
    ks->slots = NULL;
    ks->cap = 0;
    if (n <= 32) {
        return 0;
    }
    size_t cap = 64;
    while (cap < n * 2) {
        cap *= 2;
    }
    ks->slots = calloc(cap, sizeof(*ks->slots));
    if (ks->slots == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    ks->cap = cap;
    return 0;
}

bool sink_keys_skip(struct sink_keys *ks, size_t i)
{
    sink_keyvalue *const *kv = ks->kv;
    if (kv[i] == NULL || kv[i]->key == NULL) {
        return true;
    }
    const char *k = kv[i]->key;
    if (ks->slots == NULL) {
        for (size_t j = 0; j < i; j++) {
            if (kv[j] != NULL && kv[j]->key != NULL && strcmp(kv[j]->key, k) == 0) {
                return true;
            }
        }
        return false;
    }
    size_t at = (size_t)hash_str(k) & (ks->cap - 1);
    while (ks->slots[at] != NULL) {
        if (strcmp(ks->slots[at], k) == 0) {
            return true;
        }
        at = (at + 1) & (ks->cap - 1);
    }
    ks->slots[at] = k;
    return false;
}

void sink_keys_cleanup(struct sink_keys *ks)
{
    free(ks->slots);
    ks->slots = NULL;
    ks->cap = 0;
}

/* ---- resources ------------------------------------------------------------------------------ */

/*
 * Fills |ri| for resource |r|: service.name and datalayer.user_uid (the first of each;
 * w->user_uid wins over the latter), and the attributes. A non-string uid is kept as its text, in
 * |uidbuf|. Returns 0, or the error of rendering that text, in which case the rows have no user;
 * |ri| is complete either way.
 */
static int res_init(struct sink_res *ri, const sink_resource *r, const struct sink_walk *w,
                    struct buf *uidbuf)
{
    const char *override = w->user_uid;
    memset(ri, 0, sizeof(*ri));
    ri->user_uid = override;
    if (r == NULL) {
        return 0;
    }
    ri->attrs = r->attributes;
    ri->n_attrs = r->n_attributes;
    int err = 0;
    bool have_service = false;
    bool have_uid = override != NULL;
    for (size_t i = 0; i < r->n_attributes && (!have_service || !have_uid); i++) {
        const sink_keyvalue *kv = r->attributes[i];
        if (kv == NULL || kv->key == NULL || kv->value == NULL) {
            continue;
        }
        bool is_str = kv->value->value_case ==
                      OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
        if (!have_service && strcmp(kv->key, "service.name") == 0) {
            have_service = true;
            ri->service_name = is_str ? kv->value->string_value : NULL;
        } else if (!have_uid && strcmp(kv->key, "datalayer.user_uid") == 0) {
            have_uid = true;
            if (is_str) {
                ri->user_uid = kv->value->string_value;
                continue;
            }
            /* A number as the uid: keep its text. An empty text is no user. */
            buf_reset(uidbuf);
            int rc = sink_value_text(uidbuf, kv->value, w->dbl);
            if (rc == 0) {
                rc = buf_terminate(uidbuf);
            }
            if (rc < 0) {
                err = rc;
            } else if (rc == 0 && uidbuf->len > 0) {
                ri->user_uid = (const char *)uidbuf->data;
            }
        }
    }
    return err;
}

/* ---- metric data points --------------------------------------------------------------------- */

/* Starts data point |p| from the metric's |base| with the members every point type has. */
static void point_init(struct sink_point *p, const struct sink_point *base, uint64_t start,
                       uint64_t time, uint32_t flags, sink_keyvalue *const *attrs, size_t n_attrs)
{
    *p = *base;
    p->start = start;
    p->time = time;
    p->flags = flags;
    p->attrs = attrs;
    p->n_attrs = n_attrs;
}

/* count, and sum, min and max (proto3 `optional`, generated as one-member oneofs: otlp_pb.h). */
static void point_stats(struct sink_point *p, uint64_t count, bool has_sum, double sum,
                        bool has_min, double min, bool has_max, double max)
{
    p->has_count = true;
    p->count = count;
    p->has_sum = has_sum;
    p->sum = sum;
    p->has_min = has_min;
    p->min = min;
    p->has_max = has_max;
    p->max = max;
}

static int number_points(const struct sink_walk *w, const struct sink_point *base,
                         Opentelemetry__Proto__Metrics__V1__NumberDataPoint *const *dps, size_t n)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const Opentelemetry__Proto__Metrics__V1__NumberDataPoint *dp = dps[i];
        struct sink_point p;
        point_init(&p, base, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                   dp->attributes, dp->n_attributes);
        p.ex = dp->exemplars;
        p.n_ex = dp->n_exemplars;
        if (dp->value_case ==
            OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE) {
            p.has_vd = true;
            p.vd = dp->as_double;
        } else if (dp->value_case ==
                   OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT) {
            p.has_vi = true;
            p.vi = dp->as_int;
        }
        rc = w->point(w->ctx, &p);
    }
    return rc;
}

static int histogram_points(const struct sink_walk *w, const struct sink_point *base,
                            const Opentelemetry__Proto__Metrics__V1__Histogram *h)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < h->n_data_points; i++) {
        const Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *dp = h->data_points[i];
        struct sink_point p;
        point_init(&p, base, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                   dp->attributes, dp->n_attributes);
        p.ex = dp->exemplars;
        p.n_ex = dp->n_exemplars;
        point_stats(
            &p, dp->count,
            dp->_sum_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM,
            dp->sum,
            dp->_min_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MIN_MIN,
            dp->min,
            dp->_max_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MAX_MAX,
            dp->max);
        p.has_hist = true;
        p.buckets = dp->bucket_counts;
        p.n_buckets = dp->n_bucket_counts;
        p.bounds = dp->explicit_bounds;
        p.n_bounds = dp->n_explicit_bounds;
        rc = w->point(w->ctx, &p);
    }
    return rc;
}

/* A missing side of an exponential histogram has offset 0 and no buckets: an empty side. */
static void
exp_side(const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint__Buckets *b,
         int32_t *off, const uint64_t **counts, size_t *n)
{
    *off = b != NULL ? b->offset : 0;
    *counts = b != NULL ? b->bucket_counts : NULL;
    *n = b != NULL ? b->n_bucket_counts : 0;
}

static int exponential_points(const struct sink_walk *w, const struct sink_point *base,
                              const Opentelemetry__Proto__Metrics__V1__ExponentialHistogram *h)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < h->n_data_points; i++) {
        const Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint *dp =
            h->data_points[i];
        struct sink_point p;
        point_init(&p, base, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                   dp->attributes, dp->n_attributes);
        p.ex = dp->exemplars;
        p.n_ex = dp->n_exemplars;
        point_stats(
            &p, dp->count,
            dp->_sum_case ==
                OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___SUM_SUM,
            dp->sum,
            dp->_min_case ==
                OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___MIN_MIN,
            dp->min,
            dp->_max_case ==
                OPENTELEMETRY__PROTO__METRICS__V1__EXPONENTIAL_HISTOGRAM_DATA_POINT___MAX_MAX,
            dp->max);
        p.has_exp = true;
        p.scale = dp->scale;
        p.zero_count = dp->zero_count;
        p.zero_threshold = dp->zero_threshold;
        exp_side(dp->positive, &p.pos_off, &p.pos, &p.n_pos);
        exp_side(dp->negative, &p.neg_off, &p.neg, &p.n_neg);
        rc = w->point(w->ctx, &p);
    }
    return rc;
}

static int summary_points(const struct sink_walk *w, const struct sink_point *base,
                          const Opentelemetry__Proto__Metrics__V1__Summary *s)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n_data_points; i++) {
        const Opentelemetry__Proto__Metrics__V1__SummaryDataPoint *dp = s->data_points[i];
        struct sink_point p;
        point_init(&p, base, dp->start_time_unix_nano, dp->time_unix_nano, dp->flags,
                   dp->attributes, dp->n_attributes);
        /* A summary has no min, max nor exemplars, and its sum is not optional. */
        point_stats(&p, dp->count, true, dp->sum, false, 0, false, 0);
        p.has_summary = true;
        p.q = dp->quantile_values;
        p.n_q = dp->n_quantile_values;
        rc = w->point(w->ctx, &p);
    }
    return rc;
}

/* One row per data point; a metric with no data carries no data point and so has no row. */
static int metric_points(const struct sink_walk *w, const struct sink_res *ri, const sink_scope *sc,
                         const sink_metric *m)
{
    struct sink_point base = {.res = ri, .scope = sc, .metric = m, .monotonic = -1};
    switch (m->data_case) {
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
        base.type = "gauge";
        return m->gauge == NULL
                   ? 0
                   : number_points(w, &base, m->gauge->data_points, m->gauge->n_data_points);
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
        base.type = "sum";
        if (m->sum == NULL) {
            return 0;
        }
        base.temporality = sink_temporality_name(m->sum->aggregation_temporality);
        base.monotonic = m->sum->is_monotonic ? 1 : 0;
        return number_points(w, &base, m->sum->data_points, m->sum->n_data_points);
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
        base.type = "histogram";
        if (m->histogram == NULL) {
            return 0;
        }
        base.temporality = sink_temporality_name(m->histogram->aggregation_temporality);
        return histogram_points(w, &base, m->histogram);
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
        base.type = "exponentialHistogram";
        if (m->exponential_histogram == NULL) {
            return 0;
        }
        base.temporality = sink_temporality_name(m->exponential_histogram->aggregation_temporality);
        return exponential_points(w, &base, m->exponential_histogram);
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
        base.type = "summary";
        return m->summary == NULL ? 0 : summary_points(w, &base, m->summary);
    default:
        return 0;
    }
}

/* ---- the walk ------------------------------------------------------------------------------- */

/*
 * The three requests have one shape: the request's field 1 is the repeated Resource<Signal>,
 * whose field 1 is the resource and field 2 the repeated Scope<Signal>, whose field 1 is the
 * scope and field 2 the repeated records (spans, log records, metrics). protobuf-c's descriptors
 * give each member's offset, so one walk serves the three signals.
 */
enum { F_OUTER = 1, F_INNER = 2 };

static const void *member(const ProtobufCMessage *m, unsigned id)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, id);
    const void *p = NULL;
    if (f != NULL) {
        memcpy(&p, (const char *)m + f->offset, sizeof(p));
    }
    return p;
}

static ProtobufCMessage *const *repeated(const ProtobufCMessage *m, unsigned id, size_t *n)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, id);
    ProtobufCMessage *const *v = NULL;
    *n = 0;
    if (f != NULL) {
        memcpy(n, (const char *)m + f->quantifier_offset, sizeof(*n));
        memcpy(&v, (const char *)m + f->offset, sizeof(v));
    }
    return v;
}

static int walk_record(const struct sink_walk *w, int signal, const struct sink_res *ri,
                       const sink_scope *sc, const void *rec)
{
    switch (signal) {
    case OTLP_TRACES:
        return w->span(w->ctx, ri, sc, rec);
    case OTLP_LOGS:
        return w->log(w->ctx, ri, sc, rec);
    default:
        return metric_points(w, ri, sc, rec);
    }
}

int sink_walk_request(const struct sink_walk *w, int signal, const ProtobufCMessage *msg)
{
    if (signal != OTLP_TRACES && signal != OTLP_LOGS && signal != OTLP_METRICS) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct buf uid;
    buf_init(&uid, SINK_UID_MAX);
    size_t n_res;
    ProtobufCMessage *const *res = repeated(msg, F_OUTER, &n_res);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_res; i++) {
        struct sink_res ri;
        rc = res_init(&ri, member(res[i], F_OUTER), w, &uid);
        rc = w->uid_errors_fatal ? rc : 0;
        size_t n_scopes;
        ProtobufCMessage *const *scopes = repeated(res[i], F_INNER, &n_scopes);
        for (size_t j = 0; rc == 0 && j < n_scopes; j++) {
            const sink_scope *sc = member(scopes[j], F_OUTER);
            size_t n_recs;
            ProtobufCMessage *const *recs = repeated(scopes[j], F_INNER, &n_recs);
            for (size_t k = 0; rc == 0 && k < n_recs; k++) {
                rc = walk_record(w, signal, &ri, sc, recs[k]);
            }
        }
    }
    buf_cleanup(&uid);
    return rc;
}
