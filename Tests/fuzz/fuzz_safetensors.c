/* libFuzzer target: the safetensors reader, as a checkpoint (spec read,
 * model spec, load into a fixed 8-6-4 model) and as a trainer state (load
 * into the fixed digits run of fuzz_support.h). */
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static lca_model *model;
    static fuzz_run run;
    static int ready;
    if (!ready) {
        if (lca_model_new(&model, "8-6-4", LCA_LOSS_SOFTMAX_CROSS_ENTROPY) != LCA_OK ||
            fuzz_run_open(&run, 0) != 0) {
            fprintf(stderr, "fuzz_safetensors: set-up failed: %s\n", lca_last_error());
            abort();
        }
        ready = 1;
    }
    const char *path = fuzz_write("checkpoint.safetensors", data, size);
    char spec[256];
    lca_loss_kind loss;
    lca_checkpoint_read_spec(path, spec, sizeof spec, &loss);
    lca_checkpoint_model_spec(path, NULL, spec, sizeof spec, &loss);
    lca_checkpoint_model_spec(path, "8-6-4", spec, sizeof spec, &loss);
    lca_checkpoint_report report;
    lca_checkpoint_load_report(path, model, &report);
    lca_trainer_load_state(run.trainer, path);
    return 0;
}
