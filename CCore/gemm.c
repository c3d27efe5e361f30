/* gemm.c: single-precision matrix product, in the layers of BLIS.
 *
 *   lca_sgemm            splits C into one region per thread (m and n only)
 *   gemm_region          loops over cache blocks: NC columns, KC depth, MC rows,
 *                        packing op(B) and op(A) blocks into per-thread buffers
 *   pack_a / pack_b      copy a block into MR-row / NR-column panels, zero-padded
 *   macro_kernel         walks a block one MR×NR tile at a time
 *   micro-kernel         one tile in registers (gemm_kernel_avx2.c,
 *                        gemm_kernel_portable.c), chosen once at run time
 *
 * When few tiles share a panel (narrow regions, as in the layers of the
 * nets), copying it costs more than it saves, and the kernel reads A, Aᵀ or
 * B in place instead (see DIRECT_A_MAX_COLS).
 *
 * Determinism: an element of C is C = beta·C + alpha·(sum over the first k
 * block), then C += alpha·(sum over each later block), each block summed by
 * the micro-kernel in k order with one FMA (or multiply-add) per term. The
 * k blocks depend only on k, and every tile, edge tiles and tiles read in
 * place too, goes through the same arithmetic, so the bytes of C do not
 * depend on the thread count or on where the region boundaries fall.
 *
 * Dimension letters as in internal.h: C[M×Nc] = op(A)[M×Kc] · op(B)[Kc×Nc].
 */
#include "internal.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h> /* part of every x86-64 CPU: no flag needed */
#endif

/* Register tile of the micro-kernels. */
#define MR 6
#define NR 16
/* Cache blocks, for a 32-48 KiB L1 and a 1-2 MiB L2:
 *   KC: a B micro-panel (KC × NR, 16 KiB) stays in L1 while the A panels
 *       stream past it;
 *   MC: the packed A block (MC × KC, 144 KiB) stays in L2;
 *   NC: the packed B block (KC × NC, 512 KiB) stays in L2 or L3.
 * KC also fixes the reduction order; changing it changes the bits of C. */
#define KC 256
#define MC 144
#define NC 512
/* Below this many flops per thread, a thread costs more than it saves. */
#define MIN_FLOPS_PER_THREAD (1u << 18)

#if MC % MR != 0 || NC % NR != 0
#error "MC and NC must be multiples of the register tile"
#endif

/* ---------------------------------------------------------------- kernels */

/* C[rows×cols] = alpha · op(A)[MR×depth] · op(B)[depth×NR] + beta · C for
 * rows ≤ MR, cols ≤ NR: the full tile is computed and the rows × cols
 * corner stored, with the same arithmetic for every element whatever the
 * edge. C is not read when beta == 0. The operands are
 *   op(A)[r][p] = a[r·a_row_step + p·a_k_step]   (packed panel: steps 1, MR)
 *   op(B)[p][j] = b[p·b_k_step + j]              (packed panel: step NR)
 * so a kernel can also read rows of A, Aᵀ or B in place; all MR rows and
 * NR columns it reads must then exist. */
typedef void (*micro_kernel)(size_t depth, const float *a, size_t a_row_step, size_t a_k_step,
                             const float *b, size_t b_k_step, float alpha, float beta,
                             float *restrict c, size_t ldc, size_t rows, size_t cols);

/* gemm_kernel_avx2.c and gemm_kernel_portable.c */
bool lca_gemm_avx2_supported(void);
void lca_gemm_micro_avx2_6x16(size_t depth, const float *a, size_t a_row_step, size_t a_k_step,
                              const float *b, size_t b_k_step, float alpha, float beta,
                              float *restrict c, size_t ldc, size_t rows, size_t cols);
void lca_gemm_micro_portable_6x16(size_t depth, const float *a, size_t a_row_step,
                                  size_t a_k_step, const float *b, size_t b_k_step,
                                  float alpha, float beta, float *restrict c, size_t ldc,
                                  size_t rows, size_t cols);
/* For tests and benchmarks: use the named kernel ("avx2-fma", "portable")
 * or, with NULL, the automatic choice. Returns false if this CPU cannot run
 * it. Not for use while another thread multiplies. */
bool lca_gemm_select_kernel(const char *name);

