/*
 * kvt_spin.c - the adaptive busy-poll window; see kvt_spin.h.
 */
#include "kvt_spin.h"

#include <sys/resource.h>
#include <time.h>

void kvt_spin_init(struct kvt_spin *s, uint64_t max_ns)
{
	*s = (struct kvt_spin){ .max_ns = max_ns, .cur_ns = max_ns };
}

uint64_t kvt_spin_window(const struct kvt_spin *s, uint64_t now_ns)
{
	if (!s->max_ns || now_ns < s->resume_ns)
		return 0;
	return s->cur_ns;
}

void kvt_spin_done(struct kvt_spin *s, uint64_t polled_ns, bool hit,
		   bool preempted, uint64_t waited_ns, uint64_t now_ns)
{
	if (!s->max_ns)
		return;
	if (polled_ns || hit) {
		s->polls++;
		s->preempted += preempted;
		s->preempts += preempted;
		if (s->preempted >= KVT_SPIN_PREEMPT_LIMIT) {
			s->backoffs++;
			s->cur_ns = 0;
			s->resume_ns = now_ns + KVT_SPIN_BACKOFF_NS;
			s->seen = s->preempted = 0;
			return;
		}
		if (++s->seen == KVT_SPIN_PREEMPT_OF)
			s->seen = s->preempted = 0;
	}
	if (hit) {
		s->hits++;
		return;
	}
	if (now_ns < s->resume_ns)
		return;
	if (polled_ns + waited_ns <= s->max_ns) {
		uint64_t next = s->cur_ns ? s->cur_ns * 2 : KVT_SPIN_START_NS;

		s->cur_ns = next < s->max_ns ? next : s->max_ns;
	} else {
		s->cur_ns /= 2;
		if (s->cur_ns < 1000)
			s->cur_ns = 0;
	}
}

long kvt_spin_nivcsw(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru) < 0)
		return 0;
	return ru.ru_nivcsw;
}
