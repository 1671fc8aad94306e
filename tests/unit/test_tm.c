/*
 * test_tm.c - unit tests for the tier manager (tiers/kvt_tm*.c), driven only
 * through kvt_tm.h as the daemon uses it, with a fake clock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvt_frame.h"
#include "kvt_lru.h"
#include "kvt_l3.h"
#include "kvt_tm.h"

static uint64_t fake_now = 1000;

static uint64_t fake_clock(void)
{
	return fake_now;
}

static struct kvt_tm *open_tm(uint64_t l1_capacity)
{
	struct kvt_tm_config cfg = {
		.l1_capacity = l1_capacity,
		/* L1 alone: these tests pin down L1 semantics through the
		 * manager; the tiered tests below add L2 and L3. */
		.l2_capacity = 0,
		.l3_capacity = 0,
		.data_dir = NULL,
		.now_s = fake_clock,
	};
	struct kvt_tm *tm;

	fake_now = 1000;
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);
	assert_non_null(tm);
	return tm;
}

static struct kvt_key mkkey(const char *ns, const char *key)
{
	struct kvt_key k = {
		(const uint8_t *)ns, strlen(ns), (const uint8_t *)key,
		strlen(key)
	};

	return k;
}

static int put(struct kvt_tm *tm, const char *ns, const char *key,
	       size_t len, uint8_t fill, uint32_t ttl_s)
{
	struct kvt_key k = mkkey(ns, key);
	struct kvt_blob b;
	uint8_t *mem = malloc(len + 8);
	int rc;

	assert_non_null(mem);
	memset(mem + 8, fill, len);
	b.mem = mem;
	b.mem_size = len + 8;
	b.data = mem + 8;
	b.len = len;
	b.dtype = KVT_DTYPE_FP16;
	rc = kvt_tm_put(tm, &k, &b, ttl_s);
	assert_null(b.mem); /* ownership passed, whatever rc */
	return rc;
}

/* What a get callback saw. */
struct got {
	int calls;
	int status;
	struct kvt_ref *ref;
};

static void on_get(void *arg, int status, struct kvt_ref *ref)
{
	struct got *g = arg;

	g->calls++;
	g->status = status;
	g->ref = ref;
}

/* Gets (ns, key): returns 1 on a hit whose bytes are all fill, 0 on a miss. */
static int get_check(struct kvt_tm *tm, const char *ns, const char *key,
		     size_t len, uint8_t fill)
{
	struct kvt_key k = mkkey(ns, key);
	struct got g = { 0, 1, NULL };
	size_t i;

	assert_int_equal(kvt_tm_get(tm, &k, on_get, &g), 0);
	/* Synchronous in this version: cb already ran, exactly once. */
	assert_int_equal(g.calls, 1);
	if (g.status == KVT_ENOTFOUND) {
		assert_null(g.ref);
		return 0;
	}
	assert_int_equal(g.status, 0);
	assert_non_null(g.ref);
	assert_int_equal(kvt_ref_len(g.ref), len);
	assert_int_equal(kvt_ref_dtype(g.ref), KVT_DTYPE_FP16);
	for (i = 0; i < len; i++)
		assert_int_equal(kvt_ref_data(g.ref)[i], fill);
	kvt_ref_release(g.ref);
	return 1;
}

static struct kvt_tm_stats stats(struct kvt_tm *tm)
{
	struct kvt_tm_stats st;

	kvt_tm_stats(tm, &st);
	assert_true(st.l1.bytes <= st.l1.capacity_bytes);
	return st;
}

static void test_open_config(void **state)
{
	struct kvt_tm_config cfg = { .l1_capacity = 0 };
	struct kvt_tm *tm = (struct kvt_tm *)&cfg;

	(void)state;
	assert_int_equal(kvt_tm_open(NULL, &cfg), KVT_EINVAL);
	assert_int_equal(kvt_tm_open(&tm, NULL), KVT_EINVAL);
	assert_null(tm);
	assert_int_equal(kvt_tm_open(&tm, &cfg), KVT_EINVAL);
	/* L3 needs a data directory. */
	cfg.l1_capacity = 1 << 20;
	cfg.l3_capacity = 1 << 30;
	assert_int_equal(kvt_tm_open(&tm, &cfg), KVT_EINVAL);
	/* A data directory that cannot be created fails the open. */
	cfg.data_dir = "/proc/kvtier-cannot-create-this";
	assert_true(kvt_tm_open(&tm, &cfg) != 0);
	assert_null(tm);
	cfg.l3_capacity = 0;
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);
	/* Default clock (CLOCK_REALTIME) is usable for TTLs. */
	assert_int_equal(put(tm, "n", "k", 10, 1, 3600), 0);
	assert_true(get_check(tm, "n", "k", 10, 1));
	kvt_tm_close(tm);
	kvt_tm_close(NULL);
}

