/* data.h: training data for fsps-worker — IDX (Fashion-MNIST) loading,
 * synthetic sets, and the deterministic distributed sampler. */
#ifndef FSPS_WORKER_DATA_H
#define FSPS_WORKER_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where Debian's dataset-fashion-mnist package puts the four .gz files. */
#define DATA_FASHION_DIR "/usr/share/datasets/fashion-mnist"
/* Mean and standard deviation of Fashion-MNIST's training pixels in [0,1]. */
#define DATA_FASHION_MEAN 0.2860f
#define DATA_FASHION_STD 0.3530f
/* Classes of an IDX label file: labels must be below this. */
#define DATA_IDX_CLASSES 10u

/* A labelled data set held in memory, read through worker_data_sample: IDX
 * images as their bytes (scaled to [0,1] when sampled: a quarter of the
 * memory of floats), or a synthetic set as its class prototypes and a
 * table of noise (no memory per sample but its label). Owned by whoever
 * filled it; release with worker_data_free. */
typedef struct {
  uint32_t n, rows, cols;
  uint8_t *px;    /* IDX: n*rows*cols pixels, row-major; else NULL */
  float *proto;   /* synthetic: classes * rows*cols prototype values */
  float *noise;   /* synthetic: DATA_NOISE_TABLE deviates N(0, 0.5^2) */
  uint64_t seed;  /* synthetic: picks each sample's noise */
  float mul, add; /* a sample's value is raw * mul + add */
  uint8_t *y;     /* n labels, each < classes */
  uint32_t classes;
} data_set;

/* Noise values a synthetic set draws its samples' noise from. */
#define DATA_NOISE_TABLE (1u << 16)

/* worker_data_load_idx reads an IDX image file (magic 0x00000803: n, rows,
 * cols, then n*rows*cols unsigned bytes) and its IDX label file (magic
 * 0x00000801: n, then n bytes), each gzip-compressed or not, into *out with
 * pixels scaled to [0,1] (byte/255) and classes = DATA_IDX_CLASSES. Returns 0,
 * or -1 with *out zeroed and, when err is non-NULL and errlen > 0, a
 * NUL-terminated sentence in err naming the file and the problem (missing file,
 * bad magic, truncated data, count mismatch, label out of range, out of
 * memory). On success the caller owns *out (worker_data_free). Thread-safe. */
int worker_data_load_idx(const char *images_path, const char *labels_path,
                         data_set *out, char *err, size_t errlen);

/* worker_data_load_fashion loads Fashion-MNIST's training set (train = true:
 * train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz) or test set
 * (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from dir (NULL:
 * DATA_FASHION_DIR). When a .gz file is absent its uncompressed twin (same
 * name without .gz) is used if present. Returns as worker_data_load_idx. */
int worker_data_load_fashion(const char *dir, bool train, data_set *out,
                             char *err, size_t errlen);

/* worker_data_free releases the arrays of *ds and zeroes it; NULL or an already
 * freed set is a no-op. */
void worker_data_free(data_set *ds);

/* worker_data_normalize makes every value v that worker_data_sample gives (v -
 * mean) / std from now on (for Fashion-MNIST: DATA_FASHION_MEAN,
 * DATA_FASHION_STD). std must be positive; 0 gives inf/NaN values. Not
 * thread-safe on the same set. */
void worker_data_normalize(data_set *ds, float mean, float std);

/* worker_data_synthetic fills *out with n samples of dim features (rows 1, cols
 * dim) in `classes` classes (2..256), for benchmarks and tests. Each class
 * has a prototype vector uniform in [0,1)^dim; a sample is its class's
 * prototype plus Gaussian noise of standard deviation 0.5 (so values are not
 * confined to [0,1]): deviates from a table of DATA_NOISE_TABLE, read from
 * a place and with a stride drawn per sample, made as the sample is taken,
 * so that a set of any size costs one byte per sample (its label). Labels
 * are uniform over the classes. The set is a pure function of (n, dim,
 * classes, seed) and is learnable by a linear model. Returns 0, or -1 with
 * *out zeroed if n or dim is 0, classes is outside 2..256, or memory runs
 * out. On success the caller owns *out (worker_data_free). Thread-safe. */
int worker_data_synthetic(uint32_t n, uint32_t dim, uint32_t classes,
                          uint64_t seed, data_set *out);

/* worker_data_sample writes sample i's rows*cols values into x (i < ds->n).
 * Allocates nothing. Thread-safe. */
void worker_data_sample(const data_set *ds, uint32_t i, float *x);

/* worker_data_gather writes samples idx[0..b) of ds into x (b * rows*cols
 * floats) and their labels into y (b bytes, may be NULL). Indices must be <
 * ds->n. Allocates nothing. Thread-safe for disjoint outputs. */
void worker_data_gather(const data_set *ds, const uint32_t *idx, uint32_t b,
                        float *x, uint8_t *y);

/* ---- Distributed sampler ------------------------------------------------
 * As PyTorch's DistributedSampler with drop_last, applied to the global
 * batch: each epoch draws one permutation of [0, n) from a PRNG seeded by
 * (seed, epoch) — identical on every rank. With global batch g = world *
 * batch there are floor(n / g) steps (the incomplete last global batch is
 * dropped), and in step k rank r takes permutation entries
 * [k*g + r*batch, k*g + (r+1)*batch). So `world` workers with batch b see
 * together exactly the samples, in the same order, that one worker with
 * batch world*b sees. Fields are read-only for users. */
typedef struct {
  uint32_t n, world, rank, batch;
  uint64_t seed;
  uint32_t epoch; /* epoch of the current permutation */
  uint32_t *perm; /* n entries, allocated once by worker_data_sampler_init */
} data_sampler;

/* worker_data_sampler_init checks the arguments (world >= 1, rank < world,
 * batch >= 1, world*batch <= n), allocates the permutation once and draws
 * epoch 0's. Returns 0, or -1 with *s zeroed if an argument is out of range
 * or memory runs out (n indices). The caller owns *s
 * (worker_data_sampler_free). */
int worker_data_sampler_init(data_sampler *s, uint32_t n, uint32_t world,
                             uint32_t rank, uint32_t batch, uint64_t seed);

/* worker_data_sampler_steps returns the steps per epoch, floor(n /
 * (world*batch)). */
uint32_t worker_data_sampler_steps(const data_sampler *s);

/* worker_data_sampler_epoch draws epoch's permutation into s->perm (O(n), no
 * allocation). The same (n, seed, epoch) gives the same permutation on every
 * rank and every run. Not thread-safe on the same sampler. */
void worker_data_sampler_epoch(data_sampler *s, uint32_t epoch);

/* worker_data_sampler_batch returns a pointer to this rank's `batch` sample
 * indices for step of the current epoch, or NULL if step >=
 * worker_data_sampler_steps(s). The pointer is into s->perm: valid until the
 * next worker_data_sampler_epoch or worker_data_sampler_free. */
const uint32_t *worker_data_sampler_batch(const data_sampler *s, uint32_t step);

/* worker_data_sampler_free releases the permutation and zeroes *s; NULL is a
 * no-op. */
void worker_data_sampler_free(data_sampler *s);

#endif
