/*
 * test_l4.c - L4's pure parts and its failure handling, without a cluster
 * (tiers/kvt_l4*.c; test_l4_cluster.c drives a real one):
 *   - CRC16 and hash slots against the Redis Cluster specification's
 *     vectors and values CLUSTER KEYSLOT of redis-server 7.0 gave;
 *   - the key names and the stored header, against golden values (hosts of
 *     different versions must agree on them), and every way of damaging a
 *     value: each bit flipped, each truncation, extension, another key's;
 *   - URL, password and argument checking;
 *   - fake nodes on loopback that refuse, stay silent, stop mid-reply,
 *     answer garbage, redirect forever, close, or want AUTH: every call
 *     fails with its error within the timeout, and a failed node is not
 *     tried again before its backoff.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "kvt_codec.h"
#include "kvt_l4.h"
#include "kvt_l4_int.h" /* the histogram */
#include "kvtier_errors.h"

/*
 * Bounds on how long a failing call may take are multiplied by this: 20
 * under `make valgrind` (KVTIER_TEST_SCALE=valgrind), which runs everything
 * tens of times slower; 1 otherwise.
 */
static uint64_t slow(void)
{
	const char *s = getenv("KVTIER_TEST_SCALE");

	return s && strcmp(s, "valgrind") == 0 ? 20 : 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- CRC16 and slots ------------------------------------------------------- */

static void test_crc16_vectors(void **state)
{
	(void)state;
	/* The specification's check value of CRC16/XMODEM. */
	assert_int_equal(kvt_l4_crc16("123456789", 9), 0x31C3);
	assert_int_equal(kvt_l4_crc16("", 0), 0);
	assert_int_equal(kvt_l4_crc16("A", 1), 0x58E5);
}

static void test_slot_vectors(void **state)
{
	/* CLUSTER KEYSLOT of redis-server 7.0.15 for each name. */
	static const struct {
		const char *name;
		unsigned slot;
	} v[] = {
		{ "123456789", 12739 },
		{ "foo", 12182 },
		{ "bar", 5061 },
		{ "hello", 866 },
		/* Hash tags, the specification's examples: */
		{ "{user1000}.following", 3443 }, /* "user1000" */
		{ "user1000", 3443 },
		{ "foo{}{bar}", 8363 },	   /* empty tag: the whole name */
		{ "foo{{bar}}zap", 4015 }, /* "{bar" */
		{ "{bar", 4015 },
		{ "foo{bar}{zap}", 5061 }, /* "bar" */
		{ "a{b}", 3300 },
		{ "{}", 15257 },
		{ "}{a}", 15495 },
		{ "{a", 10276 },
		{ "", 0 },
		/* The golden names of test_names_golden. */
		{ "kvt:b78a4aa03d7a91c0c3c328eb72d9f31c:"
		  "a820896860830cd6a37e0bc819c743c8", 10060 },
		{ "kvt:b78a4aa03d7a91c0c3c328eb72d9f31c:gen", 9416 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (kvt_l4_key_slot(v[i].name, strlen(v[i].name)) != v[i].slot)
			fail_msg("slot of \"%s\": %u, want %u", v[i].name,
				 kvt_l4_key_slot(v[i].name, strlen(v[i].name)),
				 v[i].slot);
}

/* ---- names ------------------------------------------------------------------ */

static struct kvt_key mk(const char *ns, const char *key)
{
	return (struct kvt_key){ (const uint8_t *)ns, strlen(ns),
				    (const uint8_t *)key, strlen(key) };
}

/*
 * The names are part of the storage format shared by every host: these are
 * SHA-256 computed independently (Python hashlib) of the scheme in
 * kvt_l4.h.
 */
static void test_names_golden(void **state)
{
	struct kvt_key k = mk("llama-3-8b/bf16", "block-0");
	struct kvt_key e = mk("", "");
	char n[KVT_L4_NAME_MAX];

	(void)state;
	assert_int_equal(kvt_l4_block_name(&k, n), 69);
	assert_string_equal(n, "kvt:b78a4aa03d7a91c0c3c328eb72d9f31c:"
			       "a820896860830cd6a37e0bc819c743c8");
	assert_int_equal(kvt_l4_block_name(&e, n), 69);
	assert_string_equal(n, "kvt:5b33f52cde346abfb73dd81535224a6e:"
			       "51584b46852b5180ab65c60d7319204b");
	assert_int_equal(kvt_l4_gen_name(k.ns, k.ns_len, n), 40);
	assert_string_equal(n, "kvt:b78a4aa03d7a91c0c3c328eb72d9f31c:gen");
}

static void test_names_distinct(void **state)
{
	char a[KVT_L4_NAME_MAX], b[KVT_L4_NAME_MAX], g[KVT_L4_NAME_MAX];
	struct kvt_key k1 = mk("a", "bc"), k2 = mk("ab", "c");
	struct kvt_key k3 = mk("ns", "x"), k4 = mk("ns2", "x");
	unsigned slots[64] = { 0 };
	size_t distinct = 0;

	(void)state;
	/* The namespace's length is hashed: no shifting bytes across. */
	kvt_l4_block_name(&k1, a);
	kvt_l4_block_name(&k2, b);
	assert_string_not_equal(a, b);
	/* One key in two namespaces: two blocks. */
	kvt_l4_block_name(&k3, a);
	kvt_l4_block_name(&k4, b);
	assert_string_not_equal(a, b);
	assert_memory_not_equal(a + 4, b + 4, 32);
	/* A namespace's blocks and its generation share the prefix. */
	kvt_l4_gen_name(k3.ns, k3.ns_len, g);
	assert_memory_equal(a, g, 37);
	assert_null(strchr(a, '{'));
	/* Blocks of one namespace spread over the slots. */
	for (int i = 0; i < 1000; i++) {
		char key[16];
		struct kvt_key k;
		unsigned s;

		snprintf(key, sizeof(key), "%d", i);
		k = mk("ns", key);
		s = kvt_l4_key_slot(a, kvt_l4_block_name(&k, a)) / 256;
		distinct += !slots[s];
		slots[s] = 1;
	}
	assert_int_equal(distinct, 64); /* all 64 ranges of 256 slots */
}

/* ---- the stored value ------------------------------------------------------ */

static uint8_t *make_value(const struct kvt_key *k, size_t plen,
			   uint8_t codec, size_t *vlen)
{
	uint8_t *v = malloc(KVT_L4_HDR_SIZE + plen);

	assert_non_null(v);
	for (size_t i = 0; i < plen; i++)
		v[KVT_L4_HDR_SIZE + i] = (uint8_t)(i * 7 + 3);
	kvt_l4_value_header(v, k, 0x123456789ull, codec, 2, plen * 3,
			    v + KVT_L4_HDR_SIZE, plen);
	*vlen = KVT_L4_HDR_SIZE + plen;
	return v;
}

static void test_value_header_golden(void **state)
{
	struct kvt_key k = mk("llama-3-8b/bf16", "block-0");
	uint8_t h[KVT_L4_HDR_SIZE];
	static const uint8_t want[KVT_L4_HDR_SIZE] = {
		'K', 'V', 'L', '4', 1, 0, 1, 2,	     /* magic version codec dtype */
		0, 0x10, 0, 0, 0, 0, 0, 0,	     /* raw_len 4096 */
		7, 0, 0, 0, 0, 0, 0, 0,		     /* payload_len 7 */
		0x89, 0x67, 0x45, 0x23, 1, 0, 0, 0, /* generation */
		0xb7, 0x8a, 0x4a, 0xa0, 0x3d, 0x7a, 0x91, 0xc0, /* N */
		0xc3, 0xc3, 0x28, 0xeb, 0x72, 0xd9, 0xf3, 0x1c,
		0xa8, 0x20, 0x89, 0x68, 0x60, 0x83, 0x0c, 0xd6, /* K */
		0xa3, 0x7e, 0x0b, 0xc8, 0x19, 0xc7, 0x43, 0xc8,
		0x92, 0x97, 0xce, 0xcc, 0xfc, 0x00, 0x1e, 0x7e, /* checksum */
	};

	(void)state;
	kvt_l4_value_header(h, &k, 0x123456789ull, 1, 2, 4096,
			    (const uint8_t *)"payload", 7);
	assert_memory_equal(h, want, sizeof(want));
}

static void test_value_roundtrip(void **state)
{
	struct kvt_key k = mk("ns", "key");
	struct kvt_l4_value_info vi;
	size_t len;
	uint8_t *v;

	(void)state;
	for (size_t plen = 0; plen < 300; plen += 37) {
		v = make_value(&k, plen, KVT_CODEC_ZSTD_SHUF2, &len);
		memset(&vi, 0, sizeof(vi));
		assert_int_equal(kvt_l4_value_check(v, len, &k, &vi), 0);
		assert_int_equal(vi.codec, KVT_CODEC_ZSTD_SHUF2);
		assert_int_equal(vi.dtype, 2);
		assert_int_equal(vi.raw_len, plen * 3);
		assert_int_equal(vi.gen, 0x123456789ull);
		assert_int_equal(vi.payload_len, plen);
		free(v);
	}
}

/* Every bit flipped, every truncation, an extension: all refused. */
static void test_value_damage(void **state)
{
	struct kvt_key k = mk("ns", "key");
	struct kvt_l4_value_info vi = { 0 };
	size_t len;
	uint8_t *v = make_value(&k, 200, KVT_CODEC_ZSTD, &len);
	uint8_t *w = malloc(len + 1);

	(void)state;
	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(w, v, len);
			w[i] ^= (uint8_t)(1u << bit);
			if (kvt_l4_value_check(w, len, &k, &vi) != KVT_ECORRUPT)
				fail_msg("bit %d of byte %zu flipped: accepted",
					 bit, i);
		}
	for (size_t l = 0; l < len; l++)
		assert_int_equal(kvt_l4_value_check(v, l, &k, &vi),
				 KVT_ECORRUPT);
	memcpy(w, v, len);
	w[len] = 0;
	assert_int_equal(kvt_l4_value_check(w, len + 1, &k, &vi), KVT_ECORRUPT);
	assert_int_equal(vi.gen, 0); /* untouched on failure */
	free(v);
	free(w);
}

static void test_value_foreign(void **state)
{
	struct kvt_key k = mk("ns", "key"), other = mk("ns", "kez");
	struct kvt_key other_ns = mk("nt", "key");
	struct kvt_l4_value_info vi;
	size_t len;
	uint8_t *v = make_value(&k, 100, KVT_CODEC_RAW, &len);
	uint8_t junk[512];

	(void)state;
	/* Another key's value, another namespace's. */
	assert_int_equal(kvt_l4_value_check(v, len, &other, &vi), KVT_ECORRUPT);
	assert_int_equal(kvt_l4_value_check(v, len, &other_ns, &vi),
			 KVT_ECORRUPT);
	free(v);
	/* A codec this build does not know, even with a valid sum. */
	v = make_value(&k, 100, KVT_CODEC_END_, &len);
	assert_int_equal(kvt_l4_value_check(v, len, &k, &vi), KVT_ECORRUPT);
	free(v);
	/* Text, random bytes, nothing. */
	assert_int_equal(kvt_l4_value_check((const uint8_t *)"garbage", 7, &k,
					    &vi), KVT_ECORRUPT);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 17);
	memcpy(junk, "KVL4\1\0", 6); /* even with our magic and version */
	assert_int_equal(kvt_l4_value_check(junk, sizeof(junk), &k, &vi),
			 KVT_ECORRUPT);
	assert_int_equal(kvt_l4_value_check(NULL, 0, &k, &vi), KVT_ECORRUPT);
}

/* ---- histogram --------------------------------------------------------------- */

static void test_hist(void **state)
{
	static struct l4_hist h;

	(void)state;
	assert_int_equal(kvt_l4i_hist_quantile(&h, 0.5), 0);
	for (uint64_t us = 1; us <= 1000; us++)
		kvt_l4i_hist_add(&h, us);
	for (int i = 0; i < 100; i++)
		kvt_l4i_hist_add(&h, 50000);
	/* 1100 samples: p50 is ~550 us, p99 is 50 ms; within 12.5%. */
	assert_true(kvt_l4i_hist_quantile(&h, 0.5) >= 550);
	assert_true(kvt_l4i_hist_quantile(&h, 0.5) <= 620);
	assert_true(kvt_l4i_hist_quantile(&h, 0.99) >= 50000);
	assert_true(kvt_l4i_hist_quantile(&h, 0.99) <= 56250);
	assert_int_equal(kvt_l4i_hist_quantile(&h, 0.0001), 1);
	kvt_l4i_hist_add(&h, UINT64_MAX); /* the last bucket, no overflow */
	assert_true(kvt_l4i_hist_quantile(&h, 1.0) > 50000);
}

/* ---- open and arguments ------------------------------------------------------ */

static void test_open_url(void **state)
{
	static const char *bad[] = {
		"redis://h:1", "redis-cluster://", "redis-cluster://h",
		"redis-cluster://h:", "redis-cluster://h:0",
		"redis-cluster://h:65536", "redis-cluster://h:12x",
		"redis-cluster://:1", "redis-cluster://h:1,",
		"redis-cluster://,h:1", "redis-cluster://[::1:1",
		"redis-cluster://[::1]1", "redis-cluster://h:-1",
	};
	char msg[128];
	struct kvt_l4_config cfg = { .errmsg = msg, .errmsg_len = sizeof(msg) };
	struct kvt_l4 *l4 = NULL;
	struct kvt_l4_stats st;

	(void)state;
	assert_int_equal(kvt_l4_open(&l4, NULL), KVT_EINVAL);
	assert_int_equal(kvt_l4_open(&l4, &cfg), KVT_EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		msg[0] = '\0';
		cfg.url = bad[i];
		if (kvt_l4_open(&l4, &cfg) != KVT_EINVAL)
			fail_msg("accepted %s", bad[i]);
		assert_non_null(strstr(msg, bad[i]));
	}
	cfg.url = "redis-cluster://h1.example:7000,10.0.0.2:7001,[::1]:7002";
	assert_int_equal(kvt_l4_open(&l4, &cfg), 0);
	kvt_l4_stats(l4, &st);
	assert_int_equal(st.nodes, 3);
	assert_int_equal(st.slots_mapped, 0); /* no I/O at open */
	kvt_l4_close(l4);
	kvt_l4_close(NULL);
}

static void test_open_password(void **state)
{
	char file[] = "/tmp/kvt-l4-pwtest-XXXXXX";
	int fd = mkstemp(file);
	struct kvt_l4_config cfg = { .url = "redis-cluster://h:1",
				     .password = "x",
				     .password_file = file };
	struct kvt_l4 *l4 = NULL;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(kvt_l4_open(&l4, &cfg), KVT_EINVAL); /* both */
	cfg.password = NULL;
	assert_int_equal(kvt_l4_open(&l4, &cfg), KVT_EINVAL); /* empty */
	assert_int_equal(write(fd, "\n", 1), 1);
	assert_int_equal(kvt_l4_open(&l4, &cfg), KVT_EINVAL); /* blank line */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, "pw\r\nmore\n", 9, 0), 9);
	assert_int_equal(kvt_l4_open(&l4, &cfg), 0);
	assert_string_equal(l4->password, "pw");
	kvt_l4_close(l4);
	close(fd);
	unlink(file);
	assert_int_equal(kvt_l4_open(&l4, &cfg), -ENOENT);
}

