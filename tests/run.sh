#!/bin/sh
# Runs every test under a timeout: cmocka unit binaries, integration test
# programs and integration shell scripts.  Prints "N passed, N failed".
# BUILD names the build folder (build, build/asan, ...).
# TEST_WRAPPER (words, no quoting) is put before every test program (not
# before the shell scripts' sh), TEST_KVTIERD_SH replaces $KVTIERD for the
# shell scripts and abuse scenarios, and TEST_SKIP lists tests not to run
# (names, or prefixes ending in *: "integ/test_crash abuse/*"): `make valgrind`
# uses them (tests/valgrind.sh).
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export KVTIERD="$ROOT/$BUILD/kvtierd"
export KVTIER="$ROOT/$BUILD/kvtier"
export KVTIER_BUILD="$ROOT/$BUILD"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0
fail=0
failed=""

run_one() {
	name=$1
	shift
	echo "=== $name"
	# Each word is a name, taken literally ("integ/test_server[epoll]"),
	# or, if it ends in *, a prefix ("abuse/*").
	set -f
	for pat in ${TEST_SKIP:-}; do
		case "$pat" in
		*\*) [ "${name#"${pat%\*}"}" != "$name" ] || continue ;;
		*) [ "$name" = "$pat" ] || continue ;;
		esac
		set +f
		echo "--- SKIP: $name"
		return
	done
	set +f
	if timeout "${TEST_TIMEOUT:-300}" "$@"; then
		pass=$((pass + 1))
	else
		rc=$?
		echo "--- FAIL: $name (exit $rc)"
		fail=$((fail + 1))
		failed="$failed $name"
	fi
}

for t in "$ROOT"/tests/unit/test_*.c; do
	[ -e "$t" ] || continue
	t="$ROOT/$BUILD/tests/unit/$(basename "$t" .c)"
	run_one "unit/$(basename "$t")" ${TEST_WRAPPER:-} "$t"
done
for t in "$ROOT"/tests/integ/test_*.c; do
	[ -e "$t" ] || continue
	b="$ROOT/$BUILD/tests/integ/$(basename "$t" .c)"
	run_one "integ/$(basename "$b")" ${TEST_WRAPPER:-} "$b"
done
# The same suites once more on the portable path (--io-backend epoll: the
# socket loop on epoll, L3 on pread/pwrite), as separately named entries.
for t in test_server test_tiers test_limits test_systemd; do
	[ -e "$ROOT/tests/integ/$t.c" ] || continue
	run_one "integ/$t[epoll]" env KVTIER_TEST_IO_BACKEND=epoll \
		"$ROOT/$BUILD/tests/integ/$t"
done
# The tier suites once more with a single tier worker (--workers 1), where
# the pool runs every job in submission order, as separately named entries.
for t in test_tiers test_oracle test_crash; do
	[ -e "$ROOT/tests/integ/$t.c" ] || continue
	run_one "integ/$t[workers1]" env KVTIER_TEST_WORKERS=1 \
		"$ROOT/$BUILD/tests/integ/$t"
done
for t in "$ROOT"/tests/integ/test_*.sh; do
	[ -e "$t" ] || continue
	run_one "integ/$(basename "$t")" \
		env KVTIERD="${TEST_KVTIERD_SH:-$KVTIERD}" sh "$t"
done
# Abuse scenarios (tests/abuse/README.md): one entry per scenario, at the
# size make test runs (tests/abuse/run.sh --long for the full sizes).
for t in "$ROOT"/tests/abuse/scn_*.py; do
	[ -e "$t" ] || continue
	n=$(basename "$t" .py)
	n=${n#scn_}
	run_one "abuse/$n" env KVTIERD="${TEST_KVTIERD_SH:-$KVTIERD}" \
		sh "$ROOT/tests/abuse/run.sh" "$n"
done
# Fuzz corpus replays: each harness over its stored inputs, no libFuzzer.
for t in "$ROOT"/tests/fuzz/fuzz_*.c; do
	[ -e "$t" ] || continue
	h=$(basename "$t" .c)
	run_one "fuzz/replay_$h" ${TEST_WRAPPER:-} \
		"$ROOT/$BUILD/tests/fuzz/replay_$h" \
		"$ROOT/tests/fuzz/corpus/$h"
done

echo
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
