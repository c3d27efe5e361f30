/* conv_bench.c: GFLOP/s of the convolution kernels (layers_conv.c) on the
 * LeNet and ResNet-20 shapes, at 1 and 2 threads, against a peer measured
 * in the same run: the same GEMMs alone, i.e. the products the kernel makes
 * (per example W · col_n for the forward pass; per pass dy · colᵀ and per
 * example Wᵀ · dy_n for the backward pass), on operands already in place,
 * spread over the threads the same way. "of GEMM" = GEMMs' time / conv time:
 * how GEMM-bound the kernel is (100% = im2col, col2im and copies cost
 * nothing).
 *
 * Flops: 2·N·OC·OH·OW·C·KH·KW for the forward pass and for each of the two
 * backward products; "backward" is dx + dweight (twice the forward flops).
 *
 *   make build/liblca.a              # OpenMP when found; OPENMP=0: pthreads
 *   clang -std=c11 -O2 -ICCore/include -ICCore -D_GNU_SOURCE \
 *       -c tools/bench/conv_bench.c -o build/conv_bench.o
 *   clang build/conv_bench.o build/liblca.a $(make -s ldlibs) -o build/conv_bench
 *   ./build/conv_bench [N]            # N examples, default 250
 *   ./build/conv_bench pass MODEL [N] [repeats] [threads]
 *       the whole forward + backward pass of MODEL (lenet, resnet20) on N
 *       random examples (default 1000; batch norm in groups of 250), as
 *       lca_model_loss_and_gradient runs it, in GFLOP/s of the needed
 *       arithmetic: conv and dense forward 2·MACs, weight gradients 2·MACs,
 *       input gradients 2·MACs except for the first layer (pooling, batch
 *       norm, ReLU, loss not counted); at 1 and 2 threads, best of repeats.
 *   LCA_KERNEL=avx2 ./build/conv_bench ...   the same with the AVX2 family
 *
 * On a shared machine the numbers move by 10-20% from run to run (far more
 * when other jobs hold the cores); each cell is the best of repeated runs.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include "model.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds of the process: on a machine shared with other jobs, the
 * time a one-thread run was actually on a core (wall time also counts the
 * time the scheduler gave to others). */
static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t count) {
    float *v = malloc(count * sizeof(float));
    if (v == NULL) {
        fprintf(stderr, "conv_bench: out of memory\n");
        exit(1);
    }
    uint64_t state = 0x9e3779b97f4a7c15u ^ count;
    for (size_t i = 0; i < count; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        v[i] = (float)((double)(state >> 40) / (double)(1u << 23) - 1.0);
    }
    return v;
}

typedef struct bench_case {
    const char *name;
    lca_conv2d_shape s;
} bench_case;

