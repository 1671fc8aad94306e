/*
 * kvt_server.c - the server of kvtierd: listening socket, event loop
 * (accept, signals, the tier manager's completions, the housekeeping
 * timer), reload and graceful stop.  Connections are kvt_conn.c's; this
 * file opens them, hands them their loop completions and closes them.
 *
 * The loop runs on io_uring, or on epoll where io_uring is refused
 * (kvt_loop.h); the handlers here see the same completions either way.
 * Every operation carries its owner and kind in user_data (kvt_ud(),
 * kvt_conn.h).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kvt_clock.h"
#include "kvt_conn.h"
#include "kvt_lease.h"
#include "kvt_log.h"
#include "kvt_loop.h"
#include "kvt_notify.h"
#include "kvt_request.h"
#include "kvt_server.h"

/* The server's own loop operations (a connection's are KVT_UD_RECV/SEND). */
enum op_kind {
	OP_ACCEPT = KVT_UD_SERVER,
	OP_SIGNAL,
	OP_CANCEL,
	OP_TM, /* the tier manager's eventfd: worker results waiting */
	OP_TIMER, /* housekeeping, once a second */
};
_Static_assert(OP_TIMER <= KVT_UD_MASK, "op kinds fit in user_data's low bits");

/* Queue depth: every connection has at most a recv and a send in flight. */
#define RING_ENTRIES 4096
/* How long a graceful stop waits for replies to drain. */
#define STOP_GRACE_NS (5ull * 1000000000ull)

struct kvt_server {
	/* What connections and request handlers share; ctx.loop is owned. */
	struct kvt_conn_ctx ctx;
	struct kvt_lease_pool shm; /* ctx.shm */
	/* The command line, re-read with the config file on SIGHUP. */
	int argc;
	char **argv;
	bool activated; /* the socket came from systemd (LISTEN_FDS) */
	int listen_fd;
	int signal_fd;
	/* Loop operations of the server's own, and their buffers. */
	bool accept_armed;
	bool signal_armed;
	uint64_t tm_counter;
	struct signalfd_siginfo si;
	uint64_t stop_deadline; /* a graceful stop closes everything then */
};

/* ---- listening socket ----------------------------------------------- */

/*
 * Is a daemon serving path?  Connecting is not proof: after kill -9 the
 * kernel tears a dead process's io_uring down asynchronously, and until
 * then its listening socket still accepts.  Only an answer to a PING is.
 * Returns 1 live, 0 stale, or -errno when the socket cannot be probed.
 */
static int probe_live(const struct sockaddr_un *sa)
{
	uint8_t frame[KVT_HDR_SIZE];
	struct kvt_frame_header h = { .version = KVT_PROTO_VERSION,
				      .opcode = KVT_OP_PING,
				      .request_id = 1 };
	struct kvt_limits lim;
	struct pollfd pfd;
	int fd, rc;

	kvt_limits_default(&lim);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		rc = errno;
		close(fd);
		return rc == ECONNREFUSED ? 0 : -rc;
	}
	kvt_frame_header_encode(frame, &h);
	rc = 0;
	if (send(fd, frame, sizeof(frame), MSG_NOSIGNAL) == (ssize_t)sizeof(frame)) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		/* A live daemon's loop never blocks, so 2 s is generous. */
		if (poll(&pfd, 1, 2000) == 1 &&
		    recv(fd, frame, sizeof(frame), MSG_WAITALL) ==
			    (ssize_t)sizeof(frame) &&
		    kvt_frame_header_decode(frame, sizeof(frame), &lim, &h) == 0)
			rc = 1;
	}
	close(fd);
	return rc;
}

/*
 * Binds the Unix socket.  A socket file left by a dead daemon is replaced;
 * one a live daemon answers on is never stolen, and a path that is not a
 * socket is never deleted.
 */
