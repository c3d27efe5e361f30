/*
 * test_example_groups: LCA split by loss group (issue 15, config
 * example_groups; docs/method.md "Groups"), on the embedded digits.
 *   - every record, both views, an MLP (64-16-10) and a batch-norm conv net:
 *     Σ_g group_lca[g, t] vs tensor_lca[t] (relative to Σ_g |group_lca|,
 *     bound 1e-12: the group gradients add up exactly to the total's
 *     integers, then each rounds once to float64 and is multiplied by Δθ);
 *     Σ_g share changes vs the total loss change and Σ_g group_residual vs
 *     residual (absolute 1e-12); each group's |residual| within threshold
 *     or flagged; the groups' examples add up to the view's;
 *   - a group's LCA and losses against an independent float64 reference
 *     (support.c's MLP: Simpson on the group's examples alone, scaled by
 *     n_g/N), relative to max |LCA| 1e-6; its losses relative 1e-6;
 *   - batch norm: each group's masked pass is the gradient of its share of
 *     the loss (the residual per group, a line integral of that gradient,
 *     stays below 1e-4 of the largest group change at threshold 1e-7);
 *   - with groups, the total differs from a run without groups by rounding
 *     only (relative 1e-6 of max |LCA| per tensor);
 *   - the same log bytes at 1 and 2 threads, at evaluation chunks 1, 7, 100
 *     and the default, and (batch norm) at a small memory budget: a
 *     batch-norm group in sub-chunks (a masked pass per loss group) and one
 *     that fits (one forward kept for every loss group's masked backward)
 *     give the same bytes, also with residual blocks and a projection;
 *   - the log: the header's "groups" (source, names, examples) and fields
 *     (group_reserved only when G is odd), the record size, group_lca bytes
 *     in the file == the record's;
 *   - per-group totals: Σ_g vs lca_trainer_lca_totals (relative 1e-12 of
 *     the parameter's Σ_g |…|), and through a state save and load the run
 *     continues with the same totals bytes;
 *   - errors: an id out of range names the example, a wrong count names
 *     both counts, 0 or too many groups, totals without groups.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 6 steps, 3 under the sanitizers (LCA_TEST_SMALL): every check still runs
 * on the first step and on later ones, at the same refinement levels */
static int ITERATIONS; /* set first in main */
#define MLP "64-16-10"
#define BN_NET "input(1,8,8) conv(4,3) bn relu maxpool(2) dense(10)"
#define BLOCK_NET "input(1,8,8) conv(4,3) bn relu block(4) block(8,stride=2) gap dense(10)"

typedef struct run_options {
    const char *spec;
    const uint32_t *groups; /* NULL: none */
    uint32_t group_count;
    int threads;
    size_t eval_chunk;
    size_t memory_budget;   /* 0: default */
    int totals;
    double threshold;
} run_options;

static lca_trainer *make_trainer(lca_model **model, const lca_dataset *data, const run_options *o) {
    lca_set_threads(o->threads ? o->threads : 1);
    REQUIRE_OK(lca_model_new(model, o->spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_config config = lca_config_default();
    config.iterations = ITERATIONS;
    config.batch_size = 200;
    config.bn_group = 100;
    config.lca_validation_view = 1;
    config.eval_chunk = o->eval_chunk;
    if (o->memory_budget) config.memory_budget = o->memory_budget;
    if (o->threshold > 0) config.lca_threshold = o->threshold;
    if (o->groups) {
        config.example_groups = o->groups;
        config.example_group_count = lca_dataset_count(data);
        config.group_count = o->group_count;
        config.group_source = "class";
        config.lca_group_totals = o->totals;
    }
    lca_model_initialize(*model, config.seed);
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, *model, data, &config));
    return trainer;
}

/* The class of every example (ids 0 … 9). */
static uint32_t *class_ids(const lca_dataset *data) {
    float *x;
    int32_t *labels;
    float *targets;
    test_gather_all(data, 0, &x, &labels, &targets);
    size_t n = lca_dataset_count(data);
    uint32_t *ids = test_alloc(n * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) ids[i] = (uint32_t)labels[i];
    free(x);
    free(labels);
    return ids;
}

