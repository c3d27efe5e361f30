/* layers_conv.c: 2-D convolution as im2col feeding lca_sgemm, and its
 * naive reference.
 *
 * The examples of a call are taken in passes of G consecutive examples, G a
 * pure function of the shape (conv_pass_examples): as many as fit a fixed
 * budget of workspace, at least one, at most N. One pass:
 *
 *   col[CKK][G·OH·OW]   im2col of the G examples side by side: row
 *                       (c, kh, kw), column (n, oh, ow) holds
 *                       x[n][c][oh·S + kh − P][ow·S + kw − P] or 0 (padding)
 *   out[OC][G·OH·OW]    the GEMM's result, or dy gathered into the same layout
 *
 * and then
 *   forward   out = W[OC][CKK] · col;              y[n][oc] = out[oc][n] + b[oc]
 *   dweight   dW[OC][CKK] (+)= dy_cat[OC][G·OHW] · colᵀ   (beta 0 on the first pass,
 *                                                          1 after: examples in order)
 *   dx        col = Wᵀ · dy_cat (col reused);      dx = col2im(col)
 *   dbias     db[oc] = Σ_n Σ_p dy[n][oc][p], float64, per channel
 *
 * One GEMM per pass with a wide N dimension (G·OH·OW columns) keeps the
 * GEMM efficient and lets it split the columns over the threads.
 *
 * Determinism. im2col, the scatter of the result, the gather of dy and
 * col2im split (example, channel) items over the threads; each item writes
 * its own memory and sums in a fixed order. lca_sgemm's bytes do not depend
 * on the thread count. G depends only on the shape, so the passes, and with
 * them the order in which dweight sums the examples, are the same at any
 * thread count. Forward outputs and dx do not even depend on G or N: each
 * element is one GEMM dot product over CKK (or OC) terms, whatever the
 * width of the product, so a chunk of examples gives the same bytes as the
 * whole batch.
 *
 * Dimension letters as in layers.h; CKK = C·KH·KW (the GEMM depth of the
 * forward pass), OHW = OH·OW.
 */
#include "layers.h"

#include <string.h>

/* Workspace of one pass, in floats: 2 Mi floats = 8 MiB. Bigger passes
 * barely speed up the GEMM (its blocks are far smaller); smaller ones
 * shrink the GEMM's N dimension for the thread split. Changing it changes
 * the bits of dweight (the order of its sum), not of y or dx. */
#define CONV_PASS_BUDGET_FLOATS ((size_t)2 << 20)

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
    size_t first;      /* first example of the pass */
    size_t examples;   /* examples in the pass (G, or fewer in the last) */
    size_t cols;       /* examples · OHW: the leading dimension of col and out */
    const float *x;    /* x[N][C][H][W] */
    float *col;        /* CKK × cols */
    float *out;        /* OC × cols */
    float *y;          /* forward: y[N][OC][OHW]; backward: dx[N][C][H][W] */
    const float *dy;   /* dy[N][OC][OHW] */
    const float *bias; /* OC or NULL */
} conv_pass;

/* im2col of example `first + n`, channel c: KH·KW rows of col, the
 * example's OHW columns. Item index = n·C + c. */
static void im2col_item(size_t index, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t n = index / s->c, c = index % s->c;
    const float *plane = p->x + ((p->first + n) * s->c + c) * p->z.hw; /* H × W */
    for (size_t kh = 0; kh < s->kh; kh++) {
        size_t oh_begin, oh_end;
        inside_range(kh, s->pad_h, s->stride, s->h, s->oh, &oh_begin, &oh_end);
        for (size_t kw = 0; kw < s->kw; kw++) {
            size_t ow_begin, ow_end;
            inside_range(kw, s->pad_w, s->stride, s->w, s->ow, &ow_begin, &ow_end);
            float *row = p->col + ((c * s->kh + kh) * s->kw + kw) * p->cols + n * p->z.ohw;
            if (oh_begin > 0) memset(row, 0, oh_begin * s->ow * sizeof(float));
            for (size_t oh = oh_begin; oh < oh_end; oh++) {
                float *out = row + oh * s->ow; /* OW */
                size_t inside = ow_end - ow_begin;
                if (inside == 0) {
                    memset(out, 0, s->ow * sizeof(float));
                    continue;
                }
                /* input row oh·S + kh − P, column ow_begin·S + kw − P */
                const float *in = plane + (oh * s->stride + kh - s->pad_h) * s->w +
                                  (ow_begin * s->stride + kw - s->pad_w);
                for (size_t ow = 0; ow < ow_begin; ow++) out[ow] = 0.0f;
                if (s->stride == 1) {
                    memcpy(out + ow_begin, in, inside * sizeof(float));
                } else if (s->stride == 2) {
                    for (size_t i = 0; i < inside; i++) out[ow_begin + i] = in[2 * i];
                } else {
                    for (size_t i = 0; i < inside; i++) out[ow_begin + i] = in[i * s->stride];
                }
                for (size_t ow = ow_end; ow < s->ow; ow++) out[ow] = 0.0f;
            }
            if (oh_end < s->oh)
                memset(row + oh_end * s->ow, 0, (s->oh - oh_end) * s->ow * sizeof(float));
        }
    }
}

/* col2im: dx[first + n][c] = Σ over (kh, kw) of its im2col rows, summed in
 * (kh, kw, oh, ow) order. Item index = n·C + c. */