static lca_conv2d_shape shape(size_t n, size_t c, size_t h, size_t w, size_t oc, size_t k,
                              size_t stride, bool same) {
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

/* The GEMMs of the kernel alone, on fixed operands: col (CKK × G·OHW),
 * cat (OC × G·OHW), as many examples per pass as the kernel takes. */
typedef struct gemm_peer {
    const lca_conv2d_shape *s;
    size_t ckk, ohw, group;
    const float *w, *col, *cat, *dy;
    float *y, *dcol, *dw;
} gemm_peer;

static void peer_forward_example(size_t n, void *context) {
    const gemm_peer *g = context;
    lca_sgemm(false, false, g->s->oc, g->ohw, g->ckk, 1.0f, g->w, g->ckk,
              g->col + n % g->group * g->ckk * g->ohw, g->ohw, 0.0f,
              g->y + n * g->s->oc * g->ohw, g->ohw);
}

static void peer_input_example(size_t n, void *context) {
    const gemm_peer *g = context;
    lca_sgemm(true, false, g->ckk, g->ohw, g->s->oc, 1.0f, g->w, g->ckk,
              g->dy + n * g->s->oc * g->ohw, g->ohw, 0.0f,
              g->dcol + n % g->group * g->ckk * g->ohw, g->ohw);
}

enum { RUN_FORWARD, RUN_BACKWARD, RUN_BACKWARD_WEIGHT, RUN_GEMMS_FORWARD, RUN_GEMMS_BACKWARD,
       RUNS };

/* Seconds of the best of `repeats` runs. */
static double time_best(int what, const lca_conv2d_shape *s, const float *x, const float *w,
                        const float *b, float *y, float *dx, float *dw, float *db,
                        float *workspace, gemm_peer *peer, int repeats) {
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double start = now_seconds();
        switch (what) {
        case RUN_FORWARD: lca_conv2d_forward(y, x, w, b, s, workspace); break;
        case RUN_BACKWARD: lca_conv2d_backward(dx, dw, db, y, x, w, s, workspace, false); break;
        case RUN_BACKWARD_WEIGHT: lca_conv2d_backward(NULL, dw, db, y, x, w, s, workspace, false); break;
        case RUN_GEMMS_FORWARD:
            lca_parallel_for(s->n, peer_forward_example, peer);
            break;
        case RUN_GEMMS_BACKWARD:
            for (size_t first = 0; first < s->n; first += peer->group) {
                size_t cols = (first + peer->group < s->n ? peer->group : s->n - first) * peer->ohw;
                lca_sgemm(false, true, s->oc, peer->ckk, cols, 1.0f, peer->cat, cols, peer->col,
                          cols, first == 0 ? 0.0f : 1.0f, dw, peer->ckk);
            }
            lca_parallel_for(s->n, peer_input_example, peer);
            break;
        }
        double elapsed = now_seconds() - start;
        if (elapsed < best) best = elapsed;
    }
    return best;
}

/* Needed flops of one forward + backward pass over n examples. */
static double pass_flops(const lca_model *m, size_t n) {
    double flops = 0.0;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        double macs = 0.0;
        if (L->kind == LCA_LAYER_CONV2D) {
            const lca_conv2d_shape *c = &L->conv;
            macs = (double)c->oc * (double)(c->oh * c->ow) * (double)(c->c * c->kh * c->kw);
        } else if (L->kind == LCA_LAYER_DENSE) {
            macs = (double)L->in_size * (double)L->out_size;
        } else if (L->kind == LCA_LAYER_BLOCK_ADD && L->projection) {
            const lca_conv2d_shape *c = &L->projection_shape;
            macs = (double)c->oc * (double)(c->oh * c->ow) * (double)(c->c * c->kh * c->kw);
        }
        /* forward, weight gradient, and the input gradient but for layer 0 */
        flops += 2.0 * macs * (double)n * (l == 0 ? 2.0 : 3.0);
    }
    return flops;
}

