/* layers_conv.c: 2-D convolution, direct kernels and im2col feeding
 * lca_sgemm, and the naive reference. docs/kernels.md has the design and
 * the measurements.
 *
 * The examples of a call are taken in passes of G consecutive examples, G a
 * pure function of the shape (conv_sizes_of): as many as fit a fixed budget
 * of workspace, rounded down to a multiple of 4, at least one, at most N.
 * The workspace of a pass is col (CKK × G·OHW floats) and out (OC × G·OHW),
 * then an area of about the weights' size (dWᵀ or packed weights).
 *
 *   forward   each example on one thread. Stride 1, odd K, "same" (the
 *             3 × 3 and 5 × 5 layers of ResNet-20 and LeNet), FMA families:
 *             the input planes padded (or as K shifted copies) in the
 *             example's slot and the direct kernel (conv_kernel_*.c:
 *             4 output channels × 4-6 vectors of pixels in registers, the
 *             input read in place), + b. Strides of 2 or more (the
 *             3 × 3 stride-2 layers), FMA families: the same kernels on
 *             a phase layout of the input (the strided path below).
 *             Otherwise (1 × 1, portable C): im2col into the slot (CKK ×
 *             OHW), y_n = W[OC][CKK] · col_n straight into y, + b.
 *   dweight   dWᵀ[CKK][OC] (+)= Σ_n col_n · dy_nᵀ, the rows of CKK split
 *             over the threads; each thread walks every example. Direct and
 *             strided shapes (FMA families): its channels laid out as the
 *             forward kernels read them (padded planes, or the phase
 *             layout), dy_n packed, and weight-gradient tiles whose rows
 *             read the layout in place (lca_conv_wgrad). Otherwise: im2col
 *             of its rows, then one product with beta 1 after the first
 *             (and throughout with accumulate), reading col in place and
 *             packing only dy_n. dWᵀ is transposed into dweight at the end
 *             (and from it first, with accumulate). One chain of FMAs per
 *             weight, example by example, pixel by pixel (the GEMM's
 *             sequential accumulation), on every path: the same bytes.
 *   dx        each example on one thread. Direct shapes: the direct kernel
 *             on dy_n (laid out as the forward input) with the weights
 *             flipped and transposed; strided shapes: one direct kernel
 *             per output phase of dx on shifted copies of dy_n; otherwise
 *             dcol_n = Wᵀ · dy_n into its slot of col, then col2im.
 *   dbias     db[oc] (+)= Σ_n (Σ_p dy[n][oc][p] in float64, rounded), added
 *             example by example in float; threads over channels.
 *
 * Working one example per thread keeps its im2col or padded planes (at
 * most a few hundred KB for the nets) in that core's cache between the copy
 * and the product, and needs no synchronisation between them.
 *
 * Determinism. Each item writes its own memory and sums in a fixed order.
 * y is one chain over (c, kh, kw) from 0 (+ b) on every path, direct,
 * strided or GEMM; dx one chain over (oc, kh, kw) (direct; strided: of the
 * taps that reach it) or over oc then the kernel offsets (col2im); which
 * path a shape takes depends on the shape and the kernel family only, and
 * the two FMA families take the same paths, so they give the same bytes. y and dx are the same bytes however examples are
 * spread over threads, passes or chunks of a batch. dweight and dbias add
 * their terms into the output example by example (the GEMM's sequential
 * accumulation, internal.h), so they do not depend on the passes (G) or
 * the threads' rows either: a call over examples [0, n) gives the bytes of
 * calls over [0, a) and [a, n), the second with accumulate.
 *
 * Dimension letters as in internal.h (the key); CKK = C·KH·KW (the GEMM depth of the
 * forward pass), OHW = OH·OW.
 */
#include "layers.h"

#include <string.h>

/* Workspace of one pass, in floats: 1 Mi floats = 4 MiB. The forward pass
 * and dx work one example at a time on each thread, so their working set is
 * one example's im2col whatever the pass; the pass size matters for the
 * dweight product, which reads the whole pass and is fastest while that
 * stays in the caches (measured on a shared 2-core Xeon: passes of 1-4 MiB
 * beat 8-32 MiB by 1.2-2×). */
#define CONV_PASS_BUDGET_FLOATS ((size_t)1 << 20)
/* Passes hold a multiple of this many examples (when the budget allows
 * more than one), so that 1, 2 and 4 threads share a pass evenly. */
#define CONV_PASS_MULTIPLE 4

typedef struct conv_sizes {
    size_t extra;      /* floats after the passes: dWᵀ or packed weights */
    size_t ckk;        /* C·KH·KW: rows of col */
    size_t ohw;        /* OH·OW: columns per example */
    size_t hw;         /* H·W: input plane */
    size_t group;      /* G: examples per pass */
} conv_sizes;

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static conv_sizes conv_sizes_of(const lca_conv2d_shape *s) {
    conv_sizes z;
    z.ckk = s->c * s->kh * s->kw;
    z.ohw = s->oh * s->ow;
    z.hw = s->h * s->w;
    /* dWᵀ (CKK × OC), or the weights packed for the direct kernels:
     * forward ⌈OC/4⌉·4 × CKK, input gradient ⌈C/4⌉·4 × OC·KH·KW */
    size_t kk = s->kh * s->kw, oc4 = (s->oc + 3) / 4 * 4, c4 = (s->c + 3) / 4 * 4;
    z.extra = z.ckk * s->oc;
    if (oc4 * z.ckk > z.extra) z.extra = oc4 * z.ckk;
    if (c4 * s->oc * kk > z.extra) z.extra = c4 * s->oc * kk;
    size_t per_example = (z.ckk + s->oc) * z.ohw;
    size_t budget = CONV_PASS_BUDGET_FLOATS > z.extra ? CONV_PASS_BUDGET_FLOATS - z.extra : 0;
    size_t group = per_example == 0 ? s->n : budget / per_example;
    if (group >= CONV_PASS_MULTIPLE) group = group / CONV_PASS_MULTIPLE * CONV_PASS_MULTIPLE;
    if (group < 1) group = 1;
    z.group = min_size(group, s->n);
    return z;
}

/* The passes (G examples of col and out), then dWᵀ or the packed weights. */
size_t lca_conv2d_workspace_floats(const lca_conv2d_shape *s) {
    conv_sizes z = conv_sizes_of(s);
    return z.group * (z.ckk + s->oc) * z.ohw + z.extra;
}

/* Outputs o in [0, out) whose input coordinate o·S + k − P falls inside
 * [0, size): the range [*begin, *end). */
static void inside_range(size_t k, size_t pad, size_t stride, size_t size, size_t out,
                         size_t *begin, size_t *end) {
    size_t first = k >= pad ? 0 : (pad - k + stride - 1) / stride;
    size_t limit = size + pad; /* o·S + k < size + P */
    size_t last = k >= limit ? 0 : (limit - k + stride - 1) / stride;
    *end = min_size(last, out);
    *begin = min_size(first, *end);
}

/* ------------------------------------------------------------ pass items */

typedef void (*lca_conv_direct_fn)(const lca_conv_direct *d);

