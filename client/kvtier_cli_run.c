/*
 * kvtier_cli_run.c - running one kvtier command (kvtier_cli_int.h): the
 * skeleton that the daemon commands run on (parse the command line, check
 * and decode it, prepare, connect, run), the option parser under it, the
 * argument values, and the messages and exit statuses of failures.
 *
 * Arguments are checked completely before connecting, so that a usage
 * error (exit 2) never has side effects.  Every failure prints exactly one
 * line on stderr, "kvtier: COMMAND: what happened".
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_frame.h"
#include "kvtier.h"
#include "kvtier_cli_int.h"

/* ---- Messages ------------------------------------------------------- */

void kvt_cli_say(const struct kvt_cli *cl, const char *fmt, ...)
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

int kvt_cli_usage(const struct kvt_cli *cl, const char *fmt, ...)
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
 * How a key appears in messages: as typed, but cut short, since a key may
 * be a kilobyte long and a message should stay one readable line.
 */
#define CLI_KEY_SHOWN 48
static int key_shown_len(const struct kvt_cli_key *k)
{
	return strlen(k->arg) > CLI_KEY_SHOWN ? CLI_KEY_SHOWN
					      : (int)strlen(k->arg);
}

static const char *key_ellipsis(const struct kvt_cli_key *k)
{
	return strlen(k->arg) > CLI_KEY_SHOWN ? "..." : "";
}

int kvt_cli_request_failed(const struct kvt_cli *cl,
			   const struct kvt_cli_key *k, int rc)
{
	const char *msg = kvt_client_errmsg(cl->c);

	if (!*msg)
		msg = kvt_strerror(rc);
	if (k)
		kvt_cli_say(cl, "%.*s%s: %s", key_shown_len(k), k->arg,
			    key_ellipsis(k), msg);
	else
		kvt_cli_say(cl, "%s", msg);
	return rc == KVT_EINVAL ? KVT_CLI_USAGE : KVT_CLI_FAIL;
}

void kvt_cli_not_found(const struct kvt_cli *cl, const struct kvt_cli_key *k)
{
	kvt_cli_say(cl, "%.*s%s: not found", key_shown_len(k), k->arg,
		    key_ellipsis(k));
}

int kvt_cli_finish_stdout(const struct kvt_cli *cl, int status)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		kvt_cli_say(cl, "cannot write to stdout: %s", strerror(errno));
		return status == KVT_CLI_OK ? KVT_CLI_FAIL : status;
	}
	return status;
}

/* ---- Help ----------------------------------------------------------- */

