/* libFuzzer target: the model-spec parser (lca_model_new), the input as
 * the spec text (cut at 512 bytes), under both losses; a spec accepted is
 * read back layer by layer and its canonical form must parse again. */
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 512) return 0;
    char spec[513];
    memcpy(spec, data, size);
    spec[size] = 0;
    lca_model *model = NULL;
    for (int loss = 0; loss < 2; loss++) {
        if (lca_model_new(&model, spec, (lca_loss_kind)loss) == LCA_OK) {
            const char *canonical = lca_model_spec(model);
            size_t layers = lca_model_layer_count(model);
            for (size_t i = 0; i < layers; i++) {
                lca_layer_spec layer;
                lca_model_layer(model, i, &layer);
            }
            lca_model *again = NULL;
            if (lca_model_new(&again, canonical, (lca_loss_kind)loss) == LCA_OK) lca_model_free(again);
            lca_model_free(model);
        }
    }
    return 0;
}
