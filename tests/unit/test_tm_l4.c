/*
 * test_tm_l4.c - the tier manager's L4 (tiers/kvt_tm_l4.c) against a real
 * Redis Cluster (l4cluster.h), driven through kvt_tm.h as the daemon does.
 * Two managers in one process stand for two hosts.  What the daemon-level
 * test (tests/integ/test_l4.c) cannot time: a delete or a drop still queued
 * for L4 hides L4's copy at once; MATCH counts local and L4 keys together;
 * blocks over the value limit are misses; put mode keeps the frame it made
 * as the block's L2 copy; evict mode without L3 writes RAM's victims; a
 * cluster that is not there costs misses and counted errors, nothing else.
 * Skipped where redis-server is not installed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvt_frame.h"
#include "kvt_tm.h"
#include "l4cluster.h"

static struct l4c CL;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct kvt_tm *open_l4(const char *url, int write, uint64_t l1,
			      uint64_t l2, uint64_t value_max)
{
	struct kvt_tm_config cfg = {
		.l1_capacity = l1,
		.l2_capacity = l2,
		.workers = 2,
		.l4_url = url,
		.l4_write = write,
		.l4_threads = 2,
		.l4_timeout_ms = 300,
		.l4_connect_timeout_ms = 200,
		.value_max = value_max,
	};
	struct kvt_tm *tm = NULL;
	char err[256] = "";

	cfg.errmsg = err;
	cfg.errmsg_len = sizeof(err);
	if (kvt_tm_open(&tm, &cfg) != 0)
		fail_msg("kvt_tm_open: %s", err);
	return tm;
}

static struct kvt_key mkkey(const char *ns, const char *key)
{
	struct kvt_key k = { (const uint8_t *)ns, strlen(ns),
			     (const uint8_t *)key, strlen(key) };

	return k;
}

static void fill(uint8_t *p, size_t len, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

static void put(struct kvt_tm *tm, const char *ns, const char *key,
		size_t len, unsigned seed)
{
	struct kvt_key k = mkkey(ns, key);
	uint8_t *mem = malloc(len);
	struct kvt_blob b = { mem, len, mem, len, KVT_DTYPE_BF16 };

	assert_non_null(mem);
	fill(mem, len, seed);
	assert_int_equal(kvt_tm_put(tm, &k, &b, 0), 0);
}

/* Runs the manager's loop side until cond() or ms pass. */
static void pump(struct kvt_tm *tm, unsigned ms)
{
	struct pollfd p = { kvt_tm_event_fd(tm), POLLIN, 0 };

	poll(&p, 1, (int)ms);
	kvt_tm_dispatch(tm);
}

static struct kvt_tm_stats st_of(struct kvt_tm *tm)
{
	struct kvt_tm_stats st;

	kvt_tm_stats(tm, &st);
	return st;
}

/* Until nothing is queued (L4 writes included), at most 10 s. */
static void settle(struct kvt_tm *tm)
{
	uint64_t t0 = now_ms();

	for (;;) {
		struct kvt_tm_stats st = st_of(tm);

		if (st.jobs_pending == 0 && st.l4.queued_bytes == 0)
			return;
		assert_true(now_ms() - t0 < 10000);
		pump(tm, 10);
	}
}

struct got {
	int calls, status;
	struct kvt_ref *ref;
};

static void on_get(void *arg, int status, struct kvt_ref *ref)
{
	struct got *g = arg;

	g->calls++;
	g->status = status;
	g->ref = ref;
}

/* A get, waited for: 1 if a hit with the bytes of (len, seed), else 0. */
static int get(struct kvt_tm *tm, const char *ns, const char *key,
	       size_t len, unsigned seed)
{
	struct kvt_key k = mkkey(ns, key);
	struct got g = { 0, 0, NULL };
	uint64_t t0 = now_ms();
	int hit;

	kvt_tm_get(tm, &k, on_get, &g);
	while (!g.calls) {
		assert_true(now_ms() - t0 < 10000);
		pump(tm, 10);
	}
	if (g.status) {
		assert_int_equal(g.status, KVT_ENOTFOUND);
		return 0;
	}
	uint8_t *want = malloc(len);
	fill(want, len, seed);
	hit = kvt_ref_len(g.ref) == len &&
	      memcmp(kvt_ref_data(g.ref), want, len) == 0;
	assert_true(hit); /* never other bytes */
	free(want);
	kvt_ref_release(g.ref);
	return hit;
}

