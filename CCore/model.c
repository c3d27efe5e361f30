/* model.c: the model's layout, built from a parsed spec (model_spec.c):
 * layers with their shapes, the tensors (PyTorch names and shapes) in one
 * parameter allocation, the unit groups of per-unit LCA, the workspace a
 * pass of N examples needs, and evaluation workers that share the layout.
 * Separate from the pass (pass.c) and the kernels (layers_*.c, loss.c):
 * this file decides where every float lives, and computes nothing with
 * them beyond initialisation.
 *
 * Layout: parameters are one float array; tensor k occupies
 * [offset_k, offset_k + count_k). Gradients, optimizer state and LCA
 * accumulators elsewhere use the same layout, so the optimizer and the LCA
 * integrator are flat loops. */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ layout */

static lca_tensor *add_tensor(lca_model *m, const char *layer, const char *kind, int rank,
                              const int64_t *shape, lca_init_kind init, size_t fan_in, long group) {
    lca_tensor *t = &m->tensors[m->tensor_count++];
    snprintf(t->name, sizeof t->name, "%s.%s", layer, kind);
    t->rank = rank;
    t->count = 1;
    for (int d = 0; d < rank; d++) {
        t->shape[d] = shape[d];
        if (!lca_size_mul(t->count, (size_t)shape[d], &t->count)) m->too_large = true;
    }
    if (!lca_size_add(m->parameter_count, t->count, &(size_t){0})) m->too_large = true;
    t->init = init;
    t->fan_in = fan_in;
    t->unit_group = group;
    t->offset = m->parameter_count;
    m->parameter_count += t->count;
    return t;
}

static long add_unit_group(lca_model *m, const char *name, size_t units) {
    lca_unit_group *g = &m->unit_groups[m->unit_group_count];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->units = units;
    g->offset = m->unit_count;
    if (!lca_size_add(m->unit_count, units, &m->unit_count)) m->too_large = true;
    return (long)m->unit_group_count++;
}

static void conv_shape(lca_conv2d_shape *s, size_t c, size_t h, size_t w, size_t oc, size_t k,
                       size_t stride, bool valid) {
    memset(s, 0, sizeof *s);
    s->c = c;
    s->h = h;
    s->w = w;
    s->oc = oc;
    s->kh = s->kw = k;
    s->stride = stride;
    /* PyTorch's padding = k // 2 for "same"; OH = ⌊(H + 2P − K)/S⌋ + 1 */
    s->pad_h = s->pad_w = valid ? 0 : (k - 1) / 2;
    s->oh = (h + 2 * s->pad_h - k) / stride + 1;
    s->ow = (w + 2 * s->pad_w - k) / stride + 1;
}

/* A layer that cannot be built: the spec, the layer's position and text,
 * and why (with the sizes). */
static lca_status layer_error(const lca_spec *ps, const lca_layer_request *r, const char *format,
                              ...) LCA_PRINTF_LIKE(3, 4);
static lca_status layer_error(const lca_spec *ps, const lca_layer_request *r, const char *format,
                              ...) {
    char reason[512];
    va_list args;
    va_start(args, format);
    vsnprintf(reason, sizeof reason, format, args);
    va_end(args);
    if (!r->text)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": %s", ps->text, reason);
    return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": layer %zu \"%.*s\": %s",
                    ps->text, r->position, (int)r->text_length, r->text, reason);
}

/* Segments for recomputation (model.h): cut before every block's begin
 * layer. A net with dropout keeps everything (its masks would be drawn
 * again), and so does a net without blocks (one segment). */
static void plan_segments(lca_model *m) {
    m->segment_count = 0;
    bool dropout = false;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        dropout |= L->kind == LCA_LAYER_DROPOUT;
        if (l == 0 || L->kind == LCA_LAYER_BLOCK_BEGIN) m->segment_start[m->segment_count++] = l;
    }
    m->segment_start[m->segment_count] = m->layer_count;
    if (dropout) {
        m->segment_count = 1;
        m->segment_start[1] = m->layer_count;
    }
}

