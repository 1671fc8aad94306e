/*
 * kvt_shmmap.h - the daemon's block arena as this process maps it
 * (PROTOCOL.md, "Shared memory").  Internal to libkvtier.
 *
 * Every connection to one daemon receives the same memfd.  Mapping it once
 * per process rather than once per connection keeps one set of page tables
 * for all of them: a process with many connections (one per thread is the
 * rule) then neither repeats the page faults nor multiplies TLB pressure,
 * which on the dev VM made 4 threads with 4 mappings copy 5x slower than 4
 * processes.  Mappings are shared by reference count; thread-safe.
 *
 * A child after fork() inherits its parent's mappings with the handles
 * that hold them; its own connections get mappings of their own, and
 * kvt_shmmap_put() of an inherited one unmaps only the child's copy.
 */
#ifndef KVT_SHMMAP_H
#define KVT_SHMMAP_H

#include <stddef.h>
#include <stdint.h>

struct kvt_shmmap;

/*
 * Returns (in *out) the process's mapping of the arena behind fd, mapping
 * it if this is the first connection to see it, after checking that fd is
 * at least size bytes and sealed against shrinking.  The caller still owns
 * fd and may close it.  Returns 0 or a negative errno / KVT_EPROTO.
 */
int kvt_shmmap_get(int fd, uint64_t size, struct kvt_shmmap **out);

/* Drops a reference from kvt_shmmap_get(); the last one unmaps.  NULL ok. */
void kvt_shmmap_put(struct kvt_shmmap *m);

uint8_t *kvt_shmmap_base(const struct kvt_shmmap *m);
uint64_t kvt_shmmap_size(const struct kvt_shmmap *m);

/*
 * Before copying [p, p + len) (inside the mapping): maps in, with one
 * madvise(MADV_POPULATE_WRITE) per 2 MiB chunk not yet done, the page
 * tables a copy would otherwise fault in page by page (34 us per fault on
 * the dev VM).  A kernel without it (before 5.14) just takes the faults.
 */
void kvt_shmmap_populate(struct kvt_shmmap *m, const uint8_t *p, size_t len);

#endif /* KVT_SHMMAP_H */
