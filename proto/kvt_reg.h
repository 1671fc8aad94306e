/*
 * kvt_reg.h - wire format of registered client memory (PROTOCOL.md,
 * "Registered memory"): REGISTER, UNREGISTER, and the batches MGET_TO and
 * MPUT_FROM whose values go into, or come from, segments of that memory.
 * Pure encoders and parsers over caller buffers, like kvt_frame.h: no I/O,
 * no allocation.
 *
 * A client passes a descriptor of memory it can map (a memfd, a file in
 * /dev/shm) with SCM_RIGHTS in the sendmsg() that carries a REGISTER
 * frame's first byte; the daemon maps it and answers with a region id.
 * From then on a batch names, per key, segments (region, offset, length)
 * of that memory whose concatenation is the key's value, and only keys and
 * segment lists travel on the socket.
 *
 *   REGISTER request   u64 offset, u64 length (0 = to the end of the file),
 *                      u32 flags (KVT_REGION_READONLY), u32 zero: 24 bytes
 *   REGISTER reply     u32 region id (never 0), u32 flags (READONLY,
 *                      SEALED), u64 length mapped: 16 bytes (later
 *                      versions may append)
 *   UNREGISTER request u32 region id, u32 zero: 8 bytes; reply empty
 *   MGET_TO request    u8 ns_len, u8 zero, u16 count, ns, then count keys
 *   MPUT_FROM request  u8 ns_len, u8 dtype, u16 count, u32 ttl_s, ns, then
 *                      count keys
 *     a key            u16 key_len, key, u16 nseg, nseg segments
 *     a segment        u32 region, u32 zero, u64 offset, u64 length
 *   reply (both)       u32 count, u32 zero, count results
 *     a result         u8 status (KVT_XFER_*), u8 dtype, u16 zero,
 *                      u32 code, u64 length: 16 bytes
 */
#ifndef KVT_REG_H
#define KVT_REG_H

#include <stddef.h>
#include <stdint.h>

#include "kvt_frame.h"

/* ---- REGISTER and UNREGISTER ------------------------------------------ */

#define KVT_REG_REQ_SIZE 24
#define KVT_REG_REPLY_SIZE 16
#define KVT_UNREG_REQ_SIZE 8

struct kvt_reg_req {
	uint64_t offset;
	uint64_t length; /* 0 = from offset to the end of the file */
	uint32_t flags;	 /* KVT_REGION_READONLY or 0 */
};

struct kvt_reg_reply {
	uint32_t region; /* >= 1 */
	uint32_t flags;	 /* KVT_REGION_READONLY, KVT_REGION_SEALED */
	uint64_t length; /* bytes mapped */
};

void kvt_reg_req_encode(uint8_t out[KVT_REG_REQ_SIZE],
			const struct kvt_reg_req *r);
/*
 * Parses a REGISTER body.  Returns 0, or KVT_EBADREQ (not 24 bytes, a
 * flag other than KVT_REGION_READONLY, nonzero reserved field,
 * offset + length past 2^64).
 */
int kvt_reg_req_parse(const uint8_t *body, size_t len, struct kvt_reg_req *r);

void kvt_reg_reply_encode(uint8_t out[KVT_REG_REPLY_SIZE],
			  const struct kvt_reg_reply *r);
/*
 * Parses a REGISTER reply; bytes after the first 16 are ignored (later
 * versions).  Returns 0 or KVT_EPROTO (short, region 0, unknown flags).
 */
int kvt_reg_reply_parse(const uint8_t *body, size_t len,
			struct kvt_reg_reply *r);

void kvt_unreg_req_encode(uint8_t out[KVT_UNREG_REQ_SIZE], uint32_t region);
/* Returns 0, or KVT_EBADREQ (not 8 bytes, region 0, nonzero reserved). */
int kvt_unreg_req_parse(const uint8_t *body, size_t len, uint32_t *region);

/* ---- MGET_TO and MPUT_FROM requests ------------------------------------ */

#define KVT_XFER_GET_FIXED 4 /* MGET_TO: u8 ns_len, u8 0, u16 count */
#define KVT_XFER_PUT_FIXED 8 /* MPUT_FROM: ..., u8 dtype, ..., u32 ttl_s */
#define KVT_XFER_KEY_FIXED 4 /* u16 key_len + u16 nseg */
#define KVT_XFER_SEG_SIZE 24

/* One segment: length bytes at offset in region. */
struct kvt_xfer_seg {
	uint32_t region;
	uint64_t offset;
	uint64_t length;
};

/* The fixed part of a request (MGET_TO when put is 0). */
struct kvt_xfer_head {
	int put;	/* 1: MPUT_FROM */
	const uint8_t *ns;
	size_t ns_len;
	size_t count;	/* keys */
	uint8_t dtype;	/* MPUT_FROM only; 0 in MGET_TO */
	uint32_t ttl_s; /* MPUT_FROM only */
};

/* Size of the fixed part and namespace. */
size_t kvt_xfer_head_size(int put, size_t ns_len);
/* Size one key with nseg segments adds to a request. */
size_t kvt_xfer_key_size(size_t key_len, size_t nseg);

