#!/bin/sh
# Integration: each way kvtierd can fail to start on a path it cannot use
# exits with an error that names the path and the reason (issue #17:
# "Permission denied" and "Read-only file system" came without the path),
# and never starts instead.  Cases: a config file that is a directory (it
# used to be read as an empty config, and the daemon started with the
# defaults), missing or unreadable; a socket folder missing or not
# writable; a data directory that cannot be created, one not writable,
# and a store on a read-only filesystem.  The cases as another user
# (setpriv to uid 65534) and the read-only filesystem (a tmpfs in a
# private mount namespace, unshare -m) need root and are skipped without.
# Every daemon gets its own folder, --socket and --data-dir, runs under
# `timeout`, and one that starts anyway is a failure.
# ok() only echoes, so `test && ok || fail` is safe here, as in test_cli.sh.
# shellcheck disable=SC2015
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
K=${KVTIERD:-$ROOT/build/kvtierd}
dir=$(mktemp -d /tmp/kvtier-starterr-XXXXXX)
fails=0
cleanup() { rm -rf "$dir"; }
trap cleanup EXIT
chmod 755 "$dir"

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
skip() { echo "skip: $*"; }

# refused CASE PATH REASON [RUNNER...] -- ARGS...: runs kvtierd ARGS (under
# RUNNER, e.g. setpriv) and checks that it exits 1 or 2 within 10 s with a
# line on stderr that names PATH and matches REASON (grep -E).
refused() {
	what=$1 path=$2 reason=$3
	shift 3
	runner=""
	while [ "$1" != "--" ]; do runner="$runner $1"; shift; done
	shift
	# shellcheck disable=SC2086
	timeout 10 $runner "$K" "$@" >"$dir/out" 2>&1
	rc=$?
	if [ $rc -eq 124 ]; then
		fail "$what: kvtierd started instead of refusing"
	elif [ $rc -ne 1 ] && [ $rc -ne 2 ]; then
		fail "$what: exit $rc"; cat "$dir/out"
	elif grep -F -- "$path" "$dir/out" | grep -Eq -- "$reason"; then
		ok "$what: exit $rc, $(grep -F -- "$path" "$dir/out" | grep -E -- "$reason" | tail -n 1 | sed 's/^.*level=error //')"
	else
		fail "$what: no line names $path with /$reason/:"; cat "$dir/out"
	fi
}

# Keeps a daemon harmless if it starts after all: its own socket and data
# folder, no L3.
base() { # NAME
	echo "--socket $dir/$1.sock --data-dir $dir/$1-var --l3-size 0"
}

mkdir "$dir/confdir"
# shellcheck disable=SC2046
refused "config is a directory" "$dir/confdir" "Is a directory" -- \
	--config "$dir/confdir" $(base c1)
# shellcheck disable=SC2046
refused "config missing" "$dir/nope.conf" "No such file" -- \
	--config "$dir/nope.conf" $(base c2)
# shellcheck disable=SC2046
refused "socket folder missing" "$dir/nodir" "No such file" -- \
	--socket "$dir/nodir/k.sock" --data-dir "$dir/s1-var" --l3-size 0

if [ "$(id -u)" -ne 0 ] || ! command -v setpriv >/dev/null 2>&1; then
	skip "cases as another user: need root and setpriv"
else
	AS="setpriv --reuid=65534 --regid=65534 --clear-groups"
	echo "l3-size = 0" >"$dir/secret.conf"
	chmod 600 "$dir/secret.conf"
	# shellcheck disable=SC2046,SC2086
	refused "config unreadable" "$dir/secret.conf" "Permission denied" $AS -- \
		--config "$dir/secret.conf" $(base c3)
	mkdir "$dir/rootonly"
	chmod 755 "$dir/rootonly"
	mkdir -p "$dir/nobody"
	chown 65534 "$dir/nobody"
	# shellcheck disable=SC2086
	refused "socket folder not writable" "$dir/rootonly" "Permission denied" $AS -- \
		--socket "$dir/rootonly/k.sock" --data-dir "$dir/nobody/var" --l3-size 0
	# shellcheck disable=SC2086
	refused "data directory cannot be created" "$dir/rootonly/var" "Permission denied" $AS -- \
		--socket "$dir/nobody/k.sock" --data-dir "$dir/rootonly/var" --l3-size 0
	# shellcheck disable=SC2086
	refused "data directory not writable" "$dir/rootonly" "Permission denied" $AS -- \
		--socket "$dir/nobody/k2.sock" --data-dir "$dir/rootonly" \
		--l3-size 16M --l3-region-size 4M
fi

# A store on a filesystem that became read-only: made by a daemon on a
# tmpfs in a private mount namespace, which is then remounted read-only.
if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null 2>&1 ||
	! unshare -m true 2>/dev/null; then
	skip "read-only filesystem: needs root and unshare -m"
else
	mkdir "$dir/ro"
	cat >"$dir/ro.sh" <<EOF
set -u
mount -t tmpfs -o size=64m tmpfs "$dir/ro" || exit 3
"$K" --socket "$dir/ro.sock" --data-dir "$dir/ro/var" --l3-size 16M \
	--l3-region-size 4M --log-level warn 2>"$dir/ro-make.log" &
p=\$!
i=0
while [ ! -S "$dir/ro.sock" ] && [ \$i -lt 500 ]; do sleep 0.02; i=\$((i + 1)); done
kill -TERM \$p; wait \$p
mount -o remount,ro "$dir/ro" || exit 3
timeout 10 "$K" --socket "$dir/ro2.sock" --data-dir "$dir/ro/var" \
	--l3-size 16M --l3-region-size 4M
EOF
	unshare -m --propagation private sh "$dir/ro.sh" >"$dir/out" 2>&1
	rc=$?
	if [ $rc -eq 3 ]; then
		skip "read-only filesystem: cannot mount a tmpfs"
	elif [ $rc -eq 124 ]; then
		fail "read-only store: kvtierd started"
	elif grep -F -- "$dir/ro/var" "$dir/out" | grep -q "Read-only file system"; then
		ok "store on a read-only filesystem: exit $rc, $(grep -F -- "$dir/ro/var" "$dir/out" | tail -n 1)"
	else
		fail "read-only store: no line names $dir/ro/var:"; cat "$dir/out"
	fi
fi

echo "start errors: $fails failure(s)"
[ $fails -eq 0 ]
