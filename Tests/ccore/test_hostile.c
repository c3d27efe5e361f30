/* test_hostile.c: hostile input to the core (issue 12): model specs whose
 * layers would have no output, sizes that overflow, models whose memory
 * cannot fit (refused before allocation with the bytes needed), messages
 * longer than the core's fixed message buffer, non-finite values in a
 * checkpoint, and data files whose headers lie. Each case asserts the
 * status and what the message says. */
#include "internal.h"
#include "model.h" /* LCA_ACCUMULATION_UNIT */
#include "support.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* The call failed with status and its message holds every one of the
 * NULL-terminated parts. */
static void expect_failure(const char *what, lca_status got, lca_status want, ...) {
    const char *message = lca_last_error();
    bool ok = got == want;
    va_list parts;
    va_start(parts, want);
    for (const char *part; (part = va_arg(parts, const char *));)
        if (!strstr(message, part)) {
            ok = false;
            printf("     missing \"%s\"\n", part);
        }
    va_end(parts);
    check_true(ok, what, "status %s (want %s), message: %.600s%s", lca_status_string(got),
               lca_status_string(want), message, strlen(message) > 600 ? "…" : "");
}

static lca_status new_model(const char *spec, lca_model **model) {
    *model = NULL;
    return lca_model_new(model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY);
}

