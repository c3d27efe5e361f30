/* Shared by the libFuzzer targets in this folder (one file per target) and
 * by Tests/ccore's regression runner, which compiles each target with
 * LLVMFuzzerTestOneInput renamed (Makefile, test_fuzz_regressions).
 *
 * The core's readers take paths, so every input is written to a file in a
 * private temporary folder first (made once per process, removed at exit).
 * Nothing here prints except on a broken test set-up. */
#ifndef LCA_FUZZ_SUPPORT_H
#define LCA_FUZZ_SUPPORT_H

#include <lca.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_folder[4096];

static void fuzz_remove_folder(void) {
    if (!fuzz_folder[0]) return;
    char command[4200];
    snprintf(command, sizeof command, "rm -rf '%s'", fuzz_folder);
    if (system(command) != 0) {
    }
}

/* folder/name, the folder made on the first call */
static const char *fuzz_path(const char *name) {
    static char path[4200];
    if (!fuzz_folder[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_folder, sizeof fuzz_folder, "%s/lca-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(fuzz_folder)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_remove_folder);
    }
    snprintf(path, sizeof path, "%s/%s", fuzz_folder, name);
    return path;
}

/* Write bytes to folder/name (replacing it) and return the path (a static
 * buffer per name slot: copy it before the next call). */
__attribute__((unused)) static const char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
    const char *path = fuzz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror("fuzz: writing the input file");
        abort();
    }
    return path;
}

/* The fixed small run whose log fuzz_log resumes: digits, 64-10, batch 32,
 * 2 steps taken (so the resume needs 2 complete records), 200 examples of
 * LCA evaluation. make_seeds writes that run's log as the seed. */
typedef struct fuzz_run {
    lca_model *model;
    lca_dataset *data;
    lca_trainer *trainer;
} fuzz_run;

__attribute__((unused)) static int fuzz_run_open(fuzz_run *run, int steps) {
    memset(run, 0, sizeof *run);
    lca_config config = lca_config_default();
    config.iterations = 4;
    config.batch_size = 32;
    config.validation = 200;
    lca_set_threads(1);
    if (lca_model_new(&run->model, "64-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY) != LCA_OK ||
        lca_dataset_open(&run->data, "digits", NULL) != LCA_OK)
        return -1;
    lca_model_initialize(run->model, config.seed);
    if (lca_trainer_new(&run->trainer, run->model, run->data, &config) != LCA_OK) return -1;
    for (int i = 0; i < steps; i++) {
        lca_record record;
        if (lca_trainer_step(run->trainer, &record) != LCA_OK) return -1;
    }
    return 0;
}

__attribute__((unused)) static void fuzz_run_close(fuzz_run *run) {
    lca_trainer_free(run->trainer);
    lca_dataset_free(run->data);
    lca_model_free(run->model);
}

/* Opens a data set as lca train would and, if it loads, reads its shape and
 * converts its last example (the reader's indexing at the far end of the
 * file); the IDX and CIFAR targets share it. */
static inline void fuzz_use_dataset(const char *source, const char *labels) {
    lca_dataset *set = NULL;
    if (lca_dataset_open(&set, source, labels) != LCA_OK) return;
    size_t count = lca_dataset_count(set), features = lca_dataset_features(set);
    size_t c, h, w;
    lca_dataset_shape(set, &c, &h, &w);
    if (count && features <= 1 << 16) {
        uint32_t last = (uint32_t)(count - 1);
        float *x = malloc(features * sizeof *x);
        int32_t label;
        if (x) lca_dataset_gather(set, &last, 1, x, &label, NULL);
        free(x);
    }
    lca_dataset_free(set);
}

#endif
