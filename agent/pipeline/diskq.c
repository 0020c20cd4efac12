/*
 * The disk queue (see diskq.h for the format).
 *
 * Memory holds one small struct per segment and nothing per record: records are found by
 * reading headers from the read position, so a backlog of any size costs no memory. Reading a
 * record is one preadv() that fetches its payload into the caller's batch buffer and the next
 * record's header into a cache, so a batch costs one system call per record.
 *
 * Known weak spots: the cursor is rewritten after every delivered batch (a few system calls; a
 * lost rename only means a batch is sent twice); a corrupt header found after start skips the
 * rest of its segment, since the lengths after it cannot be trusted.
 */
#include "pipeline/diskq.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "core/log.h"
#include "dlotel.h"

#define CURSOR_MAGIC 0x43514c44u /* "DLQC" */
#define CURSOR_LEN   28
#define SCAN_CHUNK   (1024 * 1024)
#define SEG_NAME_LEN 24 /* 20 digits, ".seg" */

struct seg {
    uint64_t id;
    uint64_t size;
    /* Records not read yet (after the read position). */
    uint64_t unread_records;
    uint64_t unread_items;
    uint64_t unread_bytes;
};

struct diskq {
    char *dir;
    char *name;
    int dirfd;
    uint64_t max_bytes;
    uint64_t segment_bytes;
    enum pipeline_fsync fsync;

    struct seg *segs; /* Oldest first. */
    size_t nsegs;
    size_t capsegs;
    uint64_t next_id;

    int wfd; /* The last segment's, when it is open for appends; -1 otherwise. */
    int rfd; /* A read descriptor for segment rfd_id, when it is not the write segment. */
    uint64_t rfd_id;
    bool dirty;

    struct diskq_pos read;
    struct diskq_pos committed;
    /* The header at |read|, when already fetched by the previous preadv(). */
    uint8_t hdr[DISKQ_HEADER_LEN];
    bool hdr_valid;

    struct diskq_info info;
};

int diskq_pos_cmp(struct diskq_pos a, struct diskq_pos b)
{
    if (a.seg != b.seg) {
        return a.seg < b.seg ? -1 : 1;
    }
    if (a.off != b.off) {
        return a.off < b.off ? -1 : 1;
    }
    return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/*
 * CRC-32C (Castagnoli), the checksum of records and of the cursor. On x86-64 with SSE4.2 (every
 * such CPU since 2008) it is one instruction per 8 bytes, about three times zlib's crc32: the
 * checksum is most of the cost of an append. Elsewhere, slice-by-8 tables.
 */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t c = crc_table[t - 1][i];
            crc_table[t][i] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
    }
#if defined(__x86_64__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
                                                            size_t n)
{
    uint64_t c = crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n > 0; n--) {
        c32 = _mm_crc32_u8(c32, *p++);
    }
    return c32;
}
#endif

/* Continues a CRC-32C: start with crc32c(0, ...). */
static uint32_t crc32c(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (crc_hw) {
        return ~crc32c_hw(c, p, n);
    }
#endif
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
    }
    for (; n > 0; n--) {
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    }
    return ~c;
}

/* The crc of a record: its len and items fields, then the payload. */
static uint32_t record_crc_start(const uint8_t *hdr)
{
    return crc32c(0, hdr + 4, 8);
}

static void seg_name(char *out, uint64_t id)
{
    snprintf(out, SEG_NAME_LEN + 1, "%020" PRIu64 ".seg", id);
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
                return -1;
            }
            tmp[i] = c;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static struct seg *find_seg(struct diskq *q, uint64_t id)
{
    for (size_t i = 0; i < q->nsegs; i++) {
        if (q->segs[i].id == id) {
            return &q->segs[i];
        }
    }
    return NULL;
}

