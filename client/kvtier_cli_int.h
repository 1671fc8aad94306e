/*
 * kvtier_cli_int.h - the inside of the kvtier tool, shared by its files.  Not
 * part of libkvtier.
 *
 *   kvtier_cli.c        main: the command table, `kvtier --help`, and the
 *                       commands that parse their own arguments (keys,
 *                       bench)
 *   kvtier_cli_cmd.c    the daemon commands: ping, put, get, del, exists,
 *                       match, drop, hot, stats, as table entries
 *   kvtier_cli_run.c    the skeleton those entries run on, the option
 *                       parser, argument values, messages
 *   kvtier_cli_stats.c  rendering the daemon's STATS document and HOT list
 *   kvtier_cli_bench.c  `kvtier bench`: its option values, help text and
 *                       load generator, over the workload of
 *                       kvtier_cli_load.c
 */
#ifndef KVTIER_CLI_INT_H
#define KVTIER_CLI_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kvtier.h"
#include "kvtier_cli_load.h"

/* Exit statuses, part of the tool's contract (DESIGN.md). */
enum kvt_cli_exit {
	KVT_CLI_OK = 0,
	KVT_CLI_MISS = 1,  /* get/del: a key was not in the cache;
			      bench: requests failed */
	KVT_CLI_USAGE = 2, /* bad arguments; nothing was sent */
	KVT_CLI_FAIL = 3,  /* daemon unreachable, or a request failed */
};

/* ---- The skeleton of a command (kvtier_cli_run.c) -------------------- */

/* Fits any Unix socket path (sun_path is 108 bytes on Linux). */
#define KVT_CLI_PATH_MAX 128

/* The tool running one command. */
struct kvt_cli {
	const char *cmd; /* command name, for messages */
	const char *socket;
	char sockbuf[KVT_CLI_PATH_MAX];
	kvt_client *c;	 /* connected by the skeleton, closed by main */
};

/* A KEY argument, decoded. */
struct kvt_cli_key {
	const char *arg; /* as typed, for messages */
	const void *data;
	size_t len;
	uint8_t *owned; /* decoded hex, freed with the key */
};

/* Option ids: what an option means, whichever command takes it. */
enum kvt_cli_opt_id {
	KVT_CLI_OPT_END = -1,
	KVT_CLI_OPT_ERR = -2,
	KVT_CLI_OPT_POS = 0, /* a positional argument */
	KVT_CLI_OPT_HELP = 1,
	KVT_CLI_OPT_NS,
	KVT_CLI_OPT_TTL,
	KVT_CLI_OPT_DTYPE,
	KVT_CLI_OPT_OUT,
	KVT_CLI_OPT_JSON,
	KVT_CLI_OPT_PROM,
	KVT_CLI_OPT_WATCH,
	KVT_CLI_OPT_SOCKET,
	KVT_CLI_OPT_VERSION,
	KVT_CLI_OPT_BLOCK_TOKENS,
	KVT_CLI_OPT_TOP,
	KVT_CLI_OPT_OP,
	KVT_CLI_OPT_SIZE,
	KVT_CLI_OPT_CLIENTS,
	KVT_CLI_OPT_REQUESTS,
	KVT_CLI_OPT_KEYS,
};

/* One option a command takes; a table of them ends with lng NULL. */
struct kvt_cli_opt {
	const char *lng; /* "--ns" */
	char shrt;	 /* 'o', or 0 */
	bool has_arg;
	enum kvt_cli_opt_id id;
};

enum kvt_cli_stats_format {
	KVT_CLI_STATS_TABLE,
	KVT_CLI_STATS_JSON,
	KVT_CLI_STATS_PROMETHEUS,
};

/*
 * A command line as the skeleton parsed it, and what a command made of it
 * before connecting.  Zero unless given; the skeleton frees the pointers.
 */
struct kvt_cli_args {
	const char *ns;		   /* --ns; "", or NULL where it is required */
	struct kvt_cli_key key;	   /* KVT_CLI_POS_KEY, _KEY_FILE: the KEY */
	struct kvt_cli_key *keys;  /* KVT_CLI_POS_KEYS: the KEYs */
	int nkeys;
	const char *file;	   /* put: FILE; NULL or "-" for stdin */
	const char *out;	   /* get: -o FILE */
	struct kvt_put_opts put;   /* put: --ttl, --dtype */
	uint8_t *val;		   /* put: the value read, val_len bytes */
	size_t val_len;
	const void **key_ptrs;	   /* match: the KEYs as kvt_match() takes */
	size_t *key_lens;	   /* them */
	uint32_t top;		   /* hot: --top; 0 for the default */
	bool json;		   /* hot: --json */
	bool have_fmt;		   /* stats: --json or --prometheus given */
	enum kvt_cli_stats_format fmt;
	double watch;		   /* stats: --watch; 0 for once */
};

/* The positional arguments a command takes. */
enum kvt_cli_pos {
	KVT_CLI_POS_NONE,     /* none: each is an "unexpected argument" */
	KVT_CLI_POS_KEY,      /* KEY */
	KVT_CLI_POS_KEY_FILE, /* KEY [FILE] */
	KVT_CLI_POS_KEYS,     /* KEY..., each decoded as it comes */
};

/*
 * A command.  Most talk to the daemon and run on the skeleton,
 * kvt_cli_run(): parse the options of opts (-h and --ns are the skeleton's;
 * opt gets every other one) and the positionals as pos says, then check
 * that the KEYs (and the required --ns) are there, decode a single KEY,
 * prepare, connect, run.  Nothing is sent before run, so a usage error
 * (exit 2) has no side effects.  The hooks return 0 to go on or the exit
 * status to stop with; run returns the exit status.
 */
