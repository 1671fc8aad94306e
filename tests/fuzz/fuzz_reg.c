/*
 * fuzz_reg.c - libFuzzer harness for the registered-memory body parsers
 * of proto/kvt_reg.h (REGISTER request and reply, UNREGISTER, MGET_TO and
 * MPUT_FROM requests, their reply).
 *
 * Input: byte 0 chooses the parser (modulo the number of parsers) and, in
 * bit 4, small limits (key 8, namespace 2, value 64 bytes); the rest is
 * the body.  What a parser accepts is encoded again with the encoders and
 * must come out byte for byte as it went in (a REGISTER reply, whose
 * parser ignores trailing bytes, as far as it was read); every key and
 * segment it hands out lies inside the body and within the limits; a
 * request it accepts is one the daemon may walk without another check.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvt_fuzz.h"
#include "kvt_reg.h"

enum {
	SEL_REG_REQ = 0,
	SEL_REG_REPLY,
	SEL_UNREG,
	SEL_MGET_TO,
	SEL_MPUT_FROM,
	SEL_XFER_REPLY,
	SEL_END_
};

static void check_reg_req(const uint8_t *body, size_t len)
{
	struct kvt_reg_req r;
	uint8_t out[KVT_REG_REQ_SIZE];
	int rc = kvt_reg_req_parse(body, len, &r);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
	if (rc)
		return;
	KVT_FUZZ_CHECK(len == KVT_REG_REQ_SIZE);
	KVT_FUZZ_CHECK((r.flags & ~KVT_REGION_READONLY) == 0);
	KVT_FUZZ_CHECK(r.length <= UINT64_MAX - r.offset);
	kvt_reg_req_encode(out, &r);
	KVT_FUZZ_CHECK(memcmp(out, body, len) == 0);
}

static void check_reg_reply(const uint8_t *body, size_t len)
{
	struct kvt_reg_reply r;
	uint8_t out[KVT_REG_REPLY_SIZE];
	int rc = kvt_reg_reply_parse(body, len, &r);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	if (rc)
		return;
	KVT_FUZZ_CHECK(len >= KVT_REG_REPLY_SIZE && r.region != 0);
	kvt_reg_reply_encode(out, &r);
	KVT_FUZZ_CHECK(memcmp(out, body, KVT_REG_REPLY_SIZE) == 0);
}

static void check_unreg(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_UNREG_REQ_SIZE];
	uint32_t id;
	int rc = kvt_unreg_req_parse(body, len, &id);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
	if (rc)
		return;
	KVT_FUZZ_CHECK(len == KVT_UNREG_REQ_SIZE && id != 0);
	kvt_unreg_req_encode(out, id);
	KVT_FUZZ_CHECK(memcmp(out, body, len) == 0);
}

static int inside(const uint8_t *body, size_t len, const uint8_t *p, size_t n)
{
	return p >= body && (size_t)(p - body) <= len &&
	       n <= len - (size_t)(p - body);
}

static void check_xfer(const uint8_t *body, size_t len, int put,
		       const struct kvt_limits *lim)
{
	struct kvt_xfer_req r;
	struct kvt_xfer_key k;
	uint8_t *out;
	size_t off, pos = 0, n = 0, segs = 0;
	int rc = kvt_xfer_req_parse(body, len, put, lim, &r);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc)
		return;
	KVT_FUZZ_CHECK(r.h.put == put && r.h.count <= KVT_XFER_KEYS_MAX);
	KVT_FUZZ_CHECK(r.nsegs <= KVT_XFER_SEGS_MAX);
	KVT_FUZZ_CHECK(r.h.ns_len <= lim->max_ns);
	KVT_FUZZ_CHECK(inside(body, len, r.h.ns, r.h.ns_len));
	KVT_FUZZ_CHECK(put || (r.h.dtype == 0 && r.h.ttl_s == 0));
	/* Encoded again from what the parser handed out: the same bytes. */
	out = malloc(len ? len : 1);
	KVT_FUZZ_CHECK(out != NULL);
	KVT_FUZZ_CHECK(kvt_xfer_head_encode(out, &r.h) == 0);
	off = kvt_xfer_head_size(put, r.h.ns_len);
	while (kvt_xfer_req_key(&r, &pos, &k)) {
		uint64_t total = 0;

		KVT_FUZZ_CHECK(inside(body, len, k.k.key, k.k.key_len));
		KVT_FUZZ_CHECK(k.k.key_len >= 1 && k.k.key_len <= lim->max_key);
		KVT_FUZZ_CHECK(k.k.ns == r.h.ns && k.k.ns_len == r.h.ns_len);
		KVT_FUZZ_CHECK(k.nseg <= KVT_XFER_KEY_SEGS_MAX);
		KVT_FUZZ_CHECK(inside(body, len, k.segs,
				      k.nseg * KVT_XFER_SEG_SIZE));
		KVT_FUZZ_CHECK(off + kvt_xfer_key_size(k.k.key_len, k.nseg) <=
			       len);
		KVT_FUZZ_CHECK(kvt_xfer_key_encode(out + off, k.k.key,
						   k.k.key_len, k.nseg) == 0);
		off += kvt_xfer_key_size(k.k.key_len, 0);
		for (size_t s = 0; s < k.nseg; s++) {
			struct kvt_xfer_seg sg;

			kvt_xfer_key_seg(&k, s, &sg);
			KVT_FUZZ_CHECK(sg.region != 0);
			KVT_FUZZ_CHECK(sg.length <= UINT64_MAX - sg.offset);
			/* The parser saturates a sum past 2^64. */
			total = sg.length > UINT64_MAX - total ? UINT64_MAX
							       : total + sg.length;
			kvt_xfer_seg_encode(out + off, &sg);
			off += KVT_XFER_SEG_SIZE;
		}
		KVT_FUZZ_CHECK(total == k.total);
		KVT_FUZZ_CHECK(!put || k.total <= lim->max_value);
		segs += k.nseg;
		n++;
	}
	KVT_FUZZ_CHECK(n == r.h.count && segs == r.nsegs && off == len);
	KVT_FUZZ_CHECK(memcmp(out, body, len) == 0);
	free(out);
}

