/* kvt_config.c - see kvt_config.h. */
#include "kvt_config.h"
#include "kvt_spin.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "kvt_frame.h"
#include "kvt_log.h"
#include "kvt_loop.h"
#include "kvt_path.h"
#include "kvt_size.h"
#include "kvt_tm.h"
#include "kvtier_errors.h"


/*
 * One table drives both the flags and the config file so the two can never
 * disagree about what exists.
 */
enum opt_kind {
	OPT_PATH_SOCKET,
	OPT_PATH_DATA,
	OPT_SIZE,
	OPT_LEVEL,
	OPT_UINT,
	OPT_BOOL, /* a flag without value; `name = yes|no` in the file */
	OPT_MODE, /* octal permission bits */
	OPT_STR,  /* text into a char array of struct kvt_config */
	OPT_UINT0, /* like OPT_UINT, 0 allowed */
	OPT_BACKEND, /* auto, io_uring or epoll (kvt_loop.h) */
	OPT_SECONDS, /* 0 to 2^32 - 1 */
	OPT_L4_WRITE, /* evict or put */
	OPT_SECRET, /* like OPT_STR, never shown (kvt_config_value) */
};

struct opt {
	const char *name;
	enum opt_kind kind;
	size_t offset; /* into struct kvt_config, for sizes and uints */
	const char *help;
	size_t cap; /* OPT_STR: size of the char array */
};

#define STR_OPT(name, field, help)                                           \
	{ name, OPT_STR, offsetof(struct kvt_config, field), help,           \
	  sizeof(((struct kvt_config *)0)->field) }

/* The value's name in --help where the kind's would mislead. */
static const char *const arg_names[][2] = {
	{ "l4", " URL" },
	{ "l4-password", " PASSWORD" },
	{ "l4-password-file", " FILE" },
	{ "l4-write", " evict|put" },
	{ "l4-timeout", " MS" },
	{ "l4-connect-timeout", " MS" },
};

