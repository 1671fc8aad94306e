/*
 * kvt_lease.c - the shared-memory data path, daemon side (PROTOCOL.md,
 * "Shared memory").
 *
 * Block values of at least shm-threshold bytes live in one memfd arena
 * (tiers/kvt_mem.h).  A trusted client maps it once, at HELLO, and then:
 *  - GET: instead of sending the bytes, the daemon sends a lease (offset,
 *    length).  The lease holds a reference on the block, and a block's
 *    memory is only freed when its last reference goes, so the bytes stay
 *    where they are however the block is evicted, demoted or replaced
 *    meanwhile.  The client copies them out and ends the lease (RELEASE),
 *    or its connection closes.
 *  - PUT: PUT_ALLOC reserves arena memory (a slot) that the client writes
 *    the value into; PUT_COMMIT hands the slot to the tiers as the block,
 *    with no copy.
 * Both are bounded per connection (shm-lease-max bytes, KVT_LEASES_PER_CONN
 * entries): a client that never releases cannot hold more.
 *
 * Trust: a client given the arena can read every block in it and write
 * anywhere in it, so it is offered only to our own uid, root and the
 * shm-allow-uid list; everyone else gets the socket path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvt_daemon.h"
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

static bool peer_trusted(const struct kvt_conn *c)
{
	const struct kvt_access *a = &c->srv->shm_acc;

	if (c->uid == 0 || c->uid == geteuid())
		return true;
	for (size_t i = 0; i < a->nuids; i++)
		if (a->uids[i] == c->uid)
			return true;
	return false;
}

bool kvt_lease_hello(struct kvt_conn *c, struct kvt_reply *r,
		     struct kvt_shm_hello *sh)
{
	struct kvt_server *s = c->srv;

	memset(sh, 0, sizeof(*sh));
	if (!s->arena)
		return false;
	if (!peer_trusted(c)) {
		s->st.shm_refused++;
		kvt_log(KVT_LOG_DEBUG, "event=shm_refused conn=%llu uid=%u "
			"hint=\"not our uid, root or shm-allow-uid\"",
			(unsigned long long)c->id, (unsigned)c->uid);
		return false;
	}
	/*
	 * The fd rides on the sendmsg that starts r: only possible while no
	 * earlier reply is queued (clients send HELLO first and wait).
	 */
	if (c->out_head != r)
		return false;
	r->pass_arena = true;
	if (!c->shm)
		s->st.shm_granted++;
	c->shm = true;
	sh->arena_size = kvt_arena_size(s->arena);
	sh->threshold = s->cfg->shm_threshold;
	return true;
}

static bool room_for(const struct kvt_conn *c, uint64_t bytes)
{
	return c->nleases < KVT_LEASES_PER_CONN &&
	       bytes <= c->srv->cfg->shm_lease_max - c->lease_bytes &&
	       c->lease_bytes <= c->srv->cfg->shm_lease_max;
}

static struct kvt_lease *lease_new(struct kvt_conn *c, uint64_t bytes)
{
	struct kvt_lease *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	if (++c->next_lease == 0)
		c->next_lease = 1;
	l->id = c->next_lease;
	l->bytes = bytes;
	l->next = c->leases;
	c->leases = l;
	c->nleases++;
	c->lease_bytes += bytes;
	c->srv->leases++;
	c->srv->lease_bytes += bytes;
	return l;
}

/* Unlinks *pp from c's list and frees it, ending the lease or slot. */
static void lease_end(struct kvt_conn *c, struct kvt_lease **pp)
{
	struct kvt_lease *l = *pp;

	*pp = l->next;
	c->nleases--;
	c->lease_bytes -= l->bytes;
	c->srv->leases--;
	c->srv->lease_bytes -= l->bytes;
	kvt_ref_release(l->ref);
	kvt_block_free(l->slot);
	free(l->prefix);
	free(l);
}

bool kvt_lease_get(struct kvt_conn *c, struct kvt_reply *r,
		   struct kvt_ref *ref)
{
	struct kvt_server *s = c->srv;
	const uint8_t *data = kvt_ref_data(ref);
	size_t len = kvt_ref_len(ref);
	struct kvt_shm_lease sl;
	struct kvt_lease *l;
	uint8_t *out;

	if (!c->shm || len < s->cfg->shm_threshold || !kvt_block_shared(data) ||
	    !room_for(c, len)) {
		s->st.shm_fallbacks++;
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
	sl.offset = (uint64_t)(data - kvt_arena_base(s->arena));
	sl.len = len;
	kvt_shm_lease_encode(out, &sl);
	s->st.shm_gets++;
	s->st.shm_get_bytes += len;
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
		c->srv->st.protocol_errors++;
		if (r)
			kvt_reply_error(c, r, rc, "bad RELEASE: %s",
					kvt_strerror(rc));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t id = kvt_shm_release_id(ids, i);

		for (struct kvt_lease **pp = &c->leases; *pp;
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
	struct kvt_server *s = c->srv;
	struct kvt_shm_slot slot;
	struct kvt_put_req pr;
	const uint8_t *prefix;
	size_t prefix_len;
	uint64_t vlen;
	struct kvt_lease *l;
	uint8_t *out, *copy;
	void *mem;
	int rc;

	if (!c->shm) {
		kvt_reply_error(c, r, KVT_EBADREQ, "PUT_ALLOC without shared "
				"memory: send HELLO with the SHM feature first");
		return;
	}
	rc = kvt_shm_alloc_req_parse(body, len, &s->lim, &vlen, &prefix,
				     &prefix_len);
	if (rc) {
		kvt_reply_error(c, r, rc, "bad PUT_ALLOC: %s",
				kvt_strerror(rc));
		return;
	}
	/* Cannot fail: the parser validated the prefix as a PUT body. */
	kvt_put_req_parse(prefix, prefix_len, &s->lim, &pr);
	if (!kvt_conn_ns_allowed(c, r, pr.k.ns, pr.k.ns_len))
		return;
	if (!room_for(c, vlen)) {
		s->st.shm_full++;
		kvt_reply_error(c, r, KVT_EBUSY, "connection holds %llu bytes "
				"of shared memory, shm-lease-max is %llu",
				(unsigned long long)c->lease_bytes,
				(unsigned long long)s->cfg->shm_lease_max);
		return;
	}
	mem = kvt_arena_alloc(s->arena, vlen ? vlen : 1);
	if (!mem) {
		s->st.shm_full++;
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
	slot.offset = (uint64_t)((uint8_t *)mem - kvt_arena_base(s->arena));
	kvt_shm_slot_encode(out, &slot);
	kvt_reply_finish(c, r, 0, 0, out, KVT_SHM_SLOT_SIZE, NULL);
}

int kvt_lease_take_slot(struct kvt_conn *c, uint64_t id, void **mem,
			size_t *value_len, uint8_t **prefix,
			size_t *prefix_len)
{
	for (struct kvt_lease **pp = &c->leases; *pp; pp = &(*pp)->next) {
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
		return 0;
	}
	return KVT_ENOTFOUND;
}

void kvt_lease_drop_all(struct kvt_conn *c)
{
	while (c->leases)
		lease_end(c, &c->leases);
}
