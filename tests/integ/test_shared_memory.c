/*
 * test_shared_memory.c - the shared-memory data path on a real kvtierd: both paths
 * return identical bytes, a lease keeps a block's bytes in place while the
 * block is overwritten, deleted and evicted, leases end with RELEASE or
 * with the connection, slots fall back to the socket when the daemon has
 * no room, and malformed shared-memory requests get clear errors.
 * (Untrusted peers are refused the arena in test_access.c.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "integ_harness.h"
#include "kvt_frame.h"
#include "kvt_shm.h"
#include "kvtier.h"

static struct integ_daemon D;

static int teardown(void **state)
{
	(void)state;
	integ_cleanup(&D);
	return 0;
}

static kvt_client *connect_path(int shm)
{
	kvt_client *c = NULL;

	if (!shm)
		setenv("KVTIER_SHM", "0", 1);
	assert_int_equal(kvt_connect(&c, D.sock), 0);
	unsetenv("KVTIER_SHM");
	assert_int_equal(kvt_client_shm(c), shm);
	return c;
}

/* A number from the stats document: "key":N after the "obj" object opens. */
static long long stat_num(const char *obj, const char *key)
{
	kvt_client *c = NULL;
	char *j = NULL, pat[64];
	const char *p;
	size_t n;
	long long v;

	assert_int_equal(kvt_connect(&c, D.sock), 0);
	assert_int_equal(kvt_stats_json(c, &j, &n), 0);
	kvt_close(c);
	p = j;
	if (obj) {
		snprintf(pat, sizeof(pat), "\"%s\":{", obj);
		p = strstr(j, pat);
		assert_non_null(p);
	}
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(p, pat);
	assert_non_null(p);
	v = atoll(p + strlen(pat));
	free(j);
	return v;
}

/* Every size, put by either path, reads back identically by every path. */
static void test_paths_identical(void **state)
{
	static const size_t sizes[] = { 0,	   1,	       4096,
					65535,	   65536,      65537,
					1 << 20,   (2 << 20) + 3, 8 << 20 };
	const size_t n = sizeof(sizes) / sizeof(sizes[0]);
	kvt_client *cs, *cp;
	uint8_t *want, *got;
	size_t len;

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){ "--l1-size",
							  "256M", "--l3-size",
							  "0", NULL }),
			 0);
	cs = connect_path(1);
	cp = connect_path(0);
	want = malloc(8 << 20);
	got = malloc((8 << 20) + 1); /* room for the canary byte below */
	for (size_t i = 0; i < n; i++) {
		for (int by = 0; by < 2; by++) {
			char key[32];
			void *alloc = NULL;

			snprintf(key, sizeof(key), "k%zu-%d", i, by);
			integ_fill(want, sizes[i], i * 2 + (size_t)by);
			assert_int_equal(kvt_put(by ? cs : cp, "t", key,
						 strlen(key), want, sizes[i],
						 NULL),
					 0);
			for (int rd = 0; rd < 2; rd++) {
				kvt_client *c = rd ? cs : cp;

				memset(got, 0xee, sizes[i] + 1);
				assert_int_equal(kvt_get(c, "t", key,
							 strlen(key), got,
							 8 << 20, &len),
						 0);
				assert_int_equal(len, sizes[i]);
				assert_memory_equal(got, want, sizes[i]);
				assert_int_equal(kvt_get_alloc(c, "t", key,
							       strlen(key),
							       &alloc, &len),
						 0);
				assert_int_equal(len, sizes[i]);
				assert_memory_equal(alloc, want, sizes[i]);
				free(alloc);
			}
		}
	}
	/* A buffer too small: KVT_ERANGE with the size, and c stays usable. */
	integ_fill(want, 1 << 20, 99);
	assert_int_equal(kvt_put(cs, "t", "big", 3, want, 1 << 20, NULL), 0);
	assert_int_equal(kvt_get(cs, "t", "big", 3, got, 1000, &len),
			 KVT_ERANGE);
	assert_int_equal(len, 1 << 20);
	assert_int_equal(kvt_ping(cs), 0);

	/* mget through leases, a window of them at a time. */
	enum { M = 70 };
	const void *keys[M];
	size_t klen[M], vlen[M];
	struct iovec bufs[M];
	int st[M];
	char names[M][16];
	uint8_t *mbuf = malloc((size_t)M * (96 << 10));
	for (int i = 0; i < M; i++) {
		snprintf(names[i], sizeof(names[i]), "m%d", i);
		keys[i] = names[i];
		klen[i] = strlen(names[i]);
		integ_fill(want, 96 << 10, 1000 + (uint64_t)i);
		assert_int_equal(kvt_put(cp, "t", names[i], klen[i], want,
					 96 << 10, NULL),
				 0);
		bufs[i].iov_base = mbuf + (size_t)i * (96 << 10);
		bufs[i].iov_len = 96 << 10;
	}
	assert_int_equal(kvt_mget(cs, "t", keys, klen, M, bufs, vlen, st), 0);
	for (int i = 0; i < M; i++) {
		assert_int_equal(st[i], 0);
		assert_int_equal(vlen[i], 96 << 10);
		integ_fill(want, 96 << 10, 1000 + (uint64_t)i);
		assert_memory_equal(bufs[i].iov_base, want, 96 << 10);
	}
	free(mbuf);

	/* The shared path was really used, and every lease has ended. */
	assert_true(stat_num("shm", "gets") >= 12 + M);
	/* Puts of 1M, 2M+3, 8M and "big" (smaller ones use the socket). */
	assert_int_equal(stat_num("shm", "puts"), 4);
	assert_int_equal(kvt_ping(cs), 0); /* drains RELEASE replies */
	assert_int_equal(stat_num("shm", "leases"), 0);
	assert_int_equal(stat_num("shm", "lease_bytes"), 0);
	kvt_close(cs);
	kvt_close(cp);
	free(want);
	free(got);
}

