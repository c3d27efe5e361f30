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
    /* a group cut into sub-chunks (group_pass): batch norm applies the
     * group's statistics from its group state; forward stops at layer stop
     * (a batch-norm layer, whose statistics its input adds to: phase),
     * backward at layer stop_back (a batch-norm layer, whose backward sums
     * its output gradient adds to); without parameters, the partial
     * backward sweeps skip the convolutions' and batch norm's parameter
     * gradients */
    bool grouped;
    size_t group_n;        /* examples in the whole group */
    size_t stop, stop_back;
    int phase;             /* PHASE_SUM or PHASE_SQUARES */
    bool parameters;
    lca_rng *layer_rng;    /* per layer: its dropout stream (group_pass), or NULL */
    const uint8_t *mask;   /* per example of the whole pass (loss groups), or NULL */
    const uint8_t *rows_mask; /* the part of mask for the rows in hand */
    /* a segment's activations recomputed for the backward pass (segments
     * below): batch norm applies the statistics already found, the running
     * statistics are not updated again */
    bool again;
    /* an MLP's first layer along an LCA step (lca_first_layer), and the
     * first row of the block in hand */
    const lca_first_layer *first;
    size_t first_row;
} pass;

enum { PHASE_SUM = 0, PHASE_SQUARES = 1 };

/* Layer 0 of an MLP's block along an LCA step (lca_first_layer): its
 * output, and z kept or taken from the step's ends. */
static void first_layer_forward(const lca_model *m, const lca_layer *L, const pass *ps,
                                const float *input, const float *weight, const float *bias,
                                bool relu) {
    const lca_first_layer *f = ps->first;
    size_t n = ps->n, in = L->in_size, out = L->out_size, at = ps->first_row * out;
    if (f->store) {
        lca_dense_forward_fm(L->output, input, true, weight, bias, n, in, out, relu,
                             f->store + at);
        return;
    }
    size_t w = m->tensors[L->weight].offset, b = m->tensors[L->bias].offset;
    const float *start = f->start ? f->start + at : NULL, *end = f->end ? f->end + at : NULL;
    if (!start) {
        float *z_start = f->scratch, *z_end = f->scratch + out * n;
        lca_dense_forward_fm(L->output, input, true, f->start_parameters + w,
                             f->start_parameters + b, n, in, out, false, z_start);
        lca_dense_forward_fm(L->output, input, true, f->end_parameters + w,
                             f->end_parameters + b, n, in, out, false, z_end);
        start = z_start;
        end = z_end;
    }
    lca_dense_interpolate_fm(L->output, start, end, f->s, out * n, relu);
}

/* Forward through layers [first, last) from input (the input of layer
 * first); returns the output of layer last - 1 (the logits, N × outputs,
 * when last is the layer count), or NULL when it stopped at ps->stop.
 * Identity layers pass their input pointer on; ReLU works in place. */
