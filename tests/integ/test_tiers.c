/*
 * test_tiers.c - integration test of the tier chain on a real kvtierd with
 * tiny RAM tiers: blocks flow L1 -> L2 -> L3 and back, byte-identical;
 * graceful restart and kill -9 keep what L3 committed; a flipped byte on
 * disk is a counted miss, never wrong bytes; --check finds it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>

#include "integ_harness.h"
#include "integ_stats.h"
#include "kvtier.h"

#define NBLOCKS 96
#define BLOCK (1u << 20) /* 96 MiB in all: six times L1 + L2 */

static struct integ_daemon D;
static const char *const small_tiers[] = {
	"--l1-size", "8M", "--l2-size", "8M", "--l3-size", "256M",
	"--l3-region-size", "16M", NULL
};

/*
 * Synthetic bf16 K/V-like bytes derived from the block number: the key is
 * derived from the content's seed, so any served block can be checked.
 */
static void make_block(uint8_t *p, unsigned i)
{
	uint64_t x = 0x9E3779B97F4A7C15ull * (i + 1);

	for (size_t off = 0; off + 1 < BLOCK; off += 2) {
		/* Small values around 0: sign, exponent near 0x3c-0x3f. */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint16_t bf = (uint16_t)(0x3c00 | (x & 0x03ff) |
					 ((x >> 20) & 1) << 15);
		p[off] = (uint8_t)bf;
		p[off + 1] = (uint8_t)(bf >> 8);
	}
}

static void key_of(char *k, size_t cap, unsigned i)
{
	snprintf(k, cap, "blk-%03u", i);
}

static kvt_client *connect_ok(void)
{
	kvt_client *c = NULL;
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	return c;
}

/* Reads every block; returns hits; fails on any wrong byte. */
static unsigned read_all(kvt_client *c, uint8_t *want, uint8_t *got)
{
	unsigned hits = 0;

	for (unsigned i = 0; i < NBLOCKS; i++) {
		char key[32];
		size_t n = 0;
		int rc;

		key_of(key, sizeof(key), i);
		rc = kvt_get(c, "t", key, strlen(key), got, BLOCK, &n);
		if (rc == KVT_ENOTFOUND)
			continue;
		assert_int_equal(rc, 0);
		assert_int_equal(n, BLOCK);
		make_block(want, i);
		assert_memory_equal(got, want, BLOCK);
		hits++;
	}
	return hits;
}

/* Waits until the daemon has no blocks in motion. */
static void settle(kvt_client *c)
{
	for (int i = 0; i < 500; i++) {
		char *j = stats(c);
		uint64_t pending = jnum(j, NULL, "jobs_pending");
		free(j);
		if (pending == 0)
			return;
		integ_sleep_ms(10);
	}
	fail_msg("jobs still pending after 5 s");
}

