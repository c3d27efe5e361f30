/*
 * test_data_cifar.c: CIFAR-10 binary batches as a data source, and the
 * image shape every data set reports (CCore/data.c, lca_dataset_shape).
 *
 * Writes small CIFAR-format files from C in a temporary folder (2 batches
 * of 37 records, a stray data_batch_4.bin that must not be read because
 * data_batch_3.bin is missing, and a test_batch.bin that a folder never
 * reads), and checks, through the public API only:
 *   - count, features 3,072, classes 10, shape 3×32×32, source;
 *   - every gathered value equals byte/255 of the file, in file order
 *     (channels-first), with the labels, batch 1 before batch 2;
 *   - a folder, a single .bin file and "cifar10" via LCA_CIFAR10 agree;
 *   - corrupt files (truncated record, label 10, empty file, a folder
 *     without data_batch_1.bin, a labels file with a .bin) fail with the
 *     documented status and a message naming the file and the byte;
 *   - gzip batches (one member, two members, a folder of .bin.gz files)
 *     give the same values as the plain records; cut ones fail by name;
 *   - shapes of IDX images (1×28×28; rank 2 gives 1×1×F), digits (1×8×8)
 *     and array data sets (1×1×F).
 */
#include "support.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define RECORD 3073  /* label byte + 3 × 32 × 32 pixel bytes */
#define PIXELS 3072
#define PER_BATCH 37 /* not a multiple of anything the reader might assume */

/* ------------------------------------------------------------ temp files */

static char temp_dir[64];
static char created[64][512];
static int created_count;
static char folders[8][512];
static int folder_count;

/* temp_dir/name, remembered so that main can remove it. */
static const char *temp_path(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", temp_dir, name);
    for (int i = 0; i < created_count; i++)
        if (strcmp(created[i], path) == 0) return created[i];
    if (created_count == 64) {
        printf("too many temporary files\n");
        exit(2);
    }
    memcpy(created[created_count], path, sizeof path);
    return created[created_count++];
}

