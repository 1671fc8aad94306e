/*
 * test_regmem.c - registered client memory on a real kvtierd (issue #14):
 *
 *  - a process running as another uid (65534) registers a memfd and stores
 *    64 pages as two segments each (K half and V half, apart in its pool),
 *    a third process (uid 65533) reads them into its own region with
 *    identical bytes, and the daemon's socket counters (bytes_in +
 *    bytes_out) grow by no more than the keys and segment lists need,
 *    while its region counters count every byte copied;
 *  - values in L1, L2 and L3 all land right; a length mismatch writes
 *    nothing, a miss is a miss; batches larger than one request are split;
 *  - a client that truncates its unsealed file (a memfd, and a file in
 *    /dev/shm, vLLM's kind) before and during a transfer gets KVT_EFAULT for
 *    its keys, the region is broken from then on, and the daemon serves the
 *    next client and counts the fault; a sealed memfd cannot be shrunk and
 *    its transfers need no containment;
 *  - jobs: many in flight on one connection, the poll fd readable exactly
 *    while something can be collected, synchronous calls collecting the
 *    replies ahead of theirs, cap smaller than what finished;
 *  - limits (reg-max, reg-max-bytes), files that are refused (a file on
 *    disk, a pipe), read-only regions, and malformed requests and
 *    descriptor abuse on the raw socket;
 *  - a handle used in a child after fork() or by a second thread is
 *    refused by the new calls as by the old ones.
 * The uid part needs root and is skipped without it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>

#include "integ_harness.h"
#include "kvt_frame.h"
#include "kvt_reg.h"
#include "kvtier.h"

static struct integ_daemon D;

static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
}

static kvt_client *connect_d(void)
{
	kvt_client *c = NULL;

	assert_int_equal(kvt_connect(&c, D.sock), 0);
	return c;
}

/* A memfd of size bytes, mapped; sealed against shrinking if asked. */
static uint8_t *memfd(size_t size, bool seal, int *fd)
{
	uint8_t *p;

	*fd = memfd_create("test_regmem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_true(*fd >= 0);
	assert_int_equal(ftruncate(*fd, (off_t)size), 0);
	if (seal)
		assert_int_equal(fcntl(*fd, F_ADD_SEALS,
				       F_SEAL_SHRINK | F_SEAL_GROW), 0);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

/* A number from the stats document ("obj":{... "key":N ...}). */
static uint64_t stat_num(const char *obj, const char *key)
{
	kvt_client *c = connect_d();
	char *j = NULL;
	uint64_t v = 0;
	size_t n;

	assert_int_equal(kvt_stats_json(c, &j, &n), 0);
	kvt_close(c);
	assert_int_equal(integ_json_u64(j, obj, key, &v), 0);
	free(j);
	return v;
}

/*
 * A batch of n pages: page i is key "<tag>-<i>" and its value is its K half
 * at i * half and its V half at vbase + i * half of region id.
 */
struct pages {
	size_t n;
	char names[256][24];
	const void *keys[256];
	size_t key_lens[256], nsegs[256], lens[256];
	int st[256];
	struct kvt_seg segs[512];
};

static void pages_init(struct pages *p, const char *tag, size_t n,
		       uint32_t id, size_t half, size_t vbase)
{
	assert_true(n <= 256);
	memset(p, 0, sizeof(*p));
	p->n = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(p->names[i], sizeof(p->names[i]), "%s-%zu", tag, i);
		p->keys[i] = p->names[i];
		p->key_lens[i] = strlen(p->names[i]);
		p->nsegs[i] = 2;
		p->segs[2 * i] = (struct kvt_seg){ id, i * half, half };
		p->segs[2 * i + 1] =
			(struct kvt_seg){ id, vbase + i * half, half };
	}
}

/* Page i's bytes (both halves) as the writer made them. */
static void page_fill(uint8_t *pool, size_t i, size_t half, size_t vbase,
		      uint64_t seed)
{
	integ_fill(pool + i * half, half, seed * 1000 + i * 2);
	integ_fill(pool + vbase + i * half, half, seed * 1000 + i * 2 + 1);
}

static bool page_ok(const uint8_t *pool, size_t i, size_t half,
		    size_t vbase, uint64_t seed)
{
	uint8_t *want = malloc(half);
	bool ok;

	integ_fill(want, half, seed * 1000 + i * 2);
	ok = memcmp(pool + i * half, want, half) == 0;
	integ_fill(want, half, seed * 1000 + i * 2 + 1);
	ok = ok && memcmp(pool + vbase + i * half, want, half) == 0;
	free(want);
	return ok;
}

/* ---- another uid writes, a third reads ------------------------------- */

#define PAGES 64
#define HALF (128u << 10) /* a 256 KiB page: K and V halves of 128 KiB */

/*
 * Runs as uid: registers a memfd of its own and stores (put) or reads
 * (get) PAGES pages of it.  Exit status 0 when every page went right.
 */
static int child_io(uid_t uid, bool put)
{
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		size_t pool = 2 * PAGES * HALF, vbase = PAGES * HALF;
		struct kvt_region reg;
		struct pages *p = malloc(sizeof(*p));
		kvt_client *c = NULL;
		int fd, rc;
		uint8_t *m;

		if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
			_exit(10);
		m = memfd(pool, true, &fd);
		if (kvt_connect(&c, D.sock) || kvt_client_shm(c))
			_exit(11); /* and another uid never gets the arena */
		if (kvt_register(c, fd, 0, 0, 0, &reg) ||
		    reg.length != pool || !(reg.flags & KVT_REGION_SEALED))
			_exit(12);
		pages_init(p, "page", PAGES, reg.id, HALF, vbase);
		if (put) {
			struct kvt_put_opts o = { .dtype = KVT_DTYPE_BF16 };

			for (size_t i = 0; i < PAGES; i++)
				page_fill(m, i, HALF, vbase, 7);
			rc = kvt_mput_from(c, "uid-test", p->keys, p->key_lens,
					   PAGES, p->segs, p->nsegs, &o, p->st);
			/* Copied out: the pool may change at once. */
			memset(m, 0, pool);
		} else {
			memset(m, 0xa5, pool);
			rc = kvt_mget_to(c, "uid-test", p->keys, p->key_lens,
					 PAGES, p->segs, p->nsegs, p->lens,
					 p->st);
		}
		if (rc)
			_exit(13);
		for (size_t i = 0; i < PAGES; i++)
			if (p->st[i] || (!put && (p->lens[i] != 2 * HALF ||
					 !page_ok(m, i, HALF, vbase, 7))))
				_exit(14);
		kvt_close(c);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_other_uids(void **state)
{
	uint64_t in0, out0, in1, out1, wire, copied0;

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_int_equal(integ_start(&D, (const char *const[]){
					 "--l1-size", "256M", "--socket-mode",
					 "0666", NULL }),
			 0);
	assert_int_equal(chmod(D.dir, 0755), 0);
	in0 = stat_num(NULL, "bytes_in");
	out0 = stat_num(NULL, "bytes_out");
	copied0 = stat_num("regions", "copied_in_bytes");
	assert_int_equal(child_io(65534, true), 0);
	assert_int_equal(child_io(65533, false), 0);
	in1 = stat_num(NULL, "bytes_in");
	out1 = stat_num(NULL, "bytes_out");
	/*
	 * What went over the socket: per page its key (4 + 7 bytes), two
	 * segments (48) and a result (16), twice; per client a HELLO, a
	 * REGISTER and the frame headers, and the STATS reply of the first
	 * stat_num() (a few KiB) counted in between.  The 32 MiB of pages
	 * went through the regions.
	 */
	wire = 2 * PAGES * (4 + 7 + 48 + 16) + 2 * 1024;
	print_message("socket bytes for %u pages of %u KiB stored and read "
		      "back: %llu (bound %llu)\n", PAGES, 2 * HALF >> 10,
		      (unsigned long long)(in1 + out1 - in0 - out0),
		      (unsigned long long)(wire + 64 * 1024));
	assert_true(in1 + out1 - in0 - out0 < wire + 64 * 1024);
	assert_true(stat_num("regions", "copied_out_bytes") >=
		    (uint64_t)PAGES * 2 * HALF);
	assert_int_equal(stat_num("regions", "copied_in_bytes") - copied0,
			 (uint64_t)PAGES * 2 * HALF);
	assert_int_equal(stat_num("regions", "copies_in"), PAGES);
	assert_int_equal(stat_num("regions", "faults_contained"), 0);
	/* Both children are gone: their regions with them. */
	for (int i = 0; i < 200 && stat_num("regions", "mapped"); i++)
		integ_sleep_ms(10);
	assert_int_equal(stat_num("regions", "mapped"), 0);
	assert_int_equal(stat_num("regions", "registered"), 2);
}

/* ---- every tier, mismatches, misses, big batches ----------------------- */

static void test_tiers(void **state)
{
	const size_t half = 256u << 10, n = 96, vbase = n * half;
	size_t pool = 2 * n * half;
	struct pages *p = malloc(sizeof(*p)), *q = malloc(sizeof(*q));
	struct kvt_put_opts o = { .dtype = KVT_DTYPE_BF16 };
	struct kvt_region reg, reg2;
	kvt_client *c;
	int fd, fd2;
	uint8_t *m, *m2;

	(void)state;
	/* L1 holds 8 pages, L2 some more, the rest goes to L3. */
	assert_int_equal(integ_start(&D, (const char *const[]){
					 "--l1-size", "5M", "--l2-size", "6M",
					 NULL }),
			 0);
	c = connect_d();
	m = memfd(pool, true, &fd);
	m2 = memfd(pool, false, &fd2);
	assert_int_equal(kvt_register(c, fd, 0, 0, 0, &reg), 0);
	assert_int_equal(kvt_register(c, fd2, 0, 0, 0, &reg2), 0);
	assert_true(reg.flags & KVT_REGION_SEALED);
	assert_false(reg2.flags & KVT_REGION_SEALED);
	assert_int_not_equal(reg.id, reg2.id);
	pages_init(p, "t", n, reg.id, half, vbase);
	for (size_t i = 0; i < n; i++)
		page_fill(m, i, half, vbase, 3);
	assert_int_equal(kvt_mput_from(c, "tiers", p->keys, p->key_lens, n,
				       p->segs, p->nsegs, &o, p->st),
			 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(p->st[i], 0);
	/* Let the demotions land, then read everything twice. */
	integ_sleep_ms(500);
	for (int round = 0; round < 2; round++) {
		pages_init(q, "t", n, reg2.id, half, vbase);
		memset(m2, 0xa5, pool);
		assert_int_equal(kvt_mget_to(c, "tiers", q->keys, q->key_lens,
					     n, q->segs, q->nsegs, q->lens,
					     q->st),
				 0);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(q->st[i], 0);
			assert_int_equal(q->lens[i], 2 * half);
			assert_true(page_ok(m2, i, half, vbase, 3));
		}
	}
	assert_true(stat_num("l3", "hits") > 0 || stat_num("l2", "hits") > 0);

	/* A miss and a length mismatch write nothing; the rest is served. */
	pages_init(q, "t", 3, reg2.id, half, vbase);
	snprintf(q->names[1], sizeof(q->names[1]), "absent");
	q->key_lens[1] = 6;
	q->segs[5].len = half - 1;
	memset(m2, 0xa5, pool);
	assert_int_equal(kvt_mget_to(c, "tiers", q->keys, q->key_lens, 3,
				     q->segs, q->nsegs, q->lens, q->st),
			 0);
	assert_int_equal(q->st[0], 0);
	assert_int_equal(q->st[1], KVT_ENOTFOUND);
	assert_int_equal(q->lens[1], 0);
	assert_int_equal(q->st[2], KVT_ERANGE);
	assert_int_equal(q->lens[2], 2 * half);
	for (size_t i = half; i < 3 * half; i++)
		assert_int_equal(m2[i], 0xa5);

	/* More keys than one request takes: split, every key answered. */
	{
		enum { BIG = 5000 };
		static char names[BIG][12];
		static const void *keys[BIG];
		static size_t kl[BIG], ns[BIG], lens[BIG];
		static int st[BIG];
		static struct kvt_seg segs[BIG];

		for (size_t i = 0; i < BIG; i++) {
			snprintf(names[i], sizeof(names[i]), "s%zu", i);
			keys[i] = names[i];
			kl[i] = strlen(names[i]);
			ns[i] = 1;
			segs[i] = (struct kvt_seg){ reg.id, i * 64, 64 };
		}
		integ_fill(m, BIG * 64, 99);
		assert_int_equal(kvt_mput_from(c, "small", keys, kl, BIG, segs,
					       ns, NULL, st),
				 0);
		for (size_t i = 0; i < BIG; i++)
			assert_int_equal(st[i], 0);
		for (size_t i = 0; i < BIG; i++)
			segs[i].region = reg2.id;
		memset(m2, 0, BIG * 64);
		assert_int_equal(kvt_mget_to(c, "small", keys, kl, BIG, segs,
					     ns, lens, st),
				 0);
		for (size_t i = 0; i < BIG; i++)
			assert_int_equal(st[i], 0);
		assert_memory_equal(m, m2, BIG * 64);
	}
	kvt_close(c);
	munmap(m, pool);
	munmap(m2, pool);
	close(fd);
	close(fd2);
	free(p);
	free(q);
}

/* ---- truncation -------------------------------------------------------------- */

/* A fresh client answers: the daemon survived. */
static void still_serving(void)
{
	kvt_client *c = connect_d();
	size_t n;
	char v[8];

	assert_int_equal(kvt_ping(c), 0);
	assert_int_equal(kvt_put(c, "alive", "k", 1, "yes", 3, NULL), 0);
	assert_int_equal(kvt_get(c, "alive", "k", 1, v, sizeof(v), &n), 0);
	assert_int_equal(n, 3);
	kvt_close(c);
}

static void test_truncate(void **state)
{
	const size_t half = 512u << 10, n = 32, vbase = n * half;
	size_t pool = 2 * n * half;
	struct pages *p = malloc(sizeof(*p));
	struct kvt_region reg;
	kvt_client *c;
	uint64_t job;
	int fd;
	uint8_t *m;

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){
					 "--l1-size", "256M", NULL }),
			 0);
	c = connect_d();
	/* A sealed memfd cannot be shrunk: nothing to contain. */
	m = memfd(pool, true, &fd);
	assert_int_equal(ftruncate(fd, 4096), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(kvt_register(c, fd, 0, 0, 0, &reg), 0);
	pages_init(p, "v", n, reg.id, half, vbase);
	for (size_t i = 0; i < n; i++)
		page_fill(m, i, half, vbase, 5);
	assert_int_equal(kvt_mput_from(c, "trunc", p->keys, p->key_lens, n,
				       p->segs, p->nsegs, NULL, p->st),
			 0);
	assert_int_equal(kvt_mget_to(c, "trunc", p->keys, p->key_lens, n,
				     p->segs, p->nsegs, p->lens, p->st),
			 0);
	assert_int_equal(stat_num("regions", "faults_contained"), 0);
	munmap(m, pool);
	close(fd);

	/* An unsealed memfd truncated before the transfer: every key fails. */
	m = memfd(pool, false, &fd);
	assert_int_equal(kvt_register(c, fd, 0, 0, 0, &reg), 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	pages_init(p, "v", n, reg.id, half, vbase);
	assert_int_equal(kvt_mget_to(c, "trunc", p->keys, p->key_lens, n,
				     p->segs, p->nsegs, p->lens, p->st),
			 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(p->st[i], KVT_EFAULT);
	assert_int_equal(stat_num("regions", "faults_contained"), 1);
	still_serving();
	/* Broken from now on: refused whole, until registered again. */
	assert_int_equal(kvt_mget_to(c, "trunc", p->keys, p->key_lens, n,
				     p->segs, p->nsegs, p->lens, p->st),
			 KVT_EFAULT);
	assert_int_equal(p->st[0], KVT_EFAULT);
	assert_int_equal(kvt_unregister(c, reg.id), 0);
	assert_int_equal(ftruncate(fd, (off_t)pool), 0);
	assert_int_equal(kvt_register(c, fd, 0, 0, 0, &reg), 0);
	pages_init(p, "v", n, reg.id, half, vbase);
	assert_int_equal(kvt_mget_to(c, "trunc", p->keys, p->key_lens, n,
				     p->segs, p->nsegs, p->lens, p->st),
			 0);
	for (size_t i = 0; i < n; i++)
		assert_true(p->st[i] == 0 && page_ok(m, i, half, vbase, 5));
	/* A put from a truncated file fails the same way. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(kvt_mput_from(c, "trunc2", p->keys, p->key_lens, n,
				       p->segs, p->nsegs, NULL, p->st),
			 0);
	assert_int_equal(p->st[0], KVT_EFAULT);
	munmap(m, pool);
	close(fd);

	/*
	 * vLLM's kind of file, in /dev/shm, truncated while a job copies into
	 * it: each key is done or failed, never anything else, and the
	 * daemon goes on.
	 */
	{
		char path[64];
		struct kvt_job_done d;
		size_t got = 0;
		int f;

		snprintf(path, sizeof(path), "/dev/shm/kvtier-test-%d",
			 (int)getpid());
		f = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
		if (f < 0)
			skip(); /* no /dev/shm here */
		unlink(path);
		assert_int_equal(ftruncate(f, (off_t)pool), 0);
		assert_int_equal(kvt_register(c, f, 0, 0, 0, &reg), 0);
		assert_false(reg.flags & KVT_REGION_SEALED);
		pages_init(p, "v", n, reg.id, half, vbase);
		assert_int_equal(kvt_submit_mget_to(c, "trunc", p->keys,
						    p->key_lens, n, p->segs,
						    p->nsegs, p->lens, p->st,
						    &job),
				 0);
		assert_int_equal(ftruncate(f, 0), 0);
		while (!got)
			assert_int_equal(kvt_poll(c, 5000, &d, 1, &got), 0);
		assert_int_equal(d.job, job);
		assert_int_equal(d.status, 0);
		for (size_t i = 0; i < n; i++) {
			assert_true(p->st[i] == 0 || p->st[i] == KVT_EFAULT);
			got += p->st[i] == 0;
		}
		print_message("truncated during the job: %zu of %zu pages "
			      "copied before the fault\n", got - 1, n);
		close(f);
	}
	still_serving();
	assert_int_equal(kvt_ping(c), 0);
	kvt_close(c);
	free(p);
}

/* ---- jobs and the poll fd ----------------------------------------------------- */

static bool fd_readable(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };

	return poll(&p, 1, 0) == 1;
}

static void test_jobs(void **state)
{
	enum { J = 48, K = 4 };
	const size_t half = 64u << 10, vbase = J * K * half;
	size_t pool = 2 * J * K * half;
	static struct pages p[J];
	struct kvt_job_done d[J];
	struct kvt_region reg;
	uint64_t ids[J];
	kvt_client *c;
	size_t n, got;
	int fd, pfd;
	uint8_t *m;

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){
					 "--l1-size", "128M", NULL }),
			 0);
	c = connect_d();
	m = memfd(pool, true, &fd);
	assert_int_equal(kvt_register(c, fd, 0, 0, 0, &reg), 0);
	pfd = kvt_poll_fd(c);
	assert_true(pfd >= 0);
	assert_int_equal(kvt_poll_fd(c), pfd);
	assert_false(fd_readable(pfd));
	/* Nothing in flight: poll returns at once. */
	assert_int_equal(kvt_poll(c, -1, d, J, &n), 0);
	assert_int_equal(n, 0);

	/* Stores as J jobs of K pages each, all in flight at once. */
	for (size_t j = 0; j < J; j++) {
		char tag[8];

		snprintf(tag, sizeof(tag), "j%zu", j);
		pages_init(&p[j], tag, K, reg.id, half, vbase);
		for (size_t i = 0; i < K; i++) {
			p[j].segs[2 * i].offset = (j * K + i) * half;
			p[j].segs[2 * i + 1].offset = vbase + (j * K + i) * half;
			page_fill(m, j * K + i, half, vbase, 11);
		}
		assert_int_equal(kvt_submit_mput_from(c, "jobs", p[j].keys,
						      p[j].key_lens, K,
						      p[j].segs, p[j].nsegs,
						      NULL, p[j].st, &ids[j]),
				 0);
		assert_true(ids[j] > (j ? ids[j - 1] : 0));
	}
	for (got = 0; got < J; got += n) {
		assert_int_equal(kvt_poll(c, 5000, d + got, J - got, &n), 0);
		assert_true(n > 0);
	}
	for (size_t j = 0; j < J; j++) {
		assert_int_equal(d[j].job, ids[j]); /* in submission order */
		assert_int_equal(d[j].status, 0);
		for (size_t i = 0; i < K; i++)
			assert_int_equal(p[j].st[i], 0);
	}
	/* Everything collected: the fd is not readable. */
	assert_false(fd_readable(pfd));

	/*
	 * Reads as jobs; a synchronous call behind them reads their replies
	 * first, after which the fd is readable with nothing on the socket
	 * and poll(0) hands them all over.
	 */
	memset(m, 0xa5, pool);
	for (size_t j = 0; j < J; j++)
		assert_int_equal(kvt_submit_mget_to(c, "jobs", p[j].keys,
						    p[j].key_lens, K,
						    p[j].segs, p[j].nsegs,
						    p[j].lens, p[j].st,
						    &ids[j]),
				 0);
	assert_int_equal(kvt_ping(c), 0);
	assert_true(fd_readable(pfd));
	/* cap 5: five now, the fd still readable for the rest. */
	assert_int_equal(kvt_poll(c, 0, d, 5, &n), 0);
	assert_int_equal(n, 5);
	assert_true(fd_readable(pfd));
	assert_int_equal(kvt_poll(c, 0, d + 5, J, &n), 0);
	assert_int_equal(n, J - 5);
	assert_false(fd_readable(pfd));
	for (size_t j = 0; j < J; j++) {
		assert_int_equal(d[j].job, ids[j]);
		for (size_t i = 0; i < K; i++) {
			assert_int_equal(p[j].st[i], 0);
			assert_true(page_ok(m, j * K + i, half, vbase, 11));
		}
	}
	/* A synchronous batch while jobs are in flight: both right. */
	assert_int_equal(kvt_submit_mget_to(c, "jobs", p[0].keys,
					    p[0].key_lens, K, p[0].segs,
					    p[0].nsegs, p[0].lens, p[0].st,
					    &ids[0]),
			 0);
	assert_int_equal(kvt_mget_to(c, "jobs", p[1].keys, p[1].key_lens, K,
				     p[1].segs, p[1].nsegs, p[1].lens,
				     p[1].st),
			 0);
	assert_int_equal(kvt_poll(c, 0, d, J, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].job, ids[0]);
	/* A refused job comes with its reason; others are unaffected. */
	p[2].segs[0].region = reg.id + 100;
	assert_int_equal(kvt_submit_mget_to(c, "jobs", p[2].keys,
					    p[2].key_lens, K, p[2].segs,
					    p[2].nsegs, p[2].lens, p[2].st,
					    &ids[2]),
			 0);
	assert_int_equal(kvt_poll(c, 5000, d, J, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].status, KVT_EBADREQ);
	assert_int_equal(p[2].st[3], KVT_EBADREQ);
	assert_int_equal(kvt_ping(c), 0);
	/* Arguments refused before anything is sent. */
	assert_int_equal(kvt_submit_mget_to(c, "jobs", p[3].keys,
					    p[3].key_lens, K, p[3].segs,
					    p[3].nsegs, p[3].lens, p[3].st,
					    NULL),
			 KVT_EINVAL);
	assert_int_equal(kvt_poll(c, 0, NULL, 1, &n), KVT_EINVAL);
	kvt_close(c); /* closes the poll fd */
	assert_int_equal(fcntl(pfd, F_GETFD), -1);
	munmap(m, pool);
	close(fd);
}

