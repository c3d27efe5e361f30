/*
 * test_ranks: the rank layer (ranks.c, docs/mpi.md).
 *
 * In every build: one process is rank 0 of 1 (without MPI, or built with
 * it but not started by mpirun), lca_rank_max is its value, and a pass's
 * failure comes back with its own message.
 *
 * Built with make MPI=1 and started by mpirun (tools/mpi-test runs it at
 * 2, 3 and 4 ranks), this driver calls MPI_Init itself (the library never
 * does) and checks, on every rank:
 *   - the evaluator's loss and gradient split over the ranks have the bytes
 *     of the same pass unsplit (lca_ranks_set_split(0)), for an MLP on the
 *     digits (4 units) and a batch-norm conv net (groups of 30: 10 units),
 *     at 1 and 2 threads a rank;
 *   - lca_ranks_combine: the lowest failed unit's message reaches every
 *     rank, whichever rank holds it; sums whose hi limbs are so large that
 *     they cannot be added as they are (the three-part path) still add up
 *     exactly, and a total beyond the range is found at its element;
 *   - lca_ranks_sum_groups: the loss groups' sums and losses add up
 *     exactly (the two-part path included), and a group sum out of range on
 *     one rank is named, group and element, on every rank;
 *   - lca_rank_max gives every rank the largest value.
 */
#include "exact_sum.h"
#include "ranks.h"
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LCA_MPI
#include <mpi.h>
#endif

static void evaluate(lca_model *model, const lca_dataset *data, const lca_config *config,
                     int threads, double *loss, double *gradient) {
    lca_set_threads(threads);
    lca_evaluator *e;
    REQUIRE_OK(lca_evaluator_new(&e, model, data, NULL, 0, config));
    REQUIRE_OK(lca_evaluator_run(e, lca_model_parameters_const(model), loss, gradient));
    lca_evaluator_free(e);
}

static void same_as_unsplit(const char *spec, size_t bn_group, const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 5);
    size_t k = lca_model_parameter_count(model);
    lca_config config = lca_config_default();
    config.bn_group = bn_group;
    double *reference = malloc(k * sizeof(double)), *split = malloc(k * sizeof(double));
    double reference_loss, split_loss;
    lca_ranks_set_split(0);
    evaluate(model, data, &config, 1, &reference_loss, reference);
    lca_ranks_set_split(1);
    for (int threads = 1; threads <= 2; threads++) {
        evaluate(model, data, &config, threads, &split_loss, split);
        char what[160];
        snprintf(what, sizeof what, "%s at %d ranks × %d threads: the bytes of one process", spec,
                 lca_rank_count(), threads);
        check_true(memcmp(reference, split, k * sizeof(double)) == 0 &&
                       memcmp(&reference_loss, &split_loss, sizeof(double)) == 0,
                   what, "loss %.17g vs %.17g", split_loss, reference_loss);
    }
    free(reference);
    free(split);
    lca_model_free(model);
}

/* Rank r adds hi = +B (r even) or −B + 1 (r odd), B = 2^61, to element 0
 * (the opposite to element 1) and lo = r: limbs too large to be summed as
 * they are at R ≥ 2 ranks (R·2^61 ≥ 2^62), a total well inside the range:
 * hi (R mod 2)·B + ⌊R/2⌋, lo R(R−1)/2. */
