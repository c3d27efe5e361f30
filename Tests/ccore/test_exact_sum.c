/*
 * test_exact_sum: the order-independent accumulators of exact_sum.h.
 *
 *  - vector sums: float32 terms of every magnitude the range allows (signs
 *    mixed, subnormals included) added in order, in a random order, and
 *    spread at random over three accumulators then merged, give the same
 *    float64 bytes; the integer each holds equals an __int128 reference
 *    (every term rounded to a multiple of 2^-72 by its own rule, then added
 *    exactly), and lca_exact_value is that integer rounded once to nearest;
 *  - range: a term of 2^24, +inf or NaN is reported at its index; a sum that
 *    grows past 2^42 is reported at a carry; a merge past the range too;
 *  - scalar sums of float64: random orders and splits give the same bytes,
 *    an __int128 reference on a narrower range agrees exactly, and the
 *    textbook cancellations (1e300 + 1 − 1e300) come out exact.
 */
#include "support.h"

#include "exact_sum.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ELEMENTS 61
#define TERMS 5000 /* per element: more than LCA_EXACT_CARRY_EVERY, so carries happen */

/* A float32 of random sign and magnitude 2^-149 … 2^24 (exclusive). */
static float random_term(test_rng *rng) {
    double u = test_rng_uniform(rng);
    int e = (int)(u * 174.0) - 150; /* −150 … 23 */
    float x = (float)ldexp(0.5 + 0.5 * test_rng_uniform(rng), e + 1);
    if (!(fabsf(x) < 0x1p24f)) x = 0x1.fffffep23f;
    if (test_rng_below(rng, 16) == 0) x = (float)ldexp(1.0, -149 + (int)test_rng_below(rng, 20));
    return test_rng_below(rng, 2) ? -x : x;
}

/* x·2^72 rounded to the nearest integer, ties to even (the accumulator's rule:
 * to nearest at 2^-20, then the remainder to nearest at 2^-72). */
static __int128 reference_term(float x) {
    int e;
    float f = frexpf(fabsf(x), &e);
    if (f == 0.0f) return 0;
    int64_t m = (int64_t)ldexpf(f, 24); /* |x| = m·2^(e − 24) */
    int shift = e - 24 + 72;
    __int128 v;
    if (shift >= 0) {
        v = (__int128)m << shift;
    } else {
        int s = -shift;
        if (s >= 63) v = 0; /* below 2^-73: rounds to 0 */
        else {
            int64_t q = m >> s, rest = m & ((INT64_C(1) << s) - 1), half = INT64_C(1) << (s - 1);
            if (rest > half || (rest == half && (q & 1))) q++;
            v = q;
        }
    }
    return x < 0 ? -v : v;
}

