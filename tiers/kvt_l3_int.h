/*
 * kvt_l3_int.h - internals shared by the files of the L3 tier.
 *
 * Not a public header: only tiers/kvt_l3*.c include it.  kvt_l3.h is the
 * manual; kvt_l3.c explains the overall design (mirror, LMDB key encoding,
 * lazy hit counts, who may touch what).  The tier is split by concern:
 *   kvt_l3.c        keys, records, the in-memory mirror and the small calls
 *                   (state, contains, del, drop, foreach, stats);
 *   kvt_l3_open.c   open and close: directories, region files, LMDB,
 *                   rebuilding the mirror from the committed index;
 *   kvt_l3_write.c  the write path: append, sync, commit, FIFO reclaim,
 *                   removals deferred by readers;
 *   kvt_l3_read.c   readers and the read path (io_uring or pread batch
 *                   reads, verification);
 *   kvt_l3_check.c  the consistency checker.
 * Functions shared between them carry the kvt_l3i_ ("internal") prefix.
 *
 * Locks (see kvt_l3.c for the full rules):
 *   wmu   the writer's: held by put_batch, del, drop_ns, check, close and by
 *         a reader that removes entries it found corrupt or expired (that
 *         one only takes it with trylock, so readers never wait for the
 *         writer).  Whoever holds wmu is "the writer": the only thread that
 *         changes the mirror's structure (hash chains, region lists) and
 *         opens LMDB write transactions.
 *   mu    guards the mirror and the counters; readers take it to look up,
 *         the writer to change.  Never held across I/O or an LMDB call.
 */
#ifndef KVT_L3_INT_H
#define KVT_L3_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <liburing.h>
#include <lmdb.h>

#include "kvt_l3.h"
#include "kvt_le.h"

#define L3_MAGIC 0x334c564bu /* "KVL3" read as a little-endian u32 */
/*
 * On-disk format.  1: header, namespace and key before the value (the
 * value at 64 + ns + key bytes into the entry).  2: the value first, at the
 * entry's aligned offset, the header after it (reads of the value alone).
 */
#define L3_VERSION 2u
#define L3_HDR 64u
#define L3_REC 72u           /* fixed part of an LMDB index record */
#define L3_REGREC 24u        /* LMDB "regions" record: gen, seq, fill */
#define L3_IKEY_MAX 512u
#define L3_STAGE_MIN ((size_t)16 << 20)

/*
 * The header of an on-disk entry (kvt_l3.h, "On-disk entry"): L3_HDR bytes
 * right after the value (so at any byte offset: read and written bytewise),
 * little endian, each field at its offset here.  Part of the on-disk format:
 * neither offsets nor widths ever change.  kvt_l3i_hdr_encode() and
 * kvt_l3i_hdr_decode() are the only code that reads or writes them.
 */
enum {
	L3_HDR_MAGIC = 0,       /* u32 L3_MAGIC */
	L3_HDR_VERSION = 4,     /* u16 L3_VERSION */
	L3_HDR_CODEC = 6,       /* u8 */
	L3_HDR_DTYPE = 7,       /* u8 */
	L3_HDR_NS_LEN = 8,      /* u32 */
	L3_HDR_KEY_LEN = 12,    /* u32 */
	L3_HDR_RAW_LEN = 16,    /* u64 */
	L3_HDR_DATA_LEN = 24,   /* u64 */
	L3_HDR_GENERATION = 32, /* u64 */
	L3_HDR_OFFSET = 40,     /* u64: of the entry in its region */
	L3_HDR_REGION = 48,     /* u32 */
	L3_HDR_RESERVED = 52,   /* u32, written 0, not checked */
	L3_HDR_CHECKSUM = 56,   /* u64 */
};
_Static_assert(L3_HDR_CHECKSUM + 8 == L3_HDR, "the header fills L3_HDR bytes");

