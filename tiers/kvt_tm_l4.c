/*
 * kvt_tm_l4.c - the tier manager's L4 (kvt_tm_int.h): a Redis Cluster that
 * every host's manager shares (kvt_l4.h is its manual).
 *
 * Reads.  A get that L1, L2 and L3 cannot serve becomes a promotion like
 * an L3 read (JOB_L4_GET on the promos set, later gets of the key wait for
 * it), fetched by an L4 thread and decompressed by a CPU worker, then
 * admitted to L1 or served once by the same rule as any block read from
 * below (kvt_tm_move.c).  The gets of one dispatch are staged and
 * submitted together when the loop next calls kvt_tm_dispatch() (a write
 * to the pool's eventfd makes sure it does at once), so that an MGET's
 * misses reach the cluster as a few batches, one kvt_l4_get_batch() per
 * L4 thread, instead of one round trip each.  Any L4 failure is a miss.
 *
 * Writes.  In evict mode L4 gets the blocks that leave this host with no
 * copy below: L3's victims (kvt_l3_config.on_reclaim, read back from the
 * region about to be reused), or L2's (L1's) victims when there is no
 * tier below them; in put mode every put, compressed on a CPU worker.
 * Writes wait in a queue bounded in bytes (qmax); past it they are dropped
 * and counted, so that no L4 write ever holds a client back.
 *
 * Order.  Writes, deletes and drops run in the serial L4 write lane in the
 * order the loop submitted them.  While one of them is queued for a key
 * (or a drop for its namespace), L4's copy may be older than the truth,
 * so gets and MATCH do not read it (`pend`, `pend_drop`: O(1) counting
 * sets, as for L3).  An L3 victim comes back to the loop before it is
 * queued: it is written only if RAM does not hold the key (the block there
 * is the same or newer, and goes down again in its time) and no delete or
 * drop of it is queued for L3 or L4 -- the loop sees such a victim before
 * the results of any delete, drop or put submitted after the reclaim (one
 * done list, in order), so a victim that a later change made stale is
 * always recognised.
 *
 * Drops between hosts.  A DROP increments the namespace's generation in
 * the cluster (kvt_l4_drop_batch): every block of it is stale for every
 * host at once.  Other hosts keep local copies, so the L4 threads poll the
 * generations of the namespaces this host holds (about once a second,
 * kvt_l4_poll_gens()), and a namespace whose generation changed is
 * dropped here too, locally only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvt_mem.h"
#include "kvt_tm_int.h"

#define TM_L4_THREADS_DEFAULT 4
/* Most gets staged before they are submitted without waiting for the
 * dispatch (a read lane run takes at most this many). */
#define TM_L4_STAGE_MAX 64

static void set_err(const struct kvt_tm_config *cfg, const char *msg)
{
	if (cfg->errmsg && cfg->errmsg_len)
		snprintf(cfg->errmsg, cfg->errmsg_len, "%s", msg);
}