static const struct opt opts[] = {
	{ "socket", OPT_PATH_SOCKET, 0,
	  "Unix socket path (default: $KVTIER_SOCKET, else\n"
	  "\t\t\t$XDG_RUNTIME_DIR/kvtier.sock, else /tmp/kvtier-$UID.sock)", 0 },
	{ "data-dir", OPT_PATH_DATA, 0,
	  "directory for L3 data (default: $STATE_DIRECTORY, else\n"
	  "\t\t\t/var/lib/kvtier as root, else ~/.local/state/kvtier)", 0 },
	{ "l1-size", OPT_SIZE, offsetof(struct kvt_config, l1_size),
	  "L1 RAM tier capacity (default 1G)", 0 },
	{ "l2-size", OPT_SIZE, offsetof(struct kvt_config, l2_size),
	  "L2 compressed RAM tier capacity, 0 disables (default 1G)", 0 },
	{ "l3-size", OPT_SIZE, offsetof(struct kvt_config, l3_size),
	  "L3 SSD tier capacity, 0 disables (default 4G;\n\t\t\tregion files are preallocated at start)", 0 },
	{ "l2-level", OPT_UINT, offsetof(struct kvt_config, l2_level),
	  "zstd level for L2 (default 1; higher = smaller, slower)", 0 },
	{ "workers", OPT_UINT0, offsetof(struct kvt_config, workers),
	  "threads for compression, decompression and L3 I/O,\n"
	  "\t\t\t1 to 16 (default 0: one per online CPU, at most 16)", 0 },
	{ "l3-region-size", OPT_SIZE, offsetof(struct kvt_config, l3_region_size),
	  "size of each L3 region file (default 64M)", 0 },
	{ "l3-write-rate", OPT_SIZE, offsetof(struct kvt_config, l3_write_rate),
	  "L3 admission: most bytes/s written to SSD, 0 = no\n"
	  "\t\t\tlimit (default 0); blocks over budget are dropped", 0 },
	{ "max-pinned", OPT_SIZE, offsetof(struct kvt_config, max_pinned),
	  "most RAM (L1) that clients may pin at once\n"
	  "(default: half of L1)", 0 },
	{ "spill-timeout", OPT_UINT, offsetof(struct kvt_config, spill_timeout_s),
	  "seconds SIGTERM may spend moving RAM to L3 (default 30)", 0 },
	{ "no-spill", OPT_BOOL, offsetof(struct kvt_config, no_spill),
	  "on SIGTERM, drop RAM tiers instead of spilling to L3", 0 },
	{ "socket-mode", OPT_MODE, offsetof(struct kvt_config, socket_mode),
	  "permission bits of the socket file, octal (default\n"
	  "\t\t\t0600: only this user can connect)", 0 },
	STR_OPT("socket-group", socket_group,
		"group of the socket file (with socket-mode 0660)"),
	STR_OPT("allow-uid", allow_uid,
		"only these users (names or uids, comma-separated)\n"
		"\t\t\tmay connect; with allow-gid, either may match"),
	STR_OPT("allow-gid", allow_gid,
		"only members of these groups may connect"),
	STR_OPT("ns-owner", ns_owner,
		"PREFIX=USER,...: namespaces starting with PREFIX\n"
		"\t\t\tare only for USER (and root)"),
	{ "no-shm", OPT_BOOL, offsetof(struct kvt_config, no_shm),
	  "never offer the shared-memory data path; every\n"
	  "\t\t\tvalue goes through the socket", 0 },
	{ "shm-size", OPT_SIZE, offsetof(struct kvt_config, shm_size),
	  "shared block arena (memfd) size (default: L1 plus\n"
	  "\t\t\tmax(L1/4, 64M); pages are used only when touched)", 0 },
	{ "shm-prefault", OPT_BOOL, offsetof(struct kvt_config, shm_prefault),
	  "fault the whole arena in at start (in the background),\n"
	  "\t\t\tso puts never wait for page faults; RSS is the\n"
	  "\t\t\tarena size from the start", 0 },
	{ "shm-threshold", OPT_SIZE, offsetof(struct kvt_config, shm_threshold),
	  "values of at least this size move through shared\n"
	  "\t\t\tmemory for trusted clients (default 64K)", 0 },
	{ "shm-lease-max", OPT_SIZE, offsetof(struct kvt_config, shm_lease_max),
	  "arena bytes one connection may hold in leases and\n"
	  "\t\t\tPUT slots (default 256M)", 0 },
	{ "reg-max", OPT_UINT, offsetof(struct kvt_config, reg_max),
	  "regions of client memory one connection may\n"
	  "\t\t\tregister (default 64)", 0 },
	{ "reg-max-bytes", OPT_SIZE, offsetof(struct kvt_config, reg_max_bytes),
	  "bytes of client memory one connection may register\n"
	  "\t\t\t(default 1T; mapped, not allocated)", 0 },
	STR_OPT("shm-allow-uid", shm_allow_uid,
		"users (names or uids) trusted with shared memory\n"
		"\t\t\tbesides the daemon's own and root (default none)"),
	{ "max-key-size", OPT_SIZE, offsetof(struct kvt_config, max_key_size),
	  "longest key in bytes (default 1K, at most 64K)", 0 },
	{ "max-value-size", OPT_SIZE,
	  offsetof(struct kvt_config, max_value_size),
	  "largest value (default 256M, at most 4G)", 0 },
	{ "max-inflight", OPT_SIZE, offsetof(struct kvt_config, max_inflight),
	  "memory for request bodies being received, all\n"
	  "clients together, reserved as they arrive; past it\n"
	  "clients wait (default 1G)", 0 },
	{ "idle-timeout", OPT_UINT0, offsetof(struct kvt_config, idle_timeout_s),
	  "close connections idle this many seconds, 0 =\n"
	  "never (default 0)", 0 },
	{ "send-timeout", OPT_UINT0, offsetof(struct kvt_config, send_timeout_s),
	  "close clients that read none of their replies for\n"
	  "this many seconds, 0 = never (default 60)", 0 },
	{ "body-timeout", OPT_UINT0, offsetof(struct kvt_config, body_timeout_s),
	  "close clients that stop sending in the middle of a\n"
	  "request for this many seconds, 0 = never (default 10)", 0 },
	{ "log-level", OPT_LEVEL, 0, "error, warn, info or debug (default info)", 0 },
	{ "io-backend", OPT_BACKEND, offsetof(struct kvt_config, io_backend),
	  "auto, io_uring or epoll (default auto: io_uring,\n"
	  "\t\t\tor epoll and pread/pwrite with a warning if the\n"
	  "\t\t\tkernel or a sandbox refuses io_uring)", 0 },
	{ "busy-poll", OPT_UINT0, offsetof(struct kvt_config, busy_poll_us),
	  "microseconds the event loop polls for the next\n"
	  "\t\t\trequest before it sleeps, adaptive (less when\n"
	  "\t\t\tidle, none while the CPUs are oversubscribed);\n"
	  "\t\t\t0 = always sleep (default 50, at most 10000)", 0 },
	{ "max-connections", OPT_UINT,
	  offsetof(struct kvt_config, max_connections),
	  "most client connections at once (default 4096)", 0 },
	STR_OPT("l4", l4_url,
		"L4: a Redis Cluster shared by every host,\n"
		"\t\t\tredis-cluster://HOST:PORT[,HOST:PORT...] (any\n"
		"\t\t\tnodes; the rest are found); default none"),
	{ "l4-password", OPT_SECRET, offsetof(struct kvt_config, l4_password),
	  "AUTH password of the cluster's nodes (visible in\n"
	  "\t\t\tps: prefer l4-password-file)",
	  sizeof(((struct kvt_config *)0)->l4_password) },
	STR_OPT("l4-password-file", l4_password_file,
		"file whose first line is that password"),
	{ "l4-write", OPT_L4_WRITE, offsetof(struct kvt_config, l4_write),
	  "what L4 is given: evict (blocks leaving this host:\n"
	  "\t\t\tL3's victims, or L2's without L3; default) or put\n"
	  "\t\t\t(every put, so peers see it at once)", 0 },
	{ "l4-ttl", OPT_SECONDS, offsetof(struct kvt_config, l4_ttl_s),
	  "expiry of blocks in L4 in seconds, 0 = none (default\n"
	  "\t\t\t0; a block's own TTL applies if shorter)", 0 },
	{ "l4-threads", OPT_UINT, offsetof(struct kvt_config, l4_threads),
	  "threads doing L4's network I/O, 1 to 16 (default 4)", 0 },
	{ "l4-timeout", OPT_UINT0, offsetof(struct kvt_config, l4_timeout_ms),
	  "ms a cluster node may make no progress before its\n"
	  "\t\t\tcommands fail (default 0: 1000)", 0 },
	{ "l4-connect-timeout", OPT_UINT0,
	  offsetof(struct kvt_config, l4_connect_timeout_ms),
	  "ms to connect to a node (default 0: 500)", 0 },
	{ "l4-queue-size", OPT_SIZE, offsetof(struct kvt_config, l4_queue_size),
	  "blocks waiting to be written to L4 at most; more are\n"
	  "\t\t\tnot written, and counted (default 256M)", 0 },
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void default_data_dir(char *buf, size_t cap)
{
	const char *s = getenv("STATE_DIRECTORY");
	const char *home = getenv("HOME");
	const char *xdg = getenv("XDG_STATE_HOME");

	if (s && *s)
		snprintf(buf, cap, "%s", s);
	else if (geteuid() == 0)
		snprintf(buf, cap, "/var/lib/kvtier");
	else if (xdg && *xdg)
		snprintf(buf, cap, "%s/kvtier", xdg);
	else if (home && *home)
		snprintf(buf, cap, "%s/.local/state/kvtier", home);
	else
		snprintf(buf, cap, "./kvtier-data");
}

void kvt_config_defaults(struct kvt_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	if (kvt_socket_default(cfg->socket_path, sizeof(cfg->socket_path)))
		snprintf(cfg->socket_path, sizeof(cfg->socket_path),
			 "/tmp/kvtier-%u.sock", (unsigned)getuid());
	default_data_dir(cfg->data_dir, sizeof(cfg->data_dir));
	cfg->l1_size = 1ull << 30;
	cfg->l2_size = 1ull << 30;
	cfg->l3_size = 4ull << 30;
	cfg->log_level = KVT_LOG_INFO;
	cfg->max_connections = 4096;
	cfg->l3_region_size = 64ull << 20;
	cfg->l2_level = 1;
	cfg->spill_timeout_s = 30;
	cfg->socket_mode = 0600;
	cfg->shm_threshold = 64ull << 10;
	cfg->shm_lease_max = 256ull << 20;
	cfg->reg_max = 64;
	cfg->reg_max_bytes = 1ull << 40;
	cfg->max_key_size = 1024;
	cfg->max_value_size = 256ull << 20;
	cfg->max_inflight = 1ull << 30;
	cfg->send_timeout_s = 60;
	/*
	 * A body in progress holds memory (its reservation under
	 * max-inflight, and an arena block for a PUT), and a healthy client
	 * never pauses for long in the middle of one: between two reads of
	 * its body there is a send() that the kernel takes at once unless
	 * the daemon itself stopped reading, which does not count.  10 s
	 * gives a client descheduled on an overloaded host, or paused by a
	 * garbage collector, ample slack, and still hands a stalled client's
	 * memory back within seconds.  Shorter than send-timeout, whose
	 * client has its replies (bounded at 64 MiB) to lose.
	 */
	cfg->body_timeout_s = 10;
	cfg->io_backend = KVT_IO_AUTO;
	cfg->busy_poll_us = 50;
	cfg->l4_write = KVT_TM_L4_EVICT;
	cfg->l4_threads = 4;
	cfg->l4_queue_size = 256ull << 20;
}

static const char *arg_name(const struct opt *o)
{
	for (size_t i = 0; i < sizeof(arg_names) / sizeof(arg_names[0]); i++)
		if (!strcmp(arg_names[i][0], o->name))
			return arg_names[i][1];
	switch (o->kind) {
	case OPT_SIZE:
		return " SIZE";
	case OPT_LEVEL:
		return " LEVEL";
	case OPT_UINT:
	case OPT_UINT0:
		return " N";
	case OPT_PATH_DATA:
		return " DIR";
	case OPT_PATH_SOCKET:
		return " PATH";
	case OPT_MODE:
		return " MODE";
	case OPT_STR:
		return " LIST";
	case OPT_BACKEND:
		return " BACKEND";
	case OPT_SECONDS:
		return " SECONDS";
	case OPT_L4_WRITE:
		return " POLICY";
	case OPT_SECRET:
		return " SECRET";
	case OPT_BOOL:
		break;
	}
	return "";
}

/*
 * A secret's text for kvt_config_value(): "" when unset, else a
 * fingerprint, the first 8 bytes of SHA-256 of a key drawn at random once
 * per process and the secret.  Two configs compare as they should (a
 * reload sees the password change), and a log line shows nothing an
 * offline guess could be checked against.
 */
static void secret_text(const char *v, char *buf, size_t cap)
{
	static uint8_t key[16];
	static int have_key;
	uint8_t in[16 + 512], d[SHA256_DIGEST_LENGTH];
	size_t n = strlen(v);

	if (!*v) {
		buf[0] = '\0';
		return;
	}
	if (!have_key) {
		if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
			for (size_t i = 0; i < sizeof(key); i++)
				key[i] = (uint8_t)(rand() ^ (getpid() >> i));
		have_key = 1;
	}
	if (n > sizeof(in) - sizeof(key))
		n = sizeof(in) - sizeof(key);
	memcpy(in, key, sizeof(key));
	memcpy(in + sizeof(key), v, n);
	SHA256(in, sizeof(key) + n, d);
	memset(in, 0, sizeof(in));
	snprintf(buf, cap, "hidden:%02x%02x%02x%02x%02x%02x%02x%02x", d[0],
		 d[1], d[2], d[3], d[4], d[5], d[6], d[7]);
}

/* Prints "  --flag ARG" padded to a column, then help lines aligned. */
static void usage_line(FILE *f, const char *flag, const char *help)
{
	int n = fprintf(f, "  %s", flag);

	fprintf(f, "%*s", n < 26 ? 26 - n : 1, "");
	for (; *help; help++) {
		if (*help == '\t')
			continue;
		fputc(*help, f);
		if (*help == '\n')
			fprintf(f, "%26s", "");
	}
	fputc('\n', f);
}

void kvt_config_usage(FILE *f)
{
	char flag[64];

	fprintf(f, "usage: kvtierd [--config FILE] [--socket PATH] "
		   "[--data-dir DIR] [--l1-size SIZE]\n"
		   "               [--l2-size SIZE] [--l3-size SIZE] "
		   "[--log-level LEVEL] [OPTION...]\n"
		   "       kvtierd --check [--data-dir DIR]\n\n"
		   "kvtierd is the kvtier tiered KV-cache daemon. It runs in "
		   "the foreground,\nlogs to stderr and serves clients on a "
		   "Unix socket.\n\n");
	usage_line(f, "--config FILE",
		   "read settings from FILE first (flags override it)");
	usage_line(f, "--check", "verify the L3 store in the data directory "
		   "read-only\n(its own geometry; nothing is changed or "
		   "dropped), report,\nexit 0 if consistent, 1 if not, 2 if it "
		   "cannot be checked");
	for (size_t i = 0; i < NOPTS; i++) {
		snprintf(flag, sizeof(flag), "--%s%s", opts[i].name,
			 arg_name(&opts[i]));
		usage_line(f, flag, opts[i].help);
	}
	usage_line(f, "-h, --help", "show this help");
	usage_line(f, "--version", "print the version");
	fprintf(f, "\nSIZE takes K, M, G or T suffixes (powers of 1024), e.g. "
		   "512M or 4G.\nEvery option can also be set in the config "
		   "file as `name = value`.\n");
}

size_t kvt_config_count(void)
{
	return NOPTS;
}

const char *kvt_config_name(size_t i)
{
	return i < NOPTS ? opts[i].name : NULL;
}

void kvt_config_value(const struct kvt_config *cfg, size_t i, char *buf,
		      size_t cap)
{
	const struct opt *o;
	const char *p;

	if (cap == 0)
		return;
	buf[0] = '\0';
	if (i >= NOPTS)
		return;
	o = &opts[i];
	p = (const char *)cfg + o->offset;
	switch (o->kind) {
	case OPT_PATH_SOCKET:
		snprintf(buf, cap, "%s", cfg->socket_path);
		break;
	case OPT_PATH_DATA:
		snprintf(buf, cap, "%s", cfg->data_dir);
		break;
	case OPT_SIZE:
		snprintf(buf, cap, "%llu",
			 (unsigned long long)*(const uint64_t *)(const void *)p);
		break;
	case OPT_LEVEL:
		snprintf(buf, cap, "%s", kvt_log_level_name(cfg->log_level));
		break;
	case OPT_UINT:
	case OPT_UINT0:
		snprintf(buf, cap, "%u", *(const unsigned *)(const void *)p);
		break;
	case OPT_BOOL:
		snprintf(buf, cap, "%s",
			 *(const int *)(const void *)p ? "yes" : "no");
		break;
	case OPT_MODE:
		snprintf(buf, cap, "%04o", *(const unsigned *)(const void *)p);
		break;
	case OPT_STR:
		snprintf(buf, cap, "%s", p);
		break;
	case OPT_BACKEND:
		snprintf(buf, cap, "%s",
			 kvt_io_backend_name(*(const int *)(const void *)p));
		break;
	case OPT_SECONDS:
		snprintf(buf, cap, "%u", *(const unsigned *)(const void *)p);
		break;
	case OPT_L4_WRITE:
		snprintf(buf, cap, "%s",
			 *(const int *)(const void *)p == KVT_TM_L4_PUT ? "put"
									: "evict");
		break;
	case OPT_SECRET:
		secret_text(p, buf, cap);
		break;
	}
}

void kvt_config_copy(struct kvt_config *dst, const struct kvt_config *src,
		     size_t i)
{
	const struct opt *o;
	size_t n;

	if (i >= NOPTS)
		return;
	o = &opts[i];
	switch (o->kind) {
	case OPT_PATH_SOCKET:
		memcpy(dst->socket_path, src->socket_path, sizeof(dst->socket_path));
		return;
	case OPT_PATH_DATA:
		memcpy(dst->data_dir, src->data_dir, sizeof(dst->data_dir));
		return;
	case OPT_LEVEL:
		dst->log_level = src->log_level;
		return;
	case OPT_SIZE:
		n = sizeof(uint64_t);
		break;
	case OPT_UINT:
	case OPT_UINT0:
	case OPT_MODE:
	case OPT_SECONDS:
		n = sizeof(unsigned);
		break;
	case OPT_BOOL:
	case OPT_BACKEND:
	case OPT_L4_WRITE:
		n = sizeof(int);
		break;
	case OPT_STR:
	case OPT_SECRET:
		n = o->cap;
		break;
	default:
		return;
	}
	memcpy((char *)dst + o->offset, (const char *)src + o->offset, n);
}

static const struct opt *find_opt(const char *name, size_t len)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (strlen(opts[i].name) == len &&
		    memcmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

/* Applies one option; on error writes a reason into err and returns -1. */
static int apply(struct kvt_config *cfg, const struct opt *o, const char *val,
		 char *err, size_t errcap)
{
	uint64_t n;
	int rc;

	switch (o->kind) {
	case OPT_PATH_SOCKET:
		if (!*val || strlen(val) >= sizeof(cfg->socket_path)) {
			snprintf(err, errcap,
				 "socket path must be 1 to %zu bytes",
				 sizeof(cfg->socket_path) - 1);
			return -1;
		}
		snprintf(cfg->socket_path, sizeof(cfg->socket_path), "%s", val);
		return 0;
	case OPT_PATH_DATA:
		if (!*val || strlen(val) >= sizeof(cfg->data_dir)) {
			snprintf(err, errcap, "bad data directory");
			return -1;
		}
		snprintf(cfg->data_dir, sizeof(cfg->data_dir), "%s", val);
		return 0;
	case OPT_SIZE:
		rc = kvt_size_parse(val, &n);
		if (rc) {
			snprintf(err, errcap, "bad size '%s' for %s: %s", val,
				 o->name, kvt_strerror(rc));
			return -1;
		}
		*(uint64_t *)((char *)cfg + o->offset) = n;
		return 0;
	case OPT_LEVEL:
		rc = kvt_log_level_parse(val);
		if (rc < 0) {
			snprintf(err, errcap,
				 "bad log level '%s' (error, warn, info, debug)",
				 val);
			return -1;
		}
		cfg->log_level = rc;
		return 0;
	case OPT_MODE: {
		char *end;
		unsigned long m = strtoul(val, &end, 8);
		if (!*val || *end || m > 0777) {
			snprintf(err, errcap, "bad mode '%s' (octal, e.g. 0660)",
				 val);
			return -1;
		}
		*(unsigned *)((char *)cfg + o->offset) = (unsigned)m;
		return 0;
	}
	case OPT_BACKEND:
		rc = kvt_io_backend_parse(val);
		if (rc < 0) {
			snprintf(err, errcap, "bad io backend '%s' (auto, "
				 "io_uring or epoll)", val);
			return -1;
		}
		*(int *)((char *)cfg + o->offset) = rc;
		return 0;
	case OPT_L4_WRITE:
		if (!strcmp(val, "evict"))
			rc = KVT_TM_L4_EVICT;
		else if (!strcmp(val, "put"))
			rc = KVT_TM_L4_PUT;
		else {
			snprintf(err, errcap, "bad L4 write policy '%s' (evict "
				 "or put)", val);
			return -1;
		}
		*(int *)((char *)cfg + o->offset) = rc;
		return 0;
	case OPT_SECONDS: {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(val, &end, 10);
		if (errno || end == val || *end || val[0] == '-' ||
		    v > 0xffffffffull) {
			snprintf(err, errcap, "bad number of seconds '%s' for "
				 "%s (0 to 4294967295)", val, o->name);
			return -1;
		}
		*(unsigned *)((char *)cfg + o->offset) = (unsigned)v;
		return 0;
	}
	case OPT_STR:
	case OPT_SECRET:
		if (strlen(val) >= o->cap) {
			snprintf(err, errcap, "value for %s is longer than %zu "
				 "bytes", o->name, o->cap - 1);
			return -1;
		}
		memcpy((char *)cfg + o->offset, val, strlen(val) + 1);
		return 0;
	case OPT_BOOL:
		if (!strcmp(val, "yes") || !strcmp(val, "true") ||
		    !strcmp(val, "1")) {
			*(int *)((char *)cfg + o->offset) = 1;
		} else if (!strcmp(val, "no") || !strcmp(val, "false") ||
			   !strcmp(val, "0")) {
			*(int *)((char *)cfg + o->offset) = 0;
		} else {
			snprintf(err, errcap, "bad value '%s' for %s (yes or no)",
				 val, o->name);
			return -1;
		}
		return 0;
	case OPT_UINT:
	case OPT_UINT0: {
		char *end;
		errno = 0;
		unsigned long v = strtoul(val, &end, 10);
		if (errno || end == val || *end ||
		    (v == 0 && o->kind == OPT_UINT) || v > 1000000 ||
		    val[0] == '-') {
			snprintf(err, errcap,
				 "bad number '%s' for %s (1 to 1000000)", val,
				 o->name);
			return -1;
		}
		*(unsigned *)((char *)cfg + o->offset) = (unsigned)v;
		return 0;
	}
	}
	return -1;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int load_file(struct kvt_config *cfg, const char *path)
{
	char line[PATH_MAX + 128], err[256];
	unsigned lineno = 0;
	FILE *f = fopen(path, "r");

	if (!f) {
		fprintf(stderr, "kvtierd: cannot open config %s: %s\n", path,
			strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s, *eq, *name, *val;
		const struct opt *o;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			fprintf(stderr, "kvtierd: %s:%u: line too long\n", path,
				lineno);
			goto fail;
		}
		s = line;
		if ((eq = strchr(s, '#')))
			*eq = '\0';
		s = trim(s);
		if (!*s)
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			fprintf(stderr, "kvtierd: %s:%u: expected 'name = value'\n",
				path, lineno);
			goto fail;
		}
		*eq = '\0';
		name = trim(s);
		val = trim(eq + 1);
		o = find_opt(name, strlen(name));
		if (!o) {
			fprintf(stderr, "kvtierd: %s:%u: unknown setting '%s'\n",
				path, lineno, name);
			goto fail;
		}
		if (apply(cfg, o, val, err, sizeof(err))) {
			fprintf(stderr, "kvtierd: %s:%u: %s\n", path, lineno,
				err);
			goto fail;
		}
	}
	/* A directory opens, and then every read fails: say so. */
	if (ferror(f)) {
		fprintf(stderr, "kvtierd: cannot read config %s: %s\n", path,
			strerror(errno));
		goto fail;
	}
	fclose(f);
	return 0;
fail:
	fclose(f);
	return -1;
}

/* Splits "--name=value" or "--name value"; returns the value or NULL. */
static const char *flag_value(int argc, char **argv, int *i, size_t *namelen)
{
	const char *a = argv[*i] + 2;
	const char *eq = strchr(a, '=');

	if (eq) {
		*namelen = (size_t)(eq - a);
		return eq + 1;
	}
	*namelen = strlen(a);
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

int kvt_config_from_args(struct kvt_config *cfg, int argc, char **argv)
{
	char err[256];

	/* First pass: --help, --version and --config, which come first. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			kvt_config_usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--version")) {
			printf("kvtierd %s\n", KVT_VERSION_STRING);
			return 1;
		}
		if (!strncmp(a, "--config", 8) && (a[8] == '\0' || a[8] == '=')) {
			size_t nl;
			const char *v = flag_value(argc, argv, &i, &nl);
			if (!v || !*v) {
				fprintf(stderr, "kvtierd: --config needs a FILE\n");
				return -1;
			}
			snprintf(cfg->config_path, sizeof(cfg->config_path),
				 "%s", v);
		}
	}
	if (cfg->config_path[0] && load_file(cfg, cfg->config_path))
		return -1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		const struct opt *o;
		size_t nl;

		if (!strcmp(a, "--check")) {
			cfg->check = 1;
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "kvtierd: unexpected argument '%s' "
					"(see --help)\n", a);
			return -1;
		}
		if (!strchr(a, '=')) {
			o = find_opt(a + 2, strlen(a + 2));
			if (o && o->kind == OPT_BOOL) {
				*(int *)((char *)cfg + o->offset) = 1;
				continue;
			}
		}
		v = flag_value(argc, argv, &i, &nl);
		if (nl == 6 && !strncmp(a + 2, "config", 6))
			continue;
		o = find_opt(a + 2, nl);
		if (!o) {
			fprintf(stderr, "kvtierd: unknown option '%.*s' "
					"(see --help)\n", (int)nl + 2, a);
			return -1;
		}
		if (!v) {
			fprintf(stderr, "kvtierd: --%s needs a value\n", o->name);
			return -1;
		}
		if (apply(cfg, o, v, err, sizeof(err))) {
			fprintf(stderr, "kvtierd: --%s: %s\n", o->name, err);
			return -1;
		}
	}
	if (cfg->l1_size == 0) {
		fprintf(stderr, "kvtierd: --l1-size must be greater than 0\n");
		return -1;
	}
	if (cfg->max_key_size < 1 || cfg->max_key_size > 65535) {
		fprintf(stderr, "kvtierd: --max-key-size must be 1 to 65535\n");
		return -1;
	}
	if (cfg->max_value_size < 1 ||
	    cfg->max_value_size > 0xffffffffull - 65536 - 512) {
		fprintf(stderr, "kvtierd: --max-value-size must be 1 byte to "
				"4G minus 64K\n");
		return -1;
	}
	if (cfg->busy_poll_us > KVT_SPIN_MAX_US) {
		fprintf(stderr, "kvtierd: --busy-poll must be 0 to %u "
				"microseconds\n", KVT_SPIN_MAX_US);
		return -1;
	}
	if (cfg->workers > KVT_TM_WORKERS_MAX) {
		fprintf(stderr, "kvtierd: --workers must be 1 to %d (0: one "
				"per online CPU)\n", KVT_TM_WORKERS_MAX);
		return -1;
	}
	if (cfg->max_inflight < (1u << 20)) {
		fprintf(stderr, "kvtierd: --max-inflight must be at least 1M\n");
		return -1;
	}
	if (cfg->l4_threads > KVT_TM_L4_THREADS_MAX) {
		fprintf(stderr, "kvtierd: --l4-threads must be 1 to %d\n",
			KVT_TM_L4_THREADS_MAX);
		return -1;
	}
	/* Both a password and its file are refused when L4 opens (a reload
	 * only names L4's settings, so it need not refuse them). */
	return 0;
}
