/* layers_norm.c: batch normalisation (PyTorch BatchNorm2d semantics) with
 * batch statistics in fixed groups of examples, and with running
 * statistics.
 *
 * Batch statistics of group g, channel c, over its m = n_g·HW values:
 *   μ = Σx / m,  σ² = Σ(x − μ)² / m (two passes, float64),
 *   x̂ = (x − μ)·invstd, invstd = 1/sqrt(σ² + ε),  y = γ·x̂ + β.
 * Backward, exact through μ and σ² (per group):
 *   dβ = Σ dy,  dγ = Σ dy·x̂  (summed over every group),
 *   dx = γ·invstd·(dy − mean_g(dy) − x̂·mean_g(dy·x̂)).
 *
 * The threads split the channels; each channel's sums run over examples
 * and pixels in order, in float64. Deterministic at any thread count.
 *
 * Dimension letters as in layers.h; HW = H·W (1 for a dense activation),
 * groups = ceil(N / group).
 */
#include "layers.h"

#include <math.h>

typedef struct bn_channels {
    float *y, *xhat, *saved_mean, *saved_invstd, *batch_mean, *batch_var;
    float *dx, *dgamma, *dbeta;
    const float *x, *dy, *xhat_in, *invstd_in;
    const float *gamma, *beta, *running_mean, *running_var;
    size_t n, c, hw, group;
    double epsilon;
} bn_channels;

static size_t bn_group_size(size_t n, size_t group) {
    return group == 0 || group > n ? n : group;
}

size_t lca_batchnorm_groups(size_t n, size_t group) {
    size_t size = bn_group_size(n, group);
    return size == 0 ? 0 : (n + size - 1) / size;
}

/* ------------------------------------------------------ batch statistics */

static void bn_forward_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    size_t hw = b->hw, c = b->c;
    double gamma = b->gamma[ch], beta = b->beta[ch];
    /* whole call (Chan's combination of the group statistics) */
    double total_count = 0.0, total_mean = 0.0, total_m2 = 0.0;
    for (size_t g = 0, first = 0; first < b->n; g++, first += b->group) {
        size_t last = first + b->group < b->n ? first + b->group : b->n;
        double count = (double)((last - first) * hw);
        double sum = 0.0;
        for (size_t n = first; n < last; n++) {
            const float *in = b->x + (n * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) sum += in[i];
        }
        double mean = sum / count;
        double m2 = 0.0;
        for (size_t n = first; n < last; n++) {
            const float *in = b->x + (n * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                double d = in[i] - mean;
                m2 += d * d;
            }
        }
        double invstd = 1.0 / sqrt(m2 / count + b->epsilon);
        if (b->saved_mean != NULL) b->saved_mean[g * c + ch] = (float)mean;
        if (b->saved_invstd != NULL) b->saved_invstd[g * c + ch] = (float)invstd;
        for (size_t n = first; n < last; n++) {
            size_t at = (n * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                double xhat = (b->x[at + i] - mean) * invstd;
                if (b->xhat != NULL) b->xhat[at + i] = (float)xhat;
                b->y[at + i] = (float)(gamma * xhat + beta);
            }
        }
        double delta = mean - total_mean, combined = total_count + count;
        total_mean += delta * count / combined;
        total_m2 += m2 + delta * delta * total_count * count / combined;
        total_count = combined;
    }
    if (b->batch_mean != NULL) b->batch_mean[ch] = (float)total_mean;
    if (b->batch_var != NULL)
        b->batch_var[ch] = total_count > 1.0 ? (float)(total_m2 / (total_count - 1.0)) : 0.0f;
}

void lca_batchnorm_forward_batch(float *y, float *xhat, float *saved_mean, float *saved_invstd,
                                 float *batch_mean, float *batch_var, const float *x,
                                 const float *gamma, const float *beta, size_t n, size_t c,
                                 size_t hw, size_t group, float epsilon) {
    bn_channels b = {.y = y, .xhat = xhat, .saved_mean = saved_mean,
                     .saved_invstd = saved_invstd, .batch_mean = batch_mean,
                     .batch_var = batch_var, .x = x, .gamma = gamma, .beta = beta, .n = n,
                     .c = c, .hw = hw, .group = bn_group_size(n, group), .epsilon = epsilon};
    if (hw == 0) return;
    lca_parallel_for(c, bn_forward_channel, &b);
}

