/*
 * kvt_client.c - libkvtier, a blocking client for kvtierd (kvtier.h):
 * connecting, and the calls on one key or none (ping, put, get, del,
 * exists, drop, hot, stats).  Batches over many keys are
 * kvt_client_batch.c's; what lies below, kvt_client_int.h tells.
 *
 * One request is in flight per call: each sends one frame and reads its
 * reply before returning.  Arguments are checked against the daemon's
 * limits, learnt at HELLO, before anything is sent, so that a refused
 * request leaves the connection usable.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvt_client_int.h"
#include "kvt_forkid.h"
#include "kvt_frame.h"
#include "kvt_path.h"
#include "kvt_shm.h"
#include "kvt_shmmap.h"
#include "kvtier.h"
#include "kvtier_errors.h"

/* Also room for the socket path (< 108 bytes) and our words. */
#define KVT_CONNECT_MSG_CAP (KVT_CLIENT_MSG_CAP + 160)
/* Floor for the reply size limit, whatever the daemon's request limits. */
#define KVT_CLIENT_REPLY_MIN (1u << 20)

/*
 * A failed kvt_connect() has no handle to keep its message in, so it is kept
 * per thread: kvtier.h promises no shared mutable state between threads.
 */
static _Thread_local char connect_errmsg[KVT_CONNECT_MSG_CAP];

/* ---- Argument checks ------------------------------------------------ */

int kvt_ci_check_ns(kvt_client *c, size_t ns_len)
{
	if (ns_len > KVT_NS_MAX)
		return kvt_ci_err(c, KVT_EINVAL, "namespace is %zu bytes, the "
				  "protocol allows at most %d", ns_len,
				  KVT_NS_MAX);
	if (ns_len > c->lim.max_ns)
		return kvt_ci_err(c, KVT_ETOOBIG, "namespace is %zu bytes, the "
				  "daemon allows at most %u", ns_len,
				  c->lim.max_ns);
	return 0;
}

int kvt_ci_check_key(kvt_client *c, const char *ns, const void *key,
		     size_t key_len, struct kvt_keyref *k)
{
	size_t ns_len = ns ? strlen(ns) : 0;
	int rc;

	if (!key)
		return kvt_ci_err(c, KVT_EINVAL, "key is NULL");
	if (key_len == 0)
		return kvt_ci_err(c, KVT_EINVAL, "key is empty");
	rc = kvt_ci_check_ns(c, ns_len);
	if (rc < 0)
		return rc;
	if (key_len > c->lim.max_key)
		return kvt_ci_err(c, KVT_ETOOBIG, "key is %zu bytes, the daemon "
				  "allows at most %u", key_len, c->lim.max_key);
	if (key_len > KVT_KEY_FIELD_MAX)
		return kvt_ci_err(c, KVT_ETOOBIG, "key is %zu bytes, the "
				  "protocol allows at most %u", key_len,
				  KVT_KEY_FIELD_MAX);
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

	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	rc = kvt_ci_check_key(c, ns, key, key_len, &k);
	if (rc < 0)
		return rc;
	rc = kvt_key_req_encode(c->sbuf + KVT_HDR_SIZE,
				c->sbuf_cap - KVT_HDR_SIZE, &k, &len);
	if (rc < 0)
		return kvt_ci_err(c, rc, "cannot encode %s request: %s",
				  kvt_op_name(op), kvt_strerror(rc));
	return kvt_ci_request(c, op, len, NULL, 0, rh);
}

/* ---- Connecting ----------------------------------------------------- */

