/* ranks.h: data-parallel ranks over MPI (ranks.c, docs/mpi.md). Not part
 * of the public API (lca.h has lca_rank, lca_rank_count and
 * lca_rank_slowest_seconds).
 *
 * Built with LCA_MPI (SwiftPM trait MPI, make MPI=1) the core splits every
 * evaluation pass over the ranks of MPI_COMM_WORLD once the caller has
 * called MPI_Init (the library never initialises or finalises MPI, nor
 * calls MPI_Abort); built without it, or before MPI_Init, there is one rank
 * and these calls cost nothing.
 *
 * Ownership: accumulation unit u of a pass belongs to rank u mod R. The
 * units are the integrator's fixed ones (integrator.c), so which rank takes
 * a unit changes nothing but the time: every rank's exact sums are merged
 * by integer addition (lca_ranks_combine). Round robin rather than
 * contiguous blocks because the last unit of a view may be short and a
 * batch-norm view may have few units: round robin spreads both evenly
 * (the busiest rank holds ⌈U/R⌉ units either way, but a block split would
 * also give one rank the short tail). */
#ifndef LCA_RANKS_H
#define LCA_RANKS_H

#include "exact_sum.h"
#include "internal.h"

#include <stddef.h>

/* At most this many ranks: the carried lo limbs (< 2^52 each) of 2^10
 * ranks add to less than 2^62, and the top digits of the split hi limbs
 * (|hi >> 52| ≤ 2^10 for |hi| < 2^62) to less than 2^20 (ranks.c). */
#define LCA_MAX_RANKS 1024

/* This process's rank (0 … size − 1) and the number of ranks. */
int lca_ranks_rank(void);
int lca_ranks_size(void);

/* 0: this process is one rank of its own from now on (its passes are not
 * split, nor combined), 1 (the default): the ranks of MPI_COMM_WORLD. For
 * tests, which compare the two within one job. */
void lca_ranks_set_split(int on);

/* The end of one evaluation pass on every rank, a collective: every rank
 * calls it once per pass, in the same order, whatever happened locally.
 *
 * failed_unit: this rank's first failed unit (SIZE_MAX: none), with its
 * status and message; a local failure after the units (a merge out of
 * range) is given as unit `units`. sum (NULL for a loss-only pass) and loss
 * are this rank's merged exact sums, carried (lca_exact_carry); seconds the
 * time its units took, cpu the process's CPU time meanwhile.
 *
 * On every rank, the same result: when any rank failed, the status and
 * message of the lowest failed unit (the lowest rank's for a tie), set as
 * lca_last_error; else LCA_OK with sum and loss replaced by the sums over
 * all ranks, bit for bit those one process would have made. A total that
 * leaves the exact range (found only when the ranks' hi limbs are so large
 * that they are summed in three parts, ranks.c) returns LCA_ERR_NUMERIC
 * with *bad the first such element for the caller to name; otherwise *bad
 * = sum->count. */
lca_status lca_ranks_combine(size_t failed_unit, lca_status status, const char *message,
                             lca_exact_vector *sum, lca_exact_scalar *loss, double seconds,
                             double cpu, size_t *bad);

/* The loss groups' exact sums of the pass (count gradient sums, NULL for a
 * loss-only pass, and count losses: integrator.c's per-group sums), summed
 * over the ranks as lca_ranks_combine sums the total's: a collective that
 * every rank calls after a combine that returned LCA_OK. LCA_OK with the
 * sums replaced by those over all ranks; LCA_ERR_NUMERIC, alike on every
 * rank, with *which the group and *bad the element whose sum left the exact
 * range; else *which = count, *bad = K. Nothing to do on one rank. */
lca_status lca_ranks_sum_groups(lca_exact_vector *sums, lca_exact_scalar *losses, size_t count,
                                size_t *which, size_t *bad);

#endif
