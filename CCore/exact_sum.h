/* exact_sum.h: order-independent sums (exact_sum.c), the evaluation-set
 * gradient's and loss's accumulators (integrator.c). Not part of the public
 * API.
 *
 * A vector sum holds, per element, the sum of float32 terms in integer
 * fixed point, two int64 limbs: value = hi·2^-20 + lo·2^-72. Each term x is
 * taken as t = x·2^20 (exact in float64), h = the integer nearest t, r = the
 * integer nearest (t − h)·2^52; hi += h, lo += r. A term is thus rounded once
 * to a multiple of 2^-72 (an error of at most 2^-73, a function of the term
 * alone) and then added exactly: the sum does not depend on the order of the
 * terms nor on how they are split between accumulators that are merged
 * (lca_exact_merge), so threads, and data-parallel ranks by an integer
 * allreduce of the limbs, may take the terms in any order.
 *
 * Range: a term must have |x| < 2^24 (and be finite); a sum must stay below
 * 2^42 in magnitude. Beyond either the evaluation has diverged: the calls
 * return the first element at fault and the caller names it.
 *
 * A scalar sum (lca_exact_scalar) is the same idea for float64 terms over
 * the whole float64 range: 2^-1074 … 2^1024 in 32-bit digits, each term added
 * exactly; the sum is rounded once (to nearest) when read. */
#ifndef LCA_EXACT_SUM_H
#define LCA_EXACT_SUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fixed point of a vector sum: hi counts 2^-20, lo counts 2^-72. */
#define LCA_EXACT_HI_BITS 20
#define LCA_EXACT_LO_BITS 72
/* A term's magnitude must stay below 2^24 (log2 of the bound). */
#define LCA_EXACT_TERM_LIMIT 0x1p24
/* A sum's magnitude must stay below 2^42. */
#define LCA_EXACT_SUM_LIMIT 0x1p42

/* count elements: hi[count], lo[count], zeroed by lca_exact_clear.
 * pending counts the additions since lo was last carried into hi (at most
 * LCA_EXACT_CARRY_EVERY: |lo| then stays below 2^63). */
typedef struct lca_exact_vector {
    size_t count;
    int64_t *hi, *lo;
    unsigned pending;
} lca_exact_vector;

/* Additions between carries of lo into hi (each adds |r| ≤ 2^51 to lo). */
#define LCA_EXACT_CARRY_EVERY 2048u

/* Allocate (64-byte aligned) and zero; false when out of memory. */
bool lca_exact_vector_init(lca_exact_vector *v, size_t count);
void lca_exact_vector_release(lca_exact_vector *v);
void lca_exact_clear(lca_exact_vector *v);
/* v += x[0 … count). Returns count when every term was in range, else the
 * index of the first term that was not (|x| ≥ 2^24 or not finite; the sum
 * is then unspecified), or, after a carry, of the first element whose sum
 * left the range. */
size_t lca_exact_add(lca_exact_vector *v, const float *x);
/* into += from (element by element, exactly); from is left carried. Returns
 * count, or the first element whose sum left the range. */
size_t lca_exact_merge(lca_exact_vector *into, lca_exact_vector *from);
/* out[i] = the sum of element i rounded once to float64 (nearest, ties to
 * even); with add, out[i] += that instead. Carries v first; returns count,
 * or (out untouched) the first element whose sum left the range. */
size_t lca_exact_read(lca_exact_vector *v, double *out, bool add);
/* The element's sum rounded once to float64 (carries nothing). */
double lca_exact_value(int64_t hi, int64_t lo);

/* ---- scalar sums of float64 terms */

#define LCA_EXACT_SCALAR_DIGITS 67 /* 32-bit digits from 2^-1074 past 2^1024 */

typedef struct lca_exact_scalar {
    int64_t digit[LCA_EXACT_SCALAR_DIGITS]; /* digit d counts 2^(32·d − 1074) */
    unsigned pending;                       /* additions since the last carry */
} lca_exact_scalar;

void lca_exact_scalar_clear(lca_exact_scalar *s);
/* s += x exactly; false (s unchanged) when x is not finite. */
bool lca_exact_scalar_add(lca_exact_scalar *s, double x);
void lca_exact_scalar_merge(lca_exact_scalar *into, const lca_exact_scalar *from);
/* The sum rounded once to float64 (nearest, ties to even; ±inf beyond). */
double lca_exact_scalar_value(const lca_exact_scalar *s);

#endif
