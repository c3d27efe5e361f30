/* log.c: the binary LCA log (docs/log-format.md). A 24-byte preamble, a
 * JSON header that describes the run and the record layout, then one
 * fixed-size little-endian record per iteration. Records go out with one
 * write(2) each and nothing is buffered, so a reader sees every complete
 * record at any moment and a killed run loses at most the one in flight. */
#include "trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t LOG_MAGIC[8] = {0x89, 'L', 'C', 'A', '\r', '\n', 0x1A, '\n'};
enum { LOG_VERSION = 2, LOG_PREAMBLE = 24 };

struct lca_log {
    int fd;
    bool owns_fd;
    char *path;
    size_t tensor_count;
    size_t unit_count;    /* per-unit fields, 0 unless lca_units */
    bool has_validation, has_units, has_histogram;
    size_t group_count;   /* loss groups, 0 without */
    size_t record_size;
    uint8_t *record;      /* record_size bytes, reused */
    bool sync_records;    /* fsync after every record (lca_log_set_sync) */
};

/* ---- a growable text buffer for the JSON header */
typedef struct text {
    char *bytes;
    size_t length, capacity;
    bool failed;
} text;

static void text_append(text *t, const char *format, ...) LCA_PRINTF_LIKE(2, 3);
static void text_append(text *t, const char *format, ...) {
    if (t->failed) return;
    for (;;) {
        va_list args;
        va_start(args, format);
        int n = vsnprintf(t->bytes ? t->bytes + t->length : NULL,
                          t->bytes ? t->capacity - t->length : 0, format, args);
        va_end(args);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->bytes && t->length + (size_t)n < t->capacity) {
            t->length += (size_t)n;
            return;
        }
        size_t capacity = (t->capacity ? t->capacity * 2 : 4096) + (size_t)n;
        char *grown = realloc(t->bytes, capacity);
        if (!grown) {
            t->failed = true;
            return;
        }
        t->bytes = grown;
        t->capacity = capacity;
    }
}

static void text_sink(void *t, const char *bytes, size_t length) {
    text_append(t, "%.*s", (int)length, bytes);
}

static void text_append_string(text *t, const char *s) { lca_json_write_string(text_sink, t, s); }

/* Doubles round-trip with 17 significant digits; JSON has no NaN. */
static void text_append_double(text *t, double v) {
    if (isfinite(v)) text_append(t, "%.17g", v);
    else text_append(t, "null");
}

static const char *optimizer_name(lca_optimizer_kind kind) {
    switch (kind) {
    case LCA_OPTIMIZER_SGD: return "sgd";
    case LCA_OPTIMIZER_MOMENTUM: return "momentum";
    case LCA_OPTIMIZER_ADAM: return "adam";
    }
    return "unknown";
}

/* ---- the |LCA| histogram's edges 10^(-14 + k/2), k = 0 … 28: the doubles
 * nearest to them, and their shortest text for the header */
#define LCA_EDGES(X)                                                                             \
    X(1e-14) X(3.1622776601683796e-14) X(1e-13) X(3.162277660168379e-13) X(1e-12)                \
    X(3.1622776601683794e-12) X(1e-11) X(3.1622776601683794e-11) X(1e-10)                        \
    X(3.1622776601683795e-10) X(1e-09) X(3.1622776601683795e-09) X(1e-08)                        \
    X(3.162277660168379e-08) X(1e-07) X(3.162277660168379e-07) X(1e-06) X(3.162277660168379e-06) \
    X(1e-05) X(3.1622776601683795e-05) X(0.0001) X(0.00031622776601683794) X(0.001)              \
    X(0.0031622776601683794) X(0.01) X(0.03162277660168379) X(0.1) X(0.31622776601683794) X(1)
#define LOG_STRINGIFY_(x) #x
#define LOG_STRINGIFY(x) LOG_STRINGIFY_(x) /* the shortest text of a literal */
#define EDGE_VALUE(x) x,
#define EDGE_TEXT(x) #x,
static const double HISTOGRAM_EDGES[LCA_HISTOGRAM_BINS - 1] = {LCA_EDGES(EDGE_VALUE)};
static const char *const HISTOGRAM_EDGE_TEXT[LCA_HISTOGRAM_BINS - 1] = {LCA_EDGES(EDGE_TEXT)};

