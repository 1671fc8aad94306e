/*
 * kvt_tm_move.c - blocks in motion, on the loop thread (kvt_tm_int.h).
 *
 * Demotion: an L1 victim is compressed for L2, an L2 victim written to L3
 * (within the L3 write budget), anything else dropped and remembered as
 * gone -- unless an identical copy below makes the move free (no churn,
 * kvt_tm.c).  Promotion: an L2 frame is decompressed, an L3 block read,
 * and the result enters L1 if the admission rule lets it, else it is
 * served once from a reference of its own; gets for a block already on its
 * way up wait for the same job.  The jobs run on the pool (kvt_tm_pool.c);
 * kvt_tmi_apply_done() applies what they produced.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_tm_int.h"

/* ---- demotion ----------------------------------------------------------- */

/*
 * L3 admission: a token bucket of l3_rate bytes per second with one second
 * of burst.  A block larger than the rate is admitted on a full bucket.
 */
static bool l3_admit(struct kvt_tm *tm, uint64_t bytes)
{
	uint64_t now;

	if (!tm->l3_rate)
		return true;
	now = tm->now_s();
	if (now != tm->l3_tokens_at) {
		uint64_t add = (now - tm->l3_tokens_at) * tm->l3_rate;
		tm->l3_tokens = tm->l3_tokens + add > tm->l3_rate
					? tm->l3_rate
					: tm->l3_tokens + add;
		tm->l3_tokens_at = now;
	}
	if (tm->l3_tokens < bytes && tm->l3_tokens < tm->l3_rate) {
		tm->l3_admission_rejected++;
		return false;
	}
	tm->l3_tokens = tm->l3_tokens > bytes ? tm->l3_tokens - bytes : 0;
	return true;
}

/*
 * k left the cache altogether (any thread).  The ghosts remember keys by
 * kvt_key_hash(); a collision only makes a rare miss look evicted.
 */
static void remember_gone(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t h = kvt_key_hash(k);

	pthread_mutex_lock(&tm->ghost_mu);
	kvt_ghost_put(tm->gone, h, 0);
	pthread_mutex_unlock(&tm->ghost_mu);
}

bool kvt_tmi_was_gone(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t h = kvt_key_hash(k);
	bool seen;

	pthread_mutex_lock(&tm->ghost_mu);
	seen = kvt_ghost_get(tm->gone, h, NULL);
	pthread_mutex_unlock(&tm->ghost_mu);
	return seen;
}

/* L3 reclaimed a region: its blocks are gone (a worker thread). */
void kvt_tmi_l3_evicted(void *arg, const struct kvt_key *k)
{
	remember_gone(arg, k);
}

/* Block v (whose reference passes here) leaves the cache: an eviction. */
static void drop_block(struct kvt_tm *tm, struct kvt_ref *v)
{
	struct kvt_key k;

	kvt_lru_ref_key(v, &k);
	remember_gone(tm, &k);
	tm->evictions++;
	kvt_ref_release(v);
}

/* k leaves RAM: remember where RAM's evictions stood (ghost_hits_2x). */
static void left_ram(struct kvt_tm *tm, const struct kvt_key *k,
		     uint64_t cost)
{
	tm->ram_evicted += cost;
	kvt_ghost_put(tm->ram_ghost, kvt_key_hash(k), tm->ram_evicted);
}

/*
 * True if L3 holds (or is being written) an identical copy of k's block
 * that nothing queued is about to remove.  Any put or delete of k queues
 * the removal of its L3 copy, so a copy with no removal pending is the
 * current value.
 */
static bool l3_copy_current(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct job *w;

	if (!tm->l3 || kvt_tmi_l3_pending(tm, k))
		return false;
	if (kvt_l3_contains(tm->l3, k))
		return true;
	w = kvt_tmi_jobset_find(&tm->transit, k);
	return w && w->kind == JOB_TO_L3;
}

