/* test_layers.c: the layer kernels of layers.h.
 *
 * 1. Gradients against central finite differences. The loss is Σ r·y with
 *    random r; the finite differences run in float64 through forward
 *    passes written here from the definitions (ref_* below), not through
 *    the core's naive kernels. The kernel under test runs in float32 with
 *    dy = r. For every gradient array:
 *        worst = max_i |kernel_i − fd_i| / max_i |fd_i|
 *    Tolerances: 1e-5 for the linear layers (conv, pooling, dropout, ReLU:
 *    float32 rounding of short sums; at most 4e-7 observed), 1e-4 for batch
 *    norm and the residual block (float32 x̂ and the cancellation in
 *    dy − mean(dy) − x̂·mean(dy·x̂); at most 4e-7 observed, but kept wider
 *    for other data). Both are orders of magnitude under the error of any
 *    indexing mistake (order 1).
 *    Forward outputs are checked against the same float64 forward.
 * 2. Fast convolution against the naive one (float64 accumulation) on the
 *    same shapes and on LeNet and ResNet-20 shapes, element by element:
 *        |fast − naive| ≤ 1e-5 · Σ|w||x|   (|b| added for y)
 *    and likewise Σ|w||dy| for dx, Σ|dy||x| for dweight, Σ|dy| for dbias
 *    (at most 3e-7 observed: float32 sums of up to a few thousand terms).
 * 3. Determinism: conv forward/backward, batch norm, pooling give the
 *    same bytes at lca_set_threads(1) and (2); conv y and dx are the same
 *    bytes when the batch is split into chunks and one example per call;
 *    conv dweight and dbias are the same bytes when the examples are cut
 *    into random consecutive calls with accumulate (sequential
 *    accumulation), one example per call included.
 * Outputs are filled with NaN before every call (kernels overwrite) and
 * workspaces are allocated at exactly lca_conv2d_workspace_floats (run
 * under ASan to catch an overrun). Exit status 0 only if every check passes.
 */
#include "layers.h"
#include "support.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL_LINEAR 1e-5
#define TOL_NONLINEAR 1e-4
#define TOL_NAIVE 1e-5
#define BN_EPSILON 1e-5f
/* Finite-difference step, relative to max(1, |v|): the truncation error of
 * a central difference (h²·f''') is far below the tolerances, and the
 * float64 rounding (1e-16/h) too. */
#define FD_STEP 1e-6

static test_rng rng;

/* ------------------------------------------------------------ helpers */

static float *new_floats(size_t count) { return test_alloc(count * sizeof(float)); }
static double *new_doubles(size_t count) { return test_alloc(count * sizeof(double)); }

static void fill_nan(float *v, size_t count) {
    for (size_t i = 0; i < count; i++) v[i] = NAN;
}
static void fill_uniform(float *v, size_t count, double low, double high) {
    test_fill_uniform(v, count, &rng, low, high);
}
static double *doubles_of(const float *v, size_t count) {
    double *d = new_doubles(count);
    test_to_double(d, v, count);
    return d;
}
static float *floats_copy(const float *v, size_t count) {
    float *f = new_floats(count);
    memcpy(f, v, count * sizeof(float));
    return f;
}
static double dot(const double *a, const double *b, size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += a[i] * b[i];
    return sum;
}

/* worst = max |got − want| / max |want| (absolute when want is all zero). */
static bool check_relative(const char *label, const char *what, const float *got,
                           const double *want, size_t count, double tolerance) {
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= worst)) worst = d; /* keeps NaN */
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    char name[200];
    snprintf(name, sizeof name, "%s: %s", label, what);
    return check_le(name, scale > 0.0 ? worst / scale : worst, tolerance);
}

/* Central differences of loss() with respect to every element of v. */
typedef double (*loss_function)(void *context);
static void finite_differences(double *gradient, double *v, size_t count, loss_function loss,
                               void *context) {
    for (size_t i = 0; i < count; i++) {
        double saved = v[i];
        double step = FD_STEP * fmax(1.0, fabs(saved));
        double up = saved + step, down = saved - step;
        v[i] = up;
        double loss_up = loss(context);
        v[i] = down;
        double loss_down = loss(context);
        v[i] = saved;
        gradient[i] = (loss_up - loss_down) / (up - down);
    }
}

/* -------------------------------------------- float64 reference forwards */

/* Shape of a convolution: "same" is P = (K − 1)/2 with OH = ceil(H / S),
 * "valid" is P = 0 with OH = (H − K)/S + 1. */
static lca_conv2d_shape conv_shape(size_t n, size_t c, size_t h, size_t w, size_t oc,
                                   size_t k, size_t stride, bool same) {
    lca_conv2d_shape s = {.n = n, .c = c, .h = h, .w = w, .oc = oc, .kh = k, .kw = k,
                          .stride = stride};
    if (same) {
        s.pad_h = s.pad_w = (k - 1) / 2;
        s.oh = (h + stride - 1) / stride;
        s.ow = (w + stride - 1) / stride;
    } else {
        s.oh = (h - k) / stride + 1;
        s.ow = (w - k) / stride + 1;
    }
    return s;
}

static size_t conv_x_count(const lca_conv2d_shape *s) { return s->n * s->c * s->h * s->w; }
static size_t conv_y_count(const lca_conv2d_shape *s) { return s->n * s->oc * s->oh * s->ow; }
static size_t conv_w_count(const lca_conv2d_shape *s) { return s->oc * s->c * s->kh * s->kw; }

/* y[n][o][i][j] = b[o] + Σ_(c,p,q) w[o][c][p][q]·x[n][c][i·S + p − P][j·S + q − P] */
static void ref_conv(double *y, const double *x, const double *w, const double *b,
                     const lca_conv2d_shape *s) {
    long H = (long)s->h, W = (long)s->w;
    for (size_t n = 0; n < s->n; n++)
        for (size_t o = 0; o < s->oc; o++)
            for (size_t i = 0; i < s->oh; i++)
                for (size_t j = 0; j < s->ow; j++) {
                    double acc = b ? b[o] : 0.0;
                    for (size_t c = 0; c < s->c; c++)
                        for (size_t p = 0; p < s->kh; p++)
                            for (size_t q = 0; q < s->kw; q++) {
                                long r = (long)(i * s->stride + p) - (long)s->pad_h;
                                long t = (long)(j * s->stride + q) - (long)s->pad_w;
                                if (r < 0 || r >= H || t < 0 || t >= W) continue;
                                acc += w[((o * s->c + c) * s->kh + p) * s->kw + q] *
                                       x[((n * s->c + c) * s->h + (size_t)r) * s->w + (size_t)t];
                            }
                    y[((n * s->oc + o) * s->oh + i) * s->ow + j] = acc;
                }
}

/* Batch norm with statistics per group of `group` examples and channel. */
static void ref_bn_batch(double *y, const double *x, const double *gamma, const double *beta,
                         size_t n, size_t c, size_t hw, size_t group, double epsilon,
                         double *means, double *invstds) {
    if (group == 0 || group > n) group = n; /* one group of all N */
    for (size_t g = 0; g * group < n; g++) {
        size_t first = g * group, last = first + group < n ? first + group : n;
        double m = (double)((last - first) * hw);
        for (size_t ch = 0; ch < c; ch++) {
            double mean = 0.0, var = 0.0;
            for (size_t e = first; e < last; e++)
                for (size_t i = 0; i < hw; i++) mean += x[(e * c + ch) * hw + i];
            mean /= m;
            for (size_t e = first; e < last; e++)
                for (size_t i = 0; i < hw; i++) {
                    double d = x[(e * c + ch) * hw + i] - mean;
                    var += d * d;
                }
            var /= m;
            double invstd = 1.0 / sqrt(var + epsilon);
            if (means) means[g * c + ch] = mean;
            if (invstds) invstds[g * c + ch] = invstd;
            for (size_t e = first; e < last; e++)
                for (size_t i = 0; i < hw; i++) {
                    size_t at = (e * c + ch) * hw + i;
                    y[at] = gamma[ch] * (x[at] - mean) * invstd + beta[ch];
                }
        }
    }
}

static void ref_bn_running(double *y, const double *x, const double *gamma, const double *beta,
                           const double *mean, const double *var, size_t n, size_t c, size_t hw,
                           double epsilon) {
    for (size_t e = 0; e < n; e++)
        for (size_t ch = 0; ch < c; ch++)
            for (size_t i = 0; i < hw; i++) {
                size_t at = (e * c + ch) * hw + i;
                y[at] = gamma[ch] * (x[at] - mean[ch]) / sqrt(var[ch] + epsilon) + beta[ch];
            }
}

static size_t pooled(size_t size, size_t k, size_t stride) { return (size - k) / stride + 1; }

static void ref_pool(double *y, const double *x, size_t planes, size_t h, size_t w, size_t k,
                     size_t stride, bool max) {
    size_t oh = pooled(h, k, stride), ow = pooled(w, k, stride);
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t i = 0; i < oh; i++)
            for (size_t j = 0; j < ow; j++) {
                double acc = max ? -INFINITY : 0.0;
                for (size_t p = 0; p < k; p++)
                    for (size_t q = 0; q < k; q++) {
                        double v = x[(pl * h + i * stride + p) * w + j * stride + q];
                        acc = max ? fmax(acc, v) : acc + v;
                    }
                y[(pl * oh + i) * ow + j] = max ? acc : acc / (double)(k * k);
            }
}

static void ref_relu(double *y, const double *x, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0 ? x[i] : 0.0;
}

/* ------------------------------------------------ 1a. convolution vs FD */

typedef struct conv_case {
    lca_conv2d_shape s;
    double *x, *w, *b, *r, *y;
} conv_case;

static double conv_loss(void *context) {
    conv_case *k = context;
    ref_conv(k->y, k->x, k->w, k->b, &k->s);
    return dot(k->r, k->y, conv_y_count(&k->s));
}

