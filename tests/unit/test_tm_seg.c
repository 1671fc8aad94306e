/*
 * test_tm_seg.c - transfers into and out of client memory through the tier
 * manager (tiers/kvt_tm_seg.c, kvt_tm_get_to / kvt_tm_put_from): values
 * from L1, L2 and L3 land in their segments byte for byte (split K/V
 * halves, odd cuts, many segments); a first read from below goes straight
 * into the segments without entering L1 and a second read is admitted; a
 * length mismatch writes nothing; a put copies out before its callback; a
 * truncated client file fails its keys with KVT_EFAULT and nothing else;
 * and without a pool the copies still happen.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvt_frame.h"
#include "kvt_tm.h"

#define MIB (1u << 20)

static uint64_t fake_now = 1000;
static uint64_t fake_clock(void)
{
	return fake_now;
}

static char tdir[64];

static struct kvt_tm *open_tm(uint64_t l1, uint64_t l2, uint64_t l3,
			      int transfers)
{
	struct kvt_tm_config cfg = {
		.l1_capacity = l1,
		.l2_capacity = l2,
		.l3_capacity = l3,
		.l3_region_size = 4u << 20,
		.l3_no_sync = 1,
		.data_dir = tdir,
		.now_s = fake_clock,
		.workers = 2,
		.transfers = transfers,
	};
	struct kvt_tm *tm = NULL;

	if (!tdir[0]) {
		snprintf(tdir, sizeof(tdir), "/tmp/kvt-test-seg-XXXXXX");
		assert_non_null(mkdtemp(tdir));
	}
	assert_int_equal(kvt_tm_open(&tm, &cfg), 0);
	return tm;
}

static void close_tm(struct kvt_tm *tm)
{
	char cmd[128];

	kvt_tm_close(tm);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	assert_int_equal(system(cmd), 0);
	tdir[0] = '\0';
}

static struct kvt_key mkkey(const char *key)
{
	return (struct kvt_key){ (const uint8_t *)"ns", 2,
				 (const uint8_t *)key, strlen(key) };
}

/* bf16-looking bytes: high bytes repeat, low bytes vary (compressible). */
static void fill(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (i & 1) ? (uint8_t)(0x3c + (x & 3)) : (uint8_t)x;
	}
}

static void put(struct kvt_tm *tm, const char *key, size_t len,
		uint64_t seed)
{
	struct kvt_key k = mkkey(key);
	uint8_t *mem = malloc(len);
	struct kvt_blob b = { mem, len, mem, len, KVT_DTYPE_BF16 };

	fill(mem, len, seed);
	assert_int_equal(kvt_tm_put(tm, &k, &b, 0), 0);
}

struct done {
	int calls;
};

static void on_done(void *arg, struct kvt_tm_xfer *x)
{
	(void)x;
	((struct done *)arg)->calls++;
}

/* Runs the pool's results until the transfer's callback ran. */
static void wait_done(struct kvt_tm *tm, struct done *d)
{
	int fd = kvt_tm_event_fd(tm);

	for (int i = 0; i < 20000 && !d->calls; i++) {
		struct pollfd p = { fd, POLLIN, 0 };

		if (fd >= 0)
			poll(&p, 1, 1);
		kvt_tm_dispatch(tm);
	}
	assert_int_equal(d->calls, 1);
}

/* Lets every demotion land (blocks in motion settle). */
static void settle(struct kvt_tm *tm)
{
	for (int i = 0; i < 5000; i++) {
		struct kvt_tm_stats st;

		kvt_tm_dispatch(tm);
		kvt_tm_stats(tm, &st);
		if (st.jobs_pending == 0 && st.transit_bytes == 0)
			return;
		usleep(1000);
	}
	fail_msg("the tiers did not settle");
}

/*
 * A transfer of n keys "k<first+i>", each of len bytes, split at cut
 * (K/V: cut = len / 2) into two segments of one span, value i at
 * buf + i * len.
 */
struct xf {
	struct kvt_tm_xfer x;
	struct kvt_tm_xkey keys[64];
	struct kvt_tm_seg segs[128];
	struct kvt_tm_span span;
	char names[64][16];
};

