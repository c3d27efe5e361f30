/* trainer.c: splits, minibatches, the training step and the optimizers;
 * each step hands the parameter move to the LCA integrator. All buffers are
 * allocated in lca_trainer_new; lca_trainer_step allocates nothing. */
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lca_config lca_config_default(void) {
    lca_config c;
    memset(&c, 0, sizeof c);
    c.seed = 1;
    c.optimizer = LCA_OPTIMIZER_MOMENTUM;
    c.learning_rate = 0.01;
    c.momentum = 0.9;
    c.adam_beta1 = 0.9;
    c.adam_beta2 = 0.999;
    c.adam_epsilon = 1e-8;
    c.weight_decay = 0.0;
    c.batch_size = 250;
    c.iterations = 0;
    c.validation = LCA_VALIDATION_DEFAULT;
    c.lca = 1;
    c.lca_subset = 0;
    c.lca_validation_view = 0;
    c.lca_threshold = 0.001;
    c.lca_max_subintervals = LCA_MAX_SUBINTERVALS;
    c.eval_chunk = 0;
    c.lca_units = 0;
    c.bn_group = LCA_BN_GROUP_DEFAULT;
    /* two LeNet workers of 512 fit it; ResNet-20's group of 250 only
     * recomputing its blocks (docs/memory.md, "The default budget") */
    c.memory_budget = (size_t)512 << 20;
    c.lca_histogram = 1;
    return c;
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Fisher–Yates shuffle of order[0, count) from stream of seed. */
static void shuffle(uint32_t *order, size_t count, uint64_t seed, uint64_t stream) {
    lca_rng rng;
    lca_rng_seed(&rng, seed, stream);
    for (size_t i = count; i > 1; i--) {
        size_t j = (size_t)lca_rng_below(&rng, i);
        uint32_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

/* A seeded permutation of [0, count). */
static void permutation(uint32_t *order, size_t count, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < count; i++) order[i] = (uint32_t)i;
    shuffle(order, count, seed, stream);
}

/* Shuffle of the training split for one epoch: depends only on seed and
 * epoch, so a resumed run reproduces it. */
void lca_trainer_reshuffle(lca_trainer *tr) {
    memcpy(tr->order, tr->train_indices, tr->train_count * sizeof(uint32_t));
    shuffle(tr->order, tr->train_count, tr->config.seed,
            LCA_STREAM_SHUFFLE + ((uint64_t)tr->epoch << 8));
}

static void *allocate(lca_trainer *tr, size_t bytes) {
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - 63) return NULL; /* cannot be rounded up: out of memory */
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p) {
        memset(p, 0, bytes);
        tr->bytes += bytes;
    }
    return p;
}

static lca_status validate_config(const lca_config *c, const lca_dataset *data,
                                  const lca_model *model) {
    if (c->batch_size == 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "batch size must be at least 1");
    lca_status checked = lca_check_bn_group(c);
    if (checked != LCA_OK) return checked;
    if (!(c->learning_rate >= 0.0) || !isfinite(c->learning_rate))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "learning rate must be finite and >= 0, not %g",
                        c->learning_rate);
    if (!(c->momentum >= 0.0 && c->momentum < 1.0))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "momentum must be in [0, 1), not %g", c->momentum);
    if (!(c->weight_decay >= 0.0) || !isfinite(c->weight_decay))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "weight decay must be finite and >= 0, not %g",
                        c->weight_decay);
    if (c->optimizer == LCA_OPTIMIZER_ADAM &&
        !(c->adam_beta1 >= 0 && c->adam_beta1 < 1 && c->adam_beta2 >= 0 && c->adam_beta2 < 1 &&
          c->adam_epsilon > 0))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "Adam needs beta1, beta2 in [0, 1) and epsilon > 0");
    if (c->optimizer != LCA_OPTIMIZER_SGD && c->optimizer != LCA_OPTIMIZER_MOMENTUM &&
        c->optimizer != LCA_OPTIMIZER_ADAM)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "unknown optimizer %d", (int)c->optimizer);
    return lca_model_check_data(model, data);
}