typedef struct worst {
    double split, change, residual, group_residual_rel;
    int unflagged_above, examples_mismatch;
} worst;

static void check_view_groups(const lca_model *model, const lca_view_record *v, uint32_t gc,
                              const uint64_t *examples, double threshold, worst *w) {
    size_t t = lca_model_tensor_count(model);
    if (v->group_count != gc || !v->group_lca) {
        test_fail("record without its %u groups (group_count %u)", gc, v->group_count);
        return;
    }
    double n = 0;
    for (uint32_t g = 0; g < gc; g++) n += (double)examples[g];
    for (size_t k = 0; k < t; k++) {
        double sum = 0, scale = 0;
        for (uint32_t g = 0; g < gc; g++) {
            sum += v->group_lca[g * t + k];
            scale += fabs(v->group_lca[g * t + k]);
        }
        double relative = fabs(sum - v->tensor_lca[k]) / fmax(scale, 1e-300);
        if (scale > 0 && relative > w->split) w->split = relative;
    }
    double change = 0, residual = 0;
    for (uint32_t g = 0; g < gc; g++) {
        double share = (double)examples[g] / n;
        double group_change = share * (v->group_loss_after[g] - v->group_loss_before[g]);
        change += group_change;
        residual += v->group_residual[g];
        if (fabs(v->group_residual[g]) > threshold && !(v->group_flags[g] & 1)) w->unflagged_above++;
        if (fabs(v->group_residual[g]) <= threshold && (v->group_flags[g] & 1)) w->unflagged_above++;
    }
    double d = fabs(change - (v->loss_after - v->loss_before));
    if (d > w->change) w->change = d;
    d = fabs(residual - v->residual);
    if (d > w->residual) w->residual = d;
}

