/*
 * `dlotel smoke-test`: the end-to-end check that a sink works, as a user would do it by hand. It
 * sends one trace (a root span and a child), one log record linked to it and one gauge point over
 * OTLP/HTTP protobuf to the API's own ingest path, under a service name nobody else uses, then
 * polls every read path until each returns what was sent or the deadline passes:
 *
 *   GET  /traces/<id>                     two spans, the child's parent is the root
 *   GET  /traces/?service_name=<svc>      the list has the trace, with 2 spans
 *   GET  /logs/?trace_id=<id>             the log record, linked to the child span
 *   GET  /metrics/?name=..&service_name=  the point, with its value
 *   POST /query/  (with a bound $1)       count(*) of the trace's spans is 2
 *   GET  /services                        the service is listed
 *
 * Ingest acknowledges only what is stored, so the checks should pass on the first poll; polling
 * covers a sink that applies writes asynchronously. One line per check, exit 0 only if all pass.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "otlp/otlp.h"
#include "otlp/otlp_pb.h"

#define SMOKE_METRIC   "dlotel.smoke.value"
#define SMOKE_VALUE    42.5
#define SMOKE_POLL_NS  (250u * 1000000u)
#define SMOKE_SEEN_MAX 200

struct smoke {
    char trace_id[33];
    char root_id[17];
    char child_id[17];
    char service[32];
    char body[96];
    uint8_t tid[16], rid[8], cid[8];
    uint64_t now_ns;
};

static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int smoke_init(struct smoke *s)
{
    memset(s, 0, sizeof(*s));
    uint8_t r[36];
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
        if (n <= 0) {
            return -1;
        }
        got += (size_t)n;
    }
    memcpy(s->tid, r, 16);
    memcpy(s->rid, r + 16, 8);
    memcpy(s->cid, r + 24, 8);
    /* Ids of all zeros are invalid in OTLP; the odds are nil, but make it impossible. */
    s->tid[15] |= 1;
    s->rid[7] |= 1;
    s->cid[7] |= 2;
    hex(s->trace_id, s->tid, 16);
    hex(s->root_id, s->rid, 8);
    hex(s->child_id, s->cid, 8);
    char suffix[9];
    hex(suffix, r + 32, 4);
    snprintf(s->service, sizeof(s->service), "dlotel-smoke-%s", suffix);
    snprintf(s->body, sizeof(s->body), "dlotel smoke test %s", s->trace_id);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return 0;
}

/* The resource and scope every request shares. */
struct common {
    Opentelemetry__Proto__Common__V1__AnyValue svc_value;
    Opentelemetry__Proto__Common__V1__KeyValue svc_kv;
    Opentelemetry__Proto__Common__V1__KeyValue *attrs[1];
    Opentelemetry__Proto__Resource__V1__Resource resource;
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope;
};

static void common_init(struct common *c, const struct smoke *s)
{
    opentelemetry__proto__common__v1__any_value__init(&c->svc_value);
    c->svc_value.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    c->svc_value.string_value = (char *)s->service;
    opentelemetry__proto__common__v1__key_value__init(&c->svc_kv);
    c->svc_kv.key = "service.name";
    c->svc_kv.value = &c->svc_value;
    c->attrs[0] = &c->svc_kv;
    opentelemetry__proto__resource__v1__resource__init(&c->resource);
    c->resource.n_attributes = 1;
    c->resource.attributes = c->attrs;
    opentelemetry__proto__common__v1__instrumentation_scope__init(&c->scope);
    c->scope.name = "dlotel-smoke-test";
    c->scope.version = DLOTEL_VERSION;
}

/* Appends the tag of length-delimited field |field| (below 16) and the length |n|. */
static int put_len_field(struct buf *out, unsigned field, size_t n)
{
    int rc = otlp_put_varint(out, (uint64_t)field << 3 | 2);
    return rc == 0 ? otlp_put_varint(out, n) : rc;
}

/* The bytes of a length-delimited field (below 16) holding |n| bytes. */
static size_t framed_size(size_t n)
{
    return 1 + otlp_varint_size(n) + n;
}

