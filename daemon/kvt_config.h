/*
 * kvt_config.h - kvtierd's settings: defaults, config file, command line.
 *
 * Precedence: built-in defaults < config file (--config FILE) < flags.
 * The config file holds `name = value` lines whose names are the long flags
 * without their dashes (`l1-size = 4G`); `#` starts a comment.  Unknown names
 * and bad values are errors that name the file and line.
 */
#ifndef KVT_CONFIG_H
#define KVT_CONFIG_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/un.h>

#define KVT_SOCKET_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

struct kvt_config {
	char socket_path[KVT_SOCKET_PATH_MAX];
	char data_dir[PATH_MAX];
	char config_path[PATH_MAX]; /* "" if none */
	uint64_t l1_size;
	uint64_t l2_size;
	uint64_t l3_size;
	uint64_t l3_region_size;
	uint64_t l3_write_rate; /* bytes/s, 0 = unlimited */
	uint64_t max_pinned;	/* bytes of L1 pinned at most, 0 = half */
	uint64_t max_key_size;	 /* bytes */
	uint64_t max_value_size; /* bytes */
	uint64_t max_inflight;	 /* bytes of request bodies held at once */
	unsigned idle_timeout_s; /* close connections idle this long; 0 never */
	unsigned send_timeout_s; /* close clients not reading replies */
	unsigned body_timeout_s; /* close clients that stop mid-frame; 0 never */
	unsigned l2_level;	/* zstd level */
	unsigned workers;	/* tier worker threads, 0 = one per CPU */
	int log_level;
	unsigned max_connections;
	unsigned spill_timeout_s;
	int no_spill; /* SIGTERM: do not move L1/L2 into L3 */
	unsigned socket_mode;  /* permission bits of the socket file */
	char socket_group[64]; /* group of the socket file, "" = ours */
	char allow_uid[512];   /* comma-separated users/uids, "" = any */
	char allow_gid[512];   /* comma-separated groups/gids, "" = any */
	char ns_owner[1024];   /* PREFIX=USER,... namespaces bound to uids */
	int no_shm;		   /* never offer shared memory */
	int shm_prefault;	   /* fault the arena in at start */
	uint64_t shm_size;	   /* arena bytes, 0 = L1 + max(L1/4, 64M) */
	uint64_t shm_threshold;	   /* values this big go through the arena */
	uint64_t shm_lease_max;	   /* bytes one connection may lease */
	unsigned reg_max;	   /* regions one connection may register */
	uint64_t reg_max_bytes;	   /* bytes one connection may register */
	char shm_allow_uid[512];   /* more users trusted with the arena */
	int check;    /* --check: verify L3 and exit */
	int io_backend; /* enum kvt_io_backend (kvt_loop.h) */
	unsigned busy_poll_us; /* poll this long before sleeping; 0 never */
	/* L4: a Redis Cluster shared by every host ("" = none). */
	char l4_url[1024];	   /* redis-cluster://HOST:PORT,... */
	char l4_password[512];	   /* never logged */
	char l4_password_file[PATH_MAX];
	int l4_write;		   /* KVT_TM_L4_EVICT or KVT_TM_L4_PUT */
	unsigned l4_ttl_s;	   /* expiry of blocks in L4, 0 = none */
	unsigned l4_threads;	   /* 0 = 4 */
	unsigned l4_timeout_ms;	   /* 0 = 1000 */
	unsigned l4_connect_timeout_ms; /* 0 = 500 */
	uint64_t l4_queue_size;	   /* bytes of L4 writes queued, 0 = 256M */
};

/* Fills in the built-in defaults (socket: kvt_socket_default()). */
void kvt_config_defaults(struct kvt_config *cfg);

/*
 * Applies the config file (if --config is given) and then the flags in
 * argv to cfg.  Returns 0 to run, 1 if --help or --version was printed
 * (exit 0), or -1 after printing a usage error to stderr (exit 2).
 */
int kvt_config_from_args(struct kvt_config *cfg, int argc, char **argv);

/* Prints the usage text to f. */
void kvt_config_usage(FILE *f);

/*
 * The settings, for code that must treat every one of them (a reload
 * compares each old and new value, so that a setting added to the table
 * can never be missed): there are kvt_config_count() of them; the i-th is
 * named kvt_config_name(i) (its flag without the dashes, NULL past the
 * end), and kvt_config_value() writes its value in cfg as text into buf
 * (cap bytes, truncated, always NUL-terminated): sizes in bytes, numbers
 * in decimal, modes in octal, switches as yes or no, lists and paths as
 * given.  Two configs hold the same value of a setting exactly when the
 * texts are equal (lists compare as written).
 */
size_t kvt_config_count(void);
const char *kvt_config_name(size_t i);
void kvt_config_value(const struct kvt_config *cfg, size_t i, char *buf,
		      size_t cap);
/* Copies the value of the i-th setting from src into dst. */
void kvt_config_copy(struct kvt_config *dst, const struct kvt_config *src,
		     size_t i);

#endif /* KVT_CONFIG_H */
