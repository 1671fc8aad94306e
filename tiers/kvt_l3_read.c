/*
 * kvt_l3_read.c - L3 readers and the read path (see kvt_l3.h, kvt_l3_int.h).
 *
 * A read batch looks every key up under l3->mu, taking a count on the
 * region of each hit, then reads all hits at once through the reader's own
 * io_uring ring (where io_uring is refused, or not wanted:
 * kvt_l3_config.io_backend, with pread() on the same thread), verifies each
 * as it completes, drops the region counts and looks the keys up again to
 * count hits or doom what failed.  Several readers run at once, each on its
 * own thread, and alongside the writer: the region counts keep a reclaim
 * from overwriting what is being read, and removals go through the writer
 * (done at once when the writer's lock is free, else left to the writer).
 */
#include "kvt_l3_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "kvt_valgrind.h"
#include "kvtier_errors.h"

struct l3_io {
	size_t ri;          /* index into reads[] */
	const struct kvt_key *k;
	struct l3_loc loc;  /* the entry as it was at lookup */
	uint8_t *buf;
	int own;            /* buf was allocated here (else the caller's) */
	uint64_t done;
	int res;            /* 0, -errno, or KVT_ECORRUPT */
	int state;          /* 0 queued, 1 in the ring, 2 finished */
	int fault;          /* injected -errno for the read in flight */
	/* Last (read_batch clears what comes before it): k encoded, to look
	 * it up again after the I/O. */
	struct l3_kenc ke;
};

/*
 * The read fault hook, called once per region read whichever backend
 * makes it.  Returns the -errno the read must fail with, or 0.
 */
static int read_fault(struct kvt_l3 *l3)
{
	struct kvt_l3_faults *f = l3->faults;
	int rc = 0;

	if (!f)
		return 0;
	if (f->before_read)
		f->before_read(f->before_read_arg);
	lock(l3); /* readers on several threads share the test's struct */
	f->reads++;
	if (f->read_fail_at && --f->read_fail_at == 0)
		rc = -(f->read_errno ? f->read_errno : EIO);
	unlock(l3);
	return rc;
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

/* Reads in flight, over all readers (kvt_l3_stats.reads_inflight). */
static void add_inflight(struct kvt_l3 *l3, int64_t d)
{
	lock(l3);
	l3->inflight += (uint64_t)d;
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
static void ring_fill(struct kvt_l3_reader *r, struct l3_ringrun *rr)
{
	while (rr->inflight < r->qd && (rr->nredo || rr->next < rr->nio)) {
		struct io_uring_sqe *sqe;
		size_t idx;

		if (!rr->nredo && rr->ios[rr->next].state == 2) {
			rr->next++; /* failed before its I/O (no buffer) */
			continue;
		}
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe)
			break;
		idx = rr->nredo ? rr->redo[--rr->nredo] : rr->next++;
		io_prep(r->l3, sqe, &rr->ios[idx], idx);
		rr->inflight++;
	}
}

/*
 * Runs all I/Os through the ring, up to qd at a time.  Each entry is
 * verified as soon as its read completes, after the freed slots have been
 * refilled, so that hashing overlaps the reads still in flight.
 */
static void io_run_ring(struct kvt_l3_reader *r, struct l3_io *ios,
			size_t nio)
{
	struct kvt_l3 *l3 = r->l3;
	struct l3_ringrun rr = { .ios = ios, .nio = nio };
	unsigned counted = 0;

	rr.redo = r->redo;
	rr.done = r->done;
	while (rr.next < nio || rr.nredo || rr.inflight) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int rc;

		ring_fill(r, &rr);
		if (rr.inflight != counted) {
			add_inflight(l3, (int64_t)rr.inflight - counted);
			counted = rr.inflight;
		}
		if (!rr.inflight)
			break; /* the rest failed before their I/O */
		rc = io_uring_submit_and_wait(&r->ring, 1);
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
			lock(l3);
			r->have_ring = 0;
			unlock(l3);
			break;
		}
		rr.ndone = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe) {
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
		io_uring_cq_advance(&r->ring, seen);
		if (rr.ndone) {
			ring_fill(r, &rr);
			io_uring_submit(&r->ring); /* errors: seen next loop */
			for (size_t i = 0; i < rr.ndone; i++)
				io_verify(&ios[rr.done[i]]);
		}
	}
	if (counted)
		add_inflight(l3, -(int64_t)counted);
}

