/*
 * bench_kvs.c - the workload of `kvtier bench`, against Redis, memcached or
 * plain memcpy, so that tests/bench/compare can put them side by side.
 *
 *   bench_kvs --server redis|memcached|memcpy [--socket PATH]
 *             [--op put|get] [--size SIZE] [--clients N] [--requests N]
 *             [--keys N] [--json]
 *
 * Same shape as client/kvtier_cli_bench.c, on purpose (keep them in step):
 * the same keys ("bench-SIZE-I", request g uses key g % keys, client t does
 * a contiguous share of the g's), the same default working set (as many
 * keys as fit in 256 MiB, at most --requests), the same pseudo-random
 * values, the same checks (length and first/last 8 bytes of every get, the
 * whole value on the first read of each key, off the clock), one request in
 * flight per connection and thread, buffers touched before the clock
 * starts, per-request latency from CLOCK_MONOTONIC, nearest-rank p50/p99,
 * and the same JSON keys.
 *
 * redis:     RESP SET/GET over a Unix socket.  GET replies are read the
 *            way libkvtier reads its own: the bulk header from a small
 *            read buffer, then the value straight into the destination
 *            buffer (only what the header read already pulled in is
 *            copied).
 * memcached: the text protocol, set/get, read the same way.
 * memcpy:    no server: put copies the value into the key's slot of a
 *            touched store (keys x size bytes), get copies the slot into
 *            the destination buffer.  The ceiling for moving the bytes once.
 *
 * Exit: 0, 1 if requests failed or missed, 2 usage, 3 connection failure.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kvt_size.h"

#define BENCH_VARIANTS 256
#define BENCH_VARIANT_STEP 64
#define BENCH_KEY_MAX 48
#define BENCH_WORKING_SET (256ull << 20)
#define BENCH_REQUESTS_MAX 100000000ull
#define BENCH_CLIENTS_MAX 256u
#define RBUF_SIZE 16384

enum server { SRV_REDIS, SRV_MEMCACHED, SRV_MEMCPY };
enum op { OP_PUT, OP_GET };

struct opts {
	enum server server;
	const char *socket;
	enum op op;
	uint64_t size, requests, keys;
	unsigned clients;
	bool json;
};

/* One connection with a small read-ahead buffer for reply headers. */
struct conn {
	int fd;
	size_t rpos, rlen;
	char rbuf[RBUF_SIZE];
};

struct bench {
	const struct opts *o;
	uint8_t *pool;
	uint64_t sums[BENCH_VARIANTS];
	unsigned variants;
	uint8_t *store; /* memcpy mode: keys * size */
	pthread_barrier_t start;
};

struct worker {
	struct bench *b;
	struct conn *c;
	uint64_t first, count;
	uint8_t *dst;
	float *lat_us;
	uint64_t n_lat, errors;
	bool broken;
	struct timespec t0, t1;
	double verify_s;
	pthread_t tid;
};

static double ts_diff(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Same generator and checksum as kvtier_cli_bench.c. */
static uint64_t mix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

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

/* ---- Socket I/O ------------------------------------------------------ */

static int conn_open(const char *path, struct conn **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct conn *c;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		return -e;
	}
	*out = c;
	return 0;
}

