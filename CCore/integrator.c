/* integrator.c: streaming Loss Change Allocation (docs/method.md, section 2).
 *
 * For the step θ_t → θ_{t+1} with Δθ = θ_{t+1} − θ_t, the LCA of parameter
 * i is Δθ_i · ḡ_i with ḡ the average gradient along the segment. Composite
 * Simpson with n sub-intervals (n even) at s_k = k/n:
 *
 *   ḡ = (g_0 + g_n + 4·Σ_{k odd} g_k + 2·Σ_{k even, 0<k<n} g_k) / (3n)
 *
 * Doubling n turns every old point into an even point and adds the new odd
 * points, so only the new points are evaluated: sum_even += sum_odd, then
 * sum_odd = Σ of the new points. g_n is the next iteration's g_0: base cost
 * two evaluation-set gradient passes per iteration (midpoint and end).
 *
 * Accumulation units. A view's examples (in view order) are cut into fixed
 * units of A consecutive examples (lca_model_accumulation_unit: the
 * batch-norm group, else LCA_ACCUMULATION_UNIT; the last unit may be
 * shorter), a function of the model and bn_group only. A unit's gradient
 * is its examples' sum in float32, computed in passes of at most chunk
 * examples that continue each other (the layers' sequential accumulation,
 * so the passes give the bytes of one); the units are then added into
 * exact integer sums (exact_sum.h), whose result does not depend on their
 * order. So the evaluation-set loss and gradient depend neither on the
 * chunk (the memory a worker holds), nor on the thread count, nor on which
 * thread took which unit; data-parallel ranks holding some units each add
 * their integer sums the same way (ranks.c, docs/mpi.md). */
#include "integrator.h"
#include "ranks.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* NULL for a size that cannot be rounded up to the alignment (a saturated
 * SIZE_MAX from lca_size_mul_add among them) */
static void *allocate(lca_integrator *integrator, size_t bytes) {
    if (bytes > SIZE_MAX - 63) return NULL;
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p) integrator->bytes += bytes;
    return p;
}

static void release_worker(const lca_integrator *g, lca_eval_worker *w) {
    if (w->model != g->model) lca_model_free(w->model);
    free(w->x);
    free(w->labels);
    free(w->targets);
    free(w->gradient);
    lca_exact_vector_release(&w->sum);
    if (w->group_sum)
        for (size_t i = 0; i < g->group_count; i++) lca_exact_vector_release(&w->group_sum[i]);
    free(w->group_sum);
    free(w->group_loss);
    free(w->group_indices);
    free(w->group_counts);
    free(w->group_mask);
    free(w->first_scratch);
    memset(w, 0, sizeof *w);
}

/* A worker's loss-group buffers: an exact sum per group, the unit's
 * examples by group, and (batch norm) the group mask. */
static bool add_group_sums(lca_integrator *g, lca_eval_worker *w) {
    size_t k = g->model->parameter_count, gc = g->group_count;
    w->group_sum = calloc(gc, sizeof *w->group_sum);
    w->group_loss = calloc(gc, sizeof *w->group_loss);
    w->group_indices = malloc(g->unit * sizeof(uint32_t));
    w->group_counts = malloc((gc + 1) * sizeof(size_t));
    w->group_mask = lca_model_batchnorm_count(g->model) > 0 ? malloc(g->unit) : NULL;
    if (!w->group_sum || !w->group_loss || !w->group_indices || !w->group_counts ||
        (lca_model_batchnorm_count(g->model) > 0 && !w->group_mask))
        return false;
    g->bytes += gc * (sizeof *w->group_sum + sizeof *w->group_loss) + g->unit * 5 +
                (gc + 1) * sizeof(size_t);
    for (size_t i = 0; i < gc; i++) {
        if (!lca_exact_vector_init(&w->group_sum[i], k)) return false;
        g->bytes += 2 * k * sizeof(int64_t);
    }
    return true;
}

/* Evaluation workers: one per thread, as many as memory_budget holds
 * (at least one). Worker 0 evaluates with the integrator's own model. */
#define MAX_EVAL_WORKERS 64

static lca_status add_workers(lca_integrator *g, const lca_config *config, bool regression) {
    lca_model *model = g->model;
    size_t k = model->parameter_count;
    size_t in = lca_model_input_size(model), out = lca_model_output_size(model);
    size_t x_rows = lca_model_input_rows(model, g->chunk);
    /* what the budget counts: a chunk's workspace, input rows, labels and
     * (regression) targets; saturating: a size beyond 2^64 fits no budget
     * (one worker is made, and lca_model_reserve refuses what cannot fit
     * in memory) */
    size_t chunk_bytes = lca_size_mul_add(g->chunk, regression ? out * sizeof(float) : 0,
                                          lca_model_chunk_bytes(model, g->chunk));
    /* and per parameter (docs/memory.md): the unit's float32 gradient and
     * the exact sum's two limbs */
    size_t per_worker = lca_size_mul_add(k, sizeof(float) + 2 * sizeof(int64_t), chunk_bytes);
    /* with loss groups, an exact sum per group as well */
    per_worker = lca_size_mul_add(lca_size_mul_add(k, g->group_count, 0), 2 * sizeof(int64_t),
                                  per_worker);
    /* the one worker that is needed must fit in memory: refused before
     * anything is allocated, with the bytes (lca_memory_check) */
    char what[96];
    snprintf(what, sizeof what, "the buffers of an evaluation chunk of %zu examples", g->chunk);
    lca_status fits = lca_memory_check(per_worker, what,
                                       "try a smaller --eval-chunk or --memory-budget");
    if (fits != LCA_OK) return fits;
    size_t wanted = (size_t)lca_threads();
    /* worker 0 evaluates with the model, whose workspace may be larger
     * already (the trainer's step); the others each take a chunk's */
    size_t first = lca_model_workspace_bytes(model), need = lca_model_workspace_need(model, g->chunk);
    first = lca_size_mul_add(1, chunk_bytes - need, first > need ? first : need);
    size_t fit = config->memory_budget < first
                     ? 1
                     : 1 + (config->memory_budget - first) / (chunk_bytes ? chunk_bytes : 1);
    if (wanted > fit) wanted = fit;
    /* a recomputing net (pass.c, "segments") is evaluated by one worker, its
     * layers' loops on the threads: a second worker's chunk would double the
     * activations held, which recomputing is there to keep small
     * (docs/memory.md) */
    if (lca_model_recomputes(model)) wanted = 1;
    if (wanted > MAX_EVAL_WORKERS) wanted = MAX_EVAL_WORKERS;
    if (wanted == 0) wanted = 1;
    g->workers = calloc(wanted, sizeof *g->workers);
    if (!g->workers) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "LCA integrator: out of memory");
    g->bytes += wanted * sizeof *g->workers;
    for (size_t i = 0; i < wanted; i++) {
        lca_eval_worker *w = &g->workers[i];
        g->worker_count = i + 1;
        /* saturating sizes: a chunk too large for memory fails here (out of
         * memory) instead of wrapping to a small buffer */
        w->x = allocate(g, lca_size_mul_add(x_rows, lca_size_mul_add(in, sizeof(float), 0), 0));
        w->labels = allocate(g, lca_size_mul_add(g->chunk, sizeof(int32_t), 0));
        w->targets = regression
                         ? allocate(g, lca_size_mul_add(g->chunk, lca_size_mul_add(out, sizeof(float), 0), 0))
                         : NULL;
        w->gradient = allocate(g, lca_size_mul_add(k, sizeof(float), 0));
        bool summed = lca_exact_vector_init(&w->sum, k);
        if (summed) g->bytes += 2 * k * sizeof(int64_t);
        if (summed && g->group_count > 0) summed = add_group_sums(g, w);
        if (!w->x || !w->labels || (regression && !w->targets) || !w->gradient || !summed) {
            /* one worker is needed; further ones are only speed */
            if (i == 0)
                return lca_fail(LCA_ERR_OUT_OF_MEMORY,
                                "LCA integrator: cannot allocate the buffers of an evaluation "
                                "chunk of %zu examples (try a smaller --eval-chunk)",
                                g->chunk);
            break;
        }
        lca_status status = LCA_OK;
        if (i == 0) w->model = model;
        else status = lca_model_new_worker(model, &w->model);
        if (status == LCA_OK) status = lca_model_reserve(w->model, g->chunk);
        if (status == LCA_OK && i > 0) g->bytes += lca_model_workspace_bytes(w->model);
        if (status != LCA_OK) {
            if (i == 0) return status;
            break;
        }
    }
    /* a worker that could not be completed is released and not counted */
    lca_eval_worker *last = &g->workers[g->worker_count - 1];
    if (!last->model || last->model->max_batch < g->chunk) {
        release_worker(g, last);
        g->worker_count--;
    }
    size_t held = lca_size_mul_add(g->worker_count - 1, chunk_bytes, first);
    g->budget_left = config->memory_budget > held ? config->memory_budget - held : 0;
    return LCA_OK;
}

