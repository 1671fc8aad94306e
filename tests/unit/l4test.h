/*
 * l4test.h - what the L4 cluster tests share: sets of blocks with known
 * bytes (put, get and compared byte for byte), and raw access to the
 * cluster with hiredis, as another program would have (to damage or
 * replace stored values behind L4's back).
 *
 * Include after cmocka.h, hiredis.h, kvt_l4.h and l4cluster.h, with the
 * includer defining `static struct l4c g_cl` (the running cluster) and
 * `static const char *g_pw` (the nodes' password, NULL for none).
 */
#ifndef L4TEST_H
#define L4TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Header-only helpers: an includer need not use them all. */
#define L4T_FN __attribute__((unused)) static

L4T_FN uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

L4T_FN void fill(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

L4T_FN struct kvt_l4 *open_cfg(struct kvt_l4_config *cfg)
{
	struct kvt_l4 *l4 = NULL;
	char msg[256] = "";

	cfg->errmsg = msg;
	cfg->errmsg_len = sizeof(msg);
	if (kvt_l4_open(&l4, cfg) != 0)
		fail_msg("kvt_l4_open: %s", msg);
	cfg->errmsg = NULL;
	return l4;
}

L4T_FN struct kvt_l4 *open_url(const char *url)
{
	struct kvt_l4_config cfg = { .url = url };

	return open_cfg(&cfg);
}

L4T_FN struct kvt_l4_session *session(struct kvt_l4 *l4)
{
	struct kvt_l4_session *s = NULL;

	assert_int_equal(kvt_l4_session_new(l4, &s), 0);
	return s;
}

/* ---- a set of blocks ------------------------------------------------------ */

struct blocks {
	size_t n;
	const char *ns;
	char (*name)[24];
	uint8_t **data;
	size_t *len;
	struct kvt_key *keys;
};

/* Sizes from empty to 2 MiB; len > 0 fixes them. */
L4T_FN size_t vary(size_t i)
{
	static const size_t sz[] = { 0, 1, 100, 4096, 65536, 200000, 777 };

	return i % 97 == 50 ? ((size_t)2 << 20) : sz[i % 7];
}

L4T_FN void blocks_make(struct blocks *b, const char *ns, size_t n,
			size_t first, size_t len)
{
	b->n = n;
	b->ns = ns;
	b->name = calloc(n, sizeof(*b->name));
	b->data = calloc(n, sizeof(*b->data));
	b->len = calloc(n, sizeof(*b->len));
	b->keys = calloc(n, sizeof(*b->keys));
	assert_non_null(b->keys);
	for (size_t i = 0; i < n; i++) {
		snprintf(b->name[i], sizeof(b->name[i]), "blk-%06zu", first + i);
		b->len[i] = len ? len : vary(first + i);
		b->data[i] = malloc(b->len[i] ? b->len[i] : 1);
		assert_non_null(b->data[i]);
		fill(b->data[i], b->len[i], (first + i) * 31 + strlen(ns));
		b->keys[i] = (struct kvt_key){
			(const uint8_t *)ns, strlen(ns),
			(const uint8_t *)b->name[i], strlen(b->name[i]) };
	}
}

L4T_FN void blocks_free(struct blocks *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->data[i]);
	free(b->name);
	free(b->data);
	free(b->len);
	free(b->keys);
}

/* Puts blocks [from, to) in batches; returns how many failed. */
L4T_FN size_t put_range(struct kvt_l4_session *s, const struct blocks *b,
			size_t from, size_t to, uint32_t ttl_s)
{
	struct kvt_l4_put it[64];
	int st[64];
	size_t bad = 0;

	for (size_t i = from; i < to;) {
		size_t k = 0;

		for (; k < 64 && i < to; k++, i++)
			it[k] = (struct kvt_l4_put){
				.k = b->keys[i], .data = b->data[i],
				.len = b->len[i], .codec = (uint8_t)(i % 4),
				.dtype = (uint8_t)(i % 3),
				.raw_len = b->len[i] * 2 + 1, .ttl_s = ttl_s };
		assert_int_equal(kvt_l4_put_batch(s, it, k, st), 0);
		for (size_t j = 0; j < k; j++) {
			if (st[j] != 0 && bad == 0)
				print_message("put %s/%s: %s\n", b->ns,
					      b->name[i - k + j],
					      kvt_strerror(st[j]));
			bad += st[j] != 0;
		}
	}
	return bad;
}

