# Keel: the two commands of the quick start, and the rest of the developer loop.
# These are test builds (KEEL_PROFILE=test: the test hooks compiled in); a
# product build is plain cmake, whose profile is production
# (docs/internals/build-profiles.md).
BUILD   ?= build
ASAN    ?= build-asan
CC      ?= cc
CMAKE_FLAGS ?=
JOBS    ?= $(shell nproc)

.PHONY: all deps build check asan demo bench fuzz clean
all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/build.ninja:
	@cmake -S . -B $(BUILD) -G Ninja -DKEEL_PROFILE=test $(CMAKE_FLAGS) >/dev/null

build: deps $(BUILD)/build.ninja
	@cmake --build $(BUILD) -j $(JOBS)

check: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

$(ASAN)/build.ninja:
	@CC=clang cmake -S . -B $(ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON -DKEEL_PROFILE=test $(CMAKE_FLAGS) >/dev/null

# The tpm2.* reruns (the integration suite again with TPM keys) run in `make check` only: under ASan they
# would add ten minutes for code the keystore_tpm2 tests already run there.
asan: deps $(ASAN)/build.ninja
	@cmake --build $(ASAN) -j $(JOBS)
	@cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	    KEEL_SANITIZED=1 ctest --output-on-failure -j $(JOBS) -LE tpm2 $(CTEST_FLAGS)

demo: build
	@sh scripts/demo.sh $(BUILD)

bench: build
	@sh scripts/deps.sh bench
	@sh bench/run.sh $(BUILD)

FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKEEL_LIBFUZZER=ON -DKEEL_PROFILE=test >/dev/null
	@cmake --build $(FUZZ) -j $(JOBS) --target fuzz_all
	@sh tests/fuzz/run.sh $(FUZZ) $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN) $(FUZZ)
