/* checkpoint.c: weights, LCA totals and resume state as safetensors files
 * (docs/checkpoints.md), with the model's PyTorch-style tensor names so
 * that numpy, PyTorch and JAX read them without help from us. */
#include "trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* groups of tensors in a state file: six, and a per-group total for each loss group */
enum { MAX_STATE_TENSORS = 6 + LCA_MAX_GROUPS, STATE_PREFIX = 40 };

static void describe(lca_st_tensor *out, const lca_tensor *t, const char *name, const char *dtype,
                     const void *data, size_t element_size) {
    out->name = name;
    out->dtype = dtype;
    out->rank = t->rank;
    for (int d = 0; d < LCA_MAX_RANK; d++) out->shape[d] = d < t->rank ? t->shape[d] : 0;
    out->data = data;
    out->bytes = t->count * element_size;
}

/* Batch norm's running statistics are buffers, not parameters: they are
 * saved beside the weights under PyTorch's names (bn1.running_mean, …) and
 * never take part in LCA. names: 2 × 64 bytes per batch-norm layer. */
static size_t describe_running_stats(const lca_model *m, lca_st_tensor *out, char *names) {
    size_t n = 0;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        if (L->kind != LCA_LAYER_BATCHNORM) continue;
        const char *weight = m->tensors[L->weight].name;
        int prefix = (int)(strlen(weight) - strlen(".weight"));
        for (int which = 0; which < 2; which++, n++) {
            char *name = names + 64 * n;
            snprintf(name, 64, "%.*s.%s", prefix, weight, which ? "running_var" : "running_mean");
            out[n] = (lca_st_tensor){.name = name, .dtype = "F32", .rank = 1,
                                     .shape = {(int64_t)L->out_c},
                                     .data = which ? L->running_var : L->running_mean,
                                     .bytes = L->out_c * sizeof(float)};
        }
    }
    return n;
}

/* A loaded tensor's values must be finite: NaN or Inf weights (a diverged
 * run's checkpoint, a damaged file) would otherwise surface later as
 * "training diverged", far from the file. Names the file, the tensor, the
 * element and its index. count values of F32 (double_values: F64). */
static lca_status check_finite(const lca_safetensors *file, const char *name, const char *dtype,
                               const lca_st_tensor *shape, const void *values, size_t count,
                               bool double_values) {
    for (size_t i = 0; i < count; i++) {
        double x;
        if (double_values) memcpy(&x, (const double *)values + i, sizeof x);
        else x = ((const float *)values)[i];
        if (x == x && x - x == 0) continue;
        char ordered[160] = ""; /* the element's index along each axis */
        {
            size_t digits[LCA_MAX_RANK] = {0}, r = i;
            for (int d = shape->rank - 1; d >= 0 && shape->rank <= LCA_MAX_RANK; d--) {
                size_t n = shape->shape[d] > 0 ? (size_t)shape->shape[d] : 1;
                digits[d] = r % n;
                r /= n;
            }
            for (int d = 0; d < shape->rank && shape->rank <= LCA_MAX_RANK; d++)
                snprintf(ordered + strlen(ordered), sizeof ordered - strlen(ordered), "%s%zu",
                         d ? ", " : "", digits[d]);
        }
        return lca_fail(LCA_ERR_NUMERIC,
                        "%s: tensor \"%s\" (%s): element %zu [%s] is %s; a checkpoint's values "
                        "must be finite (was it saved by a run that diverged?)",
                        lca_safetensors_path(file), name, dtype, i, ordered,
                        x != x ? "NaN" : x > 0 ? "+Inf" : "-Inf");
    }
    return LCA_OK;
}

/* s's values as float in out, counted in report (may be NULL). Parameters
 * and running statistics may be stored as F32 or, by other tools, as F16,
 * BF16 or F64; lca_safetensors_to_f32 refuses other dtypes. */
static lca_status convert(const lca_safetensors *file, const lca_st_tensor *s, float *out,
                          lca_checkpoint_report *report) {
    size_t rounded = 0;
    lca_status status = lca_safetensors_to_f32(file, s, out, &rounded);
    /* converted dtypes are checked while converting; F32 is copied */
    if (status == LCA_OK && strcmp(s->dtype, "F32") == 0)
        status = check_finite(file, s->name, s->dtype, s, out, s->bytes / sizeof(float), false);
    if (status != LCA_OK || !report) return status;
    if (strcmp(s->dtype, "F16") == 0) report->f16_tensors++;
    if (strcmp(s->dtype, "BF16") == 0) report->bf16_tensors++;
    if (strcmp(s->dtype, "F64") == 0) {
        report->f64_tensors++;
        report->f64_values += s->bytes / sizeof(double);
        report->f64_rounded += rounded;
    }
    return LCA_OK;
}

