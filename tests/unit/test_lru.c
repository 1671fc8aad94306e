/*
 * test_lru.c - unit tests for the RAM tiers' LRU (tiers/kvt_lru.c).
 *
 * kvt_lru.c is compiled into this file, with malloc and calloc routed through
 * a counter that can make the Nth allocation fail, so that the -ENOMEM paths
 * can be shown to leave the store unchanged.  Because every kvt_lru_* symbol
 * is then defined here, the linker never pulls kvt_lru.o out of the library.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"

/* Allocations left before one fails; negative = never fail. */
static long alloc_fail_after = -1;

static int alloc_should_fail(void)
{
	if (alloc_fail_after < 0)
		return 0;
	if (alloc_fail_after == 0) {
		alloc_fail_after = -1; /* fail once, then behave */
		return 1;
	}
	alloc_fail_after--;
	return 0;
}

static void *fail_malloc(size_t n)
{
	return alloc_should_fail() ? NULL : malloc(n);
}

static void *fail_calloc(size_t n, size_t sz)
{
	return alloc_should_fail() ? NULL : calloc(n, sz);
}

#define malloc(n) fail_malloc(n)
#define calloc(n, sz) fail_calloc(n, sz)
#include "kvt_lru.c"
#undef malloc
#undef calloc

/* ---- helpers ------------------------------------------------------------ */

/*
 * A blob shaped like what the daemon passes: a frame body whose value starts
 * after a small header, so data != mem and mem_size > len.
 */
#define BLOB_HDR 16

static struct kvt_blob make_blob(size_t len, uint8_t fill)
{
	struct kvt_blob b;
	uint8_t *mem = malloc(len + BLOB_HDR);

	assert_non_null(mem);
	memset(mem, 0xee, BLOB_HDR);
	memset(mem + BLOB_HDR, fill, len);
	b.mem = mem;
	b.mem_size = len + BLOB_HDR;
	b.data = mem + BLOB_HDR;
	b.len = len;
	b.dtype = KVT_DTYPE_BF16;
	return b;
}

static struct kvt_key mkkey(const char *ns, const char *key)
{
	struct kvt_key k;

	k.ns = (const uint8_t *)ns;
	k.ns_len = strlen(ns);
	k.key = (const uint8_t *)key;
	k.key_len = strlen(key);
	return k;
}

/* Accounted size of a make_blob(len) value under (ns, key). */
static uint64_t cost_of(const char *ns, const char *key, size_t len)
{
	return kvt_lru_cost(len + BLOB_HDR, strlen(ns), strlen(key));
}

static int put(struct kvt_lru *l1, const char *ns, const char *key, size_t len,
	       uint8_t fill, uint64_t expires_s, kvt_lru_victim_fn fn,
	       void *arg)
{
	struct kvt_key k = mkkey(ns, key);
	struct kvt_blob b = make_blob(len, fill);
	int rc = kvt_lru_put(l1, &k, &b, expires_s, fn, arg);

	/* Ownership always passes. */
	assert_null(b.mem);
	return rc;
}

/* Returns 1 if (ns, key) is a hit whose every byte is fill, 0 on a miss. */
static int get_check(struct kvt_lru *l1, const char *ns, const char *key,
		     uint64_t now_s, size_t len, uint8_t fill)
{
	struct kvt_key k = mkkey(ns, key);
	struct kvt_ref *r;
	size_t i;
	int rc = kvt_lru_get(l1, &k, now_s, &r);

	if (rc == KVT_ENOTFOUND) {
		assert_null(r);
		return 0;
	}
	assert_int_equal(rc, 0);
	assert_int_equal(kvt_ref_len(r), len);
	for (i = 0; i < len; i++)
		assert_int_equal(kvt_ref_data(r)[i], fill);
	kvt_ref_release(r);
	return 1;
}

static struct kvt_lru_stats stats(const struct kvt_lru *l1)
{
	struct kvt_lru_stats st;

	kvt_lru_stats(l1, &st);
	assert_true(st.bytes <= st.capacity);
	return st;
}

/* Records victims' keys (as "ns/key") in order, then releases them. */
struct victims {
	int n;
	char names[64][64];
};

static void record_victim(void *arg, struct kvt_ref *v)
{
	struct victims *vs = arg;
	struct kvt_key k;

	kvt_lru_ref_key(v, &k);
	assert_true(vs->n < 64);
	snprintf(vs->names[vs->n++], sizeof(vs->names[0]), "%.*s/%.*s",
		 (int)k.ns_len, (const char *)k.ns, (int)k.key_len,
		 (const char *)k.key);
	kvt_ref_release(v);
}

/* ---- tests -------------------------------------------------------------- */

static void test_put_get_basic(void **state)
{
	struct kvt_lru *l1;
	struct kvt_lru_stats st;
	struct kvt_key k = mkkey("ns", "key");
	struct kvt_ref *r;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	assert_int_equal(put(l1, "ns", "key", 100, 0x5a, 0, NULL, NULL), 0);
	st = stats(l1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, 100 + BLOB_HDR + 2 + 3 +
			 kvt_lru_entry_overhead());
	assert_int_equal(st.raw_bytes, 100);

	assert_int_equal(kvt_lru_get(l1, &k, 0, &r), 0);
	assert_int_equal(kvt_ref_len(r), 100);
	assert_int_equal(kvt_ref_dtype(r), KVT_DTYPE_BF16);
	assert_int_equal(kvt_ref_data(r)[0], 0x5a);
	assert_int_equal(kvt_ref_data(r)[99], 0x5a);
	assert_int_equal(kvt_lru_ref_expires(r), 0);
	assert_int_equal(kvt_lru_ref_cost(r), st.bytes);
	kvt_ref_release(r);
	assert_int_equal(stats(l1).hits, 1);

	assert_int_equal(get_check(l1, "ns", "nope", 0, 0, 0), 0);
	assert_int_equal(stats(l1).misses, 1);
	assert_int_equal(kvt_lru_exists(l1, &k, 0), 1);
	kvt_lru_close(l1);
}

