/* conv_kernel_avx512.c: the direct convolution of one example with AVX-512F
 * (the contract and the input layout are lca_conv_direct's, internal.h;
 * layers_conv.c chooses the kernel).
 *
 * Register tile: 4 output channels × 6 (or 4) vectors of 16 output pixels
 * (24 or 16 zmm accumulators; 4 where 6 would leave vectors of the last
 * tile empty: an 8 × 8 plane is 4 vectors). The input is read in place
 * from the padded planes (rows of whole vectors) or from K shifted copies
 * whose rows are OW wide, so that a vector spans output rows (8 × 8: two
 * rows per vector; 28 × 28: 49 whole vectors) and only the last vector of a
 * plane can be partial (lca_conv_direct, internal.h). Each step (i, kh, kw)
 * of the reduction broadcasts 4 weights and loads 6 input vectors: 24 FMAs
 * for 10 loads, no im2col, and 4 output channels divide every layer of the
 * nets (16, 32, 64, 20, 40).
 *
 * Order: each output is 0, then fma over (i, kh, kw) in that order, then
 * + bias (when given): the order of the im2col product (k = i·K·K + kh·K +
 * kw), so the FMA families give the same bytes whichever kernel runs. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

enum { ROWS = 4, LANES = 16 };

/* Vectors [v0, v0 + VECS) over every output channel (VECS 4 or 6, a
 * constant); `whole` (a constant)
 * when all of them exist with 16 lanes: no masks. */
__attribute__((target("avx512f"), always_inline)) static inline void
direct_tile(const lca_conv_direct *d, size_t v0, const bool whole, const int VECS) {
    size_t k = d->k, ohw = d->oh * d->ow, steps = d->in_c * k * k;
    size_t per_row = (d->ow + LANES - 1) / LANES, vectors = d->span ? (ohw + LANES - 1) / LANES
                                                                     : d->oh * per_row;
    size_t in_off[6], out_off[6];
    __mmask16 mask[6];
    for (size_t v = 0; v < (size_t)VECS; v++) {
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
        mask[v] = (__mmask16)(lanes == 16 ? 0xffff : (1u << lanes) - 1);
    }
    for (size_t o0 = 0; o0 < d->out_c; o0 += ROWS) {
        const float *w = d->wp + o0 * steps; /* steps × ROWS */
        __m512 acc[ROWS][6];
        _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++)
            _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++)
                acc[r][v] = _mm512_setzero_ps();
        for (size_t i = 0; i < d->in_c; i++) {
            for (size_t kh = 0; kh < k; kh++) {
                const float *x = d->xs + i * d->plane + kh * d->row;
                for (size_t kw = 0; kw < k; kw++, w += ROWS, x += d->kw_step) {
                    __m512 a[ROWS];
                    _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++)
                        a[r] = _mm512_set1_ps(w[r]);
                    _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++) {
                        __m512 b = whole ? _mm512_loadu_ps(x + in_off[v])
                                         : _mm512_maskz_loadu_ps(mask[v], x + in_off[v]);
                        _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++)
                            acc[r][v] = _mm512_fmadd_ps(a[r], b, acc[r][v]);
                    }
                }
            }
        }
        size_t rows = d->out_c - o0 < ROWS ? d->out_c - o0 : ROWS;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++) {
            if ((size_t)r >= rows) continue;
            float *y = d->y + (o0 + (size_t)r) * ohw;
            __m512 bias = _mm512_set1_ps(d->bias != NULL ? d->bias[o0 + r] : 0.0f);
            _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++) {
                __m512 out = d->bias != NULL ? _mm512_add_ps(acc[r][v], bias) : acc[r][v];
                if (whole) _mm512_storeu_ps(y + out_off[v], out);
                else _mm512_mask_storeu_ps(y + out_off[v], mask[v], out);
            }
        }
    }
}

/* Tiles of 6 and of 4 vectors: 4 × 4 where 6 would leave vectors of the
 * last tile empty (an 8 × 8 plane is 4 vectors; a 32 × 32 one 64). */
__attribute__((target("avx512f"), noinline)) static void tile_whole_6(const lca_conv_direct *d,
                                                                     size_t v0) {
    direct_tile(d, v0, true, 6);
}
__attribute__((target("avx512f"), noinline)) static void tile_masked_6(const lca_conv_direct *d,
                                                                      size_t v0) {
    direct_tile(d, v0, false, 6);
}
__attribute__((target("avx512f"), noinline)) static void tile_whole_4(const lca_conv_direct *d,
                                                                     size_t v0) {
    direct_tile(d, v0, true, 4);
}
__attribute__((target("avx512f"), noinline)) static void tile_masked_4(const lca_conv_direct *d,
                                                                      size_t v0) {
    direct_tile(d, v0, false, 4);
}

