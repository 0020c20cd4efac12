/*
 * The query API server (api.h): one http_server listener, routing under /api/otel/v1, auth,
 * CORS, the worker pool for the sink's blocking calls, OTLP/HTTP ingest and the WebSocket hand
 * off to the stream (api_stream.h).
 *
 * Lifetimes: requests that wait for a worker or for the sink hold a pointer to the server.
 * api_server_free() stops the listener, joins the workers (so no job runs afterwards) and
 * answers what they finished; ingest requests still waiting for the sink's commit keep the
 * server's memory until their answer comes (the sink exporter answers everything it holds when
 * it is destroyed), so the last of them frees it.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "api/api.h"
#include "api/api_auth.h"
#include "api/api_internal.h"
#include "api/api_params.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "net/http.h"
#include "otlp/otlp.h"
#include "receiver/receiver.h"
#include "sink/sink_module.h"

#ifdef DLOTEL_API_HAVE_STREAM
#include "api/api_stream.h"
#endif

#define API_PREFIX      "/api/otel/v1"
#define API_PATH_MAX    2048
#define DEFAULT_THREADS 2
#define THREADS_MAX     16
/* Jobs waiting for a worker before new ones are answered 503. */
#define QUEUE_MAX 256
/* The JSON body of POST /query: its SQL is capped by the sink (64 KiB), params by us. */
#define QUERY_BODY_MAX ((size_t)1024 * 1024)
#define ARENA_MAX      ((size_t)256 * 1024 * 1024)
#define KEEP_BYTES     ((size_t)4 * 1024 * 1024)

#define CT_JSON "application/json"

struct api_server {
    uv_loop_t *loop;
    struct http_server *http;
    struct api_auth *auth;
    struct exporter *sink_exp;
    struct sink *sink;
    const struct sink_module_api *mod;
#ifdef DLOTEL_API_HAVE_STREAM
    struct api_stream *stream;
#endif
    char *cors_origin;
    bool ingest_auth;
    uint64_t max_body;
    uint64_t timeout_ms;
    uint64_t start_mono_ns;

    /* The worker pool. */
    pthread_t threads[THREADS_MAX];
    size_t n_threads;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct api_job *queue_head, *queue_tail; /* Waiting for a worker. */
    size_t queued;
    struct api_job *done; /* Finished, newest first, for the loop. */
    bool stopping;
    uv_async_t async;

    /* OTLP ingest scratch (loop thread only). */
    struct buf inflated;
    struct buf converted;
    struct arena arena;

    size_t ingest_pending; /* Appends the sink has not answered yet. */
    bool freed;            /* api_server_free() ran. */
    bool async_closed;     /* libuv is done with |async|. */
};

/* ---- answers --------------------------------------------------------------------------------- */

#define HEADERS_MAX 10

/* Sends one answer with the CORS headers and |extra|. Consumes |s|. */
static void respond(struct api_server *srv, struct http_stream *s, int status, const char *ctype,
                    const void *body, size_t len, const struct http_header *extra, size_t n_extra)
{
    struct http_header h[HEADERS_MAX];
    size_t n = 0;
    if (ctype != NULL) {
        h[n++] = (struct http_header){"content-type", ctype};
    }
    h[n++] = (struct http_header){"access-control-allow-origin", srv->cors_origin};
    if (strcmp(srv->cors_origin, "*") != 0) {
        h[n++] = (struct http_header){"vary", "Origin"};
    }
    h[n++] = (struct http_header){"cache-control", "no-store"};
    for (size_t i = 0; i < n_extra && n < HEADERS_MAX; i++) {
        h[n++] = extra[i];
    }
    struct http_response r = {
        .status = status,
        .headers = h,
        .n_headers = n,
        .body = body,
        .body_len = len,
    };
    http_respond(s, &r);
}

static void respond_error(struct api_server *srv, struct http_stream *s, int status,
                          const struct http_header *extra, size_t n_extra, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void respond_error(struct api_server *srv, struct http_stream *s, int status,
                          const struct http_header *extra, size_t n_extra, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:b, s:s}", "success", 0, "error", msg);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    respond(srv, s, status, CT_JSON, text, text != NULL ? strlen(text) : 0, extra, n_extra);
    free(text);
}