static void test_put_get_del_exists_stats(void **state)
{
	struct kvt_tm *tm = open_tm(1 << 20);
	struct kvt_key k = mkkey("model-a", "block0");
	struct kvt_tm_stats st;

	(void)state;
	assert_int_equal(kvt_tm_exists(tm, &k), 0);
	assert_int_equal(put(tm, "model-a", "block0", 1000, 0xab, 0), 0);
	assert_int_equal(put(tm, "model-b", "block0", 500, 0xcd, 0), 0);
	assert_int_equal(kvt_tm_exists(tm, &k), 1);
	assert_true(get_check(tm, "model-a", "block0", 1000, 0xab));
	assert_true(get_check(tm, "model-b", "block0", 500, 0xcd));
	assert_false(get_check(tm, "model-c", "block0", 0, 0));

	st = stats(tm);
	assert_int_equal(st.puts, 2);
	assert_int_equal(st.gets, 3);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.l1.hits, 2);
	assert_int_equal(st.l1.entries, 2);
	assert_int_equal(st.l1.raw_bytes, 1500);
	assert_int_equal(st.l1.bytes, kvt_lru_cost(1008, 7, 6) * 2 - 500);
	assert_int_equal(st.l1.capacity_bytes, 1 << 20);
	/* L2 is disabled in this configuration. */
	assert_int_equal(st.l2.capacity_bytes, 0);
	assert_int_equal(st.l2.entries, 0);
	assert_int_equal(st.l3.capacity_bytes, 0);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.rejected_too_big, 0);

	assert_int_equal(kvt_tm_del(tm, &k), 0);
	assert_int_equal(kvt_tm_del(tm, &k), KVT_ENOTFOUND);
	assert_int_equal(kvt_tm_exists(tm, &k), 0);
	assert_false(get_check(tm, "model-a", "block0", 0, 0));
	st = stats(tm);
	assert_int_equal(st.dels, 2);
	assert_int_equal(st.l1.entries, 1);
	assert_int_equal(st.l1.raw_bytes, 500);
	assert_int_equal(st.misses, 2);

	/* Replacement through the manager. */
	assert_int_equal(put(tm, "model-b", "block0", 20, 0x01, 0), 0);
	assert_true(get_check(tm, "model-b", "block0", 20, 0x01));
	assert_int_equal(stats(tm).l1.entries, 1);
	kvt_tm_close(tm);
}

static void test_get_callback(void **state)
{
	struct kvt_tm *tm = open_tm(1 << 20);
	struct kvt_key k = mkkey("n", "k");
	struct got g = { 0, 1, NULL };
	struct got g2 = { 0, 1, NULL };

	(void)state;
	/* A miss: called once, before returning, with KVT_ENOTFOUND. */
	assert_int_equal(kvt_tm_get(tm, &k, on_get, &g), 0);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.status, KVT_ENOTFOUND);
	assert_null(g.ref);

	/* A hit: the callee owns a reference that outlives del and close. */
	assert_int_equal(put(tm, "n", "k", 64, 0x77, 0), 0);
	memset(&g, 0, sizeof(g));
	assert_int_equal(kvt_tm_get(tm, &k, on_get, &g), 0);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_non_null(g.ref);
	assert_int_equal(kvt_tm_get(tm, &k, on_get, &g2), 0);
	assert_int_equal(g2.status, 0);
	assert_ptr_equal(g.ref, g2.ref); /* two references, one value */
	assert_int_equal(kvt_tm_del(tm, &k), 0);
	kvt_ref_release(g2.ref);
	assert_int_equal(kvt_ref_data(g.ref)[63], 0x77);
	assert_int_equal(put(tm, "n", "k2", 64, 0x78, 0), 0);
	memset(&g2, 0, sizeof(g2));
	assert_int_equal(kvt_tm_get(tm, &(struct kvt_key){ (const uint8_t *)"n",
			 1, (const uint8_t *)"k2", 2 }, on_get, &g2), 0);
	kvt_tm_close(tm);
	assert_int_equal(kvt_ref_data(g.ref)[0], 0x77);
	assert_int_equal(kvt_ref_data(g2.ref)[63], 0x78);
	kvt_ref_release(g.ref);
	kvt_ref_release(g2.ref);

	/* Bad arguments still complete the callback exactly once. */
	memset(&g, 0, sizeof(g));
	assert_int_equal(kvt_tm_get(NULL, &k, on_get, &g), 0);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.status, KVT_EINVAL);
	assert_null(g.ref);
	assert_int_equal(kvt_tm_get(NULL, &k, NULL, NULL), KVT_EINVAL);
}

static void test_rejected_too_big(void **state)
{
	uint64_t cap = kvt_lru_cost(1000 + 8, 1, 1);
	struct kvt_tm *tm = open_tm(cap);
	struct kvt_tm_stats st;

	(void)state;
	assert_int_equal(put(tm, "n", "a", 1000, 1, 0), 0);
	assert_int_equal(put(tm, "n", "b", 1001, 2, 0), KVT_ENOSPACE);
	assert_int_equal(put(tm, "n", "a", 5000, 3, 0), KVT_ENOSPACE);
	st = stats(tm);
	assert_int_equal(st.rejected_too_big, 2);
	assert_int_equal(st.puts, 3);
	assert_int_equal(st.evictions, 0);
	/* A refused put leaves the store as it was. */
	assert_int_equal(st.l1.entries, 1);
	assert_true(get_check(tm, "n", "a", 1000, 1));
	kvt_tm_close(tm);
}

