/* libFuzzer target: the CIFAR-10 reader (lca_dataset_open on one .bin
 * batch: records of 3,073 bytes, a label then 3×32×32 pixels). */
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("data_batch_1.bin", data, size);
    lca_dataset *set = NULL;
    if (lca_dataset_open(&set, path, NULL) == LCA_OK) {
        size_t count = lca_dataset_count(set), features = lca_dataset_features(set);
        if (count) {
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
