/*
 * kvtier.h - libkvtier, the client library of the kvtier KV-cache daemon.
 *
 * This header is the library's manual.
 *
 * OVERVIEW
 *
 * kvtierd keeps byte values (typically serialized attention K/V blocks of
 * 64 KiB to 32 MiB) under binary keys, in RAM and on SSD, and shares them
 * between the processes of one host.  libkvtier talks to it over a Unix
 * socket.  A typical session:
 *
 *	kvt_client *c;
 *	int rc = kvt_connect(&c, NULL);            // default socket
 *	if (rc < 0) {
 *		fprintf(stderr, "kvtier: %s\n", kvt_client_errmsg(NULL));
 *		return -1;
 *	}
 *	rc = kvt_put(c, "llama3-8b", key, 32, block, block_len, NULL);
 *	...
 *	size_t n;
 *	rc = kvt_get(c, "llama3-8b", key, 32, buf, buf_cap, &n);
 *	if (rc == 0)
 *		use(buf, n);                       // a hit
 *	else if (rc == KVT_ENOTFOUND)
 *		recompute();                       // a miss
 *	else
 *		fprintf(stderr, "kvtier: %s\n", kvt_client_errmsg(c));
 *	kvt_close(c);
 *
 * CONNECTING
 *
 * kvt_connect() opens a connection and performs the HELLO handshake, in
 * which client and daemon check that they speak the same protocol version
 * and the daemon reports its limits (longest key and namespace, largest
 * value).  Arguments that break those limits are refused by the library
 * before anything is sent.  With a NULL socket path the library uses the
 * same default as the daemon: $KVTIER_SOCKET if set, else
 * $XDG_RUNTIME_DIR/kvtier.sock, else /tmp/kvtier-$UID.sock.
 *
 * KEYS, NAMESPACES AND VALUES
 *
 * A key is 1 to max_key bytes of any content (binary keys such as SHA-256
 * digests are the norm).  A namespace is a NUL-terminated string of at most
 * 255 bytes (the daemon may allow fewer); NULL means the empty namespace.
 * The same key in two namespaces names two entries.  A value is 0 or more
 * bytes, at most the daemon's max_value (256 MiB by default).
 *
 * PUT AND GET
 *
 * kvt_put() stores a value, replacing any previous value of the key.  The
 * value is sent straight from the caller's memory (no copy).  kvt_get()
 * receives a value straight into a caller buffer; kvt_get_alloc() returns a
 * malloc()ed copy.  Either may miss (KVT_ENOTFOUND): the daemon is a cache
 * and may evict any entry at any time, so a miss is a normal outcome that
 * callers must handle, not a failure.
 *
 * SHARED MEMORY
 *
 * When the daemon trusts the connecting process (same user, root, or its
 * shm-allow-uid list), kvt_connect() maps the daemon's block arena, a memfd
 * it passes over the socket, and large values (at least the daemon's
 * shm-threshold, 64 KiB by default) stop going through the socket: a get is
 * one memcpy from the daemon's memory into the caller's buffer, a put (of
 * at least 256 KiB, where saving the copy outweighs a second round trip)
 * one memcpy into a slot the daemon hands out.  The daemon keeps the bytes in
 * place while they are copied (a lease, which the library ends with its
 * next request on the connection or at kvt_close()), so a concurrent
 * eviction cannot change them.  Nothing changes for callers:
 * every function returns the same bytes either way.  Anything that fails
 * while setting it up leaves the socket path; KVTIER_SHM=0 in the
 * environment turns it off; kvt_client_shm() tells which path is in use.
 *
 * PREFIX KEYS
 *
 * Inference processes that want to share a prefix cache must name the same
 * block with the same key.  kvt_prefix_keys() derives the key of every
 * complete block of B tokens from the token ids and a namespace (model,
 * dtype, layout): each key is a SHA-256 chained over the whole prefix up
 * to its block, so equal prefixes give equal keys in every process and
 * language (proto/PROTOCOL.md, "Prefix keys", has the scheme and test
 * vectors), and different prefixes do not collide.  It needs no
 * connection.  Store block i under key i; on a later request compute the
 * keys again and fetch the longest run of leading keys that is present.
 *
 * ERRORS
 *
 * Every fallible function returns an int: 0 (or a documented non-negative
 * value) on success, else a negative kvtier code KVT_E* (kvtier_errors.h)
 * or a negative errno value such as -ECONNREFUSED.  kvt_strerror() turns
 * either kind into a static message.  In addition each connection keeps a
 * human-readable message about its last failure, with detail such as sizes
 * or the daemon's own explanation: kvt_client_errmsg().  The library never
 * prints, never aborts, and never raises SIGPIPE: a dead daemon shows up as
 * an error return (KVT_ECLOSED), not as a signal.
 *
 * Errors come in two kinds:
 *
 *   - Request errors leave the connection usable: KVT_ENOTFOUND, KVT_ERANGE,
 *     KVT_EINVAL and KVT_ETOOBIG detected locally, -ENOMEM from
 *     kvt_get_alloc(), and error replies of the daemon (KVT_ETOOBIG,
 *     KVT_ENOSPACE, KVT_EBUSY, KVT_ESERVER, ...).
 *   - Connection errors leave the connection broken: KVT_ECLOSED (the
 *     daemon closed or reset the connection, or died), KVT_EPROTO (a reply
 *     that broke the protocol), and rarer I/O errors (-EIO...).  Every
 *     later call on it fails at once with KVT_ECLOSED; the caller should
 *     kvt_close() it and kvt_connect() again.  Whether a PUT or DEL that
 *     failed this way took effect is unknown.
 *
 * Some daemon error replies end the connection too (a frame larger than the
 * daemon's limits, for example): the call returns the daemon's code and
 * message, and the next call returns KVT_ECLOSED.  A code alone does not
 * always tell the kinds apart (the daemon may answer a request with an
 * errno code such as -ENOSPC and keep the connection, while a failed
 * recv() breaks it): kvt_client_broken() tells.
 *
 *   - Misuse errors, which every call on a handle may return, before
 *     anything is sent (see THREADING): KVT_EFORKED (the handle was made by
 *     another process, this is its child after fork()) and KVT_ECONCURRENT
 *     (another thread is in a call on the handle).
 *
 * MEMORY OWNERSHIP
 *
 * Arguments (namespaces, keys, values, buffers) are only borrowed for the
 * duration of the call.  Memory returned through kvt_get_alloc() and
 * kvt_stats_json() comes from malloc() and belongs to the caller, who
 * releases it with free().  The string from kvt_client_errmsg() belongs to
 * the handle.  A kvt_client belongs to the caller until kvt_close().
 *
 * THREADING
 *
 * One kvt_client per thread: a handle serves one thread at a time (it
 * holds one socket, the replies it is waiting for, and its error message).
 * A call made while another thread is in a call on the same handle fails
 * at once with KVT_ECONCURRENT, without sending anything and without
 * touching the handle, whose message still belongs to the call in
 * progress (kvt_strerror() describes the refusal); the other call goes on
 * unharmed.  (The check is an atomic flag, a few nanoseconds a call.)
 * kvt_close() must not race with a call either: a kvt_close() that finds
 * another thread in a call leaves the handle open (it leaks) rather than
 * free memory that call is using.  Different handles are independent and
 * may be used concurrently from different threads; the library has no
 * global mutable state apart from the per-thread message of a failed
 * kvt_connect() and the process's one mapping of the daemon's arena, which
 * its connections share under a lock.
 * A handle may be handed from one thread to another between calls.
 * Calls block until the daemon answers; there are no timeouts.
 *
 * A connection belongs to the process that made it.  In a child after
 * fork() (or any other copy of the process, such as a multiprocessing
 * worker) every call on an inherited handle fails with KVT_EFORKED before
 * anything is sent: parent and child share the socket, and their requests
 * would interleave and each read the other's replies.  The child connects
 * its own handles; kvt_close() of an inherited one there closes only the
 * child's descriptor and mapping, leaving the parent's connection alone.
 * (The check is a load from a page the kernel clears in a child,
 * MADV_WIPEONFORK; before Linux 4.14 a pthread_atfork() handler instead,
 * which misses children made by _Fork() or a raw clone().)
 *
 * LINKING
 *
 * pkg-config --cflags --libs kvtier, or -lkvtier.  Symbols are versioned
 * (KVTIER_1) and all start with kvt_.
 */
