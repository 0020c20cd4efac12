/*
 * Unit tests for agent/otlp: the scanner, the OTLP/JSON codec and the response encoders, checked
 * against real requests made by the OpenTelemetry JS SDK (DLOTEL_PAYLOADS_DIR) and against
 * protobuf-c's own unpacker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <math.h>

#include "core/arena.h"
#include "core/buf.h"
#include "dlotel.h"
#include "otlp/otlp.h"
#include "otlp/otlp_pb.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest TraceRequest;
typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest LogsRequest;
typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest MetricsRequest;

static const char *const payload_names[OTLP_SIGNAL_COUNT] = {
    [OTLP_TRACES] = "traces_512",
    [OTLP_METRICS] = "metrics",
    [OTLP_LOGS] = "logs_512",
};

/* ---- helpers ------------------------------------------------------------------------------ */

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail_msg("cannot open %s", path);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *d = malloc((size_t)n + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    d[n] = 0;
    *len = (size_t)n;
    return d;
}

static uint8_t *read_payload(enum otlp_signal s, const char *ext, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.%s", DLOTEL_PAYLOADS_DIR, payload_names[s], ext);
    return read_file(path, len);
}

/* Counts what protobuf-c sees, independently of the scanner. */
static void count_unpacked(enum otlp_signal s, const ProtobufCMessage *m, struct otlp_counts *c)
{
    memset(c, 0, sizeof(*c));
    if (s == OTLP_TRACES) {
        const TraceRequest *r = (const void *)m;
        c->resources = (uint32_t)r->n_resource_spans;
        for (size_t i = 0; i < r->n_resource_spans; i++) {
            c->scopes += (uint32_t)r->resource_spans[i]->n_scope_spans;
            for (size_t j = 0; j < r->resource_spans[i]->n_scope_spans; j++) {
                c->items += r->resource_spans[i]->scope_spans[j]->n_spans;
            }
        }
    } else if (s == OTLP_LOGS) {
        const LogsRequest *r = (const void *)m;
        c->resources = (uint32_t)r->n_resource_logs;
        for (size_t i = 0; i < r->n_resource_logs; i++) {
            c->scopes += (uint32_t)r->resource_logs[i]->n_scope_logs;
            for (size_t j = 0; j < r->resource_logs[i]->n_scope_logs; j++) {
                c->items += r->resource_logs[i]->scope_logs[j]->n_log_records;
            }
        }
    } else {
        const MetricsRequest *r = (const void *)m;
        c->resources = (uint32_t)r->n_resource_metrics;
        for (size_t i = 0; i < r->n_resource_metrics; i++) {
            const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = r->resource_metrics[i];
            c->scopes += (uint32_t)rm->n_scope_metrics;
            for (size_t j = 0; j < rm->n_scope_metrics; j++) {
                for (size_t k = 0; k < rm->scope_metrics[j]->n_metrics; k++) {
                    const Opentelemetry__Proto__Metrics__V1__Metric *mt =
                        rm->scope_metrics[j]->metrics[k];
                    switch (mt->data_case) {
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
                        c->items += mt->gauge->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
                        c->items += mt->sum->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
                        c->items += mt->histogram->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
                        c->items += mt->exponential_histogram->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
                        c->items += mt->summary->n_data_points;
                        break;
                    default:
                        break;
                    }
                }
            }
        }
    }
}

/* Unpacks with protobuf-c's default allocator and packs again: protobuf-c's canonical bytes. */
static uint8_t *repack(enum otlp_signal s, const uint8_t *data, size_t len, size_t *out_len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(otlp_request_descriptor(s), NULL, len, data);
    assert_non_null(m);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(n + 1);
    assert_non_null(p);
    assert_int_equal(protobuf_c_message_pack(m, p), n);
    protobuf_c_message_free_unpacked(m, NULL);
    *out_len = n;
    return p;
}

static void assert_same_request(enum otlp_signal s, const uint8_t *a, size_t alen, const uint8_t *b,
                                size_t blen)
{
    size_t ra_len, rb_len;
    uint8_t *ra = repack(s, a, alen, &ra_len);
    uint8_t *rb = repack(s, b, blen, &rb_len);
    assert_int_equal(ra_len, rb_len);
    assert_memory_equal(ra, rb, ra_len);
    free(ra);
    free(rb);
}

/* A tiny protobuf writer for hand-made (and deliberately broken) inputs. */
static void put_varint(struct buf *b, uint64_t v)
{
    while (v >= 0x80) {
        assert_int_equal(buf_putc(b, (uint8_t)(v | 0x80)), 0);
        v >>= 7;
    }
    assert_int_equal(buf_putc(b, (uint8_t)v), 0);
}

static void put_tag(struct buf *b, uint32_t field, unsigned wt)
{
    put_varint(b, (uint64_t)field << 3 | wt);
}

static void put_len(struct buf *b, uint32_t field, const void *p, size_t n)
{
    put_tag(b, field, 2);
    put_varint(b, n);
    assert_int_equal(buf_append(b, p, n), 0);
}

/* Wraps |inner| as field |field| of a new message: inner = {field: inner}. */
static void wrap(struct buf *inner, uint32_t field)
{
    struct buf outer;
    buf_init(&outer, 1 << 20);
    put_len(&outer, field, inner->data, inner->len);
    buf_cleanup(inner);
    *inner = outer;
}

/* The scanner's verdict on |len| bytes; on rejection the message must say |why|. */
static int scan(enum otlp_signal s, const void *data, size_t len, struct otlp_counts *c,
                const char *why)
{
    struct otlp_counts tmp;
    struct otlp_error err = {0};
    int rc = otlp_scan(s, data, len, c != NULL ? c : &tmp, &err);
    if (rc != 0) {
        assert_int_equal(rc, DLOTEL_ERR_BAD_INPUT);
        assert_non_null(err.message);
        assert_true(err.offset <= len);
        if (why != NULL && strstr(err.message, why) == NULL) {
            fail_msg("rejected with \"%s\", expected \"%s\"", err.message, why);
        }
    }
    return rc;
}

/* A small traces request using every kind of field: ids, nested values, events, links, status,
 * the two-byte tag of flags (field 16). */
static uint8_t *small_traces(size_t *len)
{
    static uint8_t trace_id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static uint8_t span_id[8] = {0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3};
    static uint8_t parent_id[8] = {9, 9, 9, 9, 9, 9, 9, 9};

    Opentelemetry__Proto__Common__V1__AnyValue v_str =
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    v_str.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v_str.string_value = "checkout \xc3\xa9\xe2\x82\xac";
    Opentelemetry__Proto__Common__V1__AnyValue v_int =
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    v_int.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    v_int.int_value = -42;
    Opentelemetry__Proto__Common__V1__AnyValue *arr_items[] = {&v_str, &v_int};
    Opentelemetry__Proto__Common__V1__ArrayValue arr =
        OPENTELEMETRY__PROTO__COMMON__V1__ARRAY_VALUE__INIT;
    arr.n_values = 2;
    arr.values = arr_items;
    Opentelemetry__Proto__Common__V1__AnyValue v_arr =
        OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    v_arr.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
    v_arr.array_value = &arr;

    Opentelemetry__Proto__Common__V1__KeyValue kv1 =
        OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
    kv1.key = "service.name";
    kv1.value = &v_str;
    Opentelemetry__Proto__Common__V1__KeyValue kv2 =
        OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
    kv2.key = "list";
    kv2.value = &v_arr;
    Opentelemetry__Proto__Common__V1__KeyValue *attrs[] = {&kv1, &kv2};

    Opentelemetry__Proto__Resource__V1__Resource res =
        OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    res.n_attributes = 2;
    res.attributes = attrs;
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
        OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    scope.name = "test";
    scope.version = "1.0";

    Opentelemetry__Proto__Trace__V1__Span__Event ev =
        OPENTELEMETRY__PROTO__TRACE__V1__SPAN__EVENT__INIT;
    ev.time_unix_nano = 1767225600000000001ull;
    ev.name = "exception";
    ev.n_attributes = 1;
    ev.attributes = attrs;
    Opentelemetry__Proto__Trace__V1__Span__Event *evs[] = {&ev};
    Opentelemetry__Proto__Trace__V1__Span__Link link =
        OPENTELEMETRY__PROTO__TRACE__V1__SPAN__LINK__INIT;
    link.trace_id.len = 16;
    link.trace_id.data = trace_id;
    link.span_id.len = 8;
    link.span_id.data = parent_id;
    link.flags = 1;
    Opentelemetry__Proto__Trace__V1__Span__Link *links[] = {&link};
    Opentelemetry__Proto__Trace__V1__Status st = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;
    st.code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
    st.message = "boom";

    Opentelemetry__Proto__Trace__V1__Span sp1 = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    sp1.trace_id.len = 16;
    sp1.trace_id.data = trace_id;
    sp1.span_id.len = 8;
    sp1.span_id.data = span_id;
    sp1.parent_span_id.len = 8;
    sp1.parent_span_id.data = parent_id;
    sp1.name = "GET /cart";
    sp1.kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER;
    sp1.start_time_unix_nano = 1767225600000000000ull;
    sp1.end_time_unix_nano = 1767225600074000000ull;
    sp1.n_attributes = 2;
    sp1.attributes = attrs;
    sp1.n_events = 1;
    sp1.events = evs;
    sp1.n_links = 1;
    sp1.links = links;
    sp1.status = &st;
    sp1.flags = 0x101;
    Opentelemetry__Proto__Trace__V1__Span sp2 = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    sp2.trace_id.len = 16;
    sp2.trace_id.data = trace_id;
    sp2.span_id.len = 8;
    sp2.span_id.data = parent_id;
    sp2.name = "root";
    Opentelemetry__Proto__Trace__V1__Span *spans[] = {&sp1, &sp2};

    Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
        OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    ss.scope = &scope;
    ss.n_spans = 2;
    ss.spans = spans;
    Opentelemetry__Proto__Trace__V1__ScopeSpans *sss[] = {&ss};
    Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
        OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    rs.resource = &res;
    rs.n_scope_spans = 1;
    rs.scope_spans = sss;
    rs.schema_url = "https://opentelemetry.io/schemas/1.26.0";
    Opentelemetry__Proto__Trace__V1__ResourceSpans *rss[] = {&rs};
    TraceRequest req =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    req.n_resource_spans = 1;
    req.resource_spans = rss;

    size_t n = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *p = malloc(n);
    assert_non_null(p);
    assert_int_equal(protobuf_c_message_pack(&req.base, p), n);
    *len = n;
    return p;
}

