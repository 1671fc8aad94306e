/*
 * kvtier_cli.c - the kvtier command-line tool: arguments and commands.
 *
 *   kvtier [-s SOCKET] ping | put | get | del | exists | match | stats
 *   kvtier [-s SOCKET] bench    (the load generator: kvtier_cli_bench.c)
 *   kvtier keys
 *
 * The tool only uses the public libkvtier API, like any other client.
 * Arguments are checked completely before connecting, so that a usage
 * error (exit 2) never has side effects.  Every failure prints exactly one
 * line on stderr, "kvtier: COMMAND: what happened".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvt_frame.h"
#include "kvt_size.h"
#include "kvtier_prefix.h"
#include "kvtier.h"
#include "kvtier_cli.h"

/* Fits any Unix socket path (sun_path is 108 bytes on Linux). */
#define CLI_PATH_MAX 128
/* First read size for put from a pipe; doubles as needed. */
#define CLI_READ_CHUNK (64 * 1024)
/* A value's length travels in a u32 body_len, so nothing larger can go. */
#define CLI_VALUE_MAX 0xffffffffull
/* Longest --watch period accepted, a day. */
#define CLI_WATCH_MAX 86400.0
/* Tokens per block of `kvtier keys` unless --block-tokens says otherwise. */
#define CLI_BLOCK_TOKENS 16

struct cli {
	const char *cmd; /* command name, for messages */
	const char *socket;
	char sockbuf[CLI_PATH_MAX];
	kvt_client *c;
};

/* A KEY argument, decoded. */
struct cli_key {
	const char *arg; /* as typed, for messages */
	const void *data;
	size_t len;
	uint8_t *owned; /* decoded hex, freed with the key */
};

/* ---- Messages ------------------------------------------------------- */