static void test_vector_orders(void) {
    test_rng rng;
    test_rng_seed(&rng, 13);
    float *terms = test_alloc((size_t)TERMS * ELEMENTS * sizeof(float)); /* term t of element i */
    for (size_t j = 0; j < (size_t)TERMS * ELEMENTS; j++) terms[j] = random_term(&rng);
    /* one element whose terms cancel to a small sum and one that stays large */
    for (size_t t = 0; t < TERMS; t++) {
        terms[t * ELEMENTS + 0] = (t % 2 ? -1.0f : 1.0f) * 0x1.234p20f + (float)t * 0x1p-30f;
        terms[t * ELEMENTS + 1] = 0x1.fffffep23f;
    }
    size_t *order = test_alloc(TERMS * sizeof(size_t));
    for (size_t t = 0; t < TERMS; t++) order[t] = t;
    for (size_t t = TERMS - 1; t > 0; t--) {
        size_t j = (size_t)test_rng_below(&rng, t + 1), swap = order[t];
        order[t] = order[j];
        order[j] = swap;
    }
    lca_exact_vector in_order, shuffled, parts[3];
    check_true(lca_exact_vector_init(&in_order, ELEMENTS) && lca_exact_vector_init(&shuffled, ELEMENTS) &&
                   lca_exact_vector_init(&parts[0], ELEMENTS) &&
                   lca_exact_vector_init(&parts[1], ELEMENTS) &&
                   lca_exact_vector_init(&parts[2], ELEMENTS),
               "vector sums allocate", "%d elements", ELEMENTS);
    size_t bad = 0;
    for (size_t t = 0; t < TERMS; t++) {
        bad += lca_exact_add(&in_order, terms + t * ELEMENTS) != ELEMENTS;
        bad += lca_exact_add(&shuffled, terms + order[t] * ELEMENTS) != ELEMENTS;
        bad += lca_exact_add(&parts[test_rng_below(&rng, 3)], terms + order[t] * ELEMENTS) != ELEMENTS;
    }
    check_true(bad == 0, "vector sums: every term in range is accepted", "%zu refused", bad);
    check_true(lca_exact_merge(&parts[0], &parts[2]) == ELEMENTS &&
                   lca_exact_merge(&parts[0], &parts[1]) == ELEMENTS,
               "vector sums: merges stay in range", "a merge reported an element");
    double a[ELEMENTS], b[ELEMENTS], c[ELEMENTS];
    lca_exact_read(&in_order, a, false);
    lca_exact_read(&shuffled, b, false);
    lca_exact_read(&parts[0], c, false);
    check_true(memcmp(a, b, sizeof a) == 0 && memcmp(a, c, sizeof a) == 0,
               "vector sums: in order, shuffled, and split over 3 merged accumulators: same bytes",
               "%d elements × %d terms", ELEMENTS, TERMS);

    /* the integers against the reference, and the rounding to float64 */
    size_t integer_mismatch = 0, rounding_mismatch = 0;
    double worst_relative = 0.0;
    for (size_t i = 0; i < ELEMENTS; i++) {
        __int128 reference = 0;
        long double naive = 0.0L;
        for (size_t t = 0; t < TERMS; t++) {
            reference += reference_term(terms[t * ELEMENTS + i]);
            naive += (long double)terms[t * ELEMENTS + i];
        }
        __int128 held = (__int128)in_order.hi[i] * ((__int128)1 << 52) + in_order.lo[i];
        if (held != reference) integer_mismatch++;
        double d = a[i];
        __int128 magnitude = reference < 0 ? -reference : reference;
        if (magnitude < ((__int128)1 << 53)) {
            if ((__int128)(d * 0x1p72) != reference) rounding_mismatch++;
        } else {
            /* d·2^72 is an integer here; no neighbour may be nearer */
            __int128 at = (__int128)(d * 0x1p72);
            __int128 up = (__int128)(nextafter(d, INFINITY) * 0x1p72);
            __int128 down = (__int128)(nextafter(d, -INFINITY) * 0x1p72);
            __int128 e0 = at - reference, e1 = up - reference, e2 = down - reference;
            if (e0 < 0) e0 = -e0;
            if (e1 < 0) e1 = -e1;
            if (e2 < 0) e2 = -e2;
            if (e1 < e0 || e2 < e0) rounding_mismatch++;
        }
        if (naive != 0.0L) {
            double relative = (double)fabsl(((long double)d - naive) / naive);
            if (relative > worst_relative) worst_relative = relative;
        }
    }
    check_true(integer_mismatch == 0, "vector sums: the fixed point equals the __int128 reference",
               "%zu of %d elements differ", integer_mismatch, ELEMENTS);
    check_true(rounding_mismatch == 0, "vector sums: read rounds the fixed point once to nearest",
               "%zu of %d elements not nearest", rounding_mismatch, ELEMENTS);
    /* the long double sum has its own rounding; this only says the two agree */
    check_le("vector sums: relative difference from a long double sum (elements ≠ 0)",
             worst_relative, 1e-15);
    lca_exact_vector_release(&in_order);
    lca_exact_vector_release(&shuffled);
    for (int p = 0; p < 3; p++) lca_exact_vector_release(&parts[p]);
    free(order);
    free(terms);
}

