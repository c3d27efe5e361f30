/* model.h: the model's internal layout, shared by model.c, the trainer and
 * the LCA integrator. Not part of the public API. */
#ifndef LCA_MODEL_H
#define LCA_MODEL_H

#include "internal.h"

typedef enum lca_layer_kind {
    LCA_LAYER_DENSE = 0, /* y = x·Wᵀ + b, optional fused ReLU */
} lca_layer_kind;

typedef struct lca_tensor {
    char name[64];
    int rank;
    int64_t shape[LCA_MAX_RANK];
    size_t offset, count;
    size_t fan_in; /* for He initialisation; 0 = initialise to zero */
    /* per-unit views: the tensor's elements belong to the output units of
     * unit group `unit_group` (-1: none); element e belongs to unit
     * e / (count / units of that group), i.e. the first dimension */
    long unit_group;
} lca_tensor;

/* The output units (neurons of a dense layer, channels of a convolution)
 * of one layer, for per-unit LCA: unit u gathers its slice of every tensor
 * in the group (incoming weights plus bias). */
typedef struct lca_unit_group {
    char name[64];        /* "fc1", "conv1" */
    size_t units;         /* out features or out channels */
} lca_unit_group;

typedef struct lca_layer {
    lca_layer_kind kind;
    size_t in, out;        /* widths per example */
    bool relu;             /* ReLU fused after the affine map */
    size_t weight, bias;   /* tensor indices */
    float *output;         /* workspace: N × out, post-activation, kept for backward */
} lca_layer;

struct lca_model {
    char *spec;
    lca_loss_kind loss;
    size_t layer_count;
    lca_layer *layers;
    size_t tensor_count;
    lca_tensor *tensors;
    size_t unit_group_count;
    lca_unit_group *unit_groups;
    size_t unit_count;    /* Σ units over groups */
    size_t parameter_count;
    float *parameters;     /* K */
    size_t max_width;
    /* workspace, sized by lca_model_reserve for max_batch examples */
    size_t max_batch;
    void *workspace;
    size_t workspace_bytes;
    float *grad_a, *grad_b; /* N × max_width each: ping-pong ∂loss/∂activations */
    double *example_loss;   /* N */
};

/* Forward (and backward when gradient is not NULL) on n examples at the
 * given parameters. *loss_sum = Σ_n loss_n (float64, fixed order); gradient
 * (K, overwritten) = gradient_scale · Σ_n ∇loss_n. */
lca_status lca_model_forward_backward(lca_model *model, const float *parameters, const float *x,
                                      const int32_t *labels, const float *targets, size_t n,
                                      double gradient_scale, double *loss_sum, float *gradient);
size_t lca_model_workspace_bytes(const lca_model *model);

#endif
