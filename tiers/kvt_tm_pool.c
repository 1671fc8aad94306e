/*
 * kvt_tm_pool.c - the tier manager's worker pool and its lanes
 * (kvt_tm_int.h).
 *
 * Everything slow runs here, never on the event loop: compression for L2
 * and L3, decompression of blocks read from below, and every L3 read,
 * write and delete.  N worker threads (--workers) serve two lanes:
 *
 *   CPU lane      TO_L2 (compress), FROM_L2 (decompress), the compression
 *                 of a raw block bound for L3, FROM_L3 (read, then
 *                 decompress) and the copies of client memory (SEG_*,
 *                 kvt_tm_seg.c; SEG_L3 reads batched as FROM_L3's): any
 *                 worker, in parallel.  A run is
 *                 one job, or for L3 reads a share of the queued reads
 *                 (ceil(queued / workers), at most TM_READ_BATCH), so that
 *                 one large MGET spreads over every worker.
 *   L3 write lane TO_L3, L3_DEL, L3_DROP: serial.  At most one worker is inside
 *                 at a time and takes the lane's jobs in submission order,
 *                 consecutive writes gathered into one kvt_l3_put_batch, so
 *                 a key's write, its delete and a drop of its namespace
 *                 reach L3 in the order the loop decided them.
 *
 * A TO_L3 job of a raw block sits in both lanes: its place in the write
 * lane is taken at submission (so lane order is submission order), and its
 * compression is queued on the CPU lane; the write lane does not pass it
 * until the compression is done.  A free worker takes the oldest runnable
 * run of either lane (by submission number), so with one worker the pool
 * runs jobs in the order they came, as the single worker did before.
 *
 * The loop queues jobs (kvt_tmi_submit) and takes finished ones back
 * (kvt_tmi_pool_done) after the eventfd fires, applying them in
 * kvt_tm_dispatch().  Queues and counters are under `mu`.  While a worker
 * runs a job it owns the job's input and output fields; the loop meanwhile
 * touches only its own bookkeeping in the job (kvt_tm_int.h says which),
 * which workers never read.  L3 and the `gone` ghost have locks of their
 * own; L3's writer calls come only from the write lane, one at a time.
 *
 * Room for more: a lane is a queue plus whether it is serial; a lane of
 * network I/O (L4) would get threads of its own that serve only it, so
 * that blocking I/O never occupies the CPU workers.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "kvt_mem.h"
#include "kvt_tm_int.h"

/* Most L3 writes (and bytes) the write lane gathers into one batch. */
#define TM_L3_BATCH 64
#define TM_L3_BATCH_BYTES (64u << 20)

/* Most L3 reads a worker issues together (L3's default queue depth). */
#define TM_READ_BATCH 64

/*
 * L3 reads run on any worker, each with a reader of its own
 * (kvt_l3_reader_open: its own ring or pread, its own scratch), beside the
 * write lane: L3 keeps a region from being overwritten under a read in
 * flight, and the loop never starts a read of a key whose delete or drop
 * is still queued (kvt_tm_order.c).  0 keeps them in the serial lane,
 * ordered with the writes (as before L3 had concurrent readers).
 */
#define TM_L3_PARALLEL_READS 1

/* ---- jobs and the queues (loop thread) ---------------------------------- */

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
	j->hash = kvt_key_hash(&j->k);
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

static enum tm_lane lane_of(enum job_kind kind)
{
	switch (kind) {
	case JOB_TO_L2:
	case JOB_FROM_L2:
	case JOB_SEG_COPY:
	case JOB_SEG_FRAME:
	case JOB_SEG_PUT:
		return TM_LANE_CPU;
	case JOB_FROM_L3:
	case JOB_SEG_L3:
		return TM_L3_PARALLEL_READS ? TM_LANE_CPU : TM_LANE_L3W;
	case JOB_TO_L3:
	case JOB_L3_DEL:
	case JOB_L3_DROP:
		break;
	}
	return TM_LANE_L3W;
}

/* Appends j to lane l's queue (mu held). */
static void q_push(struct kvt_tm *tm, enum tm_lane l, struct job *j)
{
	struct tm_lane_q *q = &tm->lanes[l];

	j->qnext[l] = NULL;
	if (q->tail)
		q->tail->qnext[l] = j;
	else
		q->head = j;
	q->tail = j;
	q->depth++;
}

/* Takes the head of lane l's queue (mu held; the queue is not empty). */
static struct job *q_pop(struct kvt_tm *tm, enum tm_lane l)
{
	struct tm_lane_q *q = &tm->lanes[l];
	struct job *j = q->head;

	q->head = j->qnext[l];
	if (!q->head)
		q->tail = NULL;
	j->qnext[l] = NULL;
	q->depth--;
	return j;
}

