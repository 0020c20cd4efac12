/*
 * The sink: one DuckDB database in the data directory, one writer thread.
 *
 * Every change to the database happens on the writer thread, in order: appends (group commit),
 * flushes to Parquet, compaction, retention. Queries run on their callers' threads, each on its
 * own connection; DuckDB's MVCC gives them a consistent snapshot while the writer commits.
 *
 * Group commit: append() only queues. The writer takes every append queued at that moment (up to
 * SINK_BATCH_BYTES), decodes each into its arena, appends all their rows in one transaction and
 * commits once. DuckDB writes the transaction's WAL records and fsyncs the WAL inside COMMIT (we
 * checked with strace on 1.4.4: one write + one fsync of hot.duckdb.wal per COMMIT, before
 * COMMIT returns), so when |done| runs the rows survive a crash of the process and of the
 * machine. Under load, requests pile up while a commit runs, and the next commit takes them all:
 * the fsync cost is shared, and throughput grows with concurrency instead of being capped at one
 * fsync per request.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
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

/* Bytes of requests one group commit takes at most; the rest waits for the next. */
#define SINK_BATCH_BYTES ((uint64_t)64 * 1024 * 1024)
/* How long automatic flushes wait after one failed. */
#define SINK_FLUSH_BACKOFF_NS ((uint64_t)5 * 1000000000u)
/* Memory one request may use once decoded. */
#define SINK_ARENA_MAX ((size_t)512 * 1024 * 1024)

void sink_log(struct sink *s, int level, const char *fmt, ...)
{
    if (level > s->o.log_level) {
        return;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line, sizeof(line), fmt, ap);
    (void)w; /* A long line is cut, never overflowed. */
    va_end(ap);
    if (s->o.log != NULL) {
        s->o.log(s->o.log_userdata, level, line);
    } else {
        log_write((enum log_level)level, "sink", "%s", line);
    }
}

void sink_crash_point(const char *point)
{
    const char *want = getenv("DLOTEL_SINK_CRASH");
    if (want != NULL && strcmp(want, point) == 0) {
        /* SIGKILL, as kill -9 would: no atexit, no DuckDB destructors, no buffered writes. */
        raise(SIGKILL);
    }
}

static void set_detail(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (detail == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(detail, len, fmt, ap);
    (void)w;
    va_end(ap);
}

/* mkdir -p with mode 0700 for what it creates. */
static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    int w = snprintf(tmp, sizeof(tmp), "%s", path);
    if (w < 0 || (size_t)w >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
            return -1;
        }
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}

/* ---- the writer ---------------------------------------------------------------------------- */

static void req_free(struct sink_req *r)
{
    free(r->pb);
    free(r->user_uid);
    free(r);
}

static void finish_append(struct sink *s, struct sink_req *r, int status, const char *message)
{
    (void)s;
    r->done(r->userdata, status, message);
    req_free(r);
}

/*
 * Decodes and appends one request into the open transaction. A request that does not decode
 * leaves no row and fails alone (its status is returned, *fatal stays 0). A failure while its
 * rows are being written leaves part of them in the chunks: *fatal is set and the whole
 * transaction must roll back.
 */
static int append_one(struct sink *s, struct sink_req *r, int *fatal, char *msg, size_t msglen)
{
    ProtobufCMessage *m = NULL;
    struct otlp_error oerr = {0, NULL};
    arena_reset(&s->arena);
    int rc = otlp_unpack((enum otlp_signal)r->signal, r->pb, r->len, &s->arena, &m, &oerr);
    if (rc != 0) {
        set_detail(msg, msglen, "the %s request does not decode: %s",
                   otlp_signal_name((enum otlp_signal)r->signal),
                   oerr.message != NULL ? oerr.message : dlotel_strerror(rc));
        return rc == DLOTEL_ERR_TOO_LARGE ? DLOTEL_ERR_TOO_LARGE : DLOTEL_ERR_BAD_INPUT;
    }
    s->emit.user_uid = r->user_uid;
    rc = sink_emit_request(&s->emit, r->signal, m);
    s->emit.user_uid = NULL;
    if (rc != 0) {
        set_detail(msg, msglen, "%s", s->emit.err);
        *fatal = 1;
        return rc == DLOTEL_ERR_TOO_LARGE ? DLOTEL_ERR_TOO_LARGE : DLOTEL_ERR_IO;
    }
    return 0;
}

