# fuzz/fuzz.mk — libFuzzer targets. Included by the top Makefile, and also
# usable alone: make -f fuzz/fuzz.mk fuzz-build
#
# Every fuzz/fuzz_<name>.c becomes build/fuzz/fuzz_<name>, built with clang's
# libFuzzer + ASan + UBSan over the codec sources (src/mqtt/*.c), which have
# no dependency on the other layers. Seed corpora live in
# fuzz/corpus/<name>/ (read-only; scripts/run-fuzz works on a copy in
# build/fuzz/corpus/<name>/). fuzz/make-seeds.c writes the seeds of
# mqtt_codec with the encoder: make -f fuzz/fuzz.mk fuzz-seeds

FUZZ_CC     ?= clang
FUZZ_DIR    ?= build/fuzz
FUZZ_FLAGS  ?= -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Isrc
FUZZ_LIBSRC := $(sort $(wildcard src/mqtt/*.c))
FUZZ_SRC    := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN    := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_DIR)/%)

.PHONY: fuzz-build fuzz-seeds

fuzz-build: $(FUZZ_BIN)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIBSRC) $(wildcard src/mqtt/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_CFLAGS) $< $(FUZZ_LIBSRC) -o $@

$(FUZZ_DIR)/make-seeds: fuzz/make-seeds.c $(FUZZ_LIBSRC) $(wildcard src/mqtt/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -g -O1 $(FUZZ_CFLAGS) $< $(FUZZ_LIBSRC) -o $@

fuzz-seeds: $(FUZZ_DIR)/make-seeds
	rm -f fuzz/corpus/mqtt_codec/seed-*
	$(FUZZ_DIR)/make-seeds fuzz/corpus/mqtt_codec