int lca_subintervals_valid(unsigned n) {
    return n >= 2 && n <= LCA_MAX_SUBINTERVALS && (n & (n - 1)) == 0;
}

lca_status lca_check_bn_group(const lca_config *config) {
    if (config->bn_group == 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "batch-norm group must be at least 1 example");
    return LCA_OK;
}

lca_status lca_integrator_init(lca_integrator *g, lca_model *model, const lca_config *config,
                               bool regression) {
    memset(g, 0, sizeof *g);
    lca_status checked = lca_check_bn_group(config);
    if (checked != LCA_OK) return checked;
    unsigned cap = config->lca_max_subintervals;
    if (!lca_subintervals_valid(cap))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "lca_max_subintervals must be 2, 4, 8, 16 or 32, not %u", cap);
    if (!(config->lca_threshold >= 0.0) || !isfinite(config->lca_threshold))
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_threshold must be finite and >= 0, not %g",
                        config->lca_threshold);
    g->model = model;
    g->threshold = config->lca_threshold;
    g->max_subintervals = cap;
    /* the unit from the model; the chunk as asked, or (0) from the memory
     * budget, at most a unit (a whole BN group for batch-norm nets) */
    g->unit = lca_model_accumulation_unit(model, config->bn_group);
    /* (a trainer has chosen its model's layout already) */
    lca_model_fit_layout(model, config->eval_chunk, config->bn_group, 0, config->memory_budget);
    if (config->eval_chunk == 0) {
        checked = lca_model_check_budget(model, g->unit, config->memory_budget);
        if (checked != LCA_OK) return checked;
    }
    g->chunk = lca_model_resolve_chunk(model, config->eval_chunk, config->bn_group,
                                       config->memory_budget);
    g->bn_group = config->bn_group;
    if (config->example_groups) {
        if (config->group_count == 0 || config->group_count > LCA_MAX_GROUPS)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "loss groups: %u groups, expected 1 to %d", config->group_count,
                            LCA_MAX_GROUPS);
        g->example_groups = config->example_groups;
        g->example_group_count = config->example_group_count;
        g->group_count = config->group_count;
    } else if (config->lca_group_totals) {
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "per-group totals need loss groups");
    }
    g->units = config->lca_units != 0;
    g->histogram = config->lca_histogram != 0;
    size_t k = model->parameter_count;
    g->probe = allocate(g, k * sizeof(float));
    lca_status status = !g->probe
                            ? lca_fail(LCA_ERR_OUT_OF_MEMORY, "LCA integrator: out of memory")
                            : add_workers(g, config, regression);
    if (status != LCA_OK) lca_integrator_release(g);
    return status;
}

void lca_integrator_release(lca_integrator *g) {
    free(g->probe);
    for (size_t i = 0; i < g->worker_count; i++) release_worker(g, &g->workers[i]);
    free(g->workers);
    memset(g, 0, sizeof *g);
}

/* A view's loss-group arrays, after checking the ids against the data
 * set; counts its examples per group. */
static lca_status init_view_groups(lca_view *v, lca_integrator *g, const lca_dataset *data) {
    size_t gc = g->group_count, k = g->model->parameter_count, t = g->model->tensor_count;
    if (g->example_group_count != data->count)
        return lca_fail(LCA_ERR_MISMATCH,
                        "loss groups: %zu group ids for a data set of %zu examples (one id per "
                        "example of the data is needed)", g->example_group_count, data->count);
    for (size_t i = 0; i < data->count; i++)
        if (g->example_groups[i] >= gc)
            return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                            "loss groups: the group id %u of example %zu is not below the %zu "
                            "groups", g->example_groups[i], i, gc);
    size_t gk = lca_size_mul_add(gc, k, 0) , gk_bytes = lca_size_mul_add(gk, sizeof(double), 0);
    v->group_examples = allocate(g, gc * sizeof(uint64_t));
    v->group_g_start = allocate(g, gk_bytes);
    v->group_g_end = allocate(g, gk_bytes);
    v->group_sum_odd = allocate(g, gk_bytes);
    v->group_sum_even = allocate(g, gk_bytes);
    v->group_share_start = allocate(g, gc * sizeof(double));
    v->group_share_end = allocate(g, gc * sizeof(double));
    v->group_lca = allocate(g, gc * t * sizeof(double));
    v->group_loss_before = allocate(g, gc * sizeof(double));
    v->group_loss_after = allocate(g, gc * sizeof(double));
    v->group_residual = allocate(g, gc * sizeof(double));
    v->group_flags = allocate(g, gc * sizeof(uint32_t));
    if (!v->group_examples || !v->group_g_start || !v->group_g_end || !v->group_sum_odd ||
        !v->group_sum_even || !v->group_share_start || !v->group_share_end || !v->group_lca ||
        !v->group_loss_before || !v->group_loss_after || !v->group_residual || !v->group_flags)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY,
                        "LCA view: out of memory for %zu loss groups (%zu bytes each)", gc,
                        4 * k * sizeof(double));
    memset(v->group_examples, 0, gc * sizeof(uint64_t));
    for (size_t i = 0; i < v->count; i++) v->group_examples[g->example_groups[v->indices[i]]]++;
    return LCA_OK;
}

