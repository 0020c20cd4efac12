/*
 * The SQL sandbox (DESIGN.md section 5): user SQL over spans, logs and metrics only.
 *
 * Three layers, each enough on its own for what it covers:
 *
 * 1. The database is locked down for every connection (sink_store.c): no file outside the data
 *    directory, no extension loading, no configuration change (lock_configuration), a memory
 *    limit. So even a statement that slipped through could not read /etc/passwd or load httpfs.
 *
 * 2. The gate (sink_sql_gate), before anything is bound: DuckDB's own parser splits the text
 *    (exactly one statement) and json_serialize_sql gives its syntax tree, which we walk. Only a
 *    SELECT serializes; EXPLAIN [ANALYZE] is peeled off the text and its inner statement must
 *    serialize. In the tree every table reference must be one of spans, logs, metrics, or a CTE
 *    of the statement that is in scope at that point, unqualified (no schema, no catalog, so no
 *    main.spans_hot, no temp.spans, no information_schema); table functions must be on a short
 *    allowlist (range, generate_series, unnest), which keeps out read_csv, read_text, glob,
 *    query(), duckdb_settings() and every other reader; a few scalar functions that read
 *    settings, variables or sequences are refused; SHOW/DESCRIBE/SUMMARIZE and unknown table
 *    reference kinds are refused. The gate fails closed: anything it does not recognise is
 *    refused.
 *
 * 3. Scoping: each query gets a fresh connection in which spans, logs and metrics are TEMP
 *    views over main.<table>_all filtered by the caller's user_uid (or not, for admin). The
 *    gate's refusal of qualified names is what keeps a user from naming main.spans_all, and the
 *    temp views shadow any other object of the same name.
 *
 * Then the statement is prepared (its type must be SELECT or EXPLAIN), run with a deadline
 * (a watchdog thread calls duckdb_interrupt) and a row cap, and its rows are turned into JSON by
 * DuckDB's own to_json (a SELECT is wrapped as SELECT to_json(COLUMNS(*)) FROM (<sql>); the
 * wrapped text passes the gate again before it runs).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "core/timeutil.h"
#include "dlotel.h"
#include "sink/sink_int.h"

/* User SQL longer than this is refused: it is a query, not a data upload. */
#define SQL_MAX_LEN ((size_t)64 * 1024)
/* Nesting of the syntax tree the walker follows; deeper is refused. */
#define GATE_MAX_DEPTH 400
/* CTE names in scope at one point. */
#define GATE_MAX_SCOPE 64

#define DEFAULT_ROW_CAP    10000u
#define DEFAULT_TIMEOUT_MS 30000u

