/*
 * bench_kvs.c - the workload of `kvtier bench`, against Redis, memcached or
 * plain memcpy, so that tests/bench/compare can put them side by side.
 *
 *   bench_kvs --server redis|memcached|memcpy [--socket PATH]
 *             [--op put|get] [--size SIZE] [--clients N] [--requests N]
 *             [--keys N] [--json]
 *
 * The workload is client/kvtier_cli_load.c, the one `kvtier bench` runs:
 * the same keys ("bench-SIZE-I", request g uses key g % keys, client t does
 * a contiguous share of the g's), the same default working set (as many
 * keys as fit in 256 MiB, at most --requests), the same pseudo-random
 * values, the same checks (length and first/last 8 bytes of every get, the
 * whole value on the first read of each key, off the clock), buffers
 * touched before the clock starts, nearest-rank p50/p99, and the same JSON
 * keys.  Like client/kvtier_cli_bench.c, it keeps one request in flight per
 * connection and thread and takes per-request latency from
 * CLOCK_MONOTONIC.
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

#include "kvtier_cli_load.h"

#define RBUF_SIZE 16384

enum server { SRV_REDIS, SRV_MEMCACHED, SRV_MEMCPY };

struct opts {
	enum server server;
	const char *socket;
	enum kvt_load_op op; /* put or get */
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
	struct kvt_load_pool pool;
	uint8_t *store; /* memcpy mode: keys * size */
	pthread_barrier_t start;
};

