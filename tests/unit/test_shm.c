/*
 * test_shm.c - proto/kvt_shm.c: the shared-memory bodies encode and parse
 * back, and every bound a peer could abuse is checked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kvt_shm.h"

static void test_hello_ext(void **state)
{
	uint8_t body[KVT_HELLO_REPLY_SHM_SIZE] = { 0 };
	struct kvt_shm_hello in = { 1ull << 34, 65536 }, out;

	(void)state;
	kvt_shm_hello_encode(body + KVT_HELLO_REPLY_SIZE, &in);
	assert_int_equal(kvt_shm_hello_parse(body, sizeof(body), &out), 0);
	assert_int_equal(out.arena_size, in.arena_size);
	assert_int_equal(out.threshold, in.threshold);
	/* An older daemon's 32-byte reply: no shared memory, not an error. */
	assert_int_equal(kvt_shm_hello_parse(body, KVT_HELLO_REPLY_SIZE, &out),
			 0);
	assert_int_equal(out.arena_size, 0);
	assert_int_equal(kvt_shm_hello_parse(NULL, 4, &out), KVT_EINVAL);
}

static void test_lease_bounds(void **state)
{
	uint8_t b[KVT_SHM_LEASE_SIZE];
	struct kvt_shm_lease l = { 9, 4096, 8192 }, o;

	(void)state;
	kvt_shm_lease_encode(b, &l);
	assert_int_equal(kvt_shm_lease_parse(b, sizeof(b), 12288, &o), 0);
	assert_int_equal(o.id, 9);
	assert_int_equal(o.offset, 4096);
	assert_int_equal(o.len, 8192);
	/* One byte past the arena, an offset past it, a wrapping sum. */
	assert_int_equal(kvt_shm_lease_parse(b, sizeof(b), 12287, &o),
			 KVT_EPROTO);
	l.offset = 20000;
	l.len = 0;
	kvt_shm_lease_encode(b, &l);
	assert_int_equal(kvt_shm_lease_parse(b, sizeof(b), 12288, &o),
			 KVT_EPROTO);
	l.offset = 4096;
	l.len = UINT64_MAX - 100;
	kvt_shm_lease_encode(b, &l);
	assert_int_equal(kvt_shm_lease_parse(b, sizeof(b), 1ull << 40, &o),
			 KVT_EPROTO);
	assert_int_equal(kvt_shm_lease_parse(b, sizeof(b) - 1, 1ull << 40, &o),
			 KVT_EPROTO);
}

static void test_release(void **state)
{
	static uint8_t b[KVT_SHM_RELEASE_FIXED + 8 * (KVT_SHM_RELEASE_MAX + 1)];
	static uint64_t ids[KVT_SHM_RELEASE_MAX + 1];
	const uint8_t *p;
	size_t n, len;

	(void)state;
	for (size_t i = 0; i <= KVT_SHM_RELEASE_MAX; i++)
		ids[i] = i * 77 + 1;
	assert_int_equal(kvt_shm_release_req_encode(b, sizeof(b), ids, 3, &len),
			 0);
	assert_int_equal(len, 32);
	assert_int_equal(kvt_shm_release_req_parse(b, len, &p, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(kvt_shm_release_id(p, 2), ids[2]);
	/* Trailing bytes, a short body, a nonzero reserved word. */
	assert_int_equal(kvt_shm_release_req_parse(b, len + 1, &p, &n),
			 KVT_EBADREQ);
	assert_int_equal(kvt_shm_release_req_parse(b, len - 8, &p, &n),
			 KVT_EBADREQ);
	b[4] = 1;
	assert_int_equal(kvt_shm_release_req_parse(b, len, &p, &n),
			 KVT_EBADREQ);
	/* Too many ids, both ways. */
	assert_int_equal(kvt_shm_release_req_encode(b, sizeof(b), ids,
						    KVT_SHM_RELEASE_MAX + 1,
						    &len),
			 KVT_ETOOBIG);
	memset(b, 0, 8);
	b[0] = (uint8_t)((KVT_SHM_RELEASE_MAX + 1) & 0xff);
	b[1] = (uint8_t)((KVT_SHM_RELEASE_MAX + 1) >> 8);
	assert_int_equal(kvt_shm_release_req_parse(b, sizeof(b), &p, &n),
			 KVT_ETOOBIG);
	assert_int_equal(kvt_shm_release_req_encode(b, 31, ids, 3, &len),
			 KVT_ERANGE);
	assert_int_equal(len, 32);
}

static void test_alloc(void **state)
{
	struct kvt_limits lim;
	struct kvt_put_req pr = { .k = { (const uint8_t *)"ns", 2,
					 (const uint8_t *)"key", 3 },
				  .dtype = KVT_DTYPE_BF16,
				  .ttl_s = 60 };
	uint8_t b[128];
	const uint8_t *prefix;
	size_t plen, len;
	uint64_t vlen;

	(void)state;
	kvt_limits_default(&lim);
	kvt_shm_alloc_req_encode_len(b, 2 << 20);
	assert_int_equal(kvt_put_req_encode_prefix(b + 8, sizeof(b) - 8, &pr,
						   &len),
			 0);
	assert_int_equal(kvt_shm_alloc_req_parse(b, 8 + len, &lim, &vlen,
						 &prefix, &plen),
			 0);
	assert_int_equal(vlen, 2 << 20);
	assert_ptr_equal(prefix, b + 8);
	assert_int_equal(plen, len);
	/* A value after the prefix is not a PUT_ALLOC. */
	assert_int_equal(kvt_shm_alloc_req_parse(b, 8 + len + 1, &lim, &vlen,
						 &prefix, &plen),
			 KVT_EBADREQ);
	/* Over max_value. */
	kvt_shm_alloc_req_encode_len(b, lim.max_value + 1);
	assert_int_equal(kvt_shm_alloc_req_parse(b, 8 + len, &lim, &vlen,
						 &prefix, &plen),
			 KVT_ETOOBIG);
	assert_int_equal(kvt_shm_alloc_req_parse(b, 7, &lim, &vlen, &prefix,
						 &plen),
			 KVT_EBADREQ);
}

static void test_slot_commit(void **state)
{
	uint8_t b[KVT_SHM_SLOT_SIZE];
	struct kvt_shm_slot s = { 5, 1 << 21 }, o;
	uint64_t id;

	(void)state;
	kvt_shm_slot_encode(b, &s);
	assert_int_equal(kvt_shm_slot_parse(b, sizeof(b), &o), 0);
	assert_int_equal(o.id, 5);
	assert_int_equal(o.offset, 1 << 21);
	assert_int_equal(kvt_shm_slot_parse(b, 15, &o), KVT_EPROTO);
	kvt_shm_commit_req_encode(b, 77);
	assert_int_equal(kvt_shm_commit_req_parse(b, KVT_SHM_COMMIT_SIZE, &id),
			 0);
	assert_int_equal(id, 77);
	assert_int_equal(kvt_shm_commit_req_parse(b, 9, &id), KVT_EBADREQ);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_ext),
		cmocka_unit_test(test_lease_bounds),
		cmocka_unit_test(test_release),
		cmocka_unit_test(test_alloc),
		cmocka_unit_test(test_slot_commit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
