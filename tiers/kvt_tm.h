/*
 * kvt_tm.h - the tier manager: the storage engine's only entry point.
 *
 * The daemon talks to storage exclusively through this API; the tiers below
 * it (L1 and L2 in RAM, L2 compressed; L3 on SSD) are invisible to callers.
 * Usable without any socket: unit tests drive it directly.
 *
 * Threading: one thread (the daemon's event loop) calls every kvt_tm_*
 * function; a pool of worker threads inside the manager does the slow
 * work (kvt_tm_event_fd).  Values are handed out as counted references
 * (struct kvt_ref, kvt_tier.h): a reference stays readable after the entry
 * is evicted, replaced or deleted, until its holder calls
 * kvt_ref_release(), which may be called from any thread.
 *
 * Gets complete through a callback so that tiers that need work off the
 * event loop (decompression, disk reads) can complete later without changing
 * callers: the callback runs either before kvt_tm_get() returns or later
 * from kvt_tm_dispatch() on the calling thread.
 */
#ifndef KVT_TM_H
#define KVT_TM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvt_tier.h" /* struct kvt_key, kvt_blob, kvt_ref */
#include "kvtier_errors.h"

struct kvt_tm;  /* opaque */
struct kvt_arena; /* kvt_arena.h */
struct kvt_l3_faults;

enum {
	KVT_TM_L3_IO_AUTO = 0,
	KVT_TM_L3_IO_URING = 1,
	KVT_TM_L3_IO_PREAD = 2,
};

/* Most worker threads a manager runs (kvt_tm_config.workers). */
#define KVT_TM_WORKERS_MAX 16

/* What L4 is given (kvt_tm_config.l4_write). */
enum {
	/* Blocks leaving this host: L3's victims (L2's without L3). */
	KVT_TM_L4_EVICT = 0,
	/* Every put, as it is stored (peers see it at once). */
	KVT_TM_L4_PUT = 1,
};

/* Most L4 threads (kvt_tm_config.l4_threads). */
#define KVT_TM_L4_THREADS_MAX 16

/* Arena bytes kept faulted in ahead of use without shm_prefault. */
#define KVT_TM_ARENA_WARM_AHEAD ((uint64_t)32 << 20)

