/*
 * test_units: per-unit LCA views (config.lca_units), on "64-16-10" trained
 * on the embedded digits with the validation view on.
 *   - every record: Σ over a group's units of unit_lca == Σ of the group's
 *     tensor_lca within rounding (relative 1e-12; the sums add the same
 *     terms in different orders), for the training and validation views;
 *   - a frozen layer (learning-rate scale 0 for fc1.weight and fc1.bias):
 *     every one of its units is exactly 0;
 *   - after one step, lca_trainer_lca_totals holds each parameter's LCA of
 *     that step: summing it per output unit through the public tensor table
 *     (fc{l}.weight (out, in) row u plus fc{l}.bias[u]) gives unit_lca of
 *     record 1 (relative 1e-12);
 *   - the log: the header lists the unit groups and the fields unit_lca and
 *     val_unit_lca; the record size grows by 2·U·8 bytes; the bytes of
 *     unit_lca in the file equal the record's values; with lca_units off
 *     the record's unit_lca is NULL and the header has no unit fields.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITERATIONS 6

static lca_trainer *make_trainer(lca_model **model, const lca_dataset *data, int units,
                                 int validation_view) {
    REQUIRE_OK(lca_model_new(model, "64-16-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    lca_config config = lca_config_default();
    config.iterations = ITERATIONS;
    config.batch_size = 200;
    config.lca_units = units;
    config.lca_validation_view = validation_view;
    lca_model_initialize(*model, config.seed);
    lca_trainer *trainer;
    REQUIRE_OK(lca_trainer_new(&trainer, *model, data, &config));
    return trainer;
}

/* Worst relative difference between Σ units and Σ tensors over the groups. */
static double group_sums_difference(const lca_model *model, const lca_view_record *v) {
    double worst = 0;
    for (size_t g = 0; g < lca_model_unit_group_count(model); g++) {
        lca_unit_group_info group;
        REQUIRE_OK(lca_model_unit_group(model, g, &group));
        double units = 0, scale = 0;
        for (size_t u = 0; u < group.units; u++) {
            units += v->unit_lca[group.offset + u];
            scale += fabs(v->unit_lca[group.offset + u]);
        }
        /* the group's tensors are those named "<group>.…" */
        double tensors = 0;
        for (size_t k = 0; k < lca_model_tensor_count(model); k++) {
            lca_tensor_info info;
            REQUIRE_OK(lca_model_tensor(model, k, &info));
            size_t length = strlen(group.name);
            if (strncmp(info.name, group.name, length) == 0 && info.name[length] == '.')
                tensors += v->tensor_lca[k];
        }
        double relative = fabs(units - tensors) / fmax(fmax(scale, fabs(tensors)), 1e-300);
        if (relative > worst) worst = relative;
    }
    return worst;
}

