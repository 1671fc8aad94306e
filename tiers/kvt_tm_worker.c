/*
 * kvt_tm_worker.c - the tier manager's worker thread and its job queues
 * (kvt_tm_int.h).
 *
 * Everything slow runs here, never on the event loop: compression for L2
 * and L3, decompression of promoted blocks, and every L3 read, write and
 * delete.  The loop queues jobs on `todo` (kvt_tmi_submit); the worker takes
 * them in order, gathering runs of L3 writes or reads into batches, does
 * them without the lock, appends them to `done` and writes the eventfd; the
 * loop takes `done` back (kvt_tmi_worker_done) and applies the results in
 * kvt_tm_dispatch().  Both queues are under `mu`.  While the worker runs a
 * job it owns the job's key, input and output fields; the loop meanwhile
 * touches only its own bookkeeping in the job (stale, flags, waiters, the
 * transit and promos links), which the worker never reads.  L3 and the
 * `gone` ghost have locks of their own.  FIFO order is what keeps L3
 * right: a key's delete is queued behind any write of it.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "kvt_mem.h"
#include "kvt_tm_int.h"

/* Most L3 writes (and bytes) the worker gathers into one batch. */
#define TM_L3_BATCH 64
#define TM_L3_BATCH_BYTES (64u << 20)

/* Most L3 reads the worker issues together. */
#define TM_READ_BATCH 64

/* ---- jobs and the queue (loop thread) ----------------------------------- */

struct job *kvt_tmi_job_new(enum job_kind kind, const struct kvt_key *k)
{
	struct job *j = calloc(1, sizeof(*j) + k->ns_len + k->key_len);

	if (!j)
		return NULL;
	j->kind = kind;
	if (k->ns_len)
		memcpy(j->name, k->ns, k->ns_len);
	if (k->key_len)
		memcpy(j->name + k->ns_len, k->key, k->key_len);
	j->k.ns = j->name;
	j->k.ns_len = k->ns_len;
	j->k.key = j->name + k->ns_len;
	j->k.key_len = k->key_len;
	return j;
}

void kvt_tmi_job_free(struct job *j)
{
	if (!j)
		return;
	kvt_ref_release(j->src);
	kvt_block_free(j->out);
	free(j);
}

void kvt_tmi_submit(struct kvt_tm *tm, struct job *j)
{
	pthread_mutex_lock(&tm->mu);
	if (tm->todo_tail)
		tm->todo_tail->next = j;
	else
		tm->todo_head = j;
	tm->todo_tail = j;
	pthread_cond_signal(&tm->cv);
	pthread_mutex_unlock(&tm->mu);
	tm->jobs_pending++;
}

/* ---- the work (worker thread) ------------------------------------------- */

/* Compresses j->src into j->out unless it already is a frame. */
static int worker_compress(struct kvt_tm *tm, struct job *j)
{
	const uint8_t *d = kvt_ref_data(j->src);
	size_t len = kvt_ref_len(j->src);

	if (j->src_codec != KVT_CODEC_RAW) {
		/* Already a frame (an L2 victim): L3 stores it as it is. */
		j->out_codec = j->src_codec;
		return 0;
	}
	return kvt_codec_compress(tm->wctx, d, len,
				  kvt_codec_elem_size(j->dtype), &j->out,
				  &j->out_len, &j->out_codec);
}

static void worker_to_l3(struct kvt_tm *tm, struct job **jobs, size_t n)
{
	struct kvt_l3_item items[TM_L3_BATCH];
	size_t m = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];

		j->status = worker_compress(tm, j);
		if (j->status)
			continue;
		items[m].k = j->k;
		items[m].data = j->out ? j->out : kvt_ref_data(j->src);
		items[m].len = j->out ? j->out_len : kvt_ref_len(j->src);
		items[m].codec = j->out_codec;
		items[m].dtype = j->dtype;
		items[m].raw_len = j->raw_len;
		items[m].expiry = j->expires;
		m++;
	}
	rc = m ? kvt_l3_put_batch(tm->l3, items, m) : 0;
	for (size_t i = 0; i < n; i++)
		if (!jobs[i]->status)
			jobs[i]->status = rc;
}

/* Decodes len bytes of codec at src into j->out, a new block of raw_len. */
static int decompress_into(struct kvt_tm *tm, struct job *j, uint8_t codec,
			   const uint8_t *src, size_t len)
{
	j->out = kvt_block_alloc(j->raw_len);
	if (!j->out)
		return -ENOMEM;
	j->out_len = j->raw_len;
	if (codec == KVT_CODEC_RAW) {
		if (len != j->raw_len)
			return KVT_ECORRUPT;
		memcpy(j->out, src, len);
		return 0;
	}
	return kvt_codec_decompress(tm->wctx, codec, src, len, j->out,
				    j->raw_len);
}

static void worker_from_l3(struct kvt_tm *tm, struct job **jobs, size_t n)
{
	struct kvt_l3_read reads[TM_READ_BATCH];
	int rc;

	memset(reads, 0, sizeof(reads));
	for (size_t i = 0; i < n; i++)
		reads[i].k = jobs[i]->k;
	rc = kvt_l3_read_batch(tm->l3, NULL, reads, n);
	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];
		struct kvt_l3_read *r = &reads[i];

		j->status = rc ? rc : r->status;
		if (!j->status) {
			j->raw_len = r->raw_len;
			j->dtype = r->dtype;
			j->expires = r->expiry;
			j->status = decompress_into(tm, j, r->codec, r->data,
						    r->len);
		}
		free(r->mem);
	}
}

/* ---- the thread --------------------------------------------------------- */

