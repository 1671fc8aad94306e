/*
 * kvt_request.c - the request handlers: one decoded frame in, one reply
 * slot filled (see kvt_request.h).  Knows storage only through the tier
 * manager (kvt_tm.h) and block memory (kvt_mem.h), and the connection only
 * through its reply API (kvt_conn.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_dstats.h"
#include "kvt_lease.h"
#include "kvt_log.h"
#include "kvt_mem.h"
#include "kvt_region.h"
#include "kvt_request.h"

/* Context of a GET whose value may arrive after kvt_tm_get() returns. */
struct get_ctx {
	struct kvt_conn *c;
	struct kvt_reply *r;
	bool shm; /* the client accepts a lease instead of the bytes */
};

static void get_done(void *arg, int status, struct kvt_ref *ref)
{
	struct get_ctx *g = arg;

	if (status == 0 && g->shm && kvt_lease_get(g->c, g->r, ref))
		; /* answered with a lease, which now holds ref */
	else if (status == 0)
		kvt_reply_finish(g->c, g->r, 0,
				 (uint16_t)(kvt_ref_dtype(ref) &
					    KVT_FLAG_DTYPE_MASK),
				 NULL, kvt_ref_len(ref), ref);
	else if (status == KVT_ENOTFOUND)
		kvt_reply_finish(g->c, g->r, status, 0, NULL, 0, NULL);
	else
		kvt_reply_error(g->c, g->r, status, "get failed: %s",
				kvt_strerror(status));
	free(g);
}

static void key_from_ref(struct kvt_key *k, const struct kvt_keyref *kr)
{
	k->ns = kr->ns;
	k->ns_len = kr->ns_len;
	k->key = kr->key;
	k->key_len = kr->key_len;
}