static lca_status build(lca_model *m, const lca_spec *ps) {
    size_t c = ps->input[0], h = ps->input[1], w = ps->input[2];
    size_t input_size;
    if (!lca_size_mul(c, h, &input_size) || !lca_size_mul(input_size, w, &input_size))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "model spec \"%s\": input %zu×%zu×%zu has more than 2^64 values",
                        ps->text, c, h, w);
    m->in_c = c;
    m->in_h = h;
    m->in_w = w;
    size_t counters[4] = {0}; /* conv, fc, bn, proj */
    char name[32];
    long open_block = -1;
    size_t block_c = 0, block_h = 0, block_w = 0;
    for (size_t l = 0; l < ps->count; l++) {
        const lca_layer_request *r = &ps->layers[l];
        lca_layer *L = &m->layers[m->layer_count++];
        L->kind = r->kind;
        L->weight = L->bias = LCA_NO_TENSOR;
        L->in_c = c;
        L->in_h = h;
        L->in_w = w;
        switch (r->kind) {
        case LCA_LAYER_DENSE: {
            size_t in = c * h * w;
            snprintf(name, sizeof name, "fc%zu", ++counters[1]);
            long group = add_unit_group(m, name, r->units);
            int64_t ws[2] = {(int64_t)r->units, (int64_t)in}, bs[1] = {(int64_t)r->units};
            L->weight = (size_t)(add_tensor(m, name, "weight", 2, ws, LCA_INIT_HE_NORMAL, in, group) - m->tensors);
            L->bias = (size_t)(add_tensor(m, name, "bias", 1, bs, LCA_INIT_ZERO, 0, group) - m->tensors);
            c = r->units;
            h = w = 1;
            break;
        }
        case LCA_LAYER_CONV2D: {
            /* the padded plane must hold the kernel: else the output would
             * be 0×0 (and its size arithmetic would wrap) */
            size_t pad = r->valid ? 0 : (r->k - 1) / 2;
            if (r->k > h + 2 * pad || r->k > w + 2 * pad)
                return layer_error(ps, r,
                                   "kernel %zu×%zu does not fit its %zu×%zu input%s (the output "
                                   "would be 0×0; every layer's output must be at least 1×1)",
                                   r->k, r->k, h, w,
                                   r->valid ? " with valid padding" : " with same padding");
            conv_shape(&L->conv, c, h, w, r->units, r->k, r->stride, r->valid);
            snprintf(name, sizeof name, "conv%zu", ++counters[0]);
            long group = add_unit_group(m, name, r->units);
            int64_t ws[4] = {(int64_t)r->units, (int64_t)c, (int64_t)r->k, (int64_t)r->k};
            int64_t bs[1] = {(int64_t)r->units};
            L->weight = (size_t)(add_tensor(m, name, "weight", 4, ws, LCA_INIT_HE_NORMAL, c * r->k * r->k, group) - m->tensors);
            L->bias = (size_t)(add_tensor(m, name, "bias", 1, bs, LCA_INIT_ZERO, 0, group) - m->tensors);
            c = r->units;
            h = L->conv.oh;
            w = L->conv.ow;
            break;
        }
        case LCA_LAYER_MAXPOOL:
        case LCA_LAYER_AVGPOOL: {
            size_t k = r->global ? h : r->k, stride = r->global ? 1 : r->stride;
            if (r->global && h != w)
                return layer_error(ps, r, "global pooling needs a square input, not %zu×%zu", h, w);
            if (k > h || k > w)
                return layer_error(ps, r,
                                   "pooling window %zu×%zu does not fit its %zu×%zu input (the "
                                   "output would be 0×0; every layer's output must be at least 1×1)",
                                   k, k, h, w);
            L->k = k;
            L->stride = stride;
            h = (h - k) / stride + 1;
            w = (w - k) / stride + 1;
            break;
        }
        case LCA_LAYER_BATCHNORM: {
            snprintf(name, sizeof name, "bn%zu", ++counters[2]);
            long group = add_unit_group(m, name, c);
            int64_t s[1] = {(int64_t)c};
            L->weight = (size_t)(add_tensor(m, name, "weight", 1, s, LCA_INIT_ONE, 0, group) - m->tensors);
            L->bias = (size_t)(add_tensor(m, name, "bias", 1, s, LCA_INIT_ZERO, 0, group) - m->tensors);
            L->running_mean = calloc(4 * c, sizeof(float)); /* mean, var, batch mean, batch var */
            if (!L->running_mean) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
            L->running_var = L->running_mean + c;
            for (size_t i = 0; i < c; i++) L->running_var[i] = 1.0f;
            break;
        }
        case LCA_LAYER_DROPOUT:
            L->p = r->p;
            break;
        case LCA_LAYER_RELU:
        case LCA_LAYER_FLATTEN:
            break;
        case LCA_LAYER_BLOCK_BEGIN:
            if (open_block >= 0)
                return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                                "model spec \"%s\": residual blocks cannot nest", ps->text);
            open_block = (long)(m->layer_count - 1);
            block_c = c;
            block_h = h;
            block_w = w;
            break;
        case LCA_LAYER_BLOCK_ADD: {
            L->block_begin = (size_t)open_block;
            open_block = -1;
            if (block_c != c || block_h != h || block_w != w) {
                /* shapes differ: a 1×1 projection of the block input, with the
                 * stride that maps its plane onto the main path's */
                size_t stride = (block_h + h - 1) / h;
                L->projection = true;
                conv_shape(&L->projection_shape, block_c, block_h, block_w, c, 1, stride, true);
                if (L->projection_shape.oh != h || L->projection_shape.ow != w)
                    return layer_error(ps, r,
                                       "no 1×1 projection maps the block input %zu×%zu×%zu onto "
                                       "%zu×%zu×%zu",
                                       block_c, block_h, block_w, c, h, w);
                snprintf(name, sizeof name, "proj%zu", ++counters[3]);
                long group = add_unit_group(m, name, c);
                int64_t ws[4] = {(int64_t)c, (int64_t)block_c, 1, 1}, bs[1] = {(int64_t)c};
                L->weight = (size_t)(add_tensor(m, name, "weight", 4, ws, LCA_INIT_HE_NORMAL, block_c, group) - m->tensors);
                L->bias = (size_t)(add_tensor(m, name, "bias", 1, bs, LCA_INIT_ZERO, 0, group) - m->tensors);
            }
            break;
        }
        }
        L->out_c = c;
        L->out_h = h;
        L->out_w = w;
        size_t out_size;
        if (!lca_size_mul(c, h, &out_size) || !lca_size_mul(out_size, w, &out_size) ||
            m->too_large)
            return layer_error(ps, r,
                               "its output %zu×%zu×%zu or its parameters overflow a %zu-bit size",
                               c, h, w, sizeof(size_t) * 8);
        if (h == 0 || w == 0) /* never: the checks above keep every plane at least 1×1 */
            return layer_error(ps, r, "its output would be %zu×%zu", h, w);
        L->in_size = L->in_c * L->in_h * L->in_w; /* the last layer's out_size, checked */
        L->out_size = out_size;
        /* backward writes gradients of layer outputs only (none for the
         * model's input); a block's shortcut gradient has the size of its
         * input (a begin layer's output) */
        if (L->out_size > m->max_gradient) m->max_gradient = L->out_size;
        if ((L->kind == LCA_LAYER_BLOCK_BEGIN || L->kind == LCA_LAYER_BLOCK_ADD) &&
            L->out_size > m->max_skip)
            m->max_skip = L->out_size;
    }
    if (open_block >= 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": a residual block is not closed",
                        ps->text);
    if (m->layer_count == 0 || m->tensor_count == 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": has no parameters", ps->text);
    if (m->layers[0].kind == LCA_LAYER_RELU)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": cannot start with relu", ps->text);
    plan_segments(m);
    return LCA_OK;
}

