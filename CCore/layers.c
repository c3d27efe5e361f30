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

/* The residual add, y = a + b (a the main path, b the shortcut), and the
 * ReLU after it in the same sweep with relu; in blocks over the threads as
 * ReLU. y may be a (the add in place over the main path's last output). */
static void add_range(float *y, const float *a, const float *b, size_t count, bool relu) {
    if (y == a) {
        float *restrict out = y;
        const float *restrict s = b;
        for (size_t i = 0; i < count; i++) {
            float v = out[i] + s[i];
            out[i] = relu && v < 0.0f ? 0.0f : v;
        }
    } else if (y != b) {
        float *restrict out = y;
        const float *restrict m = a, *restrict s = b;
        for (size_t i = 0; i < count; i++) {
            float v = m[i] + s[i];
            out[i] = relu && v < 0.0f ? 0.0f : v;
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            float v = a[i] + b[i];
            y[i] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* dx = y > 0 ? dy + skip : 0: the residual add of a block's begin layer
 * (the main path's gradient dy plus the shortcut's, in that order) and the
 * ReLU before it in one sweep; dx may be dy or skip. */
static void relu_add_backward_range(float *dx, const float *dy, const float *skip,
                                    const float *y, size_t count) {
    if (dx == dy || dx == skip) {
        float *restrict out = dx;
        const float *restrict other = dx == dy ? skip : dy, *restrict yr = y;
        if (dx == dy)
            for (size_t i = 0; i < count; i++) {
                float g = out[i] + other[i];
                out[i] = yr[i] > 0.0f ? g : 0.0f;
            }
        else
            for (size_t i = 0; i < count; i++) {
                float g = other[i] + out[i];
                out[i] = yr[i] > 0.0f ? g : 0.0f;
            }
    } else {
        for (size_t i = 0; i < count; i++) {
            float g = dy[i] + skip[i];
            dx[i] = y[i] > 0.0f ? g : 0.0f;
        }
    }
}

typedef struct add_blocks {
    float *out;
    const float *a, *b, *y; /* y: the backward's ReLU output, or NULL */
    size_t count;
    bool relu;
} add_blocks;

/* Elements [at, at + n) of the add (forward, or backward with its ReLU). */
static void add_span(const add_blocks *r, size_t at, size_t n) {
    if (r->y)
        relu_add_backward_range(r->out + at, r->a + at, r->b + at, r->y + at, n);
    else
        add_range(r->out + at, r->a + at, r->b + at, n, r->relu);
}

static void add_block(size_t index, void *context) {
    const add_blocks *r = context;
    size_t at = index * RELU_BLOCK;
    add_span(r, at, r->count - at < RELU_BLOCK ? r->count - at : RELU_BLOCK);
}

static void add_run(const add_blocks *r) {
    size_t blocks = (r->count + RELU_BLOCK - 1) / RELU_BLOCK;
    if (blocks < 2 || lca_parallel_threads() < 2) {
        add_span(r, 0, r->count);
        return;
    }
    lca_parallel_for(blocks, add_block, (void *)r);
}

void lca_add_forward(float *y, const float *a, const float *b, size_t count, bool relu) {
    add_blocks r = {y, a, b, NULL, count, relu};
    add_run(&r);
}

void lca_add_backward(float *dx, const float *dy, const float *skip, const float *relu_y,
                      size_t count) {
    add_blocks r = {dx, dy, skip, relu_y, count, false};
    if (relu_y == NULL) {
        /* no ReLU: the plain sum, main path first */
        r.a = dy;
        r.b = skip;
    }
    add_run(&r);
}
