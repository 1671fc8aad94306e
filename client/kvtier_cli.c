/*
 * kvtier_cli.c - the kvtier command-line tool: main, the command table and
 * `kvtier --help`.
 *
 *   kvtier [-s SOCKET] ping | put | get | del | exists | match | drop |
 *                      hot | stats     (kvtier_cli_cmd.c)
 *   kvtier [-s SOCKET] bench           (the load generator: kvtier_cli_bench.c)
 *   kvtier keys                        (here: needs no daemon)
 *
 * The tool only uses the public libkvtier API, like any other client.
 * The daemon commands are table entries run by kvt_cli_run()
 * (kvtier_cli_run.c); keys and bench parse their own arguments here, with
 * the same parser and messages.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier_prefix.h"
#include "kvtier.h"
#include "kvtier_cli_int.h"

/* Tokens per block of `kvtier keys` unless --block-tokens says otherwise. */
#define CLI_BLOCK_TOKENS 16

/* ---- The commands --------------------------------------------------- */

static const struct kvt_cli_cmd cmd_keys, cmd_bench;

/* In the order `kvtier --help` lists them. */
static const struct kvt_cli_cmd *const commands[] = {
	&kvt_cli_cmd_ping,  &kvt_cli_cmd_put,	&kvt_cli_cmd_get,
	&kvt_cli_cmd_del,   &kvt_cli_cmd_exists, &kvt_cli_cmd_match,
	&kvt_cli_cmd_drop,  &kvt_cli_cmd_hot,	&kvt_cli_cmd_stats,
	&cmd_bench,	    &cmd_keys,
};

static const struct kvt_cli_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

/* ---- Help ----------------------------------------------------------- */

static void print_help(FILE *out)
{
	fprintf(out,
		"Usage: kvtier [-s SOCKET] COMMAND [ARGS...]\n"
		"\n"
		"Talks to kvtierd, the tiered KV-cache daemon.\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  kvtier %s\n", commands[i]->synopsis);
	fprintf(out,
		"\n"
		"Options:\n"
		"  -s, --socket SOCKET  the daemon's socket\n"
		"  -h, --help           this help; `kvtier COMMAND --help` for a\n"
		"                       command's\n"
		"      --version        the version\n"
		"\n");
	kvt_cli_help_common(out);
}

/* ---- keys ----------------------------------------------------------- */

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

/* Parses its own arguments: TOKENs, not KEYs, and no daemon to connect. */
static int keys_main(struct kvt_cli *cl, int argc, char **argv)
{
	static const struct kvt_cli_opt opts[] = {
		{ "--ns", 0, true, KVT_CLI_OPT_NS },
		{ "--block-tokens", 0, true, KVT_CLI_OPT_BLOCK_TOKENS },
		{ NULL, 0, false, 0 },
	};
	struct kvt_cli_argv a = { .cl = cl, .argc = argc, .argv = argv };
	const char *v, *ns = "";
	uint32_t *tokens, block = CLI_BLOCK_TOKENS;
	uint8_t (*keys)[KVT_PREFIX_KEY_SIZE] = NULL;
	size_t n = 0, nkeys;
	int o, rc;

	/* At most argc tokens; one allocation up front. */
	tokens = calloc((size_t)argc + 1, sizeof(*tokens));
	if (!tokens) {
		kvt_cli_say(cl, "out of memory");
		return KVT_CLI_FAIL;
	}
	while ((o = kvt_cli_next_opt(&a, opts, &v)) != KVT_CLI_OPT_END) {
		switch (o) {
		case KVT_CLI_OPT_ERR:
			rc = KVT_CLI_USAGE;
			goto out;
		case KVT_CLI_OPT_HELP:
			rc = kvt_cli_help_exit(&cmd_keys);
			goto out;
		case KVT_CLI_OPT_NS:
			ns = v;
			break;
		case KVT_CLI_OPT_BLOCK_TOKENS:
			if (kvt_cli_parse_u32(v, &block) < 0 || block == 0) {
				rc = kvt_cli_usage(cl, "bad --block-tokens '%s' "
						   "(1 to %u)", v, UINT32_MAX);
				goto out;
			}
			break;
		case KVT_CLI_OPT_POS:
			if (kvt_cli_parse_u32(v, &tokens[n]) < 0) {
				rc = kvt_cli_usage(cl, "bad TOKEN '%s' (a "
						   "decimal token id, 0 to %u)",
						   v, UINT32_MAX);
				goto out;
			}
			n++;
			break;
		}
	}
	if (n == 0) {
		rc = kvt_cli_usage(cl, "missing TOKEN");
		goto out;
	}
	if (kvt_cli_ns_check(cl, ns)) {
		rc = KVT_CLI_USAGE;
		goto out;
	}
	if (n / block > 0) {
		keys = calloc(n / block, sizeof(*keys));
		if (!keys) {
			kvt_cli_say(cl, "out of memory");
			rc = KVT_CLI_FAIL;
			goto out;
		}
	}
	rc = kvt_prefix_keys(ns, strlen(ns), tokens, n, block, keys, n / block,
			     &nkeys);
	if (rc < 0) {
		/* Arguments were checked above: this is a bug, not usage. */
		kvt_cli_say(cl, "%s", kvt_strerror(rc));
		rc = KVT_CLI_FAIL;
		goto out;
	}
	for (size_t i = 0; i < nkeys; i++)
		print_key_hex(keys[i]);
	rc = kvt_cli_finish_stdout(cl, KVT_CLI_OK);
out:
	free(keys);
	free(tokens);
	return rc;
}

