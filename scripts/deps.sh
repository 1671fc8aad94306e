#!/bin/sh
# Installs the Debian packages kvtier needs to build and test, if missing.
# As root: apt-get install.  Otherwise: print the exact command and fail.
set -eu

# python3-setuptools, -wheel, -pip and -venv: `pip install
# --no-build-isolation ./client/python` (offline) and the venv test of it.
# libhiredis-dev: L4's connections and reply parser; redis-server (with
# redis-cli): the cluster the L4 tests start.
PKGS="gcc make pkg-config liburing-dev liblmdb-dev libzstd-dev libcmocka-dev \
libssl-dev libxxhash-dev libhiredis-dev redis-server python3 python3-numpy \
python3-setuptools python3-wheel python3-pip python3-venv groff-base"
# `deps.sh bench`: the reference tools the benchmarks compare against.
[ "${1:-}" = bench ] && PKGS="zstd fio redis-server memcached"
# `deps.sh valgrind`: memcheck for `make valgrind`.
[ "${1:-}" = valgrind ] && PKGS="valgrind"

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

# Optional test tools: systemd-analyze verifies the shipped unit files.
# Tests print a visible skip line without them; a failed install warns.
if [ -z "${1:-}" ] && [ "$(id -u)" -eq 0 ] && ! installed systemd; then
	echo "deps: installing systemd (for systemd-analyze verify)" >&2
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends systemd; } >&2 ||
		echo "deps: warning: could not install systemd" >&2
fi

missing=""
for p in $PKGS; do
	installed "$p" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "deps: installing:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
else
	echo "deps: missing packages:$missing" >&2
	echo "deps: run as root:  sudo apt-get install -y$missing" >&2
	exit 1
fi
