#ifndef DLOTEL_CORE_TIMEUTIL_H
#define DLOTEL_CORE_TIMEUTIL_H

#include <stdint.h>

/* Wall-clock time in nanoseconds since the Unix epoch. */
uint64_t time_now_unix_nano(void);

/* Monotonic time in nanoseconds, for durations and timeouts. */
uint64_t time_monotonic_nano(void);

#endif
