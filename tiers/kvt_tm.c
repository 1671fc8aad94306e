/*
 * kvt_tm.c - the tier manager (see kvt_tm.h for the API).
 *
 * Tiers.  L1 holds raw values (a kvt_lru).  L2 is a second kvt_lru whose
 * values are compressed frames (codec and raw length in the entry's
 * kvt_lru_meta).  L3 is the SSD store (kvt_l3).  L1 and L2 are exclusive;
 * L3 is inclusive: a block promoted from L3 keeps its SSD copy and carries
 * the TM_F_ON_L3 flag, so demoting it again writes nothing.
 *
 * Threads.  The event loop owns L1, L2 and every list below.  One worker
 * thread does everything slow: compression, decompression and L3 I/O.
 * Jobs go to the worker through `todo` and come back through `done`, both
 * under `mu`; an eventfd tells the loop that `done` is not empty, and
 * kvt_tm_dispatch() applies the results on the loop thread.  So an L1 hit
 * never waits behind anybody's zstd or disk read.
 *
 * Blocks in motion.  A block being demoted (L1 victim being compressed, L2
 * victim being written) is in neither RAM tier for a while; it stays on the
 * `transit` list so gets still find it.  A block being promoted (L2 frame
 * being decompressed, L3 read) is on the `promos` list so that gets for it
 * wait for the same job instead of starting another.  A put or del of a key
 * marks its jobs stale: a stale demotion is not inserted into L2, a stale
 * promotion is not inserted into L1 (its waiters get a miss, which is
 * always allowed), and the key's L3 copy is deleted by a job queued behind
 * any write of it, so the worker's FIFO order keeps L3 right.
 *
 * Bounds.  Both lists are short: transit is held near transit_max bytes by
 * the daemon's backpressure on PUTs (kvt_tm_busy), with victims beyond
 * twice that dropped and counted, and promos by the number of gets in
 * flight, so they are searched linearly.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvt_codec.h"
#include "kvt_ghost.h"
#include "kvt_lru.h"
#include "kvt_mem.h"
#include "kvt_l3.h"
#include "kvt_tm.h"

/* Entry flag: an identical copy of this block is indexed on L3. */
#define TM_F_ON_L3 0x01
/* Entry flag: brought up by PREFETCH and not read since. */
#define TM_F_PREFETCHED 0x02

/* Most L3 writes (and bytes) the worker gathers into one batch. */
#define TM_L3_BATCH 64
#define TM_L3_BATCH_BYTES (64u << 20)
/* Most L3 reads the worker issues together. */
#define TM_READ_BATCH 64

enum job_kind {
	JOB_TO_L2,	/* compress a raw L1 victim for L2 */
	JOB_TO_L3,	/* (compress and) write a block to L3 */
	JOB_FROM_L2,	/* decompress an L2 frame */
	JOB_FROM_L3,	/* read (and decompress) a block from L3 */
	JOB_L3_DEL,	/* remove a key's L3 copy */
	JOB_L3_DROP,	/* remove a namespace from L3 (k.ns; key empty) */
};

struct waiter {
	struct waiter *next;
	kvt_tm_get_cb cb;
	void *arg;
};

struct job {
	struct job *next;  /* todo / done queue */
	struct job *lnext; /* transit / promos list */
	enum job_kind kind;
	bool stale;	/* the key was put or deleted meanwhile */
	bool listed;	/* on transit or promos */
	struct kvt_key k; /* points into name[] */
	uint64_t expires;
	uint8_t dtype;
	uint8_t flags;	/* TM_F_* of the block */
	uint64_t hits, ctime_s, atime_s; /* the block's history (hot) */
	/* Input: the block, raw (src_codec RAW) or a compressed frame. */
	struct kvt_ref *src;
	uint8_t src_codec;
	uint64_t raw_len;
	uint64_t cost;	/* bytes counted in transit_bytes */
	/* Output. */
	int status;
	uint8_t *out;	/* malloc'd: a frame (TO_L2) or raw bytes (FROM_*) */
	size_t out_len;
	uint8_t out_codec;
	struct waiter *waiters;
	/* JOB_L3_DROP: completion, and blocks already dropped from RAM. */
	kvt_tm_count_cb count_cb;
	void *count_arg;
	uint64_t count;
	uint8_t name[];	/* ns bytes then key bytes */
};

/*
 * A pinned key: pinned by `count` holders (connections).  Pins are per key,
 * not per entry, so a pinned block stays pinned when it is replaced or
 * brought back up from a lower tier.
 */
struct pin {
	struct pin *next;
	uint32_t count;
	size_t ns_len, key_len;
	uint8_t name[];
};
#define TM_PIN_BUCKETS 1024

struct kvt_tm {
	struct kvt_arena *arena; /* installed in kvt_mem while open */
	int arena_err;
	struct kvt_lru *l1;
	struct pin *pins[TM_PIN_BUCKETS];
	uint64_t npins, pin_cap, pins_rejected;
	struct kvt_lru *l2; /* NULL: L2 disabled */
	struct kvt_l3 *l3; /* NULL: L3 disabled */
	uint64_t (*now_s)(void);
	uint64_t l2_capacity, l3_capacity;
	uint64_t transit_max;

	/* Worker. */
	pthread_t worker;
	bool worker_running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool quit;
	struct job *todo_head, *todo_tail; /* under mu */
	struct job *done_head, *done_tail; /* under mu */
	int efd;
	struct kvt_codec_ctx *wctx; /* the worker's */
	unsigned jobs_pending;	    /* loop thread */

