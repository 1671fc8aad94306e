/*
 * test_server.c - integration tests against a real kvtierd on a temporary
 * socket, driven through libkvtier (and raw frames for pipelining and
 * protocol abuse).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "integ_harness.h"
#include "kvt_frame.h"
#include "kvtier.h"

static struct integ_daemon D;

static int setup(void **state)
{
	(void)state;
	memset(&D, 0, sizeof(D));
	return integ_start(&D, NULL);
}

static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
}

static kvt_client *connect_ok(void)
{
	kvt_client *c = NULL;
	int rc = kvt_connect(&c, D.sock);
	if (rc)
		fprintf(stderr, "connect: %s\n", kvt_strerror(rc));
	assert_int_equal(rc, 0);
	return c;
}

static void test_put_get_miss_del(void **state)
{
	kvt_client *c = connect_ok();
	char buf[64];
	size_t n = 0;
	void *p = NULL;

	(void)state;
	assert_int_equal(kvt_ping(c), 0);
	assert_int_equal(kvt_put(c, NULL, "k1", 2, "hello", 5, NULL), 0);
	assert_int_equal(kvt_get(c, NULL, "k1", 2, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(kvt_exists(c, NULL, "k1", 2), 1);
	assert_int_equal(kvt_exists(c, NULL, "nope", 4), 0);
	assert_int_equal(kvt_get(c, NULL, "nope", 4, buf, sizeof(buf), &n),
			 KVT_ENOTFOUND);

	/* Too small a buffer: the needed size is reported, the connection
	 * stays usable. */
	assert_int_equal(kvt_get(c, NULL, "k1", 2, buf, 2, &n), KVT_ERANGE);
	assert_int_equal(n, 5);
	assert_int_equal(kvt_get_alloc(c, NULL, "k1", 2, &p, &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(p, "hello", 5);
	free(p);

	/* Replacement. */
	assert_int_equal(kvt_put(c, NULL, "k1", 2, "world!", 6, NULL), 0);
	assert_int_equal(kvt_get(c, NULL, "k1", 2, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 6);
	assert_memory_equal(buf, "world!", 6);

	assert_int_equal(kvt_del(c, NULL, "k1", 2), 0);
	assert_int_equal(kvt_del(c, NULL, "k1", 2), KVT_ENOTFOUND);
	assert_int_equal(kvt_exists(c, NULL, "k1", 2), 0);

	/* Namespaces keep equal keys apart. */
	assert_int_equal(kvt_put(c, "ns-a", "k", 1, "A", 1, NULL), 0);
	assert_int_equal(kvt_put(c, "ns-b", "k", 1, "B", 1, NULL), 0);
	assert_int_equal(kvt_get(c, "ns-a", "k", 1, buf, sizeof(buf), &n), 0);
	assert_int_equal(buf[0], 'A');
	assert_int_equal(kvt_get(c, "ns-b", "k", 1, buf, sizeof(buf), &n), 0);
	assert_int_equal(buf[0], 'B');
	assert_int_equal(kvt_exists(c, NULL, "k", 1), 0);
	kvt_close(c);
}

/* A block written by one process is read by another. */
static void test_cross_process(void **state)
{
	uint8_t val[100000], got[100000];
	size_t n = 0;
	pid_t pid;
	int status;

	(void)state;
	integ_fill(val, sizeof(val), 42);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		kvt_client *c = NULL;
		int rc = kvt_connect(&c, D.sock);
		if (rc == 0)
			rc = kvt_put(c, "shared", "block-0", 7, val,
				     sizeof(val), NULL);
		kvt_close(c);
		_exit(rc == 0 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	kvt_client *c = connect_ok();
	assert_int_equal(kvt_get(c, "shared", "block-0", 7, got, sizeof(got),
				 &n), 0);
	assert_int_equal(n, sizeof(val));
	assert_memory_equal(got, val, sizeof(val));
	kvt_close(c);
}

/* A 64 MiB value goes in and comes back byte-identical. */
static void test_64mib(void **state)
{
	size_t len = 64u << 20, n = 0;
	uint8_t *val = malloc(len), *got = malloc(len);
	struct timespec t0, t1, t2;
	kvt_client *c = connect_ok();

	(void)state;
	assert_non_null(val);
	assert_non_null(got);
	integ_fill(val, len, 7);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kvt_put(c, NULL, "big", 3, val, len, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(kvt_get(c, NULL, "big", 3, got, len, &n), 0);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	assert_int_equal(n, len);
	assert_memory_equal(got, val, len);
	printf("64 MiB put %.1f ms, get %.1f ms\n",
	       (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
	       (double)(t2.tv_sec - t1.tv_sec) * 1e3 +
		       (double)(t2.tv_nsec - t1.tv_nsec) / 1e6);
	assert_int_equal(kvt_del(c, NULL, "big", 3), 0);
	kvt_close(c);
	free(val);
	free(got);
}

struct worker {
	int id;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	size_t len = 32768 + (size_t)w->id * 1000, n = 0;
	uint8_t *val = malloc(len), *got = malloc(len);
	char key[32];
	kvt_client *c = NULL;

	if (!val || !got || kvt_connect(&c, D.sock)) {
		w->failures++;
		goto out;
	}
	integ_fill(val, len, (uint64_t)w->id + 1000);
	snprintf(key, sizeof(key), "worker-%d", w->id);
	for (int round = 0; round < 20; round++) {
		val[0] = (uint8_t)round;
		if (kvt_put(c, NULL, key, strlen(key), val, len, NULL) ||
		    kvt_get(c, NULL, key, strlen(key), got, len, &n) ||
		    n != len || memcmp(got, val, len) != 0)
			w->failures++;
	}
out:
	kvt_close(c);
	free(val);
	free(got);
	return NULL;
}

/* 64 clients at once each get their own bytes back. */
static void test_64_clients(void **state)
{
	pthread_t th[64];
	struct worker w[64];

	(void)state;
	for (int i = 0; i < 64; i++) {
		w[i].id = i;
		w[i].failures = 0;
		assert_int_equal(pthread_create(&th[i], NULL, worker_main,
						&w[i]), 0);
	}
	for (int i = 0; i < 64; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
}

/* 1024 connections open at once are all served. */
static void test_1024_connections(void **state)
{
	enum { N = 1024 };
	kvt_client **cs = calloc(N, sizeof(*cs));
	struct rlimit rl;

	(void)state;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < N + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	assert_non_null(cs);
	for (int i = 0; i < N; i++) {
		int rc = kvt_connect(&cs[i], D.sock);
		if (rc)
			fprintf(stderr, "connection %d: %s\n", i,
				kvt_strerror(rc));
		assert_int_equal(rc, 0);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(kvt_ping(cs[i]), 0);
	for (int i = 0; i < N; i++)
		kvt_close(cs[i]);
	free(cs);
}

static int raw_connect(void)
{
	int fd = integ_raw_connect(&D);

	assert_true(fd >= 0);
	return fd;
}

static void read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

/* Reads one reply frame; returns its header, body into body (cap). */
static void read_reply(int fd, struct kvt_frame_header *h, uint8_t *body,
		       size_t cap)
{
	uint8_t hdr[KVT_HDR_SIZE];
	struct kvt_limits lim;

	kvt_limits_default(&lim);
	read_full(fd, hdr, sizeof(hdr));
	assert_int_equal(kvt_frame_header_decode(hdr, sizeof(hdr), &lim, h), 0);
	assert_true(h->flags & KVT_FLAG_REPLY);
	assert_true(h->body_len <= cap);
	read_full(fd, body, h->body_len);
}

/* 200 requests written in one go are answered in order. */
static void test_pipelining(void **state)
{
	enum { N = 200 };
	static uint8_t out[N * 128];
	uint8_t body[256];
	size_t off = 0;
	int fd = raw_connect();

	(void)state;
	for (int i = 0; i < N; i++) {
		char key[16], val[16];
		struct kvt_put_req pr = { 0 };
		struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
					      .request_id = (uint64_t)i + 1 };
		size_t w = 0, klen, vlen;

		klen = (size_t)snprintf(key, sizeof(key), "p%d", i / 2);
		vlen = (size_t)snprintf(val, sizeof(val), "v%d", i / 2);
		pr.k.key = (const uint8_t *)key;
		pr.k.key_len = klen;
		if (i % 2 == 0) { /* PUT p<i/2> */
			h.opcode = KVT_OP_PUT;
			assert_int_equal(kvt_put_req_encode_prefix(
				out + off + KVT_HDR_SIZE, 64, &pr, &w), 0);
			memcpy(out + off + KVT_HDR_SIZE + w, val, vlen);
			w += vlen;
		} else { /* GET p<i/2> */
			h.opcode = KVT_OP_GET;
			assert_int_equal(kvt_key_req_encode(
				out + off + KVT_HDR_SIZE, 64, &pr.k, &w), 0);
		}
		h.body_len = (uint32_t)w;
		kvt_frame_header_encode(out + off, &h);
		off += KVT_HDR_SIZE + w;
	}
	assert_int_equal(write(fd, out, off), (ssize_t)off);
	for (int i = 0; i < N; i++) {
		struct kvt_frame_header h;
		char val[16];

		read_reply(fd, &h, body, sizeof(body));
		assert_int_equal(h.request_id, (uint64_t)i + 1);
		assert_int_equal(h.status, 0);
		if (i % 2 == 1) {
			int vlen = snprintf(val, sizeof(val), "v%d", i / 2);
			assert_int_equal(h.body_len, vlen);
			assert_memory_equal(body, val, (size_t)vlen);
		}
	}
	close(fd);
}

/* Garbage gets an error reply and a closed connection; others carry on. */
static void test_bad_frames(void **state)
{
	kvt_client *c = connect_ok();
	struct kvt_frame_header h;
	uint8_t body[1024], junk[64];
	char buf[16];
	size_t n;
	int fd;

	(void)state;
	assert_int_equal(kvt_put(c, NULL, "keep", 4, "safe", 4, NULL), 0);

	/* Bad magic. */
	fd = raw_connect();
	memset(junk, 0xAB, sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	read_reply(fd, &h, body, sizeof(body));
	assert_int_equal(h.status, (uint32_t)-KVT_EPROTO);
	assert_int_equal(read(fd, junk, sizeof(junk)), 0); /* closed */
	close(fd);

	/* Oversized body length: refused before anything is allocated. */
	fd = raw_connect();
	memset(&h, 0, sizeof(h));
	h.version = KVT_PROTO_VERSION;
	h.opcode = KVT_OP_PUT;
	h.request_id = 9;
	h.body_len = 0xFFFFFFF0u;
	kvt_frame_header_encode(junk, &h);
	assert_int_equal(write(fd, junk, KVT_HDR_SIZE), KVT_HDR_SIZE);
	read_reply(fd, &h, body, sizeof(body));
	assert_int_equal(h.request_id, 9);
	assert_int_equal(h.status, (uint32_t)-KVT_ETOOBIG);
	close(fd);

	/* Unknown opcode: an error reply, and the connection stays usable. */
	fd = raw_connect();
	memset(&h, 0, sizeof(h));
	h.version = KVT_PROTO_VERSION;
	h.opcode = 200;
	h.request_id = 5;
	kvt_frame_header_encode(junk, &h);
	h.opcode = KVT_OP_PING;
	h.request_id = 6;
	kvt_frame_header_encode(junk + KVT_HDR_SIZE, &h);
	assert_int_equal(write(fd, junk, 2 * KVT_HDR_SIZE), 2 * KVT_HDR_SIZE);
	read_reply(fd, &h, body, sizeof(body));
	assert_int_equal(h.request_id, 5);
	assert_int_equal(h.status, (uint32_t)-KVT_EUNKNOWNOP);
	read_reply(fd, &h, body, sizeof(body));
	assert_int_equal(h.request_id, 6);
	assert_int_equal(h.status, 0);
	close(fd);

	/* Malformed PUT body (key length past the end). */
	fd = raw_connect();
	memset(&h, 0, sizeof(h));
	h.version = KVT_PROTO_VERSION;
	h.opcode = KVT_OP_PUT;
	h.request_id = 11;
	h.body_len = 10;
	kvt_frame_header_encode(junk, &h);
	memset(junk + KVT_HDR_SIZE, 0, 10);
	junk[KVT_HDR_SIZE + 2] = 200; /* key_len 200 in a 10-byte body */
	assert_int_equal(write(fd, junk, KVT_HDR_SIZE + 10), KVT_HDR_SIZE + 10);
	read_reply(fd, &h, body, sizeof(body));
	assert_int_equal(h.status, (uint32_t)-KVT_EBADREQ);
	close(fd);

	/* A client that dies mid-frame loses nothing for anyone else. */
	fd = raw_connect();
	memset(&h, 0, sizeof(h));
	h.version = KVT_PROTO_VERSION;
	h.opcode = KVT_OP_PUT;
	h.body_len = 1 << 20;
	kvt_frame_header_encode(junk, &h);
	assert_int_equal(write(fd, junk, KVT_HDR_SIZE + 8), KVT_HDR_SIZE + 8);
	close(fd);

	assert_int_equal(kvt_get(c, NULL, "keep", 4, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "safe", 4);
	kvt_close(c);
}

/*
 * A client that sends a huge value slowly never stalls another client's
 * small requests: the loop serves both.
 */
static void test_no_stall(void **state)
{
	int fd = raw_connect();
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_PUT,
				      .request_id = 1 };
	struct kvt_put_req pr = { .k = { .key = (const uint8_t *)"slow",
					 .key_len = 4 } };
	uint8_t frame[64];
	size_t w = 0;
	kvt_client *c = connect_ok();

	(void)state;
	assert_int_equal(kvt_put_req_encode_prefix(frame + KVT_HDR_SIZE, 40,
						   &pr, &w), 0);
	h.body_len = (uint32_t)(w + (32u << 20));
	kvt_frame_header_encode(frame, &h);
	assert_int_equal(write(fd, frame, KVT_HDR_SIZE + w),
			 (ssize_t)(KVT_HDR_SIZE + w));
	/* Half of the value arrives, then the sender pauses. */
	static uint8_t chunk[1 << 20];
	for (int i = 0; i < 16; i++)
		assert_int_equal(write(fd, chunk, sizeof(chunk)),
				 (ssize_t)sizeof(chunk));
	for (int i = 0; i < 100; i++)
		assert_int_equal(kvt_ping(c), 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(write(fd, chunk, sizeof(chunk)),
				 (ssize_t)sizeof(chunk));
	uint8_t body[256];
	read_reply(fd, &h, body, sizeof(body));
	assert_int_equal(h.status, 0);
	assert_int_equal(kvt_exists(c, NULL, "slow", 4), 1);
	close(fd);
	kvt_close(c);
}

static void test_stats(void **state)
{
	kvt_client *c = connect_ok();
	char *json = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(kvt_put(c, NULL, "s", 1, "12345", 5, NULL), 0);
	assert_int_equal(kvt_stats_json(c, &json, &n), 0);
	assert_non_null(json);
	assert_int_equal(strlen(json), n);
	assert_non_null(strstr(json, "\"l1\":{\"entries\":"));
	assert_non_null(strstr(json, "\"capacity_bytes\":"));
	assert_non_null(strstr(json, "\"gets\":"));
	assert_non_null(strstr(json, "\"puts\":"));
	assert_non_null(strstr(json, "\"misses\":"));
	assert_non_null(strstr(json, "\"uptime_s\":"));
	free(json);
	kvt_close(c);
}

/* MPUT/MGET: 200 blocks per call, misses and per-item errors reported. */
static void test_mput_mget(void **state)
{
	enum { N = 200, LEN = 65536 };
	kvt_client *c = connect_ok();
	const void *keys[N + 3], *vals[N];
	size_t klens[N + 3], vlens[N], got_lens[N + 3];
	char kbuf[N + 3][16];
	uint8_t *data = malloc((size_t)N * LEN), *out = malloc((size_t)(N + 3) * LEN);
	struct iovec iov[N + 3];
	int st[N + 3];

	(void)state;
	assert_non_null(data);
	assert_non_null(out);
	for (int i = 0; i < N; i++) {
		snprintf(kbuf[i], sizeof(kbuf[i]), "batch-%d", i);
		keys[i] = kbuf[i];
		klens[i] = strlen(kbuf[i]);
		integ_fill(data + (size_t)i * LEN, LEN, (uint64_t)i + 7);
		vals[i] = data + (size_t)i * LEN;
		vlens[i] = LEN;
	}
	assert_int_equal(kvt_mput(c, "b", keys, klens, vals, vlens, N, NULL,
				  st), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(st[i], 0);
	/* Read them back with a miss, a short buffer and an empty key. */
	snprintf(kbuf[N], sizeof(kbuf[N]), "absent");
	keys[N] = kbuf[N];
	klens[N] = 6;
	keys[N + 1] = kbuf[3];
	klens[N + 1] = strlen(kbuf[3]);
	keys[N + 2] = "";
	klens[N + 2] = 0;
	for (int i = 0; i < N + 3; i++) {
		iov[i].iov_base = out + (size_t)i * LEN;
		iov[i].iov_len = LEN;
	}
	iov[N + 1].iov_len = 100; /* too small for block 3 */
	assert_int_equal(kvt_mget(c, "b", keys, klens, N + 3, iov, got_lens,
				  st), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(st[i], 0);
		assert_int_equal(got_lens[i], LEN);
		assert_memory_equal(out + (size_t)i * LEN,
				    data + (size_t)i * LEN, LEN);
	}
	assert_int_equal(st[N], KVT_ENOTFOUND);
	assert_int_equal(st[N + 1], KVT_ERANGE);
	assert_int_equal(got_lens[N + 1], LEN);
	assert_int_equal(st[N + 2], KVT_EINVAL);
	/* The connection is still in step. */
	assert_int_equal(kvt_ping(c), 0);
	size_t n;
	assert_int_equal(kvt_get(c, "b", "batch-5", 7, out, LEN, &n), 0);
	assert_memory_equal(out, data + 5 * (size_t)LEN, LEN);
	kvt_close(c);
	free(data);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_miss_del),
		cmocka_unit_test(test_cross_process),
		cmocka_unit_test(test_64mib),
		cmocka_unit_test(test_64_clients),
		cmocka_unit_test(test_1024_connections),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_bad_frames),
		cmocka_unit_test(test_no_stall),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_mput_mget),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
