/*
 * kvt_client_reg.c - libkvtier's registered memory (kvtier.h, "REGISTERED
 * MEMORY AND JOBS"; PROTOCOL.md "Registered memory"): kvt_register(),
 * kvt_unregister(), the segment batches as jobs (kvt_submit_mget_to(),
 * kvt_submit_mput_from(), kvt_poll(), kvt_poll_fd()) and the synchronous
 * kvt_mget_to() / kvt_mput_from(), which are a job and a wait for it.
 *
 * A job is one or more MGET_TO / MPUT_FROM frames (a batch is cut where a
 * frame would pass KVT_XFER_KEYS_MAX keys, KVT_XFER_SEGS_MAX segments or
 * FRAME_BODY_MAX bytes).  Each frame sent is remembered in a FIFO with
 * its job and its keys; the daemon answers in order, so the reply at the
 * head of the stream is always the oldest frame's.  Any call that reads
 * replies reads the frames' first (the drain behind kvt_ci_read_reply());
 * their jobs then wait in the done list for kvt_poll().
 *
 * The poll fd is an epoll instance watching the socket and an eventfd.
 * The socket turns readable when a reply starts to arrive; the eventfd is
 * set while something can be collected without the socket: finished jobs
 * in the done list, or reply bytes already in the receive buffer.  So the
 * fd is readable exactly while kvt_poll() has work, and unreadable once it
 * has collected everything (kvt_poll reads every reply that has begun).
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kvt_client_int.h"
#include "kvt_reg.h"
#include "kvtier.h"

/*
 * Largest frame body a job sends: big enough for KVT_XFER_KEYS_MAX keys
 * of 32 bytes with 2 segments (about 340 KiB) or 512 segments of one
 * layer_first page, small enough that the daemon takes it without waiting
 * for room under its max-inflight.
 */
#define FRAME_BODY_MAX (4u << 20)

struct job {
	uint64_t id;
	bool put;
	bool collect; /* reported by kvt_poll (false: a synchronous call's) */
	bool done;
	int status;
	/* Frames not yet answered, plus one while the job is being sent. */
	unsigned frames_left;
	int *statuses;
	size_t *lens; /* NULL: not wanted */
	struct job *prev, *next; /* every live job */
	struct job *dnext;	 /* the done list */
};

/* A frame sent and not yet answered: keys [first, first + n) of job. */
struct frame {
	uint64_t rid;
	uint8_t op;
	struct job *job;
	size_t first, n;
};

struct kvt_ci_async {
	struct frame *q; /* a ring: len frames from head */
	size_t cap, head, len;
	struct job *jobs;		   /* live (not yet collected) */
	struct job *done_head, *done_tail; /* finished, to collect */
	size_t ndone, inflight; /* collectable jobs: done, not done */
	uint64_t next_job;
	int epfd, evfd; /* -1 until kvt_poll_fd() */
	bool ev_on;
	uint8_t *buf; /* a frame being built: header then body */
	size_t buf_cap;
	uint8_t *rbody; /* a reply body */
	size_t rbody_cap;
};

static int as_read_one(kvt_client *c);
static int as_drain(kvt_client *c);
static void as_free(kvt_client *c);

static const struct kvt_ci_async_ops ops = {
	.read_one = as_read_one,
	.drain = as_drain,
	.free = as_free,
};

static struct kvt_ci_async *as_get(kvt_client *c)
{
	struct kvt_ci_async *a = c->as;

	if (a)
		return a;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->epfd = a->evfd = -1;
	a->next_job = 1;
	c->as = a;
	c->as_ops = &ops;
	return a;
}

/* ---- the poll fd's eventfd ---------------------------------------------- */