/* How many of a view's units are this rank's: units rank, rank + ranks, …
 * (ranks.h) */
static size_t units_owned(size_t units, size_t rank, size_t ranks) {
    return rank < units ? (units - rank + ranks - 1) / ranks : 0;
}

/* The first layer along the step (above lca_view_step_groups): the view
 * keeps its values at both ends when what is left of the budget holds
 * them; else each worker gets one block's scratch to compute them again
 * at every interior point (slower, the same bytes). */
static lca_status init_first_layer(lca_view *v, lca_integrator *g) {
    const lca_model *m = g->model;
    if (!lca_model_streams_input(m)) return LCA_OK;
    size_t width = m->layers[0].out_size;
    size_t units = (v->count + g->unit - 1) / g->unit;
    size_t owned = units_owned(units, (size_t)lca_ranks_rank(), (size_t)lca_ranks_size());
    size_t floats = lca_size_mul_add(lca_size_mul_add(owned, g->unit, 0), width, 0);
    size_t bytes = lca_size_mul_add(floats, 2 * sizeof(float), 0);
    if (owned > 0 && bytes <= g->budget_left) {
        v->first_start = allocate(g, floats * sizeof(float));
        v->first_end = allocate(g, floats * sizeof(float));
        if (v->first_start && v->first_end) {
            g->budget_left -= bytes;
            v->first_bytes = bytes;
            return LCA_OK;
        }
        g->bytes -= (v->first_start ? floats * sizeof(float) : 0) +
                    (v->first_end ? floats * sizeof(float) : 0);
        free(v->first_start);
        free(v->first_end);
        v->first_start = v->first_end = NULL;
    }
    for (size_t i = 0; i < g->worker_count; i++) {
        lca_eval_worker *w = &g->workers[i];
        if (!w->first_scratch)
            w->first_scratch = allocate(g, 2 * width * LCA_INPUT_ROWS * sizeof(float));
        if (!w->first_scratch)
            return lca_fail(LCA_ERR_OUT_OF_MEMORY, "LCA view: out of memory");
    }
    return LCA_OK;
}

lca_status lca_view_init(lca_view *v, lca_integrator *g, const lca_dataset *data,
                         const uint32_t *indices, size_t count) {
    memset(v, 0, sizeof *v);
    if (count == 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "LCA evaluation set is empty");
    v->data = data;
    v->indices = indices;
    v->count = count;
    size_t k = g->model->parameter_count, t = g->model->tensor_count;
    v->g_start = allocate(g, k * sizeof(double));
    v->g_end = allocate(g, k * sizeof(double));
    v->sum_odd = allocate(g, k * sizeof(double));
    v->sum_even = allocate(g, k * sizeof(double));
    v->tensor_lca = allocate(g, t * sizeof(double));
    v->tensor_first_order = allocate(g, t * sizeof(double));
    v->tensor_helped = allocate(g, t * sizeof(uint64_t));
    v->tensor_hurt = allocate(g, t * sizeof(uint64_t));
    v->tensor_zero = allocate(g, t * sizeof(uint64_t));
    v->tensor_helping = allocate(g, t * sizeof(double));
    v->tensor_hurting = allocate(g, t * sizeof(double));
    v->tensor_unmoved = allocate(g, t * sizeof(uint64_t));
    if (g->histogram) {
        v->tensor_histogram = allocate(g, t * 2 * LCA_HISTOGRAM_BINS * sizeof(uint32_t));
        if (!v->tensor_histogram) {
            lca_view_release(v);
            return lca_fail(LCA_ERR_OUT_OF_MEMORY, "LCA view: out of memory for the histogram");
        }
    }
    size_t u = g->model->unit_count;
    if (g->units) {
        v->unit_lca = allocate(g, (u ? u : 1) * sizeof(double));
        if (!v->unit_lca) {
            lca_view_release(v);
            return lca_fail(LCA_ERR_OUT_OF_MEMORY, "LCA view: out of memory for %zu units", u);
        }
    }
    if (g->group_count > 0) {
        lca_status status = init_view_groups(v, g, data);
        if (status != LCA_OK) {
            lca_view_release(v);
            return status;
        }
    }
    if (!v->g_start || !v->g_end || !v->sum_odd || !v->sum_even || !v->tensor_lca ||
        !v->tensor_first_order || !v->tensor_helped || !v->tensor_hurt || !v->tensor_zero ||
        !v->tensor_helping || !v->tensor_hurting || !v->tensor_unmoved) {
        lca_view_release(v);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "LCA view: out of memory");
    }
    lca_status status = init_first_layer(v, g);
    if (status != LCA_OK) lca_view_release(v);
    return status;
}

lca_status lca_view_examples(const lca_model *model, const lca_dataset *data,
                             const uint32_t **indices, size_t *count, uint32_t **all,
                             const char *who) {
    *all = NULL;
    lca_status status = lca_model_check_data(model, data);
    if (status != LCA_OK) return status;
    if (*indices) return lca_dataset_check_indices(data, *indices, *count, who);
    *count = data->count;
    *all = malloc(*count * sizeof(uint32_t));
    if (!*all) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", who);
    for (size_t i = 0; i < *count; i++) (*all)[i] = (uint32_t)i;
    *indices = *all;
    return LCA_OK;
}