static void set_msg(char *msg, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t len, const char *fmt, ...)
{
    if (msg == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(msg, len, fmt, ap);
    (void)w; /* Truncation is fine: the text is for people. */
    va_end(ap);
}

/* ---- the syntax tree walk ------------------------------------------------------------------ */

static const char *const allowed_tables[] = {"spans", "logs", "metrics"};

/* Table functions a user may call: they make rows from their arguments and read nothing. */
static const char *const allowed_table_functions[] = {"range", "generate_series", "unnest"};

/* Scalar functions refused by name, and by prefix. */
static const char *const denied_functions[] = {
    "current_setting",
    "getvariable",
    "nextval",
    "currval",
    "setval",
    "query",
    "query_table",
    "json_execute_serialized_sql",
    "glob",
    "checkpoint",
    "force_checkpoint",
};
static const char *const denied_prefixes[] = {"read_",  "pg_",      "has_",   "duckdb_",
                                              "sniff_", "parquet_", "pragma_"};

/* Table reference kinds the walker knows to be safe once their parts are checked. */
static const char *const allowed_ref_types[] = {
    "BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST", "PIVOT"};

struct gate {
    char *msg;
    size_t msglen;
    const char *scope[GATE_MAX_SCOPE];
    size_t nscope;
};

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(s, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

#define IN_LIST(s, list) in_list((s), (list), sizeof(list) / sizeof((list)[0]))

static const char *str_member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A member that must be absent, null or the empty string (schema_name, catalog_name...). */
static bool empty_member(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static bool in_scope(const struct gate *g, const char *name)
{
    for (size_t i = 0; i < g->nscope; i++) {
        if (strcasecmp(g->scope[i], name) == 0) {
            return true;
        }
    }
    return false;
}

static int push_scope(struct gate *g, const char *name)
{
    if (g->nscope == GATE_MAX_SCOPE) {
        set_msg(g->msg, g->msglen, "too many common table expressions (at most %d)",
                GATE_MAX_SCOPE);
        return -1;
    }
    g->scope[g->nscope++] = name;
    return 0;
}

static int walk(struct gate *g, json_t *v, int depth);

static int check_function(struct gate *g, json_t *o)
{
    const char *name = str_member(o, "function_name");
    if (name == NULL) {
        return 0;
    }
    /*
     * DuckDB's parser itself writes some calls as main.<fn> (MAP {...} is main.map, [1, 2] is
     * main.list_value); users' own qualified calls are held to the same names.
     */
    const char *schema = str_member(o, "schema");
    const char *catalog = str_member(o, "catalog");
    if ((schema != NULL && schema[0] != '\0' && strcmp(schema, "main") != 0) ||
        (catalog != NULL && catalog[0] != '\0' && strcmp(catalog, "system") != 0)) {
        set_msg(g->msg, g->msglen, "qualified function names are not allowed (%s.%s)",
                schema != NULL ? schema : "", name);
        return -1;
    }
    bool denied = IN_LIST(name, denied_functions);
    for (size_t i = 0; !denied && i < sizeof(denied_prefixes) / sizeof(denied_prefixes[0]); i++) {
        denied = strncasecmp(name, denied_prefixes[i], strlen(denied_prefixes[i])) == 0;
    }
    if (denied) {
        set_msg(g->msg, g->msglen, "function %s is not allowed", name);
        return -1;
    }
    return 0;
}

static int check_table_ref(struct gate *g, json_t *o, const char *type)
{
    if (!IN_LIST(type, allowed_ref_types)) {
        if (strcmp(type, "SHOW_REF") == 0) {
            set_msg(g->msg, g->msglen,
                    "SHOW, DESCRIBE and SUMMARIZE are not allowed; query the tables spans, logs "
                    "and metrics");
        } else {
            set_msg(g->msg, g->msglen, "table reference of kind %s is not allowed", type);
        }
        return -1;
    }
    if (strcmp(type, "BASE_TABLE") == 0) {
        const char *name = str_member(o, "table_name");
        if (name == NULL) {
            set_msg(g->msg, g->msglen, "table reference without a name");
            return -1;
        }
        if (!empty_member(o, "schema_name") || !empty_member(o, "catalog_name")) {
            set_msg(g->msg, g->msglen,
                    "qualified table names are not allowed (%s): use spans, logs or metrics", name);
            return -1;
        }
        json_t *at = json_object_get(o, "at_clause");
        if (at != NULL && !json_is_null(at)) {
            set_msg(g->msg, g->msglen, "AT clauses are not allowed");
            return -1;
        }
        if (!IN_LIST(name, allowed_tables) && !in_scope(g, name)) {
            set_msg(g->msg, g->msglen,
                    "table %s is not allowed: only spans, logs and metrics can be queried", name);
            return -1;
        }
    } else if (strcmp(type, "TABLE_FUNCTION") == 0) {
        json_t *fn = json_object_get(o, "function");
        const char *name = json_is_object(fn) ? str_member(fn, "function_name") : NULL;
        if (name == NULL || !IN_LIST(name, allowed_table_functions)) {
            set_msg(g->msg, g->msglen,
                    "table function %s is not allowed (only range, generate_series and unnest)",
                    name != NULL ? name : "(unknown)");
            return -1;
        }
    }
    return 0;
}

/*
 * A query node with CTEs: each CTE's body sees the CTEs before it (and itself only when it is
 * recursive, which shows as a RECURSIVE_CTE_NODE carrying cte_name), the rest of the node sees
 * them all.
 */
static int walk_ctes(struct gate *g, json_t *o, int depth)
{
    json_t *map = json_object_get(json_object_get(o, "cte_map"), "map");
    size_t saved = g->nscope;
    int rc = 0;
    if (map != NULL && !json_is_array(map)) {
        set_msg(g->msg, g->msglen, "unexpected syntax tree (cte_map)");
        return -1;
    }
    size_t i;
    json_t *entry;
    json_array_foreach(map, i, entry)
    {
        const char *name = str_member(entry, "key");
        if (name == NULL) {
            set_msg(g->msg, g->msglen, "unexpected syntax tree (CTE without a name)");
            rc = -1;
            break;
        }
        rc = walk(g, json_object_get(entry, "value"), depth + 1);
        if (rc == 0) {
            rc = push_scope(g, name);
        }
        if (rc != 0) {
            break;
        }
    }
    const char *key;
    json_t *member;
    json_object_foreach(o, key, member)
    {
        if (rc != 0) {
            break;
        }
        if (strcmp(key, "cte_map") == 0) {
            continue;
        }
        rc = walk(g, member, depth + 1);
    }
    g->nscope = saved;
    return rc;
}

static int walk(struct gate *g, json_t *v, int depth)
{
    if (depth > GATE_MAX_DEPTH) {
        set_msg(g->msg, g->msglen, "the statement is nested too deeply");
        return -1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (walk(g, item, depth + 1) != 0) {
                return -1;
            }
        }
        return 0;
    }
    if (!json_is_object(v)) {
        return 0;
    }

    const char *type = str_member(v, "type");
    bool is_expr = json_object_get(v, "class") != NULL;
    if (type != NULL && !is_expr && json_object_get(v, "alias") != NULL &&
        json_object_get(v, "sample") != NULL) {
        if (check_table_ref(g, v, type) != 0) {
            return -1;
        }
    }
    if (type != NULL && strcmp(type, "SHOW_REF") == 0) {
        return check_table_ref(g, v, type);
    }
    if (check_function(g, v) != 0) {
        return -1;
    }
    /* A recursive CTE's body sees its own name: push it before anything below is walked. */
    size_t saved = g->nscope;
    const char *rec = str_member(v, "cte_name");
    if (rec != NULL && type != NULL && strcmp(type, "RECURSIVE_CTE_NODE") == 0 &&
        push_scope(g, rec) != 0) {
        return -1;
    }
    int rc = 0;
    if (json_object_get(v, "cte_map") != NULL) {
        rc = walk_ctes(g, v, depth);
    } else {
        const char *key;
        json_t *member;
        json_object_foreach(v, key, member)
        {
            rc = walk(g, member, depth + 1);
            if (rc != 0) {
                break;
            }
        }
    }
    g->nscope = saved;
    return rc;
}

/* ---- the gate ------------------------------------------------------------------------------ */

/* Skips whitespace and comments (-- to the end of the line, non-nested block comments). */
static const char *skip_space(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v') {
            p++;
        }
        if (p[0] == '-' && p[1] == '-') {
            while (*p != '\0' && *p != '\n') {
                p++;
            }
            continue;
        }
        if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            if (end == NULL) {
                return p; /* Unterminated: the parser will say so. */
            }
            p = end + 2;
            continue;
        }
        return p;
    }
}

