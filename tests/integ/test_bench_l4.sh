#!/bin/sh
# Integration: the plumbing of the L4 benchmark (tests/bench/l4) at its
# --quick size (a 64 MiB context): a cluster, host A storing through
# --l4-write put, host B restoring everything from L4 with every byte
# checked, redis-benchmark beside it, and the JSON it writes.  Its figures
# mean nothing here (a shared machine).  Skipped, with a line saying so,
# where redis is not installed.  Uses $KVTIER_BUILD from tests/run.sh.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${KVTIER_BUILD:-$ROOT/build}
dir=$(mktemp -d /tmp/kvtier-bench-l4-test-XXXXXX)
trap 'rm -rf "$dir"' EXIT

for t in redis-server redis-cli redis-benchmark; do
	command -v $t >/dev/null 2>&1 ||
		{ echo "skip: $t not installed (scripts/deps.sh bench): L4 benchmark not tested"; exit 0; }
done
BUILD=${B#"$ROOT"/} python3 "$ROOT/tests/bench/l4" --quick \
	--json "$dir/out.json" >"$dir/out" 2>&1
rc=$?
cat "$dir/out"
[ $rc -eq 0 ] || { echo "FAIL: tests/bench/l4 --quick exited $rc"; exit 1; }
python3 - "$dir/out.json" <<'PY' || { echo "FAIL: bench-l4 JSON"; exit 1; }
import json, sys
d = json.load(open(sys.argv[1]))
assert "error" not in d, d
r = d["restore"]
assert r["blocks"] == d["blocks"] == 32, r
assert r["misses"] == 0 and r["wrong"] == 0 and r["errors"] == 0, r
assert d["host_b_l4"]["hits"] >= 32, d["host_b_l4"]
assert d["host_a_l4"]["puts"] >= 32 and d["host_a_l4"]["puts_dropped"] == 0
assert d["redis_benchmark"]["gbytes_per_s"] > 0, d["redis_benchmark"]
assert d["ratio"] > 0, d
print("ok: bench-l4 JSON: restore %.3f GB/s, redis-benchmark %.3f GB/s"
      % (r["gbytes_per_s"], d["redis_benchmark"]["gbytes_per_s"]))
PY
grep -q '^ratio ' "$dir/out" || { echo "FAIL: no ratio line"; exit 1; }
echo "ok: tests/bench/l4 --quick"
