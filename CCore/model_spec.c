/* model_spec.c: the model spec language (docs/models.md), from text to a
 * list of layer requests: the built-in names, widths joined by '-', and
 * layer lists, with the canonical form a model keeps. Separate from the
 * layout (model.c) because it knows only the text: no shapes, tensors or
 * memory, so a description of the spec's layers belongs here too.
 *
 * Spec syntax (docs/models.md):
 *   "fc"                       the paper's 784-100-50-10 MLP
 *   "lenet", "resnet20"        the paper's conv nets
 *   "784-100-50-10"            an MLP: dense layers with ReLU between
 *   "input(1,28,28) conv(20,5) relu maxpool(2) dense(10)"   a layer list */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 100000000ul

static const char *const FC_SPEC = "784-100-50-10";
static const char *const LENET_SPEC =
    "input(1,28,28) conv(20,5) relu maxpool(2) conv(40,5) relu maxpool(2) dropout(0.25) "
    "dense(400) relu dropout(0.5) dense(10)";
static const char *const RESNET20_SPEC =
    "input(3,32,32) conv(16,3) bn relu block(16) block(16) block(16) block(32,stride=2) "
    "block(32) block(32) block(64,stride=2) block(64) block(64) gap dense(10)";

static lca_status parse_error(const lca_spec *ps, const char *at, const char *what) {
    return lca_fail(LCA_ERR_INVALID_ARGUMENT, "model spec \"%s\": character %zu: %s", ps->text,
                    (size_t)(at - ps->text) + 1, what);
}

static lca_status push(lca_spec *ps, const char *at, lca_layer_request r) {
    if (ps->count == LCA_MAX_LAYERS) return parse_error(ps, at, "more than 256 layers");
    ps->layers[ps->count++] = r;
    return LCA_OK;
}

/* A positive integer at *p. */
static lca_status parse_size(lca_spec *ps, const char **p, size_t *out) {
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
static lca_status parse_dashes(lca_spec *ps) {
    size_t widths[LCA_MAX_LAYERS], lengths[LCA_MAX_LAYERS], n = 0;
    const char *starts[LCA_MAX_LAYERS];
    const char *p = ps->text;
    for (;;) {
        if (n == LCA_MAX_LAYERS) return parse_error(ps, p, "more than 256 layers");
        starts[n] = p;
        lca_status status = parse_size(ps, &p, &widths[n]);
        if (status != LCA_OK) return status;
        lengths[n] = (size_t)(p - starts[n]);
        n++;
        if (*p == '\0') break;
        if (*p != '-') return parse_error(ps, p, "expected '-' between widths");
        p++;
    }
    if (n < 2)
        return lca_fail(LCA_ERR_INVALID_ARGUMENT,
                        "model spec \"%s\": needs at least an input and an output width "
                        "(e.g. \"64-10\"), or a name (fc, lenet, resnet20)",
                        ps->text);
    ps->have_input = true;
    ps->input[0] = widths[0];
    ps->input[1] = ps->input[2] = 1;
    for (size_t i = 1; i < n; i++) {
        lca_status status = push(ps, p, (lca_layer_request){.kind = LCA_LAYER_DENSE, .units = widths[i],
                                                            .text = starts[i], .text_length = lengths[i],
                                                            .position = i});
        if (status == LCA_OK && i + 1 < n) status = push(ps, p, (lca_layer_request){.kind = LCA_LAYER_RELU});
        if (status != LCA_OK) return status;
    }
    return LCA_OK;
}

/* Arguments of name(...): numbers, key=value, or words. */
typedef struct arguments {
    size_t count;
    char text[8][32];
} arguments;

static lca_status parse_arguments(lca_spec *ps, const char **p, arguments *args) {
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
static lca_status parse_layers(lca_spec *ps) {
    const char *p = ps->text;
    size_t position = 0;
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
        lca_layer_request r = {.stride = 1, .text = start, .text_length = (size_t)(p - start)};
        if (strcmp(name, "input") != 0) r.position = ++position;
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
            lca_layer_request expansion[] = {
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
                expansion[i].text = r.text;
                expansion[i].text_length = r.text_length;
                expansion[i].position = r.position;
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

const char *lca_spec_expand(const char *spec) {
    return strcmp(spec, "fc") == 0         ? FC_SPEC
           : strcmp(spec, "lenet") == 0    ? LENET_SPEC
           : strcmp(spec, "resnet20") == 0 ? RESNET20_SPEC
                                           : spec;
}

const char *lca_spec_canonical(const char *spec) {
    /* the built-in name, or the text as given */
    return strcmp(spec, "fc") == 0 ? FC_SPEC : spec;
}

lca_status lca_spec_parse(lca_spec *ps, const char *spec) {
    memset(ps, 0, sizeof *ps);
    ps->text = lca_spec_expand(spec);
    return isdigit((unsigned char)ps->text[0]) ? parse_dashes(ps) : parse_layers(ps);
}