enum { KERNEL_UNCHOSEN = 0, KERNEL_PORTABLE = 1, KERNEL_AVX2_FMA = 2 };
/* Chosen on first use. Threads racing there compute the same answer, so a
 * plain atomic store is enough to make the choice thread-safe. */
static atomic_int chosen_kernel;

static int current_kernel(void) {
    int kernel = atomic_load_explicit(&chosen_kernel, memory_order_acquire);
    if (kernel == KERNEL_UNCHOSEN) {
        kernel = lca_gemm_avx2_supported() ? KERNEL_AVX2_FMA : KERNEL_PORTABLE;
        atomic_store_explicit(&chosen_kernel, kernel, memory_order_release);
    }
    return kernel;
}

const char *lca_gemm_kernel_name(void) {
    return current_kernel() == KERNEL_AVX2_FMA ? "avx2-fma" : "portable";
}

bool lca_gemm_select_kernel(const char *name) {
    int kernel;
    if (name == NULL) {
        kernel = lca_gemm_avx2_supported() ? KERNEL_AVX2_FMA : KERNEL_PORTABLE;
    } else if (strcmp(name, "portable") == 0) {
        kernel = KERNEL_PORTABLE;
    } else if (strcmp(name, "avx2-fma") == 0 && lca_gemm_avx2_supported()) {
        kernel = KERNEL_AVX2_FMA;
    } else {
        return false;
    }
    atomic_store_explicit(&chosen_kernel, kernel, memory_order_release);
    return true;
}

/* ---------------------------------------------------------------- packing */

static size_t min_size(size_t x, size_t y) { return x < y ? x : y; }
static size_t round_up(size_t x, size_t multiple) { return (x + multiple - 1) / multiple * multiple; }

/* Copy rows [0, rows) and k [0, depth) of op(A) into MR-row panels:
 * packed[panel][p][r] (panels × depth × MR) = op(A)[panel·MR + r][p], with
 * rows past `rows` zero. a points at op(A)[0][0] of the block. */
static void pack_a(bool trans_a, size_t rows, size_t depth, const float *restrict a,
                   size_t lda, float *restrict packed) {
    for (size_t row0 = 0; row0 < rows; row0 += MR) {
        size_t panel_rows = min_size(MR, rows - row0);
        float *restrict panel = packed + row0 * depth; /* depth × MR */
        if (trans_a && panel_rows == MR) {
            /* op(A) = Aᵀ: the rows of a panel are contiguous floats of A. */
            for (size_t p = 0; p < depth; p++) {
                const float *restrict in = a + p * lda + row0;
                float *restrict out = panel + p * MR;
                out[0] = in[0];
                out[1] = in[1];
                out[2] = in[2];
                out[3] = in[3];
                out[4] = in[4];
                out[5] = in[5];
            }
        } else if (trans_a) {
            /* Fixed trip counts with a select keep these short copies inline
             * (a variable-length loop becomes a memcpy call per k). */
            for (size_t p = 0; p < depth; p++) {
                const float *restrict in = a + p * lda + row0;
                float *restrict out = panel + p * MR;
                for (size_t r = 0; r < MR; r++) out[r] = r < panel_rows ? in[r] : 0.0f;
            }
        } else if (panel_rows == MR) {
            /* op(A) = A: six rows read side by side, contiguous in k; the
             * compiler turns this into 4×6 transposes. */
            const float *restrict r0 = a + row0 * lda;
            const float *restrict r1 = r0 + lda, *restrict r2 = r1 + lda;
            const float *restrict r3 = r2 + lda, *restrict r4 = r3 + lda;
            const float *restrict r5 = r4 + lda;
            for (size_t p = 0; p < depth; p++) {
                float *restrict out = panel + p * MR;
                out[0] = r0[p];
                out[1] = r1[p];
                out[2] = r2[p];
                out[3] = r3[p];
                out[4] = r4[p];
                out[5] = r5[p];
            }
        } else {
            for (size_t r = 0; r < MR; r++) {
                const float *restrict in = a + (row0 + r) * lda;
                if (r < panel_rows)
                    for (size_t p = 0; p < depth; p++) panel[p * MR + r] = in[p];
                else
                    for (size_t p = 0; p < depth; p++) panel[p * MR + r] = 0.0f;
            }
        }
    }
}

