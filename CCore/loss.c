/* loss.c: the losses at the end of a pass, per example, with the gradient
 * of the logits: softmax cross-entropy and mean squared error, and their
 * names in logs and checkpoints. Separate from the layers because a loss
 * reduces each example to one float64 number, and from the pass driver
 * (pass.c), which only sums them. */
#include "layers.h"

#include <math.h>

const char *lca_loss_name(lca_loss_kind loss) {
    return loss == LCA_LOSS_MEAN_SQUARED_ERROR ? "mean_squared_error" : "softmax_cross_entropy";
}

/* Softmax cross-entropy on logits z (N × C): per-example losses into loss[N]
 * (stable log-sum-exp in double) and, if dz, dz = scale · (softmax − onehot).
 * Examples go TILE at a time through local arrays, with the tile padded by
 * copies of its first example, so that the loops over a tile have fixed
 * trip counts and vectorise whatever the layout (exp: lca_exp_nonpositive). */
void lca_softmax_cross_entropy(double *loss, float *dz, const float *z, const int32_t *labels,
                               size_t n, size_t classes, lca_logit_layout at, double scale) {
    enum { TILE = 8, KEPT = 64 };
    size_t tiles = (n + TILE - 1) / TILE;
    LCA_PARALLEL_FOR_IF(n * classes >= LCA_PARALLEL_WORK / 8)
    for (size_t tile = 0; tile < tiles; tile++) {
        size_t first = tile * TILE, count = n - first < TILE ? n - first : TILE;
        const float *row[TILE];
        for (size_t j = 0; j < TILE; j++) row[j] = z + (first + (j < count ? j : 0)) * at.example_step;
#define Z(j, c) row[j][(c) * at.class_step]
        double max[TILE], sum[TILE], value[TILE];
        for (size_t j = 0; j < TILE; j++) max[j] = Z(j, 0);
        for (size_t c = 1; c < classes; c++)
            for (size_t j = 0; j < TILE; j++) {
                double v = Z(j, c);
                max[j] = v > max[j] ? v : max[j];
            }
        /* exp(z − max) once per class: kept for the gradient when the
         * classes fit (the common case), recomputed otherwise */
        double kept[KEPT][TILE];
        for (size_t j = 0; j < TILE; j++) sum[j] = 0.0;
        for (size_t c = 0; c < classes; c++) {
            for (size_t j = 0; j < TILE; j++) value[j] = Z(j, c);
            for (size_t j = 0; j < TILE; j++) {
                double e = lca_exp_nonpositive(value[j] - max[j]);
                if (c < KEPT) kept[c][j] = e;
                sum[j] += e;
            }
        }
        for (size_t j = 0; j < count; j++)
            loss[first + j] = max[j] + log(sum[j]) - (double)Z(j, labels[first + j]);
        if (!dz) continue;
        for (size_t j = 0; j < TILE; j++) sum[j] = 1.0 / sum[j]; /* now the inverse */
        for (size_t c = 0; c < classes; c++) {
            for (size_t j = 0; j < TILE; j++)
                value[j] = c < KEPT ? kept[c][j] : lca_exp_nonpositive(Z(j, c) - max[j]);
            for (size_t j = 0; j < count; j++) {
                size_t r = first + j;
                dz[r * at.example_step + c * at.class_step] = (float)(
                    scale * (value[j] * sum[j] - (c == (size_t)labels[r] ? 1.0 : 0.0)));
            }
        }
#undef Z
    }
}

/* Mean squared error terms: loss[r] = Σ_c (y − t)² / C (the mean over
 * outputs; the mean over examples comes from the caller's scale), and
 * dy = scale · 2 (y − t) / C. Targets are float rows (N × C) or one-hot
 * labels. */
void lca_squared_error(double *loss, float *dy, const float *y, const int32_t *labels,
                       const float *targets, size_t n, size_t outputs, lca_logit_layout at,
                       double scale) {
    for (size_t r = 0; r < n; r++) {
        double sum = 0.0;
        for (size_t c = 0; c < outputs; c++) {
            size_t i = r * at.example_step + c * at.class_step;
            double t = targets ? targets[r * outputs + c] : (c == (size_t)labels[r] ? 1.0 : 0.0);
            double d = (double)y[i] - t;
            sum += d * d;
            if (dy) dy[i] = (float)(scale * 2.0 * d / (double)outputs);
        }
        loss[r] = sum / (double)outputs;
    }
}
