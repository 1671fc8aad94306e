/*
 * kvt_tm_report.c - the tier manager's reports (kvt_tm.h): the hot blocks,
 * per-namespace totals and the counters.
 *
 * Per-namespace totals run on the daemon's loop, so they must never cost
 * O(blocks) there: every tier keeps totals per namespace as blocks come
 * and go (kvt_lru_ns_foreach, kvt_l3_ns_foreach), and a report merges them
 * in O(namespaces).  A block in two tiers is counted once, where it is
 * fastest: L1, then L2 (an L2 frame marked TM_F_IN_L1 is the copy of an L1
 * block), then L3, whose copies of blocks in RAM are those marked
 * TM_F_ON_L3 there (an L1 block with its frame in L2 leaves that mark to
 * the frame).  A mark can outlive its L3 copy (a region reclaimed under a
 * block in RAM), which undercounts that namespace by one block until the
 * block leaves RAM; never more.  Hits of a block in RAM and on L3 are
 * taken from RAM, plus L3's reads of it beyond those RAM counted.  The hot
 * report looks at every block (O(blocks), for an operator's command).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_tm_int.h"

/* ---- per-namespace totals ----------------------------------------------- */

/* One namespace while a report is made. */
struct ns_rec {
	struct ns_rec *next; /* hash chain */
	uint64_t hash;
	uint64_t entries, bytes, hits;
	uint64_t ram_entries, l1_entries;
	struct kvt_lru_ns_tot on_l3; /* RAM blocks with a copy on L3 */
	size_t ns_len;
	uint8_t name[];
};

struct ns_acc {
	struct kvt_tm *tm;
	struct ns_rec **b;
	size_t nb; /* power of two */
	struct ns_rec **v; /* every record, for the selection */
	size_t n, cap;
	int err;
};

static int acc_init(struct ns_acc *a, struct kvt_tm *tm, size_t expect)
{
	memset(a, 0, sizeof(*a));
	a->tm = tm;
	a->nb = 64;
	while (a->nb < 2 * expect)
		a->nb *= 2;
	a->b = calloc(a->nb, sizeof(*a->b));
	return a->b ? 0 : -ENOMEM;
}

static void acc_free(struct ns_acc *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	free(a->b);
}