static void test_conv_gradients(const char *label, lca_conv2d_shape s, bool with_bias) {
    size_t xc = conv_x_count(&s), yc = conv_y_count(&s), wc = conv_w_count(&s);
    float *x = new_floats(xc), *w = new_floats(wc), *b = new_floats(s.oc), *r = new_floats(yc);
    fill_uniform(x, xc, -1, 1);
    fill_uniform(w, wc, -1, 1);
    fill_uniform(b, s.oc, -1, 1);
    fill_uniform(r, yc, -1, 1);
    conv_case k = {s, doubles_of(x, xc), doubles_of(w, wc), with_bias ? doubles_of(b, s.oc) : NULL,
                   doubles_of(r, yc), new_doubles(yc)};

    size_t ws = lca_conv2d_workspace_floats(&s);
    float *workspace = new_floats(ws);
    fill_nan(workspace, ws);
    float *y = new_floats(yc), *dx = new_floats(xc), *dw = new_floats(wc), *db = new_floats(s.oc);
    float *y_naive = new_floats(yc), *dx_naive = new_floats(xc), *dw_naive = new_floats(wc),
          *db_naive = new_floats(s.oc);
    fill_nan(y, yc);
    fill_nan(dx, xc);
    fill_nan(dw, wc);
    fill_nan(db, s.oc);
    fill_nan(y_naive, yc);
    fill_nan(dx_naive, xc);
    fill_nan(dw_naive, wc);
    fill_nan(db_naive, s.oc);
    const float *bias = with_bias ? b : NULL;
    lca_conv2d_forward(y, x, w, bias, &s, workspace);
    lca_conv2d_backward(dx, dw, db, r, x, w, &s, workspace, false);
    lca_conv2d_forward_naive(y_naive, x, w, bias, &s);
    lca_conv2d_backward_naive(dx_naive, dw_naive, db_naive, r, x, w, &s);

    double *y_ref = new_doubles(yc);
    ref_conv(y_ref, k.x, k.w, k.b, &s);
    double *fd_x = new_doubles(xc), *fd_w = new_doubles(wc), *fd_b = new_doubles(s.oc);
    finite_differences(fd_x, k.x, xc, conv_loss, &k);
    finite_differences(fd_w, k.w, wc, conv_loss, &k);
    if (with_bias) {
        finite_differences(fd_b, k.b, s.oc, conv_loss, &k);
    } else {
        /* without a bias, dbias is still Σ dy: the gradient a bias would get */
        for (size_t o = 0; o < s.oc; o++) {
            fd_b[o] = 0.0;
            for (size_t e = 0; e < s.n; e++)
                for (size_t i = 0; i < s.oh * s.ow; i++) fd_b[o] += k.r[(e * s.oc + o) * s.oh * s.ow + i];
        }
    }
    check_relative(label, "fast y vs float64 forward", y, y_ref, yc, TOL_LINEAR);
    check_relative(label, "fast dx vs FD", dx, fd_x, xc, TOL_LINEAR);
    check_relative(label, "fast dweight vs FD", dw, fd_w, wc, TOL_LINEAR);
    check_relative(label, "fast dbias vs FD", db, fd_b, s.oc, TOL_LINEAR);
    check_relative(label, "naive y vs float64 forward", y_naive, y_ref, yc, TOL_LINEAR);
    check_relative(label, "naive dx vs FD", dx_naive, fd_x, xc, TOL_LINEAR);
    check_relative(label, "naive dweight vs FD", dw_naive, fd_w, wc, TOL_LINEAR);
    check_relative(label, "naive dbias vs FD", db_naive, fd_b, s.oc, TOL_LINEAR);

    free(x); free(w); free(b); free(r);
    free(k.x); free(k.w); free(k.b); free(k.r); free(k.y);
    free(workspace); free(y); free(dx); free(dw); free(db);
    free(y_naive); free(dx_naive); free(dw_naive); free(db_naive);
    free(y_ref); free(fd_x); free(fd_w); free(fd_b);
}

/* ------------------------------------------------ 1b. batch norm vs FD */

typedef struct bn_case {
    size_t n, c, hw, group;
    bool running;
    double *x, *gamma, *beta, *mean, *var, *r, *y;
} bn_case;

static double bn_loss(void *context) {
    bn_case *k = context;
    if (k->running)
        ref_bn_running(k->y, k->x, k->gamma, k->beta, k->mean, k->var, k->n, k->c, k->hw,
                       BN_EPSILON);
    else
        ref_bn_batch(k->y, k->x, k->gamma, k->beta, k->n, k->c, k->hw, k->group, BN_EPSILON,
                     NULL, NULL);
    return dot(k->r, k->y, k->n * k->c * k->hw);
}

/* group = 0: running statistics. */
static void test_bn_gradients(const char *label, size_t n, size_t c, size_t hw, size_t group,
                              bool running) {
    size_t count = n * c * hw;
    float *x = new_floats(count), *r = new_floats(count), *gamma = new_floats(c),
          *beta = new_floats(c), *rmean = new_floats(c), *rvar = new_floats(c);
    fill_uniform(x, count, -1, 3);
    fill_uniform(r, count, -1, 1);
    fill_uniform(gamma, c, 0.5, 1.5);
    fill_uniform(beta, c, -0.5, 0.5);
    fill_uniform(rmean, c, 0.5, 1.5);
    fill_uniform(rvar, c, 0.5, 2.0);
    bn_case k = {n, c, hw, group, running, doubles_of(x, count), doubles_of(gamma, c),
                 doubles_of(beta, c), doubles_of(rmean, c), doubles_of(rvar, c),
                 doubles_of(r, count), new_doubles(count)};
    size_t groups = running ? 0 : lca_batchnorm_groups(n, group);
    float *y = new_floats(count), *xhat = new_floats(count), *dx = new_floats(count);
    float *smean = new_floats(groups * c + 1), *sinv = new_floats(groups * c + 1);
    float *bmean = new_floats(c), *bvar = new_floats(c), *dgamma = new_floats(c),
          *dbeta = new_floats(c);
    fill_nan(y, count);
    fill_nan(dx, count);
    fill_nan(dgamma, c);
    fill_nan(dbeta, c);
    if (running) {
        lca_batchnorm_forward_running(y, x, gamma, beta, rmean, rvar, n, c, hw, BN_EPSILON);
        lca_batchnorm_backward_running(dx, dgamma, dbeta, r, x, gamma, rmean, rvar, n, c, hw,
                                       BN_EPSILON);
    } else {
        lca_batchnorm_forward_batch(y, xhat, smean, sinv, bmean, bvar, x, gamma, beta, n, c, hw,
                                    group, BN_EPSILON, false);
        lca_batchnorm_backward_batch(dx, dgamma, dbeta, r, xhat, sinv, gamma, n, c, hw, group,
                                     NULL);
    }
    double *y_ref = new_doubles(count);
    double *ref_means = new_doubles(groups * c + 1), *ref_invstds = new_doubles(groups * c + 1);
    if (running)
        ref_bn_running(y_ref, k.x, k.gamma, k.beta, k.mean, k.var, n, c, hw, BN_EPSILON);
    else
        ref_bn_batch(y_ref, k.x, k.gamma, k.beta, n, c, hw, group, BN_EPSILON, ref_means,
                     ref_invstds);
    check_relative(label, "y vs float64 forward", y, y_ref, count, TOL_NONLINEAR);
    if (!running) {
        check_relative(label, "saved mean", smean, ref_means, groups * c, TOL_NONLINEAR);
        check_relative(label, "saved invstd", sinv, ref_invstds, groups * c, TOL_NONLINEAR);
        /* whole-call statistics: mean, unbiased variance */
        double *want_mean = new_doubles(c), *want_var = new_doubles(c);
        for (size_t ch = 0; ch < c; ch++) {
            double sum = 0.0, sq = 0.0, m = (double)(n * hw);
            for (size_t e = 0; e < n; e++)
                for (size_t i = 0; i < hw; i++) sum += k.x[(e * c + ch) * hw + i];
            want_mean[ch] = sum / m;
            for (size_t e = 0; e < n; e++)
                for (size_t i = 0; i < hw; i++) {
                    double d = k.x[(e * c + ch) * hw + i] - want_mean[ch];
                    sq += d * d;
                }
            want_var[ch] = sq / (m - 1.0);
        }
        check_relative(label, "batch mean (whole call)", bmean, want_mean, c, TOL_NONLINEAR);
        check_relative(label, "batch var (whole call, unbiased)", bvar, want_var, c,
                       TOL_NONLINEAR);
        free(want_mean);
        free(want_var);
    }
    double *fd_x = new_doubles(count), *fd_gamma = new_doubles(c), *fd_beta = new_doubles(c);
    finite_differences(fd_x, k.x, count, bn_loss, &k);
    finite_differences(fd_gamma, k.gamma, c, bn_loss, &k);
    finite_differences(fd_beta, k.beta, c, bn_loss, &k);
    check_relative(label, "dx vs FD", dx, fd_x, count, TOL_NONLINEAR);
    check_relative(label, "dgamma vs FD", dgamma, fd_gamma, c, TOL_NONLINEAR);
    check_relative(label, "dbeta vs FD", dbeta, fd_beta, c, TOL_NONLINEAR);

    /* dx may be dy (in place) */
    float *inplace = floats_copy(r, count);
    if (running)
        lca_batchnorm_backward_running(inplace, NULL, NULL, inplace, x, gamma, rmean, rvar, n, c,
                                       hw, BN_EPSILON);
    else
        lca_batchnorm_backward_batch(inplace, NULL, NULL, inplace, xhat, sinv, gamma, n, c, hw,
                                     group, NULL);
    check_true(memcmp(inplace, dx, count * sizeof(float)) == 0, label,
               "in-place backward (dx = dy) gives the same bytes");

    free(x); free(r); free(gamma); free(beta); free(rmean); free(rvar);
    free(k.x); free(k.gamma); free(k.beta); free(k.mean); free(k.var); free(k.r); free(k.y);
    free(y); free(xhat); free(dx); free(smean); free(sinv); free(bmean); free(bvar);
    free(dgamma); free(dbeta); free(y_ref); free(ref_means); free(ref_invstds);
    free(fd_x); free(fd_gamma); free(fd_beta); free(inplace);
}