/* ---- limits and refusals --------------------------------------------------------- */

static void test_limits(void **state)
{
	struct kvt_region reg;
	kvt_client *c;
	int fds[3], pipefd[2], f;
	char path[400];

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){
					 "--reg-max", "2", "--reg-max-bytes",
					 "3M", NULL }),
			 0);
	c = connect_d();
	for (int i = 0; i < 3; i++)
		munmap(memfd(1u << 20, false, &fds[i]), 1u << 20);
	assert_int_equal(kvt_register(c, fds[0], 0, 0, 0, &reg), 0);
	/* Past the end, or empty. */
	assert_int_equal(kvt_register(c, fds[1], 4096, 1u << 20, 0, &reg),
			 KVT_EBADREQ);
	assert_int_equal(kvt_register(c, fds[1], 1u << 20, 0, 0, &reg),
			 KVT_EBADREQ);
	/* Any offset; a tail of the file by default. */
	assert_int_equal(kvt_register(c, fds[1], 12345, 0, 0, &reg), 0);
	assert_int_equal(reg.length, (1u << 20) - 12345);
	/* reg-max */
	assert_int_equal(kvt_register(c, fds[2], 0, 0, 0, &reg), KVT_ETOOBIG);
	assert_int_equal(kvt_unregister(c, reg.id), 0);
	assert_int_equal(kvt_unregister(c, reg.id), KVT_ENOTFOUND);
	/* reg-max-bytes: 1M + 4M is over 3M. */
	close(fds[2]);
	munmap(memfd(4u << 20, false, &fds[2]), 4u << 20);
	assert_int_equal(kvt_register(c, fds[2], 0, 0, 0, &reg), KVT_ETOOBIG);
	assert_int_equal(kvt_register(c, fds[2], 0, 1u << 20, 0, &reg), 0);
	/* Not memory: a file on disk, a pipe. */
	assert_int_equal(kvt_unregister(c, reg.id), 0);
	snprintf(path, sizeof(path), "%s/ondisk", D.dir);
	f = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	assert_true(f >= 0);
	assert_int_equal(ftruncate(f, 1 << 20), 0);
	assert_int_equal(kvt_register(c, f, 0, 0, 0, &reg), KVT_EDENIED);
	assert_non_null(strstr(kvt_client_errmsg(c), "memfd"));
	close(f);
	assert_int_equal(pipe(pipefd), 0);
	assert_int_equal(kvt_register(c, pipefd[0], 0, 4096, 0, &reg),
			 KVT_EDENIED);
	close(pipefd[0]);
	close(pipefd[1]);
	/* Read-only: only a source. */
	{
		struct pages *p = malloc(sizeof(*p));
		char self[64];
		int ro;

		snprintf(self, sizeof(self), "/proc/self/fd/%d", fds[1]);
		ro = open(self, O_RDONLY | O_CLOEXEC);
		assert_true(ro >= 0);
		assert_int_equal(kvt_register(c, ro, 0, 0, 0, &reg),
				 KVT_EDENIED);
		assert_int_equal(kvt_register(c, ro, 0, 0, KVT_REGION_READONLY,
					      &reg),
				 0);
		assert_true(reg.flags & KVT_REGION_READONLY);
		pages_init(p, "ro", 2, reg.id, 1024, 8192);
		assert_int_equal(kvt_mput_from(c, "ro", p->keys, p->key_lens,
					       2, p->segs, p->nsegs, NULL,
					       p->st),
				 0);
		assert_int_equal(p->st[1], 0);
		assert_int_equal(kvt_mget_to(c, "ro", p->keys, p->key_lens, 2,
					     p->segs, p->nsegs, p->lens,
					     p->st),
				 KVT_EBADREQ);
		assert_non_null(strstr(kvt_client_errmsg(c), "read-only"));
		/* Out of its bounds. */
		p->segs[3].offset = reg.length;
		assert_int_equal(kvt_mput_from(c, "ro", p->keys, p->key_lens,
					       2, p->segs, p->nsegs, NULL,
					       p->st),
				 KVT_EBADREQ);
		assert_int_equal(p->st[0], KVT_EBADREQ);
		close(ro);
		free(p);
	}
	/* Arguments. */
	assert_int_equal(kvt_register(c, -1, 0, 0, 0, &reg), KVT_EINVAL);
	assert_int_equal(kvt_register(c, fds[0], 0, 0, 4, &reg), KVT_EINVAL);
	assert_int_equal(kvt_unregister(c, 0), KVT_EINVAL);
	assert_int_equal(kvt_ping(c), 0);
	assert_true(stat_num("regions", "refused") >= 6);
	kvt_close(c);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
}