static void test_lru_get_refreshes(void **state)
{
	struct kvt_lru *l1;
	struct victims vs = { 0 };

	(void)state;
	/* Room for exactly three 1000-byte values. */
	assert_int_equal(kvt_lru_open(&l1, 3 * cost_of("n", "a", 1000)), 0);
	assert_int_equal(put(l1, "n", "a", 1000, 1, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "n", "b", 1000, 2, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "n", "c", 1000, 3, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 0);
	/* a was the LRU; the get makes b the LRU instead. */
	assert_true(get_check(l1, "n", "a", 0, 1000, 1));
	assert_int_equal(put(l1, "n", "d", 1000, 4, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 1);
	assert_string_equal(vs.names[0], "n/b");
	assert_true(get_check(l1, "n", "a", 0, 1000, 1));
	assert_false(get_check(l1, "n", "b", 0, 1000, 2));
	assert_true(get_check(l1, "n", "c", 0, 1000, 3));
	assert_true(get_check(l1, "n", "d", 0, 1000, 4));
	/* exists must not refresh: a is LRU now and goes next. */
	{
		struct kvt_key ka = mkkey("n", "a");

		assert_true(get_check(l1, "n", "c", 0, 1000, 3));
		assert_true(get_check(l1, "n", "d", 0, 1000, 4));
		assert_int_equal(kvt_lru_exists(l1, &ka, 0), 1);
	}
	assert_int_equal(put(l1, "n", "e", 1000, 5, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 2);
	assert_string_equal(vs.names[1], "n/a");
	kvt_lru_close(l1);
}

static void test_eviction_order(void **state)
{
	struct kvt_lru *l1;
	struct victims vs = { 0 };
	struct kvt_ref *v;
	struct kvt_key k;
	const char *names[] = { "k0", "k1", "k2", "k3", "k4", "k5" };
	int i;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 3 * cost_of("n", "k0", 500)), 0);
	for (i = 0; i < 6; i++)
		assert_int_equal(put(l1, "n", names[i], 500, (uint8_t)i, 0,
				     record_victim, &vs), 0);
	assert_int_equal(vs.n, 3);
	assert_string_equal(vs.names[0], "n/k0");
	assert_string_equal(vs.names[1], "n/k1");
	assert_string_equal(vs.names[2], "n/k2");

	/* One big value evicts several at once, still oldest first. */
	assert_int_equal(put(l1, "n", "big", 1200, 9, 0, record_victim, &vs),
			 0);
	assert_int_equal(vs.n, 6);
	assert_string_equal(vs.names[3], "n/k3");
	assert_string_equal(vs.names[4], "n/k4");
	assert_string_equal(vs.names[5], "n/k5");
	assert_int_equal(stats(l1).entries, 1);

	/* evict_one hands over the table's reference, LRU first. */
	assert_int_equal(put(l1, "n", "k0", 10, 7, 0, NULL, NULL), 0);
	assert_int_equal(stats(l1).entries, 2);
	assert_int_equal(kvt_lru_evict_one(l1, &v), 0);
	kvt_lru_ref_key(v, &k);
	assert_int_equal(k.key_len, 3);
	assert_memory_equal(k.key, "big", 3);
	assert_memory_equal(k.ns, "n", 1);
	assert_int_equal(kvt_ref_data(v)[1199], 9);
	assert_int_equal(stats(l1).entries, 1);
	assert_false(get_check(l1, "n", "big", 0, 0, 0));
	kvt_ref_release(v);
	assert_int_equal(kvt_lru_evict_one(l1, &v), 0);
	kvt_ref_release(v);
	assert_int_equal(kvt_lru_evict_one(l1, &v), KVT_ENOTFOUND);
	assert_null(v);
	assert_int_equal(stats(l1).bytes, 0);
	kvt_lru_close(l1);
}

static void test_replace_keeps_old_ref(void **state)
{
	struct kvt_lru *l1;
	struct kvt_key k = mkkey("ns", "k");
	struct kvt_ref *old, *cur;
	struct victims vs = { 0 };

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	assert_int_equal(put(l1, "ns", "k", 4000, 0x11, 0, NULL, NULL), 0);
	assert_int_equal(kvt_lru_get(l1, &k, 0, &old), 0);

	assert_int_equal(put(l1, "ns", "k", 1000, 0x22, 0, record_victim, &vs),
			 0);
	/* The stale value is dropped, not reported as a victim. */
	assert_int_equal(vs.n, 0);
	assert_int_equal(stats(l1).entries, 1);
	assert_int_equal(stats(l1).bytes, cost_of("ns", "k", 1000));
	assert_int_equal(stats(l1).raw_bytes, 1000);

	/* The old reference still reads the old bytes, all of them. */
	assert_int_equal(kvt_ref_len(old), 4000);
	assert_int_equal(kvt_ref_data(old)[0], 0x11);
	assert_int_equal(kvt_ref_data(old)[3999], 0x11);

	assert_int_equal(kvt_lru_get(l1, &k, 0, &cur), 0);
	assert_ptr_not_equal(cur, old);
	assert_int_equal(kvt_ref_len(cur), 1000);
	assert_int_equal(kvt_ref_data(cur)[999], 0x22);
	kvt_ref_release(cur);

	/* Replacing a value in a full L1: the old one's room is reused. */
	kvt_lru_close(l1);
	assert_int_equal(kvt_ref_data(old)[2000], 0x11);
	kvt_ref_release(old);

	assert_int_equal(kvt_lru_open(&l1, 2 * cost_of("ns", "k", 1000)), 0);
	assert_int_equal(put(l1, "ns", "a", 1000, 1, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "ns", "k", 1000, 2, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "ns", "a", 1000, 3, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 0);
	assert_true(get_check(l1, "ns", "a", 0, 1000, 3));
	assert_true(get_check(l1, "ns", "k", 0, 1000, 2));
	kvt_lru_close(l1);
}

static void test_oversized_refused(void **state)
{
	struct kvt_lru *l1;
	uint64_t cap = cost_of("n", "k", 1000);
	struct kvt_lru_stats st;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, cap), 0);
	assert_int_equal(put(l1, "n", "k", 1000, 1, 0, NULL, NULL), 0);
	/* One byte more than the capacity, counting the overhead. */
	assert_int_equal(put(l1, "n", "k", 1001, 2, 0, NULL, NULL),
			 KVT_ENOSPACE);
	assert_int_equal(put(l1, "n", "kk", 1000, 2, 0, NULL, NULL),
			 KVT_ENOSPACE);
	/* Refused: the previous value is still there, unchanged. */
	st = stats(l1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, cap);
	assert_true(get_check(l1, "n", "k", 0, 1000, 1));
	/* Exactly the capacity fits (evicting everything else). */
	assert_int_equal(put(l1, "n", "j", 1000, 3, 0, NULL, NULL), 0);
	assert_int_equal(stats(l1).bytes, cap);
	assert_false(get_check(l1, "n", "k", 0, 0, 0));
	assert_true(get_check(l1, "n", "j", 0, 1000, 3));
	kvt_lru_close(l1);

	/* A capacity smaller than one entry's overhead refuses everything. */
	assert_int_equal(kvt_lru_open(&l1, 1), 0);
	assert_int_equal(put(l1, "", "", 0, 0, 0, NULL, NULL), KVT_ENOSPACE);
	kvt_lru_close(l1);

	/* Sizes near SIZE_MAX saturate rather than wrap into "fits". */
	assert_int_equal(kvt_lru_cost(SIZE_MAX, 1, 1), UINT64_MAX);
}

