/*
 * kvt_tm_seg.c - transfers into and out of client memory: kvt_tm_get_to()
 * and kvt_tm_put_from() (kvt_tm.h; kvt_tm_int.h for where this file sits).
 *
 * The loop decides, per key, where its value comes from and queues one
 * job; a worker moves the bytes; the loop applies the result and, once
 * every key has one, calls the transfer's callback.
 *
 * A get, key by key:
 *   - a block below L1 read for the first time in a while -- one a
 *     kvt_tm_get() would serve once from a copy in no tier instead of
 *     admitting it to L1 (kvt_tm.c, "Admission") -- is placed straight
 *     into the segments: its L2 frame decompressed (JOB_SEG_FRAME), or its
 *     L3 copy read, verified and decompressed (JOB_SEG_L3), with the same
 *     bookkeeping as such a get (an L2 hit or an L3 read, the bytes it
 *     bypassed L1 with, the key remembered in `seen`), so that its next
 *     read, by either path, is admitted;
 *   - everything else -- L1 hits, blocks a get would admit, blocks in
 *     motion, misses -- is a kvt_tm_get(), whose reference is then copied
 *     (JOB_SEG_COPY).  One code path keeps promotion, pins, prefetch hits
 *     and the miss counters exactly as for any get.
 * A put copies the key's segments into a new block (JOB_SEG_PUT) and
 * stores it with kvt_tm_put() when the copy is back on the loop.
 *
 * Every access to client memory runs under kvt_guard_run() with the
 * transfer's spans as its ranges: a client that truncates its file fails
 * the key being copied (KVT_EFAULT), its span is marked, and later keys of
 * that span are failed without touching it.  A worker abandoned that way
 * holds no lock and leaks nothing: the copy and decode functions it runs
 * allocate nothing the jump would lose (kvt_codec_decompress_v() says so
 * for the decoder).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "kvt_guard.h"
#include "kvt_mem.h"
#include "kvt_tm_int.h"
#include "kvtier_defs.h"

/* A transfer in progress: the caller's, and how many keys are pending. */
struct tm_xfer {
	struct kvt_tm *tm;
	struct kvt_tm_xfer *x;
	/*
	 * Keys without a result, plus one while the keys are being queued, so
	 * that the callback cannot run before the last key is looked at.
	 */
	size_t left;
	bool put;
	/* kvt_tm_get() waiters: one per key (arg of seg_got_ref). */
	struct tm_xslot {
		struct tm_xfer *xf;
		size_t i;
	} slots[];
};

/* ---- the loop: results ---------------------------------------------------- */

static void xfer_key_done(struct tm_xfer *xf)
{
	struct kvt_tm_xfer *x = xf->x;

	if (--xf->left > 0)
		return;
	free(xf);
	x->cb(x->arg, x);
}

static void key_result(struct tm_xfer *xf, size_t i, int status,
		       uint64_t len, uint8_t dtype)
{
	struct kvt_tm_xkey *k = &xf->x->keys[i];

	k->status = status;
	k->len = len;
	k->dtype = dtype;
	xfer_key_done(xf);
}

/* The first span of key k that a fault has marked, or -1. */
static long key_faulted(const struct kvt_tm_xfer *x,
			const struct kvt_tm_xkey *k)
{
	for (uint32_t s = 0; s < k->nseg; s++) {
		uint32_t sp = x->segs[k->seg + s].span;

		if (atomic_load_explicit(&x->spans[sp].faulted,
					 memory_order_relaxed))
			return (long)sp;
	}
	return -1;
}

/* ---- the workers: copies under the guard ---------------------------------- */

/* What one guarded call does (kvt_guard_run's fn and arg). */
struct seg_op {
	const struct kvt_tm_xfer *x;
	const struct kvt_tm_xkey *k;
	struct kvt_codec_ctx *ctx;
	uint8_t codec;	    /* FRAME, L3: how src is stored */
	const uint8_t *src; /* COPY, FRAME, L3: the bytes; PUT: NULL */
	size_t src_len;
	uint8_t *dst;	    /* PUT: the new block */
};

/* src (raw, want bytes) into the key's segments. */
static int op_copy_in(void *arg)
{
	const struct seg_op *o = arg;
	const uint8_t *p = o->src;

	for (uint32_t s = 0; s < o->k->nseg; s++) {
		const struct kvt_tm_seg *sg = &o->x->segs[o->k->seg + s];

		memcpy(sg->p, p, sg->len);
		p += sg->len;
	}
	return 0;
}

/* The key's segments into dst (want bytes). */
static int op_copy_out(void *arg)
{
	const struct seg_op *o = arg;
	uint8_t *p = o->dst;

	for (uint32_t s = 0; s < o->k->nseg; s++) {
		const struct kvt_tm_seg *sg = &o->x->segs[o->k->seg + s];

		memcpy(p, sg->p, sg->len);
		p += sg->len;
	}
	return 0;
}

