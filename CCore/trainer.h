/* trainer.h: the trainer's internal state, shared by trainer.c, log.c and
 * checkpoint.c. Not part of the public API. */
#ifndef LCA_TRAINER_H
#define LCA_TRAINER_H

#include "integrator.h"

struct lca_trainer {
    lca_model *model;
    const lca_dataset *data;
    lca_config config;
    /* splits: example indices, ascending */
    uint32_t *train_indices;        /* train_count */
    uint32_t *validation_indices;   /* validation_count */
    uint32_t *evaluation_indices;   /* evaluation_count: train_indices or a subset */
    size_t train_count, validation_count, evaluation_count;
    bool owns_evaluation_indices;
    /* minibatches */
    uint32_t *order;                /* train_count: this epoch's shuffle */
    size_t position;                /* next example in order */
    uint32_t epoch;
    uint64_t iteration;             /* steps taken */
    size_t batch_capacity;
    size_t train_chunk;             /* examples of a minibatch one pass holds (the memory
                                       budget; lca_model_train_chunk): batch_capacity, or
                                       less, the batch then in sub-chunks */
    float *x;                       /* train_chunk × input (an MLP: its block of rows) */
    int32_t *labels;                /* batch */
    float *targets;                 /* batch × outputs, regression data only */
    /* K-sized, in the parameter layout */
    float *gradient;                /* minibatch gradient (+ weight decay) */
    float *before;                  /* θ_t, the start of the current step */
    float *velocity;                /* momentum buffer */
    float *adam_m, *adam_v;         /* Adam moments */
    double *lca_totals;             /* Σ_t LCA_{t,i} */
    uint32_t *helped_counts;        /* iterations with LCA_{t,i} < 0 */
    double *lr_scale;               /* T: per-tensor learning-rate multiplier */
    lca_integrator integrator;
    lca_view train_view, validation_view;
    size_t bytes;                   /* allocated by the trainer itself */
    lca_log *log;                   /* attached log (not owned): each step writes its record */
    /* loss groups (config example_groups): the trainer's copies of the ids
     * and the source (config points to them), per-group totals (G · K) */
    uint32_t *example_groups;
    char *group_source;
    double *group_totals;
};

/* Recompute this epoch's shuffle of the training split (from seed and
 * epoch only). */
void lca_trainer_reshuffle(lca_trainer *trainer);

#endif
