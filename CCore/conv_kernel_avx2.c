/* conv_kernel_avx2.c: the direct convolution of one example with AVX2 and
 * FMA (the contract and the input layouts are lca_conv_direct's,
 * internal.h; layers_conv.c chooses the kernel).
 *
 * As conv_kernel_avx512.c (layouts, order) with 8-lane vectors: a register
 * tile of 4 output channels × 2 vectors of 8 pixels (8 ymm accumulators + 2
 * input vectors + a broadcast: 4 × 3 would take all 16 registers and the
 * compiler spills); each step (i, kh, kw) is 8 FMAs for 6 loads.
 *
 * Order: each output is 0, then fma over (i, kh, kw) in that order, then
 * + bias (when given): the order of the im2col product (k = i·K·K + kh·K +
 * kw), so the FMA families give the same bytes whichever kernel runs. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

enum { ROWS = 4, VECS = 2, LANES = 8 };

/* Lanes [8 − n, 16 − n) of this table, loaded as 8 ints, are a mask of the
 * first n lanes (0 ≤ n ≤ 8). */
static const int32_t lane_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* Vectors [v0, v0 + VECS) over every output channel; `whole` (a constant)
 * when all of them exist with 16 lanes: no masks. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
direct_tile(const lca_conv_direct *d, size_t v0, const bool whole) {
    size_t ohw = d->oh * d->ow, steps = d->in_c * d->kh_n * d->kw_n;
    size_t per_row = (d->ow + LANES - 1) / LANES, vectors = d->span ? (ohw + LANES - 1) / LANES
                                                                     : d->oh * per_row;
    size_t in_off[VECS], out_off[VECS];
    __m256i mask[VECS];
    for (size_t v = 0; v < VECS; v++) {
        size_t vector = v0 + v, lanes = 0;
        in_off[v] = 0, out_off[v] = 0;
        if (vector < vectors && d->span) {
            size_t first = vector * LANES;
            lanes = ohw - first < LANES ? ohw - first : LANES;
            in_off[v] = out_off[v] = first;
        } else if (vector < vectors) {
            size_t oh = vector / per_row, ow = vector % per_row * LANES;
            lanes = d->ow - ow < LANES ? d->ow - ow : LANES;
            in_off[v] = oh * d->row + ow;
            out_off[v] = oh * d->ow + ow;
        }
        mask[v] = _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - lanes));
    }
    for (size_t o0 = 0; o0 < d->out_c; o0 += ROWS) {
        const float *w = d->wp + o0 * steps; /* steps × ROWS */
        __m256 acc[ROWS][VECS];
        _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++)
            _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++)
                acc[r][v] = _mm256_setzero_ps();
        for (size_t i = 0; i < d->in_c; i++) {
            for (size_t kh = 0; kh < d->kh_n; kh++) {
                const float *x = d->xs + i * d->plane + d->kh_off[kh];
                for (size_t kw = 0; kw < d->kw_n; kw++, w += ROWS, x += d->kw_step) {
                    __m256 b[VECS];
                    _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++)
                        b[v] = whole ? _mm256_loadu_ps(x + in_off[v])
                                     : _mm256_maskload_ps(x + in_off[v], mask[v]);
                    _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++) {
                        __m256 a = _mm256_broadcast_ss(w + r);
                        _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++)
                            acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
                    }
                }
            }
        }
        size_t rows = d->out_c - o0 < ROWS ? d->out_c - o0 : ROWS;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++) {
            if ((size_t)r >= rows) continue;
            float *y = d->y + (o0 + (size_t)r) * ohw;
            __m256 bias = _mm256_set1_ps(d->bias != NULL ? d->bias[o0 + r] : 0.0f);
            _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++) {
                __m256 out = d->bias != NULL ? _mm256_add_ps(acc[r][v], bias) : acc[r][v];
                if (whole) _mm256_storeu_ps(y + out_off[v], out);
                else _mm256_maskstore_ps(y + out_off[v], mask[v], out);
            }
        }
    }
}

