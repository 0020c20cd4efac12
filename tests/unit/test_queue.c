/*
 * The queues: the disk queue on real files in a mkdtemp directory (restart, torn tails, the
 * cap, fsync policies, a full disk), and the memory queue's byte caps through the pipeline.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/buf.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "pipeline/diskq.h"
#include "pipeline/pipeline.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

/* ---- helpers -------------------------------------------------------------------------------- */

struct tmp {
    char dir[64];
};

static void tmp_make(struct tmp *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/dlotel-test-queue-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static void tmp_remove(struct tmp *t)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    assert_int_equal(system(cmd), 0);
}

/* Record |i|: |len| bytes that say which record they are. */
static void record(uint8_t *out, size_t len, unsigned i)
{
    for (size_t k = 0; k < len; k++) {
        out[k] = (uint8_t)(i * 31 + k * 7);
    }
}

static struct diskq *open_q(const char *dir, uint64_t max, uint64_t seg, enum pipeline_fsync f)
{
    struct diskq_options o = {
        .dir = dir, .name = "test/traces", .max_bytes = max, .segment_bytes = seg, .fsync = f};
    struct diskq *q = NULL;
    assert_int_equal(diskq_open(&q, &o), 0);
    return q;
}

static void append_n(struct diskq *q, unsigned first, unsigned n, size_t len)
{
    uint8_t *b = malloc(len + 1);
    assert_non_null(b);
    for (unsigned i = first; i < first + n; i++) {
        record(b, len, i);
        assert_int_equal(diskq_append(q, b, len, i, NULL), 0);
    }
    free(b);
}

/* Reads every unread record and checks that they are records first.. in order. */
static unsigned read_all(struct diskq *q, unsigned first, size_t len)
{
    unsigned n = 0;
    uint8_t *want = malloc(len + 1);
    assert_non_null(want);
    struct diskq_record r;
    while (diskq_peek(q, &r) == 0) {
        struct buf b;
        buf_init(&b, 64 * MIB);
        assert_int_equal(r.len, len);
        assert_int_equal(r.items, first + n);
        assert_int_equal(diskq_read(q, &r, &b), 0);
        record(want, len, first + n);
        assert_int_equal(b.len, len);
        assert_memory_equal(b.data, want, len);
        buf_cleanup(&b);
        n++;
    }
    free(want);
    return n;
}

static int count_segments(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '\\.seg$'", dir);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    int n = 0;
    assert_int_equal(fscanf(f, "%d", &n), 1);
    pclose(f);
    return n;
}

/* The path of the newest segment in |dir|. */
static void last_segment(const char *dir, char *out, size_t outlen)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep '\\.seg$' | sort | tail -1", dir);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char name[64] = "";
    assert_non_null(fgets(name, sizeof(name), f));
    pclose(f);
    name[strcspn(name, "\n")] = '\0';
    snprintf(out, outlen, "%s/%s", dir, name);
}

/* ---- the disk queue ------------------------------------------------------------------------- */

