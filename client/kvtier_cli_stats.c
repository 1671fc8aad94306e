/*
 * kvtier_cli_stats.c - what `kvtier stats` and `kvtier hot` print: the
 * daemon's STATS JSON as a table, verbatim or for Prometheus, and its HOT
 * list as a table or JSON.
 *
 * The document is read field by field through kvtier_cli_json.h, and every
 * field is optional here: a daemon older or newer than the tool may lack a
 * counter or add others, and a stats command that fails over one missing
 * number is useless exactly when someone needs it.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kvt_size.h"
#include "kvtier_cli_int.h"
#include "kvtier_cli_json.h"
#include "kvtier_errors.h"

static const char *const tiers[] = { "l1", "l2", "l3" };
/* Prometheus's tier label also names L4 (which has hits, not entries). */
static const char *const prom_tiers[] = { "l1", "l2", "l3", "l4" };

struct doc {
	const char *json;
	size_t len;
};

/* Reads a counter; false if absent or not a non-negative integer. */
static bool get_u64(const struct doc *d, const char *path, uint64_t *out)
{
	return kvt_json_get_u64(d->json, d->len, path, out) == 0;
}

static bool get_tier_u64(const struct doc *d, const char *tier,
			 const char *field, uint64_t *out)
{
	char path[64];

	snprintf(path, sizeof(path), "%s.%s", tier, field);
	return get_u64(d, path, out);
}

/* ---- Table ---------------------------------------------------------- */

static void fmt_u64(char *buf, size_t cap, bool ok, uint64_t v)
{
	if (ok)
		snprintf(buf, cap, "%" PRIu64, v);
	else
		snprintf(buf, cap, "-");
}

static void fmt_size(char *buf, size_t cap, bool ok, uint64_t v)
{
	if (ok)
		kvt_size_format(v, buf, cap);
	else
		snprintf(buf, cap, "-");
}

/* part/whole as a percentage, "-" when unknown or whole is 0. */
static void fmt_pct(char *buf, size_t cap, bool ok, uint64_t part,
		    uint64_t whole)
{
	if (ok && whole > 0)
		snprintf(buf, cap, "%.1f%%", 100.0 * (double)part /
			 (double)whole);
	else
		snprintf(buf, cap, "-");
}

/* "12s", "5m 03s", "2h 05m 03s", "3d 02h 05m". */
static void fmt_uptime(char *buf, size_t cap, uint64_t s)
{
	uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;

	if (s < 60)
		snprintf(buf, cap, "%" PRIu64 "s", s);
	else if (s < 3600)
		snprintf(buf, cap, "%" PRIu64 "m %02" PRIu64 "s", m, s % 60);
	else if (s < 86400)
		snprintf(buf, cap, "%" PRIu64 "h %02" PRIu64 "m %02" PRIu64 "s",
			 h, m, s % 60);
	else
		snprintf(buf, cap, "%" PRIu64 "d %02" PRIu64 "h %02" PRIu64 "m",
			 d, h, m);
}

static void print_tier_row(FILE *out, const struct doc *d, const char *tier,
			   bool have_gets, uint64_t gets)
{
	char entries[24], bytes[32], cap[32], fill[16], hits[24], rate[16];
	uint64_t ne, nb, nc, nh;
	bool he = get_tier_u64(d, tier, "entries", &ne);
	bool hb = get_tier_u64(d, tier, "bytes", &nb);
	bool hc = get_tier_u64(d, tier, "capacity_bytes", &nc);
	bool hh = get_tier_u64(d, tier, "hits", &nh);

	fmt_u64(entries, sizeof(entries), he, ne);
	fmt_size(bytes, sizeof(bytes), hb, nb);
	/* Capacity 0 is how the daemon reports a disabled tier. */
	if (hc && nc == 0)
		snprintf(cap, sizeof(cap), "off");
	else
		fmt_size(cap, sizeof(cap), hc, nc);
	fmt_pct(fill, sizeof(fill), hb && hc, nb, nc);
	fmt_u64(hits, sizeof(hits), hh, nh);
	fmt_pct(rate, sizeof(rate), hh && have_gets, nh, gets);
	fprintf(out, "%-5s %10s %12s %12s %7s %12s %9s\n", tier, entries,
		bytes, cap, fill, hits, rate);
}

static void print_counter(FILE *out, const struct doc *d, const char *label,
			  const char *path)
{
	uint64_t v;

	if (get_u64(d, path, &v))
		fprintf(out, "%-12s %" PRIu64 "\n", label, v);
	else
		fprintf(out, "%-12s -\n", label);
}

/*
 * Misses by cause tell "too small a cache" (evicted) from "keys that do not
 * match" (never seen); the 2x estimate says what doubling RAM would buy.
 */
