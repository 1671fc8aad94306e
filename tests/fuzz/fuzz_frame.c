/*
 * fuzz_frame.c - libFuzzer harness for the frame decoder of
 * proto/kvt_frame.h, driven the way the daemon drives it (daemon/
 * kvt_conn.c process_input): the input is a byte stream from a client.
 *
 * The stream is decoded twice: once in pieces whose sizes come from a
 * generator seeded with a hash of the input (as a socket hands bytes over),
 * half the time filling bodies through the zero-copy body_tail/body_advance
 * path, and once in a single feed.  Both must report the same frames, the
 * same headers and bodies and the same final error: how bytes arrive must
 * not change what they mean.  Each complete frame's body goes to the parser
 * its opcode and REPLY flag select (requests as the daemon parses them,
 * replies as the client library does), with the default limits and with
 * small ones.
 * kvt_frame_header_decode() is also run on the raw input and must agree
 * with the decoder's first event.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvt_fuzz.h"
#include "kvt_reg.h"

/*
 * Largest body the harness provides storage for; a larger frame ends the
 * run.  Fuzz inputs are at most a few KiB (-max_len=4096), so a larger body
 * could never complete, and its partial-body path is the one smaller bodies
 * take; allocating megabytes per input only made ASan runs slow.
 */
#define BODY_CAP ((size_t)64 << 10)

/* What one decoding pass saw, folded into a hash to compare passes. */
struct trace {
	uint64_t hash;
	size_t events;
	int last; /* last event or error code */
	/* First header event, to compare with kvt_frame_header_decode(). */
	int first_ev;
	struct kvt_frame_header first_h;
};

static void mix(struct trace *t, const void *p, size_t n)
{
	const uint8_t *b = p;

	/* FNV-1a: order-sensitive and cheap. */
	for (size_t i = 0; i < n; i++)
		t->hash = (t->hash ^ b[i]) * 0x100000001b3ull;
}

static void mix_u64(struct trace *t, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	mix(t, b, sizeof(b));
}

static void mix_header(struct trace *t, const struct kvt_frame_header *h)
{
	mix_u64(t, h->version);
	mix_u64(t, h->opcode);
	mix_u64(t, h->flags);
	mix_u64(t, h->request_id);
	mix_u64(t, h->status);
	mix_u64(t, h->body_len);
}

static void record(struct trace *t, int ev, const struct kvt_frame_header *h)
{
	if (t->events == 0) {
		t->first_ev = ev;
		if (h)
			t->first_h = *h;
	}
	t->events++;
	t->last = ev;
	mix_u64(t, (uint64_t)(int64_t)ev);
	if (h)
		mix_header(t, h);
}

static int header_eq(const struct kvt_frame_header *a,
		     const struct kvt_frame_header *b)
{
	return a->version == b->version && a->opcode == b->opcode &&
	       a->flags == b->flags && a->request_id == b->request_id &&
	       a->status == b->status && a->body_len == b->body_len;
}

static int inside(const uint8_t *body, size_t len, const uint8_t *p, size_t n)
{
	return p >= body && (size_t)(p - body) <= len &&
	       n <= len - (size_t)(p - body);
}

static void small_limits(struct kvt_limits *lim)
{
	lim->max_key = 8;
	lim->max_ns = 2;
	lim->max_value = 16;
	lim->max_body = kvt_limits_put_body_max(lim);
}

