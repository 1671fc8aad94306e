/*
 * kvt_tm.c - the tier manager (see kvt_tm.h for the API): open and close
 * and the calls the daemon makes.  kvt_tm_int.h says how the manager is
 * split into files.
 *
 * Tiers.  L1 holds raw values (a kvt_lru).  L2 is a second kvt_lru whose
 * values are compressed frames (codec and raw length in the entry's
 * kvt_lru_meta).  L3 is the SSD store (kvt_l3).  A block that is put lives
 * in one RAM tier at a time; copies below are kept where that saves work
 * (see No churn).
 *
 * Threads.  The event loop owns L1, L2 and every index below.  A pool of
 * worker threads (kvt_tm_pool.c: --workers, one per online CPU by default)
 * does everything slow: compression, decompression and L3 I/O, in two
 * lanes -- codec work and L3 reads in parallel, L3 writes, deletes and
 * drops one at a time in the order the loop submitted them.  Results come
 * back through a done list and an eventfd, and kvt_tm_dispatch() applies
 * them on the loop thread.  So an L1 hit never waits behind anybody's zstd
 * or disk read, and the loop never waits on a lock a worker holds for
 * long.
 *
 * Blocks in motion.  A block being demoted (L1 victim being compressed, L2
 * victim being written) is in neither RAM tier for a while; it stays in
 * the `transit` set so gets still find it.  A block being promoted (L2
 * frame being decompressed, L3 read) is in the `promos` set so that gets
 * for it wait for the same job instead of starting another.  Both are
 * indexed by key (kvt_tm_order.c), O(1) per get.  A put or del of a key
 * marks its jobs stale: a stale demotion is not inserted into L2, a stale
 * promotion is not inserted into L1 (its waiters get a miss, which is
 * always allowed), and the key's L3 copy is deleted by a job queued in the
 * write lane behind any write of it.
 *
 * Ordering with L3.  The write lane keeps a key's write, its delete and a
 * drop of its namespace in order.  Reads run beside the writes, so the
 * loop keeps the deletes and drops not yet applied in O(1) sets
 * (kvt_tm_order.c) and answers a get of such a key as a miss without
 * reading: L3's copy is logically gone.  Data synced before the index
 * entry that points at it is L3's own rule (kvt_l3.h).
 *
 * Admission.  A one-pass read of a context larger than RAM must not flush
 * the RAM working set of other namespaces, nor pay a compression per
 * block on the way back down.  So a block read from L2 or L3 enters L1
 * only on its second read within a window: the first read is served from
 * a reference in no tier (kvt_lru_ref_make), the L2 frame stays in L2 and
 * the L3 copy in L3, and the key is remembered in `seen` with the count
 * of bytes served that way so far (bypass_bytes).  A later read of it is
 * admitted if fewer than admit_window (L1's capacity) bytes were served
 * that way in between: a block re-read within one L1's worth of other
 * lower-tier reads would have stayed in an L1 that took everything, and
 * one re-read later would not have.  A scan touches every block once and
 * so enters nothing; a restore of a context smaller than L1 read twice is
 * in L1 from its second read on.  kvt_tm_prefetch() and pins always admit.
 * Counted as promotions_admitted and promotions_bypassed.
 *
 * No churn.  A block read from L2 or L3 and later evicted from L1
 * unchanged is not compressed again.  The choice: L2 is inclusive for
 * promoted blocks, L3 always.  Admitting a block from L2 leaves its frame
 * in L2 (the L1 entry gets TM_F_ON_L2); evicting it from L1 then costs
 * nothing while the frame is still in L2.  A block admitted from L3 keeps
 * its SSD copy (TM_F_ON_L3); evicting it from L1 just lets it go, with no
 * compression and no write.  Why keep the frame rather than carry it along
 * with the L1 entry: the frame's memory is counted where it lives, against
 * L2's capacity, so the memory bound stays honest with no accounting
 * outside the tiers; the double residency is bounded by admission (only
 * blocks read twice are in both); and it costs L2 little, because such a
 * frame is the first one L2 gives up when it needs room (kvt_lru_move): it
 * is then written to L3 like any L2 victim and the L1 copy relies on that
 * L3 copy instead (without L3 the frame is dropped, and the L1 copy is
 * compressed when it leaves, as any block).  Every "copy below" is checked
 * when it is relied on (L2 still holds the frame; L3 holds or is writing
 * the key and no delete or drop of it is pending), so a flag that went
 * stale costs a compression, never a lost or wrong block.  Such free
 * demotions count in demotions_reused.
 *
 * Bounds.  transit is held near transit_max bytes by the daemon's
 * backpressure on PUTs (kvt_tm_busy), with victims beyond twice that
 * dropped and counted, and promos by the number of gets in flight.
 *
 * L4.  Optional, below L3 (kvt_tm_l4.c): a get none of L1-L3 serves is
 * fetched from the cluster like an L3 read; blocks leaving this host (or
 * every put) are written there; deletes and drops follow; a peer's drop
 * is applied here.  L4 never holds back a client: its writes wait in a
 * bounded queue and its failures are misses.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvt_mem.h"
#include "kvt_tm_int.h"

/* ---- open and close ----------------------------------------------------- */

