/* layers_pool.c: max and average pooling, window K×K, stride S, no padding.
 *
 * Every kernel works one (example, channel) plane at a time: planes are
 * independent, so the threads split them, and inside a plane the sums run
 * in a fixed order (output rows, then columns, then the window). Pooling
 * is memory-bound; no reference kernel beside these, they are the direct
 * loops already (the tests compare them with finite differences).
 *
 * Dimension letters as in internal.h (the key): planes = N·C, OH = (H − K)/S + 1.
 */
#include "layers.h"

#include <stdbool.h>
#include <string.h>

typedef struct pool_planes {
    float *y;               /* forward: y; backward: dx */
    const float *x;         /* forward: x; backward: dy */
    uint32_t *argmax;
    const uint32_t *argmax_in;
    const float *gate;      /* backward: a ReLU's output, or NULL */
    size_t h, w, oh, ow, k, stride;
} pool_planes;

static size_t pooled_size(size_t size, size_t k, size_t stride) {
    return size < k || stride == 0 ? 0 : (size - k) / stride + 1;
}

/* ------------------------------------------------------------- max pool */

/* The window's running maximum takes v when v is strictly greater (the
 * first maximum wins ties) or when v is NaN and the maximum is not (so
 * divergence stays visible). Written as selects, not branches: the data
 * decide, and mispredicted branches cost more than the comparisons. */
static inline void take_larger(float v, uint32_t at, float *best, uint32_t *best_at) {
    bool take = v > *best || (v != v && *best == *best);
    *best = take ? v : *best;
    *best_at = take ? at : *best_at;
}

static void maxpool_forward_plane(size_t plane, void *context) {
    const pool_planes *p = context;
    const float *in = p->x + plane * p->h * p->w;   /* H × W */
    float *out = p->y + plane * p->oh * p->ow;      /* OH × OW */
    uint32_t *arg = p->argmax + plane * p->oh * p->ow;
    if (p->k == 2 && p->stride == 2) {
        /* the common 2×2 window, unrolled; same order as below */
        for (size_t oh = 0; oh < p->oh; oh++) {
            const float *top = in + 2 * oh * p->w, *bottom = top + p->w;
            uint32_t row = (uint32_t)(2 * oh * p->w), next = row + (uint32_t)p->w;
            for (size_t ow = 0; ow < p->ow; ow++) {
                uint32_t col = (uint32_t)(2 * ow);
                float best = top[col];
                uint32_t best_at = row + col;
                take_larger(top[col + 1], row + col + 1, &best, &best_at);
                take_larger(bottom[col], next + col, &best, &best_at);
                take_larger(bottom[col + 1], next + col + 1, &best, &best_at);
                out[oh * p->ow + ow] = best;
                arg[oh * p->ow + ow] = best_at;
            }
        }
        return;
    }
    for (size_t oh = 0; oh < p->oh; oh++)
        for (size_t ow = 0; ow < p->ow; ow++) {
            size_t first = oh * p->stride * p->w + ow * p->stride;
            uint32_t best_at = (uint32_t)first;
            float best = in[first];
            for (size_t kh = 0; kh < p->k; kh++)
                for (size_t kw = 0; kw < p->k; kw++) {
                    size_t at = first + kh * p->w + kw;
                    take_larger(in[at], (uint32_t)at, &best, &best_at);
                }
            out[oh * p->ow + ow] = best;
            arg[oh * p->ow + ow] = best_at;
        }
}

void lca_maxpool_forward(float *y, uint32_t *argmax, const float *x, size_t n, size_t c,
                         size_t h, size_t w, size_t k, size_t stride) {
    pool_planes p = {.y = y, .x = x, .argmax = argmax, .h = h, .w = w,
                     .oh = pooled_size(h, k, stride), .ow = pooled_size(w, k, stride),
                     .k = k, .stride = stride};
    if (p.oh == 0 || p.ow == 0 || k == 0) return;
    lca_parallel_for(n * c, maxpool_forward_plane, &p);
}