#ifndef KVTIER_H
#define KVTIER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "kvtier_defs.h"
#include "kvtier_errors.h"
#include "kvtier_prefix.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A connection to kvtierd.  Opaque; created by kvt_connect(). */
typedef struct kvt_client kvt_client;

/*
 * Options of kvt_put().  Zero-initialise the struct ("= {0}") and set the
 * fields you need: zero always means the default.
 */
struct kvt_put_opts {
	/*
	 * Time to live in seconds, after which the entry counts as absent.
	 * 0 = no expiry (the entry lives until evicted or deleted).
	 */
	uint32_t ttl_s;
	/*
	 * Element type of the value, a hint that lets the daemon compress it
	 * better (16-bit types are byte-shuffled before zstd).  One of
	 * enum kvt_dtype: 0 none, 1 u8, 2 bf16, 3 fp16, 4 fp32.
	 */
	uint8_t dtype;
};

/*
 * kvt_connect - connects to the daemon.
 *
 * socket_path: path of the daemon's Unix socket, or NULL for the default
 * (see kvt_socket_path_default()).  On success *out is a new handle, to be
 * released with kvt_close(); on failure *out is NULL.  Connecting includes
 * the HELLO handshake, so a success means the daemon answered.
 *
 * Returns 0, or:
 *   KVT_EINVAL        out is NULL or socket_path is empty
 *   KVT_ERANGE        the default socket path is too long for a Unix
 *                     socket address
 *   -ENAMETOOLONG     socket_path is too long for a Unix socket address
 *   -ENOENT           no socket at that path (daemon not started?)
 *   -ECONNREFUSED     a socket file but no daemon listening on it
 *   -EACCES           no permission to use the socket
 *   -ENOMEM, -EMFILE  and other errno values from socket() and connect()
 *   KVT_EVERSION      the daemon speaks another protocol version
 *   KVT_EBUSY         the daemon refused the connection (too many clients)
 *   KVT_ECLOSED       the daemon closed (or reset) the connection during
 *                     the handshake
 *   KVT_EPROTO        the daemon's answer broke the protocol (not kvtierd?)
 *   any other code the daemon answers HELLO with
 *
 * Because there is no handle on failure, the failure's message is kept per
 * thread: kvt_client_errmsg(NULL) returns it until the thread's next
 * kvt_connect().
 */