__attribute__((format(printf, 2, 3)))
static void say(const struct cli *cl, const char *fmt, ...)
{
	va_list ap;

	fputs("kvtier: ", stderr);
	if (cl && cl->cmd)
		fprintf(stderr, "%s: ", cl->cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Prints a usage error and returns KVT_CLI_USAGE. */
__attribute__((format(printf, 2, 3)))
static int usage_err(const struct cli *cl, const char *fmt, ...)
{
	va_list ap;

	fputs("kvtier: ", stderr);
	if (cl->cmd)
		fprintf(stderr, "%s: ", cl->cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'kvtier %s%s--help')\n", cl->cmd ? cl->cmd : "",
		cl->cmd ? " " : "");
	return KVT_CLI_USAGE;
}

/*
 * Exit status for a failed library call: an argument the library refused
 * is a usage error, anything else a failure of the daemon or connection.
 */
static int fail_status(int rc)
{
	return rc == KVT_EINVAL ? KVT_CLI_USAGE : KVT_CLI_FAIL;
}

/*
 * How a key appears in messages: as typed, but cut short, since a key may
 * be a kilobyte long and a message should stay one readable line.
 */
#define CLI_KEY_SHOWN 48
static int key_shown_len(const struct cli_key *k)
{
	return strlen(k->arg) > CLI_KEY_SHOWN ? CLI_KEY_SHOWN
					      : (int)strlen(k->arg);
}

static const char *key_ellipsis(const struct cli_key *k)
{
	return strlen(k->arg) > CLI_KEY_SHOWN ? "..." : "";
}

/* Reports a failed request on cl->c, naming the key if there is one. */
static int request_failed(const struct cli *cl, const struct cli_key *k,
			  int rc)
{
	const char *msg = kvt_client_errmsg(cl->c);

	if (!*msg)
		msg = kvt_strerror(rc);
	if (k)
		say(cl, "%.*s%s: %s", key_shown_len(k), k->arg,
		    key_ellipsis(k), msg);
	else
		say(cl, "%s", msg);
	return fail_status(rc);
}

/* Reports a miss. */
static void not_found(const struct cli *cl, const struct cli_key *k)
{
	say(cl, "%.*s%s: not found", key_shown_len(k), k->arg,
	    key_ellipsis(k));
}

/* ---- Help ----------------------------------------------------------- */

struct cmd_help {
	const char *name;
	const char *synopsis;
	const char *text;
};

static const struct cmd_help helps[] = {
	{ "ping", "ping",
	  "Checks that the daemon answers; prints \"pong\".\n" },
	{ "put",
	  "put [--ns NS] [--ttl SECONDS] [--dtype bf16|fp16|fp32|u8] KEY [FILE]",
	  "Stores the contents of FILE (stdin if FILE is absent or \"-\") under\n"
	  "KEY, replacing any previous value.\n"
	  "\n"
	  "  --ns NS          namespace (default: the empty namespace)\n"
	  "  --ttl SECONDS    expire the entry after SECONDS (default: never)\n"
	  "  --dtype TYPE     element type of the value, a compression hint:\n"
	  "                   bf16, fp16, fp32 or u8\n" },
	{ "get", "get [--ns NS] KEY [-o FILE]",
	  "Writes the value of KEY to FILE, or to stdout.  Exits with 1 if KEY\n"
	  "is not in the cache (FILE is then left untouched).\n"
	  "\n"
	  "  --ns NS              namespace (default: the empty namespace)\n"
	  "  -o, --output FILE    write the value to FILE instead of stdout\n" },
	{ "del", "del [--ns NS] KEY...",
	  "Deletes each KEY.  Exits with 1 if any KEY was not present.\n"
	  "\n"
	  "  --ns NS          namespace (default: the empty namespace)\n" },
	{ "exists", "exists [--ns NS] KEY...",
	  "Prints one line per KEY: 1 if it is in the cache, else 0.\n"
	  "\n"
	  "  --ns NS          namespace (default: the empty namespace)\n" },
	{ "match", "match [--ns NS] KEY...",
	  "Prints how many of the KEYs, in order, are in the cache before the\n"
	  "first one that is not: the number of leading blocks of a prefix\n"
	  "(see 'kvtier keys') that can be fetched.  At most 4096 KEYs.\n"
	  "\n"
	  "  --ns NS          namespace (default: the empty namespace)\n" },
	{ "drop", "drop --ns NS",
	  "Removes every block of namespace NS from every tier, RAM and SSD,\n"
	  "and prints how many there were.  --ns \"\" drops the blocks put\n"
	  "without a namespace.\n"
	  "\n"
	  "  --ns NS          the namespace to drop (required)\n" },
	{ "hot", "hot [--top N] [--json]",
	  "Lists the most-hit blocks: tier, hits, size, age (since put), idle\n"
	  "time (since the last get), namespace and key.  Exact: the daemon\n"
	  "looks at every block.  Keys that are not printable text are shown\n"
	  "as hex:...\n"
	  "\n"
	  "  --top N          how many blocks, 1 to 1000 (default 10)\n"
	  "  --json           one JSON object: {\"blocks\": [...]}\n" },
	{ "stats", "stats [--json | --prometheus] [--watch SECONDS]",
	  "Shows the daemon's counters: per tier entries, bytes, capacity, fill\n"
	  "and hits, then request totals.\n"
	  "\n"
	  "  --json             print the daemon's JSON document as is\n"
	  "  --prometheus       print in the Prometheus text format\n"
	  "  --watch SECONDS    repeat every SECONDS until interrupted\n" },
	{ "bench", kvt_cli_bench_synopsis, kvt_cli_bench_help },
	{ "keys", "keys [--ns NS] [--block-tokens N] TOKEN...",
	  "Prints the prefix key of every complete block of N tokens, one\n"
	  "\"hex:\" KEY per line, ready for get, exists or put.  Each key is\n"
	  "chained over every token before it (proto/PROTOCOL.md, \"Prefix\n"
	  "keys\"), so every implementation computes the same keys.\n"
	  "A trailing partial block gets no key.  Needs no daemon.\n"
	  "\n"
	  "  --ns NS              namespace hashed into every key, e.g. the\n"
	  "                       model, dtype and layout (default: empty)\n"
	  "  --block-tokens N     tokens per block (default: 16)\n"
	  "  TOKEN                a token id, decimal, 0 to 4294967295\n" },
};

static const struct cmd_help *find_help(const char *name)
{
	for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
		if (strcmp(helps[i].name, name) == 0)
			return &helps[i];
	return NULL;
}

static void print_common_help(FILE *out)
{
	char def[CLI_PATH_MAX];

	if (kvt_socket_path_default(def, sizeof(def)) < 0)
		snprintf(def, sizeof(def), "(too long)");
	fprintf(out,
		"KEY is text, or hex bytes after a \"hex:\" prefix (hex:0a1b...).\n"
		"Keys starting with '-' go after \"--\".\n"
		"\n"
		"The default socket is $KVTIER_SOCKET, else\n"
		"$XDG_RUNTIME_DIR/kvtier.sock, else /tmp/kvtier-$UID.sock;\n"
		"here: %s\n"
		"\n"
		"Run as the daemon's user, values of 64 KiB and more move through\n"
		"its shared memory instead of the socket; KVTIER_SHM=0 turns that\n"
		"off (the bytes are the same either way).\n"
		"\n"
		"Exit status: 0 ok, 1 miss (get, del) or errors (bench), 2 usage\n"
		"error (including an unopenable FILE), 3 daemon unreachable or\n"
		"request failed.\n",
		def);
}

static void print_help(FILE *out)
{
	fprintf(out,
		"Usage: kvtier [-s SOCKET] COMMAND [ARGS...]\n"
		"\n"
		"Talks to kvtierd, the tiered KV-cache daemon.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
		fprintf(out, "  kvtier %s\n", helps[i].synopsis);
	fprintf(out,
		"\n"
		"Options:\n"
		"  -s, --socket SOCKET  the daemon's socket\n"
		"  -h, --help           this help; `kvtier COMMAND --help` for a\n"
		"                       command's\n"
		"      --version        the version\n"
		"\n");
	print_common_help(out);
}

static int cmd_help_exit(const char *name)
{
	const struct cmd_help *h = find_help(name);

	printf("Usage: kvtier [-s SOCKET] %s\n\n%s\n", h->synopsis, h->text);
	print_common_help(stdout);
	return KVT_CLI_OK;
}

/* ---- Option parsing ------------------------------------------------- */

/*
 * A small parser instead of getopt_long: options may come before or after
 * positional arguments within a command, "--" ends options, and "-" is a
 * positional argument (stdin), all without resetting getopt's global
 * state between the global and the command's options.
 */
enum {
	OPT_END = -1,
	OPT_ERR = -2,
	OPT_POS = 0, /* *val is a positional argument */
	OPT_HELP = 1,
	OPT_NS,
	OPT_TTL,
	OPT_DTYPE,
	OPT_OUT,
	OPT_JSON,
	OPT_PROM,
	OPT_WATCH,
	OPT_SOCKET,
	OPT_VERSION,
	OPT_BLOCK_TOKENS,
	OPT_TOP,
	OPT_OP,
	OPT_SIZE,
	OPT_CLIENTS,
	OPT_REQUESTS,
	OPT_KEYS,
};

struct opt_def {
	const char *lng; /* "--ns" */
	char shrt;	 /* 'o', or 0 */
	bool has_arg;
	int id;
};

struct args {
	const struct cli *cl;
	int argc;
	char **argv;
	int i;
	bool only_pos; /* after "--" */
	bool stop_at_pos; /* global options end at the command name */
};

static int next_opt(struct args *a, const struct opt_def *defs,
		    const char **val)
{
	const struct opt_def *d;
	const char *s, *eq;
	size_t n;

	*val = NULL;
	for (;;) {
		if (a->i >= a->argc)
			return OPT_END;
		s = a->argv[a->i];
		if (a->only_pos || s[0] != '-' || s[1] == '\0') {
			if (a->stop_at_pos)
				return OPT_END;
			a->i++;
			*val = s;
			return OPT_POS;
		}
		a->i++;
		if (strcmp(s, "--") != 0)
			break;
		a->only_pos = true;
	}
	if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)
		return OPT_HELP;

	if (s[1] == '-') {
		eq = strchr(s, '=');
		n = eq ? (size_t)(eq - s) : strlen(s);
		for (d = defs; d->lng; d++)
			if (strlen(d->lng) == n && strncmp(d->lng, s, n) == 0)
				break;
		if (!d->lng) {
			usage_err(a->cl, "unknown option '%.*s'", (int)n, s);
			return OPT_ERR;
		}
		if (!d->has_arg) {
			if (eq) {
				usage_err(a->cl, "option '%s' takes no value",
					  d->lng);
				return OPT_ERR;
			}
			return d->id;
		}
		if (eq) {
			*val = eq + 1;
			return d->id;
		}
	} else {
		for (d = defs; d->lng; d++)
			if (d->shrt && d->shrt == s[1])
				break;
		if (!d->lng) {
			usage_err(a->cl, "unknown option '%s'", s);
			return OPT_ERR;
		}
		if (!d->has_arg) {
			if (s[2]) {
				usage_err(a->cl, "unknown option '%s'", s);
				return OPT_ERR;
			}
			return d->id;
		}
		if (s[2]) {
			*val = s + 2;
			return d->id;
		}
	}
	if (a->i >= a->argc) {
		usage_err(a->cl, "option '%s' needs a value", s);
		return OPT_ERR;
	}
	*val = a->argv[a->i++];
	return d->id;
}

/* ---- Argument values ------------------------------------------------ */

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Decodes KEY: text, or hex after "hex:". Returns 0 or KVT_CLI_USAGE. */
static int key_parse(const struct cli *cl, const char *arg, struct cli_key *k)
{
	const char *h;
	size_t n;

	memset(k, 0, sizeof(*k));
	k->arg = arg;
	if (strncmp(arg, "hex:", 4) != 0) {
		if (!*arg)
			return usage_err(cl, "empty KEY");
		k->data = arg;
		k->len = strlen(arg);
		return 0;
	}
	h = arg + 4;
	n = strlen(h);
	if (n == 0)
		return usage_err(cl, "empty hex KEY '%s'", arg);
	if (n % 2)
		return usage_err(cl, "hex KEY '%s' has an odd number of "
				 "digits", arg);
	k->owned = malloc(n / 2);
	if (!k->owned) {
		say(cl, "out of memory");
		return KVT_CLI_FAIL;
	}
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_digit(h[2 * i]), lo = hex_digit(h[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(k->owned);
			k->owned = NULL;
			return usage_err(cl, "bad hex KEY '%s'", arg);
		}
		k->owned[i] = (uint8_t)(hi << 4 | lo);
	}
	k->data = k->owned;
	k->len = n / 2;
	return 0;
}

static void keys_free(struct cli_key *keys, int n)
{
	if (!keys)
		return;
	for (int i = 0; i < n; i++)
		free(keys[i].owned);
	free(keys);
}

static int ns_check(const struct cli *cl, const char *ns)
{
	if (strlen(ns) > KVT_NS_MAX)
		return usage_err(cl, "namespace longer than %d bytes",
				 KVT_NS_MAX);
	return 0;
}

/* Parses a decimal u32 ("--ttl"). */
static int parse_u32(const char *s, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* ---- Connecting ----------------------------------------------------- */

static int cli_connect(struct cli *cl)
{
	int rc = kvt_connect(&cl->c, cl->socket);

	if (rc == 0)
		return 0;
	/*
	 * errno codes come from socket()/connect(): the daemon is not there.
	 * kvtier codes mean something answered but the handshake failed;
	 * the library's message says how.
	 */
	if (rc > -1000)
		say(cl, "daemon unreachable at %s: %s", cl->socket,
		    kvt_strerror(rc));
	else
		say(cl, "%s", kvt_client_errmsg(NULL));
	return KVT_CLI_FAIL;
}

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

/* Flushes stdout and reports a failure to write it (full disk, closed). */
static int finish_stdout(const struct cli *cl, int status)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		say(cl, "cannot write to stdout: %s", strerror(errno));
		return status == KVT_CLI_OK ? KVT_CLI_FAIL : status;
	}
	return status;
}

