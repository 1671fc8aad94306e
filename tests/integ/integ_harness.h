/*
 * integ_harness.h - starts a real kvtierd for an integration test, in a
 * fresh mktemp -d folder with its own socket, and stops it.  Header-only:
 * every integration test is its own program.  The daemon binary comes from
 * $KVTIERD (set by tests/run.sh), else build/kvtierd.
 *
 * $KVTIER_TEST_IO_BACKEND (auto, io_uring or epoll), when set, adds
 * `--io-backend VALUE` to every daemon started here (before the test's own
 * arguments, which may override it): tests/run.sh runs some suites a
 * second time with epoll, so that the portable path is held to the same
 * tests as io_uring.
 *
 * $KVTIER_TEST_WORKERS (a number), when set, adds `--workers VALUE` the
 * same way, so that the suite can be run with one tier worker and with
 * the default pool.
 *
 * $KVTIER_TEST_WRAPPER, if set, is a command line (words separated by
 * spaces, no quoting) put before the daemon's: `make valgrind` runs every
 * kvtierd under valgrind this way.  Under a wrapper the daemon is slow, so
 * the harness waits longer for it, and stops it with SIGTERM before
 * SIGKILL so that the wrapper can report leaks.
 */
#ifndef INTEG_HARNESS_H
#define INTEG_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvtier.h"

struct integ_daemon {
	pid_t pid;
	char dir[256];
	char sock[300];
	char data[300];
	/*
	 * Optional: a program the daemon is started through (argv[0] of the
	 * command, the daemon's command line follows), e.g. a sandbox.
	 */
	const char *launcher;
	/* Optional: the daemon's stderr goes to this file (appended). */
	const char *log_path;
};

static inline const char *integ_kvtierd(void)
{
	const char *p = getenv("KVTIERD");
	return p && *p ? p : "build/kvtierd";
}

/* The wrapper command line, or NULL when there is none. */
static inline const char *integ_wrapper(void)
{
	const char *w = getenv("KVTIER_TEST_WRAPPER");
	return w && *w ? w : NULL;
}

static inline void integ_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/*
 * Waits up to 20 s (120 s under a wrapper) until the daemon answers a
 * ping; returns 0 or -1.  The
 * socket file alone proves nothing: one left by a killed daemon exists
 * before the new daemon has bound it.
 */
static inline int integ_wait_socket(struct integ_daemon *d)
{
	int tries = integ_wrapper() ? 12000 : 2000;

	for (int i = 0; i < tries; i++) {
		kvt_client *c = NULL;
		int ok = kvt_connect(&c, d->sock) == 0 && kvt_ping(c) == 0;

		kvt_close(c);
		if (ok)
			return 0;
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
			d->pid = 0;
			return -1;
		}
		integ_sleep_ms(10);
	}
	return -1;
}

/*
 * Starts kvtierd with the given extra arguments (NULL-terminated list, may
 * be NULL) on a socket in a new temporary folder, without waiting for it.
 * If d->dir is already set, reuses it (restart).  Returns 0 or -1.
 */
static inline int integ_spawn(struct integ_daemon *d, const char *const *extra)
{
	const char *argv[96];
	static char wrap[512];
	const char *backend = getenv("KVTIER_TEST_IO_BACKEND");
	int n = 0;

	if (!d->dir[0]) {
		snprintf(d->dir, sizeof(d->dir), "/tmp/kvtier-integ-XXXXXX");
		if (!mkdtemp(d->dir))
			return -1;
		snprintf(d->sock, sizeof(d->sock), "%s/kvtier.sock", d->dir);
		snprintf(d->data, sizeof(d->data), "%s/var", d->dir);
	}
	if (d->launcher)
		argv[n++] = d->launcher;
	if (integ_wrapper()) {
		snprintf(wrap, sizeof(wrap), "%s", integ_wrapper());
		for (char *w = strtok(wrap, " "); w && n < 32;
		     w = strtok(NULL, " "))
			argv[n++] = w;
	}
	argv[n++] = integ_kvtierd();
	argv[n++] = "--socket";
	argv[n++] = d->sock;
	argv[n++] = "--data-dir";
	argv[n++] = d->data;
	argv[n++] = "--log-level";
	argv[n++] = getenv("KVTIER_TEST_LOG") ? getenv("KVTIER_TEST_LOG")
					      : "warn";
	/* Small SSD tier (regions are preallocated); tests may override. */
	argv[n++] = "--l3-size";
	argv[n++] = "256M";
	argv[n++] = "--l3-region-size";
	argv[n++] = "16M";
	if (backend && *backend) {
		argv[n++] = "--io-backend";
		argv[n++] = backend;
	}
	if (getenv("KVTIER_TEST_WORKERS") && *getenv("KVTIER_TEST_WORKERS")) {
		argv[n++] = "--workers";
		argv[n++] = getenv("KVTIER_TEST_WORKERS");
	}
	for (int i = 0; extra && extra[i] && n < 95; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	d->pid = fork();
	if (d->pid < 0)
		return -1;
	if (d->pid == 0) {
		if (d->log_path) {
			int fd = open(d->log_path,
				      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
				      0600);

			if (fd >= 0)
				dup2(fd, 2);
		}
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "integ: cannot exec %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	return 0;
}

/* integ_spawn(), then waits until the daemon answers a ping. */
static inline int integ_start(struct integ_daemon *d, const char *const *extra)
{
	if (integ_spawn(d, extra))
		return -1;
	return integ_wait_socket(d);
}

/* Sends sig and waits for exit; returns the exit status or -1. */
static inline int integ_stop_sig(struct integ_daemon *d, int sig)
{
	int status = 0;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, sig);
	if (waitpid(d->pid, &status, 0) != d->pid)
		return -1;
	d->pid = 0;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* Stops the daemon if running and removes the temporary folder. */
static inline void integ_cleanup(struct integ_daemon *d)
{
	char cmd[400];

	if (d->pid > 0 && integ_wrapper()) {
		/* Let the wrapper see a clean exit and report leaks. */
		kill(d->pid, SIGTERM);
		for (int i = 0; i < 1200; i++) {
			if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
				d->pid = 0;
				break;
			}
			integ_sleep_ms(50);
		}
	}
	if (d->pid > 0)
		integ_stop_sig(d, SIGKILL);
	if (d->dir[0] && strncmp(d->dir, "/tmp/kvtier-integ-", 18) == 0) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "integ: could not remove %s\n", d->dir);
	}
	d->dir[0] = '\0';
}

/* Deterministic test bytes: value depends on seed and position. */
static inline void integ_fill(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

/*
 * A bare socket connected to the daemon, for tests that speak the wire
 * protocol themselves (malformed frames, shared memory).  Returns the fd or
 * -1.
 */
static inline int integ_raw_connect(const struct integ_daemon *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(d->sock);
	int fd;

	if (n >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, d->sock, n + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/*
 * Reads the unsigned number "name":N from a stats document, inside the
 * object "obj":{...} when obj is not NULL (the first such field after the
 * object opens).  Returns 0, or -1 if absent.
 */
static inline int integ_json_u64(const char *json, const char *obj,
				 const char *name, uint64_t *out)
{
	char pat[80];
	const char *p = json;

	if (obj) {
		snprintf(pat, sizeof(pat), "\"%s\":{", obj);
		p = strstr(json, pat);
		if (!p)
			return -1;
	}
	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(p, pat);
	if (!p)
		return -1;
	*out = strtoull(p + strlen(pat), NULL, 10);
	return 0;
}

#endif /* INTEG_HARNESS_H */
