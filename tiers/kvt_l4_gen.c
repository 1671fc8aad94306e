/*
 * kvt_l4_gen.c - namespace generations (kvt_l4.h: Generations): the table
 * of the generations this host has seen, the commands that read, create,
 * increment and repair generation keys, and the calls built on them --
 * kvt_l4_watch(), kvt_l4_gen_batch(), kvt_l4_drop_batch() and
 * kvt_l4_poll_gens().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_clock.h"
#include "kvt_l4_int.h"
#include "kvtier_errors.h"

/* A namespace's generation read this recently is used by puts as it is:
 * about the poll interval, the staleness peers accept anyway. */
#define L4_GEN_FRESH_NS (1000ull * 1000 * 1000)
/* Generations start in [2^32, 2^62) (kvt_l4.h: Generations). */
#define L4_GEN_LO ((uint64_t)1 << 32)
#define L4_GEN_HI ((uint64_t)1 << 62)

/* ---- the table (lock held) ------------------------------------------------ */

static unsigned watch_hash(const struct kvt_l4 *l4, const uint8_t *d)
{
	return ((unsigned)d[0] | (unsigned)d[1] << 8 | (unsigned)d[2] << 16 |
		(unsigned)d[3] << 24) &
	       (l4->watch_nbucket - 1);
}

static struct l4_watch *watch_find(struct kvt_l4 *l4, const uint8_t *d)
{
	for (int i = l4->watch_bucket[watch_hash(l4, d)]; i >= 0;
	     i = l4->watch[i].next)
		if (memcmp(l4->watch[i].digest, d, KVT_L4_DIGEST_SIZE) == 0)
			return &l4->watch[i];
	return NULL;
}

static void watch_unlink(struct kvt_l4 *l4, int idx)
{
	int *p = &l4->watch_bucket[watch_hash(l4, l4->watch[idx].digest)];

	while (*p != idx)
		p = &l4->watch[*p].next;
	*p = l4->watch[idx].next;
	l4->watch[idx].in_use = 0;
}

/* The entry of ns, added (forgetting the least recently used one when the
 * table is full) if new. */
static struct l4_watch *watch_get(struct kvt_l4 *l4, const uint8_t *ns,
				  size_t ns_len, const uint8_t *d)
{
	struct l4_watch *w = watch_find(l4, d);
	int idx = -1;
	unsigned h;

	if (w) {
		w->used_ns = kvt_clock_ns();
		return w;
	}
	if (l4->watch_used < l4->watch_max) {
		idx = (int)l4->watch_used++;
	} else {
		uint64_t oldest = UINT64_MAX;

		for (unsigned i = 0; i < l4->watch_max; i++)
			if (l4->watch[i].used_ns < oldest) {
				oldest = l4->watch[i].used_ns;
				idx = (int)i;
			}
		watch_unlink(l4, idx);
	}
	w = &l4->watch[idx];
	memset(w, 0, sizeof(*w));
	memcpy(w->digest, d, KVT_L4_DIGEST_SIZE);
	if (ns_len)
		memcpy(w->ns, ns, ns_len);
	w->ns_len = (uint8_t)ns_len;
	w->in_use = 1;
	w->used_ns = kvt_clock_ns();
	h = watch_hash(l4, d);
	w->next = l4->watch_bucket[h];
	l4->watch_bucket[h] = idx;
	return w;
}

/* A generation was read; the first read of a namespace is its baseline. */
static void watch_seen(struct l4_watch *w, uint64_t gen)
{
	if (!w->known) {
		w->known = 1;
		w->reported = gen;
	}
	w->gen = gen;
	w->read_ns = kvt_clock_ns();
}

uint64_t kvt_l4i_new_gen(struct kvt_l4 *l4)
{
	uint64_t x;

	l4_lock(l4);
	/* xorshift64*: plenty for picking an unlikely starting point. */
	l4->rng ^= l4->rng >> 12;
	l4->rng ^= l4->rng << 25;
	l4->rng ^= l4->rng >> 27;
	x = l4->rng * 0x2545F4914F6CDD1Dull;
	l4_unlock(l4);
	return L4_GEN_LO + x % (L4_GEN_HI - L4_GEN_LO);
}

