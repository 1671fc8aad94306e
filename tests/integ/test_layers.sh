#!/bin/sh
# The layer rule is enforced, not promised: on a copy of the tree, an
# include that crosses a layer upward is refused by scripts/check_layers.sh
# (naming the file) and by the compiler (each folder sees only its own and
# lower layers' headers), and an external symbol defined twice in one
# program's objects is refused by scripts/check_symbols.sh.  The pristine
# tree passes both.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d /tmp/kvtier-layers-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
CC=${CC:-cc}

copy_tree() { # a fresh copy of the sources in $dir/t
	rm -rf "$dir/t"
	mkdir -p "$dir/t"
	(cd "$ROOT" && cp -r common proto mem tiers daemon client scripts \
		Makefile "$dir/t/")
}
inc() { # include flags of layer $1, from the Makefile
	make -s --no-print-directory -C "$dir/t" "print-INC_$1"
}
# expect_refused WHAT FILE INCLUDE LAYER: appending the include to FILE
# makes check_layers.sh fail naming FILE, and FILE no longer compiles with
# LAYER's include paths.
expect_refused() {
	what=$1 f=$2 hdr=$3 layer=$4
	copy_tree
	printf '#include "%s"\n' "$hdr" >>"$dir/t/$f"
	if sh "$dir/t/scripts/check_layers.sh" "$dir/t" >"$dir/out" 2>&1; then
		fail "$what: check_layers.sh passed"
	elif grep -q "^$f: #include \"$hdr\"" "$dir/out"; then
		ok "$what: check_layers.sh refuses it: $(grep "^$f: #include \"$hdr\"" "$dir/out" | cut -c1-110)"
	else
		fail "$what: check_layers.sh failed without naming $f"
		cat "$dir/out"
	fi
	# Headers are checked where a .c includes them; a path reaches any
	# folder, so only the script can refuse one.
	case "$f:$hdr" in *.c:*/*) return ;; *.c:*) ;; *) return ;; esac
	# shellcheck disable=SC2046
	if (cd "$dir/t" && $CC -std=c11 -D_GNU_SOURCE -fsyntax-only $(inc "$layer") \
		$(pkg-config --cflags liburing lmdb libzstd 2>/dev/null) "$f") \
		>"$dir/cc" 2>&1; then
		# A same-folder header is found next to the file: only the
		# script can see that one.
		[ "$(dirname "$f")" = "$(dirname "$(cd "$dir/t" && ls */"$hdr")")" ] &&
			{ ok "$what: same folder, the compiler cannot tell"; return; }
		fail "$what: $f still compiles with the $layer include paths"
	else
		ok "$what: the compiler refuses it too"
	fi
}

copy_tree
if sh "$dir/t/scripts/check_layers.sh" "$dir/t" >"$dir/out" 2>&1; then
	ok "the tree as it is passes check_layers.sh"
else
	fail "the tree as it is fails check_layers.sh"; cat "$dir/out"
fi

expect_refused "client includes a tiers header" client/kvtier_cli.c kvt_tm.h client
expect_refused "client includes a daemon header" client/kvt_shmmap.c kvt_log.h client
expect_refused "mem includes a tiers header" mem/kvt_mem.c kvt_codec.h mem
expect_refused "proto includes a mem header" proto/kvt_frame.c kvt_arena.h proto
expect_refused "tiers includes a daemon header" tiers/kvt_codec.c kvt_log.h tiers
lru=$(cd "$ROOT" && ls tiers/kvt_lru.h tiers/kvt_l1.h 2>/dev/null | head -n 1)
expect_refused "L1 includes the manager's kvt_tm.h" "$lru" kvt_tm.h tiers
expect_refused "L3 includes the manager's kvt_tm.h" tiers/kvt_l3.h kvt_tm.h tiers
expect_refused "an include by path" daemon/kvt_log.c ../tiers/kvt_tm.h daemon

# Two objects of one program defining one external symbol.
printf 'int kvt_twice(int x);\nint kvt_twice(int x) { return x; }\n' >"$dir/a.c"
printf 'int kvt_twice(long x);\nint kvt_twice(long x) { return (int)x + 1; }\n' >"$dir/b.c"
$CC -c -o "$dir/a.o" "$dir/a.c" && $CC -c -o "$dir/b.o" "$dir/b.c"
if sh "$ROOT/scripts/check_symbols.sh" lib "$dir/a.o" -- tool "$dir/a.o" \
	>"$dir/out" 2>&1; then
	ok "one definition per program passes"
else
	fail "check_symbols.sh refused distinct programs"; cat "$dir/out"
fi
if sh "$ROOT/scripts/check_symbols.sh" lib "$dir/a.o" "$dir/b.o" \
	>"$dir/out" 2>&1; then
	fail "check_symbols.sh passed a symbol defined twice"
elif grep -q "kvt_twice" "$dir/out"; then
	ok "check_symbols.sh refuses a symbol defined twice, naming it"
else
	fail "check_symbols.sh failed without naming the symbol"; cat "$dir/out"
fi

echo "layers: $fails failure(s)"
[ "$fails" -eq 0 ]
