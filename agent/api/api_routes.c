/*
 * The endpoints' statements and answers (docs/api.md).
 *
 * Every statement is built from fixed SQL text plus bound parameters: user text only ever
 * becomes a $n, never part of the SQL. The statements go through the sink's query(), so they
 * pass the same gate, scoping (user_uid, or SINK_QUERY_ADMIN) and row cap as a user's own SQL.
 *
 * List pages use keyset pagination: rows are ordered by (time DESC, id DESC) and the cursor is
 * the last row's (time, id); the next page asks for rows strictly below it. Inserts above the
 * cursor (newer rows) therefore never shift a later page. Logs and metric points have no id of
 * their own, so theirs is a hash of the row's identifying columns: two rows equal in all of
 * those and in time are one row to the cursor (the second may be skipped at a page boundary).
 *
 * The api_build_* functions run on the loop thread (cheap: parameter checks and text); the
 * api_work_* functions run on a worker thread (the query and the JSON reshaping).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>

#include "api/api_internal.h"
#include "dlotel.h"
#include "sink/sink_module.h"

/* ---- statements --------------------------------------------------------------------------- */

void api_sql_init(struct api_sql *q)
{
    buf_init(&q->text, (size_t)256 * 1024);
    q->n = 0;
    q->err = 0;
}

void api_sql_cleanup(struct api_sql *q)
{
    buf_cleanup(&q->text);
    for (size_t i = 0; i < q->n; i++) {
        free(q->params[i]);
    }
    q->n = 0;
}

void api_sql_add(struct api_sql *q, const char *fmt, ...)
{
    if (q->err != 0) {
        return;
    }
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        q->err = DLOTEL_ERR_INTERNAL;
        return;
    }
    q->err = buf_append(&q->text, tmp, (size_t)n);
}

void api_sql_param(struct api_sql *q, const char *value, const char *cast)
{
    if (q->err != 0) {
        return;
    }
    if (q->n == API_SQL_PARAMS_MAX) {
        q->err = DLOTEL_ERR_TOO_LARGE;
        return;
    }
    char *copy = strdup(value);
    if (copy == NULL) {
        q->err = DLOTEL_ERR_NOMEM;
        return;
    }
    q->params[q->n++] = copy;
    api_sql_add(q, "$%zu%s", q->n, cast);
}

void api_sql_param_i64(struct api_sql *q, int64_t v, const char *cast)
{
    char text[24];
    snprintf(text, sizeof(text), "%" PRId64, v);
    api_sql_param(q, text, cast);
}

void api_job_error(struct api_job *j, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    j->status = status;
    buf_reset(&j->body);
    json_t *o = json_pack("{s:b, s:s}", "success", 0, "error", msg);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL || buf_append(&j->body, text, strlen(text)) != 0) {
        buf_reset(&j->body);
    }
    free(text);
}

/* ---- parameters shared by several endpoints -------------------------------------------------- */

static int get_limit(struct api_job *j, const struct api_params *p, uint64_t *limit)
{
    const char *v = api_params_get(p, "limit");
    *limit = API_LIMIT_DEFAULT;
    if (v == NULL) {
        return 0;
    }
    if (api_parse_uint(v, API_LIMIT_MAX, limit) != 0 || *limit == 0) {
        api_job_error(j, 400, "invalid parameter limit: a whole number from 1 to %d",
                      API_LIMIT_MAX);
        return -1;
    }
    return 0;
}

/* Adds " AND <col> >= start AND <col> < end" for the parameters given. */
static int time_window(struct api_job *j, const struct api_params *p, const char *col)
{
    int64_t start = 0, end = 0;
    const char *s = api_params_get(p, "start");
    const char *e = api_params_get(p, "end");
    if (s != NULL && api_parse_time(s, &start) != 0) {
        api_job_error(j, 400,
                      "invalid parameter start: RFC 3339 (2026-11-21T10:00:00Z) or epoch "
                      "seconds, milliseconds, microseconds or nanoseconds");
        return -1;
    }
    if (e != NULL && api_parse_time(e, &end) != 0) {
        api_job_error(j, 400,
                      "invalid parameter end: RFC 3339 (2026-11-21T10:00:00Z) or epoch "
                      "seconds, milliseconds, microseconds or nanoseconds");
        return -1;
    }
    if (s != NULL && e != NULL && end < start) {
        api_job_error(j, 400, "invalid parameter end: before start");
        return -1;
    }
    if (s != NULL) {
        api_sql_add(&j->sql, " AND %s >= ", col);
        api_sql_param_i64(&j->sql, start, "::BIGINT");
    }
    if (e != NULL) {
        api_sql_add(&j->sql, " AND %s < ", col);
        api_sql_param_i64(&j->sql, end, "::BIGINT");
    }
    return 0;
}