/* ---- Commands ------------------------------------------------------- */

static const struct opt_def no_opts[] = { { NULL, 0, false, 0 } };

static int cmd_ping(struct cli *cl, int argc, char **argv)
{
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	const char *v;
	int o, rc;

	while ((o = next_opt(&a, no_opts, &v)) != OPT_END) {
		if (o == OPT_ERR)
			return KVT_CLI_USAGE;
		if (o == OPT_HELP)
			return cmd_help_exit(cl->cmd);
		return usage_err(cl, "unexpected argument '%s'", v);
	}
	rc = cli_connect(cl);
	if (rc)
		return rc;
	rc = kvt_ping(cl->c);
	if (rc < 0)
		return request_failed(cl, NULL, rc);
	printf("pong\n");
	return finish_stdout(cl, KVT_CLI_OK);
}

static int cmd_put(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--ns", 0, true, OPT_NS },
		{ "--ttl", 0, true, OPT_TTL },
		{ "--dtype", 0, true, OPT_DTYPE },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	struct kvt_put_opts po = { 0 };
	struct cli_key key;
	const char *v, *ns = "", *keyarg = NULL, *file = NULL;
	uint8_t *val = NULL;
	size_t len = 0;
	int o, rc, fd, dt;

	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			return cmd_help_exit(cl->cmd);
		case OPT_NS:
			ns = v;
			break;
		case OPT_TTL:
			if (parse_u32(v, &po.ttl_s) < 0)
				return usage_err(cl, "bad --ttl '%s' (seconds, "
						 "0 to %u)", v, UINT32_MAX);
			break;
		case OPT_DTYPE:
			dt = kvt_dtype_parse(v);
			if (dt < 0)
				return usage_err(cl, "bad --dtype '%s' (bf16, "
						 "fp16, fp32 or u8)", v);
			po.dtype = (uint8_t)dt;
			break;
		case OPT_POS:
			if (!keyarg)
				keyarg = v;
			else if (!file)
				file = v;
			else
				return usage_err(cl, "unexpected argument '%s'",
						 v);
			break;
		}
	}
	if (!keyarg)
		return usage_err(cl, "missing KEY");
	if (ns_check(cl, ns))
		return KVT_CLI_USAGE;
	rc = key_parse(cl, keyarg, &key);
	if (rc)
		return rc;

	/* Read the input before connecting: a bad FILE is a usage error. */
	if (file && strcmp(file, "-") != 0) {
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			say(cl, "cannot open %s: %s", file, strerror(errno));
			rc = KVT_CLI_USAGE;
			goto out;
		}
	} else {
		file = "stdin";
		fd = STDIN_FILENO;
	}
	rc = read_all(fd, &val, &len);
	if (fd != STDIN_FILENO)
		close(fd);
	if (rc < 0) {
		say(cl, "cannot read %s: %s", file,
		    rc == -EFBIG ? "larger than 4 GiB" : strerror(-rc));
		rc = rc == -EFBIG ? KVT_CLI_USAGE : KVT_CLI_FAIL;
		goto out;
	}

	rc = cli_connect(cl);
	if (rc)
		goto out;
	rc = kvt_put(cl->c, ns, key.data, key.len, val, len, &po);
	if (rc < 0) {
		rc = request_failed(cl, &key, rc);
		goto out;
	}
	rc = KVT_CLI_OK;
