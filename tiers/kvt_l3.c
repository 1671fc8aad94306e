/*
 * kvt_l3.c - L3, the SSD tier: LMDB index + preallocated region files.
 *
 * The manual is kvt_l3.h; kvt_l3_int.h says how the tier is split into
 * files.  Notes on the implementation:
 *
 * - The in-memory mirror (hash table of struct l3_ent) is the source every
 *   lookup uses; LMDB is only written (and read at open and by the checker).
 *   So the read path never opens an LMDB transaction, and a transaction is
 *   never held across disk I/O.
 * - Threads.  One writer at a time (whoever holds l3->wmu: put_batch, del,
 *   drop_ns, check, close, or a reader removing what it found corrupt or
 *   expired) changes the mirror's structure and writes LMDB; it changes the
 *   mirror under l3->mu and may read it without, since nobody else changes
 *   the hash chains or region lists.  Readers (read_batch, on any number of
 *   threads, and state, contains, foreach, stats) look up under mu.  What a
 *   reader changes, it changes under mu: hit counts, the dirty and doomed
 *   lists, a region's count of reads in flight, the counters.  A reader
 *   never keeps a pointer to an entry past mu: after its I/O it looks the
 *   key up again and compares the location.
 * - Reads against reclaim: a region's readers count (taken at lookup, under
 *   mu) keeps the writer from overwriting a region while a read of it is in
 *   flight; the writer first takes the region's entries out of the mirror
 *   (so no new read can start there), then waits for the count to reach 0.
 * - LMDB keys: [0][ns_len][ns][key] when that fits in LMDB's maximum key size
 *   (511 bytes), else [1][ns_len][ns][XXH3-128(key)] with the full key
 *   appended to the record.  Two long keys with the same 128-bit hash replace
 *   each other; a lookup compares full keys, so one is never served for the
 *   other.  That XXH3-128 is part of the on-disk format and never changes;
 *   the mirror's own hash (kvt_l3i_ikey_hash) is in memory only.
 * - Hit counts are persisted lazily (with the next put's transaction, or at
 *   close): an extra synced commit per read batch would cost more than the
 *   counts are worth.
 */
#include "kvt_l3_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "kvtier_errors.h"

/* ---- small helpers ------------------------------------------------------ */

int kvt_l3i_expired(const struct kvt_l3 *l3, uint64_t expiry)
{
	return expiry != 0 && expiry <= l3->now_s();
}

/* Maps an LMDB return code onto kvtier's error space. */
int kvt_l3i_mdb_err(int rc)
{
	if (rc == 0)
		return 0;
	if (rc > 0)
		return -rc; /* LMDB passes errno values through */
	if (rc == MDB_MAP_FULL)
		return -ENOSPC;
	return KVT_ESERVER;
}

/* ---- keys and records --------------------------------------------------- */

int kvt_l3i_key_encode(const struct kvt_l3 *l3, const struct kvt_key *k,
		      struct l3_kenc *ke)
{
	if (!k || (k->ns_len && !k->ns) || (k->key_len && !k->key))
		return KVT_EINVAL;
	if (k->ns_len > KVT_L3_NS_MAX || k->key_len > KVT_L3_KEY_MAX)
		return KVT_ETOOBIG;
	ke->ns = k->ns;
	ke->ns_len = k->ns_len;
	ke->key = k->key;
	ke->key_len = k->key_len;
	ke->ikey[1] = (uint8_t)k->ns_len;
	if (k->ns_len)
		memcpy(ke->ikey + 2, k->ns, k->ns_len);
	if (2 + k->ns_len + k->key_len <= l3->maxkey) {
		ke->hashed = 0;
		ke->ikey[0] = 0;
		if (k->key_len)
			memcpy(ke->ikey + 2 + k->ns_len, k->key, k->key_len);
		ke->ikey_len = 2 + k->ns_len + k->key_len;
	} else {
		XXH128_hash_t h = XXH3_128bits(k->key, k->key_len);

		ke->hashed = 1;
		ke->ikey[0] = 1;
		put_u64(ke->ikey + 2 + k->ns_len, h.low64);
		put_u64(ke->ikey + 2 + k->ns_len + 8, h.high64);
		ke->ikey_len = 2 + k->ns_len + 16;
	}
	ke->hash = kvt_l3i_ikey_hash(ke->ikey, ke->ikey_len);
	return 0;
}