void kvt_tmi_submit(struct kvt_tm *tm, struct job *j)
{
	enum tm_lane l = lane_of(j->kind);

	pthread_mutex_lock(&tm->mu);
	j->seq = ++tm->seq;
	if (j->kind == JOB_TO_L3 && j->src_codec == KVT_CODEC_RAW) {
		/* Compress on any worker; the write lane waits for it. */
		j->pre_stage = true;
		q_push(tm, TM_LANE_CPU, j);
	}
	q_push(tm, l, j);
	if (l == TM_LANE_CPU && tm_job_reads_l3(j->kind))
		tm->reads_queued++;
	pthread_cond_signal(&tm->cv);
	pthread_mutex_unlock(&tm->mu);
	tm->jobs_pending++;
}

/* ---- the work (worker threads) ------------------------------------------ */

/* Compresses j->src into j->out unless it already is a frame. */
static int worker_compress(struct tm_worker *w, struct job *j)
{
	const uint8_t *d = kvt_ref_data(j->src);
	size_t len = kvt_ref_len(j->src);

	if (j->src_codec != KVT_CODEC_RAW) {
		/* Already a frame (an L2 victim): L3 stores it as it is. */
		j->out_codec = j->src_codec;
		return 0;
	}
	return kvt_codec_compress(w->ctx, d, len,
				  kvt_codec_elem_size(j->dtype), &j->out,
				  &j->out_len, &j->out_codec);
}

static void worker_to_l3(struct tm_worker *w, struct job **jobs, size_t n)
{
	struct kvt_l3_item items[TM_L3_BATCH];
	size_t m = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];

		/* A raw block was compressed on the CPU lane already. */
		if (!j->compressed)
			j->status = worker_compress(w, j);
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
	rc = m ? kvt_l3_put_batch(w->tm->l3, items, m) : 0;
	for (size_t i = 0; i < n; i++)
		if (!jobs[i]->status)
			jobs[i]->status = rc;
}

/* Decodes len bytes of codec at src into j->out, a new block of raw_len. */
static int decompress_into(struct tm_worker *w, struct job *j, uint8_t codec,
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
	return kvt_codec_decompress(w->ctx, codec, src, len, j->out,
				    j->raw_len);
}

static void worker_from_l3(struct tm_worker *w, struct job **jobs, size_t n)
{
	struct kvt_l3_read reads[TM_READ_BATCH];
	int rc;

	memset(reads, 0, sizeof(reads));
	for (size_t i = 0; i < n; i++)
		reads[i].k = jobs[i]->k;
	rc = kvt_l3_read_batch(w->tm->l3, w->reader, reads, n);
	for (size_t i = 0; i < n; i++) {
		struct job *j = jobs[i];
		struct kvt_l3_read *r = &reads[i];

		j->status = rc ? rc : r->status;
		if (!j->status) {
			j->raw_len = r->raw_len;
			j->dtype = r->dtype;
			j->expires = r->expiry;
			j->status = decompress_into(w, j, r->codec, r->data,
						    r->len);
		}
		free(r->mem);
	}
}

/*
 * Does the work of a run (all of one kind, from lane l), setting each
 * job's status and output.  No lock is held: the jobs belong to this
 * worker until it hands them back.
 */
static void run_jobs(struct tm_worker *w, enum tm_lane l, struct job **run,
		     size_t n)
{
	struct job *j = run[0];

	switch (j->kind) {
	case JOB_TO_L2:
		j->status = worker_compress(w, j);
		break;
	case JOB_TO_L3:
		if (l == TM_LANE_CPU) {
			/* The compression stage of a write. */
			j->status = worker_compress(w, j);
			j->compressed = true;
		} else {
			worker_to_l3(w, run, n);
		}
		break;
	case JOB_FROM_L2:
		j->status = decompress_into(w, j, j->src_codec,
					    kvt_ref_data(j->src),
					    kvt_ref_len(j->src));
		break;
	case JOB_FROM_L3:
		worker_from_l3(w, run, n);
		break;
	case JOB_L3_DEL:
		j->status = kvt_l3_del(w->tm->l3, &j->k);
		break;
	case JOB_L3_DROP: {
		uint64_t dropped = 0;
		j->status = kvt_l3_drop_ns(w->tm->l3, j->k.ns, j->k.ns_len,
					   &dropped);
		j->count += dropped;
		break;
	}
	case JOB_SEG_COPY:
	case JOB_SEG_FRAME:
	case JOB_SEG_L3:
	case JOB_SEG_PUT:
		kvt_tmi_seg_run(w, run, n);
		break;
	}
}

/* ---- choosing work (mu held) --------------------------------------------- */