static int listen_unix(const char *path, int backlog, unsigned mode,
		       const struct kvt_access *acc)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		kvt_log(KVT_LOG_ERROR, "event=listen_failed socket=%s "
				       "error=\"path too long\"", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			kvt_log(KVT_LOG_ERROR,
				"event=listen_failed socket=%s error=\"path "
				"exists and is not a socket; refusing to "
				"remove it\"", path);
			return -EEXIST;
		}
		rc = probe_live(&sa);
		if (rc == 1) {
			kvt_log(KVT_LOG_ERROR,
				"event=listen_failed socket=%s error=\"another "
				"kvtierd is already serving this socket\"",
				path);
			return -EADDRINUSE;
		}
		if (rc < 0) {
			kvt_log(KVT_LOG_ERROR,
				"event=listen_failed socket=%s error=\"cannot "
				"probe existing socket: %s\"", path,
				strerror(-rc));
			return rc;
		}
		kvt_log(KVT_LOG_WARN, "event=stale_socket_removed socket=%s",
			path);
		if (unlink(path) && errno != ENOENT)
			return -errno;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Create the file 0600 from the start: no window where others can
	 * connect before a chmod. */
	old = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc) {
		/* Most often the folder: missing, or not ours to write. */
		int err = errno;
		const char *slash = strrchr(path, '/');
		int dlen = slash ? (slash == path ? 1 : (int)(slash - path)) : 1;

		kvt_log(KVT_LOG_ERROR, "event=listen_failed socket=%s "
			"dir=%.*s error=\"cannot create the socket file: %s\"",
			path, dlen, slash ? path : ".", strerror(err));
		close(fd);
		return -err;
	}
	/* Group first, then mode: never a moment with the wrong group. */
	const char *step = NULL;
	if (acc->has_group && chown(path, (uid_t)-1, acc->socket_gid))
		step = "cannot set its group (socket-group)";
	else if (chmod(path, mode))
		step = "cannot set its mode (socket-mode)";
	else if (listen(fd, backlog))
		step = "cannot listen";
	if (step) {
		int err = errno;
		kvt_log(KVT_LOG_ERROR, "event=listen_failed socket=%s "
			"error=\"%s: %s\"", path, step, strerror(err));
		close(fd);
		unlink(path);
		return -err;
	}
	return fd;
}

/* ---- accept --------------------------------------------------------- */

/*
 * Refuses a new client with a reply it can show (request id 0), then
 * closes.  A fresh socket's buffer always has room, so this never blocks.
 */
static void refuse(int fd, int status, const char *msg)
{
	uint8_t buf[KVT_HDR_SIZE + KVT_ERRMSG_MAX];
	size_t n = strlen(msg) < KVT_ERRMSG_MAX ? strlen(msg) : KVT_ERRMSG_MAX;
	struct kvt_frame_header h = {
		.version = KVT_PROTO_VERSION,
		.opcode = KVT_OP_HELLO,
		.flags = KVT_FLAG_REPLY,
		.status = (uint32_t)-status,
		.body_len = (uint32_t)n,
	};

	kvt_frame_header_encode(buf, &h);
	memcpy(buf + KVT_HDR_SIZE, msg, n);
	if (send(fd, buf, KVT_HDR_SIZE + n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		kvt_log(KVT_LOG_DEBUG, "event=refuse_send_failed");
	close(fd);
}

/*
 * May the peer on fd, with uid and gid, use the daemon under the
 * allow-lists acc?  Its supplementary groups count too: membership is what
 * admins grant.
 */
static bool peer_ok(const struct kvt_access *acc, int fd, uid_t uid, gid_t gid)
{
	gid_t groups[256];
	socklen_t glen = sizeof(groups);
	size_t ng = 0;

	if (!kvt_access_has_peer_lists(acc))
		return true;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
		ng = glen / sizeof(gid_t);
	return kvt_access_peer_ok(acc, uid, gid, groups, ng);
}

/* Checks the peer's credentials against the allow-lists. */
static bool peer_allowed(struct kvt_server *s, int fd, struct ucred *cr)
{
	socklen_t len = sizeof(*cr);
	char msg[160];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cr, &len)) {
		kvt_log(KVT_LOG_WARN, "event=peercred_failed error=\"%s\"",
			strerror(errno));
		refuse(fd, KVT_EDENIED, "cannot read peer credentials");
		s->ctx.st.connections_denied++;
		return false;
	}
	if (peer_ok(&s->ctx.acc, fd, cr->uid, cr->gid))
		return true;
	snprintf(msg, sizeof(msg), "uid %u (gid %u) is not allowed to use "
		 "this kvtierd (see allow-uid/allow-gid)", (unsigned)cr->uid,
		 (unsigned)cr->gid);
	refuse(fd, KVT_EDENIED, msg);
	s->ctx.st.connections_denied++;
	kvt_log(KVT_LOG_WARN, "event=connection_denied uid=%u gid=%u pid=%d",
		(unsigned)cr->uid, (unsigned)cr->gid, (int)cr->pid);
	return false;
}