/*
 * HELLO: checks the protocol version and learns the daemon's limits, which
 * size c->sbuf and let requests be checked before they are sent; maps the
 * arena if the daemon offers it.
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
			     kvt_ci_shm_wanted() ? KVT_FEAT_SHM : 0);
	c->want_fd = true;
	rc = kvt_ci_request(c, KVT_OP_HELLO, KVT_HELLO_REQ_SIZE, NULL, 0, &rh);
	c->sbuf = NULL;
	c->sbuf_cap = 0;
	if (rc < 0)
		return rc;

	if (rh.body_len < KVT_HELLO_REPLY_SIZE) {
		kvt_ci_discard_body(c, rh.body_len);
		return kvt_ci_fail(c, KVT_EPROTO, "HELLO reply of %u bytes is "
				   "too short", rh.body_len);
	}
	got = rh.body_len < sizeof(body) ? rh.body_len : sizeof(body);
	rc = kvt_ci_read_body(c, body, got);
	c->want_fd = false;
	if (rc < 0)
		return rc;
	/* Later protocol versions may append fields: skip what we do not know. */
	rc = kvt_ci_discard_body(c, rh.body_len - got);
	if (rc < 0)
		return rc;
	kvt_shm_hello_parse(body, got, &sh);
	rc = kvt_hello_reply_parse(body, got, &hl);
	if (rc < 0)
		return kvt_ci_fail(c, KVT_EPROTO, "daemon sent unusable limits "
				   "in its HELLO reply");
	if (hl.version != KVT_PROTO_VERSION)
		return kvt_ci_fail(c, KVT_EVERSION, "daemon speaks protocol "
				   "version %u, this client %u", hl.version,
				   KVT_PROTO_VERSION);
	c->lim = hl.lim;
	if (hl.features & KVT_FEAT_SHM)
		kvt_ci_shm_map(c, &sh);
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
		return kvt_ci_err(c, -ENOMEM, "out of memory");
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
	rc = kvt_ci_connect(c, socket_path);
	if (rc < 0) {
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
	/*
	 * Another thread in a call on c would go on using it: leave c to
	 * that caller's bug (a leak) rather than free it under the call.  In
	 * a child after fork() the flag is the copy of the parent's, which
	 * means nothing here.
	 */
	if (c->forkid == kvt_forkid_get() &&
	    atomic_exchange_explicit(&c->busy, true, memory_order_acquire))
		return;
	/*
	 * Nothing is sent, ever: in a child after fork() the socket is also
	 * the parent's, and closing the child's descriptor leaves the
	 * parent's connection open (a shutdown() or a last request would end
	 * or disturb it), as unmapping the child's copy of the arena leaves
	 * the parent's.
	 */
	/* Jobs in flight are dropped: their arrays are not written any more. */
	if (c->as_ops)
		c->as_ops->free(c);
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

int kvt_client_broken(const kvt_client *c)
{
	return !c || c->broken || c->forkid != kvt_forkid_get();
}

/* ---- Requests ------------------------------------------------------- */

/*
 * The do_ functions expect the caller to have entered the guard
 * (kvt_ci_enter(), see "The public calls" below), memcached's habit.
 */

static int do_ping(kvt_client *c)
{
	struct kvt_frame_header rh;
	int rc;

	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	rc = kvt_ci_request(c, KVT_OP_PING, 0, NULL, 0, &rh);
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh.body_len);
}

int kvt_ci_put(kvt_client *c, const char *ns, const void *key,
	       size_t key_len, const void *val, size_t val_len,
	       const struct kvt_put_opts *opts)
{
	struct kvt_frame_header rh;
	struct kvt_put_req r;
	size_t len;
	int rc;

	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	memset(&r, 0, sizeof(r));
	rc = kvt_ci_check_key(c, ns, key, key_len, &r.k);
	if (rc < 0)
		return rc;
	if (!val && val_len)
		return kvt_ci_err(c, KVT_EINVAL, "value is NULL");
	if (opts && opts->dtype >= KVT_DTYPE_END_)
		return kvt_ci_err(c, KVT_EINVAL, "unknown dtype %u",
				  opts->dtype);
	if (val_len > c->lim.max_value)
		return kvt_ci_err(c, KVT_ETOOBIG, "value is %zu bytes, the "
				  "daemon allows at most %llu", val_len,
				  (unsigned long long)c->lim.max_value);
	len = kvt_put_req_prefix_size(r.k.ns_len, r.k.key_len);
	if (val_len > c->lim.max_body || len > c->lim.max_body - val_len)
		return kvt_ci_err(c, KVT_ETOOBIG, "request of %zu bytes exceeds "
				  "the daemon's frame limit of %llu bytes",
				  len + val_len,
				  (unsigned long long)c->lim.max_body);
	r.dtype = opts ? opts->dtype : KVT_DTYPE_NONE;
	r.ttl_s = opts ? opts->ttl_s : 0;
	r.value = val;
	r.value_len = val_len;
	rc = kvt_ci_put_shm(c, &r);
	if (rc <= 0)
		return rc;
	rc = kvt_put_req_encode_prefix(c->sbuf + KVT_HDR_SIZE,
				       c->sbuf_cap - KVT_HDR_SIZE, &r, &len);
	if (rc < 0)
		return kvt_ci_err(c, rc, "cannot encode PUT request: %s",
				  kvt_strerror(rc));
	rc = kvt_ci_request(c, KVT_OP_PUT, len, val, val_len, &rh);
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh.body_len);
}

