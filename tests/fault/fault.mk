# Fault injection (tests/fault/README.md): the publisher built under ASan and
# UBSan, linked through tests/fault/shim.c with --wrap, so the Nth
# allocation or the Nth write-like call fails; then the sweep.
#
#   make fault                 build build/fault/fault-bin/sayin-publisher, run the sweep
#   make fault FAULT_ARGS=...  options of tests/fault/sweep.py (--full, --only, -v, ...)

FAULT_BUILD := build/fault
FAULT_PUBLISHER := $(FAULT_BUILD)/fault-bin/sayin-publisher
# make check's budget: every N where an operation is small, a stride plus
# the first and last 20 where it is not (about 6 minutes on 2 cores; the
# numbers are in tests/fault/README.md). FAULT_ARGS=--full: every N.
FAULT_ARGS ?= --budget 30 --edge 20
# Every allocator and write-like call of our objects and of LMDB. writev,
# pwritev and fdatasync are LMDB's (without MDB_WRITEMAP); msync is its
# commit with it; copy_file_range and fallocate the store's object writes.
FAULT_WRAP := malloc calloc realloc strdup strndup posix_memalign aligned_alloc asprintf \
	write pwrite writev pwritev fsync fdatasync msync copy_file_range fallocate
FAULT_LDFLAGS := $(foreach s,$(FAULT_WRAP),-Wl,--wrap=$(s))
# LMDB linked statically, so its own allocations and writes are wrapped too.
FAULT_LMDB_A := $(shell $(CC) -print-file-name=liblmdb.a)

.PHONY: fault fault-build

fault:
	$(MAKE) SANITIZE=1 fault-build
	nice /usr/bin/python3 tests/fault/sweep.py --bin $(CURDIR)/$(FAULT_PUBLISHER) $(FAULT_ARGS)

# Only meaningful with SANITIZE=1: the program is linked from the sanitizer
# build's own objects (build/sanitize; --wrap acts at link time only), so
# make check compiles them once for the sanitizer build, the fuzz replay
# and this.
ifeq ($(SANITIZE),1)
fault-build: $(FAULT_PUBLISHER)

$(FAULT_BUILD)/tests/fault/shim.o: tests/fault/shim.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fno-sanitize=all -MMD -MP -c -o $@ $<

$(FAULT_PUBLISHER): $(PUBLISHER_OBJS) $(BUILD)/libcore.a $(FAULT_BUILD)/tests/fault/shim.o
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) $(FAULT_LDFLAGS) -o $@ $^ $(filter-out -llmdb,$(PUBLISHER_LIBS) $(LIBS)) \
		$(FAULT_LMDB_A) -lpthread
endif
