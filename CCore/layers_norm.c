/* layers_norm.c: batch normalisation (PyTorch BatchNorm2d semantics) with
 * batch statistics in fixed groups of examples, and with running
 * statistics.
 *
 * Batch statistics of group g, channel c, over its m = n_g·HW values:
 *   μ = Σx / m,  σ² = Σ(x − μ)² / m (two passes, float64),
 *   x̂ = (x − μ)·invstd, invstd = 1/sqrt(σ² + ε),  y = γ·x̂ + β.
 * Statistics and sums in float64; the element-wise maps in float32.
 * Backward, exact through μ and σ² (per group):
 *   dβ = Σ dy,  dγ = Σ dy·x̂  (summed over every group),
 *   dx = γ·invstd·(dy − mean_g(dy) − x̂·mean_g(dy·x̂)).
 *
 * The threads split the channels; each channel's sums run over examples
 * and pixels in order, in float64. Deterministic at any thread count.
 *
 * Dimension letters as in internal.h (the key); HW = H·W (1 for a dense activation),
 * groups = ceil(N / group).
 */
#include "layers.h"

#include <math.h>
#include <string.h>

/* Sums in float64 over 8 lanes: the k-th value added to a sum (counting
 * across calls) goes to lane k mod 8, and the lanes are combined in a fixed
 * order at the end. Eight independent chains of additions instead of one
 * latency-bound chain, and the same bytes at any thread count (the order
 * depends only on the sizes). */
#define LANES 8
typedef struct lane_sum {
    double lane[LANES];
    size_t next; /* lane of the next value */
} lane_sum;