/* ---- housekeeping --------------------------------------------------- */

/*
 * At the connection limit, idle connections must not lock new clients
 * out: close the one idle the longest, if idle for 5 s at least (a worker
 * between requests is not idle).  Returns true if one was closed.
 */
static bool evict_idle(struct kvt_server *s)
{
	uint64_t now = kvt_clock_ns(), oldest = UINT64_MAX;
	struct kvt_conn *victim = NULL;

	for (struct kvt_conn *c = s->ctx.conns; c; c = c->next)
		if (kvt_conn_idle(c) && c->last_active_ns < oldest) {
			oldest = c->last_active_ns;
			victim = c;
		}
	if (!victim || now - oldest < 5000000000ull)
		return false;
	s->ctx.st.idle_evicted++;
	kvt_log(KVT_LOG_WARN, "event=idle_evicted conn=%llu idle_s=%llu "
		"reason=max_connections", (unsigned long long)victim->id,
		(unsigned long long)((now - oldest) / 1000000000ull));
	/*
	 * Its slot is the new client's: the count may exceed the limit by
	 * one for the moment its closing takes to complete.
	 */
	kvt_conn_close(victim);
	return true;
}

/*
 * Once a second: close connections idle past idle_timeout, clients that
 * stopped sending in the middle of a request for body_timeout (a body in
 * progress holds memory others wait for), and clients that have left
 * replies unread past send_timeout (a stuck reader must not pin reply
 * memory forever).  The settings are read here each time, so a reload
 * changes them at once.
 */
static void housekeeping(struct kvt_server *s)
{
	uint64_t now = kvt_clock_ns();
	uint64_t idle = (uint64_t)s->ctx.cfg->idle_timeout_s * 1000000000ull;
	uint64_t slow = (uint64_t)s->ctx.cfg->send_timeout_s * 1000000000ull;
	uint64_t body = (uint64_t)s->ctx.cfg->body_timeout_s * 1000000000ull;
	uint64_t stall;
	size_t have, want;
	bool header;

	for (struct kvt_conn *c = s->ctx.conns, *next; c; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		stall = kvt_conn_rx_stall_ns(c, now, &header, &have, &want);
		if (body && stall > body) {
			s->ctx.st.body_timeouts++;
			kvt_log(KVT_LOG_WARN, "event=body_timeout conn=%llu "
				"uid=%u part=%s received=%zu expected=%zu "
				"waited_s=%llu", (unsigned long long)c->id,
				(unsigned)c->uid, header ? "header" : "body",
				have, want,
				(unsigned long long)(stall / 1000000000ull));
			kvt_conn_close(c);
			continue;
		}
		if (idle && kvt_conn_idle(c) && now - c->last_active_ns > idle) {
			s->ctx.st.idle_closed++;
			kvt_log(KVT_LOG_INFO, "event=idle_closed conn=%llu",
				(unsigned long long)c->id);
			kvt_conn_close(c);
			continue;
		}
		stall = kvt_conn_send_stall_ns(c, now);
		if (slow && stall > slow) {
			s->ctx.st.slow_closed++;
			kvt_log(KVT_LOG_WARN, "event=slow_client_closed conn=%llu "
				"unread_bytes=%zu", (unsigned long long)c->id,
				c->out_bytes);
			kvt_conn_close(c);
		}
	}
}

static void arm_timer(struct kvt_server *s)
{
	kvt_loop_timeout(s->ctx.loop, 1000, kvt_ud(NULL, OP_TIMER));
}

