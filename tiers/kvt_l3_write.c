/*
 * kvt_l3_write.c - the L3 write path (see kvt_l3.h, kvt_l3_int.h).
 *
 * A batch is serialized into an aligned staging buffer and appended to the
 * head region with large pwrite()s (O_DIRECT where available), the touched
 * region files are fdatasync()ed, and only then is the index committed, in
 * one transaction.  Everything here runs as the writer (l3->wmu held).
 */
#include "kvt_l3_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvt_valgrind.h"
#include "kvtier_errors.h"

/* ---- region I/O --------------------------------------------------------- */

/* pwrite() with the test fault hook in front of it. */
static ssize_t hook_pwrite(struct kvt_l3 *l3, int fd, const void *buf,
			   size_t len, uint64_t off)
{
	struct kvt_l3_faults *f = l3->faults;

	if (f) {
		if (f->before_write)
			f->before_write(f->before_write_arg);
		f->writes++;
		if (l3->short_pending) {
			l3->short_pending = 0;
			errno = f->write_errno ? f->write_errno : EIO;
			return -1;
		}
		if (f->write_fail_at && --f->write_fail_at == 0) {
			size_t half = len / 2 / KVT_L3_ALIGN * KVT_L3_ALIGN;

			if (f->write_short && half) {
				l3->short_pending = 1;
				return pwrite(fd, buf, half, (off_t)off);
			}
			errno = f->write_errno ? f->write_errno : EIO;
			return -1;
		}
	}
	return pwrite(fd, buf, len, (off_t)off);
}

static int hook_sync(struct kvt_l3 *l3, int fd)
{
	struct kvt_l3_faults *f = l3->faults;

	if (f && f->sync_errno) {
		int e = f->sync_errno;

		f->sync_errno = 0;
		return -e;
	}
	if (l3->no_sync)
		return 0;
	return fdatasync(fd) ? -errno : 0;
}

/* Writes len bytes at off of region r, retrying short writes. */
static int region_write(struct kvt_l3 *l3, struct l3_region *r,
			const uint8_t *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		/*
		 * O_DIRECT needs aligned offsets and lengths; after an odd
		 * short write (or on a filesystem that rejects the request)
		 * the buffered descriptor finishes the job.
		 */
		int aligned = (done % KVT_L3_ALIGN) == 0;
		int fd = r->dfd >= 0 && aligned ? r->dfd : r->fd;
		ssize_t w = hook_pwrite(l3, fd, buf + done, len - done,
					off + done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EINVAL && fd == r->dfd) {
			w = hook_pwrite(l3, r->fd, buf + done, len - done,
					off + done);
		}
		if (w <= 0) {
			l3->wfail_op = "write";
			l3->wfail_region = r - l3->regions;
			return w < 0 ? -errno : -EIO;
		}
		done += (size_t)w;
	}
	lock(l3);
	l3->bytes_written += len;
	unlock(l3);
	return 0;
}

/* ---- write path --------------------------------------------------------- */

/* One item of a put batch on its way to the index. */
struct l3_pend {
	struct l3_ent *ent; /* allocated up front; loc filled when placed */
	int placed;
	int committed;
};

struct l3_batch {
	const struct kvt_l3_item *items;
	struct l3_pend *pend;
	size_t n;
	size_t first;     /* items[first..] are not committed yet */
	uint64_t run_off; /* region offset of stage[0] */
	size_t run_len;   /* bytes in stage */
};

static void touch(struct kvt_l3 *l3, uint32_t id)
{
	struct l3_region *r = &l3->regions[id];

	if (!r->touched) {
		r->touched = 1;
		r->pend_fill = r->fill;
		l3->touched[l3->ntouched++] = id;
	}
}

static void untouch_all(struct kvt_l3 *l3)
{
	for (uint32_t i = 0; i < l3->ntouched; i++)
		l3->regions[l3->touched[i]].touched = 0;
	l3->ntouched = 0;
}

