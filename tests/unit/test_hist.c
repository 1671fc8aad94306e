/* test_hist.c - latency histogram buckets and quantiles. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kvt_hist.h"

static void test_empty(void **state)
{
	struct kvt_hist h;

	(void)state;
	memset(&h, 0, sizeof(h));
	assert_int_equal(kvt_hist_quantile(&h, 0.5), 0);
}

/* Small values are exact. */
static void test_exact_small(void **state)
{
	struct kvt_hist h;

	(void)state;
	memset(&h, 0, sizeof(h));
	for (uint64_t v = 0; v < 16; v++)
		kvt_hist_add(&h, v);
	assert_int_equal(h.count, 16);
	assert_int_equal(kvt_hist_quantile(&h, 0.5), 7);
	assert_int_equal(kvt_hist_quantile(&h, 1.0), 15);
}

/* Every quantile is within 12.5% above the true value. */
static void test_error_bound(void **state)
{
	static struct kvt_hist h;

	(void)state;
	for (uint64_t v = 1; v < (1ull << 30); v = v * 3 / 2 + 1) {
		memset(&h, 0, sizeof(h));
		kvt_hist_add(&h, v);
		uint64_t q = kvt_hist_quantile(&h, 0.99);
		assert_true(q >= v);
		assert_true((double)q <= (double)v * 1.125 + 1);
	}
}

/* p50 and p99 of a known distribution: 99 fast samples, 1 slow one. */
static void test_quantiles(void **state)
{
	static struct kvt_hist h;

	(void)state;
	memset(&h, 0, sizeof(h));
	for (int i = 0; i < 990; i++)
		kvt_hist_add(&h, 100);
	for (int i = 0; i < 10; i++)
		kvt_hist_add(&h, 100000);
	assert_true(kvt_hist_quantile(&h, 0.5) >= 100);
	assert_true(kvt_hist_quantile(&h, 0.5) < 113);
	assert_true(kvt_hist_quantile(&h, 0.99) < 113);
	assert_true(kvt_hist_quantile(&h, 0.999) >= 100000);
	/* Huge values land in the last bucket instead of overflowing. */
	kvt_hist_add(&h, UINT64_MAX / 2);
	assert_true(kvt_hist_quantile(&h, 1.0) > 100000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_exact_small),
		cmocka_unit_test(test_error_bound),
		cmocka_unit_test(test_quantiles),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
