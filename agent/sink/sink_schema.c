/*
 * The schema of DESIGN.md section 5: three hot tables (the DuckDB buffer), the bookkeeping tables
 * of the flush protocol, and the views that put Parquet files and hot rows together.
 *
 * Column names are the ones the Datalayer clients read. Every table has two internal columns in
 * front: _seq, the row's place in the global append order (a flush takes "every hot row up to
 * _seq N", which stays the same set of rows if the flush has to be redone after a crash), and
 * _date, the UTC date of the row's time, which picks its date= folder. Neither is written to
 * Parquet: the folder name carries the date, and other engines read it as the hive column "date".
 */
#include <stdio.h>
#include <string.h>

#include "dlotel.h"
#include "sink/sink_int.h"

/* Bumped with every change to the tables below; checked at open. */
#define SINK_SCHEMA_VERSION 1

#define C(n, k)                                                                                    \
    {                                                                                              \
        n, k, false                                                                                \
    }
#define CI(n, k)                                                                                   \
    {                                                                                              \
        n, k, true                                                                                 \
    }

static const struct sink_col span_cols[SP_NCOLS] = {
    [SP_SEQ] = CI("_seq", SK_BIGINT),
    [SP_DATE] = CI("_date", SK_DATE),
    [SP_TRACE_ID] = C("trace_id", SK_VARCHAR),
    [SP_SPAN_ID] = C("span_id", SK_VARCHAR),
    [SP_PARENT_SPAN_ID] = C("parent_span_id", SK_VARCHAR),
    [SP_TRACE_STATE] = C("trace_state", SK_VARCHAR),
    [SP_SPAN_NAME] = C("span_name", SK_VARCHAR),
    [SP_SPAN_KIND] = C("span_kind", SK_VARCHAR),
    [SP_SERVICE_NAME] = C("service_name", SK_VARCHAR),
    [SP_USER_UID] = C("user_uid", SK_VARCHAR),
    [SP_START_NS] = C("start_time_unix_nano", SK_BIGINT),
    [SP_END_NS] = C("end_time_unix_nano", SK_BIGINT),
    [SP_DURATION_NS] = C("duration_ns", SK_BIGINT),
    [SP_START_TIME] = C("start_time", SK_TSTZ),
    [SP_END_TIME] = C("end_time", SK_TSTZ),
    [SP_STATUS_CODE] = C("status_code", SK_VARCHAR),
    [SP_STATUS_MESSAGE] = C("status_message", SK_VARCHAR),
    [SP_SCOPE_NAME] = C("scope_name", SK_VARCHAR),
    [SP_SCOPE_VERSION] = C("scope_version", SK_VARCHAR),
    [SP_FLAGS] = C("flags", SK_BIGINT),
    [SP_ATTRIBUTES] = C("attributes", SK_MAP),
    [SP_RESOURCE_ATTRIBUTES] = C("resource_attributes", SK_MAP),
    [SP_EVENTS] = C("events", SK_JSON),
    [SP_LINKS] = C("links", SK_JSON),
    [SP_DROPPED_ATTRIBUTES] = C("dropped_attributes_count", SK_BIGINT),
    [SP_DROPPED_EVENTS] = C("dropped_events_count", SK_BIGINT),
    [SP_DROPPED_LINKS] = C("dropped_links_count", SK_BIGINT),
};

