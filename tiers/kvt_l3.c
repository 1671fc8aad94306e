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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
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
	*ns_len = e->ns->len;
	*ns = e->ns->name;
	*key = ent_keybytes(e);
	*key_len = e->key_len;
}

size_t kvt_l3i_ent_ikey(const struct l3_ent *e, uint8_t *buf)
{
	size_t n = e->hashed ? 16 : e->key_len;

	buf[0] = e->hashed;
	buf[1] = e->ns->len;
	memcpy(buf + 2, e->ns->name, e->ns->len);
	memcpy(buf + 2 + e->ns->len, e->bytes, n);
	return 2 + e->ns->len + n;
}

int kvt_l3i_rec_judge(const struct kvt_l3 *l3, const MDB_val *k,
		      const MDB_val *v, uint64_t now, struct l3_loc *loc)
{
	const uint8_t *kp = k->mv_data;
	size_t xlen = v->mv_size >= L3_REC ? v->mv_size - L3_REC : 0;
	const struct l3_region *r;
	size_t key_len;

	/* [flag][ns_len][ns][key or XXH3-128], full key after a hashed one */
	if (k->mv_size < 2 || k->mv_size >= L3_IKEY_MAX ||
	    v->mv_size < L3_REC || kp[0] > 1 ||
	    (size_t)kp[1] + 2 > k->mv_size ||
	    (kp[0] == 1 ? k->mv_size != (size_t)kp[1] + 18 : xlen != 0))
		return L3_REC_MALFORMED;
	key_len = kp[0] ? xlen : k->mv_size - 2 - kp[1];
	kvt_l3i_rec_decode(v->mv_data, loc);
	if (loc->region >= l3->nregions)
		return L3_REC_REGION;
	r = &l3->regions[loc->region];
	if (!r->seq || loc->generation != r->generation)
		return L3_REC_STALE;
	/* Where it is, and lengths that agree with its key's. */
	if (loc->offset % KVT_L3_ALIGN || loc->data_len > loc->length ||
	    loc->length != entry_size(kp[1], key_len, loc->data_len) ||
	    loc->offset + loc->length > r->fill)
		return L3_REC_PLACE;
	if (loc->expiry && loc->expiry <= now)
		return L3_REC_EXPIRED;
	return L3_REC_OK;
}

const char *kvt_l3i_rec_why(int verdict)
{
	switch (verdict) {
	case L3_REC_OK: return "sound";
	case L3_REC_EXPIRED: return "expired";
	case L3_REC_MALFORMED: return "malformed record";
	case L3_REC_REGION: return "in a region the store does not have";
	case L3_REC_STALE: return "in a region reclaimed since (or free)";
	default: return "misplaced (alignment, lengths or past the region's "
			"fill)";
	}
}

void kvt_l3i_rec_key(const MDB_val *k, const MDB_val *v, const uint8_t **ns,
		     size_t *ns_len, const uint8_t **key, size_t *key_len)
{
	const uint8_t *kp = k->mv_data;

	*ns_len = kp[1];
	*ns = kp + 2;
	if (kp[0] == 0) {
		*key = kp + 2 + kp[1];
		*key_len = k->mv_size - 2 - kp[1];
	} else {
		*key = (const uint8_t *)v->mv_data + L3_REC;
		*key_len = v->mv_size - L3_REC;
	}
}

/* ---- the log ------------------------------------------------------------ */

void kvt_l3i_log(struct kvt_l3 *l3, int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!l3->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	l3->log(l3->log_arg, level, line);
}

/* ---- entry headers and checksums --------------------------------------- */

void kvt_l3i_hdr_encode(uint8_t *p, const struct l3_hdr *h)
{
	put_u32(p + L3_HDR_MAGIC, h->magic);
	put_u16(p + L3_HDR_VERSION, h->version);
	p[L3_HDR_CODEC] = h->codec;
	p[L3_HDR_DTYPE] = h->dtype;
	put_u32(p + L3_HDR_NS_LEN, h->ns_len);
	put_u32(p + L3_HDR_KEY_LEN, h->key_len);
	put_u64(p + L3_HDR_RAW_LEN, h->raw_len);
	put_u64(p + L3_HDR_DATA_LEN, h->data_len);
	put_u64(p + L3_HDR_GENERATION, h->generation);
	put_u64(p + L3_HDR_OFFSET, h->offset);
	put_u32(p + L3_HDR_REGION, h->region);
	put_u32(p + L3_HDR_RESERVED, 0);
	put_u64(p + L3_HDR_CHECKSUM, h->checksum);
}