/* Load the running statistics present in file (all of them when required). */
static lca_status load_running_stats(const lca_safetensors *file, lca_model *m, bool required,
                                     lca_checkpoint_report *report) {
    size_t count = 2 * lca_model_batchnorm_count(m);
    if (count == 0) return LCA_OK;
    lca_st_tensor *wanted = calloc(count, sizeof *wanted);
    char *names = calloc(count, 64);
    lca_status status = LCA_OK;
    if (!wanted || !names) status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "out of memory");
    if (status == LCA_OK) describe_running_stats(m, wanted, names);
    for (size_t i = 0; status == LCA_OK && i < count; i++) {
        const lca_st_tensor *s = lca_safetensors_find(file, wanted[i].name);
        if (!s) {
            if (required)
                status = lca_fail(LCA_ERR_MISMATCH, "%s: has no tensor \"%s\"",
                                  lca_safetensors_path(file), wanted[i].name);
            continue;
        }
        if (s->rank != 1 || s->shape[0] != wanted[i].shape[0])
            status = lca_fail(LCA_ERR_MISMATCH, "%s: tensor \"%s\" should have shape (%lld)",
                              lca_safetensors_path(file), wanted[i].name,
                              (long long)wanted[i].shape[0]);
        else
            status = convert(file, s, (float *)wanted[i].data, report);
    }
    free(wanted);
    free(names);
    return status;
}

lca_status lca_checkpoint_save(const char *path, const lca_model *m, uint64_t iteration) {
    size_t stats = 2 * lca_model_batchnorm_count(m);
    lca_st_tensor *tensors = calloc(m->tensor_count + stats, sizeof *tensors);
    char *names = calloc(stats + 1, 64);
    if (!tensors || !names) {
        free(tensors);
        free(names);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    for (size_t t = 0; t < m->tensor_count; t++)
        describe(&tensors[t], &m->tensors[t], m->tensors[t].name, "F32",
                 m->parameters + m->tensors[t].offset, sizeof(float));
    describe_running_stats(m, tensors + m->tensor_count, names);
    char iteration_text[32];
    snprintf(iteration_text, sizeof iteration_text, "%" PRIu64, iteration);
    const char *keys[] = {"format", "lca.model", "lca.loss", "lca.iteration", "lca.version"};
    const char *values[] = {"pt", m->spec, lca_loss_name(m->loss), iteration_text,
                            LCA_VERSION_STRING};
    lca_status status =
        lca_safetensors_write(path, tensors, m->tensor_count + stats, keys, values, 5);
    free(tensors);
    free(names);
    return status;
}

static lca_status parse_iteration(const lca_safetensors *file, uint64_t *iteration) {
    const char *text = lca_safetensors_metadata(file, "lca.iteration");
    if (!text) {
        *iteration = 0;
        return LCA_OK;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end)
        return lca_fail(LCA_ERR_FORMAT, "%s: metadata lca.iteration: expected an integer, found \"%s\"",
                        lca_safetensors_path(file), text);
    *iteration = v;
    return LCA_OK;
}

/* "(32, 64)" */
static void shape_text(char *text, size_t capacity, int rank, const int64_t *shape) {
    snprintf(text, capacity, "(");
    for (int d = 0; d < rank; d++)
        snprintf(text + strlen(text), capacity - strlen(text), "%s%lld", d ? ", " : "",
                 (long long)shape[d]);
    snprintf(text + strlen(text), capacity - strlen(text), ")");
}

static bool same_shape(const lca_st_tensor *s, const lca_tensor *t) {
    bool same = s->rank == t->rank;
    for (int d = 0; same && d < t->rank; d++) same = s->shape[d] == t->shape[d];
    return same;
}

/* The file lacks the model tensor missing: say which names the model
 * expects and which the file has, and how to rename (docs/checkpoints.md). */
static lca_status names_mismatch(const lca_safetensors *file, const lca_model *m,
                                 const lca_tensor *missing) {
    enum { SHOWN = 4 };
    char text[900] = "", shape[64];
    size_t n = lca_safetensors_count(file);
    size_t at = 0;
#define ADD(...) (at += (size_t)snprintf(text + at, at < sizeof text ? sizeof text - at : 0, __VA_ARGS__), \
                  at = at < sizeof text ? at : sizeof text)
    ADD("model %s expects %zu tensor%s: ", m->spec, m->tensor_count, m->tensor_count == 1 ? "" : "s");
    for (size_t t = 0; t < m->tensor_count && t < SHOWN; t++) {
        shape_text(shape, sizeof shape, m->tensors[t].rank, m->tensors[t].shape);
        ADD("%s%s %s", t ? ", " : "", m->tensors[t].name, shape);
    }
    if (m->tensor_count > SHOWN) ADD(", … (%zu more)", m->tensor_count - SHOWN);
    ADD("; the file has %zu: ", n);
    for (size_t i = 0; i < n && i < SHOWN; i++) {
        const lca_st_tensor *s = lca_safetensors_tensor(file, i);
        shape_text(shape, sizeof shape, s->rank, s->shape);
        ADD("%s%s %s", i ? ", " : "", s->name, shape);
    }
    if (n > SHOWN) ADD(", … (%zu more)", n - SHOWN);
    if (n == 0) ADD("none");
    /* an example pair for the snippet: a file tensor of the missing one's
     * shape whose name the model does not use */
    const char *example = "OLD";
    for (size_t i = 0; i < n; i++) {
        const lca_st_tensor *s = lca_safetensors_tensor(file, i);
        if (same_shape(s, missing) && lca_model_find_tensor(m, s->name) < 0) {
            example = s->name;
            break;
        }
    }
#undef ADD
    return lca_fail(LCA_ERR_MISMATCH,
                    "%s: has no tensor \"%s\": %s. Rename the tensors to the model's names, "
                    "e.g. in Python: sd = load_file(IN); save_file({NEW.get(k, k): v for k, v in "
                    "sd.items()}, OUT) with NEW = {\"%s\": \"%s\", …} (docs/checkpoints.md, "
                    "\"Tensor names\")",
                    lca_safetensors_path(file), missing->name, text, example, missing->name);
}

