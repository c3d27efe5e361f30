/* layers.h: forward and backward kernels of the layers and the losses. Not
 * part of the public API. Dense layers (layers_dense.c) and the
 * convolution (layers_conv.c) are products on lca_sgemm; the convolution
 * keeps a naive reference kernel beside the fast one (the dense layers'
 * reference is lca_sgemm_naive); pooling (layers_pool.c), batch norm
 * (layers_norm.c), dropout and ReLU (layers.c) and the losses (loss.c) are
 * direct loops already.
 *
 * Dimension letters: the key in internal.h (N, C, H, W, OC, OH, OW, KH, KW,
 * S, P, F, I, O).
 *
 * Conventions (as llm.c): outputs first, then inputs, weights, bias, sizes.
 * Forward overwrites its outputs. Backward takes d-prefixed gradients:
 * parameter gradients (dweight, dbias) are OVERWRITTEN with the gradient of
 * this call's batch (the caller never needs to zero them), or, where a
 * kernel takes accumulate, added to; dinput is
 * OVERWRITTEN too, and may be NULL (first layer: not needed).
 * Every fast kernel is deterministic at any thread count: threads split
 * independent outputs, never a reduction. No kernel allocates, prints or
 * fails; sizes are trusted.
 */
#ifndef LCA_LAYERS_H
#define LCA_LAYERS_H

#include "internal.h"

#include <string.h>

/* ---- dense layer (layers_dense.c): y[N×O] = x[N×I] · Wᵀ + b, W (O, I) as
 * torch.nn.Linear.weight; with relu, the ReLU of that in the same pass over
 * y (the bytes of a separate ReLU layer). */
void lca_dense_forward(float *y, const float *x, const float *w, const float *b, size_t n,
                       size_t in, size_t out, bool relu);
/* dw[O×I] = dyᵀ · x, db[O] = Σ_n dy (float32, examples in order),
 * dx[N×I] = dy · w (skipped if dx is NULL); dx is overwritten, dw and db
 * too, or, with accumulate, added to (continuing the examples before:
 * split calls give the bytes of one). */
void lca_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, size_t n, size_t in, size_t out, bool accumulate);
/* Feature-major, for an MLP's pass: yᵀ[O×N] = w · xᵀ + b (then the ReLU
 * with relu); x is the block's input rows (N × I) with x_rows, else the
 * previous layer's output xᵀ (I × N). With pre, w · xᵀ + b before the ReLU
 * is also written there (O × N). */
void lca_dense_forward_fm(float *yt, const float *x, bool x_rows, const float *w,
                          const float *b, size_t n, size_t in, size_t out, bool relu,
                          float *pre);
/* yᵀ = z, or its ReLU with relu, for z = start + s·(end − start), element
 * by element over count floats (each rounded as those three operations:
 * a subtraction, a product, a sum; never fused). */
void lca_dense_interpolate_fm(float *yt, const float *start, const float *end, float s,
                              size_t count, bool relu);
/* Backward of lca_dense_forward_fm from dyᵀ (O × N): dw = dyᵀ · x, db =
 * Σ_n dy, dxᵀ[I×N] = wᵀ · dyᵀ (skipped if dxt is NULL); with accumulate, dw
 * and db ADD to what they hold (a later block of an MLP's rows). With
 * relu_output (yᵀ of the ReLU after this layer), dyt first goes through the
 * ReLU's backward, in place. */
void lca_dense_backward_fm(float *dxt, float *dw, float *db, float *dyt,
                           const float *relu_output, const float *x, bool x_rows,
                           const float *w, size_t n, size_t in, size_t out, bool accumulate);

/* ---- 2-D convolution: y[N][OC][OH][OW] = Σ w[oc][c][kh][kw]·x[n][c][oh·S+kh−P][ow·S+kw−P] + b[oc]
 * (zero outside the input). OH = (H + 2P − KH)/S + 1 for "valid" P = 0;
 * "same" means P = (KH − 1)/2 with OH = ceil(H / S) (PyTorch padding=k//2
 * for odd kernels). The caller computes OH, OW, P and passes them.
 * workspace: at least lca_conv2d_workspace_floats(...) floats: the im2col
 * (C·KH·KW × OH·OW) plus one output (OC × OH·OW) of each of G examples,
 * then about the weights' size again (the weight gradient transposed, or
 * the weights packed for the direct kernels), where G, the examples per
 * pass, is min(N, as many as fit 4 MiB rounded down to a multiple of 4, at
 * least 1): a function of the shape only, that
 * grows with s->n only up to the budget, so a workspace sized for the
 * largest N serves every smaller N of the same layer. Its contents on entry
 * do not matter. bias may be NULL (no bias).
 * Forward y and backward dx do not depend on how the examples are chunked
 * (each element is one fixed-order dot product). dweight and dbias add the
 * examples' terms into the output one example after the other (sequential
 * accumulation, internal.h), so a call over examples [0, n) gives the same
 * bytes as calls over [0, a) and [a, n) with accumulate on the second. */