void lca_view_release(lca_view *v) {
    free(v->first_start);
    free(v->first_end);
    free(v->g_start);
    free(v->g_end);
    free(v->sum_odd);
    free(v->sum_even);
    free(v->tensor_lca);
    free(v->tensor_first_order);
    free(v->tensor_helped);
    free(v->tensor_hurt);
    free(v->tensor_zero);
    free(v->tensor_helping);
    free(v->tensor_hurting);
    free(v->tensor_unmoved);
    free(v->tensor_histogram);
    free(v->unit_lca);
    free(v->group_examples);
    free(v->group_g_start);
    free(v->group_g_end);
    free(v->group_sum_odd);
    free(v->group_sum_even);
    free(v->group_share_start);
    free(v->group_share_end);
    free(v->group_lca);
    free(v->group_loss_before);
    free(v->group_loss_after);
    free(v->group_residual);
    free(v->group_flags);
    memset(v, 0, sizeof *v);
}

/* One evaluation pass over a view, shared by its threads. */
typedef struct eval_pass {
    const lca_integrator *g;
    const lca_view *v;
    const float *parameters;
    double scale;             /* 1/E */
    bool gradient;            /* the gradient too, not the loss alone */
    size_t units;
    size_t rank, ranks;       /* this rank owns units rank, rank + ranks, … (ranks.h) */
    atomic_size_t next;       /* the next of its units a thread takes */
    atomic_bool failed;       /* a unit failed: stop taking units */
    /* an MLP's first layer along the step, for the example in slot 0 (the
     * first of this rank's units; a unit's examples take the slots after
     * its first in the order its passes go), or NULL */
    const lca_first_layer *first;
    size_t first_width;
} eval_pass;

/* The tensor that holds parameter i, for messages. */
static const lca_tensor *tensor_of(const lca_model *m, size_t i) {
    for (size_t t = 0; t < m->tensor_count; t++)
        if (i >= m->tensors[t].offset && i - m->tensors[t].offset < m->tensors[t].count)
            return &m->tensors[t];
    return &m->tensors[0];
}

static lca_status out_of_range(const lca_model *m, size_t i, double value, size_t unit,
                               size_t first, size_t n) {
    const lca_tensor *t = tensor_of(m, i);
    if (unit == SIZE_MAX)
        return lca_fail(LCA_ERR_NUMERIC,
                        "the evaluation-set gradient of %s element %zu left the exact sum's "
                        "range (|sum| < 2^42): training diverged; try a smaller learning rate",
                        t->name, i - t->offset);
    return lca_fail(LCA_ERR_NUMERIC,
                    "the gradient of %s element %zu over examples %zu-%zu of the evaluation set "
                    "(accumulation unit %zu) is %g, beyond the exact sum's range (|x| < 2^24 a "
                    "unit, |sum| < 2^42): training diverged; try a smaller learning rate",
                    t->name, i - t->offset, first, first + n - 1, unit, value);
}

/* A unit's (or a loss group's share of a unit's) gradient, w->gradient,
 * and loss into the given exact sums. */
static lca_status add_to_sums(const eval_pass *p, lca_eval_worker *w, lca_exact_vector *sum,
                              lca_exact_scalar *loss_sum, double loss, size_t u, size_t first,
                              size_t n) {
    if (p->gradient) {
        size_t k = w->sum.count, bad = lca_exact_add(sum, w->gradient);
        if (bad != k) return out_of_range(p->g->model, bad, w->gradient[bad], u, first, n);
    }
    if (!lca_exact_scalar_add(loss_sum, loss))
        return lca_fail(LCA_ERR_NUMERIC, "loss is not finite (%g): training diverged; "
                                         "try a smaller learning rate", loss);
    return LCA_OK;
}

/* Unit u failed: kept in the worker if it is the worker's lowest failed
 * unit (the error reported does not depend on the threads), and the pass
 * told to stop. */
static void note_failure(eval_pass *p, lca_eval_worker *w, size_t u, lca_status status) {
    if (u < w->failed_unit) {
        w->failed_unit = u;
        w->status = status;
        snprintf(w->message, sizeof w->message, "%s", lca_last_error());
    }
    atomic_store_explicit(&p->failed, true, memory_order_relaxed);
}

/* A pass's failure over evaluation examples [first, first + n), named (the
 * pass numbers its own examples), with the loss group unless SIZE_MAX;
 * LCA_OK passes through. */
static lca_status name_examples(lca_status status, size_t first, size_t n, size_t group) {
    if (status == LCA_OK) return status;
    char message[1900];
    snprintf(message, sizeof message, "%s", lca_last_error());
    if (group == SIZE_MAX)
        return lca_fail(status, "evaluation examples %zu-%zu: %s", first, first + n - 1, message);
    return lca_fail(status, "evaluation examples %zu-%zu (group %zu): %s", first, first + n - 1,
                    group, message);
}

/* Examples indices[0, n) of a net without batch norm, in passes of at most
 * the chunk: their loss added to *loss, their gradient to w->gradient. An
 * error names the examples (the pass numbers its own): the chunk's, or for
 * a loss group (group < SIZE_MAX), whose examples are spread over the
 * unit, the unit's [first, first + unit_n). */
static lca_status chunked_passes(const eval_pass *p, lca_eval_worker *w,
                                 const uint32_t *indices, size_t n, double *loss, size_t first,
                                 size_t unit_n, size_t group, size_t slot) {
    const lca_integrator *g = p->g;
    const lca_view *v = p->v;
    /* an MLP converts its rows as it goes (into w->x) */
    bool streams = lca_model_streams_input(w->model);
    for (size_t done = 0; done < n; done += g->chunk) {
        size_t count = n - done < g->chunk ? n - done : g->chunk;
        const uint32_t *at = indices + done;
        lca_dataset_gather(v->data, at, count, streams ? NULL : w->x, w->labels, w->targets);
        lca_model_input input = {.x = streams ? NULL : w->x, .data = v->data, .indices = at,
                                 .rows = w->x};
        lca_first_layer first_layer;
        if (p->first) {
            size_t at_slot = (slot + done) * p->first_width;
            first_layer = *p->first;
            if (first_layer.store) first_layer.store += at_slot;
            if (first_layer.start) first_layer.start += at_slot;
            if (first_layer.end) first_layer.end += at_slot;
            first_layer.scratch = w->first_scratch;
            input.first = &first_layer;
        }
        lca_status status = lca_model_forward_backward_input(
            w->model, p->parameters, &input, v->data->labels ? w->labels : NULL,
            v->data->targets ? w->targets : NULL, count, g->bn_group, p->scale, loss,
            p->gradient ? w->gradient : NULL, done > 0);
        if (status == LCA_OK) continue;
        if (group == SIZE_MAX) return name_examples(status, first + done, count, group);
        return name_examples(status, first, unit_n, group);
    }
    return LCA_OK;
}