/* ---- A raw connection, to hold a lease and look at the arena ------------ */

struct raw {
	int fd;
	uint8_t *map;
	uint64_t size;
	uint64_t next_id;
};

static void raw_send(struct raw *r, uint8_t op, uint16_t flags,
		     const void *body, size_t len)
{
	uint8_t h[KVT_HDR_SIZE];
	struct kvt_frame_header fh = { .version = KVT_PROTO_VERSION,
				       .opcode = op,
				       .flags = flags,
				       .request_id = ++r->next_id,
				       .body_len = (uint32_t)len };

	kvt_frame_header_encode(h, &fh);
	assert_int_equal(send(r->fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	if (len)
		assert_int_equal(send(r->fd, body, len, 0), (ssize_t)len);
}

/* Reads one reply; its body (up to cap bytes) into body. */
static struct kvt_frame_header raw_reply(struct raw *r, void *body,
					 size_t cap)
{
	struct kvt_limits lim;
	struct kvt_frame_header h;
	uint8_t hb[KVT_HDR_SIZE];

	kvt_limits_default(&lim);
	lim.max_body = 0xffffffffu;
	assert_int_equal(recv(r->fd, hb, sizeof(hb), MSG_WAITALL),
			 (ssize_t)sizeof(hb));
	assert_int_equal(kvt_frame_header_decode(hb, sizeof(hb), &lim, &h), 0);
	assert_true(h.body_len <= cap);
	if (h.body_len)
		assert_int_equal(recv(r->fd, body, h.body_len, MSG_WAITALL),
				 (ssize_t)h.body_len);
	return h;
}

static int raw_connect(void)
{
	int fd = integ_raw_connect(&D);

	assert_true(fd >= 0);
	return fd;
}

/* Connects, asks for shared memory and maps the fd the reply carries. */
static void raw_open(struct raw *r)
{
	uint8_t req[KVT_HELLO_REQ_SIZE], hb[KVT_HDR_SIZE];
	uint8_t body[KVT_HELLO_REPLY_SHM_SIZE];
	union {
		struct cmsghdr a;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { hb, sizeof(hb) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = u.b, .msg_controllen = sizeof(u.b) };
	struct kvt_shm_hello sh;
	struct kvt_hello hl;
	int afd;

	memset(r, 0, sizeof(*r));
	r->fd = raw_connect();
	kvt_hello_req_encode(req, KVT_PROTO_VERSION, KVT_FEAT_SHM);
	raw_send(r, KVT_OP_HELLO, 0, req, sizeof(req));
	assert_int_equal(recvmsg(r->fd, &m, MSG_WAITALL), (ssize_t)sizeof(hb));
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	assert_non_null(cm);
	assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
	memcpy(&afd, CMSG_DATA(cm), sizeof(afd));
	assert_int_equal(recv(r->fd, body, sizeof(body), MSG_WAITALL),
			 (ssize_t)sizeof(body));
	assert_int_equal(kvt_hello_reply_parse(body, sizeof(body), &hl), 0);
	assert_true(hl.features & KVT_FEAT_SHM);
	assert_int_equal(kvt_shm_hello_parse(body, sizeof(body), &sh), 0);
	assert_true(sh.arena_size > 0);
	/* The arena is sealed: no client can shrink it under the daemon. */
	assert_int_not_equal(ftruncate(afd, 4096), 0);
	r->size = sh.arena_size;
	r->map = mmap(NULL, r->size, PROT_READ, MAP_SHARED, afd, 0);
	assert_true(r->map != MAP_FAILED);
	close(afd);
}

static void raw_close(struct raw *r)
{
	munmap(r->map, r->size);
	close(r->fd);
}

/* GET with KVT_FLAG_SHM; returns the lease. */
static struct kvt_shm_lease raw_get_lease(struct raw *r, const char *key)
{
	struct kvt_keyref k = { (const uint8_t *)"t", 1,
				(const uint8_t *)key, strlen(key) };
	uint8_t body[64];
	size_t len;
	struct kvt_shm_lease l;
	struct kvt_frame_header h;

	assert_int_equal(kvt_key_req_encode(body, sizeof(body), &k, &len), 0);
	raw_send(r, KVT_OP_GET, KVT_FLAG_SHM, body, len);
	h = raw_reply(r, body, sizeof(body));
	assert_int_equal(h.status, 0);
	assert_true(h.flags & KVT_FLAG_SHM);
	assert_int_equal(kvt_shm_lease_parse(body, h.body_len, r->size, &l), 0);
	return l;
}

/*
 * While leased, a block's bytes stay put however the block is replaced,
 * deleted and pushed out of the cache; RELEASE and closing end leases.
 */
static void test_lease_keeps_bytes(void **state)
{
	const size_t sz = 2 << 20;
	uint8_t *v = malloc(sz), *w = malloc(sz), body[64];
	struct kvt_shm_lease l;
	struct kvt_frame_header h;
	kvt_client *c;
	struct raw r;

	(void)state;
	/* Small RAM, no L2 or L3: every put evicts, evicted blocks are gone. */
	assert_int_equal(integ_start(&D, (const char *const[]){
					     "--l1-size", "16M", "--l2-size",
					     "0", "--l3-size", "0", NULL }),
			 0);
	c = connect_path(1);
	integ_fill(v, sz, 7);
	assert_int_equal(kvt_put(c, "t", "leased", 6, v, sz, NULL), 0);
	raw_open(&r);
	l = raw_get_lease(&r, "leased");
	assert_int_equal(l.len, sz);
	assert_memory_equal(r.map + l.offset, v, sz);
	assert_int_equal(stat_num("shm", "leases"), 1);
	assert_int_equal(stat_num("shm", "lease_bytes"), (long long)sz);

	/* Replace it, delete it, and churn 64 MiB through a 16 MiB L1. */
	integ_fill(w, sz, 8);
	assert_int_equal(kvt_put(c, "t", "leased", 6, w, sz, NULL), 0);
	assert_int_equal(kvt_del(c, "t", "leased", 6), 0);
	for (int i = 0; i < 32; i++) {
		char key[16];

		snprintf(key, sizeof(key), "churn%d", i);
		assert_int_equal(kvt_put(c, "t", key, strlen(key), w, sz, NULL),
				 0);
	}
	assert_true(stat_num(NULL, "evictions") > 0);
	assert_memory_equal(r.map + l.offset, v, sz);

	/* RELEASE ends it (an unknown id is skipped, not an error). */
	uint64_t ids[2] = { l.id, 999999 };
	size_t len;
	assert_int_equal(kvt_shm_release_req_encode(body, sizeof(body), ids, 2,
						    &len),
			 0);
	raw_send(&r, KVT_OP_RELEASE, 0, body, len);
	h = raw_reply(&r, body, sizeof(body));
	assert_int_equal(h.status, 0);
	assert_int_equal(h.body_len, 4);
	assert_int_equal(body[0], 1);
	assert_int_equal(stat_num("shm", "leases"), 0);

	/* A lease still held when the connection closes ends with it. */
	l = raw_get_lease(&r, "churn31");
	assert_memory_equal(r.map + l.offset, w, sz);
	assert_int_equal(stat_num("shm", "leases"), 1);
	raw_close(&r);
	for (int i = 0; i < 200 && stat_num("shm", "leases") != 0; i++)
		integ_sleep_ms(10);
	assert_int_equal(stat_num("shm", "leases"), 0);
	assert_int_equal(stat_num("shm", "lease_bytes"), 0);
	kvt_close(c);
	free(v);
	free(w);
}

/* Malformed shared-memory requests: clear errors, the connection lives. */
static void test_bad_requests(void **state)
{
	uint8_t body[KVT_ERRMSG_MAX + 64];
	struct kvt_frame_header h;
	struct raw r;

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){ "--l3-size",
							  "0", NULL }),
			 0);
	raw_open(&r);
	/* Commit of a slot never handed out. */
	kvt_shm_commit_req_encode(body, 12345);
	raw_send(&r, KVT_OP_PUT_COMMIT, 0, body, KVT_SHM_COMMIT_SIZE);
	h = raw_reply(&r, body, sizeof(body));
	assert_int_equal(-(int)h.status, KVT_EBADREQ);
	/* RELEASE whose count does not match its length. */
	memset(body, 0, 16);
	body[0] = 5;
	raw_send(&r, KVT_OP_RELEASE, 0, body, 16);
	h = raw_reply(&r, body, sizeof(body));
	assert_int_equal(-(int)h.status, KVT_EBADREQ);
	/* PUT_ALLOC larger than max-value. */
	struct kvt_put_req pr = { .k = { (const uint8_t *)"", 0,
					 (const uint8_t *)"k", 1 } };
	size_t len;
	kvt_shm_alloc_req_encode_len(body, 1ull << 40);
	assert_int_equal(kvt_put_req_encode_prefix(body + 8, sizeof(body) - 8,
						   &pr, &len),
			 0);
	raw_send(&r, KVT_OP_PUT_ALLOC, 0, body, 8 + len);
	h = raw_reply(&r, body, sizeof(body));
	assert_int_equal(-(int)h.status, KVT_ETOOBIG);
	/* Still served. */
	raw_send(&r, KVT_OP_PING, 0, "x", 1);
	h = raw_reply(&r, body, sizeof(body));
	assert_int_equal(h.status, 0);
	raw_close(&r);

	/* PUT_ALLOC on a connection that never got the arena. */
	kvt_client *c = connect_path(0);
	kvt_close(c);
	{
		struct raw p;

		memset(&p, 0, sizeof(p));
		p.fd = raw_connect();
		kvt_shm_alloc_req_encode_len(body, 100);
		assert_int_equal(kvt_put_req_encode_prefix(body + 8,
							   sizeof(body) - 8,
							   &pr, &len),
				 0);
		raw_send(&p, KVT_OP_PUT_ALLOC, 0, body, 8 + len);
		h = raw_reply(&p, body, sizeof(body));
		assert_int_equal(-(int)h.status, KVT_EBADREQ);
		close(p.fd);
	}
}

