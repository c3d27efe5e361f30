/* threads.c: the thread count and the one parallel loop of the core.
 *
 * OpenMP is optional: without it every loop runs on the calling thread and
 * gives the same bytes. Results never depend on the thread count, because
 * callers only split work whose pieces write disjoint memory and never split
 * a reduction. */
#include "internal.h"

#include <stdatomic.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* 0 = the OpenMP default (OMP_NUM_THREADS or the number of cores). */
static atomic_int requested_threads;

int lca_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void lca_set_threads(int threads) {
    atomic_store_explicit(&requested_threads, threads > 0 ? threads : 0,
                          memory_order_relaxed);
}

int lca_threads(void) {
#ifdef _OPENMP
    int threads = atomic_load_explicit(&requested_threads, memory_order_relaxed);
    return threads > 0 ? threads : omp_get_max_threads();
#else
    return 1;
#endif
}

void lca_parallel_for(size_t count, lca_parallel_body body, void *context) {
#ifdef _OPENMP
    int threads = lca_threads();
    if ((size_t)threads > count) threads = (int)count;
    /* A call from inside a parallel region runs on its own thread: the outer
     * region already owns the cores, and nesting would oversubscribe them. */
    if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (size_t index = 0; index < count; index++) body(index, context);
        return;
    }
#endif
    for (size_t index = 0; index < count; index++) body(index, context);
}
