/*
 * kvt_server.h - the server of kvtierd: the listening socket (its own, or
 * systemd's), the event loop that serves it, signals (SIGHUP reloads,
 * SIGTERM and SIGINT stop gracefully), and a once-a-second timer that
 * closes idle and non-reading clients.  Connections, once accepted, are
 * kvt_conn.h's; the requests they carry, kvt_request.h's.
 *
 * Single-threaded: one thread opens, runs and closes the server.
 */
#ifndef KVT_SERVER_H
#define KVT_SERVER_H

#include "kvt_config.h"

struct kvt_loop;
struct kvt_server; /* opaque */
struct kvt_tm;

/*
 * Opens the event loop for the io-backend setting (KVT_IO_*): auto tries
 * io_uring and falls back to epoll with one warning in the log; io_uring
 * fails with a clear log line when the kernel refuses it; epoll always uses
 * the portable path.  Returns 0 or -errno.
 */
int kvt_server_loop_open(struct kvt_loop **out, int backend);

/*
 * Creates the server on loop (from kvt_server_loop_open), which it owns
 * from now on, failure included, serving tm with the settings cfg (kept,
 * and changed by a reload).  argc and argv are the command line, read
 * again with the config file on SIGHUP.  Binds the socket unless systemd
 * passed one.  Returns 0, KVT_EINVAL for an invalid access setting (logged),
 * -EADDRINUSE if another kvtierd serves the socket, or another -errno.
 */
int kvt_server_open(struct kvt_server **out, struct kvt_config *cfg,
		    struct kvt_loop *loop, struct kvt_tm *tm, int argc,
		    char **argv);

/*
 * Serves until SIGTERM or SIGINT, then lets replies drain (up to 5 s) and
 * closes every connection.  Returns 0 or a negative error from the loop.
 */
int kvt_server_run(struct kvt_server *s);

/*
 * Closes the listening socket (removing its file unless systemd owns it),
 * the loop and s.  NULL is accepted.
 */
void kvt_server_close(struct kvt_server *s);

#endif /* KVT_SERVER_H */
