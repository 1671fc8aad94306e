/*
 * test_codec.c - unit tests for tiers/kvt_codec.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "kvt_codec.h"
#include "kvt_frame.h"
#include "kvtier_errors.h"

#define MIB (1024u * 1024u)

/* --- data --------------------------------------------------------------- */

/* xorshift64*: seeded, so every run tests the same bytes. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/*
 * Approximately standard normal: the sum of 12 uniforms minus 6 (mean 0,
 * variance 1), within +-6.  Box-Muller would need libm, which the unit-test
 * link line does not carry; the outliers the data needs are added apart.
 */
static double rnd_normal(uint64_t *s)
{
	double sum = 0.0;

	for (int i = 0; i < 12; i++)
		sum += (double)(rnd(s) >> 11) / 9007199254740992.0;
	return sum - 6.0;
}

static void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rnd(&seed) >> 56);
}

/*
 * bf16 activations: N(0, sigma) with sigma 0.05, one value in 1000 a 10x
 * outlier, converted by truncating the fp32 bits.  Odd lengths end in one
 * stray byte.
 */
static void fill_bf16(uint8_t *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i + 2 <= len; i += 2) {
		float f = (float)(0.05 * rnd_normal(&seed));
		uint32_t x;
		uint16_t h;

		if (rnd(&seed) % 1000 == 0)
			f *= 10.0f;
		memcpy(&x, &f, sizeof(x));
		h = (uint16_t)(x >> 16);
		memcpy(p + i, &h, 2);
	}
	if (len % 2)
		p[len - 1] = 0x5a;
}

/* fp32 activations, same distribution. */
static void fill_fp32(uint8_t *p, size_t len, uint64_t seed)
{
	size_t i;

	for (i = 0; i + 4 <= len; i += 4) {
		float f = (float)(0.05 * rnd_normal(&seed));

		memcpy(p + i, &f, 4);
	}
	for (; i < len; i++)
		p[i] = (uint8_t)i;
}

/* Compressible bytes with some structure: words from a small vocabulary. */
static void fill_text(uint8_t *p, size_t len, uint64_t seed)
{
	static const char *const words[] = { "kv ", "cache ", "block ",
		"tier ", "zstd ", "prefix ", "token " };
	size_t i = 0;

	while (i < len) {
		const char *w = words[rnd(&seed) % 7];

		for (size_t j = 0; w[j] && i < len; j++)
			p[i++] = (uint8_t)w[j];
	}
}

enum fill { FILL_ZERO, FILL_RANDOM, FILL_BF16, FILL_FP32, FILL_TEXT };

static uint8_t *make(enum fill kind, size_t len, uint64_t seed)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	switch (kind) {
	case FILL_ZERO:
		memset(p, 0, len);
		break;
	case FILL_RANDOM:
		fill_random(p, len, seed);
		break;
	case FILL_BF16:
		fill_bf16(p, len, seed);
		break;
	case FILL_FP32:
		fill_fp32(p, len, seed);
		break;
	case FILL_TEXT:
		fill_text(p, len, seed);
		break;
	}
	return p;
}

/* --- helpers ------------------------------------------------------------ */

struct packed {
	uint8_t *mem;
	size_t len;
	uint8_t codec;
};

static struct packed pack(struct kvt_codec_ctx *c, const uint8_t *src,
			  size_t len, unsigned es)
{
	struct packed p = { NULL, 0, 0xee };

	assert_int_equal(kvt_codec_compress(c, src, len, es, &p.mem, &p.len,
					    &p.codec), 0);
	assert_non_null(p.mem);
	return p;
}

/*
 * Decompresses into a buffer of exactly raw_len bytes, so that AddressSanitizer
 * catches a write past its end.
 */
static int unpack_into(struct kvt_codec_ctx *c, const struct packed *p,
		       const uint8_t *src, size_t src_len, uint8_t *dst,
		       size_t raw_len, const uint8_t *expect)
{
	int err = kvt_codec_decompress(c, p->codec, src, src_len, dst,
				       raw_len);

	if (err == 0 && expect)
		assert_true(memcmp(dst, expect, raw_len) == 0);
	return err;
}

/*
 * Decompresses into a buffer of exactly raw_len bytes, so that
 * AddressSanitizer catches a write past its end.
 */
