/* ranks.c: data-parallel ranks over MPI (ranks.h, docs/mpi.md).
 *
 * One evaluation pass ends with lca_ranks_combine on every rank: two or
 * three collectives, none of them a floating-point reduction.
 *
 * 1. MPI_Allreduce(MAX) of four int64: −(the failure key), the largest
 *    |hi| limb of this rank's carried sum, and the pass's nanoseconds of
 *    wall and of CPU time. The
 *    failure key is failed_unit·R + rank (INT64_MAX: none), so its minimum
 *    names the lowest failed unit and the rank that holds its message,
 *    which MPI_Bcast sends to all (unit u is owned by rank u mod R, but a
 *    failure after the units, a merge out of range, is keyed by the rank).
 * 2. MPI_Allreduce(SUM, MPI_INT64_T) of the limbs and the loss's digits.
 *    After carrying, each rank's lo limbs are in [0, 2^52) and its hi limbs
 *    below 2^62 in magnitude; its loss digits in [0, 2^32) but the top one
 *    (small and signed). Integer addition is exact and order-free, so the
 *    sums are the bits one process makes from the same units, whatever the
 *    rank count and the reduction tree. Bounds for R ≤ LCA_MAX_RANKS = 2^10:
 *      lo:     R·2^52 ≤ 2^62                       < 2^63, no overflow
 *      digits: R·2^32 ≤ 2^42                       < 2^63
 *      hi:     R·max|hi| — below 2^62 when step 1's maximum says so (the
 *              usual case: gradients far inside the range), and then the
 *              limbs are summed as they are (16 bytes a parameter);
 *              otherwise each hi is split into top = hi >> 52 (|top| ≤
 *              2^10, R of them < 2^20) and mid = hi mod 2^52 (R of them
 *              < 2^62), summed apart (24 bytes a parameter) and joined in
 *              128 bits, where a total beyond the range is found exactly.
 * The collectives carry MPI_INT64_T only: no MPI_SUM on floats, whose
 * result would depend on the reduction tree. */
#include "ranks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LO_MASK ((INT64_C(1) << 52) - 1)

static double slowest_seconds; /* Σ over passes of the slowest rank's time */
static double own_seconds;     /* Σ over passes of this rank's time */
static double slowest_cpu;     /* Σ over passes of the largest CPU time of a rank */
static int split = 1;          /* lca_ranks_set_split */
static uint64_t passes;        /* evaluation passes combined so far */

uint64_t lca_rank_passes(void) { return passes; }

void lca_ranks_set_split(int on) { split = on != 0; }

double lca_rank_slowest_seconds(void) { return slowest_seconds; }
double lca_rank_own_seconds(void) { return own_seconds; }
double lca_rank_slowest_cpu_seconds(void) { return slowest_cpu; }

/* A pass with no other rank: its time is the slowest's, its failure (if any)
 * the message as it stands. */
static lca_status one_rank_combine(size_t failed_unit, lca_status status, const char *message,
                                   double seconds, double cpu) {
    own_seconds += seconds;
    slowest_seconds += seconds;
    slowest_cpu += cpu;
    passes++;
    if (failed_unit != SIZE_MAX) return lca_fail(status, "%s", message);
    return LCA_OK;
}

#ifdef LCA_MPI
#include <mpi.h>

/* MPI is in use once the caller initialised it, until it finalised it. */
static int active(void) {
    if (!split) return 0;
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) return 0;
    MPI_Finalized(&finalized);
    return !finalized;
}

