/* libFuzzer target: the IDX reader (lca_dataset_open on an images file and
 * its labels file, plain or gzip'ed). Input: a 4-byte little-endian length
 * n, then n bytes of images file, then the labels file. */
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    size_t n = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
               (size_t)data[3] << 24;
    data += 4;
    size -= 4;
    if (n > size) n = size;
    char images[4200];
    snprintf(images, sizeof images, "%s", fuzz_write("images-idx3-ubyte", data, n));
    const char *labels = fuzz_write("labels-idx1-ubyte", data + n, size - n);
    lca_dataset *set = NULL;
    if (lca_dataset_open(&set, images, labels) == LCA_OK) {
        size_t count = lca_dataset_count(set), features = lca_dataset_features(set);
        size_t c, h, w;
        lca_dataset_shape(set, &c, &h, &w);
        if (count && features <= 1 << 16) {
            uint32_t last = (uint32_t)(count - 1);
            float *x = malloc(features * sizeof *x);
            int32_t label;
            if (x) lca_dataset_gather(set, &last, 1, x, &label, NULL);
            free(x);
        }
        lca_dataset_free(set);
    }
    return 0;
}
