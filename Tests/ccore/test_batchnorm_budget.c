/* test_batchnorm_budget.c: the memory budget never changes a byte
 * (docs/memory.md).
 *
 * A batch-norm group (or a training minibatch) whose workspace does not fit
 * the memory budget is evaluated in sub-chunks: its statistics layer by
 * layer, its backward sums layer by layer, then the pass itself, everything
 * recomputed (pass.c, "group pass"). The results must be the bytes of one
 * pass over the group:
 *   - the evaluator's loss and gradient for BN nets (a residual conv net,
 *     a dense net with batch norm) at chunks of the whole group, 1, 7, 33
 *     and 64 examples, at 1 and 2 threads;
 *   - training with LCA at a budget that holds the whole minibatch and at
 *     budgets that hold 1 and a few examples: every record, the
 *     parameters, the running statistics, for a BN net with dropout and a
 *     conv net with dropout and no batch norm;
 *   - a budget below one example is refused with the bytes needed. */
#include "internal.h"
#include "model.h"
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXAMPLES 300
#define RESNET "input(1,8,8) conv(4,3) bn relu block(4) block(8,stride=2) gap dense(10)"
#define DENSE_BN "input(1,8,8) flatten dense(24) bn relu dense(16) bn relu dense(10)"
#define BN_DROPOUT "input(1,8,8) conv(6,3) bn relu dropout(0.3) block(6) maxpool(2) dense(10)"
#define CONV_DROPOUT "input(1,8,8) conv(6,3) relu maxpool(2) dropout(0.25) dense(16) relu dropout(0.5) dense(10)"

static lca_dataset *make_data(void) { return test_digits_subset(EXAMPLES); }

/* Loss and gradient of the evaluator at the model's parameters. */
static void evaluate(lca_model *model, const lca_dataset *data, size_t chunk, size_t group,
                     double *loss, double *gradient) {
    lca_config config = lca_config_default();
    config.eval_chunk = chunk;
    config.bn_group = group;
    lca_evaluator *e;
    REQUIRE_OK(lca_evaluator_new(&e, model, data, NULL, 0, &config));
    REQUIRE_OK(lca_evaluator_run(e, lca_model_parameters(model), loss, gradient));
    lca_evaluator_free(e);
}

static void check_evaluator(const char *spec, const lca_dataset *data, size_t group) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 3);
    size_t k = lca_model_parameter_count(model);
    double base_loss, *base = test_alloc(k * sizeof(double)), *other = test_alloc(k * sizeof(double));
    evaluate(model, data, group, group, &base_loss, base);
    const size_t chunks[] = {1, 7, 33, 64};
    for (int threads = 1; threads <= 2; threads++) {
        lca_set_threads(threads);
        for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
            double loss;
            evaluate(model, data, chunks[i], group, &loss, other);
            size_t differ = 0;
            for (size_t j = 0; j < k; j++) differ += memcmp(&base[j], &other[j], sizeof(double)) != 0;
            check_true(memcmp(&loss, &base_loss, sizeof loss) == 0 && differ == 0,
                       "a group in sub-chunks gives the bytes of the whole group",
                       "%s, groups of %zu, chunk %zu, %d thread(s): loss %.17g vs %.17g, %zu of "
                       "%zu gradient values differ",
                       spec, group, chunks[i], threads, loss, base_loss, differ, k);
        }
    }
    lca_set_threads(0);
    free(base);
    free(other);
    lca_model_free(model);
}

typedef struct run {
    size_t k, records;
    float *parameters;
    float running[4096];
    size_t running_count;
    lca_record record[6];
    double tensor_lca[6][64];
    size_t eval_chunk, train_chunk;
    bool recomputed; /* a residual net's layout (model.h, lca_model_fit_layout) */
    size_t keep_all_budget;
} run;

/* Four steps with LCA from the same start at memory budget budget. */
static void train(const char *spec, const lca_dataset *data, size_t budget, run *out) {
    memset(out, 0, sizeof *out);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 11);
    lca_config config = lca_config_default();
    config.batch_size = 40;
    config.validation = 60;
    config.lca_subset = 90;
    config.bn_group = 30;
    config.learning_rate = 0.05;
    config.lca_max_subintervals = 4;
    config.lca_validation_view = 1;
    config.memory_budget = budget;
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    out->eval_chunk = lca_trainer_config(trainer)->eval_chunk;
    out->train_chunk = model->max_batch;
    out->recomputed = lca_model_recomputes(model);
    lca_memory_use use;
    lca_trainer_memory_use(trainer, &use);
    out->keep_all_budget = use.keep_all_budget;
    size_t t = lca_model_tensor_count(model);
    if (t > 64) test_fail("more tensors (%zu) than this test holds", t);
    for (size_t i = 0; i < 4; i++) {
        REQUIRE_OK(lca_trainer_step(trainer, &out->record[i]));
        memcpy(out->tensor_lca[i], out->record[i].train.tensor_lca, t * sizeof(double));
    }
    out->k = lca_model_parameter_count(model);
    out->parameters = test_alloc(out->k * sizeof(float));
    memcpy(out->parameters, lca_model_parameters(model), out->k * sizeof(float));
    out->running_count = 0;
    for (size_t l = 0; l < model->layer_count; l++) {
        const lca_layer *L = &model->layers[l];
        if (L->kind != LCA_LAYER_BATCHNORM) continue;
        memcpy(out->running + out->running_count, L->running_mean, 2 * L->out_c * sizeof(float));
        out->running_count += 2 * L->out_c;
    }
    lca_trainer_free(trainer);
    lca_model_free(model);
}

