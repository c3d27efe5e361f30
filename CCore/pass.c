/* pass.c: the forward and backward pass over a model's layers on N
 * examples, in training mode (dropout, batch norm over the batch, running
 * statistics) or evaluation mode (the allocated loss: no dropout, batch
 * norm in groups of the caller's bn_group), with the loss and its sum.
 * Separate from the layout (model.c), which only says where the floats
 * live, and from the kernels (layers_*.c, loss.c), which never see a
 * model: this file is the order in which the kernels run, what each layer
 * hands the next, and the block-by-block pass of an MLP. A pass writes
 * only the model's workspace (and, in training mode, the running
 * statistics of batch norm): everything else that shapes it is an
 * argument, so passes on one model with different settings never affect
 * each other. */
#include "model.h"

#include <math.h>
#include <string.h>

typedef struct pass {
    lca_pass_mode mode;
    const float *x;        /* n × input */
    size_t n;
    bool feature_major;    /* an MLP's layers: outputs O × n (lca_dense_forward_fm) */
    size_t bn_group;       /* examples per batch-norm group in this pass */
    lca_rng *rng;          /* dropout, training only */
} pass;

/* Forward through every layer; returns the logits (N × outputs). Identity
 * layers pass their input pointer on; ReLU works in place. */
static const float *forward(lca_model *m, const float *params, const pass *ps,
                            const float **inputs) {
    const float *input = ps->x;
    size_t n = ps->n;
    bool relu_next = false; /* a dense layer applied the ReLU that follows it */
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &m->layers[l];
        bool relu_done = relu_next;
        relu_next = false;
        inputs[l] = input;
        const float *w = L->weight != LCA_NO_TENSOR ? params + m->tensors[L->weight].offset : NULL;
        const float *b = L->bias != LCA_NO_TENSOR ? params + m->tensors[L->bias].offset : NULL;
        const float *output = L->output;
        switch (L->kind) {
        case LCA_LAYER_DENSE: {
            /* a ReLU right after, in place on this output, joins its pass */
            bool relu = l + 1 < m->layer_count && m->layers[l + 1].kind == LCA_LAYER_RELU &&
                        m->layers[l + 1].output == NULL;
            if (ps->feature_major)
                lca_dense_forward_fm(L->output, input, l == 0, w, b, n, L->in_size, L->out_size, relu);
            else
                lca_dense_forward(L->output, input, w, b, n, L->in_size, L->out_size, relu);
            relu_next = relu;
            break;
        }
        case LCA_LAYER_CONV2D: {
            lca_conv2d_shape s = L->conv;
            s.n = n;
            lca_conv2d_forward(L->output, input, w, b, &s, m->conv_scratch);
            break;
        }
        case LCA_LAYER_RELU: {
            /* in place on the previous layer's output (which no backward
             * pass needs: dense and conv keep their inputs, BN keeps x̂) */
            float *y = L->output ? L->output : (float *)input;
            if (!relu_done) lca_relu_forward(y, input, n * L->out_size);
            output = y;
            break;
        }
        case LCA_LAYER_MAXPOOL:
            lca_maxpool_forward(L->output, L->argmax, input, n, L->in_c, L->in_h, L->in_w, L->k,
                                L->stride);
            break;
        case LCA_LAYER_AVGPOOL:
            lca_avgpool_forward(L->output, input, n, L->in_c, L->in_h, L->in_w, L->k, L->stride);
            break;
        case LCA_LAYER_BATCHNORM: {
            size_t hw = L->in_h * L->in_w;
            bool train = ps->mode == LCA_PASS_TRAIN;
            float *batch_mean = L->running_mean + 2 * L->out_c, *batch_var = batch_mean + L->out_c;
            lca_batchnorm_forward_batch(L->output, L->saved, L->saved_mean, L->saved_invstd,
                                        train ? batch_mean : NULL, train ? batch_var : NULL, input,
                                        w, b, n, L->out_c, hw, ps->bn_group, m->bn_epsilon);
            if (train) {
                float mo = m->bn_momentum;
                for (size_t c = 0; c < L->out_c; c++) {
                    L->running_mean[c] = (1.0f - mo) * L->running_mean[c] + mo * batch_mean[c];
                    L->running_var[c] = (1.0f - mo) * L->running_var[c] + mo * batch_var[c];
                }
            }
            break;
        }
        case LCA_LAYER_DROPOUT:
            if (ps->mode == LCA_PASS_TRAIN && L->p > 0.0f)
                lca_dropout_forward(L->output, L->mask, input, n * L->out_size, L->p, ps->rng);
            else
                output = input;
            break;
        case LCA_LAYER_FLATTEN:
        case LCA_LAYER_BLOCK_BEGIN:
            output = input;
            break;
        case LCA_LAYER_BLOCK_ADD: {
            const float *shortcut = inputs[L->block_begin];
            if (L->projection) {
                lca_conv2d_shape s = L->projection_shape;
                s.n = n;
                lca_conv2d_forward(L->saved, shortcut, w, b, &s, m->conv_scratch);
                shortcut = L->saved;
            }
            size_t count = n * L->out_size;
            for (size_t i = 0; i < count; i++) L->output[i] = input[i] + shortcut[i];
            break;
        }
        }
        input = output;
    }
    return input;
}

