/*
 * kvt_conn.c - one client connection: receive, decode, backpressure, the
 * reply queue and send (see kvt_conn.h).
 *
 * A connection is freed only when it is closing and nothing refers to it
 * any more: inflight counts its operations on the loop and its unfinished
 * replies (a GET waiting for an L3 read holds its reply slot), so a reply
 * finished after the client left never touches freed memory.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvt_clock.h"
#include "kvt_conn.h"
#include "kvt_log.h"
#include "kvt_mem.h"
#include "kvt_valgrind.h"

/* One reply waiting to be sent.  Holds a reference on a value it sends. */
struct kvt_reply {
	struct kvt_reply *next;
	bool ready;
	uint8_t opcode;
	uint64_t request_id;
	uint64_t t0_ns; /* when the request was decoded, for latency */
	uint8_t hdr[KVT_HDR_SIZE]; /* encoded when the reply is finished */
	const uint8_t *data; /* body: into owned or ref */
	size_t len;
	uint8_t *owned; /* malloc'd body, freed with the reply */
	struct kvt_ref *ref; /* value reference, released with the reply */
	size_t sent;	     /* bytes of hdr + body already sent */
	/* Attach pass_fd (SCM_RIGHTS) to the send that starts this reply:
	 * a HELLO that granted shared memory (kvt_reply_pass_fd). */
	bool pass;
	int pass_fd;
};

static void reply_free(struct kvt_reply *r)
{
	free(r->owned);
	kvt_ref_release(r->ref);
	free(r);
}

static void wake_mem_waiters(struct kvt_conn_ctx *x);
static void process_input(struct kvt_conn *c);
static bool body_release(struct kvt_conn *c);