size_t lca_validation_size(size_t count, size_t validation) {
    if (validation != LCA_VALIDATION_DEFAULT) return validation;
    return count / 10 < 5000 ? count / 10 : 5000;
}

/* A split must leave training examples; validation is resolved. */
static lca_status check_split(const lca_dataset *data, size_t validation) {
    if (validation >= data->count)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "validation split of %zu leaves no training examples (data set %s has %zu)",
                        validation, lca_dataset_source(data), data->count);
    return LCA_OK;
}

lca_status lca_dataset_split(const lca_dataset *data, size_t validation, uint64_t seed,
                             uint32_t *training, uint32_t *held_out) {
    size_t count = data->count;
    validation = lca_validation_size(count, validation);
    lca_status checked = check_split(data, validation);
    if (checked != LCA_OK) return checked;
    uint32_t *order = malloc(count * sizeof(uint32_t));
    if (!order) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "split: out of memory");
    permutation(order, count, seed, LCA_STREAM_VALIDATION_SPLIT);
    if (held_out) {
        memcpy(held_out, order, validation * sizeof(uint32_t));
        qsort(held_out, validation, sizeof(uint32_t), compare_u32);
    }
    memcpy(training, order + validation, (count - validation) * sizeof(uint32_t));
    qsort(training, count - validation, sizeof(uint32_t), compare_u32);
    free(order);
    return LCA_OK;
}

/* Hold out the validation split by seed; the training split keeps the
 * remaining examples in ascending order. */
static lca_status make_splits(lca_trainer *tr) {
    size_t count = tr->data->count;
    size_t validation = lca_validation_size(count, tr->config.validation);
    lca_status status = check_split(tr->data, validation);
    if (status != LCA_OK) return status;
    tr->validation_count = validation;
    tr->train_count = count - validation;
    tr->train_indices = allocate(tr, tr->train_count * sizeof(uint32_t));
    tr->validation_indices = allocate(tr, (validation ? validation : 1) * sizeof(uint32_t));
    tr->order = allocate(tr, tr->train_count * sizeof(uint32_t));
    if (!tr->train_indices || !tr->validation_indices || !tr->order)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "trainer: out of memory for the splits");
    status = lca_dataset_split(tr->data, validation, tr->config.seed, tr->train_indices,
                               tr->validation_indices);
    if (status != LCA_OK) return status;

    /* LCA evaluation set: the whole training split, or a seeded subset */
    size_t subset = tr->config.lca_subset;
    if (subset == 0 || subset >= tr->train_count) {
        tr->evaluation_indices = tr->train_indices;
        tr->evaluation_count = tr->train_count;
    } else {
        uint32_t *pick = malloc(tr->train_count * sizeof(uint32_t));
        tr->evaluation_indices = allocate(tr, subset * sizeof(uint32_t));
        if (!pick || !tr->evaluation_indices) {
            free(pick);
            return lca_fail(LCA_ERR_OUT_OF_MEMORY, "trainer: out of memory for the LCA subset");
        }
        permutation(pick, tr->train_count, tr->config.seed, LCA_STREAM_LCA_SUBSET);
        for (size_t i = 0; i < subset; i++) tr->evaluation_indices[i] = tr->train_indices[pick[i]];
        qsort(tr->evaluation_indices, subset, sizeof(uint32_t), compare_u32);
        free(pick);
        tr->evaluation_count = subset;
        tr->owns_evaluation_indices = true;
    }
    return LCA_OK;
}

/* What a trainer needs at least, before it allocates any of it: per
 * parameter the gradient, the parameters before the step, the optimizer's
 * state, and with LCA the totals, help counts, the probe, one evaluation
 * worker's unit gradient and exact sum and each view's four float64 vectors; the batch's input and
 * workspace, and one evaluation chunk's. Compared with the machine's
 * memory (lca_memory_check): a model that cannot fit is refused with the
 * bytes it would need rather than killed by the kernel part-way. (The
 * model's own parameters are counted too: they are allocated already; and
 * the copy of the state that lca_trainer_save_state and
 * lca_trainer_load_state stage.) */
