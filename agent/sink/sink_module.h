/*
 * The DuckDB sink as a shared module (DESIGN.md section 2, footprint rule; section 5, the sink).
 *
 * Everything that touches DuckDB lives in libdlotel_sink.so, which the daemon loads with dlopen
 * only when a sink is configured; the forwarding agent never maps the 64 MB libduckdb. The module
 * exports exactly one symbol, SINK_MODULE_ENTRY, a function returning a static table of
 * callbacks. The table starts with its ABI version so that a module from another build is refused
 * before any of its callbacks run.
 *
 * What the module does (docs/sink.md has the whole story):
 *   - append(): OTLP requests (protobuf bytes) are queued to one writer thread, which decodes
 *     them (otlp_unpack into an arena), turns them into rows of the tables spans, logs and metrics
 *     and appends them with DuckDB's appender into a persistent hot buffer (<data>/hot.duckdb).
 *     Every request queued while the writer was busy goes into one transaction (group commit);
 *     DuckDB writes and fsyncs its WAL at COMMIT, and only then is each request's |done| called.
 *   - Parquet: the hot rows are flushed as one generation at max_rows_per_file rows, after
 *     flush_interval_ms, on flush() and on close(), into
 *     <data>/<table>/date=YYYY-MM-DD/part-<gen>-<n>.parquet (zstd), recorded in a manifest table.
 *     Crash-safe: see docs/sink.md, "Flush protocol".
 *   - Compaction of small files per date, retention by whole date= folders, an optional disk cap.
 *   - query(): the SQL sandbox over the views spans, logs and metrics (Parquet files UNION the hot
 *     rows, so a row is visible as soon as its append is acknowledged).
 *
 * This header is shared by the module and by its loader (sink_loader.h); it must not include
 * duckdb.h, because the loader's users must not depend on DuckDB's headers either.
 *
 * Threads: every callback may be called from any thread, concurrently, except close(), which must
 * be the last call on a handle. flush(), maintain() and query() block the caller: do not call them
 * on an event loop thread that must stay responsive (the exporter's flush op uses
 * request_flush(), which does not block).
 */
#ifndef DLOTEL_SINK_MODULE_H
#define DLOTEL_SINK_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/*
 * Bumped whenever struct sink_module_api or struct sink_options changes in any way (new member,
 * new meaning). A module and a loader agree only when the numbers are equal: there is no
 * "compatible" range, since both are built from the same tree.
 *
 * 1: probe only. 2: the sink (open ... stats).
 */
#define SINK_MODULE_ABI_VERSION 2u

/* The name of the module's only exported symbol, of type sink_module_entry_fn. */
#define SINK_MODULE_ENTRY "dlotel_sink_module_api"

/* The file name the loader looks for when no path is given. */
#define SINK_MODULE_FILENAME "libdlotel_sink.so"

/* Signals, numbered as enum otlp_signal (otlp/otlp.h), which this header must not include. */
#define SINK_SIGNAL_TRACES  0
#define SINK_SIGNAL_METRICS 1
#define SINK_SIGNAL_LOGS    2

/* A sink: one data directory, one DuckDB database, one writer thread. */
struct sink;

/*
 * Settings of one sink. Fill with sink_options_init() (the defaults below), then change what
 * differs; every member is copied by open().
 */
struct sink_options {
    /* Required. Created (0700) when missing. Holds hot.duckdb, .staging/ and the Parquet tree. */
    const char *data_dir;
    /* Rows per Parquet file, and the hot row count that triggers a flush. Default 100000. */
    uint64_t max_rows_per_file;
    /* Days of data kept (whole UTC dates); 0 keeps everything. Default 30. */
    uint32_t retention_days;
    /* Age of the oldest hot row that triggers a flush; 0 disables age flushes. Default 60 s. */
    uint64_t flush_interval_ms;
    /* How often compaction, retention, the disk cap and file removal run; 0: only through
       maintain(). Default 10 min. */
    uint64_t maintenance_interval_ms;
    /* Parquet plus hot buffer bytes above which the oldest dates are dropped; 0: no cap. */
    uint64_t disk_cap_bytes;
    /* How long a file replaced by compaction or dropped by retention stays on disk, so that
       queries that already planned with it finish. Default 60 s. */
    uint64_t gc_grace_ms;
    /* Bytes of requests queued to the writer before append() answers DLOTEL_ERR_FULL. Default
       256 MiB. */
    uint64_t queue_max_bytes;
    /* DuckDB's memory_limit in bytes (queries and ingest together). Default 1 GiB. */
    uint64_t memory_limit_bytes;
    /* DuckDB's worker threads. Default 2. */
    uint32_t threads;
    /*
     * Where the module's log lines go: |level| is enum log_level (core/log.h: 0 error .. 3
     * debug), |message| one line without a newline. NULL: the module writes them to stderr
     * itself. Called from the module's threads; must be thread-safe.
     */
    void (*log)(void *userdata, int level, const char *message);
    void *log_userdata;
    /* The most verbose level passed to |log|. Default 2 (info). */
    int log_level;
};

