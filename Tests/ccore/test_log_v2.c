/*
 * test_log_v2: the version-2 record fields (docs/log-format.md) recomputed
 * independently, in float64, from the per-parameter LCA of a step.
 *
 * After one step of a fresh trainer, lca_trainer_lca_totals holds each
 * parameter's LCA_{1,i} exactly (0 + LCA). From those values and the
 * parameters before and after the step, the test computes
 *   - f = 2^-30 · max_i |LCA_i| (with ldexp),
 *   - helped (LCA < −f), hurt (LCA > f), zero (the rest) per tensor,
 *   - the helping and hurting sums (float64, index order),
 *   - unmoved (θ_i after == θ_i before),
 *   - the histogram of |LCA| beyond the floor over the 30 bins, the edges
 *     from the test's own pow(10, −14 + k/2), by a linear scan,
 * and compares each with the record exactly. Also: the core's edges are
 * the doubles nearest 10^(−14 + k/2); Σ bins = helped + hurt per tensor;
 * lca = helping + hurting + a rest within zero · f (rounding stated);
 * a frozen tensor is wholly unmoved; a conv bias before batch norm (true
 * gradient 0) is all within the floor; the log header says version 2 and
 * lists the floor and the edges, and lca_histogram = 0 gives
 * "lca_histogram": null and records 240·T bytes shorter with the same
 * other bytes.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BINS = 30 };

static double test_edges[BINS - 1];

static unsigned bin_of(double size) {
    unsigned b = 0;
    while (b < BINS - 1 && size >= test_edges[b]) b++;
    return b;
}

typedef struct expected {
    double floor;
    double helping[64], hurting[64];
    uint64_t helped[64], hurt[64], zero[64], unmoved[64];
    uint32_t histogram[64 * 2 * BINS];
} expected;

/* The fields of record 1 from the per-parameter LCA and the parameters. */
static void recompute(const lca_model *model, const double *lca, const float *before,
                      const float *after, expected *e) {
    memset(e, 0, sizeof *e);
    size_t T = lca_model_tensor_count(model), K = lca_model_parameter_count(model);
    double largest = 0;
    for (size_t i = 0; i < K; i++) largest = fmax(largest, fabs(lca[i]));
    e->floor = ldexp(largest, -30);
    for (size_t t = 0; t < T; t++) {
        lca_tensor_info info;
        REQUIRE_OK(lca_model_tensor(model, t, &info));
        for (size_t i = info.offset; i < info.offset + info.count; i++) {
            if (after[i] == before[i]) e->unmoved[t]++;
            if (lca[i] < -e->floor) {
                e->helped[t]++;
                e->helping[t] += lca[i];
                e->histogram[(2 * t) * BINS + bin_of(-lca[i])]++;
            } else if (lca[i] > e->floor) {
                e->hurt[t]++;
                e->hurting[t] += lca[i];
                e->histogram[(2 * t + 1) * BINS + bin_of(lca[i])]++;
            } else {
                e->zero[t]++;
            }
        }
    }
}

static bool same_doubles(const double *a, const double *b, size_t n) {
    return memcmp(a, b, n * sizeof(double)) == 0;
}

/* One step of spec (freezing `frozen` if not NULL); compares record 1 with
 * the recomputation. Returns the zero count of tensor `watch` (or 0). */
