/*
 * test_lca_conservation: the bookkeeping identities of every record
 * (docs/method.md §1, §7), on "64-32-10" trained on the embedded digits for 30
 * iterations with the default settings (momentum, minibatch 250, validation
 * held out, LCA on the training split, threshold 0.001, cap 32), then again
 * with threshold 3e-6 and cap 8 so that records refine and flag. For each
 * view (training, and validation when present) and record:
 *   - Σ tensor_lca, added in tensor order in float64, == lca_total exactly;
 *   - Σ tensor_first_order == first_order_total exactly;
 *   - residual == (loss_after − loss_before) − lca_total exactly;
 *   - helped + hurt + zero == the tensor's element count, and zero counts at
 *     least the parameters that did not move (training view);
 *   - |residual| ≤ threshold unless flagged, and flagged only at the cap;
 *   - loss_before of record t+1 == loss_after of record t exactly;
 *   - subintervals ∈ {2, 4, 8, 16, 32}; iterations numbered 1, 2, 3, …
 * Then over the run:
 *   - lca_trainer_lca_totals summed per tensor vs Σ_t tensor_lca, relative
 *     1e-12 (different summation order);
 *   - lca_trainer_helped_counts summed per tensor == Σ_t tensor_helped exactly.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITERATIONS 30

typedef struct view_tally {
    const char *name;
    int mismatched_total, mismatched_first_order, mismatched_residual, mismatched_counts;
    int unflagged_above, flagged_below_cap, chained_breaks, bad_subintervals;
    double previous_loss_after;
    int refined;            /* records with subintervals > 2 */
    int flagged;
    uint32_t largest_n;
    double largest_residual;
} view_tally;

static void check_view(view_tally *tally, const lca_view_record *v, const lca_model *model,
                       const lca_config *config, int first) {
    size_t T = lca_model_tensor_count(model);
    double sum = 0, sum_first = 0;
    for (size_t k = 0; k < T; k++) {
        sum += v->tensor_lca[k];
        sum_first += v->tensor_first_order[k];
        lca_tensor_info info;
        lca_model_tensor(model, k, &info);
        if (v->tensor_helped[k] + v->tensor_hurt[k] + v->tensor_zero[k] != info.count) {
            if (!tally->mismatched_counts)
                printf("     %s: tensor %s helped %llu + hurt %llu + zero %llu != %zu\n",
                       tally->name, info.name, (unsigned long long)v->tensor_helped[k],
                       (unsigned long long)v->tensor_hurt[k],
                       (unsigned long long)v->tensor_zero[k], info.count);
            tally->mismatched_counts++;
        }
    }
    if (sum != v->lca_total) {
        if (!tally->mismatched_total)
            printf("     %s: sum of tensor_lca %.17g != lca_total %.17g\n", tally->name, sum,
                   v->lca_total);
        tally->mismatched_total++;
    }
    if (sum_first != v->first_order_total) tally->mismatched_first_order++;
    double residual = (v->loss_after - v->loss_before) - v->lca_total;
    if (residual != v->residual) {
        if (!tally->mismatched_residual)
            printf("     %s: residual %.17g, (after - before) - lca = %.17g\n", tally->name,
                   v->residual, residual);
        tally->mismatched_residual++;
    }
    int flagged = (v->flags & LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD) != 0;
    if (!flagged && !(fabs(v->residual) <= config->lca_threshold)) tally->unflagged_above++;
    if (flagged && v->subintervals != config->lca_max_subintervals) tally->flagged_below_cap++;
    uint32_t n = v->subintervals;
    if (!(n == 2 || n == 4 || n == 8 || n == 16 || n == 32)) tally->bad_subintervals++;
    if (!first && v->loss_before != tally->previous_loss_after) {
        if (!tally->chained_breaks)
            printf("     %s: loss_before %.17g != previous loss_after %.17g\n", tally->name,
                   v->loss_before, tally->previous_loss_after);
        tally->chained_breaks++;
    }
    tally->previous_loss_after = v->loss_after;
    if (n > 2) tally->refined++;
    if (flagged) tally->flagged++;
    if (n > tally->largest_n) tally->largest_n = n;
    tally->largest_residual = fmax(tally->largest_residual, fabs(v->residual));
}

static void report_view(const view_tally *t, int records) {
    char what[128];
#define REPORT(field, text)                                                              \
    snprintf(what, sizeof what, "%s: %s", t->name, text);                                \
    check_true(t->field == 0, what, "%d of %d records differ", t->field, records)
    REPORT(mismatched_total, "sum of tensor_lca == lca_total exactly");
    REPORT(mismatched_first_order, "sum of tensor_first_order == first_order_total exactly");
    REPORT(mismatched_residual, "residual == (loss_after - loss_before) - lca_total exactly");
    REPORT(mismatched_counts, "helped + hurt + zero == tensor size");
    REPORT(unflagged_above, "|residual| <= threshold unless flagged");
    REPORT(flagged_below_cap, "flag only at the cap");
    REPORT(chained_breaks, "loss_before(t+1) == loss_after(t) exactly");
    REPORT(bad_subintervals, "subintervals in {2, 4, 8, 16, 32}");
#undef REPORT
    printf("     %s: %d of %d records refined, %d flagged, largest n %u, largest |residual| "
           "%.3e\n", t->name, t->refined, records, t->flagged, t->largest_n, t->largest_residual);
}

