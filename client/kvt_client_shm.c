/*
 * kvt_client_shm.c - libkvtier's request path and its shared memory
 * (kvt_client_int.h; PROTOCOL.md, "Shared memory").
 *
 * Every request goes out through kvt_ci_send_request(), because that is
 * where leases end: a GET reply may name arena bytes instead of carrying
 * them (a lease), which the daemon keeps in place until we have copied
 * them; the leases copied since the last request end with a reply-less
 * RELEASE sent in the same sendmsg() as the next request, so ending one
 * costs neither a system call nor a round trip.  A PUT of a large value
 * goes through a slot of the arena instead of the socket.  The arena is
 * the daemon's memfd, passed with the HELLO reply and mapped once per
 * process (kvt_shmmap.h).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "kvt_client_int.h"
#include "kvt_frame.h"
#include "kvt_shm.h"
#include "kvt_shmmap.h"
#include "kvtier_errors.h"

/*
 * A put through a slot costs a second round trip (PUT_ALLOC, PUT_COMMIT)
 * to save the socket copy; measured on the dev VM the socket is as fast up
 * to about 256 KiB and slower from 512 KiB, so smaller values go over the
 * socket whatever the daemon's threshold.
 */
#define KVT_CLIENT_SHM_PUT_MIN (256u << 10)

/* ---- The request path ----------------------------------------------- */

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
	h.request_id = kvt_ci_next_id(c);
	h.body_len = (uint32_t)len;
	kvt_frame_header_encode(c->relbuf, &h);
	return KVT_HDR_SIZE + len;
}

int kvt_ci_send_request(kvt_client *c, uint8_t op, size_t prefix_len,
			const void *val, size_t val_len, uint64_t *id)
{
	struct kvt_frame_header h = { .opcode = op };
	struct iovec rel = { .iov_base = c->relbuf, .iov_len = 0 };
	int rc;

	/*
	 * Leases copied since the last request end with this one: their
	 * quiet RELEASE goes out in the same sendmsg, so ending a lease costs
	 * neither a system call nor a reply.
	 */
	if (c->nrel > 0 && op != KVT_OP_RELEASE)
		rel.iov_len = release_encode(c);
	/* Every GET path can take its value from a lease. */
	if (op == KVT_OP_GET && c->shm)
		h.flags = KVT_FLAG_SHM;
	rc = kvt_ci_send_frame(c, &rel, &h, prefix_len, val, val_len);
	*id = h.request_id;
	return rc;
}

int kvt_ci_request(kvt_client *c, uint8_t op, size_t prefix_len,
		   const void *val, size_t val_len,
		   struct kvt_frame_header *rh)
{
	uint64_t id;
	int rc;

	if (val_len > KVT_BODY_FIELD_MAX - prefix_len)
		return kvt_ci_err(c, KVT_ETOOBIG, "request body too large");
	rc = kvt_ci_send_request(c, op, prefix_len, val, val_len, &id);
	if (rc == 0)
		return kvt_ci_read_reply(c, op, id, rh);
	return kvt_ci_send_failed(c, rc, op, id, rh);
}

/* ---- Leases --------------------------------------------------------- */

/*
 * A full list of leases ends on its own: one quiet RELEASE, no reply.
 * (Otherwise they end with the next request, see kvt_ci_send_request.)
 */
static int release_flush(kvt_client *c)
{
	struct iovec iov = { .iov_base = c->relbuf };
	int rc;

	iov.iov_len = release_encode(c);
	rc = kvt_ci_send_all(c->fd, &iov, 1);
	return rc < 0 ? kvt_ci_lost(c, rc, "sending RELEASE") : 0;
}

static int lease_done(kvt_client *c, uint64_t id)
{
	c->rel[c->nrel++] = id;
	return c->nrel == KVT_SHM_RELEASE_MAX ? release_flush(c) : 0;
}

int kvt_ci_value_open(kvt_client *c, const struct kvt_frame_header *rh,
		      struct kvt_ci_value *v)
{
	uint8_t b[KVT_SHM_LEASE_SIZE];
	struct kvt_shm_lease l;
	int rc;

	memset(v, 0, sizeof(*v));
	v->len = rh->body_len;
	if (!(rh->flags & KVT_FLAG_SHM))
		return 0;
	if (!c->shm || rh->body_len != sizeof(b))
		return kvt_ci_fail(c, KVT_EPROTO, "unexpected lease reply");
	rc = kvt_ci_read_body(c, b, sizeof(b));
	if (rc < 0)
		return rc;
	if (kvt_shm_lease_parse(b, sizeof(b), c->shm_size, &l) < 0 ||
	    l.len > SIZE_MAX)
		return kvt_ci_fail(c, KVT_EPROTO, "lease outside the arena");
	v->shm = c->shm + l.offset;
	v->lease = l.id;
	v->len = (size_t)l.len;
	return 0;
}

