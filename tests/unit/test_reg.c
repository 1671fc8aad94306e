/*
 * test_reg.c - the wire format of registered memory (proto/kvt_reg.c):
 * the bytes of PROTOCOL.md's examples, round trips, and every malformed
 * body the parsers must refuse with the code PROTOCOL.md gives.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_reg.h"

static struct kvt_limits lim(void)
{
	struct kvt_limits l;

	kvt_limits_default(&l);
	return l;
}

static void test_register(void **state)
{
	/* PROTOCOL.md: REGISTER of 1 MiB at offset 4096, read-write. */
	static const uint8_t doc[KVT_REG_REQ_SIZE] = {
		0x00, 0x10, 0, 0, 0, 0, 0, 0, /* offset 4096 */
		0x00, 0x00, 0x10, 0, 0, 0, 0, 0, /* length 1 MiB */
		0, 0, 0, 0, 0, 0, 0, 0,	      /* flags, reserved */
	};
	struct kvt_reg_req r = { 4096, 1 << 20, 0 }, p;
	uint8_t b[KVT_REG_REQ_SIZE];

	(void)state;
	kvt_reg_req_encode(b, &r);
	assert_memory_equal(b, doc, sizeof(doc));
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b), &p), 0);
	assert_true(p.offset == 4096 && p.length == 1 << 20 && p.flags == 0);
	r.flags = KVT_REGION_READONLY;
	kvt_reg_req_encode(b, &r);
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b), &p), 0);
	assert_int_equal(p.flags, KVT_REGION_READONLY);
	/* Wrong length, unknown flag, reserved field, wrapping range. */
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b) - 1, &p), KVT_EBADREQ);
	r.flags = KVT_REGION_SEALED;
	kvt_reg_req_encode(b, &r);
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b), &p), KVT_EBADREQ);
	r.flags = 0;
	kvt_reg_req_encode(b, &r);
	b[20] = 1;
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b), &p), KVT_EBADREQ);
	r.offset = UINT64_MAX - 10;
	r.length = 11;
	kvt_reg_req_encode(b, &r);
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b), &p), KVT_EBADREQ);
	r.length = 10;
	kvt_reg_req_encode(b, &r);
	assert_int_equal(kvt_reg_req_parse(b, sizeof(b), &p), 0);
}

static void test_register_reply(void **state)
{
	struct kvt_reg_reply r = { 3, KVT_REGION_SEALED, 1 << 20 }, p;
	uint8_t b[KVT_REG_REPLY_SIZE + 4];

	(void)state;
	kvt_reg_reply_encode(b, &r);
	assert_int_equal(b[0], 3);
	assert_int_equal(b[4], KVT_REGION_SEALED);
	assert_int_equal(kvt_reg_reply_parse(b, KVT_REG_REPLY_SIZE, &p), 0);
	assert_true(p.region == 3 && p.flags == KVT_REGION_SEALED &&
		    p.length == 1 << 20);
	/* Later versions may append. */
	assert_int_equal(kvt_reg_reply_parse(b, sizeof(b), &p), 0);
	assert_int_equal(kvt_reg_reply_parse(b, KVT_REG_REPLY_SIZE - 1, &p),
			 KVT_EPROTO);
	r.region = 0;
	kvt_reg_reply_encode(b, &r);
	assert_int_equal(kvt_reg_reply_parse(b, KVT_REG_REPLY_SIZE, &p),
			 KVT_EPROTO);
	r.region = 1;
	r.flags = 4;
	kvt_reg_reply_encode(b, &r);
	assert_int_equal(kvt_reg_reply_parse(b, KVT_REG_REPLY_SIZE, &p),
			 KVT_EPROTO);
}