struct counted {
	int calls, status;
	uint64_t count;
};

static void on_count(void *arg, int status, uint64_t count)
{
	struct counted *c = arg;

	c->calls++;
	c->status = status;
	c->count = count;
}

static void test_put_mode_and_ordering(void **state)
{
	struct kvt_tm *a = open_l4(CL.url, KVT_TM_L4_PUT, 64 << 20, 64 << 20, 0);
	struct kvt_tm *b = open_l4(CL.url, KVT_TM_L4_EVICT, 64 << 20, 0, 0);
	struct kvt_tm_stats st;

	(void)state;
	put(a, "po", "k1", 100000, 1);
	put(a, "po", "k2", 100000, 2);
	settle(a);
	st = st_of(a);
	assert_int_equal(st.l4.puts, 2);
	/* The frames made for L4 are L2's inclusive copies now. */
	assert_int_equal(st.l2.entries, 2);
	assert_int_equal(get(b, "po", "k1", 100000, 1), 1);

	/* A delete queued for L4 hides L4's copy at once, before it ran. */
	struct kvt_key k2 = mkkey("po", "k2");
	assert_int_equal(kvt_tm_del(a, &k2), 0);
	assert_int_equal(get(a, "po", "k2", 100000, 2), 0);
	settle(a);
	assert_int_equal(get(b, "po", "k2", 100000, 2), 0);
	assert_true(st_of(a).l4.dels >= 1);

	/* A drop too; and b, which holds k1 in RAM, drops its copy. */
	assert_int_equal(get(b, "po", "k1", 100000, 1), 1); /* admitted */
	assert_int_equal(st_of(b).l1.entries, 1);
	struct counted c = { 0 };
	kvt_tm_drop_ns(a, (const uint8_t *)"po", 2, on_count, &c);
	while (!c.calls)
		pump(a, 10);
	assert_int_equal(c.status, 0);
	assert_int_equal(c.count, 1); /* k1 once: its L2 frame is a copy */
	assert_int_equal(get(a, "po", "k1", 100000, 1), 0);
	uint64_t t0 = now_ms();
	while (st_of(b).l4.remote_drops == 0) {
		assert_true(now_ms() - t0 < 5000);
		pump(b, 20);
	}
	assert_int_equal(st_of(b).l1.entries, 0);
	assert_int_equal(get(b, "po", "k1", 100000, 1), 0);
	assert_true(st_of(b).l4.misses_stale >= 1);
	settle(a);
	kvt_tm_close(a);
	kvt_tm_close(b);
}

static void test_match(void **state)
{
	struct kvt_tm *a = open_l4(CL.url, KVT_TM_L4_PUT, 64 << 20, 0, 0);
	struct kvt_tm *b = open_l4(CL.url, KVT_TM_L4_EVICT, 64 << 20, 0, 0);
	struct kvt_key keys[6] = {
		mkkey("m", "0"), mkkey("m", "1"), mkkey("m", "2"),
		mkkey("m", "3"), mkkey("m", "4"), mkkey("m", "5"),
	};
	struct counted c = { 0 };

	(void)state;
	/* b: 0 and 1 local, 2 only in L4, 3 local, 4 nowhere, 5 local. */
	put(b, "m", "0", 1000, 10);
	put(b, "m", "1", 1000, 11);
	put(a, "m", "2", 1000, 12);
	put(b, "m", "3", 1000, 13);
	put(b, "m", "5", 1000, 15);
	settle(a);
	assert_int_equal(kvt_tm_match(b, keys, 6, on_count, &c), 1);
	while (!c.calls)
		pump(b, 10);
	assert_int_equal(c.status, 0);
	assert_int_equal(c.count, 4);
	assert_int_equal(st_of(b).l4.probes_found, 1);
	/* All local: answered at once. */
	c.calls = 0;
	assert_int_equal(kvt_tm_match(b, keys, 2, on_count, &c), 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.count, 2);
	kvt_tm_close(a);
	kvt_tm_close(b);
}

