/* test_arena.c - the shared-memory value arena and its page-run allocator. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvt_arena.h"
#include "kvtier_errors.h"

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

/* xorshift64*: deterministic, so a failure replays. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static struct kvt_arena *open_pages(uint64_t pages)
{
	struct kvt_arena *a = NULL;

	assert_int_equal(kvt_arena_open(&a, "kvt-test", pages * page_size()),
			 0);
	assert_non_null(a);
	return a;
}

static void test_open_close(void **state)
{
	struct kvt_arena *a = NULL;
	struct kvt_arena_stats st;
	size_t pg = page_size();
	int seals;

	(void)state;
	assert_int_equal(kvt_arena_open(&a, "x", 0), KVT_EINVAL);
	assert_int_equal(kvt_arena_open(&a, NULL, pg), KVT_EINVAL);
	assert_int_equal(kvt_arena_open(NULL, "x", pg), KVT_EINVAL);
	assert_int_equal(kvt_arena_open(&a, "x", UINT64_MAX), KVT_EINVAL);
	/* One page more than uint32 page indices can address. */
	assert_int_equal(kvt_arena_open(&a, "x", ((uint64_t)UINT32_MAX + 1) * pg),
			 KVT_EINVAL);
	assert_null(a);
	kvt_arena_close(NULL);

	/* Size rounds up to whole pages. */
	assert_int_equal(kvt_arena_open(&a, "kvt-test", 1), 0);
	assert_int_equal(kvt_arena_size(a), pg);
	kvt_arena_close(a);

	assert_int_equal(kvt_arena_open(&a, "kvt-test", 3 * pg + 1), 0);
	assert_int_equal(kvt_arena_size(a), 4 * pg);
	assert_true(kvt_arena_fd(a) >= 0);
	assert_non_null(kvt_arena_base(a));
	assert_int_equal((uintptr_t)kvt_arena_base(a) % pg, 0);
	/* Close-on-exec and all three seals. */
	assert_true(fcntl(kvt_arena_fd(a), F_GETFD) & FD_CLOEXEC);
	seals = fcntl(kvt_arena_fd(a), F_GET_SEALS);
	assert_true(seals >= 0);
	assert_int_equal(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
			 F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.size, 4 * pg);
	assert_int_equal(st.used, 0);
	assert_int_equal(st.free_extents, 1);
	assert_int_equal(st.largest_free, 4 * pg);
	assert_int_equal(st.allocs + st.frees + st.fails + st.peak_used, 0);
	kvt_arena_close(a);

	/*
	 * A large sparse arena costs nothing until touched.  valgrind cannot
	 * map 64 GiB (mmap fails with EINVAL inside it), so `make valgrind`
	 * (KVTIER_TEST_SCALE=valgrind) tries 4 GiB.
	 */
	uint64_t big = getenv("KVTIER_TEST_SCALE") ? 4ull << 30 : 64ull << 30;
	assert_int_equal(kvt_arena_open(&a, "kvt-test", big), 0);
	assert_int_equal(kvt_arena_size(a), big);
	kvt_arena_close(a);
}

static void test_alloc_aligned_in_range(void **state)
{
	struct kvt_arena *a = open_pages(64);
	struct kvt_arena_stats st;
	size_t pg = page_size();
	const size_t lens[] = { 1, pg - 1, pg, pg + 1, 3 * pg, 5 * pg + 7 };
	void *p[6];
	uint8_t *base = kvt_arena_base(a);
	uint64_t used = 0;

	(void)state;
	assert_null(kvt_arena_alloc(a, 0));
	for (size_t i = 0; i < 6; i++) {
		size_t want = (lens[i] + pg - 1) / pg * pg;

		p[i] = kvt_arena_alloc(a, lens[i]);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % pg, 0);
		assert_true(kvt_arena_contains(a, p[i]));
		assert_int_equal(kvt_arena_alloc_size(a, p[i]), want);
		assert_true(kvt_arena_contains(a, (uint8_t *)p[i] + want - 1));
		assert_true((uint8_t *)p[i] + want <= base + kvt_arena_size(a));
		used += want;
	}
	kvt_arena_stats(a, &st);
	assert_int_equal(st.used, used);
	assert_int_equal(st.peak_used, used);
	assert_int_equal(st.allocs, 6);
	assert_int_equal(st.fails, 0);

	assert_false(kvt_arena_contains(NULL, p[0]));
	assert_false(kvt_arena_contains(a, NULL));
	assert_false(kvt_arena_contains(a, base - 1));
	assert_false(kvt_arena_contains(a, base + kvt_arena_size(a)));
	assert_true(kvt_arena_contains(a, base + kvt_arena_size(a) - 1));

	kvt_arena_free(a, NULL);
	for (size_t i = 0; i < 6; i++)
		kvt_arena_free(a, p[i]);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.used, 0);
	assert_int_equal(st.peak_used, used);
	assert_int_equal(st.frees, 6);
	assert_int_equal(st.free_extents, 1);
	kvt_arena_close(a);
}

