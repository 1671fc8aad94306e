/*
 * kvt_l3_io.c - L3 write and read paths (see kvt_l3.h, kvt_l3_int.h).
 *
 * Write: a batch is serialized into an aligned staging buffer and appended
 * to the head region with large pwrite()s (O_DIRECT where available), the
 * touched region files are fdatasync()ed, and only then is the index
 * committed, in one transaction.  Read: every hit of a batch is read at once
 * through the tier's own io_uring ring, then verified; where io_uring is
 * refused (or not wanted: kvt_l3_config.io_backend) the same reads are made
 * with pread() on the same thread and verified the same way.
 */
#include "kvt_l3_int.h"

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
	if ((rc = mdb_txn_begin(l3->env, NULL, 0, &txn)))
		return kvt_l3i_mdb_err(rc);
	for (struct l3_ent *e = l3->dirty; e && !rc; e = e->dnext)
		rc = kvt_l3i_rec_put(l3, txn, e);
	for (size_t i = b->first; i < upto && !rc; i++)
		rc = kvt_l3i_rec_put(l3, txn, b->pend[i].ent);
	for (uint32_t i = 0; i < l3->ntouched && !rc; i++) {
		struct l3_region *r = &l3->regions[l3->touched[i]];

		rc = kvt_l3i_region_rec_put(l3, txn, l3->touched[i], r->generation,
				    r->seq, r->pend_fill);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return kvt_l3i_mdb_err(rc);
	}
	if ((rc = mdb_txn_commit(txn)))
		return kvt_l3i_mdb_err(rc);

	lock(l3);
	while (l3->dirty)
		kvt_l3i_dirty_unlink(l3, l3->dirty);
	for (size_t i = b->first; i < upto; i++) {
		struct l3_ent *e = b->pend[i].ent, *old;

		old = kvt_l3i_map_find(l3, ent_ikey(e), e->ikey_len, e->hash);
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
 * Makes a new region the head: the next free one, else the oldest (FIFO),
 * whose index entries are removed and generation bumped in one transaction
 * before any byte of it is overwritten.
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

	/* Only this thread changes the map: the entries are still there. */
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

/*
 * Serializes item it as an entry of loc->length bytes at dst (header,
 * namespace, key, value, zero padding) and sets loc->checksum.
 */
static void entry_build(uint8_t *dst, const struct kvt_l3_item *it,
			struct l3_loc *loc)
{
	size_t body = L3_HDR + it->k.ns_len + it->k.key_len + it->len;
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
		.checksum = 0, /* what the checksum covers has it zeroed */
	};

	kvt_l3i_hdr_encode(dst, &h);
	if (it->k.ns_len)
		memcpy(dst + L3_HDR, it->k.ns, it->k.ns_len);
	if (it->k.key_len)
		memcpy(dst + L3_HDR + it->k.ns_len, it->k.key, it->k.key_len);
	if (it->len)
		memcpy(dst + L3_HDR + it->k.ns_len + it->k.key_len, it->data,
		       it->len);
	memset(dst + body, 0, loc->length - body);
	loc->checksum = XXH3_64bits(dst, body);
	put_u64(dst + L3_HDR_CHECKSUM, loc->checksum);
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

int kvt_l3_put_batch(struct kvt_l3 *l3, const struct kvt_l3_item *items,
		     size_t n)
{
	struct l3_batch b = { 0 };
	int rc = 0;

	if (!l3 || (n && !items))
		return KVT_EINVAL;
	if (!n)
		return 0;
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
		b.pend[i].ent = kvt_l3i_ent_new(ke.ikey, ke.ikey_len, ke.key,
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
			free(b.pend[i].ent);
	free(b.pend);
	return rc;
}

/* ---- read path ---------------------------------------------------------- */

struct l3_io {
	size_t ri;          /* index into reads[] */
	const struct kvt_key *k;
	struct l3_ent *ent;
	struct l3_loc loc;
	uint8_t *buf;
	int own;            /* buf was allocated here (else the caller's) */
	uint64_t done;
	int res;            /* 0, -errno, or KVT_ECORRUPT */
	int state;          /* 0 queued, 1 in the ring, 2 finished */
	int fault;          /* injected -errno for the read in flight */
};

/*
 * The read fault hook, called once per region read whichever backend
 * makes it.  Returns the -errno the read must fail with, or 0.
 */
static int read_fault(struct kvt_l3 *l3)
{
	struct kvt_l3_faults *f = l3->faults;

	if (!f)
		return 0;
	f->reads++;
	if (f->read_fail_at && --f->read_fail_at == 0)
		return -(f->read_errno ? f->read_errno : EIO);
	return 0;
}

static int io_fd(const struct kvt_l3 *l3, const struct l3_io *io)
{
	const struct l3_region *r = &l3->regions[io->loc.region];

	/* O_DIRECT only while offset and length stay aligned. */
	if (r->dfd >= 0 && io->done % KVT_L3_ALIGN == 0)
		return r->dfd;
	return r->fd;
}

static void io_prep(struct kvt_l3 *l3, struct io_uring_sqe *sqe,
		    struct l3_io *io, size_t idx)
{
	uint64_t left = io->loc.length - io->done;

	io_uring_prep_read(sqe, io_fd(l3, io), io->buf + io->done,
			   (unsigned)(left < L3_IO_MAX ? left : L3_IO_MAX),
			   io->loc.offset + io->done);
	io_uring_sqe_set_data64(sqe, idx);
	io->state = 1;
	/* The read still runs; its result is replaced on completion. */
	io->fault = read_fault(l3);
}

/*
 * Accounts one completion.  Returns 1 if the I/O must be resubmitted, 2 if
 * it has finished reading everything (and needs verifying), 0 if it failed.
 */
static int io_complete(struct l3_io *io, int res)
{
	if (res == -EAGAIN || res == -EINTR)
		return 1;
	io->state = 2;
	if (res < 0) {
		io->res = res;
		return 0;
	}
	if (res == 0) {
		io->res = KVT_ECORRUPT; /* the entry runs past end of file */
		return 0;
	}
	KVT_IO_DEFINED(io->buf + io->done, (size_t)res);
	io->done += (unsigned)res;
	if (io->done < io->loc.length) {
		io->state = 1;
		return 1; /* short read: ask for the rest */
	}
	return 2;
}

static void io_verify(struct l3_io *io)
{
	io->res = kvt_l3i_entry_verify(io->buf, &io->loc, io->k->ns,
				       io->k->ns_len, io->k->key,
				       io->k->key_len);
}

static void set_inflight(struct kvt_l3 *l3, uint64_t v)
{
	lock(l3);
	l3->inflight = v;
	unlock(l3);
}

/* State of one io_run_ring() call. */
struct l3_ringrun {
	struct l3_io *ios;
	size_t nio, next, nredo, ndone;
	size_t *redo, *done;
	unsigned inflight;
};

/* Queues new and retried reads while there is room in the ring. */
static void ring_fill(struct kvt_l3 *l3, struct l3_ringrun *rr)
{
	while (rr->inflight < l3->qd && (rr->nredo || rr->next < rr->nio)) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&l3->ring);
		size_t idx;

		if (!sqe)
			break;
		idx = rr->nredo ? rr->redo[--rr->nredo] : rr->next++;
		io_prep(l3, sqe, &rr->ios[idx], idx);
		rr->inflight++;
	}
}