static void conn_free_if_done(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;

	if (!c->closing || c->inflight > 0)
		return;
	/* What the handlers keep for c (pins, leases) goes with it. */
	x->ops->close(c);
	bool wake = body_release(c);
	if (c->mem_wait) {
		struct kvt_conn *prev = NULL;

		for (struct kvt_conn *w = x->mem_waiters; w; prev = w, w = w->mem_next)
			if (w == c) {
				if (prev)
					prev->mem_next = c->mem_next;
				else
					x->mem_waiters = c->mem_next;
				if (x->mem_waiters_tail == c)
					x->mem_waiters_tail = prev;
				break;
			}
	}
	if (c->parked) {
		for (struct kvt_conn **p = &x->parked; *p; p = &(*p)->park_next)
			if (*p == c) {
				*p = c->park_next;
				break;
			}
		kvt_block_free(c->held_body);
	}
	while (c->out_head) {
		struct kvt_reply *r = c->out_head;
		c->out_head = r->next;
		reply_free(r);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		x->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	kvt_loop_close_fd(x->loop, c->fd);
	x->nconns--;
	/*
	 * A client that died mid-body leaves its memory to the waiters (and,
	 * if its body was the oldest, the right to grow to the next one).
	 */
	if (wake && x->mem_waiters)
		wake_mem_waiters(x);
	kvt_log(KVT_LOG_DEBUG, "event=disconnect conn=%llu conns=%u",
		(unsigned long long)c->id, x->nconns);
	for (unsigned i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	kvt_block_free(c->body);
	free(c->rbuf);
	free(c);
}

/*
 * Stops reading from c and lets it be freed once its in-flight operations
 * complete.  shutdown() makes an armed recv complete at once.
 */
void kvt_conn_close(struct kvt_conn *c)
{
	if (!c->closing) {
		c->closing = true;
		shutdown(c->fd, SHUT_RDWR);
	}
	conn_free_if_done(c);
}

void kvt_conn_end(struct kvt_conn *c)
{
	c->close_after = true;
	if (!c->out_head)
		kvt_conn_close(c);
}

void kvt_conn_stop(struct kvt_conn *c)
{
	c->close_after = true;
	/* Wakes an armed recv with EOF; queued replies still go out. */
	shutdown(c->fd, SHUT_RD);
	if (!c->out_head)
		kvt_conn_close(c);
}

static void arm_recv(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;
	uint8_t *p;
	size_t room;

	if (c->recv_armed || c->parked || c->mem_wait || c->closing ||
	    c->close_after || x->stopping)
		return;
	if (c->out_bytes > KVT_OUT_HIGH_WATER || c->pending >= KVT_PENDING_MAX)
		return; /* resumed by on_send once the client reads */
	c->recv_direct = c->body && c->roff == c->rlen;
	if (c->recv_direct) {
		/*
		 * Large values go straight from the socket into the body, as
		 * far as it is reserved (body_room() made room before this).
		 */
		assert(c->body_have < c->body_cap);
		p = c->body + c->body_have;
		room = c->body_cap - c->body_have;
		c->roff = c->rlen = 0;
	} else {
		if (c->roff == c->rlen) {
			c->roff = c->rlen = 0;
		} else if (c->rlen == KVT_RBUF_SIZE) {
			memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
			c->rlen -= c->roff;
			c->roff = 0;
		}
		p = c->rbuf + c->rlen;
		room = KVT_RBUF_SIZE - c->rlen;
		/*
		 * After a large body, expect another: read little more than
		 * its header into rbuf, so that the value itself goes
		 * straight into the body instead of being copied there.
		 */
		if (c->last_big && c->rlen == 0)
			room = KVT_HDR_SIZE + KVT_HEAD_READ;
	}
	/*
	 * recvmsg, not recv: a REGISTER's descriptor (SCM_RIGHTS) arrives
	 * with its bytes, and a plain recv would silently drop it.
	 */
	c->riov.iov_base = p;
	c->riov.iov_len = room;
	memset(&c->rmsg, 0, sizeof(c->rmsg));
	c->rmsg.msg_iov = &c->riov;
	c->rmsg.msg_iovlen = 1;
	c->rmsg.msg_control = c->rcmsg.buf;
	c->rmsg.msg_controllen = sizeof(c->rcmsg.buf);
	kvt_loop_recvmsg(x->loop, c->fd, &c->rmsg, MSG_CMSG_CLOEXEC,
			 kvt_ud(c, KVT_UD_RECV));
	c->recv_armed = true;
	c->recv_armed_ns = kvt_clock_ns();
	c->inflight++;
}

int kvt_conn_open(struct kvt_conn **out, struct kvt_conn_ctx *x, int fd,
		  uid_t uid, gid_t gid)
{
	struct kvt_conn *c = calloc(1, sizeof(*c));
	int rc;

	if (c)
		c->rbuf = malloc(KVT_RBUF_SIZE);
	if (!c || !c->rbuf) {
		free(c);
		return -ENOMEM;
	}
	c->ctx = x;
	c->fd = fd;
	c->last_active_ns = kvt_clock_ns();
	c->uid = uid;
	c->gid = gid;
	rc = x->ops->open(c);
	if (rc) {
		x->ops->close(c);
		free(c->rbuf);
		free(c);
		return rc;
	}
	c->id = ++x->next_conn_id;
	kvt_decoder_init(&c->dec, &x->lim);
	c->next = x->conns;
	if (x->conns)
		x->conns->prev = c;
	x->conns = c;
	x->nconns++;
	x->st.connections_total++;
	kvt_log(KVT_LOG_DEBUG, "event=connect conn=%llu conns=%u",
		(unsigned long long)c->id, x->nconns);
	arm_recv(c);
	*out = c;
	return 0;
}

/* ---- reply queue and send -------------------------------------------- */

/*
 * Puts the reply's descriptor on c's next sendmsg (SCM_RIGHTS): it reaches
 * the client with the first bytes of the reply at the head of the queue.
 */
static void attach_fd(struct kvt_conn *c)
{
	int fd = c->out_head->pass_fd;
	struct cmsghdr *cm;

	c->out_head->pass = false;
	memset(&c->cmsg, 0, sizeof(c->cmsg)); /* padding goes to the kernel */
	c->msg.msg_control = c->cmsg.buf;
	c->msg.msg_controllen = sizeof(c->cmsg.buf);
	cm = CMSG_FIRSTHDR(&c->msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(fd));
}

static void flush(struct kvt_conn *c)
{
	int n = 0;

	if (c->send_armed)
		return;
	for (struct kvt_reply *r = c->out_head;
	     r && r->ready && n < KVT_SEND_IOV - 1; r = r->next) {
		if (r->sent < KVT_HDR_SIZE) {
			c->iov[n].iov_base = r->hdr + r->sent;
			c->iov[n].iov_len = KVT_HDR_SIZE - r->sent;
			n++;
		}
		size_t off = r->sent > KVT_HDR_SIZE ? r->sent - KVT_HDR_SIZE : 0;
		if (r->len > off) {
			c->iov[n].iov_base = (void *)(r->data + off);
			c->iov[n].iov_len = r->len - off;
			n++;
		}
	}
	if (n == 0) {
		if (!c->out_head && c->close_after)
			kvt_conn_close(c);
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = (size_t)n;
	if (c->out_head->pass && c->out_head->sent == 0)
		attach_fd(c);
	kvt_loop_sendmsg(c->ctx->loop, c->fd, &c->msg, MSG_NOSIGNAL,
			 kvt_ud(c, KVT_UD_SEND));
	c->send_armed = true;
	c->inflight++;
}

struct kvt_reply *kvt_reply_reserve(struct kvt_conn *c, uint64_t request_id,
				    uint8_t opcode)
{
	struct kvt_reply *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->opcode = opcode;
	r->request_id = request_id;
	r->t0_ns = kvt_clock_ns();
	if (c->out_tail)
		c->out_tail->next = r;
	else
		c->out_head = r;
	c->out_tail = r;
	c->inflight++; /* until finished: keeps c alive for async replies */
	c->pending++;
	return r;
}

void kvt_reply_finish(struct kvt_conn *c, struct kvt_reply *r, int status,
		      uint16_t flags, uint8_t *owned, size_t len,
		      struct kvt_ref *ref)
{
	struct kvt_frame_header h = {
		.version = KVT_PROTO_VERSION,
		.opcode = r->opcode,
		.flags = (uint16_t)(KVT_FLAG_REPLY | flags),
		.request_id = r->request_id,
		.status = (uint32_t)(status < 0 ? -status : status),
		.body_len = (uint32_t)len,
	};

	kvt_frame_header_encode(r->hdr, &h);
	kvt_hist_add(&c->ctx->lat[r->opcode < KVT_LAT_OPS ? r->opcode
							  : KVT_LAT_OPS - 1],
		     (kvt_clock_ns() - r->t0_ns) / 1000);
	r->owned = owned;
	r->ref = ref;
	r->data = ref ? kvt_ref_data(ref) : owned;
	r->len = len;
	r->ready = true;
	c->out_bytes += KVT_HDR_SIZE + len;
	c->inflight--;
	c->pending--;
	if (c->closing) {
		conn_free_if_done(c);
		return;
	}
	flush(c);
}

void kvt_reply_error(struct kvt_conn *c, struct kvt_reply *r, int status,
		     const char *fmt, ...)
{
	char msg[KVT_ERRMSG_MAX];
	uint8_t *owned;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = (int)sizeof(msg) - 1;
	owned = malloc((size_t)n + 1);
	if (!owned)
		n = 0;
	else
		memcpy(owned, msg, (size_t)n);
	kvt_reply_finish(c, r, status, 0, owned, (size_t)n, NULL);
}

bool kvt_reply_pass_fd(struct kvt_conn *c, struct kvt_reply *r, int fd)
{
	/* Clients send HELLO first and wait, so this holds for them. */
	if (c->out_head != r)
		return false;
	r->pass = true;
	r->pass_fd = fd;
	return true;
}

bool kvt_conn_ns_allowed(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *ns, size_t ns_len)
{
	if (kvt_access_ns_ok(&c->ctx->acc, c->uid, ns, ns_len))
		return true;
	c->ctx->st.requests_denied++;
	kvt_log(KVT_LOG_WARN, "event=namespace_denied conn=%llu uid=%u "
		"ns=\"%.*s\"", (unsigned long long)c->id, (unsigned)c->uid,
		(int)(ns_len > 64 ? 64 : ns_len), (const char *)ns);
	kvt_reply_error(c, r, KVT_EDENIED, "namespace '%.*s' belongs to "
			"another user", (int)(ns_len > 64 ? 64 : ns_len),
			(const char *)ns);
	return false;
}

/* ---- receive, decode, backpressure ----------------------------------- */

/*
 * A frame broke the protocol: answer with the reason, then close, because
 * after a bad header the byte stream cannot be resynchronised.
 */
static void protocol_error(struct kvt_conn *c, int err)
{
	const struct kvt_frame_header *h = kvt_decoder_header(&c->dec);
	uint64_t rid = err == KVT_EPROTO ? 0 : h->request_id;
	uint8_t op = err == KVT_EPROTO ? 0 : h->opcode;
	struct kvt_reply *r;

	c->ctx->st.protocol_errors++;
	kvt_log(KVT_LOG_WARN, "event=protocol_error conn=%llu error=\"%s\"",
		(unsigned long long)c->id, kvt_strerror(err));
	c->close_after = true;
	r = kvt_reply_reserve(c, rid, op);
	if (!r) {
		kvt_conn_close(c);
		return;
	}
	if (err == KVT_ETOOBIG)
		kvt_reply_error(c, r, err, "frame body of %u bytes exceeds the "
			"limit of %llu bytes", h->body_len,
			(unsigned long long)c->dec.lim.max_body);
	else if (err == KVT_EVERSION)
		kvt_reply_error(c, r, err, "protocol version %u not supported "
			"(daemon speaks %u)", h->version, KVT_PROTO_VERSION);
	else
		kvt_reply_error(c, r, err, "malformed frame: %s",
				kvt_strerror(err));
}

/* ---- bodies: reserved and allocated as they arrive -------------------- */

/*
 * Takes c's body out of ctx's accounting (not its memory).  Returns true
 * if that may let a waiting body go on: it gave back a reservation, or
 * the oldest body, which may always grow, is another one now.
 */
static bool body_release(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;
	bool wake = c->body_reserved > 0;

	x->inflight_bytes -= c->body_reserved;
	c->body_reserved = 0;
	if (c->body_arena) {
		x->body_arena_bytes -= c->body_len;
		c->body_arena = false;
	}
	if (c->body_counted) {
		if (c->body_prev)
			c->body_prev->body_next = c->body_next;
		else
			x->bodies = c->body_next;
		if (c->body_next)
			c->body_next->body_prev = c->body_prev;
		else
			x->bodies_tail = c->body_prev;
		c->body_prev = c->body_next = NULL;
		c->body_counted = false;
		wake = true;
	}
	return wake;
}

static void mem_wait_on(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;

	if (!c->mem_wait) {
		c->mem_wait = true;
		c->mem_next = NULL;
		if (x->mem_waiters_tail)
			x->mem_waiters_tail->mem_next = c;
		else
			x->mem_waiters = c;
		x->mem_waiters_tail = c;
	}
	if (!c->mem_counted) {
		c->mem_counted = true;
		x->st.mem_waits++;
	}
}

/*
 * First memory for c's counted body, want (> 0) bytes of it reserved.  A
 * PUT body becomes the stored block (kvt_request.c), so it comes from
 * block memory: in the shared arena, a client can later be leased it
 * without a copy.  An arena block is the whole body at once, so bodies in
 * progress may hold at most a quarter of the arena; past that, where the
 * arena has no room, and for other requests, the body is malloc memory:
 * the whole body if want is all of it, else want bytes grown with the
 * reservation (kvt_block_free() takes malloc memory too).
 */
static int body_first_alloc(struct kvt_conn *c, size_t want)
{
	struct kvt_conn_ctx *x = c->ctx;
	struct kvt_arena *a = kvt_mem_arena();
	size_t len = c->body_len;
	bool put = kvt_decoder_header(&c->dec)->opcode == KVT_OP_PUT;
	uint8_t *p = NULL;

	if (put && a && x->body_arena_bytes + len <= kvt_arena_size(a) / 4) {
		p = kvt_block_alloc(len);
		if (p && kvt_block_shared(p)) {
			c->body_arena = true;
			x->body_arena_bytes += len;
		} else if (want < len) {
			kvt_block_free(p);
			p = NULL;
		}
	}
	if (!p)
		p = malloc(want);
	if (!p)
		return -ENOMEM;
	c->body = p;
	c->body_grows = !c->body_arena && want < len;
	return 0;
}

/*
 * Makes room for more of c's body, which holds body_cap bytes and is full
 * (or has no memory yet): reserves up to twice as much, at least
 * KVT_BODY_STEP more, at most the body, under max_inflight; the oldest
 * body in progress may always grow.  Returns 1 when there is room, 0 when
 * c waits for memory (queued in mem_waiters), or -ENOMEM.
 */
static int body_room(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;
	size_t len = c->body_len;
	size_t step = c->body_cap > KVT_BODY_STEP ? c->body_cap : KVT_BODY_STEP;
	size_t want = len - c->body_cap > step ? c->body_cap + step : len;
	size_t more = want - c->body_reserved;

	assert(c->body_counted && c->body_have == c->body_cap && want > c->body_cap);
	if (x->inflight_bytes + more > x->cfg->max_inflight && x->bodies != c) {
		mem_wait_on(c);
		return 0;
	}
	if (!c->body) {
		if (body_first_alloc(c, want))
			return -ENOMEM;
	} else if (c->body_grows) {
		uint8_t *p = realloc(c->body, want);

		if (!p)
			return -ENOMEM;
		c->body = p;
	}
	c->body_reserved += more;
	x->inflight_bytes += more;
	c->body_cap = want;
	return 1;
}

/*
 * The decoder just announced a frame with a body: sets up receiving it.
 * Bodies up to KVT_RBUF_SIZE (requests other than values: HELLO, GET,
 * MATCH...) are allocated whole and never held back, so that control
 * traffic, stats included, goes on while values wait; larger ones are
 * reserved as they arrive (kvt_conn.h).  Returns as body_room().
 */
static int body_begin(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;
	const struct kvt_frame_header *h = kvt_decoder_header(&c->dec);
	size_t len = h->body_len;

	c->body_len = len;
	c->last_big = len >= KVT_DIRECT_MIN;
	c->body_have = c->body_cap = 0;
	c->mem_counted = false;
	if (len <= KVT_RBUF_SIZE) {
		c->body = h->opcode == KVT_OP_PUT ? kvt_block_alloc(len)
						  : malloc(len);
		if (!c->body)
			return -ENOMEM;
		c->body_cap = len;
		return 1;
	}
	c->body_counted = true;
	c->body_prev = x->bodies_tail;
	if (x->bodies_tail)
		x->bodies_tail->body_next = c;
	else
		x->bodies = c;
	x->bodies_tail = c;
	return body_room(c);
}

static void complete_frame(struct kvt_conn *c);

/*
 * Body bytes arrived: hands a whole body on with its frame, or makes room
 * for more once the reserved part is full (which may make c wait).
 */
static void body_progress(struct kvt_conn *c)
{
	int rc;

	if (c->body_have == c->body_len) {
		/* The decoder has waited since KVT_DEC_HEADER: give it all. */
		int ev = kvt_decoder_set_body(&c->dec, c->body, c->body_len);

		if (ev == 0)
			ev = kvt_decoder_body_advance(&c->dec, c->body_len);
		assert(ev == KVT_DEC_FRAME);
		(void)ev;
		complete_frame(c);
		return;
	}
	if (c->body_have < c->body_cap)
		return;
	rc = body_room(c);
	if (rc < 0) {
		kvt_log(KVT_LOG_ERROR, "event=oom conn=%llu bytes=%zu",
			(unsigned long long)c->id, c->body_len);
		protocol_error(c, -ENOMEM);
	}
}

/*
 * Memory was freed: each connection waiting now tries again once, in the
 * order they began to wait; one that must wait again goes to the back.
 * They are taken off the shared list one at a time, so a connection that
 * goes away meanwhile (its reply finished from another's processing) is
 * simply no longer there, and a nested call (a waiter's frame completing
 * frees memory too) only serves some of them earlier.
 */
static void wake_mem_waiters(struct kvt_conn_ctx *x)
{
	size_t n = 0;

	for (struct kvt_conn *c = x->mem_waiters; c; c = c->mem_next)
		n++;
	while (n-- > 0 && x->mem_waiters) {
		struct kvt_conn *c = x->mem_waiters;
		int rc;

		x->mem_waiters = c->mem_next;
		if (!x->mem_waiters)
			x->mem_waiters_tail = NULL;
		c->mem_wait = false;
		c->mem_next = NULL;
		if (c->closing)
			continue;
		rc = body_room(c);
		if (rc < 0)
			protocol_error(c, -ENOMEM);
		if (rc > 0)
			process_input(c);
		if (!c->closing)
			arm_recv(c);
	}
}

/*
 * Backpressure.  When blocks leave L1 faster than the worker can compress
 * or write them, a PUT is held (the connection stops reading) until the
 * tiers catch up, instead of dropping what it would evict.  Other clients'
 * reads go on meanwhile.
 */
static void complete_frame(struct kvt_conn *c)
{
	struct kvt_frame_header h = *kvt_decoder_header(&c->dec);
	uint8_t *body = c->body;
	struct kvt_conn_ctx *x = c->ctx;

	/* The body is whole: it no longer counts as being received. */
	bool wake = body_release(c);
	c->body = NULL;
	c->body_len = c->body_have = c->body_cap = 0;
	c->body_grows = false;
	if (wake && x->mem_waiters)
		wake_mem_waiters(x);
	if ((h.opcode == KVT_OP_PUT || h.opcode == KVT_OP_PUT_COMMIT ||
	     h.opcode == KVT_OP_MPUT_FROM) &&
	    kvt_tm_busy(x->tm)) {
		c->parked = true;
		c->held = h;
		c->held_body = body;
		c->park_next = x->parked;
		x->parked = c;
		x->st.puts_held++;
		return;
	}
	x->st.requests++;
	x->ops->request(c, &h, body);
}

void kvt_conn_mem_changed(struct kvt_conn_ctx *x)
{
	if (x->mem_waiters)
		wake_mem_waiters(x);
}

void kvt_conn_unpark(struct kvt_conn_ctx *x)
{
	while (x->parked && !kvt_tm_busy(x->tm)) {
		struct kvt_conn *c = x->parked;

		x->parked = c->park_next;
		c->park_next = NULL;
		c->parked = false;
		x->st.requests++;
		x->ops->request(c, &c->held, c->held_body);
		c->held_body = NULL;
		if (c->closing) {
			conn_free_if_done(c);
			continue;
		}
		process_input(c);
		if (!c->closing)
			arm_recv(c);
	}
}

/* Decodes every complete frame in the read buffer. */
static void process_input(struct kvt_conn *c)
{
	while (!c->closing && !c->close_after && !c->parked && !c->mem_wait &&
	       c->roff < c->rlen && c->out_bytes <= KVT_OUT_HIGH_WATER &&
	       c->pending < KVT_PENDING_MAX) {
		size_t used = 0;
		int ev;

		if (c->body) {
			/* Body bytes that came with the header, or after it. */
			size_t take = c->body_cap - c->body_have;

			if (take > c->rlen - c->roff)
				take = c->rlen - c->roff;
			memcpy(c->body + c->body_have, c->rbuf + c->roff, take);
			c->body_have += take;
			c->roff += take;
			body_progress(c);
			continue;
		}
		ev = kvt_decoder_feed(&c->dec, c->rbuf + c->roff,
				      c->rlen - c->roff, &used);
		c->roff += used;
		if (ev < 0) {
			protocol_error(c, ev);
			return;
		}
		if (ev == KVT_DEC_MORE) {
			c->hdr_have += used; /* a header cut short, so far */
			continue;
		}
		c->hdr_have = 0;
		if (ev == KVT_DEC_HEADER) {
			int rc = body_begin(c);

			if (rc < 0) {
				kvt_log(KVT_LOG_ERROR, "event=oom conn=%llu "
					"bytes=%zu", (unsigned long long)c->id,
					c->body_len);
				protocol_error(c, -ENOMEM);
				return;
			}
			/* rc 0: c waits, resumed by wake_mem_waiters */
		} else if (ev == KVT_DEC_FRAME) {
			c->last_big = false; /* a frame with no body */
			complete_frame(c);
		}
	}
	if (c->roff == c->rlen)
		c->roff = c->rlen = 0;
}

/*
 * Queues the descriptors that came with the bytes just received.  Returns
 * false if that breaks the protocol (more than KVT_CONN_FDS_MAX waiting,
 * or some lost to a full control buffer): every one is then closed.
 */
static bool take_rights(struct kvt_conn *c)
{
	bool ok = !(c->rmsg.msg_flags & MSG_CTRUNC);

	if (c->rmsg.msg_controllen == 0)
		return ok;
	KVT_IO_DEFINED(c->rcmsg.buf, c->rmsg.msg_controllen);
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&c->rmsg); cm;
	     cm = CMSG_NXTHDR(&c->rmsg, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET ||
		    cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			       sizeof(fd));
			if (c->nfds < KVT_CONN_FDS_MAX)
				c->fds[c->nfds++] = fd;
			else {
				close(fd);
				ok = false;
			}
		}
	}
	if (!ok) {
		for (unsigned i = 0; i < c->nfds; i++)
			close(c->fds[i]);
		c->nfds = 0;
	}
	return ok;
}