static int do_get(kvt_client *c, const char *ns, const void *key,
		  size_t key_len, void *buf, size_t cap, size_t *val_len)
{
	struct kvt_frame_header rh;
	struct kvt_ci_value v;
	int rc;

	if (val_len)
		*val_len = 0;
	if (!val_len || (!buf && cap))
		return kvt_ci_err(c, KVT_EINVAL, "%s is NULL",
				  val_len ? "buf" : "val_len");
	rc = key_request(c, KVT_OP_GET, ns, key, key_len, &rh);
	if (rc < 0)
		return rc;
	rc = kvt_ci_value_open(c, &rh, &v);
	if (rc < 0)
		return rc;
	if (v.len > cap) {
		/* Drain the value so the next reply starts on a frame. */
		rc = kvt_ci_value_skip(c, &v);
		if (rc < 0)
			return rc;
		*val_len = v.len;
		return kvt_ci_err(c, KVT_ERANGE, "value is %zu bytes, the "
				  "buffer holds %zu", v.len, cap);
	}
	rc = kvt_ci_value_copy(c, &v, buf);
	if (rc < 0)
		return rc;
	*val_len = v.len;
	return 0;
}

static int do_get_alloc(kvt_client *c, const char *ns, const void *key,
			size_t key_len, void **val, size_t *val_len)
{
	struct kvt_frame_header rh;
	struct kvt_ci_value v;
	uint8_t *p = NULL;
	int rc;

	if (val)
		*val = NULL;
	if (val_len)
		*val_len = 0;
	if (!val || !val_len)
		return kvt_ci_err(c, KVT_EINVAL, "%s is NULL",
				  val ? "val_len" : "val");
	rc = key_request(c, KVT_OP_GET, ns, key, key_len, &rh);
	if (rc < 0)
		return rc;
	rc = kvt_ci_value_open(c, &rh, &v);
	if (rc < 0)
		return rc;
	/* The caller is promised a pointer, even for an empty value. */
	if (!v.shm) {
		rc = kvt_ci_read_body_alloc(c, &rh, 0, "value", &p);
	} else if (!(p = malloc(v.len ? v.len : 1))) {
		rc = kvt_ci_value_skip(c, &v);
		if (rc == 0)
			rc = kvt_ci_err(c, -ENOMEM, "cannot allocate %zu bytes "
					"for the value", v.len);
	} else {
		rc = kvt_ci_value_copy(c, &v, p);
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

static int do_del(kvt_client *c, const char *ns, const void *key,
		  size_t key_len)
{
	struct kvt_frame_header rh;
	int rc;

	rc = key_request(c, KVT_OP_DEL, ns, key, key_len, &rh);
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh.body_len);
}

static int do_exists(kvt_client *c, const char *ns, const void *key,
		     size_t key_len)
{
	struct kvt_frame_header rh;
	uint8_t b[8];
	size_t n;
	int rc, present;

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
	rc = kvt_ci_read_body(c, b, n);
	if (rc < 0)
		return rc;
	rc = kvt_ci_discard_body(c, rh.body_len - n);
	if (rc < 0)
		return rc;
	present = 0;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			present = 1;
	return present;
}

static int do_drop(kvt_client *c, const char *ns, uint64_t *dropped)
{
	struct kvt_frame_header rh;
	uint8_t body[KVT_DROP_FIXED + KVT_NS_MAX], rb[KVT_DROP_REPLY_SIZE];
	size_t len, ns_len = ns ? strlen(ns) : 0;
	int rc;

	if (dropped)
		*dropped = 0;
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	rc = kvt_ci_check_ns(c, ns_len);
	if (rc < 0)
		return rc;
	rc = kvt_drop_req_encode(body, sizeof(body),
				 (const uint8_t *)(ns ? ns : ""), ns_len, &len);
	if (rc < 0)
		return kvt_ci_err(c, rc, "cannot encode DROP request: %s",
				  kvt_strerror(rc));
	rc = kvt_ci_request(c, KVT_OP_DROP, 0, body, len, &rh);
	if (rc < 0)
		return rc;
	rc = kvt_ci_read_fixed_reply(c, &rh, rb, sizeof(rb), "DROP");
	if (rc < 0)
		return rc;
	uint64_t n;
	kvt_drop_reply_parse(rb, sizeof(rb), &n);
	if (dropped)
		*dropped = n;
	return 0;
}

void kvt_hot_free(struct kvt_hot_entry *entries)
{
	free(entries);
}

static int do_hot(kvt_client *c, unsigned top,
		  struct kvt_hot_entry **entries, size_t *n)
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
	if (!entries || !n || top == 0 || top > KVT_HOT_TOP_MAX)
		return kvt_ci_err(c, KVT_EINVAL, "hot: top must be 1 to %d and "
				  "the outputs not NULL", KVT_HOT_TOP_MAX);
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	kvt_hot_req_encode(req, top);
	rc = kvt_ci_request(c, KVT_OP_HOT, 0, req, sizeof(req), &rh);
	if (rc < 0)
		return rc;
	rc = kvt_ci_read_body_alloc(c, &rh, 0, "HOT reply", &body);
	if (rc < 0)
		return rc;
	if (kvt_hot_reply_head_parse(body, rh.body_len, &count, &now) ||
	    count > top) {
		free(body);
		return kvt_ci_fail(c, KVT_EPROTO, "malformed HOT reply");
	}
	/* One allocation: the entries, then their strings (at most the body's
	 * bytes plus one NUL per namespace). */
	v = malloc(count * sizeof(*v) + rh.body_len + count + 1);
	if (!v) {
		free(body);
		return kvt_ci_err(c, -ENOMEM, "cannot allocate the HOT entries");
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
			return kvt_ci_fail(c, KVT_EPROTO, "malformed HOT item "
					   "%u", i);
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

static int do_stats_json(kvt_client *c, char **json, size_t *len)
{
	struct kvt_frame_header rh;
	uint8_t *p;
	int rc;

	if (json)
		*json = NULL;
	if (len)
		*len = 0;
	if (!json)
		return kvt_ci_err(c, KVT_EINVAL, "json is NULL");
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	rc = kvt_ci_request(c, KVT_OP_STATS, 0, NULL, 0, &rh);
	if (rc < 0)
		return rc;
	rc = kvt_ci_read_body_alloc(c, &rh, 1, "stats document", &p);
	if (rc < 0)
		return rc;
	p[rh.body_len] = '\0';
	*json = (char *)p;
	if (len)
		*len = rh.body_len;
	return 0;
}

/* ---- The public calls ----------------------------------------------- */

/*
 * Each runs its do_ function inside the guard: a child after fork() or a
 * second thread gets KVT_EFORKED or KVT_ECONCURRENT before anything is
 * sent, with the outputs cleared as for any other error.
 */

int kvt_ping(kvt_client *c)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_ping(c);
	kvt_ci_leave(c);
	return rc;
}

int kvt_put(kvt_client *c, const char *ns, const void *key, size_t key_len,
	    const void *val, size_t val_len, const struct kvt_put_opts *opts)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = kvt_ci_put(c, ns, key, key_len, val, val_len, opts);
	kvt_ci_leave(c);
	return rc;
}

