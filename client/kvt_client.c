/*
 * kvt_client.c - libkvtier: a blocking client for kvtierd (see kvtier.h).
 *
 * One request is in flight per connection: each call sends one frame and
 * reads its reply before returning.  Frames are built with proto/'s pure
 * codecs; this file only adds the socket I/O around them.
 *
 * Large values never pass through an intermediate buffer: a PUT goes out as
 * one sendmsg() of [header + body prefix][value], and a GET reply's body is
 * received straight into the caller's buffer.  Small replies are read
 * through a per-connection buffer so that header and body usually arrive
 * in one recv().
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvt_clock.h"
#include "kvt_frame.h"
#include "kvt_path.h"
#include "kvt_shm.h"
#include "kvt_shmmap.h"
#include "kvt_spin.h"
#include "kvtier.h"
#include "kvtier_errors.h"

/*
 * Room for our own words around a daemon message of up to KVT_ERRMSG_MAX
 * bytes, or around a socket path.
 */
#define KVT_CLIENT_MSG_CAP (KVT_ERRMSG_MAX + 256)
/* Also room for the socket path (< 108 bytes) and our words. */
#define KVT_CONNECT_MSG_CAP (KVT_CLIENT_MSG_CAP + 160)
/* Receive buffer; bodies that do not fit are read in place. */
#define KVT_CLIENT_RBUF 4096
/* Wire field width of key_len. */
#define KVT_KEY_FIELD_MAX 0xffffu
/* Wire field width of body_len. */
#define KVT_BODY_FIELD_MAX 0xffffffffu
/* Discards at least this large use a temporary buffer of _BUF bytes. */
#define KVT_CLIENT_DISCARD_MIN (64u << 10)
#define KVT_CLIENT_DISCARD_BUF (1u << 20)
/* Floor for the reply size limit, whatever the daemon's request limits. */
#define KVT_CLIENT_REPLY_MIN (1u << 20)
/*
 * A put through a slot costs a second round trip (PUT_ALLOC, PUT_COMMIT)
 * to save the socket copy; measured on the dev VM the socket is as fast up
 * to about 256 KiB and slower from 512 KiB, so smaller values go over the
 * socket whatever the daemon's threshold.
 */
#define KVT_CLIENT_SHM_PUT_MIN (256u << 10)
/* Default poll for a reply before sleeping, microseconds (kvt_spin.h). */
#define KVT_CLIENT_SPIN_US 50u

struct kvt_client {
	int fd;
	/*
	 * Set by a connection-level failure: the byte stream is no longer
	 * at a frame boundary (or gone), so every later call fails fast.
	 */
	bool broken;
	uint64_t next_id;
	/* The daemon's limits from HELLO, for checking requests. */
	struct kvt_limits lim;
	/* Limits used to decode replies: max_body bounds any reply body. */
	struct kvt_limits rlim;
	/* Header plus request body prefix (everything but a PUT's value). */
	uint8_t *sbuf;
	size_t sbuf_cap;
	/* Buffered reply bytes not yet consumed: rbuf[rpos..rlen). */
	size_t rpos, rlen;
	uint8_t rbuf[KVT_CLIENT_RBUF];
	char errmsg[KVT_CLIENT_MSG_CAP];
	/* Why the connection broke, repeated by later calls. */
	char broken_msg[KVT_CLIENT_MSG_CAP];

	/*
	 * Shared memory (PROTOCOL.md): the daemon's block arena, mapped at
	 * HELLO if the daemon offered it, else NULL.  Values of at least
	 * shm_threshold bytes then move by memcpy instead of the socket.
	 */
	uint8_t *shm;
	uint64_t shm_size;
	uint64_t shm_threshold;
	struct kvt_shmmap *map; /* the process's mapping of it (shm = base) */
	bool want_fd;  /* reading the HELLO reply: accept SCM_RIGHTS */
	int recv_fd;   /* the fd it carried, or -1 */
	/* Leases whose bytes we copied, to end with the next RELEASE. */
	uint64_t rel[KVT_SHM_RELEASE_MAX];
	size_t nrel;
	/* A quiet RELEASE frame: header and body, built by release_encode. */
	uint8_t relbuf[KVT_HDR_SIZE + KVT_SHM_RELEASE_FIXED +
		       8 * KVT_SHM_RELEASE_MAX];
	/* Polling for replies before sleeping (KVTIER_SPIN_US). */
	struct kvt_spin spin;
};

/*
 * A failed kvt_connect() has no handle to keep its message in, so it is kept
 * per thread: kvtier.h promises no shared mutable state between threads.
 */
static _Thread_local char connect_errmsg[KVT_CONNECT_MSG_CAP];

/* ---- Messages ------------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static int set_err(kvt_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

/*
 * Marks c broken after a connection-level failure, with a message; returns
 * rc so callers can write `return conn_fail(c, rc, ...)`.
 */
__attribute__((format(printf, 3, 4)))
static int conn_fail(kvt_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	c->broken = true;
	memcpy(c->broken_msg, c->errmsg, sizeof(c->broken_msg));
	return rc;
}

/* Returns KVT_ECLOSED if c cannot carry requests any more, else 0. */
static int check_usable(kvt_client *c)
{
	if (!c->broken)
		return 0;
	return set_err(c, KVT_ECLOSED, "connection unusable after an earlier "
		       "error: %s", c->broken_msg);
}

/*
 * A read or write on the socket failed while doing `when`.  A peer that is
 * gone shows up as EOF, as ECONNRESET (it closed with our request unread)
 * or as EPIPE; callers get KVT_ECLOSED for all three, since all they need
 * to know is to reconnect.  The message keeps the detail.
 */
static int conn_lost(kvt_client *c, int rc, const char *when)
{
	if (rc == KVT_ECLOSED)
		return conn_fail(c, KVT_ECLOSED, "daemon closed the connection "
				 "(%s)", when);
	if (rc == -ECONNRESET || rc == -EPIPE)
		return conn_fail(c, KVT_ECLOSED, "daemon closed the connection "
				 "(%s: %s)", when, kvt_strerror(rc));
	return conn_fail(c, rc, "connection to daemon failed (%s: %s)", when,
			 kvt_strerror(rc));
}

/*
 * Copies a daemon message into dst, replacing control characters: the text
 * comes from another process and callers print it on terminals.
 */
static void copy_daemon_msg(char *dst, size_t cap, const uint8_t *src,
			    size_t len)
{
	size_t i;

	if (cap == 0)
		return;
	if (len > cap - 1)
		len = cap - 1;
	for (i = 0; i < len; i++)
		dst[i] = (src[i] < 0x20 || src[i] == 0x7f) ? '?' : (char)src[i];
	dst[i] = '\0';
}

/* ---- Socket I/O ----------------------------------------------------- */

/*
 * Sends every byte described by iov[0..iovcnt), advancing the iovecs past
 * partial sends.  MSG_NOSIGNAL turns a dead peer into EPIPE instead of a
 * SIGPIPE that would kill the caller's process.  Returns 0 or -errno.
 */