/*
 * After a failed transaction: forget every row of it. The appenders may still cache rows (the
 * C API cannot clear that cache, and destroying an appender flushes it), so they are destroyed
 * while the failed transaction is still open, where their flush lands (or fails), and only then
 * rolled back with it; new appenders follow.
 */
static void writer_reset(struct sink *s)
{
    char err[256];
    for (int t = 0; t < SINK_TABLES; t++) {
        sink_tw_discard(&s->tw[t]);
    }
    if (sink_exec(s->wconn, "ROLLBACK", err, sizeof(err)) != 0) {
        sink_log(s, LOG_LEVEL_DEBUG, "rollback: %s", err);
    }
    for (int t = 0; t < SINK_TABLES; t++) {
        if (sink_tw_reopen(&s->tw[t], s->wconn, err, sizeof(err)) != 0) {
            sink_log(s, LOG_LEVEL_ERROR, "cannot recreate the %s appender: %s", sink_tables[t].name,
                     err);
        }
    }
}

/*
 * A test hook: DLOTEL_SINK_FAIL_COMMIT=1 makes every group fail after its rows were handed to
 * the appenders and before they are flushed and committed.
 */
static bool fail_commit_for_tests(void)
{
    const char *v = getenv("DLOTEL_SINK_FAIL_COMMIT");
    return v != NULL && strcmp(v, "1") == 0;
}

/*
 * One transaction for |n| requests. Requests that do not decode are answered at once with their
 * own error and leave no row; if DuckDB fails, the transaction rolls back and, with more than
 * one request, each is tried again alone so that one bad request cannot fail the others.
 */