static void test_unregister(void **state)
{
	uint8_t b[KVT_UNREG_REQ_SIZE];
	uint32_t id = 0;

	(void)state;
	kvt_unreg_req_encode(b, 7);
	assert_int_equal(kvt_unreg_req_parse(b, sizeof(b), &id), 0);
	assert_int_equal(id, 7);
	assert_int_equal(kvt_unreg_req_parse(b, 4, &id), KVT_EBADREQ);
	b[4] = 1;
	assert_int_equal(kvt_unreg_req_parse(b, sizeof(b), &id), KVT_EBADREQ);
	kvt_unreg_req_encode(b, 0);
	assert_int_equal(kvt_unreg_req_parse(b, sizeof(b), &id), KVT_EBADREQ);
}

/* Builds a request of n keys "k<i>", key i with i % 3 segments. */
static size_t build(uint8_t *out, int put, const char *ns, size_t n,
		    uint8_t dtype, uint32_t ttl)
{
	struct kvt_xfer_head h = { put, (const uint8_t *)ns, strlen(ns), n,
				   dtype, ttl };
	size_t off = kvt_xfer_head_size(put, h.ns_len);

	assert_int_equal(kvt_xfer_head_encode(out, &h), 0);
	for (size_t i = 0; i < n; i++) {
		char key[16];
		size_t kl = (size_t)snprintf(key, sizeof(key), "k%zu", i);
		size_t nseg = i % 3;

		assert_int_equal(kvt_xfer_key_encode(out + off, key, kl, nseg),
				 0);
		off += kvt_xfer_key_size(kl, 0);
		for (size_t s = 0; s < nseg; s++) {
			struct kvt_xfer_seg sg = { (uint32_t)(1 + s),
						   i * 1000 + s * 100, 100 };

			kvt_xfer_seg_encode(out + off, &sg);
			off += KVT_XFER_SEG_SIZE;
		}
	}
	return off;
}

static void test_xfer_doc(void **state)
{
	/* PROTOCOL.md's example: MGET_TO of "p0", K and V of region 1. */
	static const uint8_t doc[] = {
		0x02, 0x00, 0x01, 0x00, 'm', '1', /* ns "m1", count 1 */
		0x02, 0x00, 'p', '0',		  /* key "p0" */
		0x02, 0x00,			  /* nseg 2 */
		0x01, 0, 0, 0, 0, 0, 0, 0,	  /* region 1 */
		0x00, 0, 0, 0, 0, 0, 0, 0,	  /* offset 0 */
		0x00, 0, 0x10, 0, 0, 0, 0, 0,	  /* length 1 MiB */
		0x01, 0, 0, 0, 0, 0, 0, 0,	  /* region 1 */
		0x00, 0, 0, 0x40, 0, 0, 0, 0,	  /* offset 1 GiB */
		0x00, 0, 0x10, 0, 0, 0, 0, 0,	  /* length 1 MiB */
	};
	struct kvt_xfer_head h = { 0, (const uint8_t *)"m1", 2, 1, 0, 0 };
	struct kvt_xfer_seg k = { 1, 0, 1 << 20 }, v = { 1, 1ull << 30,
							 1 << 20 };
	uint8_t b[sizeof(doc)];
	struct kvt_limits l = lim();
	struct kvt_xfer_req r;
	struct kvt_xfer_key key;
	struct kvt_xfer_seg s;
	size_t off, pos = 0;

	(void)state;
	assert_int_equal(kvt_xfer_head_size(0, 2), 6);
	assert_int_equal(kvt_xfer_key_size(2, 2), 4 + 2 + 48);
	assert_int_equal(kvt_xfer_head_encode(b, &h), 0);
	off = 6;
	assert_int_equal(kvt_xfer_key_encode(b + off, "p0", 2, 2), 0);
	off += 6;
	kvt_xfer_seg_encode(b + off, &k);
	kvt_xfer_seg_encode(b + off + 24, &v);
	assert_memory_equal(b, doc, sizeof(doc));
	assert_int_equal(kvt_xfer_req_parse(b, sizeof(b), 0, &l, &r), 0);
	assert_int_equal(r.h.count, 1);
	assert_int_equal(r.nsegs, 2);
	assert_int_equal(kvt_xfer_req_key(&r, &pos, &key), 1);
	assert_int_equal(key.k.key_len, 2);
	assert_memory_equal(key.k.key, "p0", 2);
	assert_int_equal(key.k.ns_len, 2);
	assert_int_equal(key.nseg, 2);
	assert_true(key.total == 2 << 20);
	kvt_xfer_key_seg(&key, 1, &s);
	assert_true(s.region == 1 && s.offset == 1ull << 30 &&
		    s.length == 1 << 20);
	assert_int_equal(kvt_xfer_req_key(&r, &pos, &key), 0);
	/* PROTOCOL.md's reply: a 2 MiB hit in bf16. */
	{
		static const uint8_t rdoc[24] = {
			1, 0, 0, 0, 0, 0, 0, 0,
			0, 2, 0, 0, 0, 0, 0, 0,
			0, 0, 0x20, 0, 0, 0, 0, 0,
		};
		struct kvt_xfer_result res = { KVT_XFER_OK, 2, 0, 2 << 20 };
		uint8_t rb[24];

		kvt_xfer_reply_head_encode(rb, 1);
		kvt_xfer_result_encode(rb + 8, &res);
		assert_memory_equal(rb, rdoc, sizeof(rdoc));
	}
	/* The same bytes are not an MPUT_FROM (its fixed part is 8). */
	assert_int_not_equal(kvt_xfer_req_parse(b, sizeof(b), 1, &l, &r), 0);
}