/* A small metrics request with a histogram: packed fixed64 and double arrays, optional sum. */
static uint8_t *small_metrics(size_t *len)
{
    uint64_t counts[] = {1, 0, 7, 2};
    double bounds[] = {0.005, 0.1, 2.5};
    Opentelemetry__Proto__Metrics__V1__HistogramDataPoint dp =
        OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT__INIT;
    dp.time_unix_nano = 1767225660000000000ull;
    dp.count = 10;
    dp._sum_case = OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM;
    dp.sum = 3.25;
    dp.n_bucket_counts = 4;
    dp.bucket_counts = counts;
    dp.n_explicit_bounds = 3;
    dp.explicit_bounds = bounds;
    Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *dps[] = {&dp, &dp};
    Opentelemetry__Proto__Metrics__V1__Histogram h =
        OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM__INIT;
    h.n_data_points = 2;
    h.data_points = dps;
    h.aggregation_temporality =
        OPENTELEMETRY__PROTO__METRICS__V1__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
    Opentelemetry__Proto__Metrics__V1__NumberDataPoint np =
        OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__INIT;
    np.value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT;
    np.as_int = -5;
    Opentelemetry__Proto__Metrics__V1__NumberDataPoint *nps[] = {&np};
    Opentelemetry__Proto__Metrics__V1__Gauge g = OPENTELEMETRY__PROTO__METRICS__V1__GAUGE__INIT;
    g.n_data_points = 1;
    g.data_points = nps;
    Opentelemetry__Proto__Metrics__V1__Metric m1 = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__INIT;
    m1.name = "latency";
    m1.data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM;
    m1.histogram = &h;
    Opentelemetry__Proto__Metrics__V1__Metric m2 = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__INIT;
    m2.name = "queue";
    m2.data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
    m2.gauge = &g;
    Opentelemetry__Proto__Metrics__V1__Metric *ms[] = {&m1, &m2};
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics sm =
        OPENTELEMETRY__PROTO__METRICS__V1__SCOPE_METRICS__INIT;
    sm.n_metrics = 2;
    sm.metrics = ms;
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sms[] = {&sm};
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics rm =
        OPENTELEMETRY__PROTO__METRICS__V1__RESOURCE_METRICS__INIT;
    rm.n_scope_metrics = 1;
    rm.scope_metrics = sms;
    Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rms[] = {&rm};
    MetricsRequest req =
        OPENTELEMETRY__PROTO__COLLECTOR__METRICS__V1__EXPORT_METRICS_SERVICE_REQUEST__INIT;
    req.n_resource_metrics = 1;
    req.resource_metrics = rms;

    size_t n = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *p = malloc(n);
    assert_non_null(p);
    assert_int_equal(protobuf_c_message_pack(&req.base, p), n);
    *len = n;
    return p;
}

/* ---- signal names ------------------------------------------------------------------------- */

static void test_signal_names(void **state)
{
    (void)state;
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        const char *name = otlp_signal_name((enum otlp_signal)i);
        enum otlp_signal s = OTLP_SIGNAL_COUNT;
        assert_int_equal(otlp_signal_parse(name, strlen(name), &s), 0);
        assert_int_equal(s, i);
    }
    assert_string_equal(otlp_signal_name(OTLP_TRACES), "traces");
    assert_string_equal(otlp_signal_name(OTLP_METRICS), "metrics");
    assert_string_equal(otlp_signal_name(OTLP_LOGS), "logs");
    enum otlp_signal s = OTLP_LOGS;
    /* |len| bounds the name: a prefix of a longer string parses, a prefix of a name does not. */
    assert_int_equal(otlp_signal_parse("traces/extra", 6, &s), 0);
    assert_int_equal(s, OTLP_TRACES);
    s = OTLP_LOGS;
    assert_int_equal(otlp_signal_parse("trace", 5, &s), DLOTEL_ERR_NOT_FOUND);
    assert_int_equal(otlp_signal_parse("Traces", 6, &s), DLOTEL_ERR_NOT_FOUND);
    assert_int_equal(otlp_signal_parse("", 0, &s), DLOTEL_ERR_NOT_FOUND);
    assert_int_equal(s, OTLP_LOGS);
}

/* ---- scanner on real payloads ------------------------------------------------------------- */

static void test_scan_payloads(void **state)
{
    (void)state;
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        enum otlp_signal s = (enum otlp_signal)i;
        size_t len;
        uint8_t *pb = read_payload(s, "pb", &len);
        struct otlp_counts c;
        assert_int_equal(scan(s, pb, len, &c, NULL), 0);

        /* protobuf-c's view, counted from the unpacked message. */
        ProtobufCMessage *m = protobuf_c_message_unpack(otlp_request_descriptor(s), NULL, len, pb);
        assert_non_null(m);
        struct otlp_counts want;
        count_unpacked(s, m, &want);
        protobuf_c_message_free_unpacked(m, NULL);
        assert_int_equal(c.resources, want.resources);
        assert_int_equal(c.scopes, want.scopes);
        assert_int_equal(c.items, want.items);

        /* And the numbers the payload generator wrote down (summary.json). */
        if (s == OTLP_TRACES) {
            assert_int_equal(c.resources, 3);
            assert_int_equal(c.scopes, 9);
            assert_int_equal(c.items, 512);
        } else if (s == OTLP_LOGS) {
            assert_int_equal(c.items, 512);
        } else {
            assert_int_equal(c.resources, 3);
            assert_true(c.items >= 15);
        }

        /* Two requests concatenated are one request holding both: the batching invariant. */
        uint8_t *two = malloc(2 * len);
        assert_non_null(two);
        memcpy(two, pb, len);
        memcpy(two + len, pb, len);
        struct otlp_counts c2;
        assert_int_equal(scan(s, two, 2 * len, &c2, NULL), 0);
        assert_int_equal(c2.resources, 2 * c.resources);
        assert_int_equal(c2.scopes, 2 * c.scopes);
        assert_int_equal(c2.items, 2 * c.items);
        free(two);

        /* A traces request is not a logs request: scanning with the wrong schema must fail
         * or at least count nothing as spans. */
        free(pb);
    }

    /* The empty request is valid and holds nothing. */
    struct otlp_counts c = {1, 1, 1};
    assert_int_equal(scan(OTLP_TRACES, "", 0, &c, NULL), 0);
    assert_int_equal(c.resources, 0);
    assert_int_equal(c.items, 0);
}