void kvt_l3i_hdr_decode(const uint8_t *p, struct l3_hdr *h)
{
	h->magic = get_u32(p + L3_HDR_MAGIC);
	h->version = get_u16(p + L3_HDR_VERSION);
	h->codec = p[L3_HDR_CODEC];
	h->dtype = p[L3_HDR_DTYPE];
	h->ns_len = get_u32(p + L3_HDR_NS_LEN);
	h->key_len = get_u32(p + L3_HDR_KEY_LEN);
	h->raw_len = get_u64(p + L3_HDR_RAW_LEN);
	h->data_len = get_u64(p + L3_HDR_DATA_LEN);
	h->generation = get_u64(p + L3_HDR_GENERATION);
	h->offset = get_u64(p + L3_HDR_OFFSET);
	h->region = get_u32(p + L3_HDR_REGION);
	h->checksum = get_u64(p + L3_HDR_CHECKSUM);
}

uint64_t kvt_l3i_entry_sum(const struct l3_hdr *h, const uint8_t *ns,
			   const uint8_t *key, const uint8_t *v0, size_t n0,
			   const uint8_t *v1, size_t n1)
{
	uint8_t hb[L3_HDR];
	XXH3_state_t st;
	struct l3_hdr z = *h;

	z.checksum = 0;
	kvt_l3i_hdr_encode(hb, &z);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, hb, L3_HDR_CHECKSUM);
	XXH3_64bits_update(&st, ns, h->ns_len);
	XXH3_64bits_update(&st, key, h->key_len);
	XXH3_64bits_update(&st, v0, n0);
	XXH3_64bits_update(&st, v1, n1);
	return XXH3_64bits_digest(&st);
}

void kvt_l3i_loc_hdr(const struct l3_loc *loc, size_t ns_len, size_t key_len,
		     struct l3_hdr *h)
{
	*h = (struct l3_hdr){
		.magic = L3_MAGIC,
		.version = L3_VERSION,
		.codec = loc->codec,
		.dtype = loc->dtype,
		.ns_len = (uint32_t)ns_len,
		.key_len = (uint32_t)key_len,
		.raw_len = loc->raw_len,
		.data_len = loc->data_len,
		.generation = loc->generation,
		.offset = loc->offset,
		.region = loc->region,
		.checksum = loc->checksum,
	};
}

/* ---- namespaces (mu held) ----------------------------------------------- */

static uint64_t ns_hash(const uint8_t *ns, size_t ns_len)
{
	struct kvt_key k = { NULL, 0, ns, ns_len };

	return kvt_key_hash(&k);
}

struct l3_ns *kvt_l3i_ns_find(struct kvt_l3 *l3, const uint8_t *ns,
			      size_t ns_len)
{
	uint64_t h;

	if (!l3->nnsb)
		return NULL;
	h = ns_hash(ns, ns_len);
	for (struct l3_ns *n = l3->nsb[h & (l3->nnsb - 1)]; n; n = n->hnext)
		if (n->hash == h && n->len == ns_len &&
		    !memcmp(n->name, ns, ns_len))
			return n;
	return NULL;
}

static void ns_grow(struct kvt_l3 *l3)
{
	size_t n = l3->nnsb ? l3->nnsb * 2 : 64;
	struct l3_ns **nb = calloc(n, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < l3->nnsb; i++)
		for (struct l3_ns *x = l3->nsb[i], *next; x; x = next) {
			next = x->hnext;
			x->hnext = nb[x->hash & (n - 1)];
			nb[x->hash & (n - 1)] = x;
		}
	free(l3->nsb);
	l3->nsb = nb;
	l3->nnsb = n;
}

