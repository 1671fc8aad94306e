/*
 * kvt_region.c - registered client memory, daemon side (kvt_region.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "kvt_log.h"
#include "kvt_reg.h"
#include "kvt_region.h"

/*
 * One registered region.  Counted (loop thread only): the connection's
 * table holds one reference until UNREGISTER or the connection's end, and
 * each transfer using it one more until its callback, so its memory stays
 * mapped as long as a worker may copy into it.
 */
struct region {
	uint32_t id;
	uint32_t flags;	 /* KVT_REGION_READONLY, KVT_REGION_SEALED */
	uint8_t *map;	 /* what mmap() returned */
	size_t map_len;
	uint8_t *base;	 /* the region: offset's byte */
	uint64_t len;
	unsigned refs;
	bool broken; /* a transfer faulted on it: the client shrank its file */
	long xspan;  /* while a request is being built: its span, else -1 */
	struct kvt_region_pool *pool;
};

/* A connection's regions (c->regions). */
struct kvt_regions {
	struct region **v;
	unsigned n, cap;
	uint32_t next_id;
	uint64_t bytes;
	struct region *last; /* the last one looked up (segments repeat) */
};

void kvt_region_pool_init(struct kvt_region_pool *p)
{
	memset(p, 0, sizeof(*p));
}

static void region_put(struct region *g)
{
	if (--g->refs > 0)
		return;
	/*
	 * On the loop: unmapping costs the page tables of what the daemon
	 * touched, well under a millisecond a gigabyte.
	 */
	munmap(g->map, g->map_len);
	g->pool->regions--;
	g->pool->bytes -= g->len;
	free(g);
}

int kvt_region_open(struct kvt_conn *c)
{
	c->regions = calloc(1, sizeof(*c->regions));
	return c->regions ? 0 : -ENOMEM;
}

void kvt_region_close(struct kvt_conn *c)
{
	struct kvt_regions *t = c->regions;

	if (!t)
		return;
	for (unsigned i = 0; i < t->n; i++) {
		t->v[i]->pool->st.unregistered++;
		region_put(t->v[i]);
	}
	free(t->v);
	free(t);
	c->regions = NULL;
}

bool kvt_region_holds(const struct kvt_conn *c)
{
	return c->regions && c->regions->n > 0;
}

static struct region *find(struct kvt_regions *t, uint32_t id)
{
	if (t->last && t->last->id == id)
		return t->last;
	for (unsigned i = 0; i < t->n; i++)
		if (t->v[i]->id == id)
			return t->last = t->v[i];
	return NULL;
}

/* ---- REGISTER and UNREGISTER ------------------------------------------- */

/* Filesystems whose pages are memory: a fault never waits for I/O. */
static bool memory_backed(long type)
{
	return type == TMPFS_MAGIC || type == HUGETLBFS_MAGIC ||
	       type == RAMFS_MAGIC;
}

static void refuse(struct kvt_conn *c, struct kvt_reply *r, int status,
		   const char *why, const char *detail)
{
	c->ctx->reg->st.refused++;
	kvt_log(KVT_LOG_INFO, "event=register_refused conn=%llu uid=%u "
		"reason=\"%s\"", (unsigned long long)c->id, (unsigned)c->uid,
		why);
	kvt_reply_error(c, r, status, "REGISTER refused: %s%s", why, detail);
}

