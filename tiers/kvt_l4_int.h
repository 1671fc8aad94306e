/*
 * kvt_l4_int.h - what the files of L4 share: kvt_l4.c (handle, sessions,
 * batch calls, generation table, stats), kvt_l4_cluster.c (nodes, slot map,
 * routing and the executor), kvt_l4_value.c (CRC16, slots, key names, the
 * value header) and kvt_l4_conn.c (a session's connections and the pipelined round).
 *
 * Locking: everything in struct kvt_l4 below `lock` is guarded by it, except
 * the counters and histograms, which are relaxed atomics (each is a sum;
 * kvt_l4_stats() reads each one atomically, not all at one instant).  A
 * session is its thread's alone and needs no lock.  The lock is never held
 * across I/O or a callback.
 */
#ifndef KVT_L4_INT_H
#define KVT_L4_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "kvt_l4.h"

struct redisContext;

/* No node is known for a slot. */
#define L4_NO_NODE 0xFFFFu
/* Most nodes the handle remembers (seeds, masters, redirect targets). */
#define L4_NODES_MAX 4096
/* Log-linear latency buckets: exact below 16 us, then 8 per power of two. */
#define L4_HIST_BUCKETS 320

struct l4_hist {
	_Atomic uint64_t b[L4_HIST_BUCKETS];
};

void kvt_l4i_hist_add(struct l4_hist *h, uint64_t us);
uint64_t kvt_l4i_hist_quantile(const struct l4_hist *h, double q);

/* Counters, one per field of struct kvt_l4_stats that is a sum. */
struct l4_counters {
	_Atomic uint64_t hits, misses_absent, misses_stale, misses_corrupt;
	_Atomic uint64_t probes_found;
	_Atomic uint64_t puts, dels, drops, bytes_in, bytes_out;
	_Atomic uint64_t errors, timeouts, fast_fails, redirects, moved, ask;
	_Atomic uint64_t connects, reconnects, refreshes, gen_changes;
	_Atomic uint64_t op_calls[KVT_L4_OP_COUNT], op_keys[KVT_L4_OP_COUNT];
};

#define L4_COUNT(l4, field, n) \
	atomic_fetch_add_explicit(&(l4)->st.field, (uint64_t)(n), \
				  memory_order_relaxed)

struct l4_node {
	char *host;	      /* malloc'd */
	int port;
	unsigned fails;	      /* consecutive failures */
	uint64_t retry_ns;    /* not tried before this (kvt_clock_ns) */
};

/*
 * One remembered namespace of the generation table.  gen is the last value
 * read (0: no key), reported the last value handed to a poll's callback.
 */
struct l4_watch {
	uint8_t digest[KVT_L4_DIGEST_SIZE];
	uint8_t ns[KVT_L4_NS_MAX];
	uint8_t ns_len;
	uint8_t known;	  /* gen has been read at least once */
	uint8_t in_use;
	uint64_t gen, reported;
	uint64_t read_ns; /* when gen was read */
	uint64_t used_ns; /* last use, for forgetting the oldest */
	int next;	  /* hash chain, -1 = end */
};

struct kvt_l4 {
	/* Settings (read-only after open). */
	char *password;
	uint32_t ttl_s;
	uint64_t connect_timeout_ns, timeout_ns;
	uint64_t backoff_min_ns, backoff_max_ns, refresh_min_ns;
	unsigned max_redirects;
	unsigned n_seeds; /* nodes[0..n_seeds) are the URL's seeds */
	int no_refresh;

	_Atomic unsigned sessions;
	struct l4_counters st;
	struct l4_hist hist[KVT_L4_OP_COUNT];

	pthread_mutex_t lock;
	struct l4_node *nodes;
	unsigned n_nodes, cap_nodes;
	uint16_t slots[KVT_L4_SLOTS]; /* slot -> node index or L4_NO_NODE */
	int map_loaded;		      /* a CLUSTER SLOTS map was installed */
	int refreshing;		      /* a thread is refreshing now */
	uint64_t refresh_ns;	      /* last refresh attempt */
	unsigned refresh_rr;	      /* where the next refresh starts */
	uint64_t rng;		      /* for new generations */
	/* The generation table: a chained hash over a fixed pool. */
	struct l4_watch *watch;
	unsigned watch_max, watch_used;
	int *watch_bucket; /* watch_nbucket heads, -1 = empty */
	unsigned watch_nbucket;
};