const double *lca_histogram_edges(void) { return HISTOGRAM_EDGES; }

/* ---- record layout: every field 8-byte aligned, in this order */
enum { SCALAR = 0, PER_TENSOR = 1, PER_UNIT = 2, PER_BIN = 3 /* T · 2 · bins */,
       PER_GROUP = 4, PER_GROUP_TENSOR = 5 /* G · T, group-major */ };
typedef struct field {
    const char *name;
    const char *type;   /* numpy type string */
    size_t size;        /* bytes of one element */
    int shape;          /* SCALAR, PER_TENSOR (T elements) or PER_UNIT (U elements) */
} field;

static const field TRAIN_FIELDS[] = {
    {"iteration", "<u8", 8, SCALAR},
    {"epoch", "<u4", 4, SCALAR},
    {"subintervals", "<u4", 4, SCALAR},
    {"flags", "<u4", 4, SCALAR},
    {"reserved", "<u4", 4, SCALAR},
    {"batch_loss", "<f8", 8, SCALAR},
    {"loss_before", "<f8", 8, SCALAR},
    {"loss_after", "<f8", 8, SCALAR},
    {"lca_total", "<f8", 8, SCALAR},
    {"first_order_total", "<f8", 8, SCALAR},
    {"residual", "<f8", 8, SCALAR},
    {"lca", "<f8", 8, PER_TENSOR},
    {"first_order", "<f8", 8, PER_TENSOR},
    {"helped", "<u8", 8, PER_TENSOR},
    {"hurt", "<u8", 8, PER_TENSOR},
    {"zero", "<u8", 8, PER_TENSOR},
};
/* version 2, after each view's version-1 fields (and its units) */
static const field V2_FIELDS[] = {
    {"lca_floor", "<f8", 8, SCALAR},
    {"lca_helping", "<f8", 8, PER_TENSOR},
    {"lca_hurting", "<f8", 8, PER_TENSOR},
    {"unmoved", "<u8", 8, PER_TENSOR},
};
static const field HISTOGRAM_FIELDS[] = {{"lca_histogram", "<u4", 4, PER_BIN}};
static const field VALIDATION_V2_FIELDS[] = {
    {"val_lca_floor", "<f8", 8, SCALAR},
    {"val_lca_helping", "<f8", 8, PER_TENSOR},
    {"val_lca_hurting", "<f8", 8, PER_TENSOR},
    {"val_unmoved", "<u8", 8, PER_TENSOR},
};
static const field VALIDATION_HISTOGRAM_FIELDS[] = {{"val_lca_histogram", "<u4", 4, PER_BIN}};
static const field VALIDATION_FIELDS[] = {
    {"val_loss_before", "<f8", 8, SCALAR},
    {"val_loss_after", "<f8", 8, SCALAR},
    {"val_lca_total", "<f8", 8, SCALAR},
    {"val_first_order_total", "<f8", 8, SCALAR},
    {"val_residual", "<f8", 8, SCALAR},
    {"val_lca", "<f8", 8, PER_TENSOR},
    {"val_first_order", "<f8", 8, PER_TENSOR},
    {"val_helped", "<u8", 8, PER_TENSOR},
    {"val_hurt", "<u8", 8, PER_TENSOR},
    {"val_zero", "<u8", 8, PER_TENSOR},
    {"val_subintervals", "<u4", 4, SCALAR},
    {"val_flags", "<u4", 4, SCALAR},
};
/* with lca_units, after the training fields and after the validation ones */
static const field UNIT_FIELDS[] = {{"unit_lca", "<f8", 8, PER_UNIT}};
static const field VALIDATION_UNIT_FIELDS[] = {{"val_unit_lca", "<f8", 8, PER_UNIT}};
/* with loss groups (issue 15), after each view's version-2 fields; the
 * reserved u32 only when G is odd (the next field stays 8-byte aligned) */
