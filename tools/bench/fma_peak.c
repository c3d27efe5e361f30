/* fma_peak.c: the measured FMA-throughput ceiling of this CPU, in float32
 * GFLOP/s (one FMA = 2 FLOP), for T threads running at once.
 *
 * Each thread runs a register-only loop of 12 independent FMA chains (enough
 * to cover the FMA latency on every current x86 core: 4 cycles × 2 ports = 8
 * chains in flight), 256-bit AVX2+FMA and, where the CPU has it, 512-bit
 * AVX-512F. One unmeasured warm-up run per width first (the core leaves its
 * idle clock and enters its wide-vector licence), then the best of several
 * runs (the least disturbed one on a shared machine); the threads start
 * together at a barrier and the run's time is the slowest thread's.
 *
 *   clang -std=c11 -O2 -pthread tools/bench/fma_peak.c -o build/bench/fma_peak
 *   ./build/bench/fma_peak [threads] [runs]     # prints one JSON object
 *
 * Not x86-64: prints {"avx2": null, "avx512": null}.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PEAK_X86 1
#endif

#define CHAINS 12
#define STEPS 40000000L /* × 12 FMAs per step: about 0.15 s per run at AVX2 on a 3 GHz core,
                          * long enough for the clock to settle after the idle wait */

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static volatile float sink;

#ifdef PEAK_X86
__attribute__((target("avx2,fma"), noinline)) static void chains256(long steps) {
    __m256 acc[CHAINS], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long s = 0; s < steps; s++) {
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
        __asm__ volatile("" ::: "memory"); /* keep the loop; acc stays in registers */
    }
    float total = 0;
    for (int i = 0; i < CHAINS; i++) total += _mm256_cvtss_f32(acc[i]);
    sink = total;
}

__attribute__((target("avx512f"), noinline)) static void chains512(long steps) {
    __m512 acc[CHAINS], x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long s = 0; s < steps; s++) {
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
        __asm__ volatile("" ::: "memory");
    }
    float total = 0;
    for (int i = 0; i < CHAINS; i++) total += _mm512_cvtss_f32(acc[i]);
    sink = total;
}
#endif

typedef struct job {
    pthread_barrier_t *barrier;
    int wide; /* 0: 256-bit, 1: 512-bit */
    double seconds;
} job;

static void *worker(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->barrier);
    double start = now_seconds();
#ifdef PEAK_X86
    if (j->wide) chains512(STEPS);
    else chains256(STEPS);
#endif
    j->seconds = now_seconds() - start;
    return NULL;
}

/* GFLOP/s of `threads` threads together, best of `runs`. */
static double measure(int threads, int wide, int runs) {
    double best = 0;
    for (int r = -1; r < runs; r++) { /* r = -1: warm-up, not counted */
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, (unsigned)threads);
        pthread_t ids[64];
        job jobs[64];
        for (int t = 0; t < threads; t++) {
            jobs[t] = (job){&barrier, wide, 0};
            if (t > 0) pthread_create(&ids[t], NULL, worker, &jobs[t]);
        }
        worker(&jobs[0]);
        double slowest = jobs[0].seconds;
        for (int t = 1; t < threads; t++) {
            pthread_join(ids[t], NULL);
            if (jobs[t].seconds > slowest) slowest = jobs[t].seconds;
        }
        pthread_barrier_destroy(&barrier);
        double lanes = wide ? 16 : 8;
        double gflops = (double)threads * STEPS * CHAINS * lanes * 2 / slowest * 1e-9;
        if (r >= 0 && gflops > best) best = gflops;
    }
    return best;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int runs = argc > 2 ? atoi(argv[2]) : 10;
    if (threads < 1 || threads > 64 || runs < 1) {
        fprintf(stderr, "usage: fma_peak [threads 1-64] [runs]\n");
        return 64;
    }
#ifdef PEAK_X86
    __builtin_cpu_init();
    int has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int has_avx512 = __builtin_cpu_supports("avx512f");
    printf("{\"threads\": %d, \"runs\": %d, \"statistic\": \"best\"", threads, runs);
    if (has_avx2) printf(", \"avx2\": %.2f", measure(threads, 0, runs));
    else printf(", \"avx2\": null");
    if (has_avx512) printf(", \"avx512\": %.2f", measure(threads, 1, runs));
    else printf(", \"avx512\": null");
    printf("}\n");
#else
    printf("{\"threads\": %d, \"avx2\": null, \"avx512\": null}\n", threads);
#endif
    return 0;
}