/* Whether |p| starts with the keyword |kw| (case-insensitive) followed by a non-word byte. */
static bool keyword(const char *p, const char *kw)
{
    size_t n = strlen(kw);
    if (strncasecmp(p, kw, n) != 0) {
        return false;
    }
    char c = p[n];
    return !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || (unsigned char)c >= 0x80);
}

/*
 * Serializes |sql| with json_serialize_sql (a function call on a constant: nothing else runs)
 * and parses the result. Returns the JSON (caller frees), or NULL with |msg| set.
 */
static json_t *serialize(duckdb_connection conn, const char *sql, char *msg, size_t msglen)
{
    duckdb_prepared_statement st = NULL;
    duckdb_result res;
    json_t *root = NULL;
    if (duckdb_prepare(conn, "SELECT json_serialize_sql($1::VARCHAR)", &st) != DuckDBSuccess) {
        set_msg(msg, msglen, "cannot prepare the SQL check: %s", duckdb_prepare_error(st));
        duckdb_destroy_prepare(&st);
        return NULL;
    }
    if (duckdb_bind_varchar(st, 1, sql) != DuckDBSuccess) {
        set_msg(msg, msglen, "cannot bind the SQL check");
        duckdb_destroy_prepare(&st);
        return NULL;
    }
    if (duckdb_execute_prepared(st, &res) != DuckDBSuccess) {
        set_msg(msg, msglen, "%s", duckdb_result_error(&res));
        goto out;
    }
    char *text = duckdb_value_varchar(&res, 0, 0);
    if (text == NULL) {
        set_msg(msg, msglen, "the SQL check returned nothing");
        goto out;
    }
    json_error_t jerr;
    /* query_location is a uint64 (UINT64_MAX when unknown), beyond json_int_t: read numbers as
       doubles, the walker looks only at strings. */
    root = json_loads(text, JSON_DECODE_INT_AS_REAL, &jerr);
    duckdb_free(text);
    if (root == NULL) {
        set_msg(msg, msglen, "cannot read the syntax tree: %s", jerr.text);
    }
out:
    duckdb_destroy_result(&res);
    duckdb_destroy_prepare(&st);
    return root;
}