static void test_value_limit(void **state)
{
	struct kvt_tm *a = open_l4(CL.url, KVT_TM_L4_PUT, 64 << 20, 0, 0);
	struct kvt_tm *b = open_l4(CL.url, KVT_TM_L4_EVICT, 64 << 20, 0,
				   50000);

	(void)state;
	put(a, "vl", "big", 60000, 20);
	put(a, "vl", "small", 40000, 21);
	settle(a);
	assert_int_equal(get(b, "vl", "big", 60000, 20), 0);
	assert_int_equal(get(b, "vl", "small", 40000, 21), 1);
	assert_int_equal(st_of(b).l4.too_big, 1);
	assert_true(st_of(b).l4.misses >= 1);
	kvt_tm_close(a);
	kvt_tm_close(b);
}

static void test_evict_without_l3(void **state)
{
	/* L1 2 MiB, L2 1 MiB, no L3: L2's victims leave for L4. */
	struct kvt_tm *a = open_l4(CL.url, KVT_TM_L4_EVICT, 2 << 20, 1 << 20,
				   0);
	struct kvt_tm *b = open_l4(CL.url, KVT_TM_L4_EVICT, 64 << 20, 0, 0);
	char key[16];

	(void)state;
	for (int i = 0; i < 24; i++) {
		snprintf(key, sizeof(key), "e%d", i);
		put(a, "ev", key, 256 << 10, 30 + (unsigned)i);
		pump(a, 0);
	}
	settle(a);
	assert_true(st_of(a).l4.puts >= 8);
	/* The first ones left a: b and a read them from L4, intact. */
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "e%d", i);
		assert_int_equal(get(b, "ev", key, 256 << 10,
				     30 + (unsigned)i), 1);
		assert_int_equal(get(a, "ev", key, 256 << 10,
				     30 + (unsigned)i), 1);
	}
	kvt_tm_close(a);
	kvt_tm_close(b);
}

static void test_no_cluster(void **state)
{
	/* Nothing listens there (the cluster's bus port + 1 is unused). */
	char url[64];
	struct kvt_tm *tm;
	uint64_t t0;

	(void)state;
	snprintf(url, sizeof(url), "redis-cluster://127.0.0.1:%d",
		 CL.base + 10009);
	tm = open_l4(url, KVT_TM_L4_PUT, 64 << 20, 0, 0);
	assert_true(kvt_tm_l4_wait_ready(tm, 3000) != 0);
	put(tm, "nc", "local", 4096, 40);
	t0 = now_ms();
	assert_int_equal(get(tm, "nc", "remote", 4096, 41), 0);
	assert_true(now_ms() - t0 < 3000);
	/* A local hit completes at once, whatever L4 is doing. */
	struct kvt_key k = mkkey("nc", "local");
	struct got g = { 0, 0, NULL };
	assert_int_equal(kvt_tm_get(tm, &k, on_get, &g), 0);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.status, 0);
	kvt_ref_release(g.ref);
	settle(tm);
	assert_true(st_of(tm).l4.errors > 0);
	kvt_tm_close(tm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_mode_and_ordering),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_value_limit),
		cmocka_unit_test(test_evict_without_l3),
		cmocka_unit_test(test_no_cluster),
	};
	int rc = l4c_start(&CL);

	if (rc == 77) {
		printf("skip: redis-server not installed (scripts/deps.sh "
		       "installs it): the manager's L4 not tested\n");
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "test_tm_l4: could not start a cluster\n");
		return 1;
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	l4c_stop(&CL);
	return rc;
}
