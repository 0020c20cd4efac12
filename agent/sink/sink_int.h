/*
 * The sink module's internals, shared by its files (sink_*.c) and by the tests and the fuzz
 * target that link the module's code statically (dlotel_sink_core). Not for other rooms: they
 * use sink_module.h through the loader.
 */
#ifndef DLOTEL_SINK_INT_H
#define DLOTEL_SINK_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <duckdb.h>

#include "core/arena.h"
#include "core/buf.h"
#include "otlp/otlp_pb.h"
#include "sink/sink_module.h"
#include "sink/sink_values.h"

/* ---- schema (sink_schema.c) --------------------------------------------------------------- */

/* One table per signal, indexed like enum otlp_signal. */
#define SINK_TABLES 3

/* How a column is stored in DuckDB, and so how a row writer fills it. */
enum sink_kind {
    SK_VARCHAR,
    SK_BIGINT,
    SK_INTEGER,
    SK_DOUBLE,
    SK_BOOLEAN,
    SK_TSTZ,        /* TIMESTAMPTZ: microseconds since the epoch, UTC. */
    SK_DATE,        /* DATE: days since the epoch. */
    SK_MAP,         /* MAP(VARCHAR, VARCHAR). */
    SK_JSON,        /* JSON (a VARCHAR underneath). */
    SK_LIST_BIGINT, /* BIGINT[] */
    SK_LIST_DOUBLE, /* DOUBLE[] */
};

struct sink_col {
    const char *name;
    enum sink_kind kind;
    bool internal; /* Only in the hot table: not written to Parquet, not in the views. */
};

struct sink_table_def {
    const char *name;     /* "spans", "metrics", "logs": the view users query. */
    const char *hot;      /* "spans_hot", ...: the hot buffer table. */
    const char *all;      /* "spans_all", ...: Parquet UNION hot, unscoped. */
    const char *time_col; /* The BIGINT nanosecond column files are sorted by. */
    const char *aliases;  /* Extra select-list items of the view (Datalayer names). */
    const struct sink_col *cols;
    size_t ncols;
};

extern const struct sink_table_def sink_tables[SINK_TABLES];

/* Column positions, in the order of the hot tables (and so of the appender's chunks). */
enum {
    SP_SEQ,
    SP_DATE,
    SP_TRACE_ID,
    SP_SPAN_ID,
    SP_PARENT_SPAN_ID,
    SP_TRACE_STATE,
    SP_SPAN_NAME,
    SP_SPAN_KIND,
    SP_SERVICE_NAME,
    SP_USER_UID,
    SP_START_NS,
    SP_END_NS,
    SP_DURATION_NS,
    SP_START_TIME,
    SP_END_TIME,
    SP_STATUS_CODE,
    SP_STATUS_MESSAGE,
    SP_SCOPE_NAME,
    SP_SCOPE_VERSION,
    SP_FLAGS,
    SP_ATTRIBUTES,
    SP_RESOURCE_ATTRIBUTES,
    SP_EVENTS,
    SP_LINKS,
    SP_DROPPED_ATTRIBUTES,
    SP_DROPPED_EVENTS,
    SP_DROPPED_LINKS,
    SP_NCOLS
};

enum {
    MT_SEQ,
    MT_DATE,
    MT_METRIC_NAME,
    MT_METRIC_DESCRIPTION,
    MT_METRIC_UNIT,
    MT_METRIC_TYPE,
    MT_SERVICE_NAME,
    MT_USER_UID,
    MT_START_NS,
    MT_TIME_NS,
    MT_TIMESTAMP,
    MT_VALUE_DOUBLE,
    MT_VALUE_INT,
    MT_COUNT,
    MT_SUM,
    MT_MIN,
    MT_MAX,
    MT_BUCKET_COUNTS,
    MT_EXPLICIT_BOUNDS,
    MT_SCALE,
    MT_ZERO_COUNT,
    MT_ZERO_THRESHOLD,
    MT_POS_OFFSET,
    MT_POS_BUCKETS,
    MT_NEG_OFFSET,
    MT_NEG_BUCKETS,
    MT_QUANTILES,
    MT_QUANTILE_VALUES,
    MT_TEMPORALITY,
    MT_MONOTONIC,
    MT_FLAGS,
    MT_SCOPE_NAME,
    MT_SCOPE_VERSION,
    MT_ATTRIBUTES,
    MT_RESOURCE_ATTRIBUTES,
    MT_EXEMPLARS,
    MT_NCOLS
};

enum {
    LG_SEQ,
    LG_DATE,
    LG_TIME_NS,
    LG_OBSERVED_NS,
    LG_TIMESTAMP,
    LG_SEVERITY_NUMBER,
    LG_SEVERITY_TEXT,
    LG_BODY,
    LG_TRACE_ID,
    LG_SPAN_ID,
    LG_FLAGS,
    LG_EVENT_NAME,
    LG_SERVICE_NAME,
    LG_USER_UID,
    LG_SCOPE_NAME,
    LG_SCOPE_VERSION,
    LG_ATTRIBUTES,
    LG_RESOURCE_ATTRIBUTES,
    LG_DROPPED_ATTRIBUTES,
    LG_NCOLS
};

