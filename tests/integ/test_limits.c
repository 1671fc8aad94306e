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
#include <stdatomic.h>
#include <stdbool.h>
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
	D.log_path = NULL;
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
	atomic_int done; /* set once rc is */
};

static void *put_thread(void *arg)
{
	struct putter *p = arg;
	uint8_t *val = calloc(1, p->len);
	kvt_client *c = NULL;

	integ_fill(val, p->len, p->len);
	p->rc = kvt_connect(&c, D.sock);
	if (!p->rc)
		p->rc = kvt_put(c, NULL, "second", 6, val, p->len, NULL);
	kvt_close(c);
	free(val);
	atomic_store(&p->done, 1);
	return NULL;
}

/* Waits up to ms for p to finish; true if it did. */
static bool put_done_within(struct putter *p, int ms)
{
	for (int i = 0; i < ms / 10 && !atomic_load(&p->done); i++)
		integ_sleep_ms(10);
	return atomic_load(&p->done);
}

/*
 * A raw connection that sends the header of a PUT of key with a
 * value_len-byte value, the PUT prefix and extra bytes of the value, and
 * then nothing.  *sent and *body_len (if not NULL) get the body bytes sent
 * and announced.
 */
static int stalled_put(const char *key, size_t value_len, size_t extra,
		       size_t *sent, size_t *body_len)
{
	struct kvt_put_req pr = { .k = { .key = (const uint8_t *)key,
					 .key_len = strlen(key) },
				  .value_len = value_len };
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_PUT,
				      .request_id = 1 };
	uint8_t buf[KVT_HDR_SIZE + 64 + 4096] = { 0 };
	size_t w;
	int fd = raw_connect();

	assert_true(extra <= 4096);
	assert_int_equal(kvt_put_req_encode_prefix(buf + KVT_HDR_SIZE, 64, &pr,
						   &w), 0);
	h.body_len = (uint32_t)(w + value_len);
	kvt_frame_header_encode(buf, &h);
	assert_int_equal(write(fd, buf, KVT_HDR_SIZE + w + extra),
			 (ssize_t)(KVT_HDR_SIZE + w + extra));
	if (sent)
		*sent = w + extra;
	if (body_len)
		*body_len = h.body_len;
	return fd;
}

/* Has the daemon closed fd (EOF or reset), without waiting? */
static bool peer_closed(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/*
 * Issue #17 break 4.  Four clients announce 16 MiB values (64 MiB, all of
 * --max-inflight, if reserved from the header) and then send nothing: a
 * 1 MiB PUT of another client over the socket still completes at once,
 * because a body is reserved as it arrives (4 MiB to start with), not
 * from its header.  Before, that PUT waited for as long as they stalled.
 */
static void test_stalled_bodies(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--max-inflight",
					    "64M", NULL };
	static struct putter p = { .len = 1u << 20, .rc = -1 };
	int fd[4];
	kvt_client *c;
	uint8_t *got = malloc(1u << 20), *want = malloc(1u << 20);
	size_t n = 0;
	pthread_t th;

	(void)state;
	assert_int_equal(integ_start(&D, args), 0);
	for (int i = 0; i < 4; i++) {
		char key[16];

		snprintf(key, sizeof(key), "stalled-%d", i);
		/* Just under 16 MiB with the prefix: the four fill 64M. */
		fd[i] = stalled_put(key, (16u << 20) - 256, 100, NULL, NULL);
	}
	integ_sleep_ms(300);
	uint64_t reserved = stat_u64("inflight_bytes");
	setenv("KVTIER_SHM", "0", 1);
	assert_int_equal(pthread_create(&th, NULL, put_thread, &p), 0);
	bool done = put_done_within(&p, 3000);
	unsetenv("KVTIER_SHM");
	assert_true(done); /* else it starved: the daemon's teardown ends it */
	pthread_join(th, NULL);
	assert_int_equal(p.rc, 0);
	assert_int_equal(stat_u64("mem_waits"), 0);
	/* One first step each (4 MiB, KVT_BODY_STEP), not 16 MiB each. */
	assert_true(reserved <= 4 * (4u << 20));
	c = connect_ok();
	integ_fill(want, 1u << 20, 1u << 20);
	assert_int_equal(kvt_get(c, NULL, "second", 6, got, 1u << 20, &n), 0);
	assert_int_equal(n, 1u << 20);
	assert_memory_equal(got, want, n);
	kvt_close(c);
	for (int i = 0; i < 4; i++)
		close(fd[i]);
	free(got);
	free(want);
}