int kvt_connect(kvt_client **out, const char *socket_path);

/*
 * kvt_close - closes the connection and frees the handle.  c may be NULL.
 * Never fails.  Requests already answered are not affected.  Sends
 * nothing: on a handle inherited across fork() it closes only this
 * process's copy, and the parent's connection is not disturbed.
 */
void kvt_close(kvt_client *c);

/*
 * Returns 1 if c moves large values through shared memory (see SHARED
 * MEMORY above), 0 if everything goes through the socket or c is NULL.
 */
int kvt_client_shm(const kvt_client *c);

/*
 * kvt_client_broken - returns 1 if c can carry no more requests: a
 * connection error broke it (every later call fails with KVT_ECLOSED), it
 * was made by another process (a child after fork(): KVT_EFORKED), or c is
 * NULL; the caller should kvt_close() it and connect again.  Returns 0 if c
 * is usable, also after a request error, whatever its code (for example
 * a daemon's answer -ENOSPC to a kvt_drop()).  Like kvt_client_errmsg(),
 * not while another thread is in a call on c.
 */
int kvt_client_broken(const kvt_client *c);

/*
 * kvt_client_errmsg - a message describing the last failure on c, or "" if
 * no call on c has failed yet.  A call that succeeds does not clear it;
 * check return codes first, then ask for the message.  The string belongs
 * to c and stays valid until the next call on c or kvt_close(c).
 *
 * For c == NULL: the message of the calling thread's last failed
 * kvt_connect() (for example "cannot connect to /run/user/1000/kvtier.sock:
 * Connection refused"), or a fixed message if there was none.  That string
 * stays valid until the thread's next kvt_connect() or its exit.
 *
 * Never returns NULL.
 */
const char *kvt_client_errmsg(const kvt_client *c);

/*
 * kvt_ping - a round trip to the daemon, to check that it is alive.
 *
 * Returns 0, or KVT_EINVAL (c is NULL), KVT_ECLOSED (the connection is
 * closed or was broken by an earlier error), or a connection error
 * (see ERRORS above).
 */
int kvt_ping(kvt_client *c);

