/*
 * test_l3.c - unit tests for the L3 SSD tier (tiers/kvt_l3.c).
 *
 * Each test works in its own mkdtemp() folder under /tmp, removed at the end.
 * I/O failures are injected through struct kvt_l3_faults; a crash is
 * simulated both in-process (skip_commit) and for real (a child process is
 * SIGKILLed in the middle of a stream of batches).
 *
 * The whole suite runs twice: once with the default read backend (io_uring
 * where the kernel allows it) and once with io_backend = KVT_L3_IO_PREAD,
 * the path kvtierd takes where io_uring is refused, so that both are held to
 * the same round trips, fault injection, crash and corruption cases.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <lmdb.h>

#include "kvt_l3.h"
#include "kvtier_errors.h"

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)

/* ---- fixture ------------------------------------------------------------ */

static uint64_t fake_now = 1000000;

static uint64_t fake_clock(void)
{
	return fake_now;
}

/* The read backend of the current group (see main). */
static int g_backend = KVT_L3_IO_AUTO;

/* I/O modes the round-trip tests run in. */
enum mode { MODE_DEFAULT, MODE_BUFFERED, MODE_SYNC_READS };

struct fx {
	char dir[64];
	struct kvt_l3_config cfg;
	struct kvt_l3_faults faults;
	char err[256];
	struct kvt_l3 *l3;
};

static int rm_cb(const char *path, const struct stat *sb, int flag,
		 struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static struct fx *fx_new(uint64_t capacity, uint64_t region_size, int mode)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/kvt_l3_test.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->cfg.dir = f->dir;
	f->cfg.capacity = capacity;
	f->cfg.region_size = region_size;
	f->cfg.no_sync = mode != MODE_DEFAULT;
	f->cfg.no_direct = mode == MODE_BUFFERED;
	f->cfg.no_uring = mode == MODE_SYNC_READS;
	f->cfg.io_backend = g_backend;
	f->cfg.now_s = fake_clock;
	f->cfg.faults = &f->faults;
	f->cfg.errmsg = f->err;
	f->cfg.errmsg_len = sizeof(f->err);
	fake_now = 1000000;
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	return f;
}

static void fx_reopen(struct fx *f)
{
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
}

static void fx_free(struct fx *f)
{
	kvt_l3_close(f->l3);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
}

/* ---- data helpers ------------------------------------------------------- */

static struct kvt_key mkkey(const char *s)
{
	struct kvt_key k = { (const uint8_t *)"ns", 2, (const uint8_t *)s,
			     strlen(s) };
	return k;
}

/* Deterministic contents for (key, len) so any read can be checked. */
static uint8_t *mkdata(const char *key, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	uint32_t x = 2166136261u;

	assert_non_null(p);
	for (const char *c = key; *c; c++)
		x = (x ^ (uint8_t)*c) * 16777619u;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (uint8_t)(x >> 16);
	}
	return p;
}

static int put_one(struct fx *f, const char *key, size_t len, uint64_t expiry)
{
	uint8_t *d = mkdata(key, len);
	struct kvt_l3_item it = { mkkey(key), d, len, 7, 3, len * 2, expiry };
	int rc = kvt_l3_put_batch(f->l3, &it, 1);

	free(d);
	return rc;
}

/* Reads key; returns the status, checking contents on a hit. */
static int read_one(struct fx *f, const char *key, size_t len)
{
	struct kvt_l3_read rd = { .k = mkkey(key) };
	uint8_t *d;

	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	if (rd.status) {
		assert_null(rd.mem);
		return rd.status;
	}
	d = mkdata(key, len);
	assert_int_equal(rd.len, len);
	assert_memory_equal(rd.data, d, len);
	assert_int_equal(rd.codec, 7);
	assert_int_equal(rd.dtype, 3);
	assert_int_equal(rd.raw_len, len * 2);
	free(d);
	free(rd.mem);
	return 0;
}

static struct kvt_l3_stats stats(struct fx *f)
{
	struct kvt_l3_stats st;

	kvt_l3_stats(f->l3, &st);
	return st;
}

/* ---- tests -------------------------------------------------------------- */

static void test_roundtrip_sizes(void **state)
{
	static const size_t sizes[] = {
		0, 1, 100, 4096 - 64 - 6, 4096 - 64 - 5, 4096, 65536 + 3,
		1 * MIB, 2 * MIB, 3 * MIB,
	};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct fx *f = fx_new(64 * MIB, 16 * MIB, (int)(intptr_t)*state);
	struct kvt_l3_item items[N];
	struct kvt_l3_read reads[N];
	char names[N][16];
	uint8_t *bufs[N];
	struct kvt_l3_stats st;
	uint64_t raw = 0, extents = 0;

	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "k%d", i);
		bufs[i] = mkdata(names[i], sizes[i]);
		items[i] = (struct kvt_l3_item){ mkkey(names[i]), bufs[i],
			sizes[i], 7, 3, sizes[i] * 2, 0 };
		raw += sizes[i] * 2;
		extents += kvt_l3_read_size(2, strlen(names[i]), sizes[i]);
	}
	assert_int_equal(kvt_l3_put_batch(f->l3, items, N), 0);
	memset(reads, 0, sizeof(reads));
	for (int i = 0; i < N; i++)
		reads[N - 1 - i].k = mkkey(names[i]); /* any order works */
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, reads, N), 0);
	for (int i = 0; i < N; i++) {
		int j = N - 1 - i;

		assert_int_equal(reads[j].status, 0);
		assert_int_equal(reads[j].len, sizes[i]);
		assert_memory_equal(reads[j].data, bufs[i], sizes[i]);
		assert_int_equal(reads[j].raw_len, sizes[i] * 2);
		assert_int_equal(reads[j].codec, 7);
		assert_int_equal(reads[j].dtype, 3);
		free(reads[j].mem);
		free(bufs[i]);
	}
	st = stats(f);
	assert_int_equal(st.entries, N);
	assert_int_equal(st.raw_bytes, raw);
	assert_int_equal(st.hits, N);
	assert_int_equal(st.dead_bytes, 0);
	assert_int_equal(st.reads_inflight, 0);
	/* A read reads the value's own extent, no header, no key. */
	assert_int_equal(st.bytes_read, extents);
	assert_int_equal(st.bytes % KVT_L3_ALIGN, 0);
	if ((int)(intptr_t)*state == MODE_BUFFERED)
		assert_int_equal(st.direct_io, 0);
	if ((int)(intptr_t)*state == MODE_SYNC_READS)
		assert_int_equal(st.uring, 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

static void test_many_reads(void **state)
{
	enum { N = 300 };
	struct fx *f = fx_new(16 * MIB, 1 * MIB, (int)(intptr_t)*state);
	struct kvt_l3_item *items = calloc(N, sizeof(*items));
	struct kvt_l3_read *reads = calloc(N + 10, sizeof(*reads));
	char (*names)[16] = calloc(N + 10, 16);

	for (int i = 0; i < N + 10; i++)
		snprintf(names[i], 16, "key-%d", i);
	for (int i = 0; i < N; i++) {
		items[i] = (struct kvt_l3_item){ mkkey(names[i]),
			mkdata(names[i], 8000 + i), 8000 + i, 7, 3,
			(8000 + i) * 2, 0 };
	}
	assert_int_equal(kvt_l3_put_batch(f->l3, items, N), 0);
	for (int i = 0; i < N + 10; i++)
		reads[i].k = mkkey(names[i]);
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, reads, N + 10), 0);
	for (int i = 0; i < N + 10; i++) {
		if (i >= N) {
			assert_int_equal(reads[i].status, KVT_ENOTFOUND);
			assert_null(reads[i].mem);
			continue;
		}
		assert_int_equal(reads[i].status, 0);
		assert_int_equal(reads[i].len, 8000 + i);
		assert_memory_equal(reads[i].data, items[i].data, 8000 + i);
		free(reads[i].mem);
	}
	for (int i = 0; i < N; i++)
		free((void *)items[i].data);
	assert_int_equal(stats(f).hits, N);
	free(items);
	free(reads);
	free(names);
	fx_free(f);
}

static void test_contains_del(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	struct kvt_key a = mkkey("a"), b = mkkey("b");
	struct kvt_l3_stats st;

	(void)state;
	assert_int_equal(put_one(f, "a", 5000, 0), 0);
	assert_int_equal(put_one(f, "b", 100, 0), 0);
	assert_int_equal(kvt_l3_contains(f->l3, &a), 1);
	assert_int_equal(kvt_l3_contains(f->l3, &b), 1);
	assert_int_equal(kvt_l3_del(f->l3, &a), 0);
	assert_int_equal(kvt_l3_contains(f->l3, &a), 0);
	assert_int_equal(kvt_l3_del(f->l3, &a), KVT_ENOTFOUND);
	assert_int_equal(read_one(f, "a", 5000), KVT_ENOTFOUND);
	assert_int_equal(read_one(f, "b", 100), 0);
	st = stats(f);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, 4096);
	assert_int_equal(st.dead_bytes, 8192);
	/* Same key in another namespace is another key. */
	{
		struct kvt_key o = { (const uint8_t *)"other", 5,
				     (const uint8_t *)"b", 1 };
		assert_int_equal(kvt_l3_contains(f->l3, &o), 0);
	}
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

static void test_overwrite(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	uint8_t *d1 = mkdata("x1", 10000), *d2 = mkdata("x2", 300);
	struct kvt_l3_item two[2] = {
		{ mkkey("dup"), d1, 10000, 1, 1, 1, 0 },
		{ mkkey("dup"), d2, 300, 2, 2, 2, 0 },
	};
	struct kvt_l3_read rd = { .k = mkkey("dup") };
	struct kvt_l3_stats st;

	(void)state;
	assert_int_equal(put_one(f, "k", 10000, 0), 0);
	assert_int_equal(put_one(f, "k", 20000, 0), 0);
	assert_int_equal(read_one(f, "k", 20000), 0);
	st = stats(f);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.dead_bytes, 12288);
	/* Within one batch, the later of two equal keys wins. */
	assert_int_equal(kvt_l3_put_batch(f->l3, two, 2), 0);
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	assert_int_equal(rd.status, 0);
	assert_int_equal(rd.len, 300);
	assert_memory_equal(rd.data, d2, 300);
	assert_int_equal(rd.codec, 2);
	free(rd.mem);
	assert_int_equal(stats(f).entries, 2);
	fx_reopen(f);
	assert_int_equal(read_one(f, "k", 20000), 0);
	assert_int_equal(stats(f).entries, 2);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	free(d1);
	free(d2);
	fx_free(f);
}

/* Region files never grow past their preallocated size. */
static void assert_files_within(struct fx *f, uint64_t region_size,
				unsigned nregions)
{
	char path[256];
	struct stat sb;

	for (unsigned i = 0; i < nregions + 2; i++) {
		snprintf(path, sizeof(path), "%s/l3/region-%05u.dat", f->dir, i);
		if (i >= nregions) {
			assert_int_not_equal(stat(path, &sb), 0);
			continue;
		}
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal((uint64_t)sb.st_size, region_size);
	}
}