int sink_sql_gate(duckdb_connection conn, const char *sql, size_t len, enum sink_sql_kind *kind,
                  char *msg, size_t msglen)
{
    if (len == 0) {
        set_msg(msg, msglen, "empty query");
        return DLOTEL_ERR_UNSUPPORTED;
    }
    if (len > SQL_MAX_LEN) {
        set_msg(msg, msglen, "query longer than %zu bytes", SQL_MAX_LEN);
        return DLOTEL_ERR_UNSUPPORTED;
    }
    if (memchr(sql, '\0', len) != NULL) {
        set_msg(msg, msglen, "query contains a NUL byte");
        return DLOTEL_ERR_UNSUPPORTED;
    }
    char *text = malloc(len + 1);
    if (text == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    memcpy(text, sql, len);
    text[len] = '\0';

    int rc = DLOTEL_ERR_UNSUPPORTED;
    json_t *root = NULL;
    duckdb_extracted_statements ext = NULL;
    idx_t n = duckdb_extract_statements(conn, text, &ext);
    if (n == 0) {
        const char *e = duckdb_extract_statements_error(ext);
        set_msg(msg, msglen, "%s", e != NULL ? e : "no statement");
        rc = e != NULL ? DLOTEL_ERR_BAD_INPUT : DLOTEL_ERR_UNSUPPORTED;
        goto out;
    }
    if (n != 1) {
        set_msg(msg, msglen, "exactly one statement is allowed, got %llu", (unsigned long long)n);
        goto out;
    }

    const char *inner = text;
    enum sink_sql_kind k = SINK_SQL_SELECT;
    const char *p = skip_space(text);
    if (keyword(p, "EXPLAIN")) {
        k = SINK_SQL_EXPLAIN;
        p = skip_space(p + 7);
        if (keyword(p, "ANALYZE") || keyword(p, "ANALYSE")) {
            p = skip_space(p + 7);
        }
        if (*p == '(') {
            set_msg(msg, msglen, "EXPLAIN options are not supported");
            goto out;
        }
        inner = p;
    }

    root = serialize(conn, inner, msg, msglen);
    if (root == NULL) {
        goto out;
    }
    if (json_is_true(json_object_get(root, "error"))) {
        const char *etype = str_member(root, "error_type");
        const char *emsg = str_member(root, "error_message");
        if (etype != NULL && strcmp(etype, "not implemented") == 0) {
            set_msg(msg, msglen, "only SELECT and EXPLAIN statements are allowed");
        } else {
            set_msg(msg, msglen, "%s", emsg != NULL ? emsg : "the statement does not parse");
            rc = DLOTEL_ERR_BAD_INPUT;
        }
        goto out;
    }
    json_t *stmts = json_object_get(root, "statements");
    if (!json_is_array(stmts) || json_array_size(stmts) != 1) {
        set_msg(msg, msglen, "exactly one statement is allowed");
        goto out;
    }
    struct gate g = {.msg = msg, .msglen = msglen, .nscope = 0};
    if (walk(&g, json_array_get(stmts, 0), 0) != 0) {
        goto out;
    }
    *kind = k;
    rc = 0;

out:
    json_decref(root);
    duckdb_destroy_extracted(&ext);
    free(text);
    return rc;
}

/* ---- the watchdog -------------------------------------------------------------------------- */

struct wd_entry {
    struct wd_entry *next;
    duckdb_connection conn;
    uint64_t deadline_ns; /* Monotonic. */
    bool fired;
};

struct sink_watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct wd_entry *head;
    bool stop;
};