static void test_flow_restart_corrupt(void **state)
{
	uint8_t *want = malloc(BLOCK), *got = malloc(BLOCK);
	struct kvt_put_opts po = { .dtype = 2 /* bf16 */ };
	kvt_client *c;
	char *j;
	unsigned hits;

	(void)state;
	assert_non_null(want);
	assert_non_null(got);
	assert_int_equal(integ_start(&D, small_tiers), 0);
	c = connect_ok();
	for (unsigned i = 0; i < NBLOCKS; i++) {
		char key[32];
		key_of(key, sizeof(key), i);
		make_block(want, i);
		assert_int_equal(kvt_put(c, "t", key, strlen(key), want, BLOCK,
					 &po), 0);
	}
	settle(c);
	j = stats(c);
	printf("after writing 96 MiB: %s\n", j);
	assert_true(jnum(j, "l1", "entries") > 0);
	assert_true(jnum(j, "l2", "entries") > 0);
	assert_true(jnum(j, "l3", "entries") > 0);
	assert_true(jnum(j, "l1", "bytes") <= jnum(j, "l1", "capacity_bytes"));
	assert_true(jnum(j, "l2", "bytes") <= jnum(j, "l2", "capacity_bytes"));
	assert_true(jnum(j, NULL, "demotions") > 0);
	/* Compressed bf16 takes less room than raw. */
	assert_true(jnum(j, "l2", "raw_bytes") > jnum(j, "l2", "bytes"));
	free(j);

	/* MATCH sees blocks in every tier, and stops at a hole. */
	{
		const void *mk[NBLOCKS];
		size_t ml[NBLOCKS], matched = 0;
		char mb[NBLOCKS][32];

		for (unsigned i = 0; i < NBLOCKS; i++) {
			key_of(mb[i], sizeof(mb[i]), i);
			mk[i] = mb[i];
			ml[i] = strlen(mb[i]);
		}
		assert_int_equal(kvt_match(c, "t", mk, ml, NBLOCKS, &matched),
				 0);
		assert_int_equal(matched, NBLOCKS);
		assert_int_equal(kvt_match(c, "other", mk, ml, NBLOCKS,
					   &matched), 0);
		assert_int_equal(matched, 0);
	}

	/* PREFETCH block 0 (long gone to L3), then read it from RAM. */
	{
		char k0[32];
		const void *kp[1] = { k0 };
		size_t kl[1], started = 0, n0;

		key_of(k0, sizeof(k0), 0);
		kl[0] = strlen(k0);
		assert_int_equal(kvt_prefetch(c, "t", kp, kl, 1, &started), 0);
		assert_int_equal(started, 1);
		settle(c);
		assert_int_equal(kvt_get(c, "t", k0, kl[0], got, BLOCK, &n0), 0);
		make_block(want, 0);
		assert_memory_equal(got, want, BLOCK);
		j = stats(c);
		assert_int_equal(jnum(j, NULL, "prefetched"), 1);
		assert_int_equal(jnum(j, NULL, "prefetch_hits"), 1);
		free(j);
	}

	/* One MGET of every block: L3 reads of the batch go together. */
	{
		uint8_t *all = malloc((size_t)NBLOCKS * BLOCK);
		const void *keys[NBLOCKS];
		size_t klens[NBLOCKS], lens[NBLOCKS];
		struct iovec iov[NBLOCKS];
		char kb[NBLOCKS][32];
		int st[NBLOCKS];

		assert_non_null(all);
		for (unsigned i = 0; i < NBLOCKS; i++) {
			key_of(kb[i], sizeof(kb[i]), i);
			keys[i] = kb[i];
			klens[i] = strlen(kb[i]);
			iov[i].iov_base = all + (size_t)i * BLOCK;
			iov[i].iov_len = BLOCK;
		}
		assert_int_equal(kvt_mget(c, "t", keys, klens, NBLOCKS, iov,
					  lens, st), 0);
		for (unsigned i = 0; i < NBLOCKS; i++) {
			assert_int_equal(st[i], 0);
			make_block(want, i);
			assert_memory_equal(all + (size_t)i * BLOCK, want,
					    BLOCK);
		}
		free(all);
	}
	settle(c);

	/* Everything comes back, byte-identical, through promotions. */
	hits = read_all(c, want, got);
	if (hits != NBLOCKS) {
		j = stats(c);
		printf("only %u of %d blocks read back: %s\n", hits, NBLOCKS,
		       j);
		free(j);
	}
	assert_int_equal(hits, NBLOCKS);
	settle(c);
	j = stats(c);
	assert_true(jnum(j, NULL, "promotions") > 0);
	assert_true(jnum(j, "l3", "hits") > 0);
	free(j);
	kvt_close(c);

	/* Graceful restart: L1 and L2 spill into L3; nothing is lost. */
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);
	assert_int_equal(integ_start(&D, small_tiers), 0);
	c = connect_ok();
	assert_int_equal(read_all(c, want, got), NBLOCKS);
	settle(c);
	j = stats(c);
	uint64_t l3_before = jnum(j, "l3", "entries");
	free(j);
	kvt_close(c);

	/* kill -9: the committed L3 index is served, nothing else. */
	assert_int_equal(integ_stop_sig(&D, SIGKILL), 128 + SIGKILL);
	assert_int_equal(integ_start(&D, small_tiers), 0);
	c = connect_ok();
	j = stats(c);
	assert_int_equal(jnum(j, "l3", "entries"), l3_before);
	free(j);
	hits = read_all(c, want, got);
	assert_true(hits >= l3_before);
	kvt_close(c);
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);

	/* Flip one byte inside the first entry of the first region. */
	char path[400];
	uint8_t b;
	snprintf(path, sizeof(path), "%s/l3/region-00000.dat", D.data);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, 3000), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, 3000), 1);
	close(fd);

	/* --check finds the damage without a daemon running. */
	char cmd[1200];
	snprintf(cmd, sizeof(cmd),
		 "'%s' --check --data-dir '%s' --l1-size 8M --l2-size 8M "
		 "--l3-size 256M --l3-region-size 16M >'%s/check.txt' 2>&1",
		 integ_kvtierd(), D.data, D.dir);
	int st = system(cmd);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);

	/* The damaged block is a counted miss; every other one is intact. */
	assert_int_equal(integ_start(&D, small_tiers), 0);
	c = connect_ok();
	hits = read_all(c, want, got);
	assert_true(hits >= NBLOCKS - 1);
	assert_true(hits < NBLOCKS);
	j = stats(c);
	assert_int_equal(jnum(j, NULL, "l3_checksum_failures"), 1);
	assert_int_equal(jnum(j, NULL, "misses_corrupt"), 1);
	free(j);
	kvt_close(c);
	integ_cleanup(&D);
	free(want);
	free(got);
}

