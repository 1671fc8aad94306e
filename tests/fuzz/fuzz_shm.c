/*
 * fuzz_shm.c - libFuzzer harness for the shared-memory body parsers of
 * proto/kvt_shm.h (HELLO extension, lease, RELEASE, PUT_ALLOC, slot,
 * PUT_COMMIT).
 *
 * Input: byte 0 chooses the parser (modulo the number of parsers) and, in
 * bit 4, small limits; bytes 1-8 are an arena size for the lease check;
 * the rest is the body.  What a parser accepts is encoded again and must
 * come out byte for byte as it went in, and every offset it accepts must
 * lie inside the arena.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvt_fuzz.h"
#include "kvt_shm.h"

enum {
	SEL_HELLO = 0,
	SEL_LEASE,
	SEL_RELEASE,
	SEL_ALLOC,
	SEL_SLOT,
	SEL_COMMIT,
	SEL_END_
};

static void check_hello(const uint8_t *body, size_t len)
{
	struct kvt_shm_hello h;
	uint8_t out[16];

	KVT_FUZZ_CHECK(kvt_shm_hello_parse(body, len, &h) == 0);
	if (len < KVT_HELLO_REPLY_SHM_SIZE) {
		KVT_FUZZ_CHECK(h.arena_size == 0 && h.threshold == 0);
		return;
	}
	kvt_shm_hello_encode(out, &h);
	KVT_FUZZ_CHECK(memcmp(out, body + KVT_HELLO_REPLY_SIZE, 16) == 0);
}

static void check_lease(const uint8_t *body, size_t len, uint64_t arena)
{
	struct kvt_shm_lease l;
	uint8_t out[KVT_SHM_LEASE_SIZE];
	int rc = kvt_shm_lease_parse(body, len, arena, &l);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	if (rc)
		return;
	KVT_FUZZ_CHECK(len == KVT_SHM_LEASE_SIZE);
	KVT_FUZZ_CHECK(l.offset <= arena && l.len <= arena - l.offset);
	kvt_shm_lease_encode(out, &l);
	KVT_FUZZ_CHECK(memcmp(out, body, len) == 0);
}

static void check_release(const uint8_t *body, size_t len)
{
	const uint8_t *ids;
	uint64_t *v;
	uint8_t *out;
	size_t n, need, written;
	int rc = kvt_shm_release_req_parse(body, len, &ids, &n);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc)
		return;
	KVT_FUZZ_CHECK(n <= KVT_SHM_RELEASE_MAX);
	need = kvt_shm_release_req_size(n);
	KVT_FUZZ_CHECK(need == len && ids == body + KVT_SHM_RELEASE_FIXED);
	v = malloc((n ? n : 1) * sizeof(*v));
	out = malloc(need);
	KVT_FUZZ_CHECK(v && out);
	for (size_t i = 0; i < n; i++)
		v[i] = kvt_shm_release_id(ids, i);
	rc = kvt_shm_release_req_encode(out, need - 1, v, n, &written);
	KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == need);
	rc = kvt_shm_release_req_encode(out, need, v, n, &written);
	KVT_FUZZ_CHECK(rc == 0 && written == need);
	KVT_FUZZ_CHECK(memcmp(out, body, need) == 0);
	free(v);
	free(out);
}

static void check_alloc(const uint8_t *body, size_t len,
			const struct kvt_limits *lim)
{
	const uint8_t *prefix;
	size_t prefix_len, written;
	uint64_t vlen;
	struct kvt_put_req pr;
	uint8_t *out;
	int rc = kvt_shm_alloc_req_parse(body, len, lim, &vlen, &prefix,
					 &prefix_len);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc)
		return;
	KVT_FUZZ_CHECK(vlen <= lim->max_value);
	KVT_FUZZ_CHECK(prefix == body + KVT_SHM_ALLOC_FIXED &&
		       prefix_len == len - KVT_SHM_ALLOC_FIXED);
	/* The daemon re-parses the prefix as a PUT body; it must pass. */
	KVT_FUZZ_CHECK(kvt_put_req_parse(prefix, prefix_len, lim, &pr) == 0);
	KVT_FUZZ_CHECK(pr.value_len == 0);
	out = malloc(len);
	KVT_FUZZ_CHECK(out != NULL);
	kvt_shm_alloc_req_encode_len(out, vlen);
	rc = kvt_put_req_encode_prefix(out + KVT_SHM_ALLOC_FIXED,
				       len - KVT_SHM_ALLOC_FIXED, &pr,
				       &written);
	KVT_FUZZ_CHECK(rc == 0 && written == prefix_len);
	KVT_FUZZ_CHECK(memcmp(out, body, len) == 0);
	free(out);
}

static void check_slot(const uint8_t *body, size_t len)
{
	struct kvt_shm_slot s;
	uint8_t out[KVT_SHM_SLOT_SIZE];
	int rc = kvt_shm_slot_parse(body, len, &s);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	if (rc)
		return;
	kvt_shm_slot_encode(out, &s);
	KVT_FUZZ_CHECK(len == sizeof(out) && memcmp(out, body, len) == 0);
}

static void check_commit(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_SHM_COMMIT_SIZE];
	uint64_t id;
	int rc = kvt_shm_commit_req_parse(body, len, &id);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
	if (rc)
		return;
	kvt_shm_commit_req_encode(out, id);
	KVT_FUZZ_CHECK(len == sizeof(out) && memcmp(out, body, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvt_limits lim;
	uint64_t arena = 0;

	if (size < 9)
		return 0;
	kvt_limits_default(&lim);
	if (data[0] & 0x10) {
		lim.max_key = 8;
		lim.max_ns = 2;
		lim.max_value = 16;
		lim.max_body = kvt_limits_put_body_max(&lim);
	}
	for (int i = 8; i >= 1; i--)
		arena = arena << 8 | data[i];
	const uint8_t *body = data + 9;
	size_t len = size - 9;
	/* A private copy, so ASan sees reads past the body's end. */
	uint8_t *copy = malloc(len ? len : 1);
	KVT_FUZZ_CHECK(copy != NULL);
	memcpy(copy, body, len);
	switch ((data[0] & 0x0f) % SEL_END_) {
	case SEL_HELLO:
		check_hello(copy, len);
		break;
	case SEL_LEASE:
		check_lease(copy, len, arena);
		break;
	case SEL_RELEASE:
		check_release(copy, len);
		break;
	case SEL_ALLOC:
		check_alloc(copy, len, &lim);
		break;
	case SEL_SLOT:
		check_slot(copy, len);
		break;
	case SEL_COMMIT:
		check_commit(copy, len);
		break;
	}
	free(copy);
	return 0;
}
