/*
 * kvtier_cli_bench.c - `kvtier bench`: a load generator that measures the
 * daemon as a client sees it, through the public libkvtier API only; and
 * its option values and help text (the option parsing is kvtier_cli.c's).
 *
 * Each client is a thread with its own connection.  Everything that costs
 * time but is not the request itself happens before the clock starts:
 * values are generated, and every buffer the timed loop writes to (the
 * destination buffers, the latency arrays) is touched, because first-touch
 * page faults are expensive on virtual machines and would be charged to
 * the daemon otherwise.  The workload itself (keys, values, checks,
 * figures) is kvtier_cli_load.c, which tests/bench/bench_kvs.c also runs
 * against Redis, memcached and memcpy.
 */
#include <assert.h>
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
#include "kvtier_cli_int.h"
#include "kvtier_cli_load.h"

/* Keys per mget call, like the library's pipeline depth. */
#define BENCH_BATCH 32
/* A batch's buffers stay under this many bytes (fewer keys if need be). */
#define BENCH_BATCH_BYTES (64u << 20)

struct bench {
	const struct kvt_cli_bench_opts *o;
	struct kvt_load_pool pool;
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
	struct kvt_load_tally *tally; /* count latencies, errors, times */
	int broken;	       /* the connection error that stopped it, or 0 */
	char brokemsg[256];
	pthread_t tid;
};