out:
	free(val);
	free(key.owned);
	return rc;
}

/*
 * Writes a value to path.  The file is only opened once the value is in
 * hand, so a miss or a daemon error leaves an existing file untouched.  A
 * regular file left half-written by a failure is removed rather than left
 * looking like a complete value.
 */
static int write_file(const struct cli *cl, const char *path,
		      const uint8_t *val, size_t len)
{
	struct stat st;
	bool regular;
	int fd, rc;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		say(cl, "cannot open %s: %s", path, strerror(errno));
		return KVT_CLI_USAGE;
	}
	regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	rc = write_all(fd, val, len);
	/* close() reports delayed write errors (NFS, quotas): check it. */
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0) {
		say(cl, "cannot write %s: %s", path, strerror(-rc));
		if (regular)
			unlink(path);
		return KVT_CLI_FAIL;
	}
	return KVT_CLI_OK;
}

static int cmd_get(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--ns", 0, true, OPT_NS },
		{ "--output", 'o', true, OPT_OUT },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	struct cli_key key;
	const char *v, *ns = "", *keyarg = NULL, *outpath = NULL;
	void *val = NULL;
	size_t len = 0;
	int o, rc;

	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			return cmd_help_exit(cl->cmd);
		case OPT_NS:
			ns = v;
			break;
		case OPT_OUT:
			if (!*v)
				return usage_err(cl, "empty -o FILE");
			outpath = v;
			break;
		case OPT_POS:
			if (keyarg)
				return usage_err(cl, "unexpected argument '%s'",
						 v);
			keyarg = v;
			break;
		}
	}
	if (!keyarg)
		return usage_err(cl, "missing KEY");
	if (ns_check(cl, ns))
		return KVT_CLI_USAGE;
	rc = key_parse(cl, keyarg, &key);
	if (rc)
		return rc;

	rc = cli_connect(cl);
	if (rc)
		goto out;
	rc = kvt_get_alloc(cl->c, ns, key.data, key.len, &val, &len);
	if (rc == KVT_ENOTFOUND) {
		not_found(cl, &key);
		rc = KVT_CLI_MISS;
		goto out;
	}
	if (rc < 0) {
		rc = request_failed(cl, &key, rc);
		goto out;
	}
	if (outpath) {
		rc = write_file(cl, outpath, val, len);
	} else {
		rc = write_all(STDOUT_FILENO, val, len);
		if (rc < 0) {
			say(cl, "cannot write to stdout: %s", strerror(-rc));
			rc = KVT_CLI_FAIL;
		}
	}
