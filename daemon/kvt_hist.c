/* kvt_hist.c - see kvt_hist.h. */
#include "kvt_hist.h"

static unsigned bucket_of(uint64_t us)
{
	unsigned e, b;

	if (us < 16)
		return (unsigned)us;
	e = 63u - (unsigned)__builtin_clzll(us); /* floor(log2 us) >= 4 */
	b = 16 + (e - 4) * 8 + (unsigned)((us >> (e - 3)) & 7);
	return b < KVT_HIST_BUCKETS ? b : KVT_HIST_BUCKETS - 1;
}

/* Largest value that falls into bucket b. */
static uint64_t bucket_top(unsigned b)
{
	unsigned e, sub;

	if (b < 16)
		return b;
	e = (b - 16) / 8 + 4;
	sub = (b - 16) % 8;
	return ((8ull + sub + 1) << (e - 3)) - 1;
}

void kvt_hist_add(struct kvt_hist *h, uint64_t us)
{
	h->count++;
	h->sum_us += us;
	h->buckets[bucket_of(us)]++;
}

uint64_t kvt_hist_quantile(const struct kvt_hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	rank = (uint64_t)(q * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < KVT_HIST_BUCKETS; b++) {
		seen += h->buckets[b];
		if (seen >= rank)
			return bucket_top(b);
	}
	return bucket_top(KVT_HIST_BUCKETS - 1);
}
