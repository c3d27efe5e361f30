/* test_gemm.c: lca_sgemm against the float64 reference lca_sgemm_naive.
 *
 * Tolerance: for every element, |fast − reference| ≤ 1e-5 · scale, where
 * scale = |alpha|·Σ_p |op(A)[i][p]|·|op(B)[p][j]| + |beta|·|C_before[i][j]|.
 * Float32 chains of k FMAs (sequential accumulation, k ≤ 1960 here) stay
 * well inside that (below 1e-6 on random data); an indexing or packing mistake
 * gives differences of order 1. When scale is 0 the results must be equal.
 *
 * Also checked: every available micro-kernel (portable, avx2 6×16,
 * avx512 10×32; a kernel this CPU cannot run is reported as skipped); all
 * four trans combinations; alpha, beta in {0, 1, 0.5}; leading dimensions
 * larger than the rows; sizes of 1, odd sizes, every m in 1..21 and n in
 * 1..65 (up to 2·tile + 1 for both tiles), sizes not multiples of the tiles,
 * KC = 256 (k = 255, 256, 257, 513, 1000), MC, NC; k = 0; the layer shapes
 * of the 784-100-50-10 net and LeNet; beta = 0 over NaN; bitwise equal
 * results at 1, 2 and 3 threads; bitwise equal results from the two FMA
 * kernels (avx512 and avx2), whose tiles differ but whose arithmetic per
 * element does not; sequential accumulation: a product split at random
 * points of k into consecutive calls with beta = 1 (and, at the same time,
 * into random regions of m and n, at 1 and 2 threads) gives the bytes of
 * one call, for every kernel; and that lca_parallel_for runs every index
 * once.
 * (The portable kernel multiplies and adds in two roundings where the
 * compiler has no FMA instruction, as on baseline x86-64, so it is held only
 * to the tolerance; the test reports whether it matched bit for bit.)
 * Exit status 0 only if every check passes. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOLERANCE 1e-5

static int failures;

static uint64_t random_state = 0x9e3779b97f4a7c15u;
/* Uniform in [-1, 1), from a 64-bit xorshift: tests need no quality. */
static float random_float(void) {
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return (float)((double)(random_state >> 40) / (double)(1u << 23) - 1.0);
}

static float *new_floats(size_t count) {
    float *values = malloc((count ? count : 1) * sizeof(float));
    if (values == NULL) {
        fprintf(stderr, "test_gemm: out of memory\n");
        exit(2);
    }
    return values;
}

static void fill_random(float *values, size_t count) {
    for (size_t i = 0; i < count; i++) values[i] = random_float();
}

/* One stored operand: logical rows × cols, stored transposed when trans,
 * with `pad` extra floats at the end of every stored row. */
typedef struct operand {
    bool trans;
    size_t ld;
    float *values;
} operand;

static operand store_operand(const float *logical, size_t rows, size_t cols, bool trans,
                             size_t pad) {
    size_t stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
    operand out = {trans, stored_cols + pad, NULL};
    out.values = new_floats(stored_rows * out.ld);
    fill_random(out.values, stored_rows * out.ld); /* padding holds noise */
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            out.values[trans ? j * out.ld + i : i * out.ld + j] = logical[i * cols + j];
    return out;
}

typedef struct shape {
    size_t m, n, k;
    const char *why;
} shape;

static const shape shapes[] = {
    {1, 1, 1, "all one"},
    {1, 1, 7, "dot product"},
    {1, 17, 1, "one row"},
    {5, 1, 3, "one column"},
    {7, 13, 5, "odd, below one tile"},
    {6, 16, 1, "one exact tile, k = 1"},
    {6, 16, 256, "one exact tile, k = KC"},
    {12, 32, 257, "k = KC + 1"},
    {10, 32, 256, "one exact AVX-512 tile, k = KC"},
    {21, 65, 255, "2 AVX-512 tiles + 1 both ways, k = KC - 1"},
    {11, 33, 1000, "k = 1000: four blocks of 250"},
    {13, 33, 17, "edges in m and n"},
    {31, 47, 300, "odd, two k blocks"},
    {17, 5, 513, "k over 2 KC"},
    {145, 17, 9, "m = MC + 1"},
    {150, 530, 20, "n over NC"},
    {3, 7, 0, "k = 0"},
    {290, 530, 520, "several blocks in every dimension"},
    {1000, 100, 784, "fc1 forward: X[1000×784] W1ᵀ"},
    {250, 784, 100, "fc1 input gradient: dY[250×100] W1"},
    {100, 784, 250, "fc1 weight gradient: dYᵀ X"},
    {10, 50, 1000, "fc3 weight gradient: dYᵀ[10×1000] H2"},
    {1000, 10, 50, "fc3 forward"},
    {40, 196, 500, "LeNet conv2: W[40×500] col"},
};