static void maxpool_backward_plane(size_t plane, void *context) {
    const pool_planes *p = context;
    const float *dy = p->x + plane * p->oh * p->ow;
    const uint32_t *arg = p->argmax_in + plane * p->oh * p->ow;
    float *dx = p->y + plane * p->h * p->w;
    memset(dx, 0, p->h * p->w * sizeof(float));
    /* dx[argmax] += dy: overlapping windows (S < K) can route several
     * outputs to one input; they add up in output order. With a ReLU
     * before the pooling, only where its output is > 0 (every term at one
     * input shares the test, so the sum is the ReLU backward's). */
    if (p->gate) {
        const float *gate = p->gate + plane * p->h * p->w;
        for (size_t i = 0; i < p->oh * p->ow; i++)
            if (gate[arg[i]] > 0.0f) dx[arg[i]] += dy[i];
        return;
    }
    for (size_t i = 0; i < p->oh * p->ow; i++) dx[arg[i]] += dy[i];
}

void lca_maxpool_backward(float *dx, const float *dy, const uint32_t *argmax, size_t n,
                          size_t c, size_t h, size_t w, size_t k, size_t stride) {
    pool_planes p = {.y = dx, .x = dy, .argmax_in = argmax, .h = h, .w = w,
                     .oh = pooled_size(h, k, stride), .ow = pooled_size(w, k, stride),
                     .k = k, .stride = stride};
    if (k == 0) return;
    lca_parallel_for(n * c, maxpool_backward_plane, &p);
}

void lca_maxpool_relu_backward(float *dx, const float *dy, const uint32_t *argmax,
                               const float *relu_y, size_t n, size_t c, size_t h, size_t w,
                               size_t k, size_t stride) {
    pool_planes p = {.y = dx, .x = dy, .argmax_in = argmax, .gate = relu_y, .h = h, .w = w,
                     .oh = pooled_size(h, k, stride), .ow = pooled_size(w, k, stride),
                     .k = k, .stride = stride};
    if (k == 0) return;
    lca_parallel_for(n * c, maxpool_backward_plane, &p);
}

/* --------------------------------------------------------- average pool */

static void avgpool_forward_plane(size_t plane, void *context) {
    const pool_planes *p = context;
    const float *in = p->x + plane * p->h * p->w;
    float *out = p->y + plane * p->oh * p->ow;
    double count = (double)(p->k * p->k);
    for (size_t oh = 0; oh < p->oh; oh++)
        for (size_t ow = 0; ow < p->ow; ow++) {
            const float *window = in + oh * p->stride * p->w + ow * p->stride;
            double sum = 0.0;
            for (size_t kh = 0; kh < p->k; kh++)
                for (size_t kw = 0; kw < p->k; kw++) sum += window[kh * p->w + kw];
            out[oh * p->ow + ow] = (float)(sum / count);
        }
}

void lca_avgpool_forward(float *y, const float *x, size_t n, size_t c, size_t h, size_t w,
                         size_t k, size_t stride) {
    pool_planes p = {.y = y, .x = x, .h = h, .w = w, .oh = pooled_size(h, k, stride),
                     .ow = pooled_size(w, k, stride), .k = k, .stride = stride};
    if (p.oh == 0 || p.ow == 0 || k == 0) return;
    lca_parallel_for(n * c, avgpool_forward_plane, &p);
}

static void avgpool_backward_plane(size_t plane, void *context) {
    const pool_planes *p = context;
    const float *dy = p->x + plane * p->oh * p->ow;
    float *dx = p->y + plane * p->h * p->w;
    memset(dx, 0, p->h * p->w * sizeof(float));
    /* y = Σ_window x / K²  →  dx[window] += dy / K², outputs in order */
    float scale = (float)(1.0 / (double)(p->k * p->k));
    for (size_t oh = 0; oh < p->oh; oh++)
        for (size_t ow = 0; ow < p->ow; ow++) {
            float g = dy[oh * p->ow + ow] * scale;
            float *window = dx + oh * p->stride * p->w + ow * p->stride;
            for (size_t kh = 0; kh < p->k; kh++)
                for (size_t kw = 0; kw < p->k; kw++) window[kh * p->w + kw] += g;
        }
}

void lca_avgpool_backward(float *dx, const float *dy, size_t n, size_t c, size_t h, size_t w,
                          size_t k, size_t stride) {
    pool_planes p = {.y = dx, .x = dy, .h = h, .w = w, .oh = pooled_size(h, k, stride),
                     .ow = pooled_size(w, k, stride), .k = k, .stride = stride};
    if (k == 0) return;
    lca_parallel_for(n * c, avgpool_backward_plane, &p);
}