struct kvt_tm_config {
	uint64_t l1_capacity; /* bytes, > 0 */
	uint64_t l2_capacity; /* bytes, 0 = disabled */
	uint64_t l3_capacity; /* bytes, 0 = disabled */
	const char *data_dir; /* for L3; may be NULL while L3 is disabled */
	int l2_level;	      /* zstd level for L2 and L3 writes; 0 = 1 */
	/*
	 * Worker threads for compression, decompression and L3 I/O (with L2
	 * or L3 enabled): 1 to KVT_TM_WORKERS_MAX; 0 = the number of online
	 * CPUs, at most KVT_TM_WORKERS_MAX.
	 */
	unsigned workers;
	uint64_t l3_region_size; /* bytes; 0 = 64 MiB */
	/*
	 * L3 admission: most bytes per second written to L3 (a token bucket
	 * with one second of burst); blocks over budget are dropped instead
	 * and counted.  0 = unlimited.
	 */
	uint64_t l3_write_rate;
	/*
	 * Bytes of blocks on their way down (being compressed or written) past
	 * which kvt_tm_busy() asks for backpressure; see there.  0 = default
	 * (a quarter of L1, at least 64 MiB).
	 */
	uint64_t transit_max;
	/* Most bytes of L1 pinned at once; 0 = half of L1. */
	uint64_t pin_max;
	/*
	 * Shared block arena (kvt_arena.h, kvt_mem.h): when shm_size > 0 the
	 * manager creates a memfd arena of that many bytes and installs it
	 * process-wide, so that values of at least shm_threshold bytes live
	 * in shared memory.  At most one manager per process may have one.
	 * Failing to create it is not fatal: see kvt_tm_arena().
	 */
	uint64_t shm_size;
	uint64_t shm_threshold;
	/*
	 * Fault the whole arena in from a background thread (kvt_arena.h).
	 * Without it, KVT_TM_ARENA_WARM_AHEAD bytes beyond the arena's
	 * highest allocation are kept faulted in (kvt_arena_warm()), so that
	 * values stored in fresh memory do not take a page fault per 4 KiB on
	 * the loop thread.
	 */
	int shm_prefault;
	/*
	 * Run the worker pool even with L1 alone (no L2, no L3), so that
	 * transfers into and out of client memory (kvt_tm_get_to) are
	 * copied off the calling thread.  Without a pool they are copied on
	 * it.
	 */
	int transfers;
	int l3_no_sync; /* tests only: skip fsync (loses crash safety) */
	/*
	 * How L3 reads its region files: KVT_TM_L3_IO_AUTO (io_uring if the
	 * kernel allows it, else pread), _URING (open fails without it) or
	 * _PREAD (never io_uring).  Same values as enum kvt_l3_io.
	 */
	int l3_io_backend;
	/* Tests only: L3 I/O failure injection (struct kvt_l3_faults). */
	struct kvt_l3_faults *l3_faults;
	/* Clock in seconds since the epoch for TTLs; NULL = CLOCK_REALTIME
	 * (expiries are stored in L3 and must survive restarts).  Tests fake
	 * it. */
	uint64_t (*now_s)(void);
	/*
	 * L4 (kvt_l4.h): a Redis Cluster shared by every host's manager,
	 * "redis-cluster://HOST:PORT[,HOST:PORT...]"; NULL = no L4.  Misses of
	 * L1-L3 fall through to it (gets, prefetches, kvt_tm_match()); what
	 * it is given is l4_write's choice; deletes and drops reach it; a
	 * peer's drop is seen within about a second.  All of its I/O runs on
	 * l4_threads threads of its own, never on the loop or the workers.
	 */
	const char *l4_url;
	/* AUTH password, or a file holding it (at most one; NULL = none). */
	const char *l4_password;
	const char *l4_password_file;
	int l4_write;	      /* KVT_TM_L4_EVICT (default) or _PUT */
	uint32_t l4_ttl_s;    /* expiry of blocks in L4; 0 = none */
	unsigned l4_threads;  /* 1 to KVT_TM_L4_THREADS_MAX; 0 = 4 */
	/* Most ms a node may make no progress (0 = 1000), and to connect
	 * (0 = 500): an L4 call blocks at most about their sum. */
	unsigned l4_timeout_ms, l4_connect_timeout_ms;
	/*
	 * Bytes of blocks queued for L4 writes at most; more are not written
	 * (counted in kvt_tm_l4_stats.puts_dropped).  0 = 256 MiB.
	 */
	uint64_t l4_queue_max;
	/* Largest value an L4 hit may have (larger: a counted miss); 0 = no
	 * limit but L4's own. */
	uint64_t value_max;
	/* Filled with a one-line reason when kvt_tm_open() fails; may be NULL. */
	char *errmsg;
	size_t errmsg_len;
	/* The longest key clients may put (sizes L3's index); 0 = 1 KiB. */
	uint64_t l3_key_max;
	/*
	 * Optional: the tiers' one-line log messages (key=value fields; level
	 * 0 error, 1 warn, 2 info), from any thread.  See kvt_l3_config.log.
	 */
	void (*log)(void *arg, int level, const char *line);
	void *log_arg;
};

struct kvt_tier_stats {
	uint64_t entries;
	uint64_t bytes;     /* stored bytes counted against capacity */
	uint64_t raw_bytes; /* uncompressed value bytes */
	uint64_t capacity_bytes;
	uint64_t hits;
};

/*
 * The worker pool's lanes (kvt_tm_event_fd): codec work and L3 reads run
 * on any worker in parallel; L3 writes, deletes and drops one at a time.
 */
enum {
	KVT_TM_LANE_CPU = 0,
	KVT_TM_LANE_L3_WRITE = 1,
	/* L4's lanes, served by the L4 threads only: gets and probes in
	 * parallel; puts, deletes and drops one at a time, in order. */
	KVT_TM_LANE_L4_READ = 2,
	KVT_TM_LANE_L4_WRITE = 3,
	KVT_TM_LANES = 4
};

struct kvt_tm_lane_stats {
	uint64_t queued;  /* jobs waiting in the lane now */
	uint64_t busy_ns; /* worker time spent in the lane */
	uint64_t jobs;	  /* jobs the lane finished */
};

