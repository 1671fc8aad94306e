#!/bin/sh
# check_symbols.sh NAME OBJ... [-- NAME OBJ...]... - every external symbol
# is defined once in the objects of each program.
#
# A static archive hides a second definition (the linker takes the first
# member that resolves a name), so two modules may define the same function
# with different signatures and nothing complains until the wrong one runs.
# This lists the global symbols each object defines (nm; weak and common
# symbols excepted) and fails, naming both objects, where one program has
# two.  Used by `make test` for the library, the daemon and the tool.
set -eu
NM=${NM:-nm}
bad=0
check() { # check NAME OBJ...
	name=$1
	shift
	[ "$#" -gt 0 ] || return 0
	dups=$(for o in "$@"; do
		"$NM" -g --defined-only "$o" |
			awk -v o="$o" 'NF >= 3 && $2 ~ /^[TDBR]$/ { print $3, o }'
	done | sort | awk '
		$1 == prev { if (!shown) print prev ": " prevo; print $1 ": " $2; shown = 1; next }
		{ prev = $1; prevo = $2; shown = 0 }')
	if [ -n "$dups" ]; then
		echo "check_symbols: $name: external symbols defined more than once:"
		printf '%s\n' "$dups" | sed 's/^/  /'
		bad=1
	fi
}
set -- "$@" --
group=""
for a in "$@"; do
	if [ "$a" = -- ]; then
		[ -n "$group" ] && eval "check $group"
		group=""
	else
		group="$group '$a'"
	fi
done
[ "$bad" -eq 0 ] || exit 1