/* Records survive close and reopen, in order across segments; committed ones are not back. */
static void test_disk_reopen_in_order(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    struct diskq *q = open_q(t.dir, 64 * MIB, 8 * KIB, PIPELINE_FSYNC_BATCH);
    append_n(q, 0, 100, 1000); /* About 13 segments. */
    struct diskq_info info;
    diskq_get_info(q, &info);
    assert_int_equal(info.pending_records, 100);
    assert_true(info.segments >= 12);
    diskq_close(q);
    assert_true(count_segments(t.dir) >= 12);

    q = open_q(t.dir, 64 * MIB, 8 * KIB, PIPELINE_FSYNC_BATCH);
    diskq_get_info(q, &info);
    assert_int_equal(info.recovered_records, 100);
    assert_int_equal(info.pending_items, 99 * 100 / 2);
    /* Read and commit the first 40. */
    struct diskq_record r;
    struct diskq_pos end = {0, 0};
    for (unsigned i = 0; i < 40; i++) {
        struct buf b;
        buf_init(&b, MIB);
        assert_int_equal(diskq_peek(q, &r), 0);
        assert_int_equal(r.items, i);
        assert_int_equal(diskq_read(q, &r, &b), 0);
        buf_cleanup(&b);
        end = r.end;
    }
    assert_int_equal(diskq_commit(q, end), 0);
    /* Read ten more without committing them: they come back after a restart. */
    for (unsigned i = 0; i < 10; i++) {
        struct buf b;
        buf_init(&b, MIB);
        assert_int_equal(diskq_peek(q, &r), 0);
        assert_int_equal(diskq_read(q, &r, &b), 0);
        buf_cleanup(&b);
    }
    /* Appends after a restart go on in order, in new segments. */
    append_n(q, 100, 20, 1000);
    diskq_close(q);
    /* Delivered segments are deleted. */
    assert_true(count_segments(t.dir) < 16);

    q = open_q(t.dir, 64 * MIB, 8 * KIB, PIPELINE_FSYNC_BATCH);
    assert_int_equal(read_all(q, 40, 1000), 80);
    diskq_close(q);
    tmp_remove(&t);
}

/* Once everything in it is delivered, the write segment goes: no delivered data lingers. */
static void test_disk_delivered_segment_retired(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    struct diskq *q = open_q(t.dir, 1024 * MIB, 64 * MIB, PIPELINE_FSYNC_BATCH);
    append_n(q, 0, 30, 50000); /* 1.5 MB, one segment. */
    struct diskq_record r;
    struct diskq_pos end = {0, 0};
    while (diskq_peek(q, &r) == 0) {
        struct buf b;
        buf_init(&b, MIB);
        assert_int_equal(diskq_read(q, &r, &b), 0);
        buf_cleanup(&b);
        end = r.end;
    }
    assert_int_equal(diskq_commit(q, end), 0);
    struct diskq_info info;
    diskq_get_info(q, &info);
    assert_int_equal(info.segments, 0);
    assert_int_equal(info.bytes, 0);
    assert_int_equal(count_segments(t.dir), 0);
    /* Appends go on in a new segment, after the cursor, and survive a restart. */
    append_n(q, 30, 3, 1000);
    diskq_close(q);
    q = open_q(t.dir, 1024 * MIB, 64 * MIB, PIPELINE_FSYNC_BATCH);
    assert_int_equal(read_all(q, 30, 1000), 3);
    diskq_close(q);
    tmp_remove(&t);
}