static void conn_close(struct conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

static int send_iov(struct conn *c, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(c->fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int fill(struct conn *c)
{
	ssize_t r;

	if (c->rpos > 0) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	if (c->rlen == sizeof(c->rbuf))
		return -EPROTO;
	do
		r = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ECONNRESET;
	c->rlen += (size_t)r;
	return 0;
}

/* A reply line without its "\r\n", NUL-terminated, in the read buffer. */
static int read_line(struct conn *c, char **line)
{
	for (;;) {
		char *s = c->rbuf + c->rpos;
		char *nl = memchr(s, '\n', c->rlen - c->rpos);
		if (nl) {
			if (nl == s || nl[-1] != '\r')
				return -EPROTO;
			nl[-1] = '\0';
			c->rpos = (size_t)(nl + 1 - c->rbuf);
			*line = s;
			return 0;
		}
		int rc = fill(c);
		if (rc < 0)
			return rc;
	}
}

/* n bytes into dst: what is buffered, then straight from the socket. */
static int read_exact(struct conn *c, void *dst, size_t n)
{
	size_t have = c->rlen - c->rpos;
	uint8_t *p = dst;

	if (have > n)
		have = n;
	memcpy(p, c->rbuf + c->rpos, have);
	c->rpos += have;
	p += have;
	n -= have;
	while (n > 0) {
		ssize_t r = recv(c->fd, p, n, MSG_WAITALL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int expect_crlf(struct conn *c)
{
	char crlf[2];
	int rc = read_exact(c, crlf, 2);

	if (rc < 0)
		return rc;
	return crlf[0] == '\r' && crlf[1] == '\n' ? 0 : -EPROTO;
}

/*
 * Request results: 0, 1 (a request error such as a miss: the connection
 * stays usable) or a negative errno (the connection is broken).
 */
static int redis_set(struct conn *c, const char *key, size_t klen,
		     const void *val, size_t vlen)
{
	static char crlf[] = "\r\n";
	char head[128];
	char *line;
	int hn = snprintf(head, sizeof(head),
			  "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", klen,
			  key, vlen);
	struct iovec iov[3] = {
		{ head, (size_t)hn }, { (void *)val, vlen }, { crlf, 2 },
	};
	int rc = send_iov(c, iov, 3);

	if (rc < 0 || (rc = read_line(c, &line)) < 0)
		return rc;
	return strcmp(line, "+OK") == 0 ? 0 : 1;
}

static int redis_get(struct conn *c, const char *key, size_t klen,
		     uint8_t *dst, size_t cap, size_t *len)
{
	char head[96];
	char *line, *end;
	int hn = snprintf(head, sizeof(head), "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n",
			  klen, key);
	struct iovec iov[1] = { { head, (size_t)hn } };
	long long n;
	int rc = send_iov(c, iov, 1);

	*len = 0;
	if (rc < 0 || (rc = read_line(c, &line)) < 0)
		return rc;
	if (line[0] != '$')
		return line[0] == '-' ? 1 : -EPROTO;
	n = strtoll(line + 1, &end, 10);
	if (n < 0)
		return 1; /* $-1: a miss */
	if ((size_t)n > cap)
		return -EPROTO; /* cannot happen: we stored size bytes */
	rc = read_exact(c, dst, (size_t)n);
	if (rc < 0 || (rc = expect_crlf(c)) < 0)
		return rc;
	*len = (size_t)n;
	return 0;
}

static int mc_set(struct conn *c, const char *key, const void *val,
		  size_t vlen)
{
	static char crlf[] = "\r\n";
	char head[128];
	char *line;
	int hn = snprintf(head, sizeof(head), "set %s 0 0 %zu\r\n", key, vlen);
	struct iovec iov[3] = {
		{ head, (size_t)hn }, { (void *)val, vlen }, { crlf, 2 },
	};
	int rc = send_iov(c, iov, 3);

	if (rc < 0 || (rc = read_line(c, &line)) < 0)
		return rc;
	return strcmp(line, "STORED") == 0 ? 0 : 1;
}

static int mc_get(struct conn *c, const char *key, uint8_t *dst, size_t cap,
		  size_t *len)
{
	char head[96];
	char *line, *sp;
	int hn = snprintf(head, sizeof(head), "get %s\r\n", key);
	struct iovec iov[1] = { { head, (size_t)hn } };
	unsigned long long n;
	int rc = send_iov(c, iov, 1);

	*len = 0;
	if (rc < 0 || (rc = read_line(c, &line)) < 0)
		return rc;
	if (strcmp(line, "END") == 0)
		return 1; /* a miss */
	/* VALUE <key> <flags> <bytes> */
	if (strncmp(line, "VALUE ", 6) != 0 || !(sp = strrchr(line, ' ')))
		return -EPROTO;
	n = strtoull(sp + 1, NULL, 10);
	if (n > cap)
		return -EPROTO;
	rc = read_exact(c, dst, (size_t)n);
	if (rc < 0 || (rc = expect_crlf(c)) < 0 ||
	    (rc = read_line(c, &line)) < 0)
		return rc;
	if (strcmp(line, "END") != 0)
		return -EPROTO;
	*len = (size_t)n;
	return 0;
}

/* ---- The run --------------------------------------------------------- */

/* name: the key's name, made before the clock starts, as kvtier bench does. */
static int do_put(struct worker *w, uint64_t key, const char *name,
		  size_t klen)
{
	const struct bench *b = w->b;
	uint64_t size = b->o->size;

	switch (b->o->server) {
	case SRV_REDIS:
		return redis_set(w->c, name, klen, value_of(b, key), size);
	case SRV_MEMCACHED:
		return mc_set(w->c, name, value_of(b, key), size);
	default:
		memcpy(b->store + key * size, value_of(b, key), size);
		return 0;
	}
}

static int do_get(struct worker *w, uint64_t key, const char *name,
		  size_t klen, size_t *len)
{
	const struct bench *b = w->b;
	uint64_t size = b->o->size;

	switch (b->o->server) {
	case SRV_REDIS:
		return redis_get(w->c, name, klen, w->dst, size, len);
	case SRV_MEMCACHED:
		return mc_get(w->c, name, w->dst, size, len);
	default:
		memcpy(w->dst, b->store + key * size, size);
		*len = size;
		return 0;
	}
}

static bool check_value(struct worker *w, uint64_t g, size_t len)
{
	const struct bench *b = w->b;
	uint64_t key = g % b->o->keys, size = b->o->size;
	const uint8_t *want = value_of(b, key), *got = w->dst;
	struct timespec a, z;
	bool ok;

	if (len != size)
		return false;
	if (size >= 8 && (memcmp(got, want, 8) != 0 ||
			  memcmp(got + size - 8, want + size - 8, 8) != 0))
		return false;
	if (g >= b->o->keys)
		return size >= 8 || memcmp(got, want, size) == 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	ok = checksum(got, len) == b->sums[key % b->variants];
	clock_gettime(CLOCK_MONOTONIC, &z);
	w->verify_s += ts_diff(&a, &z);
	return ok;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	const struct opts *o = b->o;
	struct timespec a, z;
	char name[BENCH_KEY_MAX];
	size_t len = 0, klen;
	int rc;

	pthread_barrier_wait(&b->start);
	clock_gettime(CLOCK_MONOTONIC, &w->t0);
	for (uint64_t g = w->first; g < w->first + w->count; g++) {
		klen = key_name(name, o->size, g % o->keys);
		clock_gettime(CLOCK_MONOTONIC, &a);
		rc = o->op == OP_PUT ? do_put(w, g % o->keys, name, klen)
				     : do_get(w, g % o->keys, name, klen, &len);
		clock_gettime(CLOCK_MONOTONIC, &z);
		w->lat_us[w->n_lat++] = (float)(ts_diff(&a, &z) * 1e6);
		if (rc != 0)
			w->errors++;
		else if (o->op == OP_GET && !check_value(w, g, len))
			w->errors++;
		if (rc < 0) {
			w->broken = true;
			w->errors += w->first + w->count - g - 1;
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &w->t1);
	return NULL;
}

static int cmp_float(const void *pa, const void *pb)
{
	float a = *(const float *)pa, b = *(const float *)pb;

	return (a > b) - (a < b);
}

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

static const char *const server_names[] = { "redis", "memcached", "memcpy" };

static int usage(const char *msg, const char *arg)
{
	fprintf(stderr, "bench_kvs: %s '%s'\n"
		"usage: bench_kvs --server redis|memcached|memcpy "
		"[--socket PATH] [--op put|get]\n"
		"                 [--size SIZE] [--clients N] [--requests N] "
		"[--keys N] [--json]\n", msg, arg);
	return 2;
}

static int parse_count(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	bool have_server = false;
	uint64_t n;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--json") == 0) {
			o->json = true;
			continue;
		}
		if (!v)
			return usage("missing value or unknown option", a);
		i++;
		if (strcmp(a, "--server") == 0) {
			unsigned s;
			for (s = 0; s < 3; s++)
				if (strcmp(v, server_names[s]) == 0)
					break;
			if (s == 3)
				return usage("bad --server", v);
			o->server = (enum server)s;
			have_server = true;
		} else if (strcmp(a, "--socket") == 0) {
			o->socket = v;
		} else if (strcmp(a, "--op") == 0) {
			if (strcmp(v, "put") == 0)
				o->op = OP_PUT;
			else if (strcmp(v, "get") == 0)
				o->op = OP_GET;
			else
				return usage("bad --op", v);
		} else if (strcmp(a, "--size") == 0) {
			if (kvt_size_parse(v, &o->size) < 0 || o->size == 0 ||
			    o->size > UINT32_MAX)
				return usage("bad --size", v);
		} else if (strcmp(a, "--clients") == 0) {
			if (parse_count(v, 1, BENCH_CLIENTS_MAX, &n) < 0)
				return usage("bad --clients", v);
			o->clients = (unsigned)n;
		} else if (strcmp(a, "--requests") == 0) {
			if (parse_count(v, 1, BENCH_REQUESTS_MAX, &o->requests) < 0)
				return usage("bad --requests", v);
		} else if (strcmp(a, "--keys") == 0) {
			if (parse_count(v, 1, BENCH_REQUESTS_MAX, &o->keys) < 0)
				return usage("bad --keys", v);
		} else {
			return usage("unknown option", a);
		}
	}
	if (!have_server)
		return usage("missing", "--server");
	if (o->server != SRV_MEMCPY && !o->socket)
		return usage("missing", "--socket");
	if (o->keys == 0) {
		o->keys = BENCH_WORKING_SET / o->size;
		if (o->keys < 1)
			o->keys = 1;
	}
	if (o->keys > o->requests)
		o->keys = o->requests;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .op = OP_GET, .size = 64 * 1024, .clients = 1,
			  .requests = 1000 };
	struct bench b = { .o = &o };
	struct worker *w;
	uint64_t seed, per, extra, first = 0;
	size_t pool_len;
	int rc;

	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	b.variants = o.keys < BENCH_VARIANTS ? (unsigned)o.keys : BENCH_VARIANTS;
	seed = 0x6b76746965720000ull ^ o.size;
	pool_len = ((size_t)o.size + (size_t)b.variants * BENCH_VARIANT_STEP +
		    7) & ~(size_t)7;
	b.pool = malloc(pool_len);
	w = calloc(o.clients, sizeof(*w));
	if (!b.pool || !w) {
		fprintf(stderr, "bench_kvs: out of memory\n");
		return 3;
	}
	for (size_t i = 0; i < pool_len; i += 8) {
		uint64_t r = mix64(&seed);
		memcpy(b.pool + i, &r, 8);
	}
	for (unsigned v = 0; v < b.variants; v++)
		b.sums[v] = checksum(b.pool + (size_t)v * BENCH_VARIANT_STEP,
				     (size_t)o.size);

	per = o.requests / o.clients;
	extra = o.requests % o.clients;
	for (unsigned t = 0; t < o.clients; t++) {
		w[t].b = &b;
		w[t].first = first;
		w[t].count = per + (t < extra);
		first += w[t].count;
		w[t].dst = malloc((size_t)o.size);
		w[t].lat_us = malloc((w[t].count + 1) * sizeof(float));
		if (!w[t].dst || !w[t].lat_us) {
			fprintf(stderr, "bench_kvs: out of memory\n");
			return 3;
		}
		memset(w[t].dst, 0xa5, (size_t)o.size);
		memset(w[t].lat_us, 0x5a, (w[t].count + 1) * sizeof(float));
		if (o.server != SRV_MEMCPY) {
			rc = conn_open(o.socket, &w[t].c);
			if (rc < 0) {
				fprintf(stderr, "bench_kvs: %s: %s\n", o.socket,
					strerror(-rc));
				return 3;
			}
		}
	}
	if (o.server == SRV_MEMCPY) {
		/* The "server's" memory, touched (not with zeros, which the
		 * compiler may turn into calloc), like a warm cache. */
		b.store = malloc((size_t)(o.keys * o.size));
		if (!b.store) {
			fprintf(stderr, "bench_kvs: out of memory\n");
			return 3;
		}
		memset(b.store, 0xa5, (size_t)(o.keys * o.size));
	}
	if (o.op == OP_GET) {
		/* Store the working set, untimed, on the first connection. */
		for (uint64_t k = 0; k < o.keys; k++) {
			char name[BENCH_KEY_MAX];
			size_t klen = key_name(name, o.size, k);

			rc = do_put(&w[0], k, name, klen);
			if (rc != 0) {
				fprintf(stderr, "bench_kvs: storing the "
					"working set failed (%d)\n", rc);
				return rc < 0 ? 3 : 1;
			}
		}
	}

	pthread_barrier_init(&b.start, NULL, o.clients);
	for (unsigned t = 0; t < o.clients; t++)
		if (pthread_create(&w[t].tid, NULL, worker_main, &w[t]) != 0) {
			fprintf(stderr, "bench_kvs: cannot start threads\n");
			_exit(3);
		}
	for (unsigned t = 0; t < o.clients; t++)
		pthread_join(w[t].tid, NULL);

	uint64_t n_lat = 0, errors = 0, at = 0;
	bool broken = false;
	for (unsigned t = 0; t < o.clients; t++) {
		n_lat += w[t].n_lat;
		errors += w[t].errors;
		broken |= w[t].broken;
	}
	float *all = malloc((n_lat + 1) * sizeof(float));
	if (!all) {
		fprintf(stderr, "bench_kvs: out of memory\n");
		return 3;
	}
	struct timespec t_first = w[0].t0;
	double seconds = 0;
	for (unsigned t = 0; t < o.clients; t++) {
		memcpy(all + at, w[t].lat_us, w[t].n_lat * sizeof(float));
		at += w[t].n_lat;
		if (ts_diff(&w[t].t0, &t_first) > 0)
			t_first = w[t].t0;
	}
	for (unsigned t = 0; t < o.clients; t++) {
		double s = ts_diff(&t_first, &w[t].t1) - w[t].verify_s;
		if (s > seconds)
			seconds = s;
	}
	qsort(all, n_lat, sizeof(float), cmp_float);
	double p50 = percentile(all, n_lat, 0.50);
	double p99 = percentile(all, n_lat, 0.99);
	double ops = seconds > 0 ? (double)o.requests / seconds : 0;
	double gbs = ops * (double)o.size / 1e9;
	const char *opn = o.op == OP_PUT ? "put" : "get";

	if (o.json)
		printf("{\"server\":\"%s\",\"op\":\"%s\",\"size\":%llu,"
		       "\"clients\":%u,\"requests\":%llu,\"keys\":%llu,"
		       "\"seconds\":%.6f,\"ops_per_s\":%.1f,"
		       "\"gbytes_per_s\":%.4f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
		       "\"errors\":%llu}\n",
		       server_names[o.server], opn, (unsigned long long)o.size,
		       o.clients, (unsigned long long)o.requests,
		       (unsigned long long)o.keys, seconds, ops, gbs, p50, p99,
		       (unsigned long long)errors);
	else
		printf("server %s op %s size %llu clients %u requests %llu "
		       "keys %llu: %.3f s, %.0f ops/s, %.3f GB/s, p50 %.1f us, "
		       "p99 %.1f us, %llu errors\n",
		       server_names[o.server], opn, (unsigned long long)o.size,
		       o.clients, (unsigned long long)o.requests,
		       (unsigned long long)o.keys, seconds, ops, gbs, p50, p99,
		       (unsigned long long)errors);
	for (unsigned t = 0; t < o.clients; t++) {
		conn_close(w[t].c);
		free(w[t].dst);
		free(w[t].lat_us);
	}
	free(all);
	free(w);
	free(b.store);
	free(b.pool);
	if (broken) {
		fprintf(stderr, "bench_kvs: a connection broke\n");
		return 3;
	}
	return errors ? 1 : 0;
}
