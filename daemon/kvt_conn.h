/*
 * kvt_conn.h - one client connection of kvtierd: receive, decode,
 * backpressure, the reply queue and send, and the reply API that request
 * handlers answer through (the model is Redis's networking.c and its
 * addReply*).
 *
 * The server (kvt_server.h) accepts a socket and opens a connection on it;
 * from then on the connection reads frames, hands each complete one to the
 * request handler the server installed (struct kvt_conn_ops) and sends what
 * the handler answers.  The connection depends on no handler: handlers
 * include this header, and this module calls them only through the ops.
 *
 * Replies are queued in request order: a request reserves its reply slot
 * when it is decoded (kvt_reply_reserve) and fills it when the answer is
 * known (kvt_reply_finish: at once for L1, later for work done off the
 * loop), and the sender never passes an unfilled slot, so pipelined replies
 * always come back in order.  Each connection has at most one recv and one
 * send in flight on the loop (kvt_loop.h).
 *
 * Backpressure, three kinds, each of which stops reading from the client
 * until it clears: a PUT (or an MPUT_FROM) is held while the tiers are busy (kvt_tm_busy(),
 * resumed by kvt_conn_unpark()); a large body waits for room under
 * max-inflight, counted over all connections; and a client that does not
 * read its replies (KVT_OUT_HIGH_WATER) or has KVT_PENDING_MAX unfinished
 * ones is not read from until it catches up.
 *
 * Bodies and max-inflight.  A body larger than KVT_RBUF_SIZE is reserved
 * under max-inflight as it arrives, not when its header announces it: the
 * first KVT_BODY_STEP bytes (or the whole body, if smaller) before its
 * first byte is read, then twice what it holds each time it fills up.  So
 * a client that announces a 256 MiB body and sends nothing holds 4 MiB of
 * the budget, not 256 MiB, and a few stalled clients cannot starve the
 * others (issue #17).  The memory follows the reservation: a body is read
 * into malloc memory grown with it (realloc), except that a PUT body goes
 * straight into the shared arena when that has room, taking at most a
 * quarter of the arena for bodies in progress, so that stalled bodies
 * cannot crowd the arena either.  The oldest body in progress may always
 * grow, even past max-inflight: every body completes, and reservations
 * never deadlock; so bodies hold at most max-inflight plus one body.  A
 * body that stops arriving is the server's to end (body-timeout,
 * kvt_conn_rx_stall_ns()).
 *
 * Single-threaded: everything here runs on the event loop's thread.
 */
#ifndef KVT_CONN_H
#define KVT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "kvt_access.h"
#include "kvt_config.h"
#include "kvt_frame.h"
#include "kvt_hist.h"
#include "kvt_loop.h"
#include "kvt_tm.h"

/* Most iovecs gathered into one sendmsg. */
#define KVT_SEND_IOV 64
/* Read buffer per connection; bodies larger than this are read in place. */
#define KVT_RBUF_SIZE (64 * 1024)
/*
 * After a frame with a body of KVT_DIRECT_MIN bytes or more, the next recv
 * into rbuf takes at most a header and KVT_HEAD_READ bytes, so that a
 * following value of that size is received in place, not copied.
 */
#define KVT_DIRECT_MIN (16 * 1024)
#define KVT_HEAD_READ 1024
/*
 * A large body's first reservation under max-inflight, and the least it
 * grows by (see "Bodies and max-inflight" above).  4 MiB covers the
 * common K/V block sizes (2 MiB for a 16-token Llama-3-8B block) in one
 * step, so those are read with one allocation and no copy, while a
 * stalled client holds no more than this.
 */
#define KVT_BODY_STEP (4u << 20)
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

/*
 * Descriptors a connection may have received (SCM_RIGHTS) and not yet
 * used: a client passes one with each REGISTER, in the sendmsg() that
 * carries the frame's first byte, so at most one or two are ever waiting.
 * More, or a control message cut short (MSG_CTRUNC), break the protocol.
 */
#define KVT_CONN_FDS_MAX 4

/* Latency is kept per opcode; opcodes past this share the last slot. */
#define KVT_LAT_OPS KVT_OP_END_

