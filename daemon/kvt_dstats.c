/* kvt_dstats.c - the daemon's STATS document: see kvt_dstats.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_arena.h"
#include "kvt_clock.h"
#include "kvt_dstats.h"
#include "kvt_lease.h"
#include "kvt_region.h"
#include "kvtier_defs.h"

struct jbuf {
	char *p;
	size_t len, cap;
	int failed;
};

static void jput(struct jbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void jput(struct jbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap * 2 + (size_t)n;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->failed = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

/* A JSON string of arbitrary bytes (namespaces may hold any). */
static void jstr(struct jbuf *b, const uint8_t *p, size_t n)
{
	jput(b, "\"");
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			jput(b, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			jput(b, "\\u%04x", p[i]);
		else
			jput(b, "%c", p[i]);
	}
	jput(b, "\"");
}

/*
 * The namespaces with the most bytes (KVT_TM_NS_TOP of them, largest
 * first) that uid may see, then how many there are in all and the totals
 * of the rest: a bounded document, and O(namespaces) work, whatever any
 * client created.  Namespaces bound to another user (ns-owner) are left
 * out by name, as HOT leaves out their blocks, and counted in the rest.
 */
static void jnamespaces(struct jbuf *b, const struct kvt_conn_ctx *x,
			uid_t uid)
{
	struct kvt_tm_ns_rest rest = { 0 };
	struct kvt_tm_ns *v = NULL;
	size_t n = 0, shown = 0;
	uint64_t total = 0;

	jput(b, "\"namespaces\":{");
	if (kvt_tm_ns_stats(x->tm, KVT_TM_NS_TOP, &v, &n, &rest) == 0) {
		total = n + rest.namespaces;
		for (size_t i = 0; i < n; i++) {
			if (!kvt_access_ns_ok(&x->acc, uid, v[i].ns,
					      v[i].ns_len)) {
				rest.namespaces++;
				rest.entries += v[i].entries;
				rest.bytes += v[i].bytes;
				rest.hits += v[i].hits;
				continue;
			}
			if (shown++)
				jput(b, ",");
			jstr(b, v[i].ns, v[i].ns_len);
			jput(b, ":{\"entries\":%llu,\"bytes\":%llu,"
				"\"hits\":%llu,\"ram_entries\":%llu,"
				"\"l1_entries\":%llu}",
			     (unsigned long long)v[i].entries,
			     (unsigned long long)v[i].bytes,
			     (unsigned long long)v[i].hits,
			     (unsigned long long)v[i].ram_entries,
			     (unsigned long long)v[i].l1_entries);
		}
	}
	jput(b, "},\"namespaces_total\":%llu,\"namespaces_rest\":{"
		"\"namespaces\":%llu,\"entries\":%llu,\"bytes\":%llu,"
		"\"hits\":%llu},",
	     (unsigned long long)total, (unsigned long long)rest.namespaces,
	     (unsigned long long)rest.entries, (unsigned long long)rest.bytes,
	     (unsigned long long)rest.hits);
	free(v);
}

/* The tier manager's worker pool and its lanes. */
static void jpool(struct jbuf *b, const struct kvt_tm_pool_stats *p)
{
	static const char *const lane[KVT_TM_LANES] = {
		"cpu", "l3_write", "l4_read", "l4_write"
	};

	jput(b, "\"pool\":{\"workers\":%llu,\"busy_ns\":%llu,\"jobs\":%llu,"
		"\"lanes\":{",
	     (unsigned long long)p->workers, (unsigned long long)p->busy_ns,
	     (unsigned long long)p->jobs);
	for (int i = 0; i < KVT_TM_LANES; i++)
		jput(b, "%s\"%s\":{\"queued\":%llu,\"busy_ns\":%llu,"
			"\"jobs\":%llu}",
		     i ? "," : "", lane[i],
		     (unsigned long long)p->lanes[i].queued,
		     (unsigned long long)p->lanes[i].busy_ns,
		     (unsigned long long)p->lanes[i].jobs);
	jput(b, "}},");
}

/*
 * L4, the shared cluster: present only when configured, so that a daemon
 * without it reports nothing to look at.  Flat counters first (a reader
 * looking for "l4" then a field finds it), the latencies last.
 */
