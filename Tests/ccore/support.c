/* support.c: checks, a local random generator and the float64 reference
 * MLP shared by the C tests (see support.h). */
#include "support.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ------------------------------------------------------------- checks */

static const char *current_test = "test";
static int checks_passed;
static int checks_failed;

void test_begin(const char *name) {
    current_test = name;
    printf("%s: lca %s, threads %s, %d thread(s), GEMM kernel %s\n", name, LCA_VERSION_STRING,
           lca_thread_backend(), lca_threads(), lca_gemm_kernel_name());
    fflush(stdout);
}

int test_size(int normal, int small) {
    const char *v = getenv("LCA_TEST_SMALL");
    return v && strcmp(v, "1") == 0 ? small : normal;
}

int test_finish(void) {
    printf("%s: %d checks passed, %d failed: %s\n", current_test, checks_passed, checks_failed,
           checks_failed ? "FAIL" : "PASS");
    fflush(stdout);
    return checks_failed ? 1 : 0;
}

int test_failure_count(void) { return checks_failed; }

static bool record(bool passed) {
    if (passed) checks_passed++;
    else checks_failed++;
    return passed;
}

bool check_le(const char *what, double worst, double tolerance) {
    bool passed = worst <= tolerance; /* false for NaN */
    printf("%s %s: worst %.3e <= tolerance %.3e\n", passed ? "ok  " : "FAIL", what, worst,
           tolerance);
    fflush(stdout);
    return record(passed);
}

bool check_range(const char *what, double value, double low, double high) {
    bool passed = value >= low && value <= high;
    printf("%s %s: %.6g in [%.6g, %.6g]\n", passed ? "ok  " : "FAIL", what, value, low, high);
    fflush(stdout);
    return record(passed);
}

bool check_true(bool condition, const char *what, const char *detail_format, ...) {
    printf("%s %s: ", condition ? "ok  " : "FAIL", what);
    va_list args;
    va_start(args, detail_format);
    vprintf(detail_format, args);
    va_end(args);
    printf("\n");
    fflush(stdout);
    return record(condition);
}

void test_fail(const char *format, ...) {
    printf("FAIL ");
    va_list args;
    va_start(args, format);
    vprintf(format, args);
    va_end(args);
    printf("\n");
    fflush(stdout);
    record(false);
}

void test_abort_status(const char *call, lca_status status, const char *file, int line) {
    printf("FAIL %s:%d: %s returned %d (%s): %s\n", file, line, call, (int)status,
           lca_status_string(status), lca_last_error());
    checks_failed++;
    test_finish();
    exit(1);
}

void *test_alloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        printf("FAIL out of memory allocating %zu bytes\n", bytes);
        checks_failed++;
        test_finish();
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------- random */

/* SplitMix64 (Steele, Lea, Flood 2014): enough for test data, and unrelated
 * to the core's xoshiro256** so that no test reuses the core's streams. */
void test_rng_seed(test_rng *rng, uint64_t seed) { rng->state = seed ^ 0x5DEECE66DULL; }

