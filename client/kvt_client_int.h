/*
 * kvt_client_int.h - the inside of libkvtier, shared by its files.  Not
 * installed; callers see only kvtier.h.
 *
 * The library is carved like hiredis (net.c, read.c, hiredis.c, async.c)
 * into a chain of files, each using only those below it:
 *
 *   kvt_client_batch.c  pipelined batches: mput, mget; key lists: match,
 *                       prefetch, pin, unpin
 *   kvt_client.c        connecting (HELLO), the single-key API (ping, put,
 *                       get, del, exists), drop, hot, stats
 *   kvt_client_shm.c    the request path and shared memory: every request
 *                       goes out with the RELEASE of the leases ended
 *                       before it; values read from leases; PUT through a
 *                       slot; the arena mapped at HELLO (kvt_shmmap.h)
 *   kvt_client_io.c     socket I/O and frames: connect, send, receive and
 *                       decode replies, the busy-poll wait; the handle's
 *                       error message; the guard every public call runs
 *                       in (a child after fork(), a second thread: refused;
 *                       kvt_forkid.h tells processes apart)
 *
 * Where the next pieces go: registered client memory (REGISTER passes an
 * fd, which kvt_client_io.c would send beside the one it receives; segment
 * batches read a value into, or send it from, ranges of that memory) is a
 * file of its own above kvt_client_batch.c, sharing its pipelined window
 * (run_batch, exported then); an asynchronous job API (submit now, poll
 * for completions) goes above that, on the two halves of the request path
 * that batches already use apart: kvt_ci_send_request() and
 * kvt_ci_read_reply().
 *
 * Internal functions are kvt_ci_*; they are not exported by libkvtier.so
 * (libkvtier.map).  Like the public ones, those that can fail return 0
 * (or a documented positive value) or a negative KVT_E* / -errno and, but
 * for the raw sends, leave a message in c->errmsg.
 */
#ifndef KVT_CLIENT_INT_H
#define KVT_CLIENT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "kvt_frame.h"
#include "kvt_shm.h"
#include "kvt_spin.h"
#include "kvtier.h"

/*
 * The daemon's arena is shared memory that threads of one process reach
 * through one mapping (kvt_shmmap): a thread writes a PUT slot and commits
 * it, and later another thread reads the same bytes through a lease; or a
 * thread ends a lease and the daemon hands the same memory to another
 * thread as a slot.  Those accesses are ordered, but by the daemon, through
 * the sockets, which ThreadSanitizer cannot see.  Under TSan the library
 * tells it: a thread releases the mapping after writing a slot or reading a
 * lease (before the COMMIT or RELEASE that lets the daemon reuse it) and
 * acquires it after the daemon handed out a slot or a lease (before
 * touching it).  Nothing in other builds.
 */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define KVT_CI_ARENA_ACQUIRE(map) __tsan_acquire(map)
#define KVT_CI_ARENA_RELEASE(map) __tsan_release(map)
#else
#define KVT_CI_ARENA_ACQUIRE(map) ((void)(map))
#define KVT_CI_ARENA_RELEASE(map) ((void)(map))
#endif

/*
 * Room for our own words around a daemon message of up to KVT_ERRMSG_MAX
 * bytes, or around a socket path.
 */
#define KVT_CLIENT_MSG_CAP (KVT_ERRMSG_MAX + 256)
/* Receive buffer; bodies that do not fit are read in place. */
#define KVT_CLIENT_RBUF 4096
/* Wire field width of key_len. */
#define KVT_KEY_FIELD_MAX 0xffffu
/* Wire field width of body_len. */
#define KVT_BODY_FIELD_MAX 0xffffffffu

struct kvt_client {
	/* ---- who may use it (kvt_client_io.c: kvt_ci_enter) ---- */
	/* The process that connected it (kvt_forkid.h), and its pid. */
	uint64_t forkid;
	pid_t pid;
	/* Set while a call runs: a second thread's call fails at once. */
	atomic_bool busy;

	/* ---- the socket (kvt_client_io.c) ---- */
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
	bool want_fd;  /* reading the HELLO reply: accept SCM_RIGHTS */
	int recv_fd;   /* the fd it carried, or -1 */
	/* Polling for replies before sleeping (KVTIER_SPIN_US). */
	struct kvt_spin spin;