static void commit_group(struct sink *s, struct sink_req **reqs, size_t n)
{
    char err[512];
    int status[64];
    char msgs[64][256];
    uint64_t seq_before = s->next_seq;
    uint64_t rows_before[SINK_TABLES];
    for (int t = 0; t < SINK_TABLES; t++) {
        rows_before[t] = s->emit.rows[t];
    }

    for (size_t i = 0; i < n; i++) {
        status[i] = DLOTEL_ERR_IO;
    }
    if (sink_exec(s->wconn, "BEGIN TRANSACTION", err, sizeof(err)) != 0) {
        goto fail_all;
    }
    int fatal = 0;
    for (size_t i = 0; i < n; i++) {
        msgs[i][0] = '\0';
        status[i] = append_one(s, reqs[i], &fatal, msgs[i], sizeof(msgs[i]));
        if (fatal) {
            snprintf(err, sizeof(err), "%.255s", msgs[i]);
            break;
        }
    }
    if (!fatal && fail_commit_for_tests()) {
        snprintf(err, sizeof(err), "commit failed (DLOTEL_SINK_FAIL_COMMIT)");
        fatal = 1;
    }
    for (int t = 0; !fatal && t < SINK_TABLES; t++) {
        if (sink_tw_flush(&s->tw[t], err, sizeof(err)) != 0) {
            fatal = 1;
        }
    }
    if (fatal) {
        goto fail_all;
    }
    if (sink_exec(s->wconn, "COMMIT", err, sizeof(err)) != 0) {
        goto fail_all;
    }

    uint64_t added = 0;
    for (int t = 0; t < SINK_TABLES; t++) {
        uint64_t d = s->emit.rows[t] - rows_before[t];
        s->hot_rows[t] += d;
        added += d;
    }
    if (added > 0 && s->hot_since_ns == 0) {
        s->hot_since_ns = time_monotonic_nano();
    }
    pthread_mutex_lock(&s->mu);
    s->n_commits++;
    s->n_rows += added;
    for (size_t i = 0; i < n; i++) {
        s->n_requests++;
        if (status[i] != 0) {
            s->n_rejected++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        if (status[i] != 0) {
            sink_log(s, LOG_LEVEL_WARN, "%s", msgs[i]);
        }
        finish_append(s, reqs[i], status[i], status[i] != 0 ? msgs[i] : NULL);
    }
    return;

fail_all:
    writer_reset(s);
    s->next_seq = seq_before;
    for (int t = 0; t < SINK_TABLES; t++) {
        s->emit.rows[t] = rows_before[t];
    }
    if (n > 1) {
        for (size_t i = 0; i < n; i++) {
            commit_group(s, &reqs[i], 1);
        }
        return;
    }
    sink_log(s, LOG_LEVEL_ERROR, "cannot store a %s request: %s",
             otlp_signal_name((enum otlp_signal)reqs[0]->signal), err);
    pthread_mutex_lock(&s->mu);
    s->n_requests++;
    s->n_rejected++;
    pthread_mutex_unlock(&s->mu);
    int st = status[0] == DLOTEL_ERR_TOO_LARGE ? DLOTEL_ERR_TOO_LARGE : DLOTEL_ERR_IO;
    finish_append(s, reqs[0], st, err);
}

/* Runs the flush and maintenance triggers that are due. */
static void writer_timers(struct sink *s, bool force_flush)
{
    char err[512];
    uint64_t now = time_monotonic_nano();
    bool full = false;
    for (int t = 0; t < SINK_TABLES; t++) {
        full = full || s->hot_rows[t] >= s->o.max_rows_per_file;
    }
    bool old = s->o.flush_interval_ms > 0 && s->hot_since_ns != 0 &&
               now - s->hot_since_ns >= s->o.flush_interval_ms * 1000000u;
    /* After a failed flush (disk full...), automatic ones wait a while instead of retrying
       after every commit; an explicit one always runs. */
    bool backing_off = now < s->flush_backoff_until_ns;
    if (force_flush || ((full || old) && !backing_off)) {
        if (sink_flush_generation(s, err, sizeof(err)) != 0) {
            sink_log(s, LOG_LEVEL_ERROR,
                     "flush to Parquet failed (rows stay in the hot buffer): %s", err);
            s->flush_backoff_until_ns = now + SINK_FLUSH_BACKOFF_NS;
        } else {
            s->flush_backoff_until_ns = 0;
        }
    }
    if (s->o.maintenance_interval_ms > 0 && now >= s->next_maintenance_ns) {
        s->next_maintenance_ns = now + s->o.maintenance_interval_ms * 1000000u;
        if (sink_maintain_run(s, false, err, sizeof(err)) != 0) {
            sink_log(s, LOG_LEVEL_ERROR, "maintenance failed: %s", err);
        }
    }
}

/* The earliest time a timer is due, as an absolute CLOCK_MONOTONIC timespec; false: none. */
static bool next_deadline(struct sink *s, struct timespec *ts)
{
    uint64_t at = 0;
    if (s->o.flush_interval_ms > 0 && s->hot_since_ns != 0) {
        at = s->hot_since_ns + s->o.flush_interval_ms * 1000000u;
        if (at < s->flush_backoff_until_ns) {
            at = s->flush_backoff_until_ns;
        }
    }
    if (s->o.maintenance_interval_ms > 0 && (at == 0 || s->next_maintenance_ns < at)) {
        at = s->next_maintenance_ns;
    }
    if (at == 0) {
        return false;
    }
    ts->tv_sec = (time_t)(at / 1000000000u);
    ts->tv_nsec = (long)(at % 1000000000u);
    return true;
}

static void *writer_main(void *arg)
{
    struct sink *s = arg;
    struct sink_req *batch[64];

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == NULL && !s->stopping && !s->flush_requested) {
            struct timespec ts;
            if (!next_deadline(s, &ts)) {
                pthread_cond_wait(&s->cond, &s->mu);
                continue;
            }
            if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) == ETIMEDOUT) {
                break;
            }
        }
        if (s->head == NULL && s->stopping) {
            break;
        }
        bool force = s->flush_requested;
        s->flush_requested = false;

        /* Take every queued append up to the first synchronous request. */
        size_t n = 0;
        uint64_t bytes = 0;
        while (s->head != NULL && s->head->kind == SINK_REQ_APPEND && n < 64 &&
               (n == 0 || bytes + s->head->len <= SINK_BATCH_BYTES)) {
            struct sink_req *r = s->head;
            s->head = r->next;
            if (s->head == NULL) {
                s->tail = NULL;
            }
            bytes += r->len;
            s->queued_bytes -= r->len;
            batch[n++] = r;
        }
        struct sink_req *sync = NULL;
        if (n == 0 && s->head != NULL) {
            sync = s->head;
            s->head = sync->next;
            if (s->head == NULL) {
                s->tail = NULL;
            }
        }
        pthread_mutex_unlock(&s->mu);

        if (n > 0) {
            commit_group(s, batch, n);
        }
        if (sync != NULL) {
            char err[256] = "";
            int rc = sync->kind == SINK_REQ_FLUSH ? sink_flush_generation(s, err, sizeof(err))
                                                  : sink_maintain_run(s, true, err, sizeof(err));
            pthread_mutex_lock(&s->mu);
            sync->status = rc;
            snprintf(sync->detail, sizeof(sync->detail), "%s", err);
            sync->finished = true;
            pthread_cond_broadcast(&s->sync_cond);
            pthread_mutex_unlock(&s->mu);
        }
        writer_timers(s, force);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);

    /* The shutdown flush: everything in the hot buffer goes to Parquet. */
    char err[512];
    if (sink_flush_generation(s, err, sizeof(err)) != 0) {
        sink_log(s, LOG_LEVEL_ERROR,
                 "shutdown flush failed (rows stay in the hot buffer for the next start): %s", err);
    }
    return NULL;
}

