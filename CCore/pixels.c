/* pixels.c: uint8 pixels to the floats the nets see, x = p / 255, in the
 * hot loop of every chunk (784 divisions per Fashion-MNIST example, a tenth
 * of an FC evaluation pass when done one by one).
 *
 * The fast path computes p / 255 without a division: q = p·r with
 * r = fl(1/255), then one Newton correction q + r·(p − 255·q) with FMAs.
 * That is not correctly rounded for every float, but there are only 256
 * inputs: the first call checks all of them, for the 8- and (where the CPU
 * has it) 16-lane versions, against the division and uses the fast path
 * only if every one is bit-identical (tests check it too).
 */
#include "internal.h"

#include <stdatomic.h>

static void pixels_divide(float *dst, const uint8_t *src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = (float)src[i] / 255.0f;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static void pixels_fma(float *dst, const uint8_t *src, size_t count) {
    const __m256 r = _mm256_set1_ps(1.0f / 255.0f), d = _mm256_set1_ps(255.0f);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m128i bytes = _mm_loadl_epi64((const __m128i *)(const void *)(src + i));
        __m256 p = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
        __m256 q = _mm256_mul_ps(p, r);
        __m256 remainder = _mm256_fnmadd_ps(q, d, p); /* p − 255·q, exact */
        _mm256_storeu_ps(dst + i, _mm256_fmadd_ps(remainder, r, q));
    }
    for (; i < count; i++) {
        float p = (float)src[i];
        float q = p * (1.0f / 255.0f);
        dst[i] = __builtin_fmaf(__builtin_fmaf(-q, 255.0f, p), 1.0f / 255.0f, q);
    }
}

/* The same arithmetic 16 lanes at a time, where the CPU has AVX-512. */
__attribute__((target("avx512f")))
static void pixels_fma_512(float *dst, const uint8_t *src, size_t count) {
    const __m512 r = _mm512_set1_ps(1.0f / 255.0f), d = _mm512_set1_ps(255.0f);
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        __m512 p = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
        __m512 q = _mm512_mul_ps(p, r);
        __m512 remainder = _mm512_fnmadd_ps(q, d, p);
        _mm512_storeu_ps(dst + i, _mm512_fmadd_ps(remainder, r, q));
    }
    pixels_fma(dst + i, src + i, count - i);
}

static bool avx512_present(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

static bool fma_path_exact(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
    uint8_t all[256];
    float fast[256], divided[256];
    for (int p = 0; p < 256; p++) all[p] = (uint8_t)p;
    pixels_divide(divided, all, 256);
    for (int wide = 0; wide < (avx512_present() ? 2 : 1); wide++) {
        if (wide) pixels_fma_512(fast, all, 256);
        else pixels_fma(fast, all, 256);
        for (int p = 0; p < 256; p++)
            if (*(const uint32_t *)(const void *)&fast[p] !=
                *(const uint32_t *)(const void *)&divided[p])
                return false;
    }
    return true;
}
#else
static void pixels_fma(float *dst, const uint8_t *src, size_t count) {
    pixels_divide(dst, src, count);
}
static void pixels_fma_512(float *dst, const uint8_t *src, size_t count) {
    pixels_divide(dst, src, count);
}
static bool avx512_present(void) { return false; }
static bool fma_path_exact(void) { return false; }
#endif

enum { PATH_UNCHOSEN = 0, PATH_DIVIDE = 1, PATH_FMA = 2, PATH_FMA_512 = 3 };
/* Chosen on first use; racing threads choose the same. */
static atomic_int chosen_path;

static int chosen(void) {
    int path = atomic_load_explicit(&chosen_path, memory_order_acquire);
    if (path == PATH_UNCHOSEN) {
        path = !fma_path_exact() ? PATH_DIVIDE : avx512_present() ? PATH_FMA_512 : PATH_FMA;
        atomic_store_explicit(&chosen_path, path, memory_order_release);
    }
    return path;
}

bool lca_pixels_fast_path(void) { return chosen() != PATH_DIVIDE; }

void lca_pixels_to_floats(float *dst, const uint8_t *src, size_t count) {
    switch (chosen()) {
    case PATH_FMA_512: pixels_fma_512(dst, src, count); break;
    case PATH_FMA: pixels_fma(dst, src, count); break;
    default: pixels_divide(dst, src, count); break;
    }
}