static lca_status check_memory(const lca_trainer *tr, size_t batch) {
    const lca_model *model = tr->model;
    const lca_config *c = &tr->config;
    size_t k = model->parameter_count;
    size_t per_parameter = 4 /* parameters */ + 4 /* gradient */ + 4 /* before */;
    if (c->optimizer == LCA_OPTIMIZER_MOMENTUM) per_parameter += 4;
    if (c->optimizer == LCA_OPTIMIZER_ADAM) per_parameter += 8;
    size_t state = 4 + (per_parameter - 12); /* parameters and optimizer state */
    if (c->lca) per_parameter += 8 /* totals */ + 4 /* helped */ + 4 /* probe */ +
                                 20 /* a worker's unit gradient, exact sum */ + 32 * (c->lca_validation_view ? 2 : 1);
    if (c->lca) state += 12; /* totals and help counts */
    if (c->lca && c->example_groups) {
        /* per group: each view's four vectors, a worker's exact sum, the
         * totals (and their staged copy) */
        size_t views = c->lca_validation_view ? 2 : 1;
        size_t group = 32 * views + 16 + (c->lca_group_totals ? 16 : 0);
        per_parameter = lca_size_mul_add(group, c->group_count, per_parameter);
        if (c->lca_group_totals) state = lca_size_mul_add(8, c->group_count, state);
    }
    per_parameter += state; /* saving or resuming the state stages a copy of it */
    size_t in = lca_model_input_size(model);
    size_t bytes = lca_size_mul_add(k, per_parameter, 0);
    size_t train_chunk = lca_model_train_chunk(model, batch, c->memory_budget);
    bytes = lca_size_mul_add(lca_model_input_rows(model, train_chunk), in * sizeof(float), bytes);
    /* the batch's labels and (regression) targets */
    size_t outs = tr->data->targets ? lca_model_output_size(model) : 0;
    bytes = lca_size_mul_add(batch, lca_size_mul_add(outs, sizeof(float), sizeof(int32_t)), bytes);
    /* the minibatch's pass: in sub-chunks that fit the memory budget */
    size_t workspace = lca_model_workspace_need(model, train_chunk);
    if (!lca_size_add(bytes, workspace, &bytes)) bytes = SIZE_MAX;
    if (c->lca && c->eval_chunk > batch) {
        size_t chunk = lca_model_workspace_need(model, c->eval_chunk);
        if (!lca_size_add(bytes, chunk - (workspace < chunk ? workspace : chunk), &bytes))
            bytes = SIZE_MAX;
        bytes = lca_size_mul_add(lca_model_input_rows(model, c->eval_chunk), in * sizeof(float), bytes);
    }
    if (in > SIZE_MAX / sizeof(float)) bytes = SIZE_MAX;
    char what[240];
    size_t spec_length = strlen(model->spec);
    snprintf(what, sizeof what, "training model \"%.100s%s\" (%zu parameters, %zu bytes a parameter%s)",
             model->spec, spec_length > 100 ? "…" : "", k, per_parameter,
             c->lca ? " with LCA" : "");
    return lca_memory_check(bytes, what, "try a smaller model, --batch-size or --eval-chunk");
}