/* Train ITERATIONS steps with the per-record checks. */
static void test_split(const lca_dataset *data, const char *spec, const uint32_t *ids) {
    lca_model *model;
    run_options o = {.spec = spec, .groups = ids, .group_count = 10, .totals = 1};
    lca_trainer *trainer = make_trainer(&model, data, &o);
    const uint64_t *train_examples = lca_trainer_group_examples(trainer, 0);
    const uint64_t *val_examples = lca_trainer_group_examples(trainer, 1);
    uint64_t total = 0, val_total = 0;
    for (int g = 0; g < 10; g++) {
        total += train_examples[g];
        val_total += val_examples[g];
    }
    check_true(total == lca_trainer_evaluation_count(trainer) &&
                   val_total == lca_trainer_validation_count(trainer),
               "groups' examples add up to each view's", "%llu of %zu, %llu of %zu",
               (unsigned long long)total, lca_trainer_evaluation_count(trainer),
               (unsigned long long)val_total, lca_trainer_validation_count(trainer));
    worst w = {0};
    lca_record record;
    double threshold = lca_trainer_config(trainer)->lca_threshold;
    for (int it = 0; it < ITERATIONS; it++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        check_view_groups(model, &record.train, 10, train_examples, threshold, &w);
        check_view_groups(model, &record.validation, 10, val_examples, threshold, &w);
    }
    char what[200];
    snprintf(what, sizeof what, "%s: Σ_g group_lca vs tensor_lca (relative to Σ_g |·|), both views", spec);
    check_le(what, w.split, 1e-12);
    snprintf(what, sizeof what, "%s: Σ_g (n_g/N)·ΔL_g vs ΔL (nats)", spec);
    check_le(what, w.change, 1e-12);
    snprintf(what, sizeof what, "%s: Σ_g group_residual vs residual (nats)", spec);
    check_le(what, w.residual, 1e-12);
    snprintf(what, sizeof what, "%s: group flags say which residuals are above the threshold", spec);
    check_true(w.unflagged_above == 0, what, "%d wrong", w.unflagged_above);
    /* per-group totals sum to the ungrouped totals */
    const double *totals = lca_trainer_lca_totals(trainer);
    const double *group_totals = lca_trainer_group_totals(trainer);
    size_t k = lca_model_parameter_count(model);
    double worst_total = 0;
    for (size_t i = 0; i < k; i++) {
        double sum = 0, scale = 0;
        for (int g = 0; g < 10; g++) {
            sum += group_totals[g * k + i];
            scale += fabs(group_totals[g * k + i]);
        }
        if (scale > 0 && fabs(sum - totals[i]) / scale > worst_total)
            worst_total = fabs(sum - totals[i]) / scale;
    }
    snprintf(what, sizeof what, "%s: Σ_g per-group totals vs totals (relative per parameter)", spec);
    check_le(what, worst_total, 1e-12);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

/* A batch-norm net: a group's residual relative to its change, over a run
 * at a threshold that refines (1e-6): the masked gradient integrates to
 * that group's loss change. */
static void test_batchnorm_residuals(const lca_dataset *data, const uint32_t *ids) {
    lca_model *model;
    run_options o = {.spec = BN_NET, .groups = ids, .group_count = 10, .threshold = 1e-7};
    lca_trainer *trainer = make_trainer(&model, data, &o);
    lca_record record;
    double worst = 0, largest_change = 0;
    for (int it = 0; it < ITERATIONS; it++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        for (int g = 0; g < 10; g++) {
            double lca = 0;
            for (size_t t = 0; t < lca_model_tensor_count(model); t++)
                lca += record.train.group_lca[g * lca_model_tensor_count(model) + t];
            double change = record.train.group_residual[g] + lca;
            if (fabs(change) > largest_change) largest_change = fabs(change);
            if (fabs(record.train.group_residual[g]) > worst) worst = fabs(record.train.group_residual[g]);
        }
    }
    check_le("batch norm: worst |group residual| / largest |group change| (threshold 1e-7)",
             worst / largest_change, 1e-4);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

/* The MLP against the float64 reference: lca_attribute_groups between two
 * parameter vectors on the first 400 examples; each group's LCA per tensor
 * vs (n_g/N)·the reference Simpson LCA on the group's examples alone. */
static void test_reference(const lca_dataset *data, const uint32_t *ids) {
    lca_set_threads(1);
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, MLP, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 3);
    ref_mlp ref;
    if (!ref_mlp_from_model(&ref, model)) return;
    size_t k = lca_model_parameter_count(model), t = lca_model_tensor_count(model);
    float *from = test_alloc(k * sizeof(float)), *to = test_alloc(k * sizeof(float));
    memcpy(from, lca_model_parameters(model), k * sizeof(float));
    test_rng rng;
    test_rng_seed(&rng, 11);
    for (size_t i = 0; i < k; i++) to[i] = from[i] + (float)(0.05 * test_rng_normal(&rng));
    enum { N = 400 };
    uint32_t indices[N];
    for (uint32_t i = 0; i < N; i++) indices[i] = i;
    lca_config config = lca_config_default();
    config.example_groups = ids;
    config.example_group_count = lca_dataset_count(data);
    config.group_count = 10;
    config.lca_max_subintervals = 8;
    config.lca_threshold = 0.0; /* always 8 sub-intervals */
    lca_record record;
    double tensor_lca[16], first_order[16], group_lca[10 * 16], losses[30];
    uint64_t counts[48];
    uint32_t flags[10];
    REQUIRE_OK(lca_attribute_groups(model, from, to, data, indices, N, &config, &record, tensor_lca,
                                    first_order, counts, group_lca, losses, flags));
    check_true(record.train.subintervals == 8, "attribute: 8 sub-intervals", "%u",
               record.train.subintervals);
    float *x;
    int32_t *labels;
    float *targets;
    test_gather_all(data, 0, &x, &labels, &targets);
    float *gx = test_alloc(N * 64 * sizeof(float));
    int32_t glabels[N];
    double *per = test_alloc(k * sizeof(double));
    double worst_lca = 0, worst_loss = 0, largest = 0;
    for (uint32_t g = 0; g < 10; g++) {
        size_t m = 0;
        for (uint32_t i = 0; i < N; i++)
            if (ids[i] == g) {
                memcpy(gx + m * 64, x + (size_t)i * 64, 64 * sizeof(float));
                glabels[m++] = labels[i];
            }
        if (m == 0) continue;
        double loss_from, loss_to;
        ref_simpson_lca(&ref, from, to, gx, glabels, NULL, m, 8, per, &loss_from, &loss_to);
        double share = (double)m / N;
        for (size_t j = 0; j < t; j++) {
            lca_tensor_info info;
            REQUIRE_OK(lca_model_tensor(model, j, &info));
            double sum = 0;
            for (size_t i = info.offset; i < info.offset + info.count; i++) sum += per[i];
            sum *= share;
            if (fabs(sum) > largest) largest = fabs(sum);
            double d = fabs(sum - group_lca[g * t + j]);
            if (d > worst_lca) worst_lca = d;
        }
        double dl = fmax(fabs(losses[g] - loss_from) / loss_from, fabs(losses[10 + g] - loss_to) / loss_to);
        if (dl > worst_loss) worst_loss = dl;
    }
    check_le("group LCA per tensor vs the float64 reference on the group's examples × n_g/N "
             "(relative to max |LCA|)", worst_lca / largest, 1e-6);
    check_le("group losses before and after vs the float64 reference (relative)", worst_loss, 1e-6);
    free(x);
    free(labels);
    free(gx);
    free(per);
    free(from);
    free(to);
    lca_model_free(model);
}

/* With and without groups: the totals differ by rounding only. */
static void test_against_ungrouped(const lca_dataset *data, const char *spec, const uint32_t *ids) {
    lca_model *a, *b;
    run_options with = {.spec = spec, .groups = ids, .group_count = 10};
    run_options without = {.spec = spec};
    lca_trainer *ta = make_trainer(&a, data, &with), *tb = make_trainer(&b, data, &without);
    size_t t = lca_model_tensor_count(a);
    double worst = 0;
    lca_record ra, rb;
    for (int it = 0; it < ITERATIONS; it++) {
        REQUIRE_OK(lca_trainer_step(ta, &ra));
        REQUIRE_OK(lca_trainer_step(tb, &rb));
        double largest = test_max_abs(rb.train.tensor_lca, t);
        double d = test_max_abs_diff(ra.train.tensor_lca, rb.train.tensor_lca, t) / largest;
        if (d > worst) worst = d;
        if (rb.train.group_lca || rb.train.group_count)
            test_fail("a run without groups has group fields");
    }
    char what[200];
    snprintf(what, sizeof what, "%s: tensor LCA with vs without groups (relative to max |LCA|)", spec);
    check_le(what, worst, 1e-6);
    lca_trainer_free(ta);
    lca_trainer_free(tb);
    lca_model_free(a);
    lca_model_free(b);
}

/* The whole log of a run, read back (malloc'ed). */
static uint8_t *run_log(const lca_dataset *data, const run_options *o, const char *name, size_t *n,
                        size_t *record_size) {
    lca_model *model;
    lca_trainer *trainer = make_trainer(&model, data, o);
    const char *path = test_temp_path(name);
    lca_log *log;
    REQUIRE_OK(lca_log_open(&log, path, trainer));
    lca_record record;
    for (int it = 0; it < ITERATIONS; it++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        REQUIRE_OK(lca_log_write(log, &record));
    }
    REQUIRE_OK(lca_log_close(log));
    if (record_size) *record_size = lca_log_record_size(trainer);
    lca_trainer_free(trainer);
    lca_model_free(model);
    return test_read_bytes(path, n);
}

static void test_determinism(const lca_dataset *data, const char *spec, const uint32_t *ids) {
    size_t n0;
    run_options base = {.spec = spec, .groups = ids, .group_count = 10, .threads = 1};
    uint8_t *reference = run_log(data, &base, "groups-reference.log", &n0, NULL);
    struct { int threads; size_t chunk, budget; } variants[] = {
        {2, 0, 0}, {1, 1, 0}, {2, 7, 0}, {2, 100, 0}, {1, 0, 60000}, {2, 0, 60000}, {2, 50, 0}};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        if (variants[v].budget && strcmp(spec, MLP) == 0) continue; /* batch norm's sub-chunks */
        /* the block net (slow in tiny sub-chunks): 2 threads, and sub-chunks of 50 */
        if (strcmp(spec, BLOCK_NET) == 0 && !(v == 0 || variants[v].chunk == 50)) continue;
        run_options o = base;
        o.threads = variants[v].threads;
        o.eval_chunk = variants[v].chunk;
        o.memory_budget = variants[v].budget;
        size_t n;
        uint8_t *bytes = run_log(data, &o, "groups-variant.log", &n, NULL);
        size_t differ = n == n0 ? 0 : 1;
        for (size_t i = 0; i < n && i < n0; i++) differ += bytes[i] != reference[i];
        check_true(differ == 0, "the same log bytes with groups",
                   "%s: %d thread(s), chunk %zu, budget %zu: %zu of %zu bytes differ", spec,
                   o.threads, o.eval_chunk, o.memory_budget, differ, n0);
        free(bytes);
    }
    free(reference);
}