static void test_args(void **state)
{
	struct kvt_l4_config cfg = { .url = "redis-cluster://127.0.0.1:1" };
	struct kvt_l4 *l4;
	struct kvt_l4_session *s;
	uint8_t big[KVT_L4_NS_MAX + 1] = { 0 };
	struct kvt_key k = { big, sizeof(big), (const uint8_t *)"k", 1 };
	struct kvt_l4_put p = { .k = { (const uint8_t *)"n", 1,
				       (const uint8_t *)"k", 1 },
				.codec = KVT_CODEC_END_ };
	struct kvt_l4_ns ns = { big, sizeof(big) };
	struct kvt_l4_block out;
	uint64_t g;
	int st;

	(void)state;
	assert_int_equal(kvt_l4_open(&l4, &cfg), 0);
	assert_int_equal(kvt_l4_session_new(NULL, &s), KVT_EINVAL);
	assert_int_equal(kvt_l4_session_new(l4, &s), 0);
	assert_int_equal(kvt_l4_get_batch(NULL, &k, 1, &out), KVT_EINVAL);
	assert_int_equal(kvt_l4_get_batch(s, &k, 1, &out), KVT_EINVAL);
	assert_int_equal(kvt_l4_get_batch(s, NULL, 1, &out), KVT_EINVAL);
	assert_int_equal(kvt_l4_get_batch(s, NULL, 0, NULL), 0);
	assert_int_equal(kvt_l4_put_batch(s, &p, 1, &st), KVT_EINVAL);
	assert_int_equal(kvt_l4_del_batch(s, &k, 1, &st), KVT_EINVAL);
	assert_int_equal(kvt_l4_probe_batch(s, &k, 1, &st), KVT_EINVAL);
	assert_int_equal(kvt_l4_drop_batch(s, &ns, 1, &g, &st), KVT_EINVAL);
	assert_int_equal(kvt_l4_gen_batch(s, &ns, 1, &g, &st), KVT_EINVAL);
	assert_int_equal(kvt_l4_watch(l4, big, sizeof(big)), KVT_EINVAL);
	assert_int_equal(kvt_l4_poll_gens(s, NULL, NULL), KVT_EINVAL);
	kvt_l4_block_release(NULL);
	kvt_l4_session_free(s);
	kvt_l4_session_free(NULL);
	kvt_l4_close(l4);
}

