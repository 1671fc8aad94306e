/*
 * kvt_l4_value.c - L4's pure parts: CRC16 and hash slots as the Redis
 * Cluster specification defines them, key names, the stored value header,
 * and the latency histogram.  No I/O and no state, so that the test vectors
 * and every corruption case are checked without a cluster.
 */

/*
 * OpenSSL 3 deprecates SHA256_Init/Update/Final in favour of EVP contexts,
 * which libcrypto allocates; the low-level context lives on our stack and
 * computes the same digest (as in proto/kvt_prefix.c).
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <assert.h>
#include <string.h>

#include <openssl/sha.h>
#include <xxhash.h>

#include "kvt_codec.h"
#include "kvt_l4_int.h"
#include "kvt_le.h"
#include "kvtier_errors.h"

#define L4_MAGIC 0x344c564bu /* "KVL4" little endian */
#define L4_VERSION 1

/* Domain separation: the two digests can never be equal for one input. */
static const char ns_tag[12] = { 'k', 'v', 't', 'i', 'e', 'r',
				 '-', 'l', '4', '-', 'n', 's' };
static const char key_tag[13] = { 'k', 'v', 't', 'i', 'e', 'r', '-',
				  'l', '4', '-', 'k', 'e', 'y' };

uint16_t kvt_l4_crc16(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint16_t crc = 0;

	/*
	 * Bit at a time: keys are ~70 bytes, so a table would save nothing
	 * measurable, and this form is the specification's definition.
	 */
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
					     : (uint16_t)(crc << 1);
	}
	return crc;
}

unsigned kvt_l4_key_slot(const void *name, size_t len)
{
	const uint8_t *p = name;
	const uint8_t *open = memchr(p, '{', len);

	if (open) {
		size_t from = (size_t)(open - p) + 1;
		const uint8_t *close = memchr(p + from, '}', len - from);

		/* "{}" (nothing between) hashes the whole name. */
		if (close && close > p + from)
			return kvt_l4_crc16(p + from,
					    (size_t)(close - (p + from))) &
			       (KVT_L4_SLOTS - 1);
	}
	return kvt_l4_crc16(p, len) & (KVT_L4_SLOTS - 1);
}

void kvt_l4i_ns_digest(const uint8_t *ns, size_t ns_len,
		       uint8_t out[KVT_L4_DIGEST_SIZE])
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	uint8_t len8 = (uint8_t)ns_len;
	SHA256_CTX c;

	assert(ns_len <= KVT_L4_NS_MAX);
	SHA256_Init(&c);
	SHA256_Update(&c, ns_tag, sizeof(ns_tag));
	SHA256_Update(&c, &len8, 1);
	if (ns_len)
		SHA256_Update(&c, ns, ns_len);
	SHA256_Final(md, &c);
	memcpy(out, md, KVT_L4_DIGEST_SIZE);
}

static void key_digest(const struct kvt_key *k,
		       uint8_t out[KVT_L4_DIGEST_SIZE])
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	uint8_t len8 = (uint8_t)k->ns_len;
	SHA256_CTX c;

	assert(k->ns_len <= KVT_L4_NS_MAX && k->key_len <= KVT_L4_KEY_MAX);
	SHA256_Init(&c);
	SHA256_Update(&c, key_tag, sizeof(key_tag));
	SHA256_Update(&c, &len8, 1);
	if (k->ns_len)
		SHA256_Update(&c, k->ns, k->ns_len);
	if (k->key_len)
		SHA256_Update(&c, k->key, k->key_len);
	SHA256_Final(md, &c);
	memcpy(out, md, KVT_L4_DIGEST_SIZE);
}

static char *put_hex(char *o, const uint8_t *d, size_t n)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		*o++ = hx[d[i] >> 4];
		*o++ = hx[d[i] & 15];
	}
	return o;
}

size_t kvt_l4_block_name(const struct kvt_key *k, char out[KVT_L4_NAME_MAX])
{
	uint8_t d[KVT_L4_DIGEST_SIZE];
	char *o = out;

	memcpy(o, "kvt:", 4);
	o += 4;
	kvt_l4i_ns_digest(k->ns, k->ns_len, d);
	o = put_hex(o, d, sizeof(d));
	*o++ = ':';
	key_digest(k, d);
	o = put_hex(o, d, sizeof(d));
	*o = '\0';
	return (size_t)(o - out);
}

size_t kvt_l4_gen_name(const uint8_t *ns, size_t ns_len,
		       char out[KVT_L4_NAME_MAX])
{
	uint8_t d[KVT_L4_DIGEST_SIZE];
	char *o = out;

	memcpy(o, "kvt:", 4);
	o += 4;
	kvt_l4i_ns_digest(ns, ns_len, d);
	o = put_hex(o, d, sizeof(d));
	memcpy(o, ":gen", 5);
	return (size_t)(o + 4 - out);
}