static int pass_main(const char *spec, size_t n, int repeats, int only_threads) {
    lca_model *model;
    if (lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY) != LCA_OK ||
        lca_model_reserve(model, n) != LCA_OK) {
        fprintf(stderr, "conv_bench: %s\n", lca_last_error());
        return 1;
    }
    lca_model_initialize(model, 1);
    size_t in = lca_model_input_size(model), classes = lca_model_output_size(model);
    float *x = random_floats(n * in);
    float *gradient = malloc(lca_model_parameter_count(model) * sizeof(float));
    int32_t *labels = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) labels[i] = (int32_t)((i * 7919u) % classes);
    double flops = pass_flops(model, n);
    printf("{\"model\": \"%s\", \"examples\": %zu, \"kernel\": \"%s\", \"gflop\": %.3f",
           spec, n, lca_gemm_kernel_name(), flops * 1e-9);
    for (int threads = 1; threads <= 2; threads++) {
        if (only_threads != 0 && threads != only_threads) continue;
        lca_set_threads(threads);
        double best = 1e30, best_cpu = 1e30, loss = 0.0;
        for (int r = 0; r < repeats; r++) {
            double start = now_seconds(), start_cpu = cpu_seconds();
            if (lca_model_loss_and_gradient(model, NULL, x, labels, NULL, n, &loss, gradient) !=
                LCA_OK) {
                fprintf(stderr, "conv_bench: %s\n", lca_last_error());
                return 1;
            }
            double elapsed = now_seconds() - start, cpu = cpu_seconds() - start_cpu;
            if (elapsed < best) best = elapsed;
            if (cpu < best_cpu) best_cpu = cpu;
        }
        printf(", \"seconds_%dt\": %.4f, \"gflops_%dt\": %.1f", threads, best, threads,
               flops / best * 1e-9);
        if (threads == 1)
            printf(", \"cpu_seconds_1t\": %.4f, \"gflops_cpu_1t\": %.1f", best_cpu,
                   flops / best_cpu * 1e-9);
    }
    printf("}\n");
    free(x); free(gradient); free(labels);
    lca_model_free(model);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "pass") == 0)
        return pass_main(argv[2], argc > 3 ? (size_t)atol(argv[3]) : 1000,
                         argc > 4 ? atoi(argv[4]) : 3, argc > 5 ? atoi(argv[5]) : 0);
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 250;
    bench_case cases[] = {
        {"LeNet conv1 1x28x28 -> 20 5x5 same", shape(n, 1, 28, 28, 20, 5, 1, true)},
        {"LeNet conv2 20x14x14 -> 40 5x5 same", shape(n, 20, 14, 14, 40, 5, 1, true)},
        {"ResNet 16x32x32 -> 16 3x3 s1", shape(n, 16, 32, 32, 16, 3, 1, true)},
        {"ResNet 16x32x32 -> 32 3x3 s2", shape(n, 16, 32, 32, 32, 3, 2, true)},
        {"ResNet 32x16x16 -> 32 3x3 s1", shape(n, 32, 16, 16, 32, 3, 1, true)},
        {"ResNet 64x8x8 -> 64 3x3 s1", shape(n, 64, 8, 8, 64, 3, 1, true)},
        {"ResNet 16x32x32 -> 32 1x1 s2", shape(n, 16, 32, 32, 32, 1, 2, false)},
    };
    printf("conv GFLOP/s, N = %zu, GEMM kernel %s (best of repeated runs)\n", n,
           lca_gemm_kernel_name());
    printf("%-38s %3s %8s %8s %8s %8s %8s %8s\n", "shape", "thr", "forward", "GEMMs",
           "of GEMM", "backward", "GEMMs", "of GEMM");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const lca_conv2d_shape *s = &cases[i].s;
        size_t xc = s->n * s->c * s->h * s->w, yc = s->n * s->oc * s->oh * s->ow;
        size_t ckk = s->c * s->kh * s->kw, wc = s->oc * ckk, ohw = s->oh * s->ow;
        size_t floats = lca_conv2d_workspace_floats(s);
        size_t group = floats / ((ckk + s->oc) * ohw);
        float *x = random_floats(xc), *w = random_floats(wc), *b = random_floats(s->oc);
        float *y = random_floats(yc), *dx = random_floats(xc), *dw = random_floats(wc),
              *db = random_floats(s->oc);
        float *workspace = random_floats(floats);
        float *col = random_floats(group * ckk * ohw), *cat = random_floats(group * s->oc * ohw);
        float *dcol = random_floats(group * ckk * ohw), *y_peer = random_floats(yc);
        gemm_peer peer = {s, ckk, ohw, group, w, col, cat, y, y_peer, dcol, dw};
        double flops = 2.0 * (double)yc * (double)ckk;
        for (int threads = 1; threads <= 2; threads++) {
            lca_set_threads(threads);
            double t[RUNS];
            for (int what = 0; what < RUNS; what++)
                t[what] = time_best(what, s, x, w, b, y, dx, dw, db, workspace, &peer, 9);
            printf("%-38s %3d %8.1f %8.1f %7.0f%% %8.1f %8.1f %7.0f%%\n", cases[i].name,
                   threads, flops / t[RUN_FORWARD] * 1e-9, flops / t[RUN_GEMMS_FORWARD] * 1e-9,
                   100.0 * t[RUN_GEMMS_FORWARD] / t[RUN_FORWARD],
                   2 * flops / t[RUN_BACKWARD] * 1e-9, 2 * flops / t[RUN_GEMMS_BACKWARD] * 1e-9,
                   100.0 * t[RUN_GEMMS_BACKWARD] / t[RUN_BACKWARD]);
        }
        free(x); free(w); free(b); free(y); free(dx); free(dw); free(db); free(workspace);
        free(col); free(cat); free(dcol); free(y_peer);
    }
    return 0;
}