/* k's L1 entry if it shares its frame with L2 (TM_F_ON_L2), or NULL. */
static struct kvt_ref *l1_shadow(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct kvt_lru_meta m;
	struct kvt_ref *r;

	if (kvt_lru_peek(tm->l1, k, tm->now_s(), &r) != 0)
		return NULL;
	kvt_lru_ref_meta(r, &m);
	if (m.flags & TM_F_ON_L2)
		return r;
	kvt_ref_release(r);
	return NULL;
}

/*
 * A demotion that costs nothing: the tier below has this very block.
 * Counted as a demotion, and apart, so that churn shows.
 */
static void reused(struct kvt_tm *tm, struct kvt_ref *v)
{
	tm->demotions++;
	tm->demotions_reused++;
	kvt_ref_release(v);
}

/*
 * v cannot go down.  If L1 still holds the block (shadow: v was its
 * frame), only the frame is lost; else the block leaves the cache.
 */
static void lose(struct kvt_tm *tm, struct kvt_ref *v, struct kvt_ref *shadow)
{
	if (!shadow) {
		/* It leaves this host: evict mode keeps it in L4. */
		kvt_tmi_l4_evicted(tm, v);
		drop_block(tm, v);
		return;
	}
	kvt_lru_ref_set_flags(tm->l1, shadow, 0, TM_F_ON_L2);
	kvt_ref_release(shadow);
	kvt_ref_release(v);
}

void kvt_tmi_demote(struct kvt_tm *tm, struct kvt_ref *v, unsigned how)
{
	bool from_l2 = how & TM_DEMOTE_FROM_L2;
	bool to_l3 = from_l2 || (how & TM_DEMOTE_TO_L3);
	bool force = how & TM_DEMOTE_FORCE;
	struct kvt_ref *shadow = NULL;
	struct kvt_lru_meta m;
	struct kvt_key k;
	uint64_t exp = kvt_lru_ref_expires(v);
	uint64_t cost = kvt_ref_len(v);
	enum job_kind kind;
	struct job *j;

	if (tm_expired(tm, exp)) {
		kvt_ref_release(v); /* dead anyway: not an eviction */
		return;
	}
	kvt_lru_ref_meta(v, &m);
	kvt_lru_ref_key(v, &k);
	/* An L2 frame whose block is also in L1 (promoted inclusively). */
	if (from_l2 && (m.flags & TM_F_IN_L1))
		shadow = l1_shadow(tm, &k);
	/* No churn: an identical copy below makes the move free. */
	struct kvt_ref *frame;
	if (!from_l2 && (m.flags & TM_F_ON_L2) && tm->l2 &&
	    kvt_lru_peek(tm->l2, &k, tm->now_s(), &frame) == 0) {
		/*
		 * The frame is the block's only RAM copy again, just in from
		 * L1 as a compressed victim would be.
		 */
		kvt_lru_ref_set_flags(tm->l2, frame, 0, TM_F_IN_L1);
		kvt_lru_move(tm->l2, frame, true);
		kvt_ref_release(frame);
		reused(tm, v);
		return;
	}
	if ((m.flags & TM_F_ON_L3) && l3_copy_current(tm, &k)) {
		if (shadow) {
			/* L1's copy now relies on L3's, as its frame did. */
			kvt_lru_ref_set_flags(tm->l1, shadow, TM_F_ON_L3,
					      TM_F_ON_L2);
			kvt_ref_release(shadow);
		} else {
			left_ram(tm, &k, cost);
		}
		reused(tm, v);
		return;
	}
	if ((to_l3 || !tm->l2) && !shadow)
		left_ram(tm, &k, cost);
	if (!to_l3 && tm->l2) {
		kind = JOB_TO_L2;
	} else if (tm->l3 && (force || l3_admit(tm, cost))) {
		kind = JOB_TO_L3;
	} else {
		lose(tm, v, shadow);
		return;
	}
	/*
	 * What the move holds while it lasts: the block as its tier counted
	 * it (value, key, namespace, entry) and the job with its own copy of
	 * the key.  Not just the value: with small values and long keys
	 * (100-byte values under 3.6 KiB keys) the keys are most of it, and a
	 * bound in value bytes let the transit set hold forty times its
	 * bound.
	 */
	uint64_t held = kvt_lru_ref_cost(v) + sizeof(*j) + k.ns_len + k.key_len;

	if (!force && tm->transit_bytes + held > 2 * tm->transit_max) {
		tm->demotions_dropped++;
		lose(tm, v, shadow);
		return;
	}
	j = kvt_tmi_job_new(kind, &k);
	if (!j) {
		lose(tm, v, shadow);
		return;
	}
	j->src = v;
	j->src_codec = m.codec;
	j->raw_len = m.raw_len;
	j->dtype = kvt_ref_dtype(v);
	j->expires = exp;
	/* What was below is not current (else the move was free above). */
	j->flags = m.flags & (uint8_t)~TM_F_COPIES;
	j->hits = m.hits;
	j->ctime_s = m.ctime_s;
	j->atime_s = m.atime_s;
	j->cost = held;
	kvt_tmi_jobset_add(&tm->transit, j);
	tm->transit_bytes += held;
	kvt_tmi_submit(tm, j);
	if (shadow) {
		/* The write on its way is now L1's copy below. */
		kvt_lru_ref_set_flags(tm->l1, shadow, TM_F_ON_L3, TM_F_ON_L2);
		kvt_ref_release(shadow);
	}
}