/* Fills |o| with the defaults documented above; data_dir is NULL. */
static inline void sink_options_init(struct sink_options *o)
{
    *o = (struct sink_options){
        .data_dir = NULL,
        .max_rows_per_file = 100000,
        .retention_days = 30,
        .flush_interval_ms = 60000,
        .maintenance_interval_ms = 600000,
        .disk_cap_bytes = 0,
        .gc_grace_ms = 60000,
        .queue_max_bytes = (uint64_t)256 * 1024 * 1024,
        .memory_limit_bytes = (uint64_t)1024 * 1024 * 1024,
        .threads = 2,
        .log = NULL,
        .log_userdata = NULL,
        .log_level = 2,
    };
}

/*
 * Called once per accepted append(), from the sink's writer thread (never from inside append()).
 * |status|:
 *   0                      the rows are committed: durable (DuckDB's WAL is fsynced) and visible
 *                          to query();
 *   DLOTEL_ERR_BAD_INPUT   the request does not decode; nothing was stored (permanent);
 *   DLOTEL_ERR_TOO_LARGE   decoding it needs more memory than the decode arena allows
 *                          (permanent);
 *   DLOTEL_ERR_IO          DuckDB failed to store it (disk full, ...): try again later;
 *   DLOTEL_ERR_CLOSED      the sink closed before the request was stored (only after a failed
 *                          shutdown; close() normally stores everything queued).
 * |message| is for people (may be NULL when status is 0) and valid only during the call.
 */
typedef void (*sink_append_done_fn)(void *userdata, int status, const char *message);

/* Flags of query(). */
#define SINK_QUERY_ADMIN 1u /* Unscoped: every user's rows (DESIGN.md section 6, /system/sql). */

struct sink_module_api {
    /* SINK_MODULE_ABI_VERSION of the build that made the module. Always the first member. */
    uint32_t abi_version;
    /* sizeof(struct sink_module_api) in the module's build, a second guard against a mismatch. */
    uint32_t struct_size;
    /* "dlotel_sink", for log lines. */
    const char *name;
    /*
     * Checks that DuckDB works inside this process: opens an in-memory database, runs
     * SELECT 42, and closes it again.
     *
     * On success returns the value the query produced (42) and writes DuckDB's library version
     * (for example "v1.4.4") to |out|, NUL-terminated and truncated to |len|. On failure returns
     * DLOTEL_ERR_MODULE (DuckDB refused to open or to run the query) or DLOTEL_ERR_INVALID_ARG
     * (|out| NULL or |len| 0) and writes DuckDB's error text to |out| when there is room.
     */
    int (*probe)(char *out, size_t len);

    /*
     * Opens the sink in o->data_dir: creates the directory, opens (or creates) hot.duckdb with
     * DuckDB locked down (enable_external_access=false, allowed_directories=[data_dir],
     * lock_configuration=true, no extension autoload/autoinstall, memory_limit, threads,
     * TimeZone UTC), creates or checks the schema, recovers from a crash (removes files no
     * manifest lists, redoes an interrupted flush, see docs/sink.md), builds the views, and
     * starts the writer thread. Another process holding the same data directory makes this fail.
     *
     * On success stores the sink in |*out|. On failure |*out| is untouched and a sentence for
     * people is written to |detail| (when not NULL; size |detail_len|). Returns 0,
     * DLOTEL_ERR_INVALID_ARG (no data_dir, max_rows_per_file 0), DLOTEL_ERR_IO (the directory
     * or the database cannot be opened: permissions, held by another process), DLOTEL_ERR_NOMEM
     * or DLOTEL_ERR_INTERNAL (DuckDB refused our own SQL: a bug).
     */
    int (*open)(struct sink **out, const struct sink_options *o, char *detail, size_t detail_len);

    /*
     * Stores everything queued (each |done| is called), flushes the hot rows to Parquet, stops
     * the writer thread and closes DuckDB. NULL is a no-op. No other call may run on |s| during
     * or after this one.
     */
    void (*close)(struct sink *s);