/*
 * Every loop operation carries its owner and kind in its user_data: the
 * owner pointer (a connection, or NULL for the server's own operations)
 * with the kind in the low bits, which are always zero in an aligned
 * pointer.  A connection submits KVT_UD_RECV and KVT_UD_SEND; the server
 * numbers its own kinds from KVT_UD_SERVER and hands a connection's
 * completions to kvt_conn_complete().
 */
#define KVT_UD_MASK 7u
enum kvt_ud_kind {
	KVT_UD_RECV = 1,
	KVT_UD_SEND = 2,
	KVT_UD_SERVER = 3, /* the first kind free for the server */
};

static inline uint64_t kvt_ud(const void *owner, unsigned kind)
{
	return (uint64_t)(uintptr_t)owner | (uint64_t)kind;
}

struct kvt_conn;
struct kvt_reply; /* one reply slot, opaque: see kvt_reply_reserve() */
/* The handlers' state, opaque here (kvt_request.c, kvt_lease.h). */
struct kvt_pins;
struct kvt_leases;
struct kvt_lease_pool;
struct kvt_regions;
struct kvt_region_pool;

/*
 * What the connection calls above itself; installed by the server in
 * struct kvt_conn_ctx.  None may be NULL.
 */
struct kvt_conn_ops {
	/*
	 * Handles one decoded request frame.  body (body_len bytes, or NULL
	 * when empty) passes to the handler: block memory (kvt_block_alloc)
	 * for a PUT, whose body becomes the stored value, malloc'd otherwise.
	 * The handler answers through the reply API below, now or later.
	 */
	void (*request)(struct kvt_conn *c, const struct kvt_frame_header *h,
			uint8_t *body);
	/* Sets up the handlers' state for a new c; nonzero refuses c. */
	int (*open)(struct kvt_conn *c);
	/*
	 * Releases what the handlers keep for c (pins, leases): c is going
	 * away.  Called once, also after a failed open, so it must accept
	 * state that open never set.
	 */
	void (*close)(struct kvt_conn *c);
	/*
	 * Do the handlers keep something for c that closing it would end
	 * (pins)?  Such a connection is never idle (kvt_conn_idle).
	 */
	bool (*holds)(const struct kvt_conn *c);
};

/*
 * Counters of connections and their requests (the tiers keep their own,
 * the shared-memory pool its own: kvt_lease.h).
 */
struct kvt_conn_stats {
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
	uint64_t body_timeouts;	     /* a frame stopped arriving part-way */
	uint64_t connections_revoked; /* peer lost access on a reload */
};

/*
 * What every connection of one server shares: the settings, the tiers and
 * the counters that handlers use, and the backpressure state that spans
 * connections.  The server owns it and fills in everything down to st
 * before it opens a connection; handlers read it as c->ctx.
 */
struct kvt_conn_ctx {
	struct kvt_loop *loop;
	struct kvt_config *cfg;
	struct kvt_tm *tm;
	struct kvt_limits lim;
	struct kvt_access acc; /* allow-lists and namespace owners */
	/* Shared memory (kvt_lease.h); this module never looks inside. */
	struct kvt_lease_pool *shm;
	/* Registered client memory (kvt_region.h); nor inside this. */
	struct kvt_region_pool *reg;
	const struct kvt_conn_ops *ops;
	uint64_t start_ns; /* when the server started, for uptime */
	bool stopping;	   /* a graceful stop: read no new requests */
	struct kvt_conn_stats st;
	struct kvt_hist lat[KVT_LAT_OPS]; /* decode to reply, per opcode */

	/* Kept by this module. */
	struct kvt_conn *conns; /* live connections, newest first */
	unsigned nconns;
	uint64_t next_conn_id;
	struct kvt_conn *parked;      /* waiting for kvt_tm_busy() to clear */
	/* Waiting for room under max_inflight, in the order they began. */
	struct kvt_conn *mem_waiters, *mem_waiters_tail;
	uint64_t inflight_bytes;      /* reserved for bodies being received */
	/* Bodies over KVT_RBUF_SIZE being received, oldest first. */
	struct kvt_conn *bodies, *bodies_tail;
	uint64_t body_arena_bytes; /* arena memory those bodies hold */
};