/* The namespace ns with one more reference, created if new; NULL: ENOMEM. */
static struct l3_ns *ns_ref(struct kvt_l3 *l3, const uint8_t *ns,
			    size_t ns_len)
{
	struct l3_ns *n = kvt_l3i_ns_find(l3, ns, ns_len);

	if (!n) {
		if (l3->nns >= l3->nnsb)
			ns_grow(l3);
		if (!l3->nnsb || !(n = calloc(1, sizeof(*n) + ns_len)))
			return NULL;
		n->hash = ns_hash(ns, ns_len);
		n->len = (uint8_t)ns_len;
		memcpy(n->name, ns, ns_len);
		n->hnext = l3->nsb[n->hash & (l3->nnsb - 1)];
		l3->nsb[n->hash & (l3->nnsb - 1)] = n;
		l3->nns++;
	}
	n->refs++;
	return n;
}

static void ns_unref(struct kvt_l3 *l3, struct l3_ns *n)
{
	struct l3_ns **pp;

	if (--n->refs)
		return;
	for (pp = &l3->nsb[n->hash & (l3->nnsb - 1)]; *pp != n;
	     pp = &(*pp)->hnext)
		;
	*pp = n->hnext;
	l3->nns--;
	free(n);
}

/* ---- entries ------------------------------------------------------------- */

struct l3_ent *kvt_l3i_ent_new(struct kvt_l3 *l3, const uint8_t *ikey,
			      size_t ikey_len, const uint8_t *xkey,
			      size_t xkey_len, uint64_t hash)
{
	size_t ns_len, kpart;
	int hashed;
	struct l3_ent *e;

	if (ikey_len < 2 || ikey[0] > 1 || (size_t)ikey[1] + 2 > ikey_len)
		return NULL;
	ns_len = ikey[1];
	kpart = ikey_len - 2 - ns_len;
	hashed = ikey[0];
	if (hashed ? kpart != 16 : xkey_len != 0)
		return NULL;
	e = calloc(1, sizeof(*e) + kpart + xkey_len);
	if (!e)
		return NULL;
	e->hash = hash;
	e->hashed = (uint8_t)hashed;
	e->key_len = (uint32_t)(hashed ? xkey_len : kpart);
	memcpy(e->bytes, ikey + 2 + ns_len, kpart);
	if (xkey_len)
		memcpy(e->bytes + 16, xkey, xkey_len);
	lock(l3);
	e->ns = ns_ref(l3, ikey + 2, ns_len);
	unlock(l3);
	if (!e->ns) {
		free(e);
		return NULL;
	}
	return e;
}

void kvt_l3i_ent_free(struct kvt_l3 *l3, struct l3_ent *e)
{
	if (!e)
		return;
	lock(l3);
	ns_unref(l3, e->ns);
	unlock(l3);
	free(e);
}

