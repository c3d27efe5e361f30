/* gemm_bench.c: GFLOP/s of lca_sgemm per micro-kernel (portable, avx2,
 * avx512) on the GEMM shapes of the evaluation pass (the 784-100-50-10 net
 * on chunks of 1000 examples, LeNet's im2col convolutions and fc1), at 1 and
 * 2 threads, against the peer measured in the same run: the FMA peak of one
 * core (a register-only loop of independent FMAs, 256-bit and, where the CPU
 * has it, 512-bit). Each call is timed whole, packing included.
 *
 *   make build/liblca.a              # OpenMP when found; OPENMP=0: pthreads
 *   clang -std=c11 -O2 -ICCore/include -ICCore -D_GNU_SOURCE \
 *       -c tools/bench/gemm_bench.c -o build/gemm_bench.o
 *   clang build/gemm_bench.o build/liblca.a $(make -s ldlibs) -o build/gemm_bench
 *   ./build/gemm_bench [kernel ...] [--rounds N]
 *       kernels: portable, avx2, avx512 (default: every one this CPU runs)
 *
 * On a shared
 * machine the numbers move by 10-40% from run to run: each cell is the best
 * of at least 7 calls (more for small shapes, about 0.2 s), and the best of
 * N rounds of the whole table (default 3), the least disturbed one. For
 * OpenBLAS on the same shapes, time np.matmul on them (tools/bench/
 * numpy_sgemm.py times the whole evaluation pass).
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
    bool trans_a, trans_b;
    size_t m, n, k;
    const char *what;
} bench_shape;

/* As the layers call them: layers_dense.c and layers_conv.c (im2col). */
static const bench_shape shapes[] = {
    {false, true, 1000, 100, 784, "fc1 forward X W1^T"},
    {true, false, 100, 784, 1000, "fc1 weight grad dY^T X"},
    {false, true, 1000, 50, 100, "fc2 forward"},
    {false, false, 1000, 100, 50, "fc2 input grad dY W2"},
    {true, false, 50, 100, 1000, "fc2 weight grad"},
    {false, true, 1000, 10, 50, "fc3 forward"},
    {false, false, 1000, 50, 10, "fc3 input grad"},
    {true, false, 10, 50, 1000, "fc3 weight grad"},
    {false, false, 40, 196, 500, "LeNet conv2 forward W col"},
    {true, false, 500, 196, 40, "LeNet conv2 input grad W^T dY"},
    {false, true, 40, 500, 196, "LeNet conv2 weight grad dY col^T"},
    {false, false, 20, 784, 25, "LeNet conv1 forward"},
    {true, false, 25, 784, 20, "LeNet conv1 input grad"},
    {false, true, 20, 25, 784, "LeNet conv1 weight grad"},
    {false, true, 1000, 400, 1960, "LeNet fc1 forward"},
};

static const char *const kernel_names[] = {"portable", "avx2", "avx512"};
enum { KERNELS = 3 };

/* Best-of GFLOP/s over at least 7 calls filling about `budget` seconds:
 * the best is the least disturbed by the other tenants of the machine. */
static double measure(const bench_shape *s, const float *a, const float *b, float *c,
                      double budget) {
    size_t lda = s->trans_a ? s->m : s->k, ldb = s->trans_b ? s->k : s->n;
    double flops = 2.0 * (double)s->m * (double)s->n * (double)s->k, best = 0;
    lca_sgemm(s->trans_a, s->trans_b, s->m, s->n, s->k, 1.0f, a, lda, b, ldb, 0.0f, c, s->n);
    double end = now_seconds() + budget;
    int runs = 0;
    do {
        double start = now_seconds();
        lca_sgemm(s->trans_a, s->trans_b, s->m, s->n, s->k, 1.0f, a, lda, b, ldb, 0.0f, c, s->n);
        double seconds = now_seconds() - start;
        if (flops / seconds > best) best = flops / seconds;
        runs++;
    } while (now_seconds() < end || runs < 7);
    return best * 1e-9;
}

enum { SHAPES = sizeof shapes / sizeof shapes[0] };