int kvt_get(kvt_client *c, const char *ns, const void *key, size_t key_len,
	    void *buf, size_t cap, size_t *val_len)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		if (val_len)
			*val_len = 0;
		return rc;
	}
	rc = do_get(c, ns, key, key_len, buf, cap, val_len);
	kvt_ci_leave(c);
	return rc;
}

int kvt_get_alloc(kvt_client *c, const char *ns, const void *key,
		  size_t key_len, void **val, size_t *val_len)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		if (val)
			*val = NULL;
		if (val_len)
			*val_len = 0;
		return rc;
	}
	rc = do_get_alloc(c, ns, key, key_len, val, val_len);
	kvt_ci_leave(c);
	return rc;
}

int kvt_del(kvt_client *c, const char *ns, const void *key, size_t key_len)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_del(c, ns, key, key_len);
	kvt_ci_leave(c);
	return rc;
}

int kvt_exists(kvt_client *c, const char *ns, const void *key,
	       size_t key_len)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0)
		return rc;
	rc = do_exists(c, ns, key, key_len);
	kvt_ci_leave(c);
	return rc;
}

int kvt_drop(kvt_client *c, const char *ns, uint64_t *dropped)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		if (dropped)
			*dropped = 0;
		return rc;
	}
	rc = do_drop(c, ns, dropped);
	kvt_ci_leave(c);
	return rc;
}

int kvt_hot(kvt_client *c, unsigned top, struct kvt_hot_entry **entries,
	    size_t *n)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		if (entries)
			*entries = NULL;
		if (n)
			*n = 0;
		return rc;
	}
	rc = do_hot(c, top, entries, n);
	kvt_ci_leave(c);
	return rc;
}

int kvt_stats_json(kvt_client *c, char **json, size_t *len)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		if (json)
			*json = NULL;
		if (len)
			*len = 0;
		return rc;
	}
	rc = do_stats_json(c, json, len);
	kvt_ci_leave(c);
	return rc;
}

int kvt_socket_path_default(char *buf, size_t cap)
{
	return kvt_socket_default(buf, cap);
}

const char *kvt_version(void)
{
	return KVT_VERSION_STRING;
}
