/*
 * lca.h: the one public header of the lca core.
 *
 * The core trains small neural networks in float32 and measures Loss Change
 * Allocation (LCA; Lan, Liu, Zhou, Yosinski, NeurIPS 2019) while they train.
 * For every iteration t it splits the change of the loss on a fixed
 * evaluation set, L(θ_{t+1}) − L(θ_t), into one term per parameter:
 *
 *     LCA_{t,i} = Δθ_{t,i} · ḡ_{t,i},   ḡ_t ≈ ∫_0^1 ∇L(θ_t + s·Δθ_t) ds
 *
 * integrated with composite Simpson's rule and refined (2 → 4 → … → 32
 * sub-intervals) until |residual| ≤ threshold. Negative LCA = the parameter
 * helped. The integrator streams: it keeps a handful of parameter-sized
 * vectors and produces one small record per iteration.
 *
 * Tutorial
 * --------
 * 1. Build a model from a spec ("fc", "lenet", "resnet20", "784-100-50-10"
 *    or a layer list, docs/models.md): lca_model_new. Parameters live in
 *    one float array in tensor order; lca_model_tensor describes each
 *    tensor (PyTorch names: "fc1.weight" of shape (out, in), "conv1.weight"
 *    of shape (out, in, kh, kw)).
 * 2. Open a data set (uint8 pixels scaled to [0, 1] on use, integer labels):
 *    lca_dataset_open("digits" | "fashion-mnist" | "cifar10" | an IDX or
 *    CIFAR-10 folder | an IDX images file | a CIFAR-10 .bin file).
 * 3. Fill an lca_config (start from lca_config_default()) and create a
 *    trainer. The trainer owns every buffer it will need; lca_trainer_step
 *    allocates nothing.
 * 4. Open an lca_log (file or stdout) and attach it with
 *    lca_trainer_set_log: then each lca_trainer_step writes its record to
 *    the log from the core's own arrays. The step also fills an lca_record
 *    (per-tensor LCA sums, help/hurt counts, losses, residual) to read.
 * 5. Every fallible call returns an lca_status. lca_status_string names the
 *    kind of failure; lca_last_error gives the detailed message of the last
 *    failure on the calling thread (file, byte offset, what was expected).
 *    The library never prints, exits or aborts.
 * Beyond a run: lca_attribute allocates one step between two parameter
 * vectors (two checkpoints); lca_evaluator computes the evaluation-set
 * loss and gradient exactly as the integrator does.
 *
 * Where each section of this header is implemented (CCore/, one concern a
 * file): model: model_spec.c (the spec language), model.c (layout,
 * tensors, unit groups, workspace), pass.c (the forward/backward pass),
 * layers_dense.c, layers_conv.c, layers_pool.c, layers_norm.c, layers.c
 * (the layer kernels), loss.c (the losses), gemm*.c (the matrix product);
 * dataset: data.c, data_digits.c, pixels.c; trainer: trainer.c; LCA:
 * integrator.c, evaluator.c, attribution.c; log: log.c; checkpoints:
 * checkpoint.c, safetensors.c; JSON text: json.c; threads: threads.c;
 * random: rng.c; status: status.c.
 *
 * Complete example (error handling shortened to a macro):
 *
 *     #include <lca.h>
 *     #include <stdio.h>
 *     #define TRY(x) do { lca_status s_ = (x); if (s_ != LCA_OK) { \
 *         fprintf(stderr, "%s\n", lca_last_error()); return 1; } } while (0)
 *
 *     int main(void) {
 *         lca_model *model; lca_dataset *data; lca_trainer *trainer;
 *         lca_log *log; lca_record record;
 *         TRY(lca_model_new(&model, "64-32-10", LCA_LOSS_SOFTMAX_CROSS_ENTROPY));
 *         TRY(lca_dataset_open(&data, "digits", NULL));
 *         lca_config config = lca_config_default();
 *         config.iterations = 100;
 *         config.batch_size = 64;
 *         lca_model_initialize(model, config.seed);
 *         TRY(lca_trainer_new(&trainer, model, data, &config));
 *         TRY(lca_log_open(&log, "run.lcalog", trainer));
 *         TRY(lca_trainer_set_log(trainer, log));
 *         for (uint64_t t = 0; t < config.iterations; t++) {
 *             TRY(lca_trainer_step(trainer, &record));
 *             printf("%llu loss %.4f lca %.5f residual %.2e\n",
 *                    (unsigned long long)record.iteration,
 *                    record.train.loss_after, record.train.lca_total,
 *                    record.train.residual);
 *         }
 *         TRY(lca_log_close(log));
 *         lca_trainer_free(trainer); lca_dataset_free(data); lca_model_free(model);
 *         return 0;
 *     }
 *
 * Conventions
 * -----------
 * - Tensors are float32, row-major. Sums of LCA are float64.
 * - Everything a run computes is a function of the config, the data and the
 *   seed: the same inputs give the same bytes at any thread count.
 * - Names with the prefix lca_ are public; enums only grow at the end.
 */
#ifndef LCA_H
#define LCA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LCA_VERSION_MAJOR 0
#define LCA_VERSION_MINOR 1
#define LCA_VERSION_PATCH 0
#define LCA_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ status */

