/*
 * kvt_notify.h - the two systemd protocols kvtierd speaks, without
 * libsystemd: readiness notification (a datagram to $NOTIFY_SOCKET) and
 * socket activation (a listening socket passed as fd 3 with $LISTEN_FDS and
 * $LISTEN_PID).  Both are plain, documented wire protocols (sd_notify(3),
 * sd_listen_fds(3)); linking libsystemd for them would add a dependency for
 * forty lines of code.
 */
#ifndef KVT_NOTIFY_H
#define KVT_NOTIFY_H

/*
 * Sends state (e.g. "READY=1\nSTATUS=serving") to $NOTIFY_SOCKET if it is
 * set; does nothing otherwise.  Returns 0, or -errno (logged by caller).
 */
int kvt_notify(const char *state);

/*
 * Returns the listening socket systemd passed (fd 3) if $LISTEN_PID is this
 * process and $LISTEN_FDS >= 1; -1 if no socket was passed; -EINVAL if one
 * was but fd 3 is not a listening Unix stream socket.  Unsets the variables
 * so children do not inherit them.
 */
int kvt_listen_fd(void);

#endif /* KVT_NOTIFY_H */
