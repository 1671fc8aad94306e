/*
 * test_l4.c - L4 end to end (#16): two kvtierd "hosts" (each its own
 * socket and data directory) sharing a real Redis Cluster of three masters
 * and three replicas on loopback (tests/l4cluster.sh, through l4cluster.h).
 *
 *   two hosts      host A stores a prefix (--l4-write put); host B, which
 *                  never saw it, MATCHes all of it and MGETs it with
 *                  identical bytes, its L4 gets batched; PREFETCH brings
 *                  blocks into B's RAM; evict mode gives L4 what L3
 *                  reclaims, and another host reads it back.
 *   garbage        values written straight into the cluster under kvtier's
 *                  key names (another program's, a truncated header, a
 *                  valid block of another key) are counted misses.
 *   drop           a DROP on A is seen by B, which held blocks of the
 *                  namespace in RAM: gone there too within seconds.
 *   failover       a master killed while B reads a prefix from L4 and
 *                  both hosts serve local blocks: no wrong byte, every
 *                  local get hits, L4 back within 10 s of the promotion.
 *   down           every node stopped, then killed: local gets keep their
 *                  latency, L4 gets are misses, errors are counted.
 *
 * Skipped, with a line saying so, where redis-server is not installed
 * (scripts/deps.sh installs it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <limits.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "integ_harness.h"
#include "kvtier.h"
#include "l4cluster.h"

static struct l4c CL;
/*
 * The hosts, global so that each test's teardown stops them even when an
 * assertion left the test early (a daemon left running would outlive the
 * test program and hold its output open).
 */
static struct integ_daemon A, B, C;

