/* gemm_kernel_avx2.c: the 6×16 register micro-kernel for x86-64 CPUs with
 * AVX2 and FMA.
 *
 * Only the functions carry the target attribute: the rest of the build has
 * no CPU flag, so the library still runs on x86-64 CPUs without AVX2 (gemm.c
 * asks lca_gemm_avx2_supported before using this kernel) and on arm64, where
 * this file compiles to a forwarder to the portable kernel. The contract of
 * the kernels is in internal.h (lca_micro_kernel). */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

bool lca_gemm_avx2_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* One row r of the tile is two ymm accumulators, acc_r0 (columns 0-7) and
 * acc_r1 (columns 8-15): 12 accumulators + 2 B vectors + 1 broadcast of A
 * = 15 of the 16 ymm registers. Two FMAs per broadcast, so each step of k
 * issues 12 FMAs for 8 loads, which keeps both FMA ports busy. */
#define LCA_ROW_FMA(r, a_r_address)                         \
    do {                                                    \
        __m256 a_r = _mm256_broadcast_ss(a_r_address);      \
        acc_##r##0 = _mm256_fmadd_ps(a_r, b_0, acc_##r##0); \
        acc_##r##1 = _mm256_fmadd_ps(a_r, b_1, acc_##r##1); \
    } while (0)

/* The tile of C into the accumulators (load_c) and back: whole rows, or,
 * at an edge, the rows and columns that exist, with masks (lanes outside
 * are neither read nor written; they start at zero). */
#define LCA_ROW_LOAD(r)                                            \
    do {                                                           \
        acc_##r##0 = _mm256_loadu_ps(c + (r) * ldc);               \
        acc_##r##1 = _mm256_loadu_ps(c + (r) * ldc + 8);           \
    } while (0)
#define LCA_ROW_LOAD_MASKED(r)                                     \
    do {                                                           \
        if ((r) >= rows) break;                                    \
        acc_##r##0 = _mm256_maskload_ps(c + (r) * ldc, mask_0);     \
        acc_##r##1 = _mm256_maskload_ps(c + (r) * ldc + 8, mask_1); \
    } while (0)
