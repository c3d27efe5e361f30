/*
 * internal.h: declarations shared between the core's files, not exported.
 *
 * Dimension key: the one meaning of the capital letters in every
 * signature, shape comment and doc comment of the core (the layers, the
 * losses, GEMM, the pass, the integrator); other files point here.
 *   N       examples in a batch, an evaluation chunk or a block of rows
 *   C, H, W channels, height, width of a layer's input; activations are
 *           channels-first and row-major, x[N][C][H][W] (as PyTorch)
 *   OC, OH, OW  the same of its output
 *   KH, KW  convolution kernel height, width; K×K a pooling window (a side,
 *           never beside the parameter count K below)
 *   S, P    stride; padding (top/left; bottom/right get whatever makes OH, OW)
 *   F       features of a flat activation: C·H·W
 *   I, O    input and output features of a dense layer (its I is the F of
 *           its input)
 *   K       parameters of the whole model (the length of the flat parameter
 *           array and of every vector in its layout)
 *   T       tensors, U output units of per-unit LCA (lca_model_unit_count)
 *   E       examples in an evaluation set (an LCA view)
 *   M, Nc, Kc  GEMM sizes: C[M×Nc] = A[M×Kc] · B[Kc×Nc] (gemm.c)
 * Weights keep PyTorch's shapes: dense (O, I) as torch.nn.Linear.weight,
 * convolution (OC, C, KH, KW) as torch.nn.Conv2d.weight.
 */
#ifndef LCA_INTERNAL_H
#define LCA_INTERNAL_H

#include "lca.h"
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__) || defined(__clang__)
#define LCA_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define LCA_PRINTF_LIKE(f, a)
#endif

/* ---- status.c: record a detailed message for lca_last_error and return
 * status, so that failures read `return lca_fail(LCA_ERR_FORMAT, "...")`. */
lca_status lca_fail(lca_status status, const char *format, ...) LCA_PRINTF_LIKE(2, 3);

/* ---- checked sizes (memory.c): every size computed from user numbers
 * (spec widths, file headers, batch sizes) goes through these, so that an
 * overflow is an error and never a small allocation. They return false on
 * overflow and leave *out as SIZE_MAX. */
static inline bool lca_size_mul(size_t a, size_t b, size_t *out) {
    if (__builtin_mul_overflow(a, b, out)) {
        *out = SIZE_MAX;
        return false;
    }
    return true;
}
static inline bool lca_size_add(size_t a, size_t b, size_t *out) {
    if (__builtin_add_overflow(a, b, out)) {
        *out = SIZE_MAX;
        return false;
    }
    return true;
}
/* a·b + c, saturating at SIZE_MAX (which no allocation can meet) */
static inline size_t lca_size_mul_add(size_t a, size_t b, size_t c) {
    size_t p, s;
    if (!lca_size_mul(a, b, &p) || !lca_size_add(p, c, &s)) return SIZE_MAX;
    return s;
}
/* The most memory the core lets one model or trainer plan for: on Linux
 * the smaller of MemAvailable (/proc/meminfo) and a cgroup v2 memory.max,
 * else the machine's physical memory (sysconf), or SIZE_MAX where none can
 * be read. A model or trainer needing more is refused before anything is
 * allocated, with LCA_ERR_OUT_OF_MEMORY naming both numbers, rather than
 * left to the kernel's out-of-memory killer. Needs up to 256 MiB are not
 * checked. */
size_t lca_memory_limit(void);
/* For tests: use bytes as the limit (and check every need, however small);
 * 0 restores the machine's. Not for use while another thread allocates. */
void lca_memory_set_limit(size_t bytes);
/* LCA_ERR_OUT_OF_MEMORY when bytes (SIZE_MAX: beyond 2^64) exceed
 * lca_memory_limit(); what names what needs them ("model \"64-4000000-10\"
 * (1,200,000,000 parameters)"), hint what to try. */
lca_status lca_memory_check(size_t bytes, const char *what, const char *hint);

/* ---- gemm.c: single-precision matrix product on row-major matrices.
 *   C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C
 * op(A) = A (stored m×k, leading dimension lda) or Aᵀ (A stored k×m) when
 * trans_a; likewise B. beta = 0 overwrites C (C may hold garbage/NaN).
 * Sequential accumulation: each element of C is
 *   c ← beta·c (0 when beta = 0, c itself when beta = 1, else one rounding),
 *   then for p = 0, 1, …, k−1 in order: c ← fma(alpha·a_ip, b_pj, c)
 * (alpha·a_ip rounded once, exact for alpha = 1). The terms go straight into
 * C, with no block sum added afterwards, so a product split anywhere in k
 * into consecutive calls with beta = 1 gives the same bytes as one call
 * (the float stored between two calls is the accumulator itself); threads
 * split only the m and n dimensions, so the bytes are the same at any
 * thread count. (The portable kernel rounds a·b and the add separately
 * where the compiler has no FMA instruction, but the order is the same.) */