/* A torn tail (crash in the middle of a write) or a bad crc is cut; earlier records stay. */
static void test_disk_torn_tail(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    struct diskq *q = open_q(t.dir, 64 * MIB, 64 * KIB, PIPELINE_FSYNC_BATCH);
    append_n(q, 0, 30, 5000); /* Three segments. */
    diskq_close(q);
    char seg[256];
    last_segment(t.dir, seg, sizeof(seg));

    /* Cut the last record in the middle of its payload. */
    struct stat st;
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal(truncate(seg, st.st_size - 1234), 0);
    q = open_q(t.dir, 64 * MIB, 64 * KIB, PIPELINE_FSYNC_BATCH);
    struct diskq_info info;
    diskq_get_info(q, &info);
    assert_int_equal(info.recovered_records, 29);
    assert_int_equal(info.truncated_bytes, 5000 + DISKQ_HEADER_LEN - 1234);
    diskq_close(q);
    /* The file was cut back to the last whole record. */
    assert_int_equal(stat(seg, &st), 0);
    assert_int_equal(st.st_size % (5000 + DISKQ_HEADER_LEN), 0);

    /* Flip one payload byte of the (new) last record: its crc no longer matches. */
    int fd = open(seg, O_RDWR);
    assert_true(fd >= 0);
    uint8_t c;
    off_t at = st.st_size - 10;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
    q = open_q(t.dir, 64 * MIB, 64 * KIB, PIPELINE_FSYNC_BATCH);
    diskq_get_info(q, &info);
    assert_int_equal(info.recovered_records, 28);
    assert_int_equal(read_all(q, 0, 5000), 28);
    diskq_close(q);

    /* A header torn after its first bytes. */
    q = open_q(t.dir, 64 * MIB, 64 * KIB, PIPELINE_FSYNC_BATCH);
    append_n(q, 28, 1, 5000);
    diskq_close(q);
    last_segment(t.dir, seg, sizeof(seg));
    fd = open(seg, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    static const uint8_t partial[6] = {0x44, 0x4c, 0x51, 0x31, 0x10, 0x00};
    assert_int_equal(write(fd, partial, sizeof(partial)), (ssize_t)sizeof(partial));
    close(fd);
    q = open_q(t.dir, 64 * MIB, 64 * KIB, PIPELINE_FSYNC_BATCH);
    diskq_get_info(q, &info);
    assert_int_equal(info.truncated_bytes, sizeof(partial));
    assert_int_equal(read_all(q, 0, 5000), 29);
    diskq_close(q);
    tmp_remove(&t);
}

/* At the cap the oldest segments go, unsent, counted; the newest records are kept. */
static void test_disk_cap_drops_oldest(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    size_t len = 1000;
    size_t rec = len + DISKQ_HEADER_LEN;
    struct diskq *q = open_q(t.dir, 40 * KIB, 10 * KIB, PIPELINE_FSYNC_NEVER);
    append_n(q, 0, 200, len);
    struct diskq_info info;
    diskq_get_info(q, &info);
    assert_true(info.bytes <= 40 * KIB);
    /* Ten records fit a 10 KiB segment; at most four segments fit the cap. */
    uint64_t kept = info.pending_records;
    assert_true(kept >= 30 && kept <= 40);
    assert_true(info.segments <= 4);
    /* Every record appended is either still there or counted as dropped, by items. */
    uint64_t all_items = 199 * 200 / 2;
    assert_int_equal(info.dropped_items + info.pending_items, all_items);
    assert_int_equal(count_segments(t.dir), (int)info.segments);
    /* The ones kept are the newest, in order. */
    unsigned first = (unsigned)(200 - kept);
    assert_int_equal(read_all(q, first, len), kept);
    (void)rec;

    /* A record larger than the whole cap can never fit. */
    uint8_t *big = calloc(1, 41 * KIB);
    assert_non_null(big);
    assert_int_equal(diskq_append(q, big, 41 * KIB, 1, NULL), DLOTEL_ERR_TOO_LARGE);
    free(big);
    diskq_close(q);
    tmp_remove(&t);
}

/* Every fsync policy keeps what it wrote across a clean close; they differ in syncs. */
static void test_disk_fsync_policies(void **state)
{
    (void)state;
    static const enum pipeline_fsync policies[] = {PIPELINE_FSYNC_ALWAYS, PIPELINE_FSYNC_BATCH,
                                                   PIPELINE_FSYNC_NEVER};
    for (size_t i = 0; i < 3; i++) {
        struct tmp t;
        tmp_make(&t);
        struct diskq *q = open_q(t.dir, 64 * MIB, 64 * KIB, policies[i]);
        append_n(q, 0, 50, 3000); /* Three segments: rollovers sync the full ones. */
        assert_true(diskq_dirty(q));
        assert_int_equal(diskq_sync(q), 0);
        assert_false(diskq_dirty(q));
        assert_int_equal(diskq_sync(q), 0); /* Nothing new: no system call. */
        struct diskq_info info;
        diskq_get_info(q, &info);
        if (policies[i] == PIPELINE_FSYNC_NEVER) {
            assert_int_equal(info.syncs, 1); /* Only the one asked for. */
        } else {
            assert_true(info.syncs >= 2); /* Segment rollovers too. */
        }
        diskq_close(q);
        q = open_q(t.dir, 64 * MIB, 64 * KIB, policies[i]);
        assert_int_equal(read_all(q, 0, 3000), 50);
        diskq_close(q);
        tmp_remove(&t);
    }
}

/*
 * A full file system. The kernel enforces it for us in two ways, no hook in the code: a tiny
 * tmpfs mounted in a private mount namespace (real ENOSPC; needs CAP_SYS_ADMIN, skipped
 * without), and RLIMIT_FSIZE (EFBIG from the same pwritev path, works everywhere).
 */
static int enospc_child(void)
{
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        return 77;
    }
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/dlotel-test-enospc-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return 77;
    }
    if (mount("none", dir, "tmpfs", 0, "size=64k") != 0) {
        rmdir(dir);
        return 77;
    }
    int rc = 1;
    struct diskq *q = NULL;
    struct diskq_options o = {.dir = dir,
                              .name = "enospc",
                              .max_bytes = 16 * MIB,
                              .segment_bytes = 16 * KIB,
                              .fsync = PIPELINE_FSYNC_NEVER};
    if (diskq_open(&q, &o) != 0) {
        goto out;
    }
    uint8_t b[6000];
    unsigned ok = 0;
    int arc = 0;
    for (unsigned i = 0; i < 100; i++) {
        record(b, sizeof(b), i);
        if ((arc = diskq_append(q, b, sizeof(b), i, NULL)) != 0) {
            break;
        }
        ok++;
    }
    struct diskq_info info;
    diskq_get_info(q, &info);
    diskq_close(q);
    q = NULL;
    /* The write failed with ENOSPC before 64 KiB; every earlier record is intact, no partial. */
    if (arc != DLOTEL_ERR_IO || ok == 0 || ok > 11 || info.pending_records != ok) {
        fprintf(stderr, "enospc: rc %d after %u records\n", arc, ok);
        goto out;
    }
    if (diskq_open(&q, &o) != 0) {
        goto out;
    }
    diskq_get_info(q, &info);
    if (info.recovered_records != ok || info.truncated_bytes != 0) {
        fprintf(stderr, "enospc: recovered %llu of %u, cut %llu\n",
                (unsigned long long)info.recovered_records, ok,
                (unsigned long long)info.truncated_bytes);
        goto out;
    }
    rc = 0;