static void print_misses(FILE *out, const struct doc *d)
{
	static const char *const causes[][2] = {
		{ "misses_never_seen", "never seen" },
		{ "misses_evicted", "evicted earlier" },
		{ "misses_expired", "expired" },
		{ "misses_corrupt", "checksum failure" },
		{ "misses_raced", "changed meanwhile" },
	};
	double r1, r2;
	uint64_t v;
	bool any = false;

	for (size_t i = 0; i < sizeof(causes) / sizeof(causes[0]); i++) {
		if (!get_u64(d, causes[i][0], &v))
			continue;
		if (!any)
			fprintf(out, "\nmisses by cause\n");
		any = true;
		fprintf(out, "  %-22s %" PRIu64 "\n", causes[i][1], v);
	}
	if (kvt_json_get_double(d->json, d->len, "ram_hit_rate", &r1) == 0 &&
	    kvt_json_get_double(d->json, d->len, "ram_hit_rate_2x_est",
				&r2) == 0)
		fprintf(out, "RAM hit rate %.1f%%, estimated %.1f%% with twice "
			     "the RAM\n", r1 * 100.0, r2 * 100.0);
}

/* The shared-memory data path, when the daemon has it on. */
static void print_shm(FILE *out, const struct doc *d)
{
	uint64_t size, used, gets, gb, puts, pb, cl, leases;
	char b1[32], b2[32], b3[32], b4[32];

	if (!get_u64(d, "shm.arena_bytes", &size) || size == 0 ||
	    !get_u64(d, "shm.arena_used_bytes", &used) ||
	    !get_u64(d, "shm.gets", &gets) ||
	    !get_u64(d, "shm.get_bytes", &gb) ||
	    !get_u64(d, "shm.puts", &puts) ||
	    !get_u64(d, "shm.put_bytes", &pb) ||
	    !get_u64(d, "shm.clients_granted", &cl) ||
	    !get_u64(d, "shm.leases", &leases))
		return;
	fmt_size(b1, sizeof(b1), true, used);
	fmt_size(b2, sizeof(b2), true, size);
	fmt_size(b3, sizeof(b3), true, gb);
	fmt_size(b4, sizeof(b4), true, pb);
	fprintf(out, "%-24s %s of %s used, %" PRIu64 " clients, %" PRIu64
		     " leases open\n", "shared memory", b1, b2, cl, leases);
	fprintf(out, "%-24s %" PRIu64 " gets (%s), %" PRIu64 " puts (%s)\n",
		"  through it", gets, b3, puts, b4);
}

/* Registered client memory, once a client has used it. */
static void print_regions(FILE *out, const struct doc *d)
{
	uint64_t n, bytes, reg, ci, cib, co, cob, faults;
	char b1[32], b2[32], b3[32];

	if (!get_u64(d, "regions.mapped", &n) ||
	    !get_u64(d, "regions.mapped_bytes", &bytes) ||
	    !get_u64(d, "regions.registered", &reg) || reg == 0 ||
	    !get_u64(d, "regions.copies_in", &ci) ||
	    !get_u64(d, "regions.copied_in_bytes", &cib) ||
	    !get_u64(d, "regions.copies_out", &co) ||
	    !get_u64(d, "regions.copied_out_bytes", &cob) ||
	    !get_u64(d, "regions.faults_contained", &faults))
		return;
	fmt_size(b1, sizeof(b1), true, bytes);
	fmt_size(b2, sizeof(b2), true, cib);
	fmt_size(b3, sizeof(b3), true, cob);
	fprintf(out, "%-24s %" PRIu64 " mapped (%s), %" PRIu64
		     " registered, %" PRIu64 " faults contained\n",
		"registered memory", n, b1, reg, faults);
	fprintf(out, "%-24s %" PRIu64 " values in (%s), %" PRIu64
		     " out (%s)\n", "  copied", ci, b2, co, b3);
}

/* The tier workers: how many, how busy, what waits in each lane. */
static const char *const pool_lanes[][2] = {
	{ "cpu", "cpu" },
	{ "l3_write", "l3 write" },
	{ "l4_read", "l4 read" },
	{ "l4_write", "l4 write" },
};

/* True if the daemon has an L4 (the "l4" object says enabled). */
static bool have_l4(const struct doc *d)
{
	uint64_t v;

	return get_u64(d, "l4.threads", &v);
}

/*
 * The L4 row of the tier table: the cluster's entries and bytes are not
 * known here, its hits and their share of gets are.
 */
static void print_l4_row(FILE *out, const struct doc *d, bool have_gets,
			 uint64_t gets)
{
	char hits[24], rate[16];
	uint64_t nh;
	bool hh = get_u64(d, "l4.hits", &nh);

	fmt_u64(hits, sizeof(hits), hh, nh);
	fmt_pct(rate, sizeof(rate), hh && have_gets, nh, gets);
	fprintf(out, "%-5s %10s %12s %12s %7s %12s %9s\n", "l4", "-", "-",
		"cluster", "-", hits, rate);
}

/* Reads l4.<name>, 0 if absent. */
static uint64_t l4_u64(const struct doc *d, const char *name)
{
	char path[64];
	uint64_t v = 0;

	snprintf(path, sizeof(path), "l4.%s", name);
	get_u64(d, path, &v);
	return v;
}

