/*
 * kvt_shm.c - wire format of the shared-memory data path (kvt_shm.h).
 */
#include <stdint.h>
#include <string.h>

#include "kvt_le.h"
#include "kvt_shm.h"

void kvt_shm_hello_encode(uint8_t out[16], const struct kvt_shm_hello *h)
{
	put_u64(out, h->arena_size);
	put_u64(out + 8, h->threshold);
}

int kvt_shm_hello_parse(const uint8_t *body, size_t len,
			struct kvt_shm_hello *h)
{
	if (!h || (!body && len))
		return KVT_EINVAL;
	memset(h, 0, sizeof(*h));
	if (len < KVT_HELLO_REPLY_SHM_SIZE)
		return 0;
	h->arena_size = get_u64(body + KVT_HELLO_REPLY_SIZE);
	h->threshold = get_u64(body + KVT_HELLO_REPLY_SIZE + 8);
	return 0;
}

void kvt_shm_lease_encode(uint8_t out[KVT_SHM_LEASE_SIZE],
			  const struct kvt_shm_lease *l)
{
	put_u64(out, l->id);
	put_u64(out + 8, l->offset);
	put_u64(out + 16, l->len);
}

int kvt_shm_lease_parse(const uint8_t *body, size_t len, uint64_t arena_size,
			struct kvt_shm_lease *l)
{
	struct kvt_shm_lease t;

	if (!l || !body || len != KVT_SHM_LEASE_SIZE)
		return KVT_EPROTO;
	t.id = get_u64(body);
	t.offset = get_u64(body + 8);
	t.len = get_u64(body + 16);
	/* Written so that no sum can wrap. */
	if (t.offset > arena_size || t.len > arena_size - t.offset)
		return KVT_EPROTO;
	*l = t;
	return 0;
}

size_t kvt_shm_release_req_size(size_t n)
{
	return KVT_SHM_RELEASE_FIXED + 8 * n;
}

int kvt_shm_release_req_encode(uint8_t *out, size_t cap, const uint64_t *ids,
			       size_t n, size_t *written)
{
	size_t need;

	if (!written || (!ids && n))
		return KVT_EINVAL;
	if (n > KVT_SHM_RELEASE_MAX)
		return KVT_ETOOBIG;
	need = kvt_shm_release_req_size(n);
	*written = need;
	if (!out || cap < need)
		return KVT_ERANGE;
	put_u32(out, (uint32_t)n);
	put_u32(out + 4, 0);
	for (size_t i = 0; i < n; i++)
		put_u64(out + KVT_SHM_RELEASE_FIXED + 8 * i, ids[i]);
	return 0;
}

int kvt_shm_release_req_parse(const uint8_t *body, size_t len,
			      const uint8_t **ids, size_t *n)
{
	uint32_t count;

	if (!ids || !n || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_SHM_RELEASE_FIXED || get_u32(body + 4) != 0)
		return KVT_EBADREQ;
	count = get_u32(body);
	if (count > KVT_SHM_RELEASE_MAX)
		return KVT_ETOOBIG;
	if (len != kvt_shm_release_req_size(count))
		return KVT_EBADREQ;
	*ids = body + KVT_SHM_RELEASE_FIXED;
	*n = count;
	return 0;
}

uint64_t kvt_shm_release_id(const uint8_t *ids, size_t i)
{
	return get_u64(ids + 8 * i);
}

int kvt_shm_alloc_req_parse(const uint8_t *body, size_t len,
			    const struct kvt_limits *lim, uint64_t *value_len,
			    const uint8_t **prefix, size_t *prefix_len)
{
	struct kvt_put_req pr;
	uint64_t vlen;
	int rc;

	if (!lim || !value_len || !prefix || !prefix_len || (!body && len))
		return KVT_EINVAL;
	if (len < KVT_SHM_ALLOC_FIXED)
		return KVT_EBADREQ;
	vlen = get_u64(body);
	rc = kvt_put_req_parse(body + KVT_SHM_ALLOC_FIXED,
			       len - KVT_SHM_ALLOC_FIXED, lim, &pr);
	if (rc < 0)
		return rc;
	/* The prefix must end where the value would start. */
	if (pr.value_len != 0)
		return KVT_EBADREQ;
	if (vlen > lim->max_value ||
	    vlen > lim->max_body - (len - KVT_SHM_ALLOC_FIXED))
		return KVT_ETOOBIG;
	*value_len = vlen;
	*prefix = body + KVT_SHM_ALLOC_FIXED;
	*prefix_len = len - KVT_SHM_ALLOC_FIXED;
	return 0;
}

void kvt_shm_alloc_req_encode_len(uint8_t out[KVT_SHM_ALLOC_FIXED],
				  uint64_t value_len)
{
	put_u64(out, value_len);
}

void kvt_shm_slot_encode(uint8_t out[KVT_SHM_SLOT_SIZE],
			 const struct kvt_shm_slot *s)
{
	put_u64(out, s->id);
	put_u64(out + 8, s->offset);
}

int kvt_shm_slot_parse(const uint8_t *body, size_t len,
		       struct kvt_shm_slot *s)
{
	if (!s || !body || len != KVT_SHM_SLOT_SIZE)
		return KVT_EPROTO;
	s->id = get_u64(body);
	s->offset = get_u64(body + 8);
	return 0;
}

void kvt_shm_commit_req_encode(uint8_t out[KVT_SHM_COMMIT_SIZE], uint64_t id)
{
	put_u64(out, id);
}

int kvt_shm_commit_req_parse(const uint8_t *body, size_t len, uint64_t *id)
{
	if (!id || (!body && len))
		return KVT_EINVAL;
	if (len != KVT_SHM_COMMIT_SIZE)
		return KVT_EBADREQ;
	*id = get_u64(body);
	return 0;
}
