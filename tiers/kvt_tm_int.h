/*
 * kvt_tm_int.h - internals shared by the files of the tier manager.
 *
 * Not a public header: only tiers/kvt_tm*.c include it.  kvt_tm.h is the
 * manual; kvt_tm.c explains the design (tiers, threads, blocks in motion,
 * admission and no churn).  The manager is split by concern, the way L3 is
 * (kvt_l3_int.h), each file using only those listed below it:
 *   kvt_tm.c         open/close and the API (put, get, del, exists,
 *                    prefetch, pin, drop, spill, check);
 *   kvt_tm_report.c  the reports: hot blocks, per-namespace totals, stats;
 *   kvt_tm_move.c    blocks in motion on the loop thread: demotion, L3
 *                    admission, promotion and L1 admission, and applying
 *                    the pool's results (kvt_tm_dispatch);
 *   kvt_tm_pin.c     the pin table (who pins which key);
 *   kvt_tm_order.c   the loop's O(1) indexes of what is in motion: the
 *                    transit and promos sets by key, pending L3 deletes and
 *                    drops;
 *   kvt_tm_seg.c     transfers into and out of client memory (get_to,
 *                    put_from): deciding on the loop where each value is,
 *                    and the workers' copies, guarded against faults;
 *   kvt_tm_l4.c      L4: what the loop sends there and does with what
 *                    comes back, and the L4 threads' calls;
 *   kvt_tm_pool.c    the worker pool and its lanes: everything slow (codec
 *                    work, L3 and L4 I/O, copies of client memory) runs
 *                    there, never on the loop.
 * Functions shared between them carry the kvt_tmi_ ("internal") prefix.
 * Every kvt_tmi_ function runs on the loop thread unless it says otherwise.
 * L4 is the exception to the order: kvt_tm_l4.c starts promotions and
 * drops through kvt_tm_move.c and kvt_tm.c, and they hand it L4's jobs
 * and the blocks that leave this host.
 */
#ifndef KVT_TM_INT_H
#define KVT_TM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvt_codec.h"
#include "kvt_ghost.h"
#include "kvt_l3.h"
#include "kvt_l4.h"
#include "kvt_lru.h"
#include "kvt_tier.h"
#include "kvt_tm.h"

/*
 * Entry flags (kvt_lru_meta.flags).  A block admitted to L1 from L2 keeps
 * its frame in L2: its L1 entry has ON_L2 and the frame IN_L1, and the
 * L1 entry leaves the L3 question to the frame (ON_L2 and ON_L3 are never
 * both set in L1).  So each block is counted once in reports.
 */
/* An identical copy of this block is indexed on L3 (or on its way). */
#define TM_F_ON_L3 0x01
/* Brought up by PREFETCH and not read since. */
#define TM_F_PREFETCHED 0x02
/* L1 only: this block's compressed frame is in L2 too (inclusive). */
#define TM_F_ON_L2 0x04
/* L2 only: this frame's block is in L1 too (with ON_L2). */
#define TM_F_IN_L1 0x08
/* The flags that say where other copies are. */
#define TM_F_COPIES (TM_F_ON_L2 | TM_F_ON_L3 | TM_F_IN_L1)

enum job_kind {
	JOB_TO_L2,	/* compress a raw L1 victim for L2 */
	JOB_TO_L3,	/* (compress and) write a block to L3 */
	JOB_FROM_L2,	/* decompress an L2 frame */
	JOB_FROM_L3,	/* read (and decompress) a block from L3 */
	JOB_L3_DEL,	/* remove a key's L3 copy */
	JOB_L3_DROP,	/* remove a namespace from L3 (k.ns; key empty) */
	/* Transfers of client memory (kvt_tm_seg.c), all on the CPU lane: */
	JOB_SEG_COPY,	/* a raw block (src) into a key's segments */
	JOB_SEG_FRAME,	/* an L2 frame (src) decompressed into them */
	JOB_SEG_L3,	/* an L3 block read, verified, placed into them */
	JOB_SEG_PUT,	/* a key's segments copied into a new block (out) */
	JOB_L4_GET,	/* fetch a block from L4, then decompress it */
	JOB_L4_PROBE,	/* MATCH: which keys L4 has (tm_l4_job.keys) */
	JOB_L4_PUT,	/* (compress and) store a block in L4 */
	JOB_L4_DEL,	/* remove a key's L4 copy */
	JOB_L4_DROP,	/* drop a namespace in L4 (k.ns) */
	JOB_L4_GENS,	/* from an L4 thread: namespaces a peer dropped */
};