out:
	free(val);
	free(key.owned);
	return rc;
}

/*
 * Shared by del, exists and match: parses [--ns NS] KEY... into *keys (all of
 * them decoded before anything is sent).  Returns 0 or an exit status.
 */
static int parse_multi(struct cli *cl, int argc, char **argv,
		       const char **ns, struct cli_key **keys, int *nkeys)
{
	static const struct opt_def opts[] = {
		{ "--ns", 0, true, OPT_NS },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	struct cli_key *k;
	const char *v;
	int o, n = 0, rc;

	*keys = NULL;
	*nkeys = 0;
	*ns = "";
	/* At most argc keys; one allocation up front. */
	k = calloc((size_t)argc + 1, sizeof(*k));
	if (!k) {
		say(cl, "out of memory");
		return KVT_CLI_FAIL;
	}
	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			keys_free(k, n);
			return KVT_CLI_USAGE;
		case OPT_HELP:
			keys_free(k, n);
			return cmd_help_exit(cl->cmd);
		case OPT_NS:
			*ns = v;
			break;
		case OPT_POS:
			rc = key_parse(cl, v, &k[n]);
			if (rc) {
				keys_free(k, n);
				return rc;
			}
			n++;
			break;
		}
	}
	if (n == 0) {
		keys_free(k, n);
		return usage_err(cl, "missing KEY");
	}
	if (ns_check(cl, *ns)) {
		keys_free(k, n);
		return KVT_CLI_USAGE;
	}
	*keys = k;
	*nkeys = n;
	return 0;
}

/*
 * parse_multi(), then connects.  Returns like parse_multi() (0 with *keys
 * NULL after --help); on failure nothing is left to free.
 */
static int open_multi(struct cli *cl, int argc, char **argv, const char **ns,
		      struct cli_key **keys, int *n)
{
	int rc = parse_multi(cl, argc, argv, ns, keys, n);

	if (rc || !*keys)
		return rc;
	rc = cli_connect(cl);
	if (rc) {
		keys_free(*keys, *n);
		*keys = NULL;
	}
	return rc;
}

static int cmd_del(struct cli *cl, int argc, char **argv)
{
	struct cli_key *keys;
	const char *ns;
	int n, rc, status = KVT_CLI_OK;

	rc = open_multi(cl, argc, argv, &ns, &keys, &n);
	if (rc || !keys)
		return rc;
	for (int i = 0; i < n; i++) {
		rc = kvt_del(cl->c, ns, keys[i].data, keys[i].len);
		if (rc == KVT_ENOTFOUND) {
			not_found(cl, &keys[i]);
			status = KVT_CLI_MISS;
		} else if (rc < 0) {
			/* Stop: later keys would most likely fail the same way. */
			status = request_failed(cl, &keys[i], rc);
			break;
		}
	}
	keys_free(keys, n);
	return status;
}

