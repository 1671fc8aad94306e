# kvtier - tiered KV-cache daemon.  See README.md.
#
# Targets: all test check run asan tsan valgrind fuzz bench install uninstall clean deps
# Variables: PREFIX DESTDIR CC CFLAGS LDFLAGS V=1 (verbose) BUILD (output dir)
#   PYTHON pythondir (where install puts the Python package)

PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
PKG_CONFIG ?= pkg-config
SOVERSION := 1
# The release number has one home, the public header (common/kvtier_defs.h).
VERSION := $(shell sed -n 's/^\#define KVT_VERSION_STRING "\(.*\)"/\1/p' common/kvtier_defs.h)

ifeq ($(V),1)
Q :=
else
Q := @
endif

PKGS := liburing lmdb libzstd libxxhash hiredis
CFLAGS ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC -MMD -MP \
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wwrite-strings -Wformat=2 -Wvla
override CFLAGS += $(EXTRA_CFLAGS)
override LDFLAGS += $(EXTRA_LDFLAGS)

# pkg-config is only consulted when something is being compiled, so that
# `make clean` works on a machine without the -dev packages.
pkgcflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pkglibs = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null)

# ---- layers -------------------------------------------------------------
# Each folder is a layer and compiles with only its own and lower layers'
# include paths, so an include that points up is a compile error:
#   common  libc only
#   proto   -> common                   mem  -> common
#   tiers   -> common proto mem
#   daemon  -> common proto mem tiers   client -> common proto
# scripts/check_layers.sh states the same rule over the sources (and the
# rules inside a folder, e.g. nothing below the tier manager includes
# kvt_tm.h); scripts/check_symbols.sh finds an external symbol defined twice
# in the objects of the library, the daemon or the tool.  `make test` runs
# both.
LAYERS := common proto mem tiers daemon client
INC_common := -Icommon
INC_proto := $(INC_common) -Iproto
INC_mem := $(INC_common) -Imem
INC_tiers := $(INC_common) -Iproto -Imem -Itiers
INC_daemon := $(INC_tiers) -Idaemon
INC_client := $(INC_common) -Iproto -Iclient
# What linking against a layer needs, top first.
LINK_common := common
LINK_proto := proto common
LINK_mem := mem common
LINK_tiers := tiers mem proto common
LINK_daemon := daemon tiers mem proto common

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
layer_a = $(foreach l,$(1),$(BUILD)/libkvt_$(l).a)

