/*
 * test_lca_refinement: Simpson's error shrinks as h⁴ on a smooth loss, so
 * doubling the sub-intervals divides the residual by about 16 (docs/method.md
 * §2, §7). Loss: a linear softmax classifier "64-10" on the embedded digits
 * (smooth in θ). Step: heavy-ball momentum (v ← μv + g, θ ← θ − lr·v,
 * full-batch float64 gradients computed by the test) with a large learning
 * rate, so the residual is far above rounding; see MOMENTUM_STEPS.
 *
 * lca_attribute is called on that step with threshold 0 and caps 2, 4, 8,
 * 16, 32 (threshold 0 forces refinement up to the cap). Checks:
 *   - |r_2| > 1e-4, so the residuals measure truncation, not rounding;
 *   - |r_2| / |r_4| and |r_4| / |r_8| in [8, 32] (printed), |r_2| > |r_4| > |r_8|;
 *   - each core residual vs the test's own float64 composite Simpson,
 *     |r_core − r_ref| ≤ 2e-6 + 1e-3·|r_ref|;
 *   - subintervals == cap and the above-threshold flag is set;
 *   - with the default threshold (0.001) the integrator stops at the
 *     smallest n whose capped residual is ≤ 0.001 and reports that residual;
 *   - the model's own parameters are left unchanged.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One step from the initialisation (zero velocity, so the momentum step
 * is a gradient step). Later momentum steps at learning rates that make the
 * residual large land where n = 2 is not yet in Simpson's asymptotic range:
 * scanning lr 1–6 after 2–5 steps gave |r_2|/|r_4| anywhere from 0.05 to 72
 * (the float64 reference agreed with the core each time), while the first
 * step gave 17–21 for lr 1–3. */
#define MOMENTUM_STEPS 1
#define LEARNING_RATE 3.0
#define MOMENTUM 0.9

