/* eval_pass_bench.c: the evaluation-set gradient pass of `lca train` alone,
 * timed and converted into GFLOP/s.
 *
 * The pass that LCA runs two to 32 times per iteration: the mean softmax
 * cross-entropy over the evaluation set (by default the whole training
 * split of Fashion-MNIST, 55,000 examples after the 5,000-example
 * validation split of seed 1, as `lca train`) and its gradient, through
 * lca_evaluator, the integrator's own code (CCore/integrator.c): the
 * examples cut into fixed accumulation units (512 consecutive examples, or
 * the batch-norm group for a net with batch norm), each unit's gradient
 * summed in float32 in passes of at most CHUNK examples that continue each
 * other, the units spread over the threads (each gathered from the uint8
 * pixels, forward and backward) and added into the exact, order-independent
 * accumulator (CCore/exact_sum.c), so the result has the same bytes at any
 * chunk and thread count. "accumulation_unit" in the output is that unit,
 * "chunk" the examples a worker holds at once. A second figure, "kernels",
 * times forward and backward alone (lca_model_loss_and_gradient) on chunks
 * gathered beforehand, one chunk at a time with the threads inside the
 * layers, without the exact sums.
 *
 * GFLOP counts only the arithmetic the pass needs, for an MLP spec: forward
 * 2·Σ(in·out)·N, weight gradients 2·Σ(in·out)·N, input gradients for every
 * layer but the first 2·Σ_{layers ≥ 2}(in·out)·N (bias, ReLU and softmax
 * work not counted).
 *
 *   make BUILD=build/bench build/bench/liblca.a
 *   clang -std=c11 -O2 -ICCore/include -ICCore -c tools/bench/eval_pass_bench.c -o build/bench/eval_pass_bench.o
 *   clang build/bench/eval_pass_bench.o build/bench/liblca.a $(make -s ldlibs) \
 *       -o build/bench/eval_pass_bench
 *   (make BUILD=build/bench-pt OPENMP=0 … for the pthreads back end, docs/threads.md)
 *   ./build/bench/eval_pass_bench [threads] [repeats] [model] [chunk]   # one JSON object
 *
 * Each figure is reported as the best and the median of the repeats.
 *
 * Other models and data (issue 13: LeNet, ResNet-20 on CIFAR-format data):
 *   ./build/bench/eval_pass_bench T R MODEL CHUNK [--data SRC] [--examples N]
 *       [--bn-group G] [--memory-budget BYTES] [--no-kernels]
 * SRC as `lca train --data` (default fashion-mnist); N = the first N examples
 * of the training split (0 = all of it); CHUNK 0 (the default) = the chunk
 * lca resolves from its default memory budget (what `lca train` uses; any
 * CHUNK is resolved as lca train resolves --eval-chunk: at most the unit,
 * the unit's passes of equal size, "chunk" prints it); G = the batch-norm
 * group (default 250); BYTES the memory budget (default lca's, 512 MiB:
 * ResNet-20 recomputes its blocks at it, and keeps every activation at
 * 689M and more, docs/memory.md); --no-kernels skips the kernel-only variant. "gflop"
 * is printed for MLPs only (0 otherwise: run_bench.py counts conv nets with
 * tools/bench/flops.py). "kernel" is lca_gemm_kernel_name(), the kernel
 * family that ran (LCA_KERNEL=avx512|avx2|portable forces one, lca.h).
 */
#define _POSIX_C_SOURCE 200809L
#include <lca.h>

