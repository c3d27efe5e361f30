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
    size_t k = d->k, ohw = d->oh * d->ow, steps = d->in_c * k * k;
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
            for (size_t kh = 0; kh < k; kh++) {
                const float *x = d->xs + i * d->plane + kh * d->row;
                for (size_t kw = 0; kw < k; kw++, w += ROWS, x += d->kw_step) {
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

#else

void lca_conv_direct_avx2(const lca_conv_direct *d) { (void)d; } /* never chosen */
void lca_conv_wgrad_avx2(size_t depth, const float *const *a, const float *b, size_t nr,
                         bool load_c, float *c, size_t ldc, size_t rows, size_t cols) {
    (void)depth, (void)a, (void)b, (void)nr, (void)load_c, (void)c, (void)ldc, (void)rows,
        (void)cols; /* never chosen */
}

#endif
