/*
 * kvtier_cli.h - pieces of the kvtier tool shared between its files
 * (kvtier_cli.c: arguments and commands; kvtier_cli_stats.c: rendering
 * the daemon's STATS document; kvtier_cli_bench.c: `kvtier bench`, its
 * option values, help text and load generator, over the workload of
 * kvtier_cli_load.c).  Not part of libkvtier.
 */
#ifndef KVTIER_CLI_H
#define KVTIER_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvtier_cli_load.h"

/* Exit statuses, part of the tool's contract (DESIGN.md). */
enum kvt_cli_exit {
	KVT_CLI_OK = 0,
	KVT_CLI_MISS = 1,  /* get/del: a key was not in the cache;
			      bench: requests failed */
	KVT_CLI_USAGE = 2, /* bad arguments; nothing was sent */
	KVT_CLI_FAIL = 3,  /* daemon unreachable, or a request failed */
};

enum kvt_cli_stats_format {
	KVT_CLI_STATS_TABLE,
	KVT_CLI_STATS_JSON,
	KVT_CLI_STATS_PROMETHEUS,
};

/*
 * Prints the daemon's STATS document json[0..len) to out: as a table for
 * people, verbatim (one line), or in the Prometheus text format.  Fields
 * the document lacks print as "-" (table) or are left out (Prometheus), so
 * that older and newer daemons both work.  Returns 0, or KVT_EPROTO if the
 * document is not a JSON object (nothing printed).
 */
/*
 * Prints per-second rates of the counters between two stats documents
 * taken `seconds` apart (for stats --watch).
 */
void kvt_cli_stats_rates(FILE *out, const char *prev, size_t prev_len,
			 const char *cur, size_t cur_len, double seconds);

int kvt_cli_stats_print(FILE *out, const char *json, size_t len,
			enum kvt_cli_stats_format fmt);

/* ---- bench (kvtier_cli_bench.c; the workload: kvtier_cli_load.h) ---- */

/* Arguments of `kvtier bench`. */
struct kvt_cli_bench_opts {
	const char *socket;	   /* the daemon's socket, never NULL */
	const char *ns;		   /* namespace of the bench keys */
	enum kvt_load_op op;
	uint64_t size;		   /* value bytes, 1 .. UINT32_MAX */
	unsigned clients;	   /* threads, each with its own connection */
	uint64_t requests;	   /* total over all clients */
	uint64_t keys;		   /* working set; 0: the default
				      (kvt_load_keys), at most requests */
	bool json;		   /* one JSON object on stdout */
};

/* The synopsis and help text of `kvtier bench --help`. */
extern const char kvt_cli_bench_synopsis[];
extern const char kvt_cli_bench_help[];

/* The defaults: get 64K values, 1 client, 1000 requests, namespace "bench". */
void kvt_cli_bench_opts_init(struct kvt_cli_bench_opts *o,
			     const char *socket);

/*
 * Sets the option name ("--op", "--size", "--clients", "--requests",
 * "--keys", "--ns" or "--json") from its value v (NULL for --json).
 * Returns 0, or -1 for a bad value, with the usage error, e.g. "bad --op
 * 'x' (put, get or mget)", in why (capacity cap).  The namespace is
 * checked by the caller.
 */
int kvt_cli_bench_opt(struct kvt_cli_bench_opts *o, const char *name,
		      const char *v, char *why, size_t cap);

/*
 * Runs the benchmark and prints its result.  Returns the tool's exit
 * status: KVT_CLI_OK, KVT_CLI_MISS when a request failed, missed or
 * returned a wrong value (the count is printed as "errors"), KVT_CLI_FAIL
 * when the daemon could not be reached or a connection broke.
 */
int kvt_cli_bench_run(const struct kvt_cli_bench_opts *o);

#endif /* KVTIER_CLI_H */
