/*
 * kvt_arena.c - the shared-memory value arena: a sealed memfd and a page-run
 * allocator whose metadata lives outside it.  The API and its guarantees are
 * described in kvt_arena.h.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvtier_errors.h"

/* End of a free list; never a page index since indices are < UINT32_MAX. */
#define ARENA_NIL UINT32_MAX

/* One class per power of two of a run's page count: class k holds runs of
 * [2^k, 2^(k+1)) pages.  uint32 counts need 32 classes. */
#define ARENA_CLASSES 32

/*
 * How many runs of a class an allocation examines before it settles for the
 * best fit seen so far or moves on to a higher class.  Bounds the time under
 * the lock when a class holds many runs; with values of one size the first
 * run of the class already fits exactly.
 */
#define ARENA_FIT_SCAN 16

/* Record flags. */
#define REC_FREE 1u /* the page belongs to a free run */
#define REC_HEAD 2u /* the page is the first of a live allocation */

/*
 * Boundary tag, one per page, in an anonymous mapping beside the memfd.
 * Only the first and last page of each run hold a valid record (for a
 * one-page run they are the same): len and flags in both, the free-list
 * links in the first page of a free run only.  Records of interior pages
 * are stale leftovers of earlier runs; they never carry REC_HEAD, because
 * the bit is cleared when the allocation it marks is freed, so REC_HEAD
 * identifies live allocations exactly and lets kvt_arena_free() assert on
 * bad pointers.  Since the mapping is zero-filled and only boundary pages'
 * records are written, metadata memory grows with the number of runs, not
 * with the arena's size.
 */
struct arena_rec {
	uint32_t len;	/* pages in the run */
	uint32_t flags; /* REC_* */
	uint32_t next;	/* free list, first page of a free run */
	uint32_t prev;
};

struct kvt_arena {
	/* Fixed at open: read without the lock. */
	uint8_t *base;
	uint64_t size;
	int fd;
	unsigned page_shift;
	uint32_t npages;
	struct arena_rec *rec; /* npages records */
	size_t rec_bytes;

	pthread_mutex_t lock; /* guards everything below and rec[] */
	uint32_t heads[ARENA_CLASSES];
	uint32_t nonempty; /* bit k set iff heads[k] != ARENA_NIL */
	uint64_t used_pages;
	uint64_t peak_pages;
	uint64_t allocs, frees, fails;
	uint64_t free_extents;

	/* kvt_arena_prefault(): its thread, progress and stop request. */
	bool prefaulting;
	pthread_t prefault_tid;
	atomic_bool prefault_stop;
	atomic_uint_least64_t prefaulted;

	/*
	 * kvt_arena_warm(): the thread keeps pages [0, frontier + warm_ahead)
	 * faulted in.  frontier (pages) is the highest end of any allocation
	 * so far, under the lock; warmed (bytes from the start) is written
	 * by the thread only.
	 */
	bool warming, warm_stop; /* warm_stop under the lock */
	pthread_t warm_tid;
	pthread_cond_t warm_cv;	 /* with lock */
	uint64_t warm_ahead;
	uint32_t frontier;
	atomic_uint_least64_t warmed;
};

static unsigned size_class(uint32_t pages)
{
	assert(pages > 0);
	return 31u - (unsigned)__builtin_clz(pages);
}

static void list_push(struct kvt_arena *a, uint32_t i)
{
	unsigned c = size_class(a->rec[i].len);
	uint32_t h = a->heads[c];

	a->rec[i].prev = ARENA_NIL;
	a->rec[i].next = h;
	if (h != ARENA_NIL)
		a->rec[h].prev = i;
	a->heads[c] = i;
	a->nonempty |= 1u << c;
	a->free_extents++;
}

static void list_remove(struct kvt_arena *a, uint32_t i)
{
	unsigned c = size_class(a->rec[i].len);
	struct arena_rec *r = &a->rec[i];

	if (r->prev != ARENA_NIL)
		a->rec[r->prev].next = r->next;
	else
		a->heads[c] = r->next;
	if (r->next != ARENA_NIL)
		a->rec[r->next].prev = r->prev;
	if (a->heads[c] == ARENA_NIL)
		a->nonempty &= ~(1u << c);
	assert(a->free_extents > 0);
	a->free_extents--;
}

/* Writes the tags of run [i, i + len) in its first and last record. */
static void set_tags(struct kvt_arena *a, uint32_t i, uint32_t len,
		     uint32_t flags)
{
	a->rec[i].len = len;
	a->rec[i].flags = flags;
	a->rec[i + len - 1].len = len;
	/* The last page never carries REC_HEAD unless it is also the first. */
	a->rec[i + len - 1].flags = len == 1 ? flags : flags & ~REC_HEAD;
}

