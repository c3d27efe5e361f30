/*
 * test_gradients: the float32 gradient of lca_model_loss_and_gradient
 * against central finite differences (float64) of the reference forward pass
 * in support.c, and the loss value against the same reference.
 *
 * Tolerances:
 *   loss            |L_core − L_ref| ≤ 1e-5 · |L_ref|
 *   gradient        |g_core − g_fd|  ≤ 1e-4 · max(1, max|g_fd|)   (float32 core)
 *   reference       |g_ref  − g_fd|  ≤ 1e-6 · max(1, max|g_fd|)   (checks the test's
 *                   own float64 backprop, which then checks every parameter)
 *   direction       |g_core·v − D_v L| ≤ 1e-4 · max(1, Σ|g_fd,i v_i|)  for a random v
 * Finite differences: step h = 1e-5 in float64. Data are redrawn until no
 * ReLU pre-activation lies within 1e-3 of its kink, so no difference crosses
 * one.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_STEP 1e-5
#define KINK_MARGIN 1e-3

typedef struct gradient_case {
    const char *title;
    const char *spec;
    lca_loss_kind loss;
    size_t examples;
    int float_targets;      /* MSE: 1 = float targets, 0 = one-hot labels */
    double logit_scale;     /* > 0: rescale the last layer so max|logit| equals it */
    size_t sample_per_weight_tensor; /* 0 = every parameter gets a finite difference */
} gradient_case;

