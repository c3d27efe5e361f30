# Standalone build of the C core and its tests, for sanitizers, valgrind
# and fuzzers. SwiftPM builds the same sources for the Swift targets.
#
#   make test                 build and run the C tests (OpenMP when found)
#   make test OPENMP=0        the same without OpenMP
#   make asan                 tests under AddressSanitizer + UBSan
#   make valgrind             tests under valgrind memcheck
CC ?= clang
ifeq ($(origin CC),default)
CC = clang
endif
BUILD ?= build
OMP_INCLUDE ?= /usr/lib/llvm-14/lib/clang/14.0.6/include
OMP_LIB ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libomp5.so /usr/lib/aarch64-linux-gnu/libomp5.so))
ifeq ($(origin OPENMP),undefined)
OPENMP := $(if $(and $(wildcard $(OMP_INCLUDE)/omp.h),$(OMP_LIB)),1,0)
endif

CFLAGS ?= -O2 -g
override CFLAGS += -std=c11 -Wall -Wextra -Wno-unused-parameter -ICCore/include -ICCore -D_GNU_SOURCE
LDLIBS += -lz -lm
# -fopenmp only when compiling: at link time clang would add -lomp, which
# Debian ships as libomp5.so in the multiarch folder.
ifeq ($(OPENMP),1)
OMP_CFLAGS = -fopenmp -I$(OMP_INCLUDE)
LDLIBS += -L$(dir $(OMP_LIB)) -lomp5
endif

CORE_SOURCES := $(wildcard CCore/*.c)
CORE_OBJECTS := $(patsubst CCore/%.c,$(BUILD)/core/%.o,$(CORE_SOURCES))
TEST_SOURCES := $(wildcard Tests/ccore/test_*.c)
TEST_BINARIES := $(patsubst Tests/ccore/%.c,$(BUILD)/%,$(TEST_SOURCES)) $(BUILD)/test_header_example
TEST_SUPPORT := $(wildcard Tests/ccore/support*.c)

.PHONY: all test asan valgrind clean
all: $(BUILD)/liblca.a $(TEST_BINARIES)

$(BUILD)/core/%.o: CCore/%.c $(wildcard CCore/*.h) CCore/include/lca.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(OMP_CFLAGS) -c $< -o $@

$(BUILD)/liblca.a: $(CORE_OBJECTS)
	ar rcs $@ $^

$(BUILD)/tests/%.o: Tests/ccore/%.c $(wildcard Tests/ccore/*.h) CCore/include/lca.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(OMP_CFLAGS) -ITests/ccore -c $< -o $@

SUPPORT_OBJECTS := $(patsubst Tests/ccore/%.c,$(BUILD)/tests/%.o,$(TEST_SUPPORT))

$(BUILD)/test_%: $(BUILD)/tests/test_%.o $(SUPPORT_OBJECTS) $(BUILD)/liblca.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The complete example at the top of lca.h must compile and run.
$(BUILD)/header_example.c: CCore/include/lca.h
	@mkdir -p $(dir $@)
	awk '/Complete example/{on=1; next} / \* Conventions/{on=0} on && /^ \*     /{print substr($$0, 8)}' $< > $@

$(BUILD)/test_header_example: $(BUILD)/header_example.c $(BUILD)/liblca.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/liblca.a $(LDLIBS) -o $@

# Runs every C test; each prints its worst differences and exits non-zero
# on failure. The last line is "N passed, N failed".
test: $(TEST_BINARIES)
	@passed=0; failed=0; for t in $(TEST_BINARIES); do \
	  echo "== $$t"; \
	  if (cd $(BUILD) && LCA_SHARED=$(abspath ../shared) $(abspath $$t)); then passed=$$((passed+1)); else failed=$$((failed+1)); echo "FAILED: $$t"; fi; \
	done; echo "ccore: $$passed passed, $$failed failed"; [ $$failed -eq 0 ]

asan:
	$(MAKE) test BUILD=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address,undefined" CC=$(CC)

valgrind: $(TEST_BINARIES)
	@for t in $(TEST_BINARIES); do valgrind -q --error-exitcode=1 $$t || exit 1; done

clean:
	rm -rf $(BUILD)
