/*
 * kvt_tm_order.c - the loop's indexes of what is in motion (kvt_tm_int.h),
 * each O(1) per lookup, so that the ordering rules cost a get nothing
 * however many jobs are queued:
 *
 *   transit, promos  jobs by key: blocks on their way down (still served
 *                    from there) and on their way up (a second get waits
 *                    for the same job);
 *   pend_del         key hashes whose L3 delete is queued, not applied;
 *   pend_drop        namespace hashes whose L3 drop is queued.
 *
 * L3 reads run beside L3 writes on the pool, so a read of k must not be
 * started while a delete of k (or a drop of its namespace) is still queued:
 * the read could overtake it and serve the old value.  The manager answers
 * such a get as a miss (the key is logically gone), and never trusts that
 * L3 copy as a copy of a block in RAM.  A delete that cannot be recorded
 * (no memory) is counted in pend_untracked, and while that count is not 0
 * every L3 read is refused the same way: slower, never wrong.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_tm_int.h"

/* ---- sets of jobs by key ------------------------------------------------ */

#define JOBSET_MIN 256

static bool key_eq(const struct kvt_key *a, const struct kvt_key *b)
{
	return a->ns_len == b->ns_len && a->key_len == b->key_len &&
	       (a->ns_len == 0 || memcmp(a->ns, b->ns, a->ns_len) == 0) &&
	       (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0);
}

int kvt_tmi_jobset_init(struct tm_jobset *s)
{
	memset(s, 0, sizeof(*s));
	s->buckets = calloc(JOBSET_MIN, sizeof(*s->buckets));
	if (!s->buckets)
		return -ENOMEM;
	s->nbuckets = JOBSET_MIN;
	return 0;
}

void kvt_tmi_jobset_free(struct tm_jobset *s)
{
	free(s->buckets);
	memset(s, 0, sizeof(*s));
}