static void *watchdog_main(void *arg)
{
    struct sink_watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        uint64_t now = time_monotonic_nano();
        uint64_t next = 0;
        for (struct wd_entry *e = w->head; e != NULL; e = e->next) {
            if (e->fired) {
                continue;
            }
            if (e->deadline_ns <= now) {
                /* Safe under the lock: the query thread removes its entry under it too. */
                duckdb_interrupt(e->conn);
                e->fired = true;
            } else if (next == 0 || e->deadline_ns < next) {
                next = e->deadline_ns;
            }
        }
        if (next == 0) {
            pthread_cond_wait(&w->cond, &w->mu);
        } else {
            /* The condition variable runs on CLOCK_MONOTONIC (see sink_watchdog_new). */
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u),
                                  .tv_nsec = (long)(next % 1000000000u)};
            pthread_cond_timedwait(&w->cond, &w->mu, &ts);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int sink_watchdog_new(struct sink_watchdog **out)
{
    struct sink_watchdog *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int err = pthread_mutex_init(&w->mu, NULL);
    if (err == 0) {
        err = pthread_cond_init(&w->cond, &ca);
        if (err != 0) {
            pthread_mutex_destroy(&w->mu);
        }
    }
    pthread_condattr_destroy(&ca);
    if (err != 0) {
        free(w);
        return DLOTEL_ERR_NOMEM;
    }
    if (pthread_create(&w->thread, NULL, watchdog_main, w) != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return DLOTEL_ERR_NOMEM;
    }
    *out = w;
    return 0;
}

