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
#define LANES LCA_BN_LANES
typedef lca_bn_sum lane_sum;

static double lane_total(const lane_sum *s) {
    const double *l = s->lane;
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

double lca_bn_sum_total(const lca_bn_sum *s) { return lane_total(s); }

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
    bool relu;              /* forward: the ReLU after the layer, on y */
    float *relu_dy;         /* backward: dy, masked first by the ReLU after the layer */
    const float *relu_y;    /* that ReLU's output */
    const float *gamma, *beta, *running_mean, *running_var;
    size_t n, c, hw, group;
    double epsilon;
    /* the group kernels (a group over consecutive calls): per-channel sums */
    lca_bn_sum *sum, *squares, *sum_dy, *sum_dy_xhat;
    const lca_bn_sum *sum_dy_in, *sum_dy_xhat_in;
    const double *mean_in;
    double count;           /* values per channel in the whole group */
} bn_channels;

static size_t bn_group_size(size_t n, size_t group) {
    return group == 0 || group > n ? n : group;
}

size_t lca_batchnorm_groups(size_t n, size_t group) {
    size_t size = bn_group_size(n, group);
    return size == 0 ? 0 : (n + size - 1) / size;
}

/* ------------------------------------------------ per-channel helpers
 *
 * The one implementation of each step, for examples [first, last) of a
 * channel ch: the whole-group kernels below run them over a group in one
 * call, the group kernels (lca_batchnorm_group_*) over the sub-chunks of a
 * group in consecutive calls with the sums carried between them. Each
 * example's plane is added to the lanes in the same order either way, so a
 * group's statistics, x̂, backward sums and dx are the same bytes however
 * it is cut (test_batchnorm_budget). */

static void channel_sum(lane_sum *s, const float *x, size_t first, size_t last, size_t c,
                        size_t ch, size_t hw) {
    for (size_t n = first; n < last; n++) lane_add(s, x + (n * c + ch) * hw, hw);
}

static void channel_squares(lane_sum *s, const float *x, size_t first, size_t last, size_t c,
                            size_t ch, size_t hw, double mean) {
    for (size_t n = first; n < last; n++)
        lane_add_squared_deviation(s, x + (n * c + ch) * hw, hw, mean);
}

static double group_invstd(double m2, double count, double epsilon) {
    return 1.0 / sqrt(m2 / count + epsilon);
}

/* The ReLU after a batch norm (layers.c's operation: x < 0 ? 0 : x, a NaN
 * kept) on a plane just written, while it is in the cache: a separate ReLU
 * layer's sweep over the whole activation, saved. */
static void relu_plane(float *restrict y, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = y[i] < 0.0f ? 0.0f : y[i];
}

/* Its backward on a plane of dy before batch norm's backward reads it
 * (layers.c's: dy kept where the ReLU's output is > 0). */
static void relu_mask_plane(float *restrict dy, const float *restrict y, size_t count) {
    for (size_t i = 0; i < count; i++) {
        float g = dy[i];
        dy[i] = y[i] > 0.0f ? g : 0.0f;
    }
}

/* The element-wise part in float (statistics rounded once): it is
 * memory-bound, and float runs twice as wide. With relu, the ReLU after
 * the layer, plane by plane. */
static void channel_normalize(float *y, float *xhat_out, const float *x, size_t first,
                              size_t last, size_t c, size_t ch, size_t hw, float mean_f,
                              float invstd_f, float gamma_f, float beta_f, bool relu) {
    lca_kernel_family family = lca_kernel_current();
    for (size_t n = first; n < last; n++) {
        size_t at = (n * c + ch) * hw;
        const float *restrict in = x + at;
        float *restrict out = y + at;
        /* the FMA families: the same operations in vectors (internal.h) */
        if (family == LCA_KERNEL_AVX512 || family == LCA_KERNEL_AVX2) {
            (family == LCA_KERNEL_AVX512 ? lca_bn_apply_avx512 : lca_bn_apply_avx2)(
                xhat_out != NULL ? xhat_out + at : NULL, out, in, hw, mean_f, invstd_f, gamma_f,
                beta_f);
            if (relu) relu_plane(out, hw);
            continue;
        }
        if (xhat_out != NULL) {
            float *restrict xhat = xhat_out + at;
            for (size_t i = 0; i < hw; i++) {
                xhat[i] = (in[i] - mean_f) * invstd_f;
                out[i] = gamma_f * xhat[i] + beta_f;
            }
        } else {
            for (size_t i = 0; i < hw; i++)
                out[i] = gamma_f * ((in[i] - mean_f) * invstd_f) + beta_f;
        }
        if (relu) relu_plane(out, hw);
    }
}