static void test_exhaustion(void **state)
{
	struct kvt_arena *a = open_pages(16);
	struct kvt_arena_stats st;
	size_t pg = page_size();
	void *p[16];

	(void)state;
	for (int i = 0; i < 16; i++) {
		p[i] = kvt_arena_alloc(a, pg);
		assert_non_null(p[i]);
	}
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 0);
	assert_int_equal(st.largest_free, 0);
	assert_null(kvt_arena_alloc(a, 1));
	kvt_arena_stats(a, &st);
	assert_int_equal(st.fails, 1);
	/* Larger than the whole arena, even as size_t. */
	assert_null(kvt_arena_alloc(a, 17 * pg));
	assert_null(kvt_arena_alloc(a, SIZE_MAX));
	/* len 0 is not a lack of room. */
	assert_null(kvt_arena_alloc(a, 0));
	kvt_arena_stats(a, &st);
	assert_int_equal(st.fails, 3);
	assert_int_equal(st.allocs, 16);

	/* Two one-page holes that are not adjacent do not make two pages. */
	kvt_arena_free(a, p[3]);
	kvt_arena_free(a, p[5]);
	assert_null(kvt_arena_alloc(a, 2 * pg));
	kvt_arena_stats(a, &st);
	assert_int_equal(st.fails, 4);
	assert_int_equal(st.free_extents, 2);
	/* Filling the gap between them merges all three. */
	kvt_arena_free(a, p[4]);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 1);
	assert_int_equal(st.largest_free, 3 * pg);
	p[3] = kvt_arena_alloc(a, 3 * pg);
	assert_ptr_equal(p[3], kvt_arena_base(a) + 3 * pg);
	for (int i = 0; i < 16; i++)
		if (i != 4 && i != 5)
			kvt_arena_free(a, p[i]);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 1);
	assert_int_equal(st.largest_free, 16 * pg);
	assert_int_equal(st.used, 0);

	/* The whole arena in one allocation. */
	p[0] = kvt_arena_alloc(a, 16 * pg);
	assert_ptr_equal(p[0], kvt_arena_base(a));
	kvt_arena_free(a, p[0]);
	kvt_arena_close(a);
}

/* Free A and C around a live B, then B: both sides coalesce. */
static void test_coalesce_both_sides(void **state)
{
	struct kvt_arena *a = open_pages(32);
	struct kvt_arena_stats st;
	size_t pg = page_size();
	void *x, *y, *z, *w;

	(void)state;
	x = kvt_arena_alloc(a, 2 * pg);
	y = kvt_arena_alloc(a, 3 * pg);
	z = kvt_arena_alloc(a, 4 * pg);
	w = kvt_arena_alloc(a, pg); /* keeps z's run off the tail */
	assert_non_null(w);
	kvt_arena_free(a, x);
	kvt_arena_free(a, z);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 3); /* x, z, the tail */
	kvt_arena_free(a, y);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 2);
	assert_int_equal(st.largest_free, 22 * pg);
	/* The merged 9-page hole is at the start and is reused as a whole. */
	x = kvt_arena_alloc(a, 9 * pg);
	assert_ptr_equal(x, kvt_arena_base(a));
	kvt_arena_free(a, w);
	kvt_arena_free(a, x);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 1);
	assert_int_equal(st.largest_free, 32 * pg);
	kvt_arena_close(a);
}