static void test_zero_outputs(void) {
    lca_model *m;
    expect_failure("conv larger than its input (valid)", new_model("input(1,8,8) conv(4,9,valid) dense(10)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 1 \"conv(4,9,valid)\"", "kernel 9×9",
                   "8×8 input", "0×0", NULL);
    check_true(m == NULL, "no model on failure", "%p", (void *)m);
    expect_failure("conv larger than its plane after another layer",
                   new_model("input(1,4,4) conv(2,3,valid) relu conv(4,2,valid) conv(4,2,valid) dense(10)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 4 \"conv(4,2,valid)\"", "kernel 2×2",
                   "1×1 input", NULL);
    expect_failure("pooling of a 1×1 plane",
                   new_model("input(1,4,4) maxpool(2) maxpool(2) maxpool(2) dense(10)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 3 \"maxpool(2)\"", "window 2×2", "1×1 input",
                   NULL);
    expect_failure("pooling window larger than the plane a pooling left",
                   new_model("input(1,3,3) avgpool(2,stride=1) maxpool(3) dense(10)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 2 \"maxpool(3)\"", "window 3×3", "2×2 input",
                   NULL);
    expect_failure("an MLP width names its layer",
                   new_model("input(100000000,1000,1000) dense(100000000)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 1", NULL);
    /* what fits exactly is accepted, and its shapes are right */
    lca_status status = new_model("input(1,8,8) conv(4,8,valid) dense(10)", &m);
    check_true(status == LCA_OK, "conv(4,8,valid) on 8×8 is a 1×1 output", "%s", lca_last_error());
    if (m) {
        lca_tensor_info t;
        lca_model_tensor(m, 2, &t);
        check_true(t.rank == 2 && t.shape[0] == 10 && t.shape[1] == 4, "fc1.weight is (10, 4)",
                   "%s rank %d (%lld, %lld)", t.name, t.rank, (long long)t.shape[0],
                   (long long)t.shape[1]);
        lca_model_free(m);
    }
    status = new_model("input(1,8,8) conv(4,3,stride=100) dense(10)", &m);
    check_true(status == LCA_OK, "a stride beyond the plane still gives 1×1", "%s", lca_last_error());
    lca_model_free(m);
    status = new_model("lenet", &m);
    check_true(status == LCA_OK, "lenet still builds", "%s", lca_last_error());
    lca_model_free(m);
    status = new_model("resnet20", &m);
    check_true(status == LCA_OK, "resnet20 still builds", "%s", lca_last_error());
    lca_model_free(m);
}

/* An evaluation chunk far beyond memory (2^40 examples, or 2^63, whose
 * buffer sizes used to wrap to a few bytes and crash the pass): for a net
 * without batch norm a chunk is at most the accumulation unit, so it is
 * taken as the unit; for a batch-norm net the chunk is the group, and a
 * group that large is refused by the trainer (with its bytes) and the
 * evaluator (naming the chunk and --bn-group). */
static void test_huge_eval_chunk(void) {
    lca_model *m, *bn;
    lca_dataset *d;
    REQUIRE_OK(lca_model_new(&m, "64-32-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    REQUIRE_OK(lca_model_new(&bn, "input(1,8,8) conv(4,3) bn relu dense(10)",
                             LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
    REQUIRE_OK(lca_dataset_open(&d, "digits", NULL));
    lca_model_initialize(m, 1);
    lca_model_initialize(bn, 1);
    const size_t chunks[] = {(size_t)1 << 40, (size_t)INT64_MAX};
    for (size_t i = 0; i < 2; i++) {
        lca_config c = lca_config_default();
        c.iterations = 2;
        c.eval_chunk = chunks[i];
        lca_trainer *t = NULL;
        lca_status status = lca_trainer_new(&t, m, d, &c);
        size_t resolved = status == LCA_OK ? lca_trainer_config(t)->eval_chunk : 0;
        check_true(status == LCA_OK && resolved == LCA_ACCUMULATION_UNIT,
                   "MLP: an evaluation chunk beyond memory is taken as the accumulation unit",
                   "chunk %zu: status %d, resolved to %zu (%s)", chunks[i], (int)status, resolved,
                   status == LCA_OK ? "" : lca_last_error());
        lca_trainer_free(t);
        char chunk[64];
        snprintf(chunk, sizeof chunk, "chunk of %zu examples", chunks[i]);
        c.eval_chunk = 0;
        c.bn_group = chunks[i];
        /* the trainer's own check (check_memory) sees the group's workspace */
        expect_failure("BN net: trainer with a group beyond memory", lca_trainer_new(&t, bn, d, &c),
                       LCA_ERR_OUT_OF_MEMORY, "training model \"input(1,8,8)", "of memory", NULL);
        lca_evaluator *e = NULL;
        expect_failure("BN net: evaluator with a group beyond memory",
                       lca_evaluator_new(&e, bn, d, NULL, 0, &c), LCA_ERR_OUT_OF_MEMORY, chunk,
                       "--bn-group", NULL);
    }
    lca_dataset_free(d);
    lca_model_free(m);
    lca_model_free(bn);
}

static void test_overflow(void) {
    lca_model *m;
    expect_failure("input of more than 2^64 values",
                   new_model("input(100000000,100000000,100000000) dense(10)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "more than 2^64 values", NULL);
    expect_failure("dense weight beyond 2^64",
                   new_model("input(100000000,1000,1000) dense(100000000)", &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 1 \"dense(100000000)\"", "overflow", NULL);
    /* 2·10^16 parameters: representable, but no machine has 8·10^16 bytes */
    expect_failure("parameters beyond memory, refused before allocation",
                   new_model("100000000-100000000-100000000-10", &m), LCA_ERR_OUT_OF_MEMORY,
                   "model \"100000000-100000000-100000000-10\" (20000001200000010 parameters)",
                   "would need 80000004800000040 bytes", "available", NULL);
    check_true(m == NULL, "no model on failure", "%p", (void *)m);
}

static void test_trainer_memory(void) {
    /* a model whose parameters fit but whose trainer (gradient, optimizer,
     * LCA vectors, an evaluation worker's unit gradient and exact sum: 104
     * bytes a parameter) cannot: refused by lca_trainer_new
     * before it allocates, with the bytes; under a 200 MB limit (the
     * machine's would need a model of gigabytes) */
    lca_memory_set_limit(200000000);
    lca_model *m;
    lca_status status = new_model("64-100000-10", &m); /* 7,500,010 parameters, 30 MB */
    check_true(status == LCA_OK, "the model alone fits", "%s", lca_last_error());
    if (status != LCA_OK) {
        lca_memory_set_limit(0);
        return;
    }
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    lca_config config = lca_config_default();
    lca_trainer *tr = NULL;
    expect_failure("trainer beyond memory", lca_trainer_new(&tr, m, data, &config),
                   LCA_ERR_OUT_OF_MEMORY,
                   "training model \"64-100000-10\" (7500010 parameters, 104 bytes a parameter "
                   "with LCA) would need 933673720 bytes (0.9 GB) of memory",
                   "but 200000000 bytes (0.2 GB) are available", NULL);
    check_true(tr == NULL, "no trainer on failure", "%p", (void *)tr);
    /* without LCA and with SGD: 16 bytes a parameter, and a small batch */
    config.lca = 0;
    config.optimizer = LCA_OPTIMIZER_SGD;
    config.batch_size = 8;
    status = lca_trainer_new(&tr, m, data, &config);
    check_true(status == LCA_OK, "the trainer without LCA fits", "%s", lca_last_error());
    lca_trainer_free(tr);
    /* the workspace alone: a batch of examples whose activations cannot fit */
    lca_model *wide;
    REQUIRE_OK(new_model("input(1,8,8) conv(64,3) conv(64,3) dense(10)", &wide));
    expect_failure("workspace beyond memory", lca_model_reserve(wide, 100000),
                   LCA_ERR_OUT_OF_MEMORY, "the workspace of model \"input(1,8,8)",
                   "for 100000 examples would need", "try a smaller --eval-chunk or --batch-size",
                   NULL);
    lca_model_free(wide);
    lca_memory_set_limit(0);
    lca_dataset_free(data);
    lca_model_free(m);
}

static void test_long_message(void) {
    /* a 5,000-character spec whose error is at its end: the reason must
     * survive the quoted spec (the core's messages were cut at 1,024 bytes) */
    size_t spaces = 5000;
    char *spec = malloc(spaces + 64);
    strcpy(spec, "input(1,8,8)");
    memset(spec + strlen(spec), ' ', spaces);
    strcpy(spec + 12 + spaces, "conv(4,9,valid) dense(10)");
    lca_model *m;
    expect_failure("error of a 5,000-character spec keeps its reason", new_model(spec, &m),
                   LCA_ERR_INVALID_ARGUMENT, "layer 1 \"conv(4,9,valid)\"",
                   "every layer's output must be at least 1×1)", NULL);
    const char *message = lca_last_error();
    check_true(strlen(message) > spaces && strstr(message, spec) != NULL,
               "the message quotes the whole spec", "%zu bytes", strlen(message));
    /* a parse error at character 5,013 */
    strcpy(spec + 12 + spaces, "conv(4,3) nonsense");
    expect_failure("parse error of a long spec names its character", new_model(spec, &m),
                   LCA_ERR_INVALID_ARGUMENT, "character 5023: unknown layer", NULL);
    /* a short message after a long one is itself */
    expect_failure("short message after a long one", new_model("", &m), LCA_ERR_INVALID_ARGUMENT,
                   "empty model spec", NULL);
    check_true(strlen(lca_last_error()) < 100, "short message", "%s", lca_last_error());
    /* a message that quotes the previous one (path: previous reason) */
    lca_status previous = new_model(spec, &m);
    lca_status status = lca_fail(previous, "file.json: %s", lca_last_error());
    check_true(status == previous && strncmp(lca_last_error(), "file.json: model spec", 21) == 0 &&
                   strstr(lca_last_error(), "unknown layer") != NULL,
               "a message may quote lca_last_error()", "%.80s", lca_last_error());
    free(spec);
}

/* Write a 64-10 checkpoint and poison one value of its last tensor. */
static void test_checkpoint_not_finite(void) {
    lca_model *m;
    REQUIRE_OK(new_model("64-10", &m));
    lca_model_initialize(m, 1);
    const char *path = test_temp_path("poisoned.safetensors");
    REQUIRE_OK(lca_checkpoint_save(path, m, 7));
    size_t n;
    uint8_t *bytes = test_read_bytes(path, &n);
    /* the data section ends with the last tensor's last value */
    const float values[3] = {NAN, INFINITY, -INFINITY};
    const char *names[3] = {"is NaN", "is +Inf", "is -Inf"};
    float *before = malloc(lca_model_parameter_count(m) * sizeof(float));
    memcpy(before, lca_model_parameters(m), lca_model_parameter_count(m) * sizeof(float));
    for (int v = 0; v < 3; v++) {
        memcpy(bytes + n - 4, &values[v], 4);
        test_write_bytes(path, bytes, n);
        lca_model *other;
        REQUIRE_OK(new_model("64-10", &other));
        lca_model_initialize(other, 2);
        float *init = malloc(lca_model_parameter_count(other) * sizeof(float));
        memcpy(init, lca_model_parameters(other), lca_model_parameter_count(other) * sizeof(float));
        expect_failure("non-finite F32 weight refused", lca_checkpoint_load(path, other, NULL),
                       LCA_ERR_NUMERIC, path, "tensor \"fc1.bias\" (F32)", "element 9 [9]",
                       names[v], "must be finite", NULL);
        check_true(memcmp(init, lca_model_parameters(other),
                          lca_model_parameter_count(other) * sizeof(float)) == 0,
                   "the model is unchanged", "parameters differ");
        free(init);
        lca_model_free(other);
    }
    free(before);
    free(bytes);
    lca_model_free(m);
}

/* An IDX file's bytes: header for dims (big-endian), then values. */
static void write_idx(const char *path, const uint32_t *dims, int rank, const uint8_t *values,
                      size_t n) {
    uint8_t header[4 + 4 * 4] = {0, 0, 0x08, (uint8_t)rank};
    for (int d = 0; d < rank; d++)
        for (int b = 0; b < 4; b++) header[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(header, 1, 4 + 4 * (size_t)rank, f) != 4 + 4 * (size_t)rank ||
        (n && fwrite(values, 1, n, f) != n) || fclose(f) != 0) {
        printf("cannot write %s\n", path);
        exit(2);
    }
}

static void test_class_notice(void) {
    /* labels 0, 7 and 255: a 256-class problem, said in a notice */
    enum { COUNT = 6, FEATURES = 4 };
    uint8_t pixels[COUNT * FEATURES] = {0};
    uint8_t labels[COUNT] = {0, 7, 255, 0, 7, 7};
    const char *images_path = test_temp_path("gaps-images.idx"), *labels_path = test_temp_path("gaps-labels.idx");
    write_idx(images_path, (uint32_t[]){COUNT, 2, 2}, 3, pixels, sizeof pixels);
    write_idx(labels_path, (uint32_t[]){COUNT}, 1, labels, sizeof labels);
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_open(&data, images_path, labels_path));
    check_true(lca_dataset_classes(data) == 256 && lca_dataset_label_count(data) == 3,
               "classes 256, 3 labels occur", "%d, %d", lca_dataset_classes(data),
               lca_dataset_label_count(data));
    char notice[512];
    size_t n = lca_dataset_class_notice(data, notice, sizeof notice);
    char want[512];
    snprintf(want, sizeof want, "data set %s: 256 classes (labels 0 … 255), of which 3 occur; "
             "missing: 1 … 6, 8 … 254; a model needs at least 256 outputs", images_path);
    check_true(n == strlen(want) && strcmp(notice, want) == 0, "the notice names the classes",
               "%s", notice);
    check_true(lca_dataset_class_notice(data, NULL, 0) == n, "length without a buffer", "%zu",
               lca_dataset_class_notice(data, NULL, 0));
    lca_dataset_free(data);

    /* labels 0 … 11, all present: more than 10 classes, no gaps */
    int32_t twelve[12];
    uint8_t twelve_pixels[12] = {0};
    for (int i = 0; i < 12; i++) twelve[i] = i;
    REQUIRE_OK(lca_dataset_from_arrays(&data, twelve_pixels, twelve, 12, 1, 12));
    n = lca_dataset_class_notice(data, notice, sizeof notice);
    check_true(strcmp(notice, "data set arrays: 12 classes (labels 0 … 11); a model needs at "
                              "least 12 outputs") == 0,
               "12 classes", "%s", notice);
    lca_dataset_free(data);

    /* many gaps: at most 6 ranges, then … */
    int32_t sparse[20];
    uint8_t sparse_pixels[20] = {0};
    for (int i = 0; i < 20; i++) sparse[i] = 2 * i;
    REQUIRE_OK(lca_dataset_from_arrays(&data, sparse_pixels, sparse, 20, 1, 39));
    n = lca_dataset_class_notice(data, notice, sizeof notice);
    check_true(strstr(notice, "of which 20 occur; missing: 1, 3, 5, 7, 9, 11 …; a model") != NULL,
               "missing labels shortened", "%s", notice);
    /* a small buffer is cut as snprintf cuts, and the length is the whole */
    char small[16];
    check_true(lca_dataset_class_notice(data, small, sizeof small) == n && strlen(small) == 15,
               "cut like snprintf", "%s", small);
    lca_dataset_free(data);

    /* the digits: 10 classes, all present: nothing to say */
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    check_true(lca_dataset_class_notice(data, notice, sizeof notice) == 0 && notice[0] == '\0',
               "no notice for the digits", "%s", notice);
    check_true(lca_dataset_label_count(data) == 10, "digits: 10 labels", "%d",
               lca_dataset_label_count(data));
    lca_dataset_free(data);
}

/* An IDX images file whose header is true (the file holds every byte, as
 * a sparse file) but which cannot fit in memory: refused before it is
 * allocated, with the bytes. */
static void test_idx_beyond_memory(void) {
    lca_memory_set_limit(100000000); /* 100 MB */
    uint32_t count = 100000;
    uint32_t side = 40; /* 160 MB of pixels */
    const char *images_path = test_temp_path("huge-images.idx"), *labels_path = test_temp_path("huge-labels.idx");
    write_idx(images_path, (uint32_t[]){count, side, side}, 3, NULL, 0);
    if (truncate(images_path, (off_t)(16 + (size_t)count * side * side)) != 0) {
        printf("skip IDX beyond memory: no sparse file: %s\n", strerror(errno));
        lca_memory_set_limit(0);
        return;
    }
    uint8_t *labels = calloc(count, 1);
    labels[1] = 1;
    write_idx(labels_path, (uint32_t[]){count}, 1, labels, count);
    free(labels);
    lca_dataset *data = NULL;
    expect_failure("IDX images beyond memory", lca_dataset_open(&data, images_path, labels_path),
                   LCA_ERR_OUT_OF_MEMORY, images_path, "100000 images of 1600 bytes would need "
                   "160400000 bytes (0.2 GB) of memory but 100000000 bytes (0.1 GB) are available",
                   NULL);
    check_true(data == NULL, "no data set", "%p", (void *)data);
    remove(images_path);
    lca_memory_set_limit(0);
}

int main(void) {
    test_begin("hostile input");
    test_temp_dir_make("hostile");
    test_zero_outputs();
    test_overflow();
    test_huge_eval_chunk();
    test_trainer_memory();
    test_long_message();
    test_checkpoint_not_finite();
    test_class_notice();
    test_idx_beyond_memory();
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", test_temp_dir());
    if (system(command) != 0) printf("could not remove %s\n", test_temp_dir());
    return test_finish();
}