/* ---- fake nodes ---------------------------------------------------------------- */

enum fake_mode {
	F_SILENT,     /* reads, never answers */
	F_HALF,	      /* answers half of a bulk string, then stalls */
	F_GARBAGE,    /* answers bytes that are not RESP */
	F_MOVED_SELF, /* redirects every command to itself */
	F_NOAUTH,     /* -NOAUTH to everything */
	F_CLOSE,      /* closes the connection on the first command */
	F_NOCLUSTER,  /* a Redis without cluster mode */
};

struct fake {
	int lfd, port, stop[2];
	enum fake_mode mode;
	pthread_t th;
	atomic_int commands, accepts;
};

static void fake_answer(struct fake *f, int fd)
{
	char buf[128];
	const char *r = NULL;

	switch (f->mode) {
	case F_SILENT:
		return;
	case F_HALF: /* the first command only */
		if (atomic_load(&f->commands) > 1)
			return;
		r = "$100\r\nKVL4 and then nothing";
		break;
	case F_GARBAGE:
		r = "hello\r\n";
		break;
	case F_MOVED_SELF:
		snprintf(buf, sizeof(buf), "-MOVED 42 127.0.0.1:%d\r\n",
			 f->port);
		r = buf;
		break;
	case F_NOAUTH:
		r = "-NOAUTH Authentication required.\r\n";
		break;
	case F_NOCLUSTER:
		r = "-ERR This instance has cluster support disabled\r\n";
		break;
	case F_CLOSE:
		return;
	}
	/* The client may have closed already: no SIGPIPE. */
	if (send(fd, r, strlen(r), MSG_NOSIGNAL) < 0)
		return;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct pollfd p[18];
	int cl[16];
	redisReader *rd[16];
	int n = 0;

	for (;;) {
		p[0] = (struct pollfd){ .fd = f->stop[0], .events = POLLIN };
		p[1] = (struct pollfd){ .fd = f->lfd, .events = POLLIN };
		for (int i = 0; i < n; i++)
			p[2 + i] = (struct pollfd){ .fd = cl[i],
						    .events = POLLIN };
		if (poll(p, (nfds_t)(2 + n), -1) < 0)
			continue;
		if (p[0].revents)
			break;
		for (int i = 0; i < n; i++) {
			char buf[4096];
			ssize_t r;
			void *req;
			int closed = 0;

			if (!p[2 + i].revents)
				continue;
			r = read(cl[i], buf, sizeof(buf));
			if (r <= 0) {
				closed = 1;
			} else {
				redisReaderFeed(rd[i], buf, (size_t)r);
				while (redisReaderGetReply(rd[i], &req) ==
					       REDIS_OK && req) {
					freeReplyObject(req);
					atomic_fetch_add(&f->commands, 1);
					if (f->mode == F_CLOSE) {
						closed = 1;
						break;
					}
					fake_answer(f, cl[i]);
				}
			}
			if (closed) {
				close(cl[i]);
				redisReaderFree(rd[i]);
				cl[i] = cl[n - 1];
				rd[i] = rd[n - 1];
				p[2 + i] = p[2 + n - 1];
				n--;
				i--;
			}
		}
		/* After the clients, so that p[] matches the polled ones. */
		if ((p[1].revents & POLLIN) && n < 16) {
			int c = accept(f->lfd, NULL, NULL);

			if (c >= 0) {
				int one = 1;

				/* As Redis does: no Nagle delay on replies. */
				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one,
					   sizeof(one));
				cl[n] = c;
				rd[n++] = redisReaderCreate();
				atomic_fetch_add(&f->accepts, 1);
			}
		}
	}
	for (int i = 0; i < n; i++) {
		close(cl[i]);
		redisReaderFree(rd[i]);
	}
	return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->lfd, 16), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &al), 0);
	f->port = ntohs(a.sin_port);
	assert_int_equal(pipe(f->stop), 0);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	assert_int_equal(write(f->stop[1], "x", 1), 1);
	pthread_join(f->th, NULL);
	close(f->lfd);
	close(f->stop[0]);
	close(f->stop[1]);
}

