/*
 * kvt_l3.h - L3, the SSD tier: an LMDB index over preallocated region files.
 *
 * Overview
 * --------
 * L3 keeps blocks (normally the zstd frames L2 demotes) on local disk so that
 * they survive L1/L2 eviction and daemon restarts.  Everything lives under
 * <dir>/l3/:
 *
 *   region-00000.dat ...  preallocated (fallocate) region files holding the
 *                         block bytes, written in large appends and read with
 *                         io_uring, with O_DIRECT where the filesystem has it;
 *   index/                an LMDB environment holding only the index
 *                         (key -> region, generation, offset, length, codec,
 *                         dtype, raw length, checksum, expiry, hits), the
 *                         per-region state (generation, FIFO sequence, fill)
 *                         and the format metadata;
 *   lock                  flock()ed while a handle is open, so that two
 *                         processes never write the same store.
 *
 * Values never go into LMDB: LMDB is good at small records and bad at large
 * values (they would force copy-on-write of megabytes per update).
 *
 * On-disk entry (format 2)
 * ------------------------
 * Each block is stored as one entry that starts at a KVT_L3_ALIGN (4096)
 * aligned offset of its region and is padded to a multiple of it, so that
 * it can be read with O_DIRECT.  The value comes first, so that reading a
 * value is one read of the value's own extent (its length rounded up to
 * 4096) at the entry's offset: a 2 MiB value is one 2 MiB read, straight
 * into the caller's buffer.  The header, namespace and key follow it:
 *
 *   offset 0            value (data_len bytes)
 *   offset data_len     header, 64 bytes, little endian:
 *     +0  u32 magic "KVL3"     +4  u16 format version (2)
 *     +6  u8  codec            +7  u8  dtype
 *     +8  u32 ns_len           +12 u32 key_len
 *     +16 u64 raw_len          +24 u64 data_len
 *     +32 u64 generation       +40 u64 offset of the entry in its region
 *     +48 u32 region           +52 u32 reserved (0)
 *     +56 u64 checksum
 *   offset data_len + 64          namespace (ns_len bytes)
 *   offset data_len + 64 + ns_len key (key_len bytes)
 *   zero padding to the entry's length,
 *     round_up(data_len + 64 + ns_len + key_len, 4096).
 *
 * The checksum is XXH3-64 over header bytes 0..55 (all but the checksum),
 * namespace, key and value, in that order, so it binds the value to its
 * namespace, key, region, offset, generation, lengths, codec and dtype.
 * The index record keeps a copy of it and everything else the header
 * holds.  A read reads the value's extent alone and checks its checksum,
 * computed from the index record and the namespace and key asked for:
 * bytes of another entry, of an earlier generation of the region, or read
 * from the wrong place fail, are treated as corruption (KVT_ECORRUPT, the
 * index entry is removed, checksum_failures counted) and never returned.
 * kvt_l3_check() reads whole entries and also checks each header, its
 * namespace and key against the index.
 *
 * A store in another format (format 1 kept the header, namespace and key
 * before the value) is refused at open (KVT_EVERSION) and left untouched.
 *
 * Ordering and crashes
 * --------------------
 * kvt_l3_put_batch() appends the batch to the head region, fdatasync()s the
 * region file(s) and only then commits all of the batch's index entries in
 * one LMDB transaction.  A crash at any point therefore leaves an index that
 * points only at bytes that reached the disk; bytes written after the last
 * committed entry are simply overwritten later.  All accounting (entries,
 * bytes, per-region fill, head region and write offset, FIFO order) is
 * rebuilt at open from committed LMDB state, never from counters kept
 * elsewhere.
 *
 * Eviction
 * --------
 * Regions are filled one after another.  When the head region is full the
 * next free region becomes the head; when none is free (L3 is full) the
 * oldest region (FIFO) is reclaimed: one transaction removes every index
 * entry that points at it and bumps its generation, then it is reused.  Index
 * entries carry their region's generation, so an entry that somehow outlived
 * its region is detected and dropped.  Replacing or deleting a key leaves its
 * old bytes as dead space until their region is reclaimed (dead_bytes).
 *
 * Threading
 * ---------
 * Readers: kvt_l3_read_batch() may run on any number of threads at once,
 * each with its own struct kvt_l3_reader (kvt_l3_reader_open()), and at
 * the same time as the writer.  kvt_l3_state(), kvt_l3_contains(),
 * kvt_l3_foreach() and kvt_l3_stats() may be called from any thread at any
 * time (they use an in-memory mirror of the index guarded by a mutex).
 *
 * The writer: kvt_l3_put_batch(), kvt_l3_del(), kvt_l3_drop_ns() and
 * kvt_l3_check() are meant to be called from one thread at a time (the
 * tier manager's write lane, which also keeps their order); L3 serializes
 * them with a lock of its own anyway, so calls from several threads are
 * safe, only not ordered.
 *
 * Reads against the writer: a region is never overwritten while a read of
 * an entry in it is in flight.  A reclaim first takes the region's entries
 * out of the index and the mirror (no new read can find them), then waits
 * for the reads already in flight there to finish, then writes.  So a
 * concurrent reclaim, delete or replacement can make a read miss
 * (KVT_ENOTFOUND) or return the value as it was when the read began, never
 * bytes of another entry and never KVT_ECORRUPT for an intact disk.  Entries
 * a read finds corrupt or expired are hidden at once and removed from the
 * index by the writer (right away when it is idle, else at its next call).
 *
 * No call ever holds an LMDB transaction across disk I/O.
 *
 * Errors
 * ------
 * Functions return 0 or a negative code: KVT_E* (kvtier_errors.h) or -errno.
 * kvt_strerror() describes either.
 */