void lca_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
               const float *a, size_t lda, const float *b, size_t ldb, float beta,
               float *c, size_t ldc);
/* Straightforward triple loop with float64 accumulation: the reference the
 * fast kernel is tested against. */
void lca_sgemm_naive(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                     const float *a, size_t lda, const float *b, size_t ldb, float beta,
                     float *c, size_t ldc);
/* Kernel families (gemm.c): the GEMM micro-kernel and the convolution
 * kernels of one instruction set, used together. The process uses the one
 * LCA_KERNEL names (read once), else the best this CPU runs. */
typedef enum lca_kernel_family {
    LCA_KERNEL_AVX512, LCA_KERNEL_AVX2, LCA_KERNEL_PORTABLE, LCA_KERNEL_FAMILIES
} lca_kernel_family;
lca_kernel_family lca_kernel_current(void);
/* What an LCA_KERNEL value means: NULL or "" the automatic choice, else
 * "avx512", "avx2" or "portable" if this CPU runs it; LCA_ERR_INVALID_ARGUMENT
 * (unknown) or LCA_ERR_UNSUPPORTED (this CPU cannot) with a message. */
lca_status lca_kernel_parse(const char *value, lca_kernel_family *family);
/* For tests and benchmarks: use the named family ("avx512", "avx2",
 * "portable") or, with NULL, the process's (LCA_KERNEL, else automatic).
 * Returns false if this CPU cannot run it. Not for use while another thread
 * multiplies. */
bool lca_gemm_select_kernel(const char *name);

/* Micro-kernels (gemm_kernel_*.c), MR × NR register tiles:
 *   C[rows×cols] ← (load_c ? C : 0) + op(A)[MR×depth] · op(B)[depth×NR]
 * for rows ≤ MR, cols ≤ NR: the accumulators start from the tile of C
 * (load_c; masked at the edges, zero elsewhere) or from zero (C is then not
 * read), and each step of k adds acc = fma(a, b, acc) in k order; only the
 * rows × cols corner is read and stored. alpha and beta are gemm.c's (it
 * scales C and packed A first), so every element of C is one chain of FMAs
 * in k order, and the two FMA kernels give the same bits whatever their
 * tiles. (The portable kernel writes acc += a·b, which rounds twice where
 * the compiler has no FMA instruction, as on baseline x86-64.) The operands
 * are
 *   op(A)[r][p] = a[r·a_row_step + p·a_k_step]   (packed panel: steps 1, MR)
 *   op(B)[p][j] = b[p·b_k_step + j]              (packed panel: step NR)
 * so a kernel can also read rows of A, Aᵀ or B in place; all MR rows and
 * NR columns it reads must then exist. When b_copy is not NULL, the kernel
 * also writes the depth × NR block of op(B) it reads to b_copy (a packed
 * panel, step NR): the first tile of a column packs B for the others while
 * its FMAs hide the loads. c has row stride ldc. */
typedef void (*lca_micro_kernel)(size_t depth, const float *a, size_t a_row_step,
                                 size_t a_k_step, const float *b, size_t b_k_step,
                                 float *restrict b_copy, bool load_c, float *restrict c,
                                 size_t ldc, size_t rows, size_t cols);
void lca_gemm_micro_portable_6x16(size_t depth, const float *a, size_t a_row_step,
                                  size_t a_k_step, const float *b, size_t b_k_step,
                                  float *restrict b_copy, bool load_c, float *restrict c,
                                  size_t ldc, size_t rows, size_t cols);
bool lca_gemm_avx2_supported(void);
void lca_gemm_micro_avx2_6x16(size_t depth, const float *a, size_t a_row_step, size_t a_k_step,
                              const float *b, size_t b_k_step, float *restrict b_copy,
                              bool load_c, float *restrict c, size_t ldc, size_t rows,
                              size_t cols);
bool lca_gemm_avx512_supported(void);
void lca_gemm_micro_avx512_10x32(size_t depth, const float *a, size_t a_row_step,
                                 size_t a_k_step, const float *b, size_t b_k_step,
                                 float *restrict b_copy, bool load_c, float *restrict c,
                                 size_t ldc, size_t rows, size_t cols);
/* out[q·out_step + j] = in[j·in_step + q] for q < depth and j < 16, zero for
 * j ≥ rows ≤ 16 (AVX-512 packing of Bᵀ; reads nothing past depth or rows) */
