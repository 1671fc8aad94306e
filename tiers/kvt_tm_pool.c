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
 * L4 has two lanes and threads of its own (tm_l4.threads, --l4-threads)
 * that serve only them and wait on a condition variable of their own, so
 * that a call blocked on a slow cluster never occupies a CPU worker:
 *
 *   L4 read lane  L4_GET (a fair share of the queued gets per run, one
 *                 kvt_l4_get_batch) and L4_PROBE: in parallel.  A block
 *                 fetched goes on to the CPU lane to be decompressed.
 *   L4 write lane L4_PUT, L4_DEL, L4_DROP: serial, consecutive jobs of a
 *                 kind in one batch call, so that a key's put and delete
 *                 and a namespace's drop reach the cluster in order.  A raw
 *                 block's compression is a CPU stage first, as for L3.
 *
 * Between jobs, and at least once a second, one L4 thread polls the
 * namespaces' generations (kvt_tmi_l4_poll) and posts what peers dropped.
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
	kvt_tmi_l4_job_free(j->l4);
	/* Waiters left are nobody's now (the manager is closing). */
	while (j->waiters) {
		struct waiter *w = j->waiters;

		j->waiters = w->next;
		free(w);
	}
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
	case JOB_L4_GET:
	case JOB_L4_PROBE:
	case JOB_L4_GENS: /* never queued */
		return TM_LANE_L4R;
	case JOB_L4_PUT:
	case JOB_L4_DEL:
	case JOB_L4_DROP:
		return TM_LANE_L4W;
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

/* Lanes served by the L4 threads (the others: by the CPU workers). */
#define TM_L4_LANES (1u << TM_LANE_L4R | 1u << TM_LANE_L4W)

/* Wakes a thread that serves lane l (mu held). */
static void wake_lane(struct kvt_tm *tm, enum tm_lane l)
{
	if ((1u << l) & TM_L4_LANES)
		pthread_cond_signal(&tm->l4->cv);
	else
		pthread_cond_signal(&tm->cv);
}

/* Queues j on lane l, and on the CPU lane first if it must be compressed
 * before its place in a serial lane comes (mu held). */
static void queue_job(struct kvt_tm *tm, struct job *j)
{
	enum tm_lane l = lane_of(j->kind);

	if ((j->kind == JOB_TO_L3 || j->kind == JOB_L4_PUT) && j->src &&
	    j->src_codec == KVT_CODEC_RAW) {
		/* Compress on any worker; the write lane waits for it. */
		j->pre_stage = true;
		q_push(tm, TM_LANE_CPU, j);
		wake_lane(tm, TM_LANE_CPU);
	}
	q_push(tm, l, j);
	if (l == TM_LANE_CPU && tm_job_reads_l3(j->kind))
		tm->reads_queued++;
	if ((1u << l) & TM_L4_LANES)
		tm->l4->jobs++; /* loop-owned: only the loop queues jobs */
	if (j->kind == JOB_L4_GET) {
		/*
		 * The share of a run: the queued gets split evenly over the
		 * L4 threads, as they stand when the last one came (a
		 * dispatch's gets come together: one call per thread).
		 */
		unsigned nt = tm->l4->nthreads;

		tm->l4->gets_queued++;
		tm->l4->gets_share = (tm->l4->gets_queued + nt - 1) / nt;
	}
	wake_lane(tm, l);
}

void kvt_tmi_submit(struct kvt_tm *tm, struct job *j)
{
	pthread_mutex_lock(&tm->mu);
	j->seq = ++tm->seq;
	queue_job(tm, j);
	pthread_mutex_unlock(&tm->mu);
	tm->jobs_pending++;
}