    /*
     * Queues one encoded Export{Trace,Metrics,Logs}ServiceRequest of |signal| (SINK_SIGNAL_*)
     * for the writer. |pb| and |user_uid| are copied. |user_uid|, when not NULL, is stored as
     * every row's user_uid instead of the resource attribute datalayer.user_uid (for an ingest
     * endpoint that knows the caller). The bytes should have passed otlp_scan(); the writer
     * checks them again.
     *
     * Returns 0 (|done| will be called exactly once, from the writer thread); or, without
     * calling |done|: DLOTEL_ERR_FULL (queue_max_bytes are queued: shed load, retry later),
     * DLOTEL_ERR_CLOSED, DLOTEL_ERR_INVALID_ARG (bad signal, NULL done), DLOTEL_ERR_NOMEM.
     */
    int (*append)(struct sink *s, int signal, const uint8_t *pb, size_t len, const char *user_uid,
                  sink_append_done_fn done, void *userdata);

    /*
     * Waits until everything appended before the call is committed, then writes every hot row
     * to Parquet (one generation). Blocks; for /flush and tools. Returns 0, DLOTEL_ERR_IO
     * (writing or renaming a file failed; the rows stay in the hot buffer and the next flush
     * retries) or DLOTEL_ERR_CLOSED; |detail| as in open().
     */
    int (*flush)(struct sink *s, char *detail, size_t detail_len);

    /* Asks the writer to flush soon, without waiting (SIGUSR1, pipeline_flush). */
    void (*request_flush)(struct sink *s);

    /*
     * Runs the maintenance now, in this order: flush (as flush()), compaction of every date
     * with two or more small files, retention, the disk cap, removal of replaced files whose
     * grace period is over. Blocks. Returns as flush().
     */
    int (*maintain)(struct sink *s, char *detail, size_t detail_len);

    /*
     * Runs user SQL in the sandbox and appends the answer to |out| as JSON:
     *   {"success":true,"columns":["a","b"],"data":[{"a":1,"b":"x"},...],"count":2,
     *    "truncated":false}
     * rows as objects keyed by column name (duplicate names get _1, _2 suffixes, as DuckDB
     * does), values as DuckDB's to_json gives them (maps as objects, lists as arrays,
     * timestamps as strings, JSON columns embedded; NaN and infinities as null). On failure:
     *   {"success":false,"error":"..."}
     * and a negative code.
     *
     * The gate: exactly one statement, SELECT (FROM-first, VALUES and set operations included)
     * or EXPLAIN [ANALYZE] of one; tables spans, logs, metrics and the statement's own CTEs only,
     * never schema- or catalog-qualified; table functions range, generate_series and unnest
     * only; no functions that read settings, variables or sequences. Without SINK_QUERY_ADMIN
     * in |flags| the three tables hold only rows whose user_uid equals |user_uid| (NULL or ""
     * sees nothing). |params| (may be NULL) are |n_params| texts bound to $1..$n.
     *
     * At most |row_cap| rows are returned (0: 10000); more sets "truncated":true. A query that
     * runs longer than |timeout_ms| (0: 30 s) is interrupted (duckdb_interrupt).
     *
     * Returns 0; DLOTEL_ERR_UNSUPPORTED (refused by the gate: 403/400), DLOTEL_ERR_BAD_INPUT
     * (DuckDB's parser or binder refused it, or it failed at run time: 400), DLOTEL_ERR_TIMEOUT,
     * DLOTEL_ERR_TOO_LARGE (the answer passes out->max; |out| then holds what fit, do not send
     * it), DLOTEL_ERR_NOMEM, DLOTEL_ERR_CLOSED, DLOTEL_ERR_INVALID_ARG (NULL sql or out).
     */
    int (*query)(struct sink *s, const char *sql, const char *user_uid, unsigned flags,
                 const char *const *params, size_t n_params, uint64_t row_cap, uint64_t timeout_ms,
                 struct buf *out);

    /*
     * Appends figures as JSON to |out|:
     *   {"data_dir":"...","db_bytes":n,"generation":n,
     *    "tables":{"spans":{"hot_rows":n,"files":n,"file_rows":n,"file_bytes":n,
     *                       "dates":["2026-01-01",...]},"logs":{...},"metrics":{...}},
     *    "ingest":{"requests":n,"rows":n,"commits":n,"rejected":n},"flushes":n,
     *    "compactions":n}
     * Returns 0, DLOTEL_ERR_TOO_LARGE, DLOTEL_ERR_NOMEM or DLOTEL_ERR_IO.
     */
    int (*stats)(struct sink *s, struct buf *out);
};

typedef const struct sink_module_api *(*sink_module_entry_fn)(void);

#endif