	/* Loop thread only. */
	struct job *transit;
	struct job *promos;
	uint64_t transit_bytes;
	uint64_t l3_tokens, l3_rate, l3_tokens_at;

	uint64_t gets, puts, dels, misses;
	uint64_t promotions, demotions, evictions;
	uint64_t rejected_too_big, demotions_dropped, l3_admission_rejected;
	uint64_t prefetched, prefetch_hits;

	/*
	 * Why gets miss.  `gone` remembers keys that left the cache
	 * altogether (L3 reclaims happen on the worker: ghost_mu); ram_ghost
	 * remembers keys that left RAM with ram_evicted (bytes RAM had
	 * evicted) at that moment: a RAM miss whose key left RAM less than
	 * a RAM's worth of evictions ago would have hit a RAM twice as big.
	 */
	struct kvt_ghost *gone, *ram_ghost;
	pthread_mutex_t ghost_mu;
	uint64_t ram_evicted, ram_capacity, ghost_hits_2x;
	uint64_t misses_never_seen, misses_expired, misses_evicted;
	uint64_t misses_corrupt, misses_raced;
	uint64_t l2_hits_transit;
};

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

static bool key_eq(const struct kvt_key *a, const struct kvt_key *b)
{
	return a->ns_len == b->ns_len && a->key_len == b->key_len &&
	       (a->ns_len == 0 || memcmp(a->ns, b->ns, a->ns_len) == 0) &&
	       (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0);
}

static bool expired(const struct kvt_tm *tm, uint64_t expires)
{
	return expires != 0 && tm->now_s() >= expires;
}

static struct job *job_new(enum job_kind kind, const struct kvt_key *k)
{
	struct job *j = calloc(1, sizeof(*j) + k->ns_len + k->key_len);

	if (!j)
		return NULL;
	j->kind = kind;
	if (k->ns_len)
		memcpy(j->name, k->ns, k->ns_len);
	if (k->key_len)
		memcpy(j->name + k->ns_len, k->key, k->key_len);
	j->k.ns = j->name;
	j->k.ns_len = k->ns_len;
	j->k.key = j->name + k->ns_len;
	j->k.key_len = k->key_len;
	return j;
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	kvt_ref_release(j->src);
	kvt_block_free(j->out);
	free(j);
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

static struct job *list_find(struct job *head, const struct kvt_key *k)
{
	for (struct job *j = head; j; j = j->lnext)
		if (!j->stale && key_eq(&j->k, k))
			return j;
	return NULL;
}

/* ---- worker ------------------------------------------------------------ */

static void submit(struct kvt_tm *tm, struct job *j)
{
	pthread_mutex_lock(&tm->mu);
	if (tm->todo_tail)
		tm->todo_tail->next = j;
	else
		tm->todo_head = j;
	tm->todo_tail = j;
	pthread_cond_signal(&tm->cv);
	pthread_mutex_unlock(&tm->mu);
	tm->jobs_pending++;
}

/* Compresses j->src into j->out unless it already is a frame. */
static int worker_compress(struct kvt_tm *tm, struct job *j)
{
	const uint8_t *d = kvt_ref_data(j->src);
	size_t len = kvt_ref_len(j->src);

	if (j->src_codec != KVT_CODEC_RAW) {
		/* Already a frame (an L2 victim): L3 stores it as it is. */
		j->out_codec = j->src_codec;
		return 0;
	}
	return kvt_codec_compress(tm->wctx, d, len,
				  kvt_codec_elem_size(j->dtype), &j->out,
				  &j->out_len, &j->out_codec);
}

static void worker_to_l3(struct kvt_tm *tm, struct job **jobs, size_t n)
{
	struct kvt_l3_item items[TM_L3_BATCH];
	size_t m = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];

		j->status = worker_compress(tm, j);
		if (j->status)
			continue;
		items[m].k = j->k;
		items[m].data = j->out ? j->out : kvt_ref_data(j->src);
		items[m].len = j->out ? j->out_len : kvt_ref_len(j->src);
		items[m].codec = j->out_codec;
		items[m].dtype = j->dtype;
		items[m].raw_len = j->raw_len;
		items[m].expiry = j->expires;
		m++;
	}
	rc = m ? kvt_l3_put_batch(tm->l3, items, m) : 0;
	for (size_t i = 0; i < n; i++)
		if (!jobs[i]->status)
			jobs[i]->status = rc;
}

static int decompress_into(struct kvt_tm *tm, struct job *j, uint8_t codec,
			   const uint8_t *src, size_t len)
{
	j->out = kvt_block_alloc(j->raw_len);
	if (!j->out)
		return -ENOMEM;
	j->out_len = j->raw_len;
	if (codec == KVT_CODEC_RAW) {
		if (len != j->raw_len)
			return KVT_ECORRUPT;
		memcpy(j->out, src, len);
		return 0;
	}
	return kvt_codec_decompress(tm->wctx, codec, src, len, j->out,
				    j->raw_len);
}

static void worker_from_l3(struct kvt_tm *tm, struct job **jobs, size_t n)
{
	struct kvt_l3_read reads[TM_READ_BATCH];
	int rc;

	memset(reads, 0, sizeof(reads));
	for (size_t i = 0; i < n; i++)
		reads[i].k = jobs[i]->k;
	rc = kvt_l3_read_batch(tm->l3, reads, n);
	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];
		struct kvt_l3_read *r = &reads[i];

		j->status = rc ? rc : r->status;
		if (!j->status) {
			j->raw_len = r->raw_len;
			j->dtype = r->dtype;
			j->expires = r->expiry;
			j->status = decompress_into(tm, j, r->codec, r->data,
						    r->len);
		}
		free(r->mem);
	}
}