/* --------------------------------------------------- 1c. pooling vs FD */

typedef struct pool_case {
    size_t planes, h, w, k, stride;
    bool max;
    double *x, *r, *y;
} pool_case;

static double pool_loss(void *context) {
    pool_case *p = context;
    ref_pool(p->y, p->x, p->planes, p->h, p->w, p->k, p->stride, p->max);
    return dot(p->r, p->y, p->planes * pooled(p->h, p->k, p->stride) * pooled(p->w, p->k, p->stride));
}

static void test_pool_gradients(const char *label, bool max, size_t n, size_t c, size_t h,
                                size_t w, size_t k, size_t stride) {
    size_t xc = n * c * h * w, yc = n * c * pooled(h, k, stride) * pooled(w, k, stride);
    float *x = new_floats(xc), *r = new_floats(yc);
    if (max) {
        /* distinct values 2/xc apart, shuffled: no ties, and a step of
         * 1e-6 never changes a window's winner */
        for (size_t i = 0; i < xc; i++) x[i] = (float)(2.0 * (double)i / (double)xc - 1.0);
        for (size_t i = xc; i > 1; i--) {
            size_t j = (size_t)test_rng_below(&rng, i);
            float t = x[i - 1];
            x[i - 1] = x[j];
            x[j] = t;
        }
    } else {
        fill_uniform(x, xc, -1, 1);
    }
    fill_uniform(r, yc, -1, 1);
    pool_case p = {n * c, h, w, k, stride, max, doubles_of(x, xc), doubles_of(r, yc),
                   new_doubles(yc)};
    float *y = new_floats(yc), *dx = new_floats(xc);
    uint32_t *argmax = test_alloc(yc * sizeof(uint32_t));
    fill_nan(y, yc);
    fill_nan(dx, xc);
    if (max) {
        lca_maxpool_forward(y, argmax, x, n, c, h, w, k, stride);
        lca_maxpool_backward(dx, r, argmax, n, c, h, w, k, stride);
    } else {
        lca_avgpool_forward(y, x, n, c, h, w, k, stride);
        lca_avgpool_backward(dx, r, n, c, h, w, k, stride);
    }
    double *y_ref = new_doubles(yc), *fd_x = new_doubles(xc);
    ref_pool(y_ref, p.x, n * c, h, w, k, stride, max);
    finite_differences(fd_x, p.x, xc, pool_loss, &p);
    check_relative(label, "y vs float64 forward", y, y_ref, yc, TOL_LINEAR);
    check_relative(label, "dx vs FD", dx, fd_x, xc, TOL_LINEAR);
    free(x); free(r); free(p.x); free(p.r); free(p.y); free(y); free(dx); free(argmax);
    free(y_ref); free(fd_x);
}

/* ReLU then max pooling: the fused backward (pass.c uses it for "relu
 * maxpool") against the two backward passes one after the other, bit for
 * bit, on inputs with negatives, exact zeros, ties and a NaN. */
static void test_maxpool_relu_fused(const char *label, size_t k, size_t stride) {
    size_t n = 2, c = 3, h = 7, w = 8;
    size_t oh = (h - k) / stride + 1, ow = (w - k) / stride + 1;
    size_t xc = n * c * h * w, yc = n * c * oh * ow;
    float *x = new_floats(xc), *relu_y = new_floats(xc), *pooled = new_floats(yc);
    float *dy = new_floats(yc), *d_pool = new_floats(xc), *d_two = new_floats(xc),
          *d_fused = new_floats(xc);
    uint32_t *argmax = test_alloc(yc * sizeof(uint32_t));
    fill_uniform(x, xc, -1, 1);
    for (size_t i = 0; i < xc; i += 5) x[i] = 0.0f;              /* exact zeros */
    for (size_t i = 1; i + 1 < xc; i += 11) x[i + 1] = x[i];    /* ties */
    x[xc / 2] = NAN;
    fill_uniform(dy, yc, -1, 1);
    lca_relu_forward(relu_y, x, xc);
    lca_maxpool_forward(pooled, argmax, relu_y, n, c, h, w, k, stride);
    lca_maxpool_backward(d_pool, dy, argmax, n, c, h, w, k, stride);
    lca_relu_backward(d_two, d_pool, relu_y, xc);
    fill_nan(d_fused, xc);
    lca_maxpool_relu_backward(d_fused, dy, argmax, relu_y, n, c, h, w, k, stride);
    size_t differ = 0;
    for (size_t i = 0; i < xc; i++)
        if (memcmp(&d_two[i], &d_fused[i], sizeof(float)) != 0) differ++;
    check_true(differ == 0, label, "%zu of %zu input gradients differ from relu_backward ∘ "
               "maxpool_backward", differ, xc);
    free(x); free(relu_y); free(pooled); free(dy); free(d_pool); free(d_two); free(d_fused);
    free(argmax);
}

static void test_maxpool_ties_and_nan(void) {
    /* 2×2 window over [1 1; 1 1]: the first (row-major) maximum wins */
    float x[8] = {1, 1, 1, 1, 5, NAN, 2, NAN}, y[2];
    uint32_t argmax[2];
    lca_maxpool_forward(y, argmax, x, 1, 2, 2, 2, 2, 2);
    check_true(argmax[0] == 0 && y[0] == 1.0f, "maxpool: ties go to the first maximum",
               "argmax %u", (unsigned)argmax[0]);
    check_true(isnan(y[1]) && argmax[1] == 1, "maxpool: a NaN in the window propagates",
               "y %g argmax %u", (double)y[1], (unsigned)argmax[1]);
}

/* --------------------------------------------- 1d. dropout and ReLU vs FD */

typedef struct pointwise_case {
    size_t count;
    const uint8_t *mask; /* dropout; NULL: ReLU */
    double scale;
    double *x, *r, *y;
} pointwise_case;

static double pointwise_loss(void *context) {
    pointwise_case *p = context;
    if (p->mask)
        for (size_t i = 0; i < p->count; i++) p->y[i] = p->mask[i] ? p->x[i] * p->scale : 0.0;
    else
        ref_relu(p->y, p->x, p->count);
    return dot(p->r, p->y, p->count);
}

static void test_dropout(void) {
    const size_t count = 4000;
    const float prob = 0.25f;
    float *x = new_floats(count), *r = new_floats(count), *y = new_floats(count),
          *dx = new_floats(count);
    uint8_t *mask = test_alloc(count);
    fill_uniform(x, count, -1, 1);
    fill_uniform(r, count, -1, 1);
    fill_nan(y, count);
    fill_nan(dx, count);
    lca_rng stream, replay;
    lca_rng_seed(&stream, 42, 7);
    lca_rng_seed(&replay, 42, 7);
    lca_dropout_forward(y, mask, x, count, prob, &stream);
    lca_dropout_backward(dx, r, mask, count, prob);

    /* the documented draw: mask[i] = uniform_i >= p, one draw per element */
    size_t kept = 0, wrong = 0;
    for (size_t i = 0; i < count; i++) {
        uint8_t want = lca_rng_uniform(&replay) >= prob;
        wrong += mask[i] != want;
        kept += mask[i];
    }
    check_true(wrong == 0, "dropout: mask[i] = (uniform_i >= p), in index order",
               "%zu elements differ", wrong);
    check_true(memcmp(&stream, &replay, sizeof stream) == 0,
               "dropout: exactly one draw per element", "generator states after the replay %s",
               memcmp(&stream, &replay, sizeof stream) == 0 ? "equal" : "differ");
    /* kept ~ Binomial(4000, 0.75): mean 3000, sd 27.4; ±6 sd */
    check_range("dropout: kept fraction (6 sd)", (double)kept, 3000 - 165, 3000 + 165);

    pointwise_case p = {count, mask, 1.0 / (1.0 - prob), doubles_of(x, count),
                        doubles_of(r, count), new_doubles(count)};
    double *y_ref = new_doubles(count), *fd_x = new_doubles(count);
    for (size_t i = 0; i < count; i++) y_ref[i] = mask[i] ? p.x[i] / (1.0 - prob) : 0.0;
    finite_differences(fd_x, p.x, count, pointwise_loss, &p);
    check_relative("dropout p = 0.25", "y vs float64 forward", y, y_ref, count, TOL_LINEAR);
    check_relative("dropout p = 0.25", "dx vs FD (fixed mask)", dx, fd_x, count, TOL_LINEAR);

    /* p = 0 keeps everything, unscaled */
    lca_dropout_forward(y, mask, x, count, 0.0f, &stream);
    check_true(memcmp(y, x, count * sizeof(float)) == 0, "dropout p = 0: y = x", "bitwise");
    free(x); free(r); free(y); free(dx); free(mask); free(p.x); free(p.r); free(p.y);
    free(y_ref); free(fd_x);
}

