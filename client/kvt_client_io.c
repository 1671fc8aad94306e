/*
 * kvt_client_io.c - libkvtier's socket I/O and frames (kvt_client_int.h):
 * connecting the socket, sending frames, receiving and decoding replies,
 * the busy-poll wait for them, and the handle's error message.
 *
 * Frames are built with proto/'s pure codecs; this file only adds the
 * socket I/O around them.  Large values never pass through an intermediate
 * buffer: a PUT goes out as one sendmsg() of [header + body prefix][value],
 * and a GET reply's body is received straight into the caller's buffer.
 * Small replies are read through a per-connection buffer so that header
 * and body usually arrive in one recv().
 *
 * An fd passed to the daemon (SCM_RIGHTS, for registered memory) goes
 * with the first byte of its frame (kvt_ci_send_iov), as recv_fds() takes
 * the arena's.
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
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvt_client_int.h"
#include "kvt_clock.h"
#include "kvt_forkid.h"
#include "kvt_frame.h"
#include "kvt_spin.h"
#include "kvtier_errors.h"

/* Discards at least this large use a temporary buffer of _BUF bytes. */
#define KVT_CLIENT_DISCARD_MIN (64u << 10)
#define KVT_CLIENT_DISCARD_BUF (1u << 20)
/* Default poll for a reply before sleeping, microseconds (kvt_spin.h). */
#define KVT_CLIENT_SPIN_US 50u

/* ---- The guard ------------------------------------------------------ */

/*
 * Misuse that would otherwise read the wrong replies: a child of fork()
 * shares the parent's socket, two threads share one receive buffer and one
 * reply stream.  Both used to return another key's value or hang in
 * recv(); both now fail before anything is sent.  The fork check comes
 * first: a handle copied while a parent's thread was in a call stays
 * "busy" in the child for ever, and the useful answer there is that it
 * was inherited.
 */
int kvt_ci_enter(kvt_client *c)
{
	if (!c)
		return KVT_EINVAL;
	if (c->forkid != kvt_forkid_get())
		/* The child's own copy of c: writing its message is safe. */
		return kvt_ci_err(c, KVT_EFORKED, "this connection was made by "
				  "process %ld and cannot be used in process "
				  "%ld, its child after fork(): connect again "
				  "in the child", (long)c->pid,
				  (long)getpid());
	if (atomic_exchange_explicit(&c->busy, true, memory_order_acquire))
		return KVT_ECONCURRENT;
	return 0;
}

void kvt_ci_leave(kvt_client *c)
{
	atomic_store_explicit(&c->busy, false, memory_order_release);
}

/* ---- Messages ------------------------------------------------------- */