static int hosts_stop(void **state)
{
	(void)state;
	integ_cleanup(&A);
	integ_cleanup(&B);
	integ_cleanup(&C);
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Starts a host on the cluster with extra arguments (NULL-terminated). */
static void host_start(struct integ_daemon *d, const char *const *more)
{
	const char *argv[40];
	int n = 0;

	memset(d, 0, sizeof(*d));
	argv[n++] = "--l4";
	argv[n++] = CL.url;
	/* Short, so that the failover and outage tests see timeouts soon. */
	argv[n++] = "--l4-timeout";
	argv[n++] = "500";
	argv[n++] = "--l4-connect-timeout";
	argv[n++] = "300";
	for (int i = 0; more && more[i] && n < 38; i++)
		argv[n++] = more[i];
	argv[n] = NULL;
	assert_int_equal(integ_start(d, argv), 0);
}

static kvt_client *conn(struct integ_daemon *d)
{
	kvt_client *c = NULL;

	assert_int_equal(kvt_connect(&c, d->sock), 0);
	return c;
}

/* A counter of the daemon's stats, in object obj (NULL: top level). */
static uint64_t jstat(kvt_client *c, const char *obj, const char *name)
{
	char *json = NULL;
	size_t n;
	uint64_t v = 0;

	assert_int_equal(kvt_stats_json(c, &json, &n), 0);
	if (integ_json_u64(json, obj, name, &v) != 0)
		fail_msg("no %s.%s in the stats", obj ? obj : "", name);
	free(json);
	return v;
}

/* Waits until stat >= want (at most ms); returns the last value. */
static uint64_t wait_stat(kvt_client *c, const char *obj, const char *name,
			  uint64_t want, unsigned ms)
{
	uint64_t t0 = now_ms(), v;

	while ((v = jstat(c, obj, name)) < want && now_ms() - t0 < ms)
		integ_sleep_ms(20);
	return v;
}

/* Waits until L4's write queue is empty and nothing is pending. */
static void settle(kvt_client *c)
{
	uint64_t t0 = now_ms();

	while (now_ms() - t0 < 20000) {
		if (jstat(c, "l4", "queued_bytes") == 0 &&
		    jstat(c, NULL, "jobs_pending") == 0)
			return;
		integ_sleep_ms(20);
	}
	fail_msg("L4 writes still queued after 20 s");
}

/* A set of blocks: prefix keys of one namespace, deterministic bytes. */
struct blocks {
	char ns[64];
	size_t n, len;
	uint8_t (*keys)[32];
	const void **kp;
	size_t *kl;
	uint8_t *data; /* n * len */
	uint64_t seed;
};

static void blocks_make(struct blocks *b, const char *ns, size_t n,
			size_t len, uint64_t seed)
{
	uint32_t *tok = malloc(n * 16 * sizeof(*tok));
	size_t nk = 0;

	memset(b, 0, sizeof(*b));
	snprintf(b->ns, sizeof(b->ns), "%s", ns);
	b->n = n;
	b->len = len;
	b->seed = seed;
	b->keys = malloc(n * sizeof(*b->keys));
	b->kp = malloc(n * sizeof(*b->kp));
	b->kl = malloc(n * sizeof(*b->kl));
	b->data = malloc(n * len);
	assert_true(tok && b->keys && b->kp && b->kl && b->data);
	for (size_t i = 0; i < n * 16; i++)
		tok[i] = (uint32_t)(seed * 100003 + i);
	assert_int_equal(kvt_prefix_keys(ns, strlen(ns), tok, n * 16, 16,
					 b->keys, n, &nk), 0);
	assert_int_equal(nk, n);
	for (size_t i = 0; i < n; i++) {
		b->kp[i] = b->keys[i];
		b->kl[i] = 32;
		integ_fill(b->data + i * len, len, seed * 7919 + i);
	}
	free(tok);
}

static void blocks_free(struct blocks *b)
{
	free(b->keys);
	free(b->kp);
	free(b->kl);
	free(b->data);
}

static void put_all(kvt_client *c, const struct blocks *b)
{
	const void **v = malloc(b->n * sizeof(*v));
	size_t *vl = malloc(b->n * sizeof(*vl));
	int *st = malloc(b->n * sizeof(*st));

	assert_true(v && vl && st);
	for (size_t i = 0; i < b->n; i++) {
		v[i] = b->data + i * b->len;
		vl[i] = b->len;
	}
	assert_int_equal(kvt_mput(c, b->ns, b->kp, b->kl, v, vl, b->n, NULL,
				  st), 0);
	for (size_t i = 0; i < b->n; i++)
		assert_int_equal(st[i], 0);
	free(v);
	free(vl);
	free(st);
}

/* What an MGET of blocks [from, from+n) found. */
struct got {
	size_t hits, misses, wrong, errors;
};

static struct got mget_check(kvt_client *c, const struct blocks *b,
			     size_t from, size_t n)
{
	struct got g = { 0 };
	struct iovec *io = malloc(n * sizeof(*io));
	size_t *vl = malloc(n * sizeof(*vl));
	int *st = malloc(n * sizeof(*st));
	uint8_t *buf = malloc(n * b->len + 1);
	int rc;

	assert_true(io && vl && st && buf);
	for (size_t i = 0; i < n; i++) {
		io[i].iov_base = buf + i * b->len;
		io[i].iov_len = b->len;
	}
	rc = kvt_mget(c, b->ns, b->kp + from, b->kl + from, n, io, vl, st);
	for (size_t i = 0; i < n; i++) {
		if (rc == 0 && st[i] == 0) {
			if (vl[i] == b->len &&
			    memcmp(buf + i * b->len,
				   b->data + (from + i) * b->len,
				   b->len) == 0)
				g.hits++;
			else
				g.wrong++;
		} else if (rc == 0 && st[i] == KVT_ENOTFOUND) {
			g.misses++;
		} else {
			g.errors++;
		}
	}
	free(io);
	free(vl);
	free(st);
	free(buf);
	return g;
}

static size_t match(kvt_client *c, const struct blocks *b, size_t n)
{
	size_t m = 0;

	assert_int_equal(kvt_match(c, b->ns, b->kp, b->kl, n, &m), 0);
	return m;
}

/* ---- two hosts -------------------------------------------------------- */

/*
 * `kvtier stats` of a host with L4: an l4 row in the table, an l4 section,
 * and Prometheus text that tests/integ/prom_check.py accepts, with L4's
 * families in it.
 */
static void stats_outputs(const struct integ_daemon *d)
{
	const char *kvtier = getenv("KVTIER");
	char root[PATH_MAX], cmd[3 * PATH_MAX];
	char *slash;

	if (!kvtier || !*kvtier) {
		print_message("skip: $KVTIER not set, stats output not checked\n");
		return;
	}
	snprintf(root, sizeof(root), "%s", CL.script); /* ROOT/tests/l4cluster.sh */
	slash = strrchr(root, '/');
	assert_non_null(slash);
	*slash = '\0';
	snprintf(cmd, sizeof(cmd), "'%s' -s '%s' stats | grep -q '^l4 .*cluster' "
		 "&& '%s' -s '%s' stats | grep -q '^L4 (cluster)'", kvtier,
		 d->sock, kvtier, d->sock);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "'%s' -s '%s' stats --prometheus >'%s/prom' "
		 "&& python3 '%s/integ/prom_check.py' <'%s/prom' >/dev/null && "
		 "grep -q '^kvtier_tier_hits_total{tier=\"l4\"} [1-9]' '%s/prom' "
		 "&& grep -q '^kvtier_l4_errors_total ' '%s/prom' && grep -q "
		 "'^kvtier_l4_latency_microseconds{op=\"get\",quantile=\"0.99\"} '"
		 " '%s/prom'", kvtier, d->sock, d->dir, root, d->dir, d->dir,
		 d->dir, d->dir);
	assert_int_equal(system(cmd), 0);
}