static const float *forward_layers(lca_model *m, const float *params, const pass *ps,
                                   const float **inputs, size_t first, size_t last,
                                   const float *input) {
    size_t n = ps->n;
    bool relu_next = false; /* a dense layer or a block's add applied the ReLU after it */
    for (size_t l = first; l < last; l++) {
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
            if (ps->feature_major && l == 0 && ps->first)
                first_layer_forward(m, L, ps, input, w, b, relu);
            else if (ps->feature_major)
                lca_dense_forward_fm(L->output, input, l == 0, w, b, n, L->in_size, L->out_size,
                                     relu, NULL);
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
            /* a ReLU right after, in place on this output, joins it */
            bool relu = l + 1 < last && m->layers[l + 1].kind == LCA_LAYER_RELU &&
                        m->layers[l + 1].output == NULL;
            /* x̂ is for the backward pass: a recomputing net's first forward
             * pass need not write it below the last segment, whose layers
             * the backward pass recomputes (x̂ with them) before it reads it */
            float *xhat = m->recompute && !ps->again &&
                                  l < m->segment_start[m->segment_count - 1]
                              ? NULL
                              : L->saved;
            if (ps->grouped) {
                size_t c = L->out_c;
                if (l == ps->stop) {
                    if (ps->phase == PHASE_SUM)
                        lca_batchnorm_group_sum(L->group_sums, input, n, c, hw);
                    else
                        lca_batchnorm_group_squares(L->group_sums + c, input, L->group_mean, n, c,
                                                    hw);
                    return NULL;
                }
                lca_batchnorm_group_normalize(L->output, xhat, input, L->saved_mean,
                                              L->saved_invstd, w, b, n, c, hw, relu);
                relu_next = relu;
                break;
            }
            if (ps->again) {
                /* recomputed: each group normalised with the statistics of
                 * the first forward pass, the floats that pass normalised
                 * with (the same bytes), neither they nor the running
                 * estimates taken again */
                size_t c = L->out_c, group = ps->bn_group == 0 || ps->bn_group > n ? n : ps->bn_group;
                for (size_t g = 0, first = 0; first < n; g++, first += group) {
                    size_t count = n - first < group ? n - first : group, at = first * L->out_size;
                    lca_batchnorm_group_normalize(L->output + at, L->saved + at, input + at,
                                                  L->saved_mean + g * c, L->saved_invstd + g * c,
                                                  w, b, count, c, hw, relu);
                }
                relu_next = relu;
                break;
            }
            float *batch_mean = L->running_mean + 2 * L->out_c, *batch_var = batch_mean + L->out_c;
            lca_batchnorm_forward_batch(L->output, xhat, L->saved_mean, L->saved_invstd,
                                        train ? batch_mean : NULL, train ? batch_var : NULL, input,
                                        w, b, n, L->out_c, hw, ps->bn_group, m->bn_epsilon, relu);
            relu_next = relu;
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
                lca_dropout_forward(L->output, L->mask, input, n * L->out_size, L->p,
                                    ps->layer_rng ? &ps->layer_rng[l] : ps->rng);
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
            /* the ReLU that ends a block, in place on the sum, joins the add */
            bool relu = l + 1 < last && m->layers[l + 1].kind == LCA_LAYER_RELU &&
                        m->layers[l + 1].output == NULL;
            lca_add_forward(L->output, input, shortcut, n * L->out_size, relu);
            relu_next = relu;
            break;
        }
        }
        input = output;
    }
    return input;
}

/* Forward through every layer: the logits, or NULL when it stopped. */
static const float *forward(lca_model *m, const float *params, const pass *ps,
                            const float **inputs) {
    return forward_layers(m, params, ps, inputs, 0, m->layer_count, ps->x);
}

/* A block's shortcut gradient on its way from the add to the begin layer.
 * The add hands dy on to both paths: the shortcut's stays in the buffer
 * it came in (held), and the main path's layers take their gradients in
 * turn from the two others (grad_skip among them) when grad_skip holds
 * every gradient of the block; else the add copies dy to grad_skip (and a
 * projection writes its input gradient there). The begin layer's sum goes
 * to whichever of the two is grad_a or grad_b; when a ReLU is right
 * before the begin layer (the previous block's end, in the segment below),
 * the sum is left to that ReLU's backward, one sweep (deferred). */
typedef struct skip_state {
    float *held;                /* the shortcut's gradient, from the add to the begin */
    const float *defer_skip;    /* a begin layer's sum left to the ReLU below it: */
    float *defer_to;            /* the shortcut's gradient and where the sum goes */
} skip_state;

/* Whether grad_skip holds the gradient of every layer output of the block
 * that ends at the add layer l (so that the main path may use it), and the
 * layer before the add leaves its dy alone (an in-place layer would write
 * over the shortcut's gradient). */
static bool skip_rotates(const lca_model *m, size_t l) {
    if (!m->grad_skip || l == 0) return false;
    lca_layer_kind before = m->layers[l - 1].kind;
    if (before != LCA_LAYER_CONV2D && before != LCA_LAYER_BATCHNORM && before != LCA_LAYER_DENSE &&
        before != LCA_LAYER_MAXPOOL && before != LCA_LAYER_AVGPOOL)
        return false;
    for (size_t j = m->layers[l].block_begin; j < l; j++)
        if (m->layers[j].out_size > m->max_skip) return false;
    return true;
}