/* Adds the keyset condition " AND (t < $a OR (t = $a AND id < $b))" for a cursor. */
static int cursor_after(struct api_job *j, const struct api_params *p, const char *tcol,
                        const char *idcol)
{
    const char *c = api_params_get(p, "cursor");
    if (c == NULL || *c == '\0') {
        return 0;
    }
    int64_t t;
    char id[65];
    if (api_cursor_decode(c, &t, id, sizeof(id)) != 0) {
        api_job_error(j, 400, "invalid parameter cursor: pass back a next_cursor unchanged");
        return -1;
    }
    api_sql_add(&j->sql, " AND (%s < ", tcol);
    api_sql_param_i64(&j->sql, t, "::BIGINT");
    api_sql_add(&j->sql, " OR (%s = ", tcol);
    api_sql_param_i64(&j->sql, t, "::BIGINT");
    api_sql_add(&j->sql, " AND %s < ", idcol);
    api_sql_param(&j->sql, id, "");
    api_sql_add(&j->sql, "))");
    return 0;
}

static void eq_filter(struct api_job *j, const struct api_params *p, const char *name,
                      const char *col)
{
    const char *v = api_params_get(p, name);
    if (v != NULL) {
        api_sql_add(&j->sql, " AND %s = ", col);
        api_sql_param(&j->sql, v, "");
    }
}

/* Appends |before|, |value| bound as the next parameter, then |after| (all but |value| SQL). */
static void bind_in(struct api_sql *q, const char *before, const char *value, const char *after)
{
    api_sql_add(q, "%s", before);
    api_sql_param(q, value, "");
    api_sql_add(q, "%s", after);
}

/*
 * Checks the hex id parameter |name| (at most |digits| digits) and adds
 * " AND <col> = lower($n)" when it is given. Returns 0, or -1 with the 400 answer set.
 */
static int hex_filter(struct api_job *j, const struct api_params *p, const char *name,
                      size_t digits, const char *col)
{
    const char *v = api_params_get(p, name);
    if (v == NULL) {
        return 0;
    }
    if (!api_is_hex(v, digits)) {
        api_job_error(j, 400, "invalid parameter %s: up to %zu hex digits", name, digits);
        return -1;
    }
    api_sql_add(&j->sql, " AND %s = ", col);
    bind_in(&j->sql, "lower(", v, ")");
    return 0;
}

static int built(struct api_job *j)
{
    if (j->sql.err != 0) {
        api_job_error(j, j->sql.err == DLOTEL_ERR_TOO_LARGE ? 400 : 500,
                      j->sql.err == DLOTEL_ERR_TOO_LARGE ? "too many filter parameters"
                                                         : "cannot build the query: %s",
                      dlotel_strerror(j->sql.err));
        return -1;
    }
    return 0;
}

/*
 * The end of every list page: the time window on |time_col|, the cursor and the keyset order on
 * (|tcol|, |idcol|), one row more than |limit| (to know whether a next page exists).
 */
static int page_end(struct api_job *j, const struct api_params *p, enum api_list_kind kind,
                    uint64_t limit, const char *time_col, const char *tcol, const char *idcol)
{
    if (time_window(j, p, time_col) != 0 || cursor_after(j, p, tcol, idcol) != 0) {
        return -1;
    }
    api_sql_add(&j->sql, " ORDER BY %s DESC, %s DESC LIMIT %" PRIu64, tcol, idcol, limit + 1);
    j->list = kind;
    j->limit = limit;
    j->row_cap = limit + 1;
    return built(j);
}

/*
 * The start of a list page of logs or metric points from |table|: every column, the row's time as
 * the cursor's _ck_t and a hash of |id_cols| (the columns that tell rows apart) as its _ck_id.
 */
