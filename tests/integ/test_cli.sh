#!/bin/sh
# Integration: the kvtier tool against a real kvtierd on a temporary socket,
# plus the daemon's lifecycle (socket mode, stale socket, live socket not
# stolen, SIGTERM).  Uses $KVTIERD and $KVTIER from tests/run.sh.
set -u
KVTIERD=${KVTIERD:-build/kvtierd}
KVTIER=${KVTIER:-build/kvtier}
dir=$(mktemp -d /tmp/kvtier-cli-XXXXXX)
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

start() {
	"$KVTIERD" --socket "$sock" --data-dir "$dir/var" --log-level warn \
		--l3-size 64M --l3-region-size 16M 2>>"$dir/daemon.log" &
	pid=$!
	# Wait for an answer, not for the file: a stale socket file from a
	# killed daemon exists before the new one has bound it.
	i=0
	while ! "$KVTIER" -s "$sock" ping >/dev/null 2>&1 && [ $i -lt 500 ]; do
		sleep 0.01; i=$((i + 1)); done
	"$KVTIER" -s "$sock" ping >/dev/null 2>&1 || { cat "$dir/daemon.log"; echo "daemon did not start"; exit 1; }
}

expect_rc() { # expected-rc description command...
	want=$1; what=$2; shift 2
	"$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$what"; else
		fail "$what: exit $rc, wanted $want"; cat "$dir/err"; fi
}

start
K="$KVTIER -s $sock"

# Socket created 0600.
mode=$(stat -c %a "$sock")
[ "$mode" = "600" ] && ok "socket mode 600" || fail "socket mode is $mode"

expect_rc 0 "ping" $K ping
head -c 3000000 /dev/urandom >"$dir/blob"
expect_rc 0 "put from file" $K put k "$dir/blob"
$K get k | cmp - "$dir/blob" && ok "get to stdout matches" || fail "get mismatch"
expect_rc 0 "get -o" $K get k -o "$dir/back"
cmp "$dir/back" "$dir/blob" && ok "get -o matches" || fail "get -o mismatch"
printf 'from stdin' | $K put --ns demo hex:00ff10 >/dev/null && ok "put stdin hex key" || fail "put stdin"
[ "$($K get --ns demo hex:00ff10)" = "from stdin" ] && ok "hex key + ns" || fail "hex key + ns"
expect_rc 1 "get in other ns misses" $K get hex:00ff10
expect_rc 0 "put --dtype --ttl" $K put --dtype bf16 --ttl 100 t "$dir/blob"
printf '1\n0\n' >"$dir/want"
$K exists k nothere >"$dir/got" && cmp -s "$dir/got" "$dir/want" && ok "exists" || fail "exists output"
expect_rc 1 "get miss exits 1" $K get nothere
# drop: a namespace leaves every tier, other namespaces stay.
printf a1 | $K put --ns gone k1 >/dev/null && printf a2 | $K put --ns gone k2 >/dev/null
printf b1 | $K put --ns kept k1 >/dev/null
[ "$($K drop --ns gone)" = 2 ] && ok "drop prints the count" || fail "drop count"
expect_rc 1 "dropped key misses" $K get --ns gone k1
[ "$($K get --ns kept k1)" = b1 ] && ok "other namespace kept" || fail "other namespace lost"
[ "$($K drop --ns gone)" = 0 ] && ok "second drop finds nothing" || fail "second drop"
expect_rc 2 "drop needs --ns" $K drop
# hot: the block read most comes first; JSON parses.
for b in cold warm busy; do printf "$b" | $K put --ns hotns "$b" >/dev/null; done
for i in 1 2 3 4; do $K get --ns hotns busy >/dev/null; done
$K get --ns hotns warm >/dev/null
$K hot --top 2 >"$dir/hot"
sed -n 2p "$dir/hot" | grep -q "hotns  busy" && ok "hot names the block read most" || { fail "hot order"; cat "$dir/hot"; }
$K hot --json --top 5 | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["blocks"][0]["key"]=="busy" and d["blocks"][0]["hits"]==4' && ok "hot --json" || fail "hot --json"
expect_rc 2 "hot --top 0 is a usage error" $K hot --top 0
$K stats --json | grep -q '"hotns":{"entries":3,"bytes":12,"hits":5[,}]' && ok "per-namespace stats" || { fail "per-namespace stats"; $K stats --json; }
# TTL end to end: a 1-second block is there at once and gone after 2 s.
printf ttl | $K put --ttl 1 shortlived >/dev/null
[ "$($K exists shortlived)" = 1 ] && ok "ttl block present" || fail "ttl block missing at once"
sleep 2
expect_rc 1 "ttl block expired after 2 s" $K get shortlived
expect_rc 0 "del" $K del k
expect_rc 1 "del again exits 1" $K del k
expect_rc 2 "usage error exits 2" $K frobnicate
expect_rc 2 "bad hex exits 2" $K get hex:zz
expect_rc 2 "missing key exits 2" $K get
expect_rc 3 "unreachable exits 3" "$KVTIER" -s "$dir/none.sock" ping
expect_rc 0 "stats --json" $K stats --json
grep -q '"l1":{' "$dir/out" && grep -q '"puts":' "$dir/out" && ok "stats json fields" || fail "stats json"
expect_rc 0 "stats table" $K stats
grep -qi "l1" "$dir/out" && ok "stats table shows l1" || fail "stats table"
cat "$dir/out"
expect_rc 0 "help" $K --help
# --watch repeats with per-second rates from the second round on.
timeout 2.5 $K stats --watch 1 >"$dir/watch" 2>&1
[ "$(grep -c '^tier ' "$dir/watch")" -ge 2 ] && grep -q '^per second' "$dir/watch" && ok "stats --watch shows rates" || { fail "stats --watch"; cat "$dir/watch"; }
$K stats --prometheus >"$dir/prom" && ok "stats --prometheus" || fail "stats --prometheus"
grep -q '^kvtier_tier_entries{tier="l1"} ' "$dir/prom" && ok "prometheus tier label" || fail "prometheus tier label"
grep -q 'kvtier_request_latency_microseconds{op="get",quantile="0.99"}' "$dir/prom" && ok "prometheus latency" || fail "prometheus latency"
grep -q '^kvtier_pool_workers [1-9]' "$dir/prom" && grep -q '^kvtier_pool_lane_queued{lane="l3_write"} ' "$dir/prom" && ok "prometheus worker pool" || fail "prometheus worker pool"
python3 "$(dirname "$0")/prom_check.py" <"$dir/prom" && ok "prometheus text parses" || fail "prometheus text does not parse"
# Negative control: the checker must reject a broken exposition.
printf 'kvtier_x 1\n' | python3 "$(dirname "$0")/prom_check.py" >/dev/null && fail "prom_check accepted a sample without TYPE" || ok "prom_check rejects bad text"

