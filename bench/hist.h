/*
 * A log-bucketed latency histogram in the manner of HdrHistogram: 64 linear sub-buckets per power
 * of two, so any recorded value is known to within 1/64 (about 1.6%) whatever its magnitude, in
 * a fixed 30 KiB table with O(1) recording. Values are nanoseconds.
 */
#ifndef DLOTEL_BENCH_HIST_H
#define DLOTEL_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7 /* Values below 2^7 are exact; above, 2^6 sub-buckets per octave. */
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) * (1 << (HIST_SUB_BITS - 1)) + 64)

struct hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);

/*
 * The value at quantile |q| (0 < q <= 1): the midpoint of the bucket holding the ceil(q * count)th
 * smallest value, clamped to [min, max]. 0 for an empty histogram.
 */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
