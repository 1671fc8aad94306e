/*
 * test_noring.c - kvtierd where io_uring is refused.  The daemon is started
 * through tests/integ/noring (a seccomp filter that makes io_uring_setup
 * fail with EPERM, as container profiles do).  With the default
 * --io-backend auto it must start anyway, say so once in the log, report
 * io_backend "epoll" in its stats, serve small and large values, move
 * blocks through L3 and back byte-identical with pread/pwrite, and keep L3
 * across a restart.  With --io-backend io_uring it must refuse to start,
 * exit 1 and say why.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>

#include "integ_harness.h"
#include "integ_stats.h"
#include "kvtier.h"

#define NBLOCKS 72
#define BLOCK (1u << 20) /* 72 MiB in all: three times L1 + L2 */
#define LARGE (8u << 20)

static struct integ_daemon D;
static char noring[PATH_MAX];
static char logpath[PATH_MAX];
static const char *const small_tiers[] = {
	"--l1-size", "16M", "--l2-size", "8M", "--l3-size", "256M",
	"--l3-region-size", "16M", "--io-backend", "auto", NULL
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return strdup("");
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)
		buf[0] = '\0';
	fclose(f);
	return buf;
}

static unsigned count_of(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static kvt_client *connect_ok(void)
{
	kvt_client *c = NULL;

	assert_int_equal(kvt_connect(&c, D.sock), 0);
	return c;
}

static void key_of(char *k, size_t cap, unsigned i)
{
	snprintf(k, cap, "blk-%03u", i);
}

/* Waits until no block is on its way down to L2/L3. */
static void settle(kvt_client *c)
{
	for (int i = 0; i < 1000; i++) {
		char *j = stats(c);
		uint64_t pending = jnum(j, NULL, "jobs_pending");

		free(j);
		if (pending == 0)
			return;
		integ_sleep_ms(10);
	}
	fail_msg("jobs still pending after 10 s");
}

/* Reads every block back; returns how many were served, all verified. */
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
		integ_fill(want, BLOCK, i + 1);
		assert_memory_equal(got, want, BLOCK);
		hits++;
	}
	return hits;
}

static int setup(void **state)
{
	const char *b = getenv("KVTIER_BUILD");
	char cmd[PATH_MAX + 32];
	int rc;

	(void)state;
	snprintf(noring, sizeof(noring), "%s/tests/integ/noring",
		 b && *b ? b : "build");
	snprintf(cmd, sizeof(cmd), "'%s' true", noring);
	rc = system(cmd);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
		fprintf(stderr, "noring cannot sandbox here (status %d)\n", rc);
		noring[0] = '\0';
	}
	return 0;
}

static void start_sandboxed(const char *const *extra)
{
	D.launcher = noring;
	D.log_path = logpath;
	assert_int_equal(integ_start(&D, extra), 0);
}