/* A job that reads from L3 (batched by the pool, counted in reads_queued). */
static inline bool tm_job_reads_l3(enum job_kind kind)
{
	return kind == JOB_FROM_L3 || kind == JOB_SEG_L3;
}

/*
 * The pool's lanes (kvt_tm_pool.c).  A lane is a FIFO of jobs; a serial
 * lane has at most one worker inside at a time, so its jobs run one run
 * after another in submission order.  Room is left for lanes served by
 * threads of their own (an L4 lane whose network I/O must never occupy the
 * CPU workers): a lane names which threads serve it, not what its jobs do.
 */
enum tm_lane {
	TM_LANE_CPU,	/* codec work and L3 reads: any worker, in parallel */
	TM_LANE_L3W,	/* L3 writes, deletes, drops: serial */
	TM_LANE_L4R,	/* L4 gets and probes: the L4 threads, in parallel */
	TM_LANE_L4W,	/* L4 puts, deletes, drops: the L4 threads, serial */
	TM_LANES
};

/*
 * How a waiter of a promotion hears its outcome: the shape of a get's
 * callback (kvt_tm_get_cb), spelled here so that the files below kvt_tm.c
 * need nothing of its API.  A waiter that wants the bytes elsewhere than in
 * a new block (client memory) would carry its own completion the same way.
 */
typedef void (*tm_ref_fn)(void *arg, int status, struct kvt_ref *ref);

struct waiter {
	struct waiter *next;
	tm_ref_fn cb;
	void *arg;
};

struct job {
	/* Pool-owned (under the pool's mu): queues and the done list. */
	struct job *next;		/* done list */
	struct job *qnext[TM_LANES];	/* each lane's queue it is on */
	uint64_t seq;			/* submission order */
	bool pre_stage;	/* TO_L3, L4_PUT: its compression is still queued */
	/*
	 * Made by a worker, not submitted by the loop (an L3 victim for L4,
	 * a generation poll's result): not counted in jobs_pending.
	 */
	bool from_pool;
	/* Loop-owned: the transit / promos set (kvt_tm_order.c). */
	struct job *lprev, *lnext, *hnext;
	uint64_t hash;	/* kvt_key_hash(&k) */
	bool listed;	/* on transit or promos */
	bool stale;	/* the key was put or deleted meanwhile */
	bool force;	/* promotion: admit to L1 whatever the rule says */
	bool untracked;	/* L3_DEL/DROP: not in the pending set (no memory) */
	uint8_t flags;	/* TM_F_* of the block */
	enum job_kind kind;	/* immutable */
	struct kvt_key k;	/* points into name[]; immutable */
	uint64_t expires;
	uint8_t dtype;
	uint64_t hits, ctime_s, atime_s; /* the block's history (hot) */
	/* Input: the block, raw (src_codec RAW) or a compressed frame. */
	struct kvt_ref *src;
	uint8_t src_codec;
	uint64_t raw_len;
	uint64_t cost;	/* bytes counted in transit_bytes */
	/* Output (worker-owned while the job runs). */
	int status;
	bool compressed;	/* out holds the compressed block (TO_L3) */
	uint8_t *out;	/* malloc'd: a frame (TO_L2) or raw bytes (FROM_*) */
	size_t out_len;
	uint8_t out_codec;
	struct waiter *waiters;
	/* JOB_L3_DROP: completion, and blocks already dropped from RAM
	 * (JOB_L4_PROBE: a MATCH's completion and its local count). */
	kvt_tm_count_cb count_cb;
	void *count_arg;
	uint64_t count;
	/* JOB_SEG_*: the transfer (kvt_tm_seg.c) and the key's index in it. */
	struct tm_xfer *xf;
	size_t xi;
	/* L4 jobs: what kvt_tm_l4.c keeps in them (freed with the job). */
	struct tm_l4_job *l4;
	uint8_t name[];	/* ns bytes then key bytes */
};

/*
 * A set of jobs findable by key in O(1) and walkable in order of entry
 * (kvt_tm_order.c): transit and promos.
 */