# A live daemon's socket is not stolen.
"$KVTIERD" --socket "$sock" --data-dir "$dir/var2" --log-level warn --l3-size 0 2>"$dir/second.log"
rc=$?
[ $rc -ne 0 ] && grep -q "another kvtierd" "$dir/second.log" && ok "live socket not stolen" || { fail "second daemon rc=$rc"; cat "$dir/second.log"; }
$K ping >/dev/null && ok "first daemon still serving" || fail "first daemon lost"

# SIGTERM: graceful exit 0, socket removed.
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
[ $rc -eq 0 ] && ok "SIGTERM exit 0" || fail "SIGTERM exit $rc"
[ ! -e "$sock" ] && ok "socket removed on exit" || fail "socket left behind"

# A stale socket file left by a killed daemon is replaced.
start
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
[ -S "$sock" ] || fail "kill -9 should leave the socket file"
start
$K ping >/dev/null && ok "stale socket replaced" || fail "restart over stale socket"
grep -q "stale_socket_removed" "$dir/daemon.log" && ok "stale socket logged" || fail "no stale log line"

# A path that is not a socket is never deleted.
kill -TERM "$pid"; wait "$pid"; pid=""
echo precious >"$dir/notasock"
"$KVTIERD" --socket "$dir/notasock" --data-dir "$dir/var3" --l3-size 0 2>/dev/null && fail "started on a regular file" || ok "refuses non-socket path"
[ "$(cat "$dir/notasock")" = precious ] && ok "regular file untouched" || fail "regular file changed"

# Bad flags are usage errors.
"$KVTIERD" --l1-size 12Q >/dev/null 2>&1; [ $? -eq 2 ] && ok "bad size exits 2" || fail "bad size"
"$KVTIERD" --bogus >/dev/null 2>&1; [ $? -eq 2 ] && ok "unknown flag exits 2" || fail "unknown flag"
"$KVTIERD" --help | grep -q -- "--l1-size" && ok "kvtierd --help" || fail "kvtierd --help"
"$KVTIERD" --help | grep -q -- "--shm-threshold" && ok "kvtierd --help: shm" || fail "kvtierd --help lacks shm options"
$K --help | grep -q KVTIER_SHM && ok "kvtier --help: KVTIER_SHM" || fail "kvtier --help lacks KVTIER_SHM"

# Config files: errors name the file and line; the shipped example is valid.
printf 'l1-size = 1G\nbogus = 1\n' >"$dir/bad.conf"
"$KVTIERD" --config "$dir/bad.conf" >/dev/null 2>"$dir/err"; rc=$?
[ $rc -eq 2 ] && grep -q "bad.conf:2: unknown setting 'bogus'" "$dir/err" && ok "config error names file:line" || { fail "config error rc=$rc"; cat "$dir/err"; }
printf 'l2-size = lots\n' >"$dir/bad2.conf"
"$KVTIERD" --config "$dir/bad2.conf" >/dev/null 2>"$dir/err"; rc=$?
[ $rc -eq 2 ] && grep -q "bad2.conf:1: bad size 'lots'" "$dir/err" && ok "config bad value names file:line" || { fail "config bad value rc=$rc"; cat "$dir/err"; }
"$KVTIERD" --config "$(dirname "$0")/../../etc/kvtierd.conf" --socket "$sock" \
	--data-dir "$dir/var" --l3-size 64M --l3-region-size 16M 2>>"$dir/daemon.log" &
pid=$!
i=0
while ! $K ping >/dev/null 2>&1 && [ $i -lt 500 ]; do sleep 0.01; i=$((i + 1)); done
$K ping >/dev/null 2>&1 && ok "starts with etc/kvtierd.conf" || fail "example config"
kill -TERM "$pid"; wait "$pid"; pid=""

echo "cli: $fails failure(s)"
[ $fails -eq 0 ]