static const field GROUP_FIELDS[] = {
    {"group_lca", "<f8", 8, PER_GROUP_TENSOR},
    {"group_loss_before", "<f8", 8, PER_GROUP},
    {"group_loss_after", "<f8", 8, PER_GROUP},
    {"group_residual", "<f8", 8, PER_GROUP},
    {"group_flags", "<u4", 4, PER_GROUP},
};
static const field GROUP_RESERVED_FIELDS[] = {{"group_reserved", "<u4", 4, SCALAR}};
static const field VALIDATION_GROUP_FIELDS[] = {
    {"val_group_lca", "<f8", 8, PER_GROUP_TENSOR},
    {"val_group_loss_before", "<f8", 8, PER_GROUP},
    {"val_group_loss_after", "<f8", 8, PER_GROUP},
    {"val_group_residual", "<f8", 8, PER_GROUP},
    {"val_group_flags", "<u4", 4, PER_GROUP},
};
static const field VALIDATION_GROUP_RESERVED_FIELDS[] = {{"val_group_reserved", "<u4", 4, SCALAR}};
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static size_t elements(const field *f, size_t tensors, size_t units, size_t groups) {
    switch (f->shape) {
    case PER_TENSOR: return tensors;
    case PER_UNIT: return units;
    case PER_BIN: return tensors * 2 * LCA_HISTOGRAM_BINS;
    case PER_GROUP: return groups;
    case PER_GROUP_TENSOR: return groups * tensors;
    default: return 1;
    }
}

/* The record's field groups in order, for the size, the header and the
 * writer alike. */
typedef struct field_group {
    const field *fields;
    size_t count;
} field_group;
enum { MAX_FIELD_GROUPS = 12 };

/* G of a trainer's log: its loss groups, 0 without (or without LCA) */
static size_t log_group_count(const lca_config *c) {
    return c->lca && c->example_groups ? c->group_count : 0;
}

static size_t record_groups(const lca_config *c, field_group groups[MAX_FIELD_GROUPS]) {
    size_t n = 0;
    bool units = c->lca_units != 0, histogram = c->lca_histogram != 0;
    size_t loss_groups = log_group_count(c);
    groups[n++] = (field_group){TRAIN_FIELDS, COUNT_OF(TRAIN_FIELDS)};
    if (units) groups[n++] = (field_group){UNIT_FIELDS, 1};
    groups[n++] = (field_group){V2_FIELDS, COUNT_OF(V2_FIELDS)};
    if (histogram) groups[n++] = (field_group){HISTOGRAM_FIELDS, 1};
    if (loss_groups) groups[n++] = (field_group){GROUP_FIELDS, COUNT_OF(GROUP_FIELDS)};
    if (loss_groups % 2) groups[n++] = (field_group){GROUP_RESERVED_FIELDS, 1};
    if (c->lca_validation_view) {
        groups[n++] = (field_group){VALIDATION_FIELDS, COUNT_OF(VALIDATION_FIELDS)};
        if (units) groups[n++] = (field_group){VALIDATION_UNIT_FIELDS, 1};
        groups[n++] = (field_group){VALIDATION_V2_FIELDS, COUNT_OF(VALIDATION_V2_FIELDS)};
        if (histogram) groups[n++] = (field_group){VALIDATION_HISTOGRAM_FIELDS, 1};
        if (loss_groups)
            groups[n++] = (field_group){VALIDATION_GROUP_FIELDS, COUNT_OF(VALIDATION_GROUP_FIELDS)};
        if (loss_groups % 2) groups[n++] = (field_group){VALIDATION_GROUP_RESERVED_FIELDS, 1};
    }
    return n;
}

static size_t fields_size(const field *fields, size_t count, size_t tensors, size_t units,
                          size_t loss_groups) {
    size_t size = 0;
    for (size_t i = 0; i < count; i++)
        size += fields[i].size * elements(&fields[i], tensors, units, loss_groups);
    return size;
}

size_t lca_log_record_size(const lca_trainer *tr) {
    size_t t = tr->model->tensor_count, u = tr->model->unit_count;
    field_group groups[MAX_FIELD_GROUPS];
    size_t n = record_groups(&tr->config, groups), size = 0;
    for (size_t g = 0; g < n; g++)
        size += fields_size(groups[g].fields, groups[g].count, t, u, log_group_count(&tr->config));
    return size;
}

