/*
 * kvt_lru.h - a byte-capacity LRU of values in RAM: the RAM tiers.
 *
 * The tier manager keeps two: L1, whose values are the blocks themselves,
 * and L2, whose values are compressed frames (the codec and raw length in
 * each entry's struct kvt_lru_meta).  The LRU does not look at the bytes.
 * Only the tier manager (kvt_tm*.c) uses this API; the daemon never does.
 *
 * Structure.  A chained hash table with a power-of-two number of buckets
 * (doubled whenever there are more entries than buckets, hashed with
 * kvt_key_hash()) finds entries; an intrusive doubly linked list orders
 * them from most to least recently used.  get, put, del, exists and
 * evict_one are O(1), amortized for the table's growth.
 *
 * Identity.  An entry is identified by (namespace bytes, key bytes): the same
 * key bytes in two namespaces are two entries.  Both are copied into the
 * entry.
 *
 * Accounting.  Each entry counts against the capacity for
 *
 *     blob.mem_size + ns_len + key_len + kvt_lru_entry_overhead()
 *
 * where the overhead is the size of the entry header (refcount, links,
 * lengths; see struct kvt_ref in kvt_lru.c).  The hash table's bucket array
 * is not counted: at one pointer per entry it is noise next to 64 KiB-32 MiB
 * values.  After every call returns, bytes <= capacity.
 *
 * Entries are struct kvt_ref.  They are reference-counted: the table holds
 * one reference while the entry is linked, and every kvt_lru_get() hands the
 * caller another.  An entry that is replaced, deleted, expired or evicted is
 * unlinked at once (it stops counting against the capacity) but its memory
 * stays valid until the last reference is released with kvt_ref_release().
 *
 * Eviction hands the table's reference to the caller instead of dropping
 * it, so that the tier manager can demote victims a tier down:
 * kvt_lru_put() reports each victim to a kvt_lru_victim_fn, and
 * kvt_lru_evict_one() pops the least recently used entry on demand.
 * Victims carry their key (kvt_lru_ref_key), expiry (kvt_lru_ref_expires)
 * and value (kvt_ref_data etc.) so that they can be re-inserted elsewhere.
 *
 * Time.  The LRU has no clock.  Expiries are absolute seconds of the
 * manager's clock (0 = never); calls that may observe expiry take the
 * current time now_s.  An entry with expires_s != 0 && now_s >= expires_s
 * is expired: get, exists and del remove it and treat it as absent.
 * Expired entries nobody looks up are not scanned for; they age out
 * through the LRU like any other.
 *
 * Threading.  One thread calls every kvt_lru_* function on a given handle.
 * kvt_ref_release() (and kvt_lru_ref_acquire() on a reference the caller
 * already holds) may be called from any thread: the count is atomic and the
 * value bytes of an entry never change after it is created.
 */
#ifndef KVT_LRU_H
#define KVT_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvt_tier.h"

struct kvt_lru; /* opaque */

struct kvt_lru_stats {
	uint64_t entries;
	uint64_t bytes;     /* accounted bytes, <= capacity */
	uint64_t raw_bytes; /* sum of value lengths (blob.len) */
	uint64_t capacity;
	uint64_t hits;      /* kvt_lru_get() calls that found a live entry */
	uint64_t misses;    /* kvt_lru_get() calls that did not */
	uint64_t expired;   /* entries removed because their TTL had passed */
	uint64_t buckets;   /* hash table size, for tests and debugging */
};

/*
 * Called by kvt_lru_put() once per entry it evicted, after the put has
 * completed (so the callee may call back into the same LRU handle).  The
 * callee receives the table's reference to victim and must eventually
 * kvt_ref_release() it.  victim is already unlinked: it no longer counts
 * against the capacity and lookups no longer find it.
 */
typedef void (*kvt_lru_victim_fn)(void *arg, struct kvt_ref *victim);

/* Bytes an entry of the header's size adds on top of its value and key. */
size_t kvt_lru_entry_overhead(void);

/*
 * Bytes an entry with these sizes counts against the capacity; saturates at
 * UINT64_MAX instead of wrapping.
 */
uint64_t kvt_lru_cost(size_t mem_size, size_t ns_len, size_t key_len);

/*
 * Creates an empty LRU holding at most capacity bytes.  Returns 0 and *out,
 * KVT_EINVAL if out is NULL or capacity is 0, or -ENOMEM.
 */
int kvt_lru_open(struct kvt_lru **out, uint64_t capacity);

/*
 * Drops the table's reference to every entry and frees the LRU.  Entries
 * other holders still reference stay valid until released.  NULL ok.
 */
void kvt_lru_close(struct kvt_lru *t);