uint64_t test_rng_next(test_rng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double test_rng_uniform(test_rng *rng) { return (double)(test_rng_next(rng) >> 11) * 0x1.0p-53; }

double test_rng_normal(test_rng *rng) {
    double u1 = test_rng_uniform(rng), u2 = test_rng_uniform(rng);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t test_rng_below(test_rng *rng, uint64_t bound) { return test_rng_next(rng) % bound; }

void test_fill_uniform(float *out, size_t count, test_rng *rng, double low, double high) {
    for (size_t i = 0; i < count; i++) out[i] = (float)(low + (high - low) * test_rng_uniform(rng));
}

void test_fill_normal(float *out, size_t count, test_rng *rng, double deviation) {
    for (size_t i = 0; i < count; i++) out[i] = (float)(deviation * test_rng_normal(rng));
}

void test_fill_labels(int32_t *out, size_t count, test_rng *rng, int classes) {
    for (size_t i = 0; i < count; i++) out[i] = (int32_t)test_rng_below(rng, (uint64_t)classes);
}

/* ---------------------------------------------------- reference model */

bool ref_mlp_from_model(ref_mlp *ref, const lca_model *model) {
    memset(ref, 0, sizeof *ref);
    ref->loss = lca_model_loss(model);
    const char *spec = lca_model_spec(model);
    const char *p = spec;
    int widths = 0;
    while (*p) {
        char *end;
        unsigned long width = strtoul(p, &end, 10);
        if (end == p || width == 0 || widths > REF_MAX_LAYERS) {
            test_fail("reference: cannot parse the model spec \"%s\" as widths joined by '-'", spec);
            return false;
        }
        ref->sizes[widths++] = width;
        p = end;
        if (*p == '-') p++;
    }
    ref->layers = widths - 1;
    if (ref->layers < 1) {
        test_fail("reference: spec \"%s\" has fewer than two widths", spec);
        return false;
    }
    if (lca_model_tensor_count(model) != (size_t)(2 * ref->layers)) {
        test_fail("reference: model \"%s\" has %zu tensors, expected %d (weight and bias per layer)",
                  spec, lca_model_tensor_count(model), 2 * ref->layers);
        return false;
    }
    size_t total = 0;
    for (int l = 0; l < ref->layers; l++) {
        size_t in = ref->sizes[l], out = ref->sizes[l + 1];
        for (int kind = 0; kind < 2; kind++) {
            char name[32];
            snprintf(name, sizeof name, "fc%d.%s", l + 1, kind == 0 ? "weight" : "bias");
            long index = lca_model_find_tensor(model, name);
            lca_tensor_info info;
            if (index < 0 || lca_model_tensor(model, (size_t)index, &info) != LCA_OK) {
                test_fail("reference: model \"%s\" has no tensor \"%s\"", spec, name);
                return false;
            }
            bool shape_ok = kind == 0 ? info.rank == 2 && info.shape[0] == (int64_t)out &&
                                            info.shape[1] == (int64_t)in && info.count == out * in
                                      : info.rank == 1 && info.shape[0] == (int64_t)out &&
                                            info.count == out;
            if (!shape_ok || strcmp(info.name, name) != 0) {
                test_fail("reference: tensor \"%s\" of \"%s\" has rank %d, shape (%lld, %lld), "
                          "count %zu; expected %s (%zu%s%zu)",
                          name, spec, info.rank, (long long)info.shape[0],
                          (long long)(info.rank > 1 ? info.shape[1] : 0), info.count,
                          kind == 0 ? "weight" : "bias", out, kind == 0 ? ", " : "",
                          kind == 0 ? in : (size_t)0);
                return false;
            }
            if (kind == 0) ref->weight_offset[l] = info.offset;
            else ref->bias_offset[l] = info.offset;
            total += info.count;
        }
    }
    ref->parameter_count = total;
    if (total != lca_model_parameter_count(model)) {
        test_fail("reference: tensors of \"%s\" hold %zu parameters, the model reports %zu",
                  spec, total, lca_model_parameter_count(model));
        return false;
    }
    /* Tensors must tile [0, K) without overlap: check every element is owned
     * by exactly one tensor. */
    unsigned char *owned = test_alloc(total);
    for (size_t t = 0; t < lca_model_tensor_count(model); t++) {
        lca_tensor_info info;
        if (lca_model_tensor(model, t, &info) != LCA_OK || info.offset + info.count > total) {
            test_fail("reference: tensor %zu of \"%s\" lies outside the parameter array", t, spec);
            free(owned);
            return false;
        }
        for (size_t i = 0; i < info.count; i++) owned[info.offset + i]++;
    }
    for (size_t i = 0; i < total; i++) {
        if (owned[i] != 1) {
            test_fail("reference: parameter %zu of \"%s\" belongs to %d tensors", i, spec, owned[i]);
            free(owned);
            return false;
        }
    }
    free(owned);
    return true;
}

double ref_mlp_loss(const ref_mlp *ref, const double *p, const float *x,
                    const int32_t *labels, const float *targets, size_t n,
                    double *gradient, double *min_abs_preactivation, double *max_abs_logit) {
    int L = ref->layers;
    /* a[l]: input of layer l (N × sizes[l]); a[0] = x; z[l]: its output
     * before ReLU (N × sizes[l+1]). */
    double *a[REF_MAX_LAYERS + 1];
    double *z[REF_MAX_LAYERS];
    for (int l = 0; l <= L; l++) a[l] = test_alloc(sizeof(double) * n * ref->sizes[l]);
    for (int l = 0; l < L; l++) z[l] = test_alloc(sizeof(double) * n * ref->sizes[l + 1]);
    for (size_t i = 0; i < n * ref->sizes[0]; i++) a[0][i] = x[i];

    double min_pre = INFINITY;
    for (int l = 0; l < L; l++) {
        size_t I = ref->sizes[l], O = ref->sizes[l + 1];
        const double *W = p + ref->weight_offset[l], *b = p + ref->bias_offset[l];
        for (size_t e = 0; e < n; e++) {
            for (size_t o = 0; o < O; o++) {
                double sum = b[o];
                for (size_t i = 0; i < I; i++) sum += a[l][e * I + i] * W[o * I + i];
                z[l][e * O + o] = sum;
                bool hidden = l < L - 1;
                if (hidden && fabs(sum) < min_pre) min_pre = fabs(sum);
                a[l + 1][e * O + o] = hidden ? (sum > 0 ? sum : 0) : sum;
            }
        }
    }
    size_t O = ref->sizes[L];
    const double *y = a[L];
    double max_logit = 0;
    for (size_t i = 0; i < n * O; i++) max_logit = fmax(max_logit, fabs(y[i]));

    /* dy: gradient of the mean loss with respect to the outputs. */
    double *dy = test_alloc(sizeof(double) * n * O);
    double loss = 0;
    if (ref->loss == LCA_LOSS_SOFTMAX_CROSS_ENTROPY) {
        for (size_t e = 0; e < n; e++) {
            const double *ye = y + e * O;
            double m = ye[0];
            for (size_t o = 1; o < O; o++) m = fmax(m, ye[o]);
            double s = 0;
            for (size_t o = 0; o < O; o++) s += exp(ye[o] - m);
            double log_sum = m + log(s);
            loss += log_sum - ye[labels[e]];
            for (size_t o = 0; o < O; o++)
                dy[e * O + o] = (exp(ye[o] - log_sum) - (o == (size_t)labels[e] ? 1.0 : 0.0)) / n;
        }
        loss /= (double)n;
    } else {
        for (size_t e = 0; e < n; e++) {
            for (size_t o = 0; o < O; o++) {
                double t = targets ? targets[e * O + o] : (o == (size_t)labels[e] ? 1.0 : 0.0);
                double d = y[e * O + o] - t;
                loss += d * d;
                dy[e * O + o] = 2.0 * d / ((double)n * (double)O);
            }
        }
        loss /= (double)n * (double)O;
    }

    if (gradient) {
        memset(gradient, 0, sizeof(double) * ref->parameter_count);
        double *dz = dy; /* the last layer has no ReLU */
        for (int l = L - 1; l >= 0; l--) {
            size_t I = ref->sizes[l], Ol = ref->sizes[l + 1];
            const double *W = p + ref->weight_offset[l];
            double *dW = gradient + ref->weight_offset[l], *db = gradient + ref->bias_offset[l];
            /* z = a·Wᵀ + b  →  dW += dzᵀ·a, db += Σ_e dz, da = dz·W */
            for (size_t e = 0; e < n; e++) {
                for (size_t o = 0; o < Ol; o++) {
                    double d = dz[e * Ol + o];
                    db[o] += d;
                    for (size_t i = 0; i < I; i++) dW[o * I + i] += d * a[l][e * I + i];
                }
            }
            if (l == 0) break;
            double *dprev = test_alloc(sizeof(double) * n * I);
            for (size_t e = 0; e < n; e++) {
                for (size_t i = 0; i < I; i++) {
                    double s = 0;
                    for (size_t o = 0; o < Ol; o++) s += dz[e * Ol + o] * W[o * I + i];
                    /* a = relu(z_prev) → dz_prev = da · [z_prev > 0] */
                    dprev[e * I + i] = z[l - 1][e * I + i] > 0 ? s : 0;
                }
            }
            if (dz != dy) free(dz);
            dz = dprev;
        }
        if (dz != dy) free(dz);
    }
    free(dy);
    for (int l = 0; l <= L; l++) free(a[l]);
    for (int l = 0; l < L; l++) free(z[l]);
    if (min_abs_preactivation) *min_abs_preactivation = min_pre;
    if (max_abs_logit) *max_abs_logit = max_logit;
    return loss;
}

void ref_mlp_outputs(const ref_mlp *ref, const double *p, const float *x, size_t n, double *y) {
    /* A second, plain forward loop (one example at a time) rather than a
     * call into ref_mlp_loss, so the two reference paths check each other
     * through the tests that use both. */
    size_t widest = 0;
    for (int l = 0; l <= ref->layers; l++) if (ref->sizes[l] > widest) widest = ref->sizes[l];
    double *in = test_alloc(sizeof(double) * widest), *out = test_alloc(sizeof(double) * widest);
    for (size_t e = 0; e < n; e++) {
        for (size_t i = 0; i < ref->sizes[0]; i++) in[i] = x[e * ref->sizes[0] + i];
        for (int l = 0; l < ref->layers; l++) {
            size_t I = ref->sizes[l], O = ref->sizes[l + 1];
            for (size_t o = 0; o < O; o++) {
                double s = p[ref->bias_offset[l] + o];
                for (size_t i = 0; i < I; i++) s += p[ref->weight_offset[l] + o * I + i] * in[i];
                out[o] = (l < ref->layers - 1 && s < 0) ? 0 : s;
            }
            double *swap = in; in = out; out = swap;
        }
        for (size_t o = 0; o < ref->sizes[ref->layers]; o++)
            y[e * ref->sizes[ref->layers] + o] = in[o];
    }
    free(in);
    free(out);
}

double ref_simpson_lca(const ref_mlp *ref, const float *from, const float *to,
                       const float *x, const int32_t *labels, const float *targets,
                       size_t n, unsigned subintervals, double *per_parameter,
                       double *loss_from, double *loss_to) {
    size_t K = ref->parameter_count;
    double *theta = test_alloc(sizeof(double) * K);
    double *g = test_alloc(sizeof(double) * K);
    double *mean = test_alloc(sizeof(double) * K);
    for (unsigned k = 0; k <= subintervals; k++) {
        double s = (double)k / subintervals;
        for (size_t i = 0; i < K; i++)
            theta[i] = (double)from[i] + s * ((double)to[i] - (double)from[i]);
        double loss = ref_mlp_loss(ref, theta, x, labels, targets, n, g, NULL, NULL);
        if (k == 0 && loss_from) *loss_from = loss;
        if (k == subintervals && loss_to) *loss_to = loss;
        /* composite Simpson weights [1, 4, 2, 4, …, 2, 4, 1] / (3n) */
        double w = (k == 0 || k == subintervals) ? 1.0 : (k % 2 ? 4.0 : 2.0);
        w /= 3.0 * subintervals;
        for (size_t i = 0; i < K; i++) mean[i] += w * g[i];
    }
    double total = 0;
    for (size_t i = 0; i < K; i++) {
        double lca = ((double)to[i] - (double)from[i]) * mean[i];
        if (per_parameter) per_parameter[i] = lca;
        total += lca;
    }
    free(theta);
    free(g);
    free(mean);
    return total;
}

/* --------------------------------------------------------------- misc */

void test_to_double(double *out, const float *in, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = in[i];
}

double test_max_abs_diff(const double *a, const double *b, size_t count) {
    double worst = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= worst)) worst = d; /* propagates NaN */
    }
    return worst;
}