struct kvt_tm_pool_stats {
	uint64_t workers; /* threads (0: no pool, L1 only); not L4's */
	/* Sum over workers of the time spent working, and the jobs they
	 * finished (L4's lanes count in lanes[] only: their threads mostly
	 * wait for the network). */
	uint64_t busy_ns;
	uint64_t jobs;
	struct kvt_tm_lane_stats lanes[KVT_TM_LANES];
};

/*
 * L4 (kvt_tm_config.l4_url).  Entries and bytes are the cluster's and not
 * known here.  Counters of gets count blocks, not calls.
 */
struct kvt_tm_l4_stats {
	uint64_t enabled;  /* 1 when L4 is configured (else all 0) */
	uint64_t write_put; /* 1: l4_write is KVT_TM_L4_PUT */
	uint64_t threads;
	/*
	 * Blocks asked for, found (and within value_max), and not found:
	 * absent, written before a DROP (stale), not a valid kvtier value
	 * (corrupt), over value_max (too_big), or an error (errors below).
	 */
	uint64_t gets, hits, misses, misses_stale, misses_corrupt, too_big;
	uint64_t get_calls; /* batch calls that fetched them */
	uint64_t probes, probes_found; /* MATCH: keys probed, found */
	uint64_t bytes_in, bytes_out;	/* the cluster's sockets */
	uint64_t errors;   /* keys or namespaces whose call failed */
	uint64_t timeouts; /* connections closed for making no progress */
	uint64_t fast_fails; /* commands failed at once: node backed off */
	uint64_t redirects; /* MOVED and ASK followed */
	uint64_t refreshes; /* slot maps loaded */
	uint64_t connects;
	uint64_t puts;	       /* blocks stored */
	uint64_t puts_dropped; /* not written: the queue was full */
	uint64_t puts_skipped; /* not written: the key changed meanwhile */
	uint64_t dels, drops;  /* deletes found / namespaces dropped */
	/* Namespaces dropped locally because a peer dropped them. */
	uint64_t remote_drops;
	uint64_t queued_bytes; /* of blocks waiting to be written */
	uint64_t nodes, slots_mapped;
	/* Latency of whole calls (get: a batch), microseconds. */
	uint64_t get_p50_us, get_p99_us, put_p50_us, put_p99_us;
};

struct kvt_tm_stats {
	struct kvt_tier_stats l1, l2, l3;
	struct kvt_tm_l4_stats l4;
	uint64_t gets, puts, dels, misses;
	uint64_t promotions, demotions, evictions;
	/*
	 * Blocks read from L2 or L3: admitted to L1 (the second read within
	 * the window, or asked for by a prefetch or a pin) or served once
	 * without entering L1 (bypassed).  promotions counts the admitted
	 * ones that entered L1.
	 */
	uint64_t promotions_admitted, promotions_bypassed;
	/* Demotions that cost nothing: the tier below had the very block. */
	uint64_t demotions_reused;
	struct kvt_tm_pool_stats pool;
	uint64_t rejected_too_big; /* puts refused with KVT_ENOSPACE */
	uint64_t demotions_dropped; /* victims dropped: too much in transit */
	uint64_t l3_admission_rejected; /* L3 writes over the write budget */
	uint64_t l3_bytes_read, l3_bytes_written, l3_reads_inflight;
	uint64_t l3_checksum_failures, l3_regions_reclaimed, l3_write_errors;
	/* L3's index: pages in use, the map, reclaims for want of room. */
	uint64_t l3_index_bytes, l3_index_map_bytes, l3_index_full;
	/* Bytes held by blocks on their way down right now: each counted as
	 * its tier counted it (value, key, namespace, entry) plus its job. */
	uint64_t transit_bytes;
	uint64_t jobs_pending;	/* worker jobs queued or running */
	/*
	 * Misses by cause: never seen (or deleted), expired, evicted earlier
	 * (the key left the cache recently), stored bytes failed their
	 * checksum, or the key was put or deleted while being fetched.
	 */
	uint64_t misses_never_seen, misses_expired, misses_evicted;
	uint64_t misses_corrupt, misses_raced;
	/* RAM misses (L1 and L2) that RAM twice as big would have served. */
	uint64_t ghost_hits_2x;
	uint64_t pinned_bytes;	/* L1 bytes that eviction must leave */
	uint64_t pinned_keys;	/* keys pinned by someone */
	uint64_t pins_rejected;	/* pins refused: over pin_max */
	uint64_t prefetched;	/* promotions started by kvt_tm_prefetch() */
	uint64_t prefetch_hits;	/* gets served from RAM thanks to them */
};