typedef struct conv_pass {
    const lca_conv2d_shape *s;
    conv_sizes z;
    size_t first;         /* first example of the pass */
    size_t examples;      /* examples in the pass (G, or fewer in the last) */
    size_t cols;          /* examples · OHW: the leading dimension of col and out */
    const float *x;       /* x[N][C][H][W] */
    const float *weight;  /* W[OC][CKK] */
    const float *bias;    /* OC or NULL */
    float *col;           /* CKK × cols */
    float *out;           /* OC × cols: dy gathered for dweight */
    float *y;             /* y[N][OC][OHW] */
    float *dx;            /* dx[N][C][H][W] */
    const float *dy;      /* dy[N][OC][OHW] */
    const float *packed;  /* weights packed for the direct kernel, or NULL */
    lca_conv_direct_fn direct;
    lca_conv_direct_fn phase; /* the strided / 1 × 1 path (phase_kernel) */
    bool phase_swap;      /* dx: the dy copies in the out slot, scratch in col */
} conv_pass;

/* ---------------------------------------------------------- direct path */

/* The direct kernel (conv_kernel_*.c) of the process's FMA family for a
 * shape: stride 1, an odd square kernel with "same" padding, and shifted
 * input planes that fit in an example's im2col slot (they are K/(K·K) of
 * it, plus the padding rows); else NULL: im2col and the GEMM (and always
 * for the portable family). Which shapes go direct depends on the shape
 * only, so that the two FMA families compute the same chains and give the
 * same bytes. */
bool lca_conv_direct_disabled;
bool lca_conv_phase_1x1; /* tests and benchmarks: 1 × 1 on the phase path too */

lca_lanes_fn lca_lanes_kernel(void) {
    lca_kernel_family family = lca_kernel_current();
    if (family == LCA_KERNEL_AVX512) return lca_lanes_avx512;
    if (family == LCA_KERNEL_AVX2) return lca_lanes_avx2;
    return NULL;
}

static lca_conv_direct_fn direct_kernel(const lca_conv2d_shape *s, size_t in_c) {
    if (lca_conv_direct_disabled) return NULL;
    if (s->stride != 1 || s->kh != s->kw || s->kh % 2 == 0 || s->kh < 3 || s->kh > LCA_CONV_TAPS ||
        s->pad_h != (s->kh - 1) / 2 || s->pad_w != s->pad_h || s->oh != s->h || s->ow != s->w)
        return NULL;
    size_t shifted = s->kw * in_c * (s->h + s->kh - 1) * s->w;
    if (shifted > s->c * s->kh * s->kw * s->oh * s->ow) return NULL;
    lca_kernel_family family = lca_kernel_current();
    if (family == LCA_KERNEL_AVX512) return lca_conv_direct_avx512;
    if (family == LCA_KERNEL_AVX2) return lca_conv_direct_avx2;
    return NULL;
}

/* The input of a direct kernel (lca_conv_direct's layouts) from a plane
 * stack (channels × H × W, output H × W, padding P = (K − 1)/2) into out:
 * with span, the K shifted copies out[kw][c][r][ow] = in[c][r − P][ow + kw −
 * P]; else the padded planes out[c][r][col] = in[c][r − P][col − P]; zero
 * outside the input. Fills d's layout fields. */
static void direct_input(lca_conv_direct *d, float *out, const float *in, size_t channels,
                         size_t h, size_t w, size_t k, bool span) {
    size_t pad = (k - 1) / 2, rows = h + k - 1, copies = span ? k : 1;
    size_t width = span ? w : w + k - 1;
    d->span = span;
    d->row = width;
    d->plane = rows * width;
    d->kw_step = span ? channels * rows * width : 1;
    d->kh_n = d->kw_n = k;
    for (size_t kh = 0; kh < k; kh++) d->kh_off[kh] = kh * width;
    d->xs = out;
    for (size_t kw = 0; kw < copies; kw++)
        for (size_t c = 0; c < channels; c++) {
            float *plane = out + (kw * channels + c) * rows * width;
            /* output columns col with 0 ≤ col + shift < w, shift = kw − P
             * (span) or −P (padded) */
            size_t lead = span ? kw : 0; /* col + lead − P is the input column */
            size_t begin = lead >= pad ? 0 : pad - lead;
            size_t end = w + pad <= lead ? 0 : w + pad - lead < width ? w + pad - lead : width;
            for (size_t r = 0; r < rows; r++) {
                float *row = plane + r * width;
                if (r < pad || r >= h + pad || begin >= end) {
                    memset(row, 0, width * sizeof(float));
                    continue;
                }
                const float *source = in + (c * h + r - pad) * w;
                for (size_t i = 0; i < begin; i++) row[i] = 0.0f;
                memcpy(row + begin, source + begin + lead - pad, (end - begin) * sizeof(float));
                for (size_t i = end; i < width; i++) row[i] = 0.0f;
            }
        }
}

/* The layout for a plane width: padded when the rows are whole vectors of
 * the kernel's lanes, else shifted copies, whose vectors span rows. */
static bool direct_span(const lca_conv_direct_fn kernel, size_t w) {
    size_t lanes = kernel == lca_conv_direct_avx512 ? 16 : 8;
    return w % lanes != 0;
}

/* wp[o/4][i][kh][kw][o%4] = w(o, i, kh, kw), zero for o ≥ outs. With flip
 * (the input gradient as a convolution of dy): o = c, i = oc, w(c, oc, kh,
 * kw) = W[oc][c][K−1−kh][K−1−kw]; else W[o][i][kh][kw]. */
static void pack_direct(float *wp, const float *weight, const lca_conv2d_shape *s, bool flip) {
    size_t kh_n = s->kh, kw_n = s->kw, kk = kh_n * kw_n; /* flip: square */
    size_t outs = flip ? s->c : s->oc, ins = flip ? s->oc : s->c;
    size_t outs4 = (outs + 3) / 4 * 4;
    for (size_t o = 0; o < outs4; o++)
        for (size_t i = 0; i < ins; i++)
            for (size_t kh = 0; kh < kh_n; kh++)
                for (size_t kw = 0; kw < kw_n; kw++) {
                    float v = 0.0f;
                    if (o < outs)
                        v = flip ? weight[((i * s->c + o) * kh_n + (kh_n - 1 - kh)) * kw_n +
                                          (kw_n - 1 - kw)]
                                 : weight[((o * s->c + i) * kh_n + kh) * kw_n + kw];
                    wp[((o / 4 * ins + i) * kk + kh * kw_n + kw) * 4 + o % 4] = v;
                }
}

/* ------------------------------------------------ strided and 1 × 1 path
 *
 * The shapes the stride-1 "same" kernels do not take and that have a
 * stride of 2 or more or a 1 × 1 kernel (ResNet-20's 3 × 3 stride-2 layers
 * and 1 × 1 stride-2 projections) run the same direct kernels on a phase
 * layout of the input: with S the stride, the rows split by phase (r mod
 * S) and the columns subsampled once per kw,
 *   xs[kw][i][ph][r][ow] = xpad(i, S·r + ph, S·ow + kw),
 *   ph < PH = min(S, KH), r < R = OH + (KH − 1)/S, ow < OW,
 * so that the tap (kh, kw) of output pixel p = oh·OW + ow is
 * xs[kw][i][kh mod S][oh + kh/S][ow]: a run over the flat output plane
 * (span) at kh_off[kh] = (kh mod S)·R·OW + (kh/S)·OW. y is then the chain
 * over (c, kh, kw) from 0, + bias: the im2col product's bytes. 1 × 1 with
 * stride 1 and no padding reads x in place.
 *
 * The input gradient, dx[c][S·a + ph][S·b + pw] for each phase (ph, pw),
 * is a stride-1 correlation of dy with the taps kh ≡ ph + P_h (mod S),
 * kw ≡ pw + P_w: oh = a + (ph + P_h − kh)/S. Per phase: dy copied once per
 * kw tap (shifted, zero outside), the phase's weights packed, the kernel
 * into a scratch plane, then scattered into dx (zero where no tap reaches).
 * Each dx element is one chain over (oc, kh, kw) of its taps. */

