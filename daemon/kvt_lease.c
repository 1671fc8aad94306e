/*
 * kvt_lease.c - the shared-memory data path, daemon side: see kvt_lease.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvt_lease.h"
#include "kvt_log.h"
#include "kvt_mem.h"

/* A GET lease (ref set) or a PUT slot (slot set), owned by a connection. */
struct kvt_lease {
	struct kvt_lease *next;
	uint64_t id;
	uint64_t bytes;
	struct kvt_ref *ref;
	void *slot;
	uint8_t *prefix; /* slot: copy of the PUT prefix */
	size_t prefix_len;
};

/* What one connection holds (c->leases). */
struct kvt_leases {
	bool granted; /* the arena was given to this connection */
	struct kvt_lease *head;
	unsigned n;
	uint64_t bytes; /* bytes they keep from being freed */
	uint64_t next_id;
};

int kvt_lease_pool_init(struct kvt_lease_pool *pool, struct kvt_arena *arena,
			const char *allow_uid, char *err, size_t errcap)
{
	memset(pool, 0, sizeof(*pool));
	pool->arena = arena;
	return kvt_access_parse(&pool->allow, allow_uid, NULL, NULL, NULL, err,
				errcap);
}

int kvt_lease_open(struct kvt_conn *c)
{
	c->leases = calloc(1, sizeof(*c->leases));
	return c->leases ? 0 : -ENOMEM;
}

static bool peer_trusted(const struct kvt_conn *c)
{
	return c->uid == 0 || c->uid == geteuid() ||
	       kvt_access_allows_uid(&c->ctx->shm->allow, c->uid);
}

bool kvt_lease_hello(struct kvt_conn *c, struct kvt_reply *r,
		     struct kvt_shm_hello *sh)
{
	struct kvt_lease_pool *p = c->ctx->shm;

	memset(sh, 0, sizeof(*sh));
	if (!p->arena)
		return false;
	if (!peer_trusted(c)) {
		p->st.refused++;
		kvt_log(KVT_LOG_DEBUG, "event=shm_refused conn=%llu uid=%u "
			"hint=\"not our uid, root or shm-allow-uid\"",
			(unsigned long long)c->id, (unsigned)c->uid);
		return false;
	}
	/*
	 * The fd rides on the sendmsg that starts r: only possible while no
	 * earlier reply is queued (clients send HELLO first and wait).
	 */
	if (!kvt_reply_pass_fd(c, r, kvt_arena_fd(p->arena)))
		return false;
	if (!c->leases->granted)
		p->st.granted++;
	c->leases->granted = true;
	sh->arena_size = kvt_arena_size(p->arena);
	sh->threshold = c->ctx->cfg->shm_threshold;
	return true;
}

static bool room_for(const struct kvt_conn *c, uint64_t bytes)
{
	const struct kvt_leases *ls = c->leases;
	uint64_t max = c->ctx->cfg->shm_lease_max;

	return ls->n < KVT_LEASES_PER_CONN && bytes <= max - ls->bytes &&
	       ls->bytes <= max;
}

static struct kvt_lease *lease_new(struct kvt_conn *c, uint64_t bytes)
{
	struct kvt_leases *ls = c->leases;
	struct kvt_lease_pool *p = c->ctx->shm;
	struct kvt_lease *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	if (++ls->next_id == 0)
		ls->next_id = 1;
	l->id = ls->next_id;
	l->bytes = bytes;
	l->next = ls->head;
	ls->head = l;
	ls->n++;
	ls->bytes += bytes;
	p->leases++;
	p->lease_bytes += bytes;
	return l;
}

/* Unlinks *pp from c's list and frees it, ending the lease or slot. */
static void lease_end(struct kvt_conn *c, struct kvt_lease **pp)
{
	struct kvt_leases *ls = c->leases;
	struct kvt_lease_pool *p = c->ctx->shm;
	struct kvt_lease *l = *pp;

	*pp = l->next;
	ls->n--;
	ls->bytes -= l->bytes;
	p->leases--;
	p->lease_bytes -= l->bytes;
	kvt_ref_release(l->ref);
	kvt_block_free(l->slot);
	free(l->prefix);
	free(l);
}

bool kvt_lease_get(struct kvt_conn *c, struct kvt_reply *r,
		   struct kvt_ref *ref)
{
	struct kvt_lease_pool *p = c->ctx->shm;
	const uint8_t *data = kvt_ref_data(ref);
	size_t len = kvt_ref_len(ref);
	struct kvt_shm_lease sl;
	struct kvt_lease *l;
	uint8_t *out;

	if (!c->leases->granted || len < c->ctx->cfg->shm_threshold ||
	    !kvt_block_shared(data) || !room_for(c, len)) {
		p->st.fallbacks++;
		return false;
	}
	out = malloc(KVT_SHM_LEASE_SIZE);
	if (!out)
		return false;
	l = lease_new(c, len);
	if (!l) {
		free(out);
		return false;
	}
	l->ref = ref;
	sl.id = l->id;
	sl.offset = (uint64_t)(data - kvt_arena_base(p->arena));
	sl.len = len;
	kvt_shm_lease_encode(out, &sl);
	p->st.gets++;
	p->st.get_bytes += len;
	kvt_reply_finish(c, r, 0,
			 (uint16_t)(KVT_FLAG_SHM |
				    (kvt_ref_dtype(ref) & KVT_FLAG_DTYPE_MASK)),
			 out, KVT_SHM_LEASE_SIZE, NULL);
	return true;
}