/* --l2-size 0 sends L1 victims straight to L3; --l3-size 0 is RAM only. */
static void test_disabled_tiers(void **state)
{
	static const char *const no_l2[] = { "--l1-size", "4M", "--l2-size",
					     "0", NULL };
	static const char *const ram_only[] = { "--l1-size", "4M",
						"--l2-size", "4M",
						"--l3-size", "0", NULL };
	uint8_t *want = malloc(BLOCK), *got = malloc(BLOCK);
	kvt_client *c;
	char *j;

	(void)state;
	assert_int_equal(integ_start(&D, no_l2), 0);
	c = connect_ok();
	for (unsigned i = 0; i < 16; i++) {
		char key[32];
		key_of(key, sizeof(key), i);
		make_block(want, i);
		assert_int_equal(kvt_put(c, "t", key, strlen(key), want, BLOCK,
					 NULL), 0);
	}
	settle(c);
	j = stats(c);
	assert_int_equal(jnum(j, "l2", "entries"), 0);
	assert_true(jnum(j, "l3", "entries") > 0);
	free(j);
	kvt_close(c);
	integ_cleanup(&D);

	assert_int_equal(integ_start(&D, ram_only), 0);
	c = connect_ok();
	for (unsigned i = 0; i < 16; i++) {
		char key[32];
		key_of(key, sizeof(key), i);
		make_block(want, i);
		assert_int_equal(kvt_put(c, "t", key, strlen(key), want, BLOCK,
					 NULL), 0);
	}
	settle(c);
	j = stats(c);
	assert_int_equal(jnum(j, "l3", "entries"), 0);
	assert_int_equal(jnum(j, "l3", "capacity_bytes"), 0);
	assert_true(jnum(j, NULL, "evictions") > 0);
	free(j);
	/* Whatever is still served is right. */
	unsigned hits = 0;
	for (unsigned i = 0; i < 16; i++) {
		char key[32];
		size_t n;
		key_of(key, sizeof(key), i);
		if (kvt_get(c, "t", key, strlen(key), got, BLOCK, &n) == 0) {
			make_block(want, i);
			assert_memory_equal(got, want, BLOCK);
			hits++;
		}
	}
	assert_true(hits > 0 && hits < 16);
	kvt_close(c);
	integ_cleanup(&D);
	free(want);
	free(got);
}