int kvt_conn_take_fd(struct kvt_conn *c)
{
	int fd;

	if (c->nfds == 0)
		return -1;
	fd = c->fds[0];
	memmove(c->fds, c->fds + 1, (c->nfds - 1) * sizeof(c->fds[0]));
	c->nfds--;
	return fd;
}

static void on_recv(struct kvt_conn *c, int res)
{
	bool direct = c->recv_direct;

	c->recv_armed = false;
	c->recv_direct = false;
	c->inflight--;
	if (res <= 0 || c->closing) {
		if (res < 0 && res != -ECONNRESET && !c->closing)
			kvt_log(KVT_LOG_DEBUG, "event=recv_error conn=%llu "
				"error=\"%s\"", (unsigned long long)c->id,
				strerror(-res));
		kvt_conn_close(c);
		return;
	}
	c->ctx->st.bytes_in += (uint64_t)res;
	c->last_active_ns = kvt_clock_ns();
	if (!take_rights(c)) {
		/*
		 * Descriptors were lost or too many sent: the REGISTERs they
		 * went with can no longer be told apart, so the stream is
		 * done, as after a bad header.
		 */
		c->ctx->st.protocol_errors++;
		kvt_log(KVT_LOG_WARN, "event=protocol_error conn=%llu "
			"error=\"more than %d descriptors passed, or some "
			"lost\"", (unsigned long long)c->id, KVT_CONN_FDS_MAX);
		c->close_after = true;
		struct kvt_reply *r = kvt_reply_reserve(c, 0, 0);
		if (r)
			kvt_reply_error(c, r, KVT_EPROTO, "more than %d file "
					"descriptors passed and not used by a "
					"REGISTER", KVT_CONN_FDS_MAX);
		else
			kvt_conn_close(c);
		return;
	}
	if (direct) {
		KVT_IO_DEFINED(c->body + c->body_have, (size_t)res);
		c->body_have += (size_t)res;
		body_progress(c);
	} else {
		KVT_IO_DEFINED(c->rbuf + c->rlen, (size_t)res);
		c->rlen += (size_t)res;
	}
	process_input(c);
	if (!c->closing)
		arm_recv(c);
}

