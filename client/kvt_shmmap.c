/*
 * kvt_shmmap.c - one mapping of a daemon's block arena per process
 * (kvt_shmmap.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "kvt_forkid.h"
#include "kvt_shmmap.h"
#include "kvtier_errors.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Granule of kvt_shmmap_populate(). */
#define SHMMAP_CHUNK (2u << 20)

struct kvt_shmmap {
	struct kvt_shmmap *next;
	/*
	 * The process that mapped it (kvt_forkid.h).  A child inherits the
	 * mapping and the list, but its new connections map the arena
	 * afresh: its page tables start empty (populated[] would lie) and
	 * refs counts its parent's handles.  The inherited entry stays
	 * listed until its last handle is closed.
	 */
	uint64_t forkid;
	dev_t dev;
	ino_t ino;
	uint8_t *base;
	uint64_t size;
	unsigned refs;		 /* guarded by maps_lock */
	atomic_uchar *populated; /* bit per SHMMAP_CHUNK */
};

/* The process's mappings; few (one per daemon), so a list. */
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kvt_shmmap *maps;
static pthread_once_t maps_once = PTHREAD_ONCE_INIT;

/*
 * fork() while another thread holds maps_lock would leave it locked for
 * ever in the child: the forking thread takes it around the fork instead.
 */
static void maps_lock_take(void)
{
	pthread_mutex_lock(&maps_lock);
}

static void maps_lock_drop(void)
{
	pthread_mutex_unlock(&maps_lock);
}

static void maps_init(void)
{
	pthread_atfork(maps_lock_take, maps_lock_drop, maps_lock_drop);
}

int kvt_shmmap_get(int fd, uint64_t size, struct kvt_shmmap **out)
{
	struct kvt_shmmap *m;
	struct stat st;
	uint64_t me = kvt_forkid_get();
	int seals, rc = 0;

	*out = NULL;
	pthread_once(&maps_once, maps_init);
	seals = fcntl(fd, F_GET_SEALS);
	if (fstat(fd, &st) < 0 || seals < 0)
		return -errno;
	/* A shorter or shrinkable file would fault (SIGBUS) under a copy. */
	if ((uint64_t)st.st_size < size || !(seals & F_SEAL_SHRINK) ||
	    size == 0 || size > SIZE_MAX)
		return KVT_EPROTO;
	pthread_mutex_lock(&maps_lock);
	for (m = maps; m; m = m->next)
		if (m->forkid == me && m->dev == st.st_dev &&
		    m->ino == st.st_ino && m->size == size)
			break;
	if (m) {
		m->refs++;
		goto done;
	}
	m = calloc(1, sizeof(*m));
	if (m)
		m->populated = calloc((size_t)(size / SHMMAP_CHUNK) / 8 + 1, 1);
	if (!m || !m->populated) {
		rc = -ENOMEM;
		goto fail;
	}
	m->base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED,
		       fd, 0);
	if (m->base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	/* Huge pages where the host allows them (see kvt_arena.c). */
	madvise(m->base, (size_t)size, MADV_HUGEPAGE);
	m->forkid = me;
	m->dev = st.st_dev;
	m->ino = st.st_ino;
	m->size = size;
	m->refs = 1;
	m->next = maps;
	maps = m;
done:
	pthread_mutex_unlock(&maps_lock);
	*out = m;
	return 0;
fail:
	pthread_mutex_unlock(&maps_lock);
	if (m)
		free((void *)m->populated);
	free(m);
	return rc;
}

void kvt_shmmap_put(struct kvt_shmmap *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&maps_lock);
	if (--m->refs > 0) {
		pthread_mutex_unlock(&maps_lock);
		return;
	}
	for (struct kvt_shmmap **pp = &maps; *pp; pp = &(*pp)->next)
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	pthread_mutex_unlock(&maps_lock);
	munmap(m->base, (size_t)m->size);
	free((void *)m->populated);
	free(m);
}

uint8_t *kvt_shmmap_base(const struct kvt_shmmap *m)
{
	return m->base;
}

uint64_t kvt_shmmap_size(const struct kvt_shmmap *m)
{
	return m->size;
}

void kvt_shmmap_populate(struct kvt_shmmap *m, const uint8_t *p, size_t len)
{
	size_t off0 = (size_t)(p - m->base);
	size_t first = off0 / SHMMAP_CHUNK;
	size_t last = len ? (off0 + len - 1) / SHMMAP_CHUNK : first;

	for (size_t i = first; i <= last; i++) {
		unsigned char bit = (unsigned char)(1u << (i % 8));
		size_t off = i * SHMMAP_CHUNK, n = SHMMAP_CHUNK;

		if (atomic_load_explicit(&m->populated[i / 8],
					 memory_order_relaxed) & bit)
			continue;
		if (n > m->size - off)
			n = (size_t)(m->size - off);
		/*
		 * Two threads may both do a chunk: harmless.  A failure only
		 * means the faults happen one by one.
		 */
		madvise(m->base + off, n, MADV_POPULATE_WRITE);
		atomic_fetch_or_explicit(&m->populated[i / 8], bit,
					 memory_order_relaxed);
	}
}
