#!/bin/sh
# `make valgrind`: the test suite (tests/run.sh) with every test program and
# every kvtierd it starts under valgrind memcheck (tests/valgrind-wrap.sh),
# then a scan of every valgrind log, so that errors of a daemon that was
# killed, or whose exit status no test looks at, are not missed.  Prints
# "N passed, N failed" from run.sh and one line per log with errors; exits
# non-zero if a test failed or any log has an error or a leak.
#
# Under valgrind the daemon runs with the epoll back end
# (KVTIER_TEST_IO_BACKEND=epoll): valgrind cannot see memory the kernel
# writes through io_uring and would report it uninitialised.
set -u
BUILD=${BUILD:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOGS="$ROOT/$BUILD/logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"
export KVTIER_VG_LOGS="$LOGS"
# Shell tests run $KVTIERD: give them a kvtierd that runs under valgrind,
# on epoll like the C tests' daemons.  (On io_uring, test_cli.sh's DROP
# never got its answer under valgrind: the loop slept in io_uring_enter and
# the worker on its futex.  valgrind runs one thread at a time.)
cat >"$LOGS/kvtierd" <<EOS
#!/bin/sh
exec "$ROOT/tests/valgrind-wrap.sh" "$ROOT/$BUILD/kvtierd" \
	--io-backend "\${KVTIER_TEST_IO_BACKEND:-epoll}" "\$@"
EOS
chmod +x "$LOGS/kvtierd"
export TEST_WRAPPER="$ROOT/tests/valgrind-wrap.sh"
export KVTIER_TEST_WRAPPER="$ROOT/tests/valgrind-wrap.sh"
export TEST_KVTIERD_SH="$LOGS/kvtierd"
export KVTIER_TEST_IO_BACKEND=${KVTIER_TEST_IO_BACKEND:-epoll}
export TEST_TIMEOUT=${TEST_TIMEOUT:-1200}
# The [epoll] repeats of run.sh are skipped: every daemon here runs on epoll.
# So are the [workers1] repeats (the same code with one tier worker) and
# integ/test_admission (a policy test moving 400 MiB; test_tm covers its
# code paths at a smaller scale).
# unit/test_l3 drives L3's own io_uring ring and stalls under valgrind the
# same way (its pread half is not separable); test_tm covers L3 through the
# tier manager.
# The abuse scenarios judge latency, memory and timeouts, which valgrind's
# one-thread-at-a-time daemon distorts.
export TEST_SKIP="${TEST_SKIP-integ/test_memory integ/test_crash integ/test_install.sh integ/test_python.sh integ/test_bench.sh integ/test_bench_l4.sh integ/test_server[epoll] integ/test_tiers[epoll] integ/test_limits[epoll] integ/test_systemd[epoll] integ/test_tiers[workers1] integ/test_oracle[workers1] integ/test_crash[workers1] integ/test_admission unit/test_l3 abuse/*}"
# Smaller workloads where a test has a knob for it.
# (test_arena maps 4 GiB instead of 64 GiB, which valgrind cannot map;
# test_oracle runs 2000 operations instead of 60000.)
export KVTIER_TEST_SCALE=${KVTIER_TEST_SCALE:-valgrind}
export KVTIER_ORACLE_OPS=${KVTIER_ORACLE_OPS:-2000}

start=$(date +%s)
BUILD=$BUILD sh "$ROOT/tests/run.sh"
rc=$?
bad=0
for f in "$LOGS"/*.log; do
	[ -e "$f" ] || continue
	if grep -qE 'ERROR SUMMARY: [1-9]|(definitely|indirectly) lost: [1-9]' "$f" ||
	    grep -qE '^==[0-9]+== (Invalid |Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function)' "$f"; then
		echo "valgrind: errors in $f"
		bad=$((bad + 1))
	fi
done
n=$(ls "$LOGS"/*.log 2>/dev/null | wc -l)
echo "valgrind: $n processes checked, $bad with errors or leaks, $(($(date +%s) - start)) s"
[ "$rc" -eq 0 ] && [ "$bad" -eq 0 ]
