/*
 * test_busy_poll.c - busy polling (kvt_spin.h) in the daemon's event loop
 * (--busy-poll) and in the client library (KVTIER_SPIN_US).
 *
 * Polling is a speed measure, so what is tested here is what must hold
 * whatever it does to speed: every path returns the same bytes with the
 * client polling or not (including large replies read in pieces by the
 * polled nonblocking recv), the stats report the setting and the polls,
 * --busy-poll 0 never polls, a bad value is refused at start, and an idle
 * daemon does not keep a core busy (the adaptive window shrinks away).
 * The speed itself is measured by tests/bench/compare.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <sys/uio.h>

#include "integ_harness.h"
#include "integ_stats.h"
#include "kvtier.h"

static struct integ_daemon D;

static uint64_t poll_stat(const char *json, const char *name)
{
	uint64_t v = 0;

	assert_int_equal(integ_json_u64(json, "busy_poll", name, &v), 0);
	return v;
}

/* utime + stime of pid, in clock ticks. */
static unsigned long long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long ut = 0, st = 0;
	FILE *f;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	/* Fields after the command, which may hold spaces: state is 3rd. */
	p = strrchr(buf, ')');
	assert_non_null(p);
	assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u "
				       "%*u %*u %llu %llu", &ut, &st), 2);
	return ut + st;
}

/*
 * Stores values of several sizes (around the 4 KiB read buffer and the
 * 64 KiB shared-memory threshold, and a 3 MiB one that arrives in pieces)
 * and reads each back through get, get_alloc and mget with the client's
 * polling set by spin ("" = unset) and shared memory on or off.
 */
static void roundtrip(const char *spin, const char *shm)
{
	static const size_t sizes[] = { 0, 1, 4095, 4096, 4097, 65535,
					65536, (3u << 20) + 7 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	size_t big = (3u << 20) + 7;
	uint8_t *want = malloc(big), *got = malloc(big);
	char keys[N][16];
	const void *kp[N];
	size_t kl[N], lens[N];
	struct iovec bufs[N];
	int st[N];
	kvt_client *c = NULL;

	assert_non_null(want);
	assert_non_null(got);
	if (*spin)
		setenv("KVTIER_SPIN_US", spin, 1);
	else
		unsetenv("KVTIER_SPIN_US");
	setenv("KVTIER_SHM", shm, 1);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	for (size_t i = 0; i < N; i++) {
		size_t n = 0;
		void *a = NULL;

		snprintf(keys[i], sizeof(keys[i]), "k%zu-%s", i, shm);
		integ_fill(want, sizes[i], i * 7 + 1);
		assert_int_equal(kvt_put(c, "bp", keys[i], strlen(keys[i]),
					 want, sizes[i], NULL), 0);
		memset(got, 0xee, big);
		assert_int_equal(kvt_get(c, "bp", keys[i], strlen(keys[i]),
					 got, big, &n), 0);
		assert_int_equal(n, sizes[i]);
		assert_memory_equal(got, want, sizes[i]);
		assert_int_equal(kvt_get_alloc(c, "bp", keys[i],
					       strlen(keys[i]), &a, &n), 0);
		assert_int_equal(n, sizes[i]);
		if (sizes[i])
			assert_memory_equal(a, want, sizes[i]);
		free(a);
		kp[i] = keys[i];
		kl[i] = strlen(keys[i]);
		bufs[i].iov_len = sizes[i] + 1;
		bufs[i].iov_base = malloc(bufs[i].iov_len);
		assert_non_null(bufs[i].iov_base);
	}
	/* A miss is still a miss. */
	{
		size_t n = 1;

		assert_int_equal(kvt_get(c, "bp", "absent", 6, got, big, &n),
				 KVT_ENOTFOUND);
		assert_int_equal(n, 0);
	}
	assert_int_equal(kvt_mget(c, "bp", kp, kl, N, bufs, lens, st), 0);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(st[i], 0);
		assert_int_equal(lens[i], sizes[i]);
		integ_fill(want, sizes[i], i * 7 + 1);
		assert_memory_equal(bufs[i].iov_base, want, sizes[i]);
		free(bufs[i].iov_base);
	}
	kvt_close(c);
	unsetenv("KVTIER_SPIN_US");
	unsetenv("KVTIER_SHM");
	free(want);
	free(got);
}

