# sanitizer_env.sh - sourced by the shell tests that run Python over a
# sanitizer build of libkvtier.  Sets SAN_PRELOAD to the sanitizer runtime(s)
# that must come first in a Python process loading that library (gcc links
# them dynamically; Python itself was not built with them), or "" for an
# ordinary build.  The build is told by $SAN_BUILD: a build folder (ending in asan
# or tsan) or the -fsanitize= flags.  Leak checks stay off in Python
# (CPython keeps memory until exit by design): SAN_PY_ENV holds the
# environment words to put before the interpreter.
SAN_PRELOAD=""
case $SAN_BUILD in
*asan | *asan/ | *address*)
	for r in libasan.so libubsan.so; do
		f=$(${CC:-gcc} -print-file-name=$r)
		[ -e "$f" ] && SAN_PRELOAD="$SAN_PRELOAD $f"
	done ;;
*tsan | *tsan/ | *thread*)
	f=$(${CC:-gcc} -print-file-name=libtsan.so)
	[ -e "$f" ] && SAN_PRELOAD=" $f" ;;
esac
SAN_PRELOAD=${SAN_PRELOAD# }
SAN_PY_ENV=""
[ -n "$SAN_PRELOAD" ] &&
	SAN_PY_ENV="LD_PRELOAD=$(echo "$SAN_PRELOAD" | tr ' ' ':') ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0"
