/*
 * kvt_l4.h - L4, the shared tier: blocks kept in a Redis Cluster that every
 * kvtierd of a deployment reads and writes.
 *
 * Overview
 * --------
 * One host's RAM and SSD serve one host; L4 lets a block computed on any
 * host be fetched by every other.  The cluster is one operators already run
 * (Redis 7 or Valkey in cluster mode), reached with hiredis for connections
 * and reply parsing; routing is ours (no cluster client is packaged): keys
 * map to the cluster's 16384 hash slots by CRC16 (kvt_l4_crc16(),
 * kvt_l4_key_slot()), the slot map comes from CLUSTER SLOTS at the first
 * call and again after a MOVED redirect or a node failure, ASK redirects are
 * followed with ASKING, and every batch is split by node and pipelined on
 * all nodes at once (one round trip per batch when the map is right).
 *
 * L4 stores opaque payloads: the tier manager hands it a block's compressed
 * frame as the L2 codec made it (kvt_codec.h) with its codec id, dtype and
 * raw (decompressed) length, and gets the same back.  L4 never compresses.
 *
 * Keys
 * ----
 *   N = the first 16 bytes of SHA-256("kvtier-l4-ns" || u8 ns_len || ns)
 *   K = the first 16 bytes of SHA-256("kvtier-l4-key" || u8 ns_len || ns
 *                                      || key)
 *   block of (ns, key):        "kvt:" hex(N) ":" hex(K)    (69 bytes)
 *   generation of namespace:   "kvt:" hex(N) ":gen"        (40 bytes)
 * hex is lower case.  A namespace's blocks share the "kvt:<N>:" prefix, so
 * an operator can find them (SCAN MATCH), and contain no '{', so no hash tag
 * pins them together: CRC16 of the whole name spreads them over all slots.
 * SHA-256 rather than a fast hash because the cluster is shared: a client
 * must not be able to craft a key that lands on another one's block.
 *
 * Value
 * -----
 * A stored value is a 72-byte header (little endian) then the payload:
 *    0 u32 magic "KVL4"     4 u16 version (1)   6 u8 codec   7 u8 dtype
 *    8 u64 raw_len         16 u64 payload_len   24 u64 generation
 *   32 u8[16] N            48 u8[16] K          64 u64 checksum
 * checksum = XXH3-64 of the payload seeded with XXH3-64 of header bytes
 * 0..63.  A read checks the magic, the version, the codec (known to this
 * build), N and K against the key asked for, payload_len against the value's
 * length (exactly: a truncated or extended value is refused) and the
 * checksum.  Anything else -- a value another program wrote, a truncated
 * value, a flipped bit -- is a miss counted as corrupt, never served.
 *
 * Generations (DROP without SCAN)
 * -------------------------------
 * Each namespace has one small key in the cluster holding its generation, a
 * positive integer.  A block's header carries the generation it was written
 * under, and a block is served only if that equals the namespace's current
 * generation.  DROP is INCR of the generation key: every block of the
 * namespace, on every node, becomes a miss at once, and Redis evicts or
 * expires the dead values later.  A generation key is created with a random
 * value in [2^32, 2^62) (SET NX) the first time a namespace is written or
 * dropped, never from 0, so that if the key is ever lost (an evicting
 * maxmemory policy, a failover that lost a write) the next one starts
 * elsewhere and the old blocks stay misses instead of coming back.  A reader
 * fetches the generation in the same pipelined round as the blocks (the key
 * is one more GET on whichever node holds it), so checking it costs no round
 * trip.  A missing generation key means no block of the namespace is valid;
 * so does one holding anything but a positive integer (another program's
 * value), which the next put or drop replaces with a new generation.
 *
 * Other hosts may hold local copies (L1-L3) of blocks they fetched.  L4
 * remembers the generation of every namespace it has served, written or
 * been told to watch (kvt_l4_watch()); kvt_l4_poll_gens() re-reads them all
 * in one round and reports each namespace whose generation changed since the
 * last report, which the manager turns into a local drop.  A host's own
 * kvt_l4_drop_batch() is not reported back to it.
 *
 * Threading
 * ---------
 * Calls block (bounded by the timeouts below) and are made from the tier
 * manager's worker threads, never from the event loop.  A struct kvt_l4 is
 * shared by all threads; each thread creates its own struct kvt_l4_session
 * (kvt_l4_session_new()) and passes it to every call: a session owns one
 * connection per node and its buffers, so threads never wait for each
 * other's I/O and a session is used by one thread at a time.  What all
 * sessions share lives in the struct kvt_l4 under one mutex, held only for
 * lookups and updates, never across I/O: the slot map (one refresh serves
 * every thread), node health (after a failure a node is not tried again by
 * any thread until its backoff expires: calls for its slots fail at once),
 * the generation table and the counters.  kvt_l4_stats() and kvt_l4_watch()
 * may be called from any thread.
 *
 * Failures
 * --------
 * A slow or dead cluster costs L4 hits and nothing else: a node that makes
 * no progress for timeout_ms (connect_timeout_ms while connecting) has its
 * connection closed and its commands failed with -ETIMEDOUT; after any
 * failure the node is backed off (backoff_min_ms, doubling up to
 * backoff_max_ms) and calls for its slots fail with -EHOSTDOWN without I/O
 * until then; the slot map is refreshed (at most once per refresh_min_ms
 * over all threads) so that a replica promoted after a failover is found,
 * and a command that failed on a node the refresh shows replaced is sent
 * once more to the new owner within the same call.  Host names are
 * resolved (getaddrinfo, blocking) by each connect: give addresses where
 * name resolution may be slow.
 *
 * Errors
 * ------
 * Functions return 0 or a negative code, KVT_E* (kvtier_errors.h) or -errno;
 * kvt_strerror() describes either.  Per-key statuses of the batch calls:
 *   0                 done (a get: a hit)
 *   KVT_ENOTFOUND     a get missed (see kvt_l4_block.miss) / a del found
 *                     nothing
 *   -ETIMEDOUT        the node made no progress within the timeout
 *   -EHOSTDOWN        the node failed recently and is backed off: no I/O
 *   -EHOSTUNREACH     no node is known for the key's slot
 *   -ECONNREFUSED, -ECONNRESET, -EPIPE, ...   connect or socket errors
 *   -ELOOP            more than max_redirects MOVED/ASK redirects
 *   KVT_EDENIED       the node refused our AUTH or wants one (NOAUTH)
 *   KVT_ESERVER       the node answered with another error (CLUSTERDOWN,
 *                     OOM, LOADING, ...)
 *   KVT_EPROTO        the node's reply was not what the command returns
 *   KVT_ETOOBIG       (put) the value would exceed KVT_L4_VALUE_MAX
 *   -ENOMEM
 */
