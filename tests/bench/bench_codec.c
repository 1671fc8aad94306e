/*
 * bench_codec.c - ratio and single-core speed of the L2 codec on synthetic
 * K/V blocks: plain zstd (elem_size 1) against byte-plane shuffle + zstd.
 *
 * Not a test: it prints a table and exits 0.  tests/bench/bench_codec.sh
 * runs it next to the zstd command-line benchmark on the same bytes.
 *
 * The data is bench_kv.h's synthetic K/V (its comment describes it):
 * "--data kv" (the default) has the exponent structure of real attention
 * caches, "--data gauss" is an easier, flatter input.
 *
 * Speeds are best-of-passes over all blocks (as `zstd -b` reports them), in
 * GB/s of uncompressed bytes (1 GB = 1e9 bytes), on one thread.  They
 * include allocating each compressed block, as L2 does.  By default glibc
 * is told to keep freed memory (no mmap per block, no trimming), because
 * this program frees and reallocates every block per pass, which would
 * otherwise measure page faults rather than the codec: `--malloc default`
 * shows that cost.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_kv.h"
#include "kvt_codec.h"
#include "kvtier_errors.h"

struct opts {
	size_t blocks;
	size_t block_size;
	double min_time;
	uint64_t seed;
	const char *data;     /* "kv" or "gauss" */
	const char *dump_dir; /* NULL: do not write the data out */
	int malloc_default;   /* leave glibc's mmap/trim thresholds alone */
	int levels[8];
	size_t nlevels;
	int dtypes[3];
	size_t ndtypes;
};

/* --- measuring ---------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct result {
	double ratio;
	double comp_gbs;
	double decomp_gbs;
	size_t raw_blocks; /* blocks kept RAW */
};

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_codec: %s: %s\n", what, kvt_strerror(err));
	exit(1);
}

static void bench_one(const struct opts *o, uint8_t **blocks, int level,
		      unsigned elem_size, struct result *res)
{
	struct kvt_codec_ctx *c;
	uint8_t **mem = calloc(o->blocks, sizeof(*mem));
	size_t *mlen = calloc(o->blocks, sizeof(*mlen));
	uint8_t *codec = calloc(o->blocks, 1);
	uint8_t *back = malloc(o->block_size);
	double best, t0, t, start;
	size_t total = 0;
	int err;

	if (!mem || !mlen || !codec || !back)
		die("allocation", -ENOMEM);
	err = kvt_codec_ctx_new(&c, level);
	if (err)
		die("kvt_codec_ctx_new", err);

	best = 1e30;
	start = now_s();
	do {
		for (size_t b = 0; b < o->blocks; b++) {
			free(mem[b]);
			mem[b] = NULL;
		}
		t0 = now_s();
		for (size_t b = 0; b < o->blocks; b++) {
			err = kvt_codec_compress(c, blocks[b], o->block_size,
						 elem_size, &mem[b], &mlen[b],
						 &codec[b]);
			if (err)
				die("kvt_codec_compress", err);
		}
		t = now_s() - t0;
		if (t < best)
			best = t;
	} while (now_s() - start < o->min_time);
	res->comp_gbs = (double)o->blocks * (double)o->block_size / best / 1e9;

	res->raw_blocks = 0;
	for (size_t b = 0; b < o->blocks; b++) {
		total += mlen[b];
		res->raw_blocks += codec[b] == KVT_CODEC_RAW;
		err = kvt_codec_decompress(c, codec[b], mem[b], mlen[b], back,
					   o->block_size);
		if (err)
			die("kvt_codec_decompress", err);
		if (memcmp(back, blocks[b], o->block_size) != 0) {
			fprintf(stderr, "bench_codec: block %zu differs\n", b);
			exit(1);
		}
	}
	res->ratio = (double)o->blocks * (double)o->block_size / (double)total;

	best = 1e30;
	start = now_s();
	do {
		t0 = now_s();
		/*
		 * Into one reused destination: a fresh buffer per block would
		 * add page faults, which are the allocator's cost, not the
		 * codec's, and the same for every codec.
		 */
		for (size_t b = 0; b < o->blocks; b++) {
			err = kvt_codec_decompress(c, codec[b], mem[b],
						   mlen[b], back,
						   o->block_size);
			if (err)
				die("kvt_codec_decompress", err);
		}
		t = now_s() - t0;
		if (t < best)
			best = t;
	} while (now_s() - start < o->min_time);
	res->decomp_gbs = (double)o->blocks * (double)o->block_size / best /
			  1e9;

	for (size_t b = 0; b < o->blocks; b++)
		free(mem[b]);
	free(mem);
	free(mlen);
	free(codec);
	free(back);
	kvt_codec_ctx_free(c);
}

static void print_row(enum bench_kv_dtype dt, int level, const char *codec,
		      const struct result *r, size_t blocks)
{
	printf("%-5s %5d  %-11s %6.3f  %9.2f  %9.2f  %3zu/%zu\n",
	       bench_kv_dtype_names[dt], level, codec, r->ratio, r->comp_gbs,
	       r->decomp_gbs, r->raw_blocks, blocks);
}