static const struct sink_col metric_cols[MT_NCOLS] = {
    [MT_SEQ] = CI("_seq", SK_BIGINT),
    [MT_DATE] = CI("_date", SK_DATE),
    [MT_METRIC_NAME] = C("metric_name", SK_VARCHAR),
    [MT_METRIC_DESCRIPTION] = C("metric_description", SK_VARCHAR),
    [MT_METRIC_UNIT] = C("metric_unit", SK_VARCHAR),
    [MT_METRIC_TYPE] = C("metric_type", SK_VARCHAR),
    [MT_SERVICE_NAME] = C("service_name", SK_VARCHAR),
    [MT_USER_UID] = C("user_uid", SK_VARCHAR),
    [MT_START_NS] = C("start_time_unix_nano", SK_BIGINT),
    [MT_TIME_NS] = C("timestamp_unix_nano", SK_BIGINT),
    [MT_TIMESTAMP] = C("timestamp", SK_TSTZ),
    [MT_VALUE_DOUBLE] = C("value_double", SK_DOUBLE),
    [MT_VALUE_INT] = C("value_int", SK_BIGINT),
    [MT_COUNT] = C("count", SK_BIGINT),
    [MT_SUM] = C("sum", SK_DOUBLE),
    [MT_MIN] = C("min", SK_DOUBLE),
    [MT_MAX] = C("max", SK_DOUBLE),
    [MT_BUCKET_COUNTS] = C("bucket_counts", SK_LIST_BIGINT),
    [MT_EXPLICIT_BOUNDS] = C("explicit_bounds", SK_LIST_DOUBLE),
    [MT_SCALE] = C("scale", SK_INTEGER),
    [MT_ZERO_COUNT] = C("zero_count", SK_BIGINT),
    [MT_ZERO_THRESHOLD] = C("zero_threshold", SK_DOUBLE),
    [MT_POS_OFFSET] = C("positive_offset", SK_INTEGER),
    [MT_POS_BUCKETS] = C("positive_bucket_counts", SK_LIST_BIGINT),
    [MT_NEG_OFFSET] = C("negative_offset", SK_INTEGER),
    [MT_NEG_BUCKETS] = C("negative_bucket_counts", SK_LIST_BIGINT),
    [MT_QUANTILES] = C("quantiles", SK_LIST_DOUBLE),
    [MT_QUANTILE_VALUES] = C("quantile_values", SK_LIST_DOUBLE),
    [MT_TEMPORALITY] = C("aggregation_temporality", SK_VARCHAR),
    [MT_MONOTONIC] = C("is_monotonic", SK_BOOLEAN),
    [MT_FLAGS] = C("flags", SK_BIGINT),
    [MT_SCOPE_NAME] = C("scope_name", SK_VARCHAR),
    [MT_SCOPE_VERSION] = C("scope_version", SK_VARCHAR),
    [MT_ATTRIBUTES] = C("attributes", SK_MAP),
    [MT_RESOURCE_ATTRIBUTES] = C("resource_attributes", SK_MAP),
    [MT_EXEMPLARS] = C("exemplars", SK_JSON),
};

static const struct sink_col log_cols[LG_NCOLS] = {
    [LG_SEQ] = CI("_seq", SK_BIGINT),
    [LG_DATE] = CI("_date", SK_DATE),
    [LG_TIME_NS] = C("timestamp_unix_nano", SK_BIGINT),
    [LG_OBSERVED_NS] = C("observed_timestamp_unix_nano", SK_BIGINT),
    [LG_TIMESTAMP] = C("timestamp", SK_TSTZ),
    [LG_SEVERITY_NUMBER] = C("severity_number", SK_INTEGER),
    [LG_SEVERITY_TEXT] = C("severity_text", SK_VARCHAR),
    [LG_BODY] = C("body", SK_VARCHAR),
    [LG_TRACE_ID] = C("trace_id", SK_VARCHAR),
    [LG_SPAN_ID] = C("span_id", SK_VARCHAR),
    [LG_FLAGS] = C("flags", SK_BIGINT),
    [LG_EVENT_NAME] = C("event_name", SK_VARCHAR),
    [LG_SERVICE_NAME] = C("service_name", SK_VARCHAR),
    [LG_USER_UID] = C("user_uid", SK_VARCHAR),
    [LG_SCOPE_NAME] = C("scope_name", SK_VARCHAR),
    [LG_SCOPE_VERSION] = C("scope_version", SK_VARCHAR),
    [LG_ATTRIBUTES] = C("attributes", SK_MAP),
    [LG_RESOURCE_ATTRIBUTES] = C("resource_attributes", SK_MAP),
    [LG_DROPPED_ATTRIBUTES] = C("dropped_attributes_count", SK_BIGINT),
};