static void hashed_page(struct api_sql *q, const char *table, const char *id_cols)
{
    api_sql_add(q,
                "SELECT * FROM (SELECT *, timestamp_unix_nano AS _ck_t, lpad(hash(%s)::VARCHAR, "
                "20, '0') AS _ck_id FROM %s) WHERE true",
                id_cols, table);
}

/* ---- builders -------------------------------------------------------------------------------- */

int api_build_traces(struct api_job *j, const struct api_params *p)
{
    uint64_t limit;
    if (get_limit(j, p, &limit) != 0) {
        return -1;
    }
    const char *status = api_params_get(p, "status");
    if (status != NULL && strcmp(status, "UNSET") != 0 && strcmp(status, "OK") != 0 &&
        strcmp(status, "ERROR") != 0) {
        api_job_error(j, 400, "invalid parameter status: UNSET, OK or ERROR");
        return -1;
    }
    double dmin = 0, dmax = 0;
    const char *smin = api_params_get(p, "min_duration_ms");
    const char *smax = api_params_get(p, "max_duration_ms");
    if (smin != NULL && (api_parse_double(smin, &dmin) != 0 || dmin < 0)) {
        api_job_error(j, 400, "invalid parameter min_duration_ms: a number of milliseconds");
        return -1;
    }
    if (smax != NULL && (api_parse_double(smax, &dmax) != 0 || dmax < 0)) {
        api_job_error(j, 400, "invalid parameter max_duration_ms: a number of milliseconds");
        return -1;
    }
    struct api_sql *q = &j->sql;
    /*
     * One row per trace: aggregates over all of its spans, the root's fields (the span without
     * a parent, else the earliest one), and one bool_or per span filter so that a trace matches
     * when any of its spans does.
     */
    api_sql_add(q, "WITH s AS (SELECT trace_id, span_id, parent_span_id, span_name, "
                   "service_name, status_code, start_time_unix_nano, end_time_unix_nano, "
                   "attributes FROM spans), "
                   "r AS (SELECT trace_id, span_id, span_name, service_name, status_code, "
                   "row_number() OVER (PARTITION BY trace_id ORDER BY parent_span_id IS NULL "
                   "DESC, start_time_unix_nano, span_id) AS rn FROM s), ");
    api_sql_add(q, "a AS (SELECT trace_id, min(start_time_unix_nano) AS t0, "
                   "max(end_time_unix_nano) AS t1, count(*) AS span_count, "
                   "count(*) FILTER (WHERE status_code = 'ERROR') AS error_count, "
                   "list_sort(list_distinct(list(service_name))) AS services");
    const char *svc = api_params_get(p, "service_name");
    const char *name = api_params_get(p, "span_name");
    if (svc != NULL) {
        bind_in(q, ", bool_or(service_name = ", svc, ") AS m_service");
    }
    if (name != NULL) {
        bind_in(q, ", bool_or(span_name = ", name, ") AS m_span");
    }
    size_t n_attr = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (strncmp(p->items[i].name, "attr.", 5) != 0) {
            continue;
        }
        if (p->items[i].name[5] == '\0') {
            api_job_error(j, 400, "invalid parameter attr.: name an attribute (attr.<key>=value)");
            return -1;
        }
        api_sql_add(q, ", bool_or(attributes[");
        api_sql_param(q, p->items[i].name + 5, "");
        api_sql_add(q, "] = ");
        api_sql_param(q, p->items[i].value, "");
        api_sql_add(q, ") AS m_attr%zu", n_attr++);
    }
    api_sql_add(q, " FROM s GROUP BY trace_id) "
                   "SELECT a.trace_id, r.span_id, r.span_name, r.service_name, r.status_code, "
                   "a.t0 AS start_time_unix_nano, a.t1 AS end_time_unix_nano, "
                   "(a.t1 - a.t0) / 1000000.0 AS duration_ms, a.span_count, a.error_count, "
                   "a.services, a.t0 AS _ck_t, a.trace_id AS _ck_id "
                   "FROM a JOIN r ON r.trace_id = a.trace_id AND r.rn = 1 WHERE true");
    if (svc != NULL) {
        api_sql_add(q, " AND a.m_service");
    }
    if (name != NULL) {
        api_sql_add(q, " AND a.m_span");
    }
    for (size_t i = 0; i < n_attr; i++) {
        api_sql_add(q, " AND a.m_attr%zu", i);
    }
    if (status != NULL) {
        if (strcmp(status, "ERROR") == 0) {
            api_sql_add(q, " AND a.error_count > 0");
        } else {
            api_sql_add(q, " AND a.error_count = 0 AND r.status_code = ");
            api_sql_param(q, status, "");
        }
    }
    if (smin != NULL) {
        api_sql_add(q, " AND (a.t1 - a.t0) / 1000000.0 >= ");
        api_sql_param(q, smin, "::DOUBLE");
    }
    if (smax != NULL) {
        api_sql_add(q, " AND (a.t1 - a.t0) / 1000000.0 <= ");
        api_sql_param(q, smax, "::DOUBLE");
    }
    return page_end(j, p, API_LIST_TRACES, limit, "a.t0", "a.t0", "a.trace_id");
}