/* Appends |m| packed, |n| bytes. Returns 0 or a buf error. */
static int put_message(struct buf *out, const ProtobufCMessage *m, size_t n)
{
    int rc = buf_reserve(out, n);
    if (rc == 0) {
        out->len += protobuf_c_message_pack(m, out->data + out->len);
    }
    return rc;
}

/*
 * Packs the request of one signal holding |scope| (a ScopeSpans, ScopeLogs or ScopeMetrics) under
 * |c|'s resource into |out|. The three requests nest alike with the same field numbers (request:
 * 1 resources; Resource{Spans,Logs,Metrics}: 1 resource, 2 scopes), only their C types differ,
 * so the two outer levels are framed here once, byte for byte as protobuf-c would write them.
 * Returns 0 or a buf error.
 */
static int pack_request(const struct common *c, const ProtobufCMessage *scope, struct buf *out)
{
    size_t nres = protobuf_c_message_get_packed_size(&c->resource.base);
    size_t nscope = protobuf_c_message_get_packed_size(scope);
    int rc = put_len_field(out, 1, framed_size(nres) + framed_size(nscope));
    if (rc == 0) {
        rc = put_len_field(out, 1, nres);
    }
    if (rc == 0) {
        rc = put_message(out, &c->resource.base, nres);
    }
    if (rc == 0) {
        rc = put_len_field(out, 2, nscope);
    }
    if (rc == 0) {
        rc = put_message(out, scope, nscope);
    }
    return rc;
}

static int encode_traces(const struct smoke *s, struct buf *out)
{
    struct common c;
    common_init(&c, s);
    Opentelemetry__Proto__Trace__V1__Status ok;
    opentelemetry__proto__trace__v1__status__init(&ok);
    ok.code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_OK;
    Opentelemetry__Proto__Trace__V1__Span root, child;
    opentelemetry__proto__trace__v1__span__init(&root);
    opentelemetry__proto__trace__v1__span__init(&child);
    root.trace_id = (ProtobufCBinaryData){16, (uint8_t *)s->tid};
    root.span_id = (ProtobufCBinaryData){8, (uint8_t *)s->rid};
    root.name = "smoke-root";
    root.kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER;
    root.start_time_unix_nano = s->now_ns - 50000000u;
    root.end_time_unix_nano = s->now_ns;
    root.status = &ok;
    child.trace_id = root.trace_id;
    child.span_id = (ProtobufCBinaryData){8, (uint8_t *)s->cid};
    child.parent_span_id = root.span_id;
    child.name = "smoke-child";
    child.kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL;
    child.start_time_unix_nano = s->now_ns - 40000000u;
    child.end_time_unix_nano = s->now_ns - 10000000u;
    Opentelemetry__Proto__Trace__V1__Span *spans[2] = {&root, &child};
    Opentelemetry__Proto__Trace__V1__ScopeSpans ss;
    opentelemetry__proto__trace__v1__scope_spans__init(&ss);
    ss.scope = &c.scope;
    ss.n_spans = 2;
    ss.spans = spans;
    return pack_request(&c, &ss.base, out);
}

static int encode_logs(const struct smoke *s, struct buf *out)
{
    struct common c;
    common_init(&c, s);
    Opentelemetry__Proto__Common__V1__AnyValue body;
    opentelemetry__proto__common__v1__any_value__init(&body);
    body.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    body.string_value = (char *)s->body;
    Opentelemetry__Proto__Logs__V1__LogRecord lr;
    opentelemetry__proto__logs__v1__log_record__init(&lr);
    lr.time_unix_nano = s->now_ns - 20000000u;
    lr.observed_time_unix_nano = s->now_ns;
    lr.severity_number = OPENTELEMETRY__PROTO__LOGS__V1__SEVERITY_NUMBER__SEVERITY_NUMBER_INFO;
    lr.severity_text = "INFO";
    lr.body = &body;
    lr.trace_id = (ProtobufCBinaryData){16, (uint8_t *)s->tid};
    lr.span_id = (ProtobufCBinaryData){8, (uint8_t *)s->cid};
    Opentelemetry__Proto__Logs__V1__LogRecord *lrs[1] = {&lr};
    Opentelemetry__Proto__Logs__V1__ScopeLogs sl;
    opentelemetry__proto__logs__v1__scope_logs__init(&sl);
    sl.scope = &c.scope;
    sl.n_log_records = 1;
    sl.log_records = lrs;
    return pack_request(&c, &sl.base, out);
}

