/* rng.c: the documented generator. xoshiro256** (Blackman & Vigna) seeded
 * through SplitMix64, so that a (seed, stream) pair names one reproducible
 * sequence on every platform. Never rand(): its sequence differs between
 * C libraries. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotate_left(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void lca_rng_seed(lca_rng *rng, uint64_t seed, uint64_t stream) {
    /* Mix the stream in through a second SplitMix64 step so that nearby
     * seeds and streams give unrelated states. */
    uint64_t mix = seed;
    uint64_t stream_state = stream ^ 0x6A09E667F3BCC909ull;
    mix ^= splitmix64(&stream_state);
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&mix);
}

uint64_t lca_rng_next(lca_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotate_left(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotate_left(s[3], 45);
    return result;
}

double lca_rng_uniform(lca_rng *rng) {
    return (double)(lca_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t lca_rng_below(lca_rng *rng, uint64_t bound) {
    /* Rejection keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do x = lca_rng_next(rng);
    while (x >= limit);
    return x % bound;
}

double lca_rng_normal(lca_rng *rng) {
    /* Box–Muller, one value per call (the second is dropped) so that the
     * sequence depends on nothing but the generator state. */
    double u1 = 1.0 - lca_rng_uniform(rng); /* in (0, 1] */
    double u2 = lca_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
