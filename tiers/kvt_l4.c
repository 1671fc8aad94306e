/*
 * kvt_l4.c - L4's handle, sessions and block calls (see kvt_l4.h): what a
 * get, put or del sends and what its replies mean; the counters.
 *
 * The wire work -- routing, pipelining, redirects, timeouts -- is
 * kvt_l4_cluster.c's and kvt_l4_conn.c's; this file and kvt_l4_gen.c (the
 * generation table, drop, generation reads and polls) only build commands
 * (struct l4_cmd) and read their results.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "kvt_clock.h"
#include "kvt_codec.h"
#include "kvt_l4_int.h"
#include "kvtier_errors.h"

#define MS ((uint64_t)1000 * 1000)

__attribute__((format(printf, 2, 3)))
static void set_err(const struct kvt_l4_config *cfg, const char *fmt, ...)
{
	va_list ap;

	if (cfg && cfg->errmsg && cfg->errmsg_len) {
		va_start(ap, fmt);
		vsnprintf(cfg->errmsg, cfg->errmsg_len, fmt, ap);
		va_end(ap);
	}
}

/* ---- open ------------------------------------------------------------------ */

static int parse_url(struct kvt_l4 *l4, const struct kvt_l4_config *cfg)
{
	static const char scheme[] = "redis-cluster://";
	const char *p = cfg->url;

	if (strncmp(p, scheme, sizeof(scheme) - 1) != 0) {
		set_err(cfg, "L4 URL must start with redis-cluster://: %s",
			cfg->url);
		return KVT_EINVAL;
	}
	p += sizeof(scheme) - 1;
	for (;;) {
		const char *end = strchr(p, ',');
		const char *host = p, *colon;
		size_t len = end ? (size_t)(end - p) : strlen(p), hlen;
		char *e;
		long port;
		char buf[8];

		if (len == 0)
			goto bad;
		if (*p == '[') { /* [v6]:port */
			const char *rb = memchr(p, ']', len);

			if (!rb || rb + 1 >= p + len || rb[1] != ':')
				goto bad;
			host = p + 1;
			hlen = (size_t)(rb - host);
			colon = rb + 1;
		} else {
			colon = NULL;
			for (const char *q = p; q < p + len; q++)
				if (*q == ':')
					colon = q;
			if (!colon)
				goto bad;
			hlen = (size_t)(colon - p);
		}
		if (hlen == 0 || hlen > 255)
			goto bad;
		len -= (size_t)(colon + 1 - p);
		if (len == 0 || len >= sizeof(buf))
			goto bad;
		memcpy(buf, colon + 1, len);
		buf[len] = '\0';
		port = strtol(buf, &e, 10);
		if (*e || buf[0] < '0' || buf[0] > '9' || port <= 0 ||
		    port > 65535)
			goto bad;
		if (l4->n_nodes >= KVT_L4_SEEDS_MAX) {
			set_err(cfg, "L4 URL has too many seeds: %s", cfg->url);
			return KVT_EINVAL;
		}
		if (kvt_l4i_node_get(l4, host, hlen, (int)port) < 0)
			return -ENOMEM;
		if (!end)
			break;
		p = end + 1;
	}
	l4->n_seeds = l4->n_nodes;
	return 0;
bad:
	set_err(cfg, "L4 URL: want redis-cluster://HOST:PORT[,HOST:PORT...]: %s",
		cfg->url);
	return KVT_EINVAL;
}

static int read_password(struct kvt_l4 *l4, const struct kvt_l4_config *cfg)
{
	char buf[4097];
	size_t len = 0;
	int fd = open(cfg->password_file, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		int err = -errno;

		set_err(cfg, "cannot read L4 password file %s",
			cfg->password_file);
		return err;
	}
	while (len < sizeof(buf) - 1) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = -errno;

			close(fd);
			set_err(cfg, "cannot read L4 password file %s",
				cfg->password_file);
			return err;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		set_err(cfg, "L4 password file %s is empty", cfg->password_file);
		return KVT_EINVAL;
	}
	l4->password = strdup(buf);
	memset(buf, 0, sizeof(buf));
	return l4->password ? 0 : -ENOMEM;
}