static void on_send(struct kvt_conn *c, int res)
{
	size_t n;

	c->send_armed = false;
	c->inflight--;
	if (res < 0) {
		if (res != -EPIPE && res != -ECONNRESET)
			kvt_log(KVT_LOG_DEBUG, "event=send_error conn=%llu "
				"error=\"%s\"", (unsigned long long)c->id,
				strerror(-res));
		kvt_conn_close(c);
		return;
	}
	c->ctx->st.bytes_out += (uint64_t)res;
	c->last_active_ns = kvt_clock_ns();
	c->send_stall_ns = 0;
	n = (size_t)res;
	c->out_bytes -= n;
	while (n > 0 && c->out_head) {
		struct kvt_reply *r = c->out_head;
		size_t total = KVT_HDR_SIZE + r->len;
		size_t take = total - r->sent < n ? total - r->sent : n;

		r->sent += take;
		n -= take;
		if (r->sent == total) {
			c->out_head = r->next;
			if (!c->out_head)
				c->out_tail = NULL;
			reply_free(r);
		}
	}
	if (c->closing) {
		conn_free_if_done(c);
		return;
	}
	/* The client is reading again: resume requests parked by backpressure. */
	if (c->out_bytes <= KVT_OUT_HIGH_WATER) {
		process_input(c);
		if (!c->closing)
			arm_recv(c);
	}
	if (!c->closing)
		flush(c);
}

void kvt_conn_complete(struct kvt_conn *c, unsigned kind, int res)
{
	if (kind == KVT_UD_RECV)
		on_recv(c, res);
	else
		on_send(c, res);
}

/* ---- for the server's timer ------------------------------------------ */

bool kvt_conn_idle(const struct kvt_conn *c)
{
	return !c->closing && !c->out_head && !c->body && !c->parked &&
	       !c->mem_wait && !c->ctx->ops->holds(c) && c->inflight <= 1;
}

uint64_t kvt_conn_rx_stall_ns(const struct kvt_conn *c, uint64_t now,
			      bool *header, size_t *have, size_t *want)
{
	*header = c->body_len == 0;
	*have = c->body_len ? c->body_have : c->hdr_have;
	*want = c->body_len ? c->body_len : KVT_HDR_SIZE;
	if (c->closing || !c->recv_armed || (!c->body_len && !c->hdr_have))
		return 0;
	return now > c->recv_armed_ns ? now - c->recv_armed_ns : 0;
}

uint64_t kvt_conn_send_stall_ns(struct kvt_conn *c, uint64_t now)
{
	if (!c->send_armed)
		return 0;
	if (!c->send_stall_ns)
		c->send_stall_ns = now;
	return now - c->send_stall_ns;
}