static void test_two_hosts(void **state)
{
	static const char *const a_args[] = { "--l4-write", "put", NULL };
	struct blocks p, extra;
	kvt_client *a, *b;
	struct got g;
	size_t started = 0;

	(void)state;
	blocks_make(&p, "twohosts/bf16", 48, 256 << 10, 1);
	host_start(&A, a_args);
	host_start(&B, NULL);
	a = conn(&A);
	b = conn(&B);
	assert_int_equal(jstat(b, "l4", "slots_mapped"), 16384);

	/* A stores the prefix; with put, every block goes to L4. */
	put_all(a, &p);
	settle(a);
	assert_true(jstat(a, "l4", "puts") >= p.n);
	assert_int_equal(jstat(a, "l4", "puts_dropped"), 0);
	/* The frames made for L4 stay in L2 as inclusive copies. */
	assert_true(jstat(a, "l2", "entries") > 0);

	/* B never saw it: MATCH finds all of it in L4, a gap stops it. */
	blocks_make(&extra, "twohosts/bf16", 56, 256 << 10, 1);
	assert_int_equal(match(b, &p, p.n), p.n);
	assert_int_equal(match(b, &extra, extra.n), p.n);
	assert_true(jstat(b, "l4", "probes_found") >= p.n);

	/* MGET: identical bytes, L4 gets batched (not one call per key). */
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.wrong, 0);
	assert_int_equal(g.errors, 0);
	assert_int_equal(g.hits, p.n);
	assert_true(jstat(b, "l4", "hits") >= p.n);
	/* Each burst of the client's pipelined GETs went as a few calls. */
	uint64_t calls = jstat(b, "l4", "get_calls");
	print_message("two hosts: %zu blocks in %" PRIu64 " L4 get calls\n",
		      p.n, calls);
	assert_true(calls < p.n);
	/* Served once (admission): nothing of it entered B's L1. */
	assert_int_equal(jstat(b, "l1", "entries"), 0);
	/* Read again: admitted, now local. */
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.hits, p.n);
	assert_int_equal(jstat(b, "l1", "entries"), p.n);
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.hits, p.n);
	assert_true(jstat(b, "l1", "hits") >= p.n);
	stats_outputs(&B);

	/*
	 * PREFETCH on a third host: blocks come up from L4 into RAM.  The
	 * 32 keys of one request reach L4 as a few batch calls (one per L4
	 * thread's share), not 32.
	 */
	kvt_client *cc;
	host_start(&C, NULL);
	cc = conn(&C);
	assert_int_equal(kvt_prefetch(cc, p.ns, p.kp, p.kl, 32, &started), 0);
	assert_int_equal(started, 32);
	assert_int_equal(wait_stat(cc, "l1", "entries", 32, 10000), 32);
	calls = jstat(cc, "l4", "get_calls");
	print_message("prefetch: 32 blocks in %" PRIu64 " L4 get calls\n",
		      calls);
	assert_true(calls <= 8);
	g = mget_check(cc, &p, 0, 32);
	assert_int_equal(g.hits, 32);
	assert_true(jstat(cc, NULL, "prefetch_hits") >= 32);

	/* DEL on A reaches L4: C no longer finds block 40. */
	g = mget_check(cc, &p, 40, 1);
	assert_int_equal(g.misses, 0);
	kvt_del(a, p.ns, p.kp[40], 32);
	settle(a);
	g = mget_check(cc, &p, 40, 1);
	assert_int_equal(g.misses, 1);

	kvt_close(a);
	kvt_close(b);
	kvt_close(cc);
	blocks_free(&p);
	blocks_free(&extra);
}

