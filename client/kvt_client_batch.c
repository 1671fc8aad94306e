/*
 * kvt_client_batch.c - libkvtier's calls over many keys (kvtier.h): the
 * pipelined batches kvt_mput() and kvt_mget(), and the key-list requests
 * kvt_match(), kvt_prefetch(), kvt_pin() and kvt_unpin().
 *
 * A batch keeps up to KVT_BATCH_WINDOW requests in flight on the one
 * connection: run_batch() sends, reads replies in order and fills the
 * per-item statuses, while the per-operation callbacks only encode one
 * request and read one reply.  Batches over registered memory (values in
 * segments of the caller's memory) will run on the same window.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "kvt_client_int.h"
#include "kvt_frame.h"
#include "kvtier.h"
#include "kvtier_errors.h"

/* ---- The window ----------------------------------------------------- */

/*
 * Requests in flight at once in a batch.  Bounded so that neither side can
 * block the other: our queued GET requests always fit in the socket buffer
 * while we read replies, and PUT replies are tiny.
 */
#define KVT_BATCH_WINDOW 32

/*
 * Encodes the request for item i into c->sbuf and sends it (*id its
 * request id).  Returns 0 once sent, a negative send error, or, for an
 * item refused locally with nothing sent, its error code negated (> 0).
 */
typedef int (*batch_send_fn)(kvt_client *c, void *arg, size_t i,
			     uint64_t *id);
/* Reads the reply for item i (header already read, rc its status). */
typedef int (*batch_recv_fn)(kvt_client *c, void *arg, size_t i, int rc,
			     const struct kvt_frame_header *rh);

static int run_batch(kvt_client *c, uint8_t op, size_t n, int *statuses,
		     batch_send_fn send_fn, batch_recv_fn recv_fn, void *arg)
{
	uint64_t ids[KVT_BATCH_WINDOW];
	struct kvt_frame_header rh;
	size_t sent = 0, done = 0;
	int rc = kvt_ci_usable(c);

	if (rc < 0)
		return rc;
	while (done < n) {
		while (sent < n && sent - done < KVT_BATCH_WINDOW) {
			rc = send_fn(c, arg, sent, &ids[sent % KVT_BATCH_WINDOW]);
			if (rc > 0) {
				/* Refused locally (bad key): no frame sent. */
				statuses[sent] = -rc;
				ids[sent % KVT_BATCH_WINDOW] = 0;
				sent++;
				continue;
			}
			if (rc < 0) {
				rc = kvt_ci_send_failed(
					c, rc, op, ids[sent % KVT_BATCH_WINDOW],
					&rh);
				goto fail;
			}
			sent++;
		}
		if (ids[done % KVT_BATCH_WINDOW] == 0) {
			done++;
			continue;
		}
		rc = kvt_ci_read_reply(c, op, ids[done % KVT_BATCH_WINDOW], &rh);
		if (rc < 0 && c->broken)
			goto fail;
		rc = recv_fn(c, arg, done, rc, &rh);
		if (rc < 0 && c->broken)
			goto fail;
		statuses[done] = rc;
		done++;
	}
	return 0;
fail:
	for (; done < n; done++)
		statuses[done] = rc;
	return rc;
}

/* ---- mput ----------------------------------------------------------- */

struct mput_arg {
	const char *ns;
	const void *const *keys;
	const size_t *key_lens;
	const void *const *vals;
	const size_t *val_lens;
	const struct kvt_put_opts *opts;
};

static int mput_send(kvt_client *c, void *arg, size_t i, uint64_t *id)
{
	struct mput_arg *a = arg;
	struct kvt_put_req pr = { 0 };
	size_t len;
	int rc = kvt_ci_check_key(c, a->ns, a->keys[i], a->key_lens[i], &pr.k);

	if (rc < 0)
		return -rc; /* this item only */
	if (a->val_lens[i] > c->lim.max_value)
		return -KVT_ETOOBIG;
	pr.dtype = a->opts ? a->opts->dtype : 0;
	pr.ttl_s = a->opts ? a->opts->ttl_s : 0;
	pr.value_len = a->val_lens[i];
	rc = kvt_put_req_encode_prefix(c->sbuf + KVT_HDR_SIZE,
				       c->sbuf_cap - KVT_HDR_SIZE, &pr, &len);
	if (rc < 0)
		return -rc;
	return kvt_ci_send_request(c, KVT_OP_PUT, len, a->vals[i],
				   a->val_lens[i], id);
}

static int mput_recv(kvt_client *c, void *arg, size_t i, int rc,
		     const struct kvt_frame_header *rh)
{
	(void)arg;
	(void)i;
	if (rc < 0)
		return rc;
	return kvt_ci_discard_body(c, rh->body_len);
}