/* Backward through layers [first, last) from dy, the gradient of layer
 * last - 1's output (in m->grad_a or m->grad_b); returns the gradient of
 * layer first's input, or NULL when the pass ended (the first layer, or
 * ps->stop_back). With accumulate (a later block of rows of an MLP's pass,
 * see run; the feature-major dense layers of an MLP and the convolutions
 * take it), the gradients add to what gradient holds. */
static float *backward_layers(lca_model *m, const float *params, const pass *ps,
                              const float **inputs, const float *logits, float *gradient,
                              bool accumulate, size_t first, size_t last, float *dy,
                              skip_state *skip) {
    size_t n = ps->n;
    bool relu_done = false; /* a max pooling applied the ReLU before it */
    const float *bn_relu = NULL; /* a ReLU left to the batch norm before it: its output */
    const float *relu_after = NULL; /* a ReLU left to the dense layer before it */
    for (size_t l = last; l-- > first;) {
        lca_layer *L = &m->layers[l];
        bool relu_here_done = relu_done;
        relu_done = false;
        const float *input = inputs[l];
        const float *output = l + 1 < m->layer_count ? inputs[l + 1] : logits;
        const float *w = L->weight != LCA_NO_TENSOR ? params + m->tensors[L->weight].offset : NULL;
        float *dw = L->weight != LCA_NO_TENSOR ? gradient + m->tensors[L->weight].offset : NULL;
        float *db = L->bias != LCA_NO_TENSOR ? gradient + m->tensors[L->bias].offset : NULL;
        /* a partial sweep (group_pass) needs only the input gradients: the
         * dense layers' (which need somewhere to write) go to gradient,
         * which the last sweep overwrites */
        if (!ps->parameters && L->kind != LCA_LAYER_DENSE) dw = db = NULL;
        /* the input gradient goes to the other buffer (inside a block, the
         * one neither dy nor the shortcut's gradient is in); none for the
         * first layer */
        float *other = dy == m->grad_a ? m->grad_b : m->grad_a;
        if (skip->held && other == skip->held)
            other = dy == m->grad_skip ? (other == m->grad_a ? m->grad_b : m->grad_a)
                                       : m->grad_skip;
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
            if (skip->defer_to) {
                /* the begin layer above left its sum to this ReLU */
                dx = skip->defer_to;
                lca_add_backward(dx, dy, skip->defer_skip, output, n * L->out_size);
                skip->defer_to = NULL;
                skip->defer_skip = NULL;
                break;
            }
            if (ps->feature_major && l > 0 && m->layers[l - 1].kind == LCA_LAYER_DENSE)
                relu_after = output;
            else if (!relu_here_done && l > first && m->layers[l - 1].kind == LCA_LAYER_BATCHNORM)
                bn_relu = output; /* in batch norm's sweeps over dy */
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
        case LCA_LAYER_BATCHNORM: {
            size_t c = L->out_c, hw = L->in_h * L->in_w;
            const float *relu_y = bn_relu;
            bn_relu = NULL;
            if (!ps->grouped) {
                lca_batchnorm_backward_batch(dx, dw, db, dy, L->saved, L->saved_invstd, w, n, c,
                                             hw, ps->bn_group, relu_y);
                break;
            }
            const lca_bn_sum *sum_dy = L->group_sums + 2 * c, *sum_dy_xhat = sum_dy + c;
            if (l == ps->stop_back) {
                lca_batchnorm_group_backward_sums(L->group_sums + 2 * c, L->group_sums + 3 * c, dy,
                                                  L->saved, n, c, hw, relu_y);
                return NULL;
            }
            lca_batchnorm_group_backward(dx, dw, db, dy, L->saved, L->saved_invstd, w, sum_dy,
                                         sum_dy_xhat, (double)(ps->group_n * hw), n, c, hw,
                                         relu_y);
            break;
        }
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
             * for the block's begin (skip_state) */
            if (L->projection) {
                lca_conv2d_shape s = L->projection_shape;
                s.n = n;
                lca_conv2d_backward(m->grad_skip, dw, db, dy, inputs[L->block_begin], w, &s,
                                    m->conv_scratch, accumulate);
                skip->held = m->grad_skip;
            } else if (skip_rotates(m, l)) {
                skip->held = dy;
            } else {
                memcpy(m->grad_skip, dy, n * L->out_size * sizeof(float));
                skip->held = m->grad_skip;
            }
            dx = dy;
            break;
        }
        case LCA_LAYER_BLOCK_BEGIN: {
            /* dy (the main path's) + the shortcut's, into a or b */
            float *held = skip->held;
            skip->held = NULL;
            if (l == 0) return NULL; /* the gradient of the net's input: not needed */
            dx = dy == m->grad_a || dy == m->grad_b ? dy : held;
            if (m->layers[l - 1].kind == LCA_LAYER_RELU && !ps->feature_major) {
                skip->defer_skip = held;
                skip->defer_to = dx;
                dx = dy;
            } else {
                lca_add_backward(dx, dy, held, NULL, n * L->out_size);
            }
            break;
        }
        }
        if (!dx) return NULL;
        dy = dx;
    }
    return dy;
}