static uint64_t ms_or(unsigned v, unsigned dflt)
{
	return (uint64_t)(v ? v : dflt) * MS;
}

int kvt_l4_open(struct kvt_l4 **out, const struct kvt_l4_config *cfg)
{
	struct kvt_l4 *l4;
	uint64_t seed = 0;
	int rc;

	if (!out || !cfg || !cfg->url) {
		set_err(cfg, "%s", "L4: no URL");
		return KVT_EINVAL;
	}
	if (cfg->password && cfg->password_file) {
		set_err(cfg, "%s", "L4: both a password and a password file");
		return KVT_EINVAL;
	}
	l4 = calloc(1, sizeof(*l4));
	if (!l4)
		return -ENOMEM;
	pthread_mutex_init(&l4->lock, NULL);
	for (unsigned i = 0; i < KVT_L4_SLOTS; i++)
		l4->slots[i] = L4_NO_NODE;
	l4->ttl_s = cfg->ttl_s;
	l4->connect_timeout_ns = ms_or(cfg->connect_timeout_ms, 500);
	l4->timeout_ns = ms_or(cfg->timeout_ms, 1000);
	l4->backoff_min_ns = ms_or(cfg->backoff_min_ms, 100);
	l4->backoff_max_ns = ms_or(cfg->backoff_max_ms, 5000);
	if (l4->backoff_max_ns < l4->backoff_min_ns)
		l4->backoff_max_ns = l4->backoff_min_ns;
	l4->refresh_min_ns = ms_or(cfg->refresh_min_ms, 200);
	l4->max_redirects = cfg->max_redirects ? cfg->max_redirects : 5;
	l4->no_refresh = cfg->no_refresh;
	l4->watch_max = cfg->watch_max ? cfg->watch_max : 4096;
	l4->watch_nbucket = 16;
	while (l4->watch_nbucket < l4->watch_max * 2)
		l4->watch_nbucket *= 2;
	l4->watch = calloc(l4->watch_max, sizeof(*l4->watch));
	l4->watch_bucket = malloc(l4->watch_nbucket * sizeof(int));
	if (!l4->watch || !l4->watch_bucket) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < l4->watch_nbucket; i++)
		l4->watch_bucket[i] = -1;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = kvt_clock_ns() ^ ((uint64_t)getpid() << 32);
	l4->rng = seed | 1;

	rc = parse_url(l4, cfg);
	if (rc)
		goto fail;
	if (cfg->password) {
		l4->password = strdup(cfg->password);
		if (!l4->password) {
			rc = -ENOMEM;
			goto fail;
		}
	} else if (cfg->password_file) {
		rc = read_password(l4, cfg);
		if (rc)
			goto fail;
	}
	*out = l4;
	return 0;
fail:
	kvt_l4_close(l4);
	return rc;
}

void kvt_l4_close(struct kvt_l4 *l4)
{
	if (!l4)
		return;
	assert(atomic_load(&l4->sessions) == 0);
	for (unsigned i = 0; i < l4->n_nodes; i++)
		free(l4->nodes[i].host);
	free(l4->nodes);
	free(l4->watch);
	free(l4->watch_bucket);
	if (l4->password) {
		memset(l4->password, 0, strlen(l4->password));
		free(l4->password);
	}
	pthread_mutex_destroy(&l4->lock);
	free(l4);
}

int kvt_l4_session_new(struct kvt_l4 *l4, struct kvt_l4_session **out)
{
	int rc;

	if (!l4 || !out)
		return KVT_EINVAL;
	rc = kvt_l4i_session_new(l4, out);
	if (rc == 0)
		atomic_fetch_add(&l4->sessions, 1);
	return rc;
}