/* Doubles the buckets (L3 may bring namespaces RAM has not). */
static void acc_grow(struct ns_acc *a)
{
	size_t n = a->nb * 2;
	struct ns_rec **nb = calloc(n, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still right */
	for (size_t i = 0; i < a->n; i++) {
		struct ns_rec *r = a->v[i];
		r->next = nb[r->hash & (n - 1)];
		nb[r->hash & (n - 1)] = r;
	}
	free(a->b);
	a->b = nb;
	a->nb = n;
}

static struct ns_rec *acc_slot(struct ns_acc *a, const uint8_t *ns,
			       size_t ns_len)
{
	struct kvt_key nk = { ns, ns_len, NULL, 0 };
	uint64_t h = kvt_key_hash(&nk);
	struct ns_rec *r;

	for (r = a->b[h & (a->nb - 1)]; r; r = r->next)
		if (r->hash == h && r->ns_len == ns_len &&
		    (ns_len == 0 || memcmp(r->name, ns, ns_len) == 0))
			return r;
	if (a->n == a->cap) {
		size_t nc = a->cap ? a->cap * 2 : 256;
		struct ns_rec **nv = realloc(a->v, nc * sizeof(*nv));
		if (!nv) {
			a->err = -ENOMEM;
			return NULL;
		}
		a->v = nv;
		a->cap = nc;
	}
	r = calloc(1, sizeof(*r) + ns_len);
	if (!r) {
		a->err = -ENOMEM;
		return NULL;
	}
	r->hash = h;
	r->ns_len = ns_len;
	if (ns_len)
		memcpy(r->name, ns, ns_len);
	r->next = a->b[h & (a->nb - 1)];
	a->b[h & (a->nb - 1)] = r;
	a->v[a->n++] = r;
	if (a->n > a->nb)
		acc_grow(a);
	return r;
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

static void tot_add(struct kvt_lru_ns_tot *s, const struct kvt_lru_ns_tot *t)
{
	s->entries += t->entries;
	s->raw_bytes += t->raw_bytes;
	s->hits += t->hits;
}

/* L1: every entry counts (mark 0: TM_F_ON_L3). */
static void ns_l1(void *arg, const uint8_t *ns, size_t ns_len,
		  const struct kvt_lru_ns_tot *all,
		  const struct kvt_lru_ns_tot *mark)
{
	struct ns_acc *a = arg;
	struct ns_rec *r;

	if (a->err || !(r = acc_slot(a, ns, ns_len)))
		return;
	tot_add(&r->on_l3, &mark[0]);
	r->entries += all->entries;
	r->bytes += all->raw_bytes;
	r->hits += all->hits;
	r->ram_entries += all->entries;
	r->l1_entries += all->entries;
}

/*
 * L2: frames of blocks also in L1 (mark 0, TM_F_IN_L1) were counted there;
 * mark 1 (TM_F_ON_L3) are RAM blocks with an L3 copy.
 */
static void ns_l2(void *arg, const uint8_t *ns, size_t ns_len,
		  const struct kvt_lru_ns_tot *all,
		  const struct kvt_lru_ns_tot *mark)
{
	struct ns_acc *a = arg;
	struct ns_rec *r;

	if (a->err || !(r = acc_slot(a, ns, ns_len)))
		return;
	tot_add(&r->on_l3, &mark[1]);
	r->entries += sub0(all->entries, mark[0].entries);
	r->ram_entries += sub0(all->entries, mark[0].entries);
	r->bytes += sub0(all->raw_bytes, mark[0].raw_bytes);
	r->hits += sub0(all->hits, mark[0].hits);
}

/* L3, namespace by namespace: its copies of blocks in RAM were counted. */
static int ns_l3(void *arg, const struct kvt_l3_ns_stats *st)
{
	struct ns_acc *a = arg;
	struct kvt_key k = { st->ns, st->ns_len, NULL, 0 };
	struct ns_rec *r;

	/* A namespace whose drop is queued is gone from L3 already. */
	if (kvt_tmi_hcount_has(&a->tm->pend_drop, tm_ns_hash(&k)))
		return 0;
	r = acc_slot(a, st->ns, st->ns_len);
	if (!r)
		return a->err;
	r->entries += sub0(st->entries, r->on_l3.entries);
	r->bytes += sub0(st->raw_bytes, r->on_l3.raw_bytes);
	r->hits += sub0(st->hits, r->on_l3.hits);
	return 0;
}

/* More bytes first; between equals, the shorter then smaller name. */
static int rec_before(const struct ns_rec *x, const struct ns_rec *y)
{
	if (x->bytes != y->bytes)
		return x->bytes > y->bytes;
	if (x->ns_len != y->ns_len)
		return x->ns_len < y->ns_len;
	return memcmp(x->name, y->name, x->ns_len) < 0;
}

/* Restores the min-heap (worst on top, by rec_before) below i. */
static void heap_down(struct ns_rec **h, size_t n, size_t i)
{
	for (;;) {
		size_t w = i, l = 2 * i + 1, r = l + 1;

		if (l < n && rec_before(h[w], h[l]))
			w = l;
		if (r < n && rec_before(h[w], h[r]))
			w = r;
		if (w == i)
			return;
		struct ns_rec *t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

static int rec_cmp(const void *x, const void *y)
{
	const struct ns_rec *a = *(const struct ns_rec *const *)x;
	const struct ns_rec *b = *(const struct ns_rec *const *)y;

	return rec_before(a, b) ? -1 : rec_before(b, a) ? 1 : 0;
}

/*
 * Moves the top `top` records (by bytes) to the front of v, sorted,
 * in O(n log top).  Returns how many that is.
 */
static size_t select_top(struct ns_rec **v, size_t n, size_t top)
{
	size_t k = n < top ? n : top;

	if (k == 0)
		return 0;
	/* v[0..k) is a heap whose top is the worst of the best so far. */
	for (size_t i = k / 2; i-- > 0;)
		heap_down(v, k, i);
	for (size_t i = k; i < n; i++)
		if (rec_before(v[i], v[0])) {
			struct ns_rec *t = v[0];
			v[0] = v[i];
			v[i] = t;
			heap_down(v, k, 0);
		}
	qsort(v, k, sizeof(*v), rec_cmp);
	return k;
}

int kvt_tm_ns_stats(struct kvt_tm *tm, size_t top, struct kvt_tm_ns **out,
		    size_t *n, struct kvt_tm_ns_rest *rest)
{
	struct ns_acc a;
	struct kvt_tm_ns *v = NULL;
	size_t k;

	if (!tm || !out || !n)
		return KVT_EINVAL;
	*out = NULL;
	*n = 0;
	if (rest)
		memset(rest, 0, sizeof(*rest));
	if (acc_init(&a, tm, kvt_lru_ns_count(tm->l1) +
				     kvt_lru_ns_count(tm->l2)))
		return -ENOMEM;
	kvt_lru_ns_foreach(tm->l1, ns_l1, &a);
	if (tm->l2 && !a.err)
		kvt_lru_ns_foreach(tm->l2, ns_l2, &a);
	if (tm->l3 && !a.err)
		kvt_l3_ns_foreach(tm->l3, ns_l3, &a);
	if (a.err)
		goto out;
	k = select_top(a.v, a.n, top);
	if (k) {
		v = calloc(k, sizeof(*v));
		if (!v) {
			a.err = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < a.n; i++) {
		const struct ns_rec *r = a.v[i];

		if (i < k) {
			memcpy(v[i].ns, r->name, r->ns_len);
			v[i].ns_len = r->ns_len;
			v[i].entries = r->entries;
			v[i].bytes = r->bytes;
			v[i].hits = r->hits;
			v[i].ram_entries = r->ram_entries;
			v[i].l1_entries = r->l1_entries;
		} else if (rest) {
			rest->namespaces++;
			rest->entries += r->entries;
			rest->bytes += r->bytes;
			rest->hits += r->hits;
		}
	}
	*out = v;
	*n = k;
out:
	acc_free(&a);
	return a.err;
}

/* ---- hot blocks --------------------------------------------------------- */

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

	if (a->err || tm_expired(a->tm, kvt_lru_ref_expires(e)))
		return;
	kvt_lru_ref_meta(e, &m);
	/* A frame of a block in L1 was listed there. */
	if (a->tier == 2 && (m.flags & TM_F_IN_L1))
		return;
	kvt_lru_ref_key(e, &k);
	hot_add(a, &k, m.raw_len, m.hits, m.ctime_s, m.atime_s);
}

static int hot_l3(void *arg, const struct kvt_key *k, uint64_t raw_len,
		  uint64_t hits)
{
	struct hot_acc *a = arg;
	uint64_t now = a->tm->now_s();

	/* L3 is inclusive: a block also in RAM was listed there. */
	if (kvt_tmi_l3_pending(a->tm, k) || kvt_lru_exists(a->tm->l1, k, now) ||
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

/* ---- counters ----------------------------------------------------------- */

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
		st->l3_index_bytes = l3.index_bytes;
		st->l3_index_map_bytes = l3.index_map_bytes;
		st->l3_index_full = l3.index_full;
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
	st->promotions_admitted = tm->promotions_admitted;
	st->promotions_bypassed = tm->promotions_bypassed;
	st->demotions_reused = tm->demotions_reused;

	struct tm_pool_snap ps;
	kvt_tmi_pool_snap(tm, &ps);
	st->pool.workers = ps.workers;
	st->pool.busy_ns = ps.busy_ns;
	st->pool.jobs = ps.jobs;
	st->pool.lanes[KVT_TM_LANE_CPU].queued = ps.queued[TM_LANE_CPU];
	st->pool.lanes[KVT_TM_LANE_CPU].busy_ns = ps.lane_busy_ns[TM_LANE_CPU];
	st->pool.lanes[KVT_TM_LANE_CPU].jobs = ps.lane_jobs[TM_LANE_CPU];
	st->pool.lanes[KVT_TM_LANE_L3_WRITE].queued = ps.queued[TM_LANE_L3W];
	st->pool.lanes[KVT_TM_LANE_L3_WRITE].busy_ns =
		ps.lane_busy_ns[TM_LANE_L3W];
	st->pool.lanes[KVT_TM_LANE_L3_WRITE].jobs = ps.lane_jobs[TM_LANE_L3W];
	st->pool.lanes[KVT_TM_LANE_L4_READ].queued = ps.queued[TM_LANE_L4R];
	st->pool.lanes[KVT_TM_LANE_L4_READ].busy_ns =
		ps.lane_busy_ns[TM_LANE_L4R];
	st->pool.lanes[KVT_TM_LANE_L4_READ].jobs = ps.lane_jobs[TM_LANE_L4R];
	st->pool.lanes[KVT_TM_LANE_L4_WRITE].queued = ps.queued[TM_LANE_L4W];
	st->pool.lanes[KVT_TM_LANE_L4_WRITE].busy_ns =
		ps.lane_busy_ns[TM_LANE_L4W];
	st->pool.lanes[KVT_TM_LANE_L4_WRITE].jobs = ps.lane_jobs[TM_LANE_L4W];
	kvt_tmi_l4_stats(tm, &st->l4);
}
