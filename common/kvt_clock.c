/* kvt_clock.c - see kvt_clock.h. */
#include <time.h>

#include "kvt_clock.h"

uint64_t kvt_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