#ifndef KVT_L4_H
#define KVT_L4_H

#include <stddef.h>
#include <stdint.h>

#include "kvt_tier.h" /* struct kvt_key: only read during a call */

/* Longest namespace and key L4 accepts (as L3 and the protocol). */
#define KVT_L4_NS_MAX 255
#define KVT_L4_KEY_MAX 65535
/* Bytes of the stored header in front of every payload. */
#define KVT_L4_HDR_SIZE 72
/* Bytes of a namespace or key digest (N and K above). */
#define KVT_L4_DIGEST_SIZE 16
/* Room for a block or generation key name with its NUL. */
#define KVT_L4_NAME_MAX 72
/* Longest stored value: Redis's default proto-max-bulk-len, 512 MiB. */
#define KVT_L4_VALUE_MAX ((uint64_t)512 << 20)
/* Hash slots of a Redis Cluster. */
#define KVT_L4_SLOTS 16384
/* Most seed addresses in a URL. */
#define KVT_L4_SEEDS_MAX 64

struct kvt_l4;	       /* shared handle (opaque) */
struct kvt_l4_session; /* one thread's connections (opaque) */

/* A namespace; only read during the call. */
struct kvt_l4_ns {
	const uint8_t *ns;
	size_t ns_len;
};

struct kvt_l4_config {
	/*
	 * "redis-cluster://HOST:PORT[,HOST:PORT...]": seed nodes (any nodes of
	 * the cluster; the rest are learnt from CLUSTER SLOTS).  HOST is a
	 * name, an IPv4 address or an IPv6 address in brackets ([::1]:7000).
	 */
	const char *url;
	/* AUTH password (NULL: none). */
	const char *password;
	/*
	 * File whose first line is the password (read at open; the newline is
	 * not part of it).  At most one of password and password_file.
	 */
	const char *password_file;
	/* Expiry of stored blocks in seconds (SET ... EX); 0 = none. */
	uint32_t ttl_s;
	/* Most ms to establish a connection; 0 = 500. */
	unsigned connect_timeout_ms;
	/*
	 * A node that accepts no request bytes and returns no reply bytes for
	 * this many ms while commands are outstanding fails them; 0 = 1000.
	 * (An inactivity bound, not a bound on the whole call, so that a
	 * batch of large blocks on a busy link is not cut short.)
	 */
	unsigned timeout_ms;
	/* Backoff of a failed node: first wait, and the doubling's cap; 0 =
	 * 100 and 5000 ms. */
	unsigned backoff_min_ms, backoff_max_ms;
	/* Fewest ms between two slot-map refreshes (all threads); 0 = 200. */
	unsigned refresh_min_ms;
	/* Most MOVED/ASK redirects followed per key and call; 0 = 5. */
	unsigned max_redirects;
	/* Namespaces whose generation is remembered; 0 = 4096 (least recently
	 * used forgotten first). */
	unsigned watch_max;
	/*
	 * Tests only: never send CLUSTER SLOTS; a key whose slot has no known
	 * node goes to a seed, and the map is learnt from MOVED redirects.
	 */
	int no_refresh;
	/* Filled with a one-line reason when kvt_l4_open() fails; may be NULL. */
	char *errmsg;
	size_t errmsg_len;
};