static void col2im_item(size_t index, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t n = index / s->c, c = index % s->c;
    float *plane = p->y + ((p->first + n) * s->c + c) * p->z.hw; /* H × W */
    memset(plane, 0, p->z.hw * sizeof(float));
    for (size_t kh = 0; kh < s->kh; kh++) {
        size_t oh_begin, oh_end;
        inside_range(kh, s->pad_h, s->stride, s->h, s->oh, &oh_begin, &oh_end);
        for (size_t kw = 0; kw < s->kw; kw++) {
            size_t ow_begin, ow_end;
            inside_range(kw, s->pad_w, s->stride, s->w, s->ow, &ow_begin, &ow_end);
            const float *row =
                p->col + ((c * s->kh + kh) * s->kw + kw) * p->cols + n * p->z.ohw;
            size_t inside = ow_end - ow_begin;
            if (inside == 0) continue;
            for (size_t oh = oh_begin; oh < oh_end; oh++) {
                const float *in = row + oh * s->ow + ow_begin;
                float *out = plane + (oh * s->stride + kh - s->pad_h) * s->w +
                             (ow_begin * s->stride + kw - s->pad_w);
                if (s->stride == 1) {
                    for (size_t i = 0; i < inside; i++) out[i] += in[i];
                } else {
                    for (size_t i = 0; i < inside; i++) out[i * s->stride] += in[i];
                }
            }
        }
    }
}

/* y[first + n][oc] = out[oc][n·OHW …] + bias[oc]. Item index = n. */
static void scatter_item(size_t n, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t ohw = p->z.ohw;
    for (size_t oc = 0; oc < s->oc; oc++) {
        const float *in = p->out + oc * p->cols + n * ohw;
        float *out = p->y + ((p->first + n) * s->oc + oc) * ohw;
        if (p->bias == NULL) {
            memcpy(out, in, ohw * sizeof(float));
        } else {
            float b = p->bias[oc];
            for (size_t i = 0; i < ohw; i++) out[i] = in[i] + b;
        }
    }
}

/* out[oc][n·OHW …] = dy[first + n][oc]. Item index = n. */
static void gather_item(size_t n, void *context) {
    const conv_pass *p = context;
    const lca_conv2d_shape *s = p->s;
    size_t ohw = p->z.ohw;
    for (size_t oc = 0; oc < s->oc; oc++)
        memcpy(p->out + oc * p->cols + n * ohw, p->dy + ((p->first + n) * s->oc + oc) * ohw,
               ohw * sizeof(float));
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
        p.y = y;
        p.bias = bias;
        lca_parallel_for(p.examples * s->c, im2col_item, &p);
        /* out[OC][cols] = W[OC][CKK] · col[CKK][cols] */
        lca_sgemm(false, false, s->oc, p.cols, z.ckk, 1.0f, weight, z.ckk, p.col, p.cols, 0.0f,
                  p.out, p.cols);
        lca_parallel_for(p.examples, scatter_item, &p);
    }
}

/* ------------------------------------------------------------ backward */

typedef struct bias_sum {
    float *dbias;
    const float *dy;
    size_t n, oc, ohw;
} bias_sum;

/* dbias[oc] = Σ_n Σ_p dy[n][oc][p], float64, examples then pixels in order. */
static void bias_item(size_t oc, void *context) {
    const bias_sum *b = context;
    double sum = 0.0;
    for (size_t n = 0; n < b->n; n++) {
        const float *row = b->dy + (n * b->oc + oc) * b->ohw;
        for (size_t i = 0; i < b->ohw; i++) sum += row[i];
    }
    b->dbias[oc] = (float)sum;
}

void lca_conv2d_backward(float *dx, float *dweight, float *dbias, const float *dy,
                         const float *x, const float *weight, const lca_conv2d_shape *s,
                         float *workspace) {
    conv_sizes z = conv_sizes_of(s);
    if (dbias != NULL) {
        bias_sum b = {dbias, dy, s->n, s->oc, z.ohw};
        lca_parallel_for(s->oc, bias_item, &b);
    }
    if (z.ohw == 0 || s->n == 0 || s->oc == 0) {
        /* Nothing flows: every gradient is zero (overwrite semantics). */
        if (dweight != NULL) memset(dweight, 0, s->oc * z.ckk * sizeof(float));
        if (dx != NULL) memset(dx, 0, s->n * s->c * z.hw * sizeof(float));
        return;
    }
    if (dx == NULL && dweight == NULL) return;
    for (size_t first = 0; first < s->n; first += z.group) {
        conv_pass p = conv_pass_begin(s, z, first, workspace);
        p.x = x;
        p.y = dx;
        p.dy = dy;
        lca_parallel_for(p.examples, gather_item, &p); /* out = dy_cat[OC][cols] */
        if (dweight != NULL) {
            lca_parallel_for(p.examples * s->c, im2col_item, &p);
            /* dW[OC][CKK] (+)= dy_cat[OC][cols] · col[CKK][cols]ᵀ, passes in order */
            lca_sgemm(false, true, s->oc, z.ckk, p.cols, 1.0f, p.out, p.cols, p.col, p.cols,
                      first == 0 ? 0.0f : 1.0f, dweight, z.ckk);
        }
        if (dx != NULL) {
            /* dcol[CKK][cols] = Wᵀ[CKK][OC] · dy_cat[OC][cols], into col */
            lca_sgemm(true, false, z.ckk, p.cols, s->oc, 1.0f, weight, z.ckk, p.out, p.cols,
                      0.0f, p.col, p.cols);
            lca_parallel_for(p.examples * s->c, col2im_item, &p);
        }
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