/* ---- open and close ------------------------------------------------------------------------ */

/*
 * The data directories open in this process. DuckDB refuses a second process on the same file
 * (its file lock), but not a second open in the same process: two instances would then write the
 * same file. So the module keeps its own list.
 */
static pthread_mutex_t open_dirs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct open_dir *open_dirs;

static bool claim_dir(const char *path, struct open_dir *node)
{
    pthread_mutex_lock(&open_dirs_mu);
    for (struct open_dir *d = open_dirs; d != NULL; d = d->next) {
        if (strcmp(d->path, path) == 0) {
            pthread_mutex_unlock(&open_dirs_mu);
            return false;
        }
    }
    node->path = path;
    node->next = open_dirs;
    open_dirs = node;
    pthread_mutex_unlock(&open_dirs_mu);
    return true;
}

static void release_dir(struct open_dir *node)
{
    pthread_mutex_lock(&open_dirs_mu);
    for (struct open_dir **pp = &open_dirs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == node) {
            *pp = node->next;
            break;
        }
    }
    pthread_mutex_unlock(&open_dirs_mu);
}

static int configure(struct sink *s, duckdb_config cfg, char *detail, size_t len)
{
    char mem[32];
    char threads[16];
    snprintf(mem, sizeof(mem), "%lluB", (unsigned long long)s->o.memory_limit_bytes);
    snprintf(threads, sizeof(threads), "%u", s->o.threads > 0 ? s->o.threads : 1u);
    const char *kv[][2] = {
        {"autoload_known_extensions", "false"},
        {"autoinstall_known_extensions", "false"},
        {"allow_community_extensions", "false"},
        {"memory_limit", mem},
        {"threads", threads},
    };
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (duckdb_set_config(cfg, kv[i][0], kv[i][1]) != DuckDBSuccess) {
            set_detail(detail, len, "DuckDB refused the setting %s=%s", kv[i][0], kv[i][1]);
            return DLOTEL_ERR_INTERNAL;
        }
    }
    return 0;
}

