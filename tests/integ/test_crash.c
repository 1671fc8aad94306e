/*
 * test_crash.c - crash safety of a real kvtierd with tiny tiers: kill -9 at
 * a random moment under a mixed load, again and again on the same data
 * folder.  After every kill, `kvtierd --check` must find the L3 index and
 * region files consistent, the daemon must start again, and every get must
 * be a miss or exactly the bytes that were put (README, "Guarantees").
 *
 * Keys are derived from content: a key is the hex of a 64-bit hash and the
 * value is generated from that hash alone, so any hit can be checked
 * against its key without remembering what was put, across restarts.
 *
 * KVTIER_CRASH_ITERS sets the number of kills (default 8),
 * KVTIER_CRASH_SEED the seed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>

#include "integ_harness.h"
#include "kvtier.h"

#define NTHREADS 2
#define POOL 256 /* keys; ~66 MiB of values, more than L3's 64 MiB */
#define VAL_MIN (16u << 10)
#define VAL_MAX (512u << 10)
#define DEFAULT_ITERS 8
#define NS "crash"
#define KEPT 8 /* blocks put before the final graceful restart */

static struct integ_daemon D;
static const char *const tiny_tiers[] = {
	"--l1-size", "2M", "--l2-size", "2M", "--l3-size", "64M",
	"--l3-region-size", "16M", NULL
};

/* Set (before the signal is sent) when the daemon is about to be killed. */
static atomic_int killing;
static atomic_int stop;
static uint64_t key_salt;