static int do_mput(kvt_client *c, const char *ns, const void *const *keys,
		   const size_t *key_lens, const void *const *vals,
		   const size_t *val_lens, size_t n,
		   const struct kvt_put_opts *opts, int *statuses)
{
	struct mput_arg a = { ns, keys, key_lens, vals, val_lens, opts };

	if (n && (!keys || !key_lens || !vals || !val_lens || !statuses))
		return kvt_ci_err(c, KVT_EINVAL, "mput: NULL array");
	if (c->shm) {
		/*
		 * Large values go through slots, two round trips each but no
		 * socket copy: worth more than pipelining for megabyte blocks.
		 */
		for (size_t i = 0; i < n; i++) {
			statuses[i] = kvt_ci_put(c, ns, keys[i], key_lens[i],
						 vals[i], val_lens[i], opts);
			if (statuses[i] < 0 && c->broken) {
				for (size_t j = i + 1; j < n; j++)
					statuses[j] = statuses[i];
				return statuses[i];
			}
		}
		return 0;
	}
	return run_batch(c, KVT_OP_PUT, n, statuses, mput_send, mput_recv, &a);
}

/* ---- mget ----------------------------------------------------------- */

struct mget_arg {
	const char *ns;
	const void *const *keys;
	const size_t *key_lens;
	const struct iovec *bufs;
	size_t *val_lens;
};

static int mget_send(kvt_client *c, void *arg, size_t i, uint64_t *id)
{
	struct mget_arg *a = arg;
	struct kvt_keyref k;
	size_t len;
	int rc = kvt_ci_check_key(c, a->ns, a->keys[i], a->key_lens[i], &k);

	a->val_lens[i] = 0;
	if (rc < 0)
		return -rc;
	rc = kvt_key_req_encode(c->sbuf + KVT_HDR_SIZE,
				c->sbuf_cap - KVT_HDR_SIZE, &k, &len);
	if (rc < 0)
		return -rc;
	return kvt_ci_send_request(c, KVT_OP_GET, len, NULL, 0, id);
}

/* The value goes straight into the caller's buffer for item i. */
static int mget_recv(kvt_client *c, void *arg, size_t i, int rc,
		     const struct kvt_frame_header *rh)
{
	struct mget_arg *a = arg;
	struct kvt_ci_value v;

	if (rc < 0)
		return rc;
	rc = kvt_ci_value_open(c, rh, &v);
	if (rc < 0)
		return rc;
	a->val_lens[i] = v.len;
	if (v.len > a->bufs[i].iov_len) {
		rc = kvt_ci_value_skip(c, &v);
		return rc < 0 ? rc : KVT_ERANGE;
	}
	return kvt_ci_value_copy(c, &v, a->bufs[i].iov_base);
}

static int do_mget(kvt_client *c, const char *ns, const void *const *keys,
		   const size_t *key_lens, size_t n, const struct iovec *bufs,
		   size_t *val_lens, int *statuses)
{
	struct mget_arg a = { ns, keys, key_lens, bufs, val_lens };

	if (n && (!keys || !key_lens || !bufs || !val_lens || !statuses))
		return kvt_ci_err(c, KVT_EINVAL, "mget: NULL array");
	return run_batch(c, KVT_OP_GET, n, statuses, mget_send, mget_recv, &a);
}

/* ---- The batch calls ------------------------------------------------ */

/*
 * Inside the guard (kvt_ci_enter(), kvt_client_int.h).  When it refuses
 * the call (a child after fork(), a second thread), every item carries
 * that error, as items do when a connection error ends a batch.
 */
static void refuse_items(size_t n, int *statuses, size_t *val_lens, int rc)
{
	for (size_t i = 0; statuses && i < n; i++)
		statuses[i] = rc;
	for (size_t i = 0; val_lens && i < n; i++)
		val_lens[i] = 0;
}

int kvt_mput(kvt_client *c, const char *ns, const void *const *keys,
	     const size_t *key_lens, const void *const *vals,
	     const size_t *val_lens, size_t n, const struct kvt_put_opts *opts,
	     int *statuses)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		refuse_items(n, statuses, NULL, rc);
		return rc;
	}
	rc = do_mput(c, ns, keys, key_lens, vals, val_lens, n, opts,
		     statuses);
	kvt_ci_leave(c);
	return rc;
}

int kvt_mget(kvt_client *c, const char *ns, const void *const *keys,
	     const size_t *key_lens, size_t n, const struct iovec *bufs,
	     size_t *val_lens, int *statuses)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		refuse_items(n, statuses, val_lens, rc);
		return rc;
	}
	rc = do_mget(c, ns, keys, key_lens, n, bufs, val_lens, statuses);
	kvt_ci_leave(c);
	return rc;
}

/* ---- Key lists: match, prefetch, pin, unpin ------------------------- */

