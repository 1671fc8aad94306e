/*
 * kvt_conn.c - one client connection: receive, decode, backpressure, the
 * reply queue and send (see kvt_conn.h).
 *
 * A connection is freed only when it is closing and nothing refers to it
 * any more: inflight counts its operations on the loop and its unfinished
 * replies (a GET waiting for an L3 read holds its reply slot), so a reply
 * finished after the client left never touches freed memory.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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

static void conn_free_if_done(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;

	if (!c->closing || c->inflight > 0)
		return;
	/* What the handlers keep for c (pins, leases) goes with it. */
	x->ops->close(c);
	size_t freed = c->body_reserved;
	x->inflight_bytes -= freed;
	c->body_reserved = 0;
	if (c->mem_wait)
		for (struct kvt_conn **p = &x->mem_waiters; *p; p = &(*p)->mem_next)
			if (*p == c) {
				*p = c->mem_next;
				break;
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
	/* A client that died mid-body leaves its memory to the waiters. */
	if (freed && x->mem_waiters)
		wake_mem_waiters(x);
	kvt_log(KVT_LOG_DEBUG, "event=disconnect conn=%llu conns=%u",
		(unsigned long long)c->id, x->nconns);
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
		/* Large values go straight from the socket into the body. */
		p = kvt_decoder_body_tail(&c->dec, &room);
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
	}
	kvt_loop_recv(x->loop, c->fd, p, room, kvt_ud(c, KVT_UD_RECV));
	c->recv_armed = true;
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
			(unsigned long long)c->ctx->lim.max_body);
	else if (err == KVT_EVERSION)
		kvt_reply_error(c, r, err, "protocol version %u not supported "
			"(daemon speaks %u)", h->version, KVT_PROTO_VERSION);
	else
		kvt_reply_error(c, r, err, "malformed frame: %s",
				kvt_strerror(err));
}

/*
 * Room for the body of the frame c's decoder just announced, under
 * max_inflight (a body bigger than the whole budget is let through alone
 * rather than never).  Bodies up to KVT_RBUF_SIZE (requests other than
 * values: HELLO, GET, MATCH...) are not held back, so that control
 * traffic, stats included, goes on while values wait.  Returns false if
 * c must wait.
 */
static bool alloc_body(struct kvt_conn *c)
{
	struct kvt_conn_ctx *x = c->ctx;
	size_t len = kvt_decoder_header(&c->dec)->body_len;

	if (len > KVT_RBUF_SIZE && x->inflight_bytes &&
	    x->inflight_bytes + len > x->cfg->max_inflight) {
		if (!c->mem_wait) {
			c->mem_wait = true;
			c->mem_next = x->mem_waiters;
			x->mem_waiters = c;
		}
		if (!c->mem_counted) {
			c->mem_counted = true;
			x->st.mem_waits++;
		}
		return false;
	}
	c->mem_counted = false;
	/*
	 * A PUT body becomes the stored block (kvt_request.c), so it comes
	 * from block memory: in the shared arena, a client can later be
	 * leased it without a copy.
	 */
	c->body = kvt_decoder_header(&c->dec)->opcode == KVT_OP_PUT ?
			  kvt_block_alloc(len) : malloc(len);
	if (!c->body) {
		kvt_log(KVT_LOG_ERROR, "event=oom conn=%llu bytes=%zu",
			(unsigned long long)c->id, len);
		return false;
	}
	c->body_reserved = len;
	x->inflight_bytes += len;
	kvt_decoder_set_body(&c->dec, c->body, len);
	return true;
}

/* Memory was freed: let waiting connections try again. */
static void wake_mem_waiters(struct kvt_conn_ctx *x)
{
	struct kvt_conn *c = x->mem_waiters;

	x->mem_waiters = NULL;
	while (c) {
		struct kvt_conn *next = c->mem_next;

		c->mem_wait = false;
		c->mem_next = NULL;
		if (!c->closing && alloc_body(c)) {
			process_input(c);
			if (!c->closing)
				arm_recv(c);
		}
		c = next;
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

	c->body = NULL;
	/* The body is whole: it no longer counts as being received. */
	size_t freed = c->body_reserved;
	x->inflight_bytes -= freed;
	c->body_reserved = 0;
	if (freed && x->mem_waiters)
		wake_mem_waiters(x);
	if ((h.opcode == KVT_OP_PUT || h.opcode == KVT_OP_PUT_COMMIT) &&
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
		int ev = kvt_decoder_feed(&c->dec, c->rbuf + c->roff,
					  c->rlen - c->roff, &used);
		c->roff += used;
		if (ev < 0) {
			protocol_error(c, ev);
			return;
		}
		if (ev == KVT_DEC_HEADER) {
			if (!alloc_body(c)) {
				if (c->mem_wait)
					return; /* resumed by wake_mem_waiters */
				protocol_error(c, -ENOMEM);
				return;
			}
		} else if (ev == KVT_DEC_FRAME) {
			complete_frame(c);
		}
	}
	if (c->roff == c->rlen)
		c->roff = c->rlen = 0;
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
	if (direct) {
		size_t room;

		KVT_IO_DEFINED(kvt_decoder_body_tail(&c->dec, &room),
			       (size_t)res);
		if (kvt_decoder_body_advance(&c->dec, (size_t)res) ==
		    KVT_DEC_FRAME)
			complete_frame(c);
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

uint64_t kvt_conn_send_stall_ns(struct kvt_conn *c, uint64_t now)
{
	if (!c->send_armed)
		return 0;
	if (!c->send_stall_ns)
		c->send_stall_ns = now;
	return now - c->send_stall_ns;
}
