/*
 * kvt_prefix.c - prefix keys (see kvt_prefix.h and PROTOCOL.md).
 *
 *   root    = SHA-256("kvtier-prefix-v1" || u8 ns_len || ns)
 *   key(i)  = SHA-256(key(i-1) || block i's token ids as LE u32)
 *   key(-1) = root
 */

/*
 * OpenSSL 3 marks the SHA256_Init/Update/Final family deprecated in favour
 * of EVP_MD_CTX, but an EVP context is heap-allocated by libcrypto and this
 * module promises not to allocate.  The low-level context lives on our
 * stack and computes the same digest.  Defined before any OpenSSL header so
 * that -Werror builds are not broken by the deprecation attribute.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include <string.h>

#include <openssl/sha.h>

#include "kvtier_prefix.h"

/* Domain-separation tag hashed into every root; exactly 16 ASCII bytes. */
static const char prefix_tag[16] = { 'k', 'v', 't', 'i', 'e', 'r', '-', 'p',
				     'r', 'e', 'f', 'i', 'x', '-', 'v', '1' };

/*
 * Token ids are converted to little-endian into this many at a time, so
 * that the digest sees one update per chunk rather than one per token,
 * whatever the host's byte order.  1 KiB of stack.
 */
#define PREFIX_CHUNK_TOKENS 256

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void prefix_root(const char *ns, size_t ns_len,
			uint8_t out[KVT_PREFIX_KEY_SIZE])
{
	SHA256_CTX ctx;
	uint8_t len8 = (uint8_t)ns_len;

	/* The software SHA-256 cannot fail; its return values are always 1. */
	SHA256_Init(&ctx);
	SHA256_Update(&ctx, prefix_tag, sizeof(prefix_tag));
	SHA256_Update(&ctx, &len8, 1);
	if (ns_len)
		SHA256_Update(&ctx, ns, ns_len);
	SHA256_Final(out, &ctx);
}

/* out = SHA-256(prev || tokens[0..n) as LE u32); out may alias prev. */
static void prefix_block(const uint8_t prev[KVT_PREFIX_KEY_SIZE],
			 const uint32_t *tokens, size_t n,
			 uint8_t out[KVT_PREFIX_KEY_SIZE])
{
	uint8_t buf[PREFIX_CHUNK_TOKENS * 4];
	SHA256_CTX ctx;

	SHA256_Init(&ctx);
	SHA256_Update(&ctx, prev, KVT_PREFIX_KEY_SIZE);
	while (n > 0) {
		size_t m = n < PREFIX_CHUNK_TOKENS ? n : PREFIX_CHUNK_TOKENS;

		for (size_t j = 0; j < m; j++)
			put_le32(buf + 4 * j, tokens[j]);
		SHA256_Update(&ctx, buf, 4 * m);
		tokens += m;
		n -= m;
	}
	SHA256_Final(out, &ctx);
}

int kvt_prefix_keys(const char *ns, size_t ns_len, const uint32_t *tokens,
		    size_t ntokens, unsigned block_tokens, uint8_t (*keys)[32],
		    size_t max_keys, size_t *nkeys)
{
	uint8_t prev[KVT_PREFIX_KEY_SIZE];
	size_t nblocks, n;

	if (!nkeys)
		return KVT_EINVAL;
	*nkeys = 0;
	if (block_tokens == 0 || ns_len > 255 || (!ns && ns_len) ||
	    (!tokens && ntokens) || (!keys && max_keys))
		return KVT_EINVAL;

	nblocks = ntokens / block_tokens;
	n = nblocks < max_keys ? nblocks : max_keys;
	prefix_root(ns, ns_len, prev);
	for (size_t i = 0; i < n; i++) {
		prefix_block(prev, tokens + i * block_tokens, block_tokens,
			     prev);
		memcpy(keys[i], prev, sizeof(prev));
	}
	*nkeys = nblocks;
	return nblocks > max_keys ? KVT_ERANGE : 0;
}
