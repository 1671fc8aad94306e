/*
 * kvtier_cli_cmd.c - the kvtier commands that talk to the daemon: ping,
 * put, get, del, exists, match, drop, hot and stats.
 *
 * Each is a table entry (struct kvt_cli_cmd, kvtier_cli_int.h) run by the
 * one skeleton, kvt_cli_run() in kvtier_cli_run.c.  An entry names the
 * options and positional arguments its command takes and supplies only
 * the parts that differ: its option values, what it does before connecting
 * (put reads its input then, so that a bad FILE is a usage error with
 * nothing sent), and its request and output.  Every failure prints one
 * line on stderr, "kvtier: COMMAND: what happened"; the exit statuses are
 * kvtier_cli_int.h's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvt_frame.h"
#include "kvtier.h"
#include "kvtier_cli_int.h"

/* First read size for put from a pipe; doubles as needed. */
#define CLI_READ_CHUNK (64 * 1024)
/* A value's length travels in a u32 body_len, so nothing larger can go. */
#define CLI_VALUE_MAX 0xffffffffull
/* Longest --watch period accepted, a day. */
#define CLI_WATCH_MAX 86400.0
/* Blocks `kvtier hot` lists unless --top says otherwise. */
#define CLI_HOT_TOP 10

static const struct kvt_cli_opt no_opts[] = { { NULL, 0, false, 0 } };
static const struct kvt_cli_opt ns_opts[] = {
	{ "--ns", 0, true, KVT_CLI_OPT_NS },
	{ NULL, 0, false, 0 },
};

/* ---- Local files ---------------------------------------------------- */

/*
 * Reads all of fd into a malloc'd buffer.  A regular file's size sizes the
 * buffer up front (one extra byte so EOF is seen without a realloc); pipes
 * grow it by doubling.
 */
static int read_all(int fd, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL, *nb;
	size_t cap = CLI_READ_CHUNK, n = 0;
	ssize_t r;

	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		if ((unsigned long long)st.st_size > CLI_VALUE_MAX)
			return -EFBIG;
		cap = (size_t)st.st_size + 1;
	}
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			if (cap > CLI_VALUE_MAX) {
				free(buf);
				return -EFBIG;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			free(buf);
			return (int)r;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > CLI_VALUE_MAX) {
		free(buf);
		return -EFBIG;
	}
	*out = buf;
	*len = n;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * Writes a value to path.  The file is only opened once the value is in
 * hand, so a miss or a daemon error leaves an existing file untouched.  A
 * regular file left half-written by a failure is removed rather than left
 * looking like a complete value.
 */
static int write_file(const struct kvt_cli *cl, const char *path,
		      const uint8_t *val, size_t len)
{
	struct stat st;
	bool regular;
	int fd, rc;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		kvt_cli_say(cl, "cannot open %s: %s", path, strerror(errno));
		return KVT_CLI_USAGE;
	}
	regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	rc = write_all(fd, val, len);
	/* close() reports delayed write errors (NFS, quotas): check it. */
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0) {
		kvt_cli_say(cl, "cannot write %s: %s", path, strerror(-rc));
		if (regular)
			unlink(path);
		return KVT_CLI_FAIL;
	}
	return KVT_CLI_OK;
}

/* ---- ping ----------------------------------------------------------- */

static int ping_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	int rc = kvt_ping(cl->c);

	(void)a;
	if (rc < 0)
		return kvt_cli_request_failed(cl, NULL, rc);
	printf("pong\n");
	return kvt_cli_finish_stdout(cl, KVT_CLI_OK);
}

const struct kvt_cli_cmd kvt_cli_cmd_ping = {
	.name = "ping",
	.synopsis = "ping",
	.help = "Checks that the daemon answers; prints \"pong\".\n",
	.opts = no_opts,
	.run = ping_run,
};

/* ---- put ------------------------------------------------------------ */

static int put_opt(struct kvt_cli *cl, struct kvt_cli_args *a,
		   enum kvt_cli_opt_id id, const char *v)
{
	int dt;