void kvt_l4_session_free(struct kvt_l4_session *s)
{
	struct kvt_l4 *l4;

	if (!s)
		return;
	l4 = kvt_l4i_session_l4(s);
	kvt_l4i_session_free(s);
	atomic_fetch_sub(&l4->sessions, 1);
}

int kvt_l4_refresh(struct kvt_l4_session *s)
{
	int rc;

	if (!s)
		return KVT_EINVAL;
	rc = kvt_l4i_refresh(s, 1);
	return rc == 1 ? 0 : rc; /* 1: another thread is refreshing now */
}

/* ---- shared by the batch calls ------------------------------------------- */

/* The distinct namespaces of a batch (usually one). */
struct ns_set {
	struct kvt_l4_ns *v;
	size_t n;
};

/* Index of ns in set, added if new; set->v has room for every key. */
static size_t ns_index(struct ns_set *set, const uint8_t *ns, size_t ns_len)
{
	for (size_t j = 0; j < set->n; j++)
		if (set->v[j].ns_len == ns_len &&
		    (ns_len == 0 || memcmp(set->v[j].ns, ns, ns_len) == 0))
			return j;
	set->v[set->n] = (struct kvt_l4_ns){ ns, ns_len };
	return set->n++;
}

static int keys_ok(const struct kvt_key *k)
{
	return k->ns_len <= KVT_L4_NS_MAX && k->key_len <= KVT_L4_KEY_MAX &&
	       (k->ns || !k->ns_len) && (k->key || !k->key_len);
}

static void cmd_key(struct l4_cmd *m, int kind, const struct kvt_key *k)
{
	memset(m, 0, sizeof(*m));
	m->kind = (uint8_t)kind;
	m->fixed_node = -1;
	m->name_len = (uint8_t)kvt_l4_block_name(k, m->name);
	m->slot = (uint16_t)kvt_l4_key_slot(m->name, m->name_len);
}

void kvt_l4i_free_cmds(struct l4_cmd *cmds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kvt_l4i_reply_free(cmds[i].reply);
	free(cmds);
}

static int is_error(int st)
{
	return st != 0 && st != KVT_ENOTFOUND;
}

void kvt_l4i_count_errors(struct kvt_l4 *l4, const int *st, size_t n,
			 size_t stride)
{
	uint64_t e = 0;

	for (size_t i = 0; i < n; i++)
		e += is_error(*(const int *)((const char *)st + i * stride));
	if (e)
		L4_COUNT(l4, errors, e);
}

void kvt_l4i_op_done(struct kvt_l4 *l4, int op, uint64_t t0, size_t keys)
{
	kvt_l4i_hist_add(&l4->hist[op], (kvt_clock_ns() - t0) / 1000);
	L4_COUNT(l4, op_calls[op], 1);
	L4_COUNT(l4, op_keys[op], keys);
}

/* ---- get ------------------------------------------------------------------ */

static void miss(struct kvt_l4 *l4, struct kvt_l4_block *b, int why)
{
	b->status = KVT_ENOTFOUND;
	b->miss = (uint8_t)why;
	if (why == KVT_L4_MISS_ABSENT)
		L4_COUNT(l4, misses_absent, 1);
	else if (why == KVT_L4_MISS_STALE)
		L4_COUNT(l4, misses_stale, 1);
	else
		L4_COUNT(l4, misses_corrupt, 1);
}

/*
 * Turns the replies of a get (cmds[0..n) the blocks, cmds[n..n+set->n) the
 * generations) into out[].  Returns 0 or -ENOMEM.
 */
static int get_results(struct kvt_l4 *l4, const struct kvt_key *keys,
		       size_t n, const struct ns_set *set, const size_t *nsi,
		       struct l4_cmd *cmds, struct kvt_l4_block *out)
{
	uint64_t *gen = malloc(set->n * sizeof(*gen));
	int *gst = malloc(set->n * sizeof(*gst));