/*
 * Takes the next run from lane l: its head and the consecutive jobs of the
 * same kind that may go with it.
 */
static size_t take_from(struct kvt_tm *tm, enum tm_lane l, struct job **run)
{
	struct tm_lane_q *q = &tm->lanes[l];
	enum job_kind kind = q->head->kind;
	size_t n = 0, bytes = 0, max = 1;

	if (l == TM_LANE_L3W && kind == JOB_TO_L3) {
		max = TM_L3_BATCH;
	} else if (tm_job_reads_l3(kind) && l == TM_LANE_CPU) {
		/* A fair share of the queued reads, so all workers read. */
		max = (tm->reads_queued + tm->nworkers - 1) / tm->nworkers;
		if (max > TM_READ_BATCH)
			max = TM_READ_BATCH;
		if (max < 1)
			max = 1;
	} else if (tm_job_reads_l3(kind)) {
		max = TM_READ_BATCH;
	}
	while (q->head && n < max && q->head->kind == kind &&
	       bytes < TM_L3_BATCH_BYTES) {
		struct job *j = q->head;

		/* The write lane stops at a write not yet compressed. */
		if (l == TM_LANE_L3W && j->pre_stage)
			break;
		run[n++] = q_pop(tm, l);
		bytes += j->src ? kvt_ref_len(j->src) : 0;
		if (l == TM_LANE_CPU && tm_job_reads_l3(kind))
			tm->reads_queued--;
		/* A compression stage is a run of its own. */
		if (l == TM_LANE_CPU && kind == JOB_TO_L3)
			break;
	}
	if (q->serial)
		q->inside++;
	return n;
}

/*
 * The oldest runnable run of the lanes in mask `lanes`: a serial lane is
 * runnable when no worker is inside and its head is ready.  Returns its
 * length (0: nothing runnable) and the lane in *lane.
 */
static size_t take_run(struct kvt_tm *tm, unsigned lanes, struct job **run,
		       enum tm_lane *lane)
{
	struct job *best = NULL;

	for (int l = 0; l < TM_LANES; l++) {
		struct tm_lane_q *q = &tm->lanes[l];

		if (!(lanes & (1u << l)) || !q->head ||
		    (q->serial && q->inside) ||
		    (l == TM_LANE_L3W && q->head->pre_stage))
			continue;
		if (!best || q->head->seq < best->seq) {
			best = q->head;
			*lane = (enum tm_lane)l;
		}
	}
	return best ? take_from(tm, *lane, run) : 0;
}