/* Backward from dlogits (in m->grad_a) to every parameter gradient; with
 * accumulate (a later block of rows of an MLP's pass, see run; the
 * feature-major dense layers of an MLP and the convolutions take it), the
 * gradients add to what gradient holds. */
static void backward(lca_model *m, const float *params, const pass *ps, const float **inputs,
                     const float *logits, float *gradient, bool accumulate) {
    size_t n = ps->n;
    float *dy = m->grad_a;
    bool relu_done = false; /* a max pooling applied the ReLU before it */
    const float *relu_after = NULL; /* a ReLU left to the dense layer before it */
    for (size_t l = m->layer_count; l-- > 0;) {
        lca_layer *L = &m->layers[l];
        bool relu_here_done = relu_done;
        relu_done = false;
        const float *input = inputs[l];
        const float *output = l + 1 < m->layer_count ? inputs[l + 1] : logits;
        const float *w = L->weight != LCA_NO_TENSOR ? params + m->tensors[L->weight].offset : NULL;
        float *dw = L->weight != LCA_NO_TENSOR ? gradient + m->tensors[L->weight].offset : NULL;
        float *db = L->bias != LCA_NO_TENSOR ? gradient + m->tensors[L->bias].offset : NULL;
        /* the input gradient goes to the other buffer; none for the first layer */
        float *other = dy == m->grad_a ? m->grad_b : m->grad_a;
        float *dx = l > 0 ? other : NULL;
        switch (L->kind) {
        case LCA_LAYER_DENSE:
            if (ps->feature_major)
                lca_dense_backward_fm(dx, dw, db, dy, relu_after, input, l == 0, w, n, L->in_size,
                                  L->out_size, accumulate);
            else
                lca_dense_backward(dx, dw, db, dy, input, w, n, L->in_size, L->out_size,
                                   accumulate);
            relu_after = NULL;
            break;
        case LCA_LAYER_CONV2D: {
            lca_conv2d_shape s = L->conv;
            s.n = n;
            lca_conv2d_backward(dx, dw, db, dy, input, w, &s, m->conv_scratch, accumulate);
            break;
        }
        case LCA_LAYER_RELU:
            /* right after a dense layer of an MLP: in that layer's bias walk */
            if (ps->feature_major && l > 0 && m->layers[l - 1].kind == LCA_LAYER_DENSE)
                relu_after = output;
            else if (!relu_here_done)
                lca_relu_backward(dy, dy, output, n * L->out_size);
            dx = dy;
            break;
        case LCA_LAYER_MAXPOOL:
            /* a ReLU right before (its output is this input) joins the pass */
            relu_done = dx && m->layers[l - 1].kind == LCA_LAYER_RELU;
            if (relu_done)
                lca_maxpool_relu_backward(dx, dy, L->argmax, input, n, L->in_c, L->in_h, L->in_w,
                                          L->k, L->stride);
            else if (dx)
                lca_maxpool_backward(dx, dy, L->argmax, n, L->in_c, L->in_h, L->in_w, L->k,
                                     L->stride);
            break;
        case LCA_LAYER_AVGPOOL:
            if (dx) lca_avgpool_backward(dx, dy, n, L->in_c, L->in_h, L->in_w, L->k, L->stride);
            break;
        case LCA_LAYER_BATCHNORM:
            lca_batchnorm_backward_batch(dx, dw, db, dy, L->saved, L->saved_invstd,
                                         w, n, L->out_c, L->in_h * L->in_w, ps->bn_group);
            break;
        case LCA_LAYER_DROPOUT:
            if (ps->mode == LCA_PASS_TRAIN && L->p > 0.0f)
                lca_dropout_backward(dy, dy, L->mask, n * L->out_size, L->p);
            dx = dy;
            break;
        case LCA_LAYER_FLATTEN:
            dx = dy;
            break;
        case LCA_LAYER_BLOCK_ADD: {
            /* the main path gets dy unchanged; the shortcut's gradient waits
             * in grad_skip for the block's begin */
            if (L->projection) {
                lca_conv2d_shape s = L->projection_shape;
                s.n = n;
                lca_conv2d_backward(m->grad_skip, dw, db, dy, inputs[L->block_begin], w, &s,
                                    m->conv_scratch, accumulate);
            } else {
                memcpy(m->grad_skip, dy, n * L->out_size * sizeof(float));
            }
            dx = dy;
            break;
        }
        case LCA_LAYER_BLOCK_BEGIN: {
            size_t count = n * L->out_size;
            for (size_t i = 0; i < count; i++) dy[i] += m->grad_skip[i];
            dx = dy;
            break;
        }
        }
        if (!dx) break;
        dy = dx;
    }
}