/*
 * Takes the next run of work from todo: consecutive L3 writes or L3 reads
 * are gathered into one batch so the disk sees large writes and many
 * reads in flight.
 */
static size_t take_run(struct kvt_tm *tm, struct job **run)
{
	struct job *j = tm->todo_head;
	enum job_kind kind = j->kind;
	size_t n = 0, bytes = 0, max = 1;

	if (kind == JOB_TO_L3)
		max = TM_L3_BATCH;
	else if (kind == JOB_FROM_L3)
		max = TM_READ_BATCH;
	while (j && n < max && j->kind == kind && bytes < TM_L3_BATCH_BYTES) {
		run[n++] = j;
		bytes += j->src ? kvt_ref_len(j->src) : 0;
		j = j->next;
	}
	tm->todo_head = j;
	if (!j)
		tm->todo_tail = NULL;
	for (size_t i = 0; i < n; i++)
		run[i]->next = NULL;
	return n;
}

static void *worker_main(void *arg)
{
	struct kvt_tm *tm = arg;
	struct job *run[TM_L3_BATCH > TM_READ_BATCH ? TM_L3_BATCH
						     : TM_READ_BATCH];

	pthread_mutex_lock(&tm->mu);
	for (;;) {
		size_t n;

		while (!tm->todo_head && !tm->quit)
			pthread_cond_wait(&tm->cv, &tm->mu);
		if (tm->quit)
			break;
		n = take_run(tm, run);
		pthread_mutex_unlock(&tm->mu);

		switch (run[0]->kind) {
		case JOB_TO_L2:
			run[0]->status = worker_compress(tm, run[0]);
			break;
		case JOB_TO_L3:
			worker_to_l3(tm, run, n);
			break;
		case JOB_FROM_L2: {
			struct job *j = run[0];
			j->status = decompress_into(tm, j, j->src_codec,
						    kvt_ref_data(j->src),
						    kvt_ref_len(j->src));
			break;
		}
		case JOB_FROM_L3:
			worker_from_l3(tm, run, n);
			break;
		case JOB_L3_DEL:
			run[0]->status = kvt_l3_del(tm->l3, &run[0]->k);
			break;
		case JOB_L3_DROP: {
			uint64_t dropped = 0;
			run[0]->status = kvt_l3_drop_ns(tm->l3, run[0]->k.ns,
							run[0]->k.ns_len,
							&dropped);
			run[0]->count += dropped;
			break;
		}
		}

		pthread_mutex_lock(&tm->mu);
		for (size_t i = 0; i < n; i++) {
			if (tm->done_tail)
				tm->done_tail->next = run[i];
			else
				tm->done_head = run[i];
			tm->done_tail = run[i];
		}
		/* Wake the loop; a full counter only means it is awake. */
		uint64_t one = 1;
		if (write(tm->efd, &one, sizeof(one)) < 0) {
			/* EAGAIN: the counter is saturated, still readable. */
		}
	}
	pthread_mutex_unlock(&tm->mu);
	return NULL;
}

/* ---- demotion (loop thread) ------------------------------------------- */

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

static bool was_gone(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t h = kvt_key_hash(k);
	bool seen;

	pthread_mutex_lock(&tm->ghost_mu);
	seen = kvt_ghost_get(tm->gone, h, NULL);
	pthread_mutex_unlock(&tm->ghost_mu);
	return seen;
}

/* L3 reclaimed a region: its blocks are gone (worker thread). */
static void l3_evicted(void *arg, const struct kvt_key *k)
{
	remember_gone(arg, k);
}

static void drop_block(struct kvt_tm *tm, struct kvt_ref *v)
{
	struct kvt_key k;

	kvt_lru_ref_key(v, &k);
	remember_gone(tm, &k);
	tm->evictions++;
	kvt_ref_release(v);
}

/*
 * Sends block v (whose reference passes to us) one tier down: an L1 victim
 * to L2, an L2 victim (or, with to_l3, anything) to L3.  force skips the
 * transit cap and the write budget (graceful spill).
 */
static void demote(struct kvt_tm *tm, struct kvt_ref *v, bool to_l3,
		   bool force)
{
	struct kvt_lru_meta m;
	struct kvt_key k;
	uint64_t exp = kvt_lru_ref_expires(v);
	uint64_t cost = kvt_ref_len(v);
	enum job_kind kind;
	struct job *j;

	if (expired(tm, exp)) {
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
	j = job_new(kind, &k);
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
	submit(tm, j);
}

static void l1_victim(void *arg, struct kvt_ref *v)
{
	demote(arg, v, false, false);
}

static void l2_victim(void *arg, struct kvt_ref *v)
{
	demote(arg, v, true, false);
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
			if (!expired(tm, j->expires))
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

/* Forgets k below L1: stale jobs, L2 copy, L3 copy.  Returns if found. */
static bool forget_below(struct kvt_tm *tm, const struct kvt_key *k)
{
	bool found = false;
	bool writing = mark_stale(tm, k, &found);

	if (tm->l2 && kvt_lru_del(tm->l2, k, tm->now_s()) == 0)
		found = true;
	if (tm->l3 && (writing || kvt_l3_contains(tm->l3, k))) {
		struct job *j = job_new(JOB_L3_DEL, k);
		found = true;
		if (j)
			submit(tm, j);
	}
	return found;
}

/* ---- promotion and results (loop thread) ------------------------------ */

static void prefetch_done(void *arg, int status, struct kvt_ref *ref);
static void reapply_pin(struct kvt_tm *tm, const struct kvt_key *k);

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
			if (w->cb != prefetch_done) {
				tm->misses++;
				(*cause)++;
			}
			w->cb(w->arg, status, NULL);
		}
		free(w);
	}
}