static void test_relu(void) {
    const size_t count = 1000;
    float *x = new_floats(count), *r = new_floats(count), *y = new_floats(count),
          *dx = new_floats(count);
    fill_uniform(x, count, -1, 1);
    for (size_t i = 0; i < count; i++) /* away from the kink */
        if (fabsf(x[i]) < 0.01f) x[i] = x[i] < 0 ? -0.5f : 0.5f;
    fill_uniform(r, count, -1, 1);
    fill_nan(y, count);
    fill_nan(dx, count);
    lca_relu_forward(y, x, count);
    lca_relu_backward(dx, r, y, count);
    pointwise_case p = {count, NULL, 1.0, doubles_of(x, count), doubles_of(r, count),
                        new_doubles(count)};
    double *y_ref = new_doubles(count), *fd_x = new_doubles(count);
    ref_relu(y_ref, p.x, count);
    finite_differences(fd_x, p.x, count, pointwise_loss, &p);
    check_relative("relu", "y vs float64 forward", y, y_ref, count, TOL_LINEAR);
    check_relative("relu", "dx vs FD", dx, fd_x, count, TOL_LINEAR);
    /* in place, both ways */
    float *inplace = floats_copy(x, count);
    lca_relu_forward(inplace, inplace, count);
    check_true(memcmp(inplace, y, count * sizeof(float)) == 0, "relu: in-place forward",
               "same bytes as out of place");
    float *grad = floats_copy(r, count);
    lca_relu_backward(grad, grad, y, count);
    check_true(memcmp(grad, dx, count * sizeof(float)) == 0, "relu: in-place backward",
               "same bytes as out of place");
    float nan_in = NAN, nan_out = 0.0f;
    lca_relu_forward(&nan_out, &nan_in, 1);
    check_true(isnan(nan_out), "relu: NaN passes through", "got %g", (double)nan_out);
    free(x); free(r); free(y); free(dx); free(p.x); free(p.r); free(p.y); free(y_ref);
    free(fd_x); free(inplace); free(grad);
}

/* lca_exp_nonpositive (the exp of softmax cross-entropy) against libm's exp:
 * a grid over [-708, 0], random points where softmax's terms matter
 * (-40, 0], and the edges. Tolerance 2 ulp; prints the worst. */
/* Large activations run ReLU in blocks over the threads: the same bytes as
 * element by element, in place or not, NaN and −0 included. */
static void test_relu_blocks(void) {
    size_t count = 3 * ((size_t)1 << 16) + 5;
    float *x = new_floats(count), *dy = new_floats(count), *y = new_floats(count),
          *dx = new_floats(count), *inplace = new_floats(count);
    fill_uniform(x, count, -1, 1);
    fill_uniform(dy, count, -1, 1);
    x[7] = NAN, x[70000] = -0.0f, x[count - 1] = NAN;
    bool same = true;
    for (int threads = 1; threads <= 2; threads++) {
        lca_set_threads(threads);
        lca_relu_forward(y, x, count);
        memcpy(inplace, x, count * sizeof(float));
        lca_relu_forward(inplace, inplace, count);
        for (size_t i = 0; i < count; i++) {
            float want = x[i] < 0.0f ? 0.0f : x[i];
            same = same && memcmp(&y[i], &want, sizeof want) == 0 &&
                   memcmp(&inplace[i], &want, sizeof want) == 0;
        }
        lca_relu_backward(dx, dy, y, count);
        memcpy(inplace, dy, count * sizeof(float));
        lca_relu_backward(inplace, inplace, y, count);
        for (size_t i = 0; i < count; i++) {
            float want = y[i] > 0.0f ? dy[i] : 0.0f;
            same = same && memcmp(&dx[i], &want, sizeof want) == 0 &&
                   memcmp(&inplace[i], &want, sizeof want) == 0;
        }
    }
    lca_set_threads(0);
    check_true(same, "relu in blocks over the threads",
               "forward and backward, in place or not, at 1 and 2 threads: the bytes of the "
               "element-wise rule on %zu values", count);
    free(x); free(dy); free(y); free(dx); free(inplace);
}

static void test_exp_nonpositive(void) {
    double worst = 0.0, worst_x = 0.0;
    size_t count = 0;
    for (int part = 0; part < 2; part++)
        for (size_t i = 0; i <= 200000; i++) {
            double x = part == 0 ? -708.0 * (double)i / 200000.0 : -40.0 * test_rng_uniform(&rng);
            double want = exp(x), got = lca_exp_nonpositive(x);
            double ulp = (nextafter(want, INFINITY) - want);
            double error = fabs(got - want) / ulp;
            if (!(error <= worst)) worst = error, worst_x = x;
            count++;
        }
    check_true(worst <= 2.0, "exp_nonpositive: within 2 ulp of libm exp",
               "worst %.3f ulp at x = %.17g over %zu points", worst, worst_x, count);
    check_true(lca_exp_nonpositive(0.0) == 1.0 && lca_exp_nonpositive(-0.0) == 1.0,
               "exp_nonpositive: e^0 = 1 exactly", "got %.17g", lca_exp_nonpositive(0.0));
    check_true(lca_exp_nonpositive(-708.5) == 0.0 && lca_exp_nonpositive(-1e300) == 0.0 &&
                   lca_exp_nonpositive(-INFINITY) == 0.0,
               "exp_nonpositive: 0 below -708 and at -inf", "got %g",
               lca_exp_nonpositive(-INFINITY));
    check_true(isnan(lca_exp_nonpositive(NAN)), "exp_nonpositive: NaN passes through", "got %g",
               lca_exp_nonpositive(NAN));
}

/* --------------------------------------------- 1e. a residual block vs FD
 *
 * out = relu(bn2(conv2(relu(bn1(conv1(x))))) + proj(x)):
 *   conv1 C→OC 3×3 stride 2 same, no bias; conv2 OC→OC 3×3 same, no bias;
 *   proj  C→OC 1×1 stride 2 valid, with bias; batch norm over groups. */

typedef struct block_case {
    lca_conv2d_shape c1, c2, proj;
    size_t group;
    double *x, *w1, *w2, *wp, *bp, *g1, *b1, *g2, *b2, *r;
    double *t1, *t2, *t3, *t4, *t5, *out; /* intermediates */
    double min_kink;                      /* smallest |ReLU input| seen */
} block_case;

static double block_forward(block_case *k) {
    size_t oc = k->c1.oc, hw = k->c1.oh * k->c1.ow, count = k->c1.n * oc * hw;
    ref_conv(k->t1, k->x, k->w1, NULL, &k->c1);
    ref_bn_batch(k->t2, k->t1, k->g1, k->b1, k->c1.n, oc, hw, k->group, BN_EPSILON, NULL, NULL);
    for (size_t i = 0; i < count; i++) k->min_kink = fmin(k->min_kink, fabs(k->t2[i]));
    ref_relu(k->t2, k->t2, count);
    ref_conv(k->t3, k->t2, k->w2, NULL, &k->c2);
    ref_bn_batch(k->t4, k->t3, k->g2, k->b2, k->c1.n, oc, hw, k->group, BN_EPSILON, NULL, NULL);
    ref_conv(k->t5, k->x, k->wp, k->bp, &k->proj);
    for (size_t i = 0; i < count; i++) {
        double v = k->t4[i] + k->t5[i];
        k->min_kink = fmin(k->min_kink, fabs(v));
        k->out[i] = v > 0.0 ? v : 0.0;
    }
    return dot(k->r, k->out, count);
}
static double block_loss(void *context) { return block_forward(context); }

