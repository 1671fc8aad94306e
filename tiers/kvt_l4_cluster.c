/*
 * kvt_l4_cluster.c - L4's routing: the nodes and their backoff, the slot
 * map and its refresh (CLUSTER SLOTS), and the executor that runs a batch
 * of commands to completion: route each by its slot, run a round
 * (kvt_l4_conn.c), follow MOVED and ASK, refresh the map when a redirect or
 * a failure says it is wrong, and send once more what failed on a node
 * that a refresh shows has been replaced.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_clock.h"
#include "kvt_l4_int.h"
#include "kvtier_errors.h"

/* ---- nodes ---------------------------------------------------------------- */

int kvt_l4i_node_get(struct kvt_l4 *l4, const char *host, size_t host_len,
		     int port)
{
	struct l4_node *n;

	for (unsigned i = 0; i < l4->n_nodes; i++)
		if (l4->nodes[i].port == port &&
		    strlen(l4->nodes[i].host) == host_len &&
		    memcmp(l4->nodes[i].host, host, host_len) == 0)
			return (int)i;
	if (l4->n_nodes >= L4_NODES_MAX)
		return -1;
	if (l4->n_nodes == l4->cap_nodes) {
		unsigned cap = l4->cap_nodes ? l4->cap_nodes * 2 : 16;
		struct l4_node *v = realloc(l4->nodes, cap * sizeof(*v));

		if (!v)
			return -1;
		l4->nodes = v;
		l4->cap_nodes = cap;
	}
	n = &l4->nodes[l4->n_nodes];
	n->host = strndup(host, host_len);
	if (!n->host)
		return -1;
	n->port = port;
	n->fails = 0;
	n->retry_ns = 0;
	return (int)l4->n_nodes++;
}

/* A node failed: it is not tried again before its backoff expires. */
void kvt_l4i_node_fail(struct kvt_l4 *l4, int idx)
{
	uint64_t b;

	l4_lock(l4);
	struct l4_node *n = &l4->nodes[idx];
	unsigned sh = n->fails < 20 ? n->fails : 20;

	n->fails++;
	b = l4->backoff_min_ns << sh;
	if (b > l4->backoff_max_ns)
		b = l4->backoff_max_ns;
	n->retry_ns = kvt_clock_ns() + b;
	l4_unlock(l4);
}

void kvt_l4i_node_ok(struct kvt_l4 *l4, int idx)
{
	l4_lock(l4);
	l4->nodes[idx].fails = 0;
	l4->nodes[idx].retry_ns = 0;
	l4_unlock(l4);
}

/* ---- slot map ------------------------------------------------------------- */

/* Installs a CLUSTER SLOTS reply from node `from`.  Returns 0 or KVT_EPROTO
 * (also for a map that covers no slot). */
static int install_slots(struct kvt_l4 *l4, int from, const struct l4_reply *r)
{
	uint16_t *map;
	size_t covered = 0;

	if (r->type != L4R_ARRAY)
		return KVT_EPROTO;
	map = malloc(KVT_L4_SLOTS * sizeof(*map));
	if (!map)
		return -ENOMEM;
	for (unsigned i = 0; i < KVT_L4_SLOTS; i++)
		map[i] = L4_NO_NODE;
	l4_lock(l4);
	for (size_t e = 0; e < r->elements; e++) {
		const struct l4_reply *x = r->element[e], *m;
		long long lo, hi;
		const char *host;
		size_t hlen;
		int idx;

		if (!x || x->type != L4R_ARRAY || x->elements < 3)
			continue;
		m = x->element[2];
		if (!x->element[0] || x->element[0]->type != L4R_INTEGER ||
		    !x->element[1] || x->element[1]->type != L4R_INTEGER ||
		    !m || m->type != L4R_ARRAY || m->elements < 2 ||
		    !m->element[0] || m->element[0]->type != L4R_STRING ||
		    !m->element[1] || m->element[1]->type != L4R_INTEGER)
			continue;
		lo = x->element[0]->integer;
		hi = x->element[1]->integer;
		if (lo < 0 || hi >= KVT_L4_SLOTS || lo > hi ||
		    m->element[1]->integer <= 0 ||
		    m->element[1]->integer > 65535)
			continue;
		host = m->element[0]->str;
		hlen = m->element[0]->len;
		if (hlen == 1 && host[0] == '?') /* endpoint unknown */
			continue;
		if (hlen == 0) { /* the node we asked */
			host = l4->nodes[from].host;
			hlen = strlen(host);
		}
		idx = kvt_l4i_node_get(l4, host, hlen,
				       (int)m->element[1]->integer);
		if (idx < 0)
			continue;
		for (long long sl = lo; sl <= hi; sl++) {
			covered += map[sl] == L4_NO_NODE;
			map[sl] = (uint16_t)idx;
		}
	}
	if (covered) {
		memcpy(l4->slots, map, KVT_L4_SLOTS * sizeof(*map));
		l4->map_loaded = 1;
	}
	l4_unlock(l4);
	free(map);
	if (!covered)
		return KVT_EPROTO;
	L4_COUNT(l4, refreshes, 1);
	return 0;
}

