# Standalone build of the C core and its tests, for sanitizers, valgrind
# and fuzzers. SwiftPM builds the same sources for the Swift targets.
#
#   make test                 build and run the C tests (OpenMP when found)
#   make test OPENMP=0        the same with the pthreads back end (what SwiftPM builds)
#   make asan                 tests under AddressSanitizer + UBSan
#   make valgrind             tests under valgrind memcheck
#   make openmp-info          where OpenMP was looked for and what was found
CC ?= clang
ifeq ($(origin CC),default)
CC = clang
endif
BUILD ?= build

# OpenMP is optional (docs/threads.md): with it the core's threads.c uses the
# OpenMP back end, without it a pool of POSIX threads; the bytes are the same.
# omp.h: the compiler's own resource folder (clang; gcc ships it), else the
# newest /usr/lib/llvm-*/lib/clang/*/include (Debian and Ubuntu's
# libomp-*-dev, which the Swift toolchain's clang does not look in).
# libomp: beside that LLVM (lib/libomp.so), else libomp.so or Debian's
# libomp5.so in the multiarch folder. A probe program must compile, link
# and run with what was found, else OPENMP=0.
CC_IS_CLANG := $(shell $(CC) --version 2>/dev/null | grep -qi clang && echo 1)
MULTIARCH := $(or $(shell $(CC) -print-multiarch 2>/dev/null),$(shell gcc -print-multiarch 2>/dev/null),$(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null))
ifeq ($(CC_IS_CLANG),1)
RESOURCE_DIR := $(shell $(CC) -print-resource-dir 2>/dev/null)
NEWEST_LLVM_OMP_H := $(lastword $(shell ls -d /usr/lib/llvm-*/lib/clang/*/include/omp.h 2>/dev/null | sort -V))
OMP_INCLUDE ?= $(patsubst %/omp.h,%,$(firstword $(wildcard $(RESOURCE_DIR)/include/omp.h) $(NEWEST_LLVM_OMP_H)))
NEWEST_LLVM := $(shell echo "$(NEWEST_LLVM_OMP_H)" | sed 's|/lib/clang/.*||')
OMP_LIB ?= $(firstword $(wildcard $(RESOURCE_DIR)/../../libomp.so $(NEWEST_LLVM)/lib/libomp.so \
                                  /usr/lib/$(MULTIARCH)/libomp.so /usr/lib/$(MULTIARCH)/libomp5.so))
OMP_CFLAGS_FOUND = -fopenmp $(if $(OMP_INCLUDE),-I$(OMP_INCLUDE))
# -fopenmp only when compiling: at link time clang would add -lomp, which
# Debian ships as libomp5.so; the library found is linked by its path.
OMP_LDLIBS_FOUND = $(OMP_LIB) -Wl,-rpath,$(dir $(OMP_LIB))
OMP_USABLE := $(if $(and $(OMP_INCLUDE),$(OMP_LIB)),1)
else
# gcc and others: -fopenmp finds omp.h and the runtime (libgomp) itself
OMP_CFLAGS_FOUND = -fopenmp
OMP_LDLIBS_FOUND = -fopenmp
OMP_USABLE := 1
endif
ifeq ($(origin OPENMP),undefined)
OMP_PROBE := $(shell probe=$$(mktemp -d) && printf '\043include <omp.h>\nint main(void) { int n = 0;\n\043pragma omp parallel num_threads(2)\n\043pragma omp atomic\n n++;\n return n != 2; }\n' > $$probe/p.c && $(CC) $(OMP_CFLAGS_FOUND) -c $$probe/p.c -o $$probe/p.o 2>/dev/null && $(CC) $$probe/p.o $(OMP_LDLIBS_FOUND) -o $$probe/p 2>/dev/null && $$probe/p && echo 1; rm -rf $$probe)
OPENMP := $(if $(and $(OMP_USABLE),$(OMP_PROBE)),1,0)
endif

CFLAGS ?= -O2 -g
override CFLAGS += -std=c11 -Wall -Wextra -Wno-unused-parameter -ICCore/include -ICCore -D_GNU_SOURCE
LDLIBS += -lz -lm -pthread
ifeq ($(OPENMP),1)
OMP_CFLAGS = $(OMP_CFLAGS_FOUND)
LDLIBS += $(OMP_LDLIBS_FOUND)
endif

CORE_SOURCES := $(wildcard CCore/*.c)
CORE_OBJECTS := $(patsubst CCore/%.c,$(BUILD)/core/%.o,$(CORE_SOURCES))
TEST_SOURCES := $(wildcard Tests/ccore/test_*.c)
TEST_BINARIES := $(patsubst Tests/ccore/%.c,$(BUILD)/%,$(TEST_SOURCES)) $(BUILD)/test_header_example
TEST_SUPPORT := $(wildcard Tests/ccore/support*.c)

.PHONY: all test asan valgrind clean openmp-info ldlibs
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

# One training run to a log and a checkpoint, for tools/compare-backends.
$(BUILD)/backend_log: tools/threads/backend_log.c $(BUILD)/liblca.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/liblca.a $(LDLIBS) -o $@

# Runs every C test; each prints its worst differences and exits non-zero
# on failure. The last line is "N passed, N failed". The tests read data
# only from the repository: Tests/data, through LCA_TEST_DATA.
test: $(TEST_BINARIES)
	@passed=0; failed=0; for t in $(TEST_BINARIES); do \
	  echo "== $$t"; \
	  if (cd $(BUILD) && LCA_TEST_DATA=$(abspath Tests/data) $(abspath $$t)); then passed=$$((passed+1)); else failed=$$((failed+1)); echo "FAILED: $$t"; fi; \
	done; echo "ccore: $$passed passed, $$failed failed"; [ $$failed -eq 0 ]

asan:
	$(MAKE) test BUILD=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" LDFLAGS="-fsanitize=address,undefined" CC=$(CC)

valgrind: $(TEST_BINARIES)
	@for t in $(TEST_BINARIES); do valgrind -q --error-exitcode=1 $$t || exit 1; done

# The libraries a program linked with $(BUILD)/liblca.a needs (benchmarks).
ldlibs:
	@echo $(LDLIBS)

openmp-info:
	@echo "CC=$(CC) (clang: $(or $(CC_IS_CLANG),no)), multiarch $(MULTIARCH)"
	@echo "omp.h folder: $(or $(OMP_INCLUDE),$(if $(CC_IS_CLANG),none found,the compiler's own))"
	@echo "libomp: $(or $(OMP_LIB),$(if $(CC_IS_CLANG),none found,the compiler's own (-fopenmp)))"
	@echo "OPENMP=$(OPENMP) (thread back end: $(if $(filter 1,$(OPENMP)),openmp,pthreads))"

clean:
	rm -rf $(BUILD)
