/* backend_log: one training run written to a log and a checkpoint, for
 * comparing builds of the core byte for byte (tools/compare-backends).
 *
 *   backend_log OUT_PREFIX THREADS SPEC
 *
 * Trains SPEC on the embedded digits for 20 iterations (seed 7, LCA on the
 * training split and the validation view, a threshold of 1e-5 so that some
 * iterations refine) with THREADS threads, and writes OUT_PREFIX.lcalog and
 * OUT_PREFIX.safetensors. Prints the thread back end on stdout. */
#include <lca.h>

#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, lca_status status) {
    fprintf(stderr, "backend_log: %s: %s: %s\n", what, lca_status_string(status), lca_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: backend_log OUT_PREFIX THREADS SPEC\n");
        return 2;
    }
    lca_set_threads(atoi(argv[2]));
    char log_path[4096], checkpoint_path[4096];
    snprintf(log_path, sizeof log_path, "%s.lcalog", argv[1]);
    snprintf(checkpoint_path, sizeof checkpoint_path, "%s.safetensors", argv[1]);
    lca_status s;
    lca_dataset *data;
    lca_model *model;
    if ((s = lca_dataset_open(&data, "digits", NULL))) return fail("lca_dataset_open", s);
    if ((s = lca_model_new(&model, argv[3], LCA_LOSS_SOFTMAX_CROSS_ENTROPY))) return fail("lca_model_new", s);
    lca_model_initialize(model, 7);
    lca_config config = lca_config_default();
    config.seed = 7;
    config.iterations = 20;
    config.lca_threshold = 1e-5;
    config.lca_validation_view = 1;
    lca_trainer *trainer;
    if ((s = lca_trainer_new(&trainer, model, data, &config))) return fail("lca_trainer_new", s);
    lca_log *log;
    if ((s = lca_log_open(&log, log_path, trainer))) return fail("lca_log_open", s);
    lca_record record;
    for (int t = 0; t < 20; t++) {
        if ((s = lca_trainer_step(trainer, &record))) return fail("lca_trainer_step", s);
        if ((s = lca_log_write(log, &record))) return fail("lca_log_write", s);
    }
    if ((s = lca_log_close(log))) return fail("lca_log_close", s);
    if ((s = lca_checkpoint_save(checkpoint_path, model, lca_trainer_iteration(trainer))))
        return fail("lca_checkpoint_save", s);
    printf("%s %d thread(s): final loss %.9f\n", lca_thread_backend(), lca_threads(),
           record.train.loss_after);
    lca_trainer_free(trainer);
    lca_model_free(model);
    lca_dataset_free(data);
    return 0;
}
