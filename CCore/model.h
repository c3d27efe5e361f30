/* model.h: the model's internal layout and the pass over it, shared by
 * model_spec.c (the spec language), model.c (the layout), pass.c (the
 * forward/backward pass), the trainer, the LCA integrator and the files
 * that read a model's tensors (log.c, checkpoint.c). Not part of the
 * public API. */
#ifndef LCA_MODEL_H
#define LCA_MODEL_H

#include "internal.h"
#include "layers.h"

typedef enum lca_layer_kind {
    LCA_LAYER_DENSE = 0,     /* y = x·Wᵀ + b; x flattened per example */
    LCA_LAYER_CONV2D,        /* with bias; same or valid padding */
    LCA_LAYER_RELU,          /* in place */
    LCA_LAYER_MAXPOOL,
    LCA_LAYER_AVGPOOL,       /* global average pooling is k = H = W */
    LCA_LAYER_BATCHNORM,
    LCA_LAYER_DROPOUT,       /* training only; the identity when evaluating */
    LCA_LAYER_FLATTEN,       /* the identity: activations are flat in memory */
    LCA_LAYER_BLOCK_BEGIN,   /* marks a residual block's input (the identity) */
    LCA_LAYER_BLOCK_ADD,     /* y = main path + shortcut(block input) */
} lca_layer_kind;

typedef enum lca_init_kind {
    LCA_INIT_HE_NORMAL = 0,  /* N(0, 2 / fan_in) */
    LCA_INIT_ZERO,
    LCA_INIT_ONE,
} lca_init_kind;

/* ---- model_spec.c: the spec language (docs/models.md) */

#define LCA_MAX_LAYERS 256

/* One layer as the spec describes it, before shapes are known. */
typedef struct lca_layer_request {
    lca_layer_kind kind;
    size_t units;          /* dense outputs, conv output channels */
    size_t k, stride;      /* conv kernel, pooling window */
    bool valid;            /* conv: valid padding instead of same */
    bool global;           /* avgpool over the whole plane */
    float p;               /* dropout */
    /* where the spec writes it, for messages: the text of the spec-level
     * layer (a block's every layer points at its block(...)), its length,
     * and its position (1 for the first after the input; an MLP's widths
     * are layers 1, 2, … after the input width) */
    const char *text;
    size_t text_length, position;
} lca_layer_request;

/* A parsed spec: the input shape and the layers in order (a residual
 * block expanded into its layers, an MLP's widths into dense and ReLU). */
typedef struct lca_spec {
    const char *text;      /* what was parsed: a built-in's layer list, or the spec as given */
    lca_layer_request layers[LCA_MAX_LAYERS];
    size_t count;
    size_t input[3];       /* C, H, W */
    bool have_input;
} lca_spec;

/* Parse spec: a built-in name ("fc", "lenet", "resnet20"), widths joined by
 * '-', or a layer list. Errors name the spec and the character. */
lca_status lca_spec_parse(lca_spec *out, const char *spec);
/* The text a built-in name stands for, or spec itself. */
const char *lca_spec_expand(const char *spec);
/* The spec a model keeps (lca_model_spec, logs, checkpoints): "fc" becomes
 * its widths "784-100-50-10"; other names and texts stay as given. */
const char *lca_spec_canonical(const char *spec);

/* ---- model.c: the layout */

typedef struct lca_tensor {
    char name[64];
    int rank;
    int64_t shape[LCA_MAX_RANK];
    size_t offset, count;
    lca_init_kind init;
    size_t fan_in;         /* for He initialisation */
    /* per-unit views: the tensor's elements belong to the output units of
     * unit group `unit_group` (-1: none); element e belongs to unit
     * e / (count / units of that group), i.e. the first dimension */
    long unit_group;
} lca_tensor;

/* The output units (neurons of a dense layer, channels of a convolution
 * or batch norm) of one layer, for per-unit LCA: unit u gathers its slice
 * of every tensor in the group (incoming weights plus bias). */
typedef struct lca_unit_group {
    char name[64];        /* "fc1", "conv1" */
    size_t units;         /* out features or out channels */
    size_t offset;        /* its first unit in a record's unit_lca: Σ units of the groups before */
} lca_unit_group;

