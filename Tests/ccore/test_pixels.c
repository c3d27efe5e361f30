/*
 * test_pixels: the uint8 → float conversion of every chunk gather
 * (pixels.c) against the division it replaces, bit for bit:
 *   - all 256 pixel values;
 *   - every length 0 … 70 at offsets 0 … 3 (vector body and scalar tail),
 *     with guard floats after the end left untouched;
 *   - reports whether the FMA fast path is in use on this CPU (it must be
 *     on x86-64 with AVX2 and FMA: it is exact for all 256 inputs).
 */
#include "internal.h"
#include "support.h"

#include <stdio.h>
#include <string.h>

static uint32_t bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

int main(void) {
    test_begin("test_pixels");
    uint8_t all[256];
    float converted[256];
    for (int p = 0; p < 256; p++) all[p] = (uint8_t)p;
    lca_pixels_to_floats(converted, all, 256);
    int wrong = 0, first_wrong = -1;
    for (int p = 0; p < 256; p++)
        if (bits(converted[p]) != bits((float)p / 255.0f)) {
            wrong++;
            if (first_wrong < 0) first_wrong = p;
        }
    check_true(wrong == 0, "all 256 pixel values equal p / 255.0f bit for bit",
               "%d differ (first: %d)", wrong, first_wrong);

    uint8_t source[80];
    float out[80];
    test_rng rng;
    test_rng_seed(&rng, 7);
    for (size_t i = 0; i < sizeof source; i++) source[i] = (uint8_t)(test_rng_next(&rng) >> 56);
    int bad_lengths = 0;
    for (size_t offset = 0; offset < 4; offset++)
        for (size_t length = 0; length <= 70; length++) {
            for (size_t i = 0; i < 80; i++) out[i] = -1.0f;
            lca_pixels_to_floats(out + offset, source + offset, length);
            bool ok = true;
            for (size_t i = 0; i < 80; i++) {
                bool inside = i >= offset && i < offset + length;
                float want = inside ? (float)source[i] / 255.0f : -1.0f;
                if (bits(out[i]) != bits(want)) ok = false;
            }
            if (!ok) bad_lengths++;
        }
    check_true(bad_lengths == 0, "lengths 0-70 at offsets 0-3: exact, nothing written outside",
               "%d of 284 cases wrong", bad_lengths);
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool capable = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    check_true(!capable || lca_pixels_fast_path(), "the FMA path is used where the CPU has it",
               "avx2+fma %s, fast path %s", capable ? "yes" : "no",
               lca_pixels_fast_path() ? "on" : "off");
#endif
    printf("fast path: %s\n", lca_pixels_fast_path() ? "on (FMA, 8 or 16 lanes)" : "off (division)");
    return test_finish();
}
