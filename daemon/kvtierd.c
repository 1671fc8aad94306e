/*
 * kvtierd - the kvtier daemon.  Parses its settings, opens the tier manager,
 * and runs the socket loop in the foreground until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "kvt_clock.h"
#include "kvt_config.h"
#include "kvt_log.h"
#include "kvt_loop.h"
#include "kvt_server.h"
#include "kvt_size.h"
#include "kvt_tm.h"
#include "kvtier_defs.h"

/* Creates dir and its parents (mode 0700); returns 0 or -errno. */
static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, n + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * Each client costs a descriptor; raise the soft limit to the hard one so
 * that max_connections is reachable without the operator tuning ulimit.
 */
static void raise_fd_limit(unsigned want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < (rlim_t)want + 64)
		kvt_log(KVT_LOG_WARN, "event=fd_limit_low nofile=%llu "
			"max_connections=%u hint=\"raise LimitNOFILE/ulimit -n\"",
			(unsigned long long)rl.rlim_cur, want);
}

/*
 * Values are megabytes and churn constantly (put, evict, free, put).  By
 * default glibc maps large allocations afresh and trims freed memory back
 * to the kernel, so the next block pays a page fault
 * per 4 KiB on first touch (measured on a VM here: 262 ms to fill 64 MiB of
 * fresh pages vs 3 ms warm).  Serving values up to 32 MiB from the heap and
 * never trimming it keeps freed block memory for reuse; RSS stays bounded
 * by the peak of the tiers' capacity plus requests in flight.
 */