/* The same, one pread() at a time, where io_uring is unavailable. */
static void io_run_sync(struct kvt_l3 *l3, struct l3_io *ios, size_t nio)
{
	if (nio)
		add_inflight(l3, 1);
	for (size_t i = 0; i < nio; i++) {
		struct l3_io *io = &ios[i];
		int st;

		if (io->state == 2)
			continue; /* failed before its I/O (no buffer) */
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
	if (nio)
		add_inflight(l3, -1);
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

size_t kvt_l3_read_size(size_t ns_len, size_t key_len, size_t len)
{
	return (size_t)entry_size(ns_len, key_len, len);
}

/* ---- readers ------------------------------------------------------------ */

int kvt_l3i_reader_new(struct kvt_l3 *l3, struct kvt_l3_reader **out)
{
	struct kvt_l3_reader *r = calloc(1, sizeof(*r));
	int rc;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	r->l3 = l3;
	r->qd = l3->qd;
	r->redo = malloc(r->qd * sizeof(*r->redo));
	r->done = malloc(r->qd * sizeof(*r->done));
	if (!r->redo || !r->done) {
		kvt_l3i_reader_free(r);
		return -ENOMEM;
	}
	/* Counted from here: kvt_l3i_reader_free() uncounts it. */
	lock(l3);
	l3->nreaders++;
	unlock(l3);
	if (l3->io_backend != KVT_L3_IO_PREAD) {
		rc = io_uring_queue_init(r->qd, &r->ring, 0);
		if (rc == 0) {
			r->have_ring = 1;
		} else if (l3->io_backend == KVT_L3_IO_URING) {
			kvt_l3i_reader_free(r);
			return rc;
		}
		/* auto: pread() does the same reads, one at a time. */
	}
	*out = r;
	return 0;
}

void kvt_l3i_reader_free(struct kvt_l3_reader *r)
{
	if (!r)
		return;
	if (r->have_ring)
		io_uring_queue_exit(&r->ring);
	if (r->redo && r->done) { /* counted (kvt_l3i_reader_new) */
		lock(r->l3);
		r->l3->nreaders--;
		unlock(r->l3);
	}
	free(r->ios);
	free(r->redo);
	free(r->done);
	free(r);
}

int kvt_l3_reader_open(struct kvt_l3 *l3, struct kvt_l3_reader **out)
{
	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (!l3)
		return KVT_EINVAL;
	return kvt_l3i_reader_new(l3, out);
}

void kvt_l3_reader_close(struct kvt_l3_reader *r)
{
	kvt_l3i_reader_free(r);
}

/* ---- a read batch ------------------------------------------------------- */

/*
 * Looks up every read, under one hold of mu: a hit's location is copied
 * and its region's reader count taken.  An expired entry is doomed.
 * Returns the number of I/Os to make (their l3_io filled in except buf);
 * *purge is set when something was doomed.
 */
static size_t batch_lookup(struct kvt_l3 *l3, struct kvt_l3_read *reads,
			   size_t n, struct l3_io *ios, int *purge)
{
	size_t nio = 0, next = 0;

	lock(l3);
	for (size_t i = 0; i < n; i++) {
		struct kvt_l3_read *rd = &reads[i];
		struct l3_io *io = &ios[nio], *src;
		struct l3_ent *e;

		if (rd->status)
			continue; /* the key could not be encoded */
		src = &ios[next++]; /* this read's encoding (read_batch) */
		e = kvt_l3i_map_lookup(l3, &src->ke);
		if (!e || e->list == L3_LIST_DOOMED) {
			rd->status = KVT_ENOTFOUND;
			continue;
		}
		if (kvt_l3i_expired(l3, e->loc.expiry)) {
			rd->status = KVT_ENOTFOUND;
			kvt_l3i_list_link(l3, e, L3_LIST_DOOMED);
			*purge = 1;
			continue;
		}
		/* Hits are packed at the front; src is never behind io. */
		if (src != io)
			io->ke = src->ke;
		io->ri = i;
		io->k = &rd->k;
		io->loc = e->loc;
		l3->regions[e->loc.region].readers++;
		nio++;
	}
	unlock(l3);
	return nio;
}

/*
 * After the I/O: drops the region counts, and for each read whose entry is
 * still the one read (same key, same place) counts a hit or dooms it if it
 * failed verification.  An entry replaced or removed meanwhile is left
 * alone: a hit then returns the value as it was when the read began.
 */
static void batch_settle(struct kvt_l3 *l3, struct l3_io *ios, size_t nio,
			 uint64_t nbytes, int *purge)
{
	uint64_t nhits = 0, nbad = 0;

	lock(l3);
	for (size_t j = 0; j < nio; j++) {
		struct l3_io *io = &ios[j];
		struct l3_region *r = &l3->regions[io->loc.region];
		struct l3_ent *e;

		if (--r->readers == 0 && r->reclaim_waits)
			pthread_cond_broadcast(&l3->rcond);
		nbad += io->res == KVT_ECORRUPT;
		nhits += io->res == 0;
		if (io->res && io->res != KVT_ECORRUPT)
			continue;
		e = kvt_l3i_map_lookup(l3, &io->ke);
		if (!e || e->list == L3_LIST_DOOMED || !loc_equal(&e->loc,
								 &io->loc))
			continue;
		if (io->res == KVT_ECORRUPT) {
			kvt_l3i_list_link(l3, e, L3_LIST_DOOMED);
			*purge = 1;
		} else {
			e->loc.hits++;
			e->ns->hits++;
			kvt_l3i_list_link(l3, e, L3_LIST_DIRTY);
		}
	}
	l3->hits += nhits;
	l3->bytes_read += nbytes;
	l3->csum_fail += nbad;
	unlock(l3);
}

static int ios_reserve(struct kvt_l3_reader *r, size_t n)
{
	struct l3_io *p;

	if (n <= r->ios_cap)
		return 0;
	p = realloc(r->ios, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	r->ios = p;
	r->ios_cap = n;
	return 0;
}

static int read_batch(struct kvt_l3 *l3, struct kvt_l3_reader *r,
		      struct kvt_l3_read *reads, size_t n)
{
	struct l3_io *ios;
	size_t nio, k = 0;
	uint64_t nbytes = 0;
	int purge = 0;

	if (ios_reserve(r, n))
		return -ENOMEM;
	ios = r->ios;
	/* Encode outside the lock (long keys are hashed). */
	for (size_t i = 0; i < n; i++) {
		struct kvt_l3_read *rd = &reads[i];

		rd->mem = NULL;
		rd->data = NULL;
		rd->len = 0;
		memset(&ios[k], 0, offsetof(struct l3_io, ke));
		rd->status = kvt_l3i_key_encode(l3, &rd->k, &ios[k].ke);
		if (!rd->status)
			k++;
	}
	nio = batch_lookup(l3, reads, n, ios, &purge);
	for (size_t j = 0; j < nio; j++) {
		struct l3_io *io = &ios[j];
		struct kvt_l3_read *rd = &reads[io->ri];
		void *p;

		if (rd->buf && rd->buf_cap >= io->loc.length &&
		    (uintptr_t)rd->buf % KVT_L3_ALIGN == 0) {
			io->buf = rd->buf;
		} else if (posix_memalign(&p, KVT_L3_ALIGN, io->loc.length)) {
			io->res = -ENOMEM;
			io->state = 2;
		} else {
			io->buf = p;
			io->own = 1;
		}
	}

	if (r->have_ring)
		io_run_ring(r, ios, nio);
	else
		io_run_sync(l3, ios, nio);

	for (size_t j = 0; j < nio; j++) {
		struct l3_io *io = &ios[j];
		struct kvt_l3_read *rd = &reads[io->ri];

		nbytes += io->done;
		rd->status = io->res;
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
	}
	batch_settle(l3, ios, nio, nbytes, &purge);
	/*
	 * Removals go through the writer.  If it is busy they wait for its
	 * next call: doomed entries are already invisible to every lookup.
	 */
	if (purge && pthread_mutex_trylock(&l3->wmu) == 0) {
		kvt_l3i_purge_doomed(l3);
		pthread_mutex_unlock(&l3->wmu);
	}
	return 0;
}

int kvt_l3_read_batch(struct kvt_l3 *l3, struct kvt_l3_reader *r,
		      struct kvt_l3_read *reads, size_t n)
{
	int rc;

	if (!l3 || (n && !reads) || (r && r->l3 != l3))
		return KVT_EINVAL;
	if (!n)
		return 0;
	if (r)
		return read_batch(l3, r, reads, n);
	pthread_mutex_lock(&l3->rd0_mu);
	rc = read_batch(l3, l3->rd0, reads, n);
	pthread_mutex_unlock(&l3->rd0_mu);
	return rc;
}