/*
 * The settings that need SQL (they refer to the data directory, or must come after the ones
 * they restrict), ending with lock_configuration: from then on no connection, ours or a user's,
 * can change any setting.
 */
static int lock_down(struct sink *s, char *detail, size_t len)
{
    struct buf b;
    buf_init(&b, 3 * PATH_MAX + 1024);
    char tmpdir[PATH_MAX + 8];
    char allowed[PATH_MAX + 8];
    snprintf(tmpdir, sizeof(tmpdir), "%s/.tmp", s->data_dir);
    snprintf(allowed, sizeof(allowed), "%s/", s->data_dir);
    int rc = buf_printf(&b, "SET GLOBAL TimeZone = 'UTC'; SET GLOBAL temp_directory = ");
    if (rc == 0) {
        rc = sink_sql_literal(&b, tmpdir);
    }
    if (rc == 0) {
        rc = buf_printf(&b, "; SET GLOBAL allowed_directories = [");
    }
    if (rc == 0) {
        rc = sink_sql_literal(&b, allowed);
    }
    if (rc == 0) {
        rc = buf_printf(&b, "]; SET GLOBAL enable_external_access = false;"
                            " SET GLOBAL parquet_metadata_cache = true;"
                            " SET GLOBAL checkpoint_threshold = '1GB';"
                            " SET GLOBAL lock_configuration = true;");
    }
    if (rc == 0) {
        rc = buf_terminate(&b);
    }
    char err[512];
    if (rc == 0 && sink_exec(s->wconn, (const char *)b.data, err, sizeof(err)) != 0) {
        set_detail(detail, len, "cannot lock DuckDB down: %s", err);
        rc = DLOTEL_ERR_INTERNAL;
    }
    buf_cleanup(&b);
    return rc;
}

static int read_state(struct sink *s, char *detail, size_t len)
{
    duckdb_result res;
    static const char *const sql =
        "SELECT (SELECT value FROM sink_state WHERE key = 'next_gen'),"
        " greatest((SELECT value FROM sink_state WHERE key = 'next_seq'),"
        " (SELECT max(_seq) + 1 FROM spans_hot), (SELECT max(_seq) + 1 FROM metrics_hot),"
        " (SELECT max(_seq) + 1 FROM logs_hot)),"
        " (SELECT max(gen) + 1 FROM sink_manifest), (SELECT max(gen) + 1 FROM sink_pending)";
    if (duckdb_query(s->wconn, sql, &res) != DuckDBSuccess) {
        set_detail(detail, len, "cannot read the sink state: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return DLOTEL_ERR_INTERNAL;
    }
    s->next_gen = 1;
    s->next_seq = 1;
    for (idx_t c = 0; c < 4; c++) {
        if (duckdb_value_is_null(&res, c, 0)) {
            continue;
        }
        uint64_t v = (uint64_t)duckdb_value_int64(&res, c, 0);
        if (c == 1) {
            s->next_seq = v > s->next_seq ? v : s->next_seq;
        } else if (v > s->next_gen) {
            s->next_gen = v;
        }
    }
    duckdb_destroy_result(&res);
    return 0;
}

static void store_free(struct sink *s)
{
    for (int t = 0; t < SINK_TABLES; t++) {
        sink_tw_cleanup(&s->tw[t]);
    }
    sink_emit_cleanup(&s->emit);
    arena_cleanup(&s->arena);
    sink_watchdog_free(s->watchdog);
    if (s->wconn != NULL) {
        duckdb_disconnect(&s->wconn);
    }
    if (s->db != NULL) {
        duckdb_close(&s->db);
    }
    if (s->dir_claimed) {
        release_dir(&s->dir_node);
    }
    pthread_cond_destroy(&s->sync_cond);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s->data_dir);
    free(s);
}

