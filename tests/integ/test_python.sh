#!/bin/sh
# Integration: the Python client (client/python, ctypes over libkvtier)
# against private kvtierd instances the unittest suites start themselves.
# Uses $KVTIERD and $KVTIER_BUILD from tests/run.sh and Debian's
# /usr/bin/python3 (which sees python3-numpy, see scripts/deps.sh).
# Sanitizer builds (KVTIER_BUILD ending in asan or tsan): the sanitizer
# runtime is preloaded into the Python process only, leak checks off there
# (CPython keeps memory until exit by design).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KVTIER_BUILD=${KVTIER_BUILD:-$ROOT/build}
KVTIERD=${KVTIERD:-$KVTIER_BUILD/kvtierd}
PY=${KVTIER_PYTHON:-/usr/bin/python3}

if [ ! -x "$PY" ]; then
	echo "skip: $PY not found"
	exit 0
fi
lib="$KVTIER_BUILD/libkvtier.so.1"
if [ ! -e "$lib" ]; then
	echo "FAIL: $lib not built"
	exit 1
fi

SAN_BUILD=$KVTIER_BUILD . "$ROOT/tests/integ/sanitizer_env.sh"
preload=$SAN_PRELOAD
case $KVTIER_BUILD in
*asan | *asan/)
	# The daemon keeps the caller's ASAN_OPTIONS.
	export KVTIERD_ASAN_OPTIONS="${ASAN_OPTIONS:-}"
	export ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0
	;;
esac

export PYTHONPATH="$ROOT/client/python${PYTHONPATH:+:$PYTHONPATH}"
export KVTIER_LIB="$lib"
export KVTIERD
export PYTHONDONTWRITEBYTECODE=1

# Runs the python interpreter, with the sanitizer runtime preloaded if any.
py() {
	if [ -n "$preload" ]; then
		LD_PRELOAD="${preload# }${LD_PRELOAD:+ $LD_PRELOAD}" "$PY" "$@"
	else
		"$PY" "$@"
	fi
}

if [ -n "$preload" ] && ! py -c 'import kvtier' >/dev/null 2>&1; then
	echo "skip: python cannot load the sanitizer build of libkvtier" \
		"($KVTIER_BUILD) with LD_PRELOAD=$preload:"
	py -c 'import kvtier' 2>&1 | tail -n 3
	exit 0
fi

cd "$ROOT" || exit 1
if py -c 'import numpy' >/dev/null 2>&1; then
	py -m unittest discover -s client/python/tests -v
else
	echo "skip: numpy not installed for $PY (apt-get install python3-numpy):" \
		"running test_kvtier only"
	py -m unittest discover -s client/python/tests -p test_kvtier.py -v
fi