/* ---- scanner on broken input -------------------------------------------------------------- */

/* Every prefix of a valid request is either rejected, or (cut on a field boundary) accepted
 * with the same counts protobuf-c finds in it. */
static void check_truncations(enum otlp_signal s, const uint8_t *pb, size_t len)
{
    struct otlp_counts full;
    assert_int_equal(scan(s, pb, len, &full, NULL), 0);
    int accepted = 0;
    for (size_t cut = 0; cut < len; cut++) {
        /* A fresh copy of exactly |cut| bytes, so that ASan sees any read past the end. */
        uint8_t *p = malloc(cut + 1);
        assert_non_null(p);
        memcpy(p, pb, cut);
        struct otlp_counts c;
        if (scan(s, p, cut, &c, NULL) == 0) {
            accepted++;
            ProtobufCMessage *m =
                protobuf_c_message_unpack(otlp_request_descriptor(s), NULL, cut, p);
            if (m == NULL) {
                fail_msg("prefix of %zu bytes accepted by the scanner, refused by protobuf-c", cut);
            }
            struct otlp_counts want;
            count_unpacked(s, m, &want);
            protobuf_c_message_free_unpacked(m, NULL);
            assert_int_equal(c.resources, want.resources);
            assert_int_equal(c.scopes, want.scopes);
            assert_int_equal(c.items, want.items);
            assert_true(c.items <= full.items);
        }
        free(p);
    }
    /* The request is one top-level field, so only the empty prefix is a field boundary. */
    assert_int_equal(accepted, 1);
}

static void test_scan_truncations(void **state)
{
    (void)state;
    size_t len;
    uint8_t *pb = small_traces(&len);
    struct otlp_counts c;
    assert_int_equal(scan(OTLP_TRACES, pb, len, &c, NULL), 0);
    assert_int_equal(c.resources, 1);
    assert_int_equal(c.scopes, 1);
    assert_int_equal(c.items, 2);
    check_truncations(OTLP_TRACES, pb, len);
    free(pb);

    pb = small_metrics(&len);
    assert_int_equal(scan(OTLP_METRICS, pb, len, &c, NULL), 0);
    assert_int_equal(c.items, 3);
    check_truncations(OTLP_METRICS, pb, len);
    free(pb);

    /* The logs payload, cut at every offset of its first 2 KB and around its end. */
    pb = read_payload(OTLP_LOGS, "pb", &len);
    for (size_t cut = 0; cut < len; cut += cut < 2048 || cut > len - 64 ? 1 : 997) {
        uint8_t *p = malloc(cut + 1);
        assert_non_null(p);
        memcpy(p, pb, cut);
        if (scan(OTLP_LOGS, p, cut, &c, NULL) == 0) {
            assert_int_equal(cut, 0);
        }
        free(p);
    }
    free(pb);
}

struct bad_case {
    const char *name;
    enum otlp_signal signal;
    const char *bytes;
    size_t len;
    const char *why; /* NULL: must be accepted. */
};

#define BYTES(s) s, sizeof(s) - 1

/*
 * Hand-made requests. Prefixes used below:
 *   0a LEN resource_spans = 1, 12 LEN scope_spans = 2, 12 LEN spans = 2 (traces);
 *   0a 12 LEN log_records = 2 (logs).
 */
static const struct bad_case bad_cases[] = {
    {"truncated tag", OTLP_TRACES, BYTES("\x8a"), "truncated varint"},
    {"truncated length", OTLP_TRACES, BYTES("\x0a\x80"), "truncated varint"},
    {"length past the end", OTLP_TRACES, BYTES("\x0a\x05\x12\x00"), "past the end"},
    {"field number 0", OTLP_TRACES, BYTES("\x02\x00"), "field number 0"},
    {"field number 0, padded tag", OTLP_TRACES, BYTES("\x82\x00\x00"), "field number 0"},
    {"tag longer than 5 bytes", OTLP_TRACES, BYTES("\x8a\x80\x80\x80\x80\x00\x00"),
     "longer than 5"},
    {"field number over 2^29-1", OTLP_TRACES, BYTES("\xf8\xff\xff\xff\x7f\x00"), "out of range"},
    {"start group", OTLP_TRACES, BYTES("\x0b"), "group"},
    {"end group", OTLP_TRACES, BYTES("\x0c"), "group"},
    {"unknown field as a group", OTLP_TRACES, BYTES("\x7b\x7c"), "group"},
    {"wire type 6", OTLP_TRACES, BYTES("\x0e\x00"), "invalid wire type"},
    {"wire type 7", OTLP_TRACES, BYTES("\x7f\x00"), "invalid wire type"},
    {"resource_spans as a varint", OTLP_TRACES, BYTES("\x08\x01"), "wrong wire type"},
    {"span name as fixed32", OTLP_TRACES, BYTES("\x0a\x09\x12\x07\x12\x05\x2d\x01\x02\x03\x04"),
     "wrong wire type"},
    {"span kind as a string", OTLP_TRACES, BYTES("\x0a\x07\x12\x05\x12\x03\x32\x01\x02"),
     "wrong wire type"},
    {"15-byte trace id", OTLP_TRACES,
     BYTES("\x0a\x15\x12\x13\x12\x11\x0a\x0f\x30\x31\x32\x33\x34\x35\x36\x37\x38\x39\x61\x62\x63"
           "\x64\x65"),
     "trace id"},
    {"17-byte trace id", OTLP_TRACES,
     BYTES("\x0a\x17\x12\x15\x12\x13\x0a\x11\x30\x31\x32\x33\x34\x35\x36\x37\x38\x39\x61\x62\x63"
           "\x64\x65\x66\x67"),
     "trace id"},
    {"7-byte span id", OTLP_TRACES,
     BYTES("\x0a\x0d\x12\x0b\x12\x09\x12\x07\x30\x31\x32\x33\x34\x35\x36"), "span id"},
    {"9-byte parent span id", OTLP_TRACES,
     BYTES("\x0a\x0f\x12\x0d\x12\x0b\x22\x09\x30\x31\x32\x33\x34\x35\x36\x37\x38"), "span id"},
    {"3-byte link span id", OTLP_TRACES,
     BYTES("\x0a\x0b\x12\x09\x12\x07\x6a\x05\x12\x03\x61\x62\x63"), "span id"},
    {"varint of 11 bytes", OTLP_TRACES,
     BYTES("\x0a\x10\x12\x0e\x12\x0c\x30\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),
     "longer than 10"},
    {"truncated varint at the end of a span", OTLP_TRACES,
     BYTES("\x0a\x06\x12\x04\x12\x02\x30\x80"), "truncated varint"},
    {"truncated fixed64", OTLP_TRACES, BYTES("\x0a\x09\x12\x07\x12\x05\x39\x01\x02\x03\x04"),
     "truncated 64-bit"},
    {"truncated fixed32 flags (two-byte tag)", OTLP_TRACES,
     BYTES("\x0a\x08\x12\x06\x12\x04\x85\x01\x01\x02"), "truncated 32-bit"},
    {"child longer than its parent", OTLP_TRACES, BYTES("\x0a\x04\x12\x02\x12\x05\x00\x00\x00"),
     "past the end"},
    {"overlong UTF-8 in span name", OTLP_TRACES, BYTES("\x0a\x08\x12\x06\x12\x04\x2a\x02\xc0\xaf"),
     "UTF-8"},
    {"surrogate in span name", OTLP_TRACES, BYTES("\x0a\x09\x12\x07\x12\x05\x2a\x03\xed\xa0\x80"),
     "UTF-8"},
    {"code point above U+10FFFF", OTLP_TRACES,
     BYTES("\x0a\x0a\x12\x08\x12\x06\x2a\x04\xf4\x90\x80\x80"), "UTF-8"},
    {"truncated UTF-8 sequence", OTLP_TRACES, BYTES("\x0a\x08\x12\x06\x12\x04\x2a\x02\x41\xe2"),
     "UTF-8"},
    {"invalid UTF-8 in an attribute key", OTLP_LOGS,
     BYTES("\x0a\x09\x12\x07\x12\x05\x32\x03\x0a\x01\xff"), "UTF-8"},
    {"packed bucket_counts of 7 bytes", OTLP_METRICS,
     BYTES("\x0a\x11\x12\x0f\x12\x0d\x4a\x0b\x0a\x09\x32\x07\x00\x00\x00\x00\x00\x00\x00"),
     "multiple of 8"},
    {"packed exponential buckets ending mid-varint", OTLP_METRICS,
     BYTES("\x0a\x0e\x12\x0c\x12\x0a\x52\x08\x0a\x06\x42\x04\x12\x02\x01\x80"), "packed"},
    /* fuzz_otlp_scan found this: protobuf-c 1.4.1 cannot merge two AnyValues without a value. */
    {"attribute value given twice", OTLP_TRACES,
     BYTES("\x0a\x0d\x12\x0b\x12\x09\x4a\x07\x0a\x01\x6b\x12\x00\x12\x00"), "given twice"},
    {"log body given twice", OTLP_LOGS, BYTES("\x0a\x08\x12\x06\x12\x04\x2a\x00\x2a\x00"),
     "given twice"},
    /* Accepted forms. */
    {"empty span", OTLP_TRACES, BYTES("\x0a\x04\x12\x02\x12\x00"), NULL},
    {"empty ids", OTLP_TRACES, BYTES("\x0a\x0a\x12\x08\x12\x06\x0a\x00\x12\x00\x22\x00"), NULL},
    {"unknown fields of every wire type", OTLP_TRACES,
     BYTES("\x0a\x1d\x12\x1b\x12\x19\x98\x06\x96\x01\x99\x06\x01\x02\x03\x04\x05\x06\x07\x08\x9a"
           "\x06\x02\xff\xfe\x9d\x06\x01\x02\x03\x04"), /* 99: i32 */
     NULL},
    {"nested values, one per KeyValue", OTLP_TRACES,
     BYTES(
         "\x0a\x15\x12\x13\x12\x11\x4a\x0b\x0a\x01\x6b\x12\x06\x2a\x04\x0a\x02\x0a\x00\x4a\x02\x12"
         "\x00"),
     NULL},
    {"unknown top-level field", OTLP_LOGS,
     BYTES("\x12\x03"
           "abc"),
     NULL},
    {"packed bucket_counts", OTLP_METRICS,
     BYTES("\x0a\x1a\x12\x18\x12\x16\x4a\x14\x0a\x12\x32\x10"
           "\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00"),
     NULL},
    {"unpacked bucket_counts and explicit_bounds", OTLP_METRICS,
     BYTES("\x0a\x23\x12\x21\x12\x1f\x4a\x1d\x0a\x1b"
           "\x31\x01\x00\x00\x00\x00\x00\x00\x00"
           "\x31\x02\x00\x00\x00\x00\x00\x00\x00"
           "\x39\x00\x00\x00\x00\x00\x00\xf0\x3f"),
     NULL},
    {"packed and unpacked exponential bucket counts", OTLP_METRICS,
     BYTES("\x0a\x13\x12\x11\x12\x0f\x52\x0d\x0a\x0b\x42\x09\x12\x03\x01\x80\x01\x10\x05\x08\x03"),
     NULL},
    {"tag in 5 bytes (non-minimal)", OTLP_TRACES, BYTES("\x8a\x80\x80\x80\x00\x00"), NULL},
};

static void test_scan_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        /* A heap copy of exactly the case's length, so that reads past it are caught. */
        uint8_t *p = malloc(bc->len + 1);
        assert_non_null(p);
        memcpy(p, bc->bytes, bc->len);
        struct otlp_counts c;
        struct otlp_error err = {0};
        int rc = otlp_scan(bc->signal, p, bc->len, &c, &err);
        if (bc->why == NULL) {
            if (rc != 0) {
                fail_msg("case \"%s\": rejected (%s at %zu)", bc->name, err.message, err.offset);
            }
            ProtobufCMessage *m =
                protobuf_c_message_unpack(otlp_request_descriptor(bc->signal), NULL, bc->len, p);
            if (m == NULL) {
                fail_msg("case \"%s\": protobuf-c refuses what the scanner accepts", bc->name);
            }
            protobuf_c_message_free_unpacked(m, NULL);
        } else {
            if (rc != DLOTEL_ERR_BAD_INPUT) {
                fail_msg("case \"%s\": accepted", bc->name);
            }
            if (strstr(err.message, bc->why) == NULL) {
                fail_msg("case \"%s\": rejected with \"%s\", expected \"%s\"", bc->name,
                         err.message, bc->why);
            }
            assert_true(err.offset < bc->len);
        }
        free(p);
    }
}

