/* model.c: model layout (spec parsing, layers, tensors, one parameter
 * allocation) and the forward/backward pass over a batch or evaluation
 * chunk.
 *
 * Layout: parameters are one float array; tensor k occupies
 * [offset_k, offset_k + count_k). Gradients, optimizer state and LCA
 * accumulators elsewhere use the same layout, so the optimizer and the LCA
 * integrator are flat loops.
 *
 * Spec syntax (docs/models.md):
 *   "fc"                       the paper's 784-100-50-10 MLP
 *   "lenet", "resnet20"        the paper's conv nets
 *   "784-100-50-10"            an MLP: dense layers with ReLU between
 *   "input(1,28,28) conv(20,5) relu maxpool(2) dense(10)"   a layer list */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 100000000ul
#define MAX_LAYERS 256

static const char *const FC_SPEC = "784-100-50-10";
static const char *const LENET_SPEC =
    "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) "
    "dense(400) relu dropout(0.5) dense(10)";
static const char *const RESNET20_SPEC =
    "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) "
    "block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)";

/* ------------------------------------------------------------ parsing */

/* One layer as the spec describes it, before shapes are known. */
typedef struct layer_request {
    lca_layer_kind kind;
    size_t units;          /* dense outputs, conv output channels */
    size_t k, stride;      /* conv kernel, pooling window */
    bool valid;            /* conv: valid padding instead of same */
    bool global;           /* avgpool over the whole plane */
    float p;               /* dropout */
} layer_request;

typedef struct parser {
    const char *spec;
    const char *p;
    layer_request layers[MAX_LAYERS];
    size_t count;
    size_t input[3];
    bool have_input;
} parser;

static lca_status parse_error(const parser *ps, const char *at, const char *what) {
    return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": character %zu: %s", ps->spec,
                    (size_t)(at - ps->spec) + 1, what);
}

static lca_status push(parser *ps, const char *at, layer_request r) {
    if (ps->count == MAX_LAYERS) return parse_error(ps, at, "more than 256 layers");
    ps->layers[ps->count++] = r;
    return LCA_OK;
}

/* A positive integer at *p. */
static lca_status parse_size(parser *ps, const char **p, size_t *out) {
    if (!isdigit((unsigned char)**p)) return parse_error(ps, *p, "expected a positive integer");
    errno = 0;
    char *end;
    unsigned long long v = strtoull(*p, &end, 10);
    if (errno || v == 0 || v > MAX_WIDTH)
        return parse_error(ps, *p, "expected an integer between 1 and 100000000");
    *out = (size_t)v;
    *p = end;
    return LCA_OK;
}

/* "784-100-50-10" */
static lca_status parse_dashes(parser *ps) {
    size_t widths[MAX_LAYERS], n = 0;
    const char *p = ps->spec;
    for (;;) {
        if (n == MAX_LAYERS) return parse_error(ps, p, "more than 256 layers");
        lca_status status = parse_size(ps, &p, &widths[n]);
        if (status != LCA_OK) return status;
        n++;
        if (*p == '\0') break;
        if (*p != '-') return parse_error(ps, p, "expected '-' between widths");
        p++;
    }
    if (n < 2)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "model spec \"%s\": needs at least an input and an output width "
                        "(e.g. \"64-10\"), or a name (fc, lenet, resnet20)",
                        ps->spec);
    ps->have_input = true;
    ps->input[0] = widths[0];
    ps->input[1] = ps->input[2] = 1;
    for (size_t i = 1; i < n; i++) {
        lca_status status = push(ps, p, (layer_request){.kind = LCA_LAYER_DENSE, .units = widths[i]});
        if (status == LCA_OK && i + 1 < n) status = push(ps, p, (layer_request){.kind = LCA_LAYER_RELU});
        if (status != LCA_OK) return status;
    }
    return LCA_OK;
}

/* Arguments of name(...): numbers, key=value, or words. */
typedef struct arguments {
    size_t count;
    char text[8][32];
} arguments;

static lca_status parse_arguments(parser *ps, const char **p, arguments *args) {
    args->count = 0;
    if (**p != '(') return LCA_OK;
    (*p)++;
    for (;;) {
        while (**p == ' ') (*p)++;
        const char *start = *p;
        while (**p && **p != ',' && **p != ')' && **p != ' ') (*p)++;
        size_t length = (size_t)(*p - start);
        if (length == 0 || length >= 32 || args->count == 8)
            return parse_error(ps, start, "expected an argument");
        memcpy(args->text[args->count], start, length);
        args->text[args->count][length] = '\0';
        args->count++;
        while (**p == ' ') (*p)++;
        if (**p == ')') {
            (*p)++;
            return LCA_OK;
        }
        if (**p != ',') return parse_error(ps, *p, "expected ',' or ')'");
        (*p)++;
    }
}

static bool argument_size(const char *text, const char *key, size_t *out) {
    size_t key_length = key ? strlen(key) : 0;
    if (key) {
        if (strncmp(text, key, key_length) != 0 || text[key_length] != '=') return false;
        text += key_length + 1;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || v == 0 || v > MAX_WIDTH) return false;
    *out = (size_t)v;
    return true;
}

