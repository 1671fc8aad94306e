/*
 * kvt_server.c - the socket side of kvtierd: listening socket, event loop
 * (accept, recv, send, signals), connections and their reply queues.
 *
 * The loop runs on io_uring, or on epoll where io_uring is refused
 * (kvt_loop.h); the handlers here see the same completions either way.
 * Every operation carries its owner and kind in user_data: the owner
 * pointer (a connection, or NULL for the server's own operations) with the
 * kind in the low bits, which are always zero in an aligned pointer.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kvt_clock.h"
#include "kvt_arena.h"
#include "kvt_daemon.h"
#include "kvt_log.h"
#include "kvt_mem.h"
#include "kvt_loop.h"
#include "kvt_notify.h"
#include "kvt_valgrind.h"

enum op_kind {
	OP_ACCEPT = 1,
	OP_SIGNAL = 2,
	OP_RECV = 3,
	OP_SEND = 4,
	OP_CANCEL = 5,
	OP_TM = 6, /* the tier manager's eventfd: worker results waiting */
	OP_TIMER = 7, /* housekeeping, once a second */
};
#define OP_MASK 7u

/* Queue depth: every connection has at most a recv and a send in flight. */
#define RING_ENTRIES 4096
/* How long a graceful stop waits for replies to drain. */
#define STOP_GRACE_NS (5ull * 1000000000ull)

struct stop_state {
	uint64_t tm_counter;
	bool accept_armed;
	bool signal_armed;
	struct signalfd_siginfo si;
	uint64_t stop_deadline;
};
static struct stop_state g_stop;

static uint64_t tag(void *p, enum op_kind k)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)k;
}

/* ---- listening socket ----------------------------------------------- */

/*
 * Is a daemon serving path?  Connecting is not proof: after kill -9 the
 * kernel tears a dead process's io_uring down asynchronously, and until
 * then its listening socket still accepts.  Only an answer to a PING is.
 * Returns 1 live, 0 stale, or -errno when the socket cannot be probed.
 */
static int probe_live(const struct sockaddr_un *sa)
{
	uint8_t frame[KVT_HDR_SIZE];
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_PING,
				      .request_id = 1 };
	struct kvt_limits lim;
	struct pollfd pfd;
	int fd, rc;

	kvt_limits_default(&lim);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		rc = errno;
		close(fd);
		return rc == ECONNREFUSED ? 0 : -rc;
	}
	kvt_frame_header_encode(frame, &h);
	rc = 0;
	if (send(fd, frame, sizeof(frame), MSG_NOSIGNAL) == (ssize_t)sizeof(frame)) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		/* A live daemon's loop never blocks, so 2 s is generous. */
		if (poll(&pfd, 1, 2000) == 1 &&
		    recv(fd, frame, sizeof(frame), MSG_WAITALL) ==
			    (ssize_t)sizeof(frame) &&
		    kvt_frame_header_decode(frame, sizeof(frame), &lim, &h) == 0)
			rc = 1;
	}
	close(fd);
	return rc;
}

/*
 * Binds the Unix socket.  A socket file left by a dead daemon is replaced;
 * one a live daemon answers on is never stolen, and a path that is not a
 * socket is never deleted.
 */
