/* kvt_access.c - see kvt_access.h. */
#include "kvt_access.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A uid given as a number or a user name. */
static int lookup_uid(const char *s, uid_t *out)
{
	char buf[4096], *end;
	struct passwd pw, *res = NULL;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s && !*end && !errno && s[0] != '-') {
		*out = (uid_t)v;
		return 0;
	}
	if (getpwnam_r(s, &pw, buf, sizeof(buf), &res) || !res)
		return -1;
	*out = res->pw_uid;
	return 0;
}

static int lookup_gid(const char *s, gid_t *out)
{
	char buf[4096], *end;
	struct group gr, *res = NULL;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s && !*end && !errno && s[0] != '-') {
		*out = (gid_t)v;
		return 0;
	}
	if (getgrnam_r(s, &gr, buf, sizeof(buf), &res) || !res)
		return -1;
	*out = res->gr_gid;
	return 0;
}

/* Calls fn on each comma-separated, non-empty item of list. */
static int each_item(const char *list, int (*fn)(struct kvt_access *,
						  const char *, char *, size_t),
		     struct kvt_access *a, char *err, size_t errcap)
{
	char item[512];

	while (list && *list) {
		const char *comma = strchr(list, ',');
		size_t n = comma ? (size_t)(comma - list) : strlen(list);

		while (n && (*list == ' ')) {
			list++;
			n--;
		}
		while (n && list[n - 1] == ' ')
			n--;
		if (n >= sizeof(item)) {
			snprintf(err, errcap, "list item too long");
			return -1;
		}
		memcpy(item, list, n);
		item[n] = '\0';
		if (n && fn(a, item, err, errcap))
			return -1;
		list = comma ? comma + 1 : list + strlen(list);
	}
	return 0;
}

static int add_uid(struct kvt_access *a, const char *s, char *err,
		   size_t errcap)
{
	if (a->nuids == KVT_ACCESS_MAX) {
		snprintf(err, errcap, "more than %d uids", KVT_ACCESS_MAX);
		return -1;
	}
	if (lookup_uid(s, &a->uids[a->nuids])) {
		snprintf(err, errcap, "unknown user '%s'", s);
		return -1;
	}
	a->nuids++;
	return 0;
}

static int add_gid(struct kvt_access *a, const char *s, char *err,
		   size_t errcap)
{
	if (a->ngids == KVT_ACCESS_MAX) {
		snprintf(err, errcap, "more than %d gids", KVT_ACCESS_MAX);
		return -1;
	}
	if (lookup_gid(s, &a->gids[a->ngids])) {
		snprintf(err, errcap, "unknown group '%s'", s);
		return -1;
	}
	a->ngids++;
	return 0;
}

static int add_owner(struct kvt_access *a, const char *s, char *err,
		     size_t errcap)
{
	const char *eq = strrchr(s, '=');
	struct kvt_ns_owner *o = &a->owners[a->nowners];

	if (a->nowners == KVT_ACCESS_MAX) {
		snprintf(err, errcap, "more than %d namespace owners",
			 KVT_ACCESS_MAX);
		return -1;
	}
	if (!eq || eq == s || (size_t)(eq - s) >= sizeof(o->prefix)) {
		snprintf(err, errcap, "'%s' is not PREFIX=USER", s);
		return -1;
	}
	o->len = (size_t)(eq - s);
	memcpy(o->prefix, s, o->len);
	o->prefix[o->len] = '\0';
	if (lookup_uid(eq + 1, &o->uid)) {
		snprintf(err, errcap, "unknown user '%s'", eq + 1);
		return -1;
	}
	a->nowners++;
	return 0;
}

int kvt_access_parse(struct kvt_access *a, const char *allow_uid,
		     const char *allow_gid, const char *ns_owner,
		     const char *socket_group, char *err, size_t errcap)
{
	memset(a, 0, sizeof(*a));
	if (each_item(allow_uid, add_uid, a, err, errcap) ||
	    each_item(allow_gid, add_gid, a, err, errcap) ||
	    each_item(ns_owner, add_owner, a, err, errcap))
		return -1;
	if (socket_group && *socket_group) {
		if (lookup_gid(socket_group, &a->socket_gid)) {
			snprintf(err, errcap, "unknown group '%s'",
				 socket_group);
			return -1;
		}
		a->has_group = true;
	}
	return 0;
}

bool kvt_access_has_peer_lists(const struct kvt_access *a)
{
	return a->nuids > 0 || a->ngids > 0;
}

bool kvt_access_allows_uid(const struct kvt_access *a, uid_t uid)
{
	for (size_t i = 0; i < a->nuids; i++)
		if (a->uids[i] == uid)
			return true;
	return false;
}

bool kvt_access_peer_ok(const struct kvt_access *a, uid_t uid, gid_t gid,
			const gid_t *groups, size_t ngroups)
{
	if (!kvt_access_has_peer_lists(a))
		return true; /* the socket's mode is the only gate */
	if (kvt_access_allows_uid(a, uid))
		return true;
	for (size_t i = 0; i < a->ngids; i++) {
		if (a->gids[i] == gid)
			return true;
		for (size_t j = 0; j < ngroups; j++)
			if (a->gids[i] == groups[j])
				return true;
	}
	return false;
}

bool kvt_access_ns_ok(const struct kvt_access *a, uid_t uid,
		      const uint8_t *ns, size_t ns_len)
{
	if (uid == 0)
		return true;
	for (size_t i = 0; i < a->nowners; i++) {
		const struct kvt_ns_owner *o = &a->owners[i];
		if (ns_len >= o->len && memcmp(ns, o->prefix, o->len) == 0 &&
		    o->uid != uid)
			return false;
	}
	return true;
}
