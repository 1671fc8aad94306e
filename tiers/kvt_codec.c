/*
 * kvt_codec.c - byte-plane shuffle + zstd for L2 and L3 blocks.  See
 * kvt_codec.h for the formats.
 */
#include "kvt_codec.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/*
 * For ZSTD_c_literalCompressionMode only (see set_plane_params()); it is
 * used through the stable ZSTD_CCtx_setParameter(), and its absence from a
 * future libzstd is detected and survived at run time.
 */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#include "kvt_frame.h"
#include "kvtier_errors.h"

/*
 * Elements per shuffled piece (one zstd frame).  A whole piece (256 KiB of
 * bf16, 512 KiB of fp32) stays in L2 cache between the shuffle and zstd, and
 * between zstd and the unshuffle; 128 Ki elements also make each plane
 * exactly one zstd block (ZSTD_BLOCKSIZE_MAX).  Larger pieces measured no
 * better ratio.  Only the encoder depends on it: the decoder takes each
 * frame's size from its header.  Overridable at build time for experiments.
 */
#ifndef KVT_CODEC_PIECE_ELEMS
#define KVT_CODEC_PIECE_ELEMS (128u * 1024u)
#endif

/* Largest element size the shuffle handles. */
#define KVT_CODEC_ELEM_MAX 4u

/* Blocks that save less than this per mille are kept raw. */
#define KVT_CODEC_MIN_SAVING_PERMILLE 30u

/*
 * Elements per call of a shuffle kernel.  A constant trip count with
 * restrict-qualified plane pointers is what lets gcc -O2 (whose "very cheap"
 * cost model refuses loops that would need an alias check or a scalar
 * epilogue) vectorize the kernels below.
 */
#define KVT_CODEC_KERNEL 256u

/*
 * Planes of floats are compressed with zstd's own level parameters only
 * from this level up: below it, the entropy-only tuning of
 * set_plane_params() is both faster and smaller (see there).
 */
#define KVT_CODEC_PLANE_LEVEL_MIN 16

/* Which parameters the compression context currently holds. */
enum cctx_mode { MODE_NONE, MODE_BYTES, MODE_PLANES };

struct kvt_codec_ctx {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	/* Holds one shuffled piece on its way into zstd or out of it. */
	uint8_t *scratch;
	size_t scratch_cap;
	/*
	 * kvt_codec_decompress_v(): an unshuffled piece that straddles two
	 * destination pieces, on its way to them (allocated on first use).
	 */
	uint8_t *scatter;
	size_t scatter_cap;
	int level;
	enum cctx_mode mode;
};

/* --- shuffle kernels -------------------------------------------------- */

static void shuf2_kernel(uint8_t *restrict p0, uint8_t *restrict p1,
			 const uint8_t *restrict s)
{
	for (size_t j = 0; j < KVT_CODEC_KERNEL; j++) {
		p0[j] = s[2 * j];
		p1[j] = s[2 * j + 1];
	}
}

static void shuf4_kernel(uint8_t *restrict p0, uint8_t *restrict p1,
			 uint8_t *restrict p2, uint8_t *restrict p3,
			 const uint8_t *restrict s)
{
	for (size_t j = 0; j < KVT_CODEC_KERNEL; j++) {
		p0[j] = s[4 * j];
		p1[j] = s[4 * j + 1];
		p2[j] = s[4 * j + 2];
		p3[j] = s[4 * j + 3];
	}
}

static void unshuf2_kernel(uint8_t *restrict d, const uint8_t *restrict p0,
			   const uint8_t *restrict p1)
{
	for (size_t j = 0; j < KVT_CODEC_KERNEL; j++) {
		d[2 * j] = p0[j];
		d[2 * j + 1] = p1[j];
	}
}

static void unshuf4_kernel(uint8_t *restrict d, const uint8_t *restrict p0,
			   const uint8_t *restrict p1,
			   const uint8_t *restrict p2,
			   const uint8_t *restrict p3)
{
	for (size_t j = 0; j < KVT_CODEC_KERNEL; j++) {
		d[4 * j] = p0[j];
		d[4 * j + 1] = p1[j];
		d[4 * j + 2] = p2[j];
		d[4 * j + 3] = p3[j];
	}
}

/*
 * Splits src[0..len) into es planes at dst: n = len / es whole elements
 * give planes of n bytes each, followed by the len % es trailing bytes.
 */
