/*
 * kvt_lease.h - the shared-memory data path, daemon side (PROTOCOL.md,
 * "Shared memory"): the arena granted at HELLO, GET leases and PUT slots.
 *
 * Block values of at least shm-threshold bytes live in one memfd arena
 * (kvt_mem.h, kvt_arena.h).  A trusted client maps it once, at HELLO, and
 * then:
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
 *
 * State: one pool per server (struct kvt_lease_pool, reached as
 * c->ctx->shm) and, per connection, the leases and slots it holds
 * (c->leases, private to kvt_lease.c), set up by kvt_lease_open() and
 * ended by kvt_lease_close().
 */
#ifndef KVT_LEASE_H
#define KVT_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvt_access.h"
#include "kvt_conn.h"
#include "kvt_shm.h"

struct kvt_arena; /* kvt_arena.h */

/* Most leases plus slots one connection may hold at once. */
#define KVT_LEASES_PER_CONN 4096

/* Counters of the shared-memory path. */
struct kvt_lease_stats {
	uint64_t granted;   /* connections given the arena */
	uint64_t refused;   /* asked for it, peer not trusted */
	uint64_t gets;	    /* GETs answered with a lease */
	uint64_t get_bytes;
	uint64_t puts;	    /* PUTs committed from a slot */
	uint64_t put_bytes;
	uint64_t fallbacks; /* asked for a lease, sent the bytes */
	uint64_t full;	    /* PUT_ALLOC refused: arena or lease cap */
};

/* What every connection of a server shares of the shared-memory path. */
struct kvt_lease_pool {
	struct kvt_arena *arena; /* kvt_tm_arena(), NULL if none */
	/* Peers besides our own uid and root given shared memory. */
	struct kvt_access allow;
	uint64_t leases, lease_bytes; /* over all connections */
	struct kvt_lease_stats st;
};

/*
 * Sets up pool for arena (NULL: shared memory is off) with the
 * comma-separated shm-allow-uid list allow_uid (names or numbers; NULL or
 * "" for none).  Returns 0, or -1 with a reason in err.
 */
int kvt_lease_pool_init(struct kvt_lease_pool *pool, struct kvt_arena *arena,
			const char *allow_uid, char *err, size_t errcap);

/*
 * Sets up c's (empty) set of leases and slots, sharing c->ctx->shm.
 * Returns 0 or -ENOMEM.
 */
int kvt_lease_open(struct kvt_conn *c);

/*
 * Ends every lease and frees every slot of c (it is going away): their
 * bytes may be freed or reused from now on.  Accepts a c that
 * kvt_lease_open() failed on or never saw.
 */
void kvt_lease_close(struct kvt_conn *c);

/*
 * Decides whether c, which asked for KVT_FEAT_SHM in the HELLO answered by
 * r, gets the arena: shared memory is on, the peer is trusted (our uid,
 * root, or shm-allow-uid) and r is the first reply still to send, so the
 * fd travels with it.  On yes, makes r carry the fd, fills *sh and returns
 * true; else *sh is zero.
 */
bool kvt_lease_hello(struct kvt_conn *c, struct kvt_reply *r,
		     struct kvt_shm_hello *sh);

/*
 * Tries to answer the GET r (sent with KVT_FLAG_SHM) with a lease on ref's
 * bytes.  Returns true if it did (the lease now owns ref), false if the
 * value must be sent over the socket (not in the arena, under the
 * threshold, or c at its lease cap).
 */
bool kvt_lease_get(struct kvt_conn *c, struct kvt_reply *r,
		   struct kvt_ref *ref);

/* Ends the leases a RELEASE body lists; answers r (NULL: a quiet RELEASE,
 * no answer, a malformed body only counted in protocol_errors). */
void kvt_lease_release(struct kvt_conn *c, struct kvt_reply *r,
		       const uint8_t *body, size_t len);

/*
 * PUT_ALLOC: reserves value_len bytes of the arena for c as a slot that
 * keeps a copy of the PUT prefix; answers r with the slot or an error.
 */
void kvt_lease_alloc(struct kvt_conn *c, struct kvt_reply *r,
		     const uint8_t *body, size_t len);

/*
 * PUT_COMMIT: takes c's slot id out of its list and counts the PUT.
 * Returns 0 with *mem (the value's arena memory, ownership passes),
 * *value_len and *prefix (a malloc'd copy of the PUT prefix, *prefix_len
 * bytes, the caller frees); or KVT_ENOTFOUND.
 */
int kvt_lease_take_slot(struct kvt_conn *c, uint64_t id, void **mem,
			size_t *value_len, uint8_t **prefix,
			size_t *prefix_len);

#endif /* KVT_LEASE_H */
