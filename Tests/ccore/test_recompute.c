/* test_recompute.c: recomputing a residual net by segments never changes a
 * byte (pass.c, "segments"; docs/memory.md).
 *
 * A residual net without dropout keeps only its blocks' inputs and the
 * batch-norm statistics, and recomputes a block's activations in the
 * backward pass. The same model with store_all (every activation kept, the
 * layout of before) is the reference; both run the same kernels, so the
 * results must be the same bytes, not merely close:
 *   - evaluation passes (loss and gradient), one group and several groups
 *     in one call (the last shorter), at 1 and 2 threads;
 *   - training passes (loss, gradient, running statistics);
 *   - a group cut into sub-chunks (the group pass recomputes too), against
 *     the stored pass over the whole group;
 *   - the workspace is smaller (ResNet-20's at 250 examples printed), and
 *     nets that must keep everything (no blocks, or dropout) do. */
#include "internal.h"
#include "model.h"
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_RESNET "input(1,8,8) conv(4,3) bn relu block(4) block(8,stride=2) gap dense(10)"
#define POOLED_RESNET "input(1,8,8) conv(4,3) bn relu block(4) maxpool(2) block(6) gap dense(10)"
#define BLOCK_FIRST "input(2,8,8) block(4) block(4,stride=2) gap dense(10)"
#define NO_BLOCKS "input(1,8,8) conv(4,3) bn relu maxpool(2) flatten dense(10)"
#define DROPOUT_BLOCKS "input(1,8,8) conv(4,3) bn relu dropout(0.3) block(4) gap dense(10)"

static size_t differing(const void *a, const void *b, size_t count, size_t size) {
    size_t differ = 0;
    for (size_t i = 0; i < count; i++)
        differ += memcmp((const char *)a + i * size, (const char *)b + i * size, size) != 0;
    return differ;
}

/* Two copies of spec at the same parameters: kept (store_all) and
 * recomputed, each reserved for n examples. */