static int stage_flush(struct kvt_l3 *l3, struct l3_batch *b)
{
	int rc;

	if (!b->run_len)
		return 0;
	rc = region_write(l3, &l3->regions[l3->head], l3->stage, b->run_len,
			  b->run_off);
	b->run_off += b->run_len;
	b->run_len = 0;
	return rc;
}

struct commit_arg {
	struct l3_batch *b;
	size_t upto;
	long nsnap;
};

/* The transaction of batch_commit: hit counts, items, regions' fill. */
static int commit_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	struct commit_arg *a = arg;
	int rc = 0;

	for (long i = 0; i < a->nsnap && !rc; i++)
		rc = kvt_l3i_rec_put_hits(l3, txn, l3->snap[i].e,
					  l3->snap[i].hits);
	for (size_t i = a->b->first; i < a->upto && !rc; i++)
		rc = kvt_l3i_rec_put(l3, txn, a->b->pend[i].ent);
	for (uint32_t i = 0; i < l3->ntouched && !rc; i++) {
		struct l3_region *r = &l3->regions[l3->touched[i]];

		rc = kvt_l3i_region_rec_put(l3, txn, l3->touched[i],
					    r->generation, r->seq,
					    r->pend_fill);
	}
	return rc;
}

static int index_room(struct kvt_l3 *l3);

/*
 * Syncs every region the batch wrote and commits the placed, uncommitted
 * items (plus pending hit counts and the regions' new fill) in one
 * transaction, then applies them to the mirror.
 */
static int batch_commit(struct kvt_l3 *l3, struct l3_batch *b, size_t upto)
{
	struct commit_arg a;
	long nsnap;
	int rc;

	if ((rc = stage_flush(l3, b)))
		return rc;
	for (uint32_t i = 0; i < l3->ntouched; i++)
		if ((rc = hook_sync(l3, l3->regions[l3->touched[i]].fd))) {
			l3->wfail_op = "sync";
			l3->wfail_region = l3->touched[i];
			return rc;
		}
	if (l3->faults && l3->faults->skip_commit) {
		l3->faults->skip_commit = 0;
		l3->wfail_op = "commit";
		l3->wfail_region = -1;
		return -EIO;
	}
	if ((rc = index_room(l3)))
		return rc;
	for (;;) {
		if ((nsnap = kvt_l3i_snap_dirty(l3)) < 0)
			nsnap = 0; /* no memory for hit counts: they wait */
		a = (struct commit_arg){ b, upto, nsnap };
		if (!(rc = kvt_l3i_txn_run(l3, commit_body, &a)))
			break;
		kvt_l3i_snap_undo(l3, (size_t)nsnap);
		/*
		 * A full map that cannot grow (map_max): the index is full.
		 * Make room the way full regions do, by reclaiming the
		 * oldest (which may free entries of the snapshot: taken
		 * again), then try again.
		 */
		if (rc != MDB_MAP_FULL || kvt_l3i_index_full_reclaim(l3)) {
			l3->wfail_op = "commit";
			l3->wfail_region = -1;
			return kvt_l3i_mdb_err(rc);
		}
	}
	kvt_l3i_index_reserve(l3);

	lock(l3);
	for (size_t i = b->first; i < upto; i++) {
		struct l3_ent *e = b->pend[i].ent, *old;

		old = kvt_l3i_map_find_ent(l3, e);
		if (old)
			kvt_l3i_map_remove(l3, old); /* its bytes become dead space */
		kvt_l3i_map_insert(l3, e);
		b->pend[i].committed = 1;
	}
	for (uint32_t i = 0; i < l3->ntouched; i++) {
		struct l3_region *r = &l3->regions[l3->touched[i]];

		l3->total_fill += r->pend_fill - r->fill;
		r->fill = r->pend_fill;
	}
	unlock(l3);
	untouch_all(l3);
	b->first = upto;
	return 0;
}

struct reclaim_arg {
	uint32_t id;
	uint64_t seq; /* the region's sequence afterwards: 0 = free */
};