static int listen_unix(const char *path, int backlog, unsigned mode,
		       const struct kvt_access *acc)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		kvt_log(KVT_LOG_ERROR, "event=listen_failed socket=%s "
				       "error=\"path too long\"", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			kvt_log(KVT_LOG_ERROR,
				"event=listen_failed socket=%s error=\"path "
				"exists and is not a socket; refusing to "
				"remove it\"", path);
			return -EEXIST;
		}
		rc = probe_live(&sa);
		if (rc == 1) {
			kvt_log(KVT_LOG_ERROR,
				"event=listen_failed socket=%s error=\"another "
				"kvtierd is already serving this socket\"",
				path);
			return -EADDRINUSE;
		}
		if (rc < 0) {
			kvt_log(KVT_LOG_ERROR,
				"event=listen_failed socket=%s error=\"cannot "
				"probe existing socket: %s\"", path,
				strerror(-rc));
			return rc;
		}
		kvt_log(KVT_LOG_WARN, "event=stale_socket_removed socket=%s",
			path);
		if (unlink(path) && errno != ENOENT)
			return -errno;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Create the file 0600 from the start: no window where others can
	 * connect before a chmod. */
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	/* Group first, then mode: never a moment with the wrong group. */
	if (!rc && acc->has_group && chown(path, (uid_t)-1, acc->socket_gid))
		rc = -1;
	if (!rc && chmod(path, mode))
		rc = -1;
	if (rc || listen(fd, backlog)) {
		int err = errno;
		kvt_log(KVT_LOG_ERROR, "event=listen_failed socket=%s error=\"%s\"",
			path, strerror(err));
		close(fd);
		unlink(path);
		return -err;
	}
	return fd;
}

/* ---- connections ---------------------------------------------------- */

static void reply_free(struct kvt_reply *r)
{
	free(r->owned);
	kvt_ref_release(r->ref);
	free(r);
}

static void wake_mem_waiters(struct kvt_server *s);