static void test_residual_block(size_t n, size_t c, size_t h, size_t w, size_t oc,
                                size_t group) {
    char label[120];
    snprintf(label, sizeof label, "residual block N=%zu %zux%zux%zu -> %zu s2, BN group %zu", n, c,
             h, w, oc, group);
    lca_conv2d_shape c1 = conv_shape(n, c, h, w, oc, 3, 2, true);
    lca_conv2d_shape c2 = conv_shape(n, oc, c1.oh, c1.ow, oc, 3, 1, true);
    lca_conv2d_shape proj = conv_shape(n, c, h, w, oc, 1, 2, false);
    size_t xc = n * c * h * w, hw = c1.oh * c1.ow, count = n * oc * hw;
    size_t w1c = conv_w_count(&c1), w2c = conv_w_count(&c2), wpc = conv_w_count(&proj);
    float *x = new_floats(xc), *w1 = new_floats(w1c), *w2 = new_floats(w2c),
          *wp = new_floats(wpc), *bp = new_floats(oc), *g1 = new_floats(oc), *b1 = new_floats(oc),
          *g2 = new_floats(oc), *b2 = new_floats(oc), *r = new_floats(count);
    fill_uniform(x, xc, -1, 1);
    fill_uniform(w1, w1c, -0.5, 0.5);
    fill_uniform(w2, w2c, -0.5, 0.5);
    fill_uniform(wp, wpc, -0.5, 0.5);
    fill_uniform(bp, oc, -0.5, 0.5);
    fill_uniform(g1, oc, 0.5, 1.5);
    fill_uniform(b1, oc, -0.5, 0.5);
    fill_uniform(g2, oc, 0.5, 1.5);
    fill_uniform(b2, oc, -0.5, 0.5);
    fill_uniform(r, count, -1, 1);

    /* float32 kernels, composed as a model would */
    size_t ws = lca_conv2d_workspace_floats(&c1);
    if (lca_conv2d_workspace_floats(&c2) > ws) ws = lca_conv2d_workspace_floats(&c2);
    if (lca_conv2d_workspace_floats(&proj) > ws) ws = lca_conv2d_workspace_floats(&proj);
    float *workspace = new_floats(ws);
    size_t groups = lca_batchnorm_groups(n, group);
    float *a1 = new_floats(count), *xhat1 = new_floats(count), *a2 = new_floats(count),
          *a3 = new_floats(count), *xhat2 = new_floats(count), *a4 = new_floats(count),
          *ap = new_floats(count), *out = new_floats(count);
    float *mean1 = new_floats(groups * oc), *inv1 = new_floats(groups * oc),
          *mean2 = new_floats(groups * oc), *inv2 = new_floats(groups * oc);
    lca_conv2d_forward(a1, x, w1, NULL, &c1, workspace);
    lca_batchnorm_forward_batch(a2, xhat1, mean1, inv1, NULL, NULL, a1, g1, b1, n, oc, hw, group,
                                BN_EPSILON, false);
    lca_relu_forward(a2, a2, count);
    lca_conv2d_forward(a3, a2, w2, NULL, &c2, workspace);
    lca_batchnorm_forward_batch(a4, xhat2, mean2, inv2, NULL, NULL, a3, g2, b2, n, oc, hw, group,
                                BN_EPSILON, false);
    lca_conv2d_forward(ap, x, wp, bp, &proj, workspace);
    for (size_t i = 0; i < count; i++) out[i] = a4[i] + ap[i];
    lca_relu_forward(out, out, count);

    float *dsum = new_floats(count), *d3 = new_floats(count), *d2 = new_floats(count),
          *d1 = new_floats(count), *dx = new_floats(xc), *dx_proj = new_floats(xc);
    float *dw1 = new_floats(w1c), *dw2 = new_floats(w2c), *dwp = new_floats(wpc),
          *dbp = new_floats(oc), *dg1 = new_floats(oc), *db1 = new_floats(oc),
          *dg2 = new_floats(oc), *db2 = new_floats(oc);
    lca_relu_backward(dsum, r, out, count);                       /* out = relu(a4 + ap) */
    lca_conv2d_backward(dx_proj, dwp, dbp, dsum, x, wp, &proj, workspace, false);
    lca_batchnorm_backward_batch(d3, dg2, db2, dsum, xhat2, inv2, g2, n, oc, hw, group, NULL);
    lca_conv2d_backward(d2, dw2, NULL, d3, a2, w2, &c2, workspace, false);
    lca_relu_backward(d2, d2, a2, count);                         /* a2 = relu(bn1) */
    lca_batchnorm_backward_batch(d1, dg1, db1, d2, xhat1, inv1, g1, n, oc, hw, group, NULL);
    lca_conv2d_backward(dx, dw1, NULL, d1, x, w1, &c1, workspace, false);
    for (size_t i = 0; i < xc; i++) dx[i] += dx_proj[i];

    block_case k = {c1, c2, proj, group, doubles_of(x, xc), doubles_of(w1, w1c),
                    doubles_of(w2, w2c), doubles_of(wp, wpc), doubles_of(bp, oc),
                    doubles_of(g1, oc), doubles_of(b1, oc), doubles_of(g2, oc),
                    doubles_of(b2, oc), doubles_of(r, count), new_doubles(count),
                    new_doubles(count), new_doubles(count), new_doubles(count),
                    new_doubles(count), new_doubles(count), INFINITY};
    block_forward(&k);
    check_relative(label, "output vs float64 forward", out, k.out, count, TOL_NONLINEAR);
    double *fd = new_doubles(xc > w2c ? xc : w2c);
    struct { const char *name; double *v; const float *got; size_t count; } grads[] = {
        {"dx vs FD", k.x, dx, xc},          {"conv1 dweight vs FD", k.w1, dw1, w1c},
        {"conv2 dweight vs FD", k.w2, dw2, w2c}, {"proj dweight vs FD", k.wp, dwp, wpc},
        {"proj dbias vs FD", k.bp, dbp, oc}, {"bn1 dgamma vs FD", k.g1, dg1, oc},
        {"bn1 dbeta vs FD", k.b1, db1, oc},  {"bn2 dgamma vs FD", k.g2, dg2, oc},
        {"bn2 dbeta vs FD", k.b2, db2, oc},
    };
    k.min_kink = INFINITY;
    for (size_t i = 0; i < sizeof grads / sizeof grads[0]; i++) {
        finite_differences(fd, grads[i].v, grads[i].count, block_loss, &k);
        check_relative(label, grads[i].name, grads[i].got, fd, grads[i].count, TOL_NONLINEAR);
    }
    /* A ReLU input within a step of zero would make the FD straddle a kink. */
    printf("     (smallest |ReLU input| during the differences: %.2e)\n", k.min_kink);

    free(x); free(w1); free(w2); free(wp); free(bp); free(g1); free(b1); free(g2); free(b2);
    free(r); free(workspace); free(a1); free(xhat1); free(a2); free(a3); free(xhat2); free(a4);
    free(ap); free(out); free(mean1); free(inv1); free(mean2); free(inv2); free(dsum); free(d3);
    free(d2); free(d1); free(dx); free(dx_proj); free(dw1); free(dw2); free(dwp); free(dbp);
    free(dg1); free(db1); free(dg2); free(db2);
    free(k.x); free(k.w1); free(k.w2); free(k.wp); free(k.bp); free(k.g1); free(k.b1);
    free(k.g2); free(k.b2); free(k.r); free(k.t1); free(k.t2); free(k.t3); free(k.t4);
    free(k.t5); free(k.out); free(fd);
}

/* ------------------------------------------------ 2. fast vs naive conv */

static float *abs_copy(const float *v, size_t count) {
    float *a = new_floats(count);
    for (size_t i = 0; i < count; i++) a[i] = fabsf(v[i]);
    return a;
}

/* max_i |fast_i − naive_i| / scale_i (scale_i = 0: must be equal). */
static double worst_scaled(const float *fast, const float *naive, const float *scale,
                           size_t count) {
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)fast[i] - naive[i]);
        double e = scale[i] > 0.0f ? d / scale[i] : (d == 0.0 ? 0.0 : INFINITY);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static void test_conv_fast_vs_naive(const char *label, lca_conv2d_shape s) {
    size_t xc = conv_x_count(&s), yc = conv_y_count(&s), wc = conv_w_count(&s);
    float *x = new_floats(xc), *w = new_floats(wc), *b = new_floats(s.oc), *dy = new_floats(yc);
    fill_uniform(x, xc, -1, 1);
    fill_uniform(w, wc, -1, 1);
    fill_uniform(b, s.oc, -1, 1);
    fill_uniform(dy, yc, -1, 1);
    size_t ws = lca_conv2d_workspace_floats(&s);
    float *workspace = new_floats(ws);
    fill_nan(workspace, ws);
    float *y = new_floats(yc), *dx = new_floats(xc), *dw = new_floats(wc), *db = new_floats(s.oc);
    float *yn = new_floats(yc), *dxn = new_floats(xc), *dwn = new_floats(wc),
          *dbn = new_floats(s.oc);
    fill_nan(y, yc);
    fill_nan(dx, xc);
    fill_nan(dw, wc);
    fill_nan(db, s.oc);
    lca_conv2d_forward(y, x, w, b, &s, workspace);
    lca_conv2d_backward(dx, dw, db, dy, x, w, &s, workspace, false);
    lca_conv2d_forward_naive(yn, x, w, b, &s);
    lca_conv2d_backward_naive(dxn, dwn, dbn, dy, x, w, &s);
    /* scales: the same sums over absolute values */
    float *ax = abs_copy(x, xc), *aw = abs_copy(w, wc), *ab = abs_copy(b, s.oc),
          *ady = abs_copy(dy, yc);
    float *ys = new_floats(yc), *dxs = new_floats(xc), *dws = new_floats(wc),
          *dbs = new_floats(s.oc);
    lca_conv2d_forward_naive(ys, ax, aw, ab, &s);
    lca_conv2d_backward_naive(dxs, dws, dbs, ady, ax, aw, &s);
    char name[200];
    snprintf(name, sizeof name, "%s: fast vs naive y / sum|w||x|", label);
    check_le(name, worst_scaled(y, yn, ys, yc), TOL_NAIVE);
    snprintf(name, sizeof name, "%s: fast vs naive dx / sum|w||dy|", label);
    check_le(name, worst_scaled(dx, dxn, dxs, xc), TOL_NAIVE);
    snprintf(name, sizeof name, "%s: fast vs naive dweight / sum|dy||x|", label);
    check_le(name, worst_scaled(dw, dwn, dws, wc), TOL_NAIVE);
    snprintf(name, sizeof name, "%s: fast vs naive dbias / sum|dy|", label);
    check_le(name, worst_scaled(db, dbn, dbs, s.oc), TOL_NAIVE);
    free(x); free(w); free(b); free(dy); free(workspace); free(y); free(dx); free(dw); free(db);
    free(yn); free(dxn); free(dwn); free(dbn); free(ax); free(aw); free(ab); free(ady);
    free(ys); free(dxs); free(dws); free(dbs);
}

/* ------------------------------------------------------ 3. determinism */

typedef struct conv_outputs { float *y, *dx, *dw, *db; } conv_outputs;

static conv_outputs conv_run(const lca_conv2d_shape *s, const float *x, const float *w,
                             const float *b, const float *dy) {
    conv_outputs o = {new_floats(conv_y_count(s)), new_floats(conv_x_count(s)),
                      new_floats(conv_w_count(s)), new_floats(s->oc)};
    float *workspace = new_floats(lca_conv2d_workspace_floats(s));
    lca_conv2d_forward(o.y, x, w, b, s, workspace);
    lca_conv2d_backward(o.dx, o.dw, o.db, dy, x, w, s, workspace, false);
    free(workspace);
    return o;
}

static void conv_outputs_free(conv_outputs o) {
    free(o.y); free(o.dx); free(o.dw); free(o.db);
}

/* The two FMA families give the same bytes for y, dx, dweight and dbias
 * (direct kernels and GEMMs alike compute the same chains), on the
 * shapes of the nets and odd ones. */