typedef struct phase_geometry {
    size_t phases, rows; /* PH, R */
    size_t floats;       /* KW · channels · PH · R · OW */
} phase_geometry;

static phase_geometry phase_geometry_of(const lca_conv2d_shape *s, size_t channels) {
    phase_geometry g;
    g.phases = s->stride < s->kh ? s->stride : s->kh;
    g.rows = s->oh + (s->kh - 1) / s->stride;
    g.floats = s->kw * channels * g.phases * g.rows * s->ow;
    return g;
}

static bool phase_in_place(const lca_conv2d_shape *s) {
    return s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad_h == 0 && s->pad_w == 0 &&
           s->oh == s->h && s->ow == s->w;
}

/* The phase kernel for a shape, or NULL (the shape is the stride-1 direct
 * kernels', or im2col + GEMM's). Depends on the shape and the family only. */
static lca_conv_direct_fn phase_kernel(const lca_conv2d_shape *s) {
    if (lca_conv_direct_disabled || s->stride == 0) return NULL;
    if (s->stride < 2 && !(s->kh == 1 && s->kw == 1)) return NULL;
    /* 1 × 1 (ResNet-20's projections) measured no faster than im2col +
     * GEMM on either family (docs/kernels.md): they stay there */
    if (s->kh * s->kw < 2 && !lca_conv_phase_1x1) return NULL;
    if (s->kh == 0 || s->kw == 0 || s->kh > LCA_CONV_TAPS || s->kw > LCA_CONV_TAPS) return NULL;
    if (s->oh == 0 || s->ow == 0 || s->stride > 4) return NULL;
    /* the layout fits the example's im2col slot */
    if (phase_geometry_of(s, s->c).floats > s->c * s->kh * s->kw * s->oh * s->ow) return NULL;
    lca_kernel_family family = lca_kernel_current();
    if (family == LCA_KERNEL_AVX512) return lca_conv_direct_avx512;
    if (family == LCA_KERNEL_AVX2) return lca_conv_direct_avx2;
    return NULL;
}

/* The phase layout of channels [0, channels) of x (an example's planes
 * from its channel c_first on) into out, and d's layout fields. */
static void phase_input(lca_conv_direct *d, float *out, const float *x, size_t channels,
                        const lca_conv2d_shape *s) {
    phase_geometry g = phase_geometry_of(s, channels);
    size_t stride = s->stride, ow_n = s->ow, plane = g.phases * g.rows * ow_n;
    d->span = true;
    d->row = ow_n;
    d->plane = plane;
    d->kh_n = s->kh;
    d->kw_n = s->kw;
    d->k = s->kh;
    for (size_t kh = 0; kh < s->kh; kh++)
        d->kh_off[kh] = kh % stride * g.rows * ow_n + kh / stride * ow_n;
    if (phase_in_place(s)) {
        d->xs = x;
        d->kw_step = 0;
        d->plane = s->h * s->w;
        return;
    }
    d->kw_step = channels * plane;
    d->xs = out;
    for (size_t kw = 0; kw < s->kw; kw++) {
        /* output columns [begin, end) read input columns inside the plane */
        size_t begin, end;
        inside_range(kw, s->pad_w, stride, s->w, ow_n, &begin, &end);
        for (size_t c = 0; c < channels; c++)
            for (size_t ph = 0; ph < g.phases; ph++)
                for (size_t r = 0; r < g.rows; r++) {
                    float *row = out + kw * d->kw_step + c * plane + (ph * g.rows + r) * ow_n;
                    size_t ih = stride * r + ph; /* padded row */
                    if (ih < s->pad_h || ih - s->pad_h >= s->h || begin >= end) {
                        memset(row, 0, ow_n * sizeof(float));
                        continue;
                    }
                    const float *in = x + (c * s->h + ih - s->pad_h) * s->w;
                    for (size_t o = 0; o < begin; o++) row[o] = 0.0f;
                    const float *from = in + begin * stride + kw - s->pad_w;
                    size_t count = end - begin;
                    float *restrict to = row + begin;
                    if (stride == 1) memcpy(to, from, count * sizeof(float));
                    else if (stride == 2) lca_gather2_avx2(to, from, count);
                    else
                        for (size_t o = 0; o < count; o++) to[o] = from[o * stride];
                    for (size_t o = end; o < ow_n; o++) row[o] = 0.0f;
                }
    }
}

/* The taps of phase ph of one axis: k ≡ ph + pad (mod S), ascending, and
 * their offsets d = (ph + pad − k)/S (descending); returns the count. */
static size_t phase_taps(size_t ph, size_t pad, size_t stride, size_t k, size_t *taps,
                         long *offsets) {
    size_t count = 0;
    for (size_t t = 0; t < k; t++) {
        long delta = (long)(ph + pad) - (long)t;
        long rem = delta % (long)stride;
        if (rem != 0) continue;
        taps[count] = t;
        offsets[count] = delta / (long)stride;
        count++;
    }
    return count;
}

/* The packed weights of every phase of the input gradient, one after the
 * other in (ph, pw) order: phase (ph, pw) as [⌈C/4⌉][OC][taps_h][taps_w][4]
 * with w(c, oc, a, b) = W[oc][c][kh_a][kw_b]. Σ over the phases ≤
 * ⌈C/4⌉·4 · OC·KH·KW floats. */
static void pack_phases(float *wp, const float *weight, const lca_conv2d_shape *s) {
    size_t c4 = (s->c + 3) / 4 * 4, kk = s->kh * s->kw;
    for (size_t ph = 0; ph < s->stride; ph++)
        for (size_t pw = 0; pw < s->stride; pw++) {
            size_t th[LCA_CONV_TAPS], tw[LCA_CONV_TAPS];
            long dh[LCA_CONV_TAPS], dw[LCA_CONV_TAPS];
            size_t nh = phase_taps(ph, s->pad_h, s->stride, s->kh, th, dh);
            size_t nw = phase_taps(pw, s->pad_w, s->stride, s->kw, tw, dw);
            size_t taps = nh * nw;
            for (size_t c = 0; c < c4; c++)
                for (size_t oc = 0; oc < s->oc; oc++)
                    for (size_t a = 0; a < nh; a++)
                        for (size_t b = 0; b < nw; b++)
                            wp[((c / 4 * s->oc + oc) * taps + a * nw + b) * 4 + c % 4] =
                                c < s->c ? weight[(oc * s->c + c) * kk + th[a] * s->kw + tw[b]]
                                         : 0.0f;
            wp += c4 * s->oc * taps;
        }
}

/* The common geometry of the input-gradient phases: every phase's output
 * plane is OHA × OWA = ⌈H/S⌉ × ⌈W/S⌉ (a phase with fewer rows or columns
 * computes one more and drops it), its taps read dy at row a + d_h and
 * column b + d_w, and the dy copies serve all phases: copy j holds dy
 * shifted by d_w = dw_max − j, rows from d_h = top on (zero outside). */
typedef struct phase_dx_geometry {
    size_t oha, owa, rows, copies; /* rows and copies of the dy copies */
    long top, dw_max;
    size_t floats_copies, floats_scratch;
    bool all_covered; /* every phase has taps: dx needs no zeroing */
} phase_dx_geometry;