static const float coefficients[] = {0.0f, 1.0f, 0.5f};
/* The big shapes take three pairs, to keep the test quick: a forward pass
 * (1, 0), gradient accumulation (1, 1) and the general case; and they
 * compare every 7th row (row_checked). */
static const float big_shape_pairs[3][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.5f, 0.5f}};

static const char *const kernels[] = {"portable", "avx2", "avx512"};
enum { KERNELS = 3, PORTABLE = 0, AVX2 = 1, AVX512 = 2 };
static bool kernel_available[KERNELS];

/* The rows of C compared with the reference: all of them, or for the big
 * shapes every 7th (7 is prime to MR = 6, so every position in a panel is
 * hit) and the last, to keep the float64 reference affordable. */
static bool row_checked(size_t i, size_t m, size_t row_step) {
    return i % row_step == 0 || i == m - 1;
}

/* The reference on the checked rows only: each row is a 1 × n product. */
static void reference_rows(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                           float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                           float beta, float *c, size_t ldc, size_t row_step) {
    for (size_t i = 0; i < m; i++)
        if (row_checked(i, m, row_step))
            lca_sgemm_naive(trans_a, trans_b, 1, n, k, alpha, trans_a ? a + i : a + i * lda, lda,
                            b, ldb, beta, c + i * ldc, ldc);
}

/* Worst |fast − reference| / scale over the checked rows; reports equality
 * failures (scale 0) as infinity. */
static double worst_difference(const float *fast, const float *reference, const float *scale,
                               size_t m, size_t n, size_t ldc, size_t row_step) {
    double worst = 0.0;
    for (size_t i = 0; i < m; i++) {
        if (!row_checked(i, m, row_step)) continue;
        for (size_t j = 0; j < n; j++) {
            double difference = fabs((double)fast[i * ldc + j] - (double)reference[i * ldc + j]);
            double allowed = scale[i * ldc + j];
            double relative = allowed > 0 ? difference / allowed : (difference > 0 ? INFINITY : 0);
            if (!(relative <= worst)) worst = relative; /* NaN counts as worst */
        }
    }
    return worst;
}

/* All trans combinations and alpha/beta pairs for one shape, every kernel
 * against one reference. Prints one line per kernel and trans combination. */