__attribute__((target("avx512f"))) void lca_conv_direct_avx512(const lca_conv_direct *d) {
    size_t ohw = d->oh * d->ow, per_row = (d->ow + LANES - 1) / LANES;
    size_t vectors = d->span ? (ohw + LANES - 1) / LANES : d->oh * per_row;
    /* whole tiles: every vector of LANES lanes */
    size_t whole = d->span ? ohw / LANES : d->ow % LANES == 0 ? vectors : 0;
    size_t empty_6 = (vectors + 5) / 6 * 6 - vectors, empty_4 = (vectors + 3) / 4 * 4 - vectors;
    size_t vecs = empty_4 < empty_6 ? 4 : 6;
    for (size_t v0 = 0; v0 < vectors; v0 += vecs) {
        bool all = v0 + vecs <= whole;
        if (vecs == 6) all ? tile_whole_6(d, v0) : tile_masked_6(d, v0);
        else all ? tile_whole_4(d, v0) : tile_masked_4(d, v0);
    }
}

/* The weight gradient's tile on the direct path (lca_conv_wgrad, internal.h):
 * 10 rows × 16 or 32 columns (10 or 20 zmm accumulators), each step one
 * broadcast per row from its own input row and one or two vectors of the
 * packed dy. With nr = 32 and cols ≤ 16 the second half is not computed. */
__attribute__((target("avx512f"), always_inline)) static inline void
wgrad_tile(size_t depth, const float *const *a, const float *b, size_t nr, bool load_c,
           float *c, size_t ldc, size_t rows, size_t cols, const int halves) {
    __m512 acc[10][2];
    __mmask16 mask[2];
    mask[0] = (__mmask16)(cols >= 16 ? 0xffff : (1u << cols) - 1);
    mask[1] = (__mmask16)(cols >= 32 ? 0xffff : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 10; r++)
        _Pragma("clang loop unroll(full)") for (int h = 0; h < halves; h++)
            acc[r][h] = load_c && (size_t)r < rows
                            ? _mm512_maskz_loadu_ps(mask[h], c + (size_t)r * ldc + 16 * h)
                            : _mm512_setzero_ps();
    const float *row[10];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 10; r++) row[r] = a[r];
    for (size_t q = 0; q < depth; q++, b += nr) {
        __m512 b_h[2];
        _Pragma("clang loop unroll(full)") for (int h = 0; h < halves; h++)
            b_h[h] = _mm512_loadu_ps(b + 16 * h);
        _Pragma("clang loop unroll(full)") for (int r = 0; r < 10; r++) {
            __m512 a_r = _mm512_set1_ps(row[r][q]);
            _Pragma("clang loop unroll(full)") for (int h = 0; h < halves; h++)
                acc[r][h] = _mm512_fmadd_ps(a_r, b_h[h], acc[r][h]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < 10; r++) {
        if ((size_t)r >= rows) continue;
        _Pragma("clang loop unroll(full)") for (int h = 0; h < halves; h++)
            _mm512_mask_storeu_ps(c + (size_t)r * ldc + 16 * h, mask[h], acc[r][h]);
    }
}

__attribute__((target("avx512f"))) void lca_conv_wgrad_avx512(size_t depth, const float *const *a,
                                                             const float *b, size_t nr,
                                                             bool load_c, float *c, size_t ldc,
                                                             size_t rows, size_t cols) {
    if (nr == 32 && cols > 16) wgrad_tile(depth, a, b, nr, load_c, c, ldc, rows, cols, 2);
    else wgrad_tile(depth, a, b, nr, load_c, c, ldc, rows, cols, 1);
}

#else

void lca_conv_direct_avx512(const lca_conv_direct *d) { (void)d; } /* never chosen */
void lca_conv_wgrad_avx512(size_t depth, const float *const *a, const float *b, size_t nr,
                           bool load_c, float *c, size_t ldc, size_t rows, size_t cols) {
    (void)depth, (void)a, (void)b, (void)nr, (void)load_c, (void)c, (void)ldc, (void)rows,
        (void)cols; /* never chosen */
}

#endif