/* "input(1,28,28) conv(20,5) relu …" */
static lca_status parse_layers(parser *ps) {
    const char *p = ps->spec;
    for (;;) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *start = p;
        while (isalnum((unsigned char)*p) || *p == '_') p++;
        size_t length = (size_t)(p - start);
        char name[16] = "";
        if (length == 0 || length >= sizeof name)
            return parse_error(ps, start, "expected a layer name (input, dense, conv, relu, "
                                          "maxpool, avgpool, gap, bn, dropout, flatten, block)");
        memcpy(name, start, length);
        arguments args;
        lca_status status = parse_arguments(ps, &p, &args);
        if (status != LCA_OK) return status;
        if (*p && *p != ' ') return parse_error(ps, p, "expected a space between layers");

        if (!ps->have_input && strcmp(name, "input") != 0)
            return parse_error(ps, start, "a layer list starts with input(C,H,W) or input(F)");
        layer_request r = {.stride = 1};
        if (strcmp(name, "input") == 0) {
            if (ps->have_input) return parse_error(ps, start, "input(...) given twice");
            if (args.count != 1 && args.count != 3)
                return parse_error(ps, start, "input takes (features) or (channels,height,width)");
            size_t dims[3] = {1, 1, 1};
            for (size_t i = 0; i < args.count; i++)
                if (!argument_size(args.text[i], NULL, &dims[args.count == 1 ? 0 : i]))
                    return parse_error(ps, start, "input sizes must be positive integers");
            memcpy(ps->input, dims, sizeof dims);
            ps->have_input = true;
            continue;
        } else if (strcmp(name, "dense") == 0 || strcmp(name, "fc") == 0) {
            r.kind = LCA_LAYER_DENSE;
            if (args.count != 1 || !argument_size(args.text[0], NULL, &r.units))
                return parse_error(ps, start, "dense takes (outputs)");
        } else if (strcmp(name, "conv") == 0) {
            r.kind = LCA_LAYER_CONV2D;
            if (args.count < 2 || !argument_size(args.text[0], NULL, &r.units) ||
                !argument_size(args.text[1], NULL, &r.k))
                return parse_error(ps, start, "conv takes (channels,kernel[,stride=S][,same|valid])");
            for (size_t i = 2; i < args.count; i++) {
                if (strcmp(args.text[i], "same") == 0) r.valid = false;
                else if (strcmp(args.text[i], "valid") == 0) r.valid = true;
                else if (!argument_size(args.text[i], "stride", &r.stride))
                    return parse_error(ps, start, "conv options are stride=S, same, valid");
            }
            if (!r.valid && r.k % 2 == 0)
                return parse_error(ps, start, "same padding needs an odd kernel size");
        } else if (strcmp(name, "relu") == 0) {
            r.kind = LCA_LAYER_RELU;
        } else if (strcmp(name, "maxpool") == 0 || strcmp(name, "avgpool") == 0) {
            r.kind = name[0] == 'm' ? LCA_LAYER_MAXPOOL : LCA_LAYER_AVGPOOL;
            if (args.count < 1 || args.count > 2 || !argument_size(args.text[0], NULL, &r.k))
                return parse_error(ps, start, "pooling takes (window[,stride=S])");
            r.stride = r.k;
            if (args.count == 2 && !argument_size(args.text[1], "stride", &r.stride))
                return parse_error(ps, start, "pooling options are stride=S");
        } else if (strcmp(name, "gap") == 0) {
            r.kind = LCA_LAYER_AVGPOOL;
            r.global = true;
        } else if (strcmp(name, "bn") == 0) {
            r.kind = LCA_LAYER_BATCHNORM;
        } else if (strcmp(name, "dropout") == 0) {
            r.kind = LCA_LAYER_DROPOUT;
            char *end;
            double v = args.count == 1 ? strtod(args.text[0], &end) : -1;
            if (args.count != 1 || *end || !(v >= 0.0 && v < 1.0))
                return parse_error(ps, start, "dropout takes (probability) in [0, 1)");
            r.p = (float)v;
        } else if (strcmp(name, "flatten") == 0) {
            r.kind = LCA_LAYER_FLATTEN;
        } else if (strcmp(name, "block") == 0) {
            /* the basic residual block of He et al. (2016), CIFAR variant */
            size_t channels, stride = 1;
            if (args.count < 1 || args.count > 2 || !argument_size(args.text[0], NULL, &channels) ||
                (args.count == 2 && !argument_size(args.text[1], "stride", &stride)))
                return parse_error(ps, start, "block takes (channels[,stride=S])");
            layer_request expansion[] = {
                {.kind = LCA_LAYER_BLOCK_BEGIN},
                {.kind = LCA_LAYER_CONV2D, .units = channels, .k = 3, .stride = stride},
                {.kind = LCA_LAYER_BATCHNORM},
                {.kind = LCA_LAYER_RELU},
                {.kind = LCA_LAYER_CONV2D, .units = channels, .k = 3, .stride = 1},
                {.kind = LCA_LAYER_BATCHNORM},
                {.kind = LCA_LAYER_BLOCK_ADD},
                {.kind = LCA_LAYER_RELU},
            };
            for (size_t i = 0; i < sizeof expansion / sizeof expansion[0]; i++) {
                status = push(ps, start, expansion[i]);
                if (status != LCA_OK) return status;
            }
            continue;
        } else {
            return parse_error(ps, start, "unknown layer (input, dense, conv, relu, maxpool, "
                                          "avgpool, gap, bn, dropout, flatten, block)");
        }
        if (r.kind != LCA_LAYER_CONV2D && r.kind != LCA_LAYER_DENSE && r.kind != LCA_LAYER_MAXPOOL &&
            r.kind != LCA_LAYER_AVGPOOL && r.kind != LCA_LAYER_DROPOUT && args.count > 0)
            return parse_error(ps, start, "this layer takes no arguments");
        status = push(ps, start, r);
        if (status != LCA_OK) return status;
    }
    if (!ps->have_input) return parse_error(ps, p, "empty model spec");
    return LCA_OK;
}

/* ------------------------------------------------------------ building */

static lca_tensor *add_tensor(lca_model *m, const char *layer, const char *kind, int rank,
                              const int64_t *shape, lca_init_kind init, size_t fan_in, long group) {
    lca_tensor *t = &m->tensors[m->tensor_count++];
    snprintf(t->name, sizeof t->name, "%s.%s", layer, kind);
    t->rank = rank;
    t->count = 1;
    for (int d = 0; d < rank; d++) {
        t->shape[d] = shape[d];
        t->count *= (size_t)shape[d];
    }
    t->init = init;
    t->fan_in = fan_in;
    t->unit_group = group;
    t->offset = m->parameter_count;
    m->parameter_count += t->count;
    return t;
}

static long add_unit_group(lca_model *m, const char *name, size_t units) {
    lca_unit_group *g = &m->unit_groups[m->unit_group_count];
    snprintf(g->name, sizeof g->name, "%s", name);
    g->units = units;
    m->unit_count += units;
    return (long)m->unit_group_count++;
}

static void conv_shape(lca_conv2d_shape *s, size_t c, size_t h, size_t w, size_t oc, size_t k,
                       size_t stride, bool valid) {
    memset(s, 0, sizeof *s);
    s->c = c;
    s->h = h;
    s->w = w;
    s->oc = oc;
    s->kh = s->kw = k;
    s->stride = stride;
    /* PyTorch's padding = k // 2 for "same"; OH = ⌊(H + 2P − K)/S⌋ + 1 */
    s->pad_h = s->pad_w = valid ? 0 : (k - 1) / 2;
    s->oh = (h + 2 * s->pad_h - k) / stride + 1;
    s->ow = (w + 2 * s->pad_w - k) / stride + 1;
}