static int send_all(int fd, struct iovec *iov, int iovcnt)
{
	struct msghdr msg;
	ssize_t n;

	while (iovcnt > 0 && iov[0].iov_len == 0) {
		iov++;
		iovcnt--;
	}
	while (iovcnt > 0) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)iovcnt;
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (iovcnt > 0 && (size_t)n >= iov[0].iov_len) {
			n -= (ssize_t)iov[0].iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov[0].iov_base = (uint8_t *)iov[0].iov_base + n;
			iov[0].iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* One recv(); returns bytes read (> 0), KVT_ECLOSED at EOF, or -errno. */
static ssize_t recv_some(int fd, void *dst, size_t n, int flags)
{
	ssize_t r;

	for (;;) {
		r = recv(fd, dst, n, flags);
		if (r > 0)
			return r;
		if (r == 0)
			return KVT_ECLOSED;
		if (errno != EINTR)
			return -errno;
	}
}

/*
 * recv_some() for reply bytes, polled first: a reply usually comes within
 * tens of microseconds, and sleeping for it costs about as much again on a
 * VM (kvt_spin.h).  Nonblocking recv() for the adaptive window, then the
 * blocking one.  Same returns as recv_some(); with MSG_WAITALL a polled
 * read may return less, which callers loop on anyway.
 */
static ssize_t recv_reply(kvt_client *c, void *dst, size_t n, int flags)
{
	uint64_t start, win, now, polled = 0;
	bool preempted = false;
	ssize_t r;
	long iv;

	if (!c->spin.max_ns)
		return recv_some(c->fd, dst, n, flags);
	start = now = kvt_clock_ns();
	win = kvt_spin_window(&c->spin, start);
	if (win) {
		int err;

		iv = kvt_spin_nivcsw();
		for (;;) {
			r = recv(c->fd, dst, n,
				 (flags & ~MSG_WAITALL) | MSG_DONTWAIT);
			err = errno;
			now = kvt_clock_ns();
			if (r >= 0 || (err != EAGAIN && err != EINTR) ||
			    now - start >= win)
				break;
		}
		preempted = kvt_spin_nivcsw() != iv;
		if (r >= 0 || (err != EAGAIN && err != EINTR)) {
			kvt_spin_done(&c->spin, now - start, true, preempted,
				      0, now);
			return r > 0 ? r : r == 0 ? KVT_ECLOSED : -err;
		}
		polled = now - start;
	}
	r = recv_some(c->fd, dst, n, flags);
	start = now;
	now = kvt_clock_ns();
	kvt_spin_done(&c->spin, polled, false, preempted, now - start, now);
	return r;
}

/*
 * recv() that also takes file descriptors passed with SCM_RIGHTS (the
 * arena, with the HELLO reply): the first is kept in c->recv_fd, any other
 * is closed.  A plain recv() would silently drop them.
 */
static ssize_t recv_fds(kvt_client *c, void *dst, size_t n)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} u;
	struct iovec iov = { .iov_base = dst, .iov_len = n };
	struct msghdr m;
	struct cmsghdr *cm;
	ssize_t r;

	for (;;) {
		memset(&m, 0, sizeof(m));
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = u.buf;
		m.msg_controllen = sizeof(u.buf);
		r = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC);
		if (r >= 0 || errno != EINTR)
			break;
	}
	if (r < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		size_t nfd;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			       sizeof(fd));
			if (c->recv_fd < 0)
				c->recv_fd = fd;
			else
				close(fd);
		}
	}
	return r == 0 ? KVT_ECLOSED : r;
}

/*
 * Reads exactly n bytes of the reply stream into dst (NULL = discard them).
 * Buffered bytes come first; a large remainder is received in place so a
 * value is never copied through rbuf.  Returns 0, KVT_ECLOSED or -errno.
 */
static int read_exact(kvt_client *c, void *dst, size_t n)
{
	uint8_t *p = dst;
	size_t take;
	ssize_t r;

	while (n > 0) {
		if (c->rpos < c->rlen) {
			take = c->rlen - c->rpos;
			if (take > n)
				take = n;
			if (p) {
				memcpy(p, c->rbuf + c->rpos, take);
				p += take;
			}
			c->rpos += take;
			n -= take;
			continue;
		}
		c->rpos = c->rlen = 0;
		if (p && n >= sizeof(c->rbuf)) {
			/* MSG_WAITALL: one syscall for a whole value, usually. */
			r = recv_reply(c, p, n, MSG_WAITALL);
			if (r < 0)
				return (int)r;
			p += r;
			n -= (size_t)r;
			continue;
		}
		r = c->want_fd ? recv_fds(c, c->rbuf, sizeof(c->rbuf))
			       : recv_reply(c, c->rbuf, sizeof(c->rbuf), 0);
		if (r < 0)
			return (int)r;
		c->rlen = (size_t)r;
	}
	return 0;
}

/*
 * Reads len bytes of the reply stream and throws them away.  Large amounts
 * (a value that did not fit the caller's buffer) go through a temporary
 * heap buffer: 4 KiB reads would cost thousands of syscalls for one block,
 * and a big stack buffer could overflow a caller thread's small stack.
 */
static int discard(kvt_client *c, size_t len)
{
	size_t buffered = c->rlen - c->rpos, chunk;
	uint8_t *scratch;
	int rc;

	if (len <= buffered || len - buffered < KVT_CLIENT_DISCARD_MIN)
		return read_exact(c, NULL, len);
	rc = read_exact(c, NULL, buffered);
	if (rc < 0)
		return rc;
	len -= buffered;
	chunk = len < KVT_CLIENT_DISCARD_BUF ? len : KVT_CLIENT_DISCARD_BUF;
	scratch = malloc(chunk);
	if (!scratch)
		return read_exact(c, NULL, len);
	while (len > 0) {
		ssize_t r = recv_some(c->fd, scratch, len < chunk ? len : chunk,
				      0);

		if (r < 0) {
			free(scratch);
			return (int)r;
		}
		len -= (size_t)r;
	}
	free(scratch);
	return 0;
}

/* Reads the rest of a reply body (len bytes) and throws it away. */
static int discard_body(kvt_client *c, size_t len)
{
	int rc = discard(c, len);

	if (rc < 0)
		return conn_lost(c, rc, "reading a reply body");
	return 0;
}

/* Reads a reply body of len bytes into dst, failing the connection on error. */
static int read_body(kvt_client *c, void *dst, size_t len)
{
	int rc = read_exact(c, dst, len);

	if (rc < 0)
		return conn_lost(c, rc, "reading a reply body");
	return 0;
}

/* ---- Frames --------------------------------------------------------- */

/*
 * Reads one reply header and checks that it answers request id/op.  An
 * error reply (status != 0) is consumed whole: its body is the daemon's
 * message, which becomes c's message, and -(status) is returned.  On 0,
 * *h is the header and the body (h->body_len bytes) is still to be read.
 */
static int read_reply(kvt_client *c, uint8_t op, uint64_t id,
		      struct kvt_frame_header *h)
{
	uint8_t hb[KVT_HDR_SIZE];
	uint8_t msg[KVT_ERRMSG_MAX];
	int rc, code;

	rc = read_exact(c, hb, sizeof(hb));
	if (rc < 0)
		return conn_lost(c, rc, "waiting for the reply");
	rc = kvt_frame_header_decode(hb, sizeof(hb), &c->rlim, h);
	if (rc == KVT_EPROTO)
		return conn_fail(c, KVT_EPROTO, "reply with bad magic (is this "
				 "socket a kvtierd?)");
	if (rc == KVT_EVERSION)
		return conn_fail(c, KVT_EVERSION, "reply in protocol version %u, "
				 "this client speaks %u", h->version,
				 KVT_PROTO_VERSION);
	if (rc == KVT_ETOOBIG)
		return conn_fail(c, KVT_EPROTO, "reply body of %u bytes exceeds "
				 "the limit of %llu", h->body_len,
				 (unsigned long long)c->rlim.max_body);
	if (rc < 0)
		return conn_fail(c, KVT_EPROTO, "bad reply header: %s",
				 kvt_strerror(rc));
	if (!(h->flags & KVT_FLAG_REPLY))
		return conn_fail(c, KVT_EPROTO, "daemon sent a request frame "
				 "instead of a reply");