/*
 * Stores blob under k with the given absolute expiry (0 = never).
 * Ownership of blob->mem passes to the LRU whatever the result; on return
 * blob->mem and blob->data are NULL.  blob->data[0..len) must lie inside
 * blob->mem[0..mem_size) (len 0 with NULL mem is an empty value).
 *
 * An existing entry for k is replaced atomically: it is unlinked (not
 * reported as a victim, since its value is stale) and the new entry linked
 * before the call returns; holders of references to the old entry keep
 * reading the old bytes.  Then least recently used entries are evicted until
 * the new one fits, and reported to victim_fn after the new entry is linked
 * (victim_fn NULL: they are released).  The new entry becomes the most
 * recently used.
 *
 * Returns 0; KVT_ENOSPACE if kvt_lru_cost() of the entry exceeds the
 * capacity; KVT_EINVAL for NULL arguments or a blob whose data is not
 * inside its mem; -ENOMEM.  On any error the LRU is unchanged (the previous
 * value of k, if any, stays) and blob->mem has been freed.
 */
int kvt_lru_put(struct kvt_lru *t, const struct kvt_key *k,
		struct kvt_blob *blob, uint64_t expires_s,
		kvt_lru_victim_fn victim_fn, void *victim_arg);

/*
 * Per-entry metadata for entries whose bytes are encoded: the tier manager
 * keeps L2 in a second kvt_lru whose values are compressed frames.  raw_len
 * is what the raw_bytes statistic sums.  kvt_lru_put() stores
 * { codec 0, flags 0, raw_len = blob->len }.
 */
struct kvt_lru_meta {
	uint8_t codec;	  /* enum kvt_codec */
	uint8_t flags;	  /* the manager's own bits */
	uint64_t raw_len; /* value length before encoding */
	/*
	 * Per-block history, carried from tier to tier by the manager so that
	 * `kvtier hot` sees a block's whole life: gets served (kvt_lru_get
	 * adds one and sets atime_s), when it was put, when last read.
	 */
	uint64_t hits;
	uint64_t ctime_s;
	uint64_t atime_s;
};

/*
 * kvt_lru_put() with explicit metadata (meta NULL: as kvt_lru_put()).  If out
 * is not NULL, a successful put also stores in *out a new reference to the
 * entry (which the caller releases), without counting a hit.
 */
int kvt_lru_put_meta(struct kvt_lru *t, const struct kvt_key *k,
		     struct kvt_blob *blob, uint64_t expires_s,
		     const struct kvt_lru_meta *meta, struct kvt_ref **out,
		     kvt_lru_victim_fn victim_fn, void *victim_arg);

/*
 * Looks k up.  On a hit, makes the entry the most recently used, counts a
 * hit, and stores a new reference in *out that the caller must release.
 * Returns 0, or KVT_ENOTFOUND (absent or expired; an expired entry is
 * removed) with *out NULL.  KVT_EINVAL for NULL arguments.
 */
int kvt_lru_get(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s,
		struct kvt_ref **out);

/*
 * Returns 1 if k is present and not expired, else 0 (an expired entry is
 * removed).  Unlike get, does not touch the LRU order or the hit counter:
 * probing for a prefix must not make blocks look hot.
 */
int kvt_lru_exists(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s);

/*
 * Removes k, dropping the table's reference.  Returns 0, or KVT_ENOTFOUND
 * if it was absent or expired (an expired entry is removed all the same).
 */
int kvt_lru_del(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s);

/*
 * Unlinks the least recently used entry and hands the table's reference to
 * the caller through *victim (which must eventually be released).  This is
 * how the manager makes room or spills RAM on shutdown.  Returns 0, or
 * KVT_ENOTFOUND with *victim NULL when the LRU is empty.  The victim may be
 * expired; check kvt_lru_ref_expires().
 */
int kvt_lru_evict_one(struct kvt_lru *t, struct kvt_ref **victim);

/* Fills *st.  Counters are cumulative since kvt_lru_open(). */
void kvt_lru_stats(const struct kvt_lru *t, struct kvt_lru_stats *st);

/*
 * Reference helpers beyond the kvt_ref_* accessors of kvt_tier.h, for the
 * tier manager.  All require a reference the caller holds.
 */

/* Takes another reference to r and returns r.  Any thread. */
struct kvt_ref *kvt_lru_ref_acquire(struct kvt_ref *r);

/* Fills *k with pointers into r; valid while the reference is held. */
void kvt_lru_ref_key(const struct kvt_ref *r, struct kvt_key *k);

/* The absolute expiry the entry was stored with, 0 = never. */
uint64_t kvt_lru_ref_expires(const struct kvt_ref *r);

/* kvt_lru_cost() of the entry: what it counted (or counts) against the
 * capacity. */
uint64_t kvt_lru_ref_cost(const struct kvt_ref *r);

/*
 * Removes every entry of namespace ns (exactly that namespace); returns how
 * many.  O(entries) when ns has entries here, O(1) when it has none: a
 * namespace drop is rare and operator-driven.
 */
size_t kvt_lru_drop_ns(struct kvt_lru *t, const uint8_t *ns, size_t ns_len);