lca_status lca_trainer_new(lca_trainer **out, lca_model *model, const lca_dataset *data,
                           const lca_config *config) {
    *out = NULL;
    lca_status status = validate_config(config, data, model);
    if (status != LCA_OK) return status;
    lca_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "trainer: out of memory");
    tr->model = model;
    tr->data = data;
    if (config->lca_group_totals && !config->example_groups) {
        free(tr);
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "per-group totals need loss groups");
    }
    tr->config = *config;
    tr->config.example_groups = NULL;
    tr->config.group_source = NULL;
    if (config->example_groups && config->lca) {
        /* the trainer's own copies (the caller's arrays may go) */
        size_t count = config->example_group_count;
        tr->example_groups = malloc((count ? count : 1) * sizeof(uint32_t));
        const char *source = config->group_source ? config->group_source : "";
        tr->group_source = malloc(strlen(source) + 1);
        if (!tr->example_groups || !tr->group_source) {
            free(tr->example_groups);
            free(tr->group_source);
            free(tr);
            return lca_fail(LCA_ERR_OUT_OF_MEMORY, "trainer: out of memory for the loss groups");
        }
        memcpy(tr->example_groups, config->example_groups, count * sizeof(uint32_t));
        strcpy(tr->group_source, source);
        tr->config.example_groups = tr->example_groups;
        tr->config.group_source = tr->group_source;
    } else {
        tr->config.example_group_count = 0;
        tr->config.group_count = 0;
        tr->config.lca_group_totals = 0;
    }
    /* a residual net keeps every activation when the budget holds them,
     * else recomputes (docs/memory.md): before any chunk is resolved */
    lca_model_fit_layout(model, config->lca ? config->eval_chunk : SIZE_MAX, config->bn_group,
                         config->batch_size, config->memory_budget);
    /* a budget that holds no evaluation chunk is refused (the integrator
     * sees the resolved chunk below) */
    if (config->lca && config->eval_chunk == 0) {
        status = lca_model_check_budget(model, lca_model_accumulation_unit(model, config->bn_group),
                                        config->memory_budget);
        if (status != LCA_OK) {
            free(tr);
            return status;
        }
    }
    /* the resolved chunk is part of the run's configuration (and its log) */
    tr->config.eval_chunk = lca_model_resolve_chunk(model, config->eval_chunk, config->bn_group,
                                                    config->memory_budget);
    config = &tr->config;
    status = make_splits(tr);
    if (status != LCA_OK) goto fail;
    if (config->lca_validation_view && tr->validation_count == 0) {
        status = lca_fail(LCA_ERR_INVALID_ARGUMENT,
                          "the validation view of LCA needs a validation split (validation > 0)");
        goto fail;
    }

    size_t k = model->parameter_count, t = model->tensor_count;
    size_t in = lca_model_input_size(model), outs = lca_model_output_size(model);
    size_t batch = config->batch_size < tr->train_count ? config->batch_size : tr->train_count;
    tr->batch_capacity = batch;
    /* the minibatch in sub-chunks when its workspace would exceed the
     * budget (pass.c, the group pass): the same bytes */
    status = lca_model_check_budget(model, batch, config->memory_budget);
    if (status != LCA_OK) goto fail;
    tr->train_chunk = lca_model_train_chunk(model, batch, config->memory_budget);
    status = check_memory(tr, batch);
    if (status != LCA_OK) goto fail;
    tr->gradient = allocate(tr, k * sizeof(float));
    tr->before = allocate(tr, k * sizeof(float));
    tr->lr_scale = allocate(tr, t * sizeof(double));
    tr->x = allocate(tr, lca_model_input_rows(model, tr->train_chunk) * in * sizeof(float));
    tr->labels = allocate(tr, batch * sizeof(int32_t));
    tr->targets = data->targets ? allocate(tr, batch * outs * sizeof(float)) : NULL;
    if (config->optimizer == LCA_OPTIMIZER_MOMENTUM) tr->velocity = allocate(tr, k * sizeof(float));
    if (config->optimizer == LCA_OPTIMIZER_ADAM) {
        tr->adam_m = allocate(tr, k * sizeof(float));
        tr->adam_v = allocate(tr, k * sizeof(float));
    }
    if (!tr->gradient || !tr->before || !tr->lr_scale || !tr->x || !tr->labels ||
        (data->targets && !tr->targets) ||
        (config->optimizer == LCA_OPTIMIZER_MOMENTUM && !tr->velocity) ||
        (config->optimizer == LCA_OPTIMIZER_ADAM && (!tr->adam_m || !tr->adam_v))) {
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "trainer: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < t; i++) tr->lr_scale[i] = 1.0;
    status = lca_model_reserve(model, tr->train_chunk);
    if (status != LCA_OK) goto fail;

    if (config->lca) {
        tr->lca_totals = allocate(tr, k * sizeof(double));
        tr->helped_counts = allocate(tr, k * sizeof(uint32_t));
        if (!tr->lca_totals || !tr->helped_counts) {
            status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "trainer: out of memory for LCA totals");
            goto fail;
        }
        if (config->lca_group_totals && config->example_groups) {
            size_t bytes = lca_size_mul_add(lca_size_mul_add(k, config->group_count, 0),
                                            sizeof(double), 0);
            tr->group_totals = bytes == SIZE_MAX ? NULL : allocate(tr, bytes);
            if (!tr->group_totals) {
                status = lca_fail(LCA_ERR_OUT_OF_MEMORY,
                                  "trainer: out of memory for the per-group totals (%u groups × "
                                  "%zu parameters)", config->group_count, k);
                goto fail;
            }
            memset(tr->group_totals, 0, bytes);
        }
        status = lca_integrator_init(&tr->integrator, model, config, data->targets != NULL);
        if (status != LCA_OK) goto fail;
        status = lca_view_init(&tr->train_view, &tr->integrator, data, tr->evaluation_indices,
                               tr->evaluation_count);
        if (status != LCA_OK) goto fail;
        if (config->lca_validation_view) {
            status = lca_view_init(&tr->validation_view, &tr->integrator, data,
                                   tr->validation_indices, tr->validation_count);
            if (status != LCA_OK) goto fail;
        }
    }
    lca_trainer_reshuffle(tr);
    *out = tr;
    return LCA_OK;
