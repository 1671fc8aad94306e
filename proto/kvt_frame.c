/*
 * kvt_frame.c - the kvtier wire format (see kvt_frame.h and PROTOCOL.md).
 *
 * Everything here works on caller buffers and never allocates, so the same
 * code serves the daemon, the client library and the fuzz harnesses.
 * Integers are read and written a byte at a time with shifts: that is
 * endian-independent and never performs an unaligned load, whatever the
 * alignment of the socket buffer the bytes came from.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "kvt_frame.h"
#include "kvt_le.h"

/* Widths of the length fields: encoders refuse values they cannot carry. */
#define KVT_KEY_FIELD_MAX 0xffffu
#define KVT_BODY_FIELD_MAX 0xffffffffu

/* ---- Limits, names, dtypes ------------------------------------------ */

uint64_t kvt_limits_put_body_max(const struct kvt_limits *lim)
{
	/*
	 * A limit larger than its wire field cannot be reached, so clamp each
	 * term to the field width; the sum is clamped to what body_len (u32)
	 * can say, which keeps max_body < 2^32 as struct kvt_limits requires.
	 */
	uint64_t key = lim->max_key < KVT_KEY_FIELD_MAX ? lim->max_key
							: KVT_KEY_FIELD_MAX;
	uint64_t ns = lim->max_ns < KVT_NS_MAX ? lim->max_ns : KVT_NS_MAX;
	uint64_t fixed = KVT_PUT_FIXED + key + ns;

	if (lim->max_value >= KVT_BODY_FIELD_MAX - fixed)
		return KVT_BODY_FIELD_MAX;
	return fixed + lim->max_value;
}

void kvt_limits_default(struct kvt_limits *lim)
{
	lim->max_key = 1024;
	lim->max_ns = KVT_NS_MAX;
	lim->max_value = (uint64_t)256 << 20;
	lim->max_body = kvt_limits_put_body_max(lim);
}

const char *kvt_op_name(unsigned op)
{
	switch (op) {
	case KVT_OP_HELLO:
		return "HELLO";
	case KVT_OP_PING:
		return "PING";
	case KVT_OP_PUT:
		return "PUT";
	case KVT_OP_GET:
		return "GET";
	case KVT_OP_DEL:
		return "DEL";
	case KVT_OP_EXISTS:
		return "EXISTS";
	case KVT_OP_STATS:
		return "STATS";
	case KVT_OP_MATCH:
		return "MATCH";
	case KVT_OP_DROP:
		return "DROP";
	case KVT_OP_HOT:
		return "HOT";
	case KVT_OP_PREFETCH:
		return "PREFETCH";
	case KVT_OP_PIN:
		return "PIN";
	case KVT_OP_UNPIN:
		return "UNPIN";
	case KVT_OP_RELEASE:
		return "RELEASE";
	case KVT_OP_PUT_ALLOC:
		return "PUT_ALLOC";
	case KVT_OP_PUT_COMMIT:
		return "PUT_COMMIT";
	case KVT_OP_REGISTER:
		return "REGISTER";
	case KVT_OP_UNREGISTER:
		return "UNREGISTER";
	case KVT_OP_MGET_TO:
		return "MGET_TO";
	case KVT_OP_MPUT_FROM:
		return "MPUT_FROM";
	}
	return "UNKNOWN";
}

unsigned kvt_dtype_size(unsigned dtype)
{
	switch (dtype) {
	case KVT_DTYPE_U8:
		return 1;
	case KVT_DTYPE_BF16:
	case KVT_DTYPE_FP16:
		return 2;
	case KVT_DTYPE_FP32:
		return 4;
	}
	return 0;
}

int kvt_dtype_parse(const char *s)
{
	static const struct {
		const char *name;
		int dtype;
	} names[] = {
		{ "u8", KVT_DTYPE_U8 },
		{ "bf16", KVT_DTYPE_BF16 },
		{ "fp16", KVT_DTYPE_FP16 },
		{ "fp32", KVT_DTYPE_FP32 },
	};

	if (!s)
		return -1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(s, names[i].name) == 0)
			return names[i].dtype;
	return -1;
}

