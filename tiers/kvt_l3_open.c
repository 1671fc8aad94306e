/*
 * kvt_l3_open.c - opening and closing L3 (kvt_l3_open(), kvt_l3_close() in
 * kvt_l3.h): the store's folders and lock, the index file checked before
 * LMDB maps it (kvt_l3_mdb.c), the LMDB environment sized for the store,
 * the format metadata, the mirror rebuilt from the committed index
 * (dropping what can no longer be trusted, and saying so), and the region
 * files.  A failed open removes the files it created.  A read-only open
 * (for kvt_l3_check) takes its geometry from the store and writes nothing.
 */
#include "kvt_l3_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvtier_errors.h"

static uint64_t default_now(void)
{
	return (uint64_t)time(NULL);
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

/* ---- sizing the index ---------------------------------------------------- */

/*
 * LMDB's leaf nodes (mdb.c): an 8-byte header, the key, the data; data
 * that would make the node larger than half a page (nodemax: (page - 16)
 * / 2, even, minus a 2-byte slot) goes to its own overflow pages and the
 * node keeps an 8-byte page number.  Each node also takes a 2-byte slot in
 * its page's table.
 */
#define MDB_PAGE 4096u
#define MDB_NODEMAX ((((MDB_PAGE - 16) / 2) & ~1u) - 2)

/* Index bytes an entry with this namespace and key length costs, at worst. */
static uint64_t entry_index_cost(size_t ns_len, size_t key_len, size_t maxkey)
{
	int hashed = 2 + ns_len + key_len > maxkey;
	uint64_t ikey = 2 + ns_len + (hashed ? 16 : key_len);
	uint64_t data = L3_REC + (hashed ? key_len : 0);
	uint64_t node = 8 + ikey + data, cost = 0, fit, least;

	if (node > MDB_NODEMAX) {
		/* Overflow pages: whole pages of data, a small node. */
		cost = ((16 - 1 + data) / MDB_PAGE + 1) * MDB_PAGE;
		node = 8 + ikey + 8;
	}
	/*
	 * A leaf splits in the middle when it overflows, so none holds fewer
	 * than half the nodes that fit (rounded up; one at least): at worst a
	 * node costs a page divided by that.  Counted in nodes, not bytes:
	 * with large nodes (1 KiB keys: two fit) that is one node per page.
	 * Branches add a node per leaf, which the caller's quarter covers.
	 */
	fit = (MDB_PAGE - 16) / (node + 2);
	least = (fit + 1) / 2 ? (fit + 1) / 2 : 1;
	return cost + (MDB_PAGE + least - 1) / least;
}

uint64_t kvt_l3_index_size(uint64_t capacity, uint64_t key_max)
{
	static const size_t ns_lens[] = { 0, 16, 64, 128, KVT_L3_NS_MAX };
	uint64_t worst_num = 0, worst_den = 1, map;

	if (!key_max)
		key_max = KVT_L3_KEY_DEFAULT;
	if (key_max > KVT_L3_KEY_MAX)
		key_max = KVT_L3_KEY_MAX;
	/*
	 * The entry that costs the most index per byte of region (an entry
	 * takes at least its header, namespace and key in a region, rounded
	 * to KVT_L3_ALIGN): a store full of those is the worst case.
	 */
	for (size_t n = 0; n < sizeof(ns_lens) / sizeof(ns_lens[0]); n++)
		for (uint64_t k = 0; k <= key_max; k += k < 1024 ? 1 : 8) {
			uint64_t num = entry_index_cost(ns_lens[n], k,
							L3_IKEY_MAX - 1);
			uint64_t den = entry_size(ns_lens[n], k, 0);

			if (num * worst_den > worst_num * den) {
				worst_num = num;
				worst_den = den;
			}
		}
	map = capacity / worst_den * worst_num;
	map += map / 4 + ((uint64_t)16 << 20);
	return round_up(map, (uint64_t)1 << 20);
}

void kvt_l3i_index_reserve(struct kvt_l3 *l3)
{
	struct stat st;
	uint64_t want = l3->map_size / 16;

	/*
	 * Disk blocks kept past the end of data.mdb (FALLOC_FL_KEEP_SIZE: the
	 * file's size does not change, LMDB sees nothing): LMDB writes new
	 * pages there first, so on a full disk a DEL or DROP, whose pages
	 * are few, still finds room.  Best effort.
	 */
	if (want > ((uint64_t)16 << 20))
		want = (uint64_t)16 << 20;
	if (l3->mdb_fd < 0 || fstat(l3->mdb_fd, &st))
		return;
	if ((uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size + want)
		return;
	(void)fallocate(l3->mdb_fd, FALLOC_FL_KEEP_SIZE, st.st_size,
			(off_t)want);
}

/* ---- files ---------------------------------------------------------------- */

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

/* mkdir; 1 if it made the folder, 0 if it was there, or -errno. */
static int mkdir_one(const char *path)
{
	if (mkdir(path, 0755) == 0)
		return 1;
	return errno == EEXIST ? 0 : -errno;
}

int kvt_l3i_region_path(const struct kvt_l3 *l3, uint32_t id, char *buf,
			size_t cap)
{
	int n = snprintf(buf, cap, "%s/region-%05" PRIu32 ".dat", l3->root, id);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* What one open did to a region file, undone if the open fails. */
struct l3_made {
	uint8_t created;
	uint8_t grown;
	off_t old_size;
};

/*
 * Opens the file of region id: read-only, as it is, for a check (a missing
 * file leaves fd -1, for the check to report); else created if missing and
 * preallocated to the region size.
 */
static int region_open(struct kvt_l3 *l3, uint32_t id, int want_direct,
		       const struct kvt_l3_config *cfg, struct l3_made *made)
{
	struct l3_region *r = &l3->regions[id];
	char path[PATH_MAX];
	struct stat st;
	int rc = kvt_l3i_region_path(l3, id, path, sizeof(path));

	if (rc)
		return rc;
	if (l3->read_only) {
		r->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (r->fd < 0 && errno != ENOENT) {
			rc = -errno;
			errmsg(cfg, "l3: cannot open %s: %s", path,
			       strerror(-rc));
			return rc;
		}
		return 0;
	}
	r->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (r->fd >= 0)
		made->created = 1;
	else if (errno == EEXIST)
		r->fd = open(path, O_RDWR | O_CLOEXEC);
	if (r->fd < 0) {
		rc = -errno;
		errmsg(cfg, "l3: cannot open %s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(r->fd, &st)) {
		rc = -errno;
		errmsg(cfg, "l3: cannot stat %s: %s", path, strerror(-rc));
		return rc;
	}
	if ((uint64_t)st.st_size < l3->region_size) {
		made->grown = !made->created;
		made->old_size = st.st_size;
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

/* After a failed open: removes (or shrinks back) what this open made. */
static void regions_undo(struct kvt_l3 *l3, const struct l3_made *made)
{
	char path[PATH_MAX];

	for (uint32_t i = 0; made && i < l3->nregions; i++) {
		if (!made[i].created && !made[i].grown)
			continue;
		if (l3->regions[i].fd >= 0 && made[i].grown &&
		    ftruncate(l3->regions[i].fd, made[i].old_size))
			continue; /* best effort */
		if (made[i].created &&
		    !kvt_l3i_region_path(l3, i, path, sizeof(path)))
			unlink(path);
	}
}

/* ---- format metadata ------------------------------------------------------ */

static int meta_get(struct kvt_l3 *l3, MDB_txn *txn, const char *name,
		    MDB_val *v)
{
	MDB_val k = { strlen(name), (void *)name };

	return mdb_get(txn, l3->db_meta, &k, v);
}

static int meta_put(struct kvt_l3 *l3, MDB_txn *txn, const char *name,
		    const void *val, size_t len)
{
	MDB_val k = { strlen(name), (void *)name }, v = { len, (void *)val };

	return mdb_put(txn, l3->db_meta, &k, &v, 0);
}

/*
 * Checks (and for a new store, writes) the format version and the region
 * size; records the number of regions (the previous one in *prev, 0 if
 * unknown).  A read-only open takes region size and count from the store.
 */
static int meta_check(struct kvt_l3 *l3, MDB_txn *txn,
		      const struct kvt_l3_config *cfg, uint32_t *prev)
{
	MDB_val v;
	uint8_t buf[8];
	int rc = meta_get(l3, txn, "version", &v);

	*prev = 0;
	if (rc == MDB_NOTFOUND && !l3->read_only) {
		put_u32(buf, L3_VERSION);
		if ((rc = meta_put(l3, txn, "version", buf, 4)))
			return kvt_l3i_mdb_err(rc);
	} else if (rc == MDB_NOTFOUND) {
		errmsg(cfg, "l3: %s holds no store (its index has no format "
		       "version)", l3->root);
		return KVT_EINVAL;
	} else if (rc) {
		return kvt_l3i_mdb_err(rc);
	} else if (v.mv_size != 4 || get_u32(v.mv_data) != L3_VERSION) {
		uint32_t have = v.mv_size == 4 ? get_u32(v.mv_data) : 0;

		/*
		 * Never converted or wiped behind the operator's back: the
		 * store is left exactly as it is, and the message says what
		 * to do with it.
		 */
		errmsg(cfg, "l3: %s holds a store in on-disk format %" PRIu32
		       "%s; this kvtierd reads format %u only. It is a cache: "
		       "move it aside (mv %s %s.old) or delete it, then start "
		       "again (nothing in it was changed)", l3->root, have,
		       have > L3_VERSION ? " (from a newer kvtierd)" : "",
		       L3_VERSION, l3->root, l3->root);
		return KVT_EVERSION;
	}
	rc = meta_get(l3, txn, "region_size", &v);
	if (rc == MDB_NOTFOUND && !l3->read_only) {
		put_u64(buf, l3->region_size);
		if ((rc = meta_put(l3, txn, "region_size", buf, 8)))
			return kvt_l3i_mdb_err(rc);
	} else if (rc) {
		if (rc == MDB_NOTFOUND)
			errmsg(cfg, "l3: %s: the index has no region size",
			       l3->root);
		return rc == MDB_NOTFOUND ? KVT_EINVAL : kvt_l3i_mdb_err(rc);
	} else if (v.mv_size != 8 || get_u64(v.mv_data) < 2 * KVT_L3_ALIGN ||
		   get_u64(v.mv_data) % KVT_L3_ALIGN) {
		errmsg(cfg, "l3: %s: the index gives a bad region size",
		       l3->root);
		return KVT_EINVAL;
	} else if (l3->read_only) {
		l3->region_size = get_u64(v.mv_data);
	} else if (get_u64(v.mv_data) != l3->region_size) {
		errmsg(cfg, "l3: %s was created with %" PRIu64 "-byte regions, "
		       "the configuration asks for %" PRIu64 "; use the same "
		       "region size (and a capacity of at least one region) "
		       "or remove the directory", l3->root,
		       get_u64(v.mv_data), l3->region_size);
		return KVT_EINVAL;
	}
	rc = meta_get(l3, txn, "regions", &v);
	if (rc && rc != MDB_NOTFOUND)
		return kvt_l3i_mdb_err(rc);
	if (rc == 0 && v.mv_size == 4)
		*prev = get_u32(v.mv_data);
	if (l3->read_only)
		return 0;
	put_u32(buf, l3->nregions);
	return kvt_l3i_mdb_err(meta_put(l3, txn, "regions", buf, 4));
}

/*
 * Read-only: the number of regions, from the metadata, else from the
 * region records (a store that never recorded it).
 */
static int regions_count(struct kvt_l3 *l3, MDB_txn *txn, uint32_t prev)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	if (prev) {
		l3->nregions = prev;
		return 0;
	}
	if ((rc = mdb_cursor_open(txn, l3->db_regions, &cur)))
		return kvt_l3i_mdb_err(rc);
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 4)
		l3->nregions = get_u32(k.mv_data) + 1;
	mdb_cursor_close(cur);
	if (l3->nregions == 0)
		l3->nregions = 1;
	return 0;
}

/* ---- rebuilding the mirror ------------------------------------------------ */

/* Key of an index record scheduled for deletion during the open scan. */
struct l3_doomed {
	size_t len;
	uint8_t key[L3_IKEY_MAX];
};

/* What load_state dropped (or, read-only, left out), for the log. */
struct l3_dropped {
	uint64_t n[L3_REC_PLACE + 1];
	uint64_t bytes; /* of those beyond the region count */
};

/*
 * Rebuilds regions and the mirror from committed state, dropping what can no
 * longer be trusted or used, all in the one open transaction.  Read-only, it
 * drops nothing: what it leaves out of the mirror stays in the index for the
 * check to report.
 */
static int load_state(struct kvt_l3 *l3, MDB_txn *txn, struct l3_dropped *dr)
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
	for (uint32_t id = l3->nregions; !l3->read_only && id < stale_max;
	     id++) {
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
		int verdict = kvt_l3i_rec_judge(l3, &k, &v, now, &loc);

		if (verdict != L3_REC_OK) {
			dr->n[verdict]++;
			if (verdict == L3_REC_REGION)
				dr->bytes += loc.length;
			if (l3->read_only)
				continue;
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
		e = kvt_l3i_ent_new(l3, kp, k.mv_size,
				    (uint8_t *)v.mv_data + L3_REC,
				    v.mv_size - L3_REC,
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
	if (l3->max_seq == 0 && !l3->read_only) {
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

/* Says what the open dropped, and why (the operator must not wonder). */
static void log_dropped(struct kvt_l3 *l3, const struct l3_dropped *dr,
			uint32_t prev)
{
	uint64_t bad = dr->n[L3_REC_MALFORMED] + dr->n[L3_REC_STALE] +
		       dr->n[L3_REC_PLACE];

	if (prev > l3->nregions || dr->n[L3_REC_REGION])
		kvt_l3i_log(l3, L3_LOG_WARN, "event=l3_shrunk dir=%s "
			    "regions=%" PRIu32 "->%" PRIu32 " entries_dropped=%"
			    PRIu64 " bytes_dropped=%" PRIu64 " reason=\"a "
			    "smaller --l3-size: the regions past the new size "
			    "and their entries are gone\"", l3->root, prev,
			    l3->nregions, dr->n[L3_REC_REGION], dr->bytes);
	if (dr->n[L3_REC_EXPIRED] || bad)
		kvt_l3i_log(l3, bad ? L3_LOG_WARN : L3_LOG_INFO,
			    "event=l3_open_dropped dir=%s expired=%" PRIu64
			    " malformed=%" PRIu64 " stale=%" PRIu64
			    " misplaced=%" PRIu64, l3->root,
			    dr->n[L3_REC_EXPIRED], dr->n[L3_REC_MALFORMED],
			    dr->n[L3_REC_STALE], dr->n[L3_REC_PLACE]);
}

/* ---- open / close --------------------------------------------------------- */

/* Paths of one open. */
struct l3_paths {
	char *idx, *lock, *mdb;
};

/*
 * The folders and the lock.  Read-only, the store must exist and is locked
 * shared (two checks may run together, a daemon may not start meanwhile);
 * else the folders are made and the lock is exclusive.
 */
static int open_dirs(struct kvt_l3 *l3, const struct kvt_l3_config *cfg,
		     const struct l3_paths *p, int *made_root)
{
	struct stat st;
	int rc;

	*made_root = 0;
	if (l3->read_only) {
		if (stat(p->mdb, &st)) {
			rc = -errno;
			errmsg(cfg, "l3: no L3 store to check in %s (%s: %s)",
			       cfg->dir, p->mdb, strerror(-rc));
			return rc == -ENOENT ? KVT_ENOTFOUND : rc;
		}
		l3->lockfd = open(p->lock, O_RDONLY | O_CLOEXEC);
		if (l3->lockfd < 0 && errno != ENOENT) {
			rc = -errno;
			errmsg(cfg, "l3: cannot open %s: %s", p->lock,
			       strerror(-rc));
			return rc;
		}
		if (l3->lockfd >= 0 && flock(l3->lockfd, LOCK_SH | LOCK_NB)) {
			rc = errno == EWOULDBLOCK ? KVT_EBUSY : -errno;
			errmsg(cfg, "l3: %s is in use by a running kvtierd: stop "
			       "it first, or check a copy", l3->root);
			return rc;
		}
		return 0;
	}
	if ((rc = mkdir_one(cfg->dir)) < 0 || (rc = mkdir_one(l3->root)) < 0) {
		errmsg(cfg, "l3: cannot create %s: %s", l3->root,
		       strerror(-rc));
		return rc;
	}
	*made_root = rc;
	if ((rc = mkdir_one(p->idx)) < 0) {
		errmsg(cfg, "l3: cannot create %s: %s", p->idx, strerror(-rc));
		return rc;
	}
	l3->lockfd = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (l3->lockfd < 0) {
		rc = -errno;
		errmsg(cfg, "l3: cannot open %s: %s", p->lock, strerror(-rc));
		return rc;
	}
	if (flock(l3->lockfd, LOCK_EX | LOCK_NB)) {
		rc = errno == EWOULDBLOCK ? KVT_EBUSY : -errno;
		errmsg(cfg, "l3: %s is in use by another process", l3->root);
		return rc;
	}
	return 0;
}

/* The LMDB environment, after checking its file. */
static int open_env(struct kvt_l3 *l3, const struct kvt_l3_config *cfg,
		    const struct l3_paths *p)
{
	char why[256];
	int rc = kvt_l3i_mdb_validate(p->mdb, why, sizeof(why));
	unsigned flags = MDB_NOTLS;

	if (rc == KVT_ECORRUPT && l3->read_only) {
		errmsg(cfg, "l3: the index %s is damaged (%s); kvtierd would "
		       "refuse it too: move %s aside (it is a cache: the next "
		       "start makes a new one)", p->mdb, why, l3->root);
		return -EUCLEAN;
	}
	if (rc == KVT_ECORRUPT) {
		errmsg(cfg, "l3: the index %s is damaged (%s); run kvtierd "
		       "--check --data-dir %s for a report, or move %s aside "
		       "(it is a cache: the next start makes a new one)",
		       p->mdb, why, cfg->dir, l3->root);
		/* "Structure needs cleaning", as a filesystem would say. */
		return -EUCLEAN;
	}
	if (rc) {
		errmsg(cfg, "l3: cannot read the index %s: %s", p->mdb,
		       strerror(-rc));
		return rc;
	}
	if ((rc = mdb_env_create(&l3->env)) ||
	    (rc = mdb_env_set_maxdbs(l3->env, 4)) ||
	    (!l3->read_only &&
	     (rc = mdb_env_set_mapsize(l3->env, (size_t)l3->map_size)))) {
		errmsg(cfg, "l3: cannot set up LMDB for %s: %s", p->idx,
		       mdb_strerror(rc));
		return kvt_l3i_mdb_err(rc);
	}
	/*
	 * MDB_NOTLS: transactions may come from whichever thread currently
	 * drives L3.  No MDB_WRITEMAP: a stray write through the map could
	 * otherwise corrupt the index silently.  Read-only, MDB_NOLOCK: the
	 * shared flock on the store keeps writers out, and lock.mdb is not
	 * written either.
	 */
	if (l3->read_only)
		flags |= MDB_RDONLY | MDB_NOLOCK;
	else if (cfg->no_sync)
		flags |= MDB_NOSYNC;
	rc = mdb_env_open(l3->env, p->idx, flags, 0644);
	if (rc) {
		errmsg(cfg, "l3: cannot open the index in %s: %s", p->idx,
		       mdb_strerror(rc));
		return kvt_l3i_mdb_err(rc);
	}
	if (!l3->read_only) {
		MDB_envinfo info;
		int dead, fd;

		mdb_reader_check(l3->env, &dead);
		/* LMDB keeps at least what the file already holds. */
		if (!mdb_env_info(l3->env, &info))
			l3->map_size = info.me_mapsize;
		if (l3->map_max < l3->map_size)
			l3->map_max = l3->map_size;
		if (!mdb_env_get_fd(l3->env, &fd))
			l3->mdb_fd = fd;
		kvt_l3i_index_reserve(l3);
	}
	l3->maxkey = (size_t)mdb_env_get_maxkeysize(l3->env);
	if (l3->maxkey > L3_IKEY_MAX - 1)
		l3->maxkey = L3_IKEY_MAX - 1;
	return 0;
}

/* The regions' arrays, once their count is known. */
static int regions_alloc(struct kvt_l3 *l3)
{
	l3->regions = calloc(l3->nregions, sizeof(*l3->regions));
	l3->touched = calloc(l3->nregions, sizeof(*l3->touched));
	if (!l3->regions || !l3->touched)
		return -ENOMEM;
	/* Before any failure path: close() must not see calloc's fd 0. */
	for (uint32_t i = 0; i < l3->nregions; i++)
		l3->regions[i].fd = l3->regions[i].dfd = -1;
	return 0;
}

/* The index transaction of an open: metadata and the mirror. */
static int open_index(struct kvt_l3 *l3, const struct kvt_l3_config *cfg,
		      const struct l3_paths *p)
{
	struct l3_dropped dr = { { 0 }, 0 };
	unsigned dbflags = l3->read_only ? 0 : MDB_CREATE;
	MDB_txn *txn;
	uint32_t prev;
	int rc;

	if ((rc = mdb_txn_begin(l3->env, NULL, l3->read_only ? MDB_RDONLY : 0,
				&txn))) {
		errmsg(cfg, "l3: cannot read the index in %s: %s", p->idx,
		       mdb_strerror(rc));
		return kvt_l3i_mdb_err(rc);
	}
	if ((rc = mdb_dbi_open(txn, "index", dbflags, &l3->db_index)) ||
	    (rc = mdb_dbi_open(txn, "regions", dbflags, &l3->db_regions)) ||
	    (rc = mdb_dbi_open(txn, "meta", dbflags, &l3->db_meta))) {
		errmsg(cfg, "l3: %s holds no L3 index (%s)", p->mdb,
		       mdb_strerror(rc));
		mdb_txn_abort(txn);
		return rc == MDB_NOTFOUND ? KVT_EINVAL : kvt_l3i_mdb_err(rc);
	}
	if ((rc = meta_check(l3, txn, cfg, &prev)) ||
	    (l3->read_only && (rc = regions_count(l3, txn, prev))) ||
	    (l3->read_only && (rc = regions_alloc(l3))) ||
	    (rc = load_state(l3, txn, &dr))) {
		if (rc != KVT_EVERSION && rc != KVT_EINVAL)
			errmsg(cfg, "l3: cannot load the index %s: %s", p->mdb,
			       kvt_strerror(rc));
		mdb_txn_abort(txn);
		return rc;
	}
	if (l3->read_only) {
		/* A commit, not an abort: it keeps the database handles. */
		mdb_txn_commit(txn);
		return 0;
	}
	if ((rc = mdb_txn_commit(txn))) {
		errmsg(cfg, "l3: cannot update the index %s: %s", p->mdb,
		       mdb_strerror(rc));
		return kvt_l3i_mdb_err(rc);
	}
	log_dropped(l3, &dr, prev);
	return 0;
}

/* The region files: stale ones removed, the rest opened (and made). */
static int open_regions(struct kvt_l3 *l3, const struct kvt_l3_config *cfg,
			struct l3_made *made)
{
	int rc;

	/* Region files beyond the configured count are stale: remove them. */
	for (uint32_t i = l3->nregions; !l3->read_only; i++) {
		char path[PATH_MAX];

		if (kvt_l3i_region_path(l3, i, path, sizeof(path)) ||
		    unlink(path))
			break;
	}
	for (uint32_t i = 0; i < l3->nregions; i++)
		if ((rc = region_open(l3, i, !cfg->no_direct && !l3->read_only,
				      cfg, &made[i])))
			return rc;
	if (!l3->direct || l3->read_only)
		for (uint32_t i = 0; i < l3->nregions; i++) {
			if (l3->regions[i].dfd >= 0)
				close(l3->regions[i].dfd);
			l3->regions[i].dfd = -1;
		}
	l3->direct = l3->direct && !l3->read_only;
	return 0;
}

/* A failed open leaves no files it made behind (no full disk). */
static void open_undo(struct kvt_l3 *l3, const struct l3_paths *p,
		      const struct l3_made *made, int made_root)
{
	char path[PATH_MAX];

	regions_undo(l3, made);
	if (!made_root)
		return;
	/* A store that did not exist before this open: all of it. */
	if (l3->env) {
		mdb_env_close(l3->env);
		l3->env = NULL;
	}
	if (p->mdb)
		unlink(p->mdb);
	if (p->idx && snprintf(path, sizeof(path), "%s/lock.mdb", p->idx) > 0)
		unlink(path);
	if (p->idx)
		rmdir(p->idx);
	if (p->lock)
		unlink(p->lock);
	rmdir(l3->root);
}

int kvt_l3_open(struct kvt_l3 **out, const struct kvt_l3_config *cfg)
{
	struct kvt_l3 *l3;
	struct l3_paths p = { NULL, NULL, NULL };
	struct l3_made *made = NULL;
	uint64_t rs = 0;
	int rc, made_root = 0;

	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (!cfg || !cfg->dir ||
	    (!cfg->read_only && cfg->capacity < 2 * KVT_L3_ALIGN))
		return KVT_EINVAL;
	if (!cfg->read_only) {
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
	}

	l3 = calloc(1, sizeof(*l3));
	if (!l3)
		return -ENOMEM;
	l3->lockfd = -1;
	l3->mdb_fd = -1;
	l3->read_only = cfg->read_only;
	l3->region_size = rs;
	l3->nregions = rs ? (uint32_t)(cfg->capacity / rs) : 0;
	l3->map_size = cfg->map_size ? cfg->map_size :
		       kvt_l3_index_size(cfg->capacity, cfg->key_max);
	l3->map_max = cfg->map_max ? cfg->map_max : 4 * l3->map_size;
	l3->qd = cfg->queue_depth ? cfg->queue_depth : KVT_L3_QD_DEFAULT;
	l3->no_sync = cfg->no_sync;
	l3->now_s = cfg->now_s ? cfg->now_s : default_now;
	l3->faults = cfg->faults;
	l3->on_evict = cfg->on_evict;
	l3->evict_arg = cfg->evict_arg;
	l3->on_reclaim = cfg->on_reclaim;
	l3->reclaim_arg = cfg->reclaim_arg;
	l3->log = cfg->log;
	l3->log_arg = cfg->log_arg;
	l3->direct = !cfg->no_direct;
	l3->io_backend = cfg->no_uring ? KVT_L3_IO_PREAD : cfg->io_backend;
	pthread_mutex_init(&l3->mu, NULL);
	pthread_mutex_init(&l3->wmu, NULL);
	pthread_mutex_init(&l3->rd0_mu, NULL);
	pthread_cond_init(&l3->rcond, NULL);
	l3->nbuckets = 1024;
	l3->buckets = calloc(l3->nbuckets, sizeof(*l3->buckets));
	l3->dir = strdup(cfg->dir);
	l3->root = path_join(cfg->dir, "l3");
	p.idx = l3->root ? path_join(l3->root, "index") : NULL;
	p.lock = l3->root ? path_join(l3->root, "lock") : NULL;
	p.mdb = p.idx ? path_join(p.idx, "data.mdb") : NULL;
	if (!l3->buckets || !l3->dir || !p.idx || !p.lock || !p.mdb ||
	    (!l3->read_only && regions_alloc(l3))) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = open_dirs(l3, cfg, &p, &made_root)) ||
	    (rc = open_env(l3, cfg, &p)) || (rc = open_index(l3, cfg, &p)))
		goto fail;
	kvt_l3i_index_used(l3); /* for kvt_l3_stats() */
	made = calloc(l3->nregions, sizeof(*made));
	if (!made) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = open_regions(l3, cfg, made)))
		goto fail;
	/* The tier's own reader, for kvt_l3_read_batch(l3, NULL, ...). */
	if (!l3->read_only && (rc = kvt_l3i_reader_new(l3, &l3->rd0))) {
		if (l3->io_backend == KVT_L3_IO_URING && rc != -ENOMEM)
			errmsg(cfg, "l3: io_uring is unavailable (%s) and the "
			       "io_uring backend was required", strerror(-rc));
		goto fail;
	}
	free(made);
	free(p.idx);
	free(p.lock);
	free(p.mdb);
	*out = l3;
	return 0;
fail:
	if (!l3->read_only)
		open_undo(l3, &p, made, made_root);
	free(made);
	free(p.idx);
	free(p.lock);
	free(p.mdb);
	kvt_l3_close(l3);
	return rc;
}

void kvt_l3_close(struct kvt_l3 *l3)
{
	if (!l3)
		return;
	/* Every reader must be closed first (kvt_l3.h). */
	assert(l3->nreaders == (l3->rd0 ? 1u : 0u));
	if (l3->env && l3->regions && !l3->read_only) {
		pthread_mutex_lock(&l3->wmu);
		kvt_l3i_purge_doomed(l3);
		kvt_l3i_flush_hits(l3);
		pthread_mutex_unlock(&l3->wmu);
	}
	kvt_l3i_reader_free(l3->rd0);
	kvt_l3i_map_free(l3);
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
	pthread_mutex_destroy(&l3->wmu);
	pthread_mutex_destroy(&l3->rd0_mu);
	pthread_cond_destroy(&l3->rcond);
	free(l3->regions);
	free(l3->touched);
	free(l3->stage);
	free(l3->snap);
	free(l3->root);
	free(l3->dir);
	free(l3);
}