/* A port nothing listens on: bound, then closed. */
static int closed_port(void)
{
	struct fake f;
	int port;

	fake_start(&f, F_SILENT);
	port = f.port;
	fake_stop(&f);
	return port;
}

struct fx {
	struct kvt_l4 *l4;
	struct kvt_l4_session *s;
	struct kvt_key keys[8];
	char names[8][8];
	struct kvt_l4_block out[8];
};

static void fx_open(struct fx *x, int port, unsigned timeout_ms,
		    int no_refresh)
{
	char url[64];
	struct kvt_l4_config cfg = { .url = url, .timeout_ms = timeout_ms,
				     .connect_timeout_ms = timeout_ms,
				     .backoff_min_ms = (unsigned)(100 * slow()),
				     .backoff_max_ms = (unsigned)(400 * slow()),
				     .no_refresh = no_refresh };

	snprintf(url, sizeof(url), "redis-cluster://127.0.0.1:%d", port);
	assert_int_equal(kvt_l4_open(&x->l4, &cfg), 0);
	assert_int_equal(kvt_l4_session_new(x->l4, &x->s), 0);
	for (int i = 0; i < 8; i++) {
		snprintf(x->names[i], sizeof(x->names[i]), "k%d", i);
		x->keys[i] = mk("fake", x->names[i]);
	}
}