static const char *temp_folder(const char *name) {
    if (folder_count == 8) exit(2);
    snprintf(folders[folder_count], sizeof folders[0], "%s/%s", temp_dir, name);
    if (mkdir(folders[folder_count], 0755) != 0) {
        printf("cannot create %s: %s\n", folders[folder_count], strerror(errno));
        exit(2);
    }
    return folders[folder_count++];
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(bytes, 1, n, f) != n) || fclose(f) != 0) {
        printf("cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

/* n CIFAR records with random pixels and labels (labels cover 0 … 9). */
static uint8_t *make_batch(size_t n, test_rng *rng) {
    uint8_t *bytes = test_alloc(n * RECORD);
    for (size_t i = 0; i < n; i++) {
        uint8_t *record = bytes + i * RECORD;
        record[0] = (uint8_t)(i < 10 ? i : test_rng_below(rng, 10));
        for (size_t p = 0; p < PIXELS; p++) record[1 + p] = (uint8_t)test_rng_below(rng, 256);
    }
    return bytes;
}

/* ---------------------------------------------------------------- checks */

/* Gather every example in reverse order (so that indices matter) and
 * compare each value with byte/255 of records[i] (file order) and each
 * label with its label byte. Returns the number of mismatches. */
static size_t compare_with_records(const lca_dataset *data, const uint8_t *const *records,
                                   size_t count) {
    uint32_t *indices = test_alloc(count * sizeof *indices);
    float *x = test_alloc(count * PIXELS * sizeof *x);           /* (N, 3, 32, 32) */
    int32_t *labels = test_alloc(count * sizeof *labels);
    for (size_t i = 0; i < count; i++) indices[i] = (uint32_t)(count - 1 - i);
    lca_dataset_gather(data, indices, count, x, labels, NULL);
    size_t mismatches = 0;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *record = records[indices[i]];
        if (labels[i] != record[0]) mismatches++;
        for (size_t p = 0; p < PIXELS; p++)
            if (x[i * PIXELS + p] != (float)record[1 + p] / 255.0f) mismatches++;
    }
    free(indices);
    free(x);
    free(labels);
    return mismatches;
}

static void check_shape(const lca_dataset *data, const char *what, size_t c, size_t h,
                        size_t w) {
    size_t channels = 0, height = 0, width = 0;
    lca_status status = lca_dataset_shape(data, &channels, &height, &width);
    check_true(status == LCA_OK && channels == c && height == h && width == w &&
                   c * h * w == lca_dataset_features(data),
               what, "shape %zu×%zu×%zu (expected %zu×%zu×%zu), features %zu, status %s",
               channels, height, width, c, h, w, lca_dataset_features(data),
               lca_status_string(status));
}

/* Open source and expect status with every needle in the message. */
static void check_fails(const char *what, const char *source, const char *labels,
                        lca_status expected, const char *needle1, const char *needle2) {
    lca_dataset *data = NULL;
    lca_status status = lca_dataset_open(&data, source, labels);
    const char *message = lca_last_error();
    bool ok = status == expected && data == NULL && (!needle1 || strstr(message, needle1)) &&
              (!needle2 || strstr(message, needle2));
    check_true(ok, what, "%s (expected %s with \"%s\"%s%s%s): %s", lca_status_string(status),
               lca_status_string(expected), needle1 ? needle1 : "", needle2 ? " and \"" : "",
               needle2 ? needle2 : "", needle2 ? "\"" : "", message);
    lca_dataset_free(data);
}

/* ------------------------------------------------------------------ tests */

static uint8_t *batch1, *batch2, *stray, *test_batch;

static void test_folder_and_files(void) {
    test_rng rng;
    test_rng_seed(&rng, 20240601);
    batch1 = make_batch(PER_BATCH, &rng);
    batch2 = make_batch(PER_BATCH, &rng);
    stray = make_batch(PER_BATCH, &rng);
    test_batch = make_batch(PER_BATCH, &rng);
    const char *folder = temp_folder("cifar");
    char path[600];
    snprintf(path, sizeof path, "cifar/data_batch_1.bin");
    write_bytes(temp_path(path), batch1, PER_BATCH * RECORD);
    snprintf(path, sizeof path, "cifar/data_batch_2.bin");
    write_bytes(temp_path(path), batch2, PER_BATCH * RECORD);
    snprintf(path, sizeof path, "cifar/data_batch_4.bin"); /* after a gap: not read */
    write_bytes(temp_path(path), stray, PER_BATCH * RECORD);
    snprintf(path, sizeof path, "cifar/test_batch.bin");   /* never read from a folder */
    write_bytes(temp_path(path), test_batch, PER_BATCH * RECORD);

    const uint8_t *records[2 * PER_BATCH];
    for (size_t i = 0; i < PER_BATCH; i++) {
        records[i] = batch1 + i * RECORD;
        records[PER_BATCH + i] = batch2 + i * RECORD;
    }

    /* The folder: batches 1 and 2 in order. */
    lca_dataset *data = NULL;
    REQUIRE_OK(lca_dataset_open(&data, folder, NULL));
    check_true(lca_dataset_count(data) == 2 * PER_BATCH, "folder count",
               "%zu (2 batches of %d; data_batch_4.bin after the missing 3 and "
               "test_batch.bin not read)", lca_dataset_count(data), PER_BATCH);
    check_true(lca_dataset_features(data) == PIXELS, "folder features", "%zu",
               lca_dataset_features(data));
    check_true(lca_dataset_classes(data) == 10, "folder classes", "%d",
               lca_dataset_classes(data));
    check_true(strcmp(lca_dataset_source(data), folder) == 0, "folder source", "%s",
               lca_dataset_source(data));
    check_shape(data, "folder shape", 3, 32, 32);
    if (lca_dataset_count(data) == 2 * PER_BATCH) {
        size_t mismatches = compare_with_records(data, records, 2 * PER_BATCH);
        check_true(mismatches == 0, "folder values",
                   "%zu of %d pixels and labels differ from byte/255 of the files, in file "
                   "order, batch 1 then batch 2", mismatches, 2 * PER_BATCH * (PIXELS + 1));
        /* Spot-check the channels-first layout by hand: example 37 is the
         * first record of batch 2; its green plane starts at feature 1,024,
         * its blue pixel (row 31, column 31) is the record's last byte. */
        uint32_t index = PER_BATCH;
        float x[PIXELS];
        int32_t label = -1;
        lca_dataset_gather(data, &index, 1, x, &label, NULL);
        bool layout = label == batch2[0] && x[0] == (float)batch2[1] / 255.0f &&
                      x[1024] == (float)batch2[1 + 1024] / 255.0f &&
                      x[2048 + 31 * 32 + 31] == (float)batch2[RECORD - 1] / 255.0f;
        check_true(layout, "folder batch order and layout",
                   "example %d = batch 2 record 0: label %d (file %u), red[0][0] %.6f, "
                   "green[0][0] %.6f, blue[31][31] %.6f", PER_BATCH, (int)label, batch2[0],
                   (double)x[0], (double)x[1024], (double)x[PIXELS - 1]);
    }
    lca_dataset_free(data);

    /* A single file: just that batch. */
    snprintf(path, sizeof path, "%s/data_batch_2.bin", folder);
    REQUIRE_OK(lca_dataset_open(&data, path, NULL));
    check_true(lca_dataset_count(data) == PER_BATCH && lca_dataset_classes(data) == 10 &&
                   strcmp(lca_dataset_source(data), path) == 0,
               "single file", "%s: %zu images, %d classes", lca_dataset_source(data),
               lca_dataset_count(data), lca_dataset_classes(data));
    check_shape(data, "single file shape", 3, 32, 32);
    if (lca_dataset_count(data) == PER_BATCH) {
        size_t mismatches = compare_with_records(data, records + PER_BATCH, PER_BATCH);
        check_true(mismatches == 0, "single file values", "%zu of %d differ from the file",
                   mismatches, PER_BATCH * (PIXELS + 1));
    }
    lca_dataset_free(data);

    snprintf(path, sizeof path, "%s/test_batch.bin", folder);
    REQUIRE_OK(lca_dataset_open(&data, path, NULL));
    const uint8_t *test_records[PER_BATCH];
    for (size_t i = 0; i < PER_BATCH; i++) test_records[i] = test_batch + i * RECORD;
    size_t mismatches = lca_dataset_count(data) == PER_BATCH
                            ? compare_with_records(data, test_records, PER_BATCH)
                            : SIZE_MAX;
    check_true(mismatches == 0, "test_batch.bin as a single file", "%zu images, %zu mismatches",
               lca_dataset_count(data), mismatches);
    lca_dataset_free(data);

    /* "cifar10" names the folder in LCA_CIFAR10. */
    setenv("LCA_CIFAR10", folder, 1);
    REQUIRE_OK(lca_dataset_open(&data, "cifar10", NULL));
    mismatches = lca_dataset_count(data) == 2 * PER_BATCH
                     ? compare_with_records(data, records, 2 * PER_BATCH)
                     : SIZE_MAX;
    check_true(mismatches == 0 && strcmp(lca_dataset_source(data), "cifar10") == 0,
               "\"cifar10\" with LCA_CIFAR10", "source %s, %zu images, %zu mismatches",
               lca_dataset_source(data), lca_dataset_count(data), mismatches);
    check_shape(data, "\"cifar10\" shape", 3, 32, 32);
    lca_dataset_free(data);
    unsetenv("LCA_CIFAR10");
    check_fails("\"cifar10\" without LCA_CIFAR10", "cifar10", NULL, LCA_ERR_IO,
                "cannot be downloaded", "LCA_CIFAR10");
    setenv("LCA_CIFAR10", temp_path("no-such-folder"), 1);
    check_fails("\"cifar10\" with LCA_CIFAR10 not a folder", "cifar10", NULL, LCA_ERR_IO,
                "no-such-folder", "not a folder");
    unsetenv("LCA_CIFAR10");
    printf("cifar: folder (2 × %d records), single files and \"cifar10\" read every byte in "
           "file order\n", PER_BATCH);
}

static void test_corrupt(void) {
    char name[600];
    /* Truncated: 37 records and 100 bytes of a 38th. */
    uint8_t *bytes = test_alloc(PER_BATCH * RECORD + 100);
    memcpy(bytes, batch1, PER_BATCH * RECORD);
    memcpy(bytes + PER_BATCH * RECORD, batch1, 100);
    const char *truncated = temp_path("truncated.bin");
    write_bytes(truncated, bytes, PER_BATCH * RECORD + 100);
    snprintf(name, sizeof name, "byte %d", PER_BATCH * RECORD);
    check_fails("truncated record", truncated, NULL, LCA_ERR_FORMAT, "truncated.bin", name);
    check_fails("truncated record names the record size", truncated, NULL, LCA_ERR_FORMAT,
                "3,073", NULL);

    /* Label 10 in record 5. */
    memcpy(bytes, batch1, PER_BATCH * RECORD);
    bytes[5 * RECORD] = 10;
    const char *label10 = temp_path("label10.bin");
    write_bytes(label10, bytes, PER_BATCH * RECORD);
    snprintf(name, sizeof name, "byte %d", 5 * RECORD);
    check_fails("label 10", label10, NULL, LCA_ERR_FORMAT, "label10.bin", name);
    bytes[5 * RECORD] = 255;
    write_bytes(label10, bytes, PER_BATCH * RECORD);
    check_fails("label 255", label10, NULL, LCA_ERR_FORMAT, "label10.bin", name);

    /* Empty file. */
    const char *empty = temp_path("empty.bin");
    write_bytes(empty, "", 0);
    check_fails("empty file", empty, NULL, LCA_ERR_FORMAT, "empty.bin", "byte 0");

    /* A folder whose second batch is truncated: the error names that file. */
    const char *bad = temp_folder("bad-batch-2");
    write_bytes(temp_path("bad-batch-2/data_batch_1.bin"), batch1, PER_BATCH * RECORD);
    write_bytes(temp_path("bad-batch-2/data_batch_2.bin"), batch2, PER_BATCH * RECORD - 1);
    snprintf(name, sizeof name, "byte %d", (PER_BATCH - 1) * RECORD);
    check_fails("folder with a truncated data_batch_2.bin", bad, NULL, LCA_ERR_FORMAT,
                "data_batch_2.bin", name);

    /* A folder with later batches but no data_batch_1.bin. */
    const char *no_first = temp_folder("no-batch-1");
    write_bytes(temp_path("no-batch-1/data_batch_2.bin"), batch2, PER_BATCH * RECORD);
    check_fails("folder without data_batch_1.bin", no_first, NULL, LCA_ERR_IO, "no-batch-1",
                "data_batch_1.bin");

    /* A missing .bin file, and a labels file that a CIFAR batch does not use. */
    check_fails("missing .bin file", temp_path("missing.bin"), NULL, LCA_ERR_IO, "missing.bin",
                NULL);
    check_fails(".bin with a labels file", truncated, empty, LCA_ERR_INVALID_ARGUMENT,
                "own labels", NULL);
    free(bytes);
}

/* Batches compressed with gzip are streamed record by record into place:
 * one member (its trailer gives the size), two members (the trailer gives
 * only the second's size, so the arrays grow), a folder of .bin.gz files,
 * and a cut file. */
static void test_gzip_batches(void) {
    const size_t n = PER_BATCH * RECORD, split = 10 * RECORD + 1234;
    size_t one_n, first_n, second_n;
    uint8_t *one = test_gzip(batch1, n, &one_n);
    uint8_t *first = test_gzip(batch1, split, &first_n);
    uint8_t *second = test_gzip(batch1 + split, n - split, &second_n);
    uint8_t *two = test_alloc(first_n + second_n);
    memcpy(two, first, first_n);
    memcpy(two + first_n, second, second_n);
    const char *one_path = temp_path("one.bin.gz"), *two_path = temp_path("two.bin.gz");
    write_bytes(one_path, one, one_n);
    write_bytes(two_path, two, first_n + second_n);
    const char *folder = temp_folder("cifar-gz");
    write_bytes(temp_path("cifar-gz/data_batch_1.bin.gz"), one, one_n);
    write_bytes(temp_path("cifar-gz/data_batch_2.bin.gz"), two, first_n + second_n);

    const uint8_t *records[2 * PER_BATCH];
    for (size_t i = 0; i < 2 * PER_BATCH; i++) records[i] = batch1 + (i % PER_BATCH) * RECORD;
    const char *sources[3] = {one_path, two_path, folder};
    const size_t counts[3] = {PER_BATCH, PER_BATCH, 2 * PER_BATCH};
    for (int s = 0; s < 3; s++) {
        lca_dataset *data = NULL;
        REQUIRE_OK(lca_dataset_open(&data, sources[s], NULL));
        size_t mismatches = lca_dataset_count(data) == counts[s]
                                ? compare_with_records(data, records, counts[s])
                                : SIZE_MAX;
        check_true(mismatches == 0 && lca_dataset_classes(data) == 10, sources[s],
                   "%zu images (expected %zu), %zu mismatches with the plain records",
                   lca_dataset_count(data), counts[s], mismatches);
        lca_dataset_free(data);
    }

    /* Cut inside a record's pixels, and inside the trailer after the last
     * record: both are truncated files, named with the byte. */
    const char *cut = temp_path("cut.bin.gz");
    write_bytes(cut, one, one_n / 2);
    check_fails("gzip cut midway", cut, NULL, LCA_ERR_FORMAT, "cut.bin.gz",
                "file ends inside record");
    check_fails("gzip cut midway says why", cut, NULL, LCA_ERR_FORMAT, "truncated file?",
                "stops inside a member at compressed byte");
    write_bytes(cut, one, one_n - 3);
    char at[64];
    snprintf(at, sizeof at, "byte %zu: gzip data ends early", one_n - 3);
    check_fails("gzip cut in its trailer", cut, NULL, LCA_ERR_FORMAT, "cut.bin.gz", at);
    free(one);
    free(first);
    free(second);
    free(two);
}

/* An IDX file: header for dims, then values. */
static void write_idx(const char *path, const uint32_t *dims, int rank, const uint8_t *values,
                      size_t n) {
    size_t total = 4 + 4 * (size_t)rank + n;
    uint8_t *bytes = test_alloc(total);
    bytes[0] = 0;
    bytes[1] = 0;
    bytes[2] = 0x08;
    bytes[3] = (uint8_t)rank;
    for (int d = 0; d < rank; d++)
        for (int b = 0; b < 4; b++) bytes[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
    memcpy(bytes + 4 + 4 * rank, values, n);
    write_bytes(path, bytes, total);
    free(bytes);
}

static void test_shapes(void) {
    enum { N = 3 };
    uint8_t pixels[N * 28 * 28], labels[N] = {0, 1, 2};
    for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (uint8_t)(i * 7);
    const uint32_t image_dims[3] = {N, 28, 28}, flat_dims[2] = {N, 28 * 28},
                   four_dims[4] = {N, 4, 14, 14}, label_dims[1] = {N};
    const char *images = temp_path("images-idx3-ubyte"), *flat = temp_path("flat-idx2-ubyte");
    const char *four = temp_path("four-idx4-ubyte"), *label_file = temp_path("labels-idx1-ubyte");
    write_idx(images, image_dims, 3, pixels, sizeof pixels);
    write_idx(flat, flat_dims, 2, pixels, sizeof pixels);
    write_idx(four, four_dims, 4, pixels, sizeof pixels);
    write_idx(label_file, label_dims, 1, labels, N);

    lca_dataset *data = NULL;
    REQUIRE_OK(lca_dataset_open(&data, images, label_file));
    check_shape(data, "IDX N×28×28", 1, 28, 28);
    lca_dataset_free(data);
    REQUIRE_OK(lca_dataset_open(&data, flat, label_file));
    check_shape(data, "IDX N×784 (rank 2)", 1, 1, 784);
    lca_dataset_free(data);
    REQUIRE_OK(lca_dataset_open(&data, four, label_file));
    check_shape(data, "IDX N×4×14×14 (rank 4)", 4, 14, 14);
    lca_dataset_free(data);
    REQUIRE_OK(lca_dataset_open(&data, "digits", NULL));
    check_shape(data, "digits", 1, 8, 8);
    lca_dataset_free(data);

    int32_t array_labels[N] = {0, 1, 0};
    REQUIRE_OK(lca_dataset_from_arrays(&data, pixels, array_labels, N, 10, 2));
    check_shape(data, "from_arrays", 1, 1, 10);
    lca_dataset_free(data);
    float inputs[N * 5] = {0}, targets[N] = {0};
    REQUIRE_OK(lca_dataset_from_float_arrays(&data, inputs, targets, N, 5, 1));
    check_shape(data, "from_float_arrays", 1, 1, 5);
    /* Outputs may be NULL. */
    size_t width = 0;
    lca_status status = lca_dataset_shape(data, NULL, NULL, &width);
    check_true(status == LCA_OK && width == 5, "shape with NULL outputs", "width %zu", width);
    lca_dataset_free(data);
    status = lca_dataset_shape(NULL, NULL, NULL, NULL);
    check_true(status == LCA_ERR_INVALID_ARGUMENT, "shape of NULL", "%s",
               lca_status_string(status));
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_begin("test_data_cifar");
    snprintf(temp_dir, sizeof temp_dir, "/tmp/lca-test-cifar-XXXXXX");
    if (!mkdtemp(temp_dir)) {
        printf("cannot create a temporary folder: %s\n", strerror(errno));
        return 2;
    }
    test_folder_and_files();
    test_corrupt();
    test_gzip_batches();
    test_shapes();

    for (int i = created_count - 1; i >= 0; i--) remove(created[i]);
    for (int i = folder_count - 1; i >= 0; i--) rmdir(folders[i]);
    rmdir(temp_dir);
    free(batch1);
    free(batch2);
    free(stray);
    free(test_batch);
    return test_finish();
}