static void test_xfer_roundtrip(void **state)
{
	uint8_t *b = malloc(1 << 20);
	struct kvt_limits l = lim();
	struct kvt_xfer_req r;
	struct kvt_xfer_key k;
	size_t len, pos = 0, i = 0, segs = 0;

	(void)state;
	len = build(b, 1, "ns", 300, KVT_DTYPE_BF16, 60);
	assert_int_equal(kvt_xfer_req_parse(b, len, 1, &l, &r), 0);
	assert_int_equal(r.h.count, 300);
	assert_int_equal(r.h.dtype, KVT_DTYPE_BF16);
	assert_int_equal(r.h.ttl_s, 60);
	while (kvt_xfer_req_key(&r, &pos, &k)) {
		char key[16];
		size_t kl = (size_t)snprintf(key, sizeof(key), "k%zu", i);

		assert_int_equal(k.k.key_len, kl);
		assert_memory_equal(k.k.key, key, kl);
		assert_int_equal(k.nseg, i % 3);
		assert_true(k.total == 100 * (i % 3));
		for (size_t s = 0; s < k.nseg; s++) {
			struct kvt_xfer_seg sg;

			kvt_xfer_key_seg(&k, s, &sg);
			assert_true(sg.region == 1 + s &&
				    sg.offset == i * 1000 + s * 100 &&
				    sg.length == 100);
		}
		segs += k.nseg;
		i++;
	}
	assert_int_equal(i, 300);
	assert_int_equal(segs, r.nsegs);
	/* Empty batches are fine. */
	len = build(b, 0, "", 0, 0, 0);
	assert_int_equal(len, 4);
	assert_int_equal(kvt_xfer_req_parse(b, len, 0, &l, &r), 0);
	assert_int_equal(r.h.count, 0);
	free(b);
}