static void test_scan_error_offset(void **state)
{
    (void)state;
    /* The offset is that of the field at fault: here the span's trace id, at byte 6. */
    const uint8_t bad[] = {0x0a, 0x07, 0x12, 0x05, 0x12, 0x03, 0x0a, 0x01, 0x00};
    struct otlp_counts c;
    struct otlp_error err = {0};
    assert_int_equal(otlp_scan(OTLP_TRACES, bad, sizeof(bad), &c, &err), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(err.offset, 6);
    assert_non_null(strstr(err.message, "trace id"));
    /* |err| may be NULL. */
    assert_int_equal(otlp_scan(OTLP_TRACES, bad, sizeof(bad), &c, NULL), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(otlp_scan((enum otlp_signal)7, bad, sizeof(bad), &c, &err),
                     DLOTEL_ERR_BAD_INPUT);
}

/*
 * A logs request whose body nests arrays: request > ResourceLogs (1) > ScopeLogs (2) >
 * LogRecord (3) > body AnyValue (4) > ArrayValue (5) > AnyValue (6) > ... The innermost
 * message sits at |depth|.
 */
static void nested_logs(struct buf *b, unsigned depth)
{
    buf_init(b, 1 << 20);
    put_len(b, 1, "x", 1); /* innermost AnyValue: string_value "x" */
    for (unsigned d = depth; d > 4; d--) {
        /* d even: this is an AnyValue inside an ArrayValue (field 1 of ArrayValue);
         * d odd: an ArrayValue inside an AnyValue (field 5, array_value). */
        wrap(b, (d % 2 == 0) ? 1 : 5);
    }
    assert_true(depth % 2 == 0);
    wrap(b, 5); /* body AnyValue (4) in LogRecord (3) */
    wrap(b, 2); /* LogRecord in ScopeLogs */
    wrap(b, 2); /* ScopeLogs in ResourceLogs */
    wrap(b, 1); /* ResourceLogs in the request */
}

static void test_scan_depth_limit(void **state)
{
    (void)state;
    struct buf b;
    struct otlp_counts c;

    nested_logs(&b, OTLP_MAX_DEPTH);
    assert_int_equal(scan(OTLP_LOGS, b.data, b.len, &c, NULL), 0);
    assert_int_equal(c.items, 1);
    buf_cleanup(&b);

    nested_logs(&b, OTLP_MAX_DEPTH + 2);
    assert_int_equal(scan(OTLP_LOGS, b.data, b.len, &c, "nested too deeply"), DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&b);

    /* Exactly one level over the limit: an empty ArrayValue at depth 33. */
    buf_init(&b, 1 << 20);
    put_len(&b, 5, "", 0); /* AnyValue at 32 holding an empty ArrayValue at 33 */
    for (unsigned d = OTLP_MAX_DEPTH; d > 4; d--) {
        wrap(&b, (d % 2 == 0) ? 1 : 5);
    }
    wrap(&b, 5);
    wrap(&b, 2);
    wrap(&b, 2);
    wrap(&b, 1);
    assert_int_equal(scan(OTLP_LOGS, b.data, b.len, &c, "nested too deeply"), DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&b);

    /* A very deep input (far past any stack a recursive parser could afford) fails fast. */
    nested_logs(&b, 4000);
    assert_int_equal(scan(OTLP_LOGS, b.data, b.len, &c, "nested too deeply"), DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&b);
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void test_json_payloads_match_pb(void **state)
{
    (void)state;
    struct arena arena;
    arena_init(&arena, 64u << 20);
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        enum otlp_signal s = (enum otlp_signal)i;
        size_t pb_len, json_len;
        uint8_t *pb = read_payload(s, "pb", &pb_len);
        uint8_t *json = read_payload(s, "json", &json_len);

        struct buf out;
        buf_init(&out, 16u << 20);
        char err[256] = "";
        int rc = otlp_json_to_pb(s, (const char *)json, json_len, &arena, &out, err, sizeof(err));
        if (rc != 0) {
            fail_msg("%s.json: %s", payload_names[s], err);
        }
        /* The SDK's own protobuf and our protobuf from its JSON are the same request. */
        assert_same_request(s, pb, pb_len, out.data, out.len);

        struct otlp_counts a, b;
        assert_int_equal(scan(s, pb, pb_len, &a, NULL), 0);
        assert_int_equal(scan(s, out.data, out.len, &b, NULL), 0);
        assert_int_equal(a.items, b.items);
        assert_int_equal(a.scopes, b.scopes);

        buf_cleanup(&out);
        arena_reset(&arena);
        free(pb);
        free(json);
    }
    arena_cleanup(&arena);
}

static void test_json_roundtrip(void **state)
{
    (void)state;
    struct arena arena;
    arena_init(&arena, 64u << 20);
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        enum otlp_signal s = (enum otlp_signal)i;
        size_t pb_len;
        uint8_t *pb = read_payload(s, "pb", &pb_len);
        struct buf json, back;
        buf_init(&json, 16u << 20);
        buf_init(&back, 16u << 20);

        assert_int_equal(otlp_pb_to_json(s, pb, pb_len, &arena, &json), 0);
        /* One line, valid JSON, lowerCamelCase, hex ids, 64-bit integers as strings. */
        assert_null(memchr(json.data, '\n', json.len));
        json_error_t jerr;
        json_t *root = json_loadb((const char *)json.data, json.len, 0, &jerr);
        assert_non_null(root);
        json_decref(root);
        assert_int_equal(buf_terminate(&json), 0);
        const char *text = (const char *)json.data;
        if (s == OTLP_TRACES) {
            assert_non_null(strstr(text, "\"resourceSpans\":[{"));
            assert_non_null(strstr(text, "\"traceId\":\"af9c0078d60d9708440f2fc887062cd7\""));
            assert_non_null(strstr(text, "\"startTimeUnixNano\":\"1767225600000000000\""));
            assert_non_null(strstr(text, "\"kind\":2"));
            assert_null(strstr(text, "trace_id"));
        } else if (s == OTLP_LOGS) {
            assert_non_null(strstr(text, "\"logRecords\":[{"));
            assert_non_null(strstr(text, "\"severityNumber\":"));
        } else {
            assert_non_null(strstr(text, "\"dataPoints\":[{"));
            assert_non_null(strstr(text, "\"aggregationTemporality\":2"));
        }

        arena_reset(&arena);
        char err[256] = "";
        int rc = otlp_json_to_pb(s, text, json.len, &arena, &back, err, sizeof(err));
        if (rc != 0) {
            fail_msg("%s: our own JSON does not decode: %s", payload_names[s], err);
        }
        assert_same_request(s, pb, pb_len, back.data, back.len);

        buf_cleanup(&json);
        buf_cleanup(&back);
        arena_reset(&arena);
        free(pb);
    }
    arena_cleanup(&arena);
}

/* Decodes |json| as |s|; returns the unpacked message (protobuf-c default allocator). */
static ProtobufCMessage *json_decode(enum otlp_signal s, const char *json, int want_rc, char *err,
                                     size_t errlen)
{
    struct arena arena;
    arena_init(&arena, 1 << 20);
    struct buf out;
    buf_init(&out, 1 << 20);
    err[0] = '\0';
    int rc = otlp_json_to_pb(s, json, strlen(json), &arena, &out, err, errlen);
    if (rc != want_rc) {
        fail_msg("json_to_pb returned %d (%s), expected %d, for %s", rc, err, want_rc, json);
    }
    ProtobufCMessage *m = NULL;
    if (rc == 0) {
        struct otlp_counts c;
        assert_int_equal(scan(s, out.data, out.len, &c, NULL), 0);
        m = protobuf_c_message_unpack(otlp_request_descriptor(s), NULL, out.len, out.data);
        assert_non_null(m);
    } else {
        assert_int_equal(out.len, 0);
        assert_true(strlen(err) > 0);
    }
    buf_cleanup(&out);
    arena_cleanup(&arena);
    return m;
}

static Opentelemetry__Proto__Trace__V1__Span *first_span(ProtobufCMessage *m)
{
    TraceRequest *r = (TraceRequest *)m;
    assert_int_equal(r->n_resource_spans, 1);
    assert_int_equal(r->resource_spans[0]->n_scope_spans, 1);
    assert_true(r->resource_spans[0]->scope_spans[0]->n_spans >= 1);
    return r->resource_spans[0]->scope_spans[0]->spans[0];
}

#define SPAN_JSON(span) "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[" span "]}]}]}"

static void test_json_edge_cases(void **state)
{
    (void)state;
    char err[256];
    ProtobufCMessage *m;
    Opentelemetry__Proto__Trace__V1__Span *sp;

    /* 64-bit integers as JSON numbers and as strings; ids in upper case; enum by name; snake
     * case keys; unknown keys ignored. */
    m = json_decode(
        OTLP_TRACES,
        SPAN_JSON(
            "{\"traceId\":\"0123456789ABCDEF0123456789abcdef\","
            "\"span_id\":\"FEDCBA9876543210\",\"parentSpanId\":\"\","
            "\"kind\":\"SPAN_KIND_CLIENT\",\"startTimeUnixNano\":1767225600000000000,"
            "\"end_time_unix_nano\":\"1767225600000000007\","
            "\"futureField\":{\"a\":[1,2,3]},\"flags\":257,"
            "\"status\":{\"code\":\"STATUS_CODE_ERROR\",\"message\":\"x\"},"
            "\"attributes\":[{\"key\":\"n\",\"value\":{\"intValue\":\"-9223372036854775808\"}},"
            "{\"key\":\"m\",\"value\":{\"intValue\":42}},"
            "{\"key\":\"d\",\"value\":{\"doubleValue\":\"NaN\"}},"
            "{\"key\":\"i\",\"value\":{\"doubleValue\":\"-Infinity\"}},"
            "{\"key\":\"b\",\"value\":{\"bytesValue\":\"aGVsbG8=\"}},"
            "{\"key\":\"u\",\"value\":{\"bytesValue\":\"_-8\"}},"
            "{\"key\":\"z\",\"value\":{\"intValue\":0}},"
            "{\"key\":\"e\",\"value\":{}}]}"),
        0, err, sizeof(err));
    sp = first_span(m);
    const uint8_t want_trace[16] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    assert_int_equal(sp->trace_id.len, 16);
    assert_memory_equal(sp->trace_id.data, want_trace, 16);
    assert_int_equal(sp->span_id.len, 8);
    assert_int_equal(sp->span_id.data[0], 0xfe);
    assert_int_equal(sp->parent_span_id.len, 0);
    assert_int_equal(sp->kind, OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_CLIENT);
    assert_int_equal(sp->start_time_unix_nano, 1767225600000000000ull);
    assert_int_equal(sp->end_time_unix_nano, 1767225600000000007ull);
    assert_int_equal(sp->flags, 257);
    assert_int_equal(sp->status->code, 2);
    assert_int_equal(sp->n_attributes, 8);
    assert_int_equal(sp->attributes[0]->value->int_value, INT64_MIN);
    assert_int_equal(sp->attributes[1]->value->int_value, 42);
    assert_true(isnan(sp->attributes[2]->value->double_value));
    assert_true(isinf(sp->attributes[3]->value->double_value) &&
                sp->attributes[3]->value->double_value < 0);
    assert_int_equal(sp->attributes[4]->value->bytes_value.len, 5);
    assert_memory_equal(sp->attributes[4]->value->bytes_value.data, "hello", 5);
    /* URL-safe base64 without padding: "_-8" is ff ef. */
    assert_int_equal(sp->attributes[5]->value->bytes_value.len, 2);
    assert_int_equal(sp->attributes[5]->value->bytes_value.data[0], 0xff);
    assert_int_equal(sp->attributes[5]->value->bytes_value.data[1], 0xef);
    /* A oneof member set to zero is still set. */
    assert_int_equal(sp->attributes[6]->value->value_case,
                     OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE);
    assert_int_equal(sp->attributes[7]->value->value_case,
                     OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE__NOT_SET);

    /* And back to JSON: lowercase hex, strings for 64-bit, integers for enums, base64. */
    {
        size_t n = protobuf_c_message_get_packed_size(m);
        uint8_t *pb = malloc(n);
        assert_non_null(pb);
        protobuf_c_message_pack(m, pb);
        struct arena arena;
        arena_init(&arena, 1 << 20);
        struct buf out;
        buf_init(&out, 1 << 20);
        assert_int_equal(otlp_pb_to_json(OTLP_TRACES, pb, n, &arena, &out), 0);
        assert_int_equal(buf_terminate(&out), 0);
        const char *t = (const char *)out.data;
        assert_non_null(strstr(t, "\"traceId\":\"0123456789abcdef0123456789abcdef\""));
        assert_non_null(strstr(t, "\"spanId\":\"fedcba9876543210\""));
        assert_null(strstr(t, "parentSpanId"));
        assert_non_null(strstr(t, "\"kind\":3"));
        assert_non_null(strstr(t, "\"endTimeUnixNano\":\"1767225600000000007\""));
        assert_non_null(strstr(t, "\"intValue\":\"-9223372036854775808\""));
        assert_non_null(strstr(t, "\"intValue\":\"0\""));
        assert_non_null(strstr(t, "\"doubleValue\":\"NaN\""));
        assert_non_null(strstr(t, "\"doubleValue\":\"-Infinity\""));
        assert_non_null(strstr(t, "\"bytesValue\":\"aGVsbG8=\""));
        assert_non_null(strstr(t, "\"bytesValue\":\"/+8=\""));
        assert_non_null(strstr(t, "\"flags\":257"));
        assert_non_null(strstr(t, "\"status\":{\"message\":\"x\",\"code\":2}"));
        assert_non_null(strstr(t, "{\"key\":\"e\",\"value\":{}}"));
        buf_cleanup(&out);
        arena_cleanup(&arena);
        free(pb);
    }
    protobuf_c_message_free_unpacked(m, NULL);

    /* Bad ids: the message names the field. */
    static const char *const bad_ids[] = {
        SPAN_JSON("{\"traceId\":\"0123456789abcdef0123456789abcde\"}"),    /* 31 digits */
        SPAN_JSON("{\"traceId\":\"0123456789abcdef0123456789abcdefaa\"}"), /* 17 bytes */
        SPAN_JSON("{\"traceId\":\"0123456789abcdef0123456789abcdeg\"}"),   /* not hex */
        SPAN_JSON("{\"traceId\":\"AQIDBAUGBwgJCgsMDQ4PEA==\"}"),           /* base64, not hex */
        SPAN_JSON("{\"traceId\":12}"),
    };
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        json_decode(OTLP_TRACES, bad_ids[i], DLOTEL_ERR_BAD_INPUT, err, sizeof(err));
        if (strstr(err, "traceId") == NULL) {
            fail_msg("error \"%s\" does not name traceId", err);
        }
    }
    json_decode(OTLP_TRACES, SPAN_JSON("{\"parentSpanId\":\"0011\"}"), DLOTEL_ERR_BAD_INPUT, err,
                sizeof(err));
    assert_non_null(strstr(err, "parentSpanId"));
    json_decode(OTLP_LOGS,
                "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"spanId\":\"xyz\"}]}]}]}",
                DLOTEL_ERR_BAD_INPUT, err, sizeof(err));
    assert_non_null(strstr(err, "spanId"));

    /* Other wrong values. */
    static const struct {
        const char *json;
        const char *field;
    } bad_values[] = {
        {SPAN_JSON("{\"kind\":\"SPAN_KIND_NOPE\"}"), "kind"},
        {SPAN_JSON("{\"kind\":2.5}"), "kind"},
        {SPAN_JSON("{\"startTimeUnixNano\":\"-1\"}"), "startTimeUnixNano"},
        {SPAN_JSON("{\"startTimeUnixNano\":\"12x\"}"), "startTimeUnixNano"},
        {SPAN_JSON("{\"startTimeUnixNano\":\"18446744073709551616\"}"), "startTimeUnixNano"},
        {SPAN_JSON("{\"droppedAttributesCount\":4294967296}"), "droppedAttributesCount"},
        {SPAN_JSON("{\"name\":5}"), "name"},
        {SPAN_JSON("{\"attributes\":{}}"), "attributes"},
        {SPAN_JSON("{\"attributes\":[null]}"), "attributes"},
        {SPAN_JSON("{\"attributes\":[{\"value\":{\"doubleValue\":\"fast\"}}]}"), "doubleValue"},
        {SPAN_JSON("{\"attributes\":[{\"value\":{\"boolValue\":\"true\"}}]}"), "boolValue"},
        {SPAN_JSON("{\"attributes\":[{\"value\":{\"bytesValue\":\"a$b=\"}}]}"), "bytesValue"},
        {SPAN_JSON("{\"attributes\":[{\"value\":{\"stringValue\":\"a\",\"intValue\":1}}]}"),
         "Value"},
    };
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        json_decode(OTLP_TRACES, bad_values[i].json, DLOTEL_ERR_BAD_INPUT, err, sizeof(err));
        if (strstr(err, bad_values[i].field) == NULL) {
            fail_msg("error \"%s\" does not name %s", err, bad_values[i].field);
        }
    }

    /* Not JSON, not an object, invalid UTF-8, \u0000: all rejected with a message. */
    json_decode(OTLP_TRACES, "{\"resourceSpans\":[", DLOTEL_ERR_BAD_INPUT, err, sizeof(err));
    assert_non_null(strstr(err, "invalid JSON"));
    json_decode(OTLP_TRACES, "[]", DLOTEL_ERR_BAD_INPUT, err, sizeof(err));
    json_decode(OTLP_TRACES, "{\"resourceSpans\":{}}", DLOTEL_ERR_BAD_INPUT, err, sizeof(err));
    json_decode(OTLP_TRACES, SPAN_JSON("{\"name\":\"\xc3\x28\"}"), DLOTEL_ERR_BAD_INPUT, err,
                sizeof(err));
    json_decode(OTLP_TRACES, SPAN_JSON("{\"name\":\"a\\u0000b\"}"), DLOTEL_ERR_BAD_INPUT, err,
                sizeof(err));
    json_decode(OTLP_TRACES, "{} {}", DLOTEL_ERR_BAD_INPUT, err, sizeof(err));

    /* Empty and all-null requests are valid and empty. */
    m = json_decode(OTLP_METRICS, "{}", 0, err, sizeof(err));
    assert_int_equal(((MetricsRequest *)m)->n_resource_metrics, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    m = json_decode(OTLP_LOGS, "{\"resourceLogs\":null}", 0, err, sizeof(err));
    protobuf_c_message_free_unpacked(m, NULL);

    /* Duplicate keys: the last one wins. */
    m = json_decode(OTLP_TRACES, SPAN_JSON("{\"name\":\"a\",\"name\":\"b\"}"), 0, err, sizeof(err));
    assert_string_equal(first_span(m)->name, "b");
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_json_metrics_optional_and_oneofs(void **state)
{
    (void)state;
    char err[256];
    const char *json =
        "{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":["
        "{\"name\":\"h\",\"histogram\":{\"aggregationTemporality\":\"AGGREGATION_TEMPORALITY_"
        "DELTA\","
        "\"dataPoints\":[{\"count\":\"3\",\"sum\":0,\"bucketCounts\":[\"1\",2,\"0\"],"
        "\"explicitBounds\":[0.5,\"Infinity\"],\"min\":-1.5},{\"count\":1}]}},"
        "{\"name\":\"g\",\"gauge\":{\"dataPoints\":[{\"asInt\":\"-7\"},{\"asDouble\":2.5},{},"
        "{\"asDouble\":-0.0}]}},"
        "{\"name\":\"e\",\"exponentialHistogram\":{\"dataPoints\":[{\"scale\":-3,"
        "\"positive\":{\"offset\":-2,\"bucketCounts\":[\"4\",5]},\"zeroThreshold\":1e-9}]}},"
        "{\"name\":\"s\",\"summary\":{\"dataPoints\":[{\"quantileValues\":[{\"quantile\":0.99,"
        "\"value\":12}]}]}},"
        "{\"name\":\"x\",\"sum\":{\"isMonotonic\":true,\"dataPoints\":[{\"asDouble\":0,"
        "\"exemplars\":[{\"traceId\":\"00000000000000000000000000000001\",\"spanId\":"
        "\"0000000000000002\",\"asInt\":9}]}]}}]}]}]}";
    ProtobufCMessage *m = json_decode(OTLP_METRICS, json, 0, err, sizeof(err));
    MetricsRequest *r = (MetricsRequest *)m;
    Opentelemetry__Proto__Metrics__V1__Metric **ms =
        r->resource_metrics[0]->scope_metrics[0]->metrics;

    Opentelemetry__Proto__Metrics__V1__Histogram *h = ms[0]->histogram;
    assert_int_equal(ms[0]->data_case, OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM);
    assert_int_equal(h->aggregation_temporality, 1);
    assert_int_equal(h->n_data_points, 2);
    /* "sum": 0 is present (a real zero); the second point has no sum at all. */
    assert_int_equal(h->data_points[0]->_sum_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM);
    assert_true(h->data_points[0]->sum == 0.0);
    assert_int_equal(h->data_points[0]->_min_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MIN_MIN);
    assert_true(h->data_points[0]->min == -1.5);
    assert_int_equal(h->data_points[0]->_max_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___MAX__NOT_SET);
    assert_int_equal(h->data_points[1]->_sum_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM__NOT_SET);
    assert_int_equal(h->data_points[0]->n_bucket_counts, 3);
    assert_int_equal(h->data_points[0]->bucket_counts[1], 2);
    assert_true(isinf(h->data_points[0]->explicit_bounds[1]));

    Opentelemetry__Proto__Metrics__V1__Gauge *g = ms[1]->gauge;
    assert_int_equal(g->data_points[0]->value_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_INT);
    assert_int_equal(g->data_points[0]->as_int, -7);
    assert_int_equal(g->data_points[1]->value_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE);
    assert_true(g->data_points[1]->as_double == 2.5);
    assert_int_equal(g->data_points[2]->value_case,
                     OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE__NOT_SET);
    assert_true(g->data_points[3]->as_double == 0 && signbit(g->data_points[3]->as_double));

    Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint *e =
        ms[2]->exponential_histogram->data_points[0];
    assert_int_equal(e->scale, -3);
    assert_int_equal(e->positive->offset, -2);
    assert_int_equal(e->positive->n_bucket_counts, 2);
    assert_int_equal(e->positive->bucket_counts[0], 4);
    assert_true(e->zero_threshold == 1e-9);
    assert_true(ms[3]->summary->data_points[0]->quantile_values[0]->quantile == 0.99);
    assert_true(ms[4]->sum->is_monotonic);
    assert_int_equal(ms[4]->sum->data_points[0]->exemplars[0]->as_int, 9);
    assert_int_equal(ms[4]->sum->data_points[0]->exemplars[0]->trace_id.data[15], 1);

    /* Encode back: the optional sum of 0 is written, the absent one is not; a oneof double of
     * 0 is written. */
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *pb = malloc(n);
    assert_non_null(pb);
    protobuf_c_message_pack(m, pb);
    struct arena arena;
    arena_init(&arena, 1 << 20);
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(otlp_pb_to_json(OTLP_METRICS, pb, n, &arena, &out), 0);
    assert_int_equal(buf_terminate(&out), 0);
    const char *t = (const char *)out.data;
    assert_non_null(strstr(t, "\"count\":\"3\",\"sum\":0,\"bucketCounts\":[\"1\",\"2\",\"0\"],"
                              "\"explicitBounds\":[0.5,\"Infinity\"]"));
    assert_non_null(strstr(t, "\"min\":-1.5"));
    assert_non_null(strstr(t, "{\"count\":\"1\"}"));
    assert_non_null(strstr(t, "\"asDouble\":0"));
    assert_non_null(strstr(t, "\"asInt\":\"-7\""));
    /* Negative zero keeps its sign through JSON ("-0" would read back as the integer 0). */
    assert_non_null(strstr(t, "{\"asDouble\":-0.0}"));
    assert_non_null(strstr(t, "\"zeroThreshold\":1e-09"));
    assert_non_null(strstr(t, "\"traceId\":\"00000000000000000000000000000001\""));

    /* And the JSON decodes to the same bytes again. */
    struct buf again;
    buf_init(&again, 1 << 20);
    arena_reset(&arena);
    assert_int_equal(otlp_json_to_pb(OTLP_METRICS, t, out.len, &arena, &again, err, sizeof(err)),
                     0);
    assert_int_equal(again.len, n);
    assert_memory_equal(again.data, pb, n);

    buf_cleanup(&again);
    buf_cleanup(&out);
    arena_cleanup(&arena);
    free(pb);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_json_depth_limit(void **state)
{
    (void)state;
    char err[256];
    /* The same nesting as test_scan_depth_limit, in JSON: the body AnyValue is at depth 4,
     * each array adds two levels. */
    for (int extra = 0; extra <= 1; extra++) {
        unsigned depth = OTLP_MAX_DEPTH + 2 * (unsigned)extra;
        struct buf j;
        buf_init(&j, 1 << 20);
        assert_int_equal(
            buf_printf(&j, "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":"), 0);
        for (unsigned d = 4; d < depth; d += 2) {
            assert_int_equal(buf_printf(&j, "{\"arrayValue\":{\"values\":["), 0);
        }
        assert_int_equal(buf_printf(&j, "{\"stringValue\":\"x\"}"), 0);
        for (unsigned d = 4; d < depth; d += 2) {
            assert_int_equal(buf_printf(&j, "]}}"), 0);
        }
        assert_int_equal(buf_printf(&j, "}]}]}]}"), 0);
        assert_int_equal(buf_terminate(&j), 0);
        ProtobufCMessage *m = json_decode(OTLP_LOGS, (const char *)j.data,
                                          extra ? DLOTEL_ERR_BAD_INPUT : 0, err, sizeof(err));
        if (extra) {
            assert_non_null(strstr(err, "nested"));
        } else {
            protobuf_c_message_free_unpacked(m, NULL);
        }
        buf_cleanup(&j);
    }
}

static void test_json_limits(void **state)
{
    (void)state;
    size_t json_len;
    uint8_t *json = read_payload(OTLP_TRACES, "json", &json_len);
    char err[256];
    struct arena arena;
    struct buf out;

    /* The output buffer's limit: refused, and |out| is left as it was. */
    arena_init(&arena, 64u << 20);
    buf_init(&out, 1000);
    assert_int_equal(buf_append(&out, "keep", 4), 0);
    assert_int_equal(
        otlp_json_to_pb(OTLP_TRACES, (const char *)json, json_len, &arena, &out, err, sizeof(err)),
        DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 4);
    buf_cleanup(&out);
    arena_cleanup(&arena);

    /* The arena's limit. */
    arena_init(&arena, 64u << 10);
    buf_init(&out, 16u << 20);
    assert_int_equal(
        otlp_json_to_pb(OTLP_TRACES, (const char *)json, json_len, &arena, &out, err, sizeof(err)),
        DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    assert_non_null(strstr(err, "too large"));
    buf_cleanup(&out);
    arena_cleanup(&arena);
    free(json);

    /* The JSON tree jansson would build is charged to the arena before parsing: a flat array of
     * a million zeros (2 MB of text, ~32 MB of tree) in an unknown field. */
    struct buf zeros;
    buf_init(&zeros, 4u << 20);
    assert_int_equal(buf_printf(&zeros, "{\"resourceSpans\":[],\"ignored\":[0"), 0);
    for (int i = 1; i < 1000000; i++) {
        assert_int_equal(buf_append(&zeros, ",0", 2), 0);
    }
    assert_int_equal(buf_append(&zeros, "]}", 2), 0);
    arena_init(&arena, 64u << 20);
    buf_init(&out, 1 << 20);
    assert_int_equal(otlp_json_to_pb(OTLP_TRACES, (const char *)zeros.data, zeros.len, &arena, &out,
                                     err, sizeof(err)),
                     DLOTEL_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "too large"));
    arena_cleanup(&arena);
    /* With room for it, the same text decodes (to an empty request: the key is unknown). */
    arena_init(&arena, 128u << 20);
    assert_int_equal(otlp_json_to_pb(OTLP_TRACES, (const char *)zeros.data, zeros.len, &arena, &out,
                                     err, sizeof(err)),
                     0);
    assert_int_equal(out.len, 0);
    arena_cleanup(&arena);
    buf_cleanup(&out);
    buf_cleanup(&zeros);

    /* pb_to_json: arena and output limits, and bad protobuf. */
    size_t pb_len;
    uint8_t *pb = read_payload(OTLP_LOGS, "pb", &pb_len);
    arena_init(&arena, 64u << 10);
    buf_init(&out, 16u << 20);
    assert_int_equal(otlp_pb_to_json(OTLP_LOGS, pb, pb_len, &arena, &out), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    buf_cleanup(&out);
    arena_cleanup(&arena);
    arena_init(&arena, 64u << 20);
    buf_init(&out, 4096);
    assert_int_equal(otlp_pb_to_json(OTLP_LOGS, pb, pb_len, &arena, &out), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    assert_int_equal(otlp_pb_to_json(OTLP_LOGS, pb, pb_len - 1, &arena, &out),
                     DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&out);
    arena_cleanup(&arena);
    free(pb);

    /* Empty request: "{}". */
    arena_init(&arena, 1 << 16);
    buf_init(&out, 64);
    assert_int_equal(otlp_pb_to_json(OTLP_METRICS, (const uint8_t *)"", 0, &arena, &out), 0);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "{}", 2);
    buf_cleanup(&out);
    arena_cleanup(&arena);
}

/* ---- responses and status ----------------------------------------------------------------- */

static void test_response_encode(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 16);

    /* Everything accepted: the empty response. */
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 0, NULL, false, &b), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 0, NULL, true, &b), 0);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "{}", 2);
    buf_reset(&b);

    /* Partial success, protobuf, each signal. */
    const char *msg = "dropped: queue full \"now\"";
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 5, msg, false, &b), 0);
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *tr =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
            NULL, b.len, b.data);
    assert_non_null(tr);
    assert_non_null(tr->partial_success);
    assert_int_equal(tr->partial_success->rejected_spans, 5);
    assert_string_equal(tr->partial_success->error_message, msg);
    opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(tr,
                                                                                             NULL);
    buf_reset(&b);

    assert_int_equal(otlp_response_encode(OTLP_METRICS, 300, NULL, false, &b), 0);
    Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceResponse *mr =
        opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__unpack(
            NULL, b.len, b.data);
    assert_non_null(mr);
    assert_int_equal(mr->partial_success->rejected_data_points, 300);
    assert_string_equal(mr->partial_success->error_message, "");
    opentelemetry__proto__collector__metrics__v1__export_metrics_service_response__free_unpacked(
        mr, NULL);
    buf_reset(&b);

    assert_int_equal(otlp_response_encode(OTLP_LOGS, 0, "warning only", false, &b), 0);
    Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceResponse *lr =
        opentelemetry__proto__collector__logs__v1__export_logs_service_response__unpack(NULL, b.len,
                                                                                        b.data);
    assert_non_null(lr);
    assert_int_equal(lr->partial_success->rejected_log_records, 0);
    assert_string_equal(lr->partial_success->error_message, "warning only");
    opentelemetry__proto__collector__logs__v1__export_logs_service_response__free_unpacked(lr,
                                                                                           NULL);
    buf_reset(&b);

    /* Partial success, JSON: rejected count as a decimal string, message escaped. */
    static const char *const keys[] = {"rejectedSpans", "rejectedDataPoints", "rejectedLogRecords"};
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        buf_reset(&b);
        assert_int_equal(otlp_response_encode((enum otlp_signal)i, 7, msg, true, &b), 0);
        json_error_t jerr;
        json_t *root = json_loadb((const char *)b.data, b.len, 0, &jerr);
        assert_non_null(root);
        json_t *ps = json_object_get(root, "partialSuccess");
        assert_non_null(ps);
        assert_string_equal(json_string_value(json_object_get(ps, keys[i])), "7");
        assert_string_equal(json_string_value(json_object_get(ps, "errorMessage")), msg);
        json_decref(root);
    }

    /* A message that is not UTF-8 still gives valid output. */
    buf_reset(&b);
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 1, "bad \xff byte", true, &b), 0);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)b.data, b.len, 0, &jerr);
    assert_non_null(root);
    json_decref(root);
    buf_reset(&b);
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 1, "bad \xff byte", false, &b), 0);
    /* Invalid bytes become '?', one for one, so strict protobuf readers accept the string. */
    tr = opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
        NULL, b.len, b.data);
    assert_non_null(tr);
    assert_string_equal(tr->partial_success->error_message, "bad ? byte");
    opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(tr,
                                                                                             NULL);

    /* The buffer's limit is honoured and leaves it unchanged. */
    struct buf small;
    buf_init(&small, 8);
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 1, msg, true, &small), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(small.len, 0);
    assert_int_equal(otlp_response_encode(OTLP_TRACES, 1, msg, false, &small),
                     DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(small.len, 0);
    buf_cleanup(&small);
    buf_cleanup(&b);
}