/* Evict mode: what L3 reclaims goes to L4, and another host reads it. */
static void test_evict_to_l4(void **state)
{
	static const char *const small[] = {
		"--l1-size", "4M", "--l2-size", "4M", "--l3-size", "32M",
		"--l3-region-size", "8M", NULL
	};
	struct blocks p;
	kvt_client *a, *b;
	struct got g;

	(void)state;
	blocks_make(&p, "evict/bf16", 64, 1 << 20, 2); /* 64 MiB: 2x all */
	host_start(&A, small);
	host_start(&B, NULL);
	a = conn(&A);
	b = conn(&B);
	put_all(a, &p);
	settle(a);
	uint64_t puts = jstat(a, "l4", "puts");
	print_message("evict: %" PRIu64 " of %zu blocks reached L4 (%" PRIu64
		      " dropped, %" PRIu64 " skipped), %" PRIu64
		      " regions reclaimed\n", puts, p.n,
		      jstat(a, "l4", "puts_dropped"),
		      jstat(a, "l4", "puts_skipped"),
		      jstat(a, NULL, "l3_regions_reclaimed"));
	assert_true(jstat(a, NULL, "l3_regions_reclaimed") >= 4);
	/* Every block a reclaim dropped went to L4: none lost, none stale. */
	assert_int_equal(jstat(a, "l4", "puts_dropped"), 0);
	assert_int_equal(jstat(a, "l4", "puts_skipped"), 0);
	assert_true(puts >= 24);
	/* The oldest blocks left A for L4; B reads them back intact. */
	g = mget_check(b, &p, 0, 16);
	assert_int_equal(g.wrong, 0);
	assert_int_equal(g.hits, 16);
	/* And A itself, which no longer holds them, too. */
	g = mget_check(a, &p, 0, 8);
	assert_int_equal(g.wrong, 0);
	assert_int_equal(g.hits, 8);
	kvt_close(a);
	kvt_close(b);
	blocks_free(&p);
}

/* ---- garbage in the cluster ------------------------------------------ */