/* Parses one body with one set of limits, as the daemon's dispatcher does. */
static void parse_body(struct trace *t, const struct kvt_frame_header *h,
		       const uint8_t *body, size_t len,
		       const struct kvt_limits *lim)
{
	int reply = (h->flags & KVT_FLAG_REPLY) != 0;
	struct kvt_put_req pr;
	struct kvt_keyref k;
	struct kvt_match_req m;
	struct kvt_hello hl;
	struct kvt_hot_item it;
	const uint8_t *ns;
	uint64_t u64;
	uint32_t a, b;
	size_t pos = 0, n = 0;
	int rc = 0;

	switch (h->opcode) {
	case KVT_OP_HELLO:
		if (reply) {
			rc = kvt_hello_reply_parse(body, len, &hl);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
		} else {
			rc = kvt_hello_req_parse(body, len, &a, &b);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
		}
		break;
	case KVT_OP_PUT:
		rc = kvt_put_req_parse(body, len, lim, &pr);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ ||
			       rc == KVT_ETOOBIG);
		if (rc == 0) {
			KVT_FUZZ_CHECK(inside(body, len, pr.k.ns, pr.k.ns_len));
			KVT_FUZZ_CHECK(inside(body, len, pr.k.key,
					      pr.k.key_len));
			KVT_FUZZ_CHECK(inside(body, len, pr.value,
					      pr.value_len));
			KVT_FUZZ_CHECK(pr.value_len <= lim->max_value);
		}
		break;
	case KVT_OP_GET:
	case KVT_OP_DEL:
	case KVT_OP_EXISTS:
		if (reply)
			break; /* a GET reply body is the value */
		rc = kvt_key_req_parse(body, len, lim, &k);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ ||
			       rc == KVT_ETOOBIG);
		if (rc == 0) {
			KVT_FUZZ_CHECK(inside(body, len, k.ns, k.ns_len));
			KVT_FUZZ_CHECK(inside(body, len, k.key, k.key_len));
		}
		break;
	case KVT_OP_DROP:
		if (reply) {
			rc = kvt_drop_reply_parse(body, len, &u64);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
			break;
		}
		rc = kvt_drop_req_parse(body, len, lim, &ns, &n);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ ||
			       rc == KVT_ETOOBIG);
		if (rc == 0)
			KVT_FUZZ_CHECK(inside(body, len, ns, n));
		break;
	case KVT_OP_HOT:
		if (!reply) {
			rc = kvt_hot_req_parse(body, len, &a);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ ||
				       rc == KVT_ETOOBIG);
			break;
		}
		/* The client library walks the items after the head. */
		rc = kvt_hot_reply_head_parse(body, len, &a, &u64);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
		pos = KVT_HOT_REPLY_FIXED;
		for (uint32_t i = 0; rc == 0 && i < a; i++) {
			rc = kvt_hot_item_parse(body + pos, len - pos, &it, &n);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
			if (rc < 0)
				break;
			KVT_FUZZ_CHECK(n >= KVT_HOT_ITEM_FIXED &&
				       n <= len - pos);
			KVT_FUZZ_CHECK(inside(body, len, it.ns, it.ns_len));
			KVT_FUZZ_CHECK(inside(body, len, it.key, it.key_len));
			pos += n;
		}
		break;
	case KVT_OP_MATCH:
	/* Same body and reply as MATCH. */
	case KVT_OP_PREFETCH:
	case KVT_OP_PIN:
	case KVT_OP_UNPIN:
		if (reply) {
			rc = kvt_match_reply_parse(body, len, &a);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
			break;
		}
		rc = kvt_match_req_parse(body, len, lim, &m);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ ||
			       rc == KVT_ETOOBIG);
		if (rc < 0)
			break;
		/* The daemon walks the keys after a successful parse. */
		n = 0;
		while (kvt_match_req_key(&m, &pos, &k)) {
			KVT_FUZZ_CHECK(inside(body, len, k.key, k.key_len));
			KVT_FUZZ_CHECK(k.key_len >= 1 &&
				       k.key_len <= lim->max_key);
			n++;
		}
		KVT_FUZZ_CHECK(n == m.count);
		break;
	case KVT_OP_REGISTER: {
		struct kvt_reg_req rq;
		struct kvt_reg_reply rr;

		if (reply) {
			rc = kvt_reg_reply_parse(body, len, &rr);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
			KVT_FUZZ_CHECK(rc || rr.region != 0);
		} else {
			rc = kvt_reg_req_parse(body, len, &rq);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
			KVT_FUZZ_CHECK(rc || rq.length <= UINT64_MAX - rq.offset);
		}
		break;
	}
	case KVT_OP_UNREGISTER:
		if (!reply) {
			rc = kvt_unreg_req_parse(body, len, &a);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ);
		}
		break;
	case KVT_OP_MGET_TO:
	case KVT_OP_MPUT_FROM: {
		struct kvt_xfer_req xr;
		struct kvt_xfer_key xk;
		struct kvt_xfer_result res;
		size_t segs = 0;

		if (reply) {
			/* As the client library reads a reply. */
			rc = kvt_xfer_reply_head_parse(body, len, &a);
			KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EPROTO);
			for (uint32_t i = 0; rc == 0 && i < a; i++) {
				int r = kvt_xfer_result_parse(
					body + KVT_XFER_REPLY_FIXED +
						i * KVT_XFER_RESULT_SIZE,
					&res);

				KVT_FUZZ_CHECK(r == 0 || r == KVT_EPROTO);
				mix_u64(t, (uint64_t)(int64_t)r);
			}
			break;
		}
		rc = kvt_xfer_req_parse(body, len, h->opcode == KVT_OP_MPUT_FROM,
					lim, &xr);
		KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EBADREQ ||
			       rc == KVT_ETOOBIG);
		if (rc < 0)
			break;
		/* The daemon walks keys and segments after the parse. */
		n = 0;
		while (kvt_xfer_req_key(&xr, &pos, &xk)) {
			KVT_FUZZ_CHECK(inside(body, len, xk.k.key,
					      xk.k.key_len));
			KVT_FUZZ_CHECK(inside(body, len, xk.segs,
					      xk.nseg * KVT_XFER_SEG_SIZE));
			KVT_FUZZ_CHECK(xk.nseg <= KVT_XFER_KEY_SEGS_MAX);
			for (size_t s = 0; s < xk.nseg; s++) {
				struct kvt_xfer_seg sg;

				kvt_xfer_key_seg(&xk, s, &sg);
				KVT_FUZZ_CHECK(sg.region != 0);
				KVT_FUZZ_CHECK(sg.length <=
					       UINT64_MAX - sg.offset);
			}
			segs += xk.nseg;
			n++;
		}
		KVT_FUZZ_CHECK(n == xr.h.count && segs == xr.nsegs);
		break;
	}
	default:
		/* PING and STATS bodies are opaque; others are unknown ops. */
		KVT_FUZZ_CHECK(kvt_op_name(h->opcode) != NULL);
		break;
	}
	mix_u64(t, (uint64_t)(int64_t)rc);
}