static void test_vector_range(void) {
    lca_exact_vector v;
    check_true(lca_exact_vector_init(&v, 5), "range: a vector allocates", "5 elements");
    float ok[5] = {0x1.fffffep23f, -0x1.fffffep23f, 0x1p-149f, -0.0f, 1.0f};
    check_true(lca_exact_add(&v, ok) == 5, "range: terms up to 2^24 − 1 ulp are accepted",
               "the largest float below 2^24, its negative, the smallest subnormal, −0, 1");
    float bad[3][5] = {{1, 2, 0x1p24f, 4, 5}, {1, INFINITY, 3, 4, 5}, {1, 2, 3, 4, NAN}};
    size_t expected[3] = {2, 1, 4};
    for (int c = 0; c < 3; c++) {
        lca_exact_clear(&v);
        size_t at = lca_exact_add(&v, bad[c]);
        check_true(at == expected[c], "range: a term of 2^24, +inf or NaN is reported at its index",
                   "case %d: reported %zu, expected %zu", c, at, expected[c]);
    }
    lca_exact_vector_release(&v);

    /* a sum past 2^42: one element adding 2^24 − 1 ulp until a carry reports it */
    lca_exact_vector one;
    check_true(lca_exact_vector_init(&one, 1), "range: a one-element vector allocates", "");
    float big = 0x1.fffffep23f;
    size_t adds = 0, at = 1;
    while (at == 1 && adds < (1u << 20)) {
        at = lca_exact_add(&one, &big);
        adds++;
    }
    double reached = adds * (double)big;
    check_true(at == 0 && reached >= LCA_EXACT_SUM_LIMIT && reached < 0x1p43,
               "range: a sum past 2^42 is reported at the carry after it",
               "reported element %zu after %zu additions (sum ≈ 2^%.3f)", at, adds, log2(reached));
    /* a merge past the range: two sums just below 2^42 each */
    lca_exact_vector x, y;
    lca_exact_vector_init(&x, 1);
    lca_exact_vector_init(&y, 1);
    for (size_t i = 0; i < (size_t)(0x1p41 / big); i++) {
        lca_exact_add(&x, &big);
        lca_exact_add(&y, &big);
    }
    size_t before = lca_exact_merge(&x, &one); /* one is far over: error */
    lca_exact_clear(&one);
    lca_exact_vector z;
    lca_exact_vector_init(&z, 1);
    lca_exact_merge(&z, &x);
    size_t fits = lca_exact_merge(&z, &y); /* 2^41 + 2^41 = 2^42: at the limit */
    size_t third = lca_exact_merge(&z, &x); /* 3·2^41: beyond */
    check_true(before == 0 && fits == 1 && third == 0,
               "range: merges report a sum past 2^42 and accept one below",
               "merge into an over-range sum %zu, 2^42 − ε %zu, 3·2^41 %zu", before, fits, third);
    lca_exact_vector_release(&one);
    lca_exact_vector_release(&x);
    lca_exact_vector_release(&y);
    lca_exact_vector_release(&z);
}

static double scalar_of(const double *terms, const size_t *order, size_t n, int splits,
                        test_rng *rng) {
    lca_exact_scalar parts[4];
    for (int p = 0; p < 4; p++) lca_exact_scalar_clear(&parts[p]);
    for (size_t i = 0; i < n; i++) {
        int p = splits > 1 ? (int)test_rng_below(rng, (uint64_t)splits) : 0;
        lca_exact_scalar_add(&parts[p], terms[order ? order[i] : i]);
    }
    for (int p = 1; p < splits; p++) lca_exact_scalar_merge(&parts[0], &parts[p]);
    return lca_exact_scalar_value(&parts[0]);
}