__attribute__((target("avx2,fma"), noinline)) static void tile_whole(const lca_conv_direct *d,
                                                                   size_t v0) {
    direct_tile(d, v0, true);
}
__attribute__((target("avx2,fma"), noinline)) static void tile_masked(const lca_conv_direct *d,
                                                                    size_t v0) {
    direct_tile(d, v0, false);
}

__attribute__((target("avx2,fma"))) void lca_conv_direct_avx2(const lca_conv_direct *d) {
    size_t ohw = d->oh * d->ow, per_row = (d->ow + LANES - 1) / LANES;
    size_t vectors = d->span ? (ohw + LANES - 1) / LANES : d->oh * per_row;
    /* whole tiles: VECS vectors of LANES lanes each */
    size_t whole = d->span ? ohw / LANES : d->ow % LANES == 0 ? vectors : 0;
    for (size_t v0 = 0; v0 < vectors; v0 += VECS) {
        if (v0 + VECS <= whole) tile_whole(d, v0);
        else tile_masked(d, v0);
    }
}

/* The weight gradient's tile on the direct path (lca_conv_wgrad, internal.h):
 * 6 rows × 16 columns (12 ymm accumulators + 2 vectors of dy + a
 * broadcast), the shape of the GEMM's AVX2 tile. */
__attribute__((target("avx2,fma"))) void lca_conv_wgrad_avx2(size_t depth, const float *const *a,
                                                            const float *b, size_t nr,
                                                            bool load_c, float *c, size_t ldc,
                                                            size_t rows, size_t cols) {
    (void)nr; /* 16 */
    __m256 acc[6][2];
    size_t cols_0 = cols < 8 ? cols : 8, cols_1 = cols - cols_0;
    __m256i mask[2] = {_mm256_loadu_si256((const __m256i *)(lane_masks + 8 - cols_0)),
                       _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - cols_1))};
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++)
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++)
            acc[r][h] = load_c && (size_t)r < rows
                            ? _mm256_maskload_ps(c + (size_t)r * ldc + 8 * h, mask[h])
                            : _mm256_setzero_ps();
    const float *row[6];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++) row[r] = a[r];
    for (size_t q = 0; q < depth; q++, b += 16) {
        __m256 b_0 = _mm256_loadu_ps(b), b_1 = _mm256_loadu_ps(b + 8);
        _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++) {
            __m256 a_r = _mm256_broadcast_ss(row[r] + q);
            acc[r][0] = _mm256_fmadd_ps(a_r, b_0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a_r, b_1, acc[r][1]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++) {
        if ((size_t)r >= rows) continue;
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++)
            _mm256_maskstore_ps(c + (size_t)r * ldc + 8 * h, mask[h], acc[r][h]);
    }
}

/* lca_conv_transpose_8_avx2 (internal.h): 8 × 8 blocks transposed in
 * registers (unpack, shuffle, lane permute); the edges in scalar C. */
