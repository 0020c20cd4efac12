/*
 * The file exporter: appends each request to a file as one line of OTLP/JSON, the format of the
 * OpenTelemetry Collector's file exporter, so `tail -f`, jq and tests can read it.
 *
 * Each line, newline included, goes out in one write() on a descriptor opened with O_APPEND: the
 * kernel places it at the end of the file in one piece, so lines never interleave, and no
 * user-space buffer holds half a line back. (A reader racing a very large write may see its first
 * part before the rest; one that reads up to the newline, as line readers do, sees whole lines.) A
 * short write (disk full) is completed when possible and otherwise cut back off the file, so a
 * failed request leaves no partial line behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "exporter/exporter_internal.h"

struct file_exporter {
    struct exporter base; /* First, so that a struct exporter * converts back. */
    int fd;
    char *path;         /* For log lines. */
    struct arena arena; /* The decoded request; reset after each one. */
    struct buf line;    /* The JSON line being written; emptied after each one. */
};

static int write_line(struct file_exporter *f)
{
    const uint8_t *p = f->line.data;
    size_t len = f->line.len;
    size_t done = 0;
    int saved;
    /* One write() takes the whole line unless the disk is full; the loop is for that case. */
    while (done < len) {
        ssize_t n = write(f->fd, p + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            saved = n == 0 ? ENOSPC : errno;
            goto fail;
        }
        done += (size_t)n;
    }
    return 0;

fail:
    if (done > 0) {
        /* Take the partial line back off the end, so the next line starts on a line. */
        off_t end = lseek(f->fd, 0, SEEK_END);
        if (end < (off_t)done || ftruncate(f->fd, end - (off_t)done) != 0) {
            log_error("file", "%s now ends with a partial line", f->path);
        }
    }
    log_error("file", "cannot write to %s: %s", f->path, strerror(saved));
    return DLOTEL_ERR_IO;
}

static int file_export(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                       const struct otlp_counts *counts)
{
    (void)counts;
    struct file_exporter *f = (struct file_exporter *)e;
    int rc = otlp_pb_to_json(s, pb, len, &f->arena, &f->line);
    arena_reset(&f->arena);
    if (rc == 0) {
        rc = buf_putc(&f->line, '\n');
    }
    if (rc == 0) {
        rc = write_line(f);
    } else {
        log_warn("file", "cannot encode a %s request as JSON: %s", otlp_signal_name(s),
                 dlotel_strerror(rc));
    }
    exporter_buf_recycle(&f->line);
    return rc;
}

static void file_flush(struct exporter *e)
{
    struct file_exporter *f = (struct file_exporter *)e;
    /* Lines are already in the kernel; flushing means making them durable. */
    if (fdatasync(f->fd) != 0 && errno != EINVAL && errno != EROFS) {
        log_warn("file", "cannot sync %s: %s", f->path, strerror(errno));
    }
}

static void file_destroy(struct exporter *e)
{
    struct file_exporter *f = (struct file_exporter *)e;
    if (close(f->fd) != 0) {
        log_warn("file", "cannot close %s: %s", f->path, strerror(errno));
    }
    arena_cleanup(&f->arena);
    buf_cleanup(&f->line);
    free(f->path);
    free(f);
}

static const struct exporter_ops file_ops = {
    .kind = "file",
    .export = file_export,
    .flush = file_flush,
    .destroy = file_destroy,
};

int exporter_file_new(struct exporter **out, const char *path)
{
    if (path == NULL || path[0] == '\0') {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct file_exporter *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    f->path = strdup(path);
    if (f->path == NULL) {
        goto fail_path;
    }
    f->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (f->fd < 0) {
        log_error("file", "cannot open %s: %s", path, strerror(errno));
        goto fail_open;
    }
    f->base.ops = &file_ops;
    f->base.refs = 0;
    arena_init(&f->arena, EXPORTER_ARENA_MAX);
    buf_init(&f->line, EXPORTER_JSON_MAX);
    *out = &f->base;
    return 0;

fail_open:
    free(f->path);
    free(f);
    return DLOTEL_ERR_IO;

fail_path:
    free(f);
    return DLOTEL_ERR_NOMEM;
}