static int encode_metrics(const struct smoke *s, struct buf *out)
{
    struct common c;
    common_init(&c, s);
    Opentelemetry__Proto__Metrics__V1__NumberDataPoint dp;
    opentelemetry__proto__metrics__v1__number_data_point__init(&dp);
    dp.time_unix_nano = s->now_ns;
    dp.value_case = OPENTELEMETRY__PROTO__METRICS__V1__NUMBER_DATA_POINT__VALUE_AS_DOUBLE;
    dp.as_double = SMOKE_VALUE;
    Opentelemetry__Proto__Metrics__V1__NumberDataPoint *dps[1] = {&dp};
    Opentelemetry__Proto__Metrics__V1__Gauge g;
    opentelemetry__proto__metrics__v1__gauge__init(&g);
    g.n_data_points = 1;
    g.data_points = dps;
    Opentelemetry__Proto__Metrics__V1__Metric m;
    opentelemetry__proto__metrics__v1__metric__init(&m);
    m.name = SMOKE_METRIC;
    m.description = "A gauge sent by dlotel smoke-test";
    m.unit = "1";
    m.data_case = OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE;
    m.gauge = &g;
    Opentelemetry__Proto__Metrics__V1__Metric *ms[1] = {&m};
    Opentelemetry__Proto__Metrics__V1__ScopeMetrics sm;
    opentelemetry__proto__metrics__v1__scope_metrics__init(&sm);
    sm.scope = &c.scope;
    sm.n_metrics = 1;
    sm.metrics = ms;
    return pack_request(&c, &sm.base, out);
}

/* ---- the checks --------------------------------------------------------------------------- */

enum check_state {
    CHECK_PENDING,
    CHECK_OK,
};

struct check {
    const char *what;
    /* One poll: 1 passed, 0 not yet (|seen| says what was there), -EXIT_AUTH refused. */
    int (*run)(struct client_http *h, const struct smoke *s, char *seen, size_t seenlen);
    enum check_state state;
    char seen[SMOKE_SEEN_MAX];
};

/* Runs a GET or POST; returns 1 with |*out| parsed on 2xx, 0 with |seen| filled otherwise, or
 * -EXIT_AUTH when the API refused the token (no point in polling on). */
static int fetch(struct client_http *h, const char *method, const char *path, const char *query,
                 const char *body, json_t **out, char *seen, size_t seenlen)
{
    struct client_response r;
    *out = NULL;
    int rc = client_http_request(h, method, path, query, body, body != NULL ? strlen(body) : 0,
                                 body != NULL ? "application/json" : NULL, &r);
    if (rc != 0) {
        snprintf(seen, seenlen, "no answer (%s)",
                 rc == EXIT_CONNECT ? "cannot connect" : "transport error");
        client_response_cleanup(&r);
        return 0;
    }
    if (r.status == 401 || r.status == 403) {
        client_response_cleanup(&r);
        return -EXIT_AUTH;
    }
    json_t *j = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    if (r.status < 200 || r.status >= 300) {
        const char *e = json_string_value(json_object_get(j, "error"));
        snprintf(seen, seenlen, "HTTP %ld%s%s", r.status, e != NULL ? ": " : "",
                 e != NULL ? e : "");
        json_decref(j);
        client_response_cleanup(&r);
        return 0;
    }
    client_response_cleanup(&r);
    if (!json_is_object(j)) {
        snprintf(seen, seenlen, "an answer that is not a JSON object");
        json_decref(j);
        return 0;
    }
    *out = j;
    return 1;
}