static void shuffle(uint8_t *restrict dst, const uint8_t *restrict src,
		    size_t len, unsigned es)
{
	size_t n = len / es;
	size_t i = 0;

	assert(es == 2 || es == 4);
	if (es == 2) {
		for (; i + KVT_CODEC_KERNEL <= n; i += KVT_CODEC_KERNEL)
			shuf2_kernel(dst + i, dst + n + i, src + 2 * i);
	} else {
		for (; i + KVT_CODEC_KERNEL <= n; i += KVT_CODEC_KERNEL)
			shuf4_kernel(dst + i, dst + n + i, dst + 2 * n + i,
				     dst + 3 * n + i, src + 4 * i);
	}
	for (; i < n; i++)
		for (unsigned b = 0; b < es; b++)
			dst[b * n + i] = src[i * es + b];
	memcpy(dst + n * es, src + n * es, len - n * es);
}

/* The inverse of shuffle(). */
static void unshuffle(uint8_t *restrict dst, const uint8_t *restrict src,
		      size_t len, unsigned es)
{
	size_t n = len / es;
	size_t i = 0;

	assert(es == 2 || es == 4);
	if (es == 2) {
		for (; i + KVT_CODEC_KERNEL <= n; i += KVT_CODEC_KERNEL)
			unshuf2_kernel(dst + 2 * i, src + i, src + n + i);
	} else {
		for (; i + KVT_CODEC_KERNEL <= n; i += KVT_CODEC_KERNEL)
			unshuf4_kernel(dst + 4 * i, src + i, src + n + i,
				       src + 2 * n + i, src + 3 * n + i);
	}
	for (; i < n; i++)
		for (unsigned b = 0; b < es; b++)
			dst[i * es + b] = src[b * n + i];
	memcpy(dst + n * es, src + n * es, len - n * es);
}

/* --- context ---------------------------------------------------------- */

/*
 * Parameters for plain bytes: the caller's level.  The content size lets
 * the decoder check each frame's size; the checksum (XXH64) is what turns
 * a flipped byte in a block zstd stored raw, which it would otherwise copy
 * out without noticing, into KVT_ECORRUPT.  It is not free: on 2 MiB bf16
 * blocks it costs about 20% of the decompression speed and 8% of the
 * compression speed (tests/bench/bench_codec.sh).
 */
static int set_common_params(ZSTD_CCtx *cctx, int level)
{
	/*
	 * Parameters alone cannot be reset while a frame is unfinished, which
	 * is the state a compression that ran out of room leaves behind.
	 */
	if (ZSTD_isError(ZSTD_CCtx_reset(cctx,
			ZSTD_reset_session_and_parameters)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx,
			ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx,
			ZSTD_c_contentSizeFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx,
			ZSTD_c_checksumFlag, 1)))
		return KVT_EINVAL;
	return 0;
}

/*
 * Parameters for byte planes of floats.  A plane of exponent bytes has low
 * entropy (3.3 bits per byte for the bf16 activations of bench_codec) but
 * almost no repeats worth a match, and zstd's match finders spend their
 * time on short, useless matches that cost more bits than the literals
 * they replace.  Measured on such a plane (ratio, compression speed):
 * level 1 x2.356 at 0.34 GB/s, level 3 x2.211 at 0.13 GB/s, level 15 x2.386
 * at 0.01 GB/s, level 16 x2.399; these parameters x2.383 at 1.0 GB/s, and
 * decompression 2.3 GB/s instead of 1.2.  They are the fast strategy with
 * the longest minimum match and a large acceleration (for the fast strategy
 * targetLength is the step between match probes), which leaves the bytes
 * to the literal Huffman coder while still finding long runs such as zero
 * padding.  zstd turns literal compression off when the fast strategy is
 * accelerated (its negative levels), so it is forced back on; a libzstd
 * without that switch keeps the level's own parameters, slower but
 * correct.  From KVT_CODEC_PLANE_LEVEL_MIN up, the optimal parsers price
 * matches against literals themselves, and the level is honoured.
 */
static int set_plane_params(ZSTD_CCtx *cctx, int level)
{
	int err = set_common_params(cctx, level);

	if (err || level >= KVT_CODEC_PLANE_LEVEL_MIN)
		return err;
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx,
			ZSTD_c_literalCompressionMode, ZSTD_ps_enable)))
		return 0;
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy,
						ZSTD_fast)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 7)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_targetLength,
						64)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, 12)))
		return set_common_params(cctx, level);
	return 0;
}

