/*
 * fuzz_bodies.c - libFuzzer harness for the request and reply body parsers
 * of proto/kvt_frame.h.
 *
 * Input: byte 0 chooses the parser (low 4 bits, modulo the number of
 * parsers) and the limits (bit 4: small limits, so that the KVT_ETOOBIG
 * paths are reachable with short inputs); the rest is the body.  Whatever a parser accepts is encoded
 * again with the matching encoder and must come out byte for byte as it
 * went in: a parser that accepts what no encoder produces, or an encoder
 * that drops a field, is a disagreement between client and daemon.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvt_fuzz.h"

enum {
	SEL_PUT = 0,
	SEL_KEY,
	SEL_HELLO_REQ,
	SEL_HELLO_REPLY,
	SEL_MATCH_REQ,
	SEL_MATCH_REPLY,
	SEL_DROP_REQ,
	SEL_DROP_REPLY,
	SEL_HOT_REQ,
	SEL_HOT_REPLY,
	SEL_END_
};

/* Small limits: a 2-byte namespace, 8-byte key and 16-byte value. */
static void limits_small(struct kvt_limits *lim)
{
	lim->max_key = 8;
	lim->max_ns = 2;
	lim->max_value = 16;
	lim->max_body = kvt_limits_put_body_max(lim);
}

/* A returned pointer range must lie inside the body. */
static int inside(const uint8_t *body, size_t len, const uint8_t *p, size_t n)
{
	return p >= body && (size_t)(p - body) <= len &&
	       n <= len - (size_t)(p - body);
}

/*
 * Encoders get an output buffer of exactly the size they ask for (so that
 * ASan sees any write past it), and one byte less must be refused with
 * KVT_ERANGE and the needed size.
 */
static void check_put(const uint8_t *body, size_t len,
		      const struct kvt_limits *lim)
{
	struct kvt_put_req r;
	size_t need, written = 0;
	uint8_t *out;
	int rc;

	rc = kvt_put_req_parse(body, len, lim, &r);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(r.k.key_len >= 1 && r.k.key_len <= lim->max_key);
	KVT_FUZZ_CHECK(r.k.ns_len <= lim->max_ns);
	KVT_FUZZ_CHECK(r.value_len <= lim->max_value);
	KVT_FUZZ_CHECK(r.dtype < KVT_DTYPE_END_);
	KVT_FUZZ_CHECK(inside(body, len, r.k.ns, r.k.ns_len));
	KVT_FUZZ_CHECK(inside(body, len, r.k.key, r.k.key_len));
	KVT_FUZZ_CHECK(inside(body, len, r.value, r.value_len));
	need = kvt_put_req_prefix_size(r.k.ns_len, r.k.key_len);
	KVT_FUZZ_CHECK(need + r.value_len == len);
	KVT_FUZZ_CHECK(r.value == body + need);

	rc = kvt_put_req_encode_prefix(NULL, 0, &r, &written);
	KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == need);
	out = malloc(need);
	KVT_FUZZ_CHECK(out != NULL);
	rc = kvt_put_req_encode_prefix(out, need - 1, &r, &written);
	KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == need);
	rc = kvt_put_req_encode_prefix(out, need, &r, &written);
	KVT_FUZZ_CHECK(rc == 0 && written == need);
	KVT_FUZZ_CHECK(memcmp(out, body, need) == 0);
	free(out);
}

static void check_key(const uint8_t *body, size_t len,
		      const struct kvt_limits *lim)
{
	struct kvt_keyref k;
	size_t need, written = 0;
	uint8_t *out;
	int rc;

	rc = kvt_key_req_parse(body, len, lim, &k);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(k.key_len >= 1 && k.key_len <= lim->max_key);
	KVT_FUZZ_CHECK(k.ns_len <= lim->max_ns);
	KVT_FUZZ_CHECK(inside(body, len, k.ns, k.ns_len));
	KVT_FUZZ_CHECK(inside(body, len, k.key, k.key_len));
	need = kvt_key_req_size(k.ns_len, k.key_len);
	KVT_FUZZ_CHECK(need == len);

	out = malloc(need);
	KVT_FUZZ_CHECK(out != NULL);
	rc = kvt_key_req_encode(out, need - 1, &k, &written);
	KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == need);
	rc = kvt_key_req_encode(out, need, &k, &written);
	KVT_FUZZ_CHECK(rc == 0 && written == need);
	KVT_FUZZ_CHECK(memcmp(out, body, need) == 0);
	free(out);
}