static void hex(char *out, const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* kvtier's L4 key name of (ns, key) (kvt_l4.h, Keys), into out[72]. */
static void l4_name(char *out, const char *ns, const uint8_t *key,
		    size_t key_len)
{
	uint8_t d[SHA256_DIGEST_LENGTH], in[16 + 256 + 64];
	size_t n = strlen(ns), len;

	assert_true(n < 256 && key_len <= 64);
	memcpy(out, "kvt:", 4);
	memcpy(in, "kvtier-l4-ns", 12);
	in[12] = (uint8_t)n;
	memcpy(in + 13, ns, n);
	SHA256(in, 13 + n, d);
	hex(out + 4, d, 16);
	out[36] = ':';
	memcpy(in, "kvtier-l4-key", 13);
	in[13] = (uint8_t)n;
	memcpy(in + 14, ns, n);
	memcpy(in + 14 + n, key, key_len);
	len = 14 + n + key_len;
	SHA256(in, len, d);
	hex(out + 37, d, 16);
	out[69] = '\0';
}

static void test_garbage(void **state)
{
	static const char *const a_args[] = { "--l4-write", "put", NULL };
	struct blocks p;
	kvt_client *a, *b;
	char name[80], src[80];
	struct got g;

	(void)state;
	blocks_make(&p, "garbage/bf16", 4, 64 << 10, 3);
	host_start(&A, a_args);
	host_start(&B, NULL);
	a = conn(&A);
	b = conn(&B);
	put_all(a, &p);
	settle(a);
	uint64_t corrupt0 = jstat(b, "l4", "misses_corrupt");

	/* Block 0: another program's value under kvtier's name. */
	l4_name(name, p.ns, p.keys[0], 32);
	assert_int_equal(l4c_sh(&CL, "cli '%s' %d -c SET %s "
				"'not a kvtier value' >/dev/null", CL.dir,
				CL.ports[0], name), 0);
	/* Block 1: a header cut short. */
	l4_name(name, p.ns, p.keys[1], 32);
	assert_int_equal(l4c_sh(&CL, "cli '%s' %d -c SET %s KVL4xxxx "
				">/dev/null", CL.dir, CL.ports[0], name), 0);
	/* Block 2: block 3's valid value, copied under block 2's name. */
	l4_name(src, p.ns, p.keys[3], 32);
	l4_name(name, p.ns, p.keys[2], 32);
	assert_int_equal(l4c_sh(&CL, "cli '%s' %d -c --raw GET %s | "
				"sh '%s' cli '%s' %d -c -x SET %s >/dev/null",
				CL.dir, CL.ports[0], src, CL.script, CL.dir,
				CL.ports[0], name), 0);
	/* (redis-cli -x appends a newline: also a length mismatch.) */
	for (int i = 0; i < 3; i++) {
		g = mget_check(b, &p, (size_t)i, 1);
		assert_int_equal(g.wrong, 0);
		assert_int_equal(g.misses, 1);
	}
	assert_true(jstat(b, "l4", "misses_corrupt") >= corrupt0 + 3);
	/* MATCH stops at the first block it cannot use. */
	assert_int_equal(match(b, &p, p.n), 0);
	/* The intact block is still served. */
	g = mget_check(b, &p, 3, 1);
	assert_int_equal(g.hits, 1);
	kvt_close(a);
	kvt_close(b);
	blocks_free(&p);
}

/* ---- drop between hosts ----------------------------------------------- */

static void test_drop(void **state)
{
	static const char *const a_args[] = { "--l4-write", "put", NULL };
	struct blocks p, own;
	kvt_client *a, *b;
	uint64_t dropped = 0, t0;
	struct got g;

	(void)state;
	blocks_make(&p, "drop/bf16", 16, 128 << 10, 4);
	host_start(&A, a_args);
	host_start(&B, NULL);
	a = conn(&A);
	b = conn(&B);
	put_all(a, &p);
	settle(a);
	/* B reads the prefix twice: it is in B's L1 now. */
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.hits, p.n);
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.hits, p.n);
	assert_int_equal(jstat(b, "l1", "entries"), p.n);
	/* And a block of its own in the namespace (evict: not in L4). */
	blocks_make(&own, "drop/bf16", 1, 4096, 40);
	put_all(b, &own);
	assert_int_equal(jstat(b, "l1", "entries"), p.n + 1);

	t0 = now_ms();
	assert_int_equal(kvt_drop(a, p.ns, &dropped), 0);
	assert_int_equal(dropped, p.n);
	/* B sees it within a few seconds and drops its copies too. */
	assert_true(wait_stat(b, "l4", "remote_drops", 1, 10000) >= 1);
	print_message("drop: seen by the other host after %" PRIu64 " ms\n",
		      now_ms() - t0);
	assert_int_equal(jstat(b, "l1", "entries"), 0);
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.misses, p.n);
	assert_int_equal(match(b, &p, p.n), 0);
	g = mget_check(b, &own, 0, 1);
	assert_int_equal(g.misses, 1);
	/* A's own drop is not reported back to A. */
	assert_int_equal(jstat(a, "l4", "remote_drops"), 0);
	/* The namespace lives on: a new put is seen by B. */
	put_all(a, &p);
	settle(a);
	g = mget_check(b, &p, 0, p.n);
	assert_int_equal(g.hits, p.n);
	kvt_close(a);
	kvt_close(b);
	blocks_free(&p);
	blocks_free(&own);
}