lca_status lca_model_new(lca_model **out, const char *spec, lca_loss_kind loss) {
    *out = NULL;
    if (!spec) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec is NULL");
    if (loss != LCA_LOSS_SOFTMAX_CROSS_ENTROPY && loss != LCA_LOSS_MEAN_SQUARED_ERROR)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "unknown loss kind %d", (int)loss);
    lca_spec *ps = malloc(sizeof *ps);
    if (!ps) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    lca_status status = lca_spec_parse(ps, spec);
    if (status != LCA_OK) {
        free(ps);
        return status;
    }
    lca_model *m = calloc(1, sizeof *m);
    if (!m) {
        free(ps);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    }
    m->loss = loss;
    m->bn_momentum = 0.1f;
    m->bn_epsilon = 1e-5f;
    /* at most two tensors and one unit group per layer */
    m->layers = calloc(ps->count, sizeof *m->layers);
    m->tensors = calloc(2 * ps->count, sizeof *m->tensors);
    m->unit_groups = calloc(ps->count, sizeof *m->unit_groups);
    const char *canonical = lca_spec_canonical(spec);
    m->spec = malloc(strlen(canonical) + 1);
    if (!m->layers || !m->tensors || !m->unit_groups || !m->spec) {
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    } else {
        strcpy(m->spec, canonical);
        status = build(m, ps);
    }
    if (status == LCA_OK && loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && lca_model_output_size(m) < 2)
        status = lca_fail(LCA_ERR_INVALID_ARGUMENT,
                          "model spec \"%s\": softmax cross-entropy needs at least 2 outputs", spec);
    if (status == LCA_OK) {
        /* refused before allocation when it cannot fit (calloc of a size
         * beyond physical memory may succeed and then be killed) */
        char what[200];
        snprintf(what, sizeof what, "model \"%.100s%s\" (%zu parameters)", m->spec,
                 strlen(m->spec) > 100 ? "…" : "", m->parameter_count);
        status = lca_memory_check(lca_size_mul_add(m->parameter_count, sizeof(float), 0), what,
                                  "try a smaller model");
    }
    if (status == LCA_OK) {
        m->parameters = calloc(m->parameter_count, sizeof(float));
        if (!m->parameters) status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "model \"%s\": out of memory", spec);
    }
    free(ps);
    if (status != LCA_OK) {
        lca_model_free(m);
        return status;
    }
    *out = m;
    return LCA_OK;
}

lca_status lca_model_new_worker(const lca_model *m, lca_model **out) {
    *out = NULL;
    lca_model *w = malloc(sizeof *w);
    lca_layer *layers = malloc(m->layer_count * sizeof *layers);
    if (!w || !layers) {
        free(w);
        free(layers);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory for an evaluation worker");
    }
    *w = *m;
    memcpy(layers, m->layers, m->layer_count * sizeof *layers);
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &layers[l];
        L->output = L->saved = L->saved_mean = L->saved_invstd = NULL;
        L->argmax = NULL;
        L->mask = NULL;
        L->group_sums = NULL;
        L->group_mean = NULL;
    }
    w->layers = layers;
    w->worker = true;
    w->max_batch = 0;
    w->workspace = NULL;
    w->workspace_bytes = 0;
    w->grad_a = w->grad_b = w->grad_skip = w->conv_scratch = NULL;
    w->example_loss = NULL;
    *out = w;
    return LCA_OK;
}

void lca_model_free(lca_model *m) {
    if (!m) return;
    if (m->worker) {
        free(m->layers);
        free(m->workspace);
        free(m);
        return;
    }
    for (size_t l = 0; l < m->layer_count; l++) free(m->layers[l].running_mean);
    free(m->spec);
    free(m->layers);
    free(m->tensors);
    free(m->unit_groups);
    free(m->parameters);
    free(m->workspace);
    free(m);
}

