/*
 * kvt_arena.h - a shared-memory arena for large cache block values.
 *
 * Purpose.  The arena is one memfd, mapped MAP_SHARED in the daemon.  Its
 * fd is meant to be passed to trusted clients (SCM_RIGHTS) so that they can
 * copy block bytes straight out of it, and write PUT values into slots the
 * daemon hands out, without a copy through the socket.  This module only
 * manages the memory: it creates the memfd and allocates page runs inside
 * it.  It does no I/O on sockets and knows nothing about keys.
 *
 * Sealing.  The memfd is sealed with F_SEAL_SHRINK | F_SEAL_GROW |
 * F_SEAL_SEAL before it is mapped, so no process holding the fd (or a
 * reopened /proc/<pid>/fd link) can shrink it under the daemon, which would
 * make the daemon's next access to the lost pages raise SIGBUS.  The seal on
 * sealing itself means nobody can remove or add seals later.  Writes are
 * not sealed: clients are trusted to write only into slots given to them.
 *
 * Memory.  The mapping is MAP_NORESERVE: a page costs memory only once it is
 * touched.  The allocator never touches arena pages; its metadata lives in
 * separate anonymous memory, so the pages a client maps hold nothing but
 * values.  Freed pages are not punched or madvised away: they stay resident
 * for the next allocation, because first-touch faults are expensive.
 *
 * Allocator.  Granularity is one page (sysconf(_SC_PAGESIZE)).  Every
 * allocation is a run of whole pages; kvt_arena_alloc_size() tells how many
 * bytes a run really has.  Boundary tags (one small record per page, only
 * the first and last page of each run kept valid) let kvt_arena_free()
 * coalesce with both neighbours in O(1).  Free runs sit in doubly linked
 * lists segregated by power-of-two classes of their page count.  An
 * allocation looks at up to 16 runs of the class that holds its size and
 * takes the smallest that is large enough, stopping at an exact fit; if
 * none is, it takes the smallest of up to 16 runs of the first non-empty
 * higher class (all of which fit).  The remainder of the run is split off
 * as a new free run.  This is a good fit, not a best fit, with bounded time
 * under the lock.  Freed runs go to the head of their list, so the common
 * case of many values of the same size reuses an exact-size run at once.
 * kvt_arena_alloc() returns NULL only when no free run is large enough (the
 * size's own class is searched to its end before giving up).  Page counts and page indices
 * are uint32, which bounds the arena at UINT32_MAX pages (16 TiB with 4 KiB
 * pages).
 *
 * Threading.  kvt_arena_alloc(), kvt_arena_free(), kvt_arena_alloc_size()
 * and kvt_arena_stats() take an internal mutex and may be called from any
 * thread.  kvt_arena_contains(), kvt_arena_fd(), kvt_arena_base() and
 * kvt_arena_size() read fields that never change after kvt_arena_open() and
 * take no lock.  kvt_arena_close() must not race with any other call on the
 * same arena.
 */
#ifndef KVT_ARENA_H
#define KVT_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kvt_arena; /* opaque */

struct kvt_arena_stats {
	uint64_t size;	       /* bytes mapped (page multiple) */
	uint64_t used;	       /* bytes in live allocations (page-rounded) */
	uint64_t peak_used;    /* highest value used has had */
	uint64_t allocs, frees; /* successful kvt_arena_alloc / _free calls */
	uint64_t fails;	       /* kvt_arena_alloc calls that found no room */
	uint64_t free_extents; /* maximal free page runs */
	uint64_t largest_free; /* bytes of the largest free run */
	uint64_t prefaulted;   /* bytes faulted in ahead of use: by
				* kvt_arena_prefault() or kvt_arena_warm() */
};

/*
 * Creates an arena of size bytes rounded up to the page size.
 *
 * The memfd is created with memfd_create(name, MFD_CLOEXEC |
 * MFD_ALLOW_SEALING) (name shows in /proc/<pid>/fd and /proc/<pid>/maps;
 * Linux limits it to 249 bytes), sized with ftruncate, sealed with
 * F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL and mapped PROT_READ |
 * PROT_WRITE, MAP_SHARED | MAP_NORESERVE.  The whole arena starts as one
 * free run.
 *
 * Returns 0 and stores the new arena in *out.  On failure *out is left
 * untouched, nothing is leaked, and the result is:
 *   KVT_EINVAL  out or name is NULL, size is 0, or size rounded up to whole
 *               pages exceeds UINT32_MAX pages;
 *   -EINVAL     the kernel refused the name (too long);
 *   -EMFILE, -ENFILE  no file descriptor was available;
 *   -ENOMEM     no memory for the handle, its metadata or the mapping;
 *   -EFBIG      the size exceeds RLIMIT_FSIZE or the file system's limit;
 *   -errno      any other failure of memfd_create, ftruncate, fcntl or mmap.
 *
 * The caller owns the arena and releases it with kvt_arena_close().
 */