static void on_accept(struct kvt_server *s, int res, unsigned flags)
{
	struct kvt_conn *c;

	if (!(flags & KVT_LOOP_MORE))
		s->accept_armed = false;
	if (res < 0) {
		if (res != -ECANCELED && !s->ctx.stopping)
			kvt_log(KVT_LOG_WARN, "event=accept_failed error=\"%s\"",
				strerror(-res));
		return;
	}
	if (s->ctx.stopping) {
		close(res);
		return;
	}
	if (s->ctx.nconns >= s->ctx.cfg->max_connections && evict_idle(s))
		; /* an idle connection made room */
	else if (s->ctx.nconns >= s->ctx.cfg->max_connections) {
		refuse(res, KVT_EBUSY, "too many connections");
		s->ctx.st.connections_refused++;
		kvt_log(KVT_LOG_WARN, "event=connection_refused "
			"reason=max_connections limit=%u",
			s->ctx.cfg->max_connections);
		return;
	}
	struct ucred cr;
	if (!peer_allowed(s, res, &cr))
		return;
	if (kvt_conn_open(&c, &s->ctx, res, cr.uid, cr.gid)) {
		kvt_log(KVT_LOG_ERROR, "event=oom where=accept");
		close(res);
	}
}

static void arm_accept(struct kvt_server *s)
{
	kvt_loop_accept(s->ctx.loop, s->listen_fd, kvt_ud(NULL, OP_ACCEPT));
	s->accept_armed = true;
}

static void arm_tm(struct kvt_server *s)
{
	int fd = kvt_tm_event_fd(s->ctx.tm);

	if (fd < 0)
		return; /* every tier operation completes at once */
	kvt_loop_read(s->ctx.loop, fd, &s->tm_counter,
		      sizeof(s->tm_counter), kvt_ud(NULL, OP_TM));
}

static void arm_signal(struct kvt_server *s)
{
	kvt_loop_read(s->ctx.loop, s->signal_fd, &s->si, sizeof(s->si),
		      kvt_ud(NULL, OP_SIGNAL));
	s->signal_armed = true;
}

/*
 * Graceful stop: accept nothing new, read no new requests, let queued
 * replies drain for up to STOP_GRACE_NS, then close everything.
 */
static void begin_stop(struct kvt_server *s, const char *why)
{
	if (s->ctx.stopping)
		return;
	s->ctx.stopping = true;
	kvt_notify("STOPPING=1");
	s->stop_deadline = kvt_clock_ns() + STOP_GRACE_NS;
	kvt_log(KVT_LOG_INFO, "event=stopping reason=%s conns=%u", why,
		s->ctx.nconns);
	if (s->accept_armed)
		kvt_loop_cancel(s->ctx.loop, kvt_ud(NULL, OP_ACCEPT),
				kvt_ud(NULL, OP_CANCEL));
	for (struct kvt_conn *c = s->ctx.conns, *next; c; c = next) {
		next = c->next;
		kvt_conn_stop(c);
	}
}

/* ---- reload -------------------------------------------------------- */

/* What applying a setting live takes besides storing its new value. */
enum {
	FX_LOG = 1u << 0,	 /* the logger's level */
	FX_L3_RATE = 1u << 1,	 /* the tier manager's L3 write budget */
	FX_BUSY_POLL = 1u << 2,	 /* the loop's polling */
	FX_ACCESS = 1u << 3,	 /* allow-lists and namespace owners */
	FX_SOCKET = 1u << 4,	 /* the socket file's mode and group */
	FX_SHM_ALLOW = 1u << 5,	 /* who is given the arena at HELLO */
	FX_LIMITS = 1u << 6,	 /* key and value limits */
	FX_INFLIGHT = 1u << 7,	 /* bodies waiting for memory */
};

/*
 * The settings a reload applies while running.  Every other setting (the
 * config table's, kvt_config_name()) that changed is logged as needing a
 * restart, one line each: a setting added to kvt_config.c is covered
 * without a line here.  The rest are read where they are used, so storing
 * them is enough: the timeouts by the housekeeping timer, max-connections
 * at accept, the spill settings at exit, shm-lease-max and the limits per
 * request.
 */
