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
#include <sys/uio.h>
#include <unistd.h>

#include "kvt_valgrind.h"
#include "kvtier_errors.h"

struct l3_io {
	size_t ri;          /* index into reads[] */
	const struct kvt_key *k;
	struct l3_loc loc;  /* the entry as it was at lookup */
	/*
	 * Where the value's extent (value_extent(loc.data_len) bytes) is read
	 * to: n0 bytes at p0, then n1 at p1 (a tail sector of the reader's,
	 * when the caller's buffer holds the value but not its last sector).
	 */
	uint8_t *p0, *p1;
	size_t n0, n1;
	uint8_t *own;       /* p0 was allocated here (else the caller's) */
	uint8_t *dst;       /* copy the value there once verified, or NULL */
	uint64_t done;      /* bytes of the extent read so far */
	struct iovec iov[2];
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
static int read_fault(struct kvt_l3 *l3, const struct l3_io *io, size_t len)
{
	struct kvt_l3_faults *f = l3->faults;
	int rc = 0;

	if (!f)
		return 0;
	if (f->before_read)
		f->before_read(f->before_read_arg);
	lock(l3); /* readers on several threads share the test's struct */
	f->reads++;
	f->last_read_off = io->loc.offset + io->done;
	f->last_read_len = len;
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

/* Fills io->iov with what is left to read; returns the count and bytes. */
static int io_iov(struct l3_io *io, size_t *len)
{
	uint64_t d = io->done;
	int n = 0;

	*len = io->n0 + io->n1 - io->done;
	if (d < io->n0) {
		io->iov[n].iov_base = io->p0 + d;
		io->iov[n++].iov_len = io->n0 - d;
		d = 0;
	} else {
		d -= io->n0;
	}
	if (d < io->n1) {
		io->iov[n].iov_base = io->p1 + d;
		io->iov[n++].iov_len = io->n1 - d;
	}
	return n;
}

static void io_prep(struct kvt_l3 *l3, struct io_uring_sqe *sqe,
		    struct l3_io *io, size_t idx)
{
	size_t len;
	int n = io_iov(io, &len);

	io_uring_prep_readv(sqe, io_fd(l3, io), io->iov, (unsigned)n,
			    io->loc.offset + io->done);
	io_uring_sqe_set_data64(sqe, idx);
	io->state = 1;
	/* The read still runs; its result is replaced on completion. */
	io->fault = read_fault(l3, io, len);
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
	io->done += (unsigned)res;
	if (io->done < io->n0 + io->n1) {
		io->state = 1;
		return 1; /* short read: ask for the rest */
	}
	KVT_IO_DEFINED(io->p0, io->n0);
	if (io->n1)
		KVT_IO_DEFINED(io->p1, io->n1);
	return 2;
}

/*
 * Checks the value read against the checksum of the index record, which
 * binds it to the namespace and key asked for, the entry's region,
 * offset and generation, and its lengths, codec and dtype: bytes of
 * another entry, of an older generation of the region or from another
 * offset fail.
 */
static void io_verify(struct l3_io *io)
{
	struct l3_hdr h;
	uint64_t len = io->loc.data_len;
	size_t a = len < io->n0 ? (size_t)len : io->n0;

	kvt_l3i_loc_hdr(&io->loc, io->k->ns_len, io->k->key_len, &h);
	io->res = kvt_l3i_entry_sum(&h, io->k->ns, io->k->key, io->p0, a,
				    io->p1, (size_t)len - a) ==
		  io->loc.checksum ? 0 : KVT_ECORRUPT;
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
			rr->next++; /* settled before any I/O */
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
			break; /* the rest were settled before any I/O */
		rc = io_uring_submit_and_wait(&r->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			/*
			 * The ring itself failed.  I/Os it may still own keep
			 * their buffers (leaked: freeing memory the kernel
			 * may write to is worse; a caller's buffer is not
			 * handed back: the read fails), the rest fail, and
			 * later batches use pread().
			 */
			for (size_t i = 0; i < nio; i++) {
				if (ios[i].state == 1)
					ios[i].own = NULL;
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

/* The same, one preadv() at a time, where io_uring is unavailable. */
static void io_run_sync(struct kvt_l3 *l3, struct l3_io *ios, size_t nio)
{
	if (nio)
		add_inflight(l3, 1);
	for (size_t i = 0; i < nio; i++) {
		struct l3_io *io = &ios[i];
		int st;

		if (io->state == 2)
			continue; /* settled before any I/O */
		do {
			size_t len;
			int n = io_iov(io, &len);
			int fault = read_fault(l3, io, len);
			ssize_t r = fault ? 0 :
				preadv(io_fd(l3, io), io->iov, n,
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

int kvt_l3i_entry_verify(const uint8_t *buf, const struct l3_loc *loc,
			 const uint8_t *ns, size_t ns_len, const uint8_t *key,
			 size_t key_len)
{
	struct l3_hdr h;
	const uint8_t *hp;

	if (loc->data_len > loc->length ||
	    entry_size(ns_len, key_len, loc->data_len) != loc->length)
		return KVT_ECORRUPT;
	hp = buf + loc->data_len;
	kvt_l3i_hdr_decode(hp, &h);
	if (h.magic != L3_MAGIC || h.version != L3_VERSION ||
	    h.codec != loc->codec || h.dtype != loc->dtype ||
	    h.ns_len != ns_len || h.key_len != key_len ||
	    h.raw_len != loc->raw_len || h.data_len != loc->data_len ||
	    h.generation != loc->generation || h.offset != loc->offset ||
	    h.region != loc->region || h.checksum != loc->checksum)
		return KVT_ECORRUPT;
	if ((ns_len && memcmp(hp + L3_HDR, ns, ns_len)) ||
	    (key_len && memcmp(hp + L3_HDR + ns_len, key, key_len)))
		return KVT_ECORRUPT;
	return kvt_l3i_entry_sum(&h, ns, key, buf, loc->data_len, NULL, 0) ==
	       loc->checksum ? 0 : KVT_ECORRUPT;
}

size_t kvt_l3_read_size(size_t ns_len, size_t key_len, size_t len)
{
	(void)ns_len; /* a read is of the value's own extent (format 2) */
	(void)key_len;
	return (size_t)value_extent(len);
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
	free(r->tails);
	free(r);
}

int kvt_l3_reader_open(struct kvt_l3 *l3, struct kvt_l3_reader **out)
{
	if (!out)
		return KVT_EINVAL;
	*out = NULL;
	if (!l3 || l3->read_only)
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

static int tails_reserve(struct kvt_l3_reader *r, size_t n)
{
	void *p;

	if (n <= r->ntails)
		return 0;
	if (posix_memalign(&p, KVT_L3_ALIGN, n * KVT_L3_ALIGN))
		return -ENOMEM;
	free(r->tails);
	r->tails = p;
	r->ntails = n;
	return 0;
}

/* Can the value go straight into the caller's buffer (or most of it)? */
static int buf_usable(const struct kvt_l3_read *rd, uint64_t len)
{
	return rd->buf && rd->buf_cap >= len &&
	       (uintptr_t)rd->buf % KVT_L3_ALIGN == 0;
}

/*
 * Decides where each hit's extent is read to: the caller's buffer if it is
 * aligned and holds the whole extent; the caller's buffer and one of the
 * reader's tail sectors if it holds the value but not its last sector;
 * else a buffer allocated here (copied into the caller's buffer afterwards
 * if it holds the value, else handed over as kvt_l3_read.mem).  A value of
 * 0 bytes needs no I/O at all: it is verified at once.
 */
static void batch_buffers(struct kvt_l3_reader *r, struct kvt_l3_read *reads,
			  struct l3_io *ios, size_t nio)
{
	size_t ntails = 0, t = 0;
	int tails_ok;

	for (size_t j = 0; j < nio; j++) {
		uint64_t len = ios[j].loc.data_len;
		const struct kvt_l3_read *rd = &reads[ios[j].ri];

		ntails += len && buf_usable(rd, len) &&
			  rd->buf_cap < value_extent(len);
	}
	tails_ok = tails_reserve(r, ntails) == 0;
	for (size_t j = 0; j < nio; j++) {
		struct l3_io *io = &ios[j];
		struct kvt_l3_read *rd = &reads[io->ri];
		uint64_t len = io->loc.data_len, ext = value_extent(len);
		void *p;

		if (len == 0) {
			io->state = 2;
			io_verify(io);
		} else if (buf_usable(rd, ext)) {
			io->p0 = rd->buf;
			io->n0 = (size_t)ext;
		} else if (buf_usable(rd, len) && tails_ok) {
			io->p0 = rd->buf;
			io->n0 = (size_t)(ext - KVT_L3_ALIGN);
			io->p1 = r->tails + t++ * KVT_L3_ALIGN;
			io->n1 = KVT_L3_ALIGN;
		} else if (posix_memalign(&p, KVT_L3_ALIGN, (size_t)ext)) {
			io->res = -ENOMEM;
			io->state = 2;
		} else {
			io->p0 = io->own = p;
			io->n0 = (size_t)ext;
			if (rd->buf && rd->buf_cap >= len)
				io->dst = rd->buf;
		}
	}
}

/* Hands a verified value to its read (copying where batch_buffers said). */
static void io_deliver(struct l3_io *io, struct kvt_l3_read *rd)
{
	static const uint8_t empty[1];
	size_t len = (size_t)io->loc.data_len;

	if (len == 0) {
		rd->data = rd->buf ? rd->buf : empty;
	} else if (io->dst) {
		memcpy(io->dst, io->p0, len);
		free(io->own);
		rd->data = io->dst;
	} else {
		if (io->n1) /* the last bytes are in the tail sector */
			memcpy(io->p0 + io->n0, io->p1, len - io->n0);
		rd->mem = io->own;
		rd->data = io->p0;
	}
	rd->len = len;
	rd->codec = io->loc.codec;
	rd->dtype = io->loc.dtype;
	rd->raw_len = io->loc.raw_len;
	rd->expiry = io->loc.expiry;
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
	batch_buffers(r, reads, ios, nio);
	if (r->have_ring)
		io_run_ring(r, ios, nio);
	else
		io_run_sync(l3, ios, nio);

	for (size_t j = 0; j < nio; j++) {
		struct l3_io *io = &ios[j];
		struct kvt_l3_read *rd = &reads[io->ri];

		nbytes += io->done;
		rd->status = io->res;
		if (io->res)
			free(io->own);
		else
			io_deliver(io, rd);
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
	if (!l3->rd0)
		return KVT_EINVAL; /* read-only: no reads */
	pthread_mutex_lock(&l3->rd0_mu);
	rc = read_batch(l3, l3->rd0, reads, n);
	pthread_mutex_unlock(&l3->rd0_mu);
	return rc;
}