/* What L4 did: lookups, traffic, failures, writes, latency. */
static void print_l4(FILE *out, const struct doc *d)
{
	char policy[16], in[32], outb[32], q[32];

	if (!have_l4(d))
		return;
	if (kvt_json_get_string(d->json, d->len, "l4.write", policy,
				sizeof(policy)) != 0)
		snprintf(policy, sizeof(policy), "-");
	fmt_size(in, sizeof(in), true, l4_u64(d, "bytes_in"));
	fmt_size(outb, sizeof(outb), true, l4_u64(d, "bytes_out"));
	fmt_size(q, sizeof(q), true, l4_u64(d, "queued_bytes"));
	fprintf(out, "\n%-24s write %s, %" PRIu64 " threads, %" PRIu64
		     " nodes, %" PRIu64 " slots mapped\n", "L4 (cluster)",
		policy, l4_u64(d, "threads"), l4_u64(d, "nodes"),
		l4_u64(d, "slots_mapped"));
	fprintf(out, "%-24s %" PRIu64 " gets in %" PRIu64 " calls, %" PRIu64
		     " hits, %" PRIu64 " misses (%" PRIu64 " stale, %" PRIu64
		     " corrupt, %" PRIu64 " too big)\n", "  reads",
		l4_u64(d, "gets"), l4_u64(d, "get_calls"),
		l4_u64(d, "hits"), l4_u64(d, "misses"),
		l4_u64(d, "misses_stale"), l4_u64(d, "misses_corrupt"),
		l4_u64(d, "too_big"));
	fprintf(out, "%-24s %" PRIu64 " probed, %" PRIu64 " found\n",
		"  match", l4_u64(d, "probes"), l4_u64(d, "probes_found"));
	fprintf(out, "%-24s %" PRIu64 " puts (%" PRIu64 " dropped, %" PRIu64
		     " skipped), %" PRIu64 " dels, %" PRIu64 " drops, %" PRIu64
		     " from peers, %s queued\n", "  writes", l4_u64(d, "puts"),
		l4_u64(d, "puts_dropped"), l4_u64(d, "puts_skipped"),
		l4_u64(d, "dels"), l4_u64(d, "drops"),
		l4_u64(d, "remote_drops"), q);
	fprintf(out, "%-24s in %s, out %s\n", "  traffic", in, outb);
	fprintf(out, "%-24s %" PRIu64 " errors, %" PRIu64 " timeouts, %" PRIu64
		     " fast fails, %" PRIu64 " redirects, %" PRIu64
		     " refreshes\n", "  failures", l4_u64(d, "errors"),
		l4_u64(d, "timeouts"), l4_u64(d, "fast_fails"),
		l4_u64(d, "redirects"), l4_u64(d, "refreshes"));
	fprintf(out, "%-24s get p50 %" PRIu64 " us, p99 %" PRIu64
		     " us; put p50 %" PRIu64 " us, p99 %" PRIu64 " us\n",
		"  latency", l4_u64(d, "latency_us.get.p50"),
		l4_u64(d, "latency_us.get.p99"),
		l4_u64(d, "latency_us.put.p50"),
		l4_u64(d, "latency_us.put.p99"));
}

static void print_pool(FILE *out, const struct doc *d)
{
	uint64_t w, busy, jobs, q;
	char path[64];

	if (!get_u64(d, "pool.workers", &w) || w == 0 ||
	    !get_u64(d, "pool.busy_ns", &busy) ||
	    !get_u64(d, "pool.jobs", &jobs))
		return;
	fprintf(out, "%-24s %" PRIu64 " workers, busy %.2f s, %" PRIu64
		     " jobs\n", "tier worker pool", w, (double)busy / 1e9,
		jobs);
	fprintf(out, "%-24s", "  queued");
	for (size_t i = 0; i < sizeof(pool_lanes) / sizeof(pool_lanes[0]);
	     i++) {
		/* L4's lanes only where there is an L4. */
		if (!strncmp(pool_lanes[i][0], "l4", 2) && !have_l4(d))
			continue;
		snprintf(path, sizeof(path), "pool.lanes.%s.queued",
			 pool_lanes[i][0]);
		if (get_u64(d, path, &q))
			fprintf(out, "%s %s %" PRIu64, i ? "," : "",
				pool_lanes[i][1], q);
	}
	fputc('\n', out);
}

/* L2 compression and L3 I/O; absent fields (older daemons) are skipped. */
static void print_extras(FILE *out, const struct doc *d)
{
	static const char *const io[][2] = {
		{ "l3_bytes_read", "L3 read" },
		{ "l3_bytes_written", "L3 written" },
		{ "l3_index_bytes", "L3 index" },
		{ "l3_index_map_bytes", "L3 index map" },
	};
	static const char *const counts[][2] = {
		{ "l3_reads_inflight", "L3 reads in flight" },
		{ "l3_checksum_failures", "L3 checksum failures" },
		{ "l3_regions_reclaimed", "L3 regions reclaimed" },
		{ "l3_write_errors", "L3 write errors" },
		{ "l3_index_full", "L3 index full" },
		{ "l3_admission_rejected", "L3 admission rejected" },
		{ "demotions_dropped", "demotions dropped" },
		{ "demotions_reused", "demotions reused" },
		{ "promotions_admitted", "promotions admitted" },
		{ "promotions_bypassed", "promotions bypassed" },
		{ "puts_held", "PUTs held (backpressure)" },
	};
	uint64_t raw, bytes, v;
	char buf[32];

	fputc('\n', out);
	if (get_tier_u64(d, "l2", "raw_bytes", &raw) &&
	    get_tier_u64(d, "l2", "bytes", &bytes) && bytes)
		fprintf(out, "%-24s %.2fx\n", "L2 compression",
			(double)raw / (double)bytes);
	for (size_t i = 0; i < sizeof(io) / sizeof(io[0]); i++)
		if (get_u64(d, io[i][0], &v)) {
			fmt_size(buf, sizeof(buf), true, v);
			fprintf(out, "%-24s %s\n", io[i][1], buf);
		}
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
		if (get_u64(d, counts[i][0], &v))
			fprintf(out, "%-24s %" PRIu64 "\n", counts[i][1], v);
	print_pool(out, d);
	print_shm(out, d);
	print_regions(out, d);
}

