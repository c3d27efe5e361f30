/* pass_hash.c: FNV-1a hashes of the losses, gradients and running
 * statistics of many passes, one line a pass and a TOTAL: the evidence
 * that a change to the pass or its kernels keeps every byte (build it
 * against the library before and after, diff the outputs; run it under
 * LCA_KERNEL=portable too). Nine nets (ResNet-20, residual nets with max
 * pooling and projections, bn -> relu and relu -> bn, a dense batch norm,
 * LeNet with dropout, an MLP), each stored (store_all) and recomputed, at
 * 1 and 2 threads: loss_and_gradient, evaluation in groups, training (the
 * running statistics), group passes in sub-chunks (evaluation and
 * training), a kept forward with two masked backward passes.
 *
 *   make BUILD=build/bench build/bench/liblca.a
 *   clang -std=c11 -O2 -ICCore/include -ICCore -D_GNU_SOURCE -c tools/bench/pass_hash.c -o build/bench/pass_hash.o
 *   clang build/bench/pass_hash.o build/bench/liblca.a -lz -lm $(make -s BUILD=build/bench ldlibs) -o build/bench/pass_hash
 *   ./build/bench/pass_hash > after.txt      # about a minute */
#include "internal.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv(uint64_t h, const void *p, size_t bytes) {
    const unsigned char *c = p;
    for (size_t i = 0; i < bytes; i++) { h ^= c[i]; h *= 1099511628211ull; }
    return h;
}
static uint64_t total = 1469598103934665603ull;

static void report(const char *spec, const char *what, double loss, const float *g, size_t k,
                   lca_model *m) {
    uint64_t h = fnv(1469598103934665603ull, &loss, sizeof loss);
    h = fnv(h, g, k * sizeof(float));
    for (size_t l = 0; l < m->layer_count; l++)
        if (m->layers[l].kind == LCA_LAYER_BATCHNORM)
            h = fnv(h, m->layers[l].running_mean, 2 * m->layers[l].out_c * sizeof(float));
    total = fnv(total, &h, sizeof h);
    printf("%016llx  %-70s %s\n", (unsigned long long)h, spec, what);
}

static void run_spec(const char *spec, size_t n, size_t group, int store_all) {
    lca_model *m;
    if (lca_model_new(&m, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY) != LCA_OK) { printf("bad %s\n", spec); exit(1); }
    lca_model_initialize(m, 5);
    m->store_all = store_all;
    if (lca_model_reserve(m, n) != LCA_OK) exit(1);
    size_t k = lca_model_parameter_count(m), in = lca_model_input_size(m);
    float *x = malloc(n * in * sizeof(float)), *g = malloc(k * sizeof(float));
    int32_t *labels = malloc(n * sizeof(int32_t));
    uint64_t s = 12345;
    for (size_t i = 0; i < n * in; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    for (size_t i = 0; i < n; i++) labels[i] = (int32_t)(i * 7 % 10);
    char what[200];
    lca_rng rng;
    lca_rng_seed(&rng, 9, 1);
    for (int t = 1; t <= 2; t++) {
        lca_set_threads(t);
        double loss;
        const char *sa = store_all ? "stored" : "default";
        if (lca_model_loss_and_gradient(m, NULL, x, labels, NULL, n, &loss, g) != LCA_OK) exit(1);
        snprintf(what, sizeof what, "%s t%d loss_and_gradient n%zu", sa, t, n); report(spec, what, loss, g, k, m);
        if (lca_model_forward_backward(m, lca_model_parameters(m), x, labels, NULL, n, group, 1.0 / n, &loss, g) != LCA_OK) exit(1);
        snprintf(what, sizeof what, "%s t%d eval groups of %zu", sa, t, group); report(spec, what, loss, g, k, m);
        lca_model_input input = {.x = x};
        if (lca_model_train_gradient(m, &input, labels, NULL, n, &loss, g, &rng) != LCA_OK) exit(1);
        snprintf(what, sizeof what, "%s t%d train", sa, t); report(spec, what, loss, g, k, m);
        size_t chunks[] = {3, 7};
        for (int c = 0; c < 2; c++) {
            lca_group_input gi = {.x = x, .labels = labels};
            if (lca_model_forward_backward_group(m, lca_model_parameters(m), &gi, group, chunks[c], group, 1.0 / group, &loss, g) != LCA_OK) exit(1);
            snprintf(what, sizeof what, "%s t%d group %zu chunk %zu", sa, t, group, chunks[c]); report(spec, what, loss, g, k, m);
            if (lca_model_train_gradient_group(m, &gi, group, chunks[c], &loss, g, &rng) != LCA_OK) exit(1);
            snprintf(what, sizeof what, "%s t%d train group %zu chunk %zu", sa, t, group, chunks[c]); report(spec, what, loss, g, k, m);
        }
        if (!lca_model_streams_input(m)) {
            lca_kept_forward kept;
            lca_group_input gi = {.x = x, .labels = labels};
            if (lca_model_forward_kept(m, lca_model_parameters(m), &gi, n, group, &kept) != LCA_OK) exit(1);
            uint8_t *mask = malloc(n);
            for (int r = 0; r < 2; r++) {
                for (size_t i = 0; i < n; i++) mask[i] = (uint8_t)((i + r) % 3 != 0);
                if (lca_model_backward_kept(m, lca_model_parameters(m), &kept, mask, 1.0 / n, &loss, g) != LCA_OK) exit(1);
                snprintf(what, sizeof what, "%s t%d kept backward %d", sa, t, r); report(spec, what, loss, g, k, m);
            }
            free(mask);
        }
    }
    lca_set_threads(0);
    free(x); free(g); free(labels);
    lca_model_free(m);
}

int main(void) {
    const char *specs[] = {
        "resnet20",
        "input(3,16,16) conv(8,3) bn relu maxpool(2) block(8) block(16,stride=2) gap dense(10)",
        "input(1,8,8) conv(4,3) bn relu block(4) maxpool(2) block(6) gap dense(10)",
        "input(2,8,8) block(4) block(4,stride=2) gap dense(10)",
        "input(1,12,12) conv(6,3) bn relu maxpool(2) flatten dense(10)",
        "input(1,8,8) flatten dense(32) bn relu dense(10)",
        "input(1,8,8) conv(4,3) relu bn block(4) relu gap dense(10)",
        "lenet",
        "784-100-50-10",
    };
    size_t ns[] = {40, 37, 23, 17, 29, 33, 19, 21, 300};
    size_t groups[] = {16, 10, 8, 6, 9, 10, 7, 8, 128};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        for (int sa = 0; sa <= 1; sa++) run_spec(specs[i], ns[i], groups[i], sa);
    printf("TOTAL %016llx\n", (unsigned long long)total);
    return 0;
}
