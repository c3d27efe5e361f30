/* libFuzzer target: the log header and record reader of lca_log_resume,
 * for the fixed small run of fuzz_support.h (2 steps taken, so 2 complete
 * records are needed; later ones and a partial one are cut). */
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fuzz_run run;
    static int ready;
    if (!ready) {
        if (fuzz_run_open(&run, 2) != 0) {
            fprintf(stderr, "fuzz_log: set-up failed: %s\n", lca_last_error());
            abort();
        }
        ready = 1;
    }
    const char *path = fuzz_write("run.lcalog", data, size);
    lca_log *log = NULL;
    if (lca_log_resume(&log, path, run.trainer) == LCA_OK) lca_log_close(log);
    return 0;
}