void kvt_tmi_submit_list(struct kvt_tm *tm, struct job *head)
{
	pthread_mutex_lock(&tm->mu);
	while (head) {
		struct job *j = head;

		head = j->next;
		j->next = NULL;
		j->seq = ++tm->seq;
		queue_job(tm, j);
		tm->jobs_pending++;
	}
	pthread_mutex_unlock(&tm->mu);
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

/* A block fetched from L4 (its CPU stage): decoded into a new block. */
static void worker_from_l4(struct tm_worker *w, struct job *j)
{
	struct kvt_l4_block *b = &j->l4->blk;

	j->status = decompress_into(w, j, b->codec, b->data, b->len);
	kvt_l4_block_release(b);
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

	if (l == TM_LANE_L4R || l == TM_LANE_L4W) {
		kvt_tmi_l4_run(w, l, run, n);
		return;
	}
	switch (j->kind) {
	case JOB_TO_L2:
		j->status = worker_compress(w, j);
		break;
	case JOB_L4_PUT: /* its compression stage */
		j->status = worker_compress(w, j);
		j->compressed = true;
		break;
	case JOB_L4_GET: /* its decompression stage */
		worker_from_l4(w, j);
		break;
	case JOB_L4_PROBE:
	case JOB_L4_DEL:
	case JOB_L4_DROP:
	case JOB_L4_GENS:
		break; /* never on these lanes */
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
	} else if (l == TM_LANE_L4W) {
		max = TM_L4_BATCH;
	} else if (l == TM_LANE_L4R && kind == JOB_L4_GET) {
		/* A fair share of the queued gets, so all L4 threads fetch. */
		max = tm->l4->gets_share;
		if (max > TM_L4_BATCH)
			max = TM_L4_BATCH;
		if (max < 1)
			max = 1;
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

		/* A write lane stops at a write not yet compressed. */
		if (q->serial && j->pre_stage)
			break;
		run[n++] = q_pop(tm, l);
		bytes += j->src ? kvt_ref_len(j->src) : j->cost;
		if (l == TM_LANE_CPU && tm_job_reads_l3(kind))
			tm->reads_queued--;
		if (l == TM_LANE_L4R && kind == JOB_L4_GET)
			tm->l4->gets_queued--;
		/* A compression or decompression stage is a run of its own. */
		if (l == TM_LANE_CPU &&
		    (kind == JOB_TO_L3 || kind == JOB_L4_PUT ||
		     kind == JOB_L4_GET))
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
		    (q->serial && q->head->pre_stage))
			continue;
		if (!best || q->head->seq < best->seq) {
			best = q->head;
			*lane = (enum tm_lane)l;
		}
	}
	return best ? take_from(tm, *lane, run) : 0;
}