	if (id == KVT_CLI_OPT_TTL) {
		if (kvt_cli_parse_u32(v, &a->put.ttl_s) < 0)
			return kvt_cli_usage(cl, "bad --ttl '%s' (seconds, 0 to "
					     "%u)", v, UINT32_MAX);
		return 0;
	}
	/* --dtype */
	dt = kvt_dtype_parse(v);
	if (dt < 0)
		return kvt_cli_usage(cl, "bad --dtype '%s' (bf16, fp16, fp32 "
				     "or u8)", v);
	a->put.dtype = (uint8_t)dt;
	return 0;
}

/* Reads the input before connecting: a bad FILE is a usage error. */
static int put_prepare(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	const char *file = a->file;
	int fd, rc;

	if (file && strcmp(file, "-") != 0) {
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			kvt_cli_say(cl, "cannot open %s: %s", file,
				    strerror(errno));
			return KVT_CLI_USAGE;
		}
	} else {
		file = "stdin";
		fd = STDIN_FILENO;
	}
	rc = read_all(fd, &a->val, &a->val_len);
	if (fd != STDIN_FILENO)
		close(fd);
	if (rc < 0) {
		kvt_cli_say(cl, "cannot read %s: %s", file,
			    rc == -EFBIG ? "larger than 4 GiB" : strerror(-rc));
		return rc == -EFBIG ? KVT_CLI_USAGE : KVT_CLI_FAIL;
	}
	return 0;
}

static int put_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	int rc = kvt_put(cl->c, a->ns, a->key.data, a->key.len, a->val,
			 a->val_len, &a->put);

	if (rc < 0)
		return kvt_cli_request_failed(cl, &a->key, rc);
	return KVT_CLI_OK;
}

const struct kvt_cli_cmd kvt_cli_cmd_put = {
	.name = "put",
	.synopsis = "put [--ns NS] [--ttl SECONDS] [--dtype bf16|fp16|fp32|u8] "
		    "KEY [FILE]",
	.help = "Stores the contents of FILE (stdin if FILE is absent or \"-\") "
		"under\n"
		"KEY, replacing any previous value.\n"
		"\n"
		"  --ns NS          namespace (default: the empty namespace)\n"
		"  --ttl SECONDS    expire the entry after SECONDS (default: "
		"never)\n"
		"  --dtype TYPE     element type of the value, a compression "
		"hint:\n"
		"                   bf16, fp16, fp32 or u8\n",
	.opts = (const struct kvt_cli_opt[]){
		{ "--ns", 0, true, KVT_CLI_OPT_NS },
		{ "--ttl", 0, true, KVT_CLI_OPT_TTL },
		{ "--dtype", 0, true, KVT_CLI_OPT_DTYPE },
		{ NULL, 0, false, 0 },
	},
	.pos = KVT_CLI_POS_KEY_FILE,
	.opt = put_opt,
	.prepare = put_prepare,
	.run = put_run,
};

/* ---- get ------------------------------------------------------------ */

static int get_opt(struct kvt_cli *cl, struct kvt_cli_args *a,
		   enum kvt_cli_opt_id id, const char *v)
{
	(void)id; /* -o, the only option of its own */
	if (!*v)
		return kvt_cli_usage(cl, "empty -o FILE");
	a->out = v;
	return 0;
}

static int get_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	void *val = NULL;
	size_t len = 0;
	int rc;

	rc = kvt_get_alloc(cl->c, a->ns, a->key.data, a->key.len, &val, &len);
	if (rc == KVT_ENOTFOUND) {
		kvt_cli_not_found(cl, &a->key);
		return KVT_CLI_MISS;
	}
	if (rc < 0)
		return kvt_cli_request_failed(cl, &a->key, rc);
	if (a->out) {
		rc = write_file(cl, a->out, val, len);
	} else {
		rc = write_all(STDOUT_FILENO, val, len);
		if (rc < 0) {
			kvt_cli_say(cl, "cannot write to stdout: %s",
				    strerror(-rc));
			rc = KVT_CLI_FAIL;
		}
	}
	free(val);
	return rc;
}