int main(void) {
    test_begin("test_lca_refinement");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    size_t N = lca_dataset_count(data);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "64-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 11);
    ref_mlp ref;
    if (!ref_mlp_from_model(&ref, model)) return test_finish();
    size_t K = ref.parameter_count;
    float *x;
    int32_t *labels;
    test_gather_all(data, 0, &x, &labels, NULL);

    /* Heavy-ball steps in float64; parameters stored as float32 like the
     * core's. from → to is the last step. */
    double learning_rate = LEARNING_RATE;
    float *from = test_alloc(sizeof(float) * K), *to = test_alloc(sizeof(float) * K);
    double *theta = test_alloc(sizeof(double) * K), *g = test_alloc(sizeof(double) * K);
    double *velocity = test_alloc(sizeof(double) * K);
    memcpy(to, lca_model_parameters_const(model), sizeof(float) * K);
    for (int step = 0; step < MOMENTUM_STEPS; step++) {
        memcpy(from, to, sizeof(float) * K);
        test_to_double(theta, from, K);
        ref_mlp_loss(&ref, theta, x, labels, NULL, N, g, NULL, NULL);
        for (size_t i = 0; i < K; i++) {
            velocity[i] = MOMENTUM * velocity[i] + g[i];
            to[i] = (float)(theta[i] - learning_rate * velocity[i]);
        }
    }
    float *model_before = test_alloc(sizeof(float) * K);
    memcpy(model_before, lca_model_parameters_const(model), sizeof(float) * K);

    static const unsigned caps[] = {2, 4, 8, 16, 32};
    enum { CAP_COUNT = sizeof caps / sizeof caps[0] };
    double residual[CAP_COUNT], loss_before[CAP_COUNT], loss_after[CAP_COUNT];
    double worst_ref = 0;
    size_t T = lca_model_tensor_count(model);
    double *tensor_lca = test_alloc(sizeof(double) * T);
    double *tensor_first_order = test_alloc(sizeof(double) * T);
    uint64_t *tensor_counts = test_alloc(sizeof(uint64_t) * 3 * T);
    for (int c = 0; c < CAP_COUNT; c++) {
        lca_config config = lca_config_default();
        config.lca_threshold = 0;
        config.lca_max_subintervals = caps[c];
        lca_record record;
        memset(&record, 0, sizeof record);
        REQUIRE_OK(lca_attribute(model, from, to, data, NULL, N, &config, &record, tensor_lca,
                               tensor_first_order, tensor_counts));
        const lca_view_record *v = &record.train;
        residual[c] = v->residual;
        loss_before[c] = v->loss_before;
        loss_after[c] = v->loss_after;
        double ref_from, ref_to;
        double ref_total = ref_simpson_lca(&ref, from, to, x, labels, NULL, N, caps[c], NULL,
                                           &ref_from, &ref_to);
        double ref_residual = ref_to - ref_from - ref_total;
        printf("     cap %2u: loss %.8f -> %.8f, lca %.8e, residual %+.4e (float64 Simpson "
               "%+.4e), n %u, flags 0x%x\n",
               caps[c], v->loss_before, v->loss_after, v->lca_total, v->residual, ref_residual,
               v->subintervals, v->flags);
        worst_ref = fmax(worst_ref, fabs(v->residual - ref_residual) /
                                        (2e-6 + 1e-3 * fabs(ref_residual)));
        check_true(v->subintervals == caps[c] &&
                       (v->flags & LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD) != 0,
                   "threshold 0 refines to the cap and flags it", "cap %u: subintervals %u, "
                   "flags 0x%x", caps[c], v->subintervals, v->flags);
    }
    check_le("core residual vs float64 Simpson residual, / (2e-6 + 1e-3*|r_ref|)", worst_ref, 1.0);
    check_true(fabs(residual[0]) > 1e-4, "residual at n = 2 far above rounding", "|r_2| = %.3e",
               fabs(residual[0]));
    double ratio = fabs(residual[0]) / fabs(residual[1]);
    check_range("|r_2| / |r_4| (Simpson: about 16)", ratio, 8, 32);
    check_range("|r_4| / |r_8| (Simpson: about 16)", fabs(residual[1]) / fabs(residual[2]), 8, 32);
    printf("     |r_8| / |r_16| = %.2f, |r_16| / |r_32| = %.2f\n",
           fabs(residual[2]) / fabs(residual[3]), fabs(residual[3]) / fabs(residual[4]));
    check_true(fabs(residual[0]) > fabs(residual[1]) && fabs(residual[1]) > fabs(residual[2]),
               "|r| shrinks monotonically up to n = 8", "%.3e > %.3e > %.3e", fabs(residual[0]),
               fabs(residual[1]), fabs(residual[2]));
    double loss_spread = 0;
    for (int c = 1; c < CAP_COUNT; c++)
        loss_spread = fmax(loss_spread, fmax(fabs(loss_before[c] - loss_before[0]),
                                             fabs(loss_after[c] - loss_after[0])));
    check_le("end-point losses identical whatever the cap", loss_spread, 0.0);

    /* Default threshold: the integrator must stop at the first n whose
     * residual is within it. */
    lca_config config = lca_config_default();
    lca_record record;
    REQUIRE_OK(lca_attribute(model, from, to, data, NULL, N, &config, &record, tensor_lca,
                               tensor_first_order, tensor_counts));
    int expected = CAP_COUNT - 1;
    for (int c = 0; c < CAP_COUNT; c++) {
        if (fabs(residual[c]) <= config.lca_threshold) { expected = c; break; }
    }
    printf("     default threshold %.0e: n %u, residual %+.4e, flags 0x%x\n", config.lca_threshold,
           record.train.subintervals, record.train.residual, record.train.flags);
    check_true(fabs(residual[0]) > config.lca_threshold, "the step needs refinement at the default "
               "threshold", "|r_2| %.3e > %.0e", fabs(residual[0]), config.lca_threshold);
    check_true(record.train.subintervals == caps[expected] && record.train.flags == 0,
               "default refinement stops at the first n within the threshold",
               "n %u, expected %u; flags 0x%x", record.train.subintervals, caps[expected],
               record.train.flags);
    check_le("its residual vs the capped run at that n", fabs(record.train.residual -
             residual[expected]), 1e-12);

    check_true(memcmp(model_before, lca_model_parameters_const(model), sizeof(float) * K) == 0,
               "lca_attribute leaves the model's parameters unchanged", "%zu parameters compared",
               K);

    /* an index past the data set is refused, with its position */
    uint32_t bad[3] = {0, 1, (uint32_t)N};
    lca_status status = lca_attribute(model, from, to, data, bad, 3, &config, &record, tensor_lca,
                                      tensor_first_order, tensor_counts);
    check_true(status == LCA_ERR_INVALID_ARGUMENT && strstr(lca_last_error(), "position 2"),
               "lca_attribute refuses an index past the data set", "status %d: %s", (int)status,
               lca_last_error());

    free(x); free(labels); free(from); free(to); free(theta); free(g); free(velocity);
    free(model_before); free(tensor_lca); free(tensor_first_order); free(tensor_counts);
    lca_model_free(model);
    lca_dataset_free(data);
    return test_finish();
}