/* Indexed like enum otlp_signal: traces, metrics, logs. */
const struct sink_table_def sink_tables[SINK_TABLES] = {
    {
        .name = "spans",
        .hot = "spans_hot",
        .all = "spans_all",
        .time_col = "start_time_unix_nano",
        .aliases = "span_name AS operation_name, duration_ns / 1e6 AS duration_ms",
        .cols = span_cols,
        .ncols = SP_NCOLS,
    },
    {
        .name = "metrics",
        .hot = "metrics_hot",
        .all = "metrics_all",
        .time_col = "timestamp_unix_nano",
        .aliases = "coalesce(value_double, CAST(value_int AS DOUBLE), \"sum\") AS \"value\"",
        .cols = metric_cols,
        .ncols = MT_NCOLS,
    },
    {
        .name = "logs",
        .hot = "logs_hot",
        .all = "logs_all",
        .time_col = "timestamp_unix_nano",
        .aliases = NULL,
        .cols = log_cols,
        .ncols = LG_NCOLS,
    },
};

const char *sink_kind_sql(enum sink_kind k)
{
    switch (k) {
    case SK_VARCHAR:
        return "VARCHAR";
    case SK_BIGINT:
        return "BIGINT";
    case SK_INTEGER:
        return "INTEGER";
    case SK_DOUBLE:
        return "DOUBLE";
    case SK_BOOLEAN:
        return "BOOLEAN";
    case SK_TSTZ:
        return "TIMESTAMPTZ";
    case SK_DATE:
        return "DATE";
    case SK_MAP:
        return "MAP(VARCHAR, VARCHAR)";
    case SK_JSON:
        return "JSON";
    case SK_LIST_BIGINT:
        return "BIGINT[]";
    case SK_LIST_DOUBLE:
        return "DOUBLE[]";
    }
    return "VARCHAR";
}

int sink_sql_literal(struct buf *b, const char *s)
{
    int rc = buf_putc(b, '\'');
    for (const char *p = s; rc == 0 && *p != '\0'; p++) {
        rc = *p == '\'' ? buf_append(b, "''", 2) : buf_putc(b, (uint8_t)*p);
    }
    return rc != 0 ? rc : buf_putc(b, '\'');
}

int sink_schema_columns(struct buf *b, const struct sink_table_def *t)
{
    int rc = 0;
    bool first = true;
    for (size_t i = 0; rc == 0 && i < t->ncols; i++) {
        if (t->cols[i].internal) {
            continue;
        }
        rc = buf_printf(b, "%s\"%s\"", first ? "" : ", ", t->cols[i].name);
        first = false;
    }
    return rc;
}

int sink_exec(duckdb_connection conn, const char *sql, char *err, size_t errlen)
{
    duckdb_result res;
    if (duckdb_query(conn, sql, &res) != DuckDBSuccess) {
        if (err != NULL && errlen > 0) {
            const char *e = duckdb_result_error(&res);
            snprintf(err, errlen, "%s", e != NULL ? e : "unknown DuckDB error");
        }
        duckdb_destroy_result(&res);
        return -1;
    }
    duckdb_destroy_result(&res);
    return 0;
}

