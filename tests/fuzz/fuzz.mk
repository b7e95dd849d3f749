# Fuzz targets (tests/fuzz/README.md), included by the Makefile.
#
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="wav multipart"]
#       builds with clang into build/fuzz and runs each target for
#       FUZZ_SECONDS on a scratch copy of its corpus (build/fuzz/run/NAME)
#   make fuzz-build     only builds build/fuzz/bin/fuzz_NAME
#   make fuzz-merge     adds what the last `make fuzz` found to the checked-in
#                       corpora, minimized (libFuzzer's -merge=1)
#   make fuzz-replay    every target with gcc under ASan + UBSan (the
#                       SANITIZE=1 objects) and tests/fuzz/replay.c, run on
#                       every corpus file: fails on any sanitizer report
#
# A target is a file tests/fuzz/fuzz_NAME.c defining LLVMFuzzerTestOneInput
# (and optionally LLVMFuzzerInitialize); its seeds are in
# tests/fuzz/corpus/NAME/, its dictionary (optional) tests/fuzz/dict/NAME.dict.

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR := tests/fuzz
FUZZ_ALL := $(sort $(patsubst $(FUZZ_DIR)/fuzz_%.c,%,$(wildcard $(FUZZ_DIR)/fuzz_*.c)))
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_OUT := build/fuzz

# The whole project is instrumented for coverage (fuzzer-no-link) so the
# fuzzer sees the branches of the code under test, not only the target's.
# Warnings stay on but are not errors: clang warns where gcc does not, and a
# fuzz build must not break on that.
FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -O1 -g $(FUZZ_SAN) \
	-Iorigin -Ipublisher -I$(LLHTTP_INC) $(PKG_CFLAGS)
FUZZ_LIBS := $(PUBLISHER_LIBS) $(LIBS)

FUZZ_PROJECT_SRCS := $(filter-out origin/main.c publisher/main.c,\
	$(CORE_SRCS) $(ORIGIN_SRCS) $(PUBLISHER_SRCS))
FUZZ_PROJECT_OBJS := $(FUZZ_PROJECT_SRCS:%.c=$(FUZZ_OUT)/%.o) \
	$(LLHTTP_SRCS:$(LLHTTP_DIR)/%.c=$(FUZZ_OUT)/llhttp/%.o) $(FUZZ_OUT)/gen/render/assets.o
FUZZ_BINS := $(FUZZ_ALL:%=$(FUZZ_OUT)/bin/fuzz_%)

.PHONY: fuzz fuzz-build fuzz-merge fuzz-replay fuzz-replay-run

$(FUZZ_OUT)/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

# Strict, as in the programs (the core refuses to serve a lenient llhttp).
$(FUZZ_OUT)/llhttp/%.o: $(LLHTTP_DIR)/%.c tests/fuzz/fuzz.mk
	@mkdir -p $(@D)
	$(FUZZ_CC) -O1 -g -w -DLLHTTP_STRICT_MODE=1 $(FUZZ_SAN) -I$(LLHTTP_INC) -c -o $@ $<

$(FUZZ_OUT)/gen/render/assets.c: $(RENDER_ASSETS) scripts/embed-assets
	@mkdir -p $(@D)
	scripts/embed-assets $(RENDER_ASSETS) > $@.tmp && mv $@.tmp $@

$(FUZZ_OUT)/gen/render/assets.o: $(FUZZ_OUT)/gen/render/assets.c
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

# An archive, so a target links only the objects it reaches.
$(FUZZ_OUT)/libsayin.a: $(FUZZ_PROJECT_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_OUT)/bin/fuzz_%: $(FUZZ_OUT)/tests/fuzz/fuzz_%.o $(FUZZ_OUT)/libsayin.a
	@mkdir -p $(@D)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(FUZZ_LIBS)

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_OUT)/bin/fuzz_%)

fuzz: fuzz-build
	$(FUZZ_DIR)/run --bin $(FUZZ_OUT)/bin --work $(FUZZ_OUT)/run --seconds $(FUZZ_SECONDS) \
		$(FUZZ_TARGETS)

fuzz-merge: fuzz-build
	$(FUZZ_DIR)/run --bin $(FUZZ_OUT)/bin --work $(FUZZ_OUT)/run --merge $(FUZZ_TARGETS)

# Replay: gcc, the SANITIZE=1 objects (build/sanitize), one program per
# target with replay.c as its main.
fuzz-replay:
	$(MAKE) SANITIZE=1 fuzz-replay-run

FUZZ_REPLAY_BINS := $(FUZZ_ALL:%=$(BUILD)/fuzz/replay_%)

$(BUILD)/fuzz/%.o: $(FUZZ_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/fuzz/replay_%: $(BUILD)/fuzz/fuzz_%.o $(BUILD)/fuzz/replay.o $(ORIGIN_LIB_OBJS) \
		$(PUBLISHER_LIB_OBJS) $(BUILD)/libcore.a
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PUBLISHER_LIBS) $(LIBS)

fuzz-replay-run: $(FUZZ_REPLAY_BINS)
	@set -e; for t in $(FUZZ_ALL); do \
		if [ -d $(FUZZ_DIR)/corpus/$$t ]; then \
			$(BUILD)/fuzz/replay_$$t $(FUZZ_DIR)/corpus/$$t; \
		else \
			echo "replay $$t: no corpus ($(FUZZ_DIR)/corpus/$$t), nothing to replay"; \
		fi; \
	done

# The targets' objects are kept (not intermediate), so a rebuild relinks only
# what changed.
.SECONDARY: $(FUZZ_ALL:%=$(FUZZ_OUT)/tests/fuzz/fuzz_%.o) $(FUZZ_ALL:%=$(BUILD)/fuzz/fuzz_%.o) \
	$(BUILD)/fuzz/replay.o