	if (h->status != 0) {
		if (h->status > INT_MAX || h->body_len > KVT_ERRMSG_MAX)
			return conn_fail(c, KVT_EPROTO, "malformed error reply "
					 "(status %u, %u byte message)",
					 h->status, h->body_len);
		code = -(int)h->status;
		rc = read_exact(c, msg, h->body_len);
		if (rc < 0)
			return conn_lost(c, rc, "reading an error reply");
		if (h->body_len > 0)
			copy_daemon_msg(c->errmsg, sizeof(c->errmsg), msg,
					h->body_len);
		else
			snprintf(c->errmsg, sizeof(c->errmsg), "%s",
				 kvt_strerror(code));
		/*
		 * The daemon answers frames it cannot attribute to a request
		 * (bad framing, too many connections) with request id 0 and
		 * then closes the connection: report its reason, and treat
		 * the connection as gone.
		 */
		if (h->request_id == 0 && id != 0) {
			c->broken = true;
			memcpy(c->broken_msg, c->errmsg, sizeof(c->broken_msg));
			return code;
		}
		if (h->request_id != id || h->opcode != op)
			return conn_fail(c, KVT_EPROTO, "error reply for request "
					 "%llu (%s), expected %llu (%s)",
					 (unsigned long long)h->request_id,
					 kvt_op_name(h->opcode),
					 (unsigned long long)id,
					 kvt_op_name(op));
		return code;
	}

	if (h->request_id != id || h->opcode != op)
		return conn_fail(c, KVT_EPROTO, "reply for request %llu (%s), "
				 "expected %llu (%s)",
				 (unsigned long long)h->request_id,
				 kvt_op_name(h->opcode), (unsigned long long)id,
				 kvt_op_name(op));
	return 0;
}

/*
 * Writes a quiet RELEASE of the leases collected so far into c->relbuf and
 * empties the list; returns the frame's length.
 */
static size_t release_encode(kvt_client *c)
{
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_RELEASE,
				      .flags = KVT_FLAG_QUIET };
	size_t len = 0;

	/* Cannot fail: relbuf holds KVT_SHM_RELEASE_MAX ids. */
	kvt_shm_release_req_encode(c->relbuf + KVT_HDR_SIZE,
				   sizeof(c->relbuf) - KVT_HDR_SIZE, c->rel,
				   c->nrel, &len);
	c->nrel = 0;
	if (c->next_id == 0)
		c->next_id = 1;
	h.request_id = c->next_id++;
	h.body_len = (uint32_t)len;
	kvt_frame_header_encode(c->relbuf, &h);
	return KVT_HDR_SIZE + len;
}

/*
 * Sends one request whose header and body prefix are in c->sbuf (the
 * header's KVT_HDR_SIZE bytes followed by prefix_len body bytes), followed
 * by the value val[0..val_len), and reads the reply header.  Returns like
 * read_reply().
 */
/*
 * Sends one request frame (header and prefix from c->sbuf, then the value)
 * without waiting for its reply; *id gets its request id.  Returns 0 or the
 * negative result of send_all().
 */
static int send_request(kvt_client *c, uint8_t op, size_t prefix_len,
			const void *val, size_t val_len, uint64_t *id)
{
	struct kvt_frame_header h = {
		.version = KVT_PROTO_VERSION,
		.opcode = op,
	};
	struct iovec iov[3];
	int n = 0;

	/*
	 * Leases copied since the last request end with this one: their
	 * quiet RELEASE goes out in the same sendmsg, so ending a lease costs
	 * neither a system call nor a reply.
	 */
	if (c->nrel > 0 && op != KVT_OP_RELEASE) {
		iov[n].iov_base = c->relbuf;
		iov[n].iov_len = release_encode(c);
		n++;
	}
	/* Request id 0 is what the daemon uses for unattributable errors. */
	if (c->next_id == 0)
		c->next_id = 1;
	h.request_id = c->next_id++;
	h.body_len = (uint32_t)(prefix_len + val_len);
	/* Every GET path below can take its value from a lease. */
	if (op == KVT_OP_GET && c->shm)
		h.flags = KVT_FLAG_SHM;
	kvt_frame_header_encode(c->sbuf, &h);
	iov[n].iov_base = c->sbuf;
	iov[n].iov_len = KVT_HDR_SIZE + prefix_len;
	n++;
	/* sendmsg() does not write through iov_base; the cast is safe. */
	iov[n].iov_base = (void *)val;
	iov[n].iov_len = val_len;
	if (val_len)
		n++;
	*id = h.request_id;
	return send_all(c->fd, iov, n);
}

/*
 * A send failed: the daemon may have answered before closing (it rejects
 * an oversized frame from its header alone and then hangs up), and its
 * reply, still queued on our side, says why.  The peer is gone, so the read
 * cannot block.
 */
static int send_failed(kvt_client *c, int rc, uint8_t op, uint64_t id,
		       struct kvt_frame_header *rh)
{
	char when[32];
	int rrc;

	if (rc == -EPIPE || rc == -ECONNRESET) {
		rrc = read_reply(c, op, id, rh);
		if (rrc < 0 && rrc != KVT_ECLOSED && rrc != KVT_EPROTO) {
			c->broken = true;
			memcpy(c->broken_msg, c->errmsg, sizeof(c->broken_msg));
			return rrc;
		}
	}
	snprintf(when, sizeof(when), "sending %s", kvt_op_name(op));
	return conn_lost(c, rc, when);
}

static int do_request(kvt_client *c, uint8_t op, size_t prefix_len,
		      const void *val, size_t val_len,
		      struct kvt_frame_header *rh)
{
	uint64_t id;
	int rc;

	if (val_len > KVT_BODY_FIELD_MAX - prefix_len)
		return set_err(c, KVT_ETOOBIG, "request body too large");
	rc = send_request(c, op, prefix_len, val, val_len, &id);
	if (rc == 0)
		return read_reply(c, op, id, rh);
	return send_failed(c, rc, op, id, rh);
}

/* ---- Argument checks ------------------------------------------------ */

/*
 * Validates (ns, key) against the wire format and the daemon's limits and
 * fills *k.  Nothing is sent for a request that fails here, so the
 * connection stays usable.
 */
/* A namespace of ns_len bytes fits the protocol and the daemon's limit. */
static int check_ns(kvt_client *c, size_t ns_len)
{
	if (ns_len > KVT_NS_MAX)
		return set_err(c, KVT_EINVAL, "namespace is %zu bytes, the "
			       "protocol allows at most %d", ns_len,
			       KVT_NS_MAX);
	if (ns_len > c->lim.max_ns)
		return set_err(c, KVT_ETOOBIG, "namespace is %zu bytes, the "
			       "daemon allows at most %u", ns_len,
			       c->lim.max_ns);
	return 0;
}

static int check_key(kvt_client *c, const char *ns, const void *key,
		     size_t key_len, struct kvt_keyref *k)
{
	size_t ns_len = ns ? strlen(ns) : 0;
	int rc;

	if (!key)
		return set_err(c, KVT_EINVAL, "key is NULL");
	if (key_len == 0)
		return set_err(c, KVT_EINVAL, "key is empty");
	rc = check_ns(c, ns_len);
	if (rc < 0)
		return rc;
	if (key_len > c->lim.max_key)
		return set_err(c, KVT_ETOOBIG, "key is %zu bytes, the daemon "
			       "allows at most %u", key_len, c->lim.max_key);
	if (key_len > KVT_KEY_FIELD_MAX)
		return set_err(c, KVT_ETOOBIG, "key is %zu bytes, the protocol "
			       "allows at most %u", key_len, KVT_KEY_FIELD_MAX);
	k->ns = (const uint8_t *)(ns ? ns : "");
	k->ns_len = ns_len;
	k->key = key;
	k->key_len = key_len;
	return 0;
}

/* Checks c and the key, then sends a key request (GET, DEL, EXISTS). */
static int key_request(kvt_client *c, uint8_t op, const char *ns,
		       const void *key, size_t key_len,
		       struct kvt_frame_header *rh)
{
	struct kvt_keyref k;
	size_t len;
	int rc;