fail:
    lca_trainer_free(tr);
    return status;
}

void lca_trainer_free(lca_trainer *tr) {
    if (!tr) return;
    lca_view_release(&tr->train_view);
    lca_view_release(&tr->validation_view);
    lca_integrator_release(&tr->integrator);
    free(tr->train_indices);
    free(tr->validation_indices);
    if (tr->owns_evaluation_indices) free(tr->evaluation_indices);
    free(tr->order);
    free(tr->gradient);
    free(tr->before);
    free(tr->lr_scale);
    free(tr->x);
    free(tr->labels);
    free(tr->targets);
    free(tr->velocity);
    free(tr->adam_m);
    free(tr->adam_v);
    free(tr->lca_totals);
    free(tr->helped_counts);
    free(tr->group_totals);
    free(tr->example_groups);
    free(tr->group_source);
    free(tr);
}

/* The optimizer update of one tensor's slice [begin, end) with learning
 * rate lr; gradient already includes weight decay. */
static void optimizer_update(lca_trainer *tr, size_t begin, size_t end, double lr) {
    float *theta = tr->model->parameters;
    const float *grad = tr->gradient;
    const lca_config *c = &tr->config;
    switch (c->optimizer) {
    case LCA_OPTIMIZER_SGD:
        for (size_t i = begin; i < end; i++) theta[i] = (float)(theta[i] - lr * grad[i]);
        break;
    case LCA_OPTIMIZER_MOMENTUM: {
        float mu = (float)c->momentum;
        for (size_t i = begin; i < end; i++) {
            tr->velocity[i] = mu * tr->velocity[i] + grad[i];
            theta[i] = (float)(theta[i] - lr * tr->velocity[i]);
        }
        break;
    }
    case LCA_OPTIMIZER_ADAM: {
        double step = (double)(tr->iteration + 1);
        double correction1 = 1.0 - pow(c->adam_beta1, step);
        double correction2 = 1.0 - pow(c->adam_beta2, step);
        float b1 = (float)c->adam_beta1, b2 = (float)c->adam_beta2;
        for (size_t i = begin; i < end; i++) {
            float g = grad[i];
            tr->adam_m[i] = b1 * tr->adam_m[i] + (1.0f - b1) * g;
            tr->adam_v[i] = b2 * tr->adam_v[i] + (1.0f - b2) * g * g;
            double m_hat = tr->adam_m[i] / correction1;
            double v_hat = tr->adam_v[i] / correction2;
            theta[i] = (float)(theta[i] - lr * m_hat / (sqrt(v_hat) + c->adam_epsilon));
        }
        break;
    }
    }
}

/* The first non-finite value of `values` (one per parameter), named by its
 * tensor and element: "iteration 12: the gradient of fc1.weight (element
 * 301) is nan: training diverged". */