/* ---- failover ----------------------------------------------------------- */

struct loader {
	const char *sock;
	const struct blocks *b;
	size_t batch;
	atomic_int stop;
	atomic_ulong passes, hits, misses, wrong, errors;
	atomic_ulong max_ms;	 /* slowest MGET */
	atomic_ulong clean_ms;	 /* end of the last pass with every block */
	atomic_ulong clean_from; /* start of that pass */
};

static void *loader_main(void *arg)
{
	struct loader *l = arg;
	kvt_client *c = NULL;

	if (kvt_connect(&c, l->sock) != 0) {
		atomic_fetch_add(&l->errors, 1);
		return NULL;
	}
	while (!atomic_load(&l->stop)) {
		uint64_t t0 = now_ms();
		size_t ok = 0;

		for (size_t i = 0; i < l->b->n; i += l->batch) {
			size_t n = l->b->n - i < l->batch ? l->b->n - i
							  : l->batch;
			uint64_t s = now_ms();
			struct got g = mget_check(c, l->b, i, n);
			uint64_t ms = now_ms() - s;

			if (ms > atomic_load(&l->max_ms))
				atomic_store(&l->max_ms, ms);
			atomic_fetch_add(&l->hits, g.hits);
			atomic_fetch_add(&l->misses, g.misses);
			atomic_fetch_add(&l->wrong, g.wrong);
			atomic_fetch_add(&l->errors, g.errors);
			ok += g.hits;
		}
		if (ok == l->b->n) {
			atomic_store(&l->clean_from, t0);
			atomic_store(&l->clean_ms, now_ms());
		}
		atomic_fetch_add(&l->passes, 1);
	}
	kvt_close(c);
	return NULL;
}

static void loader_start(struct loader *l, pthread_t *th, const char *sock,
			 const struct blocks *b, size_t batch)
{
	memset(l, 0, sizeof(*l));
	l->sock = sock;
	l->b = b;
	l->batch = batch;
	assert_int_equal(pthread_create(th, NULL, loader_main, l), 0);
	while (atomic_load(&l->passes) < 2)
		integ_sleep_ms(10);
}

static void loader_stop(struct loader *l, pthread_t th)
{
	atomic_store(&l->stop, 1);
	pthread_join(th, NULL);
}

