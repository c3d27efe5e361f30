/* model.c: model layout (spec parsing, tensors, one parameter allocation)
 * and the forward/backward pass over a batch or evaluation chunk.
 *
 * Layout: parameters are one float array; tensor k occupies
 * [offset_k, offset_k + count_k). Gradients, optimizer state and LCA
 * accumulators elsewhere use the same layout, so the optimizer and the LCA
 * integrator are flat loops. */
#include "internal.h"
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 10000000ul
#define MAX_LAYERS 64

static const char *const FC_SPEC = "784-100-50-10";

/* Parse "784-100-50-10" into widths; errors point at the character. */
static lca_status parse_widths(const char *spec, size_t *widths, size_t *count) {
    const char *p = spec;
    size_t n = 0;
    for (;;) {
        if (!isdigit((unsigned char)*p))
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "model spec \"%s\": character %zu: expected a layer width "
                            "(a positive integer), found '%c'",
                            spec, (size_t)(p - spec) + 1, *p ? *p : ' ');
        errno = 0;
        char *end;
        unsigned long long w = strtoull(p, &end, 10);
        if (errno != 0 || w == 0 || w > MAX_WIDTH)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "model spec \"%s\": character %zu: width must be between 1 and %lu",
                            spec, (size_t)(p - spec) + 1, MAX_WIDTH);
        if (n == MAX_LAYERS + 1)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": more than %d layers",
                            spec, MAX_LAYERS);
        widths[n++] = (size_t)w;
        p = end;
        if (*p == '\0') break;
        if (*p != '-')
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "model spec \"%s\": character %zu: expected '-' between widths, "
                            "found '%c'",
                            spec, (size_t)(p - spec) + 1, *p);
        p++;
    }
    if (n < 2)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "model spec \"%s\": needs at least an input and an output width "
                        "(e.g. \"64-10\"), or the name \"fc\"",
                        spec);
    *count = n;
    return LCA_OK;
}

lca_status lca_model_new(lca_model **out, const char *spec, lca_loss_kind loss) {
    *out = NULL;
    if (!spec) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec is NULL");
    if (loss != LCA_LOSS_SOFTMAX_CROSS_ENTROPY && loss != LCA_LOSS_MEAN_SQUARED_ERROR)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "unknown loss kind %d", (int)loss);
    const char *widths_spec = strcmp(spec, "fc") == 0 ? FC_SPEC : spec;
    size_t widths[MAX_LAYERS + 1], width_count;
    lca_status status = parse_widths(widths_spec, widths, &width_count);
    if (status != LCA_OK) return status;
    if (loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && widths[width_count - 1] < 2)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "model spec \"%s\": softmax cross-entropy needs at least 2 outputs",
                        spec);

    lca_model *m = calloc(1, sizeof *m);
    if (!m) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    m->loss = loss;
    m->layer_count = width_count - 1;
    m->tensor_count = 2 * m->layer_count;
    m->layers = calloc(m->layer_count, sizeof *m->layers);
    m->tensors = calloc(m->tensor_count, sizeof *m->tensors);
    m->unit_group_count = m->layer_count;
    m->unit_groups = calloc(m->unit_group_count, sizeof *m->unit_groups);
    if (!m->layers || !m->tensors || !m->unit_groups) goto out_of_memory;

    /* canonical spec string: the widths, never the alias */
    size_t spec_capacity = 21 * width_count + 1, used = 0;
    m->spec = malloc(spec_capacity);
    if (!m->spec) goto out_of_memory;
    for (size_t i = 0; i < width_count; i++)
        used += (size_t)snprintf(m->spec + used, spec_capacity - used, i ? "-%zu" : "%zu",
                                 widths[i]);

    size_t offset = 0;
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *layer = &m->layers[l];
        layer->kind = LCA_LAYER_DENSE;
        layer->in = widths[l];
        layer->out = widths[l + 1];
        layer->relu = l + 1 < m->layer_count;
        layer->weight = 2 * l;
        layer->bias = 2 * l + 1;
        lca_tensor *w = &m->tensors[layer->weight], *b = &m->tensors[layer->bias];
        snprintf(w->name, sizeof w->name, "fc%zu.weight", l + 1);
        snprintf(b->name, sizeof b->name, "fc%zu.bias", l + 1);
        w->rank = 2;
        w->shape[0] = (int64_t)layer->out;
        w->shape[1] = (int64_t)layer->in;
        w->count = layer->out * layer->in;
        w->fan_in = layer->in;
        w->offset = offset;
        offset += w->count;
        b->rank = 1;
        b->shape[0] = (int64_t)layer->out;
        b->count = layer->out;
        b->fan_in = 0; /* biases start at zero */
        b->offset = offset;
        offset += b->count;
        lca_unit_group *group = &m->unit_groups[l];
        snprintf(group->name, sizeof group->name, "fc%zu", l + 1);
        group->units = layer->out;
        m->unit_count += layer->out;
        w->unit_group = b->unit_group = (long)l;
        if (layer->out > m->max_width) m->max_width = layer->out;
        if (layer->in > m->max_width) m->max_width = layer->in;
    }
    m->parameter_count = offset;
    m->parameters = calloc(offset, sizeof(float));
    if (!m->parameters) goto out_of_memory;
    *out = m;
    return LCA_OK;