static void test_evictions_counted(void **state)
{
	struct kvt_tm *tm = open_tm(3 * kvt_lru_cost(1000 + 8, 1, 2));
	struct kvt_tm_stats st;
	char key[8];
	int i;

	(void)state;
	for (i = 0; i < 10; i++) {
		key[0] = 'k';
		key[1] = (char)('0' + i);
		key[2] = '\0';
		assert_int_equal(put(tm, "n", key, 1000, (uint8_t)i, 0), 0);
		st = stats(tm);
		assert_int_equal(st.evictions, i < 3 ? 0 : i - 2);
		assert_int_equal(st.l1.entries, i < 3 ? i + 1 : 3);
	}
	assert_false(get_check(tm, "n", "k6", 0, 0));
	assert_true(get_check(tm, "n", "k7", 1000, 7));
	assert_true(get_check(tm, "n", "k9", 1000, 9));
	st = stats(tm);
	assert_int_equal(st.demotions, 0);
	assert_int_equal(st.promotions, 0);
	kvt_tm_close(tm);
}

static void test_ttl_fake_clock(void **state)
{
	struct kvt_tm *tm = open_tm(1 << 20);
	struct kvt_key k = mkkey("n", "short");
	struct kvt_tm_stats st;

	(void)state;
	assert_int_equal(put(tm, "n", "short", 10, 1, 10), 0);
	assert_int_equal(put(tm, "n", "long", 10, 2, 0), 0);
	fake_now = 1009;
	assert_int_equal(kvt_tm_exists(tm, &k), 1);
	assert_true(get_check(tm, "n", "short", 10, 1));
	fake_now = 1010;
	assert_int_equal(kvt_tm_exists(tm, &k), 0);
	assert_false(get_check(tm, "n", "short", 0, 0));
	assert_int_equal(kvt_tm_del(tm, &k), KVT_ENOTFOUND);
	fake_now = 1u << 30;
	assert_true(get_check(tm, "n", "long", 10, 2));
	st = stats(tm);
	assert_int_equal(st.l1.entries, 1);
	assert_int_equal(st.misses, 1);
	/* A TTL counts from the put, on the manager's clock. */
	assert_int_equal(put(tm, "n", "short", 10, 3, 5), 0);
	fake_now += 4;
	assert_true(get_check(tm, "n", "short", 10, 3));
	fake_now += 1;
	assert_false(get_check(tm, "n", "short", 0, 0));
	kvt_tm_close(tm);
}

static void test_expired_victim_not_an_eviction(void **state)
{
	struct kvt_tm *tm = open_tm(2 * kvt_lru_cost(1000 + 8, 1, 1));

	(void)state;
	assert_int_equal(put(tm, "n", "a", 1000, 1, 5), 0);
	assert_int_equal(put(tm, "n", "b", 1000, 2, 0), 0);
	fake_now += 10;
	/* a is the LRU and already dead: making room for c loses nothing. */
	assert_int_equal(put(tm, "n", "c", 1000, 3, 0), 0);
	assert_int_equal(stats(tm).evictions, 0);
	assert_int_equal(put(tm, "n", "d", 1000, 4, 0), 0);
	assert_int_equal(stats(tm).evictions, 1);
	kvt_tm_close(tm);
}

static void test_invalid_args(void **state)
{
	struct kvt_tm *tm = open_tm(1 << 20);
	struct kvt_key k = mkkey("n", "k");
	struct kvt_tm_stats st;

	(void)state;
	/* Ownership passes even to a NULL manager (ASan checks the free). */
	{
		struct kvt_blob b = { malloc(4), 4, NULL, 0, 0 };

		assert_int_equal(kvt_tm_put(NULL, &k, &b, 0), KVT_EINVAL);
		assert_null(b.mem);
	}
	assert_int_equal(kvt_tm_put(tm, &k, NULL, 0), KVT_EINVAL);
	assert_int_equal(kvt_tm_del(NULL, &k), KVT_EINVAL);
	assert_int_equal(kvt_tm_del(tm, NULL), KVT_EINVAL);
	assert_int_equal(kvt_tm_exists(NULL, &k), 0);
	assert_int_equal(kvt_tm_exists(tm, NULL), 0);
	kvt_tm_stats(NULL, &st);
	assert_int_equal(st.puts, 0);
	kvt_tm_stats(tm, NULL);
	kvt_ref_release(NULL);
	kvt_tm_close(tm);
}


/* ---- with L2 and L3: gets may complete later, from kvt_tm_dispatch() ---- */

static char tdir[64];

