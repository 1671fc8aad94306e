/*
 * kvt_lru.c - the RAM tiers' LRU: hash table + LRU list under a byte capacity.
 * The API and its invariants are described in kvt_lru.h.
 */
#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_lru.h"
#include "kvt_mem.h"
#include "kvtier_errors.h"

/* Smallest bucket array; a power of two like every size the table takes. */
#define LRU_MIN_BUCKETS 64u

/*
 * One cached value.  This is the struct kvt_ref that kvt_tier.h declares
 * opaque: callers hold pointers to entries themselves, so a reference costs
 * no allocation.
 *
 * Entries are reference-counted.  The table owns one reference while the
 * entry is linked (hpprev != NULL); each kvt_lru_get() gives its caller
 * another.  Unlinking (replace, delete, expiry, eviction) drops or hands
 * over the table's reference but never frees while other references exist,
 * so a reader may keep using a value that another thread's holder, or the
 * event loop, has since removed.  Only refs is shared between threads: the
 * links are touched by the LRU's owning thread alone, and mem, data, len,
 * dtype, the name and expires_s never change after creation.
 */
struct kvt_ref {
	atomic_uint refs;
	uint8_t dtype;
	uint8_t codec; /* kvt_lru_meta: how data is encoded (L2 entries) */
	uint8_t flags; /* kvt_lru_meta: the manager's per-entry flags */
	uint64_t raw_len; /* kvt_lru_meta: length before encoding */
	uint64_t hits;	  /* kvt_lru_meta: gets served, across tiers */
	uint64_t ctime_s; /* kvt_lru_meta: when the block was put */
	uint64_t atime_s; /* kvt_lru_meta: last get */
	uint32_t pins;	  /* > 0: never chosen as an eviction victim */
	/* Its namespace's totals while linked (NULL once unlinked). */
	struct lru_ns *nsrec;
	/* Hash chain: hpprev points at whatever points at us (bucket or the
	 * previous entry's hnext), so unlinking is O(1) without a back walk. */
	struct kvt_ref *hnext;
	struct kvt_ref **hpprev;
	/* LRU list, most recently used at t->mru. */
	struct kvt_ref *lru_prev;
	struct kvt_ref *lru_next;
	uint64_t hash;
	uint64_t expires_s;
	void *mem;
	size_t mem_size;
	const uint8_t *data;
	size_t len;
	size_t ns_len;
	size_t key_len;
	uint8_t name[]; /* ns_len namespace bytes, then key_len key bytes */
};

/*
 * A namespace's totals over the linked entries (kvt_lru_ns_foreach), kept
 * on every link, unlink, hit and flag change, so that a per-namespace
 * report costs O(namespaces), not O(entries).  It lives while the
 * namespace has linked entries (or a put is about to link one: ns_hold).
 */
struct lru_ns {
	struct lru_ns *next; /* hash chain */
	uint64_t hash;	     /* of the namespace alone */
	struct kvt_lru_ns_tot all, mark[KVT_LRU_NS_MARKS];
	size_t ns_len;
	uint8_t name[];
};

struct kvt_lru {
	struct kvt_ref **buckets;
	size_t nbuckets; /* power of two */
	struct kvt_ref *mru;
	struct kvt_ref *lru;
	uint64_t capacity;
	uint64_t bytes;
	uint64_t pinned_bytes; /* cost of entries with pins > 0 */
	uint64_t raw_bytes;
	uint64_t entries;
	uint64_t hits;
	uint64_t misses;
	uint64_t expired;
	/* Per-namespace totals: a chained table of struct lru_ns. */
	struct lru_ns **ns_buckets;
	size_t ns_nbuckets; /* power of two */
	size_t ns_count;
	struct lru_ns *ns_hold; /* not freed while a put links into it */
	uint8_t marks[KVT_LRU_NS_MARKS]; /* flag bits counted apart */
};

/* What kvt_ref_data() returns for an empty value with no memory. */
static const uint8_t lru_empty_value[1];