out_of_memory:
    lca_model_free(m);
    return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model \"%s\": out of memory", spec);
}

void lca_model_free(lca_model *m) {
    if (!m) return;
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
size_t lca_model_input_size(const lca_model *m) { return m->layers[0].in; }
size_t lca_model_output_size(const lca_model *m) { return m->layers[m->layer_count - 1].out; }
size_t lca_model_parameter_count(const lca_model *m) { return m->parameter_count; }
size_t lca_model_tensor_count(const lca_model *m) { return m->tensor_count; }
float *lca_model_parameters(lca_model *m) { return m->parameters; }
const float *lca_model_parameters_const(const lca_model *m) { return m->parameters; }

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

void lca_model_initialize(lca_model *m, uint64_t seed) {
    lca_rng rng;
    lca_rng_seed(&rng, seed, LCA_STREAM_INIT);
    for (size_t k = 0; k < m->tensor_count; k++) {
        const lca_tensor *t = &m->tensors[k];
        float *p = m->parameters + t->offset;
        if (t->fan_in == 0) {
            memset(p, 0, t->count * sizeof(float));
            continue;
        }
        double std = sqrt(2.0 / (double)t->fan_in); /* He et al. 2015, for ReLU */
        for (size_t i = 0; i < t->count; i++) p[i] = (float)(std * lca_rng_normal(&rng));
    }
}

lca_status lca_model_reserve(lca_model *m, size_t max_batch) {
    if (max_batch == 0) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: batch size 0");
    if (max_batch <= m->max_batch) return LCA_OK;
    /* outputs of every layer (kept for backward), two ping-pong gradient
     * buffers of the widest layer, per-example losses */
    size_t floats = 0;
    /* each buffer rounded up to 16 floats so that all start 64-byte aligned */
#define ROUND16(x) (((x) + 15) & ~(size_t)15)
    for (size_t l = 0; l < m->layer_count; l++) floats += ROUND16(max_batch * m->layers[l].out);
    floats += 2 * ROUND16(max_batch * m->max_width);
    size_t bytes = floats * sizeof(float) + ROUND16(max_batch) * sizeof(double);
    void *w = aligned_alloc(64, bytes);
    if (!w) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: cannot allocate %zu bytes of workspace", bytes);
    free(m->workspace);
    m->workspace = w;
    m->workspace_bytes = bytes;
    m->max_batch = max_batch;
    float *f = w;
    for (size_t l = 0; l < m->layer_count; l++) {
        m->layers[l].output = f; /* N × out */
        f += ROUND16(max_batch * m->layers[l].out);
    }
    m->grad_a = f; /* N × max_width */
    f += ROUND16(max_batch * m->max_width);
    m->grad_b = f;
    f += ROUND16(max_batch * m->max_width);
    m->example_loss = (double *)(void *)f; /* N */
#undef ROUND16
    return LCA_OK;
}

size_t lca_model_workspace_bytes(const lca_model *m) { return m->workspace_bytes; }

/* ------------------------------------------------------------- layers */

/* y[N×O] = x[N×I] · wᵀ + b, then ReLU when relu. */
static void dense_forward(float *y, const float *x, const float *w, const float *b, size_t n,
                          size_t in, size_t out, bool relu) {
    lca_sgemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    for (size_t r = 0; r < n; r++) {
        float *row = y + r * out;
        if (relu)
            for (size_t o = 0; o < out; o++) {
                float v = row[o] + b[o];
                row[o] = v > 0.0f ? v : 0.0f;
            }
        else
            for (size_t o = 0; o < out; o++) row[o] += b[o];
    }
}

/* Backward of dense_forward. dy[N×O] holds ∂/∂y on entry; for a ReLU layer
 * it is masked in place to ∂/∂(pre-activation) using y > 0.
 *   dw[O×I] = dyᵀ · x, db[O] = Σ_n dy, dx[N×I] = dy · w (skipped if dx is NULL) */
static void dense_backward(float *dx, float *dw, float *db, float *dy, const float *y,
                           const float *x, const float *w, size_t n, size_t in, size_t out,
                           bool relu) {
    if (relu)
        for (size_t i = 0; i < n * out; i++)
            if (!(y[i] > 0.0f)) dy[i] = 0.0f;
    lca_sgemm(true, false, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
    /* bias: column sums in a fixed order, accumulated in double */
    for (size_t o = 0; o < out; o++) {
        double sum = 0.0;
        for (size_t r = 0; r < n; r++) sum += dy[r * out + o];
        db[o] = (float)sum;
    }
    if (dx) lca_sgemm(false, false, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

/* Softmax cross-entropy on logits z[N×C]: per-example losses into loss[N]
 * (stable log-sum-exp in double) and, if dz, dz = scale · (softmax − onehot). */
static lca_status softmax_cross_entropy(double *loss, float *dz, const float *z,
                                        const int32_t *labels, size_t n, size_t classes,
                                        double scale) {
    for (size_t r = 0; r < n; r++) {
        const float *row = z + r * classes;
        int32_t label = labels[r];
        if (label < 0 || (size_t)label >= classes)
            return lca_fail(LCA_ERR_MISMATCH, "label %d of example %zu is outside the model's %zu classes",
                            label, r, classes);
        double max = row[0];
        for (size_t c = 1; c < classes; c++)
            if (row[c] > max) max = row[c];
        double sum = 0.0;
        for (size_t c = 0; c < classes; c++) sum += exp((double)row[c] - max);
        double log_sum = log(sum);
        loss[r] = max + log_sum - (double)row[label];
        if (dz) {
            float *drow = dz + r * classes;
            for (size_t c = 0; c < classes; c++) {
                double p = exp((double)row[c] - max - log_sum);
                drow[c] = (float)(scale * (p - (c == (size_t)label ? 1.0 : 0.0)));
            }
        }
    }
    return LCA_OK;
}

/* Mean squared error terms: loss[r] = Σ_c (y − t)² / C (the mean over
 * outputs; the mean over examples comes from the caller's scale), and
 * dy = scale · 2 (y − t) / C. Targets are float rows or one-hot labels. */
static lca_status squared_error(double *loss, float *dy, const float *y, const int32_t *labels,
                                const float *targets, size_t n, size_t outputs, double scale) {
    for (size_t r = 0; r < n; r++) {
        if (!targets && (labels[r] < 0 || (size_t)labels[r] >= outputs))
            return lca_fail(LCA_ERR_MISMATCH, "label %d of example %zu is outside the model's %zu outputs",
                            labels[r], r, outputs);
        double sum = 0.0;
        for (size_t c = 0; c < outputs; c++) {
            double t = targets ? targets[r * outputs + c] : (c == (size_t)labels[r] ? 1.0 : 0.0);
            double d = (double)y[r * outputs + c] - t;
            sum += d * d;
            if (dy) dy[r * outputs + c] = (float)(scale * 2.0 * d / (double)outputs);
        }
        loss[r] = sum / (double)outputs;
    }
    return LCA_OK;
}

lca_status lca_model_forward_backward(lca_model *m, const float *parameters, const float *x,
                                      const int32_t *labels, const float *targets, size_t n,
                                      double gradient_scale, double *loss_sum, float *gradient) {
    if (n == 0 || n > m->max_batch)
        return lca_fail(LCA_ERR_STATE, "model: %zu examples but workspace reserved for %zu", n,
                        m->max_batch);
    if (!labels && !targets)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: neither labels nor targets given");
    if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && !labels)
        return lca_fail(LCA_ERR_MISMATCH, "softmax cross-entropy needs integer labels, "
                                          "but the data set has float targets");

    const float *input = x;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *layer = &m->layers[l];
        dense_forward(layer->output, input, parameters + m->tensors[layer->weight].offset,
                      parameters + m->tensors[layer->bias].offset, n, layer->in, layer->out,
                      layer->relu);
        input = layer->output;
    }

    const lca_layer *last = &m->layers[m->layer_count - 1];
    float *dy = gradient ? m->grad_a : NULL;
    lca_status status =
        m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY
            ? softmax_cross_entropy(m->example_loss, dy, last->output, labels, n, last->out,
                                    gradient_scale)
            : squared_error(m->example_loss, dy, last->output, labels, targets, n, last->out,
                            gradient_scale);
    if (status != LCA_OK) return status;
    double sum = 0.0;
    for (size_t r = 0; r < n; r++) sum += m->example_loss[r];
    if (!isfinite(sum))
        return lca_fail(LCA_ERR_NUMERIC, "loss is not finite (%g): training diverged; "
                                         "try a smaller learning rate", sum);
    *loss_sum = sum;
    if (!gradient) return LCA_OK;

    for (size_t l = m->layer_count; l-- > 0;) {
        const lca_layer *layer = &m->layers[l];
        const lca_tensor *w = &m->tensors[layer->weight], *b = &m->tensors[layer->bias];
        const float *layer_input = l > 0 ? m->layers[l - 1].output : x;
        float *dx = l > 0 ? (dy == m->grad_a ? m->grad_b : m->grad_a) : NULL;
        dense_backward(dx, gradient + w->offset, gradient + b->offset, dy, layer->output,
                       layer_input, parameters + w->offset, n, layer->in, layer->out,
                       layer->relu);
        dy = dx;
    }
    return LCA_OK;
}

lca_status lca_model_loss_and_gradient(lca_model *m, const float *parameters, const float *x,
                                       const int32_t *labels, const float *targets, size_t n,
                                       double *loss, float *gradient) {
    double sum;
    lca_status status = lca_model_forward_backward(m, parameters ? parameters : m->parameters, x,
                                                   labels, targets, n, 1.0 / (double)n, &sum,
                                                   gradient);
    if (status == LCA_OK) *loss = sum / (double)n;
    return status;
}