static void test_failover(void **state)
{
	static const char *const a_args[] = { "--l4-write", "put", NULL };
	/* B's RAM is far smaller than the prefix and it has no L3, so that
	 * every pass reads the prefix from L4 (scan resistance keeps it out
	 * of L1), while its own blocks stay in L1. */
	static const char *const b_args[] = {
		"--l1-size", "4M", "--l2-size", "0", "--l3-size", "0", NULL
	};
	struct blocks p, bl, al;
	struct loader lp, lb, la;
	pthread_t tp, tb, ta;
	kvt_client *a, *b;
	int masters[8], nm, victim;
	uint64_t t_kill, t_promoted, deadline;

	(void)state;
	if (integ_wrapper()) {
		/* Its bounds are times: valgrind is tens of times slower. */
		print_message("skip: failover under a wrapper\n");
		skip();
	}
	blocks_make(&p, "failover/bf16", 160, 64 << 10, 5); /* 10 MiB */
	blocks_make(&bl, "local-b", 16, 64 << 10, 6);
	blocks_make(&al, "local-a", 16, 64 << 10, 7);
	host_start(&A, a_args);
	host_start(&B, b_args);
	a = conn(&A);
	b = conn(&B);
	put_all(a, &p);
	put_all(a, &al);
	put_all(b, &bl);
	settle(a);
	assert_int_equal(l4c_sync(&CL, 10), 0);

	loader_start(&lp, &tp, B.sock, &p, 32);
	loader_start(&lb, &tb, B.sock, &bl, 16);
	loader_start(&la, &ta, A.sock, &al, 16);
	assert_int_equal(atomic_load(&lp.wrong), 0);
	assert_true(atomic_load(&lp.clean_ms) > 0);
	uint64_t b_l1_hits0 = jstat(b, "l1", "hits");

	nm = l4c_masters(&CL, masters, 8);
	assert_int_equal(nm, 3);
	victim = masters[0];
	t_kill = now_ms();
	assert_int_equal(l4c_kill(&CL, victim), 0);
	for (;;) {
		int found = 0;

		nm = l4c_masters(&CL, masters, 8);
		for (int m = 0; m < nm; m++)
			found |= masters[m] == victim;
		if (nm == 3 && !found)
			break;
		assert_true(now_ms() - t_kill < 30000);
		integ_sleep_ms(100);
	}
	assert_int_equal(l4c_wait(&CL, 30), 0);
	t_promoted = now_ms();
	/* Back within 10 s: a whole pass, begun after the promotion, with
	 * every block from L4. */
	deadline = t_promoted + 10000;
	while (atomic_load(&lp.clean_from) < t_promoted && now_ms() < deadline)
		integ_sleep_ms(20);
	uint64_t back = atomic_load(&lp.clean_from) >= t_promoted
				? atomic_load(&lp.clean_ms) - t_promoted
				: UINT64_MAX;
	loader_stop(&lp, tp);
	loader_stop(&lb, tb);
	loader_stop(&la, ta);
	print_message("failover: promoted %" PRIu64 " ms after the kill, L4 "
		      "back %" PRIu64 " ms after; B's prefix reads: %lu hits, "
		      "%lu misses; slowest local MGET %lu ms (B), %lu ms (A); "
		      "L4 errors %" PRIu64 ", timeouts %" PRIu64 "\n",
		      t_promoted - t_kill, back, atomic_load(&lp.hits),
		      atomic_load(&lp.misses), atomic_load(&lb.max_ms),
		      atomic_load(&la.max_ms), jstat(b, "l4", "errors"),
		      jstat(b, "l4", "timeouts"));
	/* No wrong byte anywhere, no error to any client. */
	assert_int_equal(atomic_load(&lp.wrong), 0);
	assert_int_equal(atomic_load(&lb.wrong), 0);
	assert_int_equal(atomic_load(&la.wrong), 0);
	assert_int_equal(atomic_load(&lp.errors), 0);
	assert_int_equal(atomic_load(&lb.errors), 0);
	assert_int_equal(atomic_load(&la.errors), 0);
	/* Local hit rate unchanged: every local get hit, on both hosts. */
	assert_int_equal(atomic_load(&lb.misses), 0);
	assert_int_equal(atomic_load(&la.misses), 0);
	assert_true(jstat(b, "l1", "hits") > b_l1_hits0);
	/* L4 back within 10 s of the failover. */
	assert_true(back <= 10000);
	kvt_close(a);
	kvt_close(b);
	blocks_free(&p);
	blocks_free(&bl);
	blocks_free(&al);
}

/* ---- the whole cluster down (last: it takes the cluster) ---------------- */

/* Sends sig to every node of the cluster. */
static void signal_nodes(int sig)
{
	for (int i = 0; i < L4C_NODES; i++) {
		char path[300];
		FILE *f;
		long pid = 0;

		snprintf(path, sizeof(path), "%s/%d/pid", CL.dir, CL.ports[i]);
		f = fopen(path, "r");
		if (f && fscanf(f, "%ld", &pid) == 1 && pid > 0)
			kill((pid_t)pid, sig);
		if (f)
			fclose(f);
	}
}

