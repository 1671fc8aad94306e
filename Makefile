# kvtier - tiered KV-cache daemon.  See README.md.
#
# Targets: all test check run asan tsan valgrind fuzz bench install uninstall clean deps
# Variables: PREFIX DESTDIR CC CFLAGS LDFLAGS V=1 (verbose) BUILD (output dir)

PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
PKG_CONFIG ?= pkg-config
SOVERSION := 1
VERSION := 0.1.0

ifeq ($(V),1)
Q :=
else
Q := @
endif

PKGS := liburing lmdb libzstd libxxhash
CFLAGS ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC -MMD -MP \
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wwrite-strings -Wformat=2 -Wvla \
	-Iproto -Itiers -Idaemon -Iclient
override CFLAGS += $(EXTRA_CFLAGS)
override LDFLAGS += $(EXTRA_LDFLAGS)

# pkg-config is only consulted when something is being compiled, so that
# `make clean` works on a machine without the -dev packages.
pkgcflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pkglibs = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null)

PROTO_SRC := $(wildcard proto/*.c)
TIERS_SRC := $(wildcard tiers/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLIENT_LIB_SRC := $(filter-out client/kvtier_cli%.c,$(wildcard client/*.c))
CLI_SRC := $(wildcard client/kvtier_cli*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
INTEG_C_SRC := $(wildcard tests/integ/test_*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

PROTO_OBJ := $(call obj,$(PROTO_SRC))
TIERS_OBJ := $(call obj,$(TIERS_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
CLIENT_LIB_OBJ := $(call obj,$(CLIENT_LIB_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))

UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
INTEG_BIN := $(patsubst tests/integ/%.c,$(BUILD)/tests/integ/%,$(INTEG_C_SRC))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/tests/bench/%,$(BENCH_SRC))

TIER_LIBS = $(call pkglibs,$(PKGS)) -lpthread
DEP_CFLAGS = $(call pkgcflags,$(PKGS))

LIBKVTIER_A := $(BUILD)/libkvtier.a
LIBKVTIER_SO := $(BUILD)/libkvtier.so
CORE_A := $(BUILD)/libkvt_core.a
DAEMON_A := $(BUILD)/libkvt_daemon.a

all: $(BUILD)/kvtierd $(BUILD)/kvtier $(LIBKVTIER_A) $(LIBKVTIER_SO)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(DEP_CFLAGS) -c -o $@ $<

# proto + tiers: the storage engine, linked into the daemon and unit tests.
$(CORE_A): $(PROTO_OBJ) $(TIERS_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# The daemon minus main(), for unit tests of its modules.
$(DAEMON_A): $(filter-out %/kvtierd.o,$(DAEMON_OBJ))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/kvtierd: $(DAEMON_OBJ) $(CORE_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(DAEMON_OBJ) $(CORE_A) $(LDFLAGS) $(TIER_LIBS) -lcrypto

$(LIBKVTIER_A): $(CLIENT_LIB_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LIBKVTIER_SO): $(CLIENT_LIB_OBJ) $(PROTO_OBJ) client/libkvtier.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -shared -Wl,-soname,libkvtier.so.$(SOVERSION) \
		-Wl,--version-script=client/libkvtier.map \
		-o $@.$(SOVERSION) $(CLIENT_LIB_OBJ) $(PROTO_OBJ) $(LDFLAGS) -lcrypto
	$(Q)ln -sf libkvtier.so.$(SOVERSION) $@

$(BUILD)/kvtier: $(CLI_OBJ) $(LIBKVTIER_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIBKVTIER_A) $(LDFLAGS) -lcrypto -lpthread -lm

# Unit tests link the whole engine plus the client library objects.
$(BUILD)/tests/unit/%: tests/unit/%.c $(DAEMON_A) $(CORE_A) $(LIBKVTIER_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS) $(DEP_CFLAGS) $(call pkgcflags,cmocka) -o $@ $< \
		$(CLIENT_LIB_OBJ) $(DAEMON_A) $(CORE_A) $(LDFLAGS) $(call pkglibs,cmocka) $(TIER_LIBS) -lcrypto

# Integration test programs use only the public client library.
$(BUILD)/tests/integ/%: tests/integ/%.c tests/integ/integ_harness.h $(LIBKVTIER_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS) $(call pkgcflags,cmocka) -o $@ $< $(LIBKVTIER_A) \
		$(LDFLAGS) $(call pkglibs,cmocka) -lcrypto -lpthread

# tests/integ/noring runs a command where io_uring is refused (seccomp), for
# the fallback test; a plain program, no client library.
NORING_BIN := $(BUILD)/tests/integ/noring
$(NORING_BIN): tests/integ/noring.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS)

# Benchmarks are programs, not tests; they are built with the tests so that
# they keep compiling, and run by `make bench`.
$(BUILD)/tests/bench/%: tests/bench/%.c $(CORE_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $<")
	$(Q)$(CC) $(CFLAGS) $(DEP_CFLAGS) -o $@ $< $(CORE_A) $(LDFLAGS) \
		$(TIER_LIBS) -lm

# bench_kvs runs the workload of `kvtier bench` (client/kvtier_cli_load.c)
# against other servers, so it links that object, not the client library.
LOAD_OBJ := $(call obj,client/kvtier_cli_load.c)
$(BUILD)/tests/bench/bench_kvs: tests/bench/bench_kvs.c $(LOAD_OBJ) $(CORE_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $<")
	$(Q)$(CC) $(CFLAGS) $(DEP_CFLAGS) -o $@ $< $(LOAD_OBJ) $(CORE_A) \
		$(LDFLAGS) $(TIER_LIBS) -lm

tests-build: all $(UNIT_BIN) $(INTEG_BIN) $(NORING_BIN) $(BENCH_BIN)

deps:
	$(Q)sh scripts/deps.sh

test: override CFLAGS += -Werror
test: deps
	$(Q)$(MAKE) --no-print-directory tests-build EXTRA_CFLAGS="$(EXTRA_CFLAGS) -Werror"
	$(Q)BUILD=$(BUILD) sh tests/run.sh

check: test

run: deps all
	@mkdir -p var
	./$(BUILD)/kvtierd --socket ./kvtier.sock --data-dir ./var

# Sanitizer builds go to their own folders and run the same suite.
asan: deps
	$(Q)$(MAKE) --no-print-directory test BUILD=build/asan \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined"

tsan: deps
	$(Q)$(MAKE) --no-print-directory test BUILD=build/tsan \
		EXTRA_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
		EXTRA_LDFLAGS="-fsanitize=thread"

# valgrind memcheck over the suite (tests/valgrind.sh): every unit, integ
# and fuzz-replay program and every kvtierd the integration tests start run
# under valgrind (full leak check, definite/indirect leaks are errors), and
# every valgrind log is scanned afterwards, so a daemon killed with SIGKILL
# still has its errors reported.  Logs: build/valgrind/logs/.  Not run
# (TEST_SKIP in tests/valgrind.sh): integ/test_memory (it measures the
# daemon's RSS, which under valgrind is valgrind's), integ/test_crash (kills
# daemons with SIGKILL in a loop by design, so no leak report, and its
# crash loop takes hours at valgrind speed), test_install.sh,
# test_python.sh and test_bench.sh (they exercise install, Python and
# throughput, not our memory handling, and take too long under valgrind).
# Built in its own folder with -DKVT_VALGRIND, which tells memcheck that
# bytes the kernel wrote through io_uring are defined (it cannot see them).
valgrind: deps
	$(Q)sh scripts/deps.sh valgrind
	$(Q)$(MAKE) --no-print-directory tests-build BUILD=build/valgrind \
		EXTRA_CFLAGS="-DKVT_VALGRIND"
	$(Q)BUILD=build/valgrind sh tests/valgrind.sh

# Figures side by side with a reference measured in the same run: the L2
# codec against the zstd CLI, L3 batch reads against fio, and the daemon
# against Redis, memcached and memcpy (tests/bench/compare, which drives
# them with $(BUILD)/tests/bench/bench_kvs and kvtier with `kvtier bench`).
bench: deps
	$(Q)sh scripts/deps.sh bench
	$(Q)$(MAKE) --no-print-directory all $(BENCH_BIN)
	BUILD=$(BUILD) sh tests/bench/bench_codec.sh
	BUILD=$(BUILD) sh tests/bench/bench_l3.sh
	BUILD=$(BUILD) python3 tests/bench/compare

# Installation.  `make install` installs what `all` built in $(BUILD) (it
# never rebuilds with other flags: pass the same BUILD), under
# $(DESTDIR)$(PREFIX); `make uninstall` removes exactly those files.
# The shared library is installed the Debian way: the real file
# libkvtier.so.$(LIB_FILE_VERSION) (MAJOR.MINOR.0: the newest version node
# in client/libkvtier.map, KVTIER_MAJOR.MINOR, so that adding functions in
# a new node renames the file; MAJOR is the SONAME version), the SONAME link
# libkvtier.so.$(SOVERSION) that the dynamic linker looks up, and the
# development link libkvtier.so that `-lkvtier` finds.
# systemd units are installed only when SYSTEMD_UNITDIR is given
# (e.g. SYSTEMD_UNITDIR=/etc/systemd/system), with the kvtierd path in
# ExecStart rewritten to $(bindir).
LIB_ABI := $(lastword $(shell sed -n 's/^KVTIER_\([0-9][0-9.]*\)[[:space:]]*{.*/\1/p' client/libkvtier.map 2>/dev/null))
LIB_FILE_VERSION := $(if $(findstring .,$(LIB_ABI)),$(LIB_ABI),$(SOVERSION).0).0
bindir ?= $(PREFIX)/bin
libdir ?= $(PREFIX)/lib
includedir ?= $(PREFIX)/include
datarootdir ?= $(PREFIX)/share
mandir ?= $(datarootdir)/man
docdir ?= $(datarootdir)/doc/kvtier
pkgconfigdir ?= $(libdir)/pkgconfig
SYSTEMD_UNITDIR ?=
INSTALL ?= install
# Refreshes the dynamic linker's cache after (un)installing into the real
# system (no DESTDIR, as root); LDCONFIG=true skips it.
LDCONFIG ?= ldconfig
UNITS := etc/kvtierd.service etc/kvtierd.socket
INSTALLED_FILES := $(bindir)/kvtierd $(bindir)/kvtier \
	$(includedir)/kvtier.h $(includedir)/kvtier_errors.h \
	$(libdir)/libkvtier.a $(libdir)/libkvtier.so.$(LIB_FILE_VERSION) \
	$(libdir)/libkvtier.so.$(SOVERSION) $(libdir)/libkvtier.so \
	$(pkgconfigdir)/kvtier.pc \
	$(mandir)/man1/kvtier.1 $(mandir)/man8/kvtierd.8 \
	$(mandir)/man5/kvtierd.conf.5 $(docdir)/kvtierd.conf.example \
	$(if $(SYSTEMD_UNITDIR),$(addprefix $(SYSTEMD_UNITDIR)/,$(notdir $(UNITS))))

install: all
	$(Q)$(INSTALL) -d $(DESTDIR)$(bindir) $(DESTDIR)$(libdir) \
		$(DESTDIR)$(includedir) $(DESTDIR)$(pkgconfigdir) \
		$(DESTDIR)$(mandir)/man1 $(DESTDIR)$(mandir)/man5 \
		$(DESTDIR)$(mandir)/man8 $(DESTDIR)$(docdir)
	$(Q)$(INSTALL) -m 755 $(BUILD)/kvtierd $(BUILD)/kvtier $(DESTDIR)$(bindir)/
	$(Q)$(INSTALL) -m 644 client/kvtier.h proto/kvtier_errors.h $(DESTDIR)$(includedir)/
	$(Q)$(INSTALL) -m 644 $(LIBKVTIER_A) $(DESTDIR)$(libdir)/libkvtier.a
	$(Q)$(INSTALL) -m 755 $(LIBKVTIER_SO).$(SOVERSION) \
		$(DESTDIR)$(libdir)/libkvtier.so.$(LIB_FILE_VERSION)
	$(Q)ln -sf libkvtier.so.$(LIB_FILE_VERSION) $(DESTDIR)$(libdir)/libkvtier.so.$(SOVERSION)
	$(Q)ln -sf libkvtier.so.$(SOVERSION) $(DESTDIR)$(libdir)/libkvtier.so
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(libdir)|g' \
		-e 's|@INCLUDEDIR@|$(includedir)|g' -e 's|@VERSION@|$(VERSION)|g' \
		etc/kvtier.pc.in >$(DESTDIR)$(pkgconfigdir)/kvtier.pc
	$(Q)chmod 644 $(DESTDIR)$(pkgconfigdir)/kvtier.pc
	$(Q)$(INSTALL) -m 644 man/kvtier.1 $(DESTDIR)$(mandir)/man1/
	$(Q)$(INSTALL) -m 644 man/kvtierd.conf.5 $(DESTDIR)$(mandir)/man5/
	$(Q)$(INSTALL) -m 644 man/kvtierd.8 $(DESTDIR)$(mandir)/man8/
	$(Q)$(INSTALL) -m 644 etc/kvtierd.conf $(DESTDIR)$(docdir)/kvtierd.conf.example
# Python package: when client/python exists, install it here, e.g.
# $(INSTALL) -d $(DESTDIR)$(PYTHONDIR)/kvtier and its .py files, and add
# them to INSTALLED_FILES so that uninstall removes them.
ifneq ($(SYSTEMD_UNITDIR),)
	$(Q)$(INSTALL) -d $(DESTDIR)$(SYSTEMD_UNITDIR)
	$(Q)for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/kvtierd|$(bindir)/kvtierd|g' $$u \
			>$(DESTDIR)$(SYSTEMD_UNITDIR)/$${u##*/}.tmp && \
		chmod 644 $(DESTDIR)$(SYSTEMD_UNITDIR)/$${u##*/}.tmp && \
		mv -f $(DESTDIR)$(SYSTEMD_UNITDIR)/$${u##*/}.tmp \
			$(DESTDIR)$(SYSTEMD_UNITDIR)/$${u##*/} || exit 1; \
	done
endif
	$(Q)if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
		$(LDCONFIG) 2>/dev/null || true; fi

uninstall:
	$(Q)rm -f $(addprefix $(DESTDIR),$(INSTALLED_FILES))
	$(Q)-rmdir $(DESTDIR)$(docdir) 2>/dev/null || true
	$(Q)if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
		$(LDCONFIG) 2>/dev/null || true; fi

clean:
	rm -rf build

.PHONY: all deps test check run asan tsan valgrind fuzz bench clean tests-build install uninstall

# Fuzzing (tests/fuzz/README.md).  Each tests/fuzz/fuzz_<x>.c defines only
# LLVMFuzzerTestOneInput.  `make test` builds it with replay_main.c and the
# project's compiler and flags as $(BUILD)/tests/fuzz/replay_fuzz_<x>, which
# tests/run.sh runs over tests/fuzz/corpus/fuzz_<x>/, so no libFuzzer is
# needed to catch a regression.  `make fuzz` builds the libFuzzer binaries
# with clang in $(FUZZ_BUILD) (proto/*.c compiled in, not the archive) and
# runs each for FUZZ_SECONDS; new inputs go to $(FUZZ_BUILD)/new/ and are
# merged into the corpus with FUZZ_MERGE=1: only those adding edges (hit
# counts ignored, -use_counters=0), which keeps the corpus small.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC))
FUZZ_REPLAY_BIN := $(patsubst %,$(BUILD)/tests/fuzz/replay_%,$(FUZZ_NAMES))
FUZZ_CC ?= clang
FUZZ_BUILD ?= build/fuzz
FUZZ_SECONDS ?= 600
FUZZ_MERGE ?= 0
FUZZ_CFLAGS ?= -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_BIN := $(patsubst %,$(FUZZ_BUILD)/%,$(FUZZ_NAMES))

# tests-build has its recipe-less rule above; this adds the replays to it
# (here because the list is only defined here).
tests-build: $(FUZZ_REPLAY_BIN)

$(BUILD)/tests/fuzz/replay_%: tests/fuzz/%.c tests/fuzz/replay_main.c \
		tests/fuzz/kvt_fuzz.h $(CORE_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ-CC $<")
	$(Q)$(CC) $(CFLAGS) -o $@ $< tests/fuzz/replay_main.c $(CORE_A) $(LDFLAGS)

$(FUZZ_BUILD)/%: tests/fuzz/%.c tests/fuzz/kvt_fuzz.h $(PROTO_SRC) \
		$(wildcard proto/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ-LD $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra \
		-Iproto -o $@ $< $(PROTO_SRC) -lcrypto

fuzz: $(FUZZ_BIN)
	$(Q)for h in $(FUZZ_NAMES); do \
		mkdir -p $(FUZZ_BUILD)/new/$$h && \
		echo "  FUZZ    $$h for $(FUZZ_SECONDS) s" && \
		$(FUZZ_BUILD)/$$h -max_len=4096 \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/$$h- \
			$(FUZZ_BUILD)/new/$$h tests/fuzz/corpus/$$h || exit 1; \
		if [ "$(FUZZ_MERGE)" = 1 ]; then \
			$(FUZZ_BUILD)/$$h -merge=1 -use_counters=0 \
				-max_len=4096 tests/fuzz/corpus/$$h \
				$(FUZZ_BUILD)/new/$$h || exit 1; \
		fi; \
	done

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