static void xf_init(struct xf *t, uint8_t *buf, uint64_t buflen, size_t n,
		    int first, size_t len, size_t cut, struct done *d)
{
	memset(t, 0, sizeof(*t));
	t->span.base = buf;
	t->span.len = buflen;
	atomic_init(&t->span.faulted, false);
	for (size_t i = 0; i < n; i++) {
		snprintf(t->names[i], sizeof(t->names[i]), "k%d",
			 first + (int)i);
		t->keys[i].k = mkkey(t->names[i]);
		t->keys[i].seg = (uint32_t)(2 * i);
		t->keys[i].nseg = 2;
		t->keys[i].want = len;
		t->segs[2 * i] = (struct kvt_tm_seg){ buf + i * len, cut, 0 };
		t->segs[2 * i + 1] =
			(struct kvt_tm_seg){ buf + i * len + cut, len - cut, 0 };
	}
	t->x = (struct kvt_tm_xfer){ t->keys, n, t->segs, &t->span, 1,
				     KVT_DTYPE_BF16, 0, on_done, d };
}

static struct kvt_tm_stats stats(struct kvt_tm *tm)
{
	struct kvt_tm_stats st;

	kvt_tm_stats(tm, &st);
	return st;
}

/* Checks key i's bytes at buf + i * len against its seed. */
static void check(const uint8_t *buf, size_t i, size_t len, uint64_t seed)
{
	uint8_t *want = malloc(len);

	fill(want, len, seed);
	assert_memory_equal(buf + i * len, want, len);
	free(want);
}

static void test_l1(void **state)
{
	struct kvt_tm *tm = open_tm(64 * MIB, 0, 0, 1);
	const size_t len = MIB + 6, n = 8;
	uint8_t *buf = malloc(n * len);
	struct xf *t = malloc(sizeof(*t));
	struct done d = { 0 };
	char name[16];

	(void)state;
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "k%zu", i);
		put(tm, name, len, i);
	}
	memset(buf, 0xa5, n * len);
	xf_init(t, buf, n * len, n, 0, len, len / 2 - 1, &d);
	assert_int_equal(kvt_tm_get_to(tm, &t->x), 1);
	wait_done(tm, &d);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(t->keys[i].status, 0);
		assert_true(t->keys[i].len == len);
		assert_int_equal(t->keys[i].dtype, KVT_DTYPE_BF16);
		check(buf, i, len, i);
	}
	assert_int_equal(stats(tm).gets, n);
	assert_int_equal(stats(tm).l1.hits, n);

	/* A miss and a length mismatch write nothing. */
	memset(buf, 0xa5, n * len);
	d.calls = 0;
	xf_init(t, buf, n * len, 2, 6, len, 10, &d);
	t->keys[1].k = mkkey("absent");
	t->keys[0].want = len - 1;
	t->segs[1].len = len - 11;
	assert_int_equal(kvt_tm_get_to(tm, &t->x), 0); /* answered at once */
	assert_int_equal(d.calls, 1);
	assert_int_equal(t->keys[0].status, KVT_ERANGE);
	assert_true(t->keys[0].len == len);
	assert_int_equal(t->keys[1].status, KVT_ENOTFOUND);
	for (size_t i = 0; i < 2 * len; i++)
		assert_int_equal(buf[i], 0xa5);

	/* Arguments. */
	assert_int_equal(kvt_tm_get_to(NULL, &t->x), KVT_EINVAL);
	t->x.cb = NULL;
	assert_int_equal(kvt_tm_get_to(tm, &t->x), KVT_EINVAL);
	free(t);
	free(buf);
	close_tm(tm);
}

/*
 * Values in L2 and in L3: the first read goes straight into the segments
 * (bypassed, nothing enters L1), the second is admitted to L1; bytes right
 * both times, also with many small segments and cuts in an element.
 */
