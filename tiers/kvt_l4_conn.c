/*
 * kvt_l4_conn.c - one L4 session's connections and the round that drives
 * them: a batch of commands, each already given its node, is pipelined on
 * every node at once and each command gets its replies, an error or a
 * timeout.  Routing and redirects are kvt_l4_cluster.c's.
 *
 * hiredis opens the connections (redisConnectNonBlock) and parses replies
 * (its reader, with our own reply objects so that a value's buffer can be
 * handed over without a copy).  Requests are written by us with sendmsg()
 * from a list of segments, so that a block's payload goes from the caller's
 * buffer to the socket without being copied into an output buffer, and all
 * connections of a round are driven by one poll() loop with a per-node
 * inactivity deadline, so that one slow node neither serialises the others
 * nor holds a call past its timeout.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "kvt_clock.h"
#include "kvt_l4_int.h"
#include "kvtier_errors.h"

/* Bytes read from a socket at once; also the session's read buffer. */
#define L4_RBUF (256 * 1024)
/*
 * A reader buffer larger than this is freed once empty (hiredis's maxbuf).
 * Typical 2 MiB blocks then reuse one buffer instead of growing one for
 * every reply, while a 32 MiB block does not pin 32 MiB per connection.
 */
#define L4_READER_KEEP ((size_t)4 << 20)
/* Segments handed to one sendmsg(). */
#define L4_IOV 64
/* Queue marker for the AUTH reply at the head of a new connection. */
#define L4_Q_AUTH SIZE_MAX

enum { CONN_NONE, CONN_CONNECTING, CONN_READY };

/* A piece of output: ptr (borrowed) or obuf[off..off+len). */
struct l4_seg {
	const uint8_t *ptr;
	size_t off, len;
};

struct l4_conn {
	redisContext *ctx;
	int state;
	uint8_t ever;	  /* a connection to this node was established before */
	uint8_t proven;	  /* a reply arrived on this connection */
	uint64_t deadline; /* kvt_clock_ns; no progress by then: timeout */
	uint8_t *obuf;
	size_t olen, ocap;
	struct l4_seg *seg;
	size_t nseg, segcap, seg_i, seg_off;
	size_t *q; /* command indices awaiting replies, in order */
	size_t qhead, qlen, qcap;
};

/* ---- replies -------------------------------------------------------------- */

void kvt_l4i_reply_free(struct l4_reply *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->elements; i++)
		kvt_l4i_reply_free(r->element[i]);
	free(r->element);
	free(r->str);
	free(r);
}

static void *rep_new(const redisReadTask *task, int type)
{
	struct l4_reply *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->type = type;
	if (task->parent) {
		struct l4_reply *p = task->parent->obj;

		assert(p->type == L4R_ARRAY && task->idx >= 0 &&
		       (size_t)task->idx < p->elements);
		p->element[task->idx] = r;
	}
	return r;
}

static void *rep_string(const redisReadTask *task, char *str, size_t len)
{
	int type = task->type == REDIS_REPLY_ERROR    ? L4R_ERROR
		   : task->type == REDIS_REPLY_STATUS ? L4R_STATUS
						      : L4R_STRING;
	char *buf = malloc(len + 1);
	struct l4_reply *r;

	if (!buf)
		return NULL;
	r = rep_new(task, type);
	if (!r) {
		free(buf);
		return NULL;
	}
	memcpy(buf, str, len);
	buf[len] = '\0';
	r->str = buf;
	r->len = len;
	return r;
}

static void *rep_array(const redisReadTask *task, int elements)
{
	struct l4_reply *r;
	struct l4_reply **el = NULL;

	if (elements > 0) {
		el = calloc((size_t)elements, sizeof(*el));
		if (!el)
			return NULL;
	}
	r = rep_new(task, L4R_ARRAY);
	if (!r) {
		free(el);
		return NULL;
	}
	r->element = el;
	r->elements = elements > 0 ? (size_t)elements : 0;
	return r;
}

static void *rep_integer(const redisReadTask *task, long long v)
{
	struct l4_reply *r = rep_new(task, L4R_INTEGER);

	if (r)
		r->integer = v;
	return r;
}

