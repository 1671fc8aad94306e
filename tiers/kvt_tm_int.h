/*
 * kvt_tm_int.h - internals shared by the files of the tier manager.
 *
 * Not a public header: only tiers/kvt_tm*.c include it.  kvt_tm.h is the
 * manual; kvt_tm.c explains the design (tiers, threads, blocks in motion).
 * The manager is split by concern, the way L3 is (kvt_l3_int.h):
 *   kvt_tm.c         open/close, the API (put, get, del, exists, prefetch,
 *                    drop, spill, check) and pins;
 *   kvt_tm_move.c    blocks in motion on the loop thread: demotion, L3
 *                    admission, promotion, and applying the worker's
 *                    results (kvt_tm_dispatch);
 *   kvt_tm_worker.c  the worker thread and its job queues: everything slow
 *                    (codec work, L3 I/O) runs there, never on the loop;
 *   kvt_tm_report.c  the reports: hot blocks, per-namespace totals, stats.
 * Functions shared between them carry the kvt_tmi_ ("internal") prefix.
 * Every kvt_tmi_ function runs on the loop thread unless it says otherwise.
 */
#ifndef KVT_TM_INT_H
#define KVT_TM_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvt_codec.h"
#include "kvt_ghost.h"
#include "kvt_l3.h"
#include "kvt_lru.h"
#include "kvt_tier.h"
#include "kvt_tm.h"

/* Entry flag: an identical copy of this block is indexed on L3. */
#define TM_F_ON_L3 0x01

/* Entry flag: brought up by PREFETCH and not read since. */
#define TM_F_PREFETCHED 0x02

enum job_kind {
	JOB_TO_L2,	/* compress a raw L1 victim for L2 */
	JOB_TO_L3,	/* (compress and) write a block to L3 */
	JOB_FROM_L2,	/* decompress an L2 frame */
	JOB_FROM_L3,	/* read (and decompress) a block from L3 */
	JOB_L3_DEL,	/* remove a key's L3 copy */
	JOB_L3_DROP,	/* remove a namespace from L3 (k.ns; key empty) */
};

struct waiter {
	struct waiter *next;
	kvt_tm_get_cb cb;
	void *arg;
};

struct job {
	struct job *next;  /* todo / done queue */
	struct job *lnext; /* transit / promos list */
	enum job_kind kind;
	bool stale;	/* the key was put or deleted meanwhile */
	bool listed;	/* on transit or promos */
	struct kvt_key k; /* points into name[] */
	uint64_t expires;
	uint8_t dtype;
	uint8_t flags;	/* TM_F_* of the block */
	uint64_t hits, ctime_s, atime_s; /* the block's history (hot) */
	/* Input: the block, raw (src_codec RAW) or a compressed frame. */
	struct kvt_ref *src;
	uint8_t src_codec;
	uint64_t raw_len;
	uint64_t cost;	/* bytes counted in transit_bytes */
	/* Output. */
	int status;
	uint8_t *out;	/* malloc'd: a frame (TO_L2) or raw bytes (FROM_*) */
	size_t out_len;
	uint8_t out_codec;
	struct waiter *waiters;
	/* JOB_L3_DROP: completion, and blocks already dropped from RAM. */
	kvt_tm_count_cb count_cb;
	void *count_arg;
	uint64_t count;
	uint8_t name[];	/* ns bytes then key bytes */
};

/*
 * A pinned key: pinned by `count` holders (connections).  Pins are per key,
 * not per entry, so a pinned block stays pinned when it is replaced or
 * brought back up from a lower tier.
 */
struct pin {
	struct pin *next;
	uint32_t count;
	size_t ns_len, key_len;
	uint8_t name[];
};

#define TM_PIN_BUCKETS 1024

struct kvt_tm {
	struct kvt_arena *arena; /* installed in kvt_mem while open */
	int arena_err;
	struct kvt_lru *l1;
	struct pin *pins[TM_PIN_BUCKETS];
	uint64_t npins, pin_cap, pins_rejected;
	struct kvt_lru *l2; /* NULL: L2 disabled */
	struct kvt_l3 *l3; /* NULL: L3 disabled */
	uint64_t (*now_s)(void);
	uint64_t l2_capacity, l3_capacity;
	uint64_t transit_max;

	/*
	 * The worker and its queues.  Only kvt_tm_worker.c touches these; the
	 * rest of the manager calls kvt_tmi_submit() and kvt_tmi_worker_done()
	 * and reads worker_running (set while the thread runs).
	 */
	pthread_t worker;
	bool worker_running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool quit;
	struct job *todo_head, *todo_tail; /* under mu */
	struct job *done_head, *done_tail; /* under mu */
	int efd;		    /* -1 when closed */
	struct kvt_codec_ctx *wctx; /* the worker's */

	/* Loop thread only. */
	unsigned jobs_pending; /* submitted, not yet dispatched */
	struct job *transit;
	struct job *promos;
	uint64_t transit_bytes;
	uint64_t l3_tokens, l3_rate, l3_tokens_at;

	uint64_t gets, puts, dels, misses;
	uint64_t promotions, demotions, evictions;
	uint64_t rejected_too_big, demotions_dropped, l3_admission_rejected;
	uint64_t prefetched, prefetch_hits;