/* Chan's combination of a group's statistics into the whole call's. */
static void chan_combine(double *total_count, double *total_mean, double *total_m2,
                         double count, double mean, double m2) {
    double delta = mean - *total_mean, combined = *total_count + count;
    *total_mean += delta * count / combined;
    *total_m2 += m2 + delta * delta * *total_count * count / combined;
    *total_count = combined;
}

static float unbiased_variance(double total_count, double total_m2) {
    return total_count > 1.0 ? (float)(total_m2 / (total_count - 1.0)) : 0.0f;
}

/* With relu_dy (dy itself, writable), each plane of dy first goes through
 * the backward of the ReLU after the layer (its output relu_y), in place. */
static void channel_backward_sums(lane_sum *sum_dy, lane_sum *sum_dy_xhat, const float *dy,
                                  const float *xhat, size_t first, size_t last, size_t c,
                                  size_t ch, size_t hw, float *relu_dy, const float *relu_y) {
    for (size_t n = first; n < last; n++) {
        size_t at = (n * c + ch) * hw;
        if (relu_dy != NULL) relu_mask_plane(relu_dy + at, relu_y + at, hw);
        lane_add_and_product(sum_dy, sum_dy_xhat, dy + at, xhat + at, hw);
    }
}

/* dx = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)); element-wise in dy, so
 * dx may be dy. */
static void channel_dx(float *dx_out, const float *dy_in, const float *xhat_in, size_t first,
                       size_t last, size_t c, size_t ch, size_t hw, float gamma, float invstd,
                       double sum_dy, double sum_dy_xhat, double count) {
    float scale = (float)((double)gamma * invstd);
    float mean_dy = (float)(sum_dy / count), mean_dy_xhat = (float)(sum_dy_xhat / count);
    lca_kernel_family family = lca_kernel_current();
    for (size_t n = first; n < last; n++) {
        size_t at = (n * c + ch) * hw;
        const float *dy = dy_in + at, *xhat = xhat_in + at;
        float *dx = dx_out + at;
        /* the FMA families: the same operations in vectors (internal.h) */
        if (family == LCA_KERNEL_AVX512 || family == LCA_KERNEL_AVX2) {
            (family == LCA_KERNEL_AVX512 ? lca_bn_dx_avx512 : lca_bn_dx_avx2)(
                dx, dy, xhat, hw, scale, mean_dy, mean_dy_xhat);
            continue;
        }
        for (size_t i = 0; i < hw; i++) dx[i] = scale * (dy[i] - mean_dy - xhat[i] * mean_dy_xhat);
    }
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
        channel_sum(&sum, b->x, first, last, c, ch, hw);
        double mean = lane_total(&sum) / count;
        channel_squares(&squares, b->x, first, last, c, ch, hw, mean);
        double m2 = lane_total(&squares);
        double invstd = group_invstd(m2, count, b->epsilon);
        if (b->saved_mean != NULL) b->saved_mean[g * c + ch] = (float)mean;
        if (b->saved_invstd != NULL) b->saved_invstd[g * c + ch] = (float)invstd;
        channel_normalize(b->y, b->xhat, b->x, first, last, c, ch, hw, (float)mean,
                          (float)invstd, b->gamma[ch], b->beta[ch], b->relu);
        chan_combine(&total_count, &total_mean, &total_m2, count, mean, m2);
    }
    if (b->batch_mean != NULL) b->batch_mean[ch] = (float)total_mean;
    if (b->batch_var != NULL) b->batch_var[ch] = unbiased_variance(total_count, total_m2);
}