/*
 * The mirror is keyed by LMDB key, so it hashes what the LMDB key holds:
 * kvt_key_hash() of the namespace and of the key, or for a hashed ikey of
 * the 16 bytes of XXH3-128 that stand for the key (two long keys that
 * share an LMDB key must share a bucket).  That XXH3-128 is on disk and
 * stays as it is; only this in-memory hash may change.
 */
uint64_t kvt_l3i_ikey_hash(const uint8_t *ikey, size_t ikey_len)
{
	struct kvt_key k = { NULL, 0, ikey, ikey_len };

	/* A malformed key (never in the mirror) is hashed whole. */
	if (ikey_len >= 2 && (size_t)ikey[1] + 2 <= ikey_len) {
		k.ns = ikey + 2;
		k.ns_len = ikey[1];
		k.key = ikey + 2 + k.ns_len;
		k.key_len = ikey_len - 2 - k.ns_len;
	}
	return kvt_key_hash(&k);
}

void kvt_l3i_rec_encode(uint8_t *p, const struct l3_loc *l)
{
	put_u32(p, l->region);
	p[4] = l->codec;
	p[5] = l->dtype;
	put_u16(p + 6, 0);
	put_u64(p + 8, l->generation);
	put_u64(p + 16, l->offset);
	put_u64(p + 24, l->length);
	put_u64(p + 32, l->data_len);
	put_u64(p + 40, l->raw_len);
	put_u64(p + 48, l->checksum);
	put_u64(p + 56, l->expiry);
	put_u64(p + 64, l->hits);
}

void kvt_l3i_rec_decode(const uint8_t *p, struct l3_loc *l)
{
	l->region = get_u32(p);
	l->codec = p[4];
	l->dtype = p[5];
	l->generation = get_u64(p + 8);
	l->offset = get_u64(p + 16);
	l->length = get_u64(p + 24);
	l->data_len = get_u64(p + 32);
	l->raw_len = get_u64(p + 40);
	l->checksum = get_u64(p + 48);
	l->expiry = get_u64(p + 56);
	l->hits = get_u64(p + 64);
}

/* The namespace and key an entry was stored under. */
void kvt_l3i_ent_key(const struct l3_ent *e, const uint8_t **ns, size_t *ns_len,
		    const uint8_t **key, size_t *key_len)
{
	*ns_len = e->bytes[1];
	*ns = e->bytes + 2;
	if (e->bytes[0] == 0) {
		*key = e->bytes + 2 + *ns_len;
		*key_len = e->ikey_len - 2 - *ns_len;
	} else {
		*key = e->bytes + e->ikey_len;
		*key_len = e->xkey_len;
	}
}

struct l3_ent *kvt_l3i_ent_new(const uint8_t *ikey, size_t ikey_len,
			      const uint8_t *xkey, size_t xkey_len,
			      uint64_t hash)
{
	struct l3_ent *e = calloc(1, sizeof(*e) + ikey_len + xkey_len);

	if (!e)
		return NULL;
	e->hash = hash;
	e->ikey_len = (uint16_t)ikey_len;
	e->xkey_len = (uint32_t)xkey_len;
	memcpy(e->bytes, ikey, ikey_len);
	if (xkey_len)
		memcpy(e->bytes + ikey_len, xkey, xkey_len);
	return e;
}

static int rec_put_loc(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e,
		       const struct l3_loc *loc)
{
	uint8_t buf[L3_REC + KVT_L3_KEY_MAX];
	MDB_val k = { e->ikey_len, (void *)ent_ikey(e) };
	MDB_val v = { L3_REC + e->xkey_len, buf };

	kvt_l3i_rec_encode(buf, loc);
	if (e->xkey_len)
		memcpy(buf + L3_REC, e->bytes + e->ikey_len, e->xkey_len);
	return mdb_put(txn, l3->db_index, &k, &v, 0);
}

int kvt_l3i_rec_put(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e)
{
	return rec_put_loc(l3, txn, e, &e->loc);
}

