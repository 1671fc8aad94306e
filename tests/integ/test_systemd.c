/*
 * test_systemd.c - the test plays systemd's part: it passes a listening
 * socket as fd 3 with LISTEN_FDS/LISTEN_PID (socket activation), listens on
 * a NOTIFY_SOCKET datagram socket for READY=1 / RELOADING=1 / STOPPING=1,
 * and sends SIGHUP after editing the config file (reload).  Also checks the
 * latency figures in the stats.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "integ_harness.h"
#include "kvtier.h"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/kvtier-sd-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int bind_unix(int type, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type, 0);

	assert_true(fd >= 0);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Waits up to ms for a notify datagram containing want. */
static int expect_notify(int nfd, const char *want, int ms)
{
	char buf[512];

	for (;;) {
		struct pollfd p = { .fd = nfd, .events = POLLIN };
		if (poll(&p, 1, ms) != 1)
			return -1;
		ssize_t n = recv(nfd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return -1;
		buf[n] = '\0';
		if (strstr(buf, want))
			return 0;
	}
}

/*
 * Forks kvtierd with extra environment set up in the child (LISTEN_PID must
 * be the daemon's own pid, so it is set after fork).
 */
static pid_t spawn(const char *const *argv, int listen_fd, const char *notify,
		   const char *log)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		char num[32];
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (lfd >= 0)
			dup2(lfd, 2);
		if (notify)
			setenv("NOTIFY_SOCKET", notify, 1);
		if (listen_fd >= 0) {
			if (listen_fd != 3) {
				dup2(listen_fd, 3);
				close(listen_fd);
			}
			snprintf(num, sizeof(num), "%d", (int)getpid());
			setenv("LISTEN_PID", num, 1);
			setenv("LISTEN_FDS", "1", 1);
		}
		/* KVTIER_TEST_IO_BACKEND: as integ_spawn() does. */
		const char *be = getenv("KVTIER_TEST_IO_BACKEND");
		const char *av[64];
		int n = 0;

		while (argv[n] && n < 60) {
			av[n] = argv[n];
			n++;
		}
		if (be && *be) {
			av[n++] = "--io-backend";
			av[n++] = be;
		}
		av[n] = NULL;
		execv(av[0], (char *const *)av);
		_exit(127);
	}
	return pid;
}

static int wait_exit(pid_t pid)
{
	int st = 0;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_notify_activation_reload(void **state)
{
	char sock[128], nsock[128], conf[128], log[128], data[128];
	kvt_client *c = NULL;
	FILE *f;
	int lfd, nfd;
	pid_t pid;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/kvtier.sock", dir);
	snprintf(nsock, sizeof(nsock), "%s/notify", dir);
	snprintf(conf, sizeof(conf), "%s/kvtierd.conf", dir);
	snprintf(log, sizeof(log), "%s/daemon.log", dir);
	snprintf(data, sizeof(data), "%s/var", dir);

	f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "# test config\nlog-level = info\nl3-size = 0\n"
		   "max-connections = 100\n");
	fclose(f);

	/* systemd's side: the listening socket and the notify socket. */
	lfd = bind_unix(SOCK_STREAM, sock);
	assert_int_equal(listen(lfd, 16), 0);
	nfd = bind_unix(SOCK_DGRAM, nsock);

	const char *argv[] = { integ_kvtierd(), "--config", conf,
			       "--data-dir", data,
			       /* Ignored: the passed socket wins. */
			       "--socket", "/nonexistent/dir/x.sock", NULL };
	pid = spawn(argv, lfd, nsock, log);
	close(lfd);
	assert_int_equal(expect_notify(nfd, "READY=1", 10000), 0);

	/* Served on the socket we passed. */
	assert_int_equal(kvt_connect(&c, sock), 0);
	assert_int_equal(kvt_put(c, NULL, "k", 1, "v", 1, NULL), 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(kvt_exists(c, NULL, "k", 1), 1);

	/* Latency per operation is in the stats. */
	char *json = NULL;
	size_t n;
	assert_int_equal(kvt_stats_json(c, &json, &n), 0);
	assert_non_null(strstr(json, "\"latency_us\":{\"get\":{\"count\":"));
	assert_non_null(strstr(json, "\"exists\":{\"count\":50,\"sum\":"));
	assert_non_null(strstr(json, "\"put\":{\"count\":1,"));
	free(json);
	kvt_close(c);

	/* SIGHUP: the new log level and limit apply, and are logged. */
	f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "log-level = debug\nl3-size = 0\nmax-connections = 7\n"
		   "busy-poll = 0\n");
	fclose(f);
	kill(pid, SIGHUP);
	assert_int_equal(expect_notify(nfd, "RELOADING=1", 10000), 0);
	assert_int_equal(expect_notify(nfd, "READY=1", 10000), 0);
	/* busy-poll applies at once: the stats say so. */
	{
		uint64_t v = 99;

		assert_int_equal(kvt_connect(&c, sock), 0);
		assert_int_equal(kvt_stats_json(c, &json, &n), 0);
		assert_int_equal(integ_json_u64(json, "busy_poll", "max_us",
						&v), 0);
		assert_int_equal(v, 0);
		free(json);
		kvt_close(c);
	}

	/* A bad config on reload keeps the running settings. */
	f = fopen(conf, "w");
	assert_non_null(f);
	fprintf(f, "log-level = loud\n");
	fclose(f);
	kill(pid, SIGHUP);
	assert_int_equal(expect_notify(nfd, "READY=1", 10000), 0);
	assert_int_equal(kvt_connect(&c, sock), 0);
	assert_int_equal(kvt_ping(c), 0);
	kvt_close(c);

	/* SIGTERM: STOPPING=1, exit 0, and systemd's socket file stays. */
	kill(pid, SIGTERM);
	assert_int_equal(expect_notify(nfd, "STOPPING=1", 10000), 0);
	assert_int_equal(wait_exit(pid), 0);
	struct stat st;
	assert_int_equal(stat(sock, &st), 0);
	close(nfd);

	/* The log says what changed. */
	char buf[8192] = "";
	f = fopen(log, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	assert_non_null(strstr(buf, "event=socket_activated"));
	assert_non_null(strstr(buf, "event=reload setting=log-level old=info "
				    "new=debug"));
	assert_non_null(strstr(buf, "setting=max-connections old=100 new=7"));
	assert_non_null(strstr(buf, "setting=busy-poll old=50 new=0"));
	assert_non_null(strstr(buf, "event=reload_failed"));
}

/* A bogus fd 3 under LISTEN_FDS is an error, not a silent bind. */
static void test_bad_activation_fd(void **state)
{
	char log[128], data[128], sock[128];
	int fd;

	(void)state;
	snprintf(log, sizeof(log), "%s/bad.log", dir);
	snprintf(data, sizeof(data), "%s/var2", dir);
	snprintf(sock, sizeof(sock), "%s/bad.sock", dir);
	fd = open("/dev/null", O_RDONLY);
	const char *argv[] = { integ_kvtierd(), "--l3-size", "0", "--data-dir",
			       data, "--socket", sock, NULL };
	pid_t pid = spawn(argv, fd, NULL, log);
	close(fd);
	assert_int_equal(wait_exit(pid), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_activation_reload),
		cmocka_unit_test(test_bad_activation_fd),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