static bool work_left(const struct kvt_tm *tm)
{
	for (int l = 0; l < TM_LANES; l++)
		if (tm->lanes[l].head)
			return true;
	return false;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * A run is done (mu held): its jobs go on done (a compression stage goes
 * back to waiting for its place in the write lane instead), the lane is
 * left, and the loop and another worker are woken as needed.
 */
static void finish_run(struct kvt_tm *tm, enum tm_lane l, struct job **run,
		       size_t n, uint64_t ns)
{
	struct tm_lane_q *q = &tm->lanes[l];
	size_t done = 0;

	for (size_t i = 0; i < n; i++) {
		struct job *j = run[i];

		if (l == TM_LANE_CPU && j->kind == JOB_TO_L3) {
			j->pre_stage = false;
			continue;
		}
		if (tm->done_tail)
			tm->done_tail->next = j;
		else
			tm->done_head = j;
		tm->done_tail = j;
		j->next = NULL;
		done++;
	}
	if (q->serial)
		q->inside--;
	q->busy_ns += ns;
	q->jobs += done;
	tm->pool_busy_ns += ns;
	tm->pool_jobs += done;
	if (done) {
		/* Wake the loop; a full counter only means it is awake. */
		uint64_t one = 1;
		if (write(tm->efd, &one, sizeof(one)) < 0) {
			/* EAGAIN: the counter is saturated, still readable. */
		}
	}
	/*
	 * A released lane or a finished compression may have made work
	 * runnable that no sleeping worker was told about.  (All workers
	 * serve the same lanes, so waking any one is enough; threads of a
	 * lane of their own would wait on a condition variable of their own.)
	 */
	if (work_left(tm))
		pthread_cond_signal(&tm->cv);
}

/*
 * A worker thread: takes the oldest runnable run, does it with the lock
 * released, and hands it back.
 */
static void *worker_main(void *arg)
{
	struct tm_worker *w = arg;
	struct kvt_tm *tm = w->tm;
	struct job *run[TM_L3_BATCH > TM_READ_BATCH ? TM_L3_BATCH
						     : TM_READ_BATCH];

	pthread_mutex_lock(&tm->mu);
	for (;;) {
		enum tm_lane l = TM_LANE_CPU;
		size_t n = 0;

		while (!tm->quit && !(n = take_run(tm, w->lanes, run, &l)))
			pthread_cond_wait(&tm->cv, &tm->mu);
		if (tm->quit)
			break;
		pthread_mutex_unlock(&tm->mu);

		uint64_t t0 = mono_ns();
		run_jobs(w, l, run, n);
		uint64_t ns = mono_ns() - t0;

		pthread_mutex_lock(&tm->mu);
		finish_run(tm, l, run, n, ns);
	}
	pthread_mutex_unlock(&tm->mu);
	return NULL;
}

/* ---- start, stop, results (loop thread) --------------------------------- */

int kvt_tmi_pool_start(struct kvt_tm *tm, unsigned workers, int level)
{
	sigset_t all, old;
	int rc;

	tm->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (tm->efd < 0)
		return -errno;
	tm->workers = calloc(workers, sizeof(*tm->workers));
	if (!tm->workers)
		return -ENOMEM;
	tm->nworkers = workers;
	pthread_mutex_init(&tm->mu, NULL);
	pthread_cond_init(&tm->cv, NULL);
	tm->pool_running = true; /* from here on, stop() undoes it */
	tm->lanes[TM_LANE_L3W].serial = true;
	for (unsigned i = 0; i < workers; i++) {
		tm->workers[i].tm = tm;
		tm->workers[i].id = i;
		/* Every worker serves both lanes (an L4 lane: its own threads). */
		tm->workers[i].lanes = 1u << TM_LANE_CPU | 1u << TM_LANE_L3W;
		rc = kvt_codec_ctx_new(&tm->workers[i].ctx, level);
		if (!rc && tm->l3 && TM_L3_PARALLEL_READS)
			rc = kvt_l3_reader_open(tm->l3, &tm->workers[i].reader);
		if (rc)
			return rc;
	}
	/*
	 * Workers must never take the process's signals: the daemon reads
	 * them from a signalfd on the loop thread.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = 0;
	for (unsigned i = 0; i < workers && !rc; i++) {
		rc = -pthread_create(&tm->workers[i].thread, NULL,
				     worker_main, &tm->workers[i]);
		tm->workers[i].started = rc == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void free_queue(struct job *j, enum tm_lane l, bool skip_writes)
{
	while (j) {
		struct job *next = l < TM_LANES ? j->qnext[l] : j->next;

		/* A write's compression stage is freed with its write. */
		if (!(skip_writes && j->kind == JOB_TO_L3))
			kvt_tmi_job_free(j);
		j = next;
	}
}

void kvt_tmi_pool_stop(struct kvt_tm *tm)
{
	if (tm->pool_running) {
		pthread_mutex_lock(&tm->mu);
		tm->quit = true;
		pthread_cond_broadcast(&tm->cv);
		pthread_mutex_unlock(&tm->mu);
		for (unsigned i = 0; i < tm->nworkers; i++)
			if (tm->workers[i].started)
				pthread_join(tm->workers[i].thread, NULL);
		/* Waiters are not called: the daemon has closed its clients. */
		free_queue(tm->lanes[TM_LANE_CPU].head, TM_LANE_CPU, true);
		free_queue(tm->lanes[TM_LANE_L3W].head, TM_LANE_L3W, false);
		free_queue(tm->done_head, TM_LANES, false);
		pthread_mutex_destroy(&tm->mu);
		pthread_cond_destroy(&tm->cv);
		tm->pool_running = false;
	}
	for (unsigned i = 0; tm->workers && i < tm->nworkers; i++) {
		kvt_codec_ctx_free(tm->workers[i].ctx);
		kvt_l3_reader_close(tm->workers[i].reader);
	}
	free(tm->workers);
	tm->workers = NULL;
	tm->nworkers = 0;
	if (tm->efd >= 0)
		close(tm->efd);
	tm->efd = -1;
}

struct job *kvt_tmi_pool_done(struct kvt_tm *tm)
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

void kvt_tmi_pool_snap(struct kvt_tm *tm, struct tm_pool_snap *st)
{
	memset(st, 0, sizeof(*st));
	if (!tm->pool_running)
		return;
	pthread_mutex_lock(&tm->mu);
	st->workers = tm->nworkers;
	st->busy_ns = tm->pool_busy_ns;
	st->jobs = tm->pool_jobs;
	for (int l = 0; l < TM_LANES; l++) {
		st->queued[l] = tm->lanes[l].depth;
		st->lane_busy_ns[l] = tm->lanes[l].busy_ns;
		st->lane_jobs[l] = tm->lanes[l].jobs;
	}
	pthread_mutex_unlock(&tm->mu);
}