int kvt_l3i_rec_put_hits(struct kvt_l3 *l3, MDB_txn *txn,
			 const struct l3_ent *e, uint64_t hits)
{
	/* All but hits are written once; hits is the copy taken under mu. */
	struct l3_loc loc = {
		.region = e->loc.region, .codec = e->loc.codec,
		.dtype = e->loc.dtype, .generation = e->loc.generation,
		.offset = e->loc.offset, .length = e->loc.length,
		.data_len = e->loc.data_len, .raw_len = e->loc.raw_len,
		.checksum = e->loc.checksum, .expiry = e->loc.expiry,
		.hits = hits,
	};

	return rec_put_loc(l3, txn, e, &loc);
}

int kvt_l3i_rec_del(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e)
{
	MDB_val k = { e->ikey_len, (void *)ent_ikey(e) };
	int rc = mdb_del(txn, l3->db_index, &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : rc;
}

int kvt_l3i_region_rec_put(struct kvt_l3 *l3, MDB_txn *txn, uint32_t id,
			  uint64_t gen, uint64_t seq, uint64_t fill)
{
	uint8_t kb[4], vb[L3_REGREC];
	MDB_val k = { sizeof(kb), kb };
	MDB_val v = { sizeof(vb), vb };

	put_u32(kb, id);
	put_u64(vb, gen);
	put_u64(vb + 8, seq);
	put_u64(vb + 16, fill);
	return mdb_put(txn, l3->db_regions, &k, &v, 0);
}

/* ---- the in-memory mirror (caller holds mu when mutating) ---------------- */

static struct l3_ent **bucket(struct kvt_l3 *l3, uint64_t hash)
{
	return &l3->buckets[hash & (l3->nbuckets - 1)];
}

struct l3_ent *kvt_l3i_map_find(struct kvt_l3 *l3, const uint8_t *ikey,
			       size_t ikey_len, uint64_t hash)
{
	struct l3_ent *e;

	for (e = *bucket(l3, hash); e; e = e->hnext)
		if (e->hash == hash && e->ikey_len == ikey_len &&
		    !memcmp(ent_ikey(e), ikey, ikey_len))
			return e;
	return NULL;
}

/* The entry stored under exactly this namespace and key, or NULL. */
struct l3_ent *kvt_l3i_map_lookup(struct kvt_l3 *l3, const struct l3_kenc *ke)
{
	struct l3_ent *e = kvt_l3i_map_find(l3, ke->ikey, ke->ikey_len, ke->hash);

	if (e && ke->hashed &&
	    (e->xkey_len != ke->key_len ||
	     memcmp(e->bytes + e->ikey_len, ke->key, ke->key_len)))
		return NULL;
	return e;
}

static void map_grow(struct kvt_l3 *l3)
{
	size_t n = l3->nbuckets * 2;
	struct l3_ent **nb = calloc(n, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < l3->nbuckets; i++) {
		struct l3_ent *e = l3->buckets[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			e->hnext = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	}
	free(l3->buckets);
	l3->buckets = nb;
	l3->nbuckets = n;
}

static struct l3_ent **list_head(struct kvt_l3 *l3, int list)
{
	return list == L3_LIST_DIRTY ? &l3->dirty : &l3->doomed;
}

void kvt_l3i_list_unlink(struct kvt_l3 *l3, struct l3_ent *e)
{
	if (e->list == L3_LIST_NONE)
		return;
	if (e->dprev)
		e->dprev->dnext = e->dnext;
	else
		*list_head(l3, e->list) = e->dnext;
	if (e->dnext)
		e->dnext->dprev = e->dprev;
	if (e->list == L3_LIST_DOOMED)
		l3->ndoomed--;
	e->dprev = e->dnext = NULL;
	e->list = L3_LIST_NONE;
}

void kvt_l3i_list_link(struct kvt_l3 *l3, struct l3_ent *e, int list)
{
	struct l3_ent **head = list_head(l3, list);

	if (e->list == list)
		return;
	kvt_l3i_list_unlink(l3, e);
	e->list = (uint8_t)list;
	e->dprev = NULL;
	e->dnext = *head;
	if (*head)
		(*head)->dprev = e;
	*head = e;
	if (list == L3_LIST_DOOMED)
		l3->ndoomed++;
}

/* Adds e (not present) to the mirror and the accounting. */
void kvt_l3i_map_insert(struct kvt_l3 *l3, struct l3_ent *e)
{
	struct l3_region *r = &l3->regions[e->loc.region];
	struct l3_ent **b;

	if (l3->nents >= l3->nbuckets)
		map_grow(l3);
	b = bucket(l3, e->hash);
	e->hnext = *b;
	*b = e;
	e->rprev = NULL;
	e->rnext = r->ents;
	if (r->ents)
		r->ents->rprev = e;
	r->ents = e;
	r->live += e->loc.length;
	l3->nents++;
	l3->bytes += e->loc.length;
	l3->raw_bytes += e->loc.raw_len;
}

/* Removes e from the mirror and the accounting and frees it. */
void kvt_l3i_map_remove(struct kvt_l3 *l3, struct l3_ent *e)
{
	struct l3_region *r = &l3->regions[e->loc.region];
	struct l3_ent **pp = bucket(l3, e->hash);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->rprev)
		e->rprev->rnext = e->rnext;
	else
		r->ents = e->rnext;
	if (e->rnext)
		e->rnext->rprev = e->rprev;
	kvt_l3i_list_unlink(l3, e);
	r->live -= e->loc.length;
	l3->nents--;
	l3->bytes -= e->loc.length;
	l3->raw_bytes -= e->loc.raw_len;
	free(e);
}

/* ---- small calls -------------------------------------------------------- */

int kvt_l3_state(struct kvt_l3 *l3, const struct kvt_key *k)
{
	struct l3_kenc ke;
	struct l3_ent *e;
	int st = 0;

	if (!l3 || kvt_l3i_key_encode(l3, k, &ke))
		return 0;
	lock(l3);
	e = kvt_l3i_map_lookup(l3, &ke);
	if (e && e->list != L3_LIST_DOOMED)
		st = kvt_l3i_expired(l3, e->loc.expiry) ? 2 : 1;
	unlock(l3);
	return st;
}

int kvt_l3_contains(struct kvt_l3 *l3, const struct kvt_key *k)
{
	struct l3_kenc ke;
	struct l3_ent *e;
	int found;

	if (!l3 || kvt_l3i_key_encode(l3, k, &ke))
		return 0;
	lock(l3);
	e = kvt_l3i_map_lookup(l3, &ke);
	found = e && e->list != L3_LIST_DOOMED &&
		!kvt_l3i_expired(l3, e->loc.expiry);
	unlock(l3);
	return found;
}

int kvt_l3_del(struct kvt_l3 *l3, const struct kvt_key *k)
{
	struct l3_kenc ke;
	struct l3_ent *e;
	MDB_txn *txn;
	int rc;

	if (!l3)
		return KVT_EINVAL;
	if ((rc = kvt_l3i_key_encode(l3, k, &ke)))
		return rc == KVT_ETOOBIG ? KVT_ENOTFOUND : rc;
	pthread_mutex_lock(&l3->wmu);
	kvt_l3i_purge_doomed(l3);
	e = kvt_l3i_map_lookup(l3, &ke); /* the writer: no lock to look */
	if (!e) {
		rc = KVT_ENOTFOUND;
		goto out;
	}
	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn))) {
		rc = kvt_l3i_mdb_err(rc);
		goto out;
	}
	if ((rc = kvt_l3i_rec_del(l3, txn, e))) {
		mdb_txn_abort(txn);
		rc = kvt_l3i_mdb_err(rc);
		goto out;
	}
	if ((rc = mdb_txn_commit(txn))) {
		rc = kvt_l3i_mdb_err(rc);
		goto out;
	}
	lock(l3);
	/* Expired or doomed, it was already gone for every reader. */
	rc = e->list == L3_LIST_DOOMED || kvt_l3i_expired(l3, e->loc.expiry) ?
		KVT_ENOTFOUND : 0;
	kvt_l3i_map_remove(l3, e);
	unlock(l3);