static void fx_close(struct fx *x)
{
	kvt_l4_session_free(x->s);
	kvt_l4_close(x->l4);
}

/* Gets the 8 keys; all must have status want (or -EHOSTDOWN if alt). */
static uint64_t fx_get(struct fx *x, int want)
{
	uint64_t t0 = now_ms();

	assert_int_equal(kvt_l4_get_batch(x->s, x->keys, 8, x->out), 0);
	for (int i = 0; i < 8; i++) {
		if (x->out[i].status != want)
			fail_msg("key %d: %s, want %s", i,
				 kvt_strerror(x->out[i].status),
				 kvt_strerror(want));
		assert_null(x->out[i].mem);
	}
	return now_ms() - t0;
}

/*
 * A dead node: refused at once; then failed fast without I/O until its
 * backoff (100 ms, doubling) expires; then tried once more.
 */
static void test_dead_node(void **state)
{
	struct fx x;
	struct kvt_l4_stats st;

	(void)state;
	fx_open(&x, closed_port(), 500, 1);
	assert_true(fx_get(&x, -ECONNREFUSED) < 100 * slow());
	assert_true(fx_get(&x, -EHOSTDOWN) < 10 * slow());
	kvt_l4_stats(x.l4, &st);
	assert_int_equal(st.errors, 16);	   /* keys */
	assert_int_equal(st.fast_fails, 9); /* commands: and the generation */
	assert_int_equal(st.connects, 0);
	usleep((useconds_t)(120 * 1000 * slow()));
	assert_true(fx_get(&x, -ECONNREFUSED) < 100 * slow());
	usleep((useconds_t)(120 * 1000 * slow())); /* doubled to 200 ms */
	fx_get(&x, -EHOSTDOWN);
	fx_close(&x);

	/* With refresh: the refresh fails the node first, so the call
	 * itself fails fast; kvt_l4_refresh() says the same. */
	fx_open(&x, closed_port(), 500, 0);
	assert_true(fx_get(&x, -EHOSTDOWN) < 100 * slow());
	assert_int_equal(kvt_l4_refresh(x.s), -EHOSTUNREACH);
	fx_close(&x);
}