L4T_FN void put_all(struct kvt_l4_session *s, const struct blocks *b)
{
	assert_int_equal(put_range(s, b, 0, b->n, 0), 0);
}

struct tally {
	size_t hits, absent, stale, corrupt, errors, wrong;
};

/* Gets blocks [from, to); every hit is compared with what was put. */
L4T_FN void get_range(struct kvt_l4_session *s, const struct blocks *b,
		      size_t from, size_t to, struct tally *t)
{
	struct kvt_l4_block out[64];

	for (size_t i = from; i < to;) {
		size_t k = to - i < 64 ? to - i : 64;

		assert_int_equal(kvt_l4_get_batch(s, &b->keys[i], k, out), 0);
		for (size_t j = 0; j < k; j++, i++) {
			struct kvt_l4_block *o = &out[j];

			if (o->status == 0) {
				t->hits++;
				if (o->len != b->len[i] ||
				    memcmp(o->data, b->data[i], o->len) != 0 ||
				    o->codec != i % 4 || o->dtype != i % 3 ||
				    o->raw_len != b->len[i] * 2 + 1)
					t->wrong++;
			} else if (o->status == KVT_ENOTFOUND) {
				if (o->miss == KVT_L4_MISS_ABSENT)
					t->absent++;
				else if (o->miss == KVT_L4_MISS_STALE)
					t->stale++;
				else
					t->corrupt++;
			} else {
				t->errors++;
			}
			kvt_l4_block_release(o);
		}
	}
}

/* Probes blocks [0, n); returns how many are there (status 0), failing
 * the test on an error status. */
L4T_FN size_t probe_all(struct kvt_l4_session *s, const struct blocks *b)
{
	int st[64];
	size_t found = 0;

	for (size_t i = 0; i < b->n; i += 64) {
		size_t k = b->n - i < 64 ? b->n - i : 64;

		assert_int_equal(kvt_l4_probe_batch(s, &b->keys[i], k, st), 0);
		for (size_t j = 0; j < k; j++) {
			if (st[j] != 0 && st[j] != KVT_ENOTFOUND)
				fail_msg("probe %s: %s", b->name[i + j],
					 kvt_strerror(st[j]));
			found += st[j] == 0;
		}
	}
	return found;
}

L4T_FN struct tally get_all(struct kvt_l4_session *s, const struct blocks *b)
{
	struct tally t = { 0 };

	get_range(s, b, 0, b->n, &t);
	return t;
}

/* ---- raw access, as another program ---------------------------------------- */

L4T_FN redisContext *raw_connect(int port)
{
	redisContext *c = redisConnect("127.0.0.1", port);

	assert_non_null(c);
	if (c->err) {
		redisFree(c);
		return NULL;
	}
	if (g_pw)
		freeReplyObject(redisCommand(c, "AUTH %s", g_pw));
	return c;
}

/* A connection to the master that serves name (no redirect). */
L4T_FN redisContext *raw_owner(const char *name, size_t len)
{
	for (int i = 0; i < L4C_NODES; i++) {
		redisContext *c = raw_connect(g_cl.ports[i]);
		redisReply *r;

		if (!c)
			continue;
		r = redisCommand(c, "EXISTS %b", name, len);
		if (r && r->type == REDIS_REPLY_INTEGER) {
			freeReplyObject(r);
			return c;
		}
		freeReplyObject(r);
		redisFree(c);
	}
	fail_msg("no node serves %.*s", (int)len, name);
	return NULL;
}

L4T_FN redisReply *raw(const struct kvt_key *k, const char *fmt_cmd,
		       const void *arg, size_t arg_len)
{
	char name[KVT_L4_NAME_MAX];
	size_t n = kvt_l4_block_name(k, name);
	redisContext *c = raw_owner(name, n);
	redisReply *r;

	if (arg)
		r = redisCommand(c, fmt_cmd, name, n, arg, arg_len);
	else
		r = redisCommand(c, fmt_cmd, name, n);
	redisFree(c);
	assert_non_null(r);
	return r;
}

L4T_FN void raw_set(const struct kvt_key *k, const void *v, size_t len)
{
	redisReply *r = raw(k, "SET %b %b", v, len);

	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);
}

#endif /* L4TEST_H */
