/*
 * bench_l3.c - L3 throughput: write N blocks, drop them from the page cache,
 * batch-read them all back, report GB/s.  Not a test; see bench_l3.sh, which
 * runs this and fio on the same filesystem and prints the ratio.
 *
 * usage: bench_l3 [-d DIR] [-t TOTAL_MIB] [-b BLOCK_KIB] [-q QD] [-B BATCH]
 *                 [-r REPEAT] [-P] [-k]
 *   DIR      folder for the store (default: a new one under $TMPDIR or /tmp)
 *   TOTAL    MiB of values to write (default 1024)
 *   BLOCK    KiB per value (default 2048)
 *   QD       read queue depth (default 32)
 *   BATCH    keys per kvt_l3_read_batch call (default: all of them)
 *   REPEAT   read passes; the best is reported (default 3)
 *   -P       read into caller buffers reused across passes (a buffer pool,
 *            as the tier manager would keep, and as fio does) instead of
 *            letting L3 allocate a fresh buffer per read
 *   -k       keep the store (default: removed)
 * Prints one JSON object on stdout.
 *
 * usage: bench_l3 -x KEY_BYTES [-d DIR] [-n ENTRIES] [-s NS_BYTES]
 *   The index's cost instead of throughput: puts ENTRIES (default 200000)
 *   entries of 100 bytes with random KEY_BYTES-byte keys in one namespace
 *   of NS_BYTES (default 255) bytes, then prints the LMDB pages in use and
 *   data.mdb's size per entry, and the growth of the process's RssAnon
 *   (the in-memory mirror) and RssFile (index pages mapped) per entry.
 *   For README "Memory"; figures, not a test.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvt_l3.h"
#include "kvtier_errors.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_cb(const char *path, const struct stat *sb, int flag,
		 struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Evicts the region files from the page cache so reads hit the device. */
static void drop_cache(const char *dir, uint64_t nregions)
{
	char path[4096];

	sync();
	for (uint64_t i = 0; i < nregions; i++) {
		int fd, len = snprintf(path, sizeof(path),
				       "%s/l3/region-%05u.dat", dir,
				       (unsigned)i);

		if (len < 0 || (size_t)len >= sizeof(path))
			continue;
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
}

/* A field of /proc/self/status in bytes (0 if absent). */
static uint64_t status_bytes(const char *field)
{
	char line[256];
	uint64_t v = 0;
	size_t n = strlen(field);
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':')
			v = strtoull(line + n + 1, NULL, 10) * 1024;
	fclose(f);
	return v;
}

static void die(const char *what, int rc);