static lca_status check_finite(const lca_trainer *tr, const float *values, const char *what) {
    const lca_model *m = tr->model;
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_tensor *tensor = &m->tensors[t];
        for (size_t i = 0; i < tensor->count; i++) {
            float v = values[tensor->offset + i];
            if (!isfinite(v))
                return lca_fail(LCA_ERR_NUMERIC,
                                "iteration %llu: the %s of %s (element %zu) is %s: training diverged",
                                (unsigned long long)tr->iteration + 1, what, tensor->name, i,
                                isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        }
    }
    return LCA_OK;
}

/* The allocated loss of a view: its losses, total and per-tensor LCA. */
static lca_status check_view(const lca_trainer *tr, const lca_view_record *v, const char *view) {
    const char *what = !isfinite(v->loss_before) ? "loss before the step"
                     : !isfinite(v->loss_after)  ? "loss after the step"
                     : !isfinite(v->lca_total)   ? "total LCA" : NULL;
    double value = !isfinite(v->loss_before) ? v->loss_before
                 : !isfinite(v->loss_after)  ? v->loss_after : v->lca_total;
    if (what)
        return lca_fail(LCA_ERR_NUMERIC, "iteration %llu: the %s %s is %g: training diverged",
                        (unsigned long long)tr->iteration, view, what, value);
    for (size_t t = 0; v->tensor_lca && t < tr->model->tensor_count; t++)
        if (!isfinite(v->tensor_lca[t]))
            return lca_fail(LCA_ERR_NUMERIC,
                            "iteration %llu: the %s LCA of %s is %g: training diverged",
                            (unsigned long long)tr->iteration, view, tr->model->tensors[t].name,
                            v->tensor_lca[t]);
    return LCA_OK;
}

/* A view's evaluation diverged: its loss is not finite, or a gradient left
 * the exact sum's range (integrator.c), whose message names the tensor. */
static lca_status view_diverged(const lca_trainer *tr, const char *view) {
    const char *message = lca_last_error();
    if (strstr(message, "loss is not finite"))
        return lca_fail(LCA_ERR_NUMERIC, "iteration %llu: the %s loss is not finite: training "
                        "diverged", (unsigned long long)tr->iteration, view);
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", message);
    char *cut = strstr(copy, ": training diverged");
    if (cut) *cut = '\0'; /* said once, below */
    return lca_fail(LCA_ERR_NUMERIC, "iteration %llu: %s view: %s: training diverged",
                    (unsigned long long)tr->iteration, view, copy);
}

