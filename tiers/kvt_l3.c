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
 * - Only the worker thread (the one calling everything except state,
 *   contains, foreach and stats) mutates the mirror and the counters, always
 *   under l3->mu.  The
 *   worker may therefore read them without the lock; other threads lock.
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
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "kvtier_errors.h"

/* ---- small helpers ------------------------------------------------------ */

static uint64_t default_now(void)
{
	return (uint64_t)time(NULL);
}

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

static void errmsg(const struct kvt_l3_config *cfg, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void errmsg(const struct kvt_l3_config *cfg, const char *fmt, ...)
{
	va_list ap;

	if (!cfg->errmsg || !cfg->errmsg_len)
		return;
	va_start(ap, fmt);
	vsnprintf(cfg->errmsg, cfg->errmsg_len, fmt, ap);
	va_end(ap);
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

int kvt_l3i_rec_put(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e)
{
	uint8_t buf[L3_REC + KVT_L3_KEY_MAX];
	MDB_val k = { e->ikey_len, (void *)ent_ikey(e) };
	MDB_val v = { L3_REC + e->xkey_len, buf };

	kvt_l3i_rec_encode(buf, &e->loc);
	if (e->xkey_len)
		memcpy(buf + L3_REC, e->bytes + e->ikey_len, e->xkey_len);
	return mdb_put(txn, l3->db_index, &k, &v, 0);
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

void kvt_l3i_dirty_unlink(struct kvt_l3 *l3, struct l3_ent *e)
{
	if (!e->dirty)
		return;
	if (e->dprev)
		e->dprev->dnext = e->dnext;
	else
		l3->dirty = e->dnext;
	if (e->dnext)
		e->dnext->dprev = e->dprev;
	e->dprev = e->dnext = NULL;
	e->dirty = 0;
}

void kvt_l3i_dirty_link(struct kvt_l3 *l3, struct l3_ent *e)
{
	if (e->dirty)
		return;
	e->dirty = 1;
	e->dprev = NULL;
	e->dnext = l3->dirty;
	if (l3->dirty)
		l3->dirty->dprev = e;
	l3->dirty = e;
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
	kvt_l3i_dirty_unlink(l3, e);
	r->live -= e->loc.length;
	l3->nents--;
	l3->bytes -= e->loc.length;
	l3->raw_bytes -= e->loc.raw_len;
	free(e);
}

/* ---- open / close ------------------------------------------------------- */

static char *path_join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);

	if (!p)
		return NULL;
	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	return p;
}

static int mkdir_one(const char *path)
{
	if (mkdir(path, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

static int region_path(const struct kvt_l3 *l3, uint32_t id, char *buf,
		       size_t cap)
{
	int n = snprintf(buf, cap, "%s/region-%05" PRIu32 ".dat", l3->root, id);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Opens (creating and preallocating) the file of region id. */
static int region_open(struct kvt_l3 *l3, uint32_t id, int want_direct,
		       const struct kvt_l3_config *cfg)
{
	struct l3_region *r = &l3->regions[id];
	char path[PATH_MAX];
	struct stat st;
	int rc = region_path(l3, id, path, sizeof(path));

	if (rc)
		return rc;
	r->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (r->fd < 0) {
		rc = -errno;
		errmsg(cfg, "l3: cannot open %s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(r->fd, &st))
		return -errno;
	if ((uint64_t)st.st_size < l3->region_size) {
		/*
		 * Preallocating now means a full disk shows up at open, not
		 * as ENOSPC in the middle of a batch, and keeps regions
		 * contiguous on disk.
		 */
		rc = posix_fallocate(r->fd, 0, (off_t)l3->region_size);
		if (rc == EOPNOTSUPP || rc == EINVAL)
			rc = ftruncate(r->fd, (off_t)l3->region_size) ? errno : 0;
		if (rc) {
			errmsg(cfg, "l3: cannot preallocate %s (%" PRIu64
			       " bytes): %s", path, l3->region_size,
			       strerror(rc));
			return -rc;
		}
	}
	r->dfd = -1;
	if (want_direct) {
		r->dfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (r->dfd < 0)
			l3->direct = 0;
	}
	return 0;
}

static int meta_check(struct kvt_l3 *l3, MDB_txn *txn,
		      const struct kvt_l3_config *cfg)
{
	MDB_val k = { 7, (void *)"version" }, v;
	uint8_t buf[8];
	int rc = mdb_get(txn, l3->db_meta, &k, &v);

	if (rc == MDB_NOTFOUND) {
		put_u32(buf, L3_VERSION);
		v.mv_size = 4;
		v.mv_data = buf;
		if ((rc = mdb_put(txn, l3->db_meta, &k, &v, 0)))
			return kvt_l3i_mdb_err(rc);
	} else if (rc) {
		return kvt_l3i_mdb_err(rc);
	} else if (v.mv_size != 4 || get_u32(v.mv_data) != L3_VERSION) {
		errmsg(cfg, "l3: %s has on-disk format version %" PRIu32
		       ", this build reads version %u", l3->root,
		       v.mv_size == 4 ? get_u32(v.mv_data) : 0, L3_VERSION);
		return KVT_EVERSION;
	}
	k.mv_size = 11;
	k.mv_data = (void *)"region_size";
	rc = mdb_get(txn, l3->db_meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		put_u64(buf, l3->region_size);
		v.mv_size = 8;
		v.mv_data = buf;
		return kvt_l3i_mdb_err(mdb_put(txn, l3->db_meta, &k, &v, 0));
	}
	if (rc)
		return kvt_l3i_mdb_err(rc);
	if (v.mv_size != 8 || get_u64(v.mv_data) != l3->region_size) {
		errmsg(cfg, "l3: %s was created with %" PRIu64 "-byte regions, "
		       "the configuration asks for %" PRIu64 "; use the same "
		       "region size (and a capacity of at least one region) "
		       "or remove the directory", l3->root,
		       v.mv_size == 8 ? get_u64(v.mv_data) : 0,
		       l3->region_size);
		return KVT_EINVAL;
	}
	return 0;
}

/* Key of an index record scheduled for deletion during the open scan. */
struct l3_doomed {
	size_t len;
	uint8_t key[L3_IKEY_MAX];
};

/*
 * Rebuilds regions and the mirror from committed state, dropping what can no
 * longer be trusted or used, all in the one open transaction.
 */
static int load_state(struct kvt_l3 *l3, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_val k, v;
	struct l3_doomed *doomed = NULL;
	size_t ndoomed = 0, cap = 0;
	uint64_t now = l3->now_s();
	uint32_t stale_max = 0;
	int rc, err = 0;

	/*
	 * Regions: anything beyond the configured count is dropped (after the
	 * scan: deleting under a live cursor is easy to get wrong).
	 */
	if ((rc = mdb_cursor_open(txn, l3->db_regions, &cur)))
		return kvt_l3i_mdb_err(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint32_t id;

		if (k.mv_size != 4 || v.mv_size != L3_REGREC)
			continue;
		id = get_u32(k.mv_data);
		if (id >= l3->nregions) {
			stale_max = id + 1 > stale_max ? id + 1 : stale_max;
			continue;
		}
		l3->regions[id].generation = get_u64(v.mv_data);
		l3->regions[id].seq = get_u64((uint8_t *)v.mv_data + 8);
		l3->regions[id].fill = get_u64((uint8_t *)v.mv_data + 16);
		if (l3->regions[id].fill > l3->region_size)
			l3->regions[id].fill = l3->region_size;
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return kvt_l3i_mdb_err(rc);
	for (uint32_t id = l3->nregions; id < stale_max; id++) {
		uint8_t kb[4];
		MDB_val dk = { sizeof(kb), kb };

		put_u32(kb, id);
		rc = mdb_del(txn, l3->db_regions, &dk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return kvt_l3i_mdb_err(rc);
	}

	if ((rc = mdb_cursor_open(txn, l3->db_index, &cur)))
		return kvt_l3i_mdb_err(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const uint8_t *kp = k.mv_data;
		struct l3_loc loc;
		struct l3_ent *e;
		size_t xlen = v.mv_size >= L3_REC ? v.mv_size - L3_REC : 0;
		int ok = k.mv_size >= 2 && k.mv_size < L3_IKEY_MAX &&
			 v.mv_size >= L3_REC && kp[0] <= 1 &&
			 (size_t)kp[1] + 2 <= k.mv_size &&
			 (kp[0] == 1 || xlen == 0);

		if (ok) {
			struct l3_region *r;

			kvt_l3i_rec_decode(v.mv_data, &loc);
			r = loc.region < l3->nregions ?
				&l3->regions[loc.region] : NULL;
			ok = r && r->seq && loc.generation == r->generation &&
			     loc.offset % KVT_L3_ALIGN == 0 &&
			     loc.length >= L3_HDR &&
			     loc.offset + loc.length <= r->fill &&
			     !(loc.expiry && loc.expiry <= now);
		}
		if (!ok) {
			if (ndoomed == cap) {
				size_t ncap = cap ? cap * 2 : 64;
				void *p = realloc(doomed, ncap * sizeof(*doomed));

				if (!p) {
					err = -ENOMEM;
					break;
				}
				doomed = p;
				cap = ncap;
			}
			doomed[ndoomed].len = k.mv_size < L3_IKEY_MAX ?
				k.mv_size : 0;
			if (doomed[ndoomed].len)
				memcpy(doomed[ndoomed].key, kp, k.mv_size);
			ndoomed++;
			continue;
		}
		e = kvt_l3i_ent_new(kp, k.mv_size, (uint8_t *)v.mv_data + L3_REC, xlen,
			    kvt_l3i_ikey_hash(kp, k.mv_size));
		if (!e) {
			err = -ENOMEM;
			break;
		}
		e->loc = loc;
		kvt_l3i_map_insert(l3, e);
	}
	mdb_cursor_close(cur);
	if (!err && rc != MDB_NOTFOUND)
		err = kvt_l3i_mdb_err(rc);
	for (size_t i = 0; !err && i < ndoomed; i++) {
		MDB_val dk = { doomed[i].len, doomed[i].key };

		if (!doomed[i].len)
			continue; /* oversized junk key; cannot happen */
		rc = mdb_del(txn, l3->db_index, &dk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			err = kvt_l3i_mdb_err(rc);
	}
	free(doomed);
	if (err)
		return err;

	/* The head is the most recently started region. */
	l3->max_seq = 0;
	l3->head = 0;
	for (uint32_t i = 0; i < l3->nregions; i++) {
		l3->total_fill += l3->regions[i].seq ? l3->regions[i].fill : 0;
		if (l3->regions[i].seq > l3->max_seq) {
			l3->max_seq = l3->regions[i].seq;
			l3->head = i;
		}
	}
	if (l3->max_seq == 0) {
		struct l3_region *r = &l3->regions[0];

		r->generation++;
		r->seq = l3->max_seq = 1;
		r->fill = 0;
		rc = kvt_l3i_region_rec_put(l3, txn, 0, r->generation, r->seq, 0);
		if (rc)
			return kvt_l3i_mdb_err(rc);
	}
	return 0;
}

int kvt_l3_open(struct kvt_l3 **out, const struct kvt_l3_config *cfg)
{
	struct kvt_l3 *l3;
	char *idx = NULL, *lockp = NULL;
	MDB_txn *txn = NULL;
	uint64_t rs;
	int rc, dead;

	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (!cfg || !cfg->dir || cfg->capacity < 2 * KVT_L3_ALIGN)
		return KVT_EINVAL;
	rs = cfg->region_size ? cfg->region_size : KVT_L3_REGION_DEFAULT;
	rs = rs / KVT_L3_ALIGN * KVT_L3_ALIGN;
	if (rs < 2 * KVT_L3_ALIGN) {
		errmsg(cfg, "l3: region size must be at least %u bytes",
		       2 * KVT_L3_ALIGN);
		return KVT_EINVAL;
	}
	if (cfg->capacity < rs)
		rs = cfg->capacity / KVT_L3_ALIGN * KVT_L3_ALIGN;
	if (cfg->capacity / rs > UINT32_MAX / 2)
		return KVT_EINVAL;

	l3 = calloc(1, sizeof(*l3));
	if (!l3)
		return -ENOMEM;
	l3->lockfd = -1;
	l3->region_size = rs;
	l3->nregions = (uint32_t)(cfg->capacity / rs);
	l3->qd = cfg->queue_depth ? cfg->queue_depth : KVT_L3_QD_DEFAULT;
	l3->no_sync = cfg->no_sync;
	l3->now_s = cfg->now_s ? cfg->now_s : default_now;
	l3->faults = cfg->faults;
	l3->on_evict = cfg->on_evict;
	l3->evict_arg = cfg->evict_arg;
	l3->direct = !cfg->no_direct;
	pthread_mutex_init(&l3->mu, NULL);
	l3->nbuckets = 1024;
	l3->buckets = calloc(l3->nbuckets, sizeof(*l3->buckets));
	l3->regions = calloc(l3->nregions, sizeof(*l3->regions));
	l3->touched = calloc(l3->nregions, sizeof(*l3->touched));
	l3->root = path_join(cfg->dir, "l3");
	idx = l3->root ? path_join(l3->root, "index") : NULL;
	lockp = l3->root ? path_join(l3->root, "lock") : NULL;
	/* Before any failure path: close() must not see calloc's fd 0. */
	for (uint32_t i = 0; l3->regions && i < l3->nregions; i++)
		l3->regions[i].fd = l3->regions[i].dfd = -1;
	if (!l3->buckets || !l3->regions || !l3->touched || !idx || !lockp) {
		rc = -ENOMEM;
		goto fail;
	}

	if ((rc = mkdir_one(cfg->dir)) || (rc = mkdir_one(l3->root)) ||
	    (rc = mkdir_one(idx))) {
		errmsg(cfg, "l3: cannot create %s: %s", idx, strerror(-rc));
		goto fail;
	}
	l3->lockfd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (l3->lockfd < 0) {
		rc = -errno;
		goto fail;
	}
	if (flock(l3->lockfd, LOCK_EX | LOCK_NB)) {
		rc = errno == EWOULDBLOCK ? KVT_EBUSY : -errno;
		errmsg(cfg, "l3: %s is in use by another process", l3->root);
		goto fail;
	}

	if ((rc = mdb_env_create(&l3->env)) ||
	    (rc = mdb_env_set_maxdbs(l3->env, 4)) ||
	    (rc = mdb_env_set_mapsize(l3->env, cfg->map_size ? cfg->map_size :
				      KVT_L3_MAP_DEFAULT))) {
		rc = kvt_l3i_mdb_err(rc);
		goto fail;
	}
	/*
	 * MDB_NOTLS: transactions may come from whichever thread currently
	 * drives L3.  No MDB_WRITEMAP: a stray write through the map could
	 * otherwise corrupt the index silently.
	 */
	rc = mdb_env_open(l3->env, idx, MDB_NOTLS |
			  (cfg->no_sync ? MDB_NOSYNC : 0), 0644);
	if (rc) {
		errmsg(cfg, "l3: cannot open LMDB in %s: %s", idx,
		       mdb_strerror(rc));
		rc = kvt_l3i_mdb_err(rc);
		goto fail;
	}
	mdb_reader_check(l3->env, &dead);
	l3->maxkey = (size_t)mdb_env_get_maxkeysize(l3->env);
	if (l3->maxkey > L3_IKEY_MAX - 1)
		l3->maxkey = L3_IKEY_MAX - 1;

	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn)) ||
	    (rc = mdb_dbi_open(txn, "index", MDB_CREATE, &l3->db_index)) ||
	    (rc = mdb_dbi_open(txn, "regions", MDB_CREATE, &l3->db_regions)) ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &l3->db_meta))) {
		rc = kvt_l3i_mdb_err(rc);
		goto fail;
	}
	if ((rc = meta_check(l3, txn, cfg)) || (rc = load_state(l3, txn)))
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc) {
		rc = kvt_l3i_mdb_err(rc);
		goto fail;
	}

	/* Region files beyond the configured count are stale: remove them. */
	for (uint32_t i = l3->nregions;; i++) {
		char path[PATH_MAX];

		if (region_path(l3, i, path, sizeof(path)) || unlink(path))
			break;
	}
	for (uint32_t i = 0; i < l3->nregions; i++)
		if ((rc = region_open(l3, i, !cfg->no_direct, cfg)))
			goto fail;
	if (!l3->direct)
		for (uint32_t i = 0; i < l3->nregions; i++) {
			if (l3->regions[i].dfd >= 0)
				close(l3->regions[i].dfd);
			l3->regions[i].dfd = -1;
		}

	if (!cfg->no_uring && cfg->io_backend != KVT_L3_IO_PREAD) {
		rc = io_uring_queue_init(l3->qd, &l3->ring, 0);
		if (rc == 0) {
			l3->have_ring = 1;
		} else if (cfg->io_backend == KVT_L3_IO_URING) {
			errmsg(cfg, "l3: io_uring is unavailable (%s) and the "
			       "io_uring backend was required", strerror(-rc));
			goto fail;
		}
		/* auto: pread() does the same reads, one at a time. */
	}
	free(idx);
	free(lockp);
	*out = l3;
	return 0;
fail:
	if (txn)
		mdb_txn_abort(txn);
	free(idx);
	free(lockp);
	kvt_l3_close(l3);
	return rc;
}

/* Persists unsaved hit counts; best effort (they are advisory). */
static void flush_hits(struct kvt_l3 *l3)
{
	MDB_txn *txn;

	if (!l3->dirty || mdb_txn_begin(l3->env, NULL, 0, &txn))
		return;
	for (struct l3_ent *e = l3->dirty; e; e = e->dnext)
		if (kvt_l3i_rec_put(l3, txn, e)) {
			mdb_txn_abort(txn);
			return;
		}
	if (mdb_txn_commit(txn) == 0) {
		lock(l3);
		while (l3->dirty)
			kvt_l3i_dirty_unlink(l3, l3->dirty);
		unlock(l3);
	}
}

void kvt_l3_close(struct kvt_l3 *l3)
{
	if (!l3)
		return;
	if (l3->env && l3->regions)
		flush_hits(l3);
	if (l3->have_ring)
		io_uring_queue_exit(&l3->ring);
	if (l3->buckets)
		for (size_t i = 0; i < l3->nbuckets; i++)
			for (struct l3_ent *e = l3->buckets[i], *n; e; e = n) {
				n = e->hnext;
				free(e);
			}
	if (l3->regions)
		for (uint32_t i = 0; i < l3->nregions; i++) {
			if (l3->regions[i].fd >= 0)
				close(l3->regions[i].fd);
			if (l3->regions[i].dfd >= 0)
				close(l3->regions[i].dfd);
		}
	if (l3->env)
		mdb_env_close(l3->env);
	if (l3->lockfd >= 0)
		close(l3->lockfd); /* releases the flock */
	pthread_mutex_destroy(&l3->mu);
	free(l3->buckets);
	free(l3->regions);
	free(l3->touched);
	free(l3->stage);
	free(l3->root);
	free(l3);
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
	if (e && !e->doomed)
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
	found = e && !e->doomed && !kvt_l3i_expired(l3, e->loc.expiry);
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
	e = kvt_l3i_map_lookup(l3, &ke);
	if (!e)
		return KVT_ENOTFOUND;
	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn)))
		return kvt_l3i_mdb_err(rc);
	if ((rc = kvt_l3i_rec_del(l3, txn, e))) {
		mdb_txn_abort(txn);
		return kvt_l3i_mdb_err(rc);
	}
	if ((rc = mdb_txn_commit(txn)))
		return kvt_l3i_mdb_err(rc);
	rc = kvt_l3i_expired(l3, e->loc.expiry) ? KVT_ENOTFOUND : 0;
	lock(l3);
	kvt_l3i_map_remove(l3, e);
	unlock(l3);
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
	/* Only this thread changes the map, so the entries stay valid. */
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
					free(v);
					return -ENOMEM;
				}
				v = nv;
				cap = nc;
			}
			v[n++] = e;
		}
	unlock(l3);
	if (n == 0) {
		free(v);
		return 0;
	}
	/* One transaction for the whole namespace: all of it goes, or none. */
	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn))) {
		free(v);
		return kvt_l3i_mdb_err(rc);
	}
	for (size_t i = 0; i < n; i++)
		if ((rc = kvt_l3i_rec_del(l3, txn, v[i]))) {
			mdb_txn_abort(txn);
			free(v);
			return kvt_l3i_mdb_err(rc);
		}
	if ((rc = mdb_txn_commit(txn))) {
		free(v);
		return kvt_l3i_mdb_err(rc);
	}
	lock(l3);
	for (size_t i = 0; i < n; i++)
		kvt_l3i_map_remove(l3, v[i]);
	unlock(l3);
	free(v);
	if (dropped)
		*dropped = n;
	return 0;
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

			if (e->doomed || kvt_l3i_expired(l3, e->loc.expiry))
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
	st->uring = l3->have_ring;
	unlock(l3);
}