static void wide_sums(void) {
    int ranks = lca_rank_count(), rank = lca_rank();
    lca_exact_vector v;
    if (!lca_exact_vector_init(&v, 3)) {
        test_fail("out of memory");
        return;
    }
    const int64_t B = INT64_C(1) << 61;
    v.hi[0] = rank % 2 == 0 ? B : -B + 1;
    v.hi[1] = -v.hi[0];
    v.hi[2] = rank == 0 ? 3 : 0;
    for (int i = 0; i < 3; i++) v.lo[i] = rank;
    lca_exact_scalar loss;
    lca_exact_scalar_clear(&loss);
    lca_exact_scalar_add(&loss, 0.25 * (rank + 1));
    size_t bad = 0;
    lca_status status = lca_ranks_combine(SIZE_MAX, LCA_OK, "", &v, &loss, 0.0, 0.0, &bad);
    int64_t hi = (ranks % 2) * B + ranks / 2, lo = (int64_t)ranks * (ranks - 1) / 2;
    check_true(status == LCA_OK && bad == 3 && v.hi[0] == hi && v.hi[1] == -hi && v.hi[2] == 3 &&
                   v.lo[0] == lo && v.lo[2] == lo,
               "hi limbs of ±2^61 on every rank add up exactly (the three-part path)",
               "status %d, hi %lld %lld %lld, lo %lld", (int)status, (long long)v.hi[0],
               (long long)v.hi[1], (long long)v.hi[2], (long long)v.lo[0]);
    double expected = 0.25 * ranks * (ranks + 1) / 2;
    check_true(lca_exact_scalar_value(&loss) == expected, "the loss's digits add up",
               "%.17g vs %.17g", lca_exact_scalar_value(&loss), expected);
    if (ranks > 1) {
        /* every rank just inside the range, the total far beyond it */
        lca_exact_clear(&v);
        v.hi[1] = (INT64_C(1) << 62) - 1;
        lca_exact_scalar_clear(&loss);
        status = lca_ranks_combine(SIZE_MAX, LCA_OK, "", &v, &loss, 0.0, 0.0, &bad);
        check_true(status == LCA_ERR_NUMERIC && bad == 1, "a total beyond the range is found",
                   "status %d, element %zu", (int)status, bad);
    }
    lca_exact_vector_release(&v);
}

/* lca_ranks_sum_groups: two groups of 3 elements; rank r adds r + 1 to
 * group 0's element 0 (lo), −(r + 1)·2^60 to group 1's element 2 (hi: the
 * two-part path from 3 ranks on) and 0.5·(r + 1) to each group's loss. Then
 * group 1's element 1 beyond the range on the last rank alone: every rank
 * gets LCA_ERR_NUMERIC naming group 1, element 1. */
static void group_sums(void) {
    int ranks = lca_rank_count(), rank = lca_rank();
    lca_exact_vector v[2];
    lca_exact_scalar loss[2];
    if (!lca_exact_vector_init(&v[0], 3) || !lca_exact_vector_init(&v[1], 3)) {
        test_fail("out of memory");
        return;
    }
    for (int j = 0; j < 2; j++) {
        lca_exact_scalar_clear(&loss[j]);
        lca_exact_scalar_add(&loss[j], 0.5 * (rank + 1));
    }
    v[0].lo[0] = rank + 1;
    v[1].hi[2] = -(int64_t)(rank + 1) * (INT64_C(1) << 60);
    size_t which = 9, bad = 9;
    lca_status status = lca_ranks_sum_groups(v, loss, 2, &which, &bad);
    int64_t n = (int64_t)ranks * (ranks + 1) / 2;
    int wide_ok = ranks * (ranks + 1) / 2 < 4; /* |Σ hi| < 2^62 */
    check_true(status == (wide_ok ? LCA_OK : LCA_ERR_NUMERIC), "the groups' sums over the ranks",
               "status %d", (int)status);
    if (wide_ok)
        check_true(which == 2 && bad == 3 && v[0].lo[0] == n && v[1].hi[2] == -n * (INT64_C(1) << 60) &&
                       lca_exact_scalar_value(&loss[0]) == 0.5 * (double)n &&
                       lca_exact_scalar_value(&loss[1]) == 0.5 * (double)n,
                   "group sums and losses add up exactly", "lo %lld, hi %lld, loss %.17g",
                   (long long)v[0].lo[0], (long long)v[1].hi[2], lca_exact_scalar_value(&loss[1]));
    else
        check_true(which == 1 && bad == 2, "a group total beyond the range is named on every rank",
                   "group %zu, element %zu", which, bad);
    /* the last rank's own sum out of range: every rank hears of it */
    for (int j = 0; j < 2; j++) lca_exact_clear(&v[j]);
    if (rank == ranks - 1) { /* its carry leaves the range */
        v[1].hi[1] = (INT64_C(1) << 62) - 1;
        v[1].lo[1] = INT64_MAX;
    }
    status = lca_ranks_sum_groups(v, loss, 2, &which, &bad);
    if (ranks > 1)
        check_true(status == LCA_ERR_NUMERIC && which == 1 && bad == 1,
                   "one rank's group sum out of range: every rank names group 1, element 1",
                   "status %d, group %zu, element %zu", (int)status, which, bad);
    else
        check_true(status == LCA_OK && which == 2 && bad == 3, "one rank: nothing to sum",
                   "status %d", (int)status);
    lca_exact_vector_release(&v[0]);
    lca_exact_vector_release(&v[1]);
}