int kvt_arena_open(struct kvt_arena **out, const char *name, uint64_t size);

/*
 * Unmaps the arena, closes the daemon's fd and frees the metadata.  Every
 * pointer returned by kvt_arena_alloc() becomes invalid, live or not.
 * Clients that received a copy of the fd keep the memory alive through
 * their own mappings; the daemon's view is gone.  a may be NULL.
 */
void kvt_arena_close(struct kvt_arena *a);

/*
 * Allocates a run of ceil(len / page size) pages.
 *
 * Returns a page-aligned pointer into the mapping to at least len bytes
 * (kvt_arena_alloc_size() gives the exact size), or NULL when len is 0 or
 * no free run is large enough; the latter, including a len larger than the
 * whole arena, counts in kvt_arena_stats.fails.  The bytes are not cleared:
 * a run reused after kvt_arena_free() holds whatever its last owner wrote.
 *
 * The pointer stays valid until kvt_arena_free() or kvt_arena_close().
 * Thread-safe (internal mutex).  Never blocks on I/O and never touches the
 * arena's pages.
 */
void *kvt_arena_alloc(struct kvt_arena *a, size_t len);

/*
 * Returns the run at p to the arena, coalescing it with free neighbours on
 * both sides.  p must have been returned by kvt_arena_alloc() on a and not
 * freed since; anything else (a pointer elsewhere, inside a run, or freed
 * twice) fails an assertion.  p NULL is ignored.  The pages stay resident.
 * Thread-safe.
 */
void kvt_arena_free(struct kvt_arena *a, void *p);

/*
 * Returns true if p points inside the mapping [base, base + size), false
 * otherwise or when a is NULL.  Says nothing about whether p is allocated.
 * Lock-free.
 */
bool kvt_arena_contains(const struct kvt_arena *a, const void *p);

/*
 * Returns the memfd.  The arena owns it and closes it in kvt_arena_close();
 * callers pass it on (SCM_RIGHTS dups it) but never close it.  Lock-free.
 */
int kvt_arena_fd(const struct kvt_arena *a);

/*
 * Returns the start of the daemon's mapping: offset 0 of the memfd, so a
 * pointer p from kvt_arena_alloc() is at file offset p - base, which is what
 * a client needs to find the bytes in its own mapping.  Lock-free.
 */
uint8_t *kvt_arena_base(const struct kvt_arena *a);

/* Returns the mapped size in bytes, a multiple of the page size.  Lock-free. */
uint64_t kvt_arena_size(const struct kvt_arena *a);

/*
 * Returns the bytes usable at p, the page-rounded size of its run.  p must
 * be a live allocation of a (assertion otherwise).  Thread-safe.
 */
size_t kvt_arena_alloc_size(struct kvt_arena *a, const void *p);

/* Fills *st with a consistent snapshot of the counters.  Thread-safe. */
void kvt_arena_stats(struct kvt_arena *a, struct kvt_arena_stats *st);

/*
 * Faults in every page of the arena from a background thread, a few MiB at
 * a time (MADV_POPULATE_WRITE, which keeps the pages' contents, so blocks
 * may be allocated and written meanwhile).  Values stored later then never
 * wait for a page fault, which on virtual machines can cost more than the
 * copy itself; the price is that the whole arena is resident from the
 * start.  Progress is in kvt_arena_stats().prefaulted.  kvt_arena_close()
 * stops and joins the thread.  Returns 0, KVT_EINVAL (a NULL, already
 * started, or kvt_arena_warm() running), -EINVAL when the kernel lacks MADV_POPULATE_WRITE (before
 * Linux 5.14), or another -errno.  Not thread-safe against itself.
 */
int kvt_arena_prefault(struct kvt_arena *a);

/*
 * Keeps the pages just beyond what allocations have reached faulted in,
 * from a background thread: the arena hands out fresh memory from its low
 * end up, and a background thread faults in (MADV_POPULATE_WRITE, 2 MiB
 * per call) every page below the highest allocation so far plus ahead
 * bytes, waking when half that lead is used.  A value written into fresh
 * arena memory then finds its pages present instead of taking a page
 * fault per 4 KiB on the thread that writes it (the daemon's event loop
 * receiving a PUT), while the arena's resident size stays within its peak
 * use plus ahead, unlike kvt_arena_prefault().  Pages once faulted in stay
 * (the arena never gives memory back), so reused memory is warm anyway.
 * Progress counts in kvt_arena_stats().prefaulted.  kvt_arena_close()
 * stops and joins the thread.  Returns 0, KVT_EINVAL (a NULL, ahead 0,
 * already warming or prefaulting), -EINVAL when the kernel lacks
 * MADV_POPULATE_WRITE (before Linux 5.14), or another -errno.  Call it
 * before any other thread uses the arena.
 */
int kvt_arena_warm(struct kvt_arena *a, uint64_t ahead);

#endif /* KVT_ARENA_H */
