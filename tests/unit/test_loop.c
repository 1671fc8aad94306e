/*
 * test_loop.c - unit tests for the event backend (daemon/kvt_loop.c).
 *
 * Every test runs on both backends (io_uring where this process may create
 * a ring, skipped otherwise; epoll always) and checks that they deliver the
 * same completions: results in bytes or -errno, multishot accept with
 * KVT_LOOP_MORE, timeouts, cancellation, sendmsg with ancillary data
 * (SCM_RIGHTS) passed through untouched, recvmsg taking descriptors
 * (and reporting a truncated control buffer), and a descriptor number reused
 * after kvt_loop_close_fd() starting clean.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvt_loop.h"

struct done {
	uint64_t ud;
	int res;
	unsigned flags;
};

struct rec {
	struct done d[64];
	int n;
};

static void on_done(void *arg, uint64_t ud, int res, unsigned flags)
{
	struct rec *r = arg;

	assert_true(r->n < 64);
	r->d[r->n++] = (struct done){ ud, res, flags };
}

/* Runs the loop until at least want completions arrived (or ~2 s). */
static void run_until(struct kvt_loop *l, struct rec *r, int want)
{
	for (int i = 0; i < 200 && r->n < want; i++)
		assert_int_equal(kvt_loop_run_once(l, 10, on_done, r), 0);
	assert_true(r->n >= want);
}

static struct kvt_loop *open_loop(void **state)
{
	int backend = (int)(intptr_t)*state;
	struct kvt_loop *l = NULL;
	char err[128];
	int rc = kvt_loop_open(&l, backend, 64, err, sizeof(err));

	if (rc && backend == KVT_IO_URING)
		skip(); /* this kernel or sandbox refuses io_uring */
	assert_int_equal(rc, 0);
	assert_int_equal(kvt_loop_backend(l), backend);
	return l;
}

static void test_names(void **state)
{
	(void)state;
	assert_int_equal(kvt_io_backend_parse("auto"), KVT_IO_AUTO);
	assert_int_equal(kvt_io_backend_parse("io_uring"), KVT_IO_URING);
	assert_int_equal(kvt_io_backend_parse("epoll"), KVT_IO_EPOLL);
	assert_int_equal(kvt_io_backend_parse("poll"), -1);
	assert_string_equal(kvt_io_backend_name(KVT_IO_EPOLL), "epoll");
	assert_string_equal(kvt_io_backend_name(KVT_IO_URING), "io_uring");
}

