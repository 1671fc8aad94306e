#!/bin/sh
# Integration: the plumbing of the restore benchmark (tests/bench/restore),
# small and fast, against a real kvtierd on a temporary socket: bench_restore
# store writes a manifest and the same bytes every time; restore, through C
# (kvt_mget, the socket, a registered region synchronously and with jobs,
# as root also as uid 65534) and through the Python path (`restore
# py-restore`, Debian's python3), gets
# every block back and says so in its JSON; both fail (exit 1) on a missing
# block and on a block with other bytes of the same length; probe and memcpy
# print their JSON.  Uses $KVTIERD, $KVTIER and $KVTIER_BUILD from
# tests/run.sh.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KVTIERD=${KVTIERD:-build/kvtierd}
KVTIER=${KVTIER:-build/kvtier}
B=${KVTIER_BUILD:-$ROOT/build}
BR="$B/tests/bench/bench_restore"
PY=/usr/bin/python3
dir=$(mktemp -d /tmp/kvtier-bench-restore-XXXXXX)
sock="$dir/kvtier.sock"
pid=""
fails=0

cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

[ -x "$BR" ] || { echo "FAIL: $BR not built"; exit 1; }
# As root the socket is open to other users: the region restore runs as
# uid 65534 too.
mode=0600
[ "$(id -u)" = 0 ] && mode=0666 && chmod 755 "$dir"
"$KVTIERD" --socket "$sock" --data-dir "$dir/var" --log-level warn \
	--l1-size 8M --l2-size 4M --l3-size 256M --l3-region-size 16M \
	--socket-mode $mode 2>>"$dir/daemon.log" &
pid=$!
i=0
while ! "$KVTIER" -s "$sock" ping >/dev/null 2>&1 && [ $i -lt 500 ]; do
	sleep 0.01; i=$((i + 1)); done
"$KVTIER" -s "$sock" ping >/dev/null 2>&1 || { cat "$dir/daemon.log"; echo "daemon did not start"; exit 1; }