	if (!gen || !gst) {
		free(gen);
		free(gst);
		return -ENOMEM;
	}
	for (size_t j = 0; j < set->n; j++) {
		gst[j] = kvt_l4i_gen_result(&cmds[n + j], &gen[j]);
		if (gst[j] == 0 || gst[j] == KVT_ENOTFOUND)
			kvt_l4i_note_gen(l4, &set->v[j], gen[j]);
	}
	for (size_t i = 0; i < n; i++) {
		struct l4_cmd *m = &cmds[i];
		struct kvt_l4_block *b = &out[i];
		struct kvt_l4_value_info vi;
		size_t j = nsi[i];

		if (m->status == KVT_ECORRUPT) { /* WRONGTYPE */
			miss(l4, b, KVT_L4_MISS_CORRUPT);
			continue;
		}
		if (m->status) {
			b->status = m->status;
			continue;
		}
		if (m->reply->type == L4R_NIL) {
			miss(l4, b, KVT_L4_MISS_ABSENT);
			continue;
		}
		if (m->reply->type != L4R_STRING ||
		    kvt_l4_value_check((const uint8_t *)m->reply->str,
				       m->reply->len, &keys[i], &vi) != 0) {
			miss(l4, b, KVT_L4_MISS_CORRUPT);
			continue;
		}
		if (gst[j] == KVT_ENOTFOUND || gst[j] == KVT_ECORRUPT ||
		    (gst[j] == 0 && vi.gen != gen[j])) {
			/* No generation key, or not ours: no block of the
			 * namespace can be current. */
			miss(l4, b, KVT_L4_MISS_STALE);
			continue;
		}
		if (gst[j]) { /* cannot tell whether it was dropped */
			b->status = gst[j];
			continue;
		}
		b->status = 0;
		b->codec = vi.codec;
		b->dtype = vi.dtype;
		b->raw_len = vi.raw_len;
		b->gen = vi.gen;
		/* The reply's buffer becomes the caller's: no copy. */
		b->mem = m->reply->str;
		b->mem_size = m->reply->len + 1;
		b->data = (const uint8_t *)m->reply->str + KVT_L4_HDR_SIZE;
		b->len = vi.payload_len;
		m->reply->str = NULL;
		L4_COUNT(l4, hits, 1);
	}
	kvt_l4i_count_errors(l4, &out[0].status, n, sizeof(out[0]));
	free(gen);
	free(gst);
	return 0;
}

int kvt_l4_get_batch(struct kvt_l4_session *s, const struct kvt_key *keys,
		     size_t n, struct kvt_l4_block *out)
{
	struct kvt_l4 *l4;
	struct ns_set set = { 0 };
	struct l4_cmd *cmds;
	size_t *nsi;
	uint64_t t0 = kvt_clock_ns();
	int rc;

	if (!s || (n && (!keys || !out)))
		return KVT_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!keys_ok(&keys[i]))
			return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	for (size_t i = 0; i < n; i++)
		memset(&out[i], 0, sizeof(out[i]));
	if (n == 0)
		return 0;
	/* Blocks first, then one generation read per namespace. */
	cmds = malloc(2 * n * sizeof(*cmds));
	set.v = malloc(n * sizeof(*set.v));
	nsi = malloc(n * sizeof(*nsi));
	if (!cmds || !set.v || !nsi) {
		free(cmds);
		free(set.v);
		free(nsi);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		cmd_key(&cmds[i], L4C_GET, &keys[i]);
		nsi[i] = ns_index(&set, keys[i].ns, keys[i].ns_len);
	}
	for (size_t j = 0; j < set.n; j++)
		kvt_l4i_cmd_gen(&cmds[n + j], L4C_GET, &set.v[j]);
	rc = kvt_l4i_exec(s, cmds, n + set.n);
	if (rc == 0)
		rc = get_results(l4, keys, n, &set, nsi, cmds, out);
	kvt_l4i_free_cmds(cmds, n + set.n);
	free(set.v);
	free(nsi);
	if (rc)
		for (size_t i = 0; i < n; i++)
			kvt_l4_block_release(&out[i]);
	kvt_l4i_op_done(l4, KVT_L4_OP_GET, t0, n);
	return rc;
}