/* A stored block (codec, src) decoded into the key's segments. */
static int op_decode_in(void *arg)
{
	const struct seg_op *o = arg;
	struct iovec v[KVT_XFER_KEY_SEGS_MAX];
	uint32_t n = o->k->nseg;

	if (n > KVT_XFER_KEY_SEGS_MAX)
		return KVT_EINVAL;
	for (uint32_t s = 0; s < n; s++) {
		v[s].iov_base = o->x->segs[o->k->seg + s].p;
		v[s].iov_len = o->x->segs[o->k->seg + s].len;
	}
	return kvt_codec_decompress_v(o->ctx, o->codec, o->src, o->src_len, v,
				      n, o->k->want);
}

/*
 * Runs fn for job j's key under the guard of the transfer's spans.  A
 * span already marked fails the key without a touch; a fault marks the
 * span it hit.
 */
static int guarded(struct job *j, int (*fn)(void *), struct seg_op *o)
{
	const struct kvt_tm_xfer *x = j->xf->x;
	struct kvt_guard_range r[64], *rr = r;
	struct kvt_tm_xkey *k = &x->keys[j->xi];
	long bad = key_faulted(x, k);
	size_t which = 0;
	int rc;

	if (bad >= 0) {
		k->fault = (uint32_t)bad;
		return KVT_EFAULT;
	}
	o->x = x;
	o->k = k;
	if (x->nspans == 0)
		return fn(o); /* no client memory: nothing to guard */
	if (x->nspans > sizeof(r) / sizeof(r[0])) {
		rr = malloc(x->nspans * sizeof(*rr));
		if (!rr)
			return -ENOMEM;
	}
	for (size_t s = 0; s < x->nspans; s++)
		rr[s] = (struct kvt_guard_range){ x->spans[s].base,
						  x->spans[s].len };
	rc = kvt_guard_run(rr, x->nspans, fn, o, &which);
	if (rc == KVT_EFAULT) {
		atomic_store(&x->spans[which].faulted, true);
		k->fault = (uint32_t)which;
	}
	if (rr != r)
		free(rr);
	return rc;
}

/* Reads per kvt_l3_read_batch() (the pool's runs are no longer). */
#define SEG_L3_BATCH 64

static void run_l3(struct tm_worker *w, struct job **jobs, size_t n)
{
	struct kvt_l3_read reads[SEG_L3_BATCH];
	int rc;

	for (; n > SEG_L3_BATCH; jobs += SEG_L3_BATCH, n -= SEG_L3_BATCH)
		run_l3(w, jobs, SEG_L3_BATCH);

	memset(reads, 0, sizeof(reads));
	for (size_t i = 0; i < n; i++)
		reads[i].k = jobs[i]->k;
	rc = kvt_l3_read_batch(w->tm->l3, w->reader, reads, n);
	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];
		struct kvt_l3_read *r = &reads[i];
		struct seg_op o = { .ctx = w->ctx };

		j->status = rc ? rc : r->status;
		if (!j->status) {
			j->raw_len = r->raw_len;
			j->dtype = r->dtype;
			/* A value of another length: nothing written. */
			if (r->raw_len != j->xf->x->keys[j->xi].want) {
				j->status = KVT_ERANGE;
			} else {
				o.codec = r->codec;
				o.src = r->data;
				o.src_len = r->len;
				j->status = guarded(j, op_decode_in, &o);
			}
		}
		free(r->mem);
	}
}

void kvt_tmi_seg_run(struct tm_worker *w, struct job **run, size_t n)
{
	struct job *j = run[0];
	struct seg_op o = { .ctx = w->ctx };

	switch (j->kind) {
	case JOB_SEG_COPY:
		o.src = kvt_ref_data(j->src);
		j->status = guarded(j, op_copy_in, &o);
		break;
	case JOB_SEG_FRAME:
		o.codec = j->src_codec;
		o.src = kvt_ref_data(j->src);
		o.src_len = kvt_ref_len(j->src);
		j->status = guarded(j, op_decode_in, &o);
		break;
	case JOB_SEG_L3:
		run_l3(w, run, n);
		break;
	case JOB_SEG_PUT:
		j->out_len = (size_t)j->raw_len;
		j->out = kvt_block_alloc(j->out_len);
		if (!j->out) {
			j->status = -ENOMEM;
			break;
		}
		o.dst = j->out;
		j->status = guarded(j, op_copy_out, &o);
		break;
	default:
		break;
	}
}

/* ---- the loop: queueing ---------------------------------------------------- */

