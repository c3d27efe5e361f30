/*
 * test_first_layer: an MLP's first layer along an LCA step (integrator.c,
 * "The first layer along the step"). Its pre-activations are linear in its
 * parameters, so at an interior point s of the step the pass interpolates
 * them from the two ends instead of computing the product; a view keeps the
 * ends' values when the memory budget holds them, else recomputes them at
 * every interior point. Net "64-32-16-10" on the embedded digits (1,797
 * examples: three whole accumulation units and a partial one), four steps
 * of plain gradient descent, threshold 0 and cap 8 (interior points
 * s = 1/8 … 7/8, every step refined to the cap).
 *
 * Checks:
 *   - the default budget keeps the values (the view holds them), a budget of
 *     one block of rows does not;
 *   - kept and recomputed give bitwise the same records (losses, totals,
 *     residuals, per-tensor LCA) and per-parameter LCA totals, at chunks of
 *     128 and 512 examples and at 1 and 2 threads: over four steps, so the
 *     start values come from the step before;
 *   - the value: each step's per-parameter LCA against the same Simpson sum
 *     of gradients evaluated directly at each probe point (lca_view_evaluate
 *     at the probe θ_t + s·Δθ rounded to float32, as the integrator forms
 *     it): |difference| ≤ 1e-6 · max |LCA| (the interpolation and the
 *     product round differently; printed worst);
 *   - the ends are evaluated as before: the records' losses before and after
 *     are lca_view_evaluate's, bitwise.
 */
#include "support.h"

#include "integrator.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 4
#define CAP 8
#define LEARNING_RATE 0.5f

typedef struct run_result {
    lca_view_record records[STEPS];
    double tensor_lca[STEPS][8];
    double *totals;          /* K: per-parameter LCA summed over the steps */
    double *step_lca[STEPS]; /* K each: per-parameter LCA of each step */
    bool kept;
} run_result;

static lca_config config_for(size_t chunk, size_t budget) {
    lca_config config = lca_config_default();
    config.lca_threshold = 0.0;
    config.lca_max_subintervals = CAP;
    config.eval_chunk = chunk;
    if (budget) config.memory_budget = budget;
    return config;
}

/* The LCA of the steps thetas[0] → thetas[1] → …, in one integrator and
 * view (the start of each step from the end of the one before). */
static void run_steps(lca_model *model, const lca_dataset *data, const uint32_t *indices,
                      size_t count, float *const *thetas, const lca_config *config,
                      run_result *out) {
    size_t K = lca_model_parameter_count(model), T = lca_model_tensor_count(model);
    lca_integrator g;
    REQUIRE_OK(lca_integrator_init(&g, model, config, false));
    lca_view v;
    REQUIRE_OK(lca_view_init(&v, &g, data, indices, count));
    out->kept = v.first_start != NULL && v.first_end != NULL;
    out->totals = test_alloc(K * sizeof(double));
    memset(out->totals, 0, K * sizeof(double));
    for (int s = 0; s < STEPS; s++) {
        out->step_lca[s] = test_alloc(K * sizeof(double));
        memset(out->step_lca[s], 0, K * sizeof(double));
        lca_view_record record;
        REQUIRE_OK(lca_view_step(&g, &v, thetas[s], thetas[s + 1], &record, out->step_lca[s],
                                 NULL));
        for (size_t i = 0; i < K; i++) out->totals[i] += out->step_lca[s][i];
        out->records[s] = record;
        for (size_t t = 0; t < T && t < 8; t++) out->tensor_lca[s][t] = record.tensor_lca[t];
    }
    lca_view_release(&v);
    lca_integrator_release(&g);
}

static void free_result(run_result *r) {
    free(r->totals);
    for (int s = 0; s < STEPS; s++) free(r->step_lca[s]);
}

static bool same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

static void check_same(const char *what, const run_result *a, const run_result *b, size_t K,
                       size_t T) {
    bool records = true;
    for (int s = 0; s < STEPS; s++) {
        const lca_view_record *x = &a->records[s], *y = &b->records[s];
        records = records && same_bits(&x->loss_before, &y->loss_before, sizeof(double)) &&
                  same_bits(&x->loss_after, &y->loss_after, sizeof(double)) &&
                  same_bits(&x->lca_total, &y->lca_total, sizeof(double)) &&
                  same_bits(&x->residual, &y->residual, sizeof(double)) &&
                  x->subintervals == y->subintervals &&
                  same_bits(a->tensor_lca[s], b->tensor_lca[s], T * sizeof(double));
    }
    check_true(records, what, "records bitwise equal: %d", records);
    char totals[160];
    snprintf(totals, sizeof totals, "%s: per-parameter LCA totals", what);
    check_true(same_bits(a->totals, b->totals, K * sizeof(double)), totals,
               "max |difference| %.3g", test_max_abs_diff(a->totals, b->totals, K));
}