int api_build_trace(struct api_job *j, const char *trace_id)
{
    if (!api_is_hex(trace_id, 32)) {
        api_job_error(j, 400, "invalid trace id: up to 32 hex digits");
        return -1;
    }
    size_t n = strlen(trace_id);
    for (size_t i = 0; i <= n; i++) {
        char c = trace_id[i];
        j->trace_id[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
    }
    api_sql_add(&j->sql, "SELECT * FROM spans WHERE trace_id = ");
    api_sql_param(&j->sql, j->trace_id, "");
    api_sql_add(&j->sql, " ORDER BY start_time_unix_nano, span_id");
    j->row_cap = API_LIMIT_MAX;
    return built(j);
}

int api_build_services(struct api_job *j)
{
    api_sql_add(&j->sql, "SELECT DISTINCT service_name FROM (SELECT service_name FROM spans "
                         "UNION ALL SELECT service_name FROM logs UNION ALL SELECT service_name "
                         "FROM metrics) WHERE service_name IS NOT NULL ORDER BY service_name");
    j->row_cap = API_LIMIT_MAX;
    return built(j);
}

static const struct {
    const char *text;
    int number;
} severities[] = {
    {"TRACE", 1},    {"DEBUG", 5},  {"INFO", 9},   {"WARN", 13},
    {"WARNING", 13}, {"ERROR", 17}, {"FATAL", 21},
};

int api_build_logs(struct api_job *j, const struct api_params *p)
{
    uint64_t limit;
    if (get_limit(j, p, &limit) != 0) {
        return -1;
    }
    struct api_sql *q = &j->sql;
    hashed_page(q, "logs",
                "observed_timestamp_unix_nano, trace_id, span_id, body, service_name, "
                "severity_number, severity_text, attributes::VARCHAR");
    eq_filter(j, p, "service_name", "service_name");
    if (hex_filter(j, p, "trace_id", 32, "trace_id") != 0 ||
        hex_filter(j, p, "span_id", 16, "span_id") != 0) {
        return -1;
    }
    const char *sev = api_params_get(p, "severity");
    if (sev != NULL) {
        uint64_t num;
        if (api_parse_uint(sev, 24, &num) == 0) {
            api_sql_add(q, " AND severity_number >= ");
            api_sql_param_i64(q, (int64_t)num, "::INTEGER");
        } else {
            /* A known level name means "at least that level", as a number does; any other text
               matches severity_text exactly, without case. */
            int level = 0;
            for (size_t i = 0; i < sizeof(severities) / sizeof(severities[0]); i++) {
                if (strcasecmp(sev, severities[i].text) == 0) {
                    level = severities[i].number;
                }
            }
            if (level != 0) {
                api_sql_add(q, " AND (severity_number >= ");
                api_sql_param_i64(q, level, "::INTEGER");
                bind_in(q,
                        " OR (coalesce(severity_number, 0) = 0 AND upper(severity_text) = upper(",
                        sev, ")))");
            } else if (*sev != '\0') {
                bind_in(q, " AND upper(severity_text) = upper(", sev, ")");
            } else {
                api_job_error(j, 400, "invalid parameter severity: a level name or number");
                return -1;
            }
        }
    }
    const char *text = api_params_get(p, "q");
    if (text != NULL) {
        bind_in(q, " AND contains(lower(body), lower(", text, "))");
    }
    return page_end(j, p, API_LIST_LOGS, limit, "timestamp_unix_nano", "_ck_t", "_ck_id");
}

int api_build_metrics(struct api_job *j, const struct api_params *p)
{
    uint64_t limit;
    if (get_limit(j, p, &limit) != 0) {
        return -1;
    }
    hashed_page(&j->sql, "metrics",
                "metric_name, metric_type, service_name, start_time_unix_nano, "
                "attributes::VARCHAR, value_double, value_int, count, sum");
    eq_filter(j, p, "name", "metric_name");
    eq_filter(j, p, "service_name", "service_name");
    return page_end(j, p, API_LIST_METRICS, limit, "timestamp_unix_nano", "_ck_t", "_ck_id");
}

int api_build_metric_names(struct api_job *j, const struct api_params *p)
{
    struct api_sql *q = &j->sql;
    api_sql_add(q, "SELECT metric_name, any_value(metric_type) AS metric_type, "
                   "any_value(metric_unit) AS metric_unit, count(*) AS count FROM metrics "
                   "WHERE true");
    eq_filter(j, p, "service_name", "service_name");
    if (time_window(j, p, "timestamp_unix_nano") != 0) {
        return -1;
    }
    api_sql_add(q, " GROUP BY metric_name ORDER BY metric_name");
    j->row_cap = API_LIMIT_MAX;
    return built(j);
}

int api_build_metric_query(struct api_job *j, const struct api_params *p)
{
    const char *name = api_params_get(p, "name");
    if (name == NULL || *name == '\0') {
        api_job_error(j, 400, "missing parameter name: the metric to aggregate");
        return -1;
    }
    int64_t step = 60LL * 1000000000LL;
    const char *s = api_params_get(p, "step");
    if (s != NULL && (api_parse_duration(s, &step) != 0 || step < 1000000)) {
        api_job_error(j, 400,
                      "invalid parameter step: a duration of 1ms or more (\"60s\", "
                      "\"5m\") or a number of seconds");
        return -1;
    }
    const char *agg = api_params_get(p, "agg");
    /* Mapped to fixed SQL: the parameter never becomes SQL text itself. */
    static const char *const aggs[] = {"avg", "sum", "min", "max", "count"};
    const char *fn = "avg";
    if (agg != NULL) {
        fn = NULL;
        for (size_t i = 0; i < sizeof(aggs) / sizeof(aggs[0]); i++) {
            if (strcmp(agg, aggs[i]) == 0) {
                fn = aggs[i];
            }
        }
        if (fn == NULL) {
            api_job_error(j, 400, "invalid parameter agg: avg, sum, min, max or count");
            return -1;
        }
    }
    snprintf(j->agg, sizeof(j->agg), "%s", fn);
    snprintf(j->metric_name, sizeof(j->metric_name), "%s", name);
    j->step_ns = step;
    struct api_sql *q = &j->sql;
    api_sql_add(q, "SELECT (timestamp_unix_nano // ");
    api_sql_param_i64(q, step, "::BIGINT");
    api_sql_add(q, ") * ");
    api_sql_param_i64(q, step, "::BIGINT");
    api_sql_add(q, " AS t, %s(value)::DOUBLE AS value FROM metrics WHERE metric_name = ", fn);
    api_sql_param(q, name, "");
    eq_filter(j, p, "service_name", "service_name");
    if (time_window(j, p, "timestamp_unix_nano") != 0) {
        return -1;
    }
    api_sql_add(q, " GROUP BY 1 ORDER BY 1");
    j->row_cap = API_LIMIT_MAX;
    return built(j);
}

/* ---- running a statement --------------------------------------------------------------------- */

/*
 * Runs j->sql into |out| (initialised here). Returns the sink's code. On failure the status and
 * message of the answer are set for a statement of ours (a refusal is a bug, not the user's).
 */
static int run(struct api_job *j, struct buf *out, bool user_sql)
{
    buf_init(out, API_ANSWER_MAX);
    int rc = buf_terminate(&j->sql.text);
    if (rc != 0) {
        api_job_error(j, 500, "cannot build the query: %s", dlotel_strerror(rc));
        return rc;
    }
    unsigned flags = j->who.admin ? SINK_QUERY_ADMIN : 0;
    rc =
        j->mod->query(j->sink, (const char *)j->sql.text.data, j->who.user_uid, flags,
                      (const char *const *)j->sql.params, j->sql.n, j->row_cap, j->timeout_ms, out);
    if (rc == 0) {
        return 0;
    }
    /* The sink's {"success":false,"error":...}, for its message. */
    const char *msg = dlotel_strerror(rc);
    json_t *e = NULL;
    if (rc != DLOTEL_ERR_TOO_LARGE && out->len > 0) {
        e = json_loadb((const char *)out->data, out->len, 0, NULL);
        const char *m = json_string_value(json_object_get(e, "error"));
        if (m != NULL) {
            msg = m;
        }
    }
    int status;
    switch (rc) {
    case DLOTEL_ERR_UNSUPPORTED:
        status = user_sql ? 403 : 500;
        break;
    case DLOTEL_ERR_BAD_INPUT:
        status = user_sql ? 400 : 500;
        break;
    case DLOTEL_ERR_TIMEOUT:
        status = 408;
        msg = "the query ran longer than its timeout and was stopped";
        break;
    case DLOTEL_ERR_TOO_LARGE:
        status = 413;
        msg = "the answer is too large: ask for fewer rows or columns";
        break;
    case DLOTEL_ERR_CLOSED:
    case DLOTEL_ERR_NOMEM:
        status = 503;
        break;
    default:
        status = 500;
        break;
    }
    api_job_error(j, status, "%s", msg);
    json_decref(e);
    buf_cleanup(out);
    return rc;
}

/* Serialises |o| (stolen) as the answer with |status|. */
static void answer_json(struct api_job *j, int status, json_t *o)
{
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (text == NULL) {
        api_job_error(j, 503, "out of memory");
        return;
    }
    buf_reset(&j->body);
    if (buf_append(&j->body, text, strlen(text)) != 0) {
        free(text);
        api_job_error(j, 413, "the answer is too large: ask for fewer rows");
        return;
    }
    free(text);
    j->status = status;
}

/* Runs the statement and returns the parsed answer's data array (a new reference), or NULL. */
static json_t *run_data(struct api_job *j)
{
    struct buf out;
    if (run(j, &out, false) != 0) {
        return NULL;
    }
    json_error_t err;
    json_t *root = json_loadb((const char *)out.data, out.len, 0, &err);
    buf_cleanup(&out);
    json_t *data = json_object_get(root, "data");
    if (!json_is_array(data)) {
        json_decref(root);
        api_job_error(j, 500, "the sink's answer does not parse");
        return NULL;
    }
    json_incref(data);
    json_decref(root);
    return data;
}

static void add_time(json_t *row, const char *key, const char *from)
{
    json_t *v = json_object_get(row, from);
    if (json_is_integer(v)) {
        char t[40];
        api_format_time((int64_t)json_integer_value(v), t, sizeof(t));
        json_object_set_new(row, key, json_string(t));
    } else {
        json_object_set_new(row, key, json_null());
    }
}

void api_work_list(struct api_job *j)
{
    json_t *data = run_data(j);
    if (data == NULL) {
        return;
    }
    json_t *next = json_null();
    if (json_array_size(data) > j->limit) {
        /* One row more than asked: there is a next page, which starts after the last kept row. */
        while (json_array_size(data) > j->limit) {
            json_array_remove(data, json_array_size(data) - 1);
        }
        json_t *last = json_array_get(data, json_array_size(data) - 1);
        json_t *t = json_object_get(last, "_ck_t");
        const char *id = json_string_value(json_object_get(last, "_ck_id"));
        if (json_is_integer(t) && id != NULL) {
            char c[API_CURSOR_MAX];
            api_cursor_encode((int64_t)json_integer_value(t), id, c, sizeof(c));
            next = json_string(c);
        }
    }
    size_t i;
    json_t *row;
    json_array_foreach(data, i, row)
    {
        json_object_del(row, "_ck_t");
        json_object_del(row, "_ck_id");
        if (j->list == API_LIST_TRACES) {
            add_time(row, "start_time", "start_time_unix_nano");
            add_time(row, "end_time", "end_time_unix_nano");
        }
    }
    size_t n = json_array_size(data);
    answer_json(
        j, 200,
        json_pack("{s:o, s:I, s:o}", "data", data, "count", (json_int_t)n, "next_cursor", next));
}

void api_work_trace(struct api_job *j)
{
    json_t *data = run_data(j);
    if (data == NULL) {
        return;
    }
    if (json_array_size(data) == 0) {
        json_decref(data);
        api_job_error(j, 404, "no trace %s", j->trace_id);
        return;
    }
    size_t n = json_array_size(data);
    answer_json(j, 200,
                json_pack("{s:s, s:o, s:I}", "trace_id", j->trace_id, "data", data, "count",
                          (json_int_t)n));
}

void api_work_strings(struct api_job *j)
{
    json_t *data = run_data(j);
    if (data == NULL) {
        return;
    }
    json_t *list = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(data, i, row)
    {
        /* The single column, whatever its name. */
        const char *key;
        json_t *v;
        json_object_foreach(row, key, v)
        {
            json_array_append(list, v);
            break;
        }
    }
    json_decref(data);
    size_t n = json_array_size(list);
    answer_json(j, 200, json_pack("{s:o, s:I}", "data", list, "count", (json_int_t)n));
}

void api_work_rows(struct api_job *j)
{
    json_t *data = run_data(j);
    if (data == NULL) {
        return;
    }
    size_t n = json_array_size(data);
    answer_json(j, 200, json_pack("{s:o, s:I}", "data", data, "count", (json_int_t)n));
}

void api_work_series(struct api_job *j)
{
    json_t *data = run_data(j);
    if (data == NULL) {
        return;
    }
    json_t *points = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(data, i, row)
    {
        json_t *pt = json_object();
        json_object_set_new(pt, "time", json_null());
        json_t *t = json_object_get(row, "t");
        if (json_is_integer(t)) {
            char s[40];
            api_format_time((int64_t)json_integer_value(t), s, sizeof(s));
            json_object_set_new(pt, "time", json_string(s));
        }
        json_t *v = json_object_get(row, "value");
        json_object_set(pt, "value", v != NULL ? v : json_null());
        json_array_append_new(points, pt);
    }
    json_decref(data);
    size_t n = json_array_size(points);
    json_t *step = j->step_ns % 1000000000 == 0 ? json_integer(j->step_ns / 1000000000)
                                                : json_real((double)j->step_ns / 1e9);
    answer_json(j, 200,
                json_pack("{s:s, s:o, s:s, s:o, s:I}", "name", j->metric_name, "step_seconds", step,
                          "agg", j->agg, "data", points, "count", (json_int_t)n));
}

void api_work_sql(struct api_job *j)
{
    struct buf out;
    if (run(j, &out, true) != 0) {
        return;
    }
    buf_cleanup(&j->body);
    j->body = out;
    j->status = 200;
}

/* ---- stats and system ------------------------------------------------------------------------ */

static const char *const tables[] = {"spans", "logs", "metrics"};

/*
 * The sink's stats() reshaped: per table rows (as the caller sees them), hot_rows, files,
 * file_rows, file_bytes, dates; plus disk_bytes (database and Parquet files). NULL on failure
 * (the answer is set).
 */
static json_t *stats_object(struct api_job *j)
{
    struct buf out;
    buf_init(&out, (size_t)16 * 1024 * 1024);
    int rc = j->mod->stats(j->sink, &out);
    if (rc != 0) {
        buf_cleanup(&out);
        api_job_error(j, 500, "cannot read the sink's figures: %s", dlotel_strerror(rc));
        return NULL;
    }
    json_t *st = json_loadb((const char *)out.data, out.len, 0, NULL);
    buf_cleanup(&out);
    if (!json_is_object(st)) {
        json_decref(st);
        api_job_error(j, 500, "the sink's figures do not parse");
        return NULL;
    }
    /* Rows the caller may see: scoped like any query. */
    api_sql_add(&j->sql, "SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM "
                         "logs) AS logs, (SELECT count(*) FROM metrics) AS metrics");
    j->row_cap = 1;
    json_t *data = run_data(j);
    if (data == NULL) {
        json_decref(st);
        return NULL;
    }
    json_t *counts = json_array_get(data, 0);
    json_t *tabs = json_object_get(st, "tables");
    json_int_t disk = json_integer_value(json_object_get(st, "db_bytes"));
    for (size_t i = 0; i < 3; i++) {
        json_t *t = json_object_get(tabs, tables[i]);
        if (!json_is_object(t)) {
            t = json_object();
            json_object_set_new(tabs != NULL ? tabs : st, tables[i], t);
        }
        json_t *rows = json_object_get(counts, tables[i]);
        json_object_set_new(t, "rows", rows != NULL ? json_incref(rows) : json_integer(0));
        disk += json_integer_value(json_object_get(t, "file_bytes"));
    }
    json_decref(data);
    json_object_set_new(st, "disk_bytes", json_integer(disk));
    return st;
}

/* stats_object() as /stats and /flush answer it: with the stream figures, for the caller. */
static json_t *stats_answer(struct api_job *j)
{
    json_t *st = stats_object(j);
    if (st == NULL) {
        return NULL;
    }
    json_object_set_new(st, "stream_clients", json_integer((json_int_t)j->stream_clients));
    json_object_set_new(st, "stream_dropped", json_integer((json_int_t)j->stream_dropped));
    if (!j->who.admin) {
        /* A user sees the figures of the store but not where it lives. */
        json_object_del(st, "data_dir");
    }
    return st;
}

void api_work_stats(struct api_job *j)
{
    json_t *st = stats_answer(j);
    if (st != NULL) {
        answer_json(j, 200, st);
    }
}

void api_work_flush(struct api_job *j)
{
    char detail[256] = "";
    int rc = j->mod->flush(j->sink, detail, sizeof(detail));
    if (rc != 0) {
        api_job_error(j, rc == DLOTEL_ERR_CLOSED ? 503 : 500, "flush failed: %s",
                      detail[0] != '\0' ? detail : dlotel_strerror(rc));
        return;
    }
    json_t *st = stats_answer(j);
    if (st != NULL) {
        answer_json(j, 200, json_pack("{s:b, s:o}", "success", 1, "stats", st));
    }
}

/* Resident set size from /proc/self/statm; 0 when unknown. */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (f == NULL) {
        return 0;
    }
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    if (n != 2) {
        return 0;
    }
    long page = sysconf(_SC_PAGESIZE);
    return (uint64_t)resident * (uint64_t)(page > 0 ? page : 4096);
}