typedef struct lca_conv2d_shape {
    size_t n, c, h, w;     /* input */
    size_t oc, oh, ow;     /* output */
    size_t kh, kw;
    size_t stride;
    size_t pad_h, pad_w;   /* top and left padding */
} lca_conv2d_shape;

size_t lca_conv2d_workspace_floats(const lca_conv2d_shape *s);
/* y (N·OC·OH·OW) is overwritten. */
void lca_conv2d_forward(float *y, const float *x, const float *weight, const float *bias,
                        const lca_conv2d_shape *s, float *workspace);
/* dx (N·C·H·W, may be NULL) is overwritten; dweight (OC·C·KH·KW, may be
 * NULL) and dbias (OC, may be NULL) are overwritten, or, with accumulate,
 * added to (continuing the sequence of examples before); x is needed only
 * for dweight. */
void lca_conv2d_backward(float *dx, float *dweight, float *dbias, const float *dy,
                         const float *x, const float *weight, const lca_conv2d_shape *s,
                         float *workspace, bool accumulate);
/* For tests: true sends every shape down the im2col + GEMM path (whose y
 * and dweight are the same bytes as the direct kernels'). Not for use
 * while a convolution runs. */
extern bool lca_conv_direct_disabled;
/* Tests and benchmarks: the 1 × 1 convolutions on the strided direct path
 * too (by default they keep im2col + GEMM, measured faster). */
extern bool lca_conv_phase_1x1;
/* References: direct loops, float64 accumulation, no workspace. */
void lca_conv2d_forward_naive(float *y, const float *x, const float *weight, const float *bias,
                              const lca_conv2d_shape *s);
void lca_conv2d_backward_naive(float *dx, float *dweight, float *dbias, const float *dy,
                               const float *x, const float *weight, const lca_conv2d_shape *s);

/* ---- max pooling, window K×K, stride S, no padding: OH = (H − K)/S + 1.
 * argmax[N·C·OH·OW] records the winning input index within the example's
 * channel plane (ih·W + iw; first maximum in row-major order wins ties; a
 * NaN wins over numbers) for backward. */
void lca_maxpool_forward(float *y, uint32_t *argmax, const float *x, size_t n, size_t c,
                         size_t h, size_t w, size_t k, size_t stride);
/* dx (N·C·H·W) is overwritten: zero except the routed gradients. */
void lca_maxpool_backward(float *dx, const float *dy, const uint32_t *argmax, size_t n,
                          size_t c, size_t h, size_t w, size_t k, size_t stride);
/* The backward of a ReLU followed by max pooling in one pass: relu_y is
 * the ReLU's output (the pooling's input); a gradient is routed only where
 * relu_y at its argmax is > 0. dx is the ReLU's input gradient, the same
 * bytes as lca_maxpool_backward then lca_relu_backward. */
void lca_maxpool_relu_backward(float *dx, const float *dy, const uint32_t *argmax,
                               const float *relu_y, size_t n, size_t c, size_t h, size_t w,
                               size_t k, size_t stride);

/* ---- average pooling, window K×K, stride S, no padding. Global average
 * pooling is k = H = W, stride 1 (output N·C·1·1). */
void lca_avgpool_forward(float *y, const float *x, size_t n, size_t c, size_t h, size_t w,
                         size_t k, size_t stride);
void lca_avgpool_backward(float *dx, const float *dy, size_t n, size_t c, size_t h, size_t w,
                          size_t k, size_t stride);