/* ------------------------------------------------------------ segments
 *
 * A recomputing net (model.h, lca_model_recomputes: a residual net without
 * dropout) holds, for the whole pass, only each segment's output (the next
 * block's input) and the batch-norm statistics; a segment's other
 * activations share one region of the workspace with every other
 * segment's. The forward pass leaves the last segment's activations in
 * place; the backward pass goes segment by segment from the top, first
 * recomputing the segment's activations from its kept input (the same
 * kernels on the same values, so the same bytes; batch norm the same call,
 * or in a group pass the group's statistics as before), then its backward.
 * One more forward pass over all but the last segment, for the memory of
 * one segment instead of the whole net's activations (docs/memory.md). */

/* Backward from dlogits (in m->grad_a) to every parameter gradient, a
 * recomputing net's segment by segment. */
static void backward(lca_model *m, const float *params, const pass *ps, const float **inputs,
                     const float *logits, float *gradient, bool accumulate) {
    float *dy = m->grad_a;
    skip_state skip = {0};
    if (!m->recompute) {
        backward_layers(m, params, ps, inputs, logits, gradient, accumulate, 0, m->layer_count,
                        dy, &skip);
        return;
    }
    pass again = *ps;
    again.again = true;
    for (size_t s = m->segment_count; dy && s-- > 0;) {
        size_t first = m->segment_start[s], last = m->segment_start[s + 1];
        if (s + 1 < m->segment_count)
            forward_layers(m, params, &again, inputs, first, last,
                           first == 0 ? ps->x : inputs[first]);
        dy = backward_layers(m, params, ps, inputs, logits, gradient, accumulate, first, last,
                             dy, &skip);
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

/* first: the number of the pass's first example (a sub-chunk's in its
 * group), for the message */
static lca_status check_labels_from(const int32_t *labels, size_t n, size_t outputs,
                                    size_t first) {
    for (size_t r = 0; r < n; r++)
        if (labels[r] < 0 || (size_t)labels[r] >= outputs)
            return lca_fail(LCA_ERR_MISMATCH,
                            "label %d of example %zu is outside the model's %zu outputs",
                            labels[r], first + r, outputs);
    return LCA_OK;
}

static lca_status check_labels(const int32_t *labels, size_t n, size_t outputs) {
    return check_labels_from(labels, n, outputs, 0);
}

/* The loss of a pass's n examples (their logits), each added to sum in
 * order; with dlogits, its gradient (times gradient_scale) into m->grad_a. */
static double add_loss(lca_model *m, const pass *ps, const float *logits, const int32_t *labels,
                       const float *targets, double gradient_scale, double sum, bool dlogits) {
    size_t outputs = lca_model_output_size(m);
    lca_logit_layout at = ps->feature_major ? (lca_logit_layout){1, ps->n}
                                            : (lca_logit_layout){outputs, 1};
    float *dz = dlogits ? m->grad_a : NULL;
    if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY)
        lca_softmax_cross_entropy(m->example_loss, dz, logits, labels, ps->n, outputs, at,
                                  gradient_scale);
    else
        lca_squared_error(m->example_loss, dz, logits, labels, targets, ps->n, outputs, at,
                          gradient_scale);
    if (ps->rows_mask) {
        /* loss groups: an example outside the group has weight 0 */
        for (size_t r = 0; r < ps->n; r++) {
            if (ps->rows_mask[r]) {
                sum += m->example_loss[r];
            } else if (dz) {
                for (size_t c = 0; c < outputs; c++) dz[r * at.example_step + c * at.class_step] = 0.0f;
            }
        }
        return sum;
    }
    for (size_t r = 0; r < ps->n; r++) sum += m->example_loss[r];
    return sum;
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
        ps.rows_mask = ps.mask ? ps.mask + first : NULL;
        ps.first = mlp ? input->first : NULL;
        ps.first_row = first;
        const float *inputs[LCA_MAX_LAYERS];
        const float *logits = forward(m, parameters, &ps, inputs);
        sum = add_loss(m, &ps, logits, labels ? labels + first : NULL,
                       targets ? targets + first * outputs : NULL, gradient_scale, sum,
                       gradient != NULL);
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
    pass ps = {.mode = LCA_PASS_EVALUATE, .n = n, .bn_group = bn_group, .stop = SIZE_MAX,
               .stop_back = SIZE_MAX, .parameters = true};
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

/* ---------------------------------------------------------- group pass
 *
 * One batch-norm group (or a training minibatch) of n examples in
 * sub-chunks of at most chunk, when the workspace cannot hold the whole
 * group (docs/memory.md). What one pass over the group would compute,
 * recomputed sub-chunk by sub-chunk:
 *   1. statistics, batch-norm layer by layer in model order: a forward
 *      sweep up to the layer's input adds Σx (per channel, in example
 *      order: the lanes carried over sub-chunks), then a second sweep adds
 *      Σ(x − μ)² around the group's mean μ; the layers before it apply the
 *      group statistics already found;
 *   2. backward sums, batch-norm layer by layer from the top: a full
 *      forward, the loss gradient, and the backward down to the layer's
 *      output gradient (the layers above use their sums already found) add
 *      Σdy and Σdy·x̂;
 *   3. a last sweep: forward, loss, and the whole backward, the parameter
 *      gradients continuing from sub-chunk to sub-chunk (the layers'
 *      sequential accumulation), dγ and dβ the group's sums.
 * Cost, for B batch-norm layers: 2B partial forward sweeps, B sweeps of
 * forward and partial input-gradient backward, and one whole pass. Each
 * value is computed by the same kernels in the same order as in one pass
 * over the group, so the bytes are the same (test_batchnorm_budget).
 * Dropout (training) draws from one stream per layer, each starting where
 * the whole pass's layer would start (the generator advanced past the
 * layers before), so that the masks are the whole pass's. */

/* Rows [first, first + count) of a group's input into x, labels, targets. */
static void group_rows(const lca_group_input *in, size_t first, size_t count, size_t features,
                       size_t outputs, const float **x, const int32_t **labels,
                       const float **targets) {
    const lca_dataset *data = in->data;
    bool whole = in->x || in->labels || in->targets; /* labels, targets given for all n */
    if (in->x) {
        *x = in->x + first * features;
    } else {
        lca_dataset_gather(data, in->indices + first, count, in->x_rows,
                           !whole && data->labels ? in->label_rows : NULL,
                           !whole && data->targets ? in->target_rows : NULL);
        *x = in->x_rows;
    }
    if (whole) {
        *labels = in->labels ? in->labels + first : NULL;
        *targets = in->targets ? in->targets + first * outputs : NULL;
    } else {
        *labels = data->labels ? in->label_rows : NULL;
        *targets = data->targets ? in->target_rows : NULL;
    }
}

/* One sweep over the group's sub-chunks with the settings in ps: forward
 * (to ps->stop), and unless it stopped the loss (into *loss_sum when
 * given) and, with gradient, the backward (to ps->stop_back). */
static lca_status sweep(lca_model *m, const float *parameters, const lca_group_input *in,
                        pass *ps, size_t n, size_t chunk, const lca_rng *streams,
                        double gradient_scale, double *loss_sum, float *gradient) {
    size_t features = lca_model_input_size(m), outputs = lca_model_output_size(m);
    if (streams) memcpy(ps->layer_rng, streams, m->layer_count * sizeof *streams);
    double sum = 0.0;
    for (size_t first = 0; first < n; first += chunk) {
        size_t count = n - first < chunk ? n - first : chunk;
        const int32_t *labels;
        const float *targets;
        group_rows(in, first, count, features, outputs, &ps->x, &labels, &targets);
        ps->n = count;
        ps->rows_mask = in->mask ? in->mask + first : NULL;
        if (!targets) {
            lca_status status = check_labels_from(labels, count, outputs, first);
            if (status != LCA_OK) return status;
        }
        const float *inputs[LCA_MAX_LAYERS];
        const float *logits = forward(m, parameters, ps, inputs);
        if (!logits) continue;
        sum = add_loss(m, ps, logits, labels, targets, gradient_scale, sum, gradient != NULL);
        if (loss_sum && !isfinite(sum))
            return lca_fail(LCA_ERR_NUMERIC, "loss is not finite (%g): training diverged; "
                                             "try a smaller learning rate", sum);
        if (gradient) backward(m, parameters, ps, inputs, logits, gradient, first > 0);
    }
    if (loss_sum) *loss_sum = sum;
    return LCA_OK;
}

static lca_status group_pass(lca_model *m, const float *parameters, const lca_group_input *in,
                             pass ps, size_t n, size_t chunk, double gradient_scale,
                             double *loss_sum, float *gradient) {
    if (n == 0 || chunk == 0 || chunk > m->max_batch)
        return lca_fail(LCA_ERR_STATE, "model: sub-chunks of %zu examples but workspace "
                                       "reserved for %zu", chunk, m->max_batch);
    bool whole = in->x || in->labels || in->targets;
    if (!in->x && !(in->data && in->x_rows))
        return lca_fail(LCA_ERR_STATE, "model: no input for a group pass");
    if (!whole && (in->data->labels ? !in->label_rows : !in->target_rows))
        return lca_fail(LCA_ERR_STATE, "model: no label or target rows for a group pass");
    if (!whole ? !in->data->labels && !in->data->targets : !in->labels && !in->targets)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: neither labels nor targets given");
    if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && (whole ? !in->labels : !in->data->labels))
        return lca_fail(LCA_ERR_MISMATCH, "softmax cross-entropy needs integer labels, "
                                          "but the data set has float targets");
    ps.grouped = true;
    ps.group_n = n;
    ps.stop = ps.stop_back = SIZE_MAX;
    ps.feature_major = false;
    bool train = ps.mode == LCA_PASS_TRAIN;
    /* dropout: each layer's stream where the whole pass would start it */
    lca_rng streams[LCA_MAX_LAYERS], layer_rng[LCA_MAX_LAYERS];
    bool dropout = false;
    if (train && ps.rng) {
        lca_rng next = *ps.rng;
        for (size_t l = 0; l < m->layer_count; l++) {
            const lca_layer *L = &m->layers[l];
            streams[l] = next;
            if (L->kind != LCA_LAYER_DROPOUT || !(L->p > 0.0f)) continue;
            dropout = true;
            for (size_t i = 0, draws = n * L->out_size; i < draws; i++) lca_rng_next(&next);
        }
        *ps.rng = next; /* where the whole pass leaves it */
        ps.layer_rng = layer_rng;
    }
    const lca_rng *from = dropout ? streams : NULL;
    lca_status status = LCA_OK;
    /* 1. statistics, layer by layer */
    for (size_t l = 0; l < m->layer_count && status == LCA_OK; l++) {
        lca_layer *L = &m->layers[l];
        if (L->kind != LCA_LAYER_BATCHNORM) continue;
        size_t c = L->out_c;
        double count = (double)(n * L->in_h * L->in_w);
        memset(L->group_sums, 0, 4 * c * sizeof *L->group_sums);
        ps.stop = l;
        ps.phase = PHASE_SUM;
        status = sweep(m, parameters, in, &ps, n, chunk, from, gradient_scale, NULL, NULL);
        if (status != LCA_OK) break;
        lca_batchnorm_group_mean(L->group_mean, L->group_sums, c, count);
        ps.phase = PHASE_SQUARES;
        status = sweep(m, parameters, in, &ps, n, chunk, from, gradient_scale, NULL, NULL);
        if (status != LCA_OK) break;
        float *batch_mean = L->running_mean + 2 * c, *batch_var = batch_mean + c;
        lca_batchnorm_group_statistics(L->saved_mean, L->saved_invstd, train ? batch_mean : NULL,
                                       train ? batch_var : NULL, L->group_mean, L->group_sums + c,
                                       c, count, m->bn_epsilon);
        if (train) {
            float mo = m->bn_momentum;
            for (size_t i = 0; i < c; i++) {
                L->running_mean[i] = (1.0f - mo) * L->running_mean[i] + mo * batch_mean[i];
                L->running_var[i] = (1.0f - mo) * L->running_var[i] + mo * batch_var[i];
            }
        }
    }
    ps.stop = SIZE_MAX;
    /* 2. backward sums, from the top */
    ps.parameters = false;
    for (size_t l = m->layer_count; gradient && status == LCA_OK && l-- > 0;) {
        if (m->layers[l].kind != LCA_LAYER_BATCHNORM) continue;
        ps.stop_back = l;
        status = sweep(m, parameters, in, &ps, n, chunk, from, gradient_scale, NULL, gradient);
    }
    /* 3. the pass itself */
    ps.stop_back = SIZE_MAX;
    ps.parameters = true;
    if (status == LCA_OK)
        status = sweep(m, parameters, in, &ps, n, chunk, from, gradient_scale, loss_sum,
                       gradient);
    return status;
}

lca_status lca_model_forward_backward_group(lca_model *m, const float *parameters,
                                            const lca_group_input *input, size_t n,
                                            size_t chunk, size_t bn_group,
                                            double gradient_scale, double *loss_sum,
                                            float *gradient) {
    if (bn_group != 0 && n > bn_group && lca_model_batchnorm_count(m) > 0)
        return lca_fail(LCA_ERR_STATE, "model: a group pass of %zu examples, groups of %zu", n,
                        bn_group);
    pass ps = {.mode = LCA_PASS_EVALUATE, .n = n, .bn_group = bn_group, .stop = SIZE_MAX,
               .stop_back = SIZE_MAX, .parameters = true, .mask = input->mask};
    if (n > chunk)
        return group_pass(m, parameters, input, ps, n, chunk, gradient_scale, loss_sum, gradient);
    /* the whole group fits: one pass */
    const float *x;
    const int32_t *labels;
    const float *targets;
    group_rows(input, 0, n, lca_model_input_size(m), lca_model_output_size(m), &x, &labels,
               &targets);
    lca_model_input whole = {.x = x};
    return run(m, parameters, labels, targets, &whole, ps, gradient_scale, loss_sum, gradient,
               false);
}

lca_status lca_model_forward_kept(lca_model *m, const float *parameters,
                                  const lca_group_input *input, size_t n, size_t bn_group,
                                  lca_kept_forward *kept) {
    if (n == 0 || n > m->max_batch)
        return lca_fail(LCA_ERR_STATE, "model: %zu examples but workspace reserved for %zu", n,
                        m->max_batch);
    if (lca_model_streams_input(m))
        return lca_fail(LCA_ERR_STATE, "model: a kept forward is for nets that do not stream "
                                       "their input");
    const float *x;
    group_rows(input, 0, n, lca_model_input_size(m), lca_model_output_size(m), &x, &kept->labels,
               &kept->targets);
    if (!kept->labels && !kept->targets)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: neither labels nor targets given");
    if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && !kept->labels)
        return lca_fail(LCA_ERR_MISMATCH, "softmax cross-entropy needs integer labels, "
                                          "but the data set has float targets");
    if (!kept->targets) {
        lca_status status = check_labels(kept->labels, n, lca_model_output_size(m));
        if (status != LCA_OK) return status;
    }
    pass ps = {.mode = LCA_PASS_EVALUATE, .n = n, .bn_group = bn_group, .stop = SIZE_MAX,
               .stop_back = SIZE_MAX, .parameters = true, .x = x};
    kept->n = n;
    kept->bn_group = bn_group;
    kept->x = x;
    kept->backward_passes = 0;
    kept->logits = forward(m, parameters, &ps, kept->inputs);
    return LCA_OK;
}

