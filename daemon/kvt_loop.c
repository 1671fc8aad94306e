/*
 * kvt_loop.c - see kvt_loop.h.  Two backends behind one set of calls:
 * io_uring (each call is an SQE) and epoll (each call is remembered on its
 * descriptor's slot and performed, without blocking, when epoll says the
 * descriptor is ready).
 */
#include "kvt_clock.h"
#include "kvt_loop.h"
#include "kvt_spin.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

enum op_kind {
	OPK_NONE, OPK_ACCEPT, OPK_RECV, OPK_RECVMSG, OPK_READ, OPK_SEND
};

/* An operation waiting for its descriptor to become ready (epoll). */
struct ep_op {
	enum op_kind kind;
	uint64_t ud;
	void *buf;
	size_t len;
	struct msghdr *msg;
	int flags;
};

/*
 * Per-descriptor state (epoll), indexed by descriptor number.  gen changes
 * whenever the descriptor is closed through the loop, so that an event
 * fetched for the old descriptor is not applied to a new one that got the
 * same number within the same batch.
 */
struct ep_slot {
	struct ep_op in, out; /* read side (accept, recv, read), write side */
	uint32_t mask;	      /* events registered with epoll, 0 = none */
	uint32_t gen;
	bool dirty; /* ops changed: registration to update before waiting */
	bool fresh; /* a send was just submitted: try it before waiting */
	bool nonblock; /* O_NONBLOCK set by us */
};

/* A completion produced outside epoll_wait (cancel, timer, errors). */
struct ep_done {
	uint64_t ud;
	int res;
	unsigned flags;
};

struct kvt_loop {
	int backend;

	/* io_uring */
	struct io_uring ring;
	struct __kernel_timespec tick;

	/* epoll */
	int epfd;
	struct ep_slot *slots;
	size_t nslots;
	int *dirty; /* descriptors with dirty slots */
	size_t ndirty, dirty_cap;
	int *fresh; /* descriptors with fresh sends */
	size_t nfresh, fresh_cap;
	struct ep_done *done;
	size_t ndone, done_cap;
	bool timer_armed;
	uint64_t timer_ud, timer_deadline_ns;

	struct kvt_spin spin; /* busy polling before sleeping */
};

/* Most accepts performed per readiness event (fairness to clients). */
#define EP_ACCEPT_BURST 64
/* Events fetched per epoll_wait. */
#define EP_EVENTS 256

const char *kvt_io_backend_name(int backend)
{
	switch (backend) {
	case KVT_IO_AUTO:
		return "auto";
	case KVT_IO_URING:
		return "io_uring";
	case KVT_IO_EPOLL:
		return "epoll";
	}
	return "?";
}

int kvt_io_backend_parse(const char *s)
{
	if (!strcmp(s, "auto"))
		return KVT_IO_AUTO;
	if (!strcmp(s, "io_uring") || !strcmp(s, "io-uring") ||
	    !strcmp(s, "uring"))
		return KVT_IO_URING;
	if (!strcmp(s, "epoll"))
		return KVT_IO_EPOLL;
	return -1;
}

int kvt_loop_open(struct kvt_loop **out, int backend, unsigned entries,
		  char *err, size_t errlen)
{
	struct kvt_loop *l;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (backend != KVT_IO_URING && backend != KVT_IO_EPOLL)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->backend = backend;
	l->epfd = -1;
	if (backend == KVT_IO_URING) {
		struct io_uring_params p;

		/*
		 * Completions are delivered as task work.  With COOP_TASKRUN
		 * the kernel does not interrupt the loop to run it (an IPI
		 * per completion, costly on a VM) but raises IORING_SQ_TASKRUN,
		 * which busy polling checks.  Kernels before 5.19 refuse the
		 * flags; the loop then runs without them.
		 */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
		rc = io_uring_queue_init_params(entries, &l->ring, &p);
		if (rc == -EINVAL) {
			memset(&p, 0, sizeof(p));
			rc = io_uring_queue_init_params(entries, &l->ring, &p);
		}
		if (rc < 0) {
			if (err && errlen)
				snprintf(err, errlen, "io_uring_setup: %s",
					 strerror(-rc));
			free(l);
			return rc;
		}
	} else {
		l->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (l->epfd < 0) {
			rc = -errno;
			if (err && errlen)
				snprintf(err, errlen, "epoll_create1: %s",
					 strerror(-rc));
			free(l);
			return rc;
		}
	}
	*out = l;
	return 0;
}