static void conn_free_if_done(struct kvt_conn *c)
{
	struct kvt_server *s = c->srv;

	if (!c->closing || c->inflight > 0)
		return;
	/* Pins belong to the connection: the kernel told us it is gone. */
	kvt_conn_unpin_all(c);
	/* So do leases and slots: their bytes may be freed or reused now. */
	kvt_lease_drop_all(c);
	size_t freed = c->body_reserved;
	s->inflight_bytes -= freed;
	c->body_reserved = 0;
	if (c->mem_wait)
		for (struct kvt_conn **p = &s->mem_waiters; *p; p = &(*p)->mem_next)
			if (*p == c) {
				*p = c->mem_next;
				break;
			}
	if (c->parked) {
		for (struct kvt_conn **p = &s->parked; *p; p = &(*p)->park_next)
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
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	kvt_loop_close_fd(s->loop, c->fd);
	s->nconns--;
	/* A client that died mid-body leaves its memory to the waiters. */
	if (freed && s->mem_waiters)
		wake_mem_waiters(s);
	kvt_log(KVT_LOG_DEBUG, "event=disconnect conn=%llu conns=%u",
		(unsigned long long)c->id, s->nconns);
	kvt_block_free(c->body);
	free(c->rbuf);
	free(c);
}

/*
 * Stops reading from c and lets it be freed once its in-flight operations
 * complete.  shutdown() makes an armed recv complete at once.
 */
static void conn_close(struct kvt_conn *c)
{
	if (!c->closing) {
		c->closing = true;
		shutdown(c->fd, SHUT_RDWR);
	}
	conn_free_if_done(c);
}

static void arm_recv(struct kvt_conn *c)
{
	struct kvt_server *s = c->srv;
	uint8_t *p;
	size_t room;

	if (c->recv_armed || c->parked || c->mem_wait || c->closing ||
	    c->close_after || s->stopping)
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
	kvt_loop_recv(s->loop, c->fd, p, room, tag(c, OP_RECV));
	c->recv_armed = true;
	c->inflight++;
}

/*
 * Puts the arena's fd on c's next sendmsg (SCM_RIGHTS): it reaches the
 * client with the first bytes of the reply at the head of the queue.
 */
static void attach_arena_fd(struct kvt_conn *c)
{
	int fd = kvt_arena_fd(c->srv->arena);
	struct cmsghdr *cm;

	c->out_head->pass_arena = false;
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
	struct kvt_server *s = c->srv;
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
			conn_close(c);
		return;
	}
	memset(&c->msg, 0, sizeof(c->msg));
	c->msg.msg_iov = c->iov;
	c->msg.msg_iovlen = (size_t)n;
	if (c->out_head->pass_arena && c->out_head->sent == 0)
		attach_arena_fd(c);
	kvt_loop_sendmsg(s->loop, c->fd, &c->msg, MSG_NOSIGNAL, tag(c, OP_SEND));
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
	kvt_hist_add(&c->srv->lat[r->opcode < KVT_LAT_OPS ? r->opcode
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

	c->srv->st.protocol_errors++;
	kvt_log(KVT_LOG_WARN, "event=protocol_error conn=%llu error=\"%s\"",
		(unsigned long long)c->id, kvt_strerror(err));
	c->close_after = true;
	r = kvt_reply_reserve(c, rid, op);
	if (!r) {
		conn_close(c);
		return;
	}
	if (err == KVT_ETOOBIG)
		kvt_reply_error(c, r, err, "frame body of %u bytes exceeds the "
			"limit of %llu bytes", h->body_len,
			(unsigned long long)c->srv->lim.max_body);
	else if (err == KVT_EVERSION)
		kvt_reply_error(c, r, err, "protocol version %u not supported "
			"(daemon speaks %u)", h->version, KVT_PROTO_VERSION);
	else
		kvt_reply_error(c, r, err, "malformed frame: %s",
				kvt_strerror(err));
}

static void process_input(struct kvt_conn *c);

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
	struct kvt_server *s = c->srv;
	size_t len = kvt_decoder_header(&c->dec)->body_len;

	if (len > KVT_RBUF_SIZE && s->inflight_bytes &&
	    s->inflight_bytes + len > s->cfg->max_inflight) {
		if (!c->mem_wait) {
			c->mem_wait = true;
			c->mem_next = s->mem_waiters;
			s->mem_waiters = c;
		}
		if (!c->mem_counted) {
			c->mem_counted = true;
			s->st.mem_waits++;
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
	s->inflight_bytes += len;
	kvt_decoder_set_body(&c->dec, c->body, len);
	return true;
}

/* Memory was freed: let waiting connections try again. */
static void wake_mem_waiters(struct kvt_server *s)
{
	struct kvt_conn *c = s->mem_waiters;

	s->mem_waiters = NULL;
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
	struct kvt_server *s = c->srv;

	c->body = NULL;
	/* The body is whole: it no longer counts as being received. */
	size_t freed = c->body_reserved;
	s->inflight_bytes -= freed;
	c->body_reserved = 0;
	if (freed && s->mem_waiters)
		wake_mem_waiters(s);
	if ((h.opcode == KVT_OP_PUT || h.opcode == KVT_OP_PUT_COMMIT) &&
	    kvt_tm_busy(s->tm)) {
		c->parked = true;
		c->held = h;
		c->held_body = body;
		c->park_next = s->parked;
		s->parked = c;
		s->st.puts_held++;
		return;
	}
	s->st.requests++;
	kvt_request_handle(c, &h, body);
}

static void process_input(struct kvt_conn *c);

/* Resumes held PUTs once the tiers are no longer busy. */
static void unpark_all(struct kvt_server *s)
{
	while (s->parked && !kvt_tm_busy(s->tm)) {
		struct kvt_conn *c = s->parked;

		s->parked = c->park_next;
		c->park_next = NULL;
		c->parked = false;
		s->st.requests++;
		kvt_request_handle(c, &c->held, c->held_body);
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
		conn_close(c);
		return;
	}
	c->srv->st.bytes_in += (uint64_t)res;
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
		conn_close(c);
		return;
	}
	c->srv->st.bytes_out += (uint64_t)res;
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

/*
 * Refuses a new client with a reply it can show (request id 0), then
 * closes.  A fresh socket's buffer always has room, so this never blocks.
 */
static void refuse(int fd, int status, const char *msg)
{
	uint8_t buf[KVT_HDR_SIZE + KVT_ERRMSG_MAX];
	size_t n = strlen(msg) < KVT_ERRMSG_MAX ? strlen(msg) : KVT_ERRMSG_MAX;
	struct kvt_frame_header h = {
		.version = KVT_PROTO_VERSION,
		.opcode = KVT_OP_HELLO,
		.flags = KVT_FLAG_REPLY,
		.status = (uint32_t)-status,
		.body_len = (uint32_t)n,
	};

	kvt_frame_header_encode(buf, &h);
	memcpy(buf + KVT_HDR_SIZE, msg, n);
	if (send(fd, buf, KVT_HDR_SIZE + n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		kvt_log(KVT_LOG_DEBUG, "event=refuse_send_failed");
	close(fd);
}

/* Checks the peer's credentials against the allow-lists. */
static bool peer_allowed(struct kvt_server *s, int fd, struct ucred *cr)
{
	gid_t groups[256];
	socklen_t len = sizeof(*cr), glen = sizeof(groups);
	size_t ng = 0;
	char msg[160];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &len)) {
		kvt_log(KVT_LOG_WARN, "event=peercred_failed error=\"%s\"",
			strerror(errno));
		refuse(fd, KVT_EDENIED, "cannot read peer credentials");
		s->st.connections_denied++;
		return false;
	}
	if (s->acc.nuids == 0 && s->acc.ngids == 0)
		return true;
	/* Supplementary groups too: membership is what admins grant. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
		ng = glen / sizeof(gid_t);
	if (kvt_access_peer_ok(&s->acc, cr->uid, cr->gid, groups, ng))
		return true;
	snprintf(msg, sizeof(msg), "uid %u (gid %u) is not allowed to use "
		 "this kvtierd (see allow-uid/allow-gid)", (unsigned)cr->uid,
		 (unsigned)cr->gid);
	refuse(fd, KVT_EDENIED, msg);
	s->st.connections_denied++;
	kvt_log(KVT_LOG_WARN, "event=connection_denied uid=%u gid=%u pid=%d",
		(unsigned)cr->uid, (unsigned)cr->gid, (int)cr->pid);
	return false;
}

bool kvt_conn_ns_allowed(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *ns, size_t ns_len)
{
	if (kvt_access_ns_ok(&c->srv->acc, c->uid, ns, ns_len))
		return true;
	c->srv->st.requests_denied++;
	kvt_log(KVT_LOG_WARN, "event=namespace_denied conn=%llu uid=%u "
		"ns=\"%.*s\"", (unsigned long long)c->id, (unsigned)c->uid,
		(int)(ns_len > 64 ? 64 : ns_len), (const char *)ns);
	kvt_reply_error(c, r, KVT_EDENIED, "namespace '%.*s' belongs to "
			"another user", (int)(ns_len > 64 ? 64 : ns_len),
			(const char *)ns);
	return false;
}

/* Idle: nothing received, sent or pending for a while. */
static bool conn_idle(const struct kvt_conn *c)
{
	return !c->closing && !c->out_head && !c->body && !c->parked &&
	       !c->mem_wait && !c->npins && c->inflight <= 1;
}

/*
 * At the connection limit, idle connections must not lock new clients
 * out: close the one idle the longest, if idle for 5 s at least (a worker
 * between requests is not idle).  Returns true if one was closed.
 */
static bool evict_idle(struct kvt_server *s)
{
	uint64_t now = kvt_clock_ns(), oldest = UINT64_MAX;
	struct kvt_conn *victim = NULL;

	for (struct kvt_conn *c = s->conns; c; c = c->next)
		if (conn_idle(c) && c->last_active_ns < oldest) {
			oldest = c->last_active_ns;
			victim = c;
		}
	if (!victim || now - oldest < 5000000000ull)
		return false;
	s->st.idle_evicted++;
	kvt_log(KVT_LOG_WARN, "event=idle_evicted conn=%llu idle_s=%llu "
		"reason=max_connections", (unsigned long long)victim->id,
		(unsigned long long)((now - oldest) / 1000000000ull));
	/*
	 * Its slot is the new client's: the count may exceed the limit by
	 * one for the moment its closing takes to complete.
	 */
	conn_close(victim);
	return true;
}

/*
 * Once a second: close connections idle past idle_timeout, and clients
 * that have left replies unread past send_timeout (a stuck reader must
 * not pin reply memory forever).
 */
static void housekeeping(struct kvt_server *s)
{
	uint64_t now = kvt_clock_ns();
	uint64_t idle = (uint64_t)s->cfg->idle_timeout_s * 1000000000ull;
	uint64_t slow = (uint64_t)s->cfg->send_timeout_s * 1000000000ull;

	for (struct kvt_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		if (idle && conn_idle(c) && now - c->last_active_ns > idle) {
			s->st.idle_closed++;
			kvt_log(KVT_LOG_INFO, "event=idle_closed conn=%llu",
				(unsigned long long)c->id);
			conn_close(c);
			continue;
		}
		if (c->send_armed && !c->send_stall_ns)
			c->send_stall_ns = now;
		if (slow && c->send_armed && c->send_stall_ns &&
		    now - c->send_stall_ns > slow) {
			s->st.slow_closed++;
			kvt_log(KVT_LOG_WARN, "event=slow_client_closed conn=%llu "
				"unread_bytes=%zu", (unsigned long long)c->id,
				c->out_bytes);
			conn_close(c);
		}
	}
}

static void arm_timer(struct kvt_server *s)
{
	kvt_loop_timeout(s->loop, 1000, tag(NULL, OP_TIMER));
}

static void on_accept(struct kvt_server *s, int res, unsigned flags)
{
	struct kvt_conn *c;

	if (!(flags & KVT_LOOP_MORE))
		g_stop.accept_armed = false;
	if (res < 0) {
		if (res != -ECANCELED && !s->stopping)
			kvt_log(KVT_LOG_WARN, "event=accept_failed error=\"%s\"",
				strerror(-res));
		return;
	}
	if (s->stopping) {
		close(res);
		return;
	}
	if (s->nconns >= s->cfg->max_connections && evict_idle(s))
		; /* an idle connection made room */
	else if (s->nconns >= s->cfg->max_connections) {
		refuse(res, KVT_EBUSY, "too many connections");
		s->st.connections_refused++;
		kvt_log(KVT_LOG_WARN, "event=connection_refused "
			"reason=max_connections limit=%u",
			s->cfg->max_connections);
		return;
	}
	struct ucred cr;
	if (!peer_allowed(s, res, &cr))
		return;
	c = calloc(1, sizeof(*c));
	if (c)
		c->rbuf = malloc(KVT_RBUF_SIZE);
	if (!c || !c->rbuf) {
		kvt_log(KVT_LOG_ERROR, "event=oom where=accept");
		if (c)
			free(c);
		close(res);
		return;
	}
	c->srv = s;
	c->fd = res;
	c->last_active_ns = kvt_clock_ns();
	c->uid = cr.uid;
	c->gid = cr.gid;
	c->id = ++s->next_conn_id;
	kvt_decoder_init(&c->dec, &s->lim);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	s->st.connections_total++;
	kvt_log(KVT_LOG_DEBUG, "event=connect conn=%llu conns=%u",
		(unsigned long long)c->id, s->nconns);
	arm_recv(c);
}

static void arm_accept(struct kvt_server *s)
{
	kvt_loop_accept(s->loop, s->listen_fd, tag(NULL, OP_ACCEPT));
	g_stop.accept_armed = true;
}

static void arm_tm(struct kvt_server *s)
{
	int fd = kvt_tm_event_fd(s->tm);

	if (fd < 0)
		return; /* every tier operation completes at once */
	kvt_loop_read(s->loop, fd, &g_stop.tm_counter,
		      sizeof(g_stop.tm_counter), tag(NULL, OP_TM));
}

static void arm_signal(struct kvt_server *s)
{
	kvt_loop_read(s->loop, s->signal_fd, &g_stop.si, sizeof(g_stop.si),
		      tag(NULL, OP_SIGNAL));
	g_stop.signal_armed = true;
}

/*
 * Graceful stop: accept nothing new, read no new requests, let queued
 * replies drain for up to STOP_GRACE_NS, then close everything.
 */
static void begin_stop(struct kvt_server *s, const char *why)
{
	if (s->stopping)
		return;
	s->stopping = true;
	kvt_notify("STOPPING=1");
	g_stop.stop_deadline = kvt_clock_ns() + STOP_GRACE_NS;
	kvt_log(KVT_LOG_INFO, "event=stopping reason=%s conns=%u", why,
		s->nconns);
	if (g_stop.accept_armed)
		kvt_loop_cancel(s->loop, tag(NULL, OP_ACCEPT),
				tag(NULL, OP_CANCEL));
	for (struct kvt_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		c->close_after = true;
		/* Wakes an armed recv with EOF; queued replies still go out. */
		shutdown(c->fd, SHUT_RD);
		if (!c->out_head)
			conn_close(c);
	}
}

/*
 * SIGHUP: re-reads the config file and the command line (flags still
 * override the file) and applies what can change while running; settings
 * that need a restart are reported, not applied.
 */
static void reload(struct kvt_server *s)
{
	struct kvt_config n;
	struct kvt_config *o = s->cfg;
	int changed = 0;

	kvt_notify("RELOADING=1");
	kvt_config_defaults(&n);
	if (kvt_config_from_args(&n, s->argc, s->argv) != 0) {
		kvt_log(KVT_LOG_ERROR, "event=reload_failed config=%s "
			"hint=\"keeping the current settings\"",
			o->config_path[0] ? o->config_path : "-");
		kvt_notify("READY=1");
		return;
	}
	if (n.log_level != o->log_level) {
		kvt_log(KVT_LOG_WARN, "event=reload setting=log-level old=%s "
			"new=%s", kvt_log_level_name(o->log_level),
			kvt_log_level_name(n.log_level));
		o->log_level = kvt_log_level = n.log_level;
		changed++;
	}
	if (n.max_connections != o->max_connections) {
		kvt_log(KVT_LOG_WARN, "event=reload setting=max-connections "
			"old=%u new=%u", o->max_connections, n.max_connections);
		o->max_connections = n.max_connections;
		changed++;
	}
	if (n.l3_write_rate != o->l3_write_rate) {
		kvt_log(KVT_LOG_WARN, "event=reload setting=l3-write-rate "
			"old=%llu new=%llu", (unsigned long long)o->l3_write_rate,
			(unsigned long long)n.l3_write_rate);
		o->l3_write_rate = n.l3_write_rate;
		kvt_tm_set_l3_write_rate(s->tm, n.l3_write_rate);
		changed++;
	}
	if (n.spill_timeout_s != o->spill_timeout_s || n.no_spill != o->no_spill) {
		o->spill_timeout_s = n.spill_timeout_s;
		o->no_spill = n.no_spill;
		kvt_log(KVT_LOG_WARN, "event=reload setting=spill "
			"spill_timeout=%u no_spill=%d", o->spill_timeout_s,
			o->no_spill);
		changed++;
	}
	if (n.busy_poll_us != o->busy_poll_us) {
		kvt_log(KVT_LOG_WARN, "event=reload setting=busy-poll "
			"old=%u new=%u", o->busy_poll_us, n.busy_poll_us);
		o->busy_poll_us = n.busy_poll_us;
		kvt_loop_set_busy_poll(s->loop, o->busy_poll_us);
		changed++;
	}
	if (strcmp(n.socket_path, o->socket_path) ||
	    strcmp(n.data_dir, o->data_dir) || n.l1_size != o->l1_size ||
	    n.l2_size != o->l2_size || n.l3_size != o->l3_size ||
	    n.l2_level != o->l2_level || n.l3_region_size != o->l3_region_size ||
	    n.io_backend != o->io_backend)
		kvt_log(KVT_LOG_WARN, "event=reload_needs_restart "
			"hint=\"socket, data-dir, tier sizes, l2-level, "
			"l3-region-size and io-backend change only on "
			"restart\"");
	kvt_log(KVT_LOG_INFO, "event=reloaded changed=%d", changed);
	kvt_notify("READY=1");
}

static void on_signal(struct kvt_server *s, int res)
{
	g_stop.signal_armed = false;
	if (res != (int)sizeof(g_stop.si)) {
		if (!s->stopping)
			arm_signal(s);
		return;
	}
	switch (g_stop.si.ssi_signo) {
	case SIGHUP:
		reload(s);
		break;
	case SIGTERM:
		begin_stop(s, "SIGTERM");
		break;
	case SIGINT:
		begin_stop(s, "SIGINT");
		break;
	default:
		kvt_log(KVT_LOG_INFO, "event=signal_ignored signo=%u",
			g_stop.si.ssi_signo);
		break;
	}
	if (!s->stopping)
		arm_signal(s);
}

/* One completion from the loop, whichever backend produced it. */
static void dispatch(void *arg, uint64_t ud, int res, unsigned flags)
{
	struct kvt_server *s = arg;
	struct kvt_conn *c = (struct kvt_conn *)(uintptr_t)(ud & ~(uint64_t)OP_MASK);

	switch ((enum op_kind)(ud & OP_MASK)) {
	case OP_ACCEPT:
		on_accept(s, res, flags);
		if (!g_stop.accept_armed && !s->stopping)
			arm_accept(s);
		break;
	case OP_SIGNAL:
		on_signal(s, res);
		break;
	case OP_RECV:
		on_recv(c, res);
		break;
	case OP_SEND:
		on_send(c, res);
		break;
	case OP_TM:
		/* Runs get callbacks, which queue replies on connections. */
		kvt_tm_dispatch(s->tm);
		unpark_all(s);
		arm_tm(s);
		break;
	case OP_TIMER:
		housekeeping(s);
		if (!s->stopping)
			arm_timer(s);
		break;
	case OP_CANCEL:
		break;
	}
}

int kvt_server_loop_open(struct kvt_loop **out, int backend)
{
	char err[128];
	int rc;

	if (backend == KVT_IO_EPOLL) {
		rc = kvt_loop_open(out, KVT_IO_EPOLL, RING_ENTRIES, err,
				   sizeof(err));
		if (rc)
			kvt_log(KVT_LOG_ERROR, "event=loop_failed backend=epoll "
				"error=\"%s\"", err);
		return rc;
	}
	rc = kvt_loop_open(out, KVT_IO_URING, RING_ENTRIES, err, sizeof(err));
	if (rc == 0)
		return 0;
	if (backend == KVT_IO_URING) {
		kvt_log(KVT_LOG_ERROR,
			"event=io_uring_unavailable error=\"%s\" "
			"io_backend=io_uring hint=\"io_uring_setup was refused; "
			"the kernel may be too old, or a container/seccomp "
			"profile or kernel.io_uring_disabled blocks it. Use "
			"--io-backend auto or epoll to run on the portable "
			"epoll/pread path instead.\"", strerror(-rc));
		return rc;
	}
	/*
	 * auto: one warning, then the portable path.  Operators see why in
	 * the log and which path is serving in the stats (io_backend).
	 */
	kvt_log(KVT_LOG_WARN, "event=io_uring_unavailable error=\"%s\" "
		"fallback=epoll hint=\"io_uring_setup was refused (old kernel, "
		"seccomp/container policy or kernel.io_uring_disabled); "
		"serving with epoll and L3 with pread/pwrite\"",
		strerror(-rc));
	rc = kvt_loop_open(out, KVT_IO_EPOLL, RING_ENTRIES, err, sizeof(err));
	if (rc)
		kvt_log(KVT_LOG_ERROR, "event=loop_failed backend=epoll "
			"error=\"%s\"", err);
	return rc;
}

int kvt_server_open(struct kvt_server **out, struct kvt_config *cfg,
		    struct kvt_loop *loop, struct kvt_tm *tm, int argc,
		    char **argv)
{
	struct kvt_server *s;
	sigset_t mask;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s) {
		kvt_loop_close(loop);
		return -ENOMEM;
	}
	s->loop = loop;
	kvt_loop_set_busy_poll(loop, cfg->busy_poll_us);
	s->cfg = cfg;
	s->tm = tm;
	s->argc = argc;
	s->argv = argv;
	s->listen_fd = -1;
	s->signal_fd = -1;
	s->start_ns = kvt_clock_ns();
	kvt_limits_default(&s->lim);
	s->lim.max_key = (uint32_t)cfg->max_key_size;
	s->lim.max_value = cfg->max_value_size;
	s->lim.max_body = kvt_limits_put_body_max(&s->lim);
	{
		char err[256];
		if (kvt_access_parse(&s->acc, cfg->allow_uid, cfg->allow_gid,
				     cfg->ns_owner, cfg->socket_group, err,
				     sizeof(err))) {
			kvt_log(KVT_LOG_ERROR, "event=config_error what=access "
				"error=\"%s\"", err);
			kvt_server_close(s);
			return KVT_EINVAL;
		}
	}

	{
		char err[256];
		if (kvt_access_parse(&s->shm_acc, cfg->shm_allow_uid, NULL,
				     NULL, NULL, err, sizeof(err))) {
			kvt_log(KVT_LOG_ERROR, "event=config_error "
				"what=shm-allow-uid error=\"%s\"", err);
			kvt_server_close(s);
			return KVT_EINVAL;
		}
	}
	s->arena = kvt_tm_arena(tm, NULL);

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	s->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (s->signal_fd < 0) {
		rc = -errno;
		kvt_server_close(s);
		return rc;
	}

	/* systemd socket activation: the socket is already bound for us. */
	s->listen_fd = kvt_listen_fd();
	if (s->listen_fd == -EINVAL) {
		kvt_server_close(s);
		return -EINVAL;
	}
	if (s->listen_fd >= 0) {
		s->activated = true;
		kvt_log(KVT_LOG_INFO, "event=socket_activated fd=%d",
			s->listen_fd);
	} else {
		s->listen_fd = listen_unix(cfg->socket_path, 1024,
					   cfg->socket_mode, &s->acc);
	}
	if (s->listen_fd < 0) {
		rc = s->listen_fd;
		s->listen_fd = -1;
		kvt_server_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

int kvt_server_run(struct kvt_server *s)
{
	arm_accept(s);
	arm_signal(s);
	arm_tm(s);
	arm_timer(s);
	kvt_log(KVT_LOG_INFO, "event=listening socket=%s pid=%d io_backend=%s",
		s->activated ? "(systemd)" : s->cfg->socket_path,
		(int)getpid(), kvt_io_backend_name(kvt_loop_backend(s->loop)));
	{
		char st[256];
		snprintf(st, sizeof(st), "READY=1\nMAINPID=%d\nSTATUS=serving",
			 (int)getpid());
		int nrc = kvt_notify(st);
		if (nrc)
			kvt_log(KVT_LOG_WARN, "event=notify_failed error=\"%s\"",
				strerror(-nrc));
	}
	while (!s->stopping || s->nconns > 0 || g_stop.accept_armed) {
		int rc = kvt_loop_run_once(s->loop, s->stopping ? 100 : -1,
					   dispatch, s);

		if (rc < 0) {
			kvt_log(KVT_LOG_ERROR, "event=loop_failed error=\"%s\"",
				strerror(-rc));
			return rc;
		}
		if (s->stopping && kvt_clock_ns() > g_stop.stop_deadline) {
			/* Clients that will not read their replies lose them. */
			for (struct kvt_conn *c = s->conns, *next; c; c = next) {
				next = c->next;
				conn_close(c);
			}
		}
	}
	kvt_log(KVT_LOG_INFO, "event=stopped requests=%llu",
		(unsigned long long)s->st.requests);
	return 0;
}

void kvt_server_close(struct kvt_server *s)
{
	if (!s)
		return;
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		/* systemd owns an activated socket's file; leave it. */
		if (!s->activated)
			unlink(s->cfg->socket_path);
	}
	if (s->signal_fd >= 0)
		close(s->signal_fd);
	kvt_loop_close(s->loop);
	free(s);
}
