/* gemm.c: single-precision matrix product, in the layers of BLIS.
 *
 *   lca_sgemm            splits C into one region per thread (m and n only)
 *   gemm_region          loops over cache blocks: nc columns, KC depth, mc rows,
 *                        packing op(B) and op(A) blocks into per-thread buffers
 *   pack_a / pack_b      copy a block into mr-row / nr-column panels, zero-padded
 *                        (pack_a_panels, pack_b_panels; or, for op(B) = B with
 *                        the AVX-512 kernel, the first tile of each column)
 *   macro_kernel         walks a block one mr×nr tile at a time
 *   micro-kernel         one tile in registers (gemm_kernel_avx512.c 10×32,
 *                        gemm_kernel_avx2.c 6×16, gemm_kernel_portable.c
 *                        6×16), chosen once at run time; its gemm_kernel
 *                        entry gives the tile, cache blocks and packing
 *
 * When few tiles share a panel (narrow regions, as in the layers of the
 * nets), copying it costs more than it saves, and the kernel reads A, Aᵀ or
 * B in place instead (see DIRECT_A_MAX_COLS).
 *
 * Sequential accumulation (the determinism of the whole core rests on it):
 * an element of C starts from beta·C (C itself for beta = 1, zero for beta =
 * 0; lca_sgemm scales C first otherwise) and each term of k is fused into
 * it in k order, c ← fma(a_ip, b_pj, c): the micro-kernel loads the tile of
 * C into its accumulators, adds its k block and stores it back, and the
 * next k block loads it again. No block sum is ever added afterwards, so
 * the k blocks (KC) do not change the bits, and a product split anywhere in
 * k into consecutive calls with beta = 1 gives the same bytes as one call
 * (the weight gradients of the layers rely on this to add example after
 * example into one chain, however the examples are cut into calls). alpha
 * ≠ 1 scales the packed panels of A (alpha·a rounded once; those products
 * never read A in place). Every tile, edge tiles and tiles read in place
 * too, goes through the same arithmetic, so the bytes of C do not depend on
 * the thread count or on where the region boundaries fall; and the FMA
 * kernels (AVX-512 and AVX2) give the same bytes as each other, whatever
 * their tiles.
 *
 * Dimension letters as in internal.h (the key): C[M×Nc] = op(A)[M×Kc] · op(B)[Kc×Nc].
 */
#include "internal.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h> /* part of every x86-64 CPU: no flag needed */
#endif

/* KC: the depth of a k block. A B micro-panel (KC × NR: 16 KiB at NR = 16,
 * 32 KiB at NR = 32) stays in L1 while the A panels stream past it. KC also
 * fixes the reduction order; changing it changes the bits of C. The other
 * blocks come with the kernel (gemm_kernel below). */
#define KC 256
/* Bounds on the tiles and blocks of the kernels (the kernels table below). */
#define MR_MAX 10
#define NR_MAX 32
#define MC_MAX 200
#define NC_MAX 1024

/* Below this many flops per thread, a thread costs more than it saves. */
#define MIN_FLOPS_PER_THREAD (1u << 18)

static size_t min_size(size_t x, size_t y) { return x < y ? x : y; }
static size_t round_up(size_t x, size_t multiple) { return (x + multiple - 1) / multiple * multiple; }

/* ---------------------------------------------------------------- packing */

/* Copy rows [0, rows) and k [0, depth) of op(A) into mr-row panels:
 * packed[panel][p][r] (panels × depth × mr) = op(A)[panel·mr + r][p], with
 * rows past `rows` zero. a points at op(A)[0][0] of the block. Inlined with
 * a constant mr (pack_a_6, pack_a_10), so the short copies unroll. */