lca_status lca_trainer_step(lca_trainer *tr, lca_record *record) {
    lca_model *m = tr->model;
    size_t k = m->parameter_count;
    memset(record, 0, sizeof *record);

    /* the minibatch: the next examples of this epoch's shuffle; the last
     * batch of an epoch may be smaller so that every example is used */
    if (tr->position >= tr->train_count) {
        tr->epoch++;
        tr->position = 0;
        lca_trainer_reshuffle(tr);
    }
    size_t n = tr->train_count - tr->position;
    if (n > tr->batch_capacity) n = tr->batch_capacity;
    bool streams = lca_model_streams_input(m);
    /* a minibatch beyond the memory budget goes in sub-chunks, each
     * gathered when its pass needs it */
    bool chunked = !streams && n > tr->train_chunk;
    lca_dataset_gather(tr->data, tr->order + tr->position, n, streams || chunked ? NULL : tr->x,
                       tr->labels, tr->targets);

    /* parameters changed outside the trainer since the last step (a loaded
     * checkpoint, a user's edit): the LCA start point must be recomputed */
    if (tr->config.lca && memcmp(tr->before, m->parameters, k * sizeof(float)) != 0) {
        tr->train_view.have_start = false;
        tr->validation_view.have_start = false;
    }
    memcpy(tr->before, m->parameters, k * sizeof(float));

    /* dropout masks come from a stream of the seed and the iteration, so a
     * resumed run draws the same ones */
    lca_rng dropout;
    lca_rng_seed(&dropout, tr->config.seed, LCA_STREAM_DROPOUT + (tr->iteration << 8));
    double batch_loss_sum;
    lca_model_input input = {.x = streams ? NULL : tr->x, .data = tr->data,
                             .indices = tr->order + tr->position, .rows = tr->x};
    lca_group_input group = {.data = tr->data, .indices = tr->order + tr->position,
                             .x_rows = tr->x, .labels = tr->data->labels ? tr->labels : NULL,
                             .targets = tr->data->targets ? tr->targets : NULL};
    lca_status status =
        chunked ? lca_model_train_gradient_group(m, &group, n, tr->train_chunk, &batch_loss_sum,
                                                 tr->gradient, &dropout)
                : lca_model_train_gradient(m, &input, tr->data->labels ? tr->labels : NULL,
                                           tr->data->targets ? tr->targets : NULL, n,
                                           &batch_loss_sum, tr->gradient, &dropout);
    if (status == LCA_ERR_NUMERIC)
        return lca_fail(LCA_ERR_NUMERIC, "iteration %llu: the minibatch loss is not finite: "
                        "training diverged", (unsigned long long)tr->iteration + 1);
    if (status != LCA_OK) return status;
    status = check_finite(tr, tr->gradient, "gradient");
    if (status != LCA_OK) return status;

    if (tr->config.weight_decay > 0.0) {
        float wd = (float)tr->config.weight_decay;
        for (size_t i = 0; i < k; i++) tr->gradient[i] += wd * m->parameters[i];
    }
    for (size_t t = 0; t < m->tensor_count; t++) {
        if (tr->lr_scale[t] == 0.0) continue; /* frozen: no move, no optimizer state change */
        const lca_tensor *tensor = &m->tensors[t];
        optimizer_update(tr, tensor->offset, tensor->offset + tensor->count,
                         tr->config.learning_rate * tr->lr_scale[t]);
    }
    status = check_finite(tr, m->parameters, "updated value");
    if (status != LCA_OK) return status;

    record->iteration = tr->iteration + 1;
    record->epoch = tr->epoch;
    record->batch_loss = batch_loss_sum / (double)n;
    tr->position += n;
    tr->iteration++;

    if (tr->config.lca) {
        status = lca_view_step_groups(&tr->integrator, &tr->train_view, tr->before,
                                      m->parameters, &record->train, tr->lca_totals,
                                      tr->helped_counts, tr->group_totals);
        if (status == LCA_ERR_NUMERIC) return view_diverged(tr, "training-split");
        if (status == LCA_OK) status = check_view(tr, &record->train, "training-split");
        if (status != LCA_OK) return status;
        if (tr->config.lca_validation_view) {
            status = lca_view_step(&tr->integrator, &tr->validation_view, tr->before,
                                   m->parameters, &record->validation, NULL, NULL);
            if (status == LCA_ERR_NUMERIC) return view_diverged(tr, "validation");
            if (status == LCA_OK) status = check_view(tr, &record->validation, "validation");
            if (status != LCA_OK) return status;
            record->has_validation = 1;
        }
    }
    /* remember θ_{t+1} to notice changes made between steps */
    memcpy(tr->before, m->parameters, k * sizeof(float));
    /* the record goes to the attached log straight from the core's arrays */
    if (tr->log) return lca_log_write(tr->log, record);
    return LCA_OK;
}

lca_status lca_trainer_set_log(lca_trainer *tr, lca_log *log) {
    tr->log = log;
    return LCA_OK;
}

const lca_config *lca_trainer_config(const lca_trainer *tr) { return &tr->config; }

