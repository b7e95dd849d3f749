# sayin: build, test, demo and install. See README.md.
#
#   make                 build bin/sayin-origin and bin/sayin-publisher
#   make check           install missing packages, build, run every test
#   make check SANITIZE=1  the same under AddressSanitizer + UBSan (separate build dir)
#   make fuzz FUZZ_SECONDS=N  run the libFuzzer targets (tests/fuzz/README.md)
#   make fault           the fault-injection sweep (tests/fault/README.md)
#   make demo            publish a spoken clip and serve it
#   make install PREFIX=/usr/local DESTDIR=   (and make uninstall; paths below)
#   make deb             build/deb/sayin_VERSION_ARCH.deb (scripts/deb/README.md)
#   make test-debian     install that package in a debootstrapped Debian 12 (root)
#
# CPPFLAGS, CFLAGS and LDFLAGS are respected and come after the hardening
# defaults, so a distribution's flags win. WERROR=1 turns warnings into
# errors: make check (and so CI) sets it, a plain make does not.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/sayin
SYSCONFDIR ?= $(PREFIX)/etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
CC ?= cc
PKG_CONFIG ?= pkg-config

# The origin links only what it serves with; media libraries stay in the publisher.
CORE_PKGS := libuv lmdb libssl libcrypto inih libsystemd
PUBLISHER_PKGS := libcurl jansson opus ogg soxr zlib libbrotlienc libavformat libavcodec libavutil libebur128 libpng libseccomp
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(CORE_PKGS) $(PUBLISHER_PKGS) 2>/dev/null)
CORE_LIBS := $(shell $(PKG_CONFIG) --libs $(CORE_PKGS) 2>/dev/null)
PUBLISHER_LIBS := $(shell $(PKG_CONFIG) --libs $(PUBLISHER_PKGS) 2>/dev/null)

LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp

ifeq ($(SANITIZE),1)
BUILD := build/sanitize
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD := build/release
SAN_FLAGS :=
endif
BIN := $(BUILD)/bin

CFLAGS ?= -O2 -g
WERROR ?= 0
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	$(if $(filter 1,$(WERROR)),-Werror)
# Hardening by default (what hardening-check says: scripts/deb/README.md):
# _FORTIFY_SOURCE only when optimising, never under the sanitizers, and not
# when the caller's CPPFLAGS choose a level already.
OPTIMISING := $(filter-out -O0,$(filter -O%,$(CFLAGS)))
HARDEN_CPPFLAGS := $(if $(or $(filter 1,$(SANITIZE)),$(findstring _FORTIFY_SOURCE,$(CPPFLAGS)),$(if $(OPTIMISING),,no)),,-D_FORTIFY_SOURCE=2)
# Control-flow protection where the compiler has it: -fcf-protection on x86
# (endbr64 in our code; Debian 12's crt files carry no IBT/SHSTK note, so
# the linked program gets none either: scripts/deb/README.md), branch
# protection on arm64.
CC_TARGET := $(shell $(CC) -dumpmachine 2>/dev/null)
HARDEN_CF := $(if $(filter x86_64-% i686-% i586-% i386-%,$(CC_TARGET)),-fcf-protection,$(if $(filter aarch64-%,$(CC_TARGET)),-mbranch-protection=standard))
HARDEN_CFLAGS := -fstack-protector-strong -fstack-clash-protection $(HARDEN_CF) -fPIE
HARDEN_LDFLAGS := -pie -Wl,-z,relro -Wl,-z,now
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(HARDEN_CPPFLAGS) $(WARN) $(HARDEN_CFLAGS) $(SAN_FLAGS)
ALL_CFLAGS := $(BASE_CFLAGS) -Iorigin -Ipublisher -I$(LLHTTP_INC) $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS)
# The core is compiled without -Ipublisher and with its own libraries'
# flags only (jansson for jsonstore, the publisher-only member), so the
# compiler too refuses a core file that reaches outside core/.
CORE_CFLAGS := $(BASE_CFLAGS) -Iorigin -I$(LLHTTP_INC) \
	$(shell $(PKG_CONFIG) --cflags $(CORE_PKGS) jansson 2>/dev/null) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(HARDEN_LDFLAGS) $(SAN_FLAGS) $(LDFLAGS)
LIBS := $(CORE_LIBS) -lm -lpthread

