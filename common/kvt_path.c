/*
 * kvt_path.c - the default socket path shared by kvtierd and libkvtier.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvt_path.h"
#include "kvtier_errors.h"

/* bind()/connect() need the path and its NUL inside sun_path. */
#define KVT_SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

int kvt_socket_default(char *buf, size_t cap)
{
	const char *env;
	int len;

	if (!buf)
		return KVT_EINVAL;
	if (cap == 0)
		return KVT_ERANGE;

	env = getenv("KVTIER_SOCKET");
	if (env && *env) {
		len = snprintf(buf, cap, "%s", env);
	} else {
		env = getenv("XDG_RUNTIME_DIR");
		if (env && *env)
			len = snprintf(buf, cap, "%s/kvtier.sock", env);
		else
			len = snprintf(buf, cap, "/tmp/kvtier-%lu.sock",
				       (unsigned long)getuid());
	}
	if (len < 0 || (size_t)len >= cap || (size_t)len > KVT_SUN_PATH_MAX) {
		/* Never hand back a truncated path: it would name another file. */
		buf[0] = '\0';
		return KVT_ERANGE;
	}
	return 0;
}
