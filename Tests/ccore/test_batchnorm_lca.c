/* test_batchnorm_lca.c: batch norm under LCA (docs/models.md).
 *
 * The allocated loss of a net with batch norm normalises the evaluation set
 * in fixed groups of bn_group examples, so it is a function of the
 * parameters alone:
 *   - changing the compute chunk (a multiple of the group) changes the LCA,
 *     the losses and the residual only by float rounding;
 *   - the same holds for the thread count, bit for bit;
 *   - conservation: |residual| ≤ threshold or the record is flagged, over a
 *     real training run of a conv net with batch norm and residual blocks;
 *   - changing the group size changes the loss (the rule is not a no-op). */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXAMPLES 600
#define SPEC "input(1,8,8) conv(4,3) bn relu block(4) block(8,stride=2) gap dense(10)"

typedef struct attribution {
    lca_record record;
    double lca[64], first_order[64];
    uint64_t counts[3 * 64];
} attribution;

static void attribute(lca_model *model, const float *from, const float *to, const lca_dataset *data,
                      size_t chunk, size_t group, attribution *out) {
    lca_config config = lca_config_default();
    config.eval_chunk = chunk;
    config.bn_group = group;
    config.lca_threshold = 1e-4;
    REQUIRE_OK(lca_attribute(model, from, to, data, NULL, 0, &config, &out->record, out->lca,
                             out->first_order, out->counts));
}

int main(void) {
    test_begin("test_batchnorm_lca");
    /* structured digits-like data: the embedded 8×8 digits, first 600 */
    lca_dataset *data = test_digits_subset(EXAMPLES);

    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, SPEC, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 5);
    size_t k = lca_model_parameter_count(model), t = lca_model_tensor_count(model);
    if (t > 64) test_fail("more tensors (%zu) than this test holds", t);

    /* two points: the initial weights and a few momentum steps later */
    float *from = test_alloc(k * sizeof(float)), *to = test_alloc(k * sizeof(float));
    memcpy(from, lca_model_parameters(model), k * sizeof(float));
    lca_config train = lca_config_default();
    train.batch_size = 100;
    train.validation = 0;
    train.learning_rate = 0.05;
    train.lca = 0;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &train));
    lca_record record;
    for (int i = 0; i < 3; i++) REQUIRE_OK(lca_trainer_step(trainer, &record));
    memcpy(to, lca_model_parameters(model), k * sizeof(float));
    lca_trainer_free(trainer);

    /* the compute chunk: 100, 200, 300, 600 with groups of 100 */
    attribution base, other;
    attribute(model, from, to, data, 100, 100, &base);
    double scale = 0.0;
    for (size_t i = 0; i < t; i++) scale = fmax(scale, fabs(base.lca[i]));
    printf("chunk 100: loss %.9f -> %.9f, LCA %.6e, residual %.3e, %u sub-intervals\n",
           base.record.train.loss_before, base.record.train.loss_after,
           base.record.train.lca_total, base.record.train.residual,
           base.record.train.subintervals);
    const size_t chunks[] = {200, 300, 600, 150 /* rounds down to 100 */};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        attribute(model, from, to, data, chunks[c], 100, &other);
        double worst = 0.0;
        for (size_t i = 0; i < t; i++) worst = fmax(worst, fabs(other.lca[i] - base.lca[i]));
        char what[128];
        snprintf(what, sizeof what, "chunk %zu vs 100: per-tensor LCA / max |LCA|", chunks[c]);
        check_le(what, worst / scale, 1e-5);
        snprintf(what, sizeof what, "chunk %zu vs 100: loss before (relative)", chunks[c]);
        check_le(what, fabs(other.record.train.loss_before - base.record.train.loss_before) /
                           base.record.train.loss_before, 1e-6);
        snprintf(what, sizeof what, "chunk %zu vs 100: loss after (relative)", chunks[c]);
        check_le(what, fabs(other.record.train.loss_after - base.record.train.loss_after) /
                           base.record.train.loss_after, 1e-6);
    }

    /* the rule is not a no-op: other groups give another loss */
    attribute(model, from, to, data, 300, 300, &other);
    check_true(fabs(other.record.train.loss_before - base.record.train.loss_before) > 1e-6,
               "groups of 300 give another loss than groups of 100",
               "%.9f vs %.9f", other.record.train.loss_before, base.record.train.loss_before);

    /* threads: the same bits */
    lca_set_threads(1);
    attribute(model, from, to, data, 200, 100, &base);
    lca_set_threads(2);
    attribute(model, from, to, data, 200, 100, &other);
    lca_set_threads(0);
    check_true(memcmp(base.lca, other.lca, t * sizeof(double)) == 0 &&
                   base.record.train.residual == other.record.train.residual,
               "1 and 2 threads give identical LCA", "residuals %.17g vs %.17g",
               base.record.train.residual, other.record.train.residual);

    /* conservation over a training run with LCA on */
    lca_model_initialize(model, 6);
    lca_config run = lca_config_default();
    run.batch_size = 100;
    run.validation = 100;
    run.learning_rate = 0.05;
    run.bn_group = 100;
    run.lca_threshold = 1e-3;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &run));
    double worst_unflagged = 0.0;
    unsigned refined = 0, flagged = 0;
    for (int i = 0; i < 12; i++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        const lca_view_record *v = &record.train;
        if (v->subintervals > 2) refined++;
        if (v->flags & LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD) flagged++;
        else worst_unflagged = fmax(worst_unflagged, fabs(v->residual));
        double sum = 0.0;
        for (size_t j = 0; j < t; j++) sum += v->tensor_lca[j];
        check_true(sum == v->lca_total, "Σ tensor LCA == total", "iteration %llu: %.17g vs %.17g",
                   (unsigned long long)record.iteration, sum, v->lca_total);
    }
    printf("training run: %u of 12 iterations refined, %u flagged\n", refined, flagged);
    check_le("training run: worst |residual| of unflagged iterations", worst_unflagged, 1e-3);
    lca_trainer_free(trainer);

    lca_model_free(model);
    lca_dataset_free(data);
    free(from);
    free(to);
    return test_finish();
}
