/*
 * test_tm.c - unit tests for the tier manager (tiers/kvt_tm.c), driven only
 * through kvt_tm.h as the daemon uses it, with a fake clock.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvt_l1.h"
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
		.l2_capacity = 4u << 20,
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
	cfg.data_dir = "/nonexistent-is-fine-until-l3-exists";
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);
	/* Default clock (CLOCK_MONOTONIC) is usable for TTLs. */
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
	assert_int_equal(st.l1.bytes, kvt_l1_cost(1008, 7, 6) * 2 - 500);
	assert_int_equal(st.l1.capacity_bytes, 1 << 20);
	/* L2 is configured but not built yet: capacity only. */
	assert_int_equal(st.l2.capacity_bytes, 4u << 20);
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
	uint64_t cap = kvt_l1_cost(1000 + 8, 1, 1);
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
	struct kvt_tm *tm = open_tm(3 * kvt_l1_cost(1000 + 8, 1, 2));
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
	struct kvt_tm *tm = open_tm(2 * kvt_l1_cost(1000 + 8, 1, 1));

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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
