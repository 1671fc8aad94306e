/*
 * kvtier_errors.h - error codes shared by libkvtier, the daemon and the wire.
 *
 * Every fallible kvtier function returns an int: 0 on success, a negative
 * KVT_E* code below, or a negative errno value (-ECONNREFUSED, -ENOMEM, ...).
 * The two ranges never overlap: KVT_E* codes are all <= -1000, errno values
 * are all > -1000.  kvt_strerror() turns either kind into a message.
 *
 * The daemon reports request failures in the reply header's status field as
 * the positive value of the code (status 1002 means KVT_ENOTFOUND), so a
 * client in another language needs only this table.  Values are part of the
 * protocol: never renumber, only append.
 */
#ifndef KVTIER_ERRORS_H
#define KVTIER_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

enum kvt_error {
	KVT_OK = 0,
	/* A frame broke the protocol: bad magic, bad lengths, truncated body. */
	KVT_EPROTO = -1001,
	/* The key is not in the cache (a miss; not a failure of the daemon). */
	KVT_ENOTFOUND = -1002,
	/* A key, namespace, value or frame exceeds a configured limit. */
	KVT_ETOOBIG = -1003,
	/* The request was well framed but its body is malformed. */
	KVT_EBADREQ = -1004,
	/* The daemon does not know this opcode. */
	KVT_EUNKNOWNOP = -1005,
	/* The value cannot fit in the cache at all (larger than every tier). */
	KVT_ENOSPACE = -1006,
	/* Protocol version mismatch between client and daemon. */
	KVT_EVERSION = -1007,
	/* The daemon failed internally; its log says why. */
	KVT_ESERVER = -1008,
	/* The daemon refused this client or this operation. */
	KVT_EDENIED = -1009,
	/* The daemon is temporarily overloaded; retry later. */
	KVT_EBUSY = -1010,
	/* The peer closed the connection. */
	KVT_ECLOSED = -1011,
	/* Incremental decoder: more bytes are needed. Never returned to users. */
	KVT_EAGAIN = -1012,
	/* A caller-supplied buffer is too small; the needed size was reported. */
	KVT_ERANGE = -1013,
	/* An argument is invalid (NULL where not allowed, bad option...). */
	KVT_EINVAL = -1014,
	/* A stored block failed its checksum; it was dropped and is a miss. */
	KVT_ECORRUPT = -1015,
	/*
	 * Client side only, never on the wire: the handle was connected by
	 * another process, and this one is its child after fork(); the child
	 * must connect its own.
	 */
	KVT_EFORKED = -1016,
	/*
	 * Client side only, never on the wire: another thread is in a call on
	 * the same handle (one handle serves one thread at a time).
	 */
	KVT_ECONCURRENT = -1017,
	/*
	 * Registered memory could not be read or written during a transfer:
	 * the client shrank the file behind the region (truncated it) or its
	 * filesystem refused a page.  The daemon contained the fault; the
	 * region is unusable from then on (unregister it and register the
	 * memory again).
	 */
	KVT_EFAULT = -1018,
};

/*
 * Returns a static, NUL-terminated English message for a kvtier error code or
 * a negative errno value.  Never returns NULL; unknown codes give
 * "unknown error".  Thread safe.
 */
const char *kvt_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* KVTIER_ERRORS_H */