#ifndef KVT_L3_H
#define KVT_L3_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvt_tier.h" /* struct kvt_key */

/* Entries start at and are padded to multiples of this many bytes. */
#define KVT_L3_ALIGN 4096
/* Default region size (kvt_l3_config.region_size == 0). */
#define KVT_L3_REGION_DEFAULT ((uint64_t)64 << 20)
/* Default read queue depth (kvt_l3_config.queue_depth == 0). */
#define KVT_L3_QD_DEFAULT 64
/* Default key limit the index is sized for (kvt_l3_config.key_max == 0). */
#define KVT_L3_KEY_DEFAULT 1024
/* Longest namespace L3 accepts (the protocol's KVT_NS_MAX). */
#define KVT_L3_NS_MAX 255
/* Longest key L3 accepts. */
#define KVT_L3_KEY_MAX 65535

struct kvt_l3; /* opaque handle */

/*
 * Failure injection for tests (SQLite-style).  Point kvt_l3_config.faults at
 * one of these; L3 reads and updates it on every put and read (reads under
 * L3's lock), so a test may change the fields between calls.  Production
 * code leaves the pointer NULL.
 */
struct kvt_l3_faults {
	/*
	 * Counts down on every pwrite() to a region file; the call that brings
	 * it from 1 to 0 fails.  0 = never fail.
	 */
	unsigned write_fail_at;
	/* errno of that failure (e.g. ENOSPC, EIO); 0 means EIO. */
	int write_errno;
	/*
	 * If nonzero, the failing call first writes half of its bytes and
	 * returns a short count; the retry then fails with write_errno.  This
	 * is what a filling disk looks like.
	 */
	int write_short;
	/* If nonzero, the next fdatasync() fails with this errno (one shot). */
	int sync_errno;
	/*
	 * If nonzero, the next put batch writes and syncs its bytes but
	 * returns -EIO instead of committing the index, as if the process had
	 * died between the two (one shot).
	 */
	int skip_commit;
	/* Out: number of region pwrite() calls made (including failed ones). */
	unsigned writes;
	/*
	 * Counts down on every read of a region file (an io_uring read or a
	 * pread(), whichever backend is in use); the read that brings it
	 * from 1 to 0 fails with read_errno (0 means EIO), as the device
	 * would.  0 = never fail.
	 */
	unsigned read_fail_at;
	int read_errno;
	/* Out: number of region reads issued (including failed ones). */
	unsigned reads;
	/*
	 * If set, called (on the reading thread, no lock held) before every
	 * region read is issued, after the entry was looked up: a test can
	 * hold a read in flight there while the writer works.
	 */
	void (*before_read)(void *arg);
	void *before_read_arg;
	/* Out: region offset and bytes of the last region read issued. */
	uint64_t last_read_off, last_read_len;
	/*
	 * If set, called before every region pwrite(), with the writer's lock
	 * held (no other): a test can hold the writer in the middle of a put.
	 */
	void (*before_write)(void *arg);
	void *before_write_arg;
};