static double check_shape(const shape *s) {
    size_t m = s->m, n = s->n, k = s->k, pad = 3, ldc = n + pad;
    float *a_logical = new_floats(m * k), *b_logical = new_floats(k * n);
    fill_random(a_logical, m * k);
    fill_random(b_logical, k * n);
    float *c_before = new_floats(m * ldc), *fast = new_floats(m * ldc);
    float *reference = new_floats(m * ldc), *abs_product = new_floats(m * ldc);
    float *scale = new_floats(m * ldc);
    fill_random(c_before, m * ldc);

    /* Σ_p |a||b| per element, from the reference on absolute values. */
    float *a_abs = new_floats(m * k), *b_abs = new_floats(k * n);
    for (size_t i = 0; i < m * k; i++) a_abs[i] = fabsf(a_logical[i]);
    for (size_t i = 0; i < k * n; i++) b_abs[i] = fabsf(b_logical[i]);
    bool small = m * n * k <= 4000000;
    size_t row_step = small ? 1 : 7;
    reference_rows(false, false, m, n, k, 1.0f, a_abs, k, b_abs, n, 0.0f, abs_product, ldc,
                   row_step);

    float pairs[9][2];
    size_t pair_count = 0;
    if (small) {
        for (int ia = 0; ia < 3; ia++)
            for (int ib = 0; ib < 3; ib++) {
                pairs[pair_count][0] = coefficients[ia];
                pairs[pair_count++][1] = coefficients[ib];
            }
    } else {
        for (; pair_count < 3; pair_count++) {
            pairs[pair_count][0] = big_shape_pairs[pair_count][0];
            pairs[pair_count][1] = big_shape_pairs[pair_count][1];
        }
    }

    double worst_of_shape = 0.0;
    for (int t = 0; t < 4; t++) {
        bool trans_a = t & 1, trans_b = t & 2;
        operand a = store_operand(a_logical, m, k, trans_a, pad);
        operand b = store_operand(b_logical, k, n, trans_b, pad);
        double worst[KERNELS] = {0};
        for (size_t pair = 0; pair < pair_count; pair++) {
            float alpha = pairs[pair][0], beta = pairs[pair][1];
            memcpy(reference, c_before, m * ldc * sizeof(float));
            reference_rows(trans_a, trans_b, m, n, k, alpha, a.values, a.ld, b.values, b.ld,
                           beta, reference, ldc, row_step);
            for (size_t i = 0; i < m * ldc; i++)
                scale[i] = fabsf(alpha) * abs_product[i] + fabsf(beta) * fabsf(c_before[i]);
            for (int kernel = 0; kernel < KERNELS; kernel++) {
                if (!kernel_available[kernel]) continue;
                lca_gemm_select_kernel(kernels[kernel]);
                memcpy(fast, c_before, m * ldc * sizeof(float));
                lca_sgemm(trans_a, trans_b, m, n, k, alpha, a.values, a.ld, b.values, b.ld,
                          beta, fast, ldc);
                double difference = worst_difference(fast, reference, scale, m, n, ldc, row_step);
                /* The padding of C past column n must be left alone. */
                for (size_t i = 0; i < m; i++)
                    if (memcmp(fast + i * ldc + n, c_before + i * ldc + n, pad * sizeof(float)))
                        difference = INFINITY;
                if (!(difference <= worst[kernel])) worst[kernel] = difference;
                if (!(difference <= TOLERANCE)) {
                    failures++;
                    printf("FAIL  %-9s %4zu×%-4zu×%-4zu %c%c alpha %.1f beta %.1f: %.3g\n",
                           kernels[kernel], m, n, k, trans_a ? 'T' : 'N', trans_b ? 'T' : 'N',
                           (double)alpha, (double)beta, difference);
                }
            }
        }
        for (int kernel = 0; kernel < KERNELS; kernel++) {
            if (!kernel_available[kernel]) continue;
            printf("  %-9s %4zu×%-4zu×%-4zu %c%c  worst %.2e  (%s)\n", kernels[kernel], m, n, k,
                   trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', worst[kernel], s->why);
            if (!(worst[kernel] <= worst_of_shape)) worst_of_shape = worst[kernel];
        }
        free(a.values);
        free(b.values);
    }
    lca_gemm_select_kernel(NULL);
    free(a_logical); free(b_logical); free(a_abs); free(b_abs);
    free(c_before); free(fast); free(reference); free(abs_product); free(scale);
    return worst_of_shape;
}

/* Every m in 1..21 and n in 1..65 (2·tile + 1 for the 10×32 and 6×16
 * tiles), all trans combinations, k of 1, 7 and 33 (k past KC is
 * check_shape's), against the reference; C has NaN in its padding and, for
 * beta = 0, everywhere. */
static double check_edge_sizes(void) {
    enum { MAX_M = 21, MAX_N = 65 };
    static const size_t depths[] = {1, 7, 33};
    double worst[KERNELS] = {0};
    for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
        size_t k = depths[d], pad = 2, ldc = MAX_N + pad;
        float *a = new_floats(MAX_M * (k + pad) + (k + pad) * MAX_M);
        float *b = new_floats(MAX_N * (k + pad) + (k + pad) * MAX_N);
        float *fast = new_floats(MAX_M * ldc), *reference = new_floats(MAX_M * ldc);
        float *reference_c = new_floats(MAX_M * ldc); /* C before, for the scale */
        float *scale = new_floats(MAX_M * ldc), *c_before = new_floats(MAX_M * ldc);
        size_t a_count = MAX_M * (k + pad) + (k + pad) * MAX_M;
        size_t b_count = MAX_N * (k + pad) + (k + pad) * MAX_N;
        fill_random(a, a_count);
        fill_random(b, b_count);
        float *a_abs = new_floats(a_count), *b_abs = new_floats(b_count);
        for (size_t i = 0; i < a_count; i++) a_abs[i] = fabsf(a[i]);
        for (size_t i = 0; i < b_count; i++) b_abs[i] = fabsf(b[i]);
        for (int t = 0; t < 4; t++) {
            bool trans_a = t & 1, trans_b = t & 2;
            for (size_t m = 1; m <= MAX_M; m++) {
                for (size_t n = 1; n <= MAX_N; n++) {
                    size_t lda = (trans_a ? m : k) + pad, ldb = (trans_b ? k : n) + pad;
                    for (int beta_zero = 0; beta_zero < 2; beta_zero++) {
                        float alpha = 0.75f, beta = beta_zero ? 0.0f : 0.5f;
                        fill_random(c_before, MAX_M * ldc);
                        for (size_t i = 0; i < m; i++)
                            for (size_t j = n; j < ldc; j++) c_before[i * ldc + j] = NAN;
                        memcpy(reference, c_before, MAX_M * ldc * sizeof(float));
                        memcpy(reference_c, c_before, MAX_M * ldc * sizeof(float));
                        if (beta_zero)
                            for (size_t i = 0; i < m * ldc; i++) c_before[i] = NAN;
                        lca_sgemm_naive(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                        reference, ldc);
                        lca_sgemm_naive(trans_a, trans_b, m, n, k, fabsf(alpha), a_abs, lda,
                                        b_abs, ldb, 0.0f, scale, ldc);
                        for (size_t i = 0; i < m * ldc; i++)
                            if (!beta_zero) scale[i] += fabsf(beta) * fabsf(reference_c[i]);
                        for (int kernel = 0; kernel < KERNELS; kernel++) {
                            if (!kernel_available[kernel]) continue;
                            lca_gemm_select_kernel(kernels[kernel]);
                            memcpy(fast, c_before, MAX_M * ldc * sizeof(float));
                            lca_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                                      fast, ldc);
                            double difference =
                                worst_difference(fast, reference, scale, m, n, ldc, 1);
                            for (size_t i = 0; i < m; i++)
                                for (size_t j = n; j < ldc; j++)
                                    if (memcmp(&fast[i * ldc + j], &c_before[i * ldc + j],
                                               sizeof(float)))
                                        difference = INFINITY; /* padding written */
                            if (!(difference <= worst[kernel])) worst[kernel] = difference;
                            if (!(difference <= TOLERANCE)) {
                                failures++;
                                printf("FAIL  %-9s edge %zu×%zu×%zu %c%c beta %.1f: %.3g\n",
                                       kernels[kernel], m, n, k, trans_a ? 'T' : 'N',
                                       trans_b ? 'T' : 'N', (double)beta, difference);
                            }
                        }
                    }
                }
            }
        }
        free(a); free(b); free(a_abs); free(b_abs); free(fast); free(reference);
        free(reference_c); free(scale); free(c_before);
    }
    lca_gemm_select_kernel(NULL);
    double worst_of_all = 0.0;
    for (int kernel = 0; kernel < KERNELS; kernel++) {
        if (!kernel_available[kernel]) continue;
        printf("  %-9s every m ≤ 21, n ≤ 65, k in {1, 7, 33}, NN/TN/NT/TT, beta 0.5 and 0 "
               "over NaN: worst %.2e\n", kernels[kernel], worst[kernel]);
        if (!(worst[kernel] <= worst_of_all)) worst_of_all = worst[kernel];
    }
    return worst_of_all;
}