static void jl4(struct jbuf *b, const struct kvt_tm_l4_stats *l)
{
	if (!l->enabled)
		return;
	jput(b, "\"l4\":{\"enabled\":true,\"write\":\"%s\","
		"\"threads\":%llu,\"gets\":%llu,\"get_calls\":%llu,"
		"\"hits\":%llu,"
		"\"misses\":%llu,\"misses_stale\":%llu,"
		"\"misses_corrupt\":%llu,\"too_big\":%llu,"
		"\"probes\":%llu,\"probes_found\":%llu,"
		"\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":%llu,"
		"\"timeouts\":%llu,\"fast_fails\":%llu,\"redirects\":%llu,"
		"\"refreshes\":%llu,\"connects\":%llu,\"puts\":%llu,"
		"\"puts_dropped\":%llu,\"puts_skipped\":%llu,\"dels\":%llu,"
		"\"drops\":%llu,\"remote_drops\":%llu,"
		"\"queued_bytes\":%llu,\"nodes\":%llu,"
		"\"slots_mapped\":%llu,",
	     l->write_put ? "put" : "evict",
	     (unsigned long long)l->threads, (unsigned long long)l->gets,
	     (unsigned long long)l->get_calls,
	     (unsigned long long)l->hits, (unsigned long long)l->misses,
	     (unsigned long long)l->misses_stale,
	     (unsigned long long)l->misses_corrupt,
	     (unsigned long long)l->too_big, (unsigned long long)l->probes,
	     (unsigned long long)l->probes_found,
	     (unsigned long long)l->bytes_in,
	     (unsigned long long)l->bytes_out, (unsigned long long)l->errors,
	     (unsigned long long)l->timeouts,
	     (unsigned long long)l->fast_fails,
	     (unsigned long long)l->redirects,
	     (unsigned long long)l->refreshes,
	     (unsigned long long)l->connects, (unsigned long long)l->puts,
	     (unsigned long long)l->puts_dropped,
	     (unsigned long long)l->puts_skipped,
	     (unsigned long long)l->dels, (unsigned long long)l->drops,
	     (unsigned long long)l->remote_drops,
	     (unsigned long long)l->queued_bytes,
	     (unsigned long long)l->nodes,
	     (unsigned long long)l->slots_mapped);
	jput(b, "\"latency_us\":{\"get\":{\"p50\":%llu,\"p99\":%llu},"
		"\"put\":{\"p50\":%llu,\"p99\":%llu}}},",
	     (unsigned long long)l->get_p50_us,
	     (unsigned long long)l->get_p99_us,
	     (unsigned long long)l->put_p50_us,
	     (unsigned long long)l->put_p99_us);
}

static void jtier(struct jbuf *b, const char *name,
		  const struct kvt_tier_stats *t, int last)
{
	jput(b, "\"%s\":{\"entries\":%llu,\"bytes\":%llu,\"raw_bytes\":%llu,"
		"\"capacity_bytes\":%llu,\"hits\":%llu}%s",
	     name, (unsigned long long)t->entries,
	     (unsigned long long)t->bytes, (unsigned long long)t->raw_bytes,
	     (unsigned long long)t->capacity_bytes,
	     (unsigned long long)t->hits, last ? "" : ",");
}

/* The event loop's busy polling (--busy-poll; kvt_spin.h). */
static void jpoll(struct jbuf *b, const struct kvt_conn_ctx *x)
{
	struct kvt_loop_poll_stats p;

	kvt_loop_busy_poll_stats(x->loop, &p);
	jput(b, "\"busy_poll\":{\"max_us\":%llu,\"window_us\":%llu,"
		"\"polls\":%llu,\"hits\":%llu,\"preempts\":%llu,"
		"\"backoffs\":%llu},",
	     (unsigned long long)p.max_us, (unsigned long long)p.window_us,
	     (unsigned long long)p.polls, (unsigned long long)p.hits,
	     (unsigned long long)p.preempts, (unsigned long long)p.backoffs);
}

/* The shared-memory data path (kvt_lease.h): arena fill and traffic. */
static void jshm(struct jbuf *b, const struct kvt_lease_pool *p)
{
	struct kvt_arena_stats as = { 0 };

	if (p->arena)
		kvt_arena_stats(p->arena, &as);
	jput(b, "\"shm\":{\"enabled\":%s,\"arena_bytes\":%llu,"
		"\"arena_used_bytes\":%llu,\"arena_peak_bytes\":%llu,"
		"\"arena_alloc_fails\":%llu,\"arena_prefaulted_bytes\":%llu,\"clients_granted\":%llu,"
		"\"clients_refused\":%llu,\"gets\":%llu,\"get_bytes\":%llu,"
		"\"puts\":%llu,\"put_bytes\":%llu,\"fallbacks\":%llu,"
		"\"slots_refused\":%llu,\"leases\":%llu,\"lease_bytes\":%llu},",
	     p->arena ? "true" : "false", (unsigned long long)as.size,
	     (unsigned long long)as.used, (unsigned long long)as.peak_used,
	     (unsigned long long)as.fails,
	     (unsigned long long)as.prefaulted,
	     (unsigned long long)p->st.granted,
	     (unsigned long long)p->st.refused,
	     (unsigned long long)p->st.gets,
	     (unsigned long long)p->st.get_bytes,
	     (unsigned long long)p->st.puts,
	     (unsigned long long)p->st.put_bytes,
	     (unsigned long long)p->st.fallbacks,
	     (unsigned long long)p->st.full,
	     (unsigned long long)p->leases,
	     (unsigned long long)p->lease_bytes);
}

