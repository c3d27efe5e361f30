/* gemm_kernel_portable.c: the 6×16 register micro-kernel in plain C, used
 * on CPUs without AVX2+FMA (and on arm64). Written as fixed-size loops over
 * a local tile so the compiler keeps the tile in vector registers (NEON has
 * 32 of them: 24 for the tile) and vectorises the 16 columns. */
#include "internal.h"

enum { PORTABLE_MR = 6, PORTABLE_NR = 16 };

/* C[rows×cols] ← (load_c ? C : 0) + op(A)[6×depth] · op(B)[depth×16] for
 * rows ≤ 6, cols ≤ 16, in k order, with op(A)[r][p] = a[r·a_row_step +
 * p·a_k_step] and op(B)[p][j] = b[p·b_k_step + j] (packed panels or rows
 * read in place; see lca_micro_kernel in internal.h), copied to b_copy when
 * it is not NULL. c: row stride ldc; not read unless load_c. */
void lca_gemm_micro_portable_6x16(size_t depth, const float *a, size_t a_row_step,
                                  size_t a_k_step, const float *b, size_t b_k_step,
                                  float *restrict b_copy, bool load_c, float *restrict c,
                                  size_t ldc, size_t rows, size_t cols) {
    /* gemm.c packs B separately for this kernel; copying here only keeps
     * the contract. */
    if (b_copy != NULL)
        for (size_t p = 0; p < depth; p++)
            for (size_t j = 0; j < PORTABLE_NR; j++)
                b_copy[p * PORTABLE_NR + j] = b[p * b_k_step + j];
    /* The tile starts from C (the rows × cols that exist) or zero, and
     * every step of k adds into it: one chain per element, in k order. */
    float acc[PORTABLE_MR][PORTABLE_NR] = {{0}};
    if (load_c)
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < cols; j++) acc[r][j] = c[r * ldc + j];
    for (size_t p = 0; p < depth; p++) {
        float b_p[PORTABLE_NR]; /* op(B)[p][0..16) */
        for (size_t j = 0; j < PORTABLE_NR; j++) b_p[j] = b[j];
        for (size_t r = 0; r < PORTABLE_MR; r++) {
            const float a_rp = a[r * a_row_step];
            for (size_t j = 0; j < PORTABLE_NR; j++) acc[r][j] += a_rp * b_p[j];
        }
        a += a_k_step;
        b += b_k_step;
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) c[r * ldc + j] = acc[r][j];
}
