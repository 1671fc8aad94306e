/*
 * kvt_dstats.h - the daemon's STATS document: one JSON object with the
 * tiers' counters, the daemon's own (connections, requests, shared memory,
 * busy polling) and latency per operation.
 *
 * Field names are part of the contract (DESIGN.md, `kvtier stats --json`):
 * add fields freely, never rename or remove one.  (Not the client
 * library's kvt_stats_json(), which asks a daemon for this document.)
 */
#ifndef KVT_DSTATS_H
#define KVT_DSTATS_H

#include <stddef.h>
#include <sys/types.h>

#include "kvt_conn.h"

/*
 * Builds the document for the server whose connections share x, as shown
 * to a client with uid: namespaces bound to other users (ns-owner) are
 * left out of the per-namespace report, as HOT leaves out their blocks.
 * Returns 0 with *out a malloc'd NUL-terminated string of *len bytes (the
 * caller frees it), or -ENOMEM.
 */
int kvt_dstats_json(const struct kvt_conn_ctx *x, uid_t uid, char **out,
		    size_t *len);

#endif /* KVT_DSTATS_H */