int kvt_ci_err(kvt_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

int kvt_ci_fail(kvt_client *c, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
	va_end(ap);
	c->broken = true;
	memcpy(c->broken_msg, c->errmsg, sizeof(c->broken_msg));
	return rc;
}

int kvt_ci_usable(kvt_client *c)
{
	if (!c->broken)
		return 0;
	return kvt_ci_err(c, KVT_ECLOSED, "connection unusable after an "
			  "earlier error: %s", c->broken_msg);
}

/*
 * A peer that is gone shows up as EOF, as ECONNRESET (it closed with our
 * request unread) or as EPIPE; callers get KVT_ECLOSED for all three,
 * since all they need to know is to reconnect.
 */
int kvt_ci_lost(kvt_client *c, int rc, const char *when)
{
	if (rc == KVT_ECLOSED)
		return kvt_ci_fail(c, KVT_ECLOSED, "daemon closed the "
				   "connection (%s)", when);
	if (rc == -ECONNRESET || rc == -EPIPE)
		return kvt_ci_fail(c, KVT_ECLOSED, "daemon closed the "
				   "connection (%s: %s)", when,
				   kvt_strerror(rc));
	return kvt_ci_fail(c, rc, "connection to daemon failed (%s: %s)",
			   when, kvt_strerror(rc));
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

int kvt_ci_connect(kvt_client *c, const char *path)
{
	c->forkid = kvt_forkid_get();
	c->pid = getpid();
	c->next_id = 1;
	c->recv_fd = -1;
	kvt_spin_init(&c->spin, spin_wanted_ns());
	c->fd = unix_connect(path);
	return c->fd < 0 ? c->fd : 0;
}

/* ---- Socket I/O ----------------------------------------------------- */

/*
 * MSG_NOSIGNAL turns a dead peer into EPIPE instead of a SIGPIPE that
 * would kill the caller's process.
 */
int kvt_ci_send_all(int fd, struct iovec *iov, int iovcnt)
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

int kvt_ci_send_iov(kvt_client *c, struct iovec *iov, int iovcnt, int fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg;
	ssize_t n;

	while (iovcnt > 0 && iov[0].iov_len == 0) {
		iov++;
		iovcnt--;
	}
	while (iovcnt > 0) {
		/*
		 * With job replies due, never block on a full socket: the
		 * daemon may be waiting for us to read them before it reads
		 * more (its reply queue has a high-water mark).
		 */
		bool jobs = c->as_frames > 0 && c->as_ops;

		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)iovcnt;
		if (fd >= 0) {
			struct cmsghdr *cm;

			memset(&u, 0, sizeof(u));
			msg.msg_control = u.buf;
			msg.msg_controllen = sizeof(u.buf);
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &fd, sizeof(fd));
		}
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | (jobs ? MSG_DONTWAIT : 0));
		if (n < 0) {
			struct pollfd p = { .fd = c->fd,
					    .events = POLLOUT | POLLIN };
			int rc;

			if (errno == EINTR)
				continue;
			if (!jobs || (errno != EAGAIN && errno != EWOULDBLOCK))
				return -errno;
			if (poll(&p, 1, -1) < 0 && errno != EINTR)
				return -errno;
			if (p.revents & POLLIN) {
				rc = c->as_ops->read_one(c);
				if (rc < 0 && c->broken)
					return rc;
			}
			continue;
		}
		/* The descriptor went with the first byte sent. */
		fd = -1;
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

/* ---- Reply bodies --------------------------------------------------- */

int kvt_ci_discard_body(kvt_client *c, size_t len)
{
	int rc = discard(c, len);

	if (rc < 0)
		return kvt_ci_lost(c, rc, "reading a reply body");
	return 0;
}

int kvt_ci_read_body(kvt_client *c, void *dst, size_t len)
{
	int rc = read_exact(c, dst, len);

	if (rc < 0)
		return kvt_ci_lost(c, rc, "reading a reply body");
	return 0;
}

int kvt_ci_read_body_alloc(kvt_client *c, const struct kvt_frame_header *rh,
			   size_t extra, const char *what, uint8_t **out)
{
	size_t size = (size_t)rh->body_len + extra;
	uint8_t *p = malloc(size ? size : 1);
	int rc;

	*out = NULL;
	if (!p) {
		rc = kvt_ci_discard_body(c, rh->body_len);
		if (rc < 0)
			return rc;
		return kvt_ci_err(c, -ENOMEM, "cannot allocate %u bytes for "
				  "the %s", rh->body_len, what);
	}
	rc = kvt_ci_read_body(c, p, rh->body_len);
	if (rc < 0) {
		free(p);
		return rc;
	}
	*out = p;
	return 0;
}

int kvt_ci_read_fixed_reply(kvt_client *c, const struct kvt_frame_header *rh,
			    uint8_t *buf, size_t size, const char *what)
{
	int rc;

	if (rh->body_len < size) {
		rc = kvt_ci_discard_body(c, rh->body_len);
		if (rc < 0)
			return rc;
		return kvt_ci_fail(c, KVT_EPROTO, "%s reply of %u bytes, "
				   "expected %zu", what, rh->body_len, size);
	}
	rc = kvt_ci_read_body(c, buf, size);
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh->body_len - size);
}

/* ---- Frames --------------------------------------------------------- */

bool kvt_ci_buffered(const kvt_client *c)
{
	return c->rpos < c->rlen;
}

int kvt_ci_read_reply(kvt_client *c, uint8_t op, uint64_t id,
		      struct kvt_frame_header *h)
{
	/* Replies come in order: those of the job frames sent before ours. */
	if (c->as_frames > 0 && c->as_ops) {
		int rc = c->as_ops->drain(c);

		if (rc < 0 && c->broken)
			return rc;
	}
	return kvt_ci_read_reply_now(c, op, id, h);
}

int kvt_ci_read_reply_now(kvt_client *c, uint8_t op, uint64_t id,
			  struct kvt_frame_header *h)
{
	uint8_t hb[KVT_HDR_SIZE];
	uint8_t msg[KVT_ERRMSG_MAX];
	int rc, code;