void kvt_loop_close(struct kvt_loop *l)
{
	if (!l)
		return;
	if (l->backend == KVT_IO_URING)
		io_uring_queue_exit(&l->ring);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l->slots);
	free(l->dirty);
	free(l->fresh);
	free(l->done);
	free(l);
}

int kvt_loop_backend(const struct kvt_loop *l)
{
	return l->backend;
}

/* ---- busy polling ------------------------------------------------------- */

/* One wait of kvt_loop_run_once(): polled, then maybe blocked. */
struct spin_wait {
	bool on;	/* the spin policy is in use */
	bool hit;	/* an event came while polling */
	bool preempted; /* switched out involuntarily while polling */
	uint64_t start, end, blocked; /* ns: poll start and deadline, block start */
	long nivcsw;  /* involuntary switches before polling */
};

void kvt_loop_set_busy_poll(struct kvt_loop *l, unsigned usec)
{
	kvt_spin_init(&l->spin, (uint64_t)usec * 1000);
}

void kvt_loop_busy_poll_stats(const struct kvt_loop *l,
			      struct kvt_loop_poll_stats *st)
{
	st->max_us = l->spin.max_ns / 1000;
	st->window_us = l->spin.cur_ns / 1000;
	st->polls = l->spin.polls;
	st->hits = l->spin.hits;
	st->preempts = l->spin.preempts;
	st->backoffs = l->spin.backoffs;
}

/*
 * Starts a wait: returns true if the caller is to poll until w->end (may
 * is false when there is work already or the wait is not to block).
 */
static bool spin_begin(struct kvt_loop *l, struct spin_wait *w, bool may)
{
	uint64_t win;

	*w = (struct spin_wait){ .on = may && l->spin.max_ns };
	if (!w->on)
		return false;
	w->start = w->blocked = kvt_clock_ns();
	win = kvt_spin_window(&l->spin, w->start);
	if (!win)
		return false;
	w->end = w->start + win;
	w->nivcsw = kvt_spin_nivcsw();
	return true;
}

/* Polling is over without an event: the blocking part starts. */
static void spin_block(struct spin_wait *w)
{
	if (w->on && w->end) {
		w->preempted = kvt_spin_nivcsw() != w->nivcsw;
		w->blocked = kvt_clock_ns();
	}
}

/* The wait is over: feeds the policy. */
static void spin_end(struct kvt_loop *l, struct spin_wait *w)
{
	uint64_t now;

	if (!w->on)
		return;
	now = kvt_clock_ns();
	if (w->hit)
		w->preempted = kvt_spin_nivcsw() != w->nivcsw;
	kvt_spin_done(&l->spin, w->blocked - w->start, w->hit, w->preempted,
		      w->hit ? 0 : now - w->blocked, now);
}

/* ---- io_uring ----------------------------------------------------------- */

/*
 * Returns a submission queue entry, submitting what is queued to make room
 * if the queue is full.  With the ring sized for two operations per
 * connection this only spins in pathological cases.
 */
static struct io_uring_sqe *get_sqe(struct kvt_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	while (!sqe) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

/* Whether a completion is waiting, running pending task work if flagged. */
static bool uring_ready(struct kvt_loop *l)
{
	if (io_uring_cq_ready(&l->ring))
		return true;
	if (IO_URING_READ_ONCE(*l->ring.sq.kflags) & IORING_SQ_TASKRUN) {
		io_uring_get_events(&l->ring);
		return io_uring_cq_ready(&l->ring) > 0;
	}
	return false;
}

static int uring_run_once(struct kvt_loop *l, int timeout_ms, kvt_loop_fn fn,
			  void *arg)
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	struct spin_wait w;
	unsigned head, n = 0;
	int rc = 0;

	if (spin_begin(l, &w, timeout_ms != 0 && !io_uring_cq_ready(&l->ring))) {
		/* Replies go out before polling for the next request. */
		io_uring_submit(&l->ring);
		while (!(w.hit = uring_ready(l)) && kvt_clock_ns() < w.end)
			;
	}
	if (w.hit) {
		rc = io_uring_submit(&l->ring);
	} else {
		spin_block(&w);
		if (timeout_ms >= 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		}
		rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1,
						      timeout_ms >= 0 ? &ts :
						      NULL, NULL);
	}
	spin_end(l, &w);
	if (rc < 0 && rc != -ETIME && rc != -EINTR)
		return rc;
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		fn(arg, io_uring_cqe_get_data64(cqe), cqe->res,
		   (cqe->flags & IORING_CQE_F_MORE) ? KVT_LOOP_MORE : 0);
		n++;
	}
	io_uring_cq_advance(&l->ring, n);
	return 0;
}

