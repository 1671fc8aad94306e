/*
 * kvt_frame.h - the kvtier wire format: frame header, incremental decoder and
 * request/reply body codecs.  Pure functions over caller buffers: no I/O, no
 * allocation.  proto/PROTOCOL.md describes the same format in prose.
 *
 * A frame is a 24-byte header followed by body_len bytes of body.  All
 * integers are little-endian.
 *
 *   offset size field
 *        0    4 magic       'K' 'V' 'T' 'R'  (0x5254564b read as LE u32)
 *        4    1 version     KVT_PROTO_VERSION
 *        5    1 opcode      enum kvt_op
 *        6    2 flags       KVT_FLAG_REPLY on replies; low byte of a GET
 *                           reply carries the value's dtype
 *        8    8 request_id  chosen by the client, echoed in the reply
 *       16    4 status      0 in requests; in replies 0 or -KVT_E* code
 *       20    4 body_len    checked against limits before anything is
 *                           allocated for the body
 */
#ifndef KVT_FRAME_H
#define KVT_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "kvtier_defs.h"
#include "kvtier_errors.h"

#define KVT_FRAME_MAGIC 0x5254564bu
#define KVT_PROTO_VERSION 1
#define KVT_HDR_SIZE 24

/* Set in the flags of every reply frame. */
#define KVT_FLAG_REPLY 0x8000u
/* Mask of the dtype carried in a GET reply's flags. */
#define KVT_FLAG_DTYPE_MASK 0x00ffu

/* Largest error message body a daemon sends (bytes, no NUL). */
#define KVT_ERRMSG_MAX 512

enum kvt_op {
	KVT_OP_HELLO = 1,
	KVT_OP_PING = 2,
	KVT_OP_PUT = 3,
	KVT_OP_GET = 4,
	KVT_OP_DEL = 5,
	KVT_OP_EXISTS = 6,
	KVT_OP_STATS = 7,
	KVT_OP_MATCH = 8,
	KVT_OP_DROP = 9,
	KVT_OP_HOT = 10,
	/* Body and reply as MATCH; the reply counts promotions started. */
	KVT_OP_PREFETCH = 11,
	/* Body and reply as MATCH; the reply counts keys (un)pinned. */
	KVT_OP_PIN = 12,
	KVT_OP_UNPIN = 13,
	/* Shared-memory data path (kvt_shm.h). */
	KVT_OP_RELEASE = 14,
	KVT_OP_PUT_ALLOC = 15,
	KVT_OP_PUT_COMMIT = 16,
	/* Registered client memory (kvt_reg.h). */
	KVT_OP_REGISTER = 17,
	KVT_OP_UNREGISTER = 18,
	KVT_OP_MGET_TO = 19,
	KVT_OP_MPUT_FROM = 20,
	/* One past the highest opcode this build knows. */
	KVT_OP_END_
};


struct kvt_frame_header {
	uint8_t version;
	uint8_t opcode;
	uint16_t flags;
	uint64_t request_id;
	uint32_t status;
	uint32_t body_len;
};

/*
 * Limits a decoder enforces.  max_body bounds body_len of every frame;
 * the body parsers bound key, namespace and value lengths.
 */
struct kvt_limits {
	uint32_t max_key;   /* bytes, >= 1 */
	uint32_t max_ns;    /* bytes, <= KVT_NS_MAX */
	uint64_t max_value; /* bytes */
	uint64_t max_body;  /* bytes, < 2^32 */
};

/* Defaults: keys up to 1 KiB, namespaces up to 255 B, values up to 256 MiB. */
void kvt_limits_default(struct kvt_limits *lim);

/* Largest body a PUT with lim's key, namespace and value limits can have. */
uint64_t kvt_limits_put_body_max(const struct kvt_limits *lim);

/* Returns a static name ("PUT", "GET"...) or "UNKNOWN". */
const char *kvt_op_name(unsigned op);

/* Returns the element size of a dtype in bytes, 0 for NONE or unknown. */
unsigned kvt_dtype_size(unsigned dtype);

/* Parses "bf16", "fp16", "fp32", "u8"; returns the dtype or -1. */
int kvt_dtype_parse(const char *s);