static void test_sums_and_per_parameter(const lca_dataset *data) {
    lca_model *model;
    lca_trainer *trainer = make_trainer(&model, data, 1, 1);
    size_t U = lca_model_unit_count(model);
    check_true(U == 16 + 10, "unit count of 64-16-10", "%zu units", U);
    check_true(lca_model_unit_group_count(model) == 2, "two unit groups", "%zu groups",
               lca_model_unit_group_count(model));
    lca_unit_group_info second;
    REQUIRE_OK(lca_model_unit_group(model, 1, &second));
    check_true(strcmp(second.name, "fc2") == 0 && second.units == 10 && second.offset == 16,
               "group 1 is fc2, 10 units at offset 16", "%s, %zu units at %zu", second.name,
               second.units, second.offset);
    check_true(lca_model_unit_group(model, 2, &second) == LCA_ERR_INVALID_ARGUMENT,
               "group index past the end is an invalid argument", "%s", lca_last_error());

    ref_mlp ref;
    if (!ref_mlp_from_model(&ref, model)) return;
    double worst_train = 0, worst_validation = 0, worst_parameter = 0;
    for (int t = 0; t < ITERATIONS; t++) {
        lca_record record;
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        if (!record.train.unit_lca || !record.validation.unit_lca) {
            test_fail("iteration %d: unit_lca is NULL with lca_units on", t + 1);
            break;
        }
        worst_train = fmax(worst_train, group_sums_difference(model, &record.train));
        worst_validation = fmax(worst_validation, group_sums_difference(model, &record.validation));
        if (t == 0) {
            /* after one step the run totals are the step's per-parameter LCA */
            const double *lca = lca_trainer_lca_totals(trainer);
            size_t unit = 0;
            for (int l = 0; l < ref.layers; l++) {
                size_t in = ref.sizes[l], out = ref.sizes[l + 1];
                for (size_t u = 0; u < out; u++, unit++) {
                    double sum = lca[ref.bias_offset[l] + u], scale = fabs(sum);
                    for (size_t i = 0; i < in; i++) {
                        sum += lca[ref.weight_offset[l] + u * in + i];
                        scale += fabs(lca[ref.weight_offset[l] + u * in + i]);
                    }
                    double relative = fabs(sum - record.train.unit_lca[unit]) / fmax(scale, 1e-300);
                    worst_parameter = fmax(worst_parameter, relative);
                }
            }
            printf("     iteration 1: unit 0 of fc1 %+.10e, unit 0 of fc2 %+.10e\n",
                   record.train.unit_lca[0], record.train.unit_lca[16]);
        }
    }
    check_le("training view: Σ units of a group vs Σ of its tensors, relative", worst_train, 1e-12);
    check_le("validation view: Σ units of a group vs Σ of its tensors, relative", worst_validation,
             1e-12);
    check_le("unit_lca of step 1 vs per-parameter LCA summed per unit, relative", worst_parameter,
             1e-12);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

static void test_frozen_layer(const lca_dataset *data) {
    lca_model *model;
    lca_trainer *trainer = make_trainer(&model, data, 1, 0);
    REQUIRE_OK(lca_trainer_set_tensor_lr_scale(trainer, "fc1.weight", 0));
    REQUIRE_OK(lca_trainer_set_tensor_lr_scale(trainer, "fc1.bias", 0));
    double largest_frozen = 0, largest_moving = 0;
    for (int t = 0; t < ITERATIONS; t++) {
        lca_record record;
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        for (size_t u = 0; u < 16; u++) largest_frozen = fmax(largest_frozen, fabs(record.train.unit_lca[u]));
        for (size_t u = 16; u < 26; u++) largest_moving = fmax(largest_moving, fabs(record.train.unit_lca[u]));
    }
    check_le("frozen fc1: largest |unit LCA| (must be exactly 0)", largest_frozen, 0);
    check_true(largest_moving > 0, "fc2 still learns", "largest |unit LCA| %.3e", largest_moving);
    lca_trainer_free(trainer);
    lca_model_free(model);
}

/* The offset of a field in the header's "fields" list, or -1. */
static long field_offset(const char *header, const char *name) {
    char key[96];
    snprintf(key, sizeof key, "{\"name\": \"%s\", \"type\": \"<f8\", \"offset\": ", name);
    const char *at = strstr(header, key);
    return at ? strtol(at + strlen(key), NULL, 10) : -1;
}

static void test_log(const lca_dataset *data) {
    const char *path = "test_units.lcalog";
    lca_model *model;
    lca_trainer *plain = make_trainer(&model, data, 0, 1);
    size_t plain_size = lca_log_record_size(plain);
    lca_record record;
    REQUIRE_OK(lca_trainer_step(plain, &record));
    check_true(record.train.unit_lca == NULL && record.validation.unit_lca == NULL,
               "unit_lca is NULL with lca_units off", "%p", (const void *)record.train.unit_lca);
    lca_log *log;
    REQUIRE_OK(lca_log_open(&log, path, plain));
    REQUIRE_OK(lca_log_close(log));
    lca_trainer_free(plain);
    lca_model_free(model);
    {
        FILE *f = fopen(path, "rb");
        char bytes[16384] = {0};
        size_t n = f ? fread(bytes, 1, sizeof bytes - 1, f) : 0;
        if (f) fclose(f);
        check_true(n > 24 && !strstr(bytes + 24, "unit_lca") && !strstr(bytes + 24, "\"units\""),
                   "without lca_units the header has no unit fields", "%zu header bytes", n);
    }

    lca_trainer *trainer = make_trainer(&model, data, 1, 1);
    size_t U = lca_model_unit_count(model);
    check_true(lca_log_record_size(trainer) == plain_size + 2 * U * 8,
               "record size grows by 2·U·8 bytes", "%zu vs %zu + %zu", lca_log_record_size(trainer),
               plain_size, 2 * U * 8);
    REQUIRE_OK(lca_log_open(&log, path, trainer));
    double written[2][26];
    for (int t = 0; t < 2; t++) {
        REQUIRE_OK(lca_trainer_step(trainer, &record));
        REQUIRE_OK(lca_log_write(log, &record));
        if (t == 1) {
            memcpy(written[0], record.train.unit_lca, U * sizeof(double));
            memcpy(written[1], record.validation.unit_lca, U * sizeof(double));
        }
    }
    REQUIRE_OK(lca_log_close(log));
    size_t record_size = lca_log_record_size(trainer);
    lca_trainer_free(trainer);
    lca_model_free(model);

    FILE *f = fopen(path, "rb");
    if (!f) {
        test_fail("cannot reopen %s", path);
        return;
    }
    uint8_t *bytes = test_alloc(1 << 20);
    size_t n = fread(bytes, 1, 1 << 20, f);
    fclose(f);
    remove(path);
    uint32_t header_length = (uint32_t)bytes[12] | (uint32_t)bytes[13] << 8 |
                             (uint32_t)bytes[14] << 16 | (uint32_t)bytes[15] << 24;
    char *header = test_alloc(header_length + 1);
    memcpy(header, bytes + 24, header_length);
    header[header_length] = 0;
    check_true(strstr(header, "\"units\": [\n    {\"group\": \"fc1\", \"units\": 16, \"offset\": 0, \"tensors\": "
                              "[\"fc1.weight\", \"fc1.bias\"]},\n    {\"group\": \"fc2\", \"units\": 10, "
                              "\"offset\": 16, \"tensors\": [\"fc2.weight\", \"fc2.bias\"]}\n  ]") != NULL,
               "header lists the unit groups", "%.200s", strstr(header, "\"units\"") ? strstr(header, "\"units\"") : "(none)");
    check_true(strstr(header, "\"lca_units\": true") != NULL, "header config says lca_units", "%s", "");
    long train_at = field_offset(header, "unit_lca"), validation_at = field_offset(header, "val_unit_lca");
    check_true(train_at >= 0 && validation_at >= 0, "fields unit_lca and val_unit_lca listed",
               "offsets %ld, %ld", train_at, validation_at);
    check_true(n == 24 + header_length + 2 * record_size, "file holds two records", "%zu bytes", n);
    if (train_at >= 0 && validation_at >= 0 && n == 24 + header_length + 2 * record_size) {
        const uint8_t *second = bytes + 24 + header_length + record_size;
        int mismatched = 0;
        for (size_t u = 0; u < U; u++) {
            double a, b;
            memcpy(&a, second + train_at + 8 * u, 8);      /* little-endian hosts */
            memcpy(&b, second + validation_at + 8 * u, 8);
            if (a != written[0][u] || b != written[1][u]) mismatched++;
        }
        check_true(mismatched == 0, "unit_lca bytes in the log equal the record's values",
                   "%d of %zu units differ", mismatched, U);
    }
    free(header);
    free(bytes);
}

int main(void) {
    test_begin("test_units");
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    test_sums_and_per_parameter(data);
    test_frozen_layer(data);
    test_log(data);
    lca_dataset_free(data);
    return test_finish();
}
