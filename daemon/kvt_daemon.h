/*
 * kvt_daemon.h - kvtierd internals shared by the socket loop (kvt_server.c),
 * request dispatch (kvt_request.c) and stats (kvt_stats.c).
 *
 * One thread runs the event loop (io_uring, or epoll where io_uring is
 * refused: kvt_loop.h).  Each connection has at most one
 * recv and one send in flight.  Replies are queued in request order: a
 * request reserves its reply slot when it is decoded and fills it when the
 * answer is known (at once for L1, later for work done off the loop), and
 * the sender never passes an unfilled slot, so pipelined replies always
 * come back in order.
 */
#ifndef KVT_DAEMON_H
#define KVT_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "kvt_access.h"
#include "kvt_config.h"
#include "kvt_frame.h"
#include "kvt_hist.h"
#include "kvt_loop.h"
#include "kvt_shm.h"
#include "kvt_tm.h"

/* Most iovecs gathered into one sendmsg. */
#define KVT_SEND_IOV 64
/* Read buffer per connection; bodies larger than this are read in place. */
#define KVT_RBUF_SIZE (64 * 1024)
/*
 * Stop reading requests from a client while this many reply bytes wait for
 * it to read them: a client that pipelines GETs but never reads cannot make
 * the daemon pin unbounded memory.
 */
#define KVT_OUT_HIGH_WATER (64u << 20)
/*
 * Stop decoding a client's requests while this many of its replies are
 * unfinished (waiting for L2 decompression or an L3 read).  Their bytes
 * only count against KVT_OUT_HIGH_WATER once finished, so without this
 * cap one read buffer of pipelined GETs (about a thousand) could pin that
 * many blocks at once.  The library never has more than 32 requests in
 * flight on a connection, so it is never slowed by this.
 */
#define KVT_PENDING_MAX 32

struct kvt_server;

/* One reply waiting to be sent.  Holds a reference on a value it sends. */
struct kvt_reply {
	struct kvt_reply *next;
	bool ready;
	uint8_t opcode;
	uint64_t request_id;
	uint64_t t0_ns; /* when the request was decoded, for latency */
	uint8_t hdr[KVT_HDR_SIZE]; /* encoded when the reply is finished */
	const uint8_t *data; /* body: into owned or ref */
	size_t len;
	uint8_t *owned; /* malloc'd body, freed with the reply */
	struct kvt_ref *ref; /* value reference, released with the reply */
	size_t sent;	     /* bytes of hdr + body already sent */
	/* Attach the arena's fd (SCM_RIGHTS) to the send that starts this
	 * reply: a HELLO that granted shared memory (kvt_lease.c). */
	bool pass_arena;
};

/* Most keys one connection may hold pinned. */
#define KVT_PINS_PER_CONN 4096

/* A key this connection pinned; unpinned when the connection closes. */
struct kvt_conn_pin {
	struct kvt_conn_pin *next;
	size_t ns_len, key_len;
	uint8_t name[];
};

struct kvt_conn {
	struct kvt_server *srv;
	struct kvt_conn_pin *pins;
	unsigned npins;
	int fd;
	uint64_t id;
	uid_t uid; /* the peer's credentials, from SO_PEERCRED */
	gid_t gid;
	unsigned inflight; /* loop operations and unfinished replies */
	unsigned pending;  /* unfinished replies (KVT_PENDING_MAX) */
	bool recv_armed;
	bool recv_direct; /* the armed recv writes into body, not rbuf */
	bool send_armed;
	bool closing;	  /* no more reading; free once drained */
	bool parked;	  /* holding a PUT until the tiers catch up */
	bool mem_wait;	  /* waiting for room under max_inflight */
	bool mem_counted; /* this body's wait is counted in mem_waits */
	size_t body_reserved; /* bytes of c->body counted in inflight */
	uint64_t last_active_ns; /* last byte received or sent */
	uint64_t send_stall_ns;	 /* replies waiting since, with no progress */
	struct kvt_conn *mem_next;
	struct kvt_frame_header held; /* the held PUT */
	uint8_t *held_body;
	struct kvt_conn *park_next;
	bool close_after; /* close once the reply queue is sent */
	struct kvt_conn *prev, *next; /* server's list of live connections */

	struct kvt_decoder dec;
	uint8_t *rbuf;
	size_t rlen, roff;
	uint8_t *body; /* body of the frame being received */

	struct kvt_reply *out_head, *out_tail;
	size_t out_bytes; /* bytes queued in replies not yet sent */
	struct iovec iov[KVT_SEND_IOV];
	struct msghdr msg;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cmsg; /* SCM_RIGHTS for a reply with pass_arena */

	/* Shared memory (kvt_lease.c): granted at HELLO to trusted peers. */
	bool shm;
	struct kvt_lease *leases; /* GET leases and PUT slots it holds */
	unsigned nleases;
	uint64_t lease_bytes; /* bytes they keep from being freed */
	uint64_t next_lease;
};

/* Counters kept by the daemon itself (the tiers keep their own). */
struct kvt_server_stats {
	uint64_t connections_total;
	uint64_t connections_refused; /* over max_connections */
	uint64_t protocol_errors;
	uint64_t requests;
	uint64_t bytes_in, bytes_out;
	uint64_t puts_held; /* PUTs held back while the tiers caught up */
	uint64_t connections_denied; /* peer not in the allow-lists */
	uint64_t requests_denied;    /* namespace owned by another uid */
	uint64_t idle_closed;	     /* idle longer than idle_timeout */
	uint64_t slow_closed;	     /* did not read replies for send_timeout */
	uint64_t idle_evicted;	     /* closed to admit a new client */
	uint64_t mem_waits;	     /* bodies that waited for max_inflight */
	/* Shared memory (kvt_lease.c). */
	uint64_t shm_granted;	/* connections given the arena */
	uint64_t shm_refused;	/* asked for it, peer not trusted */
	uint64_t shm_gets;	/* GETs answered with a lease */
	uint64_t shm_get_bytes;
	uint64_t shm_puts;	/* PUTs committed from a slot */
	uint64_t shm_put_bytes;
	uint64_t shm_fallbacks; /* asked for a lease, sent the bytes */
	uint64_t shm_full;	/* PUT_ALLOC refused: arena or lease cap */
};

