/*
 * test_model_layers: lca_model_layer_count and lca_model_layer describe a
 * model's spec-level layers (docs/models.md). Each spec below is compared
 * with the layer list written out by hand from docs/models.md (not from the
 * core): kinds, sizes, kernels, strides, padding and dropout probabilities;
 * "fc" and "784-100-50-10" give the same six entries; a residual block is
 * one entry; an index past the end fails with LCA_ERR_INVALID_ARGUMENT.
 */
#include "support.h"

#include <stdio.h>
#include <string.h>

typedef struct expected {
    lca_spec_layer_kind kind;
    size_t units, height, width, kernel, stride;
    int valid;
    double probability;
} expected;

#define IN(c, h, w) {LCA_SPEC_INPUT, c, h, w, 0, 1, 0, 0}
#define DENSE(u) {LCA_SPEC_DENSE, u, 0, 0, 0, 1, 0, 0}
#define CONV(c, k, s, v) {LCA_SPEC_CONV, c, 0, 0, k, s, v, 0}
#define RELU {LCA_SPEC_RELU, 0, 0, 0, 0, 1, 0, 0}
#define MAXPOOL(k, s) {LCA_SPEC_MAXPOOL, 0, 0, 0, k, s, 0, 0}
#define AVGPOOL(k, s) {LCA_SPEC_AVGPOOL, 0, 0, 0, k, s, 0, 0}
#define GAP {LCA_SPEC_GAP, 0, 0, 0, 0, 1, 0, 0}
#define BN {LCA_SPEC_BATCHNORM, 0, 0, 0, 0, 1, 0, 0}
#define DROPOUT(p) {LCA_SPEC_DROPOUT, 0, 0, 0, 0, 1, 0, p}
#define FLATTEN {LCA_SPEC_FLATTEN, 0, 0, 0, 0, 1, 0, 0}
#define BLOCK(c, s) {LCA_SPEC_BLOCK, c, 0, 0, 0, s, 0, 0}

static void check_spec(const char *spec, const expected *want, size_t count) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    size_t got = lca_model_layer_count(model);
    check_true(got == count, spec, "%zu layers, expected %zu", got, count);
    for (size_t i = 0; i < count && i < got; i++) {
        lca_layer_spec l;
        REQUIRE_OK(lca_model_layer(model, i, &l));
        const expected *e = &want[i];
        bool same = l.kind == e->kind && l.units == e->units && l.kernel == e->kernel &&
                    l.stride == e->stride && l.valid == e->valid &&
                    l.probability == (double)(float)e->probability &&
                    (e->kind != LCA_SPEC_INPUT || (l.height == e->height && l.width == e->width));
        if (!same)
            test_fail("%s: layer %zu: kind %d units %zu %zu×%zu kernel %zu stride %zu valid %d p %g; "
                      "expected kind %d units %zu kernel %zu stride %zu valid %d p %g",
                      spec, i, (int)l.kind, l.units, l.height, l.width, l.kernel, l.stride, l.valid,
                      l.probability, (int)e->kind, e->units, e->kernel, e->stride, e->valid,
                      e->probability);
    }
    lca_layer_spec past;
    lca_status status = lca_model_layer(model, got, &past);
    check_true(status == LCA_ERR_INVALID_ARGUMENT, spec, "index %zu (one past the end): status %d",
               got, (int)status);
    lca_model_free(model);
}

int main(void) {
    test_begin("test_model_layers");
    const expected fc[] = {IN(784, 1, 1), DENSE(100), RELU, DENSE(50), RELU, DENSE(10)};
    check_spec("fc", fc, 6);
    check_spec("784-100-50-10", fc, 6);
    check_spec("input(784) dense(100) relu fc(50) relu dense(10)", fc, 6);
    const expected linear[] = {IN(64, 1, 1), DENSE(10)};
    check_spec("64-10", linear, 2);
    const expected lenet[] = {IN(1, 28, 28), CONV(20, 5, 1, 0), RELU, MAXPOOL(2, 2),
                              CONV(40, 5, 1, 0), RELU, MAXPOOL(2, 2), DROPOUT(0.25),
                              DENSE(400), RELU, DROPOUT(0.5), DENSE(10)};
    check_spec("lenet", lenet, 12);
    const expected resnet[] = {IN(3, 32, 32), CONV(16, 3, 1, 0), BN, RELU, BLOCK(16, 1),
                               BLOCK(16, 1), BLOCK(16, 1), BLOCK(32, 2), BLOCK(32, 1),
                               BLOCK(32, 1), BLOCK(64, 2), BLOCK(64, 1), BLOCK(64, 1), GAP,
                               DENSE(10)};
    check_spec("resnet20", resnet, 15);
    const expected options[] = {IN(3, 32, 32), CONV(8, 3, 2, 1), BN, RELU, MAXPOOL(3, 1),
                                AVGPOOL(2, 2), DROPOUT(0.1), FLATTEN, BLOCK(8, 1),
                                BLOCK(12, 2), AVGPOOL(2, 1), DENSE(10)};
    check_spec("input(3,32,32) conv(8,3,stride=2,valid) bn relu maxpool(3,stride=1) avgpool(2) "
               "dropout(0.1) flatten block(8) block(12,stride=2) avgpool(2,stride=1) dense(10)",
               options, 12);
    const expected gap[] = {IN(2, 4, 4), CONV(4, 3, 1, 0), GAP, DENSE(3)};
    check_spec("input(2,4,4) conv(4,3,same) gap dense(3)", gap, 4);
    return test_finish();
}