static int rec_put_loc(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e,
		       const struct l3_loc *loc)
{
	uint8_t buf[L3_REC + KVT_L3_KEY_MAX], kb[L3_IKEY_MAX];
	size_t xkey_len = e->hashed ? e->key_len : 0;
	MDB_val k = { kvt_l3i_ent_ikey(e, kb), kb };
	MDB_val v = { L3_REC + xkey_len, buf };

	kvt_l3i_rec_encode(buf, loc);
	if (xkey_len)
		memcpy(buf + L3_REC, ent_keybytes(e), xkey_len);
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
	uint8_t kb[L3_IKEY_MAX];
	MDB_val k = { kvt_l3i_ent_ikey(e, kb), kb };
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

/* Does e have this LMDB key (split into namespace, flag and key part)? */
static int ent_has_ikey(const struct l3_ent *e, const uint8_t *ns,
			size_t ns_len, int hashed, const uint8_t *kpart,
			size_t kpart_len)
{
	return e->hashed == hashed && e->ns->len == ns_len &&
	       (hashed ? kpart_len == 16 : kpart_len == e->key_len) &&
	       !memcmp(e->bytes, kpart, kpart_len) &&
	       !memcmp(e->ns->name, ns, ns_len);
}

struct l3_ent *kvt_l3i_map_find(struct kvt_l3 *l3, const uint8_t *ikey,
			       size_t ikey_len, uint64_t hash)
{
	size_t ns_len;

	if (ikey_len < 2 || (size_t)ikey[1] + 2 > ikey_len)
		return NULL;
	ns_len = ikey[1];
	for (struct l3_ent *e = *bucket(l3, hash); e; e = e->hnext)
		if (e->hash == hash &&
		    ent_has_ikey(e, ikey + 2, ns_len, ikey[0], ikey + 2 + ns_len,
				 ikey_len - 2 - ns_len))
			return e;
	return NULL;
}

struct l3_ent *kvt_l3i_map_find_ent(struct kvt_l3 *l3, const struct l3_ent *e)
{
	for (struct l3_ent *x = *bucket(l3, e->hash); x; x = x->hnext)
		if (x->hash == e->hash && x->ns == e->ns &&
		    x->hashed == e->hashed &&
		    (e->hashed || x->key_len == e->key_len) &&
		    !memcmp(x->bytes, e->bytes, e->hashed ? 16 : e->key_len))
			return x;
	return NULL;
}

/* The entry stored under exactly this namespace and key, or NULL. */
struct l3_ent *kvt_l3i_map_lookup(struct kvt_l3 *l3, const struct l3_kenc *ke)
{
	struct l3_ent *e = kvt_l3i_map_find(l3, ke->ikey, ke->ikey_len, ke->hash);

	if (e && ke->hashed &&
	    (e->key_len != ke->key_len ||
	     memcmp(ent_keybytes(e), ke->key, ke->key_len)))
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
	e->nprev = NULL;
	e->nnext = e->ns->ents;
	if (e->ns->ents)
		e->ns->ents->nprev = e;
	e->ns->ents = e;
	if (e->ns->entries++ == 0)
		l3->nns_live++;
	e->ns->bytes += e->loc.length;
	e->ns->raw_bytes += e->loc.raw_len;
	e->ns->hits += e->loc.hits;
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
	if (e->nprev)
		e->nprev->nnext = e->nnext;
	else
		e->ns->ents = e->nnext;
	if (e->nnext)
		e->nnext->nprev = e->nprev;
	if (--e->ns->entries == 0)
		l3->nns_live--;
	e->ns->bytes -= e->loc.length;
	e->ns->raw_bytes -= e->loc.raw_len;
	e->ns->hits -= e->loc.hits;
	kvt_l3i_list_unlink(l3, e);
	r->live -= e->loc.length;
	l3->nents--;
	l3->bytes -= e->loc.length;
	l3->raw_bytes -= e->loc.raw_len;
	ns_unref(l3, e->ns);
	free(e);
}

void kvt_l3i_map_free(struct kvt_l3 *l3)
{
	if (l3->buckets)
		for (size_t i = 0; i < l3->nbuckets; i++)
			for (struct l3_ent *e = l3->buckets[i], *n; e; e = n) {
				n = e->hnext;
				free(e);
			}
	for (size_t i = 0; i < l3->nnsb; i++)
		for (struct l3_ns *x = l3->nsb[i], *n; x; x = n) {
			n = x->hnext;
			free(x);
		}
	free(l3->buckets);
	free(l3->nsb);
	l3->buckets = NULL;
	l3->nsb = NULL;
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

static int del_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	return kvt_l3i_rec_del(l3, txn, arg);
}

/*
 * Runs a transaction that deletes (DEL, DROP): with a map that is full and
 * cannot grow, reclaims a region (which frees index pages) and tries
 * again, so that deleting never fails for want of index room.
 */
static int del_run(struct kvt_l3 *l3,
		   int (*fn)(struct kvt_l3 *l3, MDB_txn *txn, void *arg),
		   void *arg)
{
	int rc;

	while ((rc = kvt_l3i_txn_run(l3, fn, arg)) == MDB_MAP_FULL &&
	       kvt_l3i_index_full_reclaim(l3) == 0)
		;
	return rc;
}

int kvt_l3_del(struct kvt_l3 *l3, const struct kvt_key *k)
{
	struct l3_kenc ke;
	struct l3_ent *e;
	int rc;

	if (!l3 || l3->read_only)
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
	if ((rc = del_run(l3, del_body, e))) {
		rc = kvt_l3i_mdb_err(rc);
		l3->wfail_op = "commit";
		l3->wfail_region = -1;
		kvt_l3i_log_failure(l3, "del", rc, 1);
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

struct drop_arg {
	struct l3_ns *ns;
	size_t max; /* entries per transaction; SIZE_MAX: all */
};

static int drop_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	struct drop_arg *a = arg;
	size_t i = 0;
	int rc = 0;

	/* Only the writer changes the namespace's list: no lock to walk it. */
	for (struct l3_ent *e = a->ns->ents; e && !rc && i < a->max;
	     e = e->nnext, i++)
		rc = kvt_l3i_rec_del(l3, txn, e);
	return rc;
}

int kvt_l3_drop_ns(struct kvt_l3 *l3, const uint8_t *ns, size_t ns_len,
		   uint64_t *dropped)
{
	struct drop_arg a = { NULL, SIZE_MAX };
	uint64_t n;
	int rc = 0;

	if (!l3 || (ns_len && !ns) || ns_len > KVT_L3_NS_MAX || l3->read_only)
		return KVT_EINVAL;
	if (dropped)
		*dropped = 0;
	pthread_mutex_lock(&l3->wmu);
	kvt_l3i_purge_doomed(l3);
	lock(l3);
	a.ns = kvt_l3i_ns_find(l3, ns, ns_len);
	n = a.ns ? a.ns->entries : 0;
	if (a.ns)
		a.ns->refs++; /* kept while its entries go */
	unlock(l3);
	if (n == 0)
		goto out;
	/*
	 * One transaction for the whole namespace, so that all of it goes or
	 * none -- unless the index map is too full for a transaction that
	 * large: then in parts, each freeing room for the next, since a DROP
	 * must succeed.
	 */
	rc = kvt_l3i_txn_run(l3, drop_body, &a);
	if (rc == MDB_MAP_FULL) {
		a.max = 256;
		while (a.ns->ents && !(rc = del_run(l3, drop_body, &a))) {
			lock(l3);
			for (size_t i = 0; i < a.max && a.ns->ents; i++)
				kvt_l3i_map_remove(l3, a.ns->ents);
			unlock(l3);
		}
	}
	if (rc) {
		rc = kvt_l3i_mdb_err(rc);
		l3->wfail_op = "commit";
		l3->wfail_region = -1;
		kvt_l3i_log_failure(l3, "drop", rc, (size_t)n);
		goto out;
	}
	lock(l3);
	while (a.ns->ents)
		kvt_l3i_map_remove(l3, a.ns->ents);
	unlock(l3);
	if (dropped)
		*dropped = n;
out:
	if (a.ns) {
		lock(l3);
		ns_unref(l3, a.ns);
		unlock(l3);
	}
	pthread_mutex_unlock(&l3->wmu);
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
	st->index_bytes = l3->index_used;
	st->index_map_bytes = l3->map_size;
	st->index_full = l3->index_full;
	st->index_grown = l3->index_grown;
	st->namespaces = l3->nns_live;
	st->region_size = l3->region_size;
	st->direct_io = l3->direct;
	st->uring = l3->rd0 && l3->rd0->have_ring;
	unlock(l3);
}

static void ns_fill(const struct l3_ns *n, struct kvt_l3_ns_stats *st)
{
	st->ns = n->name;
	st->ns_len = n->len;
	st->entries = n->entries;
	st->bytes = n->bytes;
	st->raw_bytes = n->raw_bytes;
	st->hits = n->hits;
}

int kvt_l3_ns_foreach(struct kvt_l3 *l3, kvt_l3_ns_fn fn, void *arg)
{
	int rc = 0;

	if (!l3 || !fn)
		return KVT_EINVAL;
	lock(l3);
	for (size_t b = 0; b < l3->nnsb && !rc; b++)
		for (struct l3_ns *n = l3->nsb[b]; n && !rc; n = n->hnext) {
			struct kvt_l3_ns_stats st;

			if (!n->entries)
				continue; /* only a put batch's, so far */
			ns_fill(n, &st);
			rc = fn(arg, &st);
		}
	unlock(l3);
	return rc;
}

int kvt_l3_ns_get(struct kvt_l3 *l3, const uint8_t *ns, size_t ns_len,
		  struct kvt_l3_ns_stats *st)
{
	struct l3_ns *n;
	int rc = 0;

	if (!l3 || !st || (ns_len && !ns))
		return KVT_EINVAL;
	memset(st, 0, sizeof(*st));
	if (ns_len > KVT_L3_NS_MAX)
		return KVT_ENOTFOUND;
	lock(l3);
	n = kvt_l3i_ns_find(l3, ns, ns_len);
	if (n && n->entries)
		ns_fill(n, st);
	else
		rc = KVT_ENOTFOUND;
	unlock(l3);
	st->ns = ns; /* the caller's copy: ours is only valid under mu */
	st->ns_len = ns_len;
	return rc;
}