/* --- options ------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_codec [--blocks N] [--block-size BYTES]\n"
		"       [--levels L,L,...] [--dtypes bf16,fp16,fp32]\n"
		"       [--data kv|gauss] [--seed N] [--min-time SECONDS]\n"
		"       [--dump-dir DIR] [--malloc default|keep]\n");
	exit(2);
}

static void parse_levels(struct opts *o, const char *s)
{
	char *end;

	o->nlevels = 0;
	for (;;) {
		long v = strtol(s, &end, 10);

		if (end == s || o->nlevels == sizeof(o->levels) /
						 sizeof(o->levels[0]))
			usage();
		o->levels[o->nlevels++] = (int)v;
		if (*end == '\0')
			return;
		if (*end != ',')
			usage();
		s = end + 1;
	}
}

static void parse_dtypes(struct opts *o, const char *s)
{
	o->ndtypes = 0;
	while (*s) {
		size_t n = strcspn(s, ",");
		int found = 0;

		for (int d = 0; d < 3; d++) {
			if (strlen(bench_kv_dtype_names[d]) == n &&
			    strncmp(s, bench_kv_dtype_names[d], n) == 0 &&
			    o->ndtypes < 3) {
				o->dtypes[o->ndtypes++] = d;
				found = 1;
			}
		}
		if (!found)
			usage();
		s += n;
		if (*s == ',')
			s++;
	}
	if (o->ndtypes == 0)
		usage();
}

static void parse_args(struct opts *o, int argc, char **argv)
{
	*o = (struct opts){
		.blocks = 64,
		.block_size = 2u << 20,
		.min_time = 1.0,
		.seed = 42,
		.data = "kv",
		.levels = { 1, -1, 3 },
		.nlevels = 3,
		.dtypes = { DT_BF16, DT_FP16, DT_FP32 },
		.ndtypes = 3,
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		i++;
		if (strcmp(a, "--blocks") == 0)
			o->blocks = strtoull(v, NULL, 10);
		else if (strcmp(a, "--block-size") == 0)
			o->block_size = strtoull(v, NULL, 10);
		else if (strcmp(a, "--levels") == 0)
			parse_levels(o, v);
		else if (strcmp(a, "--dtypes") == 0)
			parse_dtypes(o, v);
		else if (strcmp(a, "--data") == 0)
			o->data = v;
		else if (strcmp(a, "--seed") == 0)
			o->seed = strtoull(v, NULL, 10);
		else if (strcmp(a, "--min-time") == 0)
			o->min_time = strtod(v, NULL);
		else if (strcmp(a, "--dump-dir") == 0)
			o->dump_dir = v;
		else if (strcmp(a, "--malloc") == 0 &&
			 (strcmp(v, "default") == 0 || strcmp(v, "keep") == 0))
			o->malloc_default = strcmp(v, "default") == 0;
		else
			usage();
	}
	if (o->blocks == 0 || o->block_size == 0 || o->seed == 0 ||
	    (strcmp(o->data, "kv") != 0 && strcmp(o->data, "gauss") != 0))
		usage();
}

static void dump(const struct opts *o, enum bench_kv_dtype dt,
		 uint8_t **blocks)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s-%s.bin", o->dump_dir, o->data,
		 bench_kv_dtype_names[dt]);
	f = fopen(path, "wb");
	if (!f) {
		perror(path);
		exit(1);
	}
	for (size_t b = 0; b < o->blocks; b++) {
		if (fwrite(blocks[b], 1, o->block_size, f) != o->block_size) {
			perror(path);
			exit(1);
		}
	}
	if (fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	uint8_t **blocks;

	parse_args(&o, argc, argv);
	if (!o.malloc_default) {
		mallopt(M_MMAP_THRESHOLD, 256 << 20);
		mallopt(M_TRIM_THRESHOLD, 1 << 30);
	}
	blocks = calloc(o.blocks, sizeof(*blocks));
	if (!blocks)
		die("allocation", -ENOMEM);

	printf("# %zu blocks x %zu bytes, data %s, seed %llu, "
	       "best of passes over >= %.1f s, 1 thread, malloc %s\n",
	       o.blocks, o.block_size, o.data, (unsigned long long)o.seed,
	       o.min_time, o.malloc_default ? "default" : "keep");
	printf("%-5s %5s  %-11s %6s  %9s  %9s  %6s\n", "dtype", "level",
	       "codec", "ratio", "comp GB/s", "dec GB/s", "raw");
	for (size_t d = 0; d < o.ndtypes; d++) {
		enum bench_kv_dtype dt = (enum bench_kv_dtype)o.dtypes[d];
		struct bench_kv_rng r;

		bench_kv_rng_init(&r, o.seed, (unsigned)d);

		for (size_t b = 0; b < o.blocks; b++) {
			blocks[b] = malloc(o.block_size);
			if (!blocks[b])
				die("allocation", -ENOMEM);
			bench_kv_gen_block(blocks[b], o.block_size, dt,
				  strcmp(o.data, "kv") == 0, &r);
		}
		if (o.dump_dir)
			dump(&o, dt, blocks);
		for (size_t l = 0; l < o.nlevels; l++) {
			struct result plain, shuf;

			bench_one(&o, blocks, o.levels[l], 1, &plain);
			bench_one(&o, blocks, o.levels[l],
				  bench_kv_dtype_sizes[dt], &shuf);
			print_row(dt, o.levels[l], "zstd", &plain, o.blocks);
			print_row(dt, o.levels[l],
				  bench_kv_dtype_sizes[dt] == 2 ? "zstd+shuf2" :
							 "zstd+shuf4",
				  &shuf, o.blocks);
			fflush(stdout);
		}
		for (size_t b = 0; b < o.blocks; b++)
			free(blocks[b]);
	}
	free(blocks);
	return 0;
}
