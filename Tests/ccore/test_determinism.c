/*
 * test_determinism: the same run (digits, "64-32-10", 20 iterations,
 * seed 7, default settings but a threshold that makes some iterations
 * refine, validation view on) with 1, 2 and 3 threads must write
 * byte-identical logs (lca_log_*) and checkpoints (lca_checkpoint_save):
 * fixed reduction order and fixed chunking make the bytes independent of
 * the thread count (style.md, lca.h), with either thread back end
 * (OpenMP or pthreads, docs/threads.md).
 *
 * And the evaluation chunk (the memory a worker holds) does not change a
 * byte either: the sum goes by fixed accumulation units, exactly
 * (integrator.c). An MLP, a LeNet-like conv net and a batch-norm conv net,
 * each with per-unit views and the validation view, write the same log at
 * chunks below, at and above the unit and of odd sizes, at 1 and 2 threads.
 */
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ITERATIONS 20
#define SEED 7
/* Below the default 0.001 so that some iterations refine and the refinement
 * path is covered too. */
#define REFINING_THRESHOLD 1e-5

static const int thread_counts[] = {1, 2, 3};
enum { RUNS = sizeof thread_counts / sizeof thread_counts[0] };

static void train(int threads, const char *log_path, const char *checkpoint_path,
                  const lca_dataset *data) {
    lca_set_threads(threads);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "64-32-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, SEED);
    lca_config config = lca_config_default();
    config.seed = SEED;
    config.iterations = ITERATIONS;
    config.lca_threshold = REFINING_THRESHOLD;
    config.lca_validation_view = 1;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    lca_log *log;
    REQUIRE_OK(lca_log_open(&log, log_path, trainer));
    lca_record record;
    int refined = 0;
    for (int t = 0; t < ITERATIONS; t++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        REQUIRE_OK(lca_log_write(log, &record));
        if (record.train.subintervals > 2) refined++;
    }
    REQUIRE_OK(lca_log_close(log));
    REQUIRE_OK(lca_checkpoint_save(checkpoint_path, model, lca_trainer_iteration(trainer)));
    printf("     %d thread(s) (lca_threads() = %d): final loss %.9f, lca %+.6e, %d of %d records "
           "refined, record %zu bytes\n", threads, lca_threads(), record.train.loss_after,
           record.train.lca_total, refined, ITERATIONS, lca_log_record_size(trainer));
    lca_trainer_free(trainer);
    lca_model_free(model);
}

static unsigned char *read_all(const char *path, size_t *length) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        test_fail("cannot open %s", path);
        *length = 0;
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = test_alloc((size_t)size);
    *length = fread(bytes, 1, (size_t)size, f);
    fclose(f);
    return bytes;
}

static void compare_files(const char *what, const char *a_path, const char *b_path,
                          int a_threads, int b_threads) {
    size_t a_length, b_length;
    unsigned char *a = read_all(a_path, &a_length), *b = read_all(b_path, &b_length);
    if (!a || !b) { free(a); free(b); return; }
    size_t common = a_length < b_length ? a_length : b_length;
    size_t first = common;
    for (size_t i = 0; i < common; i++) {
        if (a[i] != b[i]) { first = i; break; }
    }
    char label[160];
    snprintf(label, sizeof label, "%s identical, %d vs %d thread(s)", what, a_threads, b_threads);
    if (first == common && a_length == b_length)
        check_true(a_length > 0, label, "%zu bytes", a_length);
    else if (first < common)
        check_true(0, label, "first difference at byte %zu of %zu: 0x%02x vs 0x%02x", first,
                   a_length, a[first], b[first]);
    else
        check_true(0, label, "lengths differ: %zu vs %zu bytes (equal up to the shorter)",
                   a_length, b_length);
    free(a);
    free(b);
}