/* A silent node: each call ends at the timeout with -ETIMEDOUT, then the
 * node is backed off. */
static void test_silent_node(void **state)
{
	struct fake f;
	struct fx x;
	struct kvt_l4_stats st;
	uint64_t ms;

	(void)state;
	fake_start(&f, F_SILENT);
	fx_open(&x, f.port, 200, 1);
	ms = fx_get(&x, -ETIMEDOUT);
	assert_true(ms >= 190 && ms < 600 * slow());
	assert_true(fx_get(&x, -EHOSTDOWN) < 10 * slow());
	kvt_l4_stats(x.l4, &st);
	assert_int_equal(st.timeouts, 1);
	assert_int_equal(st.connects, 1);
	fx_close(&x);

	/* The refresh times out the same way, and the call fails fast. */
	fx_open(&x, f.port, 200, 0);
	ms = fx_get(&x, -EHOSTDOWN);
	assert_true(ms >= 190 && ms < 600 * slow());
	fx_close(&x);
	fake_stop(&f);
}

/* A reply cut in the middle: timeout, and nothing of it is served. */
static void test_half_reply(void **state)
{
	struct fake f;
	struct fx x;
	uint64_t ms;

	(void)state;
	fake_start(&f, F_HALF);
	fx_open(&x, f.port, 200, 1);
	ms = fx_get(&x, -ETIMEDOUT);
	assert_true(ms >= 190 && ms < 600 * slow());
	fx_close(&x);
	fake_stop(&f);
}