static void test_reclaim(void **state)
{
	/* 4 regions of 256 KiB; 64 KiB values take 68 KiB: 3 per region. */
	struct fx *f = fx_new(1 * MIB, 256 * KIB, (int)(intptr_t)*state);
	char name[32];
	struct kvt_l3_stats st;
	int present = 0;

	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "r%d", i);
		assert_int_equal(put_one(f, name, 64 * KIB, 0), 0);
		st = stats(f);
		assert_true(st.bytes + st.dead_bytes <= st.capacity_bytes);
		assert_true(st.entries <= 12);
	}
	st = stats(f);
	assert_int_equal(st.capacity_bytes, 1 * MIB);
	assert_true(st.regions_reclaimed > 0);
	/* 40 items, 3 per region: 13 full regions+1; 10 reclaims. */
	assert_int_equal(st.regions_reclaimed, 10);
	assert_int_equal(read_one(f, "r0", 64 * KIB), KVT_ENOTFOUND);
	assert_int_equal(read_one(f, "r26", 64 * KIB), KVT_ENOTFOUND);
	for (int i = 30; i < 40; i++) {
		snprintf(name, sizeof(name), "r%d", i);
		assert_int_equal(read_one(f, name, 64 * KIB), 0);
	}
	for (int i = 0; i < 40; i++) {
		struct kvt_key k;

		snprintf(name, sizeof(name), "r%d", i);
		k = mkkey(name);
		present += kvt_l3_contains(f->l3, &k);
	}
	assert_int_equal(present, (int)stats(f).entries);
	assert_int_equal(present, 10);
	assert_files_within(f, 256 * KIB, 4);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_reopen(f);
	assert_int_equal(stats(f).entries, 10);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* Writing continues in FIFO order after a restart. */
	assert_int_equal(put_one(f, "after", 64 * KIB, 0), 0);
	assert_int_equal(read_one(f, "r39", 64 * KIB), 0);
	assert_int_equal(read_one(f, "after", 64 * KIB), 0);
	fx_free(f);
}

