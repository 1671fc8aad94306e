/*
 * test_frame.c - unit tests for proto/kvt_frame.c (and kvt_strerror, which
 * every frame error ends up in).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvtier_errors.h"

/* ---- Helpers -------------------------------------------------------- */

static struct kvt_limits deflim(void)
{
	struct kvt_limits lim;

	kvt_limits_default(&lim);
	return lim;
}

/* Appends one whole frame to buf at *len. */
static void append_frame(uint8_t *buf, size_t cap, size_t *len, uint8_t op,
			 uint64_t id, uint16_t flags, uint32_t status,
			 const void *body, uint32_t body_len)
{
	struct kvt_frame_header h = {
		.version = KVT_PROTO_VERSION,
		.opcode = op,
		.flags = flags,
		.request_id = id,
		.status = status,
		.body_len = body_len,
	};

	assert_true(*len + KVT_HDR_SIZE + body_len <= cap);
	kvt_frame_header_encode(buf + *len, &h);
	*len += KVT_HDR_SIZE;
	if (body_len)
		memcpy(buf + *len, body, body_len);
	*len += body_len;
}

/* A raw header with arbitrary (possibly invalid) version and magic. */
static void raw_header(uint8_t out[KVT_HDR_SIZE], uint8_t version,
		       uint32_t body_len)
{
	struct kvt_frame_header h = {
		.version = version,
		.opcode = KVT_OP_PING,
		.request_id = 0x1122334455667788ull,
		.body_len = body_len,
	};

	kvt_frame_header_encode(out, &h);
}

struct got {
	struct kvt_frame_header h;
	uint8_t body[512];
};

enum feed_mode {
	FEED_COPY,      /* body bytes go through kvt_decoder_feed */
	FEED_ZEROCOPY,  /* body bytes go through body_tail/body_advance */
};

/*
 * Decodes a byte stream offering at most `chunk` bytes per call and records
 * every frame.  Returns the number of frames.
 */
static size_t decode_stream(const uint8_t *buf, size_t len, size_t chunk,
			    enum feed_mode mode, struct got *out, size_t max)
{
	struct kvt_limits lim = deflim();
	struct kvt_decoder d;
	size_t pos = 0, nframes = 0, used, room, n;
	uint8_t *tail;
	int rc;

	kvt_decoder_init(&d, &lim);
	while (pos < len) {
		n = len - pos < chunk ? len - pos : chunk;
		rc = kvt_decoder_feed(&d, buf + pos, n, &used);
		assert_true(rc >= 0);
		assert_true(used <= n);
		assert_true(used > 0);
		pos += used;
		if (rc == KVT_DEC_HEADER) {
			assert_true(nframes < max);
			assert_true(kvt_decoder_header(&d)->body_len <=
				    sizeof(out[nframes].body));
			assert_int_equal(kvt_decoder_set_body(&d,
						out[nframes].body,
						sizeof(out[nframes].body)), 0);
			if (mode == FEED_ZEROCOPY) {
				do {
					tail = kvt_decoder_body_tail(&d, &room);
					assert_non_null(tail);
					assert_true(room > 0);
					n = room < chunk ? room : chunk;
					assert_true(pos + n <= len);
					memcpy(tail, buf + pos, n);
					pos += n;
					rc = kvt_decoder_body_advance(&d, n);
				} while (rc == KVT_DEC_MORE);
				assert_int_equal(rc, KVT_DEC_FRAME);
			}
		}
		if (rc == KVT_DEC_FRAME) {
			assert_true(nframes < max);
			out[nframes].h = *kvt_decoder_header(&d);
			nframes++;
		}
	}
	return nframes;
}

static void assert_header_equal(const struct kvt_frame_header *a,
				const struct kvt_frame_header *b)
{
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->opcode, b->opcode);
	assert_int_equal(a->flags, b->flags);
	assert_true(a->request_id == b->request_id);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->body_len, b->body_len);
}

/* ---- Errors --------------------------------------------------------- */

static void test_strerror(void **state)
{
	static const int codes[] = {
		KVT_EPROTO, KVT_ENOTFOUND, KVT_ETOOBIG, KVT_EBADREQ,
		KVT_EUNKNOWNOP, KVT_ENOSPACE, KVT_EVERSION, KVT_ESERVER,
		KVT_EDENIED, KVT_EBUSY, KVT_ECLOSED, KVT_EAGAIN, KVT_ERANGE,
		KVT_EINVAL, KVT_ECORRUPT, KVT_EFORKED, KVT_ECONCURRENT,
		KVT_EFAULT,
	};
	const size_t n = sizeof(codes) / sizeof(codes[0]);

	(void)state;
	for (size_t i = 0; i < n; i++) {
		const char *m = kvt_strerror(codes[i]);

		assert_non_null(m);
		assert_string_not_equal(m, "unknown error");
		/* Every code has its own message. */
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(m, kvt_strerror(codes[j]));
	}
	assert_string_equal(kvt_strerror(0), "success");
	assert_string_equal(kvt_strerror(-ENOENT), "No such file or directory");
	assert_string_equal(kvt_strerror(-ECONNREFUSED), "Connection refused");
	assert_string_equal(kvt_strerror(-999), "unknown error");
	assert_string_equal(kvt_strerror(-1000), "unknown error");
	/* The first code not yet assigned (KVT_EFAULT took -1018). */
	assert_string_equal(kvt_strerror(-1019), "unknown error");
	assert_string_equal(kvt_strerror(5), "unknown error");
	assert_string_equal(kvt_strerror(INT32_MIN), "unknown error");
}

/* ---- Limits, names, dtypes ------------------------------------------ */

static void test_limits_default(void **state)
{
	struct kvt_limits lim = deflim();

	(void)state;
	assert_int_equal(lim.max_key, 1024);
	assert_int_equal(lim.max_ns, 255);
	assert_true(lim.max_value == 256ull << 20);
	assert_true(lim.max_body == kvt_limits_put_body_max(&lim));
	assert_true(lim.max_body == 8 + 255 + 1024 + (256ull << 20));

	/* Limits beyond the wire fields clamp to what the fields can say. */
	lim.max_key = 1u << 20;
	lim.max_ns = 1000;
	lim.max_value = 100;
	assert_true(kvt_limits_put_body_max(&lim) == 8 + 255 + 65535 + 100);
	lim.max_value = UINT64_MAX;
	assert_true(kvt_limits_put_body_max(&lim) == 0xffffffffull);
	lim.max_value = 0xffffffffull - 8 - 255 - 65535;
	assert_true(kvt_limits_put_body_max(&lim) == 0xffffffffull);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(kvt_op_name(KVT_OP_HELLO), "HELLO");
	assert_string_equal(kvt_op_name(KVT_OP_PING), "PING");
	assert_string_equal(kvt_op_name(KVT_OP_PUT), "PUT");
	assert_string_equal(kvt_op_name(KVT_OP_GET), "GET");
	assert_string_equal(kvt_op_name(KVT_OP_DEL), "DEL");
	assert_string_equal(kvt_op_name(KVT_OP_EXISTS), "EXISTS");
	assert_string_equal(kvt_op_name(KVT_OP_STATS), "STATS");
	assert_string_equal(kvt_op_name(KVT_OP_MATCH), "MATCH");
	assert_int_equal(KVT_OP_MATCH, 8);
	assert_string_equal(kvt_op_name(0), "UNKNOWN");
	assert_string_equal(kvt_op_name(KVT_OP_END_), "UNKNOWN");
	assert_string_equal(kvt_op_name(255), "UNKNOWN");

	assert_int_equal(kvt_dtype_size(KVT_DTYPE_NONE), 0);
	assert_int_equal(kvt_dtype_size(KVT_DTYPE_U8), 1);
	assert_int_equal(kvt_dtype_size(KVT_DTYPE_BF16), 2);
	assert_int_equal(kvt_dtype_size(KVT_DTYPE_FP16), 2);
	assert_int_equal(kvt_dtype_size(KVT_DTYPE_FP32), 4);
	assert_int_equal(kvt_dtype_size(KVT_DTYPE_END_), 0);

	assert_int_equal(kvt_dtype_parse("u8"), KVT_DTYPE_U8);
	assert_int_equal(kvt_dtype_parse("bf16"), KVT_DTYPE_BF16);
	assert_int_equal(kvt_dtype_parse("fp16"), KVT_DTYPE_FP16);
	assert_int_equal(kvt_dtype_parse("fp32"), KVT_DTYPE_FP32);
	assert_int_equal(kvt_dtype_parse("BF16"), KVT_DTYPE_BF16);
	assert_int_equal(kvt_dtype_parse("fp64"), -1);
	assert_int_equal(kvt_dtype_parse(""), -1);
	assert_int_equal(kvt_dtype_parse("bf16 "), -1);
	assert_int_equal(kvt_dtype_parse(NULL), -1);
}