/* ---- the raw socket: malformed frames, descriptor abuse --------------------------- */

/* Sends a frame with nfd descriptors attached; returns 0. */
static void raw_send(int s, uint8_t op, const void *body, size_t len,
		     const int *fds, int nfd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(8 * sizeof(int))];
	} u;
	uint8_t hdr[KVT_HDR_SIZE];
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = op, .request_id = 77,
				      .body_len = (uint32_t)len };
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)body, len } };
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	kvt_frame_header_encode(hdr, &h);
	if (nfd) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE((size_t)nfd * sizeof(int));
		cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfd * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfd * sizeof(int));
	}
	assert_int_equal(sendmsg(s, &m, MSG_NOSIGNAL),
			 (ssize_t)(sizeof(hdr) + len));
}

/* Reads one reply; returns its status (body discarded), -1 at EOF. */
static int raw_reply(int s, uint8_t *body, size_t cap, size_t *len)
{
	uint8_t hdr[KVT_HDR_SIZE], junk[4096];
	struct kvt_frame_header h;
	struct kvt_limits lim;

	kvt_limits_default(&lim);
	if (recv(s, hdr, sizeof(hdr), MSG_WAITALL) != (ssize_t)sizeof(hdr))
		return -1;
	assert_int_equal(kvt_frame_header_decode(hdr, sizeof(hdr), &lim, &h),
			 0);
	assert_true(h.body_len <= (body ? cap : sizeof(junk)));
	if (h.body_len)
		assert_int_equal(recv(s, body ? body : junk, h.body_len,
				      MSG_WAITALL),
				 (ssize_t)h.body_len);
	if (len)
		*len = h.body_len;
	return (int)h.status;
}