/* Why a get missed (kvt_l4_block.miss). */
enum kvt_l4_miss {
	KVT_L4_HIT = 0,
	KVT_L4_MISS_ABSENT = 1,	 /* no value under the key */
	KVT_L4_MISS_STALE = 2,	 /* written under an older generation (DROP) */
	KVT_L4_MISS_CORRUPT = 3, /* not a valid kvtier value for this key */
};

/* One result of kvt_l4_get_batch(). */
struct kvt_l4_block {
	/* 0 (hit), KVT_ENOTFOUND (miss: see miss), or an error (Errors). */
	int status;
	uint8_t miss;	/* enum kvt_l4_miss */
	uint8_t codec;	/* enum kvt_codec of the payload */
	uint8_t dtype;	/* enum kvt_dtype the block was put with */
	uint64_t raw_len; /* the block's decompressed length */
	uint64_t gen;	/* generation it was written under */
	/*
	 * On a hit: mem is a malloc() allocation of mem_size bytes owned by
	 * the caller (free() it or kvt_l4_block_release()), holding the payload
	 * at data[0..len).  NULL/0 otherwise.
	 */
	void *mem;
	size_t mem_size;
	const uint8_t *data;
	size_t len;
};

/* One block for kvt_l4_put_batch(); only read during the call. */
struct kvt_l4_put {
	struct kvt_key k;
	const uint8_t *data; /* payload (compressed frame), len bytes */
	size_t len;
	uint8_t codec, dtype;
	uint64_t raw_len;
	/* Expiry in seconds, 0 = the config's ttl_s; the shorter of the two
	 * applies when both are set. */
	uint32_t ttl_s;
};