const char *lca_model_spec(const lca_model *m) { return m->spec; }
lca_loss_kind lca_model_loss(const lca_model *m) { return m->loss; }
size_t lca_model_input_size(const lca_model *m) { return m->in_c * m->in_h * m->in_w; }
size_t lca_model_output_size(const lca_model *m) { return m->layers[m->layer_count - 1].out_size; }
size_t lca_model_parameter_count(const lca_model *m) { return m->parameter_count; }
size_t lca_model_tensor_count(const lca_model *m) { return m->tensor_count; }
float *lca_model_parameters(lca_model *m) { return m->parameters; }
const float *lca_model_parameters_const(const lca_model *m) { return m->parameters; }

size_t lca_model_batchnorm_count(const lca_model *m) {
    size_t n = 0;
    for (size_t l = 0; l < m->layer_count; l++) n += m->layers[l].kind == LCA_LAYER_BATCHNORM;
    return n;
}

lca_status lca_model_tensor(const lca_model *m, size_t index, lca_tensor_info *out) {
    if (index >= m->tensor_count)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "tensor index %zu out of range (model has %zu)",
                        index, m->tensor_count);
    const lca_tensor *t = &m->tensors[index];
    out->name = t->name;
    out->rank = t->rank;
    for (int d = 0; d < LCA_MAX_RANK; d++) out->shape[d] = d < t->rank ? t->shape[d] : 0;
    out->offset = t->offset;
    out->count = t->count;
    return LCA_OK;
}

long lca_model_find_tensor(const lca_model *m, const char *name) {
    for (size_t i = 0; i < m->tensor_count; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return (long)i;
    return -1;
}

size_t lca_model_unit_count(const lca_model *model) { return model->unit_count; }

size_t lca_model_unit_group_count(const lca_model *model) { return model->unit_group_count; }

lca_status lca_model_unit_group(const lca_model *model, size_t index, lca_unit_group_info *out) {
    if (index >= model->unit_group_count)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model %s has %zu unit groups, not %zu",
                        model->spec, model->unit_group_count, index + 1);
    out->name = model->unit_groups[index].name;
    out->units = model->unit_groups[index].units;
    out->offset = model->unit_groups[index].offset;
    return LCA_OK;
}

lca_status lca_model_check_data(const lca_model *model, const lca_dataset *data) {
    if (lca_dataset_features(data) != lca_model_input_size(model))
        return lca_fail(LCA_ERR_MISMATCH,
                        "data set %s has %zu features per example but model %s takes %zu inputs",
                        lca_dataset_source(data), lca_dataset_features(data),
                        lca_model_spec(model), lca_model_input_size(model));
    /* a conv net reads its input as an image: an image data set must match
     * (flat data sets, 1×1×F, are taken as they are) */
    if ((model->in_h > 1 || model->in_w > 1) && data->height > 1 &&
        (data->channels != model->in_c || data->height != model->in_h ||
         data->width != model->in_w))
        return lca_fail(LCA_ERR_MISMATCH,
                        "data set %s holds %zu×%zu×%zu images (channels × height × width) but "
                        "model %s takes %zu×%zu×%zu",
                        lca_dataset_source(data), data->channels, data->height, data->width,
                        lca_model_spec(model), model->in_c, model->in_h, model->in_w);
    if (data->targets) {
        if (model->loss != LCA_LOSS_MEAN_SQUARED_ERROR)
            return lca_fail(LCA_ERR_MISMATCH,
                            "data set %s has float targets: use the mean-squared-error loss",
                            lca_dataset_source(data));
        if (data->outputs != lca_model_output_size(model))
            return lca_fail(LCA_ERR_MISMATCH,
                            "data set %s has %zu targets per example but model %s has %zu outputs",
                            lca_dataset_source(data), data->outputs, lca_model_spec(model),
                            lca_model_output_size(model));
    } else if ((size_t)data->classes > lca_model_output_size(model)) {
        return lca_fail(LCA_ERR_MISMATCH,
                        "data set %s has %d classes but model %s has only %zu outputs",
                        lca_dataset_source(data), data->classes, lca_model_spec(model),
                        lca_model_output_size(model));
    }
    return LCA_OK;
}

void lca_model_initialize(lca_model *m, uint64_t seed) {
    lca_rng rng;
    lca_rng_seed(&rng, seed, LCA_STREAM_INIT);
    for (size_t k = 0; k < m->tensor_count; k++) {
        const lca_tensor *t = &m->tensors[k];
        float *p = m->parameters + t->offset;
        if (t->init == LCA_INIT_ZERO || t->init == LCA_INIT_ONE) {
            for (size_t i = 0; i < t->count; i++) p[i] = t->init == LCA_INIT_ONE ? 1.0f : 0.0f;
            continue;
        }
        double std = sqrt(2.0 / (double)t->fan_in); /* He et al. 2015, for ReLU */
        for (size_t i = 0; i < t->count; i++) p[i] = (float)(std * lca_rng_normal(&rng));
    }
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &m->layers[l];
        if (L->kind != LCA_LAYER_BATCHNORM) continue;
        for (size_t i = 0; i < L->out_c; i++) {
            L->running_mean[i] = 0.0f;
            L->running_var[i] = 1.0f;
        }
    }
}

