/* layers_dense.c: the dense (fully connected) layer, y = x·Wᵀ + b, in the
 * two layouts a pass uses: example-major (N × features, beside the
 * convolutions and batch norm of a conv net) and feature-major (features ×
 * N, an MLP's whole pass; see below). Both are products on lca_sgemm plus
 * a bias loop, with the ReLU that follows folded in where the pass asks;
 * each element of a product is the same sum, in the same order, in both.
 * A file of its own like the other layer kinds (layers_conv.c, …); the
 * pass driver (pass.c) chooses the layout. */
#include "layers.h"

/* ---- example-major: activations N × features, as every other layer */

/* y[N×O] = x[N×I] · wᵀ + b, and with relu the ReLU of that in the same
 * pass over y (the bytes of a separate ReLU layer: x < 0 ? 0 : x) */
void lca_dense_forward(float *y, const float *x, const float *w, const float *b, size_t n,
                       size_t in, size_t out, bool relu) {
    lca_sgemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    LCA_PARALLEL_FOR_IF(n * out >= LCA_PARALLEL_WORK)
    for (size_t r = 0; r < n; r++) {
        float *row = y + r * out;
        if (relu) {
            for (size_t o = 0; o < out; o++) {
                float v = row[o] + b[o];
                row[o] = v < 0.0f ? 0.0f : v;
            }
        } else {
            for (size_t o = 0; o < out; o++) row[o] += b[o];
        }
    }
}

/* Backward of lca_dense_forward:
 *   dw[O×I] = dyᵀ · x, db[O] = Σ_n dy, dx[N×I] = dy · w (skipped if dx is NULL);
 * with accumulate, dw and db add to what they hold. Both sums take the
 * examples one after the other into the float32 output (dw by the GEMM's
 * sequential accumulation, db row by row), so calls over examples [0, a)
 * and [a, n) with accumulate on the second give the bytes of one call
 * (sub-unit passes of the evaluation sum, integrator.c). */
void lca_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, size_t n, size_t in, size_t out, bool accumulate) {
    lca_sgemm(true, false, out, in, n, 1.0f, dy, out, x, in, accumulate ? 1.0f : 0.0f, dw, in);
    /* bias: walked row by row so that the columns vectorise (a few hundred
     * columns: one thread) */
    if (!accumulate)
        for (size_t o = 0; o < out; o++) db[o] = 0.0f;
    for (size_t r = 0; r < n; r++) {
        const float *row = dy + r * out;
        for (size_t o = 0; o < out; o++) db[o] += row[o];
    }
    if (dx) lca_sgemm(false, false, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

/* ---- feature-major, for MLPs */

/* An MLP's pass (lca_model_streams_input, pass.c) keeps its activations and their
 * gradients feature-major: a layer's output for a block of n examples is
 * O × n, row o holding output o of every example. Every product then has
 * the layer's width as its rows (100, 50, 10: whole 10-row panels of the
 * AVX-512 kernel, where n × 100 as columns fills 100 of 112 lanes and n × 10
 * 10 of 16) and the examples as its columns, and the layers pass their
 * outputs on without transposes. Only the input rows (n × I) are
 * example-major. Each element of a product is the same sum, in the same
 * order, as in the example-major functions above (the bias sums are not:
 * sum_row). Dropout masks are drawn in this order. */

/* yᵀ[O×n] = w · xᵀ + b, then the ReLU with relu; x is the block's input
 * rows (n × I) with x_rows, else the previous layer's output xᵀ (I × n). */
void lca_dense_forward_fm(float *yt, const float *x, bool x_rows, const float *w,
                          const float *b, size_t n, size_t in, size_t out, bool relu,
                          float *pre) {
    lca_sgemm(false, x_rows, out, n, in, 1.0f, w, in, x, x_rows ? in : n, 0.0f, yt, n);
    LCA_PARALLEL_FOR_IF(n * out >= LCA_PARALLEL_WORK)
    for (size_t o = 0; o < out; o++) {
        float *row = yt + o * n, bias = b[o];
        float *pre_row = pre ? pre + o * n : NULL;
        for (size_t r = 0; r < n; r++) {
            float v = row[r] + bias;
            if (pre_row) pre_row[r] = v;
            row[r] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* The first layer between two end points (pass.c, lca_first_layer): three
 * statements, so that no compiler contracts them into an FMA on one CPU
 * and not on another. */
void lca_dense_interpolate_fm(float *yt, const float *start, const float *end, float s,
                              size_t count, bool relu) {
    LCA_PARALLEL_FOR_IF(count >= LCA_PARALLEL_WORK)
    for (size_t i = 0; i < count; i++) {
        float difference = end[i] - start[i];
        float step = s * difference;
        float v = start[i] + step;
        yt[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

/* Σ of n floats in double: eight running sums, of the elements at r ≡ j
 * (mod 8), which vectorise without reordering any of them, added up at the
 * end in a fixed order. */
static double sum_row(const float *row, size_t n) {
    enum { LANES = 8 };
    double lane[LANES] = {0};
    size_t r = 0;
    for (; r + LANES <= n; r += LANES)
        for (size_t j = 0; j < LANES; j++) lane[j] += row[r + j];
    for (size_t j = 0; r + j < n; j++) lane[j] += row[r + j];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* Backward of lca_dense_forward_fm, from dyᵀ (O × n):
 *   dw = dyᵀ · x, db = Σ_n dy (sum_row), dxᵀ[I×n] = wᵀ · dyᵀ (skipped if dxt
 *   is NULL);
 * with accumulate, dw and db add to what they hold. With relu_output (the
 * ReLU after this layer, yᵀ), dyt first goes through the ReLU's backward,
 * in place, row by row just before the row's bias sum. */
void lca_dense_backward_fm(float *dxt, float *dw, float *db, float *dyt,
                           const float *relu_output, const float *x, bool x_rows,
                           const float *w, size_t n, size_t in, size_t out, bool accumulate) {
    for (size_t o = 0; o < out; o++) {
        float *row = dyt + o * n;
        if (relu_output) lca_relu_backward(row, row, relu_output + o * n, n);
        float sum = (float)sum_row(row, n);
        db[o] = accumulate ? db[o] + sum : sum;
    }
    lca_sgemm(false, !x_rows, out, in, n, 1.0f, dyt, n, x, x_rows ? in : n,
              accumulate ? 1.0f : 0.0f, dw, in);
    if (dxt) lca_sgemm(true, false, in, n, out, 1.0f, w, in, dyt, n, 0.0f, dxt, n);
}