#define SINK_MAX_COLS MT_NCOLS

/* The SQL type of a column kind ("MAP(VARCHAR, VARCHAR)"). */
const char *sink_kind_sql(enum sink_kind k);

/* Appends the comma-separated, quoted names of |t|'s non-internal columns. */
int sink_schema_columns(struct buf *b, const struct sink_table_def *t);

/* Appends |s| as an SQL string literal ('...' with quotes doubled). */
int sink_sql_literal(struct buf *b, const char *s);

/* Creates the hot tables and the bookkeeping tables when missing; checks the schema version. */
int sink_schema_create(duckdb_connection conn, char *err, size_t errlen);

/*
 * Appends CREATE OR REPLACE VIEW main.<t>_all AS ... for table |t|: the Parquet files listed in
 * |files| (|n| absolute paths) with hive_partitioning, UNION ALL the hot rows, plus the alias
 * columns. With no files, only the hot rows.
 */
int sink_schema_view_sql(struct buf *b, const struct sink_table_def *t, const char *const *files,
                         size_t n);

/* ---- JSON, value text and the rows' values: sink_values.h (no DuckDB, shared with the stream) */

/* ---- row writers (sink_rows.c) ------------------------------------------------------------- */

/* Fills one table's appender through DuckDB data chunks, vector by vector. */
struct sink_tw {
    const struct sink_table_def *def;
    duckdb_appender app;
    duckdb_data_chunk chunk;
    idx_t row; /* Rows filled in |chunk|. */
    idx_t cap; /* duckdb_vector_size(). */
    duckdb_vector vec[SINK_MAX_COLS];
    void *data[SINK_MAX_COLS];
    uint64_t *valid[SINK_MAX_COLS];
};

int sink_tw_init(struct sink_tw *tw, duckdb_connection conn, const struct sink_table_def *def,
                 char *err, size_t errlen);
void sink_tw_cleanup(struct sink_tw *tw);
/* Hands the rows filled so far to the appender and flushes it into the open transaction. */
int sink_tw_flush(struct sink_tw *tw, char *err, size_t errlen);
/*
 * After a failed transaction: drops the rows of the chunk and destroys the appender. Call it
 * while the failed transaction is still open (destroying an appender flushes its cache, which
 * must land in that transaction and go with its rollback), then ROLLBACK, then sink_tw_reopen.
 */
void sink_tw_discard(struct sink_tw *tw);
int sink_tw_reopen(struct sink_tw *tw, duckdb_connection conn, char *err, size_t errlen);

/* What the row emitter needs besides the decoded request. */
struct sink_emit {
    struct sink_tw *tw[SINK_TABLES];
    uint64_t *next_seq;         /* The row sequence, advanced per row. */
    const char *user_uid;       /* Overrides datalayer.user_uid when not NULL. */
    struct buf scratch;         /* A map value's text. */
    struct buf json;            /* events, links, exemplars. */
    uint64_t rows[SINK_TABLES]; /* Rows emitted per table since the last reset. */
    char err[256];
};

void sink_emit_init(struct sink_emit *e);
void sink_emit_cleanup(struct sink_emit *e);

/*
 * Turns one decoded request of |signal| into rows of its table. Returns 0, DLOTEL_ERR_NOMEM,
 * DLOTEL_ERR_TOO_LARGE (a value passes the scratch limits) or DLOTEL_ERR_IO (DuckDB refused the
 * chunk; e->err says why).
 */
int sink_emit_request(struct sink_emit *e, int signal, const ProtobufCMessage *msg);

/* ---- the SQL sandbox (sink_sql.c) ---------------------------------------------------------- */

enum sink_sql_kind {
    SINK_SQL_SELECT = 1,
    SINK_SQL_EXPLAIN = 2,
};

/*
 * The gate, before anything is bound or run: |sql| must be exactly one statement that is a
 * SELECT, or EXPLAIN [ANALYZE] of one, whose table references are only spans, logs, metrics
 * and the statement's own CTEs in scope (unqualified), whose table functions are on the
 * allowlist, and that calls no function on the denylist. |conn| is used to parse
 * (duckdb_extract_statements, json_serialize_sql); nothing is executed against data.
 *
 * Returns 0 and sets |*kind|; DLOTEL_ERR_UNSUPPORTED with the reason in |msg|; DLOTEL_ERR_BAD_INPUT
 * when DuckDB cannot parse it (the parser's message in |msg|); DLOTEL_ERR_NOMEM.
 */