/* ---- batch normalisation over N·H·W per channel (PyTorch BatchNorm2d;
 * a dense activation is the case H = W = 1).
 * Batch statistics, in groups: the N examples are split into consecutive
 * groups of `group` examples (the last may be smaller); each group is
 * normalised with its own mean and biased variance:
 *   y = γ·(x − μ_g)/sqrt(σ²_g + ε) + β
 * group = 0 (or ≥ N) means one group of all N. Statistics in float64.
 * saved: mean and inverse std per (group, channel), i.e. arrays
 * [lca_batchnorm_groups(n, group)][C], and x̂ (N·C·H·W) for backward; each
 * may be NULL when not needed. Backward is the exact gradient through the
 * group statistics; dgamma, dbeta (C) are overwritten with sums over all N,
 * dx (may be NULL, may be the same buffer as dy) is overwritten.
 * batch_mean / batch_var (C each, may be NULL) receive the statistics of the
 * whole call (for the running estimates; var unbiased as PyTorch's, 0 when
 * N·HW = 1).
 * Running statistics: eval mode uses given mean/var instead; its backward
 * treats them as constants (y may be x, dx may be dy).
 * A ReLU right after the layer (pass.c) joins it: relu applies it to y
 * plane by plane (the bytes of lca_relu_forward(y, y) after the call);
 * relu_y, its output (NULL: none), first masks dy in place by its backward
 * (the bytes of lca_relu_backward(dy, dy, relu_y) before the call). */
size_t lca_batchnorm_groups(size_t n, size_t group);
void lca_batchnorm_forward_batch(float *y, float *xhat, float *saved_mean, float *saved_invstd,
                                 float *batch_mean, float *batch_var, const float *x,
                                 const float *gamma, const float *beta, size_t n, size_t c,
                                 size_t hw, size_t group, float epsilon, bool relu);
void lca_batchnorm_backward_batch(float *dx, float *dgamma, float *dbeta, float *dy,
                                  const float *xhat, const float *saved_invstd,
                                  const float *gamma, size_t n, size_t c, size_t hw,
                                  size_t group, const float *relu_y);
/* One group over consecutive calls (a group cut into sub-chunks, pass.c):
 * the group's per-channel float64 sums live in lca_bn_sum (the lanes the
 * whole-group kernels use, carried from call to call), so that statistics,
 * x̂, y, the backward sums, dx, dγ and dβ are the bytes of
 * lca_batchnorm_forward_batch / _backward_batch on the whole group, however
 * it is cut. Order: lca_batchnorm_group_sum over every sub-chunk (sums
 * zeroed first), _group_mean, _group_squares over every sub-chunk, then
 * _group_statistics (saved mean and invstd, C each; batch_mean / batch_var
 * may be NULL); _group_normalize per sub-chunk. Backward: _backward_sums
 * over every sub-chunk (zeroed first), then _group_backward per sub-chunk
 * (dx may be NULL or dy; dγ, dβ, which may be NULL, get the group's). count
 * is the values per channel of the whole group (examples · HW). */
#define LCA_BN_LANES 8
typedef struct lca_bn_sum {
    double lane[LCA_BN_LANES];
    size_t next; /* lane of the next value */
} lca_bn_sum;
double lca_bn_sum_total(const lca_bn_sum *sum);
void lca_batchnorm_group_sum(lca_bn_sum *sum, const float *x, size_t n, size_t c, size_t hw);
void lca_batchnorm_group_mean(double *mean, const lca_bn_sum *sum, size_t c, double count);
void lca_batchnorm_group_squares(lca_bn_sum *squares, const float *x, const double *mean,
                                 size_t n, size_t c, size_t hw);
void lca_batchnorm_group_statistics(float *saved_mean, float *saved_invstd, float *batch_mean,
                                    float *batch_var, const double *mean,
                                    const lca_bn_sum *squares, size_t c, double count,
                                    float epsilon);
void lca_batchnorm_group_normalize(float *y, float *xhat, const float *x, const float *saved_mean,
                                   const float *saved_invstd, const float *gamma,
                                   const float *beta, size_t n, size_t c, size_t hw,
                                   bool relu);
void lca_batchnorm_group_backward_sums(lca_bn_sum *sum_dy, lca_bn_sum *sum_dy_xhat,
                                       float *dy, const float *xhat, size_t n, size_t c,
                                       size_t hw, const float *relu_y);
void lca_batchnorm_group_backward(float *dx, float *dgamma, float *dbeta, float *dy,
                                  const float *xhat, const float *saved_invstd,
                                  const float *gamma, const lca_bn_sum *sum_dy,
                                  const lca_bn_sum *sum_dy_xhat, double count, size_t n, size_t c,
                                  size_t hw, const float *relu_y);