/*
 * kvt_put - stores val[0..val_len) under (ns, key), replacing any previous
 * value.
 *
 * ns:   namespace, NUL-terminated, NULL = "".
 * key:  key_len bytes, 1 <= key_len <= the daemon's max_key (1 KiB by
 *       default).
 * val:  val_len bytes; may be NULL when val_len is 0.  Sent without being
 *       copied; must not be modified during the call.
 * opts: NULL for defaults (no TTL, dtype none).
 *
 * Returns 0 once the daemon has stored the value, or:
 *   KVT_EINVAL    c or key is NULL, key_len is 0, val is NULL with
 *                 val_len > 0, ns is longer than 255 bytes, or opts->dtype
 *                 is not an enum kvt_dtype value (nothing sent)
 *   KVT_ETOOBIG   the key, namespace or value exceeds the daemon's limits
 *                 (nothing sent), or the daemon says so
 *   KVT_ENOSPACE  the value is larger than the cache can hold at all
 *   KVT_EBUSY, KVT_EDENIED, KVT_ESERVER  the daemon refused or failed; the
 *                 message tells why
 *   KVT_ECLOSED or another connection error
 */
int kvt_put(kvt_client *c, const char *ns, const void *key, size_t key_len,
	    const void *val, size_t val_len, const struct kvt_put_opts *opts);

/*
 * kvt_get - fetches the value of (ns, key) into buf.
 *
 * ns, key:  as for kvt_put().
 * buf, cap: destination and its capacity in bytes; buf may be NULL when
 *           cap is 0 (a way to learn a value's size, at the price of
 *           transferring it).
 * val_len:  receives the value's length; must not be NULL.
 *
 * The value is received straight into buf, without intermediate copies.
 *
 * Returns:
 *   0              a hit: buf[0..*val_len) holds the value
 *   KVT_ENOTFOUND  a miss (not in the cache, expired or evicted);
 *                  *val_len = 0
 *   KVT_ERANGE     the value is larger than cap: *val_len = its size.  The
 *                  value was read and discarded, so the connection stays
 *                  usable; call again with a larger buffer (the value may
 *                  have changed or gone by then).  buf's content is
 *                  unspecified.
 *   KVT_EINVAL     c, key or val_len is NULL, buf is NULL with cap > 0,
 *                  key_len is 0, ns longer than 255 bytes (nothing sent)
 *   KVT_ETOOBIG    key or namespace exceed the daemon's limits (nothing
 *                  sent)
 *   KVT_ECORRUPT   the stored block failed its checksum and was dropped
 *   KVT_EBUSY, KVT_ESERVER, KVT_ECLOSED or another connection error
 * On every error except KVT_ERANGE, *val_len is 0 (when val_len is not
 * NULL).  On connection errors buf may have been partly written.
 */
int kvt_get(kvt_client *c, const char *ns, const void *key, size_t key_len,
	    void *buf, size_t cap, size_t *val_len);

/*
 * kvt_get_alloc - like kvt_get(), but the value is returned in a buffer
 * from malloc() that the caller must free().
 *
 * On 0, *val points to *val_len bytes (a valid, free()able pointer even
 * for an empty value).  On any error *val is NULL and *val_len is 0.
 *
 * Returns 0, KVT_ENOTFOUND, KVT_EINVAL (also: val or val_len is NULL),
 * KVT_ETOOBIG, -ENOMEM (the value could not be allocated; it was read and
 * discarded and the connection stays usable), or the daemon and connection
 * errors listed for kvt_get().
 */
int kvt_get_alloc(kvt_client *c, const char *ns, const void *key,
		  size_t key_len, void **val, size_t *val_len);

/*
 * kvt_del - removes (ns, key) from every tier.
 *
 * Returns 0 (it was present and is gone), KVT_ENOTFOUND (it was not
 * present), KVT_EINVAL, KVT_ETOOBIG (as for kvt_get()), or a daemon or
 * connection error.
 */
int kvt_del(kvt_client *c, const char *ns, const void *key, size_t key_len);

/*
 * kvt_exists - tells whether (ns, key) is in the cache, without
 * transferring its value and without promoting it between tiers.
 *
 * Returns 1 (present), 0 (absent), or a negative error: KVT_EINVAL,
 * KVT_ETOOBIG (as for kvt_get()), a daemon or a connection error.
 * An entry reported present may still be evicted before a later get.
 */
int kvt_exists(kvt_client *c, const char *ns, const void *key,
	       size_t key_len);