void api_work_system(struct api_job *j)
{
    json_t *st = stats_object(j);
    if (st == NULL) {
        return;
    }
    json_t *process = json_pack("{s:I, s:I, s:I, s:s}", "pid", (json_int_t)getpid(), "uptime_s",
                                (json_int_t)j->uptime_s, "rss_bytes", (json_int_t)rss_bytes(),
                                "version", DLOTEL_VERSION);
    json_t *disk = json_object();
    const char *dir = json_string_value(json_object_get(st, "data_dir"));
    json_object_set(disk, "data_dir", json_object_get(st, "data_dir"));
    json_object_set(disk, "used_bytes", json_object_get(st, "disk_bytes"));
    struct statvfs vfs;
    if (dir != NULL && statvfs(dir, &vfs) == 0) {
        json_object_set_new(disk, "filesystem_total_bytes",
                            json_integer((json_int_t)((uint64_t)vfs.f_blocks * vfs.f_frsize)));
        json_object_set_new(disk, "filesystem_free_bytes",
                            json_integer((json_int_t)((uint64_t)vfs.f_bavail * vfs.f_frsize)));
    }
    json_t *out =
        json_pack("{s:o, s:o, s:O, s:I, s:I}", "process", process, "disk", disk, "tables",
                  json_object_get(st, "tables"), "stream_clients", (json_int_t)j->stream_clients,
                  "stream_dropped", (json_int_t)j->stream_dropped);
    const char *keep[] = {"ingest", "generation", "flushes", "compactions", "db_bytes"};
    for (size_t i = 0; out != NULL && i < sizeof(keep) / sizeof(keep[0]); i++) {
        json_t *v = json_object_get(st, keep[i]);
        if (v != NULL) {
            json_object_set(out, keep[i], v);
        }
    }
    json_decref(st);
    answer_json(j, 200, out);
}