static inline __attribute__((always_inline)) void
pack_a_panels(size_t mr, bool trans_a, size_t rows, size_t depth, const float *restrict a,
              size_t lda, float *restrict packed) {
    size_t full_rows = trans_a ? rows / mr * mr : 0;
    if (full_rows > 0) {
        /* op(A) = Aᵀ: the rows of a panel are contiguous floats of A. Walk
         * A row by row (k outer), reading it front to back, which the
         * prefetchers follow, instead of one panel's narrow strip at a time. */
        for (size_t p = 0; p < depth; p++) {
            const float *restrict in = a + p * lda;
            for (size_t row0 = 0; row0 < full_rows; row0 += mr) {
                float *restrict out = packed + row0 * depth + p * mr;
                for (size_t r = 0; r < mr; r++) out[r] = in[row0 + r];
            }
        }
    }
    for (size_t row0 = full_rows; row0 < rows; row0 += mr) {
        size_t panel_rows = min_size(mr, rows - row0);
        float *restrict panel = packed + row0 * depth; /* depth × mr */
        if (trans_a) {
            /* Fixed trip counts with a select keep these short copies inline
             * (a variable-length loop becomes a memcpy call per k). */
            for (size_t p = 0; p < depth; p++) {
                const float *restrict in = a + p * lda + row0;
                float *restrict out = panel + p * mr;
                for (size_t r = 0; r < mr; r++) out[r] = r < panel_rows ? in[r] : 0.0f;
            }
        } else if (panel_rows == mr) {
            /* op(A) = A: mr rows read side by side, contiguous in k; the
             * compiler turns this into small transposes. */
            const float *restrict row_of[MR_MAX];
            for (size_t r = 0; r < mr; r++) row_of[r] = a + (row0 + r) * lda;
            for (size_t p = 0; p < depth; p++) {
                float *restrict out = panel + p * mr;
                for (size_t r = 0; r < mr; r++) out[r] = row_of[r][p];
            }
        } else {
            /* op(A) = A, an edge panel: each row is contiguous in k; write
             * it down the panel with stride mr, in strips of k so the
             * panel's lines stay in L1 between rows. */
            enum { STRIP = 64 };
            for (size_t p0 = 0; p0 < depth; p0 += STRIP) {
                size_t strip = min_size(STRIP, depth - p0);
                for (size_t r = 0; r < mr; r++) {
                    float *restrict out = panel + p0 * mr + r;
                    if (r < panel_rows) {
                        const float *restrict in = a + (row0 + r) * lda + p0;
                        for (size_t p = 0; p < strip; p++) out[p * mr] = in[p];
                    } else {
                        for (size_t p = 0; p < strip; p++) out[p * mr] = 0.0f;
                    }
                }
            }
        }
    }
}

/* Copy k [0, depth) and columns [0, cols) of op(B) into nr-column panels:
 * packed[panel][p][j] (panels × depth × nr) = op(B)[p][panel·nr + j], with
 * columns past `cols` zero. b points at op(B)[0][0] of the block. Inlined
 * with a constant nr (a multiple of 4), like pack_a_panels. */
static inline __attribute__((always_inline)) void
pack_b_panels(size_t nr, bool trans_b, size_t depth, size_t cols, const float *restrict b,
              size_t ldb, float *restrict packed) {
    size_t full_cols = trans_b ? 0 : cols / nr * nr;
    if (full_cols > 0) {
        /* op(B) = B: the columns of a panel are contiguous floats of B. Walk
         * B row by row, as pack_a_panels walks Aᵀ: the 1000 × 784 input of
         * the first layer comes from L3, and these long reads are what the
         * prefetchers follow best (strips of 8 rows, panel by panel, were
         * 25% slower on 100×784×1000). */
        for (size_t p = 0; p < depth; p++) {
            const float *restrict in = b + p * ldb;
            for (size_t col0 = 0; col0 < full_cols; col0 += nr) {
                float *restrict out = packed + col0 * depth + p * nr;
                for (size_t j = 0; j < nr; j++) out[j] = in[col0 + j];
            }
        }
    }
    for (size_t col0 = trans_b ? 0 : full_cols; col0 < cols; col0 += nr) {
        size_t panel_cols = min_size(nr, cols - col0);
        float *restrict panel = packed + col0 * depth; /* depth × nr */
        if (!trans_b) {
            /* An edge panel: the columns that exist, then zeros. (A select
             * per column cannot load past the edge, so it does not
             * vectorise: 3% of 100×784×1000 went to the last 16 columns.) */
            for (size_t p = 0; p < depth; p++) {
                const float *restrict in = b + p * ldb + col0;
                float *restrict out = panel + p * nr;
                size_t j = 0;
                for (; j < panel_cols; j++) out[j] = in[j];
                for (; j < nr; j++) out[j] = 0.0f;
            }
        } else {
            /* op(B) = Bᵀ: column j of op(B) is row j of B, contiguous in k.
             * Whole groups of 4 columns go through 4 × 4 transposes; the
             * 1-3 columns left at an edge, in short strips of k so that the
             * source rows stay in L1; then zeros. */
            size_t quads = panel_cols / 4 * 4, p = 0;
#if defined(__SSE2__)
            /* With the SSE every x86-64 CPU has. */
            for (; p + 4 <= depth; p += 4) {
                for (size_t j = 0; j < quads; j += 4) {
                    const float *in = b + (col0 + j) * ldb + p;
                    __m128 row0 = _mm_loadu_ps(in), row1 = _mm_loadu_ps(in + ldb);
                    __m128 row2 = _mm_loadu_ps(in + 2 * ldb), row3 = _mm_loadu_ps(in + 3 * ldb);
                    _MM_TRANSPOSE4_PS(row0, row1, row2, row3);
                    float *out = panel + p * nr + j;
                    _mm_storeu_ps(out, row0);
                    _mm_storeu_ps(out + nr, row1);
                    _mm_storeu_ps(out + 2 * nr, row2);
                    _mm_storeu_ps(out + 3 * nr, row3);
                }
            }
#endif
            for (; p < depth; p++)
                for (size_t j = 0; j < quads; j++) panel[p * nr + j] = b[(col0 + j) * ldb + p];
            enum { STRIP = 16 };
            for (size_t p0 = 0; p0 < depth && quads < panel_cols; p0 += STRIP) {
                size_t strip = min_size(STRIP, depth - p0);
                for (size_t j = quads; j < panel_cols; j++) {
                    const float *restrict in = b + (col0 + j) * ldb + p0;
                    float *restrict out = panel + p0 * nr + j;
                    for (size_t q = 0; q < strip; q++) out[q * nr] = in[q];
                }
            }
            if (panel_cols < nr)
                for (size_t q = 0; q < depth; q++)
                    for (size_t j = panel_cols; j < nr; j++) panel[q * nr + j] = 0.0f;
        }
    }
}