/* How L3 reads its region files (kvt_l3_config.io_backend). */
enum kvt_l3_io {
	KVT_L3_IO_AUTO = 0,  /* io_uring if the kernel allows it, else pread */
	KVT_L3_IO_URING = 1, /* io_uring; kvt_l3_open() fails without it */
	KVT_L3_IO_PREAD = 2, /* pread(), never io_uring */
};

/* A block of a region being reclaimed (kvt_l3_config.on_reclaim). */
struct kvt_l3_reclaimed {
	struct kvt_key k;    /* valid during the call */
	uint8_t codec, dtype;
	uint64_t raw_len, expiry;
	const uint8_t *data; /* the stored value, len bytes, during the call */
	size_t len;
};

struct kvt_l3_config {
	/* Data directory; L3 uses (and creates) <dir>/l3/.  Required. */
	const char *dir;
	/*
	 * Bytes of region files, >= 2 * KVT_L3_ALIGN.  The store uses
	 * capacity / region_size regions; if capacity < region_size it uses one
	 * region of capacity bytes (rounded down to KVT_L3_ALIGN).
	 */
	uint64_t capacity;
	/*
	 * Bytes per region, rounded down to KVT_L3_ALIGN; 0 = 64 MiB.  A store
	 * must be reopened with the same effective region size (open fails
	 * with KVT_EINVAL otherwise); the number of regions may change: regions
	 * beyond the new count are dropped, new ones are created.
	 */
	uint64_t region_size;
	/* Read queue depth (I/Os in flight); 0 = KVT_L3_QD_DEFAULT. */
	unsigned queue_depth;
	/*
	 * The longest key clients may store (the daemon's --max-key-size); it
	 * sizes the index.  0 = KVT_L3_KEY_DEFAULT.
	 */
	uint64_t key_max;
	/*
	 * LMDB map size in bytes; 0 = sized so that the store's capacity
	 * filled with entries of the costliest key up to key_max in the
	 * longest namespace fits (kvt_l3_index_size()).  The map grows when
	 * it fills anyway, up to map_max (0 = 4 x map_size); past that, a
	 * full index reclaims regions as full regions do.
	 */
	uint64_t map_size;
	uint64_t map_max;
	/*
	 * Open for checking only (kvt_l3_check()): the store's geometry is
	 * read from the store (capacity and region_size are ignored), nothing
	 * is created, written, dropped or preallocated, LMDB is opened
	 * read-only, records kvt_l3_open() would drop are kept for the check
	 * to report, and the store must exist.  Put, delete and drop fail with
	 * KVT_EINVAL; reads are not available.
	 */
	int read_only;
	/*
	 * Tests only: skip fdatasync() of region files and LMDB commits.
	 * Crash safety is lost; correctness within a process is not.
	 */
	int no_sync;
	/* Tests only: never use O_DIRECT (exercises the buffered path). */
	int no_direct;
	/*
	 * enum kvt_l3_io.  Both backends read every hit of a batch on the
	 * calling thread, with the same O_DIRECT alignment, verification and
	 * error reporting; writes are pwrite() either way.
	 */
	int io_backend;
	/* Tests only: same as io_backend = KVT_L3_IO_PREAD. */
	int no_uring;
	/* Clock for expiry, in seconds since the epoch; NULL = time(). */
	uint64_t (*now_s)(void);
	/* Failure injection, tests only; NULL in production. */
	struct kvt_l3_faults *faults;
	/*
	 * Optional: called for every live entry a full L3 drops when it
	 * reclaims a region (on the thread doing the put, without L3's lock
	 * held), so the caller can remember what was evicted.
	 */
	void (*on_evict)(void *arg, const struct kvt_key *k);
	void *evict_arg;
	/*
	 * Optional: called for every live, unexpired entry of a region about
	 * to be reclaimed, before on_evict and before anything of the region
	 * is removed or overwritten, with the entry read back from disk and
	 * verified (struct kvt_l3_reclaimed), so the caller can keep the
	 * block elsewhere (the manager's L4).  On the thread doing the put,
	 * with the writer's lock held: it must not call L3.  It returns 0 to
	 * be offered the next entry, nonzero to skip the rest of the region
	 * (its queue is full).  Entries that fail to read or verify are
	 * skipped.  Costs a read of the region's live bytes per reclaim.
	 */
	int (*on_reclaim)(void *arg, const struct kvt_l3_reclaimed *b);
	void *reclaim_arg;
	/*
	 * Optional buffer that kvt_l3_open() fills with a one-line reason when
	 * it fails (the daemon logs it): it names the file or folder and,
	 * where there is one, what to do.  errmsg_len includes the NUL.
	 */
	char *errmsg;
	size_t errmsg_len;
	/*
	 * Optional logger: called with one line of key=value fields (no
	 * newline) for what an operator must hear about: failed writes (rate
	 * limited: at most one line a second, with the count of lines left
	 * out), entries dropped at open, the index growing or full.  level is
	 * KVT_L3_LOG_ERROR, _WARN or _INFO.  May be called from any thread
	 * that calls into L3, without L3's locks held.
	 */
	void (*log)(void *arg, int level, const char *line);
	void *log_arg;
};

