/*
 * test_evaluator: the evaluation-set pass of the integrator (accumulation
 * units side by side over the threads, each unit's float32 gradient added
 * into exact sums), through the public lca_evaluator, on the embedded
 * digits (1,797 examples) with "64-32-16-10":
 *   - loss and gradient against the float64 reference MLP of support.c
 *     (independent code): relative 2e-5 of the largest |gradient|, 1e-6 on
 *     the loss;
 *   - the same bytes as the units (LCA_ACCUMULATION_UNIT = 512: 3 whole and
 *     one of 261) evaluated one at a time from gathered float inputs
 *     (lca_model_forward_backward, scale 1/E) and added with exact_sum.h:
 *     the evaluator converts the dense first layer's input 128 rows at a
 *     time instead, runs units side by side, and goes through each unit in
 *     passes of the chunk;
 *   - the same bytes at chunks 0 (automatic), 1 (rounded up to 128), 300
 *     (two passes of 256), 512 and 10,000 (the unit) × 1, 2, 3 and 4 threads, and for a
 *     batch-norm conv net (a group of 50 a pass whatever the chunk) at 1
 *     and 3 threads and chunks 50, 100 and 0;
 *   - the batch-norm group is the evaluator's own: a trainer with another
 *     group on the same model, and its step, leave its bytes unchanged;
 *     bn_group 0 is refused;
 *   - a NULL gradient gives the same loss; bad indices are refused;
 *   - a unit that fails ends the pass with its own message, which names its
 *     examples, at 1 and 3 threads (no thread left waiting).
 */
#include "exact_sum.h"
#include "model.h"
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static bool same_bytes(const double *a, const double *b, size_t count) {
    return memcmp(a, b, count * sizeof(double)) == 0;
}

static void run_at(lca_model *model, const lca_dataset *data, const lca_config *config,
                   int threads, const float *parameters, double *loss, double *gradient) {
    lca_set_threads(threads);
    lca_evaluator *e;
    REQUIRE_OK(lca_evaluator_new(&e, model, data, NULL, 0, config));
    REQUIRE_OK(lca_evaluator_run(e, parameters, loss, gradient));
    lca_evaluator_free(e);
}