static void test_raw(void **state)
{
	uint8_t req[KVT_REG_REQ_SIZE], body[512];
	struct kvt_reg_req q = { 0, 0, 0 };
	struct kvt_reg_reply rep;
	int s, fds[5];
	size_t len;

	(void)state;
	assert_int_equal(integ_start(&D, NULL), 0);
	for (int i = 0; i < 5; i++)
		munmap(memfd(65536, false, &fds[i]), 65536);
	s = integ_raw_connect(&D);
	assert_true(s >= 0);
	kvt_reg_req_encode(req, &q);
	/* REGISTER without a descriptor: refused, the connection goes on. */
	raw_send(s, KVT_OP_REGISTER, req, sizeof(req), NULL, 0);
	assert_int_equal(raw_reply(s, body, sizeof(body), &len),
			 -KVT_EBADREQ);
	assert_non_null(memmem(body, len, "descriptor", 10));
	/* With one: a region. */
	raw_send(s, KVT_OP_REGISTER, req, sizeof(req), fds, 1);
	assert_int_equal(raw_reply(s, body, sizeof(body), &len), 0);
	assert_int_equal(kvt_reg_reply_parse(body, len, &rep), 0);
	assert_int_equal(rep.region, 1);
	assert_int_equal(rep.length, 65536);
	/* A malformed REGISTER still takes (and closes) its descriptor. */
	raw_send(s, KVT_OP_REGISTER, req, sizeof(req) - 1, fds + 1, 1);
	assert_int_equal(raw_reply(s, NULL, 0, NULL), -KVT_EBADREQ);
	/* MGET_TO: a segment of no region; past its region; bad bodies. */
	{
		uint8_t b[64];
		struct kvt_xfer_head h = { 0, NULL, 0, 1, 0, 0 };
		struct kvt_xfer_seg sg = { 9, 0, 16 };

		kvt_xfer_head_encode(b, &h);
		kvt_xfer_key_encode(b + 4, "k", 1, 1);
		kvt_xfer_seg_encode(b + 9, &sg);
		raw_send(s, KVT_OP_MGET_TO, b, 33, NULL, 0);
		assert_int_equal(raw_reply(s, body, sizeof(body), &len),
				 -KVT_EBADREQ);
		assert_non_null(memmem(body, len, "no region", 9));
		sg = (struct kvt_xfer_seg){ 1, 65530, 16 };
		kvt_xfer_seg_encode(b + 9, &sg);
		raw_send(s, KVT_OP_MGET_TO, b, 33, NULL, 0);
		assert_int_equal(raw_reply(s, body, sizeof(body), &len),
				 -KVT_EBADREQ);
		assert_non_null(memmem(body, len, "outside", 7));
		raw_send(s, KVT_OP_MGET_TO, b, 32, NULL, 0);
		assert_int_equal(raw_reply(s, NULL, 0, NULL), -KVT_EBADREQ);
		raw_send(s, KVT_OP_MPUT_FROM, b, 33, NULL, 0);
		assert_int_equal(raw_reply(s, NULL, 0, NULL), -KVT_EBADREQ);
		/* A good one, and its reply byte for byte. */
		sg = (struct kvt_xfer_seg){ 1, 0, 16 };
		kvt_xfer_seg_encode(b + 9, &sg);
		raw_send(s, KVT_OP_MGET_TO, b, 33, NULL, 0);
		assert_int_equal(raw_reply(s, body, sizeof(body), &len), 0);
		assert_int_equal(len, 8 + 16);
		assert_int_equal(body[0], 1);	      /* count */
		assert_int_equal(body[8], KVT_XFER_MISS);
	}
	/* UNREGISTER of nothing; malformed. */
	{
		uint8_t u[KVT_UNREG_REQ_SIZE];

		kvt_unreg_req_encode(u, 42);
		raw_send(s, KVT_OP_UNREGISTER, u, sizeof(u), NULL, 0);
		assert_int_equal(raw_reply(s, NULL, 0, NULL), -KVT_ENOTFOUND);
		raw_send(s, KVT_OP_UNREGISTER, u, 4, NULL, 0);
		assert_int_equal(raw_reply(s, NULL, 0, NULL), -KVT_EBADREQ);
	}
	raw_send(s, KVT_OP_PING, NULL, 0, NULL, 0);
	assert_int_equal(raw_reply(s, NULL, 0, NULL), 0);
	/* Five descriptors with a PING: a protocol error, then the end. */
	raw_send(s, KVT_OP_PING, NULL, 0, fds, 5);
	assert_int_equal(raw_reply(s, NULL, 0, NULL), -KVT_EPROTO);
	assert_int_equal(raw_reply(s, NULL, 0, NULL), -1);
	close(s);
	assert_true(stat_num(NULL, "protocol_errors") >= 1);
	still_serving();
	for (int i = 0; i < 5; i++)
		close(fds[i]);
}