	rc = check_usable(c);
	if (rc < 0)
		return rc;
	rc = check_key(c, ns, key, key_len, &k);
	if (rc < 0)
		return rc;
	rc = kvt_key_req_encode(c->sbuf + KVT_HDR_SIZE,
				c->sbuf_cap - KVT_HDR_SIZE, &k, &len);
	if (rc < 0)
		return set_err(c, rc, "cannot encode %s request: %s",
			       kvt_op_name(op), kvt_strerror(rc));
	return do_request(c, op, len, NULL, 0, rh);
}

/* ---- Shared memory -------------------------------------------------- */

/*
 * A full list of leases ends on its own: one quiet RELEASE, no reply.
 * (Otherwise they end with the next request, see send_request.)
 */
static int release_flush(kvt_client *c)
{
	struct iovec iov = { .iov_base = c->relbuf };
	int rc;

	iov.iov_len = release_encode(c);
	rc = send_all(c->fd, &iov, 1);
	return rc < 0 ? conn_lost(c, rc, "sending RELEASE") : 0;
}

static int lease_done(kvt_client *c, uint64_t id)
{
	c->rel[c->nrel++] = id;
	return c->nrel == KVT_SHM_RELEASE_MAX ? release_flush(c) : 0;
}

/* Where a GET reply's value is: its body, or a lease on arena bytes. */
struct value_src {
	const uint8_t *shm; /* NULL: the reply body */
	uint64_t lease;
	size_t len;
};

/* Reads what a successful GET reply says about its value. */
static int value_open(kvt_client *c, const struct kvt_frame_header *rh,
		      struct value_src *v)
{
	uint8_t b[KVT_SHM_LEASE_SIZE];
	struct kvt_shm_lease l;
	int rc;

	memset(v, 0, sizeof(*v));
	v->len = rh->body_len;
	if (!(rh->flags & KVT_FLAG_SHM))
		return 0;
	if (!c->shm || rh->body_len != sizeof(b))
		return conn_fail(c, KVT_EPROTO, "unexpected lease reply");
	rc = read_body(c, b, sizeof(b));
	if (rc < 0)
		return rc;
	if (kvt_shm_lease_parse(b, sizeof(b), c->shm_size, &l) < 0 ||
	    l.len > SIZE_MAX)
		return conn_fail(c, KVT_EPROTO, "lease outside the arena");
	v->shm = c->shm + l.offset;
	v->lease = l.id;
	v->len = (size_t)l.len;
	return 0;
}

/* Copies the value into dst (room for v->len bytes) and ends its lease. */
static int value_copy(kvt_client *c, const struct value_src *v, void *dst)
{
	if (!v->shm)
		return read_body(c, dst, v->len);
	kvt_shmmap_populate(c->map, v->shm, v->len);
	memcpy(dst, v->shm, v->len);
	return lease_done(c, v->lease);
}

/* Drops a value that will not be read (it did not fit). */
static int value_skip(kvt_client *c, const struct value_src *v)
{
	if (!v->shm)
		return discard_body(c, v->len);
	return lease_done(c, v->lease);
}

/*
 * Maps the arena fd the HELLO reply carried (once per process, shared by
 * its connections: kvt_shmmap.h).  Any failure just leaves the socket path.
 */
static void shm_map(kvt_client *c, const struct kvt_shm_hello *sh)
{
	if (c->recv_fd < 0 || sh->arena_size == 0 ||
	    kvt_shmmap_get(c->recv_fd, sh->arena_size, &c->map) < 0)
		return;
	c->shm = kvt_shmmap_base(c->map);
	c->shm_size = sh->arena_size;
	c->shm_threshold = sh->threshold ? sh->threshold : 1;
}

/*
 * How long to poll for a reply before sleeping: KVTIER_SPIN_US
 * microseconds, 0 to always sleep; default KVT_CLIENT_SPIN_US.  Anything
 * unparsable or over KVT_SPIN_MAX_US keeps the default.
 */
static uint64_t spin_wanted_ns(void)
{
	const char *e = getenv("KVTIER_SPIN_US");
	unsigned long v;
	char *end;

	if (!e || !*e)
		return KVT_CLIENT_SPIN_US * 1000ull;
	errno = 0;
	v = strtoul(e, &end, 10);
	if (errno || *end || v > KVT_SPIN_MAX_US)
		return KVT_CLIENT_SPIN_US * 1000ull;
	return v * 1000ull;
}

/* Whether this process asked not to use shared memory (KVTIER_SHM=0). */
static bool shm_wanted(void)
{
	const char *e = getenv("KVTIER_SHM");

	return !(e && (!strcmp(e, "0") || !strcmp(e, "off") ||
		       !strcmp(e, "no")));
}

/*
 * PUT through a slot: PUT_ALLOC (c->sbuf holds the PUT prefix of len
 * bytes after room for the length), copy, PUT_COMMIT.  Returns 1 when the
 * daemon has no room for a slot, so the caller sends the value over the
 * socket instead; else 0 or an error.
 */
static int put_shm(kvt_client *c, size_t len, const void *val,
		   size_t val_len)
{
	struct kvt_frame_header rh;
	struct kvt_shm_slot slot;
	uint8_t b[KVT_SHM_SLOT_SIZE];
	int rc;

	kvt_shm_alloc_req_encode_len(c->sbuf + KVT_HDR_SIZE, val_len);
	rc = do_request(c, KVT_OP_PUT_ALLOC, KVT_SHM_ALLOC_FIXED + len, NULL,
			0, &rh);
	if ((rc == KVT_ENOSPACE || rc == KVT_EBUSY) && !c->broken)
		return 1;
	if (rc < 0)
		return rc;
	if (rh.body_len != sizeof(b)) {
		discard_body(c, rh.body_len);
		return conn_fail(c, KVT_EPROTO, "bad PUT_ALLOC reply");
	}
	rc = read_body(c, b, sizeof(b));
	if (rc < 0)
		return rc;
	if (kvt_shm_slot_parse(b, sizeof(b), &slot) < 0 ||
	    slot.offset > c->shm_size || val_len > c->shm_size - slot.offset)
		return conn_fail(c, KVT_EPROTO, "slot outside the arena");
	kvt_shmmap_populate(c->map, c->shm + slot.offset, val_len);
	memcpy(c->shm + slot.offset, val, val_len);
	kvt_shm_commit_req_encode(c->sbuf + KVT_HDR_SIZE, slot.id);
	rc = do_request(c, KVT_OP_PUT_COMMIT, KVT_SHM_COMMIT_SIZE, NULL, 0,
			&rh);
	if (rc < 0)
		return rc;
	return discard_body(c, rh.body_len);
}

int kvt_client_shm(const kvt_client *c)
{
	return c && c->shm ? 1 : 0;
}

/* ---- Connecting ----------------------------------------------------- */

/*
 * connect() interrupted by a signal keeps going in the background, so
 * retrying it could fail with EALREADY; wait for it instead.
 */
static int connect_wait(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t sl = sizeof(int);
	int err = 0;

	for (;;) {
		int n = poll(&p, 1, -1);

		if (n > 0)
			break;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
		return -errno;
	return err ? -err : 0;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd, rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		if (rc == -EINTR || rc == -EINPROGRESS || rc == -EALREADY)
			rc = connect_wait(fd);
		if (rc < 0) {
			close(fd);
			return rc;
		}
	}
	return fd;
}

/*
 * HELLO: checks the protocol version and learns the daemon's limits, which
 * size c->sbuf and let requests be checked before they are sent.
 */
