/*
 * kvt_l3_open.c - opening and closing L3 (kvt_l3_open(), kvt_l3_close() in
 * kvt_l3.h): the store's folders and lock, the region files, the LMDB
 * environment and the format metadata, and the mirror rebuilt from the
 * committed index (dropping what can no longer be trusted).
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
			 (kp[0] == 1 ? k.mv_size == (size_t)kp[1] + 18
				     : xlen == 0);

		if (ok) {
			struct l3_region *r;

			kvt_l3i_rec_decode(v.mv_data, &loc);
			r = loc.region < l3->nregions ?
				&l3->regions[loc.region] : NULL;
			/* The entry's lengths agree with its key's. */
			ok = r && r->seq && loc.generation == r->generation &&
			     loc.offset % KVT_L3_ALIGN == 0 &&
			     loc.data_len <= loc.length &&
			     loc.length == entry_size(kp[1], kp[0] ? xlen :
						      k.mv_size - 2 - kp[1],
						      loc.data_len) &&
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
		e = kvt_l3i_ent_new(l3, kp, k.mv_size,
				    (uint8_t *)v.mv_data + L3_REC, xlen,
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
	l3->on_reclaim = cfg->on_reclaim;
	l3->reclaim_arg = cfg->reclaim_arg;
	l3->direct = !cfg->no_direct;
	l3->io_backend = cfg->no_uring ? KVT_L3_IO_PREAD : cfg->io_backend;
	pthread_mutex_init(&l3->mu, NULL);
	pthread_mutex_init(&l3->wmu, NULL);
	pthread_mutex_init(&l3->rd0_mu, NULL);
	pthread_cond_init(&l3->rcond, NULL);
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

	/* The tier's own reader, for kvt_l3_read_batch(l3, NULL, ...). */
	if ((rc = kvt_l3i_reader_new(l3, &l3->rd0))) {
		if (l3->io_backend == KVT_L3_IO_URING && rc != -ENOMEM)
			errmsg(cfg, "l3: io_uring is unavailable (%s) and the "
			       "io_uring backend was required", strerror(-rc));
		goto fail;
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

void kvt_l3_close(struct kvt_l3 *l3)
{
	if (!l3)
		return;
	/* Every reader must be closed first (kvt_l3.h). */
	assert(l3->nreaders == (l3->rd0 ? 1u : 0u));
	if (l3->env && l3->regions) {
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
	free(l3);
}