static int unpack(struct kvt_codec_ctx *c, const struct packed *p,
		  const uint8_t *src, size_t src_len, size_t raw_len,
		  const uint8_t *expect)
{
	uint8_t *dst = malloc(raw_len ? raw_len : 1);
	int err;

	assert_non_null(dst);
	err = unpack_into(c, p, src, src_len, dst, raw_len, expect);
	free(dst);
	return err;
}

static uint8_t codec_for(unsigned es)
{
	return es <= 1 ? KVT_CODEC_ZSTD :
	       es == 2 ? KVT_CODEC_ZSTD_SHUF2 : KVT_CODEC_ZSTD_SHUF4;
}

static struct kvt_codec_ctx *ctx(int level)
{
	struct kvt_codec_ctx *c = NULL;

	assert_int_equal(kvt_codec_ctx_new(&c, level), 0);
	assert_non_null(c);
	return c;
}

/* --- tests -------------------------------------------------------------- */

static void roundtrip(struct kvt_codec_ctx *c, enum fill kind, size_t len,
		      unsigned es, uint64_t seed)
{
	uint8_t *src = make(kind, len, seed);
	struct packed p = pack(c, src, len, es);

	if (p.codec == KVT_CODEC_RAW) {
		assert_int_equal(p.len, len);
	} else {
		assert_int_equal(p.codec, codec_for(es));
		/* Kept compressed only if it saves at least 3%. */
		assert_true(p.len * 100 <= len * 97);
	}
	if (kind == FILL_RANDOM)
		assert_int_equal(p.codec, KVT_CODEC_RAW);
	if (kind == FILL_ZERO && len >= 4096)
		assert_int_equal(p.codec, codec_for(es));
	assert_int_equal(unpack(c, &p, p.mem, p.len, len, src), 0);
	free(p.mem);
	free(src);
}

/*
 * Every element size, lengths around the edges (empty, one byte, partial
 * trailing elements, the 128 Ki-element piece boundary) and a 2 MiB block.
 */
static void test_roundtrip(void **state)
{
	static const size_t sizes[] = {
		0, 1, 2, 3, 4, 5, 7, 255, 4097, 65536 + 3,
		262144 - 1, 262144, 262144 + 1, 524288 + 2, 524288 + 3,
		2 * MIB, 2 * MIB + 1, 2 * MIB + 3,
	};
	static const enum fill kinds[] = {
		FILL_ZERO, FILL_RANDOM, FILL_BF16, FILL_FP32, FILL_TEXT,
	};
	static const unsigned elem_sizes[] = { 0, 1, 2, 4 };
	struct kvt_codec_ctx *c = ctx(1);

	(void)state;
	/* One context for everything: it switches between bytes and planes. */
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
			for (size_t e = 0; e < 4; e++)
				roundtrip(c, kinds[k], sizes[s],
					  elem_sizes[e], s * 31 + k + 1);
	kvt_codec_ctx_free(c);
}

/*
 * kvt_codec_decompress_v() writes the value of pieces cut at boundaries
 * given here (each piece its own allocation of exactly its length, so that
 * AddressSanitizer catches a write past one) and returns what
 * kvt_codec_decompress() would.
 */
static int unpack_v(struct kvt_codec_ctx *c, const struct packed *p,
		    size_t raw_len, const size_t *cuts, size_t ncuts,
		    const uint8_t *expect)
{
	struct iovec v[16];
	size_t at = 0, n = 0;
	int err;

	assert_true(ncuts < 16);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : raw_len;

		assert_true(end >= at && end <= raw_len);
		v[n].iov_len = end - at;
		v[n].iov_base = malloc(end - at ? end - at : 1);
		assert_non_null(v[n].iov_base);
		memset(v[n].iov_base, 0xee, v[n].iov_len);
		at = end;
		n++;
	}
	err = kvt_codec_decompress_v(c, p->codec, p->mem, p->len, v, n,
				     raw_len);
	at = 0;
	for (size_t i = 0; i < n; i++) {
		if (err == 0 && expect)
			assert_memory_equal(v[i].iov_base, expect + at,
					    v[i].iov_len);
		at += v[i].iov_len;
		free(v[i].iov_base);
	}
	return err;
}

/*
 * Decoding into pieces: K and V halves, cuts inside an element, on and
 * beside a 128 Ki-element frame boundary, empty pieces, many pieces; for
 * every codec; lengths that do not add up are KVT_EINVAL, damage is
 * KVT_ECORRUPT as for one buffer, and the context keeps working.
 */