/* The FMA kernels must give the same bits: avx512 (10×32) against avx2
 * (6×16), on shapes with edges in every dimension, every k regime, all
 * trans combinations, alpha ≠ 1 and beta in {0, 1, 0.5}. The portable
 * kernel is compared too, and reported, but not required to match. */
static void check_kernels_bitwise(void) {
    if (!kernel_available[AVX512] || !kernel_available[AVX2]) {
        printf("  FMA kernels bitwise: skipped (needs avx512 and avx2 on this CPU)\n");
        return;
    }
    static const shape cases[] = {
        {1, 1, 1, ""},      {7, 13, 5, ""},      {10, 32, 256, ""},   {21, 65, 255, ""},
        {11, 33, 257, ""},  {37, 100, 513, ""},  {13, 47, 1000, ""},  {100, 784, 1000, ""},
        {1000, 100, 784, ""}, {1000, 50, 100, ""}, {50, 100, 1000, ""}, {40, 196, 500, ""},
        {500, 196, 40, ""}, {20, 784, 25, ""},   {290, 530, 520, ""}, {250, 400, 1960, ""},
    };
    static const float pairs[][2] = {{0.75f, 0.0f}, {-1.5f, 1.0f}, {0.75f, 0.5f}};
    size_t compared = 0, fma_differ = 0, portable_compared = 0, portable_differ = 0;
    for (size_t index = 0; index < sizeof cases / sizeof cases[0]; index++) {
        size_t m = cases[index].m, n = cases[index].n, k = cases[index].k, pad = 5;
        size_t ldc = n + pad;
        float *a = new_floats((m + pad) * (k + pad)), *b = new_floats((k + pad) * (n + pad));
        float *c_before = new_floats(m * ldc), *results[KERNELS];
        fill_random(a, (m + pad) * (k + pad));
        fill_random(b, (k + pad) * (n + pad));
        fill_random(c_before, m * ldc);
        for (int kernel = 0; kernel < KERNELS; kernel++) results[kernel] = new_floats(m * ldc);
        for (int t = 0; t < 4; t++) {
            bool trans_a = t & 1, trans_b = t & 2;
            size_t lda = (trans_a ? m : k) + pad, ldb = (trans_b ? k : n) + pad;
            for (size_t pair = 0; pair < sizeof pairs / sizeof pairs[0]; pair++) {
                /* The portable kernel only on the smaller shapes: it is slow. */
                bool with_portable = m * n * k <= 4000000;
                for (int kernel = 0; kernel < KERNELS; kernel++) {
                    if (!kernel_available[kernel] || (kernel == PORTABLE && !with_portable))
                        continue;
                    lca_gemm_select_kernel(kernels[kernel]);
                    memcpy(results[kernel], c_before, m * ldc * sizeof(float));
                    lca_sgemm(trans_a, trans_b, m, n, k, pairs[pair][0], a, lda, b, ldb,
                              pairs[pair][1], results[kernel], ldc);
                }
                compared++;
                if (memcmp(results[AVX512], results[AVX2], m * ldc * sizeof(float))) {
                    fma_differ++;
                    failures++;
                    printf("FAIL  avx512 and avx2 differ: %zu×%zu×%zu %c%c alpha %.2f "
                           "beta %.1f\n", m, n, k, trans_a ? 'T' : 'N', trans_b ? 'T' : 'N',
                           (double)pairs[pair][0], (double)pairs[pair][1]);
                }
                if (with_portable) {
                    portable_compared++;
                    if (memcmp(results[PORTABLE], results[AVX2], m * ldc * sizeof(float)))
                        portable_differ++;
                }
            }
        }
        for (int kernel = 0; kernel < KERNELS; kernel++) free(results[kernel]);
        free(a); free(b); free(c_before);
    }
    lca_gemm_select_kernel(NULL);
    printf("  avx512 vs avx2 bitwise: %zu of %zu products identical%s\n",
           compared - fma_differ, compared, fma_differ ? "  FAIL" : "");
    printf("  portable vs avx2 bitwise (information): %zu of %zu identical\n",
           portable_compared - portable_differ, portable_compared);
}