/* ---- Header --------------------------------------------------------- */

void kvt_frame_header_encode(uint8_t out[KVT_HDR_SIZE],
			     const struct kvt_frame_header *h)
{
	put_u32(out, KVT_FRAME_MAGIC);
	out[4] = h->version;
	out[5] = h->opcode;
	put_u16(out + 6, h->flags);
	put_u64(out + 8, h->request_id);
	put_u32(out + 16, h->status);
	put_u32(out + 20, h->body_len);
}

int kvt_frame_header_decode(const uint8_t *buf, size_t len,
			    const struct kvt_limits *lim,
			    struct kvt_frame_header *h)
{
	if (!buf || !lim || !h)
		return KVT_EINVAL;
	if (len < KVT_HDR_SIZE)
		return KVT_EAGAIN;
	/*
	 * With a bad magic nothing else in the header can be trusted, not
	 * even the request id, so *h is left alone.
	 */
	if (get_u32(buf) != KVT_FRAME_MAGIC)
		return KVT_EPROTO;
	h->version = buf[4];
	h->opcode = buf[5];
	h->flags = get_u16(buf + 6);
	h->request_id = get_u64(buf + 8);
	h->status = get_u32(buf + 16);
	h->body_len = get_u32(buf + 20);
	if (h->version != KVT_PROTO_VERSION)
		return KVT_EVERSION;
	if (h->body_len > lim->max_body)
		return KVT_ETOOBIG;
	/* Unknown opcodes are the dispatcher's business (KVT_EUNKNOWNOP). */
	return 0;
}

/* ---- Incremental decoder -------------------------------------------- */

enum {
	DEC_HDR = 0,   /* collecting header bytes */
	DEC_NEED_BODY, /* header done, waiting for kvt_decoder_set_body() */
	DEC_BODY,      /* copying body bytes */
	DEC_DONE,      /* a frame was reported; next feed starts a new one */
	/* A negative state is the sticky header error (until init). */
};

void kvt_decoder_init(struct kvt_decoder *d, const struct kvt_limits *lim)
{
	memset(d, 0, sizeof(*d));
	if (lim)
		d->lim = *lim;
	else
		kvt_limits_default(&d->lim);
	d->state = DEC_HDR;
}

/* Forgets the previous frame so the decoder can start on the next one. */
static void dec_reset_frame(struct kvt_decoder *d)
{
	d->state = DEC_HDR;
	d->hdr_have = 0;
	d->body = NULL;
	d->body_have = 0;
	memset(&d->h, 0, sizeof(d->h));
}

int kvt_decoder_feed(struct kvt_decoder *d, const uint8_t *p, size_t n,
		     size_t *consumed)
{
	size_t take;
	int rc;

	if (consumed)
		*consumed = 0;
	if (!d || !consumed || (!p && n))
		return KVT_EINVAL;

	/*
	 * A header error is sticky: after bad framing the byte stream has no
	 * frame boundary to resynchronise on, so the connection is done.
	 */
	if (d->state < 0)
		return d->state;
	switch (d->state) {
	case DEC_NEED_BODY:
		return KVT_EINVAL;
	case DEC_DONE:
		dec_reset_frame(d);
		break;
	default:
		break;
	}

	if (d->state == DEC_HDR) {
		take = KVT_HDR_SIZE - d->hdr_have;
		if (take > n)
			take = n;
		if (take)
			memcpy(d->hdr + d->hdr_have, p, take);
		d->hdr_have += take;
		*consumed = take;
		if (d->hdr_have < KVT_HDR_SIZE)
			return KVT_DEC_MORE;
		rc = kvt_frame_header_decode(d->hdr, KVT_HDR_SIZE, &d->lim,
					     &d->h);
		if (rc < 0) {
			d->state = rc;
			return rc;
		}
		if (d->h.body_len == 0) {
			d->state = DEC_DONE;
			return KVT_DEC_FRAME;
		}
		/*
		 * Stop here even if body bytes follow: the caller has to
		 * provide storage sized from the header first.
		 */
		d->state = DEC_NEED_BODY;
		return KVT_DEC_HEADER;
	}

	assert(d->state == DEC_BODY);
	take = d->h.body_len - d->body_have;
	if (take > n)
		take = n;
	if (take)
		memcpy(d->body + d->body_have, p, take);
	*consumed = take;
	return kvt_decoder_body_advance(d, take);
}