static const char *const lat_ops[] = { "get", "put", "del", "exists" };

/* Service time per operation (approximate, within 12.5%). */
static void print_latency(FILE *out, const struct doc *d)
{
	char path[64];
	uint64_t n, p50, p99;
	bool header = false;

	for (size_t i = 0; i < sizeof(lat_ops) / sizeof(lat_ops[0]); i++) {
		snprintf(path, sizeof(path), "latency_us.%s.count", lat_ops[i]);
		if (!get_u64(d, path, &n))
			continue;
		snprintf(path, sizeof(path), "latency_us.%s.p50", lat_ops[i]);
		if (!get_u64(d, path, &p50))
			continue;
		snprintf(path, sizeof(path), "latency_us.%s.p99", lat_ops[i]);
		if (!get_u64(d, path, &p99))
			continue;
		if (!header)
			fprintf(out, "\n%-8s %12s %10s %10s\n", "latency",
				"count", "p50 us", "p99 us");
		header = true;
		fprintf(out, "%-8s %12" PRIu64 " %10" PRIu64 " %10" PRIu64 "\n",
			lat_ops[i], n, p50, p99);
	}
}

static void print_table(FILE *out, const struct doc *d)
{
	char version[64], up[48], pct[16], io[32];
	uint64_t gets = 0, misses = 0, uptime;
	bool have_gets = get_u64(d, "gets", &gets);
	bool have_misses = get_u64(d, "misses", &misses);

	if (kvt_json_get_string(d->json, d->len, "version", version,
				sizeof(version)) != 0)
		snprintf(version, sizeof(version), "-");
	if (get_u64(d, "uptime_s", &uptime))
		fmt_uptime(up, sizeof(up), uptime);
	else
		snprintf(up, sizeof(up), "-");
	/* Older daemons do not say; then neither does the table. */
	if (kvt_json_get_string(d->json, d->len, "io_backend", io,
				sizeof(io)) == 0)
		fprintf(out, "kvtierd %s, up %s, io %s\n\n", version, up, io);
	else
		fprintf(out, "kvtierd %s, up %s\n\n", version, up);

	fprintf(out, "%-5s %10s %12s %12s %7s %12s %9s\n", "tier", "entries",
		"bytes", "capacity", "fill", "hits", "hit rate");
	for (size_t i = 0; i < sizeof(tiers) / sizeof(tiers[0]); i++)
		print_tier_row(out, d, tiers[i], have_gets, gets);
	if (have_l4(d))
		print_l4_row(out, d, have_gets, gets);
	fputc('\n', out);

	print_counter(out, d, "gets", "gets");
	print_counter(out, d, "puts", "puts");
	print_counter(out, d, "dels", "dels");
	fmt_pct(pct, sizeof(pct), have_misses && have_gets, misses, gets);
	if (have_misses)
		fprintf(out, "%-12s %" PRIu64 " (%s of gets)\n", "misses",
			misses, pct);
	else
		fprintf(out, "%-12s -\n", "misses");
	print_counter(out, d, "promotions", "promotions");
	print_counter(out, d, "demotions", "demotions");
	print_counter(out, d, "evictions", "evictions");
	print_counter(out, d, "connections", "connections");
	fprintf(out, "%-12s %s\n", "uptime", up);
	print_misses(out, d);
	print_extras(out, d);
	print_l4(out, d);
	print_latency(out, d);
}

/* ---- Prometheus ----------------------------------------------------- */

struct prom_metric {
	const char *field; /* JSON member */
	const char *name;  /* metric name after "kvtier_" (conventions) */
	const char *type;  /* counter or gauge */
	const char *help;
};