/* Copy the tensor named name from file into dst, checking dtype and shape
 * against the model tensor t. */
static lca_status load_tensor(const lca_safetensors *file, const char *name, const lca_tensor *t,
                              const char *dtype, size_t element_size, void *dst) {
    const lca_st_tensor *s = lca_safetensors_find(file, name);
    if (!s)
        return lca_fail(LCA_ERR_MISMATCH, "%s: has no tensor \"%s\" (the model %s needs it)",
                        lca_safetensors_path(file), name, "being loaded");
    if (strcmp(s->dtype, dtype) != 0)
        return lca_fail(LCA_ERR_MISMATCH, "%s: tensor \"%s\" has dtype %s, expected %s",
                        lca_safetensors_path(file), name, s->dtype, dtype);
    bool same = s->rank == t->rank;
    for (int d = 0; same && d < t->rank; d++) same = s->shape[d] == t->shape[d];
    if (!same || s->bytes != t->count * element_size) {
        char want[96] = "", have[96] = "";
        for (int d = 0; d < t->rank; d++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "",
                     (long long)t->shape[d]);
        for (int d = 0; d < s->rank; d++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? ", " : "",
                     (long long)s->shape[d]);
        return lca_fail(LCA_ERR_MISMATCH, "%s: tensor \"%s\" has shape (%s), expected (%s)",
                        lca_safetensors_path(file), name, have, want);
    }
    memcpy(dst, s->data, s->bytes);
    if (strcmp(dtype, "F32") == 0 || strcmp(dtype, "F64") == 0)
        return check_finite(file, name, dtype, s, dst, t->count, strcmp(dtype, "F64") == 0);
    return LCA_OK;
}

/* Check that the model tensor t is in file with its shape; return it. */
static lca_status find_parameter(const lca_safetensors *file, const lca_model *m,
                                 const lca_tensor *t, const lca_st_tensor **out) {
    const lca_st_tensor *s = lca_safetensors_find(file, t->name);
    if (!s) return names_mismatch(file, m, t);
    if (!same_shape(s, t)) {
        char want[96], have[96];
        shape_text(want, sizeof want, t->rank, t->shape);
        shape_text(have, sizeof have, s->rank, s->shape);
        return lca_fail(LCA_ERR_MISMATCH, "%s: tensor \"%s\" has shape %s, expected %s",
                        lca_safetensors_path(file), t->name, have, want);
    }
    *out = s;
    return LCA_OK;
}