# jfield FILE KEY: a number field of the one-line JSON in FILE.
jfield() { sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" "$1"; }

# 16 MiB of 1 MiB blocks: more than L1 and L2 hold, so the restore reads
# from all three tiers.
if "$BR" store --socket "$sock" --manifest "$dir/m" --size 16M --block 1M \
	--data "$dir/ctx.bin" >"$dir/out" 2>"$dir/err" &&
	[ "$(jfield "$dir/out" blocks)" = 16 ] &&
	[ "$(jfield "$dir/out" from_cache)" = 0 ] &&
	[ "$(wc -l <"$dir/m")" -eq 17 ] &&
	head -1 "$dir/m" | grep -q '^# kvtier-restore-manifest v1 ns=restore/bf16 size=16777216 block=1048576 blocks=16 seed=42 dtype=bf16$' &&
	[ "$(stat -c %s "$dir/ctx.bin")" = 16777216 ]; then
	ok "store: manifest and data file"
else
	fail "store"; cat "$dir/out" "$dir/err"
fi
# The same seed gives the same bytes: generated again or read from the file.
"$BR" store --socket "$sock" --manifest "$dir/m2" --size 16M --block 1M \
	>/dev/null 2>&1 && cmp -s "$dir/m" "$dir/m2" &&
	"$BR" store --socket "$sock" --manifest "$dir/m3" --size 16M \
		--block 1M --data "$dir/ctx.bin" >"$dir/out" 2>&1 &&
	[ "$(jfield "$dir/out" from_cache)" = 1 ] && cmp -s "$dir/m" "$dir/m3" &&
	ok "store: reproducible, with and without the data file" ||
	{ fail "store: not reproducible"; cat "$dir/out"; }

# restore_ok WHAT CMD...: exit 0, every block, no miss or wrong byte.
restore_ok() {
	what=$1; shift
	if "$@" >"$dir/out" 2>"$dir/err" &&
		[ "$(jfield "$dir/out" blocks)" = 16 ] &&
		[ "$(jfield "$dir/out" misses)" = 0 ] &&
		[ "$(jfield "$dir/out" wrong)" = 0 ] &&
		[ "$(jfield "$dir/out" errors)" = 0 ] &&
		[ "$(jfield "$dir/out" bytes)" = 16777216 ]; then
		ok "$what"
	else
		fail "$what"; cat "$dir/out" "$dir/err"
	fi
}
# restore_fails WHAT FIELD CMD...: exit 1 with FIELD = 1 in the JSON.
restore_fails() {
	what=$1 field=$2; shift 2
	"$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ $rc -eq 1 ] && [ "$(jfield "$dir/out" "$field")" = 1 ] &&
		grep -q FAILED "$dir/err"; then
		ok "$what"
	else
		fail "$what: exit $rc"; cat "$dir/out" "$dir/err"
	fi
}

C_RESTORE="$BR restore --socket $sock --manifest $dir/m --data $dir/ctx.bin"
# A sanitizer build of libkvtier needs its runtime preloaded into Python.
SAN_BUILD=$B . "$ROOT/tests/integ/sanitizer_env.sh"
PY_RESTORE="env $SAN_PY_ENV KVTIER_LIB=$B/libkvtier.so.1 PYTHONPATH=$ROOT/client/python $PY $ROOT/tests/bench/restore py-restore --socket $sock --manifest $dir/m"
have_py=1
[ -x "$PY" ] || { echo "skip: no $PY, Python restore not tested"; have_py=0; }

# shellcheck disable=SC2086 # the commands are words
restore_ok "C restore" $C_RESTORE
# shellcheck disable=SC2086
[ $have_py = 1 ] && restore_ok "Python restore" $PY_RESTORE
# Registered memory (issue #14): into a region, K and V halves apart,
# synchronously and as jobs; one segment per block; the socket path.
# shellcheck disable=SC2086
restore_ok "C restore into a region" $C_RESTORE --path region
# shellcheck disable=SC2086
restore_ok "C restore into a region, 4 jobs" $C_RESTORE --path region --jobs 4
# shellcheck disable=SC2086
restore_ok "C restore into a region, 1 segment" $C_RESTORE --path region --segments 1
# shellcheck disable=SC2086
restore_ok "C restore through the socket" $C_RESTORE --no-shm
"$BR" restore --socket "$sock" --manifest "$dir/m" --path region --jobs 4 |
	grep -q '"path": "region", "jobs": 4, "segments": 2' &&
	ok "region restore says so in its JSON" || fail "region restore JSON"
if [ "$(id -u)" = 0 ]; then
	# shellcheck disable=SC2086
	restore_ok "C restore into a region as uid 65534" $C_RESTORE --path region --uid 65534
	# shellcheck disable=SC2086
	restore_ok "C restore as uid 65534 (socket)" $C_RESTORE --uid 65534
else
	echo "skip: not root, no restore as another uid"
fi

# A block with other bytes of the same length: wrong, and where.
k5=$(sed -n 7p "$dir/m" | cut -d' ' -f1)
dd if="$dir/ctx.bin" of="$dir/b5" bs=1048576 skip=5 count=1 2>/dev/null
printf 'X' | dd of="$dir/b5" bs=1 seek=777 conv=notrunc 2>/dev/null
"$KVTIER" -s "$sock" put --ns restore/bf16 "hex:$k5" "$dir/b5" >/dev/null
# shellcheck disable=SC2086
restore_fails "C restore: a wrong byte fails" wrong $C_RESTORE
grep -q "block 5 .*wrong bytes.*first wrong byte at +777" "$dir/err" &&
	ok "C restore: the wrong byte is located" ||
	{ fail "C restore: wrong byte not described"; cat "$dir/err"; }
# shellcheck disable=SC2086
[ $have_py = 1 ] && restore_fails "Python restore: a wrong byte fails" wrong $PY_RESTORE
# shellcheck disable=SC2086
restore_fails "region restore: a wrong byte fails" wrong $C_RESTORE --path region --jobs 4
grep -q "block 5 .*wrong bytes.*first wrong byte at +777" "$dir/err" &&
	ok "region restore: the wrong byte is located (across the halves)" ||
	{ fail "region restore: wrong byte not described"; cat "$dir/err"; }
dd if="$dir/ctx.bin" of="$dir/b5" bs=1048576 skip=5 count=1 2>/dev/null
"$KVTIER" -s "$sock" put --ns restore/bf16 "hex:$k5" "$dir/b5" >/dev/null

# A missing block.
k3=$(sed -n 5p "$dir/m" | cut -d' ' -f1)
"$KVTIER" -s "$sock" del --ns restore/bf16 "hex:$k3" >/dev/null
# shellcheck disable=SC2086
restore_fails "C restore: a miss fails" misses $C_RESTORE
# shellcheck disable=SC2086
[ $have_py = 1 ] && restore_fails "Python restore: a miss fails" misses $PY_RESTORE
# shellcheck disable=SC2086
restore_fails "region restore: a miss fails" misses $C_RESTORE --path region

# The probe: timed, paced, pinned, checked.
if "$BR" probe --socket "$sock" --seconds 0.3 >"$dir/out" 2>"$dir/err" &&
	python3 - "$dir/out" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read())
assert d["op"] == "probe" and d["size"] == 65536, d
assert d["pinned"] == 1 and d["errors"] == 0 and d["wrong"] == 0, d
assert d["samples"] == d["gets"] > 100, d
assert 0 < d["p50_us"] <= d["p99_us"] <= d["max_us"], d
PY
then ok "probe"; else fail "probe"; cat "$dir/out" "$dir/err"; fi

# --window: records only between SIGUSR1 and SIGUSR2, then stops.
"$BR" probe --socket "$sock" --window --seconds 20 \
	--ready-file "$dir/ready" >"$dir/out" 2>"$dir/err" &
ppid=$!
i=0
while [ ! -e "$dir/ready" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
sleep 0.1
kill -USR1 $ppid; sleep 0.2; kill -USR2 $ppid
i=0
while kill -0 $ppid 2>/dev/null && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
if ! kill -0 $ppid 2>/dev/null && wait $ppid &&
	python3 - "$dir/out" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read())
assert d["window"] == 1 and 0 < d["samples"] < d["gets"], d
assert 0.1 < d["seconds"] < 5, d
PY
then ok "probe --window"; else kill $ppid 2>/dev/null; fail "probe --window"; cat "$dir/out" "$dir/err"; fi

"$BR" memcpy --size 8M --block 1M >"$dir/out" 2>&1 &&
	[ "$(jfield "$dir/out" bytes)" = 8388608 ] &&
	ok "memcpy" || { fail "memcpy"; cat "$dir/out"; }

# Usage errors exit 2.
"$BR" restore --socket "$sock" >/dev/null 2>&1
[ $? -eq 2 ] && ok "usage error" || fail "usage error: not exit 2"

echo "$fails failed"
[ "$fails" -eq 0 ]