static const struct prom_metric prom_top[] = {
	{ "gets", "gets_total", "counter", "GET requests." },
	{ "puts", "puts_total", "counter", "PUT requests." },
	{ "dels", "dels_total", "counter", "DEL requests." },
	{ "misses", "misses_total", "counter",
	  "GET requests that found nothing." },
	{ "promotions", "promotions_total", "counter",
	  "Blocks moved to a faster tier." },
	{ "demotions", "demotions_total", "counter",
	  "Blocks moved to a slower tier." },
	{ "evictions", "evictions_total", "counter",
	  "Blocks dropped from the cache." },
	{ "promotions_admitted", "promotions_admitted_total", "counter",
	  "Blocks read from L2 or L3 that the admission rule let into L1." },
	{ "promotions_bypassed", "promotions_bypassed_total", "counter",
	  "Blocks read from L2 or L3 and served without entering L1." },
	{ "demotions_reused", "demotions_reused_total", "counter",
	  "Demotions that cost nothing: the tier below had the block." },
	{ "pool.workers", "pool_workers", "gauge",
	  "Worker threads doing codec work and L3 I/O." },
	{ "pool.jobs", "pool_jobs_total", "counter",
	  "Jobs the worker pool finished." },
	{ "connections", "connections", "gauge", "Open client connections." },
	{ "uptime_s", "uptime_seconds", "gauge",
	  "Seconds since the daemon started." },
	{ "l3_bytes_read", "l3_read_bytes_total", "counter",
	  "Bytes read from L3 region files." },
	{ "l3_bytes_written", "l3_written_bytes_total", "counter",
	  "Bytes written to L3 region files." },
	{ "l3_reads_inflight", "l3_reads_inflight", "gauge",
	  "L3 reads submitted and not yet completed." },
	{ "l3_checksum_failures", "l3_checksum_failures_total", "counter",
	  "L3 blocks that failed verification (served as misses)." },
	{ "l3_regions_reclaimed", "l3_regions_reclaimed_total", "counter",
	  "L3 regions reclaimed because L3 was full." },
	{ "l3_write_errors", "l3_write_errors_total", "counter",
	  "L3 write batches that failed (disk full, EIO, fsync)." },
	{ "l3_index_bytes", "l3_index_bytes", "gauge",
	  "Bytes of the L3 index file (LMDB pages in use)." },
	{ "l3_index_map_bytes", "l3_index_map_bytes", "gauge",
	  "Size of the L3 index's map (virtual; grows when needed)." },
	{ "l3_index_full", "l3_index_full_total", "counter",
	  "Times a full L3 index made L3 reclaim its oldest regions." },
	{ "l3_admission_rejected", "l3_admission_rejected_total", "counter",
	  "Blocks not written to L3 because of the write budget." },
	{ "demotions_dropped", "demotions_dropped_total", "counter",
	  "Blocks dropped because too much was already moving down." },
	{ "puts_held", "puts_held_total", "counter",
	  "PUTs held back until the tiers caught up." },
	{ "misses_never_seen", "misses_never_seen_total", "counter",
	  "Misses on keys never stored (or deleted)." },
	{ "misses_evicted", "misses_evicted_total", "counter",
	  "Misses on keys evicted earlier: the cache is too small." },
	{ "misses_expired", "misses_expired_total", "counter",
	  "Misses on keys whose TTL had passed." },
	{ "misses_corrupt", "misses_corrupt_total", "counter",
	  "Misses on blocks that failed their checksum." },
	{ "ghost_hits_2x", "ram_ghost_hits_2x_total", "counter",
	  "RAM misses that RAM twice as big would have served." },
	{ "shm.arena_bytes", "shm_arena_bytes", "gauge",
	  "Size of the shared block arena (0: shared memory off)." },
	{ "shm.arena_used_bytes", "shm_arena_used_bytes", "gauge",
	  "Bytes of the arena holding blocks, leases and put slots." },
	{ "shm.clients_granted", "shm_clients_granted_total", "counter",
	  "Connections given the shared-memory arena." },
	{ "shm.clients_refused", "shm_clients_refused_total", "counter",
	  "Connections that asked for it and were not trusted." },
	{ "shm.gets", "shm_gets_total", "counter",
	  "GETs answered with a lease instead of the bytes." },
	{ "shm.get_bytes", "shm_get_bytes_total", "counter",
	  "Bytes clients copied out of the arena." },
	{ "shm.puts", "shm_puts_total", "counter",
	  "PUTs committed from a shared-memory slot." },
	{ "shm.put_bytes", "shm_put_bytes_total", "counter",
	  "Bytes clients wrote into slots." },
	{ "shm.fallbacks", "shm_fallbacks_total", "counter",
	  "GETs that asked for a lease and got the bytes over the socket." },
	{ "shm.leases", "shm_leases", "gauge",
	  "Leases and put slots outstanding." },
	{ "regions.mapped", "regions_mapped", "gauge",
	  "Regions of client memory mapped now (registered memory)." },
	{ "regions.mapped_bytes", "regions_mapped_bytes", "gauge",
	  "Bytes of client memory mapped now." },
	{ "regions.registered", "regions_registered_total", "counter",
	  "Regions of client memory registered." },
	{ "regions.refused", "regions_refused_total", "counter",
	  "REGISTER requests refused (limits, files not memory-backed)." },
	{ "regions.copies_in", "regions_copies_in_total", "counter",
	  "Values written into client memory (MGET_TO)." },
	{ "regions.copied_in_bytes", "regions_copied_in_bytes_total",
	  "counter", "Bytes written into client memory." },
	{ "regions.copies_out", "regions_copies_out_total", "counter",
	  "Values read out of client memory (MPUT_FROM)." },
	{ "regions.copied_out_bytes", "regions_copied_out_bytes_total",
	  "counter", "Bytes read out of client memory." },
	{ "regions.faults_contained", "regions_faults_contained_total",
	  "counter", "Transfers that faulted on a region a client shrank." },
	{ "l4.threads", "l4_threads", "gauge",
	  "Threads doing L4's network I/O (absent: no L4)." },
	{ "l4.gets", "l4_gets_total", "counter",
	  "Blocks looked for in L4 after L1-L3 missed." },
	{ "l4.misses", "l4_misses_total", "counter",
	  "L4 lookups that found no usable block." },
	{ "l4.misses_stale", "l4_misses_stale_total", "counter",
	  "L4 blocks written before a DROP of their namespace." },
	{ "l4.misses_corrupt", "l4_misses_corrupt_total", "counter",
	  "L4 values that were not valid kvtier blocks (never served)." },
	{ "l4.too_big", "l4_too_big_total", "counter",
	  "L4 blocks over max-value-size (served as misses)." },
	{ "l4.probes", "l4_probes_total", "counter",
	  "MATCH keys looked for in L4." },
	{ "l4.probes_found", "l4_probes_found_total", "counter",
	  "MATCH keys L4 had." },
	{ "l4.bytes_in", "l4_read_bytes_total", "counter",
	  "Bytes read from the cluster's sockets." },
	{ "l4.bytes_out", "l4_written_bytes_total", "counter",
	  "Bytes written to the cluster's sockets." },
	{ "l4.errors", "l4_errors_total", "counter",
	  "L4 keys or namespaces whose call failed." },
	{ "l4.timeouts", "l4_timeouts_total", "counter",
	  "Cluster connections closed for making no progress." },
	{ "l4.fast_fails", "l4_fast_fails_total", "counter",
	  "L4 commands failed at once: their node was backed off." },
	{ "l4.redirects", "l4_redirects_total", "counter",
	  "MOVED and ASK redirects followed." },
	{ "l4.refreshes", "l4_refreshes_total", "counter",
	  "Cluster slot maps loaded." },
	{ "l4.puts", "l4_puts_total", "counter", "Blocks stored in L4." },
	{ "l4.puts_dropped", "l4_puts_dropped_total", "counter",
	  "Blocks not written to L4: its queue was full." },
	{ "l4.puts_skipped", "l4_puts_skipped_total", "counter",
	  "L3 victims not written to L4: the key changed meanwhile." },
	{ "l4.dels", "l4_dels_total", "counter",
	  "L4 blocks deleted." },
	{ "l4.drops", "l4_drops_total", "counter",
	  "Namespaces dropped in L4." },
	{ "l4.remote_drops", "l4_remote_drops_total", "counter",
	  "Namespaces dropped here because another host dropped them." },
	{ "l4.queued_bytes", "l4_queued_bytes", "gauge",
	  "Bytes of blocks waiting to be written to L4." },
	{ "l4.nodes", "l4_nodes", "gauge", "Cluster nodes known." },
	{ "l4.slots_mapped", "l4_slots_mapped", "gauge",
	  "Hash slots with a known master (16384: all)." },
};