size_t kvt_lru_entry_overhead(void)
{
	return sizeof(struct kvt_ref);
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

uint64_t kvt_lru_cost(size_t mem_size, size_t ns_len, size_t key_len)
{
	uint64_t c = sizeof(struct kvt_ref);

	c = add_sat(c, mem_size);
	c = add_sat(c, ns_len);
	return add_sat(c, key_len);
}

static uint64_t entry_cost(const struct kvt_ref *e)
{
	return kvt_lru_cost(e->mem_size, e->ns_len, e->key_len);
}

static bool key_valid(const struct kvt_key *k)
{
	return k && (k->ns || k->ns_len == 0) && (k->key || k->key_len == 0);
}

/* Same key: the hash first, then both lengths and both byte strings. */
static bool entry_matches(const struct kvt_ref *e, const struct kvt_key *k,
			  uint64_t h)
{
	if (e->hash != h || e->ns_len != k->ns_len || e->key_len != k->key_len)
		return false;
	if (k->ns_len && memcmp(e->name, k->ns, k->ns_len) != 0)
		return false;
	return !k->key_len ||
	       memcmp(e->name + e->ns_len, k->key, k->key_len) == 0;
}

static bool entry_expired(const struct kvt_ref *e, uint64_t now_s)
{
	return e->expires_s != 0 && now_s >= e->expires_s;
}

static struct kvt_ref *table_find(const struct kvt_lru *t,
				  const struct kvt_key *k, uint64_t h)
{
	struct kvt_ref *e = t->buckets[h & (t->nbuckets - 1)];

	while (e && !entry_matches(e, k, h))
		e = e->hnext;
	return e;
}

static void bucket_push(struct kvt_ref **b, struct kvt_ref *e)
{
	e->hnext = *b;
	if (e->hnext)
		e->hnext->hpprev = &e->hnext;
	*b = e;
	e->hpprev = b;
}

static void table_unlink(struct kvt_ref *e)
{
	assert(e->hpprev);
	*e->hpprev = e->hnext;
	if (e->hnext)
		e->hnext->hpprev = e->hpprev;
	e->hnext = NULL;
	e->hpprev = NULL;
}

/*
 * Doubles the bucket array.  Failure to allocate is not an error: chains
 * just get longer until a later put manages to grow, which keeps puts from
 * failing (and from having to undo anything) on a rehash.
 */
static void table_grow(struct kvt_lru *t)
{
	size_t n = t->nbuckets * 2, i;
	struct kvt_ref **nb;

	if (n < t->nbuckets || n > SIZE_MAX / sizeof(*nb))
		return;
	nb = calloc(n, sizeof(*nb));
	if (!nb)
		return;
	for (i = 0; i < t->nbuckets; i++) {
		struct kvt_ref *e = t->buckets[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			bucket_push(&nb[e->hash & (n - 1)], e);
		}
	}
	free(t->buckets);
	t->buckets = nb;
	t->nbuckets = n;
}

static void lru_remove(struct kvt_lru *t, struct kvt_ref *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		t->mru = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		t->lru = e->lru_prev;
	e->lru_prev = NULL;
	e->lru_next = NULL;
}

static void lru_push_mru(struct kvt_lru *t, struct kvt_ref *e)
{
	e->lru_prev = NULL;
	e->lru_next = t->mru;
	if (t->mru)
		t->mru->lru_prev = e;
	else
		t->lru = e;
	t->mru = e;
}

/* ---- per-namespace totals ------------------------------------------------ */

static uint64_t ns_hash(const uint8_t *ns, size_t ns_len)
{
	struct kvt_key k = { ns, ns_len, NULL, 0 };

	return kvt_key_hash(&k);
}

static struct lru_ns *ns_find(const struct kvt_lru *t, const uint8_t *ns,
			      size_t ns_len, uint64_t h)
{
	struct lru_ns *r = t->ns_buckets[h & (t->ns_nbuckets - 1)];

	while (r && (r->hash != h || r->ns_len != ns_len ||
		     (ns_len && memcmp(r->name, ns, ns_len) != 0)))
		r = r->next;
	return r;
}

/* Doubles the namespace table; as table_grow(), failing is no error. */
static void ns_grow(struct kvt_lru *t)
{
	size_t n = t->ns_nbuckets * 2;
	struct lru_ns **nb;

	if (n < t->ns_nbuckets || n > SIZE_MAX / sizeof(*nb))
		return;
	nb = calloc(n, sizeof(*nb));
	if (!nb)
		return;
	for (size_t i = 0; i < t->ns_nbuckets; i++) {
		struct lru_ns *r = t->ns_buckets[i], *next;

		for (; r; r = next) {
			next = r->next;
			r->next = nb[r->hash & (n - 1)];
			nb[r->hash & (n - 1)] = r;
		}
	}
	free(t->ns_buckets);
	t->ns_buckets = nb;
	t->ns_nbuckets = n;
}

/*
 * The record of k's namespace, made (with no entries yet) and linked into
 * the table if there is none.  NULL: out of memory, nothing changed.
 */
static struct lru_ns *ns_get(struct kvt_lru *t, const struct kvt_key *k)
{
	uint64_t h = ns_hash(k->ns, k->ns_len);
	struct lru_ns *r = ns_find(t, k->ns, k->ns_len, h);

	if (r)
		return r;
	r = calloc(1, sizeof(*r) + k->ns_len);
	if (!r)
		return NULL;
	r->hash = h;
	r->ns_len = k->ns_len;
	if (k->ns_len)
		memcpy(r->name, k->ns, k->ns_len);
	r->next = t->ns_buckets[h & (t->ns_nbuckets - 1)];
	t->ns_buckets[h & (t->ns_nbuckets - 1)] = r;
	if (++t->ns_count > t->ns_nbuckets)
		ns_grow(t);
	return r;
}

/* Unlinks and frees r (which has no entries). */
static void ns_free(struct kvt_lru *t, struct lru_ns *r)
{
	struct lru_ns **pp = &t->ns_buckets[r->hash & (t->ns_nbuckets - 1)];

	while (*pp != r)
		pp = &(*pp)->next;
	*pp = r->next;
	t->ns_count--;
	free(r);
}

static void tot_add(struct kvt_lru_ns_tot *s, const struct kvt_ref *e)
{
	s->entries++;
	s->raw_bytes += e->raw_len;
	s->hits += e->hits;
}

static void tot_sub(struct kvt_lru_ns_tot *s, const struct kvt_ref *e)
{
	assert(s->entries && s->raw_bytes >= e->raw_len && s->hits >= e->hits);
	s->entries--;
	s->raw_bytes -= e->raw_len;
	s->hits -= e->hits;
}

/* Adds (sign > 0) or removes e's share of its namespace's totals. */
static void ns_account(const struct kvt_lru *t, const struct kvt_ref *e,
		       int sign)
{
	struct lru_ns *r = e->nsrec;

	(sign > 0 ? tot_add : tot_sub)(&r->all, e);
	for (int i = 0; i < KVT_LRU_NS_MARKS; i++)
		if (e->flags & t->marks[i])
			(sign > 0 ? tot_add : tot_sub)(&r->mark[i], e);
}

/* ---- linking ------------------------------------------------------------- */

/*
 * Links a new entry as the most recently used and accounts for it;
 * e->nsrec is its namespace's record, already in the table.
 */
static void entry_link(struct kvt_lru *t, struct kvt_ref *e)
{
	bucket_push(&t->buckets[e->hash & (t->nbuckets - 1)], e);
	lru_push_mru(t, e);
	t->bytes += entry_cost(e);
	if (e->pins)
		t->pinned_bytes += entry_cost(e);
	t->raw_bytes += e->raw_len;
	t->entries++;
	ns_account(t, e, 1);
	assert(t->bytes <= t->capacity);
}

/*
 * Removes e from the table, the LRU list and the accounting.  The table's
 * reference now belongs to the caller, who releases it or hands it on.
 */
static void entry_unlink(struct kvt_lru *t, struct kvt_ref *e)
{
	uint64_t cost = entry_cost(e);
	struct lru_ns *r = e->nsrec;

	table_unlink(e);
	lru_remove(t, e);
	assert(t->bytes >= cost && t->raw_bytes >= e->raw_len && t->entries);
	t->bytes -= cost;
	if (e->pins)
		t->pinned_bytes -= cost;
	t->raw_bytes -= e->raw_len;
	t->entries--;
	ns_account(t, e, -1);
	e->nsrec = NULL;
	if (r->all.entries == 0 && r != t->ns_hold)
		ns_free(t, r);
}

static void entry_drop(struct kvt_lru *t, struct kvt_ref *e)
{
	entry_unlink(t, e);
	kvt_ref_release(e);
}

/*
 * Finds a live entry for k.  An expired one is removed on the way and
 * counted, so every caller treats it as absent without repeating the check.
 */
static struct kvt_ref *find_live(struct kvt_lru *t, const struct kvt_key *k,
				 uint64_t now_s)
{
	struct kvt_ref *e = table_find(t, k, kvt_key_hash(k));

	if (e && entry_expired(e, now_s)) {
		entry_drop(t, e);
		t->expired++;
		e = NULL;
	}
	return e;
}

int kvt_lru_open(struct kvt_lru **out, uint64_t capacity)
{
	struct kvt_lru *t;

	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (capacity == 0)
		return KVT_EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->nbuckets = LRU_MIN_BUCKETS;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return -ENOMEM;
	}
	t->ns_nbuckets = LRU_MIN_BUCKETS;
	t->ns_buckets = calloc(t->ns_nbuckets, sizeof(*t->ns_buckets));
	if (!t->ns_buckets) {
		free(t->buckets);
		free(t);
		return -ENOMEM;
	}
	t->capacity = capacity;
	*out = t;
	return 0;
}