struct worker {
	pthread_t tid;
	uint64_t rng;
	size_t ops, hits;
	char err[512]; /* first failure; "" if none */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

static uint64_t rng_next(uint64_t *s)
{
	*s += 0x9E3779B97F4A7C15ull;
	return mix64(*s);
}

/* The hash that names pool slot i; the key is its 16 hex digits. */
static uint64_t hash_of(unsigned i)
{
	return mix64(key_salt ^ mix64(i));
}

static void key_of(char k[17], uint64_t h)
{
	snprintf(k, 17, "%016" PRIx64, h);
}

static size_t len_of(uint64_t h)
{
	return VAL_MIN + (size_t)(mix64(h) % (VAL_MAX - VAL_MIN + 1));
}

/* The value named by h: h itself, then a stream seeded by h. */
static void make_value(uint8_t *p, uint64_t h)
{
	size_t len = len_of(h);
	uint64_t s = h;

	memcpy(p, &h, 8);
	for (size_t off = 8; off < len; off += 8) {
		uint64_t w = rng_next(&s);
		size_t n = len - off < 8 ? len - off : 8;

		memcpy(p + off, &w, n);
	}
}

/* 0 if got[0..n) is the value named by h, else -1 with the reason. */
static int check_value(const uint8_t *got, size_t n, uint64_t h,
		       uint8_t *scratch, char *msg, size_t cap)
{
	size_t want = len_of(h), i = 0;

	if (n != want) {
		snprintf(msg, cap, "%zu bytes served, %zu put", n, want);
		return -1;
	}
	make_value(scratch, h);
	if (memcmp(got, scratch, n) == 0)
		return 0;
	while (scratch[i] == got[i])
		i++;
	snprintf(msg, cap, "first wrong byte at offset %zu of %zu (0x%02x, "
		 "want 0x%02x)", i, n, got[i], scratch[i]);
	return -1;
}

static void worker_fail(struct worker *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void worker_fail(struct worker *w, const char *fmt, ...)
{
	va_list ap;

	if (w->err[0])
		return;
	va_start(ap, fmt);
	vsnprintf(w->err, sizeof(w->err), fmt, ap);
	va_end(ap);
}

/*
 * Puts, gets and deletes pool keys until the connection breaks (the kill)
 * or stop is set.  An error counts as a failure only if it came back
 * before the kill was decided.  No cmocka asserts: they are not thread
 * safe.
 */
static void *worker_run(void *arg)
{
	struct worker *w = arg;
	uint8_t *val = malloc(VAL_MAX), *buf = malloc(VAL_MAX),
		*scratch = malloc(VAL_MAX);
	kvt_client *c = NULL;
	int rc;

	if (!val || !buf || !scratch) {
		worker_fail(w, "out of memory");
		goto out;
	}
	rc = kvt_connect(&c, D.sock);
	if (rc < 0) {
		if (!atomic_load(&killing))
			worker_fail(w, "connect: %s", kvt_strerror(rc));
		goto out;
	}
	while (!atomic_load(&stop)) {
		uint64_t r = rng_next(&w->rng);
		uint64_t h = hash_of((unsigned)(r % POOL));
		unsigned dice = (unsigned)((r >> 32) % 100);
		const char *what;
		char k[17], msg[200];
		size_t n = 0;

		key_of(k, h);
		if (dice < 50) {
			what = "put";
			make_value(val, h);
			rc = kvt_put(c, NS, k, 16, val, len_of(h), NULL);
		} else if (dice < 85) {
			what = "get";
			rc = kvt_get(c, NS, k, 16, buf, VAL_MAX, &n);
			if (rc == 0) {
				if (check_value(buf, n, h, scratch, msg,
						sizeof(msg))) {
					worker_fail(w, "get %s returned wrong "
						    "bytes: %s", k, msg);
					goto out;
				}
				w->hits++;
			}
		} else {
			what = "del";
			rc = kvt_del(c, NS, k, 16);
		}
		if (rc != 0 && rc != KVT_ENOTFOUND) {
			if (!atomic_load(&killing))
				worker_fail(w, "%s %s: %s (%s)", what, k,
					    kvt_strerror(rc),
					    kvt_client_errmsg(c));
			goto out;
		}
		w->ops++;
	}
out:
	kvt_close(c);
	free(val);
	free(buf);
	free(scratch);
	return NULL;
}

/*
 * Gets every pool key from the running daemon: each must be a miss or the
 * exact bytes.  Returns the number of hits.
 */
static size_t verify_pool(void)
{
	uint8_t *buf = malloc(VAL_MAX), *scratch = malloc(VAL_MAX);
	kvt_client *c = NULL;
	size_t hits = 0;

	assert_non_null(buf);
	assert_non_null(scratch);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	for (unsigned i = 0; i < POOL; i++) {
		uint64_t h = hash_of(i);
		char k[17], msg[200];
		size_t n = 0;
		int rc;

		key_of(k, h);
		rc = kvt_get(c, NS, k, 16, buf, VAL_MAX, &n);
		if (rc == KVT_ENOTFOUND)
			continue;
		if (rc != 0)
			fail_msg("get %s after restart: %s (%s)", k,
				 kvt_strerror(rc), kvt_client_errmsg(c));
		if (check_value(buf, n, h, scratch, msg, sizeof(msg)))
			fail_msg("get %s after restart returned wrong bytes: "
				 "%s", k, msg);
		hits++;
	}
	kvt_close(c);
	free(buf);
	free(scratch);
	return hits;
}

/* Puts pool keys 0..n-1. */
static void put_some(unsigned n)
{
	uint8_t *val = malloc(VAL_MAX);
	kvt_client *c = NULL;

	assert_non_null(val);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	for (unsigned i = 0; i < n; i++) {
		uint64_t h = hash_of(i);
		char k[17];

		key_of(k, h);
		make_value(val, h);
		assert_int_equal(kvt_put(c, NS, k, 16, val, len_of(h), NULL),
				 0);
	}
	kvt_close(c);
	free(val);
}

/*
 * How many of pool keys 0..n-1 are present (exists does not promote, so
 * this disturbs no tier; verify_pool() checks their bytes).
 */
static unsigned count_hits(unsigned n)
{
	kvt_client *c = NULL;
	unsigned hits = 0;

	assert_int_equal(kvt_connect(&c, D.sock), 0);
	for (unsigned i = 0; i < n; i++) {
		char k[17];

		key_of(k, hash_of(i));
		hits += kvt_exists(c, NS, k, 16) == 1;
	}
	kvt_close(c);
	return hits;
}

/*
 * Runs kvtierd --check on the stopped daemon's data folder; fails the test
 * with its output unless it exits 0.  On failure the data folder is copied
 * aside first, for a post-mortem.
 */
static void check_offline(unsigned iter)
{
	char cmd[1400], out[400];
	int st;

	snprintf(out, sizeof(out), "%s/check-%u.txt", D.dir, iter);
	snprintf(cmd, sizeof(cmd),
		 "'%s' --check --data-dir '%s' --l1-size 2M --l2-size 2M "
		 "--l3-size 64M --l3-region-size 16M >'%s' 2>&1",
		 integ_kvtierd(), D.data, out);
	st = system(cmd);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return;
	snprintf(cmd, sizeof(cmd), "cat '%s'; d=$(mktemp -d /tmp/kvtier-crash-"
		 "fail-XXXXXX) && cp -a '%s' \"$d/\" && echo \"data kept in "
		 "$d\"", out, D.data);
	if (system(cmd) != 0)
		printf("crash: could not show or keep the evidence\n");
	fail_msg("kvtierd --check after kill %u: exit status 0x%x", iter, st);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return dflt;
	v = strtoull(s, &end, 0);
	return *end || v == 0 ? dflt : (uint64_t)v;
}

static void test_kill9_loop(void **state)
{
	static struct worker w[NTHREADS];
	unsigned iters = (unsigned)env_u64("KVTIER_CRASH_ITERS", DEFAULT_ITERS);
	uint64_t seed = env_u64("KVTIER_CRASH_SEED", (uint64_t)time(NULL));
	uint64_t rng = mix64(seed), t0 = now_ns();
	size_t hits_after = 0, hits_load = 0, ops = 0;
	unsigned kills = 0;

	(void)state;
	key_salt = mix64(seed ^ 0xC0FFEEull);
	printf("crash: %u kills, seed %" PRIu64 "\n", iters, seed);
	for (unsigned it = 0; it < iters; it++) {
		long delay = 50 + (long)(rng_next(&rng) % 351);

		/* Start (or restart on the same data): it must come up. */
		if (integ_start(&D, tiny_tiers) != 0)
			fail_msg("kvtierd did not start after kill %u", it);
		if (it > 0)
			hits_after += verify_pool();

		atomic_store(&killing, 0);
		atomic_store(&stop, 0);
		for (unsigned i = 0; i < NTHREADS; i++) {
			w[i].rng = rng_next(&rng);
			w[i].ops = w[i].hits = 0;
			w[i].err[0] = '\0';
			assert_int_equal(pthread_create(&w[i].tid, NULL,
							worker_run, &w[i]), 0);
		}
		integ_sleep_ms(delay);
		atomic_store(&killing, 1);
		assert_int_equal(integ_stop_sig(&D, SIGKILL), 128 + SIGKILL);
		atomic_store(&stop, 1);
		for (unsigned i = 0; i < NTHREADS; i++) {
			pthread_join(w[i].tid, NULL);
			ops += w[i].ops;
			hits_load += w[i].hits;
		}
		for (unsigned i = 0; i < NTHREADS; i++)
			if (w[i].err[0])
				fail_msg("kill %u: thread %u: %s", it + 1, i,
					 w[i].err);
		kills++;
		/* L3 holds a lock: --check only while the daemon is down. */
		check_offline(kills);
	}

	/*
	 * The last restart; then a graceful stop must keep what fits: a few
	 * blocks put now are all served after it.
	 */
	if (integ_start(&D, tiny_tiers) != 0)
		fail_msg("kvtierd did not start after kill %u", kills);
	hits_after += verify_pool();
	put_some(KEPT);
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);
	check_offline(kills + 1);
	assert_int_equal(integ_start(&D, tiny_tiers), 0);
	assert_int_equal(count_hits(KEPT), KEPT);
	hits_after += verify_pool();
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);

	printf("crash: %u kills survived, %zu hits verified after restarts "
	       "(%zu ops, %zu hits verified under load) in %.1f s\n", kills,
	       hits_after, ops, hits_load, (now_ns() - t0) / 1e9);
	integ_cleanup(&D);
}

/* Runs even when an assertion failed: no daemon outlives its test. */
static int teardown(void **state)
{
	(void)state;
	atomic_store(&stop, 1);
	integ_cleanup(&D);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_kill9_loop, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