static uint64_t tm_realtime_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec;
}

/*
 * The time a TTL counts from.  Expiry is checked in whole seconds
 * (now >= expires), so a put at T.999 with TTL 1 must expire at T+2, not
 * T+1 a millisecond later: the real clock is rounded up here, giving every
 * block at least its TTL (and at most a second more).  A test's fake clock
 * has no fractions and is taken as it is.
 */
static uint64_t ttl_base(const struct kvt_tm *tm)
{
	struct timespec ts;

	if (tm->now_s != tm_realtime_s)
		return tm->now_s();
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec + (ts.tv_nsec > 0);
}

static void set_err(const struct kvt_tm_config *cfg, const char *msg)
{
	if (cfg && cfg->errmsg && cfg->errmsg_len)
		snprintf(cfg->errmsg, cfg->errmsg_len, "%s", msg);
}

/* Workers for the config: as asked, or one per online CPU (1 to max). */
static unsigned pool_size(const struct kvt_tm_config *cfg)
{
	long n;

	if (cfg->workers)
		return cfg->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	return n > KVT_TM_WORKERS_MAX ? KVT_TM_WORKERS_MAX : (unsigned)n;
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
	if (cfg->l3_capacity && !cfg->data_dir) {
		set_err(cfg, "L3 needs a data directory");
		return KVT_EINVAL;
	}
	if (cfg->workers > KVT_TM_WORKERS_MAX) {
		set_err(cfg, "too many workers (at most 16)");
		return KVT_EINVAL;
	}
	if (cfg->l4_url && cfg->l4_threads > KVT_TM_L4_THREADS_MAX) {
		set_err(cfg, "too many L4 threads (at most 16)");
		return KVT_EINVAL;
	}
	tm = calloc(1, sizeof(*tm));
	if (!tm)
		return -ENOMEM;
	tm->efd = -1; /* before any failure: kvt_tm_close() checks it */
	tm->now_s = cfg->now_s ? cfg->now_s : tm_realtime_s;
	tm->l2_capacity = cfg->l2_capacity;
	tm->l3_capacity = cfg->l3_capacity;
	tm->l3_rate = cfg->l3_write_rate;
	tm->l3_tokens = tm->l3_rate;
	tm->l3_tokens_at = tm->now_s();
	tm->transit_max = cfg->transit_max;
	tm->pin_cap = cfg->pin_max ? cfg->pin_max : cfg->l1_capacity / 2;
	tm->admit_window = cfg->l1_capacity;
	if (!tm->transit_max) {
		tm->transit_max = cfg->l1_capacity / 4;
		if (tm->transit_max < (64u << 20))
			tm->transit_max = 64u << 20;
	}
	pthread_mutex_init(&tm->ghost_mu, NULL);
	rc = kvt_tmi_jobset_init(&tm->transit);
	if (!rc)
		rc = kvt_tmi_jobset_init(&tm->promos);
	if (!rc)
		rc = kvt_tmi_hcount_init(&tm->pend_del);
	if (!rc)
		rc = kvt_tmi_hcount_init(&tm->pend_drop);
	if (!rc)
		rc = kvt_lru_open(&tm->l1, cfg->l1_capacity);
	/* Blocks with a copy below are counted apart, to count them once. */
	if (!rc)
		rc = kvt_lru_set_ns_marks(tm->l1, TM_F_ON_L3, 0);
	if (rc)
		goto fail;
	if (cfg->shm_size) {
		if (kvt_mem_arena())
			tm->arena_err = KVT_EBUSY;
		else
			tm->arena_err = kvt_arena_open(&tm->arena,
						       "kvtier-blocks",
						       cfg->shm_size);
		if (tm->arena)
			kvt_mem_set_arena(tm->arena, cfg->shm_threshold);
		if (tm->arena && cfg->shm_prefault)
			tm->arena_err = kvt_arena_prefault(tm->arena);
		else if (tm->arena)
			tm->arena_err = kvt_arena_warm(tm->arena,
						       KVT_TM_ARENA_WARM_AHEAD);
	}
	/* 64Ki keys each: a few MiB that cover far more blocks than fit. */
	rc = kvt_ghost_new(&tm->gone, 65536);
	if (!rc)
		rc = kvt_ghost_new(&tm->ram_ghost, 65536);
	if (!rc)
		rc = kvt_ghost_new(&tm->seen, 65536);
	if (rc)
		goto fail;
	tm->ram_capacity = cfg->l1_capacity + cfg->l2_capacity;
	/* Before L3, so that a bad URL creates no region files. */
	rc = kvt_tmi_l4_open(tm, cfg);
	if (rc)
		goto fail;
	if (cfg->l2_capacity) {
		rc = kvt_lru_open(&tm->l2, cfg->l2_capacity);
		if (!rc)
			rc = kvt_lru_set_ns_marks(tm->l2, TM_F_IN_L1,
						  TM_F_ON_L3);
		if (rc)
			goto fail;
	}
	if (cfg->l3_capacity) {
		struct kvt_l3_config lc = {
			.dir = cfg->data_dir,
			.capacity = cfg->l3_capacity,
			.region_size = cfg->l3_region_size,
			.no_sync = cfg->l3_no_sync,
			.io_backend = cfg->l3_io_backend,
			.faults = cfg->l3_faults,
			.now_s = tm->now_s,
			.errmsg = cfg->errmsg,
			.errmsg_len = cfg->errmsg_len,
			.on_evict = kvt_tmi_l3_evicted,
			.evict_arg = tm,
			/* Evict mode: L3's victims go to L4. */
			.on_reclaim = tm->l4 && cfg->l4_write == KVT_TM_L4_EVICT
					      ? kvt_tmi_l4_reclaimed : NULL,
			.reclaim_arg = tm,
			.key_max = cfg->l3_key_max,
			.log = cfg->log,
			.log_arg = cfg->log_arg,
		};
		rc = kvt_l3_open(&tm->l3, &lc);
		if (rc)
			goto fail;
	}
	if (tm->l2 || tm->l3 || tm->l4 || cfg->transfers) {
		rc = kvt_tmi_pool_start(tm, pool_size(cfg),
					cfg->l2_level ? cfg->l2_level : 1);
		if (rc)
			goto fail;
	}
	*out = tm;
	return 0;
fail:
	kvt_tm_close(tm);
	return rc;
}