/* Values of one size reuse the run just freed; mixed holes fit well. */
static void test_exact_reuse(void **state)
{
	struct kvt_arena *a = open_pages(256);
	size_t pg = page_size();
	void *p[12], *q;

	(void)state;
	for (int i = 0; i < 12; i++)
		assert_non_null(p[i] = kvt_arena_alloc(a, 16 * pg));
	for (int round = 0; round < 100; round++) {
		int k = round * 7 % 12;

		kvt_arena_free(a, p[k]);
		q = kvt_arena_alloc(a, 16 * pg);
		assert_ptr_equal(q, p[k]);
	}
	for (int i = 0; i < 12; i++)
		kvt_arena_free(a, p[i]);

	/*
	 * Holes of 5, 3 and 4 pages between live runs, then the big tail: a
	 * 4-page request takes the 4-page hole, not the 5-page one first in
	 * its class nor the tail; a 3-page request the 3-page hole.
	 */
	{
		const uint32_t sizes[] = { 5, 1, 3, 1, 4, 1 };
		void *r[6];

		for (int i = 0; i < 6; i++)
			assert_non_null(r[i] = kvt_arena_alloc(a, sizes[i] * pg));
		kvt_arena_free(a, r[4]);
		kvt_arena_free(a, r[2]);
		kvt_arena_free(a, r[0]);
		assert_ptr_equal(kvt_arena_alloc(a, 4 * pg), r[4]);
		assert_ptr_equal(kvt_arena_alloc(a, 3 * pg), r[2]);
		assert_ptr_equal(kvt_arena_alloc(a, 5 * pg), r[0]);
		for (int i = 0; i < 6; i++)
			kvt_arena_free(a, r[i]);
	}
	kvt_arena_close(a);
}

/*
 * Random alloc/free against a shadow model: a per-page owner array.  Checks
 * that runs never overlap, stay in range and aligned, that used, allocs and
 * frees match, and that free_extents and largest_free equal the maximal free
 * runs of the shadow, which holds only if every free coalesces fully.  The
 * first and last bytes of each run carry its id, so a run handed out twice
 * would also show in the memory itself.
 */
#define STRESS_PAGES 2048u
#define STRESS_LIVE 256u

struct live {
	uint8_t *p;
	uint32_t pages;
	uint32_t id;
};

static void check_shadow(struct kvt_arena *a, const uint32_t *owner,
			 uint64_t used_pages, uint64_t nlive)
{
	struct kvt_arena_stats st;
	size_t pg = page_size();
	uint64_t extents = 0, largest = 0, run = 0;

	for (uint32_t i = 0; i <= STRESS_PAGES; i++) {
		if (i < STRESS_PAGES && owner[i] == 0) {
			run++;
			continue;
		}
		if (run) {
			extents++;
			if (run > largest)
				largest = run;
		}
		run = 0;
	}
	kvt_arena_stats(a, &st);
	assert_int_equal(st.used, used_pages * pg);
	assert_int_equal(st.allocs - st.frees, nlive);
	assert_int_equal(st.free_extents, extents);
	assert_int_equal(st.largest_free, largest * pg);
	assert_true(st.peak_used >= st.used);
}