static inline void l4_lock(struct kvt_l4 *l4)
{
	pthread_mutex_lock(&l4->lock);
}

static inline void l4_unlock(struct kvt_l4 *l4)
{
	pthread_mutex_unlock(&l4->lock);
}

/* ---- replies (kvt_l4_cluster.c) ----------------------------------------
 * Our own reply objects, built by hiredis's reader through custom object
 * functions, so that a bulk string's buffer is a plain malloc() we can hand
 * to the caller as a block's memory without copying it.  str is always NUL
 * terminated (len excludes the NUL).
 */
enum { L4R_STRING = 1, L4R_ARRAY = 2, L4R_INTEGER = 3, L4R_NIL = 4,
       L4R_STATUS = 5, L4R_ERROR = 6 };

struct l4_reply {
	int type;
	long long integer;
	char *str;
	size_t len;
	struct l4_reply **element;
	size_t elements;
};

void kvt_l4i_reply_free(struct l4_reply *r);

/* ---- commands and the round executor (kvt_l4_cluster.c) ----------------
 * A command is one logical operation on one key, sent as one or two
 * requests on the key's node; its result is the reply to the last request.
 */
enum l4_kind {
	L4C_GET,	/* GET key */
	L4C_PROBE,	/* GETRANGE key 0 71: the header only */
	L4C_SET,	/* SET key <hdr+payload> [EX ttl] */
	L4C_DEL,	/* DEL key */
	L4C_GEN_ENSURE, /* SET key <rand> NX, GET key */
	L4C_GEN_INCR,	/* SET key <rand> NX, INCR key */
	L4C_GEN_SET,	/* SET key <rand>: replaces a foreign value */
	L4C_SLOTS,	/* CLUSTER SLOTS (to a fixed node) */
};

struct l4_cmd {
	/* Filled by the caller. */
	uint8_t kind;
	uint8_t name_len;
	char name[KVT_L4_NAME_MAX]; /* the key's name (not for L4C_SLOTS) */
	uint16_t slot;
	int fixed_node;	/* L4C_SLOTS: the node to ask; else -1 */
	const uint8_t *hdr; /* L4C_SET: KVT_L4_HDR_SIZE bytes */
	const uint8_t *payload;
	size_t payload_len;
	uint32_t ttl_s;	     /* L4C_SET */
	uint64_t init;	     /* GEN_*: value if the key is created */
	/* Results: status 0 with reply (owned), or an error (Errors in
	 * kvt_l4.h; KVT_ECORRUPT: the key holds another program's value --
	 * WRONGTYPE, or not an integer for INCR). */
	int status;
	struct l4_reply *reply;
	/* Executor state. */
	int node;	  /* this round's node */
	int ask_node;	  /* ASK target for the next round, -1 = none */
	uint8_t asking;	  /* this round prefixes ASKING */
	uint8_t done;
	uint8_t nrep;	  /* replies expected this round */
	uint8_t got;	  /* replies received this round */
	unsigned redirects;
	int err;	  /* first error reply this round */
	int redir;	  /* 1 MOVED, 2 ASK seen this round */
	int redir_node;
	unsigned redir_slot;
	struct l4_reply *last;
};

/*
 * One thread's session: its connections (struct l4_conn, kvt_l4_conn.c's),
 * indexed by node, and buffers.  Used by one thread at a time.
 */
struct l4_conn;
struct pollfd;
struct kvt_l4_session {
	struct kvt_l4 *l4;
	struct l4_conn *conns; /* indexed by node */
	unsigned nconns;
	uint8_t *rbuf;
	struct pollfd *pfd;
	int *pfd_node;
	unsigned pfdcap;
	int want_refresh; /* this call saw a sign that the map is wrong */
};

/*
 * Sends every command that has a node (m->node >= 0, not done) on its
 * node's connection, pipelined, all nodes at once, and waits until each has
 * its replies (done, or not done with m->redir set for a redirect), an
 * error or a timeout.  A failed connection backs its node off and sets
 * s->want_refresh.  Returns 0 or -ENOMEM (commands not done then failed).
 */
int kvt_l4i_round(struct kvt_l4_session *s, struct l4_cmd *cmds, size_t n);

