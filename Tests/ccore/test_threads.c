/*
 * test_threads: the two parallel constructs of threads.c with the back end
 * this build has (lca_thread_backend(): "openmp" with -fopenmp, else
 * "pthreads"; make test OPENMP=0 builds the other), docs/threads.md.
 *
 * - lca_parallel_team runs every member exactly once, at 1 … 5 threads,
 *   and members that each wait for all to have started run on as many
 *   distinct threads (so the core really runs more than one thread);
 * - a team or loop called from inside a team or loop runs all its members
 *   on the calling thread;
 * - two threads of the program calling lca_parallel_for at once each get
 *   every index once (one takes the pool, the other runs on its own);
 * - after fork(), the child's parallel calls run (it has no workers of the
 *   parent) and give the right answer (skipped with gcc's libgomp, which
 *   does not support that);
 * - the evaluator's loss and gradient (a chunked pass over the threads,
 *   for an MLP and for a conv net whose layers call lca_parallel_for) are
 *   the same bytes at 1, 2 and 3 threads;
 * - lca_threads() with 0 requested follows OMP_NUM_THREADS.
 */
#include "internal.h"
#include "support.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_MEMBERS = 8 };

typedef struct team_check {
    atomic_int runs[MAX_MEMBERS];
    pthread_t thread[MAX_MEMBERS];
    size_t members;                    /* wait for this many to start (0: none) */
    atomic_size_t started;
    atomic_int inner_parallel_threads; /* lca_parallel_threads() seen inside */
} team_check;

static void team_member(size_t member, void *context) {
    team_check *check = context;
    atomic_fetch_add(&check->runs[member], 1);
    check->thread[member] = pthread_self();
    atomic_store(&check->inner_parallel_threads, lca_parallel_threads());
    /* wait (at most 2 s) until every member has started: a thread that
     * waits here cannot take another member, so they run on distinct
     * threads */
    atomic_fetch_add(&check->started, 1);
    for (int wait = 0; wait < 20000 && atomic_load(&check->started) < check->members; wait++)
        usleep(100);
}

static void check_team(void) {
    for (size_t threads = 1; threads <= 5; threads++) {
        lca_set_threads((int)threads);
        team_check check;
        memset(&check, 0, sizeof check);
        check.members = threads;
        lca_parallel_team(threads, team_member, &check);
        bool once = true, distinct = true;
        for (size_t m = 0; m < MAX_MEMBERS; m++)
            once = once && atomic_load(&check.runs[m]) == (m < threads ? 1 : 0);
        for (size_t a = 0; a < threads; a++)
            for (size_t b = a + 1; b < threads; b++)
                distinct = distinct && !pthread_equal(check.thread[a], check.thread[b]);
        check_true(once, "team: every member exactly once", "%zu members", threads);
        check_true(distinct, "team: members that wait for each other run on distinct threads",
                   "%zu members, %zu started together", threads, atomic_load(&check.started));
        check_true(atomic_load(&check.inner_parallel_threads) == 1,
                   "team: inside a team, lca_parallel_threads() is 1", "saw %d",
                   atomic_load(&check.inner_parallel_threads));
    }
}

/* A team inside a loop and a loop inside a team: all members run, on the
 * thread of the outer member. */
typedef struct nested_check {
    atomic_int visits[4][64];
    atomic_int foreign; /* inner members that ran on another thread */
} nested_check;

typedef struct nested_inner {
    nested_check *check;
    size_t outer;
    pthread_t thread;
} nested_inner;

static void inner_member(size_t member, void *context) {
    nested_inner *inner = context;
    atomic_fetch_add(&inner->check->visits[inner->outer][member], 1);
    if (!pthread_equal(pthread_self(), inner->thread)) atomic_fetch_add(&inner->check->foreign, 1);
}

static void inner_index(size_t index, void *context) { inner_member(index, context); }

static void outer_team_member(size_t member, void *context) {
    nested_inner inner = {context, member, pthread_self()};
    lca_parallel_for(64, inner_index, &inner);
}

static void outer_loop_index(size_t index, void *context) {
    nested_inner inner = {context, index, pthread_self()};
    lca_parallel_team(3, inner_member, &inner);
}

static void check_nested(void) {
    lca_set_threads(3);
    nested_check *check = calloc(1, sizeof *check);
    lca_parallel_team(4, outer_team_member, check);
    bool once = true;
    for (size_t o = 0; o < 4; o++)
        for (size_t i = 0; i < 64; i++) once = once && atomic_load(&check->visits[o][i]) == 1;
    check_true(once && atomic_load(&check->foreign) == 0,
               "nested: a loop inside a team runs every index once, on the member's thread",
               "%d indices ran elsewhere", atomic_load(&check->foreign));
    memset(check, 0, sizeof *check);
    lca_parallel_for(4, outer_loop_index, check);
    once = true;
    for (size_t o = 0; o < 4; o++)
        for (size_t i = 0; i < 64; i++)
            once = once && atomic_load(&check->visits[o][i]) == (i < 3 ? 1 : 0);
    check_true(once && atomic_load(&check->foreign) == 0,
               "nested: a team inside a loop runs every member once, on the index's thread",
               "%d members ran elsewhere", atomic_load(&check->foreign));
    free(check);
}

/* Two threads of the program call lca_parallel_for at the same time. */
enum { LOOP_COUNT = 5000, LOOP_ROUNDS = 300 };

typedef struct caller_check {
    atomic_int visits[LOOP_COUNT];
} caller_check;