static void check_xfer_reply(const uint8_t *body, size_t len)
{
	struct kvt_xfer_result res;
	uint8_t out[KVT_XFER_RESULT_SIZE], head[KVT_XFER_REPLY_FIXED];
	uint32_t count;
	int rc = kvt_xfer_reply_head_parse(body, len, &count);

	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	if (rc)
		return;
	KVT_FUZZ_CHECK(len == kvt_xfer_reply_size(count));
	kvt_xfer_reply_head_encode(head, count);
	KVT_FUZZ_CHECK(memcmp(head, body, sizeof(head)) == 0);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *p = body + KVT_XFER_REPLY_FIXED +
				   i * KVT_XFER_RESULT_SIZE;

		rc = kvt_xfer_result_parse(p, &res);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
		if (rc)
			continue;
		KVT_FUZZ_CHECK(res.status < KVT_XFER_STATUS_END_);
		KVT_FUZZ_CHECK((res.status == KVT_XFER_ERROR) ==
			       (res.code != 0));
		kvt_xfer_result_encode(out, &res);
		KVT_FUZZ_CHECK(memcmp(out, p, sizeof(out)) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvt_limits lim;
	const uint8_t *body;
	size_t len;

	if (size < 1)
		return 0;
	kvt_limits_default(&lim);
	if (data[0] & 0x10) {
		lim.max_key = 8;
		lim.max_ns = 2;
		lim.max_value = 64;
	}
	body = data + 1;
	len = size - 1;
	switch ((data[0] & 0x0f) % SEL_END_) {
	case SEL_REG_REQ:
		check_reg_req(body, len);
		break;
	case SEL_REG_REPLY:
		check_reg_reply(body, len);
		break;
	case SEL_UNREG:
		check_unreg(body, len);
		break;
	case SEL_MGET_TO:
		check_xfer(body, len, 0, &lim);
		break;
	case SEL_MPUT_FROM:
		check_xfer(body, len, 1, &lim);
		break;
	case SEL_XFER_REPLY:
		check_xfer_reply(body, len);
		break;
	}
	return 0;
}
