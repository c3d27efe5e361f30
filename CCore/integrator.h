/* integrator.h: the streaming LCA integrator (integrator.c) and its
 * evaluation passes over a view, shared by the trainer, the evaluator
 * (evaluator.c) and attribution (attribution.c). Not part of the public
 * API. */
#ifndef LCA_INTEGRATOR_H
#define LCA_INTEGRATOR_H

#include "exact_sum.h"
#include "model.h"

/* One evaluation set along the trajectory, with its own gradients. */
typedef struct lca_view {
    const lca_dataset *data;
    const uint32_t *indices;  /* count example indices, ascending */
    size_t count;
    bool have_start;          /* g_start / loss_start hold ∇L(θ_t), L(θ_t) */
    double loss_start, loss_end;
    /* K-sized float64 vectors; composite Simpson keeps its sums by role:
     * g_start, g_end (weights 1), sum_odd (weight 4), sum_even (weight 2) */
    double *g_start, *g_end, *sum_odd, *sum_even;
    /* T-sized per-tensor results, pointed to by the view record */
    double *tensor_lca, *tensor_first_order;
    uint64_t *tensor_helped, *tensor_hurt, *tensor_zero;
    /* version-2 bookkeeping (docs/log-format.md): the zero floor, helping
     * and hurting sums, unmoved counts, and the |LCA| histogram
     * (T · 2 · LCA_HISTOGRAM_BINS, NULL unless integrator->histogram) */
    double lca_floor;
    double *tensor_helping, *tensor_hurting;
    uint64_t *tensor_unmoved;
    uint32_t *tensor_histogram;
    /* U-sized per-unit LCA (integrator->units only, else NULL): unit u of
     * group g sums its slice of every tensor of g; groups in model order */
    double *unit_lca;
    /* loss groups (integrator->group_count = G > 0 only, else NULL):
     * per group, the Simpson vectors of its gradient (G · K each,
     * group-major, the same roles as above), its share of the loss
     * Σ_{i∈g} ℓ_i / E at the start and end, and the record's group fields */
    uint64_t *group_examples;           /* G: the view's examples per group */
    double *group_g_start, *group_g_end, *group_sum_odd, *group_sum_even;
    double *group_share_start, *group_share_end;  /* G each */
    double *group_lca;                  /* G · T */
    double *group_loss_before, *group_loss_after, *group_residual; /* G each */
    uint32_t *group_flags;              /* G */
    /* an MLP's first layer along the step (integrator.c, "The first layer
     * along the step"): its pre-activations at the step's start and end
     * for this rank's units (units · unit · width floats each; first_start
     * valid with have_start), or NULL when the budget cannot hold them */
    float *first_start, *first_end;
    size_t first_bytes;       /* of both, 0 when not kept */
} lca_view;

/* What one thread needs to evaluate accumulation units (integrator.c,
 * "Accumulation units"): its model's workspace and input buffers for a
 * pass of chunk examples, the float32 gradient of the unit it is on, and
 * its exact sums of the units it has finished. */
typedef struct lca_eval_worker {
    lca_model *model;         /* worker 0: the integrator's model; others: lca_model_new_worker */
    float *x;                 /* chunk × input; LCA_INPUT_ROWS × input rows when the
                                 model streams its input (an MLP) */
    int32_t *labels;          /* chunk */
    float *targets;           /* chunk × outputs (regression data), or NULL */
    float *gradient;          /* K: the current unit's gradient, float32 */
    lca_exact_vector sum;     /* K: Σ of its finished units' gradients, exact */
    lca_exact_scalar loss;    /* Σ of their loss sums, exact */
    size_t failed_unit;       /* the first unit of this pass that failed, or SIZE_MAX */
    lca_status status;        /* its status and message (lca_last_error of this thread;
                                 a longer one is cut) */
    char message[2048];
    /* loss groups (G > 0): per group its exact gradient and loss sums, and
     * a unit's examples sorted by group (stable) with per-group counts;
     * for a batch-norm net the mask of the group being evaluated */
    lca_exact_vector *group_sum;  /* G */
    lca_exact_scalar *group_loss; /* G */
    uint32_t *group_indices;      /* unit */
    size_t *group_counts;         /* G + 1 */
    uint8_t *group_mask;          /* unit, batch-norm nets only */
    /* an MLP's first layer at both ends of the step, one block of rows
     * (2 · width · LCA_INPUT_ROWS floats), when a view cannot keep it */
    float *first_scratch;
} lca_eval_worker;

