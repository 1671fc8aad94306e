/*
 * fuzz_size.c - libFuzzer harness for kvt_size_parse() and
 * kvt_size_format() (proto/kvt_size.h), which read sizes from the config
 * file and the command line.
 *
 * The input, NUL-terminated, is parsed.  A parsed size is written back in
 * the exact forms the parser documents ("512", "64M", "64 MiB") and must
 * parse to the same number.  kvt_size_format() is not exact (one decimal,
 * which the parser does not accept), so its output is checked against the
 * number instead: the right unit, rounded to the nearest tenth, and always
 * NUL-terminated inside the capacity it was given, however small.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvt_fuzz.h"
#include "kvt_size.h"
#include "kvtier_errors.h"

/* Longest kvt_size_format() output: "18446744073709551615 B" is longer. */
#define FMT_CAP 64

static uint64_t parse_ok(const char *s)
{
	uint64_t v = 0;
	int rc = kvt_size_parse(s, &v);

	if (rc != 0)
		fprintf(stderr, "kvt_size_parse(\"%s\") = %d\n", s, rc);
	KVT_FUZZ_CHECK(rc == 0);
	return v;
}

/* Every exact spelling of v the parser accepts must give v back. */
static void check_exact(uint64_t v)
{
	static const char *const letters = "KMGT";
	char buf[FMT_CAP];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	KVT_FUZZ_CHECK(parse_ok(buf) == v);
	snprintf(buf, sizeof(buf), " %" PRIu64 " B ", v);
	KVT_FUZZ_CHECK(parse_ok(buf) == v);
	for (unsigned i = 0; i < 4; i++) {
		unsigned shift = 10 * (i + 1);

		if (v & (((uint64_t)1 << shift) - 1))
			break;
		snprintf(buf, sizeof(buf), "%" PRIu64 "%c", v >> shift,
			 letters[i]);
		KVT_FUZZ_CHECK(parse_ok(buf) == v);
		snprintf(buf, sizeof(buf), "%" PRIu64 " %ciB", v >> shift,
			 letters[i] + 'a' - 'A');
		KVT_FUZZ_CHECK(parse_ok(buf) == v);
	}
}

/* kvt_size_format(n) must be "N B" or the nearest tenth in binary units. */
static void check_format(uint64_t n, size_t small_cap)
{
	static const char *const units[] = {
		"KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
	};
	char buf[FMT_CAP], unit[8], *tiny;
	unsigned long long whole;
	unsigned tenths, u;
	unsigned __int128 x, ten_n, half;
	int end = 0;

	KVT_FUZZ_CHECK(kvt_size_format(n, buf, sizeof(buf)) == buf);
	KVT_FUZZ_CHECK(memchr(buf, '\0', sizeof(buf)) != NULL);
	if (n < 1024) {
		snprintf(unit, sizeof(unit), "%u", (unsigned)n);
		KVT_FUZZ_CHECK(strncmp(buf, unit, strlen(unit)) == 0);
		KVT_FUZZ_CHECK(strcmp(buf + strlen(unit), " B") == 0);
		/* This form is exact and the parser takes it. */
		KVT_FUZZ_CHECK(parse_ok(buf) == n);
	} else {
		KVT_FUZZ_CHECK(sscanf(buf, "%llu.%u %7s%n", &whole, &tenths,
				      unit, &end) == 3);
		KVT_FUZZ_CHECK(buf[end] == '\0' && tenths <= 9);
		for (u = 0; u < 6; u++)
			if (strcmp(unit, units[u]) == 0)
				break;
		KVT_FUZZ_CHECK(u < 6);
		/* The largest unit that keeps the whole part below 1024. */
		KVT_FUZZ_CHECK(whole >= 1 && (whole < 1024 || u == 5));
		/* |10 n - (10 whole + tenths) 2^shift| <= 2^shift / 2 */
		x = ((unsigned __int128)whole * 10 + tenths) << (10 * (u + 1));
		ten_n = (unsigned __int128)n * 10;
		half = (unsigned __int128)1 << (10 * (u + 1) - 1);
		KVT_FUZZ_CHECK(x > ten_n ? x - ten_n <= half
					 : ten_n - x <= half);
	}

	/* A short buffer gets a NUL-terminated prefix, nothing past it. */
	tiny = malloc(small_cap);
	KVT_FUZZ_CHECK(tiny != NULL);
	KVT_FUZZ_CHECK(kvt_size_format(n, tiny, small_cap) == tiny);
	KVT_FUZZ_CHECK(memchr(tiny, '\0', small_cap) != NULL);
	KVT_FUZZ_CHECK(strncmp(tiny, buf, small_cap - 1) == 0);
	free(tiny);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t v = 0, raw = 0;
	char *s;
	int rc;

	s = malloc(size + 1);
	KVT_FUZZ_CHECK(s != NULL);
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	rc = kvt_size_parse(s, &v);
	KVT_FUZZ_CHECK(rc == 0 || rc == KVT_EINVAL || rc == KVT_ETOOBIG);
	if (rc == 0) {
		check_exact(v);
		check_format(v, 1 + size % 16);
	}
	free(s);

	/* Any 64-bit number, for the formatter's rounding and unit choice. */
	for (size_t i = 0; i < size && i < 8; i++)
		raw |= (uint64_t)data[i] << (8 * i);
	check_format(raw, 1 + (size_t)(raw % 24));
	return 0;
}