/* Levels of kvt_l3_config.log (the same numbers as the daemon's). */
enum { KVT_L3_LOG_ERROR = 0, KVT_L3_LOG_WARN = 1, KVT_L3_LOG_INFO = 2 };

/*
 * The index map kvt_l3_open() sizes for a store of capacity bytes whose
 * keys are at most key_max bytes (0: KVT_L3_KEY_DEFAULT): room for the
 * store filled with the entries of the key length (and the namespace
 * length) that costs the most index per byte of region, at half-full
 * B-tree pages, plus a quarter.  Virtual memory and a sparse file: only
 * pages in use cost memory and disk.
 */
uint64_t kvt_l3_index_size(uint64_t capacity, uint64_t key_max);

/*
 * Opens (creating if needed) the store under cfg->dir/l3 and rebuilds the
 * in-memory index from the committed LMDB state.  Index entries that point
 * at a reclaimed generation, at a region beyond the configured count, past
 * their region's committed fill, or that have expired are dropped (and
 * logged, with their number).  Before LMDB maps the index, its file is
 * checked page by page (truncated or damaged files are refused, never
 * crash the process).  A failed open removes the files it created.
 * On success *out is a new handle; on failure *out is NULL and errmsg says
 * why, naming the file.  Returns 0, KVT_EINVAL (bad config, or region size
 * differs from the one the store was created with), KVT_EVERSION (another
 * on-disk format), KVT_EBUSY (another process has the store open),
 * -EUCLEAN (the index file is damaged), KVT_ENOTFOUND (read_only: no
 * store), KVT_ESERVER (LMDB failure), -ENOSPC or -EFBIG (region files
 * cannot be preallocated), -ENOMEM, or another -errno (with io_backend
 * KVT_L3_IO_URING: the errno io_uring_setup failed with).
 */
int kvt_l3_open(struct kvt_l3 **out, const struct kvt_l3_config *cfg);