void kvt_lru_close(struct kvt_lru *t)
{
	struct kvt_ref *e, *next;

	if (!t)
		return;
	/* Every linked entry is on the LRU list; the buckets go wholesale. */
	for (e = t->mru; e; e = next) {
		next = e->lru_next;
		e->hnext = NULL;
		e->hpprev = NULL;
		e->lru_prev = NULL;
		e->lru_next = NULL;
		e->nsrec = NULL;
		kvt_ref_release(e);
	}
	for (size_t i = 0; i < t->ns_nbuckets; i++)
		while (t->ns_buckets[i]) {
			struct lru_ns *r = t->ns_buckets[i];
			t->ns_buckets[i] = r->next;
			free(r);
		}
	free(t->ns_buckets);
	free(t->buckets);
	free(t);
}

/* data[0..len) must lie inside mem[0..mem_size). */
static bool blob_valid(const void *mem, size_t mem_size, const uint8_t *data,
		       size_t len)
{
	uintptr_t m = (uintptr_t)mem, d = (uintptr_t)data;

	if (!mem && mem_size)
		return false;
	if (len == 0)
		return true;
	return mem && data && d >= m && d - m <= mem_size &&
	       len <= mem_size - (d - m);
}

int kvt_lru_put(struct kvt_lru *t, const struct kvt_key *k,
		struct kvt_blob *blob, uint64_t expires_s,
		kvt_lru_victim_fn victim_fn, void *victim_arg)
{
	return kvt_lru_put_meta(t, k, blob, expires_s, NULL, NULL, victim_fn,
				victim_arg);
}

