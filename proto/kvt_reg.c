/*
 * kvt_reg.c - wire format of registered client memory (kvt_reg.h,
 * PROTOCOL.md "Registered memory").  Caller buffers only, no allocation,
 * so the daemon, the library and the fuzz harness share it.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "kvt_le.h"
#include "kvt_reg.h"

#define KEY_FIELD_MAX 0xffffu

/* ---- REGISTER and UNREGISTER ------------------------------------------ */

void kvt_reg_req_encode(uint8_t out[KVT_REG_REQ_SIZE],
			const struct kvt_reg_req *r)
{
	put_u64(out, r->offset);
	put_u64(out + 8, r->length);
	put_u32(out + 16, r->flags);
	put_u32(out + 20, 0);
}

int kvt_reg_req_parse(const uint8_t *body, size_t len, struct kvt_reg_req *r)
{
	struct kvt_reg_req t;

	if (!r || (!body && len))
		return KVT_EINVAL;
	if (len != KVT_REG_REQ_SIZE || get_u32(body + 20) != 0)
		return KVT_EBADREQ;
	t.offset = get_u64(body);
	t.length = get_u64(body + 8);
	t.flags = get_u32(body + 16);
	/* Unknown flags may mean something to a later daemon: refuse them. */
	if (t.flags & ~KVT_REGION_READONLY)
		return KVT_EBADREQ;
	if (t.length > UINT64_MAX - t.offset)
		return KVT_EBADREQ;
	*r = t;
	return 0;
}

void kvt_reg_reply_encode(uint8_t out[KVT_REG_REPLY_SIZE],
			  const struct kvt_reg_reply *r)
{
	put_u32(out, r->region);
	put_u32(out + 4, r->flags);
	put_u64(out + 8, r->length);
}

int kvt_reg_reply_parse(const uint8_t *body, size_t len,
			struct kvt_reg_reply *r)
{
	struct kvt_reg_reply t;

	if (!r || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_REG_REPLY_SIZE)
		return KVT_EPROTO;
	t.region = get_u32(body);
	t.flags = get_u32(body + 4);
	t.length = get_u64(body + 8);
	if (t.region == 0 ||
	    (t.flags & ~(KVT_REGION_READONLY | KVT_REGION_SEALED)))
		return KVT_EPROTO;
	*r = t;
	return 0;
}

void kvt_unreg_req_encode(uint8_t out[KVT_UNREG_REQ_SIZE], uint32_t region)
{
	put_u32(out, region);
	put_u32(out + 4, 0);
}

int kvt_unreg_req_parse(const uint8_t *body, size_t len, uint32_t *region)
{
	if (!region || (!body && len))
		return KVT_EINVAL;
	if (len != KVT_UNREG_REQ_SIZE || get_u32(body) == 0 ||
	    get_u32(body + 4) != 0)
		return KVT_EBADREQ;
	*region = get_u32(body);
	return 0;
}

/* ---- MGET_TO and MPUT_FROM requests ------------------------------------ */

size_t kvt_xfer_head_size(int put, size_t ns_len)
{
	return (put ? KVT_XFER_PUT_FIXED : KVT_XFER_GET_FIXED) + ns_len;
}

size_t kvt_xfer_key_size(size_t key_len, size_t nseg)
{
	return KVT_XFER_KEY_FIXED + key_len + nseg * KVT_XFER_SEG_SIZE;
}

int kvt_xfer_head_encode(uint8_t *out, const struct kvt_xfer_head *h)
{
	size_t fixed;

	if (!out || !h || h->ns_len > KVT_NS_MAX || (!h->ns && h->ns_len) ||
	    h->count > KVT_XFER_KEYS_MAX || h->dtype >= KVT_DTYPE_END_ ||
	    (!h->put && (h->dtype || h->ttl_s)))
		return KVT_EINVAL;
	out[0] = (uint8_t)h->ns_len;
	out[1] = h->put ? h->dtype : 0;
	put_u16(out + 2, (uint16_t)h->count);
	fixed = KVT_XFER_GET_FIXED;
	if (h->put) {
		put_u32(out + 4, h->ttl_s);
		fixed = KVT_XFER_PUT_FIXED;
	}
	if (h->ns_len)
		memcpy(out + fixed, h->ns, h->ns_len);
	return 0;
}