static lca_status load_parameters(const lca_safetensors *file, lca_model *m,
                                  lca_checkpoint_report *report) {
    /* every name first, so that a file with other names gets one message */
    for (size_t t = 0; t < m->tensor_count; t++)
        if (!lca_safetensors_find(file, m->tensors[t].name))
            return names_mismatch(file, m, &m->tensors[t]);
    /* load into a copy first so that a failure leaves the model unchanged */
    float *staged = malloc(m->parameter_count * sizeof(float));
    if (!staged) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "out of memory loading %s",
                                 lca_safetensors_path(file));
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_st_tensor *s = NULL;
        lca_status status = find_parameter(file, m, &m->tensors[t], &s);
        if (status == LCA_OK) status = convert(file, s, staged + m->tensors[t].offset, report);
        if (status != LCA_OK) {
            free(staged);
            return status;
        }
    }
    memcpy(m->parameters, staged, m->parameter_count * sizeof(float));
    free(staged);
    return LCA_OK;
}

lca_status lca_checkpoint_load_report(const char *path, lca_model *m,
                                      lca_checkpoint_report *report) {
    lca_safetensors *file;
    lca_status status = lca_safetensors_read(&file, path);
    if (status != LCA_OK) return status;
    lca_checkpoint_report found = {0};
    status = parse_iteration(file, &found.iteration);
    /* the running statistics are staged too: nothing changes on failure */
    size_t stats = 0;
    for (size_t l = 0; l < m->layer_count; l++)
        if (m->layers[l].kind == LCA_LAYER_BATCHNORM) stats += 2 * m->layers[l].out_c;
    float *saved = stats ? malloc(stats * sizeof(float)) : NULL;
    if (status == LCA_OK && stats && !saved)
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "out of memory loading %s", path);
    for (size_t l = 0, at = 0; saved && l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        if (L->kind != LCA_LAYER_BATCHNORM) continue;
        memcpy(saved + at, L->running_mean, L->out_c * sizeof(float));
        memcpy(saved + at + L->out_c, L->running_var, L->out_c * sizeof(float));
        at += 2 * L->out_c;
    }
    float *before = status == LCA_OK ? malloc(m->parameter_count * sizeof(float)) : NULL;
    if (status == LCA_OK && !before)
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "out of memory loading %s", path);
    if (before) memcpy(before, m->parameters, m->parameter_count * sizeof(float));
    if (status == LCA_OK) status = load_parameters(file, m, &found);
    if (status == LCA_OK) {
        status = load_running_stats(file, m, false, &found);
        if (status != LCA_OK) { /* undo: the parameters and any statistics loaded */
            memcpy(m->parameters, before, m->parameter_count * sizeof(float));
            for (size_t l = 0, at = 0; saved && l < m->layer_count; l++) {
                const lca_layer *L = &m->layers[l];
                if (L->kind != LCA_LAYER_BATCHNORM) continue;
                memcpy(L->running_mean, saved + at, L->out_c * sizeof(float));
                memcpy(L->running_var, saved + at + L->out_c, L->out_c * sizeof(float));
                at += 2 * L->out_c;
            }
        }
    }
    if (status == LCA_OK && report) *report = found;
    free(before);
    free(saved);
    lca_safetensors_free(file);
    return status;
}

lca_status lca_checkpoint_load(const char *path, lca_model *m, uint64_t *iteration) {
    lca_checkpoint_report report;
    lca_status status = lca_checkpoint_load_report(path, m, &report);
    if (status == LCA_OK && iteration) *iteration = report.iteration;
    return status;
}

lca_status lca_checkpoint_read_spec(const char *path, char *spec, size_t capacity,
                                    lca_loss_kind *loss) {
    return lca_checkpoint_model_spec(path, NULL, spec, capacity, loss);
}

/* The canonical form of spec, in out (capacity bytes). A spec from the
 * metadata that does not parse is reported with the file's name. */