static lca_status build(lca_model *m, const parser *ps) {
    size_t c = ps->input[0], h = ps->input[1], w = ps->input[2];
    m->in_c = c;
    m->in_h = h;
    m->in_w = w;
    size_t counters[4] = {0}; /* conv, fc, bn, proj */
    char name[32];
    long open_block = -1;
    size_t block_c = 0, block_h = 0, block_w = 0;
    for (size_t l = 0; l < ps->count; l++) {
        const layer_request *r = &ps->layers[l];
        lca_layer *L = &m->layers[m->layer_count++];
        L->kind = r->kind;
        L->weight = L->bias = LCA_NO_TENSOR;
        L->in_c = c;
        L->in_h = h;
        L->in_w = w;
        switch (r->kind) {
        case LCA_LAYER_DENSE: {
            size_t in = c * h * w;
            snprintf(name, sizeof name, "fc%zu", ++counters[1]);
            long group = add_unit_group(m, name, r->units);
            int64_t ws[2] = {(int64_t)r->units, (int64_t)in}, bs[1] = {(int64_t)r->units};
            L->weight = (size_t)(add_tensor(m, name, "weight", 2, ws, LCA_INIT_HE_NORMAL, in, group) - m->tensors);
            L->bias = (size_t)(add_tensor(m, name, "bias", 1, bs, LCA_INIT_ZERO, 0, group) - m->tensors);
            c = r->units;
            h = w = 1;
            break;
        }
        case LCA_LAYER_CONV2D: {
            if (r->k > h + 2 * ((r->k - 1) / 2) || r->k > w + 2 * ((r->k - 1) / 2))
                return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                                "model spec \"%s\": layer %zu: kernel %zu is larger than its "
                                "%zu×%zu input",
                                ps->spec, l + 1, r->k, h, w);
            conv_shape(&L->conv, c, h, w, r->units, r->k, r->stride, r->valid);
            snprintf(name, sizeof name, "conv%zu", ++counters[0]);
            long group = add_unit_group(m, name, r->units);
            int64_t ws[4] = {(int64_t)r->units, (int64_t)c, (int64_t)r->k, (int64_t)r->k};
            int64_t bs[1] = {(int64_t)r->units};
            L->weight = (size_t)(add_tensor(m, name, "weight", 4, ws, LCA_INIT_HE_NORMAL, c * r->k * r->k, group) - m->tensors);
            L->bias = (size_t)(add_tensor(m, name, "bias", 1, bs, LCA_INIT_ZERO, 0, group) - m->tensors);
            c = r->units;
            h = L->conv.oh;
            w = L->conv.ow;
            break;
        }
        case LCA_LAYER_MAXPOOL:
        case LCA_LAYER_AVGPOOL: {
            size_t k = r->global ? h : r->k, stride = r->global ? 1 : r->stride;
            if (r->global && h != w)
                return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                                "model spec \"%s\": layer %zu: global pooling needs a square "
                                "input, not %zu×%zu",
                                ps->spec, l + 1, h, w);
            if (k > h || k > w)
                return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                                "model spec \"%s\": layer %zu: pooling window %zu is larger "
                                "than its %zu×%zu input",
                                ps->spec, l + 1, k, h, w);
            L->k = k;
            L->stride = stride;
            h = (h - k) / stride + 1;
            w = (w - k) / stride + 1;
            break;
        }
        case LCA_LAYER_BATCHNORM: {
            snprintf(name, sizeof name, "bn%zu", ++counters[2]);
            long group = add_unit_group(m, name, c);
            int64_t s[1] = {(int64_t)c};
            L->weight = (size_t)(add_tensor(m, name, "weight", 1, s, LCA_INIT_ONE, 0, group) - m->tensors);
            L->bias = (size_t)(add_tensor(m, name, "bias", 1, s, LCA_INIT_ZERO, 0, group) - m->tensors);
            L->running_mean = calloc(4 * c, sizeof(float)); /* mean, var, batch mean, batch var */
            if (!L->running_mean) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
            L->running_var = L->running_mean + c;
            for (size_t i = 0; i < c; i++) L->running_var[i] = 1.0f;
            break;
        }
        case LCA_LAYER_DROPOUT:
            L->p = r->p;
            break;
        case LCA_LAYER_RELU:
        case LCA_LAYER_FLATTEN:
            break;
        case LCA_LAYER_BLOCK_BEGIN:
            if (open_block >= 0)
                return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                                "model spec \"%s\": residual blocks cannot nest", ps->spec);
            open_block = (long)(m->layer_count - 1);
            block_c = c;
            block_h = h;
            block_w = w;
            break;
        case LCA_LAYER_BLOCK_ADD: {
            L->block_begin = (size_t)open_block;
            open_block = -1;
            if (block_c != c || block_h != h || block_w != w) {
                /* shapes differ: a 1×1 projection of the block input, with the
                 * stride that maps its plane onto the main path's */
                size_t stride = (block_h + h - 1) / h;
                L->projection = true;
                conv_shape(&L->projection_shape, block_c, block_h, block_w, c, 1, stride, true);
                if (L->projection_shape.oh != h || L->projection_shape.ow != w)
                    return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                                    "model spec \"%s\": layer %zu: no 1×1 projection maps the "
                                    "block input %zu×%zu×%zu onto %zu×%zu×%zu",
                                    ps->spec, l + 1, block_c, block_h, block_w, c, h, w);
                snprintf(name, sizeof name, "proj%zu", ++counters[3]);
                long group = add_unit_group(m, name, c);
                int64_t ws[4] = {(int64_t)c, (int64_t)block_c, 1, 1}, bs[1] = {(int64_t)c};
                L->weight = (size_t)(add_tensor(m, name, "weight", 4, ws, LCA_INIT_HE_NORMAL, block_c, group) - m->tensors);
                L->bias = (size_t)(add_tensor(m, name, "bias", 1, bs, LCA_INIT_ZERO, 0, group) - m->tensors);
            }
            break;
        }
        }
        L->out_c = c;
        L->out_h = h;
        L->out_w = w;
        L->in_size = L->in_c * L->in_h * L->in_w;
        L->out_size = c * h * w;
        /* backward writes gradients of layer outputs only (none for the
         * model's input); a block's shortcut gradient has the size of its
         * input (a begin layer's output) */
        if (L->out_size > m->max_gradient) m->max_gradient = L->out_size;
        if ((L->kind == LCA_LAYER_BLOCK_BEGIN || L->kind == LCA_LAYER_BLOCK_ADD) &&
            L->out_size > m->max_skip)
            m->max_skip = L->out_size;
    }
    if (open_block >= 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": a residual block is not closed",
                        ps->spec);
    if (m->layer_count == 0 || m->tensor_count == 0)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": has no parameters", ps->spec);
    if (m->layers[0].kind == LCA_LAYER_RELU)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": cannot start with relu", ps->spec);
    return LCA_OK;
}

lca_status lca_model_new(lca_model **out, const char *spec, lca_loss_kind loss) {
    *out = NULL;
    if (!spec) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec is NULL");
    if (loss != LCA_LOSS_SOFTMAX_CROSS_ENTROPY && loss != LCA_LOSS_MEAN_SQUARED_ERROR)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "unknown loss kind %d", (int)loss);
    const char *expanded = strcmp(spec, "fc") == 0         ? FC_SPEC
                           : strcmp(spec, "lenet") == 0    ? LENET_SPEC
                           : strcmp(spec, "resnet20") == 0 ? RESNET20_SPEC
                                                           : spec;
    parser *ps = calloc(1, sizeof *ps);
    if (!ps) return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    ps->spec = ps->p = expanded;
    lca_status status = isdigit((unsigned char)expanded[0]) ? parse_dashes(ps) : parse_layers(ps);
    if (status != LCA_OK) {
        free(ps);
        return status;
    }
    lca_model *m = calloc(1, sizeof *m);
    if (!m) {
        free(ps);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    }
    m->loss = loss;
    m->bn_group = 250;
    m->bn_momentum = 0.1f;
    m->bn_epsilon = 1e-5f;
    /* at most two tensors and one unit group per layer */
    m->layers = calloc(ps->count, sizeof *m->layers);
    m->tensors = calloc(2 * ps->count, sizeof *m->tensors);
    m->unit_groups = calloc(ps->count, sizeof *m->unit_groups);
    /* canonical spec: the built-in name, or the text as given */
    const char *canonical = strcmp(spec, "fc") == 0 ? FC_SPEC : spec;
    m->spec = malloc(strlen(canonical) + 1);
    if (!m->layers || !m->tensors || !m->unit_groups || !m->spec) {
        status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory");
    } else {
        strcpy(m->spec, canonical);
        status = build(m, ps);
    }
    if (status == LCA_OK && loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && lca_model_output_size(m) < 2)
        status = lca_fail(LCA_ERR_INVALID_ARGUMENT,
                          "model spec \"%s\": softmax cross-entropy needs at least 2 outputs", spec);
    if (status == LCA_OK) {
        m->parameters = calloc(m->parameter_count, sizeof(float));
        if (!m->parameters) status = lca_fail(LCA_ERR_OUT_OF_MEMORY, "model \"%s\": out of memory", spec);
    }
    free(ps);
    if (status != LCA_OK) {
        lca_model_free(m);
        return status;
    }
    *out = m;
    return LCA_OK;
}

lca_status lca_model_new_worker(const lca_model *m, lca_model **out) {
    *out = NULL;
    lca_model *w = malloc(sizeof *w);
    lca_layer *layers = malloc(m->layer_count * sizeof *layers);
    if (!w || !layers) {
        free(w);
        free(layers);
        return lca_fail(LCA_ERR_OUT_OF_MEMORY, "model: out of memory for an evaluation worker");
    }
    *w = *m;
    memcpy(layers, m->layers, m->layer_count * sizeof *layers);
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &layers[l];
        L->output = L->saved = L->saved_mean = L->saved_invstd = NULL;
        L->argmax = NULL;
        L->mask = NULL;
    }
    w->layers = layers;
    w->worker = true;
    w->max_batch = 0;
    w->workspace = NULL;
    w->workspace_bytes = 0;
    w->grad_a = w->grad_b = w->grad_skip = w->conv_scratch = NULL;
    w->example_loss = NULL;
    *out = w;
    return LCA_OK;
}

