# fuzz/fuzz.mk — libFuzzer targets. Included by the top Makefile, and also
# usable alone: make -f fuzz/fuzz.mk fuzz-build
#
# Every fuzz/fuzz_<name>.c becomes build/fuzz/fuzz_<name>, built with clang's
# libFuzzer + ASan + UBSan. A target links the codec (src/mqtt/*.c, no
# dependency on the other layers) plus what FUZZ_SRC_<name> and
# FUZZ_LIBS_<name> add; what a target replaces by stubs (net, broker,
# registry, route handlers) is defined in the target itself. Seed corpora
# live in fuzz/corpus/<name>/ (read-only; scripts/run-fuzz works on a copy
# in build/fuzz/corpus/<name>/). fuzz/make-seeds.c writes the seeds of
# mqtt_codec with the encoder: make -f fuzz/fuzz.mk fuzz-seeds

FUZZ_CC     ?= clang
FUZZ_DIR    ?= build/fuzz
FUZZ_FLAGS  ?= -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Isrc
FUZZ_LIBSRC := $(sort $(wildcard src/mqtt/*.c))
FUZZ_SRC    := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN    := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_DIR)/%)

# Per-target sources and libraries beyond the codec.
FUZZ_SRC_sas_token     := src/util/crypto.c src/util/sas.c
FUZZ_LIBS_sas_token    := -lcrypto
FUZZ_SRC_twin_patch    := src/hub/twin_doc.c src/hub/twin_text.c src/util/crypto.c src/util/time.c
FUZZ_LIBS_twin_patch   := -ljansson -lcrypto
FUZZ_SRC_http_request  := $(addprefix src/service/,http_conn.c http_strict.c router.c auth.c response.c) \
                          src/util/crypto.c src/util/sas.c src/util/log.c src/util/time.c
FUZZ_LIBS_http_request := -lhttp_parser -ljansson -lcrypto
FUZZ_SRC_hub_props     := src/hub/properties.c src/util/log.c
FUZZ_SRC_broker_trie   := $(addprefix src/broker/,topic_tree.c retained.c trie.c pos_index.c message.c)

.PHONY: fuzz-build fuzz-seeds

fuzz-build: $(FUZZ_BIN)

# Rebuilt when any header changes: the targets reach into several layers.
.SECONDEXPANSION:
$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_LIBSRC) $$(FUZZ_SRC_$$*) $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_CFLAGS) $< $(FUZZ_LIBSRC) $(FUZZ_SRC_$*) $(FUZZ_LIBS_$*) -o $@

$(FUZZ_DIR)/make-seeds: fuzz/make-seeds.c $(FUZZ_LIBSRC) $(wildcard src/mqtt/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -g -O1 $(FUZZ_CFLAGS) $< $(FUZZ_LIBSRC) -o $@

fuzz-seeds: $(FUZZ_DIR)/make-seeds
	rm -f fuzz/corpus/mqtt_codec/seed-*
	$(FUZZ_DIR)/make-seeds fuzz/corpus/mqtt_codec