static phase_dx_geometry phase_dx_geometry_of(const lca_conv2d_shape *s) {
    phase_dx_geometry g = {0};
    size_t stride = s->stride;
    g.oha = (s->h + stride - 1) / stride;
    g.owa = (s->w + stride - 1) / stride;
    long dh_lo = 0, dh_hi = 0, dw_lo = 0, dw_hi = 0;
    bool any = false;
    g.all_covered = true;
    for (size_t ph = 0; ph < stride && ph < s->h; ph++)
        for (size_t pw = 0; pw < stride && pw < s->w; pw++) {
            size_t th[LCA_CONV_TAPS], tw[LCA_CONV_TAPS];
            long dh[LCA_CONV_TAPS], dw[LCA_CONV_TAPS];
            size_t nh = phase_taps(ph, s->pad_h, stride, s->kh, th, dh);
            size_t nw = phase_taps(pw, s->pad_w, stride, s->kw, tw, dw);
            if (nh == 0 || nw == 0) {
                g.all_covered = false;
                continue;
            }
            if (!any || dh[nh - 1] < dh_lo) dh_lo = dh[nh - 1];
            if (!any || dh[0] > dh_hi) dh_hi = dh[0];
            if (!any || dw[nw - 1] < dw_lo) dw_lo = dw[nw - 1];
            if (!any || dw[0] > dw_hi) dw_hi = dw[0];
            any = true;
        }
    if (!any) return g;
    g.top = dh_lo;
    g.dw_max = dw_hi;
    g.rows = g.oha + (size_t)(dh_hi - dh_lo);
    g.copies = (size_t)(dw_hi - dw_lo) + 1;
    g.floats_copies = g.copies * s->oc * g.rows * g.owa;
    g.floats_scratch = s->c * g.oha * g.owa;
    return g;
}

/* dx of one example on the phase path: dy_n (OC × OH × OW), dx_n (C × H ×
 * W), the phases' packed weights, two buffers of the example's slots. */
static void phase_dx_example(lca_conv_direct_fn kernel, const lca_conv2d_shape *s,
                             const float *wp, const float *dy, float *dx, float *copies,
                             float *scratch) {
    size_t c4 = (s->c + 3) / 4 * 4, stride = s->stride;
    if (phase_in_place(s)) { /* 1 × 1, stride 1: dx_n = Wᵀ · dy_n, in place */
        lca_conv_direct d = {.in_c = s->oc, .out_c = s->c, .oh = s->h, .ow = s->w, .k = 1,
                             .row = s->w, .plane = s->oh * s->ow, .kw_step = 0, .kh_n = 1,
                             .kw_n = 1, .span = true, .xs = dy, .wp = wp, .y = dx};
        d.kh_off[0] = 0;
        kernel(&d);
        return;
    }
    phase_dx_geometry g = phase_dx_geometry_of(s);
    if (!g.all_covered) memset(dx, 0, s->c * s->h * s->w * sizeof(float));
    if (g.copies == 0) return;
    size_t plane = g.rows * g.owa, copy = s->oc * plane;
    /* copies[j][oc][r][col] = dy[oc][r + top][col + dw_max − j], zero outside */
    for (size_t j = 0; j < g.copies; j++) {
        long shift = g.dw_max - (long)j;
        long lo = -shift > 0 ? -shift : 0, hi = (long)s->ow - shift;
        if (hi > (long)g.owa) hi = (long)g.owa;
        if (hi < 0) hi = 0;
        if (lo > hi) lo = hi;
        for (size_t oc = 0; oc < s->oc; oc++)
            for (size_t r = 0; r < g.rows; r++) {
                float *row = copies + j * copy + oc * plane + r * g.owa;
                long source_r = (long)r + g.top;
                if (source_r < 0 || source_r >= (long)s->oh) {
                    memset(row, 0, g.owa * sizeof(float));
                    continue;
                }
                const float *in = dy + (oc * s->oh + (size_t)source_r) * s->ow;
                for (long col = 0; col < lo; col++) row[col] = 0.0f;
                if (hi > lo) memcpy(row + lo, in + lo + shift, (size_t)(hi - lo) * sizeof(float));
                for (long col = hi; col < (long)g.owa; col++) row[col] = 0.0f;
            }
    }
    for (size_t ph = 0; ph < stride; ph++)
        for (size_t pw = 0; pw < stride; pw++) {
            size_t th[LCA_CONV_TAPS], tw[LCA_CONV_TAPS];
            long dh[LCA_CONV_TAPS], dw[LCA_CONV_TAPS];
            size_t nh = phase_taps(ph, s->pad_h, stride, s->kh, th, dh);
            size_t nw = phase_taps(pw, s->pad_w, stride, s->kw, tw, dw);
            const float *phase_wp = wp;
            wp += c4 * s->oc * nh * nw;
            if (nh == 0 || nw == 0 || ph >= s->h || pw >= s->w) continue;
            /* taps b read copy dw_max − dw[b] = (dw_max − dw[0]) + b */
            lca_conv_direct d = {.in_c = s->oc, .out_c = s->c, .oh = g.oha, .ow = g.owa,
                                 .k = nh, .row = g.owa, .plane = plane, .kw_step = copy,
                                 .kh_n = nh, .kw_n = nw, .span = true,
                                 .xs = copies + (size_t)(g.dw_max - dw[0]) * copy,
                                 .wp = phase_wp, .y = scratch};
            for (size_t a = 0; a < nh; a++) d.kh_off[a] = (size_t)(dh[a] - g.top) * g.owa;
            kernel(&d);
            size_t oh = (s->h - ph + stride - 1) / stride, ow = (s->w - pw + stride - 1) / stride;
            for (size_t c = 0; c < s->c; c++)
                for (size_t a = 0; a < oh; a++) {
                    const float *restrict from = scratch + (c * g.oha + a) * g.owa;
                    float *restrict to = dx + (c * s->h + ph + stride * a) * s->w + pw;
                    if (stride == 2)
                        for (size_t b = 0; b < ow; b++) to[2 * b] = from[b];
                    else
                        for (size_t b = 0; b < ow; b++) to[b * stride] = from[b];
                }
        }
}

/* One row (c, kh, kw) of the im2col of example `first + n`: the input
 * plane shifted by (kh − P, kw − P) and subsampled by S, OHW floats at
 * row: a rectangle of input rows copied into place, zeros around it
 * (written first, in one memset, when the rectangle does not cover the
 * row). */
static void im2col_row(const conv_pass *p, size_t n, size_t c, size_t kh, size_t kw,
                       float *row) {
    const lca_conv2d_shape *s = p->s;
    const float *plane = p->x + ((p->first + n) * s->c + c) * p->z.hw; /* H × W */
    size_t oh_begin, oh_end, ow_begin, ow_end;
    inside_range(kh, s->pad_h, s->stride, s->h, s->oh, &oh_begin, &oh_end);
    inside_range(kw, s->pad_w, s->stride, s->w, s->ow, &ow_begin, &ow_end);
    size_t rows = oh_end - oh_begin, inside = ow_end - ow_begin;
    if (rows < s->oh || inside < s->ow) memset(row, 0, p->z.ohw * sizeof(float));
    if (rows == 0 || inside == 0) return;
    /* output (oh_begin, ow_begin) reads input row oh_begin·S + kh − P,
     * column ow_begin·S + kw − P */
    const float *in = plane + (oh_begin * s->stride + kh - s->pad_h) * s->w +
                      (ow_begin * s->stride + kw - s->pad_w);
    float *out = row + oh_begin * s->ow + ow_begin;
    size_t in_step = s->stride * s->w;
    if (s->stride == 1) {
        for (size_t r = 0; r < rows; r++, in += in_step, out += s->ow)
            memcpy(out, in, inside * sizeof(float));
    } else {
        for (size_t r = 0; r < rows; r++, in += in_step, out += s->ow)
            for (size_t i = 0; i < inside; i++) out[i] = in[i * s->stride];
    }
}