static int hello(kvt_client *c)
{
	struct kvt_frame_header rh;
	struct kvt_hello hl;
	struct kvt_shm_hello sh;
	uint8_t body[KVT_HELLO_REPLY_SHM_SIZE];
	size_t got;
	uint8_t req[KVT_HDR_SIZE + KVT_HELLO_REQ_SIZE];
	uint64_t rmax;
	size_t ns_max, key_max;
	int rc;

	/* Before HELLO only tiny frames are expected; use proto's defaults. */
	kvt_limits_default(&c->lim);
	c->rlim = c->lim;
	c->sbuf = req;
	c->sbuf_cap = sizeof(req);
	kvt_hello_req_encode(req + KVT_HDR_SIZE, KVT_PROTO_VERSION,
			     shm_wanted() ? KVT_FEAT_SHM : 0);
	c->want_fd = true;
	rc = do_request(c, KVT_OP_HELLO, KVT_HELLO_REQ_SIZE, NULL, 0, &rh);
	c->sbuf = NULL;
	c->sbuf_cap = 0;
	if (rc < 0)
		return rc;

	if (rh.body_len < KVT_HELLO_REPLY_SIZE) {
		discard_body(c, rh.body_len);
		return conn_fail(c, KVT_EPROTO, "HELLO reply of %u bytes is too "
				 "short", rh.body_len);
	}
	got = rh.body_len < sizeof(body) ? rh.body_len : sizeof(body);
	rc = read_body(c, body, got);
	c->want_fd = false;
	if (rc < 0)
		return rc;
	/* Later protocol versions may append fields: skip what we do not know. */
	rc = discard_body(c, rh.body_len - got);
	if (rc < 0)
		return rc;
	kvt_shm_hello_parse(body, got, &sh);
	rc = kvt_hello_reply_parse(body, got, &hl);
	if (rc < 0)
		return conn_fail(c, KVT_EPROTO, "daemon sent unusable limits in "
				 "its HELLO reply");
	if (hl.version != KVT_PROTO_VERSION)
		return conn_fail(c, KVT_EVERSION, "daemon speaks protocol "
				 "version %u, this client %u", hl.version,
				 KVT_PROTO_VERSION);
	c->lim = hl.lim;
	if (hl.features & KVT_FEAT_SHM)
		shm_map(c, &sh);
	/* The mapping keeps the arena; the fd itself is not needed. */
	if (c->recv_fd >= 0) {
		close(c->recv_fd);
		c->recv_fd = -1;
	}

	/*
	 * Replies may be larger than requests (a GET reply is a value) but
	 * are bounded by the daemon's own limits; the floor leaves room for
	 * STATS documents whatever the configured limits are.
	 */
	rmax = c->lim.max_body;
	if (rmax < c->lim.max_value)
		rmax = c->lim.max_value;
	if (rmax < KVT_CLIENT_REPLY_MIN)
		rmax = KVT_CLIENT_REPLY_MIN;
	if (rmax > KVT_BODY_FIELD_MAX)
		rmax = KVT_BODY_FIELD_MAX;
	c->rlim.max_body = rmax;

	ns_max = c->lim.max_ns < KVT_NS_MAX ? c->lim.max_ns : KVT_NS_MAX;
	key_max = c->lim.max_key < KVT_KEY_FIELD_MAX ? c->lim.max_key
						     : KVT_KEY_FIELD_MAX;
	/* The PUT_ALLOC body is the largest request prefix we build. */
	c->sbuf_cap = KVT_HDR_SIZE + KVT_SHM_ALLOC_FIXED +
		      kvt_put_req_prefix_size(ns_max, key_max);
	if (c->sbuf_cap < KVT_HDR_SIZE + kvt_key_req_size(ns_max, key_max))
		c->sbuf_cap = KVT_HDR_SIZE + kvt_key_req_size(ns_max, key_max);
	c->sbuf = malloc(c->sbuf_cap);
	if (!c->sbuf) {
		c->sbuf_cap = 0;
		return set_err(c, -ENOMEM, "out of memory");
	}
	return 0;
}

int kvt_connect(kvt_client **out, const char *socket_path)
{
	char defpath[sizeof(((struct sockaddr_un *)0)->sun_path)];
	kvt_client *c;
	int rc;

	connect_errmsg[0] = '\0';
	if (!out) {
		snprintf(connect_errmsg, sizeof(connect_errmsg),
			 "kvt_connect: out is NULL");
		return KVT_EINVAL;
	}
	*out = NULL;
	if (!socket_path) {
		rc = kvt_socket_default(defpath, sizeof(defpath));
		if (rc < 0) {
			snprintf(connect_errmsg, sizeof(connect_errmsg),
				 "cannot determine the default socket path "
				 "(KVTIER_SOCKET or XDG_RUNTIME_DIR too long?)");
			return rc;
		}
		socket_path = defpath;
	}
	if (!*socket_path) {
		snprintf(connect_errmsg, sizeof(connect_errmsg),
			 "empty socket path");
		return KVT_EINVAL;
	}

	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(connect_errmsg, sizeof(connect_errmsg),
			 "out of memory");
		return -ENOMEM;
	}
	c->next_id = 1;
	c->recv_fd = -1;
	kvt_spin_init(&c->spin, spin_wanted_ns());
	c->fd = unix_connect(socket_path);
	if (c->fd < 0) {
		rc = c->fd;
		snprintf(connect_errmsg, sizeof(connect_errmsg),
			 "cannot connect to %s: %s", socket_path,
			 kvt_strerror(rc));
		free(c);
		return rc;
	}
	rc = hello(c);
	if (rc < 0) {
		snprintf(connect_errmsg, sizeof(connect_errmsg),
			 "handshake with daemon at %s failed: %s", socket_path,
			 c->errmsg);
		kvt_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

void kvt_close(kvt_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->recv_fd >= 0)
		close(c->recv_fd);
	/* Closing the connection ends our leases; then the map can go. */
	kvt_shmmap_put(c->map);
	free(c->sbuf);
	free(c);
}

const char *kvt_client_errmsg(const kvt_client *c)
{
	if (c)
		return c->errmsg;
	if (connect_errmsg[0])
		return connect_errmsg;
	return "no connection (kvt_connect() was not called or did not fail)";
}

/* ---- Requests ------------------------------------------------------- */

int kvt_ping(kvt_client *c)
{
	struct kvt_frame_header rh;
	int rc;

	if (!c)
		return KVT_EINVAL;
	rc = check_usable(c);
	if (rc < 0)
		return rc;
	rc = do_request(c, KVT_OP_PING, 0, NULL, 0, &rh);
	if (rc < 0)
		return rc;
	return discard_body(c, rh.body_len);
}