static double lane_total(const lane_sum *s) {
    const double *l = s->lane;
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* Adds the expression term (of the index i) for i in [0, count): values up
 * to lane 0, whole runs of 8, then the rest. The whole runs go to the
 * vector kernel of the FMA families (lca_lanes_*, internal.h: the 8 lanes
 * in one zmm or two ymm, the floats widened in registers, each term rounded
 * as the C expression rounds it) or, for the portable family, to eight
 * independent additions the compiler keeps in registers: the same
 * operations on the same lanes in the same order, so the same bytes
 * whichever runs. */
#define LANE_SUM(s, count, term, op, a_, v_, mean_)                                \
    do {                                                                           \
        double lanes_[LANES];                                                      \
        memcpy(lanes_, (s)->lane, sizeof lanes_);                                  \
        size_t lane_ = (s)->next, i = 0;                                           \
        for (; i < (count) && lane_ != 0; i++, lane_ = (lane_ + 1) % LANES)        \
            lanes_[lane_] += (term);                                               \
        size_t whole_ = ((count) - i) / LANES * LANES;                             \
        lca_lanes_fn vector_ = whole_ > 0 ? lca_lanes_kernel() : NULL;             \
        if (vector_ != NULL) {                                                     \
            const float *a_at_ = (a_);                                             \
            vector_(lanes_, (op), a_at_ != NULL ? a_at_ + i : NULL, (v_) + i, whole_, \
                    (mean_));                                                      \
            i += whole_;                                                           \
        }                                                                          \
        while (i + LANES <= (count))                                               \
            for (size_t run_ = 0; run_ < LANES; run_++, i++) lanes_[run_] += (term); \
        for (; i < (count); i++, lane_ = (lane_ + 1) % LANES) lanes_[lane_] += (term); \
        memcpy((s)->lane, lanes_, sizeof lanes_);                                  \
        (s)->next = lane_;                                                         \
    } while (0)

/* Σ v */
static void lane_add(lane_sum *s, const float *v, size_t count) {
    LANE_SUM(s, count, (double)v[i], LCA_LANES_SUM, (const float *)NULL, v, 0.0);
}

/* Σ (v − mean)² */
static void lane_add_squared_deviation(lane_sum *s, const float *v, size_t count, double mean) {
    LANE_SUM(s, count, (v[i] - mean) * (v[i] - mean), LCA_LANES_SQ, (const float *)NULL, v,
             mean);
}

/* Σ a·(v − mean) */
static void lane_add_product_deviation(lane_sum *s, const float *a, const float *v,
                                       size_t count, double mean) {
    LANE_SUM(s, count, a[i] * (v[i] - mean), LCA_LANES_DEV, a, v, mean);
}

/* Σ a·b */
static void lane_add_product(lane_sum *s, const float *a, const float *b, size_t count) {
    LANE_SUM(s, count, (double)a[i] * b[i], LCA_LANES_PROD, a, b, 0.0);
}

/* Σ a and Σ a·b together (the two sums of the backward pass over dy and
 * dy·x̂), reading a once: the bytes of lane_add and lane_add_product, with
 * the whole runs in one vector pass in the FMA families. The two sums have
 * seen the same counts (the same next lane). */
static void lane_add_and_product(lane_sum *sum, lane_sum *product, const float *a,
                                 const float *b, size_t count) {
    lca_kernel_family family = lca_kernel_current();
    if ((family != LCA_KERNEL_AVX512 && family != LCA_KERNEL_AVX2) || sum->next != product->next) {
        lane_add(sum, a, count);
        lane_add_product(product, a, b, count);
        return;
    }
    size_t head = (LANES - sum->next) % LANES;
    if (head > count) head = count;
    lane_add(sum, a, head);
    lane_add_product(product, a, b, head);
    size_t whole = sum->next == 0 ? (count - head) / LANES * LANES : 0;
    if (whole > 0)
        (family == LCA_KERNEL_AVX512 ? lca_lanes2_avx512 : lca_lanes2_avx2)(
            sum->lane, product->lane, a + head, b + head, whole);
    lane_add(sum, a + head + whole, count - head - whole);
    lane_add_product(product, a + head + whole, b + head + whole, count - head - whole);
}

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
    /* whole call (Chan's combination of the group statistics) */
    double total_count = 0.0, total_mean = 0.0, total_m2 = 0.0;
    for (size_t g = 0, first = 0; first < b->n; g++, first += b->group) {
        size_t last = first + b->group < b->n ? first + b->group : b->n;
        double count = (double)((last - first) * hw);
        lane_sum sum = {{0}, 0}, squares = {{0}, 0};
        for (size_t n = first; n < last; n++) lane_add(&sum, b->x + (n * c + ch) * hw, hw);
        double mean = lane_total(&sum) / count;
        for (size_t n = first; n < last; n++)
            lane_add_squared_deviation(&squares, b->x + (n * c + ch) * hw, hw, mean);
        double m2 = lane_total(&squares);
        double invstd = 1.0 / sqrt(m2 / count + b->epsilon);
        if (b->saved_mean != NULL) b->saved_mean[g * c + ch] = (float)mean;
        if (b->saved_invstd != NULL) b->saved_invstd[g * c + ch] = (float)invstd;
        /* The element-wise part in float (statistics rounded once): it is
         * memory-bound, and float runs twice as wide. */
        float mean_f = (float)mean, invstd_f = (float)invstd;
        float gamma_f = b->gamma[ch], beta_f = b->beta[ch];
        lca_kernel_family family = lca_kernel_current();
        for (size_t n = first; n < last; n++) {
            size_t at = (n * c + ch) * hw;
            const float *restrict in = b->x + at;
            float *restrict out = b->y + at;
            /* the FMA families: the same operations in vectors (internal.h) */
            if (family == LCA_KERNEL_AVX512 || family == LCA_KERNEL_AVX2) {
                (family == LCA_KERNEL_AVX512 ? lca_bn_apply_avx512 : lca_bn_apply_avx2)(
                    b->xhat != NULL ? b->xhat + at : NULL, out, in, hw, mean_f, invstd_f,
                    gamma_f, beta_f);
                continue;
            }
            if (b->xhat != NULL) {
                float *restrict xhat = b->xhat + at;
                for (size_t i = 0; i < hw; i++) {
                    xhat[i] = (in[i] - mean_f) * invstd_f;
                    out[i] = gamma_f * xhat[i] + beta_f;
                }
            } else {
                for (size_t i = 0; i < hw; i++)
                    out[i] = gamma_f * ((in[i] - mean_f) * invstd_f) + beta_f;
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
        lane_sum lanes_dy = {{0}, 0}, lanes_dy_xhat = {{0}, 0};
        for (size_t n = first; n < last; n++) {
            size_t at = (n * c + ch) * hw;
            lane_add_and_product(&lanes_dy, &lanes_dy_xhat, b->dy + at, b->xhat_in + at, hw);
        }
        double sum_dy = lane_total(&lanes_dy), sum_dy_xhat = lane_total(&lanes_dy_xhat);
        dbeta += sum_dy;
        dgamma += sum_dy_xhat;
        if (b->dx == NULL) continue;
        /* dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)); element-wise in
         * dy, so dx may be dy. */
        float scale = (float)((double)b->gamma[ch] * b->invstd_in[g * c + ch]);
        float mean_dy = (float)(sum_dy / count), mean_dy_xhat = (float)(sum_dy_xhat / count);
        lca_kernel_family family = lca_kernel_current();
        for (size_t n = first; n < last; n++) {
            size_t at = (n * c + ch) * hw;
            const float *dy = b->dy + at, *xhat = b->xhat_in + at;
            float *dx = b->dx + at;
            /* the FMA families: the same operations in vectors (internal.h) */
            if (family == LCA_KERNEL_AVX512 || family == LCA_KERNEL_AVX2) {
                (family == LCA_KERNEL_AVX512 ? lca_bn_dx_avx512 : lca_bn_dx_avx2)(
                    dx, dy, xhat, hw, scale, mean_dy, mean_dy_xhat);
                continue;
            }
            for (size_t i = 0; i < hw; i++)
                dx[i] = scale * (dy[i] - mean_dy - xhat[i] * mean_dy_xhat);
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
    lane_sum lanes_dy = {{0}, 0}, lanes_dy_deviation = {{0}, 0};
    for (size_t n = 0; n < b->n; n++) {
        size_t at = (n * c + ch) * hw;
        lane_add(&lanes_dy, b->dy + at, hw);
        lane_add_product_deviation(&lanes_dy_deviation, b->dy + at, b->x + at, hw, mean);
        /* after the sums: dx may be dy */
        if (b->dx != NULL)
            for (size_t i = 0; i < hw; i++) b->dx[at + i] = b->dy[at + i] * scale;
    }
    /* dγ = Σ dy·x̂ = invstd · Σ dy·(x − mean) */
    if (b->dgamma != NULL) b->dgamma[ch] = (float)(lane_total(&lanes_dy_deviation) * invstd);
    if (b->dbeta != NULL) b->dbeta[ch] = (float)lane_total(&lanes_dy);
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
