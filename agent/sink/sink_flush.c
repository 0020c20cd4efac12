/*
 * From the hot buffer to Parquet, and the life of the files after that: flush, recovery after a
 * crash, compaction, retention, the disk cap, removal of replaced files. Everything here runs on
 * the writer thread (or in open(), before it starts), so the hot tables only change here and in
 * the writer's appends, never concurrently.
 *
 * Flush protocol (one generation G):
 *   1. Commit sink_pending(G, max_seq = the last row sequence appended). From now on "the rows
 *      of G" is the fixed set of hot rows with _seq <= max_seq: nothing deletes hot rows except
 *      step 4 of this flush (and retention, which never runs while a flush is pending).
 *   2. For each table and UTC date of those rows, COPY them in runs of at most max_rows rows in
 *      _seq order to .staging/<table>-G-<date>-<n>.parquet.
 *   3. fsync each file, rename it to <table>/date=<date>/part-G-<n>.parquet, fsync the folders.
 *   4. One transaction: the files into sink_manifest, the rows of G out of the hot tables, G out
 *      of sink_pending, the views rebuilt to read the new files. COMMIT.
 * A crash before 4 commits leaves G pending and its rows hot; the views never read files the
 * manifest does not list, so nothing is counted twice meanwhile. On the next open, recovery
 * deletes every part file no manifest row lists and redoes steps 2-4 for G: the same rows,
 * split by the same _seq runs with the same max_rows, so the same file names with the same
 * rows. A crash after 4 committed left nothing to redo. Either way each row
 * ends up in exactly one place. Crash points for tests: sink_crash_point() below.
 *
 * Compaction follows the same shape (pending, stage, rename, one transaction that swaps the
 * manifest rows); an interrupted compaction is simply dropped at recovery: its outputs are not
 * in the manifest, so the sweep deletes them, and its inputs never left.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "sink/sink_int.h"

#define NS_PER_DAY ((uint64_t)86400 * 1000000000)

/* A Parquet file being written by a flush or a compaction. */
struct out_file {
    int tbl;
    char date[16]; /* YYYY-MM-DD */
    uint64_t n;    /* Its number within the generation and date. */
    uint64_t rows;
    uint64_t bytes;
    char staged[PATH_MAX];
    char rel[256]; /* <table>/date=<date>/part-<gen>-<n>.parquet */
};

struct out_files {
    struct out_file *v;
    size_t n;
    size_t cap;
};

static struct out_file *out_add(struct out_files *f)
{
    if (f->n == f->cap) {
        size_t cap = f->cap == 0 ? 16 : f->cap * 2;
        struct out_file *v = realloc(f->v, cap * sizeof(*v));
        if (v == NULL) {
            return NULL;
        }
        f->v = v;
        f->cap = cap;
    }
    struct out_file *o = &f->v[f->n++];
    memset(o, 0, sizeof(*o));
    return o;
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(err, errlen, fmt, ap);
    (void)w;
    va_end(ap);
}

/* Runs the SQL in |b| (terminated here). */
static int exec_buf(duckdb_connection conn, struct buf *b, char *err, size_t errlen)
{
    if (buf_terminate(b) != 0) {
        errf(err, errlen, "out of memory building SQL");
        return DLOTEL_ERR_NOMEM;
    }
    return sink_exec(conn, (const char *)b->data, err, errlen) == 0 ? 0 : DLOTEL_ERR_IO;
}