static void test_below(void **state)
{
	const size_t len = 2 * MIB + 2, n = 12;
	struct kvt_tm *tm = open_tm(len * 2 + MIB, 3 * len, 64 * MIB, 0);
	uint8_t *buf = malloc(n * len);
	struct xf *t = malloc(sizeof(*t));
	struct done d = { 0 };
	struct kvt_tm_stats st0, st1;
	char name[16];

	(void)state;
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "k%zu", i);
		put(tm, name, len, 100 + i);
		settle(tm);
	}
	st0 = stats(tm);
	assert_true(st0.l2.entries > 0 && st0.l3.entries > 0);
	memset(buf, 0xa5, n * len);
	xf_init(t, buf, n * len, n, 0, len, len / 2 + 1, &d);
	assert_int_equal(kvt_tm_get_to(tm, &t->x), 1);
	wait_done(tm, &d);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(t->keys[i].status, 0);
		check(buf, i, len, 100 + i);
	}
	st1 = stats(tm);
	/* The ones below L1 were bypassed: L1 has what it had. */
	assert_true(st1.promotions_bypassed > st0.promotions_bypassed);
	assert_int_equal(st1.promotions, st0.promotions);
	assert_int_equal(st1.l1.entries, st0.l1.entries);
	assert_true(st1.l2.hits > st0.l2.hits);
	assert_true(st1.l3.hits > st0.l3.hits);
	assert_true(st1.l3_bytes_read > st0.l3_bytes_read);
	settle(tm);

	/* Again, into many segments: admitted to L1 on this second read. */
	memset(buf, 0xa5, n * len);
	d.calls = 0;
	xf_init(t, buf, n * len, 4, 8, len, len / 2, &d);
	for (size_t i = 0; i < 4; i++) {
		t->keys[i].seg = (uint32_t)(i * 16);
		t->keys[i].nseg = 16;
		for (size_t s = 0; s < 16; s++) {
			size_t a = s * (len / 16) + (s ? 1 : 0);
			size_t b = s == 15 ? len : (s + 1) * (len / 16) + 1;

			t->segs[i * 16 + s] = (struct kvt_tm_seg){
				buf + i * len + a, b - a, 0 };
		}
	}
	assert_int_equal(kvt_tm_get_to(tm, &t->x), 1);
	wait_done(tm, &d);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(t->keys[i].status, 0);
		check(buf, i, len, 108 + i);
	}
	assert_true(stats(tm).promotions > st1.promotions);
	free(t);
	free(buf);
	close_tm(tm);
}

static void test_put_from(void **state)
{
	const size_t len = 3 * MIB + 1, n = 6;
	struct kvt_tm *tm = open_tm(24 * MIB, 16 * MIB, 0, 0);
	uint8_t *buf = malloc(n * len), *out = malloc(n * len);
	struct xf *t = malloc(sizeof(*t)), *g = malloc(sizeof(*g));
	struct done d = { 0 };

	(void)state;
	for (size_t i = 0; i < n; i++)
		fill(buf + i * len, len, 50 + i);
	xf_init(t, buf, n * len, n, 0, len, 7, &d);
	assert_int_equal(kvt_tm_put_from(tm, &t->x), 1);
	wait_done(tm, &d);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(t->keys[i].status, 0);
		assert_true(t->keys[i].len == len);
	}
	/* Copied out: the client's memory may change at once. */
	memset(buf, 0, n * len);
	assert_int_equal(stats(tm).puts, n);
	d.calls = 0;
	xf_init(g, out, n * len, n, 0, len, len - 3, &d);
	assert_int_equal(kvt_tm_get_to(tm, &g->x), 1);
	wait_done(tm, &d);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(g->keys[i].status, 0);
		assert_int_equal(g->keys[i].dtype, KVT_DTYPE_BF16);
		check(out, i, len, 50 + i);
	}
	/* A value larger than L1 can ever hold. */
	d.calls = 0;
	free(buf);
	buf = calloc(1, 25 * MIB);
	xf_init(t, buf, 25 * MIB, 1, 0, 25 * MIB, 7, &d);
	assert_int_equal(kvt_tm_put_from(tm, &t->x), 1);
	wait_done(tm, &d);
	assert_int_equal(t->keys[0].status, KVT_ENOSPACE);
	free(t);
	free(g);
	free(out);
	free(buf);
	close_tm(tm);
}

