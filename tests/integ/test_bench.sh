#!/bin/sh
# Integration: `kvtier bench` against a real kvtierd on a temporary socket:
# put, get and mget with small values, the JSON keys of the contract, the
# exit status of usage errors and of a missing daemon.  Uses $KVTIERD and
# $KVTIER from tests/run.sh.
set -u
KVTIERD=${KVTIERD:-build/kvtierd}
KVTIER=${KVTIER:-build/kvtier}
dir=$(mktemp -d /tmp/kvtier-bench-XXXXXX)
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

"$KVTIERD" --socket "$sock" --data-dir "$dir/var" --log-level warn \
	--l1-size 256M --l3-size 64M --l3-region-size 16M 2>>"$dir/daemon.log" &
pid=$!
i=0
while ! "$KVTIER" -s "$sock" ping >/dev/null 2>&1 && [ $i -lt 500 ]; do
	sleep 0.01; i=$((i + 1)); done
"$KVTIER" -s "$sock" ping >/dev/null 2>&1 || { cat "$dir/daemon.log"; echo "daemon did not start"; exit 1; }
K="$KVTIER -s $sock"

# check_json FILE REQUESTS OP: the contract's keys, the asked-for count,
# no errors, a positive rate.
check_json() {
	python3 - "$1" "$2" "$3" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
assert text.count("\n") == 1, "not one line: %r" % text
d = json.loads(text)
for k in ("op", "size", "clients", "requests", "seconds", "ops_per_s",
          "gbytes_per_s", "p50_us", "p99_us", "errors"):
    assert k in d, "missing " + k
assert d["requests"] == int(sys.argv[2]), d
assert d["op"] == sys.argv[3], d
assert d["errors"] == 0, d
assert d["ops_per_s"] > 0 and d["gbytes_per_s"] > 0, d
assert 0 < d["p50_us"] <= d["p99_us"], d
PY
}

for op in put get mget; do
	for args in "--size 4K --requests 300" "--size 100K --requests 77 --clients 3 --keys 10"; do
		n=$(echo "$args" | sed 's/.*--requests \([0-9]*\).*/\1/')
		# shellcheck disable=SC2086
		$K bench --op $op $args --json >"$dir/out" 2>"$dir/err"
		rc=$?
		if [ $rc -eq 0 ] && check_json "$dir/out" "$n" "$op" 2>>"$dir/err"; then
			ok "bench --op $op $args"
		else
			fail "bench --op $op $args: exit $rc"; cat "$dir/out" "$dir/err"
		fi
	done
done

# The default output is a table for people, with the same figures.
$K bench --size 1K --requests 50 >"$dir/out" 2>"$dir/err"
rc=$?
[ $rc -eq 0 ] && grep -q '^ops/s ' "$dir/out" && grep -q '^p99 us ' "$dir/out" &&
	grep -q '^errors    0$' "$dir/out" && ok "table output" ||
	{ fail "table output: exit $rc"; cat "$dir/out" "$dir/err"; }
# No progress bar when stderr is not a terminal; nothing else on success.
[ ! -s "$dir/err" ] && ok "nothing on stderr" || { fail "stderr not empty"; cat "$dir/err"; }

expect_rc() { # expected-rc description command...
	want=$1; what=$2; shift 2
	"$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$what"; else
		fail "$what: exit $rc, wanted $want"; cat "$dir/err"; fi
}
expect_rc 2 "bad --op" $K bench --op frob
expect_rc 2 "bad --size" $K bench --size 12Q
expect_rc 2 "--size 0" $K bench --size 0
expect_rc 2 "--clients 0" $K bench --clients 0
expect_rc 2 "unknown option" $K bench --bogus
expect_rc 2 "stray argument" $K bench extra
expect_rc 0 "--help" $K bench --help
expect_rc 3 "no daemon" $KVTIER -s "$dir/none.sock" bench --requests 1

kill -TERM "$pid"; wait "$pid"; pid=""

# Misses are errors: a 1 MiB RAM-only cache cannot hold a 6 MiB working set.
"$KVTIERD" --socket "$sock" --data-dir "$dir/var2" --log-level warn \
	--l1-size 1M --l2-size 0 --l3-size 0 2>>"$dir/daemon.log" &
pid=$!
i=0
while ! $K ping >/dev/null 2>&1 && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
$K bench --op get --size 64K --keys 100 --requests 200 --json >"$dir/out" 2>"$dir/err"
rc=$?
[ $rc -eq 1 ] && python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["errors"] > 0' "$dir/out" &&
	ok "misses count as errors, exit 1" || { fail "misses: exit $rc"; cat "$dir/out" "$dir/err"; }
kill -TERM "$pid"; wait "$pid"; pid=""

echo "bench: $fails failure(s)"
[ $fails -eq 0 ]