void sink_watchdog_free(struct sink_watchdog *w)
{
    if (w == NULL) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static void watchdog_add(struct sink_watchdog *w, struct wd_entry *e)
{
    pthread_mutex_lock(&w->mu);
    e->next = w->head;
    w->head = e;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

/* Returns whether the entry's deadline fired. */
static bool watchdog_remove(struct sink_watchdog *w, struct wd_entry *e)
{
    pthread_mutex_lock(&w->mu);
    for (struct wd_entry **pp = &w->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    bool fired = e->fired;
    pthread_mutex_unlock(&w->mu);
    return fired;
}

/* ---- running a query ----------------------------------------------------------------------- */

/* Writes {"success":false,"error":"..."} to |out| (after emptying it) and returns |rc|. */
static int answer_error(struct buf *out, size_t start, int rc, const char *message)
{
    out->len = start;
    int w = buf_append(out, "{\"success\":false,\"error\":", 25);
    if (w == 0) {
        w = sink_json_str(out, message, strlen(message));
    }
    if (w == 0) {
        w = buf_putc(out, '}');
    }
    if (w == 0) {
        w = buf_terminate(out);
    }
    return w != 0 && rc == 0 ? w : rc;
}

/* Creates the three TEMP views of this connection, filtered to |user_uid| unless admin. */
static int scope_views(duckdb_connection conn, const char *user_uid, bool admin, char *err,
                       size_t errlen)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < SINK_TABLES; t++) {
        buf_reset(&b);
        rc = buf_printf(&b, "CREATE OR REPLACE TEMP VIEW \"%s\" AS SELECT * FROM main.\"%s\"",
                        sink_tables[t].name, sink_tables[t].all);
        if (rc == 0 && !admin) {
            /* No user: a filter no row passes (user_uid = NULL is never true). */
            if (user_uid == NULL || user_uid[0] == '\0') {
                rc = buf_printf(&b, " WHERE false");
            } else {
                rc = buf_printf(&b, " WHERE user_uid = ");
                if (rc == 0) {
                    rc = sink_sql_literal(&b, user_uid);
                }
            }
        }
        if (rc == 0) {
            rc = buf_terminate(&b);
        }
        if (rc == 0 && sink_exec(conn, (const char *)b.data, err, errlen) != 0) {
            rc = DLOTEL_ERR_INTERNAL;
        }
    }
    buf_cleanup(&b);
    return rc;
}

/* Appends the value of row |r| of a VARCHAR/JSON vector: JSON text as is, or a JSON string. */
static int put_value(struct buf *out, duckdb_vector vec, idx_t r, bool raw_json)
{
    uint64_t *valid = duckdb_vector_get_validity(vec);
    if (valid != NULL && !duckdb_validity_row_is_valid(valid, r)) {
        return buf_append(out, "null", 4);
    }
    duckdb_string_t *strs = duckdb_vector_get_data(vec);
    const char *p = duckdb_string_t_data(&strs[r]);
    uint32_t n = duckdb_string_t_length(strs[r]);
    return raw_json ? sink_json_sanitize(out, p, n) : sink_json_str(out, p, n);
}

static void trim_tail(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ';' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' ||
                     s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
}

int sink_sql_query(duckdb_database db, struct sink_watchdog *w, const char *sql,
                   const char *user_uid, unsigned flags, const char *const *params, size_t n_params,
                   uint64_t row_cap, uint64_t timeout_ms, struct buf *out)
{
    if (sql == NULL || out == NULL || (n_params > 0 && params == NULL)) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (row_cap == 0) {
        row_cap = DEFAULT_ROW_CAP;
    }
    if (timeout_ms == 0) {
        timeout_ms = DEFAULT_TIMEOUT_MS;
    }
    size_t start = out->len;
    char msg[1024] = "";
    duckdb_connection conn = NULL;
    duckdb_prepared_statement st = NULL;
    duckdb_result res;
    bool have_res = false;
    struct buf text;
    buf_init(&text, SQL_MAX_LEN + 256);
    struct wd_entry wd = {0};
    bool watched = false;
    int rc;

    if (duckdb_connect(db, &conn) != DuckDBSuccess) {
        return answer_error(out, start, DLOTEL_ERR_CLOSED, "the sink is not open");
    }
    rc = scope_views(conn, user_uid, (flags & SINK_QUERY_ADMIN) != 0, msg, sizeof(msg));
    if (rc != 0) {
        rc = answer_error(out, start, DLOTEL_ERR_INTERNAL, msg);
        goto out;
    }

    enum sink_sql_kind kind;
    rc = sink_sql_gate(conn, sql, strlen(sql), &kind, msg, sizeof(msg));
    if (rc != 0) {
        rc = answer_error(out, start, rc, msg);
        goto out;
    }

    /* A SELECT runs wrapped, so that DuckDB's to_json renders every value. */
    if (kind == SINK_SQL_SELECT) {
        rc = buf_printf(&text, "SELECT to_json(COLUMNS(*)) FROM (\n%s", sql);
        if (rc == 0) {
            rc = buf_terminate(&text);
        }
        if (rc == 0) {
            trim_tail((char *)text.data);
            text.len = strlen((const char *)text.data);
            rc = buf_printf(&text, "\n) AS _dlotel_q");
        }
        if (rc == 0) {
            rc = buf_terminate(&text);
        }
        if (rc != 0) {
            rc = answer_error(out, start, rc, "out of memory");
            goto out;
        }
        enum sink_sql_kind k2;
        rc = sink_sql_gate(conn, (const char *)text.data, text.len, &k2, msg, sizeof(msg));
        if (rc != 0 || k2 != SINK_SQL_SELECT) {
            rc = answer_error(out, start, rc != 0 ? rc : DLOTEL_ERR_UNSUPPORTED, msg);
            goto out;
        }
    } else {
        rc = buf_append(&text, sql, strlen(sql));
        if (rc == 0) {
            rc = buf_terminate(&text);
        }
        if (rc != 0) {
            rc = answer_error(out, start, rc, "out of memory");
            goto out;
        }
    }

    if (duckdb_prepare(conn, (const char *)text.data, &st) != DuckDBSuccess) {
        rc = answer_error(out, start, DLOTEL_ERR_BAD_INPUT, duckdb_prepare_error(st));
        goto out;
    }
    duckdb_statement_type stype = duckdb_prepared_statement_type(st);
    if (stype !=
        (kind == SINK_SQL_SELECT ? DUCKDB_STATEMENT_TYPE_SELECT : DUCKDB_STATEMENT_TYPE_EXPLAIN)) {
        rc = answer_error(out, start, DLOTEL_ERR_UNSUPPORTED,
                          "only SELECT and EXPLAIN statements are allowed");
        goto out;
    }
    if (duckdb_nparams(st) != n_params) {
        set_msg(msg, sizeof(msg), "the query has %llu parameters, %zu were given",
                (unsigned long long)duckdb_nparams(st), n_params);
        rc = answer_error(out, start, DLOTEL_ERR_BAD_INPUT, msg);
        goto out;
    }
    for (size_t i = 0; i < n_params; i++) {
        if (params[i] == NULL ? duckdb_bind_null(st, i + 1) != DuckDBSuccess
                              : duckdb_bind_varchar(st, i + 1, params[i]) != DuckDBSuccess) {
            rc = answer_error(out, start, DLOTEL_ERR_BAD_INPUT, "cannot bind a parameter");
            goto out;
        }
    }

    if (w != NULL) {
        wd.conn = conn;
        wd.deadline_ns = time_monotonic_nano() + timeout_ms * 1000000u;
        watchdog_add(w, &wd);
        watched = true;
    }
    duckdb_state est = duckdb_execute_prepared_streaming(st, &res);
    have_res = true;
    if (est != DuckDBSuccess) {
        goto run_failed;
    }

    /* {"success":true,"columns":[...],"data":[{...},...],"count":n,"truncated":b} */
    idx_t ncols = duckdb_column_count(&res);
    rc = buf_append(out, "{\"success\":true,\"columns\":[", 27);
    for (idx_t c = 0; rc == 0 && c < ncols; c++) {
        const char *name = duckdb_column_name(&res, c);
        if (c > 0) {
            rc = buf_putc(out, ',');
        }
        if (rc == 0) {
            rc = sink_json_str(out, name, strlen(name));
        }
    }
    if (rc == 0) {
        rc = buf_append(out, "],\"data\":[", 10);
    }
    uint64_t count = 0;
    bool truncated = false;
    while (rc == 0) {
        duckdb_data_chunk chunk = duckdb_fetch_chunk(res);
        if (chunk == NULL) {
            break;
        }
        idx_t rows = duckdb_data_chunk_get_size(chunk);
        for (idx_t r = 0; rc == 0 && r < rows; r++) {
            if (count == row_cap) {
                truncated = true;
                break;
            }
            rc = buf_append(out, count > 0 ? ",{" : "{", count > 0 ? 2 : 1);
            for (idx_t c = 0; rc == 0 && c < ncols; c++) {
                const char *name = duckdb_column_name(&res, c);
                if (c > 0) {
                    rc = buf_putc(out, ',');
                }
                if (rc == 0) {
                    rc = sink_json_str(out, name, strlen(name));
                }
                if (rc == 0) {
                    rc = buf_putc(out, ':');
                }
                if (rc == 0) {
                    rc = put_value(out, duckdb_data_chunk_get_vector(chunk, c), r,
                                   kind == SINK_SQL_SELECT);
                }
            }
            if (rc == 0) {
                rc = buf_putc(out, '}');
            }
            count++;
        }
        duckdb_destroy_data_chunk(&chunk);
        if (truncated) {
            break;
        }
    }
    if (rc != 0) {
        rc = answer_error(out, start, rc,
                          rc == DLOTEL_ERR_TOO_LARGE ? "the answer is too large: add a LIMIT"
                                                     : "out of memory");
        goto out;
    }
    /* A streaming result that failed half-way reports it here. */
    const char *late = duckdb_result_error(&res);
    if (late != NULL && !truncated) {
        goto run_failed;
    }
    rc = buf_printf(out, "],\"count\":%llu,\"truncated\":%s}", (unsigned long long)count,
                    truncated ? "true" : "false");
    if (rc == 0) {
        rc = buf_terminate(out);
    }
    if (rc != 0) {
        rc = answer_error(out, start, rc, "the answer is too large: add a LIMIT");
    }
    goto out;

run_failed : {
    bool fired = watched && watchdog_remove(w, &wd);
    watched = false;
    if (fired || duckdb_result_error_type(&res) == DUCKDB_ERROR_INTERRUPT) {
        set_msg(msg, sizeof(msg), "the query ran longer than %llu ms and was interrupted",
                (unsigned long long)timeout_ms);
        rc = answer_error(out, start, DLOTEL_ERR_TIMEOUT, msg);
    } else {
        const char *e = duckdb_result_error(&res);
        rc = answer_error(out, start, DLOTEL_ERR_BAD_INPUT, e != NULL ? e : "the query failed");
    }
}

out:
    if (watched) {
        watchdog_remove(w, &wd);
    }
    if (have_res) {
        duckdb_destroy_result(&res);
    }
    if (st != NULL) {
        duckdb_destroy_prepare(&st);
    }
    buf_cleanup(&text);
    duckdb_disconnect(&conn);
    return rc;
}