typedef enum lca_status {
    LCA_OK = 0,
    LCA_ERR_INVALID_ARGUMENT = 1, /* a value outside its documented range */
    LCA_ERR_OUT_OF_MEMORY = 2,
    LCA_ERR_IO = 3,               /* open/read/write failed (errno in the message) */
    LCA_ERR_FORMAT = 4,           /* a file's bytes are not what its format says */
    LCA_ERR_MISMATCH = 5,         /* names, shapes or sizes do not fit the model or data */
    LCA_ERR_UNSUPPORTED = 6,      /* valid request this build cannot do */
    LCA_ERR_NUMERIC = 7,          /* a loss or gradient became NaN or infinite */
    LCA_ERR_STATE = 8,            /* a call made at the wrong time */
} lca_status;

/* A short constant phrase for a status ("format error"). */
const char *lca_status_string(lca_status status);
/* The detailed message of the last failing call on this thread, or "" if
 * there was none, whole whatever its length. Valid until the next failing
 * call on the same thread. */
const char *lca_last_error(void);

/* ---------------------------------------------------------------- threads */

/* The thread back end the core was built with: "openmp" (compiled with
 * -fopenmp) or "pthreads" (otherwise; a pool of POSIX threads). Both run
 * the same work split the same way and give the same bytes
 * (docs/threads.md). */
const char *lca_thread_backend(void);
/* Number of threads used by later calls; 0 (the default) = the first number
 * of OMP_NUM_THREADS if it is set, else the CPUs this process may run on.
 * Results do not depend on it. */
void lca_set_threads(int threads);
int lca_threads(void);
/* Data-parallel ranks (docs/mpi.md). Built with MPI (SwiftPM trait MPI,
 * make MPI=1; lca_rank_backend "mpi", else "none") and once the caller has
 * called MPI_Init, every evaluation pass is split over the ranks of
 * MPI_COMM_WORLD (accumulation unit u on rank u mod lca_rank_count) and
 * combined exactly: the results do not depend on the rank count. The
 * library never initialises, finalises or aborts MPI. Every rank must then
 * make the same calls in the same order (the training step is replicated).
 * Without MPI: rank 0 of 1. lca_rank_slowest_seconds: Σ over the passes so
 * far of the slowest rank's time in its units; lca_rank_own_seconds: this
 * rank's; lca_rank_slowest_cpu_seconds: Σ of the largest CPU time a rank's
 * process spent in each pass (its work, whatever else shares the cores);
 * lca_rank_passes: the passes counted. lca_rank_max: the largest value over the ranks, a collective (every
 * rank calls it at the same point; value itself without MPI). */
const char *lca_rank_backend(void);
int lca_rank(void);
int lca_rank_count(void);
double lca_rank_slowest_seconds(void);
double lca_rank_own_seconds(void);
double lca_rank_slowest_cpu_seconds(void);
uint64_t lca_rank_passes(void);
int lca_rank_max(int value);
/* The kernel family (matrix product and convolution) this process uses:
 * "avx512", "avx2" or "portable". By default the best this CPU runs; the
 * environment variable LCA_KERNEL=avx512|avx2|portable, read once per
 * process (at the first product), forces one (to measure or compare the
 * instruction sets on one machine). The two FMA families give the same
 * bits; portable C the same order of operations with separate roundings
 * where the compiler has no FMA. */
const char *lca_gemm_kernel_name(void);
/* LCA_OK when LCA_KERNEL is unset, empty or names a family this CPU runs;
 * else LCA_ERR_INVALID_ARGUMENT (not a family) or LCA_ERR_UNSUPPORTED (this
 * CPU cannot run it), with the reason in lca_last_error(). The core itself
 * then uses the automatic choice; programs call this first and refuse to
 * run (the lca CLI does), so that a mistyped value is never ignored. */
lca_status lca_kernel_check(void);

/* ---------------------------------------------------------------- random */

/* The documented generator: xoshiro256** seeded through SplitMix64.
 * lca_rng_seed(seed, stream) derives independent streams for parameter
 * initialisation, the validation split, the LCA subset and the per-epoch
 * shuffle (see LCA_STREAM_*). Normals come from the Box–Muller transform in
 * float64. */
