/* threads.c: the thread count and the two parallel constructs of the core,
 * a loop (lca_parallel_for) and a team (lca_parallel_team).
 *
 * Two back ends, chosen when this file is compiled (docs/threads.md):
 * - OpenMP, when the core is built with -fopenmp (the Makefile, when it
 *   finds libomp);
 * - otherwise a small pool of POSIX threads, started on first use and kept
 *   for the life of the process. This is what SwiftPM builds: it needs no
 *   compiler or linker flag, so LCAKit builds as a versioned dependency.
 * Results never depend on the back end or the thread count, because callers
 * only split work whose pieces write disjoint memory and never split a
 * reduction. A parallel call made from inside a loop or a team runs on its
 * own thread: the outer call already owns the cores. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#else
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#endif

/* 0 = the default (lca_threads). */
static atomic_int requested_threads;

void lca_set_threads(int threads) {
    atomic_store_explicit(&requested_threads, threads > 0 ? threads : 0,
                          memory_order_relaxed);
}

#ifdef _OPENMP

const char *lca_thread_backend(void) { return "openmp"; }

/* OMP_NUM_THREADS, else the CPUs this process may run on */
static int default_threads(void) { return omp_get_max_threads(); }

int lca_parallel_threads(void) { return omp_in_parallel() ? 1 : lca_threads(); }

void lca_parallel_team(size_t threads, lca_team_body body, void *context) {
    if (threads == 0) threads = 1;
    if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads((int)threads)
        {
            size_t member = (size_t)omp_get_thread_num(), team = (size_t)omp_get_num_threads();
            body(member, context);
            /* members OpenMP gave no thread for (OMP_THREAD_LIMIT) */
            if (member == 0)
                for (size_t other = team; other < threads; other++) body(other, context);
        }
        return;
    }
    for (size_t member = 0; member < threads; member++) body(member, context);
}

void lca_parallel_for(size_t count, lca_parallel_body body, void *context) {
    int threads = lca_parallel_threads();
    if ((size_t)threads > count) threads = (int)count;
    if (threads > 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (size_t index = 0; index < count; index++) body(index, context);
        return;
    }
    for (size_t index = 0; index < count; index++) body(index, context);
}

#else /* POSIX threads */

const char *lca_thread_backend(void) { return "pthreads"; }

/* The same default as OpenMP's: the first number of OMP_NUM_THREADS when it
 * is set, else the CPUs this process may run on (its affinity mask, which a
 * container or taskset may narrow), else the CPUs online. */
static int default_threads(void) {
    const char *text = getenv("OMP_NUM_THREADS");
    if (text) {
        char *end;
        long n = strtol(text, &end, 10);
        if (end != text && n > 0 && n <= 1024 && (*end == '\0' || *end == ',')) return (int)n;
    }
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

/* The pool. A job is a count of items (team members, or blocks of a
 * loop's indices) that the caller and the workers it wakes take one at a
 * time from a shared counter, so every item runs exactly once, on whichever
 * thread takes it: a worker that wakes late finds the items taken and
 * leaves, and the caller never waits for a thread that has not started.
 * (Which thread runs an item never changes the bytes: items write disjoint
 * memory.) The caller then waits only for the workers that joined.
 *
 * One job at a time: a caller that finds the pool busy (another thread of
 * the program runs a parallel call) runs its items itself. After a job a
 * worker spins for a short while before it sleeps: the core makes many
 * parallel calls per training step (two-thread GEMMs microseconds apart),
 * and a sleeping thread takes tens of microseconds to wake (libomp's
 * workers spin for 200 ms by default). */
#define MAX_WORKERS 255
#define SPIN_NANOSECONDS 1000000 /* 1 ms */
/* the job word: generation << 9 | closed << 8 | workers asked to join */
#define JOB_CLOSED ((uint64_t)1 << 8)
#define JOB_WORKERS(job) ((size_t)((job) & 0xff))
#define JOB_NEXT_GENERATION(job) ((((job) >> 9) + 1) << 9)

typedef void (*item_body)(size_t item, void *context);

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* a new job, for workers that sleep */
    pthread_cond_t done;      /* the last worker in a job left it */
    size_t workers;           /* started: workers 1 … workers; under lock */
    size_t sleepers;          /* workers waiting on wake; under lock */
    bool caller_waits;        /* the caller waits on done; under lock */
    _Atomic uint64_t job;     /* the current job's word (above) */
    atomic_size_t next;       /* the next item to take */
    atomic_size_t inside;     /* workers inside the current job */
    atomic_flag busy;         /* a job is being run (held by its caller) */
    /* the current job: written before its word is published, read only by
     * workers inside it, which the caller waits for before it returns */
    item_body body;
    void *context;
    size_t items;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .busy = ATOMIC_FLAG_INIT,
};

/* the job word when each worker was started (the worker waits for a newer) */
static uint64_t job_at_start[MAX_WORKERS + 1];

/* true on a pool worker, and on a caller while its job runs */
static _Thread_local bool in_parallel;

static inline void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_nanoseconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The job word once it differs from seen, or seen after the spin time. */
static uint64_t spin_for_job(uint64_t seen) {
    uint64_t start = now_nanoseconds();
    for (unsigned round = 1;; round++) {
        uint64_t job = atomic_load(&pool.job);
        if (job != seen) return job;
        spin_pause();
        if (round % 64 == 0 && now_nanoseconds() - start > SPIN_NANOSECONDS) return seen;
    }
}