void kvt_tmi_l1_victim(void *arg, struct kvt_ref *v)
{
	kvt_tmi_demote(arg, v, 0);
}

static void l2_victim(void *arg, struct kvt_ref *v)
{
	kvt_tmi_demote(arg, v, TM_DEMOTE_FROM_L2);
}

/*
 * Marks every job for k stale.  Returns true if one of them is writing k to
 * L3, so the caller knows a delete must follow it.
 */
static bool mark_stale(struct kvt_tm *tm, const struct kvt_key *k,
		       bool *found)
{
	bool writing = false;
	struct job *j;

	while ((j = kvt_tmi_jobset_find(&tm->transit, k))) {
		if (!tm_expired(tm, j->expires))
			*found = true;
		j->stale = true;
		writing |= j->kind == JOB_TO_L3;
	}
	while ((j = kvt_tmi_jobset_find(&tm->promos, k))) {
		*found = true;
		j->stale = true;
	}
	return writing;
}

bool kvt_tmi_forget_below(struct kvt_tm *tm, const struct kvt_key *k)
{
	bool found = false;
	bool writing = mark_stale(tm, k, &found);

	if (tm->l2 && kvt_lru_del(tm->l2, k, tm->now_s()) == 0)
		found = true;
	if (!tm->l3)
		return found;
	bool on = !kvt_tmi_l3_pending(tm, k) && kvt_l3_contains(tm->l3, k);
	if (writing || on) {
		/* Behind any write of k already queued: the write lane's order. */
		struct job *j = kvt_tmi_job_new(JOB_L3_DEL, k);

		if (j) {
			kvt_tmi_pending_add(tm, j);
			kvt_tmi_submit(tm, j);
		} else {
			/*
			 * No memory for the delete: keep k's L3 copy
			 * unreadable for as long as this process runs.
			 */
			kvt_tmi_hcount_add(&tm->pend_del, kvt_key_hash(k));
		}
	}
	return found || on;
}

/* ---- promotion ---------------------------------------------------------- */