int kvt_l4i_gen_fresh(struct kvt_l4 *l4, const struct kvt_l4_ns *ns,
		      uint64_t *gen)
{
	uint8_t d[KVT_L4_DIGEST_SIZE];
	struct l4_watch *w;
	int fresh = 0;

	kvt_l4i_ns_digest(ns->ns, ns->ns_len, d);
	l4_lock(l4);
	w = watch_find(l4, d);
	if (w && w->known && w->gen &&
	    kvt_clock_ns() - w->read_ns < L4_GEN_FRESH_NS) {
		*gen = w->gen;
		w->used_ns = kvt_clock_ns();
		fresh = 1;
	}
	l4_unlock(l4);
	return fresh;
}

int kvt_l4_watch(struct kvt_l4 *l4, const uint8_t *ns, size_t ns_len)
{
	uint8_t d[KVT_L4_DIGEST_SIZE];

	if (!l4 || ns_len > KVT_L4_NS_MAX || (!ns && ns_len))
		return KVT_EINVAL;
	kvt_l4i_ns_digest(ns, ns_len, d);
	l4_lock(l4);
	(void)watch_get(l4, ns, ns_len, d);
	l4_unlock(l4);
	return 0;
}

/* ---- generation commands ------------------------------------------------ */

void kvt_l4i_cmd_gen(struct l4_cmd *m, int kind, const struct kvt_l4_ns *ns)
{
	memset(m, 0, sizeof(*m));
	m->kind = (uint8_t)kind;
	m->fixed_node = -1;
	m->name_len = (uint8_t)kvt_l4_gen_name(ns->ns, ns->ns_len, m->name);
	m->slot = (uint16_t)kvt_l4_key_slot(m->name, m->name_len);
}

/*
 * A generation reply: 0 and *gen, KVT_ENOTFOUND (nil: no key, *gen 0),
 * KVT_ECORRUPT (the key holds something else than a positive integer:
 * another program's), or the command's error.
 */
int kvt_l4i_gen_result(const struct l4_cmd *m, uint64_t *gen)
{
	const struct l4_reply *r = m->reply;
	uint64_t v = 0;

	*gen = 0;
	if (m->status)
		return m->status;
	if (r->type == L4R_NIL)
		return KVT_ENOTFOUND;
	if (r->type == L4R_INTEGER) {
		if (r->integer <= 0)
			return KVT_ECORRUPT;
		*gen = (uint64_t)r->integer;
		return 0;
	}
	if (r->type != L4R_STRING || r->len == 0 || r->len > 19)
		return KVT_ECORRUPT;
	for (size_t i = 0; i < r->len; i++) {
		if (r->str[i] < '0' || r->str[i] > '9')
			return KVT_ECORRUPT;
		v = v * 10 + (uint64_t)(r->str[i] - '0');
	}
	if (v == 0)
		return KVT_ECORRUPT;
	*gen = v;
	return 0;
}

/* Records a generation read of set->v[j] in the table. */
void kvt_l4i_note_gen(struct kvt_l4 *l4, const struct kvt_l4_ns *ns,
		     uint64_t gen)
{
	uint8_t d[KVT_L4_DIGEST_SIZE];

	kvt_l4i_ns_digest(ns->ns, ns->ns_len, d);
	l4_lock(l4);
	watch_seen(watch_get(l4, ns->ns, ns->ns_len, d), gen);
	l4_unlock(l4);
}

/*
 * Runs one generation command per namespace (kind L4C_GET, L4C_GEN_ENSURE
 * or L4C_GEN_INCR) and reports gen[j] / st[j] as kvt_l4i_gen_result() does.
 * Returns 0 or -ENOMEM.
 */