static void test_status_encode(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 16);

    assert_int_equal(otlp_status_encode(3, "span 2: trace id is not 16 bytes", false, &b), 0);
    Google__Rpc__Status *st = google__rpc__status__unpack(NULL, b.len, b.data);
    assert_non_null(st);
    assert_int_equal(st->code, 3);
    assert_string_equal(st->message, "span 2: trace id is not 16 bytes");
    assert_int_equal(st->n_details, 0);
    google__rpc__status__free_unpacked(st, NULL);
    buf_reset(&b);

    /* Negative codes are int32 on the wire, sign-extended. */
    assert_int_equal(otlp_status_encode(-2, NULL, false, &b), 0);
    st = google__rpc__status__unpack(NULL, b.len, b.data);
    assert_non_null(st);
    assert_int_equal(st->code, -2);
    google__rpc__status__free_unpacked(st, NULL);
    buf_reset(&b);

    assert_int_equal(otlp_status_encode(8, "quota \"exceeded\"\n\x01", true, &b), 0);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)b.data, b.len, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "code")), 8);
    assert_string_equal(json_string_value(json_object_get(root, "message")),
                        "quota \"exceeded\"\n\x01");
    json_decref(root);
    buf_reset(&b);

    assert_int_equal(otlp_status_encode(0, NULL, true, &b), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "{\"code\":0}", 10);
    buf_reset(&b);
    assert_int_equal(otlp_status_encode(0, NULL, false, &b), 0);
    assert_int_equal(b.len, 0);
    buf_cleanup(&b);
}

