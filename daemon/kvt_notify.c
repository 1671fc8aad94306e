/* kvt_notify.c - see kvt_notify.h. */
#include "kvt_notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "kvt_log.h"

int kvt_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	size_t n;
	int fd, rc = 0;

	if (!path || !*path)
		return 0;
	n = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || n >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, n);
	/* '@' names a socket in the abstract namespace: a leading NUL. */
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
		   (struct sockaddr *)&sa, len) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int kvt_listen_fd(void)
{
	const char *pid = getenv("LISTEN_PID");
	const char *fds = getenv("LISTEN_FDS");
	int fd = 3, val = 0, type = 0;
	socklen_t vl = sizeof(val), tl = sizeof(type);
	struct sockaddr_un sa;
	socklen_t sl = sizeof(sa);
	struct stat st;

	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid() ||
	    strtol(fds, NULL, 10) < 1)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (strtol(fds, NULL, 10) > 1)
		kvt_log(KVT_LOG_WARN, "event=socket_activation_extra_fds "
			"count=%s using=3", fds);
	if (fstat(fd, &st) || !S_ISSOCK(st.st_mode) ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &vl) || !val ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) ||
	    type != SOCK_STREAM ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) ||
	    sa.sun_family != AF_UNIX) {
		kvt_log(KVT_LOG_ERROR, "event=socket_activation_bad_fd fd=3 "
			"error=\"not a listening Unix stream socket\"");
		return -EINVAL;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}