out:
	pthread_mutex_unlock(&l3->wmu);
	return rc;
}

/* Does entry e belong to namespace ns?  ikey = flag, ns_len, ns, key. */
static bool ent_in_ns(const struct l3_ent *e, const uint8_t *ns,
		      size_t ns_len)
{
	return e->ikey_len >= 2 + ns_len && e->bytes[1] == ns_len &&
	       (ns_len == 0 || memcmp(e->bytes + 2, ns, ns_len) == 0);
}

int kvt_l3_drop_ns(struct kvt_l3 *l3, const uint8_t *ns, size_t ns_len,
		   uint64_t *dropped)
{
	struct l3_ent **v = NULL;
	size_t n = 0, cap = 0;
	MDB_txn *txn;
	int rc;

	if (!l3 || (ns_len && !ns) || ns_len > KVT_L3_NS_MAX)
		return KVT_EINVAL;
	if (dropped)
		*dropped = 0;
	pthread_mutex_lock(&l3->wmu);
	kvt_l3i_purge_doomed(l3);
	/* Only the writer changes the map, so the entries stay valid. */
	lock(l3);
	for (size_t b = 0; b < l3->nbuckets; b++)
		for (struct l3_ent *e = l3->buckets[b]; e; e = e->hnext) {
			if (!ent_in_ns(e, ns, ns_len))
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct l3_ent **nv = realloc(v, nc * sizeof(*v));
				if (!nv) {
					unlock(l3);
					pthread_mutex_unlock(&l3->wmu);
					free(v);
					return -ENOMEM;
				}
				v = nv;
				cap = nc;
			}
			v[n++] = e;
		}
	unlock(l3);
	rc = 0;
	if (n == 0)
		goto out;
	/* One transaction for the whole namespace: all of it goes, or none. */
	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn))) {
		rc = kvt_l3i_mdb_err(rc);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((rc = kvt_l3i_rec_del(l3, txn, v[i]))) {
			mdb_txn_abort(txn);
			rc = kvt_l3i_mdb_err(rc);
			goto out;
		}
	if ((rc = mdb_txn_commit(txn))) {
		rc = kvt_l3i_mdb_err(rc);
		goto out;
	}
	lock(l3);
	for (size_t i = 0; i < n; i++)
		kvt_l3i_map_remove(l3, v[i]);
	unlock(l3);
	if (dropped)
		*dropped = n;
out:
	pthread_mutex_unlock(&l3->wmu);
	free(v);
	return rc;
}

