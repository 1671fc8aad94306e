/*
 * test_prefix.c - unit tests for proto/kvt_prefix.c: the prefix-key scheme
 * against the vectors of tests/vectors/prefix_keys.txt (made by an
 * independent Python implementation), its chaining properties, its errors,
 * and agreement between two processes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvtier_prefix.h"
/*
 * kvtier.h declares kvt_prefix_keys() again for installed users; including
 * both makes the compiler check that the two prototypes agree.
 */
#include "kvtier.h"

#define VECTORS_REL "tests/vectors/prefix_keys.txt"
#define MAX_TOKENS 4096
#define MAX_KEYS 64

/* ---- Helpers -------------------------------------------------------- */

static void fill_range(uint32_t *t, uint32_t first, size_t n)
{
	for (size_t i = 0; i < n; i++)
		t[i] = first + (uint32_t)i;
}

/* Keys of tokens under ns with block B; asserts success, returns count. */
static size_t keys_of(const char *ns, const uint32_t *t, size_t n, unsigned b,
		      uint8_t (*keys)[32], size_t max)
{
	size_t nk = (size_t)-1;

	assert_int_equal(kvt_prefix_keys(ns, strlen(ns), t, n, b, keys, max,
					 &nk), 0);
	assert_int_equal(nk, n / b);
	return nk;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes 2*n hex digits from s into out; returns 0 or -1. */
static int unhex(const char *s, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/*
 * tests/run.sh does not change directory, so the vector file is looked up
 * from the build folder upwards ($KVTIER_BUILD is ROOT/BUILD, and BUILD may
 * be nested, e.g. build/asan), then relative to the working directory and
 * to this source file.
 */
static FILE *open_vectors(void)
{
	char path[4096];
	const char *b = getenv("KVTIER_BUILD");
	FILE *f;

	/* dir is half of path so that dir + VECTORS_REL always fits. */
	if (b && strlen(b) < 2048) {
		char dir[2048];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", b);
		for (;;) {
			snprintf(path, sizeof(path), "%s/%s", dir, VECTORS_REL);
			f = fopen(path, "r");
			if (f)
				return f;
			slash = strrchr(dir, '/');
			if (!slash || slash == dir)
				break;
			*slash = '\0';
		}
	}
	f = fopen(VECTORS_REL, "r");
	if (f)
		return f;
	snprintf(path, sizeof(path), "%s", __FILE__);
	if (strrchr(path, '/')) {
		*strrchr(path, '/') = '\0';
		snprintf(path + strlen(path), sizeof(path) - strlen(path),
			 "/../vectors/prefix_keys.txt");
		return fopen(path, "r");
	}
	return NULL;
}

/* Parses TOKENS of the vector format ("-", or items "a" / "a..b"). */
static size_t parse_tokens(char *s, uint32_t *t, size_t cap)
{
	size_t n = 0;
	char *item, *save = NULL;

	if (strcmp(s, "-") == 0)
		return 0;
	for (item = strtok_r(s, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		char *dots = strstr(item, "..");
		unsigned long long a, b;

		a = strtoull(item, NULL, 10);
		b = dots ? strtoull(dots + 2, NULL, 10) : a;
		assert_true(a <= b && b <= UINT32_MAX);
		for (unsigned long long v = a; v <= b; v++) {
			assert_true(n < cap);
			t[n++] = (uint32_t)v;
		}
	}
	return n;
}

/* ---- Tests ---------------------------------------------------------- */

static void test_vectors(void **state)
{
	static uint32_t tokens[MAX_TOKENS];
	static uint8_t keys[MAX_KEYS][32];
	uint8_t want[32];
	char ns[256];
	char *line = NULL;
	size_t cap = 0, nvec = 0;
	FILE *f;

	(void)state;
	f = open_vectors();
	if (!f)
		fail_msg("cannot find %s (set KVTIER_BUILD or run from the "
			 "repository root)", VECTORS_REL);
	while (getline(&line, &cap, f) > 0) {
		char *fld[5], *save = NULL, *k, *ksave = NULL;
		size_t ns_len = 0, n, nk, i = 0;
		unsigned long b;

		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		for (int j = 0; j < 5; j++) {
			fld[j] = strtok_r(j ? NULL : line, " ", &save);
			assert_non_null(fld[j]);
		}
		assert_null(strtok_r(NULL, " ", &save));
		assert_string_equal(fld[3], "->");
		if (strcmp(fld[0], "-") != 0) {
			ns_len = strlen(fld[0]) / 2;
			assert_true(ns_len <= 255);
			assert_int_equal(unhex(fld[0], ns_len, (uint8_t *)ns), 0);
		}
		b = strtoul(fld[1], NULL, 10);
		n = parse_tokens(fld[2], tokens, MAX_TOKENS);
		assert_int_equal(kvt_prefix_keys(ns, ns_len, tokens, n,
						 (unsigned)b, keys, MAX_KEYS,
						 &nk), 0);
		if (strcmp(fld[4], "-") != 0) {
			for (k = strtok_r(fld[4], ",", &ksave); k;
			     k = strtok_r(NULL, ",", &ksave), i++) {
				assert_int_equal(strlen(k), 64);
				assert_int_equal(unhex(k, 32, want), 0);
				assert_true(i < nk);
				assert_memory_equal(keys[i], want, 32);
			}
		}
		assert_int_equal(i, nk);
		nvec++;
	}
	free(line);
	fclose(f);
	/* The file has at least the cases the scheme's spec asks for. */
	assert_true(nvec >= 10);
}

static void test_prefix_of_longer(void **state)
{
	uint32_t t[240];
	uint8_t a[15][32], b[2][32];

	(void)state;
	fill_range(t, 1, 240);
	assert_int_equal(keys_of("", t, 240, 16, a, 15), 15);
	assert_int_equal(keys_of("", t, 40, 16, b, 2), 2);
	assert_memory_equal(a, b, sizeof(b));
	/* All 15 keys are distinct. */
	for (int i = 0; i < 15; i++)
		for (int j = i + 1; j < 15; j++)
			assert_memory_not_equal(a[i], a[j], 32);
}

static void test_namespaces_differ(void **state)
{
	uint32_t t[32];
	uint8_t a[2][32], b[2][32], c[2][32];

	(void)state;
	fill_range(t, 1, 32);
	keys_of("", t, 32, 16, a, 2);
	keys_of("llama3-8b/bf16/tp0", t, 32, 16, b, 2);
	keys_of("llama3-8b/bf16/tp1", t, 32, 16, c, 2);
	for (int i = 0; i < 2; i++) {
		assert_memory_not_equal(a[i], b[i], 32);
		assert_memory_not_equal(b[i], c[i], 32);
		assert_memory_not_equal(a[i], c[i], 32);
	}
}

/*
 * The namespace length is hashed, so "ab" + tokens cannot be confused with
 * "a" + different bytes, and a NULL namespace equals the empty one.
 */
static void test_namespace_framing(void **state)
{
	uint32_t t[4] = { 1, 2, 3, 4 };
	uint8_t a[1][32], b[1][32];
	size_t nk;

	(void)state;
	assert_int_equal(kvt_prefix_keys(NULL, 0, t, 4, 4, a, 1, &nk), 0);
	keys_of("", t, 4, 4, b, 1);
	assert_memory_equal(a, b, 32);
	/* Bytes after ns_len are not part of the namespace. */
	assert_int_equal(kvt_prefix_keys("abc", 2, t, 4, 4, a, 1, &nk), 0);
	keys_of("ab", t, 4, 4, b, 1);
	assert_memory_equal(a, b, 32);
	keys_of("a", t, 4, 4, b, 1);
	assert_memory_not_equal(a, b, 32);
}

static void test_first_token_changes_every_key(void **state)
{
	uint32_t t[160];
	uint8_t a[10][32], b[10][32];

	(void)state;
	fill_range(t, 1, 160);
	keys_of("ns", t, 160, 16, a, 10);
	t[0] = 99999;
	keys_of("ns", t, 160, 16, b, 10);
	for (int i = 0; i < 10; i++)
		assert_memory_not_equal(a[i], b[i], 32);
	/* A change in the last block only changes the last key. */
	t[0] = 1;
	t[159] = 7;
	keys_of("ns", t, 160, 16, b, 10);
	assert_memory_equal(a, b, 9 * 32);
	assert_memory_not_equal(a[9], b[9], 32);
}

static void test_partial_block(void **state)
{
	uint32_t t[47];
	uint8_t a[3][32], b[3][32];
	size_t nk;

	(void)state;
	fill_range(t, 1, 47);
	memset(a, 0xee, sizeof(a));
	assert_int_equal(keys_of("", t, 47, 16, a, 3), 2);
	keys_of("", t, 32, 16, b, 3);
	assert_memory_equal(a, b, 2 * 32);
	/* The third slot was not touched. */
	for (int i = 0; i < 32; i++)
		assert_int_equal(a[2][i], 0xee);
	/* Fewer tokens than a block, and no tokens at all: no keys. */
	assert_int_equal(kvt_prefix_keys("", 0, t, 15, 16, a, 3, &nk), 0);
	assert_int_equal(nk, 0);
	assert_int_equal(kvt_prefix_keys("", 0, NULL, 0, 16, NULL, 0, &nk), 0);
	assert_int_equal(nk, 0);
}

static void test_errors(void **state)
{
	uint32_t t[40];
	uint8_t k[2][32], want[2][32];
	char ns[257];
	size_t nk;

	(void)state;
	fill_range(t, 1, 40);
	memset(ns, 'n', sizeof(ns));
	nk = 5;
	assert_int_equal(kvt_prefix_keys("", 0, t, 40, 0, k, 2, &nk),
			 KVT_EINVAL);
	assert_int_equal(nk, 0);
	assert_int_equal(kvt_prefix_keys(ns, 256, t, 40, 16, k, 2, &nk),
			 KVT_EINVAL);
	/* 255 is the longest namespace. */
	assert_int_equal(kvt_prefix_keys(ns, 255, t, 40, 16, k, 2, &nk), 0);
	assert_int_equal(kvt_prefix_keys("", 0, t, 40, 16, k, 2, NULL),
			 KVT_EINVAL);
	assert_int_equal(kvt_prefix_keys(NULL, 1, t, 40, 16, k, 2, &nk),
			 KVT_EINVAL);
	assert_int_equal(kvt_prefix_keys("", 0, NULL, 40, 16, k, 2, &nk),
			 KVT_EINVAL);
	assert_int_equal(kvt_prefix_keys("", 0, t, 40, 16, NULL, 2, &nk),
			 KVT_EINVAL);

	/* Too small an array: the ones that fit, and the count needed. */
	keys_of("", t, 40, 16, want, 2);
	memset(k, 0, sizeof(k));
	nk = 0;
	assert_int_equal(kvt_prefix_keys("", 0, t, 40, 16, k, 1, &nk),
			 KVT_ERANGE);
	assert_int_equal(nk, 2);
	assert_memory_equal(k[0], want[0], 32);
	for (int i = 0; i < 32; i++)
		assert_int_equal(k[1][i], 0);
	/* Counting only. */
	nk = 0;
	assert_int_equal(kvt_prefix_keys("", 0, t, 40, 16, NULL, 0, &nk),
			 KVT_ERANGE);
	assert_int_equal(nk, 2);
}

/* Large blocks go through several conversion chunks; B=1 through none. */
static void test_block_sizes(void **state)
{
	static uint32_t t[2000];
	static uint8_t b[2000][32];
	uint8_t a[2][32], c[2][32];

	(void)state;
	fill_range(t, 0xfffff000u, 2000);
	assert_int_equal(keys_of("x", t, 2000, 1000, a, 2), 2);
	assert_int_equal(keys_of("x", t, 2000, 1, b, 2000), 2000);
	assert_int_equal(keys_of("x", t, 2000, 999, c, 2), 2);
	assert_memory_not_equal(a[0], b[999], 32);
	assert_memory_not_equal(a[0], c[0], 32);
}

/*
 * Two processes that share a prefix compute the same keys for it: the
 * child hashes tokens 1..240, the parent 1..64 followed by other tokens,
 * and the child's keys come back through a pipe.
 */
static void test_two_processes(void **state)
{
	uint32_t t[240];
	uint8_t mine[6][32], theirs[15][32];
	size_t got = 0;
	int fds[2], status;
	pid_t pid;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t k[15][32];
		const uint8_t *p = (const uint8_t *)k;
		size_t nk, left = sizeof(k);

		close(fds[0]);
		fill_range(t, 1, 240);
		if (kvt_prefix_keys("llama3-8b/bf16/tp0", 18, t, 240, 16, k,
				    15, &nk) != 0 || nk != 15)
			_exit(2);
		while (left > 0) {
			ssize_t w = write(fds[1], p, left);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				_exit(3);
			p += w;
			left -= (size_t)w;
		}
		_exit(0);
	}
	close(fds[1]);
	fill_range(t, 1, 64);
	for (int i = 64; i < 96; i++)
		t[i] = 50000u + (uint32_t)i;
	keys_of("llama3-8b/bf16/tp0", t, 96, 16, mine, 6);
	while (got < sizeof(theirs)) {
		ssize_t r = read(fds[0], (uint8_t *)theirs + got,
				 sizeof(theirs) - got);

		if (r < 0 && errno == EINTR)
			continue;
		assert_true(r > 0);
		got += (size_t)r;
	}
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Blocks 0..3 are the shared 64 tokens; the rest differ. */
	assert_memory_equal(mine, theirs, 4 * 32);
	assert_memory_not_equal(mine[4], theirs[4], 32);
	assert_memory_not_equal(mine[5], theirs[5], 32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_prefix_of_longer),
		cmocka_unit_test(test_namespaces_differ),
		cmocka_unit_test(test_namespace_framing),
		cmocka_unit_test(test_first_token_changes_every_key),
		cmocka_unit_test(test_partial_block),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_block_sizes),
		cmocka_unit_test(test_two_processes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
