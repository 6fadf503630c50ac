# iothubd build. Plain make: every .c under a layer folder is compiled into
# one static library; programs and tests link against it. Layers are listed
# in dependency order (see docs/ARCHITECTURE.md).
#
#   make            build/iothubd, build/iothub, build/iothub-bench
#   make test       build, then run unit, sanitizer and end-to-end tests
#   make run        install missing packages (as root), build, start the hub
#   make asan       the same programs with ASan+UBSan in build/asan/
#   make fuzz       run every libFuzzer target (FUZZ_SECONDS each)
#   make bench      load generator against iothubd and Mosquitto -> bench/RESULTS.md
#   make test-crash SIGKILL rounds under mixed load, checked (CRASH_ROUNDS)
#   make soak       mixed load with connection churn (DURATION seconds)

LAYERS    ?= util mqtt net broker store hub service
CC        ?= cc
BUILD     ?= build
OPT       ?= -O2
SAN       ?=
WARN      := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS    += -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) $(SAN) -Isrc -MMD -MP
LDLIBS    += -lsqlite3 -ljansson -lhttp_parser -lssl -lcrypto -lpthread
LDFLAGS   += $(SAN)
# The server's allocator: jemalloc, as Redis uses. At 50,000 twin
# requests/s, where each patch makes ~25 allocations on a loop thread,
# allocation took ~10 % of the server's samples with glibc's malloc (most of
# it in _int_malloc, past its small per-thread cache) and ~5 % with
# jemalloc (docs/PERFORMANCE.md). Sanitizer builds keep their own
# allocator; `make MALLOC_LIB=` builds the server on glibc's.
MALLOC_LIB ?= $(if $(SAN),,-ljemalloc)

LIB_SRC   := $(foreach l,$(LAYERS),$(sort $(wildcard src/$(l)/*.c)))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB       := $(BUILD)/libiothubd.a
TESTS     ?= tests/unit/test_*.c
UNIT_SRC  := $(sort $(wildcard $(TESTS)))
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC  := $(sort $(wildcard src/tools/iothub/*.c))
BENCH_SRC := $(sort $(wildcard src/tools/bench/*.c))
PROGRAMS  := $(BUILD)/iothubd $(if $(TOOL_SRC),$(BUILD)/iothub) $(if $(BENCH_SRC),$(BUILD)/iothub-bench)

.PHONY: all test unit e2e asan fuzz run clean deps unit-bins bench test-crash soak
all: $(PROGRAMS) $(UNIT_BIN)

# Just the unit tests named by TESTS, against the layers named by LAYERS:
#   make BUILD=build/mine LAYERS="util net store" TESTS="tests/unit/test_store*.c" unit-bins
unit-bins: $(UNIT_BIN)

include fuzz/fuzz.mk

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/iothubd: $(BUILD)/obj/src/main.o $(BUILD)/obj/src/config.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(MALLOC_LIB) -o $@

$(BUILD)/iothub: $(TOOL_SRC:%.c=$(BUILD)/obj/%.o) $(LIB)
	$(CC) $(LDFLAGS) $^ -lcurl $(LDLIBS) -o $@

$(BUILD)/iothub-bench: $(BENCH_SRC:%.c=$(BUILD)/obj/%.o) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lm -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -lcmocka $(LDLIBS) -o $@

deps:
	@scripts/install-deps

asan:
	$(MAKE) BUILD=build/asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all

unit: all
	@scripts/run-tests unit

e2e: all
	@scripts/run-tests e2e

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory asan
	@scripts/run-tests all

FUZZ_SECONDS ?= 60
fuzz:
	@scripts/run-fuzz $(FUZZ_SECONDS)

# QUICK=1: the short version (under two minutes).
bench: deps all
	@scripts/run-bench $(if $(QUICK),--quick)

# Crash consistency: CRASH_ROUNDS kills under mixed load (make test runs a few).
CRASH_ROUNDS ?= 25
test-crash: deps all
	@scripts/run-crash $(CRASH_ROUNDS)

# Soak: DURATION seconds of mixed load with churn; fails on growth or errors.
DURATION ?= 120
soak: deps all
	@scripts/run-soak $(DURATION)

run: deps all
	@scripts/run-dev

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