__attribute__((target("avx2"))) void lca_conv_transpose_8_avx2(const float *in, size_t in_step,
                                                              float *out, size_t out_step,
                                                              size_t depth, size_t rows) {
    size_t q = 0;
    if (rows == 8) {
        for (; q + 8 <= depth; q += 8) {
            __m256 r[8], t[8], u[8];
            for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(in + (size_t)j * in_step + q);
            for (int j = 0; j < 8; j += 2) {
                t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
                t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
            }
            for (int j = 0; j < 8; j += 4) {
                u[j] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
                u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
                u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
                u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            for (int j = 0; j < 4; j++) {
                _mm256_storeu_ps(out + (q + (size_t)j) * out_step,
                                 _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
                _mm256_storeu_ps(out + (q + (size_t)j + 4) * out_step,
                                 _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
            }
        }
    }
    for (; q < depth; q++)
        for (size_t j = 0; j < 8; j++) out[q * out_step + j] = j < rows ? in[j * in_step + q] : 0.0f;
}

/* lca_gather2_avx2 (internal.h): to[o] = from[2·o], 8 at a time from two
 * loads (the second masked) and a shuffle; reads nothing past
 * from[2·count − 2]. */
__attribute__((target("avx2"))) void lca_gather2_avx2(float *to, const float *from,
                                                     size_t count) {
    static const int32_t seven[8] = {-1, -1, -1, -1, -1, -1, -1, 0};
    __m256i mask = _mm256_loadu_si256((const __m256i *)seven);
    size_t o = 0;
    for (; o + 8 <= count; o += 8) {
        /* from[2o + 15] is not needed and may be past the end */
        __m256 a = _mm256_loadu_ps(from + 2 * o), b = _mm256_maskload_ps(from + 2 * o + 8, mask);
        /* [a0 a2 b0 b2 | a4 a6 b4 b6] → [a0 a2 a4 a6 b0 b2 b4 b6] */
        __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        _mm256_storeu_ps(to + o, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                     _mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0))));
    }
    for (; o < count; o++) to[o] = from[2 * o];
}

/* lca_bn_apply_avx2, lca_bn_dx_avx2 (internal.h): 8 floats a step, the
 * tail in scalar C with the same operations; no FMA (target avx2 alone). */
__attribute__((target("avx2"))) void lca_bn_apply_avx2(float *xhat, float *out, const float *in,
                                                      size_t count, float mean, float invstd,
                                                      float gamma, float beta) {
    __m256 m = _mm256_set1_ps(mean), s = _mm256_set1_ps(invstd), g = _mm256_set1_ps(gamma),
           b = _mm256_set1_ps(beta);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 x = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(in + i), m), s);
        if (xhat != NULL) _mm256_storeu_ps(xhat + i, x);
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_mul_ps(g, x), b));
    }
    for (; i < count; i++) { /* target avx2 without fma: nothing contracts */
        float x = (in[i] - mean) * invstd;
        if (xhat != NULL) xhat[i] = x;
        out[i] = gamma * x + beta;
    }
}

__attribute__((target("avx2"))) void lca_bn_dx_avx2(float *dx, const float *dy,
                                                   const float *xhat, size_t count, float scale,
                                                   float mean_dy, float mean_dy_xhat) {
    __m256 sc = _mm256_set1_ps(scale), m = _mm256_set1_ps(mean_dy),
           mx = _mm256_set1_ps(mean_dy_xhat);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(dy + i), m);
        d = _mm256_sub_ps(d, _mm256_mul_ps(_mm256_loadu_ps(xhat + i), mx));
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(sc, d));
    }
    for (; i < count; i++) dx[i] = scale * (dy[i] - mean_dy - xhat[i] * mean_dy_xhat);
}

/* lca_lanes2_avx2 (internal.h): Σa and Σa·b in one pass over a. */
__attribute__((target("avx2"))) void lca_lanes2_avx2(double sum[8], double product[8],
                                                    const float *a, const float *b,
                                                    size_t count) {
    __m256d s[2] = {_mm256_loadu_pd(sum), _mm256_loadu_pd(sum + 4)};
    __m256d p[2] = {_mm256_loadu_pd(product), _mm256_loadu_pd(product + 4)};
    for (size_t i = 0; i < count; i += 8) {
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
            __m256d x = _mm256_cvtps_pd(_mm_loadu_ps(a + i + 4 * h));
            s[h] = _mm256_add_pd(s[h], x);
            p[h] = _mm256_add_pd(p[h], _mm256_mul_pd(x, _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4 * h))));
        }
    }
    _mm256_storeu_pd(sum, s[0]);
    _mm256_storeu_pd(sum + 4, s[1]);
    _mm256_storeu_pd(product, p[0]);
    _mm256_storeu_pd(product + 4, p[1]);
}