void kvt_tm_close(struct kvt_tm *tm)
{
	if (!tm)
		return;
	/* Every job is on a queue of the pool: its stop frees them all. */
	kvt_tmi_pool_stop(tm);
	kvt_tmi_l4_close(tm); /* after its threads and sessions are gone */
	kvt_tmi_jobset_free(&tm->transit);
	kvt_tmi_jobset_free(&tm->promos);
	kvt_tmi_hcount_free(&tm->pend_del);
	kvt_tmi_hcount_free(&tm->pend_drop);
	kvt_tmi_pins_free(tm);
	kvt_lru_close(tm->l1);
	kvt_lru_close(tm->l2);
	kvt_l3_close(tm->l3);
	kvt_ghost_free(tm->gone);
	kvt_ghost_free(tm->ram_ghost);
	kvt_ghost_free(tm->seen);
	pthread_mutex_destroy(&tm->ghost_mu);
	/* Every block is gone with the tiers: the arena can go too. */
	if (tm->arena) {
		kvt_mem_set_arena(NULL, 0);
		kvt_arena_close(tm->arena);
	}
	free(tm);
}

struct kvt_arena *kvt_tm_arena(struct kvt_tm *tm, int *err)
{
	if (err)
		*err = tm ? tm->arena_err : KVT_EINVAL;
	return tm ? tm->arena : NULL;
}