static void append_fields(text *dtype, text *list, const field *fields, size_t count,
                          size_t tensors, size_t units, size_t loss_groups, size_t *offset,
                          bool *first) {
    for (size_t i = 0; i < count; i++) {
        const field *f = &fields[i];
        size_t n = elements(f, tensors, units, loss_groups);
        if (f->shape != SCALAR)
            text_append(dtype, "%s('%s', '%s', (%zu,))", *first ? "" : ", ", f->name, f->type, n);
        else
            text_append(dtype, "%s('%s', '%s')", *first ? "" : ", ", f->name, f->type);
        text_append(list, "%s\n    {\"name\": \"%s\", \"type\": \"%s\", \"offset\": %zu, \"count\": %zu}",
                    *first ? "" : ",", f->name, f->type, *offset, n);
        *offset += f->size * n;
        *first = false;
    }
}

/* The JSON header: run configuration, tensors, data and record layout.
 * Nothing here depends on the thread count or the clock, so the same run
 * gives the same bytes. */
static lca_status build_header(const lca_trainer *tr, text *json) {
    const lca_model *m = tr->model;
    const lca_config *c = &tr->config;
    const lca_dataset *d = tr->data;
    text_append(json, "{\n  \"format\": \"lca-log\",\n  \"version\": %d,\n", LOG_VERSION);
    text_append(json, "  \"lca_version\": \"%s\",\n", LCA_VERSION_STRING);
    text_append(json, "  \"model\": {\"spec\": ");
    text_append_string(json, m->spec);
    text_append(json, ", \"loss\": \"%s\", \"parameters\": %zu},\n", lca_loss_name(m->loss),
                m->parameter_count);
    text_append(json, "  \"tensors\": [");
    for (size_t t = 0; t < m->tensor_count; t++) {
        const lca_tensor *tensor = &m->tensors[t];
        text_append(json, "%s\n    {\"name\": ", t ? "," : "");
        text_append_string(json, tensor->name);
        text_append(json, ", \"shape\": [");
        for (int r = 0; r < tensor->rank; r++)
            text_append(json, "%s%lld", r ? ", " : "", (long long)tensor->shape[r]);
        text_append(json, "], \"count\": %zu, \"offset\": %zu}", tensor->count, tensor->offset);
    }
    text_append(json, "\n  ],\n  \"data\": {\"source\": ");
    text_append_string(json, d->source ? d->source : "");
    text_append(json,
                ", \"examples\": %zu, \"features\": %zu, \"classes\": %d, \"training\": %zu, "
                "\"validation\": %zu, \"evaluation\": %zu},\n",
                d->count, d->features, d->classes, tr->train_count, tr->validation_count,
                tr->evaluation_count);
    text_append(json, "  \"config\": {\"seed\": %llu, \"optimizer\": \"%s\", \"learning_rate\": ",
                (unsigned long long)c->seed, optimizer_name(c->optimizer));
    text_append_double(json, c->learning_rate);
    text_append(json, ", \"momentum\": ");
    text_append_double(json, c->momentum);
    text_append(json, ", \"adam_beta1\": ");
    text_append_double(json, c->adam_beta1);
    text_append(json, ", \"adam_beta2\": ");
    text_append_double(json, c->adam_beta2);
    text_append(json, ", \"adam_epsilon\": ");
    text_append_double(json, c->adam_epsilon);
    text_append(json, ", \"weight_decay\": ");
    text_append_double(json, c->weight_decay);
    text_append(json, ", \"batch_size\": %zu, \"iterations\": %llu, \"lca\": %s, ", c->batch_size,
                (unsigned long long)c->iterations, c->lca ? "true" : "false");
    text_append(json, "\"lca_subset\": %zu, \"lca_validation_view\": %s, \"lca_threshold\": ",
                c->lca_subset, c->lca_validation_view ? "true" : "false");
    text_append_double(json, c->lca_threshold);
    /* the accumulation unit decides the bytes; the chunk (memory, speed)
     * does not, so it is not in the header: logs written at any chunk or
     * memory budget are the same bytes, and a run resumes at another */
    text_append(json,
                ", \"lca_max_subintervals\": %u, \"lca_units\": %s, \"bn_group\": %zu, "
                "\"accumulation_unit\": %zu},\n",
                c->lca_max_subintervals, c->lca_units ? "true" : "false", c->bn_group,
                lca_model_accumulation_unit(m, c->bn_group));
    if (c->lca_units) {
        /* per-unit fields: unit_lca[offset + u] is unit u of the group */
        text_append(json, "  \"units\": [");
        for (size_t g = 0; g < m->unit_group_count; g++) {
            text_append(json, "%s\n    {\"group\": ", g ? "," : "");
            text_append_string(json, m->unit_groups[g].name);
            text_append(json, ", \"units\": %zu, \"offset\": %zu, \"tensors\": [",
                        m->unit_groups[g].units, m->unit_groups[g].offset);
            bool first_tensor = true;
            for (size_t t = 0; t < m->tensor_count; t++) {
                if (m->tensors[t].unit_group != (long)g) continue;
                text_append(json, "%s", first_tensor ? "" : ", ");
                text_append_string(json, m->tensors[t].name);
                first_tensor = false;
            }
            text_append(json, "]}");
        }
        text_append(json, "\n  ],\n");
    }
    /* issue 15: the loss groups, their names (the ids) and examples per
     * view (the validation split's whether or not it has a view) */
    size_t loss_groups = log_group_count(c);
    if (loss_groups) {
        text_append(json, "  \"groups\": {\"source\": ");
        text_append_string(json, c->group_source ? c->group_source : "");
        text_append(json, ", \"names\": [");
        for (size_t g = 0; g < loss_groups; g++) text_append(json, "%s\"%zu\"", g ? ", " : "", g);
        text_append(json, "], \"examples\": [");
        const uint64_t *examples = lca_trainer_group_examples(tr, 0);
        for (size_t g = 0; g < loss_groups; g++)
            text_append(json, "%s%" PRIu64, g ? ", " : "", examples ? examples[g] : 0);
        text_append(json, "], \"validation_examples\": [");
        for (size_t g = 0; g < loss_groups; g++) {
            uint64_t count = 0;
            for (size_t i = 0; i < tr->validation_count; i++)
                count += c->example_groups[tr->validation_indices[i]] == g;
            text_append(json, "%s%" PRIu64, g ? ", " : "", count);
        }
        text_append(json, "]},\n");
    }
    /* version 2: the zero floor of helped/hurt/zero and the histogram's
     * bins (absolute, the same for every run) */
    text_append(json, "  \"zero_floor\": {\"ratio\": %s", LOG_STRINGIFY(LCA_ZERO_FLOOR_RATIO));
    text_append(json, ", \"relative_to\": \"the largest |LCA| of the iteration and view\"},\n");
    if (c->lca_histogram) {
        text_append(json, "  \"lca_histogram\": {\"bins\": %d, \"edges\": [", LCA_HISTOGRAM_BINS);
        for (int k = 0; k < LCA_HISTOGRAM_BINS - 1; k++)
            text_append(json, "%s%s", k ? ", " : "", HISTOGRAM_EDGE_TEXT[k]);
        text_append(json, "]},\n");
    } else {
        text_append(json, "  \"lca_histogram\": null,\n");
    }

    text dtype = {0}, list = {0};
    size_t offset = 0;
    bool first = true;
    text_append(&dtype, "[");
    size_t t = m->tensor_count, u = m->unit_count;
    field_group groups[MAX_FIELD_GROUPS];
    size_t n = record_groups(c, groups);
    for (size_t g = 0; g < n; g++)
        append_fields(&dtype, &list, groups[g].fields, groups[g].count, t, u, log_group_count(c),
                      &offset, &first);
    text_append(&dtype, "]");
    if (!dtype.failed && !list.failed) {
        text_append(json, "  \"record_size\": %zu,\n  \"record_dtype\": ", offset);
        text_append_string(json, dtype.bytes);
        text_append(json, ",\n  \"fields\": [%s\n  ]\n}\n", list.bytes);
    }
    bool failed = dtype.failed || list.failed || json->failed;
    free(dtype.bytes);
    free(list.bytes);
    if (failed) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "log: out of memory for the header");
    /* pad with spaces so that records start at a multiple of 8 */
    while ((LOG_PREAMBLE + json->length) % 8 != 0) text_append(json, " ");
    return json->failed ? lca_fail(LCA_ERR_OUT_OF_MEMORY, "log: out of memory") : LCA_OK;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_f64(uint8_t *p, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    put_u64(p, bits);
}