static lca_status canonical_spec(const char *path, const char *spec, bool from_metadata,
                                 char *out, size_t capacity) {
    lca_model *model = NULL;
    lca_status status = lca_model_new(&model, spec, LCA_LOSS_SOFTMAX_CROSS_ENTROPY);
    if (status != LCA_OK && from_metadata) {
        /* lca_fail formats before it replaces the message: no copy needed */
        return lca_fail(status, "%s: metadata lca.model: %s", path, lca_last_error());
    }
    if (status != LCA_OK) return status;
    const char *canonical = lca_model_spec(model);
    if (strlen(canonical) + 1 > capacity)
        status = lca_fail(LCA_ERR_FORMAT, "%s: model spec \"%s\" is too long", path, spec);
    else
        strcpy(out, canonical);
    lca_model_free(model);
    return status;
}

lca_status lca_checkpoint_model_spec(const char *path, const char *requested, char *spec,
                                     size_t capacity, lca_loss_kind *loss) {
    if (!path || !spec || !capacity)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_checkpoint_model_spec: NULL argument");
    lca_safetensors *file;
    lca_status status = lca_safetensors_read(&file, path);
    if (status != LCA_OK) return status;
    const char *recorded = lca_safetensors_metadata(file, "lca.model");
    const char *loss_name = lca_safetensors_metadata(file, "lca.loss");
    if (loss) {
        if (!loss_name || strcmp(loss_name, "softmax_cross_entropy") == 0)
            *loss = LCA_LOSS_SOFTMAX_CROSS_ENTROPY;
        else if (strcmp(loss_name, "mean_squared_error") == 0)
            *loss = LCA_LOSS_MEAN_SQUARED_ERROR;
        else
            status = lca_fail(LCA_ERR_FORMAT, "%s: metadata lca.loss: unknown loss \"%s\"", path,
                              loss_name);
    }
    if (status == LCA_OK && !recorded && !requested)
        status = lca_fail(LCA_ERR_FORMAT,
                          "%s: metadata has no \"lca.model\" (the file was not written by lca, "
                          "e.g. saved by PyTorch): give the model spec (--model)", path);
    char *theirs = status == LCA_OK && recorded && requested ? malloc(capacity) : NULL;
    if (status == LCA_OK && recorded && requested && !theirs)
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (status == LCA_OK)
        status = canonical_spec(path, requested ? requested : recorded, !requested, spec, capacity);
    if (status == LCA_OK && theirs) {
        status = canonical_spec(path, recorded, true, theirs, capacity);
        if (status == LCA_OK && strcmp(spec, theirs) != 0)
            status = lca_fail(LCA_ERR_MISMATCH,
                              "%s: model \"%s\" was requested, but the checkpoint's metadata "
                              "(lca.model) records model \"%s\"", path, spec, theirs);
    }
    free(theirs);
    lca_safetensors_free(file);
    return status;
}

lca_status lca_totals_save(const char *totals_path, const char *helped_path,
                           const lca_trainer *tr) {
    const lca_model *m = tr->model;
    if (!tr->lca_totals)
        return lca_fail(LCA_ERR_STATE, "no LCA totals: the run was made without LCA");
    lca_st_tensor *tensors = calloc(m->tensor_count, sizeof *tensors);
    if (!tensors) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "out of memory");
    char iteration_text[32];
    snprintf(iteration_text, sizeof iteration_text, "%" PRIu64, tr->iteration);
    const char *keys[] = {"lca.model", "lca.iteration", "lca.quantity"};
    const char *values[] = {m->spec, iteration_text, "sum over iterations of LCA (nats)"};
    for (size_t t = 0; t < m->tensor_count; t++)
        describe(&tensors[t], &m->tensors[t], m->tensors[t].name, "F64",
                 tr->lca_totals + m->tensors[t].offset, sizeof(double));
    lca_status status = lca_safetensors_write(totals_path, tensors, m->tensor_count, keys, values, 3);
    if (status == LCA_OK) {
        values[2] = "iterations in which the parameter helped (LCA < 0)";
        for (size_t t = 0; t < m->tensor_count; t++)
            describe(&tensors[t], &m->tensors[t], m->tensors[t].name, "U32",
                     tr->helped_counts + m->tensors[t].offset, sizeof(uint32_t));
        status = lca_safetensors_write(helped_path, tensors, m->tensor_count, keys, values, 3);
    }
    free(tensors);
    return status;
}