static int rm_tree(const char *dir)
{
	return nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* bench_l3 -x: what an index entry costs (see the usage above). */
static int index_cost(const char *dir, size_t key_len, size_t ns_len,
		      size_t n)
{
	enum { BATCH = 64, VALUE = 100 };
	struct kvt_l3_config cfg;
	struct kvt_l3 *l3;
	struct kvt_l3_stats st;
	struct kvt_l3_item items[BATCH];
	uint8_t ns[255], value[VALUE], *keys;
	uint64_t anon0, file0, x = 88172645463325252ull;
	char path[4096], errbuf[512] = "";
	struct stat sb;
	int rc;

	memset(ns, 'n', sizeof(ns));
	memset(value, 'v', sizeof(value));
	memset(&cfg, 0, sizeof(cfg));
	cfg.dir = dir;
	cfg.capacity = (uint64_t)(n + n / 8) * 4096 + 4 * KVT_L3_REGION_DEFAULT;
	cfg.key_max = key_len;
	cfg.no_sync = 1;
	cfg.errmsg = errbuf;
	cfg.errmsg_len = sizeof(errbuf);
	keys = malloc(BATCH * key_len);
	if (!keys)
		die("alloc", -ENOMEM);
	anon0 = status_bytes("RssAnon");
	file0 = status_bytes("RssFile");
	if ((rc = kvt_l3_open(&l3, &cfg))) {
		fprintf(stderr, "bench_l3: %s\n", errbuf);
		die("open", rc);
	}
	for (size_t i = 0; i < n; i += BATCH) {
		size_t m = n - i < BATCH ? n - i : BATCH;

		for (size_t j = 0; j < m; j++) {
			/* Random keys, as content hashes are. */
			for (size_t b = 0; b < key_len; b++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				keys[j * key_len + b] = (uint8_t)x;
			}
			items[j] = (struct kvt_l3_item){
				{ ns, ns_len, keys + j * key_len, key_len },
				value, VALUE, 0, 0, VALUE, 0 };
		}
		if ((rc = kvt_l3_put_batch(l3, items, m)))
			die("put", rc);
	}
	/* One more put: the index's pages are measured before each commit. */
	if ((rc = kvt_l3_put_batch(l3, items, 1)))
		die("put", rc);
	kvt_l3_stats(l3, &st);
	if (snprintf(path, sizeof(path), "%s/l3/index/data.mdb", dir) >=
	    (int)sizeof(path) || stat(path, &sb))
		die("stat data.mdb", -errno);
	printf("{\"entries\": %llu, \"key_bytes\": %zu, \"ns_bytes\": %zu, "
	       "\"index_bytes_per_entry\": %.0f, "
	       "\"data_mdb_bytes_per_entry\": %.0f, "
	       "\"rss_anon_per_entry\": %.0f, \"rss_file_per_entry\": %.0f, "
	       "\"index_map_bytes\": %llu, \"index_map_per_entry\": %.0f}\n",
	       (unsigned long long)st.entries, key_len, ns_len,
	       (double)st.index_bytes / (double)st.entries,
	       (double)sb.st_size / (double)st.entries,
	       ((double)status_bytes("RssAnon") - (double)anon0) /
	       (double)st.entries,
	       ((double)status_bytes("RssFile") - (double)file0) /
	       (double)st.entries,
	       (unsigned long long)st.index_map_bytes,
	       (double)st.index_map_bytes * 4096 / (double)cfg.capacity);
	kvt_l3_close(l3);
	free(keys);
	return 0;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_l3: %s: %s\n", what, kvt_strerror(rc));
	exit(1);
}

int main(int argc, char **argv)
{
	const char *dir = NULL;
	char tmpl[4096];
	uint64_t total_mib = 1024, block = 2048 * 1024;
	unsigned qd = 32, repeat = 3;
	size_t batch = 0, n, wbatch = 16;
	int keep = 0, pool = 0, opt, rc;
	uint8_t **bufs = NULL;
	size_t bufsz;
	struct kvt_l3_config cfg;
	struct kvt_l3 *l3;
	struct kvt_l3_stats st;
	struct kvt_l3_item *items;
	struct kvt_l3_read *reads;
	char (*names)[32];
	uint8_t *data;
	double t0, wsec, best = 0;
	char errbuf[512] = "";

	size_t key_len = 0, ns_len = 255, nent = 200000;

	while ((opt = getopt(argc, argv, "d:t:b:q:B:r:Pkx:n:s:")) != -1) {
		switch (opt) {
		case 'x': key_len = strtoul(optarg, NULL, 0); break;
		case 'n': nent = strtoul(optarg, NULL, 0); break;
		case 's': ns_len = strtoul(optarg, NULL, 0); break;
		case 'd': dir = optarg; break;
		case 't': total_mib = strtoull(optarg, NULL, 0); break;
		case 'b': block = strtoull(optarg, NULL, 0) * 1024; break;
		case 'q': qd = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'B': batch = strtoul(optarg, NULL, 0); break;
		case 'r': repeat = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'P': pool = 1; break;
		case 'k': keep = 1; break;
		default:
			fprintf(stderr, "usage: %s [-d DIR] [-t TOTAL_MIB] "
				"[-b BLOCK_KIB] [-q QD] [-B BATCH] [-r REPEAT] "
				"[-P] [-k]\n       %s -x KEY_BYTES [-d DIR] "
				"[-n ENTRIES] [-s NS_BYTES]\n", argv[0],
				argv[0]);
			return 2;
		}
	}
	if (ns_len > 255 || key_len > KVT_L3_KEY_MAX)
		return 2;
	if (!dir) {
		const char *t = getenv("TMPDIR");

		snprintf(tmpl, sizeof(tmpl), "%s/bench_l3.XXXXXX",
			 t ? t : "/tmp");
		if (!mkdtemp(tmpl)) {
			perror("mkdtemp");
			return 1;
		}
		dir = tmpl;
	}
	if (key_len) {
		rc = index_cost(dir, key_len, ns_len, nent);
		if (!keep && dir == tmpl)
			rm_tree(dir);
		return rc;
	}
	n = (size_t)(total_mib * 1024 * 1024 / block);
	if (!n || !qd || !repeat)
		return 2;
	if (!batch || batch > n)
		batch = n;

	memset(&cfg, 0, sizeof(cfg));
	cfg.dir = dir;
	/* Room for every block plus headers and a partly filled head. */
	cfg.capacity = total_mib * 1024 * 1024 * 5 / 4 + 2 * KVT_L3_REGION_DEFAULT;
	cfg.queue_depth = qd;
	cfg.errmsg = errbuf;
	cfg.errmsg_len = sizeof(errbuf);
	if ((rc = kvt_l3_open(&l3, &cfg))) {
		fprintf(stderr, "bench_l3: %s\n", errbuf);
		die("open", rc);
	}

	data = malloc(block);
	items = calloc(wbatch, sizeof(*items));
	reads = calloc(batch, sizeof(*reads));
	names = calloc(n, sizeof(*names));
	if (!data || !items || !reads || !names)
		die("alloc", -ENOMEM);
	for (size_t i = 0; i < block; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);

	t0 = now_s();
	for (size_t i = 0; i < n; i += wbatch) {
		size_t m = n - i < wbatch ? n - i : wbatch;

		for (size_t j = 0; j < m; j++) {
			snprintf(names[i + j], 32, "block-%zu", i + j);
			items[j] = (struct kvt_l3_item){
				{ (const uint8_t *)"bench", 5,
				  (const uint8_t *)names[i + j],
				  strlen(names[i + j]) },
				data, block, 0, 0, block, 0 };
		}
		if ((rc = kvt_l3_put_batch(l3, items, m)))
			die("put", rc);
	}
	wsec = now_s() - t0;
	kvt_l3_stats(l3, &st);

	bufsz = kvt_l3_read_size(5, 32, block);
	if (pool) {
		bufs = calloc(batch, sizeof(*bufs));
		if (!bufs)
			die("alloc", -ENOMEM);
		for (size_t j = 0; j < batch; j++) {
			if (posix_memalign((void **)&bufs[j], KVT_L3_ALIGN,
					   bufsz))
				die("alloc", -ENOMEM);
			memset(bufs[j], 0, bufsz); /* fault in, like fio */
		}
	}

	for (unsigned pass = 0; pass < repeat; pass++) {
		double sec;
		uint64_t got = 0;

		drop_cache(dir, st.regions);
		t0 = now_s();
		for (size_t i = 0; i < n; i += batch) {
			size_t m = n - i < batch ? n - i : batch;

			for (size_t j = 0; j < m; j++) {
				reads[j].k = (struct kvt_key){
					(const uint8_t *)"bench", 5,
					(const uint8_t *)names[i + j],
					strlen(names[i + j]) };
				reads[j].buf = pool ? bufs[j] : NULL;
				reads[j].buf_cap = pool ? bufsz : 0;
			}
			if ((rc = kvt_l3_read_batch(l3, NULL, reads, m)))
				die("read", rc);
			for (size_t j = 0; j < m; j++) {
				if (reads[j].status)
					die("read item", reads[j].status);
				got += reads[j].len;
				free(reads[j].mem);
			}
		}
		sec = now_s() - t0;
		if (got != n * block)
			die("short read", KVT_ESERVER);
		if (got / sec / 1e9 > best)
			best = got / sec / 1e9;
	}
	kvt_l3_stats(l3, &st);
	printf("{\"blocks\": %zu, \"block_bytes\": %llu, \"qd\": %u, "
	       "\"batch\": %zu, \"pool\": %d, \"write_gbytes_per_s\": %.3f, "
	       "\"read_gbytes_per_s\": %.3f, \"direct_io\": %d, "
	       "\"uring\": %d, \"checksum_failures\": %llu, \"dir\": \"%s\"}\n",
	       n, (unsigned long long)block, qd, batch, pool,
	       (double)n * block / wsec / 1e9, best, st.direct_io, st.uring,
	       (unsigned long long)st.checksum_failures, dir);
	kvt_l3_close(l3);
	if (!keep && dir == tmpl)
		nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t j = 0; pool && j < batch; j++)
		free(bufs[j]);
	free(bufs);
	free(data);
	free(items);
	free(reads);
	free(names);
	return 0;
}
