#!/bin/sh
# Integration: `make install` / `make uninstall` into a temporary PREFIX and
# DESTDIR.  Checks the installed file list, the shared library's SONAME and
# exported symbols, the pkg-config file (by building a C client with it that
# talks to the installed kvtierd), the Python package (Debian's python3 with
# the installed package directory on its path, and `pip install
# --no-build-isolation` into a fresh venv, each doing a put and a get
# against the installed kvtierd through the installed library), the
# installed example config, the man pages (groff warnings) and the systemd
# units (systemd-analyze verify, if installed).  Installs what $KVTIER_BUILD
# holds, as tests/run.sh built it: `make -o all` never rebuilds it with
# other flags.
# ok() only echoes, so `test && ok || fail` is safe here, as in test_cli.sh.
# shellcheck disable=SC2015
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${KVTIER_BUILD:-$ROOT/${BUILD:-build}}
dir=$(mktemp -d /tmp/kvtier-install-XXXXXX)
P="$dir/p"
PY=${KVTIER_PYTHON:-/usr/bin/python3}
UNITDIR="$P/lib/systemd/system"
pid=""
fails=0

cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
skip() { echo "skip: $*"; }

mk() { # make TARGET VAR=value...
	make -s --no-print-directory -C "$ROOT" -o all BUILD="$B" LDCONFIG=true "$@"
}

# Waits until the installed kvtier gets an answer on socket $1.
wait_ping() {
	i=0
	while ! "$P/bin/kvtier" -s "$1" ping >/dev/null 2>&1 && [ $i -lt 500 ]; do
		sleep 0.01; i=$((i + 1)); done
	"$P/bin/kvtier" -s "$1" ping >/dev/null 2>&1
}

stop_daemon() { # what
	kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
	[ $rc -eq 0 ] && ok "$1: SIGTERM exit 0" || fail "$1: SIGTERM exit $rc"
}

# --- install into PREFIX ---------------------------------------------------
if mk install PREFIX="$P" SYSTEMD_UNITDIR="$UNITDIR" >"$dir/make.log" 2>&1; then
	ok "make install PREFIX"
else
	cat "$dir/make.log"; fail "make install PREFIX"; exit 1
fi

# The real file is libkvtier.so.MAJOR.MINOR.0 after the newest version node
# of client/libkvtier.map (KVTIER_MAJOR.MINOR).
abi=$(sed -n 's/^KVTIER_\([0-9][0-9.]*\)[[:space:]]*{.*/\1/p' "$ROOT/client/libkvtier.map" | tail -n 1)
case $abi in *.*) real=libkvtier.so.$abi.0 ;; *) real=libkvtier.so.1.0.0 ;; esac
cat >"$dir/want" <<LIST
bin/kvtier
bin/kvtierd
include/kvtier.h
include/kvtier_defs.h
include/kvtier_errors.h
include/kvtier_prefix.h
lib/libkvtier.a
lib/libkvtier.so
lib/libkvtier.so.1
lib/$real
lib/pkgconfig/kvtier.pc
lib/systemd/system/kvtierd.service
lib/systemd/system/kvtierd.socket
share/doc/kvtier/kvtierd.conf.example
share/man/man1/kvtier.1
share/man/man5/kvtierd.conf.5
share/man/man8/kvtierd.8
LIST
# The Python package: Debian's python3 looks in lib/pythonX.Y/dist-packages
# under a PREFIX other than /usr.
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYDIR="$P/lib/python$pyver/dist-packages"
for m in "$ROOT"/client/python/kvtier/*.py _installed.py; do
	echo "lib/python$pyver/dist-packages/kvtier/${m##*/}"
done >>"$dir/want"
sort -o "$dir/want" "$dir/want"
(cd "$P" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort) >"$dir/got"
if cmp -s "$dir/want" "$dir/got"; then ok "installed file list"; else
	fail "installed file list"; diff "$dir/want" "$dir/got"; fi

[ -x "$P/bin/kvtierd" ] && [ -x "$P/bin/kvtier" ] && ok "binaries executable" || fail "binaries not executable"
[ "$(readlink "$P/lib/libkvtier.so")" = libkvtier.so.1 ] &&
	[ "$(readlink "$P/lib/libkvtier.so.1")" = "$real" ] &&
	ok "library symlinks (real file $real)" || fail "library symlinks"
[ "$(stat -c %a "$P/include/kvtier.h")" = 644 ] && ok "header mode 644" || fail "header mode"