int main(void) {
    test_begin("test_first_layer");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    size_t N = lca_dataset_count(data);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "64-32-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 5);
    size_t K = lca_model_parameter_count(model), T = lca_model_tensor_count(model);
    uint32_t *indices = test_alloc(N * sizeof(uint32_t));
    for (size_t i = 0; i < N; i++) indices[i] = (uint32_t)i;

    /* the trajectory: gradient steps on the whole set (the direct
     * evaluation of an integrator of its own) */
    lca_config plain = config_for(0, 0);
    lca_integrator direct;
    REQUIRE_OK(lca_integrator_init(&direct, model, &plain, false));
    lca_view all;
    REQUIRE_OK(lca_view_init(&all, &direct, data, indices, N));
    float *thetas[STEPS + 1];
    double *gradient = test_alloc(K * sizeof(double));
    for (int s = 0; s <= STEPS; s++) {
        thetas[s] = test_alloc(K * sizeof(float));
        if (s == 0) {
            memcpy(thetas[0], lca_model_parameters_const(model), K * sizeof(float));
            continue;
        }
        double loss;
        REQUIRE_OK(lca_view_evaluate(&direct, &all, thetas[s - 1], &loss, gradient, false));
        for (size_t i = 0; i < K; i++)
            thetas[s][i] = thetas[s - 1][i] - LEARNING_RATE * (float)gradient[i];
    }

    /* kept and recomputed, two chunks, two thread counts */
    /* a budget of one block of rows: one worker, no room for the values */
    size_t one_block = lca_model_chunk_bytes(model, 128);
    run_result kept, recomputed, kept_128, recomputed_1;
    lca_set_threads(2);
    lca_config c = config_for(0, 0);
    run_steps(model, data, indices, N, thetas, &c, &kept);
    c = config_for(0, one_block);
    run_steps(model, data, indices, N, thetas, &c, &recomputed);
    c = config_for(128, 0);
    run_steps(model, data, indices, N, thetas, &c, &kept_128);
    lca_set_threads(1);
    c = config_for(0, one_block);
    run_steps(model, data, indices, N, thetas, &c, &recomputed_1);
    lca_set_threads(2);
    check_true(kept.kept && kept_128.kept, "the default budget keeps the first layer's values",
               "kept: %d, at chunk 128: %d", kept.kept, kept_128.kept);
    check_true(!recomputed.kept && !recomputed_1.kept, "a budget of one block recomputes them",
               "budget %zu bytes; kept: %d, at 1 thread: %d", one_block, recomputed.kept,
               recomputed_1.kept);
    check_same("kept vs recomputed", &kept, &recomputed, K, T);
    check_same("chunk 512 vs 128", &kept, &kept_128, K, T);
    check_same("2 threads vs 1", &kept, &recomputed_1, K, T);

    /* the value, step by step, against gradients evaluated directly */
    float *probe = test_alloc(K * sizeof(float));
    double *simpson = test_alloc(K * sizeof(double));
    double worst = 0.0, largest = 0.0;
    bool ends = true;
    for (int s = 0; s < STEPS; s++) {
        const float *before = thetas[s], *after = thetas[s + 1];
        memset(simpson, 0, K * sizeof(double));
        for (int j = 0; j <= CAP; j++) {
            double at = (double)j / CAP, loss, weight = j == 0 || j == CAP ? 1.0 : j % 2 ? 4.0 : 2.0;
            for (size_t i = 0; i < K; i++)
                probe[i] = (float)((double)before[i] + at * ((double)after[i] - (double)before[i]));
            REQUIRE_OK(lca_view_evaluate(&direct, &all, probe, &loss, gradient, false));
            if (j == 0) ends = ends && same_bits(&loss, &kept.records[s].loss_before, sizeof loss);
            if (j == CAP) ends = ends && same_bits(&loss, &kept.records[s].loss_after, sizeof loss);
            for (size_t i = 0; i < K; i++) simpson[i] += weight * gradient[i];
        }
        for (size_t i = 0; i < K; i++) {
            double reference = ((double)after[i] - (double)before[i]) * simpson[i] / (3.0 * CAP);
            double difference = fabs(kept.step_lca[s][i] - reference);
            if (difference > worst) worst = difference;
            if (fabs(reference) > largest) largest = fabs(reference);
        }
    }
    printf("per-parameter LCA, interpolated first layer vs direct: worst %.3g, max |LCA| %.3g\n",
           worst, largest);
    check_true(largest > 1e-6, "the steps allocate something", "max |LCA| %.3g", largest);
    check_le("interpolated vs direct per-parameter LCA", worst, 1e-6 * largest);
    check_true(ends, "the ends' losses are lca_view_evaluate's", "bitwise equal: %d", ends);

    free_result(&kept);
    free_result(&recomputed);
    free_result(&kept_128);
    free_result(&recomputed_1);
    for (int s = 0; s <= STEPS; s++) free(thetas[s]);
    free(gradient);
    free(probe);
    free(simpson);
    free(indices);
    lca_view_release(&all);
    lca_integrator_release(&direct);
    lca_model_free(model);
    lca_dataset_free(data);
    return test_finish();
}
