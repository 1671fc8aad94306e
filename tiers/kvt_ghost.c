/* kvt_ghost.c - see kvt_ghost.h. */
#include "kvt_ghost.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier_errors.h"

struct gen {
	uint64_t *keys; /* 0 = empty slot */
	uint64_t *vals;
	size_t count;
};

struct kvt_ghost {
	struct gen cur, prev;
	size_t per_gen; /* entries before a generation turns over */
	size_t mask;	/* slots - 1; slots = 2 * per_gen rounded up */
};

static int gen_alloc(struct gen *g, size_t slots)
{
	g->keys = calloc(slots, sizeof(*g->keys));
	g->vals = calloc(slots, sizeof(*g->vals));
	g->count = 0;
	if (!g->keys || !g->vals) {
		free(g->keys);
		free(g->vals);
		g->keys = g->vals = NULL;
		return -ENOMEM;
	}
	return 0;
}

static void gen_free(struct gen *g)
{
	free(g->keys);
	free(g->vals);
}

int kvt_ghost_new(struct kvt_ghost **out, size_t capacity)
{
	struct kvt_ghost *g;
	size_t slots = 4;

	if (!out || capacity < 2)
		return KVT_EINVAL;
	*out = NULL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->per_gen = capacity / 2;
	/* At most half full: probes stay short. */
	while (slots < 2 * g->per_gen)
		slots *= 2;
	g->mask = slots - 1;
	if (gen_alloc(&g->cur, slots) || gen_alloc(&g->prev, slots)) {
		kvt_ghost_free(g);
		return -ENOMEM;
	}
	*out = g;
	return 0;
}

void kvt_ghost_free(struct kvt_ghost *g)
{
	if (!g)
		return;
	gen_free(&g->cur);
	gen_free(&g->prev);
	free(g);
}

/* Slot of hash in g, or of the empty slot where it would go. */
static size_t probe(const struct gen *t, size_t mask, uint64_t hash)
{
	size_t i = (size_t)hash & mask;

	while (t->keys[i] && t->keys[i] != hash)
		i = (i + 1) & mask;
	return i;
}

void kvt_ghost_put(struct kvt_ghost *g, uint64_t hash, uint64_t val)
{
	size_t i;

	if (hash == 0)
		hash = 1; /* 0 marks empty slots */
	i = probe(&g->cur, g->mask, hash);
	if (!g->cur.keys[i]) {
		if (g->cur.count == g->per_gen) {
			/* Turn over: forget the older half, reuse its memory. */
			struct gen old = g->prev;
			g->prev = g->cur;
			g->cur = old;
			memset(g->cur.keys, 0, (g->mask + 1) * sizeof(uint64_t));
			g->cur.count = 0;
			i = probe(&g->cur, g->mask, hash);
		}
		g->cur.keys[i] = hash;
		g->cur.count++;
	}
	g->cur.vals[i] = val;
}

bool kvt_ghost_get(const struct kvt_ghost *g, uint64_t hash, uint64_t *val)
{
	const struct gen *gens[2] = { &g->cur, &g->prev };

	if (hash == 0)
		hash = 1;
	for (int k = 0; k < 2; k++) {
		size_t i = probe(gens[k], g->mask, hash);
		if (gens[k]->keys[i]) {
			if (val)
				*val = gens[k]->vals[i];
			return true;
		}
	}
	return false;
}