/* Sets or clears the eventfd: set while kvt_poll() has work in hand. */
static void ev_update(kvt_client *c)
{
	struct kvt_ci_async *a = c->as;
	bool want;
	uint64_t v = 1;

	if (!a || a->evfd < 0)
		return;
	want = a->ndone > 0 || (c->as_frames > 0 && kvt_ci_buffered(c));
	if (want == a->ev_on)
		return;
	if (want) {
		if (write(a->evfd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			a->ev_on = true;
	} else if (read(a->evfd, &v, sizeof(v)) == (ssize_t)sizeof(v) ||
		   errno == EAGAIN) {
		a->ev_on = false;
	}
}

/* ---- jobs and frames ----------------------------------------------------- */

static void job_unlink(struct kvt_ci_async *a, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		a->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
}

/* Takes finished job j out of the done list and frees it. */
static void done_remove(struct kvt_ci_async *a, struct job *j)
{
	struct job *prev = NULL;

	for (struct job *d = a->done_head; d; prev = d, d = d->dnext) {
		if (d != j)
			continue;
		if (prev)
			prev->dnext = j->dnext;
		else
			a->done_head = j->dnext;
		if (a->done_tail == j)
			a->done_tail = prev;
		a->ndone--;
		break;
	}
	job_unlink(a, j);
	free(j);
}

/* One of j's frames is answered (or failed). */
static void frame_done(kvt_client *c, struct job *j)
{
	struct kvt_ci_async *a = c->as;

	if (--j->frames_left > 0)
		return;
	j->done = true;
	if (!j->collect)
		return; /* its synchronous caller takes it */
	a->inflight--;
	a->ndone++;
	j->dnext = NULL;
	if (a->done_tail)
		a->done_tail->dnext = j;
	else
		a->done_head = j;
	a->done_tail = j;
}

/* Keys [first, first + n) of j failed with rc, as j did if first to. */
static void keys_fail(struct job *j, size_t first, size_t n, int rc)
{
	for (size_t i = first; i < first + n; i++) {
		j->statuses[i] = rc;
		if (j->lens)
			j->lens[i] = 0;
	}
	if (!j->status)
		j->status = rc;
}

static int q_push(struct kvt_ci_async *a, const struct frame *f)
{
	if (a->len == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		struct frame *q = malloc(cap * sizeof(*q));

		if (!q)
			return -ENOMEM;
		for (size_t i = 0; i < a->len; i++)
			q[i] = a->q[(a->head + i) % a->cap];
		free(a->q);
		a->q = q;
		a->cap = cap;
		a->head = 0;
	}
	a->q[(a->head + a->len) % a->cap] = *f;
	a->len++;
	return 0;
}

static struct frame q_pop(kvt_client *c)
{
	struct kvt_ci_async *a = c->as;
	struct frame f = a->q[a->head];

	a->head = (a->head + 1) % a->cap;
	a->len--;
	c->as_frames = a->len;
	return f;
}

/* The connection broke: every frame in flight ends with rc. */
static void fail_all(kvt_client *c, int rc)
{
	struct kvt_ci_async *a = c->as;

	while (a->len > 0) {
		struct frame f = q_pop(c);

		keys_fail(f.job, f.first, f.n, rc);
		frame_done(c, f.job);
	}
}

/* The results of a reply body into the frame's keys. */
static int frame_results(kvt_client *c, const struct frame *f,
			 const uint8_t *body, size_t len)
{
	struct job *j = f->job;
	uint32_t count;

	if (kvt_xfer_reply_head_parse(body, len, &count) || count != f->n)
		return kvt_ci_fail(c, KVT_EPROTO, "%s reply of %zu bytes for "
				   "%zu keys", kvt_op_name(f->op), len, f->n);
	for (size_t i = 0; i < f->n; i++) {
		struct kvt_xfer_result r;
		size_t k = f->first + i;
		int st;

		if (kvt_xfer_result_parse(body + KVT_XFER_REPLY_FIXED +
						  i * KVT_XFER_RESULT_SIZE,
					  &r) ||
		    r.code > 0x7fffffffu ||
		    (f->op == KVT_OP_MPUT_FROM &&
		     (r.status == KVT_XFER_MISS ||
		      r.status == KVT_XFER_MISMATCH)))
			return kvt_ci_fail(c, KVT_EPROTO, "malformed result "
					   "%zu in a %s reply", i,
					   kvt_op_name(f->op));
		switch (r.status) {
		case KVT_XFER_OK:
			st = 0;
			break;
		case KVT_XFER_MISS:
			st = KVT_ENOTFOUND;
			r.length = 0;
			break;
		case KVT_XFER_MISMATCH:
			st = KVT_ERANGE;
			break;
		default:
			st = -(int)r.code;
			r.length = 0;
			break;
		}
		j->statuses[k] = st;
		if (j->lens)
			j->lens[k] = (size_t)r.length;
	}
	return 0;
}

static int as_read_one(kvt_client *c)
{
	struct kvt_ci_async *a = c->as;
	struct kvt_frame_header rh;
	struct frame f;
	int rc;

	if (!a || a->len == 0)
		return 0;
	f = a->q[a->head];
	rc = kvt_ci_read_reply_now(c, f.op, f.rid, &rh);
	if (rc < 0 && c->broken) {
		fail_all(c, rc);
		return rc;
	}
	q_pop(c);
	if (rc < 0) {
		/* The daemon refused the whole frame: its keys carry why. */
		keys_fail(f.job, f.first, f.n, rc);
		frame_done(c, f.job);
		return 0;
	}
	if (rh.body_len > a->rbody_cap) {
		uint8_t *p = realloc(a->rbody, rh.body_len);

		if (!p) {
			rc = kvt_ci_discard_body(c, rh.body_len);
			keys_fail(f.job, f.first, f.n, rc ? rc : -ENOMEM);
			frame_done(c, f.job);
			if (rc < 0)
				fail_all(c, rc);
			return rc ? rc : -ENOMEM;
		}
		a->rbody = p;
		a->rbody_cap = rh.body_len;
	}
	rc = kvt_ci_read_body(c, a->rbody, rh.body_len);
	if (!rc)
		rc = frame_results(c, &f, a->rbody, rh.body_len);
	if (rc < 0) {
		keys_fail(f.job, f.first, f.n, rc);
		frame_done(c, f.job);
		fail_all(c, rc);
		return rc;
	}
	frame_done(c, f.job);
	return 0;
}

static int as_drain(kvt_client *c)
{
	int rc = 0;

	while (c->as && c->as->len > 0 && !(rc < 0 && c->broken))
		rc = as_read_one(c);
	ev_update(c);
	return rc;
}

static void as_free(kvt_client *c)
{
	struct kvt_ci_async *a = c->as;

	if (!a)
		return;
	while (a->jobs) {
		struct job *j = a->jobs;

		a->jobs = j->next;
		free(j);
	}
	if (a->epfd >= 0)
		close(a->epfd);
	if (a->evfd >= 0)
		close(a->evfd);
	free(a->q);
	free(a->buf);
	free(a->rbody);
	free(a);
	c->as = NULL;
	c->as_frames = 0;
}

/* ---- building and sending a batch ---------------------------------------- */

struct batch {
	bool put;
	const char *ns;
	size_t ns_len;
	const void *const *keys;
	const size_t *key_lens;
	size_t n;
	const struct kvt_seg *segs;
	const size_t *nsegs;
	uint8_t dtype;
	uint32_t ttl_s;
};

/* Checks every argument before anything is sent. */
static int batch_check(kvt_client *c, const struct batch *b)
{
	size_t si = 0;

	if (b->n && (!b->keys || !b->key_lens || !b->nsegs))
		return kvt_ci_err(c, KVT_EINVAL, "keys, key_lens and nsegs "
				  "may not be NULL");
	for (size_t i = 0; i < b->n; i++) {
		struct kvt_keyref k;
		uint64_t total = 0;
		int rc = kvt_ci_check_key(c, b->ns, b->keys[i], b->key_lens[i],
					  &k);

		if (rc < 0)
			return rc;
		if (b->nsegs[i] > KVT_XFER_KEY_SEGS_MAX)
			return kvt_ci_err(c, KVT_EINVAL, "key %zu has %zu "
					  "segments, at most %d", i,
					  b->nsegs[i], KVT_XFER_KEY_SEGS_MAX);
		if (b->nsegs[i] && !b->segs)
			return kvt_ci_err(c, KVT_EINVAL, "segs is NULL");
		for (size_t s = 0; s < b->nsegs[i]; s++, si++) {
			const struct kvt_seg *sg = &b->segs[si];

			if (sg->region == 0 ||
			    sg->len > UINT64_MAX - sg->offset)
				return kvt_ci_err(c, KVT_EINVAL, "segment %zu "
						  "of key %zu: %s", s, i,
						  sg->region ? "offset + "
						  "length wraps" : "region 0");
			total += sg->len;
			if (total < sg->len)
				total = UINT64_MAX;
		}
		if (b->put && total > c->lim.max_value)
			return kvt_ci_err(c, KVT_ETOOBIG, "value %zu of %llu "
					  "bytes exceeds the daemon's limit of "
					  "%llu", i,
					  (unsigned long long)total,
					  (unsigned long long)c->lim.max_value);
	}
	if (b->put && b->dtype >= KVT_DTYPE_END_)
		return kvt_ci_err(c, KVT_EINVAL, "unknown dtype %u", b->dtype);
	return 0;
}

/*
 * Encodes keys [first, ...) into a->buf, as many as one frame takes;
 * *n gets how many, *len the body's length.  si is key first's first
 * segment.
 */
static int frame_build(kvt_client *c, const struct batch *b, size_t first,
		       size_t si, size_t *n, size_t *len)
{
	struct kvt_ci_async *a = c->as;
	struct kvt_xfer_head h = { b->put, (const uint8_t *)b->ns, b->ns_len,
				   0, b->dtype, b->ttl_s };
	size_t off = kvt_xfer_head_size(b->put, b->ns_len), segs = 0, k;

	for (k = first; k < b->n; k++) {
		size_t sz = kvt_xfer_key_size(b->key_lens[k], b->nsegs[k]);

		if (k > first && (k - first == KVT_XFER_KEYS_MAX ||
				  segs + b->nsegs[k] > KVT_XFER_SEGS_MAX ||
				  off + sz > FRAME_BODY_MAX ||
				  off + sz > c->lim.max_body))
			break;
		off += sz;
		segs += b->nsegs[k];
	}
	if (KVT_HDR_SIZE + off > a->buf_cap) {
		uint8_t *p = realloc(a->buf, KVT_HDR_SIZE + off);

		if (!p)
			return kvt_ci_err(c, -ENOMEM, "out of memory");
		a->buf = p;
		a->buf_cap = KVT_HDR_SIZE + off;
	}
	h.count = k - first;
	kvt_xfer_head_encode(a->buf + KVT_HDR_SIZE, &h);
	off = KVT_HDR_SIZE + kvt_xfer_head_size(b->put, b->ns_len);
	for (size_t i = first; i < k; i++) {
		kvt_xfer_key_encode(a->buf + off, b->keys[i], b->key_lens[i],
				    b->nsegs[i]);
		off += kvt_xfer_key_size(b->key_lens[i], 0);
		for (size_t s = 0; s < b->nsegs[i]; s++, si++) {
			struct kvt_xfer_seg sg = { b->segs[si].region,
						   b->segs[si].offset,
						   b->segs[si].len };

			kvt_xfer_seg_encode(a->buf + off, &sg);
			off += KVT_XFER_SEG_SIZE;
		}
	}
	*n = k - first;
	*len = off - KVT_HDR_SIZE;
	return 0;
}

/*
 * Sends batch b as job j's frames.  On a send failure the connection is
 * broken and every key not answered carries the error.
 */
static int batch_send(kvt_client *c, const struct batch *b, struct job *j)
{
	struct kvt_ci_async *a = c->as;
	uint8_t op = b->put ? KVT_OP_MPUT_FROM : KVT_OP_MGET_TO;
	size_t first = 0, si = 0;

	while (first < b->n) {
		struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
					      .opcode = op };
		struct iovec iov[2];
		struct frame f;
		size_t n = 0, len = 0, rel;
		int rc = frame_build(c, b, first, si, &n, &len);

		if (rc < 0) {
			keys_fail(j, first, b->n - first, rc);
			return rc;
		}
		/* Leases ended since the last request end with this one. */
		rel = kvt_ci_release_frame(c);
		iov[0] = (struct iovec){ c->relbuf, rel };
		h.request_id = kvt_ci_next_id(c);
		h.body_len = (uint32_t)len;
		kvt_frame_header_encode(a->buf, &h);
		iov[1] = (struct iovec){ a->buf, KVT_HDR_SIZE + len };
		f = (struct frame){ h.request_id, op, j, first, n };
		if (q_push(a, &f)) {
			keys_fail(j, first, b->n - first, -ENOMEM);
			return kvt_ci_err(c, -ENOMEM, "out of memory");
		}
		c->as_frames = a->len;
		j->frames_left++;
		for (size_t i = first; i < first + n; i++)
			si += b->nsegs[i];
		first += n;
		rc = kvt_ci_send_iov(c, iov, 2, -1);
		if (rc < 0) {
			if (!c->broken)
				rc = kvt_ci_lost(c, rc, kvt_op_name(op));
			fail_all(c, rc);
			if (first < b->n)
				keys_fail(j, first, b->n - first, rc);
			return rc;
		}
	}
	return 0;
}

/*
 * Starts batch b as a job (collect: reported by kvt_poll).  Returns 0
 * with *out, or an error with nothing sent (or, after a send failure, a
 * finished job in *out as well).
 */
static int submit(kvt_client *c, const struct batch *b, int *statuses,
		  size_t *lens, bool collect, struct job **out)
{
	struct kvt_ci_async *a;
	struct job *j;
	int rc;

	*out = NULL;
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	if (b->ns_len > KVT_NS_MAX)
		return kvt_ci_err(c, KVT_EINVAL, "namespace longer than 255 "
				  "bytes");
	rc = kvt_ci_check_ns(c, b->ns_len);
	if (rc < 0)
		return rc;
	if (b->n && !statuses)
		return kvt_ci_err(c, KVT_EINVAL, "statuses may not be NULL");
	rc = batch_check(c, b);
	if (rc < 0)
		return rc;
	a = as_get(c);
	j = calloc(1, sizeof(*j));
	if (!a || !j) {
		free(j);
		return kvt_ci_err(c, -ENOMEM, "out of memory");
	}
	j->id = a->next_job++;
	if (a->next_job == 0)
		a->next_job = 1;
	j->put = b->put;
	j->collect = collect;
	j->statuses = statuses;
	j->lens = lens;
	j->frames_left = 1; /* ours while sending */
	j->next = a->jobs;
	if (a->jobs)
		a->jobs->prev = j;
	a->jobs = j;
	if (collect)
		a->inflight++;
	rc = batch_send(c, b, j);
	frame_done(c, j);
	*out = j;
	ev_update(c);
	return rc;
}

/* Waits for synchronous job j and returns its result; j is freed. */
static int wait_job(kvt_client *c, struct job *j)
{
	int rc;

	/* A connection error ends every frame (fail_all), j's included. */
	while (!j->done && c->as->len > 0)
		as_read_one(c);
	rc = j->status;
	job_unlink(c->as, j);
	free(j);
	ev_update(c);
	return rc;
}

static void batch_init(struct batch *b, bool put, const char *ns,
		       const void *const *keys, const size_t *key_lens,
		       size_t n, const struct kvt_seg *segs,
		       const size_t *nsegs, const struct kvt_put_opts *opts)
{
	*b = (struct batch){ put, ns ? ns : "", ns ? strlen(ns) : 0, keys,
			     key_lens, n, segs, nsegs,
			     opts ? opts->dtype : 0, opts ? opts->ttl_s : 0 };
}

static int do_xfer(kvt_client *c, bool put, const char *ns,
		   const void *const *keys, const size_t *key_lens, size_t n,
		   const struct kvt_seg *segs, const size_t *nsegs,
		   const struct kvt_put_opts *opts, size_t *lens,
		   int *statuses)
{
	struct batch b;
	struct job *j;
	int rc;

	batch_init(&b, put, ns, keys, key_lens, n, segs, nsegs, opts);
	rc = submit(c, &b, statuses, lens, false, &j);
	if (!j) {
		for (size_t i = 0; statuses && i < n; i++) {
			statuses[i] = rc;
			if (lens)
				lens[i] = 0;
		}
		return rc;
	}
	return wait_job(c, j);
}

static int do_submit(kvt_client *c, bool put, const char *ns,
		     const void *const *keys, const size_t *key_lens,
		     size_t n, const struct kvt_seg *segs,
		     const size_t *nsegs, const struct kvt_put_opts *opts,
		     size_t *lens, int *statuses, uint64_t *job)
{
	struct batch b;
	struct job *j;
	int rc;

	if (!job)
		return kvt_ci_err(c, KVT_EINVAL, "job may not be NULL");
	*job = 0;
	batch_init(&b, put, ns, keys, key_lens, n, segs, nsegs, opts);
	rc = submit(c, &b, statuses, lens, true, &j);
	if (j && rc < 0) {
		/*
		 * Sending failed: the caller hears it now, so the job is not
		 * reported again (it is the done list's newest).
		 */
		done_remove(c->as, j);
		return rc;
	}
	if (j)
		*job = j->id;
	return j ? 0 : rc;
}

/* ---- REGISTER and UNREGISTER --------------------------------------------- */

static int do_register(kvt_client *c, int fd, uint64_t offset,
		       uint64_t length, uint32_t flags, struct kvt_region *out)
{
	uint8_t frame[KVT_HDR_SIZE + KVT_REG_REQ_SIZE];
	uint8_t body[KVT_REG_REPLY_SIZE];
	struct kvt_reg_req q = { offset, length, flags };
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_REGISTER,
				      .body_len = KVT_REG_REQ_SIZE };
	struct kvt_frame_header rh;
	struct kvt_reg_reply rep;
	struct iovec iov;
	int rc;

	if (!out || fd < 0 || (flags & ~KVT_REGION_READONLY) ||
	    length > UINT64_MAX - offset)
		return kvt_ci_err(c, KVT_EINVAL, "bad arguments to "
				  "kvt_register");
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	h.request_id = kvt_ci_next_id(c);
	kvt_frame_header_encode(frame, &h);
	kvt_reg_req_encode(frame + KVT_HDR_SIZE, &q);
	iov = (struct iovec){ frame, sizeof(frame) };
	/* The descriptor travels with the frame's first byte. */
	rc = kvt_ci_send_iov(c, &iov, 1, fd);
	if (rc < 0)
		return kvt_ci_send_failed(c, rc, KVT_OP_REGISTER, h.request_id,
					  &rh);
	rc = kvt_ci_read_reply(c, KVT_OP_REGISTER, h.request_id, &rh);
	if (rc < 0)
		return rc;
	rc = kvt_ci_read_fixed_reply(c, &rh, body, sizeof(body), "REGISTER");
	if (rc < 0)
		return rc;
	if (kvt_reg_reply_parse(body, sizeof(body), &rep))
		return kvt_ci_fail(c, KVT_EPROTO, "malformed REGISTER reply");
	*out = (struct kvt_region){ rep.region, rep.flags, rep.length };
	return 0;
}