static int add_waiter(struct job *j, kvt_tm_get_cb cb, void *arg)
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

/* Starts a promotion of k; the job's src (if any) is set by the caller. */
static struct job *promo_start(struct kvt_tm *tm, enum job_kind kind,
			       const struct kvt_key *k, kvt_tm_get_cb cb,
			       void *arg)
{
	struct job *j = job_new(kind, k);

	if (!j)
		return NULL;
	if (add_waiter(j, cb, arg)) {
		free(j);
		return NULL;
	}
	j->listed = true;
	j->lnext = tm->promos;
	tm->promos = j;
	return j;
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
	else if (status == 0 && expired(tm, j->expires))
		cause = &tm->misses_expired;
	else if (status == KVT_ENOTFOUND && was_gone(tm, &j->k))
		cause = &tm->misses_evicted;
	if (status == KVT_ECORRUPT || status == KVT_ENOTFOUND || j->stale ||
	    (status == 0 && expired(tm, j->expires)))
		status = KVT_ENOTFOUND;
	if (status == 0) {
		/* Exclusive RAM tiers: the frame leaves L2 as the raw block
		 * enters L1. */
		if (j->kind == JOB_FROM_L2 && tm->l2)
			kvt_lru_del(tm->l2, &j->k, tm->now_s());
		status = store_output(tm, tm->l1, j, KVT_CODEC_RAW, j->out_len,
				      &ref, l1_victim);
		if (status == 0) {
			tm->promotions++;
			reapply_pin(tm, &j->k);
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
	if (j->stale || expired(tm, j->expires))
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
		demote(tm, kvt_lru_ref_acquire(j->src), true, false);
	else
		tm->evictions++;
}

void kvt_tm_dispatch(struct kvt_tm *tm)
{
	struct job *j, *next;
	uint64_t junk;

	if (!tm || !tm->worker_running)
		return;
	if (read(tm->efd, &junk, sizeof(junk)) < 0) {
		/* EAGAIN: the daemon's own read already reset it. */
	}
	pthread_mutex_lock(&tm->mu);
	j = tm->done_head;
	tm->done_head = tm->done_tail = NULL;
	pthread_mutex_unlock(&tm->mu);
	for (; j; j = next) {
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
		job_free(j);
	}
}

void kvt_tm_set_l3_write_rate(struct kvt_tm *tm, uint64_t rate)
{
	if (!tm)
		return;
	tm->l3_rate = rate;
	tm->l3_tokens = rate;
	tm->l3_tokens_at = tm->now_s();
}

int kvt_tm_busy(struct kvt_tm *tm)
{
	return tm && tm->transit_bytes > tm->transit_max;
}

int kvt_tm_event_fd(struct kvt_tm *tm)
{
	return tm && tm->worker_running ? tm->efd : -1;
}

/* ---- API ----------------------------------------------------------------- */

static void set_err(const struct kvt_tm_config *cfg, const char *msg)
{
	if (cfg && cfg->errmsg && cfg->errmsg_len)
		snprintf(cfg->errmsg, cfg->errmsg_len, "%s", msg);
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
	tm = calloc(1, sizeof(*tm));
	if (!tm)
		return -ENOMEM;
	tm->efd = -1;
	tm->now_s = cfg->now_s ? cfg->now_s : tm_realtime_s;
	tm->l2_capacity = cfg->l2_capacity;
	tm->l3_capacity = cfg->l3_capacity;
	tm->l3_rate = cfg->l3_write_rate;
	tm->l3_tokens = tm->l3_rate;
	tm->l3_tokens_at = tm->now_s();
	tm->transit_max = cfg->transit_max;
	tm->pin_cap = cfg->pin_max ? cfg->pin_max : cfg->l1_capacity / 2;
	if (!tm->transit_max) {
		tm->transit_max = cfg->l1_capacity / 4;
		if (tm->transit_max < (64u << 20))
			tm->transit_max = 64u << 20;
	}
	rc = kvt_lru_open(&tm->l1, cfg->l1_capacity);
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
	}
	pthread_mutex_init(&tm->ghost_mu, NULL);
	/* 64Ki keys each: a few MiB that cover far more blocks than fit. */
	rc = kvt_ghost_new(&tm->gone, 65536);
	if (!rc)
		rc = kvt_ghost_new(&tm->ram_ghost, 65536);
	if (rc)
		goto fail;
	tm->ram_capacity = cfg->l1_capacity + cfg->l2_capacity;
	if (cfg->l2_capacity) {
		rc = kvt_lru_open(&tm->l2, cfg->l2_capacity);
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
			.on_evict = l3_evicted,
			.evict_arg = tm,
		};
		rc = kvt_l3_open(&tm->l3, &lc);
		if (rc)
			goto fail;
	}
	if (tm->l2 || tm->l3) {
		rc = kvt_codec_ctx_new(&tm->wctx, cfg->l2_level ? cfg->l2_level
								: 1);
		if (rc)
			goto fail;
		tm->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (tm->efd < 0) {
			rc = -errno;
			goto fail;
		}
		pthread_mutex_init(&tm->mu, NULL);
		pthread_cond_init(&tm->cv, NULL);
		/*
		 * The worker must never take the process's signals: the
		 * daemon reads them from a signalfd on the loop thread.
		 */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		rc = -pthread_create(&tm->worker, NULL, worker_main, tm);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc)
			goto fail;
		tm->worker_running = true;
	}
	*out = tm;
	return 0;