const struct kvt_cli_cmd kvt_cli_cmd_get = {
	.name = "get",
	.synopsis = "get [--ns NS] KEY [-o FILE]",
	.help = "Writes the value of KEY to FILE, or to stdout.  Exits with 1 "
		"if KEY\n"
		"is not in the cache (FILE is then left untouched).\n"
		"\n"
		"  --ns NS              namespace (default: the empty "
		"namespace)\n"
		"  -o, --output FILE    write the value to FILE instead of "
		"stdout\n",
	.opts = (const struct kvt_cli_opt[]){
		{ "--ns", 0, true, KVT_CLI_OPT_NS },
		{ "--output", 'o', true, KVT_CLI_OPT_OUT },
		{ NULL, 0, false, 0 },
	},
	.pos = KVT_CLI_POS_KEY,
	.opt = get_opt,
	.run = get_run,
};

/* ---- del, exists, match --------------------------------------------- */

static int del_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	int rc, status = KVT_CLI_OK;

	for (int i = 0; i < a->nkeys; i++) {
		rc = kvt_del(cl->c, a->ns, a->keys[i].data, a->keys[i].len);
		if (rc == KVT_ENOTFOUND) {
			kvt_cli_not_found(cl, &a->keys[i]);
			status = KVT_CLI_MISS;
		} else if (rc < 0) {
			/* Stop: later keys would most likely fail the same way. */
			status = kvt_cli_request_failed(cl, &a->keys[i], rc);
			break;
		}
	}
	return status;
}

const struct kvt_cli_cmd kvt_cli_cmd_del = {
	.name = "del",
	.synopsis = "del [--ns NS] KEY...",
	.help = "Deletes each KEY.  Exits with 1 if any KEY was not present.\n"
		"\n"
		"  --ns NS          namespace (default: the empty namespace)\n",
	.opts = ns_opts,
	.pos = KVT_CLI_POS_KEYS,
	.run = del_run,
};

static int exists_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	int rc, status = KVT_CLI_OK;

	for (int i = 0; i < a->nkeys; i++) {
		rc = kvt_exists(cl->c, a->ns, a->keys[i].data, a->keys[i].len);
		if (rc < 0) {
			/*
			 * Lines already printed stay correct; flush them so
			 * a reader can tell which key failed.
			 */
			fflush(stdout);
			status = kvt_cli_request_failed(cl, &a->keys[i], rc);
			break;
		}
		printf("%d\n", rc);
	}
	return kvt_cli_finish_stdout(cl, status);
}

const struct kvt_cli_cmd kvt_cli_cmd_exists = {
	.name = "exists",
	.synopsis = "exists [--ns NS] KEY...",
	.help = "Prints one line per KEY: 1 if it is in the cache, else 0.\n"
		"\n"
		"  --ns NS          namespace (default: the empty namespace)\n",
	.opts = ns_opts,
	.pos = KVT_CLI_POS_KEYS,
	.run = exists_run,
};

/* At most KVT_MATCH_KEYS_MAX KEYs, as kvt_match() takes them. */
static int match_prepare(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	int n = a->nkeys;

	if (n > KVT_MATCH_KEYS_MAX)
		return kvt_cli_usage(cl, "%d KEYs, at most %d", n,
				     KVT_MATCH_KEYS_MAX);
	a->key_ptrs = calloc((size_t)n, sizeof(*a->key_ptrs));
	a->key_lens = calloc((size_t)n, sizeof(*a->key_lens));
	if (!a->key_ptrs || !a->key_lens) {
		kvt_cli_say(cl, "out of memory");
		return KVT_CLI_FAIL;
	}
	for (int i = 0; i < n; i++) {
		a->key_ptrs[i] = a->keys[i].data;
		a->key_lens[i] = a->keys[i].len;
	}
	return 0;
}

static int match_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	size_t matched;
	int rc;

	rc = kvt_match(cl->c, a->ns, a->key_ptrs, a->key_lens,
		       (size_t)a->nkeys, &matched);
	if (rc < 0)
		return kvt_cli_request_failed(cl, NULL, rc);
	printf("%zu\n", matched);
	return kvt_cli_finish_stdout(cl, KVT_CLI_OK);
}

