/* test_ghost.c - the bounded ghost memory of evicted keys. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "kvt_ghost.h"
#include "kvtier_errors.h"

static void test_remembers_recent(void **state)
{
	struct kvt_ghost *g;
	uint64_t v;

	(void)state;
	assert_int_equal(kvt_ghost_new(&g, 1000), 0);
	for (uint64_t h = 1; h <= 400; h++)
		kvt_ghost_put(g, h * 0x9E3779B97F4A7C15ull, h);
	for (uint64_t h = 1; h <= 400; h++) {
		assert_true(kvt_ghost_get(g, h * 0x9E3779B97F4A7C15ull, &v));
		assert_int_equal(v, h);
	}
	assert_false(kvt_ghost_get(g, 12345, &v));
	/* A newer value replaces the older one. */
	kvt_ghost_put(g, 7 * 0x9E3779B97F4A7C15ull, 777);
	assert_true(kvt_ghost_get(g, 7 * 0x9E3779B97F4A7C15ull, &v));
	assert_int_equal(v, 777);
	kvt_ghost_free(g);
}

/* Bounded: after many more keys than capacity, the oldest are gone and the
 * newest capacity/2 are all still there. */
static void test_bounded(void **state)
{
	struct kvt_ghost *g;
	size_t old = 0;

	(void)state;
	assert_int_equal(kvt_ghost_new(&g, 1000), 0);
	for (uint64_t h = 1; h <= 100000; h++)
		kvt_ghost_put(g, h * 0x9E3779B97F4A7C15ull, h);
	for (uint64_t h = 1; h <= 1000; h++)
		old += kvt_ghost_get(g, h * 0x9E3779B97F4A7C15ull, NULL);
	assert_int_equal(old, 0);
	for (uint64_t h = 100000 - 499; h <= 100000; h++)
		assert_true(kvt_ghost_get(g, h * 0x9E3779B97F4A7C15ull, NULL));
	/* Hash 0 is usable (mapped internally). */
	kvt_ghost_put(g, 0, 5);
	assert_true(kvt_ghost_get(g, 0, NULL));
	kvt_ghost_free(g);
	kvt_ghost_free(NULL);
	assert_int_equal(kvt_ghost_new(&g, 1), KVT_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_remembers_recent),
		cmocka_unit_test(test_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
