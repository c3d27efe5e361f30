/* Writes the seed corpora of Tests/fuzz/corpus/<target>/ with the core
 * itself: `make fuzz-seeds` (the files are committed; run it again when a
 * format changes). Small real files: a cut of the embedded digits as IDX
 * (plain and gzip'ed), CIFAR-10 records, lca checkpoints and a trainer
 * state, the log of fuzz_support.h's fixed run, specs of docs/models.md. */
#include "fuzz_support.h"

#include <sys/stat.h>
#include <zlib.h>

static const char *root;

static void put(const char *target, const char *name, const void *data, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    rewind(f);
    uint8_t *bytes = malloc(*size + 1);
    if (fread(bytes, 1, *size, f) != *size) exit(1);
    fclose(f);
    return bytes;
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void check(lca_status status) {
    if (status != LCA_OK) {
        fprintf(stderr, "make_seeds: %s\n", lca_last_error());
        exit(1);
    }
}

static size_t gzip(const uint8_t *in, size_t n, uint8_t *out, size_t capacity) {
    z_stream z = {0};
    deflateInit2(&z, 9, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY);
    z.next_in = (uint8_t *)in, z.avail_in = (uInt)n;
    z.next_out = out, z.avail_out = (uInt)capacity;
    deflate(&z, Z_FINISH);
    size_t size = z.total_out;
    deflateEnd(&z);
    return size;
}

/* the IDX seed: 4-byte LE images length, images, labels (fuzz_idx.c) */
static void idx_seed(const char *name, const uint8_t *images, size_t ni, const uint8_t *labels,
                     size_t nl) {
    uint8_t *seed = malloc(4 + ni + nl);
    seed[0] = (uint8_t)ni, seed[1] = (uint8_t)(ni >> 8), seed[2] = (uint8_t)(ni >> 16),
    seed[3] = (uint8_t)(ni >> 24);
    memcpy(seed + 4, images, ni);
    memcpy(seed + 4 + ni, labels, nl);
    put("fuzz_idx", name, seed, 4 + ni + nl);
    free(seed);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_FOLDER\n");
        return 64;
    }
    root = argv[1];
    mkdir(root, 0777);
    lca_set_threads(1);

    /* IDX: the first 12 digits (8×8), pixels back to bytes */
    lca_dataset *digits;
    check(lca_dataset_open(&digits, "digits", NULL));
    enum { N = 12, F = 64 };
    uint32_t indices[N];
    for (uint32_t i = 0; i < N; i++) indices[i] = i;
    float x[N * F];
    int32_t labels[N];
    lca_dataset_gather(digits, indices, N, x, labels, NULL);
    uint8_t images[16 + N * F], label_file[8 + N];
    be32(images, 0x803), be32(images + 4, N), be32(images + 8, 8), be32(images + 12, 8);
    for (size_t i = 0; i < N * F; i++) images[16 + i] = (uint8_t)(x[i] * 255.0f + 0.5f);
    be32(label_file, 0x801), be32(label_file + 4, N);
    for (size_t i = 0; i < N; i++) label_file[8 + i] = (uint8_t)labels[i];
    idx_seed("digits12", images, sizeof images, label_file, sizeof label_file);
    uint8_t gi[4096], gl[512];
    size_t ngi = gzip(images, sizeof images, gi, sizeof gi);
    size_t ngl = gzip(label_file, sizeof label_file, gl, sizeof gl);
    idx_seed("digits12-gz", gi, ngi, gl, ngl);
    /* rank 2 (N × F) and rank 4 (N × 1 × 8 × 8) headers */
    uint8_t rank2[12 + N * F];
    be32(rank2, 0x802), be32(rank2 + 4, N), be32(rank2 + 8, F);
    memcpy(rank2 + 12, images + 16, N * F);
    idx_seed("digits12-rank2", rank2, sizeof rank2, label_file, sizeof label_file);
    uint8_t rank4[20 + N * F];
    be32(rank4, 0x804), be32(rank4 + 4, N), be32(rank4 + 8, 1), be32(rank4 + 12, 8),
        be32(rank4 + 16, 8);
    memcpy(rank4 + 20, images + 16, N * F);
    idx_seed("digits12-rank4", rank4, sizeof rank4, label_file, sizeof label_file);
    idx_seed("digits12-cut", images, 100, label_file, 10);

    /* CIFAR-10: records of a label and 3 planes of 32×32 (digits upscaled) */
    enum { R = 3073 };
    static uint8_t cifar[3 * R];
    for (size_t r = 0; r < 3; r++) {
        cifar[r * R] = (uint8_t)labels[r];
        for (size_t c = 0; c < 3; c++)
            for (size_t p = 0; p < 1024; p++)
                cifar[r * R + 1 + c * 1024 + p] =
                    (uint8_t)(images[16 + r * F + (p / 32 / 4) * 8 + (p % 32) / 4] >> c);
    }
    put("fuzz_cifar", "three-records.bin", cifar, sizeof cifar);
    put("fuzz_cifar", "one-record.bin", cifar, R);
    put("fuzz_cifar", "partial-record.bin", cifar, R + 100);
    uint8_t gc[16384];
    put("fuzz_cifar", "three-records.bin.gz", gc, gzip(cifar, sizeof cifar, gc, sizeof gc));

    /* safetensors: checkpoints of the fuzzed 8-6-4 model and of others, the
     * fixed run's state */
    const char *specs[] = {"8-6-4", "64-10", "input(1,8,8) conv(2,3) bn relu maxpool(2) dense(4)"};
    for (size_t i = 0; i < 3; i++) {
        lca_model *model;
        check(lca_model_new(&model, specs[i], LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
        lca_model_initialize(model, 7);
        const char *path = fuzz_path("checkpoint.safetensors");
        check(lca_checkpoint_save(path, model, 123));
        size_t size;
        uint8_t *bytes = slurp(path, &size);
        char name[64];
        snprintf(name, sizeof name, "checkpoint-%zu.safetensors", i);
        put("fuzz_safetensors", name, bytes, size);
        free(bytes);
        lca_model_free(model);
    }
    fuzz_run run;
    if (fuzz_run_open(&run, 1) != 0) check(LCA_ERR_IO);
    {
        const char *path = fuzz_path("state.safetensors");
        check(lca_trainer_save_state(run.trainer, path));
        size_t size;
        uint8_t *bytes = slurp(path, &size);
        put("fuzz_safetensors", "state.safetensors", bytes, size);
        free(bytes);
    }
    fuzz_run_close(&run);

    /* the log of the fixed run: 3 records (one more than the resume keeps),
     * and the same cut inside the third record */
    if (fuzz_run_open(&run, 0) != 0) check(LCA_ERR_IO);
    {
        char path[4200];
        snprintf(path, sizeof path, "%s", fuzz_path("run.lcalog"));
        lca_log *log;
        check(lca_log_open(&log, path, run.trainer));
        check(lca_trainer_set_log(run.trainer, log));
        for (int i = 0; i < 3; i++) {
            lca_record record;
            check(lca_trainer_step(run.trainer, &record));
        }
        check(lca_log_close(log));
        size_t size;
        uint8_t *bytes = slurp(path, &size);
        put("fuzz_log", "three-records.lcalog", bytes, size);
        put("fuzz_log", "partial-third.lcalog", bytes, size - lca_log_record_size(run.trainer) / 2);
        free(bytes);
    }
    fuzz_run_close(&run);

    /* specs: docs/models.md */
    const char *texts[] = {
        "784-100-50-10", "64-10", "fc", "lenet", "resnet20",
        "input(784) dense(100) relu dense(50) relu dense(10)",
        "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) "
        "dense(400) relu dropout(0.5) dense(10)",
        "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) "
        "block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)",
        "input(1,8,8) conv(4,3,valid) avgpool(2) flatten fc(10)",
        "input(3,8,8) conv(4,3,stride=2,same) maxpool(2,stride=1) gap dense(2)",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char name[32];
        snprintf(name, sizeof name, "spec-%02zu", i);
        put("fuzz_spec", name, texts[i], strlen(texts[i]));
    }
    lca_dataset_free(digits);
    return 0;
}
