/*
 * What the pipeline room's files and unit tests share beyond pipeline.h.
 */
#ifndef DLOTEL_PIPELINE_INT_H
#define DLOTEL_PIPELINE_INT_H

#include <stdint.h>

/*
 * The backoff before retry number |attempt| (1 for the first retry): |initial_ns| multiplied by
 * 1.5 per earlier attempt, capped at |max_ns|, then jittered by +-50% (the OpenTelemetry
 * collector's randomization factor) with |rnd|, 64 random bits. The result lies in
 * [interval / 2, interval * 3 / 2).
 */
uint64_t pipeline_backoff_ns(uint64_t initial_ns, uint64_t max_ns, unsigned attempt, uint64_t rnd);

#endif