static void test_garbage_reply(void **state)
{
	struct fake f;
	struct fx x;

	(void)state;
	fake_start(&f, F_GARBAGE);
	fx_open(&x, f.port, 500, 1);
	assert_true(fx_get(&x, KVT_EPROTO) < 100 * slow());
	fx_close(&x);
	fake_stop(&f);
}

/* MOVED to itself forever: -ELOOP after max_redirects, not a hang. */
static void test_redirect_loop(void **state)
{
	struct fake f;
	struct fx x;
	struct kvt_l4_stats st;
	uint64_t ms;

	(void)state;
	fake_start(&f, F_MOVED_SELF);
	fx_open(&x, f.port, 500, 1);
	ms = fx_get(&x, -ELOOP);
	print_message("redirect loop: %llu ms\n", (unsigned long long)ms);
	assert_true(ms < 200 * slow());
	kvt_l4_stats(x.l4, &st);
	/* 8 blocks and a generation, each redirected 6 times (5 allowed). */
	assert_int_equal(st.moved, 9 * 6);
	assert_int_equal(st.redirects, st.moved);
	fx_close(&x);
	fake_stop(&f);
}

static void test_closing_node(void **state)
{
	struct fake f;
	struct fx x;

	(void)state;
	fake_start(&f, F_CLOSE);
	fx_open(&x, f.port, 500, 1);
	assert_true(fx_get(&x, -ECONNRESET) < 100 * slow());
	fx_close(&x);
	fake_stop(&f);
}

static void test_noauth(void **state)
{
	struct fake f;
	struct fx x;

	(void)state;
	fake_start(&f, F_NOAUTH);
	fx_open(&x, f.port, 500, 1);
	fx_get(&x, KVT_EDENIED);
	fx_get(&x, KVT_EDENIED); /* an answer: no backoff */
	fx_close(&x);
	fake_stop(&f);
}

/* A Redis without cluster mode: the refresh says so, calls fail. */
static void test_not_a_cluster(void **state)
{
	struct fake f;
	struct fx x;

	(void)state;
	fake_start(&f, F_NOCLUSTER);
	fx_open(&x, f.port, 500, 0);
	assert_int_equal(kvt_l4_refresh(x.s), KVT_ESERVER);
	fx_get(&x, KVT_ESERVER);
	fx_close(&x);
	fake_stop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc16_vectors),
		cmocka_unit_test(test_slot_vectors),
		cmocka_unit_test(test_names_golden),
		cmocka_unit_test(test_names_distinct),
		cmocka_unit_test(test_value_header_golden),
		cmocka_unit_test(test_value_roundtrip),
		cmocka_unit_test(test_value_damage),
		cmocka_unit_test(test_value_foreign),
		cmocka_unit_test(test_hist),
		cmocka_unit_test(test_open_url),
		cmocka_unit_test(test_open_password),
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_dead_node),
		cmocka_unit_test(test_silent_node),
		cmocka_unit_test(test_half_reply),
		cmocka_unit_test(test_garbage_reply),
		cmocka_unit_test(test_redirect_loop),
		cmocka_unit_test(test_closing_node),
		cmocka_unit_test(test_noauth),
		cmocka_unit_test(test_not_a_cluster),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