/* True if a lane in mask `lanes` has jobs queued (mu held). */
static bool work_left(const struct kvt_tm *tm, unsigned lanes)
{
	for (int l = 0; l < TM_LANES; l++)
		if ((lanes & (1u << l)) && tm->lanes[l].head)
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

		if (l == TM_LANE_CPU && j->pre_stage) {
			j->pre_stage = false;
			continue;
		}
		if (l == TM_LANE_L4R && j->kind == JOB_L4_GET &&
		    j->status == 0) {
			/* Fetched: decompressed by a CPU worker next. */
			q_push(tm, TM_LANE_CPU, j);
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
	if (!((1u << l) & TM_L4_LANES)) {
		/* L4 threads mostly wait on the network: not pool work. */
		tm->pool_busy_ns += ns;
		tm->pool_jobs += done;
	}
	if (done) {
		/* Wake the loop; a full counter only means it is awake. */
		uint64_t one = 1;
		if (write(tm->efd, &one, sizeof(one)) < 0) {
			/* EAGAIN: the counter is saturated, still readable. */
		}
	}
	/*
	 * A released lane, a finished compression or a fetched block may
	 * have made work runnable that no sleeping thread was told about.
	 * (The CPU workers serve the same lanes, so waking any one is
	 * enough; the L4 threads wait on a condition variable of their own.)
	 */
	if (work_left(tm, ~TM_L4_LANES))
		pthread_cond_signal(&tm->cv);
	if (tm->l4 && work_left(tm, TM_L4_LANES))
		pthread_cond_signal(&tm->l4->cv);
}

/* Appends j to the done list and wakes the loop (mu held). */
static void post_done(struct kvt_tm *tm, struct job *j)
{
	uint64_t one = 1;

	j->next = NULL;
	if (tm->done_tail)
		tm->done_tail->next = j;
	else
		tm->done_head = j;
	tm->done_tail = j;
	if (write(tm->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, still readable. */
	}
}

void kvt_tmi_pool_post(struct kvt_tm *tm, struct job *j)
{
	j->from_pool = true;
	pthread_mutex_lock(&tm->mu);
	post_done(tm, j);
	pthread_mutex_unlock(&tm->mu);
}

/* How often the L4 threads poll the namespaces' generations. */
#define TM_L4_POLL_NS (1000ull * 1000 * 1000)

/*
 * An L4 thread whose turn it is to poll the generations (mu held, and
 * released around the poll): true if it polled.  One thread polls at a
 * time, at most once a TM_L4_POLL_NS, busy lanes or not: a peer's DROP is
 * seen within about a second even while gets keep every thread busy.
 */
static bool l4_poll_turn(struct tm_worker *w)
{
	struct kvt_tm *tm = w->tm;
	struct tm_l4 *x = tm->l4;
	struct job *j;

	if (x->polling || mono_ns() < x->poll_at_ns)
		return false;
	x->polling = true;
	pthread_mutex_unlock(&tm->mu);
	j = kvt_tmi_l4_poll(w);
	pthread_mutex_lock(&tm->mu);
	x->polling = false;
	x->poll_at_ns = mono_ns() + TM_L4_POLL_NS;
	if (j) {
		j->from_pool = true;
		post_done(tm, j);
	}
	return true;
}

/* Waits for work (mu held): an L4 thread no longer than its next poll. */
static void wait_work(struct tm_worker *w)
{
	struct kvt_tm *tm = w->tm;
	struct timespec ts;
	uint64_t at;

	if (!(w->lanes & TM_L4_LANES)) {
		pthread_cond_wait(&tm->cv, &tm->mu);
		return;
	}
	at = tm->l4->poll_at_ns;
	if (at < mono_ns() + 1000000)
		at = mono_ns() + (tm->l4->polling ? TM_L4_POLL_NS : 1000000);
	ts.tv_sec = (time_t)(at / 1000000000ull);
	ts.tv_nsec = (long)(at % 1000000000ull);
	pthread_cond_timedwait(&tm->l4->cv, &tm->mu, &ts);
}

/*
 * A worker thread: takes the oldest runnable run, does it with the lock
 * released, and hands it back.  An L4 thread also polls between runs.
 */
static void *worker_main(void *arg)
{
	struct tm_worker *w = arg;
	struct kvt_tm *tm = w->tm;
	struct job *run[TM_L3_BATCH > TM_READ_BATCH ? TM_L3_BATCH
						     : TM_READ_BATCH];

	_Static_assert(TM_L4_BATCH <= TM_L3_BATCH && TM_L4_BATCH <= TM_READ_BATCH,
		       "an L4 run fits the run array");

	if (w->lanes & TM_L4_LANES)
		kvt_tmi_l4_thread_start(w);
	pthread_mutex_lock(&tm->mu);
	for (;;) {
		enum tm_lane l = TM_LANE_CPU;
		size_t n = 0;

		while (!tm->quit) {
			if ((w->lanes & TM_L4_LANES) && l4_poll_turn(w))
				continue;
			if ((n = take_run(tm, w->lanes, run, &l)))
				break;
			wait_work(w);
		}
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
	tm->lanes[TM_LANE_L4W].serial = true;
	for (unsigned i = 0; i < workers; i++) {
		tm->workers[i].tm = tm;
		tm->workers[i].id = i;
		/* Every worker serves both CPU lanes (L4: its own threads). */
		tm->workers[i].lanes = 1u << TM_LANE_CPU | 1u << TM_LANE_L3W;
		rc = kvt_codec_ctx_new(&tm->workers[i].ctx, level);
		if (!rc && tm->l3 && TM_L3_PARALLEL_READS)
			rc = kvt_l3_reader_open(tm->l3, &tm->workers[i].reader);
		if (rc)
			return rc;
	}
	if (tm->l4) {
		struct tm_l4 *x = tm->l4;
		pthread_condattr_t ca;

		/* Timed waits (the next poll) on the monotonic clock. */
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&x->cv, &ca);
		pthread_condattr_destroy(&ca);
		x->cv_made = true;
		x->threads = calloc(x->nthreads, sizeof(*x->threads));
		if (!x->threads)
			return -ENOMEM;
		for (unsigned i = 0; i < x->nthreads; i++) {
			struct tm_worker *t = &x->threads[i];

			t->tm = tm;
			t->id = workers + i;
			t->lanes = TM_L4_LANES;
			rc = kvt_l4_session_new(x->l4, &t->l4s);
			if (rc)
				return rc;
		}
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
	for (unsigned i = 0; tm->l4 && i < tm->l4->nthreads && !rc; i++) {
		struct tm_worker *t = &tm->l4->threads[i];

		rc = -pthread_create(&t->thread, NULL, worker_main, t);
		t->started = rc == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void free_queue(struct job *j, enum tm_lane l, bool skip_writes)
{
	while (j) {
		struct job *next = l < TM_LANES ? j->qnext[l] : j->next;

		/* A write's compression stage is freed with its write. */
		if (!(skip_writes && j->pre_stage))
			kvt_tmi_job_free(j);
		j = next;
	}
}

void kvt_tmi_pool_stop(struct kvt_tm *tm)
{
	if (tm->pool_running) {
		struct tm_l4 *x = tm->l4;

		pthread_mutex_lock(&tm->mu);
		tm->quit = true;
		pthread_cond_broadcast(&tm->cv);
		if (x && x->cv_made)
			pthread_cond_broadcast(&x->cv);
		pthread_mutex_unlock(&tm->mu);
		for (unsigned i = 0; i < tm->nworkers; i++)
			if (tm->workers[i].started)
				pthread_join(tm->workers[i].thread, NULL);
		/* An L4 thread in a call returns within its timeouts. */
		for (unsigned i = 0; x && x->threads && i < x->nthreads; i++)
			if (x->threads[i].started)
				pthread_join(x->threads[i].thread, NULL);
		/*
		 * Waiters are not called: the daemon has closed its clients.
		 * A job in the CPU lane and a serial one (a write's
		 * compression stage) is freed from the serial lane.
		 */
		free_queue(tm->lanes[TM_LANE_CPU].head, TM_LANE_CPU, true);
		free_queue(tm->lanes[TM_LANE_L3W].head, TM_LANE_L3W, false);
		free_queue(tm->lanes[TM_LANE_L4R].head, TM_LANE_L4R, false);
		free_queue(tm->lanes[TM_LANE_L4W].head, TM_LANE_L4W, false);
		free_queue(tm->done_head, TM_LANES, false);
		pthread_mutex_destroy(&tm->mu);
		pthread_cond_destroy(&tm->cv);
		if (x && x->cv_made)
			pthread_cond_destroy(&x->cv);
		if (x)
			x->cv_made = false;
		tm->pool_running = false;
	}
	for (unsigned i = 0; tm->workers && i < tm->nworkers; i++) {
		kvt_codec_ctx_free(tm->workers[i].ctx);
		kvt_l3_reader_close(tm->workers[i].reader);
	}
	if (tm->l4 && tm->l4->threads) {
		/* Every session before kvt_l4_close() (kvt_tmi_l4_close). */
		for (unsigned i = 0; i < tm->l4->nthreads; i++)
			kvt_l4_session_free(tm->l4->threads[i].l4s);
		free(tm->l4->threads);
		tm->l4->threads = NULL;
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
