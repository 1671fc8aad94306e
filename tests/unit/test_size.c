/*
 * test_size.c - unit tests for proto/kvt_size.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "kvt_size.h"
#include "kvtier_errors.h"

static void test_parse_ok(void **state)
{
	static const struct {
		const char *s;
		uint64_t v;
	} cases[] = {
		{ "0", 0 },
		{ "1", 1 },
		{ "1000", 1000 },
		{ "007", 7 },
		{ "512K", 512ull << 10 },
		{ "512k", 512ull << 10 },
		{ "64M", 64ull << 20 },
		{ "2G", 2ull << 30 },
		{ "3T", 3ull << 40 },
		{ "64MiB", 64ull << 20 },
		{ "64mib", 64ull << 20 },
		{ "64MB", 64ull << 20 },
		{ "64mb", 64ull << 20 },
		{ "1KiB", 1024 },
		{ "1kB", 1024 },
		{ "512B", 512 },
		{ "512b", 512 },
		{ "0G", 0 },
		{ " 64M ", 64ull << 20 },
		{ "64 M", 64ull << 20 },
		{ "512 B", 512 },
		{ "18446744073709551615", UINT64_MAX },
		{ "16777215T", 16777215ull << 40 },
	};
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		v = 12345;
		if (kvt_size_parse(cases[i].s, &v) != 0)
			fail_msg("\"%s\" rejected", cases[i].s);
		if (v != cases[i].v)
			fail_msg("\"%s\" parsed as %llu", cases[i].s,
				 (unsigned long long)v);
	}
}

static void test_parse_invalid(void **state)
{
	static const char *const bad[] = {
		"", " ", "-1", "+1", "-0", "12Q", "1.5G", "1,5G", "0x10", "M",
		"B", "KiB", "64iB", "64Mi", "64MiBB", "64MBx", "64 M B", "1e3",
		"64K 1", "64\n2", "inf", "12 Q",
	};
	uint64_t v = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (kvt_size_parse(bad[i], &v) != KVT_EINVAL)
			fail_msg("\"%s\" not rejected with KVT_EINVAL", bad[i]);
	}
	/* A failed parse leaves the output alone. */
	assert_true(v == 42);
	assert_int_equal(kvt_size_parse(NULL, &v), KVT_EINVAL);
	assert_int_equal(kvt_size_parse("1", NULL), KVT_EINVAL);
}

static void test_parse_overflow(void **state)
{
	static const char *const big[] = {
		"18446744073709551616", "99999999999999999999999",
		"16777216T", "17179869184G", "17592186044416M",
		"18014398509481984K", "18014398509481984KiB",
	};
	uint64_t v = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		if (kvt_size_parse(big[i], &v) != KVT_ETOOBIG)
			fail_msg("\"%s\" not rejected with KVT_ETOOBIG",
				 big[i]);
	}
	assert_true(v == 42);
	/* Just below each overflow. */
	assert_int_equal(kvt_size_parse("17179869183G", &v), 0);
	assert_true(v == 17179869183ull << 30);
	assert_int_equal(kvt_size_parse("18014398509481983K", &v), 0);
	assert_true(v == 18014398509481983ull << 10);
}

static void test_format(void **state)
{
	static const struct {
		uint64_t n;
		const char *s;
	} cases[] = {
		{ 0, "0 B" },
		{ 1, "1 B" },
		{ 512, "512 B" },
		{ 1023, "1023 B" },
		{ 1024, "1.0 KiB" },
		{ 1536, "1.5 KiB" },
		{ 1075, "1.0 KiB" },  /* 1.0498 */
		{ 1076, "1.1 KiB" },  /* 1.0508 */
		{ 64ull << 20, "64.0 MiB" },
		{ 2ull << 30, "2.0 GiB" },
		{ 3ull << 40, "3.0 TiB" },
		{ (1ull << 20) - 1, "1.0 MiB" },  /* 1023.999 KiB rounds up */
		{ (1ull << 20) - 52, "1023.9 KiB" },
		{ 1ull << 50, "1.0 PiB" },
		{ 1ull << 60, "1.0 EiB" },
		{ UINT64_MAX, "16.0 EiB" },
	};
	char buf[32];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_ptr_equal(kvt_size_format(cases[i].n, buf, sizeof(buf)),
				 buf);
		assert_string_equal(buf, cases[i].s);
	}
}

static void test_format_small_buffer(void **state)
{
	char buf[8];

	(void)state;
	memset(buf, 'x', sizeof(buf));
	kvt_size_format(64ull << 20, buf, 4);
	assert_string_equal(buf, "64.");
	kvt_size_format(512, buf, 1);
	assert_string_equal(buf, "");
	/* cap 0: nothing written at all. */
	buf[0] = 'x';
	assert_ptr_equal(kvt_size_format(512, buf, 0), buf);
	assert_int_equal(buf[0], 'x');
	assert_null(kvt_size_format(512, NULL, 16));
}

static void test_roundtrip_units(void **state)
{
	char buf[32];
	uint64_t v;

	(void)state;
	/* Whole units format as "N.0 XiB", and "N XiB" parses back. */
	for (unsigned sh = 10; sh <= 40; sh += 10) {
		for (uint64_t n = 1; n < 1024; n = n * 3 + 1) {
			char in[32], *dot;

			kvt_size_format(n << sh, buf, sizeof(buf));
			dot = strchr(buf, '.');
			assert_non_null(dot);
			assert_string_equal(dot + 1 + 1, strchr(buf, ' '));
			memcpy(in, buf, (size_t)(dot - buf));
			strcpy(in + (dot - buf), dot + 2);
			assert_int_equal(kvt_size_parse(in, &v), 0);
			assert_true(v == n << sh);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_parse_overflow),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_small_buffer),
		cmocka_unit_test(test_roundtrip_units),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
