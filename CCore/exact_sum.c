/* exact_sum.c: order-independent sums in integer fixed point (exact_sum.h).
 *
 * The float64 parts of a vector addition are exact, so its integers are a
 * function of the term alone:
 *   t = x·2^20                      exact: a float32 times a power of two
 *   m = t + 1.5·2^52                |t| < 2^44: m's unit in the last place is
 *                                   1, so m holds t rounded to the nearest
 *                                   integer h, and bits(m) − bits(1.5·2^52) = h
 *   t − (m − 1.5·2^52) = t − h      exact (|t − h| ≤ ½, within t's precision)
 *   (t − h)·2^52, rounded the same way (|…| ≤ 2^51) to r
 * No float-to-integer conversion instruction is needed (AVX2 has none for
 * int64), so the loop vectorises on SSE2, AVX2 and AVX-512 alike; the
 * integer additions are done as uint64 (wrapping, never undefined) and kept
 * in range by the checks of exact_sum.h.
 *
 * Measured (docs/method.md, "Determinism"): about 0.4 ns per element on one
 * AVX2 or AVX-512 core with the limbs in L2, about the cost of the float64
 * addition it replaces. */
#include "exact_sum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC 0x1.8p52
#define MAGIC_BITS INT64_C(0x4338000000000000)
#define LO_MASK ((UINT64_C(1) << 52) - 1)

#ifndef __SIZEOF_INT128__
#error "exact_sum.c needs a compiler with __int128 (gcc and clang on 64-bit targets)"
#endif