/* im2col of example `first + n`, channel c: its KH·KW rows (c, kh, kw) of
 * the example's OHW columns, at cols + row · ld. */
static void im2col_channel(const conv_pass *p, size_t n, size_t c, float *cols, size_t ld) {
    const lca_conv2d_shape *s = p->s;
    for (size_t kh = 0; kh < s->kh; kh++)
        for (size_t kw = 0; kw < s->kw; kw++)
            im2col_row(p, n, c, kh, kw, cols + ((c * s->kh + kh) * s->kw + kw) * ld);
}

/* col2im: dx[first + n][c] = Σ over (kh, kw) of its im2col rows (at
 * cols + row · ld), summed in (kh, kw, oh, ow) order. */
static void col2im_channel(const conv_pass *p, size_t n, size_t c, const float *cols,
                           size_t ld) {
    const lca_conv2d_shape *s = p->s;
    float *plane = p->dx + ((p->first + n) * s->c + c) * p->z.hw; /* H × W */
    memset(plane, 0, p->z.hw * sizeof(float));
    for (size_t kh = 0; kh < s->kh; kh++) {
        size_t oh_begin, oh_end;
        inside_range(kh, s->pad_h, s->stride, s->h, s->oh, &oh_begin, &oh_end);
        for (size_t kw = 0; kw < s->kw; kw++) {
            size_t ow_begin, ow_end;
            inside_range(kw, s->pad_w, s->stride, s->w, s->ow, &ow_begin, &ow_end);
            size_t rows = oh_end - oh_begin, inside = ow_end - ow_begin;
            if (rows == 0 || inside == 0) continue;
            const float *in =
                cols + ((c * s->kh + kh) * s->kw + kw) * ld + oh_begin * s->ow + ow_begin;
            float *out = plane + (oh_begin * s->stride + kh - s->pad_h) * s->w +
                         (ow_begin * s->stride + kw - s->pad_w);
            size_t out_step = s->stride * s->w;
            for (size_t r = 0; r < rows; r++, in += s->ow, out += out_step) {
                const float *restrict from = in;
                float *restrict to = out;
                if (s->stride == 1) {
                    for (size_t i = 0; i < inside; i++) to[i] += from[i];
                } else {
                    for (size_t i = 0; i < inside; i++) to[i * s->stride] += from[i];
                }
            }
        }
    }
}

/* Forward of example n of the pass, on one thread: im2col into its own
 * slot, then y[first + n] = W · col_n + b straight into y. */
static void forward_example(size_t n, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t ohw = p->z.ohw;
    float *col = p->col + n * p->z.ckk * ohw; /* CKK × OHW */
    float *y = p->y + (p->first + n) * s->oc * ohw; /* OC × OHW */
    if (p->direct != NULL) {
        /* the input planes laid out in the example's slot, then the kernel */
        lca_conv_direct d = {.in_c = s->c, .out_c = s->oc, .oh = s->oh, .ow = s->ow, .k = s->kh,
                             .wp = p->packed, .bias = p->bias, .y = y};
        direct_input(&d, col, p->x + (p->first + n) * s->c * p->z.hw, s->c, s->h, s->w, s->kh,
                     direct_span(p->direct, s->w));
        p->direct(&d);
        return;
    }
    if (p->phase != NULL) {
        lca_conv_direct d = {.in_c = s->c, .out_c = s->oc, .oh = s->oh, .ow = s->ow,
                             .wp = p->packed, .bias = p->bias, .y = y};
        phase_input(&d, col, p->x + (p->first + n) * s->c * p->z.hw, s->c, s);
        p->phase(&d);
        return;
    }
    for (size_t c = 0; c < s->c; c++) im2col_channel(p, n, c, col, ohw);
    /* y_n[OC][OHW] = W[OC][CKK] · col_n[CKK][OHW] */
    lca_sgemm(false, false, s->oc, ohw, p->z.ckk, 1.0f, p->weight, p->z.ckk, col, ohw, 0.0f, y,
              ohw);
    if (p->bias != NULL)
        for (size_t oc = 0; oc < s->oc; oc++) {
            float b = p->bias[oc], *row = y + oc * ohw;
            for (size_t i = 0; i < ohw; i++) row[i] += b;
        }
}

/* dweight, transposed: dWᵀ[CKK][OC] (+)= Σ_n col_n[CKK][OHW] · dy_nᵀ, rows
 * of CKK split over the threads. Each part owns rows [row_begin, row_end)
 * of dWᵀ and walks every example itself: the im2col of its rows of the
 * example into its own buffer, then one product (rows × OC × OHW) with
 * beta 1 after the first example. No thread waits for another between
 * examples, the big operand (col) is read in place, and only dy_n (OC ×
 * OHW) is packed. Every element is one chain of FMAs over (n, pixel) in
 * order (sequential accumulation): the bytes of the product over the
 * concatenated examples, whatever the parts. */
typedef struct weight_parts {
    conv_pass pass;        /* s, z, x; first = 0 */
    const float *dy;
    float *dwt;            /* CKK × OC */
    float *col;            /* CKK × OHW: part p's rows at its row_begin */
    size_t parts;
    bool accumulate;
    /* the direct path (weight_part_direct): its tile, rows and columns */
    void (*wgrad)(size_t depth, const float *const *a, const float *b, size_t nr, bool load_c,
                  float *c, size_t ldc, size_t rows, size_t cols);
    size_t mr, nr;
    /* the phase path (weight_part_phase): each part's buffer */
    bool phase;
    float *area;          /* the pass area, `share` floats per part */
    size_t share;
} weight_parts;

/* out[q·nr + j] = in[j·in_step + q] for q < depth and j < nr, zero for j ≥
 * cols: dy packed for the weight-gradient tiles, 16 × 16 (AVX-512) or 8 × 8
 * (AVX2) blocks transposed in registers. */
static void pack_columns(float *out, size_t nr, const float *in, size_t in_step, size_t depth,
                         size_t cols) {
    bool wide = lca_kernel_current() == LCA_KERNEL_AVX512;
    size_t block = wide ? 16 : 8;
    for (size_t j0 = 0; j0 < nr; j0 += block) {
        size_t rows = cols > j0 ? (cols - j0 < block ? cols - j0 : block) : 0;
        const float *from = rows > 0 ? in + j0 * in_step : in;
        if (wide) lca_gemm_transpose_16_avx512(from, in_step, out + j0, nr, depth, rows);
        else lca_conv_transpose_8_avx2(from, in_step, out + j0, nr, depth, rows);
    }
}

/* Rows of part `index`: even shares, at multiples of the GEMM tile's rows
 * (10 for AVX-512, 6 otherwise) where there are enough rows (the shares
 * change no byte, only the balance: 144 rows split 70 + 74). */
static void weight_part_rows(const weight_parts *w, size_t index, size_t *begin, size_t *end) {
    size_t tile = lca_kernel_current() == LCA_KERNEL_AVX512 ? 10 : 6;
    size_t ckk = w->pass.z.ckk, unit = ckk >= tile * w->parts ? tile : 1;
    size_t units = (ckk + unit - 1) / unit;
    *begin = min_size(ckk, index * units / w->parts * unit);
    *end = min_size(ckk, (index + 1) * units / w->parts * unit);
}