void lca_batchnorm_forward_batch(float *y, float *xhat, float *saved_mean, float *saved_invstd,
                                 float *batch_mean, float *batch_var, const float *x,
                                 const float *gamma, const float *beta, size_t n, size_t c,
                                 size_t hw, size_t group, float epsilon, bool relu) {
    bn_channels b = {.y = y, .xhat = xhat, .saved_mean = saved_mean,
                     .saved_invstd = saved_invstd, .batch_mean = batch_mean,
                     .batch_var = batch_var, .x = x, .gamma = gamma, .beta = beta, .n = n,
                     .c = c, .hw = hw, .group = bn_group_size(n, group), .epsilon = epsilon,
                     .relu = relu};
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
        channel_backward_sums(&lanes_dy, &lanes_dy_xhat, b->dy, b->xhat_in, first, last, c, ch,
                              hw, b->relu_dy, b->relu_y);
        double sum_dy = lane_total(&lanes_dy), sum_dy_xhat = lane_total(&lanes_dy_xhat);
        dbeta += sum_dy;
        dgamma += sum_dy_xhat;
        if (b->dx == NULL) continue;
        channel_dx(b->dx, b->dy, b->xhat_in, first, last, c, ch, hw, b->gamma[ch],
                   b->invstd_in[g * c + ch], sum_dy, sum_dy_xhat, count);
    }
    if (b->dgamma != NULL) b->dgamma[ch] = (float)dgamma;
    if (b->dbeta != NULL) b->dbeta[ch] = (float)dbeta;
}

void lca_batchnorm_backward_batch(float *dx, float *dgamma, float *dbeta, float *dy,
                                  const float *xhat, const float *saved_invstd,
                                  const float *gamma, size_t n, size_t c, size_t hw,
                                  size_t group, const float *relu_y) {
    bn_channels b = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .xhat_in = xhat,
                     .invstd_in = saved_invstd, .gamma = gamma, .n = n, .c = c, .hw = hw,
                     .group = bn_group_size(n, group), .relu_dy = relu_y ? dy : NULL,
                     .relu_y = relu_y};
    lca_parallel_for(c, bn_backward_channel, &b);
}

/* ------------------------------------------ one group over several calls */

static void group_sum_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    channel_sum(&b->sum[ch], b->x, 0, b->n, b->c, ch, b->hw);
}

void lca_batchnorm_group_sum(lca_bn_sum *sum, const float *x, size_t n, size_t c, size_t hw) {
    bn_channels b = {.sum = sum, .x = x, .n = n, .c = c, .hw = hw};
    if (hw == 0) return;
    lca_parallel_for(c, group_sum_channel, &b);
}

void lca_batchnorm_group_mean(double *mean, const lca_bn_sum *sum, size_t c, double count) {
    for (size_t ch = 0; ch < c; ch++) mean[ch] = lane_total(&sum[ch]) / count;
}

static void group_squares_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    channel_squares(&b->squares[ch], b->x, 0, b->n, b->c, ch, b->hw, b->mean_in[ch]);
}

void lca_batchnorm_group_squares(lca_bn_sum *squares, const float *x, const double *mean,
                                 size_t n, size_t c, size_t hw) {
    bn_channels b = {.squares = squares, .x = x, .mean_in = mean, .n = n, .c = c, .hw = hw};
    if (hw == 0) return;
    lca_parallel_for(c, group_squares_channel, &b);
}