static void bn_backward_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    size_t hw = b->hw, c = b->c;
    double dgamma = 0.0, dbeta = 0.0;
    for (size_t g = 0, first = 0; first < b->n; g++, first += b->group) {
        size_t last = first + b->group < b->n ? first + b->group : b->n;
        double count = (double)((last - first) * hw);
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (size_t n = first; n < last; n++) {
            size_t at = (n * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) {
                sum_dy += b->dy[at + i];
                sum_dy_xhat += (double)b->dy[at + i] * b->xhat_in[at + i];
            }
        }
        dbeta += sum_dy;
        dgamma += sum_dy_xhat;
        if (b->dx == NULL) continue;
        /* dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)); element-wise in
         * dy, so dx may be dy. */
        double scale = (double)b->gamma[ch] * b->invstd_in[g * c + ch];
        double mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
        for (size_t n = first; n < last; n++) {
            size_t at = (n * c + ch) * hw;
            for (size_t i = 0; i < hw; i++)
                b->dx[at + i] = (float)(scale * (b->dy[at + i] - mean_dy -
                                                 b->xhat_in[at + i] * mean_dy_xhat));
        }
    }
    if (b->dgamma != NULL) b->dgamma[ch] = (float)dgamma;
    if (b->dbeta != NULL) b->dbeta[ch] = (float)dbeta;
}

void lca_batchnorm_backward_batch(float *dx, float *dgamma, float *dbeta, const float *dy,
                                  const float *xhat, const float *saved_invstd,
                                  const float *gamma, size_t n, size_t c, size_t hw,
                                  size_t group) {
    bn_channels b = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .xhat_in = xhat,
                     .invstd_in = saved_invstd, .gamma = gamma, .n = n, .c = c, .hw = hw,
                     .group = bn_group_size(n, group)};
    lca_parallel_for(c, bn_backward_channel, &b);
}

/* ---------------------------------------------------- running statistics */

/* y = x·scale + shift with scale = γ/sqrt(var + ε), shift = β − mean·scale,
 * both rounded to float once per channel. Item index = n·C + c. */
static void bn_running_plane(size_t index, void *context) {
    const bn_channels *b = context;
    size_t ch = index % b->c;
    double invstd = 1.0 / sqrt((double)b->running_var[ch] + b->epsilon);
    float scale = (float)(b->gamma[ch] * invstd);
    float shift = (float)(b->beta[ch] - b->running_mean[ch] * (b->gamma[ch] * invstd));
    const float *in = b->x + index * b->hw;
    float *out = b->y + index * b->hw;
    for (size_t i = 0; i < b->hw; i++) out[i] = in[i] * scale + shift;
}

void lca_batchnorm_forward_running(float *y, const float *x, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, size_t n, size_t c, size_t hw,
                                   float epsilon) {
    bn_channels b = {.y = y, .x = x, .gamma = gamma, .beta = beta, .running_mean = running_mean,
                     .running_var = running_var, .n = n, .c = c, .hw = hw, .epsilon = epsilon};
    lca_parallel_for(n * c, bn_running_plane, &b);
}

/* The statistics are constants: dx = dy·γ·invstd, dγ = Σ dy·x̂, dβ = Σ dy
 * with x̂ = (x − mean)·invstd recomputed from x. */
static void bn_running_backward_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    size_t hw = b->hw, c = b->c;
    double mean = b->running_mean[ch];
    double invstd = 1.0 / sqrt((double)b->running_var[ch] + b->epsilon);
    float scale = (float)(b->gamma[ch] * invstd);
    double dgamma = 0.0, dbeta = 0.0;
    for (size_t n = 0; n < b->n; n++) {
        size_t at = (n * c + ch) * hw;
        for (size_t i = 0; i < hw; i++) {
            double dy = b->dy[at + i];
            dbeta += dy;
            dgamma += dy * ((b->x[at + i] - mean) * invstd);
            if (b->dx != NULL) b->dx[at + i] = b->dy[at + i] * scale;
        }
    }
    if (b->dgamma != NULL) b->dgamma[ch] = (float)dgamma;
    if (b->dbeta != NULL) b->dbeta[ch] = (float)dbeta;
}

void lca_batchnorm_backward_running(float *dx, float *dgamma, float *dbeta, const float *dy,
                                    const float *x, const float *gamma,
                                    const float *running_mean, const float *running_var,
                                    size_t n, size_t c, size_t hw, float epsilon) {
    bn_channels b = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .x = x,
                     .gamma = gamma, .running_mean = running_mean, .running_var = running_var,
                     .n = n, .c = c, .hw = hw, .epsilon = epsilon};
    lca_parallel_for(c, bn_running_backward_channel, &b);
}