/* ---- epoll -------------------------------------------------------------- */

/* Queues a completion for the next kvt_loop_run_once(). */
static void ep_complete_later(struct kvt_loop *l, uint64_t ud, int res,
			      unsigned flags)
{
	if (l->ndone == l->done_cap) {
		size_t cap = l->done_cap ? l->done_cap * 2 : 16;
		struct ep_done *p = realloc(l->done, cap * sizeof(*p));

		/*
		 * Without room the completion would be lost and its owner
		 * would wait forever; there is no better answer to running
		 * out of memory for 16 bytes than stopping.
		 */
		if (!p)
			abort();
		l->done = p;
		l->done_cap = cap;
	}
	l->done[l->ndone++] = (struct ep_done){ ud, res, flags };
}

/* The slot of fd, growing the table; NULL if out of memory. */
static struct ep_slot *ep_slot(struct kvt_loop *l, int fd)
{
	if (fd < 0)
		return NULL;
	if ((size_t)fd >= l->nslots) {
		size_t n = l->nslots ? l->nslots : 64;
		struct ep_slot *p;

		while (n <= (size_t)fd)
			n *= 2;
		p = realloc(l->slots, n * sizeof(*p));
		if (!p)
			return NULL;
		memset(p + l->nslots, 0, (n - l->nslots) * sizeof(*p));
		l->slots = p;
		l->nslots = n;
	}
	return &l->slots[fd];
}

