/*
 * kvtier_cli_load.h - the workload of `kvtier bench`, defined once: key
 * names, values, value checks, the latency and time accounting, the result
 * figures and their JSON line.  Linked into the kvtier tool and into
 * tests/bench/bench_kvs (the same workload against Redis, memcached and
 * memcpy), so that both measure the same thing by construction.  Does no
 * I/O of its own except kvt_load_print_json.  Not part of libkvtier.
 *
 * Working set: keys "bench-SIZE-I" for I in 0..keys-1; request g (numbered
 * 0..requests-1 over all clients) uses key g % keys, and client t does a
 * contiguous share of the g's (kvt_load_share).  Values are pseudo-random
 * bytes: value I is a window of one random pool starting at
 * (I % KVT_LOAD_VARIANTS) * KVT_LOAD_VARIANT_STEP, so that neighbouring
 * keys hold different values without keys x size bytes of source memory.
 *
 * Checks (kvt_load_check): every get is checked for length and its first
 * and last 8 bytes; the first read of each key (the first pass) is checked
 * whole against a checksum computed before the run, and that check's time
 * is left out of the elapsed time.
 */
#ifndef KVTIER_CLI_LOAD_H
#define KVTIER_CLI_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* Distinct values in the pool, KVT_LOAD_VARIANT_STEP bytes apart. */
#define KVT_LOAD_VARIANTS 256
#define KVT_LOAD_VARIANT_STEP 64
/* Capacity of a key name buffer ("bench-SIZE-I" with two u64s fits). */
#define KVT_LOAD_KEY_MAX 48
/* Default working set: keys x size at most this many bytes. */
#define KVT_LOAD_WORKING_SET (256ull << 20)
/* Largest --requests (and --keys): every latency is kept in RAM. */
#define KVT_LOAD_REQUESTS_MAX 100000000ull
/* Largest --clients: one thread and one connection each. */
#define KVT_LOAD_CLIENTS_MAX 256u
/* Largest --size: a value's length travels in a u32. */
#define KVT_LOAD_SIZE_MAX 0xffffffffull

enum kvt_load_op {
	KVT_LOAD_PUT,
	KVT_LOAD_GET,
	KVT_LOAD_MGET, /* kvtier only: batches of keys per call */
};

/* The values of a run, made before the clock starts. */
struct kvt_load_pool {
	uint8_t *bytes;	   /* random bytes, len of them; owned */
	size_t len;
	uint64_t size;	   /* value bytes */
	unsigned variants; /* distinct values, min(keys, KVT_LOAD_VARIANTS) */
	uint64_t sums[KVT_LOAD_VARIANTS]; /* kvt_load_checksum of each */
};

/*
 * What one client measured.  lat_us has room for the client's count of
 * requests; the timed loop appends one latency per request.
 */
struct kvt_load_tally {
	float *lat_us;	 /* owned, touched by kvt_load_tally_init */
	uint64_t n_lat;
	uint64_t errors;
	struct timespec t0, t1; /* the client's first start, last end */
	double verify_s;	/* time of whole-value checks, off the clock */
};

/* The figures of a run, as printed. */
struct kvt_load_result {
	double seconds;	 /* first start to last end, minus checks */
	double ops_per_s;
	double gbytes_per_s; /* 10^9 bytes/s */
	double p50_us, p99_us; /* nearest rank */
	uint64_t errors;
};

/* Seconds from a to b (negative if b is earlier). */
double kvt_load_ts_diff(const struct timespec *a, const struct timespec *b);

/* A 64-bit checksum of p[0..n). */
uint64_t kvt_load_checksum(const uint8_t *p, size_t n);

/*
 * Writes the name of key i of a run with values of size bytes to buf
 * (capacity cap, KVT_LOAD_KEY_MAX is enough) and returns its length.
 */
size_t kvt_load_key_name(char *buf, size_t cap, uint64_t size, uint64_t i);

/* "put", "get" or "mget". */
const char *kvt_load_op_name(enum kvt_load_op op);

/* Parses "put", "get" or "mget"; returns 0, or -1 (*op unchanged). */
int kvt_load_op_parse(const char *s, enum kvt_load_op *op);

/* Parses a decimal count in [lo, hi]; returns 0, or -1 (*out unchanged). */
int kvt_load_parse_count(const char *s, uint64_t lo, uint64_t hi,
			 uint64_t *out);

/*
 * Parses a value size with K/M/G suffixes, 1 to KVT_LOAD_SIZE_MAX;
 * returns 0, or -1 (*out may have changed).
 */
int kvt_load_parse_size(const char *s, uint64_t *out);

/*
 * The working set of a run: keys if nonzero, else as many keys of size
 * bytes as fit in KVT_LOAD_WORKING_SET (at least 1); never more than
 * requests, since more keys than requests would store keys nobody reads.
 */
uint64_t kvt_load_keys(uint64_t keys, uint64_t size, uint64_t requests);

/* Client t of n's share of requests: [*first, *first + *count). */
void kvt_load_share(uint64_t requests, unsigned n, unsigned t,
		    uint64_t *first, uint64_t *count);

/*
 * malloc(n) (at least 1 byte) with every page touched, for memory the
 * timed loop writes: first-touch page faults are expensive on virtual
 * machines and would be charged to the server otherwise.  NULL if out of
 * memory; free() it.
 */
void *kvt_load_alloc_touched(size_t n);

/*
 * Makes the values of a run with keys keys of size bytes (size >= 1).
 * Returns 0, or -ENOMEM.  Free with kvt_load_pool_free, also after a
 * failure.
 */
int kvt_load_pool_init(struct kvt_load_pool *p, uint64_t size, uint64_t keys);
void kvt_load_pool_free(struct kvt_load_pool *p); /* accepts NULL */

/* The value of key (p->size bytes), inside the pool. */
const uint8_t *kvt_load_value(const struct kvt_load_pool *p, uint64_t key);

/*
 * Checks got[0..len), the value request g read, in a run over keys keys.
 * The whole-value check of a first read is timed and added to *verify_s.
 * Returns true if the value is right.
 */
bool kvt_load_check(const struct kvt_load_pool *p, uint64_t keys,
		    uint64_t g, const uint8_t *got, size_t len,
		    double *verify_s);

/* Room for count latencies.  Returns 0, or -ENOMEM. */
int kvt_load_tally_init(struct kvt_load_tally *t, uint64_t count);
void kvt_load_tally_free(struct kvt_load_tally *t); /* accepts NULL */

/*
 * The figures of a run of requests requests of size bytes from the n
 * clients' tallies t[0..n) (n >= 1).  Returns 0, or -ENOMEM.
 */
int kvt_load_result_compute(struct kvt_load_result *r,
			    const struct kvt_load_tally *t, unsigned n,
			    uint64_t requests, uint64_t size);

/*
 * Prints a run's result as one JSON line: {"server":..., (only if server
 * is not NULL) "op", "size", "clients", "requests", "keys", "seconds",
 * "ops_per_s", "gbytes_per_s", "p50_us", "p99_us", "errors"}.  The keys
 * are a contract (DESIGN.md, tests/bench/compare).
 */
void kvt_load_print_json(FILE *out, const char *server, enum kvt_load_op op,
			 uint64_t size, unsigned clients, uint64_t requests,
			 uint64_t keys, const struct kvt_load_result *r);

#endif /* KVTIER_CLI_LOAD_H */
