/*
 * kvt_clock.h - the one monotonic clock of daemon and library.
 *
 * Latencies, timeouts, busy-poll windows and idle times are all measured on
 * CLOCK_MONOTONIC in nanoseconds, so that figures from different modules
 * can be compared and subtracted.  (TTLs are wall-clock seconds and are
 * the tier manager's own business: they must survive restarts.)
 */
#ifndef KVT_CLOCK_H
#define KVT_CLOCK_H

#include <stdint.h>

/* Nanoseconds of CLOCK_MONOTONIC.  Any thread. */
uint64_t kvt_clock_ns(void);

#endif /* KVT_CLOCK_H */