/* HELLO parsers ignore bytes after the fields they know. */
static void check_hello_req(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_HELLO_REQ_SIZE];
	uint32_t version, features;
	int rc;

	rc = kvt_hello_req_parse(body, len, &version, &features);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
	KVT_FUZZ_CHECK((rc == 0) == (len >= KVT_HELLO_REQ_SIZE));
	if (rc < 0)
		return;
	kvt_hello_req_encode(out, version, features);
	KVT_FUZZ_CHECK(memcmp(out, body, sizeof(out)) == 0);
}

static void check_hello_reply(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_HELLO_REPLY_SIZE];
	struct kvt_hello h;
	int rc;

	rc = kvt_hello_reply_parse(body, len, &h);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(len >= KVT_HELLO_REPLY_SIZE);
	/* What a client sizes its buffers from must be sane. */
	KVT_FUZZ_CHECK(h.lim.max_key >= 1 && h.lim.max_ns <= KVT_NS_MAX);
	KVT_FUZZ_CHECK(h.lim.max_body <= 0xffffffffu);
	kvt_hello_reply_encode(out, &h);
	KVT_FUZZ_CHECK(memcmp(out, body, sizeof(out)) == 0);
}

static void check_match_req(const uint8_t *body, size_t len,
			    const struct kvt_limits *lim)
{
	struct kvt_match_req m;
	struct kvt_keyref k;
	const void **keys;
	size_t *key_lens, n = 0, pos = 0, need, written = 0;
	uint8_t *out;
	int rc;

	rc = kvt_match_req_parse(body, len, lim, &m);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(m.count <= KVT_MATCH_KEYS_MAX);
	KVT_FUZZ_CHECK(m.ns_len <= lim->max_ns);
	KVT_FUZZ_CHECK(inside(body, len, m.ns, m.ns_len));
	KVT_FUZZ_CHECK(inside(body, len, m.keys, m.keys_len));

	/* calloc(0) may return NULL: allocate at least one slot. */
	keys = calloc(m.count + 1, sizeof(*keys));
	key_lens = calloc(m.count + 1, sizeof(*key_lens));
	KVT_FUZZ_CHECK(keys != NULL && key_lens != NULL);
	while (kvt_match_req_key(&m, &pos, &k)) {
		KVT_FUZZ_CHECK(n < m.count);
		KVT_FUZZ_CHECK(k.ns == m.ns && k.ns_len == m.ns_len);
		KVT_FUZZ_CHECK(k.key_len >= 1 && k.key_len <= lim->max_key);
		KVT_FUZZ_CHECK(inside(m.keys, m.keys_len, k.key, k.key_len));
		keys[n] = k.key;
		key_lens[n] = k.key_len;
		n++;
	}
	KVT_FUZZ_CHECK(n == m.count && pos == m.keys_len);

	need = kvt_match_req_size(m.ns_len, key_lens, n);
	KVT_FUZZ_CHECK(need == len);
	rc = kvt_match_req_encode(NULL, 0, m.ns, m.ns_len, keys, key_lens, n,
				  &written);
	KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == need);
	out = malloc(need);
	KVT_FUZZ_CHECK(out != NULL);
	rc = kvt_match_req_encode(out, need, m.ns, m.ns_len, keys, key_lens,
				  n, &written);
	KVT_FUZZ_CHECK(rc == 0 && written == need);
	KVT_FUZZ_CHECK(memcmp(out, body, need) == 0);
	free(out);
	free(keys);
	free(key_lens);
}

static void check_match_reply(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_MATCH_REPLY_SIZE];
	uint32_t matched;
	int rc;

	rc = kvt_match_reply_parse(body, len, &matched);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	KVT_FUZZ_CHECK((rc == 0) == (len >= KVT_MATCH_REPLY_SIZE));
	if (rc < 0)
		return;
	kvt_match_reply_encode(out, matched);
	KVT_FUZZ_CHECK(memcmp(out, body, sizeof(out)) == 0);
}

static void check_drop_req(const uint8_t *body, size_t len,
			   const struct kvt_limits *lim)
{
	const uint8_t *ns;
	size_t ns_len, need, written = 0;
	uint8_t *out;
	int rc;

	rc = kvt_drop_req_parse(body, len, lim, &ns, &ns_len);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(ns_len <= lim->max_ns);
	KVT_FUZZ_CHECK(inside(body, len, ns, ns_len));
	need = kvt_drop_req_size(ns_len);
	KVT_FUZZ_CHECK(need == len);
	out = malloc(need);
	KVT_FUZZ_CHECK(out != NULL);
	rc = kvt_drop_req_encode(out, need - 1, ns, ns_len, &written);
	KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == need);
	rc = kvt_drop_req_encode(out, need, ns, ns_len, &written);
	KVT_FUZZ_CHECK(rc == 0 && written == need);
	KVT_FUZZ_CHECK(memcmp(out, body, need) == 0);
	free(out);
}