static void test_namespaces_isolate(void **state)
{
	struct kvt_lru *l1;
	struct kvt_key k;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	assert_int_equal(put(l1, "a", "k", 10, 1, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "b", "k", 20, 2, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "", "k", 30, 3, 0, NULL, NULL), 0);
	/* Same concatenation, different split. */
	assert_int_equal(put(l1, "ab", "c", 40, 4, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "a", "bc", 50, 5, 0, NULL, NULL), 0);
	assert_int_equal(stats(l1).entries, 5);
	assert_true(get_check(l1, "a", "k", 0, 10, 1));
	assert_true(get_check(l1, "b", "k", 0, 20, 2));
	assert_true(get_check(l1, "", "k", 0, 30, 3));
	assert_true(get_check(l1, "ab", "c", 0, 40, 4));
	assert_true(get_check(l1, "a", "bc", 0, 50, 5));
	assert_false(get_check(l1, "c", "k", 0, 0, 0));

	k = mkkey("a", "k");
	assert_int_equal(kvt_lru_del(l1, &k, 0), 0);
	assert_false(get_check(l1, "a", "k", 0, 0, 0));
	assert_true(get_check(l1, "b", "k", 0, 20, 2));

	/* NULL pointers with zero lengths are a valid empty ns / key. */
	k.ns = NULL;
	k.ns_len = 0;
	k.key = (const uint8_t *)"k";
	k.key_len = 1;
	assert_int_equal(kvt_lru_exists(l1, &k, 0), 1);
	kvt_lru_close(l1);
}

static void test_del(void **state)
{
	struct kvt_lru *l1;
	struct kvt_key k = mkkey("n", "k");
	struct kvt_ref *r;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	assert_int_equal(kvt_lru_del(l1, &k, 0), KVT_ENOTFOUND);
	assert_int_equal(put(l1, "n", "k", 300, 7, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "n", "other", 30, 8, 0, NULL, NULL), 0);
	assert_int_equal(kvt_lru_get(l1, &k, 0, &r), 0);
	assert_int_equal(kvt_lru_del(l1, &k, 0), 0);
	assert_int_equal(kvt_lru_del(l1, &k, 0), KVT_ENOTFOUND);
	assert_int_equal(kvt_lru_exists(l1, &k, 0), 0);
	assert_int_equal(stats(l1).entries, 1);
	assert_int_equal(stats(l1).bytes, cost_of("n", "other", 30));
	assert_int_equal(stats(l1).raw_bytes, 30);
	/* A reader's reference outlives the delete. */
	assert_int_equal(kvt_ref_data(r)[299], 7);
	kvt_ref_release(r);
	/* The LRU list is intact after unlinking from its head. */
	assert_true(get_check(l1, "n", "other", 0, 30, 8));
	k = mkkey("n", "other");
	assert_int_equal(kvt_lru_del(l1, &k, 0), 0);
	assert_int_equal(stats(l1).bytes, 0);
	assert_int_equal(kvt_lru_evict_one(l1, &r), KVT_ENOTFOUND);
	kvt_lru_close(l1);
}