double test_max_abs(const double *a, size_t count) {
    double worst = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs(a[i]);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

void test_gather_all(const lca_dataset *data, size_t outputs, float **x, int32_t **labels,
                     float **targets) {
    size_t n = lca_dataset_count(data), features = lca_dataset_features(data);
    uint32_t *indices = test_alloc(sizeof(uint32_t) * n);
    for (size_t i = 0; i < n; i++) indices[i] = (uint32_t)i;
    *x = test_alloc(sizeof(float) * n * features);
    int32_t *l = NULL;
    float *t = NULL;
    if (outputs) t = test_alloc(sizeof(float) * n * outputs);
    else l = test_alloc(sizeof(int32_t) * n);
    lca_dataset_gather(data, indices, n, *x, l, t);
    if (labels) *labels = l;
    else free(l);
    if (targets) *targets = t;
    else free(t);
    free(indices);
}

uint8_t *test_gzip(const uint8_t *in, size_t n, size_t *out_n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) exit(2);
    size_t capacity = deflateBound(&z, n) + 64;
    uint8_t *out = test_alloc(capacity);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)capacity;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) exit(2);
    *out_n = z.total_out;
    deflateEnd(&z);
    return out;
}

/* ---- files */

static char temp_dir[64];

const char *test_temp_dir_make(const char *prefix) {
    snprintf(temp_dir, sizeof temp_dir, "/tmp/lca-%s-XXXXXX", prefix);
    if (!mkdtemp(temp_dir)) {
        printf("cannot create a temporary folder: %s\n", strerror(errno));
        exit(2);
    }
    return temp_dir;
}