static int do_unregister(kvt_client *c, uint32_t id)
{
	uint8_t body[KVT_UNREG_REQ_SIZE];
	struct kvt_frame_header rh;
	int rc;

	if (id == 0)
		return kvt_ci_err(c, KVT_EINVAL, "region 0 does not exist");
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	kvt_unreg_req_encode(body, id);
	memcpy(c->sbuf + KVT_HDR_SIZE, body, sizeof(body));
	rc = kvt_ci_request(c, KVT_OP_UNREGISTER, sizeof(body), NULL, 0, &rh);
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh.body_len);
}

/* ---- collecting jobs ------------------------------------------------------ */

/* Whether the socket has bytes to read now. */
static bool readable(kvt_client *c, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	return n > 0;
}

static int do_poll(kvt_client *c, int timeout_ms, struct kvt_job_done *done,
		   size_t cap, size_t *n)
{
	struct kvt_ci_async *a = c->as;
	int rc = 0;

	if (!done || !n || cap == 0)
		return kvt_ci_err(c, KVT_EINVAL, "done and n may not be NULL, "
				  "cap not 0");
	*n = 0;
	if (!a || (a->ndone == 0 && a->inflight == 0))
		return c->broken ? kvt_ci_usable(c) : 0;
	/*
	 * Read every reply that has begun to arrive (the rest of one comes
	 * at once: the daemon sends a reply whole), after waiting for the
	 * first if nothing is finished yet.
	 */
	if (a->ndone == 0 && a->len > 0 &&
	    (kvt_ci_buffered(c) || readable(c, timeout_ms))) {
		do {
			rc = as_read_one(c);
			if (rc < 0 && c->broken)
				break;
		} while (a->len > 0 && a->ndone < cap &&
			 (kvt_ci_buffered(c) || readable(c, 0)));
	} else if (a->len > 0) {
		/* Finished jobs are waiting: take what has come too. */
		while (a->len > 0 && a->ndone < cap &&
		       (kvt_ci_buffered(c) || readable(c, 0))) {
			rc = as_read_one(c);
			if (rc < 0 && c->broken)
				break;
		}
	}
	while (a->done_head && *n < cap) {
		struct job *j = a->done_head;

		a->done_head = j->dnext;
		if (!a->done_head)
			a->done_tail = NULL;
		a->ndone--;
		done[*n].job = j->id;
		done[*n].status = j->status;
		(*n)++;
		job_unlink(a, j);
		free(j);
	}
	ev_update(c);
	return 0;
}