static uint64_t check_step(const char *label, const char *spec, const lca_dataset *data,
                           const char *frozen, const char *watch) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_config config = lca_config_default();
    config.iterations = 1;
    config.batch_size = 100;
    config.lca_subset = 400;
    lca_model_initialize(model, config.seed);
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    if (frozen) REQUIRE_OK(lca_trainer_set_tensor_lr_scale(trainer, frozen, 0));
    size_t K = lca_model_parameter_count(model), T = lca_model_tensor_count(model);
    if (T > 64) test_fail("%s: more tensors than the test holds", label);
    float *before = test_alloc(K * sizeof(float));
    memcpy(before, lca_model_parameters(model), K * sizeof(float));
    lca_record record;
    REQUIRE_OK(lca_trainer_step(trainer, &record));
    const lca_view_record *v = &record.train;
    expected *e = test_alloc(sizeof *e);
    recompute(model, lca_trainer_lca_totals(trainer), before, lca_model_parameters(model), e);

    char what[200];
    snprintf(what, sizeof what, "%s: lca_floor == 2^-30 · max |LCA|", label);
    check_true(v->lca_floor == e->floor, what, "%.17g vs %.17g", v->lca_floor, e->floor);
    snprintf(what, sizeof what, "%s: helped, hurt, zero, unmoved per tensor", label);
    check_true(memcmp(v->tensor_helped, e->helped, T * 8) == 0 && memcmp(v->tensor_hurt, e->hurt, T * 8) == 0 &&
                   memcmp(v->tensor_zero, e->zero, T * 8) == 0 &&
                   memcmp(v->tensor_unmoved, e->unmoved, T * 8) == 0,
               what, "tensor 0: helped %llu/%llu hurt %llu/%llu zero %llu/%llu unmoved %llu/%llu",
               (unsigned long long)v->tensor_helped[0], (unsigned long long)e->helped[0],
               (unsigned long long)v->tensor_hurt[0], (unsigned long long)e->hurt[0],
               (unsigned long long)v->tensor_zero[0], (unsigned long long)e->zero[0],
               (unsigned long long)v->tensor_unmoved[0], (unsigned long long)e->unmoved[0]);
    snprintf(what, sizeof what, "%s: helping and hurting sums bit for bit", label);
    check_true(same_doubles(v->tensor_helping, e->helping, T) && same_doubles(v->tensor_hurting, e->hurting, T),
               what, "tensor 0: %.17g/%.17g, %.17g/%.17g", v->tensor_helping[0], e->helping[0],
               v->tensor_hurting[0], e->hurting[0]);
    snprintf(what, sizeof what, "%s: histogram equal", label);
    size_t first_diff = 0;
    while (v->tensor_histogram && first_diff < T * 2 * BINS &&
           v->tensor_histogram[first_diff] == e->histogram[first_diff])
        first_diff++;
    check_true(v->tensor_histogram && first_diff == T * 2 * BINS, what,
               "%zu counts compared, first difference at %zu", T * 2 * BINS, first_diff);

    /* sums: lca = helping + hurting + rest, |rest| <= zero·f plus the
     * rounding of three float64 sums of count terms (count·ε/2 of their
     * absolute sums each); bins add up to helped + hurt */
    double worst = 0;
    int bins_off = 0;
    uint64_t watched = 0;
    for (size_t t = 0; t < T; t++) {
        lca_tensor_info info;
        REQUIRE_OK(lca_model_tensor(model, t, &info));
        double rest = v->tensor_lca[t] - v->tensor_helping[t] - v->tensor_hurting[t];
        double inside = (double)v->tensor_zero[t] * v->lca_floor;
        double bound = inside + 3.0 * ((double)info.count + 2) * ldexp(1, -53) *
                                    (v->tensor_hurting[t] - v->tensor_helping[t] + inside);
        if (bound > 0) worst = fmax(worst, fabs(rest) / bound);
        else if (rest != 0) worst = INFINITY;
        uint64_t counted = 0;
        for (int b = 0; b < 2 * BINS; b++) counted += v->tensor_histogram[t * 2 * BINS + b];
        if (counted != v->tensor_helped[t] + v->tensor_hurt[t]) bins_off++;
        if (frozen && strcmp(info.name, frozen) == 0) {
            snprintf(what, sizeof what, "%s: frozen %s wholly unmoved, LCA 0", label, frozen);
            check_true(v->tensor_unmoved[t] == info.count && v->tensor_lca[t] == 0 && v->tensor_zero[t] == info.count,
                       what, "unmoved %llu of %zu, lca %g", (unsigned long long)v->tensor_unmoved[t],
                       info.count, v->tensor_lca[t]);
        }
        if (watch && strcmp(info.name, watch) == 0) {
            watched = v->tensor_zero[t];
            printf("     %s: %s: %llu of %zu within the floor %.3e (lca %+.3e)\n", label, watch,
                   (unsigned long long)watched, info.count, v->lca_floor, v->tensor_lca[t]);
        }
    }
    snprintf(what, sizeof what, "%s: |lca − helping − hurting| / (zero·f + rounding)", label);
    check_le(what, worst, 1.0);
    snprintf(what, sizeof what, "%s: histogram bins add up to helped + hurt", label);
    check_true(bins_off == 0, what, "%d tensors off", bins_off);
    free(e);
    free(before);
    lca_trainer_free(trainer);
    lca_model_free(model);
    return watched;
}