static inline int64_t bits_of(double d) {
    int64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

bool lca_exact_vector_init(lca_exact_vector *v, size_t count) {
    memset(v, 0, sizeof *v);
    size_t bytes = count * sizeof(int64_t);
    if (count > SIZE_MAX / sizeof(int64_t) / 2 || bytes > SIZE_MAX - 63) return false;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    v->hi = aligned_alloc(64, bytes);
    v->lo = aligned_alloc(64, bytes);
    if (!v->hi || !v->lo) {
        lca_exact_vector_release(v);
        return false;
    }
    v->count = count;
    lca_exact_clear(v);
    return true;
}

void lca_exact_vector_release(lca_exact_vector *v) {
    free(v->hi);
    free(v->lo);
    memset(v, 0, sizeof *v);
}

void lca_exact_clear(lca_exact_vector *v) {
    if (v->count) {
        memset(v->hi, 0, v->count * sizeof(int64_t));
        memset(v->lo, 0, v->count * sizeof(int64_t));
    }
    v->pending = 0;
}

/* The addition loop, compiled once per instruction set (the integers do
 * not depend on which ran). Returns whether every term was in range. */
#define EXACT_ADD_LOOP                                                                     \
    int ok = 1;                                                                            \
    for (size_t i = 0; i < n; i++) {                                                       \
        double t = (double)x[i] * 0x1p20;                                                  \
        ok &= fabs(t) < 0x1p44; /* false for NaN too */                                    \
        double m = t + MAGIC;                                                              \
        double r = (t - (m - MAGIC)) * 0x1p52 + MAGIC;                                     \
        hi[i] = (int64_t)((uint64_t)hi[i] + (uint64_t)(bits_of(m) - MAGIC_BITS));          \
        lo[i] = (int64_t)((uint64_t)lo[i] + (uint64_t)(bits_of(r) - MAGIC_BITS));          \
    }                                                                                      \
    return ok;

static int add_portable(int64_t *restrict hi, int64_t *restrict lo, const float *restrict x,
                        size_t n) {
    EXACT_ADD_LOOP
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EXACT_X86 1
__attribute__((target("avx2"))) static int add_avx2(int64_t *restrict hi, int64_t *restrict lo,
                                                    const float *restrict x, size_t n) {
    EXACT_ADD_LOOP
}

__attribute__((target("avx512f"))) static int add_avx512(int64_t *restrict hi,
                                                        int64_t *restrict lo,
                                                        const float *restrict x, size_t n) {
    EXACT_ADD_LOOP
}
#endif

typedef int (*add_function)(int64_t *restrict, int64_t *restrict, const float *restrict, size_t);

static add_function choose_add(void) {
#ifdef EXACT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return add_avx512;
    if (__builtin_cpu_supports("avx2")) return add_avx2;
#endif
    return add_portable;
}

/* lo into hi: lo = lo mod 2^52 (in [0, 2^52)), hi += ⌊lo / 2^52⌋; returns
 * count, or the first element with |hi| ≥ 2^62 (a sum ≥ 2^42). */
static size_t carry(lca_exact_vector *v) {
    int64_t *hi = v->hi, *lo = v->lo;
    size_t n = v->count;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        int64_t c = lo[i] >> 52; /* arithmetic: ⌊lo / 2^52⌋ */
        lo[i] = (int64_t)((uint64_t)lo[i] & LO_MASK);
        int64_t h = (int64_t)((uint64_t)hi[i] + (uint64_t)c);
        hi[i] = h;
        ok &= h > -(INT64_C(1) << 62) && h < (INT64_C(1) << 62);
    }
    v->pending = 0;
    if (ok) return n;
    for (size_t i = 0; i < n; i++)
        if (!(hi[i] > -(INT64_C(1) << 62) && hi[i] < (INT64_C(1) << 62))) return i;
    return n;
}

size_t lca_exact_add(lca_exact_vector *v, const float *x) {
    static add_function add; /* a benign race: every thread stores the same pointer */
    if (!add) add = choose_add();
    size_t n = v->count;
    if (!add(v->hi, v->lo, x, n)) {
        for (size_t i = 0; i < n; i++)
            if (!(fabs((double)x[i]) < LCA_EXACT_TERM_LIMIT)) return i;
    }
    if (++v->pending >= LCA_EXACT_CARRY_EVERY) return carry(v);
    return n;
}

size_t lca_exact_merge(lca_exact_vector *into, lca_exact_vector *from) {
    size_t n = into->count, bad = carry(from);
    if (bad != n) return bad;
    bad = carry(into);
    if (bad != n) return bad;
    /* |hi| < 2^62 each: the sum cannot wrap; lo < 2^53 */
    for (size_t i = 0; i < n; i++) {
        into->hi[i] += from->hi[i];
        into->lo[i] += from->lo[i];
    }
    return carry(into);
}

double lca_exact_value(int64_t hi, int64_t lo) {
    __int128 v = (__int128)hi * ((__int128)1 << 52) + lo;
    return (double)v * 0x1p-72; /* (double) rounds once; the power of two is exact */
}

size_t lca_exact_read(lca_exact_vector *v, double *out, bool add) {
    size_t bad = carry(v);
    if (bad != v->count) return bad;
    for (size_t i = 0; i < v->count; i++) {
        double value = lca_exact_value(v->hi[i], v->lo[i]);
        out[i] = add ? out[i] + value : value;
    }
    return v->count;
}

/* ---- scalar sums */

#define DIGIT_BITS 32
#define DIGIT_MASK ((UINT64_C(1) << DIGIT_BITS) - 1)
#define LOWEST_EXPONENT (-1074)
/* each addition adds less than 2^32 to a digit: carry before 2^30 of them */
#define SCALAR_CARRY_EVERY (1u << 30)

void lca_exact_scalar_clear(lca_exact_scalar *s) { memset(s, 0, sizeof *s); }

static void scalar_carry(lca_exact_scalar *s) {
    for (int d = 0; d + 1 < LCA_EXACT_SCALAR_DIGITS; d++) {
        int64_t c = s->digit[d] >> DIGIT_BITS;
        s->digit[d] = (int64_t)((uint64_t)s->digit[d] & DIGIT_MASK);
        s->digit[d + 1] += c;
    }
    s->pending = 0;
}

bool lca_exact_scalar_add(lca_exact_scalar *s, double x) {
    if (!isfinite(x)) return false;
    if (x == 0.0) return true;
    int e;
    double f = frexp(fabs(x), &e);           /* |x| = f·2^e, f ∈ [½, 1) */
    uint64_t m = (uint64_t)ldexp(f, 53);     /* exact: 53 bits */
    e -= 53;                                 /* |x| = m·2^e */
    if (e < LOWEST_EXPONENT) {               /* a subnormal: its low bits are zero */
        m >>= LOWEST_EXPONENT - e;
        e = LOWEST_EXPONENT;
    }
    int position = e - LOWEST_EXPONENT, d = position / DIGIT_BITS;
    unsigned __int128 wide = (unsigned __int128)m << (position % DIGIT_BITS); /* < 2^85 */
    int64_t sign = x < 0 ? -1 : 1;
    for (int j = 0; j < 3 && d + j < LCA_EXACT_SCALAR_DIGITS; j++) {
        s->digit[d + j] += sign * (int64_t)(uint64_t)(wide & DIGIT_MASK);
        wide >>= DIGIT_BITS;
    }
    if (++s->pending >= SCALAR_CARRY_EVERY) scalar_carry(s);
    return true;
}

void lca_exact_scalar_merge(lca_exact_scalar *into, const lca_exact_scalar *from) {
    lca_exact_scalar f = *from;
    scalar_carry(&f);
    scalar_carry(into);
    for (int d = 0; d < LCA_EXACT_SCALAR_DIGITS; d++) into->digit[d] += f.digit[d];
    scalar_carry(into);
}

double lca_exact_scalar_value(const lca_exact_scalar *s) {
    lca_exact_scalar v = *s;
    scalar_carry(&v);
    /* digits 0 … top−1 in [0, 2^32), the top one signed: the sign of the sum */
    bool negative = v.digit[LCA_EXACT_SCALAR_DIGITS - 1] < 0;
    if (negative) {
        for (int d = 0; d < LCA_EXACT_SCALAR_DIGITS; d++) v.digit[d] = -v.digit[d];
        scalar_carry(&v);
    }
    int top = LCA_EXACT_SCALAR_DIGITS - 1;
    while (top >= 0 && v.digit[top] == 0) top--;
    if (top < 0) return 0.0;
    /* the top three digits (up to 96 bits) and a sticky bit for the rest */
    int low = top >= 2 ? top - 2 : 0;
    unsigned __int128 mantissa = 0;
    for (int d = top; d >= low; d--) mantissa = (mantissa << DIGIT_BITS) | (uint64_t)v.digit[d];
    bool sticky = false;
    for (int d = 0; d < low; d++) sticky |= v.digit[d] != 0;
    int exponent = DIGIT_BITS * low + LOWEST_EXPONENT;
    int length = 0;
    for (unsigned __int128 t = mantissa; t; t >>= 1) length++;
    uint64_t kept;
    if (length <= 53) {
        kept = (uint64_t)mantissa; /* exact (sticky is then false: fewer than 3 digits) */
    } else {
        int shift = length - 53;
        kept = (uint64_t)(mantissa >> shift);
        unsigned __int128 rest = mantissa & (((unsigned __int128)1 << shift) - 1);
        unsigned __int128 half = (unsigned __int128)1 << (shift - 1);
        if (rest > half || (rest == half && (sticky || (kept & 1)))) kept++;
        exponent += shift;
    }
    double value = ldexp((double)kept, exponent); /* exact, or ±inf beyond the range */
    return negative ? -value : value;
}