static void test_random_stress(void **state)
{
	struct kvt_arena *a = open_pages(STRESS_PAGES);
	size_t pg = page_size();
	uint8_t *base = kvt_arena_base(a);
	uint32_t *owner = calloc(STRESS_PAGES, sizeof(*owner));
	struct live live[STRESS_LIVE];
	uint32_t nlive = 0, next_id = 1;
	uint64_t used_pages = 0, seed = 0x9E3779B97F4A7C15ull, fails = 0;
	struct kvt_arena_stats st;

	(void)state;
	assert_non_null(owner);
	for (int op = 0; op < 40000; op++) {
		uint64_t r = rnd(&seed);
		bool do_alloc = nlive == 0 ||
				(nlive < STRESS_LIVE && (r & 3) != 0 &&
				 (op / 4000) % 2 == 0) ||
				(nlive < STRESS_LIVE && (r & 3) == 0 &&
				 (op / 4000) % 2 == 1);

		if (do_alloc) {
			uint64_t kind = rnd(&seed) % 10;
			size_t len;
			uint8_t *p;
			uint32_t first, pages;

			if (kind < 4) /* the common size */
				len = 16 * pg;
			else if (kind < 7) /* small, not page multiples */
				len = 1 + rnd(&seed) % (8 * pg);
			else if (kind < 9) /* medium */
				len = 1 + rnd(&seed) % (64 * pg);
			else /* large, often too large when fragmented */
				len = 1 + rnd(&seed) % (512 * pg);
			p = kvt_arena_alloc(a, len);
			if (!p) {
				fails++;
				continue;
			}
			pages = (uint32_t)((len + pg - 1) / pg);
			assert_int_equal((uintptr_t)p % pg, 0);
			assert_true(p >= base);
			first = (uint32_t)((size_t)(p - base) / pg);
			assert_true(first + pages <= STRESS_PAGES);
			assert_int_equal(kvt_arena_alloc_size(a, p), pages * pg);
			for (uint32_t i = first; i < first + pages; i++) {
				assert_int_equal(owner[i], 0);
				owner[i] = next_id;
			}
			memcpy(p, &next_id, sizeof(next_id));
			memcpy(p + pages * pg - sizeof(next_id), &next_id,
			       sizeof(next_id));
			live[nlive++] = (struct live){ p, pages, next_id++ };
			used_pages += pages;
		} else {
			uint32_t k = (uint32_t)(rnd(&seed) % nlive);
			struct live l = live[k];
			uint32_t first = (uint32_t)((size_t)(l.p - base) / pg);
			uint32_t id;

			memcpy(&id, l.p, sizeof(id));
			assert_int_equal(id, l.id);
			memcpy(&id, l.p + l.pages * pg - sizeof(id), sizeof(id));
			assert_int_equal(id, l.id);
			for (uint32_t i = first; i < first + l.pages; i++) {
				assert_int_equal(owner[i], l.id);
				owner[i] = 0;
			}
			kvt_arena_free(a, l.p);
			live[k] = live[--nlive];
			used_pages -= l.pages;
		}
		if (op % 97 == 0)
			check_shadow(a, owner, used_pages, nlive);
	}
	check_shadow(a, owner, used_pages, nlive);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.fails, fails);
	/* The mix really exercised exhaustion and the full range. */
	assert_true(fails > 0);
	assert_true(st.peak_used > STRESS_PAGES * pg / 2);

	/* Free everything: one extent of the full size again. */
	while (nlive) {
		struct live l = live[--nlive];
		uint32_t first = (uint32_t)((size_t)(l.p - base) / pg);

		for (uint32_t i = first; i < first + l.pages; i++)
			owner[i] = 0;
		kvt_arena_free(a, l.p);
	}
	check_shadow(a, owner, 0, 0);
	kvt_arena_stats(a, &st);
	assert_int_equal(st.free_extents, 1);
	assert_int_equal(st.largest_free, kvt_arena_size(a));
	assert_int_equal(st.used, 0);
	free(owner);
	kvt_arena_close(a);
}

/* Bytes written through the daemon's mapping show in a second, independent
 * mapping of the fd, and the other way round. */
