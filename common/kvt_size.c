/*
 * kvt_size.c - byte sizes for config files and command lines ("64M").
 *
 * Parsed by hand rather than with strtoull(): strtoull accepts leading
 * '-' (and wraps "-1" to 2^64-1), '+', and hex/octal prefixes with base 0,
 * none of which a size should mean.  Formatting uses integer arithmetic so
 * the output is identical on every platform and rounding is explicit.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>

#include "kvt_size.h"
#include "kvtier_errors.h"

static const char *skip_space(const char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	return s;
}

/* Returns the power-of-1024 exponent of a unit letter, or -1. */
static int unit_shift(char c)
{
	switch (toupper((unsigned char)c)) {
	case 'K':
		return 10;
	case 'M':
		return 20;
	case 'G':
		return 30;
	case 'T':
		return 40;
	}
	return -1;
}

int kvt_size_parse(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	int shift = 0;

	if (!s || !out)
		return KVT_EINVAL;
	/*
	 * Surrounding blanks are tolerated so that "64M " from a config line
	 * or "512 B" still parse; nothing else is.
	 */
	s = skip_space(s);
	if (!isdigit((unsigned char)*s))
		return KVT_EINVAL;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');

		if (v > (UINT64_MAX - d) / 10)
			return KVT_ETOOBIG;
		v = v * 10 + d;
	}
	s = skip_space(s);
	if (*s && unit_shift(*s) >= 0) {
		shift = unit_shift(*s);
		s++;
		/* "KiB": the 'i' is only meaningful after a unit letter. */
		if (*s == 'i' || *s == 'I') {
			s++;
			if (*s != 'b' && *s != 'B')
				return KVT_EINVAL;
		}
	}
	if (*s == 'b' || *s == 'B')
		s++;
	s = skip_space(s);
	if (*s)
		return KVT_EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return KVT_ETOOBIG;
	*out = v << shift;
	return 0;
}

char *kvt_size_format(uint64_t n, char *buf, size_t cap)
{
	static const char *const units[] = {
		"KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
	};
	const size_t nunits = sizeof(units) / sizeof(units[0]);
	uint64_t whole, tenths;
	unsigned shift;
	size_t u;

	if (!buf || cap == 0)
		return buf;
	if (n < 1024) {
		snprintf(buf, cap, "%u B", (unsigned)n);
		return buf;
	}
	/* Largest unit the value reaches, so that the integer part < 1024. */
	u = 0;
	while (u + 1 < nunits && n >> (10 * (u + 2)) != 0)
		u++;
	for (;;) {
		shift = 10 * (unsigned)(u + 1);
		whole = n >> shift;
		/* remainder < 2^60, so remainder * 10 cannot overflow. */
		tenths = (((n & (((uint64_t)1 << shift) - 1)) * 10) +
			  ((uint64_t)1 << (shift - 1))) >> shift;
		if (tenths == 10) {
			whole++;
			tenths = 0;
		}
		/* 1023.96 KiB rounds to "1024.0 KiB": say "1.0 MiB". */
		if (whole < 1024 || u + 1 == nunits)
			break;
		u++;
	}
	snprintf(buf, cap, "%llu.%u %s", (unsigned long long)whole,
		 (unsigned)tenths, units[u]);
	return buf;
}
