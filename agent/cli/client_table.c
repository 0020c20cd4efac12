/*
 * Text tables for the client commands. Cells come from telemetry, which anyone who can send OTLP
 * controls, so control characters are replaced before they reach a terminal: an ESC in a log
 * body must not be able to rewrite the screen of the person reading it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "dlotel.h"

#define TABLE_MIN_FLEX 8
#define ELLIPSIS       "..."

void table_init(struct table *t, size_t ncols, const char *const *headers, const unsigned *flags)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->headers = headers;
    t->flags = flags;
}

/* A copy of |s| with C0 controls and DEL as spaces (tabs and newlines included). */
static char *clean_copy(const char *s)
{
    if (s == NULL) {
        s = "";
    }
    size_t n = strlen(s);
    char *c = malloc(n + 1);
    if (c == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        c[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    c[n] = '\0';
    return c;
}

int table_add_row(struct table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap == 0 ? 16 : t->cap * 2;
        char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
        if (c == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        t->cells = c;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = clean_copy(cells[i]);
        if (row[i] == NULL) {
            while (i-- > 0) {
                free(row[i]);
            }
            return DLOTEL_ERR_NOMEM;
        }
    }
    t->nrows++;
    return 0;
}

void table_cleanup(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* Characters, not bytes: continuation bytes of UTF-8 do not count. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        w += (*p & 0xc0) != 0x80;
    }
    return w;
}

/* The byte length of the first |chars| characters of |s|. */
static size_t prefix_bytes(const char *s, size_t chars)
{
    size_t seen = 0;
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80) {
            if (seen == chars) {
                break;
            }
            seen++;
        }
    }
    return i;
}

static int put_pad(struct buf *out, size_t n)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = buf_putc(out, ' ');
    }
    return rc;
}

/* One cell, cut to |w| characters (with "...") and padded unless it is the last. */
static int put_cell(struct buf *out, const char *s, size_t w, unsigned flags, bool last)
{
    size_t tw = text_width(s);
    size_t bytes = strlen(s);
    bool cut = tw > w;
    if (cut) {
        size_t keep = w > 3 ? w - 3 : 0;
        bytes = prefix_bytes(s, keep);
        tw = keep + (w > 3 ? 3 : 0);
    }
    int rc = 0;
    if ((flags & TABLE_RIGHT) != 0) {
        rc = put_pad(out, w - tw);
    }
    if (rc == 0) {
        rc = buf_append(out, s, bytes);
    }
    if (rc == 0 && cut && w > 3) {
        rc = buf_append(out, ELLIPSIS, 3);
    }
    if (rc == 0 && (flags & TABLE_RIGHT) == 0 && !last) {
        rc = put_pad(out, w - tw);
    }
    return rc;
}

int table_render(const struct table *t, size_t width, struct buf *out)
{
    size_t *w = calloc(t->ncols, sizeof(*w));
    if (w == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    size_t total = 0;
    for (size_t c = 0; c < t->ncols; c++) {
        w[c] = text_width(t->headers[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t cw = text_width(t->cells[r * t->ncols + c]);
            w[c] = cw > w[c] ? cw : w[c];
        }
        total += w[c] + (c > 0 ? 2 : 0);
    }
    /* Too wide: take the excess from the flexible columns, last first. */
    for (size_t c = t->ncols; width > 0 && total > width && c-- > 0;) {
        if (t->flags == NULL || (t->flags[c] & TABLE_FLEX) == 0) {
            continue;
        }
        size_t floor = text_width(t->headers[c]);
        floor = floor > TABLE_MIN_FLEX ? floor : TABLE_MIN_FLEX;
        if (w[c] <= floor) {
            continue;
        }
        size_t give = w[c] - floor;
        size_t excess = total - width;
        give = give < excess ? give : excess;
        w[c] -= give;
        total -= give;
    }
    int rc = 0;
    for (size_t r = 0; rc == 0 && r <= t->nrows; r++) {
        for (size_t c = 0; rc == 0 && c < t->ncols; c++) {
            const char *s = r == 0 ? t->headers[c] : t->cells[(r - 1) * t->ncols + c];
            unsigned f = t->flags != NULL ? t->flags[c] : 0;
            if (c > 0) {
                rc = buf_append(out, "  ", 2);
            }
            if (rc == 0) {
                rc = put_cell(out, s, w[c], f, c + 1 == t->ncols);
            }
        }
        if (rc == 0) {
            rc = buf_putc(out, '\n');
        }
    }
    free(w);
    return rc;
}

size_t client_term_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        return ws.ws_col;
    }
    const char *cols = getenv("COLUMNS");
    if (cols != NULL && cols[0] != '\0') {
        char *end = NULL;
        unsigned long n = strtoul(cols, &end, 10);
        if (*end == '\0' && n >= 20 && n <= 10000) {
            return n;
        }
    }
    return 0;
}

char *client_json_text(const json_t *v)
{
    char tmp[64];
    if (v == NULL) {
        return strdup("");
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        return strdup(json_string_value(v));
    case JSON_INTEGER:
        snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return strdup(tmp);
    case JSON_REAL:
        snprintf(tmp, sizeof(tmp), "%.15g", json_real_value(v));
        return strdup(tmp);
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    case JSON_NULL:
        return strdup("");
    default:
        break;
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

double client_json_number(const json_t *v)
{
    if (json_is_number(v)) {
        return json_number_value(v);
    }
    const char *s = json_string_value(v);
    if (s != NULL && s[0] != '\0') {
        char *end = NULL;
        double d = strtod(s, &end);
        if (*end == '\0' && isfinite(d)) {
            return d;
        }
    }
    return 0;
}

void client_fmt_bytes(char *out, size_t outlen, uint64_t bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(out, outlen, "%" PRIu64 " B", bytes);
        return;
    }
    double v = (double)bytes / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(out, outlen, "%.1f %s", v, units[u]);
}

void client_fmt_ms(char *out, size_t outlen, double ms)
{
    if (ms < 1000.0) {
        snprintf(out, outlen, "%.2fms", ms);
    } else if (ms < 60000.0) {
        snprintf(out, outlen, "%.2fs", ms / 1000.0);
    } else {
        snprintf(out, outlen, "%.1fm", ms / 60000.0);
    }
}

int client_write_stdout(const struct buf *b)
{
    if (b->len > 0 && fwrite(b->data, 1, b->len, stdout) != b->len) {
        return EXIT_RUNTIME;
    }
    if ((b->len == 0 || b->data[b->len - 1] != '\n') && fputc('\n', stdout) == EOF) {
        return EXIT_RUNTIME;
    }
    return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
}