/*
 * Opens a tier manager.  Returns 0 and *out, KVT_EINVAL for a bad config,
 * -ENOMEM, or an error from a tier (with L3, an LMDB or errno code).
 */
int kvt_tm_open(struct kvt_tm **out, const struct kvt_tm_config *cfg);

/* Frees everything; outstanding kvt_ref stay valid until released. NULL ok. */
void kvt_tm_close(struct kvt_tm *tm);

/*
 * Stores blob under k (ttl_s 0 = no expiry), replacing any previous value
 * atomically: a get sees the old or the new value, never a mix.  Ownership
 * of blob->mem passes to the tier manager whatever the result; it must come
 * from kvt_block_alloc() or malloc() (kvt_mem.h).
 * Returns 0, KVT_ENOSPACE if the entry can never fit, -ENOMEM.
 */
int kvt_tm_put(struct kvt_tm *tm, const struct kvt_key *k,
	       struct kvt_blob *blob, uint32_t ttl_s);

/*
 * Completion of a get.  status is 0 with ref set (the callee owns one
 * reference and must kvt_ref_release() it), or KVT_ENOTFOUND / an error
 * with ref NULL.
 */
typedef void (*kvt_tm_get_cb)(void *arg, int status, struct kvt_ref *ref);

/*
 * Looks k up and calls cb exactly once.  Returns 0 if cb already ran, 1 if
 * it will run later from kvt_tm_dispatch().  k is only read during the call.
 * An L1 hit completes at once.  A block found in L2 or L3 is read back and
 * enters L1 only if it was read from there recently (scan resistance,
 * kvt_tm.c); otherwise cb gets a reference to a copy in no tier, and the
 * block stays where it was.  With L4, a block in none of L1-L3 is fetched
 * from L4 and treated like an L3 hit; gets made before the next
 * kvt_tm_dispatch() are fetched together, in one batch.  An L4 that fails
 * makes a miss, never an error.
 */
int kvt_tm_get(struct kvt_tm *tm, const struct kvt_key *k, kvt_tm_get_cb cb,
	       void *arg);

/* ---- transfers into and out of client memory (kvt_tm_seg.c) ---------- */

/*
 * A mapping of client memory the caller made (the daemon's registered
 * regions): the bytes of transfers go into or come from it.  The client
 * may truncate the file behind it at any moment, so every access to it is
 * guarded (kvt_guard.h): a fault fails the key that touched it with
 * KVT_EFAULT, sets `faulted`, and the span's remaining keys are failed
 * without being touched.  The caller keeps the mapping (and this struct)
 * until the transfer's callback.
 */
struct kvt_tm_span {
	uint8_t *base;
	uint64_t len;
	atomic_bool faulted; /* set by a worker; the caller reads it after */
	/*
	 * Optional (NULL: none): one bit per KVT_TM_WARM_CHUNK bytes of the
	 * mapping from base, zeroed when it was mapped and kept with it.  A
	 * worker about to copy into (or out of) a chunk whose bit is clear
	 * fills the chunk's page tables in one call (MADV_POPULATE_WRITE or
	 * _READ) and sets the bit: a fresh mapping would otherwise take a
	 * page fault per 4 KiB page on its first copy, which costs more than
	 * the copy on a VM.  A populate that finds the file shrunk fails the
	 * key with KVT_EFAULT, as a fault would.
	 */
	atomic_uchar *warm;
};

/* The chunk of kvt_tm_span.warm: a bit per 2 MiB of client memory. */
#define KVT_TM_WARM_CHUNK ((uint64_t)2 << 20)

/* One piece of a value: len bytes at p, inside spans[span]. */
struct kvt_tm_seg {
	uint8_t *p;
	uint64_t len;
	uint32_t span;
};

/*
 * One key of a transfer.  Its value is the concatenation of segs[seg ..
 * seg + nseg) of the transfer, want bytes in all.
 */