struct kvt_cli_cmd {
	const char *name;
	const char *synopsis; /* after "kvtier [-s SOCKET] " */
	const char *help;
	const struct kvt_cli_opt *opts;
	enum kvt_cli_pos pos;
	bool ns_required;
	int (*opt)(struct kvt_cli *cl, struct kvt_cli_args *a,
		   enum kvt_cli_opt_id id, const char *v);
	int (*prepare)(struct kvt_cli *cl, struct kvt_cli_args *a); /* or NULL */
	int (*run)(struct kvt_cli *cl, struct kvt_cli_args *a);
	/*
	 * Instead of all of the above, a command that parses its own
	 * arguments (kvtier_cli.c's keys and bench).
	 */
	int (*main)(struct kvt_cli *cl, int argc, char **argv);
	bool local; /* works without a daemon: no socket path needed */
};

/*
 * Runs cmd, a command on the skeleton, with the arguments after its name;
 * connects cl->c (the caller closes it).  Returns the exit status.
 */
int kvt_cli_run(struct kvt_cli *cl, const struct kvt_cli_cmd *cmd, int argc,
		char **argv);

/* The commands of kvtier_cli_cmd.c. */
extern const struct kvt_cli_cmd kvt_cli_cmd_ping, kvt_cli_cmd_put,
	kvt_cli_cmd_get, kvt_cli_cmd_del, kvt_cli_cmd_exists,
	kvt_cli_cmd_match, kvt_cli_cmd_drop, kvt_cli_cmd_hot,
	kvt_cli_cmd_stats;

/* ---- For commands that parse their own arguments (kvtier_cli_run.c) - */

/*
 * A small parser instead of getopt_long: options may come before or after
 * positional arguments within a command, "--" ends options, and "-" is a
 * positional argument (stdin), all without resetting getopt's global
 * state between the global and the command's options.
 */
struct kvt_cli_argv {
	const struct kvt_cli *cl;
	int argc;
	char **argv;
	int i;
	bool only_pos; /* after "--" */
	bool stop_at_pos; /* global options end at the command name */
};

/*
 * The next option of defs (its id, *val its value), a positional argument
 * (KVT_CLI_OPT_POS, *val the argument), KVT_CLI_OPT_HELP, KVT_CLI_OPT_END,
 * or KVT_CLI_OPT_ERR after printing the usage error.
 */
int kvt_cli_next_opt(struct kvt_cli_argv *a, const struct kvt_cli_opt *defs,
		     const char **val);

/* Checks a namespace against the protocol; 0 or KVT_CLI_USAGE (printed). */
int kvt_cli_ns_check(const struct kvt_cli *cl, const char *ns);

/* Prints cmd's help (`kvtier COMMAND --help`) and returns KVT_CLI_OK. */
int kvt_cli_help_exit(const struct kvt_cli_cmd *cmd);

/* Prints the part of the help every command shares: keys, socket, exits. */
void kvt_cli_help_common(FILE *out);

/* ---- Messages (kvtier_cli_run.c) ------------------------------------- */

/* Prints "kvtier: COMMAND: message" on stderr. */
__attribute__((format(printf, 2, 3)))
void kvt_cli_say(const struct kvt_cli *cl, const char *fmt, ...);

/* Prints a usage error, pointing at --help, and returns KVT_CLI_USAGE. */
__attribute__((format(printf, 2, 3)))
int kvt_cli_usage(const struct kvt_cli *cl, const char *fmt, ...);

/*
 * Reports a failed request on cl->c, naming the key k if not NULL, and
 * returns the exit status: KVT_CLI_USAGE for an argument the library
 * refused (KVT_EINVAL), else KVT_CLI_FAIL.
 */
int kvt_cli_request_failed(const struct kvt_cli *cl,
			   const struct kvt_cli_key *k, int rc);

/* Reports that the key k was not in the cache. */
void kvt_cli_not_found(const struct kvt_cli *cl, const struct kvt_cli_key *k);

/*
 * Flushes stdout and reports a failure to write it (full disk, closed);
 * returns status, or KVT_CLI_FAIL if it was KVT_CLI_OK and stdout failed.
 */
int kvt_cli_finish_stdout(const struct kvt_cli *cl, int status);

/* Parses a decimal u32 (no sign, no blanks): 0, or -1 with *out unchanged. */
int kvt_cli_parse_u32(const char *s, uint32_t *out);

/* ---- Rendering (kvtier_cli_stats.c) ---------------------------------- */

/*
 * Prints the daemon's STATS document json[0..len) to out: as a table for
 * people, verbatim (one line), or in the Prometheus text format.  Fields
 * the document lacks print as "-" (table) or are left out (Prometheus), so
 * that older and newer daemons both work.  Returns 0, or KVT_EPROTO if the
 * document is not a JSON object (nothing printed).
 */
int kvt_cli_stats_print(FILE *out, const char *json, size_t len,
			enum kvt_cli_stats_format fmt);

/*
 * Prints per-second rates of the counters between two stats documents
 * taken `seconds` apart (for stats --watch).
 */
void kvt_cli_stats_rates(FILE *out, const char *prev, size_t prev_len,
			 const char *cur, size_t cur_len, double seconds);

/*
 * Prints the blocks of a HOT reply, e[0..n) in rank order, to out: as a
 * table for people (long keys cut short) or as one JSON object
 * {"blocks": [...]}.
 */
void kvt_cli_hot_print(FILE *out, const struct kvt_hot_entry *e, size_t n,
		       bool json);

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

#endif /* KVTIER_CLI_INT_H */