struct tm_jobset {
	struct job *head;
	struct job **buckets;
	size_t nbuckets; /* power of two */
	size_t n;
};

/*
 * A counting set of 64-bit hashes (kvt_tm_order.c): open addressing with
 * linear probing and backward-shift deletion, doubled at half load.  The
 * pending L3 deletes by key hash and drops by namespace hash.  A hash
 * collision can only make a get of a live key miss, which is allowed.
 */
struct tm_hcount {
	uint64_t *keys; /* 0 = empty slot */
	uint32_t *counts;
	size_t mask;	/* slots - 1 */
	size_t used;
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

/* One worker thread of the pool and what it owns. */
struct tm_worker {
	struct kvt_tm *tm;
	pthread_t thread;
	bool started;
	unsigned id;
	unsigned lanes;	/* bit l set: serves lane l (1u << TM_LANE_*) */
	struct kvt_codec_ctx *ctx; /* its own zstd contexts */
	struct kvt_l3_reader *reader; /* its own L3 reader (with L3) */
	struct kvt_l4_session *l4s; /* an L4 thread's connections */
};

/* A lane's queue and counters (under the pool's mu). */
struct tm_lane_q {
	struct job *head, *tail;
	unsigned depth;	 /* entries queued, not yet taken */
	unsigned inside; /* workers running a run of this lane */
	bool serial;
	uint64_t busy_ns, jobs;
};

struct kvt_tm {
	struct kvt_arena *arena; /* installed in kvt_mem while open */
	int arena_err;
	struct kvt_lru *l1;
	struct pin *pins[TM_PIN_BUCKETS];
	uint64_t npins, pin_cap, pins_rejected;
	struct kvt_lru *l2; /* NULL: L2 disabled */
	struct kvt_l3 *l3; /* NULL: L3 disabled */
	struct tm_l4 *l4;  /* NULL: no L4 (kvt_tm_l4.c) */
	uint64_t (*now_s)(void);
	uint64_t l2_capacity, l3_capacity;
	uint64_t transit_max;

	/*
	 * The pool.  Only kvt_tm_pool.c touches these; the rest of the manager
	 * calls kvt_tmi_submit() and kvt_tmi_pool_done() and reads
	 * pool_running (set while the threads run).
	 */
	bool pool_running;
	unsigned nworkers;
	struct tm_worker *workers;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool quit;
	struct tm_lane_q lanes[TM_LANES];	/* under mu */
	uint64_t seq;				/* under mu */
	unsigned reads_queued;			/* FROM_L3 in the CPU lane */
	uint64_t pool_busy_ns, pool_jobs;	/* under mu */
	struct job *done_head, *done_tail;	/* under mu */
	int efd;		    /* -1 when closed */

	/* Loop thread only. */
	unsigned jobs_pending; /* submitted, not yet dispatched */
	struct tm_jobset transit, promos;
	struct tm_hcount pend_del;  /* key hashes with an L3 delete queued */
	struct tm_hcount pend_drop; /* namespace hashes with a drop queued */
	unsigned pend_untracked;    /* queued deletes/drops not in those */
	uint64_t transit_bytes;
	uint64_t l3_tokens, l3_rate, l3_tokens_at;

	uint64_t gets, puts, dels, misses;
	uint64_t promotions, demotions, evictions;
	uint64_t rejected_too_big, demotions_dropped, l3_admission_rejected;
	uint64_t prefetched, prefetch_hits;
	uint64_t demotions_reused;

	/*
	 * L1 admission (kvt_tm_move.c): `seen` remembers keys read from a
	 * lower tier with bypass_bytes (bytes served without entering L1 so
	 * far) at that moment.
	 */
	struct kvt_ghost *seen;
	uint64_t bypass_bytes, admit_window;
	uint64_t promotions_admitted, promotions_bypassed;

