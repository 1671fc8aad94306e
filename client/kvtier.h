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
 * REGISTERED MEMORY AND JOBS
 *
 * An inference engine keeps its host-side K/V in one large pool; it can
 * let the daemon map that pool and move values straight into and out of
 * it, whatever the engine's uid: kvt_register() passes a descriptor of
 * the pool's file (a memfd, a file in /dev/shm) and gets a region id, and
 * kvt_mget_to() / kvt_mput_from() name, per key, the segments (region,
 * offset, length) whose concatenation is its value.  Only keys and segment
 * lists travel on the socket; the daemon's worker threads copy,
 * decompress or read from SSD straight into the segments, and a put is
 * copied out before its reply.  The daemon sees only the memory it was
 * given; unlike shared memory above, no trust is needed.  For example,
 * with an SGLang-style pool of pages whose K and V halves lie apart:
 *
 *	int fd = memfd_create("pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
 *	ftruncate(fd, pool_bytes);
 *	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);       // its pages cannot go
 *	uint8_t *pool = mmap(NULL, pool_bytes, PROT_READ | PROT_WRITE,
 *			     MAP_SHARED, fd, 0);
 *	struct kvt_region reg;
 *	kvt_register(c, fd, 0, 0, 0, &reg);           // 0: the whole file
 *	struct kvt_seg segs[2] = {
 *		{ reg.id, k_off(page), half }, { reg.id, v_off(page), half } };
 *	size_t nseg = 2, len;
 *	int st;
 *	kvt_mget_to(c, "llama3-8b/tp0", &key, &key_len, 1, segs, &nseg,
 *		    &len, &st);                        // st 0: page filled
 *
 * Jobs.  kvt_submit_mget_to() and kvt_submit_mput_from() send a batch and
 * return a job id at once; many jobs may be in flight on one connection.
 * kvt_poll() collects finished jobs (their per-key results are written
 * into the caller's arrays), and kvt_poll_fd() is a descriptor for the
 * caller's event loop, readable while there is something to collect.
 * The synchronous calls stay usable while jobs are in flight: replies come
 * in order, so a synchronous call first reads the replies of the jobs
 * before it (they are then reported by the next kvt_poll()).
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
 * Calls block until the daemon answers; there are no timeouts (but
 * kvt_poll()'s).  Jobs follow the same rule: submits and kvt_poll() are
 * calls on the handle like any other, so a program that submits from one
 * thread and collects from another shares the handle under a lock of its
 * own; kvt_poll_fd() may be waited on by any thread without the lock.
 *
 * A connection belongs to the process that made it.  In a child after
 * fork() (or any other copy of the process, such as a multiprocessing
 * worker) every call on an inherited handle fails with KVT_EFORKED before
 * anything is sent: parent and child share the socket, and their requests
 * would interleave and each read the other's replies.  The child connects
 * its own handles; kvt_close() of an inherited one there closes only the
 * child's descriptor and mapping, leaving the parent's connection alone.
 * Jobs in flight and registered regions stay the parent's: the child
 * registers its own memory on its own connection.
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
 * Registered memory: the daemon reads and writes the caller's own memory.
 * (See REGISTERED MEMORY AND JOBS above.)
 */

/* A region of the caller's memory the daemon has mapped. */
struct kvt_region {
	uint32_t id;	 /* names it in struct kvt_seg; never 0 */
	uint32_t flags;	 /* KVT_REGION_READONLY, KVT_REGION_SEALED */
	uint64_t length; /* bytes mapped */
};

/*
 * kvt_register - lets the daemon map length bytes at offset of the file
 * behind fd (a memfd, or a file in /dev/shm or on hugetlbfs), so that
 * kvt_mget_to() and kvt_mput_from() move values straight into and out of
 * that memory: only keys and segment lists travel on the socket, and the
 * daemon's workers do the copies.  Whatever the caller's uid.
 *
 * fd:      any mmap-able descriptor of a memory-backed file; the library
 *          passes a copy (SCM_RIGHTS), the caller keeps its own.  The
 *          daemon maps it MAP_SHARED and closes its copy: the mapping lives
 *          until kvt_unregister() or kvt_close(), and until the transfers
 *          using it end.
 * offset:  where the region starts in the file (any byte).
 * length:  its bytes; 0 = from offset to the file's end as it is now.
 * flags:   0, or KVT_REGION_READONLY: the daemon maps it read-only (needed
 *          for a file open read-only or sealed against writing), so it
 *          can only be the source of kvt_mput_from().
 * region:  receives the region (its id, flags, the length mapped);
 *          KVT_REGION_SEALED in flags says the file is sealed against
 *          shrinking, so no transfer into it can fail for that reason.
 *
 * Prefer a memfd sealed against shrinking (F_SEAL_SHRINK): then the
 * region's pages cannot disappear.  Other files work too: if the caller
 * shrinks one while the daemon copies into it, the daemon contains the
 * fault, that transfer's keys fail with KVT_EFAULT, the region is broken
 * (later transfers naming it fail with KVT_EFAULT until it is unregistered
 * and the memory registered again) and the daemon serves on.
 *
 * Returns 0, or:
 *   KVT_EINVAL    c or region is NULL, fd is negative, flags has a bit
 *                 other than KVT_REGION_READONLY (nothing sent)
 *   KVT_EDENIED   the file is not memory-backed (a regular file on disk, a
 *                 pipe...), or cannot be mapped as asked (open read-only
 *                 or sealed against writing: register it read-only)
 *   KVT_EBADREQ   offset and length lie past the end of the file, or the
 *                 range is empty
 *   KVT_ETOOBIG   the connection has as many regions (kvtierd --reg-max)
 *                 or bytes registered (--reg-max-bytes) as it may
 *   -errno        the daemon's fstat() or mmap() failed (e.g. -ENOMEM)
 *   KVT_ECLOSED or another connection error
 */
int kvt_register(kvt_client *c, int fd, uint64_t offset, uint64_t length,
		 uint32_t flags, struct kvt_region *region);

/*
 * kvt_unregister - ends a region.  Transfers still using it finish first;
 * its id is invalid at once.  Returns 0, KVT_ENOTFOUND (no such region on
 * this connection), KVT_EINVAL (c NULL or id 0), or a connection error.
 */
int kvt_unregister(kvt_client *c, uint32_t id);

/*
 * One piece of a value: len bytes at offset in region (a kvt_region.id).
 * A value is the concatenation of its key's segments: an SGLang MHA page
 * is two (its K half and its V half, far apart in the pool), an MLA page
 * one, a layer_first page 2 x layers.
 */
struct kvt_seg {
	uint32_t region;
	uint64_t offset;
	uint64_t len;
};

/*
 * kvt_mget_to - reads n values of ns into registered memory: key i's value
 * fills the nsegs[i] segments that follow key i-1's in segs (segs holds
 * nsegs[0] + ... + nsegs[n-1] entries, key by key).  Nothing is copied by
 * the library; the daemon's workers write the bytes (an L1 block by
 * memcpy, an L2 frame decompressed straight into the segments, an L3
 * block read, verified and placed).
 *
 * statuses[i]: 0 (a hit: the value filled its segments exactly),
 *   KVT_ENOTFOUND (a miss), KVT_ERANGE (the value is val_lens[i] bytes,
 *   not the sum of the segments' lengths: nothing written),
 *   KVT_EFAULT (the region failed during the copy: the client shrank its
 *   file; the segments may be partly written), or another error of the
 *   daemon for that key.
 * val_lens[i]: the value's length (hit and KVT_ERANGE), else 0.  May be
 *   NULL.
 *
 * Any n: the library splits a batch into requests of at most
 * KVT_XFER_KEYS_MAX keys and KVT_XFER_SEGS_MAX segments, pipelined.
 * Keys and segments are only read during the call.
 *
 * Returns 0 when the daemon answered for every key, or:
 *   KVT_EINVAL    a NULL argument (keys, key_lens, nsegs, statuses with
 *                 n > 0; segs with segments), a key NULL or empty, more
 *                 than KVT_XFER_KEY_SEGS_MAX segments for a key, region
 *                 0, ns longer than 255 bytes (nothing sent)
 *   KVT_ETOOBIG   a key or ns over the daemon's limits (nothing sent)
 *   KVT_EBADREQ   the daemon refused a request as a whole: a segment names
 *                 no region of this connection, lies outside its region,
 *                 or (kvt_mget_to) is in a read-only region
 *   KVT_EFAULT    a segment is in a region broken by an earlier fault
 *   KVT_EDENIED   ns is bound to another user (kvtierd --ns-owner)
 *   KVT_ECLOSED or another connection error
 * and then every key of the refused requests has that code as its status
 * (keys of other requests of the batch keep their own results).
 */
int kvt_mget_to(kvt_client *c, const char *ns, const void *const *keys,
		const size_t *key_lens, size_t n, const struct kvt_seg *segs,
		const size_t *nsegs, size_t *val_lens, int *statuses);

/*
 * kvt_mput_from - stores n values of ns, key i's value being its segments
 * of registered memory, concatenated (as kvt_mget_to()).  The daemon's
 * workers copy each value into the daemon's memory before the reply: once
 * this returns, the caller may change its memory.  opts (NULL = defaults)
 * applies to every value.  statuses[i]: 0 (stored), KVT_EFAULT, or
 * another error for that key (KVT_ENOSPACE: larger than the cache can
 * hold).  Returns as kvt_mget_to(), plus KVT_ETOOBIG for a value (the sum
 * of its segments) over the daemon's max_value, and KVT_EINVAL for a bad
 * opts->dtype (nothing sent).  A region registered read-only is fine
 * here.  A request pipelined behind it on the same connection may not see
 * the values yet: they are stored as their copies complete, before the
 * reply.
 */
int kvt_mput_from(kvt_client *c, const char *ns, const void *const *keys,
		  const size_t *key_lens, size_t n, const struct kvt_seg *segs,
		  const size_t *nsegs, const struct kvt_put_opts *opts,
		  int *statuses);

/*
 * kvt_submit_mget_to, kvt_submit_mput_from - the same as a job: send the
 * batch and return at once with its id in *job (never 0); the daemon works
 * on it while the caller goes on, and kvt_poll() reports it done.  Any
 * number of jobs may be in flight on one connection; they complete in the
 * order they were submitted.  keys, key_lens, segs, nsegs and opts are
 * only read during the call; statuses and val_lens are written when the
 * job's reply arrives, so they must stay valid (and untouched) until
 * kvt_poll() has reported the job, or kvt_close().  A submit returns once
 * the batch is written to the socket: that may wait while the daemon
 * reads it, never for the transfer itself (replies that arrive meanwhile
 * are collected).  Errors: those detected before sending (KVT_EINVAL,
 * KVT_ETOOBIG; nothing sent, no job), or a connection error.  The daemon's
 * answer, refusals included, comes with the job.
 */
int kvt_submit_mget_to(kvt_client *c, const char *ns,
		       const void *const *keys, const size_t *key_lens,
		       size_t n, const struct kvt_seg *segs,
		       const size_t *nsegs, size_t *val_lens, int *statuses,
		       uint64_t *job);
int kvt_submit_mput_from(kvt_client *c, const char *ns,
			 const void *const *keys, const size_t *key_lens,
			 size_t n, const struct kvt_seg *segs,
			 const size_t *nsegs, const struct kvt_put_opts *opts,
			 int *statuses, uint64_t *job);

/* A job kvt_poll() reports done. */
struct kvt_job_done {
	uint64_t job;
	/*
	 * 0: every key has its result in the statuses (and val_lens) given
	 * at submit.  Else what kvt_mget_to() would have returned (a refusal
	 * of the daemon, a connection error), which the keys concerned carry
	 * as their status.
	 */
	int status;
};

/*
 * kvt_poll - collects finished jobs: up to cap of them into done[0..*n),
 * oldest first.  Waits up to timeout_ms milliseconds (-1: as long as it
 * takes, 0: not at all) for one to finish if none has; returns at once
 * with *n = 0 if no job is in flight.  A job reported here is forgotten
 * by the library (its arrays are the caller's again).
 *
 * Returns 0 (also when nothing finished in time), KVT_EINVAL (c, done or n
 * NULL, or cap 0), KVT_ECLOSED when the connection is broken and no job is
 * left to report (a connection error ends the jobs in flight: they are
 * reported with it), or a misuse error.
 */
int kvt_poll(kvt_client *c, int timeout_ms, struct kvt_job_done *done,
	     size_t cap, size_t *n);

/*
 * kvt_poll_fd - a descriptor for the caller's poll()/epoll/select(): it is
 * readable exactly while kvt_poll() has something to collect or to read
 * (a reply arriving, or a finished job already read by another call on c,
 * such as a synchronous one that collected earlier replies first), and
 * not readable once every finished job has been collected.  Never read it:
 * call kvt_poll(c, 0, ...).  It belongs to c (closed by kvt_close()); the
 * same one every time.  Returns the descriptor, or KVT_EINVAL, a misuse
 * error, or -errno (-EMFILE...) if it cannot be made.
 */
int kvt_poll_fd(kvt_client *c);

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
