/*
 * kvtier_cli_bench.c - `kvtier bench`: a load generator that measures the
 * daemon as a client sees it, through the public libkvtier API only.
 *
 * Each client is a thread with its own connection.  Everything that costs
 * time but is not the request itself happens before the clock starts:
 * values are generated, and every buffer the timed loop writes to (the
 * destination buffers, the latency arrays) is touched, because first-touch
 * page faults are expensive on virtual machines and would be charged to
 * the daemon otherwise.  tests/bench/bench_kvs.c measures Redis, memcached
 * and memcpy in the same way; keep the two in step.
 *
 * Working set: keys "bench-SIZE-I" for I in 0..keys-1; request g (numbered
 * 0..requests-1 over all clients) uses key g % keys.  Client t does a
 * contiguous share of the g's.  Values are pseudo-random bytes: value I is
 * a window of one random pool starting at (I % VARIANTS) * 64, so that
 * neighbouring keys hold different values without keys x size bytes of
 * source memory.
 *
 * Checks: every get is checked for status and length, and the first and
 * last 8 bytes; the first get of each key (the first pass) is checked
 * whole, against a checksum computed before the run.  That checksum's time
 * is left out of the latency and of the elapsed time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "kvt_size.h"
#include "kvtier.h"
#include "kvtier_cli.h"

/* Distinct values in the pool, 64 bytes apart. */
#define BENCH_VARIANTS 256
#define BENCH_VARIANT_STEP 64
/* Keys per mget call, like the library's pipeline depth. */
#define BENCH_BATCH 32
/* A batch's buffers stay under this many bytes (fewer keys if need be). */
#define BENCH_BATCH_BYTES (64u << 20)
#define BENCH_KEY_MAX 48

struct bench {
	const struct kvt_cli_bench_opts *o;
	uint8_t *pool;		 /* random bytes, size + variants * step */
	uint64_t sums[BENCH_VARIANTS];
	unsigned variants;
	unsigned batch;		 /* keys per mget call */
	atomic_uint_fast64_t done; /* requests finished, for the progress bar */
	pthread_barrier_t start;
};

struct worker {
	struct bench *b;
	unsigned id;
	kvt_client *c;
	uint64_t first, count; /* requests [first, first + count) */
	uint8_t *dst;	       /* batch * size bytes, touched */
	float *lat_us;	       /* count latencies, touched */
	uint64_t n_lat;
	uint64_t errors;
	int broken;	       /* the connection error that stopped it, or 0 */
	char brokemsg[256];
	struct timespec t0, t1;
	double verify_s;       /* time spent on whole-value checks */
	pthread_t tid;
};

static double ts_diff(const struct timespec *a, const struct timespec *b)
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

/* A 64-bit checksum of p[0..n), 8 bytes per step. */
static uint64_t checksum(const uint8_t *p, size_t n)
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

static size_t key_name(char *buf, uint64_t size, uint64_t i)
{
	return (size_t)snprintf(buf, BENCH_KEY_MAX, "bench-%llu-%llu",
				(unsigned long long)size,
				(unsigned long long)i);
}

static const uint8_t *value_of(const struct bench *b, uint64_t key)
{
	return b->pool + (key % b->variants) * BENCH_VARIANT_STEP;
}

static bool is_conn_error(int rc)
{
	/* errno values and these codes leave the connection unusable. */
	return rc > -1000 || rc == KVT_ECLOSED || rc == KVT_EPROTO;
}

/* Checks one fetched value of key; returns true if it is right. */
static bool check_value(struct worker *w, uint64_t g, const uint8_t *got,
			size_t len)
{
	const struct bench *b = w->b;
	uint64_t key = g % b->o->keys, size = b->o->size;
	const uint8_t *want = value_of(b, key);
	struct timespec a, z;
	bool ok;

	if (len != size)
		return false;
	if (size >= 8 && (memcmp(got, want, 8) != 0 ||
			  memcmp(got + size - 8, want + size - 8, 8) != 0))
		return false;
	if (g >= b->o->keys)
		return size >= 8 || memcmp(got, want, size) == 0;
	/* First pass: the whole value, off the clock. */
	clock_gettime(CLOCK_MONOTONIC, &a);
	ok = checksum(got, len) == b->sums[key % b->variants];
	clock_gettime(CLOCK_MONOTONIC, &z);
	w->verify_s += ts_diff(&a, &z);
	return ok;
}