/* An entry's header, decoded. */
struct l3_hdr {
	uint32_t magic;
	uint16_t version;
	uint8_t codec, dtype;
	uint32_t ns_len, key_len;
	uint64_t raw_len, data_len, generation, offset;
	uint32_t region;
	uint64_t checksum;
};

/* Where an entry lives and what it holds; mirrors one LMDB index record. */
struct l3_loc {
	uint32_t region;
	uint8_t codec, dtype;
	uint64_t generation, offset, length, data_len, raw_len, checksum;
	uint64_t expiry, hits;
};

/* Which of the tier's two entry lists an entry is on (l3_ent.list). */
enum { L3_LIST_NONE = 0, L3_LIST_DIRTY = 1, L3_LIST_DOOMED = 2 };

/*
 * A namespace of the mirror: its live totals, kept as entries are inserted
 * and removed (kvt_l3_ns_foreach() reports them without visiting entries),
 * and its entries.  Freed when no entry refers to it any more (refs counts
 * mirrored entries and those of a put batch about to be).  Under mu.
 */
struct l3_ns {
	struct l3_ns *hnext;
	uint64_t hash;
	uint64_t refs;
	uint64_t entries, bytes, raw_bytes, hits; /* mirrored entries */
	struct l3_ent *ents;                       /* by nprev/nnext */
	uint8_t len;
	uint8_t name[];
};

/*
 * One live entry of the in-memory mirror.  Everything but loc.hits and the
 * list links is written once, before the entry is inserted; loc.hits, list,
 * dprev and dnext change under mu (readers count hits and doom entries).
 * The namespace is not copied into every entry: ns points at it.
 */
struct l3_ent {
	struct l3_ent *hnext;        /* hash chain */
	struct l3_ent *rprev, *rnext; /* entries of the same region */
	struct l3_ent *nprev, *nnext; /* entries of the same namespace */
	/*
	 * The dirty list (unpersisted hits) or the doomed list (found corrupt
	 * or expired by a reader, removal pending): see list.
	 */
	struct l3_ent *dprev, *dnext;
	struct l3_ns *ns;
	uint64_t hash;                /* kvt_l3i_ikey_hash() of its LMDB key */
	struct l3_loc loc;
	/*
	 * L3_LIST_*.  A doomed entry is logically gone: no lookup returns it,
	 * and the writer removes it from the index at its next call.
	 */
	uint8_t list;
	/*
	 * 1 if its LMDB key holds XXH3-128 of the key (a key too long for
	 * LMDB): bytes then starts with those 16 bytes, then the key.
	 */
	uint8_t hashed;
	uint32_t key_len; /* the full key */
	uint8_t bytes[];  /* [16-byte XXH3-128 if hashed] key */
};

static inline const uint8_t *ent_keybytes(const struct l3_ent *e)
{
	return e->bytes + (e->hashed ? 16 : 0);
}

struct l3_region {
	int fd;  /* buffered */
	int dfd; /* O_DIRECT, or -1 */
	uint64_t generation, seq, fill, live;
	struct l3_ent *ents;
	/*
	 * Reads in flight of entries of this region (under mu): taken at
	 * lookup, dropped when the I/O is over.  A reclaim waits for 0 before
	 * it writes into the region.
	 */
	unsigned readers;
	int reclaim_waits; /* the writer sleeps on kvt_l3.rcond for readers */
	/* put_batch scratch: bytes written past fill in this batch */
	uint64_t pend_fill;
	int touched;
};

/* State of one read in a batch (kvt_l3_read.c). */
struct l3_io;

/*
 * A reader (kvt_l3.h): the ring or pread fallback of one thread and its
 * scratch, grown to the largest batch it has read and then reused.
 */
