/* layers_conv.c: 2-D convolution as im2col feeding lca_sgemm, and its
 * naive reference.
 *
 * The examples of a call are taken in passes of G consecutive examples, G a
 * pure function of the shape (conv_sizes_of): as many as fit a fixed budget
 * of workspace, rounded down to a multiple of 4, at least one, at most N.
 * The workspace of a pass is col (CKK × G·OHW floats) and out (OC × G·OHW).
 *
 *   forward   each example on one thread: im2col into its own slot of col
 *             (CKK × OHW), y_n = W[OC][CKK] · col_n straight into y, + b.
 *   dweight   each example on one thread: im2col into its columns of
 *             col[CKK][G·OHW] and dy_n into the same columns of
 *             out[OC][G·OHW]; then one product for the pass,
 *             dW[OC][CKK] (+)= out · colᵀ, split over the threads by the GEMM
 *             (beta 0 on the first pass, 1 after, and 1 throughout with
 *             accumulate: the GEMM's sequential accumulation makes that one
 *             chain of FMAs per weight, example by example, pixel by pixel).
 *   dx        each example on one thread: dcol_n = Wᵀ · dy_n into its slot
 *             of col, then col2im into dx_n.
 *   dbias     db[oc] (+)= Σ_n (Σ_p dy[n][oc][p] in float64, rounded), added
 *             example by example in float; threads over channels.
 *
 * Working one example per thread keeps its im2col (at most a few hundred
 * KB for the nets) in that core's cache between the copy and the product,
 * and needs no synchronisation between them; with one example, or one
 * thread, the GEMM splits itself over the threads instead.
 *
 * Determinism. Each item writes its own memory and sums in a fixed order
 * (col2im: kernel offsets, then pixels). lca_sgemm's bytes do not depend on
 * the thread count or on the width of the product, so y and dx are the same
 * bytes however examples are spread over threads, passes or chunks of a
 * batch (each element is one dot product over CKK, or OC, terms). dweight
 * and dbias add their terms into the output example by example (the GEMM's
 * sequential accumulation, internal.h), so they do not depend on the passes
 * (G) either: a call over examples [0, n) gives the bytes of calls over
 * [0, a) and [a, n), the second with accumulate.
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
    size_t per_example = (z.ckk + s->oc) * z.ohw;
    size_t group = per_example == 0 ? s->n : CONV_PASS_BUDGET_FLOATS / per_example;
    if (group >= CONV_PASS_MULTIPLE) group = group / CONV_PASS_MULTIPLE * CONV_PASS_MULTIPLE;
    if (group < 1) group = 1;
    z.group = min_size(group, s->n);
    return z;
}

size_t lca_conv2d_workspace_floats(const lca_conv2d_shape *s) {
    conv_sizes z = conv_sizes_of(s);
    return z.group * (z.ckk + s->oc) * z.ohw;
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
} conv_pass;

/* im2col of example `first + n`, channel c: KH·KW rows (c, kh, kw) of the
 * example's OHW columns, at cols + row · ld. Each row is the input plane shifted by
 * (kh − P, kw − P) and subsampled by S: a rectangle of input rows copied
 * into place, zeros around it (written first, in one memset, when the
 * rectangle does not cover the row). */
static void im2col_channel(const conv_pass *p, size_t n, size_t c, float *cols, size_t ld) {
    const lca_conv2d_shape *s = p->s;
    const float *plane = p->x + ((p->first + n) * s->c + c) * p->z.hw; /* H × W */
    for (size_t kh = 0; kh < s->kh; kh++) {
        size_t oh_begin, oh_end;
        inside_range(kh, s->pad_h, s->stride, s->h, s->oh, &oh_begin, &oh_end);
        for (size_t kw = 0; kw < s->kw; kw++) {
            size_t ow_begin, ow_end;
            inside_range(kw, s->pad_w, s->stride, s->w, s->ow, &ow_begin, &ow_end);
            float *row = cols + ((c * s->kh + kh) * s->kw + kw) * ld;
            size_t rows = oh_end - oh_begin, inside = ow_end - ow_begin;
            if (rows < s->oh || inside < s->ow) memset(row, 0, p->z.ohw * sizeof(float));
            if (rows == 0 || inside == 0) continue;
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
    }
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
    for (size_t c = 0; c < s->c; c++) im2col_channel(p, n, c, col, ohw);
    float *y = p->y + (p->first + n) * s->oc * ohw; /* OC × OHW */
    /* y_n[OC][OHW] = W[OC][CKK] · col_n[CKK][OHW] */
    lca_sgemm(false, false, s->oc, ohw, p->z.ckk, 1.0f, p->weight, p->z.ckk, col, ohw, 0.0f, y,
              ohw);
    if (p->bias != NULL)
        for (size_t oc = 0; oc < s->oc; oc++) {
            float b = p->bias[oc], *row = y + oc * ohw;
            for (size_t i = 0; i < ohw; i++) row[i] += b;
        }
}

/* For dweight: im2col of example n into its columns of col[CKK][cols],
 * and its dy into the same columns of out[OC][cols]. */
static void weight_operands_example(size_t n, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t ohw = p->z.ohw;
    for (size_t c = 0; c < s->c; c++) im2col_channel(p, n, c, p->col + n * ohw, p->cols);
    for (size_t oc = 0; oc < s->oc; oc++)
        memcpy(p->out + oc * p->cols + n * ohw, p->dy + ((p->first + n) * s->oc + oc) * ohw,
               ohw * sizeof(float));
}

/* dx of example n, on one thread: dcol_n = Wᵀ · dy_n into its own slot
 * of col (free again once dweight is done), then col2im. */
static void input_gradient_example(size_t n, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t ohw = p->z.ohw;
    float *dcol = p->col + n * p->z.ckk * ohw; /* CKK × OHW */
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
    for (size_t first = 0; first < s->n; first += z.group) {
        conv_pass p = conv_pass_begin(s, z, first, workspace);
        p.x = x;
        p.weight = weight;
        p.bias = bias;
        p.y = y;
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
        bias_sum b = {dbias, dy, s->n, s->oc, z.ohw, accumulate};
        lca_parallel_for(s->oc, bias_item, &b);
    }
    if (z.ohw == 0 || s->n == 0 || s->oc == 0) {
        /* Nothing flows: every gradient is zero (overwrite semantics), or
         * nothing is added (accumulate). */
        if (dweight != NULL && !accumulate) memset(dweight, 0, s->oc * z.ckk * sizeof(float));
        if (dx != NULL) memset(dx, 0, s->n * s->c * z.hw * sizeof(float));
        return;
    }
    for (size_t first = 0; first < s->n; first += z.group) {
        conv_pass p = conv_pass_begin(s, z, first, workspace);
        p.x = x;
        p.weight = weight;
        p.dx = dx;
        p.dy = dy;
        if (dweight != NULL) {
            lca_parallel_for(p.examples, weight_operands_example, &p);
            /* dW[OC][CKK] (+)= dy_cat[OC][cols] · col[CKK][cols]ᵀ: one product
             * over the pass, threads splitting dW. The GEMM's sequential
             * accumulation adds the terms into dW in k order, that is
             * example by example, pixel by pixel: passes (beta 1 after the
             * first) and calls with accumulate continue one chain, so any
             * cut of the examples gives the same bytes. */
            lca_sgemm(false, true, s->oc, z.ckk, p.cols, 1.0f, p.out, p.cols, p.col, p.cols,
                      first == 0 && !accumulate ? 0.0f : 1.0f, dweight, z.ckk);
        }
        if (dx != NULL) lca_parallel_for(p.examples, input_gradient_example, &p);
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