typedef void (*pack_a_function)(bool trans_a, size_t rows, size_t depth, const float *restrict a,
                                size_t lda, float *restrict packed);
typedef void (*pack_b_function)(bool trans_b, size_t depth, size_t cols, const float *restrict b,
                                size_t ldb, float *restrict packed);

static void pack_a_6(bool trans_a, size_t rows, size_t depth, const float *restrict a,
                     size_t lda, float *restrict packed) {
    pack_a_panels(6, trans_a, rows, depth, a, lda, packed);
}
static void pack_a_10(bool trans_a, size_t rows, size_t depth, const float *restrict a,
                      size_t lda, float *restrict packed) {
    pack_a_panels(10, trans_a, rows, depth, a, lda, packed);
}
static void pack_b_16(bool trans_b, size_t depth, size_t cols, const float *restrict b,
                      size_t ldb, float *restrict packed) {
    pack_b_panels(16, trans_b, depth, cols, b, ldb, packed);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* The packing of the AVX2 family: the same floats as pack_a_6 and
 * pack_b_16, with 256-bit moves (the build has no CPU flag, so the
 * functions above copy with SSE), and op(B) = Bᵀ (an MLP's forward packs
 * its input rows this way) through 8 × 8 register transposes instead of
 * 4 × 4 SSE ones. */
__attribute__((target("avx2"))) static void pack_a_6_avx2(bool trans_a, size_t rows,
                                                          size_t depth, const float *restrict a,
                                                          size_t lda, float *restrict packed) {
    pack_a_panels(6, trans_a, rows, depth, a, lda, packed);
}
__attribute__((target("avx2"))) static void pack_b_16_avx2(bool trans_b, size_t depth,
                                                           size_t cols, const float *restrict b,
                                                           size_t ldb, float *restrict packed) {
    if (!trans_b) {
        pack_b_panels(16, false, depth, cols, b, ldb, packed);
        return;
    }
    /* each half of a panel (8 columns: 8 rows of B) transposed on its
     * own; columns past the edge zero */
    size_t padded = round_up(cols, 16);
    for (size_t col = 0; col < padded; col += 8) {
        float *half = packed + col / 16 * 16 * depth + col % 16;
        size_t rows = col < cols ? min_size(8, cols - col) : 0;
        lca_conv_transpose_8_avx2(rows > 0 ? b + col * ldb : b, ldb, half, 16, depth, rows);
    }
}
#else
#define pack_a_6_avx2 pack_a_6
#define pack_b_16_avx2 pack_b_16
#endif

/* 32-column panels for the AVX-512 kernel: op(B) = Bᵀ goes 16 × 16 blocks at a
 * time through register transposes (an MLP's forward packs its input rows
 * this way: 5% of its evaluation pass with 4 × 4 SSE transposes), edges
 * masked. op(B) = B: its edge panel with masked loads. The same floats as
 * pack_b_panels. */
static void pack_b_32_avx512(bool trans_b, size_t depth, size_t cols, const float *restrict b,
                             size_t ldb, float *restrict packed) {
    if (!trans_b) {
        size_t whole = cols / 32 * 32;
        pack_b_panels(32, false, depth, whole, b, ldb, packed);
        if (whole < cols)
            lca_gemm_copy_edge_avx512(b + whole, ldb, packed + whole * depth, depth, cols - whole);
        return;
    }
    size_t padded = round_up(cols, 32);
    for (size_t col = 0; col < padded; col += 16) {
        float *panel = packed + col / 32 * 32 * depth + col % 32; /* this half of a panel */
        size_t rows = col < cols ? min_size(16, cols - col) : 0; /* 0: zero padding */
        lca_gemm_transpose_16_avx512(rows > 0 ? b + col * ldb : b, ldb, panel, 32, depth, rows);
    }
}

/* ---------------------------------------------------------------- kernels */

/* A micro-kernel with its register tile (mr × nr), its cache blocks and the
 * packing that lays panels out for it:
 *   mc: the packed A block (mc × KC) stays in L2;
 *   nc: the packed B block (KC × nc) stays in L2 or L3.
 * mr, nr, mc, nc are at most MR_MAX, NR_MAX, MC_MAX, NC_MAX; mc and nc are
 * multiples of mr and nr, and nr of 4 (pack_b_panels). A kernel that
 * packs_b_in_tile overlaps the copy of B (b_copy) with its FMAs. */
typedef struct gemm_kernel {
    const char *name;
    size_t mr, nr, mc, nc;
    bool packs_b_in_tile;
    lca_micro_kernel tile;
    pack_a_function pack_a;
    pack_b_function pack_b;
    bool (*supported)(void);
} gemm_kernel;

static bool always_supported(void) { return true; }

/* In order of preference. The AVX-512 tile, 10×32, divides the layer sizes
 * of the nets (see gemm_kernel_avx512.c). The names are the kernel
 * families of LCA_KERNEL (one name per family: the GEMM micro-kernel and the
 * convolution kernels of a family are used together). */
static const gemm_kernel kernels[LCA_KERNEL_FAMILIES] = {
    [LCA_KERNEL_AVX512] = {"avx512", 10, 32, 200, 1024, true, lca_gemm_micro_avx512_10x32,
                           pack_a_10, pack_b_32_avx512, lca_gemm_avx512_supported},
    [LCA_KERNEL_AVX2] = {"avx2", 6, 16, 144, 512, false, lca_gemm_micro_avx2_6x16,
                         pack_a_6_avx2, pack_b_16_avx2, lca_gemm_avx2_supported},
    [LCA_KERNEL_PORTABLE] = {"portable", 6, 16, 144, 512, false, lca_gemm_micro_portable_6x16,
                             pack_a_6, pack_b_16, always_supported},
};

/* Chosen on first use: an index into kernels, + 1 (0 = not yet chosen).
 * Threads racing there compute the same answer, so a plain atomic store is
 * enough to make the choice thread-safe. */
static atomic_int chosen_kernel;

static int automatic_kernel(void) {
    int kernel = 0;
    while (!kernels[kernel].supported()) kernel++; /* the portable kernel always is */
    return kernel;
}

/* The family a name means, or -1. */
static int kernel_named(const char *name) {
    for (int kernel = 0; kernel < LCA_KERNEL_FAMILIES; kernel++)
        if (strcmp(name, kernels[kernel].name) == 0) return kernel;
    return -1;
}

/* LCA_KERNEL, read once per process (the first product or the first
 * lca_kernel_check): the family it names when this CPU runs it, else
 * (unset, empty, unknown or unsupported: lca_kernel_check says which) the
 * automatic choice. */
static atomic_int process_kernel; /* index + 1, 0 = not read yet */

static int process_default_kernel(void) {
    int known = atomic_load_explicit(&process_kernel, memory_order_acquire);
    if (known != 0) return known - 1;
    const char *value = getenv("LCA_KERNEL");
    int kernel = value != NULL && value[0] != '\0' ? kernel_named(value) : -1;
    if (kernel < 0 || !kernels[kernel].supported()) kernel = automatic_kernel();
    atomic_store_explicit(&process_kernel, kernel + 1, memory_order_release);
    return kernel;
}

static const gemm_kernel *current_kernel(void) {
    int chosen = atomic_load_explicit(&chosen_kernel, memory_order_acquire);
    if (chosen == 0) {
        chosen = process_default_kernel() + 1;
        atomic_store_explicit(&chosen_kernel, chosen, memory_order_release);
    }
    return &kernels[chosen - 1];
}

const char *lca_gemm_kernel_name(void) { return current_kernel()->name; }

lca_kernel_family lca_kernel_current(void) {
    return (lca_kernel_family)(current_kernel() - kernels);
}

lca_status lca_kernel_parse(const char *value, lca_kernel_family *family) {
    if (value == NULL || value[0] == '\0') {
        *family = (lca_kernel_family)automatic_kernel();
        return LCA_OK;
    }
    int kernel = kernel_named(value);
    if (kernel < 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "LCA_KERNEL=%.40s%s is not a kernel family: expected avx512, avx2 or "
                        "portable (or unset: the best this CPU runs, here %s)",
                        value, strlen(value) > 40 ? "…" : "", kernels[automatic_kernel()].name);
    if (!kernels[kernel].supported()) {
        char runs[64] = "";
        for (int other = automatic_kernel(); other < LCA_KERNEL_FAMILIES; other++) {
            if (!kernels[other].supported()) continue;
            if (runs[0] != '\0') strcat(runs, other + 1 == LCA_KERNEL_FAMILIES ? " or " : ", ");
            strcat(runs, kernels[other].name);
        }
        return lca_fail(LCA_ERR_UNSUPPORTED,
                        "LCA_KERNEL=%s: this CPU cannot run the %s kernels (it has no %s); use "
                        "%s, or leave LCA_KERNEL unset for the best it runs",
                        value, value, kernel == LCA_KERNEL_AVX512 ? "AVX-512F" : "AVX2 and FMA",
                        runs);
    }
    *family = (lca_kernel_family)kernel;
    return LCA_OK;
}

lca_status lca_kernel_check(void) {
    lca_kernel_family family;
    return lca_kernel_parse(getenv("LCA_KERNEL"), &family);
}

bool lca_gemm_select_kernel(const char *name) {
    int kernel = process_default_kernel();
    if (name != NULL) {
        kernel = kernel_named(name);
        if (kernel < 0 || !kernels[kernel].supported()) return false;
    }
    atomic_store_explicit(&chosen_kernel, kernel + 1, memory_order_release);
    return true;
}

/* ------------------------------------------------------------- workspace */

/* Packing buffers of one thread. Capacities are multiples of mr / nr. */
typedef struct packing_workspace {
    float *a_block;     /* a_rows × KC: op(A) block as mr-row panels */
    float *b_block;     /* KC × b_cols: op(B) block as nr-column panels */
    size_t a_rows, b_cols;
} packing_workspace;

/* Room for the blocks of any kernel, so a thread's buffers serve them all:
 * 1.2 MiB per thread (200 × 256 + 256 × 1024 floats). */
#define A_BLOCK_FLOATS ((size_t)MC_MAX * KC)
#define B_BLOCK_FLOATS ((size_t)KC * NC_MAX)

/* Each thread that multiplies allocates its buffers once, on its first
 * product, and keeps them: no allocation per call. A pthread key frees them
 * when the thread exits (pool workers live as long as the process); the
 * thread-local pointer is the fast path and keeps them visible to leak
 * checkers. */
static _Thread_local float *thread_packing_memory; /* A_BLOCK_FLOATS + B_BLOCK_FLOATS */
static pthread_key_t packing_key;
static pthread_once_t packing_key_once = PTHREAD_ONCE_INIT;
static bool packing_key_ready;

static void free_packing_memory(void *memory) { free(memory); }

static void create_packing_key(void) {
    packing_key_ready = pthread_key_create(&packing_key, free_packing_memory) == 0;
}

static float *thread_packing(void) {
    if (thread_packing_memory != NULL) return thread_packing_memory;
    pthread_once(&packing_key_once, create_packing_key);
    if (!packing_key_ready) return NULL;
    float *memory = aligned_alloc(64, (A_BLOCK_FLOATS + B_BLOCK_FLOATS) * sizeof(float));
    if (memory == NULL) return NULL;
    if (pthread_setspecific(packing_key, memory) != 0) {
        free(memory);
        return NULL;
    }
    thread_packing_memory = memory;
    return memory;
}

/* ------------------------------------------------------------ the product */

typedef struct gemm_problem {
    bool trans_a, trans_b;
    size_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    size_t lda, ldb, ldc;
    size_t k_block;        /* depth of every k block but the last */
    const gemm_kernel *kernel;
} gemm_problem;

/* op(A)[row][p] and op(B)[p][col] as addresses. */
static const float *op_a_at(const gemm_problem *g, size_t row, size_t p) {
    return g->trans_a ? g->a + p * g->lda + row : g->a + row * g->lda + p;
}
static const float *op_b_at(const gemm_problem *g, size_t p, size_t col) {
    return g->trans_b ? g->b + col * g->ldb + p : g->b + p * g->ldb + col;
}

/* Where one block of the product finds its operands: its place in C and k,
 * and whether full panels are read in place instead of packed. */
typedef struct gemm_block {
    size_t row0, col0, p0;  /* first row and column of C, first k */
    size_t mc, nc, depth;   /* its size */
    bool direct_a, direct_b;
    /* op(B) = B packed by the first tile of each column of tiles, not by
     * pack_b, so that its loads overlap with FMAs (measured with the
     * AVX-512 kernel: +16% on 50×100×1000, +19% on 40×196×500, even on
     * 100×784×1000). b_unpacked: this block's tiles are the first to read
     * its B. */
    bool fuse_b, b_unpacked;
    /* fuse_b with one block of rows: a panel is read only by its own column
     * of tiles, so every full panel takes the first panel's place, which
     * stays in L1, and the edge panel the next (writing out all of them
     * touched 400 KB per thread for an MLP's weight gradient) */
    bool b_one_panel;
    const float *a_block;   /* packed op(A): mc × depth as mr-row panels */
    float *b_block;         /* packed op(B): depth × nc as nr-column panels */
} gemm_block;

/* Operands read in place, when few tiles share a panel:
 * - op(B) when a region has at most two mr panels of rows: packing B would
 *   copy it for at most two uses. op(B) must not be transposed (the kernel
 *   wants its nr columns contiguous).
 * - op(A) when a region has at most DIRECT_A_MAX_COLS columns (the layers'
 *   widths, 10 to 100): then the rows of A stay in cache across the panels,
 *   and the kernel's FMAs hide their first load from memory, which a
 *   separate packing pass cannot (measured: +5-10% on 1000×100×784, +30% on
 *   1000×50×100). Rows of A (not Aᵀ) up to DIRECT_A_ROWS_MAX_COLS (measured
 *   with the AVX-512 kernel: +5% on LeNet's fc1, 1000×400×1960; Aᵀ in place
 *   was slower on 100×784×1000). Wider regions pack, which keeps large
 *   leading dimensions from thrashing L1 and the TLB. */
#define DIRECT_A_MAX_COLS 128
#define DIRECT_A_ROWS_MAX_COLS 512
#define DIRECT_B_MAX_PANELS 2

/* Where the block keeps the packed panel of op(B) of column col (with
 * b_one_panel: full panels first, an edge panel after them, or first when it
 * is the only one, as in the one-panel buffers of gemm_grid_region). */
static float *b_panel_of(const gemm_block *block, size_t col, size_t nr) {
    bool full = col + nr <= block->nc;
    size_t place = !block->b_one_panel ? col / nr : full || col == 0 ? 0 : 1;
    return block->b_block + place * nr * block->depth;
}

/* Pack what the block reads from the buffers: all its panels, or, for an
 * operand read in place, only the trailing partial panel (the kernel reads
 * whole panels, which do not exist past the edge of A or B). */
static void pack_block(const gemm_problem *g, const gemm_block *block, bool a_side,
                       const packing_workspace *work) {
    size_t mr = g->kernel->mr, nr = g->kernel->nr;
    if (a_side) {
        size_t first = block->direct_a ? block->mc / mr * mr : 0;
        if (first < block->mc)
            g->kernel->pack_a(g->trans_a, block->mc - first, block->depth,
                              op_a_at(g, block->row0 + first, block->p0), g->lda,
                              work->a_block + first * block->depth);
    } else {
        size_t first = block->direct_b || block->fuse_b ? block->nc / nr * nr : 0;
        if (first < block->nc)
            g->kernel->pack_b(g->trans_b, block->depth, block->nc - first,
                              op_b_at(g, block->p0, block->col0 + first), g->ldb,
                              b_panel_of(block, first, nr));
    }
}

/* The tile at (row, col) of a block: operands from the packed panels or,
 * for full panels of an operand read in place, from A or B. */
static void block_tile(const gemm_problem *g, const gemm_block *block, bool load_c, size_t row,
                       size_t col) {
    size_t mr = g->kernel->mr, nr = g->kernel->nr;
    size_t rows = min_size(mr, block->mc - row), cols = min_size(nr, block->nc - col);
    const float *a = block->a_block + row * block->depth; /* depth × mr */
    size_t a_row_step = 1, a_k_step = mr;
    if (block->direct_a && rows == mr) {
        a = op_a_at(g, block->row0 + row, block->p0);
        a_row_step = g->trans_a ? 1 : g->lda;
        a_k_step = g->trans_a ? g->lda : 1;
    }
    float *b_panel = b_panel_of(block, col, nr); /* depth × nr */
    const float *b = b_panel;
    float *b_copy = NULL;
    size_t b_k_step = nr;
    if (cols == nr && (block->direct_b || (block->fuse_b && block->b_unpacked && row == 0))) {
        b = op_b_at(g, block->p0, block->col0 + col);
        b_k_step = g->ldb;
        if (!block->direct_b) b_copy = b_panel;
    }
    g->kernel->tile(block->depth, a, a_row_step, a_k_step, b, b_k_step, b_copy, load_c,
                    g->c + (block->row0 + row) * g->ldc + block->col0 + col, g->ldc, rows, cols);
}

/* One mc × nc block of C, one mr × nr tile at a time: the B panel of a
 * column of tiles stays in L1 while the A panels stream from L2, and the
 * first tile of a column comes first (fuse_b). (Rows of tiles first, for A
 * read in place, measured no faster.) */
static void macro_kernel(const gemm_problem *g, const gemm_block *block, bool load_c) {
    size_t mr = g->kernel->mr, nr = g->kernel->nr;
    for (size_t col = 0; col < block->nc; col += nr)
        for (size_t row = 0; row < block->mc; row += mr) block_tile(g, block, load_c, row, col);
}

/* Rows [row_begin, row_end) × columns [col_begin, col_end) of C, all of k. */
static void gemm_region(const gemm_problem *g, size_t row_begin, size_t row_end,
                        size_t col_begin, size_t col_end, const packing_workspace *work) {
    size_t rows = row_end - row_begin, cols = col_end - col_begin;
    /* Even blocks, so that no block is a thin leftover. */
    size_t row_blocks = (rows + work->a_rows - 1) / work->a_rows;
    size_t col_blocks = (cols + work->b_cols - 1) / work->b_cols;
    size_t mc_max = round_up((rows + row_blocks - 1) / row_blocks, g->kernel->mr);
    size_t nc_max = round_up((cols + col_blocks - 1) / col_blocks, g->kernel->nr);

    gemm_block block = {
        /* alpha ≠ 1 is applied to the packed panels, so A is then packed */
        .direct_a = g->alpha == 1.0f &&
                    cols <= (g->trans_a ? DIRECT_A_MAX_COLS : DIRECT_A_ROWS_MAX_COLS),
        .direct_b = !g->trans_b && rows <= DIRECT_B_MAX_PANELS * g->kernel->mr,
        .a_block = work->a_block,
        .b_block = work->b_block,
    };
    block.fuse_b = g->kernel->packs_b_in_tile && !g->trans_b && !block.direct_b;
    block.b_one_panel = block.fuse_b && mc_max >= rows;
    for (block.col0 = col_begin; block.col0 < col_end; block.col0 += nc_max) {
        block.nc = min_size(nc_max, col_end - block.col0);
        for (block.p0 = 0; block.p0 < g->k; block.p0 += g->k_block) {
            block.depth = min_size(g->k_block, g->k - block.p0);
            /* the first k block starts from C unless beta = 0 (lca_sgemm
             * scaled it already); later blocks continue the chain in C */
            bool load_c = block.p0 > 0 || g->beta != 0.0f;
            pack_block(g, &block, false, work);
            for (block.row0 = row_begin; block.row0 < row_end; block.row0 += mc_max) {
                block.mc = min_size(mc_max, row_end - block.row0);
                block.b_unpacked = block.row0 == row_begin;
                pack_block(g, &block, true, work);
                if (g->alpha != 1.0f) {
                    float *packed = work->a_block;
                    size_t count = round_up(block.mc, g->kernel->mr) * block.depth;
                    for (size_t i = 0; i < count; i++) packed[i] *= g->alpha;
                }
                macro_kernel(g, &block, load_c);
            }
        }
    }
}

/* Region `index` of a parts_m × parts_n grid over C, on whichever thread
 * runs it. Regions follow tile boundaries and are as even as they can be. */
typedef struct gemm_grid {
    const gemm_problem *problem;
    size_t parts_m, parts_n;
} gemm_grid;

static void gemm_grid_region(const gemm_grid *grid, size_t index) {
    const gemm_problem *g = grid->problem;
    size_t mr = g->kernel->mr, nr = g->kernel->nr;
    size_t part_m = index / grid->parts_n, part_n = index % grid->parts_n;
    size_t panels_m = (g->m + mr - 1) / mr, panels_n = (g->n + nr - 1) / nr;
    size_t row_begin = min_size(g->m, part_m * panels_m / grid->parts_m * mr);
    size_t row_end = min_size(g->m, (part_m + 1) * panels_m / grid->parts_m * mr);
    size_t col_begin = min_size(g->n, part_n * panels_n / grid->parts_n * nr);
    size_t col_end = min_size(g->n, (part_n + 1) * panels_n / grid->parts_n * nr);
    if (row_begin >= row_end || col_begin >= col_end) return;

    packing_workspace work;
    float *memory = thread_packing();
    if (memory != NULL) {
        work = (packing_workspace){memory, memory + A_BLOCK_FLOATS, g->kernel->mc,
                                   g->kernel->nc};
        gemm_region(g, row_begin, row_end, col_begin, col_end, &work);
    } else {
        /* No heap: one tile's panels on the stack. Slower (more packing), but
         * the same k blocks and kernel, so the same bytes. */
        alignas(64) float a_panel[MR_MAX * KC]; /* KC × mr */
        alignas(64) float b_panel[KC * NR_MAX]; /* KC × nr; 42 KiB in all */
        work = (packing_workspace){a_panel, b_panel, mr, nr};
        gemm_region(g, row_begin, row_end, col_begin, col_end, &work);
    }
}

/* Split C for at most `threads` threads: among grids parts_m × parts_n
 * that fit the thread count and the tiles, take the one whose largest
 * region costs least, with packing (each region packs its rows of A, once
 * per nc columns, and its columns of B) counted at about one cycle per float
 * against 16 flop-pairs per cycle. */
static void choose_grid(const gemm_problem *g, size_t threads, gemm_grid *grid) {
    size_t mr = g->kernel->mr, nr = g->kernel->nr, nc = g->kernel->nc;
    size_t panels_m = (g->m + mr - 1) / mr, panels_n = (g->n + nr - 1) / nr;
    double best_cost = 0.0;
    grid->parts_m = 1;
    grid->parts_n = 1;
    for (size_t parts_m = 1; parts_m <= min_size(threads, panels_m); parts_m++) {
        size_t parts_n = min_size(threads / parts_m, panels_n);
        double rows = (double)((panels_m + parts_m - 1) / parts_m * mr);
        double cols = (double)((panels_n + parts_n - 1) / parts_n * nr);
        double col_blocks = (double)(((size_t)cols + nc - 1) / nc);
        double cost = rows * cols / 16.0 + rows * col_blocks + cols;
        if (best_cost == 0.0 || cost < best_cost) {
            best_cost = cost;
            grid->parts_m = parts_m;
            grid->parts_n = parts_n;
        }
    }
}

/* C = beta · C, where the product contributes nothing (k == 0, alpha == 0). */
static void scale_c(size_t m, size_t n, float beta, float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++) {
        float *row = c + i * ldc;
        if (beta == 0.0f) memset(row, 0, n * sizeof(float)); /* overwrites NaN */
        else if (beta != 1.0f) for (size_t j = 0; j < n; j++) row[j] *= beta;
    }
}

