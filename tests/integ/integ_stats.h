/*
 * integ_stats.h - the daemon's stats as integration tests read them:
 * STATS as JSON, and one number out of it, each failing the cmocka test on
 * error.  Include after <cmocka.h> and integ_harness.h.
 */
#ifndef INTEG_STATS_H
#define INTEG_STATS_H

/* Parses one unsigned number field "name":N, inside object obj if set. */
static __attribute__((unused)) uint64_t jnum(const char *json,
					     const char *obj,
					     const char *name)
{
	uint64_t v = 0;

	assert_int_equal(integ_json_u64(json, obj, name, &v), 0);
	return v;
}

/* The daemon's STATS reply (JSON, malloc'd: the caller frees it). */
static __attribute__((unused)) char *stats(kvt_client *c)
{
	char *json = NULL;
	size_t n;

	assert_int_equal(kvt_stats_json(c, &json, &n), 0);
	return json;
}

#endif /* INTEG_STATS_H */