int kvt_decoder_set_body(struct kvt_decoder *d, uint8_t *body, size_t cap)
{
	if (!d || !body || d->state != DEC_NEED_BODY)
		return KVT_EINVAL;
	if (cap < d->h.body_len)
		return KVT_ERANGE;
	d->body = body;
	d->body_have = 0;
	d->state = DEC_BODY;
	return 0;
}

uint8_t *kvt_decoder_body_tail(struct kvt_decoder *d, size_t *room)
{
	if (room)
		*room = 0;
	if (!d || !room || d->state != DEC_BODY)
		return NULL;
	*room = d->h.body_len - d->body_have;
	return d->body + d->body_have;
}

int kvt_decoder_body_advance(struct kvt_decoder *d, size_t n)
{
	if (!d || d->state != DEC_BODY || n > d->h.body_len - d->body_have)
		return KVT_EINVAL;
	d->body_have += n;
	if (d->body_have < d->h.body_len)
		return KVT_DEC_MORE;
	d->state = DEC_DONE;
	return KVT_DEC_FRAME;
}

const struct kvt_frame_header *kvt_decoder_header(const struct kvt_decoder *d)
{
	return &d->h;
}

/* ---- Body codecs ---------------------------------------------------- */

/*
 * Checks a key reference against its wire fields before encoding.  The
 * encoder does not know the daemon's limits (HELLO reports them); it only
 * refuses what the format itself cannot carry.
 */
static int keyref_encodable(const struct kvt_keyref *k)
{
	if (!k || !k->key || k->key_len == 0 ||
	    k->key_len > KVT_KEY_FIELD_MAX || k->ns_len > KVT_NS_MAX ||
	    (!k->ns && k->ns_len))
		return KVT_EINVAL;
	return 0;
}

/*
 * Writes the 4 bytes shared by the PUT and key bodies after the type
 * specific byte: byte 0 ns_len, byte 1 `b1`, bytes 2-3 key_len.
 */
static void keyref_encode_fixed(uint8_t *out, const struct kvt_keyref *k,
				uint8_t b1)
{
	out[0] = (uint8_t)k->ns_len;
	out[1] = b1;
	put_u16(out + 2, (uint16_t)k->key_len);
}

/* Copies ns then key to out. */
static void keyref_encode_bytes(uint8_t *out, const struct kvt_keyref *k)
{
	if (k->ns_len)
		memcpy(out, k->ns, k->ns_len);
	memcpy(out + k->ns_len, k->key, k->key_len);
}

/*
 * Validates ns_len/key_len read from a body whose fixed part is `fixed`
 * bytes against lim and the body length, and points k into the body.
 * Limits are checked before the lengths are compared with the body so
 * that an oversized key is reported as KVT_ETOOBIG whatever else is
 * wrong with the body.
 */
static int keyref_parse(const uint8_t *body, size_t len, size_t fixed,
			size_t ns_len, size_t key_len,
			const struct kvt_limits *lim, struct kvt_keyref *k)
{
	if (key_len == 0)
		return KVT_EBADREQ;
	if (key_len > lim->max_key || ns_len > lim->max_ns)
		return KVT_ETOOBIG;
	/* fixed + 255 + 65535 cannot overflow size_t. */
	if (fixed + ns_len + key_len > len)
		return KVT_EBADREQ;
	k->ns = body + fixed;
	k->ns_len = ns_len;
	k->key = body + fixed + ns_len;
	k->key_len = key_len;
	return 0;
}

size_t kvt_put_req_prefix_size(size_t ns_len, size_t key_len)
{
	return KVT_PUT_FIXED + ns_len + key_len;
}