int kvt_put(kvt_client *c, const char *ns, const void *key, size_t key_len,
	    const void *val, size_t val_len, const struct kvt_put_opts *opts)
{
	struct kvt_frame_header rh;
	struct kvt_put_req r;
	size_t len;
	int rc;

	if (!c)
		return KVT_EINVAL;
	rc = check_usable(c);
	if (rc < 0)
		return rc;
	memset(&r, 0, sizeof(r));
	rc = check_key(c, ns, key, key_len, &r.k);
	if (rc < 0)
		return rc;
	if (!val && val_len)
		return set_err(c, KVT_EINVAL, "value is NULL");
	if (opts && opts->dtype >= KVT_DTYPE_END_)
		return set_err(c, KVT_EINVAL, "unknown dtype %u", opts->dtype);
	if (val_len > c->lim.max_value)
		return set_err(c, KVT_ETOOBIG, "value is %zu bytes, the daemon "
			       "allows at most %llu", val_len,
			       (unsigned long long)c->lim.max_value);
	len = kvt_put_req_prefix_size(r.k.ns_len, r.k.key_len);
	if (val_len > c->lim.max_body || len > c->lim.max_body - val_len)
		return set_err(c, KVT_ETOOBIG, "request of %zu bytes exceeds "
			       "the daemon's frame limit of %llu bytes",
			       len + val_len,
			       (unsigned long long)c->lim.max_body);
	r.dtype = opts ? opts->dtype : KVT_DTYPE_NONE;
	r.ttl_s = opts ? opts->ttl_s : 0;
	r.value = val;
	r.value_len = val_len;
	if (c->shm && val_len >= c->shm_threshold &&
	    val_len >= KVT_CLIENT_SHM_PUT_MIN) {
		/* The prefix goes after PUT_ALLOC's length field. */
		rc = kvt_put_req_encode_prefix(
			c->sbuf + KVT_HDR_SIZE + KVT_SHM_ALLOC_FIXED,
			c->sbuf_cap - KVT_HDR_SIZE - KVT_SHM_ALLOC_FIXED, &r,
			&len);
		if (rc == 0) {
			rc = put_shm(c, len, val, val_len);
			if (rc <= 0)
				return rc;
		}
	}
	rc = kvt_put_req_encode_prefix(c->sbuf + KVT_HDR_SIZE,
				       c->sbuf_cap - KVT_HDR_SIZE, &r, &len);
	if (rc < 0)
		return set_err(c, rc, "cannot encode PUT request: %s",
			       kvt_strerror(rc));
	rc = do_request(c, KVT_OP_PUT, len, val, val_len, &rh);
	if (rc < 0)
		return rc;
	return discard_body(c, rh.body_len);
}

int kvt_get(kvt_client *c, const char *ns, const void *key, size_t key_len,
	    void *buf, size_t cap, size_t *val_len)
{
	struct kvt_frame_header rh;
	struct value_src v;
	int rc;

	if (val_len)
		*val_len = 0;
	if (!c)
		return KVT_EINVAL;
	if (!val_len || (!buf && cap))
		return set_err(c, KVT_EINVAL, "%s is NULL",
			       val_len ? "buf" : "val_len");
	rc = key_request(c, KVT_OP_GET, ns, key, key_len, &rh);
	if (rc < 0)
		return rc;
	rc = value_open(c, &rh, &v);
	if (rc < 0)
		return rc;
	if (v.len > cap) {
		/* Drain the value so the next reply starts on a frame. */
		rc = value_skip(c, &v);
		if (rc < 0)
			return rc;
		*val_len = v.len;
		return set_err(c, KVT_ERANGE, "value is %zu bytes, the buffer "
			       "holds %zu", v.len, cap);
	}
	rc = value_copy(c, &v, buf);
	if (rc < 0)
		return rc;
	*val_len = v.len;
	return 0;
}

/*
 * Reads the whole reply body into a new malloc'd buffer with `extra` spare
 * bytes after it (room for a NUL); never NULL on success, even for an
 * empty body.  On failure the body has been consumed or the connection is
 * broken.
 */
static int read_body_alloc(kvt_client *c, const struct kvt_frame_header *rh,
			   size_t extra, const char *what, uint8_t **out)
{
	size_t size = (size_t)rh->body_len + extra;
	uint8_t *p = malloc(size ? size : 1);
	int rc;

	*out = NULL;
	if (!p) {
		rc = discard_body(c, rh->body_len);
		if (rc < 0)
			return rc;
		return set_err(c, -ENOMEM, "cannot allocate %u bytes for the %s",
			       rh->body_len, what);
	}
	rc = read_body(c, p, rh->body_len);
	if (rc < 0) {
		free(p);
		return rc;
	}
	*out = p;
	return 0;
}

int kvt_get_alloc(kvt_client *c, const char *ns, const void *key,
		  size_t key_len, void **val, size_t *val_len)
{
	struct kvt_frame_header rh;
	struct value_src v;
	uint8_t *p = NULL;
	int rc;

	if (val)
		*val = NULL;
	if (val_len)
		*val_len = 0;
	if (!c)
		return KVT_EINVAL;
	if (!val || !val_len)
		return set_err(c, KVT_EINVAL, "%s is NULL",
			       val ? "val_len" : "val");
	rc = key_request(c, KVT_OP_GET, ns, key, key_len, &rh);
	if (rc < 0)
		return rc;
	rc = value_open(c, &rh, &v);
	if (rc < 0)
		return rc;
	/* The caller is promised a pointer, even for an empty value. */
	if (!v.shm) {
		rc = read_body_alloc(c, &rh, 0, "value", &p);
	} else if (!(p = malloc(v.len ? v.len : 1))) {
		rc = value_skip(c, &v);
		if (rc == 0)
			rc = set_err(c, -ENOMEM, "cannot allocate %zu bytes for "
				     "the value", v.len);
	} else {
		rc = value_copy(c, &v, p);
	}
	if (rc < 0) {
		if (v.shm)
			free(p);
		return rc;
	}
	*val = p;
	*val_len = v.len;
	return 0;
}

int kvt_del(kvt_client *c, const char *ns, const void *key, size_t key_len)
{
	struct kvt_frame_header rh;
	int rc;

	if (!c)
		return KVT_EINVAL;
	rc = key_request(c, KVT_OP_DEL, ns, key, key_len, &rh);
	if (rc < 0)
		return rc;
	return discard_body(c, rh.body_len);
}

int kvt_exists(kvt_client *c, const char *ns, const void *key,
	       size_t key_len)
{
	struct kvt_frame_header rh;
	uint8_t b[8];
	size_t n;
	int rc, present;

	if (!c)
		return KVT_EINVAL;
	rc = key_request(c, KVT_OP_EXISTS, ns, key, key_len, &rh);
	if (rc == KVT_ENOTFOUND)
		return 0;
	if (rc < 0)
		return rc;
	/*
	 * A present key is a status-0 reply; a body, if the daemon sends
	 * one, is a little-endian flag (u8 to u64) that may still say 0.
	 */
	if (rh.body_len == 0)
		return 1;
	n = rh.body_len < sizeof(b) ? rh.body_len : sizeof(b);
	rc = read_body(c, b, n);
	if (rc < 0)
		return rc;
	rc = discard_body(c, rh.body_len - n);
	if (rc < 0)
		return rc;
	present = 0;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			present = 1;
	return present;
}

/* Checks MATCH arguments against the protocol and the daemon's limits. */
static int check_match(kvt_client *c, const char *ns,
		       const void *const *keys, const size_t *key_lens,
		       size_t n)
{
	size_t ns_len = ns ? strlen(ns) : 0;
	int rc;

	if (n && (!keys || !key_lens))
		return set_err(c, KVT_EINVAL, "keys or key_lens is NULL");
	rc = check_ns(c, ns_len);
	if (rc < 0)
		return rc;
	if (n > KVT_MATCH_KEYS_MAX)
		return set_err(c, KVT_ETOOBIG, "%zu keys, a MATCH carries at "
			       "most %d", n, KVT_MATCH_KEYS_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!keys[i] || key_lens[i] == 0)
			return set_err(c, KVT_EINVAL, "key %zu is %s", i,
				       keys[i] ? "empty" : "NULL");
		if (key_lens[i] > c->lim.max_key ||
		    key_lens[i] > KVT_KEY_FIELD_MAX)
			return set_err(c, KVT_ETOOBIG, "key %zu is %zu bytes, "
				       "the daemon allows at most %u", i,
				       key_lens[i], c->lim.max_key);
	}
	return 0;
}

/*
 * Reads a reply body whose first size bytes are fields we know into buf;
 * later versions may append fields, which are skipped.
 */
static int read_fixed_reply(kvt_client *c, const struct kvt_frame_header *rh,
			    uint8_t *buf, size_t size, const char *what)
{
	int rc;

	if (rh->body_len < size) {
		rc = discard_body(c, rh->body_len);
		if (rc < 0)
			return rc;
		return conn_fail(c, KVT_EPROTO, "%s reply of %u bytes, "
				 "expected %zu", what, rh->body_len, size);
	}
	rc = read_body(c, buf, size);
	if (rc < 0)
		return rc;
	return discard_body(c, rh->body_len - size);
}

