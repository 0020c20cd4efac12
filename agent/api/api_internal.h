/*
 * What the REST files of the API room share (api_server.c, api_routes.c, api_docs.c). Not for
 * other rooms: they use api.h.
 */
#ifndef DLOTEL_API_INTERNAL_H
#define DLOTEL_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api_params.h"
#include "api/api_principal.h"
#include "core/buf.h"

struct sink;
struct sink_module_api;
struct http_stream;

/* Bound parameters of one statement at most. */
#define API_SQL_PARAMS_MAX 32

/* The largest answer body the API builds (a page of 10000 spans fits easily). */
#define API_ANSWER_MAX ((size_t)128 * 1024 * 1024)

/* One statement with bound parameters ($1..$n, all text), built by api_sql_*. */
struct api_sql {
    struct buf text;
    char *params[API_SQL_PARAMS_MAX];
    size_t n;
    int err; /* The first error of a builder call, kept so that callers check once. */
};

void api_sql_init(struct api_sql *q);
void api_sql_cleanup(struct api_sql *q);
/* Appends literal SQL text (never user input). */
void api_sql_add(struct api_sql *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Binds |value| (copied) as the next parameter and appends "$k" followed by |cast| (may be ""). */
void api_sql_param(struct api_sql *q, const char *value, const char *cast);
/* As api_sql_param() for an integer. */
void api_sql_param_i64(struct api_sql *q, int64_t v, const char *cast);

/* What a worker needs to run one endpoint; filled on the loop thread. */
struct api_job;
typedef void (*api_work_fn)(struct api_job *j);

enum api_list_kind {
    API_LIST_TRACES = 0,
    API_LIST_LOGS,
    API_LIST_METRICS,
};

struct api_job {
    struct api_job *next;
    struct api_server *srv;
    struct http_stream *stream;
    api_work_fn work;
    /* The sink and the caller. */
    struct sink *sink;
    const struct sink_module_api *mod;
    struct api_principal who;
    uint64_t timeout_ms;
    /* The statement, or NULL for work that runs none. */
    struct api_sql sql;
    uint64_t row_cap;
    /* Route specifics. */
    enum api_list_kind list; /* For list pages. */
    uint64_t limit;          /* Rows asked for; the statement asks one more. */
    char trace_id[33];
    char metric_name[API_PARAM_VALUE_MAX + 1];
    char agg[8];
    int64_t step_ns;
    size_t stream_clients;   /* Read on the loop thread for /stats. */
    uint64_t stream_dropped; /* Messages dropped for slow WebSocket clients. */
    uint64_t uptime_s;
    /* The answer, filled by |work|. */
    int status;
    struct buf body;
    const char *allow; /* 405: the Allow header. */
};

/* Fills |j|'s answer with {"success":false,"error":<message>} and |status|. */
void api_job_error(struct api_job *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The worker side of each endpoint (api_routes.c). */
void api_work_list(struct api_job *j);
void api_work_trace(struct api_job *j);
void api_work_strings(struct api_job *j); /* One text column as a list: services. */
void api_work_rows(struct api_job *j);    /* {"data":[...],"count":n}: metric names. */
void api_work_series(struct api_job *j);  /* /metrics/query. */
void api_work_sql(struct api_job *j);     /* The sink's own answer. */
void api_work_stats(struct api_job *j);
void api_work_flush(struct api_job *j);
void api_work_system(struct api_job *j);

/*
 * The loop side: turn the query string into the statement of a list page, a trace, ... Each
 * returns 0 or fills |j|'s answer with a 400 naming the parameter and returns -1.
 */
int api_build_traces(struct api_job *j, const struct api_params *p);
int api_build_trace(struct api_job *j, const char *trace_id);
int api_build_services(struct api_job *j);
int api_build_logs(struct api_job *j, const struct api_params *p);
int api_build_metrics(struct api_job *j, const struct api_params *p);
int api_build_metric_names(struct api_job *j, const struct api_params *p);
int api_build_metric_query(struct api_job *j, const struct api_params *p);

/* The OpenAPI document and the /docs page (api_docs.c). */
extern const char api_openapi_json[];
extern const char api_docs_html[];

#endif