int kvt_put_req_encode_prefix(uint8_t *out, size_t cap,
			      const struct kvt_put_req *r, size_t *written)
{
	size_t need;
	int rc;

	if (!r || !written)
		return KVT_EINVAL;
	*written = 0;
	rc = keyref_encodable(&r->k);
	if (rc < 0)
		return rc;
	if (r->dtype >= KVT_DTYPE_END_)
		return KVT_EINVAL;
	need = kvt_put_req_prefix_size(r->k.ns_len, r->k.key_len);
	/* The whole body, value included, must fit in the u32 body_len. */
	if (r->value_len > KVT_BODY_FIELD_MAX - need)
		return KVT_EINVAL;
	if (!out || cap < need) {
		*written = need;
		return KVT_ERANGE;
	}
	keyref_encode_fixed(out, &r->k, r->dtype);
	put_u32(out + 4, r->ttl_s);
	keyref_encode_bytes(out + KVT_PUT_FIXED, &r->k);
	*written = need;
	return 0;
}

int kvt_put_req_parse(const uint8_t *body, size_t len,
		      const struct kvt_limits *lim, struct kvt_put_req *r)
{
	struct kvt_keyref k;
	size_t off, value_len;
	uint8_t dtype;
	int rc;

	if (!lim || !r || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_PUT_FIXED)
		return KVT_EBADREQ;
	rc = keyref_parse(body, len, KVT_PUT_FIXED, body[0], get_u16(body + 2),
			  lim, &k);
	if (rc < 0)
		return rc;
	dtype = body[1];
	if (dtype >= KVT_DTYPE_END_)
		return KVT_EBADREQ;
	off = KVT_PUT_FIXED + k.ns_len + k.key_len;
	value_len = len - off;
	if (value_len > lim->max_value)
		return KVT_ETOOBIG;
	r->k = k;
	r->dtype = dtype;
	r->ttl_s = get_u32(body + 4);
	r->value = body + off;
	r->value_len = value_len;
	return 0;
}

size_t kvt_key_req_size(size_t ns_len, size_t key_len)
{
	return KVT_KEY_FIXED + ns_len + key_len;
}

int kvt_key_req_encode(uint8_t *out, size_t cap, const struct kvt_keyref *k,
		       size_t *written)
{
	size_t need;
	int rc;

	if (!written)
		return KVT_EINVAL;
	*written = 0;
	rc = keyref_encodable(k);
	if (rc < 0)
		return rc;
	need = kvt_key_req_size(k->ns_len, k->key_len);
	if (!out || cap < need) {
		*written = need;
		return KVT_ERANGE;
	}
	keyref_encode_fixed(out, k, 0);
	keyref_encode_bytes(out + KVT_KEY_FIXED, k);
	*written = need;
	return 0;
}

int kvt_key_req_parse(const uint8_t *body, size_t len,
		      const struct kvt_limits *lim, struct kvt_keyref *k)
{
	struct kvt_keyref tmp;
	int rc;

	if (!lim || !k || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_KEY_FIXED)
		return KVT_EBADREQ;
	/*
	 * The reserved byte must be zero so that it can be given a meaning
	 * later without old daemons misreading new requests.
	 */
	if (body[1] != 0)
		return KVT_EBADREQ;
	rc = keyref_parse(body, len, KVT_KEY_FIXED, body[0], get_u16(body + 2),
			  lim, &tmp);
	if (rc < 0)
		return rc;
	if (KVT_KEY_FIXED + tmp.ns_len + tmp.key_len != len)
		return KVT_EBADREQ;
	*k = tmp;
	return 0;
}

/*
 * HELLO bodies may grow in later versions: parsers read the fields they
 * know and ignore anything after them.
 */
void kvt_hello_req_encode(uint8_t out[KVT_HELLO_REQ_SIZE], uint32_t version,
			  uint32_t features)
{
	put_u32(out, version);
	put_u32(out + 4, features);
}