int kvt_xfer_key_encode(uint8_t *out, const void *key, size_t key_len,
			size_t nseg)
{
	if (!out || !key || key_len == 0 || key_len > KEY_FIELD_MAX ||
	    nseg > KVT_XFER_KEY_SEGS_MAX)
		return KVT_EINVAL;
	put_u16(out, (uint16_t)key_len);
	memcpy(out + 2, key, key_len);
	put_u16(out + 2 + key_len, (uint16_t)nseg);
	return 0;
}

void kvt_xfer_seg_encode(uint8_t out[KVT_XFER_SEG_SIZE],
			 const struct kvt_xfer_seg *s)
{
	put_u32(out, s->region);
	put_u32(out + 4, 0);
	put_u64(out + 8, s->offset);
	put_u64(out + 16, s->length);
}

int kvt_xfer_req_parse(const uint8_t *body, size_t len, int put,
		       const struct kvt_limits *lim, struct kvt_xfer_req *r)
{
	size_t fixed = put ? KVT_XFER_PUT_FIXED : KVT_XFER_GET_FIXED;
	size_t ns_len, count, off, nsegs = 0;

	if (!lim || !r || (!body && len))
		return KVT_EINVAL;
	if (len < fixed)
		return KVT_EBADREQ;
	ns_len = body[0];
	count = get_u16(body + 2);
	/* Reserved in MGET_TO; the dtype in MPUT_FROM. */
	if (put ? body[1] >= KVT_DTYPE_END_ : body[1] != 0)
		return KVT_EBADREQ;
	/*
	 * Limits first, as for the other bodies: the counts bound the work
	 * (and the memory) one request makes the daemon spend.
	 */
	if (count > KVT_XFER_KEYS_MAX || ns_len > lim->max_ns)
		return KVT_ETOOBIG;
	if (fixed + ns_len > len)
		return KVT_EBADREQ;
	off = fixed + ns_len;
	for (size_t i = 0; i < count; i++) {
		size_t key_len, nseg;
		uint64_t total = 0;

		if (len - off < 2)
			return KVT_EBADREQ;
		key_len = get_u16(body + off);
		if (key_len == 0)
			return KVT_EBADREQ;
		if (key_len > lim->max_key)
			return KVT_ETOOBIG;
		if (len - off - 2 < key_len + 2)
			return KVT_EBADREQ;
		off += 2 + key_len;
		nseg = get_u16(body + off);
		off += 2;
		if (nseg > KVT_XFER_KEY_SEGS_MAX ||
		    nsegs + nseg > KVT_XFER_SEGS_MAX)
			return KVT_ETOOBIG;
		if ((len - off) / KVT_XFER_SEG_SIZE < nseg)
			return KVT_EBADREQ;
		for (size_t s = 0; s < nseg; s++) {
			const uint8_t *p = body + off + s * KVT_XFER_SEG_SIZE;
			uint64_t l = get_u64(p + 16);

			/* Region 0 is never given out. */
			if (get_u32(p) == 0 || get_u32(p + 4) != 0)
				return KVT_EBADREQ;
			if (l > UINT64_MAX - get_u64(p + 8))
				return KVT_EBADREQ;
			total = l > UINT64_MAX - total ? UINT64_MAX : total + l;
		}
		if (put && total > lim->max_value)
			return KVT_ETOOBIG;
		off += nseg * KVT_XFER_SEG_SIZE;
		nsegs += nseg;
	}
	if (off != len)
		return KVT_EBADREQ;
	r->h.put = put;
	r->h.ns = body + fixed;
	r->h.ns_len = ns_len;
	r->h.count = count;
	r->h.dtype = put ? body[1] : 0;
	r->h.ttl_s = put ? get_u32(body + 4) : 0;
	r->nsegs = nsegs;
	r->keys = body + fixed + ns_len;
	r->keys_len = len - fixed - ns_len;
	return 0;
}

