# sayin: build, test, demo and install. See README.md.
#
#   make                 build bin/sayin-origin and bin/sayin-publisher
#   make check           install missing packages, build, run every test
#   make check SANITIZE=1  the same under AddressSanitizer + UBSan (separate build dir)
#   make demo            publish a spoken clip and serve it
#   make install PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
CC ?= cc
PKG_CONFIG ?= pkg-config

# The origin links only what it serves with; media libraries stay in the publisher.
CORE_PKGS := libuv lmdb libcrypto inih
PUBLISHER_PKGS := libcurl jansson opus ogg soxr zlib libbrotlienc libavformat libavcodec libavutil libebur128 libpng
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
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(SAN_FLAGS) -Iorigin -Ipublisher -Ipublisher/cdn -Ipublisher/social -I$(LLHTTP_INC) $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SAN_FLAGS) $(LDFLAGS)
LIBS := $(CORE_LIBS) -lm -lpthread

# llhttp is generated code that is not warning-clean under -Wextra: own flags.
LLHTTP_CFLAGS := -O2 -g -w $(SAN_FLAGS) -I$(LLHTTP_INC)

CORE_SRCS := origin/error.c origin/log.c origin/config.c origin/fileio.c origin/store.c origin/http.c origin/metrics.c
ORIGIN_SRCS := origin/serve.c origin/main.c
PUBLISHER_SRCS := publisher/compress.c publisher/media.c publisher/decode.c publisher/limiter.c \
	publisher/waveform.c publisher/aac.c publisher/mp4.c \
	publisher/feed.c publisher/page.c publisher/publish.c publisher/pipeline.c publisher/auth.c publisher/multipart.c publisher/api.c publisher/outbox.c publisher/net.c publisher/delivery.c \
	publisher/cdn/cdn.c publisher/cdn/aws.c publisher/cdn/varnish.c publisher/cdn/nginx.c \
	publisher/cdn/fastly.c publisher/cdn/cloudflare.c publisher/cdn/cloudfront.c publisher/cdn/s3.c \
	publisher/cdn/prewarm.c publisher/crosspost.c publisher/social/social.c publisher/social/oauth1.c \
	publisher/social/xtext.c publisher/social/x.c publisher/social/facebook.c publisher/main.c
LLHTTP_SRCS := $(wildcard $(LLHTTP_DIR)/*.c)

CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/%.o) $(LLHTTP_SRCS:$(LLHTTP_DIR)/%.c=$(BUILD)/llhttp/%.o)
ORIGIN_OBJS := $(ORIGIN_SRCS:%.c=$(BUILD)/%.o)
PUBLISHER_OBJS := $(PUBLISHER_SRCS:%.c=$(BUILD)/%.o)
PUBLISHER_LIB_OBJS := $(filter-out $(BUILD)/publisher/main.o,$(PUBLISHER_OBJS))

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BIN)/%,$(wildcard tests/unit/test_*.c))

.PHONY: all check unit integration demo install uninstall clean bootstrap bench

# bin/ always holds the binaries of the last build (release or sanitizer), so
# scripts, tests and README name one path.
all: $(BIN)/sayin-origin $(BIN)/sayin-publisher
	@mkdir -p bin && cp --remove-destination $^ bin/

$(BIN)/sayin-origin: $(ORIGIN_OBJS) $(BUILD)/libcore.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BIN)/sayin-publisher: $(PUBLISHER_OBJS) $(BUILD)/libcore.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PUBLISHER_LIBS) $(LIBS)

$(BUILD)/libcore.a: $(CORE_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) $(LLHTTP_CFLAGS) -c -o $@ $<

# Unit tests (cmocka) link the modules directly, never the programs.
$(BIN)/test_%: tests/unit/test_%.c $(PUBLISHER_LIB_OBJS) $(BUILD)/libcore.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PUBLISHER_LIBS) $(LIBS) $(shell $(PKG_CONFIG) --libs cmocka libbrotlidec)

bootstrap:
	@scripts/bootstrap

unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

integration: all
	SAYIN_BIN=$(CURDIR)/bin /usr/bin/python3 -m pytest -q -n 2 tests/integration

check: bootstrap
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) integration

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

install: all
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 bin/sayin-origin bin/sayin-publisher $(DESTDIR)$(BINDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sayin-origin $(DESTDIR)$(BINDIR)/sayin-publisher

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