static void test_recv_and_eof(void **state)
{
	struct kvt_loop *l = open_loop(state);
	struct rec r = { .n = 0 };
	/* Zeroed: memcheck cannot see io_uring write into it. */
	char buf[16] = { 0 };
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	kvt_loop_recv(l, sv[0], buf, sizeof(buf), 7);
	/* Nothing to read: nothing completes, and nothing blocks. */
	assert_int_equal(kvt_loop_run_once(l, 20, on_done, &r), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(write(sv[1], "hello", 5), 5);
	run_until(l, &r, 1);
	assert_int_equal(r.d[0].ud, 7);
	assert_int_equal(r.d[0].res, 5);
	assert_memory_equal(buf, "hello", 5);
	/* EOF completes with 0. */
	kvt_loop_recv(l, sv[0], buf, sizeof(buf), 8);
	close(sv[1]);
	run_until(l, &r, 2);
	assert_int_equal(r.d[1].ud, 8);
	assert_int_equal(r.d[1].res, 0);
	kvt_loop_close_fd(l, sv[0]);
	kvt_loop_close(l);
}

/* sendmsg keeps msg_control: a descriptor passed with SCM_RIGHTS arrives. */
static void test_sendmsg_rights(void **state)
{
	struct kvt_loop *l = open_loop(state);
	struct rec r = { .n = 0 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cb = { { 0 } }, rb;
	char ab[] = "ab", cde[] = "cde";
	struct iovec iov[2] = { { ab, 2 }, { cde, 3 } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2,
			      .msg_control = cb.buf,
			      .msg_controllen = sizeof(cb.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	int sv[2], passed = open("/dev/null", O_RDONLY | O_CLOEXEC), got = -1;
	char data[8];
	struct iovec riov = { data, sizeof(data) };
	struct msghdr rmsg = { .msg_iov = &riov, .msg_iovlen = 1,
			       .msg_control = rb.buf,
			       .msg_controllen = sizeof(rb.buf) };
	struct stat a, b;

	assert_true(passed >= 0);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &passed, sizeof(int));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	kvt_loop_sendmsg(l, sv[0], &msg, MSG_NOSIGNAL, 9);
	run_until(l, &r, 1);
	assert_int_equal(r.d[0].ud, 9);
	assert_int_equal(r.d[0].res, 5);
	assert_int_equal(recvmsg(sv[1], &rmsg, MSG_CMSG_CLOEXEC), 5);
	assert_memory_equal(data, "abcde", 5);
	cm = CMSG_FIRSTHDR(&rmsg);
	assert_non_null(cm);
	assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
	memcpy(&got, CMSG_DATA(cm), sizeof(int));
	assert_int_equal(fstat(got, &a), 0);
	assert_int_equal(fstat(passed, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	close(got);
	close(passed);
	/* A send to a closed peer completes with -EPIPE, no SIGPIPE. */
	close(sv[1]);
	msg.msg_control = NULL;
	msg.msg_controllen = 0;
	kvt_loop_sendmsg(l, sv[0], &msg, MSG_NOSIGNAL, 10);
	run_until(l, &r, 2);
	assert_int_equal(r.d[1].ud, 10);
	assert_int_equal(r.d[1].res, -EPIPE);
	kvt_loop_close_fd(l, sv[0]);
	kvt_loop_close(l);
}

/*
 * recvmsg takes descriptors (SCM_RIGHTS) with the bytes, close-on-exec,
 * and reports MSG_CTRUNC when they do not fit its control buffer (the
 * kernel closes those that did not fit); it waits for data like recv.
 */
static void test_recvmsg_rights(void **state)
{
	struct kvt_loop *l = open_loop(state);
	struct rec r = { .n = 0 };
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} cb = { { 0 } }, rb = { { 0 } };
	int sv[2], passed[2], got[2] = { -1, -1 };
	char data[8] = { 0 };
	char xyz[] = "xyz";
	struct iovec siov = { xyz, 3 }, riov = { data, sizeof(data) };
	struct msghdr msg = { .msg_iov = &siov, .msg_iovlen = 1,
			      .msg_control = cb.buf,
			      .msg_controllen = CMSG_SPACE(2 * sizeof(int)) };
	struct msghdr rmsg = { .msg_iov = &riov, .msg_iovlen = 1,
			       .msg_control = rb.buf,
			       .msg_controllen = sizeof(rb.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	struct stat a, b;

	passed[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	passed[1] = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	assert_true(passed[0] >= 0 && passed[1] >= 0);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
	memcpy(CMSG_DATA(cm), passed, sizeof(passed));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
	kvt_loop_recvmsg(l, sv[0], &rmsg, MSG_CMSG_CLOEXEC, 11);
	assert_int_equal(kvt_loop_run_once(l, 20, on_done, &r), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(sendmsg(sv[1], &msg, MSG_NOSIGNAL), 3);
	run_until(l, &r, 1);
	assert_int_equal(r.d[0].ud, 11);
	assert_int_equal(r.d[0].res, 3);
	assert_memory_equal(data, "xyz", 3);
	assert_int_equal(rmsg.msg_flags & MSG_CTRUNC, 0);
	cm = CMSG_FIRSTHDR(&rmsg);
	assert_non_null(cm);
	assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
	assert_int_equal(cm->cmsg_len, CMSG_LEN(2 * sizeof(int)));
	memcpy(got, CMSG_DATA(cm), sizeof(got));
	for (int i = 0; i < 2; i++) {
		assert_int_equal(fstat(got[i], &a), 0);
		assert_int_equal(fstat(passed[i], &b), 0);
		assert_int_equal(a.st_rdev, b.st_rdev);
		assert_true(fcntl(got[i], F_GETFD) & FD_CLOEXEC);
		close(got[i]);
	}
	/* Room for one descriptor only: truncated, and said so. */
	memset(&rb, 0, sizeof(rb));
	rmsg.msg_controllen = CMSG_LEN(sizeof(int));
	rmsg.msg_flags = 0;
	kvt_loop_recvmsg(l, sv[0], &rmsg, MSG_CMSG_CLOEXEC, 12);
	assert_int_equal(sendmsg(sv[1], &msg, MSG_NOSIGNAL), 3);
	run_until(l, &r, 2);
	assert_int_equal(r.d[1].res, 3);
	assert_true(rmsg.msg_flags & MSG_CTRUNC);
	cm = CMSG_FIRSTHDR(&rmsg);
	if (cm && cm->cmsg_type == SCM_RIGHTS) {
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			       sizeof(fd));
			close(fd);
		}
	}
	close(passed[0]);
	close(passed[1]);
	close(sv[1]);
	kvt_loop_close_fd(l, sv[0]);
	kvt_loop_close(l);
}

static int listen_here(char *path, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	snprintf(path, cap, "/tmp/kvt_loop_test.%d.sock", (int)getpid());
	unlink(path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

static int dial(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Multishot accept, then cancelling it. */
static void test_accept_cancel(void **state)
{
	struct kvt_loop *l = open_loop(state);
	struct rec r = { .n = 0 };
	char path[108];
	int lfd = listen_here(path, sizeof(path)), c[3];

	kvt_loop_accept(l, lfd, 1);
	for (int i = 0; i < 3; i++)
		c[i] = dial(path);
	run_until(l, &r, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r.d[i].ud, 1);
		assert_true(r.d[i].res >= 0);
		assert_true(r.d[i].flags & KVT_LOOP_MORE);
		assert_true(fcntl(r.d[i].res, F_GETFD) & FD_CLOEXEC);
		close(r.d[i].res);
		close(c[i]);
	}
	r.n = 0;
	kvt_loop_cancel(l, 1, 2);
	run_until(l, &r, 2);
	for (int i = 0; i < 2; i++) {
		if (r.d[i].ud == 1) {
			assert_int_equal(r.d[i].res, -ECANCELED);
			assert_false(r.d[i].flags & KVT_LOOP_MORE);
		} else {
			assert_int_equal(r.d[i].ud, 2);
			assert_int_equal(r.d[i].res, 0);
		}
	}
	/* Cancelled: a new client is not accepted. */
	c[0] = dial(path);
	r.n = 0;
	assert_int_equal(kvt_loop_run_once(l, 20, on_done, &r), 0);
	assert_int_equal(r.n, 0);
	close(c[0]);
	close(lfd);
	unlink(path);
	kvt_loop_close(l);
}

static void test_timeout(void **state)
{
	struct kvt_loop *l = open_loop(state);
	struct rec r = { .n = 0 };

	kvt_loop_timeout(l, 30, 5);
	assert_int_equal(kvt_loop_run_once(l, 0, on_done, &r), 0);
	assert_int_equal(r.n, 0);
	run_until(l, &r, 1);
	assert_int_equal(r.d[0].ud, 5);
	assert_int_equal(r.d[0].res, -ETIME);
	kvt_loop_close(l);
}

/*
 * A descriptor closed through the loop and reused by number at once (as
 * the kernel does: lowest free number) is watched afresh.
 */
static void test_fd_reuse(void **state)
{
	struct kvt_loop *l = open_loop(state);
	struct rec r = { .n = 0 };
	char buf[8];
	int sv[2], sw[2];

	for (int round = 0; round < 3; round++) {
		r.n = 0;
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC,
					    0, sv), 0);
		kvt_loop_recv(l, sv[0], buf, sizeof(buf), 1);
		close(sv[1]);
		run_until(l, &r, 1);
		assert_int_equal(r.d[0].res, 0);
		kvt_loop_close_fd(l, sv[0]);
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC,
					    0, sw), 0);
		kvt_loop_recv(l, sw[0], buf, sizeof(buf), 2);
		assert_int_equal(write(sw[1], "x", 1), 1);
		run_until(l, &r, 2);
		assert_int_equal(r.d[1].ud, 2);
		assert_int_equal(r.d[1].res, 1);
		kvt_loop_close_fd(l, sw[0]);
		close(sw[1]);
	}
	kvt_loop_close(l);
}

#define BOTH(fn)                                                          \
	cmocka_unit_test_prestate(fn, (void *)(intptr_t)KVT_IO_URING),    \
	cmocka_unit_test_prestate(fn, (void *)(intptr_t)KVT_IO_EPOLL)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		BOTH(test_recv_and_eof),
		BOTH(test_sendmsg_rights),
		BOTH(test_recvmsg_rights),
		BOTH(test_accept_cancel),
		BOTH(test_timeout),
		BOTH(test_fd_reuse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