typedef struct lca_integrator {
    lca_model *model;
    double threshold;
    unsigned max_subintervals;
    size_t unit;              /* examples per accumulation unit (lca_model_accumulation_unit) */
    size_t chunk;             /* examples per pass of a worker: at most unit */
    size_t bn_group;          /* examples per batch-norm group of every evaluation pass */
    bool units;               /* per-unit views (config lca_units) */
    bool histogram;           /* |LCA| histogram per view (config lca_histogram) */
    float *probe;             /* K: θ_t + s·Δθ */
    const float *before, *after; /* K each: θ_t and θ_{t+1} of the step being allocated */
    lca_eval_worker *workers; /* at most one per thread, fewer if memory_budget says so */
    size_t worker_count;
    size_t bytes;             /* allocated by the integrator and its views */
    size_t budget_left;       /* of memory_budget, after the workers' chunks and the
                                 views' first-layer values */
    /* loss groups (config example_groups): ids per example of the data,
     * G groups; 0 and NULL without */
    const uint32_t *example_groups;
    size_t example_group_count;
    uint32_t group_count;
} lca_integrator;

/* The integrator's settings come from config: threshold, cap, units,
 * bn_group, the accumulation unit (bn_group for batch-norm nets, else
 * LCA_ACCUMULATION_UNIT) and the chunk (lca_model_resolve_chunk). The model
 * is only read (its workspace aside): the group size goes to each pass. */
lca_status lca_integrator_init(lca_integrator *integrator, lca_model *model,
                               const lca_config *config, bool regression);
/* config->bn_group is at least 1 example (the trainer checks it too: it
 * resolves the chunk with or without LCA). */
lca_status lca_check_bn_group(const lca_config *config);
void lca_integrator_release(lca_integrator *integrator);
lca_status lca_view_init(lca_view *view, lca_integrator *integrator, const lca_dataset *data,
                         const uint32_t *indices, size_t count);
void lca_view_release(lca_view *view);
/* The examples of a view as the public API takes them (lca_evaluator_new,
 * lca_attribute): after the data-vs-model check, indices[0 … count) of
 * data, each checked against the data set, or, when *indices is NULL,
 * every example: *count = data->count and *indices = *all = 0 … count − 1
 * (malloc'ed; free *all once the view is gone; NULL otherwise). who names
 * the caller in messages. */
lca_status lca_view_examples(const lca_model *model, const lca_dataset *data,
                             const uint32_t **indices, size_t *count, uint32_t **all,
                             const char *who);

/* L(θ) and ∇L(θ) (mean over the view's examples) at parameters: the sum
 * over the view's accumulation units, exact, rounded once to float64 (so
 * independent of the chunk, the thread count and who took which unit);
 * written into gradient (K), or added to it with add, or skipped when
 * gradient is NULL. */
lca_status lca_view_evaluate(lca_integrator *integrator, const lca_view *view,
                             const float *parameters, double *loss, double *gradient, bool add);
/* The same with loss groups: also each group's share of the loss
 * (Σ_{i∈g} ℓ_i / E, G values) into group_share and its gradient (G · K,
 * group-major; added with add) into group_gradient. With groups the total
 * gradient is the exact sum of the group sums, rounded once. */
lca_status lca_view_evaluate_groups(lca_integrator *integrator, const lca_view *view,
                                    const float *parameters, double *loss, double *gradient,
                                    bool add, double *group_share, double *group_gradient);

/* LCA of the step from before to after on the view. Uses (and, if needed,
 * first computes) the start gradient; afterwards the end gradient becomes
 * the next start. totals/helped (K, may be NULL) accumulate the
 * per-parameter LCA and the count of iterations with LCA < −floor (the helped count). */
lca_status lca_view_step(lca_integrator *integrator, lca_view *view, const float *before,
                         const float *after, lca_view_record *record, double *totals,
                         uint32_t *helped);
/* lca_view_step with per-group per-parameter totals (G · K, may be NULL). */
lca_status lca_view_step_groups(lca_integrator *integrator, lca_view *view, const float *before,
                                const float *after, lca_view_record *record, double *totals,
                                uint32_t *helped, double *group_totals);

#endif