static int add_seg(struct diskq *q, uint64_t id, uint64_t size)
{
    if (q->nsegs == q->capsegs) {
        size_t cap = q->capsegs == 0 ? 16 : q->capsegs * 2;
        struct seg *v = realloc(q->segs, cap * sizeof(*v));
        if (v == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        q->segs = v;
        q->capsegs = cap;
    }
    q->segs[q->nsegs++] = (struct seg){.id = id, .size = size};
    if (id >= q->next_id) {
        q->next_id = id + 1;
    }
    return 0;
}

static bool is_write_seg(const struct diskq *q, const struct seg *s)
{
    return q->wfd >= 0 && s == &q->segs[q->nsegs - 1];
}

/* Opens a read descriptor for segment |id| (the write descriptor when it is that one). */
static int read_fd(struct diskq *q, const struct seg *s)
{
    if (is_write_seg(q, s)) {
        return q->wfd;
    }
    if (q->rfd >= 0 && q->rfd_id == s->id) {
        return q->rfd;
    }
    if (q->rfd >= 0) {
        close(q->rfd);
        q->rfd = -1;
    }
    char name[SEG_NAME_LEN + 1];
    seg_name(name, s->id);
    int fd = openat(q->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("pipeline", "%s: cannot open %s/%s: %s", q->name, q->dir, name, strerror(errno));
        return -1;
    }
    q->rfd = fd;
    q->rfd_id = s->id;
    return fd;
}

/* Deletes the oldest segment; its unread items are counted as dropped. */
static void drop_oldest(struct diskq *q, const char *why)
{
    struct seg *s = &q->segs[0];
    char name[SEG_NAME_LEN + 1];
    seg_name(name, s->id);
    if (is_write_seg(q, s)) {
        close(q->wfd);
        q->wfd = -1;
    }
    if (q->rfd >= 0 && q->rfd_id == s->id) {
        close(q->rfd);
        q->rfd = -1;
    }
    if (unlinkat(q->dirfd, name, 0) != 0 && errno != ENOENT) {
        log_warn("pipeline", "%s: cannot delete %s/%s: %s", q->name, q->dir, name, strerror(errno));
    }
    if (s->unread_items > 0 || s->unread_records > 0) {
        log_warn("pipeline",
                 "%s: %s: deleted %s unsent: %" PRIu64 " items in %" PRIu64 " requests dropped",
                 q->name, why, name, s->unread_items, s->unread_records);
    }
    q->info.dropped_items += s->unread_items;
    q->info.pending_records -= s->unread_records;
    q->info.pending_items -= s->unread_items;
    q->info.pending_bytes -= s->unread_bytes;
    q->info.bytes -= s->size;
    uint64_t id = s->id;
    memmove(&q->segs[0], &q->segs[1], (q->nsegs - 1) * sizeof(*s));
    q->nsegs--;
    struct diskq_pos next = {q->nsegs > 0 ? q->segs[0].id : q->next_id, 0};
    if (q->read.seg <= id) {
        q->read = next;
        q->hdr_valid = false;
    }
    if (q->committed.seg <= id) {
        q->committed = next;
    }
}

/* ---- recovery ----------------------------------------------------------------------------- */

static void read_cursor(struct diskq *q, bool *found)
{
    *found = false;
    int fd = openat(q->dirfd, "cursor", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    uint8_t b[CURSOR_LEN];
    ssize_t n = pread(fd, b, sizeof(b), 0);
    close(fd);
    if (n != CURSOR_LEN || get32(b) != CURSOR_MAGIC || get32(b + 4) != 1 ||
        get32(b + 24) != crc32c(0, b, 24)) {
        log_warn("pipeline", "%s: %s/cursor is damaged: everything queued is sent again", q->name,
                 q->dir);
        return;
    }
    q->committed.seg = get64(b + 8);
    q->committed.off = get64(b + 16);
    *found = true;
}

static int write_cursor(struct diskq *q)
{
    uint8_t b[CURSOR_LEN];
    put32(b, CURSOR_MAGIC);
    put32(b + 4, 1);
    put64(b + 8, q->committed.seg);
    put64(b + 16, q->committed.off);
    put32(b + 24, crc32c(0, b, 24));
    int fd = openat(q->dirfd, "cursor.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        goto fail;
    }
    ssize_t n = pwrite(fd, b, sizeof(b), 0);
    if (n != CURSOR_LEN || (q->fsync == PIPELINE_FSYNC_ALWAYS && fdatasync(fd) != 0)) {
        int saved = n < 0 ? errno : EIO;
        close(fd);
        errno = saved;
        goto fail;
    }
    if (close(fd) != 0 || renameat(q->dirfd, "cursor.tmp", q->dirfd, "cursor") != 0) {
        goto fail;
    }
    return 0;

fail:
    log_warn("pipeline", "%s: cannot write %s/cursor: %s (records may be sent twice)", q->name,
             q->dir, strerror(errno));
    return DLOTEL_ERR_IO;
}

/*
 * Checks every record of segment |s| and cuts it at the first bad one. Records at or after
 * |from| are counted as unread. When |from| falls between records, *boundary receives the first
 * record boundary at or after it.
 */
static int scan_segment(struct diskq *q, struct seg *s, uint64_t from, uint64_t *boundary)
{
    char name[SEG_NAME_LEN + 1];
    seg_name(name, s->id);
    int fd = openat(q->dirfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        log_error("pipeline", "%s: cannot open %s/%s: %s", q->name, q->dir, name, strerror(errno));
        return DLOTEL_ERR_IO;
    }
    uint8_t *chunk = malloc(SCAN_CHUNK);
    if (chunk == NULL) {
        close(fd);
        return DLOTEL_ERR_NOMEM;
    }
    uint64_t off = 0;
    uint64_t cstart = 0, clen = 0; /* chunk holds the file's bytes [cstart, cstart + clen). */
    const char *bad = NULL;
    *boundary = UINT64_MAX;
    while (off < s->size) {
        uint8_t hdr[DISKQ_HEADER_LEN];
        if (s->size - off < DISKQ_HEADER_LEN) {
            bad = "torn header";
            break;
        }
        if (off < cstart || off + DISKQ_HEADER_LEN > cstart + clen) {
            ssize_t n = pread(fd, chunk, SCAN_CHUNK, (off_t)off);
            if (n < DISKQ_HEADER_LEN) {
                bad = "unreadable header";
                break;
            }
            cstart = off;
            clen = (uint64_t)n;
        }
        memcpy(hdr, chunk + (off - cstart), DISKQ_HEADER_LEN);
        uint32_t len = get32(hdr + 4);
        if (get32(hdr) != DISKQ_MAGIC) {
            bad = "bad magic";
            break;
        }
        if (len > s->size - off - DISKQ_HEADER_LEN) {
            bad = "torn record";
            break;
        }
        uint32_t crc = record_crc_start(hdr);
        uint64_t p = off + DISKQ_HEADER_LEN;
        uint64_t end = p + len;
        while (p < end) {
            if (p < cstart || p >= cstart + clen) {
                ssize_t n = pread(fd, chunk, SCAN_CHUNK, (off_t)p);
                if (n <= 0) {
                    break;
                }
                cstart = p;
                clen = (uint64_t)n;
            }
            uint64_t take = cstart + clen - p;
            if (take > end - p) {
                take = end - p;
            }
            crc = crc32c(crc, chunk + (p - cstart), (size_t)take);
            p += take;
        }
        if (p != end || crc != get32(hdr + 12)) {
            bad = "bad crc";
            break;
        }
        if (off >= from) {
            if (*boundary == UINT64_MAX) {
                *boundary = off;
            }
            s->unread_records++;
            s->unread_items += get32(hdr + 8);
            s->unread_bytes += len;
        }
        off = end;
    }
    free(chunk);
    if (bad != NULL) {
        log_warn("pipeline",
                 "%s: %s/%s: %s at byte %" PRIu64 ": cutting %" PRIu64 " bytes (a record "
                 "torn by a crash, or corruption)",
                 q->name, q->dir, name, bad, off, s->size - off);
        q->info.truncated_bytes += s->size - off;
        if (ftruncate(fd, (off_t)off) != 0) {
            log_error("pipeline", "%s: cannot truncate %s/%s: %s", q->name, q->dir, name,
                      strerror(errno));
            close(fd);
            return DLOTEL_ERR_IO;
        }
        s->size = off;
    }
    close(fd);
    if (*boundary == UINT64_MAX) {
        *boundary = s->size;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists the segment ids in the directory, sorted. */
static int list_segments(struct diskq *q, uint64_t **ids, size_t *n)
{
    int fd = dup(q->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return DLOTEL_ERR_IO;
    }
    rewinddir(d);
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (strlen(nm) != SEG_NAME_LEN || strcmp(nm + 20, ".seg") != 0) {
            continue;
        }
        uint64_t id = 0;
        bool ok = true;
        for (int i = 0; i < 20; i++) {
            if (nm[i] < '0' || nm[i] > '9' || id > (UINT64_MAX - 9) / 10) {
                ok = false;
                break;
            }
            id = id * 10 + (uint64_t)(nm[i] - '0');
        }
        if (!ok || id == 0) {
            continue;
        }
        if (cnt == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            uint64_t *nv = realloc(v, cap * sizeof(*nv));
            if (nv == NULL) {
                rc = DLOTEL_ERR_NOMEM;
                break;
            }
            v = nv;
        }
        v[cnt++] = id;
    }
    closedir(d);
    if (rc != 0) {
        free(v);
        return rc;
    }
    if (cnt > 0) {
        qsort(v, cnt, sizeof(*v), cmp_u64);
    }
    *ids = v;
    *n = cnt;
    return 0;
}

static int recover(struct diskq *q)
{
    bool have_cursor;
    read_cursor(q, &have_cursor);
    if (have_cursor && q->committed.seg >= q->next_id) {
        /*
         * New segments must come after the cursor, or the next start would take them for
         * delivered ones.
         */
        q->next_id = q->committed.seg;
    }
    uint64_t *ids = NULL;
    size_t n = 0;
    int rc = list_segments(q, &ids, &n);
    if (rc != 0) {
        log_error("pipeline", "%s: cannot list %s: %s", q->name, q->dir, strerror(errno));
        return rc;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        char name[SEG_NAME_LEN + 1];
        seg_name(name, ids[i]);
        if (have_cursor && ids[i] < q->committed.seg) {
            /* Delivered before the last stop, deleted before it could be. */
            unlinkat(q->dirfd, name, 0);
            continue;
        }
        struct stat st;
        if (fstatat(q->dirfd, name, &st, 0) != 0) {
            continue;
        }
        if ((rc = add_seg(q, ids[i], (uint64_t)st.st_size)) != 0) {
            break;
        }
        struct seg *s = &q->segs[q->nsegs - 1];
        uint64_t from = have_cursor && ids[i] == q->committed.seg ? q->committed.off : 0;
        uint64_t boundary;
        if ((rc = scan_segment(q, s, from, &boundary)) != 0) {
            break;
        }
        if (have_cursor && ids[i] == q->committed.seg) {
            /* A cursor between records (never written so) counts from the next record. */
            q->committed.off = boundary;
        }
        q->info.bytes += s->size;
        q->info.pending_records += s->unread_records;
        q->info.pending_items += s->unread_items;
        q->info.pending_bytes += s->unread_bytes;
    }
    free(ids);
    if (rc != 0) {
        return rc;
    }
    /* Empty segments and ones wholly delivered are of no further use. */
    while (q->nsegs > 0 && q->segs[0].unread_records == 0) {
        drop_oldest(q, "recovered");
    }
    if (q->nsegs > 0 && (!have_cursor || q->committed.seg < q->segs[0].id)) {
        q->committed = (struct diskq_pos){q->segs[0].id, 0};
    } else if (q->nsegs == 0) {
        q->committed = (struct diskq_pos){q->next_id, 0};
    }
    q->read = q->committed;
    q->info.recovered_records = q->info.pending_records;
    q->info.recovered_items = q->info.pending_items;
    while (q->info.bytes > q->max_bytes && q->nsegs > 0) {
        drop_oldest(q, "over disk_queue.max_bytes");
    }
    if (q->info.pending_records > 0) {
        log_info("pipeline", "%s: %" PRIu64 " unsent requests (%" PRIu64 " items) found in %s",
                 q->name, q->info.pending_records, q->info.pending_items, q->dir);
    }
    return 0;
}

int diskq_open(struct diskq **out, const struct diskq_options *o)
{
    if (o == NULL || o->dir == NULL || o->max_bytes == 0) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct diskq *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    q->wfd = -1;
    q->rfd = -1;
    q->dirfd = -1;
    q->next_id = 1;
    q->max_bytes = o->max_bytes;
    q->segment_bytes = o->segment_bytes != 0 ? o->segment_bytes : 64u * 1024 * 1024;
    /* Several segments fit under the cap, so that reaching it drops a part, not everything. */
    if (q->segment_bytes > o->max_bytes / 4) {
        q->segment_bytes = o->max_bytes / 4 > 0 ? o->max_bytes / 4 : 1;
    }
    q->fsync = o->fsync;
    q->dir = strdup(o->dir);
    q->name = strdup(o->name != NULL ? o->name : o->dir);
    int rc = DLOTEL_ERR_NOMEM;
    if (q->dir == NULL || q->name == NULL) {
        goto fail;
    }
    if (make_dirs(q->dir) != 0 ||
        (q->dirfd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        log_error("pipeline", "%s: cannot create the disk queue %s: %s", q->name, q->dir,
                  strerror(errno));
        rc = DLOTEL_ERR_IO;
        goto fail;
    }
    if ((rc = recover(q)) != 0) {
        goto fail;
    }
    *out = q;
    return 0;

fail:
    diskq_close(q);
    return rc;
}

void diskq_close(struct diskq *q)
{
    if (q == NULL) {
        return;
    }
    if (q->fsync != PIPELINE_FSYNC_NEVER) {
        diskq_sync(q);
    }
    if (q->wfd >= 0) {
        close(q->wfd);
    }
    if (q->rfd >= 0) {
        close(q->rfd);
    }
    if (q->dirfd >= 0) {
        close(q->dirfd);
    }
    free(q->segs);
    free(q->dir);
    free(q->name);
    free(q);
}

/* ---- appending ---------------------------------------------------------------------------- */

static int new_segment(struct diskq *q)
{
    if (q->wfd >= 0) {
        if (q->dirty && q->fsync != PIPELINE_FSYNC_NEVER) {
            /* The segment is done: what was written to it is made durable now. */
            diskq_sync(q);
        }
        close(q->wfd);
        q->wfd = -1;
    }
    for (int attempt = 0; attempt < 100; attempt++) {
        char name[SEG_NAME_LEN + 1];
        uint64_t id = q->next_id++;
        seg_name(name, id);
        int fd = openat(q->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST) {
            continue;
        }
        if (fd < 0) {
            log_error("pipeline", "%s: cannot create %s/%s: %s", q->name, q->dir, name,
                      strerror(errno));
            return DLOTEL_ERR_IO;
        }
        int rc = add_seg(q, id, 0);
        if (rc != 0) {
            close(fd);
            unlinkat(q->dirfd, name, 0);
            return rc;
        }
        q->wfd = fd;
        if (q->fsync != PIPELINE_FSYNC_NEVER) {
            /* The new name must survive a crash too. */
            fsync(q->dirfd);
        }
        return 0;
    }
    return DLOTEL_ERR_IO;
}

static void remove_last_seg(struct diskq *q)
{
    struct seg *s = &q->segs[q->nsegs - 1];
    char name[SEG_NAME_LEN + 1];
    seg_name(name, s->id);
    if (q->wfd >= 0) {
        close(q->wfd);
        q->wfd = -1;
    }
    unlinkat(q->dirfd, name, 0);
    q->nsegs--;
}

int diskq_append(struct diskq *q, const uint8_t *data, size_t len, uint32_t items,
                 struct diskq_undo *undo)
{
    uint64_t need = (uint64_t)len + DISKQ_HEADER_LEN;
    if (len > UINT32_MAX || need > q->max_bytes) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    while (q->info.bytes + need > q->max_bytes && q->nsegs > 0) {
        drop_oldest(q, "disk_queue.max_bytes reached");
    }
    bool created = false;
    if (q->wfd < 0 ||
        (q->segs[q->nsegs - 1].size > 0 && q->segs[q->nsegs - 1].size + need > q->segment_bytes)) {
        int rc = new_segment(q);
        if (rc != 0) {
            return rc;
        }
        created = true;
    }
    struct seg *s = &q->segs[q->nsegs - 1];

    uint8_t hdr[DISKQ_HEADER_LEN];
    put32(hdr, DISKQ_MAGIC);
    put32(hdr + 4, (uint32_t)len);
    put32(hdr + 8, items);
    put32(hdr + 12, crc32c(record_crc_start(hdr), data, len));

    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};
    size_t done = 0;
    while (done < need) {
        /* Step over what a short write already put down. */
        struct iovec v[2];
        int cnt = 0;
        if (done < DISKQ_HEADER_LEN) {
            v[cnt++] = (struct iovec){hdr + done, DISKQ_HEADER_LEN - done};
            v[cnt++] = iov[1];
        } else {
            v[cnt++] = (struct iovec){(uint8_t *)data + (done - DISKQ_HEADER_LEN),
                                      len - (done - DISKQ_HEADER_LEN)};
        }
        ssize_t n = pwritev(q->wfd, v, cnt, (off_t)(s->size + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int saved = n < 0 ? errno : ENOSPC;
            char name[SEG_NAME_LEN + 1];
            seg_name(name, s->id);
            log_error("pipeline", "%s: cannot write to %s/%s: %s", q->name, q->dir, name,
                      strerror(saved));
            if (created) {
                remove_last_seg(q);
            } else if (ftruncate(q->wfd, (off_t)s->size) != 0) {
                /* The torn record is cut on the next start. */
                log_warn("pipeline", "%s: cannot truncate %s/%s: %s", q->name, q->dir, name,
                         strerror(errno));
            }
            errno = saved;
            return DLOTEL_ERR_IO;
        }
        done += (size_t)n;
    }
    if (undo != NULL) {
        *undo = (struct diskq_undo){s->id, s->size, (uint32_t)len, items, created};
    }
    s->size += need;
    s->unread_records++;
    s->unread_items += items;
    s->unread_bytes += len;
    q->info.bytes += need;
    q->info.pending_records++;
    q->info.pending_items += items;
    q->info.pending_bytes += len;
    q->dirty = true;
    return 0;
}

void diskq_rollback(struct diskq *q, const struct diskq_undo *u)
{
    if (q->nsegs == 0 || q->segs[q->nsegs - 1].id != u->seg || q->wfd < 0) {
        return;
    }
    struct seg *s = &q->segs[q->nsegs - 1];
    uint64_t need = (uint64_t)u->len + DISKQ_HEADER_LEN;
    s->unread_records--;
    s->unread_items -= u->items;
    s->unread_bytes -= u->len;
    q->info.bytes -= need;
    q->info.pending_records--;
    q->info.pending_items -= u->items;
    q->info.pending_bytes -= u->len;
    if (u->created) {
        remove_last_seg(q);
        return;
    }
    s->size = u->size;
    if (ftruncate(q->wfd, (off_t)u->size) != 0) {
        log_warn("pipeline", "%s: cannot take back a record: %s (it may be sent)", q->name,
                 strerror(errno));
    }
}

bool diskq_dirty(const struct diskq *q)
{
    return q->dirty;
}

int diskq_sync(struct diskq *q)
{
    if (!q->dirty || q->wfd < 0) {
        q->dirty = false;
        return 0;
    }
    q->info.syncs++;
    if (fdatasync(q->wfd) != 0) {
        log_error("pipeline", "%s: fdatasync in %s: %s", q->name, q->dir, strerror(errno));
        return DLOTEL_ERR_IO;
    }
    q->dirty = false;
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

/* Skips the unread rest of segment |s| (after a bad header), counting it as dropped. */
static void skip_rest(struct diskq *q, struct seg *s, const char *why)
{
    log_error("pipeline",
              "%s: segment %" PRIu64 " in %s: %s at byte %" PRIu64 "; skipping %" PRIu64
              " requests (%" PRIu64 " items) after it",
              q->name, s->id, q->dir, why, q->read.off, s->unread_records, s->unread_items);
    q->info.dropped_items += s->unread_items;
    q->info.pending_records -= s->unread_records;
    q->info.pending_items -= s->unread_items;
    q->info.pending_bytes -= s->unread_bytes;
    s->unread_records = s->unread_items = s->unread_bytes = 0;
    q->read.off = s->size;
    q->hdr_valid = false;
    if (is_write_seg(q, s)) {
        /* Nothing more may be appended after garbage. */
        if (q->dirty && q->fsync != PIPELINE_FSYNC_NEVER) {
            diskq_sync(q);
        }
        close(q->wfd);
        q->wfd = -1;
    }
}

int diskq_peek(struct diskq *q, struct diskq_record *r)
{
    for (;;) {
        if (q->info.pending_records == 0) {
            return DLOTEL_ERR_NOT_FOUND;
        }
        struct seg *s = find_seg(q, q->read.seg);
        if (s == NULL) {
            /* Deleted at the cap: go on with the oldest left. */
            q->read = (struct diskq_pos){q->segs[0].id, 0};
            q->hdr_valid = false;
            continue;
        }
        if (q->read.off >= s->size) {
            if (s == &q->segs[q->nsegs - 1]) {
                return DLOTEL_ERR_NOT_FOUND; /* Counters say otherwise: cannot happen. */
            }
            q->read = (struct diskq_pos){s[1].id, 0};
            q->hdr_valid = false;
            continue;
        }
        if (!q->hdr_valid) {
            int fd = read_fd(q, s);
            if (fd < 0) {
                skip_rest(q, s, "cannot open");
                continue;
            }
            ssize_t n = pread(fd, q->hdr, DISKQ_HEADER_LEN, (off_t)q->read.off);
            if (n != DISKQ_HEADER_LEN) {
                skip_rest(q, s, n < 0 ? strerror(errno) : "short read");
                continue;
            }
        }
        uint32_t len = get32(q->hdr + 4);
        if (q->read.off + DISKQ_HEADER_LEN > s->size || get32(q->hdr) != DISKQ_MAGIC ||
            len > s->size - q->read.off - DISKQ_HEADER_LEN) {
            skip_rest(q, s, "bad record header");
            continue;
        }
        q->hdr_valid = true;
        r->start = q->read;
        r->end = (struct diskq_pos){s->id, q->read.off + DISKQ_HEADER_LEN + len};
        r->len = len;
        r->items = get32(q->hdr + 8);
        return 0;
    }
}

int diskq_read(struct diskq *q, const struct diskq_record *r, struct buf *into)
{
    struct seg *s = find_seg(q, r->start.seg);
    if (s == NULL || diskq_pos_cmp(r->start, q->read) != 0) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    int rc = buf_reserve(into, r->len);
    if (rc != 0) {
        return rc;
    }
    int fd = read_fd(q, s);
    if (fd < 0) {
        return DLOTEL_ERR_IO;
    }
    /* The payload into the buffer, and the next header into the cache, in one call. */
    uint64_t next = r->end.off;
    bool want_next = next + DISKQ_HEADER_LEN <= s->size;
    struct iovec v[2] = {{into->data + into->len, r->len}, {q->hdr, DISKQ_HEADER_LEN}};
    size_t want = r->len + (want_next ? DISKQ_HEADER_LEN : 0);
    size_t got = 0;
    while (got < want) {
        struct iovec w[2];
        int cnt = 0;
        if (got < r->len) {
            w[cnt++] = (struct iovec){(uint8_t *)v[0].iov_base + got, r->len - got};
            if (want_next) {
                w[cnt++] = v[1];
            }
        } else {
            w[cnt++] = (struct iovec){q->hdr + (got - r->len), want - got};
        }
        ssize_t n = preadv(fd, w, cnt, (off_t)(r->start.off + DISKQ_HEADER_LEN + got));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            q->hdr_valid = false;
            log_error("pipeline", "%s: cannot read segment %" PRIu64 " in %s: %s", q->name, s->id,
                      q->dir, n < 0 ? strerror(errno) : "short read");
            return DLOTEL_ERR_IO;
        }
        got += (size_t)n;
    }
    into->len += r->len;
    q->hdr_valid = want_next;
    q->read = r->end;
    s->unread_records--;
    s->unread_items -= r->items;
    s->unread_bytes -= r->len;
    q->info.pending_records--;
    q->info.pending_items -= r->items;
    q->info.pending_bytes -= r->len;
    return 0;
}

int diskq_commit(struct diskq *q, struct diskq_pos pos)
{
    if (diskq_pos_cmp(pos, q->committed) <= 0) {
        return 0;
    }
    q->committed = pos;
    /*
     * A write segment wholly delivered is retired once it holds a megabyte, so that delivered
     * data does not linger up to segment_bytes; the next append starts a new one.
     */
    if (q->wfd >= 0) {
        struct seg *w = &q->segs[q->nsegs - 1];
        uint64_t retire = q->segment_bytes < 1024 * 1024 ? q->segment_bytes : 1024 * 1024;
        if (w->size >= retire && pos.seg == w->id && pos.off == w->size && w->unread_records == 0) {
            if (q->dirty && q->fsync != PIPELINE_FSYNC_NEVER) {
                diskq_sync(q);
            }
            close(q->wfd);
            q->wfd = -1;
        }
    }
    /* Segments wholly delivered go; the write segment stays while it is written. */
    while (q->nsegs > 0) {
        struct seg *s = &q->segs[0];
        bool before = s->id < pos.seg || (s->id == pos.seg && pos.off >= s->size);
        if (!before || is_write_seg(q, s) ||
            diskq_pos_cmp(q->read, (struct diskq_pos){s->id, s->size}) < 0) {
            break;
        }
        drop_oldest(q, "delivered");
    }
    return write_cursor(q);
}

void diskq_get_info(const struct diskq *q, struct diskq_info *out)
{
    *out = q->info;
    out->segments = q->nsegs;
    out->read = q->read;
    out->committed = q->committed;
    out->end = q->nsegs > 0
                   ? (struct diskq_pos){q->segs[q->nsegs - 1].id, q->segs[q->nsegs - 1].size}
                   : (struct diskq_pos){q->next_id, 0};
}