static void test_xfer_malformed(void **state)
{
	uint8_t *b = malloc(4 << 20);
	struct kvt_limits l = lim(), small = lim();
	struct kvt_xfer_head h = { 0, NULL, 0, 1, 0, 0 };
	struct kvt_xfer_seg sg = { 1, 0, 10 };
	struct kvt_xfer_req r;
	size_t len, off;

	(void)state;
	small.max_key = 1;
	small.max_value = 100;
	len = build(b, 0, "n", 3, 0, 0);
	assert_int_equal(kvt_xfer_req_parse(b, len, 0, &l, &r), 0);
	/* Short, trailing bytes, cut in a segment, reserved byte. */
	assert_int_equal(kvt_xfer_req_parse(b, 3, 0, &l, &r), KVT_EBADREQ);
	b[len] = 0;
	assert_int_equal(kvt_xfer_req_parse(b, len + 1, 0, &l, &r),
			 KVT_EBADREQ);
	assert_int_equal(kvt_xfer_req_parse(b, len - 1, 0, &l, &r),
			 KVT_EBADREQ);
	b[1] = 1;
	assert_int_equal(kvt_xfer_req_parse(b, len, 0, &l, &r), KVT_EBADREQ);
	b[1] = 0;
	/* A key over the limit: ETOOBIG before the rest is looked at. */
	assert_int_equal(kvt_xfer_req_parse(b, len, 0, &small, &r),
			 KVT_ETOOBIG);
	/* Bad dtype in MPUT_FROM; dtype and TTL refused in MGET_TO. */
	len = build(b, 1, "", 1, 0, 0);
	b[1] = KVT_DTYPE_END_;
	assert_int_equal(kvt_xfer_req_parse(b, len, 1, &l, &r), KVT_EBADREQ);
	h.dtype = 1;
	assert_int_equal(kvt_xfer_head_encode(b, &h), KVT_EINVAL);
	h.dtype = 0;
	h.ttl_s = 5;
	assert_int_equal(kvt_xfer_head_encode(b, &h), KVT_EINVAL);
	h.ttl_s = 0;
	/* count over the maximum. */
	h.count = KVT_XFER_KEYS_MAX + 1;
	assert_int_equal(kvt_xfer_head_encode(b, &h), KVT_EINVAL);
	b[0] = 0;
	b[1] = 0;
	b[2] = (KVT_XFER_KEYS_MAX + 1) & 0xff;
	b[3] = (KVT_XFER_KEYS_MAX + 1) >> 8;
	assert_int_equal(kvt_xfer_req_parse(b, 4, 0, &l, &r), KVT_ETOOBIG);
	/* An empty key; a key with too many segments; region 0; a wrap. */
	h.count = 1;
	assert_int_equal(kvt_xfer_head_encode(b, &h), 0);
	assert_int_equal(kvt_xfer_key_encode(b + 4, "k", 0, 0), KVT_EINVAL);
	assert_int_equal(kvt_xfer_key_encode(b + 4, "k", 1,
					     KVT_XFER_KEY_SEGS_MAX + 1),
			 KVT_EINVAL);
	b[4] = 0;
	b[5] = 0;
	assert_int_equal(kvt_xfer_req_parse(b, 8, 0, &l, &r), KVT_EBADREQ);
	assert_int_equal(kvt_xfer_key_encode(b + 4, "k", 1, 1), 0);
	sg.region = 0;
	kvt_xfer_seg_encode(b + 9, &sg);
	assert_int_equal(kvt_xfer_req_parse(b, 33, 0, &l, &r), KVT_EBADREQ);
	sg.region = 1;
	sg.offset = UINT64_MAX;
	kvt_xfer_seg_encode(b + 9, &sg);
	assert_int_equal(kvt_xfer_req_parse(b, 33, 0, &l, &r), KVT_EBADREQ);
	sg.offset = 0;
	kvt_xfer_seg_encode(b + 9, &sg);
	b[13] = 1; /* the segment's reserved field */
	assert_int_equal(kvt_xfer_req_parse(b, 33, 0, &l, &r), KVT_EBADREQ);
	b[13] = 0;
	assert_int_equal(kvt_xfer_req_parse(b, 33, 0, &l, &r), 0);
	b[7] = (KVT_XFER_KEY_SEGS_MAX + 1) & 0xff;
	b[8] = (KVT_XFER_KEY_SEGS_MAX + 1) >> 8;
	assert_int_equal(kvt_xfer_req_parse(b, 33, 0, &l, &r), KVT_ETOOBIG);
	/* MPUT_FROM: a value over max_value. */
	h.put = 1;
	assert_int_equal(kvt_xfer_head_encode(b, &h), 0);
	assert_int_equal(kvt_xfer_key_encode(b + 8, "k", 1, 2), 0);
	sg.length = 60;
	kvt_xfer_seg_encode(b + 13, &sg);
	kvt_xfer_seg_encode(b + 37, &sg);
	assert_int_equal(kvt_xfer_req_parse(b, 61, 1, &l, &r), 0);
	assert_int_equal(kvt_xfer_req_parse(b, 61, 1, &small, &r),
			 KVT_ETOOBIG);
	/* More than KVT_XFER_SEGS_MAX segments in all. */
	h = (struct kvt_xfer_head){ 0, NULL, 0, 129, 0, 0 };
	assert_int_equal(kvt_xfer_head_encode(b, &h), 0);
	off = 4;
	for (int i = 0; i < 129; i++) {
		assert_int_equal(kvt_xfer_key_encode(b + off, "k", 1, 512), 0);
		off += 5;
		for (int s = 0; s < 512; s++, off += KVT_XFER_SEG_SIZE)
			kvt_xfer_seg_encode(b + off, &sg);
	}
	assert_true(128 * 512 == KVT_XFER_SEGS_MAX);
	assert_int_equal(kvt_xfer_req_parse(b, off, 0, &l, &r), KVT_ETOOBIG);
	b[2] = 128;
	b[3] = 0;
	assert_int_equal(kvt_xfer_req_parse(b, off - 5 - 512 * 24, 0, &l, &r),
			 0);
	free(b);
}