/* The rows [row_begin, row_end) of dWᵀ on the direct path, when its
 * buffers fit the part's share of col: for each example, the padded planes
 * of the part's channels and dy_n packed over the padded pixel grid (zero
 * off the outputs, nr columns per tile), then lca_conv_wgrad tiles whose
 * rows read the planes in place, shifted by (kh, kw). The chains are those
 * of the im2col product (internal.h, lca_conv_wgrad): the same bytes. */
/* The tiles of dWᵀ's rows [row_begin, row_end) for one example, shared by
 * the direct and the phase paths: row (c, kh, kw) reads the input layout
 * xs at (c − c_lo)·plane + kh_off[kh] + kw·kw_step (kh_off NULL: kh·kh_step)
 * over depth pixels, against dy packed in bp (tiles × nr × depth). */
static void weight_rows(const weight_parts *w, size_t row_begin, size_t row_end, size_t c_lo,
                        const float *xs, size_t plane, const size_t *kh_off, size_t kh_step,
                        size_t kw_step, const float *bp, size_t depth, bool load_c) {
    const lca_conv2d_shape *s = w->pass.s;
    size_t kk = s->kh * s->kw, nr = w->nr, mr = w->mr, tiles = (s->oc + nr - 1) / nr;
    for (size_t r0 = row_begin; r0 < row_end; r0 += mr) {
        size_t rows = row_end - r0 < mr ? row_end - r0 : mr;
        const float *a[10];
        for (size_t r = 0; r < mr; r++) {
            size_t row = r0 + (r < rows ? r : rows - 1);
            size_t c = row / kk, kh = row % kk / s->kw, kw = row % s->kw;
            a[r] = xs + (c - c_lo) * plane + (kh_off ? kh_off[kh] : kh * kh_step) + kw * kw_step;
        }
        for (size_t t = 0; t < tiles; t++) {
            size_t cols = s->oc - t * nr < nr ? s->oc - t * nr : nr;
            w->wgrad(depth, a, bp + t * nr * depth, nr, load_c, w->dwt + r0 * s->oc + t * nr,
                     s->oc, rows, cols);
        }
    }
}

static bool weight_part_direct(const weight_parts *w, size_t row_begin, size_t row_end) {
    const lca_conv2d_shape *s = w->pass.s;
    if (w->wgrad == NULL) return false;
    size_t k = s->kh, kk = k * k, ohw = w->pass.z.ohw;
    size_t wp = s->w + k - 1, plane = (s->h + k - 1) * wp;
    size_t depth = (s->oh - 1) * wp + s->ow; /* the padded grid up to the last output */
    size_t nr = w->nr, tiles = (s->oc + nr - 1) / nr;
    size_t c_lo = row_begin / kk, c_hi = (row_end - 1) / kk + 1;
    size_t planes = (c_hi - c_lo) * plane, packed = tiles * nr * depth;
    if (planes + packed > (row_end - row_begin) * ohw) return false;
    float *xpad = w->col + row_begin * ohw, *bp = xpad + planes;
    for (size_t n = 0; n < s->n; n++) {
        /* the part's channels, padded (rows H + K − 1, width W + K − 1) */
        const float *x = w->pass.x + (n * s->c + c_lo) * w->pass.z.hw;
        size_t pad = (k - 1) / 2;
        memset(xpad, 0, planes * sizeof(float));
        for (size_t c = 0; c < c_hi - c_lo; c++)
            for (size_t r = 0; r < s->h; r++)
                memcpy(xpad + c * plane + (r + pad) * wp + pad, x + (c * s->h + r) * s->w,
                       s->w * sizeof(float));
        /* bp[t][q][j] = dy_n[t·nr + j][oh][ow] at q = oh·(W + K − 1) + ow */
        memset(bp, 0, packed * sizeof(float));
        const float *dy = w->dy + n * s->oc * ohw;
        /* row by row of the outputs, blocks of channels × pixels
         * transposed in registers */
        for (size_t t = 0; t < tiles; t++) {
            size_t cols = s->oc - t * nr < nr ? s->oc - t * nr : nr;
            const float *from = dy + t * nr * ohw;
            for (size_t oh = 0; oh < s->oh; oh++)
                pack_columns(bp + (t * depth + oh * wp) * nr, nr, from + oh * s->ow, ohw, s->ow,
                             cols);
        }
        weight_rows(w, row_begin, row_end, c_lo, xpad, plane, NULL, wp, 1, bp, depth,
                    n > 0 || w->accumulate);
    }
    return true;
}

/* Floats the phase path of rows [row_begin, row_end) needs: the phase
 * layout of its channels and dy_n packed (tiles × nr × OHW). */
static size_t weight_phase_need(const weight_parts *w, size_t row_begin, size_t row_end) {
    const lca_conv2d_shape *s = w->pass.s;
    size_t kk = s->kh * s->kw, c_lo = row_begin / kk, c_hi = (row_end - 1) / kk + 1;
    size_t planes = phase_in_place(s) ? 0 : phase_geometry_of(s, c_hi - c_lo).floats;
    return planes + (s->oc + w->nr - 1) / w->nr * w->nr * w->pass.z.ohw;
}

/* The rows [row_begin, row_end) of dWᵀ on the phase path, in the part's
 * buffer: for each example, the phase layout of the part's channels and dy_n
 * packed, then lca_conv_wgrad tiles whose rows (c, kh, kw) read the layout
 * in place at kh_off[kh] + kw·kw_step, over the OH·OW output pixels in
 * order: the im2col product's chains, the same bytes. */
static void weight_part_phase(const weight_parts *w, size_t index, size_t row_begin,
                              size_t row_end) {
    const lca_conv2d_shape *s = w->pass.s;
    size_t kk = s->kh * s->kw, ohw = w->pass.z.ohw, nr = w->nr;
    size_t c_lo = row_begin / kk, c_hi = (row_end - 1) / kk + 1, tiles = (s->oc + nr - 1) / nr;
    float *buffer = w->area + index * w->share;
    float *bp = buffer + (phase_in_place(s) ? 0 : phase_geometry_of(s, c_hi - c_lo).floats);
    for (size_t n = 0; n < s->n; n++) {
        lca_conv_direct d = {0};
        phase_input(&d, buffer, w->pass.x + (n * s->c + c_lo) * w->pass.z.hw, c_hi - c_lo, s);
        /* bp[t][q][j] = dy_n[t·nr + j][q], zero past OC */
        const float *dy = w->dy + n * s->oc * ohw;
        for (size_t t = 0; t < tiles; t++) {
            size_t cols = s->oc - t * nr < nr ? s->oc - t * nr : nr;
            pack_columns(bp + t * nr * ohw, nr, dy + t * nr * ohw, ohw, ohw, cols);
        }
        weight_rows(w, row_begin, row_end, c_lo, d.xs, d.plane, d.kh_off, 0, d.kw_step, bp, ohw,
                    n > 0 || w->accumulate);
    }
}

static void weight_part(size_t index, void *context) {
    const weight_parts *w = context;
    const lca_conv2d_shape *s = w->pass.s;
    size_t row_begin, row_end, ohw = w->pass.z.ohw, kk = s->kh * s->kw;
    weight_part_rows(w, index, &row_begin, &row_end);
    if (row_begin >= row_end) return;
    if (w->phase) {
        weight_part_phase(w, index, row_begin, row_end);
        return;
    }
    if (weight_part_direct(w, row_begin, row_end)) return;
    float *col = w->col + row_begin * ohw; /* (row_end − row_begin) × OHW */
    for (size_t n = 0; n < s->n; n++) {
        for (size_t row = row_begin; row < row_end; row++) {
            size_t c = row / kk, kh = row % kk / s->kw, kw = row % s->kw;
            im2col_row(&w->pass, n, c, kh, kw, col + (row - row_begin) * ohw);
        }
        /* dWᵀ[rows][OC] (+)= col_n[rows][OHW] · dy_n[OC][OHW]ᵀ */
        lca_sgemm(false, true, row_end - row_begin, s->oc, ohw, 1.0f, col, ohw,
                  w->dy + n * s->oc * ohw, ohw, n == 0 && !w->accumulate ? 0.0f : 1.0f,
                  w->dwt + row_begin * s->oc, s->oc);
    }
}