/* 6 iterations of spec at the given chunk, bn_group and threads, to log_path. */
static void train_chunked(const char *spec, size_t chunk, size_t bn_group, int threads,
                          const char *log_path, const lca_dataset *data) {
    lca_set_threads(threads);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, SEED);
    lca_config config = lca_config_default();
    config.seed = SEED;
    config.iterations = 6;
    config.batch_size = 64;
    config.lca_threshold = REFINING_THRESHOLD;
    config.lca_validation_view = 1;
    config.lca_units = 1;
    config.eval_chunk = chunk;
    config.bn_group = bn_group;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    lca_log *log;
    REQUIRE_OK(lca_log_open(&log, log_path, trainer));
    lca_record record;
    for (int t = 0; t < 6; t++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        REQUIRE_OK(lca_log_write(log, &record));
    }
    REQUIRE_OK(lca_log_close(log));
    printf("     %-52s chunk %5zu (resolved %4zu, unit %3zu), %d thread(s): lca %+.9e\n", spec,
           chunk, lca_trainer_config(trainer)->eval_chunk, lca_trainer_accumulation_unit(trainer),
           threads, record.train.lca_total);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

static void test_chunks(const char *directory, const lca_dataset *data) {
    static const struct {
        const char *spec;
        size_t bn_group;
        size_t chunks[5];
    } nets[] = {
        {"64-32-10", 250, {0, 1, 300, 512, 5000}},
        {"input(1,8,8) conv(6,3) relu maxpool(2) dense(10)", 250, {0, 1, 7, 300, 5000}},
        {"input(1,8,8) conv(6,3) bn relu maxpool(2) dense(10)", 50, {0, 1, 50, 120, 5000}},
    };
    for (size_t n = 0; n < sizeof nets / sizeof nets[0]; n++) {
        char reference[600], other[600];
        snprintf(reference, sizeof reference, "%s/chunks%zu-reference.lcalog", directory, n);
        train_chunked(nets[n].spec, nets[n].chunks[0], nets[n].bn_group, 1, reference, data);
        for (int c = 0; c < 5; c++)
            for (int threads = 1; threads <= 2; threads++) {
                if (c == 0 && threads == 1) continue;
                snprintf(other, sizeof other, "%s/chunks%zu-%d-%d.lcalog", directory, n, c, threads);
                train_chunked(nets[n].spec, nets[n].chunks[c], nets[n].bn_group, threads, other,
                              data);
                char what[200];
                snprintf(what, sizeof what, "%.40s: log at chunk %zu vs chunk %zu,", nets[n].spec,
                         nets[n].chunks[c], nets[n].chunks[0]);
                compare_files(what, reference, other, 1, threads);
                remove(other);
            }
        remove(reference);
    }
}

int main(void) {
    test_begin("test_determinism");
    printf("     thread back end: %s\n", lca_thread_backend());
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));

    const char *tmp = getenv("TMPDIR");
    char directory[512];
    snprintf(directory, sizeof directory, "%s/lca_determinism_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(directory)) {
        test_fail("cannot create a temporary directory from %s", directory);
        return test_finish();
    }
    char logs[RUNS][600], checkpoints[RUNS][600];
    for (int r = 0; r < RUNS; r++) {
        snprintf(logs[r], sizeof logs[r], "%s/run%d.lcalog", directory, thread_counts[r]);
        snprintf(checkpoints[r], sizeof checkpoints[r], "%s/run%d.safetensors", directory,
                 thread_counts[r]);
        train(thread_counts[r], logs[r], checkpoints[r], data);
    }
    test_chunks(directory, data);
    lca_set_threads(0);
    for (int r = 1; r < RUNS; r++) {
        compare_files("log", logs[0], logs[r], thread_counts[0], thread_counts[r]);
        compare_files("checkpoint", checkpoints[0], checkpoints[r], thread_counts[0],
                      thread_counts[r]);
    }
    for (int r = 0; r < RUNS; r++) {
        remove(logs[r]);
        remove(checkpoints[r]);
    }
    rmdir(directory);
    lca_dataset_free(data);
    return test_finish();
}