out:
    diskq_close(q);
    umount(dir);
    rmdir(dir);
    return rc;
}

static void test_disk_full_enospc(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        log_set_level(LOG_LEVEL_ERROR);
        _exit(enospc_child());
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        skip();
    }
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_disk_full_rlimit(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    struct diskq *q = open_q(t.dir, 64 * MIB, 1 * MIB, PIPELINE_FSYNC_NEVER);
    append_n(q, 0, 5, 4000);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 30 * KIB;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    uint8_t b[4000];
    int rc = 0;
    unsigned ok = 0;
    for (unsigned i = 5; i < 20 && rc == 0; i++) {
        record(b, sizeof(b), i);
        rc = diskq_append(q, b, sizeof(b), i, NULL);
        ok += rc == 0;
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, DLOTEL_ERR_IO);
    assert_int_equal(ok, 2); /* 7 records of 4016 bytes fit 30 KiB. */
    /* After the failure the queue goes on: nothing partial was left in the file. */
    append_n(q, 7, 3, 4000);
    diskq_close(q);
    q = open_q(t.dir, 64 * MIB, 1 * MIB, PIPELINE_FSYNC_NEVER);
    struct diskq_info info;
    diskq_get_info(q, &info);
    assert_int_equal(info.truncated_bytes, 0);
    assert_int_equal(read_all(q, 0, 4000), 10);
    diskq_close(q);
    tmp_remove(&t);
}

/* ---- the memory queue through the pipeline -------------------------------------------------- */

/* An exporter that takes every batch and never answers, so queues only fill. */
struct stall {
    struct exporter base;
    int sends;
    export_done_fn done[64];
    void *ud[64];
};

static int stall_send(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                      uint64_t items, export_done_fn done, void *userdata)
{
    (void)s, (void)pb, (void)len, (void)items;
    struct stall *x = (struct stall *)e;
    x->done[x->sends % 64] = done;
    x->ud[x->sends % 64] = userdata;
    x->sends++;
    return 0;
}

