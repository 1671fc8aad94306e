/*
 * kvt_tm_move.c - blocks in motion, on the loop thread (kvt_tm_int.h).
 *
 * Demotion: an L1 victim is compressed for L2, an L2 victim written to L3
 * (within the L3 write budget), anything else dropped and remembered as
 * gone.  Promotion: an L2 frame is decompressed, an L3 block read, and the
 * result enters L1; gets for a block already on its way up wait for the
 * same job.  The jobs themselves run on the worker (kvt_tm_worker.c);
 * kvt_tm_dispatch() applies what they produced.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_tm_int.h"

/* ---- the transit and promos lists --------------------------------------- */

static bool key_eq(const struct kvt_key *a, const struct kvt_key *b)
{
	return a->ns_len == b->ns_len && a->key_len == b->key_len &&
	       (a->ns_len == 0 || memcmp(a->ns, b->ns, a->ns_len) == 0) &&
	       (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0);
}

static void list_remove(struct job **head, struct job *j)
{
	for (struct job **p = head; *p; p = &(*p)->lnext)
		if (*p == j) {
			*p = j->lnext;
			j->lnext = NULL;
			return;
		}
}

struct job *kvt_tmi_list_find(struct job *head, const struct kvt_key *k)
{
	for (struct job *j = head; j; j = j->lnext)
		if (!j->stale && key_eq(&j->k, k))
			return j;
	return NULL;
}

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

/* L3 reclaimed a region: its blocks are gone (worker thread). */
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

void kvt_tmi_demote(struct kvt_tm *tm, struct kvt_ref *v, bool to_l3,
		    bool force)
{
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
	if (to_l3 || !tm->l2) {
		/* It leaves RAM: remember where RAM's evictions stood. */
		struct kvt_key k0;

		kvt_lru_ref_key(v, &k0);
		tm->ram_evicted += cost;
		kvt_ghost_put(tm->ram_ghost, kvt_key_hash(&k0),
			      tm->ram_evicted);
	}
	if (!to_l3 && tm->l2) {
		kind = JOB_TO_L2;
	} else if (tm->l3) {
		if (m.flags & TM_F_ON_L3) {
			/* L3 is inclusive: its copy is this very block. */
			tm->demotions++;
			kvt_ref_release(v);
			return;
		}
		if (!force && !l3_admit(tm, cost)) {
			drop_block(tm, v);
			return;
		}
		kind = JOB_TO_L3;
	} else {
		drop_block(tm, v);
		return;
	}
	if (!force && tm->transit_bytes + cost > 2 * tm->transit_max) {
		tm->demotions_dropped++;
		drop_block(tm, v);
		return;
	}
	kvt_lru_ref_key(v, &k);
	j = kvt_tmi_job_new(kind, &k);
	if (!j) {
		drop_block(tm, v);
		return;
	}
	j->src = v;
	j->src_codec = m.codec;
	j->raw_len = m.raw_len;
	j->dtype = kvt_ref_dtype(v);
	j->expires = exp;
	j->flags = m.flags;
	j->hits = m.hits;
	j->ctime_s = m.ctime_s;
	j->atime_s = m.atime_s;
	j->cost = cost;
	j->listed = true;
	j->lnext = tm->transit;
	tm->transit = j;
	tm->transit_bytes += cost;
	kvt_tmi_submit(tm, j);
}

void kvt_tmi_l1_victim(void *arg, struct kvt_ref *v)
{
	kvt_tmi_demote(arg, v, false, false);
}

static void l2_victim(void *arg, struct kvt_ref *v)
{
	kvt_tmi_demote(arg, v, true, false);
}

/*
 * Marks every job for k stale.  Returns true if one of them is writing k to
 * L3, so the caller knows a delete must follow it.
 */