size_t lca_trainer_accumulation_unit(const lca_trainer *tr) {
    return lca_model_accumulation_unit(tr->model, tr->config.bn_group);
}
uint64_t lca_trainer_iteration(const lca_trainer *tr) { return tr->iteration; }
size_t lca_trainer_training_count(const lca_trainer *tr) { return tr->train_count; }
size_t lca_trainer_validation_count(const lca_trainer *tr) { return tr->validation_count; }
size_t lca_trainer_evaluation_count(const lca_trainer *tr) { return tr->evaluation_count; }
const double *lca_trainer_lca_totals(const lca_trainer *tr) { return tr->lca_totals; }
const uint32_t *lca_trainer_helped_counts(const lca_trainer *tr) { return tr->helped_counts; }
const double *lca_trainer_group_totals(const lca_trainer *tr) { return tr->group_totals; }
const uint64_t *lca_trainer_group_examples(const lca_trainer *tr, int validation) {
    if (!tr->config.lca || tr->integrator.group_count == 0) return NULL;
    const lca_view *v = validation ? &tr->validation_view : &tr->train_view;
    return v->group_examples;
}

size_t lca_trainer_memory_bytes(const lca_trainer *tr) {
    return tr->bytes + tr->integrator.bytes + tr->model->parameter_count * sizeof(float) +
           lca_model_workspace_bytes(tr->model);
}

void lca_trainer_memory_use(const lca_trainer *tr, lca_memory_use *out) {
    const lca_model *m = tr->model;
    const lca_dataset *d = tr->data;
    const lca_integrator *g = &tr->integrator;
    memset(out, 0, sizeof *out);
    size_t k = m->parameter_count, in = lca_model_input_size(m), outs = lca_model_output_size(m);
    size_t batch = tr->batch_capacity;
    /* the trainer's copy of the minibatch (its rows for a pass, its
     * labels) goes with the data: the budget bounds the workers' */
    size_t minibatch = lca_model_input_rows(m, tr->train_chunk) * in * sizeof(float) +
                       batch * sizeof(int32_t) + (d->targets ? batch * outs * sizeof(float) : 0);
    size_t workspace = lca_model_workspace_bytes(m);
    for (size_t i = 0; i < g->worker_count; i++) {
        const lca_eval_worker *w = &g->workers[i];
        if (i > 0) workspace += lca_model_workspace_bytes(w->model);
        workspace += lca_model_input_rows(m, g->chunk) * in * sizeof(float) +
                     g->chunk * sizeof(int32_t) + (d->targets ? g->chunk * outs * sizeof(float) : 0);
    }
    out->first_layer_bytes = tr->train_view.first_bytes + tr->validation_view.first_bytes;
    workspace += out->first_layer_bytes;
    size_t accumulator = g->worker_count * k * (sizeof(float) + 2 * sizeof(int64_t));
    size_t indices = (2 * tr->train_count + tr->validation_count +
                      (tr->owns_evaluation_indices ? tr->evaluation_count : 0)) * sizeof(uint32_t);
    size_t total = lca_trainer_memory_bytes(tr);
    size_t arrays = d->count * d->features * (d->pixels ? 1 : sizeof(float)) +
                    (d->labels ? d->count * sizeof(int32_t) : 0) +
                    (d->targets ? d->count * d->outputs * sizeof(float) : 0);
    out->data_bytes = arrays + indices + minibatch;
    out->accumulator_bytes = accumulator;
    out->workspace_bytes = workspace;
    size_t rest = workspace + accumulator + indices + minibatch;
    out->parameter_bytes = total > rest ? total - rest : 0;
    out->workers = g->worker_count;
    out->eval_chunk = tr->config.lca ? g->chunk : 0;
    out->train_chunk = tr->train_chunk;
    out->memory_budget = tr->config.memory_budget;
    out->activations = lca_model_recomputes(m)          ? LCA_ACTIVATIONS_RECOMPUTED
                       : m->segment_count > 1 ? LCA_ACTIVATIONS_KEPT
                                              : LCA_ACTIVATIONS_ALL;
    out->keep_all_budget = m->segment_count > 1 ? m->keep_all_budget : 0;
}

lca_status lca_trainer_set_tensor_lr_scale(lca_trainer *tr, const char *name, double scale) {
    long index = lca_model_find_tensor(tr->model, name);
    if (index < 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model %s has no tensor named \"%s\"",
                        lca_model_spec(tr->model), name);
    if (!(scale >= 0.0) || !isfinite(scale))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "learning-rate scale of %s must be finite and >= 0, not %g", name, scale);
    tr->lr_scale[index] = scale;
    return LCA_OK;
}