int main(int argc, char **argv) {
    /* Arguments: kernel names (default: every kernel this CPU runs) and
     * --rounds N (default 3): the whole table is measured N times, the
     * rounds interleaved, and each cell keeps its best, so that a burst of
     * load from other tenants spoils at most one round of a cell. */
    bool wanted[KERNELS] = {false}, any = false;
    int rounds = 3;
    for (int arg = 1; arg < argc; arg++) {
        if (strcmp(argv[arg], "--rounds") == 0 && arg + 1 < argc) {
            rounds = atoi(argv[++arg]);
            continue;
        }
        for (int kernel = 0; kernel < KERNELS; kernel++)
            if (strcmp(argv[arg], kernel_names[kernel]) == 0) wanted[kernel] = any = true;
    }
    if (rounds < 1) rounds = 1;
    for (int kernel = 0; kernel < KERNELS; kernel++) {
        if (!any) wanted[kernel] = true;
        if (wanted[kernel] && !lca_gemm_select_kernel(kernel_names[kernel])) {
            printf("kernel %s: not available on this CPU\n", kernel_names[kernel]);
            wanted[kernel] = false;
        }
    }
    lca_gemm_select_kernel(NULL);
    printf("automatic kernel %s, thread back end %s, %d rounds\n", lca_gemm_kernel_name(),
           lca_thread_backend(), rounds);

    static double best[SHAPES][KERNELS][2]; /* GFLOP/s at 1 and 2 threads */
    double peak256 = 0, peak512 = 0;
    for (int round = 0; round < rounds; round++) {
#ifdef BENCH_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            double peak = fma256_peak();
            if (peak > peak256) peak256 = peak;
        }
        if (__builtin_cpu_supports("avx512f")) {
            double peak = fma512_peak();
            if (peak > peak512) peak512 = peak;
        }
#endif
        for (size_t index = 0; index < SHAPES; index++) {
            const bench_shape *s = &shapes[index];
            float *a = malloc(s->m * s->k * sizeof(float));
            float *b = malloc(s->k * s->n * sizeof(float));
            float *c = malloc(s->m * s->n * sizeof(float));
            if (!a || !b || !c) return 2;
            for (size_t i = 0; i < s->m * s->k; i++)
                a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
            for (size_t i = 0; i < s->k * s->n; i++)
                b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
            for (int kernel = 0; kernel < KERNELS; kernel++) {
                if (!wanted[kernel]) continue;
                lca_gemm_select_kernel(kernel_names[kernel]);
                for (int threads = 1; threads <= 2; threads++) {
                    lca_set_threads(threads);
                    double gflops = measure(s, a, b, c, 0.2);
                    if (gflops > best[index][kernel][threads - 1])
                        best[index][kernel][threads - 1] = gflops;
                }
            }
            free(a); free(b); free(c);
        }
        fprintf(stderr, "round %d of %d done\n", round + 1, rounds);
    }
    lca_gemm_select_kernel(NULL);
    lca_set_threads(0);

    double peak = peak512 > 0 ? peak512 : peak256; /* the ceiling of one core */
    if (peak256 > 0) printf("peer: 256-bit FMA peak, 1 thread: %.1f GFLOP/s\n", peak256);
    if (peak512 > 0) printf("peer: 512-bit FMA peak, 1 thread: %.1f GFLOP/s\n", peak512);
    printf("GFLOP/s, best over rounds of the best of >= 7 calls; 1t/2t = 1/2 threads;\n"
           "%% = 1 thread, of the widest peak above\n");
    printf("%-20s %-33s", "op m x n x k", "layer");
    for (int kernel = 0; kernel < KERNELS; kernel++)
        if (wanted[kernel]) printf(" %9s 1t    %% 2t   ", kernel_names[kernel]);
    printf("\n");
    for (size_t index = 0; index < SHAPES; index++) {
        const bench_shape *s = &shapes[index];
        char dims[40];
        snprintf(dims, sizeof dims, "%c%c %zux%zux%zu", s->trans_a ? 'T' : 'N',
                 s->trans_b ? 'T' : 'N', s->m, s->n, s->k);
        printf("%-20s %-33s", dims, s->what);
        for (int kernel = 0; kernel < KERNELS; kernel++) {
            if (!wanted[kernel]) continue;
            double one = best[index][kernel][0], two = best[index][kernel][1];
            printf(" %12.1f %4.0f %6.1f", one, peak > 0 ? 100 * one / peak : 0, two);
        }
        printf("\n");
    }
    return 0;
}