static void stall_destroy(struct exporter *e)
{
    free(e);
}

static const struct exporter_ops stall_ops = {
    .kind = "stall", .send = stall_send, .destroy = stall_destroy};

static struct stall *stall_new(void)
{
    struct stall *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    x->base.ops = &stall_ops;
    return x;
}

struct answer {
    int calls;
    int status;
};

static void on_done(void *userdata, int status, const char *detail)
{
    (void)detail;
    struct answer *a = userdata;
    a->calls++;
    a->status = status;
}

static int submit(struct pipeline *p, enum otlp_signal s, size_t len, uint64_t items)
{
    uint8_t *b = calloc(1, len + 1);
    assert_non_null(b);
    struct otlp_counts c = {.resources = 1, .scopes = 1, .items = items};
    struct answer a = {0};
    pipeline_submit(p, s, b, len, &c, on_done, &a);
    free(b);
    assert_int_equal(a.calls, 1);
    return a.status;
}

static void finish_loop(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static struct pipeline_stats stats_of(struct pipeline *p, size_t i)
{
    struct pipeline_stats st[8];
    assert_true(pipeline_get_stats(p, st, 8) > i);
    return st[i];
}

/* Exactly at the cap is accepted; one more byte is refused, counted, and goes nowhere. */
static void test_memory_cap_boundary(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct pipeline_options po;
    pipeline_options_init(&po);
    po.batch_max_bytes = 10 * KIB;
    po.batch_timeout_ns = 3600 * (uint64_t)1000000000;
    struct pipeline *p;
    assert_int_equal(pipeline_new_on_loop(&p, &loop, &po), 0);

    struct pipeline_exporter_options small, big;
    pipeline_exporter_options_init(&small);
    pipeline_exporter_options_init(&big);
    small.name = "small";
    small.memory_queue_max_bytes = 3 * 1000 + 1;
    big.name = "big";
    big.memory_queue_max_bytes = 1 * MIB;
    struct stall *a = stall_new(), *b = stall_new();
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_LOGS, &a->base, &small), 0);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_LOGS, &b->base, &big), 0);

    assert_int_equal(submit(p, OTLP_LOGS, 1000, 10), 0);
    assert_int_equal(submit(p, OTLP_LOGS, 1000, 10), 0);
    assert_int_equal(submit(p, OTLP_LOGS, 1000, 10), 0);
    /* 3000 of 3001 bytes used: two bytes is one too many, one byte fills it exactly. */
    assert_int_equal(submit(p, OTLP_LOGS, 2, 3), DLOTEL_ERR_FULL);
    struct pipeline_stats sa = stats_of(p, 0), sb = stats_of(p, 1);
    assert_int_equal(sa.refused_requests, 1);
    assert_int_equal(sa.refused_items, 3);
    assert_int_equal(sb.refused_requests, 0);
    /* Nothing partially enqueued: the big queue did not take what the small one refused. */
    assert_int_equal(sa.queue_bytes, 3000);
    assert_int_equal(sb.queue_bytes, 3000);
    assert_int_equal(sb.queue_items, 30);
    assert_int_equal(submit(p, OTLP_LOGS, 1, 1), 0);
    sa = stats_of(p, 0);
    assert_int_equal(sa.queue_bytes, 3001);
    assert_int_equal(submit(p, OTLP_LOGS, 1, 1), DLOTEL_ERR_FULL);
    /* Larger than the whole queue: never fits, said so. */
    assert_int_equal(submit(p, OTLP_LOGS, 4000, 1), DLOTEL_ERR_TOO_LARGE);

    struct pipeline_totals tot;
    pipeline_get_totals(p, &tot);
    assert_int_equal(tot.accepted_requests, 4);
    assert_int_equal(tot.refused_requests, 3);
    assert_int_equal(tot.memory_bytes, 2 * 3001);

    /* The per-exporter cap covers all of its signals together. */
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &a->base, NULL), 0);
    assert_int_equal(submit(p, OTLP_TRACES, 1, 1), DLOTEL_ERR_FULL);

    pipeline_free(p);
    finish_loop(&loop);
}