int sink_store_open(struct sink **out, const struct sink_options *o, char *detail, size_t len)
{
    if (out == NULL || o == NULL || o->data_dir == NULL || o->data_dir[0] == '\0') {
        set_detail(detail, len, "the sink needs a data directory");
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (o->max_rows_per_file == 0) {
        set_detail(detail, len, "max_rows_per_file must be at least 1");
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct sink *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    s->o = *o;
    s->o.data_dir = NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, &ca);
    pthread_cond_init(&s->sync_cond, &ca);
    pthread_condattr_destroy(&ca);
    arena_init(&s->arena, SINK_ARENA_MAX);
    sink_emit_init(&s->emit);

    int rc = DLOTEL_ERR_IO;
    char path[PATH_MAX];
    if (mkdirs(o->data_dir) != 0) {
        set_detail(detail, len, "cannot create the data directory %s: %s", o->data_dir,
                   strerror(errno));
        goto fail;
    }
    s->data_dir = realpath(o->data_dir, NULL);
    if (s->data_dir == NULL) {
        set_detail(detail, len, "cannot resolve the data directory %s: %s", o->data_dir,
                   strerror(errno));
        goto fail;
    }
    if (strlen(s->data_dir) > PATH_MAX - 128 || strchr(s->data_dir, '\n') != NULL) {
        set_detail(detail, len, "the data directory path is too long or has a newline");
        rc = DLOTEL_ERR_INVALID_ARG;
        goto fail;
    }
    if (!claim_dir(s->data_dir, &s->dir_node)) {
        set_detail(detail, len, "the data directory %s is already open in this process",
                   s->data_dir);
        rc = DLOTEL_ERR_IO;
        goto fail;
    }
    s->dir_claimed = true;
    snprintf(path, sizeof(path), "%s/.staging", s->data_dir);
    if (mkdirs(path) != 0) {
        set_detail(detail, len, "cannot create %s: %s", path, strerror(errno));
        goto fail;
    }

    duckdb_config cfg;
    if (duckdb_create_config(&cfg) != DuckDBSuccess) {
        rc = DLOTEL_ERR_NOMEM;
        goto fail;
    }
    rc = configure(s, cfg, detail, len);
    if (rc != 0) {
        duckdb_destroy_config(&cfg);
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/hot.duckdb", s->data_dir);
    char *oerr = NULL;
    duckdb_state ost = duckdb_open_ext(path, &s->db, cfg, &oerr);
    duckdb_destroy_config(&cfg);
    if (ost != DuckDBSuccess) {
        set_detail(detail, len, "cannot open the hot buffer %s: %s", path,
                   oerr != NULL ? oerr : "unknown error");
        duckdb_free(oerr);
        s->db = NULL;
        rc = DLOTEL_ERR_IO;
        goto fail;
    }
    if (duckdb_connect(s->db, &s->wconn) != DuckDBSuccess) {
        set_detail(detail, len, "cannot connect to the hot buffer");
        rc = DLOTEL_ERR_INTERNAL;
        goto fail;
    }
    rc = lock_down(s, detail, len);
    if (rc != 0) {
        goto fail;
    }
    char err[512] = "";
    rc = sink_schema_create(s->wconn, err, sizeof(err));
    if (rc != 0) {
        set_detail(detail, len, "cannot create the sink schema: %s", err);
        goto fail;
    }
    rc = read_state(s, detail, len);
    if (rc != 0) {
        goto fail;
    }
    for (int t = 0; t < SINK_TABLES; t++) {
        rc = sink_tw_init(&s->tw[t], s->wconn, &sink_tables[t], err, sizeof(err));
        if (rc != 0) {
            set_detail(detail, len, "%s", err);
            goto fail;
        }
        s->emit.tw[t] = &s->tw[t];
    }
    s->emit.next_seq = &s->next_seq;

    rc = sink_flush_recover(s, err, sizeof(err));
    if (rc != 0) {
        set_detail(detail, len, "cannot recover the data directory: %s", err);
        goto fail;
    }
    rc = sink_count_hot(s, err, sizeof(err));
    if (rc != 0) {
        set_detail(detail, len, "%s", err);
        goto fail;
    }
    uint64_t now = time_monotonic_nano();
    if (s->hot_rows[0] + s->hot_rows[1] + s->hot_rows[2] > 0) {
        s->hot_since_ns = now;
    }
    s->next_maintenance_ns = now + s->o.maintenance_interval_ms * 1000000u;

    rc = sink_watchdog_new(&s->watchdog);
    if (rc != 0) {
        goto fail;
    }
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        set_detail(detail, len, "cannot start the writer thread");
        rc = DLOTEL_ERR_NOMEM;
        goto fail;
    }
    s->writer_started = true;
    sink_log(s, LOG_LEVEL_INFO,
             "sink open in %s: %llu hot rows, next generation %llu, %llu rows per file",
             s->data_dir, (unsigned long long)(s->hot_rows[0] + s->hot_rows[1] + s->hot_rows[2]),
             (unsigned long long)s->next_gen, (unsigned long long)s->o.max_rows_per_file);
    *out = s;
    return 0;

fail:
    store_free(s);
    return rc;
}

void sink_store_close(struct sink *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    if (s->writer_started) {
        pthread_join(s->writer, NULL);
    }
    /* Nothing can be queued now (append refuses once stopping), but be sure. */
    pthread_mutex_lock(&s->mu);
    struct sink_req *r = s->head;
    s->head = s->tail = NULL;
    s->closed = true;
    pthread_mutex_unlock(&s->mu);
    while (r != NULL) {
        struct sink_req *next = r->next;
        if (r->kind == SINK_REQ_APPEND) {
            finish_append(s, r, DLOTEL_ERR_CLOSED, "the sink closed");
        }
        r = next;
    }
    sink_log(s, LOG_LEVEL_INFO, "sink closed");
    store_free(s);
}

/* ---- the callbacks ------------------------------------------------------------------------- */

static void enqueue(struct sink *s, struct sink_req *r)
{
    r->next = NULL;
    if (s->tail != NULL) {
        s->tail->next = r;
    } else {
        s->head = r;
    }
    s->tail = r;
    pthread_cond_signal(&s->cond);
}

int sink_store_append(struct sink *s, int signal, const uint8_t *pb, size_t len,
                      const char *user_uid, sink_append_done_fn done, void *userdata)
{
    if (s == NULL || done == NULL || signal < 0 || signal >= SINK_TABLES ||
        (pb == NULL && len > 0)) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct sink_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    r->kind = SINK_REQ_APPEND;
    r->signal = signal;
    r->len = len;
    r->done = done;
    r->userdata = userdata;
    r->pb = malloc(len > 0 ? len : 1);
    if (r->pb == NULL) {
        free(r);
        return DLOTEL_ERR_NOMEM;
    }
    if (len > 0) {
        memcpy(r->pb, pb, len);
    }
    if (user_uid != NULL) {
        r->user_uid = strdup(user_uid);
        if (r->user_uid == NULL) {
            req_free(r);
            return DLOTEL_ERR_NOMEM;
        }
    }
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->closed) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return DLOTEL_ERR_CLOSED;
    }
    /* One request larger than the whole queue is still taken when the queue is empty. */
    if (s->queued_bytes > 0 && s->queued_bytes + len > s->o.queue_max_bytes) {
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return DLOTEL_ERR_FULL;
    }
    s->queued_bytes += len;
    enqueue(s, r);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Queues a synchronous request and waits for the writer to finish it. */