static void weight_gradient(float *dweight, const float *dy, const float *x,
                            const lca_conv2d_shape *s, conv_sizes z, float *workspace,
                            bool accumulate) {
    weight_parts w = {.pass = {.s = s, .z = z, .x = x}, .dy = dy,
                      .col = workspace, .dwt = workspace + z.group * (z.ckk + s->oc) * z.ohw,
                      .accumulate = accumulate};
    size_t threads = (size_t)lca_parallel_threads();
    w.parts = min_size(threads < 1 ? 1 : threads, z.ckk);
    bool strided = direct_kernel(s, s->c) == NULL && phase_kernel(s) != NULL;
    if (direct_kernel(s, s->c) != NULL || strided) {
        bool wide = lca_kernel_current() == LCA_KERNEL_AVX512;
        w.wgrad = wide ? lca_conv_wgrad_avx512 : lca_conv_wgrad_avx2;
        w.mr = wide ? 10 : 6;
        w.nr = wide && s->oc >= 32 ? 32 : 16;
    }
    if (strided) {
        /* every part's buffer in the pass area (free during dweight), or
         * none: im2col + GEMM, the same bytes */
        w.area = workspace;
        w.share = z.group * (z.ckk + s->oc) * z.ohw / w.parts;
        w.phase = true;
        for (size_t part = 0; part < w.parts; part++) {
            size_t begin, end;
            weight_part_rows(&w, part, &begin, &end);
            if (begin < end && weight_phase_need(&w, begin, end) > w.share) w.phase = false;
        }
    }
    if (accumulate) /* dWᵀ = dWᵀ: the chain continues from what dweight holds */
        for (size_t oc = 0; oc < s->oc; oc++)
            for (size_t r = 0; r < z.ckk; r++) w.dwt[r * s->oc + oc] = dweight[oc * z.ckk + r];
    lca_parallel_for(w.parts, weight_part, &w);
    for (size_t oc = 0; oc < s->oc; oc++)
        for (size_t r = 0; r < z.ckk; r++) dweight[oc * z.ckk + r] = w.dwt[r * s->oc + oc];
}

/* dx of example n, on one thread: dcol_n = Wᵀ · dy_n into its own slot
 * of col (free again once dweight is done), then col2im. */
static void input_gradient_example(size_t n, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t ohw = p->z.ohw;
    float *dcol = p->col + n * p->z.ckk * ohw; /* CKK × OHW */
    if (p->direct != NULL) {
        /* dx_n = the convolution of dy_n (padded) with the flipped,
         * transposed weights: dx[c][ih][iw] = Σ over (oc, kh, kw) of
         * W[oc][c][K−1−kh][K−1−kw] · dypad[oc][ih + kh][iw + kw] (OH = H) */
        lca_conv_direct d = {.in_c = s->oc, .out_c = s->c, .oh = s->h, .ow = s->w, .k = s->kh,
                             .wp = p->packed, .y = p->dx + (p->first + n) * s->c * p->z.hw};
        direct_input(&d, dcol, p->dy + (p->first + n) * s->oc * ohw, s->oc, s->oh, s->ow, s->kh,
                     direct_span(p->direct, s->ow));
        p->direct(&d);
        return;
    }
    if (p->phase != NULL) {
        float *out = p->out + n * s->oc * ohw; /* OC × OHW */
        phase_dx_example(p->phase, s, p->packed, p->dy + (p->first + n) * s->oc * ohw,
                         p->dx + (p->first + n) * s->c * p->z.hw, p->phase_swap ? out : dcol,
                         p->phase_swap ? dcol : out);
        return;
    }
    /* dcol_n[CKK][OHW] = Wᵀ[CKK][OC] · dy_n[OC][OHW] */
    lca_sgemm(true, false, p->z.ckk, ohw, s->oc, 1.0f, p->weight, p->z.ckk,
              p->dy + (p->first + n) * s->oc * ohw, ohw, 0.0f, dcol, ohw);
    for (size_t c = 0; c < s->c; c++) col2im_channel(p, n, c, dcol, ohw);
}

static conv_pass conv_pass_begin(const lca_conv2d_shape *s, conv_sizes z, size_t first,
                                 float *workspace) {
    conv_pass p = {.s = s, .z = z, .first = first};
    p.examples = min_size(z.group, s->n - first);
    p.cols = p.examples * z.ohw;
    p.col = workspace;
    p.out = workspace + z.ckk * p.cols;
    return p;
}

/* ------------------------------------------------------------- forward */

void lca_conv2d_forward(float *y, const float *x, const float *weight, const float *bias,
                        const lca_conv2d_shape *s, float *workspace) {
    conv_sizes z = conv_sizes_of(s);
    if (z.ohw == 0 || s->oc == 0) return;
    lca_conv_direct_fn direct = direct_kernel(s, s->c);
    lca_conv_direct_fn phase = direct == NULL ? phase_kernel(s) : NULL;
    float *packed = workspace + z.group * (z.ckk + s->oc) * z.ohw;
    if (direct != NULL || phase != NULL) pack_direct(packed, weight, s, false);
    for (size_t first = 0; first < s->n; first += z.group) {
        conv_pass p = conv_pass_begin(s, z, first, workspace);
        p.x = x;
        p.weight = weight;
        p.bias = bias;
        p.y = y;
        p.direct = direct;
        p.phase = phase;
        p.packed = packed;
        /* One example per item: its im2col stays in the cache of the
         * thread that multiplies it. (With one example, or one thread,
         * the GEMM splits itself over the threads instead.) */
        lca_parallel_for(p.examples, forward_example, &p);
    }
}

/* ------------------------------------------------------------ backward */

typedef struct bias_sum {
    float *dbias;
    const float *dy;
    size_t n, oc, ohw;
    bool accumulate;
    lca_lanes_fn lanes; /* lca_lanes_kernel() */
} bias_sum;

/* dbias[oc] (+)= Σ_n Σ_p dy[n][oc][p], example by example: each example's
 * pixels summed in float64 over 8 lanes (pixel p to lane p mod 8, lanes
 * combined in a fixed order), rounded to float, and added to the float sum
 * of the examples before. So calls over consecutive examples with
 * accumulate give the bytes of one call (the sum between examples is the
 * float held in dbias), and the same bytes at any thread count. */
static void bias_item(size_t oc, void *context) {
    const bias_sum *b = context;
    float sum = b->accumulate ? b->dbias[oc] : 0.0f;
    for (size_t n = 0; n < b->n; n++) {
        const float *row = b->dy + (n * b->oc + oc) * b->ohw;
        double lane[8] = {0};
        size_t i = 0;
        if (b->lanes != NULL && b->ohw >= 8) { /* the same additions, in vectors */
            i = b->ohw / 8 * 8;
            b->lanes(lane, LCA_LANES_SUM, NULL, row, i, 0.0);
        }
        for (; i + 8 <= b->ohw; i += 8)
            for (size_t j = 0; j < 8; j++) lane[j] += row[i + j];
        for (size_t j = 0; i < b->ohw; i++, j++) lane[j] += row[i];
        double example = ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                         ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        sum += (float)example;
    }
    b->dbias[oc] = sum;
}