fail:
	kvt_tm_close(tm);
	return rc;
}

static void free_queue(struct job *j)
{
	while (j) {
		struct job *next = j->next;
		job_free(j);
		j = next;
	}
}

void kvt_tm_close(struct kvt_tm *tm)
{
	if (!tm)
		return;
	if (tm->worker_running) {
		pthread_mutex_lock(&tm->mu);
		tm->quit = true;
		pthread_cond_signal(&tm->cv);
		pthread_mutex_unlock(&tm->mu);
		pthread_join(tm->worker, NULL);
		/* Waiters are not called: the daemon has closed its clients. */
		free_queue(tm->todo_head);
		free_queue(tm->done_head);
		pthread_mutex_destroy(&tm->mu);
		pthread_cond_destroy(&tm->cv);
	}
	for (size_t b = 0; b < TM_PIN_BUCKETS; b++)
		while (tm->pins[b]) {
			struct pin *p = tm->pins[b];
			tm->pins[b] = p->next;
			free(p);
		}
	kvt_lru_close(tm->l1);
	kvt_lru_close(tm->l2);
	kvt_l3_close(tm->l3);
	if (tm->gone) {
		kvt_ghost_free(tm->gone);
		pthread_mutex_destroy(&tm->ghost_mu);
	}
	kvt_ghost_free(tm->ram_ghost);
	kvt_codec_ctx_free(tm->wctx);
	if (tm->efd >= 0)
		close(tm->efd);
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
	forget_below(tm, k);
	struct kvt_lru_meta m = { .raw_len = blob->len, .ctime_s = now };
	rc = kvt_lru_put_meta(tm->l1, k, blob, expires_s, &m, NULL, l1_victim,
			      tm);
	if (rc == KVT_ENOSPACE)
		tm->rejected_too_big++;
	else if (rc == 0)
		reapply_pin(tm, k);
	return rc;
}

/*
 * Starts decompressing frame (an L2 entry, whose reference passes to the
 * job) for a get of k.  Returns kvt_tm_get()'s result.
 */
static int promo_frame(struct kvt_tm *tm, const struct kvt_key *k,
		       struct kvt_ref *frame, kvt_tm_get_cb cb, void *arg)
{
	struct job *p = promo_start(tm, JOB_FROM_L2, k, cb, arg);
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
	submit(tm, p);
	return 1;
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
			kvt_lru_ref_clear_flags(ref, TM_F_PREFETCHED);
		}
		cb(arg, 0, ref);
		return 0;
	}
	/* A block on its way down is still readable. */
	j = list_find(tm->transit, k);
	if (j && !expired(tm, j->expires) && j->src_codec == KVT_CODEC_RAW) {
		cb(arg, 0, kvt_lru_ref_acquire(j->src));
		return 0;
	}
	if (!j || expired(tm, j->expires)) {
		/* Someone already fetches it: wait for the same job. */
		struct job *p = list_find(tm->promos, k);
		if (p) {
			if (add_waiter(p, cb, arg)) {
				cb(arg, -ENOMEM, NULL);
				return 0;
			}
			return 1;
		}
		j = NULL;
	}
	/* An L2 frame on its way to L3: decompress that frame. */
	if (j)
		return promo_frame(tm, k, kvt_lru_ref_acquire(j->src), cb, arg);
	if (tm->l2 && kvt_lru_get(tm->l2, k, now, &ref) == 0)
		return promo_frame(tm, k, ref, cb, arg);

	/* A RAM miss.  Would RAM twice as big have kept it? */
	uint64_t left_at;
	if (kvt_ghost_get(tm->ram_ghost, kvt_key_hash(k), &left_at) &&
	    tm->ram_evicted - left_at < tm->ram_capacity)
		tm->ghost_hits_2x++;
	int l3_state = tm->l3 ? kvt_l3_state(tm->l3, k) : 0;
	if (l3_state == 1) {
		struct job *p = promo_start(tm, JOB_FROM_L3, k, cb, arg);

		if (!p) {
			cb(arg, -ENOMEM, NULL);
			return 0;
		}
		p->flags = TM_F_ON_L3;
		/* L3 keeps no history beyond its own hit count. */
		p->hits = 1;
		p->atime_s = tm->now_s();
		submit(tm, p);
		return 1;
	}
	tm->misses++;
	if (l3_state == 2 || kvt_lru_expired_count(tm->l1) != exp0 ||
	    (tm->l2 && kvt_lru_expired_count(tm->l2) != exp2))
		tm->misses_expired++;
	else if (was_gone(tm, k))
		tm->misses_evicted++;
	else
		tm->misses_never_seen++;
	cb(arg, KVT_ENOTFOUND, NULL);
	return 0;
}

static bool job_in_ns(const struct job *j, const uint8_t *ns, size_t ns_len)
{
	return j->k.ns_len == ns_len &&
	       (ns_len == 0 || memcmp(j->k.ns, ns, ns_len) == 0);
}

