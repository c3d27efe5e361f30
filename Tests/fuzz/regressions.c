/* Runs every fuzz target (compiled with LLVMFuzzerTestOneInput renamed,
 * see the Makefile) on each file of Tests/fuzz/corpus/<target>/ and
 * Tests/fuzz/regressions/<target>/, without libFuzzer: a plain test of
 * `make test`, `make asan` and `make valgrind`. A crash found once by a
 * fuzzer becomes a file in regressions/<target>/ and runs here forever. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fuzz_idx(const uint8_t *, size_t);
int fuzz_cifar(const uint8_t *, size_t);
int fuzz_safetensors(const uint8_t *, size_t);
int fuzz_log(const uint8_t *, size_t);
int fuzz_spec(const uint8_t *, size_t);

static const struct {
    const char *name;
    int (*run)(const uint8_t *, size_t);
} targets[] = {
    {"fuzz_idx", fuzz_idx},   {"fuzz_cifar", fuzz_cifar}, {"fuzz_safetensors", fuzz_safetensors},
    {"fuzz_log", fuzz_log},   {"fuzz_spec", fuzz_spec},
};

static int compare(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* runs target on every regular file of folder; returns files run, -1 on error */
static long run_folder(const char *folder, int (*run)(const uint8_t *, size_t)) {
    DIR *dir = opendir(folder);
    if (!dir) return 0;
    char *names[4096];
    size_t n = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) && n < 4096)
        if (entry->d_name[0] != '.') names[n++] = strdup(entry->d_name);
    closedir(dir);
    qsort(names, n, sizeof *names, compare);
    long done = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", folder, names[i]);
        free(names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "%s: cannot open\n", path);
            done = -1;
            continue;
        }
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        rewind(f);
        uint8_t *bytes = malloc(size > 0 ? (size_t)size : 1);
        if (!bytes || fread(bytes, 1, (size_t)size, f) != (size_t)size) {
            fprintf(stderr, "%s: cannot read\n", path);
            done = -1;
        } else {
            run(bytes, (size_t)size);
            if (done >= 0) done++;
        }
        free(bytes);
        fclose(f);
    }
    return done;
}

int main(void) {
    int failed = 0;
    for (size_t t = 0; t < sizeof targets / sizeof *targets; t++) {
        long counts[2];
        const char *kinds[2] = {"corpus", "regressions"};
        for (int k = 0; k < 2; k++) {
            char folder[4096];
            snprintf(folder, sizeof folder, "%s/%s/%s", LCA_FUZZ_DIR, kinds[k], targets[t].name);
            counts[k] = run_folder(folder, targets[t].run);
            if (counts[k] < 0) failed = 1;
        }
        printf("%-17s %ld corpus files, %ld regression files: no crash\n", targets[t].name,
               counts[0], counts[1]);
        if (counts[0] == 0) {
            printf("  FAILED: no seed corpus in %s/corpus/%s\n", LCA_FUZZ_DIR, targets[t].name);
            failed = 1;
        }
    }
    return failed;
}