/* ------------------------------------------------------------ workspace */

#define ROUND16(x) (((x) + 15) & ~(size_t)15)

/* What one layer needs per call of n examples, in floats (each buffer
 * rounded to 16 floats so that all start 64-byte aligned). */
static size_t layer_floats(const lca_model *m, size_t l, size_t n) {
    const lca_layer *L = &m->layers[l];
    size_t out = ROUND16(n * L->out_size);
    switch (L->kind) {
    case LCA_LAYER_DENSE:
    case LCA_LAYER_CONV2D:
    case LCA_LAYER_AVGPOOL:
        return out;
    case LCA_LAYER_MAXPOOL:
        return 2 * out; /* output and argmax */
    case LCA_LAYER_BATCHNORM:
        return 2 * out + 2 * ROUND16(n * L->out_c); /* y, x̂, group statistics */
    case LCA_LAYER_DROPOUT:
        return out + ROUND16((n * L->out_size + 3) / 4); /* y and the byte mask */
    case LCA_LAYER_BLOCK_ADD:
        return L->projection ? 2 * out : out;
    case LCA_LAYER_RELU: {
        /* in place, but never on the caller's input (reached through
         * identity layers) */
        size_t before = l;
        while (before > 0 && (m->layers[before - 1].kind == LCA_LAYER_FLATTEN ||
                              m->layers[before - 1].kind == LCA_LAYER_DROPOUT ||
                              m->layers[before - 1].kind == LCA_LAYER_BLOCK_BEGIN))
            before--;
        return before == 0 ? out : 0;
    }
    case LCA_LAYER_FLATTEN:
    case LCA_LAYER_BLOCK_BEGIN:
        return 0;
    }
    return 0;
}

static size_t conv_workspace(const lca_model *m, size_t n) {
    size_t most = 0;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        lca_conv2d_shape s;
        if (L->kind == LCA_LAYER_CONV2D) s = L->conv;
        else if (L->kind == LCA_LAYER_BLOCK_ADD && L->projection) s = L->projection_shape;
        else continue;
        s.n = n;
        size_t need = lca_conv2d_workspace_floats(&s);
        if (need > most) most = need;
    }
    return ROUND16(most);
}

/* Floats of a batch-norm layer's group state (model.h: group_sums, four
 * lca_bn_sum a channel, then group_mean), rounded to 16. */
static size_t group_state_floats(const lca_layer *L) {
    size_t bytes = L->out_c * (4 * sizeof(lca_bn_sum) + sizeof(double));
    return ROUND16((bytes + sizeof(float) - 1) / sizeof(float));
}

bool lca_model_recomputes(const lca_model *m) { return m->segment_count > 1 && !m->store_all; }

/* A recomputing net's residual add writes its sum over its main path's
 * last output, a convolution's or a batch norm's: that output feeds only
 * the add, and neither layer's backward reads it (a convolution reads its
 * input, batch norm x̂). */
static bool add_in_place(const lca_model *m, size_t l) {
    const lca_layer *L = &m->layers[l];
    if (L->kind != LCA_LAYER_BLOCK_ADD || l == 0 || l - 1 == L->block_begin) return false;
    lca_layer_kind before = m->layers[l - 1].kind;
    return before == LCA_LAYER_BATCHNORM || before == LCA_LAYER_CONV2D;
}

/* The layers whose output a recomputing pass keeps (kept[l]): each
 * segment's output but the last's, i.e. the buffer that the next segment's
 * input points at, found through the in-place and identity layers before
 * it. */
static void mark_kept(const lca_model *m, bool *kept) {
    memset(kept, 0, m->layer_count * sizeof *kept);
    for (size_t s = 0; s + 1 < m->segment_count; s++) {
        for (size_t e = m->segment_start[s + 1]; e-- > m->segment_start[s];) {
            if (layer_floats(m, e, 1) > 0 && !add_in_place(m, e)) {
                kept[e] = true;
                break;
            }
        }
    }
}

/* Buffers laid out in floats from base (NULL: only counted): kept ones one
 * after another, a recomputing net's others in the region its segments
 * share (from arena_base, each segment from its start). */
typedef struct placer {
    float *base;
    bool segments;
    size_t kept, arena_base, arena, most;
} placer;

static float *place(placer *p, bool kept, size_t floats) {
    size_t at;
    if (kept || !p->segments) {
        at = p->kept;
        p->kept += floats;
    } else {
        at = p->arena_base + p->arena;
        p->arena += floats;
        if (p->arena > p->most) p->most = p->arena;
    }
    return p->base ? p->base + at : NULL;
}

/* One round of the layout: the backward buffers, then every layer's
 * buffers (into target's layers unless NULL). */