static void run_case(const gradient_case *c, uint64_t seed) {
    printf("-- %s: model %s, %s, %zu examples\n", c->title, c->spec,
           c->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY ? "cross-entropy"
           : c->float_targets ? "MSE (float targets)" : "MSE (one-hot labels)",
           c->examples);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, c->spec, c->loss));
    REQUIRE_OK(lca_model_reserve(model, c->examples));
    ref_mlp ref;
    if (!ref_mlp_from_model(&ref, model)) {
        lca_model_free(model);
        return;
    }
    size_t K = ref.parameter_count, N = c->examples;
    size_t I = ref.sizes[0], O = ref.sizes[ref.layers];

    float *params = test_alloc(sizeof(float) * K);
    float *x = test_alloc(sizeof(float) * N * I);
    int32_t *labels = test_alloc(sizeof(int32_t) * N);
    float *targets = test_alloc(sizeof(float) * N * O);
    double *p = test_alloc(sizeof(double) * K);
    const float *use_targets =
        c->loss == LCA_LOSS_MEAN_SQUARED_ERROR && c->float_targets ? targets : NULL;

    test_rng rng;
    test_rng_seed(&rng, seed);
    double min_pre = 0, max_logit = 0;
    int draws = 0;
    for (; draws < 200; draws++) {
        /* He-normal weights and non-zero biases, so bias gradients and
         * ReLU masks are exercised. */
        for (int l = 0; l < ref.layers; l++) {
            size_t in = ref.sizes[l], out = ref.sizes[l + 1];
            test_fill_normal(params + ref.weight_offset[l], out * in, &rng, sqrt(2.0 / in));
            test_fill_normal(params + ref.bias_offset[l], out, &rng, 0.1);
        }
        test_fill_uniform(x, N * I, &rng, 0.0, 1.0);
        test_fill_labels(labels, N, &rng, (int)O);
        test_fill_normal(targets, N * O, &rng, 1.0);
        test_to_double(p, params, K);
        ref_mlp_loss(&ref, p, x, labels, use_targets, N, NULL, &min_pre, &max_logit);
        if (c->logit_scale > 0) {
            /* Scale the last layer so the largest |logit| is logit_scale, then
             * give half the examples the label of their smallest logit so the
             * loss is large and its gradient is not negligible. */
            int last = ref.layers - 1;
            double factor = c->logit_scale / max_logit;
            size_t count = ref.sizes[last + 1] * ref.sizes[last];
            for (size_t i = 0; i < count; i++)
                params[ref.weight_offset[last] + i] *= (float)factor;
            for (size_t i = 0; i < ref.sizes[last + 1]; i++)
                params[ref.bias_offset[last] + i] *= (float)factor;
            test_to_double(p, params, K);
            double *z = test_alloc(sizeof(double) * N * O);
            ref_mlp_outputs(&ref, p, x, N, z);
            for (size_t e = 0; e < N; e += 2) {
                size_t smallest = 0;
                for (size_t o = 1; o < O; o++)
                    if (z[e * O + o] < z[e * O + smallest]) smallest = o;
                labels[e] = (int32_t)smallest;
            }
            free(z);
            ref_mlp_loss(&ref, p, x, labels, use_targets, N, NULL, &min_pre, &max_logit);
        }
        if (min_pre > KINK_MARGIN) break;
    }
    check_true(min_pre > KINK_MARGIN, "data away from ReLU kinks",
               "smallest |pre-activation| %.3e (margin %.0e) after %d draw(s)", min_pre,
               KINK_MARGIN, draws + 1);
    printf("     largest |logit| %.2f\n", max_logit);

    /* The core, in float32. NaN in the output buffer first: the gradient must
     * overwrite it, not accumulate into it. */
    float *g_core_f = test_alloc(sizeof(float) * K);
    for (size_t i = 0; i < K; i++) g_core_f[i] = NAN;
    double loss_core = NAN;
    REQUIRE_OK(lca_model_loss_and_gradient(model, params, x, use_targets ? NULL : labels,
                                           use_targets, N, &loss_core, g_core_f));
    double *g_core = test_alloc(sizeof(double) * K);
    test_to_double(g_core, g_core_f, K);

    /* The reference: value and exact float64 gradient. */
    double *g_ref = test_alloc(sizeof(double) * K);
    double loss_ref = ref_mlp_loss(&ref, p, x, labels, use_targets, N, g_ref, NULL, NULL);
    printf("     loss: core %.10g, reference %.10g\n", loss_core, loss_ref);
    check_true(isfinite(loss_core), "loss finite", "%g", loss_core);
    check_le("loss vs float64 forward, relative", fabs(loss_core - loss_ref) / fabs(loss_ref),
             1e-5);

    /* Which parameters get a finite difference: all, or every bias plus a
     * random sample of each weight tensor. */
    size_t *chosen = test_alloc(sizeof(size_t) * K);
    size_t chosen_count = 0;
    if (c->sample_per_weight_tensor == 0) {
        for (size_t i = 0; i < K; i++) chosen[chosen_count++] = i;
    } else {
        for (int l = 0; l < ref.layers; l++) {
            size_t count = ref.sizes[l + 1] * ref.sizes[l];
            for (size_t s = 0; s < c->sample_per_weight_tensor && s < count; s++)
                chosen[chosen_count++] = ref.weight_offset[l] + test_rng_below(&rng, count);
            for (size_t o = 0; o < ref.sizes[l + 1]; o++)
                chosen[chosen_count++] = ref.bias_offset[l] + o;
        }
    }

    double *g_fd = test_alloc(sizeof(double) * chosen_count);
    double fd_max = 0;
    for (size_t s = 0; s < chosen_count; s++) {
        size_t i = chosen[s];
        double original = p[i];
        p[i] = original + FD_STEP;
        double plus = ref_mlp_loss(&ref, p, x, labels, use_targets, N, NULL, NULL, NULL);
        p[i] = original - FD_STEP;
        double minus = ref_mlp_loss(&ref, p, x, labels, use_targets, N, NULL, NULL, NULL);
        p[i] = original;
        g_fd[s] = (plus - minus) / (2 * FD_STEP);
        fd_max = fmax(fd_max, fabs(g_fd[s]));
    }
    double worst_core = 0, worst_ref = 0;
    size_t worst_index = 0;
    for (size_t s = 0; s < chosen_count; s++) {
        double d = fabs(g_core[chosen[s]] - g_fd[s]);
        if (!(d <= worst_core)) { worst_core = d; worst_index = chosen[s]; }
        worst_ref = fmax(worst_ref, fabs(g_ref[chosen[s]] - g_fd[s]));
    }
    printf("     %zu finite differences, max|g_fd| %.4g; worst core mismatch at parameter %zu: "
           "core %.8g, reference %.8g\n",
           chosen_count, fd_max, worst_index, g_core[worst_index], g_ref[worst_index]);
    check_true(fd_max > 1e-4, "gradient not trivially zero", "max|g_fd| %.3e", fd_max);
    check_le("reference backprop vs finite differences", worst_ref, 1e-6 * fmax(1, fd_max));
    check_le("core gradient vs finite differences", worst_core, 1e-4 * fmax(1, fd_max));
    double ref_max = test_max_abs(g_ref, K);
    check_le("core gradient vs reference backprop, every parameter",
             test_max_abs_diff(g_core, g_ref, K), 1e-4 * fmax(1, ref_max));

    /* Directional derivative along a random direction covers every
     * parameter with one difference. */
    double *v = test_alloc(sizeof(double) * K);
    double *shifted = test_alloc(sizeof(double) * K);
    double dot_core = 0, dot_scale = 0;
    for (size_t i = 0; i < K; i++) {
        v[i] = test_rng_normal(&rng);
        dot_core += g_core[i] * v[i];
        dot_scale += fabs(g_ref[i] * v[i]);
    }
    for (size_t i = 0; i < K; i++) shifted[i] = p[i] + FD_STEP * v[i];
    double plus = ref_mlp_loss(&ref, shifted, x, labels, use_targets, N, NULL, &min_pre, NULL);
    for (size_t i = 0; i < K; i++) shifted[i] = p[i] - FD_STEP * v[i];
    double minus = ref_mlp_loss(&ref, shifted, x, labels, use_targets, N, NULL, NULL, NULL);
    double directional = (plus - minus) / (2 * FD_STEP);
    check_le("core gradient · v vs finite difference along v", fabs(dot_core - directional),
             1e-4 * fmax(1, dot_scale));

    free(v); free(shifted); free(g_fd); free(chosen); free(g_ref); free(g_core);
    free(g_core_f); free(p); free(targets); free(labels); free(x); free(params);
    lca_model_free(model);
}