static const struct {
	const char *name;
	unsigned fx;
} live_settings[] = {
	{ "log-level", FX_LOG },
	{ "max-connections", 0 },
	{ "l3-write-rate", FX_L3_RATE },
	{ "spill-timeout", 0 },
	{ "no-spill", 0 },
	{ "busy-poll", FX_BUSY_POLL },
	{ "allow-uid", FX_ACCESS },
	{ "allow-gid", FX_ACCESS },
	{ "ns-owner", FX_ACCESS },
	{ "socket-group", FX_ACCESS | FX_SOCKET },
	{ "socket-mode", FX_SOCKET },
	{ "shm-allow-uid", FX_SHM_ALLOW },
	{ "shm-lease-max", 0 },
	{ "max-key-size", FX_LIMITS },
	{ "max-value-size", FX_LIMITS },
	{ "max-inflight", FX_INFLIGHT },
	{ "idle-timeout", 0 },
	{ "send-timeout", 0 },
	{ "body-timeout", 0 },
};

/* The effects of a live setting, or -1 if it needs a restart. */
static int live_fx(const char *name)
{
	for (size_t i = 0; i < sizeof(live_settings) / sizeof(live_settings[0]);
	     i++)
		if (!strcmp(live_settings[i].name, name))
			return (int)live_settings[i].fx;
	return -1;
}

/* A setting's value for the log: quoted unless a plain word or number. */
static const char *log_value(const char *v, char *buf, size_t cap)
{
	bool plain = *v != '\0';

	for (const char *p = v; *p && plain; p++)
		plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || strchr("_.:/-", *p);
	if (plain)
		return v;
	snprintf(buf, cap, "\"%s\"", v);
	return buf;
}

/*
 * The socket file takes the new mode and group.  Its permissions are never
 * wider than the old or the new setting allows, in between too: first the
 * bits both modes grant, then the group, then the new mode.
 */
static void reload_socket_file(struct kvt_server *s, unsigned old_mode)
{
	const char *path = s->ctx.cfg->socket_path;
	unsigned mode = s->ctx.cfg->socket_mode;
	gid_t gid = s->ctx.acc.has_group ? s->ctx.acc.socket_gid : getegid();

	if (chmod(path, old_mode & mode) || chown(path, (uid_t)-1, gid) ||
	    chmod(path, mode))
		kvt_log(KVT_LOG_ERROR, "event=reload_socket_failed socket=%s "
			"error=\"%s\"", path, strerror(errno));
}

/*
 * The allow-lists changed: a connection whose peer they no longer admit
 * is refused its next request (kvt_request.c) and ended, as a new one
 * would be refused at accept.  A peer admitted again before its next
 * request carries on.
 */
static void reload_revoke(struct kvt_server *s)
{
	for (struct kvt_conn *c = s->ctx.conns; c; c = c->next) {
		bool ok;

		if (c->closing)
			continue;
		ok = peer_ok(&s->ctx.acc, c->fd, c->uid, c->gid);
		if (!ok && !c->revoked) {
			s->ctx.st.connections_revoked++;
			kvt_log(KVT_LOG_WARN, "event=access_revoked conn=%llu "
				"uid=%u gid=%u hint=\"its next request is "
				"refused and the connection closed\"",
				(unsigned long long)c->id, (unsigned)c->uid,
				(unsigned)c->gid);
		}
		c->revoked = !ok;
	}
}

/*
 * SIGHUP: re-reads the config file and the command line (flags still
 * override the file), applies every setting that can change while running
 * and logs each change (event=reload setting=...), and names each changed
 * setting that needs a restart (event=reload_needs_restart setting=...).
 * A config with errors, unknown users or groups included, changes nothing.
 */
