/*
 * kvt_tm_report.c - the tier manager's reports (kvt_tm.h): the hot blocks,
 * per-namespace totals and the counters.  Hot and per-namespace look at
 * every block of every tier (O(blocks), for an operator's command); L3 is
 * inclusive, so a block also in RAM is counted where it is in RAM.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_tm_int.h"

/* ---- per-namespace totals ----------------------------------------------- */

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
}