static int do_poll_fd(kvt_client *c)
{
	struct kvt_ci_async *a = as_get(c);
	struct epoll_event ev = { .events = EPOLLIN };
	int rc;

	if (!a)
		return kvt_ci_err(c, -ENOMEM, "out of memory");
	if (a->epfd >= 0)
		return a->epfd;
	a->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	a->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (a->evfd < 0 || a->epfd < 0)
		goto fail;
	ev.data.fd = c->fd;
	if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		goto fail;
	ev.data.fd = a->evfd;
	if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->evfd, &ev) < 0)
		goto fail;
	a->ev_on = false;
	ev_update(c);
	return a->epfd;
fail:
	rc = -errno;
	if (a->evfd >= 0)
		close(a->evfd);
	if (a->epfd >= 0)
		close(a->epfd);
	a->evfd = a->epfd = -1;
	return kvt_ci_err(c, rc, "cannot make the poll fd: %s",
			  kvt_strerror(rc));
}

/* ---- the public calls ------------------------------------------------------ */

int kvt_register(kvt_client *c, int fd, uint64_t offset, uint64_t length,
		 uint32_t flags, struct kvt_region *region)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_register(c, fd, offset, length, flags, region);
	kvt_ci_leave(c);
	return rc;
}

int kvt_unregister(kvt_client *c, uint32_t id)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_unregister(c, id);
	kvt_ci_leave(c);
	return rc;
}