	/*
	 * Why gets miss.  `gone` remembers keys that left the cache
	 * altogether (L3 reclaims happen on a worker: ghost_mu); ram_ghost
	 * remembers keys that left RAM with ram_evicted (bytes RAM had
	 * evicted) at that moment: a RAM miss whose key left RAM less than
	 * a RAM's worth of evictions ago would have hit a RAM twice as big.
	 */
	struct kvt_ghost *gone, *ram_ghost;
	pthread_mutex_t ghost_mu;
	uint64_t ram_evicted, ram_capacity, ghost_hits_2x;
	uint64_t misses_never_seen, misses_expired, misses_evicted;
	uint64_t misses_corrupt, misses_raced;
};

/* 1 if a block with this expiry (0 = never) has expired by tm's clock. */
static inline bool tm_expired(const struct kvt_tm *tm, uint64_t expires)
{
	return expires != 0 && tm->now_s() >= expires;
}

/* The hash pending drops of k's namespace are kept under. */
static inline uint64_t tm_ns_hash(const struct kvt_key *k)
{
	struct kvt_key n = { k->ns, k->ns_len, NULL, 0 };

	return kvt_key_hash(&n);
}

/* ---- the worker pool (kvt_tm_pool.c) ------------------------------------ */

/*
 * Starts `workers` threads (each with a codec context at zstd level
 * `level`) and the eventfd results are signalled on.  Returns 0 or an
 * error; on error kvt_tmi_pool_stop() frees what was made.
 */
int kvt_tmi_pool_start(struct kvt_tm *tm, unsigned workers, int level);
/*
 * Stops and joins the workers and frees the queues without running any
 * callback (the daemon has closed its clients), then the codec contexts
 * and the eventfd.  Safe when kvt_tmi_pool_start() failed or never ran.
 */
void kvt_tmi_pool_stop(struct kvt_tm *tm);
/* A new job of this kind for k (copied into the job), or NULL. */
struct job *kvt_tmi_job_new(enum job_kind kind, const struct kvt_key *k);
/* Releases the job's source block and output buffer and frees it.  NULL ok. */
void kvt_tmi_job_free(struct job *j);
/*
 * Queues j on its lane.  Jobs of a serial lane run in submission order;
 * a TO_L3 job of a raw block is also queued on the CPU lane for its
 * compression, which must finish before its place in the L3 lane comes.
 */
void kvt_tmi_submit(struct kvt_tm *tm, struct job *j);
/*
 * Resets the eventfd and takes every finished job (a list through
 * job.next, NULL if none; a serial lane's jobs in their order).  The
 * caller applies and frees them.
 */
struct job *kvt_tmi_pool_done(struct kvt_tm *tm);
/* A snapshot of the pool's counters, for kvt_tm_stats(). */
struct tm_pool_snap {
	unsigned workers;
	uint64_t busy_ns, jobs;
	unsigned queued[TM_LANES];
	uint64_t lane_busy_ns[TM_LANES], lane_jobs[TM_LANES];
};
void kvt_tmi_pool_snap(struct kvt_tm *tm, struct tm_pool_snap *st);

/* ---- indexes of what is in motion (kvt_tm_order.c) ---------------------- */

int kvt_tmi_jobset_init(struct tm_jobset *s);
void kvt_tmi_jobset_free(struct tm_jobset *s); /* the set, not the jobs */
/* Adds j (j->hash set) to s and marks it listed. */
void kvt_tmi_jobset_add(struct tm_jobset *s, struct job *j);
/* Removes j from s if it is there. */
void kvt_tmi_jobset_remove(struct tm_jobset *s, struct job *j);
/* The job for k in s that is not stale, or NULL. */
struct job *kvt_tmi_jobset_find(const struct tm_jobset *s,
				const struct kvt_key *k);

int kvt_tmi_hcount_init(struct tm_hcount *h);
void kvt_tmi_hcount_free(struct tm_hcount *h);
/* Counts hash once more.  Returns 0 or -ENOMEM (nothing changed). */
int kvt_tmi_hcount_add(struct tm_hcount *h, uint64_t hash);
/* Counts hash once less (it must be there). */
void kvt_tmi_hcount_del(struct tm_hcount *h, uint64_t hash);
bool kvt_tmi_hcount_has(const struct tm_hcount *h, uint64_t hash);

/*
 * True if a delete of k or a drop of its namespace is queued for L3 and
 * not yet applied: L3's copy of k, if any, is logically gone, so it must
 * not be read nor trusted as a copy of a block in RAM.
 */
bool kvt_tmi_l3_pending(const struct kvt_tm *tm, const struct kvt_key *k);
/* Records that j (an L3_DEL or L3_DROP about to be submitted) is pending. */
void kvt_tmi_pending_add(struct kvt_tm *tm, struct job *j);
/* And that it was applied (its result came back). */
void kvt_tmi_pending_done(struct kvt_tm *tm, struct job *j);

/* ---- pins (kvt_tm_pin.c) ------------------------------------------------ */

/* The pin of k, or NULL. */
struct pin *kvt_tmi_pin_find(struct kvt_tm *tm, const struct kvt_key *k);
/* A first pin of k (count 1).  Returns 0 or -ENOMEM. */
int kvt_tmi_pin_add(struct kvt_tm *tm, const struct kvt_key *k);
/* Drops one pin of k; returns the pins left, or -1 if k was not pinned. */
int kvt_tmi_pin_drop(struct kvt_tm *tm, const struct kvt_key *k);
/* Frees the table (kvt_tm_close). */
void kvt_tmi_pins_free(struct kvt_tm *tm);
/*
 * After k enters L1: a pinned key's new entry is pinned too, if the cap
 * allows (a key pinned while below L1 had no size to check until now).
 */
void kvt_tmi_reapply_pin(struct kvt_tm *tm, const struct kvt_key *k);

/* ---- blocks in motion (kvt_tm_move.c) ----------------------------------- */

/* How a block is demoted (kvt_tmi_demote). */
#define TM_DEMOTE_FROM_L2 0x1 /* the block is an L2 frame (else from L1) */
#define TM_DEMOTE_TO_L3 0x2   /* straight to L3, past L2 */
#define TM_DEMOTE_FORCE 0x4   /* skip the transit cap and write budget */

/*
 * Sends block v (whose reference passes to the callee) one tier down: an
 * L1 victim to L2, an L2 victim (or, with TM_DEMOTE_TO_L3, anything) to
 * L3, unless an identical copy is already there (no churn).
 */
void kvt_tmi_demote(struct kvt_tm *tm, struct kvt_ref *v, unsigned how);
/* L1's victim callback (kvt_lru_victim_fn; arg is tm): demotes v. */
void kvt_tmi_l1_victim(void *arg, struct kvt_ref *v);
/* L3's eviction callback (arg is tm; a worker thread): remembers k. */
void kvt_tmi_l3_evicted(void *arg, const struct kvt_key *k);
/* True if k left the cache altogether recently (the `gone` ghost). */
bool kvt_tmi_was_gone(struct kvt_tm *tm, const struct kvt_key *k);
/*
 * Forgets k below L1: marks its jobs stale, drops its L2 copy and queues
 * the removal of its L3 copy.  Returns true if any of them was found.
 */
bool kvt_tmi_forget_below(struct kvt_tm *tm, const struct kvt_key *k);
/* Adds a get waiting for promotion j.  Returns 0 or -ENOMEM. */
int kvt_tmi_add_waiter(struct job *j, tm_ref_fn cb, void *arg);
/*
 * Starts a promotion of k (put on the promos set, with cb as its first
 * waiter); the caller fills in the job and submits it.  NULL: no memory.
 */
struct job *kvt_tmi_promo_start(struct kvt_tm *tm, enum job_kind kind,
				const struct kvt_key *k, tm_ref_fn cb,
				void *arg);
/*
 * Starts decompressing frame (an L2 entry or a frame in transit, whose
 * reference passes to the job) for a get of k; flags are the block's
 * TM_F_* beyond the frame's own.  Returns kvt_tm_get()'s result.
 */
int kvt_tmi_promo_frame(struct kvt_tm *tm, const struct kvt_key *k,
			struct kvt_ref *frame, uint8_t flags, tm_ref_fn cb,
			void *arg);
/*
 * The get callback of a prefetch: nobody waits, the reference is let go.
 * A waiter with this callback is not a client's get, so not a miss.
 */
void kvt_tmi_prefetch_done(void *arg, int status, struct kvt_ref *ref);
/* Applies the pool's finished jobs (kvt_tm_dispatch). */
void kvt_tmi_apply_done(struct kvt_tm *tm);

/* ---- transfers of client memory (kvt_tm_seg.c) -------------------------- */

/*
 * Does the work of a run of JOB_SEG_* jobs (one kind; several only for
 * JOB_SEG_L3, whose reads go out together).  A worker thread.
 */
void kvt_tmi_seg_run(struct tm_worker *w, struct job **run, size_t n);
/* Applies a finished JOB_SEG_* job; the caller frees it. */
void kvt_tmi_seg_done(struct kvt_tm *tm, struct job *j);

/* The queue bytes of L4 writes (tm_l4.qbytes) when none is configured. */
#define TM_L4_QUEUE_DEFAULT ((uint64_t)256 << 20)
/* Most jobs in one L4 batch call (a run of an L4 lane). */
#define TM_L4_BATCH 64

/*
 * Removes namespace ns from every local tier (kvt_tm_drop_ns()); with
 * to_l4 also from L4.  kvt_tm.c; kvt_tm_l4.c's drops of what a peer
 * dropped pass to_l4 false.
 */
int kvt_tmi_drop_ns(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len,
		    kvt_tm_count_cb cb, void *arg, bool to_l4);

/*
 * Hands the frame an L4 put compressed (j->out) to L2 as an inclusive copy
 * of k's L1 entry, if L1 still holds that very block (put mode: a later
 * demotion then costs no compression).  kvt_tm_move.c.
 */
void kvt_tmi_keep_frame(struct kvt_tm *tm, struct job *j);

/* ---- L4 (kvt_tm_l4.c) --------------------------------------------------- */

/* What an L4 job carries besides the job's own fields. */
struct tm_l4_job {
	struct kvt_l4_block blk; /* L4_GET: the block fetched */
	uint32_t ttl_s;		 /* L4_PUT: expiry in L4, 0 = none */
	/* L4_PROBE: the keys after the local run, and L4's answer for each. */
	size_t nkeys;
	struct kvt_key *keys;
	int *status;
	/* L4_GENS: namespaces, each a u8 length then its bytes. */
	uint8_t *names;
	size_t names_len;
	uint8_t buf[]; /* L4_PROBE: the keys' bytes */
};

/*
 * The manager's L4 (kvt_tm_config.l4_url).  The L4 threads are workers
 * (struct tm_worker) of their own that serve only the two L4 lanes and
 * wait on cv, so that blocking network I/O never occupies a CPU worker;
 * between jobs they poll the namespaces' generations about once a second.
 */
struct tm_l4 {
	struct kvt_l4 *l4;
	int write;	     /* KVT_TM_L4_EVICT or _PUT */
	uint32_t ttl_s;	     /* of what is written, 0 = none */
	uint64_t value_max;  /* largest hit served, 0 = no limit */
	uint64_t qmax;	     /* bytes of queued writes at most */
	unsigned nthreads;
	struct tm_worker *threads;
	pthread_cond_t cv;   /* with the pool's mu */
	bool cv_made;
	/* Under the pool's mu. */
	unsigned gets_queued; /* JOB_L4_GET in the read lane */
	unsigned gets_share;  /* how many of them a run takes */
	uint64_t poll_at_ns;  /* the next generation poll is due */
	bool polling;
	/* Any thread. */
	atomic_int ready;	/* the first slot-map load returned... */
	atomic_int ready_rc;	/* ...with this */
	atomic_uint_fast64_t qbytes; /* bytes held by queued writes */
	atomic_uint_fast64_t too_big, dropped_w; /* counted by workers */
	/* Loop thread only. */
	struct job *staged, *staged_tail; /* gets for the next dispatch */
	unsigned nstaged;
	struct tm_hcount pend;	    /* key hashes: an L4 put or del queued */
	struct tm_hcount pend_drop; /* namespace hashes: an L4 drop queued */
	struct tm_hcount watched;   /* namespaces given to kvt_l4_watch() */
	unsigned jobs; /* L4 jobs submitted, not yet applied */
	uint64_t gets, probes, probes_found;
	uint64_t puts_dropped, puts_skipped, remote_drops;
};

/*
 * Opens L4 if the config names one (no I/O: kvt_l4_open()).  Returns 0 or
 * an error with the reason in cfg->errmsg.
 */
int kvt_tmi_l4_open(struct kvt_tm *tm, const struct kvt_tm_config *cfg);
/* After the pool stopped: frees what is staged, the sets and L4. */
void kvt_tmi_l4_close(struct kvt_tm *tm);
/* Frees a job's L4 part.  NULL ok.  Any thread. */
void kvt_tmi_l4_job_free(struct tm_l4_job *x);
/*
 * A get (or with cb kvt_tmi_prefetch_done, a prefetch) of k that no local
 * tier can serve: starts fetching k from L4, waiters and all, unless a
 * write or drop of k queued for L4 makes L4's copy untrustworthy.
 * Returns true if it did (cb runs later), false if k is simply a miss.
 */
bool kvt_tmi_l4_get(struct kvt_tm *tm, const struct kvt_key *k,
		    tm_ref_fn cb, void *arg);
/*
 * Submits the gets staged since the last dispatch, so that one dispatch's
 * gets reach L4 as a few batches (kvt_tm_dispatch()).
 */
void kvt_tmi_l4_flush(struct kvt_tm *tm);
/*
 * MATCH's L4 part (kvt_tm_match()): keys[0..from) are here, keys[from] is
 * not; probes keys[from..n) in L4.  local[i] says whether key i is here.
 * Returns 1 (cb runs later) or 0 (cb ran: no memory to ask).
 */
int kvt_tmi_l4_match(struct kvt_tm *tm, const struct kvt_key *keys,
		     size_t n, size_t from, const uint8_t *local,
		     kvt_tm_count_cb cb, void *arg);
/* k was put (ref: its new L1 entry, not consumed): put mode writes it. */
void kvt_tmi_l4_put(struct kvt_tm *tm, const struct kvt_key *k,
		    struct kvt_ref *ref);
/* A namespace was written to here: L4 watches its generation. */
void kvt_tmi_l4_watch(struct kvt_tm *tm, const struct kvt_key *k);
/* k was deleted: so is L4's copy, in the background. */
void kvt_tmi_l4_del(struct kvt_tm *tm, const struct kvt_key *k);
/* ns was dropped here: and in L4, in the background. */
void kvt_tmi_l4_drop(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len);
/*
 * Block v (an L1 or L2 victim) leaves this host with no copy below.  Evict
 * mode writes it to L4 (with a reference of its own; v stays the
 * caller's): returns true if it did, false if not (put mode, the queue
 * full, no L4).
 */
bool kvt_tmi_l4_evicted(struct kvt_tm *tm, struct kvt_ref *v);
/*
 * Applies a finished L4 job other than a get, or a job an L4 thread or the
 * L3 writer posted (kvt_tmi_apply_done()).  Returns true if it kept the
 * job (queued it: an L3 victim on its way to L4), false if the caller
 * frees it.
 */
bool kvt_tmi_l4_done(struct kvt_tm *tm, struct job *j);
/*
 * L3's on_reclaim callback (arg is tm; the L3 writer's thread): a block of
 * a region being reclaimed becomes an L4 write, if the queue has room;
 * the loop drops it if the key changed meanwhile.  Returns nonzero to
 * stop the region's walk (the queue is full).
 */
int kvt_tmi_l4_reclaimed(void *arg, const struct kvt_l3_reclaimed *b);

/* The L4 threads' side (kvt_tm_pool.c calls these on an L4 thread). */
/* At start: the first thread loads the slot map (tm_l4.ready). */
void kvt_tmi_l4_thread_start(struct tm_worker *w);
/* Does the work of a run of L4 jobs of one kind from lane l. */
void kvt_tmi_l4_run(struct tm_worker *w, enum tm_lane l, struct job **run,
		    size_t n);
/* Polls the generations; returns a JOB_L4_GENS job of what peers
 * dropped, or NULL. */
struct job *kvt_tmi_l4_poll(struct tm_worker *w);

/*
 * Puts a job made by a worker (from_pool) on the done list and wakes the
 * loop (kvt_tm_pool.c).  Any thread but the loop's; mu not held.
 */
void kvt_tmi_pool_post(struct kvt_tm *tm, struct job *j);
/* Submits a list of jobs (through job.next) at once, so that one run can
 * take them together (kvt_tm_pool.c; the loop thread). */
void kvt_tmi_submit_list(struct kvt_tm *tm, struct job *head);

/* L4 jobs submitted and not yet applied (0 without L4). */
unsigned kvt_tmi_l4_jobs(const struct kvt_tm *tm);

/* L4's counters for kvt_tm_stats(). */
void kvt_tmi_l4_stats(struct kvt_tm *tm, struct kvt_tm_l4_stats *st);

#endif /* KVT_TM_INT_H */
