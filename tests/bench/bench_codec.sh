#!/bin/sh
# bench_codec.sh - the L2 codec against the zstd command line on the same
# bytes.  Builds nothing: it runs an already built bench_codec.
#
# usage: tests/bench/bench_codec.sh [bench_codec options...]
#   BENCH_CODEC  the binary (default $BUILD/tests/bench/bench_codec,
#                BUILD defaulting to build)
#   ZSTD         the zstd CLI (default zstd; Debian: apt-get install zstd)
#   ZSTD_ITERS   seconds per level for `zstd -b` (default 3)
#
# Options are passed to bench_codec (--blocks, --levels, --dtypes, --data,
# --block-size, --min-time, --seed, --malloc); the zstd CLI benchmarks
# the same levels on the same bytes, cut into the same independent blocks
# (-B), so that both columns describe the same work.  GB/s is 1e9 bytes/s of
# uncompressed data on one core.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BENCH_CODEC:-$ROOT/${BUILD:-build}/tests/bench/bench_codec}
ZSTD=${ZSTD:-zstd}
ITERS=${ZSTD_ITERS:-3}

if [ ! -x "$BIN" ]; then
	echo "bench_codec.sh: $BIN not built" >&2
	exit 1
fi
if ! command -v "$ZSTD" >/dev/null 2>&1; then
	echo "bench_codec.sh: no $ZSTD command (apt-get install zstd)" >&2
	exit 1
fi

# The levels and block size the bench uses, to hand the same to zstd -b.
levels="1,-1,3"
bsize=2097152
prev=""
for a in "$@"; do
	case $prev in
	--levels) levels=$a ;;
	--block-size) bsize=$a ;;
	esac
	prev=$a
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

"$BIN" --dump-dir "$tmp" "$@" | tee "$tmp/ours.txt"

# zstd -b -q prints one line per level and file:
#   -1     54773236 (1.225) 482.34 MB/s 1440.7 MB/s  kv-bf16.bin
# (MB = 1e6 bytes; negative levels print as --1.)
: >"$tmp/cli.txt"
for f in "$tmp"/*.bin; do
	name=$(basename "$f" .bin)
	dtype=${name#*-}
	for l in $(echo "$levels" | tr ',' ' '); do
		# The CLI spells negative levels --fast=N.
		if [ "$l" -lt 0 ]; then
			lvarg="--fast=${l#-} -b"
		else
			lvarg="-b$l"
		fi
		# shellcheck disable=SC2086 # lvarg is one or two words
		"$ZSTD" -q $lvarg -i"$ITERS" -B"$bsize" "$f" 2>&1 |
			awk -v d="$dtype" -v l="$l" '
			/MB\/s/ {
				r = $3; gsub(/[()]/, "", r)
				printf "%s %s %s %.2f %.2f\n", d, l, r,
				       $4 / 1000, $6 / 1000
			}' >>"$tmp/cli.txt"
	done
done

echo
echo "Side by side (ratio, compress GB/s, decompress GB/s per core):"
awk '
NR == FNR { cli[$1 " " $2] = $3 " " $4 " " $5; next }
/^#/ || /^dtype/ { next }
{
	k = $1 " " $2
	if ($3 == "zstd") plain[k] = $4 " " $5 " " $6
	else { shuf[k] = $4 " " $5 " " $6; name[k] = $3; order[++n] = k }
}
END {
	printf "%-5s %5s | %-21s | %-21s | %-21s | %s\n", "dtype", "level",
	       "zstd -b (CLI)", "kvt zstd", "kvt zstd+shuf", "shuf/zstd ratio"
	for (i = 1; i <= n; i++) {
		k = order[i]; split(k, kk, " ")
		split(cli[k], c, " "); split(plain[k], p, " ")
		split(shuf[k], s, " ")
		printf "%-5s %5s | x%-5s %5s %5s GB/s | x%-5s %5s %5s GB/s | " \
		       "x%-5s %5s %5s GB/s | %.3f\n", kk[1], kk[2],
		       c[1], c[2], c[3], p[1], p[2], p[3], s[1], s[2], s[3],
		       s[1] / p[1]
	}
}' "$tmp/cli.txt" "$tmp/ours.txt"
