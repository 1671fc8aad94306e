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