void kvt_region_register(struct kvt_conn *c, struct kvt_reply *r,
			 const uint8_t *body, size_t len)
{
	struct kvt_regions *t = c->regions;
	struct kvt_region_pool *p = c->ctx->reg;
	const struct kvt_config *cfg = c->ctx->cfg;
	struct kvt_reg_req q;
	struct kvt_reg_reply rep;
	struct region *g = NULL;
	struct stat st;
	struct statfs sf;
	char detail[128];
	uint64_t align, skip;
	uint8_t *out = NULL;
	void *m;
	int seals, prot, fd = kvt_conn_take_fd(c);
	int rc = kvt_reg_req_parse(body, len, &q);

	detail[0] = '\0';
	if (rc) {
		refuse(c, r, rc, "malformed body", "");
		goto out;
	}
	if (fd < 0) {
		refuse(c, r, KVT_EBADREQ, "no descriptor came with it (pass "
		       "one with SCM_RIGHTS in the sendmsg that carries the "
		       "frame)", "");
		goto out;
	}
	if (fstat(fd, &st) < 0 || fstatfs(fd, &sf) < 0) {
		refuse(c, r, -errno, "cannot stat the descriptor", "");
		goto out;
	}
	if (!S_ISREG(st.st_mode) || !memory_backed((long)sf.f_type)) {
		snprintf(detail, sizeof(detail), " (mode 0%o, filesystem "
			 "0x%lx)", (unsigned)st.st_mode, (long)sf.f_type);
		refuse(c, r, KVT_EDENIED, "not a memfd or a file on tmpfs or "
		       "hugetlbfs", detail);
		goto out;
	}
	if (q.length == 0 && q.offset < (uint64_t)st.st_size)
		q.length = (uint64_t)st.st_size - q.offset;
	if (q.length == 0 || q.offset > (uint64_t)st.st_size ||
	    q.length > (uint64_t)st.st_size - q.offset) {
		snprintf(detail, sizeof(detail), " (%llu bytes at %llu of a "
			 "file of %lld)", (unsigned long long)q.length,
			 (unsigned long long)q.offset, (long long)st.st_size);
		refuse(c, r, KVT_EBADREQ, "empty or past the end of the file",
		       detail);
		goto out;
	}
	if (t->n >= cfg->reg_max) {
		snprintf(detail, sizeof(detail), " (%u regions, reg-max %u)",
			 t->n, cfg->reg_max);
		refuse(c, r, KVT_ETOOBIG, "too many regions", detail);
		goto out;
	}
	if (q.length > cfg->reg_max_bytes - t->bytes ||
	    t->bytes > cfg->reg_max_bytes) {
		snprintf(detail, sizeof(detail), " (%llu bytes more than the "
			 "%llu of reg-max-bytes)",
			 (unsigned long long)q.length,
			 (unsigned long long)(cfg->reg_max_bytes - t->bytes));
		refuse(c, r, KVT_ETOOBIG, "too many bytes", detail);
		goto out;
	}
	if (t->n == t->cap) {
		unsigned cap = t->cap ? t->cap * 2 : 8;
		struct region **v = realloc(t->v, cap * sizeof(*v));

		if (!v) {
			refuse(c, r, -ENOMEM, "out of memory", "");
			goto out;
		}
		t->v = v;
		t->cap = cap;
	}
	g = calloc(1, sizeof(*g));
	out = malloc(KVT_REG_REPLY_SIZE);
	if (!g || !out) {
		refuse(c, r, -ENOMEM, "out of memory", "");
		goto out;
	}
	/* mmap() wants the offset on a page (a huge page on hugetlbfs). */
	align = sf.f_type == HUGETLBFS_MAGIC && sf.f_bsize > 0 ?
			(uint64_t)sf.f_bsize : (uint64_t)sysconf(_SC_PAGESIZE);
	skip = q.offset % align;
	prot = PROT_READ | (q.flags & KVT_REGION_READONLY ? 0 : PROT_WRITE);
	m = mmap(NULL, (size_t)(q.length + skip), prot, MAP_SHARED, fd,
		 (off_t)(q.offset - skip));
	if (m == MAP_FAILED) {
		rc = -errno;
		snprintf(detail, sizeof(detail), " (%s%s)", strerror(-rc),
			 rc == -EACCES || rc == -EPERM ?
				 "; opened read-only or sealed against "
				 "writing? register it read-only" : "");
		refuse(c, r, rc == -EACCES || rc == -EPERM ? KVT_EDENIED : rc,
		       "cannot map it", detail);
		goto out;
	}
	seals = fcntl(fd, F_GET_SEALS);
	g->id = ++t->next_id;
	g->flags = (q.flags & KVT_REGION_READONLY) |
		   (seals >= 0 && (seals & F_SEAL_SHRINK) ? KVT_REGION_SEALED
							   : 0);
	g->map = m;
	g->map_len = (size_t)(q.length + skip);
	g->base = (uint8_t *)m + skip;
	g->len = q.length;
	g->refs = 1;
	g->xspan = -1;
	g->pool = p;
	t->v[t->n++] = g;
	t->bytes += g->len;
	p->regions++;
	p->bytes += g->len;
	p->st.registered++;
	kvt_log(KVT_LOG_DEBUG, "event=register conn=%llu uid=%u region=%u "
		"bytes=%llu sealed=%d", (unsigned long long)c->id,
		(unsigned)c->uid, g->id, (unsigned long long)g->len,
		(g->flags & KVT_REGION_SEALED) != 0);
	rep = (struct kvt_reg_reply){ g->id, g->flags, g->len };
	kvt_reg_reply_encode(out, &rep);
	kvt_reply_finish(c, r, 0, 0, out, KVT_REG_REPLY_SIZE, NULL);
	g = NULL;
	out = NULL;
out:
	free(g);
	free(out);
	/* The mapping keeps the file: the descriptor is not needed. */
	if (fd >= 0)
		close(fd);
}

