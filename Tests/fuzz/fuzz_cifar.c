/* libFuzzer target: the CIFAR-10 reader (lca_dataset_open on one .bin
 * batch: records of 3,073 bytes, a label then 3×32×32 pixels). */
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("data_batch_1.bin", data, size);
    fuzz_use_dataset(path, NULL);
    return 0;
}