/*
 * Persists pending hit counts, closes files, LMDB and the ring and frees the
 * handle.  Committed data needs nothing more.  Every reader opened with
 * kvt_l3_reader_open() must be closed first, and no other call may be
 * running.  NULL is accepted.
 */
void kvt_l3_close(struct kvt_l3 *l3);

/*
 * A reader: what one thread needs to read from L3 (its own io_uring ring of
 * kvt_l3_config.queue_depth entries, or the pread() fallback, and scratch
 * reused from batch to batch).  Use one per thread that reads; a reader
 * must not be used by two threads at once.
 */
struct kvt_l3_reader;

/*
 * Opens a reader on l3 (the backend follows kvt_l3_config.io_backend: with
 * KVT_L3_IO_AUTO a refused io_uring falls back to pread()).  Returns 0 and
 * *out, KVT_EINVAL, -ENOMEM, or with KVT_L3_IO_URING the -errno
 * io_uring_setup failed with.  On failure *out is NULL.  Thread safe.
 */
int kvt_l3_reader_open(struct kvt_l3 *l3, struct kvt_l3_reader **out);

/* Closes a reader (not while it is reading).  NULL is accepted. */
void kvt_l3_reader_close(struct kvt_l3_reader *r);

/* One block to store.  L3 copies everything; nothing is kept after the call. */
struct kvt_l3_item {
	struct kvt_key k;
	const uint8_t *data;
	size_t len;
	uint8_t codec;    /* opaque to L3 (e.g. which compressor L2 used) */
	uint8_t dtype;    /* opaque to L3 */
	uint64_t raw_len; /* length before encoding; opaque, reported as raw_bytes */
	uint64_t expiry;  /* absolute seconds (cfg->now_s clock), 0 = never */
};

/*
 * Stores n items.  The bytes of all items are appended to region files and
 * synced, then all index entries are committed in one transaction: either
 * every item is indexed or (on error) none is, except in one case: a batch
 * too large to fit in the store without reclaiming a region it has itself
 * written to is committed in parts, and a failure then keeps the parts
 * already committed.  A key already present is replaced (the later of two
 * equal keys in one batch wins).  Moving to a full region reclaims the
 * oldest region first; that reclaim stands even if the batch later fails.
 * Returns 0 or: KVT_EINVAL (NULL arguments), KVT_ETOOBIG (namespace over
 * KVT_L3_NS_MAX or key over KVT_L3_KEY_MAX bytes), KVT_ENOSPACE (an entry is
 * larger than a region), -ENOSPC / -EIO / other -errno (writing or syncing a
 * region failed; counted in write_errors and logged), KVT_ESERVER (the LMDB
 * commit failed), -ENOMEM, KVT_EINVAL on a read-only handle.  A full index
 * is not an error: the map grows, or the oldest regions are reclaimed
 * (index_full).  After any error the store is consistent and later calls
 * may succeed.
 */
int kvt_l3_put_batch(struct kvt_l3 *l3, const struct kvt_l3_item *items,
		     size_t n);

/*
 * One lookup in a read batch.  Fill in k and, optionally, buf/buf_cap;
 * everything else is output.
 */
struct kvt_l3_read {
	struct kvt_key k; /* in */
	/*
	 * In, optional: a destination buffer the caller owns (and may reuse
	 * across batches) that receives the value itself, at buf[0].  When
	 * it is aligned to KVT_L3_ALIGN (e.g. posix_memalign()) and holds
	 * kvt_l3_read_size() bytes, the value is read straight into it (the
	 * bytes after the value up to that size are clobbered); aligned and
	 * holding at least the value's length, it is read into it too, the
	 * last sector through a bounce sector of the reader; unaligned and
	 * holding the value, L3 reads into memory of its own and copies.
	 * Otherwise (too small, or NULL) L3 allocates.  Reusing buffers
	 * avoids the page faults and page zeroing of fresh multi-megabyte
	 * allocations, which cost more than the reads themselves.  Nothing
	 * is written past buf_cap; on a miss or error the contents are
	 * unspecified.
	 */
	uint8_t *buf;
	size_t buf_cap;
	/*
	 * Out: 0 (hit), KVT_ENOTFOUND (absent or expired), KVT_ECORRUPT (the
	 * stored entry failed verification and was removed), KVT_ETOOBIG (key
	 * too long to be stored), -ENOMEM, or -errno of a failed read (the
	 * entry is kept; the disk may recover).
	 */
	int status;
	/*
	 * Out, on a hit: data points at len bytes of value: buf when buf was
	 * used (then mem is NULL), else mem, a malloc-compatible allocation
	 * the caller must free().  On a miss or error mem and data are NULL.
	 */
	uint8_t *mem;
	const uint8_t *data;
	size_t len;
	uint8_t codec, dtype;      /* out, as stored */
	uint64_t raw_len, expiry;  /* out, as stored */
};

