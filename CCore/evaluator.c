/* evaluator.c: lca_evaluator (lca.h), the evaluation-set loss and gradient
 * exactly as the LCA integrator computes them at a probe point: one view
 * of an integrator, without the Simpson sums. A public object of its own,
 * apart from the integrator's stepping (integrator.c), for tools and tests
 * that evaluate at many parameter vectors. It reads the model it is given
 * and writes only the integrator's workspace, so it may share a model with
 * a trainer. */
#include "integrator.h"

#include <stdlib.h>

struct lca_evaluator {
    lca_integrator integrator;
    lca_view view;           /* data, indices, count only */
    uint32_t *all;           /* 0 … count − 1 when the caller gave no indices */
};

lca_status lca_evaluator_new(lca_evaluator **out, lca_model *model, const lca_dataset *data,
                             const uint32_t *indices, size_t count, const lca_config *config) {
    *out = NULL;
    if (!indices) count = data->count;
    if (count == 0) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "evaluator: no examples");
    lca_evaluator *e = calloc(1, sizeof *e);
    if (!e) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "evaluator: out of memory");
    lca_status status = lca_view_examples(model, data, &indices, &count, &e->all, "evaluator");
    /* the evaluator gives the total only: loss groups do not apply */
    lca_config plain = *config;
    plain.example_groups = NULL;
    plain.lca_group_totals = 0;
    if (status == LCA_OK)
        status = lca_integrator_init(&e->integrator, model, &plain, data->targets != NULL);
    if (status != LCA_OK) {
        free(e->all);
        free(e);
        return status;
    }
    e->view.data = data;
    e->view.indices = indices;
    e->view.count = count;
    *out = e;
    return LCA_OK;
}

lca_status lca_evaluator_run(lca_evaluator *e, const float *parameters, double *loss,
                             double *gradient) {
    return lca_view_evaluate(&e->integrator, &e->view, parameters, loss, gradient, false);
}

void lca_evaluator_free(lca_evaluator *e) {
    if (!e) return;
    lca_integrator_release(&e->integrator);
    free(e->all);
    free(e);
}
