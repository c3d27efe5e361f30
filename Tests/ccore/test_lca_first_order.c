/*
 * test_lca_first_order: plain full-batch gradient descent (SGD, no momentum,
 * no weight decay, batch = the whole training split = the evaluation set).
 * Then Δθ = −lr·g with g = ∇L(θ_t) on the evaluation set, and the
 * first-order LCA of every parameter is Δθ_i·g_i = −lr·g_i² ≤ 0
 * (docs/method.md §7). Checked on the embedded digits with "64-16-10":
 *   - every tensor's first-order LCA ≤ 0 (no tolerance);
 *   - first_order_total vs −lr·‖g‖², g from lca_model_loss_and_gradient on
 *     the whole set at θ_t (a separate model object): ≤ 1e-4 relative;
 *   - per parameter: the step is −lr·g (|Δθ_i + lr·g_i| ≤ 1e-4·lr·max|g|,
 *     the batch and evaluation gradients differ only in summation order),
 *     Δθ_i·g_i ≤ 1e-8·lr·max|g|² (rounding only), and per-tensor sums of
 *     Δθ_i·g_i vs tensor_first_order ≤ 1e-4 · Σ|Δθ_i·g_i|;
 *   - loss_before vs the float64 reference ≤ 1e-5 relative.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITERATIONS 8
#define LEARNING_RATE 0.5

int main(void) {
    test_begin("test_lca_first_order");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    size_t N = lca_dataset_count(data);
    lca_model *model, *probe;
    REQUIRE_OK(lca_model_new(&model, "64-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    REQUIRE_OK(lca_model_new(&probe, "64-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    REQUIRE_OK(lca_model_reserve(probe, N));
    lca_model_initialize(model, 21);
    ref_mlp ref;
    if (!ref_mlp_from_model(&ref, model)) return test_finish();
    size_t K = ref.parameter_count, T = lca_model_tensor_count(model);

    lca_config config = lca_config_default();
    config.seed = 21;
    config.optimizer = LCA_OPTIMIZER_SGD;
    config.learning_rate = LEARNING_RATE;
    config.momentum = 0;
    config.weight_decay = 0;
    config.batch_size = N;
    config.iterations = ITERATIONS;
    config.validation = 0;
    config.lca_subset = 0;
    config.lca_validation_view = 0;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    check_true(lca_trainer_training_count(trainer) == N && lca_trainer_evaluation_count(trainer) == N,
               "batch = training split = evaluation set", "training %zu, evaluation %zu, data %zu",
               lca_trainer_training_count(trainer), lca_trainer_evaluation_count(trainer), N);

    float *x;
    int32_t *labels;
    test_gather_all(data, 0, &x, &labels, NULL);
    float *before = test_alloc(sizeof(float) * K);
    float *g = test_alloc(sizeof(float) * K);
    double *theta = test_alloc(sizeof(double) * K);
    double *tensor_mine = test_alloc(sizeof(double) * T);
    double *tensor_abs = test_alloc(sizeof(double) * T);

    double worst_tensor_positive = -INFINITY, worst_total = 0, worst_step = 0;
    double worst_product = -INFINITY, worst_tensor = 0, worst_loss = 0;
    size_t positive_products = 0;
    for (int t = 0; t < ITERATIONS; t++) {
        memcpy(before, lca_model_parameters(model), sizeof(float) * K);
        double loss_probe;
        REQUIRE_OK(lca_model_loss_and_gradient(probe, before, x, labels, NULL, N, &loss_probe, g));
        test_to_double(theta, before, K);
        double loss_ref = ref_mlp_loss(&ref, theta, x, labels, NULL, N, NULL, NULL, NULL);

        lca_record record;
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        const float *after = lca_model_parameters(model);
        const lca_view_record *v = &record.train;

        double g_norm2 = 0, g_max = 0;
        for (size_t i = 0; i < K; i++) {
            g_norm2 += (double)g[i] * g[i];
            g_max = fmax(g_max, fabs(g[i]));
        }
        double expected_total = -LEARNING_RATE * g_norm2;
        double total_rel = fabs(v->first_order_total - expected_total) / fabs(expected_total);
        worst_total = fmax(worst_total, total_rel);

        double step_error = 0, product_worst = -INFINITY;
        for (size_t k = 0; k < T; k++) {
            lca_tensor_info info;
            REQUIRE_OK(lca_model_tensor(model, k, &info));
            tensor_mine[k] = 0;
            tensor_abs[k] = 0;
            for (size_t i = info.offset; i < info.offset + info.count; i++) {
                double step = (double)after[i] - (double)before[i];
                step_error = fmax(step_error, fabs(step + LEARNING_RATE * g[i]));
                double product = step * g[i];
                if (product > 0) positive_products++;
                product_worst = fmax(product_worst, product);
                tensor_mine[k] += product;
                tensor_abs[k] += fabs(product);
            }
            worst_tensor_positive = fmax(worst_tensor_positive, v->tensor_first_order[k]);
            worst_tensor = fmax(worst_tensor, fabs(v->tensor_first_order[k] - tensor_mine[k]) /
                                                  fmax(tensor_abs[k], 1e-300));
        }
        worst_step = fmax(worst_step, step_error / (LEARNING_RATE * g_max));
        worst_product = fmax(worst_product, product_worst / (LEARNING_RATE * g_max * g_max));
        worst_loss = fmax(worst_loss, fabs(v->loss_before - loss_ref) / loss_ref);
        printf("     iteration %llu: loss %.6f (probe %.6f, float64 %.6f), first order %.6e, "
               "-lr|g|^2 %.6e, lca %.6e, residual %.2e\n",
               (unsigned long long)record.iteration, v->loss_before, loss_probe, loss_ref,
               v->first_order_total, expected_total, v->lca_total, v->residual);
    }
    check_le("largest per-tensor first-order LCA (must be <= 0)", worst_tensor_positive, 0.0);
    check_le("first_order_total vs -lr*|g|^2, relative", worst_total, 1e-4);
    check_le("step vs -lr*g, / (lr*max|g|)", worst_step, 1e-4);
    printf("     %zu positive per-parameter products dtheta_i*g_i over %d iterations\n",
           positive_products, ITERATIONS);
    check_le("largest per-parameter dtheta_i*g_i, / (lr*max|g|^2)", worst_product, 1e-8);
    check_le("per-tensor first order vs sum of dtheta_i*g_i, / sum|dtheta_i*g_i|", worst_tensor,
             1e-4);
    check_le("loss_before vs float64 loss, relative", worst_loss, 1e-5);

    free(x); free(labels); free(before); free(g); free(theta); free(tensor_mine); free(tensor_abs);
    lca_trainer_free(trainer);
    lca_model_free(probe);
    lca_model_free(model);
    lca_dataset_free(data);
    return test_finish();
}