int kvt_tm_drop_ns(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len,
		   kvt_tm_count_cb cb, void *arg)
{
	uint64_t n;
	struct job *j;

	if (!cb)
		return KVT_EINVAL;
	if (!tm || (ns_len && !ns)) {
		cb(arg, KVT_EINVAL, 0);
		return 0;
	}
	n = kvt_lru_drop_ns(tm->l1, ns, ns_len);
	if (tm->l2)
		n += kvt_lru_drop_ns(tm->l2, ns, ns_len);
	/* Blocks of ns on their way anywhere must not land. */
	for (j = tm->transit; j; j = j->lnext)
		if (!j->stale && job_in_ns(j, ns, ns_len)) {
			j->stale = true;
			/* An L3 write is counted by the L3 drop behind it. */
			if (j->kind == JOB_TO_L2)
				n++;
		}
	for (j = tm->promos; j; j = j->lnext)
		if (job_in_ns(j, ns, ns_len))
			j->stale = true;
	if (!tm->l3) {
		cb(arg, 0, n);
		return 0;
	}
	/* Queued behind every write of ns already submitted, so it sees them. */
	struct kvt_key k = { ns, ns_len, NULL, 0 };
	j = job_new(JOB_L3_DROP, &k);
	if (!j) {
		cb(arg, -ENOMEM, n);
		return 0;
	}
	j->count_cb = cb;
	j->count_arg = arg;
	j->count = n;
	submit(tm, j);
	return 1;
}

/* ---- pins ---------------------------------------------------------------- */

static struct pin **pin_slot(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t h = kvt_key_hash(k);
	struct pin **pp = &tm->pins[h & (TM_PIN_BUCKETS - 1)];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->ns_len == k->ns_len && (*pp)->key_len == k->key_len &&
		    memcmp((*pp)->name, k->ns, k->ns_len) == 0 &&
		    memcmp((*pp)->name + k->ns_len, k->key, k->key_len) == 0)
			break;
	return pp;
}

/*
 * After k enters L1: a pinned key's new entry is pinned too, if the cap
 * allows (a key pinned while below L1 had no size to check until now).
 */
static void reapply_pin(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct kvt_ref *ref;
	uint64_t now;

	if (!tm->npins || !*pin_slot(tm, k))
		return;
	now = tm->now_s();
	if (kvt_lru_peek(tm->l1, k, now, &ref) != 0)
		return;
	if (kvt_lru_pinned_bytes(tm->l1) + kvt_lru_ref_cost(ref) >
	    tm->pin_cap) {
		tm->pins_rejected++;
	} else {
		kvt_lru_set_pinned(tm->l1, k, true, now);
	}
	kvt_ref_release(ref);
}

int kvt_tm_pin(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct pin **pp, *p;
	struct kvt_ref *ref;
	uint64_t now, cost = 0;
	int rc = 0;

	if (!tm || !k)
		return KVT_EINVAL;
	now = tm->now_s();
	pp = pin_slot(tm, k);
	if (*pp) {
		(*pp)->count++;
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
	p = malloc(sizeof(*p) + k->ns_len + k->key_len);
	if (!p)
		return -ENOMEM;
	p->count = 1;
	p->ns_len = k->ns_len;
	p->key_len = k->key_len;
	if (k->ns_len)
		memcpy(p->name, k->ns, k->ns_len);
	if (k->key_len)
		memcpy(p->name + k->ns_len, k->key, k->key_len);
	p->next = NULL;
	*pp = p;
	tm->npins++;
	if (rc == 0)
		kvt_lru_set_pinned(tm->l1, k, true, now);
	return rc;
}

int kvt_tm_unpin(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct pin **pp, *p;

	if (!tm || !k)
		return KVT_EINVAL;
	pp = pin_slot(tm, k);
	if (!*pp)
		return KVT_ENOTFOUND;
	if (--(*pp)->count > 0)
		return 0;
	p = *pp;
	*pp = p->next;
	free(p);
	tm->npins--;
	kvt_lru_set_pinned(tm->l1, k, false, tm->now_s());
	return 0;
}

/* ---- per-namespace stats ------------------------------------------------- */

struct ns_acc {
	struct kvt_tm *tm;
	struct kvt_tm_ns *v;
	size_t n, cap;
	int err;
};

static struct kvt_tm_ns *ns_slot(struct ns_acc *a, const uint8_t *ns,
				 size_t ns_len)
{
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].ns_len == ns_len &&
		    memcmp(a->v[i].ns, ns, ns_len) == 0)
			return &a->v[i];
	if (a->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 16;
		struct kvt_tm_ns *nv = realloc(a->v, nc * sizeof(*nv));
		if (!nv) {
			a->err = -ENOMEM;
			return NULL;
		}
		a->v = nv;
		a->cap = nc;
	}
	memset(&a->v[a->n], 0, sizeof(a->v[a->n]));
	memcpy(a->v[a->n].ns, ns, ns_len);
	a->v[a->n].ns_len = ns_len;
	return &a->v[a->n++];
}

static void ns_ram(void *arg, const struct kvt_ref *e)
{
	struct ns_acc *a = arg;
	struct kvt_lru_meta m;
	struct kvt_key k;
	struct kvt_tm_ns *t;

	if (a->err)
		return;
	kvt_lru_ref_key(e, &k);
	kvt_lru_ref_meta(e, &m);
	t = ns_slot(a, k.ns, k.ns_len);
	if (!t)
		return;
	t->entries++;
	t->bytes += m.raw_len;
	t->hits += m.hits;
}