static struct kvt_tm *open_tiered(uint64_t l1, uint64_t l2, uint64_t l3)
{
	struct kvt_tm_config cfg = {
		.l1_capacity = l1,
		.l2_capacity = l2,
		.l3_capacity = l3,
		.l3_region_size = 1 << 20,
		.l3_no_sync = 1,
		.data_dir = tdir,
		.now_s = fake_clock,
	};
	struct kvt_tm *tm = NULL;

	if (!tdir[0]) {
		snprintf(tdir, sizeof(tdir), "/tmp/kvt-test-tm-XXXXXX");
		assert_non_null(mkdtemp(tdir));
	}
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);
	return tm;
}

static void rm_tdir(void)
{
	char cmd[128];

	if (!tdir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	assert_int_equal(system(cmd), 0);
	tdir[0] = '\0';
}

/* Runs the worker's results until nothing is in motion. */
static void drain(struct kvt_tm *tm)
{
	for (int i = 0; i < 5000; i++) {
		struct kvt_tm_stats st;

		kvt_tm_dispatch(tm);
		kvt_tm_stats(tm, &st);
		if (st.jobs_pending == 0)
			return;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	fail_msg("worker jobs did not finish");
}

/* Incompressible bytes derived from seed, so blocks really fill L2. */
static void rand_fill(uint8_t *p, size_t len, uint8_t seed)
{
	uint64_t x = 0x9E3779B97F4A7C15ull * (seed + 1u);

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

static int put_rand(struct kvt_tm *tm, const char *key, size_t len,
		    uint8_t seed, uint32_t ttl_s)
{
	struct kvt_key k = mkkey("ns", key);
	uint8_t *mem = malloc(len);
	struct kvt_blob b = { mem, len, mem, len, KVT_DTYPE_FP16 };

	assert_non_null(mem);
	rand_fill(mem, len, seed);
	return kvt_tm_put(tm, &k, &b, ttl_s);
}

/* Gets with dispatching: 1 hit with the bytes of seed, 0 miss. */
static int get_async(struct kvt_tm *tm, const char *key, size_t len,
		     uint8_t seed)
{
	struct kvt_key k = mkkey("ns", key);
	struct got g = { 0, 1, NULL };
	int rc = kvt_tm_get(tm, &k, on_get, &g);
	uint8_t *want;

	assert_true(rc == 0 || rc == 1);
	for (int i = 0; i < 5000 && g.calls == 0; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
		kvt_tm_dispatch(tm);
	}
	assert_int_equal(g.calls, 1);
	if (g.status == KVT_ENOTFOUND)
		return 0;
	assert_int_equal(g.status, 0);
	assert_int_equal(kvt_ref_len(g.ref), len);
	want = malloc(len);
	assert_non_null(want);
	rand_fill(want, len, seed);
	assert_memory_equal(kvt_ref_data(g.ref), want, len);
	free(want);
	kvt_ref_release(g.ref);
	return 1;
}

static void test_tiered_flow(void **state)
{
	struct kvt_tm *tm = open_tiered(256 << 10, 256 << 10, 8 << 20);
	struct kvt_tm_stats st;
	char key[16];

	(void)state;
	assert_true(kvt_tm_event_fd(tm) >= 0);
	/* 64 blocks of 64 KiB: 4 MiB through 512 KiB of RAM tiers. */
	for (int i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "b%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
		st = stats(tm);
		assert_true(st.l2.bytes <= st.l2.capacity_bytes);
	}
	drain(tm);
	st = stats(tm);
	assert_true(st.l1.entries > 0);
	assert_true(st.l2.entries > 0);
	assert_true(st.l3.entries > 0);
	assert_true(st.demotions > 0);
	assert_int_equal(st.evictions, 0);
	/*
	 * Everything is readable, wherever it is.  One pass over 4 MiB
	 * through a 256 KiB L1 is a scan: the blocks below L1 are served
	 * without entering it (this test promoted them all before the
	 * admission rule of #13).
	 */
	for (int i = 0; i < 64; i++) {
		snprintf(key, sizeof(key), "b%d", i);
		assert_true(kvt_tm_exists(tm, &(struct kvt_key){
			(const uint8_t *)"ns", 2, (const uint8_t *)key,
			strlen(key) }));
		assert_int_equal(get_async(tm, key, 65536, (uint8_t)i), 1);
	}
	drain(tm);
	st = stats(tm);
	assert_int_equal(st.promotions, 0);
	assert_true(st.promotions_bypassed > 0);
	assert_true(st.l3.hits > 0);
	/* A block read again soon enters L1. */
	assert_int_equal(get_async(tm, "b5", 65536, 5), 1);
	assert_int_equal(get_async(tm, "b5", 65536, 5), 1);
	drain(tm);
	st = stats(tm);
	assert_int_equal(st.promotions, 1);
	assert_int_equal(st.promotions_admitted, 1);

	/* A put replaces the value in every tier; a del removes it from all. */
	assert_int_equal(put_rand(tm, "b0", 65536, 0xEE, 0), 0);
	assert_int_equal(get_async(tm, "b0", 65536, 0xEE), 1);
	struct kvt_key k1 = mkkey("ns", "b1");
	assert_int_equal(kvt_tm_del(tm, &k1), 0);
	drain(tm);
	assert_int_equal(get_async(tm, "b1", 65536, 1), 0);
	assert_int_equal(kvt_tm_exists(tm, &k1), 0);
	assert_int_equal(kvt_tm_del(tm, &k1), KVT_ENOTFOUND);

	/* Graceful spill, then a new manager serves everything from L3. */
	assert_true(kvt_tm_spill(tm, 10000) > 0);
	st = stats(tm);
	assert_int_equal(st.l1.entries, 0);
	assert_int_equal(st.l2.entries, 0);
	kvt_tm_close(tm);
	tm = open_tiered(256 << 10, 256 << 10, 8 << 20);
	assert_int_equal(get_async(tm, "b0", 65536, 0xEE), 1);
	assert_int_equal(get_async(tm, "b1", 65536, 1), 0);
	for (int i = 2; i < 64; i++) {
		snprintf(key, sizeof(key), "b%d", i);
		assert_int_equal(get_async(tm, key, 65536, (uint8_t)i), 1);
	}
	drain(tm);
	kvt_tm_close(tm);
	rm_tdir();
}

/* TTL holds in every tier: an expired block is a miss wherever it lives. */
static void test_tiered_ttl(void **state)
{
	struct kvt_tm *tm = open_tiered(128 << 10, 128 << 10, 8 << 20);
	char key[16];

	(void)state;
	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "t%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 10), 0);
	}
	drain(tm);
	assert_true(stats(tm).l3.entries > 0);
	fake_now += 11;
	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "t%d", i);
		assert_int_equal(get_async(tm, key, 65536, (uint8_t)i), 0);
	}
	drain(tm);
	kvt_tm_close(tm);
	rm_tdir();
}