struct kvt_tm_xkey {
	struct kvt_key k;
	uint32_t seg, nseg;
	uint64_t want;
	/*
	 * Out.  status: 0 (got: the value filled the segments; put: stored),
	 * KVT_ENOTFOUND (a miss), KVT_ERANGE (got: the value is len bytes,
	 * not want; nothing written), KVT_EFAULT (span `fault` faulted;
	 * got: the segments may be partly written), or the error a
	 * kvt_tm_put() would return (KVT_ENOSPACE, -ENOMEM).  len and dtype:
	 * the value's (got: also on KVT_ERANGE; put: want and the transfer's
	 * dtype).
	 */
	int status;
	uint64_t len;
	uint8_t dtype;
	uint32_t fault;
};

struct kvt_tm_xfer;
/* Completion of a transfer: every key has its result.  Loop thread. */
typedef void (*kvt_tm_xfer_cb)(void *arg, struct kvt_tm_xfer *x);

/*
 * A batch of keys to read into (kvt_tm_get_to) or write from
 * (kvt_tm_put_from) client memory.  The caller owns every array, the
 * keys' bytes and the spans until cb, which runs exactly once.
 */
struct kvt_tm_xfer {
	struct kvt_tm_xkey *keys;
	size_t n;
	const struct kvt_tm_seg *segs;
	struct kvt_tm_span *spans;
	size_t nspans;
	uint8_t dtype;	/* put: every value's dtype */
	uint32_t ttl_s; /* put: 0 = no expiry */
	kvt_tm_xfer_cb cb;
	void *arg;
};

/*
 * Reads each key into its segments.  The worker pool moves the bytes,
 * never the calling thread: an L1 block is copied; a block below L1 that
 * is read for the first time in a while (so would not be admitted to L1,
 * the rule of kvt_tm_get()) is decompressed straight from its L2 frame,
 * or read from L3, verified and decompressed, into the segments; anything
 * else goes through kvt_tm_get() (promotion, blocks in motion) and is
 * then copied.  A key whose value is not exactly want bytes gets
 * KVT_ERANGE with nothing written.  Returns 0 if cb already ran, 1 if it
 * will run later from kvt_tm_dispatch(), or KVT_EINVAL (NULL arguments,
 * cb not called).
 */
int kvt_tm_get_to(struct kvt_tm *tm, struct kvt_tm_xfer *x);

/*
 * Stores each key's value, copied out of its segments by a worker into
 * block memory: once cb runs, the client's memory is free to change.
 * Each key is then stored as by kvt_tm_put() (replacing its old value
 * when its copy is done, not at this call).  Returns as kvt_tm_get_to().
 */
int kvt_tm_put_from(struct kvt_tm *tm, struct kvt_tm_xfer *x);

/*
 * Completion of a drop: status 0 and the number of blocks removed from
 * every tier, or an error (the RAM tiers are dropped even then).
 */
typedef void (*kvt_tm_count_cb)(void *arg, int status, uint64_t count);

/*
 * Removes every block of namespace ns (exactly that namespace) from every
 * tier; blocks of it in motion are not stored.  cb runs exactly once, at
 * once or later from kvt_tm_dispatch() (with L3: after its index commit).
 * With L4, the namespace is dropped there too, in the background (cb does
 * not wait for it; meanwhile no get of ns reads L4), and every other host
 * drops its local copies within about a second.
 * Returns 0 if cb already ran, 1 if it will run later.
 */
int kvt_tm_drop_ns(struct kvt_tm *tm, const uint8_t *ns, size_t ns_len,
		   kvt_tm_count_cb cb, void *arg);

/*
 * One block in a hot report.  name holds ns_len namespace bytes then
 * key_len key bytes.  ctime_s / atime_s are 0 where unknown (blocks only on
 * L3 keep a hit count, not times).
 */
struct kvt_tm_hot {
	uint8_t *name;
	size_t ns_len, key_len;
	uint8_t tier; /* 1, 2 or 3: where the block is now (RAM first) */
	uint64_t size; /* value bytes */
	uint64_t hits; /* gets served over the block's life, all tiers */
	uint64_t ctime_s, atime_s; /* put, last get (now_s clock) */
};

/*
 * The top most-hit blocks, exactly (every block in every tier is looked
 * at: O(blocks), fine for an operator's command).  *out (n items, most hits
 * first) is freed with kvt_tm_hot_free().  Returns 0, KVT_EINVAL, -ENOMEM.
 */