/*
 * Runs cmds[0..n) to completion: routes each by the slot map, pipelines
 * every node's commands, all nodes at once, follows redirects, and refreshes
 * the map when a redirect or a failure says it is wrong.  Every command ends
 * with done set and a status.  Returns 0, or -ENOMEM when bookkeeping could
 * not be allocated (commands not done then have status -ENOMEM).
 */
int kvt_l4i_exec(struct kvt_l4_session *s, struct l4_cmd *cmds, size_t n);

/* Refreshes the slot map; force ignores the rate limit.  kvt_l4_refresh(). */
int kvt_l4i_refresh(struct kvt_l4_session *s, int force);

/* Sessions (kvt_l4_conn.c). */
int kvt_l4i_session_new(struct kvt_l4 *l4, struct kvt_l4_session **out);
void kvt_l4i_session_free(struct kvt_l4_session *s);
struct kvt_l4 *kvt_l4i_session_l4(const struct kvt_l4_session *s);

/* Node table (lock held): index of host:port, added if new; -1 if full or
 * out of memory. */
int kvt_l4i_node_get(struct kvt_l4 *l4, const char *host, size_t host_len,
		     int port);
/* A node failed: not tried before its backoff expires (takes the lock). */
void kvt_l4i_node_fail(struct kvt_l4 *l4, int idx);
/* A node answered: its backoff is over (takes the lock). */
void kvt_l4i_node_ok(struct kvt_l4 *l4, int idx);

/* ---- shared by the calls (kvt_l4.c) --------------------------------------- */

void kvt_l4i_free_cmds(struct l4_cmd *cmds, size_t n); /* and replies */
/* Counts the error statuses among n ints stride bytes apart. */
void kvt_l4i_count_errors(struct kvt_l4 *l4, const int *st, size_t n,
			  size_t stride);
/* Records a call of op over keys keys that started at t0 (kvt_clock_ns). */
void kvt_l4i_op_done(struct kvt_l4 *l4, int op, uint64_t t0, size_t keys);

/* ---- generations (kvt_l4_gen.c) -------------------------------------------- */

/* A command of kind (L4C_GET, _GEN_*) on ns's generation key. */
void kvt_l4i_cmd_gen(struct l4_cmd *m, int kind, const struct kvt_l4_ns *ns);
/* A random starting generation in [2^32, 2^62). */
uint64_t kvt_l4i_new_gen(struct kvt_l4 *l4);
/*
 * A generation command's result: 0 and *gen, KVT_ENOTFOUND (no key, *gen
 * 0), KVT_ECORRUPT (another program's value), or the command's error.
 */
int kvt_l4i_gen_result(const struct l4_cmd *m, uint64_t *gen);
/* Records a generation read of ns in the table. */
void kvt_l4i_note_gen(struct kvt_l4 *l4, const struct kvt_l4_ns *ns,
		      uint64_t gen);
/* 1 and *gen if the table read ns's generation in the last second. */
int kvt_l4i_gen_fresh(struct kvt_l4 *l4, const struct kvt_l4_ns *ns,
		      uint64_t *gen);
/* One generation command per namespace; gen[j]/st[j] as gen_result.
 * Returns 0 or -ENOMEM. */
int kvt_l4i_gen_round(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		      size_t n, int kind, uint64_t *gen, int *st);
/* Replaces foreign generation values (st[j] == KVT_ECORRUPT) with new
 * generations.  Returns 0 or -ENOMEM. */
int kvt_l4i_gen_repair(struct kvt_l4_session *s, const struct kvt_l4_ns *ns,
		       size_t n, uint64_t *gen, int *st);

/* ---- value.c ------------------------------------------------------------ */

void kvt_l4i_ns_digest(const uint8_t *ns, size_t ns_len,
		       uint8_t out[KVT_L4_DIGEST_SIZE]);
/*
 * A probe's reply: 0 and the generation if v[0..len) is exactly a header
 * that is well formed and names k, else KVT_ECORRUPT.  (The checksum needs
 * the payload: a probe cannot check it; a get does.)
 */
int kvt_l4i_header_gen(const uint8_t *v, size_t len,
		       const struct kvt_key *k, uint64_t *gen);

#endif /* KVT_L4_INT_H */
