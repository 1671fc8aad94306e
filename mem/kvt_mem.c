/*
 * kvt_mem.c - memory for block values (kvt_mem.h).
 */
#include <stdlib.h>

#include "kvt_arena.h"
#include "kvt_mem.h"

/* Written once before any block exists (kvt_mem.h), then only read. */
static struct kvt_arena *mem_arena;
static size_t mem_threshold;

void kvt_mem_set_arena(struct kvt_arena *a, size_t threshold)
{
	mem_arena = a;
	mem_threshold = threshold;
}

struct kvt_arena *kvt_mem_arena(void)
{
	return mem_arena;
}

void *kvt_block_alloc(size_t len)
{
	void *p;

	if (len == 0)
		len = 1;
	if (mem_arena && len >= mem_threshold) {
		p = kvt_arena_alloc(mem_arena, len);
		if (p)
			return p;
	}
	return malloc(len);
}

void kvt_block_free(void *p)
{
	if (!p)
		return;
	if (kvt_arena_contains(mem_arena, p))
		kvt_arena_free(mem_arena, p);
	else
		free(p);
}

int kvt_block_shared(const void *p)
{
	return kvt_arena_contains(mem_arena, p);
}
