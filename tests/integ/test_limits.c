/*
 * test_limits.c - every configurable limit, overrun: a clear error or a
 * logged disconnect plus a counter, and other clients unaffected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "integ_harness.h"
#include "kvt_frame.h"
#include "kvtier.h"

static struct integ_daemon D;

static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
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
	char *j = NULL, pat[64];
	size_t n;
	uint64_t v;

	assert_int_equal(kvt_stats_json(c, &j, &n), 0);
	snprintf(pat, sizeof(pat), "\"%s\":", name);
	char *p = strstr(j, pat);
	assert_non_null(p);
	v = strtoull(p + strlen(pat), NULL, 10);
	free(j);
	kvt_close(c);
	return v;
}

static int raw_connect(void)
{
	int fd = integ_raw_connect(&D);

	assert_true(fd >= 0);
	return fd;
}

/* Key and value sizes are configurable and refused past them. */
static void test_sizes(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--max-key-size",
					    "16", "--max-value-size", "1M",
					    NULL };
	uint8_t *big = calloc(1, 2u << 20);
	kvt_client *c;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	c = connect_ok();
	assert_int_equal(kvt_put(c, NULL, "0123456789abcdef", 16, "v", 1,
				 NULL), 0);
	assert_int_equal(kvt_put(c, NULL, "0123456789abcdefX", 17, "v", 1,
				 NULL), KVT_ETOOBIG);
	assert_int_equal(kvt_put(c, NULL, "big", 3, big, 2u << 20, NULL),
			 KVT_ETOOBIG);
	assert_int_equal(kvt_put(c, NULL, "ok", 2, big, 1u << 20, NULL), 0);
	assert_int_equal(kvt_ping(c), 0);
	kvt_close(c);
	free(big);
}

/* An idle connection is closed after --idle-timeout, and counted. */
static void test_idle_timeout(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--idle-timeout",
					    "1", NULL };
	kvt_client *c;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	c = connect_ok();
	assert_int_equal(kvt_ping(c), 0);
	integ_sleep_ms(3000);
	assert_int_equal(kvt_ping(c), KVT_ECLOSED);
	kvt_close(c);
	assert_true(stat_u64("idle_closed") >= 1);
}

/* A client that never reads its replies is cut off after --send-timeout;
 * another client is served all along. */
static void test_slow_reader(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--send-timeout",
					    "1", NULL };
	size_t len = 4u << 20;
	uint8_t *val = calloc(1, len), frames[40 * 64];
	size_t off = 0;
	kvt_client *c;
	int fd;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	c = connect_ok();
	assert_int_equal(kvt_put(c, NULL, "v", 1, val, len, NULL), 0);
	fd = raw_connect();
	for (int i = 0; i < 40; i++) {
		struct kvt_keyref k = { .key = (const uint8_t *)"v", .key_len = 1 };
		struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
					      .opcode = KVT_OP_GET,
					      .request_id = (uint64_t)i + 1 };
		size_t w;
		assert_int_equal(kvt_key_req_encode(frames + off + KVT_HDR_SIZE,
						    40, &k, &w), 0);
		h.body_len = (uint32_t)w;
		kvt_frame_header_encode(frames + off, &h);
		off += KVT_HDR_SIZE + w;
	}
	assert_int_equal(write(fd, frames, off), (ssize_t)off);
	/* Never read: after a few seconds the daemon gives up on us. */
	for (int i = 0; i < 100 && stat_u64("slow_closed") == 0; i++) {
		assert_int_equal(kvt_ping(c), 0);
		integ_sleep_ms(100);
	}
	assert_int_equal(stat_u64("slow_closed"), 1);
	assert_int_equal(kvt_ping(c), 0);
	close(fd);
	kvt_close(c);
	free(val);
}

/* At --max-connections, a connection idle for long makes room. */
static void test_idle_makes_room(void **state)
{
	static const char *const args[] = { "--l3-size", "0",
					    "--max-connections", "3", NULL };
	kvt_client *c[3], *extra = NULL;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	for (int i = 0; i < 3; i++)
		c[i] = connect_ok();
	/* Busy connections are never evicted: the limit holds. */
	assert_int_equal(kvt_connect(&extra, D.sock), KVT_EBUSY);
	integ_sleep_ms(5500);
	assert_int_equal(kvt_connect(&extra, D.sock), 0);
	assert_int_equal(kvt_ping(extra), 0);
	kvt_close(extra);
	for (int i = 0; i < 3; i++)
		kvt_close(c[i]);
	assert_true(stat_u64("idle_evicted") >= 1);
}

struct putter {
	size_t len;
	int rc;
};

static void *put_thread(void *arg)
{
	struct putter *p = arg;
	uint8_t *val = calloc(1, p->len);
	kvt_client *c = NULL;

	p->rc = kvt_connect(&c, D.sock);
	if (!p->rc)
		p->rc = kvt_put(c, NULL, "second", 6, val, p->len, NULL);
	kvt_close(c);
	free(val);
	return NULL;
}

/* Request bodies share --max-inflight: past it a client waits its turn. */
static void test_inflight_memory(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--max-inflight",
					    "1M", NULL };
	struct kvt_put_req pr = { .k = { .key = (const uint8_t *)"first",
					 .key_len = 5 } };
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_PUT,
				      .request_id = 1 };
	size_t len = 2u << 20, w;
	uint8_t hdr[64], reply[KVT_HDR_SIZE];
	uint8_t *val = calloc(1, len);
	struct putter p = { .len = len, .rc = -1 };
	pthread_t th;
	int fd;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	/* The first client sends half of a 2 MiB body, then pauses. */
	fd = raw_connect();
	pr.value_len = len;
	assert_int_equal(kvt_put_req_encode_prefix(hdr + KVT_HDR_SIZE, 40, &pr,
						   &w), 0);
	h.body_len = (uint32_t)(w + len);
	kvt_frame_header_encode(hdr, &h);
	assert_int_equal(write(fd, hdr, KVT_HDR_SIZE + w),
			 (ssize_t)(KVT_HDR_SIZE + w));
	assert_int_equal(write(fd, val, len / 2), (ssize_t)(len / 2));
	/*
	 * A second one must wait for that memory.  It sends its value over
	 * the socket: a shared-memory slot is not a body being received.
	 */
	setenv("KVTIER_SHM", "0", 1);
	assert_int_equal(pthread_create(&th, NULL, put_thread, &p), 0);
	for (int i = 0; i < 100 && stat_u64("mem_waits") == 0; i++)
		integ_sleep_ms(20);
	assert_int_equal(stat_u64("mem_waits"), 1);
	assert_true(stat_u64("inflight_bytes") <= (2u << 20) + 64);
	/* The first finishes; the second goes through. */
	assert_int_equal(write(fd, val + len / 2, len - len / 2),
			 (ssize_t)(len - len / 2));
	ssize_t n = recv(fd, reply, sizeof(reply), MSG_WAITALL);
	assert_int_equal(n, (ssize_t)sizeof(reply));
	pthread_join(th, NULL);
	unsetenv("KVTIER_SHM");
	assert_int_equal(p.rc, 0);
	assert_int_equal(stat_u64("inflight_bytes"), 0);
	close(fd);
	free(val);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_sizes, teardown),
		cmocka_unit_test_teardown(test_idle_timeout, teardown),
		cmocka_unit_test_teardown(test_slow_reader, teardown),
		cmocka_unit_test_teardown(test_idle_makes_room, teardown),
		cmocka_unit_test_teardown(test_inflight_memory, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