int kvt_xfer_req_key(const struct kvt_xfer_req *r, size_t *pos,
		     struct kvt_xfer_key *k)
{
	const uint8_t *p;
	size_t key_len;

	if (*pos >= r->keys_len)
		return 0;
	/* The parser checked every length, so these reads stay in bounds. */
	p = r->keys + *pos;
	key_len = get_u16(p);
	assert(key_len > 0 && r->keys_len - *pos >= 4 + key_len);
	k->k.ns = r->h.ns;
	k->k.ns_len = r->h.ns_len;
	k->k.key = p + 2;
	k->k.key_len = key_len;
	k->nseg = get_u16(p + 2 + key_len);
	k->segs = p + 4 + key_len;
	assert(r->keys_len - *pos - 4 - key_len >=
	       k->nseg * KVT_XFER_SEG_SIZE);
	k->total = 0;
	for (size_t i = 0; i < k->nseg; i++) {
		uint64_t l = get_u64(k->segs + i * KVT_XFER_SEG_SIZE + 16);

		k->total = l > UINT64_MAX - k->total ? UINT64_MAX
						      : k->total + l;
	}
	*pos += 4 + key_len + k->nseg * KVT_XFER_SEG_SIZE;
	return 1;
}

void kvt_xfer_key_seg(const struct kvt_xfer_key *k, size_t i,
		      struct kvt_xfer_seg *s)
{
	const uint8_t *p = k->segs + i * KVT_XFER_SEG_SIZE;

	assert(i < k->nseg);
	s->region = get_u32(p);
	s->offset = get_u64(p + 8);
	s->length = get_u64(p + 16);
}

/* ---- the reply ---------------------------------------------------------- */

size_t kvt_xfer_reply_size(size_t n)
{
	return KVT_XFER_REPLY_FIXED + n * KVT_XFER_RESULT_SIZE;
}

void kvt_xfer_reply_head_encode(uint8_t out[KVT_XFER_REPLY_FIXED],
				uint32_t count)
{
	put_u32(out, count);
	put_u32(out + 4, 0);
}

void kvt_xfer_result_encode(uint8_t out[KVT_XFER_RESULT_SIZE],
			    const struct kvt_xfer_result *r)
{
	out[0] = r->status;
	out[1] = r->dtype;
	put_u16(out + 2, 0);
	put_u32(out + 4, r->code);
	put_u64(out + 8, r->length);
}

int kvt_xfer_reply_head_parse(const uint8_t *body, size_t len,
			      uint32_t *count)
{
	uint32_t n;

	if (!count || (!body && len))
		return KVT_EINVAL;
	/* A reply is the daemon's fault if malformed, hence EPROTO. */
	if (len < KVT_XFER_REPLY_FIXED || get_u32(body + 4) != 0)
		return KVT_EPROTO;
	n = get_u32(body);
	if (n > KVT_XFER_KEYS_MAX || len != kvt_xfer_reply_size(n))
		return KVT_EPROTO;
	*count = n;
	return 0;
}

int kvt_xfer_result_parse(const uint8_t p[KVT_XFER_RESULT_SIZE],
			  struct kvt_xfer_result *r)
{
	struct kvt_xfer_result t;

	if (!p || !r)
		return KVT_EINVAL;
	t.status = p[0];
	t.dtype = p[1];
	t.code = get_u32(p + 4);
	t.length = get_u64(p + 8);
	if (t.status >= KVT_XFER_STATUS_END_ || get_u16(p + 2) != 0 ||
	    (t.status == KVT_XFER_ERROR) != (t.code != 0))
		return KVT_EPROTO;
	*r = t;
	return 0;
}
