/* kvt_tier.c - the one in-memory hash of a key (kvt_tier.h). */
#include "kvt_tier.h"

#include <xxhash.h>

uint64_t kvt_key_hash(const struct kvt_key *k)
{
	/* A valid pointer even for empty strings, whose pointer may be NULL. */
	static const uint8_t empty[1];
	const uint8_t *ns = k->ns_len ? k->ns : empty;
	const uint8_t *key = k->key_len ? k->key : empty;

	return XXH3_64bits_withSeed(key, k->key_len,
				    XXH3_64bits(ns, k->ns_len));
}
