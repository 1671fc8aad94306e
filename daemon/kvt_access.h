/*
 * kvt_access.h - who may use the daemon, and which namespaces.
 *
 * Three layers, each optional beyond the first:
 *  1. the socket file's mode and group (default 0600, owner only);
 *  2. allow-lists of uids and gids checked against the peer's credentials
 *     (SO_PEERCRED, and SO_PEERGROUPS for supplementary groups) at accept:
 *     when either list is set, a client must match one of them;
 *  3. namespaces bound to uids ("tenantA=1001"): a namespace that starts
 *     with a bound prefix may only be read, written or dropped by that uid
 *     (and by root), so one tenant cannot see or drop another's blocks.
 */
#ifndef KVT_ACCESS_H
#define KVT_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KVT_ACCESS_MAX 64

struct kvt_ns_owner {
	char prefix[256];
	size_t len;
	uid_t uid;
};

struct kvt_access {
	uid_t uids[KVT_ACCESS_MAX];
	size_t nuids;
	gid_t gids[KVT_ACCESS_MAX];
	size_t ngids;
	struct kvt_ns_owner owners[KVT_ACCESS_MAX];
	size_t nowners;
	bool has_group;
	gid_t socket_gid;
};

/*
 * Parses the comma-separated lists (names or numbers) of allow_uid and
 * allow_gid, the "prefix=user" pairs of ns_owner, and socket_group (any may
 * be NULL or "").  Returns 0, or -1 with a reason in err.
 */
int kvt_access_parse(struct kvt_access *a, const char *allow_uid,
		     const char *allow_gid, const char *ns_owner,
		     const char *socket_group, char *err, size_t errcap);

/*
 * Is any allow-list (uids or gids) set?  When none is, the socket's mode
 * is the only gate and every peer may connect.
 */
bool kvt_access_has_peer_lists(const struct kvt_access *a);

/* May a peer with these credentials connect? */
bool kvt_access_peer_ok(const struct kvt_access *a, uid_t uid, gid_t gid,
			const gid_t *groups, size_t ngroups);

/*
 * Is uid on the allow-list of uids itself?  Unlike kvt_access_peer_ok(),
 * an empty list allows no one: for lists that grant something on top
 * (shm-allow-uid).
 */
bool kvt_access_allows_uid(const struct kvt_access *a, uid_t uid);

/* May uid use namespace ns?  Root may use every namespace. */
bool kvt_access_ns_ok(const struct kvt_access *a, uid_t uid,
		      const uint8_t *ns, size_t ns_len);

#endif /* KVT_ACCESS_H */