/* A single batch larger than the whole store still ends consistent. */
static void test_batch_larger_than_store(void **state)
{
	enum { N = 20 };
	struct fx *f = fx_new(512 * KIB, 128 * KIB, MODE_BUFFERED);
	struct kvt_l3_item items[N];
	char names[N][16];
	int hits = 0;

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(names[i], 16, "big%d", i);
		items[i] = (struct kvt_l3_item){ mkkey(names[i]),
			mkdata(names[i], 60000), 60000, 7, 3, 120000, 0 };
	}
	assert_int_equal(kvt_l3_put_batch(f->l3, items, N), 0);
	for (int i = 0; i < N; i++) {
		int rc = read_one(f, names[i], 60000);

		assert_true(rc == 0 || rc == KVT_ENOTFOUND);
		hits += rc == 0;
		free((void *)items[i].data);
	}
	assert_true(hits >= 4);
	assert_int_equal(read_one(f, names[N - 1], 60000), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

static void test_reopen(void **state)
{
	struct fx *f = fx_new(8 * MIB, 1 * MIB, (int)(intptr_t)*state);
	struct kvt_l3_stats a, b;
	char name[32];
	struct kvt_key k;

	for (int i = 0; i < 30; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		assert_int_equal(put_one(f, name, 1000 + 5000 * (size_t)i, 0),
				 0);
	}
	k = mkkey("p3");
	assert_int_equal(kvt_l3_del(f->l3, &k), 0);
	assert_int_equal(put_one(f, "p4", 777, 0), 0);
	assert_int_equal(read_one(f, "p5", 1000 + 5000 * 5), 0);
	a = stats(f);
	fx_reopen(f);
	b = stats(f);
	assert_int_equal(a.entries, b.entries);
	assert_int_equal(a.bytes, b.bytes);
	assert_int_equal(a.raw_bytes, b.raw_bytes);
	assert_int_equal(a.dead_bytes, b.dead_bytes);
	assert_int_equal(a.capacity_bytes, b.capacity_bytes);
	for (int i = 0; i < 30; i++) {
		size_t len = i == 4 ? 777 : 1000 + 5000 * (size_t)i;

		snprintf(name, sizeof(name), "p%d", i);
		assert_int_equal(read_one(f, name, len),
				 i == 3 ? KVT_ENOTFOUND : 0);
	}
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* The new head offset is right: appending after reopen is safe. */
	assert_int_equal(put_one(f, "q", 3000, 0), 0);
	fx_reopen(f);
	assert_int_equal(read_one(f, "q", 3000), 0);
	assert_int_equal(read_one(f, "p29", 1000 + 5000 * 29), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

static void flip_byte(struct fx *f, unsigned region, uint64_t off)
{
	char path[256];
	uint8_t c;
	int fd;

	snprintf(path, sizeof(path), "%s/l3/region-%05u.dat", f->dir, region);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

static void test_corruption(void **state)
{
	/* Entries of 10000 bytes + header take 12 KiB each: offsets 0, 12K... */
	struct fx *f = fx_new(4 * MIB, 1 * MIB, (int)(intptr_t)*state);
	struct kvt_key k1 = mkkey("c1");
	FILE *devnull = fopen("/dev/null", "w");
	struct kvt_l3_stats st;

	for (int i = 0; i < 4; i++) {
		char name[8];

		snprintf(name, sizeof(name), "c%d", i);
		assert_int_equal(put_one(f, name, 10000, 0), 0);
	}
	assert_int_equal(kvt_l3_check(f->l3, devnull), 0);
	flip_byte(f, 0, 12 * KIB + 5000);             /* data of c1 */
	flip_byte(f, 0, 24 * KIB + 10000 + 1);        /* magic of c2 */
	flip_byte(f, 0, 36 * KIB + 10000 + 64 + 3);   /* key byte of c3 */
	assert_int_equal(kvt_l3_check(f->l3, devnull), 3);
	assert_int_equal(read_one(f, "c1", 10000), KVT_ECORRUPT);
	/*
	 * A read reads and checks the value alone (its checksum is in the
	 * index and binds it to key and place): damage to a header or a key
	 * on disk does not touch the value, which reads back right.  The
	 * checker finds it.
	 */
	assert_int_equal(read_one(f, "c2", 10000), 0);
	assert_int_equal(read_one(f, "c3", 10000), 0);
	assert_int_equal(read_one(f, "c0", 10000), 0);
	st = stats(f);
	assert_int_equal(st.checksum_failures, 1);
	assert_int_equal(st.entries, 3);
	assert_int_equal(kvt_l3_contains(f->l3, &k1), 0);
	/* The entry is gone: a second read is a plain miss. */
	assert_int_equal(read_one(f, "c1", 10000), KVT_ENOTFOUND);
	assert_int_equal(kvt_l3_check(f->l3, devnull), 2); /* c2, c3 */
	fx_reopen(f);
	assert_int_equal(stats(f).entries, 3);
	assert_int_equal(read_one(f, "c0", 10000), 0);
	assert_int_equal(read_one(f, "c3", 10000), 0);
	fclose(devnull);
	fx_free(f);
}

static void test_write_failures(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, (int)(intptr_t)*state);
	struct kvt_key k;
	struct kvt_l3_stats st;

	assert_int_equal(put_one(f, "good", 50000, 0), 0);

	/* Plain EIO from pwrite. */
	f->faults.write_fail_at = 1;
	f->faults.write_errno = EIO;
	assert_int_equal(put_one(f, "bad1", 50000, 0), -EIO);
	/* A disk filling up: short write, then ENOSPC. */
	f->faults.write_fail_at = 1;
	f->faults.write_errno = ENOSPC;
	f->faults.write_short = 1;
	assert_int_equal(put_one(f, "bad2", 50000, 0), -ENOSPC);
	f->faults.write_short = 0;
	/* fdatasync failure. */
	f->faults.sync_errno = EIO;
	assert_int_equal(put_one(f, "bad3", 50000, 0), -EIO);

	st = stats(f);
	assert_int_equal(st.write_errors, 3);
	assert_int_equal(st.entries, 1);
	for (int i = 1; i <= 3; i++) {
		char name[8];

		snprintf(name, sizeof(name), "bad%d", i);
		k = mkkey(name);
		assert_int_equal(kvt_l3_contains(f->l3, &k), 0);
		assert_int_equal(read_one(f, name, 50000), KVT_ENOTFOUND);
	}
	assert_int_equal(read_one(f, "good", 50000), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* Later batches succeed, and land where the failed ones would have. */
	assert_int_equal(put_one(f, "later", 50000, 0), 0);
	assert_int_equal(read_one(f, "later", 50000), 0);
	assert_int_equal(stats(f).dead_bytes, 0);
	fx_reopen(f);
	assert_int_equal(stats(f).entries, 2);
	assert_int_equal(read_one(f, "good", 50000), 0);
	assert_int_equal(read_one(f, "later", 50000), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

/* A failure in the second region of a batch leaves none of it indexed. */
static void test_write_failure_mid_batch(void **state)
{
	enum { N = 10 };
	struct fx *f = fx_new(1 * MIB, 256 * KIB, MODE_BUFFERED);
	struct kvt_l3_item items[N];
	char names[N][8];

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(names[i], 8, "m%d", i);
		items[i] = (struct kvt_l3_item){ mkkey(names[i]),
			mkdata(names[i], 64 * KIB), 64 * KIB, 7, 3, 128 * KIB,
			0 };
	}
	f->faults.write_fail_at = 2;
	f->faults.write_errno = EIO;
	assert_int_equal(kvt_l3_put_batch(f->l3, items, N), -EIO);
	assert_int_equal(stats(f).entries, 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	assert_int_equal(kvt_l3_put_batch(f->l3, items, N), 0);
	assert_int_equal(stats(f).entries, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(read_one(f, names[i], 64 * KIB), 0);
		free((void *)items[i].data);
	}
	fx_free(f);
}

static void test_crash_before_commit(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, (int)(intptr_t)*state);
	char path[256];
	uint8_t junk[8192];
	int fd;

	assert_int_equal(put_one(f, "kept", 30000, 0), 0);
	f->faults.skip_commit = 1;
	assert_int_equal(put_one(f, "lost", 30000, 0), -EIO);
	fx_reopen(f);
	assert_int_equal(read_one(f, "kept", 30000), 0);
	assert_int_equal(read_one(f, "lost", 30000), KVT_ENOTFOUND);
	assert_int_equal(stats(f).entries, 1);

	/* Garbage past the head offset (a torn append) is ignored too. */
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	memset(junk, 0xa5, sizeof(junk));
	snprintf(path, sizeof(path), "%s/l3/region-00000.dat", f->dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, junk, sizeof(junk), 32 * KIB),
			 (ssize_t)sizeof(junk));
	close(fd);
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	assert_int_equal(stats(f).entries, 1);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	assert_int_equal(put_one(f, "new", 30000, 0), 0);
	assert_int_equal(read_one(f, "new", 30000), 0);
	assert_int_equal(read_one(f, "kept", 30000), 0);
	fx_free(f);
}

/*
 * The real thing: a child process streams batches and is SIGKILLed at a
 * random moment.  Whatever the reopened store indexes must read back intact,
 * and every batch the child reported as committed must be there (the pipe
 * tells us how far it got).
 */
static void test_kill9(void **state)
{
	struct fx *f = fx_new(8 * MIB, 1 * MIB, MODE_DEFAULT);
	int pfd[2];
	pid_t pid;
	int committed = -1, got, ok = 0;

	(void)state;
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct kvt_l3 *l3;

		close(pfd[0]);
		if (kvt_l3_open(&l3, &f->cfg))
			_exit(1);
		for (int b = 0;; b++) {
			struct kvt_l3_item it[4];
			char names[4][24];

			for (int j = 0; j < 4; j++) {
				snprintf(names[j], 24, "b%d-%d", b, j);
				it[j] = (struct kvt_l3_item){ mkkey(names[j]),
					mkdata(names[j], 40000 + j),
					40000 + (size_t)j, 7, 3,
					(40000 + (size_t)j) * 2, 0 };
			}
			if (kvt_l3_put_batch(l3, it, 4))
				_exit(2);
			for (int j = 0; j < 4; j++)
				free((void *)it[j].data);
			if (write(pfd[1], &b, sizeof(b)) != sizeof(b))
				_exit(3);
		}
	}
	close(pfd[1]);
	/* Let it run through a few region reclaims, then kill it. */
	while (committed < 300 &&
	       read(pfd[0], &got, sizeof(got)) == sizeof(got))
		committed = got;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	while (read(pfd[0], &got, sizeof(got)) == sizeof(got))
		committed = got;
	close(pfd[0]);
	assert_true(committed >= 300);

	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* The newest reported batch survives; everything indexed is intact. */
	for (int b = committed; b >= 0 && b > committed - 60; b--)
		for (int j = 0; j < 4; j++) {
			char name[24];
			int rc;

			snprintf(name, sizeof(name), "b%d-%d", b, j);
			rc = read_one(f, name, 40000 + (size_t)j);
			if (b == committed)
				assert_int_equal(rc, 0);
			assert_true(rc == 0 || rc == KVT_ENOTFOUND);
			ok += rc == 0;
		}
	assert_int_equal(stats(f).checksum_failures, 0);
	assert_true(ok >= 4);
	fx_free(f);
}

static void test_expiry(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	struct kvt_key t = mkkey("ttl"), p = mkkey("perm");
	struct kvt_l3_read rd = { .k = mkkey("ttl") };

	(void)state;
	assert_int_equal(put_one(f, "ttl", 5000, fake_now + 10), 0);
	assert_int_equal(put_one(f, "ttl2", 5000, fake_now + 20), 0);
	assert_int_equal(put_one(f, "perm", 5000, 0), 0);
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	assert_int_equal(rd.status, 0);
	assert_int_equal(rd.expiry, fake_now + 10);
	free(rd.mem);
	fake_now += 9;
	assert_int_equal(kvt_l3_contains(f->l3, &t), 1);
	fake_now += 1;
	assert_int_equal(kvt_l3_contains(f->l3, &t), 0);
	assert_int_equal(kvt_l3_contains(f->l3, &p), 1);
	assert_int_equal(stats(f).entries, 3); /* removal is lazy */
	assert_int_equal(read_one(f, "ttl", 5000), KVT_ENOTFOUND);
	assert_int_equal(stats(f).entries, 2);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* Entries that expire while closed are dropped at open. */
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	fake_now += 100;
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	assert_int_equal(stats(f).entries, 1);
	assert_int_equal(read_one(f, "perm", 5000), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

static void test_keys_and_limits(void **state)
{
	struct fx *f = fx_new(4 * MIB, 256 * KIB, MODE_BUFFERED);
	uint8_t longkey[1000], ns[256];
	uint8_t *d = mkdata("long", 3000);
	struct kvt_l3_item it = { { ns, 255, longkey, sizeof(longkey) }, d,
				  3000, 1, 2, 3, 0 };
	struct kvt_l3_read rd = { .k = it.k };
	struct kvt_key other = it.k;
	struct kvt_key shortk = { ns, 255, longkey, 200 };

	(void)state;
	memset(longkey, 'L', sizeof(longkey));
	memset(ns, 'N', sizeof(ns));
	/* Too long to be an LMDB key as is: stored under a hash. */
	assert_int_equal(kvt_l3_put_batch(f->l3, &it, 1), 0);
	assert_int_equal(kvt_l3_contains(f->l3, &it.k), 1);
	assert_int_equal(kvt_l3_contains(f->l3, &shortk), 0);
	fx_reopen(f);
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	assert_int_equal(rd.status, 0);
	assert_memory_equal(rd.data, d, 3000);
	free(rd.mem);
	/* A different long key differing in one byte is another key. */
	longkey[999] = 'M';
	assert_int_equal(kvt_l3_contains(f->l3, &other), 0);
	longkey[999] = 'L';
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);

	it.k.ns_len = 256;
	assert_int_equal(kvt_l3_put_batch(f->l3, &it, 1), KVT_ETOOBIG);
	it.k.ns_len = 255;
	it.len = 256 * KIB; /* plus header: larger than a region */
	free(d);
	d = mkdata("big", it.len);
	it.data = d;
	assert_int_equal(kvt_l3_put_batch(f->l3, &it, 1), KVT_ENOSPACE);
	assert_int_equal(kvt_l3_put_batch(NULL, &it, 1), KVT_EINVAL);
	assert_int_equal(kvt_l3_put_batch(f->l3, NULL, 1), KVT_EINVAL);
	assert_int_equal(kvt_l3_put_batch(f->l3, NULL, 0), 0);
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, NULL, 0), 0);
	assert_int_equal(stats(f).entries, 1);
	assert_int_equal(stats(f).write_errors, 0);
	free(d);
	fx_free(f);
}

static void test_open_errors(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	struct kvt_l3 *other = (struct kvt_l3 *)1;
	struct kvt_l3_config cfg = f->cfg;

	(void)state;
	/* A second handle on the same store is refused. */
	assert_int_equal(kvt_l3_open(&other, &cfg), KVT_EBUSY);
	assert_null(other);
	assert_int_equal(put_one(f, "x", 100, 0), 0);
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	/* A different region size cannot work with the existing files. */
	cfg.region_size = 2 * MIB;
	f->err[0] = 0;
	assert_int_equal(kvt_l3_open(&other, &cfg), KVT_EINVAL);
	assert_non_null(strstr(f->err, "region"));
	/* More or fewer regions are fine. */
	cfg.region_size = 1 * MIB;
	cfg.capacity = 8 * MIB;
	assert_int_equal(kvt_l3_open(&f->l3, &cfg), 0);
	assert_int_equal(stats(f).regions, 8);
	assert_int_equal(read_one(f, "x", 100), 0);
	kvt_l3_close(f->l3);
	cfg.capacity = 2 * MIB;
	assert_int_equal(kvt_l3_open(&f->l3, &cfg), 0);
	assert_int_equal(read_one(f, "x", 100), 0);
	assert_files_within(f, 1 * MIB, 2);
	/* Bad configurations. */
	cfg.capacity = 100;
	assert_int_equal(kvt_l3_open(&other, &cfg), KVT_EINVAL);
	assert_int_equal(kvt_l3_open(&other, NULL), KVT_EINVAL);
	kvt_l3_close(NULL);
	fx_free(f);
}

/* Capacity below one region: one smaller region. */
static void test_small_capacity(void **state)
{
	struct fx *f = fx_new(100 * KIB, 0, MODE_BUFFERED);
	struct kvt_l3_stats st = stats(f);

	(void)state;
	assert_int_equal(st.regions, 1);
	assert_int_equal(st.region_size, 100 * KIB);
	for (int i = 0; i < 10; i++) {
		char name[8];

		snprintf(name, sizeof(name), "s%d", i);
		assert_int_equal(put_one(f, name, 30000, 0), 0);
		assert_int_equal(read_one(f, name, 30000), 0);
	}
	assert_true(stats(f).regions_reclaimed > 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_reopen(f);
	assert_int_equal(read_one(f, "s9", 30000), 0);
	fx_free(f);
}

struct reader_arg {
	struct kvt_l3 *l3;
	atomic_int stop;
	long seen;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;
	struct kvt_key k = mkkey("t5");
	struct kvt_l3_stats st;

	while (!atomic_load(&a->stop)) {
		a->seen += kvt_l3_contains(a->l3, &k);
		kvt_l3_stats(a->l3, &st);
		assert_true(st.bytes <= st.capacity_bytes);
	}
	return NULL;
}

/* contains() and stats() from another thread while the worker writes. */
static void test_contains_threaded(void **state)
{
	struct fx *f = fx_new(2 * MIB, 256 * KIB, MODE_BUFFERED);
	struct reader_arg a = { .l3 = f->l3 };
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, reader, &a), 0);
	for (int i = 0; i < 200; i++) {
		char name[16];

		snprintf(name, sizeof(name), "t%d", i % 50);
		assert_int_equal(put_one(f, name, 20000, 0), 0);
		if (i % 7 == 0)
			read_one(f, name, 20000);
	}
	atomic_store(&a.stop, 1);
	pthread_join(th, NULL);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

/*
 * A caller's buffer receives the value itself, at its start: read into
 * straight when it is aligned and holds the value's extent, or holds the
 * value but not its last sector (that sector goes through the reader's
 * bounce sector); copied into when it holds the value but is unaligned;
 * left alone (L3 allocates) when too small.
 */
static void test_caller_buffers(void **state)
{
	struct fx *f = fx_new(8 * MIB, 1 * MIB, (int)(intptr_t)*state);
	size_t need = kvt_l3_read_size(2, 2, 100000);
	uint8_t *d = mkdata("cb", 100000), *buf, *small;
	struct kvt_l3_read rd[6];
	unsigned reads;

	assert_int_equal(need, 102400);
	assert_int_equal(posix_memalign((void **)&buf, KVT_L3_ALIGN, 5 * need),
			 0);
	assert_int_equal(posix_memalign((void **)&small, KVT_L3_ALIGN,
					need - 4096), 0);
	assert_int_equal(put_one(f, "cb", 100000, 0), 0);
	memset(rd, 0, sizeof(rd));
	memset(buf, 0xee, 5 * need);
	for (int i = 0; i < 6; i++)
		rd[i].k = mkkey("cb");
	rd[0].buf = buf;                /* the whole extent: read into */
	rd[0].buf_cap = need;
	rd[1].buf = small;              /* too small: allocated */
	rd[1].buf_cap = 100000 - 1;
	rd[2].buf = buf + need + 8;     /* unaligned: copied into */
	rd[2].buf_cap = 100000;
	rd[3].k = mkkey("missing");     /* miss: buffer untouched */
	rd[3].buf = buf + 2 * need;
	rd[3].buf_cap = need;
	rd[4].buf = buf + 3 * need;     /* the value, not its last sector */
	rd[4].buf_cap = 100000;
	rd[5].buf = buf + 4 * need;     /* same, a byte short */
	rd[5].buf_cap = need - 1;
	reads = f->faults.reads;
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, rd, 6), 0);
	/* One region read per hit, also where a tail sector is bounced. */
	assert_int_equal(f->faults.reads - reads, 5);
	for (int i = 0; i < 6; i++) {
		if (i == 3)
			continue;
		assert_int_equal(rd[i].status, 0);
		assert_int_equal(rd[i].len, 100000);
		assert_memory_equal(rd[i].data, d, 100000);
		if (i == 1) {
			assert_non_null(rd[i].mem);
			assert_true(rd[i].data == rd[i].mem);
		} else {
			assert_null(rd[i].mem);
			assert_true(rd[i].data == rd[i].buf);
		}
	}
	/* Nothing written past the capacity given. */
	assert_int_equal(buf[3 * need + 100000], 0xee);
	assert_int_equal(buf[4 * need + need - 1], 0xee);
	assert_int_equal(rd[3].status, KVT_ENOTFOUND);
	assert_null(rd[3].mem);
	assert_null(rd[3].data);
	assert_int_equal(buf[2 * need], 0xee);
	free(rd[1].mem);
	free(buf);
	free(small);
	free(d);
	fx_free(f);
}

/*
 * The read of a value is one read of the value's own length, rounded up
 * to KVT_L3_ALIGN, at an aligned offset: a 2 MiB value is one 2 MiB read,
 * straight into an aligned 2 MiB buffer.
 */