static const char *str_of(const json_t *row, const char *key)
{
    const char *v = json_string_value(json_object_get(row, key));
    return v != NULL ? v : "";
}

static int check_trace(struct client_http *h, const struct smoke *s, char *seen, size_t seenlen)
{
    char path[64];
    snprintf(path, sizeof(path), "/traces/%s", s->trace_id);
    json_t *j;
    int rc = fetch(h, "GET", path, NULL, NULL, &j, seen, seenlen);
    if (rc != 1) {
        return rc;
    }
    json_t *data = json_object_get(j, "data");
    const json_t *root = NULL, *child = NULL;
    size_t i;
    json_t *row;
    json_array_foreach(data, i, row)
    {
        if (strcmp(str_of(row, "span_id"), s->root_id) == 0) {
            root = row;
        } else if (strcmp(str_of(row, "span_id"), s->child_id) == 0) {
            child = row;
        }
    }
    size_t n = json_array_size(data);
    rc = 0;
    if (n != 2 || root == NULL || child == NULL) {
        snprintf(seen, seenlen, "%zu span%s%s%s", n, n == 1 ? "" : "s",
                 root == NULL ? ", no root span" : "", child == NULL ? ", no child span" : "");
    } else if (strcmp(str_of(child, "parent_span_id"), s->root_id) != 0 ||
               str_of(root, "parent_span_id")[0] != '\0') {
        snprintf(seen, seenlen, "2 spans, but the child's parent is '%s' and the root's '%s'",
                 str_of(child, "parent_span_id"), str_of(root, "parent_span_id"));
    } else if (strcmp(str_of(root, "service_name"), s->service) != 0) {
        snprintf(seen, seenlen, "2 spans, but service_name '%s'", str_of(root, "service_name"));
    } else {
        snprintf(seen, seenlen, "2 spans, smoke-child under smoke-root");
        rc = 1;
    }
    json_decref(j);
    return rc;
}

static int check_trace_list(struct client_http *h, const struct smoke *s, char *seen,
                            size_t seenlen)
{
    struct buf q;
    buf_init(&q, 4096);
    json_t *j = NULL;
    int rc = client_query_add(&q, "service_name", s->service);
    if (rc == 0) {
        rc = buf_terminate(&q);
    }
    rc = rc == 0 ? fetch(h, "GET", "/traces/", (const char *)q.data, NULL, &j, seen, seenlen) : 0;
    buf_cleanup(&q);
    if (rc != 1) {
        return rc;
    }
    rc = 0;
    snprintf(seen, seenlen, "%zu trace(s) of the service, not this one",
             json_array_size(json_object_get(j, "data")));
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(j, "data"), i, row)
    {
        if (strcmp(str_of(row, "trace_id"), s->trace_id) == 0) {
            double spans = client_json_number(json_object_get(row, "span_count"));
            if (spans == 2 && strcmp(str_of(row, "span_name"), "smoke-root") == 0) {
                snprintf(seen, seenlen, "listed, root smoke-root, 2 spans");
                rc = 1;
            } else {
                snprintf(seen, seenlen, "listed with root '%s' and %g spans",
                         str_of(row, "span_name"), spans);
            }
        }
    }
    json_decref(j);
    return rc;
}

static int check_log(struct client_http *h, const struct smoke *s, char *seen, size_t seenlen)
{
    char q[80];
    snprintf(q, sizeof(q), "trace_id=%s", s->trace_id);
    json_t *j;
    int rc = fetch(h, "GET", "/logs/", q, NULL, &j, seen, seenlen);
    if (rc != 1) {
        return rc;
    }
    rc = 0;
    json_t *data = json_object_get(j, "data");
    snprintf(seen, seenlen, "%zu log record(s), none with the body sent", json_array_size(data));
    size_t i;
    json_t *row;
    json_array_foreach(data, i, row)
    {
        if (strcmp(str_of(row, "body"), s->body) == 0) {
            if (strcmp(str_of(row, "span_id"), s->child_id) == 0) {
                snprintf(seen, seenlen, "found, linked to span %s", s->child_id);
                rc = 1;
            } else {
                snprintf(seen, seenlen, "found, but its span_id is '%s'", str_of(row, "span_id"));
            }
        }
    }
    json_decref(j);
    return rc;
}