static void test_mlp(const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "64-32-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 3);
    size_t k = lca_model_parameter_count(model), count = lca_dataset_count(data);
    const float *p = lca_model_parameters_const(model);
    lca_config config = lca_config_default();

    static const size_t chunks[] = {0, 1, 300, 512, 10000};
    enum { CHUNKS = sizeof chunks / sizeof chunks[0], RUNS = CHUNKS * 4 };
    double loss[RUNS];
    double *gradient[RUNS];
    bool same = true;
    for (int c = 0; c < CHUNKS; c++)
        for (int t = 0; t < 4; t++) {
            int r = c * 4 + t;
            config.eval_chunk = chunks[c];
            gradient[r] = test_alloc(k * sizeof(double));
            run_at(model, data, &config, t + 1, p, &loss[r], gradient[r]);
            same = same && loss[r] == loss[0] && same_bytes(gradient[r], gradient[0], k);
        }
    check_true(same, "MLP: loss and gradient bytes at chunks 0, 1, 300, 512, 10000 × 1-4 threads",
               "%s", same ? "identical" : "differ");
    config.eval_chunk = 0;

    /* units one at a time from gathered floats, added exactly */
    float *x;
    int32_t *labels;
    float *targets;
    test_gather_all(data, 0, &x, &labels, &targets);
    REQUIRE_OK(lca_model_reserve(model, LCA_ACCUMULATION_UNIT));
    float *unit_gradient = test_alloc(k * sizeof(float));
    double *sequential = test_alloc(k * sizeof(double));
    lca_exact_vector sum;
    lca_exact_scalar loss_sum;
    lca_exact_scalar_clear(&loss_sum);
    check_true(lca_exact_vector_init(&sum, k), "MLP: an exact sum allocates", "%zu", k);
    size_t in = lca_model_input_size(model);
    for (size_t first = 0; first < count; first += LCA_ACCUMULATION_UNIT) {
        size_t n = count - first < LCA_ACCUMULATION_UNIT ? count - first : LCA_ACCUMULATION_UNIT;
        double unit_loss;
        REQUIRE_OK(lca_model_forward_backward(model, p, x + first * in, labels + first, NULL, n,
                                              LCA_BN_GROUP_DEFAULT, 1.0 / (double)count,
                                              &unit_loss, unit_gradient));
        lca_exact_scalar_add(&loss_sum, unit_loss);
        lca_exact_add(&sum, unit_gradient);
    }
    lca_exact_read(&sum, sequential, false);
    double sequential_loss = lca_exact_scalar_value(&loss_sum) / (double)count;
    bool exact = same_bytes(gradient[0], sequential, k) && loss[0] == sequential_loss;
    check_true(exact, "MLP: same bytes as gathered units one at a time, summed exactly",
               "worst gradient difference %.3g, loss %.17g vs %.17g",
               test_max_abs_diff(gradient[0], sequential, k), loss[0], sequential_loss);
    lca_exact_vector_release(&sum);

    /* independent float64 reference */
    ref_mlp ref;
    if (ref_mlp_from_model(&ref, model)) {
        double *pd = test_alloc(k * sizeof(double)), *g_ref = test_alloc(k * sizeof(double));
        test_to_double(pd, p, k);
        double l_ref = ref_mlp_loss(&ref, pd, x, labels, NULL, count, g_ref, NULL, NULL);
        check_le("MLP: loss vs float64 reference (relative)", fabs(loss[0] - l_ref) / l_ref, 1e-6);
        check_le("MLP: gradient vs float64 reference (relative to max |g|)",
                 test_max_abs_diff(gradient[0], g_ref, k) / test_max_abs(g_ref, k), 2e-5);
        free(pd);
        free(g_ref);
    }

    double loss_only;
    run_at(model, data, &config, 2, p, &loss_only, NULL);
    check_true(loss_only == loss[0], "MLP: NULL gradient gives the same loss", "%.17g vs %.17g",
               loss_only, loss[0]);

    lca_evaluator *e;
    uint32_t bad[2] = {0, (uint32_t)count};
    lca_status status = lca_evaluator_new(&e, model, data, bad, 2, &config);
    check_true(status == LCA_ERR_INVALID_ARGUMENT && strstr(lca_last_error(), "outside"),
               "an index past the data set is refused", "status %d: %s", (int)status,
               lca_last_error());

    for (int r = 0; r < RUNS; r++) free(gradient[r]);
    free(x);
    free(labels);
    free(unit_gradient);
    free(sequential);
    lca_model_free(model);
}