uint64_t kvt_tm_now_s(struct kvt_tm *tm)
{
	return tm ? tm->now_s() : 0;
}

int kvt_tm_event_fd(struct kvt_tm *tm)
{
	return tm && tm->pool_running ? tm->efd : -1;
}

void kvt_tm_dispatch(struct kvt_tm *tm)
{
	if (tm && tm->pool_running) {
		kvt_tmi_apply_done(tm);
		/* The gets since the last dispatch go to L4 together. */
		kvt_tmi_l4_flush(tm);
	}
}

/* ---- blocks ------------------------------------------------------------- */

int kvt_tm_put(struct kvt_tm *tm, const struct kvt_key *k,
	       struct kvt_blob *blob, uint32_t ttl_s)
{
	uint64_t now, expires_s = 0;
	int rc;

	if (!tm || !k || !blob) {
		/* Ownership passes whatever the result, even this one. */
		if (blob) {
			kvt_block_free(blob->mem);
			blob->mem = NULL;
			blob->data = NULL;
		}
		return KVT_EINVAL;
	}
	tm->puts++;
	if (kvt_lru_cost(blob->mem_size, k->ns_len, k->key_len) >
	    kvt_lru_capacity(tm->l1)) {
		/* Refuse before touching the old value in any tier. */
		tm->rejected_too_big++;
		kvt_block_free(blob->mem);
		blob->mem = NULL;
		blob->data = NULL;
		return KVT_ENOSPACE;
	}
	now = tm->now_s();
	if (ttl_s)
		expires_s = ttl_base(tm) + ttl_s;
	/* The new value replaces every older copy, wherever it is. */
	kvt_tmi_forget_below(tm, k);
	struct kvt_lru_meta m = { .raw_len = blob->len, .ctime_s = now };
	struct kvt_ref *ref = NULL;
	rc = kvt_lru_put_meta(tm->l1, k, blob, expires_s, &m,
			      tm->l4 ? &ref : NULL, kvt_tmi_l1_victim, tm);
	if (rc == KVT_ENOSPACE)
		tm->rejected_too_big++;
	else if (rc == 0)
		kvt_tmi_reapply_pin(tm, k);
	if (rc == 0 && tm->l4) {
		kvt_tmi_l4_watch(tm, k);
		kvt_tmi_l4_put(tm, k, ref);
		kvt_ref_release(ref);
	}
	return rc;
}

/* L3's state of k (kvt_l3_state), with queued deletes and drops applied. */
static int l3_state(struct kvt_tm *tm, const struct kvt_key *k)
{
	if (!tm->l3 || kvt_tmi_l3_pending(tm, k))
		return 0;
	return kvt_l3_state(tm->l3, k);
}