	/* ---- shared memory (kvt_client_shm.c) ---- */
	/*
	 * The daemon's block arena (PROTOCOL.md), mapped at HELLO if the
	 * daemon offered it, else NULL.  Values of at least shm_threshold
	 * bytes then move by memcpy instead of the socket.
	 */
	uint8_t *shm;
	uint64_t shm_size;
	uint64_t shm_threshold;
	struct kvt_shmmap *map; /* the process's mapping of it (shm = base) */
	/* Leases whose bytes we copied, to end with the next RELEASE. */
	uint64_t rel[KVT_SHM_RELEASE_MAX];
	size_t nrel;
	/* A quiet RELEASE frame: header and body, built from rel[]. */
	uint8_t relbuf[KVT_HDR_SIZE + KVT_SHM_RELEASE_FIXED +
		       8 * KVT_SHM_RELEASE_MAX];
};

/* ---- kvt_client_io.c: the guard around every call ------------------ */

/*
 * Every public call on a handle runs between kvt_ci_enter() and
 * kvt_ci_leave().  kvt_ci_enter() returns 0 (the caller now has c to
 * itself), KVT_EINVAL for a NULL c, KVT_EFORKED in a process other than the
 * one that connected c (a child after fork(): the socket is the parent's,
 * so nothing may be sent or read; c's message says what to do), or
 * KVT_ECONCURRENT while another thread is in a call on c (c is left
 * alone, its message included: they belong to that call).  Costs a load
 * and an atomic exchange, a few nanoseconds.
 */
int kvt_ci_enter(kvt_client *c);
void kvt_ci_leave(kvt_client *c);

/* ---- kvt_client_io.c: messages -------------------------------------- */

/* Sets c's message; returns rc, so callers can `return kvt_ci_err(...)`. */
__attribute__((format(printf, 3, 4)))
int kvt_ci_err(kvt_client *c, int rc, const char *fmt, ...);

/*
 * Marks c broken after a connection-level failure, with a message; returns
 * rc so callers can write `return kvt_ci_fail(c, rc, ...)`.
 */
__attribute__((format(printf, 3, 4)))
int kvt_ci_fail(kvt_client *c, int rc, const char *fmt, ...);

/* Returns KVT_ECLOSED if c cannot carry requests any more, else 0. */
int kvt_ci_usable(kvt_client *c);

/*
 * A read or write on the socket failed while doing `when`: marks c broken
 * and returns KVT_ECLOSED for a peer that is gone (EOF, ECONNRESET,
 * EPIPE), else rc.  The message keeps the detail.
 */
int kvt_ci_lost(kvt_client *c, int rc, const char *when);

/* ---- kvt_client_io.c: the socket ------------------------------------ */

/*
 * Connects c to the daemon's socket at path and sets up c's socket state
 * (request ids, the busy-poll window of KVTIER_SPIN_US).  Returns 0 or
 * -errno (-ENAMETOOLONG for a path that does not fit a sockaddr_un); on
 * failure c->fd is negative.
 */
int kvt_ci_connect(kvt_client *c, const char *path);

/*
 * Sends every byte described by iov[0..iovcnt), advancing the iovecs past
 * partial sends; never raises SIGPIPE.  Returns 0 or -errno.
 */
int kvt_ci_send_all(int fd, struct iovec *iov, int iovcnt);

/* A request id for the next frame; never 0 (the daemon's "no request"). */
uint64_t kvt_ci_next_id(kvt_client *c);

/* ---- kvt_client_io.c: frames ---------------------------------------- */

/*
 * Sends one request frame without waiting for its reply: the frame pre
 * (already encoded, NULL or empty for none) in the same sendmsg, then the
 * header *h (opcode and flags set by the caller; request id and body_len
 * set here) with the body prefix from c->sbuf (prefix_len bytes after the
 * header's room), then the value val[0..val_len).  h->request_id is the
 * id even when the send fails.  Returns 0 or -errno (see
 * kvt_ci_send_failed).
 */
int kvt_ci_send_frame(kvt_client *c, const struct iovec *pre,
		      struct kvt_frame_header *h, size_t prefix_len,
		      const void *val, size_t val_len);

/*
 * Reads one reply header and checks that it answers request id/op.  An
 * error reply (status != 0) is consumed whole: its body is the daemon's
 * message, which becomes c's message, and -(status) is returned.  On 0,
 * *h is the header and the body (h->body_len bytes) is still to be read.
 */
int kvt_ci_read_reply(kvt_client *c, uint8_t op, uint64_t id,
		      struct kvt_frame_header *h);

/*
 * A send of request id/op failed with rc: reads the reply the daemon may
 * have sent before hanging up, which says why, and fails the connection.
 * Returns the daemon's code, or what kvt_ci_lost() makes of rc.
 */
int kvt_ci_send_failed(kvt_client *c, int rc, uint8_t op, uint64_t id,
		       struct kvt_frame_header *rh);