static void test_one_read_per_value(void **state)
{
	struct fx *f = fx_new(16 * MIB, 4 * MIB, (int)(intptr_t)*state);
	uint8_t *d = mkdata("two", 2 * MIB), *buf;
	struct kvt_l3_read rd = { .k = mkkey("two") };
	unsigned reads;

	assert_int_equal(kvt_l3_read_size(255, 1024, 2 * MIB), 2 * MIB);
	assert_int_equal(kvt_l3_read_size(0, 0, 2 * MIB + 1), 2 * MIB + 4096);
	assert_int_equal(posix_memalign((void **)&buf, KVT_L3_ALIGN, 2 * MIB),
			 0);
	assert_int_equal(put_one(f, "pad", 5000, 0), 0); /* offset 0 */
	assert_int_equal(put_one(f, "two", 2 * MIB, 0), 0);
	rd.buf = buf;
	rd.buf_cap = 2 * MIB;
	reads = f->faults.reads;
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	assert_int_equal(rd.status, 0);
	assert_int_equal(f->faults.reads - reads, 1);
	assert_int_equal(f->faults.last_read_len, 2 * MIB);
	assert_int_equal(f->faults.last_read_off, 8 * KIB);
	assert_true(rd.data == buf);
	assert_null(rd.mem);
	assert_memory_equal(rd.data, d, 2 * MIB);
	/* Without a buffer: still one read of 2 MiB, into L3's. */
	memset(&rd, 0, sizeof(rd));
	rd.k = mkkey("two");
	reads = f->faults.reads;
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	assert_int_equal(rd.status, 0);
	assert_int_equal(f->faults.reads - reads, 1);
	assert_int_equal(f->faults.last_read_len, 2 * MIB);
	assert_memory_equal(rd.data, d, 2 * MIB);
	free(rd.mem);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	free(buf);
	free(d);
	fx_free(f);
}

/* 1 if this process may create an io_uring ring. */
static int uring_available(void)
{
	struct io_uring ring;

	if (io_uring_queue_init(4, &ring, 0))
		return 0;
	io_uring_queue_exit(&ring);
	return 1;
}

/* The backend asked for is the backend used, and io_uring can be required. */
static void test_backend_choice(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	struct kvt_l3_stats st = stats(f);
	struct kvt_l3 *l3 = NULL;
	int rc;

	(void)state;
	if (g_backend == KVT_L3_IO_PREAD)
		assert_int_equal(st.uring, 0);
	else
		assert_int_equal(st.uring, uring_available());
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	f->cfg.io_backend = KVT_L3_IO_URING;
	f->err[0] = '\0';
	rc = kvt_l3_open(&l3, &f->cfg);
	if (uring_available()) {
		assert_int_equal(rc, 0);
		assert_int_equal((kvt_l3_stats(l3, &st), st.uring), 1);
	} else {
		assert_true(rc < 0);
		assert_null(l3);
		assert_non_null(strstr(f->err, "io_uring"));
	}
	f->l3 = l3;
	if (!f->l3) {
		f->cfg.io_backend = g_backend;
		fx_reopen(f);
	}
	fx_free(f);
}

/*
 * An injected read error fails that read only, with the device's errno;
 * the entry stays indexed (the data is not known to be bad) and the next
 * read of it succeeds.  Other reads of the batch are unaffected.
 */
static void test_read_faults(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, (int)(intptr_t)*state);
	const char *keys[3] = { "a", "b", "c" };
	struct kvt_l3_read rd[3];
	unsigned failed = 0;

	for (int i = 0; i < 3; i++)
		assert_int_equal(put_one(f, keys[i], 100000 + 1000 * i, 0), 0);
	memset(rd, 0, sizeof(rd));
	for (int i = 0; i < 3; i++)
		rd[i].k = mkkey(keys[i]);
	f->faults.reads = 0;
	f->faults.read_fail_at = 2;
	f->faults.read_errno = EIO;
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, rd, 3), 0);
	assert_true(f->faults.reads >= 3);
	for (int i = 0; i < 3; i++) {
		if (rd[i].status == -EIO) {
			failed++;
			assert_null(rd[i].mem);
			continue;
		}
		assert_int_equal(rd[i].status, 0);
		free(rd[i].mem);
	}
	assert_int_equal(failed, 1);
	assert_int_equal(stats(f).entries, 3);
	assert_int_equal(stats(f).checksum_failures, 0);
	assert_int_equal(stats(f).reads_inflight, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(read_one(f, keys[i], 100000 + 1000 * i), 0);
	/* ENOSPC-like errnos pass through unchanged too. */
	f->faults.read_fail_at = 1;
	f->faults.read_errno = EBADMSG;
	assert_int_equal(read_one(f, "b", 101000), -EBADMSG);
	assert_int_equal(read_one(f, "b", 101000), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}


/* ---- concurrent readers ------------------------------------------------- */

/*
 * Values of the concurrency tests say what they are: key index and version
 * in the first 8 bytes, then mkdata() of "<key>#<version>", so a reader can
 * check any version of any key it gets.
 */
static uint8_t *mkversion(unsigned key, unsigned version, size_t len)
{
	char seed[32];
	uint8_t *p;

	snprintf(seed, sizeof(seed), "c%u#%u", key, version);
	p = mkdata(seed, len);
	memcpy(p, &key, 4);
	memcpy(p + 4, &version, 4);
	return p;
}

/* 0 if data is a version of key (codec and raw_len as put_version sets). */
static int check_version(unsigned key, const struct kvt_l3_read *rd)
{
	unsigned k, v;
	uint8_t *want;
	int bad;

	if (rd->len < 8 || rd->codec != 5 || rd->raw_len != rd->len * 3)
		return -1;
	memcpy(&k, rd->data, 4);
	memcpy(&v, rd->data + 4, 4);
	if (k != key)
		return -1;
	want = mkversion(key, v, rd->len);
	bad = memcmp(want, rd->data, rd->len) != 0;
	free(want);
	return bad ? -1 : 0;
}

enum { CK = 48 }; /* keys in the concurrency tests */

static char cnames[CK][16];
static const uint8_t *cns(unsigned key)
{
	return (const uint8_t *)(key % 3 ? "ns" : "ns2");
}

static struct kvt_key ckey(unsigned key)
{
	struct kvt_key k = { cns(key), key % 3 ? 2 : 3,
			     (const uint8_t *)cnames[key],
			     strlen(cnames[key]) };
	return k;
}

static size_t clen(unsigned key, unsigned version)
{
	return 9000 + (key * 7919 + version * 104729) % 40000;
}

struct creader {
	struct kvt_l3 *l3;
	atomic_int *stop;
	unsigned seed;
	int use_bufs;
	long hits, misses, bad, corrupt, errors;
};

static void *creader_main(void *p)
{
	struct creader *a = p;
	struct kvt_l3_reader *r;
	struct kvt_l3_read rd[8];
	uint8_t *bufs[8] = { 0 };
	unsigned x = a->seed;

	if (kvt_l3_reader_open(a->l3, &r)) {
		a->errors++;
		return NULL;
	}
	for (int i = 0; a->use_bufs && i < 8; i++)
		if (posix_memalign((void **)&bufs[i], KVT_L3_ALIGN, 64 * KIB))
			a->errors++;
	while (!atomic_load(a->stop)) {
		unsigned keys[8];

		memset(rd, 0, sizeof(rd));
		for (int i = 0; i < 8; i++) {
			x = x * 1103515245u + 12345u;
			keys[i] = (x >> 16) % CK;
			rd[i].k = ckey(keys[i]);
			rd[i].buf = a->use_bufs && i % 2 ? bufs[i] : NULL;
			rd[i].buf_cap = rd[i].buf ? 64 * KIB : 0;
		}
		if (kvt_l3_read_batch(a->l3, r, rd, 8)) {
			a->errors++;
			continue;
		}
		for (int i = 0; i < 8; i++) {
			if (rd[i].status == 0) {
				a->hits++;
				a->bad += check_version(keys[i], &rd[i]) != 0;
			} else if (rd[i].status == KVT_ENOTFOUND) {
				a->misses++;
			} else if (rd[i].status == KVT_ECORRUPT) {
				a->corrupt++;
			} else {
				a->errors++;
			}
			free(rd[i].mem);
		}
	}
	for (int i = 0; i < 8; i++)
		free(bufs[i]);
	kvt_l3_reader_close(r);
	return NULL;
}

static int put_version(struct kvt_l3 *l3, unsigned key, unsigned version)
{
	size_t len = clen(key, version);
	uint8_t *d = mkversion(key, version, len);
	struct kvt_l3_item it = { ckey(key), d, len, 5, 1, len * 3, 0 };
	int rc = kvt_l3_put_batch(l3, &it, 1);

	free(d);
	return rc;
}

/*
 * Several reader threads, each with its own reader, against one writer
 * whose puts reclaim regions all the time, and which deletes keys and drops
 * a namespace now and then: every read is a correct version of its key or a
 * miss, never KVT_ECORRUPT (the disk is intact) and never wrong bytes.
 */
static void test_concurrent_readers(void **state)
{
	enum { NR = 3 };
	/* 8 regions of 256 KiB, values of 9-49 KiB: a reclaim every few puts. */
	struct fx *f = fx_new(2 * MIB, 256 * KIB, (int)(intptr_t)*state);
	struct creader rd[NR];
	pthread_t th[NR];
	atomic_int stop = 0;
	unsigned versions[CK] = { 0 }, x = 7;
	long hits = 0;
	uint64_t dropped;

	for (unsigned i = 0; i < CK; i++) {
		snprintf(cnames[i], sizeof(cnames[i]), "c%u", i);
		assert_int_equal(put_version(f->l3, i, 0), 0);
	}
	for (int i = 0; i < NR; i++) {
		rd[i] = (struct creader){ .l3 = f->l3, .stop = &stop,
					  .seed = 11u + (unsigned)i,
					  .use_bufs = i == 1 };
		assert_int_equal(pthread_create(&th[i], NULL, creader_main,
						&rd[i]), 0);
	}
	for (int it = 0; it < 600; it++) {
		unsigned key;

		x = x * 1103515245u + 12345u;
		key = (x >> 16) % CK;
		if (it % 23 == 22) {
			assert_int_equal(kvt_l3_drop_ns(f->l3,
							(const uint8_t *)"ns2",
							3, &dropped), 0);
		} else if (it % 7 == 6) {
			struct kvt_key k = ckey(key);
			int rc = kvt_l3_del(f->l3, &k);

			assert_true(rc == 0 || rc == KVT_ENOTFOUND);
		} else {
			assert_int_equal(put_version(f->l3, key,
						     ++versions[key]), 0);
		}
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < NR; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(rd[i].bad, 0);
		assert_int_equal(rd[i].corrupt, 0);
		assert_int_equal(rd[i].errors, 0);
		hits += rd[i].hits;
	}
	assert_true(hits > 0);
	assert_true(stats(f).regions_reclaimed > 10);
	assert_int_equal(stats(f).checksum_failures, 0);
	assert_int_equal(stats(f).reads_inflight, 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

/* A read held in flight (in before_read) while the writer reclaims. */
struct held {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int arm;      /* hold the next read */
	int holding;  /* a read is held */
	int release;
};

static void hold_read(void *p)
{
	struct held *h = p;

	pthread_mutex_lock(&h->mu);
	if (h->arm) {
		h->arm = 0;
		h->holding = 1;
		pthread_cond_broadcast(&h->cv);
		while (!h->release)
			pthread_cond_wait(&h->cv, &h->mu);
	}
	pthread_mutex_unlock(&h->mu);
}

struct held_read {
	struct kvt_l3 *l3;
	int status, bad;
};

static void *held_read_main(void *p)
{
	struct held_read *a = p;
	struct kvt_l3_reader *r;
	struct kvt_l3_read rd = { .k = ckey(1) };

	if (kvt_l3_reader_open(a->l3, &r)) {
		a->status = -1;
		return NULL;
	}
	a->status = kvt_l3_read_batch(a->l3, r, &rd, 1);
	if (!a->status)
		a->status = rd.status;
	if (rd.status == 0)
		a->bad = check_version(1, &rd);
	free(rd.mem);
	kvt_l3_reader_close(r);
	return NULL;
}

struct held_write {
	struct kvt_l3 *l3;
	atomic_int done;
	int rc;
};

static void *held_write_main(void *p)
{
	struct held_write *a = p;

	/* Enough to wrap round all 4 regions: region 0 is reclaimed. */
	for (unsigned v = 1; v <= 40 && !a->rc; v++)
		a->rc = put_version(a->l3, 2 + v % 40, v);
	atomic_store(&a->done, 1);
	return NULL;
}

/*
 * The reclaim of a region waits for the read of it in flight: the writer
 * stays blocked while the read is held, and the read, released, returns the
 * right bytes (without the wait it would read the region's new contents
 * and report KVT_ECORRUPT).
 */
static void test_reclaim_waits_for_readers(void **state)
{
	struct fx *f = fx_new(1 * MIB, 256 * KIB, (int)(intptr_t)*state);
	struct held h = { .arm = 1 };
	struct held_read hr = { .l3 = f->l3 };
	struct held_write hw = { .l3 = f->l3 };
	pthread_t rt, wt;
	struct timespec ms20 = { 0, 20 * 1000 * 1000 };

	for (unsigned i = 0; i < CK; i++)
		snprintf(cnames[i], sizeof(cnames[i]), "c%u", i);
	pthread_mutex_init(&h.mu, NULL);
	pthread_cond_init(&h.cv, NULL);
	assert_int_equal(put_version(f->l3, 1, 0), 0); /* region 0 */
	f->faults.before_read = hold_read;
	f->faults.before_read_arg = &h;
	assert_int_equal(pthread_create(&rt, NULL, held_read_main, &hr), 0);
	pthread_mutex_lock(&h.mu);
	while (!h.holding)
		pthread_cond_wait(&h.cv, &h.mu);
	pthread_mutex_unlock(&h.mu);
	assert_int_equal(pthread_create(&wt, NULL, held_write_main, &hw), 0);
	/* The writer reaches the reclaim of region 0 and must wait there. */
	for (int i = 0; i < 25; i++)
		nanosleep(&ms20, NULL);
	assert_int_equal(atomic_load(&hw.done), 0);
	pthread_mutex_lock(&h.mu);
	h.release = 1;
	pthread_cond_broadcast(&h.cv);
	pthread_mutex_unlock(&h.mu);
	assert_int_equal(pthread_join(rt, NULL), 0);
	assert_int_equal(pthread_join(wt, NULL), 0);
	assert_int_equal(hw.rc, 0);
	assert_int_equal(hr.status, 0);
	assert_int_equal(hr.bad, 0);
	assert_true(stats(f).regions_reclaimed > 0);
	assert_int_equal(stats(f).checksum_failures, 0);
	f->faults.before_read = NULL;
	{
		struct kvt_key k1 = ckey(1);

		/* Its region was reclaimed: gone now. */
		assert_int_equal(kvt_l3_contains(f->l3, &k1), 0);
	}
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	pthread_mutex_destroy(&h.mu);
	pthread_cond_destroy(&h.cv);
	fx_free(f);
}

struct held_put {
	struct fx *f;
	int rc;
};

static void *held_put_main(void *p)
{
	struct held_put *a = p;

	a->rc = put_one(a->f, "other", 5000, 0);
	return NULL;
}

/*
 * Entries a reader finds corrupt or expired are hidden at once; removing
 * them from the index is the writer's job.  With the writer idle the reader
 * does it itself (as the writer); while a put is running, it leaves them to
 * the writer's next call.
 */
static void test_deferred_removal(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, (int)(intptr_t)*state);
	struct kvt_l3_reader *r;
	struct kvt_l3_read rd[2];
	struct kvt_key t1 = mkkey("t1"), t2 = mkkey("t2"), c = mkkey("c");
	struct held h = { .arm = 1 };
	struct held_put hp = { .f = f };
	pthread_t th;

	pthread_mutex_init(&h.mu, NULL);
	pthread_cond_init(&h.cv, NULL);
	assert_int_equal(put_one(f, "t1", 5000, fake_now + 5), 0);
	assert_int_equal(put_one(f, "t2", 5000, fake_now + 5), 0);
	assert_int_equal(put_one(f, "c", 5000, 0), 0);    /* offset 16K */
	assert_int_equal(put_one(f, "keep", 5000, 0), 0);
	assert_int_equal(kvt_l3_reader_open(f->l3, &r), 0);
	fake_now += 10;
	/* Idle writer: the reader removes the expired entry itself. */
	memset(rd, 0, sizeof(rd));
	rd[0].k = t1;
	assert_int_equal(kvt_l3_read_batch(f->l3, r, rd, 1), 0);
	assert_int_equal(rd[0].status, KVT_ENOTFOUND);
	assert_int_equal(stats(f).entries, 3);
	/* A put held in its pwrite(): removals wait for the writer. */
	f->faults.before_write = hold_read;
	f->faults.before_write_arg = &h;
	assert_int_equal(pthread_create(&th, NULL, held_put_main, &hp), 0);
	pthread_mutex_lock(&h.mu);
	while (!h.holding)
		pthread_cond_wait(&h.cv, &h.mu);
	pthread_mutex_unlock(&h.mu);
	flip_byte(f, 0, 16 * KIB + 100); /* data of c */
	memset(rd, 0, sizeof(rd));
	rd[0].k = t2;
	rd[1].k = c;
	assert_int_equal(kvt_l3_read_batch(f->l3, r, rd, 2), 0);
	assert_int_equal(rd[0].status, KVT_ENOTFOUND);
	assert_int_equal(rd[1].status, KVT_ECORRUPT);
	/* Hidden from every lookup, still in the index. */
	assert_int_equal(kvt_l3_contains(f->l3, &t2), 0);
	assert_int_equal(kvt_l3_state(f->l3, &t2), 0);
	assert_int_equal(kvt_l3_contains(f->l3, &c), 0);
	assert_int_equal(stats(f).entries, 3);
	memset(rd, 0, sizeof(rd));
	rd[0].k = c;
	assert_int_equal(kvt_l3_read_batch(f->l3, r, rd, 1), 0);
	assert_int_equal(rd[0].status, KVT_ENOTFOUND);
	pthread_mutex_lock(&h.mu);
	h.release = 1;
	pthread_cond_broadcast(&h.cv);
	pthread_mutex_unlock(&h.mu);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(hp.rc, 0);
	f->faults.before_write = NULL;
	/* The writer's next call removes them. */
	assert_int_equal(kvt_l3_del(f->l3, &t1), KVT_ENOTFOUND);
	assert_int_equal(stats(f).entries, 2); /* keep, other */
	assert_int_equal(stats(f).checksum_failures, 1);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	kvt_l3_reader_close(r);
	fx_reopen(f);
	assert_int_equal(stats(f).entries, 2);
	assert_int_equal(read_one(f, "keep", 5000), 0);
	/* Reader API errors. */
	assert_int_equal(kvt_l3_reader_open(NULL, &r), KVT_EINVAL);
	assert_null(r);
	assert_int_equal(kvt_l3_reader_open(f->l3, NULL), KVT_EINVAL);
	kvt_l3_reader_close(NULL);
	pthread_mutex_destroy(&h.mu);
	pthread_cond_destroy(&h.cv);
	fx_free(f);
}


/* ---- per-namespace totals ----------------------------------------------- */

struct nsrec {
	uint8_t ns[256];
	size_t ns_len;
	uint64_t entries, raw, hits, bytes;
};

struct nsacc {
	struct nsrec v[16];
	size_t n;
	int dup;
};

static struct nsrec *nsacc_slot(struct nsacc *a, const uint8_t *ns,
				size_t ns_len)
{
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].ns_len == ns_len && !memcmp(a->v[i].ns, ns, ns_len))
			return &a->v[i];
	assert_true(a->n < 16);
	memset(&a->v[a->n], 0, sizeof(a->v[a->n]));
	memcpy(a->v[a->n].ns, ns, ns_len);
	a->v[a->n].ns_len = ns_len;
	return &a->v[a->n++];
}

