#!/bin/sh
# Runs a program under valgrind memcheck for `make valgrind`
# (tests/valgrind.sh): full leak check, definite and indirect leaks count as
# errors, exit status 99 on any error, one log per process in
# $KVTIER_VG_LOGS named after the program and its pid (a process killed with
# SIGKILL still leaves the errors found so far in its log).  --fair-sched:
# valgrind runs one thread at a time, and without it a thread spinning on a
# flag (test_l3's test_contains_threaded) starves the one it waits for.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
exec valgrind --tool=memcheck --leak-check=full \
	--show-leak-kinds=definite,indirect \
	--errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
	--track-origins=yes --num-callers=30 --fair-sched=yes \
	--suppressions="$ROOT/tests/valgrind.supp" \
	--log-file="${KVTIER_VG_LOGS:-/tmp}/$(basename "$1").%p.log" "$@"