#include "model.h" /* lca_model_resolve_chunk: the chunk lca train would use (CHUNK 0) */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(x) do { lca_status s_ = (x); if (s_ != LCA_OK) { \
    fprintf(stderr, "eval_pass_bench: %s: %s\n", #x, lca_last_error()); exit(1); } } while (0)

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double best(const double *v, int n) {
    double b = v[0];
    for (int i = 1; i < n; i++) if (v[i] < b) b = v[i];
    return b;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    const char *spec = argc > 3 ? argv[3] : "fc";
    size_t chunk = argc > 4 ? (size_t)atol(argv[4]) : 0;
    const char *source = "fashion-mnist";
    size_t examples = 0, bn_group = 250, budget = 0;
    int kernels = 1;
    for (int a = 5; a < argc; a++) {
        if (strcmp(argv[a], "--data") == 0 && a + 1 < argc) source = argv[++a];
        else if (strcmp(argv[a], "--examples") == 0 && a + 1 < argc) examples = (size_t)atol(argv[++a]);
        else if (strcmp(argv[a], "--bn-group") == 0 && a + 1 < argc) bn_group = (size_t)atol(argv[++a]);
        else if (strcmp(argv[a], "--no-kernels") == 0) kernels = 0;
        else if (strcmp(argv[a], "--memory-budget") == 0 && a + 1 < argc) budget = (size_t)atoll(argv[++a]);
        else repeats = 0; /* usage error below */
    }
    if (threads < 0 || repeats < 1 || bn_group < 1) {
        fprintf(stderr, "usage: eval_pass_bench [threads] [repeats] [model] [chunk, 0 = lca's] "
                        "[--data SRC] [--examples N] [--bn-group G] [--memory-budget BYTES] [--no-kernels]\n");
        return 64;
    }
    lca_set_threads(threads);

    lca_model *model;
    lca_dataset *data;
    CHECK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(model, 1);
    CHECK(lca_dataset_open(&data, source, NULL));
    CHECK(lca_model_check_data(model, data));
    size_t total = lca_dataset_count(data);
    size_t held_out = lca_validation_size(total, LCA_VALIDATION_DEFAULT); /* 5,000 for Fashion-MNIST */
    size_t count = total - held_out;
    uint32_t *training = malloc(count * sizeof *training);
    CHECK(lca_dataset_split(data, LCA_VALIDATION_DEFAULT, 1, training, NULL));
    if (examples > 0 && examples < count) count = examples;

    /* needed arithmetic of one pass, from the dense weights (out, in) */
    double macs_all = 0, macs_after_first = 0;
    int dense = 0;
    for (size_t t = 0; t < lca_model_tensor_count(model); t++) {
        lca_tensor_info info;
        CHECK(lca_model_tensor(model, t, &info));
        if (info.rank != 2) continue;
        double macs = (double)info.shape[0] * (double)info.shape[1];
        macs_all += macs;
        if (dense++ > 0) macs_after_first += macs;
    }
    int mlp = 1;
    for (size_t t = 0; t < lca_model_tensor_count(model); t++) {
        lca_tensor_info info;
        CHECK(lca_model_tensor(model, t, &info));
        if (info.rank > 2) mlp = 0;
    }
    double gflop = mlp ? 2.0 * (double)count * (2.0 * macs_all + macs_after_first) * 1e-9 : 0.0;

    size_t features = lca_dataset_features(data), k = lca_model_parameter_count(model);
    lca_config config = lca_config_default();
    config.eval_chunk = chunk;
    config.bn_group = bn_group;
    if (budget > 0) config.memory_budget = budget;
    lca_evaluator *evaluator;
    CHECK(lca_evaluator_new(&evaluator, model, data, training, count, &config));
    /* the chunk the evaluator resolved (0 = from the memory budget; never
     * above the unit), as lca train reports it */
    chunk = lca_model_resolve_chunk(model, chunk, config.bn_group, config.memory_budget);
    size_t chunks = (count + chunk - 1) / chunk;
    if (kernels) CHECK(lca_model_reserve(model, chunk));
    float *gradient = malloc(k * sizeof *gradient);
    double *sum = malloc(k * sizeof *sum);
    /* the kernel-only variant: every chunk gathered beforehand */
    float *all_x = kernels ? malloc(count * features * sizeof *all_x) : NULL;
    int32_t *all_labels = kernels ? malloc(count * sizeof *all_labels) : NULL;
    if (kernels) lca_dataset_gather(data, training, count, all_x, all_labels, NULL);
    const float *parameters = lca_model_parameters_const(model);

    double *pass = malloc((size_t)repeats * sizeof *pass);
    double *kernel = malloc((size_t)repeats * sizeof *kernel);
    double loss_check = 0;
    /* The passes back to back, as `lca train` runs them (the kernel-only
     * variant streams 172 MB of floats through the caches, which would
     * evict the uint8 pixels between passes if the two were interleaved). */
    for (int r = -1; r < repeats; r++) { /* r = -1: warm-up */
        double start = now_seconds();
        CHECK(lca_evaluator_run(evaluator, parameters, &loss_check, sum));
        if (r >= 0) pass[r] = now_seconds() - start;
    }
    for (int r = -1; r < repeats; r++) {
        if (!kernels) { if (r >= 0) kernel[r] = 0.0; continue; }
        double start = now_seconds();
        for (size_t c = 0; c < chunks; c++) {
            size_t first = c * chunk, n = count - first < chunk ? count - first : chunk;
            double loss;
            CHECK(lca_model_loss_and_gradient(model, parameters, all_x + first * features,
                                              all_labels + first, NULL, n, &loss, gradient));
        }
        if (r >= 0) kernel[r] = now_seconds() - start;
    }
    /* FNV-1a over the gradient's bytes and the loss: two builds, budgets or
     * thread counts that give the same bytes print the same hash */
    uint64_t hash = 1469598103934665603ull;
    for (size_t i = 0; i < k * sizeof *sum + sizeof loss_check; i++) {
        unsigned char byte = i < k * sizeof *sum ? ((const unsigned char *)sum)[i]
                                                 : ((const unsigned char *)&loss_check)[i - k * sizeof *sum];
        hash = (hash ^ byte) * 1099511628211ull;
    }
    double pass_best = best(pass, repeats), kernel_best = best(kernel, repeats);
    const char *kernel_family = lca_gemm_kernel_name();
    double pass_median = median(pass, repeats), kernel_median = median(kernel, repeats);
    printf("{\"model\": \"%s\", \"threads\": %d, \"backend\": \"%s\", \"kernel\": \"%s\", \"examples\": %zu, "
           "\"data\": \"%s\", \"bn_group\": %zu, \"accumulation_unit\": %zu, \"chunk\": %zu, \"chunks\": %zu, \"gflop\": %.4f, \"repeats\": %d, \"loss\": %.6f, "
           "\"pass_best_s\": %.5f, \"pass_median_s\": %.5f, "
           "\"pass_gflops_best\": %.2f, \"pass_gflops_median\": %.2f, "
           "\"kernel_best_s\": %.5f, \"kernel_median_s\": %.5f, "
           "\"kernel_gflops_best\": %.2f, \"kernel_gflops_median\": %.2f, "
           "\"memory_budget\": %zu, \"recomputes\": %d, \"gradient_hash\": \"%016llx\"}\n",
           lca_model_spec(model), lca_threads(), lca_thread_backend(), kernel_family, count,
           source, bn_group, lca_model_accumulation_unit(model, bn_group), chunk, chunks, gflop, repeats, loss_check, pass_best, pass_median, gflop / pass_best,
           gflop / pass_median, kernel_best, kernel_median,
           kernel_best > 0 ? gflop / kernel_best : 0.0, kernel_median > 0 ? gflop / kernel_median : 0.0,
           config.memory_budget, (int)lca_model_recomputes(model), (unsigned long long)hash);
    free(pass); free(kernel); free(all_x); free(all_labels);
    free(gradient); free(sum); free(training);
    lca_evaluator_free(evaluator);
    lca_dataset_free(data);
    lca_model_free(model);
    return 0;
}