/* Sequential accumulation (internal.h): C ← beta·C, then every term of k
 * fused into C in k order. So one call over k must give the same bytes as
 * consecutive calls over [0, k1), [k1, k2), … with beta on the first and
 * 1 after, whatever the cut points, the split of C into regions and the
 * thread count. Random cuts, including cuts of one term and cuts at KC
 * multiples, every kernel. */
static size_t random_below(size_t bound) {
    random_float();
    return (size_t)(random_state % bound);
}

static void check_k_splits(void) {
    static const shape cases[] = {
        {1, 1, 9, ""},     {7, 13, 40, ""},    {21, 65, 300, ""},  {16, 144, 1024, ""},
        {10, 32, 600, ""}, {37, 100, 513, ""}, {16, 400, 2100, ""}, {64, 576, 700, ""},
    };
    static const float pairs[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.75f, 0.5f}, {0.5f, 0.0f}};
    int saved = lca_threads();
    size_t compared = 0, differ = 0;
    for (int kernel = 0; kernel < KERNELS; kernel++) {
        if (!kernel_available[kernel]) continue;
        lca_gemm_select_kernel(kernels[kernel]);
        for (size_t index = 0; index < sizeof cases / sizeof cases[0]; index++) {
            size_t m = cases[index].m, n = cases[index].n, k = cases[index].k, pad = 3;
            size_t ldc = n + pad;
            float *a = new_floats((m + pad) * (k + pad)), *b = new_floats((k + pad) * (n + pad));
            float *c_before = new_floats(m * ldc), *whole = new_floats(m * ldc);
            float *split = new_floats(m * ldc);
            fill_random(a, (m + pad) * (k + pad));
            fill_random(b, (k + pad) * (n + pad));
            fill_random(c_before, m * ldc);
            for (int t = 0; t < 4; t++) {
                bool trans_a = t & 1, trans_b = t & 2;
                size_t lda = (trans_a ? m : k) + pad, ldb = (trans_b ? k : n) + pad;
                for (size_t pair = 0; pair < sizeof pairs / sizeof pairs[0]; pair++) {
                    float alpha = pairs[pair][0], beta = pairs[pair][1];
                    lca_set_threads(1 + (int)random_below(2));
                    memcpy(whole, c_before, m * ldc * sizeof(float));
                    lca_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, whole, ldc);
                    /* C in up to 2 × 2 regions, each region's k in random cuts */
                    memcpy(split, c_before, m * ldc * sizeof(float));
                    size_t row_cut = m > 1 ? random_below(m) : 0, col_cut = random_below(n);
                    size_t row_begin[2] = {0, row_cut}, row_end[2] = {row_cut, m};
                    size_t col_begin[2] = {0, col_cut}, col_end[2] = {col_cut, n};
                    for (int region = 0; region < 4; region++) {
                        size_t r0 = row_begin[region / 2], r1 = row_end[region / 2];
                        size_t c0 = col_begin[region % 2], c1 = col_end[region % 2];
                        if (r0 >= r1 || c0 >= c1) continue;
                        for (size_t p0 = 0; p0 < k;) {
                            size_t left = k - p0;
                            size_t take = random_below(4) == 0 ? 1 + random_below(left < 3 ? left : 3)
                                                               : 1 + random_below(left);
                            lca_set_threads(1 + (int)random_below(2));
                            const float *a_at = trans_a ? a + p0 * lda + r0 : a + r0 * lda + p0;
                            const float *b_at = trans_b ? b + c0 * ldb + p0 : b + p0 * ldb + c0;
                            lca_sgemm(trans_a, trans_b, r1 - r0, c1 - c0, take, alpha, a_at, lda,
                                      b_at, ldb, p0 == 0 ? beta : 1.0f, split + r0 * ldc + c0,
                                      ldc);
                            p0 += take;
                        }
                    }
                    compared++;
                    if (memcmp(whole, split, m * ldc * sizeof(float))) {
                        differ++;
                        failures++;
                        printf("FAIL  %-9s k split differs: %zu×%zu×%zu %c%c alpha %.2f "
                               "beta %.1f\n", kernels[kernel], m, n, k, trans_a ? 'T' : 'N',
                               trans_b ? 'T' : 'N', (double)alpha, (double)beta);
                    }
                }
            }
            free(a); free(b); free(c_before); free(whole); free(split);
        }
    }
    lca_set_threads(saved);
    lca_gemm_select_kernel(NULL);
    printf("  k split at random points, C in random regions, 1/2 threads: %zu of %zu products "
           "byte-identical to one call%s\n", compared - differ, compared, differ ? "  FAIL" : "");
}