/* Registered client memory (kvt_region.h). */
static void jregions(struct jbuf *b, const struct kvt_region_pool *p)
{
	jput(b, "\"regions\":{\"mapped\":%llu,\"mapped_bytes\":%llu,"
		"\"registered\":%llu,\"refused\":%llu,\"unregistered\":%llu,"
		"\"requests\":%llu,\"copies_in\":%llu,"
		"\"copied_in_bytes\":%llu,\"copies_out\":%llu,"
		"\"copied_out_bytes\":%llu,\"faults_contained\":%llu},",
	     (unsigned long long)p->regions, (unsigned long long)p->bytes,
	     (unsigned long long)p->st.registered,
	     (unsigned long long)p->st.refused,
	     (unsigned long long)p->st.unregistered,
	     (unsigned long long)p->st.requests,
	     (unsigned long long)p->st.copies_in,
	     (unsigned long long)p->st.bytes_in,
	     (unsigned long long)p->st.copies_out,
	     (unsigned long long)p->st.bytes_out,
	     (unsigned long long)p->st.faults_contained);
}

int kvt_dstats_json(const struct kvt_conn_ctx *x, uid_t uid, char **out,
		    size_t *len)
{
	struct kvt_tm_stats ts;
	struct jbuf b = { .cap = 1024 };

	b.p = malloc(b.cap);
	if (!b.p)
		return -ENOMEM;
	kvt_tm_stats(x->tm, &ts);
	jput(&b, "{\"version\":\"%s\",\"uptime_s\":%llu,", KVT_VERSION_STRING,
	     (unsigned long long)((kvt_clock_ns() - x->start_ns) / 1000000000ull));
	/* Which event backend serves: io_uring, or epoll after a fallback. */
	jput(&b, "\"io_backend\":\"%s\",",
	     kvt_io_backend_name(kvt_loop_backend(x->loop)));
	jpoll(&b, x);
	jput(&b, "\"gets\":%llu,\"puts\":%llu,\"dels\":%llu,\"misses\":%llu,"
		 "\"promotions\":%llu,\"demotions\":%llu,\"evictions\":%llu,"
		 "\"rejected_too_big\":%llu,\"promotions_admitted\":%llu,"
		 "\"promotions_bypassed\":%llu,\"demotions_reused\":%llu,",
	     (unsigned long long)ts.gets, (unsigned long long)ts.puts,
	     (unsigned long long)ts.dels, (unsigned long long)ts.misses,
	     (unsigned long long)ts.promotions,
	     (unsigned long long)ts.demotions,
	     (unsigned long long)ts.evictions,
	     (unsigned long long)ts.rejected_too_big,
	     (unsigned long long)ts.promotions_admitted,
	     (unsigned long long)ts.promotions_bypassed,
	     (unsigned long long)ts.demotions_reused);
	jtier(&b, "l1", &ts.l1, 0);
	jtier(&b, "l2", &ts.l2, 0);
	jtier(&b, "l3", &ts.l3, 0);
	/* Misses by cause, and what RAM twice as big would have served. */
	uint64_t ram_hits = ts.l1.hits + ts.l2.hits;
	jput(&b, "\"misses_never_seen\":%llu,\"misses_expired\":%llu,"
		 "\"misses_evicted\":%llu,\"misses_corrupt\":%llu,"
		 "\"misses_raced\":%llu,\"ghost_hits_2x\":%llu,"
		 "\"ram_hit_rate\":%.4f,\"ram_hit_rate_2x_est\":%.4f,",
	     (unsigned long long)ts.misses_never_seen,
	     (unsigned long long)ts.misses_expired,
	     (unsigned long long)ts.misses_evicted,
	     (unsigned long long)ts.misses_corrupt,
	     (unsigned long long)ts.misses_raced,
	     (unsigned long long)ts.ghost_hits_2x,
	     ts.gets ? (double)ram_hits / (double)ts.gets : 0.0,
	     ts.gets ? (double)(ram_hits + ts.ghost_hits_2x) / (double)ts.gets
		     : 0.0);
	jput(&b, "\"l2_compression_ratio\":%.3f,",
	     ts.l2.bytes ? (double)ts.l2.raw_bytes / (double)ts.l2.bytes : 0.0);
	jput(&b, "\"l3_bytes_read\":%llu,\"l3_bytes_written\":%llu,"
		 "\"l3_reads_inflight\":%llu,\"l3_checksum_failures\":%llu,"
		 "\"l3_regions_reclaimed\":%llu,\"l3_write_errors\":%llu,"
		 "\"l3_admission_rejected\":%llu,\"demotions_dropped\":%llu,"
		 "\"transit_bytes\":%llu,\"jobs_pending\":%llu,"
		 "\"prefetched\":%llu,\"prefetch_hits\":%llu,"
		 "\"pinned_bytes\":%llu,\"pinned_keys\":%llu,"
		 "\"pins_rejected\":%llu,\"l3_index_bytes\":%llu,"
		 "\"l3_index_map_bytes\":%llu,\"l3_index_full\":%llu,",
	     (unsigned long long)ts.l3_bytes_read,
	     (unsigned long long)ts.l3_bytes_written,
	     (unsigned long long)ts.l3_reads_inflight,
	     (unsigned long long)ts.l3_checksum_failures,
	     (unsigned long long)ts.l3_regions_reclaimed,
	     (unsigned long long)ts.l3_write_errors,
	     (unsigned long long)ts.l3_admission_rejected,
	     (unsigned long long)ts.demotions_dropped,
	     (unsigned long long)ts.transit_bytes,
	     (unsigned long long)ts.jobs_pending,
	     (unsigned long long)ts.prefetched,
	     (unsigned long long)ts.prefetch_hits,
	     (unsigned long long)ts.pinned_bytes,
	     (unsigned long long)ts.pinned_keys,
	     (unsigned long long)ts.pins_rejected,
	     (unsigned long long)ts.l3_index_bytes,
	     (unsigned long long)ts.l3_index_map_bytes,
	     (unsigned long long)ts.l3_index_full);
	jpool(&b, &ts.pool);
	jl4(&b, &ts.l4);
	jnamespaces(&b, x, uid);
	jshm(&b, x->shm);
	jregions(&b, x->reg);
	/* Service time per operation, decode to reply (kvt_hist.h). */
	jput(&b, "\"latency_us\":{");
	static const uint8_t ops[] = { KVT_OP_GET, KVT_OP_PUT, KVT_OP_DEL,
				       KVT_OP_EXISTS, KVT_OP_PING,
				       KVT_OP_STATS };
	for (size_t i = 0; i < sizeof(ops); i++) {
		const struct kvt_hist *h = &x->lat[ops[i]];
		char name[16];
		size_t k;

		for (k = 0; kvt_op_name(ops[i])[k] && k < sizeof(name) - 1; k++)
			name[k] = (char)(kvt_op_name(ops[i])[k] | 0x20);
		name[k] = '\0';
		jput(&b, "%s\"%s\":{\"count\":%llu,\"sum\":%llu,\"p50\":%llu,"
		     "\"p99\":%llu}",
		     i ? "," : "", name, (unsigned long long)h->count,
		     (unsigned long long)h->sum_us,
		     (unsigned long long)kvt_hist_quantile(h, 0.50),
		     (unsigned long long)kvt_hist_quantile(h, 0.99));
	}
	jput(&b, "},");
	jput(&b, "\"connections\":%u,\"connections_total\":%llu,"
		 "\"connections_refused\":%llu,\"protocol_errors\":%llu,"
		 "\"idle_closed\":%llu,\"slow_closed\":%llu,"
		 "\"idle_evicted\":%llu,\"mem_waits\":%llu,"
		 "\"inflight_bytes\":%llu,\"body_timeouts\":%llu,"
		 "\"connections_revoked\":%llu,"
		 "\"connections_denied\":%llu,\"requests_denied\":%llu,"
		 "\"requests\":%llu,\"puts_held\":%llu,\"bytes_in\":%llu,"
		 "\"bytes_out\":%llu}",
	     x->nconns, (unsigned long long)x->st.connections_total,
	     (unsigned long long)x->st.connections_refused,
	     (unsigned long long)x->st.protocol_errors,
	     (unsigned long long)x->st.idle_closed,
	     (unsigned long long)x->st.slow_closed,
	     (unsigned long long)x->st.idle_evicted,
	     (unsigned long long)x->st.mem_waits,
	     (unsigned long long)x->inflight_bytes,
	     (unsigned long long)x->st.body_timeouts,
	     (unsigned long long)x->st.connections_revoked,
	     (unsigned long long)x->st.connections_denied,
	     (unsigned long long)x->st.requests_denied,
	     (unsigned long long)x->st.requests,
	     (unsigned long long)x->st.puts_held,
	     (unsigned long long)x->st.bytes_in,
	     (unsigned long long)x->st.bytes_out);
	if (b.failed) {
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}