int sink_sql_gate(duckdb_connection conn, const char *sql, size_t len, enum sink_sql_kind *kind,
                  char *msg, size_t msglen);

/* Runs deadlines for queries: calls duckdb_interrupt on a connection whose time is up. */
struct sink_watchdog;
int sink_watchdog_new(struct sink_watchdog **out);
void sink_watchdog_free(struct sink_watchdog *w);

/*
 * The whole query path on |db|: a fresh connection, the per-user temp views, the gate, the
 * run with a deadline and a row cap, the JSON answer. See sink_module_api.query. |w| may be
 * NULL (no timeout).
 */
int sink_sql_query(duckdb_database db, struct sink_watchdog *w, const char *sql,
                   const char *user_uid, unsigned flags, const char *const *params, size_t n_params,
                   uint64_t row_cap, uint64_t timeout_ms, struct buf *out);

/* ---- the store (sink_store.c, sink_flush.c) ------------------------------------------------ */

/* A request for the writer thread. */
struct sink_req {
    struct sink_req *next;
    int kind; /* SINK_REQ_* */
    int signal;
    uint8_t *pb;
    size_t len;
    char *user_uid;
    sink_append_done_fn done;
    void *userdata;
    /* Synchronous requests (flush, maintain): the caller waits for |finished|. */
    bool finished;
    int status;
    char detail[256];
};

enum {
    SINK_REQ_APPEND = 0,
    SINK_REQ_FLUSH = 1,
    SINK_REQ_MAINTAIN = 2,
};

struct sink {
    struct sink_options o;
    char *data_dir; /* Absolute, no trailing slash. */
    /* The entry in this process's list of open data directories (sink_store.c). */
    struct open_dir {
        struct open_dir *next;
        const char *path; /* == data_dir */
    } dir_node;
    bool dir_claimed;

    duckdb_database db;
    duckdb_connection wconn; /* The writer thread's own. */
    struct sink_tw tw[SINK_TABLES];
    struct sink_emit emit;
    struct arena arena;
    struct sink_watchdog *watchdog;

    pthread_t writer;
    bool writer_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* The writer waits for work here. */
    pthread_cond_t sync_cond; /* Callers of flush()/maintain() wait here. */
    struct sink_req *head;
    struct sink_req *tail;
    uint64_t queued_bytes;
    bool stopping;
    bool flush_requested;
    bool closed; /* Set once the writer has exited. */

    /* Writer-thread state. */
    uint64_t next_seq;
    uint64_t next_gen;
    uint64_t hot_rows[SINK_TABLES];
    uint64_t hot_since_ns; /* Monotonic time of the first hot row since the last flush; 0: none. */
    uint64_t next_maintenance_ns;
    uint64_t flush_backoff_until_ns; /* Monotonic; 0: none. */
    /* A flush that recorded its generation but has not committed: redone before anything else. */
    uint64_t pending_gen; /* 0: none. */
    uint64_t pending_seq;
    uint64_t pending_rows;

    /* Counters, under |mu|. */
    uint64_t n_requests;
    uint64_t n_rows;
    uint64_t n_commits;
    uint64_t n_rejected;
    uint64_t n_flushes;
    uint64_t n_compactions;
};

/* Log through o->log, or to stderr. */
void sink_log(struct sink *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs |sql| on |conn|; on failure copies DuckDB's message to |err|. Returns 0 or -1. */
int sink_exec(duckdb_connection conn, const char *sql, char *err, size_t errlen);

/*
 * The crash-injection points of the flush protocol, for tests: when the environment variable
 * DLOTEL_SINK_CRASH equals |point|, the process kills itself with SIGKILL right there.
 */
void sink_crash_point(const char *point);

/* sink_flush.c: all on the writer thread. */
int sink_flush_recover(struct sink *s, char *err, size_t errlen);
int sink_flush_generation(struct sink *s, char *err, size_t errlen);
int sink_maintain_run(struct sink *s, bool force, char *err, size_t errlen);
int sink_views_rebuild(struct sink *s, duckdb_connection conn, char *err, size_t errlen);
int sink_count_hot(struct sink *s, char *err, size_t errlen);

/* sink_store.c: the module's callbacks. */
int sink_store_open(struct sink **out, const struct sink_options *o, char *detail, size_t len);
void sink_store_close(struct sink *s);
int sink_store_append(struct sink *s, int signal, const uint8_t *pb, size_t len,
                      const char *user_uid, sink_append_done_fn done, void *userdata);
int sink_store_flush(struct sink *s, char *detail, size_t len);
void sink_store_request_flush(struct sink *s);
int sink_store_maintain(struct sink *s, char *detail, size_t len);
int sink_store_query(struct sink *s, const char *sql, const char *user_uid, unsigned flags,
                     const char *const *params, size_t n_params, uint64_t row_cap,
                     uint64_t timeout_ms, struct buf *out);
int sink_store_stats(struct sink *s, struct buf *out);

#endif
