/*
 * test_reload.c - SIGHUP on a real kvtierd (issue #17 break 6: a reload
 * said changed=0 and ignored allow-uid, ns-owner, max-value-size and
 * idle-timeout, and a revoked uid kept connecting and writing).
 *
 * Promises checked:
 *  - every setting of `kvtierd --help` is either applied and logged
 *    (event=reload setting=NAME old=... new=...) or logged as needing a
 *    restart (event=reload_needs_restart setting=NAME ...), one line
 *    each; the table below has a row per setting, and a setting missing
 *    from it fails the test, so a new one cannot be forgotten;
 *  - access lists apply to connections already open: a revoked uid's next
 *    request is refused with KVT_EDENIED and its connection closed, and it
 *    cannot connect again; an ns-owner change denies the old owner its
 *    namespace on its open connection; shm-allow-uid applies at the next
 *    HELLO;
 *  - limits and timeouts apply at once: max-value-size and max-key-size
 *    (new connections, and requests on old ones), idle-timeout,
 *    send-timeout, body-timeout, max-inflight; and the socket file takes
 *    the new socket-mode and socket-group.
 *
 * The daemon is started with nothing but --config, so that every setting
 * can change in the file.  Children drop to other uids (as in
 * test_access.c), so the access part needs root and is skipped without it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <grp.h>
#include <stdbool.h>

#include "integ_harness.h"
#include "kvt_frame.h"
#include "kvtier.h"

static struct integ_daemon D;
static char conf[320], logp[320];
static pid_t children[2]; /* test_access's, killed by teardown if left */

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++)
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
	integ_cleanup(&D);
	return 0;
}

/* Writes text, with socket and data-dir lines first, to the config file. */
static void write_conf(const char *text)
{
	FILE *f = fopen(conf, "w");

	assert_non_null(f);
	fprintf(f, "socket = %s\ndata-dir = %s\n%s", D.sock, D.data, text);
	assert_int_equal(fclose(f), 0);
}