/* ---- kvt_client_io.c: reply bodies ---------------------------------- */

/* Reads a reply body of len bytes into dst, failing the connection on error. */
int kvt_ci_read_body(kvt_client *c, void *dst, size_t len);

/* Reads the rest of a reply body (len bytes) and throws it away. */
int kvt_ci_discard_body(kvt_client *c, size_t len);

/*
 * Reads the whole reply body into a new malloc'd buffer with `extra` spare
 * bytes after it (room for a NUL); never NULL on success, even for an
 * empty body.  On failure the body has been consumed or the connection is
 * broken.
 */
int kvt_ci_read_body_alloc(kvt_client *c, const struct kvt_frame_header *rh,
			   size_t extra, const char *what, uint8_t **out);

/*
 * Reads a reply body whose first size bytes are fields we know into buf;
 * later versions may append fields, which are skipped.  A shorter body
 * breaks the connection (KVT_EPROTO).
 */
int kvt_ci_read_fixed_reply(kvt_client *c, const struct kvt_frame_header *rh,
			    uint8_t *buf, size_t size, const char *what);

/* ---- kvt_client_shm.c: the request path ----------------------------- */

/*
 * Sends one request frame (header and prefix from c->sbuf, then the value)
 * without waiting for its reply; *id gets its request id.  The quiet
 * RELEASE of the leases ended since the last request goes out in the same
 * sendmsg, and a GET asks for a lease when the arena is mapped.  Returns 0
 * or -errno; on failure call kvt_ci_send_failed().
 */
int kvt_ci_send_request(kvt_client *c, uint8_t op, size_t prefix_len,
			const void *val, size_t val_len, uint64_t *id);

/*
 * One round trip: kvt_ci_send_request(), then the reply header into *rh.
 * Returns like kvt_ci_read_reply(); KVT_ETOOBIG, with nothing sent, for a
 * body that does not fit the wire's u32 length.
 */
int kvt_ci_request(kvt_client *c, uint8_t op, size_t prefix_len,
		   const void *val, size_t val_len,
		   struct kvt_frame_header *rh);

/* ---- kvt_client_shm.c: shared memory -------------------------------- */

/* Whether this process asked not to use shared memory (KVTIER_SHM=0). */
bool kvt_ci_shm_wanted(void);

/*
 * Maps the arena fd the HELLO reply carried (once per process, shared by
 * its connections: kvt_shmmap.h).  Any failure just leaves the socket path.
 */
void kvt_ci_shm_map(kvt_client *c, const struct kvt_shm_hello *sh);

/* Where a GET reply's value is: its body, or a lease on arena bytes. */
struct kvt_ci_value {
	const uint8_t *shm; /* NULL: the reply body */
	uint64_t lease;
	size_t len;
};

/* Reads what a successful GET reply says about its value. */
int kvt_ci_value_open(kvt_client *c, const struct kvt_frame_header *rh,
		      struct kvt_ci_value *v);

/* Copies the value into dst (room for v->len bytes) and ends its lease. */
int kvt_ci_value_copy(kvt_client *c, const struct kvt_ci_value *v,
		      void *dst);

/* Drops a value that will not be read (it did not fit). */
int kvt_ci_value_skip(kvt_client *c, const struct kvt_ci_value *v);

/*
 * PUT of r through a slot of the arena: PUT_ALLOC, copy, PUT_COMMIT.
 * Returns 1 when the slot path does not apply (no arena, a value too small
 * to gain from it, or no room in the daemon), so the caller sends the value
 * over the socket instead; else 0 or an error.
 */
int kvt_ci_put_shm(kvt_client *c, const struct kvt_put_req *r);

/* ---- kvt_client.c ------------------------------------------------- */

/* kvt_put() for a caller already inside the guard (kvt_mput()). */
int kvt_ci_put(kvt_client *c, const char *ns, const void *key,
	       size_t key_len, const void *val, size_t val_len,
	       const struct kvt_put_opts *opts);

/* ---- kvt_client.c: argument checks ---------------------------------- */

/* A namespace of ns_len bytes fits the protocol and the daemon's limit. */
int kvt_ci_check_ns(kvt_client *c, size_t ns_len);

/*
 * Validates (ns, key) against the wire format and the daemon's limits and
 * fills *k.  Nothing is sent for a request that fails here, so the
 * connection stays usable.
 */
int kvt_ci_check_key(kvt_client *c, const char *ns, const void *key,
		     size_t key_len, struct kvt_keyref *k);

#endif /* KVT_CLIENT_INT_H */
