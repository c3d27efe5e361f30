/* gemm_kernel_avx512.c: the 10×32 register micro-kernel for x86-64 CPUs
 * with AVX-512F.
 *
 * Why 10×32: a row of the tile is two zmm accumulators, so 20 accumulators
 * + 2 B vectors + broadcasts of A fit the 32 zmm registers, and each step of
 * k issues 20 FMAs for 12 loads (both FMA ports busy, loads to spare). The
 * layers' sizes divide by it: 100, 50, 40, 20 rows are whole MR = 10
 * panels, and 784 = 24·32 + 16, 400 = 12·32 + 16 columns end in a half
 * panel, which the kernel computes with one vector per row instead of two.
 *
 * Only the functions carry the target attribute, as in gemm_kernel_avx2.c:
 * gemm.c asks lca_gemm_avx512_supported before using this kernel, and on
 * other CPUs (arm64) the file compiles to a plain-C stand-in that is never
 * chosen. The contract of the kernels is in internal.h (lca_micro_kernel).
 *
 * The arithmetic per element is that of the AVX2 kernel: acc = C (load_c)
 * or 0, then acc = fma(a, b, acc) in k order, stored back to C, so both give
 * the same bits. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

bool lca_gemm_avx512_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* The B vectors of one step of k. When the tile packs B as it goes
 * (b_copy), they are also stored to the packed panel, and the source rows a
 * few steps ahead fetched, since they come from memory. */
#define LCA_COPY_AHEAD 12
#define LCA_COPY_B(b_0, b_1)                                                              \
    do {                                                                                  \
        if (!copy) break;                                                                 \
        _mm_prefetch((const char *)(b + LCA_COPY_AHEAD * b_k_step), _MM_HINT_T0);         \
        _mm_prefetch((const char *)(b + LCA_COPY_AHEAD * b_k_step + 31), _MM_HINT_T0);    \
        _mm512_storeu_ps(b_copy, b_0);                                                    \
        _mm512_storeu_ps(b_copy + 16, b_1);                                               \
        b_copy += 32;                                                                     \
    } while (0)
#define LCA_LOAD_B2                                                    \
    __m512 b_0 = _mm512_loadu_ps(b), b_1 = _mm512_loadu_ps(b + 16);    \
    LCA_COPY_B(b_0, b_1)
#define LCA_LOAD_B1 __m512 b_0 = _mm512_loadu_ps(b)

/* Row r of the tile: one broadcast of op(A)[r][p], two FMAs (or one, for
 * tiles at most 16 columns wide). */
#define LCA_ROW_FMA2(r, a_r_address)                        \
    do {                                                    \
        __m512 a_r = _mm512_set1_ps(*(a_r_address));        \
        acc_##r##0 = _mm512_fmadd_ps(a_r, b_0, acc_##r##0); \
        acc_##r##1 = _mm512_fmadd_ps(a_r, b_1, acc_##r##1); \
    } while (0)
#define LCA_ROW_FMA1(r, a_r_address)                                         \
    acc_##r##0 = _mm512_fmadd_ps(_mm512_set1_ps(*(a_r_address)), b_0, acc_##r##0)

/* One step of k over all ten rows, with row r at a + r·step. */
#define LCA_TILE_STEP(FMA, a, step)                                                  \
    do {                                                                             \
        FMA(0, a);                                                                   \
        FMA(1, a + (step));                                                          \
        FMA(2, a + 2 * (step));                                                      \
        FMA(3, a + 3 * (step));                                                      \
        FMA(4, a + 4 * (step));                                                      \
        FMA(5, a + 5 * (step));                                                      \
        FMA(6, a + 6 * (step));                                                      \
        FMA(7, a + 7 * (step));                                                      \
        FMA(8, a + 8 * (step));                                                      \
        FMA(9, a + 9 * (step));                                                      \
    } while (0)

/* Rows of A in place (a_row_step floats apart): one pointer per row,
 * each broadcast a pointer plus a constant, four steps of k per pass. With
 * base + index addresses instead, an FMA that loads its broadcast splits in
 * two at rename, and the front end, not the FMA ports, bounds the loop. */