/* The daemon's log so far (static buffer). */
static const char *log_text(void)
{
	static char buf[1 << 18];
	FILE *f = fopen(logp, "r");
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/*
 * Starts `kvtierd --config FILE` in a fresh folder, the file holding
 * text; its stderr goes to logp.  The socket is 0666 and the folder 0755
 * whenever text says so, for the children.
 */
static void start(const char *text)
{
	static const char *argv[4];

	snprintf(D.dir, sizeof(D.dir), "/tmp/kvtier-integ-XXXXXX");
	assert_non_null(mkdtemp(D.dir));
	assert_int_equal(chmod(D.dir, 0755), 0);
	snprintf(D.sock, sizeof(D.sock), "%s/kvtier.sock", D.dir);
	snprintf(D.data, sizeof(D.data), "%s/var", D.dir);
	snprintf(conf, sizeof(conf), "%s/kvtierd.conf", D.dir);
	snprintf(logp, sizeof(logp), "%s/daemon.log", D.dir);
	write_conf(text);
	argv[0] = integ_kvtierd();
	argv[1] = "--config";
	argv[2] = conf;
	argv[3] = NULL;
	D.log_path = logp;
	D.pid = fork();
	assert_true(D.pid >= 0);
	if (D.pid == 0) {
		int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (fd >= 0)
			dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	assert_int_equal(integ_wait_socket(&D), 0);
}

/* Reloads finished (applied or refused) so far, by the log. */
static unsigned reloads_done(void)
{
	const char *l = log_text();

	return count(l, "event=reloaded ") + count(l, "event=reload_failed ");
}

/* Rewrites the config with text, sends SIGHUP and waits for the reload. */
static void reload(const char *text)
{
	unsigned before = reloads_done();

	write_conf(text);
	assert_int_equal(kill(D.pid, SIGHUP), 0);
	for (int i = 0; i < 1000 && reloads_done() == before; i++)
		integ_sleep_ms(10);
	if (reloads_done() == before)
		fail_msg("no end of the reload in the log after SIGHUP:\n%s",
			 log_text());
}

static kvt_client *connect_ok(void)
{
	kvt_client *c = NULL;

	assert_int_equal(kvt_connect(&c, D.sock), 0);
	return c;
}

static uint64_t stat_u64(const char *name)
{
	kvt_client *c = connect_ok();
	char *j = NULL;
	size_t n;
	uint64_t v = UINT64_MAX;

	assert_int_equal(kvt_stats_json(c, &j, &n), 0);
	assert_int_equal(integ_json_u64(j, NULL, name, &v), 0);
	free(j);
	kvt_close(c);
	return v;
}

/* ---- every setting: applied, or named as needing a restart ---------- */

/*
 * One row per setting of kvtierd --help: a value before and after, and
 * whether a reload applies it (1) or names it as needing a restart (0).
 * The values before are the defaults where that matters (l3-size 0: no
 * region files; shm-size 0: the default arena).
 */
static const struct {
	const char *name, *before, *after;
	int live;
} rows[] = {
	{ "socket", NULL, "/tmp/kvtier-reload-never.sock", 0 },
	{ "data-dir", NULL, "/tmp/kvtier-reload-never", 0 },
	{ "l1-size", "64M", "32M", 0 },
	{ "l2-size", "32M", "16M", 0 },
	{ "l3-size", "0", "64M", 0 },
	{ "l2-level", "1", "3", 0 },
	{ "workers", "2", "1", 0 },
	{ "l3-region-size", "16M", "8M", 0 },
	{ "l3-write-rate", "0", "100M", 1 },
	{ "max-pinned", "0", "8M", 0 },
	{ "spill-timeout", "30", "5", 1 },
	{ "no-spill", "no", "yes", 1 },
	{ "socket-mode", "0600", "0660", 1 },
	{ "socket-group", "", "daemon", 1 },
	{ "allow-uid", "", "0", 1 },
	{ "allow-gid", "", "0", 1 },
	{ "ns-owner", "", "reload-test/=0", 1 },
	{ "no-shm", "no", "yes", 0 },
	{ "shm-size", "0", "256M", 0 },
	{ "shm-prefault", "no", "yes", 0 },
	{ "shm-threshold", "64K", "128K", 0 },
	{ "shm-lease-max", "256M", "128M", 1 },
	{ "shm-allow-uid", "", "65534", 1 },
	{ "reg-max", "64", "8", 1 },
	{ "reg-max-bytes", "1T", "1G", 1 },
	{ "max-key-size", "1K", "512", 1 },
	{ "max-value-size", "256M", "64M", 1 },
	{ "max-inflight", "1G", "512M", 1 },
	{ "idle-timeout", "0", "100", 1 },
	{ "send-timeout", "60", "30", 1 },
	{ "body-timeout", "10", "20", 1 },
	{ "log-level", "info", "debug", 1 },
	{ "io-backend", "auto", "epoll", 0 },
	{ "busy-poll", "50", "0", 1 },
	{ "max-connections", "4096", "100", 1 },
	{ "l4", "", "redis-cluster://127.0.0.1:1", 0 },
	{ "l4-password", "", "kvt-reload-secret", 0 },
	{ "l4-password-file", "", "/tmp/kvtier-reload-never.pw", 0 },
	{ "l4-write", "evict", "put", 0 },
	{ "l4-ttl", "0", "3600", 0 },
	{ "l4-threads", "4", "2", 0 },
	{ "l4-timeout", "0", "500", 0 },
	{ "l4-connect-timeout", "0", "200", 0 },
	{ "l4-queue-size", "256M", "64M", 0 },
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static void conf_text(char *buf, size_t cap, int after)
{
	size_t off = 0;

	for (size_t i = 0; i < NROWS; i++) {
		const char *v = after ? rows[i].after : rows[i].before;

		if (!v) /* socket and data-dir: write_conf's lines */
			continue;
		off += (size_t)snprintf(buf + off, cap - off, "%s = %s\n",
					rows[i].name, v);
		assert_true(off < cap);
	}
}

/* Every --flag of kvtierd --help that is a setting has a row. */
static void test_rows_cover_help(void **state)
{
	char cmd[300], line[512];
	FILE *p;
	unsigned flags = 0;

	(void)state;
	snprintf(cmd, sizeof(cmd), "'%s' --help", integ_kvtierd());
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p)) {
		char name[64];
		size_t i;

		if (sscanf(line, " --%63[a-z0-9-]", name) != 1 ||
		    !strcmp(name, "config") || !strcmp(name, "check") ||
		    !strcmp(name, "help") || !strcmp(name, "version"))
			continue;
		flags++;
		for (i = 0; i < NROWS && strcmp(rows[i].name, name); i++)
			;
		if (i == NROWS)
			fail_msg("setting %s (kvtierd --help) has no row in "
				 "test_reload.c: say whether a reload applies "
				 "it", name);
	}
	assert_int_equal(pclose(p), 0);
	assert_int_equal(flags, NROWS);
}

static void test_every_setting(void **state)
{
	char before[4096], after[4096], pat[160];
	unsigned live = 0, restart = 0;
	struct group *g = getgrnam("daemon");
	struct stat st;
	const char *l;

	(void)state;
	conf_text(before, sizeof(before), 0);
	conf_text(after, sizeof(after), 1);
	start(before);
	reload(after);
	l = log_text();
	for (size_t i = 0; i < NROWS; i++) {
		snprintf(pat, sizeof(pat), "event=%s setting=%s old=",
			 rows[i].live ? "reload" : "reload_needs_restart",
			 rows[i].name);
		if (count(l, pat) != 1)
			fail_msg("expected one '%s' line:\n%s", pat, l);
		live += rows[i].live;
		restart += !rows[i].live;
	}
	snprintf(pat, sizeof(pat), "event=reloaded changed=%u needs_restart=%u",
		 live, restart);
	if (!strstr(l, pat))
		fail_msg("expected '%s':\n%s", pat, l);
	/* The L4 password is named, never shown. */
	if (strstr(l, "kvt-reload-secret"))
		fail_msg("the L4 password is in the log:\n%s", l);
	/* What needs a restart did not change: L1 is still 64M. */
	kvt_client *c = connect_ok();
	char *j = NULL;
	size_t n;
	uint64_t v = 0;
	assert_int_equal(kvt_stats_json(c, &j, &n), 0);
	assert_int_equal(integ_json_u64(j, "l1", "capacity_bytes", &v), 0);
	assert_int_equal(v, 64u << 20);
	/* What applies did: busy polling is off. */
	assert_int_equal(integ_json_u64(j, "busy_poll", "max_us", &v), 0);
	assert_int_equal(v, 0);
	free(j);
	kvt_close(c);
	/* The socket file took the new mode and group. */
	assert_int_equal(stat(D.sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	if (g && geteuid() == 0)
		assert_int_equal(st.st_gid, g->gr_gid);
	/*
	 * The same file again: nothing more to apply, and the settings that
	 * wait for a restart are named again (the running values still
	 * differ from the file's).
	 */
	reload(after);
	snprintf(pat, sizeof(pat), "event=reloaded changed=0 needs_restart=%u",
		 restart);
	assert_non_null(strstr(log_text(), pat));
}

/* A config that names an unknown user changes nothing. */
static void test_bad_reload_keeps_settings(void **state)
{
	(void)state;
	start("max-value-size = 1M\nl3-size = 0\n");
	reload("max-value-size = 512K\nl3-size = 0\n"
	       "allow-uid = no-such-user-kvtier\n");
	assert_non_null(strstr(log_text(), "event=reload_failed"));
	assert_non_null(strstr(log_text(), "unknown user"));
	assert_null(strstr(log_text(), "setting=max-value-size"));
	kvt_client *c = connect_ok(); /* allow-uid was not applied */
	static uint8_t v[768 << 10];
	assert_int_equal(kvt_put(c, NULL, "k", 1, v, sizeof(v), NULL), 0);
	kvt_close(c);
}

/* ---- access lists, on connections already open ----------------------- */

/* What a child does, in two halves around the reload. */
enum { ROLE_REVOKED, ROLE_OWNER };

/*
 * A child as uid (and gid uid): first half, then it reports "ready" and
 * waits for the parent's go, then the second half.  Results are ints
 * written to wfd in order.
 */
static pid_t child(uid_t uid, int role, int wfd, int rfd)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid)
		return pid;
	/* Only its own ends: a parent that gives up must give it EOF. */
	for (int fd = 3; fd < 256; fd++)
		if (fd != wfd && fd != rfd)
			close(fd);
	if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
		_exit(4);
	kvt_client *c = NULL, *c2 = NULL;
	int r[6] = { 0 };
	char go;

	r[0] = kvt_connect(&c, D.sock);
	if (role == ROLE_REVOKED) {
		r[1] = r[0] ? r[0] : kvt_put(c, "w/", "a", 1, "v", 1, NULL);
	} else {
		r[1] = r[0] ? r[0]
			    : kvt_put(c, "tenantA/x", "a", 1, "v", 1, NULL);
		/* Not trusted with the arena yet: the socket path. */
		r[2] = kvt_client_shm(c);
	}
	if (write(wfd, r, sizeof(int) * 3) != (ssize_t)(sizeof(int) * 3) ||
	    read(rfd, &go, 1) != 1)
		_exit(5);
	if (role == ROLE_REVOKED) {
		/* Refused, told why, then the connection is gone. */
		r[0] = kvt_put(c, "w/", "b", 1, "v", 1, NULL);
		r[1] = strstr(kvt_client_errmsg(c), "no longer allowed") != NULL;
		r[2] = kvt_ping(c);
		r[3] = kvt_connect(&c2, D.sock);
		kvt_close(c2);
		r[4] = r[5] = 0;
	} else {
		r[0] = kvt_put(c, "tenantA/x", "b", 1, "v", 1, NULL);
		r[1] = kvt_put(c, "tenantB/x", "b", 1, "v", 1, NULL);
		r[2] = kvt_ping(c);
		/* shm-allow-uid now lists this uid: the next HELLO gets it. */
		r[3] = kvt_connect(&c2, D.sock);
		r[4] = r[3] ? -1 : kvt_client_shm(c2);
		r[5] = r[3] ? -1 : kvt_put(c2, "tenantA/x", "c", 1, "v", 1, NULL);
		kvt_close(c2);
	}
	kvt_close(c);
	if (write(wfd, r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(5);
	_exit(0);
}

static void read_ints(int fd, int *v, size_t n)
{
	assert_int_equal(read(fd, v, n * sizeof(int)), (ssize_t)(n * sizeof(int)));
}

static void test_access_applies_to_open_connections(void **state)
{
	static const char before[] =
		"allow-uid = 0,65534,65533\nns-owner = tenantA/=65533\n"
		"socket-mode = 0666\nl3-size = 0\n";
	static const char after[] =
		"allow-uid = 0,65533\nns-owner = tenantA/=65532\n"
		"shm-allow-uid = 65533\nsocket-mode = 0666\nl3-size = 0\n";
	int up[2][2], down[2][2], r[6], st;
	pid_t pid[2];

	(void)state;
	if (geteuid() != 0) {
		skip();
		return;
	}
	start(before);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pipe(up[i]), 0);
		assert_int_equal(pipe(down[i]), 0);
		pid[i] = children[i] = child(i == 0 ? 65534 : 65533,
					     i == 0 ? ROLE_REVOKED : ROLE_OWNER,
					     up[i][1], down[i][0]);
		close(up[i][1]);
		close(down[i][0]);
	}
	read_ints(up[0][0], r, 3);
	assert_int_equal(r[0], 0); /* uid 65534 connects */
	assert_int_equal(r[1], 0); /* and writes */
	read_ints(up[1][0], r, 3);
	assert_int_equal(r[1], 0); /* uid 65533 writes its tenantA/ */
	assert_int_equal(r[2], 0); /* through the socket */

	reload(after);
	for (int i = 0; i < 2; i++)
		assert_int_equal(write(down[i][1], "g", 1), 1);

	read_ints(up[0][0], r, 6);
	assert_int_equal(r[0], KVT_EDENIED); /* the open connection: refused */
	assert_int_equal(r[1], 1);	      /* saying why */
	assert_int_equal(r[2], KVT_ECLOSED); /* and then closed */
	assert_int_equal(r[3], KVT_EDENIED); /* no new connection either */
	read_ints(up[1][0], r, 6);
	assert_int_equal(r[0], KVT_EDENIED); /* tenantA/ is 65532's now */
	assert_int_equal(r[1], 0);	      /* other namespaces still work */
	assert_int_equal(r[2], 0);
	assert_int_equal(r[3], 0);
	assert_int_equal(r[4], 1); /* shm-allow-uid: given the arena */
	assert_int_equal(r[5], KVT_EDENIED);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pid[i], &st, 0), pid[i]);
		children[i] = 0;
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		close(up[i][0]);
		close(down[i][1]);
	}
	assert_non_null(strstr(log_text(), "event=access_revoked conn="));
	assert_non_null(strstr(log_text(), "uid=65534"));
	assert_non_null(strstr(log_text(), "event=request_denied conn="));
	assert_int_equal(stat_u64("connections_revoked"), 1);
}

