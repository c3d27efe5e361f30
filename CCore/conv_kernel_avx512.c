/* conv_kernel_avx512.c: the direct convolution of one example with AVX-512F
 * (the contract is lca_conv_direct in internal.h; layers_conv.c chooses it).
 *
 * Register tile: 4 output channels × 6 pixel vectors of 16 lanes (24 zmm
 * accumulators). A pixel vector is up to 16 consecutive outputs of one
 * output row; the vectors of a plane are numbered row by row, so a tile
 * may span rows (OW = 16: six rows; OW = 28: three rows of 16 + 12 lanes).
 * Each step (i, kh, kw) of the reduction broadcasts 4 weights and loads 6
 * input vectors straight from the padded input plane (masked to their
 * lanes), 24 FMAs for 10 loads: no im2col, and 4 output channels divide
 * every layer of the nets (16, 32, 64, 20, 40), so no row of the tile is
 * wasted.
 *
 * Order: each output is 0, then fma over (i, kh, kw) in that order, then
 * + bias (when given) — the order of the im2col product (k = i·K·K + kh·K +
 * kw), so the FMA families give the same bytes whichever kernel runs. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

enum { ROWS = 4, VECS = 6, LANES = 16 };

__attribute__((target("avx512f"))) void lca_conv_direct_avx512(const lca_conv_direct *d) {
    size_t k = d->k, wp_ = d->ow + k - 1, plane = (d->oh + k - 1) * wp_;
    size_t per_row = (d->ow + LANES - 1) / LANES, vectors = d->oh * per_row;
    size_t ohw = d->oh * d->ow, steps = d->in_c * k * k;
    for (size_t v0 = 0; v0 < vectors; v0 += VECS) {
        size_t in_off[VECS], out_off[VECS];
        __mmask16 mask[VECS];
        for (size_t v = 0; v < VECS; v++) {
            size_t vector = v0 + v;
            if (vector >= vectors) {
                in_off[v] = 0, out_off[v] = 0, mask[v] = 0;
                continue;
            }
            size_t oh = vector / per_row, ow = vector % per_row * LANES;
            size_t lanes = d->ow - ow < LANES ? d->ow - ow : LANES;
            in_off[v] = oh * wp_ + ow;
            out_off[v] = oh * d->ow + ow;
            mask[v] = (__mmask16)(lanes == 16 ? 0xffff : (1u << lanes) - 1);
        }
        for (size_t o0 = 0; o0 < d->out_c; o0 += ROWS) {
            const float *w = d->wp + o0 * steps; /* steps × ROWS */
            __m512 acc[ROWS][VECS];
            _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++)
                _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++) acc[r][v] = _mm512_setzero_ps();
            for (size_t i = 0; i < d->in_c; i++) {
                const float *x = d->xpad + i * plane;
                for (size_t kh = 0; kh < k; kh++) {
                    const float *x_row = x + kh * wp_;
                    for (size_t kw = 0; kw < k; kw++, w += ROWS) {
                        __m512 a[ROWS];
                        _Pragma("clang loop unroll(full)") for (int r = 0; r < ROWS; r++) a[r] = _mm512_set1_ps(w[r]);
                        _Pragma("clang loop unroll(full)") for (int v = 0; v < VECS; v++) {
                            __m512 b = _mm512_maskz_loadu_ps(mask[v], x_row + in_off[v] + kw);
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
                    _mm512_mask_storeu_ps(y + out_off[v], mask[v], out);
                }
            }
        }
    }
}

#else

void lca_conv_direct_avx512(const lca_conv_direct *d) { (void)d; } /* never chosen */

#endif