/* Doubles the buckets; failing only makes chains longer. */
static void jobset_grow(struct tm_jobset *s)
{
	size_t n = s->nbuckets * 2;
	struct job **nb = calloc(n, sizeof(*nb));

	if (!nb)
		return;
	for (struct job *j = s->head; j; j = j->lnext) {
		j->hnext = nb[j->hash & (n - 1)];
		nb[j->hash & (n - 1)] = j;
	}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

void kvt_tmi_jobset_add(struct tm_jobset *s, struct job *j)
{
	struct job **b = &s->buckets[j->hash & (s->nbuckets - 1)];

	j->hnext = *b;
	*b = j;
	j->lprev = NULL;
	j->lnext = s->head;
	if (s->head)
		s->head->lprev = j;
	s->head = j;
	j->listed = true;
	if (++s->n > s->nbuckets)
		jobset_grow(s);
}

void kvt_tmi_jobset_remove(struct tm_jobset *s, struct job *j)
{
	struct job **pp;

	if (!j->listed)
		return;
	for (pp = &s->buckets[j->hash & (s->nbuckets - 1)]; *pp != j;
	     pp = &(*pp)->hnext)
		;
	*pp = j->hnext;
	if (j->lprev)
		j->lprev->lnext = j->lnext;
	else
		s->head = j->lnext;
	if (j->lnext)
		j->lnext->lprev = j->lprev;
	j->lprev = j->lnext = j->hnext = NULL;
	j->listed = false;
	s->n--;
}

struct job *kvt_tmi_jobset_find(const struct tm_jobset *s,
				const struct kvt_key *k)
{
	uint64_t h = kvt_key_hash(k);

	for (struct job *j = s->buckets[h & (s->nbuckets - 1)]; j;
	     j = j->hnext)
		if (j->hash == h && !j->stale && key_eq(&j->k, k))
			return j;
	return NULL;
}

/* ---- counting sets of hashes --------------------------------------------- */

#define HCOUNT_MIN 64

int kvt_tmi_hcount_init(struct tm_hcount *h)
{
	memset(h, 0, sizeof(*h));
	h->keys = calloc(HCOUNT_MIN, sizeof(*h->keys));
	h->counts = calloc(HCOUNT_MIN, sizeof(*h->counts));
	if (!h->keys || !h->counts) {
		kvt_tmi_hcount_free(h);
		return -ENOMEM;
	}
	h->mask = HCOUNT_MIN - 1;
	return 0;
}

void kvt_tmi_hcount_free(struct tm_hcount *h)
{
	free(h->keys);
	free(h->counts);
	memset(h, 0, sizeof(*h));
}

/* 0 marks an empty slot. */
static uint64_t hkey(uint64_t hash)
{
	return hash ? hash : 1;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t hslot(const struct tm_hcount *h, uint64_t key)
{
	size_t i = (size_t)key & h->mask;

	while (h->keys[i] && h->keys[i] != key)
		i = (i + 1) & h->mask;
	return i;
}

static int hgrow(struct tm_hcount *h)
{
	size_t n = (h->mask + 1) * 2;
	struct tm_hcount g = { .mask = n - 1, .used = h->used };

	g.keys = calloc(n, sizeof(*g.keys));
	g.counts = calloc(n, sizeof(*g.counts));
	if (!g.keys || !g.counts) {
		free(g.keys);
		free(g.counts);
		return -ENOMEM;
	}
	for (size_t i = 0; i <= h->mask; i++)
		if (h->keys[i]) {
			size_t s = hslot(&g, h->keys[i]);
			g.keys[s] = h->keys[i];
			g.counts[s] = h->counts[i];
		}
	free(h->keys);
	free(h->counts);
	*h = g;
	return 0;
}

int kvt_tmi_hcount_add(struct tm_hcount *h, uint64_t hash)
{
	uint64_t key = hkey(hash);
	size_t i = hslot(h, key);

	if (h->keys[i]) {
		h->counts[i]++;
		return 0;
	}
	/* At most half full: probes stay short. */
	if ((h->used + 1) * 2 > h->mask + 1) {
		if (hgrow(h))
			return -ENOMEM;
		i = hslot(h, key);
	}
	h->keys[i] = key;
	h->counts[i] = 1;
	h->used++;
	return 0;
}

void kvt_tmi_hcount_del(struct tm_hcount *h, uint64_t hash)
{
	uint64_t key = hkey(hash);
	size_t i = hslot(h, key), j;

	if (!h->keys[i] || --h->counts[i] > 0)
		return;
	/*
	 * Backward-shift deletion: move later members of the probe run up
	 * into the hole when their home slot allows, so that no tombstones
	 * are needed and every lookup stays a short scan.
	 */
	h->keys[i] = 0;
	h->used--;
	for (j = (i + 1) & h->mask; h->keys[j]; j = (j + 1) & h->mask) {
		size_t home = (size_t)h->keys[j] & h->mask;

		/* Leave it if its home lies cyclically in (i, j]. */
		if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		h->keys[i] = h->keys[j];
		h->counts[i] = h->counts[j];
		h->keys[j] = 0;
		i = j;
	}
}

bool kvt_tmi_hcount_has(const struct tm_hcount *h, uint64_t hash)
{
	return h->keys && h->keys[hslot(h, hkey(hash))] != 0;
}

/* ---- pending L3 deletes and drops ---------------------------------------- */

bool kvt_tmi_l3_pending(const struct kvt_tm *tm, const struct kvt_key *k)
{
	return tm->pend_untracked ||
	       kvt_tmi_hcount_has(&tm->pend_del, kvt_key_hash(k)) ||
	       kvt_tmi_hcount_has(&tm->pend_drop, tm_ns_hash(k));
}

void kvt_tmi_pending_add(struct kvt_tm *tm, struct job *j)
{
	int rc;

	if (j->kind == JOB_L3_DEL)
		rc = kvt_tmi_hcount_add(&tm->pend_del, j->hash);
	else
		rc = kvt_tmi_hcount_add(&tm->pend_drop, tm_ns_hash(&j->k));
	if (rc) {
		j->untracked = true;
		tm->pend_untracked++;
	}
}

void kvt_tmi_pending_done(struct kvt_tm *tm, struct job *j)
{
	if (j->untracked)
		tm->pend_untracked--;
	else if (j->kind == JOB_L3_DEL)
		kvt_tmi_hcount_del(&tm->pend_del, j->hash);
	else
		kvt_tmi_hcount_del(&tm->pend_drop, tm_ns_hash(&j->k));
}