static void test_decompress_pieces(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	const size_t len = 2 * MIB + 3;
	static const enum fill kinds[] = { FILL_BF16, FILL_FP32, FILL_TEXT,
					   FILL_RANDOM, FILL_ZERO };
	static const unsigned elem_sizes[] = { 2, 4, 1, 2, 2 };
	const size_t half = len / 2;
	const size_t cutsets[][8] = {
		{ half },
		{ 1 },
		{ len - 1 },
		{ 262144 - 1, 262144, 262144 + 1 },
		{ 0, 0, 5, 5, 524288 },
		{ 3, 100001, 300000, 300001, 1000000, 1500000, 2000000 },
	};
	const size_t ncuts[] = { 1, 1, 1, 3, 5, 7 };

	(void)state;
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		uint8_t *src = make(kinds[k], len, 40 + k);
		struct packed p = pack(c, src, len, elem_sizes[k]);

		for (size_t s = 0; s < sizeof(ncuts) / sizeof(ncuts[0]); s++)
			assert_int_equal(unpack_v(c, &p, len, cutsets[s],
						  ncuts[s], src),
					 0);
		/* One piece is the plain decoder. */
		assert_int_equal(unpack_v(c, &p, len, NULL, 0, src), 0);
		/* Pieces that do not add up to the value. */
		{
			struct iovec v[2] = { { src, 10 }, { src + 10, 10 } };

			assert_int_equal(kvt_codec_decompress_v(c, p.codec,
						p.mem, p.len, v, 2, len),
					 KVT_EINVAL);
		}
		/* A damaged frame is reported, not returned. */
		if (p.codec != KVT_CODEC_RAW) {
			uint8_t *keep = malloc(p.len);

			memcpy(keep, p.mem, p.len);
			p.mem[p.len / 2] ^= 0x40;
			assert_int_equal(unpack_v(c, &p, len, cutsets[0], 1,
						  NULL),
					 KVT_ECORRUPT);
			p.mem[p.len / 2] ^= 0x40;
			/* A stream cut short. */
			p.len -= 7;
			assert_int_equal(unpack_v(c, &p, len, cutsets[5], 7,
						  NULL),
					 KVT_ECORRUPT);
			p.len += 7;
			memcpy(p.mem, keep, p.len);
			free(keep);
			assert_int_equal(unpack_v(c, &p, len, cutsets[3], 3,
						  src),
					 0);
		}
		free(p.mem);
		free(src);
	}
	kvt_codec_ctx_free(c);
}

/* Other levels: negative, zstd's default, and the optimal parser. */
static void test_roundtrip_levels(void **state)
{
	static const int levels[] = { -5, 0, 3, 16 };
	static const unsigned elem_sizes[] = { 1, 2, 4 };

	(void)state;
	for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
		struct kvt_codec_ctx *c = ctx(levels[l]);

		for (size_t e = 0; e < 3; e++) {
			roundtrip(c, FILL_BF16, 300001, elem_sizes[e], 7);
			roundtrip(c, FILL_FP32, 300001, elem_sizes[e], 8);
			roundtrip(c, FILL_TEXT, 100003, elem_sizes[e], 9);
			roundtrip(c, FILL_ZERO, 100003, elem_sizes[e], 10);
		}
		kvt_codec_ctx_free(c);
	}
}

/* Random bytes cannot be compressed: kept RAW, an exact copy. */
static void test_random_is_raw(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	uint8_t *src = make(FILL_RANDOM, 2 * MIB, 99);

	(void)state;
	for (unsigned es = 0; es <= 4; es++) {
		struct packed p;

		if (es == 3)
			continue;
		p = pack(c, src, 2 * MIB, es);
		assert_int_equal(p.codec, KVT_CODEC_RAW);
		assert_int_equal(p.len, 2 * MIB);
		assert_true(memcmp(p.mem, src, 2 * MIB) == 0);
		free(p.mem);
	}
	free(src);
	kvt_codec_ctx_free(c);
}

/*
 * The point of the shuffle: bf16 activations compress with SHUF2 and come
 * out smaller than with plain zstd; likewise fp32 with SHUF4.
 */