int main(void) {
    test_begin("test_gradients");
    static const gradient_case cases[] = {
        {"linear, cross-entropy", "64-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 16, 0, 0, 0},
        {"linear, MSE", "64-10", LCA_LOSS_MEAN_SQUARED_ERROR, 16, 1, 0, 0},
        {"MLP, cross-entropy", "20-7-5-3", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 13, 0, 0, 0},
        {"MLP, MSE", "20-7-5-3", LCA_LOSS_MEAN_SQUARED_ERROR, 13, 1, 0, 0},
        {"MLP, MSE on one-hot labels", "20-7-5-3", LCA_LOSS_MEAN_SQUARED_ERROR, 9, 0, 0, 0},
        /* an MLP's pass goes 128 rows at a time (128 + 128 + 44), its
         * gradients added up over the blocks */
        {"MLP in blocks of rows, cross-entropy", "20-7-5-3", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 300,
         0, 0, 0},
        {"MLP in blocks of rows, MSE", "20-7-5-3", LCA_LOSS_MEAN_SQUARED_ERROR, 300, 1, 0, 0},
        {"paper FC, cross-entropy", "784-100-50-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 3, 0, 0,
         300},
        {"large logits (|z| = 50), linear", "8-4", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 10, 0, 50.0, 0},
        {"large logits (|z| = 50), MLP", "12-9-5", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 7, 0, 50.0, 0},
        /* exp(100) overflows float32: only a stable softmax survives */
        {"huge logits (|z| = 100), linear", "8-4", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 10, 0, 100.0, 0},
        /* exp(1000) overflows float64 as well */
        {"huge logits (|z| = 1000), linear", "8-4", LCA_LOSS_SOFTMAX_CROSS_ENTROPY, 10, 0, 1000.0,
         0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 1000 + i);
    return test_finish();
}