static void run(const lca_dataset *data, double threshold, unsigned cap) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "64-32-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 4);
    lca_config config = lca_config_default();
    config.iterations = ITERATIONS;
    config.lca_validation_view = 1;
    config.lca_threshold = threshold;
    config.lca_max_subintervals = cap;
    printf("-- threshold %.0e, cap %u\n", threshold, cap);
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    size_t K = lca_model_parameter_count(model), T = lca_model_tensor_count(model);
    printf("     training %zu, validation %zu, evaluation %zu, %zu parameters in %zu tensors\n",
           lca_trainer_training_count(trainer), lca_trainer_validation_count(trainer),
           lca_trainer_evaluation_count(trainer), K, T);

    double *tensor_sum = test_alloc(sizeof(double) * T);
    float *before = test_alloc(sizeof(float) * K);
    int zero_too_few = 0;
    uint64_t unmoved_seen = 0;
    uint64_t *helped_sum = test_alloc(sizeof(uint64_t) * T);
    view_tally train = {.name = "train"}, validation = {.name = "validation"};
    int misnumbered = 0, validation_records = 0;
    for (int t = 0; t < ITERATIONS; t++) {
        lca_record record;
        memcpy(before, lca_model_parameters(model), sizeof(float) * K);
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        /* A parameter that did not move has LCA exactly 0 (digits has
         * pixels that are 0 in every image, so some weights never move). */
        const float *after = lca_model_parameters(model);
        for (size_t k = 0; k < T; k++) {
            lca_tensor_info info;
            REQUIRE_OK(lca_model_tensor(model, k, &info));
            uint64_t unmoved = 0;
            for (size_t i = info.offset; i < info.offset + info.count; i++)
                if (after[i] == before[i]) unmoved++;
            unmoved_seen += unmoved;
            if (record.train.tensor_zero[k] < unmoved) {
                if (!zero_too_few)
                    printf("     iteration %llu, %s: %llu parameters did not move, tensor_zero "
                           "%llu\n", (unsigned long long)record.iteration, info.name,
                           (unsigned long long)unmoved,
                           (unsigned long long)record.train.tensor_zero[k]);
                zero_too_few++;
            }
        }
        if (record.iteration != (uint64_t)t + 1) misnumbered++;
        check_view(&train, &record.train, model, &config, t == 0);
        if (record.has_validation) {
            check_view(&validation, &record.validation, model, &config, validation_records == 0);
            validation_records++;
        }
        for (size_t k = 0; k < T; k++) {
            tensor_sum[k] += record.train.tensor_lca[k];
            helped_sum[k] += record.train.tensor_helped[k];
        }
        if (t < 2 || t == ITERATIONS - 1)
            printf("     iteration %llu: loss %.6f -> %.6f, lca %+.6e, residual %+.2e, n %u\n",
                   (unsigned long long)record.iteration, record.train.loss_before,
                   record.train.loss_after, record.train.lca_total, record.train.residual,
                   record.train.subintervals);
    }
    check_true(zero_too_few == 0 && unmoved_seen > 0, "tensor_zero counts every unmoved parameter",
               "%llu unmoved parameter-iterations seen, %d tensor records short",
               (unsigned long long)unmoved_seen, zero_too_few);
    check_true(misnumbered == 0, "records numbered 1, 2, 3, ...", "%d misnumbered", misnumbered);
    report_view(&train, ITERATIONS);
    if (validation_records) report_view(&validation, validation_records);
    else printf("     no validation view in the records (validation %zu examples)\n",
                lca_trainer_validation_count(trainer));

    /* Per-parameter run totals against the per-record tensor sums. */
    const double *totals = lca_trainer_lca_totals(trainer);
    const uint32_t *helped = lca_trainer_helped_counts(trainer);
    double worst = 0;
    int helped_mismatch = 0;
    for (size_t k = 0; k < T; k++) {
        lca_tensor_info info;
        REQUIRE_OK(lca_model_tensor(model, k, &info));
        double sum = 0, scale = 0;
        uint64_t helped_total = 0;
        for (size_t i = info.offset; i < info.offset + info.count; i++) {
            sum += totals[i];
            scale += fabs(totals[i]);
            helped_total += helped[i];
        }
        double relative = fabs(sum - tensor_sum[k]) / fmax(scale, fabs(tensor_sum[k]));
        printf("     %-11s run LCA %+.10e (per-parameter totals %+.10e), helped %llu (records "
               "%llu)\n", info.name, tensor_sum[k], sum, (unsigned long long)helped_total,
               (unsigned long long)helped_sum[k]);
        worst = fmax(worst, relative);
        if (helped_total != helped_sum[k]) helped_mismatch++;
    }
    check_le("per-parameter totals summed per tensor vs sum over records, relative", worst, 1e-12);
    check_true(helped_mismatch == 0, "helped counts summed per tensor == sum over records",
               "%d of %zu tensors differ", helped_mismatch, T);

    free(tensor_sum);
    free(helped_sum);
    free(before);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

int main(void) {
    test_begin("test_lca_conservation");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    lca_config defaults = lca_config_default();
    run(data, defaults.lca_threshold, defaults.lca_max_subintervals);
    /* A threshold near the residuals' size makes some records refine and
     * some reach the cap, so those paths keep the identities too. */
    run(data, 3e-6, 8);
    lca_dataset_free(data);
    return test_finish();
}
