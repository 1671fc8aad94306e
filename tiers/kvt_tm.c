/*
 * kvt_tm.c - the tier manager (see kvt_tm.h for the API).
 *
 * This version manages L1 only.  l2_capacity and l3_capacity are accepted,
 * validated and reported as capacity_bytes in the stats so that the daemon,
 * its config and `kvtier stats` can be written against the final shape now;
 * no L2 or L3 exists yet, so their entries, bytes and hits stay 0 and an L1
 * victim is simply released and counted as an eviction.  Issue #3 adds L2
 * (zstd, compressed off the event loop) and L3 (SSD) beneath this API:
 * victims will then be demoted instead of dropped, gets may complete later
 * from a dispatch call, and promotions/demotions will move.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvt_l1.h"
#include "kvt_tm.h"

struct kvt_tm {
	struct kvt_l1 *l1;
	uint64_t (*now_s)(void);
	uint64_t l2_capacity; /* not used until L2 exists */
	uint64_t l3_capacity; /* not used until L3 exists */
	/*
	 * Request counters.  gets, puts and dels count calls, whatever their
	 * outcome; misses counts gets that found nothing.  Only the event loop
	 * thread touches them, so they need no atomics.
	 */
	uint64_t gets;
	uint64_t puts;
	uint64_t dels;
	uint64_t misses;
	uint64_t evictions;
	uint64_t rejected_too_big;
};

/*
 * Default clock.  Monotonic, so that TTLs do not jump with the wall clock.
 * When L3 persists expiries across restarts it will need a clock that
 * survives a reboot (CLOCK_REALTIME) for what it stores.
 */
static uint64_t tm_monotonic_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

int kvt_tm_open(struct kvt_tm **out, const struct kvt_tm_config *cfg)
{
	struct kvt_tm *tm;
	int rc;

	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (!cfg || cfg->l1_capacity == 0)
		return KVT_EINVAL;
	/* The header promises data_dir may be NULL only while L3 is off. */
	if (cfg->l3_capacity && !cfg->data_dir)
		return KVT_EINVAL;
	tm = calloc(1, sizeof(*tm));
	if (!tm)
		return -ENOMEM;
	rc = kvt_l1_open(&tm->l1, cfg->l1_capacity);
	if (rc) {
		free(tm);
		return rc;
	}
	tm->now_s = cfg->now_s ? cfg->now_s : tm_monotonic_s;
	tm->l2_capacity = cfg->l2_capacity;
	tm->l3_capacity = cfg->l3_capacity;
	*out = tm;
	return 0;
}

void kvt_tm_close(struct kvt_tm *tm)
{
	if (!tm)
		return;
	kvt_l1_close(tm->l1);
	free(tm);
}

/* What an L1 victim callback needs: the manager and the time of the put. */
struct tm_victim_ctx {
	struct kvt_tm *tm;
	uint64_t now_s;
};

/*
 * An L1 victim.  Issue #3 will demote live victims to L2 here.  An expired
 * victim is dead anyway: it is released without being counted as an
 * eviction, since nothing a client could still read was lost.
 */
static void tm_l1_victim(void *arg, struct kvt_ref *victim)
{
	struct tm_victim_ctx *ctx = arg;
	uint64_t exp = kvt_l1_ref_expires(victim);

	if (exp == 0 || ctx->now_s < exp)
		ctx->tm->evictions++;
	kvt_ref_release(victim);
}

int kvt_tm_put(struct kvt_tm *tm, const struct kvt_key *k,
	       struct kvt_blob *blob, uint32_t ttl_s)
{
	struct tm_victim_ctx ctx;
	uint64_t expires_s = 0;
	int rc;

	if (!tm) {
		/* Ownership passes whatever the result, even this one. */
		if (blob) {
			free(blob->mem);
			blob->mem = NULL;
			blob->data = NULL;
		}
		return KVT_EINVAL;
	}
	tm->puts++;
	ctx.tm = tm;
	ctx.now_s = tm->now_s();
	if (ttl_s)
		expires_s = ctx.now_s + ttl_s;
	/*
	 * With only L1, "can never fit" means larger than L1.  Once L2/L3
	 * exist, a value too big for L1 but not for a lower tier will go
	 * there instead of being refused.
	 */
	rc = kvt_l1_put(tm->l1, k, blob, expires_s, tm_l1_victim, &ctx);
	if (rc == KVT_ENOSPACE)
		tm->rejected_too_big++;
	return rc;
}

int kvt_tm_get(struct kvt_tm *tm, const struct kvt_key *k, kvt_tm_get_cb cb,
	       void *arg)
{
	struct kvt_ref *ref = NULL;
	int rc;

	if (!cb)
		return KVT_EINVAL;
	if (!tm) {
		cb(arg, KVT_EINVAL, NULL);
		return 0;
	}
	tm->gets++;
	rc = kvt_l1_get(tm->l1, k, tm->now_s(), &ref);
	if (rc == KVT_ENOTFOUND)
		tm->misses++;
	/* L1 is the only tier, so every get completes before we return. */
	cb(arg, rc, rc ? NULL : ref);
	return 0;
}

int kvt_tm_del(struct kvt_tm *tm, const struct kvt_key *k)
{
	if (!tm)
		return KVT_EINVAL;
	tm->dels++;
	return kvt_l1_del(tm->l1, k, tm->now_s());
}

int kvt_tm_exists(struct kvt_tm *tm, const struct kvt_key *k)
{
	if (!tm)
		return 0;
	return kvt_l1_exists(tm->l1, k, tm->now_s());
}

void kvt_tm_stats(struct kvt_tm *tm, struct kvt_tm_stats *st)
{
	struct kvt_l1_stats l1;

	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!tm)
		return;
	kvt_l1_stats(tm->l1, &l1);
	st->l1.entries = l1.entries;
	st->l1.bytes = l1.bytes;
	st->l1.raw_bytes = l1.raw_bytes;
	st->l1.capacity_bytes = l1.capacity;
	st->l1.hits = l1.hits;
	/* Configured but not yet built (issue #3): capacity only. */
	st->l2.capacity_bytes = tm->l2_capacity;
	st->l3.capacity_bytes = tm->l3_capacity;
	st->gets = tm->gets;
	st->puts = tm->puts;
	st->dels = tm->dels;
	st->misses = tm->misses;
	st->promotions = 0;
	st->demotions = 0;
	st->evictions = tm->evictions;
	st->rejected_too_big = tm->rejected_too_big;
}