/* Copy k [0, depth) and columns [0, cols) of op(B) into NR-column panels:
 * packed[panel][p][j] (panels × depth × NR) = op(B)[p][panel·NR + j], with
 * columns past `cols` zero. b points at op(B)[0][0] of the block. */
static void pack_b(bool trans_b, size_t depth, size_t cols, const float *restrict b,
                   size_t ldb, float *restrict packed) {
    for (size_t col0 = 0; col0 < cols; col0 += NR) {
        size_t panel_cols = min_size(NR, cols - col0);
        float *restrict panel = packed + col0 * depth; /* depth × NR */
        if (!trans_b && panel_cols == NR) {
            /* op(B) = B: the columns of a panel are contiguous floats of B. */
            for (size_t p = 0; p < depth; p++) {
                const float *restrict in = b + p * ldb + col0;
                float *restrict out = panel + p * NR;
                for (size_t j = 0; j < NR; j++) out[j] = in[j];
            }
        } else if (!trans_b) {
            for (size_t p = 0; p < depth; p++) {
                const float *restrict in = b + p * ldb + col0;
                float *restrict out = panel + p * NR;
                for (size_t j = 0; j < NR; j++) out[j] = j < panel_cols ? in[j] : 0.0f;
            }
        } else if (panel_cols == NR) {
            /* op(B) = Bᵀ: column j of op(B) is row j of B, contiguous in k. */
            size_t p = 0;
#if defined(__SSE2__)
            /* 4 × 4 transposes with the SSE every x86-64 CPU has. */
            for (; p + 4 <= depth; p += 4) {
                for (size_t j = 0; j < NR; j += 4) {
                    const float *in = b + (col0 + j) * ldb + p;
                    __m128 row0 = _mm_loadu_ps(in), row1 = _mm_loadu_ps(in + ldb);
                    __m128 row2 = _mm_loadu_ps(in + 2 * ldb), row3 = _mm_loadu_ps(in + 3 * ldb);
                    _MM_TRANSPOSE4_PS(row0, row1, row2, row3);
                    float *out = panel + p * NR + j;
                    _mm_storeu_ps(out, row0);
                    _mm_storeu_ps(out + NR, row1);
                    _mm_storeu_ps(out + 2 * NR, row2);
                    _mm_storeu_ps(out + 3 * NR, row3);
                }
            }
#endif
            for (; p < depth; p++)
                for (size_t j = 0; j < NR; j++) panel[p * NR + j] = b[(col0 + j) * ldb + p];
        } else {
            /* op(B) = Bᵀ, an edge panel. Walk k in short strips so the
             * source rows stay in L1. */
            enum { STRIP = 16 };
            for (size_t p0 = 0; p0 < depth; p0 += STRIP) {
                size_t strip = min_size(STRIP, depth - p0);
                for (size_t j = 0; j < panel_cols; j++) {
                    const float *restrict in = b + (col0 + j) * ldb + p0;
                    float *restrict out = panel + p0 * NR + j;
                    for (size_t p = 0; p < strip; p++) out[p * NR] = in[p];
                }
            }
            for (size_t p = 0; p < depth; p++)
                for (size_t j = 0; j < NR; j++)
                    if (j >= panel_cols) panel[p * NR + j] = 0.0f;
        }
    }
}

/* ------------------------------------------------------------- workspace */

/* Packing buffers of one thread. Capacities are multiples of MR / NR. */
typedef struct packing_workspace {
    float *a_block;     /* a_rows × KC: op(A) block as MR-row panels */
    float *b_block;     /* KC × b_cols: op(B) block as NR-column panels */
    size_t a_rows, b_cols;
} packing_workspace;

#define A_BLOCK_FLOATS ((size_t)MC * KC)
#define B_BLOCK_FLOATS ((size_t)KC * NC)

/* Each thread that multiplies allocates its buffers once, on its first
 * product, and keeps them: no allocation per call. A pthread key frees them
 * when the thread exits (OpenMP workers live as long as the process); the
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
    micro_kernel kernel;
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
    const float *a_block;   /* packed op(A): mc × depth as MR-row panels */
    const float *b_block;   /* packed op(B): depth × nc as NR-column panels */
} gemm_block;