/*
 * Bytes a caller-supplied kvt_l3_read.buf needs to be read into directly
 * for a value of len bytes: len rounded up to KVT_L3_ALIGN (the value's
 * extent; ns_len and key_len no longer matter, see "On-disk entry").
 */
size_t kvt_l3_read_size(size_t ns_len, size_t key_len, size_t len);

/*
 * Looks up n keys and reads all hits concurrently (up to the queue depth in
 * flight, through reader r's io_uring ring; pread() where io_uring is
 * unavailable), on the calling thread.  r NULL uses the tier's own reader,
 * which serves one call at a time (others wait for it).  Each read's status
 * says how it went; entries found corrupt or expired are removed from the
 * index (see Threading).  Hits increment the entry's hit count (persisted
 * with the next put or at close).  Returns 0 when every read has a status,
 * KVT_EINVAL for NULL arguments or a reader of another store, or -ENOMEM
 * (no status filled in; nothing returned).  Thread safe with distinct
 * readers.
 */
int kvt_l3_read_batch(struct kvt_l3 *l3, struct kvt_l3_reader *r,
		      struct kvt_l3_read *reads, size_t n);

/* Returns 1 if k is indexed and live, 2 if indexed but expired, else 0.
 * Thread safe. */
int kvt_l3_state(struct kvt_l3 *l3, const struct kvt_key *k);

/* Returns 1 if k is indexed and not expired, else 0.  Thread safe. */
int kvt_l3_contains(struct kvt_l3 *l3, const struct kvt_key *k);

/*
 * Removes k from the index (its bytes become dead space).  A full index
 * does not make it fail (room is kept for deletes, and a region is
 * reclaimed if need be).  Returns 0, KVT_ENOTFOUND, KVT_EINVAL (also on a
 * read-only handle), KVT_ESERVER or -errno (the commit failed, e.g. the
 * disk: k is still stored).
 */
int kvt_l3_del(struct kvt_l3 *l3, const struct kvt_key *k);

/*
 * Removes every entry of namespace ns (exactly that namespace) in one
 * transaction -- or, when the index map is too full for one that large, in
 * several, each freeing room for the next; *dropped (may be NULL) gets how
 * many.  Takes time in the namespace's entries, not the store's.  Returns
 * 0, KVT_EINVAL (also on a read-only handle), KVT_ESERVER or -errno (a
 * commit failed: what was committed before it stays removed), -ENOMEM.
 */
int kvt_l3_drop_ns(struct kvt_l3 *l3, const uint8_t *ns, size_t ns_len,
		   uint64_t *dropped);

/*
 * Calls fn for every live entry, under the store's lock (so fn must be
 * quick and must not call into L3); stops early if fn returns nonzero and
 * returns that value.  Thread safe, like kvt_l3_contains().  For reports
 * such as `kvtier hot`.
 */
typedef int (*kvt_l3_visit_fn)(void *arg, const struct kvt_key *k,
			       uint64_t raw_len, uint64_t hits);
int kvt_l3_foreach(struct kvt_l3 *l3, kvt_l3_visit_fn fn, void *arg);