static void test_batchnorm_net(const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "input(1,8,8) conv(6,3) bn relu maxpool(2) dense(10)",
                             LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 5);
    size_t k = lca_model_parameter_count(model);
    lca_config config = lca_config_default();
    config.bn_group = 50;
    config.eval_chunk = 100;
    double loss_1, loss_3;
    double *g_1 = test_alloc(k * sizeof(double)), *g_3 = test_alloc(k * sizeof(double));
    run_at(model, data, &config, 1, lca_model_parameters_const(model), &loss_1, g_1);
    bool same = true;
    static const size_t bn_chunks[] = {50, 100, 0};
    for (int c = 0; c < 3; c++) {
        lca_config at = config;
        at.eval_chunk = bn_chunks[c];
        run_at(model, data, &at, 3, lca_model_parameters_const(model), &loss_3, g_3);
        same = same && loss_1 == loss_3 && same_bytes(g_1, g_3, k);
    }
    check_true(same, "conv+BN net: loss and gradient bytes at chunk 100 × 1 thread and chunks "
                     "50, 100, 0 × 3 threads", "%s", same ? "identical" : "differ");
    check_true(isfinite(loss_1) && test_max_abs(g_1, k) > 0.0, "conv+BN net: a real gradient",
               "loss %g, max |g| %g", loss_1, test_max_abs(g_1, k));

    /* The group size belongs to each pass, not to the model: an evaluator
     * of groups of 50, made before a trainer on the same model with groups
     * of 25 and its LCA step, gives the same bytes after them; groups of 25
     * give another loss. */
    float *p0 = test_alloc(k * sizeof(float));
    memcpy(p0, lca_model_parameters_const(model), k * sizeof(float));
    lca_set_threads(1);
    lca_evaluator *e50;
    REQUIRE_OK(lca_evaluator_new(&e50, model, data, NULL, 0, &config));
    lca_config other = config;
    other.bn_group = 25;
    other.eval_chunk = 0;
    other.lca_subset = 200;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &other));
    lca_record record;
    REQUIRE_OK(lca_trainer_step(trainer, &record));
    double loss_after_trainer, loss_25;
    double *g_after = test_alloc(k * sizeof(double));
    REQUIRE_OK(lca_evaluator_run(e50, p0, &loss_after_trainer, g_after));
    bool unchanged = loss_after_trainer == loss_1 && same_bytes(g_after, g_1, k);
    check_true(unchanged, "conv+BN net: a trainer with bn_group 25 on the model leaves an "
                          "evaluator's bn_group 50 bytes unchanged",
               "loss %.17g vs %.17g", loss_after_trainer, loss_1);
    run_at(model, data, &other, 1, p0, &loss_25, NULL);
    check_true(loss_25 != loss_1, "conv+BN net: groups of 25 give another loss than groups of 50",
               "%.17g vs %.17g", loss_25, loss_1);
    lca_evaluator_free(e50);
    lca_config zero = config;
    zero.bn_group = 0;
    lca_evaluator *e;
    lca_status status = lca_evaluator_new(&e, model, data, NULL, 0, &zero);
    check_true(status == LCA_ERR_INVALID_ARGUMENT, "conv+BN net: bn_group 0 is refused",
               "status %d: %s", (int)status, lca_last_error());
    lca_trainer_free(trainer);
    free(p0);
    free(g_after);
    free(g_1);
    free(g_3);
    lca_model_free(model);
}

/* A unit that fails (a label the model has no output for, example 745: in
 * unit 1, its pass of 640-767 at chunk 100, rounded up to 128 for an MLP)
 * stops the pass with that unit's message, at 1 and at 3 threads, without
 * hanging the threads that ran ahead. */
static void test_failing_chunk(void) {
    enum { COUNT = 1000, FEATURES = 16, CHUNK_SIZE = 100 };
    uint8_t *pixels = test_alloc(COUNT * FEATURES);
    int32_t *labels = test_alloc(COUNT * sizeof(int32_t));
    test_rng rng;
    test_rng_seed(&rng, 11);
    for (size_t i = 0; i < COUNT * FEATURES; i++) pixels[i] = (uint8_t)(test_rng_next(&rng) >> 56);
    for (size_t i = 0; i < COUNT; i++) labels[i] = (int32_t)(i % 4);
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_from_arrays(&data, pixels, labels, COUNT, FEATURES, 4));
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "16-8-4", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 2);
    size_t k = lca_model_parameter_count(model);
    double *gradient = test_alloc(k * sizeof(double));
    lca_config config = lca_config_default();
    config.eval_chunk = CHUNK_SIZE;
    for (int threads = 1; threads <= 3; threads += 2) {
        lca_set_threads(threads);
        lca_evaluator *e;
        REQUIRE_OK(lca_evaluator_new(&e, model, data, NULL, 0, &config));
        /* lca_model_check_data refuses such a data set up front, so the label
         * is broken behind its back to make one chunk of the pass fail */
        data->labels[745] = 12;
        double loss;
        lca_status status = lca_evaluator_run(e, lca_model_parameters_const(model), &loss, gradient);
        char what[96];
        snprintf(what, sizeof what, "a failing unit at %d thread(s) stops the pass with its message",
                 threads);
        check_true(status == LCA_ERR_MISMATCH && strstr(lca_last_error(), "label 12 of example 105") &&
                       strstr(lca_last_error(), "examples 640-767"),
                   what, "status %d: %s", (int)status, lca_last_error());
        lca_evaluator_free(e);
        data->labels[745] = 745 % 4;
    }
    free(gradient);
    free(pixels);
    free(labels);
    lca_model_free(model);
    lca_dataset_free(data);
}

int main(void) {
    test_begin("test_evaluator");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    test_mlp(data);
    test_batchnorm_net(data);
    test_failing_chunk();
    lca_set_threads(0);
    lca_dataset_free(data);
    return test_finish();
}