/*
 * A new, unlinked entry holding blob's memory (taken over by the entry),
 * with one reference, or NULL (out of memory; the memory is not freed).
 */
static struct kvt_ref *entry_new(const struct kvt_key *k,
				 const struct kvt_blob *blob, void *mem,
				 const uint8_t *data, uint64_t expires_s,
				 const struct kvt_lru_meta *meta)
{
	struct kvt_ref *e = malloc(sizeof(*e) + k->ns_len + k->key_len);

	if (!e)
		return NULL;
	atomic_init(&e->refs, 1);
	e->dtype = blob->dtype;
	e->hnext = NULL;
	e->hpprev = NULL;
	e->lru_prev = NULL;
	e->lru_next = NULL;
	e->nsrec = NULL;
	e->hash = kvt_key_hash(k);
	e->expires_s = expires_s;
	e->mem = mem;
	e->mem_size = blob->mem_size;
	e->len = blob->len;
	e->codec = meta ? meta->codec : 0;
	e->flags = meta ? meta->flags : 0;
	e->raw_len = meta ? meta->raw_len : blob->len;
	e->hits = meta ? meta->hits : 0;
	e->ctime_s = meta ? meta->ctime_s : 0;
	e->atime_s = meta ? meta->atime_s : 0;
	e->pins = 0;
	e->data = e->len ? data : mem ? mem : lru_empty_value;
	e->ns_len = k->ns_len;
	e->key_len = k->key_len;
	if (k->ns_len)
		memcpy(e->name, k->ns, k->ns_len);
	if (k->key_len)
		memcpy(e->name + k->ns_len, k->key, k->key_len);
	return e;
}