/* Unit u on one worker: its passes, then its gradient and loss into the
 * worker's exact sums. A failure is kept in the worker (lca_last_error
 * belongs to the thread that ran it) if it is the worker's first. */
static void evaluate_unit(eval_pass *p, lca_eval_worker *w, size_t u, size_t slot) {
    const lca_integrator *g = p->g;
    const lca_view *v = p->v;
    size_t first = u * g->unit;
    size_t n = v->count - first < g->unit ? v->count - first : g->unit;
    double loss = 0.0;
    lca_status status = LCA_OK;
    bool grouped = lca_model_batchnorm_count(w->model) > 0;
    if (grouped) {
        /* a batch-norm group: one pass, or sub-chunks when it does not fit */
        lca_group_input input = {.data = v->data, .indices = v->indices + first, .x_rows = w->x,
                                 .label_rows = w->labels, .target_rows = w->targets};
        status = lca_model_forward_backward_group(w->model, p->parameters, &input, n, g->chunk,
                                                  g->bn_group, p->scale, &loss,
                                                  p->gradient ? w->gradient : NULL);
        status = name_examples(status, first, n, SIZE_MAX);
    }
    if (!grouped)
        status = chunked_passes(p, w, v->indices + first, n, &loss, first, n, SIZE_MAX, slot);
    if (status == LCA_OK) status = add_to_sums(p, w, &w->sum, &w->loss, loss, u, first, n);
    if (status != LCA_OK) note_failure(p, w, u, status);
}

/* Unit u with loss groups: its examples sorted by group (stable, view
 * order within a group), then each group present in the unit on its own
 * into that group's exact sums. Without batch norm the group's examples
 * are one pass (in chunks that continue each other) of their own; with
 * batch norm the unit is one batch-norm group whose statistics mix all of
 * its examples, so each group present is a masked pass over the whole
 * unit (loss weight 0 outside the group): up to G passes a unit. */
static void evaluate_unit_groups(eval_pass *p, lca_eval_worker *w, size_t u, size_t slot) {
    const lca_integrator *g = p->g;
    const lca_view *v = p->v;
    size_t first = u * g->unit, gc = g->group_count;
    size_t n = v->count - first < g->unit ? v->count - first : g->unit;
    const uint32_t *unit = v->indices + first;
    const uint32_t *ids = g->example_groups;
    size_t *counts = w->group_counts;
    memset(counts, 0, (gc + 1) * sizeof *counts);
    for (size_t i = 0; i < n; i++) counts[ids[unit[i]] + 1]++;
    for (size_t i = 0; i < gc; i++) counts[i + 1] += counts[i]; /* group i starts at counts[i] */
    for (size_t i = 0; i < n; i++) w->group_indices[counts[ids[unit[i]]]++] = unit[i];
    /* counts[i] is now where group i ends */
    bool batchnorm = lca_model_batchnorm_count(w->model) > 0;
    lca_status status = LCA_OK;
    /* a batch-norm group that fits the workspace: one forward, kept for
     * every loss group's masked loss and backward (the bytes of a masked
     * pass each; pass.c) */
    lca_kept_forward kept;
    /* a recomputing net (pass.c, "segments") too: its backward passes
     * after the first recompute the last segment as well */
    bool keep = batchnorm && n <= g->chunk;
    if (keep) {
        lca_group_input input = {.data = v->data, .indices = unit, .x_rows = w->x,
                                 .label_rows = w->labels, .target_rows = w->targets};
        status = lca_model_forward_kept(w->model, p->parameters, &input, n, g->bn_group, &kept);
        status = name_examples(status, first, n, SIZE_MAX);
    }
    for (size_t group = 0, begin = 0; group < gc && status == LCA_OK; begin = counts[group++]) {
        size_t members = counts[group] - begin;
        if (members == 0) continue;
        double loss = 0.0;
        if (keep) {
            for (size_t i = 0; i < n; i++) w->group_mask[i] = ids[unit[i]] == group;
            status = lca_model_backward_kept(w->model, p->parameters, &kept, w->group_mask,
                                             p->scale, &loss, p->gradient ? w->gradient : NULL);
        } else if (batchnorm) {
            for (size_t i = 0; i < n; i++) w->group_mask[i] = ids[unit[i]] == group;
            lca_group_input input = {.data = v->data, .indices = unit, .x_rows = w->x,
                                     .label_rows = w->labels, .target_rows = w->targets,
                                     .mask = w->group_mask};
            status = lca_model_forward_backward_group(w->model, p->parameters, &input, n, g->chunk,
                                                      g->bn_group, p->scale, &loss,
                                                      p->gradient ? w->gradient : NULL);
            status = name_examples(status, first, n, group);
        }
        if (!batchnorm)
            status = chunked_passes(p, w, w->group_indices + begin, members, &loss, first, n,
                                    group, slot + begin);
        if (status == LCA_OK)
            status = add_to_sums(p, w, &w->group_sum[group], &w->group_loss[group], loss, u,
                                 first, n);
    }
    if (status != LCA_OK) note_failure(p, w, u, status);
}

/* One thread's share: the next unit, until none are left or one failed.
 * Units are taken in increasing order and a taken unit is finished, so
 * every unit before the first that failed has been evaluated: the error
 * reported (the lowest failed unit's) does not depend on the threads. */
static void evaluate_units(eval_pass *p, lca_eval_worker *w) {
    for (;;) {
        if (atomic_load_explicit(&p->failed, memory_order_relaxed)) return;
        size_t j = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (j >= units_owned(p->units, p->rank, p->ranks)) return;
        size_t u = p->rank + j * p->ranks, slot = j * p->g->unit;
        if (p->g->group_count > 0) evaluate_unit_groups(p, w, u, slot);
        else evaluate_unit(p, w, u, slot);
    }
}

static void evaluate_team_member(size_t member, void *context) {
    eval_pass *p = context;
    evaluate_units(p, &p->g->workers[member]);
}

lca_status lca_view_evaluate(lca_integrator *g, const lca_view *v, const float *parameters,
                             double *loss, double *gradient, bool add) {
    return lca_view_evaluate_groups(g, v, parameters, loss, gradient, add, NULL, NULL);
}

/* lca_view_evaluate_groups, with the first layer taken as first says (or
 * as usual for NULL) */