void kvt_lease_release(struct kvt_conn *c, struct kvt_reply *r,
		       const uint8_t *body, size_t len)
{
	const uint8_t *ids;
	uint32_t ended = 0;
	uint8_t *out;
	size_t n;
	int rc = kvt_shm_release_req_parse(body, len, &ids, &n);

	if (rc) {
		c->ctx->st.protocol_errors++;
		if (r)
			kvt_reply_error(c, r, rc, "bad RELEASE: %s",
					kvt_strerror(rc));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t id = kvt_shm_release_id(ids, i);

		for (struct kvt_lease **pp = &c->leases->head; *pp;
		     pp = &(*pp)->next)
			if ((*pp)->id == id && (*pp)->ref) {
				lease_end(c, pp);
				ended++;
				break;
			}
	}
	if (!r)
		return; /* quiet */
	out = malloc(KVT_SHM_RELEASE_REPLY_SIZE);
	if (!out) {
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	kvt_match_reply_encode(out, ended);
	kvt_reply_finish(c, r, 0, 0, out, KVT_SHM_RELEASE_REPLY_SIZE, NULL);
}

void kvt_lease_alloc(struct kvt_conn *c, struct kvt_reply *r,
		     const uint8_t *body, size_t len)
{
	struct kvt_conn_ctx *x = c->ctx;
	struct kvt_shm_slot slot;
	struct kvt_put_req pr;
	const uint8_t *prefix;
	size_t prefix_len;
	uint64_t vlen;
	struct kvt_lease *l;
	uint8_t *out, *copy;
	void *mem;
	int rc;

	if (!c->leases->granted) {
		kvt_reply_error(c, r, KVT_EBADREQ, "PUT_ALLOC without shared "
				"memory: send HELLO with the SHM feature first");
		return;
	}
	rc = kvt_shm_alloc_req_parse(body, len, &x->lim, &vlen, &prefix,
				     &prefix_len);
	if (rc) {
		kvt_reply_error(c, r, rc, "bad PUT_ALLOC: %s",
				kvt_strerror(rc));
		return;
	}
	/* Cannot fail: the parser validated the prefix as a PUT body. */
	kvt_put_req_parse(prefix, prefix_len, &x->lim, &pr);
	if (!kvt_conn_ns_allowed(c, r, pr.k.ns, pr.k.ns_len))
		return;
	if (!room_for(c, vlen)) {
		x->shm->st.full++;
		kvt_reply_error(c, r, KVT_EBUSY, "connection holds %llu bytes "
				"of shared memory, shm-lease-max is %llu",
				(unsigned long long)c->leases->bytes,
				(unsigned long long)x->cfg->shm_lease_max);
		return;
	}
	mem = kvt_arena_alloc(x->shm->arena, vlen ? vlen : 1);
	if (!mem) {
		x->shm->st.full++;
		kvt_reply_error(c, r, KVT_ENOSPACE, "shared memory arena is "
				"full; send the value over the socket");
		return;
	}
	out = malloc(KVT_SHM_SLOT_SIZE);
	copy = malloc(prefix_len);
	l = out && copy ? lease_new(c, vlen) : NULL;
	if (!l) {
		free(out);
		free(copy);
		kvt_block_free(mem);
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return;
	}
	memcpy(copy, prefix, prefix_len);
	l->slot = mem;
	l->prefix = copy;
	l->prefix_len = prefix_len;
	slot.id = l->id;
	slot.offset = (uint64_t)((uint8_t *)mem - kvt_arena_base(x->shm->arena));
	kvt_shm_slot_encode(out, &slot);
	kvt_reply_finish(c, r, 0, 0, out, KVT_SHM_SLOT_SIZE, NULL);
}

int kvt_lease_take_slot(struct kvt_conn *c, uint64_t id, void **mem,
			size_t *value_len, uint8_t **prefix,
			size_t *prefix_len)
{
	for (struct kvt_lease **pp = &c->leases->head; *pp;
	     pp = &(*pp)->next) {
		struct kvt_lease *l = *pp;

		if (l->id != id || !l->slot)
			continue;
		*mem = l->slot;
		*value_len = (size_t)l->bytes;
		*prefix = l->prefix;
		*prefix_len = l->prefix_len;
		l->slot = NULL;
		l->prefix = NULL;
		lease_end(c, pp);
		c->ctx->shm->st.puts++;
		c->ctx->shm->st.put_bytes += *value_len;
		return 0;
	}
	return KVT_ENOTFOUND;
}

void kvt_lease_close(struct kvt_conn *c)
{
	if (!c->leases)
		return;
	while (c->leases->head)
		lease_end(c, &c->leases->head);
	free(c->leases);
	c->leases = NULL;
}
