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
    fuzz_use_dataset(images, labels);
    return 0;
}