static lca_status evaluate_view(lca_integrator *g, const lca_view *v, const float *parameters,
                                const lca_first_layer *first, double *loss, double *gradient,
                                bool add, double *group_share, double *group_gradient) {
    size_t gc = g->group_count;
    if (gc > 0 && gradient && !group_gradient)
        return lca_fail(LCA_ERR_STATE, "LCA integrator: loss groups without their gradients");
    eval_pass p = {.g = g, .v = v, .parameters = parameters, .gradient = gradient != NULL,
                   .first = first, .first_width = first ? g->model->layers[0].out_size : 0};
    /* Every unit's gradient is scaled by 1/E (E = examples in the view),
     * so the units add up to the gradient of the mean loss. */
    p.scale = 1.0 / (double)v->count;
    p.units = (v->count + g->unit - 1) / g->unit;
    /* data-parallel ranks: this rank's units only (ranks.h); one rank
     * without MPI. A rank with no unit still takes part in the combine. */
    p.ranks = (size_t)lca_ranks_size();
    p.rank = (size_t)lca_ranks_rank();
    size_t owned = units_owned(p.units, p.rank, p.ranks);
    if (p.rank >= p.units) p.rank = p.units; /* evaluate_units then takes none */
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, false);
    size_t threads = (size_t)lca_threads();
    if (threads > g->worker_count) threads = g->worker_count;
    if (threads > owned) threads = owned;
    if (threads < 1) threads = 1;
    for (size_t i = 0; i < threads; i++) {
        lca_eval_worker *w = &g->workers[i];
        if (gradient) lca_exact_clear(&w->sum);
        lca_exact_scalar_clear(&w->loss);
        for (size_t i = 0; i < gc; i++) {
            if (gradient) lca_exact_clear(&w->group_sum[i]);
            lca_exact_scalar_clear(&w->group_loss[i]);
        }
        w->failed_unit = SIZE_MAX;
        w->status = LCA_OK;
    }
    struct timespec began, ended, cpu_began, cpu_ended;
    clock_gettime(CLOCK_MONOTONIC, &began);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_began);
    if (threads == 1) {
        /* one unit at a time, the threads (if any) inside its layers */
        evaluate_units(&p, &g->workers[0]);
    } else {
        /* the units over the threads, each team member with its own worker */
        lca_parallel_team(threads, evaluate_team_member, &p);
    }
    /* This rank's result: the first failed unit's message, else the
     * workers' sums merged into worker 0's (integer additions, in any
     * order) and carried; a merge out of range counts as a failure after
     * the last unit. */
    lca_eval_worker *total = &g->workers[0];
    size_t failed_unit = SIZE_MAX;
    lca_status failed_status = LCA_OK;
    const char *failed_message = "";
    if (atomic_load(&p.failed)) {
        const lca_eval_worker *first = &g->workers[0];
        for (size_t i = 1; i < threads; i++)
            if (g->workers[i].failed_unit < first->failed_unit) first = &g->workers[i];
        failed_unit = first->failed_unit;
        failed_status = first->status;
        failed_message = first->message;
    } else {
        size_t k = total->sum.count, bad = k;
        for (size_t i = 1; i < threads; i++) {
            lca_exact_scalar_merge(&total->loss, &g->workers[i].loss);
            if (gradient && bad == k) bad = lca_exact_merge(&total->sum, &g->workers[i].sum);
            for (size_t j = 0; j < gc; j++) {
                lca_exact_scalar_merge(&total->group_loss[j], &g->workers[i].group_loss[j]);
                if (gradient && bad == k)
                    bad = lca_exact_merge(&total->group_sum[j], &g->workers[i].group_sum[j]);
            }
        }
        /* with groups the total is the exact sum of the groups' sums */
        for (size_t j = 0; j < gc; j++) {
            lca_exact_scalar_merge(&total->loss, &total->group_loss[j]);
            if (gradient && bad == k) bad = lca_exact_merge(&total->sum, &total->group_sum[j]);
        }
        if (gradient && bad == k) bad = lca_exact_carry(&total->sum);
        if (bad != k) {
            failed_status = out_of_range(g->model, bad, 0.0, SIZE_MAX, 0, 0);
            failed_unit = p.units;
            snprintf(total->message, sizeof total->message, "%s", lca_last_error());
            failed_message = total->message;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &ended);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_ended);
    double seconds = (double)(ended.tv_sec - began.tv_sec) + 1e-9 * (double)(ended.tv_nsec - began.tv_nsec);
    double cpu = (double)(cpu_ended.tv_sec - cpu_began.tv_sec) +
                 1e-9 * (double)(cpu_ended.tv_nsec - cpu_began.tv_nsec);
    /* every rank's sums into every rank's: integer additions (ranks.c) */
    size_t bad = 0;
    lca_status combined = lca_ranks_combine(failed_unit, failed_status, failed_message,
                                            gradient ? &total->sum : NULL, &total->loss, seconds,
                                            cpu, &bad);
    if (combined != LCA_OK) {
        if (gradient && bad != total->sum.count) return out_of_range(g->model, bad, 0.0, SIZE_MAX, 0, 0);
        return combined;
    }
    /* the loss groups' sums likewise (nothing to do on one rank) */
    size_t which = gc;
    combined = lca_ranks_sum_groups(gradient ? total->group_sum : NULL, total->group_loss, gc, &which, &bad);
    if (combined == LCA_ERR_NUMERIC) return out_of_range(g->model, bad, 0.0, SIZE_MAX, 0, 0);
    if (combined != LCA_OK) return combined;
    if (gradient) {
        size_t k = total->sum.count, bad = lca_exact_read(&total->sum, gradient, add);
        if (bad != k) return out_of_range(g->model, bad, 0.0, SIZE_MAX, 0, 0);
        for (size_t j = 0; j < gc; j++) {
            bad = lca_exact_read(&total->group_sum[j], group_gradient + j * k, add);
            if (bad != k) return out_of_range(g->model, bad, 0.0, SIZE_MAX, 0, 0);
        }
    }
    for (size_t j = 0; j < gc && group_share; j++)
        group_share[j] = lca_exact_scalar_value(&total->group_loss[j]) / (double)v->count;
    *loss = lca_exact_scalar_value(&total->loss) / (double)v->count;
    return LCA_OK;
}

lca_status lca_view_evaluate_groups(lca_integrator *g, const lca_view *v,
                                    const float *parameters, double *loss, double *gradient,
                                    bool add, double *group_share, double *group_gradient) {
    return evaluate_view(g, v, parameters, NULL, loss, gradient, add, group_share,
                         group_gradient);
}

/* Δθ_i = θ_{t+1,i} − θ_{t,i} of the current step, exact in float64 (two
 * floats' difference), recomputed where needed rather than stored. */
static inline double delta(const lca_integrator *g, size_t i) {
    return (double)g->after[i] - (double)g->before[i];
}

