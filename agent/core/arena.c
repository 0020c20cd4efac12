#include "core/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * Blocks grow geometrically from 16 KiB so that decoding a 240 KB request takes a handful of
 * mallocs. The first block is kept across resets: the common case, one request after another of
 * similar size, then allocates nothing.
 */
#define ARENA_FIRST_BLOCK (16u * 1024u)
#define ARENA_ALIGN       alignof(max_align_t)

struct arena_block {
    struct arena_block *next;
    size_t size; /* Usable bytes after the header. */
    size_t used;
    alignas(max_align_t) unsigned char data[];
};

void arena_init(struct arena *a, size_t max)
{
    a->head = NULL;
    a->total = 0;
    a->max = max;
}

static size_t round_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

void *arena_alloc(struct arena *a, size_t n)
{
    if (n > a->max) {
        return NULL;
    }
    n = round_up(n == 0 ? 1 : n);
    struct arena_block *b = a->head;
    if (b == NULL || b->size - b->used < n) {
        size_t size = b == NULL ? ARENA_FIRST_BLOCK : b->size * 2;
        if (size < n) {
            size = round_up(n);
        }
        if (a->total > a->max || size > a->max - a->total) {
            /* Try the smallest block that fits before giving up. */
            size = n;
            if (a->total > a->max || size > a->max - a->total) {
                return NULL;
            }
        }
        struct arena_block *nb = malloc(sizeof(*nb) + size);
        if (nb == NULL) {
            return NULL;
        }
        nb->next = a->head;
        nb->size = size;
        nb->used = 0;
        a->head = nb;
        a->total += size;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void arena_reset(struct arena *a)
{
    struct arena_block *b = a->head;
    if (b == NULL) {
        return;
    }
    /* Keep the oldest block (the tail of the list): it is the one sized for the usual request. */
    while (b->next != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    b->used = 0;
    a->head = b;
    a->total = b->size;
}

void arena_cleanup(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}