#define LCA_NO_TENSOR ((size_t)-1)

typedef struct lca_layer {
    lca_layer_kind kind;
    size_t in_c, in_h, in_w, in_size;      /* input per example: C·H·W */
    size_t out_c, out_h, out_w, out_size;  /* output per example */
    size_t weight, bias;                   /* tensor indices, or LCA_NO_TENSOR */
    lca_conv2d_shape conv;                 /* conv: n filled per call */
    size_t k, stride;                      /* pooling */
    float p;                               /* dropout probability */
    /* residual add: the block's begin layer and optional 1×1 projection */
    size_t block_begin;
    bool projection;
    lca_conv2d_shape projection_shape;
    /* batch norm: running statistics (not parameters) */
    float *running_mean, *running_var;     /* C each, owned by the model */
    /* workspace for N examples (lca_model_reserve) */
    float *output;                         /* N × out_size (aliases for identity layers) */
    float *saved;                          /* BN: x̂ (N × out_size); add: projection output */
    float *saved_mean, *saved_invstd;      /* BN: groups × C */
    /* BN, a group cut into sub-chunks (pass.c, group_pass): the group's
     * sums (Σx, Σ(x − μ)², Σdy, Σdy·x̂; C each) and its mean (C), a fixed
     * part of the workspace whatever its N */
    lca_bn_sum *group_sums;
    double *group_mean;
    uint32_t *argmax;                      /* maxpool: N × out_size */
    uint8_t *mask;                         /* dropout: N × out_size */
} lca_layer;

typedef enum lca_pass_mode {
    LCA_PASS_EVALUATE = 0, /* the allocated loss: no dropout, BN in groups of the pass's bn_group */
    LCA_PASS_TRAIN = 1,    /* the minibatch step: dropout, BN over the batch, running stats */
} lca_pass_mode;

struct lca_model {
    char *spec;             /* canonical spec: a built-in name, "784-100-10", or layer list */
    lca_loss_kind loss;
    size_t in_c, in_h, in_w;
    size_t layer_count;
    lca_layer *layers;
    size_t tensor_count;
    lca_tensor *tensors;
    size_t unit_group_count;
    lca_unit_group *unit_groups;
    size_t unit_count;      /* Σ units over groups */
    size_t parameter_count;
    float *parameters;      /* K */
    size_t max_gradient;    /* largest out_size: the backward buffers grad_a, grad_b */
    size_t max_skip;        /* largest residual block input / output: grad_skip */
    size_t conv_workspace;  /* floats: the largest conv / projection workspace */
    /* recomputation by segments (pass.c, "segments"; docs/memory.md): a
     * residual net without dropout is cut at its blocks' begin layers into
     * segment_count segments, segment s = layers [segment_start[s],
     * segment_start[s + 1]); a pass keeps only each segment's output (the
     * next block's input) and the batch-norm statistics, the layers inside
     * a segment share one region of the workspace, and the backward pass
     * recomputes a segment's activations from its input. store_all keeps
     * every activation instead: the same bytes, more memory, no second
     * forward pass. lca_model_fit_layout sets it from the memory budget
     * (layout_chosen: once, before lca_model_reserve); a test may set it
     * directly. */
    bool recompute;
    bool store_all;
    bool layout_chosen;
    size_t keep_all_budget; /* the budget that keeps every activation (fit_layout) */
    size_t segment_count;
    size_t segment_start[LCA_MAX_LAYERS + 1];
    float bn_momentum;      /* running statistics: r ← (1 − m)·r + m·batch */
    float bn_epsilon;
    /* a worker (lca_model_new_worker) has its own layers array and
     * workspace; everything else belongs to the model it was made from */
    bool worker;
    bool too_large;        /* build: a tensor or parameter count overflowed size_t */
    /* workspace, sized by lca_model_reserve for passes of up to max_batch
     * examples (an MLP's activations for a block of LCA_INPUT_ROWS: run) */
    size_t max_batch;
    void *workspace;
    size_t workspace_bytes;
    float *grad_a, *grad_b;   /* N × max_gradient each */
    float *grad_skip;         /* N × max_skip (residual nets), else NULL */
    float *conv_scratch;
    double *example_loss;   /* a block's rows */
};

