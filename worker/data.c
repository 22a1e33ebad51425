/* data.c: IDX (Fashion-MNIST) loading through zlib, synthetic data sets and
 * the deterministic distributed sampler of data.h. */
#include "data.h"
#include "errmsg.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
/* Bytes converted per read: small enough for the stack, large enough that
 * the per-call cost of gzread vanishes. */
#define READ_CHUNK 16384u

/* ---- PRNG ---------------------------------------------------------------
 * splitmix64: tiny, fast, passes BigCrush, and seeding it is trivial, which
 * is all a shuffle and synthetic data need. */

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static uint64_t next64(uint64_t *state) {
  *state += 0x9E3779B97F4A7C15ULL;
  return mix64(*state);
}

/* Uniform integer in [0, range) without modulo bias (Lemire's method). */
static uint32_t bounded(uint64_t *state, uint32_t range) {
  uint64_t m = (next64(state) >> 32) * (uint64_t)range;
  uint32_t low = (uint32_t)m;
  if (low < range) {
    uint32_t threshold = (uint32_t)-range % range;
    while (low < threshold) {
      m = (next64(state) >> 32) * (uint64_t)range;
      low = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

/* Uniform double in [0, 1) with 53 random bits. */
static double uniform01(uint64_t *state) {
  return (double)(next64(state) >> 11) * 0x1.0p-53;
}

/* ---- IDX files ---------------------------------------------------------- */

static gzFile open_input(const char *path, char *err, size_t errlen) {
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (f != NULL) {
    gzbuffer(f, 128 * 1024);
    return f;
  }
  if (errno == ENOENT)
    worker_errmsg_set(
        err, errlen,
        "%s: no such file; install Fashion-MNIST with `apt-get install "
        "dataset-fashion-mnist` (or run scripts/setup.sh), or pass the "
        "directory that holds the IDX files",
        path);
  else
    worker_errmsg_set(err, errlen, "%s: cannot open: %s", path,
                      errno ? strerror(errno) : "out of memory");
  return NULL;
}

/* Reads up to len bytes; *got receives how many arrived. Returns 0 when the
 * read ended normally (possibly short: end of file, or a gzip stream that
 * stops early) and -1 with err set on an I/O or decompression error. */
static int read_full(gzFile f, const char *path, void *buf, size_t len,
                     size_t *got, char *err, size_t errlen) {
  *got = 0;
  while (*got < len) {
    size_t want = len - *got > (1u << 30) ? (1u << 30) : len - *got;
    int r = gzread(f, (char *)buf + *got, (unsigned)want);
    if (r == 0)
      return 0;
    if (r < 0) {
      int errnum;
      const char *msg = gzerror(f, &errnum);
      if (errnum == Z_BUF_ERROR) /* gzip stream cut short: a truncation */
        return 0;
      worker_errmsg_set(err, errlen, "%s: read error: %s", path,
                        errnum == Z_ERRNO ? strerror(errno) : msg);
      return -1;
    }
    *got += (size_t)r;
  }
  return 0;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

/* Reads the magic and the ndims dimension sizes of an IDX header. */
static int read_header(gzFile f, const char *path, uint32_t magic,
                       uint32_t ndims, uint32_t *dims, char *err,
                       size_t errlen) {
  unsigned char h[16];
  size_t need = 4 + 4 * (size_t)ndims, got;
  if (read_full(f, path, h, need, &got, err, errlen) != 0)
    return -1;
  if (got >= 4 && be32(h) != magic) {
    worker_errmsg_set(err, errlen,
                      "%s: bad magic 0x%08" PRIx32 ", expected 0x%08" PRIx32
                      " (IDX %s file); is this the right file?",
                      path, be32(h), magic, ndims == 3 ? "image" : "label");
    return -1;
  }
  if (got < need) {
    worker_errmsg_set(
        err, errlen,
        "%s: truncated: the IDX header needs %zu bytes, the file has %zu", path,
        need, got);
    return -1;
  }
  for (uint32_t i = 0; i < ndims; i++)
    dims[i] = be32(h + 4 + 4 * i);
  return 0;
}

static int truncated(const char *path, const char *what, uint64_t want,
                     uint64_t got, char *err, size_t errlen) {
  worker_errmsg_set(err, errlen,
                    "%s: truncated: the header promises %" PRIu64
                    " bytes of %s, the "
                    "file holds %" PRIu64,
                    path, want, what, got);
  return -1;
}

/* Reads count pixel bytes into px, kept as bytes (a quarter of floats'
 * memory) and scaled to [0,1] as samples are taken (worker_data_sample). */
static int read_pixels(gzFile f, const char *path, uint8_t *px, size_t count,
                       char *err, size_t errlen) {
  for (size_t done = 0; done < count;) {
    size_t want = count - done < READ_CHUNK ? count - done : READ_CHUNK, got;
    if (read_full(f, path, px + done, want, &got, err, errlen) != 0)
      return -1;
    done += got;
    if (got < want)
      return truncated(path, "pixels", count, done, err, errlen);
  }
  return 0;
}

/* Checks that n images of rows*cols floats fit in memory's address space. */
static int image_count(const char *path, const uint32_t *dims, size_t *count,
                       char *err, size_t errlen) {
  uint64_t per = (uint64_t)dims[1] * dims[2];
  if (dims[0] == 0 || per == 0) {
    worker_errmsg_set(err, errlen,
                      "%s: empty: header says %" PRIu32 " images of %" PRIu32
                      "x%" PRIu32,
                      path, dims[0], dims[1], dims[2]);
    return -1;
  }
  if (per > SIZE_MAX / sizeof(float) / dims[0]) {
    worker_errmsg_set(err, errlen,
                      "%s: header says %" PRIu32 " images of %" PRIu32
                      "x%" PRIu32 ", too large for this machine",
                      path, dims[0], dims[1], dims[2]);
    return -1;
  }
  *count = (size_t)(per * dims[0]);
  return 0;
}

static int load_images(const char *path, data_set *out, char *err,
                       size_t errlen) {
  uint32_t dims[3];
  size_t count;
  int rc = -1;
  gzFile f = open_input(path, err, errlen);
  if (f == NULL)
    return -1;
  if (read_header(f, path, IDX_IMAGES_MAGIC, 3, dims, err, errlen) != 0 ||
      image_count(path, dims, &count, err, errlen) != 0)
    goto out;
  out->px = malloc(count);
  if (out->px == NULL) {
    worker_errmsg_set(err, errlen, "%s: out of memory for %zu pixels", path,
                      count);
    goto out;
  }
  out->n = dims[0], out->rows = dims[1], out->cols = dims[2];
  out->mul = 1.0f / 255.0f;
  rc = read_pixels(f, path, out->px, count, err, errlen);
out:
  gzclose(f);
  return rc;
}

static int check_labels(const char *path, const uint8_t *y, uint32_t n,
                        char *err, size_t errlen) {
  for (uint32_t i = 0; i < n; i++) {
    if (y[i] >= DATA_IDX_CLASSES) {
      worker_errmsg_set(err, errlen,
                        "%s: label %u of sample %" PRIu32
                        " is out of range (must be "
                        "below %u)",
                        path, y[i], i, DATA_IDX_CLASSES);
      return -1;
    }
  }
  return 0;
}

/* Reads a label file whose count must equal the images' n. */
static int load_labels(const char *path, const char *images_path, data_set *out,
                       char *err, size_t errlen) {
  uint32_t n;
  size_t got;
  int rc = -1;
  gzFile f = open_input(path, err, errlen);
  if (f == NULL)
    return -1;
  if (read_header(f, path, IDX_LABELS_MAGIC, 1, &n, err, errlen) != 0)
    goto out;
  if (n != out->n) {
    worker_errmsg_set(err, errlen,
                      "%s holds %" PRIu32 " labels but %s holds %" PRIu32
                      " images; "
                      "are they from the same set?",
                      path, n, images_path, out->n);
    goto out;
  }
  if ((out->y = malloc(n)) == NULL) {
    worker_errmsg_set(err, errlen, "%s: out of memory for %" PRIu32 " labels",
                      path, n);
    goto out;
  }
  if (read_full(f, path, out->y, n, &got, err, errlen) != 0)
    goto out;
  if (got < n)
    truncated(path, "labels", n, got, err, errlen);
  else
    rc = check_labels(path, out->y, n, err, errlen);
out:
  gzclose(f);
  return rc;
}

int worker_data_load_idx(const char *images_path, const char *labels_path,
                         data_set *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (load_images(images_path, out, err, errlen) != 0 ||
      load_labels(labels_path, images_path, out, err, errlen) != 0) {
    worker_data_free(out);
    return -1;
  }
  out->classes = DATA_IDX_CLASSES;
  return 0;
}

/* Writes dir/name into buf; if that file is absent but its name without
 * ".gz" exists, writes that instead. Returns -1 if buf is too short. */
static int fashion_path(char *buf, size_t len, const char *dir,
                        const char *name, char *err, size_t errlen) {
  int w = snprintf(buf, len, "%s/%s", dir, name);
  if (w < 0 || (size_t)w >= len) {
    worker_errmsg_set(err, errlen, "%s: directory name too long", dir);
    return -1;
  }
  if (access(buf, F_OK) != 0) {
    buf[w - 3] = '\0'; /* strip ".gz" */
    if (access(buf, F_OK) != 0)
      buf[w - 3] = '.'; /* neither exists: report the .gz name */
  }
  return 0;
}

int worker_data_load_fashion(const char *dir, bool train, data_set *out,
                             char *err, size_t errlen) {
  char images[4096], labels[4096];
  const char *set = train ? "train" : "t10k";
  char name[64];
  if (dir == NULL)
    dir = DATA_FASHION_DIR;
  memset(out, 0, sizeof *out);
  snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", set);
  if (fashion_path(images, sizeof images, dir, name, err, errlen) != 0)
    return -1;
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", set);
  if (fashion_path(labels, sizeof labels, dir, name, err, errlen) != 0)
    return -1;
  return worker_data_load_idx(images, labels, out, err, errlen);
}

void worker_data_free(data_set *ds) {
  if (ds == NULL)
    return;
  free(ds->px);
  free(ds->proto);
  free(ds->noise);
  free(ds->y);
  memset(ds, 0, sizeof *ds);
}

void worker_data_normalize(data_set *ds, float mean, float std) {
  float inv = 1.0f / std;
  ds->add = (ds->add - mean) * inv;
  ds->mul *= inv;
}

/* ---- Synthetic data ----------------------------------------------------- */

/* Standard normal deviate (Box-Muller; one of the pair is dropped, which
 * keeps the generator stateless at a cost that does not matter here). */
static float gaussian(uint64_t *state) {
  double u = 1.0 - uniform01(state); /* (0, 1]: log(u) is finite */
  double v = uniform01(state);
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* noise_walk returns where sample i's noise starts in the table and its
 * odd stride: its first DATA_NOISE_TABLE deviates are distinct entries. */
static void noise_walk(const data_set *ds, uint32_t i, uint32_t *start,
                       uint32_t *stride) {
  uint64_t h = mix64(ds->seed ^ (0x9E3779B97F4A7C15ULL * (i + 1ULL)));
  *start = (uint32_t)h & (DATA_NOISE_TABLE - 1);
  *stride = ((uint32_t)(h >> 32) & (DATA_NOISE_TABLE - 1)) | 1u;
}

int worker_data_synthetic(uint32_t n, uint32_t dim, uint32_t classes,
                          uint64_t seed, data_set *out) {
  memset(out, 0, sizeof *out);
  if (n == 0 || dim == 0 || classes < 2 || classes > 256)
    return -1;
  out->proto = malloc((size_t)classes * dim * sizeof(float));
  out->noise = malloc(DATA_NOISE_TABLE * sizeof(float));
  out->y = malloc(n);
  if (out->proto == NULL || out->noise == NULL || out->y == NULL) {
    worker_data_free(out);
    return -1;
  }
  uint64_t st = mix64(seed);
  for (size_t i = 0; i < (size_t)classes * dim; i++)
    out->proto[i] = (float)uniform01(&st);
  st = mix64(seed ^ 0x5EEDDA7AULL);
  for (uint32_t i = 0; i < DATA_NOISE_TABLE; i++)
    out->noise[i] = 0.5f * gaussian(&st);
  for (uint32_t i = 0; i < n; i++)
    out->y[i] = (uint8_t)bounded(&st, classes);
  out->n = n, out->rows = 1, out->cols = dim, out->classes = classes;
  out->seed = seed, out->mul = 1.0f;
  return 0;
}

void worker_data_sample(const data_set *ds, uint32_t i, float *x) {
  size_t dim = (size_t)ds->rows * ds->cols;
  const float mul = ds->mul, add = ds->add;
  if (ds->px != NULL) {
    const uint8_t *px = ds->px + (size_t)i * dim;
    for (size_t j = 0; j < dim; j++)
      x[j] = (float)px[j] * mul + add;
    return;
  }
  uint32_t at, stride;
  noise_walk(ds, i, &at, &stride);
  const float *p = ds->proto + (size_t)ds->y[i] * dim;
  for (size_t j = 0; j < dim; j++, at = (at + stride) & (DATA_NOISE_TABLE - 1))
    x[j] = (p[j] + ds->noise[at]) * mul + add;
}

void worker_data_gather(const data_set *ds, const uint32_t *idx, uint32_t b,
                        float *x, uint8_t *y) {
  size_t dim = (size_t)ds->rows * ds->cols;
  for (uint32_t i = 0; i < b; i++) {
    worker_data_sample(ds, idx[i], x + i * dim);
    if (y != NULL)
      y[i] = ds->y[idx[i]];
  }
}

/* ---- Sampler ------------------------------------------------------------ */

int worker_data_sampler_init(data_sampler *s, uint32_t n, uint32_t world,
                             uint32_t rank, uint32_t batch, uint64_t seed) {
  memset(s, 0, sizeof *s);
  if (world == 0 || rank >= world || batch == 0 || (uint64_t)world * batch > n)
    return -1;
  if ((s->perm = malloc((size_t)n * sizeof *s->perm)) == NULL)
    return -1;
  s->n = n, s->world = world, s->rank = rank, s->batch = batch;
  s->seed = seed;
  worker_data_sampler_epoch(s, 0);
  return 0;
}

uint32_t worker_data_sampler_steps(const data_sampler *s) {
  return s->n / (s->world * s->batch);
}

void worker_data_sampler_epoch(data_sampler *s, uint32_t epoch) {
  /* Seeded by (seed, epoch) only: every rank draws the same permutation. */
  uint64_t st = mix64(s->seed ^ mix64(0xE90C0000ULL + epoch));
  for (uint32_t i = 0; i < s->n; i++)
    s->perm[i] = i;
  for (uint32_t i = s->n; i > 1; i--) { /* Fisher-Yates */
    uint32_t j = bounded(&st, i), t = s->perm[i - 1];
    s->perm[i - 1] = s->perm[j];
    s->perm[j] = t;
  }
  s->epoch = epoch;
}

const uint32_t *worker_data_sampler_batch(const data_sampler *s,
                                          uint32_t step) {
  if (step >= worker_data_sampler_steps(s))
    return NULL;
  size_t g = (size_t)s->world * s->batch;
  return s->perm + step * g + (size_t)s->rank * s->batch;
}

void worker_data_sampler_free(data_sampler *s) {
  if (s == NULL)
    return;
  free(s->perm);
  memset(s, 0, sizeof *s);
}