static void on_frame(struct trace *t, const struct kvt_frame_header *h,
		     const uint8_t *body)
{
	struct kvt_limits lim;

	mix(t, body, body ? h->body_len : 0);
	kvt_limits_default(&lim);
	parse_body(t, h, body, h->body_len, &lim);
	small_limits(&lim);
	parse_body(t, h, body, h->body_len, &lim);
}

/* xorshift64*: piece sizes and fill modes, reproducible from the input. */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/*
 * Decodes data[0..size).  chunked == 0: each feed gets all remaining bytes.
 * Otherwise piece sizes are drawn from the generator seeded with seed.
 */
static void run(struct trace *t, const uint8_t *data, size_t size,
		int chunked, uint64_t seed)
{
	const struct kvt_limits *lim;
	struct kvt_decoder d;
	uint8_t *body = NULL;
	size_t pos = 0;
	int zero_copy = 0;

	memset(t, 0, sizeof(*t));
	t->hash = 0xcbf29ce484222325ull;
	kvt_decoder_init(&d, NULL);
	lim = &d.lim;
	while (pos < size) {
		const struct kvt_frame_header *h;
		size_t n = size - pos, used = 0, room;
		uint8_t *tail;
		int ev;

		if (chunked) {
			uint64_t r = next_rand(&seed);

			/* Mostly short pieces, sometimes a large one. */
			n = (r & 0x300) ? 1 + (r % 32) : 1 + (r % 4096);
			if (n > size - pos)
				n = size - pos;
		}
		tail = zero_copy ? kvt_decoder_body_tail(&d, &room) : NULL;
		if (tail) {
			used = n < room ? n : room;
			memcpy(tail, data + pos, used);
			ev = kvt_decoder_body_advance(&d, used);
		} else {
			ev = kvt_decoder_feed(&d, data + pos, n, &used);
		}
		KVT_FUZZ_CHECK(used <= n);
		pos += used;
		if (ev < 0) {
			size_t again;

			KVT_FUZZ_CHECK(ev == KVT_EPROTO ||
				       ev == KVT_EVERSION ||
				       ev == KVT_ETOOBIG);
			/* Header errors are sticky: no resynchronising. */
			KVT_FUZZ_CHECK(kvt_decoder_feed(&d, data, size,
							&again) == ev);
			KVT_FUZZ_CHECK(again == 0);
			record(t, ev, ev == KVT_EPROTO ? NULL
						       : kvt_decoder_header(&d));
			break;
		}
		/* Progress, and a feed stops short only at a frame event. */
		KVT_FUZZ_CHECK(used > 0);
		if (ev == KVT_DEC_MORE) {
			KVT_FUZZ_CHECK(used == n);
			continue;
		}
		h = kvt_decoder_header(&d);
		KVT_FUZZ_CHECK(h->version == KVT_PROTO_VERSION);
		KVT_FUZZ_CHECK(h->body_len <= lim->max_body);
		record(t, ev, h);
		if (ev == KVT_DEC_HEADER) {
			uint8_t dummy;

			KVT_FUZZ_CHECK(h->body_len > 0);
			/* The caller must set a body before feeding on. */
			KVT_FUZZ_CHECK(kvt_decoder_feed(&d, &dummy, 1, &used) ==
				       KVT_EINVAL && used == 0);
			if (h->body_len > BODY_CAP)
				break;
			/*
			 * Exactly body_len bytes, so ASan reports any write
			 * past the end of the body.
			 */
			body = malloc(h->body_len);
			KVT_FUZZ_CHECK(body != NULL);
			KVT_FUZZ_CHECK(kvt_decoder_set_body(&d, body,
							    h->body_len - 1) ==
				       KVT_ERANGE);
			KVT_FUZZ_CHECK(kvt_decoder_set_body(&d, body,
							    h->body_len) == 0);
			zero_copy = chunked && (next_rand(&seed) & 1);
			continue;
		}
		KVT_FUZZ_CHECK(ev == KVT_DEC_FRAME);
		KVT_FUZZ_CHECK((body != NULL) == (h->body_len > 0));
		on_frame(t, h, body);
		free(body);
		body = NULL;
		zero_copy = 0;
	}
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvt_frame_header h;
	struct kvt_limits lim;
	struct trace whole, pieces;
	uint64_t seed = 0xcbf29ce484222325ull;
	int rc;

	if (size == 0)
		return 0;
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ull;
	if (seed == 0)
		seed = 1; /* xorshift's one fixed point */

	run(&whole, data, size, 0, 0);
	run(&pieces, data, size, 1, seed);
	KVT_FUZZ_CHECK(whole.events == pieces.events);
	KVT_FUZZ_CHECK(whole.last == pieces.last);
	KVT_FUZZ_CHECK(whole.hash == pieces.hash);

	/* The one-shot header decoder agrees with the stream decoder. */
	kvt_limits_default(&lim);
	memset(&h, 0, sizeof(h));
	rc = kvt_frame_header_decode(data, size, &lim, &h);
	if (rc == KVT_EAGAIN) {
		KVT_FUZZ_CHECK(size < KVT_HDR_SIZE && whole.events == 0);
	} else if (rc == 0) {
		KVT_FUZZ_CHECK(whole.first_ev ==
			       (h.body_len ? KVT_DEC_HEADER : KVT_DEC_FRAME));
		KVT_FUZZ_CHECK(header_eq(&h, &whole.first_h));
	} else {
		KVT_FUZZ_CHECK(whole.events == 1 && whole.first_ev == rc);
		if (rc != KVT_EPROTO)
			KVT_FUZZ_CHECK(header_eq(&h, &whole.first_h));
	}
	return 0;
}