void lca_batchnorm_group_statistics(float *saved_mean, float *saved_invstd, float *batch_mean,
                                    float *batch_var, const double *mean,
                                    const lca_bn_sum *squares, size_t c, double count,
                                    float epsilon) {
    for (size_t ch = 0; ch < c; ch++) {
        double m2 = lane_total(&squares[ch]);
        saved_mean[ch] = (float)mean[ch];
        saved_invstd[ch] = (float)group_invstd(m2, count, epsilon);
        double total_count = 0.0, total_mean = 0.0, total_m2 = 0.0;
        chan_combine(&total_count, &total_mean, &total_m2, count, mean[ch], m2);
        if (batch_mean != NULL) batch_mean[ch] = (float)total_mean;
        if (batch_var != NULL) batch_var[ch] = unbiased_variance(total_count, total_m2);
    }
}

static void group_normalize_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    channel_normalize(b->y, b->xhat, b->x, 0, b->n, b->c, ch, b->hw, b->saved_mean[ch],
                      b->invstd_in[ch], b->gamma[ch], b->beta[ch], b->relu);
}

void lca_batchnorm_group_normalize(float *y, float *xhat, const float *x, const float *saved_mean,
                                   const float *saved_invstd, const float *gamma,
                                   const float *beta, size_t n, size_t c, size_t hw,
                                   bool relu) {
    bn_channels b = {.y = y, .xhat = xhat, .x = x, .saved_mean = (float *)saved_mean,
                     .invstd_in = saved_invstd, .gamma = gamma, .beta = beta, .n = n, .c = c,
                     .hw = hw, .relu = relu};
    if (hw == 0) return;
    lca_parallel_for(c, group_normalize_channel, &b);
}

static void group_backward_sums_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    channel_backward_sums(&b->sum_dy[ch], &b->sum_dy_xhat[ch], b->dy, b->xhat_in, 0, b->n, b->c,
                          ch, b->hw, b->relu_dy, b->relu_y);
}

void lca_batchnorm_group_backward_sums(lca_bn_sum *sum_dy, lca_bn_sum *sum_dy_xhat,
                                       float *dy, const float *xhat, size_t n, size_t c,
                                       size_t hw, const float *relu_y) {
    bn_channels b = {.sum_dy = sum_dy, .sum_dy_xhat = sum_dy_xhat, .dy = dy, .xhat_in = xhat,
                     .n = n, .c = c, .hw = hw, .relu_dy = relu_y ? dy : NULL, .relu_y = relu_y};
    lca_parallel_for(c, group_backward_sums_channel, &b);
}

static void group_dx_channel(size_t ch, void *context) {
    const bn_channels *b = context;
    if (b->relu_dy != NULL)
        for (size_t n = 0; n < b->n; n++) {
            size_t at = (n * b->c + ch) * b->hw;
            relu_mask_plane(b->relu_dy + at, b->relu_y + at, b->hw);
        }
    if (b->dx != NULL)
        channel_dx(b->dx, b->dy, b->xhat_in, 0, b->n, b->c, ch, b->hw, b->gamma[ch],
                   b->invstd_in[ch], lane_total(&b->sum_dy_in[ch]),
                   lane_total(&b->sum_dy_xhat_in[ch]), b->count);
    if (b->dgamma != NULL) b->dgamma[ch] = (float)(0.0 + lane_total(&b->sum_dy_xhat_in[ch]));
    if (b->dbeta != NULL) b->dbeta[ch] = (float)(0.0 + lane_total(&b->sum_dy_in[ch]));
}

void lca_batchnorm_group_backward(float *dx, float *dgamma, float *dbeta, float *dy,
                                  const float *xhat, const float *saved_invstd,
                                  const float *gamma, const lca_bn_sum *sum_dy,
                                  const lca_bn_sum *sum_dy_xhat, double count, size_t n, size_t c,
                                  size_t hw, const float *relu_y) {
    bn_channels b = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .xhat_in = xhat,
                     .invstd_in = saved_invstd, .gamma = gamma, .sum_dy_in = sum_dy,
                     .sum_dy_xhat_in = sum_dy_xhat, .count = count, .n = n, .c = c, .hw = hw,
                     .relu_dy = relu_y ? dy : NULL, .relu_y = relu_y};
    lca_parallel_for(c, group_dx_channel, &b);
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