/* Makes [i, i + len) a free run (the caller has coalesced it). */
static void add_free(struct kvt_arena *a, uint32_t i, uint32_t len)
{
	set_tags(a, i, len, REC_FREE);
	list_push(a, i);
}

/*
 * Returns the smallest run of at least want pages among the first limit
 * runs of class c (limit 0: all of them), or ARENA_NIL.  *complete (if not
 * NULL) tells whether the whole list was examined, or the search stopped at
 * an exact fit, so that ARENA_NIL is final for this class.
 */
static uint32_t class_fit(const struct kvt_arena *a, unsigned c, uint32_t want,
			  unsigned limit, bool *complete)
{
	uint32_t best = ARENA_NIL, best_len = UINT32_MAX;
	unsigned seen = 0;
	uint32_t i;

	for (i = a->heads[c]; i != ARENA_NIL; i = a->rec[i].next) {
		uint32_t len = a->rec[i].len;

		if (len >= want && len < best_len) {
			best = i;
			best_len = len;
			if (len == want)
				break;
		}
		if (limit && ++seen >= limit) {
			i = a->rec[i].next;
			break;
		}
	}
	if (complete)
		*complete = best_len == want || i == ARENA_NIL;
	return best;
}

/* Finds a free run of at least want pages, or ARENA_NIL.  Lock held. */
static uint32_t find_run(const struct kvt_arena *a, uint32_t want)
{
	unsigned c = size_class(want);
	bool complete;
	uint32_t i = class_fit(a, c, want, ARENA_FIT_SCAN, &complete);
	uint32_t above;

	if (i != ARENA_NIL)
		return i;
	/*
	 * Every run in a higher class has at least 2^(c+1) > want pages, so
	 * the first non-empty higher class always has a fit; look at a few of
	 * its runs for the smallest.
	 */
	above = c + 1 < ARENA_CLASSES ? a->nonempty & ~((2u << c) - 1) : 0;
	if (above)
		return class_fit(a, (unsigned)__builtin_ctz(above), want,
				 ARENA_FIT_SCAN, NULL);
	/*
	 * Nothing above: class c is the last hope, and NULL must mean that no
	 * run anywhere fits, so finish the search the bounded scan cut short.
	 */
	if (!complete)
		return class_fit(a, c, want, 0, NULL);
	return ARENA_NIL;
}