/* ---- Header --------------------------------------------------------- */

static void test_header_bytes(void **state)
{
	static const uint8_t want[KVT_HDR_SIZE] = {
		'K', 'V', 'T', 'R', 0x01, 0x04, 0x02, 0x80,
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0xea, 0x03, 0x00, 0x00, 0x0d, 0x0c, 0x0b, 0x0a,
	};
	struct kvt_frame_header h = {
		.version = 1,
		.opcode = KVT_OP_GET,
		.flags = KVT_FLAG_REPLY | KVT_DTYPE_BF16,
		.request_id = 0x0102030405060708ull,
		.status = 1002,
		.body_len = 0x0a0b0c0d,
	};
	uint8_t out[KVT_HDR_SIZE];

	(void)state;
	kvt_frame_header_encode(out, &h);
	assert_memory_equal(out, want, KVT_HDR_SIZE);
	/* The magic is "KVTR" on the wire and KVT_FRAME_MAGIC as an LE u32. */
	assert_true(((uint32_t)out[0] | (uint32_t)out[1] << 8 |
		     (uint32_t)out[2] << 16 | (uint32_t)out[3] << 24) ==
		    KVT_FRAME_MAGIC);
}

static void test_header_roundtrip(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_frame_header in[] = {
		{ 1, KVT_OP_HELLO, 0, 0, 0, 0 },
		{ 1, KVT_OP_PUT, 0xffff, UINT64_MAX, UINT32_MAX,
		  (uint32_t)lim.max_body },
		{ 1, 0xff, 0x8001, 0x8000000000000001ull, 0x80000000u, 1 },
		{ 1, KVT_OP_STATS, 0x1234, 0xdeadbeefcafef00dull, 1003, 77 },
	};
	/* Decoding from an odd address proves no aligned load is assumed. */
	uint8_t buf[KVT_HDR_SIZE + 1];
	struct kvt_frame_header out;

	(void)state;
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		kvt_frame_header_encode(buf + 1, &in[i]);
		memset(&out, 0xa5, sizeof(out));
		assert_int_equal(kvt_frame_header_decode(buf + 1, KVT_HDR_SIZE,
							 &lim, &out), 0);
		assert_header_equal(&out, &in[i]);
	}
}

static void test_header_truncated(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_frame_header h;
	uint8_t buf[KVT_HDR_SIZE];

	(void)state;
	raw_header(buf, KVT_PROTO_VERSION, 0);
	for (size_t n = 0; n < KVT_HDR_SIZE; n++)
		assert_int_equal(kvt_frame_header_decode(buf, n, &lim, &h),
				 KVT_EAGAIN);
	assert_int_equal(kvt_frame_header_decode(buf, KVT_HDR_SIZE, &lim, &h),
			 0);
}

static void test_header_bad_magic(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_frame_header h;
	uint8_t buf[KVT_HDR_SIZE];

	(void)state;
	for (int i = 0; i < 4; i++) {
		raw_header(buf, KVT_PROTO_VERSION, 0);
		buf[i] ^= 0x20;
		assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf),
							 &lim, &h),
				 KVT_EPROTO);
	}
}

static void test_header_bad_version(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_frame_header h;
	uint8_t buf[KVT_HDR_SIZE];

	(void)state;
	raw_header(buf, 2, 5);
	memset(&h, 0, sizeof(h));
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &h),
			 KVT_EVERSION);
	/* Filled in anyway, so an error reply can echo the request id. */
	assert_true(h.request_id == 0x1122334455667788ull);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.body_len, 5);

	raw_header(buf, 0, 0);
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &h),
			 KVT_EVERSION);
}

static void test_header_too_big(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_frame_header h;
	uint8_t buf[KVT_HDR_SIZE];

	(void)state;
	raw_header(buf, KVT_PROTO_VERSION, (uint32_t)lim.max_body);
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &h),
			 0);
	raw_header(buf, KVT_PROTO_VERSION, (uint32_t)lim.max_body + 1);
	memset(&h, 0, sizeof(h));
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &h),
			 KVT_ETOOBIG);
	assert_true(h.request_id == 0x1122334455667788ull);
	assert_true(h.body_len == lim.max_body + 1);
	raw_header(buf, KVT_PROTO_VERSION, UINT32_MAX);
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &h),
			 KVT_ETOOBIG);
	lim.max_body = 0;
	raw_header(buf, KVT_PROTO_VERSION, 1);
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &h),
			 KVT_ETOOBIG);
}

static void test_header_unknown_opcode(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_frame_header h = { .version = 1, .opcode = 200 }, out;
	uint8_t buf[KVT_HDR_SIZE];

	(void)state;
	/* The decoder passes it on; the daemon answers KVT_EUNKNOWNOP. */
	kvt_frame_header_encode(buf, &h);
	assert_int_equal(kvt_frame_header_decode(buf, sizeof(buf), &lim, &out),
			 0);
	assert_int_equal(out.opcode, 200);
}

/* ---- PUT body ------------------------------------------------------- */

/* Encodes a complete PUT body (prefix + value); returns its length. */
static size_t put_body(uint8_t *buf, size_t cap, const char *ns,
		       const char *key, uint8_t dtype, uint32_t ttl,
		       const void *value, size_t value_len)
{
	struct kvt_put_req r = {
		.k = {
			.ns = (const uint8_t *)ns,
			.ns_len = strlen(ns),
			.key = (const uint8_t *)key,
			.key_len = strlen(key),
		},
		.dtype = dtype,
		.ttl_s = ttl,
		.value = value,
		.value_len = value_len,
	};
	size_t w;

	assert_int_equal(kvt_put_req_encode_prefix(buf, cap, &r, &w), 0);
	assert_int_equal(w, kvt_put_req_prefix_size(r.k.ns_len, r.k.key_len));
	assert_true(w + value_len <= cap);
	if (value_len)
		memcpy(buf + w, value, value_len);
	return w + value_len;
}