/*
 * kvt_match - counts how many of keys[0..n), in order, are present under
 * ns: the length of the longest run of leading keys in the cache, stopping
 * at the first absent key.  Made for prefix keys (kvt_prefix_keys()): the
 * result is how many blocks of a prompt can be fetched instead of
 * recomputed.  One round trip whatever n; values are neither transferred
 * nor promoted between tiers.
 *
 * ns:       namespace, NUL-terminated, NULL = "".
 * keys:     n pointers to keys, key_lens their lengths (each 1 to the
 *           daemon's max_key bytes); both may be NULL when n is 0.
 * n:        at most KVT_MATCH_KEYS_MAX (4096) keys per call.
 * matched:  receives the count, 0..n; must not be NULL.
 *
 * Returns 0 (*matched set), or:
 *   KVT_EINVAL   c or matched is NULL, keys or key_lens is NULL with n > 0,
 *                a key is NULL or empty, ns is longer than 255 bytes
 *                (nothing sent)
 *   KVT_ETOOBIG  n > 4096, or a key, the namespace or the whole request
 *                exceeds the daemon's limits (nothing sent), or the daemon
 *                says so
 *   -ENOMEM      the request could not be built
 *   KVT_EBUSY, KVT_ESERVER, KVT_ECLOSED or another daemon or connection
 *   error
 * On error *matched is 0 (when matched is not NULL).  Keys reported
 * present may still be evicted before a later get.
 */
int kvt_match(kvt_client *c, const char *ns, const void *const *keys,
	      const size_t *key_lens, size_t n, size_t *matched);

/*
 * kvt_prefetch - asks the daemon to move keys[0..n) of ns up to RAM in the
 * background (from compressed RAM or SSD), and returns at once: call it
 * for the blocks you will read next (the rest of a prefix, the next
 * layers) so that their gets then hit RAM.  *started receives how many
 * moves began (keys already in RAM, already moving or absent start none).
 * Arguments and errors as kvt_match().  `kvtier stats` counts prefetched
 * blocks and the gets that then found them in RAM.
 */
int kvt_prefetch(kvt_client *c, const char *ns, const void *const *keys,
		 const size_t *key_lens, size_t n, size_t *started);

/*
 * kvt_pin - pins keys[0..n) of ns in RAM for as long as this connection
 * is open (or until kvt_unpin()): while pinned, a block is never evicted
 * from L1, e.g. a system prompt a worker is reading layer by layer.  A key
 * below RAM is brought up and pinned when it arrives; a key not cached is
 * skipped.  The daemon releases a connection's pins when it closes, even
 * if the process died.  *pinned receives how many keys are now pinned by
 * this connection.  Errors as kvt_match(), plus KVT_ETOOBIG when pinning
 * more would take pinned RAM over the daemon's --max-pinned (default half
 * of L1) or past 4096 keys on one connection: keys before it stay pinned.
 */
int kvt_pin(kvt_client *c, const char *ns, const void *const *keys,
	    const size_t *key_lens, size_t n, size_t *pinned);

/* kvt_unpin - releases this connection's pins of keys; *unpinned counts. */
int kvt_unpin(kvt_client *c, const char *ns, const void *const *keys,
	      const size_t *key_lens, size_t n, size_t *unpinned);

/*
 * kvt_drop - removes every block of namespace ns (exactly that namespace,
 * NULL or "" = the blocks put without one) from every tier, RAM and SSD:
 * how a worker invalidates a model, a session or a document after it
 * changed.  Returns once L3's index no longer lists them.
 *
 * dropped:  receives how many blocks were removed; may be NULL.
 *
 * Returns 0, or:
 *   KVT_EINVAL   c is NULL, ns is longer than 255 bytes (nothing sent)
 *   KVT_EDENIED  the namespace is bound to another user (--ns-owner)
 *   KVT_ESERVER  L3's index could not be changed (RAM tiers were dropped)
 *   KVT_ECLOSED or another connection error
 */
int kvt_drop(kvt_client *c, const char *ns, uint64_t *dropped);

/*
 * Batches: many blocks per round trip.  kvt_mput() and kvt_mget() pipeline
 * their requests (up to 32 in flight) on the connection, so n blocks cost
 * about one round trip per 32 instead of n, the daemon streams each reply
 * as soon as its block is ready (L3 reads of a batch are issued together),
 * and nothing is buffered whole on either side.
 *
 * Each item has its own result in statuses[i]: 0, or the error a single
 * kvt_put()/kvt_get() would have returned for it (KVT_ENOTFOUND for a
 * miss, KVT_ERANGE for a value larger than its buffer, KVT_EINVAL or
 * KVT_ETOOBIG for a key or value refused before sending...).  The call
 * returns 0 when every item has a result, or a connection error (then
 * items without an answer carry that error too).
 */