void kvt_region_unregister(struct kvt_conn *c, struct kvt_reply *r,
			   const uint8_t *body, size_t len)
{
	struct kvt_regions *t = c->regions;
	uint32_t id;
	int rc = kvt_unreg_req_parse(body, len, &id);

	if (rc) {
		kvt_reply_error(c, r, rc, "bad UNREGISTER: %s",
				kvt_strerror(rc));
		return;
	}
	for (unsigned i = 0; i < t->n; i++) {
		struct region *g = t->v[i];

		if (g->id != id)
			continue;
		t->v[i] = t->v[--t->n];
		t->bytes -= g->len;
		if (t->last == g)
			t->last = NULL;
		g->pool->st.unregistered++;
		/* Transfers still using it keep it mapped until they end. */
		region_put(g);
		kvt_reply_finish(c, r, 0, 0, NULL, 0, NULL);
		return;
	}
	kvt_reply_error(c, r, KVT_ENOTFOUND, "no region %u on this "
			"connection", id);
}

/* ---- MGET_TO and MPUT_FROM ----------------------------------------------- */

/* A transfer in progress, and everything it points into. */
struct xreq {
	struct kvt_conn *c;
	struct kvt_reply *r;
	bool put;
	uint8_t *body; /* the request: the keys point into it */
	struct kvt_tm_xfer x;
	struct region **regs; /* regs[i]: spans[i]'s region, one ref each */
	/* keys, segs, spans and regs follow, in one allocation */
};

/* Releases what xq holds (its regions' references included). */
static void xreq_free(struct xreq *xq)
{
	for (size_t i = 0; i < xq->x.nspans; i++)
		region_put(xq->regs[i]);
	free(xq->body);
	free(xq);
}

static void xfer_done(void *arg, struct kvt_tm_xfer *x)
{
	struct xreq *xq = arg;
	struct kvt_conn *c = xq->c;
	struct kvt_region_pool *p = c->ctx->reg;
	size_t len = kvt_xfer_reply_size(x->n);
	uint8_t *out = malloc(len);

	/* A region a key faulted on is broken from now on. */
	for (size_t i = 0; i < x->nspans; i++)
		if (atomic_load(&x->spans[i].faulted) && !xq->regs[i]->broken) {
			struct region *g = xq->regs[i];

			g->broken = true;
			p->st.faults_contained++;
			kvt_log(KVT_LOG_WARN, "event=region_fault conn=%llu "
				"uid=%u region=%u hint=\"the client shrank "
				"the file behind a registered region during "
				"a transfer; the region is unusable until "
				"registered again\"",
				(unsigned long long)c->id, (unsigned)c->uid,
				g->id);
		}
	if (!out) {
		kvt_reply_error(c, xq->r, -ENOMEM, "out of memory");
		xreq_free(xq);
		return;
	}
	kvt_xfer_reply_head_encode(out, (uint32_t)x->n);
	for (size_t i = 0; i < x->n; i++) {
		const struct kvt_tm_xkey *k = &x->keys[i];
		struct kvt_xfer_result res = { 0 };

		switch (k->status) {
		case 0:
			res.status = KVT_XFER_OK;
			res.dtype = k->dtype;
			res.length = k->len;
			if (xq->put) {
				p->st.copies_out++;
				p->st.bytes_out += k->len;
			} else {
				p->st.copies_in++;
				p->st.bytes_in += k->len;
			}
			break;
		case KVT_ENOTFOUND:
			res.status = KVT_XFER_MISS;
			break;
		case KVT_ERANGE:
			res.status = xq->put ? KVT_XFER_ERROR : KVT_XFER_MISMATCH;
			res.code = xq->put ? (uint32_t)-KVT_ERANGE : 0;
			res.dtype = k->dtype;
			res.length = xq->put ? 0 : k->len;
			break;
		default:
			res.status = KVT_XFER_ERROR;
			res.code = (uint32_t)(k->status < 0 ? -k->status
							    : k->status);
			break;
		}
		kvt_xfer_result_encode(out + KVT_XFER_REPLY_FIXED +
					       i * KVT_XFER_RESULT_SIZE,
				       &res);
	}
	kvt_reply_finish(c, xq->r, 0, 0, out, len, NULL);
	xreq_free(xq);
}

/*
 * Checks every segment of req against c's regions and builds the tier
 * manager's transfer.  Returns the request, or NULL after answering r.
 */
