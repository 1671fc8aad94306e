/*
 * kvt_tier.h - the floor of tiers/: what every tier and the tier manager
 * pass between them: a key (struct kvt_key), a value handed in
 * (struct kvt_blob), a value handed out (struct kvt_ref), and the one hash
 * of a key that every in-memory table keyed by blocks uses.
 *
 * The LRU (kvt_lru.h, L1 and L2), L3 (kvt_l3.h) and the manager (kvt_tm.h)
 * include this header; it includes none of theirs, so that no tier needs
 * the manager's API to name a key (scripts/check_layers.sh checks that
 * nothing below the manager includes kvt_tm.h).  The daemon sees these
 * types through kvt_tm.h.
 */
#ifndef KVT_TIER_H
#define KVT_TIER_H

#include <stddef.h>
#include <stdint.h>

/* A key inside a namespace; the bytes are copied by calls that keep them. */
struct kvt_key {
	const uint8_t *ns;
	size_t ns_len;
	const uint8_t *key;
	size_t key_len;
};

/*
 * A value whose memory is handed over to a tier.  mem is an allocation of
 * mem_size bytes (counted against capacity) from kvt_block_alloc() or
 * malloc() (kvt_mem.h: kvt_block_free() frees either) that contains the
 * value at data[0..len).  Letting the daemon pass the whole received frame
 * body avoids copying multi-megabyte values.
 */
struct kvt_blob {
	void *mem;
	size_t mem_size;
	const uint8_t *data;
	size_t len;
	uint8_t dtype; /* enum kvt_dtype from kvt_frame.h */
};

/*
 * The hash of (namespace, key) for in-memory tables: the LRU's buckets, the
 * manager's pins and its ghosts of evicted keys, L3's mirror of its index.
 * The key is hashed with the namespace's hash as its seed rather than over
 * the concatenation, so ("ab", "c") and ("a", "bc") hash apart without a
 * separator.  Never persisted, so that it may change between builds: what
 * L3 stores on disk (checksums, the hash in long keys' LMDB keys) uses its
 * own fixed functions (kvt_l3.c).  Thread safe.
 */
uint64_t kvt_key_hash(const struct kvt_key *k);

/*
 * struct kvt_ref: a counted reference to a cached value.  It is the entry
 * of the LRU that holds (or held) the value (kvt_lru.c owns the struct and
 * implements these calls): a reference stays readable after the entry is
 * evicted, replaced or deleted, until its holder calls kvt_ref_release().
 * The value bytes never change once the entry exists, so the accessors
 * and kvt_ref_release() may be called from any thread.
 */
struct kvt_ref; /* opaque */

/* Value accessors; valid until kvt_ref_release(). */
const uint8_t *kvt_ref_data(const struct kvt_ref *r);
size_t kvt_ref_len(const struct kvt_ref *r);
uint8_t kvt_ref_dtype(const struct kvt_ref *r);
/* Drops one reference; frees the value when it was the last.  NULL ok. */
void kvt_ref_release(struct kvt_ref *r);

#endif /* KVT_TIER_H */