static void check_drop_reply(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_DROP_REPLY_SIZE];
	uint64_t count;
	int rc;

	rc = kvt_drop_reply_parse(body, len, &count);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	KVT_FUZZ_CHECK((rc == 0) == (len == KVT_DROP_REPLY_SIZE));
	if (rc < 0)
		return;
	kvt_drop_reply_encode(out, count);
	KVT_FUZZ_CHECK(memcmp(out, body, sizeof(out)) == 0);
}

static void check_hot_req(const uint8_t *body, size_t len)
{
	uint8_t out[KVT_HOT_REQ_SIZE];
	uint32_t top;
	int rc;

	rc = kvt_hot_req_parse(body, len, &top);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ || rc == KVT_ETOOBIG);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(len == KVT_HOT_REQ_SIZE);
	KVT_FUZZ_CHECK(top >= 1 && top <= KVT_HOT_TOP_MAX);
	kvt_hot_req_encode(out, top);
	KVT_FUZZ_CHECK(memcmp(out, body, sizeof(out)) == 0);
}

/*
 * A HOT reply is a head and count items, walked as the client library
 * walks them; the part walked must re-encode to the same bytes.
 */
static void check_hot_reply(const uint8_t *body, size_t len)
{
	struct kvt_hot_item it;
	uint8_t head[KVT_HOT_REPLY_FIXED], *out;
	uint64_t now_s;
	uint32_t count;
	size_t pos, used, written;
	int rc;

	rc = kvt_hot_reply_head_parse(body, len, &count, &now_s);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
	if (rc < 0)
		return;
	KVT_FUZZ_CHECK(len >= KVT_HOT_REPLY_FIXED);
	kvt_hot_reply_head_encode(head, count, now_s);
	KVT_FUZZ_CHECK(memcmp(head, body, sizeof(head)) == 0);
	pos = KVT_HOT_REPLY_FIXED;
	for (uint32_t i = 0; i < count; i++) {
		rc = kvt_hot_item_parse(body + pos, len - pos, &it, &used);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
		if (rc < 0)
			break;
		KVT_FUZZ_CHECK(used >= KVT_HOT_ITEM_FIXED &&
			       used <= len - pos);
		KVT_FUZZ_CHECK(used == kvt_hot_item_size(it.ns_len,
							 it.key_len));
		KVT_FUZZ_CHECK(it.tier >= 1 && it.tier <= 3);
		KVT_FUZZ_CHECK(inside(body + pos, used, it.ns, it.ns_len));
		KVT_FUZZ_CHECK(inside(body + pos, used, it.key, it.key_len));
		out = malloc(used);
		KVT_FUZZ_CHECK(out != NULL);
		rc = kvt_hot_item_encode(out, used - 1, &it, &written);
		KVT_FUZZ_CHECK(rc == KVT_ERANGE && written == used);
		rc = kvt_hot_item_encode(out, used, &it, &written);
		KVT_FUZZ_CHECK(rc == 0 && written == used);
		KVT_FUZZ_CHECK(memcmp(out, body + pos, used) == 0);
		free(out);
		pos += used;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvt_limits lim;
	const uint8_t *body;
	uint8_t *copy;
	size_t len;
	unsigned sel;

	if (size < 1)
		return 0;
	sel = (data[0] & 15u) % SEL_END_;
	if (data[0] & 16u)
		limits_small(&lim);
	else
		kvt_limits_default(&lim);
	/*
	 * The body gets its own allocation of exactly its size, so that a
	 * read one past its end is an ASan report rather than a read of the
	 * fuzzer's next byte.
	 */
	len = size - 1;
	copy = malloc(len ? len : 1);
	KVT_FUZZ_CHECK(copy != NULL);
	if (len)
		memcpy(copy, data + 1, len);
	body = copy;

	switch (sel) {
	case SEL_PUT:
		check_put(body, len, &lim);
		break;
	case SEL_KEY:
		check_key(body, len, &lim);
		break;
	case SEL_HELLO_REQ:
		check_hello_req(body, len);
		break;
	case SEL_HELLO_REPLY:
		check_hello_reply(body, len);
		break;
	case SEL_MATCH_REQ:
		check_match_req(body, len, &lim);
		break;
	case SEL_MATCH_REPLY:
		check_match_reply(body, len);
		break;
	case SEL_DROP_REQ:
		check_drop_req(body, len, &lim);
		break;
	case SEL_DROP_REPLY:
		check_drop_reply(body, len);
		break;
	case SEL_HOT_REQ:
		check_hot_req(body, len);
		break;
	case SEL_HOT_REPLY:
		check_hot_reply(body, len);
		break;
	}
	free(copy);
	return 0;
}