static const struct prom_metric prom_tier[] = {
	{ "entries", "tier_entries", "gauge", "Blocks held by the tier." },
	{ "bytes", "tier_bytes", "gauge",
	  "Bytes the tier's blocks take, as counted against its capacity." },
	{ "raw_bytes", "tier_raw_bytes", "gauge",
	  "Uncompressed bytes of the tier's blocks." },
	{ "capacity_bytes", "tier_capacity_bytes", "gauge",
	  "Capacity of the tier in bytes (0: disabled)." },
	{ "hits", "tier_hits_total", "counter",
	  "GET requests served by the tier." },
};

static void prom_header(FILE *out, const struct prom_metric *m)
{
	fprintf(out, "# HELP kvtier_%s %s\n", m->name, m->help);
	fprintf(out, "# TYPE kvtier_%s %s\n", m->name, m->type);
}

/* Latency as a Prometheus summary with p50 and p99 quantiles. */
static void print_prom_latency(FILE *out, const struct doc *d)
{
	static const char *const q[][2] = { { "p50", "0.5" }, { "p99", "0.99" } };
	bool header = false;
	char path[64];
	uint64_t v;

	for (size_t i = 0; i < sizeof(lat_ops) / sizeof(lat_ops[0]); i++) {
		snprintf(path, sizeof(path), "latency_us.%s.count", lat_ops[i]);
		if (!get_u64(d, path, &v))
			continue;
		if (!header)
			fprintf(out, "# HELP kvtier_request_latency_microseconds "
				     "Daemon service time per operation "
				     "(approximate, within 12.5%%).\n"
				     "# TYPE kvtier_request_latency_microseconds "
				     "summary\n");
		header = true;
		for (size_t k = 0; k < 2; k++) {
			uint64_t x;
			snprintf(path, sizeof(path), "latency_us.%s.%s",
				 lat_ops[i], q[k][0]);
			if (get_u64(d, path, &x))
				fprintf(out, "kvtier_request_latency_microseconds"
					     "{op=\"%s\",quantile=\"%s\"} %"
					     PRIu64 "\n", lat_ops[i], q[k][1], x);
		}
		snprintf(path, sizeof(path), "latency_us.%s.sum", lat_ops[i]);
		uint64_t sum = 0;
		get_u64(d, path, &sum);
		fprintf(out, "kvtier_request_latency_microseconds_sum{op=\"%s\"} "
			     "%" PRIu64 "\n", lat_ops[i], sum);
		fprintf(out, "kvtier_request_latency_microseconds_count"
			     "{op=\"%s\"} %" PRIu64 "\n", lat_ops[i], v);
	}
}