static void date_text(char out[32], uint64_t days)
{
    time_t secs = (time_t)(days * 86400u);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, 32, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* Writes |a|/|b| to |out|; false when it does not fit (the caller skips that entry). */
static bool join(char *out, size_t n, const char *a, const char *b)
{
    int w = snprintf(out, n, "%s/%s", a, b);
    return w >= 0 && (size_t)w < n;
}

static uint64_t today_days(void)
{
    return time_now_unix_nano() / NS_PER_DAY;
}

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* ---- hot rows and views -------------------------------------------------------------------- */

int sink_count_hot(struct sink *s, char *err, size_t errlen)
{
    duckdb_result res;
    if (duckdb_query(s->wconn,
                     "SELECT (SELECT count(*) FROM main.spans_hot),"
                     " (SELECT count(*) FROM main.metrics_hot),"
                     " (SELECT count(*) FROM main.logs_hot)",
                     &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot count hot rows: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    for (int t = 0; t < SINK_TABLES; t++) {
        s->hot_rows[t] = (uint64_t)duckdb_value_int64(&res, (idx_t)t, 0);
    }
    duckdb_destroy_result(&res);
    if (s->hot_rows[0] + s->hot_rows[1] + s->hot_rows[2] == 0) {
        s->hot_since_ns = 0;
    }
    return 0;
}

static int rebuild_view(struct sink *s, duckdb_connection conn, int t, char *err, size_t errlen)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT path FROM sink_manifest WHERE tbl = '%s' ORDER BY date, gen, n",
             sink_tables[t].name);
    duckdb_result res;
    if (duckdb_query(conn, sql, &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot list files: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    idx_t n = duckdb_row_count(&res);
    char **files = calloc(n > 0 ? n : 1, sizeof(char *));
    int rc = files == NULL ? DLOTEL_ERR_NOMEM : 0;
    for (idx_t i = 0; rc == 0 && i < n; i++) {
        char *rel = duckdb_value_varchar(&res, 0, i);
        size_t len = strlen(s->data_dir) + strlen(rel != NULL ? rel : "") + 2;
        files[i] = malloc(len);
        if (files[i] == NULL) {
            rc = DLOTEL_ERR_NOMEM;
        } else {
            snprintf(files[i], len, "%s/%s", s->data_dir, rel != NULL ? rel : "");
        }
        duckdb_free(rel);
    }
    duckdb_destroy_result(&res);
    struct buf b;
    buf_init(&b, (size_t)256 * 1024 * 1024);
    if (rc == 0) {
        rc = sink_schema_view_sql(&b, &sink_tables[t], (const char *const *)files, n);
    }
    if (rc == 0 && sink_exec(conn, (const char *)b.data, err, errlen) != 0) {
        rc = DLOTEL_ERR_IO;
    } else if (rc != 0) {
        errf(err, errlen, "cannot build the %s view: %s", sink_tables[t].name, dlotel_strerror(rc));
    }
    buf_cleanup(&b);
    for (idx_t i = 0; files != NULL && i < n; i++) {
        free(files[i]);
    }
    free(files);
    return rc;
}

int sink_views_rebuild(struct sink *s, duckdb_connection conn, char *err, size_t errlen)
{
    for (int t = 0; t < SINK_TABLES; t++) {
        int rc = rebuild_view(s, conn, t, err, errlen);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- writing files ------------------------------------------------------------------------- */

/* Names the staged and final paths of |o| for generation |gen|. */
static int name_file(struct sink *s, struct out_file *o, uint64_t gen)
{
    const char *tbl = sink_tables[o->tbl].name;
    int w1 =
        snprintf(o->staged, sizeof(o->staged), "%s/.staging/%s-%" PRIu64 "-%s-%" PRIu64 ".parquet",
                 s->data_dir, tbl, gen, o->date, o->n);
    int w2 = snprintf(o->rel, sizeof(o->rel), "%s/date=%s/part-%" PRIu64 "-%" PRIu64 ".parquet",
                      tbl, o->date, gen, o->n);
    if (w1 < 0 || (size_t)w1 >= sizeof(o->staged) || w2 < 0 || (size_t)w2 >= sizeof(o->rel)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    return 0;
}

/*
 * The order of the rows in compacted files, and the size of their row groups. Compaction sorts
 * all the small files of a date by these keys and cuts the result into files of max_rows rows,
 * so each file, and each row group inside it, holds its own narrow range of keys: DuckDB's
 * Parquet reader skips a row group whose min/max statistics exclude a filter's constant, so a
 * point lookup reads one row group of one file. Spans and logs are looked up by trace
 * (GET /traces/{id}, the logs of a trace), metrics by name; time comes second so that the rows
 * of one key stay in time order.
 *
 * Flushed files keep arrival order in one row group. Sorting them measured a slower lookup, not
 * a faster one: a 100k-row file holds a few thousand traces, so the Bloom filter DuckDB writes
 * for its dictionary-encoded trace_id already skips the files without the id, and many small row
 * groups cost more than they skip. It also cost 3.5 times the bytes, a slower count by service
 * and a slower flush (docs/sink.md, "Row order and row groups").
 */
static const char *const compact_sort_keys[SINK_TABLES] = {
    "trace_id, start_time_unix_nano",   /* spans */
    "metric_name, timestamp_unix_nano", /* metrics */
    "trace_id, timestamp_unix_nano",    /* logs */
};

/*
 * Rows per row group of a compacted file. Every row group repeats its column dictionaries, so
 * smaller groups prune finer but make the files larger and full scans slower.
 */
#define COMPACT_ROW_GROUP_ROWS 16384

/* COPY (<select>) TO <o->staged>, zstd; in row groups of |row_group| rows unless 0. */
static int copy_out(struct sink *s, struct buf *select, uint64_t row_group, struct out_file *o,
                    char *err, size_t errlen)
{
    struct buf b;
    buf_init(&b, select->len + PATH_MAX + 256);
    int rc = buf_printf(&b, "COPY (");
    if (rc == 0) {
        rc = buf_append(&b, select->data, select->len);
    }
    if (rc == 0) {
        rc = buf_printf(&b, ") TO ");
    }
    if (rc == 0) {
        rc = sink_sql_literal(&b, o->staged);
    }
    if (rc == 0) {
        rc = buf_printf(&b, " (FORMAT parquet, COMPRESSION zstd");
    }
    if (rc == 0 && row_group > 0) {
        rc = buf_printf(&b, ", ROW_GROUP_SIZE %" PRIu64, row_group);
    }
    if (rc == 0) {
        rc = buf_printf(&b, ")");
    }
    if (rc == 0) {
        rc = exec_buf(s->wconn, &b, err, errlen);
    } else {
        errf(err, errlen, "out of memory building SQL");
    }
    buf_cleanup(&b);
    return rc;
}

/* Step 3: fsync, rename into the date folders, fsync the folders. */
static int publish(struct sink *s, struct out_files *f, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    for (size_t i = 0; i < f->n; i++) {
        struct out_file *o = &f->v[i];
        if (fsync_path(o->staged, false) != 0) {
            errf(err, errlen, "cannot fsync %s: %s", o->staged, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        struct stat st;
        if (stat(o->staged, &st) != 0) {
            errf(err, errlen, "cannot stat %s: %s", o->staged, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        o->bytes = (uint64_t)st.st_size;
        snprintf(dir, sizeof(dir), "%s/%s", s->data_dir, sink_tables[o->tbl].name);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            errf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        snprintf(dir, sizeof(dir), "%s/%s/date=%s", s->data_dir, sink_tables[o->tbl].name, o->date);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            errf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        char final[PATH_MAX];
        snprintf(final, sizeof(final), "%s/%s", s->data_dir, o->rel);
        if (rename(o->staged, final) != 0) {
            errf(err, errlen, "cannot rename %s to %s: %s", o->staged, final, strerror(errno));
            return DLOTEL_ERR_IO;
        }
    }
    /* The renames are durable once their folders are: each date folder, and the table folders
       that may have gained a date folder. */
    for (size_t i = 0; i < f->n; i++) {
        struct out_file *o = &f->v[i];
        if (i > 0 && o->tbl == f->v[i - 1].tbl && strcmp(o->date, f->v[i - 1].date) == 0) {
            continue;
        }
        snprintf(dir, sizeof(dir), "%s/%s/date=%s", s->data_dir, sink_tables[o->tbl].name, o->date);
        if (fsync_path(dir, true) != 0) {
            errf(err, errlen, "cannot fsync %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        snprintf(dir, sizeof(dir), "%s/%s", s->data_dir, sink_tables[o->tbl].name);
        if (fsync_path(dir, true) != 0) {
            errf(err, errlen, "cannot fsync %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
    }
    return 0;
}

/* Appends INSERT INTO sink_manifest VALUES (...) for every file of |f|. */
static int manifest_insert_sql(struct buf *b, struct out_files *f, uint64_t gen)
{
    int rc = buf_printf(b, "INSERT INTO sink_manifest VALUES ");
    uint64_t now = time_now_unix_nano();
    for (size_t i = 0; rc == 0 && i < f->n; i++) {
        struct out_file *o = &f->v[i];
        rc = buf_printf(b,
                        "%s('%s', '%s', DATE '%s', %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64
                        ", %" PRIu64 ")",
                        i > 0 ? ", " : "", o->rel, sink_tables[o->tbl].name, o->date, gen, o->n,
                        o->rows, o->bytes, now);
    }
    return rc == 0 ? buf_printf(b, ";") : rc;
}

/* Records a new generation as pending in one transaction; advances s->next_gen. */
static int begin_generation(struct sink *s, const char *kind, uint64_t max_seq, uint64_t max_rows,
                            uint64_t *gen, char *err, size_t errlen)
{
    char sql[512];
    *gen = s->next_gen;
    snprintf(sql, sizeof(sql),
             "BEGIN TRANSACTION; INSERT INTO sink_pending VALUES (%" PRIu64 ", '%s', %" PRIu64
             ", %" PRIu64 "); INSERT OR REPLACE INTO sink_state VALUES ('next_gen', %" PRIu64
             "), ('next_seq', %" PRIu64 "); COMMIT;",
             *gen, kind, max_seq, max_rows, *gen + 1, s->next_seq);
    if (sink_exec(s->wconn, sql, err, errlen) != 0) {
        sink_exec(s->wconn, "ROLLBACK", NULL, 0);
        return DLOTEL_ERR_IO;
    }
    pthread_mutex_lock(&s->mu);
    s->next_gen = *gen + 1;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Steps 2-4 of the flush protocol for generation |gen|. */
static int flush_write(struct sink *s, uint64_t gen, uint64_t max_seq, uint64_t max_rows, char *err,
                       size_t errlen)
{
    struct out_files f = {NULL, 0, 0};
    struct buf sel;
    buf_init(&sel, 64 * 1024);
    int rc = 0;
    uint64_t t0 = time_monotonic_nano();

    for (int t = 0; rc == 0 && t < SINK_TABLES; t++) {
        const struct sink_table_def *d = &sink_tables[t];
        /*
         * The files of each date: consecutive runs of at most max_rows rows in _seq order,
         * found from the _seq column alone (cheap), then copied by _seq range. Rows go out in
         * arrival order; sorting by key is left to compaction (see compact_sort_keys).
         */
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "SELECT CAST(_date AS VARCHAR), f, min(_seq), max(_seq), count(*) FROM"
                 " (SELECT _date, _seq, (row_number() OVER (PARTITION BY _date ORDER BY _seq) - 1)"
                 " // %" PRIu64 " AS f FROM main.\"%s\" WHERE _seq <= %" PRIu64 ")"
                 " GROUP BY _date, f ORDER BY _date, f",
                 max_rows, d->hot, max_seq);
        duckdb_result res;
        if (duckdb_query(s->wconn, sql, &res) != DuckDBSuccess) {
            errf(err, errlen, "cannot plan the files of %s: %s", d->hot, duckdb_result_error(&res));
            duckdb_destroy_result(&res);
            rc = DLOTEL_ERR_IO;
            break;
        }
        idx_t nfiles = duckdb_row_count(&res);
        for (idx_t i = 0; rc == 0 && i < nfiles; i++) {
            char *date = duckdb_value_varchar(&res, 0, i);
            struct out_file *o = out_add(&f);
            if (o == NULL) {
                duckdb_free(date);
                rc = DLOTEL_ERR_NOMEM;
                break;
            }
            o->tbl = t;
            snprintf(o->date, sizeof(o->date), "%s", date != NULL ? date : "1970-01-01");
            duckdb_free(date);
            o->n = (uint64_t)duckdb_value_int64(&res, 1, i);
            int64_t lo = duckdb_value_int64(&res, 2, i);
            int64_t hi = duckdb_value_int64(&res, 3, i);
            o->rows = (uint64_t)duckdb_value_int64(&res, 4, i);
            rc = name_file(s, o, gen);
            if (rc != 0) {
                break;
            }
            buf_reset(&sel);
            rc = buf_printf(&sel, "SELECT ");
            if (rc == 0) {
                rc = sink_schema_columns(&sel, d);
            }
            if (rc == 0) {
                rc =
                    buf_printf(&sel,
                               " FROM main.\"%s\" WHERE _date = DATE '%s' AND _seq BETWEEN %" PRId64
                               " AND %" PRId64,
                               d->hot, o->date, lo, hi);
            }
            if (rc == 0) {
                rc = copy_out(s, &sel, 0, o, err, errlen);
            }
        }
        duckdb_destroy_result(&res);
    }
    if (rc != 0) {
        goto out;
    }
    sink_crash_point("flush_after_staging");

    rc = publish(s, &f, err, errlen);
    if (rc != 0) {
        goto out;
    }
    sink_crash_point("flush_after_rename");

    struct buf b;
    buf_init(&b, (size_t)64 * 1024 * 1024);
    rc = buf_printf(&b, "BEGIN TRANSACTION;");
    if (rc == 0 && f.n > 0) {
        rc = manifest_insert_sql(&b, &f, gen);
    }
    for (int t = 0; rc == 0 && t < SINK_TABLES; t++) {
        rc = buf_printf(&b, "DELETE FROM main.\"%s\" WHERE _seq <= %" PRIu64 ";",
                        sink_tables[t].hot, max_seq);
    }
    if (rc == 0) {
        rc = buf_printf(&b, "DELETE FROM sink_pending WHERE gen = %" PRIu64 ";", gen);
    }
    if (rc == 0) {
        rc = exec_buf(s->wconn, &b, err, errlen);
    } else {
        errf(err, errlen, "out of memory building SQL");
    }
    buf_cleanup(&b);
    if (rc == 0) {
        rc = sink_views_rebuild(s, s->wconn, err, errlen);
    }
    if (rc != 0) {
        sink_exec(s->wconn, "ROLLBACK", NULL, 0);
        goto out;
    }
    sink_crash_point("flush_before_commit");
    if (sink_exec(s->wconn, "COMMIT", err, errlen) != 0) {
        sink_exec(s->wconn, "ROLLBACK", NULL, 0);
        rc = DLOTEL_ERR_IO;
        goto out;
    }
    sink_crash_point("flush_after_commit");
    /*
     * The hot rows are gone; a checkpoint now gives their space back and empties the WAL while
     * the table is small. (The automatic checkpoint is set high, see lock_down(), so that it
     * does not rewrite rows that are about to leave for Parquet anyway.) A checkpoint that
     * cannot run now (a long query holds a transaction) is only postponed.
     */
    char cerr[256];
    if (sink_exec(s->wconn, "CHECKPOINT", cerr, sizeof(cerr)) != 0) {
        sink_log(s, LOG_LEVEL_DEBUG, "checkpoint after the flush: %s", cerr);
    }

    uint64_t rows = 0;
    for (size_t i = 0; i < f.n; i++) {
        rows += f.v[i].rows;
    }
    pthread_mutex_lock(&s->mu);
    s->n_flushes++;
    pthread_mutex_unlock(&s->mu);
    sink_log(s, LOG_LEVEL_INFO,
             "flushed generation %" PRIu64 ": %" PRIu64 " rows in %zu files, %" PRIu64 " ms", gen,
             rows, f.n, (time_monotonic_nano() - t0) / 1000000u);
    rc = sink_count_hot(s, err, errlen);

out:
    buf_cleanup(&sel);
    free(f.v);
    return rc;
}

int sink_flush_generation(struct sink *s, char *err, size_t errlen)
{
    int rc;
    if (s->pending_gen != 0) {
        rc = flush_write(s, s->pending_gen, s->pending_seq, s->pending_rows, err, errlen);
        if (rc != 0) {
            return rc;
        }
        s->pending_gen = 0;
    }
    if (s->hot_rows[0] + s->hot_rows[1] + s->hot_rows[2] == 0) {
        return 0;
    }
    uint64_t gen;
    uint64_t max_seq = s->next_seq - 1;
    uint64_t max_rows = s->o.max_rows_per_file;
    rc = begin_generation(s, "flush", max_seq, max_rows, &gen, err, errlen);
    if (rc != 0) {
        return rc;
    }
    sink_crash_point("flush_after_pending");
    s->pending_gen = gen;
    s->pending_seq = max_seq;
    s->pending_rows = max_rows;
    rc = flush_write(s, gen, max_seq, max_rows, err, errlen);
    if (rc == 0) {
        s->pending_gen = 0;
    }
    return rc;
}

/* ---- recovery ------------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every path the manifest or the trash lists, sorted, for the sweep. */
static int known_paths(struct sink *s, char ***out, size_t *n, char *err, size_t errlen)
{
    duckdb_result res;
    if (duckdb_query(s->wconn,
                     "SELECT path FROM sink_manifest UNION ALL SELECT path FROM sink_trash",
                     &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot read the manifest: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    idx_t rows = duckdb_row_count(&res);
    char **v = calloc(rows > 0 ? rows : 1, sizeof(char *));
    if (v == NULL) {
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_NOMEM;
    }
    for (idx_t i = 0; i < rows; i++) {
        v[i] = duckdb_value_varchar(&res, 0, i);
        if (v[i] == NULL) {
            for (idx_t j = 0; j < i; j++) {
                duckdb_free(v[j]);
            }
            free(v);
            duckdb_destroy_result(&res);
            return DLOTEL_ERR_NOMEM;
        }
    }
    duckdb_destroy_result(&res);
    qsort(v, rows, sizeof(char *), cmp_str);
    *out = v;
    *n = rows;
    return 0;
}

/* Removes every file of .staging/ (they were never published). */
static void clean_staging(struct sink *s)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/.staging", s->data_dir);
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char path[PATH_MAX];
        if (!join(path, sizeof(path), dir, de->d_name)) {
            continue;
        }
        if (unlink(path) != 0) {
            sink_log(s, LOG_LEVEL_WARN, "cannot remove %s: %s", path, strerror(errno));
        }
    }
    closedir(d);
}

/*
 * Deletes part-*.parquet files in the <table>/date=... folders that neither the manifest nor the
 * trash lists: outputs of a flush or compaction that did not commit. Other files are left alone.
 */
static int sweep_orphans(struct sink *s, char *err, size_t errlen)
{
    char **known = NULL;
    size_t nknown = 0;
    int rc = known_paths(s, &known, &nknown, err, errlen);
    if (rc != 0) {
        return rc;
    }
    for (int t = 0; t < SINK_TABLES; t++) {
        char tdir[PATH_MAX];
        snprintf(tdir, sizeof(tdir), "%s/%s", s->data_dir, sink_tables[t].name);
        DIR *td = opendir(tdir);
        if (td == NULL) {
            continue;
        }
        struct dirent *de;
        while ((de = readdir(td)) != NULL) {
            if (strncmp(de->d_name, "date=", 5) != 0) {
                continue;
            }
            char ddir[PATH_MAX];
            if (!join(ddir, sizeof(ddir), tdir, de->d_name)) {
                continue;
            }
            DIR *dd = opendir(ddir);
            if (dd == NULL) {
                continue;
            }
            struct dirent *fe;
            while ((fe = readdir(dd)) != NULL) {
                size_t len = strlen(fe->d_name);
                if (strncmp(fe->d_name, "part-", 5) != 0 || len < 8 ||
                    strcmp(fe->d_name + len - 8, ".parquet") != 0) {
                    continue;
                }
                char reldir[PATH_MAX];
                char rel[PATH_MAX];
                if (!join(reldir, sizeof(reldir), sink_tables[t].name, de->d_name) ||
                    !join(rel, sizeof(rel), reldir, fe->d_name)) {
                    continue;
                }
                const char *key = rel;
                if (bsearch(&key, known, nknown, sizeof(char *), cmp_str) != NULL) {
                    continue;
                }
                char path[PATH_MAX];
                if (!join(path, sizeof(path), ddir, fe->d_name)) {
                    continue;
                }
                if (unlink(path) == 0) {
                    sink_log(s, LOG_LEVEL_INFO, "removed %s: no manifest lists it", rel);
                } else {
                    sink_log(s, LOG_LEVEL_WARN, "cannot remove %s: %s", path, strerror(errno));
                }
            }
            closedir(dd);
        }
        closedir(td);
    }
    for (size_t i = 0; i < nknown; i++) {
        duckdb_free(known[i]);
    }
    free(known);
    return 0;
}

/* Deletes the files of the trash whose grace period is over, and their folders once empty. */
static int collect_garbage(struct sink *s, char *err, size_t errlen)
{
    char sql[256];
    uint64_t now = time_now_unix_nano();
    snprintf(sql, sizeof(sql),
             "SELECT path FROM sink_trash WHERE remove_after_unix_nano <= %" PRIu64, now);
    duckdb_result res;
    if (duckdb_query(s->wconn, sql, &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot read the trash: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    idx_t n = duckdb_row_count(&res);
    for (idx_t i = 0; i < n; i++) {
        char *rel = duckdb_value_varchar(&res, 0, i);
        if (rel == NULL) {
            continue;
        }
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", s->data_dir, rel);
        if (unlink(path) != 0 && errno != ENOENT) {
            sink_log(s, LOG_LEVEL_WARN, "cannot remove %s: %s", path, strerror(errno));
        }
        /* The date folder goes with its last file; rmdir fails harmlessly while it has more. */
        char *slash = strrchr(path, '/');
        if (slash != NULL) {
            *slash = '\0';
            if (rmdir(path) == 0) {
                sink_log(s, LOG_LEVEL_INFO, "removed %s", path);
            }
        }
        duckdb_free(rel);
    }
    duckdb_destroy_result(&res);
    if (n > 0) {
        snprintf(sql, sizeof(sql),
                 "DELETE FROM sink_trash WHERE remove_after_unix_nano <= %" PRIu64, now);
        if (sink_exec(s->wconn, sql, err, errlen) != 0) {
            return DLOTEL_ERR_IO;
        }
    }
    return 0;
}

int sink_flush_recover(struct sink *s, char *err, size_t errlen)
{
    clean_staging(s);
    int rc = sweep_orphans(s, err, errlen);
    if (rc != 0) {
        return rc;
    }
    duckdb_result res;
    if (duckdb_query(s->wconn,
                     "SELECT gen, kind, coalesce(max_seq, 0), coalesce(max_rows, 0)"
                     " FROM sink_pending ORDER BY gen",
                     &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot read pending generations: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    idx_t n = duckdb_row_count(&res);
    for (idx_t i = 0; rc == 0 && i < n; i++) {
        uint64_t gen = (uint64_t)duckdb_value_int64(&res, 0, i);
        char *kind = duckdb_value_varchar(&res, 1, i);
        uint64_t max_seq = (uint64_t)duckdb_value_int64(&res, 2, i);
        uint64_t max_rows = (uint64_t)duckdb_value_int64(&res, 3, i);
        if (kind != NULL && strcmp(kind, "flush") == 0 && max_rows > 0) {
            sink_log(s, LOG_LEVEL_WARN,
                     "generation %" PRIu64 " was interrupted by a crash: writing it again", gen);
            s->pending_gen = gen;
            s->pending_seq = max_seq;
            s->pending_rows = max_rows;
            rc = flush_write(s, gen, max_seq, max_rows, err, errlen);
            if (rc == 0) {
                s->pending_gen = 0;
            }
        } else {
            /* An interrupted compaction: its outputs were swept, its inputs are intact. */
            char sql[128];
            snprintf(sql, sizeof(sql), "DELETE FROM sink_pending WHERE gen = %" PRIu64, gen);
            if (sink_exec(s->wconn, sql, err, errlen) != 0) {
                rc = DLOTEL_ERR_IO;
            }
        }
        duckdb_free(kind);
    }
    duckdb_destroy_result(&res);
    if (rc != 0) {
        return rc;
    }
    rc = collect_garbage(s, err, errlen);
    if (rc == 0) {
        /* Always: the data directory may have moved since the views were written. */
        rc = sink_views_rebuild(s, s->wconn, err, errlen);
    }
    return rc;
}

/* ---- compaction ---------------------------------------------------------------------------- */

static int compact_date(struct sink *s, int t, const char *date, char *err, size_t errlen)
{
    const struct sink_table_def *d = &sink_tables[t];
    uint64_t max_rows = s->o.max_rows_per_file;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT path, rows FROM sink_manifest WHERE tbl = '%s' AND date = DATE '%s'"
             " AND rows < %" PRIu64 " ORDER BY gen, n",
             d->name, date, max_rows);
    duckdb_result res;
    if (duckdb_query(s->wconn, sql, &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot list files to compact: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    idx_t nin = duckdb_row_count(&res);
    struct buf inputs; /* The list literal of absolute paths, for read_parquet. */
    struct buf rels;   /* The list literal of manifest paths. */
    buf_init(&inputs, (size_t)64 * 1024 * 1024);
    buf_init(&rels, (size_t)64 * 1024 * 1024);
    uint64_t total = 0;
    int rc = buf_putc(&inputs, '[');
    if (rc == 0) {
        rc = buf_putc(&rels, '(');
    }
    for (idx_t i = 0; rc == 0 && i < nin; i++) {
        char *rel = duckdb_value_varchar(&res, 0, i);
        total += (uint64_t)duckdb_value_int64(&res, 1, i);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", s->data_dir, rel != NULL ? rel : "");
        rc = buf_printf(&inputs, "%s", i > 0 ? "," : "");
        if (rc == 0) {
            rc = sink_sql_literal(&inputs, path);
        }
        if (rc == 0) {
            rc = buf_printf(&rels, "%s", i > 0 ? "," : "");
        }
        if (rc == 0) {
            rc = sink_sql_literal(&rels, rel != NULL ? rel : "");
        }
        duckdb_free(rel);
    }
    duckdb_destroy_result(&res);
    if (rc == 0) {
        rc = buf_putc(&inputs, ']');
    }
    if (rc == 0) {
        rc = buf_putc(&rels, ')');
    }
    struct out_files f = {NULL, 0, 0};
    struct buf sel;
    buf_init(&sel, (size_t)64 * 1024 * 1024 + 4096);
    uint64_t gen = 0;
    if (rc != 0 || nin < 2) {
        goto out;
    }

    rc = begin_generation(s, "compact", 0, max_rows, &gen, err, errlen);
    for (uint64_t n = 0; rc == 0 && n * max_rows < total; n++) {
        struct out_file *o = out_add(&f);
        if (o == NULL) {
            rc = DLOTEL_ERR_NOMEM;
            break;
        }
        o->tbl = t;
        snprintf(o->date, sizeof(o->date), "%s", date);
        o->n = n;
        o->rows = total - n * max_rows < max_rows ? total - n * max_rows : max_rows;
        rc = name_file(s, o, gen);
        if (rc != 0) {
            break;
        }
        /*
         * A total order (file name and row number break ties), so that LIMIT/OFFSET pieces
         * neither overlap nor miss a row. Sorted by compact_sort_keys over all the inputs, each
         * output file holds its own range of keys and whole files are skipped by their
         * statistics too. hive_partitioning off: the date stays in the folder.
         */
        buf_reset(&sel);
        rc = buf_printf(&sel, "SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet(");
        if (rc == 0) {
            rc = buf_append(&sel, inputs.data, inputs.len);
        }
        if (rc == 0) {
            rc = buf_printf(&sel,
                            ", hive_partitioning = false, union_by_name = true, filename = true,"
                            " file_row_number = true) ORDER BY %s, filename, file_row_number"
                            " LIMIT %" PRIu64 " OFFSET %" PRIu64,
                            compact_sort_keys[t], max_rows, n * max_rows);
        }
        if (rc == 0) {
            rc = copy_out(s, &sel, COMPACT_ROW_GROUP_ROWS, o, err, errlen);
        }
    }
    if (rc != 0) {
        goto out;
    }
    sink_crash_point("compact_after_staging");
    rc = publish(s, &f, err, errlen);
    if (rc != 0) {
        goto out;
    }
    sink_crash_point("compact_after_rename");

    struct buf b;
    buf_init(&b, (size_t)200 * 1024 * 1024);
    uint64_t after = time_now_unix_nano() + s->o.gc_grace_ms * 1000000u;
    rc = buf_printf(&b,
                    "BEGIN TRANSACTION; INSERT INTO sink_trash SELECT path, %" PRIu64
                    " FROM sink_manifest WHERE path IN ",
                    after);
    if (rc == 0) {
        rc = buf_append(&b, rels.data, rels.len);
    }
    if (rc == 0) {
        rc = buf_printf(&b, " ON CONFLICT DO NOTHING; DELETE FROM sink_manifest WHERE path IN ");
    }
    if (rc == 0) {
        rc = buf_append(&b, rels.data, rels.len);
    }
    if (rc == 0) {
        rc = buf_printf(&b, ";");
    }
    if (rc == 0) {
        rc = manifest_insert_sql(&b, &f, gen);
    }
    if (rc == 0) {
        rc = buf_printf(&b, "DELETE FROM sink_pending WHERE gen = %" PRIu64 ";", gen);
    }
    if (rc == 0) {
        rc = exec_buf(s->wconn, &b, err, errlen);
    }
    buf_cleanup(&b);
    if (rc == 0) {
        rc = rebuild_view(s, s->wconn, t, err, errlen);
    }
    if (rc != 0) {
        sink_exec(s->wconn, "ROLLBACK", NULL, 0);
        goto out;
    }
    sink_crash_point("compact_before_commit");
    if (sink_exec(s->wconn, "COMMIT", err, errlen) != 0) {
        sink_exec(s->wconn, "ROLLBACK", NULL, 0);
        rc = DLOTEL_ERR_IO;
        goto out;
    }
    pthread_mutex_lock(&s->mu);
    s->n_compactions++;
    pthread_mutex_unlock(&s->mu);
    sink_log(s, LOG_LEVEL_INFO,
             "compacted %llu %s files of %s (%" PRIu64 " rows) into %zu (generation %" PRIu64 ")",
             (unsigned long long)nin, d->name, date, total, f.n, gen);

out:
    if (rc != 0 && gen != 0) {
        /* Leave no half-done compaction behind: forget it and its files now. */
        char sql2[128];
        snprintf(sql2, sizeof(sql2), "DELETE FROM sink_pending WHERE gen = %" PRIu64, gen);
        sink_exec(s->wconn, sql2, NULL, 0);
        for (size_t i = 0; i < f.n; i++) {
            char final[PATH_MAX];
            snprintf(final, sizeof(final), "%s/%s", s->data_dir, f.v[i].rel);
            unlink(f.v[i].staged);
            unlink(final);
        }
    }
    free(f.v);
    buf_cleanup(&sel);
    buf_cleanup(&inputs);
    buf_cleanup(&rels);
    return rc;
}

/*
 * Compacts each date of each table that has two or more small files (fewer rows than
 * max_rows_per_file). Today's date, still being written, waits until it has 8 small files,
 * unless |force|.
 */
static int compact_all(struct sink *s, bool force, char *err, size_t errlen)
{
    char today[32];
    date_text(today, today_days());
    for (int t = 0; t < SINK_TABLES; t++) {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT CAST(date AS VARCHAR), count(*) FROM sink_manifest WHERE tbl = '%s'"
                 " AND rows < %" PRIu64 " GROUP BY date HAVING count(*) >= 2 ORDER BY date",
                 sink_tables[t].name, s->o.max_rows_per_file);
        duckdb_result res;
        if (duckdb_query(s->wconn, sql, &res) != DuckDBSuccess) {
            errf(err, errlen, "cannot plan compaction: %s", duckdb_result_error(&res));
            duckdb_destroy_result(&res);
            return DLOTEL_ERR_IO;
        }
        idx_t n = duckdb_row_count(&res);
        int rc = 0;
        for (idx_t i = 0; rc == 0 && i < n; i++) {
            char *date = duckdb_value_varchar(&res, 0, i);
            int64_t files = duckdb_value_int64(&res, 1, i);
            if (date != NULL && (force || strcmp(date, today) < 0 || files >= 8)) {
                rc = compact_date(s, t, date, err, errlen);
            }
            duckdb_free(date);
        }
        duckdb_destroy_result(&res);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- retention and the disk cap ------------------------------------------------------------ */

/* Drops every file and hot row of dates |op| |date| ("<" or "<="), in one transaction. */
static int drop_dates(struct sink *s, const char *op, const char *date, char *err, size_t errlen)
{
    struct buf b;
    buf_init(&b, 8192);
    uint64_t after = time_now_unix_nano() + s->o.gc_grace_ms * 1000000u;
    int rc = buf_printf(&b,
                        "BEGIN TRANSACTION; INSERT INTO sink_trash SELECT path, %" PRIu64
                        " FROM sink_manifest WHERE date %s DATE '%s' ON CONFLICT DO NOTHING;"
                        " DELETE FROM sink_manifest WHERE date %s DATE '%s';",
                        after, op, date, op, date);
    for (int t = 0; rc == 0 && t < SINK_TABLES; t++) {
        rc = buf_printf(&b, "DELETE FROM main.\"%s\" WHERE _date %s DATE '%s';", sink_tables[t].hot,
                        op, date);
    }
    if (rc == 0) {
        rc = exec_buf(s->wconn, &b, err, errlen);
    }
    buf_cleanup(&b);
    if (rc == 0) {
        rc = sink_views_rebuild(s, s->wconn, err, errlen);
    }
    if (rc == 0 && sink_exec(s->wconn, "COMMIT", err, errlen) != 0) {
        rc = DLOTEL_ERR_IO;
    }
    if (rc != 0) {
        sink_exec(s->wconn, "ROLLBACK", NULL, 0);
        return rc;
    }
    return sink_count_hot(s, err, errlen);
}

static int apply_retention(struct sink *s, char *err, size_t errlen)
{
    if (s->o.retention_days == 0) {
        return 0;
    }
    uint64_t today = today_days();
    if (today < s->o.retention_days) {
        return 0;
    }
    char cutoff[32];
    date_text(cutoff, today - s->o.retention_days);
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM sink_manifest WHERE date < DATE '%s')"
             " + (SELECT count(*) FROM main.spans_hot WHERE _date < DATE '%s')"
             " + (SELECT count(*) FROM main.logs_hot WHERE _date < DATE '%s')"
             " + (SELECT count(*) FROM main.metrics_hot WHERE _date < DATE '%s')",
             cutoff, cutoff, cutoff, cutoff);
    duckdb_result res;
    if (duckdb_query(s->wconn, sql, &res) != DuckDBSuccess) {
        errf(err, errlen, "cannot plan retention: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_IO;
    }
    int64_t n = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    if (n == 0) {
        return 0;
    }
    sink_log(s, LOG_LEVEL_INFO, "retention: dropping dates before %s (%d days)", cutoff,
             (int)s->o.retention_days);
    return drop_dates(s, "<", cutoff, err, errlen);
}

static int apply_disk_cap(struct sink *s, char *err, size_t errlen)
{
    if (s->o.disk_cap_bytes == 0) {
        return 0;
    }
    for (;;) {
        uint64_t total = 0;
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof(path), "%s/hot.duckdb", s->data_dir);
        if (stat(path, &st) == 0) {
            total += (uint64_t)st.st_size;
        }
        snprintf(path, sizeof(path), "%s/hot.duckdb.wal", s->data_dir);
        if (stat(path, &st) == 0) {
            total += (uint64_t)st.st_size;
        }
        duckdb_result res;
        if (duckdb_query(s->wconn,
                         "SELECT coalesce(sum(bytes), 0), CAST(min(date) AS VARCHAR),"
                         " CAST(max(date) AS VARCHAR) FROM sink_manifest",
                         &res) != DuckDBSuccess) {
            errf(err, errlen, "cannot size the data: %s", duckdb_result_error(&res));
            duckdb_destroy_result(&res);
            return DLOTEL_ERR_IO;
        }
        total += (uint64_t)duckdb_value_int64(&res, 0, 0);
        char *oldest = duckdb_value_varchar(&res, 1, 0);
        char *newest = duckdb_value_varchar(&res, 2, 0);
        duckdb_destroy_result(&res);
        int rc = 0;
        bool stop = total <= s->o.disk_cap_bytes;
        if (!stop && (oldest == NULL || newest == NULL || strcmp(oldest, newest) == 0)) {
            sink_log(s, LOG_LEVEL_WARN,
                     "the data (%" PRIu64 " bytes) is over the disk cap (%" PRIu64
                     " bytes), but only the newest date is left",
                     total, s->o.disk_cap_bytes);
            stop = true;
        }
        if (!stop) {
            sink_log(s, LOG_LEVEL_WARN, "disk cap: %" PRIu64 " bytes over %" PRIu64 ": dropping %s",
                     total, s->o.disk_cap_bytes, oldest);
            rc = drop_dates(s, "<=", oldest, err, errlen);
        }
        duckdb_free(oldest);
        duckdb_free(newest);
        if (stop || rc != 0) {
            return rc;
        }
    }
}

int sink_maintain_run(struct sink *s, bool force, char *err, size_t errlen)
{
    int rc = 0;
    if (force) {
        rc = sink_flush_generation(s, err, errlen);
    } else if (s->pending_gen != 0) {
        /* Retention must not delete rows of a generation that is still being written. */
        return 0;
    }
    if (rc == 0) {
        rc = compact_all(s, force, err, errlen);
    }
    if (rc == 0) {
        rc = apply_retention(s, err, errlen);
    }
    if (rc == 0) {
        rc = apply_disk_cap(s, err, errlen);
    }
    if (rc == 0) {
        rc = collect_garbage(s, err, errlen);
    }
    return rc;
}
