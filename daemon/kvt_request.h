/*
 * kvt_request.h - kvtierd's request handlers, as the connection calls them.
 *
 * The server installs kvt_request_ops in its connections' context
 * (struct kvt_conn_ctx); the connection then hands every decoded frame to
 * it, and each handler answers through the reply API of kvt_conn.h.  Most
 * handlers are here; the shared-memory ones (HELLO's grant, leased GETs,
 * RELEASE, PUT_ALLOC and PUT_COMMIT's slot) are in kvt_lease.h and STATS
 * builds its document with kvt_dstats.h.
 *
 * Per connection the handlers keep the keys it pinned (PIN; unpinned when
 * it closes, and a connection holding pins is never closed as idle) and its
 * shared-memory leases and slots (kvt_lease.h): ops.open sets both up and
 * ops.close ends both.
 */
#ifndef KVT_REQUEST_H
#define KVT_REQUEST_H

#include "kvt_conn.h"

extern const struct kvt_conn_ops kvt_request_ops;

#endif /* KVT_REQUEST_H */