/* An MLP: a dense first layer, then only dense, ReLU, dropout and flatten
 * layers (nothing that mixes examples, as batch norm does), so that a pass
 * can go LCA_INPUT_ROWS rows at a time, feature-major. */
bool lca_model_streams_input(const lca_model *m) {
    if (m->layer_count == 0 || m->layers[0].kind != LCA_LAYER_DENSE) return false;
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer_kind kind = m->layers[l].kind;
        if (kind != LCA_LAYER_DENSE && kind != LCA_LAYER_RELU && kind != LCA_LAYER_DROPOUT &&
            kind != LCA_LAYER_FLATTEN)
            return false;
    }
    return true;
}

size_t lca_model_input_rows(const lca_model *m, size_t n) {
    return lca_model_streams_input(m) && n > LCA_INPUT_ROWS ? LCA_INPUT_ROWS : n;
}

/* Rows [first, first + count) of the pass's input, as floats. */
static const float *input_rows(const lca_model_input *input, size_t first, size_t count,
                               size_t features) {
    if (input->x) return input->x + first * features;
    lca_dataset_gather(input->data, input->indices + first, count, input->rows, NULL, NULL);
    return input->rows;
}

static lca_status check_labels(const int32_t *labels, size_t n, size_t outputs) {
    for (size_t r = 0; r < n; r++)
        if (labels[r] < 0 || (size_t)labels[r] >= outputs)
            return lca_fail(LCA_ERR_MISMATCH,
                            "label %d of example %zu is outside the model's %zu outputs",
                            labels[r], r, outputs);
    return LCA_OK;
}

/* Forward, loss and backward on blocks of lca_model_input_rows rows, in
 * order: one block of all n for most models; for an MLP blocks of
 * LCA_INPUT_ROWS, each converted from the data set once, its activations
 * in a block-sized workspace, its gradients added to those of the blocks
 * before (the same bytes whether the input comes as floats or from a data
 * set, and whatever the caller's chunk around the blocks). */
