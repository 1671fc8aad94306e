/*
 * bench_kv.h - synthetic attention K/V blocks for the benchmarks, shared by
 * bench_codec.c (the L2 codec) and bench_restore.c (restoring a long
 * context), so that both work on the same bytes.
 *
 * The data stands in for real attention K/V, which we cannot ship: values
 * are N(0, sigma) floats with the structure real caches have and that
 * matters to an entropy coder, namely the spread of exponents.  A block is
 * cut into slabs of 16 tokens x 128 channels (one head of one layer; 4 KiB
 * in bf16).  Each slab has its own sigma, log-uniform in [0.02, 1]; each
 * channel of a slab scales it by exp(0.35 N(0,1)), and 2 channels in 128 are
 * outlier channels 8x larger (as in K caches); one value in 1000 is an
 * outlier 10x larger.  Floats become bf16 by truncating fp32 and fp16 by
 * rounding to nearest even.  The "gauss" variant (kv = 0) instead draws
 * every value of a block from a single N(0, sigma) with sigma log-uniform in
 * [0.02, 1] per block, with the same 1-in-1000 outliers: an easier, flatter
 * input.
 *
 * Reproducibility: one generator stream, seeded by bench_kv_rng_init(seed,
 * stream), makes the blocks one after the other.  For kv data whose block
 * length is a multiple of a slab, the concatenated blocks are the same byte
 * stream whatever the block length, and `bench_codec --dtypes bf16 --seed S
 * --block-size B --blocks N` generates exactly the first N blocks that
 * `bench_restore store --seed S --block B` stores.
 *
 * Everything here is static inline: a header of helpers for two programs,
 * not a module.
 */
#ifndef BENCH_KV_H
#define BENCH_KV_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum bench_kv_dtype { DT_BF16, DT_FP16, DT_FP32 };

static const char *const bench_kv_dtype_names[] = { "bf16", "fp16", "fp32" };
static const unsigned bench_kv_dtype_sizes[] = { 2, 2, 4 };

struct bench_kv_rng {
	uint64_t s;
	int have_spare;
	double spare;
};

/*
 * The stream of a seed: bench_codec numbers its dtypes 0, 1, 2 in the order
 * given by --dtypes; bench_restore uses stream 0 (bf16 first).  seed must
 * not make the state 0 (xorshift would stay at 0): any seed >= 1 is fine
 * for the small stream numbers used here.
 */
static inline void bench_kv_rng_init(struct bench_kv_rng *r, uint64_t seed,
				     unsigned stream)
{
	r->s = seed * 0x9e3779b97f4a7c15ull + stream + 1;
	r->have_spare = 0;
	r->spare = 0.0;
}

/* xorshift64*: fast, seedable, and good enough for test data. */
static inline uint64_t bench_kv_rng_next(struct bench_kv_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dull;
}

/* Uniform in (0, 1): never 0, so that log() below is finite. */
static inline double bench_kv_rng_unit(struct bench_kv_rng *r)
{
	return ((double)(bench_kv_rng_next(r) >> 11) + 0.5) /
	       9007199254740992.0;
}

/* Standard normal by Box-Muller, keeping the second value for next time. */
static inline double bench_kv_rng_normal(struct bench_kv_rng *r)
{
	double u, v, m;

	if (r->have_spare) {
		r->have_spare = 0;
		return r->spare;
	}
	u = bench_kv_rng_unit(r);
	v = bench_kv_rng_unit(r);
	m = sqrt(-2.0 * log(u));
	r->spare = m * sin(2.0 * M_PI * v);
	r->have_spare = 1;
	return m * cos(2.0 * M_PI * v);
}

static inline double bench_kv_rng_sigma(struct bench_kv_rng *r)
{
	return exp(log(0.02) + (log(1.0) - log(0.02)) * bench_kv_rng_unit(r));
}

static inline uint32_t bench_kv_f32_bits(float f)
{
	uint32_t x;

	memcpy(&x, &f, sizeof(x));
	return x;
}

/* bf16 by truncation, as the brief for this data asks. */
static inline uint16_t bench_kv_f32_to_bf16(float f)
{
	return (uint16_t)(bench_kv_f32_bits(f) >> 16);
}

/* IEEE half, round to nearest even, with subnormals; no NaN inputs here. */
static inline uint16_t bench_kv_f32_to_f16(float f)
{
	uint32_t x = bench_kv_f32_bits(f);
	uint32_t sign = (x >> 16) & 0x8000u;
	int32_t exp = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
	uint32_t mant = x & 0x7fffffu, h, rem, half, shift;

	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00u);
	if (exp <= 0) {
		if (exp < -10)
			return (uint16_t)sign;
		mant |= 0x800000u;
		shift = (uint32_t)(14 - exp);
		h = mant >> shift;
		rem = mant & ((1u << shift) - 1);
		half = 1u << (shift - 1);
		if (rem > half || (rem == half && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	h = ((uint32_t)exp << 10) | (mant >> 13);
	rem = mant & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
		h++; /* a carry into the exponent is the correct rounding */
	return (uint16_t)(sign | h);
}

static inline void bench_kv_put_value(uint8_t *p, size_t i,
				      enum bench_kv_dtype dt, double v)
{
	uint16_t h;
	uint32_t w;

	switch (dt) {
	case DT_BF16:
		h = bench_kv_f32_to_bf16((float)v);
		memcpy(p + 2 * i, &h, 2);
		break;
	case DT_FP16:
		h = bench_kv_f32_to_f16((float)v);
		memcpy(p + 2 * i, &h, 2);
		break;
	case DT_FP32:
		w = bench_kv_f32_bits((float)v);
		memcpy(p + 4 * i, &w, 4);
		break;
	}
}

static inline double bench_kv_outlier(struct bench_kv_rng *r, double v)
{
	return bench_kv_rng_next(r) % 1000 == 0 ? v * 10.0 : v;
}

/*
 * One block of len bytes of dtype dt (kv = 1: the K/V structure, 0: gauss),
 * the next one of r's stream; see the comment at the top.  Bytes past the
 * last whole element are zero.
 */
static inline void bench_kv_gen_block(uint8_t *p, size_t len,
				      enum bench_kv_dtype dt, int kv,
				      struct bench_kv_rng *r)
{
	enum { TOKENS = 16, CHANNELS = 128 };
	size_t n = len / bench_kv_dtype_sizes[dt], i = 0;
	double scale[CHANNELS], sigma;

	if (!kv) {
		sigma = bench_kv_rng_sigma(r);
		for (i = 0; i < n; i++) {
			double v = sigma * bench_kv_rng_normal(r);

			bench_kv_put_value(p, i, dt, bench_kv_outlier(r, v));
		}
	}
	while (i < n) {
		sigma = bench_kv_rng_sigma(r);
		for (size_t c = 0; c < CHANNELS; c++) {
			scale[c] = sigma * exp(0.35 * bench_kv_rng_normal(r));
			if (bench_kv_rng_next(r) % 64 == 0)
				scale[c] *= 8.0;
		}
		for (size_t t = 0; t < TOKENS; t++) {
			for (size_t c = 0; c < CHANNELS && i < n; c++, i++) {
				double v = scale[c] * bench_kv_rng_normal(r);

				bench_kv_put_value(p, i, dt,
						   bench_kv_outlier(r, v));
			}
		}
	}
	memset(p + n * bench_kv_dtype_sizes[dt], 0,
	       len - n * bench_kv_dtype_sizes[dt]);
}

#endif /* BENCH_KV_H */