int kvt_l4_probe_batch(struct kvt_l4_session *s, const struct kvt_key *keys,
		       size_t n, int *status)
{
	struct kvt_l4 *l4;
	struct ns_set set = { 0 };
	struct l4_cmd *cmds;
	size_t *nsi;
	uint64_t *gen, t0 = kvt_clock_ns();
	int *gst, rc;

	if (!s || (n && (!keys || !status)))
		return KVT_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!keys_ok(&keys[i]))
			return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	if (n == 0)
		return 0;
	cmds = calloc(2 * n, sizeof(*cmds)); /* no replies yet */
	set.v = malloc(n * sizeof(*set.v));
	nsi = malloc(n * sizeof(*nsi));
	gen = malloc(n * sizeof(*gen));
	gst = malloc(n * sizeof(*gst));
	rc = cmds && set.v && nsi && gen && gst ? 0 : -ENOMEM;
	for (size_t i = 0; i < n && rc == 0; i++) {
		cmd_key(&cmds[i], L4C_PROBE, &keys[i]);
		nsi[i] = ns_index(&set, keys[i].ns, keys[i].ns_len);
	}
	for (size_t j = 0; j < set.n && rc == 0; j++)
		kvt_l4i_cmd_gen(&cmds[n + j], L4C_GET, &set.v[j]);
	if (rc == 0)
		rc = kvt_l4i_exec(s, cmds, n + set.n);
	for (size_t j = 0; j < set.n && rc == 0; j++) {
		gst[j] = kvt_l4i_gen_result(&cmds[n + j], &gen[j]);
		if (gst[j] == 0 || gst[j] == KVT_ENOTFOUND)
			kvt_l4i_note_gen(l4, &set.v[j], gen[j]);
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		const struct l4_cmd *m = &cmds[i];
		size_t j = nsi[i];
		uint64_t g;

		if (m->status == KVT_ECORRUPT) /* WRONGTYPE */
			status[i] = KVT_ENOTFOUND;
		else if (m->status)
			status[i] = m->status;
		else if (m->reply->type != L4R_STRING ||
			 kvt_l4i_header_gen((const uint8_t *)m->reply->str,
					    m->reply->len, &keys[i], &g) != 0)
			status[i] = KVT_ENOTFOUND; /* "" when absent */
		else if (gst[j] == KVT_ENOTFOUND || gst[j] == KVT_ECORRUPT ||
			 (gst[j] == 0 && g != gen[j]))
			status[i] = KVT_ENOTFOUND;
		else
			status[i] = gst[j];
		if (status[i] == 0)
			L4_COUNT(l4, probes_found, 1);
	}
	if (rc == 0)
		kvt_l4i_count_errors(l4, status, n, sizeof(*status));
	if (cmds)
		kvt_l4i_free_cmds(cmds, n + set.n);
	free(set.v);
	free(nsi);
	free(gen);
	free(gst);
	kvt_l4i_op_done(l4, KVT_L4_OP_PROBE, t0, n);
	return rc;
}

void kvt_l4_block_release(struct kvt_l4_block *b)
{
	if (!b)
		return;
	free(b->mem);
	b->mem = NULL;
	b->mem_size = 0;
	b->data = NULL;
	b->len = 0;
}

/* ---- put and del ---------------------------------------------------------- */