/*
 * Writes the fixed part and namespace into out (room for
 * kvt_xfer_head_size() bytes).  Returns 0 or KVT_EINVAL (ns_len over 255,
 * ns NULL with a length, count over KVT_XFER_KEYS_MAX, a dtype not of
 * enum kvt_dtype, or a dtype or ttl_s in an MGET_TO).
 */
int kvt_xfer_head_encode(uint8_t *out, const struct kvt_xfer_head *h);
/*
 * Writes one key and its segment count (kvt_xfer_key_size(key_len, 0)
 * bytes); its nseg segments follow, each by kvt_xfer_seg_encode().
 * Returns 0 or KVT_EINVAL (key NULL or empty, key_len over 65535, nseg
 * over KVT_XFER_KEY_SEGS_MAX).
 */
int kvt_xfer_key_encode(uint8_t *out, const void *key, size_t key_len,
			size_t nseg);
void kvt_xfer_seg_encode(uint8_t out[KVT_XFER_SEG_SIZE],
			 const struct kvt_xfer_seg *s);

/* A parsed request: pointers refer into the body. */
struct kvt_xfer_req {
	struct kvt_xfer_head h;
	size_t nsegs;	     /* over all keys */
	const uint8_t *keys; /* count keys, validated by the parser */
	size_t keys_len;
};

/*
 * Parses and validates a whole MGET_TO (put 0) or MPUT_FROM (put 1) body,
 * so that kvt_xfer_req_key() cannot fail afterwards.  Returns 0, or
 * KVT_EBADREQ (short; nonzero reserved byte or field; an MPUT_FROM dtype
 * not of enum kvt_dtype; an empty key; lengths running past the end;
 * bytes after the last key) or KVT_ETOOBIG (count over KVT_XFER_KEYS_MAX,
 * namespace or a key over lim, a key with more than KVT_XFER_KEY_SEGS_MAX
 * segments, more than KVT_XFER_SEGS_MAX in all, or, in an MPUT_FROM, a
 * key whose segments add up to more than lim->max_value).  Limits are
 * checked as they are met, so an oversized request is KVT_ETOOBIG
 * whatever else follows.  Segments are not checked against any region:
 * the daemon does that (kvt_region.c).
 */
int kvt_xfer_req_parse(const uint8_t *body, size_t len, int put,
		       const struct kvt_limits *lim, struct kvt_xfer_req *r);

/* One key of a parsed request. */
struct kvt_xfer_key {
	struct kvt_keyref k; /* namespace included */
	size_t nseg;
	const uint8_t *segs; /* nseg x KVT_XFER_SEG_SIZE bytes */
	uint64_t total;	     /* sum of the segment lengths (saturates) */
};

/*
 * Iterates over a parsed request's keys in order: *pos starts at 0.  Fills
 * *k and returns 1, or returns 0 after the last key.
 */
int kvt_xfer_req_key(const struct kvt_xfer_req *r, size_t *pos,
		     struct kvt_xfer_key *k);
/* Segment i of a key (i < k->nseg). */
void kvt_xfer_key_seg(const struct kvt_xfer_key *k, size_t i,
		      struct kvt_xfer_seg *s);

/* ---- the reply ---------------------------------------------------------- */

#define KVT_XFER_REPLY_FIXED 8
#define KVT_XFER_RESULT_SIZE 16

/* A key's status in a reply. */
enum kvt_xfer_status {
	/* MGET_TO: a hit, the value fills its segments exactly.  MPUT_FROM:
	 * stored. */
	KVT_XFER_OK = 0,
	/* MGET_TO: not in the cache.  Nothing written. */
	KVT_XFER_MISS = 1,
	/* MGET_TO: the value's length (in the result) is not the sum of the
	 * segments' lengths.  Nothing written. */
	KVT_XFER_MISMATCH = 2,
	/* The key failed: code says why (a wire status, e.g. 1018 for
	 * KVT_EFAULT).  Segments of an MGET_TO may have been written. */
	KVT_XFER_ERROR = 3,
	KVT_XFER_STATUS_END_
};

struct kvt_xfer_result {
	uint8_t status; /* enum kvt_xfer_status */
	uint8_t dtype;	/* MGET_TO hit or mismatch: the value's dtype */
	uint32_t code;	/* KVT_XFER_ERROR: the positive error code; else 0 */
	uint64_t length; /* the value's length (OK, MISMATCH); else 0 */
};

/* Size of a reply with n results. */
size_t kvt_xfer_reply_size(size_t n);
void kvt_xfer_reply_head_encode(uint8_t out[KVT_XFER_REPLY_FIXED],
				uint32_t count);
void kvt_xfer_result_encode(uint8_t out[KVT_XFER_RESULT_SIZE],
			    const struct kvt_xfer_result *r);
/*
 * Reads a reply's count, checking that the body holds exactly that many
 * results.  Returns 0 or KVT_EPROTO.
 */
int kvt_xfer_reply_head_parse(const uint8_t *body, size_t len,
			      uint32_t *count);
/*
 * Parses one result.  Returns 0 or KVT_EPROTO (unknown status, nonzero
 * reserved field, a code with a status other than ERROR or an ERROR
 * without one).
 */
int kvt_xfer_result_parse(const uint8_t p[KVT_XFER_RESULT_SIZE],
			  struct kvt_xfer_result *r);

#endif /* KVT_REG_H */