/* Runs a job's work here when there is no pool (no transfers asked for). */
static void submit(struct kvt_tm *tm, struct job *j)
{
	if (tm->pool_running) {
		kvt_tmi_submit(tm, j);
		return;
	}
	struct tm_worker w = { .tm = tm };
	struct job *one[1] = { j };

	if (j->kind == JOB_SEG_FRAME &&
	    kvt_codec_ctx_new(&w.ctx, 1) != 0) {
		j->status = -ENOMEM;
	} else {
		kvt_tmi_seg_run(&w, one, 1);
	}
	kvt_codec_ctx_free(w.ctx);
	tm->jobs_pending++; /* as kvt_tmi_submit(); apply undoes it */
	kvt_tmi_seg_done(tm, j);
	tm->jobs_pending--;
	kvt_tmi_job_free(j);
}

static struct job *seg_job(struct tm_xfer *xf, size_t i, enum job_kind kind)
{
	struct job *j = kvt_tmi_job_new(kind, &xf->x->keys[i].k);

	if (j) {
		j->xf = xf;
		j->xi = i;
		j->raw_len = xf->x->keys[i].want;
	}
	return j;
}

/* kvt_tm_get()'s answer for key slot->i: copy the value in. */
static void seg_got_ref(void *arg, int status, struct kvt_ref *ref)
{
	struct tm_xslot *sl = arg;
	struct tm_xfer *xf = sl->xf;
	struct kvt_tm_xkey *k = &xf->x->keys[sl->i];
	struct job *j;

	if (status) {
		key_result(xf, sl->i, status, 0, 0);
		return;
	}
	if (kvt_ref_len(ref) != k->want) {
		key_result(xf, sl->i, KVT_ERANGE, kvt_ref_len(ref),
			   kvt_ref_dtype(ref));
		kvt_ref_release(ref);
		return;
	}
	if (k->want == 0) {
		key_result(xf, sl->i, 0, 0, kvt_ref_dtype(ref));
		kvt_ref_release(ref);
		return;
	}
	j = seg_job(xf, sl->i, JOB_SEG_COPY);
	if (!j) {
		key_result(xf, sl->i, -ENOMEM, 0, 0);
		kvt_ref_release(ref);
		return;
	}
	j->src = ref;
	j->dtype = kvt_ref_dtype(ref);
	submit(xf->tm, j);
}

/*
 * Would a get of k admit it to L1 now?  admit() in kvt_tm_move.c, asked
 * beforehand: a second read within the window, or a pinned key.  (A
 * prefetch is not asked for here: it moves the block up itself.)
 */
static bool would_admit(struct kvt_tm *tm, const struct kvt_key *k,
			uint64_t h)
{
	uint64_t at;

	return (kvt_ghost_get(tm->seen, h, &at) &&
		tm->bypass_bytes - at < tm->admit_window) ||
	       kvt_tmi_pin_find(tm, k);
}

/* What admit() records for a read served without entering L1. */
static void bypassed(struct kvt_tm *tm, uint64_t h, uint64_t bytes)
{
	tm->bypass_bytes += bytes;
	kvt_ghost_put(tm->seen, h, tm->bypass_bytes);
	tm->promotions_bypassed++;
}

/*
 * Starts a direct read of key i from below L1 when that is what a get
 * would do (a first read, nothing in motion); returns false to leave the
 * key to kvt_tm_get().
 */
static bool direct(struct kvt_tm *tm, struct tm_xfer *xf, size_t i)
{
	const struct kvt_tm_xkey *k = &xf->x->keys[i];
	uint64_t now = tm->now_s(), h = kvt_key_hash(&k->k), left_at;
	struct kvt_ref *frame;
	struct kvt_lru_meta m;
	struct job *j;

	if (kvt_lru_exists(tm->l1, &k->k, now) ||
	    kvt_tmi_jobset_find(&tm->transit, &k->k) ||
	    kvt_tmi_jobset_find(&tm->promos, &k->k) ||
	    would_admit(tm, &k->k, h))
		return false;
	if (tm->l2 && kvt_lru_peek(tm->l2, &k->k, now, &frame) == 0) {
		kvt_ref_release(frame);
		/* As a get reads it: counted as an L2 hit, moved up its LRU. */
		if (kvt_lru_get(tm->l2, &k->k, now, &frame) != 0)
			return false;
		kvt_lru_ref_meta(frame, &m);
		tm->gets++;
		if (m.raw_len != k->want) {
			key_result(xf, i, KVT_ERANGE, m.raw_len,
				   kvt_ref_dtype(frame));
			kvt_ref_release(frame);
			return true;
		}
		j = seg_job(xf, i, JOB_SEG_FRAME);
		if (!j) {
			kvt_ref_release(frame);
			key_result(xf, i, -ENOMEM, 0, 0);
			return true;
		}
		bypassed(tm, h, m.raw_len);
		j->src = frame;
		j->src_codec = m.codec;
		j->dtype = kvt_ref_dtype(frame);
		submit(tm, j);
		return true;
	}
	if (!tm->l3 || kvt_tmi_l3_pending(tm, &k->k) ||
	    kvt_l3_state(tm->l3, &k->k) != 1 || !tm->pool_running)
		return false;
	j = seg_job(xf, i, JOB_SEG_L3);
	if (!j)
		return false;
	tm->gets++;
	/* A RAM miss, as for any get: would RAM twice as big have kept it? */
	if (kvt_ghost_get(tm->ram_ghost, h, &left_at) &&
	    tm->ram_evicted - left_at < tm->ram_capacity)
		tm->ghost_hits_2x++;
	bypassed(tm, h, k->want);
	submit(tm, j);
	return true;
}

