/*
 * test_lca_quadratic: least squares on a linear model is quadratic in θ, so
 * along a step the gradient is linear in s and
 *     ∫_0^1 ∇L(θ_t + s·Δθ) ds = ∇L(θ_mid),   θ_mid = (θ_t + θ_{t+1}) / 2
 * exactly. Simpson's rule is exact here, so (docs/method.md §2, §7):
 *   - every iteration's residual is rounding only and no refinement happens
 *     (subintervals == 2, no flag);
 *   - the per-parameter LCA equals Δθ_i · ∇L(θ_mid)_i, which this test
 *     computes in float64 with its own gradient (support.c).
 * Evaluation set = the whole data set (validation 0, lca_subset 0). Runs
 * with SGD, then with momentum, over several minibatches per epoch.
 *
 * Tolerances:
 *   |residual|                 ≤ 1e-6 · max(1, |loss_before|)
 *   per-parameter LCA          ≤ 1e-4 · max_i |LCA_exact,i|      (float32 gradients)
 *   lca_total vs Σ exact       ≤ 1e-4 · Σ_i |LCA_exact,i|
 *   loss_before vs float64     ≤ 1e-5 relative
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FEATURES 6
#define OUTPUTS 3
#define EXAMPLES 45   /* not a multiple of the batch size */
#define ITERATIONS 20

static void run(const lca_dataset *data, const float *x, const float *targets,
                lca_optimizer_kind optimizer, double learning_rate) {
    printf("-- %s, lr %g\n", optimizer == LCA_OPTIMIZER_SGD ? "SGD" : "momentum 0.9",
           learning_rate);
    lca_model *model;
    char spec[32];
    snprintf(spec, sizeof spec, "%d-%d", FEATURES, OUTPUTS);
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_MEAN_SQUARED_ERROR));
    lca_model_initialize(model, 3);
    ref_mlp ref;
    if (!ref_mlp_from_model(&ref, model)) {
        lca_model_free(model);
        return;
    }
    size_t K = ref.parameter_count;

    lca_config config = lca_config_default();
    config.seed = 5;
    config.optimizer = optimizer;
    config.learning_rate = learning_rate;
    config.momentum = 0.9;
    config.batch_size = 8;
    config.iterations = ITERATIONS;
    config.validation = 0;
    config.lca_subset = 0;
    config.lca_validation_view = 0;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    check_true(lca_trainer_evaluation_count(trainer) == EXAMPLES, "evaluation set is every example",
               "%zu of %d", lca_trainer_evaluation_count(trainer), EXAMPLES);

    float *before = test_alloc(sizeof(float) * K);
    double *previous_totals = test_alloc(sizeof(double) * K);
    double *lca_core = test_alloc(sizeof(double) * K);
    double *mid = test_alloc(sizeof(double) * K);
    double *g_mid = test_alloc(sizeof(double) * K);
    double *lca_exact = test_alloc(sizeof(double) * K);

    double worst_residual = 0, worst_lca = 0, worst_total = 0, worst_loss = 0, max_step = 0;
    double first_iteration_lca = NAN;
    uint32_t max_subintervals = 0, flags = 0;
    for (int t = 0; t < ITERATIONS; t++) {
        memcpy(before, lca_model_parameters(model), sizeof(float) * K);
        lca_record record;
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        const float *after = lca_model_parameters(model);
        const double *totals = lca_trainer_lca_totals(trainer);
        /* This iteration's per-parameter LCA: the change of the run totals
         * (after one step the totals themselves). */
        for (size_t i = 0; i < K; i++) {
            lca_core[i] = totals[i] - previous_totals[i];
            previous_totals[i] = totals[i];
        }

        /* Exact: Δθ_i · ∇L(θ_mid)_i in float64. */
        for (size_t i = 0; i < K; i++) {
            mid[i] = 0.5 * ((double)before[i] + (double)after[i]);
            max_step = fmax(max_step, fabs((double)after[i] - (double)before[i]));
        }
        ref_mlp_loss(&ref, mid, x, NULL, targets, EXAMPLES, g_mid, NULL, NULL);
        double exact_total = 0, exact_abs = 0;
        for (size_t i = 0; i < K; i++) {
            lca_exact[i] = ((double)after[i] - (double)before[i]) * g_mid[i];
            exact_total += lca_exact[i];
            exact_abs += fabs(lca_exact[i]);
        }
        double *theta = mid; /* reuse: θ_t in float64 */
        test_to_double(theta, before, K);
        double loss_ref = ref_mlp_loss(&ref, theta, x, NULL, targets, EXAMPLES, NULL, NULL, NULL);

        const lca_view_record *v = &record.train;
        double residual_scaled = fabs(v->residual) / fmax(1, fabs(v->loss_before));
        double lca_scaled = test_max_abs_diff(lca_core, lca_exact, K) / test_max_abs(lca_exact, K);
        double total_scaled = fabs(v->lca_total - exact_total) / exact_abs;
        double loss_scaled = fabs(v->loss_before - loss_ref) / fabs(loss_ref);
        if (t == 0) first_iteration_lca = lca_scaled;
        worst_residual = fmax(worst_residual, residual_scaled);
        worst_lca = fmax(worst_lca, lca_scaled);
        worst_total = fmax(worst_total, total_scaled);
        worst_loss = fmax(worst_loss, loss_scaled);
        if (v->subintervals > max_subintervals) max_subintervals = v->subintervals;
        flags |= v->flags;
        if (t < 3 || t == ITERATIONS - 1)
            printf("     iteration %llu: loss %.6f -> %.6f, lca %.6e (exact %.6e, first order "
                   "%.6e), residual %.2e, n %u\n",
                   (unsigned long long)record.iteration, v->loss_before, v->loss_after,
                   v->lca_total, exact_total, v->first_order_total, v->residual,
                   v->subintervals);
    }
    check_true(max_step > 1e-4, "parameters move", "largest |Δθ| %.3e", max_step);
    check_le("|residual| / max(1, |loss|), worst iteration", worst_residual, 1e-6);
    check_true(max_subintervals == 2 && flags == 0, "no refinement, no flag",
               "largest subintervals %u, flags seen 0x%x", max_subintervals, flags);
    check_le("per-parameter LCA after one iteration vs Δθ·∇L(θ_mid), / max|LCA|",
             first_iteration_lca, 1e-4);
    check_le("per-parameter LCA, every iteration (differences of run totals), / max|LCA|",
             worst_lca, 1e-4);
    check_le("lca_total vs Σ exact LCA, / Σ|LCA|", worst_total, 1e-4);
    check_le("loss_before vs float64 loss, relative", worst_loss, 1e-5);

    free(before); free(previous_totals); free(lca_core); free(mid); free(g_mid); free(lca_exact);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