/* Operations with a latency histogram. */
enum kvt_l4_op {
	KVT_L4_OP_GET,
	KVT_L4_OP_PUT,
	KVT_L4_OP_DEL,
	KVT_L4_OP_DROP,
	KVT_L4_OP_GEN, /* kvt_l4_gen_batch() and kvt_l4_poll_gens() */
	KVT_L4_OP_PROBE,
	KVT_L4_OP_COUNT
};

/* Latency of one operation's calls (whole batch calls, not keys). */
struct kvt_l4_op_stats {
	uint64_t calls, keys;
	uint64_t p50_us, p99_us; /* 0 when no call yet; within 12.5% */
};

struct kvt_l4_stats {
	uint64_t hits;
	uint64_t misses; /* = absent + stale + corrupt */
	uint64_t misses_absent, misses_stale, misses_corrupt;
	uint64_t probes_found; /* probed keys present and current */
	uint64_t puts;	   /* blocks stored */
	uint64_t dels;	   /* blocks deleted (found) */
	uint64_t drops;	   /* namespaces dropped */
	uint64_t bytes_in; /* bytes read from the cluster's sockets */
	uint64_t bytes_out; /* bytes written to them */
	/* Keys (blocks, namespaces) whose status was an error. */
	uint64_t errors;
	/* Connections closed for making no progress (each fails all of its
	 * commands with -ETIMEDOUT). */
	uint64_t timeouts;
	/* Commands (a block's or a generation's) failed with -EHOSTDOWN
	 * without I/O: their node was backed off. */
	uint64_t fast_fails;
	uint64_t redirects;  /* MOVED + ASK replies followed */
	uint64_t moved, ask;
	uint64_t connects;   /* connections established */
	uint64_t reconnects; /* of which to a node this session had lost */
	uint64_t refreshes;  /* slot maps installed from CLUSTER SLOTS */
	uint64_t gen_changes; /* generation changes reported by polls */
	uint64_t nodes;	     /* nodes known (seeds and masters seen) */
	uint64_t slots_mapped; /* slots with a known master */
	struct kvt_l4_op_stats op[KVT_L4_OP_COUNT];
};

/*
 * Creates the shared handle: parses the URL, reads the password file, and
 * knows the seeds.  No I/O: the cluster may be down when the daemon starts
 * (kvt_l4_refresh() from a worker reports whether it is reachable).
 * On success stores the handle in *out and returns 0.
 * Errors: KVT_EINVAL (NULL argument, bad URL, both password and
 * password_file, empty password file; errmsg says which), -errno reading the
 * password file, -ENOMEM.  Not thread safe with itself; the result is.
 */
int kvt_l4_open(struct kvt_l4 **out, const struct kvt_l4_config *cfg);

/*
 * Frees the handle.  Every session must have been freed first (asserted).
 * NULL is accepted and ignored.
 */
void kvt_l4_close(struct kvt_l4 *l4);

/*
 * Creates a session for the calling thread (connections are opened lazily,
 * by the first call that needs a node).  Returns 0 and *out, KVT_EINVAL,
 * -ENOMEM.  Any thread; the session is then used by one thread at a time.
 */
int kvt_l4_session_new(struct kvt_l4 *l4, struct kvt_l4_session **out);

/* Closes the session's connections and frees it.  NULL is ignored. */
void kvt_l4_session_free(struct kvt_l4_session *s);

/*
 * Loads the slot map now (CLUSTER SLOTS from the first node that answers,
 * seeds and known masters in turn, skipping backed-off nodes), whatever the
 * refresh rate limit.  Calls refresh by themselves when needed; this is for
 * a daemon that wants to log at start whether the cluster is reachable.
 * Returns 0 (map installed), or the error of the last node tried (Errors),
 * -EHOSTUNREACH when every node is backed off, KVT_EPROTO for a reply that
 * is not a slot map.  With no_refresh: 0 at once.
 */
int kvt_l4_refresh(struct kvt_l4_session *s);