static void test_log(const lca_dataset *data) {
    size_t n_plain, n_groups, n_odd, size_plain, size_groups, size_odd;
    size_t count = lca_dataset_count(data);
    uint32_t *ids3 = test_alloc(count * sizeof(uint32_t));
    for (size_t i = 0; i < count; i++) ids3[i] = (uint32_t)(i % 3);
    uint32_t *ids = class_ids(data);
    run_options plain = {.spec = MLP}, groups = {.spec = MLP, .groups = ids, .group_count = 10};
    run_options odd = {.spec = MLP, .groups = ids3, .group_count = 3};
    uint8_t *a = run_log(data, &plain, "plain.log", &n_plain, &size_plain);
    uint8_t *b = run_log(data, &groups, "groups.log", &n_groups, &size_groups);
    uint8_t *c = run_log(data, &odd, "odd.log", &n_odd, &size_odd);
    size_t t = 4;
    size_t per_view10 = 10 * t * 8 + 3 * 10 * 8 + 10 * 4, per_view3 = 3 * t * 8 + 3 * 3 * 8 + 3 * 4 + 4;
    check_true(size_groups == size_plain + 2 * per_view10 && size_odd == size_plain + 2 * per_view3,
               "record size grows by the group fields of each view (G = 10; G = 3 with group_reserved)",
               "%zu, %zu, %zu", size_plain, size_groups, size_odd);
    const char *header = (const char *)b + 24;
    check_true(strstr(header, "\"groups\": {\"source\": \"class\", \"names\": [\"0\", \"1\"") != NULL,
               "header has groups with source and names", "%.80s", strstr(header, "\"groups\""));
    check_true(strstr(header, "\"name\": \"val_group_lca\"") && !strstr(header, "group_reserved"),
               "G = 10: val_group_lca listed, no group_reserved", "");
    check_true(strstr((const char *)c + 24, "\"name\": \"val_group_reserved\"") != NULL,
               "G = 3: val_group_reserved listed", "");
    check_true(!strstr((const char *)a + 24, "group_"), "no group fields without groups", "");
    free(a);
    free(b);
    free(c);
    free(ids3);
    free(ids);
}