static void test_reply(void **state)
{
	struct kvt_xfer_result in[4] = {
		{ KVT_XFER_OK, KVT_DTYPE_BF16, 0, 1 << 20 },
		{ KVT_XFER_MISS, 0, 0, 0 },
		{ KVT_XFER_MISMATCH, 0, 0, 77 },
		{ KVT_XFER_ERROR, 0, 1018, 0 },
	}, out;
	uint8_t b[8 + 4 * 16];
	uint32_t n;

	(void)state;
	assert_int_equal(kvt_xfer_reply_size(4), sizeof(b));
	kvt_xfer_reply_head_encode(b, 4);
	for (int i = 0; i < 4; i++)
		kvt_xfer_result_encode(b + 8 + 16 * i, &in[i]);
	assert_int_equal(kvt_xfer_reply_head_parse(b, sizeof(b), &n), 0);
	assert_int_equal(n, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(kvt_xfer_result_parse(b + 8 + 16 * i, &out),
				 0);
		assert_memory_equal(&out.status, &in[i].status, 1);
		assert_int_equal(out.dtype, in[i].dtype);
		assert_int_equal(out.code, in[i].code);
		assert_true(out.length == in[i].length);
	}
	/* The body must hold exactly count results. */
	assert_int_equal(kvt_xfer_reply_head_parse(b, sizeof(b) - 1, &n),
			 KVT_EPROTO);
	assert_int_equal(kvt_xfer_reply_head_parse(b, 7, &n), KVT_EPROTO);
	b[4] = 1;
	assert_int_equal(kvt_xfer_reply_head_parse(b, sizeof(b), &n),
			 KVT_EPROTO);
	/* Bad status, reserved field, code without ERROR and vice versa. */
	b[8] = 4;
	assert_int_equal(kvt_xfer_result_parse(b + 8, &out), KVT_EPROTO);
	b[8] = 0;
	b[10] = 1;
	assert_int_equal(kvt_xfer_result_parse(b + 8, &out), KVT_EPROTO);
	b[10] = 0;
	b[12] = 1;
	assert_int_equal(kvt_xfer_result_parse(b + 8, &out), KVT_EPROTO);
	b[8 + 48 + 4] = 0;
	b[8 + 48 + 5] = 0;
	assert_int_equal(kvt_xfer_result_parse(b + 8 + 48, &out), KVT_EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register),
		cmocka_unit_test(test_register_reply),
		cmocka_unit_test(test_unregister),
		cmocka_unit_test(test_xfer_doc),
		cmocka_unit_test(test_xfer_roundtrip),
		cmocka_unit_test(test_xfer_malformed),
		cmocka_unit_test(test_reply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
