/*
 * kvt_region.h - registered client memory, daemon side (PROTOCOL.md,
 * "Registered memory"): REGISTER and UNREGISTER, and the batches MGET_TO
 * and MPUT_FROM that move values into and out of that memory.
 *
 * A client passes a descriptor of a memory-backed file (a memfd, a file in
 * /dev/shm or on hugetlbfs) with a REGISTER; the daemon maps the range it
 * names MAP_SHARED and gives it a region id on that connection.  Any
 * client the access rules admit may register, whatever its uid: it only
 * exposes its own memory, and never sees the daemon's arena or other
 * clients' blocks, unlike shared memory (kvt_lease.h), which is for
 * trusted peers.  Only memory-backed files are taken: a page fault on a
 * file the client serves itself (FUSE, a network filesystem) could block a
 * worker thread for as long as the client likes.
 *
 * MGET_TO and MPUT_FROM name, per key, segments of registered regions; the
 * handler checks every segment against its region (known, in bounds, not
 * broken, writable for MGET_TO) before anything is read or written, then
 * hands the batch to the tier manager (kvt_tm_get_to / kvt_tm_put_from),
 * whose workers move the bytes, and answers with a result per key.
 *
 * Lifetime.  A region is counted: the connection's table holds it, and so
 * does every request using it, so an UNREGISTER (or the connection's end)
 * while a transfer runs takes the id away at once and unmaps the memory
 * when the last transfer is done.  A transfer that faulted on a region
 * (the client truncated its file) marks it broken: later requests naming
 * it fail with KVT_EFAULT until the client unregisters it.
 *
 * Limits per connection: reg-max regions and reg-max-bytes bytes mapped.
 *
 * State: one pool per server (struct kvt_region_pool, c->ctx->reg) with
 * the counters, and per connection the table (c->regions, private here),
 * set up by kvt_region_open() and ended by kvt_region_close().
 * Single-threaded: the loop thread only.
 */
#ifndef KVT_REGION_H
#define KVT_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvt_conn.h"

/* Counters of registered memory, over all connections. */
struct kvt_region_stats {
	uint64_t registered;   /* REGISTERs that mapped a region */
	uint64_t refused;      /* REGISTERs refused (limits, bad fd) */
	uint64_t unregistered; /* by UNREGISTER or the connection's end */
	uint64_t copies_in;    /* values written into regions (MGET_TO) */
	uint64_t bytes_in;
	uint64_t copies_out;   /* values read out of regions (MPUT_FROM) */
	uint64_t bytes_out;
	uint64_t faults_contained; /* regions a transfer faulted on */
	uint64_t requests;	   /* MGET_TO and MPUT_FROM handled */
};

struct kvt_region_pool {
	uint64_t regions; /* mapped now */
	uint64_t bytes;	  /* bytes mapped now */
	struct kvt_region_stats st;
};

/* An empty pool. */
void kvt_region_pool_init(struct kvt_region_pool *p);

/* Sets up c's empty table.  Returns 0 or -ENOMEM. */
int kvt_region_open(struct kvt_conn *c);

/*
 * Ends every region of c (it is going away); each is unmapped once no
 * transfer uses it.  Accepts a c kvt_region_open() failed on.
 */
void kvt_region_close(struct kvt_conn *c);

/* Whether c has regions registered (a connection that does is not idle). */
bool kvt_region_holds(const struct kvt_conn *c);

/* REGISTER: maps the descriptor c passed with it; answers r. */
void kvt_region_register(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *body, size_t len);

/* UNREGISTER; answers r. */
void kvt_region_unregister(struct kvt_conn *c, struct kvt_reply *r,
			   const uint8_t *body, size_t len);

/*
 * MGET_TO (put false) or MPUT_FROM (put true): answers r now (a bad
 * request) or when the tier manager is done.  body (len bytes, malloc'd)
 * passes to the handler, which keeps it until then: the keys live in it.
 */
void kvt_region_xfer(struct kvt_conn *c, struct kvt_reply *r, bool put,
		     uint8_t *body, size_t len);

#endif /* KVT_REGION_H */