/* Writes the 24-byte header h into out. */
void kvt_frame_header_encode(uint8_t out[KVT_HDR_SIZE],
			     const struct kvt_frame_header *h);

/*
 * Decodes a header from the first len bytes of buf.
 * Returns 0, KVT_EAGAIN if len < KVT_HDR_SIZE, KVT_EPROTO on bad magic,
 * KVT_EVERSION on an unsupported version, or KVT_ETOOBIG if body_len exceeds
 * lim->max_body.  On KVT_EVERSION and KVT_ETOOBIG *h is still filled in so the
 * caller can echo request_id in an error reply.
 */
int kvt_frame_header_decode(const uint8_t *buf, size_t len,
			    const struct kvt_limits *lim,
			    struct kvt_frame_header *h);

/*
 * Incremental decoder.  Feed it bytes as they arrive; it reports when a
 * header is complete (so the caller can provide exactly body_len bytes of
 * storage for the body) and when the whole frame is complete.  It never
 * allocates.  The struct is public so callers can embed it; treat its fields
 * as private and use the functions.
 */
enum kvt_dec_event {
	KVT_DEC_MORE = 0,   /* need more bytes */
	KVT_DEC_HEADER = 1, /* header complete, body_len > 0: set a body */
	KVT_DEC_FRAME = 2,  /* a whole frame is complete */
};

struct kvt_decoder {
	struct kvt_limits lim;
	int state;
	size_t hdr_have;
	uint8_t hdr[KVT_HDR_SIZE];
	struct kvt_frame_header h;
	uint8_t *body;
	size_t body_have;
};

void kvt_decoder_init(struct kvt_decoder *d, const struct kvt_limits *lim);

/*
 * Consumes bytes from p[0..n) and stores the count used in *consumed (never
 * past the end of the current frame).  Returns a kvt_dec_event or a negative
 * error from kvt_frame_header_decode (after which the decoder is unusable
 * until kvt_decoder_init).  Frames with body_len == 0 go straight to
 * KVT_DEC_FRAME.  After KVT_DEC_HEADER, kvt_decoder_set_body() must be
 * called before feeding again (feeding returns KVT_EINVAL otherwise).  After
 * KVT_DEC_FRAME the next feed starts a new frame.
 */
int kvt_decoder_feed(struct kvt_decoder *d, const uint8_t *p, size_t n,
		     size_t *consumed);

/* Supplies storage for the current frame's body; cap must be >= body_len. */
int kvt_decoder_set_body(struct kvt_decoder *d, uint8_t *body, size_t cap);

/*
 * Zero-copy body filling: *room receives how many body bytes are still
 * missing, and the return value is where they go.  After writing n of them
 * there, call kvt_decoder_body_advance(d, n), which returns KVT_DEC_FRAME once
 * the body is complete, else KVT_DEC_MORE (or KVT_EINVAL if n > room).
 */
uint8_t *kvt_decoder_body_tail(struct kvt_decoder *d, size_t *room);
int kvt_decoder_body_advance(struct kvt_decoder *d, size_t n);

/* Header of the frame being decoded (valid after HEADER or FRAME). */
const struct kvt_frame_header *kvt_decoder_header(const struct kvt_decoder *d);

/* ---- Body codecs ---------------------------------------------------- */

/* A key inside a namespace; pointers refer into a caller's buffer. */
struct kvt_keyref {
	const uint8_t *ns;
	size_t ns_len;
	const uint8_t *key;
	size_t key_len;
};

/*
 * PUT body: u8 ns_len, u8 dtype, u16 key_len, u32 ttl_s, ns, key, value.
 * The value runs to the end of the body.
 */
#define KVT_PUT_FIXED 8
struct kvt_put_req {
	struct kvt_keyref k;
	uint8_t dtype;
	uint32_t ttl_s; /* 0 = no expiry */
	const uint8_t *value;
	uint64_t value_len;
};

/*
 * Writes the PUT body prefix (fixed part, ns, key: everything except the
 * value, which the caller sends after it) into out.  *written gets its size.
 * Returns 0, KVT_ERANGE if cap is too small, KVT_EINVAL if a length is zero
 * (key) or does not fit its field.
 */
int kvt_put_req_encode_prefix(uint8_t *out, size_t cap,
			      const struct kvt_put_req *r, size_t *written);