/* queue.memory_max_bytes bounds all memory queues together. */
static void test_memory_global_cap(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct pipeline_options po;
    pipeline_options_init(&po);
    po.memory_max_bytes = 10000;
    po.batch_timeout_ns = 3600 * (uint64_t)1000000000;
    struct pipeline *p;
    assert_int_equal(pipeline_new_on_loop(&p, &loop, &po), 0);
    struct stall *a = stall_new(), *b = stall_new();
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &a->base, NULL), 0);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_METRICS, &b->base, NULL), 0);
    assert_int_equal(submit(p, OTLP_TRACES, 6000, 1), 0);
    assert_int_equal(submit(p, OTLP_METRICS, 4000, 1), 0);
    assert_int_equal(submit(p, OTLP_METRICS, 1, 1), DLOTEL_ERR_FULL);
    assert_int_equal(submit(p, OTLP_TRACES, 1, 1), DLOTEL_ERR_FULL);
    assert_int_equal(stats_of(p, 1).refused_requests, 1);
    pipeline_free(p);
    finish_loop(&loop);
}

/*
 * A disk write that fails (here RLIMIT_FSIZE) fails the submit with DLOTEL_ERR_IO, and the
 * request is in no queue: not in the memory queue of the other exporter, not on disk.
 */
static void test_disk_failure_nothing_partial(void **state)
{
    (void)state;
    struct tmp t;
    tmp_make(&t);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct pipeline_options po;
    pipeline_options_init(&po);
    po.batch_timeout_ns = 3600 * (uint64_t)1000000000;
    struct pipeline *p;
    assert_int_equal(pipeline_new_on_loop(&p, &loop, &po), 0);
    struct pipeline_exporter_options mem, disk;
    pipeline_exporter_options_init(&mem);
    pipeline_exporter_options_init(&disk);
    mem.name = "mem";
    disk.name = "disk";
    disk.disk_queue.enabled = true;
    disk.disk_queue.path = t.dir;
    disk.disk_queue.fsync = PIPELINE_FSYNC_NEVER;
    struct stall *a = stall_new(), *b = stall_new();
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &a->base, &mem), 0);
    assert_int_equal(pipeline_add_exporter_opts(p, OTLP_TRACES, &b->base, &disk), 0);
    assert_int_equal(submit(p, OTLP_TRACES, 5000, 5), 0);

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 8 * KIB;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = submit(p, OTLP_TRACES, 5000, 7);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, DLOTEL_ERR_IO);

    struct pipeline_stats sm = stats_of(p, 0), sd = stats_of(p, 1);
    assert_int_equal(sm.queue_items + sm.in_flight_batches * 5, 5);
    assert_int_equal(sd.disk_items + sd.in_flight_batches * 5, 5);
    struct pipeline_totals tot;
    pipeline_get_totals(p, &tot);
    assert_int_equal(tot.failed_requests, 1);
    /* And it works again once the disk has room. */
    assert_int_equal(submit(p, OTLP_TRACES, 5000, 9), 0);
    pipeline_free(p);
    finish_loop(&loop);
    tmp_remove(&t);
}

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_reopen_in_order),
        cmocka_unit_test(test_disk_delivered_segment_retired),
        cmocka_unit_test(test_disk_torn_tail),
        cmocka_unit_test(test_disk_cap_drops_oldest),
        cmocka_unit_test(test_disk_fsync_policies),
        cmocka_unit_test(test_disk_full_enospc),
        cmocka_unit_test(test_disk_full_rlimit),
        cmocka_unit_test(test_memory_cap_boundary),
        cmocka_unit_test(test_memory_global_cap),
        cmocka_unit_test(test_disk_failure_nothing_partial),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
