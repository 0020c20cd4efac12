#include "hist.h"

#include <string.h>

#define HALF (1u << (HIST_SUB_BITS - 1))

/*
 * Below 2^SUB_BITS the index is the value. Above, a value whose top bit is bit m (m >= SUB_BITS)
 * is shifted right by s = m - SUB_BITS + 1 so that it lands in [HALF, 2 * HALF); octave s then
 * owns indices [s * HALF + HALF, s * HALF + 2 * HALF), which follow each other without gaps.
 */
static unsigned bucket_of(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS)) {
        return (unsigned)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS + 1;
    return shift * HALF + (unsigned)(v >> shift);
}

static uint64_t bucket_low(unsigned i)
{
    if (i < (1u << HIST_SUB_BITS)) {
        return i;
    }
    unsigned shift = i / HALF - 1;
    return (uint64_t)(i - shift * HALF) << shift;
}

static uint64_t bucket_width(unsigned i)
{
    if (i < (1u << HIST_SUB_BITS)) {
        return 1;
    }
    return (uint64_t)1 << (i / HALF - 1);
}

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t v)
{
    h->b[bucket_of(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min) {
        h->min = v;
    }
    if (v > h->max) {
        h->max = v;
    }
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0) {
        return 0;
    }
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->count) {
        rank = h->count;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = bucket_low(i) + bucket_width(i) / 2;
            if (v < h->min) {
                v = h->min;
            }
            if (v > h->max) {
                v = h->max;
            }
            return v;
        }
    }
    return h->max;
}