/* L3 admission: a write budget turns blocks away and counts them. */
static void test_l3_admission(void **state)
{
	struct kvt_tm_config cfg = {
		.l1_capacity = 128 << 10,
		.l2_capacity = 0,
		.l3_capacity = 8 << 20,
		.l3_region_size = 1 << 20,
		.l3_no_sync = 1,
		.l3_write_rate = 100 << 10, /* 100 KiB/s */
		.now_s = fake_clock,
	};
	struct kvt_tm *tm = NULL;
	char key[16];

	(void)state;
	snprintf(tdir, sizeof(tdir), "/tmp/kvt-test-tm-XXXXXX");
	assert_non_null(mkdtemp(tdir));
	cfg.data_dir = tdir;
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);
	for (int i = 0; i < 32; i++) {
		snprintf(key, sizeof(key), "a%d", i);
		assert_int_equal(put_rand(tm, key, 65536, 1, 0), 0);
	}
	drain(tm);
	struct kvt_tm_stats st = stats(tm);
	assert_true(st.l3_admission_rejected > 0);
	assert_true(st.l3.entries > 0);
	assert_true(st.l3.entries <= 3);
	kvt_tm_close(tm);
	rm_tdir();
}

/*
 * I/O faults: a full disk and a failed fsync make L3 writes fail with
 * counters; the blocks are dropped cleanly, everything in RAM keeps being
 * served, and L3 works again once the disk does.
 */
static void test_l3_faults(void **state)
{
	struct kvt_l3_faults faults = { 0 };
	struct kvt_tm_config cfg = {
		.l1_capacity = 256 << 10,
		.l2_capacity = 0,
		.l3_capacity = 8 << 20,
		.l3_region_size = 1 << 20,
		.l3_no_sync = 0,
		.l3_faults = &faults,
		.now_s = fake_clock,
	};
	struct kvt_tm *tm = NULL;
	struct kvt_tm_stats st;
	char key[16];

	(void)state;
	snprintf(tdir, sizeof(tdir), "/tmp/kvt-test-tm-XXXXXX");
	assert_non_null(mkdtemp(tdir));
	cfg.data_dir = tdir;
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);

	/* Disk full: every region write fails with ENOSPC. */
	for (int i = 0; i < 12; i++) {
		faults.write_fail_at = 1;
		faults.write_errno = ENOSPC;
		snprintf(key, sizeof(key), "f%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
		drain(tm);
	}
	st = stats(tm);
	assert_true(st.l3_write_errors > 0);
	assert_int_equal(st.l3.entries, 0);
	assert_true(st.evictions > 0);
	/* RAM still serves the newest blocks, byte-identical. */
	assert_int_equal(get_async(tm, "f11", 65536, 11), 1);
	assert_int_equal(get_async(tm, "f10", 65536, 10), 1);
	/* A dropped block is a miss, never wrong bytes. */
	assert_int_equal(get_async(tm, "f0", 65536, 0), 0);

	/* fsync fails once: that batch is not indexed either. */
	uint64_t errs = st.l3_write_errors;
	faults.write_fail_at = 0;
	faults.sync_errno = EIO;
	assert_int_equal(put_rand(tm, "s0", 65536, 50, 0), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "s%d", i + 1);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)(51 + i), 0),
				 0);
	}
	drain(tm);
	st = stats(tm);
	assert_true(st.l3_write_errors > errs);

	/* Space is back: blocks flow to L3 and come back intact. */
	for (int i = 0; i < 12; i++) {
		snprintf(key, sizeof(key), "g%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)(100 + i),
					  0), 0);
	}
	drain(tm);
	st = stats(tm);
	assert_true(st.l3.entries > 0);
	for (int i = 0; i < 12; i++) {
		snprintf(key, sizeof(key), "g%d", i);
		assert_int_equal(get_async(tm, key, 65536, (uint8_t)(100 + i)),
				 1);
	}
	drain(tm);
	assert_int_equal(kvt_tm_check(tm, NULL), 0);
	kvt_tm_close(tm);
	rm_tdir();
}