int main(void) {
    test_begin("test_lca_quadratic");
    test_rng rng;
    test_rng_seed(&rng, 77);
    /* Targets: a random linear map of the inputs plus noise, so the loss
     * neither starts nor ends at zero. */
    float *x = test_alloc(sizeof(float) * EXAMPLES * FEATURES);
    float *targets = test_alloc(sizeof(float) * EXAMPLES * OUTPUTS);
    float map[OUTPUTS][FEATURES];
    test_fill_normal(x, EXAMPLES * FEATURES, &rng, 1.0);
    test_fill_normal(&map[0][0], OUTPUTS * FEATURES, &rng, 0.5);
    for (size_t e = 0; e < EXAMPLES; e++) {
        for (size_t o = 0; o < OUTPUTS; o++) {
            double s = 0.3 * test_rng_normal(&rng);
            for (size_t i = 0; i < FEATURES; i++) s += map[o][i] * x[e * FEATURES + i];
            targets[e * OUTPUTS + o] = (float)s;
        }
    }
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_from_float_arrays(&data, x, targets, EXAMPLES, FEATURES, OUTPUTS));
    /* What the core gathers must be what the test computes with. */
    float *gx, *gt;
    test_gather_all(data, OUTPUTS, &gx, NULL, &gt);
    check_true(memcmp(gx, x, sizeof(float) * EXAMPLES * FEATURES) == 0 &&
                   memcmp(gt, targets, sizeof(float) * EXAMPLES * OUTPUTS) == 0,
               "float data set returns its arrays unchanged", "%d examples compared", EXAMPLES);
    free(gx);
    free(gt);

    run(data, x, targets, LCA_OPTIMIZER_SGD, 0.05);
    run(data, x, targets, LCA_OPTIMIZER_MOMENTUM, 0.02);

    lca_dataset_free(data);
    free(x);
    free(targets);
    return test_finish();
}