static void reload(struct kvt_server *s)
{
	struct kvt_config n;
	struct kvt_config *o = s->ctx.cfg;
	struct kvt_access acc, shm_allow;
	/* Room for the longest value (data-dir), and its quotes. */
	char err[256], ov[PATH_MAX + 8], nv[PATH_MAX + 8], oq[PATH_MAX + 8],
		nq[PATH_MAX + 8];
	unsigned fx = 0, old_mode = o->socket_mode;
	int changed = 0, restart = 0;

	kvt_notify("RELOADING=1");
	kvt_config_defaults(&n);
	if (kvt_config_from_args(&n, s->argc, s->argv) != 0) {
		kvt_log(KVT_LOG_ERROR, "event=reload_failed config=%s "
			"hint=\"keeping the current settings\"",
			o->config_path[0] ? o->config_path : "-");
		kvt_notify("READY=1");
		return;
	}
	/* Lists first, so that a bad name refuses the reload as a whole. */
	if (kvt_access_parse(&acc, n.allow_uid, n.allow_gid, n.ns_owner,
			     n.socket_group, err, sizeof(err)) ||
	    kvt_access_parse(&shm_allow, n.shm_allow_uid, NULL, NULL, NULL, err,
			     sizeof(err))) {
		kvt_log(KVT_LOG_ERROR, "event=reload_failed config=%s "
			"error=\"%s\" hint=\"keeping the current settings\"",
			o->config_path[0] ? o->config_path : "-", err);
		kvt_notify("READY=1");
		return;
	}
	for (size_t i = 0; i < kvt_config_count(); i++) {
		const char *name = kvt_config_name(i);
		int f = live_fx(name);

		kvt_config_value(o, i, ov, sizeof(ov));
		kvt_config_value(&n, i, nv, sizeof(nv));
		if (!strcmp(ov, nv))
			continue;
		if (f < 0) {
			kvt_log(KVT_LOG_WARN, "event=reload_needs_restart "
				"setting=%s old=%s new=%s", name,
				log_value(ov, oq, sizeof(oq)),
				log_value(nv, nq, sizeof(nq)));
			restart++;
			continue;
		}
		kvt_config_copy(o, &n, i);
		if ((f & FX_SOCKET) && s->activated) {
			/* Stored, but the file is systemd's, as at start. */
			kvt_log(KVT_LOG_WARN, "event=reload_ignored setting=%s "
				"old=%s new=%s hint=\"the socket came from "
				"systemd: set SocketMode= and SocketGroup= in "
				"its unit\"", name,
				log_value(ov, oq, sizeof(oq)),
				log_value(nv, nq, sizeof(nq)));
			f &= ~FX_SOCKET;
			fx |= (unsigned)f;
			continue;
		}
		kvt_log(KVT_LOG_WARN, "event=reload setting=%s old=%s new=%s",
			name, log_value(ov, oq, sizeof(oq)),
			log_value(nv, nq, sizeof(nq)));
		fx |= (unsigned)f;
		changed++;
	}
	if (fx & FX_LOG)
		kvt_log_level = o->log_level;
	if (fx & FX_L3_RATE)
		kvt_tm_set_l3_write_rate(s->ctx.tm, o->l3_write_rate);
	if (fx & FX_BUSY_POLL)
		kvt_loop_set_busy_poll(s->ctx.loop, o->busy_poll_us);
	if (fx & FX_SHM_ALLOW)
		s->shm.allow = shm_allow; /* for HELLOs from now on */
	if (fx & FX_LIMITS) {
		/*
		 * New connections are told the new limits in HELLO; requests
		 * on older ones are checked against them (KVT_ETOOBIG), while
		 * their frame limit stays the one their HELLO gave, so a
		 * client is refused a value, never cut off for it.
		 */
		s->ctx.lim.max_key = (uint32_t)o->max_key_size;
		s->ctx.lim.max_value = o->max_value_size;
		s->ctx.lim.max_body = kvt_limits_put_body_max(&s->ctx.lim);
	}
	if (fx & FX_ACCESS) {
		s->ctx.acc = acc;
		reload_revoke(s);
	}
	if (fx & FX_SOCKET)
		reload_socket_file(s, old_mode);
	if (fx & FX_INFLIGHT)
		kvt_conn_mem_changed(&s->ctx);
	kvt_log(KVT_LOG_INFO, "event=reloaded changed=%d needs_restart=%d",
		changed, restart);
	kvt_notify("READY=1");
}