static int start(struct kvt_tm *tm, struct kvt_tm_xfer *x, bool put)
{
	struct tm_xfer *xf;

	if (!tm || !x || !x->cb || (x->n && (!x->keys || !x->segs)))
		return KVT_EINVAL;
	/* Again each time: a test framework may have put its own in front. */
	kvt_guard_init();
	xf = calloc(1, sizeof(*xf) + x->n * sizeof(xf->slots[0]));
	if (!xf) {
		for (size_t i = 0; i < x->n; i++)
			x->keys[i].status = -ENOMEM;
		x->cb(x->arg, x);
		return 0;
	}
	xf->tm = tm;
	xf->x = x;
	xf->put = put;
	xf->left = x->n + 1;
	for (size_t i = 0; i < x->n; i++) {
		struct kvt_tm_xkey *k = &x->keys[i];
		struct job *j;

		k->status = 0;
		k->len = 0;
		k->dtype = 0;
		k->fault = 0;
		xf->slots[i].xf = xf;
		xf->slots[i].i = i;
		if (put) {
			j = seg_job(xf, i, JOB_SEG_PUT);
			if (!j) {
				key_result(xf, i, -ENOMEM, 0, 0);
				continue;
			}
			j->dtype = x->dtype;
			submit(tm, j);
			continue;
		}
		if (direct(tm, xf, i))
			continue;
		kvt_tm_get(tm, &k->k, seg_got_ref, &xf->slots[i]);
	}
	if (xf->left == 1) {
		/* Every key answered at once: misses, mismatches. */
		free(xf);
		x->cb(x->arg, x);
		return 0;
	}
	xfer_key_done(xf);
	return 1;
}

int kvt_tm_get_to(struct kvt_tm *tm, struct kvt_tm_xfer *x)
{
	return start(tm, x, false);
}

int kvt_tm_put_from(struct kvt_tm *tm, struct kvt_tm_xfer *x)
{
	return start(tm, x, true);
}

/* ---- the loop: results from the pool -------------------------------------- */

void kvt_tmi_seg_done(struct kvt_tm *tm, struct job *j)
{
	struct tm_xfer *xf = j->xf;
	struct kvt_tm_xkey *k = &xf->x->keys[j->xi];
	int status = j->status;

	switch (j->kind) {
	case JOB_SEG_PUT: {
		struct kvt_blob blob = {
			.mem = j->out,
			.mem_size = j->out_len,
			.data = j->out,
			.len = j->out_len,
			.dtype = j->dtype,
		};

		if (status == 0) {
			/* The block passes to the tiers whatever happens. */
			j->out = NULL;
			status = kvt_tm_put(tm, &k->k, &blob, xf->x->ttl_s);
		}
		key_result(xf, j->xi, status, status ? 0 : j->raw_len,
			   j->dtype);
		return;
	}
	case JOB_SEG_L3:
		/* A read that found nothing is a miss, counted as a get's. */
		if (status == KVT_ENOTFOUND || status == KVT_ECORRUPT) {
			tm->misses++;
			if (status == KVT_ECORRUPT)
				tm->misses_corrupt++;
			else if (kvt_tmi_was_gone(tm, &j->k))
				tm->misses_evicted++;
			else
				tm->misses_never_seen++;
			status = KVT_ENOTFOUND;
		}
		break;
	case JOB_SEG_FRAME:
		/* A frame that does not decode is dropped, never served. */
		if (status == KVT_ECORRUPT) {
			if (tm->l2)
				kvt_lru_del(tm->l2, &j->k, tm->now_s());
			tm->misses++;
			tm->misses_corrupt++;
			status = KVT_ENOTFOUND;
		}
		break;
	default:
		break;
	}
	key_result(xf, j->xi, status,
		   status == 0 || status == KVT_ERANGE ? j->raw_len : 0,
		   j->dtype);
}
