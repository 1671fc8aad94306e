#!/bin/sh
# tests/abuse/run.sh [--long] [-v] [SCENARIO...] - runs abuse scenarios
# (tests/abuse/scn_*.py, or the named ones: "check_readonly" or
# "scn_check_readonly.py") against real daemons and prints one line per
# scenario:
#
#   PASS name: what was measured [seconds]
#   FAIL name: each broken promise, with what was seen [seconds]
#   SKIP name: why (e.g. not root, no loop devices)
#
# then "abuse: N passed, N failed, N skipped"; exits 1 if any failed.  A
# failing scenario's whole output follows its line (-v: every scenario's).
#
# --long sets ABUSE_SCALE=10 and ABUSE_LONG=1 (the issue's full sizes;
# see each scenario's docstring for how long); ABUSE_SCALE=N chooses any
# scale.  Every scenario runs under `timeout` (ABUSE_TIMEOUT seconds,
# default 300, 3000 with --long); a hang is a failure.
#
# Each scenario gets a folder inside one run folder made here with
# mktemp -d; afterwards any process still running from that folder is
# killed by its pid, mounts under it are unmounted and it is removed.  So a
# scenario that dies half-way leaves nothing behind.
#
# Uses $KVTIERD and $KVTIER (tests/run.sh sets them), else BUILD (default
# build) of this tree; Debian's /usr/bin/python3 (ABUSE_PYTHON to change).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) B=$BUILD ;; *) B="$ROOT/$BUILD" ;; esac
export KVTIER_BUILD=${KVTIER_BUILD:-$B}
export KVTIERD=${KVTIERD:-$KVTIER_BUILD/kvtierd}
export KVTIER=${KVTIER:-$KVTIER_BUILD/kvtier}
export KVTIER_LIB=${KVTIER_LIB:-$KVTIER_BUILD/libkvtier.so.1}
export PYTHONPATH="$ROOT/tests/abuse:$ROOT/client/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
PY=${ABUSE_PYTHON:-/usr/bin/python3}
# Scenarios load libkvtier in Python: a sanitizer build of it needs its
# runtime preloaded (SAN_PY_ENV, empty for an ordinary build).
SAN_BUILD=$KVTIER_BUILD . "$ROOT/tests/integ/sanitizer_env.sh"
verbose=0
limit=300
names=""
while [ $# -gt 0 ]; do
	case "$1" in
	--long) export ABUSE_SCALE=${ABUSE_SCALE:-10} ABUSE_LONG=1; limit=3000 ;;
	-v) verbose=1 ;;
	-h | --help) sed -n '2,26p' "$0"; exit 0 ;;
	-*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	*) names="$names $1" ;;
	esac
	shift
done
limit=${ABUSE_TIMEOUT:-$limit}

RUN_DIR=$(mktemp -d /tmp/kvtier-abuse-run-XXXXXX) || exit 1
export ABUSE_RUN_DIR="$RUN_DIR"

# Kills, by pid, every process whose command line or working directory
# names the run folder, unmounts what is mounted under it.
sweep() {
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[ "$pid" = "$$" ] && continue
		if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$RUN_DIR"; then
			kill -9 "$pid" 2>/dev/null && echo "  (killed leftover pid $pid)"
		fi
	done
	awk -v d="$RUN_DIR" 'index($2, d) == 1 { print $2 }' /proc/mounts |
		sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null && echo "  (unmounted leftover $m)"
		done
}
cleanup() {
	sweep
	rm -rf "$RUN_DIR"
}
# A signal (tests/run.sh's timeout, ^C) goes on to the running scenario,
# which cleans up after itself; then the sweep.
child=""
stop_child() {
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null
		wait "$child" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'stop_child; exit 130' INT TERM HUP
# Output to a closed pipe (run.sh | head): stop, but still clean up.
trap 'exec >/dev/null 2>&1; exit 141' PIPE

if [ -z "$names" ]; then
	for f in "$ROOT"/tests/abuse/scn_*.py; do
		[ -e "$f" ] && names="$names $(basename "$f")"
	done
fi
if [ ! -x "$KVTIERD" ]; then
	echo "abuse: $KVTIERD is not built (make tests-build)" >&2
	exit 2
fi

pass=0 fail=0 skip=0 failed=""
for n in $names; do
	n=${n#scn_}
	n=${n%.py}
	f="$ROOT/tests/abuse/scn_$n.py"
	out="$RUN_DIR/$n.out"
	if [ ! -e "$f" ]; then
		echo "FAIL $n: no such scenario ($f)"
		fail=$((fail + 1)); failed="$failed $n"
		continue
	fi
	t0=$(date +%s)
	# In the background, so that a signal to run.sh is handled at once.
	# shellcheck disable=SC2086 # SAN_PY_ENV is words on purpose
	timeout -k 15 "$limit" env $SAN_PY_ENV "$PY" "$f" >"$out" 2>&1 &
	child=$!
	wait "$child"
	rc=$?
	child=""
	secs=$(($(date +%s) - t0))
	sweep >>"$out"
	verdict=$(grep -E '^(PASS|FAIL|SKIP):' "$out" | tail -n 1)
	case "$rc:$verdict" in
	0:PASS:*) word=PASS; why=${verdict#PASS: } ;;
	77:SKIP:*) word=SKIP; why=${verdict#SKIP: } ;;
	124:* | 137:*) word=FAIL; why="timed out after $limit s (a hang is a failure)" ;;
	*:FAIL:*) word=FAIL; why=${verdict#FAIL: } ;;
	*) word=FAIL; why="exit $rc without a verdict after $secs s" ;;
	esac
	echo "$word $n: $why"
	case $word in
	PASS) pass=$((pass + 1)) ;;
	SKIP) skip=$((skip + 1)) ;;
	FAIL) fail=$((fail + 1)); failed="$failed $n" ;;
	esac
	if [ $word = FAIL ] || [ $verbose = 1 ]; then
		sed -e '/^\(PASS\|FAIL\|SKIP\):/d' -e 's/^/    /' "$out"
	fi
done
[ -n "$failed" ] && echo "abuse failed:$failed"
echo "abuse: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
