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
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

/* The pool. One job at a time: a caller that finds the pool busy (another
 * thread of the program runs a parallel call) runs its job on its own
 * thread instead of waiting. Member 0 of a team is the caller; members 1 …
 * are workers 1 …, which pick a job up by its generation number. After a
 * job a worker spins for a short while before it sleeps, since the core
 * makes many parallel calls per training step (two-thread GEMMs a few
 * microseconds apart) and a condition-variable wake-up costs tens of
 * microseconds. */
#define MAX_WORKERS 255
#define SPIN_NANOSECONDS 200000 /* 0.2 ms (libomp spins 200 ms by default) */
#define JOB_GENERATION(job) ((job) >> 8)
#define JOB_MEMBERS(job) ((size_t)((job) & 0xff)) /* members 1 … of the job: ≤ MAX_WORKERS */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;      /* a new job, for workers that sleep */
    pthread_cond_t done;      /* the last worker of a job finished */
    size_t workers;           /* started: members 1 … workers; under lock */
    size_t sleepers;          /* workers waiting on wake; under lock */
    bool caller_waits;        /* the caller waits on done; under lock */
    /* generation << 8 | the job's workers, in one word so that a worker
     * reads a job's size with its number */
    _Atomic uint64_t job;
    atomic_size_t pending;    /* workers of the current job still running */
    atomic_flag busy;         /* a job is being run (held by its caller) */
    /* the current job, written before job is raised, read only by its
     * members, and not rewritten before the last of them finished */
    lca_team_body body;
    void *context;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .busy = ATOMIC_FLAG_INIT,
};

/* the job word when each worker was started (the worker waits for the next) */
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
        uint64_t job = atomic_load_explicit(&pool.job, memory_order_acquire);
        if (job != seen) return job;
        spin_pause();
        if (round % 64 == 0 && now_nanoseconds() - start > SPIN_NANOSECONDS) return seen;
    }
}

/* Whether the current job's workers all finished within the spin time. */
static bool spin_for_workers(void) {
    uint64_t start = now_nanoseconds();
    for (unsigned round = 1;; round++) {
        if (atomic_load_explicit(&pool.pending, memory_order_acquire) == 0) return true;
        spin_pause();
        if (round % 64 == 0 && now_nanoseconds() - start > SPIN_NANOSECONDS) return false;
    }
}

static void *worker_main(void *argument) {
    size_t member = (size_t)(uintptr_t)argument;
    in_parallel = true;
    uint64_t seen = job_at_start[member];
    for (;;) {
        uint64_t job = spin_for_job(seen);
        if (job == seen) {
            pthread_mutex_lock(&pool.lock);
            pool.sleepers++;
            while ((job = atomic_load_explicit(&pool.job, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.lock);
        }
        seen = job;
        /* A job ends only when its last worker finished, so a member reads
         * its own job's body here; a worker outside this job skips it (it
         * may have skipped older ones: it was outside them too, or they
         * could not have ended). */
        if (member > JOB_MEMBERS(job)) continue;
        pool.body(member, pool.context);
        if (atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.lock);
            if (pool.caller_waits) pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    return NULL;
}

/* Start workers until there are wanted (or as many as the system gives);
 * called with busy held, so no job runs. Returns the workers there are. */
static size_t start_workers(size_t wanted) {
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    pthread_mutex_lock(&pool.lock);
    while (pool.workers < wanted) {
        size_t member = pool.workers + 1;
        job_at_start[member] = atomic_load_explicit(&pool.job, memory_order_relaxed);
        pthread_attr_t attributes;
        pthread_t thread;
        if (pthread_attr_init(&attributes) != 0) break;
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attributes, worker_main, (void *)(uintptr_t)member);
        pthread_attr_destroy(&attributes);
        if (failed) break; /* fewer threads: slower, the same bytes */
        pool.workers = member;
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
    atomic_store(&pool.pending, 0);
    atomic_flag_clear(&pool.busy);
    in_parallel = false;
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;
static void install_fork_handler(void) { pthread_atfork(NULL, NULL, forget_workers_in_child); }

int lca_parallel_threads(void) { return in_parallel ? 1 : lca_threads(); }

void lca_parallel_team(size_t threads, lca_team_body body, void *context) {
    if (threads == 0) threads = 1;
    if (threads == 1 || in_parallel ||
        atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        /* one thread runs every member in turn */
        for (size_t member = 0; member < threads; member++) body(member, context);
        return;
    }
    pthread_once(&fork_handler_once, install_fork_handler);
    size_t workers = start_workers(threads - 1);
    if (workers > threads - 1) workers = threads - 1;
    if (workers > 0) {
        pool.body = body;
        pool.context = context;
        atomic_store_explicit(&pool.pending, workers, memory_order_relaxed);
        uint64_t job = atomic_load_explicit(&pool.job, memory_order_relaxed);
        atomic_store_explicit(&pool.job, ((JOB_GENERATION(job) + 1) << 8) | workers,
                              memory_order_release);
        pthread_mutex_lock(&pool.lock);
        if (pool.sleepers) pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    in_parallel = true;
    body(0, context);
    /* members the system gave no thread for run here, after member 0 */
    for (size_t member = workers + 1; member < threads; member++) body(member, context);
    in_parallel = false;
    if (workers > 0 && !spin_for_workers()) {
        pthread_mutex_lock(&pool.lock);
        pool.caller_waits = true;
        while (atomic_load_explicit(&pool.pending, memory_order_acquire) != 0)
            pthread_cond_wait(&pool.done, &pool.lock);
        pool.caller_waits = false;
        pthread_mutex_unlock(&pool.lock);
    }
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}

/* lca_parallel_for as a team: member t runs the indices
 * [t·count/T, (t+1)·count/T), contiguous blocks as OpenMP's schedule(static). */
typedef struct loop_job {
    size_t count, members;
    lca_parallel_body body;
    void *context;
} loop_job;

static void loop_member(size_t member, void *context) {
    const loop_job *job = context;
    size_t first = member * job->count / job->members;
    size_t end = (member + 1) * job->count / job->members;
    for (size_t index = first; index < end; index++) job->body(index, job->context);
}

void lca_parallel_for(size_t count, lca_parallel_body body, void *context) {
    size_t threads = (size_t)lca_parallel_threads();
    if (threads > count) threads = count;
    if (threads > 1) {
        loop_job job = {.count = count, .members = threads, .body = body, .context = context};
        lca_parallel_team(threads, loop_member, &job);
        return;
    }
    for (size_t index = 0; index < count; index++) body(index, context);
}

#endif

int lca_threads(void) {
    int threads = atomic_load_explicit(&requested_threads, memory_order_relaxed);
    return threads > 0 ? threads : default_threads();
}