static int ns_l3(void *arg, const struct kvt_key *k, uint64_t raw_len,
		 uint64_t hits)
{
	struct ns_acc *a = arg;
	struct kvt_tm_ns *t;
	uint64_t now = a->tm->now_s();

	/* Inclusive L3: a block also in RAM is counted there. */
	if (kvt_lru_exists(a->tm->l1, k, now) ||
	    (a->tm->l2 && kvt_lru_exists(a->tm->l2, k, now)))
		return 0;
	t = ns_slot(a, k->ns, k->ns_len);
	if (!t)
		return a->err;
	t->entries++;
	t->bytes += raw_len;
	t->hits += hits;
	return 0;
}

static int ns_cmp(const void *x, const void *y)
{
	const struct kvt_tm_ns *a = x, *b = y;

	return a->bytes < b->bytes ? 1 : a->bytes > b->bytes ? -1 : 0;
}

int kvt_tm_ns_stats(struct kvt_tm *tm, struct kvt_tm_ns **out, size_t *n)
{
	struct ns_acc a = { .tm = tm };

	if (!tm || !out || !n)
		return KVT_EINVAL;
	kvt_lru_foreach(tm->l1, ns_ram, &a);
	if (tm->l2 && !a.err)
		kvt_lru_foreach(tm->l2, ns_ram, &a);
	if (tm->l3 && !a.err)
		kvt_l3_foreach(tm->l3, ns_l3, &a);
	if (a.err) {
		free(a.v);
		return a.err;
	}
	if (a.n)
		qsort(a.v, a.n, sizeof(*a.v), ns_cmp);
	*out = a.v;
	*n = a.n;
	return 0;
}

/* ---- hot ----------------------------------------------------------------- */

struct hot_acc {
	struct kvt_tm *tm;
	struct kvt_tm_hot *v;
	size_t n, cap;
	uint8_t tier;
	int err;
};

static int hot_add(struct hot_acc *a, const struct kvt_key *k, uint64_t size,
		   uint64_t hits, uint64_t ctime_s, uint64_t atime_s)
{
	struct kvt_tm_hot *h;

	if (a->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 256;
		struct kvt_tm_hot *nv = realloc(a->v, nc * sizeof(*nv));
		if (!nv)
			return a->err = -ENOMEM;
		a->v = nv;
		a->cap = nc;
	}
	h = &a->v[a->n];
	h->name = malloc(k->ns_len + k->key_len + 1);
	if (!h->name)
		return a->err = -ENOMEM;
	if (k->ns_len)
		memcpy(h->name, k->ns, k->ns_len);
	if (k->key_len)
		memcpy(h->name + k->ns_len, k->key, k->key_len);
	h->ns_len = k->ns_len;
	h->key_len = k->key_len;
	h->tier = a->tier;
	h->size = size;
	h->hits = hits;
	h->ctime_s = ctime_s;
	h->atime_s = atime_s;
	a->n++;
	return 0;
}

static void hot_ram(void *arg, const struct kvt_ref *e)
{
	struct hot_acc *a = arg;
	struct kvt_lru_meta m;
	struct kvt_key k;

	if (a->err || expired(a->tm, kvt_lru_ref_expires(e)))
		return;
	kvt_lru_ref_meta(e, &m);
	kvt_lru_ref_key(e, &k);
	hot_add(a, &k, m.raw_len, m.hits, m.ctime_s, m.atime_s);
}

static int hot_l3(void *arg, const struct kvt_key *k, uint64_t raw_len,
		  uint64_t hits)
{
	struct hot_acc *a = arg;
	uint64_t now = a->tm->now_s();

	/* L3 is inclusive: a block also in RAM was listed there. */
	if (kvt_lru_exists(a->tm->l1, k, now) ||
	    (a->tm->l2 && kvt_lru_exists(a->tm->l2, k, now)))
		return 0;
	return hot_add(a, k, raw_len, hits, 0, 0);
}

static int hot_cmp(const void *x, const void *y)
{
	const struct kvt_tm_hot *a = x, *b = y;

	if (a->hits != b->hits)
		return a->hits < b->hits ? 1 : -1;
	if (a->atime_s != b->atime_s)
		return a->atime_s < b->atime_s ? 1 : -1;
	return (int)a->tier - (int)b->tier;
}

uint64_t kvt_tm_now_s(struct kvt_tm *tm)
{
	return tm ? tm->now_s() : 0;
}

void kvt_tm_hot_free(struct kvt_tm_hot *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].name);
	free(v);
}

int kvt_tm_hot(struct kvt_tm *tm, size_t top, struct kvt_tm_hot **out,
	       size_t *n)
{
	struct hot_acc a = { .tm = tm };

	if (!tm || !out || !n)
		return KVT_EINVAL;
	*out = NULL;
	*n = 0;
	a.tier = 1;
	kvt_lru_foreach(tm->l1, hot_ram, &a);
	if (tm->l2 && !a.err) {
		a.tier = 2;
		kvt_lru_foreach(tm->l2, hot_ram, &a);
	}
	if (tm->l3 && !a.err) {
		a.tier = 3;
		kvt_l3_foreach(tm->l3, hot_l3, &a);
	}
	if (a.err) {
		kvt_tm_hot_free(a.v, a.n);
		return a.err;
	}
	if (a.n)
		qsort(a.v, a.n, sizeof(*a.v), hot_cmp);
	for (size_t i = top; i < a.n; i++)
		free(a.v[i].name);
	*out = a.v;
	*n = a.n < top ? a.n : top;
	return 0;
}