static void respond_text(struct api_server *srv, struct http_stream *s, int status,
                         const char *ctype, const char *text)
{
    respond(srv, s, status, ctype, text, strlen(text), NULL, 0);
}

static void respond_405(struct api_server *srv, struct http_stream *s, const char *allow,
                        const char *method)
{
    struct http_header h = {"allow", allow};
    char m[16];
    size_t i = 0;
    for (; method[i] != '\0' && i + 1 < sizeof(m); i++) {
        unsigned char c = (unsigned char)method[i];
        m[i] = c > 0x20 && c < 0x7f ? (char)c : '?';
    }
    m[i] = '\0';
    respond_error(srv, s, 405, &h, 1, "method %s not allowed here: use %s", m, allow);
}

/* ---- the worker pool ------------------------------------------------------------------------- */

static void job_free(struct api_job *j)
{
    api_sql_cleanup(&j->sql);
    buf_cleanup(&j->body);
    free(j);
}

static void job_answer(struct api_server *srv, struct api_job *j)
{
    if (j->body.len == 0 && j->status == 0) {
        api_job_error(j, 500, "internal error: no answer");
    }
    respond(srv, j->stream, j->status, CT_JSON, j->body.data, j->body.len, NULL, 0);
    job_free(j);
}

static void *worker_main(void *arg)
{
    struct api_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (!srv->stopping && srv->queue_head == NULL) {
            pthread_cond_wait(&srv->cond, &srv->mu);
        }
        if (srv->queue_head == NULL) {
            break;
        }
        struct api_job *j = srv->queue_head;
        srv->queue_head = j->next;
        if (srv->queue_head == NULL) {
            srv->queue_tail = NULL;
        }
        srv->queued--;
        pthread_mutex_unlock(&srv->mu);

        j->work(j);

        pthread_mutex_lock(&srv->mu);
        j->next = srv->done;
        srv->done = j;
        if (!srv->stopping) {
            uv_async_send(&srv->async);
        }
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* Answers every finished job, oldest first. Loop thread. */
static void answer_done(struct api_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    struct api_job *list = srv->done;
    srv->done = NULL;
    pthread_mutex_unlock(&srv->mu);
    struct api_job *ordered = NULL;
    while (list != NULL) {
        struct api_job *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered != NULL) {
        struct api_job *next = ordered->next;
        job_answer(srv, ordered);
        ordered = next;
    }
}

static void on_async(uv_async_t *h)
{
    answer_done(h->data);
}

static struct api_job *job_new(struct api_server *srv, struct http_stream *s,
                               const struct api_principal *who, api_work_fn work)
{
    struct api_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        respond_error(srv, s, 503, NULL, 0, "out of memory");
        return NULL;
    }
    j->srv = srv;
    j->stream = s;
    j->work = work;
    j->sink = srv->sink;
    j->mod = srv->mod;
    j->who = *who;
    j->timeout_ms = srv->timeout_ms;
    j->uptime_s = (time_monotonic_nano() - srv->start_mono_ns) / 1000000000ull;
#ifdef DLOTEL_API_HAVE_STREAM
    j->stream_clients = api_stream_clients(srv->stream);
    j->stream_dropped = api_stream_dropped(srv->stream);
#endif
    api_sql_init(&j->sql);
    buf_init(&j->body, API_ANSWER_MAX);
    return j;
}