int kvt_tm_get(struct kvt_tm *tm, const struct kvt_key *k, kvt_tm_get_cb cb,
	       void *arg)
{
	struct kvt_ref *ref = NULL;
	struct job *j;
	uint64_t now;

	if (!cb)
		return KVT_EINVAL;
	if (!tm || !k) {
		cb(arg, KVT_EINVAL, NULL);
		return 0;
	}
	tm->gets++;
	now = tm->now_s();
	/* To tell an expired block from an absent one after the lookups. */
	uint64_t exp0 = kvt_lru_expired_count(tm->l1);
	uint64_t exp2 = tm->l2 ? kvt_lru_expired_count(tm->l2) : 0;
	if (kvt_lru_get(tm->l1, k, now, &ref) == 0) {
		struct kvt_lru_meta m;

		kvt_lru_ref_meta(ref, &m);
		if (m.flags & TM_F_PREFETCHED) {
			/* The prefetch paid off: this read came from RAM. */
			tm->prefetch_hits++;
			kvt_lru_ref_set_flags(tm->l1, ref, 0,
					      TM_F_PREFETCHED);
		}
		cb(arg, 0, ref);
		return 0;
	}
	/* A block on its way down is still readable. */
	j = kvt_tmi_jobset_find(&tm->transit, k);
	if (j && !tm_expired(tm, j->expires) && j->src_codec == KVT_CODEC_RAW) {
		cb(arg, 0, kvt_lru_ref_acquire(j->src));
		return 0;
	}
	if (!j || tm_expired(tm, j->expires)) {
		/* Someone already fetches it: wait for the same job. */
		struct job *p = kvt_tmi_jobset_find(&tm->promos, k);
		if (p) {
			if (kvt_tmi_add_waiter(p, cb, arg)) {
				cb(arg, -ENOMEM, NULL);
				return 0;
			}
			return 1;
		}
		j = NULL;
	}
	/* An L2 frame on its way to L3: decompress that frame. */
	if (j)
		return kvt_tmi_promo_frame(tm, k, kvt_lru_ref_acquire(j->src),
					   TM_F_ON_L3, cb, arg);
	if (tm->l2 && kvt_lru_get(tm->l2, k, now, &ref) == 0)
		return kvt_tmi_promo_frame(tm, k, ref, 0, cb, arg);

	/* A RAM miss.  Would RAM twice as big have kept it? */
	uint64_t left_at;
	if (kvt_ghost_get(tm->ram_ghost, kvt_key_hash(k), &left_at) &&
	    tm->ram_evicted - left_at < tm->ram_capacity)
		tm->ghost_hits_2x++;
	int state = l3_state(tm, k);
	if (state == 1) {
		struct job *p = kvt_tmi_promo_start(tm, JOB_FROM_L3, k, cb,
						    arg);

		if (!p) {
			cb(arg, -ENOMEM, NULL);
			return 0;
		}
		p->flags = TM_F_ON_L3;
		/* L3 keeps no history beyond its own hit count. */
		p->hits = 1;
		p->atime_s = tm->now_s();
		kvt_tmi_submit(tm, p);
		return 1;
	}
	bool expired = state == 2 || kvt_lru_expired_count(tm->l1) != exp0 ||
		       (tm->l2 && kvt_lru_expired_count(tm->l2) != exp2);
	/* Not here: L4 may have it (an expired block would be there too). */
	if (!expired && tm->l4 && kvt_tmi_l4_get(tm, k, cb, arg))
		return 1;
	tm->misses++;
	if (expired)
		tm->misses_expired++;
	else if (kvt_tmi_was_gone(tm, k))
		tm->misses_evicted++;
	else
		tm->misses_never_seen++;
	cb(arg, KVT_ENOTFOUND, NULL);
	return 0;
}