/* Slowest of n single GETs of local blocks, in ms. */
static uint64_t local_get_max_ms(kvt_client *c, const struct blocks *b,
				 int n)
{
	uint64_t worst = 0;

	for (int i = 0; i < n; i++) {
		uint64_t t0 = now_ms();
		struct got g = mget_check(c, b, (size_t)i % b->n, 1);
		uint64_t ms = now_ms() - t0;

		assert_int_equal(g.hits, 1);
		if (ms > worst)
			worst = ms;
	}
	return worst;
}

static void test_down(void **state)
{
	struct blocks local, remote;
	struct loader lr;
	pthread_t tr;
	kvt_client *b;
	uint64_t up_ms, stopped_ms, dead_ms;

	(void)state;
	blocks_make(&local, "down-local", 16, 64 << 10, 8);
	blocks_make(&remote, "down-remote", 64, 64 << 10, 9);
	host_start(&B, NULL);
	b = conn(&B);
	put_all(b, &local);
	up_ms = local_get_max_ms(b, &local, 50);

	/* Stopped nodes: L4 calls wait for their timeouts. */
	signal_nodes(SIGSTOP);
	memset(&lr, 0, sizeof(lr));
	lr.sock = B.sock;
	lr.b = &remote;
	lr.batch = 32;
	assert_int_equal(pthread_create(&tr, NULL, loader_main, &lr), 0);
	/* Longer than a call's timeouts, local gets all along. */
	stopped_ms = 0;
	for (int i = 0; i < 30; i++) {
		uint64_t ms = local_get_max_ms(b, &local, 2);

		if (ms > stopped_ms)
			stopped_ms = ms;
		integ_sleep_ms(50);
	}
	assert_int_equal(match(b, &local, local.n), local.n);
	assert_true(jstat(b, "l4", "timeouts") > 0);
	/* Killed nodes: refused at once, then backed off. */
	signal_nodes(SIGKILL);
	dead_ms = local_get_max_ms(b, &local, 50);
	while (atomic_load(&lr.passes) < 2)
		integ_sleep_ms(20);
	loader_stop(&lr, tr);
	print_message("down: slowest local GET %" PRIu64 " ms with L4 up, %"
		      PRIu64 " ms stopped, %" PRIu64 " ms killed; L4 errors %"
		      PRIu64 ", timeouts %" PRIu64 ", fast fails %" PRIu64 "\n",
		      up_ms, stopped_ms, dead_ms, jstat(b, "l4", "errors"),
		      jstat(b, "l4", "timeouts"), jstat(b, "l4", "fast_fails"));
	/* Only L4 hits are lost: L4-only keys miss, no client error. */
	assert_int_equal(atomic_load(&lr.hits), 0);
	assert_int_equal(atomic_load(&lr.errors), 0);
	assert_int_equal(atomic_load(&lr.wrong), 0);
	assert_true(atomic_load(&lr.misses) > 0);
	assert_true(jstat(b, "l4", "errors") > 0);
	/* Local GETs keep their latency: a generous bound (shared VM). */
	assert_true(stopped_ms < 200);
	assert_true(dead_ms < 200);
	kvt_close(b);
	blocks_free(&local);
	blocks_free(&remote);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_two_hosts, hosts_stop),
		cmocka_unit_test_teardown(test_evict_to_l4, hosts_stop),
		cmocka_unit_test_teardown(test_garbage, hosts_stop),
		cmocka_unit_test_teardown(test_drop, hosts_stop),
		/* Kills a master. */
		cmocka_unit_test_teardown(test_failover, hosts_stop),
		/* Stops every node: last. */
		cmocka_unit_test_teardown(test_down, hosts_stop),
	};
	int rc;

	/* L4_TEST=name runs one test (for debugging). */
	if (getenv("L4_TEST"))
		cmocka_set_test_filter(getenv("L4_TEST"));
	rc = l4c_start(&CL);
	if (rc == 77) {
		printf("skip: redis-server not installed (scripts/deps.sh "
		       "installs it): L4 not tested\n");
		return 0;
	}
	if (rc != 0) {
		fprintf(stderr, "test_l4: could not start a cluster\n");
		return 1;
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	l4c_stop(&CL);
	return rc;
}