/* Queues |j| for a worker, or answers it now: 503 when the queue is full. */
static void job_submit(struct api_server *srv, struct api_job *j)
{
    pthread_mutex_lock(&srv->mu);
    if (srv->queued >= QUEUE_MAX || srv->stopping) {
        pthread_mutex_unlock(&srv->mu);
        api_job_error(j, 503, "too many queries waiting; try again shortly");
        struct http_header h = {"retry-after", "1"};
        respond(srv, j->stream, j->status, CT_JSON, j->body.data, j->body.len, &h, 1);
        job_free(j);
        return;
    }
    j->next = NULL;
    if (srv->queue_tail != NULL) {
        srv->queue_tail->next = j;
    } else {
        srv->queue_head = j;
    }
    srv->queue_tail = j;
    srv->queued++;
    pthread_cond_signal(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
}

/* Submits |j| when its builder succeeded (|rc| 0), else answers its 400 now. */
static void job_start(struct api_server *srv, struct api_job *j, int rc)
{
    if (rc != 0) {
        job_answer(srv, j);
        return;
    }
    job_submit(srv, j);
}

/* ---- auth ------------------------------------------------------------------------------------ */

/* Decides who calls; on refusal answers 401 and returns -1. */
static int authenticate(struct api_server *srv, struct http_stream *s,
                        const struct http_request *req, struct api_principal *who)
{
    char why[160] = "";
    int rc = api_auth_header(srv->auth, http_request_header(req, "authorization"), who, why,
                             sizeof(why));
    if (rc == 0) {
        return 0;
    }
    struct http_header h = {"www-authenticate", rc == DLOTEL_ERR_NOT_FOUND
                                                    ? "Bearer realm=\"dlotel\""
                                                    : "Bearer realm=\"dlotel\", "
                                                      "error=\"invalid_token\""};
    if (rc == DLOTEL_ERR_NOMEM) {
        respond_error(srv, s, 503, NULL, 0, "out of memory");
    } else {
        respond_error(srv, s, 401, &h, 1, "%s", why);
    }
    return -1;
}

/* ---- ingest ---------------------------------------------------------------------------------- */

struct ingest_call {
    struct api_server *srv;
    struct http_stream *stream;
    enum otlp_signal signal;
    bool json;
};

static void server_release(struct api_server *srv);

static void ingest_answer_error(struct api_server *srv, struct http_stream *s, bool json,
                                int status, int32_t grpc_code, int err, const char *message,
                                const char *retry_after)
{
    struct buf body;
    buf_init(&body, 4096);
    int rc = grpc_code >= 0 ? otlp_status_encode(grpc_code, message, json, &body)
                            : receiver_otlp_http_error_body(json, err, message, &body);
    if (rc != 0) {
        buf_reset(&body);
    }
    struct http_header h[2];
    size_t n = 0;
    if (retry_after != NULL) {
        h[n++] = (struct http_header){"retry-after", retry_after};
    }
    if (status == 401) {
        h[n++] = (struct http_header){"www-authenticate", "Bearer realm=\"dlotel\""};
    }
    respond(srv, s, status, json ? CT_JSON : "application/x-protobuf", body.data, body.len, h, n);
    buf_cleanup(&body);
}

static void on_ingested(void *userdata, const struct export_result *r)
{
    struct ingest_call *c = userdata;
    struct api_server *srv = c->srv;
    if (r->outcome == EXPORT_OK) {
        struct buf body;
        buf_init(&body, 256);
        int rc = otlp_response_encode(c->signal, 0, NULL, c->json, &body);
        respond(srv, c->stream, 200, c->json ? CT_JSON : "application/x-protobuf", body.data,
                rc == 0 ? body.len : 0, NULL, 0);
        buf_cleanup(&body);
    } else if (r->outcome == EXPORT_RETRY) {
        char ra[24];
        uint64_t ns = r->retry_after_ns;
        snprintf(ra, sizeof(ra), "%" PRIu64, ns == 0 ? 1 : (ns + 999999999) / 1000000000);
        char msg[320];
        snprintf(msg, sizeof(msg), "not stored, try again later: %s", r->message);
        ingest_answer_error(srv, c->stream, c->json, 503, -1, DLOTEL_ERR_IO, msg, ra);
    } else {
        char msg[320];
        snprintf(msg, sizeof(msg), "not stored: %s", r->message);
        ingest_answer_error(srv, c->stream, c->json, 400, -1, DLOTEL_ERR_BAD_INPUT, msg, NULL);
    }
    free(c);
    srv->ingest_pending--;
    server_release(srv);
}

static void recycle(struct buf *b)
{
    if (b->cap > KEEP_BYTES) {
        buf_cleanup(b);
    } else {
        buf_reset(b);
    }
}

static void ingest(struct api_server *srv, struct http_stream *s, const struct http_request *req,
                   enum otlp_signal sig)
{
    bool json = false;
    const char *ct = http_request_header(req, "content-type");
    if (ct != NULL && strncasecmp(ct, CT_JSON, strlen(CT_JSON)) == 0) {
        json = true;
    }
    /* A token that is sent is checked even when none is needed: a bad one is a mistake. */
    struct api_principal who;
    memset(&who, 0, sizeof(who));
    const char *authz = http_request_header(req, "authorization");
    if (api_auth_enabled(srv->auth) && (authz != NULL || srv->ingest_auth)) {
        char why[160] = "";
        int rc = api_auth_header(srv->auth, authz, &who, why, sizeof(why));
        if (rc != 0) {
            /* google.rpc.Code UNAUTHENTICATED. */
            ingest_answer_error(srv, s, json, 401, 16, 0, why, NULL);
            return;
        }
    }
    struct receiver_http_body body;
    int rc = receiver_otlp_http_decode(req, sig, srv->max_body, &srv->inflated, &srv->converted,
                                       &srv->arena, &body);
    if (rc != 0) {
        ingest_answer_error(srv, s, body.json, body.status, -1, rc, body.message, NULL);
        goto out;
    }
    struct ingest_call *c = malloc(sizeof(*c));
    if (c == NULL) {
        ingest_answer_error(srv, s, body.json, 503, -1, DLOTEL_ERR_NOMEM, "out of memory", "1");
        goto out;
    }
    *c = (struct ingest_call){.srv = srv, .stream = s, .signal = sig, .json = body.json};
    /* An admin (or an open API) stores rows under their own datalayer.user_uid attribute. */
    const char *uid = who.user_uid[0] != '\0' && !who.admin ? who.user_uid : NULL;
    rc = exporter_sink_append(srv->sink_exp, (int)sig, body.pb, body.len, uid, on_ingested, c);
    if (rc != 0) {
        free(c);
        if (rc == DLOTEL_ERR_FULL) {
            ingest_answer_error(srv, s, body.json, 429, -1, rc,
                                "the sink's queue is full: try again later", "1");
        } else {
            ingest_answer_error(srv, s, body.json, 503, -1, DLOTEL_ERR_IO,
                                rc == DLOTEL_ERR_CLOSED ? "the sink is closing"
                                                        : "cannot store the request now",
                                "1");
        }
        goto out;
    }
    srv->ingest_pending++;
out:
    recycle(&srv->inflated);
    recycle(&srv->converted);
    arena_reset(&srv->arena);
}

/* ---- the WebSocket --------------------------------------------------------------------------- */

#ifdef DLOTEL_API_HAVE_STREAM
static void on_tap(void *userdata, int signal, const uint8_t *pb, size_t len, const char *user_uid)
{
    struct api_server *srv = userdata;
    api_stream_publish(srv->stream, signal, pb, len, user_uid);
}

static bool on_tap_wants(void *userdata, int signal)
{
    struct api_server *srv = userdata;
    return api_stream_wants(srv->stream, signal);
}
#endif

static void websocket(struct api_server *srv, struct http_stream *s, const struct http_request *req,
                      const struct api_params *params)
{
#ifdef DLOTEL_API_HAVE_STREAM
    struct api_principal who;
    char why[160];
    const char *token = api_params_get(params, "token");
    int rc = token != NULL ? api_auth_token(srv->auth, token, &who, why, sizeof(why))
                           : api_auth_header(srv->auth, http_request_header(req, "authorization"),
                                             &who, why, sizeof(why));
    api_stream_accept(srv->stream, s, req, rc == 0 ? &who : NULL);
#else
    (void)req;
    (void)params;
    respond_error(srv, s, 501, NULL, 0, "the live stream is not part of this build");
#endif
}

/* ---- routing --------------------------------------------------------------------------------- */

static bool is(const char *method, const char *m)
{
    return strcmp(method, m) == 0;
}

/* Reads {"sql": "...", "params": [...]} into |j|'s statement. Returns 0 or answers 400. */
static int query_body(struct api_job *j, const struct http_request *req)
{
    if (req->body_too_large || req->body.len > QUERY_BODY_MAX) {
        api_job_error(j, 413, "request body larger than %zu bytes", QUERY_BODY_MAX);
        return -1;
    }
    json_error_t err;
    json_t *o =
        req->body.len > 0 ? json_loadb((const char *)req->body.data, req->body.len, 0, &err) : NULL;
    const char *sql = json_string_value(json_object_get(o, "sql"));
    if (sql == NULL || *sql == '\0') {
        json_decref(o);
        api_job_error(j, 400, "the body must be a JSON object with a string \"sql\"");
        return -1;
    }
    if (buf_append(&j->sql.text, sql, strlen(sql)) != 0) {
        json_decref(o);
        api_job_error(j, 413, "the SQL is too long");
        return -1;
    }
    json_t *params = json_object_get(o, "params");
    if (params != NULL && !json_is_array(params) && !json_is_null(params)) {
        json_decref(o);
        api_job_error(j, 400, "invalid parameter params: a JSON array");
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(params, i, v)
    {
        char num[64];
        const char *text;
        if (json_is_string(v)) {
            text = json_string_value(v);
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text = num;
        } else if (json_is_real(v)) {
            snprintf(num, sizeof(num), "%.17g", json_real_value(v));
            text = num;
        } else if (json_is_boolean(v)) {
            text = json_is_true(v) ? "true" : "false";
        } else {
            json_decref(o);
            api_job_error(j, 400, "invalid parameter params[%zu]: a string, number or boolean", i);
            return -1;
        }
        if (j->sql.n == API_SQL_PARAMS_MAX) {
            json_decref(o);
            api_job_error(j, 400, "invalid parameter params: at most %d", API_SQL_PARAMS_MAX);
            return -1;
        }
        char *copy = strdup(text);
        if (copy == NULL) {
            json_decref(o);
            api_job_error(j, 503, "out of memory");
            return -1;
        }
        j->sql.params[j->sql.n++] = copy;
    }
    json_decref(o);
    j->row_cap = 0;
    return 0;
}

/* The routes that run a statement or a blocking call on a worker. Returns false if unknown. */
static bool route_data(struct api_server *srv, struct http_stream *s,
                       const struct http_request *req, const char *r, const struct api_params *p)
{
    const char *m = req->method;
    enum { USER, ADMIN } level = USER;
    const char *allow = "GET";
    api_work_fn work = NULL;
    int kind = 0;
    const char *trace = NULL;

    if (strcmp(r, "/traces") == 0) {
        work = api_work_list, kind = 1;
    } else if (strcmp(r, "/traces/services/list") == 0 || strcmp(r, "/services") == 0) {
        work = api_work_strings, kind = 2;
    } else if (strncmp(r, "/traces/", 8) == 0 && strchr(r + 8, '/') == NULL) {
        work = api_work_trace, kind = 3, trace = r + 8;
    } else if (strcmp(r, "/logs") == 0) {
        work = api_work_list, kind = 4;
    } else if (strcmp(r, "/metrics") == 0) {
        work = api_work_list, kind = 5;
    } else if (strcmp(r, "/metrics/names") == 0) {
        work = api_work_rows, kind = 6;
    } else if (strcmp(r, "/metrics/query") == 0) {
        work = api_work_series, kind = 7;
    } else if (strcmp(r, "/query") == 0 || strcmp(r, "/query/sql") == 0) {
        work = api_work_sql, kind = 8, allow = "POST";
    } else if (strcmp(r, "/stats") == 0) {
        work = api_work_stats, kind = 9;
    } else if (strcmp(r, "/flush") == 0) {
        work = api_work_flush, kind = 10, allow = "POST";
    } else if (strcmp(r, "/system") == 0 || strcmp(r, "/system/stats") == 0) {
        work = api_work_system, kind = 11, level = ADMIN;
    } else if (strcmp(r, "/system/sql") == 0) {
        work = api_work_sql, kind = 12, level = ADMIN, allow = "POST";
    } else {
        return false;
    }
    if (!is(m, allow)) {
        respond_405(srv, s, allow, m);
        return true;
    }
    struct api_principal who;
    if (authenticate(srv, s, req, &who) != 0) {
        return true;
    }
    if (level == ADMIN && !who.admin) {
        respond_error(srv, s, 403, NULL, 0, "this endpoint is for administrators only");
        return true;
    }
    struct api_job *j = job_new(srv, s, &who, work);
    if (j == NULL) {
        return true;
    }
    int rc = 0;
    switch (kind) {
    case 1:
        rc = api_build_traces(j, p);
        break;
    case 2:
        rc = api_build_services(j);
        break;
    case 3:
        rc = api_build_trace(j, trace);
        break;
    case 4:
        rc = api_build_logs(j, p);
        break;
    case 5:
        rc = api_build_metrics(j, p);
        break;
    case 6:
        rc = api_build_metric_names(j, p);
        break;
    case 7:
        rc = api_build_metric_query(j, p);
        break;
    case 8:
        rc = query_body(j, req);
        break;
    case 12:
        rc = query_body(j, req);
        j->who.admin = true;
        break;
    default:
        break;
    }
    job_start(srv, j, rc);
    return true;
}

static void on_request(void *userdata, struct http_stream *s, const struct http_request *req)
{
    struct api_server *srv = userdata;
    char path[API_PATH_MAX];
    struct api_params params;
    char why[80];
    if (api_params_parse(req->path, path, sizeof(path), &params, why, sizeof(why)) != 0) {
        respond_error(srv, s, 400, NULL, 0, "invalid query parameter %s", why);
        return;
    }
    size_t plen = strlen(API_PREFIX);
    if (strncmp(path, API_PREFIX, plen) != 0 || (path[plen] != '/' && path[plen] != '\0')) {
        respond_error(srv, s, 404, NULL, 0, "unknown path: the API lives under " API_PREFIX);
        goto out;
    }
    /* The route without the prefix and without a trailing slash ("" for the root). */
    char *r = path + plen;
    size_t rlen = strlen(r);
    while (rlen > 0 && r[rlen - 1] == '/') {
        r[--rlen] = '\0';
    }
    const char *m = req->method;

    if (is(m, "OPTIONS")) {
        /* CORS preflight: any route, no auth (browsers send no credentials here). */
        struct http_header h[] = {
            {"access-control-allow-methods", "GET, POST, OPTIONS"},
            {"access-control-allow-headers",
             "Authorization, Content-Type, Content-Encoding, X-Requested-With"},
            {"access-control-max-age", "600"},
        };
        respond(srv, s, 204, NULL, NULL, 0, h, 3);
        goto out;
    }
    if (strcmp(r, "/ping") == 0 || strcmp(r, "/version") == 0 || strcmp(r, "/openapi.json") == 0 ||
        strcmp(r, "/docs") == 0) {
        if (!is(m, "GET")) {
            respond_405(srv, s, "GET", m);
        } else if (r[1] == 'p') {
            respond_text(srv, s, 200, CT_JSON, "{\"status\":\"ok\"}");
        } else if (r[1] == 'v') {
            respond_text(srv, s, 200, CT_JSON,
                         "{\"name\":\"dlotel\",\"version\":\"" DLOTEL_VERSION "\"}");
        } else if (r[1] == 'o') {
            respond_text(srv, s, 200, CT_JSON, api_openapi_json);
        } else {
            respond_text(srv, s, 200, "text/html; charset=utf-8", api_docs_html);
        }
        goto out;
    }
    if (strncmp(r, "/otlp/v1/", 9) == 0) {
        const char *sig = r + 9;
        enum otlp_signal which;
        if (strcmp(sig, "traces") == 0) {
            which = OTLP_TRACES;
        } else if (strcmp(sig, "metrics") == 0) {
            which = OTLP_METRICS;
        } else if (strcmp(sig, "logs") == 0) {
            which = OTLP_LOGS;
        } else {
            respond_error(srv, s, 404, NULL, 0,
                          "unknown path: OTLP ingest serves otlp/v1/traces, otlp/v1/metrics and "
                          "otlp/v1/logs");
            goto out;
        }
        if (!is(m, "POST")) {
            respond_405(srv, s, "POST", m);
            goto out;
        }
        ingest(srv, s, req, which);
        goto out;
    }
    if (strcmp(r, "/ws") == 0) {
        if (!is(m, "GET")) {
            respond_405(srv, s, "GET", m);
        } else {
            websocket(srv, s, req, &params);
        }
        goto out;
    }
    if (!route_data(srv, s, req, r, &params)) {
        respond_error(srv, s, 404, NULL, 0, "unknown path %s (see %s/docs)",
                      rlen > 0 && rlen < 100 &&
                              strspn(r, "abcdefghijklmnopqrstuvwxyz"
                                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_.") == rlen
                          ? r
                          : "",
                      API_PREFIX);
    }
out:
    api_params_cleanup(&params);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static bool loopback_host(const char *host)
{
    if (strcasecmp(host, "localhost") == 0) {
        return true;
    }
    char h[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(h)) {
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
    } else if (n < sizeof(h)) {
        memcpy(h, host, n + 1);
    } else {
        return false;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, h, &a6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&a6);
    }
    return false;
}

static void set_detail(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (detail == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

static void server_memory_free(struct api_server *srv)
{
    buf_cleanup(&srv->inflated);
    buf_cleanup(&srv->converted);
    arena_cleanup(&srv->arena);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cond);
    free(srv->cors_origin);
    free(srv);
}

/* Frees the memory once free() ran, libuv closed the async and the sink answered every append. */
static void server_release(struct api_server *srv)
{
    if (srv->freed && srv->async_closed && srv->ingest_pending == 0) {
        server_memory_free(srv);
    }
}

static void on_async_closed(uv_handle_t *h)
{
    struct api_server *srv = h->data;
    srv->async_closed = true;
    server_release(srv);
}

static void stop_workers(struct api_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    struct api_job *waiting = srv->queue_head;
    srv->queue_head = srv->queue_tail = NULL;
    srv->queued = 0;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
    for (size_t i = 0; i < srv->n_threads; i++) {
        pthread_join(srv->threads[i], NULL);
    }
    srv->n_threads = 0;
    /* Jobs no worker started: their clients are gone with the listener; free the streams. */
    while (waiting != NULL) {
        struct api_job *next = waiting->next;
        api_job_error(waiting, 503, "the server is stopping");
        job_answer(srv, waiting);
        waiting = next;
    }
    answer_done(srv);
}

int api_server_new(struct api_server **out, uv_loop_t *loop, const struct api_options *o,
                   char *detail, size_t detail_len)
{
    bool secret = (o->jwt_secret != NULL && *o->jwt_secret != '\0') ||
                  (o->iam_api_key != NULL && *o->iam_api_key != '\0');
    if (o->host == NULL) {
        set_detail(detail, detail_len, "api.host is not set");
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (!secret && !loopback_host(o->host) && !o->allow_unauthenticated) {
        set_detail(detail, detail_len,
                   "refusing to serve the query API on %s without authentication: set "
                   "api.jwt_secret or api.iam_api_key, bind api.host to localhost, or set "
                   "api.allow_unauthenticated: true",
                   o->host);
        return DLOTEL_ERR_CONFIG;
    }
    const struct sink_module_api *mod = NULL;
    struct sink *sk = o->sink != NULL ? exporter_sink_store(o->sink, &mod) : NULL;
    if (sk == NULL || mod == NULL) {
        set_detail(detail, detail_len, "the query API needs a sink exporter");
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct api_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    srv->loop = loop;
    srv->sink_exp = o->sink;
    srv->sink = sk;
    srv->mod = mod;
    srv->ingest_auth = o->ingest_auth;
    srv->max_body = o->max_body != 0 ? o->max_body : RECEIVER_HTTP_MAX_BODY;
    srv->timeout_ms = o->query_timeout_ms != 0 ? o->query_timeout_ms : 30000;
    srv->start_mono_ns = time_monotonic_nano();
    buf_init(&srv->inflated, (size_t)srv->max_body);
    buf_init(&srv->converted, (size_t)srv->max_body);
    arena_init(&srv->arena, ARENA_MAX);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cond, NULL);

    int rc = DLOTEL_ERR_NOMEM;
    srv->cors_origin = strdup(o->cors_origin != NULL ? o->cors_origin : "*");
    if (srv->cors_origin == NULL) {
        goto fail_mem;
    }
    struct api_auth_options ao = {
        .jwt_secret = o->jwt_secret,
        .jwt_issuer = o->jwt_issuer,
        .jwt_algorithm = o->jwt_algorithm,
        .iam_api_key = o->iam_api_key,
        .leeway_s = 0,
    };
    rc = api_auth_new(&srv->auth, &ao);
    if (rc != 0) {
        if (rc == DLOTEL_ERR_INVALID_ARG) {
            set_detail(detail, detail_len, "api.jwt_algorithm %s is not supported",
                       o->jwt_algorithm != NULL ? o->jwt_algorithm : "(none)");
            rc = DLOTEL_ERR_CONFIG;
        }
        goto fail_mem;
    }
    if (uv_async_init(loop, &srv->async, on_async) != 0) {
        rc = DLOTEL_ERR_IO;
        goto fail_auth;
    }
    srv->async.data = srv;
    size_t want = o->workers != 0 ? o->workers : DEFAULT_THREADS;
    if (want > THREADS_MAX) {
        want = THREADS_MAX;
    }
    for (size_t i = 0; i < want; i++) {
        if (pthread_create(&srv->threads[i], NULL, worker_main, srv) != 0) {
            rc = DLOTEL_ERR_NOMEM;
            set_detail(detail, detail_len, "cannot start the API's worker threads");
            goto fail_threads;
        }
        srv->n_threads++;
    }
#ifdef DLOTEL_API_HAVE_STREAM
    rc = api_stream_new(&srv->stream, loop, NULL);
    if (rc != 0) {
        goto fail_threads;
    }
#endif
    struct http_listen_options lo = {
        .name = "api",
        .host = o->host,
        .port = o->port,
        .http1 = true,
        .http2 = true,
        .max_body = (size_t)srv->max_body,
        .handler = on_request,
        .userdata = srv,
    };
    rc = http_server_new(&srv->http, loop, &lo);
    if (rc != 0) {
        set_detail(detail, detail_len, "cannot listen on %s port %u: %s", o->host,
                   (unsigned)o->port,
                   rc == DLOTEL_ERR_ADDR_IN_USE   ? "the address is in use"
                   : rc == DLOTEL_ERR_INVALID_ARG ? "cannot resolve the host"
                                                  : dlotel_strerror(rc));
        goto fail_stream;
    }
#ifdef DLOTEL_API_HAVE_STREAM
    exporter_sink_set_tap(o->sink, on_tap, on_tap_wants, srv);
#endif
    *out = srv;
    return 0;

fail_stream:
#ifdef DLOTEL_API_HAVE_STREAM
    api_stream_free(srv->stream);
#endif
fail_threads:
    stop_workers(srv);
    /* Nothing was queued yet: closing the async is the last use of the loop. */
    srv->freed = true;
    api_auth_free(srv->auth);
    srv->auth = NULL;
    uv_close((uv_handle_t *)&srv->async, on_async_closed);
    return rc;
fail_auth:
    api_auth_free(srv->auth);
fail_mem:
    server_memory_free(srv);
    return rc;
}

uint16_t api_server_port(const struct api_server *srv)
{
    return http_server_port(srv->http);
}

void api_server_free(struct api_server *srv)
{
    if (srv == NULL) {
        return;
    }
#ifdef DLOTEL_API_HAVE_STREAM
    exporter_sink_set_tap(srv->sink_exp, NULL, NULL, NULL);
    api_stream_free(srv->stream);
    srv->stream = NULL;
#endif
    http_server_free(srv->http);
    srv->http = NULL;
    stop_workers(srv);
    api_auth_free(srv->auth);
    srv->auth = NULL;
    srv->freed = true;
    uv_close((uv_handle_t *)&srv->async, on_async_closed);
}
