# Standalone build of the C core and its tests, for sanitizers, valgrind
# and fuzzers. SwiftPM builds the same sources for the Swift targets.
#
#   make test                 build and run the C tests (OpenMP when found;
#                             TEST_JOBS=2: two at a time, also for fuzz)
#   make test OPENMP=0        the same with the pthreads back end (what SwiftPM builds)
#   make asan                 tests under AddressSanitizer + UBSan
#   make valgrind             tests under valgrind memcheck
#   make leaks                make asan with LeakSanitizer on too (ASan's detect_leaks=1)
#   make fuzz                 libFuzzer targets (Tests/fuzz), each for FUZZ_SECONDS
#   make fuzz-seeds           rewrite the seed corpora Tests/fuzz/corpus/ with the core
#   make openmp-info          where OpenMP was looked for and what was found
#   make test MPI=1           the core with MPI (LCA_MPI, mpicc's flags), in build/mpi;
#                             tools/mpi-test runs its test_ranks under mpirun
CC ?= clang
ifeq ($(origin CC),default)
CC = clang
endif
ifeq ($(MPI),1)
BUILD ?= build/mpi
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
# MPI=1 (docs/mpi.md): Open MPI's compile and link flags as mpicc gives them
ifeq ($(MPI),1)
override CFLAGS += -DLCA_MPI $(shell mpicc --showme:compile)
LDLIBS += $(shell mpicc --showme:link)
endif
ifeq ($(OPENMP),1)
OMP_CFLAGS = $(OMP_CFLAGS_FOUND)
LDLIBS += $(OMP_LDLIBS_FOUND)
endif

