/*
 * test_admission.c - scan resistance through a real kvtierd (#13): a
 * one-pass read of a namespace four times the size of RAM does not flush
 * another namespace's hot set out of RAM.  Namespace A's 64 MiB, read
 * continuously, must stay at least 90% in L1 (counted per namespace in
 * `kvtier stats --json`, namespaces.A.l1_entries) while namespace B is read
 * once end to end; every block read is checked.  Also: the worker pool
 * reports itself, and --workers is checked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>

#include "integ_harness.h"
#include "integ_stats.h"
#include "kvtier.h"

#define BLOCK (2u << 20)
#define NA 32  /* 64 MiB */
#define NB 160 /* 320 MiB: four times L1 + L2 */

static struct integ_daemon D;
static const char *const tiers[] = {
	"--l1-size", "72M", "--l2-size", "8M", "--l3-size", "512M",
	"--l3-region-size", "16M", "--workers", "2", NULL
};

static void settle(kvt_client *c)
{
	for (int i = 0; i < 3000; i++) {
		char *j = stats(c);
		uint64_t pending = jnum(j, NULL, "jobs_pending");
		free(j);
		if (pending == 0)
			return;
		integ_sleep_ms(10);
	}
	fail_msg("jobs still pending after 30 s");
}

static uint64_t seed_of(char ns, unsigned i)
{
	return (uint64_t)(ns == 'A' ? 20000 : 10000) + i;
}

static void put_block(kvt_client *c, char ns, unsigned i, uint8_t *buf)
{
	char n[2] = { ns, 0 }, key[16];

	snprintf(key, sizeof(key), "%c%03u", ns, i);
	integ_fill(buf, BLOCK, seed_of(ns, i));
	assert_int_equal(kvt_put(c, n, key, strlen(key), buf, BLOCK, NULL), 0);
}

static void get_block(kvt_client *c, char ns, unsigned i, uint8_t *got,
		      uint8_t *want)
{
	char n[2] = { ns, 0 }, key[16];
	size_t len = 0;

	snprintf(key, sizeof(key), "%c%03u", ns, i);
	assert_int_equal(kvt_get(c, n, key, strlen(key), got, BLOCK, &len), 0);
	assert_int_equal(len, BLOCK);
	integ_fill(want, BLOCK, seed_of(ns, i));
	assert_memory_equal(got, want, BLOCK);
}

static void test_scan_keeps_hot_set(void **state)
{
	uint8_t *a = malloc(BLOCK), *b = malloc(BLOCK);
	uint64_t min_res = UINT64_MAX;
	kvt_client *c = NULL;
	char *j;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(integ_start(&D, tiers), 0);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	for (unsigned i = 0; i < NB; i++)
		put_block(c, 'B', i, a);
	settle(c);
	for (unsigned i = 0; i < NA; i++)
		put_block(c, 'A', i, a);
	settle(c);
	j = stats(c);
	assert_int_equal(jnum(j, "A", "l1_entries"), NA);
	assert_int_equal(jnum(j, "B", "entries"), NB);
	assert_int_equal(jnum(j, "pool", "workers"), 2);
	free(j);
	for (unsigned i = 0; i < NB; i++) {
		get_block(c, 'B', i, a, b);
		get_block(c, 'A', i % NA, a, b);
		if (i % 8 == 7) {
			j = stats(c);
			uint64_t r = jnum(j, "A", "l1_entries");
			free(j);
			min_res = r < min_res ? r : min_res;
		}
	}
	settle(c);
	j = stats(c);
	printf("admission: %u MiB of B read once through 80 MiB of RAM; A's "
	       "%u blocks in L1 at least %" PRIu64 "; promotions admitted "
	       "%" PRIu64 ", bypassed %" PRIu64 "\n", NB * 2, NA, min_res,
	       jnum(j, NULL, "promotions_admitted"),
	       jnum(j, NULL, "promotions_bypassed"));
	assert_true(min_res * 10 >= NA * 9);
	assert_true(jnum(j, NULL, "promotions_bypassed") >= NB - NA);
	/* The pool did the work and says so. */
	assert_true(jnum(j, "pool", "jobs") > 0);
	assert_true(jnum(j, "pool", "busy_ns") > 0);
	assert_true(jnum(j, "cpu", "jobs") > 0);
	assert_true(jnum(j, "l3_write", "jobs") > 0);
	assert_int_equal(jnum(j, "l3_write", "queued"), 0);
	free(j);
	kvt_close(c);
	integ_cleanup(&D);
	free(a);
	free(b);
}

/* --workers: out of range is a usage error; 1 runs. */
static void test_workers_flag(void **state)
{
	static const char *const one[] = { "--workers", "1", "--l3-size", "0",
					   NULL };
	static const char *const many[] = { "--workers", "17", NULL };
	struct integ_daemon d = { 0 };
	kvt_client *c = NULL;
	char *j;
	int status = 0;

	(void)state;
	assert_int_equal(integ_spawn(&d, many), 0);
	assert_int_equal(waitpid(d.pid, &status, 0), d.pid);
	d.pid = 0;
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
	integ_cleanup(&d);
	assert_int_equal(integ_start(&d, one), 0);
	assert_int_equal(kvt_connect(&c, d.sock), 0);
	j = stats(c);
	assert_int_equal(jnum(j, "pool", "workers"), 1);
	free(j);
	kvt_close(c);
	integ_cleanup(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scan_keeps_hot_set),
		cmocka_unit_test(test_workers_flag),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