LIB="$P/lib/$real"
soname=$(readelf -d "$LIB" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$soname" = libkvtier.so.1 ] && ok "soname libkvtier.so.1" || fail "soname is '$soname'"

# Exported: only kvt_* functions and the KVTIER_* version nodes.
nm -D --defined-only "$LIB" | awk '{print $3}' | sed 's/@.*//' |
	grep -v -e '^kvt_' -e '^KVTIER_' >"$dir/extra"
if [ -s "$dir/extra" ]; then fail "symbols outside kvt_*:"; cat "$dir/extra"
else ok "exports only kvt_* ($(nm -D --defined-only "$LIB" | grep -c ' T kvt_') functions)"; fi

grep -q "^prefix=$P\$" "$P/lib/pkgconfig/kvtier.pc" && ok "kvtier.pc prefix" || fail "kvtier.pc prefix"

# --- a C client built with pkg-config, run against the installed daemon ----
export PKG_CONFIG_PATH="$P/lib/pkgconfig"
pc=$(pkg-config --cflags --libs kvtier 2>"$dir/pc.err") && ok "pkg-config kvtier: $pc" ||
	{ fail "pkg-config kvtier"; cat "$dir/pc.err"; }
pkg-config --modversion kvtier >/dev/null 2>&1 && ok "pkg-config --modversion" || fail "pkg-config --modversion"

# A library built with sanitizers needs their runtime in the program too.
san=""
readelf -d "$LIB" | grep -q 'libasan' && san="-fsanitize=address"
readelf -d "$LIB" | grep -q 'libubsan' && san="$san -fsanitize=undefined"
readelf -d "$LIB" | grep -q 'libtsan' && san="-fsanitize=thread"

cat >"$dir/client.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kvtier.h>

int main(int argc, char **argv)
{
	static char val[100000], back[100000];
	const char key[] = "install-test";
	kvt_client *c;
	size_t n = 0;
	int rc;

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (char)(i * 7 + 3);
	rc = kvt_connect(&c, argc > 1 ? argv[1] : NULL);
	if (rc < 0) {
		fprintf(stderr, "connect: %s\n", kvt_strerror(rc));
		return 1;
	}
	rc = kvt_put(c, "ns", key, sizeof(key) - 1, val, sizeof(val), NULL);
	if (rc == 0)
		rc = kvt_get(c, "ns", key, sizeof(key) - 1, back, sizeof(back), &n);
	if (rc < 0) {
		fprintf(stderr, "put/get: %s: %s\n", kvt_strerror(rc),
			kvt_client_errmsg(c));
		kvt_close(c);
		return 1;
	}
	kvt_close(c);
	if (n != sizeof(val) || memcmp(val, back, n) != 0) {
		fprintf(stderr, "value differs\n");
		return 1;
	}
	printf("put+get %zu bytes\n", n);
	return 0;
}
C
# shellcheck disable=SC2086
if ${CC:-cc} $san -std=c11 -Wall -Wextra -Werror -o "$dir/client" "$dir/client.c" $pc 2>"$dir/cc.err"; then
	ok "client compiles and links with pkg-config${san:+ ($san)}"
else
	fail "client build"; cat "$dir/cc.err"
fi
# shellcheck disable=SC2046,SC2086
if ${CC:-cc} $san -std=c11 -o "$dir/client_static" "$dir/client.c" -I"$P/include" \
	"$P/lib/libkvtier.a" $(pkg-config --libs libcrypto) 2>"$dir/cc2.err"; then
	ok "client links with the installed libkvtier.a"
else
	fail "static client build"; cat "$dir/cc2.err"
fi

sock="$dir/kvtier.sock"
"$P/bin/kvtierd" --socket "$sock" --data-dir "$dir/var" --l3-size 0 \
	--log-level warn 2>>"$dir/daemon.log" &
pid=$!
if wait_ping "$sock"; then ok "installed kvtierd answers installed kvtier"; else
	cat "$dir/daemon.log"; fail "installed kvtierd did not start"; exit 1; fi
if [ -x "$dir/client" ]; then
	LD_LIBRARY_PATH="$P/lib" ldd "$dir/client" | grep -q "$P/lib/libkvtier.so.1" &&
		ok "client loads the installed libkvtier.so.1" || fail "client does not load the installed library"
	LD_LIBRARY_PATH="$P/lib" "$dir/client" "$sock" && ok "client put+get through the installed library" ||
		fail "client put+get"
fi
[ -x "$dir/client_static" ] && { "$dir/client_static" "$sock" >/dev/null &&
	ok "static client put+get" || fail "static client put+get"; }

# --- the Python package, installed and pip-installed ------------------------
# check.py SOCKET PREFIX PACKAGE_DIR: imports kvtier, checks that the module
# comes from PACKAGE_DIR and that every libkvtier mapped comes from PREFIX,
# and does a put and a get of 100 KiB.
cat >"$dir/check.py" <<'PY'
import os
import sys

import kvtier

sock, prefix, pkgdir = sys.argv[1:4]
here = os.path.dirname(os.path.realpath(kvtier.__file__))
assert here == os.path.realpath(os.path.join(pkgdir, "kvtier")), here
libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
               if "libkvtier" in line})
