/*
 * kvtier_defs.h - the constants of kvtier's public interface: its version,
 * the protocol limits a client must respect, and the dtype hints.
 *
 * A public header (installed beside kvtier.h, which includes it), and the
 * one place each of these is defined: the wire format (proto/kvt_frame.h),
 * the daemon and the library take them from here, and the Makefile reads
 * the version from KVT_VERSION_STRING below.
 */
#ifndef KVTIER_DEFS_H
#define KVTIER_DEFS_H

/* Release of kvtier (daemon, library and tool are built together). */
#define KVT_VERSION_MAJOR 0
#define KVT_VERSION_MINOR 1
#define KVT_VERSION_PATCH 0
#define KVT_VERSION_STRING "0.1.0"

/* Longest namespace, in bytes (the length travels in one byte). */
#define KVT_NS_MAX 255

/* Most keys in one MATCH, PREFETCH, PIN or UNPIN request (kvt_match()). */
#define KVT_MATCH_KEYS_MAX 4096

/* Size of one prefix key in bytes (a SHA-256 digest; kvtier_prefix.h). */
#define KVT_PREFIX_KEY_SIZE 32

/*
 * Registered memory (kvt_register(), PROTOCOL.md "Registered memory").
 * One MGET_TO or MPUT_FROM request carries at most KVT_XFER_KEYS_MAX keys,
 * KVT_XFER_KEY_SEGS_MAX segments per key (an SGLang layer_first MHA page
 * is 2 x layers segments: 512 covers 256 layers) and KVT_XFER_SEGS_MAX
 * segments in all; the library splits larger batches into several
 * requests.
 */
#define KVT_XFER_KEYS_MAX 4096
#define KVT_XFER_KEY_SEGS_MAX 512
#define KVT_XFER_SEGS_MAX 65536

/*
 * Region flags (struct kvt_region.flags; the REGISTER request and reply).
 * READONLY: the daemon maps the region read-only, so it can only be the
 * source of puts (kvt_mput_from()); asked for by the client.  SEALED: the
 * file is sealed against shrinking (memfd F_SEAL_SHRINK), so a transfer
 * into it cannot fault; reported by the daemon.
 */
#define KVT_REGION_READONLY 0x1u
#define KVT_REGION_SEALED 0x2u

/*
 * Element type of a value: a hint that lets the daemon compress it better
 * (2- and 4-byte elements are split into byte planes before zstd).  Carried
 * by PUT (kvt_put_opts.dtype, PROTOCOL.md); 0 = unknown.
 */
enum kvt_dtype {
	KVT_DTYPE_NONE = 0,
	KVT_DTYPE_U8 = 1,
	KVT_DTYPE_BF16 = 2,
	KVT_DTYPE_FP16 = 3,
	KVT_DTYPE_FP32 = 4,
	KVT_DTYPE_END_
};

#endif /* KVTIER_DEFS_H */