static void gemm_region_body(size_t index, void *context) {
    gemm_grid_region(context, index);
}

void lca_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
               const float *a, size_t lda, const float *b, size_t ldb, float beta,
               float *c, size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0 || alpha == 0.0f) {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    /* C ← beta·C once, then the terms accumulate into C (beta = 0: the
     * first k block does not read C; beta = 1: nothing to do) */
    if (beta != 0.0f && beta != 1.0f) scale_c(m, n, beta, c, ldc);
    size_t k_blocks = (k + KC - 1) / KC;
    gemm_problem problem = {
        .trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
        .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c,
        .lda = lda, .ldb = ldb, .ldc = ldc,
        .k_block = (k + k_blocks - 1) / k_blocks, /* even blocks of at most KC */
        .kernel = current_kernel(),
    };

    /* Inside a parallel loop or team the caller already owns the cores. */
    size_t threads = (size_t)lca_parallel_threads();
    double flops = 2.0 * (double)m * (double)n * (double)k;
    size_t worth_it = flops < MIN_FLOPS_PER_THREAD ? 1 : (size_t)(flops / MIN_FLOPS_PER_THREAD);
    if (threads > worth_it) threads = worth_it;
    gemm_grid grid = {.problem = &problem};
    choose_grid(&problem, threads, &grid);
    size_t regions = grid.parts_m * grid.parts_n;
    if (regions == 1) {
        gemm_grid_region(&grid, 0);
        return;
    }
    /* Threads split only m and n; each region runs all of k on one thread
     * (regions ≤ threads: one region per thread). */
    lca_parallel_for(regions, gemm_region_body, &grid);
}

/* --------------------------------------------------------------- reference */

void lca_sgemm_naive(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                     const float *a, size_t lda, const float *b, size_t ldb, float beta,
                     float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            double sum = 0.0;
            for (size_t p = 0; p < k; p++) {
                double a_ip = trans_a ? a[p * lda + i] : a[i * lda + p];
                double b_pj = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                sum += a_ip * b_pj;
            }
            double result = (double)alpha * sum;
            if (beta != 0.0f) result += (double)beta * c[i * ldc + j];
            c[i * ldc + j] = (float)result;
        }
    }
}