int kvt_tm_hot(struct kvt_tm *tm, size_t top, struct kvt_tm_hot **out,
	       size_t *n);
void kvt_tm_hot_free(struct kvt_tm_hot *v, size_t n);

/* One namespace's share of the cache, over the blocks cached now. */
struct kvt_tm_ns {
	uint8_t ns[255];
	size_t ns_len;
	uint64_t entries; /* blocks, each counted once (RAM first) */
	uint64_t bytes;	  /* value bytes */
	uint64_t hits;	  /* gets served by these blocks over their life */
	uint64_t ram_entries; /* of the entries, those in RAM (L1 or L2) */
	uint64_t l1_entries;  /* of those, in L1 */
};

/* What a bounded namespace report leaves out. */
struct kvt_tm_ns_rest {
	uint64_t namespaces; /* namespaces not listed */
	uint64_t entries, bytes, hits; /* their totals */
};

/* How many namespaces the daemon's report lists. */
#define KVT_TM_NS_TOP 100

/*
 * Per-namespace totals: the `top` namespaces with the most bytes, largest
 * first, and the totals of all the others in *rest (may be NULL).  Every
 * tier keeps its totals per namespace as blocks come and go, so this costs
 * O(namespaces), never O(blocks): the daemon calls it on its event loop.
 * A block in two tiers is counted once (kvt_tm_report.c says how
 * exactly).  *out (n <= top items) is freed with free().  Returns 0,
 * KVT_EINVAL, -ENOMEM.
 */
int kvt_tm_ns_stats(struct kvt_tm *tm, size_t top, struct kvt_tm_ns **out,
		    size_t *n, struct kvt_tm_ns_rest *rest);

/* The manager's clock (seconds since the epoch unless a test fakes it). */
uint64_t kvt_tm_now_s(struct kvt_tm *tm);

/*
 * Starts moving k up to L1 in the background, if it is in a lower tier and
 * not already on its way; returns at once: 1 if a promotion started, 0 if
 * there was nothing to do (in L1 already, moving, or absent), or an error.
 * With L4, a key in no local tier is fetched from L4 (1: whether L4 has it
 * is known only later).
 * The first get that then finds it in L1 counts as a prefetch hit.  A
 * prefetched block always enters L1 (the admission rule of gets does not
 * apply), also when a get's read of it is already under way.
 */
int kvt_tm_prefetch(struct kvt_tm *tm, const struct kvt_key *k);

/*
 * Pins k in RAM: while pinned, its L1 entry is never evicted (and a new
 * value of k, or k coming back up, is pinned too).  Pins count: each
 * kvt_tm_pin() needs its kvt_tm_unpin() (the daemon pins per connection
 * and unpins when it closes).  Returns 0 (pinned, in L1), 1 (pinned, on its
 * way up from a lower tier), KVT_ENOTFOUND (not cached), KVT_ETOOBIG (it
 * would take the pinned bytes over pin_max), -ENOMEM.
 */
int kvt_tm_pin(struct kvt_tm *tm, const struct kvt_key *k);
/* Drops one pin of k.  Returns 0 or KVT_ENOTFOUND (k was not pinned). */
int kvt_tm_unpin(struct kvt_tm *tm, const struct kvt_key *k);

/*
 * Removes k from every tier.  Returns 0 or KVT_ENOTFOUND (not cached
 * here).  With L4, L4's copy is deleted too, in the background; meanwhile
 * no get of k reads L4.
 */
int kvt_tm_del(struct kvt_tm *tm, const struct kvt_key *k);

/*
 * MATCH: counts the leading keys of keys[0..n) that are present, stopping
 * at the first absent one (the blocks of a prefix: nothing after a gap is
 * usable).  Like kvt_tm_exists() it promotes nothing.  The keys are read
 * during the call only.  With L4, the keys after the local run are probed
 * in L4 (a key counts if it is here or there); cb(arg, 0, count) runs
 * exactly once, at once (0 returned) or later from kvt_tm_dispatch() (1
 * returned).  An L4 that fails counts as absent.  Returns 0, 1, or
 * KVT_EINVAL (cb NULL; else cb got it).
 */
