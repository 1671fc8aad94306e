/*
 * kvt_ghost.h - a bounded memory of keys that left, by 64-bit hash.
 *
 * The tier manager keeps two: keys evicted from the cache altogether (so a
 * later miss can be blamed on "evicted earlier" rather than "never seen"),
 * and keys that left RAM together with how many bytes RAM had evicted at
 * that moment (so a RAM miss can be tested against "would it still be in
 * RAM if RAM were twice as big": LRU stack distance).
 *
 * Two generations of open-addressing tables of capacity/2 entries each:
 * when the current one fills up it becomes the previous one and the old
 * previous one is forgotten.  So it remembers between capacity/2 and
 * capacity of the most recent keys, in fixed memory (32 bytes a key), with
 * O(1) insert and lookup.  Hash collisions can make a rare false "seen";
 * it only feeds statistics.  Not thread safe: callers lock.
 */
#ifndef KVT_GHOST_H
#define KVT_GHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvt_ghost;

/* capacity >= 2 keys.  Returns 0, KVT_EINVAL, -ENOMEM. */
int kvt_ghost_new(struct kvt_ghost **out, size_t capacity);
void kvt_ghost_free(struct kvt_ghost *g); /* NULL ok */

/* Remembers hash with a value (replacing an earlier one). */
void kvt_ghost_put(struct kvt_ghost *g, uint64_t hash, uint64_t val);

/* Returns true and *val (may be NULL) if hash is remembered. */
bool kvt_ghost_get(const struct kvt_ghost *g, uint64_t hash, uint64_t *val);

#endif /* KVT_GHOST_H */
