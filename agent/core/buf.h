/*
 * A growable byte buffer with a hard upper bound. Every buffer that untrusted input can grow is
 * one of these, so the limit is checked in exactly one place.
 */
#ifndef DLOTEL_CORE_BUF_H
#define DLOTEL_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data; /* NULL until the first append. Owned by the buffer. */
    size_t len;
    size_t cap;
    size_t max; /* len never passes this. */
};

/* Initialises an empty buffer that may grow to |max| bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/*
 * Makes room for |extra| more bytes. Returns 0, DLOTEL_ERR_TOO_LARGE when len + extra would pass
 * b->max, or DLOTEL_ERR_NOMEM. On failure |b| is unchanged.
 */
int buf_reserve(struct buf *b, size_t extra);

/* Appends |n| bytes. Returns as buf_reserve(); on failure |b| is unchanged. */
int buf_append(struct buf *b, const void *p, size_t n);

/* Appends one byte. Returns as buf_reserve(). */
int buf_putc(struct buf *b, uint8_t c);

/* Appends formatted text (no NUL counted in len). Returns as buf_reserve(). */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Ensures data[len] == 0 without counting it in len, so the contents can be read as a C string.
 * Returns as buf_reserve().
 */
int buf_terminate(struct buf *b);

/* Empties the buffer and keeps its memory for reuse. */
void buf_reset(struct buf *b);

/* Frees the memory; the buffer is empty and may be used again. */
void buf_cleanup(struct buf *b);

/*
 * Hands the bytes to the caller, who frees them with free(); the buffer is left empty. Returns
 * NULL for an empty buffer. |*len| receives the length when |len| is not NULL.
 */
uint8_t *buf_take(struct buf *b, size_t *len);

#endif