static void test_conv_families_bitwise(void) {
    if (!lca_gemm_select_kernel("avx512") || !lca_gemm_select_kernel("avx2")) {
        printf("skip conv avx512 vs avx2 bytes: needs both families on this CPU\n");
        lca_gemm_select_kernel(NULL);
        return;
    }
    lca_conv2d_shape shapes[] = {
        conv_shape(6, 1, 28, 28, 20, 5, 1, true),  conv_shape(6, 20, 14, 14, 40, 5, 1, true),
        conv_shape(6, 16, 32, 32, 16, 3, 1, true), conv_shape(6, 32, 16, 16, 32, 3, 1, true),
        conv_shape(6, 64, 8, 8, 64, 3, 1, true),   conv_shape(6, 16, 32, 32, 32, 3, 2, true),
        conv_shape(3, 6, 13, 11, 10, 3, 1, true),  conv_shape(2, 5, 9, 30, 7, 5, 1, true),
    };
    bool same = true;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        lca_conv2d_shape s = shapes[i];
        size_t xc = conv_x_count(&s), yc = conv_y_count(&s), wc = conv_w_count(&s);
        float *x = new_floats(xc), *w = new_floats(wc), *b = new_floats(s.oc), *dy = new_floats(yc);
        fill_uniform(x, xc, -1, 1);
        fill_uniform(w, wc, -1, 1);
        fill_uniform(b, s.oc, -1, 1);
        fill_uniform(dy, yc, -1, 1);
        lca_gemm_select_kernel("avx512");
        conv_outputs wide = conv_run(&s, x, w, b, dy);
        lca_gemm_select_kernel("avx2");
        conv_outputs narrow = conv_run(&s, x, w, b, dy);
        same = same && memcmp(wide.y, narrow.y, yc * sizeof(float)) == 0 &&
               memcmp(wide.dx, narrow.dx, xc * sizeof(float)) == 0 &&
               memcmp(wide.dw, narrow.dw, wc * sizeof(float)) == 0 &&
               memcmp(wide.db, narrow.db, s.oc * sizeof(float)) == 0;
        conv_outputs_free(wide);
        conv_outputs_free(narrow);
        free(x); free(w); free(b); free(dy);
    }
    lca_gemm_select_kernel(NULL);
    check_true(same, "conv avx512 vs avx2 families", "y, dx, dweight, dbias the same bytes on "
               "%zu shapes (LeNet, ResNet-20, odd)", sizeof shapes / sizeof shapes[0]);
    /* the direct kernels sum in the order of the im2col product: y,
     * dweight and dbias are its bytes (dx is a different order by design) */
    static const char *const fma_families[] = {"avx512", "avx2"};
    for (int f = 0; f < 2; f++) {
        bool same_path = true;
        lca_gemm_select_kernel(fma_families[f]);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            lca_conv2d_shape s = shapes[i];
            size_t xc = conv_x_count(&s), yc = conv_y_count(&s), wc = conv_w_count(&s);
            float *x = new_floats(xc), *w = new_floats(wc), *b = new_floats(s.oc),
                  *dy = new_floats(yc);
            fill_uniform(x, xc, -1, 1);
            fill_uniform(w, wc, -1, 1);
            fill_uniform(b, s.oc, -1, 1);
            fill_uniform(dy, yc, -1, 1);
            conv_outputs direct = conv_run(&s, x, w, b, dy);
            lca_conv_direct_disabled = true;
            conv_outputs gemm = conv_run(&s, x, w, b, dy);
            lca_conv_direct_disabled = false;
            same_path = same_path && memcmp(direct.y, gemm.y, yc * sizeof(float)) == 0 &&
                        memcmp(direct.dw, gemm.dw, wc * sizeof(float)) == 0 &&
                        memcmp(direct.db, gemm.db, s.oc * sizeof(float)) == 0;
            conv_outputs_free(direct);
            conv_outputs_free(gemm);
            free(x); free(w); free(b); free(dy);
        }
        char name[100];
        snprintf(name, sizeof name, "conv [%s] direct kernels vs im2col + GEMM", fma_families[f]);
        check_true(same_path, name, "y, dweight, dbias the same bytes on %zu shapes",
                   sizeof shapes / sizeof shapes[0]);
    }
    lca_gemm_select_kernel(NULL);
}

/* The strided direct path (layers_conv.c, phase layouts): every family this
 * CPU runs against the float64 reference on odd shapes (odd planes, so
 * that phases have different sizes; no padding; 5 × 5; stride 3; channel
 * counts not multiples of 4, 8 or 16), and, for the FMA families, y,
 * dweight and dbias the same bytes as im2col + GEMM, and all four the
 * same bytes in avx512 and avx2. The 1 × 1 shapes run on the phase path
 * (lca_conv_phase_1x1) and on im2col + GEMM. */
static void test_conv_strided(void) {
    static const char *const families[] = {"avx512", "avx2", "portable"};
    struct { const char *label; lca_conv2d_shape s; bool one; } cases[] = {
        {"N=3 5x9x7 -> 6 3x3 s2 same (odd planes)", conv_shape(3, 5, 9, 7, 6, 3, 2, true), false},
        {"N=2 3x8x10 -> 5 3x3 s2 valid", conv_shape(2, 3, 8, 10, 5, 3, 2, false), false},
        {"N=2 3x11x13 -> 9 3x3 s2 valid (odd)", conv_shape(2, 3, 11, 13, 9, 3, 2, false), false},
        {"N=2 4x11x9 -> 9 5x5 s2 same", conv_shape(2, 4, 11, 9, 9, 5, 2, true), false},
        {"N=2 3x10x7 -> 6 3x3 s3 same", conv_shape(2, 3, 10, 7, 6, 3, 3, true), false},
        {"N=3 17x16x16 -> 33 3x3 s2 same (17, 33 channels)",
         conv_shape(3, 17, 16, 16, 33, 3, 2, true), false},
        {"N=2 3x2x3 -> 5 3x3 s2 same (tiny)", conv_shape(2, 3, 2, 3, 5, 3, 2, true), false},
        {"N=5 16x32x32 -> 32 3x3 s2 (ResNet-20)", conv_shape(5, 16, 32, 32, 32, 3, 2, true), false},
        {"N=3 32x16x16 -> 64 3x3 s2 (ResNet-20)", conv_shape(3, 32, 16, 16, 64, 3, 2, true), false},
        {"N=3 7x5x6 -> 10 1x1 s2", conv_shape(3, 7, 5, 6, 10, 1, 2, false), true},
        {"N=3 7x5x6 -> 10 1x1 s1", conv_shape(3, 7, 5, 6, 10, 1, 1, false), true},
        {"N=3 16x32x32 -> 32 1x1 s2 (ResNet-20)", conv_shape(3, 16, 32, 32, 32, 1, 2, false), true},
    };
    size_t count = sizeof cases / sizeof cases[0];
    for (int f = 0; f < 3; f++) {
        if (!lca_gemm_select_kernel(families[f])) continue;
        for (size_t i = 0; i < count; i++)
            for (int phase_1x1 = 0; phase_1x1 <= (cases[i].one ? 1 : 0); phase_1x1++) {
                char label[200];
                snprintf(label, sizeof label, "[%s] %s%s", families[f], cases[i].label,
                         phase_1x1 ? " (1x1 phase path)" : "");
                lca_conv_phase_1x1 = phase_1x1;
                test_conv_fast_vs_naive(label, cases[i].s);
                lca_conv_phase_1x1 = false;
            }
    }
    bool both = lca_gemm_select_kernel("avx512") && lca_gemm_select_kernel("avx2");
    bool same_path = true, same_family = true;
    int shapes = 0;
    for (size_t i = 0; i < count; i++)
        for (int phase_1x1 = 0; phase_1x1 <= (cases[i].one ? 1 : 0); phase_1x1++) {
            lca_conv2d_shape s = cases[i].s;
            size_t xc = conv_x_count(&s), yc = conv_y_count(&s), wc = conv_w_count(&s);
            float *x = new_floats(xc), *w = new_floats(wc), *b = new_floats(s.oc),
                  *dy = new_floats(yc);
            fill_uniform(x, xc, -1, 1);
            fill_uniform(w, wc, -1, 1);
            fill_uniform(b, s.oc, -1, 1);
            fill_uniform(dy, yc, -1, 1);
            lca_conv_phase_1x1 = phase_1x1;
            conv_outputs first = {0};
            for (int f = 0; f < 2; f++) {
                if (!lca_gemm_select_kernel(families[f])) continue;
                conv_outputs direct = conv_run(&s, x, w, b, dy);
                lca_conv_direct_disabled = true;
                conv_outputs gemm = conv_run(&s, x, w, b, dy);
                lca_conv_direct_disabled = false;
                same_path = same_path && memcmp(direct.y, gemm.y, yc * sizeof(float)) == 0 &&
                            memcmp(direct.dw, gemm.dw, wc * sizeof(float)) == 0 &&
                            memcmp(direct.db, gemm.db, s.oc * sizeof(float)) == 0;
                conv_outputs_free(gemm);
                if (first.y == NULL) {
                    first = direct;
                } else {
                    same_family = same_family &&
                                  memcmp(direct.y, first.y, yc * sizeof(float)) == 0 &&
                                  memcmp(direct.dx, first.dx, xc * sizeof(float)) == 0 &&
                                  memcmp(direct.dw, first.dw, wc * sizeof(float)) == 0 &&
                                  memcmp(direct.db, first.db, s.oc * sizeof(float)) == 0;
                    conv_outputs_free(direct);
                }
            }
            lca_conv_phase_1x1 = false;
            if (first.y != NULL) conv_outputs_free(first);
            free(x); free(w); free(b); free(dy);
            shapes++;
        }
    lca_gemm_select_kernel(NULL);
    check_true(same_path, "strided direct path vs im2col + GEMM",
               "y, dweight, dbias the same bytes on %d shapes, each FMA family", shapes);
    if (both)
        check_true(same_family, "strided direct path avx512 vs avx2",
                   "y, dx, dweight, dbias the same bytes on %d shapes", shapes);
    else
        printf("skip strided avx512 vs avx2 bytes: needs both families on this CPU\n");
}

/* The float64 sums of batch norm and of the convolution's bias gradient run
 * in vectors in the FMA families (lca_lanes_*, internal.h) and in scalar
 * lanes in the portable one: the same additions on the same lanes, so every
 * family gives the same bytes. Odd plane sizes (13, 37, 5·7) start
 * examples on every lane; groups of 3 examples of 7. */