int kvt_lru_put_meta(struct kvt_lru *t, const struct kvt_key *k,
		     struct kvt_blob *blob, uint64_t expires_s,
		     const struct kvt_lru_meta *meta, struct kvt_ref **out,
		     kvt_lru_victim_fn victim_fn, void *victim_arg)
{
	struct kvt_ref *e, *old, *victims = NULL, **vtail = &victims;
	const uint8_t *data;
	uint64_t cost;
	void *mem;

	if (!blob)
		return KVT_EINVAL;
	/* Take ownership first so that every error path below frees mem. */
	mem = blob->mem;
	data = blob->data;
	blob->mem = NULL;
	blob->data = NULL;
	if (!t || !key_valid(k) ||
	    !blob_valid(mem, blob->mem_size, data, blob->len)) {
		kvt_block_free(mem);
		return KVT_EINVAL;
	}
	cost = kvt_lru_cost(blob->mem_size, k->ns_len, k->key_len);
	/*
	 * Pinned entries cannot make room, so what they take is not
	 * available; a pinned old value of k is replaced, so its room is.
	 */
	old = table_find(t, k, kvt_key_hash(k));
	uint64_t pinned = t->pinned_bytes -
			  (old && old->pins ? entry_cost(old) : 0);
	if (cost > t->capacity || cost > t->capacity - pinned) {
		kvt_block_free(mem);
		return KVT_ENOSPACE;
	}

	/*
	 * Allocate before touching the table: if this fails, nothing has been
	 * replaced or evicted.  cost <= capacity bounds the size.  A new
	 * namespace record without entries changes nothing a caller sees.
	 */
	e = entry_new(k, blob, mem, data, expires_s, meta);
	if (e)
		e->nsrec = ns_get(t, k);
	if (!e || !e->nsrec) {
		free(e);
		kvt_block_free(mem);
		return -ENOMEM;
	}
	/* A pinned key stays pinned when its value is replaced. */
	e->pins = old ? old->pins : 0;
	/* Unlinking the old value or victims must not free e's record. */
	t->ns_hold = e->nsrec;

	/*
	 * The old value goes first, and is dropped rather than reported: it is
	 * stale, and demoting it to L2 would resurrect it under the new one.
	 */
	if (old)
		entry_drop(t, old);

	/*
	 * Collect victims, chained through their now unused lru_next: the
	 * least recently used entries that are not pinned.
	 */
	while (cost > t->capacity - t->bytes) {
		struct kvt_ref *v = t->lru;

		while (v && v->pins)
			v = v->lru_prev;
		/* cost <= capacity - pinned: the unpinned ones always do. */
		assert(v);
		entry_unlink(t, v);
		*vtail = v;
		vtail = &v->lru_next;
	}

	entry_link(t, e);
	t->ns_hold = NULL;
	if (t->entries > t->nbuckets)
		table_grow(t);
	if (out)
		*out = kvt_lru_ref_acquire(e);

	/* Report victims only now, so the callee sees a consistent LRU. */
	while (victims) {
		struct kvt_ref *v = victims;

		victims = v->lru_next;
		v->lru_next = NULL;
		if (victim_fn)
			victim_fn(victim_arg, v);
		else
			kvt_ref_release(v);
	}
	return 0;
}

int kvt_lru_ref_make(const struct kvt_key *k, struct kvt_blob *blob,
		     uint64_t expires_s, const struct kvt_lru_meta *meta,
		     struct kvt_ref **out)
{
	const uint8_t *data;
	void *mem;

	if (out)
		*out = NULL;
	if (!blob)
		return KVT_EINVAL;
	mem = blob->mem;
	data = blob->data;
	blob->mem = NULL;
	blob->data = NULL;
	if (!out || !key_valid(k) ||
	    !blob_valid(mem, blob->mem_size, data, blob->len)) {
		kvt_block_free(mem);
		return KVT_EINVAL;
	}
	*out = entry_new(k, blob, mem, data, expires_s, meta);
	if (!*out) {
		kvt_block_free(mem);
		return -ENOMEM;
	}
	return 0;
}