void lca_model_free(lca_model *m) {
    if (!m) return;
    if (m->worker) {
        free(m->layers);
        free(m->workspace);
        free(m);
        return;
    }
    for (size_t l = 0; l < m->layer_count; l++) free(m->layers[l].running_mean);
    free(m->spec);
    free(m->layers);
    free(m->tensors);
    free(m->unit_groups);
    free(m->parameters);
    free(m->workspace);
    free(m);
}

const char *lca_model_spec(const lca_model *m) { return m->spec; }
lca_loss_kind lca_model_loss(const lca_model *m) { return m->loss; }
size_t lca_model_input_size(const lca_model *m) { return m->in_c * m->in_h * m->in_w; }
size_t lca_model_output_size(const lca_model *m) { return m->layers[m->layer_count - 1].out_size; }
size_t lca_model_parameter_count(const lca_model *m) { return m->parameter_count; }
size_t lca_model_tensor_count(const lca_model *m) { return m->tensor_count; }
float *lca_model_parameters(lca_model *m) { return m->parameters; }
const float *lca_model_parameters_const(const lca_model *m) { return m->parameters; }

size_t lca_model_batchnorm_count(const lca_model *m) {
    size_t n = 0;
    for (size_t l = 0; l < m->layer_count; l++) n += m->layers[l].kind == LCA_LAYER_BATCHNORM;
    return n;
}

lca_status lca_model_tensor(const lca_model *m, size_t index, lca_tensor_info *out) {
    if (index >= m->tensor_count)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "tensor index %zu out of range (model has %zu)",
                        index, m->tensor_count);
    const lca_tensor *t = &m->tensors[index];
    out->name = t->name;
    out->rank = t->rank;
    for (int d = 0; d < LCA_MAX_RANK; d++) out->shape[d] = d < t->rank ? t->shape[d] : 0;
    out->offset = t->offset;
    out->count = t->count;
    return LCA_OK;
}

long lca_model_find_tensor(const lca_model *m, const char *name) {
    for (size_t i = 0; i < m->tensor_count; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return (long)i;
    return -1;
}

void lca_model_initialize(lca_model *m, uint64_t seed) {
    lca_rng rng;
    lca_rng_seed(&rng, seed, LCA_STREAM_INIT);
    for (size_t k = 0; k < m->tensor_count; k++) {
        const lca_tensor *t = &m->tensors[k];
        float *p = m->parameters + t->offset;
        if (t->init == LCA_INIT_ZERO || t->init == LCA_INIT_ONE) {
            for (size_t i = 0; i < t->count; i++) p[i] = t->init == LCA_INIT_ONE ? 1.0f : 0.0f;
            continue;
        }
        double std = sqrt(2.0 / (double)t->fan_in); /* He et al. 2015, for ReLU */
        for (size_t i = 0; i < t->count; i++) p[i] = (float)(std * lca_rng_normal(&rng));
    }
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &m->layers[l];
        if (L->kind != LCA_LAYER_BATCHNORM) continue;
        for (size_t i = 0; i < L->out_c; i++) {
            L->running_mean[i] = 0.0f;
            L->running_var[i] = 1.0f;
        }
    }
}

/* ------------------------------------------------------------ workspace */

#define ROUND16(x) (((x) + 15) & ~(size_t)15)

/* What one layer needs per call of n examples, in floats (each buffer
 * rounded to 16 floats so that all start 64-byte aligned). */
static size_t layer_floats(const lca_model *m, size_t l, size_t n) {
    const lca_layer *L = &m->layers[l];
    size_t out = ROUND16(n * L->out_size);
    switch (L->kind) {
    case LCA_LAYER_DENSE:
    case LCA_LAYER_CONV2D:
    case LCA_LAYER_AVGPOOL:
        return out;
    case LCA_LAYER_MAXPOOL:
        return 2 * out; /* output and argmax */
    case LCA_LAYER_BATCHNORM:
        return 2 * out + 2 * ROUND16(n * L->out_c); /* y, x̂, group statistics */
    case LCA_LAYER_DROPOUT:
        return out + ROUND16((n * L->out_size + 3) / 4); /* y and the byte mask */
    case LCA_LAYER_BLOCK_ADD:
        return L->projection ? 2 * out : out;
    case LCA_LAYER_RELU: {
        /* in place, but never on the caller's input (reached through
         * identity layers) */
        size_t before = l;
        while (before > 0 && (m->layers[before - 1].kind == LCA_LAYER_FLATTEN ||
                              m->layers[before - 1].kind == LCA_LAYER_DROPOUT ||
                              m->layers[before - 1].kind == LCA_LAYER_BLOCK_BEGIN))
            before--;
        return before == 0 ? out : 0;
    }
    case LCA_LAYER_FLATTEN:
    case LCA_LAYER_BLOCK_BEGIN:
        return 0;
    }
    return 0;
}

static size_t conv_workspace(const lca_model *m, size_t n) {
    size_t most = 0;
    for (size_t l = 0; l < m->layer_count; l++) {
        const lca_layer *L = &m->layers[l];
        lca_conv2d_shape s;
        if (L->kind == LCA_LAYER_CONV2D) s = L->conv;
        else if (L->kind == LCA_LAYER_BLOCK_ADD && L->projection) s = L->projection_shape;
        else continue;
        s.n = n;
        size_t need = lca_conv2d_workspace_floats(&s);
        if (need > most) most = need;
    }
    return ROUND16(most);
}

size_t lca_model_example_bytes(const lca_model *m) {
    size_t floats = 2 * m->max_gradient + m->max_skip + 16;
    for (size_t l = 0; l < m->layer_count; l++) floats += layer_floats(m, l, 1);
    return floats * sizeof(float) + sizeof(double);
}

lca_status lca_model_reserve(lca_model *m, size_t max_batch) {
    if (max_batch == 0) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: batch size 0");
    if (max_batch <= m->max_batch) return LCA_OK;
    /* an MLP's pass goes a block of rows at a time (run) */
    size_t rows = lca_model_input_rows(m, max_batch);
    size_t gradient_floats = ROUND16(rows * m->max_gradient);
    size_t skip_floats = ROUND16(rows * m->max_skip);
    size_t floats = 2 * gradient_floats + skip_floats;
    for (size_t l = 0; l < m->layer_count; l++) floats += layer_floats(m, l, rows);
    size_t conv_floats = conv_workspace(m, rows);
    floats += conv_floats;
    size_t bytes = floats * sizeof(float) + ROUND16(rows) * sizeof(double);
    void *w = aligned_alloc(64, bytes);
    if (!w)
        return lca_fail(LCA_ERR_OUT_OF_MEMORY,
                        "model: cannot allocate %zu bytes of workspace for %zu examples (try a "
                        "smaller --eval-chunk or --batch-size)",
                        bytes, max_batch);
    free(m->workspace);
    m->workspace = w;
    m->workspace_bytes = bytes;
    m->max_batch = max_batch;
    float *f = w;
    m->grad_a = f;
    f += gradient_floats;
    m->grad_b = f;
    f += gradient_floats;
    m->grad_skip = skip_floats ? f : NULL;
    f += skip_floats;
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &m->layers[l];
        size_t out = ROUND16(rows * L->out_size);
        L->output = L->saved = L->saved_mean = L->saved_invstd = NULL;
        L->argmax = NULL;
        L->mask = NULL;
        if (layer_floats(m, l, rows) == 0) continue;
        L->output = f; /* rows × out_size */
        f += out;
        switch (L->kind) {
        case LCA_LAYER_MAXPOOL:
            L->argmax = (uint32_t *)(void *)f; /* rows × out_size */
            f += out;
            break;
        case LCA_LAYER_BATCHNORM:
            L->saved = f; /* x̂: rows × out_size */
            f += out;
            L->saved_mean = f; /* groups × C */
            f += ROUND16(rows * L->out_c);
            L->saved_invstd = f;
            f += ROUND16(rows * L->out_c);
            break;
        case LCA_LAYER_DROPOUT:
            L->mask = (uint8_t *)(void *)f; /* rows × out_size bytes */
            f += ROUND16((rows * L->out_size + 3) / 4);
            break;
        case LCA_LAYER_BLOCK_ADD:
            if (L->projection) {
                L->saved = f; /* projection output: rows × out_size */
                f += out;
            }
            break;
        default:
            break;
        }
    }
    m->conv_scratch = f;
    f += conv_floats;
    m->example_loss = (double *)(void *)f; /* rows */
    return LCA_OK;
}