int kvt_l4i_gen_round(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		     size_t n, int kind, uint64_t *gen, int *st)
{
	struct kvt_l4 *l4 = kvt_l4i_session_l4(s);
	struct l4_cmd *cmds = malloc(n * sizeof(*cmds));
	int rc;

	if (!cmds)
		return -ENOMEM;
	for (size_t j = 0; j < n; j++) {
		kvt_l4i_cmd_gen(&cmds[j], kind, &ns[j]);
		if (kind != L4C_GET)
			cmds[j].init = kvt_l4i_new_gen(l4);
	}
	rc = kvt_l4i_exec(s, cmds, n);
	for (size_t j = 0; j < n && rc == 0; j++)
		st[j] = kvt_l4i_gen_result(&cmds[j], &gen[j]);
	kvt_l4i_free_cmds(cmds, n);
	return rc;
}

/*
 * Namespaces whose generation key holds another program's value
 * (st[j] == KVT_ECORRUPT) get a new generation by a plain SET: no block can
 * have been written under a value that is not a generation, so replacing it
 * loses nothing (two hosts repairing at once just make each other's next
 * blocks stale).  Returns 0 or -ENOMEM.
 */
int kvt_l4i_gen_repair(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		      size_t n, uint64_t *gen, int *st)
{
	struct kvt_l4 *l4 = kvt_l4i_session_l4(s);
	struct l4_cmd *cmds;
	size_t *back, k = 0;
	int rc;

	for (size_t j = 0; j < n; j++)
		k += st[j] == KVT_ECORRUPT;
	if (!k)
		return 0;
	cmds = malloc(k * sizeof(*cmds));
	back = malloc(k * sizeof(*back));
	if (!cmds || !back) {
		free(cmds);
		free(back);
		return -ENOMEM;
	}
	k = 0;
	for (size_t j = 0; j < n; j++)
		if (st[j] == KVT_ECORRUPT) {
			kvt_l4i_cmd_gen(&cmds[k], L4C_GEN_SET, &ns[j]);
			cmds[k].init = kvt_l4i_new_gen(l4);
			back[k++] = j;
		}
	rc = kvt_l4i_exec(s, cmds, k);
	for (size_t x = 0; x < k && rc == 0; x++) {
		const struct l4_cmd *m = &cmds[x];

		if (m->status) {
			st[back[x]] = m->status;
		} else if (m->reply->type != L4R_STATUS) {
			st[back[x]] = KVT_EPROTO;
		} else {
			st[back[x]] = 0;
			gen[back[x]] = m->init;
		}
	}
	kvt_l4i_free_cmds(cmds, k);
	free(back);
	return rc;
}

/* ---- the calls ------------------------------------------------------------ */

static int ns_args_ok(const struct kvt_l4_ns *ns, size_t n)
{
	for (size_t j = 0; j < n; j++)
		if (ns[j].ns_len > KVT_L4_NS_MAX || (!ns[j].ns && ns[j].ns_len))
			return 0;
	return 1;
}

int kvt_l4_gen_batch(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		     size_t n, uint64_t *gen, int *status)
{
	struct kvt_l4 *l4;
	uint64_t t0 = kvt_clock_ns();
	int rc;

	if (!s || (n && (!ns || !gen || !status)) || !ns_args_ok(ns, n))
		return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	if (n == 0)
		return 0;
	rc = kvt_l4i_gen_round(s, ns, n, L4C_GET, gen, status);
	for (size_t j = 0; j < n && rc == 0; j++)
		if (status[j] == 0 || status[j] == KVT_ENOTFOUND)
			kvt_l4i_note_gen(l4, &ns[j], gen[j]);
	if (rc == 0)
		kvt_l4i_count_errors(l4, status, n, sizeof(*status));
	kvt_l4i_op_done(l4, KVT_L4_OP_GEN, t0, n);
	return rc;
}