int kvt_ci_value_copy(kvt_client *c, const struct kvt_ci_value *v,
		      void *dst)
{
	if (!v->shm)
		return kvt_ci_read_body(c, dst, v->len);
	KVT_CI_ARENA_ACQUIRE(c->map);
	kvt_shmmap_populate(c->map, v->shm, v->len);
	memcpy(dst, v->shm, v->len);
	KVT_CI_ARENA_RELEASE(c->map);
	return lease_done(c, v->lease);
}

int kvt_ci_value_skip(kvt_client *c, const struct kvt_ci_value *v)
{
	if (!v->shm)
		return kvt_ci_discard_body(c, v->len);
	return lease_done(c, v->lease);
}

/* ---- The arena ------------------------------------------------------ */

void kvt_ci_shm_map(kvt_client *c, const struct kvt_shm_hello *sh)
{
	if (c->recv_fd < 0 || sh->arena_size == 0 ||
	    kvt_shmmap_get(c->recv_fd, sh->arena_size, &c->map) < 0)
		return;
	c->shm = kvt_shmmap_base(c->map);
	c->shm_size = sh->arena_size;
	c->shm_threshold = sh->threshold ? sh->threshold : 1;
}

bool kvt_ci_shm_wanted(void)
{
	const char *e = getenv("KVTIER_SHM");

	return !(e && (!strcmp(e, "0") || !strcmp(e, "off") ||
		       !strcmp(e, "no")));
}

int kvt_client_shm(const kvt_client *c)
{
	return c && c->shm ? 1 : 0;
}

/* ---- PUT through a slot --------------------------------------------- */

/*
 * PUT_ALLOC (c->sbuf holds the PUT prefix of len bytes after room for the
 * length), copy, PUT_COMMIT.  Returns 1 when the daemon has no room for a
 * slot; else 0 or an error.
 */
static int put_slot(kvt_client *c, size_t len, const void *val,
		    size_t val_len)
{
	struct kvt_frame_header rh;
	struct kvt_shm_slot slot;
	uint8_t b[KVT_SHM_SLOT_SIZE];
	int rc;

	kvt_shm_alloc_req_encode_len(c->sbuf + KVT_HDR_SIZE, val_len);
	rc = kvt_ci_request(c, KVT_OP_PUT_ALLOC, KVT_SHM_ALLOC_FIXED + len,
			    NULL, 0, &rh);
	if ((rc == KVT_ENOSPACE || rc == KVT_EBUSY) && !c->broken)
		return 1;
	if (rc < 0)
		return rc;
	if (rh.body_len != sizeof(b)) {
		kvt_ci_discard_body(c, rh.body_len);
		return kvt_ci_fail(c, KVT_EPROTO, "bad PUT_ALLOC reply");
	}
	rc = kvt_ci_read_body(c, b, sizeof(b));
	if (rc < 0)
		return rc;
	if (kvt_shm_slot_parse(b, sizeof(b), &slot) < 0 ||
	    slot.offset > c->shm_size || val_len > c->shm_size - slot.offset)
		return kvt_ci_fail(c, KVT_EPROTO, "slot outside the arena");
	KVT_CI_ARENA_ACQUIRE(c->map);
	kvt_shmmap_populate(c->map, c->shm + slot.offset, val_len);
	memcpy(c->shm + slot.offset, val, val_len);
	KVT_CI_ARENA_RELEASE(c->map);
	kvt_shm_commit_req_encode(c->sbuf + KVT_HDR_SIZE, slot.id);
	rc = kvt_ci_request(c, KVT_OP_PUT_COMMIT, KVT_SHM_COMMIT_SIZE, NULL, 0,
			    &rh);
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh.body_len);
}

int kvt_ci_put_shm(kvt_client *c, const struct kvt_put_req *r)
{
	size_t len;

	if (!c->shm || r->value_len < c->shm_threshold ||
	    r->value_len < KVT_CLIENT_SHM_PUT_MIN)
		return 1;
	/* The prefix goes after PUT_ALLOC's length field. */
	if (kvt_put_req_encode_prefix(
		    c->sbuf + KVT_HDR_SIZE + KVT_SHM_ALLOC_FIXED,
		    c->sbuf_cap - KVT_HDR_SIZE - KVT_SHM_ALLOC_FIXED, r,
		    &len) != 0)
		return 1;
	return put_slot(c, len, r->value, (size_t)r->value_len);
}