assert libs and all(lib.startswith(prefix + "/") for lib in libs), libs
val = bytes(range(256)) * 400
with kvtier.Client(sock) as c:
    c.put(b"python-install-test", val, ns="ns")
    assert c.get(b"python-install-test", ns="ns") == val
print("kvtier %s from %s, %s, put+get %d bytes" % (kvtier.version(), here,
                                                   libs[0], len(val)))
PY
# A sanitizer build of the library needs its runtime preloaded into Python
# (as in test_python.sh), leak checks off there.
SAN_BUILD=$san . "$ROOT/tests/integ/sanitizer_env.sh"
preload=$SAN_PRELOAD
# py [env(1) arguments] PYTHON ARGS...: runs PYTHON in $dir (not the
# source tree), without the environment that would point it at another
# library or stop it from writing bytecode (uninstall must remove that).
py() {
	(cd "$dir" || exit 1
	if [ -n "$preload" ]; then
		LD_PRELOAD="${preload# }" ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0
		export LD_PRELOAD ASAN_OPTIONS
	fi
	exec env -u KVTIER_LIB -u PYTHONDONTWRITEBYTECODE "$@")
}
if [ ! -x "$PY" ]; then
	skip "Python package: $PY not found"
elif [ -n "$preload" ] && ! py -u LD_LIBRARY_PATH PYTHONPATH="$PYDIR" "$PY" -c 'import kvtier' >/dev/null 2>&1; then
	skip "Python package: python cannot load the sanitizer build ($san) with LD_PRELOAD=$preload"