/* The automatic evaluation chunk's upper bound: large enough that the
 * layers' products run at full speed, small enough that a conv net's chunk
 * (its activations) stays in a core's 2 MB L2 between the forward and
 * backward passes. The chunk no longer sets the bytes (the accumulation
 * unit does, below): it is the examples a worker holds at once. */
#define LCA_MAX_AUTO_CHUNK 512

/* Examples per accumulation unit of a net without batch norm (a net with
 * batch norm: its bn_group): the evaluation set is summed unit by unit,
 * each unit's gradient in float32, the units exactly (integrator.c). A
 * constant of the core, so the bytes depend on nothing a run chooses but
 * bn_group. Each unit costs one exact addition of K values (about 0.2 ns
 * each); measured on the 55,000-example FC pass at 2 threads
 * (docs/method.md, "Determinism"). A multiple of LCA_INPUT_ROWS, so that an
 * MLP's passes inside a unit keep its blocks of rows. */
#define LCA_ACCUMULATION_UNIT 512

/* The evaluation-mode batch-norm group of lca_config_default and of
 * lca_model_loss_and_gradient, which takes no config. */
#define LCA_BN_GROUP_DEFAULT 250

/* Rows an MLP's pass (lca_model_streams_input) takes at a time: forward,
 * loss and backward go in blocks of this many examples, whether the input
 * is given as floats or converted from a data set block by block (so both
 * give the same bytes; each block is converted once, and an evaluation
 * worker needs no chunk-sized copy of its input). */
#define LCA_INPUT_ROWS 128

/* Where a pass reads its input: floats x (N × input), or, when x is NULL
 * (only for MLPs: lca_model_streams_input),
 * examples indices[0 … N) of data converted LCA_INPUT_ROWS at a time into
 * rows (LCA_INPUT_ROWS × input floats of scratch). */
typedef struct lca_model_input {
    const float *x;
    const lca_dataset *data;
    const uint32_t *indices;
    float *rows;
    const struct lca_first_layer *first; /* or NULL: layer 0 as usual */
} lca_model_input;

/* An MLP's first layer along an LCA step (integrator.c, "The first layer
 * along the step"). Its pre-activations z = x·Wᵀ + b (before the ReLU) are
 * linear in its parameters, which move on a straight line: at the point s
 * of the step, z = z_start + s·(z_end − z_start), so a pass at an interior
 * point needs no product for it. z is kept feature-major, block by block of
 * the pass's rows (a block's O × rows floats at its first row · O). A pass
 *   - with store: computes layer 0 and also writes z there (an end point);
 *   - with start and end: interpolates z from them instead;
 *   - with start_parameters and end_parameters (no room to keep z): computes
 *     z at both ends into scratch (2 · O · LCA_INPUT_ROWS floats) and
 *     interpolates; the same bytes as from kept values.
 * All pointers are for the pass's example 0. */
typedef struct lca_first_layer {
    float *store;
    const float *start, *end;
    const float *start_parameters, *end_parameters;
    float *scratch;
    float s;
} lca_first_layer;

/* ---- pass.c: the forward/backward pass */

/* Whether the model is an MLP whose pass goes LCA_INPUT_ROWS rows at a
 * time, feature-major. */
bool lca_model_streams_input(const lca_model *model);
/* Rows of input floats a pass of up to n examples needs at once: n, or
 * LCA_INPUT_ROWS when the model streams its input. */
size_t lca_model_input_rows(const lca_model *model, size_t n);

/* Forward (and backward when gradient is not NULL) on n examples at the
 * given parameters, in evaluation mode (the allocated loss), batch norm in
 * groups of bn_group examples. *loss_sum = Σ_n loss_n (float64, fixed
 * order); gradient (K, overwritten) = gradient_scale · Σ_n ∇loss_n. The
 * pass writes only the model's workspace. */