static void on_signal(struct kvt_server *s, int res)
{
	s->signal_armed = false;
	if (res != (int)sizeof(s->si)) {
		if (!s->ctx.stopping)
			arm_signal(s);
		return;
	}
	switch (s->si.ssi_signo) {
	case SIGHUP:
		reload(s);
		break;
	case SIGTERM:
		begin_stop(s, "SIGTERM");
		break;
	case SIGINT:
		begin_stop(s, "SIGINT");
		break;
	default:
		kvt_log(KVT_LOG_INFO, "event=signal_ignored signo=%u",
			s->si.ssi_signo);
		break;
	}
	if (!s->ctx.stopping)
		arm_signal(s);
}

/* One completion from the loop, whichever backend produced it. */
static void dispatch(void *arg, uint64_t ud, int res, unsigned flags)
{
	struct kvt_server *s = arg;
	uint64_t owner = ud & ~(uint64_t)KVT_UD_MASK;
	struct kvt_conn *c = (struct kvt_conn *)(uintptr_t)owner;
	unsigned kind = (unsigned)(ud & KVT_UD_MASK);

	switch (kind) {
	case OP_ACCEPT:
		on_accept(s, res, flags);
		if (!s->accept_armed && !s->ctx.stopping)
			arm_accept(s);
		break;
	case OP_SIGNAL:
		on_signal(s, res);
		break;
	case KVT_UD_RECV:
	case KVT_UD_SEND:
		kvt_conn_complete(c, kind, res);
		break;
	case OP_TM:
		/* Runs get callbacks, which queue replies on connections. */
		kvt_tm_dispatch(s->ctx.tm);
		kvt_conn_unpark(&s->ctx);
		arm_tm(s);
		break;
	case OP_TIMER:
		housekeeping(s);
		if (!s->ctx.stopping)
			arm_timer(s);
		break;
	case OP_CANCEL:
		break;
	}
}

int kvt_server_loop_open(struct kvt_loop **out, int backend)
{
	char err[128];
	int rc;

	if (backend == KVT_IO_EPOLL) {
		rc = kvt_loop_open(out, KVT_IO_EPOLL, RING_ENTRIES, err,
				   sizeof(err));
		if (rc)
			kvt_log(KVT_LOG_ERROR, "event=loop_failed backend=epoll "
				"error=\"%s\"", err);
		return rc;
	}
	rc = kvt_loop_open(out, KVT_IO_URING, RING_ENTRIES, err, sizeof(err));
	if (rc == 0)
		return 0;
	if (backend == KVT_IO_URING) {
		kvt_log(KVT_LOG_ERROR,
			"event=io_uring_unavailable error=\"%s\" "
			"io_backend=io_uring hint=\"io_uring_setup was refused; "
			"the kernel may be too old, or a container/seccomp "
			"profile or kernel.io_uring_disabled blocks it. Use "
			"--io-backend auto or epoll to run on the portable "
			"epoll/pread path instead.\"", strerror(-rc));
		return rc;
	}
	/*
	 * auto: one warning, then the portable path.  Operators see why in
	 * the log and which path is serving in the stats (io_backend).
	 */
	kvt_log(KVT_LOG_WARN, "event=io_uring_unavailable error=\"%s\" "
		"fallback=epoll hint=\"io_uring_setup was refused (old kernel, "
		"seccomp/container policy or kernel.io_uring_disabled); "
		"serving with epoll and L3 with pread/pwrite\"",
		strerror(-rc));
	rc = kvt_loop_open(out, KVT_IO_EPOLL, RING_ENTRIES, err, sizeof(err));
	if (rc)
		kvt_log(KVT_LOG_ERROR, "event=loop_failed backend=epoll "
			"error=\"%s\"", err);
	return rc;
}