static void test_shared_mapping(void **state)
{
	struct kvt_arena *a = open_pages(32);
	size_t pg = page_size();
	uint64_t size = kvt_arena_size(a);
	uint8_t *p, *view;
	size_t off;
	int fd2;

	(void)state;
	assert_non_null(kvt_arena_alloc(a, 3 * pg)); /* p is not at offset 0 */
	p = kvt_arena_alloc(a, 2 * pg);
	assert_non_null(p);
	off = (size_t)(p - kvt_arena_base(a));
	assert_int_equal(off, 3 * pg);
	for (size_t i = 0; i < 2 * pg; i++)
		p[i] = (uint8_t)(i * 31 + 7);

	/* As a client would: its own fd (like one received by SCM_RIGHTS). */
	fd2 = dup(kvt_arena_fd(a));
	assert_true(fd2 >= 0);
	view = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
	assert_true(view != MAP_FAILED);
	close(fd2);
	assert_true(view != kvt_arena_base(a));
	assert_memory_equal(view + off, p, 2 * pg);
	for (size_t i = 0; i < 2 * pg; i++)
		assert_int_equal(view[off + i], (uint8_t)(i * 31 + 7));
	/* A PUT written by the client is seen by the daemon. */
	memset(view + off + pg, 0xA5, pg);
	for (size_t i = 0; i < pg; i++)
		assert_int_equal(p[pg + i], 0xA5);
	munmap(view, size);
	kvt_arena_close(a);
}

/* The seals hold for every holder of the file, even one that reopens it. */
static void test_sealed(void **state)
{
	struct kvt_arena *a = open_pages(8);
	uint64_t size = kvt_arena_size(a);
	char path[64];
	int fd2;

	(void)state;
	errno = 0;
	assert_int_not_equal(ftruncate(kvt_arena_fd(a), (off_t)size / 2), 0);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_not_equal(ftruncate(kvt_arena_fd(a), 0), 0);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_not_equal(ftruncate(kvt_arena_fd(a), (off_t)size * 2), 0);
	assert_int_equal(errno, EPERM);
	/* Seals cannot be removed or extended with more seals. */
	assert_int_not_equal(fcntl(kvt_arena_fd(a), F_ADD_SEALS, F_SEAL_WRITE), 0);

	snprintf(path, sizeof(path), "/proc/self/fd/%d", kvt_arena_fd(a));
	fd2 = open(path, O_RDWR);
	if (fd2 >= 0) {
		errno = 0;
		assert_int_not_equal(ftruncate(fd2, 0), 0);
		assert_int_equal(errno, EPERM);
		close(fd2);
	}
	/* Still whole and usable. */
	memset(kvt_arena_base(a), 1, size);
	kvt_arena_close(a);
}

/* Runs fn in a child and returns whether it died of SIGABRT (an assert). */
static bool aborts(void (*fn)(struct kvt_arena *), struct kvt_arena *a)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		/* No core files and no sanitizer noise for the expected abort. */
		signal(SIGABRT, SIG_DFL);
		fclose(stderr);
		fn(a);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void double_free(struct kvt_arena *a)
{
	void *p = kvt_arena_alloc(a, 2 * page_size());

	kvt_arena_free(a, p);
	kvt_arena_free(a, p);
}

static void interior_free(struct kvt_arena *a)
{
	uint8_t *p = kvt_arena_alloc(a, 2 * page_size());

	kvt_arena_free(a, p + page_size());
}

static void unaligned_free(struct kvt_arena *a)
{
	uint8_t *p = kvt_arena_alloc(a, 2 * page_size());

	kvt_arena_free(a, p + 1);
}

static void foreign_free(struct kvt_arena *a)
{
	static uint8_t x[1];

	kvt_arena_free(a, x);
}

static void good_free(struct kvt_arena *a)
{
	kvt_arena_free(a, kvt_arena_alloc(a, 2 * page_size()));
}

/* Freeing anything but a live allocation is caught, not silently corrupting. */
static void test_bad_free_asserts(void **state)
{
	struct kvt_arena *a = open_pages(8);

	(void)state;
	assert_false(aborts(good_free, a));
	assert_true(aborts(double_free, a));
	assert_true(aborts(interior_free, a));
	assert_true(aborts(unaligned_free, a));
	assert_true(aborts(foreign_free, a));
	kvt_arena_close(a);
}

/*
 * Threads allocating and freeing at once: each fills its runs with its own
 * pattern and checks it before freeing, so two threads given overlapping
 * runs would see each other's bytes.
 */
#define THR_N 4
#define THR_OPS 20000
#define THR_PAGES 1024u

struct thr_arg {
	struct kvt_arena *a;
	uint8_t tag;
	uint64_t seed;
	int bad;
	uint64_t allocs;
};