int kvt_tmi_l4_open(struct kvt_tm *tm, const struct kvt_tm_config *cfg)
{
	struct tm_l4 *x;
	int rc;

	if (!cfg->l4_url)
		return 0;
	if (cfg->l4_threads > KVT_TM_L4_THREADS_MAX) {
		set_err(cfg, "too many L4 threads (at most 16)");
		return KVT_EINVAL;
	}
	if (cfg->l4_write != KVT_TM_L4_EVICT && cfg->l4_write != KVT_TM_L4_PUT) {
		set_err(cfg, "L4 write policy must be evict or put");
		return KVT_EINVAL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	tm->l4 = x; /* kvt_tmi_l4_close() undoes what follows */
	struct kvt_l4_config lc = {
		.url = cfg->l4_url,
		.password = cfg->l4_password,
		.password_file = cfg->l4_password_file,
		.ttl_s = cfg->l4_ttl_s,
		.connect_timeout_ms = cfg->l4_connect_timeout_ms,
		.timeout_ms = cfg->l4_timeout_ms,
		.errmsg = cfg->errmsg,
		.errmsg_len = cfg->errmsg_len,
	};
	rc = kvt_tmi_hcount_init(&x->pend);
	if (!rc)
		rc = kvt_tmi_hcount_init(&x->pend_drop);
	if (!rc)
		rc = kvt_tmi_hcount_init(&x->watched);
	if (!rc)
		rc = kvt_l4_open(&x->l4, &lc);
	if (rc)
		return rc;
	x->write = cfg->l4_write;
	x->ttl_s = cfg->l4_ttl_s;
	x->value_max = cfg->value_max;
	x->qmax = cfg->l4_queue_max ? cfg->l4_queue_max : TM_L4_QUEUE_DEFAULT;
	x->nthreads = cfg->l4_threads ? cfg->l4_threads : TM_L4_THREADS_DEFAULT;
	atomic_init(&x->ready, 0);
	atomic_init(&x->ready_rc, 0);
	atomic_init(&x->qbytes, 0);
	atomic_init(&x->too_big, 0);
	atomic_init(&x->dropped_w, 0);
	return 0;
}

void kvt_tmi_l4_close(struct kvt_tm *tm)
{
	struct tm_l4 *x = tm->l4;

	if (!x)
		return;
	/* Staged gets never reached the pool; their waiters are gone. */
	while (x->staged) {
		struct job *j = x->staged;

		x->staged = j->next;
		kvt_tmi_job_free(j);
	}
	kvt_tmi_hcount_free(&x->pend);
	kvt_tmi_hcount_free(&x->pend_drop);
	kvt_tmi_hcount_free(&x->watched);
	kvt_l4_close(x->l4);
	free(x);
	tm->l4 = NULL;
}

void kvt_tmi_l4_job_free(struct tm_l4_job *x)
{
	if (!x)
		return;
	kvt_l4_block_release(&x->blk);
	free(x->names);
	free(x);
}

/* ---- the loop's side ------------------------------------------------------ */

/* True if L4's copy of k may be older than the truth (see Order above). */
static bool l4_pending(const struct kvt_tm *tm, const struct kvt_key *k)
{
	return kvt_tmi_hcount_has(&tm->l4->pend, kvt_key_hash(k)) ||
	       kvt_tmi_hcount_has(&tm->l4->pend_drop, tm_ns_hash(k));
}

/* Seconds left of a block expiring at expires (0: none); 0 with *dead set
 * when it has expired. */
static uint32_t ttl_left(const struct kvt_tm *tm, uint64_t expires,
			 bool *dead)
{
	uint64_t now = tm->now_s();

	*dead = false;
	if (!expires)
		return 0;
	if (now >= expires) {
		*dead = true;
		return 0;
	}
	return expires - now > UINT32_MAX ? UINT32_MAX
					  : (uint32_t)(expires - now);
}

/* Wakes the loop so that kvt_tm_dispatch() runs (and flushes). */
static void wake_loop(struct kvt_tm *tm)
{
	uint64_t one = 1;

	if (write(tm->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, still readable. */
	}
}

bool kvt_tmi_l4_get(struct kvt_tm *tm, const struct kvt_key *k,
		    tm_ref_fn cb, void *arg)
{
	struct tm_l4 *x = tm->l4;
	struct job *j;

	if (!x || l4_pending(tm, k))
		return false;
	j = kvt_tmi_promo_start(tm, JOB_L4_GET, k, cb, arg);
	if (!j)
		return false;
	j->l4 = calloc(1, sizeof(*j->l4));
	if (!j->l4) {
		kvt_tmi_jobset_remove(&tm->promos, j);
		kvt_tmi_job_free(j);
		return false;
	}
	j->atime_s = tm->now_s();
	/*
	 * L4's header keeps no expiry: a fetched block lives here at most
	 * as long as L4 keeps blocks.
	 */
	if (x->ttl_s)
		j->expires = j->atime_s + x->ttl_s;
	x->gets++;
	j->next = NULL;
	if (x->staged_tail)
		x->staged_tail->next = j;
	else
		x->staged = j;
	x->staged_tail = j;
	if (x->nstaged++ == 0)
		wake_loop(tm);
	if (x->nstaged >= TM_L4_STAGE_MAX)
		kvt_tmi_l4_flush(tm);
	return true;
}

void kvt_tmi_l4_flush(struct kvt_tm *tm)
{
	struct tm_l4 *x = tm->l4;

	if (!x || !x->staged)
		return;
	kvt_tmi_submit_list(tm, x->staged);
	x->staged = x->staged_tail = NULL;
	x->nstaged = 0;
}

int kvt_tmi_l4_match(struct kvt_tm *tm, const struct kvt_key *keys,
		     size_t n, size_t from, const uint8_t *local,
		     kvt_tm_count_cb cb, void *arg)
{
	size_t m = n - from, bytes = 0;
	struct kvt_key ns = { keys[from].ns, keys[from].ns_len, NULL, 0 };
	struct tm_l4_job *x;
	struct job *j;
	uint8_t *p;

	for (size_t i = from; i < n; i++)
		bytes += keys[i].ns_len + keys[i].key_len;
	j = kvt_tmi_job_new(JOB_L4_PROBE, &ns);
	x = calloc(1, sizeof(*x) + m * (sizeof(struct kvt_key) + sizeof(int) +
					1) + bytes);
	if (!j || !x) {
		free(j);
		free(x);
		cb(arg, 0, from); /* no memory to ask L4: what is here */
		return 0;
	}
	j->l4 = x;
	x->nkeys = m;
	x->keys = (struct kvt_key *)x->buf;
	x->status = (int *)(x->keys + m);
	p = (uint8_t *)(x->status + m);
	memcpy(p, local + from, m);
	p += m;
	for (size_t i = 0; i < m; i++) {
		const struct kvt_key *k = &keys[from + i];

		memcpy(p, k->ns, k->ns_len);
		x->keys[i].ns = p;
		x->keys[i].ns_len = k->ns_len;
		p += k->ns_len;
		memcpy(p, k->key, k->key_len);
		x->keys[i].key = p;
		x->keys[i].key_len = k->key_len;
		p += k->key_len;
	}
	j->count = from;
	j->count_cb = cb;
	j->count_arg = arg;
	tm->l4->probes += m;
	kvt_tmi_submit(tm, j);
	return 1;
}

/* The local flags of a probe: after its keys and statuses. */
static const uint8_t *probe_local(const struct tm_l4_job *x)
{
	return (const uint8_t *)(x->status + x->nkeys);
}

/*
 * Queues a delete of k's L4 copy.  Without memory for it, k is kept in
 * `pend` for as long as this process runs: L4's copy is never trusted.
 */
static void queue_del(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct tm_l4 *x = tm->l4;
	struct job *j = kvt_tmi_job_new(JOB_L4_DEL, k);

	if (kvt_tmi_hcount_add(&x->pend, kvt_key_hash(k))) {
		kvt_tmi_job_free(j);
		return; /* no memory for the mark either: best effort */
	}
	if (!j)
		return;
	kvt_tmi_submit(tm, j);
}

/*
 * Queues block src (a reference of its own is taken: raw, or a frame of
 * codec `codec`) as an L4 put of k, if the queue has room.  Returns true
 * if it did.
 */
static bool queue_put(struct kvt_tm *tm, const struct kvt_key *k,
		      struct kvt_ref *src, uint8_t codec, uint64_t raw_len,
		      uint64_t expires)
{
	struct tm_l4 *x = tm->l4;
	uint64_t cost = kvt_ref_len(src);
	uint32_t ttl;
	bool dead;
	struct job *j;

	ttl = ttl_left(tm, expires, &dead);
	if (dead)
		return true; /* nothing to keep */
	if (atomic_load(&x->qbytes) + cost > x->qmax) {
		x->puts_dropped++;
		return false;
	}
	j = kvt_tmi_job_new(JOB_L4_PUT, k);
	if (j)
		j->l4 = calloc(1, sizeof(*j->l4));
	if (!j || !j->l4 || kvt_tmi_hcount_add(&x->pend, j->hash)) {
		kvt_tmi_job_free(j);
		x->puts_dropped++;
		return false;
	}
	j->src = kvt_lru_ref_acquire(src);
	j->src_codec = codec;
	j->raw_len = raw_len;
	j->dtype = kvt_ref_dtype(src);
	j->expires = expires;
	j->cost = cost;
	j->l4->ttl_s = ttl;
	atomic_fetch_add(&x->qbytes, cost);
	kvt_tmi_submit(tm, j);
	return true;
}

void kvt_tmi_l4_put(struct kvt_tm *tm, const struct kvt_key *k,
		    struct kvt_ref *ref)
{
	struct tm_l4 *x = tm->l4;
	struct kvt_lru_meta m;

	if (!x || x->write != KVT_TM_L4_PUT)
		return;
	kvt_lru_ref_meta(ref, &m);
	/*
	 * Every put overwrites L4's copy.  One that cannot be queued deletes
	 * it instead (a delete is small), so that L4 never keeps a value
	 * older than this one.
	 */
	if (!queue_put(tm, k, ref, KVT_CODEC_RAW, m.raw_len,
		       kvt_lru_ref_expires(ref)))
		queue_del(tm, k);
}

void kvt_tmi_l4_watch(struct kvt_tm *tm, const struct kvt_key *k)
{
	struct tm_l4 *x = tm->l4;
	uint64_t h = tm_ns_hash(k);

	/* kvt_l4_watch() does no I/O (a table under L4's lock): once per
	 * namespace is enough, later gets and puts keep it fresh. */
	if (kvt_tmi_hcount_has(&x->watched, h))
		return;
	if (kvt_l4_watch(x->l4, k->ns, k->ns_len) == 0)
		kvt_tmi_hcount_add(&x->watched, h);
}

void kvt_tmi_l4_del(struct kvt_tm *tm, const struct kvt_key *k)
{
	if (tm->l4)
		queue_del(tm, k);
}

void kvt_tmi_l4_drop(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len)
{
	struct tm_l4 *x = tm->l4;
	struct kvt_key k = { ns, ns_len, NULL, 0 };
	struct job *j;

	if (!x)
		return;
	/* Until it is applied, no get of ns reads L4 (and without memory
	 * for the job, none ever does). */
	if (kvt_tmi_hcount_add(&x->pend_drop, tm_ns_hash(&k)))
		return;
	j = kvt_tmi_job_new(JOB_L4_DROP, &k);
	if (j)
		kvt_tmi_submit(tm, j);
}

bool kvt_tmi_l4_evicted(struct kvt_tm *tm, struct kvt_ref *v)
{
	struct tm_l4 *x = tm->l4;
	struct kvt_lru_meta m;
	struct kvt_key k;

	if (!x || x->write != KVT_TM_L4_EVICT)
		return false;
	kvt_lru_ref_meta(v, &m);
	kvt_lru_ref_key(v, &k);
	return queue_put(tm, &k, v, m.codec, m.raw_len,
			 kvt_lru_ref_expires(v));
}

/*
 * True if RAM holds k (or k is on its way to L2), so that an L3 victim of
 * k need not go to L4 now: the block here is the same or newer, and is
 * offered again when it leaves.  A write of k to L3 still in transit does
 * not count: with no L3 delete of k pending it is the very block being
 * reclaimed (a batch larger than L3 wraps onto what it wrote).
 */
static bool cached_here(struct kvt_tm *tm, const struct kvt_key *k)
{
	uint64_t now = tm->now_s();
	struct job *t;

	if (kvt_lru_exists(tm->l1, k, now) ||
	    (tm->l2 && kvt_lru_exists(tm->l2, k, now)))
		return true;
	t = kvt_tmi_jobset_find(&tm->transit, k);
	return t && t->kind != JOB_TO_L3;
}

/*
 * An L3 victim posted by the writer: queued for L4 unless it is stale or
 * redundant (Order above).  Returns true if the job was queued (kept).
 */
static bool reclaimed_arrived(struct kvt_tm *tm, struct job *j)
{
	struct tm_l4 *x = tm->l4;
	bool dead;

	j->from_pool = false;
	j->l4->ttl_s = ttl_left(tm, j->expires, &dead);
	if (dead || kvt_tmi_l3_pending(tm, &j->k) || l4_pending(tm, &j->k) ||
	    cached_here(tm, &j->k) ||
	    kvt_tmi_hcount_add(&x->pend, j->hash)) {
		x->puts_skipped++;
		atomic_fetch_sub(&x->qbytes, j->cost);
		return false;
	}
	kvt_tmi_submit(tm, j);
	return true;
}

/* A peer's drop applied here (local tiers only); nobody waits for it. */
static void remote_dropped(void *arg, int status, uint64_t count)
{
	(void)arg;
	(void)status;
	(void)count;
}

bool kvt_tmi_l4_done(struct kvt_tm *tm, struct job *j)
{
	struct tm_l4 *x = tm->l4;

	switch (j->kind) {
	case JOB_L4_PUT:
		if (j->from_pool)
			return reclaimed_arrived(tm, j);
		kvt_tmi_hcount_del(&x->pend, j->hash);
		atomic_fetch_sub(&x->qbytes, j->cost);
		/* Put mode: the frame made for L4 can be L2's too. */
		if (j->status == 0 && j->out && j->src &&
		    j->src_codec == KVT_CODEC_RAW)
			kvt_tmi_keep_frame(tm, j);
		break;
	case JOB_L4_DEL:
		kvt_tmi_hcount_del(&x->pend, j->hash);
		break;
	case JOB_L4_DROP:
		kvt_tmi_hcount_del(&x->pend_drop, tm_ns_hash(&j->k));
		break;
	case JOB_L4_PROBE: {
		const struct tm_l4_job *p = j->l4;
		const uint8_t *local = probe_local(p);
		uint64_t count = j->count;

		for (size_t i = 0; i < p->nkeys; i++) {
			bool in_l4 = p->status[i] == 0 &&
				     !l4_pending(tm, &p->keys[i]);

			if (!local[i] && !in_l4)
				break;
			x->probes_found += in_l4;
			count++;
		}
		j->count_cb(j->count_arg, 0, count);
		break;
	}
	case JOB_L4_GENS: {
		const uint8_t *p = j->l4->names, *end = p + j->l4->names_len;

		while (p < end) {
			size_t len = *p++;

			kvt_tmi_drop_ns(tm, p, len, remote_dropped, NULL,
					false);
			x->remote_drops++;
			p += len;
		}
		break;
	}
	default:
		break;
	}
	return false;
}

/* ---- the L3 writer's side ------------------------------------------------- */

int kvt_tmi_l4_reclaimed(void *arg, const struct kvt_l3_reclaimed *b)
{
	struct kvt_tm *tm = arg;
	struct tm_l4 *x = tm->l4;
	struct job *j;

	if (!x || x->write != KVT_TM_L4_EVICT)
		return 1;
	if (atomic_load(&x->qbytes) + b->len > x->qmax) {
		atomic_fetch_add(&x->dropped_w, 1);
		return 1;
	}
	j = kvt_tmi_job_new(JOB_L4_PUT, &b->k);
	if (j) {
		j->l4 = calloc(1, sizeof(*j->l4));
		j->out = malloc(b->len ? b->len : 1);
	}
	if (!j || !j->l4 || !j->out) {
		kvt_tmi_job_free(j);
		atomic_fetch_add(&x->dropped_w, 1);
		return 1;
	}
	memcpy(j->out, b->data, b->len);
	j->out_len = b->len;
	j->out_codec = b->codec;
	j->compressed = true;
	j->raw_len = b->raw_len;
	j->dtype = b->dtype;
	j->expires = b->expiry;
	j->cost = b->len;
	atomic_fetch_add(&x->qbytes, j->cost);
	kvt_tmi_pool_post(tm, j);
	return 0;
}

/* ---- the L4 threads' side --------------------------------------------- */

static int watch_l3_ns(void *arg, const struct kvt_l3_ns_stats *ns)
{
	kvt_l4_watch(arg, ns->ns, ns->ns_len);
	return 0;
}

void kvt_tmi_l4_thread_start(struct tm_worker *w)
{
	struct kvt_tm *tm = w->tm;
	struct tm_l4 *x = tm->l4;

	if (w != &x->threads[0])
		return;
	/* What L3 kept over a restart is watched too: a peer may drop it. */
	if (tm->l3)
		kvt_l3_ns_foreach(tm->l3, watch_l3_ns, x->l4);
	atomic_store(&x->ready_rc, kvt_l4_refresh(w->l4s));
	atomic_store(&x->ready, 1);
}

static void get_run(struct tm_worker *w, struct job **run, size_t n)
{
	struct tm_l4 *x = w->tm->l4;
	struct kvt_key keys[TM_L4_BATCH] = { { 0 } };
	struct kvt_l4_block out[TM_L4_BATCH];
	int rc;

	for (size_t i = 0; i < n; i++)
		keys[i] = run[i]->k;
	rc = kvt_l4_get_batch(w->l4s, keys, n, out);
	for (size_t i = 0; i < n; i++) {
		struct job *j = run[i];

		/* Errors are L4's to count; for the get, a miss. */
		j->status = KVT_ENOTFOUND;
		if (rc || out[i].status)
			continue;
		if (x->value_max && out[i].raw_len > x->value_max) {
			atomic_fetch_add(&x->too_big, 1);
			kvt_l4_block_release(&out[i]);
			continue;
		}
		j->status = 0;
		j->raw_len = out[i].raw_len;
		j->dtype = out[i].dtype;
		j->l4->blk = out[i]; /* its memory goes with the job */
	}
}

static void put_run(struct tm_worker *w, struct job **run, size_t n)
{
	struct kvt_l4_put items[TM_L4_BATCH];
	struct job *back[TM_L4_BATCH];
	int status[TM_L4_BATCH];
	size_t m = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		struct job *j = run[i];

		if (j->status) /* its compression failed */
			continue;
		items[m].k = j->k;
		items[m].data = j->out ? j->out : kvt_ref_data(j->src);
		items[m].len = j->out ? j->out_len : kvt_ref_len(j->src);
		items[m].codec = j->out ? j->out_codec : j->src_codec;
		items[m].dtype = j->dtype;
		items[m].raw_len = j->raw_len;
		items[m].ttl_s = j->l4->ttl_s;
		back[m++] = j;
	}
	rc = m ? kvt_l4_put_batch(w->l4s, items, m, status) : 0;
	for (size_t i = 0; i < m; i++)
		back[i]->status = rc ? rc : status[i];
}

static void del_run(struct tm_worker *w, struct job **run, size_t n)
{
	struct kvt_key keys[TM_L4_BATCH] = { { 0 } };
	int status[TM_L4_BATCH];
	int rc;

	for (size_t i = 0; i < n; i++)
		keys[i] = run[i]->k;
	rc = kvt_l4_del_batch(w->l4s, keys, n, status);
	for (size_t i = 0; i < n; i++)
		run[i]->status = rc ? rc : status[i];
}

static void drop_run(struct tm_worker *w, struct job **run, size_t n)
{
	struct kvt_l4_ns ns[TM_L4_BATCH] = { { 0 } };
	int status[TM_L4_BATCH];
	int rc;

	for (size_t i = 0; i < n; i++)
		ns[i] = (struct kvt_l4_ns){ run[i]->k.ns, run[i]->k.ns_len };
	rc = kvt_l4_drop_batch(w->l4s, ns, n, NULL, status);
	for (size_t i = 0; i < n; i++)
		run[i]->status = rc ? rc : status[i];
}

void kvt_tmi_l4_run(struct tm_worker *w, enum tm_lane l, struct job **run,
		    size_t n)
{
	struct tm_l4_job *x;
	int rc;

	(void)l;
	switch (run[0]->kind) {
	case JOB_L4_GET:
		get_run(w, run, n);
		break;
	case JOB_L4_PROBE:
		x = run[0]->l4;
		rc = kvt_l4_probe_batch(w->l4s, x->keys, x->nkeys, x->status);
		for (size_t i = 0; rc && i < x->nkeys; i++)
			x->status[i] = rc;
		break;
	case JOB_L4_PUT:
		put_run(w, run, n);
		break;
	case JOB_L4_DEL:
		del_run(w, run, n);
		break;
	case JOB_L4_DROP:
		drop_run(w, run, n);
		break;
	default:
		break;
	}
}

/* What a poll found changed: u8 length and bytes of each namespace. */
struct gens_acc {
	uint8_t *buf;
	size_t len, cap;
	bool failed;
};

static void on_gen(void *arg, const uint8_t *ns, size_t ns_len,
		   uint64_t old_gen, uint64_t new_gen)
{
	struct gens_acc *a = arg;

	(void)old_gen;
	(void)new_gen;
	if (a->failed || ns_len > KVT_L4_NS_MAX)
		return;
	if (a->len + 1 + ns_len > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 1024;
		uint8_t *p;

		while (cap < a->len + 1 + ns_len)
			cap *= 2;
		p = realloc(a->buf, cap);
		if (!p) {
			a->failed = true;
			return;
		}
		a->buf = p;
		a->cap = cap;
	}
	a->buf[a->len++] = (uint8_t)ns_len;
	memcpy(a->buf + a->len, ns, ns_len);
	a->len += ns_len;
}

struct job *kvt_tmi_l4_poll(struct tm_worker *w)
{
	struct gens_acc a = { 0 };
	struct kvt_key none = { NULL, 0, NULL, 0 };
	struct job *j;

	kvt_l4_poll_gens(w->l4s, on_gen, &a);
	if (a.len == 0) {
		free(a.buf);
		return NULL;
	}
	j = kvt_tmi_job_new(JOB_L4_GENS, &none);
	if (j)
		j->l4 = calloc(1, sizeof(*j->l4));
	if (!j || !j->l4) {
		/* The changes are reported once: this host misses them. */
		kvt_tmi_job_free(j);
		free(a.buf);
		return NULL;
	}
	j->l4->names = a.buf;
	j->l4->names_len = a.len;
	return j;
}

/* ---- counters ------------------------------------------------------------- */

unsigned kvt_tmi_l4_jobs(const struct kvt_tm *tm)
{
	return tm->l4 ? tm->l4->jobs : 0;
}

void kvt_tmi_l4_stats(struct kvt_tm *tm, struct kvt_tm_l4_stats *st)
{
	struct tm_l4 *x = tm->l4;
	struct kvt_l4_stats ls;
	uint64_t too_big;

	memset(st, 0, sizeof(*st));
	if (!x)
		return;
	kvt_l4_stats(x->l4, &ls);
	too_big = atomic_load(&x->too_big);
	st->enabled = 1;
	st->write_put = x->write == KVT_TM_L4_PUT;
	st->threads = x->nthreads;
	st->gets = x->gets;
	st->get_calls = ls.op[KVT_L4_OP_GET].calls;
	/* L4 counts a block over the value limit as a hit; we do not. */
	st->hits = ls.hits > too_big ? ls.hits - too_big : 0;
	st->misses = ls.misses + too_big;
	st->misses_stale = ls.misses_stale;
	st->misses_corrupt = ls.misses_corrupt;
	st->too_big = too_big;
	st->probes = x->probes;
	st->probes_found = x->probes_found;
	st->bytes_in = ls.bytes_in;
	st->bytes_out = ls.bytes_out;
	st->errors = ls.errors;
	st->timeouts = ls.timeouts;
	st->fast_fails = ls.fast_fails;
	st->redirects = ls.redirects;
	st->refreshes = ls.refreshes;
	st->connects = ls.connects;
	st->puts = ls.puts;
	st->puts_dropped = x->puts_dropped + atomic_load(&x->dropped_w);
	st->puts_skipped = x->puts_skipped;
	st->dels = ls.dels;
	st->drops = ls.drops;
	st->remote_drops = x->remote_drops;
	st->queued_bytes = atomic_load(&x->qbytes);
	st->nodes = ls.nodes;
	st->slots_mapped = ls.slots_mapped;
	st->get_p50_us = ls.op[KVT_L4_OP_GET].p50_us;
	st->get_p99_us = ls.op[KVT_L4_OP_GET].p99_us;
	st->put_p50_us = ls.op[KVT_L4_OP_PUT].p50_us;
	st->put_p99_us = ls.op[KVT_L4_OP_PUT].p99_us;
}