COMMON_SRC := $(wildcard common/*.c)
PROTO_SRC := $(wildcard proto/*.c)
MEM_SRC := $(wildcard mem/*.c)
TIERS_SRC := $(wildcard tiers/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLIENT_LIB_SRC := $(filter-out client/kvtier_cli%.c,$(wildcard client/*.c))
CLI_SRC := $(wildcard client/kvtier_cli*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
INTEG_C_SRC := $(wildcard tests/integ/test_*.c)
ABUSE_C_SRC := $(wildcard tests/abuse/abuse_*.c)
BENCH_SRC := $(wildcard tests/bench/*.c)

COMMON_OBJ := $(call obj,$(COMMON_SRC))
PROTO_OBJ := $(call obj,$(PROTO_SRC))
MEM_OBJ := $(call obj,$(MEM_SRC))
TIERS_OBJ := $(call obj,$(TIERS_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
CLIENT_LIB_OBJ := $(call obj,$(CLIENT_LIB_SRC))
CLI_OBJ := $(call obj,$(CLI_SRC))
# The objects each program is made of (check_symbols.sh looks at these).
LIB_OBJS := $(CLIENT_LIB_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
DAEMON_OBJS := $(DAEMON_OBJ) $(TIERS_OBJ) $(MEM_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
TOOL_OBJS := $(CLI_OBJ) $(LIB_OBJS)

UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
INTEG_BIN := $(patsubst tests/integ/%.c,$(BUILD)/tests/integ/%,$(INTEG_C_SRC))
ABUSE_BIN := $(patsubst tests/abuse/%.c,$(BUILD)/tests/abuse/%,$(ABUSE_C_SRC))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/tests/bench/%,$(BENCH_SRC))

TIER_LIBS = $(call pkglibs,$(PKGS)) -lpthread
DEP_CFLAGS = $(call pkgcflags,$(PKGS))

LIBKVTIER_A := $(BUILD)/libkvtier.a
LIBKVTIER_SO := $(BUILD)/libkvtier.so

all: $(BUILD)/kvtierd $(BUILD)/kvtier $(LIBKVTIER_A) $(LIBKVTIER_SO)

# One compile rule; the include paths come from the object's folder.
define layer_rule
$(BUILD)/obj/$(1)/%.o: $(1)/%.c
	@mkdir -p $$(dir $$@)
	@$$(if $$(Q),echo "  CC      $$<")
	$$(Q)$$(CC) $$(CFLAGS) $$(INC_$(1)) $$(DEP_CFLAGS) -c -o $$@ $$<
endef
$(foreach l,$(LAYERS),$(eval $(call layer_rule,$(l))))

# One archive per layer, for the daemon and for unit tests of a layer.
$(BUILD)/libkvt_common.a: $(COMMON_OBJ)
$(BUILD)/libkvt_proto.a: $(PROTO_OBJ)
$(BUILD)/libkvt_mem.a: $(MEM_OBJ)
$(BUILD)/libkvt_tiers.a: $(TIERS_OBJ)
# The daemon minus main(), for unit tests of its modules.
$(BUILD)/libkvt_daemon.a: $(filter-out %/kvtierd.o,$(DAEMON_OBJ))
$(call layer_a,$(LAYERS)):
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/kvtierd: $(call obj,daemon/kvtierd.c) $(call layer_a,$(LINK_daemon))
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS) $(TIER_LIBS) -lcrypto

$(LIBKVTIER_A): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LIBKVTIER_SO): $(LIB_OBJS) client/libkvtier.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -shared -Wl,-soname,libkvtier.so.$(SOVERSION) \
		-Wl,--version-script=client/libkvtier.map \
		-o $@.$(SOVERSION) $(LIB_OBJS) $(LDFLAGS) -lcrypto
	$(Q)ln -sf libkvtier.so.$(SOVERSION) $@

$(BUILD)/kvtier: $(CLI_OBJ) $(LIBKVTIER_A)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIBKVTIER_A) $(LDFLAGS) -lcrypto -lpthread -lm

# Unit tests: each is compiled with the include paths of the layer it
# tests and linked with that layer and those below it, nothing else
# (UNIT_LAYER_<test>; a test missing from this table does not build).
UNIT_LAYER_test_arena := mem
UNIT_LAYER_test_codec := tiers
UNIT_LAYER_test_frame := proto
UNIT_LAYER_test_ghost := tiers
UNIT_LAYER_test_guard := mem
UNIT_LAYER_test_hist := daemon
UNIT_LAYER_test_lru := tiers
UNIT_LAYER_test_l3 := tiers
UNIT_LAYER_test_l4 := tiers
UNIT_LAYER_test_l4_cluster := tiers
UNIT_LAYER_test_loop := daemon
UNIT_LAYER_test_path := common
UNIT_LAYER_test_prefix := client
UNIT_LAYER_test_reg := proto
UNIT_LAYER_test_shm := proto
UNIT_LAYER_test_size := common
UNIT_LAYER_test_spin := common
UNIT_LAYER_test_tm := tiers
UNIT_LAYER_test_tm_l4 := tiers
UNIT_LAYER_test_tm_seg := tiers
unit_layer = $(or $(UNIT_LAYER_$(1)),$(error tests/unit/$(1).c: add UNIT_LAYER_$(1) to the Makefile))
# The client layer links as the library does.
unit_link = $(if $(filter client,$(1)),$(LIBKVTIER_A),$(call layer_a,$(LINK_$(1))))

define unit_rule
$(BUILD)/tests/unit/$(1): tests/unit/$(1).c $(call unit_link,$(call unit_layer,$(1)))
	@mkdir -p $$(dir $$@)
	@$$(if $$(Q),echo "  TEST-CC $$<")
	$$(Q)$$(CC) $$(CFLAGS) $$(INC_$(call unit_layer,$(1))) $$(DEP_CFLAGS) \
		$$(call pkgcflags,cmocka) -o $$@ $$< \
		$(call unit_link,$(call unit_layer,$(1))) $$(LDFLAGS) \
		$$(call pkglibs,cmocka) $$(TIER_LIBS) -lcrypto
endef
$(foreach t,$(patsubst tests/unit/%.c,%,$(UNIT_SRC)),$(eval $(call unit_rule,$(t))))

# Integration test programs use only the public client library (and the
# test cluster of tests/unit/l4cluster.h, for L4).
$(BUILD)/tests/integ/%: tests/integ/%.c tests/integ/integ_harness.h \
		tests/unit/l4cluster.h $(LIBKVTIER_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS) $(INC_client) -Itests/unit $(call pkgcflags,cmocka) -o $@ $< \
		$(LIBKVTIER_A) $(LDFLAGS) $(call pkglibs,cmocka) -lcrypto -lpthread

# Helpers of the abuse scenarios (tests/abuse/run.sh): public client
# library only, like the integration tests.
$(BUILD)/tests/abuse/%: tests/abuse/%.c $(LIBKVTIER_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS) $(INC_client) -o $@ $< $(LIBKVTIER_A) $(LDFLAGS) \
		-lcrypto -lpthread

# tests/integ/noring runs a command where io_uring is refused (seccomp), for
# the fallback test; a plain program, no client library.
NORING_BIN := $(BUILD)/tests/integ/noring
$(NORING_BIN): tests/integ/noring.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS)

# Benchmarks are programs, not tests; they are built with the tests so that
# they keep compiling, and run by `make bench`.  The storage benchmarks
# drive the tiers layer.
$(BUILD)/tests/bench/%: tests/bench/%.c $(call layer_a,$(LINK_tiers))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $<")
	$(Q)$(CC) $(CFLAGS) $(INC_tiers) $(DEP_CFLAGS) -o $@ $< \
		$(call layer_a,$(LINK_tiers)) $(LDFLAGS) $(TIER_LIBS) -lm

# Both use the synthetic K/V generator of bench_kv.h (not seen by -MMD
# here: these rules compile and link in one step, and only object files'
# dependencies are read back).
$(BUILD)/tests/bench/bench_codec: tests/bench/bench_kv.h

# bench_restore is a client of the daemon, like an inference engine: it
# links the client library (tests/bench/restore drives it).
$(BUILD)/tests/bench/bench_restore: tests/bench/bench_restore.c \
		tests/bench/bench_kv.h $(LIBKVTIER_A)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $<")
	$(Q)$(CC) $(CFLAGS) $(INC_client) -o $@ $< $(LIBKVTIER_A) $(LDFLAGS) \
		-lcrypto -lpthread -lm

# bench_kvs runs the workload of `kvtier bench` (client/kvtier_cli_load.c)
# against other servers, so it links that object, not the client library.
LOAD_OBJ := $(call obj,client/kvtier_cli_load.c)
$(BUILD)/tests/bench/bench_kvs: tests/bench/bench_kvs.c $(LOAD_OBJ) $(call layer_a,$(LINK_proto))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $<")
	$(Q)$(CC) $(CFLAGS) $(INC_client) -o $@ $< $(LOAD_OBJ) \
		$(call layer_a,$(LINK_proto)) $(LDFLAGS) -lpthread -lm

# The layer rules over the sources, and one definition per external symbol
# in each program's objects.
check-layers:
	$(Q)sh scripts/check_layers.sh

# `make print-VAR` prints a variable (tests/integ/test_layers.sh reads the
# include paths of a layer this way).
print-%:
	@echo $($*)

check-symbols: $(LIB_OBJS) $(DAEMON_OBJS) $(TOOL_OBJS)
	$(Q)sh scripts/check_symbols.sh library $(LIB_OBJS) -- \
		daemon $(DAEMON_OBJS) -- tool $(TOOL_OBJS)

tests-build: all $(UNIT_BIN) $(INTEG_BIN) $(ABUSE_BIN) $(NORING_BIN) $(BENCH_BIN)

deps:
	$(Q)sh scripts/deps.sh

test: override CFLAGS += -Werror
test: deps
	$(Q)sh scripts/check_layers.sh
	$(Q)$(MAKE) --no-print-directory tests-build check-symbols EXTRA_CFLAGS="$(EXTRA_CFLAGS) -Werror"
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
# test_python.sh, test_bench.sh and test_bench_l4.sh (they exercise install, Python and
# throughput, not our memory handling, and take too long under valgrind).
# Built in its own folder with -DKVT_VALGRIND, which tells memcheck that
# bytes the kernel wrote through io_uring are defined (it cannot see them).
valgrind: deps
	$(Q)sh scripts/deps.sh valgrind
	$(Q)$(MAKE) --no-print-directory tests-build BUILD=build/valgrind \
		EXTRA_CFLAGS="-DKVT_VALGRIND"
	$(Q)BUILD=build/valgrind sh tests/valgrind.sh

# Figures side by side with a reference measured in the same run: the L2
# codec against the zstd CLI, L3 batch reads against fio, the daemon
# against Redis, memcached and memcpy (tests/bench/compare, which drives
# them with $(BUILD)/tests/bench/bench_kvs and kvtier with `kvtier bench`),
# and restoring a long context from each tier against fio, the codec and
# memcpy (tests/bench/restore, with $(BUILD)/tests/bench/bench_restore), and
# from L4 on another host against redis-benchmark on the same cluster
# (tests/bench/l4).
bench: deps
	$(Q)sh scripts/deps.sh bench
	$(Q)$(MAKE) --no-print-directory all $(BENCH_BIN)
	BUILD=$(BUILD) sh tests/bench/bench_codec.sh
	BUILD=$(BUILD) sh tests/bench/bench_l3.sh
	BUILD=$(BUILD) python3 tests/bench/compare
	BUILD=$(BUILD) python3 tests/bench/restore
	BUILD=$(BUILD) python3 tests/bench/l4

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
# The Python package client/python/kvtier goes where Debian's python3
# ($(PYTHON)) looks for it under PREFIX: /usr/lib/python3/dist-packages
# for PREFIX=/usr (where Debian's own packages go), PREFIX/lib/pythonX.Y/
# dist-packages for any other PREFIX, which for /usr/local is on python3's
# sys.path (pip installs there too); other prefixes need PYTHONPATH.  X.Y is
# asked from $(PYTHON) when installing, not on every make; pythondir=DIR
# overrides the whole path.  Beside the modules, install writes
# kvtier/_installed.py naming $(libdir), so that the package loads the
# library installed with it even where the dynamic linker does not look.
# Uninstall also removes the bytecode python3 caches for those modules.
PYTHON ?= /usr/bin/python3
PYTHON_VERSION = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
pythondir ?= $(if $(filter /usr,$(patsubst %/,%,$(PREFIX))),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/python$(PYTHON_VERSION)/dist-packages)
PY_MODULES := $(notdir $(filter-out %/_installed.py,$(sort $(wildcard client/python/kvtier/*.py))))
# kvtier.h and the public headers it includes.
PUBLIC_HEADERS := client/kvtier.h common/kvtier_defs.h common/kvtier_errors.h \
	proto/kvtier_prefix.h
# Recursive (=), so that pythondir asks $(PYTHON) only when (un)installing.
INSTALLED_FILES = $(bindir)/kvtierd $(bindir)/kvtier \
	$(addprefix $(includedir)/,$(notdir $(PUBLIC_HEADERS))) \
	$(libdir)/libkvtier.a $(libdir)/libkvtier.so.$(LIB_FILE_VERSION) \
	$(libdir)/libkvtier.so.$(SOVERSION) $(libdir)/libkvtier.so \
	$(pkgconfigdir)/kvtier.pc \
	$(mandir)/man1/kvtier.1 $(mandir)/man8/kvtierd.8 \
	$(mandir)/man5/kvtierd.conf.5 $(docdir)/kvtierd.conf.example \
	$(addprefix $(pythondir)/kvtier/,$(PY_MODULES) _installed.py) \
	$(if $(SYSTEMD_UNITDIR),$(addprefix $(SYSTEMD_UNITDIR)/,$(notdir $(UNITS))))

install: all
	$(Q)$(INSTALL) -d $(DESTDIR)$(bindir) $(DESTDIR)$(libdir) \
		$(DESTDIR)$(includedir) $(DESTDIR)$(pkgconfigdir) \
		$(DESTDIR)$(mandir)/man1 $(DESTDIR)$(mandir)/man5 \
		$(DESTDIR)$(mandir)/man8 $(DESTDIR)$(docdir)
	$(Q)$(INSTALL) -m 755 $(BUILD)/kvtierd $(BUILD)/kvtier $(DESTDIR)$(bindir)/
	$(Q)$(INSTALL) -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(includedir)/
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
	$(Q)case "$(pythondir)" in */python/dist-packages) \
		echo "install: cannot run $(PYTHON) to find its version;" \
			"give PYTHON=... or pythondir=..." >&2; exit 1;; esac
	$(Q)$(INSTALL) -d $(DESTDIR)$(pythondir)/kvtier
	$(Q)$(INSTALL) -m 644 $(addprefix client/python/kvtier/,$(PY_MODULES)) \
		$(DESTDIR)$(pythondir)/kvtier/
	$(Q)printf '%s\n' '"""Written by make install: where libkvtier was installed."""' \
		'LIBDIR = "$(libdir)"' >$(DESTDIR)$(pythondir)/kvtier/_installed.py
	$(Q)chmod 644 $(DESTDIR)$(pythondir)/kvtier/_installed.py
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
	$(Q)rm -f $(foreach m,$(basename $(PY_MODULES) _installed.py),$(DESTDIR)$(pythondir)/kvtier/__pycache__/$(m).*.pyc)
	$(Q)-rmdir $(DESTDIR)$(docdir) $(DESTDIR)$(pythondir)/kvtier/__pycache__ \
		$(DESTDIR)$(pythondir)/kvtier 2>/dev/null || true
	$(Q)if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
		$(LDCONFIG) 2>/dev/null || true; fi