int kvt_l3_foreach(struct kvt_l3 *l3, kvt_l3_visit_fn fn, void *arg)
{
	int rc = 0;

	if (!l3 || !fn)
		return KVT_EINVAL;
	lock(l3);
	for (size_t b = 0; b < l3->nbuckets && !rc; b++)
		for (struct l3_ent *e = l3->buckets[b]; e && !rc; e = e->hnext) {
			struct kvt_key k;

			if (e->list == L3_LIST_DOOMED ||
			    kvt_l3i_expired(l3, e->loc.expiry))
				continue;
			kvt_l3i_ent_key(e, &k.ns, &k.ns_len, &k.key,
					&k.key_len);
			rc = fn(arg, &k, e->loc.raw_len, e->loc.hits);
		}
	unlock(l3);
	return rc;
}

void kvt_l3_stats(struct kvt_l3 *l3, struct kvt_l3_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!l3)
		return;
	lock(l3);
	st->entries = l3->nents;
	st->bytes = l3->bytes;
	st->raw_bytes = l3->raw_bytes;
	st->capacity_bytes = (uint64_t)l3->nregions * l3->region_size;
	st->hits = l3->hits;
	st->bytes_read = l3->bytes_read;
	st->bytes_written = l3->bytes_written;
	st->reads_inflight = l3->inflight;
	st->checksum_failures = l3->csum_fail;
	st->regions_reclaimed = l3->reclaimed;
	st->write_errors = l3->write_errors;
	st->dead_bytes = l3->total_fill - l3->bytes;
	st->regions = l3->nregions;
	st->region_size = l3->region_size;
	st->direct_io = l3->direct;
	st->uring = l3->rd0 && l3->rd0->have_ring;
	unlock(l3);
}
