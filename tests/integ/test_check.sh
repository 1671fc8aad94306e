#!/bin/sh
# Integration: `kvtierd --check --data-dir DIR` (the README's form, no sizes)
# is read-only and takes the store's geometry from the store (issue #17,
# break 1: it used to open L3 with the default sizes, so on a store made
# with another --l3-size it dropped entries, removed or preallocated region
# files and dropped expired records before checking, then said "0
# problem(s)").  Uses $KVTIERD and $KVTIER from tests/run.sh.
#
# A store of 2 regions of 64 MiB (--l3-size 128M: the default 4G would
# preallocate 62 more), with live blocks and a few with a 1 s TTL, expired
# by the time of the check.  Then: the check exits 0, reports every entry
# (the expired ones too, not dropped), and every file of the store is as it
# was (names, sizes, allocated blocks, contents); the daemon restarted with
# the original flags serves every live block.  Also: a check of a folder
# with no store fails (exit 2) and creates nothing, and a check of a store
# a running daemon holds fails (exit 2) and changes nothing.
set -u
KVTIERD=${KVTIERD:-build/kvtierd}
KVTIER=${KVTIER:-build/kvtier}
dir=$(mktemp -d /tmp/kvtier-check-XXXXXX)
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

FLAGS="--l3-size 128M --l1-size 4M --l2-size 0"

start() {
	"$KVTIERD" --socket "$sock" --data-dir "$dir/var" --log-level warn \
		$FLAGS 2>>"$dir/daemon.log" &
	pid=$!
	i=0
	while ! "$KVTIER" -s "$sock" ping >/dev/null 2>&1 && [ $i -lt 500 ]; do
		sleep 0.01; i=$((i + 1)); done
	"$KVTIER" -s "$sock" ping >/dev/null 2>&1 || { cat "$dir/daemon.log"; echo "daemon did not start"; exit 1; }
}

stop() {
	kill -TERM "$pid" && wait "$pid"
	rc=$?
	pid=""
	[ "$rc" -eq 0 ] || fail "SIGTERM: exit $rc"
}

# Every file of the store: name, size, allocated blocks, checksum.
snapshot() {
	(cd "$dir/var" && find . -type f | sort | while read -r f; do
		printf '%s %s %s ' "$f" "$(stat -c '%s %b' "$f")"
		md5sum <"$f"
	done)
}

start
K="$KVTIER -s $sock"
n=0
while [ $n -lt 40 ]; do
	head -c $((5000 + n * 3001)) /dev/urandom >"$dir/v$n"
	$K put --ns "chk$((n % 3))" "k$n" "$dir/v$n" >/dev/null || fail "put k$n"
	n=$((n + 1))
done
for t in 1 2 3 4 5; do
	printf "short $t" | $K put --ttl 1 --ns chk0 "ttl$t" >/dev/null || fail "put ttl$t"
done
stop # spills everything to L3
sleep 2.2 # the 1 s blocks expire

before=$(snapshot)
"$KVTIERD" --check --data-dir "$dir/var" >"$dir/out" 2>"$dir/err"
rc=$?
after=$(snapshot)
[ "$rc" -eq 0 ] && ok "--check exits 0 on the consistent store" || { fail "--check exit $rc"; cat "$dir/out" "$dir/err"; }
[ "$before" = "$after" ] && ok "--check changed nothing (files, sizes, blocks, contents)" || {
	fail "--check changed the store"; echo "$before" >"$dir/b"; echo "$after" >"$dir/a"; diff "$dir/b" "$dir/a"; }
grep -q "2 regions of 67108864 bytes" "$dir/out" && ok "--check took the geometry from the store" || { fail "geometry"; cat "$dir/out"; }
grep -q "45 entries (5 expired, not dropped), 0 problem(s)" "$dir/out" && ok "--check reports every entry, the expired ones too" || { fail "entries"; cat "$dir/out"; }
[ "$(ls "$dir/var/l3" | grep -c region-)" -eq 2 ] && ok "no region file added or removed" || fail "region files: $(ls "$dir/var/l3")"

# The daemon with the original flags serves every live block.
start
bad=0
n=0
while [ $n -lt 40 ]; do
	$K get --ns "chk$((n % 3))" "k$n" | cmp -s - "$dir/v$n" || bad=$((bad + 1))
	n=$((n + 1))
done
[ $bad -eq 0 ] && ok "all 40 blocks served after the check" || fail "$bad blocks wrong or missing after the check"

# While the daemon holds the store: refused.
"$KVTIERD" --check --data-dir "$dir/var" >"$dir/out" 2>"$dir/err"
rc=$?
[ "$rc" -eq 2 ] && grep -q "in use by a running kvtierd" "$dir/err" && ok "--check of a store in use is refused (exit 2)" || { fail "check in use: exit $rc"; cat "$dir/err"; }
stop

# A folder without a store: exit 2, a message, and nothing created.
"$KVTIERD" --check --data-dir "$dir/none/var" >"$dir/out" 2>"$dir/err"
rc=$?
[ "$rc" -eq 2 ] && grep -q "no L3 store to check in $dir/none/var" "$dir/err" && ok "--check without a store: exit 2 with a message" || { fail "no store: exit $rc"; cat "$dir/err"; }
[ ! -e "$dir/none" ] && ok "--check created nothing" || fail "--check created $dir/none"

[ $fails -eq 0 ] || { echo "$fails failure(s)"; cat "$dir/daemon.log"; exit 1; }
echo "all passed"
