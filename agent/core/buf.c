#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    size_t need = b->len + extra;
    /* One spare byte beyond max lets buf_terminate() work on a buffer filled to its limit. */
    if (need + 1 <= b->cap) {
        return 0;
    }
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need + 1) {
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    }
    /* max + 1 would wrap for an unbounded buffer (max == SIZE_MAX). */
    if (b->max < SIZE_MAX && cap > b->max + 1) {
        cap = b->max + 1;
    }
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    int rv = buf_reserve(b, n);
    if (rv != 0) {
        return rv;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_putc(struct buf *b, uint8_t c)
{
    int rv = buf_reserve(b, 1);
    if (rv != 0) {
        return rv;
    }
    b->data[b->len++] = c;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    if ((size_t)n < sizeof(small)) {
        return buf_append(b, small, (size_t)n);
    }
    /* Longer than the stack buffer: format straight into the reserved tail. */
    int rv = buf_reserve(b, (size_t)n);
    if (rv != 0) {
        return rv;
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int buf_terminate(struct buf *b)
{
    if (b->len + 1 > b->cap) {
        /* buf_reserve() always keeps one spare byte, so reserving zero makes room for the NUL. */
        uint8_t *p = realloc(b->data, b->len + 1);
        if (p == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        b->data = p;
        b->cap = b->len + 1;
    }
    b->data[b->len] = 0;
    return 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
}

void buf_cleanup(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

uint8_t *buf_take(struct buf *b, size_t *len)
{
    uint8_t *p = b->len > 0 ? b->data : NULL;
    if (len != NULL) {
        *len = b->len;
    }
    if (p == NULL) {
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
