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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

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
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
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

/*
 * Syncs every region the batch wrote and commits the placed, uncommitted
 * items (plus pending hit counts and the regions' new fill) in one
 * transaction, then applies them to the mirror.
 */
static int batch_commit(struct kvt_l3 *l3, struct l3_batch *b, size_t upto)
{
	MDB_txn *txn;
	long nsnap;
	int rc;

	if ((rc = stage_flush(l3, b)))
		return rc;
	for (uint32_t i = 0; i < l3->ntouched; i++)
		if ((rc = hook_sync(l3, l3->regions[l3->touched[i]].fd)))
			return rc;
	if (l3->faults && l3->faults->skip_commit) {
		l3->faults->skip_commit = 0;
		return -EIO;
	}
	if ((nsnap = kvt_l3i_snap_dirty(l3)) < 0)
		nsnap = 0; /* no memory for hit counts: they wait */
	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn))) {
		kvt_l3i_snap_undo(l3, (size_t)nsnap);
		return kvt_l3i_mdb_err(rc);
	}
	for (long i = 0; i < nsnap && !rc; i++)
		rc = kvt_l3i_rec_put_hits(l3, txn, l3->snap[i].e,
					  l3->snap[i].hits);
	for (size_t i = b->first; i < upto && !rc; i++)
		rc = kvt_l3i_rec_put(l3, txn, b->pend[i].ent);
	for (uint32_t i = 0; i < l3->ntouched && !rc; i++) {
		struct l3_region *r = &l3->regions[l3->touched[i]];

		rc = kvt_l3i_region_rec_put(l3, txn, l3->touched[i], r->generation,
				    r->seq, r->pend_fill);
	}
	if (rc)
		mdb_txn_abort(txn);
	else
		rc = mdb_txn_commit(txn);
	if (rc) {
		kvt_l3i_snap_undo(l3, (size_t)nsnap);
		return kvt_l3i_mdb_err(rc);
	}

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
 * Makes a new region the head: the next free one, else the oldest (FIFO),
 * whose index entries are removed and generation bumped in one transaction
 * before any byte of it is overwritten.  Then its entries leave the mirror,
 * so no new read can start in it, and the writer waits for the reads of it
 * still in flight: only then may the caller write into it.
 */
static int advance_head(struct kvt_l3 *l3, struct l3_batch *b, size_t cur)
{
	struct l3_region *r;
	uint32_t victim = UINT32_MAX;
	MDB_txn *txn;
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
	if (l3->on_reclaim && r->seq)
		reclaim_offer(l3, r);

	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn)))
		return kvt_l3i_mdb_err(rc);
	for (struct l3_ent *e = r->ents; e && !rc; e = e->rnext)
		rc = kvt_l3i_rec_del(l3, txn, e);
	if (!rc)
		rc = kvt_l3i_region_rec_put(l3, txn, victim, r->generation + 1,
				    l3->max_seq + 1, 0);
	if (rc) {
		mdb_txn_abort(txn);
		return kvt_l3i_mdb_err(rc);
	}
	if ((rc = mdb_txn_commit(txn)))
		return kvt_l3i_mdb_err(rc);

	/* Only the writer changes the map: the entries are still there. */
	if (l3->on_evict)
		for (struct l3_ent *e = r->ents; e; e = e->rnext) {
			struct kvt_key k;

			kvt_l3i_ent_key(e, &k.ns, &k.ns_len, &k.key,
					&k.key_len);
			l3->on_evict(l3->evict_arg, &k);
		}
	lock(l3);
	if (r->seq)
		l3->reclaimed++;
	while (r->ents)
		kvt_l3i_map_remove(l3, r->ents);
	l3->total_fill -= r->seq ? r->fill : 0;
	r->generation++;
	r->seq = ++l3->max_seq;
	r->fill = 0;
	l3->head = victim;
	/* Reads that looked up an entry here before it left the mirror. */
	while (r->readers) {
		r->reclaim_waits = 1;
		pthread_cond_wait(&l3->rcond, &l3->mu);
	}
	r->reclaim_waits = 0;
	unlock(l3);
	if (r->touched) /* committed above; start afresh from 0 */
		r->pend_fill = 0;
	b->run_off = 0;
	return 0;
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

	if (!l3 || (n && !items))
		return KVT_EINVAL;
	if (!n)
		return 0;
	pthread_mutex_lock(&l3->wmu);
	rc = put_batch(l3, items, n);
	pthread_mutex_unlock(&l3->wmu);
	return rc;
}

/* kvt_l3_put_batch() with wmu held. */
static int put_batch(struct kvt_l3 *l3, const struct kvt_l3_item *items,
		     size_t n)
{
	struct l3_batch b = { 0 };
	int rc = 0;

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

void kvt_l3i_flush_hits(struct kvt_l3 *l3)
{
	long n = kvt_l3i_snap_dirty(l3);
	MDB_txn *txn;
	int rc = 0;

	if (n <= 0)
		return;
	if (mdb_txn_begin(l3->env, NULL, 0, &txn)) {
		kvt_l3i_snap_undo(l3, (size_t)n);
		return;
	}
	for (long i = 0; i < n && !rc; i++)
		rc = kvt_l3i_rec_put_hits(l3, txn, l3->snap[i].e,
					  l3->snap[i].hits);
	if (rc)
		mdb_txn_abort(txn);
	else
		rc = mdb_txn_commit(txn);
	if (rc) /* advisory counts: keep them for the next try */
		kvt_l3i_snap_undo(l3, (size_t)n);
}

void kvt_l3i_purge_doomed(struct kvt_l3 *l3)
{
	size_t n = 0;
	MDB_txn *txn;
	int rc = 0;

	lock(l3);
	if (!l3->ndoomed || snap_reserve(l3, l3->ndoomed)) {
		unlock(l3);
		return;
	}
	for (struct l3_ent *e = l3->doomed; e; e = e->dnext)
		l3->snap[n++].e = e;
	unlock(l3);
	/*
	 * Readers only add to the doomed list; the entries copied stay
	 * mirrored (and doomed) until this writer removes them.
	 */
	if (mdb_txn_begin(l3->env, NULL, 0, &txn))
		return;
	for (size_t i = 0; i < n && !rc; i++)
		rc = kvt_l3i_rec_del(l3, txn, l3->snap[i].e);
	if (rc)
		mdb_txn_abort(txn);
	else
		rc = mdb_txn_commit(txn);
	if (rc)
		return; /* still doomed, still hidden: the next call retries */
	lock(l3);
	for (size_t i = 0; i < n; i++)
		kvt_l3i_map_remove(l3, l3->snap[i].e);
	unlock(l3);
}