static int recount_cb(void *arg, const struct kvt_key *k, uint64_t raw_len,
		      uint64_t hits)
{
	struct nsrec *r = nsacc_slot(arg, k->ns, k->ns_len);

	r->entries++;
	r->raw += raw_len;
	r->hits += hits;
	return 0;
}

static int totals_cb(void *arg, const struct kvt_l3_ns_stats *st)
{
	struct nsacc *a = arg;
	size_t before = a->n;
	struct nsrec *r = nsacc_slot(a, st->ns, st->ns_len);

	if (a->n == before)
		a->dup = 1; /* a namespace visited twice */
	r->entries = st->entries;
	r->raw = st->raw_bytes;
	r->hits = st->hits;
	r->bytes = st->bytes;
	return 0;
}

/* The per-namespace totals equal a recount over the entries. */
static void assert_ns_totals(struct fx *f, size_t want_ns)
{
	struct nsacc tot = { .n = 0 }, rec = { .n = 0 };
	uint64_t bytes = 0;

	assert_int_equal(kvt_l3_ns_foreach(f->l3, totals_cb, &tot), 0);
	assert_int_equal(kvt_l3_foreach(f->l3, recount_cb, &rec), 0);
	assert_int_equal(tot.dup, 0);
	assert_int_equal(tot.n, want_ns);
	assert_int_equal(rec.n, want_ns);
	assert_int_equal(stats(f).namespaces, want_ns);
	for (size_t i = 0; i < rec.n; i++) {
		struct nsrec *t = nsacc_slot(&tot, rec.v[i].ns,
					     rec.v[i].ns_len);
		struct kvt_l3_ns_stats one;

		assert_int_equal(tot.n, want_ns); /* found, not added */
		assert_int_equal(t->entries, rec.v[i].entries);
		assert_int_equal(t->raw, rec.v[i].raw);
		assert_int_equal(t->hits, rec.v[i].hits);
		assert_int_equal(kvt_l3_ns_get(f->l3, rec.v[i].ns,
					       rec.v[i].ns_len, &one), 0);
		assert_int_equal(one.entries, t->entries);
		assert_int_equal(one.bytes, t->bytes);
		bytes += t->bytes;
	}
	assert_int_equal(bytes, stats(f).bytes);
}

static int put_ns(struct fx *f, const uint8_t *ns, size_t ns_len,
		  const uint8_t *key, size_t key_len, size_t len)
{
	uint8_t *d = mkdata("nsdata", len);
	struct kvt_l3_item it = { { ns, ns_len, key, key_len }, d, len, 7, 3,
				  len * 2, 0 };
	int rc = kvt_l3_put_batch(f->l3, &it, 1);

	free(d);
	return rc;
}

static int stop_at_first(void *arg, const struct kvt_l3_ns_stats *st)
{
	(void)st;
	++*(int *)arg;
	return 42;
}

/*
 * Per-namespace totals follow every way an entry comes and goes: put,
 * replace, hit, delete, drop, reclaim, removal of what a read found
 * expired, and reopening.
 */
