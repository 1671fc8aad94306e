#!/bin/sh
# check_layers.sh [ROOT] - the dependency rule of the source tree, checked.
#
# Folders are layers; an include may only point to the file's own folder or
# a lower layer:
#   common  libc only
#   proto   -> common                   mem     -> common
#   tiers   -> common proto mem
#   daemon  -> common proto mem tiers   client  -> common proto
# The build enforces the same with per-folder include paths; this script
# also checks what include paths cannot see, the rules inside a folder:
#   - a module's internal header (kvt_X_int.h) is included only by the
#     files of that module (kvt_X*.c, kvt_X*.h);
#   - the tier manager's API (kvt_tm.h) is included by no file of tiers/
#     but the manager's own: the tiers below it see only the floor header.
# Prints one line per violation (file, include, rule) and exits 1 if there
# is any.  ROOT defaults to the tree this script is in.
set -eu
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"

allowed() { # allowed FROM TO: 0 if folder FROM may include from folder TO
	case "$1:$2" in
	common:common) return 0 ;;
	proto:common | proto:proto) return 0 ;;
	mem:common | mem:mem) return 0 ;;
	tiers:common | tiers:proto | tiers:mem | tiers:tiers) return 0 ;;
	daemon:common | daemon:proto | daemon:mem | daemon:tiers | \
		daemon:daemon) return 0 ;;
	client:common | client:proto | client:client) return 0 ;;
	esac
	return 1
}

FOLDERS="common proto mem tiers daemon client"
# Where each header of the tree lives (file names are unique in the tree).
HDRS=$(for d in $FOLDERS; do [ -d "$d" ] && find "$d" -maxdepth 1 -name '*.h'; done)
bad=0
for d in $FOLDERS; do
	[ -d "$d" ] || continue
	for f in "$d"/*.c "$d"/*.h; do
		[ -e "$f" ] || continue
		base=$(basename "$f")
		for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
			case "$inc" in
			*/*)
				echo "$f: #include \"$inc\": a path; include by name (the folders are the include paths)"
				bad=1
				continue ;;
			esac
			to=$(printf '%s\n' "$HDRS" | awk -v h="$inc" -F/ '$NF == h { print $1; exit }')
			if [ -z "$to" ]; then
				# A .c included by a test, or a header outside the layers.
				continue
			fi
			if ! allowed "$d" "$to"; then
				echo "$f: #include \"$inc\": $d/ may not include from $to/ (layers: common <- proto, mem <- tiers <- daemon; common, proto <- client)"
				bad=1
			fi
			case "$inc" in
			kvt_*_int.h)
				mod=${inc%_int.h}
				case "$base" in
				"$mod".* | "$mod"_*) ;;
				*)
					echo "$f: #include \"$inc\": the internal header of $mod is for $mod's own files"
					bad=1 ;;
				esac ;;
			esac
			if [ "$d" = tiers ] && [ "$inc" = kvt_tm.h ]; then
				case "$base" in
				kvt_tm.* | kvt_tm_*) ;;
				*)
					echo "$f: #include \"kvt_tm.h\": tiers below the manager see only the floor header, not the manager's API"
					bad=1 ;;
				esac
			fi
		done
	done
done
[ "$bad" -eq 0 ] || { echo "check_layers: the include rule is broken (see above)" >&2; exit 1; }
