/*
 * kvt_forkid.c - an id of the calling process that a fork() changes
 * (kvt_forkid.h).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvt_forkid.h"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

static pthread_once_t forkid_once = PTHREAD_ONCE_INIT;
/* The current id, 0 until assigned; in a wipe-on-fork page if possible. */
static _Atomic uint64_t *forkid_word;
static _Atomic uint64_t forkid_fallback;
/*
 * The last id handed out.  It lives in ordinary memory, so a child starts
 * from its parent's count and its new id is larger than any id its
 * ancestors used: no handle it inherited can match it.
 */
static _Atomic uint64_t forkid_last;

static void forkid_child(void)
{
	atomic_store_explicit(forkid_word, 0, memory_order_relaxed);
}

static void forkid_init(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t len = page > 0 ? (size_t)page : 4096;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p != MAP_FAILED && madvise(p, len, MADV_WIPEONFORK) == 0) {
		forkid_word = p;
		return;
	}
	if (p != MAP_FAILED)
		munmap(p, len);
	/* Should this fail too, a fork() goes undetected: nothing else to do. */
	forkid_word = &forkid_fallback;
	pthread_atfork(NULL, NULL, forkid_child);
}

uint64_t kvt_forkid_get(void)
{
	uint64_t id, fresh, none = 0;

	pthread_once(&forkid_once, forkid_init);
	id = atomic_load_explicit(forkid_word, memory_order_relaxed);
	if (id)
		return id;
	/* First call in this process: two threads may race; one id wins. */
	fresh = atomic_fetch_add_explicit(&forkid_last, 1,
					  memory_order_relaxed) + 1;
	if (atomic_compare_exchange_strong_explicit(forkid_word, &none, fresh,
						    memory_order_relaxed,
						    memory_order_relaxed))
		return fresh;
	return none;
}