static void *thr_main(void *argp)
{
	struct thr_arg *t = argp;
	size_t pg = page_size();
	struct {
		uint8_t *p;
		size_t len;
		uint8_t fill;
	} held[16];
	unsigned n = 0;

	for (int op = 0; op < THR_OPS; op++) {
		if (n < 16 && (n == 0 || rnd(&t->seed) % 2)) {
			size_t len = 1 + rnd(&t->seed) % (16 * pg);
			uint8_t *p = kvt_arena_alloc(t->a, len);
			uint8_t fill = (uint8_t)(t->tag * 16 + n);

			if (!p)
				continue;
			if (!kvt_arena_contains(t->a, p) || (uintptr_t)p % pg ||
			    kvt_arena_alloc_size(t->a, p) < len)
				t->bad++;
			memset(p, fill, len);
			held[n].p = p;
			held[n].len = len;
			held[n].fill = fill;
			n++;
			t->allocs++;
		} else {
			unsigned k = (unsigned)(rnd(&t->seed) % n);

			for (size_t i = 0; i < held[k].len; i++)
				if (held[k].p[i] != held[k].fill) {
					t->bad++;
					break;
				}
			kvt_arena_free(t->a, held[k].p);
			held[k] = held[--n];
		}
	}
	while (n)
		kvt_arena_free(t->a, held[--n].p);
	return NULL;
}

static void test_threads(void **state)
{
	struct kvt_arena *a = open_pages(THR_PAGES);
	struct kvt_arena_stats st;
	struct thr_arg args[THR_N];
	pthread_t th[THR_N];
	uint64_t allocs = 0;

	(void)state;
	for (int i = 0; i < THR_N; i++) {
		args[i] = (struct thr_arg){ a, (uint8_t)(i + 1),
					    0x1234567ull * (uint64_t)(i + 1),
					    0, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, thr_main,
						&args[i]), 0);
	}
	for (int i = 0; i < THR_N; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].bad, 0);
		allocs += args[i].allocs;
	}
	kvt_arena_stats(a, &st);
	assert_int_equal(st.allocs, allocs);
	assert_int_equal(st.frees, allocs);
	assert_int_equal(st.used, 0);
	assert_int_equal(st.free_extents, 1);
	assert_int_equal(st.largest_free, kvt_arena_size(a));
	kvt_arena_close(a);
}

/*
 * Prefaulting runs beside allocations without touching their bytes, reports
 * its progress, and close stops it even half way.
 */
static void test_prefault(void **state)
{
	const uint64_t size = 64ull << 20;
	struct kvt_arena_stats st;
	struct kvt_arena *a;
	uint8_t *p;

	(void)state;
	assert_int_equal(kvt_arena_open(&a, "prefault", size), 0);
	p = kvt_arena_alloc(a, 1 << 20);
	assert_non_null(p);
	memset(p, 0x5a, 1 << 20);
	assert_int_equal(kvt_arena_prefault(a), 0);
	assert_int_equal(kvt_arena_prefault(a), KVT_EINVAL); /* once */
	for (int i = 0; i < 1000; i++) {
		kvt_arena_stats(a, &st);
		if (st.prefaulted == size)
			break;
		usleep(10000);
	}
	assert_int_equal(st.prefaulted, size);
	for (size_t i = 0; i < (1 << 20); i++)
		if (p[i] != 0x5a)
			fail_msg("prefault changed byte %zu", i);
	kvt_arena_free(a, p);
	kvt_arena_close(a);

	/* Closing while it runs (a big arena) stops and joins it. */
	assert_int_equal(kvt_arena_open(&a, "prefault", 8ull << 30), 0);
	assert_int_equal(kvt_arena_prefault(a), 0);
	kvt_arena_close(a);
	assert_int_equal(kvt_arena_prefault(NULL), KVT_EINVAL);
}

/* Pages of [base + from, base + to) resident (page cache of the memfd). */
static size_t resident(struct kvt_arena *a, uint64_t from, uint64_t to)
{
	size_t pg = page_size(), n = (size_t)((to - from) / pg), r = 0;
	unsigned char *v = malloc(n);

	assert_non_null(v);
	assert_int_equal(mincore(kvt_arena_base(a) + from, (size_t)(to - from),
				 v), 0);
	for (size_t i = 0; i < n; i++)
		r += v[i] & 1;
	free(v);
	return r;
}