static void on_drop(void *arg, int status, uint64_t count)
{
	int64_t *out = arg;

	*out = status ? status : (int64_t)count;
}

/* DROP removes a namespace from every tier, and nothing else. */
static void test_drop_ns(void **state)
{
	struct kvt_tm *tm = open_tiered(256 << 10, 256 << 10, 8 << 20);
	int64_t got = -1;
	char key[16];

	(void)state;
	for (int i = 0; i < 24; i++) {
		struct kvt_key k;
		uint8_t *mem;
		snprintf(key, sizeof(key), "k%d", i);
		for (int ns = 0; ns < 2; ns++) {
			k = mkkey(ns ? "b" : "a", key);
			mem = malloc(65536);
			assert_non_null(mem);
			rand_fill(mem, 65536, (uint8_t)(i + 100 * ns));
			struct kvt_blob b = { mem, 65536, mem, 65536, 0 };
			assert_int_equal(kvt_tm_put(tm, &k, &b, 0), 0);
		}
	}
	drain(tm);
	struct kvt_tm_stats st = stats(tm);
	assert_true(st.l1.entries > 0 && st.l2.entries > 0 &&
		    st.l3.entries > 0);
	uint64_t before = st.l1.entries + st.l2.entries + st.l3.entries;
	/* Per-namespace totals count every block once, in any tier. */
	struct kvt_tm_ns *nsv = NULL;
	size_t nns = 0;
	assert_int_equal(kvt_tm_ns_stats(tm, 100, &nsv, &nns, NULL), 0);
	assert_int_equal(nns, 2);
	for (size_t i = 0; i < nns; i++) {
		assert_int_equal(nsv[i].ns_len, 1);
		assert_int_equal(nsv[i].entries, 24);
		assert_int_equal(nsv[i].bytes, 24 * 65536);
	}
	free(nsv);
	int rc = kvt_tm_drop_ns(tm, (const uint8_t *)"a", 1, on_drop, &got);
	assert_true(rc == 0 || rc == 1);
	for (int i = 0; i < 5000 && got < 0; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
		kvt_tm_dispatch(tm);
	}
	assert_true(got > 0);
	drain(tm);
	for (int i = 0; i < 24; i++) {
		struct kvt_key k;
		snprintf(key, sizeof(key), "k%d", i);
		k = mkkey("a", key);
		assert_int_equal(kvt_tm_exists(tm, &k), 0);
		k = mkkey("b", key);
		assert_int_equal(kvt_tm_exists(tm, &k), 1);
		/* get_async reads namespace "ns"; read "b" by hand. */
		struct got g = { 0, 1, NULL };
		kvt_tm_get(tm, &k, on_get, &g);
		for (int t = 0; t < 5000 && g.calls == 0; t++) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			kvt_tm_dispatch(tm);
		}
		assert_int_equal(g.status, 0);
		uint8_t want[65536];
		rand_fill(want, sizeof(want), (uint8_t)(i + 100));
		assert_memory_equal(kvt_ref_data(g.ref), want, sizeof(want));
		kvt_ref_release(g.ref);
	}
	drain(tm);
	st = stats(tm);
	/* Every copy of "a" is gone; the "b" copies are all still held. */
	assert_true(st.l1.entries + st.l2.entries + st.l3.entries < before);
	/* Dropping again finds nothing. */
	got = -1;
	kvt_tm_drop_ns(tm, (const uint8_t *)"a", 1, on_drop, &got);
	for (int i = 0; i < 5000 && got < 0; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
		kvt_tm_dispatch(tm);
	}
	assert_int_equal(got, 0);
	kvt_tm_close(tm);
	/* L3's index committed the drop: a restart does not bring "a" back. */
	tm = open_tiered(256 << 10, 256 << 10, 8 << 20);
	struct kvt_key k0 = mkkey("a", "k0");
	assert_int_equal(kvt_tm_exists(tm, &k0), 0);
	kvt_tm_close(tm);
	rm_tdir();
}