lca_status lca_group_totals_save(const char *path, const lca_trainer *tr) {
    const lca_model *m = tr->model;
    if (!tr->group_totals)
        return lca_fail(LCA_ERR_STATE, "no per-group totals: the run was made without "
                                       "--groups-totals");
    size_t gc = tr->config.group_count, count = gc * m->tensor_count;
    lca_st_tensor *tensors = calloc(count, sizeof *tensors);
    char *names = calloc(count, 96);
    if (!tensors || !names) {
        free(tensors);
        free(names);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    char iteration_text[32];
    snprintf(iteration_text, sizeof iteration_text, "%" PRIu64, tr->iteration);
    const char *keys[] = {"lca.model", "lca.iteration", "lca.quantity", "lca.groups"};
    const char *values[] = {m->spec, iteration_text,
                            "per loss group: sum over iterations of the LCA of the group's share "
                            "of the loss (nats)",
                            tr->config.group_source ? tr->config.group_source : ""};
    for (size_t g = 0; g < gc; g++)
        for (size_t t = 0; t < m->tensor_count; t++) {
            size_t i = g * m->tensor_count + t;
            snprintf(names + 96 * i, 96, "%s@%zu", m->tensors[t].name, g);
            describe(&tensors[i], &m->tensors[t], names + 96 * i, "F64",
                     tr->group_totals + g * m->parameter_count + m->tensors[t].offset,
                     sizeof(double));
        }
    lca_status status = lca_safetensors_write(path, tensors, count, keys, values, 4);
    free(tensors);
    free(names);
    return status;
}

/* ---- resume state: parameters plus everything the next step reads */

typedef struct state_group {
    const char *prefix;     /* "" for parameters */
    const char *dtype;
    size_t element_size;
    void *data;             /* K elements in the parameter layout, or NULL if unused */
} state_group;

/* prefixes: STATE_PREFIX bytes for each loss group's "lca.group_total.<g>." */
static size_t state_groups(lca_trainer *tr, state_group groups[MAX_STATE_TENSORS],
                           char *prefixes) {
    size_t n = 0;
    groups[n++] = (state_group){"", "F32", sizeof(float), tr->model->parameters};
    if (tr->velocity) groups[n++] = (state_group){"optimizer.velocity.", "F32", sizeof(float), tr->velocity};
    if (tr->adam_m) groups[n++] = (state_group){"optimizer.adam_m.", "F32", sizeof(float), tr->adam_m};
    if (tr->adam_v) groups[n++] = (state_group){"optimizer.adam_v.", "F32", sizeof(float), tr->adam_v};
    if (tr->lca_totals) groups[n++] = (state_group){"lca.total.", "F64", sizeof(double), tr->lca_totals};
    if (tr->helped_counts) groups[n++] = (state_group){"lca.helped.", "U32", sizeof(uint32_t), tr->helped_counts};
    if (tr->group_totals)
        for (size_t g = 0; g < tr->config.group_count; g++) {
            char *prefix = prefixes + g * STATE_PREFIX;
            snprintf(prefix, STATE_PREFIX, "lca.group_total.%zu.", g);
            groups[n++] = (state_group){prefix, "F64", sizeof(double),
                                        tr->group_totals + g * tr->model->parameter_count};
        }
    return n;
}

lca_status lca_trainer_save_state(const lca_trainer *const_tr, const char *path) {
    lca_trainer *tr = (lca_trainer *)const_tr; /* only read; the groups table wants mutable */
    const lca_model *m = tr->model;
    state_group *groups = calloc(MAX_STATE_TENSORS, sizeof *groups);
    char *prefixes = calloc(LCA_MAX_GROUPS, STATE_PREFIX);
    if (!groups || !prefixes) {
        free(groups);
        free(prefixes);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    size_t group_count = state_groups(tr, groups, prefixes), count = group_count * m->tensor_count;
    size_t stats = 2 * lca_model_batchnorm_count(m);
    lca_st_tensor *tensors = calloc(count + stats, sizeof *tensors);
    char *names = calloc(count, 96), *stat_names = calloc(stats + 1, 64);
    if (!tensors || !names || !stat_names) {
        free(prefixes);
        free(groups);
        free(tensors);
        free(names);
        free(stat_names);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    describe_running_stats(m, tensors + count, stat_names);
    for (size_t g = 0; g < group_count; g++)
        for (size_t t = 0; t < m->tensor_count; t++) {
            size_t i = g * m->tensor_count + t;
            char *name = names + 96 * i;
            snprintf(name, 96, "%s%s", groups[g].prefix, m->tensors[t].name);
            describe(&tensors[i], &m->tensors[t], name, groups[g].dtype,
                     (const uint8_t *)groups[g].data + m->tensors[t].offset * groups[g].element_size,
                     groups[g].element_size);
        }
    char iteration[32], epoch[32], position[32];
    snprintf(iteration, sizeof iteration, "%" PRIu64, tr->iteration);
    snprintf(epoch, sizeof epoch, "%" PRIu32, tr->epoch);
    snprintf(position, sizeof position, "%zu", tr->position);
    const char *keys[] = {"lca.model", "lca.loss", "lca.iteration", "lca.epoch", "lca.position",
                          "lca.version"};
    const char *values[] = {m->spec, lca_loss_name(m->loss), iteration, epoch, position,
                            LCA_VERSION_STRING};
    lca_status status = lca_safetensors_write(path, tensors, count + stats, keys, values, 6);
    free(prefixes);
    free(groups);
    free(tensors);
    free(names);
    free(stat_names);
    return status;
}

static lca_status metadata_number(const lca_safetensors *file, const char *key, uint64_t *out) {
    const char *text = lca_safetensors_metadata(file, key);
    char *end;
    errno = 0;
    unsigned long long v = text ? strtoull(text, &end, 10) : 0;
    if (!text || errno || end == text || *end)
        return lca_fail(LCA_ERR_FORMAT, "%s: metadata \"%s\": expected an integer, found %s%s%s",
                        lca_safetensors_path(file), key, text ? "\"" : "", text ? text : "nothing",
                        text ? "\"" : "");
    *out = v;
    return LCA_OK;
}

lca_status lca_trainer_load_state(lca_trainer *tr, const char *path) {
    lca_safetensors *file;
    lca_status status = lca_safetensors_read(&file, path);
    if (status != LCA_OK) return status;
    const lca_model *m = tr->model;
    uint64_t iteration = 0, epoch = 0, position = 0;
    const char *spec = lca_safetensors_metadata(file, "lca.model");
    if (!spec || strcmp(spec, m->spec) != 0)
        status = lca_fail(LCA_ERR_MISMATCH, "%s: state is for model \"%s\", not \"%s\"", path,
                          spec ? spec : "(none)", m->spec);
    if (status == LCA_OK) status = metadata_number(file, "lca.iteration", &iteration);
    if (status == LCA_OK) status = metadata_number(file, "lca.epoch", &epoch);
    if (status == LCA_OK) status = metadata_number(file, "lca.position", &position);
    if (status == LCA_OK && position > tr->train_count)
        status = lca_fail(LCA_ERR_MISMATCH,
                          "%s: metadata lca.position %llu exceeds the training split (%zu)", path,
                          (unsigned long long)position, tr->train_count);
    /* stage every group, then commit: a bad file leaves the trainer as it was */
    state_group *groups = calloc(MAX_STATE_TENSORS, sizeof *groups);
    void **staged = calloc(MAX_STATE_TENSORS, sizeof *staged);
    char *prefixes = calloc(LCA_MAX_GROUPS, STATE_PREFIX);
    if (!groups || !staged || !prefixes) {
        free(groups);
        free(staged);
        free(prefixes);
        lca_safetensors_free(file);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    size_t group_count = state_groups(tr, groups, prefixes);
    for (size_t g = 0; status == LCA_OK && g < group_count; g++) {
        staged[g] = malloc(m->parameter_count * groups[g].element_size);
        if (!staged[g]) {
            status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
            break;
        }
        for (size_t t = 0; status == LCA_OK && t < m->tensor_count; t++) {
            char name[96];
            snprintf(name, sizeof name, "%s%s", groups[g].prefix, m->tensors[t].name);
            status = load_tensor(file, name, &m->tensors[t], groups[g].dtype, groups[g].element_size,
                                 (uint8_t *)staged[g] + m->tensors[t].offset * groups[g].element_size);
        }
    }
    if (status == LCA_OK) status = load_running_stats(file, tr->model, true, NULL);
    if (status == LCA_OK) {
        for (size_t g = 0; g < group_count; g++)
            memcpy(groups[g].data, staged[g], m->parameter_count * groups[g].element_size);
        tr->iteration = iteration;
        tr->epoch = (uint32_t)epoch;
        tr->position = (size_t)position;
        /* the epoch's shuffle depends only on seed and epoch */
        lca_trainer_reshuffle(tr);
        tr->train_view.have_start = false;
        tr->validation_view.have_start = false;
    }
    for (size_t g = 0; g < group_count; g++) free(staged[g]);
    free(staged);
    free(groups);
    free(prefixes);
    lca_safetensors_free(file);
    return status;
}