#define LCA_DIRECT_ROWS                                                          \
    const float *row_0 = a, *row_1 = a + a_row_step, *row_2 = a + 2 * a_row_step, \
                *row_3 = a + 3 * a_row_step, *row_4 = a + 4 * a_row_step,          \
                *row_5 = a + 5 * a_row_step, *row_6 = a + 6 * a_row_step,          \
                *row_7 = a + 7 * a_row_step, *row_8 = a + 8 * a_row_step,          \
                *row_9 = a + 9 * a_row_step
#define LCA_DIRECT_STEP(FMA, u) \
    do {                        \
        FMA(0, row_0 + (u));    \
        FMA(1, row_1 + (u));    \
        FMA(2, row_2 + (u));    \
        FMA(3, row_3 + (u));    \
        FMA(4, row_4 + (u));    \
        FMA(5, row_5 + (u));    \
        FMA(6, row_6 + (u));    \
        FMA(7, row_7 + (u));    \
        FMA(8, row_8 + (u));    \
        FMA(9, row_9 + (u));    \
    } while (0)
/* The empty asm hides how the pointers relate; otherwise the compiler
 * rewrites them as ten bases plus one shared index, the addresses that
 * split. */
#define LCA_DIRECT_ADVANCE(n)                                                    \
    do {                                                                         \
        row_0 += (n), row_1 += (n), row_2 += (n), row_3 += (n), row_4 += (n);    \
        row_5 += (n), row_6 += (n), row_7 += (n), row_8 += (n), row_9 += (n);    \
        __asm__("" : "+r"(row_0), "+r"(row_1), "+r"(row_2), "+r"(row_3),        \
                "+r"(row_4), "+r"(row_5), "+r"(row_6), "+r"(row_7), "+r"(row_8), \
                "+r"(row_9));                                                    \
    } while (0)

/* The tile of C into the accumulators (load_c) and back, masked to the
 * tile's rows and columns: masked lanes are neither read nor written (they
 * start at zero). */
#define LCA_ROW_LOAD(r, half, mask) \
    acc_##r##half = _mm512_maskz_loadu_ps(mask, c + (r) * ldc + 16 * (half))