static void test_ns_totals(void **state)
{
	/* 4 regions of 256 KiB. */
	struct fx *f = fx_new(1 * MIB, 256 * KIB, (int)(intptr_t)*state);
	uint8_t longns[255], longkey[1000];
	struct kvt_key kb = { (const uint8_t *)"b", 1, (const uint8_t *)"b0",
			      2 };
	struct kvt_l3_ns_stats one;
	struct kvt_l3_read rd;
	uint64_t dropped;
	int calls = 0;

	memset(longns, 'N', sizeof(longns));
	memset(longkey, 'K', sizeof(longkey));
	assert_int_equal(kvt_l3_ns_get(f->l3, (const uint8_t *)"a", 1, &one),
			 KVT_ENOTFOUND);
	assert_int_equal(one.entries, 0);
	assert_ns_totals(f, 0);
	for (int i = 0; i < 3; i++) {
		char k[8];

		snprintf(k, sizeof(k), "a%d", i);
		assert_int_equal(put_ns(f, (const uint8_t *)"a", 1,
					(const uint8_t *)k, 2, 5000), 0);
	}
	assert_int_equal(put_ns(f, (const uint8_t *)"b", 1,
				(const uint8_t *)"b0", 2, 3000), 0);
	assert_int_equal(put_ns(f, (const uint8_t *)"b", 1,
				(const uint8_t *)"b1", 2, 3000), 0);
	/* A hashed (long) key in the longest namespace; the empty one. */
	assert_int_equal(put_ns(f, longns, 255, longkey, 1000, 2000), 0);
	assert_int_equal(put_ns(f, NULL, 0, (const uint8_t *)"e", 1, 100), 0);
	assert_ns_totals(f, 4);
	assert_int_equal(kvt_l3_ns_foreach(f->l3, stop_at_first, &calls), 42);
	assert_int_equal(calls, 1);
	/* Replace (bytes change, entries do not), hits. */
	assert_int_equal(put_ns(f, (const uint8_t *)"a", 1,
				(const uint8_t *)"a1", 2, 20000), 0);
	memset(&rd, 0, sizeof(rd));
	rd.k = (struct kvt_key){ longns, 255, longkey, 1000 };
	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	assert_int_equal(rd.status, 0);
	free(rd.mem);
	assert_int_equal(kvt_l3_ns_get(f->l3, longns, 255, &one), 0);
	assert_int_equal(one.hits, 1);
	assert_true(one.ns == longns);
	assert_int_equal(kvt_l3_ns_get(f->l3, (const uint8_t *)"a", 1, &one),
			 0);
	assert_int_equal(one.entries, 3);
	assert_int_equal(one.raw_bytes, (5000 * 2 + 20000) * 2);
	assert_ns_totals(f, 4);
	/* Delete; the last entry of a namespace takes the namespace along. */
	assert_int_equal(kvt_l3_del(f->l3, &kb), 0);
	assert_ns_totals(f, 4);
	kb.key = (const uint8_t *)"b1";
	assert_int_equal(kvt_l3_del(f->l3, &kb), 0);
	assert_int_equal(kvt_l3_ns_get(f->l3, (const uint8_t *)"b", 1, &one),
			 KVT_ENOTFOUND);
	assert_ns_totals(f, 3);
	/* Drop. */
	assert_int_equal(kvt_l3_drop_ns(f->l3, (const uint8_t *)"a", 1,
					&dropped), 0);
	assert_int_equal(dropped, 3);
	assert_int_equal(kvt_l3_drop_ns(f->l3, (const uint8_t *)"a", 1,
					&dropped), 0);
	assert_int_equal(dropped, 0);
	assert_ns_totals(f, 2);
	/* Expired, found by a read. */
	assert_int_equal(put_one(f, "ttl", 4000, fake_now + 1), 0);
	assert_ns_totals(f, 3);
	fake_now += 5;
	assert_int_equal(read_one(f, "ttl", 4000), KVT_ENOTFOUND);
	assert_ns_totals(f, 2);
	/* Reopen: rebuilt from the index, hits included. */
	fx_reopen(f);
	assert_ns_totals(f, 2);
	assert_int_equal(kvt_l3_ns_get(f->l3, longns, 255, &one), 0);
	assert_int_equal(one.hits, 1);
	/* Reclaim: fill the store in namespace "r" until all else is gone. */
	for (int i = 0; i < 60; i++) {
		char k[8];

		snprintf(k, sizeof(k), "r%d", i);
		assert_int_equal(put_ns(f, (const uint8_t *)"r", 1,
					(const uint8_t *)k, strlen(k),
					30000), 0);
		if (i % 10 == 0)
			assert_ns_totals(f, stats(f).namespaces);
	}
	assert_true(stats(f).regions_reclaimed > 3);
	assert_ns_totals(f, 1);
	assert_int_equal(kvt_l3_ns_get(f->l3, (const uint8_t *)"r", 1, &one),
			 0);
	assert_int_equal(one.entries, stats(f).entries);
	assert_int_equal(kvt_l3_ns_foreach(NULL, totals_cb, NULL), KVT_EINVAL);
	assert_int_equal(kvt_l3_ns_foreach(f->l3, NULL, NULL), KVT_EINVAL);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}


/* ---- on-disk format ----------------------------------------------------- */

/* FNV-1a of a whole file, and its size; 0 and -1 if it cannot be read. */
static uint64_t file_sum(const char *path, off_t *size)
{
	uint64_t h = 14695981039346656037ull;
	uint8_t buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	*size = -1;
	if (fd < 0)
		return 0;
	*size = 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 1099511628211ull;
		*size += n;
	}
	close(fd);
	return h;
}

/* The sum of every file of the store, so that any change shows. */
static uint64_t store_sum(struct fx *f)
{
	static const char *names[] = {
		"l3/index/data.mdb", "l3/region-00000.dat",
		"l3/region-00001.dat", "l3/region-00002.dat",
		"l3/region-00003.dat", "l3/region-00004.dat",
	};
	uint64_t h = 0;
	char path[256];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		off_t size;

		snprintf(path, sizeof(path), "%s/%s", f->dir, names[i]);
		h = h * 31 + file_sum(path, &size) + (uint64_t)size;
	}
	return h;
}