static void test_ttl_fake_clock(void **state)
{
	struct kvt_lru *l1;
	struct kvt_key k = mkkey("n", "k");
	struct kvt_ref *r;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	assert_int_equal(put(l1, "n", "k", 10, 1, 105, NULL, NULL), 0);
	assert_int_equal(put(l1, "n", "forever", 10, 2, 0, NULL, NULL), 0);
	assert_int_equal(kvt_lru_exists(l1, &k, 104), 1);
	assert_true(get_check(l1, "n", "k", 104, 10, 1));
	/* A reference taken before expiry stays readable after it. */
	assert_int_equal(kvt_lru_get(l1, &k, 104, &r), 0);
	assert_int_equal(kvt_lru_ref_expires(r), 105);

	/* At the expiry second it is gone, and removed on sight. */
	assert_false(get_check(l1, "n", "k", 105, 0, 0));
	assert_int_equal(stats(l1).entries, 1);
	assert_int_equal(stats(l1).expired, 1);
	assert_int_equal(stats(l1).bytes, cost_of("n", "forever", 10));
	assert_int_equal(kvt_ref_data(r)[9], 1);
	kvt_ref_release(r);
	assert_true(get_check(l1, "n", "forever", 1000000, 10, 2));

	/* exists and del remove expired entries too. */
	assert_int_equal(put(l1, "n", "k", 10, 3, 200, NULL, NULL), 0);
	assert_int_equal(kvt_lru_exists(l1, &k, 300), 0);
	assert_int_equal(stats(l1).entries, 1);
	assert_int_equal(put(l1, "n", "k", 10, 3, 200, NULL, NULL), 0);
	assert_int_equal(kvt_lru_del(l1, &k, 200), KVT_ENOTFOUND);
	assert_int_equal(stats(l1).entries, 1);
	assert_int_equal(stats(l1).expired, 3);

	/* Replacing resets the expiry. */
	assert_int_equal(put(l1, "n", "k", 10, 4, 200, NULL, NULL), 0);
	assert_int_equal(put(l1, "n", "k", 10, 5, 0, NULL, NULL), 0);
	assert_true(get_check(l1, "n", "k", 500, 10, 5));
	kvt_lru_close(l1);
}

static void test_growth(void **state)
{
	struct kvt_lru *l1;
	struct kvt_lru_stats st;
	char key[32];
	int i, n = 100000;

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, UINT64_MAX), 0);
	assert_int_equal(stats(l1).buckets, LRU_MIN_BUCKETS);
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(put(l1, "ns", key, 8, (uint8_t)i, 0, NULL,
				     NULL), 0);
		st = stats(l1);
		/* Load factor never above 1 once a put returns. */
		assert_true(st.entries <= st.buckets);
	}
	st = stats(l1);
	assert_int_equal(st.entries, n);
	assert_true(st.buckets >= (uint64_t)n);
	assert_int_equal(st.buckets & (st.buckets - 1), 0);
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_true(get_check(l1, "ns", key, 0, 8, (uint8_t)i));
	}
	for (i = 0; i < n; i += 2) {
		struct kvt_key k;

		snprintf(key, sizeof(key), "key-%d", i);
		k = mkkey("ns", key);
		assert_int_equal(kvt_lru_del(l1, &k, 0), 0);
	}
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(get_check(l1, "ns", key, 0, 8, (uint8_t)i),
				 i % 2);
	}
	assert_int_equal(stats(l1).entries, n / 2);
	kvt_lru_close(l1);
}