/* Size of the PUT body prefix for these lengths. */
size_t kvt_put_req_prefix_size(size_t ns_len, size_t key_len);

/*
 * Parses a PUT body.  Pointers in *r refer into body.  Returns 0,
 * KVT_EBADREQ if the body is malformed (short, empty key, bad dtype),
 * KVT_ETOOBIG if ns, key or value exceed lim.
 */
int kvt_put_req_parse(const uint8_t *body, size_t len,
		      const struct kvt_limits *lim, struct kvt_put_req *r);

/*
 * Key body (GET, DEL, EXISTS): u8 ns_len, u8 zero, u16 key_len, ns, key;
 * nothing may follow.
 */
#define KVT_KEY_FIXED 4
size_t kvt_key_req_size(size_t ns_len, size_t key_len);
int kvt_key_req_encode(uint8_t *out, size_t cap, const struct kvt_keyref *k,
		       size_t *written);
int kvt_key_req_parse(const uint8_t *body, size_t len,
		      const struct kvt_limits *lim, struct kvt_keyref *k);

/*
 * HELLO.  Request body: u32 version, u32 features (both the client's).
 * Reply body: u32 version, u32 features, u32 max_key, u32 max_ns,
 * u64 max_value, u64 max_body (the daemon's).
 */
#define KVT_HELLO_REQ_SIZE 8
#define KVT_HELLO_REPLY_SIZE 32
struct kvt_hello {
	uint32_t version;
	uint32_t features;
	struct kvt_limits lim;
};
void kvt_hello_req_encode(uint8_t out[KVT_HELLO_REQ_SIZE], uint32_t version,
			  uint32_t features);
int kvt_hello_req_parse(const uint8_t *body, size_t len, uint32_t *version,
			uint32_t *features);
void kvt_hello_reply_encode(uint8_t out[KVT_HELLO_REPLY_SIZE],
			    const struct kvt_hello *h);
int kvt_hello_reply_parse(const uint8_t *body, size_t len,
			  struct kvt_hello *h);

/*
 * MATCH: the longest run of leading keys present, for prefix caches whose
 * block keys chain (kvtier_prefix.h).  Request body: u8 ns_len, u8 zero,
 * u16 count, ns, then count x (u16 key_len, key); nothing may follow.
 * Reply body: u32, the number of leading keys present (0..count).
 */
#define KVT_MATCH_FIXED 4
#define KVT_MATCH_REPLY_SIZE 4

/* A parsed MATCH request; pointers refer into the body. */
struct kvt_match_req {
	const uint8_t *ns;
	size_t ns_len;
	size_t count;
	/* count x (u16 key_len, key), already validated by the parser. */
	const uint8_t *keys;
	size_t keys_len;
};

/*
 * Size of a MATCH body with these lengths (SIZE_MAX if it cannot be
 * represented).  key_lens may be NULL when n is 0.
 */
size_t kvt_match_req_size(size_t ns_len, const size_t *key_lens, size_t n);

/*
 * Writes a MATCH body for keys[i][0..key_lens[i]), i < n, under ns into
 * out; *written gets its size.  Returns 0, KVT_ERANGE if cap is too small
 * (*written = the size needed; out may then be NULL), KVT_ETOOBIG if n >
 * KVT_MATCH_KEYS_MAX, KVT_EINVAL if written is NULL, ns_len > 255, a key
 * is NULL, empty or longer than 65535 bytes, or ns, keys or key_lens is
 * NULL with a nonzero length.
 */
int kvt_match_req_encode(uint8_t *out, size_t cap, const uint8_t *ns,
			 size_t ns_len, const void *const *keys,
			 const size_t *key_lens, size_t n, size_t *written);

/*
 * Parses and validates a whole MATCH body, so that kvt_match_req_key()
 * cannot fail afterwards.  Returns 0, KVT_EBADREQ if the body is
 * malformed (short, nonzero reserved byte, an empty key, lengths running
 * past the end, bytes after the last key), KVT_ETOOBIG if count exceeds
 * KVT_MATCH_KEYS_MAX or the namespace or a key exceeds lim.
 */
int kvt_match_req_parse(const uint8_t *body, size_t len,
			const struct kvt_limits *lim, struct kvt_match_req *m);