/* Write all bytes, retrying short writes and EINTR. */
static lca_status write_all(int fd, const char *path, const void *bytes, size_t length) {
    const uint8_t *p = bytes;
    while (length > 0) {
        ssize_t n = write(fd, p, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            return lca_fail(LCA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        p += n;
        length -= (size_t)n;
    }
    return LCA_OK;
}

static lca_status make_header_bytes(const lca_trainer *tr, text *json, uint8_t preamble[LOG_PREAMBLE]) {
    lca_status status = build_header(tr, json);
    if (status != LCA_OK) return status;
    memcpy(preamble, LOG_MAGIC, 8);
    put_u32(preamble + 8, LOG_VERSION);
    put_u32(preamble + 12, (uint32_t)json->length);
    put_u32(preamble + 16, (uint32_t)lca_log_record_size(tr));
    put_u32(preamble + 20, 0);
    return LCA_OK;
}

static lca_status new_log(lca_log **out, const char *path, const lca_trainer *tr, int fd,
                          bool owns_fd) {
    lca_log *log = calloc(1, sizeof *log);
    size_t size = lca_log_record_size(tr);
    if (log) {
        log->path = malloc(strlen(path) + 1);
        log->record = calloc(1, size);
    }
    if (!log || !log->path || !log->record) {
        if (log) {
            free(log->path);
            free(log->record);
        }
        free(log);
        if (owns_fd) close(fd);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "log: out of memory");
    }
    strcpy(log->path, path);
    log->fd = fd;
    log->owns_fd = owns_fd;
    log->tensor_count = tr->model->tensor_count;
    log->has_validation = tr->config.lca_validation_view != 0;
    log->has_units = tr->config.lca_units != 0;
    log->has_histogram = tr->config.lca_histogram != 0;
    log->group_count = log_group_count(&tr->config);
    log->unit_count = tr->model->unit_count;
    log->record_size = size;
    *out = log;
    return LCA_OK;
}

lca_status lca_log_open(lca_log **out, const char *path, const lca_trainer *tr) {
    *out = NULL;
    text json = {0};
    uint8_t preamble[LOG_PREAMBLE];
    lca_status status = make_header_bytes(tr, &json, preamble);
    if (status != LCA_OK) {
        free(json.bytes);
        return status;
    }
    if (strcmp(path, "-") == 0) {
        status = write_all(STDOUT_FILENO, "stdout", preamble, LOG_PREAMBLE);
        if (status == LCA_OK) status = write_all(STDOUT_FILENO, "stdout", json.bytes, json.length);
        free(json.bytes);
        if (status != LCA_OK) return status;
        return new_log(out, "stdout", tr, STDOUT_FILENO, false);
    }
    /* header into path.tmp, then rename: an existing log is replaced only
     * by a complete header */
    size_t tmp_length = strlen(path) + 5;
    char *tmp = malloc(tmp_length);
    if (!tmp) {
        free(json.bytes);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "log: out of memory");
    }
    snprintf(tmp, tmp_length, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        status = lca_fail(LCA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        status = write_all(fd, tmp, preamble, LOG_PREAMBLE);
        if (status == LCA_OK) status = write_all(fd, tmp, json.bytes, json.length);
        if (status == LCA_OK && rename(tmp, path) != 0)
            status = lca_fail(LCA_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        if (status != LCA_OK) {
            close(fd);
            unlink(tmp);
        }
    }
    free(tmp);
    free(json.bytes);
    if (status != LCA_OK) return status;
    return new_log(out, path, tr, fd, true);
}

lca_status lca_log_resume(lca_log **out, const char *path, const lca_trainer *tr) {
    *out = NULL;
    text json = {0};
    uint8_t preamble[LOG_PREAMBLE];
    lca_status status = make_header_bytes(tr, &json, preamble);
    if (status != LCA_OK) {
        free(json.bytes);
        return status;
    }
    size_t header = LOG_PREAMBLE + json.length;
    uint64_t keep = tr->iteration;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        free(json.bytes);
        return lca_fail(LCA_ERR_IO, "%s: cannot open to resume: %s", path, strerror(errno));
    }
    uint8_t *existing = malloc(header);
    struct stat info;
    if (!existing) {
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "log: out of memory");
    } else if (fstat(fd, &info) != 0) {
        status = lca_fail(LCA_ERR_IO, "%s: %s", path, strerror(errno));
    } else if ((size_t)info.st_size < header || pread(fd, existing, header, 0) != (ssize_t)header) {
        status = lca_fail(LCA_ERR_FORMAT, "%s: byte 0: expected a %zu-byte log header of this run",
                          path, header);
    } else if (memcmp(existing, LOG_MAGIC, 8) == 0 && memcmp(existing + 8, preamble + 8, 4) != 0) {
        uint32_t version = (uint32_t)existing[8] | (uint32_t)existing[9] << 8 |
                           (uint32_t)existing[10] << 16 | (uint32_t)existing[11] << 24;
        status = lca_fail(LCA_ERR_MISMATCH,
                          "%s: byte 8: the log is version %u, this lca writes version %d: a run "
                          "cannot be continued across log versions (start a new run, or resume "
                          "with the lca that began it)",
                          path, version, LOG_VERSION);
    } else if (memcmp(existing, preamble, LOG_PREAMBLE) != 0 ||
               memcmp(existing + LOG_PREAMBLE, json.bytes, json.length) != 0) {
        size_t at = 0;
        while (at < LOG_PREAMBLE && existing[at] == preamble[at]) at++;
        if (at == LOG_PREAMBLE)
            while (at < header && existing[at] == (uint8_t)json.bytes[at - LOG_PREAMBLE]) at++;
        status = lca_fail(LCA_ERR_MISMATCH,
                          "%s: byte %zu: the log's header differs from this run's "
                          "(different model, data or configuration)",
                          path, at);
    } else {
        size_t size = lca_log_record_size(tr);
        uint64_t complete = ((uint64_t)info.st_size - header) / size;
        if (complete < keep)
            status = lca_fail(LCA_ERR_MISMATCH,
                              "%s: holds %llu complete records, but the state to resume is at "
                              "iteration %llu",
                              path, (unsigned long long)complete, (unsigned long long)keep);
        /* records after the state's iteration are recomputed identically */
        else if (ftruncate(fd, (off_t)(header + keep * size)) != 0 ||
                 lseek(fd, 0, SEEK_END) < 0)
            status = lca_fail(LCA_ERR_IO, "%s: cannot cut back to iteration %llu: %s", path,
                              (unsigned long long)keep, strerror(errno));
    }
    free(existing);
    free(json.bytes);
    if (status != LCA_OK) {
        close(fd);
        return status;
    }
    return new_log(out, path, tr, fd, true);
}