int kvt_tm_prefetch(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct kvt_ref *ref = NULL;
	struct job *p;
	uint64_t now;

	if (!tm || !k)
		return KVT_EINVAL;
	now = tm->now_s();
	/* Already in RAM, or already on its way: nothing to start. */
	if (kvt_lru_exists(tm->l1, k, now) ||
	    kvt_tmi_jobset_find(&tm->transit, k))
		return 0;
	p = kvt_tmi_jobset_find(&tm->promos, k);
	if (p) {
		/* A get's read under way: make it land in L1. */
		p->force = true;
		return 0;
	}
	if (tm->l2 && kvt_lru_peek(tm->l2, k, now, &ref) == 0) {
		/* Not a client's read: peek, so no hit is counted. */
		kvt_tmi_promo_frame(tm, k, ref, 0, kvt_tmi_prefetch_done,
				    NULL);
	} else if (l3_state(tm, k) == 1) {
		p = kvt_tmi_promo_start(tm, JOB_FROM_L3, k,
					kvt_tmi_prefetch_done, NULL);
		if (!p)
			return -ENOMEM;
		p->flags = TM_F_ON_L3;
		p->atime_s = now;
		kvt_tmi_submit(tm, p);
	} else if (!tm->l4 ||
		   !kvt_tmi_l4_get(tm, k, kvt_tmi_prefetch_done, NULL)) {
		return 0;
	}
	p = kvt_tmi_jobset_find(&tm->promos, k);
	if (p)
		p->flags |= TM_F_PREFETCHED;
	tm->prefetched++;
	return 1;
}

int kvt_tm_del(struct kvt_tm *tm, const struct kvt_key *k)
{
	bool found;

	if (!tm || !k)
		return KVT_EINVAL;
	tm->dels++;
	found = kvt_lru_del(tm->l1, k, tm->now_s()) == 0;
	found |= kvt_tmi_forget_below(tm, k);
	kvt_tmi_l4_del(tm, k); /* whether this host had it or not */
	return found ? 0 : KVT_ENOTFOUND;
}

int kvt_tm_match(struct kvt_tm *tm, const struct kvt_key *keys, size_t n,
		 kvt_tm_count_cb cb, void *arg)
{
	uint8_t *local;
	size_t count = 0;

	if (!cb)
		return KVT_EINVAL;
	if (!tm || (n && !keys)) {
		cb(arg, KVT_EINVAL, 0);
		return 0;
	}
	while (count < n && kvt_tm_exists(tm, &keys[count]) > 0)
		count++;
	if (count == n || !tm->l4) {
		cb(arg, 0, count);
		return 0;
	}
	/*
	 * The rest is probed in L4; a key counts if it is here or there, so
	 * which of them are here is noted now (the keys are the caller's).
	 */
	local = malloc(n);
	if (!local) {
		cb(arg, 0, count);
		return 0;
	}
	local[count] = 0;
	for (size_t i = count + 1; i < n; i++)
		local[i] = kvt_tm_exists(tm, &keys[i]) > 0;
	int rc = kvt_tmi_l4_match(tm, keys, n, count, local, cb, arg);
	free(local);
	return rc;
}

int kvt_tm_l4_wait_ready(struct kvt_tm *tm, unsigned timeout_ms)
{
	if (!tm || !tm->l4)
		return KVT_EINVAL;
	for (unsigned waited = 0;; waited += 10) {
		if (atomic_load(&tm->l4->ready))
			return atomic_load(&tm->l4->ready_rc);
		if (waited >= timeout_ms)
			return -EINPROGRESS;
		struct timespec nap = { 0, 10 * 1000000 };
		nanosleep(&nap, NULL);
	}
}

int kvt_tm_exists(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t now;
	struct job *j;

	if (!tm || !k)
		return 0;
	now = tm->now_s();
	if (kvt_lru_exists(tm->l1, k, now))
		return 1;
	j = kvt_tmi_jobset_find(&tm->transit, k);
	if (j && !tm_expired(tm, j->expires))
		return 1;
	if (kvt_tmi_jobset_find(&tm->promos, k))
		return 1;
	if (tm->l2 && kvt_lru_exists(tm->l2, k, now))
		return 1;
	return l3_state(tm, k) == 1;
}

