/*
 * The read commands of `dlotel`: traces, logs, metrics, query, services, stats, flush. Each is one
 * or two calls of the query API and a table; --json prints the server's answer unchanged, so a
 * script reads exactly what the API documents (docs/api.md), not a second format of ours.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "dlotel.h"

#define DEFAULT_TIMEOUT_NS (30ull * 1000000000ull)
#define SMOKE_TIMEOUT_NS   (30ull * 1000000000ull)

/* RFC 3339 (UTC, seconds) of now - |ago_ns|. */
static void rfc3339_ago(char *out, size_t outlen, uint64_t ago_ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t t = ts.tv_sec - (time_t)(ago_ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Milliseconds of |ns| for a query parameter: whole when exact, else three decimals. */
static void ms_param(char *out, size_t outlen, uint64_t ns)
{
    if (ns % 1000000u == 0) {
        snprintf(out, outlen, "%" PRIu64, ns / 1000000u);
    } else {
        snprintf(out, outlen, "%" PRIu64 ".%06" PRIu64, ns / 1000000u, ns % 1000000u);
    }
}

/* Adds the shared time and limit filters. */
static int add_window(struct buf *q, const struct client_args *a)
{
    char tmp[64];
    int rc = 0;
    if (a->has_since) {
        rfc3339_ago(tmp, sizeof(tmp), a->since_ns);
        rc = client_query_add(q, "start", tmp);
    } else if (a->start != NULL) {
        rc = client_query_add(q, "start", a->start);
    }
    if (rc == 0 && a->end != NULL) {
        rc = client_query_add(q, "end", a->end);
    }
    if (rc == 0 && a->limit != 0) {
        snprintf(tmp, sizeof(tmp), "%u", a->limit);
        rc = client_query_add(q, "limit", tmp);
    }
    return rc;
}

/* Prints |t| sized to the terminal. */
static int print_table(const struct table *t)
{
    struct buf out;
    buf_init(&out, CLIENT_BODY_MAX);
    int rc = table_render(t, client_term_width(), &out);
    if (rc == 0 && out.len > 0) {
        rc = fwrite(out.data, 1, out.len, stdout) == out.len && fflush(stdout) == 0 ? 0
                                                                                    : EXIT_RUNTIME;
    } else if (rc != 0) {
        fprintf(stderr, "dlotel: cannot render the table: out of memory\n");
        rc = EXIT_RUNTIME;
    }
    buf_cleanup(&out);
    return rc;
}

/* The text of |key| in |row| for a cell; "" when absent. NULL only when memory runs out. */
static char *field(const json_t *row, const char *key)
{
    return client_json_text(json_object_get(row, key));
}

static int nomem(void)
{
    fprintf(stderr, "dlotel: out of memory\n");
    return EXIT_RUNTIME;
}

/* One filter of a list command; skipped when |value| is NULL. */
struct filter {
    const char *key;
    const char *value;
};

/*
 * GETs |path| with a query string of |filters| (in order), then the shared time and limit
 * filters, through client_call(). Returns as client_call().
 */
static int call_filtered(struct client_http *h, const struct client_args *a, const char *path,
                         const struct filter *filters, size_t n, json_t **out)
{
    struct buf q;
    buf_init(&q, 64 * 1024);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (filters[i].value != NULL) {
            rc = client_query_add(&q, filters[i].key, filters[i].value);
        }
    }
    if (rc == 0) {
        rc = add_window(&q, a);
    }
    if (rc == 0) {
        rc = buf_terminate(&q);
    }
    if (rc != 0) {
        buf_cleanup(&q);
        return nomem();
    }
    rc = client_call(h, "GET", path, (const char *)q.data, NULL, a->json, out);
    buf_cleanup(&q);
    return rc;
}

/*
 * Adds one row made of |n| cells, each from |cells|, and frees them. Returns 0, or EXIT_RUNTIME
 * when a cell is NULL (memory ran out making it) or the row cannot be added.
 */
static int add_owned_row(struct table *t, char **cells, size_t n)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        ok = ok && cells[i] != NULL;
    }
    int rc = ok ? table_add_row(t, (const char *const *)cells) : DLOTEL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        free(cells[i]);
    }
    return rc == 0 ? 0 : nomem();
}