static int reclaim_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	struct reclaim_arg *a = arg;
	struct l3_region *r = &l3->regions[a->id];
	int rc = 0;

	for (struct l3_ent *e = r->ents; e && !rc; e = e->rnext)
		rc = kvt_l3i_rec_del(l3, txn, e);
	if (!rc)
		rc = kvt_l3i_region_rec_put(l3, txn, a->id, r->generation + 1,
					    a->seq, 0);
	return rc;
}

/* Entries a reclaim deletes per transaction when the map is full. */
#define L3_RECLAIM_CHUNK 32

static int chunk_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	struct l3_region *r = arg;
	int rc = 0, i = 0;

	for (struct l3_ent *e = r->ents; e && !rc && i < L3_RECLAIM_CHUNK;
	     e = e->rnext, i++)
		rc = kvt_l3i_rec_del(l3, txn, e);
	return rc;
}

/* Tells the caller's on_evict that e is gone. */
static void evicted(struct kvt_l3 *l3, const struct l3_ent *e)
{
	struct kvt_key k;

	kvt_l3i_ent_key(e, &k.ns, &k.ns_len, &k.key, &k.key_len);
	l3->on_evict(l3->evict_arg, &k);
}

/*
 * A region's entries deleted a chunk at a time, each chunk its own
 * transaction (and then out of the mirror): a delete needs fresh pages
 * for every leaf it touches, which a full map may not have for a whole
 * region, but has for a chunk.  A crash in between leaves the rest of the
 * region as it was, still valid.
 */
static int reclaim_chunks(struct kvt_l3 *l3, struct l3_region *r)
{
	int rc;

	while (r->ents) {
		if ((rc = kvt_l3i_txn_run(l3, chunk_body, r)))
			return rc;
		for (int i = 0; i < L3_RECLAIM_CHUNK && r->ents; i++) {
			if (l3->on_evict)
				evicted(l3, r->ents);
			lock(l3);
			kvt_l3i_map_remove(l3, r->ents);
			unlock(l3);
		}
	}
	return 0;
}

/*
 * Offers the live blocks of region r, about to be reclaimed, to the
 * caller's on_reclaim (kvt_l3.h), each read back whole and verified like
 * kvt_l3_check() does, so that what is offered is exactly what was
 * stored.  The writer holds wmu: nobody else changes r's entry list.
 */
static void reclaim_offer(struct kvt_l3 *l3, struct l3_region *r)
{
	uint8_t *buf = NULL;
	size_t cap = 0;

	for (struct l3_ent *e = r->ents; e; e = e->rnext) {
		struct kvt_l3_reclaimed b;
		size_t len = (size_t)e->loc.length, done = 0;
		int doomed;

		lock(l3);
		doomed = e->list == L3_LIST_DOOMED;
		unlock(l3);
		if (doomed || kvt_l3i_expired(l3, e->loc.expiry))
			continue;
		if (len > cap) {
			void *p;

			if (posix_memalign(&p, KVT_L3_ALIGN, len))
				break;
			free(buf);
			buf = p;
			cap = len;
		}
		while (done < len) {
			/* Aligned throughout (entries are): O_DIRECT if any. */
			int fd = r->dfd >= 0 ? r->dfd : r->fd;
			ssize_t n = pread(fd, buf + done, len - done,
					  (off_t)(e->loc.offset + done));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EINVAL && fd == r->dfd)
				n = pread(r->fd, buf + done, len - done,
					  (off_t)(e->loc.offset + done));
			if (n <= 0)
				break;
			done += (size_t)n;
		}
		kvt_l3i_ent_key(e, &b.k.ns, &b.k.ns_len, &b.k.key,
				&b.k.key_len);
		if (done < len ||
		    kvt_l3i_entry_verify(buf, &e->loc, b.k.ns, b.k.ns_len,
					 b.k.key, b.k.key_len))
			continue;
		lock(l3);
		l3->bytes_read += len;
		unlock(l3);
		b.codec = e->loc.codec;
		b.dtype = e->loc.dtype;
		b.raw_len = e->loc.raw_len;
		b.expiry = e->loc.expiry;
		b.data = buf;
		b.len = (size_t)e->loc.data_len;
		if (l3->on_reclaim(l3->reclaim_arg, &b))
			break;
	}
	free(buf);
}