static lca_status run(lca_model *m, const float *parameters, const int32_t *labels,
                      const float *targets, const lca_model_input *input, pass ps,
                      double gradient_scale, double *loss_sum, float *gradient, bool accumulate) {
    size_t n = ps.n;
    if (n == 0 || n > m->max_batch)
        return lca_fail(LCA_ERR_STATE, "model: %zu examples but workspace reserved for %zu", n,
                        m->max_batch);
    bool mlp = lca_model_streams_input(m);
    if (!input->x && !(mlp && input->data && input->rows))
        return lca_fail(LCA_ERR_STATE, "model: no input (only an MLP converts rows of a data "
                                       "set as it goes)");
    if (!labels && !targets)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: neither labels nor targets given");
    if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && !labels)
        return lca_fail(LCA_ERR_MISMATCH, "softmax cross-entropy needs integer labels, "
                                          "but the data set has float targets");
    size_t outputs = lca_model_output_size(m), features = lca_model_input_size(m);
    if (!targets) {
        lca_status status = check_labels(labels, n, outputs);
        if (status != LCA_OK) return status;
    }
    /* batch norm mixes the examples of a group: a pass is whole groups,
     * and its layers never continue an earlier pass */
    if (accumulate && lca_model_batchnorm_count(m) > 0)
        return lca_fail(LCA_ERR_STATE, "model: a batch-norm net cannot continue a pass");
    size_t block = lca_model_input_rows(m, n);
    ps.feature_major = mlp;
    double sum = accumulate ? *loss_sum : 0.0;
    for (size_t first = 0; first < n; first += block) {
        ps.n = n - first < block ? n - first : block;
        ps.x = input_rows(input, first, ps.n, features);
        const float *inputs[LCA_MAX_LAYERS];
        const float *logits = forward(m, parameters, &ps, inputs);
        float *dlogits = gradient ? m->grad_a : NULL;
        lca_logit_layout at = ps.feature_major ? (lca_logit_layout){1, ps.n}
                                                : (lca_logit_layout){outputs, 1};
        if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY)
            lca_softmax_cross_entropy(m->example_loss, dlogits, logits, labels + first, ps.n, outputs,
                                  at, gradient_scale);
        else
            lca_squared_error(m->example_loss, dlogits, logits, labels ? labels + first : NULL,
                          targets ? targets + first * outputs : NULL, ps.n, outputs, at,
                          gradient_scale);
        for (size_t r = 0; r < ps.n; r++) sum += m->example_loss[r];
        /* a sum that is not finite stays so, whatever is added later */
        if (!isfinite(sum))
            return lca_fail(LCA_ERR_NUMERIC, "loss is not finite (%g): training diverged; "
                                             "try a smaller learning rate", sum);
        if (gradient) backward(m, parameters, &ps, inputs, logits, gradient, accumulate || first > 0);
    }
    *loss_sum = sum;
    return LCA_OK;
}

lca_status lca_model_forward_backward_input(lca_model *m, const float *parameters,
                                            const lca_model_input *input, const int32_t *labels,
                                            const float *targets, size_t n, size_t bn_group,
                                            double gradient_scale, double *loss_sum,
                                            float *gradient, bool accumulate) {
    pass ps = {.mode = LCA_PASS_EVALUATE, .n = n, .bn_group = bn_group};
    return run(m, parameters, labels, targets, input, ps, gradient_scale, loss_sum, gradient,
               accumulate);
}

lca_status lca_model_forward_backward(lca_model *m, const float *parameters, const float *x,
                                      const int32_t *labels, const float *targets, size_t n,
                                      size_t bn_group, double gradient_scale, double *loss_sum,
                                      float *gradient) {
    lca_model_input input = {.x = x};
    return lca_model_forward_backward_input(m, parameters, &input, labels, targets, n, bn_group,
                                            gradient_scale, loss_sum, gradient, false);
}

lca_status lca_model_train_gradient(lca_model *m, const lca_model_input *input,
                                    const int32_t *labels, const float *targets, size_t n,
                                    double *loss_sum, float *gradient, lca_rng *rng) {
    pass ps = {.mode = LCA_PASS_TRAIN, .n = n, .bn_group = n, .rng = rng};
    return run(m, m->parameters, labels, targets, input, ps, 1.0 / (double)n, loss_sum, gradient,
               false);
}

lca_status lca_model_loss_and_gradient(lca_model *m, const float *parameters, const float *x,
                                       const int32_t *labels, const float *targets, size_t n,
                                       double *loss, float *gradient) {
    double sum;
    lca_status status = lca_model_forward_backward(m, parameters ? parameters : m->parameters, x,
                                                   labels, targets, n, LCA_BN_GROUP_DEFAULT,
                                                   1.0 / (double)n, &sum, gradient);
    if (status == LCA_OK) *loss = sum / (double)n;
    return status;
}