struct kvt_l3_reader {
	struct kvt_l3 *l3;
	struct io_uring ring;
	int have_ring;
	unsigned qd;
	struct l3_io *ios;
	size_t ios_cap;
	size_t *redo, *done; /* qd each */
	/*
	 * Bounce sectors (KVT_L3_ALIGN bytes each, aligned) for the last
	 * sector of values read into a caller's buffer that holds the value
	 * but not its whole last sector.
	 */
	uint8_t *tails;
	size_t ntails;
};

struct kvt_l3 {
	char *root;
	char *dir; /* the data directory (for messages) */
	int read_only; /* opened for kvt_l3_check(): nothing is written */
	uint64_t region_size;
	uint32_t nregions;
	unsigned qd;
	int io_backend; /* enum kvt_l3_io, for readers opened later */
	int no_sync;
	uint64_t (*now_s)(void);
	struct kvt_l3_faults *faults;
	void (*on_evict)(void *arg, const struct kvt_key *k);
	void *evict_arg;
	int (*on_reclaim)(void *arg, const struct kvt_l3_reclaimed *b);
	void *reclaim_arg;
	int short_pending;
	int lockfd;

	MDB_env *env;
	MDB_dbi db_index, db_regions, db_meta;
	size_t maxkey;
	uint64_t map_size, map_max; /* the index map now, and its ceiling */
	int mdb_fd;                 /* data.mdb (LMDB's), for its reserve */

	/* The daemon's logger (kvt_l3_config.log) and its rate limit. */
	void (*log)(void *arg, int level, const char *line);
	void *log_arg;
	uint64_t log_next_ns; /* no write-failure line before this time */
	uint64_t log_dropped; /* write-failure lines not printed since */
	/* What the last failed write was (kvt_l3_write.c logs it). */
	const char *wfail_op;
	int64_t wfail_region; /* -1: the index */

	int direct;

	/* The reader of kvt_l3_read_batch(l3, NULL, ...), one caller at a time. */
	struct kvt_l3_reader *rd0;
	pthread_mutex_t rd0_mu;
	unsigned nreaders; /* readers open (under mu) */

	pthread_mutex_t wmu;  /* the writer's lock (above) */
	pthread_cond_t rcond; /* a region's readers dropped to 0 */

	struct l3_region *regions;
	uint32_t *touched; /* ids of regions touched by the current batch */
	uint32_t ntouched;
	uint32_t head;
	uint64_t max_seq;

	uint8_t *stage;
	size_t stage_cap;
	/* The writer's scratch for snapshots of the dirty and doomed lists. */
	struct l3_snap *snap;
	size_t snap_cap;

	pthread_mutex_t mu;
	/* Below: under mu. */
	struct l3_ent **buckets;
	size_t nbuckets, nents;
	struct l3_ns **nsb; /* namespaces, by hash */
	size_t nnsb, nns;
	size_t nns_live;    /* of them, those with mirrored entries */
	struct l3_ent *dirty;  /* entries with unpersisted hits */
	struct l3_ent *doomed; /* entries readers found corrupt or expired */
	size_t ndoomed;
	uint64_t bytes, raw_bytes, total_fill;
	uint64_t hits, bytes_read, bytes_written, inflight;
	uint64_t csum_fail, reclaimed, write_errors;
	uint64_t index_full, index_grown; /* reclaims for the index; growths */
	uint64_t index_used; /* bytes of index pages, as last measured */
};

/* An entry and a copy of its hit count, taken under mu by the writer. */
struct l3_snap {
	struct l3_ent *e;
	uint64_t hits;
};

/* A key of a request, encoded as its LMDB key. */
struct l3_kenc {
	uint8_t ikey[L3_IKEY_MAX];
	size_t ikey_len;
	int hashed;
	const uint8_t *ns, *key;
	size_t ns_len, key_len;
	uint64_t hash; /* kvt_l3i_ikey_hash(ikey) */
};

/* ---- small arithmetic --------------------------------------------------- */