/* Counts the L2 frames of one namespace whose block is in L1 too. */
struct ns_in_l1 {
	const uint8_t *ns;
	size_t ns_len;
	uint64_t n;
};

static void count_in_l1(void *arg, const uint8_t *ns, size_t ns_len,
			const struct kvt_lru_ns_tot *all,
			const struct kvt_lru_ns_tot *mark)
{
	struct ns_in_l1 *a = arg;

	(void)all;
	if (ns_len == a->ns_len && (!ns_len || memcmp(ns, a->ns, ns_len) == 0))
		a->n = mark[0].entries; /* L2's mark 0 is TM_F_IN_L1 */
}

static bool job_in_ns(const struct job *j, const uint8_t *ns, size_t ns_len)
{
	return j->k.ns_len == ns_len &&
	       (ns_len == 0 || memcmp(j->k.ns, ns, ns_len) == 0);
}

int kvt_tm_drop_ns(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len,
		   kvt_tm_count_cb cb, void *arg)
{
	return kvt_tmi_drop_ns(tm, ns, ns_len, cb, arg, true);
}

int kvt_tmi_drop_ns(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len,
		    kvt_tm_count_cb cb, void *arg, bool to_l4)
{
	uint64_t n;
	struct job *j;

	if (!cb)
		return KVT_EINVAL;
	if (!tm || (ns_len && !ns)) {
		cb(arg, KVT_EINVAL, 0);
		return 0;
	}
	/* Queued behind every L4 write of ns already submitted. */
	if (to_l4)
		kvt_tmi_l4_drop(tm, ns, ns_len);
	n = kvt_lru_drop_ns(tm->l1, ns, ns_len);
	if (tm->l2) {
		/* A frame whose block is in L1 too is not another block. */
		struct ns_in_l1 dup = { ns, ns_len, 0 };

		kvt_lru_ns_foreach(tm->l2, count_in_l1, &dup);
		n += kvt_lru_drop_ns(tm->l2, ns, ns_len) - dup.n;
	}
	/* Blocks of ns on their way anywhere must not land. */
	for (j = tm->transit.head; j; j = j->lnext)
		if (!j->stale && job_in_ns(j, ns, ns_len)) {
			j->stale = true;
			/* An L3 write is counted by the L3 drop behind it. */
			if (j->kind == JOB_TO_L2)
				n++;
		}
	for (j = tm->promos.head; j; j = j->lnext)
		if (job_in_ns(j, ns, ns_len))
			j->stale = true;
	if (!tm->l3) {
		cb(arg, 0, n);
		return 0;
	}
	/* Queued behind every write of ns already submitted, so it sees them. */
	struct kvt_key k = { ns, ns_len, NULL, 0 };
	j = kvt_tmi_job_new(JOB_L3_DROP, &k);
	if (!j) {
		cb(arg, -ENOMEM, n);
		return 0;
	}
	j->count_cb = cb;
	j->count_arg = arg;
	j->count = n;
	/* Until it is applied, ns is gone for L3 reads too. */
	kvt_tmi_pending_add(tm, j);
	kvt_tmi_submit(tm, j);
	return 1;
}

int kvt_tm_busy(struct kvt_tm *tm)
{
	return tm && tm->transit_bytes > tm->transit_max;
}

void kvt_tm_set_l3_write_rate(struct kvt_tm *tm, uint64_t rate)
{
	if (!tm)
		return;
	tm->l3_rate = rate;
	tm->l3_tokens = rate;
	tm->l3_tokens_at = tm->now_s();
}

int kvt_tm_spill(struct kvt_tm *tm, unsigned timeout_ms,
		 struct kvt_tm_spill_stats *st)
{
	struct kvt_tm_spill_stats s = { 0 };
	struct timespec t0, t;
	struct kvt_ref *v;
	uint64_t dem0, ev0;