struct worker {
	struct bench *b;
	struct conn *c;
	uint64_t first, count;
	uint8_t *dst;
	struct kvt_load_tally *tally;
	bool broken;
	pthread_t tid;
};

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
	const uint8_t *val = kvt_load_value(&b->pool, key);
	uint64_t size = b->o->size;

	switch (b->o->server) {
	case SRV_REDIS:
		return redis_set(w->c, name, klen, val, size);
	case SRV_MEMCACHED:
		return mc_set(w->c, name, val, size);
	default:
		memcpy(b->store + key * size, val, size);
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

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	const struct opts *o = b->o;
	struct kvt_load_tally *ty = w->tally;
	struct timespec a, z;
	char name[KVT_LOAD_KEY_MAX];
	size_t len = 0, klen;
	int rc;

	pthread_barrier_wait(&b->start);
	clock_gettime(CLOCK_MONOTONIC, &ty->t0);
	for (uint64_t g = w->first; g < w->first + w->count; g++) {
		klen = kvt_load_key_name(name, sizeof(name), o->size,
					 g % o->keys);
		clock_gettime(CLOCK_MONOTONIC, &a);
		rc = o->op == KVT_LOAD_PUT ? do_put(w, g % o->keys, name, klen)
				     : do_get(w, g % o->keys, name, klen, &len);
		clock_gettime(CLOCK_MONOTONIC, &z);
		ty->lat_us[ty->n_lat++] = (float)(kvt_load_ts_diff(&a, &z) * 1e6);
		if (rc != 0)
			ty->errors++;
		else if (o->op == KVT_LOAD_GET &&
			 !kvt_load_check(&b->pool, o->keys, g, w->dst, len,
					 &ty->verify_s))
			ty->errors++;
		if (rc < 0) {
			w->broken = true;
			ty->errors += w->first + w->count - g - 1;
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &ty->t1);
	return NULL;
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
			/* mget is a libkvtier call with no match here. */
			if (kvt_load_op_parse(v, &o->op) < 0 ||
			    o->op == KVT_LOAD_MGET)
				return usage("bad --op", v);
		} else if (strcmp(a, "--size") == 0) {
			if (kvt_load_parse_size(v, &o->size) < 0)
				return usage("bad --size", v);
		} else if (strcmp(a, "--clients") == 0) {
			if (kvt_load_parse_count(v, 1, KVT_LOAD_CLIENTS_MAX, &n) < 0)
				return usage("bad --clients", v);
			o->clients = (unsigned)n;
		} else if (strcmp(a, "--requests") == 0) {
			if (kvt_load_parse_count(v, 1, KVT_LOAD_REQUESTS_MAX, &o->requests) < 0)
				return usage("bad --requests", v);
		} else if (strcmp(a, "--keys") == 0) {
			if (kvt_load_parse_count(v, 1, KVT_LOAD_REQUESTS_MAX, &o->keys) < 0)
				return usage("bad --keys", v);
		} else {
			return usage("unknown option", a);
		}
	}
	if (!have_server)
		return usage("missing", "--server");
	if (o->server != SRV_MEMCPY && !o->socket)
		return usage("missing", "--socket");
	o->keys = kvt_load_keys(o->keys, o->size, o->requests);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .op = KVT_LOAD_GET, .size = 64 * 1024, .clients = 1,
			  .requests = 1000 };
	struct bench b = { .o = &o };
	struct worker *w;
	struct kvt_load_tally *ty;
	struct kvt_load_result r;
	int rc;

	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	w = calloc(o.clients, sizeof(*w));
	ty = calloc(o.clients, sizeof(*ty));
	if (kvt_load_pool_init(&b.pool, o.size, o.keys) < 0 || !w || !ty) {
		fprintf(stderr, "bench_kvs: out of memory\n");
		return 3;
	}

	for (unsigned t = 0; t < o.clients; t++) {
		w[t].b = &b;
		w[t].tally = &ty[t];
		kvt_load_share(o.requests, o.clients, t, &w[t].first,
			       &w[t].count);
		w[t].dst = kvt_load_alloc_touched((size_t)o.size);
		if (!w[t].dst || kvt_load_tally_init(&ty[t], w[t].count) < 0) {
			fprintf(stderr, "bench_kvs: out of memory\n");
			return 3;
		}
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
		/* The "server's" memory, touched, like a warm cache. */
		b.store = kvt_load_alloc_touched((size_t)(o.keys * o.size));
		if (!b.store) {
			fprintf(stderr, "bench_kvs: out of memory\n");
			return 3;
		}
	}
	if (o.op == KVT_LOAD_GET) {
		/* Store the working set, untimed, on the first connection. */
		for (uint64_t k = 0; k < o.keys; k++) {
			char name[KVT_LOAD_KEY_MAX];
			size_t klen = kvt_load_key_name(name, sizeof(name),
							o.size, k);

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

	bool broken = false;
	for (unsigned t = 0; t < o.clients; t++)
		broken |= w[t].broken;
	if (kvt_load_result_compute(&r, ty, o.clients, o.requests,
				    o.size) < 0) {
		fprintf(stderr, "bench_kvs: out of memory\n");
		return 3;
	}

	if (o.json)
		kvt_load_print_json(stdout, server_names[o.server], o.op,
				    o.size, o.clients, o.requests, o.keys, &r);
	else
		printf("server %s op %s size %llu clients %u requests %llu "
		       "keys %llu: %.3f s, %.0f ops/s, %.3f GB/s, p50 %.1f us, "
		       "p99 %.1f us, %llu errors\n",
		       server_names[o.server], kvt_load_op_name(o.op),
		       (unsigned long long)o.size, o.clients,
		       (unsigned long long)o.requests,
		       (unsigned long long)o.keys, r.seconds, r.ops_per_s,
		       r.gbytes_per_s, r.p50_us, r.p99_us,
		       (unsigned long long)r.errors);
	for (unsigned t = 0; t < o.clients; t++) {
		conn_close(w[t].c);
		free(w[t].dst);
		kvt_load_tally_free(&ty[t]);
	}
	free(ty);
	free(w);
	free(b.store);
	kvt_load_pool_free(&b.pool);
	if (broken) {
		fprintf(stderr, "bench_kvs: a connection broke\n");
		return 3;
	}
	return r.errors ? 1 : 0;
}