/* beta = 0 must overwrite C, even NaN, on every path: full tiles, edge
 * tiles, k = 0 and alpha = 0. */
static void check_beta_zero_over_nan(void) {
    const shape cases[] = {{12, 32, 40, ""}, {13, 35, 40, ""}, {5, 9, 0, ""},
                           {7, 20, 33, ""},  {21, 65, 40, ""}, {10, 32, 300, ""}};
    for (size_t index = 0; index < sizeof cases / sizeof cases[0]; index++) {
        size_t m = cases[index].m, n = cases[index].n, k = cases[index].k;
        for (int alpha_zero = 0; alpha_zero < 2; alpha_zero++) {
            float alpha = alpha_zero ? 0.0f : 1.0f;
            float *a = new_floats(m * k), *b = new_floats(k * n);
            float *over_nan = new_floats(m * n), *over_zero = new_floats(m * n);
            fill_random(a, m * k);
            fill_random(b, k * n);
            for (size_t i = 0; i < m * n; i++) {
                over_nan[i] = NAN;
                over_zero[i] = 0.0f;
            }
            lca_sgemm(false, true, m, n, k, alpha, a, k, b, k, 0.0f, over_nan, n);
            lca_sgemm(false, true, m, n, k, alpha, a, k, b, k, 0.0f, over_zero, n);
            bool same = memcmp(over_nan, over_zero, m * n * sizeof(float)) == 0;
            printf("  beta 0 over NaN, %zu×%zu×%zu alpha %.0f: %s\n", m, n, k, (double)alpha,
                   same ? "ok" : "FAIL");
            if (!same) failures++;
            free(a); free(b); free(over_nan); free(over_zero);
        }
    }
}