/* No room for a slot (lease cap): the value goes over the socket. */
static void test_slot_fallback(void **state)
{
	const size_t sz = 2 << 20;
	uint8_t *v = malloc(sz), *got = malloc(sz);
	kvt_client *c;
	size_t len;

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){
					     "--l3-size", "0",
					     "--shm-lease-max", "1M", NULL }),
			 0);
	c = connect_path(1);
	integ_fill(v, sz, 3);
	assert_int_equal(kvt_put(c, "t", "k", 1, v, sz, NULL), 0);
	assert_true(stat_num("shm", "slots_refused") >= 1);
	assert_int_equal(stat_num("shm", "puts"), 0);
	/* Same for a lease: the bytes come over the socket. */
	assert_int_equal(kvt_get(c, "t", "k", 1, got, sz, &len), 0);
	assert_int_equal(len, sz);
	assert_memory_equal(got, v, sz);
	assert_true(stat_num("shm", "fallbacks") >= 1);
	kvt_close(c);
	free(v);
	free(got);
}

/* --no-shm: nobody gets the arena, everything works over the socket. */
static void test_no_shm(void **state)
{
	uint8_t v[100000], got[100000];
	kvt_client *c;
	size_t len;

	(void)state;
	assert_int_equal(integ_start(&D, (const char *const[]){ "--l3-size",
							  "0", "--no-shm",
							  NULL }),
			 0);
	c = connect_path(0);
	integ_fill(v, sizeof(v), 5);
	assert_int_equal(kvt_put(c, "t", "k", 1, v, sizeof(v), NULL), 0);
	assert_int_equal(kvt_get(c, "t", "k", 1, got, sizeof(got), &len), 0);
	assert_memory_equal(got, v, sizeof(v));
	assert_int_equal(stat_num("shm", "clients_granted"), 0);
	kvt_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_paths_identical, teardown),
		cmocka_unit_test_teardown(test_lease_keeps_bytes, teardown),
		cmocka_unit_test_teardown(test_bad_requests, teardown),
		cmocka_unit_test_teardown(test_slot_fallback, teardown),
		cmocka_unit_test_teardown(test_no_shm, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