/*
 * Runs all I/Os through the ring, up to qd at a time.  Each entry is
 * verified as soon as its read completes, after the freed slots have been
 * refilled, so that hashing overlaps the reads still in flight.
 */
static void io_run_ring(struct kvt_l3 *l3, struct l3_io *ios, size_t nio)
{
	struct l3_ringrun rr = { .ios = ios, .nio = nio };

	rr.redo = malloc(l3->qd * sizeof(*rr.redo));
	rr.done = malloc(l3->qd * sizeof(*rr.done));
	if (!rr.redo || !rr.done) {
		for (size_t i = 0; i < nio; i++)
			ios[i].res = -ENOMEM, ios[i].state = 2;
		goto out;
	}
	while (rr.next < nio || rr.nredo || rr.inflight) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int rc;

		ring_fill(l3, &rr);
		set_inflight(l3, rr.inflight);
		rc = io_uring_submit_and_wait(&l3->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			/*
			 * The ring itself failed.  I/Os it may still own keep
			 * their buffers (leaked: freeing memory the kernel
			 * may write to is worse), the rest fail, and later
			 * batches use pread().
			 */
			for (size_t i = 0; i < nio; i++) {
				if (ios[i].state == 1 && ios[i].own)
					ios[i].buf = NULL;
				if (ios[i].state != 2)
					ios[i].res = rc, ios[i].state = 2;
			}
			l3->have_ring = 0;
			break;
		}
		rr.ndone = 0;
		io_uring_for_each_cqe(&l3->ring, head, cqe) {
			size_t idx = (size_t)io_uring_cqe_get_data64(cqe);

			seen++;
			rr.inflight--;
			switch (io_complete(&ios[idx], ios[idx].fault ?
					    ios[idx].fault : cqe->res)) {
			case 1:
				rr.redo[rr.nredo++] = idx;
				break;
			case 2:
				rr.done[rr.ndone++] = idx;
				break;
			}
		}
		io_uring_cq_advance(&l3->ring, seen);
		if (rr.ndone) {
			ring_fill(l3, &rr);
			io_uring_submit(&l3->ring); /* errors: seen next loop */
			for (size_t i = 0; i < rr.ndone; i++)
				io_verify(&ios[rr.done[i]]);
		}
	}