	/*
	 * Why gets miss.  `gone` remembers keys that left the cache
	 * altogether (L3 reclaims happen on the worker: ghost_mu); ram_ghost
	 * remembers keys that left RAM with ram_evicted (bytes RAM had
	 * evicted) at that moment: a RAM miss whose key left RAM less than
	 * a RAM's worth of evictions ago would have hit a RAM twice as big.
	 */
	struct kvt_ghost *gone, *ram_ghost;
	pthread_mutex_t ghost_mu;
	uint64_t ram_evicted, ram_capacity, ghost_hits_2x;
	uint64_t misses_never_seen, misses_expired, misses_evicted;
	uint64_t misses_corrupt, misses_raced;
	uint64_t l2_hits_transit;
};

/* 1 if a block with this expiry (0 = never) has expired by tm's clock. */
static inline bool tm_expired(const struct kvt_tm *tm, uint64_t expires)
{
	return expires != 0 && tm->now_s() >= expires;
}

/* ---- the worker and its queues (kvt_tm_worker.c) ------------------------ */

/*
 * Starts the worker thread, its codec context (zstd level) and the
 * eventfd it signals results on.  Returns 0 or an error; on error
 * kvt_tmi_worker_stop() frees what was made.
 */
int kvt_tmi_worker_start(struct kvt_tm *tm, int level);
/*
 * Stops and joins the worker and frees its queues without running any
 * callback (the daemon has closed its clients), then the codec context and
 * the eventfd.  Safe when kvt_tmi_worker_start() failed or never ran.
 */
void kvt_tmi_worker_stop(struct kvt_tm *tm);
/* A new job of this kind for k (copied into the job), or NULL. */
struct job *kvt_tmi_job_new(enum job_kind kind, const struct kvt_key *k);
/* Releases the job's source block and output buffer and frees it.  NULL ok. */
void kvt_tmi_job_free(struct job *j);
/* Queues j for the worker (FIFO: a job runs after every job queued before). */
void kvt_tmi_submit(struct kvt_tm *tm, struct job *j);
/*
 * Resets the eventfd and takes every finished job, in order (a list through
 * job.next, NULL if none).  The caller applies and frees them.
 */
struct job *kvt_tmi_worker_done(struct kvt_tm *tm);

/* ---- blocks in motion (kvt_tm_move.c) ----------------------------------- */

/* The job for k on list head (transit or promos) that is not stale, or NULL. */
struct job *kvt_tmi_list_find(struct job *head, const struct kvt_key *k);
/*
 * Sends block v (whose reference passes to the callee) one tier down: an
 * L1 victim to L2, an L2 victim (or, with to_l3, anything) to L3.  force
 * skips the transit cap and the write budget (graceful spill).
 */
void kvt_tmi_demote(struct kvt_tm *tm, struct kvt_ref *v, bool to_l3,
		    bool force);
/* L1's victim callback (kvt_lru_victim_fn; arg is tm): demotes v. */
void kvt_tmi_l1_victim(void *arg, struct kvt_ref *v);
/* L3's eviction callback (arg is tm; the worker thread): remembers k. */
void kvt_tmi_l3_evicted(void *arg, const struct kvt_key *k);
/* True if k left the cache altogether recently (the `gone` ghost). */
bool kvt_tmi_was_gone(struct kvt_tm *tm, const struct kvt_key *k);
/*
 * Forgets k below L1: marks its jobs stale, drops its L2 copy and queues
 * the removal of its L3 copy.  Returns true if any of them was found.
 */
bool kvt_tmi_forget_below(struct kvt_tm *tm, const struct kvt_key *k);
/* Adds a get waiting for promotion j.  Returns 0 or -ENOMEM. */
int kvt_tmi_add_waiter(struct job *j, kvt_tm_get_cb cb, void *arg);
/*
 * Starts a promotion of k (put on the promos list, with cb as its first
 * waiter); the caller fills in the job and submits it.  NULL: no memory.
 */
struct job *kvt_tmi_promo_start(struct kvt_tm *tm, enum job_kind kind,
				const struct kvt_key *k, kvt_tm_get_cb cb,
				void *arg);
/*
 * Starts decompressing frame (an L2 entry, whose reference passes to the
 * job) for a get of k.  Returns kvt_tm_get()'s result.
 */
int kvt_tmi_promo_frame(struct kvt_tm *tm, const struct kvt_key *k,
			struct kvt_ref *frame, kvt_tm_get_cb cb, void *arg);
/*
 * The get callback of a prefetch: nobody waits, the reference is let go.
 * A waiter with this callback is not a client's get, so not a miss.
 */
void kvt_tmi_prefetch_done(void *arg, int status, struct kvt_ref *ref);

/* ---- pins (kvt_tm.c) ---------------------------------------------------- */

/*
 * After k enters L1: a pinned key's new entry is pinned too, if the cap
 * allows (a key pinned while below L1 had no size to check until now).
 */
void kvt_tmi_reapply_pin(struct kvt_tm *tm, const struct kvt_key *k);

#endif /* KVT_TM_INT_H */