static void make_pair(const char *spec, size_t n, lca_model **kept, lca_model **again) {
    REQUIRE_OK(lca_model_new(kept, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    REQUIRE_OK(lca_model_new(again, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_model_initialize(*kept, 5);
    lca_model_initialize(*again, 5);
    (*kept)->store_all = true;
    REQUIRE_OK(lca_model_reserve(*kept, n));
    REQUIRE_OK(lca_model_reserve(*again, n));
}

static void compare(const char *spec, const char *what, double loss_a, double loss_b,
                    const float *a, const float *b, size_t k) {
    size_t differ = differing(a, b, k, sizeof(float));
    float worst = 0.0f;
    for (size_t i = 0; i < k; i++) {
        float d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
        if (d > worst) worst = d;
    }
    check_true(differ == 0 && memcmp(&loss_a, &loss_b, sizeof loss_a) == 0,
               "recomputed by segments: the bytes of the stored pass",
               "%s, %s: loss %.17g vs %.17g, %zu of %zu gradient values differ (worst %g)", spec,
               what, loss_a, loss_b, differ, k, (double)worst);
}

static void check_spec(const char *spec, size_t n, size_t group) {
    lca_model *kept, *again;
    make_pair(spec, n, &kept, &again);
    check_true(lca_model_recomputes(again) && again->recompute && !kept->recompute,
               "a residual net without dropout recomputes", "%s: %zu segments", spec,
               again->segment_count);
    size_t k = lca_model_parameter_count(kept), in = lca_model_input_size(kept);
    float *x = test_alloc(n * in * sizeof(float));
    int32_t *labels = test_alloc(n * sizeof(int32_t));
    float *ga = test_alloc(k * sizeof(float)), *gb = test_alloc(k * sizeof(float));
    test_rng rng;
    test_rng_seed(&rng, 17);
    test_fill_normal(x, n * in, &rng, 1.0);
    test_fill_labels(labels, n, &rng, 10);
    char what[160];
    for (int threads = 1; threads <= 2; threads++) {
        lca_set_threads(threads);
        const size_t groups[] = {n, group};
        for (int g = 0; g < 2; g++) {
            double la, lb;
            REQUIRE_OK(lca_model_forward_backward(kept, lca_model_parameters(kept), x, labels, NULL,
                                                  n, groups[g], 1.0 / (double)n, &la, ga));
            REQUIRE_OK(lca_model_forward_backward(again, lca_model_parameters(again), x, labels,
                                                  NULL, n, groups[g], 1.0 / (double)n, &lb, gb));
            snprintf(what, sizeof what, "evaluation, %zu examples in groups of %zu, %d thread(s)",
                     n, groups[g], threads);
            compare(spec, what, la, lb, ga, gb, k);
        }
        /* training: batch statistics over the n, running statistics once */
        double la, lb;
        lca_model_input input = {.x = x};
        REQUIRE_OK(lca_model_train_gradient(kept, &input, labels, NULL, n, &la, ga, NULL));
        REQUIRE_OK(lca_model_train_gradient(again, &input, labels, NULL, n, &lb, gb, NULL));
        snprintf(what, sizeof what, "training on %zu examples, %d thread(s)", n, threads);
        compare(spec, what, la, lb, ga, gb, k);
        size_t running = 0;
        for (size_t l = 0; l < kept->layer_count; l++) {
            const lca_layer *A = &kept->layers[l], *B = &again->layers[l];
            if (A->kind == LCA_LAYER_BATCHNORM)
                running += differing(A->running_mean, B->running_mean, 2 * A->out_c, sizeof(float));
        }
        check_true(running == 0, "recomputed training updates the running statistics once",
                   "%s, %d thread(s): %zu running values differ", spec, threads, running);
        /* a group in sub-chunks of 2 and 3 (the group pass, recomputing in
         * its sweeps) against the stored pass over the group */
        const size_t chunks[] = {2, 3};
        for (int c = 0; c < 2; c++) {
            REQUIRE_OK(lca_model_forward_backward(kept, lca_model_parameters(kept), x, labels, NULL,
                                                  group, group, 1.0 / (double)group, &la, ga));
            lca_group_input gi = {.x = x, .labels = labels};
            REQUIRE_OK(lca_model_forward_backward_group(again, lca_model_parameters(again), &gi,
                                                        group, chunks[c], group,
                                                        1.0 / (double)group, &lb, gb));
            snprintf(what, sizeof what, "a group of %zu in sub-chunks of %zu, %d thread(s)", group,
                     chunks[c], threads);
            compare(spec, what, la, lb, ga, gb, k);
        }
    }
    lca_set_threads(0);
    size_t bytes_kept = lca_model_workspace_need(kept, n), bytes_again = lca_model_workspace_need(again, n);
    check_true(bytes_again < bytes_kept, "recomputing holds less",
               "%s, %zu examples: workspace %zu bytes recomputed, %zu kept", spec, n, bytes_again,
               bytes_kept);
    free(x);
    free(labels);
    free(ga);
    free(gb);
    lca_model_free(kept);
    lca_model_free(again);
}

static void check_keeps(const char *spec) {
    lca_model *m;
    REQUIRE_OK(lca_model_new(&m, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    check_true(!lca_model_recomputes(m), "a net without blocks, or with dropout, keeps everything",
               "%s: %zu segments", spec, m->segment_count);
    lca_model_free(m);
}

/* ResNet-20's workspace for a group of 250, kept and recomputed (what the
 * default budget holds; docs/memory.md). */
static void report_resnet20(void) {
    lca_model *m;
    REQUIRE_OK(lca_model_new(&m, "resnet20", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    size_t again = lca_model_workspace_need(m, 250), one = lca_model_chunk_bytes(m, 1);
    m->store_all = true;
    size_t kept = lca_model_workspace_need(m, 250), kept_one = lca_model_chunk_bytes(m, 1);
    printf("     resnet20 workspace for 250 examples: %.1f MB recomputed, %.1f MB kept (%.2f×); "
           "one example: %zu bytes recomputed, %zu kept\n",
           (double)again / 1e6, (double)kept / 1e6, (double)again / (double)kept, one, kept_one);
    check_true(3 * again < kept, "ResNet-20 recomputed holds under a third of its activations",
               "%zu vs %zu bytes", again, kept);
    lca_model_free(m);
}

int main(void) {
    test_begin("test_recompute");
    check_spec(SMALL_RESNET, 11, 4);
    check_spec(POOLED_RESNET, 9, 5);
    check_spec(BLOCK_FIRST, 7, 3);
    check_spec("resnet20", 5, 3);
    check_keeps(NO_BLOCKS);
    check_keeps(DROPOUT_BLOCKS);
    report_resnet20();
    return test_finish();
}