/* Operands read in place, when few tiles share a panel:
 * - op(B) when a region has at most two MR panels of rows: packing B would
 *   copy it for at most two uses. op(B) must not be transposed (the kernel
 *   wants its NR columns contiguous).
 * - op(A) when a region has at most 8 NR panels of columns (the layers'
 *   widths, 10 to 100): then the rows of A stay in cache across the panels,
 *   and the kernel's FMAs hide their first load from memory, which a
 *   separate packing pass cannot (measured: +5-10% on 1000×100×784, +30% on
 *   1000×50×100). Wider regions pack, which keeps large leading dimensions
 *   from thrashing L1 and the TLB. */
#define DIRECT_A_MAX_COLS (8 * NR)
#define DIRECT_B_MAX_ROWS (2 * MR)

/* Pack what the block reads from the buffers: all its panels, or, for an
 * operand read in place, only the trailing partial panel (the kernel reads
 * whole panels, which do not exist past the edge of A or B). */
static void pack_block(const gemm_problem *g, const gemm_block *block, bool a_side,
                       const packing_workspace *work) {
    if (a_side) {
        size_t first = block->direct_a ? block->mc / MR * MR : 0;
        if (first < block->mc)
            pack_a(g->trans_a, block->mc - first, block->depth,
                   op_a_at(g, block->row0 + first, block->p0), g->lda,
                   work->a_block + first * block->depth);
    } else {
        size_t first = block->direct_b ? block->nc / NR * NR : 0;
        if (first < block->nc)
            pack_b(g->trans_b, block->depth, block->nc - first,
                   op_b_at(g, block->p0, block->col0 + first), g->ldb,
                   work->b_block + first * block->depth);
    }
}

/* One mc × nc block of C, one MR × NR tile at a time: the B panel of a
 * column of tiles stays in L1 while the A panels stream from L2. */
static void macro_kernel(const gemm_problem *g, const gemm_block *block, float beta) {
    size_t a_row_step = g->trans_a ? 1 : g->lda, a_k_step = g->trans_a ? g->lda : 1;
    for (size_t col = 0; col < block->nc; col += NR) {
        size_t cols = min_size(NR, block->nc - col);
        const float *b = block->b_block + col * block->depth; /* depth × NR */
        size_t b_k_step = NR;
        if (block->direct_b && cols == NR) {
            b = op_b_at(g, block->p0, block->col0 + col);
            b_k_step = g->ldb;
        }
        for (size_t row = 0; row < block->mc; row += MR) {
            size_t rows = min_size(MR, block->mc - row);
            if (block->direct_a && rows == MR) {
                g->kernel(block->depth, op_a_at(g, block->row0 + row, block->p0), a_row_step,
                          a_k_step, b, b_k_step, g->alpha, beta,
                          g->c + (block->row0 + row) * g->ldc + block->col0 + col, g->ldc,
                          rows, cols);
            } else {
                g->kernel(block->depth, block->a_block + row * block->depth, 1, MR, b,
                          b_k_step, g->alpha, beta,
                          g->c + (block->row0 + row) * g->ldc + block->col0 + col, g->ldc,
                          rows, cols);
            }
        }
    }
}