static void test_bn_families_bitwise(void) {
    static const char *const families[] = {"avx512", "avx2", "portable"};
    static const size_t hws[] = {13, 37, 64, 1};
    bool same = true;
    int compared = 0;
    for (size_t h = 0; h < sizeof hws / sizeof hws[0]; h++) {
        size_t n = 7, c = 5, hw = hws[h], count = n * c * hw, group = 3;
        size_t groups = lca_batchnorm_groups(n, group);
        float *x = new_floats(count), *dy = new_floats(count), *gamma = new_floats(c),
              *beta = new_floats(c), *rmean = new_floats(c), *rvar = new_floats(c);
        fill_uniform(x, count, -1, 3);
        fill_uniform(dy, count, -1, 1);
        fill_uniform(gamma, c, 0.5, 1.5);
        fill_uniform(beta, c, -0.5, 0.5);
        fill_uniform(rmean, c, 0.5, 1.5);
        fill_uniform(rvar, c, 0.5, 2.0);
        /* per family: y, xhat, dx, dx running, then saved mean, invstd,
         * batch mean, var, dgamma, dbeta, dgamma, dbeta running, conv dbias */
        size_t per = 4 * count + 2 * groups * c + 6 * c + c;
        float *first = NULL;
        for (int f = 0; f < 3; f++) {
            if (!lca_gemm_select_kernel(families[f])) continue;
            float *o = new_floats(per);
            float *y = o, *xhat = y + count, *dx = xhat + count, *dxr = dx + count;
            float *sm = dxr + count, *si = sm + groups * c, *bm = si + groups * c, *bv = bm + c;
            float *dg = bv + c, *db = dg + c, *dgr = db + c, *dbr = dgr + c, *cb = dbr + c;
            lca_batchnorm_forward_batch(y, xhat, sm, si, bm, bv, x, gamma, beta, n, c, hw, group,
                                        BN_EPSILON, false);
            lca_batchnorm_backward_batch(dx, dg, db, dy, xhat, si, gamma, n, c, hw, group, NULL);
            lca_batchnorm_backward_running(dxr, dgr, dbr, dy, x, gamma, rmean, rvar, n, c, hw,
                                           BN_EPSILON);
            /* the conv's dbias: dy as n × c planes of hw pixels (1 × hw, 1 × 1 kernel) */
            lca_conv2d_shape s = conv_shape(n, 1, 1, hw, c, 1, 1, false);
            float *w = new_floats(c), *ws = new_floats(lca_conv2d_workspace_floats(&s) + 1);
            lca_conv2d_backward(NULL, NULL, cb, dy, NULL, w, &s, ws, false);
            free(w); free(ws);
            if (first == NULL) {
                first = o;
            } else {
                same = same && memcmp(first, o, per * sizeof(float)) == 0;
                compared++;
                free(o);
            }
        }
        free(first); free(x); free(dy); free(gamma); free(beta); free(rmean); free(rvar);
    }
    lca_gemm_select_kernel(NULL);
    check_true(same, "batch norm and bias sums: the same bytes in every family",
               "%d family pairs compared over 4 plane sizes (13, 37, 64, 1)", compared);
}

static void test_conv_determinism(const char *label, lca_conv2d_shape s, size_t chunk) {
    size_t xc = conv_x_count(&s), yc = conv_y_count(&s), wc = conv_w_count(&s);
    float *x = new_floats(xc), *w = new_floats(wc), *b = new_floats(s.oc), *dy = new_floats(yc);
    fill_uniform(x, xc, -1, 1);
    fill_uniform(w, wc, -1, 1);
    fill_uniform(b, s.oc, -1, 1);
    fill_uniform(dy, yc, -1, 1);
    lca_set_threads(1);
    conv_outputs one = conv_run(&s, x, w, b, dy);
    lca_set_threads(2);
    conv_outputs two = conv_run(&s, x, w, b, dy);
    bool same = memcmp(one.y, two.y, yc * sizeof(float)) == 0 &&
                memcmp(one.dx, two.dx, xc * sizeof(float)) == 0 &&
                memcmp(one.dw, two.dw, wc * sizeof(float)) == 0 &&
                memcmp(one.db, two.db, s.oc * sizeof(float)) == 0;
    check_true(same, label, "y, dx, dweight, dbias: same bytes at 1 and 2 threads (G = %zu of N = %zu per pass)",
               lca_conv2d_workspace_floats(&s) /
                   ((s.c * s.kh * s.kw + s.oc) * s.oh * s.ow), s.n);
    /* chunks of `chunk` examples: y and dx are the same bytes */
    size_t x1 = s.c * s.h * s.w, y1 = s.oc * s.oh * s.ow;
    bool chunk_same = true;
    for (size_t first = 0; first < s.n; first += chunk) {
        lca_conv2d_shape part = s;
        part.n = first + chunk < s.n ? chunk : s.n - first;
        conv_outputs o = conv_run(&part, x + first * x1, w, b, dy + first * y1);
        chunk_same = chunk_same && memcmp(o.y, two.y + first * y1, part.n * y1 * sizeof(float)) == 0 &&
                     memcmp(o.dx, two.dx + first * x1, part.n * x1 * sizeof(float)) == 0;
        conv_outputs_free(o);
    }
    char name[200];
    snprintf(name, sizeof name, "%s: y, dx in chunks of %zu", label, chunk);
    check_true(chunk_same, name, "same bytes as the whole batch");
    /* one example per call: y and dx the same bytes too */
    bool single_same = true;
    for (size_t first = 0; first < s.n; first++) {
        lca_conv2d_shape part = s;
        part.n = 1;
        conv_outputs o = conv_run(&part, x + first * x1, w, b, dy + first * y1);
        single_same = single_same && memcmp(o.y, two.y + first * y1, y1 * sizeof(float)) == 0 &&
                      memcmp(o.dx, two.dx + first * x1, x1 * sizeof(float)) == 0;
        conv_outputs_free(o);
    }
    snprintf(name, sizeof name, "%s: y, dx one example per call", label);
    check_true(single_same, name, "same bytes as the whole batch");
    /* Sequential accumulation: dweight and dbias over random consecutive
     * calls (some of one example), the later ones with accumulate, at a
     * thread count drawn per call, give the bytes of the whole call. The
     * workspace is sized for the whole batch, as the pass sizes it. */
    float *workspace = new_floats(lca_conv2d_workspace_floats(&s));
    float *dw = new_floats(wc), *db = new_floats(s.oc);
    bool split_same = true;
    size_t calls = 0;
    for (int trial = 0; trial < 3; trial++) {
        fill_nan(dw, wc);
        fill_nan(db, s.oc);
        for (size_t first = 0; first < s.n;) {
            size_t left = s.n - first;
            size_t take = trial == 0 ? 1 : 1 + (size_t)test_rng_below(&rng, left < 13 ? left : 13);
            lca_conv2d_shape part = s;
            part.n = take;
            lca_set_threads(1 + (int)test_rng_below(&rng, 2));
            lca_conv2d_backward(NULL, dw, db, dy + first * y1, x + first * x1, w, &part,
                                workspace, first > 0);
            first += take;
            calls++;
        }
        split_same = split_same && memcmp(dw, two.dw, wc * sizeof(float)) == 0 &&
                     memcmp(db, two.db, s.oc * sizeof(float)) == 0;
    }
    lca_set_threads(2);
    snprintf(name, sizeof name, "%s: dweight, dbias accumulated over random splits", label);
    check_true(split_same, name, "same bytes as one call (3 trials, %zu calls, one of them "
               "example by example)", calls);
    free(workspace); free(dw); free(db);
    conv_outputs_free(one);
    conv_outputs_free(two);
    free(x); free(w); free(b); free(dy);
}

static void test_other_determinism(void) {
    const size_t n = 40, c = 16, h = 16, w = 16, hw = h * w, count = n * c * hw, group = 12;
    float *x = new_floats(count), *dy = new_floats(count), *gamma = new_floats(c),
          *beta = new_floats(c);
    fill_uniform(x, count, -1, 2);
    fill_uniform(dy, count, -1, 1);
    fill_uniform(gamma, c, 0.5, 1.5);
    fill_uniform(beta, c, -0.5, 0.5);
    size_t groups = lca_batchnorm_groups(n, group);
    float *out[2][9];
    for (int run = 0; run < 2; run++) {
        lca_set_threads(run + 1);
        float **o = out[run];
        o[0] = new_floats(count);          /* y */
        o[1] = new_floats(count);          /* x̂ */
        o[2] = new_floats(groups * c);     /* mean */
        o[3] = new_floats(groups * c);     /* invstd */
        o[4] = new_floats(2 * c);          /* batch mean, var */
        o[5] = new_floats(count);          /* dx */
        o[6] = new_floats(2 * c);          /* dgamma, dbeta */
        o[7] = new_floats(count / 4);      /* maxpool y */
        o[8] = new_floats(count);          /* maxpool dx */
        lca_batchnorm_forward_batch(o[0], o[1], o[2], o[3], o[4], o[4] + c, x, gamma, beta, n, c,
                                    hw, group, BN_EPSILON, false);
        lca_batchnorm_backward_batch(o[5], o[6], o[6] + c, dy, o[1], o[3], gamma, n, c, hw,
                                     group, NULL);
        uint32_t *argmax = test_alloc(count / 4 * sizeof(uint32_t));
        lca_maxpool_forward(o[7], argmax, x, n, c, h, w, 2, 2);
        lca_maxpool_backward(o[8], dy, argmax, n, c, h, w, 2, 2);
        free(argmax);
    }
    size_t sizes[9] = {count, count, groups * c, groups * c, 2 * c, count, 2 * c, count / 4, count};
    bool same = true;
    for (int i = 0; i < 9; i++) same = same && memcmp(out[0][i], out[1][i], sizes[i] * sizeof(float)) == 0;
    check_true(same, "batch norm (N=40, group 12) and maxpool", "same bytes at 1 and 2 threads");
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 9; i++) free(out[run][i]);
    free(x); free(dy); free(gamma); free(beta);
}

