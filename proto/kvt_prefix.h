/*
 * kvt_prefix.h - prefix keys: the 32-byte key of every complete block of a
 * token sequence, chained so that a key names the whole prefix up to and
 * including its block.  proto/PROTOCOL.md ("Prefix keys") gives the scheme
 * in prose with test vectors; tests/vectors/prefix_keys.txt holds more.
 *
 * Pure: no I/O, no allocation, no global state; thread safe.
 *
 * The same prototype is declared in client/kvtier.h, which must stay
 * self-contained for installed users; the two declarations must remain
 * identical (the compiler checks it wherever both are included).
 */
#ifndef KVT_PREFIX_H
#define KVT_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "kvtier_errors.h"

/* Size of one prefix key in bytes (a SHA-256 digest). */
#define KVT_PREFIX_KEY_SIZE 32

/*
 * kvt_prefix_keys - computes the keys of the complete blocks of
 * tokens[0..ntokens) under namespace ns[0..ns_len).
 *
 * ns:           namespace bytes (model, dtype, layout...), need not be
 *               NUL-terminated; may be NULL when ns_len is 0.
 * tokens:       token ids; may be NULL when ntokens is 0.
 * block_tokens: tokens per block (B), at least 1.  Block i covers tokens
 *               [i*B, (i+1)*B); a trailing partial block gets no key.
 * keys:         receives up to max_keys keys; may be NULL when max_keys
 *               is 0.
 * nkeys:        receives the number of complete blocks, ntokens / B;
 *               must not be NULL.
 *
 * Returns 0 (keys[0..*nkeys) written), or:
 *   KVT_EINVAL  block_tokens is 0, ns_len > 255, nkeys is NULL, or ns,
 *               tokens or keys is NULL where a length says there is data
 *               (nothing written; *nkeys is 0 when nkeys is not NULL)
 *   KVT_ERANGE  max_keys < the number of complete blocks: keys[0..max_keys)
 *               are written and *nkeys holds the number needed
 */
int kvt_prefix_keys(const char *ns, size_t ns_len, const uint32_t *tokens,
		    size_t ntokens, unsigned block_tokens, uint8_t (*keys)[32],
		    size_t max_keys, size_t *nkeys);

#endif /* KVT_PREFIX_H */