/*
 * Reclaims region id: its index entries are removed and its generation
 * bumped in one transaction, before any byte of it is overwritten; it
 * becomes the head (seq: the next sequence) or free (seq 0).  Then its
 * entries leave the mirror, so no new read can start in it, and the writer
 * waits for the reads of it still in flight: only then may the caller
 * write into it.  Returns 0 or an LMDB code.
 */
static int region_reclaim(struct kvt_l3 *l3, uint32_t id, int as_head)
{
	struct l3_region *r = &l3->regions[id];
	struct reclaim_arg a = { id, as_head ? l3->max_seq + 1 : 0 };
	uint64_t old_fill = r->seq ? r->fill : 0;
	int rc;

	/* Before anything of it goes: the caller may keep its blocks. */
	if (l3->on_reclaim && r->seq)
		reclaim_offer(l3, r);
	rc = kvt_l3i_txn_run(l3, reclaim_body, &a);

	/* Too large for what is left of a full map: in chunks, then. */
	if (rc == MDB_MAP_FULL && !(rc = reclaim_chunks(l3, r)))
		rc = kvt_l3i_txn_run(l3, reclaim_body, &a);
	if (rc)
		return rc;
	/* Only the writer changes the map: the entries are still there. */
	if (l3->on_evict)
		for (struct l3_ent *e = r->ents; e; e = e->rnext)
			evicted(l3, e);
	lock(l3);
	if (r->seq)
		l3->reclaimed++;
	while (r->ents)
		kvt_l3i_map_remove(l3, r->ents);
	l3->total_fill -= old_fill;
	r->generation++;
	r->seq = as_head ? ++l3->max_seq : 0;
	r->fill = 0;
	if (as_head)
		l3->head = id;
	/* Reads that looked up an entry here before it left the mirror. */
	while (r->readers) {
		r->reclaim_waits = 1;
		pthread_cond_wait(&l3->rcond, &l3->mu);
	}
	r->reclaim_waits = 0;
	unlock(l3);
	return 0;
}

/*
 * Makes a new region the head: the next free one, else the oldest (FIFO),
 * reclaimed (region_reclaim()).
 */
static int advance_head(struct kvt_l3 *l3, struct l3_batch *b, size_t cur)
{
	struct l3_region *r;
	uint32_t victim = UINT32_MAX;
	int rc;

	for (uint32_t i = 1; i <= l3->nregions; i++) {
		uint32_t id = (l3->head + i) % l3->nregions;

		if (l3->regions[id].seq == 0) {
			victim = id;
			break;
		}
	}
	if (victim == UINT32_MAX) {
		uint64_t best = UINT64_MAX;

		for (uint32_t id = 0; id < l3->nregions; id++)
			if (l3->regions[id].seq < best &&
			    (id != l3->head || l3->nregions == 1)) {
				best = l3->regions[id].seq;
				victim = id;
			}
	}
	r = &l3->regions[victim];
	/*
	 * A batch larger than the store wraps onto regions it wrote itself;
	 * commit what it has placed so far so that the reclaim below sees
	 * (and drops) those entries through the normal path.
	 */
	if (r->touched && (rc = batch_commit(l3, b, cur)))
		return rc;
	else if (!r->touched && (rc = stage_flush(l3, b)))
		return rc;
	if ((rc = region_reclaim(l3, victim, 1))) {
		l3->wfail_op = "reclaim";
		l3->wfail_region = -1;
		return kvt_l3i_mdb_err(rc);
	}
	if (r->touched) /* committed above; start afresh from 0 */
		r->pend_fill = 0;
	b->run_off = 0;
	return 0;
}

/* ---- the index's room ------------------------------------------------------ */

/* A transaction that changes nothing but commits (kvt_l3i_index_full_reclaim). */
static int nudge_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	uint8_t buf[4];
	MDB_val k = { 7, (void *)"regions" }, v = { sizeof(buf), buf };

	(void)arg;
	put_u32(buf, l3->nregions);
	return mdb_put(txn, l3->db_meta, &k, &v, 0);
}

