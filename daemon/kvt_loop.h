/*
 * kvt_loop.h - the event backend under kvtierd's socket loop.
 *
 * The server and its connections (kvt_server.c, kvt_conn.c) are written as
 * completion handlers: they submit an operation (accept, recv, sendmsg,
 * read, timeout) tagged with a 64-bit user_data word and later get exactly
 * one completion for it carrying the result the system call would have
 * returned: bytes (or a new descriptor) on success, -errno on failure.
 * This layer delivers those completions from one of two backends:
 *
 *   io_uring  the kernel performs the operation; a completion is a CQE.
 *   epoll     the portable path for kernels or sandboxes (seccomp,
 *             kernel.io_uring_disabled, container policy) that refuse
 *             io_uring: the operation is remembered, the descriptor is
 *             watched with epoll, and when it is ready the same system call
 *             is made without blocking (EAGAIN waits for the next
 *             readiness) and its result handed to the same handler.
 *
 * So the connection state machine exists once, and both backends keep its
 * rules: at most one read-side operation (recv, recvmsg, read or accept) and one
 * write-side operation (sendmsg) in flight per descriptor; no completion is
 * ever delivered from inside a submit call; a multishot accept stays armed
 * while its completions carry KVT_LOOP_MORE.
 *
 * Single-threaded: every call must come from the thread running the loop.
 * Submissions never fail: an operation that cannot be started completes
 * with its -errno.
 */
#ifndef KVT_LOOP_H
#define KVT_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Which backend to use (the io-backend setting). */
enum kvt_io_backend {
	KVT_IO_AUTO = 0,  /* io_uring if the kernel allows it, else epoll */
	KVT_IO_URING = 1, /* io_uring or fail */
	KVT_IO_EPOLL = 2, /* the portable path, always */
};

/* Completion flag: a multishot accept is still armed after this one. */
#define KVT_LOOP_MORE 1u

struct kvt_loop; /* opaque handle */

/* Called once per completion, from kvt_loop_run_once() only. */
typedef void (*kvt_loop_fn)(void *arg, uint64_t ud, int res, unsigned flags);

/* "auto", "io_uring" or "epoll"; "?" for anything else. */
const char *kvt_io_backend_name(int backend);
/* Parses a backend name.  Returns a KVT_IO_* value, or -1. */
int kvt_io_backend_parse(const char *s);

/*
 * Creates a loop with the given backend (KVT_IO_URING or KVT_IO_EPOLL;
 * KVT_IO_AUTO is the caller's policy: kvt_server_loop_open()).  entries
 * sizes the io_uring queue.  On failure *out is NULL and a one-line reason
 * is written to err (errlen bytes, may be 0).  Returns 0 or -errno (for
 * io_uring the errno io_uring_setup failed with: -EPERM, -ENOSYS,
 * -ENOMEM...).
 */
int kvt_loop_open(struct kvt_loop **out, int backend, unsigned entries,
		  char *err, size_t errlen);
/* Frees the loop; descriptors handed to it stay open.  NULL accepted. */
void kvt_loop_close(struct kvt_loop *l);
/* The backend in use: KVT_IO_URING or KVT_IO_EPOLL. */
int kvt_loop_backend(const struct kvt_loop *l);

/*
 * Multishot accept on listening socket fd: one completion per client with
 * the new descriptor (close-on-exec; nonblocking under epoll), with
 * KVT_LOOP_MORE while it stays armed.  Under epoll fd is made nonblocking.
 */
void kvt_loop_accept(struct kvt_loop *l, int fd, uint64_t ud);
/* recv(fd, buf, len, 0); buf must stay valid until the completion. */
void kvt_loop_recv(struct kvt_loop *l, int fd, void *buf, size_t len,
		   uint64_t ud);
/*
 * recvmsg(fd, msg, flags): a recv that also takes ancillary data, such as
 * descriptors passed with SCM_RIGHTS (MSG_CMSG_CLOEXEC in flags makes them
 * close-on-exec).  msg (iovecs, control buffer and all) is used as given
 * and must stay valid until the completion, which leaves msg_flags and
 * msg_controllen set as recvmsg() would.
 */
void kvt_loop_recvmsg(struct kvt_loop *l, int fd, struct msghdr *msg,
		      int flags, uint64_t ud);
/*
 * sendmsg(fd, msg, flags).  msg (iovecs, msg_control and all) is used as
 * given and must stay valid until the completion.
 */
void kvt_loop_sendmsg(struct kvt_loop *l, int fd, struct msghdr *msg,
		      int flags, uint64_t ud);
/*
 * read(fd, buf, len), for signalfd and eventfd descriptors.  Under epoll fd
 * is made nonblocking.
 */
void kvt_loop_read(struct kvt_loop *l, int fd, void *buf, size_t len,
		   uint64_t ud);
/* Completes with -ETIME after ms milliseconds.  One at a time. */
void kvt_loop_timeout(struct kvt_loop *l, unsigned ms, uint64_t ud);
/*
 * Cancels the operation submitted with user_data target: it completes with
 * -ECANCELED (unless it already completed), and this request completes
 * with 0 or -ENOENT under ud.
 */
void kvt_loop_cancel(struct kvt_loop *l, uint64_t target, uint64_t ud);

/*
 * Closes fd, which must have no operation in flight.  Under epoll this also
 * forgets the descriptor, so that a new one with the same number starts
 * clean; use it rather than close() for descriptors given to the loop.
 */
void kvt_loop_close_fd(struct kvt_loop *l, int fd);

/*
 * Busy polling: before it sleeps, the loop polls for the next completion
 * for up to usec microseconds, with the adaptive window of kvt_spin.h
 * (shorter when idle, none for 100 ms after being preempted while
 * polling).  0 (the default of a new loop) never polls.
 */
void kvt_loop_set_busy_poll(struct kvt_loop *l, unsigned usec);

struct kvt_loop_poll_stats {
	uint64_t max_us;    /* the setting */
	uint64_t window_us; /* the adaptive window now */
	uint64_t polls;	    /* waits that polled */
	uint64_t hits;	    /* of which found work while polling */
	uint64_t preempts;  /* polls during which the loop was preempted */
	uint64_t backoffs;  /* times polling stopped for preemptions */
};
void kvt_loop_busy_poll_stats(const struct kvt_loop *l,
			      struct kvt_loop_poll_stats *st);

/*
 * Submits what is queued, waits up to timeout_ms (-1: until something
 * completes) and calls fn for every completion available.  Returns 0 (also
 * on timeout or signal) or -errno if the backend itself failed.
 */
int kvt_loop_run_once(struct kvt_loop *l, int timeout_ms, kvt_loop_fn fn,
		      void *arg);

#endif /* KVT_LOOP_H */