/* Loads the parameters for bytes or planes, unless already loaded. */
static int set_mode(struct kvt_codec_ctx *c, enum cctx_mode mode)
{
	int err;

	if (c->mode == mode)
		return 0;
	c->mode = MODE_NONE;
	err = mode == MODE_PLANES ? set_plane_params(c->cctx, c->level) :
				    set_common_params(c->cctx, c->level);
	if (!err)
		c->mode = mode;
	return err;
}

int kvt_codec_ctx_new(struct kvt_codec_ctx **out, int level)
{
	struct kvt_codec_ctx *c;

	if (!out || level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
		return KVT_EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->level = level;
	c->mode = MODE_NONE;
	c->scratch_cap = (size_t)KVT_CODEC_ELEM_MAX * KVT_CODEC_PIECE_ELEMS;
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	c->scratch = malloc(c->scratch_cap);
	if (!c->cctx || !c->dctx || !c->scratch) {
		kvt_codec_ctx_free(c);
		return -ENOMEM;
	}
	/* Fails here rather than at the first block if zstd dislikes level. */
	if (set_mode(c, MODE_BYTES) != 0) {
		kvt_codec_ctx_free(c);
		return KVT_EINVAL;
	}
	*out = c;
	return 0;
}

void kvt_codec_ctx_free(struct kvt_codec_ctx *c)
{
	if (!c)
		return;
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	free(c->scratch);
	free(c->scatter);
	free(c);
}

/* --- compression ------------------------------------------------------ */

/* Largest compressed size worth keeping for a block of len bytes. */
static size_t keep_limit(size_t len)
{
	/* ceil(len * 3%), computed without overflowing len * 30. */
	size_t saving = len / 1000 * KVT_CODEC_MIN_SAVING_PERMILLE +
			((len % 1000) * KVT_CODEC_MIN_SAVING_PERMILLE + 999) /
				1000;

	return len - saving;
}

/*
 * What a failed zstd call means for compress_frames(): -ENOMEM, or 0 for
 * "keep the block raw".  Out of room means the block does not compress
 * well enough; any other failure is unexpected, but a raw copy is always a
 * correct encoding, so it is better than failing a demotion.
 */
static ptrdiff_t zstd_failure(size_t r)
{
	return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? -ENOMEM :
								       0;
}

/*
 * Compresses one shuffled piece of m bytes (n = m / es elements) from the
 * scratch buffer as one frame into dst[0..cap).  Each plane is followed by
 * a flush, which ends the zstd block there: a plane shorter than zstd's
 * 128 KiB block (any plane of a block under 256 KiB, and of the last piece)
 * would otherwise share its block, and so its Huffman table, with the next
 * plane, and small blocks would lose nearly all of the shuffle's gain.
 * Returns as compress_frames() does.
 */
static ptrdiff_t compress_planes(struct kvt_codec_ctx *c, size_t m,
				 unsigned es, uint8_t *dst, size_t cap)
{
	size_t n = m / es, r;
	ZSTD_outBuffer ob = { dst, cap, 0 };

	r = ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setPledgedSrcSize(c->cctx, m);
	if (ZSTD_isError(r))
		return zstd_failure(r);
	for (unsigned b = 0; b < es; b++) {
		int last = b + 1 == es;
		/* The trailing partial element rides with the last plane. */
		ZSTD_inBuffer ib = { c->scratch + b * n,
				     last ? m - b * n : n, 0 };
		ZSTD_EndDirective op = last ? ZSTD_e_end : ZSTD_e_flush;

		do {
			r = ZSTD_compressStream2(c->cctx, &ob, &ib, op);
			if (ZSTD_isError(r))
				return zstd_failure(r);
			/* Data left to flush and no room: too big to keep. */
			if (r != 0 && ob.pos == ob.size)
				return 0;
		} while (r != 0);
	}
	return (ptrdiff_t)ob.pos;
}

/*
 * Compresses src into dst[0..cap) as the codec's frames.  Returns the
 * compressed length, 0 if it does not fit in cap (the block should be kept
 * raw), or a negative error.
 */
static ptrdiff_t compress_frames(struct kvt_codec_ctx *c, const uint8_t *src,
				 size_t len, unsigned es, uint8_t *dst,
				 size_t cap)
{
	size_t piece = (size_t)es * KVT_CODEC_PIECE_ELEMS;
	size_t in = 0, out = 0, r;
	ptrdiff_t got;

	/*
	 * Cannot fail: the level was accepted by _new and every other
	 * parameter is a constant within zstd's bounds.  Should it anyway, a
	 * raw copy is still a correct encoding.
	 */
	if (set_mode(c, es > 1 ? MODE_PLANES : MODE_BYTES) != 0)
		return 0;
	if (es == 1) {
		/* Plain bytes gain nothing from pieces: one frame for all. */
		r = ZSTD_compress2(c->cctx, dst, cap, src, len);
		return ZSTD_isError(r) ? zstd_failure(r) : (ptrdiff_t)r;
	}
	do {
		/*
		 * The last piece takes the trailing partial element, so that
		 * only the final frame's content has a tail.
		 */
		size_t m = len - in < piece ? len - in : piece;

		shuffle(c->scratch, src + in, m, es);
		got = compress_planes(c, m, es, dst + out, cap - out);
		if (got <= 0)
			return got;
		in += m;
		out += (size_t)got;
	} while (in < len);
	return (ptrdiff_t)out;
}

int kvt_codec_compress(struct kvt_codec_ctx *c, const uint8_t *src, size_t len,
		       unsigned elem_size, uint8_t **out_mem, size_t *out_len,
		       uint8_t *out_codec)
{
	unsigned es = elem_size ? elem_size : 1;
	size_t cap = keep_limit(len);
	uint8_t codec, *mem, *smaller;
	ptrdiff_t r = 0;

	if (!c || (!src && len) || !out_mem || !out_len || !out_codec)
		return KVT_EINVAL;
	if (es != 1 && es != 2 && es != 4)
		return KVT_EINVAL;
	codec = es == 1 ? KVT_CODEC_ZSTD :
		es == 2 ? KVT_CODEC_ZSTD_SHUF2 : KVT_CODEC_ZSTD_SHUF4;

	/*
	 * zstd writes into a buffer only as large as the biggest result worth
	 * keeping: a block that does not save 3% fails with dstSize_tooSmall,
	 * which is the signal to keep it raw.
	 */
	if (cap > 0) {
		mem = malloc(cap);
		if (!mem)
			return -ENOMEM;
		r = compress_frames(c, src, len, es, mem, cap);
		if (r < 0) {
			free(mem);
			return (int)r;
		}
		if (r > 0) {
			/* Give back the unused tail; failing to is harmless. */
			smaller = realloc(mem, (size_t)r);
			*out_mem = smaller ? smaller : mem;
			*out_len = (size_t)r;
			*out_codec = codec;
			return 0;
		}
		free(mem);
	}

	/* malloc(0) may return NULL, and callers are promised non-NULL. */
	mem = malloc(len ? len : 1);
	if (!mem)
		return -ENOMEM;
	if (len)
		memcpy(mem, src, len);
	*out_mem = mem;
	*out_len = len;
	*out_codec = KVT_CODEC_RAW;
	return 0;
}

/* --- decompression ---------------------------------------------------- */

/* A failed zstd decode: out of memory, or else damaged input. */
static int decode_failure(size_t r)
{
	return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ?
		       -ENOMEM : KVT_ECORRUPT;
}

/*
 * Decompresses the frame at the start of src (avail bytes) into c->scratch
 * (grown if needed), with at most room bytes of content: *fsize is the
 * frame's size and *raw what it held.  Returns 0 or KVT_ECORRUPT, -ENOMEM.
 */
static int frame_to_scratch(struct kvt_codec_ctx *c, const uint8_t *src,
			    size_t avail, size_t room, size_t *fsize,
			    size_t *raw)
{
	unsigned long long content;
	size_t r;

	*fsize = ZSTD_findFrameCompressedSize(src, avail);
	if (ZSTD_isError(*fsize))
		return KVT_ECORRUPT;
	content = ZSTD_getFrameContentSize(src, *fsize);
	/*
	 * This encoder always records the content size; an unknown or
	 * unreadable one, or one that overflows the value, is damage.
	 */
	if (content == ZSTD_CONTENTSIZE_UNKNOWN ||
	    content == ZSTD_CONTENTSIZE_ERROR || content > room)
		return KVT_ECORRUPT;
	if (content > c->scratch_cap) {
		/*
		 * Only a different encoder's larger pieces get here; the size
		 * is bounded by the value's raw length, which the caller
		 * vouches for.
		 */
		uint8_t *bigger = malloc((size_t)content);

		if (!bigger)
			return -ENOMEM;
		free(c->scratch);
		c->scratch = bigger;
		c->scratch_cap = (size_t)content;
	}
	r = ZSTD_decompressDCtx(c->dctx, c->scratch, (size_t)content, src,
				*fsize);
	if (ZSTD_isError(r))
		return decode_failure(r);
	if (r != content)
		return KVT_ECORRUPT;
	*raw = r;
	return 0;
}

/*
 * Decodes the shuffled frames of a SHUF codec: each frame goes into the
 * scratch buffer, which stays in cache, and is unshuffled from there into
 * its place in dst.
 */
static int decompress_shuffled(struct kvt_codec_ctx *c, unsigned es,
			       const uint8_t *src, size_t src_len,
			       uint8_t *dst, size_t raw_len)
{
	size_t in = 0, out = 0;

	while (in < src_len) {
		size_t fsize, r;
		int rc = frame_to_scratch(c, src + in, src_len - in,
					  raw_len - out, &fsize, &r);

		if (rc)
			return rc;
		unshuffle(dst + out, c->scratch, r, es);
		in += fsize;
		out += r;
	}
	return out == raw_len ? 0 : KVT_ECORRUPT;
}

int kvt_codec_decompress(struct kvt_codec_ctx *c, uint8_t codec,
			 const uint8_t *src, size_t src_len, uint8_t *dst,
			 size_t raw_len)
{
	size_t r;

	if (!c || (!src && src_len) || (!dst && raw_len))
		return KVT_EINVAL;
	switch (codec) {
	case KVT_CODEC_RAW:
		if (src_len != raw_len)
			return KVT_ECORRUPT;
		if (raw_len)
			memcpy(dst, src, raw_len);
		return 0;
	case KVT_CODEC_ZSTD:
		/* An empty block is never stored as ZSTD. */
		if (src_len == 0)
			return KVT_ECORRUPT;
		/* Handles concatenated frames; stops at dst + raw_len. */
		r = ZSTD_decompressDCtx(c->dctx, dst, raw_len, src, src_len);
		if (ZSTD_isError(r))
			return decode_failure(r);
		return r == raw_len ? 0 : KVT_ECORRUPT;
	case KVT_CODEC_ZSTD_SHUF2:
	case KVT_CODEC_ZSTD_SHUF4:
		if (src_len == 0)
			return KVT_ECORRUPT;
		return decompress_shuffled(c,
				codec == KVT_CODEC_ZSTD_SHUF2 ? 2 : 4,
				src, src_len, dst, raw_len);
	default:
		return KVT_EINVAL;
	}
}

/* --- decompression into pieces --------------------------------------- */

/* Where the next output byte goes: piece i, offset off in it. */
struct cursor {
	const struct iovec *v;
	size_t n, i, off;
};

/* Copies len bytes of src to the cursor's place and advances it. */
static void scatter_copy(struct cursor *cu, const uint8_t *src, size_t len)
{
	while (len > 0) {
		size_t room = cu->v[cu->i].iov_len - cu->off;
		size_t take = room < len ? room : len;

		memcpy((uint8_t *)cu->v[cu->i].iov_base + cu->off, src, take);
		src += take;
		len -= take;
		cu->off += take;
		if (cu->off == cu->v[cu->i].iov_len && cu->i + 1 < cu->n) {
			cu->i++;
			cu->off = 0;
		}
	}
}

/* Skips pieces the cursor has filled (and empty ones). */
static void cursor_settle(struct cursor *cu)
{
	while (cu->i + 1 < cu->n && cu->off == cu->v[cu->i].iov_len) {
		cu->i++;
		cu->off = 0;
	}
}

/*
 * KVT_CODEC_ZSTD into pieces: streaming decompression, one output buffer
 * per piece.  The context is reset first, so one abandoned midway (a
 * guarded copy that faulted) is fit for the next call.
 */
static int decompress_stream(struct kvt_codec_ctx *c, const uint8_t *src,
			     size_t src_len, const struct iovec *v, size_t n)
{
	ZSTD_inBuffer ib = { src, src_len, 0 };
	size_t r = 1;

	if (src_len == 0)
		return KVT_ECORRUPT;
	r = ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_only);
	if (ZSTD_isError(r))
		return decode_failure(r);
	r = 1;
	for (size_t i = 0; i < n; i++) {
		ZSTD_outBuffer ob = { v[i].iov_base, v[i].iov_len, 0 };

		while (ob.pos < ob.size) {
			size_t before = ob.pos, in_before = ib.pos;

			r = ZSTD_decompressStream(c->dctx, &ob, &ib);
			if (ZSTD_isError(r))
				return decode_failure(r);
			/* Input used up without filling the pieces: short. */
			if (ob.pos == before && ib.pos == in_before)
				return KVT_ECORRUPT;
		}
	}
	/*
	 * Every piece is full: the last frame must end here, with nothing
	 * after it (another frame would be more bytes than raw_len).
	 */
	if (r != 0) {
		uint8_t extra;
		ZSTD_outBuffer ob = { &extra, 1, 0 };

		r = ZSTD_decompressStream(c->dctx, &ob, &ib);
		if (ZSTD_isError(r))
			return decode_failure(r);
		if (ob.pos || r != 0)
			return KVT_ECORRUPT;
	}
	return ib.pos == ib.size ? 0 : KVT_ECORRUPT;
}