static void test_put_roundtrip(void **state)
{
	static const struct {
		const char *ns, *key, *value;
		uint8_t dtype;
		uint32_t ttl;
	} cases[] = {
		{ "", "k", "hi", KVT_DTYPE_NONE, 0 },
		{ "llama3-8b/bf16", "block-0001", "\x01\x02\x03\x04",
		  KVT_DTYPE_BF16, 3600 },
		{ "n", "key", "", KVT_DTYPE_FP32, UINT32_MAX },
		{ "", "x", "value", KVT_DTYPE_U8, 1 },
	};
	struct kvt_limits lim = deflim();
	uint8_t buf[256];
	struct kvt_put_req r;
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t vlen = strlen(cases[i].value);

		len = put_body(buf, sizeof(buf), cases[i].ns, cases[i].key,
			       cases[i].dtype, cases[i].ttl, cases[i].value,
			       vlen);
		memset(&r, 0, sizeof(r));
		assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), 0);
		assert_int_equal(r.k.ns_len, strlen(cases[i].ns));
		assert_memory_equal(r.k.ns, cases[i].ns, r.k.ns_len);
		assert_int_equal(r.k.key_len, strlen(cases[i].key));
		assert_memory_equal(r.k.key, cases[i].key, r.k.key_len);
		assert_int_equal(r.dtype, cases[i].dtype);
		assert_int_equal(r.ttl_s, cases[i].ttl);
		assert_true(r.value_len == vlen);
		if (vlen)
			assert_memory_equal(r.value, cases[i].value, vlen);
		/* Pointers refer into the body, never into a copy. */
		assert_true(r.value == buf + len - vlen);
	}
}

static void test_put_bytes(void **state)
{
	static const uint8_t want[] = {
		0x02, 0x03, 0x03, 0x00, 0x10, 0x0e, 0x00, 0x00,
		'n', 's', 'k', 'e', 'y', 'V',
	};
	uint8_t buf[64];

	(void)state;
	assert_int_equal(put_body(buf, sizeof(buf), "ns", "key",
				  KVT_DTYPE_FP16, 3600, "V", 1),
			 sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
}

static void test_put_encode_errors(void **state)
{
	static uint8_t big[70000];
	uint8_t buf[64];
	struct kvt_put_req r = {
		.k = { .ns = (const uint8_t *)"ns", .ns_len = 2,
		       .key = (const uint8_t *)"key", .key_len = 3 },
	};
	size_t w;

	(void)state;
	/* Too small a buffer reports the size needed. */
	assert_int_equal(kvt_put_req_encode_prefix(buf, 12, &r, &w),
			 KVT_ERANGE);
	assert_int_equal(w, 13);
	assert_int_equal(kvt_put_req_encode_prefix(buf, 13, &r, &w), 0);
	assert_int_equal(w, 13);

	r.k.key_len = 0;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 KVT_EINVAL);
	r.k.key = big;
	r.k.key_len = 65536;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 KVT_EINVAL);
	r.k.key_len = 3;
	r.k.ns = big;
	r.k.ns_len = 256;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 KVT_EINVAL);
	r.k.ns = NULL;
	r.k.ns_len = 1;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 KVT_EINVAL);
	r.k.ns_len = 0;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 0);
	r.dtype = KVT_DTYPE_END_;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 KVT_EINVAL);
	r.dtype = 0;
	/* Value so large the body would not fit in body_len. */
	r.value_len = 0xffffffffull;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 KVT_EINVAL);
	r.value_len = 0xffffffffull - 11;
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), &r, &w),
			 0);
	assert_int_equal(kvt_put_req_encode_prefix(buf, sizeof(buf), NULL, &w),
			 KVT_EINVAL);
}

static void test_put_parse_errors(void **state)
{
	struct kvt_limits lim = deflim();
	uint8_t buf[2048];
	struct kvt_put_req r;
	size_t len;

	(void)state;
	len = put_body(buf, sizeof(buf), "ns", "key", KVT_DTYPE_BF16, 0,
		       "value", 5);
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), 0);

	/* Shorter than the fixed part, or cut inside ns or key. */
	for (size_t n = 0; n < KVT_PUT_FIXED + 5; n++)
		assert_int_equal(kvt_put_req_parse(buf, n, &lim, &r),
				 KVT_EBADREQ);
	/* Cut inside the value is just a shorter value. */
	assert_int_equal(kvt_put_req_parse(buf, len - 1, &lim, &r), 0);
	assert_true(r.value_len == 4);
	assert_int_equal(kvt_put_req_parse(NULL, 0, &lim, &r), KVT_EBADREQ);

	/* Zero key. */
	len = put_body(buf, sizeof(buf), "ns", "key", 0, 0, "v", 1);
	buf[2] = 0;
	buf[3] = 0;
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), KVT_EBADREQ);

	/* key_len runs past the end of the body. */
	buf[2] = 100;
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), KVT_EBADREQ);
	buf[2] = 3;
	/* ns_len runs past the end of the body. */
	buf[0] = 200;
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), KVT_EBADREQ);
	buf[0] = 2;

	/* Unknown dtype. */
	buf[1] = KVT_DTYPE_END_;
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), KVT_EBADREQ);
	buf[1] = 0xff;
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), KVT_EBADREQ);
	buf[1] = KVT_DTYPE_FP32;
	assert_int_equal(kvt_put_req_parse(buf, len, &lim, &r), 0);

	/* Key over the limit (body long enough: only the limit is wrong). */
	memset(buf, 'a', sizeof(buf));
	buf[0] = 0;
	buf[1] = 0;
	buf[2] = (uint8_t)(1025 & 0xff);
	buf[3] = (uint8_t)(1025 >> 8);
	memset(buf + 4, 0, 4);
	assert_int_equal(kvt_put_req_parse(buf, 8 + 1025 + 10, &lim, &r),
			 KVT_ETOOBIG);
	buf[2] = 0;
	buf[3] = 1024 >> 8;
	assert_int_equal(kvt_put_req_parse(buf, 8 + 1024 + 10, &lim, &r), 0);
	assert_int_equal(r.k.key_len, 1024);

	/* Namespace over a (tightened) limit. */
	lim.max_ns = 16;
	buf[0] = 17;
	buf[2] = 1;
	buf[3] = 0;
	assert_int_equal(kvt_put_req_parse(buf, 8 + 17 + 1, &lim, &r),
			 KVT_ETOOBIG);
	buf[0] = 16;
	assert_int_equal(kvt_put_req_parse(buf, 8 + 16 + 1, &lim, &r), 0);

	/* Value over the limit. */
	lim = deflim();
	lim.max_value = 10;
	buf[0] = 0;
	assert_int_equal(kvt_put_req_parse(buf, 8 + 1 + 11, &lim, &r),
			 KVT_ETOOBIG);
	assert_int_equal(kvt_put_req_parse(buf, 8 + 1 + 10, &lim, &r), 0);
	assert_true(r.value_len == 10);
}

/* ---- Key body ------------------------------------------------------- */