/* Finds k's live entry and gives the caller a reference to it. */
static int lookup(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s,
		  struct kvt_ref **out)
{
	struct kvt_ref *e;

	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (!t || !key_valid(k))
		return KVT_EINVAL;
	e = find_live(t, k, now_s);
	if (!e)
		return KVT_ENOTFOUND;
	*out = kvt_lru_ref_acquire(e);
	return 0;
}

int kvt_lru_get(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s,
		struct kvt_ref **out)
{
	struct kvt_ref *e;
	int rc = lookup(t, k, now_s, out);

	if (rc == KVT_ENOTFOUND)
		t->misses++;
	if (rc)
		return rc;
	e = *out;
	if (t->mru != e) {
		lru_remove(t, e);
		lru_push_mru(t, e);
	}
	t->hits++;
	e->hits++;
	e->nsrec->all.hits++;
	for (int i = 0; i < KVT_LRU_NS_MARKS; i++)
		if (e->flags & t->marks[i])
			e->nsrec->mark[i].hits++;
	e->atime_s = now_s;
	return 0;
}

int kvt_lru_peek(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s,
		 struct kvt_ref **out)
{
	return lookup(t, k, now_s, out);
}

int kvt_lru_exists(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s)
{
	if (!t || !key_valid(k))
		return 0;
	return find_live(t, k, now_s) != NULL;
}

int kvt_lru_del(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s)
{
	struct kvt_ref *e;

	if (!t || !key_valid(k))
		return KVT_EINVAL;
	e = find_live(t, k, now_s);
	if (!e)
		return KVT_ENOTFOUND;
	entry_drop(t, e);
	return 0;
}

int kvt_lru_evict_one(struct kvt_lru *t, struct kvt_ref **victim)
{
	struct kvt_ref *v;

	if (!victim)
		return KVT_EINVAL;
	*victim = NULL;
	if (!t)
		return KVT_EINVAL;
	v = t->lru;
	if (!v)
		return KVT_ENOTFOUND;
	entry_unlink(t, v);
	*victim = v;
	return 0;
}

void kvt_lru_stats(const struct kvt_lru *t, struct kvt_lru_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!t)
		return;
	st->entries = t->entries;
	st->bytes = t->bytes;
	st->raw_bytes = t->raw_bytes;
	st->capacity = t->capacity;
	st->hits = t->hits;
	st->misses = t->misses;
	st->expired = t->expired;
	st->buckets = t->nbuckets;
}

struct kvt_ref *kvt_lru_ref_acquire(struct kvt_ref *r)
{
	/*
	 * Relaxed is enough: the caller already holds a reference, so the
	 * entry cannot be freed concurrently and nothing is published here.
	 */
	unsigned prev = atomic_fetch_add_explicit(&r->refs, 1,
						  memory_order_relaxed);

	assert(prev > 0);
	(void)prev;
	return r;
}

void kvt_lru_ref_key(const struct kvt_ref *r, struct kvt_key *k)
{
	k->ns = r->name;
	k->ns_len = r->ns_len;
	k->key = r->name + r->ns_len;
	k->key_len = r->key_len;
}

uint64_t kvt_lru_ref_expires(const struct kvt_ref *r)
{
	return r->expires_s;
}

uint64_t kvt_lru_ref_cost(const struct kvt_ref *r)
{
	return entry_cost(r);
}

size_t kvt_lru_drop_ns(struct kvt_lru *t, const uint8_t *ns, size_t ns_len)
{
	struct kvt_ref *e, *next;
	size_t n = 0;

	/* A namespace with nothing here costs no walk. */
	if (!ns_find(t, ns, ns_len, ns_hash(ns, ns_len)))
		return 0;
	for (e = t->mru; e; e = next) {
		next = e->lru_next;
		if (e->ns_len == ns_len &&
		    (ns_len == 0 || memcmp(e->name, ns, ns_len) == 0)) {
			entry_drop(t, e);
			n++;
		}
	}
	return n;
}

