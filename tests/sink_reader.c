/*
 * sink_reader: reads the sink's Parquet files the way another engine would, with nothing of
 * dlotel in between: a fresh in-memory DuckDB, read_parquet over the hive-partitioned tree with
 * hive_partitioning=true, no manifest, no hot buffer. Tests use it as "a separate process" that
 * checks what is on disk after a flush.
 *
 *   sink_reader DATA_DIR SQL
 *
 * SQL may name spans, logs and metrics: views over the files
 * DATA_DIR/<table>/date=.../part-N-M.parquet (a table with no file yet is an empty view with one
 * column, "none"). Prints one JSON object per row (DuckDB's to_json), exits 0; on an error prints
 * it to stderr and exits 1.
 */
#include <stdio.h>
#include <string.h>

#include <glob.h>

#include <duckdb.h>

static int run(duckdb_connection c, const char *sql, int print)
{
    duckdb_result r;
    if (duckdb_query(c, sql, &r) != DuckDBSuccess) {
        fprintf(stderr, "sink_reader: %s\n", duckdb_result_error(&r));
        duckdb_destroy_result(&r);
        return 1;
    }
    if (print) {
        idx_t n = duckdb_row_count(&r);
        for (idx_t i = 0; i < n; i++) {
            char *v = duckdb_value_varchar(&r, 0, i);
            printf("%s\n", v != NULL ? v : "null");
            duckdb_free(v);
        }
    }
    duckdb_destroy_result(&r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: sink_reader DATA_DIR SQL\n");
        return 2;
    }
    duckdb_database db;
    duckdb_connection c;
    if (duckdb_open(NULL, &db) != DuckDBSuccess || duckdb_connect(db, &c) != DuckDBSuccess) {
        fprintf(stderr, "sink_reader: cannot open DuckDB\n");
        return 1;
    }
    static const char *const tables[] = {"spans", "logs", "metrics"};
    char sql[8192];
    for (int t = 0; t < 3; t++) {
        char pattern[4096];
        snprintf(pattern, sizeof(pattern), "%s/%s/date=*/*.parquet", argv[1], tables[t]);
        glob_t g;
        int any = glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0;
        globfree(&g);
        if (any) {
            snprintf(sql, sizeof(sql),
                     "CREATE VIEW %s AS SELECT * FROM read_parquet('%s', hive_partitioning = true)",
                     tables[t], pattern);
        } else {
            snprintf(sql, sizeof(sql), "CREATE VIEW %s AS SELECT NULL AS none WHERE false",
                     tables[t]);
        }
        if (run(c, sql, 0) != 0) {
            return 1;
        }
    }
    snprintf(sql, sizeof(sql), "SELECT to_json(_q) FROM (%s\n) AS _q", argv[2]);
    int rc = run(c, sql, 1);
    duckdb_disconnect(&c);
    duckdb_close(&db);
    return rc;
}