static struct xreq *build(struct kvt_conn *c, struct kvt_reply *r, bool put,
			  uint8_t *body, const struct kvt_xfer_req *req)
{
	struct kvt_regions *t = c->regions;
	size_t n = req->h.count, nsegs = req->nsegs, pos = 0, si = 0;
	size_t cap_spans = t->n ? t->n : 1, nspans = 0;
	struct kvt_xfer_key xk;
	struct xreq *xq;
	size_t sz = sizeof(*xq) + n * sizeof(struct kvt_tm_xkey) +
		    nsegs * sizeof(struct kvt_tm_seg) +
		    cap_spans * (sizeof(struct kvt_tm_span) +
				 sizeof(struct region *));
	struct kvt_tm_xkey *keys;
	struct kvt_tm_seg *segs;
	struct kvt_tm_span *spans;
	struct region **regs;
	uint8_t *mem;

	xq = calloc(1, sz);
	if (!xq) {
		kvt_reply_error(c, r, -ENOMEM, "out of memory");
		return NULL;
	}
	/* Spans first: they hold atomics and pointers, aligned. */
	mem = (uint8_t *)(xq + 1);
	spans = (struct kvt_tm_span *)mem;
	mem += cap_spans * sizeof(*spans);
	regs = (struct region **)mem;
	mem += cap_spans * sizeof(*regs);
	keys = (struct kvt_tm_xkey *)mem;
	mem += n * sizeof(*keys);
	segs = (struct kvt_tm_seg *)mem;
	for (size_t i = 0; kvt_xfer_req_key(req, &pos, &xk); i++) {
		keys[i].k = (struct kvt_key){ xk.k.ns, xk.k.ns_len, xk.k.key,
					      xk.k.key_len };
		keys[i].seg = (uint32_t)si;
		keys[i].nseg = (uint32_t)xk.nseg;
		keys[i].want = xk.total;
		for (size_t s = 0; s < xk.nseg; s++, si++) {
			struct kvt_xfer_seg sg;
			struct region *g;
			const char *why = NULL;

			kvt_xfer_key_seg(&xk, s, &sg);
			g = find(t, sg.region);
			if (!g)
				why = "names no region of this connection";
			else if (sg.offset > g->len ||
				 sg.length > g->len - sg.offset)
				why = "lies outside its region";
			else if (!put && (g->flags & KVT_REGION_READONLY))
				why = "is in a read-only region";
			if (why || (g && g->broken)) {
				int st = why ? KVT_EBADREQ : KVT_EFAULT;

				kvt_reply_error(c, r, st, "segment %zu of key "
						"%zu (region %u, %llu bytes at "
						"%llu) %s", s, i, sg.region,
						(unsigned long long)sg.length,
						(unsigned long long)sg.offset,
						why ? why :
						"is in a region broken by a "
						"fault (unregister it and "
						"register the memory again)");
				goto fail;
			}
			if (g->xspan < 0) {
				g->xspan = (long)nspans;
				regs[nspans] = g;
				spans[nspans].base = g->base;
				spans[nspans].len = g->len;
				atomic_init(&spans[nspans].faulted, false);
				nspans++;
			}
			segs[si] = (struct kvt_tm_seg){ g->base + sg.offset,
							sg.length,
							(uint32_t)g->xspan };
		}
	}
	for (size_t i = 0; i < nspans; i++) {
		regs[i]->xspan = -1;
		regs[i]->refs++; /* until xfer_done */
	}
	xq->c = c;
	xq->r = r;
	xq->put = put;
	xq->body = body;
	xq->regs = regs;
	xq->x = (struct kvt_tm_xfer){ keys, n, segs, spans, nspans,
				      req->h.dtype, req->h.ttl_s, xfer_done,
				      xq };
	return xq;
fail:
	for (size_t i = 0; i < nspans; i++)
		regs[i]->xspan = -1;
	free(xq);
	return NULL;
}

void kvt_region_xfer(struct kvt_conn *c, struct kvt_reply *r, bool put,
		     uint8_t *body, size_t len)
{
	struct kvt_xfer_req req;
	struct xreq *xq;
	int rc = kvt_xfer_req_parse(body, len, put, &c->ctx->lim, &req);

	c->ctx->reg->st.requests++;
	if (rc) {
		kvt_reply_error(c, r, rc, "bad %s: %s",
				put ? "MPUT_FROM" : "MGET_TO",
				kvt_strerror(rc));
		free(body);
		return;
	}
	if (!kvt_conn_ns_allowed(c, r, req.h.ns, req.h.ns_len)) {
		free(body);
		return;
	}
	xq = build(c, r, put, body, &req);
	if (!xq) {
		free(body);
		return;
	}
	/* The callback answers r, now or from kvt_tm_dispatch(). */
	if (put)
		kvt_tm_put_from(c->ctx->tm, &xq->x);
	else
		kvt_tm_get_to(c->ctx->tm, &xq->x);
}