/* ---- fork and threads ----------------------------------------------------------------- */

struct poller {
	kvt_client *c;
	int rc;
};

static void *poll_thread(void *arg)
{
	struct poller *pl = arg;
	struct kvt_job_done d;
	size_t n;

	pl->rc = kvt_poll(pl->c, 2000, &d, 1, &n);
	return NULL;
}

static void test_misuse(void **state)
{
	struct pages *p = malloc(sizeof(*p));
	struct kvt_region reg;
	struct kvt_job_done d;
	kvt_client *c;
	uint64_t job;
	size_t n;
	int fd, st;
	pid_t pid;

	(void)state;
	assert_int_equal(integ_start(&D, NULL), 0);
	c = connect_d();
	munmap(memfd(1 << 20, true, &fd), 1 << 20);
	assert_int_equal(kvt_register(c, fd, 0, 0, 0, &reg), 0);
	pages_init(p, "f", 4, reg.id, 4096, 65536);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvt_region r2;

		if (kvt_register(c, fd, 0, 0, 0, &r2) != KVT_EFORKED ||
		    kvt_submit_mget_to(c, "f", p->keys, p->key_lens, 4,
				       p->segs, p->nsegs, p->lens, p->st,
				       &job) != KVT_EFORKED ||
		    kvt_mput_from(c, "f", p->keys, p->key_lens, 4, p->segs,
				  p->nsegs, NULL, p->st) != KVT_EFORKED ||
		    kvt_poll(c, 0, &d, 1, &n) != KVT_EFORKED ||
		    kvt_poll_fd(c) != KVT_EFORKED ||
		    kvt_unregister(c, reg.id) != KVT_EFORKED)
			_exit(1);
		kvt_close(c);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* The parent's connection and region are untouched. */
	assert_int_equal(kvt_mput_from(c, "f", p->keys, p->key_lens, 4,
				       p->segs, p->nsegs, NULL, p->st),
			 0);
	/* A second thread while one waits in kvt_poll(). */
	{
		struct poller pl = { c, 1 };
		pthread_t t;
		bool refused = false;

		assert_int_equal(kvt_submit_mget_to(c, "absent-ns", p->keys,
						    p->key_lens, 4, p->segs,
						    p->nsegs, p->lens, p->st,
						    &job),
				 0);
		/* Collect it, so that the thread's poll really waits. */
		while (kvt_poll(c, 1000, &d, 1, &n) == 0 && n == 0)
			;
		assert_int_equal(kvt_submit_mget_to(c, "f", p->keys,
						    p->key_lens, 4, p->segs,
						    p->nsegs, p->lens, p->st,
						    &job),
				 0);
		assert_int_equal(pthread_create(&t, NULL, poll_thread, &pl), 0);
		for (int i = 0; i < 100 && !refused; i++) {
			refused = kvt_poll(c, 0, &d, 1, &n) == KVT_ECONCURRENT;
			if (!refused)
				integ_sleep_ms(1);
		}
		pthread_join(t, NULL);
		assert_int_equal(pl.rc, 0);
		/* The thread may have finished before we tried: fine too. */
		(void)refused;
	}
	assert_int_equal(kvt_ping(c), 0);
	kvt_close(c);
	close(fd);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_other_uids, teardown),
		cmocka_unit_test_teardown(test_tiers, teardown),
		cmocka_unit_test_teardown(test_truncate, teardown),
		cmocka_unit_test_teardown(test_jobs, teardown),
		cmocka_unit_test_teardown(test_limits, teardown),
		cmocka_unit_test_teardown(test_raw, teardown),
		cmocka_unit_test_teardown(test_misuse, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