static void test_auto_falls_back(void **state)
{
	uint8_t *want = malloc(LARGE), *got = malloc(LARGE);
	kvt_client *c;
	size_t n = 0;
	char *j, *log;
	unsigned hits;

	(void)state;
	if (!noring[0])
		skip();
	assert_non_null(want);
	assert_non_null(got);
	memset(&D, 0, sizeof(D));
	snprintf(logpath, sizeof(logpath), "/tmp/kvtier-noring-%d.log",
		 (int)getpid());
	unlink(logpath);
	start_sandboxed(small_tiers);

	/* One warning naming the error and the fallback. */
	log = slurp(logpath);
	assert_int_equal(count_of(log, "event=io_uring_unavailable"), 1);
	assert_non_null(strstr(log, "level=warn event=io_uring_unavailable "
				    "error=\"Operation not permitted\" "
				    "fallback=epoll"));
	free(log);

	c = connect_ok();
	j = stats(c);
	assert_non_null(strstr(j, "\"io_backend\":\"epoll\""));
	free(j);

	/* Small and large values. */
	assert_int_equal(kvt_put(c, "s", "small", 5, "hello", 5, NULL), 0);
	assert_int_equal(kvt_get(c, "s", "small", 5, got, LARGE, &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(got, "hello", 5);
	integ_fill(want, LARGE, 99);
	assert_int_equal(kvt_put(c, "s", "large", 5, want, LARGE, NULL), 0);
	memset(got, 0, LARGE);
	assert_int_equal(kvt_get(c, "s", "large", 5, got, LARGE, &n), 0);
	assert_int_equal(n, LARGE);
	assert_memory_equal(got, want, LARGE);
	assert_int_equal(kvt_del(c, "s", "large", 5), 0);

	/* Through L3 and back: 72 MiB into 24 MiB of RAM tiers. */
	for (unsigned i = 0; i < NBLOCKS; i++) {
		char key[32];

		key_of(key, sizeof(key), i);
		integ_fill(want, BLOCK, i + 1);
		assert_int_equal(kvt_put(c, "t", key, strlen(key), want, BLOCK,
					 NULL), 0);
	}
	settle(c);
	j = stats(c);
	assert_true(jnum(j, "l3", "entries") > 0);
	free(j);
	hits = read_all(c, want, got);
	assert_int_equal(hits, NBLOCKS);
	j = stats(c);
	assert_true(jnum(j, "l3", "hits") > 0);
	assert_int_equal(jnum(j, NULL, "l3_checksum_failures"), 0);
	free(j);
	kvt_close(c);

	/* A graceful restart keeps what L3 holds, still without io_uring. */
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);
	start_sandboxed(small_tiers);
	c = connect_ok();
	j = stats(c);
	assert_non_null(strstr(j, "\"io_backend\":\"epoll\""));
	assert_true(jnum(j, "l3", "entries") > 0);
	free(j);
	hits = read_all(c, want, got);
	assert_int_equal(hits, NBLOCKS);
	j = stats(c);
	assert_true(jnum(j, "l3", "hits") > 0);
	free(j);
	kvt_close(c);
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);
	integ_cleanup(&D);
	unlink(logpath);
	free(want);
	free(got);
}

static void test_required_refuses(void **state)
{
	static const char *const args[] = { "--io-backend", "io_uring", NULL };
	int status = 0;
	char *log;

	(void)state;
	if (!noring[0])
		skip();
	memset(&D, 0, sizeof(D));
	snprintf(logpath, sizeof(logpath), "/tmp/kvtier-noring-%d.log",
		 (int)getpid());
	unlink(logpath);
	D.launcher = noring;
	D.log_path = logpath;
	assert_int_equal(integ_spawn(&D, args), 0);
	assert_int_equal(waitpid(D.pid, &status, 0), D.pid);
	D.pid = 0;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	log = slurp(logpath);
	assert_non_null(strstr(log, "level=error event=io_uring_unavailable"));
	assert_non_null(strstr(log, "kvtierd: cannot start: io_uring is "
				    "unavailable: Operation not permitted"));
	assert_non_null(strstr(log, "--io-backend auto"));
	/* It never served: no socket left behind. */
	assert_int_equal(access(D.sock, F_OK), -1);
	free(log);
	integ_cleanup(&D);
	unlink(logpath);
}

/* The setting from the config file, without any sandbox. */
static void test_config_file_epoll(void **state)
{
	static char conf[PATH_MAX];
	static const char *args[] = { "--config", conf, NULL };
	kvt_client *c;
	FILE *f;
	char *j;

	(void)state;
	memset(&D, 0, sizeof(D));
	snprintf(D.dir, sizeof(D.dir), "/tmp/kvtier-integ-XXXXXX");
	assert_non_null(mkdtemp(D.dir));
	snprintf(D.sock, sizeof(D.sock), "%s/kvtier.sock", D.dir);
	snprintf(D.data, sizeof(D.data), "%s/var", D.dir);
	snprintf(conf, sizeof(conf), "%s/kvtierd.conf", D.dir);
	f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "# test\nio-backend = epoll\n");
	fclose(f);
	/* The file is read before the flags: the env override comes later. */
	unsetenv("KVTIER_TEST_IO_BACKEND");
	assert_int_equal(integ_start(&D, args), 0);
	c = connect_ok();
	j = stats(c);
	assert_non_null(strstr(j, "\"io_backend\":\"epoll\""));
	free(j);
	kvt_close(c);
	assert_int_equal(integ_stop_sig(&D, SIGTERM), 0);
	integ_cleanup(&D);
}

static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_auto_falls_back, teardown),
		cmocka_unit_test_teardown(test_required_refuses, teardown),
		cmocka_unit_test_teardown(test_config_file_epoll, teardown),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