/* lca_lanes_avx2 (internal.h): the 8 float64 lanes in two ymm (lanes 0-3,
 * 4-7), widened with vcvtps2pd; no FMA (the terms round as the C loops). */
__attribute__((target("avx2"), always_inline)) static inline void
lanes_run(double lane[8], const float *a, const float *v, size_t count, double mean,
          const lca_lanes_op op) {
    __m256d acc[2] = {_mm256_loadu_pd(lane), _mm256_loadu_pd(lane + 4)};
    __m256d m = _mm256_set1_pd(mean);
    for (size_t i = 0; i < count; i += 8) {
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
            __m256d x = _mm256_cvtps_pd(_mm_loadu_ps(v + i + 4 * h)), t;
            if (op == LCA_LANES_SUM) {
                t = x;
            } else if (op == LCA_LANES_SQ) {
                __m256d d = _mm256_sub_pd(x, m);
                t = _mm256_mul_pd(d, d);
            } else if (op == LCA_LANES_DEV) {
                t = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4 * h)),
                                  _mm256_sub_pd(x, m));
            } else {
                t = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4 * h)), x);
            }
            acc[h] = _mm256_add_pd(acc[h], t);
        }
    }
    _mm256_storeu_pd(lane, acc[0]);
    _mm256_storeu_pd(lane + 4, acc[1]);
}

__attribute__((target("avx2"))) void lca_lanes_avx2(double lane[8], lca_lanes_op op,
                                                   const float *a, const float *v,
                                                   size_t count, double mean) {
    switch (op) {
    case LCA_LANES_SUM: lanes_run(lane, a, v, count, mean, LCA_LANES_SUM); break;
    case LCA_LANES_SQ: lanes_run(lane, a, v, count, mean, LCA_LANES_SQ); break;
    case LCA_LANES_DEV: lanes_run(lane, a, v, count, mean, LCA_LANES_DEV); break;
    default: lanes_run(lane, a, v, count, mean, LCA_LANES_PROD); break;
    }
}

#else

void lca_conv_direct_avx2(const lca_conv_direct *d) { (void)d; } /* never chosen */
void lca_conv_wgrad_avx2(size_t depth, const float *const *a, const float *b, size_t nr,
                         bool load_c, float *c, size_t ldc, size_t rows, size_t cols) {
    (void)depth, (void)a, (void)b, (void)nr, (void)load_c, (void)c, (void)ldc, (void)rows,
        (void)cols; /* never chosen */
}
void lca_gather2_avx2(float *to, const float *from, size_t count) {
    for (size_t o = 0; o < count; o++) to[o] = from[2 * o];
}
void lca_conv_transpose_8_avx2(const float *in, size_t in_step, float *out, size_t out_step,
                               size_t depth, size_t rows) {
    for (size_t q = 0; q < depth; q++)
        for (size_t j = 0; j < 8; j++) out[q * out_step + j] = j < rows ? in[j * in_step + q] : 0.0f;
}
void lca_bn_apply_avx2(float *xhat, float *out, const float *in, size_t count, float mean,
                       float invstd, float gamma, float beta) {
    (void)xhat, (void)out, (void)in, (void)count, (void)mean, (void)invstd, (void)gamma,
        (void)beta; /* never chosen */
}
void lca_bn_dx_avx2(float *dx, const float *dy, const float *xhat, size_t count, float scale,
                    float mean_dy, float mean_dy_xhat) {
    (void)dx, (void)dy, (void)xhat, (void)count, (void)scale, (void)mean_dy,
        (void)mean_dy_xhat; /* never chosen */
}
void lca_lanes2_avx2(double sum[8], double product[8], const float *a, const float *b,
                     size_t count) {
    (void)sum, (void)product, (void)a, (void)b, (void)count; /* never chosen */
}
void lca_lanes_avx2(double lane[8], lca_lanes_op op, const float *a, const float *v,
                    size_t count, double mean) {
    (void)lane, (void)op, (void)a, (void)v, (void)count, (void)mean; /* never chosen */
}

#endif
