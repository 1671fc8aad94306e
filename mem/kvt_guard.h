/*
 * kvt_guard.h - copies into and out of memory that another process can
 * take away: SIGBUS contained, so that a client that truncates the file
 * behind its registered region costs its own request, not the daemon.
 *
 * A client's region is a MAP_SHARED mapping of its file.  If the client
 * shrinks the file (ftruncate) while the daemon copies into the mapping,
 * or the file's filesystem cannot supply a page (a full tmpfs, no huge
 * pages left), the access raises SIGBUS, whose default action kills the
 * process.  kvt_guard_run() runs a function with such faults contained: a
 * process-wide SIGBUS handler (installed once by kvt_guard_init()) checks
 * whether the faulting address lies in one of the ranges the faulting
 * thread declared, and if so jumps back (siglongjmp) to that thread's
 * kvt_guard_run(), which returns KVT_EFAULT.  A SIGBUS anywhere else is a
 * real bug: the handler hands it to the disposition it replaced (the
 * default action kills the process with a core, as before).
 *
 * The guarded function is abandoned at the faulting instruction, so it
 * must be one that can be: no locks taken, no memory allocated that the
 * jump would leak, no state left half-updated that anyone else reads.
 * memcpy qualifies, and so does zstd decompression into the range (a
 * context interrupted that way is reset by its next use: kvt_codec.h).
 *
 * Sealed memfds (F_SEAL_SHRINK) cannot be shrunk, but a guarded copy costs
 * one sigsetjmp (no system call) per call, so the tier manager guards
 * every copy into client memory rather than trusting the seal alone: a
 * page of a hugetlbfs or full tmpfs file can fault whatever the seals.
 *
 * Threads: kvt_guard_run() may be called on any thread, one guarded call
 * at a time per thread (it is not reentrant); it unblocks SIGBUS on the
 * calling thread the first time (a synchronous SIGBUS on a thread that
 * blocks it would kill the process before any handler ran).
 */
#ifndef KVT_GUARD_H
#define KVT_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* An address range faults in which kvt_guard_run() contains. */
struct kvt_guard_range {
	const void *base;
	size_t len;
};

/*
 * Installs the SIGBUS handler unless it already is the process's SIGBUS
 * disposition (the one it replaces gets the faults that are not ours).
 * Call it before the first guarded copy, and again after anything else
 * installed a SIGBUS handler.  Thread safe.  Returns 0 or -errno from
 * sigaction().
 */
int kvt_guard_init(void);

/*
 * Runs fn(arg) on this thread and returns what it returns; or, if fn
 * touched one of the n ranges and that raised SIGBUS, abandons fn there
 * and returns KVT_EFAULT with *which (if not NULL) set to the index of
 * the range.  A fault outside the ranges is not contained.  Without
 * kvt_guard_init() nothing is contained (fn simply runs).
 */
int kvt_guard_run(const struct kvt_guard_range *r, size_t n,
		  int (*fn)(void *arg), void *arg, size_t *which);

/* Faults contained so far in this process. */
uint64_t kvt_guard_faults(void);

#endif /* KVT_GUARD_H */