static void place_layers(const lca_model *m, size_t rows, placer *p, lca_model *target) {
    bool kept[LCA_MAX_LAYERS];
    if (p->segments) mark_kept(m, kept);
    else memset(kept, 1, m->layer_count * sizeof *kept);
    size_t gradient_floats = ROUND16(rows * m->max_gradient);
    size_t skip_floats = ROUND16(rows * m->max_skip);
    float *grad_a = place(p, true, gradient_floats), *grad_b = place(p, true, gradient_floats);
    float *grad_skip = place(p, true, skip_floats);
    if (target) {
        target->grad_a = grad_a;
        target->grad_b = grad_b;
        target->grad_skip = skip_floats ? grad_skip : NULL;
    }
    size_t segments = p->segments ? m->segment_count : 1;
    for (size_t s = 0; s < segments; s++) {
        p->arena = 0;
        size_t last = p->segments ? m->segment_start[s + 1] : m->layer_count;
        for (size_t l = p->segments ? m->segment_start[s] : 0; l < last; l++) {
            const lca_layer *C = &m->layers[l];
            size_t out = ROUND16(rows * C->out_size);
            float *output = NULL, *saved = NULL, *mean = NULL, *invstd = NULL, *extra = NULL;
            float *group = NULL;
            if (C->kind == LCA_LAYER_BATCHNORM) group = place(p, true, group_state_floats(C));
            bool in_place = p->segments && add_in_place(m, l);
            if (layer_floats(m, l, rows) > 0 && !in_place) {
                output = place(p, kept[l], out); /* rows × out_size */
                switch (C->kind) {
                case LCA_LAYER_MAXPOOL:
                    extra = place(p, false, out); /* argmax: rows × out_size */
                    break;
                case LCA_LAYER_BATCHNORM:
                    saved = place(p, false, out); /* x̂: rows × out_size */
                    /* groups × C: a group pass sets them before its sweeps */
                    mean = place(p, true, ROUND16(rows * C->out_c));
                    invstd = place(p, true, ROUND16(rows * C->out_c));
                    break;
                case LCA_LAYER_DROPOUT:
                    extra = place(p, false, ROUND16((rows * C->out_size + 3) / 4)); /* mask bytes */
                    break;
                default:
                    break;
                }
            }
            if (C->kind == LCA_LAYER_BLOCK_ADD && C->projection)
                saved = place(p, false, out); /* projection output: rows × out_size */
            if (!target) continue;
            lca_layer *L = &target->layers[l];
            L->output = in_place ? target->layers[l - 1].output : output;
            L->saved = saved;
            L->saved_mean = mean;
            L->saved_invstd = invstd;
            L->argmax = C->kind == LCA_LAYER_MAXPOOL ? (uint32_t *)(void *)extra : NULL;
            L->mask = C->kind == LCA_LAYER_DROPOUT ? (uint8_t *)(void *)extra : NULL;
            L->group_sums = (lca_bn_sum *)(void *)group; /* 4 × C */
            L->group_mean = group ? (double *)(void *)(L->group_sums + 4 * C->out_c) : NULL; /* C */
        }
    }
}

/* The workspace's floats for rows examples (and, with target, where each
 * buffer lies in base): what place_layers lays out, the convolution
 * scratch after it; then the example losses (rows doubles). */
static size_t lay_out(const lca_model *m, size_t rows, lca_model *target, float *base) {
    placer p = {.segments = lca_model_recomputes(m)};
    place_layers(m, rows, &p, NULL);
    size_t kept = p.kept, arena = p.most;
    if (target) {
        p = (placer){.base = base, .segments = p.segments, .arena_base = kept};
        place_layers(m, rows, &p, target);
        target->conv_scratch = base + kept + arena;
        target->example_loss = (double *)(void *)(base + kept + arena + conv_workspace(m, rows));
        target->recompute = p.segments;
    }
    return kept + arena + conv_workspace(m, rows);
}

static double workspace_floats_bound(const lca_model *m, size_t rows);

/* An upper bound, in doubles, of the floats lca_model_reserve computes for
 * rows examples: every term of layer_floats and conv_workspace at least as
 * large, so that when this bound is below 2^60 the exact size_t arithmetic
 * cannot wrap. */
static double workspace_floats_bound(const lca_model *m, size_t rows) {
    double n = (double)rows;
    double floats = 3 * (n * (double)m->max_gradient + 16) + n * (double)m->max_skip + 2 * n + 64;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        floats += 3 * n * (double)L->out_size + 2 * n * (double)L->out_c + 80 * (double)L->out_c + 64;
        const lca_conv2d_shape *c = L->kind == LCA_LAYER_CONV2D ? &L->conv
                                    : L->kind == LCA_LAYER_BLOCK_ADD && L->projection
                                        ? &L->projection_shape
                                        : NULL;
        if (c)
            floats += n * ((double)c->c * (double)c->kh * (double)c->kw + (double)c->oc) *
                          (double)c->oh * (double)c->ow + 16;
    }
    return floats;
}

size_t lca_model_workspace_need(const lca_model *m, size_t max_batch) {
    size_t rows = lca_model_input_rows(m, max_batch);
    if (workspace_floats_bound(m, rows) * sizeof(float) >= 0x1p60) return SIZE_MAX;
    return lay_out(m, rows, NULL, NULL) * sizeof(float) + ROUND16(rows) * sizeof(double);
}