void lca_gemm_transpose_16_avx512(const float *in, size_t in_step, float *out, size_t out_step,
                                  size_t depth, size_t rows);
/* out[p·32 + j] = in[p·in_step + j] for j < cols ≤ 32, zero up to 32 (the edge
 * panel of op(B) = B for the AVX-512 kernel) */
void lca_gemm_copy_edge_avx512(const float *in, size_t in_step, float *out, size_t depth,
                               size_t cols);

/* ---- conv_kernel_*.c: direct convolution of one example, stride 1, an
 * odd K × K kernel with "same" padding P = (K − 1)/2:
 *   y[o][oh][ow] = Σ over (i, kh, kw), in that order, of
 *                  w[o][i][kh][kw] · xpad[i][oh + kh][ow + kw]   (+ bias[o])
 * each output a chain of FMAs from 0 (then one add of the bias): the order
 * of the im2col product. xpad[i][r][c] (the input padded by P) is read at
 * xs[i·plane + r·row + c] with the kw-th column shift at + kw·kw_step:
 *   padded layout: row = OW + K − 1, kw_step = 1, plane = (OH + K − 1)·row;
 *                  vectors of pixels within output rows (span false);
 *   shifted layout (span): K copies xs[kw][i][r][ow] = xpad[i][r][ow + kw],
 *                  row = OW, plane = (OH + K − 1)·OW, kw_step = in_c·plane;
 *                  vectors run over the flat output plane across rows, so
 *                  narrow planes (8 × 8, 14 × 14) fill every lane.
 * wp: the weights packed as [⌈out_c/4⌉][in_c][K][K][4] (output channel o at
 * tile o/4, lane o%4; lanes past out_c zero); y: out_c × OH × OW. */
typedef struct lca_conv_direct {
    size_t in_c, out_c, oh, ow, k;
    size_t row, plane, kw_step;
    bool span;
    const float *xs, *wp, *bias;
    float *y;
} lca_conv_direct;
/* The weight gradient of a direct shape, one tile: for r < rows (≤ MR: 10
 * for AVX-512, 6 for AVX2) and j < cols (≤ nr),
 *   c[r·ldc + j] ← (load_c ? c : 0), then fma(a[r][q], b[q·nr + j], c) for
 *   q = 0 … depth−1 in order
 * a: MR row pointers (rows past `rows` may repeat a valid one: not stored);
 * b: packed, depth × nr (AVX-512: nr 16 or 32; AVX2: 16). The rows are the
 * padded input planes shifted by (kh, kw) and q runs over the padded pixel
 * grid, where the packed dy is zero off the outputs: those terms add
 * x·0 = ±0 to the chain and leave its bits as they are, so the result is the
 * im2col product's, without the im2col. */
void lca_conv_wgrad_avx512(size_t depth, const float *const *a, const float *b, size_t nr,
                           bool load_c, float *c, size_t ldc, size_t rows, size_t cols);
void lca_conv_wgrad_avx2(size_t depth, const float *const *a, const float *b, size_t nr,
                         bool load_c, float *c, size_t ldc, size_t rows, size_t cols);
void lca_conv_direct_avx512(const lca_conv_direct *d);
void lca_conv_direct_avx2(const lca_conv_direct *d);

/* ---- data.c */
struct lca_dataset {
    size_t count;      /* examples */
    size_t features;   /* inputs per example */
    size_t outputs;    /* regression targets per example; 0 for labelled data */
    int classes;       /* labelled data: max label + 1; 0 for regression data */
    uint8_t *pixels;   /* count × features, or NULL when inputs is used */
    float *inputs;     /* count × features float inputs (regression data), or NULL */
    int32_t *labels;   /* count, or NULL */
    float *targets;    /* count × outputs, or NULL */
    char *source;
    /* Image shape C×H×W of one example (features = C·H·W, channels-first
     * like the activations); 1×1×features for data without one. */
    size_t channels, height, width;
};
/* Read a whole file as it is on disk into a buffer with at least slack
 * bytes of spare capacity after the content (*bytes is malloc'ed): for
 * files kept whole, such as checkpoints. Data sets are not read this way:
 * data.c streams them (gzip inflated on the fly) into their final arrays. */
lca_status lca_read_file_raw(const char *path, size_t slack, uint8_t **bytes, size_t *length);
/* LCA_ERR_INVALID_ARGUMENT, "who: index … (position …) is outside the …
 * examples of …", for the first of indices[0 … count) past the data set. */
lca_status lca_dataset_check_indices(const lca_dataset *data, const uint32_t *indices,
                                     size_t count, const char *who);