/* Tier of a key from `hot`: 1-3, 0 if not listed. */
static int hot_tier(kvt_client *c, const char *ns, const char *key)
{
	struct kvt_hot_entry *e = NULL;
	size_t n = 0;
	int tier = 0;

	assert_int_equal(kvt_hot(c, 1000, &e, &n), 0);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(e[i].ns, ns) && e[i].key_len == strlen(key) &&
		    !memcmp(e[i].key, key, e[i].key_len))
			tier = e[i].tier;
	kvt_hot_free(e);
	return tier;
}

/* Pins hold a block in RAM under pressure and end with the connection. */
static void test_pins_die_with_connection(void **state)
{
	uint8_t *blk = malloc(BLOCK);
	const void *kp[1] = { "pinme" };
	size_t kl[1] = { 5 }, pinned = 0;
	kvt_client *a, *b;
	char *j;

	(void)state;
	assert_int_equal(integ_start(&D, small_tiers), 0);
	a = connect_ok();
	b = connect_ok();
	make_block(blk, 500);
	assert_int_equal(kvt_put(a, "t", "pinme", 5, blk, BLOCK, NULL), 0);
	assert_int_equal(kvt_pin(a, "t", kp, kl, 1, &pinned), 0);
	assert_int_equal(pinned, 1);
	for (unsigned i = 0; i < 40; i++) {
		char key[32];
		key_of(key, sizeof(key), i);
		make_block(blk, i);
		assert_int_equal(kvt_put(b, "t", key, strlen(key), blk, BLOCK,
					 NULL), 0);
	}
	settle(b);
	assert_int_equal(hot_tier(b, "t", "pinme"), 1);
	j = stats(b);
	assert_int_equal(jnum(j, NULL, "pinned_keys"), 1);
	free(j);
	/* The pinning process goes away: the kernel tells the daemon. */
	kvt_close(a);
	for (int i = 0; i < 200; i++) {
		j = stats(b);
		uint64_t keys = jnum(j, NULL, "pinned_keys");
		free(j);
		if (keys == 0)
			break;
		integ_sleep_ms(10);
	}
	j = stats(b);
	assert_int_equal(jnum(j, NULL, "pinned_keys"), 0);
	assert_int_equal(jnum(j, NULL, "pinned_bytes"), 0);
	free(j);
	for (unsigned i = 40; i < 80; i++) {
		char key[32];
		key_of(key, sizeof(key), i);
		make_block(blk, i);
		assert_int_equal(kvt_put(b, "t", key, strlen(key), blk, BLOCK,
					 NULL), 0);
	}
	settle(b);
	assert_true(hot_tier(b, "t", "pinme") != 1);
	kvt_close(b);
	free(blk);
}

/* Runs even when an assertion failed: no daemon outlives its test. */
static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
}

/*
 * The arena's threads (warming ahead of use by default, prefaulting with
 * --shm-prefault) never take the daemon's signals: SIGTERM is a graceful
 * stop, exit 0, not a death by the signal's default action.
 */
static void test_stop_with_arena_threads(void **state)
{
	static const char *const warm[] = { "--l1-size", "64M", NULL };
	static const char *const prefault[] = { "--l1-size", "64M",
						"--shm-size", "4G",
						"--shm-prefault", NULL };
	const char *const *runs[] = { warm, prefault };
	uint8_t *v = malloc(BLOCK);

	(void)state;
	assert_non_null(v);
	for (unsigned r = 0; r < 2; r++) {
		kvt_client *c;

		assert_int_equal(integ_start(&D, runs[r]), 0);
		c = connect_ok();
		for (unsigned i = 0; i < 8; i++) {
			char key[32];

			key_of(key, sizeof(key), i);
			make_block(v, i);
			assert_int_equal(kvt_put(c, "t", key, strlen(key), v,
						 BLOCK, NULL), 0);
		}
		kvt_close(c);
		assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);
		integ_cleanup(&D);
	}
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_flow_restart_corrupt, teardown),
		cmocka_unit_test_teardown(test_disabled_tiers, teardown),
		cmocka_unit_test_teardown(test_stop_with_arena_threads,
					  teardown),
		cmocka_unit_test_teardown(test_pins_die_with_connection,
					  teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