static void test_shuffle_beats_plain(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	uint8_t *bf16 = make(FILL_BF16, 2 * MIB, 5);
	uint8_t *fp32 = make(FILL_FP32, 2 * MIB, 6);
	struct packed plain, shuf;

	(void)state;
	plain = pack(c, bf16, 2 * MIB, 1);
	shuf = pack(c, bf16, 2 * MIB, 2);
	assert_int_equal(shuf.codec, KVT_CODEC_ZSTD_SHUF2);
	assert_true(plain.codec == KVT_CODEC_RAW ||
		    plain.codec == KVT_CODEC_ZSTD);
	assert_true(shuf.len < plain.len);
	/* Single-sigma N(0, 0.05) bf16: exponent plane ~2.3 bits/byte. */
	assert_true((double)(2 * MIB) / (double)shuf.len > 1.35);
	print_message("bf16 2 MiB: zstd %zu bytes (x%.3f), zstd+shuf2 %zu "
		      "bytes (x%.3f)\n", plain.len,
		      (double)(2 * MIB) / (double)plain.len, shuf.len,
		      (double)(2 * MIB) / (double)shuf.len);
	assert_int_equal(unpack(c, &shuf, shuf.mem, shuf.len, 2 * MIB, bf16),
			 0);
	free(plain.mem);
	free(shuf.mem);

	/*
	 * Small blocks and short last pieces, whose planes are shorter than a
	 * zstd block, must not lose the gain by sharing Huffman tables.
	 */
	for (size_t len = 64 * 1024; len <= 2 * MIB; len = len * 4 + 1) {
		shuf = pack(c, bf16, len, 2);
		assert_int_equal(shuf.codec, KVT_CODEC_ZSTD_SHUF2);
		if ((double)len / (double)shuf.len < 1.45)
			fail_msg("bf16 %zu bytes: x%.3f", len,
				 (double)len / (double)shuf.len);
		assert_int_equal(unpack(c, &shuf, shuf.mem, shuf.len, len,
					bf16), 0);
		free(shuf.mem);
	}

	plain = pack(c, fp32, 2 * MIB, 1);
	shuf = pack(c, fp32, 2 * MIB, 4);
	assert_int_equal(shuf.codec, KVT_CODEC_ZSTD_SHUF4);
	assert_true(shuf.len < plain.len);
	assert_int_equal(unpack(c, &shuf, shuf.mem, shuf.len, 2 * MIB, fp32),
			 0);
	free(plain.mem);
	free(shuf.mem);
	free(bf16);
	free(fp32);
	kvt_codec_ctx_free(c);
}

/* Long runs (zero padding) must still be found by the plane tuning. */
static void test_zeros_compress_well(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	uint8_t *zero = make(FILL_ZERO, 2 * MIB, 0);

	(void)state;
	for (unsigned es = 1; es <= 4; es *= 2) {
		struct packed p = pack(c, zero, 2 * MIB, es);

		assert_int_equal(p.codec, codec_for(es));
		assert_true(p.len < 2 * MIB / 100);
		free(p.mem);
	}
	free(zero);
	kvt_codec_ctx_free(c);
}

/*
 * Damage: every single-byte change and every truncation of a compressed
 * block is reported as KVT_ECORRUPT, never decoded into wrong bytes and
 * never a crash.  The blocks span two frames for the SHUF codecs.
 */
static int near_frame_start(const uint8_t *mem, size_t len, size_t i)
{
	size_t at = 0;

	while (at < len) {
		size_t f = ZSTD_findFrameCompressedSize(mem + at, len - at);

		if (ZSTD_isError(f))
			return 0;
		if (i + 32 >= at && i < at + 32)
			return 1;
		at += f;
	}
	return i + 32 >= len;
}