static int ep_mark_dirty(struct kvt_loop *l, int fd)
{
	struct ep_slot *s = &l->slots[fd];

	if (s->dirty)
		return 0;
	if (l->ndirty == l->dirty_cap) {
		size_t cap = l->dirty_cap ? l->dirty_cap * 2 : 64;
		int *p = realloc(l->dirty, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->dirty = p;
		l->dirty_cap = cap;
	}
	l->dirty[l->ndirty++] = fd;
	s->dirty = true;
	return 0;
}

/*
 * Sends usually fit in the socket buffer: a fresh one is tried once before
 * waiting, which saves registering for EPOLLOUT and a round through
 * epoll_wait per reply.  It is still completed from kvt_loop_run_once(),
 * never from inside the submit call.
 */
static void ep_mark_fresh(struct kvt_loop *l, int fd)
{
	struct ep_slot *s = &l->slots[fd];

	if (s->fresh)
		return;
	if (l->nfresh == l->fresh_cap) {
		size_t cap = l->fresh_cap ? l->fresh_cap * 2 : 64;
		int *p = realloc(l->fresh, cap * sizeof(*p));

		if (!p)
			return; /* then it waits for EPOLLOUT like the rest */
		l->fresh = p;
		l->fresh_cap = cap;
	}
	l->fresh[l->nfresh++] = fd;
	s->fresh = true;
}

static int ep_set_nonblock(struct ep_slot *s, int fd)
{
	int fl;

	if (s->nonblock)
		return 0;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	s->nonblock = true;
	return 0;
}

/* Remembers op on fd's read or write side. */
static void ep_submit(struct kvt_loop *l, int fd, const struct ep_op *op,
		      bool nonblock)
{
	struct ep_slot *s = ep_slot(l, fd);
	int rc = 0;

	if (!s) {
		ep_complete_later(l, op->ud, fd < 0 ? -EBADF : -ENOMEM, 0);
		return;
	}
	if (nonblock && (rc = ep_set_nonblock(s, fd))) {
		ep_complete_later(l, op->ud, rc, 0);
		return;
	}
	if ((rc = ep_mark_dirty(l, fd))) {
		ep_complete_later(l, op->ud, rc, 0);
		return;
	}
	if (op->kind == OPK_SEND) {
		if (s->out.kind != OPK_NONE) {
			ep_complete_later(l, op->ud, -EBUSY, 0);
			return;
		}
		s->out = *op;
		ep_mark_fresh(l, fd);
	} else {
		if (s->in.kind != OPK_NONE) {
			ep_complete_later(l, op->ud, -EBUSY, 0);
			return;
		}
		s->in = *op;
	}
}

/*
 * Brings epoll's registration of every dirty descriptor in line with its
 * armed operations.  A descriptor with nothing armed is removed, not
 * left registered with no events: epoll reports hang-ups regardless, and
 * a parked connection's closed socket would wake the loop forever.
 */
static void ep_sync(struct kvt_loop *l)
{
	for (size_t i = 0; i < l->ndirty; i++) {
		int fd = l->dirty[i];
		struct ep_slot *s = &l->slots[fd];
		uint32_t want = (s->in.kind ? EPOLLIN : 0) |
				(s->out.kind ? EPOLLOUT : 0);
		struct epoll_event ev = {
			.events = want,
			.data.u64 = (uint64_t)(uint32_t)fd |
				    (uint64_t)s->gen << 32,
		};
		int rc = 0;

		s->dirty = false;
		if (want == s->mask)
			continue;
		if (!want)
			rc = epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
		else if (!s->mask)
			rc = epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
		else
			rc = epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
		if (rc && errno == EEXIST)
			rc = epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
		else if (rc && errno == ENOENT && want)
			rc = epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
		if (rc && want) {
			/* Cannot watch it: fail what waits on it. */
			int err = -errno;

			if (s->in.kind)
				ep_complete_later(l, s->in.ud, err, 0);
			if (s->out.kind)
				ep_complete_later(l, s->out.ud, err, 0);
			s->in.kind = s->out.kind = OPK_NONE;
			want = 0;
		}
		s->mask = want;
	}
	l->ndirty = 0;
}

/* Performs a read-side operation; -EAGAIN if it would block. */
static int ep_do_in(int fd, const struct ep_op *op)
{
	ssize_t n;

	do {
		switch (op->kind) {
		case OPK_ACCEPT:
			n = accept4(fd, NULL, NULL,
				    SOCK_CLOEXEC | SOCK_NONBLOCK);
			break;
		case OPK_RECV:
			n = recv(fd, op->buf, op->len, MSG_DONTWAIT);
			break;
		case OPK_RECVMSG:
			n = recvmsg(fd, op->msg, op->flags | MSG_DONTWAIT);
			break;
		default:
			n = read(fd, op->buf, op->len);
			break;
		}
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

static int ep_do_out(int fd, const struct ep_op *op)
{
	ssize_t n;

	do
		n = sendmsg(fd, op->msg, op->flags | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

/* The slot of fd if it still is the descriptor the event was for. */
static struct ep_slot *ep_live(struct kvt_loop *l, int fd, uint32_t gen)
{
	if ((size_t)fd >= l->nslots || l->slots[fd].gen != gen)
		return NULL;
	return &l->slots[fd];
}

/*
 * Handles readiness of one descriptor.  Handlers may submit, close
 * descriptors (bumping gen) and grow the slot table, so the slot is looked
 * up again after every call out.
 */
static void ep_ready(struct kvt_loop *l, const struct epoll_event *ev,
		     kvt_loop_fn fn, void *arg)
{
	int fd = (int)(uint32_t)ev->data.u64;
	uint32_t gen = (uint32_t)(ev->data.u64 >> 32);
	bool err = ev->events & (EPOLLERR | EPOLLHUP);
	struct ep_slot *s = ep_live(l, fd, gen);
	struct ep_op op;
	int res;

	if (s && s->in.kind && (err || (ev->events & EPOLLIN))) {
		if (s->in.kind == OPK_ACCEPT) {
			for (int i = 0; i < EP_ACCEPT_BURST; i++) {
				op = s->in;
				res = ep_do_in(fd, &op);
				if (res == -EAGAIN)
					break;
				if (res < 0 && res != -ECONNABORTED) {
					/* Like io_uring: an error ends it. */
					s->in.kind = OPK_NONE;
					ep_mark_dirty(l, fd);
					fn(arg, op.ud, res, 0);
					break;
				}
				if (res < 0)
					continue;
				fn(arg, op.ud, res, KVT_LOOP_MORE);
				s = ep_live(l, fd, gen);
				if (!s || s->in.kind != OPK_ACCEPT ||
				    s->in.ud != op.ud)
					break; /* cancelled meanwhile */
			}
		} else {
			op = s->in;
			res = ep_do_in(fd, &op);
			if (res != -EAGAIN) {
				s->in.kind = OPK_NONE;
				ep_mark_dirty(l, fd);
				fn(arg, op.ud, res, 0);
			}
		}
		s = ep_live(l, fd, gen);
	}
	if (s && s->out.kind && (err || (ev->events & EPOLLOUT))) {
		op = s->out;
		res = ep_do_out(fd, &op);
		if (res != -EAGAIN) {
			s->out.kind = OPK_NONE;
			ep_mark_dirty(l, fd);
			fn(arg, op.ud, res, 0);
		}
	}
}

/* Tries the fresh sends (those submitted meanwhile wait for next time). */
static void ep_try_fresh(struct kvt_loop *l, kvt_loop_fn fn, void *arg)
{
	size_t n = l->nfresh;

	if (!n)
		return;
	for (size_t i = 0; i < n; i++) {
		int fd = l->fresh[i];
		struct ep_slot *s = &l->slots[fd];
		struct ep_op op;
		int res;

		if (!s->fresh)
			continue; /* closed meanwhile */
		s->fresh = false;
		if (s->out.kind != OPK_SEND)
			continue;
		op = s->out;
		res = ep_do_out(fd, &op);
		if (res == -EAGAIN)
			continue; /* registered for EPOLLOUT by ep_sync */
		s->out.kind = OPK_NONE;
		ep_mark_dirty(l, fd);
		fn(arg, op.ud, res, 0);
	}
	memmove(l->fresh, l->fresh + n, (l->nfresh - n) * sizeof(*l->fresh));
	l->nfresh -= n;
}

/* Delivers the completions queued so far (not those they queue). */
static void ep_deliver_queued(struct kvt_loop *l, kvt_loop_fn fn, void *arg)
{
	size_t n = l->ndone;

	if (!n)
		return;
	for (size_t i = 0; i < n; i++) {
		struct ep_done d = l->done[i];

		fn(arg, d.ud, d.res, d.flags);
	}
	memmove(l->done, l->done + n, (l->ndone - n) * sizeof(*l->done));
	l->ndone -= n;
}

static int ep_run_once(struct kvt_loop *l, int timeout_ms, kvt_loop_fn fn,
		       void *arg)
{
	struct epoll_event evs[EP_EVENTS];
	struct spin_wait w;
	int n, wait_ms = timeout_ms;

	ep_try_fresh(l, fn, arg);
	ep_sync(l);
	if (l->ndone || l->nfresh)
		wait_ms = 0;
	if (l->timer_armed) {
		uint64_t now = kvt_clock_ns();
		int t = now >= l->timer_deadline_ns ? 0 :
			(int)((l->timer_deadline_ns - now + 999999) / 1000000);

		if (wait_ms < 0 || t < wait_ms)
			wait_ms = t;
	}
	n = 0;
	if (spin_begin(l, &w, wait_ms != 0)) {
		while ((n = epoll_wait(l->epfd, evs, EP_EVENTS, 0)) == 0 &&
		       kvt_clock_ns() < w.end)
			;
		w.hit = n > 0;
	}
	if (!w.hit) {
		spin_block(&w);
		n = epoll_wait(l->epfd, evs, EP_EVENTS, wait_ms);
	}
	spin_end(l, &w);
	if (n < 0 && errno != EINTR)
		return -errno;
	for (int i = 0; i < n; i++)
		ep_ready(l, &evs[i], fn, arg);
	if (l->timer_armed && kvt_clock_ns() >= l->timer_deadline_ns) {
		l->timer_armed = false;
		fn(arg, l->timer_ud, -ETIME, 0);
	}
	ep_deliver_queued(l, fn, arg);
	return 0;
}

/* ---- the calls ---------------------------------------------------------- */

void kvt_loop_accept(struct kvt_loop *l, int fd, uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
					       SOCK_CLOEXEC);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	ep_submit(l, fd, &(struct ep_op){ .kind = OPK_ACCEPT, .ud = ud },
		  true);
}

void kvt_loop_recv(struct kvt_loop *l, int fd, void *buf, size_t len,
		   uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		io_uring_prep_recv(sqe, fd, buf, len, 0);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	ep_submit(l, fd, &(struct ep_op){ .kind = OPK_RECV, .ud = ud,
					  .buf = buf, .len = len }, false);
}

void kvt_loop_recvmsg(struct kvt_loop *l, int fd, struct msghdr *msg,
		      int flags, uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		io_uring_prep_recvmsg(sqe, fd, msg, (unsigned)flags);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	ep_submit(l, fd, &(struct ep_op){ .kind = OPK_RECVMSG, .ud = ud,
					  .msg = msg, .flags = flags }, false);
}

void kvt_loop_sendmsg(struct kvt_loop *l, int fd, struct msghdr *msg,
		      int flags, uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)flags);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	ep_submit(l, fd, &(struct ep_op){ .kind = OPK_SEND, .ud = ud,
					  .msg = msg, .flags = flags }, false);
}

void kvt_loop_read(struct kvt_loop *l, int fd, void *buf, size_t len,
		   uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		io_uring_prep_read(sqe, fd, buf, (unsigned)len, 0);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	ep_submit(l, fd, &(struct ep_op){ .kind = OPK_READ, .ud = ud,
					  .buf = buf, .len = len }, true);
}

void kvt_loop_timeout(struct kvt_loop *l, unsigned ms, uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		l->tick.tv_sec = ms / 1000;
		l->tick.tv_nsec = (long long)(ms % 1000) * 1000000;
		io_uring_prep_timeout(sqe, &l->tick, 0, 0);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	l->timer_armed = true;
	l->timer_ud = ud;
	l->timer_deadline_ns = kvt_clock_ns() + (uint64_t)ms * 1000000ull;
}

void kvt_loop_cancel(struct kvt_loop *l, uint64_t target, uint64_t ud)
{
	if (l->backend == KVT_IO_URING) {
		struct io_uring_sqe *sqe = get_sqe(l);

		io_uring_prep_cancel64(sqe, target, 0);
		io_uring_sqe_set_data64(sqe, ud);
		return;
	}
	if (l->timer_armed && l->timer_ud == target) {
		l->timer_armed = false;
		ep_complete_later(l, target, -ECANCELED, 0);
		ep_complete_later(l, ud, 0, 0);
		return;
	}
	for (size_t fd = 0; fd < l->nslots; fd++) {
		struct ep_slot *s = &l->slots[fd];
		struct ep_op *op = s->in.kind && s->in.ud == target ? &s->in :
				   s->out.kind && s->out.ud == target ? &s->out :
				   NULL;

		if (!op)
			continue;
		op->kind = OPK_NONE;
		ep_mark_dirty(l, (int)fd);
		ep_complete_later(l, target, -ECANCELED, 0);
		ep_complete_later(l, ud, 0, 0);
		return;
	}
	ep_complete_later(l, ud, -ENOENT, 0);
}

void kvt_loop_close_fd(struct kvt_loop *l, int fd)
{
	if (l->backend == KVT_IO_EPOLL && fd >= 0 && (size_t)fd < l->nslots) {
		struct ep_slot *s = &l->slots[fd];

		/* Closing removes it from epoll; the slot starts afresh. */
		s->in.kind = s->out.kind = OPK_NONE;
		s->mask = 0;
		s->nonblock = false;
		s->fresh = false;
		s->gen++;
	}
	close(fd);
}

int kvt_loop_run_once(struct kvt_loop *l, int timeout_ms, kvt_loop_fn fn,
		      void *arg)
{
	if (l->backend == KVT_IO_URING)
		return uring_run_once(l, timeout_ms, fn, arg);
	return ep_run_once(l, timeout_ms, fn, arg);
}