/*
 * Reclaims the oldest region that is neither the head nor written by the
 * batch in progress, because the index map is full and cannot grow: the
 * index counts against L3's capacity as the regions do.  Counted
 * (index_full) and logged.  Returns 0, or -ENOSPC when nothing is left to
 * reclaim.
 */
int kvt_l3i_index_full_reclaim(struct kvt_l3 *l3)
{
	uint32_t victim = UINT32_MAX;
	uint64_t best = UINT64_MAX, used;
	int rc;

	for (uint32_t id = 0; id < l3->nregions; id++) {
		const struct l3_region *r = &l3->regions[id];

		if (r->seq && r->seq < best && id != l3->head && !r->touched) {
			best = r->seq;
			victim = id;
		}
	}
	if (victim == UINT32_MAX)
		return -ENOSPC;
	if ((rc = region_reclaim(l3, victim, 0)))
		return kvt_l3i_mdb_err(rc);
	/*
	 * LMDB reuses the pages a transaction freed only once a later one
	 * has committed (with no reader, two commits on): one small commit
	 * now, so that the next one finds the room just made.
	 */
	(void)kvt_l3i_txn_run(l3, nudge_body, NULL);
	lock(l3);
	l3->index_full++;
	unlock(l3);
	used = kvt_l3i_index_used(l3);
	kvt_l3i_log(l3, L3_LOG_WARN, "event=l3_index_full dir=%s map=%" PRIu64
		    " map_max=%" PRIu64 " used=%" PRIu64 " action=reclaim "
		    "region=%" PRIu32 " hint=\"the index of L3 is full: "
		    "regions are reclaimed early; a larger --max-key-size "
		    "estimate or fewer, larger entries help\"", l3->root,
		    l3->map_size, l3->map_max, used, victim);
	return 0;
}

/*
 * Before a put commits: an eighth of the map is kept free for what must
 * never fail (DEL, DROP, reclaims: deletes need pages too).  Past that,
 * the map grows; at map_max, regions are reclaimed until a quarter is free.
 */
static int index_room(struct kvt_l3 *l3)
{
	uint64_t used = kvt_l3i_index_used(l3), hwm;
	MDB_envinfo info;
	MDB_stat st;

	/*
	 * The file's high-water mark is what LMDB extends when its reusable
	 * free pages run out (freed pages wait two commits): it decides.
	 */
	if (mdb_env_info(l3->env, &info) || mdb_env_stat(l3->env, &st))
		return 0;
	hwm = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	if (hwm <= l3->map_size / 8 * 7)
		return 0;
	if (kvt_l3i_map_grow(l3, hwm + hwm / 2) == 0)
		return 0;
	while (used > l3->map_size / 4 * 3 &&
	       kvt_l3i_index_full_reclaim(l3) == 0)
		used = kvt_l3i_index_used(l3);
	return 0;
}

uint64_t kvt_l3i_index_used(struct kvt_l3 *l3)
{
	MDB_dbi dbis[] = { 0, 1, l3->db_index, l3->db_regions, l3->db_meta };
	uint64_t pages = 2; /* the meta pages */
	MDB_txn *txn;
	MDB_stat st;

	if (mdb_txn_begin(l3->env, NULL, MDB_RDONLY, &txn))
		return 0;
	/* 0 and 1 are LMDB's free list and main tree. */
	for (size_t i = 0; i < sizeof(dbis) / sizeof(dbis[0]); i++) {
		if (mdb_stat(txn, dbis[i], &st)) {
			mdb_txn_abort(txn);
			return 0;
		}
		pages += st.ms_branch_pages + st.ms_leaf_pages +
			 st.ms_overflow_pages;
	}
	mdb_txn_abort(txn);
	lock(l3);
	l3->index_used = pages * st.ms_psize; /* for kvt_l3_stats() */
	unlock(l3);
	return pages * st.ms_psize;
}