const struct kvt_cli_cmd kvt_cli_cmd_match = {
	.name = "match",
	.synopsis = "match [--ns NS] KEY...",
	.help = "Prints how many of the KEYs, in order, are in the cache before "
		"the\n"
		"first one that is not: the number of leading blocks of a "
		"prefix\n"
		"(see 'kvtier keys') that can be fetched.  At most 4096 KEYs.\n"
		"\n"
		"  --ns NS          namespace (default: the empty namespace)\n",
	.opts = ns_opts,
	.pos = KVT_CLI_POS_KEYS,
	.prepare = match_prepare,
	.run = match_run,
};

/* ---- drop ----------------------------------------------------------- */

static int drop_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	uint64_t dropped;
	int rc = kvt_drop(cl->c, a->ns, &dropped);

	if (rc < 0)
		return kvt_cli_request_failed(cl, NULL, rc);
	printf("%llu\n", (unsigned long long)dropped);
	return kvt_cli_finish_stdout(cl, KVT_CLI_OK);
}

const struct kvt_cli_cmd kvt_cli_cmd_drop = {
	.name = "drop",
	.synopsis = "drop --ns NS",
	.help = "Removes every block of namespace NS from every tier, RAM and "
		"SSD,\n"
		"and prints how many there were.  --ns \"\" drops the blocks "
		"put\n"
		"without a namespace.\n"
		"\n"
		"  --ns NS          the namespace to drop (required)\n",
	.opts = ns_opts,
	/* Required: dropping "" by accident would be a nasty surprise. */
	.ns_required = true,
	.run = drop_run,
};

/* ---- hot ------------------------------------------------------------ */

static int hot_opt(struct kvt_cli *cl, struct kvt_cli_args *a,
		   enum kvt_cli_opt_id id, const char *v)
{
	if (id == KVT_CLI_OPT_JSON) {
		a->json = true;
		return 0;
	}
	/* --top */
	if (kvt_cli_parse_u32(v, &a->top) < 0 || a->top == 0 ||
	    a->top > KVT_HOT_TOP_MAX)
		return kvt_cli_usage(cl, "bad --top '%s' (1 to %d)", v,
				     KVT_HOT_TOP_MAX);
	return 0;
}

static int hot_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	struct kvt_hot_entry *e = NULL;
	size_t n = 0;
	int rc;

	rc = kvt_hot(cl->c, a->top ? a->top : CLI_HOT_TOP, &e, &n);
	if (rc < 0)
		return kvt_cli_request_failed(cl, NULL, rc);
	kvt_cli_hot_print(stdout, e, n, a->json);
	kvt_hot_free(e);
	return kvt_cli_finish_stdout(cl, KVT_CLI_OK);
}

const struct kvt_cli_cmd kvt_cli_cmd_hot = {
	.name = "hot",
	.synopsis = "hot [--top N] [--json]",
	.help = "Lists the most-hit blocks: tier, hits, size, age (since put), "
		"idle\n"
		"time (since the last get), namespace and key.  Exact: the "
		"daemon\n"
		"looks at every block.  Keys that are not printable text are "
		"shown\n"
		"as hex:...\n"
		"\n"
		"  --top N          how many blocks, 1 to 1000 (default 10)\n"
		"  --json           one JSON object: {\"blocks\": [...]}\n",
	.opts = (const struct kvt_cli_opt[]){
		{ "--top", 0, true, KVT_CLI_OPT_TOP },
		{ "--json", 0, false, KVT_CLI_OPT_JSON },
		{ NULL, 0, false, 0 },
	},
	.opt = hot_opt,
	.run = hot_run,
};

/* ---- stats ---------------------------------------------------------- */

static int stats_opt(struct kvt_cli *cl, struct kvt_cli_args *a,
		     enum kvt_cli_opt_id id, const char *v)
{
	char *end;