static bool mark_stale(struct kvt_tm *tm, const struct kvt_key *k,
		       bool *found)
{
	bool writing = false;

	for (struct job *j = tm->transit; j; j = j->lnext)
		if (!j->stale && key_eq(&j->k, k)) {
			if (!tm_expired(tm, j->expires))
				*found = true;
			j->stale = true;
			writing |= j->kind == JOB_TO_L3;
		}
	for (struct job *j = tm->promos; j; j = j->lnext)
		if (!j->stale && key_eq(&j->k, k)) {
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
	if (tm->l3 && (writing || kvt_l3_contains(tm->l3, k))) {
		struct job *j = kvt_tmi_job_new(JOB_L3_DEL, k);
		found = true;
		if (j)
			kvt_tmi_submit(tm, j);
	}
	return found;
}

/* ---- promotion ---------------------------------------------------------- */

int kvt_tmi_add_waiter(struct job *j, kvt_tm_get_cb cb, void *arg)
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
				const struct kvt_key *k, kvt_tm_get_cb cb,
				void *arg)
{
	struct job *j = kvt_tmi_job_new(kind, k);

	if (!j)
		return NULL;
	if (kvt_tmi_add_waiter(j, cb, arg)) {
		free(j);
		return NULL;
	}
	j->listed = true;
	j->lnext = tm->promos;
	tm->promos = j;
	return j;
}

int kvt_tmi_promo_frame(struct kvt_tm *tm, const struct kvt_key *k,
			struct kvt_ref *frame, kvt_tm_get_cb cb, void *arg)
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
	p->flags = m.flags;
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

/* ---- results from the worker -------------------------------------------- */

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
 * Hands j's output buffer over to tier t (L1 or L2) as the entry for j's
 * key.  The buffer becomes the entry's memory whatever the result.
 */
static int store_output(struct kvt_tm *tm, struct kvt_lru *t, struct job *j,
			uint8_t codec, uint64_t raw_len, struct kvt_ref **ref,
			kvt_lru_victim_fn victim)
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
		.flags = j->flags,
		.raw_len = raw_len,
		.hits = j->hits,
		.ctime_s = j->ctime_s,
		.atime_s = j->atime_s,
	};

	j->out = NULL;
	return kvt_lru_put_meta(t, &j->k, &blob, j->expires, &m, ref, victim,
				tm);
}

static void promo_done(struct kvt_tm *tm, struct job *j)
{
	struct kvt_ref *ref = NULL;
	int status = j->status;

	uint64_t *cause = &tm->misses_never_seen;

	list_remove(&tm->promos, j);
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
		/* Exclusive RAM tiers: the frame leaves L2 as the raw block
		 * enters L1. */
		if (j->kind == JOB_FROM_L2 && tm->l2)
			kvt_lru_del(tm->l2, &j->k, tm->now_s());
		status = store_output(tm, tm->l1, j, KVT_CODEC_RAW, j->out_len,
				      &ref, kvt_tmi_l1_victim);
		if (status == 0) {
			tm->promotions++;
			kvt_tmi_reapply_pin(tm, &j->k);
		}
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
	list_remove(&tm->transit, j);
	tm->transit_bytes -= j->cost;
	if (j->kind == JOB_TO_L3) {
		/* A stale write was followed by a delete job already. */
		if (j->status == 0) {
			tm->demotions++;
		} else {
			tm->evictions++; /* the disk refused: dropped cleanly */
			remember_gone(tm, &j->k);
		}
		return;
	}
	/* JOB_TO_L2 */
	if (j->stale || tm_expired(tm, j->expires))
		return;
	if (j->status) {
		tm->evictions++;
		return;
	}
	int rc = store_output(tm, tm->l2, j, j->out_codec, j->raw_len, NULL,
			      l2_victim);
	if (rc == 0)
		tm->demotions++;
	else if (rc == KVT_ENOSPACE)
		/* Bigger than all of L2: straight on to L3 (or gone). */
		kvt_tmi_demote(tm, kvt_lru_ref_acquire(j->src), true, false);
	else
		tm->evictions++;
}

void kvt_tm_dispatch(struct kvt_tm *tm)
{
	struct job *j, *next;

	if (!tm || !tm->worker_running)
		return;
	for (j = kvt_tmi_worker_done(tm); j; j = next) {
		next = j->next;
		tm->jobs_pending--;
		switch (j->kind) {
		case JOB_TO_L2:
		case JOB_TO_L3:
			demotion_done(tm, j);
			break;
		case JOB_FROM_L2:
		case JOB_FROM_L3:
			promo_done(tm, j);
			break;
		case JOB_L3_DEL:
			break;
		case JOB_L3_DROP:
			j->count_cb(j->count_arg, j->status, j->count);
			break;
		}
		kvt_tmi_job_free(j);
	}
}