size_t lca_model_workspace_bytes(const lca_model *m) { return m->workspace_bytes; }

size_t lca_model_resolve_chunk(const lca_model *m, size_t requested, size_t bn_group,
                               size_t memory_budget) {
    size_t chunk = requested;
    if (chunk == 0) {
        size_t fit = memory_budget / lca_model_example_bytes(m);
        chunk = fit < LCA_MAX_AUTO_CHUNK ? fit : LCA_MAX_AUTO_CHUNK;
    }
    if (chunk == 0) chunk = 1;
    /* batch-norm groups never straddle chunks */
    if (lca_model_batchnorm_count(m) > 0) chunk = chunk < bn_group ? bn_group : chunk - chunk % bn_group;
    return chunk;
}

/* ------------------------------------------------------------- layers */

/* y[N×O] = x[N×I] · wᵀ + b, and with relu the ReLU of that in the same
 * pass over y (the bytes of a separate ReLU layer: x < 0 ? 0 : x) */
static void dense_forward(float *y, const float *x, const float *w, const float *b, size_t n,
                          size_t in, size_t out, bool relu) {
    lca_sgemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    LCA_PARALLEL_FOR_IF(n * out >= LCA_PARALLEL_WORK)
    for (size_t r = 0; r < n; r++) {
        float *row = y + r * out;
        if (relu) {
            for (size_t o = 0; o < out; o++) {
                float v = row[o] + b[o];
                row[o] = v < 0.0f ? 0.0f : v;
            }
        } else {
            for (size_t o = 0; o < out; o++) row[o] += b[o];
        }
    }
}

/* Backward of dense_forward:
 *   dw[O×I] = dyᵀ · x, db[O] = Σ_n dy, dx[N×I] = dy · w (skipped if dx is NULL) */
