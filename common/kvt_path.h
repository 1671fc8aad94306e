/*
 * kvt_path.h - where the daemon's Unix socket lives by default.
 *
 * kvtierd (when --socket is not given) and libkvtier / the kvtier tool
 * (when no socket is passed) both call kvt_socket_default(), so that the two
 * always agree without configuration.  Pure apart from reading the
 * environment and getuid().
 */
#ifndef KVT_PATH_H
#define KVT_PATH_H

#include <stddef.h>

#include "kvtier_errors.h"

/*
 * Writes the default socket path into buf (capacity cap, NUL-terminated):
 *
 *   1. $KVTIER_SOCKET, if set and non-empty (used verbatim);
 *   2. else $XDG_RUNTIME_DIR/kvtier.sock, if XDG_RUNTIME_DIR is set and
 *      non-empty;
 *   3. else /tmp/kvtier-$UID.sock, with the numeric getuid().
 *
 * Returns 0, KVT_EINVAL if buf is NULL, or KVT_ERANGE if the path does not
 * fit in cap bytes (with its NUL) or is longer than a sockaddr_un can hold
 * (107 bytes on Linux).  On error buf holds "" when cap > 0.  Reads the
 * environment, so it must not race with setenv() in another thread.
 */
int kvt_socket_default(char *buf, size_t cap);

#endif /* KVT_PATH_H */