int kvt_hello_req_parse(const uint8_t *body, size_t len, uint32_t *version,
			uint32_t *features)
{
	if (!version || !features || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_HELLO_REQ_SIZE)
		return KVT_EBADREQ;
	*version = get_u32(body);
	*features = get_u32(body + 4);
	return 0;
}

void kvt_hello_reply_encode(uint8_t out[KVT_HELLO_REPLY_SIZE],
			    const struct kvt_hello *h)
{
	put_u32(out, h->version);
	put_u32(out + 4, h->features);
	put_u32(out + 8, h->lim.max_key);
	put_u32(out + 12, h->lim.max_ns);
	put_u64(out + 16, h->lim.max_value);
	put_u64(out + 24, h->lim.max_body);
}

int kvt_hello_reply_parse(const uint8_t *body, size_t len,
			  struct kvt_hello *h)
{
	struct kvt_hello tmp;

	if (!h || (!body && len))
		return KVT_EINVAL;
	/* A reply is the daemon's fault if malformed, hence EPROTO. */
	if (len < KVT_HELLO_REPLY_SIZE)
		return KVT_EPROTO;
	tmp.version = get_u32(body);
	tmp.features = get_u32(body + 4);
	tmp.lim.max_key = get_u32(body + 8);
	tmp.lim.max_ns = get_u32(body + 12);
	tmp.lim.max_value = get_u64(body + 16);
	tmp.lim.max_body = get_u64(body + 24);
	/* Limits a client would size buffers from must be sane. */
	if (tmp.lim.max_key == 0 || tmp.lim.max_ns > KVT_NS_MAX ||
	    tmp.lim.max_body > KVT_BODY_FIELD_MAX)
		return KVT_EPROTO;
	*h = tmp;
	return 0;
}

/* ---- MATCH ------------------------------------------------------------ */

size_t kvt_match_req_size(size_t ns_len, const size_t *key_lens, size_t n)
{
	size_t total;

	if (ns_len > SIZE_MAX - KVT_MATCH_FIXED)
		return SIZE_MAX;
	total = KVT_MATCH_FIXED + ns_len;
	for (size_t i = 0; i < n; i++) {
		if (key_lens[i] > SIZE_MAX - 2 - total)
			return SIZE_MAX;
		total += 2 + key_lens[i];
	}
	return total;
}

int kvt_match_req_encode(uint8_t *out, size_t cap, const uint8_t *ns,
			 size_t ns_len, const void *const *keys,
			 const size_t *key_lens, size_t n, size_t *written)
{
	size_t need, off;

	if (!written)
		return KVT_EINVAL;
	*written = 0;
	if (ns_len > KVT_NS_MAX || (!ns && ns_len) ||
	    (n && (!keys || !key_lens)))
		return KVT_EINVAL;
	if (n > KVT_MATCH_KEYS_MAX)
		return KVT_ETOOBIG;
	for (size_t i = 0; i < n; i++)
		if (!keys[i] || key_lens[i] == 0 ||
		    key_lens[i] > KVT_KEY_FIELD_MAX)
			return KVT_EINVAL;
	/* At most 4 + 255 + 4096 * (2 + 65535) bytes: no overflow, < 2^32. */
	need = kvt_match_req_size(ns_len, key_lens, n);
	if (!out || cap < need) {
		*written = need;
		return KVT_ERANGE;
	}
	out[0] = (uint8_t)ns_len;
	out[1] = 0;
	put_u16(out + 2, (uint16_t)n);
	if (ns_len)
		memcpy(out + KVT_MATCH_FIXED, ns, ns_len);
	off = KVT_MATCH_FIXED + ns_len;
	for (size_t i = 0; i < n; i++) {
		put_u16(out + off, (uint16_t)key_lens[i]);
		memcpy(out + off + 2, keys[i], key_lens[i]);
		off += 2 + key_lens[i];
	}
	assert(off == need);
	*written = need;
	return 0;
}