int kvt_mget_to(kvt_client *c, const char *ns, const void *const *keys,
		const size_t *key_lens, size_t n, const struct kvt_seg *segs,
		const size_t *nsegs, size_t *val_lens, int *statuses)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_xfer(c, false, ns, keys, key_lens, n, segs, nsegs, NULL,
		     val_lens, statuses);
	kvt_ci_leave(c);
	return rc;
}

int kvt_mput_from(kvt_client *c, const char *ns, const void *const *keys,
		  const size_t *key_lens, size_t n, const struct kvt_seg *segs,
		  const size_t *nsegs, const struct kvt_put_opts *opts,
		  int *statuses)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_xfer(c, true, ns, keys, key_lens, n, segs, nsegs, opts, NULL,
		     statuses);
	kvt_ci_leave(c);
	return rc;
}

int kvt_submit_mget_to(kvt_client *c, const char *ns,
		       const void *const *keys, const size_t *key_lens,
		       size_t n, const struct kvt_seg *segs,
		       const size_t *nsegs, size_t *val_lens, int *statuses,
		       uint64_t *job)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_submit(c, false, ns, keys, key_lens, n, segs, nsegs, NULL,
		       val_lens, statuses, job);
	kvt_ci_leave(c);
	return rc;
}

int kvt_submit_mput_from(kvt_client *c, const char *ns,
			 const void *const *keys, const size_t *key_lens,
			 size_t n, const struct kvt_seg *segs,
			 const size_t *nsegs, const struct kvt_put_opts *opts,
			 int *statuses, uint64_t *job)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_submit(c, true, ns, keys, key_lens, n, segs, nsegs, opts,
		       NULL, statuses, job);
	kvt_ci_leave(c);
	return rc;
}

int kvt_poll(kvt_client *c, int timeout_ms, struct kvt_job_done *done,
	     size_t cap, size_t *n)
{
	int rc = kvt_ci_enter(c);

	if (n)
		*n = 0;
	if (rc < 0)
		return rc;
	rc = do_poll(c, timeout_ms, done, cap, n);
	kvt_ci_leave(c);
	return rc;
}

int kvt_poll_fd(kvt_client *c)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_poll_fd(c);
	kvt_ci_leave(c);
	return rc;
}