static void test_state(const lca_dataset *data, const uint32_t *ids) {
    lca_model *a, *b;
    run_options o = {.spec = MLP, .groups = ids, .group_count = 10, .totals = 1};
    lca_trainer *ta = make_trainer(&a, data, &o);
    lca_record r;
    for (int it = 0; it < 3; it++) REQUIRE_OK(lca_trainer_step(ta, &r));
    const char *state = test_temp_path("state.safetensors");
    REQUIRE_OK(lca_trainer_save_state(ta, state));
    const char *totals = test_temp_path("group-totals.safetensors");
    REQUIRE_OK(lca_group_totals_save(totals, ta));
    for (int it = 0; it < 3; it++) REQUIRE_OK(lca_trainer_step(ta, &r));
    lca_trainer *tb = make_trainer(&b, data, &o);
    REQUIRE_OK(lca_trainer_load_state(tb, state));
    for (int it = 0; it < 3; it++) REQUIRE_OK(lca_trainer_step(tb, &r));
    size_t k = lca_model_parameter_count(a);
    check_true(memcmp(lca_trainer_group_totals(ta), lca_trainer_group_totals(tb),
                      10 * k * sizeof(double)) == 0,
               "group totals after a state save and load: the same bytes", "");
    size_t n;
    uint8_t *bytes = test_read_bytes(totals, &n);
    check_true(bytes && memmem(bytes, n, "\"fc1.weight@3\"", 14) && memmem(bytes, n, "\"fc2.bias@9\"", 12),
               "group totals file names its tensors <tensor>@<group>", "%zu bytes", n);
    free(bytes);
    /* a state without the group totals is refused by a run with them */
    lca_model *c;
    run_options plain = {.spec = MLP};
    lca_trainer *tc = make_trainer(&c, data, &plain);
    const char *plain_state = test_temp_path("plain-state.safetensors");
    REQUIRE_OK(lca_trainer_save_state(tc, plain_state));
    lca_status status = lca_trainer_load_state(tb, plain_state);
    check_true(status != LCA_OK && strstr(lca_last_error(), "lca.group_total.0.") != NULL,
               "a state without group totals is refused, naming the tensor", "%s", lca_last_error());
    lca_trainer_free(ta);
    lca_trainer_free(tb);
    lca_trainer_free(tc);
    lca_model_free(a);
    lca_model_free(b);
    lca_model_free(c);
}