static void conn_broke(struct worker *w, int rc)
{
	w->broken = rc;
	snprintf(w->brokemsg, sizeof(w->brokemsg), "%s",
		 kvt_client_errmsg(w->c));
	if (!w->brokemsg[0])
		snprintf(w->brokemsg, sizeof(w->brokemsg), "%s",
			 kvt_strerror(rc));
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	const struct kvt_cli_bench_opts *o = b->o;
	char names[BENCH_BATCH][BENCH_KEY_MAX];
	const void *keys[BENCH_BATCH];
	size_t klens[BENCH_BATCH], vlens[BENCH_BATCH];
	struct iovec iov[BENCH_BATCH];
	int st[BENCH_BATCH];
	struct timespec a, z;
	uint64_t g = w->first, end = w->first + w->count;
	unsigned n;
	int rc;

	for (unsigned i = 0; i < BENCH_BATCH; i++) {
		keys[i] = names[i];
		iov[i].iov_base = w->dst + (size_t)(i % b->batch) * o->size;
		iov[i].iov_len = (size_t)o->size;
	}
	pthread_barrier_wait(&b->start);
	clock_gettime(CLOCK_MONOTONIC, &w->t0);
	while (g < end) {
		n = o->op == KVT_CLI_BENCH_MGET ? b->batch : 1;
		if (n > end - g)
			n = (unsigned)(end - g);
		for (unsigned i = 0; i < n; i++)
			klens[i] = key_name(names[i], o->size,
					    (g + i) % o->keys);
		clock_gettime(CLOCK_MONOTONIC, &a);
		switch (o->op) {
		case KVT_CLI_BENCH_PUT:
			rc = kvt_put(w->c, o->ns, names[0], klens[0],
				     value_of(b, g % o->keys),
				     (size_t)o->size, NULL);
			st[0] = rc;
			break;
		case KVT_CLI_BENCH_GET:
			rc = kvt_get(w->c, o->ns, names[0], klens[0], w->dst,
				     (size_t)o->size, &vlens[0]);
			st[0] = rc;
			break;
		default:
			rc = kvt_mget(w->c, o->ns, keys, klens, n, iov, vlens,
				      st);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &z);
		/*
		 * A batch's keys all arrive within one call: each is charged
		 * the call's time, the wait its caller sees.
		 */
		float us = (float)(ts_diff(&a, &z) * 1e6);
		for (unsigned i = 0; i < n; i++) {
			w->lat_us[w->n_lat++] = us;
			if (st[i] < 0) {
				w->errors++;
				continue;
			}
			if (o->op != KVT_CLI_BENCH_PUT &&
			    !check_value(w, g + i, iov[i].iov_base, vlens[i]))
				w->errors++;
		}
		g += n;
		atomic_fetch_add_explicit(&b->done, n, memory_order_relaxed);
		if (rc < 0 && is_conn_error(rc)) {
			conn_broke(w, rc);
			w->errors += end - g;
			atomic_fetch_add_explicit(&b->done, end - g,
						  memory_order_relaxed);
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &w->t1);
	return NULL;
}

/* Stores the working set before a get or mget run (untimed). */
static int populate(struct bench *b, kvt_client *c)
{
	const struct kvt_cli_bench_opts *o = b->o;
	char names[BENCH_BATCH][BENCH_KEY_MAX];
	const void *keys[BENCH_BATCH], *vals[BENCH_BATCH];
	size_t klens[BENCH_BATCH], vlens[BENCH_BATCH];
	int st[BENCH_BATCH], rc;

	for (uint64_t k = 0; k < o->keys; k += BENCH_BATCH) {
		unsigned n = o->keys - k < BENCH_BATCH ? (unsigned)(o->keys - k)
						       : BENCH_BATCH;
		for (unsigned i = 0; i < n; i++) {
			klens[i] = key_name(names[i], o->size, k + i);
			keys[i] = names[i];
			vals[i] = value_of(b, k + i);
			vlens[i] = (size_t)o->size;
		}
		rc = kvt_mput(c, o->ns, keys, klens, vals, vlens, n, NULL, st);
		if (rc < 0)
			return rc;
		for (unsigned i = 0; i < n; i++)
			if (st[i] < 0)
				return st[i];
	}
	return 0;
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

static void progress(struct bench *b, bool last)
{
	uint64_t done = atomic_load_explicit(&b->done, memory_order_relaxed);
	uint64_t total = b->o->requests;
	int width = 40, fill = (int)((double)done / (double)total * width);

	fprintf(stderr, "\r[%.*s%*s] %llu/%llu", fill,
		"########################################", width - fill, "",
		(unsigned long long)done, (unsigned long long)total);
	if (last)
		fputs("\r\033[K", stderr);
	fflush(stderr);
}

static const char *op_name(enum kvt_cli_bench_op op)
{
	return op == KVT_CLI_BENCH_PUT ? "put"
	       : op == KVT_CLI_BENCH_GET ? "get" : "mget";
}

int kvt_cli_bench_run(const struct kvt_cli_bench_opts *o)
{
	struct bench b = { .o = o };
	struct worker *w;
	kvt_client **cs;
	unsigned nc = o->clients;
	uint64_t per, extra, first = 0, seed = 0x6b76746965720000ull ^ o->size;
	size_t pool_len;
	int status = KVT_CLI_OK, rc;

	b.variants = o->keys < BENCH_VARIANTS ? (unsigned)o->keys
					      : BENCH_VARIANTS;
	b.batch = 1;
	if (o->op == KVT_CLI_BENCH_MGET) {
		b.batch = BENCH_BATCH;
		while (b.batch > 1 && b.batch * o->size > BENCH_BATCH_BYTES)
			b.batch /= 2;
	}
	atomic_init(&b.done, 0);

	pool_len = (size_t)o->size + (size_t)b.variants * BENCH_VARIANT_STEP;
	pool_len = (pool_len + 7) & ~(size_t)7;
	b.pool = malloc(pool_len);
	w = calloc(nc, sizeof(*w));
	cs = calloc(nc, sizeof(*cs));
	if (!b.pool || !w || !cs) {
		fprintf(stderr, "kvtier: bench: out of memory\n");
		status = KVT_CLI_FAIL;
		goto out;
	}
	for (size_t i = 0; i < pool_len; i += 8) {
		uint64_t r = mix64(&seed);
		memcpy(b.pool + i, &r, 8);
	}
	for (unsigned v = 0; v < b.variants; v++)
		b.sums[v] = checksum(b.pool + (size_t)v * BENCH_VARIANT_STEP,
				     (size_t)o->size);

	for (unsigned t = 0; t < nc; t++) {
		rc = kvt_connect(&cs[t], o->socket);
		if (rc < 0) {
			if (rc > -1000)
				fprintf(stderr, "kvtier: bench: daemon "
					"unreachable at %s: %s\n", o->socket,
					kvt_strerror(rc));
			else
				fprintf(stderr, "kvtier: bench: %s\n",
					kvt_client_errmsg(NULL));
			status = KVT_CLI_FAIL;
			goto out;
		}
	}
	if (o->op != KVT_CLI_BENCH_PUT) {
		rc = populate(&b, cs[0]);
		if (rc < 0) {
			fprintf(stderr, "kvtier: bench: storing the working "
				"set: %s\n", *kvt_client_errmsg(cs[0])
						      ? kvt_client_errmsg(cs[0])
						      : kvt_strerror(rc));
			status = is_conn_error(rc) ? KVT_CLI_FAIL : KVT_CLI_MISS;
			goto out;
		}
	}

	per = o->requests / nc;
	extra = o->requests % nc;
	for (unsigned t = 0; t < nc; t++) {
		w[t].b = &b;
		w[t].id = t;
		w[t].c = cs[t];
		w[t].first = first;
		w[t].count = per + (t < extra);
		first += w[t].count;
		w[t].dst = malloc((size_t)b.batch * (size_t)o->size);
		w[t].lat_us = malloc((w[t].count ? w[t].count : 1) *
				     sizeof(float));
		if (!w[t].dst || !w[t].lat_us) {
			fprintf(stderr, "kvtier: bench: out of memory\n");
			status = KVT_CLI_FAIL;
			goto out;
		}
		/*
		 * Touch every page the timed loop writes.  Not with zeros:
		 * the compiler may turn malloc + memset(0) into calloc, which
		 * leaves fresh pages untouched.
		 */
		memset(w[t].dst, 0xa5, (size_t)b.batch * (size_t)o->size);
		memset(w[t].lat_us, 0x5a, (w[t].count ? w[t].count : 1) *
				       sizeof(float));
	}

	pthread_barrier_init(&b.start, NULL, nc + 1);
	unsigned started = 0;
	for (; started < nc; started++)
		if (pthread_create(&w[started].tid, NULL, worker_main,
				   &w[started]) != 0)
			break;
	if (started < nc) {
		/* Cannot happen with a sane --clients; fail loudly, do not hang. */
		fprintf(stderr, "kvtier: bench: cannot start %u threads\n", nc);
		_exit(KVT_CLI_FAIL);
	}
	pthread_barrier_wait(&b.start);
	if (isatty(STDERR_FILENO)) {
		struct timespec tick = { 0, 100 * 1000 * 1000 };
		while (atomic_load_explicit(&b.done, memory_order_relaxed) <
		       o->requests) {
			progress(&b, false);
			nanosleep(&tick, NULL);
		}
		progress(&b, true);
	}
	for (unsigned t = 0; t < nc; t++)
		pthread_join(w[t].tid, NULL);
	pthread_barrier_destroy(&b.start);

	/* Merge. */
	uint64_t n_lat = 0, errors = 0;
	for (unsigned t = 0; t < nc; t++) {
		n_lat += w[t].n_lat;
		errors += w[t].errors;
	}
	float *all = malloc((n_lat ? n_lat : 1) * sizeof(float));
	if (!all) {
		fprintf(stderr, "kvtier: bench: out of memory\n");
		status = KVT_CLI_FAIL;
		goto out;
	}
	uint64_t at = 0;
	struct timespec t_first = w[0].t0;
	double seconds = 0;
	for (unsigned t = 0; t < nc; t++) {
		memcpy(all + at, w[t].lat_us, w[t].n_lat * sizeof(float));
		at += w[t].n_lat;
		if (ts_diff(&w[t].t0, &t_first) > 0)
			t_first = w[t].t0;
	}
	for (unsigned t = 0; t < nc; t++) {
		double s = ts_diff(&t_first, &w[t].t1) - w[t].verify_s;
		if (s > seconds)
			seconds = s;
	}
	qsort(all, n_lat, sizeof(float), cmp_float);
	double p50 = percentile(all, n_lat, 0.50);
	double p99 = percentile(all, n_lat, 0.99);
	free(all);
	double ops = seconds > 0 ? (double)o->requests / seconds : 0;
	double gbs = ops * (double)o->size / 1e9;

	if (o->json) {
		printf("{\"op\":\"%s\",\"size\":%llu,\"clients\":%u,"
		       "\"requests\":%llu,\"keys\":%llu,\"seconds\":%.6f,"
		       "\"ops_per_s\":%.1f,\"gbytes_per_s\":%.4f,"
		       "\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
		       op_name(o->op), (unsigned long long)o->size, nc,
		       (unsigned long long)o->requests,
		       (unsigned long long)o->keys, seconds, ops, gbs, p50,
		       p99, (unsigned long long)errors);
	} else {
		char sz[32];
		printf("op        %s\n"
		       "size      %llu (%s)\n"
		       "clients   %u\n"
		       "requests  %llu\n"
		       "keys      %llu\n"
		       "seconds   %.3f\n"
		       "ops/s     %.0f\n"
		       "GB/s      %.3f\n"
		       "p50 us    %.1f\n"
		       "p99 us    %.1f\n"
		       "errors    %llu\n",
		       op_name(o->op), (unsigned long long)o->size,
		       kvt_size_format(o->size, sz, sizeof(sz)), nc,
		       (unsigned long long)o->requests,
		       (unsigned long long)o->keys, seconds, ops, gbs, p50,
		       p99, (unsigned long long)errors);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "kvtier: bench: cannot write to stdout: %s\n",
			strerror(errno));
		status = KVT_CLI_FAIL;
	}
	for (unsigned t = 0; t < nc; t++) {
		if (w[t].broken) {
			fprintf(stderr, "kvtier: bench: client %u: %s\n", t,
				w[t].brokemsg);
			status = KVT_CLI_FAIL;
		}
	}
	if (status == KVT_CLI_OK && errors > 0) {
		fprintf(stderr, "kvtier: bench: %llu of %llu requests failed, "
			"missed or returned a wrong value\n",
			(unsigned long long)errors,
			(unsigned long long)o->requests);
		status = KVT_CLI_MISS;
	}
out:
	for (unsigned t = 0; w && cs && t < nc; t++) {
		kvt_close(cs[t]);
		free(w[t].dst);
		free(w[t].lat_us);
	}
	free(cs);
	free(w);
	free(b.pool);
	return status;
}