static void visit(size_t index, void *context) {
    atomic_fetch_add(&((caller_check *)context)->visits[index], 1);
}

static void *caller_main(void *context) {
    for (int round = 0; round < LOOP_ROUNDS; round++) lca_parallel_for(LOOP_COUNT, visit, context);
    return NULL;
}

static void check_concurrent_callers(void) {
    lca_set_threads(2);
    caller_check *checks = calloc(2, sizeof *checks);
    pthread_t other;
    if (pthread_create(&other, NULL, caller_main, &checks[1]) != 0) {
        test_fail("pthread_create failed");
        free(checks);
        return;
    }
    caller_main(&checks[0]);
    pthread_join(other, NULL);
    int wrong = 0;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < LOOP_COUNT; i++) wrong += atomic_load(&checks[c].visits[i]) != LOOP_ROUNDS;
    check_true(wrong == 0, "two callers at once: every index once per call",
               "%d calls of %d indices in each of 2 threads; %d indices miscounted", LOOP_ROUNDS,
               LOOP_COUNT, wrong);
    free(checks);
}

/* fork() after the pool has workers: the child's parallel calls run. */
static void check_fork(void) {
#if defined(_OPENMP) && defined(__GNUC__) && !defined(__clang__)
    /* gcc's OpenMP runtime (libgomp) keeps the parent's thread pool in a
     * forked child, whose parallel regions then hang: not a property of
     * the core, so not checked with it */
    printf("SKIP after fork(): libgomp (gcc's OpenMP) does not support OpenMP in a forked child\n");
    return;
#endif
    lca_set_threads(2);
    caller_check *check = calloc(1, sizeof *check);
    lca_parallel_for(LOOP_COUNT, visit, check); /* the parent's pool is started */
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        memset(check, 0, sizeof *check);
        alarm(20); /* a hang fails the check rather than the whole suite */
        lca_parallel_for(LOOP_COUNT, visit, check);
        team_check team;
        memset(&team, 0, sizeof team);
        lca_parallel_team(2, team_member, &team);
        int wrong = atomic_load(&team.runs[0]) != 1 || atomic_load(&team.runs[1]) != 1;
        for (int i = 0; i < LOOP_COUNT; i++) wrong += atomic_load(&check->visits[i]) != 1;
        _exit(wrong ? 1 : 0);
    }
    int status = 0;
    bool waited = child > 0 && waitpid(child, &status, 0) == child;
    check_true(waited && WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "after fork(): the child's loop and team run every index once",
               "child %s", !waited ? "not run" : WIFEXITED(status) ? "exited" : "killed (hang?)");
    free(check);
}

/* The evaluator's loss and gradient at 1, 2 and 3 threads: the same bytes. */
static void check_evaluator(const char *spec, const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 3);
    size_t k = lca_model_parameter_count(model);
    lca_config config = lca_config_default();
    config.eval_chunk = 100; /* 17+ chunks of the digits: several per thread */
    double loss[3], *gradient[3];
    for (int t = 0; t < 3; t++) {
        lca_set_threads(t + 1);
        lca_evaluator *evaluator;
        REQUIRE_OK(lca_evaluator_new(&evaluator, model, data, NULL, 0, &config));
        gradient[t] = calloc(k, sizeof(double));
        REQUIRE_OK(lca_evaluator_run(evaluator, lca_model_parameters(model), &loss[t], gradient[t]));
        lca_evaluator_free(evaluator);
    }
    for (int t = 1; t < 3; t++) {
        size_t differ = 0;
        for (size_t i = 0; i < k; i++)
            differ += memcmp(&gradient[0][i], &gradient[t][i], sizeof(double)) != 0;
        check_true(differ == 0 && memcmp(&loss[0], &loss[t], sizeof(double)) == 0,
                   "evaluator: loss and gradient bytes at 1 thread = at more",
                   "%s at %d threads: loss %.17g vs %.17g, %zu of %zu gradient entries differ", spec,
                   t + 1, loss[t], loss[0], differ, k);
    }
    for (int t = 0; t < 3; t++) free(gradient[t]);
    lca_model_free(model);
}

static void check_default_threads(void) {
    lca_set_threads(0);
    const char *saved = getenv("OMP_NUM_THREADS");
    char *copy = saved ? strdup(saved) : NULL;
    /* libomp reads OMP_NUM_THREADS once, at its start; the pthreads back
     * end reads it at each call. So only the value the process started
     * with is checked, when there is one. */
    if (copy) {
        int expected = atoi(copy);
        check_true(expected <= 0 || lca_threads() == expected,
                   "lca_threads() with 0 requested = OMP_NUM_THREADS", "OMP_NUM_THREADS=%s, %d",
                   copy, lca_threads());
    } else {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        check_true(lca_threads() >= 1 && lca_threads() <= online,
                   "lca_threads() with 0 requested = the CPUs available",
                   "%d threads, %ld CPUs online", lca_threads(), online);
    }
    free(copy);
}

int main(void) {
    test_begin("test_threads");
    printf("     thread back end: %s\n", lca_thread_backend());
    check_default_threads();
    check_team();
    check_nested();
    check_concurrent_callers();
    check_fork();
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    check_evaluator("64-32-10", data);
    check_evaluator("input(1,8,8) conv(6,3) bn relu maxpool(2) dense(10)", data);
    lca_dataset_free(data);
    lca_set_threads(0);
    return test_finish();
}