static const struct kvt_cli_cmd cmd_keys = {
	.name = "keys",
	.synopsis = "keys [--ns NS] [--block-tokens N] TOKEN...",
	.help = "Prints the prefix key of every complete block of N tokens, "
		"one\n"
		"\"hex:\" KEY per line, ready for get, exists or put.  Each key "
		"is\n"
		"chained over every token before it (proto/PROTOCOL.md, "
		"\"Prefix\n"
		"keys\"), so every implementation computes the same keys.\n"
		"A trailing partial block gets no key.  Needs no daemon.\n"
		"\n"
		"  --ns NS              namespace hashed into every key, e.g. "
		"the\n"
		"                       model, dtype and layout (default: "
		"empty)\n"
		"  --block-tokens N     tokens per block (default: 16)\n"
		"  TOKEN                a token id, decimal, 0 to 4294967295\n",
	.main = keys_main,
	.local = true,
};

/* ---- bench ---------------------------------------------------------- */

/*
 * Parses its own arguments: the option values are kvtier_cli_bench.c's,
 * and every client thread of the load connects itself.
 */
static int bench_main(struct kvt_cli *cl, int argc, char **argv)
{
	static const struct kvt_cli_opt opts[] = {
		{ "--op", 0, true, KVT_CLI_OPT_OP },
		{ "--size", 0, true, KVT_CLI_OPT_SIZE },
		{ "--clients", 0, true, KVT_CLI_OPT_CLIENTS },
		{ "--requests", 0, true, KVT_CLI_OPT_REQUESTS },
		{ "--keys", 0, true, KVT_CLI_OPT_KEYS },
		{ "--ns", 0, true, KVT_CLI_OPT_NS },
		{ "--json", 0, false, KVT_CLI_OPT_JSON },
		{ NULL, 0, false, 0 },
	};
	struct kvt_cli_argv a = { .cl = cl, .argc = argc, .argv = argv };
	struct kvt_cli_bench_opts bo;
	const struct kvt_cli_opt *d;
	const char *v;
	char why[160];
	int o;

	kvt_cli_bench_opts_init(&bo, cl->socket);
	while ((o = kvt_cli_next_opt(&a, opts, &v)) != KVT_CLI_OPT_END) {
		switch (o) {
		case KVT_CLI_OPT_ERR:
			return KVT_CLI_USAGE;
		case KVT_CLI_OPT_HELP:
			return kvt_cli_help_exit(&cmd_bench);
		case KVT_CLI_OPT_POS:
			return kvt_cli_usage(cl, "unexpected argument '%s'", v);
		default:
			for (d = opts; d->id != o; d++)
				;
			if (kvt_cli_bench_opt(&bo, d->lng, v, why,
					      sizeof(why)) < 0)
				return kvt_cli_usage(cl, "%s", why);
			break;
		}
	}
	if (kvt_cli_ns_check(cl, bo.ns))
		return KVT_CLI_USAGE;
	return kvt_cli_bench_run(&bo);
}

static const struct kvt_cli_cmd cmd_bench = {
	.name = "bench",
	.synopsis = kvt_cli_bench_synopsis,
	.help = kvt_cli_bench_help,
	.main = bench_main,
};

/* ---- Main ----------------------------------------------------------- */

int main(int argc, char **argv)
{
	static const struct kvt_cli_opt gopts[] = {
		{ "--socket", 's', true, KVT_CLI_OPT_SOCKET },
		{ "--version", 0, false, KVT_CLI_OPT_VERSION },
		{ NULL, 0, false, 0 },
	};
	struct kvt_cli cl = { 0 };
	struct kvt_cli_argv a = { .cl = &cl, .argc = argc, .argv = argv, .i = 1,
			  .stop_at_pos = true };
	const struct kvt_cli_cmd *cmd;
	const char *v, *name;
	int o, rc;

	while ((o = kvt_cli_next_opt(&a, gopts, &v)) != KVT_CLI_OPT_END) {
		switch (o) {
		case KVT_CLI_OPT_ERR:
			return KVT_CLI_USAGE;
		case KVT_CLI_OPT_HELP:
			print_help(stdout);
			return KVT_CLI_OK;
		case KVT_CLI_OPT_VERSION:
			printf("kvtier %s\n", kvt_version());
			return KVT_CLI_OK;
		case KVT_CLI_OPT_SOCKET:
			if (!*v)
				return kvt_cli_usage(&cl, "empty socket path");
			cl.socket = v;
			break;
		}
	}
	if (a.i >= argc)
		return kvt_cli_usage(&cl, "missing COMMAND");
	name = argv[a.i];
	/* "kvtier help [COMMAND]" for those who type it. */
	if (strcmp(name, "help") == 0) {
		if (a.i + 1 < argc && (cmd = find_cmd(argv[a.i + 1])))
			return kvt_cli_help_exit(cmd);
		print_help(stdout);
		return KVT_CLI_OK;
	}

	cmd = find_cmd(name);
	if (!cmd)
		return kvt_cli_usage(&cl, "unknown command '%s'", name);
	/*
	 * A local command must not fail because of a socket setting it would
	 * never use.
	 */
	if (!cl.socket && !cmd->local) {
		if (kvt_socket_path_default(cl.sockbuf, sizeof(cl.sockbuf)) < 0)
			return kvt_cli_usage(&cl, "default socket path too long "
					     "(KVTIER_SOCKET or XDG_RUNTIME_DIR); "
					     "use -s SOCKET");
		cl.socket = cl.sockbuf;
	}
	cl.cmd = name;
	if (cmd->main)
		rc = cmd->main(&cl, argc - a.i - 1, argv + a.i + 1);
	else
		rc = kvt_cli_run(&cl, cmd, argc - a.i - 1, argv + a.i + 1);
	kvt_close(cl.c);
	return rc;
}