/*
 * The client truncates its file: the keys that touch it fail with
 * KVT_EFAULT, the span is marked, a second span's keys are served, and
 * the manager goes on; reading from a truncated file fails the same way.
 */
static void test_fault(void **state)
{
	const size_t len = MIB, n = 4;
	struct kvt_tm *tm = open_tm(64 * MIB, 0, 0, 1);
	struct xf *t = malloc(sizeof(*t));
	uint8_t *ok = malloc(n * len);
	struct done d = { 0 };
	int fd = memfd_create("test_tm_seg", MFD_CLOEXEC);
	uint8_t *m;
	char name[16];

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(n * len)), 0);
	m = mmap(NULL, n * len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "k%zu", i);
		put(tm, name, len, 7 + i);
	}
	assert_int_equal(ftruncate(fd, 4096), 0);
	xf_init(t, m, n * len, n, 0, len, len / 2, &d);
	/* Keys 2 and 3 go to a second span, of ordinary memory. */
	t->x.spans = malloc(2 * sizeof(struct kvt_tm_span));
	t->x.nspans = 2;
	t->x.spans[0].base = m;
	t->x.spans[0].len = n * len;
	atomic_init(&t->x.spans[0].faulted, false);
	t->x.spans[1].base = ok;
	t->x.spans[1].len = n * len;
	atomic_init(&t->x.spans[1].faulted, false);
	for (size_t i = 2; i < n; i++) {
		t->segs[2 * i] = (struct kvt_tm_seg){ ok + i * len, len / 2, 1 };
		t->segs[2 * i + 1] =
			(struct kvt_tm_seg){ ok + i * len + len / 2, len / 2, 1 };
	}
	assert_int_equal(kvt_tm_get_to(tm, &t->x), 1);
	wait_done(tm, &d);
	assert_int_equal(t->keys[0].status, KVT_EFAULT);
	assert_int_equal(t->keys[0].fault, 0);
	assert_int_equal(t->keys[1].status, KVT_EFAULT);
	assert_true(atomic_load(&t->x.spans[0].faulted));
	assert_false(atomic_load(&t->x.spans[1].faulted));
	for (size_t i = 2; i < n; i++) {
		assert_int_equal(t->keys[i].status, 0);
		check(ok, i, len, 7 + i);
	}
	/* Puts from it fail the same way; the manager still serves. */
	d.calls = 0;
	atomic_store(&t->x.spans[0].faulted, false);
	t->keys[0].k = mkkey("p0");
	t->keys[1].k = mkkey("p1");
	assert_int_equal(kvt_tm_put_from(tm, &t->x), 1);
	wait_done(tm, &d);
	assert_int_equal(t->keys[0].status, KVT_EFAULT);
	assert_int_equal(t->keys[2].status, 0);
	/* k2 and k3 replaced by themselves; p0 and p1 never stored. */
	assert_int_equal(stats(tm).l1.entries, n);
	free(t->x.spans);
	munmap(m, n * len);
	close(fd);
	free(ok);
	free(t);
	close_tm(tm);
}

/* A manager without a pool (no transfers asked for) copies on the loop. */
static void test_no_pool(void **state)
{
	struct kvt_tm *tm = open_tm(16 * MIB, 0, 0, 0);
	const size_t len = 4096 + 3;
	uint8_t *buf = malloc(2 * len);
	struct xf *t = malloc(sizeof(*t));
	struct done d = { 0 };

	(void)state;
	assert_int_equal(kvt_tm_event_fd(tm), -1);
	put(tm, "k0", len, 1);
	put(tm, "k1", len, 2);
	xf_init(t, buf, 2 * len, 2, 0, len, 1, &d);
	assert_int_equal(kvt_tm_get_to(tm, &t->x), 0);
	assert_int_equal(d.calls, 1);
	check(buf, 0, len, 1);
	check(buf, 1, len, 2);
	free(t);
	free(buf);
	close_tm(tm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_l1),
		cmocka_unit_test(test_below),
		cmocka_unit_test(test_put_from),
		cmocka_unit_test(test_fault),
		cmocka_unit_test(test_no_pool),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