int kvt_l4_drop_batch(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		      size_t n, uint64_t *gen, int *status)
{
	struct kvt_l4 *l4;
	uint64_t t0 = kvt_clock_ns(), *g = gen;
	int rc;

	if (!s || (n && (!ns || !status)) || !ns_args_ok(ns, n))
		return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	if (n == 0)
		return 0;
	if (!g) {
		g = malloc(n * sizeof(*g));
		if (!g)
			return -ENOMEM;
	}
	rc = kvt_l4i_gen_round(s, ns, n, L4C_GEN_INCR, g, status);
	if (rc == 0)
		rc = kvt_l4i_gen_repair(s, ns, n, g, status);
	for (size_t j = 0; j < n && rc == 0; j++) {
		uint8_t d[KVT_L4_DIGEST_SIZE];
		struct l4_watch *w;

		if (status[j] == KVT_ENOTFOUND) /* INCR never says nil */
			status[j] = KVT_EPROTO;
		if (status[j])
			continue;
		L4_COUNT(l4, drops, 1);
		/* Our own drop: the new value is the baseline, not a change. */
		kvt_l4i_ns_digest(ns[j].ns, ns[j].ns_len, d);
		l4_lock(l4);
		w = watch_get(l4, ns[j].ns, ns[j].ns_len, d);
		watch_seen(w, g[j]);
		w->reported = g[j];
		l4_unlock(l4);
	}
	if (rc == 0)
		kvt_l4i_count_errors(l4, status, n, sizeof(*status));
	if (g != gen)
		free(g);
	kvt_l4i_op_done(l4, KVT_L4_OP_DROP, t0, n);
	return rc;
}

int kvt_l4_poll_gens(struct kvt_l4_session *s, kvt_l4_gen_cb cb, void *arg)
{
	struct kvt_l4 *l4;
	struct kvt_l4_ns *ns = NULL;
	struct l4_watch *snap = NULL;
	uint64_t *gen = NULL, t0 = kvt_clock_ns();
	int *st = NULL, rc = 0, changes = 0;
	size_t n = 0;
	unsigned used;

	if (!s || !cb)
		return KVT_EINVAL;
	l4 = kvt_l4i_session_l4(s);
	l4_lock(l4);
	used = l4->watch_used;
	if (used) {
		snap = malloc(used * sizeof(*snap));
		if (snap)
			for (unsigned i = 0; i < used; i++)
				if (l4->watch[i].in_use)
					snap[n++] = l4->watch[i];
	}
	l4_unlock(l4);
	if (used && !snap)
		return -ENOMEM;
	if (n == 0)
		goto done;
	ns = malloc(n * sizeof(*ns));
	gen = malloc(n * sizeof(*gen));
	st = malloc(n * sizeof(*st));
	if (!ns || !gen || !st) {
		rc = -ENOMEM;
		goto done;
	}
	for (size_t j = 0; j < n; j++)
		ns[j] = (struct kvt_l4_ns){ snap[j].ns, snap[j].ns_len };
	rc = kvt_l4i_gen_round(s, ns, n, L4C_GET, gen, st);
	if (rc)
		goto done;
	kvt_l4i_count_errors(l4, st, n, sizeof(*st));
	/* Apply the reads, then collect what changed since the last report
	 * (into snap, reused), and call back without the lock. */
	l4_lock(l4);
	for (size_t j = 0; j < n; j++) {
		struct l4_watch *w = watch_find(l4, snap[j].digest);

		if (!w)
			continue; /* forgotten meanwhile */
		if (st[j] == 0 || st[j] == KVT_ENOTFOUND)
			watch_seen(w, gen[j]);
		if (w->known && w->gen != w->reported) {
			snap[changes] = *w;
			w->reported = w->gen;
			changes++;
		}
	}
	l4_unlock(l4);
	if (changes)
		L4_COUNT(l4, gen_changes, changes);
	for (int k = 0; k < changes; k++)
		cb(arg, snap[k].ns, snap[k].ns_len, snap[k].reported,
		   snap[k].gen);
done:
	free(snap);
	free(ns);
	free(gen);
	free(st);
	kvt_l4i_op_done(l4, KVT_L4_OP_GEN, t0, n);
	return rc ? rc : changes;
}