int kvt_arena_open(struct kvt_arena **out, const char *name, uint64_t size)
{
	struct kvt_arena *a;
	long page = sysconf(_SC_PAGESIZE);
	uint64_t npages;
	int err;

	if (!out || !name || size == 0 || page <= 0)
		return KVT_EINVAL;
	npages = size / (uint64_t)page + (size % (uint64_t)page != 0);
	if (npages > UINT32_MAX || npages * (uint64_t)page > SIZE_MAX)
		return KVT_EINVAL;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = -1;
	a->base = MAP_FAILED;
	a->rec = MAP_FAILED;
	a->page_shift = (unsigned)__builtin_ctzl((unsigned long)page);
	a->npages = (uint32_t)npages;
	a->size = npages << a->page_shift;
	a->rec_bytes = (size_t)npages * sizeof(struct arena_rec);
	for (unsigned c = 0; c < ARENA_CLASSES; c++)
		a->heads[c] = ARENA_NIL;

	err = pthread_mutex_init(&a->lock, NULL);
	if (err) {
		free(a);
		return -err;
	}

	a->fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (a->fd < 0)
		goto fail_errno;
	if (ftruncate(a->fd, (off_t)a->size) != 0)
		goto fail_errno;
	if (fcntl(a->fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
		goto fail_errno;
	a->base = mmap(NULL, a->size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_NORESERVE, a->fd, 0);
	if (a->base == MAP_FAILED)
		goto fail_errno;
	/*
	 * 2 MiB pages where the host allows them for shared memory
	 * (transparent_hugepage/shmem_enabled = advise): far fewer faults and
	 * TLB misses on megabyte blocks.  Refused or ignored otherwise.
	 */
	madvise(a->base, a->size, MADV_HUGEPAGE);
	/*
	 * Zero-filled on demand: only the records of run boundaries are ever
	 * written, so an arena of mostly large runs costs little metadata.
	 */
	a->rec = mmap(NULL, a->rec_bytes, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (a->rec == MAP_FAILED)
		goto fail_errno;

	add_free(a, 0, a->npages);
	*out = a;
	return 0;

fail_errno:
	err = -errno;
	kvt_arena_close(a);
	return err;
}

void kvt_arena_close(struct kvt_arena *a)
{
	if (!a)
		return;
	if (a->prefaulting) {
		atomic_store(&a->prefault_stop, true);
		pthread_join(a->prefault_tid, NULL);
	}
	if (a->warming) {
		pthread_mutex_lock(&a->lock);
		a->warm_stop = true;
		pthread_cond_signal(&a->warm_cv);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->warm_tid, NULL);
		pthread_cond_destroy(&a->warm_cv);
	}
	if (a->rec != MAP_FAILED)
		munmap(a->rec, a->rec_bytes);
	if (a->base != MAP_FAILED)
		munmap(a->base, a->size);
	if (a->fd >= 0)
		close(a->fd);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

void *kvt_arena_alloc(struct kvt_arena *a, size_t len)
{
	uint32_t want, i, have;
	void *p;

	assert(a);
	if (len == 0)
		return NULL;
	pthread_mutex_lock(&a->lock);
	if (len > a->size) {
		a->fails++;
		pthread_mutex_unlock(&a->lock);
		return NULL;
	}
	want = (uint32_t)(((uint64_t)len + (1ull << a->page_shift) - 1) >>
			  a->page_shift);
	i = find_run(a, want);
	if (i == ARENA_NIL) {
		a->fails++;
		pthread_mutex_unlock(&a->lock);
		return NULL;
	}
	have = a->rec[i].len;
	assert(have >= want && (a->rec[i].flags & REC_FREE));
	list_remove(a, i);
	/*
	 * The remainder goes after the allocation.  It needs no coalescing:
	 * the run was maximal, so what follows it is allocated or the end.
	 */
	if (have > want)
		add_free(a, i + want, have - want);
	set_tags(a, i, want, REC_HEAD);
	if (i + want > a->frontier) {
		a->frontier = i + want;
		/* Wake the warmer once half its lead is used up. */
		if (a->warming &&
		    ((uint64_t)a->frontier << a->page_shift) + a->warm_ahead / 2 >
			    atomic_load_explicit(&a->warmed,
						 memory_order_relaxed))
			pthread_cond_signal(&a->warm_cv);
	}
	a->used_pages += want;
	if (a->used_pages > a->peak_pages)
		a->peak_pages = a->used_pages;
	a->allocs++;
	p = a->base + ((uint64_t)i << a->page_shift);
	pthread_mutex_unlock(&a->lock);
	return p;
}

/* Index of the first page of the live allocation p; asserts it is one. */
static uint32_t live_index(const struct kvt_arena *a, const void *p)
{
	uintptr_t off;
	uint32_t i;

	assert(kvt_arena_contains(a, p));
	off = (uintptr_t)p - (uintptr_t)a->base;
	assert((off & ((1ull << a->page_shift) - 1)) == 0);
	i = (uint32_t)(off >> a->page_shift);
	assert(a->rec[i].flags & REC_HEAD);
	assert(a->rec[i].len > 0 && a->rec[i].len <= a->npages - i);
	return i;
}

void kvt_arena_free(struct kvt_arena *a, void *p)
{
	uint32_t i, len;

	if (!p)
		return;
	assert(a);
	pthread_mutex_lock(&a->lock);
	i = live_index(a, p);
	len = a->rec[i].len;
	a->rec[i].flags = 0; /* no longer a live head, whatever follows */
	a->used_pages -= len;
	a->frees++;
	/* Left neighbour: its last page's record is valid. */
	if (i > 0 && (a->rec[i - 1].flags & REC_FREE)) {
		uint32_t llen = a->rec[i - 1].len;

		assert(llen <= i);
		list_remove(a, i - llen);
		i -= llen;
		len += llen;
	}
	/* Right neighbour: its first page's record is valid. */
	if (i + len < a->npages && (a->rec[i + len].flags & REC_FREE)) {
		uint32_t r = i + len;

		list_remove(a, r);
		len += a->rec[r].len;
	}
	add_free(a, i, len);
	pthread_mutex_unlock(&a->lock);
}

bool kvt_arena_contains(const struct kvt_arena *a, const void *p)
{
	uintptr_t u = (uintptr_t)p, b;

	if (!a)
		return false;
	b = (uintptr_t)a->base;
	return u >= b && u - b < a->size;
}

int kvt_arena_fd(const struct kvt_arena *a)
{
	return a->fd;
}

uint8_t *kvt_arena_base(const struct kvt_arena *a)
{
	return a->base;
}

uint64_t kvt_arena_size(const struct kvt_arena *a)
{
	return a->size;
}

size_t kvt_arena_alloc_size(struct kvt_arena *a, const void *p)
{
	size_t n;

	assert(a);
	pthread_mutex_lock(&a->lock);
	n = (size_t)a->rec[live_index(a, p)].len << a->page_shift;
	pthread_mutex_unlock(&a->lock);
	return n;
}

/*
 * Starts one of the arena's threads with every signal blocked: a process
 * (the daemon) that reads its signals from a signalfd must never have one
 * delivered to a thread it does not know of (SIGTERM would kill it).
 */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Chunk of arena faulted in per madvise() call, between stop checks. */
#define ARENA_PREFAULT_CHUNK (4u << 20)

static void *prefault_main(void *arg)
{
	struct kvt_arena *a = arg;

	for (uint64_t off = 0; off < a->size; off += ARENA_PREFAULT_CHUNK) {
		uint64_t n = a->size - off < ARENA_PREFAULT_CHUNK
				     ? a->size - off
				     : ARENA_PREFAULT_CHUNK;

		if (atomic_load(&a->prefault_stop))
			break;
		/* Faults pages in writable and keeps their contents, so it is
		 * safe on pages that already hold blocks. */
		if (madvise(a->base + off, (size_t)n, MADV_POPULATE_WRITE))
			break;
		atomic_fetch_add(&a->prefaulted, n);
	}
	return NULL;
}

int kvt_arena_prefault(struct kvt_arena *a)
{
	int rc;

	if (!a || a->prefaulting || a->warming)
		return KVT_EINVAL;
	/* One page first: kernels before 5.14 refuse the advice. */
	if (madvise(a->base, (size_t)1 << a->page_shift, MADV_POPULATE_WRITE))
		return -errno;
	atomic_init(&a->prefault_stop, false);
	rc = start_thread(&a->prefault_tid, prefault_main, a);
	if (rc)
		return -rc;
	a->prefaulting = true;
	return 0;
}

/* Chunk the warmer faults in per madvise() call. */
#define ARENA_WARM_CHUNK (2u << 20)

static void *warm_main(void *arg)
{
	struct kvt_arena *a = arg;
	uint64_t at = 0;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		uint64_t goal = ((uint64_t)a->frontier << a->page_shift) +
				a->warm_ahead;
		uint64_t n;

		if (goal > a->size)
			goal = a->size;
		if (a->warm_stop)
			break;
		if (at >= goal) {
			pthread_cond_wait(&a->warm_cv, &a->lock);
			continue;
		}
		pthread_mutex_unlock(&a->lock);
		n = a->size - at < ARENA_WARM_CHUNK ? a->size - at
						    : ARENA_WARM_CHUNK;
		/* As kvt_arena_prefault(): keeps what pages already hold. */
		if (madvise(a->base + at, (size_t)n, MADV_POPULATE_WRITE)) {
			pthread_mutex_lock(&a->lock);
			break; /* memory is short: allocations fault as usual */
		}
		at += n;
		atomic_store_explicit(&a->warmed, at, memory_order_relaxed);
		atomic_fetch_add(&a->prefaulted, n);
		pthread_mutex_lock(&a->lock);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int kvt_arena_warm(struct kvt_arena *a, uint64_t ahead)
{
	int rc;

	if (!a || a->warming || a->prefaulting || ahead == 0)
		return KVT_EINVAL;
	/* One page first: kernels before 5.14 refuse the advice. */
	if (madvise(a->base, (size_t)1 << a->page_shift, MADV_POPULATE_WRITE))
		return -errno;
	rc = pthread_cond_init(&a->warm_cv, NULL);
	if (rc)
		return -rc;
	pthread_mutex_lock(&a->lock);
	a->warm_ahead = ahead;
	a->warm_stop = false;
	a->warming = true;
	pthread_mutex_unlock(&a->lock);
	rc = start_thread(&a->warm_tid, warm_main, a);
	if (rc) {
		a->warming = false;
		pthread_cond_destroy(&a->warm_cv);
		return -rc;
	}
	return 0;
}

void kvt_arena_stats(struct kvt_arena *a, struct kvt_arena_stats *st)
{
	uint32_t largest = 0;

	assert(a && st);
	pthread_mutex_lock(&a->lock);
	/* The largest run is in the highest non-empty class; look at all of it. */
	if (a->nonempty) {
		unsigned c = 31u - (unsigned)__builtin_clz(a->nonempty);

		for (uint32_t i = a->heads[c]; i != ARENA_NIL;
		     i = a->rec[i].next)
			if (a->rec[i].len > largest)
				largest = a->rec[i].len;
	}
	st->size = a->size;
	st->used = a->used_pages << a->page_shift;
	st->peak_used = a->peak_pages << a->page_shift;
	st->allocs = a->allocs;
	st->frees = a->frees;
	st->fails = a->fails;
	st->free_extents = a->free_extents;
	st->largest_free = (uint64_t)largest << a->page_shift;
	pthread_mutex_unlock(&a->lock);
	st->prefaulted = atomic_load(&a->prefaulted);
}