static int check_metric(struct client_http *h, const struct smoke *s, char *seen, size_t seenlen)
{
    struct buf q;
    buf_init(&q, 4096);
    json_t *j = NULL;
    int rc = client_query_add(&q, "name", SMOKE_METRIC);
    if (rc == 0) {
        rc = client_query_add(&q, "service_name", s->service);
    }
    if (rc == 0) {
        rc = buf_terminate(&q);
    }
    rc = rc == 0 ? fetch(h, "GET", "/metrics/", (const char *)q.data, NULL, &j, seen, seenlen) : 0;
    buf_cleanup(&q);
    if (rc != 1) {
        return rc;
    }
    json_t *data = json_object_get(j, "data");
    json_t *row = json_array_get(data, 0);
    rc = 0;
    if (json_array_size(data) != 1) {
        snprintf(seen, seenlen, "%zu points", json_array_size(data));
    } else if (client_json_number(json_object_get(row, "value")) != SMOKE_VALUE) {
        char *v = client_json_text(json_object_get(row, "value"));
        snprintf(seen, seenlen, "1 point, value %s instead of %g", v != NULL ? v : "?",
                 SMOKE_VALUE);
        free(v);
    } else {
        snprintf(seen, seenlen, "1 point, value %g", SMOKE_VALUE);
        rc = 1;
    }
    json_decref(j);
    return rc;
}

static int check_query(struct client_http *h, const struct smoke *s, char *seen, size_t seenlen)
{
    char body[192];
    snprintf(body, sizeof(body),
             "{\"sql\":\"SELECT count(*) AS n FROM spans WHERE trace_id = $1\","
             "\"params\":[\"%s\"]}",
             s->trace_id);
    json_t *j;
    int rc = fetch(h, "POST", "/query/", NULL, body, &j, seen, seenlen);
    if (rc != 1) {
        return rc;
    }
    json_t *n = json_object_get(json_array_get(json_object_get(j, "data"), 0), "n");
    rc = 0;
    if (n != NULL && client_json_number(n) == 2) {
        snprintf(seen, seenlen, "count(*) = 2 with $1 bound");
        rc = 1;
    } else {
        char *v = n != NULL ? client_json_text(n) : NULL;
        snprintf(seen, seenlen, "n = %s", v != NULL ? v : "(no row)");
        free(v);
    }
    json_decref(j);
    return rc;
}

static int check_services(struct client_http *h, const struct smoke *s, char *seen, size_t seenlen)
{
    json_t *j;
    int rc = fetch(h, "GET", "/services", NULL, NULL, &j, seen, seenlen);
    if (rc != 1) {
        return rc;
    }
    rc = 0;
    json_t *data = json_object_get(j, "data");
    snprintf(seen, seenlen, "%zu services, not %s", json_array_size(data), s->service);
    size_t i;
    json_t *v;
    json_array_foreach(data, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s->service) == 0) {
            snprintf(seen, seenlen, "%s listed", s->service);
            rc = 1;
        }
    }
    json_decref(j);
    return rc;
}

/* Sends one request; prints its line. Returns 1 sent, 0 failed, or -EXIT_AUTH/-EXIT_CONNECT. */
static int send_one(struct client_http *h, const char *signal, const struct buf *body,
                    const char *what)
{
    char path[32];
    snprintf(path, sizeof(path), "/otlp/v1/%s", signal);
    struct client_response r;
    int rc = client_http_request(h, "POST", path, NULL, body->data, body->len,
                                 "application/x-protobuf", &r);
    if (rc != 0) {
        client_response_cleanup(&r);
        printf("FAIL  send %s: no answer from %s%s\n", signal, client_http_base(h), path);
        return rc == EXIT_CONNECT ? -EXIT_CONNECT : 0;
    }
    int out = 1;
    if (r.status == 401 || r.status == 403) {
        printf("FAIL  send %s: HTTP %ld, the API refused the token\n", signal, r.status);
        out = -EXIT_AUTH;
    } else if (r.status < 200 || r.status >= 300) {
        json_t *j = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
        const char *e = json_string_value(json_object_get(j, "error"));
        if (e == NULL) {
            e = json_string_value(json_object_get(j, "message"));
        }
        printf("FAIL  send %s: HTTP %ld%s%s\n", signal, r.status, e != NULL ? ": " : "",
               e != NULL ? e : "");
        json_decref(j);
        out = 0;
    } else {
        printf("ok    send %s: %s, HTTP %ld\n", signal, what, r.status);
    }
    fflush(stdout);
    client_response_cleanup(&r);
    return out;
}