static void test_key_roundtrip(void **state)
{
	struct kvt_limits lim = deflim();
	static uint8_t longkey[1024];
	struct kvt_keyref k = {
		.ns = (const uint8_t *)"model",
		.ns_len = 5,
		.key = (const uint8_t *)"k",
		.key_len = 1,
	}, out;
	static const uint8_t want[] = {
		0x05, 0x00, 0x01, 0x00, 'm', 'o', 'd', 'e', 'l', 'k',
	};
	uint8_t buf[2048];
	size_t w;

	(void)state;
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w), 0);
	assert_int_equal(w, sizeof(want));
	assert_int_equal(kvt_key_req_size(5, 1), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(kvt_key_req_parse(buf, w, &lim, &out), 0);
	assert_int_equal(out.ns_len, 5);
	assert_memory_equal(out.ns, "model", 5);
	assert_int_equal(out.key_len, 1);
	assert_memory_equal(out.key, "k", 1);

	/* Empty namespace (ns may be NULL then) and a maximal key. */
	memset(longkey, 0xab, sizeof(longkey));
	k.ns = NULL;
	k.ns_len = 0;
	k.key = longkey;
	k.key_len = sizeof(longkey);
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w), 0);
	assert_int_equal(w, 4 + sizeof(longkey));
	assert_int_equal(kvt_key_req_parse(buf, w, &lim, &out), 0);
	assert_int_equal(out.ns_len, 0);
	assert_int_equal(out.key_len, sizeof(longkey));
	assert_memory_equal(out.key, longkey, sizeof(longkey));
}

static void test_key_encode_errors(void **state)
{
	static uint8_t big[70000];
	uint8_t buf[16];
	struct kvt_keyref k = {
		.key = (const uint8_t *)"key",
		.key_len = 3,
	};
	size_t w;

	(void)state;
	assert_int_equal(kvt_key_req_encode(buf, 6, &k, &w), KVT_ERANGE);
	assert_int_equal(w, 7);
	assert_int_equal(kvt_key_req_encode(NULL, 0, &k, &w), KVT_ERANGE);
	assert_int_equal(w, 7);
	assert_int_equal(kvt_key_req_encode(buf, 7, &k, &w), 0);
	k.key_len = 0;
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w),
			 KVT_EINVAL);
	k.key = big;
	k.key_len = 65536;
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w),
			 KVT_EINVAL);
	k.key_len = 3;
	k.ns = big;
	k.ns_len = 256;
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w),
			 KVT_EINVAL);
	k.ns = NULL;
	k.ns_len = 0;
	k.key = NULL;
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w),
			 KVT_EINVAL);
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), NULL, &w),
			 KVT_EINVAL);
}

static void test_key_parse_errors(void **state)
{
	struct kvt_limits lim = deflim();
	struct kvt_keyref k = {
		.ns = (const uint8_t *)"ns",
		.ns_len = 2,
		.key = (const uint8_t *)"key",
		.key_len = 3,
	}, out;
	uint8_t buf[2048];
	size_t w;

	(void)state;
	assert_int_equal(kvt_key_req_encode(buf, sizeof(buf), &k, &w), 0);
	assert_int_equal(w, 9);

	/* Truncated anywhere. */
	for (size_t n = 0; n < w; n++)
		assert_int_equal(kvt_key_req_parse(buf, n, &lim, &out),
				 KVT_EBADREQ);
	/* Trailing bytes. */
	buf[w] = 0;
	assert_int_equal(kvt_key_req_parse(buf, w + 1, &lim, &out),
			 KVT_EBADREQ);
	/* Reserved byte nonzero. */
	buf[1] = 1;
	assert_int_equal(kvt_key_req_parse(buf, w, &lim, &out), KVT_EBADREQ);
	buf[1] = 0;
	/* Zero key. */
	buf[2] = 0;
	assert_int_equal(kvt_key_req_parse(buf, w, &lim, &out), KVT_EBADREQ);
	buf[2] = 3;
	assert_int_equal(kvt_key_req_parse(buf, w, &lim, &out), 0);

	/* Oversized key and namespace, with bodies of the matching size. */
	memset(buf, 'x', sizeof(buf));
	buf[0] = 0;
	buf[1] = 0;
	buf[2] = (uint8_t)(1025 & 0xff);
	buf[3] = (uint8_t)(1025 >> 8);
	assert_int_equal(kvt_key_req_parse(buf, 4 + 1025, &lim, &out),
			 KVT_ETOOBIG);
	lim.max_ns = 3;
	buf[0] = 4;
	buf[2] = 1;
	buf[3] = 0;
	assert_int_equal(kvt_key_req_parse(buf, 4 + 4 + 1, &lim, &out),
			 KVT_ETOOBIG);
	buf[0] = 3;
	assert_int_equal(kvt_key_req_parse(buf, 4 + 3 + 1, &lim, &out), 0);
}

/* ---- HELLO ---------------------------------------------------------- */

static void test_hello(void **state)
{
	uint8_t req[KVT_HELLO_REQ_SIZE + 4], rep[KVT_HELLO_REPLY_SIZE + 4];
	struct kvt_hello h = { .version = 1, .features = 0x80000001u }, out;
	uint32_t v, f;

	(void)state;
	kvt_hello_req_encode(req, 1, 0xa5a5a5a5u);
	assert_int_equal(kvt_hello_req_parse(req, KVT_HELLO_REQ_SIZE, &v, &f),
			 0);
	assert_int_equal(v, 1);
	assert_int_equal(f, 0xa5a5a5a5u);
	for (size_t n = 0; n < KVT_HELLO_REQ_SIZE; n++)
		assert_int_equal(kvt_hello_req_parse(req, n, &v, &f),
				 KVT_EBADREQ);
	/* Later versions may append fields. */
	assert_int_equal(kvt_hello_req_parse(req, sizeof(req), &v, &f), 0);

	kvt_limits_default(&h.lim);
	h.lim.max_value = 0x123456789ull;
	kvt_hello_reply_encode(rep, &h);
	memset(&out, 0, sizeof(out));
	assert_int_equal(kvt_hello_reply_parse(rep, KVT_HELLO_REPLY_SIZE, &out),
			 0);
	assert_int_equal(out.version, 1);
	assert_int_equal(out.features, 0x80000001u);
	assert_int_equal(out.lim.max_key, h.lim.max_key);
	assert_int_equal(out.lim.max_ns, h.lim.max_ns);
	assert_true(out.lim.max_value == h.lim.max_value);
	assert_true(out.lim.max_body == h.lim.max_body);
	assert_int_equal(kvt_hello_reply_parse(rep, sizeof(rep), &out), 0);
	for (size_t n = 0; n < KVT_HELLO_REPLY_SIZE; n++)
		assert_int_equal(kvt_hello_reply_parse(rep, n, &out),
				 KVT_EPROTO);

	/* A daemon announcing impossible limits is broken. */
	h.lim.max_ns = 256;
	kvt_hello_reply_encode(rep, &h);
	assert_int_equal(kvt_hello_reply_parse(rep, KVT_HELLO_REPLY_SIZE, &out),
			 KVT_EPROTO);
	h.lim.max_ns = 255;
	h.lim.max_key = 0;
	kvt_hello_reply_encode(rep, &h);
	assert_int_equal(kvt_hello_reply_parse(rep, KVT_HELLO_REPLY_SIZE, &out),
			 KVT_EPROTO);
	h.lim.max_key = 1;
	h.lim.max_body = 1ull << 32;
	kvt_hello_reply_encode(rep, &h);
	assert_int_equal(kvt_hello_reply_parse(rep, KVT_HELLO_REPLY_SIZE, &out),
			 KVT_EPROTO);
}

/* ---- PROTOCOL.md worked example ------------------------------------- */