static void handle_hello(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *body, size_t len)
{
	struct kvt_hello h = { .version = KVT_PROTO_VERSION,
			       .features = 0,
			       .lim = c->ctx->lim };
	struct kvt_shm_hello sh = { 0 };
	uint32_t version, features;
	uint8_t *out;
	int rc = kvt_hello_req_parse(body, len, &version, &features);

	if (rc) {
		kvt_reply_error(c, r, rc, "malformed HELLO body");
		return;
	}
	if (version != KVT_PROTO_VERSION) {
		kvt_reply_error(c, r, KVT_EVERSION, "client speaks protocol %u, "
				"daemon speaks %u", version, KVT_PROTO_VERSION);
		return;
	}
	out = malloc(KVT_HELLO_REPLY_SHM_SIZE);
	if (!out) {
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	if ((features & KVT_FEAT_SHM) && kvt_lease_hello(c, r, &sh))
		h.features |= KVT_FEAT_SHM;
	kvt_hello_reply_encode(out, &h);
	kvt_shm_hello_encode(out + KVT_HELLO_REPLY_SIZE, &sh);
	kvt_reply_finish(c, r, 0, 0, out, KVT_HELLO_REPLY_SHM_SIZE, NULL);
}

/*
 * Stores a parsed PUT whose value lies in mem (mem_size bytes of block
 * memory, ownership passes) and answers r.
 */
static void put_parsed(struct kvt_conn *c, struct kvt_reply *r,
		       const struct kvt_put_req *pr, void *mem,
		       size_t mem_size)
{
	struct kvt_blob blob = { 0 };
	struct kvt_key k;
	int rc;

	if (!kvt_conn_ns_allowed(c, r, pr->k.ns, pr->k.ns_len)) {
		kvt_block_free(mem);
		return;
	}
	key_from_ref(&k, &pr->k);
	blob.mem = mem;
	blob.mem_size = mem_size;
	blob.data = pr->value;
	blob.len = (size_t)pr->value_len;
	blob.dtype = pr->dtype;
	rc = kvt_tm_put(c->ctx->tm, &k, &blob, pr->ttl_s);
	if (rc == KVT_ENOSPACE)
		kvt_reply_error(c, r, rc, "value of %llu bytes cannot fit in "
				"the cache", (unsigned long long)pr->value_len);
	else if (rc)
		kvt_reply_error(c, r, rc, "put failed: %s", kvt_strerror(rc));
	else
		kvt_reply_finish(c, r, 0, 0, NULL, 0, NULL);
}

static void handle_put(struct kvt_conn *c, struct kvt_reply *r, uint8_t *body,
		       size_t len)
{
	struct kvt_put_req pr;
	int rc = kvt_put_req_parse(body, len, &c->ctx->lim, &pr);

	if (rc) {
		kvt_block_free(body);
		kvt_reply_error(c, r, rc, "bad PUT: %s", kvt_strerror(rc));
		return;
	}
	/* The frame body becomes the stored value: no copy of the bytes. */
	put_parsed(c, r, &pr, body, len);
}

/*
 * PUT_COMMIT: the client wrote the value into its slot; the slot becomes
 * the block.  The key comes from the daemon's own copy of the prefix, so
 * a client writing into the arena meanwhile cannot change it.
 */
static void handle_put_commit(struct kvt_conn *c, struct kvt_reply *r,
			      const uint8_t *body, size_t len)
{
	struct kvt_put_req pr;
	uint8_t *prefix;
	size_t prefix_len, value_len;
	uint64_t id;
	void *mem;
	int rc = kvt_shm_commit_req_parse(body, len, &id);

	if (rc) {
		kvt_reply_error(c, r, rc, "bad PUT_COMMIT: %s",
				kvt_strerror(rc));
		return;
	}
	rc = kvt_lease_take_slot(c, id, &mem, &value_len, &prefix,
				 &prefix_len);
	if (rc) {
		kvt_reply_error(c, r, KVT_EBADREQ, "PUT_COMMIT of unknown slot "
				"%llu", (unsigned long long)id);
		return;
	}
	/*
	 * PUT_ALLOC validated this prefix, but under the limits of then: a
	 * reload since may have lowered them.
	 */
	rc = kvt_put_req_parse(prefix, prefix_len, &c->ctx->lim, &pr);
	if (rc) {
		kvt_block_free(mem);
		free(prefix);
		kvt_reply_error(c, r, rc, "bad PUT_COMMIT: %s (the limits "
				"changed since PUT_ALLOC)", kvt_strerror(rc));
		return;
	}
	pr.value = mem;
	pr.value_len = value_len;
	put_parsed(c, r, &pr, mem, value_len);
	free(prefix);
}

static void handle_key_op(struct kvt_conn *c, struct kvt_reply *r,
			  const struct kvt_frame_header *h,
			  const uint8_t *body, size_t len)
{
	struct kvt_keyref kr;
	struct kvt_key k;
	struct get_ctx *g;
	uint8_t op = h->opcode;
	int rc = kvt_key_req_parse(body, len, &c->ctx->lim, &kr);

	if (rc) {
		kvt_reply_error(c, r, rc, "bad %s: %s", kvt_op_name(op),
				kvt_strerror(rc));
		return;
	}
	if (!kvt_conn_ns_allowed(c, r, kr.ns, kr.ns_len))
		return;
	key_from_ref(&k, &kr);
	switch (op) {
	case KVT_OP_GET:
		g = malloc(sizeof(*g));
		if (!g) {
			kvt_reply_error(c, r, -ENOMEM, "out of memory");
			return;
		}
		g->c = c;
		g->r = r;
		g->shm = (h->flags & KVT_FLAG_SHM) != 0;
		kvt_tm_get(c->ctx->tm, &k, get_done, g);
		return;
	case KVT_OP_DEL:
		rc = kvt_tm_del(c->ctx->tm, &k);
		kvt_reply_finish(c, r, rc, 0, NULL, 0, NULL);
		return;
	case KVT_OP_EXISTS:
		rc = kvt_tm_exists(c->ctx->tm, &k);
		kvt_reply_finish(c, r, rc > 0 ? 0 : KVT_ENOTFOUND, 0, NULL, 0,
				 NULL);
		return;
	}
}

/*
 * Opens a key-list body (MATCH, PREFETCH, PIN, UNPIN): parses it and checks
 * the namespace.  On failure r has been answered and false is returned.
 */
static bool key_list_open(struct kvt_conn *c, struct kvt_reply *r,
			  uint8_t op, const uint8_t *body, size_t len,
			  struct kvt_match_req *m)
{
	int rc = kvt_match_req_parse(body, len, &c->ctx->lim, m);

	if (rc) {
		kvt_reply_error(c, r, rc, "bad %s: %s", kvt_op_name(op),
				kvt_strerror(rc));
		return false;
	}
	return kvt_conn_ns_allowed(c, r, m->ns, m->ns_len);
}

/* Answers r with a u32 count (the MATCH reply format). */
static void reply_count(struct kvt_conn *c, struct kvt_reply *r,
			uint32_t count)
{
	uint8_t *out = malloc(KVT_MATCH_REPLY_SIZE);

	if (!out) {
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	kvt_match_reply_encode(out, count);
	kvt_reply_finish(c, r, 0, 0, out, KVT_MATCH_REPLY_SIZE, NULL);
}

static void match_done(void *arg, int status, uint64_t count)
{
	struct get_ctx *g = arg;

	if (status)
		kvt_reply_error(g->c, g->r, status, "match failed: %s",
				kvt_strerror(status));
	else
		reply_count(g->c, g->r, (uint32_t)count);
	free(g);
}

/*
 * MATCH counts the leading keys present, stopping at the first absent one
 * (the keys of a prefix chain, so nothing after a gap is usable); like
 * EXISTS it promotes nothing.  With L4 the keys after the local run are
 * looked for in the cluster, so the answer may come later (match_done).
 * PREFETCH, same body, starts moving each key up to L1 and answers at once
 * with how many it started.  The parser bounded the key count, which
 * bounds the time either takes on the loop.
 */
static void handle_match(struct kvt_conn *c, struct kvt_reply *r, uint8_t op,
			 const uint8_t *body, size_t len)
{
	struct kvt_match_req m;
	struct kvt_keyref kr;
	struct kvt_key *keys;
	struct get_ctx *g;
	size_t pos = 0, n = 0;
	uint32_t count = 0;

	if (!key_list_open(c, r, op, body, len, &m))
		return;
	if (op == KVT_OP_PREFETCH) {
		while (kvt_match_req_key(&m, &pos, &kr)) {
			struct kvt_key k;

			key_from_ref(&k, &kr);
			/* Starts work on the workers; never waits for it. */
			if (kvt_tm_prefetch(c->ctx->tm, &k) == 1)
				count++;
		}
		reply_count(c, r, count);
		return;
	}
	keys = malloc((m.count ? m.count : 1) * sizeof(*keys));
	g = malloc(sizeof(*g));
	if (!keys || !g) {
		free(keys);
		free(g);
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	while (n < m.count && kvt_match_req_key(&m, &pos, &kr))
		key_from_ref(&keys[n++], &kr);
	g->c = c;
	g->r = r;
	/* The keys point into the body: the manager copies what it keeps. */
	kvt_tm_match(c->ctx->tm, keys, n, match_done, g);
	free(keys);
}

/* ---- pins: per connection, released when it closes ------------------ */

/* Most keys one connection may hold pinned. */
#define KVT_PINS_PER_CONN 4096

/* A key this connection pinned; unpinned when the connection closes. */
struct kvt_pin {
	struct kvt_pin *next;
	size_t ns_len, key_len;
	uint8_t name[];
};

/* The keys one connection holds pinned (c->pins). */
struct kvt_pins {
	struct kvt_pin *head;
	unsigned n;
};

static struct kvt_pin **pin_find(struct kvt_pins *ps, const struct kvt_key *k)
{
	struct kvt_pin **pp = &ps->head;

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->ns_len == k->ns_len && (*pp)->key_len == k->key_len &&
		    memcmp((*pp)->name, k->ns, k->ns_len) == 0 &&
		    memcmp((*pp)->name + k->ns_len, k->key, k->key_len) == 0)
			return pp;
	return NULL;
}

/* Releases every pin c holds, and c's set of pins. */
static void pins_close(struct kvt_conn *c)
{
	struct kvt_pins *ps = c->pins;

	if (!ps)
		return;
	while (ps->head) {
		struct kvt_pin *p = ps->head;
		struct kvt_key k = { p->name, p->ns_len, p->name + p->ns_len,
				     p->key_len };

		ps->head = p->next;
		kvt_tm_unpin(c->ctx->tm, &k);
		free(p);
	}
	free(ps);
	c->pins = NULL;
}

/*
 * PIN / UNPIN: keys pinned in RAM for as long as this connection lives (or
 * until unpinned).  A key pinned twice by one connection counts once.
 */
static void handle_pins(struct kvt_conn *c, struct kvt_reply *r, uint8_t op,
			const uint8_t *body, size_t len)
{
	struct kvt_pins *ps = c->pins;
	struct kvt_match_req m;
	struct kvt_keyref kr;
	struct kvt_key k;
	size_t pos = 0;
	uint32_t count = 0;
	int rc;

	if (!key_list_open(c, r, op, body, len, &m))
		return;
	while (kvt_match_req_key(&m, &pos, &kr)) {
		struct kvt_pin **pp, *p;

		key_from_ref(&k, &kr);
		pp = pin_find(ps, &k);
		if (op == KVT_OP_UNPIN) {
			if (!pp)
				continue;
			p = *pp;
			*pp = p->next;
			free(p);
			ps->n--;
			kvt_tm_unpin(c->ctx->tm, &k);
			count++;
			continue;
		}
		if (pp) {
			count++; /* already pinned by this connection */
			continue;
		}
		if (ps->n >= KVT_PINS_PER_CONN) {
			kvt_reply_error(c, r, KVT_ETOOBIG, "pinned %u keys of "
					"%zu; a connection holds at most %d "
					"pins", count, m.count,
					KVT_PINS_PER_CONN);
			return;
		}
		rc = kvt_tm_pin(c->ctx->tm, &k);
		if (rc == KVT_ETOOBIG) {
			kvt_reply_error(c, r, rc, "pinned %u keys of %zu; the "
					"next would take pinned RAM over "
					"max-pinned", count, m.count);
			return;
		}
		if (rc < 0)
			continue; /* not cached: nothing to pin */
		p = malloc(sizeof(*p) + k.ns_len + k.key_len);
		if (!p) {
			kvt_tm_unpin(c->ctx->tm, &k);
			kvt_reply_error(c, r, -ENOMEM, "out of memory");
			return;
		}
		p->ns_len = k.ns_len;
		p->key_len = k.key_len;
		memcpy(p->name, k.ns, k.ns_len);
		memcpy(p->name + k.ns_len, k.key, k.key_len);
		p->next = ps->head;
		ps->head = p;
		ps->n++;
		count++;
	}
	reply_count(c, r, count);
}

/* ---- namespaces and reports ---------------------------------------- */

static void drop_done(void *arg, int status, uint64_t count)
{
	struct get_ctx *g = arg;
	uint8_t *out;

	if (status) {
		kvt_reply_error(g->c, g->r, status, "drop failed: %s",
				kvt_strerror(status));
	} else if (!(out = malloc(KVT_DROP_REPLY_SIZE))) {
		kvt_reply_error(g->c, g->r, -ENOMEM, "out of memory");
	} else {
		kvt_drop_reply_encode(out, count);
		kvt_reply_finish(g->c, g->r, 0, 0, out, KVT_DROP_REPLY_SIZE,
				 NULL);
	}
	free(g);
}

/* DROP: a namespace leaves every tier; the reply waits for L3's commit. */
static void handle_drop(struct kvt_conn *c, struct kvt_reply *r,
			const uint8_t *body, size_t len)
{
	const uint8_t *ns;
	size_t ns_len;
	struct get_ctx *g;
	int rc = kvt_drop_req_parse(body, len, &c->ctx->lim, &ns, &ns_len);

	if (rc) {
		kvt_reply_error(c, r, rc, "bad DROP: %s", kvt_strerror(rc));
		return;
	}
	if (!kvt_conn_ns_allowed(c, r, ns, ns_len))
		return;
	g = malloc(sizeof(*g));
	if (!g) {
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	g->c = c;
	g->r = r;
	kvt_log(KVT_LOG_INFO, "event=drop conn=%llu uid=%u ns=\"%.*s\"",
		(unsigned long long)c->id, (unsigned)c->uid,
		(int)(ns_len > 64 ? 64 : ns_len), (const char *)ns);
	kvt_tm_drop_ns(c->ctx->tm, ns, ns_len, drop_done, g);
}

/*
 * HOT: the most-hit blocks, exactly.  Blocks of namespaces bound to other
 * users are left out, so the report reveals nothing of another tenant.
 */
static void handle_hot(struct kvt_conn *c, struct kvt_reply *r,
		       const uint8_t *body, size_t len)
{
	struct kvt_tm_hot *v = NULL;
	size_t n = 0, total = KVT_HOT_REPLY_FIXED, off, w;
	uint32_t top, count = 0;
	uint8_t *out;
	int rc = kvt_hot_req_parse(body, len, &top);

	if (rc) {
		kvt_reply_error(c, r, rc, "bad HOT: %s (top is 1 to %d)",
				kvt_strerror(rc), KVT_HOT_TOP_MAX);
		return;
	}
	rc = kvt_tm_hot(c->ctx->tm, top, &v, &n);
	if (rc) {
		kvt_reply_error(c, r, rc, "hot failed: %s", kvt_strerror(rc));
		return;
	}
	for (size_t i = 0; i < n; i++)
		total += kvt_hot_item_size(v[i].ns_len, v[i].key_len);
	out = malloc(total);
	if (!out) {
		kvt_tm_hot_free(v, n);
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	off = KVT_HOT_REPLY_FIXED;
	for (size_t i = 0; i < n; i++) {
		struct kvt_hot_item it = {
			.tier = v[i].tier,
			.ns = v[i].name,
			.ns_len = v[i].ns_len,
			.key = v[i].name + v[i].ns_len,
			.key_len = v[i].key_len,
			.size = v[i].size,
			.hits = v[i].hits,
			.ctime_s = v[i].ctime_s,
			.atime_s = v[i].atime_s,
		};
		if (!kvt_access_ns_ok(&c->ctx->acc, c->uid, it.ns, it.ns_len))
			continue;
		if (kvt_hot_item_encode(out + off, total - off, &it, &w))
			continue;
		off += w;
		count++;
	}
	kvt_hot_reply_head_encode(out, count, kvt_tm_now_s(c->ctx->tm));
	kvt_tm_hot_free(v, n);
	kvt_reply_finish(c, r, 0, 0, out, off, NULL);
}

/* ---- what the connection calls (kvt_request_ops) -------------------- */

static void request_handle(struct kvt_conn *c,
			   const struct kvt_frame_header *h, uint8_t *body)
{
	struct kvt_reply *r;
	size_t len = h->body_len;

	/* A quiet RELEASE (clients send one ahead of their next request)
	 * gets no reply, so it takes no reply slot either. */
	if (h->opcode == KVT_OP_RELEASE && (h->flags & KVT_FLAG_QUIET)) {
		kvt_lease_release(c, NULL, body, len);
		free(body);
		return;
	}
	r = kvt_reply_reserve(c, h->request_id, h->opcode);

	if (!r) {
		kvt_log(KVT_LOG_ERROR, "event=oom where=reply conn=%llu",
			(unsigned long long)c->id);
		kvt_block_free(body);
		return;
	}
	if (c->revoked) {
		/*
		 * A reload took this peer off the allow-lists: it is refused
		 * now as it would be at connect, and the connection ends
		 * (its pins and leases with it) once this reply is sent.
		 */
		c->ctx->st.requests_denied++;
		kvt_log(KVT_LOG_WARN, "event=request_denied conn=%llu uid=%u "
			"op=%s reason=access_revoked",
			(unsigned long long)c->id, (unsigned)c->uid,
			kvt_op_name(h->opcode));
		kvt_reply_error(c, r, KVT_EDENIED, "uid %u is no longer "
				"allowed to use this kvtierd (allow-uid/"
				"allow-gid changed on reload)",
				(unsigned)c->uid);
		kvt_block_free(body);
		kvt_conn_end(c);
		return;
	}
	switch (h->opcode) {
	case KVT_OP_HELLO:
		handle_hello(c, r, body, len);
		break;
	case KVT_OP_PING:
		/* Echo the body back: lets clients measure round trips. */
		kvt_reply_finish(c, r, 0, 0, body, len, NULL);
		return;
	case KVT_OP_PUT:
		handle_put(c, r, body, len);
		return;
	case KVT_OP_GET:
	case KVT_OP_DEL:
	case KVT_OP_EXISTS:
		handle_key_op(c, r, h, body, len);
		break;
	case KVT_OP_MATCH:
	case KVT_OP_PREFETCH:
		handle_match(c, r, h->opcode, body, len);
		break;
	case KVT_OP_PIN:
	case KVT_OP_UNPIN:
		handle_pins(c, r, h->opcode, body, len);
		break;
	case KVT_OP_DROP:
		handle_drop(c, r, body, len);
		break;
	case KVT_OP_HOT:
		handle_hot(c, r, body, len);
		break;
	case KVT_OP_RELEASE:
		kvt_lease_release(c, r, body, len);
		break;
	case KVT_OP_PUT_ALLOC:
		kvt_lease_alloc(c, r, body, len);
		break;
	case KVT_OP_PUT_COMMIT:
		handle_put_commit(c, r, body, len);
		break;
	case KVT_OP_REGISTER:
		kvt_region_register(c, r, body, len);
		break;
	case KVT_OP_UNREGISTER:
		kvt_region_unregister(c, r, body, len);
		break;
	case KVT_OP_MGET_TO:
	case KVT_OP_MPUT_FROM:
		/* The body's keys are used until the transfer is done. */
		kvt_region_xfer(c, r, h->opcode == KVT_OP_MPUT_FROM, body, len);
		return;
	case KVT_OP_STATS: {
		char *json;
		size_t n;

		if (kvt_dstats_json(c->ctx, c->uid, &json, &n))
			kvt_reply_error(c, r, -ENOMEM, "out of memory");
		else
			kvt_reply_finish(c, r, 0, 0, (uint8_t *)json, n, NULL);
		break;
	}
	default:
		kvt_reply_error(c, r, KVT_EUNKNOWNOP, "unknown opcode %u",
				h->opcode);
		break;
	}
	free(body);
}

static int request_open(struct kvt_conn *c)
{
	c->pins = calloc(1, sizeof(*c->pins));
	if (!c->pins)
		return -ENOMEM;
	if (kvt_region_open(c))
		return -ENOMEM;
	return kvt_lease_open(c);
}

static void request_close(struct kvt_conn *c)
{
	/* Pins belong to the connection: the kernel told us it is gone. */
	pins_close(c);
	/* So do leases and slots: their bytes may be freed or reused now. */
	kvt_lease_close(c);
	/* And registered regions (unmapped once no transfer uses them). */
	kvt_region_close(c);
}

/* Pins and regions end with the connection: it is not idle. */
static bool request_holds(const struct kvt_conn *c)
{
	return (c->pins && c->pins->n > 0) || kvt_region_holds(c);
}

const struct kvt_conn_ops kvt_request_ops = {
	.request = request_handle,
	.open = request_open,
	.close = request_close,
	.holds = request_holds,
};