int kvt_match_req_parse(const uint8_t *body, size_t len,
			const struct kvt_limits *lim, struct kvt_match_req *m)
{
	size_t ns_len, count, off, key_len;

	if (!lim || !m || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_MATCH_FIXED)
		return KVT_EBADREQ;
	/* Reserved for later use, as in the key body. */
	if (body[1] != 0)
		return KVT_EBADREQ;
	ns_len = body[0];
	count = get_u16(body + 2);
	/*
	 * Limits first, as for the other bodies: an oversized request is
	 * KVT_ETOOBIG whatever else is wrong with it.  The key count bounds
	 * the work one request makes the daemon do between other clients'.
	 */
	if (count > KVT_MATCH_KEYS_MAX || ns_len > lim->max_ns)
		return KVT_ETOOBIG;
	if (KVT_MATCH_FIXED + ns_len > len)
		return KVT_EBADREQ;
	off = KVT_MATCH_FIXED + ns_len;
	for (size_t i = 0; i < count; i++) {
		if (len - off < 2)
			return KVT_EBADREQ;
		key_len = get_u16(body + off);
		if (key_len == 0)
			return KVT_EBADREQ;
		if (key_len > lim->max_key)
			return KVT_ETOOBIG;
		if (len - off - 2 < key_len)
			return KVT_EBADREQ;
		off += 2 + key_len;
	}
	if (off != len)
		return KVT_EBADREQ;
	m->ns = body + KVT_MATCH_FIXED;
	m->ns_len = ns_len;
	m->count = count;
	m->keys = body + KVT_MATCH_FIXED + ns_len;
	m->keys_len = len - KVT_MATCH_FIXED - ns_len;
	return 0;
}

int kvt_match_req_key(const struct kvt_match_req *m, size_t *pos,
		      struct kvt_keyref *k)
{
	size_t key_len;

	if (*pos >= m->keys_len)
		return 0;
	/* The parser checked every length, so these reads stay in bounds. */
	assert(m->keys_len - *pos >= 2);
	key_len = get_u16(m->keys + *pos);
	assert(key_len > 0 && m->keys_len - *pos - 2 >= key_len);
	k->ns = m->ns;
	k->ns_len = m->ns_len;
	k->key = m->keys + *pos + 2;
	k->key_len = key_len;
	*pos += 2 + key_len;
	return 1;
}

void kvt_match_reply_encode(uint8_t out[KVT_MATCH_REPLY_SIZE],
			    uint32_t matched)
{
	put_u32(out, matched);
}

int kvt_match_reply_parse(const uint8_t *body, size_t len, uint32_t *matched)
{
	if (!matched || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_MATCH_REPLY_SIZE)
		return KVT_EPROTO;
	*matched = get_u32(body);
	return 0;
}

/* ---- DROP ------------------------------------------------------------- */

size_t kvt_drop_req_size(size_t ns_len)
{
	return KVT_DROP_FIXED + ns_len;
}

int kvt_drop_req_encode(uint8_t *out, size_t cap, const uint8_t *ns,
			size_t ns_len, size_t *written)
{
	size_t need = kvt_drop_req_size(ns_len);

	if (!written || ns_len > KVT_NS_MAX || (ns_len && !ns))
		return KVT_EINVAL;
	*written = need;
	if (!out || cap < need)
		return KVT_ERANGE;
	out[0] = (uint8_t)ns_len;
	out[1] = 0;
	put_u16(out + 2, 0);
	if (ns_len)
		memcpy(out + KVT_DROP_FIXED, ns, ns_len);
	return 0;
}

int kvt_drop_req_parse(const uint8_t *body, size_t len,
		       const struct kvt_limits *lim, const uint8_t **ns,
		       size_t *ns_len)
{
	size_t n;

	if (!lim || !ns || !ns_len || (len && !body))
		return KVT_EINVAL;
	if (len < KVT_DROP_FIXED || body[1] != 0 || get_u16(body + 2) != 0)
		return KVT_EBADREQ;
	n = body[0];
	if (n > lim->max_ns)
		return KVT_ETOOBIG;
	if (len != KVT_DROP_FIXED + n)
		return KVT_EBADREQ;
	*ns = body + KVT_DROP_FIXED;
	*ns_len = n;
	return 0;
}