void lca_batchnorm_forward_running(float *y, const float *x, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, size_t n, size_t c, size_t hw,
                                   float epsilon);
void lca_batchnorm_backward_running(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *gamma,
                                    const float *running_mean, const float *running_var,
                                    size_t n, size_t c, size_t hw, float epsilon);

/* ---- dropout (training only): y = x·mask/(1 − p), mask[i] ∈ {0, 1} drawn
 * from rng (one draw per element, in index order: mask[i] =
 * lca_rng_uniform(rng) >= p, so the same stream gives the same mask whatever
 * the threads). 1/(1 − p) is rounded to float once; p = 1 gives y = 0.
 * y may be x, dx may be dy. */
void lca_dropout_forward(float *y, uint8_t *mask, const float *x, size_t count, float p,
                         lca_rng *rng);
void lca_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t count,
                          float p);

/* ---- ReLU on count elements: y = x < 0 ? 0 : x (a NaN passes through);
 * backward masks with y > 0 (in place allowed: y may be x, dx may be dy or y). */
void lca_relu_forward(float *y, const float *x, size_t count);
void lca_relu_backward(float *dx, const float *dy, const float *y, size_t count);

/* ---- the residual add of a block (pass.c): y = a + b, a the main path and
 * b the shortcut, then with relu the ReLU after it in the same sweep (the
 * bytes of the add then lca_relu_forward); y may be a. Backward at the
 * block's begin: dx = dy + skip (main path first), and with relu_y (the
 * output of a ReLU right before the begin layer) that ReLU's backward in
 * the same sweep, dx = relu_y > 0 ? dy + skip : 0; dx may be dy or skip. */
void lca_add_forward(float *y, const float *a, const float *b, size_t count, bool relu);
void lca_add_backward(float *dx, const float *dy, const float *skip, const float *relu_y,
                      size_t count);

/* ---- losses (loss.c), per example, on the logits of a pass. Where the
 * logits (and their gradient) keep example r, class c: at r · example_step
 * + c · class_step ({C, 1} example-major, {1, N} feature-major). */
typedef struct lca_logit_layout {
    size_t example_step, class_step;
} lca_logit_layout;
/* Softmax cross-entropy on logits z (N × C): loss[N] (stable log-sum-exp in
 * float64) and, if dz is not NULL, dz = scale · (softmax − onehot(labels)). */
void lca_softmax_cross_entropy(double *loss, float *dz, const float *z, const int32_t *labels,
                               size_t n, size_t classes, lca_logit_layout at, double scale);
/* Mean squared error: loss[r] = Σ_c (y − t)² / C, and, if dy is not NULL,
 * dy = scale · 2 (y − t) / C; t is a row of targets (N × C) or, when
 * targets is NULL, onehot(labels). */
void lca_squared_error(double *loss, float *dy, const float *y, const int32_t *labels,
                       const float *targets, size_t n, size_t outputs, lca_logit_layout at,
                       double scale);

/* ---- softmax's exp (loss.c): e^x for x ≤ 0 (z − max) in plain
 * arithmetic, so that loops of it vectorise (a libm call per element does
 * not): x = k·ln 2 + r with
 * |r| ≤ ln 2 / 2, e^r by its Taylor series to r^13 (truncation error below
 * 5e-18 relative), times 2^k built in the exponent bits. Within 2 ulp of
 * exp (test_layers checks it); 0 below −708, where e^x < 2^−1021 lies below
 * half an ulp of any softmax sum (≥ 1). */
static inline double lca_exp_nonpositive(double x) {
    const double log2e = 1.4426950408889634, shifter = 0x1.8p52; /* t − shifter = round(x·log2e) */
    const double ln2_hi = 0x1.62e42fefa3800p-1, ln2_lo = 0x1.ef35793c76730p-45;
    double t = x * log2e + shifter;
    double k = t - shifter;
    double r = (x - k * ln2_hi) - k * ln2_lo; /* k·ln2_hi is exact: ln2_hi has 43 bits */
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* the low bits of t hold k (two's complement): 2^k = (k + 1023) << 52 */
    uint64_t t_bits, scale_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    scale_bits = (t_bits + 1023u) << 52;
    double two_k;
    memcpy(&two_k, &scale_bits, sizeof two_k);
    return x < -708.0 ? 0.0 : p * two_k;
}

#endif