/* Busy time in seconds, and the lanes as labels of one family each. */
static void print_prom_pool(FILE *out, const struct doc *d)
{
	static const struct prom_metric lane_m[] = {
		{ "queued", "pool_lane_queued", "gauge",
		  "Jobs waiting in a lane of the worker pool." },
		{ "busy_ns", "pool_lane_busy_seconds_total", "counter",
		  "Worker time spent in a lane." },
		{ "jobs", "pool_lane_jobs_total", "counter",
		  "Jobs a lane finished." },
	};
	char path[64];
	uint64_t v;

	if (get_u64(d, "pool.busy_ns", &v)) {
		fprintf(out, "# HELP kvtier_pool_busy_seconds_total Time the "
			     "workers spent working, summed over workers.\n"
			     "# TYPE kvtier_pool_busy_seconds_total counter\n"
			     "kvtier_pool_busy_seconds_total %.6f\n",
			(double)v / 1e9);
	}
	for (size_t m = 0; m < sizeof(lane_m) / sizeof(lane_m[0]); m++) {
		bool any = false;

		for (size_t i = 0;
		     i < sizeof(pool_lanes) / sizeof(pool_lanes[0]); i++) {
			snprintf(path, sizeof(path), "pool.lanes.%s.%s",
				 pool_lanes[i][0], lane_m[m].field);
			if (!get_u64(d, path, &v))
				continue;
			if (!any)
				prom_header(out, &lane_m[m]);
			any = true;
			if (m == 1)
				fprintf(out, "kvtier_%s{lane=\"%s\"} %.6f\n",
					lane_m[m].name, pool_lanes[i][0],
					(double)v / 1e9);
			else
				fprintf(out, "kvtier_%s{lane=\"%s\"} %" PRIu64
					     "\n", lane_m[m].name,
					pool_lanes[i][0], v);
		}
	}
}

/* L4's call latencies: quantiles as gauges (L4 keeps no sums). */
static void print_prom_l4_latency(FILE *out, const struct doc *d)
{
	static const char *const ops[] = { "get", "put" };
	static const char *const q[][2] = { { "p50", "0.5" }, { "p99", "0.99" } };
	char path[64];
	uint64_t v;

	if (!have_l4(d))
		return;
	fprintf(out, "# HELP kvtier_l4_latency_microseconds Latency of L4 "
		     "batch calls (approximate, within 12.5%%).\n"
		     "# TYPE kvtier_l4_latency_microseconds gauge\n");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		for (size_t k = 0; k < 2; k++) {
			snprintf(path, sizeof(path), "l4.latency_us.%s.%s",
				 ops[i], q[k][0]);
			if (get_u64(d, path, &v))
				fprintf(out, "kvtier_l4_latency_microseconds"
					     "{op=\"%s\",quantile=\"%s\"} %"
					     PRIu64 "\n", ops[i], q[k][1], v);
		}
}

static void print_prometheus(FILE *out, const struct doc *d)
{
	const struct prom_metric *m;
	bool any;
	uint64_t v;

	for (size_t i = 0; i < sizeof(prom_top) / sizeof(prom_top[0]); i++) {
		m = &prom_top[i];
		if (!get_u64(d, m->field, &v))
			continue;
		prom_header(out, m);
		fprintf(out, "kvtier_%s %" PRIu64 "\n", m->name, v);
	}
	for (size_t i = 0; i < sizeof(prom_tier) / sizeof(prom_tier[0]); i++) {
		m = &prom_tier[i];
		any = false;
		for (size_t t = 0; t < sizeof(prom_tiers) / sizeof(prom_tiers[0]);
		     t++) {
			if (!get_tier_u64(d, prom_tiers[t], m->field, &v))
				continue;
			/* One HELP/TYPE per family, only if it has samples. */
			if (!any)
				prom_header(out, m);
			any = true;
			fprintf(out, "kvtier_%s{tier=\"%s\"} %" PRIu64 "\n",
				m->name, prom_tiers[t], v);
		}
	}
	print_prom_pool(out, d);
	print_prom_latency(out, d);
	print_prom_l4_latency(out, d);
}

void kvt_cli_stats_rates(FILE *out, const char *prev, size_t prev_len,
			 const char *cur, size_t cur_len, double seconds)
{
	static const char *const fields[][2] = {
		{ "gets", "gets" },	    { "puts", "puts" },
		{ "misses", "misses" },	    { "promotions", "promotions" },
		{ "demotions", "demotions" }, { "evictions", "evictions" },
	};
	static const char *const bytes[][2] = {
		{ "bytes_in", "in" },
		{ "bytes_out", "out" },
		{ "l3_bytes_read", "L3 read" },
		{ "l3_bytes_written", "L3 written" },
	};
	uint64_t a, b;
	char buf[32];

	if (seconds <= 0)
		return;
	fprintf(out, "\nper second (last %.1f s):", seconds);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (!kvt_json_get_u64(prev, prev_len, fields[i][0], &a) &&
		    !kvt_json_get_u64(cur, cur_len, fields[i][0], &b) && b >= a)
			fprintf(out, " %s %.0f", fields[i][1],
				(double)(b - a) / seconds);
	fputc('\n', out);
	fprintf(out, "bytes per second:");
	for (size_t i = 0; i < sizeof(bytes) / sizeof(bytes[0]); i++)
		if (!kvt_json_get_u64(prev, prev_len, bytes[i][0], &a) &&
		    !kvt_json_get_u64(cur, cur_len, bytes[i][0], &b) && b >= a) {
			fmt_size(buf, sizeof(buf), true,
				 (uint64_t)((double)(b - a) / seconds));
			fprintf(out, " %s %s/s", bytes[i][1], buf);
		}
	fputc('\n', out);
}