/* MATCH and PREFETCH: a key list in, a u32 count out. */
static int key_list_request(kvt_client *c, uint8_t op, const char *ns,
			    const void *const *keys, const size_t *key_lens,
			    size_t n, size_t *result)
{
	struct kvt_frame_header rh;
	uint8_t rb[KVT_MATCH_REPLY_SIZE];
	uint8_t *body;
	size_t need, len, ns_len = ns ? strlen(ns) : 0;
	uint32_t m;
	int rc;

	if (result)
		*result = 0;
	if (!c)
		return KVT_EINVAL;
	if (!result)
		return set_err(c, KVT_EINVAL, "result pointer is NULL");
	rc = check_usable(c);
	if (rc < 0)
		return rc;
	rc = check_match(c, ns, keys, key_lens, n);
	if (rc < 0)
		return rc;
	need = kvt_match_req_size(ns_len, key_lens, n);
	if (need > c->lim.max_body)
		return set_err(c, KVT_ETOOBIG, "%s body of %zu bytes exceeds "
			       "the daemon's limit of %llu", kvt_op_name(op),
			       need, (unsigned long long)c->lim.max_body);
	/*
	 * The body can reach megabytes (4096 keys of up to max_key bytes),
	 * more than the send buffer holds: build it apart and send it as the
	 * request's "value".
	 */
	body = malloc(need);
	if (!body)
		return set_err(c, -ENOMEM, "cannot allocate %zu bytes for a "
			       "%s request", need, kvt_op_name(op));
	rc = kvt_match_req_encode(body, need, (const uint8_t *)(ns ? ns : ""),
				  ns_len, keys, key_lens, n, &len);
	if (rc < 0) {
		free(body);
		return set_err(c, rc, "cannot encode %s request: %s",
			       kvt_op_name(op), kvt_strerror(rc));
	}
	rc = do_request(c, op, 0, body, len, &rh);
	free(body);
	if (rc < 0)
		return rc;
	rc = read_fixed_reply(c, &rh, rb, sizeof(rb), kvt_op_name(op));
	if (rc < 0)
		return rc;
	rc = kvt_match_reply_parse(rb, sizeof(rb), &m);
	if (rc < 0 || m > n)
		return conn_fail(c, KVT_EPROTO, "%s reply says %u of %zu keys",
				 kvt_op_name(op), m, n);
	*result = m;
	return 0;
}

int kvt_match(kvt_client *c, const char *ns, const void *const *keys,
	      const size_t *key_lens, size_t n, size_t *matched)
{
	return key_list_request(c, KVT_OP_MATCH, ns, keys, key_lens, n,
				matched);
}

int kvt_pin(kvt_client *c, const char *ns, const void *const *keys,
	    const size_t *key_lens, size_t n, size_t *pinned)
{
	return key_list_request(c, KVT_OP_PIN, ns, keys, key_lens, n, pinned);
}

int kvt_unpin(kvt_client *c, const char *ns, const void *const *keys,
	      const size_t *key_lens, size_t n, size_t *unpinned)
{
	return key_list_request(c, KVT_OP_UNPIN, ns, keys, key_lens, n,
				unpinned);
}

int kvt_prefetch(kvt_client *c, const char *ns, const void *const *keys,
		 const size_t *key_lens, size_t n, size_t *started)
{
	return key_list_request(c, KVT_OP_PREFETCH, ns, keys, key_lens, n,
				started);
}

int kvt_drop(kvt_client *c, const char *ns, uint64_t *dropped)
{
	struct kvt_frame_header rh;
	uint8_t body[KVT_DROP_FIXED + KVT_NS_MAX], rb[KVT_DROP_REPLY_SIZE];
	size_t len, ns_len = ns ? strlen(ns) : 0;
	int rc;

	if (dropped)
		*dropped = 0;
	if (!c)
		return KVT_EINVAL;
	rc = check_usable(c);
	if (rc < 0)
		return rc;
	rc = check_ns(c, ns_len);
	if (rc < 0)
		return rc;
	rc = kvt_drop_req_encode(body, sizeof(body),
				 (const uint8_t *)(ns ? ns : ""), ns_len, &len);
	if (rc < 0)
		return set_err(c, rc, "cannot encode DROP request: %s",
			       kvt_strerror(rc));
	rc = do_request(c, KVT_OP_DROP, 0, body, len, &rh);
	if (rc < 0)
		return rc;
	rc = read_fixed_reply(c, &rh, rb, sizeof(rb), "DROP");
	if (rc < 0)
		return rc;
	uint64_t n;
	kvt_drop_reply_parse(rb, sizeof(rb), &n);
	if (dropped)
		*dropped = n;
	return 0;
}

/* ---- batches ------------------------------------------------------------ */

/*
 * Requests in flight at once in a batch.  Bounded so that neither side can
 * block the other: our queued GET requests always fit in the socket buffer
 * while we read replies, and PUT replies are tiny.
 */
#define KVT_BATCH_WINDOW 32

/* Encodes the request for item i into c->sbuf and sends it. */
typedef int (*batch_send_fn)(kvt_client *c, void *arg, size_t i,
			     uint64_t *id);
/* Reads the reply for item i (header already read, rc its status). */
typedef int (*batch_recv_fn)(kvt_client *c, void *arg, size_t i, int rc,
			     const struct kvt_frame_header *rh);

static int run_batch(kvt_client *c, uint8_t op, size_t n, int *statuses,
		     batch_send_fn send_fn, batch_recv_fn recv_fn, void *arg)
{
	uint64_t ids[KVT_BATCH_WINDOW];
	struct kvt_frame_header rh;
	size_t sent = 0, done = 0;
	int rc = check_usable(c);

	if (rc < 0)
		return rc;
	while (done < n) {
		while (sent < n && sent - done < KVT_BATCH_WINDOW) {
			rc = send_fn(c, arg, sent, &ids[sent % KVT_BATCH_WINDOW]);
			if (rc > 0) {
				/* Refused locally (bad key): no frame sent. */
				statuses[sent] = -rc;
				ids[sent % KVT_BATCH_WINDOW] = 0;
				sent++;
				continue;
			}
			if (rc < 0) {
				rc = send_failed(c, rc, op,
						 ids[sent % KVT_BATCH_WINDOW], &rh);
				goto fail;
			}
			sent++;
		}
		if (ids[done % KVT_BATCH_WINDOW] == 0) {
			done++;
			continue;
		}
		rc = read_reply(c, op, ids[done % KVT_BATCH_WINDOW], &rh);
		if (rc < 0 && c->broken)
			goto fail;
		rc = recv_fn(c, arg, done, rc, &rh);
		if (rc < 0 && c->broken)
			goto fail;
		statuses[done] = rc;
		done++;
	}
	return 0;
fail:
	for (; done < n; done++)
		statuses[done] = rc;
	return rc;
}

struct mput_arg {
	const char *ns;
	const void *const *keys;
	const size_t *key_lens;
	const void *const *vals;
	const size_t *val_lens;
	const struct kvt_put_opts *opts;
};

static int mput_send(kvt_client *c, void *arg, size_t i, uint64_t *id)
{
	struct mput_arg *a = arg;
	struct kvt_put_req pr = { 0 };
	size_t len;
	int rc = check_key(c, a->ns, a->keys[i], a->key_lens[i], &pr.k);

	if (rc < 0)
		return -rc; /* this item only */
	if (a->val_lens[i] > c->lim.max_value)
		return -KVT_ETOOBIG;
	pr.dtype = a->opts ? a->opts->dtype : 0;
	pr.ttl_s = a->opts ? a->opts->ttl_s : 0;
	pr.value_len = a->val_lens[i];
	rc = kvt_put_req_encode_prefix(c->sbuf + KVT_HDR_SIZE,
				       c->sbuf_cap - KVT_HDR_SIZE, &pr, &len);
	if (rc < 0)
		return -rc;
	return send_request(c, KVT_OP_PUT, len, a->vals[i], a->val_lens[i],
			    id);
}