/*
 * Iterates over a parsed request's keys in order: *pos starts at 0.  Fills
 * *k (namespace included) and returns 1, or returns 0 after the last key.
 */
int kvt_match_req_key(const struct kvt_match_req *m, size_t *pos,
		      struct kvt_keyref *k);

void kvt_match_reply_encode(uint8_t out[KVT_MATCH_REPLY_SIZE],
			    uint32_t matched);

/*
 * Reads the count from a MATCH reply body; bytes after the first four are
 * ignored (room for later versions).  Returns 0, or KVT_EPROTO if the body
 * is shorter than 4 bytes.
 */
int kvt_match_reply_parse(const uint8_t *body, size_t len, uint32_t *matched);

/*
 * DROP: removes a whole namespace from every tier.  Request body: u8 ns_len,
 * u8 zero, u16 zero, ns; nothing may follow (an empty namespace is allowed:
 * it drops the blocks put without one).  Reply body: u64 blocks removed.
 */
#define KVT_DROP_FIXED 4
#define KVT_DROP_REPLY_SIZE 8
size_t kvt_drop_req_size(size_t ns_len);
/* Returns 0, KVT_ERANGE (cap too small; *written = needed), KVT_EINVAL. */
int kvt_drop_req_encode(uint8_t *out, size_t cap, const uint8_t *ns,
			size_t ns_len, size_t *written);
/*
 * Parses a DROP body; *ns points into body.  Returns 0, KVT_EBADREQ
 * (short, nonzero reserved bytes, trailing bytes), KVT_ETOOBIG (ns over
 * lim->max_ns).
 */
int kvt_drop_req_parse(const uint8_t *body, size_t len,
		       const struct kvt_limits *lim, const uint8_t **ns,
		       size_t *ns_len);
void kvt_drop_reply_encode(uint8_t out[KVT_DROP_REPLY_SIZE], uint64_t count);
/* Returns 0 or KVT_EPROTO if len is not KVT_DROP_REPLY_SIZE. */
int kvt_drop_reply_parse(const uint8_t *body, size_t len, uint64_t *count);

/*
 * HOT: the most-hit blocks.  Request body: u32 top (1..KVT_HOT_TOP_MAX).
 * Reply body: u32 count, u32 zero, u64 now_s (the daemon's clock, so ages
 * can be computed), then count items, each: u8 tier (1-3), u8 ns_len,
 * u16 key_len, u32 zero, u64 size, u64 hits, u64 ctime_s, u64 atime_s
 * (0 = unknown), ns, key.
 */
#define KVT_HOT_REQ_SIZE 4
#define KVT_HOT_TOP_MAX 1000
#define KVT_HOT_REPLY_FIXED 16
#define KVT_HOT_ITEM_FIXED 40
struct kvt_hot_item {
	uint8_t tier;
	const uint8_t *ns;
	size_t ns_len;
	const uint8_t *key;
	size_t key_len;
	uint64_t size, hits, ctime_s, atime_s;
};
void kvt_hot_req_encode(uint8_t out[KVT_HOT_REQ_SIZE], uint32_t top);
/* Returns 0, KVT_EBADREQ (wrong length, top 0), KVT_ETOOBIG (top too big). */
int kvt_hot_req_parse(const uint8_t *body, size_t len, uint32_t *top);
size_t kvt_hot_item_size(size_t ns_len, size_t key_len);
void kvt_hot_reply_head_encode(uint8_t out[KVT_HOT_REPLY_FIXED],
			       uint32_t count, uint64_t now_s);
/* Returns 0, KVT_ERANGE (cap too small), KVT_EINVAL (lengths). */
int kvt_hot_item_encode(uint8_t *out, size_t cap,
			const struct kvt_hot_item *it, size_t *written);
/* Returns 0 or KVT_EPROTO. */
int kvt_hot_reply_head_parse(const uint8_t *body, size_t len,
			     uint32_t *count, uint64_t *now_s);
/*
 * Parses the item at p[0..len); pointers in *it refer into p; *used gets
 * its size.  Returns 0 or KVT_EPROTO (short, bad tier, nonzero reserved).
 */
int kvt_hot_item_parse(const uint8_t *p, size_t len, struct kvt_hot_item *it,
		       size_t *used);

#endif /* KVT_FRAME_H */
