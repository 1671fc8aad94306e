#!/bin/sh
# Integration: `kvtier keys` (prefix keys, computed locally) against the
# shared vectors in tests/vectors/prefix_keys.txt, which an independent
# Python implementation generated; then `kvtier match` on those keys against
# a real kvtierd on a temporary socket.  Uses $KVTIERD and $KVTIER from
# tests/run.sh.
set -u
KVTIERD=${KVTIERD:-build/kvtierd}
KVTIER=${KVTIER:-build/kvtier}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VECTORS="$ROOT/tests/vectors/prefix_keys.txt"
dir=$(mktemp -d /tmp/kvtier-keys-XXXXXX)
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

expect_rc() { # expected-rc description command...
	want=$1; what=$2; shift 2
	"$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$what"; else
		fail "$what: exit $rc, wanted $want"; cat "$dir/err"; fi
}

# Expands the vector file's TOKENS field ("1..40,7,9") to one id per line.
expand_tokens() {
	echo "$1" | tr ',' '\n' | while read -r item; do
		case $item in
		*..*) seq "${item%%..*}" "${item##*..}" ;;
		*) echo "$item" ;;
		esac
	done
}

# Decodes a hex string to bytes (ASCII namespaces only: argv has no NULs).
unhex() {
	echo "$1" | LC_ALL=C awk '{
		for (i = 1; i < length($0); i += 2) {
			v = index("0123456789abcdef", substr($0, i, 1)) - 1
			v = v * 16 + index("0123456789abcdef", substr($0, i + 1, 1)) - 1
			printf "%c", v
		}
	}'
}

K="$KVTIER"

# Tokens 1..240, 16 per block: 15 keys, each hex: and 64 digits.
expect_rc 0 "keys 1..240" $K keys --block-tokens 16 $(seq 1 240)
cp "$dir/out" "$dir/k240"
[ "$(wc -l <"$dir/k240")" -eq 15 ] && ok "15 lines" || fail "$(wc -l <"$dir/k240") lines, wanted 15"
[ "$(grep -c '^hex:[0-9a-f]\{64\}$' "$dir/k240")" -eq 15 ] && ok "hex: format" || fail "bad line format"
[ "$(sort -u "$dir/k240" | wc -l)" -eq 15 ] && ok "keys distinct" || fail "repeated keys"

# The default block is 16 tokens; 1..40 has two complete blocks, the same
# as the first two of 1..240.
expect_rc 0 "keys 1..40" $K keys $(seq 1 40)
cp "$dir/out" "$dir/k40"
[ "$(wc -l <"$dir/k40")" -eq 2 ] && ok "partial block gets no key" || fail "1..40 gave $(wc -l <"$dir/k40") lines"
head -n 2 "$dir/k240" | cmp -s - "$dir/k40" && ok "shared prefix, same keys" || fail "1..40 keys differ from 1..240's first two"

# --ns changes every key.
expect_rc 0 "keys --ns" $K keys --ns llama3-8b/bf16/tp0 $(seq 1 40)
cp "$dir/out" "$dir/k40ns"
paste -d ' ' "$dir/k40" "$dir/k40ns" | awk '$1 == $2 { bad = 1 } END { exit bad }' &&
	ok "--ns changes the keys" || fail "--ns left a key unchanged"
expect_rc 0 "keys --ns=" $K keys --ns=llama3-8b/bf16/tp1 $(seq 1 40)
cmp -s "$dir/out" "$dir/k40ns" && fail "tp0 and tp1 namespaces agree" || ok "namespaces differ"

