/*
 * kvt_errors.c - kvt_strerror(): one message function for kvtier codes and
 * negative errno values alike (the LMDB mdb_strerror habit).
 *
 * strerror() may write into a shared static buffer for unknown values, so it
 * is not thread safe; every message returned here is a string literal or a
 * pointer into glibc's read-only table (strerrordesc_np), which is.
 */
#include <errno.h>
#include <string.h>

#include "kvtier_errors.h"

static const char *kvt_code_message(int err)
{
	switch (err) {
	case KVT_OK:
		return "success";
	case KVT_EPROTO:
		return "protocol error";
	case KVT_ENOTFOUND:
		return "key not found";
	case KVT_ETOOBIG:
		return "key, namespace, value or frame exceeds a limit";
	case KVT_EBADREQ:
		return "malformed request body";
	case KVT_EUNKNOWNOP:
		return "unknown opcode";
	case KVT_ENOSPACE:
		return "value larger than the cache can hold";
	case KVT_EVERSION:
		return "protocol version mismatch";
	case KVT_ESERVER:
		return "internal daemon error";
	case KVT_EDENIED:
		return "permission denied by daemon";
	case KVT_EBUSY:
		return "daemon busy, retry later";
	case KVT_ECLOSED:
		return "connection closed by peer";
	case KVT_EAGAIN:
		return "more bytes needed";
	case KVT_ERANGE:
		return "buffer too small";
	case KVT_EINVAL:
		return "invalid argument";
	case KVT_ECORRUPT:
		return "stored block failed its checksum";
	case KVT_EFORKED:
		return "connection inherited across fork(); connect again in "
		       "this process";
	case KVT_ECONCURRENT:
		return "connection in use by another thread";
	case KVT_EFAULT:
		return "registered memory failed during a transfer (file "
		       "truncated?); the region is unusable";
	}
	return NULL;
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || \
	(__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define KVT_HAVE_STRERRORDESC_NP 1
#endif

#ifndef KVT_HAVE_STRERRORDESC_NP
/*
 * Fallback for C libraries without strerrordesc_np(): the errno values
 * kvtier's own code paths produce.  Anything else reads "unknown error",
 * which is better than a racy strerror().
 */
static const char *kvt_errno_message(int e)
{
	switch (e) {
	case EPERM: return "Operation not permitted";
	case ENOENT: return "No such file or directory";
	case EINTR: return "Interrupted system call";
	case EIO: return "Input/output error";
	case EBADF: return "Bad file descriptor";
	case EAGAIN: return "Resource temporarily unavailable";
	case ENOMEM: return "Cannot allocate memory";
	case EACCES: return "Permission denied";
	case EEXIST: return "File exists";
	case ENOTDIR: return "Not a directory";
	case EISDIR: return "Is a directory";
	case EINVAL: return "Invalid argument";
	case EMFILE: return "Too many open files";
	case ENOSPC: return "No space left on device";
	case EPIPE: return "Broken pipe";
	case ERANGE: return "Numerical result out of range";
	case ENAMETOOLONG: return "File name too long";
	case ENOSYS: return "Function not implemented";
	case EADDRINUSE: return "Address already in use";
	case ECONNRESET: return "Connection reset by peer";
	case ETIMEDOUT: return "Connection timed out";
	case ECONNREFUSED: return "Connection refused";
	}
	return NULL;
}
#endif

const char *kvt_strerror(int err)
{
	const char *msg;

	if (err <= 0 && err > -1000) {
		/* -errno range; 0 is handled by the code table below. */
		if (err == 0)
			return kvt_code_message(KVT_OK);
#ifdef KVT_HAVE_STRERRORDESC_NP
		msg = strerrordesc_np(-err);
#else
		msg = kvt_errno_message(-err);
#endif
		return msg ? msg : "unknown error";
	}
	msg = kvt_code_message(err);
	return msg ? msg : "unknown error";
}