static bool is_conn_error(int rc)
{
	/* errno values and these codes leave the connection unusable. */
	return rc > -1000 || rc == KVT_ECLOSED || rc == KVT_EPROTO;
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
	struct kvt_load_tally *ty = w->tally;
	char names[BENCH_BATCH][KVT_LOAD_KEY_MAX];
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
	clock_gettime(CLOCK_MONOTONIC, &ty->t0);
	while (g < end) {
		n = o->op == KVT_LOAD_MGET ? b->batch : 1;
		if (n > end - g)
			n = (unsigned)(end - g);
		for (unsigned i = 0; i < n; i++)
			klens[i] = kvt_load_key_name(names[i],
						     sizeof(names[i]), o->size,
						     (g + i) % o->keys);
		clock_gettime(CLOCK_MONOTONIC, &a);
		switch (o->op) {
		case KVT_LOAD_PUT:
			rc = kvt_put(w->c, o->ns, names[0], klens[0],
				     kvt_load_value(&b->pool, g % o->keys),
				     (size_t)o->size, NULL);
			st[0] = rc;
			break;
		case KVT_LOAD_GET:
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
		float us = (float)(kvt_load_ts_diff(&a, &z) * 1e6);
		for (unsigned i = 0; i < n; i++) {
			ty->lat_us[ty->n_lat++] = us;
			if (st[i] < 0) {
				ty->errors++;
				continue;
			}
			if (o->op != KVT_LOAD_PUT &&
			    !kvt_load_check(&b->pool, o->keys, g + i,
					    iov[i].iov_base, vlens[i],
					    &ty->verify_s))
				ty->errors++;
		}
		g += n;
		atomic_fetch_add_explicit(&b->done, n, memory_order_relaxed);
		if (rc < 0 && is_conn_error(rc)) {
			conn_broke(w, rc);
			ty->errors += end - g;
			atomic_fetch_add_explicit(&b->done, end - g,
						  memory_order_relaxed);
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &ty->t1);
	return NULL;
}

/* Stores the working set before a get or mget run (untimed). */
static int populate(struct bench *b, kvt_client *c)
{
	const struct kvt_cli_bench_opts *o = b->o;
	char names[BENCH_BATCH][KVT_LOAD_KEY_MAX];
	const void *keys[BENCH_BATCH], *vals[BENCH_BATCH];
	size_t klens[BENCH_BATCH], vlens[BENCH_BATCH];
	int st[BENCH_BATCH], rc;

	for (uint64_t k = 0; k < o->keys; k += BENCH_BATCH) {
		unsigned n = o->keys - k < BENCH_BATCH ? (unsigned)(o->keys - k)
						       : BENCH_BATCH;
		for (unsigned i = 0; i < n; i++) {
			klens[i] = kvt_load_key_name(names[i],
						     sizeof(names[i]),
						     o->size, k + i);
			keys[i] = names[i];
			vals[i] = kvt_load_value(&b->pool, k + i);
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

void kvt_cli_bench_opts_init(struct kvt_cli_bench_opts *o,
			     const char *socket)
{
	memset(o, 0, sizeof(*o));
	o->socket = socket;
	o->ns = "bench";
	o->op = KVT_LOAD_GET;
	o->size = 64 * 1024;
	o->clients = 1;
	o->requests = 1000;
}

int kvt_cli_bench_opt(struct kvt_cli_bench_opts *o, const char *name,
		      const char *v, char *why, size_t cap)
{
	uint64_t n;

	if (strcmp(name, "--op") == 0) {
		if (kvt_load_op_parse(v, &o->op) < 0)
			goto bad;
	} else if (strcmp(name, "--size") == 0) {
		if (kvt_load_parse_size(v, &o->size) < 0)
			goto bad;
	} else if (strcmp(name, "--clients") == 0) {
		if (kvt_load_parse_count(v, 1, KVT_LOAD_CLIENTS_MAX, &n) < 0)
			goto bad;
		o->clients = (unsigned)n;
	} else if (strcmp(name, "--requests") == 0) {
		if (kvt_load_parse_count(v, 1, KVT_LOAD_REQUESTS_MAX,
					 &o->requests) < 0)
			goto bad;
	} else if (strcmp(name, "--keys") == 0) {
		if (kvt_load_parse_count(v, 1, KVT_LOAD_REQUESTS_MAX,
					 &o->keys) < 0)
			goto bad;
	} else if (strcmp(name, "--ns") == 0) {
		o->ns = v;
	} else {
		assert(strcmp(name, "--json") == 0);
		o->json = true;
	}
	return 0;
bad:
	if (strcmp(name, "--op") == 0)
		snprintf(why, cap, "bad --op '%s' (put, get or mget)", v);
	else if (strcmp(name, "--size") == 0)
		snprintf(why, cap, "bad --size '%s' (1 to 4G-1, K/M/G "
			 "suffixes)", v);
	else if (strcmp(name, "--clients") == 0)
		snprintf(why, cap, "bad --clients '%s' (1 to %u)", v,
			 KVT_LOAD_CLIENTS_MAX);
	else
		snprintf(why, cap, "bad %s '%s' (1 to %llu)", name, v,
			 KVT_LOAD_REQUESTS_MAX);
	return -1;
}

const char kvt_cli_bench_synopsis[] =
	"bench [--op put|get|mget] [--size SIZE] [--clients N] "
	"[--requests N] [--keys N] [--ns NS] [--json]";

const char kvt_cli_bench_help[] =
	"Measures the daemon as a client sees it: N client threads, each with\n"
	"its own connection, send REQUESTS requests in all over a working set\n"
	"of KEYS keys (request i uses key i mod KEYS), and the tool prints\n"
	"op, size, clients, requests, seconds, ops/s, GB/s (10^9 bytes/s),\n"
	"p50 and p99 latency in microseconds, and errors.  Values are\n"
	"pseudo-random bytes.  get and mget first store the working set\n"
	"(untimed), then check every value they read: length always, the\n"
	"whole value the first time each key is read; a miss or a wrong\n"
	"value counts as an error.  Exits with 1 if there were errors.\n"
	"\n"
	"  --op OP          put, get (default) or mget (up to 32 keys per\n"
	"                   call; each key counts as a request, charged\n"
	"                   the latency of its call)\n"
	"  --size SIZE      value size, K/M/G suffixes (default 64K)\n"
	"  --clients N      client threads, 1 to 256 (default 1)\n"
	"  --requests N     requests in all, 1 to 10^8 (default 1000)\n"
	"  --keys N         working set (default: as many as fit in 256 MiB,\n"
	"                   at least 1, at most REQUESTS)\n"
	"  --ns NS          namespace of the bench keys (default \"bench\")\n"
	"  --json           one JSON object: op, size, clients, requests,\n"
	"                   keys, seconds, ops_per_s, gbytes_per_s, p50_us,\n"
	"                   p99_us, errors\n";

int kvt_cli_bench_run(const struct kvt_cli_bench_opts *opts)
{
	struct kvt_cli_bench_opts oo = *opts;
	const struct kvt_cli_bench_opts *o = &oo;
	struct bench b = { .o = o };
	struct worker *w;
	struct kvt_load_tally *ty;
	struct kvt_load_result r;
	kvt_client **cs;
	unsigned nc = o->clients;
	int status = KVT_CLI_OK, rc;

	oo.keys = kvt_load_keys(oo.keys, oo.size, oo.requests);
	b.batch = 1;
	if (o->op == KVT_LOAD_MGET) {
		b.batch = BENCH_BATCH;
		while (b.batch > 1 && b.batch * o->size > BENCH_BATCH_BYTES)
			b.batch /= 2;
	}
	atomic_init(&b.done, 0);

	rc = kvt_load_pool_init(&b.pool, o->size, o->keys);
	w = calloc(nc, sizeof(*w));
	cs = calloc(nc, sizeof(*cs));
	ty = calloc(nc, sizeof(*ty));
	if (rc < 0 || !w || !cs || !ty) {
		fprintf(stderr, "kvtier: bench: out of memory\n");
		status = KVT_CLI_FAIL;
		goto out;
	}

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
	if (o->op != KVT_LOAD_PUT) {
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

	for (unsigned t = 0; t < nc; t++) {
		w[t].b = &b;
		w[t].id = t;
		w[t].c = cs[t];
		w[t].tally = &ty[t];
		kvt_load_share(o->requests, nc, t, &w[t].first, &w[t].count);
		w[t].dst = kvt_load_alloc_touched((size_t)b.batch *
						  (size_t)o->size);
		if (!w[t].dst || kvt_load_tally_init(&ty[t], w[t].count) < 0) {
			fprintf(stderr, "kvtier: bench: out of memory\n");
			status = KVT_CLI_FAIL;
			goto out;
		}
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

	if (kvt_load_result_compute(&r, ty, nc, o->requests, o->size) < 0) {
		fprintf(stderr, "kvtier: bench: out of memory\n");
		status = KVT_CLI_FAIL;
		goto out;
	}
	if (o->json) {
		kvt_load_print_json(stdout, NULL, o->op, o->size, nc,
				    o->requests, o->keys, &r);
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
		       kvt_load_op_name(o->op), (unsigned long long)o->size,
		       kvt_size_format(o->size, sz, sizeof(sz)), nc,
		       (unsigned long long)o->requests,
		       (unsigned long long)o->keys, r.seconds, r.ops_per_s,
		       r.gbytes_per_s, r.p50_us, r.p99_us,
		       (unsigned long long)r.errors);
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
	if (status == KVT_CLI_OK && r.errors > 0) {
		fprintf(stderr, "kvtier: bench: %llu of %llu requests failed, "
			"missed or returned a wrong value\n",
			(unsigned long long)r.errors,
			(unsigned long long)o->requests);
		status = KVT_CLI_MISS;
	}
out:
	for (unsigned t = 0; w && cs && ty && t < nc; t++) {
		kvt_close(cs[t]);
		free(w[t].dst);
		kvt_load_tally_free(&ty[t]);
	}
	free(ty);
	free(cs);
	free(w);
	kvt_load_pool_free(&b.pool);
	return status;
}