	if (id == KVT_CLI_OPT_WATCH) {
		errno = 0;
		a->watch = strtod(v, &end);
		if (errno || end == v || *end || !(a->watch > 0) ||
		    a->watch > CLI_WATCH_MAX)
			return kvt_cli_usage(cl, "bad --watch '%s' (seconds, "
					     "more than 0)", v);
		return 0;
	}
	/* --json, --prometheus */
	if (a->have_fmt)
		return kvt_cli_usage(cl, "--json and --prometheus exclude each "
				     "other");
	a->have_fmt = true;
	a->fmt = id == KVT_CLI_OPT_JSON ? KVT_CLI_STATS_JSON
					: KVT_CLI_STATS_PROMETHEUS;
	return 0;
}

/* Sleeps for s seconds, resuming after signals that did not kill us. */
static void sleep_s(double s)
{
	struct timespec ts = {
		.tv_sec = (time_t)s,
		.tv_nsec = (long)((s - (double)(time_t)s) * 1e9),
	};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int stats_run(struct kvt_cli *cl, struct kvt_cli_args *a)
{
	enum kvt_cli_stats_format fmt = a->fmt;
	double watch = a->watch;
	char *json;
	size_t len;
	int rc;

	/* Like top: on a terminal the table is redrawn in place, and from
	 * the second round on it ends with per-second rates. */
	bool redraw = watch > 0 && fmt == KVT_CLI_STATS_TABLE &&
		      isatty(STDOUT_FILENO);
	char *prev = NULL;
	size_t prev_len = 0;
	struct timespec t_prev = { 0, 0 }, t_now;

	for (;;) {
		rc = kvt_stats_json(cl->c, &json, &len);
		if (rc < 0) {
			free(prev);
			return kvt_cli_finish_stdout(
				cl, kvt_cli_request_failed(cl, NULL, rc));
		}
		clock_gettime(CLOCK_MONOTONIC, &t_now);
		if (redraw)
			fputs("\033[H\033[2J", stdout);
		rc = kvt_cli_stats_print(stdout, json, len, fmt);
		if (rc < 0) {
			free(json);
			free(prev);
			kvt_cli_say(cl, "daemon sent a stats document that is "
				    "not a JSON object");
			return kvt_cli_finish_stdout(cl, KVT_CLI_FAIL);
		}
		if (prev && fmt == KVT_CLI_STATS_TABLE)
			kvt_cli_stats_rates(stdout, prev, prev_len, json, len,
					    (double)(t_now.tv_sec - t_prev.tv_sec) +
						    (double)(t_now.tv_nsec -
							     t_prev.tv_nsec) / 1e9);
		free(prev);
		prev = json;
		prev_len = len;
		t_prev = t_now;
		if (watch <= 0)
			break;
		/* Separate tables; JSON stays one document per line. */
		if (fmt != KVT_CLI_STATS_JSON && !redraw)
			putchar('\n');
		if (fflush(stdout) != 0) {
			free(prev);
			return kvt_cli_finish_stdout(cl, KVT_CLI_FAIL);
		}
		sleep_s(watch);
	}
	free(prev);
	return kvt_cli_finish_stdout(cl, KVT_CLI_OK);
}

const struct kvt_cli_cmd kvt_cli_cmd_stats = {
	.name = "stats",
	.synopsis = "stats [--json | --prometheus] [--watch SECONDS]",
	.help = "Shows the daemon's counters: per tier entries, bytes, "
		"capacity, fill\n"
		"and hits, then request totals.\n"
		"\n"
		"  --json             print the daemon's JSON document as is\n"
		"  --prometheus       print in the Prometheus text format\n"
		"  --watch SECONDS    repeat every SECONDS until interrupted\n",
	.opts = (const struct kvt_cli_opt[]){
		{ "--json", 0, false, KVT_CLI_OPT_JSON },
		{ "--prometheus", 0, false, KVT_CLI_OPT_PROM },
		{ "--watch", 0, true, KVT_CLI_OPT_WATCH },
		{ NULL, 0, false, 0 },
	},
	.opt = stats_opt,
	.run = stats_run,
};
