/*
 * test_access.c - access control on a real kvtierd: socket mode and group,
 * uid/gid allow-lists checked with SO_PEERCRED, namespaces bound to uids.
 * As root (CI), children drop to other uids to play other tenants.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <grp.h>

#include "integ_harness.h"
#include "kvtier.h"

static struct integ_daemon D;

static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
}

/*
 * Runs op as uid in a child; returns its result code (an int that fits an
 * exit status: 0 ok, 1 denied, 2 other error, 3 connect denied).
 */
enum { AS_PING, AS_PUT_NS, AS_DROP_NS, AS_SHM, AS_STATS };
static int as_uid(uid_t uid, int op, const char *ns)
{
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		kvt_client *c = NULL;
		int rc;

		if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
			_exit(4);
		rc = kvt_connect(&c, D.sock);
		if (rc == KVT_EDENIED)
			_exit(3);
		if (rc)
			_exit(2);
		if (op == AS_PING)
			rc = kvt_ping(c);
		else if (op == AS_PUT_NS)
			rc = kvt_put(c, ns, "k", 1, "v", 1, NULL);
		else if (op == AS_SHM) {
			/* 10 + whether c got the arena, if a 1 MiB round trip
			 * gives back the same bytes. */
			static uint8_t v[1 << 20], got[1 << 20];
			size_t n;

			integ_fill(v, sizeof(v), (uint64_t)getpid());
			rc = kvt_put(c, ns, "big", 3, v, sizeof(v), NULL);
			if (!rc)
				rc = kvt_get(c, ns, "big", 3, got, sizeof(got),
					     &n);
			if (!rc && (n != sizeof(v) || memcmp(v, got, n)))
				rc = KVT_ECORRUPT;
			if (!rc)
				rc = 10 + kvt_client_shm(c);
			kvt_close(c);
			_exit(rc >= 10 ? rc : 2);
		}
		else if (op == AS_STATS) {
			/* 10 + whether the stats name ns at all. */
			char *j = NULL;
			size_t n;

			rc = kvt_stats_json(c, &j, &n);
			kvt_close(c);
			if (rc)
				_exit(2);
			rc = 10 + (strstr(j, ns) != NULL);
			free(j);
			_exit(rc);
		}
		else
			rc = kvt_drop(c, ns, NULL);
		kvt_close(c);
		_exit(rc == 0 ? 0 : rc == KVT_EDENIED ? 1 : 2);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static char *stats(void)
{
	kvt_client *c = NULL;
	char *j = NULL;
	size_t n;

	assert_int_equal(kvt_connect(&c, D.sock), 0);
	assert_int_equal(kvt_stats_json(c, &j, &n), 0);
	kvt_close(c);
	return j;
}

/* Not in the allow-list: a clear KVT_EDENIED, counted, nothing else lost. */
static void test_allow_list_refuses(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--allow-uid",
					    "12345", NULL };
	kvt_client *c = NULL;

	(void)state;
	/* integ_start pings, which this daemon refuses: wait for the file. */
	assert_int_equal(integ_spawn(&D, args), 0);
	struct stat st;
	for (int i = 0; i < 1000 && stat(D.sock, &st) != 0; i++)
		integ_sleep_ms(10);
	int rc = kvt_connect(&c, D.sock);
	assert_int_equal(rc, KVT_EDENIED);
	assert_non_null(strstr(kvt_client_errmsg(NULL), "not allowed"));
	kvt_close(c);
	if (geteuid() != 0)
		return;
	/* Other uids too. */
	assert_int_equal(chmod(D.dir, 0755), 0);
	assert_int_equal(chmod(D.sock, 0666), 0);
	assert_int_equal(as_uid(65534, AS_PING, NULL), 3);
}

static void test_allow_list_admits(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--allow-uid",
					    "root,65534", "--socket-mode",
					    "0666", NULL };
	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	struct stat st;
	assert_int_equal(stat(D.sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	if (geteuid() != 0) {
		printf("skip: not root, so no other uid can be played\n");
		return;
	}
	assert_int_equal(chmod(D.dir, 0755), 0);
	assert_int_equal(as_uid(65534, AS_PING, NULL), 0); /* listed */
	assert_int_equal(as_uid(1, AS_PING, NULL), 3);	   /* not listed */
	char *j = stats();
	assert_non_null(strstr(j, "\"connections_denied\":1"));
	free(j);
}

/* A namespace bound to a uid is closed to other (non-root) uids. */
static void test_ns_owner(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--ns-owner",
					    "tenantA/=65534", "--socket-mode",
					    "0666", NULL };
	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	if (geteuid() != 0) {
		printf("skip: not root, so no other uid can be played\n");
		return;
	}
	assert_int_equal(chmod(D.dir, 0755), 0);
	assert_int_equal(as_uid(65534, AS_PUT_NS, "tenantA/llama"), 0);
	assert_int_equal(as_uid(1, AS_PUT_NS, "tenantA/llama"), 1);
	assert_int_equal(as_uid(1, AS_PUT_NS, "tenantB/llama"), 0);
	/* Nor may another tenant drop it. */
	assert_int_equal(as_uid(1, AS_DROP_NS, "tenantA/llama"), 1);
	char *j = stats();
	assert_non_null(strstr(j, "\"requests_denied\":2"));
	free(j);
	/* Root may read every namespace; the owner's block is intact. */
	kvt_client *c = NULL;
	char buf[4];
	size_t n;
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	assert_int_equal(kvt_get(c, "tenantA/llama", "k", 1, buf, sizeof(buf),
				 &n), 0);
	assert_int_equal(n, 1);
	kvt_close(c);
}