/*
 * kvt_mput - stores n blocks under ns: keys[i] (key_lens[i] bytes) gets
 * vals[i] (val_lens[i] bytes).  opts (NULL = defaults) applies to all.
 */
int kvt_mput(kvt_client *c, const char *ns, const void *const *keys,
	     const size_t *key_lens, const void *const *vals,
	     const size_t *val_lens, size_t n, const struct kvt_put_opts *opts,
	     int *statuses);

/*
 * kvt_mget - fetches n blocks under ns, each value straight into its
 * caller-provided buffer bufs[i] (iov_base, iov_len capacity): no copy
 * through the library.  val_lens[i] receives the value's length (on
 * KVT_ERANGE the length it needs; 0 on a miss).
 */
int kvt_mget(kvt_client *c, const char *ns, const void *const *keys,
	     const size_t *key_lens, size_t n, const struct iovec *bufs,
	     size_t *val_lens, int *statuses);

/*
 * kvt_hot - the most-hit blocks, as `kvtier hot` shows them.  Exact: the
 * daemon looks at every block in every tier.  Blocks of namespaces bound to
 * other users (kvtierd --ns-owner) are left out.
 */
struct kvt_hot_entry {
	const char *ns;	    /* namespace, NUL-terminated ("" = none) */
	const uint8_t *key; /* key bytes (not NUL-terminated) */
	size_t key_len;
	int tier;	    /* where it is now: 1 RAM, 2 compressed RAM, 3 SSD */
	uint64_t size;	    /* value bytes */
	uint64_t hits;	    /* gets served over the block's life */
	int64_t age_s;	    /* seconds since it was put; -1 if unknown */
	int64_t idle_s;	    /* seconds since its last get; -1 if never/unknown */
};

/*
 * top:      1 to 1000 blocks, most hits first.
 * entries:  receives an array of *n entries in one allocation (strings
 *           included), to be freed with kvt_hot_free(); NULL if *n is 0.
 *
 * Returns 0, or KVT_EINVAL (bad argument, nothing sent), -ENOMEM,
 * KVT_EPROTO (malformed reply), or a daemon or connection error.
 */
int kvt_hot(kvt_client *c, unsigned top, struct kvt_hot_entry **entries,
	    size_t *n);

/* Frees what kvt_hot() returned.  NULL ok. */
void kvt_hot_free(struct kvt_hot_entry *entries);

/*
 * kvt_stats_json - fetches the daemon's counters as one JSON object: per
 * tier ("l1", "l2", "l3") entries, bytes, raw_bytes, capacity_bytes, hits;
 * top level gets, puts, dels, misses, promotions, demotions, evictions,
 * uptime_s, version and more (see `kvtier stats --json`).  Fields may be
 * added in later versions.
 *
 * On 0, *json is a malloc()ed, NUL-terminated string the caller free()s,
 * and *len (if len is not NULL) its length without the NUL.  On error
 * *json is NULL.
 *
 * Returns 0, KVT_EINVAL (c or json is NULL), -ENOMEM, or a daemon or
 * connection error.
 */
int kvt_stats_json(kvt_client *c, char **json, size_t *len);

/*
 * kvt_socket_path_default - writes the default socket path, the one that
 * kvt_connect(&c, NULL) and kvtierd without --socket use, into buf of
 * capacity cap (NUL-terminated):
 *
 *   1. $KVTIER_SOCKET, if set and non-empty;
 *   2. else $XDG_RUNTIME_DIR/kvtier.sock, if XDG_RUNTIME_DIR is set and
 *      non-empty;
 *   3. else /tmp/kvtier-$UID.sock.
 *
 * 108 bytes are always enough.  Returns 0, KVT_EINVAL (buf is NULL) or
 * KVT_ERANGE (the path does not fit in cap, or is too long for a Unix
 * socket address; buf then holds "").  Reads the environment: do not call
 * it while another thread calls setenv().
 */
int kvt_socket_path_default(char *buf, size_t cap);

/*
 * kvt_prefix_keys() (declared in kvtier_prefix.h, included above) computes
 * the 32-byte prefix key of every complete block of a token sequence,
 * locally: no connection, no I/O, no allocation.
 */

/* kvt_version - the library's version, "0.1.0" (KVT_VERSION_STRING). */
const char *kvt_version(void);

/*
 * kvt_strerror (declared in kvtier_errors.h) - a static message for any
 * code returned by this library, KVT_E* or -errno.  Thread safe.
 */

#ifdef __cplusplus
}
#endif
#endif /* KVTIER_H */