/* Add the gradients at the new odd points s = 1/n, 3/n, … to sum_odd. */
static lca_status add_odd_points(lca_integrator *g, lca_view *v, unsigned n) {
    size_t k = g->model->parameter_count;
    for (unsigned j = 1; j < n; j += 2) {
        double s = (double)j / (double)n;
        for (size_t i = 0; i < k; i++) g->probe[i] = (float)((double)g->before[i] + s * delta(g, i));
        /* an MLP's first layer from the ends (s = j/n, n ≤ 32: exact in float) */
        lca_first_layer first = {.start = v->first_start, .end = v->first_end,
                                 .start_parameters = g->before, .end_parameters = g->after,
                                 .s = (float)s};
        bool mlp = lca_model_streams_input(g->model);
        double loss;
        lca_status status = evaluate_view(g, v, g->probe, mlp ? &first : NULL, &loss, v->sum_odd,
                                          true, NULL, v->group_sum_odd);
        if (status != LCA_OK) return status;
    }
    return LCA_OK;
}

/* Σ_i Δθ_i·ḡ_i for n sub-intervals, in a fixed order: within each tensor,
 * then over tensors, the same order the record's sums use. */
static double allocated_total(const lca_integrator *g, const lca_view *v, unsigned n) {
    const lca_model *m = g->model;
    double weight = 1.0 / (3.0 * n), total = 0.0;
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_tensor *tensor = &m->tensors[t];
        double tensor_sum = 0.0;
        for (size_t i = tensor->offset; i < tensor->offset + tensor->count; i++) {
            double mean_gradient = (v->g_start[i] + v->g_end[i] + 4.0 * v->sum_odd[i] +
                                    2.0 * v->sum_even[i]) * weight;
            tensor_sum += delta(g, i) * mean_gradient;
        }
        total += tensor_sum;
    }
    return total;
}

/* Σ_i Δθ_i·ḡ_{group,i} per tensor into out (T), for n sub-intervals, in
 * the order of allocated_total; returns their sum. */
static double group_allocated(const lca_integrator *g, const lca_view *v, unsigned n,
                              size_t group, double *out) {
    const lca_model *m = g->model;
    size_t k = m->parameter_count;
    const double *start = v->group_g_start + group * k, *end = v->group_g_end + group * k;
    const double *odd = v->group_sum_odd + group * k, *even = v->group_sum_even + group * k;
    double weight = 1.0 / (3.0 * n), total = 0.0;
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_tensor *tensor = &m->tensors[t];
        double tensor_sum = 0.0;
        for (size_t i = tensor->offset; i < tensor->offset + tensor->count; i++)
            tensor_sum += delta(g, i) * ((start[i] + end[i] + 4.0 * odd[i] + 2.0 * even[i]) * weight);
        if (out) out[t] = tensor_sum;
        total += tensor_sum;
    }
    return total;
}

/* Whether some group's |residual| is above the threshold at n. */
static bool group_above(const lca_integrator *g, const lca_view *v, unsigned n) {
    for (size_t j = 0; j < g->group_count; j++) {
        double change = v->group_share_end[j] - v->group_share_start[j];
        if (fabs(change - group_allocated(g, v, n, j, NULL)) > g->threshold) return true;
    }
    return false;
}

lca_status lca_view_step(lca_integrator *g, lca_view *v, const float *before, const float *after,
                         lca_view_record *record, double *totals, uint32_t *helped) {
    return lca_view_step_groups(g, v, before, after, record, totals, helped, NULL);
}

