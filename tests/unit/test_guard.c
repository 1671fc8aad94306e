/*
 * test_guard.c - kvt_guard: a copy into (and out of) a mapping whose file
 * was truncated returns KVT_EFAULT and the process goes on, on the main
 * thread, on several threads at once and on a thread that blocks every
 * signal (as the tier workers do); a SIGBUS outside the declared ranges is
 * not swallowed (the child that takes it dies of it, the handler it
 * replaced having been the default); a guarded function
 * that does not fault returns its own result.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvt_guard.h"
#include "kvtier_errors.h"

#define LEN (1u << 20)

struct copy {
	void *dst;
	const void *src;
	size_t n;
};

static int do_copy(void *arg)
{
	struct copy *c = arg;

	memcpy(c->dst, c->src, c->n);
	return 7;
}

/* A memfd of LEN bytes mapped shared; *fd gets the descriptor. */
static uint8_t *map_file(int *fd)
{
	uint8_t *p;

	*fd = memfd_create("test_guard", MFD_CLOEXEC);
	assert_true(*fd >= 0);
	assert_int_equal(ftruncate(*fd, LEN), 0);
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void test_no_fault(void **state)
{
	static uint8_t src[4096], dst[4096];
	struct kvt_guard_range r = { dst, sizeof(dst) };
	struct copy c = { dst, src, sizeof(dst) };
	size_t which = 99;

	(void)state;
	assert_int_equal(kvt_guard_init(), 0);
	memset(src, 0x5a, sizeof(src));
	assert_int_equal(kvt_guard_run(&r, 1, do_copy, &c, &which), 7);
	assert_int_equal(which, 99);
	assert_memory_equal(dst, src, sizeof(src));
}

/* Writing into, then reading out of, a truncated file: both contained. */
static void test_truncated(void **state)
{
	uint8_t *buf = malloc(LEN);
	uint64_t f0 = kvt_guard_faults();
	struct kvt_guard_range r[2];
	struct copy c;
	size_t which = 99;
	int fd;
	uint8_t *p = map_file(&fd);

	(void)state;
	assert_int_equal(kvt_guard_init(), 0);
	memset(buf, 1, LEN);
	r[0] = (struct kvt_guard_range){ buf, 16 }; /* not the one */
	r[1] = (struct kvt_guard_range){ p, LEN };
	c = (struct copy){ p, buf, LEN };
	assert_int_equal(kvt_guard_run(r, 2, do_copy, &c, &which), 7);
	/* The client shrinks its file: the pages past 4 KiB are gone. */
	assert_int_equal(ftruncate(fd, 4096), 0);
	assert_int_equal(kvt_guard_run(r, 2, do_copy, &c, &which), KVT_EFAULT);
	assert_int_equal(which, 1);
	/* Reading from it faults the same way. */
	c = (struct copy){ buf, p, LEN };
	which = 99;
	assert_int_equal(kvt_guard_run(r, 2, do_copy, &c, &which), KVT_EFAULT);
	assert_int_equal(which, 1);
	assert_int_equal(kvt_guard_faults(), f0 + 2);
	/* The first page is still there, and the thread still works. */
	c = (struct copy){ p, buf, 4096 };
	assert_int_equal(kvt_guard_run(r, 2, do_copy, &c, NULL), 7);
	munmap(p, LEN);
	close(fd);
	free(buf);
}

static void *thread_main(void *arg)
{
	int block_all = *(int *)arg;
	uint8_t *buf = malloc(LEN);
	struct kvt_guard_range r;
	struct copy c;
	int fd, faults = 0;
	uint8_t *p;

	if (block_all) {
		sigset_t s;

		sigfillset(&s);
		pthread_sigmask(SIG_SETMASK, &s, NULL);
	}
	memset(buf, 2, LEN);
	for (int i = 0; i < 50; i++) {
		fd = memfd_create("test_guard", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, LEN))
			abort();
		p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			abort();
		r = (struct kvt_guard_range){ p, LEN };
		c = (struct copy){ p, buf, LEN };
		if (ftruncate(fd, (i % 4) * 4096))
			abort();
		if (kvt_guard_run(&r, 1, do_copy, &c, NULL) == KVT_EFAULT)
			faults++;
		munmap(p, LEN);
		close(fd);
	}
	free(buf);
	return (void *)(intptr_t)faults;
}

/* Four threads fault at once, two of them with every signal blocked. */
static void test_threads(void **state)
{
	pthread_t t[4];
	int block[4] = { 0, 1, 0, 1 };

	(void)state;
	assert_int_equal(kvt_guard_init(), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, thread_main,
						&block[i]),
				 0);
	for (int i = 0; i < 4; i++) {
		void *ret;

		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_int_equal((intptr_t)ret, 50);
	}
}

/* A SIGBUS outside the declared ranges kills, as without the guard. */
static void test_not_ours(void **state)
{
	int status, fd;
	pid_t pid;

	(void)state;
	assert_int_equal(kvt_guard_init(), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t *p = map_file(&fd);
		static uint8_t other[64], src[LEN];
		struct kvt_guard_range r = { other, sizeof(other) };
		struct copy c = { p, src, LEN };

		/*
		 * Behind the guard, the default action (cmocka catches
		 * SIGBUS during tests; the guard would chain to it).
		 */
		signal(SIGBUS, SIG_DFL);
		if (kvt_guard_init() || ftruncate(fd, 0))
			_exit(3);
		/* Guarded, but the faulting range was not declared. */
		kvt_guard_run(&r, 1, do_copy, &c, NULL);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_fault),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_not_ours),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