const char *test_temp_dir(void) { return temp_dir; }

const char *test_temp_path(const char *name) {
    static char paths[8][512];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, sizeof paths[0], "%s/%s", temp_dir, name);
    return path;
}

void test_write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f) != 0) {
        printf("cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

uint8_t *test_read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc(size > 0 ? (size_t)size + 1 : 1);
    *n = fread(bytes, 1, size > 0 ? (size_t)size : 0, f);
    fclose(f);
    return bytes;
}

lca_dataset *test_digits_subset(uint32_t n) {
    lca_dataset *digits;
    REQUIRE_OK(lca_dataset_open(&digits, "digits", NULL));
    uint32_t *indices = test_alloc(n * sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++) indices[i] = i;
    float *x = test_alloc((size_t)n * 64 * sizeof(float));
    int32_t *labels = test_alloc(n * sizeof(int32_t));
    lca_dataset_gather(digits, indices, n, x, labels, NULL);
    uint8_t *pixels = test_alloc((size_t)n * 64);
    for (size_t i = 0; i < (size_t)n * 64; i++) pixels[i] = (uint8_t)lrintf(x[i] * 255.0f);
    lca_dataset *data;
    REQUIRE_OK(lca_dataset_from_arrays(&data, pixels, labels, n, 64, 10));
    lca_dataset_free(digits);
    free(indices);
    free(x);
    free(labels);
    free(pixels);
    return data;
}