static uint64_t value_sum(const uint8_t *hdr, const uint8_t *payload,
			  size_t len)
{
	return XXH3_64bits_withSeed(payload, len, XXH3_64bits(hdr, 64));
}

void kvt_l4_value_header(uint8_t hdr[KVT_L4_HDR_SIZE],
			 const struct kvt_key *k, uint64_t gen,
			 uint8_t codec, uint8_t dtype, uint64_t raw_len,
			 const uint8_t *payload, size_t len)
{
	put_u32(hdr, L4_MAGIC);
	put_u16(hdr + 4, L4_VERSION);
	hdr[6] = codec;
	hdr[7] = dtype;
	put_u64(hdr + 8, raw_len);
	put_u64(hdr + 16, len);
	put_u64(hdr + 24, gen);
	kvt_l4i_ns_digest(k->ns, k->ns_len, hdr + 32);
	key_digest(k, hdr + 48);
	put_u64(hdr + 64, value_sum(hdr, payload, len));
}

/* The header checks that need no payload (kvt_l4_value_check's first
 * half, and all a probe can do). */
static int header_check(const uint8_t *v, const struct kvt_key *k)
{
	uint8_t d[KVT_L4_DIGEST_SIZE];

	/* Cheap structural checks first, the digests last. */
	if (get_u32(v) != L4_MAGIC || get_u16(v + 4) != L4_VERSION ||
	    v[6] >= KVT_CODEC_END_ ||
	    get_u64(v + 16) > KVT_L4_VALUE_MAX - KVT_L4_HDR_SIZE)
		return KVT_ECORRUPT;
	kvt_l4i_ns_digest(k->ns, k->ns_len, d);
	if (memcmp(d, v + 32, sizeof(d)) != 0)
		return KVT_ECORRUPT;
	key_digest(k, d);
	if (memcmp(d, v + 48, sizeof(d)) != 0)
		return KVT_ECORRUPT;
	return 0;
}

int kvt_l4i_header_gen(const uint8_t *v, size_t len,
		       const struct kvt_key *k, uint64_t *gen)
{
	if (!v || len != KVT_L4_HDR_SIZE || header_check(v, k) != 0)
		return KVT_ECORRUPT;
	*gen = get_u64(v + 24);
	return 0;
}

int kvt_l4_value_check(const uint8_t *v, size_t len,
		       const struct kvt_key *k,
		       struct kvt_l4_value_info *info)
{
	if (!v || len < KVT_L4_HDR_SIZE ||
	    get_u64(v + 16) != len - KVT_L4_HDR_SIZE || header_check(v, k) ||
	    value_sum(v, v + KVT_L4_HDR_SIZE, len - KVT_L4_HDR_SIZE) !=
		    get_u64(v + 64))
		return KVT_ECORRUPT;
	info->codec = v[6];
	info->dtype = v[7];
	info->raw_len = get_u64(v + 8);
	info->gen = get_u64(v + 24);
	info->payload_len = len - KVT_L4_HDR_SIZE;
	return 0;
}

/* ---- latency histogram ---------------------------------------------------
 * The daemon's kvt_hist is a layer above; this is the same log-linear idea
 * (exact below 16 us, then 8 buckets per power of two: within 12.5%) with
 * atomic buckets, because every worker thread records into one histogram.
 */

static unsigned hist_bucket(uint64_t us)
{
	unsigned e, b;

	if (us < 16)
		return (unsigned)us;
	e = 63u - (unsigned)__builtin_clzll(us); /* >= 4 */
	b = 16 + (e - 4) * 8 + (unsigned)((us >> (e - 3)) & 7);
	return b < L4_HIST_BUCKETS ? b : L4_HIST_BUCKETS - 1;
}

static uint64_t hist_upper(unsigned b)
{
	unsigned e, sub;

	if (b < 16)
		return b;
	e = (b - 16) / 8 + 4;
	sub = (b - 16) % 8;
	return ((uint64_t)(8 + sub + 1) << (e - 3)) - 1;
}

void kvt_l4i_hist_add(struct l4_hist *h, uint64_t us)
{
	atomic_fetch_add_explicit(&h->b[hist_bucket(us)], 1,
				  memory_order_relaxed);
}

uint64_t kvt_l4i_hist_quantile(const struct l4_hist *h, double q)
{
	uint64_t n[L4_HIST_BUCKETS], total = 0, seen = 0, want;

	for (unsigned i = 0; i < L4_HIST_BUCKETS; i++) {
		n[i] = atomic_load_explicit(&h->b[i], memory_order_relaxed);
		total += n[i];
	}
	if (total == 0)
		return 0;
	want = (uint64_t)(q * (double)total + 0.999999);
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < L4_HIST_BUCKETS; i++) {
		seen += n[i];
		if (seen >= want)
			return hist_upper(i);
	}
	return hist_upper(L4_HIST_BUCKETS - 1);
}