# llhttp is generated code that is not warning-clean under -Wextra: own flags.
LLHTTP_CFLAGS := -O2 -g -w -DLLHTTP_STRICT_MODE=1 $(HARDEN_CPPFLAGS) $(HARDEN_CFLAGS) $(SAN_FLAGS) \
	-I$(LLHTTP_INC) $(CPPFLAGS) $(CFLAGS)

# Every object depends on a stamp holding the flags (all but -Werror, which
# changes no output), rewritten only when they differ: changing CPPFLAGS,
# CFLAGS, LDFLAGS or this Makefile's flags rebuilds what they touch.
FLAGS_STAMP := $(BUILD)/flags
FLAGS_NOW := $(subst ','"'"',$(CC) $(filter-out -Werror,$(ALL_CFLAGS) : $(CORE_CFLAGS) : $(LLHTTP_CFLAGS) : $(ALL_LDFLAGS)))
$(FLAGS_STAMP): FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@

FORCE:

# Sources are found by folder, so a new file needs no line here. The tree is
# the map (README.md): origin/core/ is libcore.a, the only code both
# programs link; origin/*.c is the origin; publisher/**.c the publisher.
CORE_SRCS := $(sort $(wildcard origin/core/*.c))
ORIGIN_SRCS := $(sort $(wildcard origin/*.c))
PUBLISHER_SRCS := $(sort $(shell find publisher -name '*.c'))
RENDER_ASSETS := $(sort $(wildcard publisher/render/assets/*.css publisher/render/assets/*.js))
RENDER_ASSETS_OBJ := $(BUILD)/gen/render/assets.o
LLHTTP_SRCS := $(wildcard $(LLHTTP_DIR)/*.c)

CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/%.o) $(LLHTTP_SRCS:$(LLHTTP_DIR)/%.c=$(BUILD)/llhttp/%.o)
ORIGIN_OBJS := $(ORIGIN_SRCS:%.c=$(BUILD)/%.o)
PUBLISHER_OBJS := $(PUBLISHER_SRCS:%.c=$(BUILD)/%.o) $(RENDER_ASSETS_OBJ)
PUBLISHER_LIB_OBJS := $(filter-out $(BUILD)/publisher/main.o,$(PUBLISHER_OBJS))
ORIGIN_LIB_OBJS := $(filter-out $(BUILD)/origin/main.o,$(ORIGIN_OBJS))

# Unit tests mirror the tree: tests/unit/core/test_store.c tests core/store.
# Every test_*.c is one program; the other .c files under tests/unit are
# shared fixtures, linked from an archive so a test takes only what it uses.
UNIT_SRCS := $(sort $(shell find tests/unit -name 'test_*.c'))
UNIT_TESTS := $(UNIT_SRCS:%.c=$(BUILD)/%)
UNIT_SUPPORT_SRCS := $(sort $(filter-out $(UNIT_SRCS),$(shell find tests/unit -name '*.c')))
UNIT_SUPPORT_OBJS := $(UNIT_SUPPORT_SRCS:%.c=$(BUILD)/%.o)

.PHONY: FORCE all check unit integration layers demo install uninstall clean bootstrap bench deb test-debian

# bin/ always holds the binaries of the last build (release or sanitizer), so
# scripts, tests and README name one path.
all: $(BIN)/sayin-origin $(BIN)/sayin-publisher $(BUILD)/sayin.ini.example $(BUILD)/sayin.ini
	@mkdir -p bin && cp --remove-destination $(filter %/sayin-origin %/sayin-publisher,$^) bin/

$(BIN)/sayin-origin: $(ORIGIN_OBJS) $(BUILD)/libcore.a $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter-out $(FLAGS_STAMP),$^) $(LIBS)

$(BIN)/sayin-publisher: $(PUBLISHER_OBJS) $(BUILD)/libcore.a $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter-out $(FLAGS_STAMP),$^) $(PUBLISHER_LIBS) $(LIBS)

$(BUILD)/libcore.a: $(CORE_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/origin/core/%.o: origin/core/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CORE_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# --version: `git describe` when this tree is a git checkout, else the
# VERSION file of a tarball, else "unknown". Only core/version.o gets it;
# the stamp rebuilds that one object when the version changes.
SAYIN_VERSION := $(shell [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ] && \
	git describe --always --dirty 2>/dev/null || cat VERSION 2>/dev/null || echo unknown)
$(BUILD)/gen/version.stamp: FORCE
	@mkdir -p $(@D)
	@echo '$(SAYIN_VERSION)' | cmp -s - $@ || echo '$(SAYIN_VERSION)' > $@
$(BUILD)/origin/core/version.o: $(BUILD)/gen/version.stamp
$(BUILD)/origin/core/version.o: CORE_CFLAGS += -DSAYIN_VERSION='"$(SAYIN_VERSION)"'
.PHONY: FORCE
FORCE:

# Its flags (strict mode) live in this Makefile: a change rebuilds it.
$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c Makefile $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(LLHTTP_CFLAGS) -c -o $@ $<

# Unit tests (cmocka) link the modules directly, never the programs (every
# object but the two main.o).
$(BUILD)/libunitsupport.a: $(UNIT_SUPPORT_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

# Each test is compiled to an object first, so its dependency file rebuilds
# it when a header it includes changes.
$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(BUILD)/libunitsupport.a $(ORIGIN_LIB_OBJS) $(PUBLISHER_LIB_OBJS) $(BUILD)/libcore.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PUBLISHER_LIBS) $(LIBS) $(shell $(PKG_CONFIG) --libs cmocka libbrotlidec)

$(BUILD)/tests/unit/%.o: tests/unit/%.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itests/unit -MMD -MP -c -o $@ $<

# Render assets: the pages' stylesheet and script are real files, embedded
# byte for byte into a generated C file (scripts/embed-assets), one of the
# publisher's objects; editing one rebuilds it.
$(BUILD)/gen/render/assets.c: $(RENDER_ASSETS) scripts/embed-assets
	@mkdir -p $(@D)
	scripts/embed-assets $(RENDER_ASSETS) > $@.tmp && mv $@.tmp $@

$(RENDER_ASSETS_OBJ): $(BUILD)/gen/render/assets.c $(FLAGS_STAMP)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

bootstrap:
	@scripts/bootstrap

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

# The tree's rules (LAYOUT): path-qualified includes, origin/core/ includes
# only itself, publisher/ uses only core/ from origin/, no include cycle in a
# folder, and no call cycle among the media files.
layers: all
	scripts/check-layers --objects $(BUILD)

# The sanitizer build runs several times slower: scenario deadlines scale.
integration: all
	SAYIN_BIN=$(CURDIR)/bin SAYIN_TEST_TIME_SCALE=$(if $(filter 1,$(SANITIZE)),3,1) SAYIN_TEST_DEBOOTSTRAP=1 /usr/bin/python3 -m pytest -q -n 2 tests/integration

# make check builds with -Werror unless told WERROR=0 on its command line.
CHECK_WERROR := $(if $(filter command line,$(origin WERROR)),$(WERROR),1)

# The sanitizer build (SANITIZE=1) runs the same suite; the fuzz corpus
# replay and the fault-injection sweep are sanitizer builds already, so they
# run once, in the plain make check.
check: bootstrap
	$(MAKE) WERROR=$(CHECK_WERROR) all
	$(MAKE) WERROR=$(CHECK_WERROR) layers
	$(MAKE) WERROR=$(CHECK_WERROR) unit
ifneq ($(SANITIZE),1)
	$(MAKE) WERROR=$(CHECK_WERROR) fuzz-replay
endif
	$(MAKE) WERROR=$(CHECK_WERROR) integration
ifneq ($(SANITIZE),1)
	$(MAKE) WERROR=$(CHECK_WERROR) fault
endif

demo: bootstrap
	$(MAKE) all
	scripts/demo

# Benchmark programs link the modules like the unit tests.
$(BIN)/bench_%: scripts/bench/bench_%.c $(PUBLISHER_LIB_OBJS) $(BUILD)/libcore.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PUBLISHER_LIBS) $(LIBS)

bench: bootstrap all $(BIN)/bench_publish
	scripts/bench/run
	scripts/bench/transcode
	scripts/bench/publish
	scripts/bench/tls
	scripts/bench/edge

# What make install puts where (make deb: scripts/deb/README.md): the
# binaries of this build (build/release, or build/sanitize with SANITIZE=1),
# never copied through bin/, which tests running meanwhile use. The units
# in scripts/systemd/ name /usr/bin and /etc/sayin; installing rewrites them
# to BINDIR and SYSCONFDIR/sayin. The example config is generated from the
# settings table (sayin-publisher settings --example); SYSCONFDIR/sayin/
# sayin.ini is installed only when absent (it is the operator's), and
# uninstall removes it only when it is still the one install wrote.
SYSTEMD_FILES := $(sort $(wildcard scripts/systemd/*.service scripts/systemd/*.timer))
MAN_PAGES := origin/sayin-origin.8 publisher/sayin-publisher.8
INSTALL_SED := sed -e 's|/usr/bin/|$(BINDIR)/|g' -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/etc/sayin|$(SYSCONFDIR)/sayin|g'

$(BUILD)/sayin.ini.example: $(BIN)/sayin-publisher
	$(BIN)/sayin-publisher settings --example > $@.tmp && mv $@.tmp $@

# The config the units read: the example with the store in /var/lib/sayin.
$(BUILD)/sayin.ini: $(BUILD)/sayin.ini.example
	sed -e 's|^;data = .*|data = /var/lib/sayin/store|' $< > $@.tmp && mv $@.tmp $@

install: $(BIN)/sayin-origin $(BIN)/sayin-publisher $(BUILD)/sayin.ini.example $(BUILD)/sayin.ini
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR)/sayin \
		$(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(DOCDIR)/examples
	install -m 755 $(BIN)/sayin-origin $(BIN)/sayin-publisher $(DESTDIR)$(BINDIR)/
	install -m 644 $(MAN_PAGES) $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(BUILD)/sayin.ini.example $(DESTDIR)$(SYSCONFDIR)/sayin/sayin.ini.example
	test -e $(DESTDIR)$(SYSCONFDIR)/sayin/sayin.ini || \
		install -m 644 $(BUILD)/sayin.ini $(DESTDIR)$(SYSCONFDIR)/sayin/sayin.ini
	set -e; for f in $(SYSTEMD_FILES); do \
		$(INSTALL_SED) $$f > $(DESTDIR)$(SYSTEMDUNITDIR)/$${f##*/}; \
		chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${f##*/}; done
	$(INSTALL_SED) scripts/systemd/sayin.sysusers > $(DESTDIR)$(SYSUSERSDIR)/sayin.conf
	$(INSTALL_SED) scripts/systemd/sayin.tmpfiles > $(DESTDIR)$(TMPFILESDIR)/sayin.conf
	chmod 644 $(DESTDIR)$(SYSUSERSDIR)/sayin.conf $(DESTDIR)$(TMPFILESDIR)/sayin.conf
	$(INSTALL_SED) scripts/crontab > $(DESTDIR)$(DOCDIR)/examples/crontab
	chmod 644 $(DESTDIR)$(DOCDIR)/examples/crontab

# A Debian package built with dpkg-deb from the installed tree
# (scripts/deb/README.md): DEB_DIR/sayin_VERSION_ARCH.deb.
DEB_DIR ?= build/deb
deb: $(BIN)/sayin-origin $(BIN)/sayin-publisher
	+scripts/deb/build $(DEB_DIR)

# The package on a clean Debian 12, in a chroot (root): the test makes its
# cached root in ~/.cache/sayin-tests/debootstrap/ once (about 3 minutes;
# make check does too), then reuses it (tests/integration/test_package.py).
test-debian: all
	SAYIN_BIN=$(CURDIR)/bin SAYIN_TEST_DEBOOTSTRAP=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider \
		tests/integration/test_package.py -k clean_debian

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sayin-origin $(DESTDIR)$(BINDIR)/sayin-publisher
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN_PAGES)))
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(notdir $(SYSTEMD_FILES)))
	rm -f $(DESTDIR)$(SYSUSERSDIR)/sayin.conf $(DESTDIR)$(TMPFILESDIR)/sayin.conf
	rm -f $(DESTDIR)$(DOCDIR)/examples/crontab
	rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	if [ -f $(BUILD)/sayin.ini ] && cmp -s $(BUILD)/sayin.ini $(DESTDIR)$(SYSCONFDIR)/sayin/sayin.ini; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/sayin/sayin.ini; fi
	rm -f $(DESTDIR)$(SYSCONFDIR)/sayin/sayin.ini.example
	rmdir $(DESTDIR)$(SYSCONFDIR)/sayin 2>/dev/null || true

clean:
	rm -rf build bin

# Fuzz targets (tests/fuzz/) and the fault-injection build (tests/fault/)
# keep their rules beside their sources.
-include tests/fuzz/fuzz.mk
-include tests/fault/fault.mk

# Dependency files of the build (an old build/debootstrap root is skipped).
-include $(shell find build -path build/debootstrap -prune -o -name '*.d' -type f -print 2>/dev/null)
