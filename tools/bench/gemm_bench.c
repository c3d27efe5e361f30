/* gemm_bench.c: GFLOP/s of lca_sgemm on the layer shapes of the
 * 784-100-50-10 net, at 1 and 2 threads, against two peers measured in the
 * same run: the FMA peak of this CPU (a register-only loop of independent
 * FMAs, 256-bit and, where the CPU has it, 512-bit) and the float64
 * reference lca_sgemm_naive. An argument names the kernel ("portable").
 *
 *   make build/liblca.a
 *   clang -std=c11 -O2 -fopenmp -I/usr/lib/llvm-14/lib/clang/14.0.6/include \
 *       -ICCore/include -ICCore -c tools/bench/gemm_bench.c -o build/gemm_bench.o
 *   clang build/gemm_bench.o build/liblca.a -lz -lm -L/usr/lib/x86_64-linux-gnu \
 *       -lomp5 -o build/gemm_bench        # link as the Makefile does, without -fopenmp
 *   ./build/gemm_bench
 *
 * On a shared machine the numbers move by 10-20% from run to run; each cell
 * is the best of repeated runs, the least disturbed one.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BENCH_X86 1
#endif

bool lca_gemm_select_kernel(const char *name); /* gemm.c, for tests and benchmarks */

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#ifdef BENCH_X86
/* 12 independent chains, as many as the 6×16 kernel keeps, so only the FMA
 * ports limit the loop. Returns GFLOP/s of one thread. */
__attribute__((target("avx2,fma"), noinline)) static double fma256_peak(void) {
    __m256 acc[12], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    const long steps = 2000000;
    double seconds = 1e9;
    for (int run = 0; run < 10; run++) { /* the best run is the least disturbed */
        double start = now_seconds();
        for (long s = 0; s < steps; s++)
            for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
        double elapsed = now_seconds() - start;
        if (elapsed < seconds) seconds = elapsed;
    }
    float sink = 0;
    for (int i = 0; i < 12; i++) sink += _mm256_cvtss_f32(acc[i]);
    if (sink == 12345.0f) printf(" ");
    return (double)steps * 12 * 16 / seconds * 1e-9;
}

__attribute__((target("avx512f"), noinline)) static double fma512_peak(void) {
    __m512 acc[12], x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    const long steps = 2000000;
    double seconds = 1e9;
    for (int run = 0; run < 10; run++) {
        double start = now_seconds();
        for (long s = 0; s < steps; s++)
            for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
        double elapsed = now_seconds() - start;
        if (elapsed < seconds) seconds = elapsed;
    }
    float sink = 0;
    for (int i = 0; i < 12; i++) sink += _mm512_reduce_add_ps(acc[i]);
    if (sink == 12345.0f) printf(" ");
    return (double)steps * 12 * 32 / seconds * 1e-9;
}
#endif

typedef struct bench_shape {
    size_t m, n, k;
    bool trans_a, trans_b;
    const char *what;
} bench_shape;

static const bench_shape shapes[] = {
    {1000, 100, 784, false, true, "fc1 forward, chunk 1000: X W1^T"},
    {250, 100, 784, false, true, "fc1 forward, batch 250"},
    {100, 784, 250, true, false, "fc1 weight gradient: dY^T X"},
    {250, 784, 100, false, false, "fc1 input gradient: dY W1"},
    {1000, 100, 784, false, false, "1000x100x784 NN"},
    {10, 50, 1000, true, false, "fc3 weight gradient: dY^T H2"},
    {1000, 10, 50, false, true, "fc3 forward: H2 W3^T"},
};

/* Best-of GFLOP/s over repetitions filling about `budget` seconds: the
 * best is the least disturbed by the other tenants of the machine. */
static double measure(const bench_shape *s, const float *a, const float *b, float *c,
                      bool naive, double budget) {
    size_t lda = s->trans_a ? s->m : s->k, ldb = s->trans_b ? s->k : s->n;
    double flops = 2.0 * (double)s->m * (double)s->n * (double)s->k, best = 0;
    double end = now_seconds() + budget;
    int runs = 0;
    do {
        double start = now_seconds();
        if (naive)
            lca_sgemm_naive(s->trans_a, s->trans_b, s->m, s->n, s->k, 1.0f, a, lda, b, ldb,
                            0.0f, c, s->n);
        else
            lca_sgemm(s->trans_a, s->trans_b, s->m, s->n, s->k, 1.0f, a, lda, b, ldb, 0.0f,
                      c, s->n);
        double seconds = now_seconds() - start;
        if (flops / seconds > best) best = flops / seconds;
        runs++;
    } while (now_seconds() < end || runs < 3);
    return best * 1e-9;
}

int main(int argc, char **argv) {
    const char *kernel = argc > 1 ? argv[1] : NULL; /* "portable" forces the fallback */
    if (kernel && !lca_gemm_select_kernel(kernel)) {
        fprintf(stderr, "gemm_bench: kernel %s not available\n", kernel);
        return 1;
    }
    printf("kernel %s, OpenMP %s\n", lca_gemm_kernel_name(), lca_has_openmp() ? "yes" : "no");
    double peak = 0;
#ifdef BENCH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        peak = fma256_peak();
        printf("peer: 256-bit FMA peak, 1 thread: %.1f GFLOP/s\n", peak);
    }
    if (__builtin_cpu_supports("avx512f"))
        printf("peer: 512-bit FMA peak, 1 thread: %.1f GFLOP/s\n", fma512_peak());
#endif
    printf("GFLOP/s (best of repeated runs); 'of peak' = of the 256-bit FMA peak x threads\n");
    printf("%-16s %-34s %7s %9s %8s %9s %8s\n", "m x n x k op", "layer", "naive", "1 thread",
           "of peak", "2 threads", "of peak");
    for (size_t index = 0; index < sizeof shapes / sizeof shapes[0]; index++) {
        const bench_shape *s = &shapes[index];
        float *a = malloc(s->m * s->k * sizeof(float)), *b = malloc(s->k * s->n * sizeof(float));
        float *c = malloc(s->m * s->n * sizeof(float));
        if (!a || !b || !c) return 2;
        for (size_t i = 0; i < s->m * s->k; i++) a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < s->k * s->n; i++) b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        lca_set_threads(1);
        double naive = measure(s, a, b, c, true, 0.2);
        double one = measure(s, a, b, c, false, 0.5);
        lca_set_threads(2);
        double two = measure(s, a, b, c, false, 0.5);
        char dims[40];
        snprintf(dims, sizeof dims, "%zux%zux%zu %c%c", s->m, s->n, s->k, s->trans_a ? 'T' : 'N',
                 s->trans_b ? 'T' : 'N');
        printf("%-16s %-34s %7.2f %9.1f %7.0f%% %9.1f %7.0f%%\n", dims, s->what, naive, one,
               peak > 0 ? 100 * one / peak : 0, two, peak > 0 ? 100 * two / (2 * peak) : 0);
        free(a); free(b); free(c);
    }
    lca_set_threads(0);
    return 0;
}
