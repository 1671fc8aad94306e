/*
 * kvt_shm.h - wire format of the shared-memory data path (PROTOCOL.md,
 * "Shared memory").  Pure encoders and parsers over caller buffers, like
 * kvt_frame.h: no I/O, no allocation.
 *
 * A client that asks for KVT_FEAT_SHM in its HELLO and that the daemon
 * trusts gets the daemon's block arena, a memfd, with the HELLO reply
 * (SCM_RIGHTS) and maps it.  Then:
 *   - a GET sent with KVT_FLAG_SHM may be answered, instead of with the
 *     value, with a lease: where the value lies in the arena.  The client
 *     copies it out and ends the lease with RELEASE.  Until then the daemon
 *     neither frees nor reuses those bytes.
 *   - a PUT may be done as PUT_ALLOC (the daemon hands out a slot in the
 *     arena) then PUT_COMMIT (the client wrote the value there; the slot
 *     becomes the stored block with no further copy).
 */
#ifndef KVT_SHM_H
#define KVT_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "kvt_frame.h"

/* HELLO feature bit: shared-memory data path. */
#define KVT_FEAT_SHM 0x1u

/*
 * Frame flag.  On a GET request: the client accepts a lease reply.  On a
 * GET reply: the body is a lease (below), not the value.
 */
#define KVT_FLAG_SHM 0x4000u
/* Frame flag on a RELEASE request: send no reply. */
#define KVT_FLAG_QUIET 0x2000u

/*
 * HELLO reply extension, after the 32 bytes of kvt_hello_reply_encode():
 * u64 arena_size (bytes of the memfd sent with this reply; 0 = no shared
 * memory for this connection), u64 threshold (values of at least this many
 * bytes are worth the shared path).
 */
#define KVT_HELLO_REPLY_SHM_SIZE (KVT_HELLO_REPLY_SIZE + 16)
struct kvt_shm_hello {
	uint64_t arena_size;
	uint64_t threshold;
};
void kvt_shm_hello_encode(uint8_t out[16], const struct kvt_shm_hello *h);
/*
 * Reads the extension from a whole HELLO reply body of len bytes.  A body
 * of only the base 32 bytes (an older daemon) yields zeros.  Returns 0 or
 * KVT_EINVAL (NULL arguments).
 */
int kvt_shm_hello_parse(const uint8_t *body, size_t len,
			struct kvt_shm_hello *h);

/*
 * Lease, the body of a GET reply with KVT_FLAG_SHM: u64 lease id, u64
 * offset of the value in the arena, u64 length.  The dtype is in the reply
 * flags as for any GET reply.
 */
#define KVT_SHM_LEASE_SIZE 24
struct kvt_shm_lease {
	uint64_t id;
	uint64_t offset;
	uint64_t len;
};
void kvt_shm_lease_encode(uint8_t out[KVT_SHM_LEASE_SIZE],
			  const struct kvt_shm_lease *l);
/*
 * Parses a lease and checks it lies inside an arena of arena_size bytes.
 * Returns 0 or KVT_EPROTO (wrong length, outside the arena).
 */
int kvt_shm_lease_parse(const uint8_t *body, size_t len, uint64_t arena_size,
			struct kvt_shm_lease *l);

/*
 * RELEASE request body: u32 count, u32 zero, count x u64 lease id; nothing
 * may follow.  Reply body: u32 the number of leases ended (unknown ids are
 * skipped, not errors: a lease may already have ended with its block).
 */
#define KVT_SHM_RELEASE_FIXED 8
#define KVT_SHM_RELEASE_MAX 1024
#define KVT_SHM_RELEASE_REPLY_SIZE 4
size_t kvt_shm_release_req_size(size_t n);
/* Returns 0, KVT_ERANGE (cap too small), KVT_ETOOBIG (n over the max). */
int kvt_shm_release_req_encode(uint8_t *out, size_t cap, const uint64_t *ids,
			       size_t n, size_t *written);
/*
 * Validates a RELEASE body; *ids points at the first id (read them with
 * kvt_shm_release_id).  Returns 0, KVT_EBADREQ (short, reserved bytes,
 * length mismatch), KVT_ETOOBIG (count over KVT_SHM_RELEASE_MAX).
 */
int kvt_shm_release_req_parse(const uint8_t *body, size_t len,
			      const uint8_t **ids, size_t *n);
uint64_t kvt_shm_release_id(const uint8_t *ids, size_t i);

/*
 * PUT_ALLOC request body: u64 value_len, then a PUT body prefix (kvt_frame.h:
 * fixed part, ns, key) with no value after it.  Reply body: u64 slot id,
 * u64 offset in the arena where the value_len value bytes go.
 */
#define KVT_SHM_ALLOC_FIXED 8
#define KVT_SHM_SLOT_SIZE 16
struct kvt_shm_slot {
	uint64_t id;
	uint64_t offset;
};
/*
 * Parses a PUT_ALLOC body: *value_len gets the announced size and *prefix /
 * *prefix_len the PUT prefix, which is validated as a PUT body with an
 * empty value (and value_len against lim).  Returns 0, KVT_EBADREQ,
 * KVT_ETOOBIG.
 */
int kvt_shm_alloc_req_parse(const uint8_t *body, size_t len,
			    const struct kvt_limits *lim, uint64_t *value_len,
			    const uint8_t **prefix, size_t *prefix_len);
void kvt_shm_alloc_req_encode_len(uint8_t out[KVT_SHM_ALLOC_FIXED],
				  uint64_t value_len);
void kvt_shm_slot_encode(uint8_t out[KVT_SHM_SLOT_SIZE],
			 const struct kvt_shm_slot *s);
/* Returns 0 or KVT_EPROTO (wrong length). */
int kvt_shm_slot_parse(const uint8_t *body, size_t len,
		       struct kvt_shm_slot *s);

/* PUT_COMMIT request body: u64 slot id.  Reply: as PUT (empty). */
#define KVT_SHM_COMMIT_SIZE 8
void kvt_shm_commit_req_encode(uint8_t out[KVT_SHM_COMMIT_SIZE], uint64_t id);
/* Returns 0 or KVT_EBADREQ (wrong length). */
int kvt_shm_commit_req_parse(const uint8_t *body, size_t len, uint64_t *id);

#endif /* KVT_SHM_H */