static void take_items(void) {
    for (size_t item; (item = atomic_fetch_add(&pool.next, 1)) < pool.items;)
        pool.body(item, pool.context);
}

static void leave_job(void) {
    if (atomic_fetch_sub(&pool.inside, 1) == 1) {
        pthread_mutex_lock(&pool.lock);
        if (pool.caller_waits) pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.lock);
    }
}

static void *worker_main(void *argument) {
    size_t worker = (size_t)(uintptr_t)argument;
    in_parallel = true;
    uint64_t seen = job_at_start[worker];
    for (;;) {
        uint64_t job = spin_for_job(seen);
        if (job == seen) {
            pthread_mutex_lock(&pool.lock);
            pool.sleepers++;
            while ((job = atomic_load(&pool.job)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.lock);
        }
        seen = job;
        if ((job & JOB_CLOSED) || worker > JOB_WORKERS(job)) continue;
        /* Enter, then make sure the job is still open: the caller closes
         * it before it counts who is inside (all sequentially consistent),
         * so either it counts this worker or this worker sees it closed. */
        atomic_fetch_add(&pool.inside, 1);
        if (atomic_load(&pool.job) == job) take_items();
        leave_job();
    }
    return NULL;
}

/* Start workers until there are wanted (or as many as the system gives);
 * called with busy held, so no job runs. Returns the workers there are. */
static size_t start_workers(size_t wanted) {
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    pthread_mutex_lock(&pool.lock);
    while (pool.workers < wanted) {
        size_t worker = pool.workers + 1;
        job_at_start[worker] = atomic_load(&pool.job);
        pthread_attr_t attributes;
        pthread_t thread;
        if (pthread_attr_init(&attributes) != 0) break;
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attributes, worker_main, (void *)(uintptr_t)worker);
        pthread_attr_destroy(&attributes);
        if (failed) break; /* fewer threads: slower, the same bytes */
        pool.workers = worker;
    }
    size_t workers = pool.workers;
    pthread_mutex_unlock(&pool.lock);
    return workers;
}

/* A child of fork() has only the thread that forked: it starts workers of
 * its own when it needs them. */
static void forget_workers_in_child(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.workers = 0;
    pool.sleepers = 0;
    pool.caller_waits = false;
    atomic_store(&pool.inside, 0);
    atomic_flag_clear(&pool.busy);
    in_parallel = false;
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static void install_fork_handler(void) { pthread_atfork(NULL, NULL, forget_workers_in_child); }

/* Run body(item) for item in [0, items) on the caller and up to threads − 1
 * workers. */
static void run_items(size_t items, size_t threads, item_body body, void *context) {
    if (threads > items) threads = items;
    if (threads <= 1 || in_parallel || atomic_flag_test_and_set(&pool.busy)) {
        for (size_t item = 0; item < items; item++) body(item, context);
        return;
    }
    pthread_once(&fork_handler_once, install_fork_handler);
    size_t workers = start_workers(threads - 1);
    if (workers > threads - 1) workers = threads - 1;
    pool.body = body;
    pool.context = context;
    pool.items = items;
    atomic_store(&pool.next, 0);
    uint64_t job = JOB_NEXT_GENERATION(atomic_load(&pool.job)) | workers;
    atomic_store(&pool.job, job);
    pthread_mutex_lock(&pool.lock);
    if (pool.sleepers) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    in_parallel = true;
    take_items();
    in_parallel = false;

    /* close the job, then wait for the workers inside it */
    atomic_store(&pool.job, job | JOB_CLOSED);
    uint64_t start = now_nanoseconds();
    for (unsigned round = 1; atomic_load(&pool.inside) != 0; round++) {
        spin_pause();
        if (round % 64 == 0 && now_nanoseconds() - start > SPIN_NANOSECONDS) {
            pthread_mutex_lock(&pool.lock);
            pool.caller_waits = true;
            while (atomic_load(&pool.inside) != 0) pthread_cond_wait(&pool.done, &pool.lock);
            pool.caller_waits = false;
            pthread_mutex_unlock(&pool.lock);
            break;
        }
    }
    atomic_flag_clear(&pool.busy);
}

int lca_parallel_threads(void) { return in_parallel ? 1 : lca_threads(); }

void lca_parallel_team(size_t threads, lca_team_body body, void *context) {
    if (threads == 0) threads = 1;
    run_items(threads, threads, body, context);
}

/* lca_parallel_for as items: up to 4 contiguous blocks of indices per
 * thread, so that a worker that joins late still takes a share. */
typedef struct loop_job {
    size_t count, blocks;
    lca_parallel_body body;
    void *context;
} loop_job;

static void loop_block(size_t block, void *context) {
    const loop_job *job = context;
    size_t first = block * job->count / job->blocks;
    size_t end = (block + 1) * job->count / job->blocks;
    for (size_t index = first; index < end; index++) job->body(index, job->context);
}

void lca_parallel_for(size_t count, lca_parallel_body body, void *context) {
    size_t threads = (size_t)lca_parallel_threads();
    if (threads > count) threads = count;
    if (threads <= 1) {
        for (size_t index = 0; index < count; index++) body(index, context);
        return;
    }
    size_t blocks = 4 * threads < count ? 4 * threads : count;
    loop_job job = {.count = count, .blocks = blocks, .body = body, .context = context};
    run_items(blocks, threads, loop_block, &job);
}

#endif

int lca_threads(void) {
    int threads = atomic_load_explicit(&requested_threads, memory_order_relaxed);
    return threads > 0 ? threads : default_threads();
}