static int run_sync(struct sink *s, int kind, char *detail, size_t len)
{
    if (s == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct sink_req r;
    memset(&r, 0, sizeof(r));
    r.kind = kind;
    pthread_mutex_lock(&s->mu);
    if (s->stopping || s->closed) {
        pthread_mutex_unlock(&s->mu);
        set_detail(detail, len, "the sink is closing");
        return DLOTEL_ERR_CLOSED;
    }
    enqueue(s, &r);
    while (!r.finished) {
        pthread_cond_wait(&s->sync_cond, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (r.status != 0) {
        set_detail(detail, len, "%s", r.detail);
    }
    return r.status;
}

int sink_store_flush(struct sink *s, char *detail, size_t len)
{
    return run_sync(s, SINK_REQ_FLUSH, detail, len);
}

void sink_store_request_flush(struct sink *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->flush_requested = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

int sink_store_maintain(struct sink *s, char *detail, size_t len)
{
    return run_sync(s, SINK_REQ_MAINTAIN, detail, len);
}

int sink_store_query(struct sink *s, const char *sql, const char *user_uid, unsigned flags,
                     const char *const *params, size_t n_params, uint64_t row_cap,
                     uint64_t timeout_ms, struct buf *out)
{
    if (s == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    return sink_sql_query(s->db, s->watchdog, sql, user_uid, flags, params, n_params, row_cap,
                          timeout_ms, out);
}

int sink_store_stats(struct sink *s, struct buf *out)
{
    if (s == NULL || out == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    duckdb_connection conn;
    if (duckdb_connect(s->db, &conn) != DuckDBSuccess) {
        return DLOTEL_ERR_IO;
    }
    int rc = buf_printf(out, "{\"data_dir\":");
    if (rc == 0) {
        rc = sink_json_str(out, s->data_dir, strlen(s->data_dir));
    }
    char path[PATH_MAX];
    uint64_t db_bytes = 0;
    struct stat st;
    snprintf(path, sizeof(path), "%s/hot.duckdb", s->data_dir);
    if (stat(path, &st) == 0) {
        db_bytes += (uint64_t)st.st_size;
    }
    snprintf(path, sizeof(path), "%s/hot.duckdb.wal", s->data_dir);
    if (stat(path, &st) == 0) {
        db_bytes += (uint64_t)st.st_size;
    }
    if (rc == 0) {
        rc = buf_printf(out, ",\"db_bytes\":%llu,\"tables\":{", (unsigned long long)db_bytes);
    }
    for (int t = 0; rc == 0 && t < SINK_TABLES; t++) {
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "SELECT (SELECT count(*) FROM main.\"%s\"), count(*), coalesce(sum(rows), 0),"
                 " coalesce(sum(bytes), 0), coalesce(to_json(list(DISTINCT CAST(date AS VARCHAR)"
                 " ORDER BY CAST(date AS VARCHAR))), '[]') FROM sink_manifest WHERE tbl = '%s'",
                 sink_tables[t].hot, sink_tables[t].name);
        duckdb_result res;
        if (duckdb_query(conn, sql, &res) != DuckDBSuccess) {
            duckdb_destroy_result(&res);
            rc = DLOTEL_ERR_IO;
            break;
        }
        char *dates = duckdb_value_varchar(&res, 4, 0);
        rc = buf_printf(
            out,
            "%s\"%s\":{\"hot_rows\":%lld,\"files\":%lld,\"file_rows\":%lld,"
            "\"file_bytes\":%lld,\"dates\":%s}",
            t > 0 ? "," : "", sink_tables[t].name, (long long)duckdb_value_int64(&res, 0, 0),
            (long long)duckdb_value_int64(&res, 1, 0), (long long)duckdb_value_int64(&res, 2, 0),
            (long long)duckdb_value_int64(&res, 3, 0), dates != NULL ? dates : "[]");
        duckdb_free(dates);
        duckdb_destroy_result(&res);
    }
    if (rc == 0) {
        pthread_mutex_lock(&s->mu);
        rc = buf_printf(out,
                        "},\"ingest\":{\"requests\":%llu,\"rows\":%llu,\"commits\":%llu,"
                        "\"rejected\":%llu},\"flushes\":%llu,\"compactions\":%llu,"
                        "\"generation\":%llu}",
                        (unsigned long long)s->n_requests, (unsigned long long)s->n_rows,
                        (unsigned long long)s->n_commits, (unsigned long long)s->n_rejected,
                        (unsigned long long)s->n_flushes, (unsigned long long)s->n_compactions,
                        (unsigned long long)(s->next_gen - 1));
        pthread_mutex_unlock(&s->mu);
    }
    if (rc == 0) {
        rc = buf_terminate(out);
    }
    duckdb_disconnect(&conn);
    return rc;
}
