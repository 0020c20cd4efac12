/*
 * libdlotel_sink.so: the one place that links DuckDB. This file holds the entry point and the
 * probe; the sink itself is in sink_store.c (open, close, the writer thread, group commit),
 * sink_rows.c (OTLP to rows), sink_flush.c (Parquet, recovery, compaction, retention),
 * sink_sql.c (the SQL sandbox) and sink_schema.c (tables and views).
 */
#include <stdio.h>
#include <string.h>

#include <duckdb.h>

#include "dlotel.h"
#include "sink/sink_int.h"
#include "sink/sink_module.h"

/*
 * The whole build uses -fvisibility=hidden, so only this symbol leaves the module: the loader's
 * dlsym finds it, and nothing else in here can clash with the host process's symbols.
 */
#define SINK_EXPORT __attribute__((visibility("default")))

/* Copies |s| into |out| (size |len| > 0), truncating, always NUL-terminated. */
static void copy_text(char *out, size_t len, const char *s)
{
    int w = snprintf(out, len, "%s", s != NULL ? s : "");
    (void)w; /* Truncation is fine: the text is for humans. */
}

static int probe(char *out, size_t len)
{
    duckdb_database db = NULL;
    duckdb_connection conn = NULL;
    duckdb_result res;
    duckdb_data_chunk chunk = NULL;
    int rv = DLOTEL_ERR_MODULE;

    if (out == NULL || len == 0) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    out[0] = '\0';

    /* NULL path: an in-memory database that leaves no file behind. */
    if (duckdb_open(NULL, &db) != DuckDBSuccess) {
        copy_text(out, len, "duckdb_open(:memory:) failed");
        return DLOTEL_ERR_MODULE;
    }
    if (duckdb_connect(db, &conn) != DuckDBSuccess) {
        copy_text(out, len, "duckdb_connect failed");
        goto out_db;
    }
    if (duckdb_query(conn, "SELECT 42::BIGINT AS answer", &res) != DuckDBSuccess) {
        copy_text(out, len, duckdb_result_error(&res));
        goto out_result;
    }
    if (duckdb_column_count(&res) != 1 || duckdb_column_type(&res, 0) != DUCKDB_TYPE_BIGINT) {
        copy_text(out, len, "SELECT 42 returned an unexpected shape");
        goto out_chunk;
    }
    chunk = duckdb_fetch_chunk(res);
    if (chunk == NULL || duckdb_data_chunk_get_size(chunk) != 1) {
        copy_text(out, len, "SELECT 42 returned no row");
        goto out_chunk;
    }
    duckdb_vector vec = duckdb_data_chunk_get_vector(chunk, 0);
    uint64_t *validity = duckdb_vector_get_validity(vec);
    if (validity != NULL && !duckdb_validity_row_is_valid(validity, 0)) {
        copy_text(out, len, "SELECT 42 returned NULL");
        goto out_chunk;
    }
    int64_t answer = ((const int64_t *)duckdb_vector_get_data(vec))[0];
    if (answer < 0 || answer > 0x7fffffff) {
        copy_text(out, len, "SELECT 42 returned a value out of range");
        goto out_chunk;
    }
    copy_text(out, len, duckdb_library_version());
    rv = (int)answer;

    /* Success and failure share the cleanup below, in reverse order of acquisition. */
out_chunk:
    if (chunk != NULL) {
        duckdb_destroy_data_chunk(&chunk);
    }
out_result:
    /* duckdb_query fills |res| even when it fails, so it is destroyed on both paths. */
    duckdb_destroy_result(&res);
    duckdb_disconnect(&conn);
out_db:
    duckdb_close(&db);
    return rv;
}

static const struct sink_module_api api = {
    .abi_version = SINK_MODULE_ABI_VERSION,
    .struct_size = (uint32_t)sizeof(struct sink_module_api),
    .name = "dlotel_sink",
    .probe = probe,
    .open = sink_store_open,
    .close = sink_store_close,
    .append = sink_store_append,
    .flush = sink_store_flush,
    .request_flush = sink_store_request_flush,
    .maintain = sink_store_maintain,
    .query = sink_store_query,
    .stats = sink_store_stats,
};

SINK_EXPORT const struct sink_module_api *dlotel_sink_module_api(void);

const struct sink_module_api *dlotel_sink_module_api(void)
{
    return &api;
}