static void dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, size_t n, size_t in, size_t out) {
    lca_sgemm(true, false, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
    /* bias: column sums accumulated in double, each column's rows in
     * order, walked row by row so that the columns vectorise (a few hundred
     * columns: one thread, the strided per-column walk was slower) */
    enum { COLUMNS = 128 };
    for (size_t o0 = 0; o0 < out; o0 += COLUMNS) {
        size_t width = out - o0 < COLUMNS ? out - o0 : COLUMNS;
        double sum[COLUMNS] = {0};
        for (size_t r = 0; r < n; r++) {
            const float *row = dy + r * out + o0;
            for (size_t o = 0; o < width; o++) sum[o] += row[o];
        }
        for (size_t o = 0; o < width; o++) db[o0 + o] = (float)sum[o];
    }
    if (dx) lca_sgemm(false, false, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

/* ------------------------------------------------ MLPs, feature-major */

/* An MLP's pass (lca_model_streams_input) keeps its activations and their
 * gradients feature-major: a layer's output for a block of n examples is
 * O × n, row o holding output o of every example. Every product then has
 * the layer's width as its rows (100, 50, 10: whole 10-row panels of the
 * AVX-512 kernel, where n × 100 as columns fills 100 of 112 lanes and n × 10
 * 10 of 16) and the examples as its columns, and the layers pass their
 * outputs on without transposes. Only the input rows (n × I) are
 * example-major. Each element of a product is the same sum, in the same
 * order, as in the example-major functions above (the bias sums are not:
 * sum_row). Dropout masks are drawn in this order. */

/* yᵀ[O×n] = w · xᵀ + b, then the ReLU with relu; x is the block's input
 * rows (n × I) with x_rows, else the previous layer's output xᵀ (I × n). */
static void dense_forward_fm(float *yt, const float *x, bool x_rows, const float *w,
                             const float *b, size_t n, size_t in, size_t out, bool relu) {
    lca_sgemm(false, x_rows, out, n, in, 1.0f, w, in, x, x_rows ? in : n, 0.0f, yt, n);
    LCA_PARALLEL_FOR_IF(n * out >= LCA_PARALLEL_WORK)
    for (size_t o = 0; o < out; o++) {
        float *row = yt + o * n, bias = b[o];
        for (size_t r = 0; r < n; r++) {
            float v = row[r] + bias;
            row[r] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* Σ of n floats in double: eight running sums, of the elements at r ≡ j
 * (mod 8), which vectorise without reordering any of them, added up at the
 * end in a fixed order. */
static double sum_row(const float *row, size_t n) {
    enum { LANES = 8 };
    double lane[LANES] = {0};
    size_t r = 0;
    for (; r + LANES <= n; r += LANES)
        for (size_t j = 0; j < LANES; j++) lane[j] += row[r + j];
    for (size_t j = 0; r + j < n; j++) lane[j] += row[r + j];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* Backward of dense_forward_fm, from dyᵀ (O × n):
 *   dw = dyᵀ · x, db = Σ_n dy (sum_row), dxᵀ[I×n] = wᵀ · dyᵀ (skipped if dxt
 *   is NULL);
 * with accumulate, dw and db add to what they hold. With relu_output (the
 * ReLU after this layer, yᵀ), dyt first goes through the ReLU's backward,
 * in place, row by row just before the row's bias sum. */
static void dense_backward_fm(float *dxt, float *dw, float *db, float *dyt,
                              const float *relu_output, const float *x, bool x_rows,
                              const float *w, size_t n, size_t in, size_t out, bool accumulate) {
    for (size_t o = 0; o < out; o++) {
        float *row = dyt + o * n;
        if (relu_output) lca_relu_backward(row, row, relu_output + o * n, n);
        float sum = (float)sum_row(row, n);
        db[o] = accumulate ? db[o] + sum : sum;
    }
    lca_sgemm(false, !x_rows, out, in, n, 1.0f, dyt, n, x, x_rows ? in : n,
              accumulate ? 1.0f : 0.0f, dw, in);
    if (dxt) lca_sgemm(true, false, in, n, out, 1.0f, w, in, dyt, n, 0.0f, dxt, n);
}

/* Where a pass's logits (and their gradient) keep example r, class c:
 * at r · example_step + c · class_step (C, 1 example-major; 1, N
 * feature-major). */
typedef struct logit_layout {
    size_t example_step, class_step;
} logit_layout;

/* Softmax cross-entropy on logits z (N × C): per-example losses into loss[N]
 * (stable log-sum-exp in double) and, if dz, dz = scale · (softmax − onehot).
 * Examples go TILE at a time through local arrays, with the tile padded by
 * copies of its first example, so that the loops over a tile have fixed
 * trip counts and vectorise whatever the layout (exp: lca_exp_nonpositive). */
static void softmax_cross_entropy(double *loss, float *dz, const float *z, const int32_t *labels,
                                  size_t n, size_t classes, logit_layout at, double scale) {
    enum { TILE = 8, KEPT = 64 };
    size_t tiles = (n + TILE - 1) / TILE;
    LCA_PARALLEL_FOR_IF(n * classes >= LCA_PARALLEL_WORK / 8)
    for (size_t tile = 0; tile < tiles; tile++) {
        size_t first = tile * TILE, count = n - first < TILE ? n - first : TILE;
        const float *row[TILE];
        for (size_t j = 0; j < TILE; j++) row[j] = z + (first + (j < count ? j : 0)) * at.example_step;
#define Z(j, c) row[j][(c) * at.class_step]
        double max[TILE], sum[TILE], value[TILE];
        for (size_t j = 0; j < TILE; j++) max[j] = Z(j, 0);
        for (size_t c = 1; c < classes; c++)
            for (size_t j = 0; j < TILE; j++) {
                double v = Z(j, c);
                max[j] = v > max[j] ? v : max[j];
            }
        /* exp(z − max) once per class: kept for the gradient when the
         * classes fit (the common case), recomputed otherwise */
        double kept[KEPT][TILE];
        for (size_t j = 0; j < TILE; j++) sum[j] = 0.0;
        for (size_t c = 0; c < classes; c++) {
            for (size_t j = 0; j < TILE; j++) value[j] = Z(j, c);
            for (size_t j = 0; j < TILE; j++) {
                double e = lca_exp_nonpositive(value[j] - max[j]);
                if (c < KEPT) kept[c][j] = e;
                sum[j] += e;
            }
        }
        for (size_t j = 0; j < count; j++)
            loss[first + j] = max[j] + log(sum[j]) - (double)Z(j, labels[first + j]);
        if (!dz) continue;
        for (size_t j = 0; j < TILE; j++) sum[j] = 1.0 / sum[j]; /* now the inverse */
        for (size_t c = 0; c < classes; c++) {
            for (size_t j = 0; j < TILE; j++)
                value[j] = c < KEPT ? kept[c][j] : lca_exp_nonpositive(Z(j, c) - max[j]);
            for (size_t j = 0; j < count; j++) {
                size_t r = first + j;
                dz[r * at.example_step + c * at.class_step] = (float)(
                    scale * (value[j] * sum[j] - (c == (size_t)labels[r] ? 1.0 : 0.0)));
            }
        }
#undef Z
    }
}

/* Mean squared error terms: loss[r] = Σ_c (y − t)² / C (the mean over
 * outputs; the mean over examples comes from the caller's scale), and
 * dy = scale · 2 (y − t) / C. Targets are float rows (N × C) or one-hot
 * labels. */
static void squared_error(double *loss, float *dy, const float *y, const int32_t *labels,
                          const float *targets, size_t n, size_t outputs, logit_layout at,
                          double scale) {
    for (size_t r = 0; r < n; r++) {
        double sum = 0.0;
        for (size_t c = 0; c < outputs; c++) {
            size_t i = r * at.example_step + c * at.class_step;
            double t = targets ? targets[r * outputs + c] : (c == (size_t)labels[r] ? 1.0 : 0.0);
            double d = (double)y[i] - t;
            sum += d * d;
            if (dy) dy[i] = (float)(scale * 2.0 * d / (double)outputs);
        }
        loss[r] = sum / (double)outputs;
    }
}

/* -------------------------------------------------------- forward/backward */

typedef struct pass {
    lca_pass_mode mode;
    const float *x;        /* n × input */
    size_t n;
    bool feature_major;    /* an MLP's layers: outputs O × n (dense_forward_fm) */
    size_t bn_group;       /* examples per batch-norm group in this pass */
    lca_rng *rng;          /* dropout, training only */
} pass;

/* Forward through every layer; returns the logits (N × outputs). Identity
 * layers pass their input pointer on; ReLU works in place. */
static const float *forward(lca_model *m, const float *params, const pass *ps,
                            const float **inputs) {
    const float *input = ps->x;
    size_t n = ps->n;
    bool relu_next = false; /* a dense layer applied the ReLU that follows it */
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer *L = &m->layers[l];
        bool relu_done = relu_next;
        relu_next = false;
        inputs[l] = input;
        const float *w = L->weight != LCA_NO_TENSOR ? params + m->tensors[L->weight].offset : NULL;
        const float *b = L->bias != LCA_NO_TENSOR ? params + m->tensors[L->bias].offset : NULL;
        const float *output = L->output;
        switch (L->kind) {
        case LCA_LAYER_DENSE: {
            /* a ReLU right after, in place on this output, joins its pass */
            bool relu = l + 1 < m->layer_count && m->layers[l + 1].kind == LCA_LAYER_RELU &&
                        m->layers[l + 1].output == NULL;
            if (ps->feature_major)
                dense_forward_fm(L->output, input, l == 0, w, b, n, L->in_size, L->out_size, relu);
            else
                dense_forward(L->output, input, w, b, n, L->in_size, L->out_size, relu);
            relu_next = relu;
            break;
        }
        case LCA_LAYER_CONV2D: {
            lca_conv2d_shape s = L->conv;
            s.n = n;
            lca_conv2d_forward(L->output, input, w, b, &s, m->conv_scratch);
            break;
        }
        case LCA_LAYER_RELU: {
            /* in place on the previous layer's output (which no backward
             * pass needs: dense and conv keep their inputs, BN keeps x̂) */
            float *y = L->output ? L->output : (float *)input;
            if (!relu_done) lca_relu_forward(y, input, n * L->out_size);
            output = y;
            break;
        }
        case LCA_LAYER_MAXPOOL:
            lca_maxpool_forward(L->output, L->argmax, input, n, L->in_c, L->in_h, L->in_w, L->k,
                                L->stride);
            break;
        case LCA_LAYER_AVGPOOL:
            lca_avgpool_forward(L->output, input, n, L->in_c, L->in_h, L->in_w, L->k, L->stride);
            break;
        case LCA_LAYER_BATCHNORM: {
            size_t hw = L->in_h * L->in_w;
            bool train = ps->mode == LCA_PASS_TRAIN;
            float *batch_mean = L->running_mean + 2 * L->out_c, *batch_var = batch_mean + L->out_c;
            lca_batchnorm_forward_batch(L->output, L->saved, L->saved_mean, L->saved_invstd,
                                        train ? batch_mean : NULL, train ? batch_var : NULL, input,
                                        w, b, n, L->out_c, hw, ps->bn_group, m->bn_epsilon);
            if (train) {
                float mo = m->bn_momentum;
                for (size_t c = 0; c < L->out_c; c++) {
                    L->running_mean[c] = (1.0f - mo) * L->running_mean[c] + mo * batch_mean[c];
                    L->running_var[c] = (1.0f - mo) * L->running_var[c] + mo * batch_var[c];
                }
            }
            break;
        }
        case LCA_LAYER_DROPOUT:
            if (ps->mode == LCA_PASS_TRAIN && L->p > 0.0f)
                lca_dropout_forward(L->output, L->mask, input, n * L->out_size, L->p, ps->rng);
            else
                output = input;
            break;
        case LCA_LAYER_FLATTEN:
        case LCA_LAYER_BLOCK_BEGIN:
            output = input;
            break;
        case LCA_LAYER_BLOCK_ADD: {
            const float *shortcut = inputs[L->block_begin];
            if (L->projection) {
                lca_conv2d_shape s = L->projection_shape;
                s.n = n;
                lca_conv2d_forward(L->saved, shortcut, w, b, &s, m->conv_scratch);
                shortcut = L->saved;
            }
            size_t count = n * L->out_size;
            for (size_t i = 0; i < count; i++) L->output[i] = input[i] + shortcut[i];
            break;
        }
        }
        input = output;
    }
    return input;
}

/* Backward from dlogits (in m->grad_a) to every parameter gradient; with
 * accumulate (a later block of rows of an MLP's pass, see run; only the
 * feature-major dense layers of an MLP take it), the gradients add to what
 * gradient holds. */
static void backward(lca_model *m, const float *params, const pass *ps, const float **inputs,
                     const float *logits, float *gradient, bool accumulate) {
    size_t n = ps->n;
    float *dy = m->grad_a;
    bool relu_done = false; /* a max pooling applied the ReLU before it */
    const float *relu_after = NULL; /* a ReLU left to the dense layer before it */
    for (size_t l = m->layer_count; l-- > 0;) {
        lca_layer *L = &m->layers[l];
        bool relu_here_done = relu_done;
        relu_done = false;
        const float *input = inputs[l];
        const float *output = l + 1 < m->layer_count ? inputs[l + 1] : logits;
        const float *w = L->weight != LCA_NO_TENSOR ? params + m->tensors[L->weight].offset : NULL;
        float *dw = L->weight != LCA_NO_TENSOR ? gradient + m->tensors[L->weight].offset : NULL;
        float *db = L->bias != LCA_NO_TENSOR ? gradient + m->tensors[L->bias].offset : NULL;
        /* the input gradient goes to the other buffer; none for the first layer */
        float *other = dy == m->grad_a ? m->grad_b : m->grad_a;
        float *dx = l > 0 ? other : NULL;
        switch (L->kind) {
        case LCA_LAYER_DENSE:
            if (ps->feature_major)
                dense_backward_fm(dx, dw, db, dy, relu_after, input, l == 0, w, n, L->in_size,
                                  L->out_size, accumulate);
            else
                dense_backward(dx, dw, db, dy, input, w, n, L->in_size, L->out_size);
            relu_after = NULL;
            break;
        case LCA_LAYER_CONV2D: {
            lca_conv2d_shape s = L->conv;
            s.n = n;
            lca_conv2d_backward(dx, dw, db, dy, input, w, &s, m->conv_scratch);
            break;
        }
        case LCA_LAYER_RELU:
            /* right after a dense layer of an MLP: in that layer's bias walk */
            if (ps->feature_major && l > 0 && m->layers[l - 1].kind == LCA_LAYER_DENSE)
                relu_after = output;
            else if (!relu_here_done)
                lca_relu_backward(dy, dy, output, n * L->out_size);
            dx = dy;
            break;
        case LCA_LAYER_MAXPOOL:
            /* a ReLU right before (its output is this input) joins the pass */
            relu_done = dx && m->layers[l - 1].kind == LCA_LAYER_RELU;
            if (relu_done)
                lca_maxpool_relu_backward(dx, dy, L->argmax, input, n, L->in_c, L->in_h, L->in_w,
                                          L->k, L->stride);
            else if (dx)
                lca_maxpool_backward(dx, dy, L->argmax, n, L->in_c, L->in_h, L->in_w, L->k,
                                     L->stride);
            break;
        case LCA_LAYER_AVGPOOL:
            if (dx) lca_avgpool_backward(dx, dy, n, L->in_c, L->in_h, L->in_w, L->k, L->stride);
            break;
        case LCA_LAYER_BATCHNORM:
            lca_batchnorm_backward_batch(dx, dw, db, dy, L->saved, L->saved_invstd,
                                         w, n, L->out_c, L->in_h * L->in_w, ps->bn_group);
            break;
        case LCA_LAYER_DROPOUT:
            if (ps->mode == LCA_PASS_TRAIN && L->p > 0.0f)
                lca_dropout_backward(dy, dy, L->mask, n * L->out_size, L->p);
            dx = dy;
            break;
        case LCA_LAYER_FLATTEN:
            dx = dy;
            break;
        case LCA_LAYER_BLOCK_ADD: {
            /* the main path gets dy unchanged; the shortcut's gradient waits
             * in grad_skip for the block's begin */
            if (L->projection) {
                lca_conv2d_shape s = L->projection_shape;
                s.n = n;
                lca_conv2d_backward(m->grad_skip, dw, db, dy, inputs[L->block_begin], w, &s,
                                    m->conv_scratch);
            } else {
                memcpy(m->grad_skip, dy, n * L->out_size * sizeof(float));
            }
            dx = dy;
            break;
        }
        case LCA_LAYER_BLOCK_BEGIN: {
            size_t count = n * L->out_size;
            for (size_t i = 0; i < count; i++) dy[i] += m->grad_skip[i];
            dx = dy;
            break;
        }
        }
        if (!dx) break;
        dy = dx;
    }
}

/* An MLP: a dense first layer, then only dense, ReLU, dropout and flatten
 * layers (nothing that mixes examples, as batch norm does), so that a pass
 * can go LCA_INPUT_ROWS rows at a time, feature-major. */
bool lca_model_streams_input(const lca_model *m) {
    if (m->layer_count == 0 || m->layers[0].kind != LCA_LAYER_DENSE) return false;
    for (size_t l = 0; l < m->layer_count; l++) {
        lca_layer_kind kind = m->layers[l].kind;
        if (kind != LCA_LAYER_DENSE && kind != LCA_LAYER_RELU && kind != LCA_LAYER_DROPOUT &&
            kind != LCA_LAYER_FLATTEN)
            return false;
    }
    return true;
}

size_t lca_model_input_rows(const lca_model *m, size_t n) {
    return lca_model_streams_input(m) && n > LCA_INPUT_ROWS ? LCA_INPUT_ROWS : n;
}

/* Rows [first, first + count) of the pass's input, as floats. */
static const float *input_rows(const lca_model_input *input, size_t first, size_t count,
                               size_t features) {
    if (input->x) return input->x + first * features;
    lca_dataset_gather(input->data, input->indices + first, count, input->rows, NULL, NULL);
    return input->rows;
}

static lca_status check_labels(const int32_t *labels, size_t n, size_t outputs) {
    for (size_t r = 0; r < n; r++)
        if (labels[r] < 0 || (size_t)labels[r] >= outputs)
            return lca_fail(LCA_ERR_MISMATCH,
                            "label %d of example %zu is outside the model's %zu outputs",
                            labels[r], r, outputs);
    return LCA_OK;
}

/* Forward, loss and backward on blocks of lca_model_input_rows rows, in
 * order: one block of all n for most models; for an MLP blocks of
 * LCA_INPUT_ROWS, each converted from the data set once, its activations
 * in a block-sized workspace, its gradients added to those of the blocks
 * before (the same bytes whether the input comes as floats or from a data
 * set, and whatever the caller's chunk around the blocks). */
static lca_status run(lca_model *m, const float *parameters, const int32_t *labels,
                      const float *targets, const lca_model_input *input, pass ps,
                      double gradient_scale, double *loss_sum, float *gradient) {
    size_t n = ps.n;
    if (n == 0 || n > m->max_batch)
        return lca_fail(LCA_ERR_STATE, "model: %zu examples but workspace reserved for %zu", n,
                        m->max_batch);
    bool mlp = lca_model_streams_input(m);
    if (!input->x && !(mlp && input->data && input->rows))
        return lca_fail(LCA_ERR_STATE, "model: no input (only an MLP converts rows of a data "
                                       "set as it goes)");
    if (!labels && !targets)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model: neither labels nor targets given");
    if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY && !labels)
        return lca_fail(LCA_ERR_MISMATCH, "softmax cross-entropy needs integer labels, "
                                          "but the data set has float targets");
    size_t outputs = lca_model_output_size(m), features = lca_model_input_size(m);
    if (!targets) {
        lca_status status = check_labels(labels, n, outputs);
        if (status != LCA_OK) return status;
    }
    size_t block = lca_model_input_rows(m, n);
    ps.feature_major = mlp;
    double sum = 0.0;
    for (size_t first = 0; first < n; first += block) {
        ps.n = n - first < block ? n - first : block;
        ps.x = input_rows(input, first, ps.n, features);
        const float *inputs[MAX_LAYERS];
        const float *logits = forward(m, parameters, &ps, inputs);
        float *dlogits = gradient ? m->grad_a : NULL;
        logit_layout at = ps.feature_major ? (logit_layout){1, ps.n} : (logit_layout){outputs, 1};
        if (m->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY)
            softmax_cross_entropy(m->example_loss, dlogits, logits, labels + first, ps.n, outputs,
                                  at, gradient_scale);
        else
            squared_error(m->example_loss, dlogits, logits, labels ? labels + first : NULL,
                          targets ? targets + first * outputs : NULL, ps.n, outputs, at,
                          gradient_scale);
        for (size_t r = 0; r < ps.n; r++) sum += m->example_loss[r];
        /* a sum that is not finite stays so, whatever is added later */
        if (!isfinite(sum))
            return lca_fail(LCA_ERR_NUMERIC, "loss is not finite (%g): training diverged; "
                                             "try a smaller learning rate", sum);
        if (gradient) backward(m, parameters, &ps, inputs, logits, gradient, first > 0);
    }
    *loss_sum = sum;
    return LCA_OK;
}

lca_status lca_model_forward_backward_input(lca_model *m, const float *parameters,
                                            const lca_model_input *input, const int32_t *labels,
                                            const float *targets, size_t n, double gradient_scale,
                                            double *loss_sum, float *gradient) {
    pass ps = {.mode = LCA_PASS_EVALUATE, .n = n, .bn_group = m->bn_group};
    return run(m, parameters, labels, targets, input, ps, gradient_scale, loss_sum, gradient);
}

lca_status lca_model_forward_backward(lca_model *m, const float *parameters, const float *x,
                                      const int32_t *labels, const float *targets, size_t n,
                                      double gradient_scale, double *loss_sum, float *gradient) {
    lca_model_input input = {.x = x};
    return lca_model_forward_backward_input(m, parameters, &input, labels, targets, n,
                                            gradient_scale, loss_sum, gradient);
}

lca_status lca_model_train_gradient(lca_model *m, const lca_model_input *input,
                                    const int32_t *labels, const float *targets, size_t n,
                                    double *loss_sum, float *gradient, lca_rng *rng) {
    pass ps = {.mode = LCA_PASS_TRAIN, .n = n, .bn_group = n, .rng = rng};
    return run(m, m->parameters, labels, targets, input, ps, 1.0 / (double)n, loss_sum, gradient);
}

lca_status lca_model_loss_and_gradient(lca_model *m, const float *parameters, const float *x,
                                       const int32_t *labels, const float *targets, size_t n,
                                       double *loss, float *gradient) {
    double sum;
    lca_status status = lca_model_forward_backward(m, parameters ? parameters : m->parameters, x,
                                                   labels, targets, n, 1.0 / (double)n, &sum,
                                                   gradient);
    if (status == LCA_OK) *loss = sum / (double)n;
    return status;
}

/* ------------------------------------------------------------ spec-level layers
 * lca_model_layer_count and lca_model_layer describe the model's layers as
 * the spec language writes them (docs/models.md), read back from the built
 * layout, so the parser stays the one reader of spec text: a residual
 * block's eight internal layers (begin, conv, bn, relu, conv, bn, add,
 * relu) are one LCA_SPEC_BLOCK; the input is entry 0. */

/* The spec-level layer that starts at internal layer *l, advancing *l past
 * it. */
static void spec_layer_at(const lca_model *m, size_t *l, lca_layer_spec *out) {
    const lca_layer *L = &m->layers[*l];
    *out = (lca_layer_spec){.stride = 1};
    (*l)++;
    switch (L->kind) {
    case LCA_LAYER_DENSE:
        out->kind = LCA_SPEC_DENSE;
        out->units = L->out_size;
        break;
    case LCA_LAYER_CONV2D:
        out->kind = LCA_SPEC_CONV;
        out->units = L->conv.oc;
        out->kernel = L->conv.kh;
        out->stride = L->conv.stride;
        out->valid = L->conv.kh > 1 && L->conv.pad_h == 0;
        break;
    case LCA_LAYER_RELU: out->kind = LCA_SPEC_RELU; break;
    case LCA_LAYER_MAXPOOL:
    case LCA_LAYER_AVGPOOL:
        out->kind = L->kind == LCA_LAYER_MAXPOOL ? LCA_SPEC_MAXPOOL : LCA_SPEC_AVGPOOL;
        if (L->kind == LCA_LAYER_AVGPOOL && L->k == L->in_h && L->k == L->in_w && L->stride == 1)
            out->kind = LCA_SPEC_GAP;
        else {
            out->kernel = L->k;
            out->stride = L->stride;
        }
        break;
    case LCA_LAYER_BATCHNORM: out->kind = LCA_SPEC_BATCHNORM; break;
    case LCA_LAYER_DROPOUT:
        out->kind = LCA_SPEC_DROPOUT;
        out->probability = (double)L->p;
        break;
    case LCA_LAYER_FLATTEN: out->kind = LCA_SPEC_FLATTEN; break;
    case LCA_LAYER_BLOCK_ADD: /* never first: a block starts with its begin layer */
        out->kind = LCA_SPEC_BLOCK;
        break;
    case LCA_LAYER_BLOCK_BEGIN: {
        /* the block's first conv follows; skip to past the relu after its
         * add */
        out->kind = LCA_SPEC_BLOCK;
        const lca_layer *first = &m->layers[*l];
        out->units = first->conv.oc;
        out->stride = first->conv.stride;
        while (*l < m->layer_count && m->layers[*l].kind != LCA_LAYER_BLOCK_ADD) (*l)++;
        if (*l < m->layer_count) (*l)++; /* the add */
        if (*l < m->layer_count && m->layers[*l].kind == LCA_LAYER_RELU) (*l)++;
        break;
    }
    }
}

size_t lca_model_layer_count(const lca_model *m) {
    size_t count = 1;
    lca_layer_spec layer;
    for (size_t l = 0; l < m->layer_count; count++) spec_layer_at(m, &l, &layer);
    return count;
}

lca_status lca_model_layer(const lca_model *m, size_t index, lca_layer_spec *out) {
    if (!m || !out) return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_model_layer: NULL argument");
    if (index == 0) {
        *out = (lca_layer_spec){.kind = LCA_SPEC_INPUT, .units = m->in_c, .height = m->in_h,
                                .width = m->in_w, .stride = 1};
        return LCA_OK;
    }
    size_t l = 0, i = 1;
    while (l < m->layer_count) {
        spec_layer_at(m, &l, out);
        if (i++ == index) return LCA_OK;
    }
    return lca_fail(LCA_ERR_INVALID_ARGUMENT, "lca_model_layer: index %zu, the model has %zu layers",
                    index, i);
}