/* Rows [row_begin, row_end) × columns [col_begin, col_end) of C, all of k. */
static void gemm_region(const gemm_problem *g, size_t row_begin, size_t row_end,
                        size_t col_begin, size_t col_end, const packing_workspace *work) {
    size_t rows = row_end - row_begin, cols = col_end - col_begin;
    /* Even blocks, so that no block is a thin leftover. */
    size_t row_blocks = (rows + work->a_rows - 1) / work->a_rows;
    size_t col_blocks = (cols + work->b_cols - 1) / work->b_cols;
    size_t mc_max = round_up((rows + row_blocks - 1) / row_blocks, MR);
    size_t nc_max = round_up((cols + col_blocks - 1) / col_blocks, NR);

    gemm_block block = {
        .direct_a = cols <= DIRECT_A_MAX_COLS,
        .direct_b = !g->trans_b && rows <= DIRECT_B_MAX_ROWS,
        .a_block = work->a_block,
        .b_block = work->b_block,
    };
    for (block.col0 = col_begin; block.col0 < col_end; block.col0 += nc_max) {
        block.nc = min_size(nc_max, col_end - block.col0);
        for (block.p0 = 0; block.p0 < g->k; block.p0 += g->k_block) {
            block.depth = min_size(g->k_block, g->k - block.p0);
            float beta = block.p0 == 0 ? g->beta : 1.0f; /* later k blocks accumulate */
            pack_block(g, &block, false, work);
            for (block.row0 = row_begin; block.row0 < row_end; block.row0 += mc_max) {
                block.mc = min_size(mc_max, row_end - block.row0);
                pack_block(g, &block, true, work);
                macro_kernel(g, &block, beta);
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
    size_t part_m = index / grid->parts_n, part_n = index % grid->parts_n;
    size_t panels_m = (g->m + MR - 1) / MR, panels_n = (g->n + NR - 1) / NR;
    size_t row_begin = min_size(g->m, part_m * panels_m / grid->parts_m * MR);
    size_t row_end = min_size(g->m, (part_m + 1) * panels_m / grid->parts_m * MR);
    size_t col_begin = min_size(g->n, part_n * panels_n / grid->parts_n * NR);
    size_t col_end = min_size(g->n, (part_n + 1) * panels_n / grid->parts_n * NR);
    if (row_begin >= row_end || col_begin >= col_end) return;

    packing_workspace work;
    float *memory = thread_packing();
    if (memory != NULL) {
        work = (packing_workspace){memory, memory + A_BLOCK_FLOATS, MC, NC};
        gemm_region(g, row_begin, row_end, col_begin, col_end, &work);
    } else {
        /* No heap: one tile's panels on the stack. Slower (more packing), but
         * the same k blocks and kernel, so the same bytes. */
        alignas(64) float a_panel[MR * KC]; /* KC × MR */
        alignas(64) float b_panel[KC * NR]; /* KC × NR */
        work = (packing_workspace){a_panel, b_panel, MR, NR};
        gemm_region(g, row_begin, row_end, col_begin, col_end, &work);
    }
}

/* Split C for at most `threads` threads: among grids parts_m × parts_n
 * that fit the thread count and the tiles, take the one whose largest
 * region costs least, with packing (each region packs its rows of A, once
 * per NC columns, and its columns of B) counted at about one cycle per float
 * against 16 flop-pairs per cycle. */
static void choose_grid(const gemm_problem *g, size_t threads, gemm_grid *grid) {
    size_t panels_m = (g->m + MR - 1) / MR, panels_n = (g->n + NR - 1) / NR;
    double best_cost = 0.0;
    grid->parts_m = 1;
    grid->parts_n = 1;
    for (size_t parts_m = 1; parts_m <= min_size(threads, panels_m); parts_m++) {
        size_t parts_n = min_size(threads / parts_m, panels_n);
        double rows = (double)((panels_m + parts_m - 1) / parts_m * MR);
        double cols = (double)((panels_n + parts_n - 1) / parts_n * NR);
        double col_blocks = (double)(((size_t)cols + NC - 1) / NC);
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

void lca_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
               const float *a, size_t lda, const float *b, size_t ldb, float beta,
               float *c, size_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0 || alpha == 0.0f) {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    size_t k_blocks = (k + KC - 1) / KC;
    gemm_problem problem = {
        .trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
        .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c,
        .lda = lda, .ldb = ldb, .ldc = ldc,
        .k_block = (k + k_blocks - 1) / k_blocks, /* even blocks of at most KC */
        .kernel = current_kernel() == KERNEL_AVX2_FMA ? lca_gemm_micro_avx2_6x16
                                                      : lca_gemm_micro_portable_6x16,
    };

    size_t threads = 1;
#ifdef _OPENMP
    /* Inside a parallel region the caller already owns the cores. */
    if (!omp_in_parallel()) threads = (size_t)lca_threads();
    double flops = 2.0 * (double)m * (double)n * (double)k;
    size_t worth_it = flops < MIN_FLOPS_PER_THREAD ? 1 : (size_t)(flops / MIN_FLOPS_PER_THREAD);
    if (threads > worth_it) threads = worth_it;
#endif
    gemm_grid grid = {.problem = &problem};
    choose_grid(&problem, threads, &grid);
    size_t regions = grid.parts_m * grid.parts_n;
    if (regions == 1) {
        gemm_grid_region(&grid, 0);
        return;
    }
    /* Threads split only m and n; each region runs all of k on one thread. */
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads((int)regions)
#endif
    for (size_t index = 0; index < regions; index++) gemm_grid_region(&grid, index);
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