void kvt_drop_reply_encode(uint8_t out[KVT_DROP_REPLY_SIZE], uint64_t count)
{
	put_u64(out, count);
}

int kvt_drop_reply_parse(const uint8_t *body, size_t len, uint64_t *count)
{
	if (!body || !count || len != KVT_DROP_REPLY_SIZE)
		return KVT_EPROTO;
	*count = get_u64(body);
	return 0;
}

/* ---- HOT -------------------------------------------------------------- */

void kvt_hot_req_encode(uint8_t out[KVT_HOT_REQ_SIZE], uint32_t top)
{
	put_u32(out, top);
}

int kvt_hot_req_parse(const uint8_t *body, size_t len, uint32_t *top)
{
	if (!body || !top || len != KVT_HOT_REQ_SIZE)
		return KVT_EBADREQ;
	*top = get_u32(body);
	if (*top == 0)
		return KVT_EBADREQ;
	if (*top > KVT_HOT_TOP_MAX)
		return KVT_ETOOBIG;
	return 0;
}

size_t kvt_hot_item_size(size_t ns_len, size_t key_len)
{
	return KVT_HOT_ITEM_FIXED + ns_len + key_len;
}

void kvt_hot_reply_head_encode(uint8_t out[KVT_HOT_REPLY_FIXED],
			       uint32_t count, uint64_t now_s)
{
	put_u32(out, count);
	put_u32(out + 4, 0);
	put_u64(out + 8, now_s);
}

int kvt_hot_item_encode(uint8_t *out, size_t cap,
			const struct kvt_hot_item *it, size_t *written)
{
	size_t need;

	if (!it || !written || it->ns_len > KVT_NS_MAX ||
	    it->key_len > 0xffff || it->tier < 1 || it->tier > 3 ||
	    (it->ns_len && !it->ns) || (it->key_len && !it->key))
		return KVT_EINVAL;
	need = kvt_hot_item_size(it->ns_len, it->key_len);
	*written = need;
	if (!out || cap < need)
		return KVT_ERANGE;
	out[0] = it->tier;
	out[1] = (uint8_t)it->ns_len;
	put_u16(out + 2, (uint16_t)it->key_len);
	put_u32(out + 4, 0);
	put_u64(out + 8, it->size);
	put_u64(out + 16, it->hits);
	put_u64(out + 24, it->ctime_s);
	put_u64(out + 32, it->atime_s);
	if (it->ns_len)
		memcpy(out + KVT_HOT_ITEM_FIXED, it->ns, it->ns_len);
	if (it->key_len)
		memcpy(out + KVT_HOT_ITEM_FIXED + it->ns_len, it->key,
		       it->key_len);
	return 0;
}

int kvt_hot_reply_head_parse(const uint8_t *body, size_t len,
			     uint32_t *count, uint64_t *now_s)
{
	if (!body || !count || !now_s || len < KVT_HOT_REPLY_FIXED ||
	    get_u32(body + 4) != 0)
		return KVT_EPROTO;
	*count = get_u32(body);
	*now_s = get_u64(body + 8);
	return 0;
}

int kvt_hot_item_parse(const uint8_t *p, size_t len, struct kvt_hot_item *it,
		       size_t *used)
{
	size_t need;

	if (!p || !it || !used || len < KVT_HOT_ITEM_FIXED || p[0] < 1 ||
	    p[0] > 3 || get_u32(p + 4) != 0)
		return KVT_EPROTO;
	need = kvt_hot_item_size(p[1], get_u16(p + 2));
	if (len < need)
		return KVT_EPROTO;
	it->tier = p[0];
	it->ns_len = p[1];
	it->key_len = get_u16(p + 2);
	it->size = get_u64(p + 8);
	it->hits = get_u64(p + 16);
	it->ctime_s = get_u64(p + 24);
	it->atime_s = get_u64(p + 32);
	it->ns = p + KVT_HOT_ITEM_FIXED;
	it->key = p + KVT_HOT_ITEM_FIXED + it->ns_len;
	*used = need;
	return 0;
}
