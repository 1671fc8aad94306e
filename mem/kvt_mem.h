/*
 * kvt_mem.h - memory for block values.
 *
 * Values of at least a threshold size come from the shared arena when the
 * daemon installed one (kvt_arena.h), so that trusted clients can copy them
 * straight out of shared memory; smaller values, and every value once the
 * arena is full, come from malloc.  kvt_block_free() takes either kind, so
 * whoever drops the last reference to a block frees it without knowing
 * where it came from.
 *
 * The arena is process-wide rather than per tier manager because a block's
 * memory is freed by whichever thread releases its last reference (an L1
 * entry, a reply being sent, a lease), none of which carries the manager.
 * kvt_mem_set_arena() is called once, before any block is allocated, and
 * the arena must outlive every block (kvt_mem_set_arena(NULL, 0) first, then
 * close it after the last block is gone).
 */
#ifndef KVT_MEM_H
#define KVT_MEM_H

#include <stddef.h>

struct kvt_arena;

/*
 * Installs a (or removes it with NULL): values of len >= threshold are then
 * allocated from it while it has room.  Not thread-safe: call it while no
 * other thread allocates blocks.
 */
void kvt_mem_set_arena(struct kvt_arena *a, size_t threshold);

/* The installed arena, or NULL. */
struct kvt_arena *kvt_mem_arena(void);

/*
 * Memory for a value of len bytes (len 0 is treated as 1): from the arena
 * if installed, len >= threshold and it has room, else malloc.  NULL when
 * out of memory.  Thread-safe.
 */
void *kvt_block_alloc(size_t len);

/* Frees memory from kvt_block_alloc() or malloc(); NULL is ignored. */
void kvt_block_free(void *p);

/* True if p lies in the installed arena (a client can be sent a lease). */
int kvt_block_shared(const void *p);

#endif /* KVT_MEM_H */
