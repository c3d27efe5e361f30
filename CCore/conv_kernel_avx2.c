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

enum { VECS = 2, LANES = 8 };

/* Lanes [8 − n, 16 − n) of this table, loaded as 8 ints, are a mask of the
 * first n lanes (0 ≤ n ≤ 8). */
static const int32_t lane_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* The pixels of a tile: VECS vectors from vector v0, their input and output
 * offsets and lane masks (vectors past the plane have 0 lanes). */
typedef struct pixels {
    size_t in_off[VECS], out_off[VECS];
    __m256i mask[VECS];
} pixels;

__attribute__((target("avx2,fma"), always_inline)) static inline pixels
pixels_of(const lca_conv_direct *d, size_t v0) {
    size_t ohw = d->oh * d->ow;
    size_t per_row = (d->ow + LANES - 1) / LANES, vectors = d->span ? (ohw + LANES - 1) / LANES
                                                                     : d->oh * per_row;
    pixels p;
    for (size_t v = 0; v < VECS; v++) {
        size_t vector = v0 + v, lanes = 0;
        p.in_off[v] = 0, p.out_off[v] = 0;
        if (vector < vectors && d->span) {
            size_t first = vector * LANES;
            lanes = ohw - first < LANES ? ohw - first : LANES;
            p.in_off[v] = p.out_off[v] = first;
        } else if (vector < vectors) {
            size_t oh = vector / per_row, ow = vector % per_row * LANES;
            lanes = d->ow - ow < LANES ? d->ow - ow : LANES;
            p.in_off[v] = oh * d->row + ow;
            p.out_off[v] = oh * d->ow + ow;
        }
        p.mask[v] = _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - lanes));
    }
    return p;
}

/* A register tile of R output channels (o0 …) × VECS vectors: R = 6 (12 ymm
 * accumulators + 2 input vectors + a broadcast = 15 registers) or 4. The
 * weights are packed in groups of 4 channels (internal.h); row r < na reads
 * lane la + r of the group at w0, row r ≥ na lane r − na of the group at w1
 * (a 6-row tile spans two groups; two of them cover three). `whole`: both
 * vectors have 8 lanes (no masks). KH, KW: the taps when constant (0: d's);
 * padded: the padded layout, kw_step 1 (span false), constant. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
rows_tile(const lca_conv_direct *d, const pixels *px, const float *w0, const float *w1,
          size_t o0, const int R, const int la, const int na, const bool whole, const size_t KH,
          const size_t KW, const bool padded) {
    size_t kh_n = d->kh_n, kw_n = d->kw_n;
    size_t kw_step = padded ? 1 : d->kw_step;
    size_t in0 = px->in_off[0], in1 = px->in_off[1];
    __m256 acc[6][VECS];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++)
        _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++)
            acc[r][v] = _mm256_setzero_ps();
    /* one step (i, kh, kw): 2 input vectors, R broadcasts, 2·R FMAs */
#define LCA_STEP(xk)                                                                              \
    do {                                                                                          \
        __m256 b0 = whole ? _mm256_loadu_ps((xk) + in0) : _mm256_maskload_ps((xk) + in0, px->mask[0]); \
        __m256 b1 = whole ? _mm256_loadu_ps((xk) + in1) : _mm256_maskload_ps((xk) + in1, px->mask[1]); \
        _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++) {                          \
            if (r >= R) continue;                                                                 \
            __m256 a = _mm256_broadcast_ss(r < na ? w0 + la + r : w1 + (r - na));                 \
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);                                        \
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);                                        \
        }                                                                                         \
        w0 += 4, w1 += 4;                                                                         \
        __asm__ volatile("" ::: "memory"); /* keeps the steps apart: no spills */                \
    } while (0)
    for (size_t i = 0; i < d->in_c; i++) {
        const float *xi = d->xs + i * d->plane;
        if (KH && KW) { /* constant taps: the (kh, kw) loops unrolled */
            _Pragma("clang loop unroll(full)") for (size_t kh = 0; kh < KH; kh++)
                _Pragma("clang loop unroll(full)") for (size_t kw = 0; kw < KW; kw++)
                    LCA_STEP(xi + d->kh_off[kh] + kw * kw_step);
        } else {
            for (size_t kh = 0; kh < kh_n; kh++)
                for (size_t kw = 0; kw < kw_n; kw++) LCA_STEP(xi + d->kh_off[kh] + kw * kw_step);
        }
    }
#undef LCA_STEP
    size_t ohw = d->oh * d->ow;
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++) {
        if (r >= R || o0 + (size_t)r >= d->out_c) continue;
        float *y = d->y + (o0 + (size_t)r) * ohw;
        __m256 bias = _mm256_set1_ps(d->bias != NULL ? d->bias[o0 + r] : 0.0f);
        _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++) {
            __m256 out = d->bias != NULL ? _mm256_add_ps(acc[r][v], bias) : acc[r][v];
            if (whole) _mm256_storeu_ps(y + px->out_off[v], out);
            else _mm256_maskstore_ps(y + px->out_off[v], px->mask[v], out);
        }
    }
}