static void test_enomem_leaves_store_unchanged(void **state)
{
	struct kvt_lru *l1;
	struct kvt_lru_stats before, after;
	struct victims vs = { 0 };
	char key[16];
	int i;

	(void)state;
	alloc_fail_after = 0;
	assert_int_equal(kvt_lru_open(&l1, 100), -ENOMEM);
	assert_null(l1);
	alloc_fail_after = 1; /* the struct succeeds, the buckets fail */
	assert_int_equal(kvt_lru_open(&l1, 100), -ENOMEM);
	assert_null(l1);

	assert_int_equal(kvt_lru_open(&l1, 2 * cost_of("n", "a", 1000)), 0);
	assert_int_equal(put(l1, "n", "a", 1000, 1, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "n", "b", 1000, 2, 0, record_victim, &vs), 0);
	before = stats(l1);

	/* Replacing a key: the old value stays. */
	alloc_fail_after = 0;
	assert_int_equal(put(l1, "n", "a", 1000, 3, 0, record_victim, &vs),
			 -ENOMEM);
	/* A new key needing an eviction: nothing is evicted. */
	alloc_fail_after = 0;
	assert_int_equal(put(l1, "n", "c", 1000, 4, 0, record_victim, &vs),
			 -ENOMEM);
	after = stats(l1);
	assert_int_equal(vs.n, 0);
	assert_int_equal(after.entries, before.entries);
	assert_int_equal(after.bytes, before.bytes);
	assert_int_equal(after.raw_bytes, before.raw_bytes);
	assert_true(get_check(l1, "n", "a", 0, 1000, 1));
	assert_true(get_check(l1, "n", "b", 0, 1000, 2));
	/* LRU order unchanged too: a, just read... b read last, so a goes. */
	assert_int_equal(put(l1, "n", "c", 1000, 4, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 1);
	assert_string_equal(vs.names[0], "n/a");
	kvt_lru_close(l1);

	/* A failed rehash is not a failed put: chains just grow longer. */
	assert_int_equal(kvt_lru_open(&l1, UINT64_MAX), 0);
	for (i = 0; i < (int)LRU_MIN_BUCKETS; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(put(l1, "n", key, 1, 1, 0, NULL, NULL), 0);
	}
	assert_int_equal(stats(l1).buckets, LRU_MIN_BUCKETS);
	alloc_fail_after = 1; /* the entry succeeds, the new buckets fail */
	assert_int_equal(put(l1, "n", "grow", 1, 2, 0, NULL, NULL), 0);
	assert_int_equal(stats(l1).buckets, LRU_MIN_BUCKETS);
	assert_int_equal(stats(l1).entries, LRU_MIN_BUCKETS + 1);
	assert_true(get_check(l1, "n", "grow", 0, 1, 2));
	assert_int_equal(put(l1, "n", "grow2", 1, 3, 0, NULL, NULL), 0);
	assert_int_equal(stats(l1).buckets, 2 * LRU_MIN_BUCKETS);
	for (i = 0; i < (int)LRU_MIN_BUCKETS; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_true(get_check(l1, "n", key, 0, 1, 1));
	}
	kvt_lru_close(l1);
	alloc_fail_after = -1;
}

static void test_invalid_args(void **state)
{
	struct kvt_lru *l1;
	struct kvt_key k = mkkey("n", "k"), bad = { NULL, 3, NULL, 0 };
	struct kvt_blob b;
	struct kvt_ref *r = (struct kvt_ref *)&k;

	(void)state;
	assert_int_equal(kvt_lru_open(NULL, 100), KVT_EINVAL);
	assert_int_equal(kvt_lru_open(&l1, 0), KVT_EINVAL);
	assert_null(l1);
	kvt_lru_close(NULL);
	kvt_ref_release(NULL);
	kvt_lru_stats(NULL, NULL);

	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	/* Errors still take ownership of the blob (ASan checks the frees). */
	b = make_blob(10, 1);
	assert_int_equal(kvt_lru_put(NULL, &k, &b, 0, NULL, NULL), KVT_EINVAL);
	assert_null(b.mem);
	b = make_blob(10, 1);
	assert_int_equal(kvt_lru_put(l1, NULL, &b, 0, NULL, NULL), KVT_EINVAL);
	b = make_blob(10, 1);
	assert_int_equal(kvt_lru_put(l1, &bad, &b, 0, NULL, NULL), KVT_EINVAL);
	/* data running past the end of mem */
	b = make_blob(10, 1);
	b.len = 11;
	assert_int_equal(kvt_lru_put(l1, &k, &b, 0, NULL, NULL), KVT_EINVAL);
	/* data before mem */
	b = make_blob(10, 1);
	b.data = (const uint8_t *)b.mem - 1;
	b.len = 1;
	assert_int_equal(kvt_lru_put(l1, &k, &b, 0, NULL, NULL), KVT_EINVAL);
	assert_int_equal(kvt_lru_put(l1, &k, NULL, 0, NULL, NULL), KVT_EINVAL);
	assert_int_equal(stats(l1).entries, 0);

	assert_int_equal(kvt_lru_get(l1, &bad, 0, &r), KVT_EINVAL);
	assert_null(r);
	assert_int_equal(kvt_lru_get(l1, &k, 0, NULL), KVT_EINVAL);
	assert_int_equal(kvt_lru_exists(l1, NULL, 0), 0);
	assert_int_equal(kvt_lru_del(l1, NULL, 0), KVT_EINVAL);
	assert_int_equal(kvt_lru_evict_one(l1, NULL), KVT_EINVAL);

	/* An empty value with no memory at all is fine. */
	b.mem = NULL;
	b.mem_size = 0;
	b.data = NULL;
	b.len = 0;
	b.dtype = 0;
	assert_int_equal(kvt_lru_put(l1, &k, &b, 0, NULL, NULL), 0);
	assert_int_equal(kvt_lru_get(l1, &k, 0, &r), 0);
	assert_int_equal(kvt_ref_len(r), 0);
	assert_non_null(kvt_ref_data(r));
	kvt_ref_release(r);
	assert_int_equal(stats(l1).bytes, kvt_lru_cost(0, 1, 1));
	kvt_lru_close(l1);
}

/*
 * Randomized operations against a reference model: a plain array of keys
 * with "last used" stamps, evicting the smallest stamp.  After every single
 * operation the accounted bytes must match the model and never exceed the
 * capacity, and victims must come out in the model's order.
 */
#define MODEL_KEYS 64
#define MODEL_CAP 40000u

struct model_entry {
	int present;
	size_t len;
	uint8_t fill;
	uint64_t stamp;
};

struct model {
	struct model_entry e[MODEL_KEYS];
	uint64_t clock;
	uint64_t bytes;
	uint64_t raw_bytes;
	uint64_t entries;
	/* Victims L1 reported and not yet checked against the model. */
	int nvict;
	int vict[MODEL_KEYS];
};

static void model_name(int id, const char **ns, char *key, size_t cap)
{
	/* Two namespaces sharing key bytes, to exercise isolation as well. */
	*ns = id % 2 ? "odd" : "ev";
	snprintf(key, cap, "key%d", id / 2);
}

static uint64_t model_cost(int id, size_t len)
{
	const char *ns;
	char key[16];

	model_name(id, &ns, key, sizeof(key));
	return cost_of(ns, key, len);
}

static void model_victim(void *arg, struct kvt_ref *v)
{
	struct model *m = arg;
	struct kvt_key k;
	char num[16];
	int id;

	/* Key bytes are not NUL-terminated: copy the number out first. */
	kvt_lru_ref_key(v, &k);
	assert_true(k.key_len > 3 && k.key_len - 3 < sizeof(num));
	memcpy(num, k.key + 3, k.key_len - 3);
	num[k.key_len - 3] = '\0';
	id = atoi(num) * 2 + (k.ns_len == 3);
	assert_true(m->nvict < MODEL_KEYS);
	m->vict[m->nvict++] = id;
	/* The victim's bytes are intact when handed over. */
	if (kvt_ref_len(v))
		assert_int_equal(kvt_ref_data(v)[kvt_ref_len(v) - 1],
				 m->e[id].fill);
	kvt_ref_release(v);
}

static void model_remove(struct model *m, int id)
{
	m->e[id].present = 0;
	m->bytes -= model_cost(id, m->e[id].len);
	m->raw_bytes -= m->e[id].len;
	m->entries--;
}

static int model_lru(const struct model *m)
{
	int i, best = -1;

	for (i = 0; i < MODEL_KEYS; i++)
		if (m->e[i].present &&
		    (best < 0 || m->e[i].stamp < m->e[best].stamp))
			best = i;
	return best;
}

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* What kvt_lru_ns_foreach() reported, per model namespace. */
struct ns_seen {
	int calls;
	struct kvt_lru_ns_tot tot[2]; /* "ev", "odd" */
};

static void ns_collect(void *arg, const uint8_t *ns, size_t ns_len,
		       const struct kvt_lru_ns_tot *all,
		       const struct kvt_lru_ns_tot *mark)
{
	struct ns_seen *s = arg;
	int i = ns_len == 3 && memcmp(ns, "odd", 3) == 0 ? 1 : 0;

	assert_true(ns_len == 3 || (ns_len == 2 && memcmp(ns, "ev", 2) == 0));
	assert_true(all->entries > 0);
	assert_int_equal(mark[0].entries, 0); /* no marks named */
	s->calls++;
	s->tot[i] = *all;
}

/* As ns_collect, keeping the marks too (for test_ns_totals). */
struct ns_seen_m {
	int calls;
	struct kvt_lru_ns_tot tot[2], mark0[2], mark1[2];
};

static void ns_collect_marks(void *arg, const uint8_t *ns, size_t ns_len,
			     const struct kvt_lru_ns_tot *all,
			     const struct kvt_lru_ns_tot *mark)
{
	struct ns_seen_m *s = arg;
	int i = ns_len == 3 && memcmp(ns, "odd", 3) == 0 ? 1 : 0;

	s->calls++;
	s->tot[i] = *all;
	s->mark0[i] = mark[0];
	s->mark1[i] = mark[1];
}

/* The per-namespace totals agree with the model after every operation. */
static void model_check_ns(struct kvt_lru *l1, const struct model *m)
{
	struct ns_seen seen;
	uint64_t entries[2] = { 0, 0 }, raw[2] = { 0, 0 };
	int live = 0;

	memset(&seen, 0, sizeof(seen));
	for (int id = 0; id < MODEL_KEYS; id++)
		if (m->e[id].present) {
			entries[id % 2]++;
			raw[id % 2] += m->e[id].len;
		}
	kvt_lru_ns_foreach(l1, ns_collect, &seen);
	for (int i = 0; i < 2; i++) {
		live += entries[i] > 0;
		assert_int_equal(seen.tot[i].entries, entries[i]);
		assert_int_equal(seen.tot[i].raw_bytes, raw[i]);
	}
	/* A namespace without entries is neither visited nor kept. */
	assert_int_equal(seen.calls, live);
	assert_int_equal(kvt_lru_ns_count(l1), live);
}

static void test_random_vs_model(void **state)
{
	static struct model m;
	struct kvt_lru *l1;
	struct kvt_lru_stats st;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	int op;

	(void)state;
	memset(&m, 0, sizeof(m));
	assert_int_equal(kvt_lru_open(&l1, MODEL_CAP), 0);
	for (op = 0; op < 5000; op++) {
		int id = (int)(rng_next(&seed) % MODEL_KEYS);
		unsigned what = (unsigned)(rng_next(&seed) % 100);
		const char *ns;
		char key[16];
		struct kvt_key k;

		model_name(id, &ns, key, sizeof(key));
		k = mkkey(ns, key);
		m.nvict = 0;
		if (what < 50) {
			/* Mostly fitting sizes, now and then an oversized one. */
			size_t len = (size_t)(rng_next(&seed) % 4000);
			uint8_t fill = (uint8_t)rng_next(&seed);
			int rc;

			if (what < 2)
				len = MODEL_CAP;
			rc = put(l1, ns, key, len, fill, 0, model_victim, &m);
			if (model_cost(id, len) > MODEL_CAP) {
				assert_int_equal(rc, KVT_ENOSPACE);
				assert_int_equal(m.nvict, 0);
			} else {
				uint64_t c = model_cost(id, len);
				int n = 0;

				assert_int_equal(rc, 0);
				if (m.e[id].present)
					model_remove(&m, id);
				while (m.bytes + c > MODEL_CAP) {
					int v = model_lru(&m);

					assert_true(n < m.nvict);
					assert_int_equal(m.vict[n++], v);
					model_remove(&m, v);
				}
				assert_int_equal(n, m.nvict);
				m.e[id].present = 1;
				m.e[id].len = len;
				m.e[id].fill = fill;
				m.e[id].stamp = ++m.clock;
				m.bytes += c;
				m.raw_bytes += len;
				m.entries++;
			}
		} else if (what < 80) {
			int hit = get_check(l1, ns, key, 0, m.e[id].len,
					    m.e[id].fill);

			assert_int_equal(hit, m.e[id].present);
			if (hit)
				m.e[id].stamp = ++m.clock;
		} else if (what < 90) {
			int rc = kvt_lru_del(l1, &k, 0);

			assert_int_equal(rc, m.e[id].present ? 0 :
					 KVT_ENOTFOUND);
			if (m.e[id].present)
				model_remove(&m, id);
		} else if (what < 95) {
			assert_int_equal(kvt_lru_exists(l1, &k, 0),
					 m.e[id].present);
		} else {
			struct kvt_ref *v;
			int rc = kvt_lru_evict_one(l1, &v), lru = model_lru(&m);

			if (lru < 0) {
				assert_int_equal(rc, KVT_ENOTFOUND);
			} else {
				assert_int_equal(rc, 0);
				model_victim(&m, v);
				assert_int_equal(m.vict[0], lru);
				model_remove(&m, lru);
			}
		}
		st = stats(l1);
		assert_true(st.bytes <= MODEL_CAP);
		assert_int_equal(st.bytes, m.bytes);
		assert_int_equal(st.entries, m.entries);
		assert_int_equal(st.raw_bytes, m.raw_bytes);
		model_check_ns(l1, &m);
	}
	/* Finally every key agrees with the model. */
	for (op = 0; op < MODEL_KEYS; op++) {
		const char *ns;
		char key[16];

		model_name(op, &ns, key, sizeof(key));
		assert_int_equal(get_check(l1, ns, key, 0, m.e[op].len,
					   m.e[op].fill), m.e[op].present);
	}
	kvt_lru_close(l1);
}

/* Per-namespace totals: entries, bytes, hits and marked flags. */
static void test_ns_totals(void **state)
{
	struct kvt_lru *l1;
	struct ns_seen_m seen;
	struct kvt_ref *r;
	struct kvt_key k = mkkey("odd", "a");

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 1 << 20), 0);
	assert_int_equal(kvt_lru_set_ns_marks(l1, 0x04, 0x01), 0);
	assert_int_equal(put(l1, "odd", "a", 100, 1, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "odd", "b", 50, 1, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "ev", "a", 10, 1, 0, NULL, NULL), 0);
	/* Marks are named only while the LRU is empty. */
	assert_int_equal(kvt_lru_set_ns_marks(l1, 0, 0), KVT_EINVAL);
	assert_int_equal(kvt_lru_ns_count(l1), 2);
	assert_true(get_check(l1, "odd", "a", 0, 100, 1));
	assert_true(get_check(l1, "odd", "a", 0, 100, 1));
	memset(&seen, 0, sizeof(seen));
	kvt_lru_ns_foreach(l1, ns_collect_marks, &seen);
	assert_int_equal(seen.calls, 2);
	assert_int_equal(seen.tot[1].entries, 2);
	assert_int_equal(seen.tot[1].raw_bytes, 150);
	assert_int_equal(seen.tot[1].hits, 2);
	assert_int_equal(seen.tot[0].entries, 1);
	/* Setting a marked flag moves the entry's share into the mark. */
	assert_int_equal(kvt_lru_peek(l1, &k, 0, &r), 0);
	kvt_lru_ref_set_flags(l1, r, 0x04 | 0x01, 0);
	memset(&seen, 0, sizeof(seen));
	kvt_lru_ns_foreach(l1, ns_collect_marks, &seen);
	assert_int_equal(seen.mark0[1].entries, 1);
	assert_int_equal(seen.mark0[1].raw_bytes, 100);
	assert_int_equal(seen.mark0[1].hits, 2);
	assert_int_equal(seen.mark1[1].entries, 1);
	/* A hit of a marked entry counts in the mark too. */
	assert_true(get_check(l1, "odd", "a", 0, 100, 1));
	memset(&seen, 0, sizeof(seen));
	kvt_lru_ns_foreach(l1, ns_collect_marks, &seen);
	assert_int_equal(seen.mark0[1].hits, 3);
	assert_int_equal(seen.tot[1].hits, 3);
	kvt_lru_ref_set_flags(l1, r, 0, 0x04);
	memset(&seen, 0, sizeof(seen));
	kvt_lru_ns_foreach(l1, ns_collect_marks, &seen);
	assert_int_equal(seen.mark0[1].entries, 0);
	assert_int_equal(seen.mark1[1].entries, 1);
	/* Unlinked, it leaves the totals; its flags no longer count. */
	assert_int_equal(kvt_lru_del(l1, &k, 0), 0);
	kvt_lru_ref_set_flags(l1, r, 0x04, 0);
	kvt_ref_release(r);
	memset(&seen, 0, sizeof(seen));
	kvt_lru_ns_foreach(l1, ns_collect_marks, &seen);
	assert_int_equal(seen.tot[1].entries, 1);
	assert_int_equal(seen.tot[1].hits, 0);
	assert_int_equal(seen.mark0[1].entries, 0);
	assert_int_equal(seen.mark1[1].entries, 0);
	/* A dropped namespace is gone; dropping one with nothing is free. */
	assert_int_equal(kvt_lru_drop_ns(l1, (const uint8_t *)"odd", 3), 1);
	assert_int_equal(kvt_lru_drop_ns(l1, (const uint8_t *)"zzz", 3), 0);
	assert_int_equal(kvt_lru_ns_count(l1), 1);
	/* Replacing the only entry of a namespace keeps its record. */
	assert_int_equal(put(l1, "ev", "a", 20, 2, 0, NULL, NULL), 0);
	memset(&seen, 0, sizeof(seen));
	kvt_lru_ns_foreach(l1, ns_collect_marks, &seen);
	assert_int_equal(seen.tot[0].entries, 1);
	assert_int_equal(seen.tot[0].raw_bytes, 20);
	kvt_lru_close(l1);

	/* Evicting a namespace's last entry to make room for it. */
	assert_int_equal(kvt_lru_open(&l1, cost_of("ev", "a", 1000)), 0);
	assert_int_equal(put(l1, "ev", "a", 1000, 1, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "ev", "b", 1000, 2, 0, NULL, NULL), 0);
	assert_int_equal(put(l1, "odd", "c", 990, 3, 0, NULL, NULL), 0);
	assert_int_equal(kvt_lru_ns_count(l1), 1);
	/* Out of memory for a new namespace's record: nothing changes. */
	alloc_fail_after = 1; /* the entry succeeds, the record fails */
	assert_int_equal(put(l1, "new", "d", 10, 4, 0, NULL, NULL), -ENOMEM);
	assert_true(get_check(l1, "odd", "c", 0, 990, 3));
	assert_int_equal(kvt_lru_ns_count(l1), 1);
	kvt_lru_close(l1);
	alloc_fail_after = 2; /* the struct and buckets, not the ns table */
	assert_int_equal(kvt_lru_open(&l1, 100), -ENOMEM);
	assert_null(l1);
	alloc_fail_after = -1;
}

