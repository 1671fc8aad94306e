/*
 * test_path.c - unit tests for proto/kvt_path.c: the default socket path
 * that daemon and client agree on.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvt_path.h"
#include "kvtier_errors.h"

/* Each test starts from an environment without either variable. */
static int clear_env(void **state)
{
	(void)state;
	unsetenv("KVTIER_SOCKET");
	unsetenv("XDG_RUNTIME_DIR");
	return 0;
}

static void tmp_path(char *buf, size_t cap)
{
	snprintf(buf, cap, "/tmp/kvtier-%lu.sock", (unsigned long)getuid());
}

static void test_kvtier_socket(void **state)
{
	char buf[128];

	(void)state;
	setenv("KVTIER_SOCKET", "/run/custom/k.sock", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/run/custom/k.sock");
	/* Used verbatim, relative paths included. */
	setenv("KVTIER_SOCKET", "./kvtier.sock", 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "./kvtier.sock");
}

static void test_xdg_runtime_dir(void **state)
{
	char buf[128];

	(void)state;
	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/run/user/1000/kvtier.sock");
	/* An empty KVTIER_SOCKET counts as unset. */
	setenv("KVTIER_SOCKET", "", 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/run/user/1000/kvtier.sock");
}

static void test_tmp_fallback(void **state)
{
	char buf[128], want[64];

	(void)state;
	tmp_path(want, sizeof(want));
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, want);
	/* Empty variables count as unset. */
	setenv("KVTIER_SOCKET", "", 1);
	setenv("XDG_RUNTIME_DIR", "", 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, want);
}

static void test_sun_path_limit(void **state)
{
	char path[200], buf[256];

	(void)state;
	/* 107 bytes + NUL is the most a sockaddr_un holds. */
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[107] = '\0';
	setenv("KVTIER_SOCKET", path, 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_string_equal(buf, path);

	path[107] = 'a';
	path[108] = '\0';
	setenv("KVTIER_SOCKET", path, 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), KVT_ERANGE);
	assert_string_equal(buf, "");

	/* XDG_RUNTIME_DIR + "/kvtier.sock" (12 bytes) must fit too. */
	unsetenv("KVTIER_SOCKET");
	path[95] = '\0';
	setenv("XDG_RUNTIME_DIR", path, 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), 0);
	assert_int_equal(strlen(buf), 107);
	path[95] = 'a';
	path[96] = '\0';
	setenv("XDG_RUNTIME_DIR", path, 1);
	assert_int_equal(kvt_socket_default(buf, sizeof(buf)), KVT_ERANGE);
}

static void test_small_buffer(void **state)
{
	char buf[32];

	(void)state;
	setenv("KVTIER_SOCKET", "/run/k.sock", 1); /* 11 bytes */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(kvt_socket_default(buf, 11), KVT_ERANGE);
	/* Never a truncated path. */
	assert_string_equal(buf, "");
	assert_int_equal(kvt_socket_default(buf, 12), 0);
	assert_string_equal(buf, "/run/k.sock");
	assert_int_equal(kvt_socket_default(buf, 0), KVT_ERANGE);
	assert_int_equal(kvt_socket_default(NULL, 16), KVT_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_kvtier_socket, clear_env),
		cmocka_unit_test_setup(test_xdg_runtime_dir, clear_env),
		cmocka_unit_test_setup(test_tmp_fallback, clear_env),
		cmocka_unit_test_setup(test_sun_path_limit, clear_env),
		cmocka_unit_test_setup(test_small_buffer, clear_env),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