lca_status lca_view_step_groups(lca_integrator *g, lca_view *v, const float *before,
                                const float *after, lca_view_record *record, double *totals,
                                uint32_t *helped, double *group_totals) {
    const lca_model *m = g->model;
    size_t k = m->parameter_count, gc = g->group_count, gk = gc * k;
    lca_status status;
    /* the ends' first-layer values, kept for the interior points */
    lca_first_layer keep_start = {.store = v->first_start}, keep_end = {.store = v->first_end};
    if (!v->have_start) {
        status = evaluate_view(g, v, before, v->first_start ? &keep_start : NULL, &v->loss_start,
                               v->g_start, false, v->group_share_start, v->group_g_start);
        if (status != LCA_OK) return status;
        v->have_start = true;
    }
    g->before = before;
    g->after = after;
    status = evaluate_view(g, v, after, v->first_end ? &keep_end : NULL, &v->loss_end, v->g_end,
                           false, v->group_share_end, v->group_g_end);
    if (status != LCA_OK) return status;

    memset(v->sum_odd, 0, k * sizeof(double));
    memset(v->sum_even, 0, k * sizeof(double));
    if (gc) {
        memset(v->group_sum_odd, 0, gk * sizeof(double));
        memset(v->group_sum_even, 0, gk * sizeof(double));
    }
    unsigned n = 2;
    status = add_odd_points(g, v, n);
    if (status != LCA_OK) return status;
    double change = v->loss_end - v->loss_start;
    double total = allocated_total(g, v, n);
    /* Refine while the residual is above threshold: each doubling keeps the
     * old points (now even) and evaluates only the new odd ones. With loss
     * groups, also while some group's residual is above it (docs/method.md,
     * "Groups"). */
    while ((fabs(change - total) > g->threshold || (gc && group_above(g, v, n))) &&
           n < g->max_subintervals) {
        for (size_t i = 0; i < k; i++) {
            v->sum_even[i] += v->sum_odd[i];
            v->sum_odd[i] = 0.0;
        }
        for (size_t i = 0; i < gk; i++) {
            v->group_sum_even[i] += v->group_sum_odd[i];
            v->group_sum_odd[i] = 0.0;
        }
        n *= 2;
        status = add_odd_points(g, v, n);
        if (status != LCA_OK) return status;
        total = allocated_total(g, v, n);
    }

    /* Per-parameter LCA and per-tensor sums, in the same order as
     * allocated_total so that the record's total equals the sum of its
     * tensors exactly. Every LCA_{t,i} is kept in sum_even (dead once the
     * last sub-interval count is fixed; cleared at the next step) for the
     * second pass, which needs the floor, i.e. the largest |LCA| of all. */
    double weight = 1.0 / (3.0 * n), first_order_total = 0.0, largest = 0.0;
    total = 0.0;
    if (v->unit_lca) memset(v->unit_lca, 0, m->unit_count * sizeof(double));
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_tensor *tensor = &m->tensors[t];
        double tensor_sum = 0.0, tensor_first = 0.0;
        /* per-unit views: element e of the tensor belongs to unit
         * e / per_unit of its group (the first dimension) */
        double *units = NULL;
        size_t per_unit = 1;
        if (v->unit_lca && tensor->unit_group >= 0 &&
            (size_t)tensor->unit_group < m->unit_group_count) {
            const lca_unit_group *group = &m->unit_groups[tensor->unit_group];
            if (group->units > 0) {
                per_unit = tensor->count / group->units;
                units = per_unit > 0 ? v->unit_lca + group->offset : NULL;
            }
        }
        uint64_t unmoved = 0;
        for (size_t i = tensor->offset; i < tensor->offset + tensor->count; i++) {
            double mean_gradient = (v->g_start[i] + v->g_end[i] + 4.0 * v->sum_odd[i] +
                                    2.0 * v->sum_even[i]) * weight;
            double step = delta(g, i);
            double lca = step * mean_gradient;
            tensor_sum += lca;
            tensor_first += step * v->g_start[i];
            if (units) units[(i - tensor->offset) / per_unit] += lca;
            if (totals) totals[i] += lca;
            if (step == 0.0) unmoved++;
            double size = fabs(lca);
            if (size > largest) largest = size;
            v->sum_even[i] = lca;
        }
        v->tensor_lca[t] = tensor_sum;
        v->tensor_first_order[t] = tensor_first;
        v->tensor_unmoved[t] = unmoved;
        total += tensor_sum;
        first_order_total += tensor_first;
    }

    /* The zero floor f = 2^-30 · max |LCA| (docs/log-format.md, version 2):
     * helped LCA < −f, hurt LCA > f, else zero (a NaN too, so the three
     * always add up to the count); the helping and hurting sums in float64
     * in index order; the histogram of |LCA| beyond the floor. */
    double zero_floor = LCA_ZERO_FLOOR_RATIO * largest;
    v->lca_floor = zero_floor;
    const double *edges = lca_histogram_edges();
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_tensor *tensor = &m->tensors[t];
        uint64_t helped_count = 0, hurt_count = 0;
        double helping = 0.0, hurting = 0.0;
        uint32_t *bins = v->tensor_histogram ? v->tensor_histogram + t * 2 * LCA_HISTOGRAM_BINS : NULL;
        if (bins) memset(bins, 0, 2 * LCA_HISTOGRAM_BINS * sizeof(uint32_t));
        for (size_t i = tensor->offset; i < tensor->offset + tensor->count; i++) {
            double lca = v->sum_even[i];
            uint32_t *side;
            if (lca < -zero_floor) {
                helped_count++;
                helping += lca;
                if (helped) helped[i]++; /* the run totals count the same way */
                side = bins;
            } else if (lca > zero_floor) {
                hurt_count++;
                hurting += lca;
                side = bins ? bins + LCA_HISTOGRAM_BINS : NULL;
            } else {
                continue;
            }
            if (side) {
                /* the bin is the number of edges <= |LCA| (0 … 29) */
                double size = fabs(lca);
                unsigned lo = 0, hi = LCA_HISTOGRAM_BINS - 1;
                while (lo < hi) {
                    unsigned mid = (lo + hi) / 2;
                    if (edges[mid] <= size) lo = mid + 1;
                    else hi = mid;
                }
                side[lo]++;
            }
        }
        v->tensor_helped[t] = helped_count;
        v->tensor_hurt[t] = hurt_count;
        v->tensor_zero[t] = tensor->count - helped_count - hurt_count;
        v->tensor_helping[t] = helping;
        v->tensor_hurting[t] = hurting;
    }

    record->loss_before = v->loss_start;
    record->loss_after = v->loss_end;
    record->lca_total = total;
    record->first_order_total = first_order_total;
    record->residual = v->loss_end - v->loss_start - total;
    record->subintervals = n;
    record->flags = fabs(record->residual) > g->threshold ? LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD : 0;
    record->tensor_lca = v->tensor_lca;
    record->tensor_first_order = v->tensor_first_order;
    record->tensor_helped = v->tensor_helped;
    record->tensor_hurt = v->tensor_hurt;
    record->tensor_zero = v->tensor_zero;
    record->unit_lca = v->unit_lca;
    record->lca_floor = v->lca_floor;
    record->tensor_helping = v->tensor_helping;
    record->tensor_hurting = v->tensor_hurting;
    record->tensor_unmoved = v->tensor_unmoved;
    record->tensor_histogram = v->tensor_histogram;

    /* Loss groups: each group's LCA per tensor (the order of the total's),
     * its own mean losses, and its residual against its share's change;
     * a group without examples in the view has losses 0 (and LCA 0). */
    record->group_count = (uint32_t)gc;
    if (gc) {
        size_t t = m->tensor_count;
        for (size_t j = 0; j < gc; j++) {
            double allocated = group_allocated(g, v, n, j, v->group_lca + j * t);
            double examples = (double)v->group_examples[j], whole = (double)v->count;
            bool empty = v->group_examples[j] == 0;
            v->group_loss_before[j] = empty ? 0.0 : v->group_share_start[j] * whole / examples;
            v->group_loss_after[j] = empty ? 0.0 : v->group_share_end[j] * whole / examples;
            v->group_residual[j] = v->group_share_end[j] - v->group_share_start[j] - allocated;
            v->group_flags[j] =
                fabs(v->group_residual[j]) > g->threshold ? LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD : 0;
            if (group_totals) {
                const double *start = v->group_g_start + j * k, *end = v->group_g_end + j * k;
                const double *odd = v->group_sum_odd + j * k, *even = v->group_sum_even + j * k;
                double *into = group_totals + j * k, weight = 1.0 / (3.0 * n);
                for (size_t i = 0; i < k; i++)
                    into[i] += delta(g, i) * ((start[i] + end[i] + 4.0 * odd[i] + 2.0 * even[i]) * weight);
            }
        }
        record->group_lca = v->group_lca;
        record->group_loss_before = v->group_loss_before;
        record->group_loss_after = v->group_loss_after;
        record->group_residual = v->group_residual;
        record->group_flags = v->group_flags;
    } else {
        record->group_lca = record->group_loss_before = record->group_loss_after = NULL;
        record->group_residual = NULL;
        record->group_flags = NULL;
    }

    /* the end point is the next iteration's start point */
    double *swap = v->g_start;
    v->g_start = v->g_end;
    v->g_end = swap;
    float *first_swap = v->first_start;
    v->first_start = v->first_end;
    v->first_end = first_swap;
    v->loss_start = v->loss_end;
    if (gc) {
        swap = v->group_g_start;
        v->group_g_start = v->group_g_end;
        v->group_g_end = swap;
        swap = v->group_share_start;
        v->group_share_start = v->group_share_end;
        v->group_share_end = swap;
    }
    return LCA_OK;
}