static void check_damage(struct kvt_codec_ctx *c, const uint8_t *src,
			 size_t len, unsigned es)
{
	static const uint8_t flips[] = { 0x01, 0x80, 0xff };
	struct packed p = pack(c, src, len, es);
	uint8_t *bad = malloc(p.len + 1);
	/* Exactly len bytes, reused: allocating each is slow under ASan. */
	uint8_t *dst = malloc(len);
	/* About a thousand positions, plus every byte near frame edges. */
	size_t stride = p.len / 1000 + 1, tried = 0, benign = 0;
	int err;

	assert_non_null(bad);
	assert_non_null(dst);
	assert_int_equal(p.codec, codec_for(es));
	for (size_t i = 0; i < p.len; i++) {
		if (i % stride != 0 && !near_frame_start(p.mem, p.len, i))
			continue;
		for (size_t f = 0; f < sizeof(flips); f++) {
			memcpy(bad, p.mem, p.len);
			bad[i] ^= flips[f];
			/*
			 * A few bits of zstd's headers do not change the
			 * output (a byte that padding ignores, say): such a
			 * change may decode, but only to the right bytes.
			 */
			err = unpack_into(c, &p, bad, p.len, dst, len, src);
			tried++;
			if (err == 0)
				benign++;
			else if (err != KVT_ECORRUPT)
				fail_msg("%s: byte %zu ^ 0x%02x of %zu not "
					 "detected", kvt_codec_name(p.codec),
					 i, flips[f], p.len);
		}
	}
	if (benign * 100 > tried)
		fail_msg("%s: %zu of %zu changes went unnoticed",
			 kvt_codec_name(p.codec), benign, tried);
	for (size_t cut = 0; cut < p.len; cut++) {
		if (cut % stride != 0 &&
		    !near_frame_start(p.mem, p.len, cut))
			continue;
		if (unpack_into(c, &p, p.mem, cut, dst, len, NULL) !=
		    KVT_ECORRUPT)
			fail_msg("%s: truncation to %zu of %zu not detected",
				 kvt_codec_name(p.codec), cut, p.len);
	}
	/* Trailing garbage is damage too. */
	memcpy(bad, p.mem, p.len);
	bad[p.len] = 0;
	assert_int_equal(unpack(c, &p, bad, p.len + 1, len, NULL),
			 KVT_ECORRUPT);
	/* Undamaged, it still decodes. */
	assert_int_equal(unpack(c, &p, p.mem, p.len, len, src), 0);
	free(dst);
	free(bad);
	free(p.mem);
}

static void test_corrupt(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	size_t len = 300000 + 1;
	uint8_t *bf16 = make(FILL_BF16, len, 21);
	uint8_t *fp32 = make(FILL_FP32, 600000 + 3, 22);
	uint8_t *text = make(FILL_TEXT, len, 23);

	(void)state;
	check_damage(c, bf16, len, 2);
	check_damage(c, fp32, 600000 + 3, 4);
	check_damage(c, bf16, len, 1);
	check_damage(c, text, len, 1);
	free(bf16);
	free(fp32);
	free(text);
	kvt_codec_ctx_free(c);
}

/* A raw_len that differs from the block's length is KVT_ECORRUPT. */
static void test_wrong_raw_len(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	size_t len = 2 * MIB + 1;
	uint8_t *bf16 = make(FILL_BF16, len, 31);
	uint8_t *noise = make(FILL_RANDOM, 4096, 32);
	static const size_t deltas[] = { 1, 2, 4096, 262144 };

	(void)state;
	for (unsigned es = 1; es <= 4; es *= 2) {
		struct packed p = pack(c, bf16, len, es);

		assert_int_equal(p.codec, codec_for(es));
		for (size_t d = 0; d < sizeof(deltas) / sizeof(deltas[0]);
		     d++) {
			assert_int_equal(unpack(c, &p, p.mem, p.len,
						len - deltas[d], NULL),
					 KVT_ECORRUPT);
			assert_int_equal(unpack(c, &p, p.mem, p.len,
						len + deltas[d], NULL),
					 KVT_ECORRUPT);
		}
		assert_int_equal(unpack(c, &p, p.mem, p.len, 0, NULL),
				 KVT_ECORRUPT);
		free(p.mem);
	}
	{
		struct packed p = pack(c, noise, 4096, 2);

		assert_int_equal(p.codec, KVT_CODEC_RAW);
		assert_int_equal(unpack(c, &p, p.mem, p.len, 4095, NULL),
				 KVT_ECORRUPT);
		assert_int_equal(unpack(c, &p, p.mem, p.len, 4097, NULL),
				 KVT_ECORRUPT);
		free(p.mem);
	}
	free(bf16);
	free(noise);
	kvt_codec_ctx_free(c);
}

