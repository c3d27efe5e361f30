/* layers.h: forward and backward kernels of the layers, each with a naive
 * reference kernel beside the fast one. Not part of the public API.
 *
 * Dimension letters (used in every signature and shape comment):
 *   N  examples        C  input channels     H, W  input height, width
 *   OC output channels OH, OW output height, width
 *   KH, KW kernel size S  stride             P  padding (top/left; bottom/right
 *                                               get whatever makes OH, OW)
 *   F  features of a flat (dense) activation: C·H·W
 * Activations are channels-first, row-major: x[N][C][H][W] (as PyTorch).
 * Conv weights are (OC, C, KH, KW) as torch.nn.Conv2d.weight.
 *
 * Conventions (as llm.c): outputs first, then inputs, weights, bias, sizes.
 * Forward overwrites its outputs. Backward takes d-prefixed gradients:
 * parameter gradients (dweight, dbias) are OVERWRITTEN with the gradient of
 * this call's batch (the caller never needs to zero them); dinput is
 * OVERWRITTEN too, and may be NULL (first layer: not needed).
 * Every fast kernel is deterministic at any thread count: threads split
 * independent outputs, never a reduction.
 */
#ifndef LCA_LAYERS_H
#define LCA_LAYERS_H

#include "internal.h"

/* ---- 2-D convolution: y[N][OC][OH][OW] = Σ w[oc][c][kh][kw]·x[n][c][oh·S+kh−P][ow·S+kw−P] + b[oc]
 * (zero outside the input). OH = (H + 2P − KH)/S + 1 for "valid" P = 0;
 * "same" means P = (KH − 1)/2 with OH = ceil(H / S) (PyTorch padding=k//2
 * for odd kernels). The caller computes OH, OW, P and passes them.
 * workspace: at least lca_conv2d_workspace_floats(...) floats (im2col of
 * one example or a few, the fast kernel's choice but a pure function of the
 * sizes). bias may be NULL (no bias). */
typedef struct lca_conv2d_shape {
    size_t n, c, h, w;     /* input */
    size_t oc, oh, ow;     /* output */
    size_t kh, kw;
    size_t stride;
    size_t pad_h, pad_w;   /* top and left padding */
} lca_conv2d_shape;

size_t lca_conv2d_workspace_floats(const lca_conv2d_shape *s);
void lca_conv2d_forward(float *y, const float *x, const float *weight, const float *bias,
                        const lca_conv2d_shape *s, float *workspace);
void lca_conv2d_backward(float *dx, float *dweight, float *dbias, const float *dy,
                         const float *x, const float *weight, const lca_conv2d_shape *s,
                         float *workspace);
/* References: direct loops, float64 accumulation, no workspace. */
void lca_conv2d_forward_naive(float *y, const float *x, const float *weight, const float *bias,
                              const lca_conv2d_shape *s);
void lca_conv2d_backward_naive(float *dx, float *dweight, float *dbias, const float *dy,
                               const float *x, const float *weight, const lca_conv2d_shape *s);

/* ---- max pooling, window K×K, stride S, no padding: OH = (H − K)/S + 1.
 * argmax[N·C·OH·OW] records the winning input index within the example's
 * channel plane (first maximum in row-major order wins ties) for backward. */
void lca_maxpool_forward(float *y, uint32_t *argmax, const float *x, size_t n, size_t c,
                         size_t h, size_t w, size_t k, size_t stride);
/* dx (N·C·H·W) is overwritten: zero except the routed gradients. */
void lca_maxpool_backward(float *dx, const float *dy, const uint32_t *argmax, size_t n,
                          size_t c, size_t h, size_t w, size_t k, size_t stride);

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
 * saved: mean and inverse std per (group, channel), and x̂ (N·C·H·W) for
 * backward. Backward is the exact gradient through the group statistics.
 * batch_mean / batch_var (C each, may be NULL) receive the statistics of the
 * whole call (for the running estimates; var unbiased as PyTorch's).
 * Running statistics: eval mode uses given mean/var instead (no backward
 * through them). */
void lca_batchnorm_forward_batch(float *y, float *xhat, float *saved_mean, float *saved_invstd,
                                 float *batch_mean, float *batch_var, const float *x,
                                 const float *gamma, const float *beta, size_t n, size_t c,
                                 size_t hw, size_t group, float epsilon);
void lca_batchnorm_backward_batch(float *dx, float *dgamma, float *dbeta, const float *dy,
                                  const float *xhat, const float *saved_invstd,
                                  const float *gamma, size_t n, size_t c, size_t hw,
                                  size_t group);
void lca_batchnorm_forward_running(float *y, const float *x, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, size_t n, size_t c, size_t hw,
                                   float epsilon);

/* ---- dropout (training only): y = x·mask/(1 − p), mask[i] ∈ {0, 1} drawn
 * from rng (one draw per element, in index order, so the same stream gives
 * the same mask whatever the threads). */
void lca_dropout_forward(float *y, uint8_t *mask, const float *x, size_t count, float p,
                         lca_rng *rng);
void lca_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t count,
                          float p);

/* ---- ReLU on count elements; backward masks with y > 0 (in place allowed). */
void lca_relu_forward(float *y, const float *x, size_t count);
void lca_relu_backward(float *dx, const float *dy, const float *y, size_t count);

#endif
