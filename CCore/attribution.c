/* attribution.c: lca_attribute (lca.h), the LCA of one straight step
 * between two parameter vectors (two checkpoints) on a set of examples,
 * with a short-lived integrator and view. Apart from the trainer, which
 * allocates along a run: attribution needs no optimizer, split or log, and
 * leaves the model's parameters as they are. */
#include "integrator.h"

#include <stdlib.h>
#include <string.h>

lca_status lca_attribute(lca_model *model, const float *from, const float *to,
                         const lca_dataset *data, const uint32_t *indices, size_t count,
                         const lca_config *config, lca_record *record, double *tensor_lca,
                         double *tensor_first_order, uint64_t *tensor_counts) {
    if (config->example_groups)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "attribute: loss groups need lca_attribute_groups (their buffers)");
    return lca_attribute_groups(model, from, to, data, indices, count, config, record, tensor_lca,
                                tensor_first_order, tensor_counts, NULL, NULL, NULL);
}

lca_status lca_attribute_groups(lca_model *model, const float *from, const float *to,
                                const lca_dataset *data, const uint32_t *indices, size_t count,
                                const lca_config *config, lca_record *record, double *tensor_lca,
                                double *tensor_first_order, uint64_t *tensor_counts,
                                double *group_lca, double *group_losses, uint32_t *group_flags) {
    memset(record, 0, sizeof *record);
    if (config->example_groups && (!group_lca || !group_losses || !group_flags))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "attribute: loss groups without buffers");
    uint32_t *all;
    lca_status status = lca_view_examples(model, data, &indices, &count, &all, "attribute");
    if (status != LCA_OK) return status;
    lca_integrator integrator;
    lca_view view;
    memset(&view, 0, sizeof view);
    status = lca_integrator_init(&integrator, model, config, data->targets != NULL);
    if (status == LCA_OK) status = lca_view_init(&view, &integrator, data, indices, count);
    if (status == LCA_OK) status = lca_view_step(&integrator, &view, from, to, &record->train, NULL, NULL);
    /* the view's arrays die with it: copy the per-tensor results out */
    if (status == LCA_OK) {
        size_t t = model->tensor_count;
        memcpy(tensor_lca, view.tensor_lca, t * sizeof(double));
        memcpy(tensor_first_order, view.tensor_first_order, t * sizeof(double));
        memcpy(tensor_counts, view.tensor_helped, t * sizeof(uint64_t));
        memcpy(tensor_counts + t, view.tensor_hurt, t * sizeof(uint64_t));
        memcpy(tensor_counts + 2 * t, view.tensor_zero, t * sizeof(uint64_t));
        record->train.tensor_lca = tensor_lca;
        record->train.tensor_first_order = tensor_first_order;
        record->train.tensor_helped = tensor_counts;
        record->train.tensor_hurt = tensor_counts + t;
        record->train.tensor_zero = tensor_counts + 2 * t;
        record->train.unit_lca = NULL; /* units are not copied out, nor the version-2 */
        record->train.tensor_helping = NULL; /* arrays (lca_floor is a value: kept) */
        record->train.tensor_hurting = NULL;
        record->train.tensor_unmoved = NULL;
        record->train.tensor_histogram = NULL;
        size_t gc = integrator.group_count;
        if (gc) {
            memcpy(group_lca, view.group_lca, gc * t * sizeof(double));
            memcpy(group_losses, view.group_loss_before, gc * sizeof(double));
            memcpy(group_losses + gc, view.group_loss_after, gc * sizeof(double));
            memcpy(group_losses + 2 * gc, view.group_residual, gc * sizeof(double));
            memcpy(group_flags, view.group_flags, gc * sizeof(uint32_t));
            record->train.group_lca = group_lca;
            record->train.group_loss_before = group_losses;
            record->train.group_loss_after = group_losses + gc;
            record->train.group_residual = group_losses + 2 * gc;
            record->train.group_flags = group_flags;
        }
    }
    lca_view_release(&view);
    lca_integrator_release(&integrator);
    free(all);
    return status;
}