void kvt_cli_help_common(FILE *out)
{
	char def[KVT_CLI_PATH_MAX];

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

int kvt_cli_help_exit(const struct kvt_cli_cmd *cmd)
{
	printf("Usage: kvtier [-s SOCKET] %s\n\n%s\n", cmd->synopsis,
	       cmd->help);
	kvt_cli_help_common(stdout);
	return KVT_CLI_OK;
}

/* ---- Option parsing ------------------------------------------------- */


int kvt_cli_next_opt(struct kvt_cli_argv *a, const struct kvt_cli_opt *defs,
		     const char **val)
{
	const struct kvt_cli_opt *d;
	const char *s, *eq;
	size_t n;

	*val = NULL;
	for (;;) {
		if (a->i >= a->argc)
			return KVT_CLI_OPT_END;
		s = a->argv[a->i];
		if (a->only_pos || s[0] != '-' || s[1] == '\0') {
			if (a->stop_at_pos)
				return KVT_CLI_OPT_END;
			a->i++;
			*val = s;
			return KVT_CLI_OPT_POS;
		}
		a->i++;
		if (strcmp(s, "--") != 0)
			break;
		a->only_pos = true;
	}
	if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0)
		return KVT_CLI_OPT_HELP;

	if (s[1] == '-') {
		eq = strchr(s, '=');
		n = eq ? (size_t)(eq - s) : strlen(s);
		for (d = defs; d->lng; d++)
			if (strlen(d->lng) == n && strncmp(d->lng, s, n) == 0)
				break;
		if (!d->lng) {
			kvt_cli_usage(a->cl, "unknown option '%.*s'", (int)n, s);
			return KVT_CLI_OPT_ERR;
		}
		if (!d->has_arg) {
			if (eq) {
				kvt_cli_usage(a->cl, "option '%s' takes no "
					      "value", d->lng);
				return KVT_CLI_OPT_ERR;
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
			kvt_cli_usage(a->cl, "unknown option '%s'", s);
			return KVT_CLI_OPT_ERR;
		}
		if (!d->has_arg) {
			if (s[2]) {
				kvt_cli_usage(a->cl, "unknown option '%s'", s);
				return KVT_CLI_OPT_ERR;
			}
			return d->id;
		}
		if (s[2]) {
			*val = s + 2;
			return d->id;
		}
	}
	if (a->i >= a->argc) {
		kvt_cli_usage(a->cl, "option '%s' needs a value", s);
		return KVT_CLI_OPT_ERR;
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

/* Decodes KEY: text, or hex after "hex:". Returns 0 or an exit status. */
static int key_parse(const struct kvt_cli *cl, const char *arg,
		     struct kvt_cli_key *k)
{
	const char *h;
	size_t n;

	memset(k, 0, sizeof(*k));
	k->arg = arg;
	if (strncmp(arg, "hex:", 4) != 0) {
		if (!*arg)
			return kvt_cli_usage(cl, "empty KEY");
		k->data = arg;
		k->len = strlen(arg);
		return 0;
	}
	h = arg + 4;
	n = strlen(h);
	if (n == 0)
		return kvt_cli_usage(cl, "empty hex KEY '%s'", arg);
	if (n % 2)
		return kvt_cli_usage(cl, "hex KEY '%s' has an odd number of "
				     "digits", arg);
	k->owned = malloc(n / 2);
	if (!k->owned) {
		kvt_cli_say(cl, "out of memory");
		return KVT_CLI_FAIL;
	}
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_digit(h[2 * i]), lo = hex_digit(h[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(k->owned);
			k->owned = NULL;
			return kvt_cli_usage(cl, "bad hex KEY '%s'", arg);
		}
		k->owned[i] = (uint8_t)(hi << 4 | lo);
	}
	k->data = k->owned;
	k->len = n / 2;
	return 0;
}

int kvt_cli_ns_check(const struct kvt_cli *cl, const char *ns)
{
	if (strlen(ns) > KVT_NS_MAX)
		return kvt_cli_usage(cl, "namespace longer than %d bytes",
				     KVT_NS_MAX);
	return 0;
}

int kvt_cli_parse_u32(const char *s, uint32_t *out)
{
	uint64_t v;

	if (kvt_load_parse_count(s, 0, UINT32_MAX, &v) < 0)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* ---- The skeleton --------------------------------------------------- */

static int cli_connect(struct kvt_cli *cl)
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
		kvt_cli_say(cl, "daemon unreachable at %s: %s", cl->socket,
			    kvt_strerror(rc));
	else
		kvt_cli_say(cl, "%s", kvt_client_errmsg(NULL));
	return KVT_CLI_FAIL;
}

/*
 * A positional argument v of cmd; *keyarg keeps a single KEY undecoded
 * until the namespace has been checked.  Returns 0 or an exit status.
 */
static int take_pos(const struct kvt_cli *cl, const struct kvt_cli_cmd *cmd,
		    struct kvt_cli_args *a, const char **keyarg,
		    const char *v)
{
	int rc;

	switch (cmd->pos) {
	case KVT_CLI_POS_KEYS:
		rc = key_parse(cl, v, &a->keys[a->nkeys]);
		if (rc)
			return rc;
		a->nkeys++;
		return 0;
	case KVT_CLI_POS_KEY_FILE:
		if (*keyarg && !a->file) {
			a->file = v;
			return 0;
		}
		/* fall through */
	case KVT_CLI_POS_KEY:
		if (*keyarg)
			break;
		*keyarg = v;
		return 0;
	case KVT_CLI_POS_NONE:
		break;
	}
	return kvt_cli_usage(cl, "unexpected argument '%s'", v);
}

static void args_free(struct kvt_cli_args *a)
{
	free(a->key.owned);
	for (int i = 0; i < a->nkeys; i++)
		free(a->keys[i].owned);
	free(a->keys);
	free(a->val);
	free(a->key_ptrs);
	free(a->key_lens);
}

int kvt_cli_run(struct kvt_cli *cl, const struct kvt_cli_cmd *cmd, int argc,
		char **argv)
{
	struct kvt_cli_argv p = { .cl = cl, .argc = argc, .argv = argv };
	struct kvt_cli_args a = { .ns = cmd->ns_required ? NULL : "" };
	const char *v, *keyarg = NULL;
	int o, rc = KVT_CLI_OK;

	if (cmd->pos == KVT_CLI_POS_KEYS) {
		/* At most argc keys; one allocation up front. */
		a.keys = calloc((size_t)argc + 1, sizeof(*a.keys));
		if (!a.keys) {
			kvt_cli_say(cl, "out of memory");
			return KVT_CLI_FAIL;
		}
	}
	while ((o = kvt_cli_next_opt(&p, cmd->opts, &v)) != KVT_CLI_OPT_END) {
		switch (o) {
		case KVT_CLI_OPT_ERR:
			rc = KVT_CLI_USAGE;
			goto out;
		case KVT_CLI_OPT_HELP:
			rc = kvt_cli_help_exit(cmd);
			goto out;
		case KVT_CLI_OPT_NS:
			a.ns = v;
			break;
		case KVT_CLI_OPT_POS:
			rc = take_pos(cl, cmd, &a, &keyarg, v);
			break;
		default:
			rc = cmd->opt(cl, &a, (enum kvt_cli_opt_id)o, v);
			break;
		}
		if (rc)
			goto out;
	}
	if (cmd->pos != KVT_CLI_POS_NONE && !keyarg && a.nkeys == 0) {
		rc = kvt_cli_usage(cl, "missing KEY");
		goto out;
	}
	if (!a.ns) {
		rc = kvt_cli_usage(cl, "missing --ns NS");
		goto out;
	}
	if (kvt_cli_ns_check(cl, a.ns)) {
		rc = KVT_CLI_USAGE;
		goto out;
	}
	if (keyarg) {
		rc = key_parse(cl, keyarg, &a.key);
		if (rc)
			goto out;
	}
	if (cmd->prepare) {
		rc = cmd->prepare(cl, &a);
		if (rc)
			goto out;
	}
	rc = cli_connect(cl);
	if (rc)
		goto out;
	rc = cmd->run(cl, &a);
out:
	args_free(&a);
	return rc;
}

