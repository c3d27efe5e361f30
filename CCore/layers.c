/* layers.c: the element-wise layers, dropout and ReLU. The dense layer is
 * in layers_dense.c, the convolution in layers_conv.c, pooling in
 * layers_pool.c, batch norm in layers_norm.c.
 *
 * These are memory-bound loops over independent elements. Dropout runs on
 * the calling thread (its mask must come from one stream in order); ReLU
 * splits large activations over the threads in blocks (the same bytes).
 *
 * They often run in place (dx = dy). The compiler checks at run time that
 * the pointers are apart before it takes its vector loop, and equal
 * pointers fail that check: so the in-place case has a loop of its own,
 * with one pointer (measured: the in-place ReLU backward ran scalar, 2.5%
 * of an FC evaluation pass).
 */
#include "layers.h"

/* 1/(1 − p), rounded once to float; p = 1 drops everything (scale 0). */
static float dropout_scale(float p) {
    return p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
}

void lca_dropout_forward(float *y, uint8_t *mask, const float *x, size_t count, float p,
                         lca_rng *rng) {
    float scale = dropout_scale(p);
    for (size_t i = 0; i < count; i++) {
        /* one draw per element, in index order */
        uint8_t keep = lca_rng_uniform(rng) >= (double)p;
        mask[i] = keep;
        /* a multiplication, not a select: a NaN input stays NaN */
        y[i] = x[i] * (keep ? scale : 0.0f);
    }
}

void lca_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t count,
                          float p) {
    float scale = dropout_scale(p);
    if (dx == dy)
        for (size_t i = 0; i < count; i++) dx[i] *= mask[i] ? scale : 0.0f;
    else
        for (size_t i = 0; i < count; i++) dx[i] = dy[i] * (mask[i] ? scale : 0.0f);
}

/* ReLU runs in blocks over the threads once an activation is large (a
 * ResNet-20 group of 250 examples is 4 Mi floats per layer): elements are
 * independent, so the bytes are those of one loop. */
#define RELU_BLOCK ((size_t)1 << 16)

static void relu_forward_range(float *y, const float *x, size_t count) {
    /* x < 0 ? 0 : x keeps a NaN (max(x, 0) written as x > 0 ? x : 0 would
     * hide a diverged activation behind a zero). */
    if (y == x)
        for (size_t i = 0; i < count; i++) y[i] = y[i] < 0.0f ? 0.0f : y[i];
    else
        for (size_t i = 0; i < count; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

static void relu_backward_range(float *dx, const float *dy, const float *y, size_t count) {
    /* dy read whatever y says: a select, not a branch, so that the loop
     * vectorises (a conditional load kept it scalar, with mispredictions) */
    if (dx == dy) {
        for (size_t i = 0; i < count; i++) {
            float g = dx[i];
            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            float g = dy[i];
            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
    }
}

typedef struct relu_blocks {
    float *out;
    const float *in, *y; /* y: backward only */
    size_t count;
} relu_blocks;

static void relu_forward_block(size_t index, void *context) {
    const relu_blocks *r = context;
    size_t at = index * RELU_BLOCK, n = r->count - at < RELU_BLOCK ? r->count - at : RELU_BLOCK;
    relu_forward_range(r->out + at, r->in + at, n);
}

static void relu_backward_block(size_t index, void *context) {
    const relu_blocks *r = context;
    size_t at = index * RELU_BLOCK, n = r->count - at < RELU_BLOCK ? r->count - at : RELU_BLOCK;
    relu_backward_range(r->out + at, r->in + at, r->y + at, n);
}

void lca_relu_forward(float *y, const float *x, size_t count) {
    size_t blocks = (count + RELU_BLOCK - 1) / RELU_BLOCK;
    if (blocks < 2 || lca_parallel_threads() < 2) {
        relu_forward_range(y, x, count);
        return;
    }
    relu_blocks r = {y, x, NULL, count};
    lca_parallel_for(blocks, relu_forward_block, &r);
}

void lca_relu_backward(float *dx, const float *dy, const float *y, size_t count) {
    size_t blocks = (count + RELU_BLOCK - 1) / RELU_BLOCK;
    if (blocks < 2 || lca_parallel_threads() < 2) {
        relu_backward_range(dx, dy, y, count);
        return;
    }
    relu_blocks r = {dx, dy, y, count};
    lca_parallel_for(blocks, relu_backward_block, &r);
}