out:
	set_inflight(l3, 0);
	free(rr.redo);
	free(rr.done);
}

/* The same, one pread() at a time, where io_uring is unavailable. */
static void io_run_sync(struct kvt_l3 *l3, struct l3_io *ios, size_t nio)
{
	for (size_t i = 0; i < nio; i++) {
		struct l3_io *io = &ios[i];
		int st;

		set_inflight(l3, 1);
		do {
			uint64_t left = io->loc.length - io->done;
			int fault = read_fault(l3);
			ssize_t r = fault ? 0 :
				pread(io_fd(l3, io), io->buf + io->done,
				      left < L3_IO_MAX ? left : L3_IO_MAX,
				      (off_t)(io->loc.offset + io->done));

			st = io_complete(io, fault ? fault :
					 r < 0 ? -errno : (int)r);
		} while (st == 1);
		if (st == 2)
			io_verify(io);
	}
	set_inflight(l3, 0);
}

/*
 * Checks a freshly read entry against what the index says it is and against
 * its checksum.  Returns 0 or KVT_ECORRUPT.
 */
int kvt_l3i_entry_verify(uint8_t *buf, const struct l3_loc *loc,
			const uint8_t *ns, size_t ns_len, const uint8_t *key,
			size_t key_len)
{
	struct l3_hdr h;
	uint64_t body, sum;

	kvt_l3i_hdr_decode(buf, &h);
	if (h.magic != L3_MAGIC || h.version != L3_VERSION ||
	    h.codec != loc->codec || h.dtype != loc->dtype ||
	    h.ns_len != ns_len || h.key_len != key_len ||
	    h.raw_len != loc->raw_len || h.generation != loc->generation ||
	    h.offset != loc->offset || h.region != loc->region ||
	    h.checksum != loc->checksum)
		return KVT_ECORRUPT;
	if (h.data_len != loc->data_len || h.data_len > loc->length)
		return KVT_ECORRUPT;
	body = L3_HDR + ns_len + key_len + h.data_len;
	if (round_up(body, KVT_L3_ALIGN) != loc->length)
		return KVT_ECORRUPT;
	if ((ns_len && memcmp(buf + L3_HDR, ns, ns_len)) ||
	    (key_len && memcmp(buf + L3_HDR + ns_len, key, key_len)))
		return KVT_ECORRUPT;
	/* The checksum covers the header with its own field zeroed. */
	put_u64(buf + L3_HDR_CHECKSUM, 0);
	sum = XXH3_64bits(buf, body);
	put_u64(buf + L3_HDR_CHECKSUM, loc->checksum);
	return sum == loc->checksum ? 0 : KVT_ECORRUPT;
}