/*
 * SHUF codecs into pieces: as decompress_shuffled(), each frame into the
 * scratch buffer; a frame whose bytes land in one piece is unshuffled
 * straight there, one that straddles pieces goes through c->scatter.
 */
static int decompress_shuffled_v(struct kvt_codec_ctx *c, unsigned es,
				 const uint8_t *src, size_t src_len,
				 const struct iovec *v, size_t n,
				 size_t raw_len)
{
	struct cursor cu = { v, n, 0, 0 };
	size_t in = 0, out = 0;

	while (in < src_len) {
		size_t fsize, r;
		int rc = frame_to_scratch(c, src + in, src_len - in,
					  raw_len - out, &fsize, &r);

		if (rc)
			return rc;
		cursor_settle(&cu);
		if (v[cu.i].iov_len - cu.off >= r) {
			unshuffle((uint8_t *)v[cu.i].iov_base + cu.off,
				  c->scratch, r, es);
			cu.off += r;
		} else {
			if (r > c->scatter_cap) {
				uint8_t *p = malloc(r);

				if (!p)
					return -ENOMEM;
				free(c->scatter);
				c->scatter = p;
				c->scatter_cap = r;
			}
			unshuffle(c->scatter, c->scratch, r, es);
			scatter_copy(&cu, c->scatter, r);
		}
		in += fsize;
		out += r;
	}
	return out == raw_len ? 0 : KVT_ECORRUPT;
}