int kvt_l4i_refresh(struct kvt_l4_session *s, int force)
{
	struct kvt_l4 *l4 = s->l4;
	uint64_t now = kvt_clock_ns();
	unsigned n, start;
	int err = -EHOSTUNREACH;

	if (l4->no_refresh)
		return 0;
	l4_lock(l4);
	if (l4->refreshing || (!force && l4->refresh_ns &&
			       now - l4->refresh_ns < l4->refresh_min_ns)) {
		l4_unlock(l4);
		return 1;
	}
	l4->refreshing = 1;
	l4->refresh_ns = now;
	n = l4->n_nodes;
	start = l4->refresh_rr++ % (n ? n : 1);
	l4_unlock(l4);

	s->want_refresh = 0;
	/* Nodes in turn, from a rotating start so that one dead node is not
	 * always asked first; backed-off nodes are skipped. */
	for (unsigned k = 0; k < n; k++) {
		int idx = (int)((start + k) % n);
		struct l4_cmd m;
		uint64_t retry;

		l4_lock(l4);
		retry = l4->nodes[idx].retry_ns;
		l4_unlock(l4);
		if (retry > kvt_clock_ns())
			continue;
		memset(&m, 0, sizeof(m));
		m.kind = L4C_SLOTS;
		m.fixed_node = idx;
		m.node = idx;
		m.ask_node = -1;
		if (kvt_l4i_round(s, &m, 1) == 0 && m.status == 0 && m.reply)
			err = install_slots(l4, idx, m.reply);
		else
			err = m.status ? m.status : -ENOMEM;
		kvt_l4i_reply_free(m.reply);
		if (err == 0)
			break;
	}
	l4_lock(l4);
	l4->refreshing = 0;
	l4_unlock(l4);
	s->want_refresh = err != 0;
	return err;
}

/* ---- the executor --------------------------------------------------------- */

/*
 * Picks this round's node for every pending command; fails those with none
 * or with a backed-off node.  Returns how many are to be sent.
 */
static size_t route(struct kvt_l4_session *s, struct l4_cmd *cmds, size_t n)
{
	struct kvt_l4 *l4 = s->l4;
	uint64_t now = kvt_clock_ns();
	size_t todo = 0;

	l4_lock(l4);
	for (size_t i = 0; i < n; i++) {
		struct l4_cmd *m = &cmds[i];
		int node;

		if (m->done)
			continue;
		m->asking = 0;
		if (m->fixed_node >= 0) {
			node = m->fixed_node;
		} else if (m->ask_node >= 0) {
			node = m->ask_node;
			m->ask_node = -1;
			m->asking = 1;
		} else if (l4->slots[m->slot] != L4_NO_NODE) {
			node = l4->slots[m->slot];
		} else if (l4->no_refresh || !l4->map_loaded) {
			/* Ask a seed; its MOVED teaches us the owner. */
			node = (int)(m->slot % (l4->n_seeds ? l4->n_seeds : 1));
		} else {
			m->status = -EHOSTUNREACH;
			m->done = 1;
			s->want_refresh = 1;
			continue;
		}
		m->node = node;
		if (l4->nodes[node].retry_ns > now) {
			m->status = -EHOSTDOWN;
			m->done = 1;
			s->want_refresh = 1;
			L4_COUNT(l4, fast_fails, 1);
			continue;
		}
		todo++;
	}
	l4_unlock(l4);
	return todo;
}

/* A failure of the node or the path to it (not ours, not a redirect
 * loop, not the node's answer). */
static int node_error(int st)
{
	return st < 0 && st > -1000 && st != -ENOMEM && st != -ELOOP;
}

int kvt_l4i_exec(struct kvt_l4_session *s, struct l4_cmd *cmds, size_t n)
{
	struct kvt_l4 *l4 = s->l4;
	unsigned rounds = 0;
	int retried = 0, loaded;

	for (size_t i = 0; i < n; i++) {
		cmds[i].status = 0;
		cmds[i].reply = NULL;
		cmds[i].last = NULL;
		cmds[i].done = 0;
		cmds[i].node = -1;
		cmds[i].ask_node = -1;
		cmds[i].redirects = 0;
	}
	s->want_refresh = 0;
	l4_lock(l4);
	loaded = l4->map_loaded;
	l4_unlock(l4);
	if (!loaded)
		(void)kvt_l4i_refresh(s, 0);

	for (;;) {
		if (route(s, cmds, n) == 0)
			break;
		if (kvt_l4i_round(s, cmds, n)) {
			for (size_t i = 0; i < n; i++)
				if (!cmds[i].done) {
					cmds[i].status = -ENOMEM;
					cmds[i].done = 1;
				}
			return -ENOMEM;
		}
		rounds++;
		for (size_t i = 0; i < n; i++) {
			struct l4_cmd *m = &cmds[i];

			if (m->done || !m->redir)
				continue;
			L4_COUNT(l4, redirects, 1);
			if (m->redir == 1) {
				L4_COUNT(l4, moved, 1);
				l4_lock(l4);
				l4->slots[m->redir_slot] =
					(uint16_t)m->redir_node;
				l4_unlock(l4);
				s->want_refresh = 1;
			} else {
				L4_COUNT(l4, ask, 1);
				m->ask_node = m->redir_node;
			}
			if (++m->redirects > l4->max_redirects) {
				m->status = -ELOOP;
				m->done = 1;
			}
			m->redir = 0;
		}
		if (s->want_refresh && !l4->no_refresh) {
			if (kvt_l4i_refresh(s, 0) == 0 && !retried) {
				/*
				 * The map changed under commands that failed
				 * on a connection (a failover): send them
				 * once more, to the slot's new owner.
				 */
				retried = 1;
				l4_lock(l4);
				for (size_t i = 0; i < n; i++) {
					struct l4_cmd *m = &cmds[i];

					if (m->done && node_error(m->status) &&
					    m->fixed_node < 0 && m->node >= 0 &&
					    l4->slots[m->slot] != L4_NO_NODE &&
					    l4->slots[m->slot] != m->node) {
						m->done = 0;
						m->status = 0;
					}
				}
				l4_unlock(l4);
			}
		}
		if (rounds > l4->max_redirects + 2) {
			for (size_t i = 0; i < n; i++)
				if (!cmds[i].done) {
					cmds[i].status = -ELOOP;
					cmds[i].done = 1;
				}
			break;
		}
	}
	return 0;
}
