/*
 * kvtier_prefix.h - prefix keys: the 32-byte key of every complete block of
 * a token sequence, chained so that a key names the whole prefix up to and
 * including its block.  proto/PROTOCOL.md ("Prefix keys") gives the scheme
 * in prose with test vectors; tests/vectors/prefix_keys.txt holds more.
 *
 * A public header (installed; client/kvtier.h includes it), and the one
 * declaration of kvt_prefix_keys(), which the library, the tool and the
 * daemon's layers share.  Pure: no I/O, no allocation, no global state;
 * thread safe.
 */
#ifndef KVTIER_PREFIX_H
#define KVTIER_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "kvtier_defs.h"
#include "kvtier_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * kvt_prefix_keys - computes the 32-byte prefix key of every complete block
 * of tokens[0..ntokens) under namespace ns[0..ns_len).  Local: needs no
 * connection, does no I/O and allocates nothing.  Thread safe.
 *
 *   root    = SHA-256("kvtier-prefix-v1" || u8 ns_len || ns)
 *   key(i)  = SHA-256(key(i-1) || token ids of block i as little-endian u32)
 *   key(-1) = root
 *
 * ns:           namespace bytes, need not be NUL-terminated; may be NULL
 *               when ns_len is 0.  It is hashed, so it may be longer than
 *               the daemon's namespaces, but at most 255 bytes.  The
 *               namespace the keys are stored under is a good choice.
 * tokens:       token ids; may be NULL when ntokens is 0.
 * block_tokens: tokens per block (B), at least 1.  Block i covers tokens
 *               [i*B, (i+1)*B); a trailing partial block gets no key.
 * keys:         caller's array of max_keys keys; may be NULL when max_keys
 *               is 0 (a way to learn the count).
 * nkeys:        receives the number of complete blocks, ntokens / B.
 *
 * Returns 0 (keys[0..*nkeys) written), or:
 *   KVT_EINVAL  block_tokens is 0, ns_len > 255, nkeys is NULL, or ns,
 *               tokens or keys is NULL with a nonzero length (nothing
 *               written; *nkeys is 0 when nkeys is not NULL)
 *   KVT_ERANGE  max_keys is smaller than the number of complete blocks:
 *               keys[0..max_keys) are written, *nkeys is the number needed
 */
int kvt_prefix_keys(const char *ns, size_t ns_len, const uint32_t *tokens,
		    size_t ntokens, unsigned block_tokens, uint8_t (*keys)[32],
		    size_t max_keys, size_t *nkeys);

#ifdef __cplusplus
}
#endif
#endif /* KVTIER_PREFIX_H */