lca_status lca_model_reserve(lca_model *m, size_t max_batch) {
    if (max_batch == 0) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: batch size 0");
    if (max_batch <= m->max_batch) return LCA_OK;
    char what[200];
    snprintf(what, sizeof what, "the workspace of model \"%.100s%s\" for %zu examples",
             m->spec, strlen(m->spec) > 100 ? "…" : "", max_batch);
    size_t bytes = lca_model_workspace_need(m, max_batch);
    lca_status status = lca_memory_check(bytes, what, "try a smaller --eval-chunk or --batch-size");
    if (status != LCA_OK) return status;
    void *w = aligned_alloc(64, bytes);
    if (!w)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY,
                        "model: cannot allocate %zu bytes of workspace for %zu examples (try a "
                        "smaller --eval-chunk or --batch-size)",
                        bytes, max_batch);
    free(m->workspace);
    m->workspace = w;
    m->workspace_bytes = bytes;
    m->max_batch = max_batch;
    /* an MLP's pass goes a block of rows at a time (run) */
    lay_out(m, lca_model_input_rows(m, max_batch), m, w);
    return LCA_OK;
}

size_t lca_model_workspace_bytes(const lca_model *m) { return m->workspace_bytes; }

size_t lca_model_accumulation_unit(const lca_model *m, size_t bn_group) {
    if (lca_model_batchnorm_count(m) > 0) return bn_group > 0 ? bn_group : 1;
    return LCA_ACCUMULATION_UNIT;
}

size_t lca_model_chunk_bytes(const lca_model *m, size_t chunk) {
    size_t bytes = lca_model_workspace_need(m, chunk);
    size_t rows = lca_model_input_rows(m, chunk);
    bytes = lca_size_mul_add(rows, lca_size_mul_add(lca_model_input_size(m), sizeof(float), 0),
                             bytes);
    return lca_size_mul_add(chunk, sizeof(int32_t), bytes);
}

/* The most examples, at most cap, whose lca_model_chunk_bytes fit budget
 * (0: not even one). The bytes grow with the chunk: a binary search. */
static size_t fit_chunk(const lca_model *m, size_t budget, size_t cap) {
    size_t low = 0, high = cap; /* low fits (or is 0), high + 1 does not */
    if (cap == 0 || lca_model_chunk_bytes(m, 1) > budget) return 0;
    while (low < high) {
        size_t middle = low + (high - low + 1) / 2;
        if (lca_model_chunk_bytes(m, middle) <= budget) low = middle;
        else high = middle - 1;
    }
    return low;
}

/* passes of equal size over n examples (500 of 512 would leave a pass of
 * 12): the fewest passes of at most chunk, shared evenly */
static size_t even_chunk(size_t n, size_t chunk) {
    size_t passes = (n + chunk - 1) / chunk;
    return (n + passes - 1) / passes;
}

size_t lca_model_min_chunk(const lca_model *m, size_t unit) {
    if (lca_model_streams_input(m)) return unit < LCA_INPUT_ROWS ? unit : LCA_INPUT_ROWS;
    return 1;
}

lca_status lca_model_check_budget(const lca_model *m, size_t unit, size_t memory_budget) {
    size_t chunk = lca_model_min_chunk(m, unit);
    size_t need = lca_model_chunk_bytes(m, chunk);
    if (memory_budget >= need) return LCA_OK;
    return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                    "a memory budget of %zu bytes cannot hold %zu example%s of model \"%.100s%s\": "
                    "the workspace of %s needs %zu bytes (%.1f MB); give --memory-budget at "
                    "least %zu",
                    memory_budget, chunk, chunk == 1 ? "" : "s", m->spec,
                    strlen(m->spec) > 100 ? "…" : "",
                    chunk == 1 ? "one example" : "one block of rows", need, (double)need / 1e6,
                    need);
}

size_t lca_model_resolve_chunk(const lca_model *m, size_t requested, size_t bn_group,
                               size_t memory_budget) {
    size_t unit = lca_model_accumulation_unit(m, bn_group);
    size_t chunk = requested;
    if (chunk == 0)
        chunk = fit_chunk(m, memory_budget, unit < LCA_MAX_AUTO_CHUNK ? unit : LCA_MAX_AUTO_CHUNK);
    if (chunk == 0) chunk = 1;
    if (chunk > unit) chunk = unit;
    chunk = even_chunk(unit, chunk);
    /* an MLP's passes keep its blocks of rows (pass.c) */
    if (lca_model_streams_input(m) && chunk % LCA_INPUT_ROWS)
        chunk += LCA_INPUT_ROWS - chunk % LCA_INPUT_ROWS;
    return chunk < unit ? chunk : unit;
}

size_t lca_model_train_chunk(const lca_model *m, size_t batch, size_t memory_budget) {
    /* an MLP's pass goes a block of rows at a time whatever the batch */
    if (lca_model_streams_input(m) || batch == 0) return batch;
    size_t chunk = fit_chunk(m, memory_budget, batch);
    return even_chunk(batch, chunk ? chunk : 1);
}

