/*
 * The SQL sandbox's gate (agent/sink/sink_sql.c) on arbitrary text, then, when the gate accepts,
 * the whole query path (temp views, wrapping, prepare, run with a deadline and a row cap).
 *
 * It must never crash, and what it accepts must touch only the allowed relations. The oracle is
 * independent of the gate's own walk: DuckDB's duckdb_get_table_names() must list nothing but
 * spans, logs and metrics, unqualified (it leaves out CTE references, which is what we want), and
 * running it must never read a tripwire: in the fuzz database the bookkeeping tables are views
 * that call pg_dlotel_tripwire(), a C function that counts its calls. (Users cannot call it
 * themselves: the gate refuses every pg_ function. A counter, not an error text, so that a
 * statement that merely prints the word cannot raise a false alarm.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <duckdb.h>

#include "core/buf.h"
#include "dlotel.h"
#include "sink/sink_int.h"

static duckdb_database db;
static duckdb_connection conn;
static struct sink_watchdog *watchdog;
static uint64_t tripwire_calls;

static void tripwire(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output)
{
    (void)info;
    idx_t n = duckdb_data_chunk_get_size(input);
    int32_t *out = duckdb_vector_get_data(output);
    for (idx_t i = 0; i < n; i++) {
        out[i] = 0;
    }
    tripwire_calls++;
}

static void must(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sql_gate setup: %s\n", what);
        abort();
    }
}

static void setup(void)
{
    char err[512] = "";
    must(duckdb_open(NULL, &db) == DuckDBSuccess, "duckdb_open");
    must(duckdb_connect(db, &conn) == DuckDBSuccess, "duckdb_connect");
    /* The hot tables and the views of the real schema, over no files. */
    must(sink_schema_create(conn, err, sizeof(err)) == 0, err);
    struct buf b;
    buf_init(&b, 1 << 20);
    for (int t = 0; t < SINK_TABLES; t++) {
        buf_reset(&b);
        must(sink_schema_view_sql(&b, &sink_tables[t], NULL, 0) == 0, "view sql");
        must(sink_exec(conn, (const char *)b.data, err, sizeof(err)) == 0, err);
    }
    buf_cleanup(&b);
    duckdb_scalar_function f = duckdb_create_scalar_function();
    duckdb_scalar_function_set_name(f, "pg_dlotel_tripwire");
    duckdb_logical_type int_type = duckdb_create_logical_type(DUCKDB_TYPE_INTEGER);
    duckdb_scalar_function_set_return_type(f, int_type);
    duckdb_destroy_logical_type(&int_type);
    duckdb_scalar_function_set_volatile(f);
    duckdb_scalar_function_set_function(f, tripwire);
    must(duckdb_register_scalar_function(conn, f) == DuckDBSuccess, "register tripwire");
    duckdb_destroy_scalar_function(&f);
    /* Tripwires where the bookkeeping lives, and a few rows to compute over. */
    must(sink_exec(conn,
                   "DROP TABLE sink_manifest; DROP TABLE sink_state; DROP TABLE sink_trash;"
                   "CREATE VIEW sink_manifest AS SELECT pg_dlotel_tripwire() AS x;"
                   "CREATE VIEW sink_state AS SELECT pg_dlotel_tripwire() AS x;"
                   "CREATE VIEW sink_trash AS SELECT pg_dlotel_tripwire() AS x;"
                   "INSERT INTO spans_hot (_seq, _date, trace_id, span_name, user_uid) VALUES "
                   "(1, DATE '2026-01-01', 'aa', 'a', 'fuzz'), (2, DATE '2026-01-01', 'bb', "
                   "'b', 'other');"
                   "SET enable_external_access = false; SET lock_configuration = true;",
                   err, sizeof(err)) == 0,
         err);
    must(sink_watchdog_new(&watchdog) == 0, "watchdog");
}

/* The oracle on an accepted statement: DuckDB's own list of the tables it names. */
static void check_tables(const char *sql)
{
    duckdb_value names = duckdb_get_table_names(conn, sql, true);
    if (names == NULL) {
        return; /* DuckDB could not list them (a table function it cannot plan): nothing named. */
    }
    idx_t n = duckdb_get_list_size(names);
    for (idx_t i = 0; i < n; i++) {
        duckdb_value v = duckdb_get_list_child(names, i);
        char *name = duckdb_get_varchar(v);
        /* An aliased reference comes back as "spans AS s". */
        char *as = name != NULL ? strstr(name, " AS ") : NULL;
        if (as != NULL) {
            *as = '\0';
        }
        if (name != NULL && strcasecmp(name, "spans") != 0 && strcasecmp(name, "logs") != 0 &&
            strcasecmp(name, "metrics") != 0) {
            fprintf(stderr, "the gate accepted a statement naming %s:\n%s\n", name, sql);
            abort();
        }
        duckdb_free(name);
        duckdb_destroy_value(&v);
    }
    duckdb_destroy_value(&names);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (db == NULL) {
        setup();
    }
    if (size > 4096) {
        return 0; /* Long inputs add nothing the gate has not seen, and cost time. */
    }
    char *sql = malloc(size + 1);
    if (sql == NULL) {
        return 0;
    }
    memcpy(sql, data, size);
    sql[size] = '\0';

    enum sink_sql_kind kind;
    char msg[512];
    int rc = sink_sql_gate(conn, (const char *)data, size, &kind, msg, sizeof(msg));
    if (rc == 0) {
        if (memchr(data, '\0', size) != NULL) {
            fprintf(stderr, "the gate accepted a NUL byte\n");
            abort();
        }
        check_tables(sql);
        struct buf out;
        buf_init(&out, 1 << 20);
        uint64_t before = tripwire_calls;
        sink_sql_query(db, watchdog, sql, "fuzz", 0, NULL, 0, 5, 50, &out);
        if (tripwire_calls != before) {
            fprintf(stderr, "an accepted statement read the bookkeeping tables:\n%s\n", sql);
            abort();
        }
        buf_cleanup(&out);
    }
    free(sql);
    return 0;
}