/* Ranks 1 and 2 fail (units 7 and 5), rank 0 does not: every rank gets
 * rank 2's message (unit 5, the lowest). With 2 ranks only rank 1 fails. */
static void failures(void) {
    int ranks = lca_rank_count(), rank = lca_rank();
    size_t unit = rank == 1 ? 7 : rank == 2 ? 5 : SIZE_MAX;
    char message[64];
    snprintf(message, sizeof message, "unit %zu failed on rank %d", unit, rank);
    lca_exact_scalar loss;
    lca_exact_scalar_clear(&loss);
    size_t bad = 0;
    lca_status status = lca_ranks_combine(ranks == 1 ? SIZE_MAX : unit,
                                          rank == 2 ? LCA_ERR_NUMERIC : LCA_ERR_FORMAT, message,
                                          NULL, &loss, 0.0, 0.0, &bad);
    if (ranks == 1) {
        check_true(status == LCA_OK, "one rank, no failure: ok", "status %d", (int)status);
        status = lca_ranks_combine(3, LCA_ERR_NUMERIC, "unit 3 failed", NULL, &loss, 0.0, 0.0, &bad);
        check_true(status == LCA_ERR_NUMERIC && strcmp(lca_last_error(), "unit 3 failed") == 0,
                   "one rank: its failure, with its message", "%d: %s", (int)status,
                   lca_last_error());
        return;
    }
    const char *expected = ranks == 2 ? "unit 7 failed on rank 1" : "unit 5 failed on rank 2";
    lca_status expected_status = ranks == 2 ? LCA_ERR_FORMAT : LCA_ERR_NUMERIC;
    check_true(status == expected_status && strcmp(lca_last_error(), expected) == 0,
               "the lowest failed unit's status and message on every rank", "%d: %s", (int)status,
               lca_last_error());
}

int main(void) {
    int launched = 0;
#ifdef LCA_MPI
    launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
    if (launched && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, "MPI_Init failed\n");
        return 1;
    }
#endif
    test_begin("ranks");
    printf("rank %d of %d (backend %s)\n", lca_rank(), lca_rank_count(), lca_rank_backend());
    if (!launched)
        check_true(lca_rank() == 0 && lca_rank_count() == 1, "one process: rank 0 of 1", "%d of %d",
                   lca_rank(), lca_rank_count());
    check_true(lca_rank_max(lca_rank() == lca_rank_count() - 1 ? 15 : 0) == 15,
               "lca_rank_max: the last rank's value seen by all", "");
    check_true(lca_rank_max(0) == 0, "lca_rank_max: zero everywhere", "");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    same_as_unsplit("64-32-10", 250, data);
    /* 1,797 examples in groups of 180: 10 units of a batch-norm net */
    same_as_unsplit("input(1,8,8) conv(4,3) bn relu maxpool(2) dense(10)", 180, data);
    lca_dataset_free(data);
    wide_sums();
    group_sums();
    failures();
    int status = test_finish();
#ifdef LCA_MPI
    if (launched) {
        /* a failed check on any rank fails every rank's exit status */
        int any = lca_rank_max(status != 0);
        MPI_Finalize();
        return any;
    }
#endif
    return status;
}