/* The file's bytes, NUL-terminated. */
static char *read_file(const char *path, size_t *length) {
    uint8_t *bytes = test_read_bytes(path, length);
    char *text = test_alloc(*length + 1);
    memcpy(text, bytes, *length);
    text[*length] = 0;
    free(bytes);
    return text;
}

static void test_header_and_no_histogram(const lca_dataset *data) {
    static char with_path[4096], without_path[4096];
    snprintf(with_path, sizeof with_path, "%s", test_temp_path("with.log"));
    snprintf(without_path, sizeof without_path, "%s", test_temp_path("without.log"));
    const char *paths[2] = {with_path, without_path};
    size_t sizes[2];
    for (int histogram = 1; histogram >= 0; histogram--) {
        lca_model *model;
        REQUIRE_OK(lca_model_new(&model, "64-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
        lca_config config = lca_config_default();
        config.iterations = 3;
        config.batch_size = 200;
        config.lca_validation_view = 1;
        config.lca_histogram = histogram;
        lca_model_initialize(model, config.seed);
        lca_trainer *trainer;
        REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
        lca_log *log;
        REQUIRE_OK(lca_log_open(&log, paths[histogram ? 0 : 1], trainer));
        REQUIRE_OK(lca_trainer_set_log(trainer, log));
        lca_record record;
        for (int i = 0; i < 3; i++) REQUIRE_OK(lca_trainer_step(trainer, &record));
        check_true((record.train.tensor_histogram != NULL) == (histogram != 0) &&
                       (record.validation.tensor_histogram != NULL) == (histogram != 0),
                   histogram ? "lca_histogram 1: both views' histograms" : "lca_histogram 0: no histogram",
                   "train %p", (const void *)record.train.tensor_histogram);
        sizes[histogram ? 0 : 1] = lca_log_record_size(trainer);
        REQUIRE_OK(lca_trainer_set_log(trainer, NULL));
        REQUIRE_OK(lca_log_close(log));
        lca_trainer_free(trainer);
        lca_model_free(model);
    }
    check_true(sizes[0] - sizes[1] == 2 * 4 * 2 * BINS * 4,
               "records without the histogram are 2 views × 4 tensors × 240 bytes shorter", "%zu vs %zu",
               sizes[0], sizes[1]);
    size_t a_length, b_length;
    char *a = read_file(paths[0], &a_length), *b = read_file(paths[1], &b_length);
    uint32_t version = (uint32_t)(uint8_t)a[8] | (uint32_t)(uint8_t)a[9] << 8;
    check_true(version == 2, "the preamble says version 2", "%u", version);
    /* the JSON header after the 24-byte preamble */
    const char *ha = a + 24, *hb = b + 24;
    check_true(strstr(ha, "\"version\": 2,") != NULL, "the header says version 2", "no \"version\": 2");
    check_true(strstr(ha, "\"zero_floor\": {\"ratio\": 9.313225746154785e-10, \"relative_to\": "
                         "\"the largest |LCA| of the iteration and view\"}") != NULL,
               "the header's zero_floor", "absent");
    check_true(strstr(ha, "\"lca_histogram\": {\"bins\": 30, \"edges\": [1e-14, 3.1622776601683796e-14, "
                         "1e-13,") != NULL && strstr(ha, "0.31622776601683794, 1]}") != NULL,
               "the header's lca_histogram edges", "absent");
    check_true(strstr(hb, "\"lca_histogram\": null,") != NULL, "lca_histogram 0: \"lca_histogram\": null",
               "absent");
    check_true(strstr(ha, "{\"name\": \"val_lca_histogram\", \"type\": \"<u4\"") != NULL &&
                   strstr(hb, "val_lca_histogram") == NULL && strstr(hb, "\"val_unmoved\"") != NULL,
               "fields list: val_lca_histogram only with the histogram", "missing or extra");
    free(a);
    free(b);
}

/* Resuming a version-1 log (here: a version-2 one with its version byte
 * set to 1) is refused naming both versions. */
static void test_resume_across_versions(const lca_dataset *data) {
    lca_model *model;
    REQUIRE_OK(lca_model_new(&model, "64-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_config config = lca_config_default();
    config.iterations = 2;
    config.batch_size = 200;
    lca_model_initialize(model, config.seed);
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, model, data, &config));
    const char *path = test_temp_path("resume.log");
    lca_log *log;
    REQUIRE_OK(lca_log_open(&log, path, trainer));
    REQUIRE_OK(lca_log_close(log));
    size_t length;
    uint8_t *bytes = test_read_bytes(path, &length);
    bytes[8] = 1;
    test_write_bytes(path, bytes, length);
    free(bytes);
    lca_status status = lca_log_resume(&log, path, trainer);
    check_true(status == LCA_ERR_MISMATCH && strstr(lca_last_error(), "byte 8: the log is version 1, this lca "
                                                                      "writes version 2") != NULL,
               "resuming a version-1 log is refused naming the versions", "%s", lca_last_error());
    if (status == LCA_OK) lca_log_close(log);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

int main(void) {
    test_begin("test_log_v2");
    test_temp_dir_make("log-v2");
    const double *edges = lca_histogram_edges();
    double worst = 0;
    int ascending = 1;
    for (int k = 0; k < BINS - 1; k++) {
        test_edges[k] = pow(10.0, -14.0 + k / 2.0);
        worst = fmax(worst, fabs(edges[k] - test_edges[k]) / test_edges[k]);
        if (k > 0 && !(edges[k] > edges[k - 1])) ascending = 0;
    }
    check_le("core edges vs pow(10, -14 + k/2), relative", worst, 2.3e-16);
    check_true(ascending && edges[0] == 1e-14 && edges[BINS - 2] == 1.0, "edges ascend from 1e-14 to 1",
               "%g … %g", edges[0], edges[BINS - 2]);
    memcpy(test_edges, edges, sizeof test_edges); /* the core's doubles, scanned linearly */
    check_true(LCA_ZERO_FLOOR_RATIO == ldexp(1, -30), "LCA_ZERO_FLOOR_RATIO is 2^-30", "%.17g",
               LCA_ZERO_FLOOR_RATIO);

    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    check_step("fc", "64-16-10", data, NULL, NULL);
    check_step("fc, fc1.bias frozen", "64-16-10", data, "fc1.bias", NULL);
    uint64_t inside = check_step("conv+bn", "input(1,8,8) conv(4,3) bn relu dense(10)", data, NULL, "conv1.bias");
    check_true(inside == 4, "conv bias before batch norm: all 4 within the floor", "%llu of 4",
               (unsigned long long)inside);
    test_header_and_no_histogram(data);
    test_resume_across_versions(data);
    lca_dataset_free(data);
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", test_temp_dir());
    if (system(command) != 0) printf("could not remove %s\n", test_temp_dir());
    return test_finish();
}
