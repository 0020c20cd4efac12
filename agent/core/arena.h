/*
 * A bump allocator for decoding one request: many small allocations, one reset frees them all.
 * The total is capped so a hostile request cannot make a decode use unbounded memory.
 */
#ifndef DLOTEL_CORE_ARENA_H
#define DLOTEL_CORE_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
    struct arena_block *head; /* Newest block first. */
    size_t total;             /* Bytes handed out plus block overhead, checked against max. */
    size_t max;
};

/* Initialises an empty arena that may hold up to |max| bytes. Allocates nothing. */
void arena_init(struct arena *a, size_t max);

/*
 * Returns |n| bytes aligned for any type, zeroed, owned by the arena. NULL when the limit would
 * be passed or memory runs out (the arena stays usable).
 */
void *arena_alloc(struct arena *a, size_t n);

/* Frees everything allocated since init, keeping the first block for reuse. */
void arena_reset(struct arena *a);

/* Frees everything. The arena may be used again after arena_init(). */
void arena_cleanup(struct arena *a);

#endif