static char *ms_dup(double ms)
{
    char tmp[64];
    client_fmt_ms(tmp, sizeof(tmp), ms);
    return strdup(tmp);
}

/* The most columns of a table made by table_of_rows(). */
#define ROW_CELLS_MAX 8

/* Makes the cells of one table row out of |row|: malloc'd, NULL where memory ran out. */
typedef void row_cells_fn(const json_t *row, char **cells);

/*
 * Starts |t| (|ncols| columns, at most ROW_CELLS_MAX) and adds a row per element of |data|, its
 * cells made by |cells|. |t| is to be cleaned up whatever the result. Returns 0 or EXIT_RUNTIME.
 */
static int table_of_rows(struct table *t, size_t ncols, const char *const *hdr, const unsigned *fl,
                         const json_t *data, row_cells_fn *cells)
{
    table_init(t, ncols, hdr, fl);
    size_t i;
    const json_t *row;
    json_array_foreach(data, i, row)
    {
        char *c[ROW_CELLS_MAX];
        cells(row, c);
        int rc = add_owned_row(t, c, ncols);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Prints |t| when |rc| is 0, and cleans it up. Returns |rc|, or the failure to print. */
static int print_rows(struct table *t, int rc)
{
    if (rc == 0) {
        rc = print_table(t);
    }
    table_cleanup(t);
    return rc;
}

/* ---- traces ------------------------------------------------------------------------------- */

static void trace_cells(const json_t *row, char **c)
{
    c[0] = field(row, "trace_id");
    c[1] = field(row, "span_name");
    c[2] = field(row, "service_name");
    c[3] = field(row, "start_time");
    c[4] = ms_dup(client_json_number(json_object_get(row, "duration_ms")));
    c[5] = field(row, "span_count");
    c[6] = field(row, "error_count");
}

static int cmd_traces_list(const struct client_args *a, struct client_http *h)
{
    char status[64], min_ms[64];
    if (a->status != NULL) {
        size_t i = 0;
        for (; a->status[i] != '\0' && i + 1 < sizeof(status); i++) {
            status[i] = (char)toupper((unsigned char)a->status[i]);
        }
        status[i] = '\0';
    }
    if (a->has_min_duration) {
        ms_param(min_ms, sizeof(min_ms), a->min_duration_ns);
    }
    const struct filter f[] = {
        {"service_name", a->service},
        {"span_name", a->name},
        {"status", a->status != NULL ? status : NULL},
        {"min_duration_ms", a->has_min_duration ? min_ms : NULL},
    };
    json_t *j = NULL;
    int rc = call_filtered(h, a, "/traces/", f, sizeof(f) / sizeof(f[0]), &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    static const char *const hdr[] = {"TRACE ID", "ROOT SPAN", "SERVICE", "START",
                                      "DURATION", "SPANS",     "ERRORS"};
    static const unsigned fl[] = {0,           TABLE_FLEX,  TABLE_FLEX, 0,
                                  TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT};
    struct table t;
    json_t *data = json_object_get(j, "data");
    rc = print_rows(&t, table_of_rows(&t, 7, hdr, fl, data, trace_cells));
    if (rc == 0 && json_array_size(data) == 0) {
        fprintf(stderr, "dlotel: no trace matches\n");
    }
    json_decref(j);
    return rc;
}

struct span_node {
    const json_t *row;
    const char *span_id;
    const char *parent;
    size_t first_child; /* SIZE_MAX: none */
    size_t next_sibling;
    bool placed;
};

static int by_span_id(const void *x, const void *y)
{
    const struct span_node *const *a = x;
    const struct span_node *const *b = y;
    return strcmp((*a)->span_id, (*b)->span_id);
}

/* Appends the subtree of |root| (depth-first, children by start) to |t|. */
static int add_subtree(struct table *t, struct span_node *n, size_t count, size_t root)
{
    /* An explicit stack: a hostile trace can be a chain of 10000 spans. */
    size_t *stack = malloc(count * sizeof(*stack));
    size_t *depth = malloc(count * sizeof(*depth));
    if (stack == NULL || depth == NULL) {
        free(stack);
        free(depth);
        return nomem();
    }
    size_t top = 0;
    stack[top] = root;
    depth[top++] = 0;
    n[root].placed = true;
    int rc = 0;
    while (rc == 0 && top > 0) {
        size_t cur = stack[--top];
        size_t d = depth[top];
        const json_t *row = n[cur].row;
        struct buf name;
        buf_init(&name, 64 * 1024);
        int w = 0;
        for (size_t k = 0; w == 0 && k < d && k < 64; k++) {
            w = buf_append(&name, "  ", 2);
        }
        const char *sn = json_string_value(json_object_get(row, "span_name"));
        if (w == 0) {
            w = buf_printf(&name, "%s", sn != NULL ? sn : "?");
        }
        if (w == 0) {
            w = buf_terminate(&name);
        }
        double ms = client_json_number(json_object_get(row, "duration_ms"));
        if (json_object_get(row, "duration_ms") == NULL) {
            ms = client_json_number(json_object_get(row, "duration_ns")) / 1e6;
        }
        const char *st = json_string_value(json_object_get(row, "status_code"));
        const char *msg = json_string_value(json_object_get(row, "status_message"));
        struct buf status;
        buf_init(&status, 64 * 1024);
        if (w == 0) {
            w = buf_printf(&status, "%s%s%s", st != NULL ? st : "",
                           msg != NULL && msg[0] != '\0' ? ": " : "",
                           msg != NULL && msg[0] != '\0' ? msg : "");
        }
        if (w == 0) {
            w = buf_terminate(&status);
        }
        char *c[4] = {w == 0 ? strdup((const char *)name.data) : NULL, field(row, "service_name"),
                      ms_dup(ms), w == 0 ? strdup((const char *)status.data) : NULL};
        buf_cleanup(&name);
        buf_cleanup(&status);
        rc = add_owned_row(t, c, 4);
        /* Children pushed, then reversed in place, so the earliest starts first. */
        size_t base = top;
        for (size_t k = n[cur].first_child; k != SIZE_MAX; k = n[k].next_sibling) {
            if (n[k].placed) {
                continue; /* A cycle in hostile data: each span once. */
            }
            n[k].placed = true;
            stack[top] = k;
            depth[top++] = d + 1;
        }
        for (size_t lo = base, hi = top; hi > lo + 1; lo++, hi--) {
            size_t s = stack[lo];
            stack[lo] = stack[hi - 1];
            stack[hi - 1] = s;
        }
    }
    free(stack);
    free(depth);
    return rc;
}

static int cmd_trace_one(const struct client_args *a, struct client_http *h)
{
    size_t len = strlen(a->arg);
    char id[33];
    if (len != 32 || strspn(a->arg, "0123456789abcdefABCDEF") != 32) {
        cli_usage_error("traces: '%s' is not a trace id (32 hex digits)", a->arg);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < 32; i++) {
        id[i] = (char)tolower((unsigned char)a->arg[i]);
    }
    id[32] = '\0';
    char path[64];
    snprintf(path, sizeof(path), "/traces/%s", id);
    json_t *j = NULL;
    int rc = client_call(h, "GET", path, NULL, NULL, a->json, &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    json_t *data = json_object_get(j, "data");
    size_t count = json_array_size(data);
    struct span_node *n = calloc(count > 0 ? count : 1, sizeof(*n));
    struct span_node **sorted = calloc(count > 0 ? count : 1, sizeof(*sorted));
    if (n == NULL || sorted == NULL) {
        free(n);
        free(sorted);
        json_decref(j);
        return nomem();
    }
    for (size_t i = 0; i < count; i++) {
        const json_t *row = json_array_get(data, i);
        const char *sid = json_string_value(json_object_get(row, "span_id"));
        const char *pid = json_string_value(json_object_get(row, "parent_span_id"));
        n[i].row = row;
        n[i].span_id = sid != NULL ? sid : "";
        n[i].parent = pid != NULL && pid[0] != '\0' ? pid : NULL;
        n[i].first_child = n[i].next_sibling = SIZE_MAX;
        sorted[i] = &n[i];
    }
    qsort(sorted, count, sizeof(*sorted), by_span_id);
    /* Link children in reverse so that each list ends up in start order. */
    bool *is_child = calloc(count > 0 ? count : 1, sizeof(*is_child));
    if (is_child == NULL) {
        free(n);
        free(sorted);
        json_decref(j);
        return nomem();
    }
    for (size_t i = count; i-- > 0;) {
        if (n[i].parent == NULL) {
            continue;
        }
        struct span_node key = {.span_id = n[i].parent};
        struct span_node *kp = &key;
        struct span_node **p = bsearch(&kp, sorted, count, sizeof(*sorted), by_span_id);
        if (p != NULL && *p != &n[i]) {
            size_t parent = (size_t)(*p - n);
            n[i].next_sibling = n[parent].first_child;
            n[parent].first_child = i;
            is_child[i] = true;
        }
    }
    static const char *const hdr[] = {"SPAN", "SERVICE", "DURATION", "STATUS"};
    static const unsigned fl[] = {TABLE_FLEX, TABLE_FLEX, TABLE_RIGHT, TABLE_FLEX};
    struct table t;
    table_init(&t, 4, hdr, fl);
    /* Roots first (spans whose parent is absent), then whatever a cycle left out. */
    for (size_t pass = 0; rc == 0 && pass < 2; pass++) {
        for (size_t i = 0; rc == 0 && i < count; i++) {
            if (!n[i].placed && (pass == 1 || !is_child[i])) {
                rc = add_subtree(&t, n, count, i);
            }
        }
    }
    if (rc == 0) {
        printf("trace %s: %zu span%s\n", id, count, count == 1 ? "" : "s");
        rc = print_table(&t);
    }
    table_cleanup(&t);
    free(is_child);
    free(sorted);
    free(n);
    json_decref(j);
    return rc;
}

/* ---- logs --------------------------------------------------------------------------------- */

static void log_cells(const json_t *row, char **c)
{
    const char *sev = json_string_value(json_object_get(row, "severity_text"));
    c[0] = field(row, "timestamp");
    c[1] = sev != NULL && sev[0] != '\0' ? strdup(sev) : field(row, "severity_number");
    c[2] = field(row, "service_name");
    c[3] = field(row, "body");
}

static int cmd_logs(const struct client_args *a, struct client_http *h)
{
    const struct filter f[] = {
        {"service_name", a->service},
        {"severity", a->severity},
        {"trace_id", a->trace_id},
        {"q", a->text},
    };
    json_t *j = NULL;
    int rc = call_filtered(h, a, "/logs/", f, sizeof(f) / sizeof(f[0]), &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    static const char *const hdr[] = {"TIME", "SEVERITY", "SERVICE", "BODY"};
    static const unsigned fl[] = {0, 0, TABLE_FLEX, TABLE_FLEX};
    struct table t;
    json_t *data = json_object_get(j, "data");
    rc = print_rows(&t, table_of_rows(&t, 4, hdr, fl, data, log_cells));
    if (rc == 0 && json_array_size(data) == 0) {
        fprintf(stderr, "dlotel: no log record matches\n");
    }
    json_decref(j);
    return rc;
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void name_cells(const json_t *row, char **c)
{
    c[0] = field(row, "metric_name");
    c[1] = field(row, "metric_type");
    c[2] = field(row, "metric_unit");
    c[3] = field(row, "count");
}

static void series_cells(const json_t *row, char **c)
{
    c[0] = field(row, "time");
    c[1] = field(row, "value");
}

static void point_cells(const json_t *row, char **c)
{
    c[0] = field(row, "timestamp");
    c[1] = field(row, "service_name");
    c[2] = field(row, "value");
    c[3] = field(row, "attributes");
}

static int cmd_metric_names(const struct client_args *a, struct client_http *h)
{
    json_t *j = NULL;
    int rc = client_call(h, "GET", "/metrics/names", NULL, NULL, a->json, &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    static const char *const hdr[] = {"NAME", "TYPE", "UNIT", "POINTS"};
    static const unsigned fl[] = {TABLE_FLEX, 0, 0, TABLE_RIGHT};
    struct table t;
    rc = print_rows(&t, table_of_rows(&t, 4, hdr, fl, json_object_get(j, "data"), name_cells));
    json_decref(j);
    return rc;
}

static int cmd_metric(const struct client_args *a, struct client_http *h)
{
    bool series = a->step != NULL || a->agg != NULL;
    const struct filter f[] = {
        {"name", a->arg},
        {"service_name", a->service},
        {"step", a->step},
        {"agg", a->agg},
    };
    json_t *j = NULL;
    int rc = call_filtered(h, a, series ? "/metrics/query" : "/metrics/", f,
                           sizeof(f) / sizeof(f[0]), &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    static const char *const shdr[] = {"TIME", "VALUE"};
    static const unsigned sfl[] = {0, TABLE_RIGHT};
    static const char *const phdr[] = {"TIME", "SERVICE", "VALUE", "ATTRIBUTES"};
    static const unsigned pfl[] = {0, TABLE_FLEX, TABLE_RIGHT, TABLE_FLEX};
    struct table t;
    json_t *data = json_object_get(j, "data");
    rc = series ? table_of_rows(&t, 2, shdr, sfl, data, series_cells)
                : table_of_rows(&t, 4, phdr, pfl, data, point_cells);
    if (rc == 0 && series) {
        const char *agg = json_string_value(json_object_get(j, "agg"));
        printf("%s: %s per %" JSON_INTEGER_FORMAT "s\n", a->arg, agg != NULL ? agg : "avg",
               json_integer_value(json_object_get(j, "step_seconds")));
    }
    rc = print_rows(&t, rc);
    if (rc == 0 && json_array_size(data) == 0) {
        fprintf(stderr, "dlotel: no point of metric '%s' matches\n", a->arg);
    }
    json_decref(j);
    return rc;
}

/* ---- query -------------------------------------------------------------------------------- */

static int cmd_query(const struct client_args *a, struct client_http *h)
{
    json_t *req = json_object();
    json_t *params = a->n_params > 0 ? json_array() : NULL;
    if (req == NULL || json_object_set_new(req, "sql", json_string(a->arg)) != 0 ||
        (a->n_params > 0 && (params == NULL || json_object_set(req, "params", params) != 0))) {
        json_decref(params);
        json_decref(req);
        fprintf(stderr, "dlotel: the SQL is not valid UTF-8, or memory ran out\n");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < a->n_params; i++) {
        json_t *p = json_string(a->params[i]);
        if (p == NULL || json_array_append_new(params, p) != 0) {
            json_decref(params);
            json_decref(req);
            fprintf(stderr, "dlotel: --param %zu is not valid UTF-8\n", i + 1);
            return EXIT_USAGE;
        }
    }
    json_decref(params);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (body == NULL) {
        return nomem();
    }
    json_t *j = NULL;
    int rc = client_call(h, "POST", "/query/", NULL, body, a->json, &j);
    free(body);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    json_t *cols = json_object_get(j, "columns");
    size_t ncols = json_array_size(cols);
    const char **hdr = calloc(ncols > 0 ? ncols : 1, sizeof(*hdr));
    unsigned *fl = calloc(ncols > 0 ? ncols : 1, sizeof(*fl));
    char **cells = calloc(ncols > 0 ? ncols : 1, sizeof(*cells));
    if (hdr == NULL || fl == NULL || cells == NULL) {
        free(hdr);
        free(fl);
        free(cells);
        json_decref(j);
        return nomem();
    }
    for (size_t c = 0; c < ncols; c++) {
        const char *name = json_string_value(json_array_get(cols, c));
        hdr[c] = name != NULL ? name : "?";
        fl[c] = TABLE_FLEX;
    }
    struct table t;
    table_init(&t, ncols, hdr, fl);
    json_t *data = json_object_get(j, "data");
    size_t i;
    json_t *row;
    json_array_foreach(data, i, row)
    {
        for (size_t c = 0; c < ncols; c++) {
            cells[c] = field(row, hdr[c]);
            /* Right-align columns whose values are all numbers. */
            if (i == 0 || (fl[c] & TABLE_RIGHT) != 0) {
                json_t *v = json_object_get(row, hdr[c]);
                fl[c] =
                    json_is_number(v) || json_is_null(v) ? (TABLE_RIGHT | TABLE_FLEX) : TABLE_FLEX;
            }
        }
        if ((rc = add_owned_row(&t, cells, ncols)) != 0) {
            break;
        }
    }
    if (rc == 0 && ncols > 0) {
        rc = print_table(&t);
    }
    if (rc == 0) {
        size_t n = json_array_size(data);
        fprintf(stderr, "(%zu row%s)\n", n, n == 1 ? "" : "s");
        if (json_is_true(json_object_get(j, "truncated"))) {
            fprintf(stderr,
                    "dlotel: truncated: the server returns at most %zu rows; add a LIMIT "
                    "or narrow the query\n",
                    n);
        }
    }
    table_cleanup(&t);
    free(cells);
    free(fl);
    free(hdr);
    json_decref(j);
    return rc;
}

/* ---- services, stats, flush --------------------------------------------------------------- */

static int cmd_services(const struct client_args *a, struct client_http *h)
{
    json_t *j = NULL;
    int rc = client_call(h, "GET", "/services", NULL, NULL, a->json, &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "data"), i, v)
    {
        char *s = client_json_text(v);
        if (s == NULL) {
            rc = nomem();
            break;
        }
        /* Through the table's cleaning: a service name is telemetry too. */
        static const char *const hdr[] = {""};
        struct table t;
        table_init(&t, 1, hdr, NULL);
        const char *cell[1] = {s};
        if (table_add_row(&t, cell) == 0) {
            printf("%s\n", t.cells[0]);
        }
        table_cleanup(&t);
        free(s);
    }
    json_decref(j);
    return rc != 0 ? rc : (fflush(stdout) == 0 ? 0 : EXIT_RUNTIME);
}

static uint64_t num_u64(const json_t *o, const char *key)
{
    double d = client_json_number(json_object_get(o, key));
    return d > 0 ? (uint64_t)d : 0;
}

/* Rows of a table's stats: "rows" when the API gives it, else hot plus file rows. */
static uint64_t table_rows(const json_t *t)
{
    if (json_object_get(t, "rows") != NULL) {
        return num_u64(t, "rows");
    }
    return num_u64(t, "hot_rows") + num_u64(t, "file_rows");
}

static int print_stats(const json_t *st)
{
    static const char *const hdr[] = {"TABLE", "ROWS", "HOT ROWS", "FILES", "SIZE"};
    static const unsigned fl[] = {0, TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT, TABLE_RIGHT};
    struct table t;
    table_init(&t, 5, hdr, fl);
    int rc = 0;
    const char *key;
    json_t *tv;
    json_object_foreach((json_t *)json_object_get(st, "tables"), key, tv)
    {
        char rows[32], hot[32], files[32], size[32];
        snprintf(rows, sizeof(rows), "%" PRIu64, table_rows(tv));
        snprintf(hot, sizeof(hot), "%" PRIu64, num_u64(tv, "hot_rows"));
        snprintf(files, sizeof(files), "%" PRIu64, num_u64(tv, "files"));
        client_fmt_bytes(size, sizeof(size), num_u64(tv, "file_bytes"));
        const char *cells[5] = {key, rows, hot, files, size};
        if (table_add_row(&t, cells) != 0) {
            rc = nomem();
            break;
        }
    }
    rc = print_rows(&t, rc);
    const char *dir = json_string_value(json_object_get(st, "data_dir"));
    if (rc == 0 && dir != NULL) {
        printf("data dir: %s\n", dir);
    }
    const json_t *disk = json_object_get(st, "disk_bytes");
    if (disk == NULL) {
        disk = json_object_get(st, "db_bytes");
    }
    if (rc == 0 && disk != NULL) {
        char size[32];
        client_fmt_bytes(size, sizeof(size), (uint64_t)client_json_number(disk));
        printf("disk: %s\n", size);
    }
    return rc;
}

static int cmd_stats(const struct client_args *a, struct client_http *h)
{
    json_t *j = NULL;
    int rc = client_call(h, "GET", "/stats", NULL, NULL, a->json, &j);
    if (rc != 0 || j == NULL) {
        return rc;
    }
    rc = print_stats(j);
    json_decref(j);
    return rc;
}

static int cmd_flush(const struct client_args *a, struct client_http *h)
{
    /* The hot rows before the flush say what it wrote; --json skips this and prints the answer. */
    json_t *before = NULL;
    int rc = 0;
    if (!a->json) {
        rc = client_call(h, "GET", "/stats", NULL, NULL, false, &before);
        if (rc != 0) {
            return rc;
        }
    }
    json_t *j = NULL;
    rc = client_call(h, "POST", "/flush", NULL, "{}", a->json, &j);
    if (rc != 0 || j == NULL) {
        json_decref(before);
        return rc;
    }
    json_t *after = json_object_get(j, "stats");
    printf("flushed to Parquet:");
    const char *key;
    json_t *tv;
    bool first = true;
    json_object_foreach(json_object_get(before, "tables"), key, tv)
    {
        uint64_t was = num_u64(tv, "hot_rows");
        uint64_t now = num_u64(json_object_get(json_object_get(after, "tables"), key), "hot_rows");
        printf("%s %s %" PRIu64 " rows", first ? "" : ",", key, was > now ? was - now : 0);
        first = false;
    }
    printf("\n");
    if (after != NULL) {
        rc = print_stats(after);
    }
    json_decref(before);
    json_decref(j);
    return rc;
}

int client_cmd_run(const struct client_args *a, struct client_http *h)
{
    switch (a->cmd) {
    case CLIENT_TRACES:
        return a->arg != NULL ? cmd_trace_one(a, h) : cmd_traces_list(a, h);
    case CLIENT_LOGS:
        return cmd_logs(a, h);
    case CLIENT_METRICS:
        return a->arg != NULL ? cmd_metric(a, h) : cmd_metric_names(a, h);
    case CLIENT_QUERY:
        return cmd_query(a, h);
    case CLIENT_SERVICES:
        return cmd_services(a, h);
    case CLIENT_STATS:
        return cmd_stats(a, h);
    case CLIENT_FLUSH:
        return cmd_flush(a, h);
    case CLIENT_SMOKE:
        return client_smoke_run(a, h);
    }
    return EXIT_USAGE;
}

int client_main(enum client_cmd cmd, int argc, char **argv)
{
    struct client_args a;
    int rc = client_parse_args(&a, cmd, argc, argv);
    if (rc != 0) {
        return rc == 1 ? 0 : rc;
    }
    const char *run_url = getenv("DATALAYER_OTEL_RUN_URL");
    if (run_url == NULL || run_url[0] == '\0') {
        run_url = getenv("DATALAYER_RUN_URL");
    }
    char base[CLIENT_URL_MAX];
    const char *why = NULL;
    if (client_url_resolve(a.url, getenv("DATALAYER_OTEL_URL"), run_url, base, sizeof(base),
                           &why) != 0) {
        cli_usage_error("%s: bad API URL: %s", client_cmd_name(cmd), why);
        return EXIT_USAGE;
    }
    const char *token = a.token;
    if (token == NULL || token[0] == '\0') {
        token = getenv("DATALAYER_API_KEY");
    }
    uint64_t timeout_ns = a.timeout_ns;
    if (timeout_ns == 0) {
        timeout_ns = cmd == CLIENT_SMOKE ? SMOKE_TIMEOUT_NS : DEFAULT_TIMEOUT_NS;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "dlotel: libcurl would not start\n");
        return EXIT_RUNTIME;
    }
    struct client_http *h = NULL;
    /* The smoke test's own deadline bounds its polls; a single request keeps 30 s at most. */
    uint64_t req_ms = timeout_ns / 1000000u;
    if (cmd == CLIENT_SMOKE && req_ms > 10000) {
        req_ms = 10000;
    }
    rc = client_http_new(&h, base, token, req_ms);
    if (rc != 0) {
        fprintf(stderr, "dlotel: %s\n", dlotel_strerror(rc));
        curl_global_cleanup();
        return EXIT_RUNTIME;
    }
    if (cmd == CLIENT_SMOKE) {
        a.timeout_ns = timeout_ns;
    }
    rc = client_cmd_run(&a, h);
    client_http_free(h);
    curl_global_cleanup();
    return rc;
}