# Every vector whose namespace can be typed on a command line.
nvec=0
grep -v '^#' "$VECTORS" | grep -v '^$' >"$dir/vectors"
while read -r ns_hex block tokens arrow keys; do
	[ "$arrow" = "->" ] || { fail "bad vector line: $ns_hex $block"; continue; }
	ns=""
	if [ "$ns_hex" != "-" ]; then
		ns=$(unhex "$ns_hex")
		# Skip namespaces with bytes a shell argument cannot carry.
		[ "$(printf '%s' "$ns" | wc -c)" -eq $((${#ns_hex} / 2)) ] || continue
	fi
	if [ "$tokens" = "-" ]; then
		# No tokens: the tool wants at least one TOKEN.
		expect_rc 2 "vector without tokens is a usage error" \
			$K keys --ns "$ns" --block-tokens "$block"
		continue
	fi
	if [ "$keys" = "-" ]; then
		: >"$dir/want"
	else
		echo "$keys" | tr ',' '\n' | sed 's/^/hex:/' >"$dir/want"
	fi
	$K keys --ns "$ns" --block-tokens "$block" $(expand_tokens "$tokens") \
		>"$dir/got" 2>"$dir/err"
	if [ $? -eq 0 ] && cmp -s "$dir/got" "$dir/want"; then
		nvec=$((nvec + 1))
	else
		fail "vector ns=$ns_hex B=$block tokens=$tokens"
		cat "$dir/err"
	fi
done <"$dir/vectors"
[ $nvec -ge 10 ] && ok "$nvec vectors match" || fail "only $nvec vectors matched"

# Usage errors exit 2 and print nothing on stdout.
expect_rc 2 "bad token" $K keys 1 2 x
expect_rc 2 "token too large" $K keys 4294967296
expect_rc 2 "negative token" $K keys -- -1
expect_rc 2 "--block-tokens 0" $K keys --block-tokens 0 1 2
expect_rc 2 "missing TOKEN" $K keys
[ ! -s "$dir/out" ] && ok "nothing printed on usage error" || fail "output on usage error"

# keys is local: it needs no daemon, and no usable socket path.
expect_rc 0 "keys without a daemon" env KVTIER_SOCKET="$dir/$(printf '%0200d' 0).sock" $K keys $(seq 1 16)
expect_rc 0 "help keys" $K help keys
grep -q -- "--block-tokens" "$dir/out" && ok "help keys text" || fail "help keys text"
$K --help | grep -q "kvtier keys" && ok "--help lists keys" || fail "--help lacks keys"

# ---- match, against a daemon ----------------------------------------

"$KVTIERD" --socket "$sock" --data-dir "$dir/var" --log-level warn \
	--l3-size 0 2>>"$dir/daemon.log" &
pid=$!
i=0
while ! $K -s "$sock" ping >/dev/null 2>&1 && [ $i -lt 500 ]; do
	sleep 0.01; i=$((i + 1)); done
$K -s "$sock" ping >/dev/null 2>&1 || { cat "$dir/daemon.log"; echo "daemon did not start"; exit 1; }
D="$K -s $sock"

# Blocks 0..4 of a prefix (80 tokens), stored under their prefix keys.
$K keys --ns m $(seq 101 180) >"$dir/pk"
[ "$(wc -l <"$dir/pk")" -eq 5 ] || fail "wanted 5 prefix keys"
stored=0
for key in $(cat "$dir/pk"); do
	echo "block $key" | $D put --ns m "$key" && stored=$((stored + 1))
done
[ $stored -eq 5 ] && ok "stored 5 blocks" || fail "stored $stored blocks"

expect_rc 0 "match all" $D match --ns m $(cat "$dir/pk")
[ "$(cat "$dir/out")" = 5 ] && ok "match prints 5" || fail "match printed '$(cat "$dir/out")', wanted 5"
# Keys after the stored ones (a longer prompt) do not count.
$K keys --ns m $(seq 101 260) >"$dir/pk10"
expect_rc 0 "match longer prompt" $D match --ns m $(cat "$dir/pk10")
[ "$(cat "$dir/out")" = 5 ] && ok "longer prompt matches 5" || fail "longer prompt: '$(cat "$dir/out")'"

# A gap at block 2: only blocks 0 and 1 are usable.
expect_rc 0 "del block 2" $D del --ns m "$(sed -n 3p "$dir/pk")"
expect_rc 0 "match after del" $D match --ns m $(cat "$dir/pk")
[ "$(cat "$dir/out")" = 2 ] && ok "match stops at the gap: 2" || fail "after del: '$(cat "$dir/out")', wanted 2"
# exists still sees blocks 3 and 4: match is about leading keys only.
$D exists --ns m $(sed -n 4,5p "$dir/pk") | tr -d '\n' | grep -qx 11 && ok "blocks after the gap still exist" || fail "exists after gap"

# Another namespace, a missing first block, and a text key.
# DROP empties the namespace: nothing of the prefix matches any more.
expect_rc 0 "drop the namespace" $D drop --ns m
expect_rc 0 "match after drop" $D match --ns m $(cat "$dir/pk")
[ "$(cat "$dir/out")" = 0 ] && ok "drop empties it: match 0" || fail "after drop: '$(cat "$dir/out")', wanted 0"
expect_rc 0 "match other ns" $D match --ns other $(cat "$dir/pk")
[ "$(cat "$dir/out")" = 0 ] && ok "other namespace: 0" || fail "other ns: '$(cat "$dir/out")'"
expect_rc 0 "match default ns" $D match $(cat "$dir/pk")
[ "$(cat "$dir/out")" = 0 ] && ok "empty namespace: 0" || fail "empty ns: '$(cat "$dir/out")'"
printf 'v' | $D put plain >/dev/null
expect_rc 0 "match text keys" $D match plain nothere plain
[ "$(cat "$dir/out")" = 1 ] && ok "text keys: 1" || fail "text keys: '$(cat "$dir/out")'"

# Usage errors: nothing sent, exit 2.
expect_rc 2 "match without KEY" $D match --ns m
expect_rc 2 "match bad hex" $D match hex:zz
expect_rc 2 "match 4097 keys" $D match $(seq 1 4097)
expect_rc 0 "match 4096 keys" $D match $(seq 1 4096)
[ "$(cat "$dir/out")" = 0 ] && ok "4096 keys: 0" || fail "4096 keys: '$(cat "$dir/out")'"
expect_rc 3 "match unreachable exits 3" $K -s "$dir/none.sock" match k
$D ping >/dev/null && ok "daemon still serving" || fail "daemon died"

# A clean exit also means no sanitizer report in sanitizer builds.
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
[ $rc -eq 0 ] && ok "daemon exits 0" || { fail "daemon exit $rc"; cat "$dir/daemon.log"; }

echo "keys: $fails failure(s)"
[ $fails -eq 0 ]