/* A prefetch waits for nobody: its "get" just lets the reference go. */
static void prefetch_done(void *arg, int status, struct kvt_ref *ref)
{
	(void)arg;
	(void)status;
	kvt_ref_release(ref);
}

int kvt_tm_prefetch(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct kvt_ref *ref = NULL;
	struct job *p;
	uint64_t now;

	if (!tm || !k)
		return KVT_EINVAL;
	now = tm->now_s();
	/* Already in RAM, or already on its way up: nothing to do. */
	if (kvt_lru_exists(tm->l1, k, now) || list_find(tm->promos, k) ||
	    list_find(tm->transit, k))
		return 0;
	if (tm->l2 && kvt_lru_peek(tm->l2, k, now, &ref) == 0) {
		/* Not a client's read: peek, so no hit is counted. */
		promo_frame(tm, k, ref, prefetch_done, NULL);
	} else if (tm->l3 && kvt_l3_contains(tm->l3, k)) {
		p = promo_start(tm, JOB_FROM_L3, k, prefetch_done, NULL);
		if (!p)
			return -ENOMEM;
		p->flags = TM_F_ON_L3;
		p->atime_s = now;
		submit(tm, p);
	} else {
		return 0;
	}
	p = list_find(tm->promos, k);
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
	found |= forget_below(tm, k);
	return found ? 0 : KVT_ENOTFOUND;
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
	j = list_find(tm->transit, k);
	if (j && !expired(tm, j->expires))
		return 1;
	if (list_find(tm->promos, k))
		return 1;
	if (tm->l2 && kvt_lru_exists(tm->l2, k, now))
		return 1;
	return tm->l3 && kvt_l3_contains(tm->l3, k);
}

int kvt_tm_spill(struct kvt_tm *tm, unsigned timeout_ms)
{
	struct timespec t0, t;
	struct kvt_ref *v;
	int n = 0;

	if (!tm || !tm->l3)
		return KVT_EINVAL;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		while (kvt_lru_evict_one(tm->l1, &v) == 0) {
			demote(tm, v, true, true);
			n++;
		}
		while (tm->l2 && kvt_lru_evict_one(tm->l2, &v) == 0) {
			demote(tm, v, true, true);
			n++;
		}
		if (tm->jobs_pending == 0)
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
	return n;
}

int kvt_tm_check(struct kvt_tm *tm, FILE *report)
{
	if (!tm || !tm->l3)
		return KVT_EINVAL;
	return kvt_l3_check(tm->l3, report);
}

void kvt_tm_stats(struct kvt_tm *tm, struct kvt_tm_stats *st)
{
	struct kvt_lru_stats s;

	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!tm)
		return;
	kvt_lru_stats(tm->l1, &s);
	st->l1.entries = s.entries;
	st->l1.bytes = s.bytes;
	st->l1.raw_bytes = s.raw_bytes;
	st->l1.capacity_bytes = s.capacity;
	st->l1.hits = s.hits;
	if (tm->l2) {
		kvt_lru_stats(tm->l2, &s);
		st->l2.entries = s.entries;
		st->l2.bytes = s.bytes;
		st->l2.raw_bytes = s.raw_bytes;
		st->l2.capacity_bytes = s.capacity;
		st->l2.hits = s.hits;
	}
	if (tm->l3) {
		struct kvt_l3_stats l3;

		kvt_l3_stats(tm->l3, &l3);
		st->l3.entries = l3.entries;
		st->l3.bytes = l3.bytes;
		st->l3.raw_bytes = l3.raw_bytes;
		st->l3.capacity_bytes = l3.capacity_bytes;
		st->l3.hits = l3.hits;
		st->l3_bytes_read = l3.bytes_read;
		st->l3_bytes_written = l3.bytes_written;
		st->l3_reads_inflight = l3.reads_inflight;
		st->l3_checksum_failures = l3.checksum_failures;
		st->l3_regions_reclaimed = l3.regions_reclaimed;
		st->l3_write_errors = l3.write_errors;
	}
	st->gets = tm->gets;
	st->puts = tm->puts;
	st->dels = tm->dels;
	st->misses = tm->misses;
	st->promotions = tm->promotions;
	st->demotions = tm->demotions;
	st->evictions = tm->evictions;
	st->rejected_too_big = tm->rejected_too_big;
	st->demotions_dropped = tm->demotions_dropped;
	st->l3_admission_rejected = tm->l3_admission_rejected;
	st->pinned_bytes = kvt_lru_pinned_bytes(tm->l1);
	st->pinned_keys = tm->npins;
	st->pins_rejected = tm->pins_rejected;
	st->misses_never_seen = tm->misses_never_seen;
	st->misses_expired = tm->misses_expired;
	st->misses_evicted = tm->misses_evicted;
	st->misses_corrupt = tm->misses_corrupt;
	st->misses_raced = tm->misses_raced;
	st->ghost_hits_2x = tm->ghost_hits_2x;
	st->prefetched = tm->prefetched;
	st->prefetch_hits = tm->prefetch_hits;
	st->transit_bytes = tm->transit_bytes;
	st->jobs_pending = tm->jobs_pending;
}