int kvt_server_open(struct kvt_server **out, struct kvt_config *cfg,
		    struct kvt_loop *loop, struct kvt_tm *tm, int argc,
		    char **argv)
{
	struct kvt_server *s;
	sigset_t mask;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s) {
		kvt_loop_close(loop);
		return -ENOMEM;
	}
	s->ctx.loop = loop;
	kvt_loop_set_busy_poll(loop, cfg->busy_poll_us);
	s->ctx.cfg = cfg;
	s->ctx.tm = tm;
	s->ctx.shm = &s->shm;
	s->ctx.ops = &kvt_request_ops;
	s->argc = argc;
	s->argv = argv;
	s->listen_fd = -1;
	s->signal_fd = -1;
	s->ctx.start_ns = kvt_clock_ns();
	kvt_limits_default(&s->ctx.lim);
	s->ctx.lim.max_key = (uint32_t)cfg->max_key_size;
	s->ctx.lim.max_value = cfg->max_value_size;
	s->ctx.lim.max_body = kvt_limits_put_body_max(&s->ctx.lim);
	{
		char err[256];
		if (kvt_access_parse(&s->ctx.acc, cfg->allow_uid, cfg->allow_gid,
				     cfg->ns_owner, cfg->socket_group, err,
				     sizeof(err))) {
			kvt_log(KVT_LOG_ERROR, "event=config_error what=access "
				"error=\"%s\"", err);
			kvt_server_close(s);
			return KVT_EINVAL;
		}
	}

	{
		char err[256];
		if (kvt_lease_pool_init(&s->shm, kvt_tm_arena(tm, NULL),
					cfg->shm_allow_uid, err, sizeof(err))) {
			kvt_log(KVT_LOG_ERROR, "event=config_error "
				"what=shm-allow-uid error=\"%s\"", err);
			kvt_server_close(s);
			return KVT_EINVAL;
		}
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	s->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (s->signal_fd < 0) {
		rc = -errno;
		kvt_server_close(s);
		return rc;
	}

	/* systemd socket activation: the socket is already bound for us. */
	s->listen_fd = kvt_listen_fd();
	if (s->listen_fd == -EINVAL) {
		kvt_server_close(s);
		return -EINVAL;
	}
	if (s->listen_fd >= 0) {
		s->activated = true;
		kvt_log(KVT_LOG_INFO, "event=socket_activated fd=%d",
			s->listen_fd);
	} else {
		s->listen_fd = listen_unix(cfg->socket_path, 1024,
					   cfg->socket_mode, &s->ctx.acc);
	}
	if (s->listen_fd < 0) {
		rc = s->listen_fd;
		s->listen_fd = -1;
		kvt_server_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

int kvt_server_run(struct kvt_server *s)
{
	arm_accept(s);
	arm_signal(s);
	arm_tm(s);
	arm_timer(s);
	kvt_log(KVT_LOG_INFO, "event=listening socket=%s pid=%d io_backend=%s",
		s->activated ? "(systemd)" : s->ctx.cfg->socket_path,
		(int)getpid(), kvt_io_backend_name(kvt_loop_backend(s->ctx.loop)));
	{
		char st[256];
		snprintf(st, sizeof(st), "READY=1\nMAINPID=%d\nSTATUS=serving",
			 (int)getpid());
		int nrc = kvt_notify(st);
		if (nrc)
			kvt_log(KVT_LOG_WARN, "event=notify_failed error=\"%s\"",
				strerror(-nrc));
	}
	while (!s->ctx.stopping || s->ctx.nconns > 0 || s->accept_armed) {
		int rc = kvt_loop_run_once(s->ctx.loop, s->ctx.stopping ? 100 : -1,
					   dispatch, s);

		if (rc < 0) {
			kvt_log(KVT_LOG_ERROR, "event=loop_failed error=\"%s\"",
				strerror(-rc));
			return rc;
		}
		if (s->ctx.stopping && kvt_clock_ns() > s->stop_deadline) {
			/* Clients that will not read their replies lose them. */
			for (struct kvt_conn *c = s->ctx.conns, *next; c; c = next) {
				next = c->next;
				kvt_conn_close(c);
			}
		}
	}
	kvt_log(KVT_LOG_INFO, "event=stopped requests=%llu",
		(unsigned long long)s->ctx.st.requests);
	return 0;
}

void kvt_server_close(struct kvt_server *s)
{
	if (!s)
		return;
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		/* systemd owns an activated socket's file; leave it. */
		if (!s->activated)
			unlink(s->ctx.cfg->socket_path);
	}
	if (s->signal_fd >= 0)
		close(s->signal_fd);
	kvt_loop_close(s->ctx.loop);
	free(s);
}