/*
 * One connection.  Others only read the fields down to out_bytes: handlers
 * use ctx, id, uid, gid and revoked and keep their own state behind their
 * pointer (pins, leases); the server walks the list (next), reads closing,
 * last_active_ns and out_bytes for its timer, uses fd to read the peer's
 * groups and sets revoked on a reload.  The rest is kvt_conn.c's.
 */
struct kvt_conn {
	struct kvt_conn_ctx *ctx;
	uint64_t id;
	uid_t uid; /* the peer's credentials, from SO_PEERCRED */
	gid_t gid;
	/*
	 * The peer is no longer in the allow-lists (changed by a reload):
	 * its next request is refused and the connection ended.
	 */
	bool revoked;
	struct kvt_pins *pins;	   /* kvt_request.c's */
	struct kvt_leases *leases; /* kvt_lease.c's */
	struct kvt_regions *regions; /* kvt_region.c's */
	struct kvt_conn *prev, *next; /* ctx's list of live connections */
	bool closing;		 /* no more reading; free once drained */
	uint64_t last_active_ns; /* last byte received or sent */
	size_t out_bytes;	 /* bytes queued in replies not yet sent */
	int fd;

	/* Receive and decode. */
	struct msghdr rmsg; /* of the armed recvmsg */
	struct iovec riov;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(KVT_CONN_FDS_MAX * sizeof(int))];
	} rcmsg;
	/* Descriptors received, oldest first (kvt_conn_take_fd). */
	int fds[KVT_CONN_FDS_MAX];
	unsigned nfds;
	unsigned inflight; /* loop operations and unfinished replies */
	unsigned pending;  /* unfinished replies (KVT_PENDING_MAX) */
	bool recv_armed;
	bool recv_direct; /* the armed recv writes into body, not rbuf */
	bool last_big;	  /* the last body had KVT_DIRECT_MIN bytes or more */
	bool close_after; /* close once the reply queue is sent */
	uint64_t recv_armed_ns; /* when the armed recv was started */
	struct kvt_decoder dec;
	uint8_t *rbuf;
	size_t rlen, roff;
	size_t hdr_have; /* bytes of a frame header received, while partial */
	/*
	 * The body of the frame being received (body_len > 0 from its header
	 * until it is whole).  This module fills it and hands it to the
	 * decoder only when whole, so that it can grow as it arrives.
	 */
	uint8_t *body;	  /* NULL until its first reservation */
	size_t body_len;  /* from the header */
	size_t body_have; /* bytes received */
	size_t body_cap;  /* bytes it may hold now (reserved, allocated) */
	bool body_grows;  /* malloc'd at body_cap bytes, realloc'd to grow */
	bool body_arena;  /* in the arena, counted in body_arena_bytes */
	bool body_counted; /* over KVT_RBUF_SIZE: reserved, in ctx->bodies */
	size_t body_reserved; /* bytes of body counted in inflight_bytes */
	struct kvt_conn *body_prev, *body_next; /* ctx->bodies */

	/* Backpressure. */
	bool parked;	  /* holding a PUT until the tiers catch up */
	bool mem_wait;	  /* waiting for room under max_inflight */
	bool mem_counted; /* this body's wait is counted in mem_waits */
	struct kvt_conn *mem_next;
	struct kvt_frame_header held; /* the held PUT */
	uint8_t *held_body;
	struct kvt_conn *park_next;

	/* Reply queue and send. */
	struct kvt_reply *out_head, *out_tail;
	bool send_armed;
	uint64_t send_stall_ns; /* replies waiting since, with no progress */
	struct iovec iov[KVT_SEND_IOV];
	struct msghdr msg;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} cmsg; /* SCM_RIGHTS for a reply that passes a descriptor */
};

/* ---- the connection, as the server drives it -------------------------- */

/*
 * Opens a connection on the accepted socket fd of a peer with credentials
 * uid and gid, runs ctx->ops->open, adds it to ctx's list and starts
 * reading.  Returns 0 with *out set, or -ENOMEM (or what ops->open
 * returned) with nothing kept and fd still open: the caller closes it.
 */
int kvt_conn_open(struct kvt_conn **out, struct kvt_conn_ctx *ctx, int fd,
		  uid_t uid, gid_t gid);