static int mput_recv(kvt_client *c, void *arg, size_t i, int rc,
		     const struct kvt_frame_header *rh)
{
	(void)arg;
	(void)i;
	if (rc < 0)
		return rc;
	return discard_body(c, rh->body_len);
}

int kvt_mput(kvt_client *c, const char *ns, const void *const *keys,
	     const size_t *key_lens, const void *const *vals,
	     const size_t *val_lens, size_t n, const struct kvt_put_opts *opts,
	     int *statuses)
{
	struct mput_arg a = { ns, keys, key_lens, vals, val_lens, opts };

	if (!c)
		return KVT_EINVAL;
	if (n && (!keys || !key_lens || !vals || !val_lens || !statuses))
		return set_err(c, KVT_EINVAL, "mput: NULL array");
	if (c->shm) {
		/*
		 * Large values go through slots, two round trips each but no
		 * socket copy: worth more than pipelining for megabyte blocks.
		 */
		for (size_t i = 0; i < n; i++) {
			statuses[i] = kvt_put(c, ns, keys[i], key_lens[i],
					      vals[i], val_lens[i], opts);
			if (statuses[i] < 0 && c->broken) {
				for (size_t j = i + 1; j < n; j++)
					statuses[j] = statuses[i];
				return statuses[i];
			}
		}
		return 0;
	}
	return run_batch(c, KVT_OP_PUT, n, statuses, mput_send, mput_recv, &a);
}

struct mget_arg {
	const char *ns;
	const void *const *keys;
	const size_t *key_lens;
	const struct iovec *bufs;
	size_t *val_lens;
};

static int mget_send(kvt_client *c, void *arg, size_t i, uint64_t *id)
{
	struct mget_arg *a = arg;
	struct kvt_keyref k;
	size_t len;
	int rc = check_key(c, a->ns, a->keys[i], a->key_lens[i], &k);

	a->val_lens[i] = 0;
	if (rc < 0)
		return -rc;
	rc = kvt_key_req_encode(c->sbuf + KVT_HDR_SIZE,
				c->sbuf_cap - KVT_HDR_SIZE, &k, &len);
	if (rc < 0)
		return -rc;
	return send_request(c, KVT_OP_GET, len, NULL, 0, id);
}

/* The value goes straight into the caller's buffer for item i. */
static int mget_recv(kvt_client *c, void *arg, size_t i, int rc,
		     const struct kvt_frame_header *rh)
{
	struct mget_arg *a = arg;
	struct value_src v;

	if (rc < 0)
		return rc;
	rc = value_open(c, rh, &v);
	if (rc < 0)
		return rc;
	a->val_lens[i] = v.len;
	if (v.len > a->bufs[i].iov_len) {
		rc = value_skip(c, &v);
		return rc < 0 ? rc : KVT_ERANGE;
	}
	return value_copy(c, &v, a->bufs[i].iov_base);
}

int kvt_mget(kvt_client *c, const char *ns, const void *const *keys,
	     const size_t *key_lens, size_t n, const struct iovec *bufs,
	     size_t *val_lens, int *statuses)
{
	struct mget_arg a = { ns, keys, key_lens, bufs, val_lens };

	if (!c)
		return KVT_EINVAL;
	if (n && (!keys || !key_lens || !bufs || !val_lens || !statuses))
		return set_err(c, KVT_EINVAL, "mget: NULL array");
	return run_batch(c, KVT_OP_GET, n, statuses, mget_send, mget_recv, &a);
}

void kvt_hot_free(struct kvt_hot_entry *entries)
{
	free(entries);
}

int kvt_hot(kvt_client *c, unsigned top, struct kvt_hot_entry **entries,
	    size_t *n)
{
	struct kvt_frame_header rh;
	struct kvt_hot_entry *v;
	uint8_t req[KVT_HOT_REQ_SIZE], *body;
	uint64_t now;
	uint32_t count;
	size_t pos;
	char *sp;
	int rc;

	if (entries)
		*entries = NULL;
	if (n)
		*n = 0;
	if (!c)
		return KVT_EINVAL;
	if (!entries || !n || top == 0 || top > KVT_HOT_TOP_MAX)
		return set_err(c, KVT_EINVAL, "hot: top must be 1 to %d and "
			       "the outputs not NULL", KVT_HOT_TOP_MAX);
	rc = check_usable(c);
	if (rc < 0)
		return rc;
	kvt_hot_req_encode(req, top);
	rc = do_request(c, KVT_OP_HOT, 0, req, sizeof(req), &rh);
	if (rc < 0)
		return rc;
	rc = read_body_alloc(c, &rh, 0, "HOT reply", &body);
	if (rc < 0)
		return rc;
	if (kvt_hot_reply_head_parse(body, rh.body_len, &count, &now) ||
	    count > top) {
		free(body);
		return conn_fail(c, KVT_EPROTO, "malformed HOT reply");
	}
	/* One allocation: the entries, then their strings (at most the body's
	 * bytes plus one NUL per namespace). */
	v = malloc(count * sizeof(*v) + rh.body_len + count + 1);
	if (!v) {
		free(body);
		return set_err(c, -ENOMEM, "cannot allocate the HOT entries");
	}
	sp = (char *)(v + count);
	pos = KVT_HOT_REPLY_FIXED;
	for (uint32_t i = 0; i < count; i++) {
		struct kvt_hot_item it;
		size_t used;

		if (kvt_hot_item_parse(body + pos, rh.body_len - pos, &it,
				       &used)) {
			free(v);
			free(body);
			return conn_fail(c, KVT_EPROTO, "malformed HOT item %u",
					 i);
		}
		pos += used;
		memcpy(sp, it.ns, it.ns_len);
		sp[it.ns_len] = '\0';
		v[i].ns = sp;
		sp += it.ns_len + 1;
		memcpy(sp, it.key, it.key_len);
		v[i].key = (const uint8_t *)sp;
		v[i].key_len = it.key_len;
		sp += it.key_len;
		v[i].tier = it.tier;
		v[i].size = it.size;
		v[i].hits = it.hits;
		v[i].age_s = it.ctime_s && now >= it.ctime_s
				     ? (int64_t)(now - it.ctime_s) : -1;
		v[i].idle_s = it.atime_s && now >= it.atime_s
				      ? (int64_t)(now - it.atime_s) : -1;
	}
	free(body);
	*entries = count ? v : NULL;
	if (!count)
		free(v);
	*n = count;
	return 0;
}

int kvt_stats_json(kvt_client *c, char **json, size_t *len)
{
	struct kvt_frame_header rh;
	uint8_t *p;
	int rc;

	if (json)
		*json = NULL;
	if (len)
		*len = 0;
	if (!c)
		return KVT_EINVAL;
	if (!json)
		return set_err(c, KVT_EINVAL, "json is NULL");
	rc = check_usable(c);
	if (rc < 0)
		return rc;
	rc = do_request(c, KVT_OP_STATS, 0, NULL, 0, &rh);
	if (rc < 0)
		return rc;
	rc = read_body_alloc(c, &rh, 1, "stats document", &p);
	if (rc < 0)
		return rc;
	p[rh.body_len] = '\0';
	*json = (char *)p;
	if (len)
		*len = rh.body_len;
	return 0;
}

int kvt_socket_path_default(char *buf, size_t cap)
{
	return kvt_socket_default(buf, cap);
}

const char *kvt_version(void)
{
	return KVT_VERSION_STRING;
}