/* Compares the record fields that are numbers (not the array pointers). */
static bool same_record(const lca_record *a, const lca_record *b) {
    const lca_view_record *views[2][2] = {{&a->train, &b->train}, {&a->validation, &b->validation}};
    if (a->iteration != b->iteration || memcmp(&a->batch_loss, &b->batch_loss, sizeof(double)))
        return false;
    for (int v = 0; v < 2; v++) {
        const lca_view_record *x = views[v][0], *y = views[v][1];
        if (memcmp(&x->loss_before, &y->loss_before, sizeof(double)) ||
            memcmp(&x->loss_after, &y->loss_after, sizeof(double)) ||
            memcmp(&x->lca_total, &y->lca_total, sizeof(double)) ||
            memcmp(&x->residual, &y->residual, sizeof(double)) ||
            x->subintervals != y->subintervals)
            return false;
    }
    return true;
}

static void check_training(const char *spec, const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    size_t one = lca_model_chunk_bytes(model, 1), five = lca_model_chunk_bytes(model, 5),
           many = lca_model_chunk_bytes(model, 40);
    lca_model_free(model);
    run base, other;
    /* an ample budget: a residual net keeps every activation; the smaller
     * ones recompute its blocks (the same bytes either way) */
    train(spec, data, (size_t)1 << 30, &base);
    const size_t budgets[] = {one, five, (one + many) / 2, many + (1 << 20)};
    bool residual = strstr(spec, "block(") && !strstr(spec, "dropout");
    check_true(!base.recomputed, "an ample budget keeps every activation", "%s", spec);
    if (residual) {
        /* the budget the summary names keeps them; a byte less recomputes */
        size_t keep = base.keep_all_budget;
        train(spec, data, keep, &other);
        bool kept = !other.recomputed;
        free(other.parameters);
        train(spec, data, keep - 1, &other);
        check_true(kept && other.recomputed,
                   "the budget named to keep every activation is the least that does",
                   "%s: %zu bytes %s, %zu %s", spec, keep, kept ? "keeps" : "recomputes", keep - 1,
                   other.recomputed ? "recomputes" : "keeps");
        free(other.parameters);
    }
    for (size_t b = 0; b < 4; b++) {
        train(spec, data, budgets[b], &other);
        size_t records = 0, tensors = 0, parameters = 0;
        for (size_t i = 0; i < 4; i++) {
            records += !same_record(&base.record[i], &other.record[i]);
            tensors += memcmp(base.tensor_lca[i], other.tensor_lca[i], sizeof base.tensor_lca[i]) != 0;
        }
        for (size_t i = 0; i < base.k; i++)
            parameters += memcmp(&base.parameters[i], &other.parameters[i], sizeof(float)) != 0;
        bool running = memcmp(base.running, other.running, base.running_count * sizeof(float)) == 0;
        check_true(records == 0 && tensors == 0 && parameters == 0 && running,
                   "training at a small memory budget gives the bytes of a large one",
                   "%s, budget %zu bytes (evaluation chunk %zu, training chunk %zu; whole: %zu, "
                   "%zu): %zu records, %zu tensor LCA rows, %zu parameters differ; running "
                   "statistics %s",
                   spec, budgets[b], other.eval_chunk, other.train_chunk, base.eval_chunk,
                   base.train_chunk, records, tensors, parameters, running ? "equal" : "differ");
        if (b == 0 && residual)
            check_true(other.recomputed, "a budget of one example recomputes a residual net's blocks",
                       "%s", spec);
        if (b == 0)
            check_true(other.eval_chunk == 1 && other.train_chunk == 1,
                       "a budget of one example's bytes takes one example at a time",
                       "evaluation chunk %zu, training chunk %zu", other.eval_chunk,
                       other.train_chunk);
        free(other.parameters);
    }
    free(base.parameters);
}

static void check_refused(const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, RESNET, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 1);
    size_t one = lca_model_chunk_bytes(model, 1);
    lca_config config = lca_config_default();
    config.memory_budget = one - 1;
    char need[64];
    snprintf(need, sizeof need, "at least %zu", one);
    lca_trainer *trainer = NULL;
    lca_status status = lca_trainer_new(&trainer, model, data, &config);
    check_true(status == LCA_ERR_INVALID_ARGUMENT && strstr(lca_last_error(), need),
               "a budget below one example is refused with the bytes needed", "status %d: %s",
               (int)status, status == LCA_OK ? "" : lca_last_error());
    lca_trainer_free(trainer);
    lca_evaluator *e = NULL;
    status = lca_evaluator_new(&e, model, data, NULL, 0, &config);
    check_true(status == LCA_ERR_INVALID_ARGUMENT && strstr(lca_last_error(), need),
               "the evaluator refuses it too", "status %d: %s", (int)status,
               status == LCA_OK ? "" : lca_last_error());
    lca_evaluator_free(e);
    config.memory_budget = one;
    status = lca_evaluator_new(&e, model, data, NULL, 0, &config);
    check_true(status == LCA_OK, "a budget of exactly one example is taken", "status %d: %s",
               (int)status, status == LCA_OK ? "" : lca_last_error());
    lca_evaluator_free(e);
    lca_model_free(model);
}

int main(void) {
    test_begin("test_batchnorm_budget");
    lca_dataset *data = make_data();
    check_evaluator(RESNET, data, 100);
    check_evaluator(RESNET, data, 250); /* the last group shorter (50) */
    check_evaluator(DENSE_BN, data, 64);
    check_training(BN_DROPOUT, data);
    check_training(RESNET, data);
    check_training(CONV_DROPOUT, data);
    check_refused(data);
    lca_dataset_free(data);
    return test_finish();
}