lca_status lca_model_backward_kept(lca_model *m, const float *parameters,
                                   lca_kept_forward *kept, const uint8_t *mask,
                                   double gradient_scale, double *loss_sum, float *gradient) {
    pass ps = {.mode = LCA_PASS_EVALUATE, .n = kept->n, .bn_group = kept->bn_group,
               .stop = SIZE_MAX, .stop_back = SIZE_MAX, .parameters = true, .mask = mask,
               .rows_mask = mask, .x = kept->x};
    const float *inputs[LCA_MAX_LAYERS]; /* backward takes a mutable array */
    memcpy(inputs, kept->inputs, m->layer_count * sizeof *inputs);
    const float *logits = kept->logits;
    if (m->recompute && kept->backward_passes > 0) {
        /* a recomputing net: the backward pass before left the first
         * segment's activations where the last segment's were; recompute
         * the last segment (the same bytes, as in backward) */
        pass again = ps;
        again.again = true;
        size_t first = m->segment_start[m->segment_count - 1];
        logits = forward_layers(m, parameters, &again, inputs, first, m->layer_count,
                                first == 0 ? kept->x : inputs[first]);
    }
    double sum = add_loss(m, &ps, logits, kept->labels, kept->targets, gradient_scale, 0.0,
                          gradient != NULL);
    if (!isfinite(sum))
        return lca_fail(LCA_ERR_NUMERIC, "loss is not finite (%g): training diverged; "
                                         "try a smaller learning rate", sum);
    if (gradient) {
        backward(m, parameters, &ps, inputs, logits, gradient, false);
        kept->backward_passes++;
    }
    *loss_sum = sum;
    return LCA_OK;
}

lca_status lca_model_train_gradient(lca_model *m, const lca_model_input *input,
                                    const int32_t *labels, const float *targets, size_t n,
                                    double *loss_sum, float *gradient, lca_rng *rng) {
    pass ps = {.mode = LCA_PASS_TRAIN, .n = n, .bn_group = n, .rng = rng, .stop = SIZE_MAX,
               .stop_back = SIZE_MAX, .parameters = true};
    return run(m, m->parameters, labels, targets, input, ps, 1.0 / (double)n, loss_sum, gradient,
               false);
}

lca_status lca_model_train_gradient_group(lca_model *m, const lca_group_input *input, size_t n,
                                          size_t chunk, double *loss_sum, float *gradient,
                                          lca_rng *rng) {
    pass ps = {.mode = LCA_PASS_TRAIN, .n = n, .bn_group = n, .rng = rng, .stop = SIZE_MAX,
               .stop_back = SIZE_MAX, .parameters = true};
    return group_pass(m, m->parameters, input, ps, n, chunk, 1.0 / (double)n, loss_sum, gradient);
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
