/*
 * test_misuse.c - a kvt_client misused the two ways issue #17 found (breaks
 * 5 and 9) fails at once with a clear error instead of reading another
 * request's reply:
 *
 *   - in a child after fork(), every call on an inherited handle returns
 *     KVT_EFORKED without touching the parent's connection, also when a
 *     parent's thread was in a call at the fork; the child's own
 *     connections (and their mapping of the arena) work, also when another
 *     thread was connecting at the fork;
 *   - a call while another thread is in one on the same handle returns
 *     KVT_ECONCURRENT at once, leaving the handle and that call alone.
 *
 * A call is held "in progress" deterministically by stopping the daemon
 * (SIGSTOP) while a thread waits for its reply.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "integ_harness.h"
#include "kvtier.h"

#define NS "misuse"
#define SMALL 4096
#define BIG (1u << 20) /* over the shared-memory thresholds: leases, slots */

static struct integ_daemon D;

static int teardown(void **state)
{
	(void)state;
	if (D.pid > 0)
		kill(D.pid, SIGCONT);
	integ_cleanup(&D);
	return 0;
}

static kvt_client *start_and_fill(void)
{
	static uint8_t v[BIG];
	kvt_client *c = NULL;

	assert_int_equal(integ_start(&D, NULL), 0);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	integ_fill(v, SMALL, 1);
	assert_int_equal(kvt_put(c, NS, "small", 5, v, SMALL, NULL), 0);
	integ_fill(v, BIG, 2);
	assert_int_equal(kvt_put(c, NS, "big", 3, v, BIG, NULL), 0);
	return c;
}

/* 1 if key holds len bytes of integ_fill(seed), read through c. */
static int reads_back(kvt_client *c, const char *key, size_t len,
		      uint64_t seed)
{
	static uint8_t want[BIG], got[BIG];
	size_t n = 0;

	if (kvt_get(c, NS, key, strlen(key), got, sizeof(got), &n) != 0 ||
	    n != len)
		return 0;
	integ_fill(want, len, seed);
	return memcmp(got, want, len) == 0;
}

/* Waits for child pid; returns its exit code, or 128 + signal. */
static int child_status(pid_t pid)
{
	int st = 0;

	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- fork() ---------------------------------------------------------- */

/* What a child saw, as its exit code (0 = as promised). */
enum {
	CH_OK = 0,
	CH_GOT_DATA,	  /* the inherited handle answered a GET */
	CH_OTHER_ERROR,	  /* ... failed, but not with KVT_EFORKED */
	CH_NO_FORK_MSG,	  /* ... KVT_EFORKED without "fork" in the message */
	CH_BATCH,	  /* kvt_mget on it: not KVT_EFORKED everywhere */
	CH_NOT_BROKEN,	  /* kvt_client_broken() said usable */
	CH_OWN_CONNECT,	  /* the child's own connection failed */
	CH_OWN_DATA,	  /* ... or read wrong bytes, or could not put */
};

static const char *child_says(int code)
{
	switch (code) {
	case CH_OK: return "as promised";
	case CH_GOT_DATA: return "the inherited handle returned data";
	case CH_OTHER_ERROR: return "the inherited handle failed, not with "
				    "KVT_EFORKED";
	case CH_NO_FORK_MSG: return "KVT_EFORKED without a message naming "
				    "fork";
	case CH_BATCH: return "kvt_mget on the inherited handle";
	case CH_NOT_BROKEN: return "kvt_client_broken() said usable";
	case CH_OWN_CONNECT: return "the child's own kvt_connect() failed";
	case CH_OWN_DATA: return "the child's own connection read or wrote "
				 "wrong";
	case 128 + SIGALRM: return "the child hung (killed by its alarm)";
	}
	return "the child died";
}

static int child_main(kvt_client *inherited)
{
	static uint8_t v[BIG];
	const void *keys[2] = { "small", "big" };
	size_t lens[2] = { 5, 3 }, vl[2] = { 9, 9 };
	struct iovec bufs[2] = { { v, SMALL }, { v, BIG } };
	int st[2] = { 0, 0 };
	kvt_client *own = NULL;
	size_t n = 0;
	int rc;

	alarm(10);
	rc = kvt_get(inherited, NS, "small", 5, v, sizeof(v), &n);
	if (rc == 0)
		return CH_GOT_DATA;
	if (rc != KVT_EFORKED)
		return CH_OTHER_ERROR;
	if (!strstr(kvt_client_errmsg(inherited), "fork"))
		return CH_NO_FORK_MSG;
	if (kvt_ping(inherited) != KVT_EFORKED)
		return CH_OTHER_ERROR;
	if (kvt_mget(inherited, NS, keys, lens, 2, bufs, vl, st) !=
		    KVT_EFORKED ||
	    st[0] != KVT_EFORKED || st[1] != KVT_EFORKED || vl[0] || vl[1])
		return CH_BATCH;
	if (!kvt_client_broken(inherited))
		return CH_NOT_BROKEN;
	/* The child's copy only: the parent's connection must not notice. */
	kvt_close(inherited);

	if (kvt_connect(&own, D.sock) != 0 || kvt_client_shm(own) != 1)
		return CH_OWN_CONNECT;
	integ_fill(v, BIG, 3);
	if (!reads_back(own, "big", BIG, 2) || !reads_back(own, "small", SMALL, 1)
	    || kvt_put(own, NS, "child", 5, v, BIG, NULL) != 0)
		return CH_OWN_DATA;
	kvt_close(own);
	return CH_OK;
}

/*
 * Break 5: a child's GET through the parent's handle used to go out on
 * the parent's socket and return whatever reply came (here the right one,
 * as the parent is idle; in the issue, racing the parent, another key's).
 */
static void test_fork_child_refused(void **state)
{
	kvt_client *c = start_and_fill();
	pid_t pid;
	int code;

	(void)state;
	assert_int_equal(kvt_client_shm(c), 1);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_main(c));
	code = child_status(pid);
	if (code != CH_OK)
		fail_msg("child: %s (exit %d)", child_says(code), code);
	/* The parent's handle never noticed, and sees the child's put. */
	assert_false(kvt_client_broken(c));
	assert_int_equal(kvt_ping(c), 0);
	assert_true(reads_back(c, "small", SMALL, 1));
	assert_true(reads_back(c, "big", BIG, 2));
	assert_true(reads_back(c, "child", BIG, 3));
	kvt_close(c);
}

