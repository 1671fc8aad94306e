/*
 * kvt_hist.h - latency histograms for the stats (p50/p99 per operation).
 *
 * Log-linear buckets: exact below 16 us, then 8 buckets per power of two,
 * so a reported quantile is within 12.5% of the true value; fixed memory
 * (2.5 KiB per histogram), O(1) to record, no allocation.  Approximate by
 * design: an operator wants "p99 went from 200 us to 3 ms", not the digit.
 */
#ifndef KVT_HIST_H
#define KVT_HIST_H

#include <stdint.h>

#define KVT_HIST_BUCKETS 320

struct kvt_hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t buckets[KVT_HIST_BUCKETS];
};

/* Records one sample of us microseconds. */
void kvt_hist_add(struct kvt_hist *h, uint64_t us);

/*
 * Returns the q-quantile (0 < q <= 1) in microseconds: the upper bound of
 * the bucket holding it.  0 if the histogram is empty.
 */
uint64_t kvt_hist_quantile(const struct kvt_hist *h, double q);

#endif /* KVT_HIST_H */