lca_status lca_model_forward_backward(lca_model *model, const float *parameters, const float *x,
                                      const int32_t *labels, const float *targets, size_t n,
                                      size_t bn_group, double gradient_scale, double *loss_sum,
                                      float *gradient);
/* The same with the input described by input; with accumulate the pass
 * continues an earlier one on the examples just before these (not for
 * batch-norm nets): gradient is added to and *loss_sum continued, term by
 * term in example order, so that passes over [0, a) and [a, n) give the
 * bytes of one pass over [0, n) when a is a multiple of LCA_INPUT_ROWS for
 * an MLP (its blocks of rows), anywhere for other nets (the layers'
 * sequential accumulation, layers.h). */
lca_status lca_model_forward_backward_input(lca_model *model, const float *parameters,
                                            const lca_model_input *input, const int32_t *labels,
                                            const float *targets, size_t n, size_t bn_group,
                                            double gradient_scale, double *loss_sum,
                                            float *gradient, bool accumulate);
/* The input of a group pass: floats x (n × input), or, when x is NULL,
 * examples indices[0 … n) of data gathered a sub-chunk at a time into
 * x_rows (chunk × input); labels or targets for all n, or, when both are
 * NULL, gathered with the rows into label_rows or target_rows (chunk each;
 * target_rows only for regression data). */
typedef struct lca_group_input {
    const float *x;
    const int32_t *labels;
    const float *targets;
    const lca_dataset *data;
    const uint32_t *indices;
    float *x_rows;
    int32_t *label_rows;
    float *target_rows;
    /* loss groups on a batch-norm net (integrator.c): mask[i] = 0 gives
     * example i of the group loss weight 0 (no loss, no gradient from it;
     * it still shapes the statistics); NULL = every example counts */
    const uint8_t *mask;
} lca_group_input;
/* lca_model_forward_backward on one batch-norm group of n examples (n ≤
 * bn_group; or any n for a net without batch norm) holding at most chunk
 * examples at once (chunk ≤ the workspace's max_batch): one pass when n ≤
 * chunk, else the group in sub-chunks, recomputed (pass.c, "group pass"),
 * with the bytes of the one pass. */
lca_status lca_model_forward_backward_group(lca_model *model, const float *parameters,
                                            const lca_group_input *input, size_t n,
                                            size_t chunk, size_t bn_group,
                                            double gradient_scale, double *loss_sum,
                                            float *gradient);
/* Loss groups on a batch-norm net (integrator.c): one forward pass of a
 * whole group of n examples that fits the workspace (n ≤ max_batch), kept
 * so that several masked losses and backward passes can follow it
 * (lca_model_backward_kept): the forward does not depend on the mask, and
 * the backward only reads what the forward left, so each is the bytes of
 * lca_model_forward_backward_group with that mask. */
typedef struct lca_kept_forward {
    size_t n, bn_group;
    const float *x;            /* the examples' input (a recomputing net's first segment) */
    size_t backward_passes;    /* backward passes made since the forward */
    const float *inputs[LCA_MAX_LAYERS];
    const float *logits;
    const int32_t *labels;
    const float *targets;
} lca_kept_forward;
lca_status lca_model_forward_kept(lca_model *model, const float *parameters,
                                  const lca_group_input *input, size_t n, size_t bn_group,
                                  lca_kept_forward *kept);
/* The loss of the kept examples whose mask is 1 (added from 0 into
 * *loss_sum) and its gradient (times gradient_scale) into gradient. */
lca_status lca_model_backward_kept(lca_model *model, const float *parameters,
                                   lca_kept_forward *kept, const uint8_t *mask,
                                   double gradient_scale, double *loss_sum, float *gradient);
/* The same in training mode at the model's parameters: dropout from rng,
 * batch norm over the n examples, running statistics updated. */
lca_status lca_model_train_gradient(lca_model *model, const lca_model_input *input,
                                    const int32_t *labels, const float *targets, size_t n,
                                    double *loss_sum, float *gradient, lca_rng *rng);

/* lca_model_train_gradient on a minibatch of n examples in sub-chunks of
 * chunk (lca_model_train_chunk; not for an MLP, which streams its rows),
 * the bytes of one pass: the group pass (pass.c). */