int kvt_lru_set_pinned(struct kvt_lru *t, const struct kvt_key *k,
		       bool pinned, uint64_t now_s)
{
	struct kvt_ref *e;

	if (!t || !key_valid(k))
		return KVT_EINVAL;
	e = find_live(t, k, now_s);
	if (!e)
		return KVT_ENOTFOUND;
	if (pinned && !e->pins)
		t->pinned_bytes += entry_cost(e);
	else if (!pinned && e->pins)
		t->pinned_bytes -= entry_cost(e);
	e->pins = pinned ? 1 : 0;
	return 0;
}

uint64_t kvt_lru_expired_count(const struct kvt_lru *t)
{
	return t ? t->expired : 0;
}

uint64_t kvt_lru_pinned_bytes(const struct kvt_lru *t)
{
	return t ? t->pinned_bytes : 0;
}

void kvt_lru_ref_set_flags(struct kvt_lru *t, struct kvt_ref *r,
			   uint8_t set, uint8_t clear)
{
	/* A linked entry's marks are in its namespace's totals: move them. */
	bool linked = t && r->nsrec;

	if (linked)
		ns_account(t, r, -1);
	r->flags = (uint8_t)((r->flags & ~clear) | set);
	if (linked)
		ns_account(t, r, 1);
}

uint64_t kvt_lru_capacity(const struct kvt_lru *t)
{
	return t->capacity;
}

void kvt_lru_ref_meta(const struct kvt_ref *r, struct kvt_lru_meta *m)
{
	m->codec = r->codec;
	m->flags = r->flags;
	m->raw_len = r->raw_len;
	m->hits = r->hits;
	m->ctime_s = r->ctime_s;
	m->atime_s = r->atime_s;
}

void kvt_lru_foreach(const struct kvt_lru *t,
		     void (*fn)(void *arg, const struct kvt_ref *e), void *arg)
{
	for (const struct kvt_ref *e = t->mru; e; e = e->lru_next)
		fn(arg, e);
}

void kvt_lru_move(struct kvt_lru *t, struct kvt_ref *r, bool newest)
{
	/* Only a linked entry has a place in the order. */
	if (!t || !r->hpprev)
		return;
	lru_remove(t, r);
	if (newest) {
		lru_push_mru(t, r);
		return;
	}
	r->lru_prev = t->lru;
	r->lru_next = NULL;
	if (t->lru)
		t->lru->lru_next = r;
	else
		t->mru = r;
	t->lru = r;
}

int kvt_lru_set_ns_marks(struct kvt_lru *t, uint8_t mark0, uint8_t mark1)
{
	if (!t || t->entries)
		return KVT_EINVAL;
	t->marks[0] = mark0;
	t->marks[1] = mark1;
	return 0;
}

size_t kvt_lru_ns_count(const struct kvt_lru *t)
{
	return t ? t->ns_count : 0;
}

void kvt_lru_ns_foreach(const struct kvt_lru *t, kvt_lru_ns_fn fn, void *arg)
{
	for (size_t i = 0; t && i < t->ns_nbuckets; i++)
		for (const struct lru_ns *r = t->ns_buckets[i]; r; r = r->next)
			if (r->all.entries)
				fn(arg, r->name, r->ns_len, &r->all, r->mark);
}

/* The kvt_ref_* calls of kvt_tier.h live here, beside the struct. */

const uint8_t *kvt_ref_data(const struct kvt_ref *r)
{
	return r->data;
}

size_t kvt_ref_len(const struct kvt_ref *r)
{
	return r->len;
}

uint8_t kvt_ref_dtype(const struct kvt_ref *r)
{
	return r->dtype;
}

void kvt_ref_release(struct kvt_ref *r)
{
	unsigned prev;

	if (!r)
		return;
	/*
	 * acq_rel: our earlier reads of the value must happen before another
	 * thread's free, and the thread that frees must see every other
	 * holder's reads as done.
	 */
	prev = atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel);
	assert(prev > 0);
	if (prev == 1) {
		assert(!r->hpprev); /* the table's reference is gone too */
		kvt_block_free(r->mem);
		free(r);
	}
}