	rc = read_exact(c, hb, sizeof(hb));
	if (rc < 0)
		return kvt_ci_lost(c, rc, "waiting for the reply");
	rc = kvt_frame_header_decode(hb, sizeof(hb), &c->rlim, h);
	if (rc == KVT_EPROTO)
		return kvt_ci_fail(c, KVT_EPROTO, "reply with bad magic (is "
				   "this socket a kvtierd?)");
	if (rc == KVT_EVERSION)
		return kvt_ci_fail(c, KVT_EVERSION, "reply in protocol version "
				   "%u, this client speaks %u", h->version,
				   KVT_PROTO_VERSION);
	if (rc == KVT_ETOOBIG)
		return kvt_ci_fail(c, KVT_EPROTO, "reply body of %u bytes "
				   "exceeds the limit of %llu", h->body_len,
				   (unsigned long long)c->rlim.max_body);
	if (rc < 0)
		return kvt_ci_fail(c, KVT_EPROTO, "bad reply header: %s",
				   kvt_strerror(rc));
	if (!(h->flags & KVT_FLAG_REPLY))
		return kvt_ci_fail(c, KVT_EPROTO, "daemon sent a request frame "
				   "instead of a reply");

	if (h->status != 0) {
		if (h->status > INT_MAX || h->body_len > KVT_ERRMSG_MAX)
			return kvt_ci_fail(c, KVT_EPROTO, "malformed error "
					   "reply (status %u, %u byte message)",
					   h->status, h->body_len);
		code = -(int)h->status;
		rc = read_exact(c, msg, h->body_len);
		if (rc < 0)
			return kvt_ci_lost(c, rc, "reading an error reply");
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
			return kvt_ci_fail(c, KVT_EPROTO, "error reply for "
					   "request %llu (%s), expected %llu "
					   "(%s)",
					   (unsigned long long)h->request_id,
					   kvt_op_name(h->opcode),
					   (unsigned long long)id,
					   kvt_op_name(op));
		return code;
	}

	if (h->request_id != id || h->opcode != op)
		return kvt_ci_fail(c, KVT_EPROTO, "reply for request %llu (%s), "
				   "expected %llu (%s)",
				   (unsigned long long)h->request_id,
				   kvt_op_name(h->opcode),
				   (unsigned long long)id, kvt_op_name(op));
	return 0;
}

/* Request id 0 is what the daemon uses for unattributable errors. */
uint64_t kvt_ci_next_id(kvt_client *c)
{
	if (c->next_id == 0)
		c->next_id = 1;
	return c->next_id++;
}

int kvt_ci_send_frame(kvt_client *c, const struct iovec *pre,
		      struct kvt_frame_header *h, size_t prefix_len,
		      const void *val, size_t val_len)
{
	struct iovec iov[3];
	int n = 0;

	if (pre && pre->iov_len)
		iov[n++] = *pre;
	h->version = KVT_PROTO_VERSION;
	h->request_id = kvt_ci_next_id(c);
	h->body_len = (uint32_t)(prefix_len + val_len);
	kvt_frame_header_encode(c->sbuf, h);
	iov[n].iov_base = c->sbuf;
	iov[n].iov_len = KVT_HDR_SIZE + prefix_len;
	n++;
	/* sendmsg() does not write through iov_base; the cast is safe. */
	iov[n].iov_base = (void *)val;
	iov[n].iov_len = val_len;
	if (val_len)
		n++;
	return kvt_ci_send_iov(c, iov, n, -1);
}

/*
 * The daemon may have answered before closing (it rejects an oversized
 * frame from its header alone and then hangs up), and its reply, still
 * queued on our side, says why.  The peer is gone, so the read cannot
 * block.
 */
int kvt_ci_send_failed(kvt_client *c, int rc, uint8_t op, uint64_t id,
		       struct kvt_frame_header *rh)
{
	char when[32];
	int rrc;

	if (rc == -EPIPE || rc == -ECONNRESET) {
		rrc = kvt_ci_read_reply(c, op, id, rh);
		if (rrc < 0 && rrc != KVT_ECLOSED && rrc != KVT_EPROTO) {
			c->broken = true;
			memcpy(c->broken_msg, c->errmsg, sizeof(c->broken_msg));
			return rrc;
		}
	}
	snprintf(when, sizeof(when), "sending %s", kvt_op_name(op));
	return kvt_ci_lost(c, rc, when);
}