static void *rep_nil(const redisReadTask *task)
{
	return rep_new(task, L4R_NIL);
}

static void rep_free(void *r)
{
	kvt_l4i_reply_free(r);
}

static redisReplyObjectFunctions reply_fns = {
	rep_string, rep_array, rep_integer, rep_nil, rep_free,
};

/* ---- sessions and connections -------------------------------------------- */

int kvt_l4i_session_new(struct kvt_l4 *l4, struct kvt_l4_session **out)
{
	struct kvt_l4_session *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->rbuf = malloc(L4_RBUF);
	if (!s->rbuf) {
		free(s);
		return -ENOMEM;
	}
	s->l4 = l4;
	*out = s;
	return 0;
}

struct kvt_l4 *kvt_l4i_session_l4(const struct kvt_l4_session *s)
{
	return s->l4;
}

/* Forgets the connection's output and queue (the commands keep theirs). */
static void conn_reset_io(struct l4_conn *c)
{
	c->olen = 0;
	c->nseg = c->seg_i = c->seg_off = 0;
	c->qhead = c->qlen = 0;
}

static void conn_close(struct l4_conn *c)
{
	if (c->ctx)
		redisFree(c->ctx);
	c->ctx = NULL;
	c->state = CONN_NONE;
	c->proven = 0;
	conn_reset_io(c);
}

void kvt_l4i_session_free(struct kvt_l4_session *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->nconns; i++) {
		conn_close(&s->conns[i]);
		free(s->conns[i].obuf);
		free(s->conns[i].seg);
		free(s->conns[i].q);
	}
	free(s->conns);
	free(s->pfd);
	free(s->pfd_node);
	free(s->rbuf);
	free(s);
}

static struct l4_conn *conn_at(struct kvt_l4_session *s, int idx)
{
	if ((unsigned)idx >= s->nconns) {
		unsigned n = (unsigned)idx + 8;
		struct l4_conn *v = realloc(s->conns, n * sizeof(*v));

		if (!v)
			return NULL;
		memset(v + s->nconns, 0, (n - s->nconns) * sizeof(*v));
		s->conns = v;
		s->nconns = n;
	}
	return &s->conns[idx];
}

/* ---- output --------------------------------------------------------------- */

static int out_room(struct l4_conn *c, size_t more)
{
	if (c->olen + more > c->ocap) {
		size_t cap = c->ocap ? c->ocap : 4096;
		uint8_t *b;

		while (cap < c->olen + more)
			cap *= 2;
		b = realloc(c->obuf, cap);
		if (!b)
			return -ENOMEM;
		c->obuf = b;
		c->ocap = cap;
	}
	return 0;
}

