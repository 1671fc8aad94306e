/*
 * test_spin.c - unit tests for proto/kvt_spin.c, the adaptive busy-poll
 * window.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>

#include "kvt_clock.h"
#include "kvt_spin.h"

#define US 1000ull
#define MS 1000000ull

static void test_disabled(void **state)
{
	struct kvt_spin s;

	(void)state;
	kvt_spin_init(&s, 0);
	assert_int_equal(kvt_spin_window(&s, 0), 0);
	kvt_spin_done(&s, 0, false, false, 10 * US, 1 * MS);
	assert_int_equal(kvt_spin_window(&s, 2 * MS), 0);
	assert_int_equal(s.polls, 0);
}

static void test_hit_keeps_window(void **state)
{
	struct kvt_spin s;

	(void)state;
	kvt_spin_init(&s, 50 * US);
	assert_int_equal(kvt_spin_window(&s, 0), 50 * US);
	for (int i = 0; i < 100; i++)
		kvt_spin_done(&s, 20 * US, true, false, 0, (uint64_t)i * MS);
	assert_int_equal(kvt_spin_window(&s, 100 * MS), 50 * US);
	assert_int_equal(s.polls, 100);
	assert_int_equal(s.hits, 100);
	assert_int_equal(s.backoffs, 0);
}

static void test_idle_shrinks_to_zero_then_regrows(void **state)
{
	struct kvt_spin s;
	uint64_t now = 0, prev;
	int steps = 0;

	(void)state;
	kvt_spin_init(&s, 50 * US);
	/* Long waits: each halves the window, down to 0. */
	while (kvt_spin_window(&s, now) > 0) {
		prev = kvt_spin_window(&s, now);
		now += 10 * MS;
		kvt_spin_done(&s, prev, false, false, 10 * MS, now);
		assert_true(kvt_spin_window(&s, now) < prev);
		steps++;
	}
	assert_int_equal(steps, 6); /* 50 25 12.5 6.25 3.1 1.6 -> 0 */
	assert_int_equal(s.hits, 0);
	/* Idle at 0: a long wait without polling keeps it at 0. */
	kvt_spin_done(&s, 0, false, false, 10 * MS, now += 10 * MS);
	assert_int_equal(kvt_spin_window(&s, now), 0);
	/* A short wait: polling would have caught it; it starts again. */
	kvt_spin_done(&s, 0, false, false, 12 * US, now += 12 * US);
	assert_int_equal(kvt_spin_window(&s, now), KVT_SPIN_START_NS);
	kvt_spin_done(&s, KVT_SPIN_START_NS, false, false, 5 * US, now);
	assert_int_equal(kvt_spin_window(&s, now), 2 * KVT_SPIN_START_NS);
	/* Growth stops at the maximum. */
	for (int i = 0; i < 10; i++)
		kvt_spin_done(&s, kvt_spin_window(&s, now), false, false,
			      1 * US, now);
	assert_int_equal(kvt_spin_window(&s, now), 50 * US);
}

static void test_wait_just_past_max_shrinks(void **state)
{
	struct kvt_spin s;

	(void)state;
	kvt_spin_init(&s, 50 * US);
	/* Polled 50 us, then blocked 1 us: a 51 us event is too far. */
	kvt_spin_done(&s, 50 * US, false, false, 1 * US, 1 * MS);
	assert_int_equal(kvt_spin_window(&s, 1 * MS), 25 * US);
	/* Polled 25 us, blocked 25 us: within 50, grow. */
	kvt_spin_done(&s, 25 * US, false, false, 25 * US, 2 * MS);
	assert_int_equal(kvt_spin_window(&s, 2 * MS), 50 * US);
}

static void test_preempted_backs_off(void **state)
{
	struct kvt_spin s;
	uint64_t now = 5 * MS;

	(void)state;
	kvt_spin_init(&s, 50 * US);
	/* A preemption now and then (a timer tick) changes nothing. */
	for (int i = 0; i < 10 * KVT_SPIN_PREEMPT_OF; i++)
		kvt_spin_done(&s, 10 * US, true,
			      i % KVT_SPIN_PREEMPT_OF <
				      KVT_SPIN_PREEMPT_LIMIT - 1,
			      0, now);
	assert_int_equal(s.backoffs, 0);
	assert_int_equal(kvt_spin_window(&s, now), 50 * US);
	/* Preempted in most polls: no polling for the back-off time. */
	for (int i = 0; i < KVT_SPIN_PREEMPT_LIMIT; i++)
		kvt_spin_done(&s, 50 * US, true, true, 0, now);
	assert_int_equal(s.backoffs, 1);
	assert_int_equal(kvt_spin_window(&s, now), 0);
	/* Short waits during the back-off do not bring polling back. */
	for (int i = 0; i < 10; i++)
		kvt_spin_done(&s, 0, false, false, 1 * US, now += MS);
	assert_int_equal(kvt_spin_window(&s, now), 0);
	assert_int_equal(kvt_spin_window(&s, 5 * MS + KVT_SPIN_BACKOFF_NS - 1),
			 0);
	/* After it, short waits grow the window from the start. */
	now = 5 * MS + KVT_SPIN_BACKOFF_NS;
	kvt_spin_done(&s, 0, false, false, 1 * US, now);
	assert_int_equal(kvt_spin_window(&s, now), KVT_SPIN_START_NS);
}

static void test_clock_and_nivcsw(void **state)
{
	uint64_t a, b;
	long n;

	(void)state;
	a = kvt_clock_ns();
	b = kvt_clock_ns();
	assert_true(a > 0);
	assert_true(b >= a);
	n = kvt_spin_nivcsw();
	assert_true(n >= 0);
	sched_yield();
	assert_true(kvt_spin_nivcsw() >= n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_disabled),
		cmocka_unit_test(test_hit_keeps_window),
		cmocka_unit_test(test_idle_shrinks_to_zero_then_regrows),
		cmocka_unit_test(test_wait_just_past_max_shrinks),
		cmocka_unit_test(test_preempted_backs_off),
		cmocka_unit_test(test_clock_and_nivcsw),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