/*
 * Fetches n blocks and the generations of their namespaces in one round
 * (more only for redirects).  out[i] receives key i's result (see struct
 * kvt_l4_block); a hit hands its memory to the caller.  Duplicate keys are
 * fetched once per occurrence.
 * Returns 0 when the call ran (each key's status in out[i].status),
 * KVT_EINVAL (NULL with n > 0, a namespace or key too long; nothing is
 * fetched), or -ENOMEM (then no out[i] owns memory).
 */
int kvt_l4_get_batch(struct kvt_l4_session *s, const struct kvt_key *keys,
		     size_t n, struct kvt_l4_block *out);

/*
 * Whether n blocks are there, without fetching them: reads each one's header
 * (GETRANGE of its first KVT_L4_HDR_SIZE bytes) and its namespace's
 * generation in one round, for MATCH and PREFETCH, which want the longest
 * present run of an ordered key list before paying for the bytes.
 * status[i]: 0 (a well-formed header of this key under the current
 * generation), KVT_ENOTFOUND (absent, stale, or not a kvtier header), or an
 * error.  The payload and its checksum are not read: a block probed present
 * may still be a corrupt miss for the get that follows.  Probes count in
 * probes_found and the PROBE latency, not in hits and misses.
 * Returns 0 when the call ran, KVT_EINVAL, -ENOMEM.
 */
int kvt_l4_probe_batch(struct kvt_l4_session *s, const struct kvt_key *keys,
		       size_t n, int *status);

/* Frees a hit's memory and clears mem/data.  NULL or no memory: no-op. */
void kvt_l4_block_release(struct kvt_l4_block *b);

/*
 * Stores n blocks (SET, with EX when a TTL applies), replacing what was
 * there, under their namespaces' current generations.  A namespace's
 * generation is taken from the generation table when it was read in the last
 * second, else read first (one more round; the key is created if absent), so
 * puts usually cost one round.  A block written under a generation that a
 * concurrent DROP has just passed is merely a miss later.  The payloads are
 * sent from the caller's buffers (not copied), which must stay unchanged
 * during the call.  status[i] receives item i's status: 0 or an error
 * (KVT_ETOOBIG, Errors).
 * Returns 0 when the call ran, KVT_EINVAL (NULL argument with n > 0, a
 * namespace or key too long, an unknown codec), -ENOMEM (nothing stored).
 */
int kvt_l4_put_batch(struct kvt_l4_session *s, const struct kvt_l4_put *items,
		     size_t n, int *status);

/*
 * Deletes n blocks.  status[i]: 0 (deleted), KVT_ENOTFOUND (nothing there),
 * or an error.  Returns 0 when the call ran, KVT_EINVAL, -ENOMEM.
 */
int kvt_l4_del_batch(struct kvt_l4_session *s, const struct kvt_key *keys,
		     size_t n, int *status);

/*
 * Drops n namespaces: increments each one's generation (creating it if
 * absent), so that every block of it on every node is a miss from now on.
 * gen[i] (may be NULL) receives the new generation, status[i] 0 or an error.
 * The new generation is recorded as already reported, so this host's polls
 * do not report its own drop.  Returns 0 when the call ran, KVT_EINVAL,
 * -ENOMEM.
 */
int kvt_l4_drop_batch(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		      size_t n, uint64_t *gen, int *status);

/*
 * Reads the current generations of n namespaces.  gen[i] receives it (0 when
 * the namespace has no generation key), status[i] 0, KVT_ENOTFOUND (no
 * key), KVT_ECORRUPT (the key holds something else than a generation), or
 * an error.  Namespaces read
 * are remembered (as by kvt_l4_watch()).  Returns 0 when the call ran,
 * KVT_EINVAL, -ENOMEM.
 */
int kvt_l4_gen_batch(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		     size_t n, uint64_t *gen, int *status);