/* Latency is kept per opcode; opcodes past this share the last slot. */
#define KVT_LAT_OPS KVT_OP_END_

struct kvt_server {
	struct kvt_loop *loop; /* owned */
	struct kvt_config *cfg;
	/* The command line, re-read with the config file on SIGHUP. */
	int argc;
	char **argv;
	bool activated; /* the socket came from systemd (LISTEN_FDS) */
	struct kvt_access acc;
	/* Peers besides our own uid and root given shared memory. */
	struct kvt_access shm_acc;
	struct kvt_arena *arena; /* kvt_mem_arena(), NULL if none */
	uint64_t leases, lease_bytes; /* over all connections */
	struct kvt_hist lat[KVT_LAT_OPS];
	struct kvt_tm *tm;
	struct kvt_limits lim;
	int listen_fd;
	int signal_fd;
	unsigned nconns;
	uint64_t next_conn_id;
	struct kvt_conn *conns;
	struct kvt_conn *parked; /* waiting for kvt_tm_busy() to clear */
	struct kvt_conn *mem_waiters; /* waiting for room under max_inflight */
	uint64_t inflight_bytes; /* request bodies being received */
	bool stopping;
	uint64_t start_ns;
	struct kvt_server_stats st;
};

/* ---- kvt_server.c: loop, connections, reply queue ---------------------- */

/*
 * Opens the event loop for the io-backend setting (KVT_IO_*): auto tries
 * io_uring and falls back to epoll with one warning in the log; io_uring
 * fails with a clear log line when the kernel refuses it; epoll always uses
 * the portable path.  Returns 0 or -errno.
 */
int kvt_server_loop_open(struct kvt_loop **out, int backend);
/*
 * Creates the server on loop (from kvt_server_loop_open), which it owns
 * from now on, failure included.
 */
int kvt_server_open(struct kvt_server **out, struct kvt_config *cfg,
		    struct kvt_loop *loop, struct kvt_tm *tm, int argc,
		    char **argv);
/* Serves until SIGTERM or SIGINT.  Returns 0 or a negative error. */
int kvt_server_run(struct kvt_server *s);
void kvt_server_close(struct kvt_server *s);

/* Reserves the next reply slot on c, in request order. NULL if out of memory. */
struct kvt_reply *kvt_reply_reserve(struct kvt_conn *c, uint64_t request_id,
				    uint8_t opcode);
/*
 * Completes a reserved reply; the body (if any) is given as one of: a
 * malloc'd buffer whose ownership passes (owned), or a value reference whose
 * ownership passes (ref).  status is 0 or a KVT_E* code.
 */
void kvt_reply_finish(struct kvt_conn *c, struct kvt_reply *r, int status,
		      uint16_t flags, uint8_t *owned, size_t len,
		      struct kvt_ref *ref);
/* Completes a reserved reply with an error status and a printf message. */
void kvt_reply_error(struct kvt_conn *c, struct kvt_reply *r, int status,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Checks c may use namespace ns; if not, answers r with KVT_EDENIED, counts
 * it and returns false.
 */
bool kvt_conn_ns_allowed(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *ns, size_t ns_len);

/* ---- kvt_request.c: dispatch -------------------------------------------- */

/* Releases every pin c holds (it is going away). */
void kvt_conn_unpin_all(struct kvt_conn *c);

/*
 * Handles one decoded request frame.  body (malloc'd, body_len bytes, or
 * NULL when empty) passes to the handler.
 */
void kvt_request_handle(struct kvt_conn *c, const struct kvt_frame_header *h,
			uint8_t *body);

/* ---- kvt_lease.c: shared memory, leases and PUT slots ------------------ */

/* Most leases plus slots one connection may hold at once. */
#define KVT_LEASES_PER_CONN 4096

/*
 * Decides whether c, which asked for KVT_FEAT_SHM in the HELLO answered by
 * r, gets the arena: shared memory is on, the peer is trusted (our uid,
 * root, or shm-allow-uid) and r is the first reply still to send, so the
 * fd travels with it.  On yes, marks r to carry the fd, fills *sh and
 * returns true; else *sh is zero.
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
 * PUT_COMMIT: takes c's slot id out of its list.  Returns 0 with *mem (the
 * value's arena memory, ownership passes), *value_len and *prefix (a
 * malloc'd copy of the PUT prefix, *prefix_len bytes, the caller frees);
 * or KVT_ENOTFOUND.
 */
int kvt_lease_take_slot(struct kvt_conn *c, uint64_t id, void **mem,
			size_t *value_len, uint8_t **prefix,
			size_t *prefix_len);

/* Ends every lease and frees every slot of c (it is going away). */
void kvt_lease_drop_all(struct kvt_conn *c);

/* ---- kvt_stats.c -------------------------------------------------------- */

/* Returns the stats document as malloc'd JSON (NUL-terminated), or NULL. */
char *kvt_stats_json(struct kvt_server *s, size_t *len);

#endif /* KVT_DAEMON_H */