CORE_SOURCES := $(wildcard CCore/*.c)
CORE_OBJECTS := $(patsubst CCore/%.c,$(BUILD)/core/%.o,$(CORE_SOURCES))
TEST_SOURCES := $(wildcard Tests/ccore/test_*.c)
TEST_BINARIES := $(patsubst Tests/ccore/%.c,$(BUILD)/%,$(TEST_SOURCES)) $(BUILD)/test_header_example
# the fuzz targets' seed corpora and regression inputs, without libFuzzer
TEST_BINARIES += $(BUILD)/test_fuzz_regressions
TEST_SUPPORT := $(wildcard Tests/ccore/support*.c)

.PHONY: all test asan valgrind valgrind-run leaks fuzz fuzz-build fuzz-seeds clean openmp-info ldlibs
all: $(BUILD)/liblca.a $(TEST_BINARIES)

$(BUILD)/core/%.o: CCore/%.c $(wildcard CCore/*.h) CCore/include/lca.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(OMP_CFLAGS) -c $< -o $@

$(BUILD)/liblca.a: $(CORE_OBJECTS)
	ar rcs $@ $^

# tests include the core's internal headers too (model.h, integrator.h)
$(BUILD)/tests/%.o: Tests/ccore/%.c $(wildcard Tests/ccore/*.h) $(wildcard CCore/*.h) CCore/include/lca.h
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

# Fuzz targets (Tests/fuzz/fuzz_*.c, one per reader). In every test build
# they run without libFuzzer on their seed corpus and regression files:
# each compiled with its entry point renamed, driven by regressions.c.
FUZZ_TARGETS := idx cifar safetensors log spec
FUZZ_REGRESSION_OBJECTS := $(patsubst %,$(BUILD)/fuzz-regress/fuzz_%.o,$(FUZZ_TARGETS))

$(BUILD)/fuzz-regress/fuzz_%.o: Tests/fuzz/fuzz_%.c Tests/fuzz/fuzz_support.h CCore/include/lca.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DLLVMFuzzerTestOneInput=fuzz_$* -c $< -o $@

$(BUILD)/fuzz-regress/regressions.o: Tests/fuzz/regressions.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DLCA_FUZZ_DIR='"$(abspath Tests/fuzz)"' -c $< -o $@

$(BUILD)/test_fuzz_regressions: $(BUILD)/fuzz-regress/regressions.o $(FUZZ_REGRESSION_OBJECTS) $(BUILD)/liblca.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

# One training run to a log and a checkpoint, for tools/compare-backends.
$(BUILD)/backend_log: tools/threads/backend_log.c $(BUILD)/liblca.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/liblca.a $(LDLIBS) -o $@

# Runs every C test; each prints its worst differences and exits non-zero
# on failure. The last line is "N passed, N failed". The tests read data
# only from the repository: Tests/data, through LCA_TEST_DATA.
# TEST_JOBS tests at a time (tools/test: one per core; most tests are
# single-threaded), each one's output printed in one piece when it ends
# (tools/run-ctests). The slowest start first, so that none is left
# running alone at the end.
TEST_JOBS ?= 1
SLOW_TESTS := $(patsubst %,$(BUILD)/test_%,example_groups layers gemm batchnorm_budget determinism recompute)
TEST_ORDER := $(filter $(TEST_BINARIES),$(SLOW_TESTS)) $(filter-out $(SLOW_TESTS),$(TEST_BINARIES))
test: $(TEST_BINARIES)
	@tools/run-ctests $(TEST_JOBS) $(BUILD) $(abspath Tests/data) $(TEST_ORDER)

# -fno-sanitize-recover=all: a UBSan finding stops the test (a failure),
# not a line in the output. No suppressions.
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all
# LCA_TEST_SMALL=1 (support.h's test_size): test_example_groups takes 3
# steps, not 6 (it was 293 of 435 s under ASan); the same refinement levels
# and flags are reached, so no code path is dropped.
# the tests of the sanitizer build, shared by asan and leaks
SANITIZED_TEST = LCA_TEST_SMALL=1 $(MAKE) test BUILD=build/asan CFLAGS="-O1 -g $(SANITIZE) -fno-omit-frame-pointer" LDFLAGS="$(SANITIZE)" CC=$(CC)
asan:
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 $(SANITIZED_TEST)

# The same build under LeakSanitizer: any leak fails the test. The one
# suppression (libomp's thread pool) is in Tests/lsan.supp with its reason;
# it names only leaks, so this run finds all that `make asan` finds as well
# (tools/test runs only this one).
leaks:
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(abspath Tests/lsan.supp):print_suppressions=0 $(SANITIZED_TEST)

# libFuzzer (clang's -fsanitize=fuzzer; the Swift toolchain's clang ships
# its runtime) with ASan and UBSan, pthreads back end. Each target runs
# FUZZ_SECONDS on its seed corpus (Tests/fuzz/corpus/<target>, read only);
# new inputs go to build/fuzz/corpus/<target>, a crash to
# build/fuzz/crashes/ (copy it to Tests/fuzz/regressions/<target>/).
FUZZ_SECONDS ?= 12
FUZZ_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
# Per-target options. Readers: libFuzzer's default malloc limit (= its RSS
# limit, 2 GB) stays, so a small file that makes a reader allocate 2 GB is
# a finding. The spec parser: a spec may name a model of any size (that
# the core refuses one that cannot fit is tested in Tests/ccore, not here),
# so allocations the machine cannot give return NULL (allocator_may_return_null)
# and must be reported as errors, not crash; the malloc limit is lifted.
FUZZ_ASAN_spec := :allocator_may_return_null=1
FUZZ_ARGS_spec := -malloc_limit_mb=1000000000
fuzz-build:
	$(MAKE) $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_TARGETS)) BUILD=build/fuzz OPENMP=0 CC=$(CC) \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link"

$(BUILD)/fuzz_%: Tests/fuzz/fuzz_%.c Tests/fuzz/fuzz_support.h $(BUILD)/liblca.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $< $(BUILD)/liblca.a $(LDLIBS) -o $@

# TEST_JOBS targets at a time (each libFuzzer run is one process on one
# core, so each still gets its FUZZ_SECONDS of a core), each target's
# output kept together (--output-sync), every target run (-k).
fuzz: fuzz-build
	@$(MAKE) -s --no-print-directory -k --output-sync=target -j$(TEST_JOBS) $(patsubst %,fuzz-run-%,$(FUZZ_TARGETS)) && \
	  echo "fuzz: $(words $(FUZZ_TARGETS)) targets, no finding"

fuzz-run-%:
	@mkdir -p build/fuzz/corpus/$* build/fuzz/crashes; \
	  echo "== fuzz_$* for $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1$(FUZZ_ASAN_$*) build/fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_ARGS_$*) \
	    -rss_limit_mb=2048 -timeout=10 -artifact_prefix=build/fuzz/crashes/fuzz_$*- \
	    build/fuzz/corpus/$* Tests/fuzz/corpus/fuzz_$* 2>build/fuzz/fuzz_$*.out; rc=$$?; \
	  grep -E '^stat::number_of_executed_units|^Done|ERROR|SUMMARY' build/fuzz/fuzz_$*.out; \
	  if [ $$rc -ne 0 ]; then tail -40 build/fuzz/fuzz_$*.out; echo "FAILED: fuzz_$* (see build/fuzz/fuzz_$*.out, build/fuzz/crashes/)"; exit 1; fi

$(BUILD)/make_seeds: Tests/fuzz/make_seeds.c Tests/fuzz/fuzz_support.h $(BUILD)/liblca.a
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/liblca.a $(LDLIBS) -o $@

fuzz-seeds: $(BUILD)/make_seeds
	rm -rf Tests/fuzz/corpus && $(BUILD)/make_seeds Tests/fuzz/corpus

# valgrind cannot read clang's default DWARF 5 ("Possibly corrupted
# debuginfo file"): its own build with DWARF 4. Slow (tens of minutes), so
# not part of tools/test, whose leak check is `make leaks`.
valgrind:
	$(MAKE) valgrind-run BUILD=build/valgrind CFLAGS="-O2 -gdwarf-4" CC=$(CC)

valgrind-run: $(TEST_BINARIES)
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