typedef struct lca_rng { uint64_t s[4]; } lca_rng;
enum {
    LCA_STREAM_INIT = 1,
    LCA_STREAM_VALIDATION_SPLIT = 2,
    LCA_STREAM_LCA_SUBSET = 3,
    LCA_STREAM_SHUFFLE = 4, /* + epoch << 8 */
    LCA_STREAM_DROPOUT = 5,
};
void lca_rng_seed(lca_rng *rng, uint64_t seed, uint64_t stream);
uint64_t lca_rng_next(lca_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double lca_rng_uniform(lca_rng *rng);
/* Uniform integer in [0, bound), without modulo bias. bound > 0. */
uint64_t lca_rng_below(lca_rng *rng, uint64_t bound);
/* Standard normal. */
double lca_rng_normal(lca_rng *rng);

/* ----------------------------------------------------------------- model */

typedef enum lca_loss_kind {
    /* mean over examples of −log softmax(z)[label], computed stably */
    LCA_LOSS_SOFTMAX_CROSS_ENTROPY = 0,
    /* mean over examples and outputs of (y − target)²; as torch MSELoss.
     * Targets: the data set's float targets, or one-hot labels. */
    LCA_LOSS_MEAN_SQUARED_ERROR = 1,
} lca_loss_kind;

typedef struct lca_model lca_model;

/* "softmax_cross_entropy" or "mean_squared_error": the names used in logs
 * and checkpoint metadata. */
const char *lca_loss_name(lca_loss_kind loss);

#define LCA_MAX_RANK 4
typedef struct lca_tensor_info {
    const char *name;               /* "fc1.weight"; owned by the model */
    int rank;
    int64_t shape[LCA_MAX_RANK];    /* PyTorch order: dense weight (out, in) */
    size_t offset;                  /* first element in the flat parameter array */
    size_t count;                   /* number of elements */
} lca_tensor_info;

/* spec (docs/models.md): a built-in name, "fc" (the paper's 784-100-50-10
 * MLP, 84,060 parameters), "lenet" or "resnet20"; sizes joined by '-'
 * ("784-100-50-10": dense layers with ReLU between them and none after the
 * last; the first size is the input width, and two sizes, "64-10", make a
 * linear model); or a layer list ("input(1,28,28) conv(20,5) relu
 * maxpool(2) dense(10)": input, dense, conv, relu, maxpool, avgpool, gap,
 * bn, dropout, flatten, block). Every layer's output must be at least 1×1
 * (a kernel or window larger than its plane is LCA_ERR_INVALID_ARGUMENT
 * naming the layer's position, its text and the sizes); sizes whose
 * product overflows are refused likewise; parameters that cannot fit in the
 * memory available (docs/errors.md) are LCA_ERR_OUT_OF_MEMORY with the
 * bytes needed, before they are allocated. */
lca_status lca_model_new(lca_model **out, const char *spec, lca_loss_kind loss);
void lca_model_free(lca_model *model);
/* The spec in canonical form ("784-100-50-10"), owned by the model. */
const char *lca_model_spec(const lca_model *model);
lca_loss_kind lca_model_loss(const lca_model *model);
/* The spec-level layers of a model, as docs/models.md writes them: the
 * input first, then one entry per layer of the spec ("784-100-10" is
 * input(784) dense(100) relu dense(10); a residual block is one entry).
 * Built-in names ("fc", "lenet", "resnet20") give their expansion. The
 * layers describe the model as built, so pooling strides and conv padding
 * are resolved: maxpool(2) has stride 2, and an avgpool whose window is the
 * whole square plane with stride 1 is LCA_SPEC_GAP. */
typedef enum lca_spec_layer_kind {
    LCA_SPEC_INPUT = 0,   /* channels × height × width (input(F) is F × 1 × 1) */
    LCA_SPEC_DENSE,       /* units outputs (spelled dense or fc) */
    LCA_SPEC_CONV,        /* units channels, kernel, stride, valid or same padding */
    LCA_SPEC_RELU,
    LCA_SPEC_MAXPOOL,     /* kernel window, stride */
    LCA_SPEC_AVGPOOL,     /* kernel window, stride */
    LCA_SPEC_GAP,         /* global average pooling */
    LCA_SPEC_BATCHNORM,   /* bn */
    LCA_SPEC_DROPOUT,     /* probability */
    LCA_SPEC_FLATTEN,
    LCA_SPEC_BLOCK,       /* residual block: units channels, stride */
} lca_spec_layer_kind;
typedef struct lca_layer_spec {
    lca_spec_layer_kind kind;
    size_t units;         /* dense outputs; conv and block channels; input channels */
    size_t height, width; /* input only (1 × 1 for input(F)) */
    size_t kernel;        /* conv kernel; pooling window */
    size_t stride;        /* conv, pooling, block (1 otherwise) */
    int valid;            /* conv: 1 = valid padding, 0 = same */
    double probability;   /* dropout (the float the model holds) */
} lca_layer_spec;
/* Number of spec-level layers, the input included (so at least 2). */
size_t lca_model_layer_count(const lca_model *model);
/* Spec-level layer index (0 = the input) into *out. */
lca_status lca_model_layer(const lca_model *model, size_t index, lca_layer_spec *out);
size_t lca_model_input_size(const lca_model *model);
size_t lca_model_output_size(const lca_model *model);
size_t lca_model_parameter_count(const lca_model *model);
size_t lca_model_tensor_count(const lca_model *model);
lca_status lca_model_tensor(const lca_model *model, size_t index, lca_tensor_info *out);
/* Index of the tensor with this name, or -1. */
long lca_model_find_tensor(const lca_model *model, const char *name);
/* Per-unit views: the model's output units (neurons of a dense layer,
 * channels of a convolution) in groups, one group per layer ("fc1", 100
 * units). offset is the group's first entry in lca_view_record.unit_lca. */
typedef struct lca_unit_group_info {
    const char *name;               /* owned by the model */
    size_t units;
    size_t offset;
} lca_unit_group_info;
size_t lca_model_unit_count(const lca_model *model);
size_t lca_model_unit_group_count(const lca_model *model);
lca_status lca_model_unit_group(const lca_model *model, size_t index, lca_unit_group_info *out);
/* The flat parameter array (length lca_model_parameter_count). */
float *lca_model_parameters(lca_model *model);
const float *lca_model_parameters_const(const lca_model *model);
/* He-normal weights (std sqrt(2 / fan_in)), zero biases, from stream
 * LCA_STREAM_INIT of seed, tensors in order, elements row-major. */
void lca_model_initialize(lca_model *model, uint64_t seed);

/* Forward and backward on n examples with inputs x (n × input, float32)
 * and labels (or float targets, n × output, for MSE when labels is NULL).
 * Returns the mean loss in *loss. If gradient is not NULL it receives the
 * gradient of the mean loss (length parameter_count), overwriting it.
 * Evaluation mode: no dropout, batch norm in groups of 250 examples (the
 * default bn_group). Uses an internal workspace sized for up to max_batch
 * examples: call lca_model_reserve first. Offered for tests and tools; the
 * trainer and the integrator use the same pass. */
lca_status lca_model_reserve(lca_model *model, size_t max_batch);
lca_status lca_model_loss_and_gradient(lca_model *model, const float *parameters,
                                       const float *x, const int32_t *labels,
                                       const float *targets, size_t n,
                                       double *loss, float *gradient);

/* --------------------------------------------------------------- dataset */

typedef struct lca_dataset lca_dataset;

/* source:
 *   "digits"        the embedded UCI 8×8 digits (1,797 images, 64 pixels)
 *   "fashion-mnist" Debian's dataset-fashion-mnist training files
 *   "cifar10"       the CIFAR-10 folder named by the environment variable
 *                   LCA_CIFAR10 (it cannot be downloaded here: fetch the
 *                   binary version, cifar-10-binary.tar.gz, elsewhere,
 *                   extract it and set LCA_CIFAR10 or pass the folder)
 *   a folder        holding data_batch_1.bin: CIFAR-10 training batches
 *                   data_batch_1.bin, data_batch_2.bin, … read in order up
 *                   to the first one missing (at most 5; the full set gives
 *                   50,000 images, 3×32×32, 10 classes; test_batch.bin is
 *                   not read); otherwise a folder holding
 *                   train-images-idx3-ubyte[.gz] and
 *                   train-labels-idx1-ubyte[.gz]
 *   a .bin file     one CIFAR-10 batch: records of 3,073 bytes, a label
 *                   0 … 9 then 1,024 red, 1,024 green and 1,024 blue bytes,
 *                   each plane 32×32 row-major (channels-first, kept in
 *                   file order)
 *   an images file  IDX images (plain or .gz); labels_path names its labels
 * labels_path: NULL unless source is an IDX images file.
 * The paper's CIFAR-10 split, 45,000 training / 5,000 validation images, is
 * the trainer's default validation (LCA_VALIDATION_DEFAULT: min(5,000, 10%
 * of the set)) applied to the 50,000 training images. */
lca_status lca_dataset_open(lca_dataset **out, const char *source, const char *labels_path);
/* Copies the arrays. pixels: count × features bytes; labels in [0, classes). */
lca_status lca_dataset_from_arrays(lca_dataset **out, const uint8_t *pixels,
                                   const int32_t *labels, size_t count,
                                   size_t features, int classes);
/* Regression data: float inputs (count × features) and float targets
 * (count × outputs). Used with LCA_LOSS_MEAN_SQUARED_ERROR. */
lca_status lca_dataset_from_float_arrays(lca_dataset **out, const float *inputs,
                                         const float *targets, size_t count,
                                         size_t features, size_t outputs);
void lca_dataset_free(lca_dataset *data);
size_t lca_dataset_count(const lca_dataset *data);
size_t lca_dataset_features(const lca_dataset *data);
/* Number of classes (max label + 1), or 0 for regression data. */
int lca_dataset_classes(const lca_dataset *data);
/* Number of distinct labels that occur (at most lca_dataset_classes; fewer
 * when some labels below the largest never occur), or 0 for regression
 * data. */
int lca_dataset_label_count(const lca_dataset *data);
/* A one-line notice (no newline) for a class count a user may not expect:
 * more than 10 classes, or labels with gaps, e.g. "data set labels.idx: 256
 * classes (labels 0 … 255), of which 3 occur; missing: 1 … 6, 8 … 254; a
 * model needs at least 256 outputs". Written into buffer as snprintf does
 * (NUL-terminated when size > 0); returns its length, 0 when there is
 * nothing to say (10 or fewer classes, all present; regression data). */
size_t lca_dataset_class_notice(const lca_dataset *data, char *buffer, size_t size);
/* Where the data came from ("digits", a path), owned by the data set. */
const char *lca_dataset_source(const lca_dataset *data);
/* The shape of one example as an image, channels × height × width
 * (channels · height · width = features, laid out channels-first):
 * CIFAR-10 3×32×32; IDX images 1×H×W from their dimensions (rank 3:
 * N×H×W; rank 2: N×F gives 1×1×F; rank > 3: the last two dimensions are
 * H and W, the others between N and them multiply into C); digits 1×8×8;
 * data made from arrays 1×1×features. Any output may be NULL. */
lca_status lca_dataset_shape(const lca_dataset *data, size_t *channels, size_t *height,
                             size_t *width);
/* Copy examples indices[0..n) as float32 inputs (scaled to [0, 1]) into x
 * (n × features) and their labels (or targets) into labels / targets;
 * either output may be NULL. */
void lca_dataset_gather(const lca_dataset *data, const uint32_t *indices, size_t n,
                        float *x, int32_t *labels, float *targets);

/* The split a trainer makes, for tools that must evaluate on the same
 * examples (lca attribute). validation is a count or LCA_VALIDATION_DEFAULT
 * (min(5,000, count / 10)); lca_validation_size resolves it. The held-out
 * examples are the first of a Fisher–Yates permutation from stream
 * LCA_STREAM_VALIDATION_SPLIT of seed; both outputs are ascending.
 * training: count − resolved entries; held_out: resolved entries, or NULL. */
size_t lca_validation_size(size_t count, size_t validation);
lca_status lca_dataset_split(const lca_dataset *data, size_t validation, uint64_t seed,
                             uint32_t *training, uint32_t *held_out);

/* Whether data fits model: features per example, image shape (channels ×
 * height × width, for a conv net on image data), classes within the
 * outputs, or float targets matching the outputs under the MSE loss. The
 * one check that trainers, evaluators and attribution make;
 * LCA_ERR_MISMATCH naming the data set and model otherwise. */
lca_status lca_model_check_data(const lca_model *model, const lca_dataset *data);

/* ---------------------------------------------------------------- config */

/* The largest Simpson sub-interval count the integrator refines to. */
#define LCA_MAX_SUBINTERVALS 32
/* 1 if n is a sub-interval cap the integrator accepts (2, 4, 8, 16, 32),
 * else 0. */
int lca_subintervals_valid(unsigned n);

typedef enum lca_optimizer_kind {
    LCA_OPTIMIZER_SGD = 0,      /* θ ← θ − lr·g */
    LCA_OPTIMIZER_MOMENTUM = 1, /* v ← μ·v + g; θ ← θ − lr·v (PyTorch's convention) */
    LCA_OPTIMIZER_ADAM = 2,     /* Kingma & Ba with bias correction */
} lca_optimizer_kind;

#define LCA_VALIDATION_DEFAULT ((size_t)-1) /* min(5,000, 10% of the set) */

typedef struct lca_config {
    uint64_t seed;                    /* default 1 */
    lca_optimizer_kind optimizer;     /* default momentum */
    double learning_rate;             /* default 0.01 */
    double momentum;                  /* μ, default 0.9 */
    double adam_beta1, adam_beta2, adam_epsilon; /* 0.9, 0.999, 1e-8 */
    /* L2 coefficient λ: the step uses g + λθ; the allocated loss has no L2. */
    double weight_decay;              /* default 0 */
    size_t batch_size;                /* default 250 */
    uint64_t iterations;              /* total iterations the run is meant to take */
    size_t validation;                /* examples held out; LCA_VALIDATION_DEFAULT */
    int lca;                          /* 1 = compute LCA (default), 0 = train only */
    size_t lca_subset;                /* 0 = whole training split; else a seeded subset */
    int lca_validation_view;          /* 1 = also allocate the validation loss */
    double lca_threshold;             /* nats, default 0.001 */
    unsigned lca_max_subintervals;    /* 2, 4, 8, 16 or 32; default 32 */
    size_t eval_chunk;                /* examples an evaluation worker holds at once; 0
                                         (default) = the most that fit memory_budget, at
                                         most 512; never more than the accumulation unit
                                         (lca_trainer_accumulation_unit). Memory and speed
                                         only: the results do not depend on it */
    int lca_units;                    /* 1 = per-unit LCA in each record (neurons, channels) */
    /* Batch norm under LCA: the evaluation set is normalised in consecutive
     * groups of this many examples, each with its own batch statistics, so
     * the allocated loss is a fixed function of the parameters; a group is
     * then the accumulation unit, evaluated in sub-chunks (recomputed, the
     * same bytes) when it does not fit memory_budget. Default 250. */
    size_t bn_group;
    /* bytes of activations a worker may hold (the automatic evaluation
     * chunk, the training minibatch's chunk, a batch-norm group in
     * sub-chunks; docs/memory.md), at least one example's; 512 MiB (the
     * results do not depend on it) */
    size_t memory_budget;
    /* 1 (default) = the |LCA| histogram in each record (log field
     * lca_histogram, 240 bytes per tensor and view); 0 leaves it out */
    int lca_histogram;
    /* Loss groups (issue 15, docs/method.md "Groups"): example_groups[i] is
     * the group of example i of the data set, in [0, group_count), for all
     * example_group_count == lca_dataset_count examples (the evaluation set
     * and the validation view pick their examples' ids); NULL (default) =
     * no groups. Every record then carries the LCA of each group's share of
     * the loss. The trainer copies the ids; group_source ("class",
     * "file:PATH") goes to the log header. At most LCA_MAX_GROUPS groups;
     * not with more than one data-parallel rank. */
    const uint32_t *example_groups;
    size_t example_group_count;
    uint32_t group_count;
    const char *group_source;
    /* 1 = keep per-parameter per-group run totals (G · K float64,
     * lca_trainer_group_totals, lca_group_totals_save); needs groups */
    int lca_group_totals;
} lca_config;

/* The most loss groups a run may have (a record holds G · T values). */
#define LCA_MAX_GROUPS 1024

lca_config lca_config_default(void);

/* --------------------------------------------------------------- trainer */

typedef struct lca_trainer lca_trainer;

/* The zero floor's ratio, 2^-30: values within f = ratio · max |LCA| of
 * zero are neither helped nor hurt (rounding). */
#define LCA_ZERO_FLOOR_RATIO 9.313225746154785e-10
/* |LCA| histogram bins (absolute): bin 0 is (f, 1e-14), bin k in 1 … 28 is
 * [10^(-14 + (k-1)/2), 10^(-14 + k/2)), bin 29 is [1, inf). */
enum { LCA_HISTOGRAM_BINS = 30 };
/* The LCA_HISTOGRAM_BINS − 1 finite edges 1e-14, 10^-13.5, …, 1, as the
 * doubles the core compares with. */
const double *lca_histogram_edges(void);

/* Flags of an lca_view_record. */
enum {
    /* refinement reached the cap and |residual| is still above threshold */
    LCA_FLAG_RESIDUAL_ABOVE_THRESHOLD = 1u << 0,
};

/* The LCA of one iteration on one evaluation set. Per-tensor arrays have
 * lca_model_tensor_count entries and are owned by the trainer (valid until
 * the next step). */
typedef struct lca_view_record {
    double loss_before;        /* L(θ_t) on the evaluation set */
    double loss_after;         /* L(θ_{t+1}) */
    double lca_total;          /* Σ_i LCA_{t,i} = Σ over tensors of tensor_lca */
    double first_order_total;  /* Σ_i Δθ_i · ∇L(θ_t)_i */
    double residual;           /* loss_after − loss_before − lca_total */
    uint32_t subintervals;     /* Simpson sub-intervals used: 2 … 32 */
    uint32_t flags;            /* LCA_FLAG_* */
    const double *tensor_lca;
    const double *tensor_first_order;
    /* helped/hurt/zero count against the zero floor (log version 2,
     * docs/log-format.md): f = LCA_ZERO_FLOOR_RATIO · max_i |LCA_{t,i}|
     * over the view's parameters; |LCA| <= f is zero (exact zeros too) */
    const uint64_t *tensor_helped;   /* parameters with LCA < −lca_floor */
    const uint64_t *tensor_hurt;     /* LCA > lca_floor */
    const uint64_t *tensor_zero;     /* |LCA| <= lca_floor */
    double lca_floor;                /* f of this iteration and view */
    const double *tensor_helping;    /* Σ of the LCA < −f, per tensor (<= 0) */
    const double *tensor_hurting;    /* Σ of the LCA > f, per tensor (>= 0) */
    const uint64_t *tensor_unmoved;  /* parameters with Δθ_i == 0 exactly */
    /* With config.lca_histogram: T · 2 · LCA_HISTOGRAM_BINS counts, tensor
     * by tensor, the helping bins then the hurting bins of |LCA| beyond the
     * floor (bins: lca_histogram_edges). Else NULL. */
    const uint32_t *tensor_histogram;
    /* With config.lca_units: per-unit LCA (lca_model_unit_count entries,
     * groups in lca_model_unit_group order; unit u of a group sums its slice
     * of every tensor of the group: incoming weights plus bias). Else NULL. */
    const double *unit_lca;
    /* With config.example_groups: G = group_count groups. group_lca (G · T,
     * group-major): the LCA of each group's share (n_g/N)·L_g of the loss,
     * per tensor; Σ_g group_lca equals tensor_lca within rounding (the
     * group gradients add up exactly to the total's). group_loss_before and
     * _after: each group's own mean loss L_g (NaN for a group without
     * examples in the view); group_residual: (n_g/N)(L_g after − before) −
     * Σ_t group_lca (0 for an empty group); group_flags: bit 0 = the
     * group's |residual| is above the threshold. Else all NULL, G = 0. */
    uint32_t group_count;
    const double *group_lca;
    const double *group_loss_before;
    const double *group_loss_after;
    const double *group_residual;
    const uint32_t *group_flags;
} lca_view_record;

typedef struct lca_record {
    uint64_t iteration;   /* 1-based: record t describes θ_{t-1} → θ_t */
    uint32_t epoch;       /* 0-based epoch of the minibatch */
    uint32_t has_validation;
    double batch_loss;    /* minibatch data loss at θ_{t-1} (before the step) */
    lca_view_record train;       /* on the evaluation set (training split or subset) */
    lca_view_record validation;  /* on the validation split, if has_validation */
} lca_record;

/* The trainer keeps references to model and data (they must outlive it),
 * splits the data (validation held out by seed), sizes and allocates all
 * buffers. It trains the model's current parameters: call
 * lca_model_initialize or load a checkpoint first.
 * Before allocating, the trainer's memory (per parameter: gradient, the
 * parameters before the step, optimizer state, LCA totals and vectors, the
 * staged state; the batch's and the evaluation chunk's workspace) is
 * compared with the memory available: LCA_ERR_OUT_OF_MEMORY naming the
 * bytes needed and available when it cannot fit. */
lca_status lca_trainer_new(lca_trainer **out, lca_model *model, const lca_dataset *data,
                           const lca_config *config);
void lca_trainer_free(lca_trainer *trainer);
/* One iteration: minibatch step, then LCA of the step. */
lca_status lca_trainer_step(lca_trainer *trainer, lca_record *record);
const lca_config *lca_trainer_config(const lca_trainer *trainer);
/* Examples per accumulation unit: the evaluation set is summed in fixed
 * units of this many consecutive examples, each unit's gradient in
 * float32, the units exactly (order-independent), so the results depend on
 * it but not on eval_chunk, memory_budget or the threads. bn_group for a
 * net with batch norm, else a constant of the core (512). */
size_t lca_trainer_accumulation_unit(const lca_trainer *trainer);
uint64_t lca_trainer_iteration(const lca_trainer *trainer);
size_t lca_trainer_training_count(const lca_trainer *trainer);   /* training split size */
size_t lca_trainer_validation_count(const lca_trainer *trainer);
size_t lca_trainer_evaluation_count(const lca_trainer *trainer); /* LCA evaluation set */
/* Bytes the trainer allocated (parameters, state, LCA vectors, workspace). */
size_t lca_trainer_memory_bytes(const lca_trainer *trainer);
/* What a pass holds of a net's activations (lca_memory_use). */
typedef enum lca_activations {
    LCA_ACTIVATIONS_ALL = 0,        /* a net without residual blocks */
    LCA_ACTIVATIONS_KEPT = 1,       /* a residual net, every activation kept */
    LCA_ACTIVATIONS_RECOMPUTED = 2, /* a residual net recomputing by segments */
} lca_activations;
/* Where the memory goes (docs/memory.md): the data set's arrays (not the
 * trainer's: allocated when it was opened) with the split's indices and the
 * trainer's copy of a minibatch (a pass's rows, the batch's labels); the
 * per-parameter vectors (the
 * parameters, gradient, θ_t, optimizer state, LCA totals and help counts,
 * the integrator's probe and each view's four float64 Simpson vectors and
 * per-tensor sums); the exact accumulator (each evaluation worker's float32
 * unit gradient and two int64 limbs per parameter); and the workspace that
 * --memory-budget bounds: each worker's activations for its chunk, input
 * rows and labels (worker 0 also takes the training step, in chunks of
 * train_chunk), and an MLP's first layer kept along the step
 * (first_layer_bytes, when the budget holds it; docs/memory.md). The four
 * parts add up to lca_trainer_memory_bytes plus the data set's arrays. */
typedef struct lca_memory_use {
    size_t data_bytes;
    size_t parameter_bytes;
    size_t accumulator_bytes;
    size_t workspace_bytes;
    size_t first_layer_bytes; /* of workspace_bytes: an MLP's first layer kept along the step */
    size_t workers;       /* evaluation workers (0 without LCA) */
    size_t eval_chunk;    /* examples a worker holds at once */
    size_t train_chunk;   /* examples of a minibatch a training pass holds at once */
    size_t memory_budget;
    /* a residual net's activations (docs/memory.md): all kept because the
     * budget holds them, or only its blocks' inputs with the rest
     * recomputed in the backward pass; other nets keep all */
    lca_activations activations;
    /* a residual net: the smallest budget that keeps every activation at
     * these chunks (0 for other nets) */
    size_t keep_all_budget;
} lca_memory_use;
void lca_trainer_memory_use(const lca_trainer *trainer, lca_memory_use *out);
/* Learning-rate multiplier for one tensor (0 freezes it). Takes effect at
 * the next step. */
lca_status lca_trainer_set_tensor_lr_scale(lca_trainer *trainer, const char *tensor_name,
                                           double scale);
/* Per-parameter run totals (length parameter_count): Σ_t LCA_{t,i} and the
 * number of iterations in which parameter i helped (LCA < −floor, as the
 * records' tensor_helped count). */
const double *lca_trainer_lca_totals(const lca_trainer *trainer);
const uint32_t *lca_trainer_helped_counts(const lca_trainer *trainer);
/* With groups: the number of examples of each group (G entries) in the
 * evaluation set (validation 0) or the validation split (validation 1);
 * NULL without groups. */
const uint64_t *lca_trainer_group_examples(const lca_trainer *trainer, int validation);
/* With config.lca_group_totals: Σ_t of each group's per-parameter LCA,
 * G · K float64, group-major; Σ_g equals lca_trainer_lca_totals within
 * rounding. Else NULL. */
const double *lca_trainer_group_totals(const lca_trainer *trainer);

/* ------------------------------------------------------------ attribution */

/* The LCA of the straight step from parameters `from` to `to` on the
 * examples `indices` (NULL = all) of data, with the config's integrator
 * settings (threshold, cap, chunk). Fills record.train; its per-tensor
 * arrays point into the caller's tensor_lca (T), tensor_first_order (T) and
 * tensor_counts (3T: helped, hurt, zero), T = lca_model_tensor_count. The
 * model's own parameters are left unchanged. An index past the data set is
 * refused (LCA_ERR_INVALID_ARGUMENT, naming its position). */
lca_status lca_attribute(lca_model *model, const float *from, const float *to,
                         const lca_dataset *data, const uint32_t *indices, size_t count,
                         const lca_config *config, lca_record *record, double *tensor_lca,
                         double *tensor_first_order, uint64_t *tensor_counts);
/* lca_attribute with config->example_groups (G groups): also the group
 * fields of record->train, copied into group_lca (G · T), group_losses
 * (3 · G: the losses before, the losses after, the residuals) and
 * group_flags (G), which record->train then points to. */
lca_status lca_attribute_groups(lca_model *model, const float *from, const float *to,
                                const lca_dataset *data, const uint32_t *indices, size_t count,
                                const lca_config *config, lca_record *record, double *tensor_lca,
                                double *tensor_first_order, uint64_t *tensor_counts,
                                double *group_lca, double *group_losses, uint32_t *group_flags);

/* The evaluation-set loss and gradient exactly as the LCA integrator
 * computes them at each probe point: the mean loss over the examples
 * `indices` (NULL = all) of data and its gradient, in chunks of the
 * config's eval_chunk (0 = from memory_budget), chunks side by side over
 * the threads, summed in float64 in chunk order (the same bytes at any
 * thread count), batch norm in groups of the config's bn_group. Made once,
 * run at many parameter vectors. The model is only read (its workspace
 * aside), so an evaluator may share a model with a trainer. */
typedef struct lca_evaluator lca_evaluator;
lca_status lca_evaluator_new(lca_evaluator **out, lca_model *model, const lca_dataset *data,
                             const uint32_t *indices, size_t count, const lca_config *config);
/* loss = mean loss at parameters (K floats); gradient (K doubles, may be
 * NULL to skip the backward pass) = its gradient. */
lca_status lca_evaluator_run(lca_evaluator *evaluator, const float *parameters, double *loss,
                             double *gradient);
void lca_evaluator_free(lca_evaluator *evaluator);

/* -------------------------------------------------------------------- log */

typedef struct lca_log lca_log;

/* Open a binary LCA log (docs/log-format.md) at path ("-" = stdout) and
 * write its header, describing the trainer's run. An existing file is
 * replaced only once the header is complete (written to path + ".tmp" and
 * renamed). */
lca_status lca_log_open(lca_log **out, const char *path, const lca_trainer *trainer);
/* Append one record. Each record is written with a single write call and
 * nothing is buffered, so a killed run loses at most the record in flight. */
lca_status lca_log_write(lca_log *log, const lca_record *record);
/* Reopen the log of a run being resumed: its header must equal the one this
 * trainer would write, and it must hold at least lca_trainer_iteration
 * complete records; later records (and a partial one) are cut off, since
 * the resumed run writes them again, byte for byte. */
lca_status lca_log_resume(lca_log **out, const char *path, const lca_trainer *trainer);
lca_status lca_log_close(lca_log *log);
/* Durability of a log file (not stdout): lca_log_sync fsyncs what was
 * written so far; with lca_log_set_sync(log, 1) every record is fsynced as
 * it is written (slower; the default is 0: records are written with write(2)
 * and survive the process being killed, but not a power loss, until synced). */
lca_status lca_log_sync(lca_log *log);
void lca_log_set_sync(lca_log *log, int every_record);
/* Attach log to trainer (NULL detaches): every later lca_trainer_step
 * writes its record to it before returning, so the record goes from the
 * core's arrays to the file without a copy. The trainer does not own the
 * log; close it after the last step. */
lca_status lca_trainer_set_log(lca_trainer *trainer, lca_log *log);
/* Size in bytes of one record of this trainer's log. */
size_t lca_log_record_size(const lca_trainer *trainer);

/* ------------------------------------------------------------ checkpoints */

/* Checkpoints are safetensors files: the model's tensors (F32, PyTorch
 * names) plus __metadata__ with "lca.model" (spec), "lca.loss" and
 * "lca.iteration". Files written by other tools (a PyTorch state dict:
 * no metadata, maybe F16/BF16/F64) load too: the caller names the model
 * (lca_checkpoint_model_spec) and lca_checkpoint_load_report converts the
 * tensors to F32 and says what it converted (docs/checkpoints.md). */
lca_status lca_checkpoint_save(const char *path, const lca_model *model, uint64_t iteration);
/* What lca_checkpoint_load_report found: files written by other tools
 * (PyTorch's safetensors.torch.save_file) may hold F16, BF16 or F64
 * tensors, which are converted to F32 on load. */
typedef struct lca_checkpoint_report {
    uint64_t iteration;  /* metadata "lca.iteration"; 0 when absent */
    size_t f16_tensors;  /* tensors converted from F16: exact */
    size_t bf16_tensors; /* tensors converted from BF16: exact */
    size_t f64_tensors;  /* tensors converted from F64: rounded to nearest */
    size_t f64_values;   /* values in those F64 tensors */
    size_t f64_rounded;  /* of which F32 holds only a rounded value */
} lca_checkpoint_report;
/* Load parameters (and batch norm's running statistics, when present) into
 * model. Every model tensor must be in the file under its name (extra
 * tensors are ignored) with its shape, as F32 (copied bit for bit), F16 or
 * BF16 (converted exactly) or F64 (rounded to nearest). A name missing
 * fails with a message listing the names and shapes the model expects, the
 * names the file has and how to rename (docs/checkpoints.md); a
 * non-finite F16/BF16/F64 value or an F64 value outside F32's range fails
 * naming the tensor. On failure the model is unchanged. The metadata is
 * not needed: the caller chose the model (lca_checkpoint_model_spec).
 * report (may be NULL) says what was converted. */
lca_status lca_checkpoint_load_report(const char *path, lca_model *model,
                                      lca_checkpoint_report *report);
/* lca_checkpoint_load_report, giving only the iteration (may be NULL). */
lca_status lca_checkpoint_load(const char *path, lca_model *model, uint64_t *iteration);
/* Read the model spec (canonical form) and loss from a checkpoint's
 * metadata into spec (capacity bytes, NUL-terminated); fails when the
 * metadata has no "lca.model". lca_checkpoint_model_spec with no requested
 * spec. */
lca_status lca_checkpoint_read_spec(const char *path, char *spec, size_t capacity,
                                    lca_loss_kind *loss);
/* The model to load a checkpoint into: requested (a spec, or NULL) when
 * given, else the metadata's "lca.model"; when both exist they must
 * describe the same model (compared in canonical form), else
 * LCA_ERR_MISMATCH naming both. Neither: LCA_ERR_FORMAT. spec receives the
 * canonical spec; loss (may be NULL) the metadata's "lca.loss", softmax
 * cross-entropy when absent (a caller may train or allocate another loss:
 * the loss is not a property of the weights). */
lca_status lca_checkpoint_model_spec(const char *path, const char *requested, char *spec,
                                     size_t capacity, lca_loss_kind *loss);
/* Resume state: everything lca_trainer_step depends on besides the data and
 * config (parameters, optimizer state, per-parameter totals, iteration), as
 * a safetensors file. Loading it into a trainer made with the same model,
 * data and config continues the run with the same bytes as if it had never
 * stopped. */
lca_status lca_trainer_save_state(const lca_trainer *trainer, const char *path);
lca_status lca_trainer_load_state(lca_trainer *trainer, const char *path);
/* Write the per-parameter LCA totals (F64) and helped counts (U32) as two
 * safetensors files with the model's tensor names. */
lca_status lca_totals_save(const char *totals_path, const char *helped_path,
                           const lca_trainer *trainer);
/* With config.lca_group_totals: the per-group totals as one safetensors
 * file of F64 tensors named "<tensor>@<group>" ("fc1.weight@3"), each in
 * its tensor's shape, groups in order. */
lca_status lca_group_totals_save(const char *path, const lca_trainer *trainer);

#ifdef __cplusplus
}
#endif

#endif /* LCA_H */