static inline uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Bytes of an entry on disk: value, header, namespace, key, padding. */
static inline uint64_t entry_size(size_t ns_len, size_t key_len, size_t len)
{
	return round_up((uint64_t)L3_HDR + ns_len + key_len + len, KVT_L3_ALIGN);
}

/* Bytes a read of a value of len bytes reads: its own extent, aligned. */
static inline uint64_t value_extent(uint64_t len)
{
	return round_up(len, KVT_L3_ALIGN);
}

static inline void lock(struct kvt_l3 *l3)
{
	pthread_mutex_lock(&l3->mu);
}

static inline void unlock(struct kvt_l3 *l3)
{
	pthread_mutex_unlock(&l3->mu);
}

/* Same place and contents (hit counts may differ: they are lazy). */
static inline int loc_equal(const struct l3_loc *a, const struct l3_loc *b)
{
	return a->region == b->region && a->codec == b->codec &&
	       a->dtype == b->dtype && a->generation == b->generation &&
	       a->offset == b->offset && a->length == b->length &&
	       a->data_len == b->data_len && a->raw_len == b->raw_len &&
	       a->checksum == b->checksum && a->expiry == b->expiry;
}


/* ---- shared functions --------------------------------------------------- */

/* Levels of kvt_l3_config.log (the daemon's KVT_LOG_* values). */
enum { L3_LOG_ERROR = 0, L3_LOG_WARN = 1, L3_LOG_INFO = 2 };
/* One line to the daemon's log, if it gave a logger. */
void kvt_l3i_log(struct kvt_l3 *l3, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/*
 * Logs a failed write of n blocks (what: "put", "del", "drop"), naming the
 * file and operation recorded in wfail_op/wfail_region; at most one line a
 * second.  The writer only.
 */
void kvt_l3i_log_failure(struct kvt_l3 *l3, const char *what, int rc,
			 size_t n);
/* Path of region id's file into buf; 0 or -ENAMETOOLONG. */
int kvt_l3i_region_path(const struct kvt_l3 *l3, uint32_t id, char *buf,
			size_t cap);

/*
 * Checks the LMDB file at path before LMDB maps it (kvt_l3_mdb.c).  Returns
 * 0 (sound, or absent), KVT_ECORRUPT with the reason in why, or -errno if
 * it cannot be read.
 */
int kvt_l3i_mdb_validate(const char *path, char *why, size_t why_len);

/*
 * An index record as found in LMDB, judged: L3_REC_OK, or why it cannot be
 * used (load_state drops those, kvt_l3_check reports them).  *loc is filled
 * in for every verdict past L3_REC_MALFORMED.
 */
enum {
	L3_REC_OK = 0,
	L3_REC_EXPIRED,   /* well formed, expired (dropped, not a problem) */
	L3_REC_MALFORMED, /* key or record of the wrong shape */
	L3_REC_REGION,    /* names a region the store does not have */
	L3_REC_STALE,     /* the region was reclaimed since (or is free) */
	L3_REC_PLACE,     /* misaligned, past the region's fill, or lengths
			     that disagree with its key */
};
int kvt_l3i_rec_judge(const struct kvt_l3 *l3, const MDB_val *k,
		      const MDB_val *v, uint64_t now, struct l3_loc *loc);
const char *kvt_l3i_rec_why(int verdict);
/* The namespace and key of a record that judged past L3_REC_MALFORMED. */
void kvt_l3i_rec_key(const MDB_val *k, const MDB_val *v, const uint8_t **ns,
		     size_t *ns_len, const uint8_t **key, size_t *key_len);

/*
 * Runs fn in a write transaction and commits it; when the index map is
 * full, grows it (up to map_max) and runs fn again.  fn must only make
 * LMDB calls (it may run twice).  Returns an LMDB code (MDB_MAP_FULL once
 * the map cannot grow).  The writer only.
 */
int kvt_l3i_txn_run(struct kvt_l3 *l3,
		    int (*fn)(struct kvt_l3 *l3, MDB_txn *txn, void *arg),
		    void *arg);
/*
 * The index map is full and cannot grow: reclaims the oldest region that
 * is neither the head nor written by a batch in progress (counted and
 * logged).  0, or -ENOSPC when there is none.  The writer only.
 */
int kvt_l3i_index_full_reclaim(struct kvt_l3 *l3);
/* Grows the index map; 0, or MDB_MAP_FULL at map_max.  The writer only. */
int kvt_l3i_map_grow(struct kvt_l3 *l3, uint64_t at_least);
/* Bytes of index pages in use, or 0 if unknown.  The writer only. */
uint64_t kvt_l3i_index_used(struct kvt_l3 *l3);
/* Keeps free disk blocks after the end of data.mdb (kvt_l3_open.c). */
void kvt_l3i_index_reserve(struct kvt_l3 *l3);

/* 1 if an entry with this expiry has expired by l3's clock. */
int kvt_l3i_expired(const struct kvt_l3 *l3, uint64_t expiry);
/* Maps an LMDB return code onto kvtier's error space. */
int kvt_l3i_mdb_err(int rc);

/* Encodes k as its LMDB key.  Returns 0, KVT_EINVAL or KVT_ETOOBIG. */
int kvt_l3i_key_encode(const struct kvt_l3 *l3, const struct kvt_key *k,
		       struct l3_kenc *ke);
/* The mirror's hash of an LMDB key (kvt_key_hash() of what it holds). */
uint64_t kvt_l3i_ikey_hash(const uint8_t *ikey, size_t ikey_len);
void kvt_l3i_rec_encode(uint8_t *p, const struct l3_loc *l);
void kvt_l3i_rec_decode(const uint8_t *p, struct l3_loc *l);
/* The namespace and key an entry was stored under (pointers into e). */
void kvt_l3i_ent_key(const struct l3_ent *e, const uint8_t **ns,
		     size_t *ns_len, const uint8_t **key, size_t *key_len);
/* Writes e's LMDB key into buf (L3_IKEY_MAX bytes); returns its length. */
size_t kvt_l3i_ent_ikey(const struct l3_ent *e, uint8_t *buf);
/*
 * A new zeroed entry for this LMDB key (xkey: the full key of a hashed
 * ikey), holding a reference on its namespace (mu taken inside).  NULL if
 * out of memory or the ikey is malformed.  kvt_l3i_ent_free() frees one
 * that was never inserted (kvt_l3i_map_remove() frees inserted ones).
 */
struct l3_ent *kvt_l3i_ent_new(struct kvt_l3 *l3, const uint8_t *ikey,
			       size_t ikey_len, const uint8_t *xkey,
			       size_t xkey_len, uint64_t hash);
void kvt_l3i_ent_free(struct kvt_l3 *l3, struct l3_ent *e);
/* The namespace ns, or NULL (mu held). */
struct l3_ns *kvt_l3i_ns_find(struct kvt_l3 *l3, const uint8_t *ns,
			      size_t ns_len);
/* Frees every entry and namespace of the mirror (kvt_l3_close). */
void kvt_l3i_map_free(struct kvt_l3 *l3);
/* LMDB writes inside txn; they return LMDB codes (see kvt_l3i_mdb_err). */
/* rec_put stores e->loc, so it is for entries not yet in the mirror (no
 * reader can change their hits); rec_put_hits is for mirrored ones, with
 * the hit count the writer copied under mu. */
int kvt_l3i_rec_put(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e);
int kvt_l3i_rec_put_hits(struct kvt_l3 *l3, MDB_txn *txn,
			 const struct l3_ent *e, uint64_t hits);
int kvt_l3i_rec_del(struct kvt_l3 *l3, MDB_txn *txn, const struct l3_ent *e);
int kvt_l3i_region_rec_put(struct kvt_l3 *l3, MDB_txn *txn, uint32_t id,
			   uint64_t gen, uint64_t seq, uint64_t fill);

/*
 * The mirror.  Lookups need mu, except by the writer (wmu held: nobody else
 * changes the hash chains); insert, remove and the lists need mu.
 */
struct l3_ent *kvt_l3i_map_find(struct kvt_l3 *l3, const uint8_t *ikey,
				size_t ikey_len, uint64_t hash);
struct l3_ent *kvt_l3i_map_lookup(struct kvt_l3 *l3,
				  const struct l3_kenc *ke);
/* The mirrored entry with the same LMDB key as e (not mirrored), or NULL. */
struct l3_ent *kvt_l3i_map_find_ent(struct kvt_l3 *l3,
				    const struct l3_ent *e);
void kvt_l3i_map_insert(struct kvt_l3 *l3, struct l3_ent *e);
void kvt_l3i_map_remove(struct kvt_l3 *l3, struct l3_ent *e);
/* Puts e on list (L3_LIST_DIRTY or _DOOMED), off any other; mu held. */
void kvt_l3i_list_link(struct kvt_l3 *l3, struct l3_ent *e, int list);
void kvt_l3i_list_unlink(struct kvt_l3 *l3, struct l3_ent *e);

/*
 * Writer side (wmu held).  purge_doomed removes the entries readers doomed
 * from the index and the mirror (best effort: on failure they stay doomed,
 * hidden, and the next writer call retries); flush_hits persists pending
 * hit counts in their own transaction.
 */
void kvt_l3i_purge_doomed(struct kvt_l3 *l3);
void kvt_l3i_flush_hits(struct kvt_l3 *l3);
/*
 * Copies the dirty list into l3->snap and empties it (mu taken inside);
 * returns the count or -ENOMEM.  kvt_l3i_snap_undo puts the entries back
 * after a failed commit.
 */
long kvt_l3i_snap_dirty(struct kvt_l3 *l3);
void kvt_l3i_snap_undo(struct kvt_l3 *l3, size_t n);

/* Readers: open/close for the tier's own reader too (kvt_l3_open.c). */
int kvt_l3i_reader_new(struct kvt_l3 *l3, struct kvt_l3_reader **out);
void kvt_l3i_reader_free(struct kvt_l3_reader *r);

/* Writes h as the L3_HDR bytes at p (the reserved field 0). */
void kvt_l3i_hdr_encode(uint8_t *p, const struct l3_hdr *h);
/* Reads the L3_HDR bytes at p into *h. */
void kvt_l3i_hdr_decode(const uint8_t *p, struct l3_hdr *h);
/* The header an entry with this index record and key lengths has. */
void kvt_l3i_loc_hdr(const struct l3_loc *loc, size_t ns_len, size_t key_len,
		     struct l3_hdr *h);
/*
 * An entry's checksum (kvt_l3.h): XXH3-64 over the first L3_HDR_CHECKSUM
 * bytes of its header h (everything but the checksum), the namespace
 * (h->ns_len bytes at ns), the key (h->key_len at key) and the value,
 * given as two pieces v0[n0] then v1[n1] (a read may land in two buffers).
 */
uint64_t kvt_l3i_entry_sum(const struct l3_hdr *h, const uint8_t *ns,
			   const uint8_t *key, const uint8_t *v0, size_t n0,
			   const uint8_t *v1, size_t n1);

/*
 * Checks a whole entry read into buf (its loc->length bytes) against its
 * index record and the namespace and key it is stored under: header
 * fields, namespace, key and checksum (kvt_l3_check; a read checks only
 * the value's checksum, against the index).  Returns 0 or KVT_ECORRUPT.
 */
int kvt_l3i_entry_verify(const uint8_t *buf, const struct l3_loc *loc,
			 const uint8_t *ns, size_t ns_len, const uint8_t *key,
			 size_t key_len);

#endif /* KVT_L3_INT_H */