#define LCA_ROW_STORE(r, half, mask) \
    _mm512_mask_storeu_ps(c + (r) * ldc + 16 * (half), mask, acc_##r##half)

#define LCA_ROW_LOAD2(r)                           \
    do {                                           \
        if ((r) >= rows) break;                    \
        LCA_ROW_LOAD(r, 0, mask_0);                \
        LCA_ROW_LOAD(r, 1, mask_1);                \
    } while (0)
#define LCA_ROW_LOAD1(r)                           \
    do {                                           \
        if ((r) >= rows) break;                    \
        LCA_ROW_LOAD(r, 0, mask_0);                \
    } while (0)
#define LCA_ROW_STORE2(r)                          \
    do {                                           \
        if ((r) >= rows) break;                    \
        LCA_ROW_STORE(r, 0, mask_0);               \
        LCA_ROW_STORE(r, 1, mask_1);               \
    } while (0)
#define LCA_ROW_STORE1(r)                          \
    do {                                           \
        if ((r) >= rows) break;                    \
        LCA_ROW_STORE(r, 0, mask_0);               \
    } while (0)

#define LCA_FOR_ROWS(X) X(0); X(1); X(2); X(3); X(4); X(5); X(6); X(7); X(8); X(9)

/* The k loop of a tile, for each way A can be laid out, with LOAD_B
 * loading (and, when copying, storing) the B vectors of a step and FMA the
 * update of one row: the two- and one-vector tiles differ only in those. */
#define LCA_TILE_LOOPS(LOAD_B, FMA)                                     \
    do {                                                                \
        if (a_row_step == 1) {                                          \
            /* packed panels and Aᵀ in place: the rows side by side */ \
            for (size_t p = 0; p < depth; p++) {                        \
                LOAD_B;                                                 \
                LCA_TILE_STEP(FMA, a, 1);                               \
                a += a_k_step;                                          \
                b += b_k_step;                                          \
            }                                                           \
        } else if (a_k_step == 1) {                                     \
            /* rows of A in place */                                    \
            LCA_DIRECT_ROWS;                                            \
            size_t p = 0;                                               \
            for (; p + 4 <= depth; p += 4) {                            \
                for (size_t u = 0; u < 4; u++) {                        \
                    LOAD_B;                                             \
                    LCA_DIRECT_STEP(FMA, u);                            \
                    b += b_k_step;                                      \
                }                                                       \
                LCA_DIRECT_ADVANCE(4);                                  \
            }                                                           \
            for (; p < depth; p++) {                                    \
                LOAD_B;                                                 \
                LCA_DIRECT_STEP(FMA, 0);                                \
                LCA_DIRECT_ADVANCE(1);                                  \
                b += b_k_step;                                          \
            }                                                           \
        } else {                                                        \
            /* any other steps (not used by gemm.c) */                  \
            for (size_t p = 0; p < depth; p++) {                        \
                LOAD_B;                                                 \
                LCA_TILE_STEP(FMA, a, a_row_step);                      \
                a += a_k_step;                                          \
                b += b_k_step;                                          \
            }                                                           \
        }                                                               \
    } while (0)

/* Tiles 17-32 columns wide, and tiles that copy B: two vectors per row.
 * Inlined twice, with and without copying B, so that the loop without has
 * no trace of it. */
__attribute__((target("avx512f"), always_inline)) static inline void
micro_10x32(size_t depth, const float *a, size_t a_row_step, size_t a_k_step, const float *b,
            size_t b_k_step, float *restrict b_copy, const bool copy, bool load_c,
            float *restrict c, size_t ldc, size_t rows, size_t cols) {
    __m512 acc_00 = _mm512_setzero_ps(), acc_01 = _mm512_setzero_ps();
    __m512 acc_10 = _mm512_setzero_ps(), acc_11 = _mm512_setzero_ps();
    __m512 acc_20 = _mm512_setzero_ps(), acc_21 = _mm512_setzero_ps();
    __m512 acc_30 = _mm512_setzero_ps(), acc_31 = _mm512_setzero_ps();
    __m512 acc_40 = _mm512_setzero_ps(), acc_41 = _mm512_setzero_ps();
    __m512 acc_50 = _mm512_setzero_ps(), acc_51 = _mm512_setzero_ps();
    __m512 acc_60 = _mm512_setzero_ps(), acc_61 = _mm512_setzero_ps();
    __m512 acc_70 = _mm512_setzero_ps(), acc_71 = _mm512_setzero_ps();
    __m512 acc_80 = _mm512_setzero_ps(), acc_81 = _mm512_setzero_ps();
    __m512 acc_90 = _mm512_setzero_ps(), acc_91 = _mm512_setzero_ps();

    __mmask16 mask_0 = (__mmask16)(cols >= 16 ? 0xffff : (1u << cols) - 1);
    __mmask16 mask_1 = (__mmask16)(cols > 16 ? (1u << (cols - 16)) - 1 : 0);
    /* Sequential accumulation: the k terms go into the tile of C itself. */
    if (load_c) {
        LCA_FOR_ROWS(LCA_ROW_LOAD2);
    }

    LCA_TILE_LOOPS(LCA_LOAD_B2, LCA_ROW_FMA2);

    LCA_FOR_ROWS(LCA_ROW_STORE2);
}

/* Tiles at most 16 columns wide (the last half panel of 784 or 400 columns,
 * the 4 of 100, the 10 outputs): one vector per row, half the FMAs. */
__attribute__((target("avx512f"))) static void
micro_10x16(size_t depth, const float *a, size_t a_row_step, size_t a_k_step, const float *b,
            size_t b_k_step, bool load_c, float *restrict c, size_t ldc, size_t rows,
            size_t cols) {
    __m512 acc_00 = _mm512_setzero_ps(), acc_10 = _mm512_setzero_ps();
    __m512 acc_20 = _mm512_setzero_ps(), acc_30 = _mm512_setzero_ps();
    __m512 acc_40 = _mm512_setzero_ps(), acc_50 = _mm512_setzero_ps();
    __m512 acc_60 = _mm512_setzero_ps(), acc_70 = _mm512_setzero_ps();
    __m512 acc_80 = _mm512_setzero_ps(), acc_90 = _mm512_setzero_ps();

    __mmask16 mask_0 = (__mmask16)(cols >= 16 ? 0xffff : (1u << cols) - 1);
    if (load_c) {
        LCA_FOR_ROWS(LCA_ROW_LOAD1);
    }

    LCA_TILE_LOOPS(LCA_LOAD_B1, LCA_ROW_FMA1);

    LCA_FOR_ROWS(LCA_ROW_STORE1);
}

/* C[rows×cols] ← (load_c ? C : 0) + op(A)[10×depth] · op(B)[depth×32] for
 * rows ≤ 10, cols ≤ 32: all ten rows are computed and `rows` loaded and
 * stored; the columns are computed in whole vectors of 16 and `cols`
 * loaded and stored. */
__attribute__((target("avx512f"))) void
lca_gemm_micro_avx512_10x32(size_t depth, const float *a, size_t a_row_step, size_t a_k_step,
                            const float *b, size_t b_k_step, float *restrict b_copy,
                            bool load_c, float *restrict c, size_t ldc, size_t rows,
                            size_t cols) {
    if (b_copy != NULL)
        micro_10x32(depth, a, a_row_step, a_k_step, b, b_k_step, b_copy, true, load_c, c, ldc,
                    rows, cols);
    else if (cols > 16)
        micro_10x32(depth, a, a_row_step, a_k_step, b, b_k_step, NULL, false, load_c, c, ldc,
                    rows, cols);
    else
        micro_10x16(depth, a, a_row_step, a_k_step, b, b_k_step, load_c, c, ldc, rows, cols);
}

/* 16 rows in registers transposed: four rounds of shuffles (32-bit, 64-bit,
 * then 128-bit lanes twice), 64 in all for 256 floats, where 4 × 4 SSE
 * transposes take 128. Inlined into straight-line code, so that the 32
 * vectors stay in registers. */
static inline __attribute__((always_inline, target("avx512f"))) void
transpose_16_registers(__m512 r[16]) {
    __m512 t[16];
    for (int j = 0; j < 16; j += 2) {
        t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
    }
    for (int j = 0; j < 16; j += 4) {
        r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[j]), _mm512_castps_pd(t[j + 2])));
        r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[j]), _mm512_castps_pd(t[j + 2])));
        r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[j + 1]), _mm512_castps_pd(t[j + 3])));
        r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[j + 1]), _mm512_castps_pd(t[j + 3])));
    }
    for (int j = 0; j < 16; j += 8)
        for (int i = 0; i < 4; i++) {
            t[j + i] = _mm512_shuffle_f32x4(r[j + i], r[j + i + 4], 0x88);
            t[j + i + 4] = _mm512_shuffle_f32x4(r[j + i], r[j + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* A rows × depth block transposed (rows ≤ 16) into 16 columns:
 * out[q·out_step + j] = in[j·in_step + q] for q < depth, j < 16, zero for
 * j ≥ rows; 16 × 16 at a time in registers. Whole blocks go without masks or
 * branches (with a branch per row, as the edges need, the compiler kept the
 * rows on the stack: 134 cycles per block against 97 on a 128 × 784 input);
 * nothing past depth or rows is read. */
__attribute__((target("avx512f"))) void lca_gemm_transpose_16_avx512(const float *in,
                                                                     size_t in_step, float *out,
                                                                     size_t out_step, size_t depth,
                                                                     size_t rows) {
    size_t p = 0;
    if (rows == 16) {
        for (; p + 16 <= depth; p += 16) {
            __m512 r[16];
            for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(in + j * in_step + p);
            transpose_16_registers(r);
            for (int q = 0; q < 16; q++) _mm512_storeu_ps(out + (p + q) * out_step, r[q]);
        }
    }
    for (; p < depth; p += 16) {
        __m512 r[16];
        size_t left = depth - p;
        __mmask16 valid = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
        /* unrolled, so that r stays in registers; rows past `rows`: nothing
         * read, zeros */
#pragma GCC unroll 16
        for (size_t j = 0; j < 16; j++)
            r[j] = _mm512_maskz_loadu_ps(j < rows ? valid : 0, j < rows ? in + j * in_step + p : in);
        transpose_16_registers(r);
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++)
            if ((size_t)q < left) _mm512_storeu_ps(out + (p + (size_t)q) * out_step, r[q]);
    }
}

/* The edge panel of op(B) = B: out[p·32 + j] = in[p·in_step + j] for j < cols
 * (≤ 32), zero for the rest, with masked loads (a per-column select does
 * not vectorise). */
__attribute__((target("avx512f"))) void lca_gemm_copy_edge_avx512(const float *in,
                                                                 size_t in_step, float *out,
                                                                 size_t depth, size_t cols) {
    __mmask16 mask_0 = (__mmask16)(cols >= 16 ? 0xffff : (1u << cols) - 1);
    __mmask16 mask_1 = (__mmask16)(cols >= 32 ? 0xffff : cols > 16 ? (1u << (cols - 16)) - 1 : 0);
    for (size_t p = 0; p < depth; p++) {
        const float *row = in + p * in_step;
        _mm512_storeu_ps(out + p * 32, _mm512_maskz_loadu_ps(mask_0, row));
        _mm512_storeu_ps(out + p * 32 + 16, _mm512_maskz_loadu_ps(mask_1, row + 16));
    }
}

#undef LCA_COPY_AHEAD
#undef LCA_COPY_B
#undef LCA_LOAD_B2
#undef LCA_LOAD_B1
#undef LCA_ROW_FMA2
#undef LCA_ROW_FMA1
#undef LCA_TILE_STEP
#undef LCA_DIRECT_ROWS
#undef LCA_DIRECT_STEP
#undef LCA_DIRECT_ADVANCE
#undef LCA_ROW_LOAD
#undef LCA_ROW_LOAD2
#undef LCA_ROW_LOAD1
#undef LCA_ROW_STORE
#undef LCA_ROW_STORE2
#undef LCA_ROW_STORE1
#undef LCA_FOR_ROWS
#undef LCA_TILE_LOOPS

#else /* not x86-64: never chosen; a correct stand-in keeps the symbol honest */

#include <math.h>

bool lca_gemm_avx512_supported(void) { return false; }

/* Element by element, with the arithmetic of the vector kernel (the 6×16
 * portable kernel cannot stand in: it would read rows past a 10-row panel). */
void lca_gemm_micro_avx512_10x32(size_t depth, const float *a, size_t a_row_step,
                                 size_t a_k_step, const float *b, size_t b_k_step,
                                 float *restrict b_copy, bool load_c, float *restrict c,
                                 size_t ldc, size_t rows, size_t cols) {
    if (b_copy != NULL)
        for (size_t p = 0; p < depth; p++)
            for (size_t j = 0; j < 32; j++) b_copy[p * 32 + j] = b[p * b_k_step + j];
    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < cols; j++) {
            float acc = load_c ? c[r * ldc + j] : 0.0f;
            for (size_t p = 0; p < depth; p++)
                acc = fmaf(a[r * a_row_step + p * a_k_step], b[p * b_k_step + j], acc);
            c[r * ldc + j] = acc;
        }
    }
}

void lca_gemm_copy_edge_avx512(const float *in, size_t in_step, float *out, size_t depth,
                               size_t cols) {
    for (size_t p = 0; p < depth; p++)
        for (size_t j = 0; j < 32; j++) out[p * 32 + j] = j < cols ? in[p * in_step + j] : 0.0f;
}

void lca_gemm_transpose_16_avx512(const float *in, size_t in_step, float *out, size_t out_step,
                                  size_t depth, size_t rows) {
    for (size_t q = 0; q < depth; q++)
        for (size_t j = 0; j < 16; j++) out[q * out_step + j] = j < rows ? in[j * in_step + q] : 0.0f;
}

#endif