/* Waits up to 10 s for kvt_arena_stats().prefaulted to reach want. */
static uint64_t wait_prefaulted(struct kvt_arena *a, uint64_t want)
{
	struct kvt_arena_stats st;

	for (int i = 0; i < 1000; i++) {
		kvt_arena_stats(a, &st);
		if (st.prefaulted >= want)
			break;
		usleep(10000);
	}
	return st.prefaulted;
}

/*
 * kvt_arena_warm() keeps the pages below the highest allocation plus its
 * lead faulted in, follows allocations up, goes no further, and never
 * changes what blocks hold.
 */
static void test_warm(void **state)
{
	const uint64_t size = 256ull << 20, ahead = 8ull << 20;
	const size_t pg = page_size();
	struct kvt_arena *a;
	uint8_t *p, *q;

	(void)state;
	assert_int_equal(kvt_arena_open(&a, "warm", size), 0);
	assert_int_equal(kvt_arena_warm(a, 0), KVT_EINVAL);
	assert_int_equal(kvt_arena_warm(NULL, ahead), KVT_EINVAL);
	p = kvt_arena_alloc(a, 1 << 20);
	assert_non_null(p);
	assert_ptr_equal(p, kvt_arena_base(a)); /* fresh memory from the start */
	memset(p, 0x5a, 1 << 20);
	assert_int_equal(kvt_arena_warm(a, ahead), 0);
	assert_int_equal(kvt_arena_warm(a, ahead), KVT_EINVAL); /* once */
	assert_int_equal(kvt_arena_prefault(a), KVT_EINVAL); /* not both */
	/* The lead: 1 MiB used, pages to 9 MiB (in 2 MiB calls: 10). */
	assert_true(wait_prefaulted(a, (1 << 20) + ahead) >= (1 << 20) + ahead);
	usleep(100000);
	assert_int_equal(resident(a, 0, (1 << 20) + ahead),
			 ((1 << 20) + ahead) / pg);
	/* ...and no further (the rest stays untouched). */
	assert_int_equal(resident(a, 16ull << 20, size), 0);
	/* Allocations move the frontier: 40 MiB more, so pages to 49 MiB. */
	q = kvt_arena_alloc(a, 40u << 20);
	assert_non_null(q);
	assert_true(wait_prefaulted(a, (41ull << 20) + ahead) >=
		    (41ull << 20) + ahead);
	usleep(100000);
	assert_int_equal(resident(a, 0, (41ull << 20) + ahead),
			 ((41ull << 20) + ahead) / pg);
	assert_int_equal(resident(a, 56ull << 20, size), 0);
	for (size_t i = 0; i < (1 << 20); i++)
		if (p[i] != 0x5a)
			fail_msg("warming changed byte %zu", i);
	kvt_arena_free(a, q);
	kvt_arena_free(a, p);
	kvt_arena_close(a); /* stops and joins the thread */

	/* Closing at once, with the thread busy or waiting. */
	assert_int_equal(kvt_arena_open(&a, "warm", size), 0);
	assert_int_equal(kvt_arena_warm(a, size), 0);
	kvt_arena_close(a);
	assert_int_equal(kvt_arena_open(&a, "warm", size), 0);
	assert_int_equal(kvt_arena_prefault(a), 0);
	assert_int_equal(kvt_arena_warm(a, ahead), KVT_EINVAL);
	kvt_arena_close(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_close),
		cmocka_unit_test(test_alloc_aligned_in_range),
		cmocka_unit_test(test_exhaustion),
		cmocka_unit_test(test_coalesce_both_sides),
		cmocka_unit_test(test_exact_reuse),
		cmocka_unit_test(test_random_stress),
		cmocka_unit_test(test_shared_mapping),
		cmocka_unit_test(test_sealed),
		cmocka_unit_test(test_bad_free_asserts),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_prefault),
		cmocka_unit_test(test_warm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