/* ---- otlp_unpack -------------------------------------------------------------------------- */

static void test_unpack(void **state)
{
    (void)state;
    size_t len;
    uint8_t *pb = read_payload(OTLP_TRACES, "pb", &len);
    struct arena arena;
    arena_init(&arena, 64u << 20);
    ProtobufCMessage *m = NULL;
    struct otlp_error err;
    assert_int_equal(otlp_unpack(OTLP_TRACES, pb, len, &arena, &m, &err), 0);
    assert_non_null(m);
    TraceRequest *r = (TraceRequest *)m;
    assert_int_equal(r->n_resource_spans, 3);
    assert_int_equal(r->resource_spans[0]->scope_spans[0]->spans[0]->trace_id.len, 16);
    /* A broken request is rejected before protobuf-c sees it, and *out stays untouched. */
    ProtobufCMessage *untouched = (ProtobufCMessage *)&arena;
    arena_reset(&arena);
    assert_int_equal(otlp_unpack(OTLP_TRACES, pb, len - 3, &arena, &untouched, &err),
                     DLOTEL_ERR_BAD_INPUT);
    assert_ptr_equal(untouched, (ProtobufCMessage *)&arena);
    /* A small arena: TOO_LARGE. */
    struct arena tiny;
    arena_init(&tiny, 4096);
    assert_int_equal(otlp_unpack(OTLP_TRACES, pb, len, &tiny, &m, &err), DLOTEL_ERR_TOO_LARGE);
    arena_cleanup(&tiny);
    arena_cleanup(&arena);
    free(pb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_names),
        cmocka_unit_test(test_scan_payloads),
        cmocka_unit_test(test_scan_truncations),
        cmocka_unit_test(test_scan_malformed),
        cmocka_unit_test(test_scan_error_offset),
        cmocka_unit_test(test_scan_depth_limit),
        cmocka_unit_test(test_json_payloads_match_pb),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_edge_cases),
        cmocka_unit_test(test_json_metrics_optional_and_oneofs),
        cmocka_unit_test(test_json_depth_limit),
        cmocka_unit_test(test_json_limits),
        cmocka_unit_test(test_response_encode),
        cmocka_unit_test(test_status_encode),
        cmocka_unit_test(test_unpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