int kvt_l3i_map_grow(struct kvt_l3 *l3, uint64_t at_least)
{
	uint64_t old = l3->map_size, want = old + old / 2;
	MDB_envinfo info;

	if (want < at_least)
		want = at_least;
	want = round_up(want, (uint64_t)1 << 20);
	if (want > l3->map_max)
		want = l3->map_max;
	if (want <= old)
		return MDB_MAP_FULL;
	/* Allowed: no transaction is open in this process (the writer). */
	if (mdb_env_set_mapsize(l3->env, (size_t)want))
		return MDB_MAP_FULL;
	if (!mdb_env_info(l3->env, &info))
		want = info.me_mapsize;
	lock(l3);
	l3->map_size = want;
	l3->index_grown++;
	unlock(l3);
	kvt_l3i_index_reserve(l3);
	kvt_l3i_log(l3, L3_LOG_INFO, "event=l3_index_grown dir=%s map=%" PRIu64
		    "->%" PRIu64 " map_max=%" PRIu64, l3->root, old, want,
		    l3->map_max);
	return 0;
}

int kvt_l3i_txn_run(struct kvt_l3 *l3,
		    int (*fn)(struct kvt_l3 *l3, MDB_txn *txn, void *arg),
		    void *arg)
{
	for (;;) {
		MDB_txn *txn;
		int rc = mdb_txn_begin(l3->env, NULL, 0, &txn);

		if (rc == 0) {
			rc = fn(l3, txn, arg);
			if (rc)
				mdb_txn_abort(txn);
			else
				rc = mdb_txn_commit(txn); /* frees txn */
		}
		if (rc != MDB_MAP_FULL || kvt_l3i_map_grow(l3, 0))
			return rc;
	}
}

static int stage_reserve(struct kvt_l3 *l3, size_t need)
{
	void *p;

	if (l3->stage_cap >= need)
		return 0;
	if (need < L3_STAGE_MIN)
		need = L3_STAGE_MIN;
	if (posix_memalign(&p, KVT_L3_ALIGN, need))
		return -ENOMEM;
	free(l3->stage);
	l3->stage = p;
	l3->stage_cap = need;
	return 0;
}

/*
 * Serializes item it as an entry of loc->length bytes at dst (kvt_l3.h,
 * "On-disk entry": the value first, at the entry's aligned offset, then
 * the header, namespace and key, then zero padding) and sets
 * loc->checksum.
 */
static void entry_build(uint8_t *dst, const struct kvt_l3_item *it,
			struct l3_loc *loc)
{
	uint8_t *hp = dst + it->len;
	size_t body = it->len + L3_HDR + it->k.ns_len + it->k.key_len;
	struct l3_hdr h = {
		.magic = L3_MAGIC,
		.version = L3_VERSION,
		.codec = it->codec,
		.dtype = it->dtype,
		.ns_len = (uint32_t)it->k.ns_len,
		.key_len = (uint32_t)it->k.key_len,
		.raw_len = it->raw_len,
		.data_len = it->len,
		.generation = loc->generation,
		.offset = loc->offset,
		.region = loc->region,
		.checksum = 0, /* set below */
	};

	if (it->len)
		memcpy(dst, it->data, it->len);
	kvt_l3i_hdr_encode(hp, &h);
	if (it->k.ns_len)
		memcpy(hp + L3_HDR, it->k.ns, it->k.ns_len);
	if (it->k.key_len)
		memcpy(hp + L3_HDR + it->k.ns_len, it->k.key, it->k.key_len);
	memset(dst + body, 0, loc->length - body);
	loc->checksum = kvt_l3i_entry_sum(&h, it->k.ns, it->k.key, dst,
					  it->len, NULL, 0);
	put_u64(hp + L3_HDR_CHECKSUM, loc->checksum);
}