/* A call held in progress: kvt_ping() on a stopped daemon. */
struct held {
	kvt_client *c;
	atomic_int started;
	int rc;
};

static void *held_ping(void *arg)
{
	struct held *h = arg;

	atomic_store(&h->started, 1);
	h->rc = kvt_ping(h->c);
	return NULL;
}

/* Starts h's thread with the daemon stopped; returns once it is waiting. */
static void hold_call(struct held *h, pthread_t *th)
{
	assert_int_equal(kill(D.pid, SIGSTOP), 0);
	assert_int_equal(pthread_create(th, NULL, held_ping, h), 0);
	while (!atomic_load(&h->started))
		integ_sleep_ms(1);
	/* From "started" to waiting in recv() is a few microseconds. */
	integ_sleep_ms(200);
}

/*
 * fork() while a parent's thread is in a call: the child's copy of the
 * handle looks busy for ever; its calls must still say KVT_EFORKED, at
 * once (they used to send on the parent's socket and wait).
 */
static void test_fork_during_call(void **state)
{
	struct held h = { 0 };
	pthread_t th;
	pid_t pid;
	int code;

	(void)state;
	h.c = start_and_fill();
	hold_call(&h, &th);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(5);
		code = kvt_ping(h.c);
		_exit(code == KVT_EFORKED ? 0 : code == 0 ? 1 : 2);
	}
	code = child_status(pid);
	kill(D.pid, SIGCONT);
	assert_int_equal(pthread_join(th, NULL), 0);
	if (code != 0)
		fail_msg("child's kvt_ping: %s (exit %d)",
			 code == 1 ? "succeeded" : code == 2 ? "another error"
			 : code == 128 + SIGALRM ? "hung" : "died", code);
	assert_int_equal(h.rc, 0);
	assert_int_equal(kvt_ping(h.c), 0);
	kvt_close(h.c);
}

/* Connects, reads the big value and closes, until told to stop. */
struct churn {
	atomic_int stop;
	int errors;
};

static void *churn_main(void *arg)
{
	struct churn *ch = arg;

	while (!atomic_load(&ch->stop)) {
		kvt_client *c = NULL;

		if (kvt_connect(&c, D.sock) != 0 || !reads_back(c, "big", BIG, 2))
			ch->errors++;
		kvt_close(c);
	}
	return NULL;
}

/*
 * fork() while another thread maps the arena (kvt_connect) must not leave
 * the process's mapping lock held in the child: each child connects,
 * reads through the arena and exits within its alarm.
 */