/*
 * Stops reading from c and frees it once its operations in flight and its
 * unfinished replies complete; replies not yet sent are dropped.
 */
void kvt_conn_close(struct kvt_conn *c);

/*
 * Graceful stop: c reads no new requests, sends what it has queued and
 * then closes.
 */
void kvt_conn_stop(struct kvt_conn *c);

/* Handles the completion of c's loop operation of kind KVT_UD_RECV/SEND. */
void kvt_conn_complete(struct kvt_conn *c, unsigned kind, int res);

/* Resumes held PUTs while the tiers are not busy (after kvt_tm_dispatch). */
void kvt_conn_unpark(struct kvt_conn_ctx *ctx);

/* ctx->cfg->max_inflight changed: bodies waiting for memory try again. */
void kvt_conn_mem_changed(struct kvt_conn_ctx *ctx);

/*
 * Idle: not closing, nothing being received, queued, held or waited for,
 * no operation in flight but its recv, and nothing kept by the handlers
 * (ops->holds).  The server closes idle connections that have been so for
 * long (last_active_ns).
 */
bool kvt_conn_idle(const struct kvt_conn *c);

/*
 * How long c's replies have waited for the client to read them without
 * progress, as seen at now: 0 while no send is waiting.  A wait starts
 * being measured at the first call that sees it, so call this at a steady
 * pace (the server's timer).
 */
uint64_t kvt_conn_send_stall_ns(struct kvt_conn *c, uint64_t now);

/*
 * How long c has waited, as seen at now, for the rest of a frame it began
 * to send: the time since its last bytes arrived, or since it was read
 * from again after the daemon held it back (backpressure, max-inflight),
 * which does not count.  0 while c is between frames or not being read.
 * *have and *want get the bytes received and expected of the part being
 * received, the header (*header true, KVT_HDR_SIZE bytes) or, once that
 * is whole, the body.  The server closes c when this passes body-timeout.
 */
uint64_t kvt_conn_rx_stall_ns(const struct kvt_conn *c, uint64_t now,
			      bool *header, size_t *have, size_t *want);

/*
 * Ends c after the replies queued so far: reads no more requests (those
 * already read but not yet decoded are dropped) and closes once they are
 * sent.  For a handler that refuses a client for good.
 */
void kvt_conn_end(struct kvt_conn *c);

/* ---- the reply API, for request handlers ------------------------------ */

/* Reserves the next reply slot on c, in request order. NULL if out of memory. */
struct kvt_reply *kvt_reply_reserve(struct kvt_conn *c, uint64_t request_id,
				    uint8_t opcode);
/*
 * Completes a reserved reply; the body (if any) is given as one of: a
 * malloc'd buffer whose ownership passes (owned), or a value reference whose
 * ownership passes (ref).  status is 0 or a KVT_E* code.  r is gone after
 * this call.
 */
void kvt_reply_finish(struct kvt_conn *c, struct kvt_reply *r, int status,
		      uint16_t flags, uint8_t *owned, size_t len,
		      struct kvt_ref *ref);
/* Completes a reserved reply with an error status and a printf message. */
void kvt_reply_error(struct kvt_conn *c, struct kvt_reply *r, int status,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/*
 * Makes descriptor fd (which must stay open) travel with r, as SCM_RIGHTS
 * on the sendmsg that starts r.  Only possible while r is the first reply
 * still to send: returns false, and changes nothing, otherwise.
 */
bool kvt_reply_pass_fd(struct kvt_conn *c, struct kvt_reply *r, int fd);

/*
 * The oldest descriptor c's peer passed (SCM_RIGHTS) and no request took
 * yet, or -1.  The caller owns it from now on.  Descriptors are received
 * with the bytes they travelled with, so the one a REGISTER frame carried
 * is queued by the time the frame is handed to its handler.
 */
int kvt_conn_take_fd(struct kvt_conn *c);

/*
 * Checks c may use namespace ns (ctx->acc); if not, answers r with
 * KVT_EDENIED, counts and logs it and returns false.
 */
bool kvt_conn_ns_allowed(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *ns, size_t ns_len);

#endif /* KVT_CONN_H */