	if (st)
		memset(st, 0, sizeof(*st));
	if (!tm || !tm->l3)
		return KVT_EINVAL;
	/*
	 * Every block goes straight to L3 (forced past the budgets), so a
	 * demotion counted meanwhile is a block now on L3 and an eviction
	 * one that L3 refused.
	 */
	dem0 = tm->demotions;
	ev0 = tm->evictions;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		while (kvt_lru_evict_one(tm->l1, &v) == 0) {
			kvt_tmi_demote(tm, v, TM_DEMOTE_TO_L3 |
					      TM_DEMOTE_FORCE);
			s.queued++;
		}
		while (tm->l2 && kvt_lru_evict_one(tm->l2, &v) == 0) {
			kvt_tmi_demote(tm, v, TM_DEMOTE_FROM_L2 |
					      TM_DEMOTE_FORCE);
			s.queued++;
		}
		/* L4's writes are not what a restart needs: not waited for. */
		if (tm->jobs_pending == kvt_tmi_l4_jobs(tm))
			break;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 +
			    (t.tv_nsec - t0.tv_nsec) / 1000000 >
		    (long)timeout_ms)
			break;
		struct timespec nap = { 0, 1000000 };
		nanosleep(&nap, NULL);
		kvt_tm_dispatch(tm);
	}
	s.written = tm->demotions - dem0;
	s.lost = tm->evictions - ev0;
	s.unfinished = tm->jobs_pending;
	if (st)
		*st = s;
	return s.written > INT_MAX ? INT_MAX : (int)s.written;
}

int kvt_tm_check(struct kvt_tm *tm, FILE *report)
{
	if (!tm || !tm->l3)
		return KVT_EINVAL;
	return kvt_l3_check(tm->l3, report);
}

int kvt_tm_check_store(const char *data_dir, FILE *report, char *errmsg,
		       size_t errmsg_len)
{
	struct kvt_l3_config lc = {
		.dir = data_dir,
		.read_only = 1,
		.errmsg = errmsg,
		.errmsg_len = errmsg_len,
	};
	struct kvt_l3 *l3;
	int rc;

	if (!data_dir)
		return KVT_EINVAL;
	if ((rc = kvt_l3_open(&l3, &lc)))
		return rc;
	rc = kvt_l3_check(l3, report);
	kvt_l3_close(l3);
	return rc;
}

/* ---- pins (the table is kvt_tm_pin.c) ------------------------------------ */

int kvt_tm_pin(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct pin *p;
	struct kvt_ref *ref;
	uint64_t now, cost = 0;
	int rc = 0;

	if (!tm || !k)
		return KVT_EINVAL;
	now = tm->now_s();
	p = kvt_tmi_pin_find(tm, k);
	if (p) {
		p->count++;
		return kvt_lru_exists(tm->l1, k, now) ? 0 : 1;
	}
	if (kvt_lru_peek(tm->l1, k, now, &ref) == 0) {
		cost = kvt_lru_ref_cost(ref);
		kvt_ref_release(ref);
		if (kvt_lru_pinned_bytes(tm->l1) + cost > tm->pin_cap) {
			tm->pins_rejected++;
			return KVT_ETOOBIG;
		}
	} else if (kvt_tm_exists(tm, k)) {
		/* Below L1: bring it up; it is pinned when it lands. */
		kvt_tm_prefetch(tm, k);
		rc = 1;
	} else {
		return KVT_ENOTFOUND;
	}
	if (kvt_tmi_pin_add(tm, k))
		return -ENOMEM;
	if (rc == 0)
		kvt_lru_set_pinned(tm->l1, k, true, now);
	return rc;
}

int kvt_tm_unpin(struct kvt_tm *tm, const struct kvt_key *k)
{
	int left;

	if (!tm || !k)
		return KVT_EINVAL;
	left = kvt_tmi_pin_drop(tm, k);
	if (left < 0)
		return KVT_ENOTFOUND;
	if (left == 0)
		kvt_lru_set_pinned(tm->l1, k, false, tm->now_s());
	return 0;
}