lca_status lca_model_train_gradient_group(lca_model *model, const lca_group_input *input,
                                          size_t n, size_t chunk, double *loss_sum,
                                          float *gradient, lca_rng *rng);

/* ---- model.c: workspace and workers */

size_t lca_model_workspace_bytes(const lca_model *model);
/* A model that evaluates with model's layout beside it, on another thread:
 * its own workspace (reserve it), no parameters of its own (pass them to
 * lca_model_forward_backward). Free it with lca_model_free before model. */
lca_status lca_model_new_worker(const lca_model *model, lca_model **out);
/* The bytes lca_model_reserve(m, max_batch) would allocate, or SIZE_MAX
 * when they overflow (computed before anything is allocated). */
size_t lca_model_workspace_need(const lca_model *model, size_t max_batch);
/* The accumulation unit: bn_group for a net with batch norm, else
 * LCA_ACCUMULATION_UNIT. */
size_t lca_model_accumulation_unit(const lca_model *model, size_t bn_group);
/* The bytes a pass of chunk examples holds: the workspace
 * (lca_model_workspace_need), its input rows and labels. SIZE_MAX when
 * they overflow. What --memory-budget counts for a worker (beside its
 * O(parameters) vectors, docs/memory.md). */
size_t lca_model_chunk_bytes(const lca_model *model, size_t chunk);
/* The smallest chunk a pass can take: 1 example, or an MLP's block of
 * LCA_INPUT_ROWS rows (at most the unit). */
size_t lca_model_min_chunk(const lca_model *model, size_t unit);
/* A memory budget that cannot hold the smallest chunk is refused, with the
 * bytes it would need (LCA_ERR_INVALID_ARGUMENT). */
lca_status lca_model_check_budget(const lca_model *model, size_t unit, size_t memory_budget);
/* The evaluation chunk (examples a worker holds at once, its passes inside
 * a unit): requested, or (0) the most examples whose lca_model_chunk_bytes
 * fit memory_budget, at most LCA_MAX_AUTO_CHUNK; never more than the unit,
 * and lowered so that the passes of a unit are of equal size (300 of 512:
 * two of 256); for an MLP a multiple of LCA_INPUT_ROWS (rounded up: its
 * workspace holds one block of rows whatever the chunk). A batch-norm net's
 * chunk may be less than its group: the group is then evaluated in
 * sub-chunks (pass.c, lca_model_forward_backward_group). A pure function
 * of its arguments; the bytes of the results do not depend on it. */
size_t lca_model_resolve_chunk(const lca_model *model, size_t requested, size_t bn_group,
                               size_t memory_budget);
/* The examples of a training minibatch of batch examples that one pass
 * holds under memory_budget (the batch in sub-chunks of equal size when it
 * does not fit; at least 1); the batch itself for an MLP, which streams
 * its rows. The bytes of the step do not depend on it. */
size_t lca_model_train_chunk(const lca_model *model, size_t batch, size_t memory_budget);
/* Whether the model's passes recompute by segments (model.h: a residual
 * net without dropout, unless store_all): what lca_model_reserve lays out
 * and lca_model_workspace_need counts. */
bool lca_model_recomputes(const lca_model *model);
/* A residual net keeps every activation (store_all) when memory_budget
 * holds them at the same chunks as the recomputing layout: the evaluation
 * chunk (eval_chunk as asked, 0 = from the budget; of the bn_group unit)
 * (SIZE_MAX: the model evaluates nothing) and, when batch > 0, the
 * training chunk of a batch; else it recomputes
 * by segments (docs/memory.md). Decided once, before the first
 * lca_model_reserve: later calls change nothing. The bytes of every result
 * are the same either way (Tests/ccore/test_recompute.c). */
void lca_model_fit_layout(lca_model *model, size_t eval_chunk, size_t bn_group, size_t batch,
                          size_t memory_budget);
/* Number of batch-norm layers (their running statistics live in the model). */
size_t lca_model_batchnorm_count(const lca_model *model);

#endif