static uint8_t *put_view(uint8_t *p, const lca_view_record *v, size_t t) {
    for (size_t i = 0; i < t; i++, p += 8) put_f64(p, v->tensor_lca ? v->tensor_lca[i] : 0.0);
    for (size_t i = 0; i < t; i++, p += 8)
        put_f64(p, v->tensor_first_order ? v->tensor_first_order[i] : 0.0);
    for (size_t i = 0; i < t; i++, p += 8) put_u64(p, v->tensor_helped ? v->tensor_helped[i] : 0);
    for (size_t i = 0; i < t; i++, p += 8) put_u64(p, v->tensor_hurt ? v->tensor_hurt[i] : 0);
    for (size_t i = 0; i < t; i++, p += 8) put_u64(p, v->tensor_zero ? v->tensor_zero[i] : 0);
    return p;
}

static uint8_t *put_units(uint8_t *p, const lca_view_record *v, size_t u) {
    for (size_t i = 0; i < u; i++, p += 8) put_f64(p, v->unit_lca ? v->unit_lca[i] : 0.0);
    return p;
}

/* the version-2 fields of a view (docs/log-format.md) */
static uint8_t *put_v2(uint8_t *p, const lca_view_record *v, size_t t, bool histogram) {
    put_f64(p, v->lca_floor);
    p += 8;
    for (size_t i = 0; i < t; i++, p += 8) put_f64(p, v->tensor_helping ? v->tensor_helping[i] : 0.0);
    for (size_t i = 0; i < t; i++, p += 8) put_f64(p, v->tensor_hurting ? v->tensor_hurting[i] : 0.0);
    for (size_t i = 0; i < t; i++, p += 8) put_u64(p, v->tensor_unmoved ? v->tensor_unmoved[i] : 0);
    if (histogram) {
        size_t bins = t * 2 * LCA_HISTOGRAM_BINS;
        for (size_t i = 0; i < bins; i++, p += 4)
            put_u32(p, v->tensor_histogram ? v->tensor_histogram[i] : 0);
    }
    return p;
}