/* Reference shuffle, written from the format description in kvt_codec.h. */
static void ref_shuffle(uint8_t *dst, const uint8_t *src, size_t m,
			unsigned e)
{
	size_t n = m / e;

	for (size_t b = 0; b < e; b++)
		for (size_t i = 0; i < n; i++)
			dst[b * n + i] = src[i * e + b];
	memcpy(dst + n * e, src + n * e, m - n * e);
}

/*
 * The decoder follows the documented format, not just this encoder: pieces
 * of any size (odd ones with tails mid-block, empty ones, one larger than
 * the context's scratch buffer) written by plain libzstd decode.
 */
static void test_format_any_pieces(void **state)
{
	static const size_t pieces[] = { 1001, 0, 3, 70001, 600000, 5 };
	struct kvt_codec_ctx *c = ctx(1);
	size_t len = 0, out = 0, cap, at = 0;
	uint8_t *src, *frames, *tmp;
	struct packed p = { NULL, 0, 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++)
		len += pieces[i];
	for (unsigned e = 2; e <= 4; e += 2) {
		src = make(FILL_BF16, len, 41);
		cap = ZSTD_compressBound(len) + 64 * 6;
		frames = malloc(cap);
		tmp = malloc(len);
		assert_non_null(frames);
		assert_non_null(tmp);
		out = 0;
		at = 0;
		for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]);
		     i++) {
			size_t r;

			ref_shuffle(tmp, src + at, pieces[i], e);
			r = ZSTD_compress(frames + out, cap - out, tmp,
					  pieces[i], 3);
			assert_false(ZSTD_isError(r));
			out += r;
			at += pieces[i];
		}
		p.codec = e == 2 ? KVT_CODEC_ZSTD_SHUF2 : KVT_CODEC_ZSTD_SHUF4;
		assert_int_equal(unpack(c, &p, frames, out, len, src), 0);
		/* The context still works after growing its scratch. */
		roundtrip(c, FILL_BF16, 300001, e, 42);
		free(frames);
		free(tmp);
		free(src);
	}
	kvt_codec_ctx_free(c);
}

/* Frames without a content size are not what the encoder writes. */
static void test_frame_without_size(void **state)
{
	struct kvt_codec_ctx *c = ctx(1);
	ZSTD_CCtx *z = ZSTD_createCCtx();
	uint8_t *src = make(FILL_BF16, 100000, 51);
	uint8_t *frame = malloc(ZSTD_compressBound(100000));
	ZSTD_outBuffer ob = { frame, ZSTD_compressBound(100000), 0 };
	ZSTD_inBuffer ib = { src, 100000, 0 };
	struct packed p = { NULL, 0, KVT_CODEC_ZSTD_SHUF2 };

	(void)state;
	assert_non_null(z);
	assert_non_null(frame);
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(z,
			ZSTD_c_contentSizeFlag, 0)));
	assert_int_equal(ZSTD_compressStream2(z, &ob, &ib, ZSTD_e_end), 0);
	assert_int_equal(ZSTD_getFrameContentSize(frame, ob.pos),
			 ZSTD_CONTENTSIZE_UNKNOWN);
	assert_int_equal(unpack(c, &p, frame, ob.pos, 100000, NULL),
			 KVT_ECORRUPT);
	/* Plain ZSTD does not need the size. */
	p.codec = KVT_CODEC_ZSTD;
	assert_int_equal(unpack(c, &p, frame, ob.pos, 100000, src), 0);
	ZSTD_freeCCtx(z);
	free(frame);
	free(src);
	kvt_codec_ctx_free(c);
}