int kvt_l4_put_batch(struct kvt_l4_session *s, const struct kvt_l4_put *items,
		     size_t n, int *status)
{
	struct kvt_l4 *l4;
	struct ns_set set = { 0 };
	struct l4_cmd *cmds = NULL;
	size_t *nsi = NULL, *back = NULL, nneed = 0, k = 0;
	uint64_t *gen = NULL, t0 = kvt_clock_ns();
	int *gst = NULL, rc = 0;
	uint8_t *hdr = NULL;
	struct kvt_l4_ns *need = NULL;
	size_t *need_j = NULL;

	if (!s || (n && (!items || !status)))
		return KVT_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!keys_ok(&items[i].k) || items[i].codec >= KVT_CODEC_END_ ||
		    (!items[i].data && items[i].len))
			return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	if (n == 0)
		return 0;
	set.v = malloc(n * sizeof(*set.v));
	nsi = malloc(n * sizeof(*nsi));
	gen = malloc(n * sizeof(*gen));
	gst = malloc(n * sizeof(*gst));
	need = malloc(n * sizeof(*need));
	need_j = malloc(n * sizeof(*need_j));
	cmds = malloc(n * sizeof(*cmds));
	back = malloc(n * sizeof(*back));
	hdr = malloc(n * KVT_L4_HDR_SIZE);
	if (!set.v || !nsi || !gen || !gst || !need || !need_j || !cmds ||
	    !back || !hdr) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		nsi[i] = ns_index(&set, items[i].k.ns, items[i].k.ns_len);

	/* Generations: fresh ones from the table, the rest in one round. */
	for (size_t j = 0; j < set.n; j++) {
		if (kvt_l4i_gen_fresh(l4, &set.v[j], &gen[j])) {
			gst[j] = 0;
		} else {
			need[nneed] = set.v[j];
			need_j[nneed++] = j;
		}
	}
	if (nneed) {
		uint64_t *g2 = malloc(nneed * sizeof(*g2));
		int *s2 = malloc(nneed * sizeof(*s2));

		rc = g2 && s2 ? kvt_l4i_gen_round(s, need, nneed,
						  L4C_GEN_ENSURE, g2, s2)
			      : -ENOMEM;
		if (rc == 0)
			rc = kvt_l4i_gen_repair(s, need, nneed, g2, s2);
		for (size_t x = 0; x < nneed && rc == 0; x++) {
			size_t j = need_j[x];

			/* SET NX then GET: nil would mean someone deleted
			 * it in between; no generation to write under. */
			gst[j] = s2[x] == KVT_ENOTFOUND ? KVT_EPROTO : s2[x];
			gen[j] = g2[x];
			if (gst[j] == 0)
				kvt_l4i_note_gen(l4, &set.v[j], gen[j]);
		}
		free(g2);
		free(s2);
		if (rc)
			goto out;
	}

	/* Decide what cannot be sent, then send the rest in one round. */
	for (size_t i = 0; i < n; i++) {
		const struct kvt_l4_put *it = &items[i];
		struct l4_cmd *m = &cmds[k];
		uint32_t ttl = it->ttl_s;

		status[i] = gst[nsi[i]];
		if (status[i])
			continue;
		if ((uint64_t)it->len > KVT_L4_VALUE_MAX - KVT_L4_HDR_SIZE) {
			status[i] = KVT_ETOOBIG;
			continue;
		}
		cmd_key(m, L4C_SET, &it->k);
		kvt_l4_value_header(hdr + k * KVT_L4_HDR_SIZE, &it->k,
				    gen[nsi[i]], it->codec, it->dtype,
				    it->raw_len, it->data, it->len);
		m->hdr = hdr + k * KVT_L4_HDR_SIZE;
		m->payload = it->data;
		m->payload_len = it->len;
		if (l4->ttl_s && (!ttl || l4->ttl_s < ttl))
			ttl = l4->ttl_s;
		m->ttl_s = ttl;
		back[k++] = i;
	}
	rc = k ? kvt_l4i_exec(s, cmds, k) : 0;
	for (size_t x = 0; x < k && rc == 0; x++) {
		struct l4_cmd *m = &cmds[x];
		int st = m->status;

		if (st == 0 && (m->reply->type != L4R_STATUS ||
				strcmp(m->reply->str, "OK") != 0))
			st = KVT_EPROTO;
		status[back[x]] = st;
		if (st == 0)
			L4_COUNT(l4, puts, 1);
	}
	if (rc == 0)
		kvt_l4i_count_errors(l4, status, n, sizeof(*status));