/* the loss-group fields of a view (issue 15), then the reserved u32 when
 * G is odd */
static uint8_t *put_groups(uint8_t *p, const lca_view_record *v, size_t t, size_t groups) {
    if (groups == 0) return p;
    bool have = v->group_count == groups;
    for (size_t i = 0; i < groups * t; i++, p += 8) put_f64(p, have ? v->group_lca[i] : 0.0);
    for (size_t i = 0; i < groups; i++, p += 8) put_f64(p, have ? v->group_loss_before[i] : 0.0);
    for (size_t i = 0; i < groups; i++, p += 8) put_f64(p, have ? v->group_loss_after[i] : 0.0);
    for (size_t i = 0; i < groups; i++, p += 8) put_f64(p, have ? v->group_residual[i] : 0.0);
    for (size_t i = 0; i < groups; i++, p += 4) put_u32(p, have ? v->group_flags[i] : 0);
    if (groups % 2) {
        put_u32(p, 0);
        p += 4;
    }
    return p;
}

lca_status lca_log_write(lca_log *log, const lca_record *r) {
    uint8_t *p = log->record;
    size_t t = log->tensor_count;
    put_u64(p, r->iteration);
    put_u32(p + 8, r->epoch);
    put_u32(p + 12, r->train.subintervals);
    put_u32(p + 16, r->train.flags);
    put_u32(p + 20, 0);
    put_f64(p + 24, r->batch_loss);
    put_f64(p + 32, r->train.loss_before);
    put_f64(p + 40, r->train.loss_after);
    put_f64(p + 48, r->train.lca_total);
    put_f64(p + 56, r->train.first_order_total);
    put_f64(p + 64, r->train.residual);
    p = put_view(p + 72, &r->train, t);
    if (log->has_units) p = put_units(p, &r->train, log->unit_count);
    p = put_v2(p, &r->train, t, log->has_histogram);
    p = put_groups(p, &r->train, t, log->group_count);
    if (log->has_validation) {
        const lca_view_record *v = &r->validation;
        put_f64(p, v->loss_before);
        put_f64(p + 8, v->loss_after);
        put_f64(p + 16, v->lca_total);
        put_f64(p + 24, v->first_order_total);
        put_f64(p + 32, v->residual);
        p = put_view(p + 40, v, t);
        put_u32(p, v->subintervals);
        put_u32(p + 4, v->flags);
        p += 8;
        if (log->has_units) p = put_units(p, v, log->unit_count);
        p = put_v2(p, v, t, log->has_histogram);
        p = put_groups(p, v, t, log->group_count);
    }
    lca_status status = write_all(log->fd, log->path, log->record, log->record_size);
    if (status == LCA_OK && log->sync_records) status = lca_log_sync(log);
    return status;
}

void lca_log_set_sync(lca_log *log, int every_record) {
    if (log) log->sync_records = every_record != 0;
}

lca_status lca_log_sync(lca_log *log) {
    if (!log || !log->owns_fd) return LCA_OK;
    if (fsync(log->fd) != 0 && errno != EINVAL && errno != EROFS)
        return lca_fail(LCA_ERR_IO, "%s: fsync failed: %s", log->path, strerror(errno));
    return LCA_OK;
}

lca_status lca_log_close(lca_log *log) {
    if (!log) return LCA_OK;
    lca_status status = LCA_OK;
    if (log->owns_fd && close(log->fd) != 0)
        status = lca_fail(LCA_ERR_IO, "%s: close failed: %s", log->path, strerror(errno));
    free(log->path);
    free(log->record);
    free(log);
    return status;
}