static void test_same_bytes_polled_or_not(void **state)
{
	static const char *const spins[] = { "", "0", "50", "10000",
					     "garbage", "99999999" };
	kvt_client *c = NULL;
	char *json;

	(void)state;
	assert_int_equal(integ_start(&D, NULL), 0);
	for (size_t i = 0; i < sizeof(spins) / sizeof(spins[0]); i++) {
		roundtrip(spins[i], "1");
		roundtrip(spins[i], "0");
	}
	/* The daemon polled (default 50 us), and found work doing so. */
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	json = stats(c);
	assert_int_equal(poll_stat(json, "max_us"), 50);
	assert_true(poll_stat(json, "window_us") <= 50);
	assert_true(poll_stat(json, "polls") > 0);
	assert_true(poll_stat(json, "hits") <= poll_stat(json, "polls"));
	assert_true(poll_stat(json, "preempts") <= poll_stat(json, "polls"));
	/* Under valgrind a request may never come within a poll. */
	if (!integ_wrapper())
		assert_true(poll_stat(json, "hits") > 0);
	free(json);
	kvt_close(c);
	integ_cleanup(&D);
}

static void test_idle_daemon_stays_idle(void **state)
{
	unsigned long long t0, t1;
	kvt_client *c = NULL;
	uint8_t v[4096];
	size_t n;

	(void)state;
	assert_int_equal(integ_start(&D, NULL), 0);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	memset(v, 7, sizeof(v));
	assert_int_equal(kvt_put(c, NULL, "k", 1, v, sizeof(v), NULL), 0);
	for (int i = 0; i < 2000; i++)
		assert_int_equal(kvt_get(c, NULL, "k", 1, v, sizeof(v), &n), 0);
	/* The connection stays open, but nothing comes. */
	integ_sleep_ms(300);
	t0 = cpu_ticks(D.pid);
	integ_sleep_ms(2000);
	t1 = cpu_ticks(D.pid);
	/*
	 * A loop that kept polling would use about 200 ticks (a core for
	 * 2 s at 100 Hz); an idle one uses close to none.
	 */
	print_message("idle daemon: %llu CPU ticks in 2 s\n", t1 - t0);
	assert_true(t1 - t0 <= 20);
	kvt_close(c);
	integ_cleanup(&D);
}

static void test_busy_poll_off(void **state)
{
	static const char *const off[] = { "--busy-poll", "0", NULL };
	kvt_client *c = NULL;
	uint8_t v[100] = { 1 };
	char *json;
	size_t n;

	(void)state;
	assert_int_equal(integ_start(&D, off), 0);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	assert_int_equal(kvt_put(c, NULL, "k", 1, v, sizeof(v), NULL), 0);
	for (int i = 0; i < 500; i++)
		assert_int_equal(kvt_get(c, NULL, "k", 1, v, sizeof(v), &n), 0);
	json = stats(c);
	assert_int_equal(poll_stat(json, "max_us"), 0);
	assert_int_equal(poll_stat(json, "window_us"), 0);
	assert_int_equal(poll_stat(json, "polls"), 0);
	assert_int_equal(poll_stat(json, "hits"), 0);
	free(json);
	kvt_close(c);
	integ_cleanup(&D);
}

static void test_bad_value_refused(void **state)
{
	static const char *const bad[] = { "--busy-poll", "10001", NULL };
	char log[PATH_MAX], buf[4096] = "";
	int status = 0;
	size_t n;
	FILE *f;

	(void)state;
	snprintf(log, sizeof(log), "/tmp/kvtier-bp-%d.log", (int)getpid());
	unlink(log);
	D.log_path = log;
	assert_int_equal(integ_spawn(&D, bad), 0);
	assert_int_equal(waitpid(D.pid, &status, 0), D.pid);
	D.pid = 0;
	D.log_path = NULL;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	f = fopen(log, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	unlink(log);
	assert_non_null(strstr(buf, "--busy-poll must be 0 to 10000"));
	integ_cleanup(&D);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_bytes_polled_or_not),
		cmocka_unit_test(test_idle_daemon_stays_idle),
		cmocka_unit_test(test_busy_poll_off),
		cmocka_unit_test(test_bad_value_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