/* kvt_lru_move: a linked entry becomes the next victim, or the newest. */
static void test_move(void **state)
{
	struct kvt_lru *l1;
	struct victims vs = { 0 };
	struct kvt_ref *r;
	struct kvt_key k = mkkey("n", "b");

	(void)state;
	assert_int_equal(kvt_lru_open(&l1, 3 * cost_of("n", "a", 100)), 0);
	assert_int_equal(put(l1, "n", "a", 100, 1, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "n", "b", 100, 2, 0, record_victim, &vs), 0);
	assert_int_equal(put(l1, "n", "c", 100, 3, 0, record_victim, &vs), 0);
	assert_int_equal(kvt_lru_peek(l1, &k, 0, &r), 0);
	kvt_lru_move(l1, r, false);
	kvt_lru_move(NULL, r, false);
	assert_int_equal(put(l1, "n", "d", 100, 4, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 1);
	assert_string_equal(vs.names[0], "n/b");
	/* Unlinked now: a no-op. */
	kvt_lru_move(l1, r, true);
	kvt_ref_release(r);
	/* The oldest already: nothing moves; made newest, c goes first. */
	k = mkkey("n", "a");
	assert_int_equal(kvt_lru_peek(l1, &k, 0, &r), 0);
	kvt_lru_move(l1, r, false);
	kvt_lru_move(l1, r, true);
	kvt_ref_release(r);
	assert_int_equal(put(l1, "n", "e", 100, 5, 0, record_victim, &vs), 0);
	assert_int_equal(vs.n, 2);
	assert_string_equal(vs.names[1], "n/c");
	/* No hit was counted by any of it. */
	assert_int_equal(stats(l1).hits, 0);
	kvt_lru_close(l1);
}

/* A reference to a value in no LRU. */
static void test_ref_make(void **state)
{
	struct kvt_key k = mkkey("n", "free");
	struct kvt_blob b = make_blob(64, 0x5a);
	struct kvt_lru_meta m = { .raw_len = 64, .hits = 7 };
	struct kvt_lru_meta got;
	struct kvt_key kk;
	struct kvt_ref *r;

	(void)state;
	assert_int_equal(kvt_lru_ref_make(&k, &b, 99, &m, &r), 0);
	assert_null(b.mem);
	assert_int_equal(kvt_ref_len(r), 64);
	assert_int_equal(kvt_ref_data(r)[63], 0x5a);
	assert_int_equal(kvt_lru_ref_expires(r), 99);
	kvt_lru_ref_meta(r, &got);
	assert_int_equal(got.hits, 7);
	kvt_lru_ref_key(r, &kk);
	assert_int_equal(kk.key_len, 4);
	kvt_lru_ref_set_flags(NULL, r, 0x01, 0);
	kvt_lru_ref_meta(r, &got);
	assert_int_equal(got.flags, 0x01);
	kvt_ref_release(kvt_lru_ref_acquire(r));
	kvt_ref_release(r);
	/* Failures free the memory (ASan checks). */
	b = make_blob(8, 1);
	alloc_fail_after = 0;
	assert_int_equal(kvt_lru_ref_make(&k, &b, 0, NULL, &r), -ENOMEM);
	assert_null(r);
	assert_null(b.mem);
	b = make_blob(8, 1);
	assert_int_equal(kvt_lru_ref_make(&k, &b, 0, NULL, NULL), KVT_EINVAL);
	assert_null(b.mem);
	alloc_fail_after = -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_basic),
		cmocka_unit_test(test_lru_get_refreshes),
		cmocka_unit_test(test_eviction_order),
		cmocka_unit_test(test_replace_keeps_old_ref),
		cmocka_unit_test(test_oversized_refused),
		cmocka_unit_test(test_namespaces_isolate),
		cmocka_unit_test(test_del),
		cmocka_unit_test(test_ttl_fake_clock),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_enomem_leaves_store_unchanged),
		cmocka_unit_test(test_invalid_args),
		cmocka_unit_test(test_random_vs_model),
		cmocka_unit_test(test_ns_totals),
		cmocka_unit_test(test_ref_make),
		cmocka_unit_test(test_move),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
