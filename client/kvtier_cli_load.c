/*
 * kvtier_cli_load.c - the workload of `kvtier bench` and of
 * tests/bench/bench_kvs, defined once (see kvtier_cli_load.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_size.h"
#include "kvtier_cli_load.h"

double kvt_load_ts_diff(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* splitmix64: deterministic, fast, and bytes that do not compress. */
static uint64_t mix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* 8 bytes per step, so that checking a large value stays cheap. */
uint64_t kvt_load_checksum(const uint8_t *p, size_t n)
{
	uint64_t h = 0x84222325cbf29ce4ull ^ n, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

size_t kvt_load_key_name(char *buf, size_t cap, uint64_t size, uint64_t i)
{
	return (size_t)snprintf(buf, cap, "bench-%llu-%llu",
				(unsigned long long)size,
				(unsigned long long)i);
}

const char *kvt_load_op_name(enum kvt_load_op op)
{
	return op == KVT_LOAD_PUT ? "put" : op == KVT_LOAD_GET ? "get" : "mget";
}

int kvt_load_op_parse(const char *s, enum kvt_load_op *op)
{
	if (strcmp(s, "put") == 0)
		*op = KVT_LOAD_PUT;
	else if (strcmp(s, "get") == 0)
		*op = KVT_LOAD_GET;
	else if (strcmp(s, "mget") == 0)
		*op = KVT_LOAD_MGET;
	else
		return -1;
	return 0;
}

int kvt_load_parse_count(const char *s, uint64_t lo, uint64_t hi,
			 uint64_t *out)
{
	unsigned long long v;
	char *end;

	/* strtoull accepts blanks and a sign, which a count must not have. */
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int kvt_load_parse_size(const char *s, uint64_t *out)
{
	if (kvt_size_parse(s, out) < 0 || *out == 0 ||
	    *out > KVT_LOAD_SIZE_MAX)
		return -1;
	return 0;
}

uint64_t kvt_load_keys(uint64_t keys, uint64_t size, uint64_t requests)
{
	if (keys == 0) {
		keys = KVT_LOAD_WORKING_SET / size;
		if (keys < 1)
			keys = 1;
	}
	return keys > requests ? requests : keys;
}

void kvt_load_share(uint64_t requests, unsigned n, unsigned t,
		    uint64_t *first, uint64_t *count)
{
	uint64_t per = requests / n, extra = requests % n;

	*first = per * t + (t < extra ? t : extra);
	*count = per + (t < extra);
}

void *kvt_load_alloc_touched(size_t n)
{
	void *p = malloc(n ? n : 1);

	/*
	 * Not with zeros: the compiler may turn malloc + memset(0) into
	 * calloc, which leaves fresh pages untouched.
	 */
	if (p)
		memset(p, 0xa5, n ? n : 1);
	return p;
}

int kvt_load_pool_init(struct kvt_load_pool *p, uint64_t size, uint64_t keys)
{
	uint64_t seed = 0x6b76746965720000ull ^ size;

	memset(p, 0, sizeof(*p));
	p->size = size;
	p->variants = keys < KVT_LOAD_VARIANTS ? (unsigned)keys
					       : KVT_LOAD_VARIANTS;
	p->len = ((size_t)size + (size_t)p->variants * KVT_LOAD_VARIANT_STEP +
		  7) & ~(size_t)7;
	p->bytes = malloc(p->len);
	if (!p->bytes)
		return -ENOMEM;
	for (size_t i = 0; i < p->len; i += 8) {
		uint64_t r = mix64(&seed);
		memcpy(p->bytes + i, &r, 8);
	}
	for (unsigned v = 0; v < p->variants; v++)
		p->sums[v] = kvt_load_checksum(p->bytes +
					       (size_t)v * KVT_LOAD_VARIANT_STEP,
					       (size_t)size);
	return 0;
}

void kvt_load_pool_free(struct kvt_load_pool *p)
{
	if (!p)
		return;
	free(p->bytes);
	p->bytes = NULL;
}

const uint8_t *kvt_load_value(const struct kvt_load_pool *p, uint64_t key)
{
	return p->bytes + (key % p->variants) * KVT_LOAD_VARIANT_STEP;
}

bool kvt_load_check(const struct kvt_load_pool *p, uint64_t keys,
		    uint64_t g, const uint8_t *got, size_t len,
		    double *verify_s)
{
	uint64_t key = g % keys, size = p->size;
	const uint8_t *want = kvt_load_value(p, key);
	struct timespec a, z;
	bool ok;

	if (len != size)
		return false;
	if (size >= 8 && (memcmp(got, want, 8) != 0 ||
			  memcmp(got + size - 8, want + size - 8, 8) != 0))
		return false;
	if (g >= keys)
		return size >= 8 || memcmp(got, want, size) == 0;
	/* First pass: the whole value, off the clock. */
	clock_gettime(CLOCK_MONOTONIC, &a);
	ok = kvt_load_checksum(got, len) == p->sums[key % p->variants];
	clock_gettime(CLOCK_MONOTONIC, &z);
	*verify_s += kvt_load_ts_diff(&a, &z);
	return ok;
}

int kvt_load_tally_init(struct kvt_load_tally *t, uint64_t count)
{
	memset(t, 0, sizeof(*t));
	t->lat_us = kvt_load_alloc_touched(count * sizeof(float));
	return t->lat_us ? 0 : -ENOMEM;
}

void kvt_load_tally_free(struct kvt_load_tally *t)
{
	if (!t)
		return;
	free(t->lat_us);
	t->lat_us = NULL;
}

static int cmp_float(const void *pa, const void *pb)
{
	float a = *(const float *)pa, b = *(const float *)pb;

	return (a > b) - (a < b);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const float *v, uint64_t n, double p)
{
	uint64_t r;

	if (n == 0)
		return 0;
	r = (uint64_t)(p * (double)n + 0.999999);
	if (r < 1)
		r = 1;
	if (r > n)
		r = n;
	return v[r - 1];
}

int kvt_load_result_compute(struct kvt_load_result *r,
			    const struct kvt_load_tally *t, unsigned n,
			    uint64_t requests, uint64_t size)
{
	uint64_t n_lat = 0, at = 0;
	struct timespec t_first = t[0].t0;
	float *all;

	memset(r, 0, sizeof(*r));
	for (unsigned i = 0; i < n; i++) {
		n_lat += t[i].n_lat;
		r->errors += t[i].errors;
	}
	all = malloc((n_lat ? n_lat : 1) * sizeof(float));
	if (!all)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		memcpy(all + at, t[i].lat_us, t[i].n_lat * sizeof(float));
		at += t[i].n_lat;
		if (kvt_load_ts_diff(&t[i].t0, &t_first) > 0)
			t_first = t[i].t0;
	}
	/* From the first client's start to the last one's end. */
	for (unsigned i = 0; i < n; i++) {
		double s = kvt_load_ts_diff(&t_first, &t[i].t1) - t[i].verify_s;
		if (s > r->seconds)
			r->seconds = s;
	}
	qsort(all, n_lat, sizeof(float), cmp_float);
	r->p50_us = percentile(all, n_lat, 0.50);
	r->p99_us = percentile(all, n_lat, 0.99);
	free(all);
	r->ops_per_s = r->seconds > 0 ? (double)requests / r->seconds : 0;
	r->gbytes_per_s = r->ops_per_s * (double)size / 1e9;
	return 0;
}

void kvt_load_print_json(FILE *out, const char *server, enum kvt_load_op op,
			 uint64_t size, unsigned clients, uint64_t requests,
			 uint64_t keys, const struct kvt_load_result *r)
{
	fputc('{', out);
	if (server)
		fprintf(out, "\"server\":\"%s\",", server);
	fprintf(out, "\"op\":\"%s\",\"size\":%llu,\"clients\":%u,"
		"\"requests\":%llu,\"keys\":%llu,\"seconds\":%.6f,"
		"\"ops_per_s\":%.1f,\"gbytes_per_s\":%.4f,"
		"\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
		kvt_load_op_name(op), (unsigned long long)size, clients,
		(unsigned long long)requests, (unsigned long long)keys,
		r->seconds, r->ops_per_s, r->gbytes_per_s, r->p50_us,
		r->p99_us, (unsigned long long)r->errors);
}
