/*
 * support.h: helpers shared by the C tests of the core.
 *
 * - Checks that print what they compared, the worst difference and the
 *   tolerance, and count failures; a test's main ends with
 *   `return test_finish();`, which is non-zero when any check failed.
 * - A local random generator (SplitMix64), independent of the core's, for
 *   making test data.
 * - A reference MLP in float64, written from the definitions in
 *   docs/method.md and lca.h, not from the core: dense layers
 *   y = x·Wᵀ + b with ReLU between them, mean softmax cross-entropy
 *   (stable) or mean squared error, and its exact gradient by backprop.
 *   It reads the core's flat parameter layout only through the public
 *   tensor table (names "fc1.weight", "fc1.bias", …), so a layout bug in
 *   the core shows up as a mismatch rather than being copied.
 *
 * Dimension letters: N examples, I input width, O output width,
 * K parameters, L dense layers.
 */
#ifndef LCA_TEST_SUPPORT_H
#define LCA_TEST_SUPPORT_H

#include <lca.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- checks */

/* Print the test's name; call first in main. */
void test_begin(const char *name);
/* Print the summary; returns the exit status (0 = every check passed). */
int test_finish(void);
/* Number of failed checks so far. */
int test_failure_count(void);
/* small when LCA_TEST_SMALL=1 (make asan and make leaks set it: the
 * sanitizers make the heavy tests minutes long), else normal. Only for
 * counts such as iterations that repeat code paths already run. */
int test_size(int normal, int small);

/* Pass when worst <= tolerance (NaN fails). Prints
 * "ok   what: worst 1.2e-07 <= tolerance 1.0e-04". */
bool check_le(const char *what, double worst, double tolerance);
/* Pass when low <= value <= high. */
bool check_range(const char *what, double value, double low, double high);
/* Pass when condition holds; detail is printf-like and says what was seen. */
bool check_true(bool condition, const char *what, const char *detail_format, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Record a failure without a comparison (e.g. a call failed). */
void test_fail(const char *format, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* A core call that must succeed: on failure print the status and the
 * core's message and end the test with exit status 1 (the remaining checks
 * would only repeat the failure). */
#define REQUIRE_OK(call)                                                          \
    do {                                                                          \
        lca_status require_status_ = (call);                                      \
        if (require_status_ != LCA_OK) test_abort_status(#call, require_status_, \
                                                         __FILE__, __LINE__);     \
    } while (0)
void test_abort_status(const char *call, lca_status status, const char *file, int line);

/* ------------------------------------------------------------- random */

typedef struct test_rng { uint64_t state; } test_rng;
void test_rng_seed(test_rng *rng, uint64_t seed);
uint64_t test_rng_next(test_rng *rng);
double test_rng_uniform(test_rng *rng);           /* [0, 1) */
double test_rng_normal(test_rng *rng);            /* standard normal */
uint64_t test_rng_below(test_rng *rng, uint64_t bound);
void test_fill_uniform(float *out, size_t count, test_rng *rng, double low, double high);
void test_fill_normal(float *out, size_t count, test_rng *rng, double deviation);
void test_fill_labels(int32_t *out, size_t count, test_rng *rng, int classes);

/* ---------------------------------------------------- reference model */

#define REF_MAX_LAYERS 8

typedef struct ref_mlp {
    int layers;                          /* L dense layers */
    size_t sizes[REF_MAX_LAYERS + 1];    /* widths: sizes[0] = I, sizes[L] = O */
    size_t weight_offset[REF_MAX_LAYERS];/* fc{l+1}.weight (out, in) in the flat array */
    size_t bias_offset[REF_MAX_LAYERS];  /* fc{l+1}.bias (out) */
    size_t parameter_count;              /* K */
    lca_loss_kind loss;
} ref_mlp;

/* Parse the model's spec and find its tensors by name, checking every
 * shape, offset and the total count. Records a failure and returns false
 * if the core's tensor table does not describe the documented layout. */
bool ref_mlp_from_model(ref_mlp *ref, const lca_model *model);

/* Mean loss in float64 at parameters p (K) on n examples x (N × I).
 * Cross-entropy uses labels; MSE uses targets (N × O) or, when targets is
 * NULL, one-hot labels. If gradient is not NULL it receives the exact
 * gradient of the mean loss (K), overwriting it. If min_abs_preactivation
 * is not NULL it receives the smallest |pre-activation| of any ReLU unit
 * (the distance to a kink; +inf for a linear model), and max_abs_logit the
 * largest |output|. */
double ref_mlp_loss(const ref_mlp *ref, const double *p, const float *x,
                    const int32_t *labels, const float *targets, size_t n,
                    double *gradient, double *min_abs_preactivation, double *max_abs_logit);

/* The outputs y (N × O) of the reference at parameters p. */
void ref_mlp_outputs(const ref_mlp *ref, const double *p, const float *x, size_t n, double *y);

/* Simpson LCA in float64 of the straight step from → to (float32 vectors
 * of K, as the core holds them) with `subintervals` (even) sub-intervals.
 * per_parameter (K, may be NULL) receives Δθ_i·ḡ_i. Returns Σ_i LCA_i;
 * loss_from / loss_to (may be NULL) receive L(from), L(to). */
double ref_simpson_lca(const ref_mlp *ref, const float *from, const float *to,
                       const float *x, const int32_t *labels, const float *targets,
                       size_t n, unsigned subintervals, double *per_parameter,
                       double *loss_from, double *loss_to);

/* --------------------------------------------------------------- misc */

/* Copy a float32 vector to float64. */
void test_to_double(double *out, const float *in, size_t count);
/* max_i |a_i − b_i| and max_i |b_i|. */
double test_max_abs_diff(const double *a, const double *b, size_t count);
double test_max_abs(const double *a, size_t count);
/* Every example of data, in order, as float32 (malloc'ed; free with free).
 * outputs: targets per example for regression data, 0 for labelled data
 * (then *targets is set to NULL; for regression data *labels is NULL). */
void test_gather_all(const lca_dataset *data, size_t outputs, float **x, int32_t **labels,
                     float **targets);
/* Allocate or end the test. */
void *test_alloc(size_t bytes);
/* The first n embedded 8×8 digits as a uint8 data set of their own (pixels
 * rounded back from the gathered floats; 10 classes); free with
 * lca_dataset_free. Ends the test on failure. */
lca_dataset *test_digits_subset(uint32_t n);
/* in[0 … n) gzip-compressed as one member (test_alloc'ed; *out_n bytes). */
uint8_t *test_gzip(const uint8_t *in, size_t n, size_t *out_n);
/* ---- files: one temporary folder per test program. test_temp_dir_make
 * creates /tmp/lca-<prefix>-XXXXXX (exit 2 if it cannot); test_temp_path
 * names a file in it (eight rotating buffers, so a few paths can be held at
 * once); test_write_bytes writes a whole file (exit 2 on failure);
 * test_read_bytes reads one into a malloc'ed buffer with one spare byte
 * (NULL if it cannot be opened). */
const char *test_temp_dir_make(const char *prefix);
const char *test_temp_dir(void);
const char *test_temp_path(const char *name);
void test_write_bytes(const char *path, const void *bytes, size_t n);
uint8_t *test_read_bytes(const char *path, size_t *n);

#endif /* LCA_TEST_SUPPORT_H */