static void expect_error(const lca_dataset *data, lca_config config, const char *fragment,
                         const char *what) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, MLP, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_trainer *trainer = NULL;
    lca_status status = lca_trainer_new(&trainer, model, data, &config);
    check_true(status != LCA_OK && strstr(lca_last_error(), fragment) != NULL, what, "%s: %s",
               lca_status_string(status), lca_last_error());
    lca_trainer_free(trainer);
    lca_model_free(model);
}

static void test_errors(const lca_dataset *data, const uint32_t *ids) {
    size_t count = lca_dataset_count(data);
    uint32_t *bad = test_alloc(count * sizeof(uint32_t));
    memcpy(bad, ids, count * sizeof(uint32_t));
    bad[123] = 10;
    lca_config c = lca_config_default();
    c.iterations = 1;
    c.example_groups = bad;
    c.example_group_count = count;
    c.group_count = 10;
    expect_error(data, c, "group id 10 of example 123", "an id out of range names the example");
    c.example_groups = ids;
    c.example_group_count = count - 1;
    expect_error(data, c, "1796 group ids for a data set of 1797", "a wrong count names both");
    c.example_group_count = count;
    c.group_count = 0;
    expect_error(data, c, "0 groups", "zero groups refused");
    c.group_count = LCA_MAX_GROUPS + 1;
    expect_error(data, c, "expected 1 to", "too many groups refused");
    lca_config d = lca_config_default();
    d.lca_group_totals = 1;
    expect_error(data, d, "per-group totals need loss groups", "totals without groups refused");
    free(bad);
}

int main(void) {
    test_begin("test_example_groups");
    ITERATIONS = test_size(6, 3);
    test_temp_dir_make("groups");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    uint32_t *ids = class_ids(data);
    test_split(data, MLP, ids);
    test_split(data, BN_NET, ids);
    test_batchnorm_residuals(data, ids);
    test_reference(data, ids);
    test_against_ungrouped(data, MLP, ids);
    test_against_ungrouped(data, BN_NET, ids);
    test_determinism(data, MLP, ids);
    test_determinism(data, BN_NET, ids);
    test_determinism(data, BLOCK_NET, ids);
    test_log(data);
    test_state(data, ids);
    test_errors(data, ids);
    free(ids);
    lca_dataset_free(data);
    return test_finish();
}