static void test_invalid_args(void **state)
{
	struct kvt_codec_ctx *c = NULL;
	uint8_t buf[16] = { 0 }, *mem = NULL, codec = 0;
	size_t len = 0;

	(void)state;
	assert_int_equal(kvt_codec_ctx_new(NULL, 1), KVT_EINVAL);
	assert_int_equal(kvt_codec_ctx_new(&c, ZSTD_maxCLevel() + 1),
			 KVT_EINVAL);
	assert_int_equal(kvt_codec_ctx_new(&c, ZSTD_minCLevel() - 1),
			 KVT_EINVAL);
	assert_null(c);
	kvt_codec_ctx_free(NULL);

	c = ctx(1);
	assert_int_equal(kvt_codec_compress(NULL, buf, 16, 1, &mem, &len,
					    &codec), KVT_EINVAL);
	assert_int_equal(kvt_codec_compress(c, NULL, 16, 1, &mem, &len,
					    &codec), KVT_EINVAL);
	assert_int_equal(kvt_codec_compress(c, buf, 16, 1, NULL, &len,
					    &codec), KVT_EINVAL);
	assert_int_equal(kvt_codec_compress(c, buf, 16, 1, &mem, NULL,
					    &codec), KVT_EINVAL);
	assert_int_equal(kvt_codec_compress(c, buf, 16, 1, &mem, &len, NULL),
			 KVT_EINVAL);
	assert_int_equal(kvt_codec_compress(c, buf, 16, 3, &mem, &len,
					    &codec), KVT_EINVAL);
	assert_int_equal(kvt_codec_compress(c, buf, 16, 8, &mem, &len,
					    &codec), KVT_EINVAL);
	assert_null(mem);

	/* Empty input with a NULL pointer is fine, and RAW. */
	assert_int_equal(kvt_codec_compress(c, NULL, 0, 2, &mem, &len,
					    &codec), 0);
	assert_non_null(mem);
	assert_int_equal(len, 0);
	assert_int_equal(codec, KVT_CODEC_RAW);
	assert_int_equal(kvt_codec_decompress(c, codec, mem, 0, NULL, 0), 0);
	free(mem);

	assert_int_equal(kvt_codec_decompress(c, KVT_CODEC_END_, buf, 16, buf,
					      16), KVT_EINVAL);
	assert_int_equal(kvt_codec_decompress(c, 255, buf, 16, buf, 16),
			 KVT_EINVAL);
	assert_int_equal(kvt_codec_decompress(NULL, KVT_CODEC_RAW, buf, 16,
					      buf, 16), KVT_EINVAL);
	assert_int_equal(kvt_codec_decompress(c, KVT_CODEC_RAW, NULL, 16, buf,
					      16), KVT_EINVAL);
	assert_int_equal(kvt_codec_decompress(c, KVT_CODEC_RAW, buf, 16, NULL,
					      16), KVT_EINVAL);
	/* Empty compressed input for a compressed codec is damage. */
	for (uint8_t k = KVT_CODEC_ZSTD; k < KVT_CODEC_END_; k++)
		assert_int_equal(kvt_codec_decompress(c, k, buf, 0, buf, 16),
				 KVT_ECORRUPT);
	kvt_codec_ctx_free(c);
}

static void test_names(void **state)
{
	(void)state;
	assert_int_equal(kvt_codec_elem_size(KVT_DTYPE_NONE), 1);
	assert_int_equal(kvt_codec_elem_size(KVT_DTYPE_U8), 1);
	assert_int_equal(kvt_codec_elem_size(KVT_DTYPE_BF16), 2);
	assert_int_equal(kvt_codec_elem_size(KVT_DTYPE_FP16), 2);
	assert_int_equal(kvt_codec_elem_size(KVT_DTYPE_FP32), 4);
	assert_int_equal(kvt_codec_elem_size(200), 1);

	/* Stored on disk: the numbers must never change. */
	assert_int_equal(KVT_CODEC_RAW, 0);
	assert_int_equal(KVT_CODEC_ZSTD, 1);
	assert_int_equal(KVT_CODEC_ZSTD_SHUF2, 2);
	assert_int_equal(KVT_CODEC_ZSTD_SHUF4, 3);

	assert_string_equal(kvt_codec_name(KVT_CODEC_RAW), "raw");
	assert_string_equal(kvt_codec_name(KVT_CODEC_ZSTD), "zstd");
	assert_string_equal(kvt_codec_name(KVT_CODEC_ZSTD_SHUF2), "zstd+shuf2");
	assert_string_equal(kvt_codec_name(KVT_CODEC_ZSTD_SHUF4), "zstd+shuf4");
	assert_string_equal(kvt_codec_name(KVT_CODEC_END_), "unknown");
	assert_string_equal(kvt_codec_name(255), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_roundtrip_levels),
		cmocka_unit_test(test_decompress_pieces),
		cmocka_unit_test(test_random_is_raw),
		cmocka_unit_test(test_shuffle_beats_plain),
		cmocka_unit_test(test_zeros_compress_well),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_wrong_raw_len),
		cmocka_unit_test(test_format_any_pieces),
		cmocka_unit_test(test_frame_without_size),
		cmocka_unit_test(test_invalid_args),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
