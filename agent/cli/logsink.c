/*
 * Where the agent's log goes (log.file, log.format, log.max_size), without changing core/log:
 * core writes each line with one fwrite() and an fflush() to the FILE * it is given, under its
 * lock; here that FILE * is a glibc fopencookie() stream whose write function
 *
 *   - re-encodes a text line as one JSON object per line when log.format is json,
 *   - rotates log.file to log.file.1 (one old file kept) before a line would take it past
 *     log.max_size, and
 *   - writes with write(2) on an O_APPEND descriptor, so that nothing is buffered in the
 *     process when it dies.
 *
 * Core's lock serialises the calls, so the sink needs none of its own.
 */
#include "cli/logsink.h"

#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"

/* A line longer than this (core cuts its lines at 2 KiB) is written as it is. */
#define PENDING_MAX 8192

struct logsink {
    int fd;
    char *path;  /* NULL: fd is stderr, never rotated. */
    char *path1; /* path + ".1" */
    uint64_t size;
    uint64_t max;
    bool json;
    char pending[PENDING_MAX];
    size_t npending;
};

static struct logsink *current;
static FILE *current_file;

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* Nowhere to report a failing log. */
        }
        p += w;
        n -= (size_t)w;
    }
}

static int open_log(const char *path, uint64_t *size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
        /* A fresh machine has no ~/.local/state/dlotel yet: make the directory. */
        const char *slash = strrchr(path, '/');
        if (slash != NULL && slash > path) {
            char *dir = strndup(path, (size_t)(slash - path));
            if (dir != NULL && cli_mkdir_p(dir) == 0) {
                fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
            }
            free(dir);
        }
    }
    if (fd < 0) {
        return -1;
    }
    struct stat st;
    *size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return fd;
}

/* Moves the full file to .1 and starts an empty one; on failure keeps writing where it was. */
static void rotate(struct logsink *ls)
{
    if (rename(ls->path, ls->path1) != 0) {
        return;
    }
    uint64_t size = 0;
    int fd = open_log(ls->path, &size);
    if (fd < 0) {
        /* The old descriptor now writes to .1; better than losing the lines. */
        return;
    }
    close(ls->fd);
    ls->fd = fd;
    ls->size = size;
}

static void json_string(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            uint8_t e[2] = {'\\', c};
            buf_append(b, e, 2);
        } else if (c == '\n') {
            buf_append(b, "\\n", 2);
        } else if (c == '\t') {
            buf_append(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            uint8_t e[6] = {'\\', 'u', '0', '0', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15]};
            buf_append(b, e, 6);
        } else {
            buf_putc(b, c);
        }
    }
    buf_putc(b, '"');
}

/*
 * Core's line "2026-01-01T00:00:00.000Z info  component: message" as
 * {"time":"...","level":"info","component":"component","message":"message"}.
 */
static void to_json(const char *line, size_t n, struct buf *out)
{
    const char *end = line + n;
    const char *p = line;
    const char *t = p;
    while (p < end && *p != ' ') {
        p++;
    }
    size_t tlen = (size_t)(p - t);
    while (p < end && *p == ' ') {
        p++;
    }
    const char *lv = p;
    while (p < end && *p != ' ') {
        p++;
    }
    size_t lvlen = (size_t)(p - lv);
    while (p < end && *p == ' ') {
        p++;
    }
    const char *comp = p;
    const char *sep = NULL;
    for (const char *q = p; q + 1 < end; q++) {
        if (q[0] == ':' && q[1] == ' ') {
            sep = q;
            break;
        }
    }
    buf_append(out, "{\"time\":", 8);
    json_string(out, t, tlen);
    buf_append(out, ",\"level\":", 9);
    json_string(out, lv, lvlen);
    if (sep != NULL) {
        buf_append(out, ",\"component\":", 13);
        json_string(out, comp, (size_t)(sep - comp));
        p = sep + 2;
    }
    buf_append(out, ",\"message\":", 11);
    json_string(out, p, (size_t)(end - p));
    buf_append(out, "}\n", 2);
}

static void emit(struct logsink *ls, const char *line, size_t n)
{
    struct buf j;
    buf_init(&j, 6 * PENDING_MAX + 128);
    const char *data = line;
    size_t len = n;
    if (ls->json) {
        /* |line| holds no newline here; core ends every line with one. */
        to_json(line, n, &j);
        data = (const char *)j.data;
        len = j.len;
    }
    if (data == NULL) {
        buf_cleanup(&j);
        return;
    }
    if (ls->path != NULL && ls->size > 0 && ls->size + len > ls->max) {
        rotate(ls);
    }
    write_all(ls->fd, data, len);
    if (!ls->json) {
        write_all(ls->fd, "\n", 1);
        len++;
    }
    ls->size += len;
    buf_cleanup(&j);
}

static ssize_t cookie_write(void *c, const char *buf, size_t size)
{
    struct logsink *ls = c;
    for (size_t i = 0; i < size; i++) {
        char ch = buf[i];
        if (ch == '\n' || ls->npending == PENDING_MAX) {
            emit(ls, ls->pending, ls->npending);
            ls->npending = 0;
            if (ch == '\n') {
                continue;
            }
        }
        ls->pending[ls->npending++] = ch;
    }
    return (ssize_t)size;
}

static int cookie_close(void *c)
{
    struct logsink *ls = c;
    if (ls->npending > 0) {
        emit(ls, ls->pending, ls->npending);
    }
    if (ls->path != NULL) {
        close(ls->fd);
    }
    free(ls->path);
    free(ls->path1);
    free(ls);
    return 0;
}

int cli_log_open(const char *path, bool json, uint64_t max_size)
{
    if (path == NULL && !json) {
        return 0; /* Core's default: text lines on stderr. */
    }
    struct logsink *ls = calloc(1, sizeof(*ls));
    if (ls == NULL) {
        return -1;
    }
    ls->json = json;
    ls->max = max_size;
    ls->fd = STDERR_FILENO;
    if (path != NULL) {
        size_t n = strlen(path);
        ls->path = strdup(path);
        ls->path1 = malloc(n + 3);
        if (ls->path == NULL || ls->path1 == NULL) {
            goto fail;
        }
        memcpy(ls->path1, path, n);
        memcpy(ls->path1 + n, ".1", 3);
        ls->fd = open_log(path, &ls->size);
        if (ls->fd < 0) {
            goto fail;
        }
    }
    cookie_io_functions_t io = {
        .read = NULL, .write = cookie_write, .seek = NULL, .close = cookie_close};
    FILE *f = fopencookie(ls, "w", io);
    if (f == NULL) {
        if (ls->path != NULL) {
            close(ls->fd);
        }
        goto fail;
    }
    /* Core flushes after each line; a buffer larger than its lines makes that one write. */
    setvbuf(f, NULL, _IOFBF, PENDING_MAX);
    current = ls;
    current_file = f;
    log_set_file(f);
    return 0;

fail : {
    int saved = errno;
    free(ls->path);
    free(ls->path1);
    free(ls);
    errno = saved;
    return -1;
}
}

void cli_log_close(void)
{
    if (current_file == NULL) {
        return;
    }
    log_set_file(NULL);
    fclose(current_file); /* cookie_close() frees the sink. */
    current_file = NULL;
    current = NULL;
}