int client_smoke_run(const struct client_args *a, struct client_http *h)
{
    struct smoke s;
    if (smoke_init(&s) != 0) {
        fprintf(stderr, "dlotel: smoke-test: no random bytes for the ids\n");
        return EXIT_RUNTIME;
    }
    uint64_t deadline = time_monotonic_nano() + a->timeout_ns;
    printf("smoke test of %s: service %s, trace %s\n", client_http_base(h), s.service, s.trace_id);
    fflush(stdout);

    struct buf req;
    buf_init(&req, 1u << 20);
    static const char *const signals[3] = {"traces", "logs", "metrics"};
    static const char *const whats[3] = {"2 spans (smoke-root, smoke-child)",
                                         "1 log record linked to smoke-child",
                                         "1 gauge point dlotel.smoke.value"};
    int (*const enc[3])(const struct smoke *, struct buf *) = {encode_traces, encode_logs,
                                                               encode_metrics};
    bool all_sent = true;
    for (size_t i = 0; i < 3; i++) {
        buf_reset(&req);
        if (enc[i](&s, &req) != 0) {
            buf_cleanup(&req);
            fprintf(stderr, "dlotel: smoke-test: out of memory\n");
            return EXIT_RUNTIME;
        }
        int rc = send_one(h, signals[i], &req, whats[i]);
        if (rc < 0) {
            buf_cleanup(&req);
            if (rc == -EXIT_CONNECT) {
                fprintf(stderr, "dlotel: is the API running there? Start one with `dlotel "
                                "serve`, or point --url or DATALAYER_OTEL_URL at it\n");
            }
            return -rc;
        }
        all_sent = all_sent && rc == 1;
    }
    buf_cleanup(&req);

    struct check checks[] = {
        {"trace", check_trace, CHECK_PENDING, ""},
        {"trace list", check_trace_list, CHECK_PENDING, ""},
        {"log", check_log, CHECK_PENDING, ""},
        {"metric", check_metric, CHECK_PENDING, ""},
        {"sql", check_query, CHECK_PENDING, ""},
        {"services", check_services, CHECK_PENDING, ""},
    };
    size_t n = sizeof(checks) / sizeof(checks[0]);
    size_t passed = 0;
    client_http_set_quiet(h, true);
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            if (checks[i].state == CHECK_OK) {
                continue;
            }
            int rc = checks[i].run(h, &s, checks[i].seen, sizeof(checks[i].seen));
            if (rc < 0) {
                printf("FAIL  %s: the API refused the token\n", checks[i].what);
                return -rc;
            }
            if (rc == 1) {
                checks[i].state = CHECK_OK;
                passed++;
                printf("ok    %s: %s\n", checks[i].what, checks[i].seen);
                fflush(stdout);
            }
        }
        if (passed == n || time_monotonic_nano() + SMOKE_POLL_NS > deadline) {
            break;
        }
        struct timespec ts = {0, SMOKE_POLL_NS};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (checks[i].state != CHECK_OK) {
            printf("FAIL  %s: %s\n", checks[i].what,
                   checks[i].seen[0] != '\0' ? checks[i].seen : "not checked");
        }
    }
    bool ok = all_sent && passed == n;
    printf("%s: %zu of %zu checks passed\n", ok ? "PASS" : "FAIL", passed, n);
    fflush(stdout);
    return ok ? 0 : EXIT_RUNTIME;
}