static void test_workspace_bound(void) {
    /* bounded by the budget or one example, whichever is larger; never
     * shrinking as N grows (a workspace sized for the largest N serves all) */
    lca_conv2d_shape shapes[] = {
        conv_shape(1000, 20, 14, 14, 40, 5, 1, true),
        conv_shape(1000, 16, 32, 32, 16, 3, 1, true),
        conv_shape(1000, 3, 224, 224, 64, 7, 2, true),
    };
    bool ok = true;
    for (size_t i = 0; i < 3; i++) {
        lca_conv2d_shape s = shapes[i];
        /* one example's passes, plus dWᵀ or the packed weights (about the
         * size of the weights, not of the examples) */
        size_t kk = s.kh * s.kw, extra = s.c * kk * s.oc;
        if ((s.oc + 3) / 4 * 4 * s.c * kk > extra) extra = (s.oc + 3) / 4 * 4 * s.c * kk;
        if ((s.c + 3) / 4 * 4 * s.oc * kk > extra) extra = (s.c + 3) / 4 * 4 * s.oc * kk;
        size_t one = (s.c * kk + s.oc) * s.oh * s.ow + extra;
        size_t bound = one > ((size_t)1 << 20) ? one : ((size_t)1 << 20); /* 4 MiB */
        size_t previous = 0;
        for (size_t n = 1; n <= 1000; n += 37) {
            s.n = n;
            size_t floats = lca_conv2d_workspace_floats(&s);
            ok = ok && floats <= bound && floats >= previous && floats >= one;
            previous = floats;
        }
    }
    check_true(ok, "conv workspace", "≤ max(4 MiB, one example + the weights' size), ≥ that, "
               "monotone in N");
}

/* ----------------------------------------------------------------- main */

int main(void) {
    test_begin("layers");
    test_rng_seed(&rng, 20240611);
    lca_set_threads(2);

    struct { const char *label; lca_conv2d_shape s; bool bias; } fd_cases[] = {
        {"conv 3x3 s1 same, 3->5, 7x7", conv_shape(2, 3, 7, 7, 5, 3, 1, true), true},
        {"conv 3x3 s2 same, 3->5, 7x7", conv_shape(2, 3, 7, 7, 5, 3, 2, true), true},
        {"conv 3x3 s2 valid, 5->3, 7x7", conv_shape(2, 5, 7, 7, 3, 3, 2, false), true},
        {"conv 5x5 s1 same, 5->3, 7x6", conv_shape(2, 5, 7, 6, 3, 5, 1, true), true},
        {"conv 5x5 s2 same, 3->5, 7x7", conv_shape(2, 3, 7, 7, 5, 5, 2, true), true},
        {"conv 5x5 s2 valid, 3->5, 9x8", conv_shape(2, 3, 9, 8, 5, 5, 2, false), true},
        {"conv 5x5 s1 same, 1->20, 7x7", conv_shape(1, 1, 7, 7, 20, 5, 1, true), true},
        {"conv 3x3 s1 valid, 3->5, 8x5, no bias", conv_shape(2, 3, 8, 5, 5, 3, 1, false), false},
        {"conv 1x1 s1, 5->20, 6x7", conv_shape(2, 5, 6, 7, 20, 1, 1, false), true},
        {"conv 1x1 s2, 20->3, 7x7", conv_shape(3, 20, 7, 7, 3, 1, 2, false), true},
    };
    for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++)
        test_conv_gradients(fd_cases[i].label, fd_cases[i].s, fd_cases[i].bias);

    test_bn_gradients("batch norm, batch stats, group = N = 4, 3 ch, 5 px", 4, 3, 5, 4, false);
    test_bn_gradients("batch norm, batch stats, group 0 (= N = 5), 3 ch, 4 px", 5, 3, 4, 0, false);
    test_bn_gradients("batch norm, batch stats, N = 7 group 3, 5 ch, 6 px", 7, 5, 6, 3, false);
    test_bn_gradients("batch norm, dense (HW = 1), N = 7 group 3 (last group 1)", 7, 5, 1, 3,
                      false);
    test_bn_gradients("batch norm, running stats, N = 3, 5 ch, 6 px", 3, 5, 6, 0, true);

    test_pool_gradients("maxpool k2 s2 6x8", true, 2, 3, 6, 8, 2, 2);
    test_pool_gradients("maxpool k2 s2 7x7 (last row, col dropped)", true, 2, 3, 7, 7, 2, 2);
    test_pool_gradients("maxpool k3 s2 7x7 (overlapping)", true, 2, 3, 7, 7, 3, 2);
    test_pool_gradients("maxpool k3 s1 5x9", true, 1, 5, 5, 9, 3, 1);
    test_maxpool_ties_and_nan();
    test_maxpool_relu_fused("relu+maxpool k2 s2 fused backward: same bytes", 2, 2);
    test_maxpool_relu_fused("relu+maxpool k3 s2 (overlapping) fused backward: same bytes", 3, 2);
    test_pool_gradients("avgpool k2 s2 6x8", false, 2, 3, 6, 8, 2, 2);
    test_pool_gradients("avgpool k3 s2 7x7 (overlapping)", false, 2, 3, 7, 7, 3, 2);
    test_pool_gradients("global avgpool 5x5", false, 2, 5, 5, 5, 5, 1);
    test_pool_gradients("global avgpool 8x8", false, 3, 4, 8, 8, 8, 1);

    test_dropout();
    test_relu();
    test_relu_blocks();
    test_exp_nonpositive();

    test_residual_block(3, 4, 7, 7, 6, 3);
    test_residual_block(3, 3, 8, 8, 5, 2);

    /* every kernel family this CPU runs (LCA_KERNEL-style selection):
     * direct kernels (stride 1, same: AVX-512 16 lanes, AVX2 8 lanes) and
     * im2col + GEMM (strides, 1x1, portable) */
    static const char *const families[] = {"avx512", "avx2", "portable"};
    for (int f = 0; f < 3; f++) {
        if (!lca_gemm_select_kernel(families[f])) {
            printf("skip conv kernel family %s: not available on this CPU\n", families[f]);
            continue;
        }
        char label[200];
#define FAST_VS_NAIVE(text, shape)                                                     \
        do {                                                                           \
            snprintf(label, sizeof label, "[%s] %s", families[f], text);               \
            test_conv_fast_vs_naive(label, shape);                                     \
        } while (0)
        for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++)
            FAST_VS_NAIVE(fd_cases[i].label, fd_cases[i].s);
        FAST_VS_NAIVE("LeNet conv1 N=16 1x28x28 -> 20 5x5 same",
                      conv_shape(16, 1, 28, 28, 20, 5, 1, true));
        FAST_VS_NAIVE("LeNet conv2 N=16 20x14x14 -> 40 5x5 same",
                      conv_shape(16, 20, 14, 14, 40, 5, 1, true));
        FAST_VS_NAIVE("ResNet N=18 16x32x32 -> 16 3x3 s1 (passes of 4, last 2)",
                      conv_shape(18, 16, 32, 32, 16, 3, 1, true));
        FAST_VS_NAIVE("ResNet N=16 16x32x32 -> 32 3x3 s2",
                      conv_shape(16, 16, 32, 32, 32, 3, 2, true));
        FAST_VS_NAIVE("ResNet N=16 16x32x32 -> 32 1x1 s2 projection",
                      conv_shape(16, 16, 32, 32, 32, 1, 2, false));
        FAST_VS_NAIVE("ResNet N=16 64x8x8 -> 64 3x3 s1",
                      conv_shape(16, 64, 8, 8, 64, 3, 1, true));
        FAST_VS_NAIVE("ResNet N=5 3x32x32 -> 16 3x3 s1 (first layer)",
                      conv_shape(5, 3, 32, 32, 16, 3, 1, true));
        FAST_VS_NAIVE("odd N=3 6x13x11 -> 10 3x3 s1 (edges of every tile)",
                      conv_shape(3, 6, 13, 11, 10, 3, 1, true));
        FAST_VS_NAIVE("odd N=2 5x9x30 -> 7 5x5 s1 (30 = 16 + 14 lanes)",
                      conv_shape(2, 5, 9, 30, 7, 5, 1, true));
        FAST_VS_NAIVE("tiny N=3 2x1x2 -> 5 5x5 s1 (plane smaller than the padding)",
                      conv_shape(3, 2, 1, 2, 5, 5, 1, true));
        FAST_VS_NAIVE("N=2 3x7x5 -> 6 3x3 s1 (35 pixels: a partial last vector)",
                      conv_shape(2, 3, 7, 5, 6, 3, 1, true));
#undef FAST_VS_NAIVE
    }
    lca_gemm_select_kernel(NULL);
    test_conv_families_bitwise();
    test_bn_families_bitwise();
    test_conv_strided();

    test_conv_determinism("determinism LeNet conv1 N=100", conv_shape(100, 1, 28, 28, 20, 5, 1, true), 7);
    test_conv_determinism("determinism LeNet conv2 N=100", conv_shape(100, 20, 14, 14, 40, 5, 1, true), 7);
    test_conv_determinism("determinism ResNet 16->16 3x3 s1 N=40", conv_shape(40, 16, 32, 32, 16, 3, 1, true), 9);
    test_conv_determinism("determinism ResNet 16->32 3x3 s2 N=40", conv_shape(40, 16, 32, 32, 32, 3, 2, true), 9);
    test_conv_determinism("determinism ResNet 16->32 1x1 s2 N=40", conv_shape(40, 16, 32, 32, 32, 1, 2, false), 9);
    test_conv_determinism("determinism ResNet 32->64 3x3 s2 N=30", conv_shape(30, 32, 16, 16, 64, 3, 2, true), 7);
    test_conv_determinism("determinism odd 5x9x7 -> 6 3x3 s2 N=13", conv_shape(13, 5, 9, 7, 6, 3, 2, true), 4);
    lca_conv_phase_1x1 = true;
    test_conv_determinism("determinism 1x1 s2 phase path N=21", conv_shape(21, 7, 9, 8, 10, 1, 2, false), 5);
    lca_conv_phase_1x1 = false;
    test_other_determinism();
    test_workspace_bound();
    lca_set_threads(0);
    return test_finish();
}