/*
 * Adds a namespace to the generation table without I/O (its generation is
 * read by the next poll, which takes it as the baseline).  The manager calls
 * it for namespaces it holds locally but has not fetched from L4, so that a
 * peer's DROP of them is reported too.  Returns 0, KVT_EINVAL (ns_len over
 * KVT_L4_NS_MAX, NULL with ns_len > 0), -ENOMEM.  Any thread.
 */
int kvt_l4_watch(struct kvt_l4 *l4, const uint8_t *ns, size_t ns_len);

/*
 * A generation change: namespace ns (ns_len bytes, valid during the call)
 * went from old_gen to new_gen (0: the key is gone).  Called by
 * kvt_l4_poll_gens() on its thread with no lock held.
 */
typedef void (*kvt_l4_gen_cb)(void *arg, const uint8_t *ns, size_t ns_len,
			      uint64_t old_gen, uint64_t new_gen);

/*
 * Reads the generation of every remembered namespace in one round, then
 * calls cb once for each namespace whose generation differs from the one
 * last reported (changes seen by gets and puts in between count too; a
 * namespace seen for the first time only sets its baseline).  Meant to be
 * called about once a second from a worker.  A namespace whose read failed
 * keeps its previous value and is tried again by the next poll.
 * Returns the number of changes reported (>= 0), KVT_EINVAL (s or cb NULL),
 * -ENOMEM.
 */
int kvt_l4_poll_gens(struct kvt_l4_session *s, kvt_l4_gen_cb cb, void *arg);

/* Fills *st with the counters (each read atomically).  Any thread. */
void kvt_l4_stats(struct kvt_l4 *l4, struct kvt_l4_stats *st);

/* ---- pure functions: no I/O, no state, any thread ---------------------- */

/* CRC16 as Redis Cluster uses it (XMODEM: poly 0x1021, init 0, no
 * reflection, no final xor).  "123456789" gives 0x31C3. */
uint16_t kvt_l4_crc16(const void *buf, size_t len);

/*
 * Hash slot (0..16383) of a key name: CRC16 of the whole name mod 16384,
 * unless it contains a '{' followed later by a '}' with at least one byte
 * between them: then of the bytes between the first '{' and the first '}'
 * after it.
 */
unsigned kvt_l4_key_slot(const void *name, size_t len);

/*
 * Writes the block key name of k ("kvt:<N>:<K>") and its NUL to out; returns
 * its length (69).  k's lengths must be within the limits (asserted).
 */
size_t kvt_l4_block_name(const struct kvt_key *k,
			 char out[KVT_L4_NAME_MAX]);

/* Writes the generation key name of ns ("kvt:<N>:gen"); returns 40. */
size_t kvt_l4_gen_name(const uint8_t *ns, size_t ns_len,
		       char out[KVT_L4_NAME_MAX]);

/*
 * Fills hdr with the stored header of a block of k: payload[0..len) written
 * under generation gen, with its codec, dtype and raw length (the checksum
 * covers the payload, so it is read once here).  The stored value is hdr
 * followed by the payload.
 */
void kvt_l4_value_header(uint8_t hdr[KVT_L4_HDR_SIZE],
			 const struct kvt_key *k, uint64_t gen,
			 uint8_t codec, uint8_t dtype, uint64_t raw_len,
			 const uint8_t *payload, size_t len);

/* What kvt_l4_value_check() found in a valid value. */
struct kvt_l4_value_info {
	uint8_t codec, dtype;
	uint64_t raw_len, gen;
	size_t payload_len; /* the payload is at value + KVT_L4_HDR_SIZE */
};

/*
 * Checks that v[0..len) is a valid stored value of key k (the Value rules
 * above) and fills *info.  Returns 0 or KVT_ECORRUPT (info untouched).
 * Reads v only.
 */
int kvt_l4_value_check(const uint8_t *v, size_t len,
		       const struct kvt_key *k,
		       struct kvt_l4_value_info *info);

#endif /* KVT_L4_H */
