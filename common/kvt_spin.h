/*
 * kvt_spin.h - when to busy-poll for an event instead of going to sleep.
 *
 * Waking a sleeping thread is the dearest part of a small request on a
 * virtual machine: on the 2-core dev VM a ping-pong of 16 bytes over a
 * Unix socket takes 25 us when both sides sleep and 9 us when both poll
 * (measured with a socketpair).  A thread that expects its next event soon
 * -- the daemon's loop right after it served something, a client right
 * after it sent a request -- therefore polls for a short window before it
 * blocks.  The window adapts, in the manner of the kernel's haltpoll
 * cpuidle governor, so that an idle or overloaded machine pays nothing:
 *
 *  - the event came while polling: the window stays;
 *  - it came later, but within max_ns of the start: polling longer would
 *    have caught it, so the window doubles (from KVT_SPIN_START_NS);
 *  - it came after max_ns, or never (idle): the window halves, and under
 *    1 us it is 0 until a short wait grows it again;
 *  - the thread was preempted while it polled in KVT_SPIN_PREEMPT_LIMIT of
 *    KVT_SPIN_PREEMPT_OF consecutive polls (more runnable threads than
 *    cores: the poll takes a core someone else needed; a single preemption
 *    is only a timer tick or a kernel thread): window 0 and no polling at
 *    all for KVT_SPIN_BACKOFF_NS.
 *
 * Pure policy: the caller polls, blocks, reads the clock and counts
 * preemptions (kvt_spin_nivcsw()).  Not thread-safe; one per thread.
 */
#ifndef KVT_SPIN_H
#define KVT_SPIN_H

#include <stdbool.h>
#include <stdint.h>

#define KVT_SPIN_START_NS 8000ull
#define KVT_SPIN_BACKOFF_NS 100000000ull
#define KVT_SPIN_PREEMPT_LIMIT 4
#define KVT_SPIN_PREEMPT_OF 16
/* Largest window accepted (--busy-poll, KVTIER_SPIN_US): 10 ms. */
#define KVT_SPIN_MAX_US 10000u

struct kvt_spin {
	uint64_t max_ns;    /* 0: never poll */
	uint64_t cur_ns;    /* the window now */
	uint64_t resume_ns; /* after a preemption: no polling before this */
	uint64_t polls;	    /* windows polled */
	uint64_t hits;	    /* of which the event came while polling */
	uint64_t preempts;  /* polls during which the thread was preempted */
	uint64_t backoffs;  /* times polling stopped for preemptions */
	unsigned seen, preempted; /* polls and preemptions, this round of
				     KVT_SPIN_PREEMPT_OF polls */
};

/* Starts with the full window; max_ns 0 disables polling. */
void kvt_spin_init(struct kvt_spin *s, uint64_t max_ns);

/* How long to poll before blocking, at time now_ns; 0 = block at once. */
uint64_t kvt_spin_window(const struct kvt_spin *s, uint64_t now_ns);

/*
 * Reports one wait: polled_ns spent polling (0 if it did not), hit if the
 * event came while polling, preempted if the thread was switched out
 * involuntarily while polling, waited_ns spent blocked afterwards (when
 * not hit), now_ns the time at its end.
 */
void kvt_spin_done(struct kvt_spin *s, uint64_t polled_ns, bool hit,
		   bool preempted, uint64_t waited_ns, uint64_t now_ns);

/* Involuntary context switches of the calling thread so far. */
long kvt_spin_nivcsw(void);

#endif /* KVT_SPIN_H */