int kvt_tm_match(struct kvt_tm *tm, const struct kvt_key *keys, size_t n,
		 kvt_tm_count_cb cb, void *arg);

/*
 * Waits up to timeout_ms for L4's first slot-map load, made by an L4
 * thread at open, and returns its result: 0 (the cluster answered),
 * -EINPROGRESS (still trying), a kvt_l4_refresh() error, or KVT_EINVAL
 * (no L4).  For the daemon's start-up log; blocks the caller.
 */
int kvt_tm_l4_wait_ready(struct kvt_tm *tm, unsigned timeout_ms);

/* Returns 1 if k is present (in any tier, not expired), else 0. */
int kvt_tm_exists(struct kvt_tm *tm, const struct kvt_key *k);

/*
 * The shared block arena, or NULL if none was asked for or it could not be
 * created (then *err, if err is not NULL, gets why: -errno or KVT_EBUSY
 * when another manager holds the process's arena; else 0).
 */
struct kvt_arena *kvt_tm_arena(struct kvt_tm *tm, int *err);

/*
 * Work off the event loop.  With L2 or L3 enabled a pool of worker threads
 * (kvt_tm_config.workers) compresses, decompresses and does disk I/O; the
 * results are applied on the loop thread by kvt_tm_dispatch().
 * kvt_tm_event_fd() returns a file descriptor that becomes readable (an
 * eventfd: read 8 bytes to reset it) whenever results are waiting, or -1
 * if every operation completes at once (L1 only).  Call kvt_tm_dispatch()
 * after it fires; it runs get callbacks.
 */
int kvt_tm_event_fd(struct kvt_tm *tm);
void kvt_tm_dispatch(struct kvt_tm *tm);

/*
 * Returns 1 while more than transit_max bytes are on their way down (the
 * workers are behind the writers), else 0.  The daemon then holds back
 * requests that add data (PUT) until it returns 0 again after a dispatch;
 * reads go on.  Victims beyond twice transit_max are dropped and counted
 * (demotions_dropped) as a last resort to bound memory.
 */
int kvt_tm_busy(struct kvt_tm *tm);

/* Changes the L3 write budget (bytes/s, 0 = unlimited) while running. */
void kvt_tm_set_l3_write_rate(struct kvt_tm *tm, uint64_t rate);

/* What a graceful spill did (kvt_tm_spill()). */
struct kvt_tm_spill_stats {
	uint64_t queued;     /* blocks taken from L1 and L2 */
	uint64_t written;    /* of which now on L3: written, or already there */
	uint64_t lost;       /* of which L3 refused (a full or failing disk) */
	uint64_t unfinished; /* worker jobs still running at the timeout */
};

/*
 * Graceful stop: moves everything in L1 and L2 down to L3 (blocks already
 * on L3 cost nothing), waiting at most timeout_ms for the writes.  Fills
 * *st (may be NULL) and returns the number of blocks written or already
 * safe on L3 (st->written), or KVT_EINVAL if L3 is disabled.  Blocks whose
 * write had not finished at the timeout are in neither count but in
 * st->unfinished.  The manager stays usable.
 */
int kvt_tm_spill(struct kvt_tm *tm, unsigned timeout_ms,
		 struct kvt_tm_spill_stats *st);

/*
 * fsck of L3: verifies the index against the region files; writes one line
 * per problem and a summary to report.  Returns 0 if consistent, the number
 * of problems, or a negative error.
 */
int kvt_tm_check(struct kvt_tm *tm, FILE *report);

/*
 * `kvtierd --check`: verifies the L3 store under data_dir without opening
 * a manager and without changing anything (kvt_l3_config.read_only: the
 * store's own geometry, LMDB read-only, nothing dropped, created or
 * preallocated).  Writes one line per problem and a summary to report.
 * Returns 0 if consistent, the number of problems, or a negative error if
 * the store could not be checked (KVT_ENOTFOUND: there is none; KVT_EBUSY:
 * a daemon has it open; -EUCLEAN: its index is damaged; with a reason in
 * errmsg).
 */
int kvt_tm_check_store(const char *data_dir, FILE *report, char *errmsg,
		       size_t errmsg_len);

/* Fills *st with a consistent snapshot of the counters. */
void kvt_tm_stats(struct kvt_tm *tm, struct kvt_tm_stats *st);

#endif /* KVT_TM_H */
