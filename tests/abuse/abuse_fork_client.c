/*
 * abuse_fork_client.c - a kvt_client used in a child after fork(), for
 * tests/abuse/scn_fork_client.py (issue #17 break 5).
 *
 *   abuse_fork_client SOCKET [TRIALS]
 *
 * Connects, puts KEYS blocks whose keys name their contents ("fork-<i>"
 * holds fill(i), so any value read back is checked against the key it was
 * asked for), then TRIALS times: fork(); the child GETs other keys through
 * the inherited handle while the parent GETs its own keys through the same
 * handle.  The promise: the child's first call fails with an error (not
 * KVT_ENOTFOUND, not data), and neither process ever gets another key's
 * bytes; the parent's handle keeps working.
 *
 * Prints one line per trial and a summary line
 *   trials=N child_error_first=N child_data=N child_miss=N child_wrong=N
 *   parent_wrong=N parent_errors=N first_child_error="..."
 * and exits 0 if the promise held in every trial, 1 if not, 2 if it could
 * not run.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvtier.h"

#define KEYS 64
#define VLEN 4096
#define CHILD_GETS 200
#define PARENT_GETS 400
#define NS "abuse-fork"

/* Exit codes of a child. */
enum { CH_ERROR_FIRST = 0, CH_DATA = 1, CH_WRONG = 2, CH_MISS = 3 };

static void fill(uint8_t *p, size_t n, unsigned id)
{
	uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

static size_t key_of(char *k, size_t cap, unsigned id)
{
	return (size_t)snprintf(k, cap, "fork-%u", id);
}

/* 1 if buf[0..n) is exactly key id's value. */
static int right(const uint8_t *buf, size_t n, unsigned id)
{
	uint8_t want[VLEN];

	fill(want, sizeof(want), id);
	return n == VLEN && memcmp(buf, want, VLEN) == 0;
}

static int child(kvt_client *c, int trial)
{
	uint8_t buf[VLEN * 2];
	char k[32];
	int code = CH_ERROR_FIRST;

	for (int i = 0; i < CHILD_GETS; i++) {
		unsigned id = (unsigned)((i * 7 + trial) % (KEYS / 2));
		size_t n = 0, kl = key_of(k, sizeof(k), id);
		int rc = kvt_get(c, NS, k, kl, buf, sizeof(buf), &n);

		if (rc == 0 && !right(buf, n, id)) {
			fprintf(stderr, "child: GET %s returned %zu bytes of "
				"another value\n", k, n);
			return CH_WRONG;
		}
		if (rc == 0) {
			code = CH_DATA;
			continue;
		}
		if (rc == KVT_ENOTFOUND) {
			if (code == CH_ERROR_FIRST)
				code = CH_MISS;
			continue;
		}
		if (i == 0)
			printf("child_error=\"%s\" (%d)\n",
			       kvt_client_errmsg(c), rc);
		return i == 0 ? CH_ERROR_FIRST : code;
	}
	return code;
}

int main(int argc, char **argv)
{
	kvt_client *c = NULL;
	uint8_t v[VLEN], buf[VLEN * 2];
	char k[32];
	int trials = argc > 2 ? atoi(argv[2]) : 8;
	int n_err_first = 0, n_data = 0, n_miss = 0, n_wrong = 0;
	int p_wrong = 0, p_err = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: abuse_fork_client SOCKET [TRIALS]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (kvt_connect(&c, argv[1])) {
		fprintf(stderr, "connect: %s\n", kvt_client_errmsg(NULL));
		return 2;
	}
	for (unsigned id = 0; id < KEYS; id++) {
		fill(v, sizeof(v), id);
		if (kvt_put(c, NS, k, key_of(k, sizeof(k), id), v, sizeof(v),
			    NULL)) {
			fprintf(stderr, "put: %s\n", kvt_client_errmsg(c));
			return 2;
		}
	}
	for (int t = 0; t < trials; t++) {
		int st, code;
		pid_t pid;

		fflush(stdout);
		pid = fork();
		if (pid < 0)
			return 2;
		if (pid == 0)
			_exit(child(c, t));
		/* The parent's own keys are the upper half. */
		for (int i = 0; i < PARENT_GETS; i++) {
			unsigned id = KEYS / 2 + (unsigned)(i % (KEYS / 2));
			size_t n = 0, kl = key_of(k, sizeof(k), id);
			int rc = kvt_get(c, NS, k, kl, buf, sizeof(buf), &n);

			if (rc == 0 && !right(buf, n, id))
				p_wrong++;
			else if (rc) {
				p_err++;
				/* A broken handle: connect again. */
				kvt_close(c);
				c = NULL;
				if (kvt_connect(&c, argv[1]))
					return 2;
			}
		}
		if (waitpid(pid, &st, 0) != pid)
			return 2;
		code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		printf("trial %d: child %s\n", t,
		       code == CH_ERROR_FIRST ? "failed at once (good)" :
		       code == CH_DATA ? "got data through the parent's socket" :
		       code == CH_WRONG ? "got ANOTHER KEY'S VALUE" :
		       code == CH_MISS ? "got misses for keys that exist" :
		       "died");
		n_err_first += code == CH_ERROR_FIRST;
		n_data += code == CH_DATA;
		n_wrong += code == CH_WRONG;
		n_miss += code == CH_MISS;
	}
	printf("trials=%d child_error_first=%d child_data=%d child_miss=%d "
	       "child_wrong=%d parent_wrong=%d parent_errors=%d\n", trials,
	       n_err_first, n_data, n_miss, n_wrong, p_wrong, p_err);
	kvt_close(c);
	return n_err_first == trials && !p_wrong && !p_err ? 0 : 1;
}