int kvt_codec_decompress_v(struct kvt_codec_ctx *c, uint8_t codec,
			   const uint8_t *src, size_t src_len,
			   const struct iovec *dst, size_t n, size_t raw_len)
{
	size_t total = 0;

	if (!c || (!src && src_len) || (!dst && n))
		return KVT_EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!dst[i].iov_base && dst[i].iov_len)
			return KVT_EINVAL;
		total += dst[i].iov_len;
	}
	if (total != raw_len)
		return KVT_EINVAL;
	if (n <= 1)
		return kvt_codec_decompress(c, codec, src, src_len,
					    n ? dst[0].iov_base : NULL,
					    raw_len);
	switch (codec) {
	case KVT_CODEC_RAW: {
		struct cursor cu = { dst, n, 0, 0 };

		if (src_len != raw_len)
			return KVT_ECORRUPT;
		scatter_copy(&cu, src, src_len);
		return 0;
	}
	case KVT_CODEC_ZSTD:
		return decompress_stream(c, src, src_len, dst, n);
	case KVT_CODEC_ZSTD_SHUF2:
	case KVT_CODEC_ZSTD_SHUF4:
		if (src_len == 0)
			return KVT_ECORRUPT;
		return decompress_shuffled_v(c,
				codec == KVT_CODEC_ZSTD_SHUF2 ? 2 : 4,
				src, src_len, dst, n, raw_len);
	default:
		return KVT_EINVAL;
	}
}

/* --- names ------------------------------------------------------------ */

unsigned kvt_codec_elem_size(unsigned dtype)
{
	switch (dtype) {
	case KVT_DTYPE_BF16:
	case KVT_DTYPE_FP16:
		return 2;
	case KVT_DTYPE_FP32:
		return 4;
	default:
		/* U8, NONE and dtypes from a newer client: plain bytes. */
		return 1;
	}
}

const char *kvt_codec_name(uint8_t codec)
{
	switch (codec) {
	case KVT_CODEC_RAW:
		return "raw";
	case KVT_CODEC_ZSTD:
		return "zstd";
	case KVT_CODEC_ZSTD_SHUF2:
		return "zstd+shuf2";
	case KVT_CODEC_ZSTD_SHUF4:
		return "zstd+shuf4";
	default:
		return "unknown";
	}
}