static void tune_malloc(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

/* The tiers' log lines (kvt_tm_config.log) go to the daemon's logger. */
static void tiers_log(void *arg, int level, const char *line)
{
	(void)arg;
	kvt_log(level, "%s", line);
}

/*
 * `kvtierd --check`: read-only, on the store as it is (its own geometry),
 * before anything else: it creates nothing, not even the data directory.
 */
static int run_check(const struct kvt_config *cfg)
{
	char errmsg[512] = "";
	int rc = kvt_tm_check_store(cfg->data_dir, stdout, errmsg,
				    sizeof(errmsg));

	if (rc < 0) {
		fprintf(stderr, "kvtierd: --check: %s%s%s\n", kvt_strerror(rc),
			errmsg[0] ? ": " : "", errmsg);
		return 2;
	}
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct kvt_config cfg;
	struct kvt_tm_config tc = { 0 };
	struct kvt_server *srv = NULL;
	struct kvt_loop *loop = NULL;
	struct kvt_tm *tm = NULL;
	char b1[32], b2[32], b3[32], errmsg[256] = "";
	int rc;

	kvt_config_defaults(&cfg);
	rc = kvt_config_from_args(&cfg, argc, argv);
	if (rc > 0)
		return 0;
	if (rc < 0)
		return 2;
	kvt_log_level = cfg.log_level;
	if (cfg.check)
		return run_check(&cfg);
	tune_malloc();
	raise_fd_limit(cfg.max_connections);

	rc = mkdir_p(cfg.data_dir);
	if (rc) {
		kvt_log(KVT_LOG_ERROR, "event=start_failed data_dir=%s "
			"error=\"%s\"", cfg.data_dir, strerror(-rc));
		fprintf(stderr, "kvtierd: cannot create data directory %s: %s\n",
			cfg.data_dir, strerror(-rc));
		return 1;
	}

	/*
	 * The event loop first: whether io_uring is usable decides the L3
	 * backend too, so a refused io_uring is found (and, with auto,
	 * reported) once.
	 */
	rc = kvt_server_loop_open(&loop, cfg.io_backend);
	if (rc) {
		fprintf(stderr, "kvtierd: cannot start: %s%s\n",
			cfg.io_backend == KVT_IO_URING ?
			"io_uring is unavailable: " :
			"cannot create the event loop: ",
			strerror(-rc));
		if (cfg.io_backend == KVT_IO_URING)
			fprintf(stderr, "kvtierd: --io-backend io_uring "
				"was given; use --io-backend auto (or "
				"epoll) to run on the portable "
				"epoll/pread path\n");
		return 1;
	}
	tc.l3_io_backend = kvt_loop_backend(loop) == KVT_IO_EPOLL ?
			   KVT_TM_L3_IO_PREAD :
			   cfg.io_backend == KVT_IO_URING ?
			   KVT_TM_L3_IO_URING : KVT_TM_L3_IO_AUTO;

	tc.l1_capacity = cfg.l1_size;
	tc.l2_capacity = cfg.l2_size;
	tc.l3_capacity = cfg.l3_size;
	tc.data_dir = cfg.data_dir;
	tc.l2_level = (int)cfg.l2_level;
	tc.workers = cfg.workers;
	/* Copies into registered client memory run on workers, never here. */
	tc.transfers = 1;
	tc.l3_region_size = cfg.l3_region_size;
	tc.l3_write_rate = cfg.l3_write_rate;
	tc.pin_max = cfg.max_pinned;
	tc.l3_key_max = cfg.max_key_size;
	tc.log = tiers_log;
	if (!cfg.no_shm) {
		/*
		 * Room for all of L1 plus blocks that leases keep after their
		 * eviction, PUT slots and promotions in flight.  Pages cost
		 * nothing until touched.
		 */
		uint64_t slack = cfg.l1_size / 4;

		if (slack < (64u << 20))
			slack = 64u << 20;
		tc.shm_size = cfg.shm_size ? cfg.shm_size : cfg.l1_size + slack;
		tc.shm_threshold = cfg.shm_threshold;
		tc.shm_prefault = cfg.shm_prefault;
	}
	if (cfg.l4_url[0] && !cfg.check) {
		tc.l4_url = cfg.l4_url;
		tc.l4_password = cfg.l4_password[0] ? cfg.l4_password : NULL;
		tc.l4_password_file = cfg.l4_password_file[0]
					      ? cfg.l4_password_file : NULL;
		tc.l4_write = cfg.l4_write;
		tc.l4_ttl_s = cfg.l4_ttl_s;
		tc.l4_threads = cfg.l4_threads;
		tc.l4_timeout_ms = cfg.l4_timeout_ms;
		tc.l4_connect_timeout_ms = cfg.l4_connect_timeout_ms;
		tc.l4_queue_max = cfg.l4_queue_size;
		/* An L4 block larger than a client may store is not served. */
		tc.value_max = cfg.max_value_size;
	}
	tc.errmsg = errmsg;
	tc.errmsg_len = sizeof(errmsg);
	rc = kvt_tm_open(&tm, &tc);
	if (rc) {
		/* The data directory is named: the detail may not say where. */
		kvt_log(KVT_LOG_ERROR, "event=start_failed what=tiers "
			"data_dir=%s error=\"%s\" detail=\"%s\"", cfg.data_dir,
			kvt_strerror(rc), errmsg);
		fprintf(stderr, "kvtierd: cannot open the cache tiers in %s: "
			"%s%s%s\n", cfg.data_dir, kvt_strerror(rc),
			errmsg[0] ? ": " : "", errmsg);
		kvt_loop_close(loop);
		return 1;
	}
	struct kvt_tm_stats ts;
	kvt_tm_stats(tm, &ts);
	kvt_log(KVT_LOG_INFO, "event=start version=%s l1=%s l2=%s l3=%s "
		"data_dir=%s io_backend=%s workers=%llu", KVT_VERSION_STRING,
		kvt_size_format(cfg.l1_size, b1, sizeof(b1)),
		kvt_size_format(cfg.l2_size, b2, sizeof(b2)),
		kvt_size_format(cfg.l3_size, b3, sizeof(b3)), cfg.data_dir,
		kvt_io_backend_name(kvt_loop_backend(loop)),
		(unsigned long long)ts.pool.workers);

	if (tc.l4_url) {
		/*
		 * Whether the cluster answers, for the operator; either way the
		 * daemon serves (an L4 that is down costs only L4 hits).  The
		 * wait is bounded by one slot-map load's timeouts.
		 */
		unsigned wait_ms = (cfg.l4_timeout_ms ? cfg.l4_timeout_ms : 1000) +
				   (cfg.l4_connect_timeout_ms ?
					    cfg.l4_connect_timeout_ms : 500);
		int l4rc = kvt_tm_l4_wait_ready(tm, wait_ms);

		kvt_tm_stats(tm, &ts);
		if (l4rc == 0)
			kvt_log(KVT_LOG_INFO, "event=l4 url=%s write=%s ttl=%u "
				"threads=%llu nodes=%llu slots_mapped=%llu",
				cfg.l4_url, cfg.l4_write == KVT_TM_L4_PUT ?
				"put" : "evict", cfg.l4_ttl_s,
				(unsigned long long)ts.l4.threads,
				(unsigned long long)ts.l4.nodes,
				(unsigned long long)ts.l4.slots_mapped);
		else
			kvt_log(KVT_LOG_WARN, "event=l4_unreachable url=%s "
				"error=\"%s\" hint=\"serving without L4 hits "
				"until the cluster answers\"", cfg.l4_url,
				l4rc == -EINPROGRESS ? "no answer yet"
						     : kvt_strerror(l4rc));
	}
	if (tc.shm_size) {
		int aerr;

		/* Without --shm-prefault the arena is warmed ahead of use
		 * (kvt_arena_warm()); either needs MADV_POPULATE_WRITE. */
		if (kvt_tm_arena(tm, &aerr) && aerr)
			kvt_log(KVT_LOG_WARN, "event=%s error=\"%s\" "
				"hint=\"needs Linux 5.14; fresh arena pages "
				"are faulted in as values are written\"",
				tc.shm_prefault ? "shm_prefault_failed"
						: "shm_warm_failed",
				kvt_strerror(aerr));
		if (kvt_tm_arena(tm, NULL))
			kvt_log(KVT_LOG_INFO, "event=shm arena=%s threshold=%s "
				"prefault=%d warm_ahead=%s",
				kvt_size_format(tc.shm_size, b1, sizeof(b1)),
				kvt_size_format(tc.shm_threshold, b2,
						sizeof(b2)),
				tc.shm_prefault,
				kvt_size_format(tc.shm_prefault || aerr ? 0 :
						KVT_TM_ARENA_WARM_AHEAD,
						b3, sizeof(b3)));
		else
			kvt_log(KVT_LOG_WARN, "event=shm_unavailable error=\"%s\" "
				"fallback=socket", kvt_strerror(aerr));
	}
	rc = kvt_server_open(&srv, &cfg, loop, tm, argc, argv);
	if (rc) {
		fprintf(stderr, "kvtierd: cannot start on %s: %s\n",
			cfg.socket_path,
			rc == -EADDRINUSE ? "another kvtierd is serving it"
			: rc == KVT_EINVAL
				? "a setting is invalid (see the config_error "
				  "line above)"
				: kvt_strerror(rc));
		kvt_tm_close(tm);
		return 1;
	}
	rc = kvt_server_run(srv);
	kvt_server_close(srv);
	if (cfg.l3_size && !cfg.no_spill) {
		/* A graceful restart loses nothing that fits in L3. */
		uint64_t t0 = kvt_clock_ns();
		struct kvt_tm_spill_stats sp;

		kvt_tm_spill(tm, cfg.spill_timeout_s * 1000u, &sp);
		kvt_log(sp.lost || sp.unfinished ? KVT_LOG_WARN : KVT_LOG_INFO,
			"event=spilled blocks=%llu queued=%llu lost=%llu "
			"unfinished=%llu ms=%llu",
			(unsigned long long)sp.written,
			(unsigned long long)sp.queued,
			(unsigned long long)sp.lost,
			(unsigned long long)sp.unfinished,
			(unsigned long long)((kvt_clock_ns() - t0) / 1000000));
	}
	kvt_tm_close(tm);
	return rc ? 1 : 0;
}