/* Rewrites the store's format version as if an older build made it. */
static void set_format(struct fx *f, uint32_t version)
{
	char path[256];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	uint8_t v[4] = { (uint8_t)version, (uint8_t)(version >> 8),
			 (uint8_t)(version >> 16), (uint8_t)(version >> 24) };
	MDB_val k = { 7, (void *)"version" }, val = { 4, v };

	snprintf(path, sizeof(path), "%s/l3/index", f->dir);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
	assert_int_equal(mdb_env_set_mapsize(env, (size_t)1 << 30), 0);
	assert_int_equal(mdb_env_open(env, path, 0, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/*
 * A store in another on-disk format is refused, with a message that names
 * the folder and says what to do, and is left exactly as it was: never
 * converted, never wiped.
 */
static void test_old_format_refused(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	struct kvt_l3 *l3 = (struct kvt_l3 *)1;
	char root[128];
	uint64_t before;

	(void)state;
	snprintf(root, sizeof(root), "%s/l3", f->dir);
	assert_int_equal(put_one(f, "old", 30000, 0), 0);
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	for (uint32_t v = 1; v <= 3; v += 2) {
		set_format(f, v);
		before = store_sum(f);
		f->err[0] = '\0';
		assert_int_equal(kvt_l3_open(&l3, &f->cfg), KVT_EVERSION);
		assert_null(l3);
		assert_non_null(strstr(f->err, root));
		assert_non_null(strstr(f->err, v == 1 ? "format 1" :
				       "newer"));
		assert_non_null(strstr(f->err, "move it aside"));
		assert_non_null(strstr(f->err, "delete it"));
		assert_int_equal(store_sum(f), before);
	}
	/* Put back as it was, the store opens and serves again. */
	set_format(f, 2);
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	assert_int_equal(read_one(f, "old", 30000), 0);
	fx_free(f);
}


/* ---- a damaged index ---------------------------------------------------- */

/* Copies file src to dst (whole); 0 or -1. */
static int copy_file(const char *src, const char *dst)
{
	char buf[65536];
	ssize_t n;
	int in = open(src, O_RDONLY), out, rc = 0;

	if (in < 0)
		return -1;
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out < 0) {
		close(in);
		return -1;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			rc = -1;
	close(in);
	close(out);
	return n < 0 ? -1 : rc;
}

/* Key i of the damage tests: lengths from 20 to 3000 (some hashed). */
static struct kvt_key dkey(unsigned i, char *buf)
{
	size_t len = 20 + (i * 131) % (i % 9 == 0 ? 3000 : 200);
	struct kvt_key k = { (const uint8_t *)(i % 3 ? "dmg" : "other"),
			     i % 3 ? 3 : 5, (const uint8_t *)buf, len };

	memset(buf, 'a' + (int)(i % 26), len);
	snprintf(buf, 12, "%010u", i);
	buf[10] = '-';
	buf[len] = '\0'; /* mkdata() reads it as a string */
	return k;
}

enum { DMG_KEYS = 1200 };

/*
 * What a process does with a damaged store (in a child: a signal is a
 * failure the parent sees): a read-only open and check must end with a
 * status, never a signal; a normal open either refuses with a message
 * naming data.mdb and what to do, or serves: every read the right bytes or
 * a miss, and puts, a delete, a drop and the close (which writes hit
 * counts) go through.  Exits 0 if all promises hold, else with the number
 * of the broken one.
 */
static int damaged_child(const char *dir)
{
	struct kvt_l3_config cfg = {
		.dir = dir, .capacity = 2 * MIB, .region_size = 512 * KIB,
		.no_sync = 1, .key_max = 4096,
	};
	char err[512] = "", kb[3001];
	struct kvt_l3 *l3;
	FILE *devnull = fopen("/dev/null", "w");
	int rc;

	cfg.errmsg = err;
	cfg.errmsg_len = sizeof(err);
	cfg.read_only = 1;
	rc = kvt_l3_open(&l3, &cfg);
	if (rc == 0) {
		/* Problems or an error are fine; a signal is not. */
		kvt_l3_check(l3, devnull);
		kvt_l3_close(l3);
	} else if (rc == -EUCLEAN &&
		   (!strstr(err, "data.mdb") || !strstr(err, "aside"))) {
		return 11;
	}
	cfg.read_only = 0;
	err[0] = '\0';
	rc = kvt_l3_open(&l3, &cfg);
	if (rc) {
		/* Refused: it must say which file and what to do. */
		if (!strstr(err, "data.mdb") && !strstr(err, "index"))
			return 12;
		if (rc == -EUCLEAN && (!strstr(err, "--check") ||
				       !strstr(err, "aside")))
			return 13;
		return 0;
	}
	for (unsigned i = 0; i < DMG_KEYS; i++) {
		struct kvt_l3_read rd = { .k = dkey(i, kb) };
		uint8_t *want;

		if (kvt_l3_read_batch(l3, NULL, &rd, 1))
			return 14;
		if (rd.status == 0) {
			want = mkdata(kb, 300 + i % 700);
			if (rd.len != 300 + i % 700 ||
			    memcmp(rd.data, want, rd.len))
				return 15; /* a wrong byte */
			free(want);
		} else if (rd.status != KVT_ENOTFOUND &&
			   rd.status != KVT_ECORRUPT) {
			return 16;
		}
		free(rd.mem);
	}
	/* Writes go through the damaged pages, or fail cleanly. */
	for (unsigned i = DMG_KEYS; i < DMG_KEYS + 200; i++) {
		struct kvt_key k = dkey(i, kb);
		uint8_t *d = mkdata(kb, 300);
		struct kvt_l3_item it = { k, d, 300, 7, 3, 600, 0 };

		kvt_l3_put_batch(l3, &it, 1);
		free(d);
	}
	{
		struct kvt_key k = dkey(5, kb);
		uint64_t dropped;

		kvt_l3_del(l3, &k);
		kvt_l3_drop_ns(l3, (const uint8_t *)"other", 5, &dropped);
	}
	kvt_l3_check(l3, devnull);
	kvt_l3_close(l3);
	fclose(devnull);
	return 0;
}

/* Runs damaged_child on dir in a child; returns its wait status. */
static int damaged_trial(const char *dir)
{
	pid_t pid = fork();
	int st = 0;

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(damaged_child(dir));
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

/*
 * A truncated or bit-flipped index never kills a process with a signal
 * (SIGBUS past the end of a short data.mdb, SIGSEGV or worse on flipped
 * page numbers, offsets and sizes): it is refused with a message naming
 * data.mdb and what to do, or served correctly.  Every truncation length
 * that matters, and seeded random flips of 1 to 16 bits (three in four
 * anywhere, one in four in the meta pages).
 */
static void test_damaged_index(void **state)
{
	struct fx *f;
	char kb[3001], pristine[256], mdb[320], work[200], cmd[1024];
	struct stat sb;
	uint64_t size;
	unsigned x = 17, refused = 0, served = 0;
	int trials = 160;

	(void)state;
	if (g_backend == KVT_L3_IO_PREAD)
		return; /* about the index: once is enough */
	f = fx_new(2 * MIB, 512 * KIB, MODE_BUFFERED);
	kvt_l3_close(f->l3);
	f->cfg.key_max = 4096;
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	for (unsigned i = 0; i < DMG_KEYS; i += 16) {
		struct kvt_l3_item it[16];
		uint8_t *d[16];
		char keys[16][3001];

		for (unsigned j = 0; j < 16; j++) {
			struct kvt_key k = dkey(i + j, keys[j]);

			d[j] = mkdata(keys[j], 300 + (i + j) % 700);
			it[j] = (struct kvt_l3_item){ k, d[j],
				300 + (i + j) % 700, 7, 3, 0, 0 };
		}
		assert_int_equal(kvt_l3_put_batch(f->l3, it, 16), 0);
		for (unsigned j = 0; j < 16; j++)
			free(d[j]);
	}
	/* Deletes leave free pages: the free list has records. */
	for (unsigned i = 0; i < DMG_KEYS; i += 7) {
		struct kvt_key k = dkey(i, kb);

		kvt_l3_del(f->l3, &k);
	}
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	snprintf(mdb, sizeof(mdb), "%s/l3/index/data.mdb", f->dir);
	snprintf(pristine, sizeof(pristine), "%s/pristine.mdb", f->dir);
	snprintf(work, sizeof(work), "%s/work", f->dir);
	assert_int_equal(copy_file(mdb, pristine), 0);
	assert_int_equal(stat(mdb, &sb), 0);
	size = (uint64_t)sb.st_size;
	assert_true(size > 16 * 4096);
	/* The store in work/ is refreshed from the pristine one per trial. */
	snprintf(cmd, sizeof(cmd), "cp -a %s/l3 %s/", f->dir, work);
	assert_int_equal(mkdir(work, 0755), 0);
	assert_int_equal(system(cmd), 0);
	snprintf(mdb, sizeof(mdb), "%s/l3/index/data.mdb", work);
	for (int t = -9; t < trials; t++) {
		char what[160];
		int st, fd;

		assert_int_equal(copy_file(pristine, mdb), 0);
		fd = open(mdb, O_RDWR);
		assert_true(fd >= 0);
		if (t < 0) {
			static const uint64_t cut[] = { 0, 1, 4095, 4096, 8192 };
			uint64_t n = t + 9 < 5 ? cut[t + 9] :
				     t + 9 == 5 ? size / 2 :
				     t + 9 == 6 ? size - 4096 :
				     t + 9 == 7 ? size - 1 : size - 8192;

			snprintf(what, sizeof(what), "truncated to %llu",
				 (unsigned long long)n);
			assert_int_equal(ftruncate(fd, (off_t)n), 0);
		} else {
			int nflips;
			size_t len;

			x = x * 1103515245u + 12345u;
			nflips = 1 + (int)((x >> 16) % 16);
			len = (size_t)snprintf(what, sizeof(what),
					       "trial %d flips", t);
			for (int i = 0; i < nflips; i++) {
				uint64_t where, off;
				uint8_t c;
				unsigned bit;

				x = x * 1103515245u + 12345u;
				where = (x >> 16) % 4 ? size : 8192;
				x = x * 1103515245u + 12345u;
				off = ((uint64_t)x << 16 ^ x >> 8) % where;
				x = x * 1103515245u + 12345u;
				bit = (x >> 16) % 8;
				assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
				c ^= (uint8_t)(1u << bit);
				assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
				if (len < sizeof(what) - 24)
					len += (size_t)snprintf(what + len,
						sizeof(what) - len, " %llu.%u",
						(unsigned long long)off, bit);
			}
		}
		close(fd);
		st = damaged_trial(work);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail_msg("%s: %s %d", what,
				 WIFSIGNALED(st) ? "killed by signal" :
				 "broken promise", WIFSIGNALED(st) ?
				 WTERMSIG(st) : WEXITSTATUS(st));
		/* Did the trial leave a store the next one can overwrite? */
		{
			struct kvt_l3 *l3;
			struct kvt_l3_config cfg = f->cfg;
			int rc;

			cfg.dir = work;
			cfg.read_only = 1;
			rc = kvt_l3_open(&l3, &cfg);
			if (rc == 0) {
				served++;
				kvt_l3_close(l3);
			} else {
				refused++;
			}
		}
		/* Region files as they were: the next trial starts clean. */
		snprintf(cmd, sizeof(cmd), "rm -rf %s/l3 && cp -a %s/l3 %s/",
			 work, f->dir, work);
		assert_int_equal(system(cmd), 0);
	}
	/* Both outcomes happen (the trials exercise something). */
	assert_true(refused > 0);
	assert_true(served > 0);
	fx_free(f);
}


/* ---- the index's size; logging ------------------------------------------ */

/* The lines L3 logged (kvt_l3_config.log), for the tests to search. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[65536];
static size_t log_len;

static void log_line(void *arg, int level, const char *line)
{
	(void)arg;
	pthread_mutex_lock(&log_mu);
	log_len += (size_t)snprintf(log_text + log_len,
				    sizeof(log_text) - log_len, "%d %s\n",
				    level, line);
	if (log_len >= sizeof(log_text))
		log_len = sizeof(log_text) - 1;
	pthread_mutex_unlock(&log_mu);
}

static void log_clear(void)
{
	pthread_mutex_lock(&log_mu);
	log_len = 0;
	log_text[0] = '\0';
	pthread_mutex_unlock(&log_mu);
}

/* How many logged lines contain s. */
static int log_count(const char *s)
{
	int n = 0;

	pthread_mutex_lock(&log_mu);
	for (const char *p = log_text; (p = strstr(p, s)); p += strlen(s))
		n++;
	pthread_mutex_unlock(&log_mu);
	return n;
}

/* Entry i of the index tests: a 1000-byte key (hashed: a 1 KiB record). */
static struct kvt_key ikey(unsigned i, char *buf, unsigned ns)
{
	struct kvt_key k = { (const uint8_t *)(ns ? "ix1" : "ix0"), 3,
			     (const uint8_t *)buf, 1000 };

	memset(buf, 'k', 1000);
	snprintf(buf, 12, "%010u", i);
	buf[10] = '-';
	buf[1000] = '\0';
	return k;
}

static int put_ikey(struct fx *f, unsigned i)
{
	char kb[1001];
	struct kvt_key k = ikey(i, kb, i % 2);
	uint8_t *d = mkdata(kb, 200);
	struct kvt_l3_item it = { k, d, 200, 7, 3, 400, 0 };
	int rc = kvt_l3_put_batch(f->l3, &it, 1);

	free(d);
	return rc;
}

static int read_ikey(struct fx *f, unsigned i)
{
	char kb[1001];
	struct kvt_l3_read rd = { .k = ikey(i, kb, i % 2) };
	uint8_t *d;
	int rc;

	assert_int_equal(kvt_l3_read_batch(f->l3, NULL, &rd, 1), 0);
	if ((rc = rd.status))
		return rc;
	d = mkdata(kb, 200);
	assert_int_equal(rd.len, 200);
	assert_memory_equal(rd.data, d, 200);
	free(d);
	free(rd.mem);
	return 0;
}

/*
 * The map is sized from the capacity and the key limit so that the index
 * of a full store fits: at least the cost measured for the costliest keys
 * (a 1 KiB key in a 255-byte namespace: 3028 bytes of index per entry,
 * bench_l3 -x 1024; an entry takes 4 KiB of region), with room to spare.
 */
static void test_index_size(void **state)
{
	uint64_t cap = (uint64_t)4 << 30;

	(void)state;
	assert_true(kvt_l3_index_size(cap, 1024) >= cap / 4096 * 3028 / 10 * 12);
	assert_true(kvt_l3_index_size(cap, 32) >= cap / 4096 * 665 / 10 * 12);
	assert_int_equal(kvt_l3_index_size(cap, 0),
			 kvt_l3_index_size(cap, KVT_L3_KEY_DEFAULT));
	/* More key room, more index; and never absurd. */
	assert_true(kvt_l3_index_size(cap, 65535) >
		    kvt_l3_index_size(cap, 1024));
	/*
	 * With 64 KiB keys an entry of 4 KiB in a region (a 4 KiB key) can
	 * take two overflow pages of index: the map may exceed the data.
	 */
	assert_true(kvt_l3_index_size(cap, 65535) < 3 * cap);
	assert_true(kvt_l3_index_size(cap, 32) < cap / 3);
}

/* A map too small for what is written grows, says so, and loses nothing. */
static void test_index_grows(void **state)
{
	struct fx *f = fx_new(4 * MIB, 256 * KIB, MODE_BUFFERED);
	struct kvt_l3_stats st;

	(void)state;
	kvt_l3_close(f->l3);
	f->cfg.map_size = 256 * KIB;
	f->cfg.map_max = 64 * MIB;
	f->cfg.log = log_line;
	log_clear();
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	for (unsigned i = 0; i < 600; i++)
		assert_int_equal(put_ikey(f, i), 0);
	st = stats(f);
	assert_true(st.index_grown > 0);
	assert_int_equal(st.index_full, 0);
	assert_int_equal(st.write_errors, 0);
	assert_true(st.index_map_bytes > 256 * KIB);
	assert_true(st.index_bytes > 256 * KIB);
	assert_true(log_count("event=l3_index_grown") > 0);
	/* 600 entries of 4 KiB fit in the 1024 slots of the regions. */
	assert_int_equal(st.entries, 600);
	for (unsigned i = 0; i < 600; i += 7)
		assert_int_equal(read_ikey(f, i), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_reopen(f);
	assert_int_equal(stats(f).entries, 600);
	assert_int_equal(put_ikey(f, 600), 0);
	assert_int_equal(read_ikey(f, 3), 0);
	fx_free(f);
}

/*
 * A full index that cannot grow is treated as full regions are: puts go
 * on (the oldest regions are reclaimed, counted as index_full and
 * logged), the newest entries read back, DEL and DROP succeed, and a
 * restart does not get stuck.  (The issue: every batch failed at commit
 * for good, nothing was logged, DROP failed with ENOSPC.)
 */
static void test_index_full(void **state)
{
	/* 64 regions of 256 KiB: 4096 slots; the index holds ~2000 entries. */
	struct fx *f = fx_new(16 * MIB, 256 * KIB, MODE_BUFFERED);
	struct kvt_l3_stats st;
	uint64_t dropped;
	char kb[1001];
	struct kvt_key k;
	unsigned n = 3000;

	(void)state;
	kvt_l3_close(f->l3);
	f->cfg.map_size = f->cfg.map_max = 4 * MIB;
	f->cfg.log = log_line;
	log_clear();
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(put_ikey(f, i), 0);
	st = stats(f);
	assert_int_equal(st.write_errors, 0);
	assert_true(st.index_full > 0);
	assert_true(st.regions_reclaimed >= st.index_full);
	assert_true(st.entries > 10 && st.entries < n);
	assert_true(st.index_bytes <= st.index_map_bytes);
	assert_int_equal(st.index_map_bytes, 4 * MIB);
	assert_true(log_count("event=l3_index_full") > 0);
	/* The newest are there. */
	for (unsigned i = n - 8; i < n; i++)
		assert_int_equal(read_ikey(f, i), 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* DEL and DROP succeed on the full index. */
	k = ikey(n - 1, kb, (n - 1) % 2);
	assert_int_equal(kvt_l3_del(f->l3, &k), 0);
	assert_int_equal(read_ikey(f, n - 1), KVT_ENOTFOUND);
	assert_int_equal(kvt_l3_drop_ns(f->l3, (const uint8_t *)"ix0", 3,
					&dropped), 0);
	assert_true(dropped > 0);
	assert_int_equal(read_ikey(f, n - 2), KVT_ENOTFOUND);
	assert_int_equal(read_ikey(f, n - 3), 0);
	/* Refill to full, then DROP the rest: still fine. */
	for (unsigned i = n; i < 2 * n; i++)
		assert_int_equal(put_ikey(f, i), 0);
	assert_int_equal(kvt_l3_drop_ns(f->l3, (const uint8_t *)"ix1", 3,
					&dropped), 0);
	assert_int_equal(kvt_l3_drop_ns(f->l3, (const uint8_t *)"ix0", 3,
					&dropped), 0);
	assert_int_equal(stats(f).entries, 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	/* A restart with the same small map keeps taking writes. */
	for (unsigned i = 2 * n; i < 3 * n; i += 4)
		assert_int_equal(put_ikey(f, i), 0);
	fx_reopen(f);
	for (unsigned i = 3 * n; i < 3 * n + 100; i++)
		assert_int_equal(put_ikey(f, i), 0);
	assert_int_equal(read_ikey(f, 3 * n + 99), 0);
	assert_int_equal(stats(f).write_errors, 0);
	assert_int_equal(kvt_l3_check(f->l3, NULL), 0);
	fx_free(f);
}

/*
 * A failed write is logged, with the file, the operation and the errno,
 * at most once a second (the next line says how many were left out).
 */
static void test_write_failure_logged(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	struct timespec pause = { 1, 100 * 1000 * 1000 };
	char want[256];

	(void)state;
	kvt_l3_close(f->l3);
	f->cfg.log = log_line;
	log_clear();
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	f->faults.write_fail_at = 1;
	f->faults.write_errno = EIO;
	assert_int_equal(put_one(f, "a", 5000, 0), -EIO);
	snprintf(want, sizeof(want), "file=%s/l3/region-00000.dat", f->dir);
	assert_int_equal(log_count("event=l3_write_failed"), 1);
	assert_int_equal(log_count(want), 1);
	assert_int_equal(log_count("op=write"), 1);
	assert_int_equal(log_count("errno=5"), 1);
	assert_int_equal(log_count("0 event=l3_write_failed"), 1); /* error */
	f->faults.sync_errno = ENOSPC;
	assert_int_equal(put_one(f, "b", 5000, 0), -ENOSPC);
	assert_int_equal(log_count("event=l3_write_failed"), 1); /* limited */
	nanosleep(&pause, NULL);
	f->faults.write_fail_at = 1;
	f->faults.write_errno = EIO;
	assert_int_equal(put_one(f, "c", 5000, 0), -EIO);
	assert_int_equal(log_count("event=l3_write_failed"), 2);
	assert_int_equal(log_count("lines_left_out=1"), 1);
	assert_int_equal(stats(f).write_errors, 3);
	fx_free(f);
}

/* A smaller capacity drops the regions past it, and says how much. */
static void test_shrink_logged(void **state)
{
	struct fx *f = fx_new(4 * MIB, 1 * MIB, MODE_BUFFERED);
	char name[64];
	uint64_t before, kept;

	(void)state;
	for (int i = 0; i < 60; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		assert_int_equal(put_one(f, name, 60000, 0), 0);
	}
	before = stats(f).entries;
	kvt_l3_close(f->l3);
	f->cfg.capacity = 2 * MIB;
	f->cfg.log = log_line;
	log_clear();
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	kept = stats(f).entries;
	assert_true(kept < before);
	snprintf(name, sizeof(name), "entries_dropped=%llu",
		 (unsigned long long)(before - kept));
	assert_int_equal(log_count("1 event=l3_shrunk"), 1); /* a warning */
	assert_int_equal(log_count("regions=4->2"), 1);
	assert_int_equal(log_count(name), 1);
	/* Same size again: nothing to say. */
	fx_reopen(f);
	assert_int_equal(log_count("event=l3_shrunk"), 1);
	fx_free(f);
}

/* Runs kvt_l3_open on cfg in a child with files capped at fsize bytes. */
static int open_capped(const struct kvt_l3_config *cfg, rlim_t fsize,
		       char *err, size_t err_len)
{
	int pfd[2], st;
	pid_t pid;
	ssize_t n;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { fsize, fsize };
		struct kvt_l3_config c = *cfg;
		struct kvt_l3 *l3;
		char msg[512] = "";
		int rc;

		signal(SIGXFSZ, SIG_IGN); /* EFBIG, not a signal */
		setrlimit(RLIMIT_FSIZE, &rl);
		c.errmsg = msg;
		c.errmsg_len = sizeof(msg);
		rc = kvt_l3_open(&l3, &c);
		if (write(pfd[1], msg, strlen(msg) + 1) < 0)
			_exit(3);
		if (rc == 0)
			kvt_l3_close(l3);
		_exit(rc ? 1 : 0);
	}
	close(pfd[1]);
	n = read(pfd[0], err, err_len - 1);
	err[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/*
 * A start that cannot preallocate its region files fails with a message
 * naming the file and the reason, and leaves none of the files it made
 * (they would fill the disk).  A store that existed keeps its files.
 */
static void test_failed_open_cleans_up(void **state)
{
	struct fx *f = fx_new(2 * MIB, 1 * MIB, MODE_BUFFERED);
	struct kvt_l3_config cfg = f->cfg;
	char err[512], path[256], fresh[200];
	struct stat sb;

	(void)state;
	assert_int_equal(put_one(f, "keep", 5000, 0), 0);
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	/* The existing store grows to 4 regions: 2 new files, too big. */
	cfg.capacity = 4 * MIB;
	assert_int_equal(open_capped(&cfg, 1 * MIB + 4096, err, sizeof(err)),
			 0); /* the old files are big enough, the new: */
	cfg.capacity = 8 * MIB;
	cfg.region_size = 1 * MIB;
	assert_int_equal(open_capped(&cfg, 512 * KIB, err, sizeof(err)), 1);
	snprintf(path, sizeof(path), "%s/l3/region-00004.dat", f->dir);
	assert_non_null(strstr(err, "cannot preallocate"));
	assert_non_null(strstr(err, "/l3/region-0000"));
	assert_non_null(strstr(err, "File too large"));
	assert_int_not_equal(stat(path, &sb), 0);
	snprintf(path, sizeof(path), "%s/l3/region-00000.dat", f->dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(kvt_l3_open(&f->l3, &f->cfg), 0);
	assert_int_equal(read_one(f, "keep", 5000), 0);
	/* A store made by the failed start goes altogether. */
	snprintf(fresh, sizeof(fresh), "%s/fresh", f->dir);
	cfg.dir = fresh;
	assert_int_equal(open_capped(&cfg, 512 * KIB, err, sizeof(err)), 1);
	assert_non_null(strstr(err, fresh));
	snprintf(path, sizeof(path), "%s/l3", fresh);
	assert_int_not_equal(stat(path, &sb), 0);
	fx_free(f);
}

/* Start-up errors name the path they are about. */
static void test_open_errors_name_paths(void **state)
{
	struct fx *f = fx_new(2 * MIB, 1 * MIB, MODE_BUFFERED);
	char path[256];
	struct kvt_l3 *l3;

	(void)state;
	kvt_l3_close(f->l3);
	f->l3 = NULL;
	snprintf(path, sizeof(path), "%s/l3/lock", f->dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0755), 0); /* cannot be opened O_RDWR */
	f->err[0] = '\0';
	assert_true(kvt_l3_open(&l3, &f->cfg) < 0);
	assert_non_null(strstr(f->err, path));
	assert_non_null(strstr(f->err, "Is a directory"));
	assert_int_equal(rmdir(path), 0);
	/* A check of a folder without a store says so, and makes none. */
	f->cfg.read_only = 1;
	f->cfg.dir = "/nonexistent-kvtier-dir";
	f->err[0] = '\0';
	assert_int_equal(kvt_l3_open(&l3, &f->cfg), KVT_ENOTFOUND);
	assert_non_null(strstr(f->err, "/nonexistent-kvtier-dir"));
	assert_int_equal(access("/nonexistent-kvtier-dir", F_OK), -1);
	f->cfg.read_only = 0;
	f->cfg.dir = f->dir;
	fx_reopen(f);
	fx_free(f);
}

#define MODES(fn)                                                        \
	cmocka_unit_test_prestate(fn, (void *)(intptr_t)MODE_DEFAULT),   \
	cmocka_unit_test_prestate(fn, (void *)(intptr_t)MODE_BUFFERED),  \
	cmocka_unit_test_prestate(fn, (void *)(intptr_t)MODE_SYNC_READS)

static int group_default(void **state)
{
	(void)state;
	g_backend = KVT_L3_IO_AUTO;
	return 0;
}

static int group_pread(void **state)
{
	(void)state;
	g_backend = KVT_L3_IO_PREAD;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backend_choice),
		MODES(test_read_faults),
		MODES(test_roundtrip_sizes),
		MODES(test_many_reads),
		MODES(test_caller_buffers),
		MODES(test_one_read_per_value),
		cmocka_unit_test(test_contains_del),
		cmocka_unit_test(test_overwrite),
		MODES(test_reclaim),
		cmocka_unit_test(test_batch_larger_than_store),
		MODES(test_reopen),
		MODES(test_corruption),
		MODES(test_write_failures),
		cmocka_unit_test(test_write_failure_mid_batch),
		MODES(test_crash_before_commit),
		cmocka_unit_test(test_kill9),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_keys_and_limits),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_small_capacity),
		cmocka_unit_test(test_contains_threaded),
		MODES(test_concurrent_readers),
		MODES(test_reclaim_waits_for_readers),
		MODES(test_deferred_removal),
		MODES(test_ns_totals),
		cmocka_unit_test(test_old_format_refused),
		cmocka_unit_test(test_damaged_index),
		cmocka_unit_test(test_index_size),
		cmocka_unit_test(test_index_grows),
		cmocka_unit_test(test_index_full),
		cmocka_unit_test(test_write_failure_logged),
		cmocka_unit_test(test_shrink_logged),
		cmocka_unit_test(test_failed_open_cleans_up),
		cmocka_unit_test(test_open_errors_name_paths),
	};

	int failed;

	failed = cmocka_run_group_tests_name("l3 (default backend)", tests,
					     group_default, NULL);
	failed += cmocka_run_group_tests_name("l3 (pread backend)", tests,
					      group_pread, NULL);
	return failed;
}