static int seg_add(struct l4_conn *c, const uint8_t *ptr, size_t off,
		   size_t len)
{
	struct l4_seg *last = c->nseg ? &c->seg[c->nseg - 1] : NULL;

	/* An empty segment would stall conn_send (a write of 0 bytes). */
	if (len == 0)
		return 0;
	/* Consecutive bytes of obuf extend one segment. */
	if (!ptr && last && !last->ptr && last->off + last->len == off) {
		last->len += len;
		return 0;
	}
	if (c->nseg == c->segcap) {
		size_t cap = c->segcap ? c->segcap * 2 : 64;
		struct l4_seg *v = realloc(c->seg, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->seg = v;
		c->segcap = cap;
	}
	c->seg[c->nseg++] = (struct l4_seg){ ptr, off, len };
	return 0;
}

/* Appends len bytes, copied. */
static int out_copy(struct l4_conn *c, const void *p, size_t len)
{
	size_t off = c->olen;

	if (out_room(c, len))
		return -ENOMEM;
	memcpy(c->obuf + off, p, len);
	c->olen += len;
	return seg_add(c, NULL, off, len);
}

static int out_fmt(struct l4_conn *c, char kind, unsigned long long v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%c%llu\r\n", kind, v);

	return out_copy(c, b, (size_t)n);
}

/* One RESP bulk string argument, copied. */
static int out_arg(struct l4_conn *c, const void *p, size_t len)
{
	if (out_fmt(c, '$', len) || out_copy(c, p, len) ||
	    out_copy(c, "\r\n", 2))
		return -ENOMEM;
	return 0;
}

static int out_argv(struct l4_conn *c, int argc, const char *const *argv)
{
	if (out_fmt(c, '*', (unsigned long long)argc))
		return -ENOMEM;
	for (int i = 0; i < argc; i++)
		if (out_arg(c, argv[i], strlen(argv[i])))
			return -ENOMEM;
	return 0;
}

/* The requests of one command (ASKING before each when asking). */
static int out_cmd(struct kvt_l4 *l4, struct l4_conn *c, struct l4_cmd *m)
{
	static const char *const asking[] = { "ASKING" };
	char init[24], ttl[16];
	int rc = 0;

	snprintf(init, sizeof(init), "%llu", (unsigned long long)m->init);
	switch (m->kind) {
	case L4C_GET:
	case L4C_DEL: {
		if (m->asking)
			rc |= out_argv(c, 1, asking);
		rc |= out_fmt(c, '*', 2);
		rc |= out_arg(c, m->kind == L4C_GET ? "GET" : "DEL", 3);
		rc |= out_arg(c, m->name, m->name_len);
		m->nrep = m->asking ? 2 : 1;
		break;
	}
	case L4C_PROBE: {
		char end[8];

		snprintf(end, sizeof(end), "%d", KVT_L4_HDR_SIZE - 1);
		if (m->asking)
			rc |= out_argv(c, 1, asking);
		rc |= out_fmt(c, '*', 4);
		rc |= out_arg(c, "GETRANGE", 8);
		rc |= out_arg(c, m->name, m->name_len);
		rc |= out_arg(c, "0", 1);
		rc |= out_arg(c, end, strlen(end));
		m->nrep = m->asking ? 2 : 1;
		break;
	}
	case L4C_SET: {
		uint32_t t = m->ttl_s;

		if (m->asking)
			rc |= out_argv(c, 1, asking);
		rc |= out_fmt(c, '*', t ? 5 : 3);
		rc |= out_arg(c, "SET", 3);
		rc |= out_arg(c, m->name, m->name_len);
		rc |= out_fmt(c, '$', KVT_L4_HDR_SIZE + m->payload_len);
		rc |= out_copy(c, m->hdr, KVT_L4_HDR_SIZE);
		if (m->payload_len)
			rc |= seg_add(c, m->payload, 0, m->payload_len);
		rc |= out_copy(c, "\r\n", 2);
		if (t) {
			snprintf(ttl, sizeof(ttl), "%u", (unsigned)t);
			rc |= out_arg(c, "EX", 2);
			rc |= out_arg(c, ttl, strlen(ttl));
		}
		m->nrep = m->asking ? 2 : 1;
		break;
	}
	case L4C_GEN_ENSURE:
	case L4C_GEN_INCR: {
		if (m->asking)
			rc |= out_argv(c, 1, asking);
		rc |= out_fmt(c, '*', 4);
		rc |= out_arg(c, "SET", 3);
		rc |= out_arg(c, m->name, m->name_len);
		rc |= out_arg(c, init, strlen(init));
		rc |= out_arg(c, "NX", 2);
		if (m->asking)
			rc |= out_argv(c, 1, asking);
		rc |= out_fmt(c, '*', 2);
		rc |= out_arg(c, m->kind == L4C_GEN_INCR ? "INCR" : "GET",
			      m->kind == L4C_GEN_INCR ? 4 : 3);
		rc |= out_arg(c, m->name, m->name_len);
		m->nrep = m->asking ? 4 : 2;
		break;
	}
	case L4C_GEN_SET: {
		if (m->asking)
			rc |= out_argv(c, 1, asking);
		rc |= out_fmt(c, '*', 3);
		rc |= out_arg(c, "SET", 3);
		rc |= out_arg(c, m->name, m->name_len);
		rc |= out_arg(c, init, strlen(init));
		m->nrep = m->asking ? 2 : 1;
		break;
	}
	case L4C_SLOTS: {
		static const char *const slots[] = { "CLUSTER", "SLOTS" };

		rc |= out_argv(c, 2, slots);
		m->nrep = 1;
		break;
	}
	default:
		assert(0);
	}
	(void)l4;
	return rc ? -ENOMEM : 0;
}

static int q_push(struct l4_conn *c, size_t v)
{
	if (c->qhead + c->qlen == c->qcap) {
		if (c->qhead) {
			memmove(c->q, c->q + c->qhead, c->qlen * sizeof(*c->q));
			c->qhead = 0;
		} else {
			size_t cap = c->qcap ? c->qcap * 2 : 64;
			size_t *v2 = realloc(c->q, cap * sizeof(*v2));

			if (!v2)
				return -ENOMEM;
			c->q = v2;
			c->qcap = cap;
		}
	}
	c->q[c->qhead + c->qlen++] = v;
	return 0;
}

/* ---- connect -------------------------------------------------------------- */

static int ctx_errno(const redisContext *ctx, int saved)
{
	if (ctx->err == REDIS_ERR_IO && saved > 0 && saved < 1000)
		return -saved;
	if (ctx->err == REDIS_ERR_OOM)
		return -ENOMEM;
	return -EHOSTUNREACH; /* name resolution and the like */
}

/*
 * Starts connecting to node idx and queues AUTH when a password is set.
 * Returns 0 (state CONNECTING) or an error (the node is then failed).
 */
static int conn_open(struct kvt_l4_session *s, struct l4_conn *c, int idx)
{
	struct kvt_l4 *l4 = s->l4;
	char host[256];
	int port, one = 1, saved;

	l4_lock(l4);
	snprintf(host, sizeof(host), "%s", l4->nodes[idx].host);
	port = l4->nodes[idx].port;
	l4_unlock(l4);

	errno = 0;
	c->ctx = redisConnectNonBlock(host, port);
	saved = errno;
	if (!c->ctx)
		return -ENOMEM;
	if (c->ctx->err) {
		int err = ctx_errno(c->ctx, saved);

		conn_close(c);
		return err;
	}
	c->ctx->reader->fn = &reply_fns;
	c->ctx->reader->maxbuf = L4_READER_KEEP;
	(void)setsockopt(c->ctx->fd, IPPROTO_TCP, TCP_NODELAY, &one,
			 sizeof(one));
	(void)setsockopt(c->ctx->fd, SOL_SOCKET, SO_KEEPALIVE, &one,
			 sizeof(one));
	c->state = CONN_CONNECTING;
	c->deadline = kvt_clock_ns() + l4->connect_timeout_ns;
	conn_reset_io(c);
	if (c->ever)
		L4_COUNT(l4, reconnects, 1);
	if (l4->password) {
		const char *argv[] = { "AUTH", l4->password };

		if (out_argv(c, 2, argv) || q_push(c, L4_Q_AUTH)) {
			conn_close(c);
			return -ENOMEM;
		}
	}
	return 0;
}

/*
 * An idle connection the server closed (timeout, restart) reads as
 * readable: drop it quietly rather than fail the next commands on it.
 */
static void conn_check_idle(struct kvt_l4_session *s, struct l4_conn *c)
{
	struct pollfd p = { .fd = c->ctx->fd, .events = POLLIN };

	(void)s;
	if (poll(&p, 1, 0) > 0)
		conn_close(c);
}

/* ---- one round ------------------------------------------------------------ */

/* Fails every command still queued on c with err and closes it. */
static void conn_fail(struct kvt_l4_session *s, struct l4_conn *c, int idx,
		      struct l4_cmd *cmds, int err)
{
	for (size_t i = 0; i < c->qlen; i++) {
		size_t ci = c->q[c->qhead + i];
		struct l4_cmd *m;

		if (ci == L4_Q_AUTH)
			continue;
		m = &cmds[ci];
		kvt_l4i_reply_free(m->last);
		m->last = NULL;
		if (!m->done) {
			m->status = err;
			m->done = 1;
		}
	}
	if (err == -ETIMEDOUT)
		L4_COUNT(s->l4, timeouts, 1);
	conn_close(c);
	if (err != -ENOMEM) { /* our failure, not the node's */
		kvt_l4i_node_fail(s->l4, idx);
		s->want_refresh = 1;
	}
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": 0 and the target, or -1. */
static int parse_redirect(struct kvt_l4_session *s, int from,
			  const struct l4_reply *r, struct l4_cmd *m)
{
	struct kvt_l4 *l4 = s->l4;
	const char *p = r->str, *sp, *colon;
	char *end;
	unsigned long slot;
	long port;
	int kind, idx;

	if (strncmp(p, "MOVED ", 6) == 0) {
		kind = 1;
		p += 6;
	} else if (strncmp(p, "ASK ", 4) == 0) {
		kind = 2;
		p += 4;
	} else {
		return -1;
	}
	slot = strtoul(p, &end, 10);
	if (end == p || *end != ' ' || slot >= KVT_L4_SLOTS)
		return -1;
	sp = end + 1;
	colon = strrchr(sp, ':');
	if (!colon)
		return -1;
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port <= 0 || port > 65535)
		return -1;
	l4_lock(l4);
	if (colon == sp) /* ":port": the host we asked */
		idx = kvt_l4i_node_get(l4, l4->nodes[from].host,
				       strlen(l4->nodes[from].host), (int)port);
	else
		idx = kvt_l4i_node_get(l4, sp, (size_t)(colon - sp),
				       (int)port);
	l4_unlock(l4);
	if (idx < 0)
		return -1;
	if (!m->redir) {
		m->redir = kind;
		m->redir_node = idx;
		m->redir_slot = (unsigned)slot;
	}
	return 0;
}

static int error_status(const struct l4_reply *r)
{
	/* Another program's value under our key: of another type, or not
	 * the integer INCR wants. */
	if (strncmp(r->str, "WRONGTYPE", 9) == 0 ||
	    strncmp(r->str, "ERR value is not an integer", 27) == 0)
		return KVT_ECORRUPT;
	if (strncmp(r->str, "NOAUTH", 6) == 0 ||
	    strncmp(r->str, "WRONGPASS", 9) == 0 ||
	    strncmp(r->str, "NOPERM", 6) == 0)
		return KVT_EDENIED;
	return KVT_ESERVER;
}

/* One reply for connection c (node idx).  Returns 0 or an error for c. */
static int on_reply(struct kvt_l4_session *s, struct l4_conn *c, int idx,
		    struct l4_cmd *cmds, struct l4_reply *r)
{
	size_t ci;
	struct l4_cmd *m;

	if (c->qlen == 0) { /* a reply nobody asked for */
		kvt_l4i_reply_free(r);
		return KVT_EPROTO;
	}
	ci = c->q[c->qhead];
	if (!c->proven) {
		c->proven = 1;
		kvt_l4i_node_ok(s->l4, idx);
	}
	if (ci == L4_Q_AUTH) {
		int bad = r->type == L4R_ERROR;

		kvt_l4i_reply_free(r);
		c->qhead++;
		c->qlen--;
		return bad ? KVT_EDENIED : 0;
	}
	m = &cmds[ci];
	m->got++;
	if (r->type == L4R_ERROR) {
		if (parse_redirect(s, idx, r, m) != 0 && !m->err)
			m->err = error_status(r);
		kvt_l4i_reply_free(r);
	} else if (m->got == m->nrep) {
		m->last = r;
	} else {
		kvt_l4i_reply_free(r); /* ASKING's +OK, SET NX's reply */
	}
	if (m->got < m->nrep)
		return 0;
	c->qhead++;
	c->qlen--;
	if (m->redir) {
		kvt_l4i_reply_free(m->last);
		m->last = NULL;
	} else if (m->err) {
		kvt_l4i_reply_free(m->last);
		m->last = NULL;
		m->status = m->err;
		m->done = 1;
	} else {
		m->reply = m->last;
		m->last = NULL;
		m->status = 0;
		m->done = 1;
	}
	return 0;
}

/* Writes what c can take now.  Returns 0 or -errno. */
static int conn_send(struct kvt_l4_session *s, struct l4_conn *c)
{
	while (c->seg_i < c->nseg) {
		struct iovec iov[L4_IOV];
		struct msghdr mh = { .msg_iov = iov };
		size_t k = 0;
		ssize_t w;

		for (size_t i = c->seg_i; i < c->nseg && k < L4_IOV; i++, k++) {
			const struct l4_seg *g = &c->seg[i];
			const uint8_t *b = g->ptr ? g->ptr : c->obuf + g->off;
			size_t skip = i == c->seg_i ? c->seg_off : 0;

			iov[k].iov_base = (void *)(b + skip);
			iov[k].iov_len = g->len - skip;
		}
		mh.msg_iovlen = k;
		w = sendmsg(c->ctx->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			return -errno;
		}
		L4_COUNT(s->l4, bytes_out, w);
		c->deadline = kvt_clock_ns() + s->l4->timeout_ns;
		while (w > 0) {
			size_t left = c->seg[c->seg_i].len - c->seg_off;

			if ((size_t)w >= left) {
				w -= (ssize_t)left;
				c->seg_i++;
				c->seg_off = 0;
			} else {
				c->seg_off += (size_t)w;
				w = 0;
			}
		}
	}
	c->olen = 0;
	c->nseg = c->seg_i = c->seg_off = 0;
	return 0;
}

/* Reads and dispatches what c has.  Returns 0 or an error for c. */
static int conn_recv(struct kvt_l4_session *s, struct l4_conn *c, int idx,
		     struct l4_cmd *cmds)
{
	/* Up to a few MiB per wakeup, so that busy nodes take turns. */
	for (int rounds = 0; rounds < 16 && c->qlen > 0; rounds++) {
		ssize_t n = read(c->ctx->fd, s->rbuf, L4_RBUF);
		void *rep;

		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			return -errno;
		}
		L4_COUNT(s->l4, bytes_in, n);
		c->deadline = kvt_clock_ns() + s->l4->timeout_ns;
		if (redisReaderFeed(c->ctx->reader, (const char *)s->rbuf,
				    (size_t)n) != REDIS_OK)
			return -ENOMEM;
		for (;;) {
			int rc;

			rep = NULL;
			if (redisReaderGetReply(c->ctx->reader, &rep) !=
			    REDIS_OK)
				return c->ctx->reader->err == REDIS_ERR_OOM
					       ? -ENOMEM
					       : KVT_EPROTO;
			if (!rep)
				break;
			rc = on_reply(s, c, idx, cmds, rep);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/*
 * Sends every command that has a node (m->node >= 0, not done) on its
 * node's connection and waits until each has its replies, failed or timed
 * out.  Returns 0 or -ENOMEM (for the poll arrays; commands then fail).
 */
int kvt_l4i_round(struct kvt_l4_session *s, struct l4_cmd *cmds, size_t n)
{
	struct kvt_l4 *l4 = s->l4;
	unsigned nact;

	for (size_t i = 0; i < n; i++) {
		struct l4_cmd *m = &cmds[i];
		struct l4_conn *c;
		size_t olen, nseg, qlen;
		int rc;

		if (m->done || m->node < 0)
			continue;
		c = conn_at(s, m->node);
		if (!c) {
			m->status = -ENOMEM;
			m->done = 1;
			continue;
		}
		if (c->state == CONN_READY && c->qlen == 0)
			conn_check_idle(s, c);
		if (c->state == CONN_NONE) {
			rc = conn_open(s, c, m->node);
			if (rc) {
				if (rc != -ENOMEM) {
					kvt_l4i_node_fail(l4, m->node);
					s->want_refresh = 1;
				}
				/* The node's other commands fail with it. */
				for (size_t j = i; j < n; j++)
					if (!cmds[j].done &&
					    cmds[j].node == m->node) {
						cmds[j].status = rc;
						cmds[j].done = 1;
					}
				continue;
			}
		}
		/*
		 * An idle connection's deadline is from its last round: the
		 * clock for this one starts now.
		 */
		if (c->state == CONN_READY && c->qlen == 0)
			c->deadline = kvt_clock_ns() + l4->timeout_ns;
		/* Roll back a half-queued command if memory runs out. */
		olen = c->olen;
		nseg = c->nseg;
		qlen = c->qlen;
		m->got = 0;
		m->err = 0;
		m->redir = 0;
		if (out_cmd(l4, c, m) || q_push(c, i)) {
			c->olen = olen;
			c->nseg = nseg;
			c->qlen = qlen;
			m->status = -ENOMEM;
			m->done = 1;
		}
	}

	if (s->pfdcap < s->nconns) {
		struct pollfd *p = realloc(s->pfd, s->nconns * sizeof(*p));
		int *q;

		if (p)
			s->pfd = p;
		q = p ? realloc(s->pfd_node, s->nconns * sizeof(*q)) : NULL;
		if (q)
			s->pfd_node = q;
		if (!p || !q) {
			for (unsigned i = 0; i < s->nconns; i++)
				if (s->conns[i].qlen)
					conn_fail(s, &s->conns[i], (int)i,
						  cmds, -ENOMEM);
			return -ENOMEM;
		}
		s->pfdcap = s->nconns;
	}

	for (;;) {
		uint64_t now = kvt_clock_ns(), first = UINT64_MAX;
		int wait_ms, rc;

		nact = 0;
		for (unsigned i = 0; i < s->nconns; i++) {
			struct l4_conn *c = &s->conns[i];

			if (c->state == CONN_NONE || c->qlen == 0)
				continue;
			if (now >= c->deadline) {
				conn_fail(s, c, (int)i, cmds, -ETIMEDOUT);
				continue;
			}
			if (c->state == CONN_READY && c->seg_i < c->nseg) {
				rc = conn_send(s, c);
				if (rc) {
					conn_fail(s, c, (int)i, cmds, rc);
					continue;
				}
			}
			s->pfd[nact].fd = c->ctx->fd;
			s->pfd[nact].events = POLLIN;
			if (c->state == CONN_CONNECTING || c->seg_i < c->nseg)
				s->pfd[nact].events |= POLLOUT;
			s->pfd[nact].revents = 0;
			s->pfd_node[nact] = (int)i;
			if (c->deadline < first)
				first = c->deadline;
			nact++;
		}
		if (nact == 0)
			break;
		now = kvt_clock_ns();
		wait_ms = first <= now ? 0 : (int)((first - now + 999999) / 1000000);
		rc = poll(s->pfd, nact, wait_ms);
		if (rc < 0 && errno != EINTR)
			rc = 0; /* treat as a timeout pass; deadlines decide */
		if (rc <= 0)
			continue;
		for (unsigned k = 0; k < nact; k++) {
			int idx = s->pfd_node[k];
			struct l4_conn *c = &s->conns[idx];
			short ev = s->pfd[k].revents;

			if (!ev || c->state == CONN_NONE)
				continue;
			if (c->state == CONN_CONNECTING) {
				int soerr = 0;
				socklen_t sl = sizeof(soerr);

				if (getsockopt(c->ctx->fd, SOL_SOCKET, SO_ERROR,
					       &soerr, &sl) < 0)
					soerr = errno;
				if (soerr) {
					conn_fail(s, c, idx, cmds, -soerr);
					continue;
				}
				if (!(ev & (POLLOUT | POLLIN)))
					continue;
				c->state = CONN_READY;
				c->ever = 1;
				c->deadline = kvt_clock_ns() + l4->timeout_ns;
				L4_COUNT(l4, connects, 1);
				rc = conn_send(s, c);
				if (rc) {
					conn_fail(s, c, idx, cmds, rc);
					continue;
				}
				ev &= (short)~POLLOUT;
			}
			if ((ev & POLLOUT) && c->seg_i < c->nseg) {
				rc = conn_send(s, c);
				if (rc) {
					conn_fail(s, c, idx, cmds, rc);
					continue;
				}
			}
			if (ev & (POLLIN | POLLHUP | POLLERR)) {
				rc = conn_recv(s, c, idx, cmds);
				if (rc)
					conn_fail(s, c, idx, cmds, rc);
			}
		}
	}
	return 0;
}