/* Reads one BIGINT (or NULL as |def|) from a one-row query. */
static int query_i64(duckdb_connection conn, const char *sql, int64_t def, int64_t *out, char *err,
                     size_t errlen)
{
    duckdb_result res;
    if (duckdb_query(conn, sql, &res) != DuckDBSuccess) {
        snprintf(err, errlen, "%s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return -1;
    }
    *out = def;
    if (duckdb_row_count(&res) > 0 && !duckdb_value_is_null(&res, 0, 0)) {
        *out = duckdb_value_int64(&res, 0, 0);
    }
    duckdb_destroy_result(&res);
    return 0;
}

int sink_schema_create(duckdb_connection conn, char *err, size_t errlen)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    int rc = 0;

    /*
     * The bookkeeping of the flush protocol (sink_flush.c):
     *   sink_state    key/value: schema version, next generation, next row sequence.
     *   sink_manifest every Parquet file the views read, by path relative to the data dir.
     *   sink_pending  a flush or compaction that wrote files but has not committed them yet.
     *   sink_trash    files no longer listed, removed once their grace period is over.
     */
    static const char *const bookkeeping =
        "CREATE TABLE IF NOT EXISTS sink_state (key VARCHAR PRIMARY KEY, value BIGINT);"
        "CREATE TABLE IF NOT EXISTS sink_manifest (path VARCHAR PRIMARY KEY, tbl VARCHAR NOT NULL,"
        " date DATE NOT NULL, gen BIGINT NOT NULL, n BIGINT NOT NULL, rows BIGINT NOT NULL,"
        " bytes BIGINT NOT NULL, created_unix_nano BIGINT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS sink_pending (gen BIGINT PRIMARY KEY, kind VARCHAR NOT NULL,"
        " max_seq BIGINT, max_rows BIGINT);"
        "CREATE TABLE IF NOT EXISTS sink_trash (path VARCHAR PRIMARY KEY,"
        " remove_after_unix_nano BIGINT NOT NULL);";
    if (sink_exec(conn, bookkeeping, err, errlen) != 0) {
        rc = DLOTEL_ERR_INTERNAL;
        goto out;
    }

    int64_t version = 0;
    if (query_i64(conn, "SELECT value FROM sink_state WHERE key = 'schema_version'", 0, &version,
                  err, errlen) != 0) {
        rc = DLOTEL_ERR_INTERNAL;
        goto out;
    }
    if (version != 0 && version != SINK_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "the hot buffer has schema version %lld, this dlotel knows %d: use a matching "
                 "dlotel or another data directory",
                 (long long)version, SINK_SCHEMA_VERSION);
        rc = DLOTEL_ERR_IO;
        goto out;
    }

    for (size_t t = 0; rc == 0 && t < SINK_TABLES; t++) {
        const struct sink_table_def *d = &sink_tables[t];
        buf_reset(&b);
        rc = buf_printf(&b, "CREATE TABLE IF NOT EXISTS main.\"%s\" (", d->hot);
        for (size_t i = 0; rc == 0 && i < d->ncols; i++) {
            rc = buf_printf(&b, "%s\"%s\" %s%s", i ? ", " : "", d->cols[i].name,
                            sink_kind_sql(d->cols[i].kind), d->cols[i].internal ? " NOT NULL" : "");
        }
        if (rc == 0) {
            rc = buf_printf(&b, ")");
        }
        if (rc == 0) {
            rc = buf_terminate(&b);
        }
        if (rc == 0 && sink_exec(conn, (const char *)b.data, err, errlen) != 0) {
            rc = DLOTEL_ERR_INTERNAL;
        }
    }
    if (rc != 0) {
        goto out;
    }
    buf_reset(&b);
    rc = buf_printf(&b,
                    "INSERT INTO sink_state VALUES ('schema_version', %d) ON CONFLICT DO NOTHING",
                    SINK_SCHEMA_VERSION);
    if (rc == 0) {
        rc = buf_terminate(&b);
    }
    if (rc == 0 && sink_exec(conn, (const char *)b.data, err, errlen) != 0) {
        rc = DLOTEL_ERR_INTERNAL;
    }

out:
    buf_cleanup(&b);
    return rc;
}

int sink_schema_view_sql(struct buf *b, const struct sink_table_def *t, const char *const *files,
                         size_t n)
{
    int rc = buf_printf(b, "CREATE OR REPLACE VIEW main.\"%s\" AS SELECT ", t->all);
    if (rc == 0) {
        rc = sink_schema_columns(b, t);
    }
    if (rc == 0) {
        rc = buf_printf(b, ", \"date\"%s%s FROM (", t->aliases != NULL ? ", " : "",
                        t->aliases != NULL ? t->aliases : "");
    }
    if (rc == 0 && n > 0) {
        /*
         * union_by_name: files written by an older schema lack newer columns; hive_types pins
         * the folder's date to DATE instead of letting DuckDB guess.
         */
        rc = buf_printf(b, "SELECT ");
        if (rc == 0) {
            rc = sink_schema_columns(b, t);
        }
        if (rc == 0) {
            rc = buf_printf(b, ", \"date\" FROM read_parquet([");
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (i > 0) {
                rc = buf_putc(b, ',');
            }
            if (rc == 0) {
                rc = sink_sql_literal(b, files[i]);
            }
        }
        if (rc == 0) {
            rc = buf_printf(b, "], hive_partitioning = true, hive_types = {'date': DATE}, "
                               "union_by_name = true) UNION ALL ");
        }
    }
    if (rc == 0) {
        rc = buf_printf(b, "SELECT ");
    }
    if (rc == 0) {
        rc = sink_schema_columns(b, t);
    }
    if (rc == 0) {
        rc = buf_printf(b, ", \"_date\" AS \"date\" FROM main.\"%s\")", t->hot);
    }
    return rc == 0 ? buf_terminate(b) : rc;
}