/* The hex in PROTOCOL.md: PUT "k" = "hi" (id 1), then GET "k" (id 2). */
static void test_protocol_example(void **state)
{
	static const uint8_t put_req[] = {
		0x4b, 0x56, 0x54, 0x52, 0x01, 0x03, 0x00, 0x00,
		0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x6b, 0x68, 0x69,
	};
	static const uint8_t put_rep[] = {
		0x4b, 0x56, 0x54, 0x52, 0x01, 0x03, 0x00, 0x80,
		0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	static const uint8_t get_req[] = {
		0x4b, 0x56, 0x54, 0x52, 0x01, 0x04, 0x00, 0x00,
		0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x01, 0x00, 0x6b,
	};
	static const uint8_t get_hit[] = {
		0x4b, 0x56, 0x54, 0x52, 0x01, 0x04, 0x00, 0x80,
		0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
		0x68, 0x69,
	};
	static const uint8_t get_miss[] = {
		0x4b, 0x56, 0x54, 0x52, 0x01, 0x04, 0x00, 0x80,
		0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0xea, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	};
	struct kvt_keyref k = { .key = (const uint8_t *)"k", .key_len = 1 };
	uint8_t buf[64], body[16];
	size_t len = 0, n;

	(void)state;
	n = put_body(buf, sizeof(buf), "", "k", KVT_DTYPE_NONE, 0, "hi", 2);
	memcpy(body, buf, n);
	append_frame(buf, sizeof(buf), &len, KVT_OP_PUT, 1, 0, 0, body,
		     (uint32_t)n);
	assert_int_equal(len, sizeof(put_req));
	assert_memory_equal(buf, put_req, len);

	len = 0;
	append_frame(buf, sizeof(buf), &len, KVT_OP_PUT, 1, KVT_FLAG_REPLY, 0,
		     NULL, 0);
	assert_memory_equal(buf, put_rep, sizeof(put_rep));

	assert_int_equal(kvt_key_req_encode(body, sizeof(body), &k, &n), 0);
	len = 0;
	append_frame(buf, sizeof(buf), &len, KVT_OP_GET, 2, 0, 0, body,
		     (uint32_t)n);
	assert_int_equal(len, sizeof(get_req));
	assert_memory_equal(buf, get_req, len);

	len = 0;
	append_frame(buf, sizeof(buf), &len, KVT_OP_GET, 2,
		     KVT_FLAG_REPLY | KVT_DTYPE_NONE, 0, "hi", 2);
	assert_memory_equal(buf, get_hit, sizeof(get_hit));

	len = 0;
	append_frame(buf, sizeof(buf), &len, KVT_OP_GET, 2, KVT_FLAG_REPLY,
		     (uint32_t)-KVT_ENOTFOUND, NULL, 0);
	assert_memory_equal(buf, get_miss, sizeof(get_miss));
}

/* ---- Decoder -------------------------------------------------------- */

/* Several pipelined frames of various shapes in one buffer. */
static size_t build_stream(uint8_t *buf, size_t cap)
{
	uint8_t body[300];
	size_t len = 0, n;

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7 + 3);
	append_frame(buf, cap, &len, KVT_OP_PING, 1, 0, 0, "ping", 4);
	append_frame(buf, cap, &len, KVT_OP_STATS, 2, 0, 0, NULL, 0);
	n = put_body(body, sizeof(body), "ns", "key", KVT_DTYPE_BF16, 60,
		     "0123456789abcdef", 16);
	append_frame(buf, cap, &len, KVT_OP_PUT, 3, 0, 0, body, (uint32_t)n);
	append_frame(buf, cap, &len, 99, 4, 0, 0, "?", 1);
	append_frame(buf, cap, &len, KVT_OP_GET, UINT64_MAX,
		     KVT_FLAG_REPLY | KVT_DTYPE_FP16, 0, body, 300);
	append_frame(buf, cap, &len, KVT_OP_DEL, 6, KVT_FLAG_REPLY, 1002,
		     NULL, 0);
	append_frame(buf, cap, &len, KVT_OP_EXISTS, 7, 0, 0, "x", 1);
	return len;
}

static void check_stream(const uint8_t *buf, const struct got *g, size_t n)
{
	struct kvt_frame_header h;
	size_t pos = 0;
	struct kvt_limits lim = deflim();

	/* Compare with what the header decoder says frame by frame. */
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(kvt_frame_header_decode(buf + pos, KVT_HDR_SIZE,
							 &lim, &h), 0);
		assert_header_equal(&g[i].h, &h);
		pos += KVT_HDR_SIZE;
		if (h.body_len)
			assert_memory_equal(g[i].body, buf + pos, h.body_len);
		pos += h.body_len;
	}
}

static void test_decoder_chunking(void **state)
{
	static uint8_t buf[4096];
	static struct got all[16], part[16];
	static const size_t chunks[] = { 1, 2, 3, 5, 23, 24, 25, 64, 4096 };
	size_t len, nall, n;

	(void)state;
	len = build_stream(buf, sizeof(buf));
	nall = decode_stream(buf, len, len, FEED_COPY, all, 16);
	assert_int_equal(nall, 7);
	check_stream(buf, all, nall);
	assert_int_equal(all[1].h.body_len, 0);
	assert_int_equal(all[3].h.opcode, 99);
	assert_true(all[4].h.request_id == UINT64_MAX);
	assert_int_equal(all[5].h.status, 1002);

	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		for (int m = FEED_COPY; m <= FEED_ZEROCOPY; m++) {
			memset(part, 0, sizeof(part));
			n = decode_stream(buf, len, chunks[c],
					  (enum feed_mode)m, part, 16);
			assert_int_equal(n, nall);
			for (size_t i = 0; i < n; i++) {
				assert_header_equal(&part[i].h, &all[i].h);
				if (all[i].h.body_len)
					assert_memory_equal(part[i].body,
							    all[i].body,
							    all[i].h.body_len);
			}
		}
	}
}

static void test_decoder_stops_at_frame_end(void **state)
{
	uint8_t buf[256], body[8];
	struct kvt_decoder d;
	size_t len = 0, used;

	(void)state;
	append_frame(buf, sizeof(buf), &len, KVT_OP_PING, 1, 0, 0, "abc", 3);
	append_frame(buf, sizeof(buf), &len, KVT_OP_PING, 2, 0, 0, NULL, 0);
	append_frame(buf, sizeof(buf), &len, KVT_OP_PING, 3, 0, 0, NULL, 0);
	kvt_decoder_init(&d, NULL);

	/* The header event consumes exactly the header. */
	assert_int_equal(kvt_decoder_feed(&d, buf, len, &used),
			 KVT_DEC_HEADER);
	assert_int_equal(used, KVT_HDR_SIZE);
	assert_int_equal(kvt_decoder_header(&d)->body_len, 3);
	assert_int_equal(kvt_decoder_set_body(&d, body, sizeof(body)), 0);
	/* The body event consumes exactly the body. */
	assert_int_equal(kvt_decoder_feed(&d, buf + 24, len - 24, &used),
			 KVT_DEC_FRAME);
	assert_int_equal(used, 3);
	assert_memory_equal(body, "abc", 3);
	/* Empty-body frames come out whole, one per call. */
	assert_int_equal(kvt_decoder_feed(&d, buf + 27, len - 27, &used),
			 KVT_DEC_FRAME);
	assert_int_equal(used, KVT_HDR_SIZE);
	assert_true(kvt_decoder_header(&d)->request_id == 2);
	assert_int_equal(kvt_decoder_feed(&d, buf + 51, len - 51, &used),
			 KVT_DEC_FRAME);
	assert_int_equal(used, KVT_HDR_SIZE);
	assert_true(kvt_decoder_header(&d)->request_id == 3);
	assert_int_equal(kvt_decoder_feed(&d, buf + len, 0, &used),
			 KVT_DEC_MORE);
	assert_int_equal(used, 0);
}

