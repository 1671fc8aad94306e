/*
 * l4cluster.h - a real Redis Cluster for a test program: C wrappers around
 * tests/l4cluster.sh (start, stop, kill a node, wait, masters, redis-cli).
 * Header-only (static functions) so that any test can include it; the
 * script does the work so that shell tests and benchmarks share it.
 *
 *   struct l4c c;
 *   int rc = l4c_start(&c);     0 = up, 77 = redis-server not installed
 *   ... c.url, c.ports[0..5], l4c_masters(&c, ...), l4c_kill(&c, port) ...
 *   l4c_stop(&c);               always; also removes the folder
 *
 * The nodes also stop by themselves when the test process dies
 * (L4CLUSTER_OWNER), so that a crashed test leaves no server behind.
 */
#ifndef L4CLUSTER_H
#define L4CLUSTER_H

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define L4C_NODES 6
/* Header-only helpers: an includer need not use them all. */
#define L4C_FN __attribute__((unused)) static

struct l4c {
	char dir[128];
	char script[PATH_MAX];
	int base;
	int ports[L4C_NODES];
	char url[256]; /* redis-cluster:// with all six nodes */
};

/*
 * Finds tests/l4cluster.sh: $L4CLUSTER_SCRIPT, else walking up from the
 * program's own path (BUILD/tests/unit/x lives under the tree).
 */
L4C_FN int l4c_find_script(struct l4c *c)
{
	const char *env = getenv("L4CLUSTER_SCRIPT");
	char exe[PATH_MAX - 32];
	ssize_t n;

	if (env && access(env, R_OK) == 0) {
		snprintf(c->script, sizeof(c->script), "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -1;
	exe[n] = '\0';
	for (char *slash = strrchr(exe, '/'); slash;
	     slash = strrchr(exe, '/')) {
		*slash = '\0';
		snprintf(c->script, sizeof(c->script), "%s/tests/l4cluster.sh",
			 exe);
		if (access(c->script, R_OK) == 0)
			return 0;
	}
	return -1;
}

/* Runs the script with the given arguments; returns its exit status. */
__attribute__((format(printf, 2, 3)))
L4C_FN int l4c_sh(const struct l4c *c, const char *fmt, ...)
{
	char args[1024], cmd[PATH_MAX + 1100];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "sh '%s' %s", c->script, args);
	rc = system(cmd);
	return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* Like l4c_sh, with the first line of stdout in out ("" if none). */
__attribute__((format(printf, 4, 5)))
L4C_FN int l4c_sh_out(const struct l4c *c, char *out, size_t cap,
		      const char *fmt, ...)
{
	char args[1024], cmd[PATH_MAX + 1100];
	va_list ap;
	FILE *f;
	int rc;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof(cmd), "sh '%s' %s", c->script, args);
	out[0] = '\0';
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (fgets(out, (int)cap, f))
		out[strcspn(out, "\r\n")] = '\0';
	while (fgetc(f) != EOF)
		;
	rc = pclose(f);
	return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* 1 if redis-server and redis-cli are on PATH. */
L4C_FN int l4c_available(void)
{
	return system("command -v redis-server >/dev/null 2>&1 && "
		      "command -v redis-cli >/dev/null 2>&1") == 0;
}

/* Starts the cluster.  Returns 0, 77 (not installed) or -1. */
L4C_FN int l4c_start(struct l4c *c)
{
	char pid[32], line[64];
	int rc;

	memset(c, 0, sizeof(*c));
	if (!l4c_available())
		return 77;
	if (l4c_find_script(c) != 0) {
		fprintf(stderr, "l4cluster: tests/l4cluster.sh not found\n");
		return -1;
	}
	snprintf(c->dir, sizeof(c->dir), "/tmp/kvt-l4c-XXXXXX");
	if (!mkdtemp(c->dir))
		return -1;
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("L4CLUSTER_OWNER", pid, 1);
	rc = l4c_sh_out(c, line, sizeof(line), "start '%s'", c->dir);
	unsetenv("L4CLUSTER_OWNER");
	if (rc != 0 || atoi(line) <= 0) {
		fprintf(stderr, "l4cluster: start failed (%d)\n", rc);
		l4c_sh(c, "stop '%s'", c->dir);
		return rc == 77 ? 77 : -1;
	}
	c->base = atoi(line);
	for (int i = 0; i < L4C_NODES; i++)
		c->ports[i] = c->base + i;
	snprintf(c->url, sizeof(c->url),
		 "redis-cluster://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d,"
		 "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
		 c->ports[0], c->ports[1], c->ports[2], c->ports[3],
		 c->ports[4], c->ports[5]);
	return 0;
}

/* Stops every node and removes the folder.  Safe to call twice. */
L4C_FN void l4c_stop(struct l4c *c)
{
	char cmd[256];

	if (!c->dir[0])
		return;
	l4c_sh(c, "stop '%s'", c->dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "l4cluster: could not remove %s\n", c->dir);
	c->dir[0] = '\0';
}

/* Ports of the live masters (at most max); returns how many. */
L4C_FN int l4c_masters(const struct l4c *c, int *ports, int max)
{
	char cmd[PATH_MAX + 300], line[64];
	FILE *f;
	int n = 0;

	snprintf(cmd, sizeof(cmd), "sh '%s' masters '%s'", c->script, c->dir);
	f = popen(cmd, "r");
	if (!f)
		return 0;
	while (n < max && fgets(line, sizeof(line), f))
		if (atoi(line) > 0)
			ports[n++] = atoi(line);
	pclose(f);
	return n;
}

/* SIGKILLs the node on port. */
L4C_FN int l4c_kill(const struct l4c *c, int port)
{
	return l4c_sh(c, "kill '%s' %d", c->dir, port);
}

/* Waits (at most secs) until every live node reports cluster_state:ok. */
L4C_FN int l4c_wait(const struct l4c *c, int secs)
{
	return l4c_sh(c, "wait '%s' %d", c->dir, secs);
}

/* Waits until every replica has its master's writes. */
L4C_FN int l4c_sync(const struct l4c *c, int secs)
{
	return l4c_sh(c, "sync '%s' %d", c->dir, secs);
}

#endif /* L4CLUSTER_H */