/*
 * Like kvt_lru_get() without its side effects: no LRU move, no hit counted.
 * For reads that are not a client's (prefetch).
 */
int kvt_lru_peek(struct kvt_lru *t, const struct kvt_key *k, uint64_t now_s,
		 struct kvt_ref **out);

/*
 * Pins.  A pinned entry is never chosen as a victim by kvt_lru_put();
 * kvt_lru_evict_one() (a graceful spill) ignores pins.  A put that cannot
 * fit beside the pinned bytes fails with KVT_ENOSPACE before anything
 * changes, and a replaced value stays pinned.  Who pins what is the
 * manager's business; the LRU only keeps the state.  Returns 0, KVT_ENOTFOUND,
 * KVT_EINVAL.
 */
int kvt_lru_set_pinned(struct kvt_lru *t, const struct kvt_key *k,
		       bool pinned, uint64_t now_s);
/* Entries removed so far because their TTL had passed (stats.expired). */
uint64_t kvt_lru_expired_count(const struct kvt_lru *t);

/* Bytes (as counted against capacity) of pinned entries. */
uint64_t kvt_lru_pinned_bytes(const struct kvt_lru *t);

/*
 * Sets the flag bits `set` and clears `clear` of r's metadata (the owning
 * thread).  r may be linked in t (its namespace's marked totals follow) or
 * in no LRU (t may then be NULL).
 */
void kvt_lru_ref_set_flags(struct kvt_lru *t, struct kvt_ref *r, uint8_t set,
			   uint8_t clear);

/*
 * Moves r, linked in t, to the most recently used end (newest) or to the
 * least recently used one (the next victim), without counting a hit.  The
 * manager ages an L2 frame whose block is in L1 too (the cheapest thing L2
 * can give up) and refreshes it when that block leaves L1 for it.  No-op
 * for an entry that is not linked.
 */
void kvt_lru_move(struct kvt_lru *t, struct kvt_ref *r, bool newest);

/* The capacity given to kvt_lru_open(). */
uint64_t kvt_lru_capacity(const struct kvt_lru *t);

/* Copies out the entry's metadata. */
void kvt_lru_ref_meta(const struct kvt_ref *r, struct kvt_lru_meta *m);

/* Calls fn for every entry, most recently used first.  fn must not change
 * the LRU. */
void kvt_lru_foreach(const struct kvt_lru *t,
		     void (*fn)(void *arg, const struct kvt_ref *e), void *arg);

/*
 * A reference to a value that is in no LRU: the memory of blob (whose
 * ownership passes here whatever the result) with key k and metadata meta
 * (NULL: as kvt_lru_put()), readable through the kvt_ref_* and
 * kvt_lru_ref_* accessors and freed by its last kvt_ref_release().  The
 * manager serves a block read from a lower tier this way when it does not
 * admit it to L1.  Returns 0 and *out, KVT_EINVAL, -ENOMEM.
 */
int kvt_lru_ref_make(const struct kvt_key *k, struct kvt_blob *blob,
		     uint64_t expires_s, const struct kvt_lru_meta *meta,
		     struct kvt_ref **out);

/*
 * Per-namespace totals.  The LRU keeps, for every namespace with linked
 * entries, the number of entries, the sum of their raw_len and the sum of
 * their hits, updated on every insert, removal, hit and flag change, so
 * that reading them costs O(namespaces) whatever the number of entries.
 * Besides the totals over all entries, it keeps the same totals over the
 * entries whose flags have mark bit i set, for KVT_LRU_NS_MARKS bits the
 * caller names (the manager counts blocks that also have a copy in
 * another tier this way, so that a report counts each block once).
 */
#define KVT_LRU_NS_MARKS 2

struct kvt_lru_ns_tot {
	uint64_t entries;
	uint64_t raw_bytes; /* sum of raw_len */
	uint64_t hits;	    /* sum of the entries' hits */
};

/*
 * Names the flag bit of each mark (0: that mark counts nothing).  Only on
 * an empty LRU: returns 0, or KVT_EINVAL if t is NULL or has entries.
 */
int kvt_lru_set_ns_marks(struct kvt_lru *t, uint8_t mark0, uint8_t mark1);

/* Namespaces with at least one linked entry (O(1)). */
size_t kvt_lru_ns_count(const struct kvt_lru *t);

/*
 * Calls fn once per namespace with linked entries, in no particular order,
 * with its totals over all entries and over each mark.  The pointers are
 * valid during the call only; fn must not change the LRU.
 */
typedef void (*kvt_lru_ns_fn)(void *arg, const uint8_t *ns, size_t ns_len,
			      const struct kvt_lru_ns_tot *all,
			      const struct kvt_lru_ns_tot *mark);
void kvt_lru_ns_foreach(const struct kvt_lru *t, kvt_lru_ns_fn fn, void *arg);

#endif /* KVT_LRU_H */