static void test_decoder_truncated(void **state)
{
	uint8_t buf[128], body[64];
	struct kvt_decoder d;
	size_t len = 0, used;
	int rc;

	(void)state;
	append_frame(buf, sizeof(buf), &len, KVT_OP_PING, 1, 0, 0,
		     "0123456789", 10);
	/* Every proper prefix leaves the decoder waiting, never complete. */
	for (size_t cut = 0; cut < len; cut++) {
		kvt_decoder_init(&d, NULL);
		rc = kvt_decoder_feed(&d, buf, cut, &used);
		if (cut < KVT_HDR_SIZE) {
			assert_int_equal(rc, KVT_DEC_MORE);
			assert_int_equal(used, cut);
			continue;
		}
		assert_int_equal(rc, KVT_DEC_HEADER);
		assert_int_equal(kvt_decoder_set_body(&d, body, sizeof(body)),
				 0);
		rc = kvt_decoder_feed(&d, buf + used, cut - used, &used);
		assert_int_equal(rc, KVT_DEC_MORE);
	}
}

static void test_decoder_body_tail(void **state)
{
	uint8_t buf[128], body[16];
	struct kvt_decoder d;
	size_t len = 0, used, room;
	uint8_t *tail;

	(void)state;
	append_frame(buf, sizeof(buf), &len, KVT_OP_PING, 9, 0, 0,
		     "0123456789", 10);
	kvt_decoder_init(&d, NULL);

	/* No body storage yet: no tail, no advance. */
	assert_null(kvt_decoder_body_tail(&d, &room));
	assert_int_equal(room, 0);
	assert_int_equal(kvt_decoder_body_advance(&d, 0), KVT_EINVAL);

	assert_int_equal(kvt_decoder_feed(&d, buf, len, &used),
			 KVT_DEC_HEADER);
	assert_null(kvt_decoder_body_tail(&d, &room));
	assert_int_equal(kvt_decoder_set_body(&d, body, sizeof(body)), 0);

	/* Mix: two bytes through feed (left over in a read buffer)... */
	assert_int_equal(kvt_decoder_feed(&d, buf + 24, 2, &used),
			 KVT_DEC_MORE);
	assert_int_equal(used, 2);
	/* ...the rest received straight into the tail. */
	tail = kvt_decoder_body_tail(&d, &room);
	assert_ptr_equal(tail, body + 2);
	assert_int_equal(room, 8);
	memcpy(tail, buf + 26, 3);
	assert_int_equal(kvt_decoder_body_advance(&d, 3), KVT_DEC_MORE);
	tail = kvt_decoder_body_tail(&d, &room);
	assert_ptr_equal(tail, body + 5);
	assert_int_equal(room, 5);
	assert_int_equal(kvt_decoder_body_advance(&d, 6), KVT_EINVAL);
	assert_int_equal(kvt_decoder_body_advance(&d, 0), KVT_DEC_MORE);
	memcpy(tail, buf + 29, 5);
	assert_int_equal(kvt_decoder_body_advance(&d, 5), KVT_DEC_FRAME);
	assert_memory_equal(body, "0123456789", 10);
	assert_true(kvt_decoder_header(&d)->request_id == 9);

	/* The frame is over: nothing more to fill. */
	assert_null(kvt_decoder_body_tail(&d, &room));
	assert_int_equal(kvt_decoder_body_advance(&d, 1), KVT_EINVAL);

	/* And the decoder goes on to the next frame. */
	assert_int_equal(kvt_decoder_feed(&d, buf, len, &used),
			 KVT_DEC_HEADER);
	assert_int_equal(used, KVT_HDR_SIZE);
}

static void test_decoder_needs_body(void **state)
{
	uint8_t buf[128], body[16];
	struct kvt_decoder d;
	size_t len = 0, used;

	(void)state;
	append_frame(buf, sizeof(buf), &len, KVT_OP_PING, 1, 0, 0, "abcd", 4);
	kvt_decoder_init(&d, NULL);
	assert_int_equal(kvt_decoder_feed(&d, buf, len, &used),
			 KVT_DEC_HEADER);
	/* Feeding before set_body is a caller bug and consumes nothing. */
	assert_int_equal(kvt_decoder_feed(&d, buf + 24, 4, &used), KVT_EINVAL);
	assert_int_equal(used, 0);
	/* Too small a body buffer is refused, and the decoder still waits. */
	assert_int_equal(kvt_decoder_set_body(&d, body, 3), KVT_ERANGE);
	assert_int_equal(kvt_decoder_set_body(&d, NULL, 16), KVT_EINVAL);
	assert_int_equal(kvt_decoder_set_body(&d, body, 4), 0);
	/* Only once. */
	assert_int_equal(kvt_decoder_set_body(&d, body, 4), KVT_EINVAL);
	assert_int_equal(kvt_decoder_feed(&d, buf + 24, 4, &used),
			 KVT_DEC_FRAME);
	assert_memory_equal(body, "abcd", 4);
	/* No body to set after a frame with or without one. */
	assert_int_equal(kvt_decoder_set_body(&d, body, 4), KVT_EINVAL);
	assert_int_equal(kvt_decoder_feed(NULL, buf, 1, &used), KVT_EINVAL);
	assert_int_equal(kvt_decoder_feed(&d, NULL, 1, &used), KVT_EINVAL);
}

static void test_decoder_header_errors(void **state)
{
	struct kvt_limits lim = deflim();
	uint8_t buf[64];
	struct kvt_decoder d;
	size_t used;

	(void)state;
	/* Bad magic, byte by byte: detected when the header completes. */
	raw_header(buf, KVT_PROTO_VERSION, 0);
	buf[0] = 'X';
	kvt_decoder_init(&d, &lim);
	for (size_t i = 0; i < KVT_HDR_SIZE - 1; i++)
		assert_int_equal(kvt_decoder_feed(&d, buf + i, 1, &used),
				 KVT_DEC_MORE);
	assert_int_equal(kvt_decoder_feed(&d, buf + 23, 1, &used),
			 KVT_EPROTO);
	assert_int_equal(used, 1);
	/* Sticky until init. */
	assert_int_equal(kvt_decoder_feed(&d, buf, 24, &used), KVT_EPROTO);
	assert_int_equal(used, 0);

	/* Bad version: the header is still readable for the error reply. */
	raw_header(buf, 7, 0);
	kvt_decoder_init(&d, &lim);
	assert_int_equal(kvt_decoder_feed(&d, buf, 24, &used), KVT_EVERSION);
	assert_int_equal(used, KVT_HDR_SIZE);
	assert_true(kvt_decoder_header(&d)->request_id ==
		    0x1122334455667788ull);
	assert_int_equal(kvt_decoder_feed(&d, buf, 24, &used), KVT_EVERSION);

	/* Oversized body_len: refused before anything is allocated. */
	lim.max_body = 100;
	raw_header(buf, KVT_PROTO_VERSION, 101);
	kvt_decoder_init(&d, &lim);
	assert_int_equal(kvt_decoder_feed(&d, buf, 24, &used), KVT_ETOOBIG);
	assert_int_equal(kvt_decoder_header(&d)->body_len, 101);
	assert_true(kvt_decoder_header(&d)->request_id ==
		    0x1122334455667788ull);
	assert_int_equal(kvt_decoder_feed(&d, buf, 24, &used), KVT_ETOOBIG);

	/* Default limits when init gets NULL. */
	kvt_decoder_init(&d, NULL);
	raw_header(buf, KVT_PROTO_VERSION, (uint32_t)lim.max_body + 1);
	assert_int_equal(kvt_decoder_feed(&d, buf, 24, &used), KVT_DEC_HEADER);
}