static char *read_log(void)
{
	static char buf[1 << 16];
	FILE *f = fopen(D.log_path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/*
 * --body-timeout: a client that stops in the middle of a body, or of a
 * header, is closed after that long, counted (body_timeouts) and logged
 * with its uid and how much of what was expected arrived.  A client that
 * keeps sending, however slowly, is not; nor is one that waits because
 * the daemon stopped reading it (max-inflight): it completes once the
 * stalled body ahead of it is gone.
 */
static void test_body_timeout(void **state)
{
	static const char *const args[] = { "--l3-size", "0", "--body-timeout",
					    "1", "--max-inflight", "1M",
					    "--log-level", "info", NULL };
	static struct putter p = { .len = 2u << 20, .rc = -1 };
	char logp[320], pat[128];
	uint8_t hdr[10] = { 'K', 'V', 'T', 'R', 1 };
	uint8_t rest[90], reply[KVT_HDR_SIZE];
	size_t sent, body_len;
	int body, half, slow;
	pthread_t th;

	(void)state;
	/* The log goes in the daemon's folder, which the teardown removes. */
	snprintf(D.dir, sizeof(D.dir), "/tmp/kvtier-integ-XXXXXX");
	assert_non_null(mkdtemp(D.dir));
	snprintf(D.sock, sizeof(D.sock), "%s/kvtier.sock", D.dir);
	snprintf(D.data, sizeof(D.data), "%s/var", D.dir);
	snprintf(logp, sizeof(logp), "%s/daemon.log", D.dir);
	D.log_path = logp;
	assert_int_equal(integ_start(&D, args), 0);
	body = stalled_put("stalled", 2u << 20, 1000, &sent, &body_len);
	half = raw_connect();
	assert_int_equal(write(half, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	slow = stalled_put("slow", 100, 0, NULL, NULL);
	/* Waits for memory behind the stalled 2 MiB body (max-inflight 1M). */
	setenv("KVTIER_SHM", "0", 1);
	assert_int_equal(pthread_create(&th, NULL, put_thread, &p), 0);
	for (int i = 0; i < 100 && stat_u64("mem_waits") == 0; i++)
		integ_sleep_ms(20);
	unsetenv("KVTIER_SHM");
	assert_int_equal(stat_u64("mem_waits"), 1);
	/* One byte of the slow value every 300 ms, for 3 s. */
	for (int i = 0; i < 10; i++) {
		assert_int_equal(write(slow, "v", 1), 1);
		integ_sleep_ms(300);
	}
	assert_true(peer_closed(body));
	assert_true(peer_closed(half));
	assert_false(peer_closed(slow));
	assert_int_equal(stat_u64("body_timeouts"), 2);
	/* The waiter went on once the stalled body was gone. */
	assert_true(put_done_within(&p, 5000));
	pthread_join(th, NULL);
	assert_int_equal(p.rc, 0);
	char *log = read_log();
	snprintf(pat, sizeof(pat), "event=body_timeout conn=");
	assert_non_null(strstr(log, pat));
	snprintf(pat, sizeof(pat), "uid=%u part=body received=%zu expected=%zu ",
		 (unsigned)geteuid(), sent, body_len);
	assert_non_null(strstr(log, pat));
	snprintf(pat, sizeof(pat), "uid=%u part=header received=10 "
		 "expected=%d ", (unsigned)geteuid(), KVT_HDR_SIZE);
	assert_non_null(strstr(log, pat));
	/* The slow one finishes its value and is answered. */
	memset(rest, 'v', sizeof(rest));
	assert_int_equal(write(slow, rest, sizeof(rest)), (ssize_t)sizeof(rest));
	assert_int_equal(recv(slow, reply, sizeof(reply), MSG_WAITALL),
			 (ssize_t)sizeof(reply));
	close(body);
	close(half);
	close(slow);
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
	static struct putter p;
	pthread_t th;
	int fd;

	(void)state;
	p.len = len;
	p.rc = -1;
	atomic_store(&p.done, 0);
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
		cmocka_unit_test_teardown(test_stalled_bodies, teardown),
		cmocka_unit_test_teardown(test_body_timeout, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