/* ---- json.c: s as a JSON string literal, in double quotes: '"' and '\'
 * escaped with a backslash, control characters (below 0x20) as \u00XX,
 * every other byte (UTF-8 included) as it is. The text goes out through
 * write(sink, bytes, length), in pieces, so any buffer type can take it. */
typedef void (*lca_json_sink)(void *sink, const char *bytes, size_t length);
void lca_json_write_string(lca_json_sink write, void *sink, const char *s);

/* ---- pixels.c: dst[i] = src[i] / 255.0f exactly (bit for bit), faster
 * than a division per pixel where the CPU allows. */
void lca_pixels_to_floats(float *dst, const uint8_t *src, size_t count);
/* Whether the fast path is in use (it is only when it matches the division
 * on all 256 inputs). */
bool lca_pixels_fast_path(void);

/* ---- safetensors.c: the safetensors format (8-byte little-endian header
 * length, JSON header, raw little-endian data). */
typedef struct lca_st_tensor {
    const char *name;
    const char *dtype;              /* "F32", "F64", "U32", "I64", … */
    int rank;
    int64_t shape[LCA_MAX_RANK];
    const void *data;
    size_t bytes;
} lca_st_tensor;
/* Write tensors (in the given order, data packed contiguously) and string
 * metadata to path atomically: path + ".tmp", fsync, rename. */
lca_status lca_safetensors_write(const char *path, const lca_st_tensor *tensors, size_t count,
                                 const char *const *metadata_keys,
                                 const char *const *metadata_values, size_t metadata_count);
typedef struct lca_safetensors lca_safetensors;
/* Read and validate a whole file: header JSON, dtypes, shapes against
 * byte ranges, ranges inside the file. Errors name the file and offset. */
lca_status lca_safetensors_read(lca_safetensors **out, const char *path);
void lca_safetensors_free(lca_safetensors *file);
size_t lca_safetensors_count(const lca_safetensors *file);
const lca_st_tensor *lca_safetensors_tensor(const lca_safetensors *file, size_t index);
const lca_st_tensor *lca_safetensors_find(const lca_safetensors *file, const char *name);
/* Metadata value for key, or NULL. */
const char *lca_safetensors_metadata(const lca_safetensors *file, const char *key);
const char *lca_safetensors_path(const lca_safetensors *file);
/* Convert tensor (F32, F16, BF16 or F64; bytes / element size elements)
 * to float in out: F32 bit for bit, F16 and BF16 exactly (every value is a
 * binary32 value), F64 rounded to nearest, with *rounded (may be NULL) the
 * number of values that changed. A non-finite F16/BF16/F64 value, an F64
 * value outside F32's range or another dtype fails, naming the tensor and
 * the element. file (may be NULL) names the file in messages. */
lca_status lca_safetensors_to_f32(const lca_safetensors *file, const lca_st_tensor *tensor,
                                  float *out, size_t *rounded);

/* ---- threads.c */
/* An OpenMP parallel loop over independent iterations when cond holds
 * (enough work to pay for the threads), in a core built with -fopenmp;
 * nothing otherwise (the pthreads back end: these loops then run on the
 * calling thread). Each iteration writes its own memory, so the bytes never
 * depend on it. */
#define LCA_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
/* num_threads: the core's setting (lca_set_threads), not OpenMP's default */
#define LCA_PARALLEL_FOR_IF(cond) \
    LCA_PRAGMA(omp parallel for schedule(static) if(cond) num_threads(lca_threads()))
#else
#define LCA_PARALLEL_FOR_IF(cond)
#endif
#define LCA_PARALLEL_WORK 32768 /* elements below which one thread is faster */

/* Run body(i, context) for i in [0, count) over the threads (contiguous
 * blocks of indices); iterations are independent and each writes its own
 * memory. Inside a loop or a team it runs on the calling thread. */
typedef void (*lca_parallel_body)(size_t index, void *context);
void lca_parallel_for(size_t count, lca_parallel_body body, void *context);

/* Run body(member, context) once for each member in [0, threads), on up to
 * that many threads at once (the caller's among them), and return when all
 * have returned. Which thread runs which member is not fixed: a thread that
 * finishes a member takes the next one not yet started, and inside a loop
 * or a team, or when another thread of the program holds the pool, one
 * thread runs them all in turn. So a member may wait only for work another
 * member has already taken (which that member is running), never for a
 * member to start. */
typedef void (*lca_team_body)(size_t member, void *context);
void lca_parallel_team(size_t threads, lca_team_body body, void *context);

/* Threads a parallel call made here would use: 1 inside a loop or a team,
 * else lca_threads(). */
int lca_parallel_threads(void);

#endif /* LCA_INTERNAL_H */