/* ---- MATCH ------------------------------------------------------------ */

static void test_match_bytes(void **state)
{
	static const uint8_t want[] = {
		0x02, 0x00, 0x02, 0x00, 'n', 's',  /* ns_len 2, count 2, "ns" */
		0x01, 0x00, 'a',		   /* key_len 1, "a" */
		0x03, 0x00, 'b', 'c', 'd',	   /* key_len 3, "bcd" */
	};
	const void *keys[] = { "a", "bcd" };
	const size_t lens[] = { 1, 3 };
	uint8_t out[64], rb[KVT_MATCH_REPLY_SIZE];
	size_t n;
	uint32_t m;

	(void)state;
	assert_int_equal(kvt_match_req_size(2, lens, 2), sizeof(want));
	assert_int_equal(kvt_match_req_encode(out, sizeof(out),
					      (const uint8_t *)"ns", 2, keys,
					      lens, 2, &n), 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));

	kvt_match_reply_encode(rb, 0x01020304u);
	assert_int_equal(rb[0], 0x04);
	assert_int_equal(rb[3], 0x01);
	assert_int_equal(kvt_match_reply_parse(rb, sizeof(rb), &m), 0);
	assert_int_equal(m, 0x01020304u);
	assert_int_equal(kvt_match_reply_parse(rb, 3, &m), KVT_EPROTO);
	assert_int_equal(kvt_match_reply_parse(rb, 4, NULL), KVT_EINVAL);
}

static void test_match_roundtrip(void **state)
{
	static uint8_t kb[KVT_MATCH_KEYS_MAX][32];
	static const void *keys[KVT_MATCH_KEYS_MAX];
	static size_t lens[KVT_MATCH_KEYS_MAX];
	static uint8_t body[KVT_MATCH_FIXED + 255 +
			    KVT_MATCH_KEYS_MAX * (2 + 32)];
	struct kvt_limits lim = deflim();
	struct kvt_match_req m;
	struct kvt_keyref k;
	uint8_t ns[255];
	size_t n, pos = 0, i = 0;

	(void)state;
	memset(ns, 'x', sizeof(ns));
	for (size_t j = 0; j < KVT_MATCH_KEYS_MAX; j++) {
		memset(kb[j], (int)(j & 0xff), sizeof(kb[j]));
		kb[j][0] = (uint8_t)(j >> 8);
		keys[j] = kb[j];
		lens[j] = 1 + j % 32;
	}
	assert_int_equal(kvt_match_req_encode(body, sizeof(body), ns, 255, keys,
					      lens, KVT_MATCH_KEYS_MAX, &n), 0);
	assert_int_equal(kvt_match_req_parse(body, n, &lim, &m), 0);
	assert_int_equal(m.count, KVT_MATCH_KEYS_MAX);
	assert_int_equal(m.ns_len, 255);
	assert_memory_equal(m.ns, ns, 255);
	while (kvt_match_req_key(&m, &pos, &k)) {
		assert_true(i < KVT_MATCH_KEYS_MAX);
		assert_int_equal(k.ns_len, 255);
		assert_ptr_equal(k.ns, m.ns);
		assert_int_equal(k.key_len, lens[i]);
		assert_memory_equal(k.key, kb[i], lens[i]);
		i++;
	}
	assert_int_equal(i, KVT_MATCH_KEYS_MAX);
	/* Once done, it stays done. */
	assert_int_equal(kvt_match_req_key(&m, &pos, &k), 0);

	/* No keys and the empty namespace: a 4-byte body. */
	assert_int_equal(kvt_match_req_encode(body, sizeof(body), NULL, 0, NULL,
					      NULL, 0, &n), 0);
	assert_int_equal(n, KVT_MATCH_FIXED);
	assert_int_equal(kvt_match_req_parse(body, n, &lim, &m), 0);
	assert_int_equal(m.count, 0);
	pos = 0;
	assert_int_equal(kvt_match_req_key(&m, &pos, &k), 0);
}

static void test_match_encode_errors(void **state)
{
	static const void *many[KVT_MATCH_KEYS_MAX + 1];
	static size_t many_lens[KVT_MATCH_KEYS_MAX + 1];
	const void *keys[] = { "a", NULL };
	size_t lens[] = { 1, 1 };
	uint8_t out[64];
	size_t n;

	(void)state;
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 0, keys,
					      lens, 1, NULL), KVT_EINVAL);
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 1, keys,
					      lens, 1, &n), KVT_EINVAL);
	assert_int_equal(kvt_match_req_encode(out, sizeof(out),
					      (const uint8_t *)"x", 256, keys,
					      lens, 1, &n), KVT_EINVAL);
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 0, NULL,
					      lens, 1, &n), KVT_EINVAL);
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 0, keys,
					      NULL, 1, &n), KVT_EINVAL);
	/* A NULL key, an empty key, a key too long for its field. */
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 0, keys,
					      lens, 2, &n), KVT_EINVAL);
	lens[0] = 0;
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 0, keys,
					      lens, 1, &n), KVT_EINVAL);
	lens[0] = 0x10000;
	assert_int_equal(kvt_match_req_encode(out, sizeof(out), NULL, 0, keys,
					      lens, 1, &n), KVT_EINVAL);
	lens[0] = 1;
	/* Too many keys. */
	for (size_t i = 0; i <= KVT_MATCH_KEYS_MAX; i++) {
		many[i] = "k";
		many_lens[i] = 1;
	}
	assert_int_equal(kvt_match_req_encode(NULL, 0, NULL, 0, many, many_lens,
					      KVT_MATCH_KEYS_MAX + 1, &n),
			 KVT_ETOOBIG);
	/* Too small a buffer reports the size needed. */
	assert_int_equal(kvt_match_req_encode(out, 6, NULL, 0, keys, lens, 1,
					      &n), KVT_ERANGE);
	assert_int_equal(n, 7);
	assert_int_equal(kvt_match_req_encode(NULL, 0, NULL, 0, keys, lens, 1,
					      &n), KVT_ERANGE);
	assert_int_equal(n, 7);
}

static void test_match_parse_errors(void **state)
{
	/* Good: ns "n", two keys "a" and "bc". */
	static const uint8_t good[] = { 1, 0, 2, 0, 'n', 1, 0, 'a',
					2, 0, 'b', 'c' };
	struct kvt_limits lim = deflim();
	struct kvt_match_req m;
	uint8_t b[2048];

	(void)state;
	memcpy(b, good, sizeof(good));
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m), 0);
	assert_int_equal(kvt_match_req_parse(NULL, 1, &lim, &m), KVT_EINVAL);
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), NULL, &m),
			 KVT_EINVAL);
	/* Short fixed part, every truncation, one byte too many. */
	for (size_t len = 0; len < sizeof(good); len++)
		assert_int_equal(kvt_match_req_parse(b, len, &lim, &m),
				 KVT_EBADREQ);
	b[sizeof(good)] = 0;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good) + 1, &lim, &m),
			 KVT_EBADREQ);
	/* Reserved byte. */
	b[1] = 1;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_EBADREQ);
	b[1] = 0;
	/* An empty key. */
	b[8] = 0;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_EBADREQ);
	b[8] = 2;
	/* Fewer keys than count says, and more. */
	b[2] = 3;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_EBADREQ);
	b[2] = 1;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_EBADREQ);
	b[2] = 2;
	/* Count over the limit, whatever follows. */
	b[2] = (uint8_t)((KVT_MATCH_KEYS_MAX + 1) & 0xff);
	b[3] = (uint8_t)((KVT_MATCH_KEYS_MAX + 1) >> 8);
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_ETOOBIG);
	b[2] = 2;
	b[3] = 0;
	/* A key over max_key, a namespace over max_ns. */
	lim.max_key = 1;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_ETOOBIG);
	lim = deflim();
	lim.max_ns = 0;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_ETOOBIG);
	lim = deflim();
	/* A key length running past the end of the body. */
	b[8] = 0xff;
	b[9] = 0x03;
	assert_int_equal(kvt_match_req_parse(b, sizeof(good), &lim, &m),
			 KVT_EBADREQ);
}