void lca_model_fit_layout(lca_model *m, size_t eval_chunk, size_t bn_group, size_t batch,
                          size_t memory_budget) {
    if (m->layout_chosen || m->workspace) return;
    m->layout_chosen = true;
    if (m->segment_count <= 1) return;
    bool forced = m->store_all;
    m->store_all = false;
    bool evaluates = eval_chunk != SIZE_MAX;
    size_t eval_again = evaluates ? lca_model_resolve_chunk(m, eval_chunk, bn_group, memory_budget) : 0;
    size_t train_again = lca_model_train_chunk(m, batch, memory_budget);
    m->store_all = true;
    /* what keeps every activation at the chunks of an unbounded budget */
    size_t eval_bytes =
        evaluates ? lca_model_chunk_bytes(m, lca_model_resolve_chunk(m, eval_chunk, bn_group, SIZE_MAX))
                  : 0;
    size_t train_bytes = batch > 0 ? lca_model_chunk_bytes(m, lca_model_train_chunk(m, batch, SIZE_MAX)) : 0;
    m->keep_all_budget = eval_bytes > train_bytes ? eval_bytes : train_bytes;
    bool same = (!evaluates ||
                 (lca_model_resolve_chunk(m, eval_chunk, bn_group, memory_budget) == eval_again &&
                  lca_model_chunk_bytes(m, eval_again) <= memory_budget)) &&
                (batch == 0 || (lca_model_train_chunk(m, batch, memory_budget) == train_again &&
                                lca_model_chunk_bytes(m, train_again) <= memory_budget));
    m->store_all = forced || same;
}

/* ------------------------------------------------------------ spec-level layers
 * lca_model_layer_count and lca_model_layer describe the model's layers as
 * the spec language writes them (docs/models.md), read back from the built
 * layout, so the parser stays the one reader of spec text: a residual
 * block's eight internal layers (begin, conv, bn, relu, conv, bn, add,
 * relu) are one LCA_SPEC_BLOCK; the input is entry 0. */

/* The spec-level layer that starts at internal layer *l, advancing *l past
 * it. */
static void spec_layer_at(const lca_model *m, size_t *l, lca_layer_spec *out) {
    const lca_layer *L = &m->layers[*l];
    *out = (lca_layer_spec){.stride = 1};
    (*l)++;
    switch (L->kind) {
    case LCA_LAYER_DENSE:
        out->kind = LCA_SPEC_DENSE;
        out->units = L->out_size;
        break;
    case LCA_LAYER_CONV2D:
        out->kind = LCA_SPEC_CONV;
        out->units = L->conv.oc;
        out->kernel = L->conv.kh;
        out->stride = L->conv.stride;
        out->valid = L->conv.kh > 1 && L->conv.pad_h == 0;
        break;
    case LCA_LAYER_RELU: out->kind = LCA_SPEC_RELU; break;
    case LCA_LAYER_MAXPOOL:
    case LCA_LAYER_AVGPOOL:
        out->kind = L->kind == LCA_LAYER_MAXPOOL ? LCA_SPEC_MAXPOOL : LCA_SPEC_AVGPOOL;
        if (L->kind == LCA_LAYER_AVGPOOL && L->k == L->in_h && L->k == L->in_w && L->stride == 1)
            out->kind = LCA_SPEC_GAP;
        else {
            out->kernel = L->k;
            out->stride = L->stride;
        }
        break;
    case LCA_LAYER_BATCHNORM: out->kind = LCA_SPEC_BATCHNORM; break;
    case LCA_LAYER_DROPOUT:
        out->kind = LCA_SPEC_DROPOUT;
        out->probability = (double)L->p;
        break;
    case LCA_LAYER_FLATTEN: out->kind = LCA_SPEC_FLATTEN; break;
    case LCA_LAYER_BLOCK_ADD: /* never first: a block starts with its begin layer */
        out->kind = LCA_SPEC_BLOCK;
        break;
    case LCA_LAYER_BLOCK_BEGIN: {
        /* the block's first conv follows; skip to past the relu after its
         * add */
        out->kind = LCA_SPEC_BLOCK;
        const lca_layer *first = &m->layers[*l];
        out->units = first->conv.oc;
        out->stride = first->conv.stride;
        while (*l < m->layer_count && m->layers[*l].kind != LCA_LAYER_BLOCK_ADD) (*l)++;
        if (*l < m->layer_count) (*l)++; /* the add */
        if (*l < m->layer_count && m->layers[*l].kind == LCA_LAYER_RELU) (*l)++;
        break;
    }
    }
}

size_t lca_model_layer_count(const lca_model *m) {
    size_t count = 1;
    lca_layer_spec layer;
    for (size_t l = 0; l < m->layer_count; count++) spec_layer_at(m, &l, &layer);
    return count;
}

lca_status lca_model_layer(const lca_model *m, size_t index, lca_layer_spec *out) {
    if (!m || !out) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_model_layer: NULL argument");
    if (index == 0) {
        *out = (lca_layer_spec){.kind = LCA_SPEC_INPUT, .units = m->in_c, .height = m->in_h,
                                .width = m->in_w, .stride = 1};
        return LCA_OK;
    }
    size_t l = 0, i = 1;
    while (l < m->layer_count) {
        spec_layer_at(m, &l, out);
        if (i++ == index) return LCA_OK;
    }
    return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_model_layer: index %zu, the model has %zu layers",
                    index, i);
}