/* HOT: exact ranking by hits across tiers; history follows a block. */
static void test_hot(void **state)
{
	struct kvt_tm *tm = open_tiered(256 << 10, 256 << 10, 8 << 20);
	struct kvt_tm_hot *v = NULL;
	size_t n = 0;
	char key[16];

	(void)state;
	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "h%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
	}
	drain(tm);
	/* h3 is read 4 times, h0 (demoted to a lower tier by now) twice. */
	for (int r = 0; r < 4; r++)
		assert_int_equal(get_async(tm, "h3", 65536, 3), 1);
	for (int r = 0; r < 2; r++)
		assert_int_equal(get_async(tm, "h0", 65536, 0), 1);
	drain(tm);
	assert_int_equal(kvt_tm_hot(tm, 3, &v, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].key_len, 2);
	assert_memory_equal(v[0].name + v[0].ns_len, "h3", 2);
	assert_true(v[0].hits >= 4);
	assert_memory_equal(v[1].name + v[1].ns_len, "h0", 2);
	assert_true(v[1].hits >= 2);
	assert_int_equal(v[0].size, 65536);
	assert_true(v[0].tier >= 1 && v[0].tier <= 3);
	assert_true(v[2].hits <= v[1].hits);
	kvt_tm_hot_free(v, n);
	/* Asking for more than exists lists every block exactly once. */
	assert_int_equal(kvt_tm_hot(tm, 1000, &v, &n), 0);
	assert_int_equal(n, 16);
	kvt_tm_hot_free(v, n);
	kvt_tm_close(tm);
	rm_tdir();
}

/* PREFETCH: a block below L1 comes up in the background; the next get is
 * then an L1 hit, counted as a prefetch hit. */
static void test_prefetch(void **state)
{
	struct kvt_tm *tm = open_tiered(256 << 10, 256 << 10, 8 << 20);
	struct kvt_key k0 = mkkey("ns", "p0"), k15 = mkkey("ns", "p15");
	struct kvt_key none = mkkey("ns", "none");
	char key[16];

	(void)state;
	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "p%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
	}
	drain(tm);
	/* p0 went down long ago; p15 is in L1; "none" is nowhere. */
	assert_int_equal(kvt_tm_prefetch(tm, &k0), 1);
	assert_int_equal(kvt_tm_prefetch(tm, &k0), 0); /* already moving */
	assert_int_equal(kvt_tm_prefetch(tm, &k15), 0);
	assert_int_equal(kvt_tm_prefetch(tm, &none), 0);
	drain(tm);
	struct kvt_tm_stats st = stats(tm);
	assert_int_equal(st.prefetched, 1);
	assert_int_equal(st.prefetch_hits, 0);
	uint64_t misses = st.misses, gets = st.gets;
	/* Now a synchronous L1 hit (kvt_tm_get returns 0), with the bytes. */
	struct got g = { 0, 1, NULL };
	assert_int_equal(kvt_tm_get(tm, &k0, on_get, &g), 0);
	assert_int_equal(g.status, 0);
	uint8_t want[65536];
	rand_fill(want, sizeof(want), 0);
	assert_memory_equal(kvt_ref_data(g.ref), want, sizeof(want));
	kvt_ref_release(g.ref);
	st = stats(tm);
	assert_int_equal(st.prefetch_hits, 1);
	assert_int_equal(st.gets, gets + 1);
	assert_int_equal(st.misses, misses); /* prefetches are not gets */
	/* Counted once: a second get is an ordinary hit. */
	assert_int_equal(get_async(tm, "p0", 65536, 0), 1);
	assert_int_equal(stats(tm).prefetch_hits, 1);
	kvt_tm_close(tm);
	rm_tdir();
}