static void test_scalar(void) {
    test_rng rng;
    test_rng_seed(&rng, 7);
    enum { N = 4000 };
    double *terms = test_alloc(N * sizeof(double));
    size_t *order = test_alloc(N * sizeof(size_t));
    /* every exponent: 1e-308 … 1e308, subnormals, both signs */
    for (size_t i = 0; i < N; i++) {
        int e = (int)test_rng_below(&rng, 2075) - 1074; /* sums stay below 2^1024 */
        double x = ldexp(1.0 + test_rng_uniform(&rng), e);
        if (!isfinite(x)) x = 0x1.fffffffffffffp1022;
        terms[i] = test_rng_below(&rng, 2) ? -x : x;
        order[i] = i;
    }
    for (size_t t = N - 1; t > 0; t--) {
        size_t j = (size_t)test_rng_below(&rng, t + 1), swap = order[t];
        order[t] = order[j];
        order[j] = swap;
    }
    double a = scalar_of(terms, NULL, N, 1, &rng), b = scalar_of(terms, order, N, 1, &rng),
           c = scalar_of(terms, order, N, 4, &rng);
    check_true(memcmp(&a, &b, sizeof a) == 0 && memcmp(&a, &c, sizeof a) == 0,
               "scalar sums over the whole float64 range: in order, shuffled, split over 4",
               "%.17g %.17g %.17g", a, b, c);

    /* a narrower range, where __int128 holds the exact sum: terms m·2^e with
     * e in [−40, 20], in units of 2^−93 */
    __int128 reference = 0;
    for (size_t i = 0; i < N; i++) {
        int64_t m = (int64_t)(test_rng_next(&rng) >> 11); /* 53 bits */
        int e = (int)test_rng_below(&rng, 61) - 40;
        double x = ldexp((double)m, e - 53);
        terms[i] = test_rng_below(&rng, 2) ? -x : x;
        __int128 units = (__int128)m << (e + 40);
        reference += terms[i] < 0 ? -units : units;
    }
    double expected = (double)reference * 0x1p-93;
    double got = scalar_of(terms, order, N, 3, &rng);
    check_true(memcmp(&got, &expected, sizeof got) == 0,
               "scalar sums: equal to the __int128 reference rounded once",
               "got %.17g, expected %.17g", got, expected);

    double cancel[] = {1e300, 1.0, -1e300, 0x1p-1074, 0x1p1000, -0x1p1000};
    lca_exact_scalar s;
    lca_exact_scalar_clear(&s);
    for (int i = 0; i < 6; i++) lca_exact_scalar_add(&s, cancel[i]);
    double value = lca_exact_scalar_value(&s);
    check_true(value == 1.0,
               "scalar sums: 1e300 + 1 − 1e300 + 2^-1074 + 2^1000 − 2^1000 is 1 (rounded)",
               "got %.17g", value);
    lca_exact_scalar_clear(&s);
    lca_exact_scalar_add(&s, 0x1p-1074);
    lca_exact_scalar_add(&s, 0x1p1000);
    lca_exact_scalar_add(&s, -0x1p1000);
    value = lca_exact_scalar_value(&s);
    check_true(value == 0x1p-1074, "scalar sums: the smallest subnormal survives 2^1000 − 2^1000",
               "got %.17g", value);
    lca_exact_scalar_clear(&s);
    for (int i = 0; i < 3; i++) lca_exact_scalar_add(&s, -0.1);
    value = lca_exact_scalar_value(&s);
    double exact = (double)((long double)-0.1 * 3.0L);
    check_true(value == exact,
               "scalar sums: −0.1 three times is the exact sum (in long double) rounded once",
               "got %.17g, expected %.17g", value, exact);
    check_true(!lca_exact_scalar_add(&s, NAN) && !lca_exact_scalar_add(&s, INFINITY) &&
                   lca_exact_scalar_value(&s) == value,
               "scalar sums: NaN and inf are refused and leave the sum unchanged", "");
    free(terms);
    free(order);
}

int main(void) {
    test_begin("exact_sum");
    test_vector_orders();
    test_vector_range();
    test_scalar();
    return test_finish();
}