static int cmd_exists(struct cli *cl, int argc, char **argv)
{
	struct cli_key *keys;
	const char *ns;
	int n, rc, status = KVT_CLI_OK;

	rc = open_multi(cl, argc, argv, &ns, &keys, &n);
	if (rc || !keys)
		return rc;
	for (int i = 0; i < n; i++) {
		rc = kvt_exists(cl->c, ns, keys[i].data, keys[i].len);
		if (rc < 0) {
			/*
			 * Lines already printed stay correct; flush them so
			 * a reader can tell which key failed.
			 */
			fflush(stdout);
			status = request_failed(cl, &keys[i], rc);
			break;
		}
		printf("%d\n", rc);
	}
	keys_free(keys, n);
	return finish_stdout(cl, status);
}

static int cmd_match(struct cli *cl, int argc, char **argv)
{
	struct cli_key *keys;
	const void **ptrs = NULL;
	size_t *lens = NULL, matched;
	const char *ns;
	int n, rc, status;

	rc = parse_multi(cl, argc, argv, &ns, &keys, &n);
	if (rc || !keys)
		return rc;
	if (n > KVT_MATCH_KEYS_MAX) {
		keys_free(keys, n);
		return usage_err(cl, "%d KEYs, at most %d", n,
				 KVT_MATCH_KEYS_MAX);
	}
	ptrs = calloc((size_t)n, sizeof(*ptrs));
	lens = calloc((size_t)n, sizeof(*lens));
	if (!ptrs || !lens) {
		say(cl, "out of memory");
		status = KVT_CLI_FAIL;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		ptrs[i] = keys[i].data;
		lens[i] = keys[i].len;
	}
	status = cli_connect(cl);
	if (status)
		goto out;
	rc = kvt_match(cl->c, ns, ptrs, lens, (size_t)n, &matched);
	if (rc < 0) {
		status = request_failed(cl, NULL, rc);
		goto out;
	}
	printf("%zu\n", matched);
	status = finish_stdout(cl, KVT_CLI_OK);
out:
	free(ptrs);
	free(lens);
	keys_free(keys, n);
	return status;
}

static int cmd_drop(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--ns", 0, true, OPT_NS },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	const char *v, *ns = NULL;
	uint64_t dropped;
	int o, rc;

	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			return cmd_help_exit(cl->cmd);
		case OPT_NS:
			ns = v;
			break;
		default:
			return usage_err(cl, "unexpected argument '%s'", v);
		}
	}
	/* Required: dropping "" by accident would be a nasty surprise. */
	if (!ns)
		return usage_err(cl, "missing --ns NS");
	if (ns_check(cl, ns))
		return KVT_CLI_USAGE;
	rc = cli_connect(cl);
	if (rc)
		return rc;
	rc = kvt_drop(cl->c, ns, &dropped);
	if (rc < 0)
		return request_failed(cl, NULL, rc);
	printf("%llu\n", (unsigned long long)dropped);
	return finish_stdout(cl, KVT_CLI_OK);
}

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

static int cmd_hot(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--top", 0, true, OPT_TOP },
		{ "--json", 0, false, OPT_JSON },
		{ NULL, 0, false, 0 },
	};
	static const char *const tier_name[] = { "-", "l1", "l2", "l3" };
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	struct kvt_hot_entry *e = NULL;
	const char *v;
	uint32_t top = 10;
	bool json = false;
	size_t n = 0;
	int o, rc;

	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			return cmd_help_exit(cl->cmd);
		case OPT_TOP:
			if (parse_u32(v, &top) < 0 || top == 0 ||
			    top > KVT_HOT_TOP_MAX)
				return usage_err(cl, "bad --top '%s' (1 to %d)", v,
						 KVT_HOT_TOP_MAX);
			break;
		case OPT_JSON:
			json = true;
			break;
		default:
			return usage_err(cl, "unexpected argument '%s'", v);
		}
	}
	rc = cli_connect(cl);
	if (rc)
		return rc;
	rc = kvt_hot(cl->c, top, &e, &n);
	if (rc < 0)
		return request_failed(cl, NULL, rc);
	if (json) {
		printf("{\"blocks\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"rank\":%zu,\"tier\":\"%s\",\"hits\":%llu,"
			       "\"size\":%llu,", i ? "," : "", i + 1,
			       tier_name[e[i].tier & 3],
			       (unsigned long long)e[i].hits,
			       (unsigned long long)e[i].size);
			if (e[i].age_s >= 0)
				printf("\"age_s\":%lld,", (long long)e[i].age_s);
			else
				printf("\"age_s\":null,");
			if (e[i].idle_s >= 0)
				printf("\"idle_s\":%lld,", (long long)e[i].idle_s);
			else
				printf("\"idle_s\":null,");
			printf("\"ns\":");
			put_json_str(stdout, e[i].ns);
			printf(",\"key\":\"");
			put_key(stdout, e[i].key, e[i].key_len, 0);
			printf("\"}");
		}
		printf("]}\n");
	} else {
		printf("%4s %-4s %10s %10s %6s %6s  %s\n", "rank", "tier",
		       "hits", "size", "age", "idle", "namespace  key");
		for (size_t i = 0; i < n; i++) {
			char size[32], age[32], idle[32];

			kvt_size_format(e[i].size, size, sizeof(size));
			put_duration(age, sizeof(age), e[i].age_s);
			put_duration(idle, sizeof(idle), e[i].idle_s);
			printf("%4zu %-4s %10llu %10s %6s %6s  %s%s", i + 1,
			       tier_name[e[i].tier & 3],
			       (unsigned long long)e[i].hits, size, age, idle,
			       e[i].ns[0] ? e[i].ns : "\"\"", "  ");
			put_key(stdout, e[i].key, e[i].key_len, 32);
			putchar('\n');
		}
	}
	kvt_hot_free(e);
	return finish_stdout(cl, KVT_CLI_OK);
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