int kvt_cli_stats_print(FILE *out, const char *json, size_t len,
			enum kvt_cli_stats_format fmt)
{
	struct doc d = { .json = json, .len = len };
	size_t n = len;

	if (kvt_json_check(json, len) < 0)
		return KVT_EPROTO;
	/* Skip leading whitespace to see the document's kind. */
	while (n > 0 && (json[len - n] == ' ' || json[len - n] == '\t' ||
			 json[len - n] == '\n' || json[len - n] == '\r'))
		n--;
	if (n == 0 || json[len - n] != '{')
		return KVT_EPROTO;

	switch (fmt) {
	case KVT_CLI_STATS_JSON:
		/* Verbatim, newline-terminated, so `| jq` and diffs work. */
		fwrite(json, 1, len, out);
		if (len == 0 || json[len - 1] != '\n')
			fputc('\n', out);
		break;
	case KVT_CLI_STATS_PROMETHEUS:
		print_prometheus(out, &d);
		break;
	case KVT_CLI_STATS_TABLE:
		print_table(out, &d);
		break;
	}
	return 0;
}

/* ---- HOT ------------------------------------------------------------ */

/* Prints a key as text if it is printable ASCII without spaces, else hex:. */
static void put_key(FILE *out, const uint8_t *k, size_t n, size_t max_hex)
{
	bool text = n > 0;

	for (size_t i = 0; i < n && text; i++)
		text = k[i] > 0x20 && k[i] < 0x7f && k[i] != '"' &&
		       k[i] != '\\';
	if (text && !(n >= 4 && memcmp(k, "hex:", 4) == 0)) {
		fwrite(k, 1, n, out);
		return;
	}
	fputs("hex:", out);
	for (size_t i = 0; i < n; i++) {
		if (max_hex && i * 2 >= max_hex) {
			fputs("...", out);
			break;
		}
		fprintf(out, "%02x", k[i]);
	}
}

/* A JSON string of a namespace (which may hold any bytes). */
static void put_json_str(FILE *out, const char *sv)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)sv; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void put_duration(char *buf, size_t cap, int64_t s)
{
	if (s < 0)
		snprintf(buf, cap, "-");
	else if (s < 120)
		snprintf(buf, cap, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, cap, "%lldm", (long long)(s / 60));
	else if (s < 172800)
		snprintf(buf, cap, "%lldh", (long long)(s / 3600));
	else
		snprintf(buf, cap, "%lldd", (long long)(s / 86400));
}

void kvt_cli_hot_print(FILE *out, const struct kvt_hot_entry *e, size_t n,
		       bool json)
{
	static const char *const tier_name[] = { "-", "l1", "l2", "l3" };

	if (json) {
		fprintf(out, "{\"blocks\":[");
		for (size_t i = 0; i < n; i++) {
			fprintf(out, "%s{\"rank\":%zu,\"tier\":\"%s\","
				"\"hits\":%llu,\"size\":%llu,", i ? "," : "",
				i + 1, tier_name[e[i].tier & 3],
				(unsigned long long)e[i].hits,
				(unsigned long long)e[i].size);
			if (e[i].age_s >= 0)
				fprintf(out, "\"age_s\":%lld,",
					(long long)e[i].age_s);
			else
				fprintf(out, "\"age_s\":null,");
			if (e[i].idle_s >= 0)
				fprintf(out, "\"idle_s\":%lld,",
					(long long)e[i].idle_s);
			else
				fprintf(out, "\"idle_s\":null,");
			fprintf(out, "\"ns\":");
			put_json_str(out, e[i].ns);
			fprintf(out, ",\"key\":\"");
			put_key(out, e[i].key, e[i].key_len, 0);
			fprintf(out, "\"}");
		}
		fprintf(out, "]}\n");
		return;
	}
	fprintf(out, "%4s %-4s %10s %10s %6s %6s  %s\n", "rank", "tier", "hits",
		"size", "age", "idle", "namespace  key");
	for (size_t i = 0; i < n; i++) {
		char size[32], age[32], idle[32];

		kvt_size_format(e[i].size, size, sizeof(size));
		put_duration(age, sizeof(age), e[i].age_s);
		put_duration(idle, sizeof(idle), e[i].idle_s);
		fprintf(out, "%4zu %-4s %10llu %10s %6s %6s  %s%s", i + 1,
			tier_name[e[i].tier & 3],
			(unsigned long long)e[i].hits, size, age, idle,
			e[i].ns[0] ? e[i].ns : "\"\"", "  ");
		put_key(out, e[i].key, e[i].key_len, 32);
		fputc('\n', out);
	}
}