#define LCA_ROW_STORE(r)                                           \
    do {                                                           \
        _mm256_storeu_ps(c + (r) * ldc, acc_##r##0);               \
        _mm256_storeu_ps(c + (r) * ldc + 8, acc_##r##1);           \
    } while (0)
#define LCA_ROW_STORE_MASKED(r)                                              \
    do {                                                                     \
        if ((r) >= rows) break;                                              \
        _mm256_maskstore_ps(c + (r) * ldc, mask_0, acc_##r##0);              \
        _mm256_maskstore_ps(c + (r) * ldc + 8, mask_1, acc_##r##1);          \
    } while (0)

/* Lanes [8 − n, 16 − n) of this table, loaded as 8 ints, are a mask of the
 * first n lanes (0 ≤ n ≤ 8). */
static const int32_t lane_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* C[rows×cols] ← (load_c ? C : 0) + op(A)[6×depth] · op(B)[depth×16] for
 * rows ≤ 6, cols ≤ 16: the full 6×16 product is computed and only
 * rows × cols of C read and stored.
 * op(A)[r][p] = a[r·a_row_step + p·a_k_step]: a packed panel (steps 1, 6)
 *   or rows of A or Aᵀ read in place (then all 6 rows must exist);
 * op(B)[p][j] = b[p·b_k_step + j]: a packed panel (step 16) or rows of B,
 * copied to b_copy when it is not NULL; c: row stride ldc. */
__attribute__((target("avx2,fma")))
void lca_gemm_micro_avx2_6x16(size_t depth, const float *a, size_t a_row_step, size_t a_k_step,
                              const float *b, size_t b_k_step, float *restrict b_copy,
                              bool load_c, float *restrict c, size_t ldc, size_t rows,
                              size_t cols) {
    /* gemm.c packs B separately for this kernel; copying here only keeps
     * the contract. */
    if (b_copy != NULL)
        for (size_t p = 0; p < depth; p++)
            for (size_t j = 0; j < 16; j++) b_copy[p * 16 + j] = b[p * b_k_step + j];
    __m256 acc_00 = _mm256_setzero_ps(), acc_01 = _mm256_setzero_ps();
    __m256 acc_10 = _mm256_setzero_ps(), acc_11 = _mm256_setzero_ps();
    __m256 acc_20 = _mm256_setzero_ps(), acc_21 = _mm256_setzero_ps();
    __m256 acc_30 = _mm256_setzero_ps(), acc_31 = _mm256_setzero_ps();
    __m256 acc_40 = _mm256_setzero_ps(), acc_41 = _mm256_setzero_ps();
    __m256 acc_50 = _mm256_setzero_ps(), acc_51 = _mm256_setzero_ps();

    bool full = rows == 6 && cols == 16;
    size_t cols_0 = cols < 8 ? cols : 8, cols_1 = cols - cols_0;
    __m256i mask_0 = _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - cols_0));
    __m256i mask_1 = _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - cols_1));
    /* Sequential accumulation: the k terms go into the tile of C itself. */
    if (load_c && full) {
        LCA_ROW_LOAD(0);
        LCA_ROW_LOAD(1);
        LCA_ROW_LOAD(2);
        LCA_ROW_LOAD(3);
        LCA_ROW_LOAD(4);
        LCA_ROW_LOAD(5);
    } else if (load_c) {
        LCA_ROW_LOAD_MASKED(0);
        LCA_ROW_LOAD_MASKED(1);
        LCA_ROW_LOAD_MASKED(2);
        LCA_ROW_LOAD_MASKED(3);
        LCA_ROW_LOAD_MASKED(4);
        LCA_ROW_LOAD_MASKED(5);
    }

    if (a_row_step == 1) {
        /* Packed panels and Aᵀ in place: the six rows sit side by side. */
        for (size_t p = 0; p < depth; p++) {
            __m256 b_0 = _mm256_loadu_ps(b);
            __m256 b_1 = _mm256_loadu_ps(b + 8);
            LCA_ROW_FMA(0, a);
            LCA_ROW_FMA(1, a + 1);
            LCA_ROW_FMA(2, a + 2);
            LCA_ROW_FMA(3, a + 3);
            LCA_ROW_FMA(4, a + 4);
            LCA_ROW_FMA(5, a + 5);
            a += a_k_step;
            b += b_k_step;
        }
    } else {
        /* Rows of A in place: rows 0-2 and 3-5 from two pointers, so that
         * each broadcast is one addressing mode off them. */
        const float *a_top = a, *a_bottom = a + 3 * a_row_step;
        for (size_t p = 0; p < depth; p++) {
            __m256 b_0 = _mm256_loadu_ps(b);
            __m256 b_1 = _mm256_loadu_ps(b + 8);
            LCA_ROW_FMA(0, a_top);
            LCA_ROW_FMA(1, a_top + a_row_step);
            LCA_ROW_FMA(2, a_top + 2 * a_row_step);
            LCA_ROW_FMA(3, a_bottom);
            LCA_ROW_FMA(4, a_bottom + a_row_step);
            LCA_ROW_FMA(5, a_bottom + 2 * a_row_step);
            a_top += a_k_step;
            a_bottom += a_k_step;
            b += b_k_step;
        }
    }

    if (full) {
        LCA_ROW_STORE(0);
        LCA_ROW_STORE(1);
        LCA_ROW_STORE(2);
        LCA_ROW_STORE(3);
        LCA_ROW_STORE(4);
        LCA_ROW_STORE(5);
        return;
    }
    LCA_ROW_STORE_MASKED(0);
    LCA_ROW_STORE_MASKED(1);
    LCA_ROW_STORE_MASKED(2);
    LCA_ROW_STORE_MASKED(3);
    LCA_ROW_STORE_MASKED(4);
    LCA_ROW_STORE_MASKED(5);
}

#undef LCA_ROW_FMA
#undef LCA_ROW_LOAD
#undef LCA_ROW_LOAD_MASKED
#undef LCA_ROW_STORE
#undef LCA_ROW_STORE_MASKED

#else /* not x86-64: never chosen; a correct forwarder keeps the symbol honest */

bool lca_gemm_avx2_supported(void) { return false; }

void lca_gemm_micro_avx2_6x16(size_t depth, const float *a, size_t a_row_step, size_t a_k_step,
                              const float *b, size_t b_k_step, float *restrict b_copy,
                              bool load_c, float *restrict c, size_t ldc, size_t rows,
                              size_t cols) {
    lca_gemm_micro_portable_6x16(depth, a, a_row_step, a_k_step, b, b_k_step, b_copy, load_c,
                                 c, ldc, rows, cols);
}

#endif