int kvt_tmi_add_waiter(struct job *j, tm_ref_fn cb, void *arg)
{
	struct waiter *w = malloc(sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->cb = cb;
	w->arg = arg;
	w->next = j->waiters;
	j->waiters = w;
	return 0;
}

struct job *kvt_tmi_promo_start(struct kvt_tm *tm, enum job_kind kind,
				const struct kvt_key *k, tm_ref_fn cb,
				void *arg)
{
	struct job *j = kvt_tmi_job_new(kind, k);

	if (!j)
		return NULL;
	if (kvt_tmi_add_waiter(j, cb, arg)) {
		free(j);
		return NULL;
	}
	/* A prefetch asks for the block in L1: that is what it is for. */
	j->force = cb == kvt_tmi_prefetch_done;
	kvt_tmi_jobset_add(&tm->promos, j);
	return j;
}

int kvt_tmi_promo_frame(struct kvt_tm *tm, const struct kvt_key *k,
			struct kvt_ref *frame, uint8_t flags, tm_ref_fn cb,
			void *arg)
{
	struct job *p = kvt_tmi_promo_start(tm, JOB_FROM_L2, k, cb, arg);
	struct kvt_lru_meta m;

	if (!p) {
		kvt_ref_release(frame);
		cb(arg, -ENOMEM, NULL);
		return 0;
	}
	kvt_lru_ref_meta(frame, &m);
	p->src = frame;
	p->src_codec = m.codec;
	p->raw_len = m.raw_len;
	p->dtype = kvt_ref_dtype(frame);
	p->expires = kvt_lru_ref_expires(frame);
	p->flags = m.flags | flags;
	p->hits = m.hits;
	p->ctime_s = m.ctime_s;
	p->atime_s = tm->now_s();
	kvt_tmi_submit(tm, p);
	return 1;
}

void kvt_tmi_prefetch_done(void *arg, int status, struct kvt_ref *ref)
{
	(void)arg;
	(void)status;
	kvt_ref_release(ref);
}

/*
 * L1 admission (kvt_tm.c: "Admission"): a block read from below enters L1
 * on its second read within the window, or when a prefetch or a pin asks
 * for it.  Every read from below refreshes the key's place in `seen`.
 */
static bool admit(struct kvt_tm *tm, struct job *j)
{
	uint64_t at;
	bool again = kvt_ghost_get(tm->seen, j->hash, &at) &&
		     tm->bypass_bytes - at < tm->admit_window;
	bool yes = j->force || again || kvt_tmi_pin_find(tm, &j->k);

	/* L3 counts its reads itself: the one that was bypassed is history. */
	if (again && j->kind == JOB_FROM_L3)
		j->hits++;
	if (!yes)
		tm->bypass_bytes += j->out_len;
	kvt_ghost_put(tm->seen, j->hash, tm->bypass_bytes);
	if (yes)
		tm->promotions_admitted++;
	else
		tm->promotions_bypassed++;
	return yes;
}

/* ---- results from the pool ---------------------------------------------- */

static void finish_waiters(struct kvt_tm *tm, struct job *j, int status,
			   struct kvt_ref *ref, uint64_t *cause)
{
	while (j->waiters) {
		struct waiter *w = j->waiters;

		j->waiters = w->next;
		if (status == 0) {
			w->cb(w->arg, 0, kvt_lru_ref_acquire(ref));
		} else {
			/* A prefetch is nobody's get: not a miss. */
			if (w->cb != kvt_tmi_prefetch_done) {
				tm->misses++;
				(*cause)++;
			}
			w->cb(w->arg, status, NULL);
		}
		free(w);
	}
}

/*
 * Hands j's output buffer over to tier t (L1 or L2; NULL: a reference in
 * no tier) as the entry for j's key.  The buffer becomes the entry's
 * memory whatever the result.
 */
static int store_output(struct kvt_tm *tm, struct kvt_lru *t, struct job *j,
			uint8_t codec, uint64_t raw_len, uint8_t flags,
			struct kvt_ref **ref, kvt_lru_victim_fn victim)
{
	struct kvt_blob blob = {
		.mem = j->out,
		.mem_size = j->out_len,
		.data = j->out,
		.len = j->out_len,
		.dtype = j->dtype,
	};
	struct kvt_lru_meta m = {
		.codec = codec,
		.flags = flags,
		.raw_len = raw_len,
		.hits = j->hits,
		.ctime_s = j->ctime_s,
		.atime_s = j->atime_s,
	};

	j->out = NULL;
	if (!t)
		return kvt_lru_ref_make(&j->k, &blob, j->expires, &m, ref);
	return kvt_lru_put_meta(t, &j->k, &blob, j->expires, &m, ref, victim,
				tm);
}

/*
 * A block read from below, admitted: it enters L1, keeping what is below.
 * A frame still in L2 stays there (L2 is inclusive for promoted blocks);
 * the L1 entry records which copy below is its own.
 */
static int promote(struct kvt_tm *tm, struct job *j, struct kvt_ref **ref)
{
	uint8_t flags = j->flags & TM_F_PREFETCHED;
	struct kvt_ref *frame = NULL;

	if (j->kind == JOB_FROM_L2 && tm->l2 &&
	    kvt_lru_peek(tm->l2, &j->k, tm->now_s(), &frame) == 0)
		flags |= TM_F_ON_L2; /* the frame keeps its own ON_L3 */
	else
		flags |= j->flags & TM_F_ON_L3;
	int rc = store_output(tm, tm->l1, j, KVT_CODEC_RAW, j->out_len, flags,
			      ref, kvt_tmi_l1_victim);
	if (rc == 0) {
		if (frame) {
			kvt_lru_ref_set_flags(tm->l2, frame, TM_F_IN_L1, 0);
			/*
			 * While L1 has the block, its frame is what L2 can
			 * lose most cheaply (to L3, or its L1 copy compressed
			 * again later): L2 gives it up first.
			 */
			kvt_lru_move(tm->l2, frame, false);
		}
		tm->promotions++;
		kvt_tmi_reapply_pin(tm, &j->k);
	}
	kvt_ref_release(frame);
	return rc;
}

static void promo_done(struct kvt_tm *tm, struct job *j)
{
	struct kvt_ref *ref = NULL;
	int status = j->status;
	uint64_t *cause = &tm->misses_never_seen;

	kvt_tmi_jobset_remove(&tm->promos, j);
	if (status == KVT_ECORRUPT)
		cause = &tm->misses_corrupt;
	else if (j->stale)
		cause = &tm->misses_raced;
	else if (status == 0 && tm_expired(tm, j->expires))
		cause = &tm->misses_expired;
	else if (status == KVT_ENOTFOUND && kvt_tmi_was_gone(tm, &j->k))
		cause = &tm->misses_evicted;
	if (status == KVT_ECORRUPT || status == KVT_ENOTFOUND || j->stale ||
	    (status == 0 && tm_expired(tm, j->expires)))
		status = KVT_ENOTFOUND;
	if (status == 0) {
		if (admit(tm, j))
			status = promote(tm, j, &ref);
		else
			/* Served once; the copy below stays where it is. */
			status = store_output(tm, NULL, j, KVT_CODEC_RAW,
					      j->out_len, 0, &ref, NULL);
	} else if (status != KVT_ENOTFOUND && j->kind == JOB_FROM_L2 &&
		   tm->l2) {
		/* A frame that does not decompress is dropped, never served. */
		kvt_lru_del(tm->l2, &j->k, tm->now_s());
		status = KVT_ENOTFOUND;
	}
	finish_waiters(tm, j, status, ref, cause);
	kvt_ref_release(ref);
}

static void demotion_done(struct kvt_tm *tm, struct job *j)
{
	kvt_tmi_jobset_remove(&tm->transit, j);
	tm->transit_bytes -= j->cost;
	if (j->kind == JOB_TO_L3) {
		/* A stale write was followed by a delete job already. */
		if (j->status == 0) {
			tm->demotions++;
			return;
		}
		/* The disk refused: dropped cleanly. */
		struct kvt_ref *r;
		if (!j->stale &&
		    kvt_lru_peek(tm->l1, &j->k, tm->now_s(), &r) == 0) {
			/* L1 still has it (its frame was being written). */
			kvt_lru_ref_set_flags(tm->l1, r, 0, TM_F_ON_L3);
			kvt_ref_release(r);
			return;
		}
		tm->evictions++;
		remember_gone(tm, &j->k);
		return;
	}
	/* JOB_TO_L2 */
	if (j->stale || tm_expired(tm, j->expires))
		return;
	if (j->status) {
		tm->evictions++;
		return;
	}
	int rc = store_output(tm, tm->l2, j, j->out_codec, j->raw_len, j->flags,
			      NULL, l2_victim);
	if (rc == 0)
		tm->demotions++;
	else if (rc == KVT_ENOSPACE)
		/* Bigger than all of L2: straight on to L3 (or gone). */
		kvt_tmi_demote(tm, kvt_lru_ref_acquire(j->src),
			       TM_DEMOTE_TO_L3);
	else
		tm->evictions++;
}

void kvt_tmi_keep_frame(struct kvt_tm *tm, struct job *j)
{
	struct kvt_lru_meta m;
	struct kvt_ref *r, *frame = NULL;

	if (!tm->l2 || kvt_lru_peek(tm->l1, &j->k, tm->now_s(), &r) != 0)
		return;
	kvt_lru_ref_meta(r, &m);
	/* The very block, with no copy below yet. */
	if (kvt_ref_data(r) == kvt_ref_data(j->src) &&
	    !(m.flags & TM_F_COPIES) &&
	    store_output(tm, tm->l2, j, j->out_codec, j->raw_len, TM_F_IN_L1,
			 &frame, l2_victim) == 0) {
		/* As a promotion from L2 leaves it (promote()). */
		kvt_lru_ref_set_flags(tm->l1, r, TM_F_ON_L2, 0);
		kvt_lru_move(tm->l2, frame, false);
	}
	kvt_ref_release(frame);
	kvt_ref_release(r);
}

/* True for the jobs of L4's lanes. */
static bool l4_job(enum job_kind kind)
{
	return kind == JOB_L4_GET || kind == JOB_L4_PROBE ||
	       kind == JOB_L4_PUT || kind == JOB_L4_DEL ||
	       kind == JOB_L4_DROP;
}

void kvt_tmi_apply_done(struct kvt_tm *tm)
{
	struct job *j, *next;

	for (j = kvt_tmi_pool_done(tm); j; j = next) {
		next = j->next;
		if (!j->from_pool) {
			tm->jobs_pending--;
			if (l4_job(j->kind))
				tm->l4->jobs--;
		}
		switch (j->kind) {
		case JOB_TO_L2:
		case JOB_TO_L3:
			demotion_done(tm, j);
			break;
		case JOB_FROM_L2:
		case JOB_FROM_L3:
		case JOB_L4_GET:
			promo_done(tm, j);
			break;
		case JOB_L4_PROBE:
		case JOB_L4_PUT:
		case JOB_L4_DEL:
		case JOB_L4_DROP:
		case JOB_L4_GENS:
			if (kvt_tmi_l4_done(tm, j))
				continue; /* queued again: not finished */
			break;
		case JOB_L3_DEL:
			kvt_tmi_pending_done(tm, j);
			break;
		case JOB_L3_DROP:
			kvt_tmi_pending_done(tm, j);
			j->count_cb(j->count_arg, j->status, j->count);
			break;
		case JOB_SEG_COPY:
		case JOB_SEG_FRAME:
		case JOB_SEG_L3:
		case JOB_SEG_PUT:
			kvt_tmi_seg_done(tm, j);
			break;
		}
		kvt_tmi_job_free(j);
	}
}