/* Every output channel of the pixels at v0: 6-row tiles over each three
 * groups of 4 channels, 4-row tiles over the groups left. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
direct_tile(const lca_conv_direct *d, size_t v0, const bool whole, const size_t KH,
            const size_t KW, const bool padded) {
    pixels px = pixels_of(d, v0);
    size_t groups = (d->out_c + 3) / 4, g_step = d->in_c * d->kh_n * d->kw_n * 4, g = 0;
    for (; g + 3 <= groups; g += 3) {
        const float *w = d->wp + g * g_step;
        rows_tile(d, &px, w, w + g_step, 4 * g, 6, 0, 4, whole, KH, KW, padded);
        rows_tile(d, &px, w + g_step, w + 2 * g_step, 4 * g + 6, 6, 2, 2, whole, KH, KW, padded);
    }
    for (; g < groups; g++) {
        const float *w = d->wp + g * g_step;
        rows_tile(d, &px, w, w, 4 * g, 4, 0, 4, whole, KH, KW, padded);
    }
}

/* whole tiles: 3 × 3 on the padded layout (ResNet-20's stride-1 layers and
 * their input gradients), 3 × 3 on other layouts (stride 2), any taps */
__attribute__((target("avx2,fma"), noinline)) static void tile_3x3_padded(const lca_conv_direct *d,
                                                                        size_t v0) {
    direct_tile(d, v0, true, 3, 3, true);
}
__attribute__((target("avx2,fma"), noinline)) static void tile_3x3(const lca_conv_direct *d,
                                                                 size_t v0) {
    direct_tile(d, v0, true, 3, 3, false);
}
__attribute__((target("avx2,fma"), noinline)) static void tile_whole(const lca_conv_direct *d,
                                                                   size_t v0) {
    direct_tile(d, v0, true, 0, 0, false);
}
__attribute__((target("avx2,fma"), noinline)) static void tile_masked(const lca_conv_direct *d,
                                                                    size_t v0) {
    direct_tile(d, v0, false, 0, 0, false);
}

__attribute__((target("avx2,fma"))) void lca_conv_direct_avx2(const lca_conv_direct *d) {
    size_t ohw = d->oh * d->ow, per_row = (d->ow + LANES - 1) / LANES;
    size_t vectors = d->span ? (ohw + LANES - 1) / LANES : d->oh * per_row;
    /* whole tiles: VECS vectors of LANES lanes each */
    size_t whole = d->span ? ohw / LANES : d->ow % LANES == 0 ? vectors : 0;
    void (*tile)(const lca_conv_direct *, size_t) = tile_whole;
    if (d->kh_n == 3 && d->kw_n == 3)
        tile = !d->span && d->kw_step == 1 ? tile_3x3_padded : tile_3x3;
    for (size_t v0 = 0; v0 < vectors; v0 += VECS) {
        if (v0 + VECS <= whole) tile(d, v0);
        else tile_masked(d, v0);
    }
}

/* The weight gradient's tile on the direct path (lca_conv_wgrad, internal.h):
 * 6 rows × 16 columns (12 ymm accumulators + 2 vectors of dy + a
 * broadcast), the shape of the GEMM's AVX2 tile. `full`: 16 columns, C
 * loaded and stored without masks (masked stores are slow on AMD cores). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
wgrad_tile(size_t depth, const float *const *a, const float *b, bool load_c, float *c,
           size_t ldc, size_t rows, size_t cols, const bool full) {
    __m256 acc[6][2];
    size_t cols_0 = cols < 8 ? cols : 8, cols_1 = cols - cols_0;
    __m256i mask[2] = {_mm256_loadu_si256((const __m256i *)(lane_masks + 8 - cols_0)),
                       _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - cols_1))};
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 6; r++)
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++)
            acc[r][h] = !(load_c && (size_t)r < rows) ? _mm256_setzero_ps()
                        : full ? _mm256_loadu_ps(c + (size_t)r * ldc + 8 * h)
                               : _mm256_maskload_ps(c + (size_t)r * ldc + 8 * h, mask[h]);
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
        _Pragma("clang loop unroll(full)") for (int h = 0; h < 2; h++) {
            if (full) _mm256_storeu_ps(c + (size_t)r * ldc + 8 * h, acc[r][h]);
            else _mm256_maskstore_ps(c + (size_t)r * ldc + 8 * h, mask[h], acc[r][h]);
        }
    }
}

__attribute__((target("avx2,fma"))) void lca_conv_wgrad_avx2(size_t depth, const float *const *a,
                                                            const float *b, size_t nr,
                                                            bool load_c, float *c, size_t ldc,
                                                            size_t rows, size_t cols) {
    (void)nr; /* 16 */
    if (cols == 16) wgrad_tile(depth, a, b, load_c, c, ldc, rows, cols, true);
    else wgrad_tile(depth, a, b, load_c, c, ldc, rows, cols, false);
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