/* ---- limits and timeouts, at once ------------------------------------ */

/* A raw connection that sends a PUT header, its prefix and nothing more. */
static int stalled_put(const char *key, size_t value_len)
{
	struct kvt_put_req pr = { .k = { .key = (const uint8_t *)key,
					 .key_len = strlen(key) },
				  .value_len = value_len };
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_PUT,
				      .request_id = 1 };
	uint8_t buf[KVT_HDR_SIZE + 64];
	size_t w;
	int fd = integ_raw_connect(&D);

	assert_true(fd >= 0);
	assert_int_equal(kvt_put_req_encode_prefix(buf + KVT_HDR_SIZE, 64, &pr,
						   &w), 0);
	h.body_len = (uint32_t)(w + value_len);
	kvt_frame_header_encode(buf, &h);
	assert_int_equal(write(fd, buf, KVT_HDR_SIZE + w),
			 (ssize_t)(KVT_HDR_SIZE + w));
	return fd;
}

/* Waits up to ms for the daemon to close fd; true if it did. */
static bool closed_within(int fd, int ms)
{
	for (int i = 0; i < ms / 50; i++) {
		char b;
		ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN))
			return true;
		integ_sleep_ms(50);
	}
	return false;
}

static void test_limits_and_timeouts(void **state)
{
	static const char before[] =
		"l3-size = 0\nmax-value-size = 1M\nmax-key-size = 1K\n"
		"idle-timeout = 0\nsend-timeout = 60\nmax-inflight = 64M\n";
	static const char after[] =
		"l3-size = 0\nmax-value-size = 512K\nmax-key-size = 16\n"
		"idle-timeout = 2\nsend-timeout = 1\nbody-timeout = 1\n"
		"max-inflight = 1M\n";
	static uint8_t v[768 << 10];
	kvt_client *old, *c;
	int a, b, w, reader;

	(void)state;
	setenv("KVTIER_SHM", "0", 1); /* values over the socket */
	start(before);
	old = connect_ok();
	assert_int_equal(kvt_put(old, NULL, "v", 1, v, sizeof(v), NULL), 0);
	reload(after);

	/* max-value-size: refused on a new connection and on the old one,
	 * which stays usable. */
	c = connect_ok();
	assert_int_equal(kvt_put(c, NULL, "w", 1, v, sizeof(v), NULL),
			 KVT_ETOOBIG);
	assert_int_equal(kvt_put(c, NULL, "0123456789abcdefX", 17, "v", 1,
				 NULL), KVT_ETOOBIG);
	assert_int_equal(kvt_put(c, NULL, "0123456789abcdef", 16, "v", 1,
				 NULL), 0);
	kvt_close(c);
	assert_int_equal(kvt_put(old, NULL, "w", 1, v, sizeof(v), NULL),
			 KVT_ETOOBIG);
	assert_int_equal(kvt_put(old, NULL, "0123456789abcdefX", 17, "v", 1,
				 NULL), KVT_ETOOBIG);
	assert_int_equal(kvt_ping(old), 0);

	/* max-inflight 1M: two stalled 500K bodies hold it; a third waits
	 * (body-timeout then ends the two, and the third goes on). */
	a = stalled_put("a", 500 << 10);
	b = stalled_put("b", 500 << 10);
	w = stalled_put("c", 500 << 10);
	integ_sleep_ms(300);
	assert_int_equal(stat_u64("mem_waits"), 1);

	/* body-timeout 1: the stalled bodies are closed, counted. */
	assert_true(closed_within(a, 4000));
	assert_true(closed_within(b, 4000));
	assert_true(closed_within(w, 4000));
	assert_int_equal(stat_u64("body_timeouts"), 3);

	/* send-timeout 1: a client that reads none of its replies. */
	reader = integ_raw_connect(&D);
	{
		uint8_t frames[100 * 48];
		size_t off = 0;

		for (int i = 0; i < 100; i++) {
			struct kvt_keyref k = { .key = (const uint8_t *)"v",
						.key_len = 1 };
			struct kvt_frame_header h = {
				.version = KVT_PROTO_VERSION,
				.opcode = KVT_OP_GET,
				.request_id = (uint64_t)i + 1
			};
			size_t n;

			assert_int_equal(kvt_key_req_encode(frames + off +
							    KVT_HDR_SIZE, 24,
							    &k, &n), 0);
			h.body_len = (uint32_t)n;
			kvt_frame_header_encode(frames + off, &h);
			off += KVT_HDR_SIZE + n;
		}
		assert_int_equal(write(reader, frames, off), (ssize_t)off);
	}
	for (int i = 0; i < 80 && stat_u64("slow_closed") == 0; i++)
		integ_sleep_ms(100);
	assert_int_equal(stat_u64("slow_closed"), 1);
	close(reader);

	/* idle-timeout 2: the old connection, idle since, is closed. */
	integ_sleep_ms(3500);
	assert_int_equal(kvt_ping(old), KVT_ECLOSED);
	kvt_close(old);
	assert_true(stat_u64("idle_closed") >= 1);
	close(a);
	close(b);
	close(w);
	unsetenv("KVTIER_SHM");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rows_cover_help),
		cmocka_unit_test_teardown(test_every_setting, teardown),
		cmocka_unit_test_teardown(test_bad_reload_keeps_settings,
					  teardown),
		cmocka_unit_test_teardown(test_access_applies_to_open_connections,
					  teardown),
		cmocka_unit_test_teardown(test_limits_and_timeouts, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