/* Checks MATCH arguments against the protocol and the daemon's limits. */
static int check_match(kvt_client *c, const char *ns,
		       const void *const *keys, const size_t *key_lens,
		       size_t n)
{
	size_t ns_len = ns ? strlen(ns) : 0;
	int rc;

	if (n && (!keys || !key_lens))
		return kvt_ci_err(c, KVT_EINVAL, "keys or key_lens is NULL");
	rc = kvt_ci_check_ns(c, ns_len);
	if (rc < 0)
		return rc;
	if (n > KVT_MATCH_KEYS_MAX)
		return kvt_ci_err(c, KVT_ETOOBIG, "%zu keys, a MATCH carries at "
				  "most %d", n, KVT_MATCH_KEYS_MAX);
	for (size_t i = 0; i < n; i++) {
		if (!keys[i] || key_lens[i] == 0)
			return kvt_ci_err(c, KVT_EINVAL, "key %zu is %s", i,
					  keys[i] ? "empty" : "NULL");
		if (key_lens[i] > c->lim.max_key ||
		    key_lens[i] > KVT_KEY_FIELD_MAX)
			return kvt_ci_err(c, KVT_ETOOBIG, "key %zu is %zu bytes, "
					  "the daemon allows at most %u", i,
					  key_lens[i], c->lim.max_key);
	}
	return 0;
}

/*
 * MATCH, PREFETCH, PIN and UNPIN: a key list in one request, a u32 count
 * out.
 */
static int do_key_list(kvt_client *c, uint8_t op, const char *ns,
		       const void *const *keys, const size_t *key_lens,
		       size_t n, size_t *result)
{
	struct kvt_frame_header rh;
	uint8_t rb[KVT_MATCH_REPLY_SIZE];
	uint8_t *body;
	size_t need, len, ns_len = ns ? strlen(ns) : 0;
	uint32_t m;
	int rc;

	if (result)
		*result = 0;
	if (!result)
		return kvt_ci_err(c, KVT_EINVAL, "result pointer is NULL");
	rc = kvt_ci_usable(c);
	if (rc < 0)
		return rc;
	rc = check_match(c, ns, keys, key_lens, n);
	if (rc < 0)
		return rc;
	need = kvt_match_req_size(ns_len, key_lens, n);
	if (need > c->lim.max_body)
		return kvt_ci_err(c, KVT_ETOOBIG, "%s body of %zu bytes exceeds "
				  "the daemon's limit of %llu", kvt_op_name(op),
				  need, (unsigned long long)c->lim.max_body);
	/*
	 * The body can reach megabytes (4096 keys of up to max_key bytes),
	 * more than the send buffer holds: build it apart and send it as the
	 * request's "value".
	 */
	body = malloc(need);
	if (!body)
		return kvt_ci_err(c, -ENOMEM, "cannot allocate %zu bytes for a "
				  "%s request", need, kvt_op_name(op));
	rc = kvt_match_req_encode(body, need, (const uint8_t *)(ns ? ns : ""),
				  ns_len, keys, key_lens, n, &len);
	if (rc < 0) {
		free(body);
		return kvt_ci_err(c, rc, "cannot encode %s request: %s",
				  kvt_op_name(op), kvt_strerror(rc));
	}
	rc = kvt_ci_request(c, op, 0, body, len, &rh);
	free(body);
	if (rc < 0)
		return rc;
	rc = kvt_ci_read_fixed_reply(c, &rh, rb, sizeof(rb), kvt_op_name(op));
	if (rc < 0)
		return rc;
	rc = kvt_match_reply_parse(rb, sizeof(rb), &m);
	if (rc < 0 || m > n)
		return kvt_ci_fail(c, KVT_EPROTO, "%s reply says %u of %zu keys",
				   kvt_op_name(op), m, n);
	*result = m;
	return 0;
}

/* Each call runs inside the guard (kvt_ci_enter(), kvt_client_int.h). */
static int key_list_request(kvt_client *c, uint8_t op, const char *ns,
			    const void *const *keys, const size_t *key_lens,
			    size_t n, size_t *result)
{
	int rc = kvt_ci_enter(c);

	if (rc < 0) {
		if (result)
			*result = 0;
		return rc;
	}
	rc = do_key_list(c, op, ns, keys, key_lens, n, result);
	kvt_ci_leave(c);
	return rc;
}

int kvt_match(kvt_client *c, const char *ns, const void *const *keys,
	      const size_t *key_lens, size_t n, size_t *matched)
{
	return key_list_request(c, KVT_OP_MATCH, ns, keys, key_lens, n,
				matched);
}

int kvt_pin(kvt_client *c, const char *ns, const void *const *keys,
	    const size_t *key_lens, size_t n, size_t *pinned)
{
	return key_list_request(c, KVT_OP_PIN, ns, keys, key_lens, n, pinned);
}

int kvt_unpin(kvt_client *c, const char *ns, const void *const *keys,
	      const size_t *key_lens, size_t n, size_t *unpinned)
{
	return key_list_request(c, KVT_OP_UNPIN, ns, keys, key_lens, n,
				unpinned);
}

int kvt_prefetch(kvt_client *c, const char *ns, const void *const *keys,
		 const size_t *key_lens, size_t n, size_t *started)
{
	return key_list_request(c, KVT_OP_PREFETCH, ns, keys, key_lens, n,
				started);
}