static void test_fork_while_connecting(void **state)
{
	struct churn ch = { 0 };
	kvt_client *c = start_and_fill();
	pthread_t th;
	int bad = 0, code = 0, forks;

	(void)state;
#ifdef __SANITIZE_ADDRESS__
	/*
	 * GCC 12's AddressSanitizer does not hold its allocator's locks
	 * across fork(): a child forked while the churning thread is inside
	 * malloc deadlocks in ASan's calloc before it reaches kvtier (seen:
	 * 3 of 5 runs, the child's stack in SizeClassAllocator64::
	 * GetFromAllocator).  glibc's malloc is fork-safe, so the test runs
	 * in make test and make tsan; under ASan it says so and skips.
	 */
	print_message("skipped under AddressSanitizer: its allocator is not "
		      "fork-safe with other threads allocating (GCC 12)\n");
	kvt_close(c);
	skip();
#endif
	/* Only the churning thread's connections hold the mapping. */
	kvt_close(c);
	assert_int_equal(pthread_create(&th, NULL, churn_main, &ch), 0);
	/* Measured on the dev VM: without the fix a child hangs within 150. */
	for (forks = 0; forks < 300 && !bad; forks++) {
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			kvt_client *own = NULL;

			alarm(3);
			if (kvt_connect(&own, D.sock) != 0 ||
			    kvt_client_shm(own) != 1 ||
			    !reads_back(own, "big", BIG, 2))
				_exit(1);
			kvt_close(own);
			_exit(0);
		}
		code = child_status(pid);
		bad = code != 0;
	}
	atomic_store(&ch.stop, 1);
	assert_int_equal(pthread_join(th, NULL), 0);
	if (bad)
		fail_msg("fork %d: the child %s (exit %d)", forks,
			 code == 128 + SIGALRM ? "hung in kvt_connect" :
			 "failed", code);
	assert_int_equal(ch.errors, 0);
}

/* ---- Threads --------------------------------------------------------- */

struct second {
	kvt_client *c;
	int ping, get, mget, st[2];
	size_t get_len, vl[2];
	char msg[256];
};

static void *second_main(void *arg)
{
	struct second *s = arg;
	uint8_t b[16];
	const void *keys[2] = { "small", "big" };
	size_t lens[2] = { 5, 3 };
	struct iovec bufs[2] = { { b, sizeof(b) }, { b, sizeof(b) } };

	s->ping = kvt_ping(s->c);
	s->get_len = 7;
	s->get = kvt_get(s->c, NS, "small", 5, b, sizeof(b), &s->get_len);
	s->vl[0] = s->vl[1] = 7;
	s->mget = kvt_mget(s->c, NS, keys, lens, 2, bufs, s->vl, s->st);
	snprintf(s->msg, sizeof(s->msg), "%s", kvt_client_errmsg(s->c));
	/* Must leave the handle to the call in progress, not free it. */
	kvt_close(s->c);
	return NULL;
}

/*
 * Break 9: a second thread's calls on a handle used to interleave with the
 * first's on one socket and one receive buffer (wrong replies, both
 * waiting for one reply for ever).  Now they return KVT_ECONCURRENT at
 * once, the first call completes normally, and the handle's message is
 * still the one of its last own failure.
 */
static void test_concurrent_call_refused(void **state)
{
	struct held h = { 0 };
	struct second s = { 0 };
	pthread_t th, th2;
	struct timespec until;
	size_t n;
	int rc;

	(void)state;
	h.c = start_and_fill();
	assert_int_equal(kvt_get(h.c, NS, "", 0, NULL, 0, &n), KVT_EINVAL);
	assert_string_equal(kvt_client_errmsg(h.c), "key is empty");
	hold_call(&h, &th);
	s.c = h.c;
	assert_int_equal(pthread_create(&th2, NULL, second_main, &s), 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3;
	rc = pthread_timedjoin_np(th2, NULL, &until);
	kill(D.pid, SIGCONT);
	if (rc != 0)
		fail_msg("the second thread's calls did not return within 3 s "
			 "(the daemon stopped, the first thread in a call)");
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(s.ping, KVT_ECONCURRENT);
	assert_int_equal(s.get, KVT_ECONCURRENT);
	assert_int_equal(s.get_len, 0);
	assert_int_equal(s.mget, KVT_ECONCURRENT);
	assert_int_equal(s.st[0], KVT_ECONCURRENT);
	assert_int_equal(s.st[1], KVT_ECONCURRENT);
	assert_int_equal(s.vl[0], 0);
	assert_int_equal(s.vl[1], 0);
	assert_string_equal(s.msg, "key is empty");
	assert_string_equal(kvt_strerror(KVT_ECONCURRENT),
			    "connection in use by another thread");
	/* The first call, and the handle, are unharmed. */
	assert_int_equal(h.rc, 0);
	assert_false(kvt_client_broken(h.c));
	assert_string_equal(kvt_client_errmsg(h.c), "key is empty");
	assert_true(reads_back(h.c, "big", BIG, 2));
	kvt_close(h.c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_fork_child_refused, teardown),
		cmocka_unit_test_teardown(test_fork_during_call, teardown),
		cmocka_unit_test_teardown(test_fork_while_connecting, teardown),
		cmocka_unit_test_teardown(test_concurrent_call_refused,
					  teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