/* The bytes of C must not depend on the thread count. */
static void check_thread_determinism(void) {
    const shape cases[] = {
        {1000, 100, 784, ""}, {250, 784, 100, ""}, {100, 784, 250, ""},
        {10, 50, 1000, ""},   {290, 530, 520, ""}, {37, 1100, 300, ""},
    };
    int saved = lca_threads();
    for (size_t index = 0; index < sizeof cases / sizeof cases[0]; index++) {
        size_t m = cases[index].m, n = cases[index].n, k = cases[index].k;
        for (int t = 0; t < 4; t++) {
            bool trans_a = t & 1, trans_b = t & 2;
            float *a = new_floats(m * k), *b = new_floats(k * n), *c_before = new_floats(m * n);
            float *results[3];
            fill_random(a, m * k);
            fill_random(b, k * n);
            fill_random(c_before, m * n);
            for (int threads = 1; threads <= 3; threads++) {
                results[threads - 1] = new_floats(m * n);
                memcpy(results[threads - 1], c_before, m * n * sizeof(float));
                lca_set_threads(threads);
                lca_sgemm(trans_a, trans_b, m, n, k, 0.5f, a, trans_a ? m : k, b,
                          trans_b ? k : n, 1.0f, results[threads - 1], n);
            }
            bool same = memcmp(results[0], results[1], m * n * sizeof(float)) == 0 &&
                        memcmp(results[0], results[2], m * n * sizeof(float)) == 0;
            printf("  threads 1/2/3 bitwise, %4zu×%-4zu×%-4zu %c%c: %s\n", m, n, k,
                   trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', same ? "identical" : "FAIL");
            if (!same) failures++;
            for (int i = 0; i < 3; i++) free(results[i]);
            free(a); free(b); free(c_before);
        }
    }
    lca_set_threads(saved);
}

/* LCA_KERNEL's values (lca_kernel_parse, what lca_kernel_check applies to
 * the environment): unset or empty is the automatic choice, each family
 * name is that family when this CPU runs it, anything else an error naming
 * the value; the process's family is the one lca_gemm_kernel_name names. */
static void check_kernel_names(void) {
    lca_kernel_family family;
    bool ok = lca_kernel_parse(NULL, &family) == LCA_OK &&
              lca_kernel_parse("", &family) == LCA_OK;
    for (int kernel = 0; kernel < KERNELS; kernel++) {
        lca_status status = lca_kernel_parse(kernels[kernel], &family);
        bool expected = kernel_available[kernel] ? status == LCA_OK
                                                 : status == LCA_ERR_UNSUPPORTED &&
                                                       strstr(lca_last_error(), kernels[kernel]);
        printf("  LCA_KERNEL=%s: %s\n", kernels[kernel],
               status == LCA_OK ? "accepted" : lca_last_error());
        ok = ok && expected;
    }
    static const char *const wrong[] = {"avx", "AVX2", "avx2-fma", "sse", " avx2", "neon"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        bool refused = lca_kernel_parse(wrong[i], &family) == LCA_ERR_INVALID_ARGUMENT &&
                       strstr(lca_last_error(), wrong[i]) != NULL &&
                       strstr(lca_last_error(), "avx512, avx2 or portable") != NULL;
        if (i == 0) printf("  LCA_KERNEL=%s: %s\n", wrong[i], lca_last_error());
        ok = ok && refused;
    }
    const char *env = getenv("LCA_KERNEL");
    ok = ok && (lca_kernel_check() == LCA_OK) == (lca_kernel_parse(env, &family) == LCA_OK);
    ok = ok && strcmp(lca_gemm_kernel_name(), kernels[lca_kernel_current() == LCA_KERNEL_AVX512 ? AVX512
                                                      : lca_kernel_current() == LCA_KERNEL_AVX2 ? AVX2
                                                      : PORTABLE]) == 0;
    printf("  LCA_KERNEL values (this process: %s%s%s): %s\n", env ? "LCA_KERNEL=" : "unset",
           env ? env : "", env ? "" : "", ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

/* lca_parallel_for (threads.c) must run every index exactly once, at any
 * thread count, and calls from inside a body must still run. */
typedef struct parallel_check {
    int *visits; /* count: how often each index ran */
    size_t count;
} parallel_check;

static void visit_index(size_t index, void *context) {
    parallel_check *check = context;
    check->visits[index]++;
}

static void visit_nested(size_t index, void *context) {
    parallel_check *inner = &((parallel_check *)context)[index];
    lca_parallel_for(inner->count, visit_index, inner);
}

static void check_parallel_for(void) {
    int saved = lca_threads();
    for (int threads = 1; threads <= 3; threads++) {
        lca_set_threads(threads);
        int visits[1000] = {0}, nested_visits[4][50] = {{0}};
        parallel_check check = {visits, 1000};
        parallel_check nested[4];
        for (int i = 0; i < 4; i++) nested[i] = (parallel_check){nested_visits[i], 50};
        lca_parallel_for(0, visit_index, &check);
        lca_parallel_for(1000, visit_index, &check);
        lca_parallel_for(4, visit_nested, nested);
        bool once = true;
        for (size_t i = 0; i < 1000; i++) once = once && visits[i] == 1;
        for (size_t i = 0; i < 4 * 50; i++) once = once && nested_visits[i / 50][i % 50] == 1;
        printf("  lca_parallel_for at %d threads (lca_threads %d): %s\n", threads, lca_threads(),
               once ? "every index once" : "FAIL");
        if (!once) failures++;
    }
    lca_set_threads(saved);
}

int main(void) {
    printf("process kernel family: %s; thread back end: %s, %d threads\n", lca_gemm_kernel_name(),
           lca_thread_backend(), lca_threads());
    for (int kernel = 0; kernel < KERNELS; kernel++) {
        kernel_available[kernel] = lca_gemm_select_kernel(kernels[kernel]);
        if (!kernel_available[kernel])
            printf("  %s: skipped, not available on this CPU\n", kernels[kernel]);
    }
    lca_gemm_select_kernel(NULL);
    printf("worst |fast - naive| / (|alpha| sum|a||b| + |beta||c|), tolerance %.0e:\n",
           TOLERANCE);
    double worst = 0.0;
    for (size_t index = 0; index < sizeof shapes / sizeof shapes[0]; index++) {
        double difference = check_shape(&shapes[index]);
        if (!(difference <= worst)) worst = difference;
    }
    double edges = check_edge_sizes();
    if (!(edges <= worst)) worst = edges;
    for (int kernel = 0; kernel < KERNELS; kernel++) {
        if (!kernel_available[kernel]) continue;
        lca_gemm_select_kernel(kernels[kernel]);
        printf("kernel %s:\n", kernels[kernel]);
        check_beta_zero_over_nan();
        check_thread_determinism();
    }
    lca_gemm_select_kernel(NULL);
    check_kernels_bitwise();
    check_k_splits();
    check_kernel_names();
    check_parallel_for();
    printf("worst relative difference over all cases: %.3e (tolerance %.0e)\n", worst,
           TOLERANCE);
    printf("test_gemm: %s (%d failures)\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