out:
	kvt_l4i_free_cmds(cmds, k);
	free(back);
	free(set.v);
	free(nsi);
	free(gen);
	free(gst);
	free(need);
	free(need_j);
	free(hdr);
	kvt_l4i_op_done(l4, KVT_L4_OP_PUT, t0, n);
	return rc;
}

int kvt_l4_del_batch(struct kvt_l4_session *s, const struct kvt_key *keys,
		     size_t n, int *status)
{
	struct kvt_l4 *l4;
	struct l4_cmd *cmds;
	uint64_t t0 = kvt_clock_ns();
	int rc;

	if (!s || (n && (!keys || !status)))
		return KVT_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!keys_ok(&keys[i]))
			return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	if (n == 0)
		return 0;
	cmds = malloc(n * sizeof(*cmds));
	if (!cmds)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		cmd_key(&cmds[i], L4C_DEL, &keys[i]);
	rc = kvt_l4i_exec(s, cmds, n);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct l4_cmd *m = &cmds[i];

		if (m->status)
			status[i] = m->status;
		else if (m->reply->type != L4R_INTEGER)
			status[i] = KVT_EPROTO;
		else
			status[i] = m->reply->integer > 0 ? 0 : KVT_ENOTFOUND;
		if (status[i] == 0)
			L4_COUNT(l4, dels, 1);
	}
	if (rc == 0)
		kvt_l4i_count_errors(l4, status, n, sizeof(*status));
	kvt_l4i_free_cmds(cmds, n);
	kvt_l4i_op_done(l4, KVT_L4_OP_DEL, t0, n);
	return rc;
}

/* ---- stats ---------------------------------------------------------------- */

#define LOAD(f) atomic_load_explicit(&l4->st.f, memory_order_relaxed)

void kvt_l4_stats(struct kvt_l4 *l4, struct kvt_l4_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->hits = LOAD(hits);
	st->misses_absent = LOAD(misses_absent);
	st->misses_stale = LOAD(misses_stale);
	st->misses_corrupt = LOAD(misses_corrupt);
	st->misses = st->misses_absent + st->misses_stale + st->misses_corrupt;
	st->probes_found = LOAD(probes_found);
	st->puts = LOAD(puts);
	st->dels = LOAD(dels);
	st->drops = LOAD(drops);
	st->bytes_in = LOAD(bytes_in);
	st->bytes_out = LOAD(bytes_out);
	st->errors = LOAD(errors);
	st->timeouts = LOAD(timeouts);
	st->fast_fails = LOAD(fast_fails);
	st->redirects = LOAD(redirects);
	st->moved = LOAD(moved);
	st->ask = LOAD(ask);
	st->connects = LOAD(connects);
	st->reconnects = LOAD(reconnects);
	st->refreshes = LOAD(refreshes);
	st->gen_changes = LOAD(gen_changes);
	for (int op = 0; op < KVT_L4_OP_COUNT; op++) {
		st->op[op].calls = LOAD(op_calls[op]);
		st->op[op].keys = LOAD(op_keys[op]);
		st->op[op].p50_us = kvt_l4i_hist_quantile(&l4->hist[op], 0.50);
		st->op[op].p99_us = kvt_l4i_hist_quantile(&l4->hist[op], 0.99);
	}
	l4_lock(l4);
	st->nodes = l4->n_nodes;
	for (unsigned i = 0; i < KVT_L4_SLOTS; i++)
		st->slots_mapped += l4->slots[i] != L4_NO_NODE;
	l4_unlock(l4);
}