void lca_conv2d_backward(float *dx, float *dweight, float *dbias, const float *dy,
                         const float *x, const float *weight, const lca_conv2d_shape *s,
                         float *workspace, bool accumulate) {
    conv_sizes z = conv_sizes_of(s);
    if (dbias != NULL) {
        bias_sum b = {dbias, dy, s->n, s->oc, z.ohw, accumulate, lca_lanes_kernel()};
        lca_parallel_for(s->oc, bias_item, &b);
    }
    if (z.ohw == 0 || s->n == 0 || s->oc == 0) {
        /* Nothing flows: every gradient is zero (overwrite semantics), or
         * nothing is added (accumulate). */
        if (dweight != NULL && !accumulate) memset(dweight, 0, s->oc * z.ckk * sizeof(float));
        if (dx != NULL) memset(dx, 0, s->n * s->c * z.hw * sizeof(float));
        return;
    }
    if (dweight != NULL) weight_gradient(dweight, dy, x, s, z, workspace, accumulate);
    if (dx == NULL) return;
    lca_conv_direct_fn direct = direct_kernel(s, s->oc);
    lca_conv_direct_fn phase = direct == NULL ? phase_kernel(s) : NULL;
    bool swap = false;
    float *packed = workspace + z.group * (z.ckk + s->oc) * z.ohw;
    if (direct != NULL) pack_direct(packed, weight, s, true);
    if (phase != NULL) {
        /* the dy copies and the scratch plane in the example's col and out
         * slots (either way round), else im2col + GEMM */
        phase_dx_geometry g = phase_dx_geometry_of(s);
        size_t copies = g.floats_copies, scratch = g.floats_scratch;
        size_t col_slot = z.ckk * z.ohw, out_slot = s->oc * z.ohw;
        if (phase_in_place(s)) pack_direct(packed, weight, s, true); /* 1 × 1: Wᵀ */
        else if (copies <= col_slot && scratch <= out_slot) pack_phases(packed, weight, s);
        else if (copies <= out_slot && scratch <= col_slot) swap = true, pack_phases(packed, weight, s);
        else phase = NULL;
    }
    for (size_t first = 0; first < s->n; first += z.group) {
        conv_pass p = conv_pass_begin(s, z, first, workspace);
        p.weight = weight;
        p.dx = dx;
        p.dy = dy;
        p.direct = direct;
        p.phase = phase;
        p.phase_swap = swap;
        p.packed = packed;
        lca_parallel_for(p.examples, input_gradient_example, &p);
    }
}

/* ----------------------------------------------------------- reference */

/* Input coordinate o·S + k − P, or -1 when it falls in the padding. */
static long input_at(size_t o, size_t k, size_t pad, size_t stride, size_t size) {
    long i = (long)(o * stride + k) - (long)pad;
    return i >= 0 && i < (long)size ? i : -1;
}

void lca_conv2d_forward_naive(float *y, const float *x, const float *weight, const float *bias,
                              const lca_conv2d_shape *s) {
    for (size_t n = 0; n < s->n; n++)
        for (size_t oc = 0; oc < s->oc; oc++)
            for (size_t oh = 0; oh < s->oh; oh++)
                for (size_t ow = 0; ow < s->ow; ow++) {
                    double sum = bias != NULL ? bias[oc] : 0.0;
                    for (size_t c = 0; c < s->c; c++)
                        for (size_t kh = 0; kh < s->kh; kh++) {
                            long ih = input_at(oh, kh, s->pad_h, s->stride, s->h);
                            if (ih < 0) continue;
                            for (size_t kw = 0; kw < s->kw; kw++) {
                                long iw = input_at(ow, kw, s->pad_w, s->stride, s->w);
                                if (iw < 0) continue;
                                sum += (double)weight[((oc * s->c + c) * s->kh + kh) * s->kw + kw] *
                                       x[((n * s->c + c) * s->h + (size_t)ih) * s->w + (size_t)iw];
                            }
                        }
                    y[((n * s->oc + oc) * s->oh + oh) * s->ow + ow] = (float)sum;
                }
}

void lca_conv2d_backward_naive(float *dx, float *dweight, float *dbias, const float *dy,
                               const float *x, const float *weight, const lca_conv2d_shape *s) {
    size_t ohw = s->oh * s->ow;
    if (dbias != NULL)
        for (size_t oc = 0; oc < s->oc; oc++) {
            double sum = 0.0;
            for (size_t n = 0; n < s->n; n++)
                for (size_t i = 0; i < ohw; i++) sum += dy[(n * s->oc + oc) * ohw + i];
            dbias[oc] = (float)sum;
        }
    /* dweight[oc][c][kh][kw] = Σ_n Σ_(oh,ow) dy[n][oc][oh][ow]·x[n][c][ih][iw] */
    if (dweight != NULL)
        for (size_t oc = 0; oc < s->oc; oc++)
            for (size_t c = 0; c < s->c; c++)
                for (size_t kh = 0; kh < s->kh; kh++)
                    for (size_t kw = 0; kw < s->kw; kw++) {
                        double sum = 0.0;
                        for (size_t n = 0; n < s->n; n++)
                            for (size_t oh = 0; oh < s->oh; oh++) {
                                long ih = input_at(oh, kh, s->pad_h, s->stride, s->h);
                                if (ih < 0) continue;
                                for (size_t ow = 0; ow < s->ow; ow++) {
                                    long iw = input_at(ow, kw, s->pad_w, s->stride, s->w);
                                    if (iw < 0) continue;
                                    sum += (double)dy[((n * s->oc + oc) * s->oh + oh) * s->ow + ow] *
                                           x[((n * s->c + c) * s->h + (size_t)ih) * s->w + (size_t)iw];
                                }
                            }
                        dweight[((oc * s->c + c) * s->kh + kh) * s->kw + kw] = (float)sum;
                    }
    /* dx[n][c][ih][iw] = Σ over (oc, kh, kw) with ih = oh·S + kh − P,
     * iw = ow·S + kw − P of dy[n][oc][oh][ow]·weight[oc][c][kh][kw] */
    if (dx != NULL)
        for (size_t n = 0; n < s->n; n++)
            for (size_t c = 0; c < s->c; c++)
                for (size_t ih = 0; ih < s->h; ih++)
                    for (size_t iw = 0; iw < s->w; iw++) {
                        double sum = 0.0;
                        for (size_t oc = 0; oc < s->oc; oc++)
                            for (size_t kh = 0; kh < s->kh; kh++) {
                                long th = (long)(ih + s->pad_h) - (long)kh; /* oh·S */
                                if (th < 0 || th % (long)s->stride != 0) continue;
                                size_t oh = (size_t)th / s->stride;
                                if (oh >= s->oh) continue;
                                for (size_t kw = 0; kw < s->kw; kw++) {
                                    long tw = (long)(iw + s->pad_w) - (long)kw;
                                    if (tw < 0 || tw % (long)s->stride != 0) continue;
                                    size_t ow = (size_t)tw / s->stride;
                                    if (ow >= s->ow) continue;
                                    sum += (double)dy[((n * s->oc + oc) * s->oh + oh) * s->ow + ow] *
                                           weight[((oc * s->c + c) * s->kh + kh) * s->kw + kw];
                                }
                            }
                        dx[((n * s->c + c) * s->h + ih) * s->w + iw] = (float)sum;
                    }
}