static int cmd_stats(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--json", 0, false, OPT_JSON },
		{ "--prometheus", 0, false, OPT_PROM },
		{ "--watch", 0, true, OPT_WATCH },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	enum kvt_cli_stats_format fmt = KVT_CLI_STATS_TABLE;
	const char *v;
	char *json, *end;
	size_t len;
	double watch = 0;
	bool have_fmt = false;
	int o, rc;

	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			return cmd_help_exit(cl->cmd);
		case OPT_JSON:
		case OPT_PROM:
			if (have_fmt)
				return usage_err(cl, "--json and --prometheus "
						 "exclude each other");
			have_fmt = true;
			fmt = o == OPT_JSON ? KVT_CLI_STATS_JSON
					    : KVT_CLI_STATS_PROMETHEUS;
			break;
		case OPT_WATCH:
			errno = 0;
			watch = strtod(v, &end);
			if (errno || end == v || *end || !(watch > 0) ||
			    watch > CLI_WATCH_MAX)
				return usage_err(cl, "bad --watch '%s' (seconds, "
						 "more than 0)", v);
			break;
		case OPT_POS:
			return usage_err(cl, "unexpected argument '%s'", v);
		}
	}

	rc = cli_connect(cl);
	if (rc)
		return rc;
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
			return finish_stdout(cl, request_failed(cl, NULL, rc));
		}
		clock_gettime(CLOCK_MONOTONIC, &t_now);
		if (redraw)
			fputs("\033[H\033[2J", stdout);
		rc = kvt_cli_stats_print(stdout, json, len, fmt);
		if (rc < 0) {
			free(json);
			free(prev);
			say(cl, "daemon sent a stats document that is not a "
			    "JSON object");
			return finish_stdout(cl, KVT_CLI_FAIL);
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
			return finish_stdout(cl, KVT_CLI_FAIL);
		}
		sleep_s(watch);
	}
	free(prev);
	return finish_stdout(cl, KVT_CLI_OK);
}

static void print_key_hex(const uint8_t key[KVT_PREFIX_KEY_SIZE])
{
	static const char digits[] = "0123456789abcdef";
	char line[4 + 2 * KVT_PREFIX_KEY_SIZE + 2] = "hex:";

	for (size_t i = 0; i < KVT_PREFIX_KEY_SIZE; i++) {
		line[4 + 2 * i] = digits[key[i] >> 4];
		line[4 + 2 * i + 1] = digits[key[i] & 0xf];
	}
	line[4 + 2 * KVT_PREFIX_KEY_SIZE] = '\n';
	line[4 + 2 * KVT_PREFIX_KEY_SIZE + 1] = '\0';
	fputs(line, stdout);
}

static int cmd_keys(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--ns", 0, true, OPT_NS },
		{ "--block-tokens", 0, true, OPT_BLOCK_TOKENS },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	const char *v, *ns = "";
	uint32_t *tokens, block = CLI_BLOCK_TOKENS;
	uint8_t (*keys)[KVT_PREFIX_KEY_SIZE] = NULL;
	size_t n = 0, nkeys;
	int o, rc;

	/* At most argc tokens; one allocation up front. */
	tokens = calloc((size_t)argc + 1, sizeof(*tokens));
	if (!tokens) {
		say(cl, "out of memory");
		return KVT_CLI_FAIL;
	}
	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			rc = KVT_CLI_USAGE;
			goto out;
		case OPT_HELP:
			rc = cmd_help_exit(cl->cmd);
			goto out;
		case OPT_NS:
			ns = v;
			break;
		case OPT_BLOCK_TOKENS:
			if (parse_u32(v, &block) < 0 || block == 0) {
				rc = usage_err(cl, "bad --block-tokens '%s' "
					       "(1 to %u)", v, UINT32_MAX);
				goto out;
			}
			break;
		case OPT_POS:
			if (parse_u32(v, &tokens[n]) < 0) {
				rc = usage_err(cl, "bad TOKEN '%s' (a decimal "
					       "token id, 0 to %u)", v,
					       UINT32_MAX);
				goto out;
			}
			n++;
			break;
		}
	}
	if (n == 0) {
		rc = usage_err(cl, "missing TOKEN");
		goto out;
	}
	if (ns_check(cl, ns)) {
		rc = KVT_CLI_USAGE;
		goto out;
	}
	if (n / block > 0) {
		keys = calloc(n / block, sizeof(*keys));
		if (!keys) {
			say(cl, "out of memory");
			rc = KVT_CLI_FAIL;
			goto out;
		}
	}
	rc = kvt_prefix_keys(ns, strlen(ns), tokens, n, block, keys, n / block,
			     &nkeys);
	if (rc < 0) {
		/* Arguments were checked above: this is a bug, not usage. */
		say(cl, "%s", kvt_strerror(rc));
		rc = KVT_CLI_FAIL;
		goto out;
	}
	for (size_t i = 0; i < nkeys; i++)
		print_key_hex(keys[i]);
	rc = finish_stdout(cl, KVT_CLI_OK);