/* DROP: round trip, exact bytes, and every malformed body refused. */
static void test_drop_codec(void **state)
{
	struct kvt_limits lim;
	uint8_t buf[300], rep[KVT_DROP_REPLY_SIZE];
	const uint8_t *ns;
	size_t w = 0, ns_len;
	uint64_t count;

	(void)state;
	kvt_limits_default(&lim);
	assert_int_equal(kvt_drop_req_encode(buf, sizeof(buf),
					     (const uint8_t *)"llama", 5, &w), 0);
	assert_int_equal(w, 9);
	assert_memory_equal(buf, "\x05\x00\x00\x00llama", 9);
	assert_int_equal(kvt_drop_req_parse(buf, w, &lim, &ns, &ns_len), 0);
	assert_int_equal(ns_len, 5);
	assert_memory_equal(ns, "llama", 5);
	/* The empty namespace is a namespace too. */
	assert_int_equal(kvt_drop_req_encode(buf, sizeof(buf), NULL, 0, &w), 0);
	assert_int_equal(kvt_drop_req_parse(buf, w, &lim, &ns, &ns_len), 0);
	assert_int_equal(ns_len, 0);
	/* Too small a buffer reports the size needed. */
	assert_int_equal(kvt_drop_req_encode(buf, 3, (const uint8_t *)"ab", 2,
					     &w), KVT_ERANGE);
	assert_int_equal(w, 6);
	/* Malformed bodies. */
	kvt_drop_req_encode(buf, sizeof(buf), (const uint8_t *)"ab", 2, &w);
	assert_int_equal(kvt_drop_req_parse(buf, 3, &lim, &ns, &ns_len),
			 KVT_EBADREQ); /* short */
	assert_int_equal(kvt_drop_req_parse(buf, w - 1, &lim, &ns, &ns_len),
			 KVT_EBADREQ); /* ns runs past the end */
	buf[w] = 'x';
	assert_int_equal(kvt_drop_req_parse(buf, w + 1, &lim, &ns, &ns_len),
			 KVT_EBADREQ); /* trailing byte */
	buf[1] = 1;
	assert_int_equal(kvt_drop_req_parse(buf, w, &lim, &ns, &ns_len),
			 KVT_EBADREQ); /* reserved byte */
	buf[1] = 0;
	lim.max_ns = 1;
	assert_int_equal(kvt_drop_req_parse(buf, w, &lim, &ns, &ns_len),
			 KVT_ETOOBIG);
	/* Reply. */
	kvt_drop_reply_encode(rep, 0x0102030405060708ull);
	assert_int_equal(kvt_drop_reply_parse(rep, sizeof(rep), &count), 0);
	assert_int_equal(count, 0x0102030405060708ull);
	assert_int_equal(kvt_drop_reply_parse(rep, 7, &count), KVT_EPROTO);
	assert_string_equal(kvt_op_name(KVT_OP_DROP), "DROP");
}

/* HOT: request and reply items round-trip; malformed items are refused. */
static void test_hot_codec(void **state)
{
	uint8_t req[KVT_HOT_REQ_SIZE], buf[256], head[KVT_HOT_REPLY_FIXED];
	struct kvt_hot_item it = { .tier = 2, .ns = (const uint8_t *)"ns",
				   .ns_len = 2, .key = (const uint8_t *)"key",
				   .key_len = 3, .size = 2097152, .hits = 42,
				   .ctime_s = 1000, .atime_s = 1060 }, back;
	uint32_t top, count;
	uint64_t now;
	size_t w, used;

	(void)state;
	kvt_hot_req_encode(req, 10);
	assert_int_equal(kvt_hot_req_parse(req, sizeof(req), &top), 0);
	assert_int_equal(top, 10);
	kvt_hot_req_encode(req, 0);
	assert_int_equal(kvt_hot_req_parse(req, sizeof(req), &top), KVT_EBADREQ);
	kvt_hot_req_encode(req, KVT_HOT_TOP_MAX + 1);
	assert_int_equal(kvt_hot_req_parse(req, sizeof(req), &top), KVT_ETOOBIG);
	assert_int_equal(kvt_hot_req_parse(req, 3, &top), KVT_EBADREQ);

	kvt_hot_reply_head_encode(head, 7, 123456);
	assert_int_equal(kvt_hot_reply_head_parse(head, sizeof(head), &count,
						  &now), 0);
	assert_int_equal(count, 7);
	assert_int_equal(now, 123456);
	assert_int_equal(kvt_hot_item_encode(buf, sizeof(buf), &it, &w), 0);
	assert_int_equal(w, KVT_HOT_ITEM_FIXED + 5);
	assert_int_equal(kvt_hot_item_parse(buf, w, &back, &used), 0);
	assert_int_equal(used, w);
	assert_int_equal(back.tier, 2);
	assert_int_equal(back.hits, 42);
	assert_int_equal(back.size, 2097152);
	assert_int_equal(back.atime_s, 1060);
	assert_memory_equal(back.ns, "ns", 2);
	assert_memory_equal(back.key, "key", 3);
	assert_int_equal(kvt_hot_item_parse(buf, w - 1, &back, &used),
			 KVT_EPROTO); /* truncated */
	buf[0] = 4;
	assert_int_equal(kvt_hot_item_parse(buf, w, &back, &used),
			 KVT_EPROTO); /* no such tier */
	assert_int_equal(kvt_hot_item_encode(buf, 10, &it, &w), KVT_ERANGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drop_codec),
		cmocka_unit_test(test_hot_codec),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_limits_default),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_header_bytes),
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_header_truncated),
		cmocka_unit_test(test_header_bad_magic),
		cmocka_unit_test(test_header_bad_version),
		cmocka_unit_test(test_header_too_big),
		cmocka_unit_test(test_header_unknown_opcode),
		cmocka_unit_test(test_put_roundtrip),
		cmocka_unit_test(test_put_bytes),
		cmocka_unit_test(test_put_encode_errors),
		cmocka_unit_test(test_put_parse_errors),
		cmocka_unit_test(test_key_roundtrip),
		cmocka_unit_test(test_key_encode_errors),
		cmocka_unit_test(test_key_parse_errors),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_match_bytes),
		cmocka_unit_test(test_match_roundtrip),
		cmocka_unit_test(test_match_encode_errors),
		cmocka_unit_test(test_match_parse_errors),
		cmocka_unit_test(test_protocol_example),
		cmocka_unit_test(test_decoder_chunking),
		cmocka_unit_test(test_decoder_stops_at_frame_end),
		cmocka_unit_test(test_decoder_truncated),
		cmocka_unit_test(test_decoder_body_tail),
		cmocka_unit_test(test_decoder_needs_body),
		cmocka_unit_test(test_decoder_header_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