/*
 * Issue #17: STATS's per-namespace report leaves out, for everyone but
 * their owner (and root), namespaces bound to another user, names and
 * sizes, as HOT leaves out their blocks.  Before, any user saw them.
 */
static void test_stats_hides_owned_namespaces(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--ns-owner",
					    "secret/=65533", "--socket-mode",
					    "0666", NULL };
	kvt_client *c = NULL;
	char *j;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	assert_int_equal(kvt_put(c, "secret/tenant-a", "k", 1, "v", 1, NULL), 0);
	assert_int_equal(kvt_put(c, "public-ns", "k", 1, "v", 1, NULL), 0);
	kvt_close(c);
	j = stats(); /* root sees every namespace */
	assert_non_null(strstr(j, "\"secret/tenant-a\":{\"entries\":1,"));
	assert_non_null(strstr(j, "\"namespaces_total\":2"));
	free(j);
	if (geteuid() != 0) {
		printf("skip: not root, so no other uid can be played\n");
		return;
	}
	assert_int_equal(chmod(D.dir, 0755), 0);
	assert_int_equal(as_uid(65534, AS_STATS, "secret/"), 10);  /* hidden */
	assert_int_equal(as_uid(65534, AS_STATS, "public-ns"), 11); /* shown */
	assert_int_equal(as_uid(65533, AS_STATS, "secret/"), 11);   /* owner */
}

/*
 * Shared memory only for trusted peers: our uid, root, shm-allow-uid.
 * Others get the socket path, with the same bytes.
 */
static void test_shm_trust(void **state)
{
	static const char *const plain[] = { "--l3-size", "0", "--socket-mode",
					     "0666", NULL };
	static const char *const listed[] = { "--l3-size", "0", "--socket-mode",
					      "0666", "--shm-allow-uid",
					      "65534", NULL };
	(void)state;
	assert_int_equal(integ_start(&D, plain), 0);
	if (geteuid() != 0) {
		printf("skip: not root, so no other uid can be played\n");
		return;
	}
	assert_int_equal(chmod(D.dir, 0755), 0);
	assert_int_equal(as_uid(0, AS_SHM, "s"), 11);	  /* root */
	assert_int_equal(as_uid(65534, AS_SHM, "s"), 10); /* not trusted */
	char *j = stats();
	assert_non_null(strstr(j, "\"clients_refused\":1"));
	free(j);
	integ_cleanup(&D);
	assert_int_equal(integ_start(&D, listed), 0);
	assert_int_equal(chmod(D.dir, 0755), 0);
	assert_int_equal(as_uid(65534, AS_SHM, "s"), 11);
}

/* Socket group: the file gets the group and mode asked for. */
static void test_socket_group(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--socket-mode",
					    "0660", "--socket-group", "daemon",
					    NULL };
	struct group *g = getgrnam("daemon");
	struct stat st;

	(void)state;
	assert_non_null(g); /* Debian always has it */
	assert_int_equal(integ_start(&D, args), 0);
	assert_int_equal(stat(D.sock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	if (geteuid() == 0)
		assert_int_equal(st.st_gid, g->gr_gid);
}

/* Bad access settings are refused at start with exit status 1. */
static void test_bad_settings(void **state)
{
	char cmd[512];
	int st;

	(void)state;
	snprintf(cmd, sizeof(cmd), "'%s' --l3-size 0 --socket /tmp/x-never "
		 "--allow-uid no-such-user-kvtier >/dev/null 2>&1",
		 integ_kvtierd());
	st = system(cmd);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	/* Same for the shared-memory list, and stderr says which setting. */
	snprintf(cmd, sizeof(cmd), "'%s' --l3-size 0 --socket /tmp/x-never "
		 "--shm-allow-uid no-such-user-kvtier 2>&1 | grep -q "
		 "\"shm-allow-uid.*unknown user\"", integ_kvtierd());
	st = system(cmd);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	snprintf(cmd, sizeof(cmd), "'%s' --socket-mode 999 >/dev/null 2>&1",
		 integ_kvtierd());
	st = system(cmd);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_allow_list_refuses, teardown),
		cmocka_unit_test_teardown(test_allow_list_admits, teardown),
		cmocka_unit_test_teardown(test_ns_owner, teardown),
		cmocka_unit_test_teardown(test_stats_hides_owned_namespaces,
					  teardown),
		cmocka_unit_test_teardown(test_shm_trust, teardown),
		cmocka_unit_test_teardown(test_socket_group, teardown),
		cmocka_unit_test(test_bad_settings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