/*
 * Takes the next run of work from todo: consecutive L3 writes or L3 reads
 * are gathered into one batch so the disk sees large writes and many
 * reads in flight.
 */
static size_t take_run(struct kvt_tm *tm, struct job **run)
{
	struct job *j = tm->todo_head;
	enum job_kind kind = j->kind;
	size_t n = 0, bytes = 0, max = 1;

	if (kind == JOB_TO_L3)
		max = TM_L3_BATCH;
	else if (kind == JOB_FROM_L3)
		max = TM_READ_BATCH;
	while (j && n < max && j->kind == kind && bytes < TM_L3_BATCH_BYTES) {
		run[n++] = j;
		bytes += j->src ? kvt_ref_len(j->src) : 0;
		j = j->next;
	}
	tm->todo_head = j;
	if (!j)
		tm->todo_tail = NULL;
	for (size_t i = 0; i < n; i++)
		run[i]->next = NULL;
	return n;
}

/*
 * Does the work of a run taken by take_run() (all of one kind), setting
 * each job's status and output.  No lock is held: the jobs belong to this
 * thread until they are put on done.
 */
static void run_jobs(struct kvt_tm *tm, struct job **run, size_t n)
{
	switch (run[0]->kind) {
	case JOB_TO_L2:
		run[0]->status = worker_compress(tm, run[0]);
		break;
	case JOB_TO_L3:
		worker_to_l3(tm, run, n);
		break;
	case JOB_FROM_L2: {
		struct job *j = run[0];
		j->status = decompress_into(tm, j, j->src_codec,
					    kvt_ref_data(j->src),
					    kvt_ref_len(j->src));
		break;
	}
	case JOB_FROM_L3:
		worker_from_l3(tm, run, n);
		break;
	case JOB_L3_DEL:
		run[0]->status = kvt_l3_del(tm->l3, &run[0]->k);
		break;
	case JOB_L3_DROP: {
		uint64_t dropped = 0;
		run[0]->status = kvt_l3_drop_ns(tm->l3, run[0]->k.ns,
						run[0]->k.ns_len, &dropped);
		run[0]->count += dropped;
		break;
	}
	}
}

/*
 * The worker thread: takes runs of jobs from todo in order, does them with
 * the lock released, and appends them to done, waking the loop.
 */
static void *worker_main(void *arg)
{
	struct kvt_tm *tm = arg;
	struct job *run[TM_L3_BATCH > TM_READ_BATCH ? TM_L3_BATCH
						     : TM_READ_BATCH];

	pthread_mutex_lock(&tm->mu);
	for (;;) {
		size_t n;

		while (!tm->todo_head && !tm->quit)
			pthread_cond_wait(&tm->cv, &tm->mu);
		if (tm->quit)
			break;
		n = take_run(tm, run);
		pthread_mutex_unlock(&tm->mu);

		run_jobs(tm, run, n);

		pthread_mutex_lock(&tm->mu);
		for (size_t i = 0; i < n; i++) {
			if (tm->done_tail)
				tm->done_tail->next = run[i];
			else
				tm->done_head = run[i];
			tm->done_tail = run[i];
		}
		/* Wake the loop; a full counter only means it is awake. */
		uint64_t one = 1;
		if (write(tm->efd, &one, sizeof(one)) < 0) {
			/* EAGAIN: the counter is saturated, still readable. */
		}
	}
	pthread_mutex_unlock(&tm->mu);
	return NULL;
}

/* ---- start, stop, results (loop thread) --------------------------------- */

int kvt_tmi_worker_start(struct kvt_tm *tm, int level)
{
	sigset_t all, old;
	int rc = kvt_codec_ctx_new(&tm->wctx, level);

	if (rc)
		return rc;
	tm->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (tm->efd < 0)
		return -errno;
	pthread_mutex_init(&tm->mu, NULL);
	pthread_cond_init(&tm->cv, NULL);
	/*
	 * The worker must never take the process's signals: the daemon reads
	 * them from a signalfd on the loop thread.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&tm->worker, NULL, worker_main, tm);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return rc;
	tm->worker_running = true;
	return 0;
}

static void free_queue(struct job *j)
{
	while (j) {
		struct job *next = j->next;
		kvt_tmi_job_free(j);
		j = next;
	}
}

void kvt_tmi_worker_stop(struct kvt_tm *tm)
{
	if (tm->worker_running) {
		pthread_mutex_lock(&tm->mu);
		tm->quit = true;
		pthread_cond_signal(&tm->cv);
		pthread_mutex_unlock(&tm->mu);
		pthread_join(tm->worker, NULL);
		/* Waiters are not called: the daemon has closed its clients. */
		free_queue(tm->todo_head);
		free_queue(tm->done_head);
		pthread_mutex_destroy(&tm->mu);
		pthread_cond_destroy(&tm->cv);
		tm->worker_running = false;
	}
	kvt_codec_ctx_free(tm->wctx);
	tm->wctx = NULL;
	if (tm->efd >= 0)
		close(tm->efd);
	tm->efd = -1;
}

struct job *kvt_tmi_worker_done(struct kvt_tm *tm)
{
	struct job *j;
	uint64_t junk;

	if (read(tm->efd, &junk, sizeof(junk)) < 0) {
		/* EAGAIN: the daemon's own read already reset it. */
	}
	pthread_mutex_lock(&tm->mu);
	j = tm->done_head;
	tm->done_head = tm->done_tail = NULL;
	pthread_mutex_unlock(&tm->mu);
	return j;
}

int kvt_tm_event_fd(struct kvt_tm *tm)
{
	return tm && tm->worker_running ? tm->efd : -1;
}