out:
	free(keys);
	free(tokens);
	return rc;
}

/* The option values are kvtier_cli_bench.c's; the parsing is here. */
static int cmd_bench(struct cli *cl, int argc, char **argv)
{
	static const struct opt_def opts[] = {
		{ "--op", 0, true, OPT_OP },
		{ "--size", 0, true, OPT_SIZE },
		{ "--clients", 0, true, OPT_CLIENTS },
		{ "--requests", 0, true, OPT_REQUESTS },
		{ "--keys", 0, true, OPT_KEYS },
		{ "--ns", 0, true, OPT_NS },
		{ "--json", 0, false, OPT_JSON },
		{ NULL, 0, false, 0 },
	};
	struct args a = { .cl = cl, .argc = argc, .argv = argv };
	struct kvt_cli_bench_opts bo;
	const struct opt_def *d;
	const char *v;
	char why[160];
	int o;

	kvt_cli_bench_opts_init(&bo, cl->socket);
	while ((o = next_opt(&a, opts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			return cmd_help_exit(cl->cmd);
		case OPT_POS:
			return usage_err(cl, "unexpected argument '%s'", v);
		default:
			for (d = opts; d->id != o; d++)
				;
			if (kvt_cli_bench_opt(&bo, d->lng, v, why,
					      sizeof(why)) < 0)
				return usage_err(cl, "%s", why);
			break;
		}
	}
	if (ns_check(cl, bo.ns))
		return KVT_CLI_USAGE;
	return kvt_cli_bench_run(&bo);
}

/* ---- Main ----------------------------------------------------------- */

struct command {
	const char *name;
	int (*fn)(struct cli *cl, int argc, char **argv);
	bool local; /* works without a daemon: no socket path needed */
};

static const struct command commands[] = {
	{ "ping", cmd_ping, false },
	{ "put", cmd_put, false },
	{ "get", cmd_get, false },
	{ "del", cmd_del, false },
	{ "exists", cmd_exists, false },
	{ "match", cmd_match, false },
	{ "drop", cmd_drop, false },
	{ "hot", cmd_hot, false },
	{ "stats", cmd_stats, false },
	{ "bench", cmd_bench, false },
	{ "keys", cmd_keys, true },
};

int main(int argc, char **argv)
{
	static const struct opt_def gopts[] = {
		{ "--socket", 's', true, OPT_SOCKET },
		{ "--version", 0, false, OPT_VERSION },
		{ NULL, 0, false, 0 },
	};
	struct cli cl = { 0 };
	struct args a = { .cl = &cl, .argc = argc, .argv = argv, .i = 1,
			  .stop_at_pos = true };
	const char *v, *name;
	int o, rc;

	while ((o = next_opt(&a, gopts, &v)) != OPT_END) {
		switch (o) {
		case OPT_ERR:
			return KVT_CLI_USAGE;
		case OPT_HELP:
			print_help(stdout);
			return KVT_CLI_OK;
		case OPT_VERSION:
			printf("kvtier %s\n", kvt_version());
			return KVT_CLI_OK;
		case OPT_SOCKET:
			if (!*v)
				return usage_err(&cl, "empty socket path");
			cl.socket = v;
			break;
		}
	}
	if (a.i >= argc)
		return usage_err(&cl, "missing COMMAND");
	name = argv[a.i];
	/* "kvtier help [COMMAND]" for those who type it. */
	if (strcmp(name, "help") == 0) {
		if (a.i + 1 < argc && find_help(argv[a.i + 1]))
			return cmd_help_exit(argv[a.i + 1]);
		print_help(stdout);
		return KVT_CLI_OK;
	}

	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) != 0)
			continue;
		/*
		 * A local command must not fail because of a socket setting
		 * it would never use.
		 */
		if (!cl.socket && !commands[i].local) {
			if (kvt_socket_path_default(cl.sockbuf,
						    sizeof(cl.sockbuf)) < 0)
				return usage_err(&cl, "default socket path too "
						 "long (KVTIER_SOCKET or "
						 "XDG_RUNTIME_DIR); use -s "
						 "SOCKET");
			cl.socket = cl.sockbuf;
		}
		cl.cmd = name;
		rc = commands[i].fn(&cl, argc - a.i - 1, argv + a.i + 1);
		kvt_close(cl.c);
		return rc;
	}
	return usage_err(&cl, "unknown command '%s'", name);
}
