/*
 * kvt_codec.h - the codec of the compressed tiers: compression of K/V
 * blocks for L2 (RAM) and L3 (SSD, which stores L2's frames as they are).
 *
 * Blocks are 64 KiB-32 MiB, typically 2 MiB of bf16 attention K/V.  Such
 * floats barely repeat, so a general-purpose compressor finds few matches;
 * what it can exploit is that the high byte of every element (sign and
 * exponent) takes only a handful of values, while the low byte (mantissa)
 * is close to random.  Interleaved, the two kinds of byte share one entropy
 * coder and both look random.  So for 2- and 4-byte elements the codec first
 * splits the bytes into planes (byte 0 of every element, then byte 1, ...)
 * and only then runs zstd; zstd entropy-codes the exponent plane and stores
 * the mantissa plane raw, which it also decodes at memcpy speed.
 *
 * Codecs (enum kvt_codec) are stored on disk by L3 next to the compressed
 * bytes, so their numbers and formats never change:
 *
 *   KVT_CODEC_RAW        the block itself, unchanged.
 *   KVT_CODEC_ZSTD       one or more concatenated zstd frames whose
 *                        decompressed contents, concatenated, are the block.
 *   KVT_CODEC_ZSTD_SHUF2 one or more concatenated zstd frames.  Each frame
 *   KVT_CODEC_ZSTD_SHUF4 records its content size and holds one piece of the
 *                        block (pieces in order) in shuffled form: with
 *                        element size e (2 or 4) and a piece of m bytes,
 *                        n = m / e whole elements, the frame's content is
 *                        plane 0 (byte 0 of elements 0..n-1), plane 1, ...,
 *                        plane e-1, then the m % e trailing bytes unchanged.
 *
 * The encoder cuts a block into pieces of 128 Ki elements, so that
 * shuffling and unshuffling work in cache, and ends a zstd block at the end
 * of every plane, so that each plane gets a Huffman table of its own; the
 * decoder accepts pieces of any size.  Every frame carries zstd's content
 * checksum, so damage is detected, not returned.
 *
 * Errors are kvtier codes (kvtier_errors.h): KVT_EINVAL, KVT_ECORRUPT, or
 * -ENOMEM.
 *
 * Threading.  A struct kvt_codec_ctx is used by one thread at a time (keep
 * one per worker thread); functions that take no context are thread safe.
 */
#ifndef KVT_CODEC_H
#define KVT_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Numbers are stored on disk by L3: never renumber, only append. */
enum kvt_codec {
	KVT_CODEC_RAW = 0,
	KVT_CODEC_ZSTD = 1,
	KVT_CODEC_ZSTD_SHUF2 = 2,
	KVT_CODEC_ZSTD_SHUF4 = 3,
	/* One past the highest codec this build knows. */
	KVT_CODEC_END_
};

/*
 * A compression context: a zstd compression and decompression context and a
 * shuffle scratch buffer (512 KiB).  Opaque; one per thread.
 */
struct kvt_codec_ctx;

/*
 * Creates a context that compresses at zstd level `level` (1 is the L2
 * default; negative "fast" levels down to ZSTD_minCLevel() are allowed, and
 * 0 means zstd's default, 3).  The level applies as given to plain bytes
 * (KVT_CODEC_ZSTD).  Byte planes of floats are compressed with one fixed
 * setting that entropy-codes them and skips zstd's match search for every
 * level below 16, because on such planes it is both faster and smaller than
 * any of those levels (measured in kvt_codec.c); from 16 up the level is
 * used as given.  On success stores the context in *out and returns 0.
 * Errors: KVT_EINVAL (out NULL or level outside zstd's range), -ENOMEM.
 */
int kvt_codec_ctx_new(struct kvt_codec_ctx **out, int level);

/* Frees a context.  NULL is accepted and ignored. */
void kvt_codec_ctx_free(struct kvt_codec_ctx *c);

/*
 * Compresses src[0..len), a block of elements of elem_size bytes (0 or 1:
 * plain bytes; 2: bf16/fp16; 4: fp32).  len need not be a multiple of
 * elem_size.  src may be NULL when len is 0.
 *
 * If compression would save less than 3% of len, the block is stored as
 * KVT_CODEC_RAW (a plain copy), because reading it back then costs no
 * decompression at all; in particular len == 0 always gives RAW.
 *
 * On success returns 0 and sets *out_mem to a malloc'd buffer the caller
 * owns and frees with free() (never NULL, even when *out_len is 0), *out_len
 * to its length and *out_codec to the codec used.  On failure the outputs
 * are left unchanged.
 * Errors: KVT_EINVAL (NULL argument, elem_size not 0, 1, 2 or 4), -ENOMEM.
 */
int kvt_codec_compress(struct kvt_codec_ctx *c, const uint8_t *src, size_t len,
		       unsigned elem_size, uint8_t **out_mem, size_t *out_len,
		       uint8_t *out_codec);

/*
 * Decompresses src[0..src_len), stored with `codec`, into dst, which holds
 * exactly raw_len bytes (the block's original length).  Never writes outside
 * dst[0..raw_len); on error the contents of dst are unspecified.
 * Errors: KVT_ECORRUPT (the data is damaged, fails its checksum, or does not
 * produce exactly raw_len bytes), KVT_EINVAL (unknown codec, NULL argument),
 * -ENOMEM (only for a frame larger than the scratch buffer, which this
 * encoder never writes).
 */
int kvt_codec_decompress(struct kvt_codec_ctx *c, uint8_t codec,
			 const uint8_t *src, size_t src_len, uint8_t *dst,
			 size_t raw_len);

/*
 * As kvt_codec_decompress(), into the concatenation of dst[0..n) (whose
 * lengths must add up to raw_len): the pieces of client memory a value
 * is scattered over (an SGLang page's K half and V half).  Decoded
 * straight into the pieces; a shuffled frame that straddles two of them
 * passes through a second scratch buffer of the context, allocated on
 * first use.  The call may be abandoned midway by a fault in a piece
 * (kvt_guard.h): it takes no lock, every allocation it makes is owned by
 * the context at once, and the next call on the context starts from a
 * reset decoder.  Errors: as kvt_codec_decompress(), and KVT_EINVAL if the
 * lengths do not add up to raw_len.
 */
int kvt_codec_decompress_v(struct kvt_codec_ctx *c, uint8_t codec,
			   const uint8_t *src, size_t src_len,
			   const struct iovec *dst, size_t n, size_t raw_len);

/*
 * Element size to compress a value of the given dtype (enum kvt_dtype in
 * kvt_frame.h) with: U8 -> 1, BF16 and FP16 -> 2, FP32 -> 4; NONE and
 * unknown dtypes -> 1.
 */
unsigned kvt_codec_elem_size(unsigned dtype);

/* Static name of a codec ("raw", "zstd", ...); "unknown" if unknown. */
const char *kvt_codec_name(uint8_t codec);

#endif /* KVT_CODEC_H */