/* Where is k?  1 L1, 2 L2, 3 L3, 0 nowhere (from the hot report). */
static int tier_of(struct kvt_tm *tm, const char *key)
{
	struct kvt_tm_hot *v = NULL;
	size_t n = 0;
	int tier = 0;

	assert_int_equal(kvt_tm_hot(tm, 1000, &v, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (v[i].key_len == strlen(key) &&
		    memcmp(v[i].name + v[i].ns_len, key, v[i].key_len) == 0)
			tier = v[i].tier;
	kvt_tm_hot_free(v, n);
	return tier;
}

/* Pins: pinned blocks stay in L1 under pressure; unpin lets them go. */
static void test_pins(void **state)
{
	struct kvt_tm *tm = open_tiered(512 << 10, 256 << 10, 8 << 20);
	struct kvt_key k0 = mkkey("ns", "q0"), k1 = mkkey("ns", "q1");
	struct kvt_key kx = mkkey("ns", "nowhere");
	char key[16];

	(void)state;
	for (int i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "q%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
	}
	assert_int_equal(kvt_tm_pin(tm, &k0), 0);
	assert_int_equal(kvt_tm_pin(tm, &kx), KVT_ENOTFOUND);
	/* 4 MiB of other blocks through a 512 KiB L1. */
	for (int i = 2; i < 66; i++) {
		snprintf(key, sizeof(key), "q%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
	}
	drain(tm);
	assert_int_equal(tier_of(tm, "q0"), 1);
	assert_true(tier_of(tm, "q1") > 1);
	struct kvt_tm_stats st = stats(tm);
	assert_int_equal(st.pinned_keys, 1);
	assert_true(st.pinned_bytes >= 65536);
	/* A value replacing a pinned key stays pinned. */
	assert_int_equal(put_rand(tm, "q0", 65536, 99, 0), 0);
	for (int i = 66; i < 80; i++) {
		snprintf(key, sizeof(key), "q%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
	}
	drain(tm);
	assert_int_equal(tier_of(tm, "q0"), 1);
	assert_int_equal(get_async(tm, "q0", 65536, 99), 1);
	/* A key pinned from below is brought up and pinned on arrival. */
	assert_int_equal(kvt_tm_pin(tm, &k1), 1);
	drain(tm);
	assert_int_equal(tier_of(tm, "q1"), 1);
	/* The cap: half of L1 (256 KiB) holds 3 more 64 KiB blocks. */
	int rc = 0;
	for (int i = 0; i < 10 && rc != KVT_ETOOBIG; i++) {
		struct kvt_key k;
		snprintf(key, sizeof(key), "fresh%d", i);
		/* Just put, so surely in L1: the cap is checked at once. */
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
		k = mkkey("ns", key);
		rc = kvt_tm_pin(tm, &k);
		assert_true(rc == 0 || rc == KVT_ETOOBIG);
	}
	assert_int_equal(rc, KVT_ETOOBIG);
	assert_true(stats(tm).pins_rejected >= 1);
	assert_true(stats(tm).pinned_bytes <= 256u << 10);
	/* Unpinned, q0 is an ordinary block again and ages out. */
	assert_int_equal(kvt_tm_unpin(tm, &k0), 0);
	assert_int_equal(kvt_tm_unpin(tm, &k0), KVT_ENOTFOUND);
	for (int i = 80; i < 100; i++) {
		snprintf(key, sizeof(key), "q%d", i);
		assert_int_equal(put_rand(tm, key, 65536, (uint8_t)i, 0), 0);
	}
	drain(tm);
	assert_true(tier_of(tm, "q0") != 1);
	assert_int_equal(stats(tm).l1.bytes <= stats(tm).l1.capacity_bytes, 1);
	kvt_tm_close(tm);
	rm_tdir();
}

/* Misses by cause, and the estimate for RAM twice as big. */
static void test_miss_causes(void **state)
{
	/* RAM only, room for 4 blocks of 64 KiB. */
	struct kvt_tm *tm = open_tm(4 * kvt_lru_cost(65536 + 8, 2, 2));
	struct kvt_tm_stats st;
	char key[8];

	(void)state;
	assert_int_equal(get_check(tm, "ns", "never", 10, 1), 0);
	for (int i = 0; i < 6; i++) {
		snprintf(key, sizeof(key), "e%d", i);
		assert_int_equal(put(tm, "ns", key, 65536, (uint8_t)i, 0), 0);
	}
	/* e0 and e1 were evicted; a RAM of twice the size would hold them. */
	assert_int_equal(get_check(tm, "ns", "e0", 65536, 0), 0);
	assert_int_equal(put(tm, "ns", "tt", 10, 7, 10), 0);
	fake_now += 11;
	assert_int_equal(get_check(tm, "ns", "tt", 10, 7), 0);
	st = stats(tm);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.misses_never_seen, 1);
	assert_int_equal(st.misses_evicted, 1);
	assert_int_equal(st.misses_expired, 1);
	assert_int_equal(st.misses_corrupt, 0);
	assert_int_equal(st.ghost_hits_2x, 1);
	/* A block evicted long ago (more than a RAM's worth since) would
	 * not have been kept by twice the RAM either. */
	for (int i = 6; i < 20; i++) {
		snprintf(key, sizeof(key), "e%d", i);
		assert_int_equal(put(tm, "ns", key, 65536, (uint8_t)i, 0), 0);
	}
	assert_int_equal(get_check(tm, "ns", "e1", 65536, 1), 0);
	st = stats(tm);
	assert_int_equal(st.misses_evicted, 2);
	assert_int_equal(st.ghost_hits_2x, 1);
	kvt_tm_close(tm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_config),
		cmocka_unit_test(test_put_get_del_exists_stats),
		cmocka_unit_test(test_get_callback),
		cmocka_unit_test(test_rejected_too_big),
		cmocka_unit_test(test_evictions_counted),
		cmocka_unit_test(test_ttl_fake_clock),
		cmocka_unit_test(test_expired_victim_not_an_eviction),
		cmocka_unit_test(test_invalid_args),
		cmocka_unit_test(test_tiered_flow),
		cmocka_unit_test(test_tiered_ttl),
		cmocka_unit_test(test_l3_admission),
		cmocka_unit_test(test_l3_faults),
		cmocka_unit_test(test_drop_ns),
		cmocka_unit_test(test_hot),
		cmocka_unit_test(test_prefetch),
		cmocka_unit_test(test_pins),
		cmocka_unit_test(test_miss_causes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