/* Removes entries from the index, then from the mirror; best effort. */
static void remove_ents(struct kvt_l3 *l3, struct l3_ent **ents, size_t n)
{
	MDB_txn *txn;
	int rc = 0;

	if (!n || mdb_txn_begin(l3->env, NULL, 0, &txn))
		goto undoom;
	for (size_t i = 0; i < n && !rc; i++)
		rc = kvt_l3i_rec_del(l3, txn, ents[i]);
	if (rc) {
		mdb_txn_abort(txn);
		goto undoom;
	}
	if (mdb_txn_commit(txn))
		goto undoom;
	lock(l3);
	for (size_t i = 0; i < n; i++)
		kvt_l3i_map_remove(l3, ents[i]);
	unlock(l3);
	return;
undoom:
	/* Left in place; the next read finds them again. */
	for (size_t i = 0; i < n; i++)
		ents[i]->doomed = 0;
}

size_t kvt_l3_read_size(size_t ns_len, size_t key_len, size_t len)
{
	return (size_t)entry_size(ns_len, key_len, len);
}

int kvt_l3_read_batch(struct kvt_l3 *l3, struct kvt_l3_read *reads, size_t n)
{
	struct l3_io *ios;
	struct l3_ent **gone;
	size_t nio = 0, ngone = 0;
	uint64_t nbytes = 0, nhits = 0, nbad = 0;

	if (!l3 || (n && !reads))
		return KVT_EINVAL;
	if (!n)
		return 0;
	ios = calloc(n, sizeof(*ios));
	gone = calloc(n, sizeof(*gone));
	if (!ios || !gone) {
		free(ios);
		free(gone);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct kvt_l3_read *rd = &reads[i];
		struct l3_io *io = &ios[nio];
		struct l3_kenc ke;
		struct l3_ent *e;
		void *p;

		rd->mem = NULL;
		rd->data = NULL;
		rd->len = 0;
		if ((rd->status = kvt_l3i_key_encode(l3, &rd->k, &ke)))
			continue;
		/* Only this thread mutates the mirror: no lock to look. */
		e = kvt_l3i_map_lookup(l3, &ke);
		if (!e || e->doomed) {
			rd->status = KVT_ENOTFOUND;
			continue;
		}
		if (kvt_l3i_expired(l3, e->loc.expiry)) {
			rd->status = KVT_ENOTFOUND;
			e->doomed = 1;
			gone[ngone++] = e;
			continue;
		}
		if (rd->buf && rd->buf_cap >= e->loc.length &&
		    (uintptr_t)rd->buf % KVT_L3_ALIGN == 0) {
			io->buf = rd->buf;
		} else if (posix_memalign(&p, KVT_L3_ALIGN, e->loc.length)) {
			rd->status = -ENOMEM;
			continue;
		} else {
			io->buf = p;
			io->own = 1;
		}
		io->ri = i;
		io->k = &rd->k;
		io->ent = e;
		io->loc = e->loc;
		nio++;
	}

	if (l3->have_ring)
		io_run_ring(l3, ios, nio);
	else
		io_run_sync(l3, ios, nio);

	for (size_t j = 0; j < nio; j++) {
		struct l3_io *io = &ios[j];
		struct kvt_l3_read *rd = &reads[io->ri];

		nbytes += io->done;
		rd->status = io->res;
		if (io->res == KVT_ECORRUPT) {
			nbad++;
			if (!io->ent->doomed) {
				io->ent->doomed = 1;
				gone[ngone++] = io->ent;
			}
		}
		if (io->res) {
			if (io->own)
				free(io->buf);
			continue;
		}
		rd->mem = io->own ? io->buf : NULL;
		rd->data = io->buf + L3_HDR + rd->k.ns_len + rd->k.key_len;
		rd->len = io->loc.data_len;
		rd->codec = io->loc.codec;
		rd->dtype = io->loc.dtype;
		rd->raw_len = io->loc.raw_len;
		rd->expiry = io->loc.expiry;
		nhits++;
		lock(l3);
		io->ent->loc.hits++;
		kvt_l3i_dirty_link(l3, io->ent);
		unlock(l3);
	}
	lock(l3);
	l3->hits += nhits;
	l3->bytes_read += nbytes;
	l3->csum_fail += nbad;
	unlock(l3);
	remove_ents(l3, gone, ngone);
	free(gone);
	free(ios);
	return 0;
}