/*
 * Totals of one namespace (kvt_l3_ns_foreach(), kvt_l3_ns_get()), kept as
 * entries come and go, so reading them never visits entries.  Like
 * kvt_l3_stats, they count every indexed entry, including expired ones
 * not removed yet.
 */
struct kvt_l3_ns_stats {
	const uint8_t *ns; /* valid during the callback only */
	size_t ns_len;
	uint64_t entries;   /* indexed entries */
	uint64_t bytes;     /* their on-disk bytes */
	uint64_t raw_bytes; /* sum of their raw_len */
	uint64_t hits;      /* their hit counts (persisted and since open) */
};

/*
 * Calls fn for every namespace that has entries, with its totals, under
 * the store's lock (fn must be quick and must not call into L3); stops
 * early if fn returns nonzero and returns that value.  O(namespaces), never
 * O(entries).  Thread safe.  Returns 0, fn's value, or KVT_EINVAL.
 */
typedef int (*kvt_l3_ns_fn)(void *arg, const struct kvt_l3_ns_stats *ns);
int kvt_l3_ns_foreach(struct kvt_l3 *l3, kvt_l3_ns_fn fn, void *arg);

/*
 * The totals of namespace ns into *st (st->ns is ns).  O(1).  Thread safe.
 * Returns 0, KVT_ENOTFOUND (no entry in ns; *st zeroed) or KVT_EINVAL.
 */
int kvt_l3_ns_get(struct kvt_l3 *l3, const uint8_t *ns, size_t ns_len,
		  struct kvt_l3_ns_stats *st);

struct kvt_l3_stats {
	uint64_t entries;           /* live (indexed) entries */
	uint64_t bytes;             /* on-disk bytes of live entries */
	uint64_t raw_bytes;         /* sum of raw_len of live entries */
	uint64_t capacity_bytes;    /* regions * region_size */
	uint64_t hits;              /* successful reads since open */
	uint64_t bytes_read;        /* bytes read from region files since open */
	uint64_t bytes_written;     /* bytes written to region files since open */
	uint64_t reads_inflight;    /* reads submitted and not yet completed */
	uint64_t checksum_failures; /* entries that failed verification */
	uint64_t regions_reclaimed; /* FIFO reclaims since open */
	uint64_t write_errors;      /* failed put batches (write/sync/commit) */
	uint64_t dead_bytes;        /* written bytes of replaced/deleted entries */
	uint64_t regions;           /* number of region files */
	uint64_t namespaces;        /* namespaces with entries */
	uint64_t index_bytes;       /* LMDB pages in use (data.mdb) */
	uint64_t index_map_bytes;   /* the LMDB map now (grows when full) */
	uint64_t index_full;        /* regions reclaimed for the index's room */
	uint64_t index_grown;       /* times the map grew since open */
	uint64_t region_size;       /* bytes per region */
	int direct_io;              /* 1 if region I/O uses O_DIRECT */
	int uring;                  /* 1 if reads go through io_uring */
};

/* Fills *st with a consistent snapshot.  Thread safe. */
void kvt_l3_stats(struct kvt_l3 *l3, struct kvt_l3_stats *st);

/*
 * fsck: judges every LMDB index record as kvt_l3_open() would (on a handle
 * opened read_only, what an open would drop is reported instead: a problem,
 * except expired entries, which are counted), compares the index with the
 * in-memory mirror, re-reads and verifies every indexed entry (header,
 * namespace, key and checksum), checks that entries do not overlap or
 * extend past their region's fill, that region files are there and whole,
 * and that the counters and per-namespace totals match a recount.  Changes
 * nothing.  Writes a line with the store's geometry, one line per problem
 * and a summary ("N entries (X expired, not dropped), P problem(s)") to
 * report when it is not NULL.  Returns 0 if consistent, the number of
 * problems found, or a negative error if the check itself could not run
 * (-ENOMEM, KVT_ESERVER).
 */
int kvt_l3_check(struct kvt_l3 *l3, FILE *report);

#endif /* KVT_L3_H */