else
	grep -qx "LIBDIR = \"$P/lib\"" "$PYDIR/kvtier/_installed.py" &&
		ok "installed kvtier/_installed.py names the installed libdir" ||
		fail "kvtier/_installed.py: $(cat "$PYDIR/kvtier/_installed.py")"
	# The dynamic linker does not search $P/lib: the package finds the
	# library through _installed.py.
	if py -u LD_LIBRARY_PATH PYTHONPATH="$PYDIR" "$PY" check.py "$sock" "$P" "$PYDIR" >"$dir/py.log" 2>&1; then
		ok "$PY imports the installed package, $(tail -n 1 "$dir/py.log")"
	else
		fail "installed Python package"; cat "$dir/py.log"
	fi
	ls "$PYDIR/kvtier/__pycache__/"*.pyc >/dev/null 2>&1 &&
		ok "python3 cached bytecode in the installed package (uninstall removes it)" ||
		skip "no bytecode cached in $PYDIR/kvtier"

	# pip builds in the folder it is given (build/, kvtier.egg-info): a
	# copy keeps the source tree clean.  --no-index: offline, setuptools
	# and wheel come from the system through --system-site-packages.
	cp -R "$ROOT/client/python" "$dir/pysrc"
	V="$dir/venv"
	if ! "$PY" -m venv --system-site-packages "$V" >"$dir/venv.log" 2>&1; then
		fail "$PY -m venv --system-site-packages (python3-venv)"; cat "$dir/venv.log"
	elif ! env -u PYTHONDONTWRITEBYTECODE "$V/bin/python" -m pip install -q --no-build-isolation \
		--no-index --no-cache-dir "$dir/pysrc" >"$dir/pip.log" 2>&1; then
		fail "pip install --no-build-isolation ./client/python into a venv"; cat "$dir/pip.log"
	else
		ok "pip install --no-build-isolation ./client/python into a fresh venv"
		VPY=$("$V/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
		want=$(sed -n 's/^#define KVT_VERSION_STRING "\(.*\)"/\1/p' "$ROOT/common/kvtier_defs.h")
		got=$(cd "$dir" && "$V/bin/python" -c 'import importlib.metadata as m; print(m.version("kvtier"))')
		[ "$got" = "$want" ] && ok "pip package version $got = KVT_VERSION_STRING" ||
			fail "pip package version '$got', kvtier_defs.h says '$want'"
		[ ! -e "$VPY/kvtier/_installed.py" ] && ok "pip install has no _installed.py" ||
			fail "pip installed _installed.py"
		# Here the library is found by the dynamic linker, by SONAME.
		if py LD_LIBRARY_PATH="$P/lib" "$V/bin/python" check.py "$sock" "$P" "$VPY" >"$dir/py.log" 2>&1; then
			ok "venv python imports the pip-installed package, $(tail -n 1 "$dir/py.log")"
		else
			fail "pip-installed Python package"; cat "$dir/py.log"
		fi
	fi
fi
stop_daemon "kvtierd on a temp socket"

# --- the installed example config ------------------------------------------
sock2="$dir/conf.sock"
"$P/bin/kvtierd" --config "$P/share/doc/kvtier/kvtierd.conf.example" \
	--socket "$sock2" --data-dir "$dir/var2" --l3-size 64M --l3-region-size 16M \
	--log-level warn 2>>"$dir/daemon2.log" &
pid=$!
if wait_ping "$sock2"; then ok "kvtierd runs with the installed example config"; else
	cat "$dir/daemon2.log"; fail "kvtierd with the example config"; kill -9 "$pid"; pid=""; fi
[ -n "$pid" ] && stop_daemon "kvtierd with the example config"

# --- man pages -------------------------------------------------------------
if command -v groff >/dev/null 2>&1; then
	for m in man1/kvtier.1 man5/kvtierd.conf.5 man8/kvtierd.8; do
		out=$(groff -man -ww -z "$P/share/man/$m" 2>&1)
		if [ -z "$out" ]; then ok "$m renders without warnings"; else
			fail "$m: groff warnings"; echo "$out"; fi
	done
else
	skip "groff not installed (apt-get install groff-base)"
fi
if command -v man >/dev/null 2>&1; then
	MANPATH="$P/share/man" man -w kvtierd.conf >/dev/null 2>&1 &&
		MANPATH="$P/share/man" man -w 8 kvtierd >/dev/null 2>&1 &&
		MANPATH="$P/share/man" man -w 1 kvtier >/dev/null 2>&1 &&
		ok "man finds the installed pages" || fail "man -w"
	MANWIDTH=80 man -l "$ROOT/man/kvtier.1" 2>&1 | grep -q "EXIT STATUS" &&
		ok "man -l renders" || fail "man -l"
else
	skip "man not installed"
fi
# Every flag of kvtierd --help must appear in kvtierd(8), and every
# setting (a flag but --config, --check, --help, --version) in
# kvtierd.conf(5) and in the example config etc/kvtierd.conf (as
# "name =" or "#name ="): a gap is a failure, so that a new option cannot
# ship undocumented (issue #17).  Every command of kvtier --help should
# appear in kvtier(1); a gap there is still a visible "warn:" line.
gaps=0
for f in $("$P/bin/kvtierd" --help | grep -o -e '--[a-z0-9-]*' | sort -u); do
	[ "$f" = "--" ] && continue
	grep -q -- "$(echo "$f" | sed 's/-/\\\\-/g')" "$ROOT/man/kvtierd.8" ||
		{ fail "kvtierd.8 lacks $f"; gaps=$((gaps + 1)); }
	case $f in --config|--check|--help|--version) continue ;; esac
	grep -q "^\.BI $(echo "${f#--}" | sed 's/-/\\\\-/g') " "$ROOT/man/kvtierd.conf.5" ||
		{ fail "kvtierd.conf.5 lacks ${f#--}"; gaps=$((gaps + 1)); }
	grep -Eq "^#? ?${f#--} =" "$ROOT/etc/kvtierd.conf" ||
		{ fail "etc/kvtierd.conf lacks ${f#--}"; gaps=$((gaps + 1)); }
done
[ $gaps -eq 0 ] && ok "kvtierd.8, kvtierd.conf.5 and etc/kvtierd.conf cover every kvtierd --help option"
cgaps=0
for c in $("$P/bin/kvtier" --help | sed -n 's/^  kvtier \([a-z]*\).*/\1/p'); do
	grep -q "^\.B $c\b" "$ROOT/man/kvtier.1" ||
		{ echo "warn: kvtier.1 lacks command $c"; cgaps=$((cgaps + 1)); }
done
[ $cgaps -eq 0 ] && ok "kvtier.1 covers every kvtier --help command"

# --- systemd units ---------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
	# The installed units name the installed kvtierd; MANPATH lets the
	# Documentation= check find the installed pages.
	grep -q "^ExecStart=$P/bin/kvtierd " "$UNITDIR/kvtierd.service" &&
		ok "unit ExecStart rewritten to the installed kvtierd" || fail "unit ExecStart"
	MANPATH="$P/share/man" systemd-analyze verify "$UNITDIR/kvtierd.service" \
		"$UNITDIR/kvtierd.socket" >"$dir/verify.log" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && ! grep -q kvtierd "$dir/verify.log"; then
		ok "systemd-analyze verify kvtierd.service kvtierd.socket"
	else
		fail "systemd-analyze verify (exit $rc)"; cat "$dir/verify.log"
	fi
else
	skip "systemd-analyze not installed (apt-get install systemd)"
fi

# --- uninstall -------------------------------------------------------------
mk uninstall PREFIX="$P" SYSTEMD_UNITDIR="$UNITDIR" >"$dir/make.log" 2>&1 &&
	ok "make uninstall" || { cat "$dir/make.log"; fail "make uninstall"; }
left=$(find "$P" \( -type f -o -type l \) 2>/dev/null)
[ -z "$left" ] && ok "uninstall leaves no files" || { fail "uninstall left files:"; echo "$left"; }

# --- DESTDIR: staged install, paths inside files name PREFIX only ----------
D="$dir/stage"
if mk install DESTDIR="$D" PREFIX=/usr >"$dir/make.log" 2>&1; then
	ok "make install DESTDIR"
else
	cat "$dir/make.log"; fail "make install DESTDIR"
fi
[ -x "$D/usr/bin/kvtierd" ] && [ -L "$D/usr/lib/libkvtier.so" ] &&
	[ ! -e "$D/usr/lib/systemd" ] && ok "DESTDIR layout, no units unless asked" || fail "DESTDIR layout"
grep -q '^prefix=/usr$' "$D/usr/lib/pkgconfig/kvtier.pc" && ! grep -q "$D" "$D/usr/lib/pkgconfig/kvtier.pc" &&
	ok "kvtier.pc names PREFIX, not DESTDIR" || fail "kvtier.pc under DESTDIR"
# in_sys_path DIR: Debian's python3 searches DIR for packages.
in_sys_path() { "$PY" -c 'import site, sys; sys.exit(sys.argv[1] not in site.getsitepackages())' "$1"; }
[ -f "$D/usr/lib/python3/dist-packages/kvtier/__init__.py" ] && in_sys_path /usr/lib/python3/dist-packages &&
	ok "PREFIX=/usr: kvtier in /usr/lib/python3/dist-packages, on python3's path" ||
	fail "PREFIX=/usr: kvtier not in /usr/lib/python3/dist-packages"
grep -qx 'LIBDIR = "/usr/lib"' "$D/usr/lib/python3/dist-packages/kvtier/_installed.py" &&
	ok "_installed.py names libdir, not DESTDIR" || fail "_installed.py under DESTDIR"
mk uninstall DESTDIR="$D" PREFIX=/usr >"$dir/make.log" 2>&1 || { cat "$dir/make.log"; fail "uninstall DESTDIR"; }
left=$(find "$D" \( -type f -o -type l \) 2>/dev/null)
[ -z "$left" ] && ok "DESTDIR uninstall leaves no files" || { fail "DESTDIR uninstall left files:"; echo "$left"; }

# PREFIX=/usr/local (the default): where pip puts packages for python3.
D="$dir/stage-local"
mk install DESTDIR="$D" PREFIX=/usr/local >"$dir/make.log" 2>&1 || { cat "$dir/make.log"; fail "make install DESTDIR PREFIX=/usr/local"; }
d=/usr/local/lib/python$pyver/dist-packages
[ -f "$D$d/kvtier/__init__.py" ] && in_sys_path "$d" &&
	ok "PREFIX=/usr/local: kvtier in $d, on python3's path" || fail "PREFIX=/usr/local: kvtier not in $d"
mk uninstall DESTDIR="$D" PREFIX=/usr/local >"$dir/make.log" 2>&1 || { cat "$dir/make.log"; fail "uninstall DESTDIR PREFIX=/usr/local"; }
left=$(find "$D" \( -type f -o -type l \) 2>/dev/null)
[ -z "$left" ] && ok "PREFIX=/usr/local uninstall leaves no files" || { fail "uninstall left files:"; echo "$left"; }

echo "install: $fails failure(s)"
[ $fails -eq 0 ]