clean:
	rm -rf build

.PHONY: check-layers check-symbols all deps test check run asan tsan valgrind fuzz bench clean tests-build install uninstall

# Fuzzing (tests/fuzz/README.md).  Each tests/fuzz/fuzz_<x>.c defines only
# LLVMFuzzerTestOneInput.  `make test` builds it with replay_main.c and the
# project's compiler and flags as $(BUILD)/tests/fuzz/replay_fuzz_<x>, which
# tests/run.sh runs over tests/fuzz/corpus/fuzz_<x>/, so no libFuzzer is
# needed to catch a regression.  `make fuzz` builds the libFuzzer binaries
# with clang in $(FUZZ_BUILD) (proto/ and common/ compiled in, not the
# archives) and runs each for FUZZ_SECONDS; new inputs go to $(FUZZ_BUILD)/new/ and are
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
		tests/fuzz/kvt_fuzz.h $(call layer_a,$(LINK_proto))
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ-CC $<")
	$(Q)$(CC) $(CFLAGS) $(INC_proto) -o $@ $< tests/fuzz/replay_main.c \
		$(call layer_a,$(LINK_proto)) $(LDFLAGS)

$(FUZZ_BUILD)/%: tests/fuzz/%.c tests/fuzz/kvt_fuzz.h $(PROTO_SRC) \
		$(COMMON_SRC) $(wildcard proto/*.h common/*.h)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ-LD $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra \
		$(INC_proto) -o $@ $< $(PROTO_SRC) $(COMMON_SRC) -lcrypto

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
