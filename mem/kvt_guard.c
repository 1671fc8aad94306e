/*
 * kvt_guard.c - SIGBUS containment for copies into client memory (see
 * kvt_guard.h).
 *
 * Each thread keeps, in thread-local storage, the ranges it is copying
 * into and the jump buffer of its kvt_guard_run().  The handler runs on
 * the faulting thread (SIGBUS from a fault is synchronous), so it only
 * reads that thread's own state, which is async-signal-safe for the
 * initial-exec TLS of the daemon's statically linked code.
 *
 * The handler is installed with SA_NODEFER and kvt_guard_run() uses
 * sigsetjmp(..., 0): leaving the handler by siglongjmp then leaves the
 * signal mask as it was (SIGBUS not blocked), without the system call
 * that saving and restoring the mask would cost on every guarded copy.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kvt_guard.h"
#include "kvtier_errors.h"

struct guard_tls {
	volatile sig_atomic_t active; /* inside kvt_guard_run()'s fn */
	const struct kvt_guard_range *r;
	size_t n;
	size_t which;	/* the range that faulted */
	bool unblocked; /* SIGBUS unblocked on this thread */
	sigjmp_buf jb;
};

static _Thread_local struct guard_tls g;

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool installed;
static struct sigaction prev; /* the disposition the handler replaced */
static atomic_uint_fast64_t faults;

/* Hands a SIGBUS that is not ours to whoever had it before. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	if (prev.sa_flags & SA_SIGINFO) {
		if (prev.sa_sigaction) {
			prev.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
		prev.sa_handler(sig);
		return;
	}
	/* A signal sent with kill() that was ignored stays ignored. */
	if (prev.sa_handler == SIG_IGN && si->si_code <= 0)
		return;
	/*
	 * The default action.  A fault re-executes the access on return and
	 * kills the process with a core, as if no handler had been there; a
	 * signal sent with kill() is raised again.
	 */
	signal(SIGBUS, SIG_DFL);
	if (si->si_code <= 0)
		raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	/* si_code > 0: raised by the kernel for a fault, not sent. */
	if (g.active && si->si_code > 0) {
		uintptr_t a = (uintptr_t)si->si_addr;

		for (size_t i = 0; i < g.n; i++) {
			uintptr_t b = (uintptr_t)g.r[i].base;

			if (a - b < g.r[i].len) {
				g.active = 0;
				g.which = i;
				atomic_fetch_add_explicit(&faults, 1,
							  memory_order_relaxed);
				siglongjmp(g.jb, 1);
			}
		}
	}
	chain(sig, si, uc);
}

/*
 * Installs the handler unless it already is SIGBUS's disposition.  Asking
 * every time, rather than once, lets a program that installs a SIGBUS
 * handler of its own later (a test framework between tests) call this
 * again to put the guard back in front, chaining to its handler.
 */
int kvt_guard_init(void)
{
	struct sigaction sa, cur;
	int rc = 0;

	pthread_mutex_lock(&init_mu);
	if (sigaction(SIGBUS, NULL, &cur) < 0) {
		rc = -errno;
	} else if (!(cur.sa_flags & SA_SIGINFO) ||
		   cur.sa_sigaction != on_sigbus) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = on_sigbus;
		sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
		sigemptyset(&sa.sa_mask);
		/* prev is read by the handler: fill it before installing. */
		prev = cur;
		if (sigaction(SIGBUS, &sa, NULL) < 0)
			rc = -errno;
		else
			atomic_store(&installed, true);
	}
	pthread_mutex_unlock(&init_mu);
	return rc;
}

int kvt_guard_run(const struct kvt_guard_range *r, size_t n,
		  int (*fn)(void *arg), void *arg, size_t *which)
{
	int rc;

	if (!atomic_load_explicit(&installed, memory_order_relaxed) || n == 0)
		return fn(arg);
	if (!g.unblocked) {
		sigset_t s;

		sigemptyset(&s);
		sigaddset(&s, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &s, NULL);
		g.unblocked = true;
	}
	g.r = r;
	g.n = n;
	if (sigsetjmp(g.jb, 0)) {
		/* From the handler: fn touched range g.which and faulted. */
		if (which)
			*which = g.which;
		return KVT_EFAULT;
	}
	g.active = 1;
	atomic_signal_fence(memory_order_seq_cst);
	rc = fn(arg);
	atomic_signal_fence(memory_order_seq_cst);
	g.active = 0;
	return rc;
}

uint64_t kvt_guard_faults(void)
{
	return atomic_load_explicit(&faults, memory_order_relaxed);
}