static int batch_run(struct kvt_l3 *l3, struct l3_batch *b)
{
	int rc;

	touch(l3, l3->head);
	b->run_off = l3->regions[l3->head].pend_fill;
	for (size_t i = 0; i < b->n; i++) {
		const struct kvt_l3_item *it = &b->items[i];
		struct l3_ent *e = b->pend[i].ent;
		uint64_t esize = entry_size(it->k.ns_len, it->k.key_len,
					    it->len);
		struct l3_region *r = &l3->regions[l3->head];

		if (r->pend_fill + esize > l3->region_size) {
			if ((rc = advance_head(l3, b, i)))
				return rc;
			touch(l3, l3->head);
			r = &l3->regions[l3->head];
			b->run_off = r->pend_fill;
		}
		if (b->run_len + esize > l3->stage_cap) {
			if ((rc = stage_flush(l3, b)))
				return rc;
			if ((rc = stage_reserve(l3, esize)))
				return rc;
		}
		e->loc.region = l3->head;
		e->loc.generation = r->generation;
		e->loc.offset = r->pend_fill;
		e->loc.length = esize;
		e->loc.data_len = it->len;
		e->loc.raw_len = it->raw_len;
		e->loc.codec = it->codec;
		e->loc.dtype = it->dtype;
		e->loc.expiry = it->expiry;
		e->loc.hits = 0;
		entry_build(l3->stage + b->run_len, it, &e->loc);
		b->run_len += esize;
		r->pend_fill += esize;
		b->pend[i].placed = 1;
	}
	return batch_commit(l3, b, b->n);
}

static int put_batch(struct kvt_l3 *l3, const struct kvt_l3_item *items,
		     size_t n);

int kvt_l3_put_batch(struct kvt_l3 *l3, const struct kvt_l3_item *items,
		     size_t n)
{
	int rc;

	if (!l3 || (n && !items) || l3->read_only)
		return KVT_EINVAL;
	if (!n)
		return 0;
	pthread_mutex_lock(&l3->wmu);
	rc = put_batch(l3, items, n);
	pthread_mutex_unlock(&l3->wmu);
	return rc;
}

void kvt_l3i_log_failure(struct kvt_l3 *l3, const char *what, int rc,
			 size_t n)
{
	struct timespec ts;
	uint64_t now;
	char path[PATH_MAX];

	if (!l3->log)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	/* One line a second at most: a dead disk fails every batch. */
	if (now < l3->log_next_ns) {
		l3->log_dropped++;
		return;
	}
	if (l3->wfail_region < 0 ||
	    kvt_l3i_region_path(l3, (uint32_t)l3->wfail_region, path,
				sizeof(path)))
		snprintf(path, sizeof(path), "%s/index/data.mdb", l3->root);
	kvt_l3i_log(l3, L3_LOG_ERROR, "event=l3_write_failed what=%s op=%s "
		    "file=%s error=\"%s\" errno=%d blocks=%zu "
		    "lines_left_out=%" PRIu64, what,
		    l3->wfail_op ? l3->wfail_op : "?", path, kvt_strerror(rc),
		    rc < 0 && rc > -4096 ? -rc : 0, n, l3->log_dropped);
	l3->log_dropped = 0;
	l3->log_next_ns = now + 1000000000u;
}

/* kvt_l3_put_batch() with wmu held. */
static int put_batch(struct kvt_l3 *l3, const struct kvt_l3_item *items,
		     size_t n)
{
	struct l3_batch b = { 0 };
	int rc = 0;

	l3->wfail_op = NULL;
	l3->wfail_region = -1;
	kvt_l3i_purge_doomed(l3);
	/* Validate everything first, so that a bad item costs no I/O. */
	for (size_t i = 0; i < n; i++) {
		struct l3_kenc ke;

		if ((rc = kvt_l3i_key_encode(l3, &items[i].k, &ke)))
			return rc;
		if (items[i].len && !items[i].data)
			return KVT_EINVAL;
		if (items[i].len > l3->region_size ||
		    entry_size(ke.ns_len, ke.key_len, items[i].len) >
		    l3->region_size)
			return KVT_ENOSPACE;
	}
	b.items = items;
	b.n = n;
	b.pend = calloc(n, sizeof(*b.pend));
	if (!b.pend)
		return -ENOMEM;
	for (size_t i = 0; i < n && !rc; i++) {
		struct l3_kenc ke;

		kvt_l3i_key_encode(l3, &items[i].k, &ke);
		b.pend[i].ent = kvt_l3i_ent_new(l3, ke.ikey, ke.ikey_len, ke.key,
					ke.hashed ? ke.key_len : 0, ke.hash);
		if (!b.pend[i].ent)
			rc = -ENOMEM;
	}
	if (!rc)
		rc = stage_reserve(l3, L3_STAGE_MIN);
	l3->short_pending = 0;
	if (!rc)
		rc = batch_run(l3, &b);
	if (rc && rc != -ENOMEM) {
		lock(l3);
		l3->write_errors++;
		unlock(l3);
		kvt_l3i_log_failure(l3, "put", rc, n);
	}
	untouch_all(l3);
	for (size_t i = 0; i < n; i++)
		if (!b.pend[i].committed)
			kvt_l3i_ent_free(l3, b.pend[i].ent);
	free(b.pend);
	return rc;
}