int lca_ranks_rank(void) {
    int rank = 0;
    if (active()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

int lca_ranks_size(void) {
    int size = 1;
    if (active()) MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

const char *lca_rank_backend(void) { return "mpi"; }

/* In place over MPI_COMM_WORLD, in pieces whose count fits an int. */
static int sum_int64(int64_t *values, size_t count) {
    const size_t piece = (size_t)1 << 30;
    for (size_t done = 0; done < count; done += piece) {
        size_t n = count - done < piece ? count - done : piece;
        if (MPI_Allreduce(MPI_IN_PLACE, values + done, (int)n, MPI_INT64_T, MPI_SUM,
                          MPI_COMM_WORLD) != MPI_SUCCESS)
            return 0;
    }
    return 1;
}

int lca_rank_max(int value) {
    if (lca_ranks_size() <= 1) return value;
    int largest = value;
    if (MPI_Allreduce(MPI_IN_PLACE, &largest, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return value > 0 ? value : 1; /* cannot agree: non-zero, a stop */
    return largest;
}

static lca_status mpi_failed(const char *what) {
    return lca_fail(LCA_ERR_IO, "MPI: %s failed", what);
}

/* sum (carried on every rank) += the other ranks' sums, in place; largest:
 * the largest |hi| limb over the ranks' sums (an MPI_MAX made by the
 * caller), which decides, alike on every rank, whether the hi limbs are
 * summed as they are or in two parts. LCA_ERR_NUMERIC with *bad the first
 * element beyond the range; else *bad = sum->count. */
static lca_status sum_limbs(int size, lca_exact_vector *sum, int64_t largest, size_t *bad) {
    size_t k = sum->count;
    int wide = largest >= (INT64_C(1) << 62) / size;
    int64_t *top = NULL;
    if (wide) {
        /* every rank takes this branch (largest is the same everywhere) */
        top = malloc((k ? k : 1) * sizeof *top);
        int64_t ok = top != NULL;
        if (MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS) {
            free(top);
            return mpi_failed("MPI_Allreduce");
        }
        if (!ok) {
            free(top);
            return lca_fail(LCA_ERR_OUT_OF_MEMORY, "MPI: out of memory for the wide sum of "
                                                   "%zu parameters", k);
        }
        for (size_t i = 0; i < k; i++) {
            top[i] = sum->hi[i] >> 52; /* arithmetic: ⌊hi / 2^52⌋ */
            sum->hi[i] &= LO_MASK;
        }
        if (!sum_int64(top, k)) {
            free(top);
            return mpi_failed("MPI_Allreduce of the limbs");
        }
    }
    if (!sum_int64(sum->hi, k) || !sum_int64(sum->lo, k)) {
        free(top);
        return mpi_failed("MPI_Allreduce of the limbs");
    }
    *bad = k;
    if (wide) {
        for (size_t i = 0; i < k; i++) {
            __int128 h = (__int128)top[i] * ((__int128)1 << 52) + sum->hi[i];
            if (!(h > -((__int128)1 << 62) && h < ((__int128)1 << 62))) {
                if (*bad == k) *bad = i;
                h = 0;
            }
            sum->hi[i] = (int64_t)h;
        }
        free(top);
    }
    sum->pending = 0; /* lo < 2^62: the next carry (lca_exact_read's) is in time */
    return *bad == k ? LCA_OK : LCA_ERR_NUMERIC;
}

/* The largest |hi| limb of a carried sum (|hi| < 2^62). */
static int64_t largest_limb(const lca_exact_vector *sum) {
    int64_t largest = 0;
    for (size_t i = 0; i < sum->count; i++) {
        int64_t h = sum->hi[i] < 0 ? -sum->hi[i] : sum->hi[i];
        if (h > largest) largest = h;
    }
    return largest;
}

static lca_status combine(int size, int rank, size_t failed_unit, lca_status status,
                          const char *message, lca_exact_vector *sum, lca_exact_scalar *loss,
                          double seconds, double cpu, size_t *bad) {
    if (size > LCA_MAX_RANKS)
        return lca_fail(LCA_ERR_UNSUPPORTED, "%d MPI ranks: at most %d are supported (the exact "
                        "sums' carry bounds, docs/mpi.md)", size, LCA_MAX_RANKS);
    /* −key, so that MPI_MAX finds the lowest key; none: the lowest value */
    int64_t local[4] = {INT64_MIN, 0, (int64_t)(seconds * 1e9), (int64_t)(cpu * 1e9)};
    if (failed_unit != SIZE_MAX) local[0] = -((int64_t)failed_unit * size + rank);
    if (sum && failed_unit == SIZE_MAX) local[1] = largest_limb(sum); /* carried */
    if (MPI_Allreduce(MPI_IN_PLACE, local, 4, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return mpi_failed("MPI_Allreduce of the pass's state");
    slowest_seconds += (double)local[2] * 1e-9;
    slowest_cpu += (double)local[3] * 1e-9;
    own_seconds += seconds;
    passes++;
    if (local[0] != INT64_MIN) {
        int64_t key = -local[0];
        int root = (int)(key % size);
        struct {
            int status;
            char message[2048];
        } failure = {0};
        if (rank == root) {
            failure.status = (int)status;
            snprintf(failure.message, sizeof failure.message, "%s", message);
        }
        if (MPI_Bcast(&failure, (int)sizeof failure, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
            return mpi_failed("MPI_Bcast of a failure");
        return lca_fail((lca_status)failure.status, "%s", failure.message);
    }
    lca_exact_scalar_merge(loss, &(lca_exact_scalar){0}); /* carried */
    if (sum) {
        lca_status summed = sum_limbs(size, sum, local[1], bad);
        if (summed != LCA_OK) return summed;
    }
    if (!sum_int64(loss->digit, LCA_EXACT_SCALAR_DIGITS))
        return mpi_failed("MPI_Allreduce of the loss");
    return LCA_OK;
}

lca_status lca_ranks_combine(size_t failed_unit, lca_status status, const char *message,
                             lca_exact_vector *sum, lca_exact_scalar *loss, double seconds,
                             double cpu, size_t *bad) {
    if (sum) *bad = sum->count;
    int size = lca_ranks_size();
    if (size <= 1) return one_rank_combine(failed_unit, status, message, seconds, cpu);
    return combine(size, lca_ranks_rank(), failed_unit, status, message, sum, loss, seconds, cpu,
                   bad);
}

lca_status lca_ranks_sum_groups(lca_exact_vector *sums, lca_exact_scalar *losses, size_t count,
                                size_t *which, size_t *bad) {
    size_t k = sums && count ? sums[0].count : 0;
    *which = count;
    *bad = k;
    int size = lca_ranks_size();
    if (size <= 1 || count == 0) return LCA_OK;
    /* −(the first element out of range, j·K + i), so that MPI_MAX finds the
     * lowest; none: the lowest value. Then the largest |hi| of them all. */
    int64_t local[2] = {INT64_MIN, 0};
    for (size_t j = 0; sums && j < count; j++) {
        size_t b = lca_exact_carry(&sums[j]);
        if (b != k && local[0] == INT64_MIN) local[0] = -(int64_t)(j * k + b);
        int64_t largest = largest_limb(&sums[j]);
        if (largest > local[1]) local[1] = largest;
    }
    if (MPI_Allreduce(MPI_IN_PLACE, local, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return mpi_failed("MPI_Allreduce of the groups' state");
    if (local[0] != INT64_MIN) {
        *which = (size_t)(-local[0]) / k;
        *bad = (size_t)(-local[0]) % k;
        return LCA_ERR_NUMERIC;
    }
    for (size_t j = 0; sums && j < count; j++) {
        lca_status summed = sum_limbs(size, &sums[j], local[1], bad);
        if (summed == LCA_ERR_NUMERIC) *which = j;
        if (summed != LCA_OK) return summed;
    }
    for (size_t j = 0; j < count; j++) {
        lca_exact_scalar_merge(&losses[j], &(lca_exact_scalar){0}); /* carried */
        if (!sum_int64(losses[j].digit, LCA_EXACT_SCALAR_DIGITS))
            return mpi_failed("MPI_Allreduce of a group's loss");
    }
    return LCA_OK;
}

#else /* one rank */

int lca_ranks_rank(void) { return 0; }
int lca_ranks_size(void) { return 1; }
const char *lca_rank_backend(void) { return "none"; }
int lca_rank_max(int value) { return value; }

lca_status lca_ranks_combine(size_t failed_unit, lca_status status, const char *message,
                             lca_exact_vector *sum, lca_exact_scalar *loss, double seconds,
                             double cpu, size_t *bad) {
    (void)loss;
    if (sum) *bad = sum->count;
    return one_rank_combine(failed_unit, status, message, seconds, cpu);
}

lca_status lca_ranks_sum_groups(lca_exact_vector *sums, lca_exact_scalar *losses, size_t count,
                                size_t *which, size_t *bad) {
    (void)losses;
    *which = count;
    *bad = sums && count ? sums[0].count : 0;
    return LCA_OK;
}

#endif

int lca_rank(void) { return lca_ranks_rank(); }
int lca_rank_count(void) { return lca_ranks_size(); }