/* ---- the writer's housekeeping ------------------------------------------ */

static int snap_reserve(struct kvt_l3 *l3, size_t n)
{
	struct l3_snap *p;

	if (n <= l3->snap_cap)
		return 0;
	n = n < 64 ? 64 : n * 2;
	p = realloc(l3->snap, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	l3->snap = p;
	l3->snap_cap = n;
	return 0;
}

long kvt_l3i_snap_dirty(struct kvt_l3 *l3)
{
	size_t n = 0;

	lock(l3);
	for (struct l3_ent *e = l3->dirty; e; e = e->dnext)
		n++;
	if (n && snap_reserve(l3, n)) {
		unlock(l3);
		return -ENOMEM;
	}
	n = 0;
	while (l3->dirty) {
		struct l3_ent *e = l3->dirty;

		l3->snap[n].e = e;
		l3->snap[n++].hits = e->loc.hits;
		kvt_l3i_list_unlink(l3, e);
	}
	unlock(l3);
	return (long)n;
}

void kvt_l3i_snap_undo(struct kvt_l3 *l3, size_t n)
{
	lock(l3);
	/* Only the writer removes entries: every one is still mirrored. */
	for (size_t i = 0; i < n; i++)
		if (l3->snap[i].e->list == L3_LIST_NONE)
			kvt_l3i_list_link(l3, l3->snap[i].e, L3_LIST_DIRTY);
	unlock(l3);
}

struct snap_arg {
	size_t n;
	int del; /* delete the records (purge) instead of putting hits */
};

static int snap_body(struct kvt_l3 *l3, MDB_txn *txn, void *arg)
{
	struct snap_arg *a = arg;
	int rc = 0;

	for (size_t i = 0; i < a->n && !rc; i++)
		rc = a->del ? kvt_l3i_rec_del(l3, txn, l3->snap[i].e) :
			      kvt_l3i_rec_put_hits(l3, txn, l3->snap[i].e,
						   l3->snap[i].hits);
	return rc;
}

void kvt_l3i_flush_hits(struct kvt_l3 *l3)
{
	long n = kvt_l3i_snap_dirty(l3);
	struct snap_arg a = { (size_t)n, 0 };

	if (n <= 0)
		return;
	/* Advisory counts: on failure they are kept for the next try. */
	if (kvt_l3i_txn_run(l3, snap_body, &a))
		kvt_l3i_snap_undo(l3, (size_t)n);
}

void kvt_l3i_purge_doomed(struct kvt_l3 *l3)
{
	struct snap_arg a = { 0, 1 };

	lock(l3);
	if (!l3->ndoomed || snap_reserve(l3, l3->ndoomed)) {
		unlock(l3);
		return;
	}
	for (struct l3_ent *e = l3->doomed; e; e = e->dnext)
		l3->snap[a.n++].e = e;
	unlock(l3);
	/*
	 * Readers only add to the doomed list; the entries copied stay
	 * mirrored (and doomed) until this writer removes them.  On failure
	 * they stay doomed, hidden: the next writer call tries again.
	 */
	if (kvt_l3i_txn_run(l3, snap_body, &a))
		return;
	lock(l3);
	for (size_t i = 0; i < a.n; i++)
		kvt_l3i_map_remove(l3, l3->snap[i].e);
	unlock(l3);
}
