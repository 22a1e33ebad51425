/* test_worker.c: unit tests of worker/ — IDX loading and its errors, the
 * distributed sampler, synthetic data, the MLP's gradients and training,
 * and the status page's progress history and rendering. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "data.h"
#include "history.h"
#include "mlp.h"
#include "wpage.h"

/* ---- helpers ------------------------------------------------------------ */

/* Deterministic uniform floats in [-scale, scale) from a 64-bit LCG. */
static void fill_uniform(float *x, size_t n, uint64_t seed, float scale) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x[i] = scale * ((float)(s >> 40) / 8388608.0f - 1.0f);
  }
}

/* Fails, printing err, unless err contains every one of the NULL-ended
 * needles. */
static void assert_err_has(const char *err, ...) {
  va_list ap;
  va_start(ap, err);
  for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
    if (strstr(err, s) == NULL)
      fail_msg("error \"%s\" lacks \"%s\"", err, s);
  }
  va_end(ap);
}

/* Temporary directory of one test, removed with its files by teardown. */
typedef struct {
  char dir[64];
  char path[4][128]; /* scratch file names inside dir */
} tmp_dir;

static int tmp_setup(void **state) {
  tmp_dir *t = calloc(1, sizeof *t);
  if (t == NULL)
    return -1;
  strcpy(t->dir, "/tmp/fsps_test_worker.XXXXXX");
  if (mkdtemp(t->dir) == NULL) {
    free(t);
    return -1;
  }
  *state = t;
  return 0;
}

static int tmp_teardown(void **state) {
  tmp_dir *t = *state;
  DIR *d = opendir(t->dir);
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    unlinkat(dirfd(d), e->d_name, 0);
  }
  if (d != NULL)
    closedir(d);
  rmdir(t->dir);
  free(t);
  return 0;
}

static const char *tmp_path(tmp_dir *t, int i, const char *name) {
  snprintf(t->path[i], sizeof t->path[i], "%s/%s", t->dir, name);
  return t->path[i];
}

/* Writes an IDX file: big-endian magic and dims, then len payload bytes;
 * gzip-compressed when gz. */
static void write_idx(const char *path, int gz, uint32_t magic,
                      const uint32_t *dims, int ndims, const uint8_t *payload,
                      size_t len) {
  uint8_t h[16];
  for (int i = 0; i <= ndims; i++) {
    uint32_t v = i == 0 ? magic : dims[i - 1];
    h[4 * i] = (uint8_t)(v >> 24), h[4 * i + 1] = (uint8_t)(v >> 16);
    h[4 * i + 2] = (uint8_t)(v >> 8), h[4 * i + 3] = (uint8_t)v;
  }
  size_t hl = 4 + 4 * (size_t)ndims;
  if (gz) {
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, h, (unsigned)hl), (int)hl);
    if (len > 0)
      assert_int_equal(gzwrite(f, payload, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
  } else {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(h, 1, hl, f), hl);
    if (len > 0)
      assert_int_equal(fwrite(payload, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
  }
}

/* The tiny set: 3 images of 2x3 pixels and their labels. */
static const uint8_t tiny_px[18] = {0,   255, 51,  102, 1,  2,  3, 4,  5,
                                    200, 100, 254, 9,   18, 27, 0, 36, 45};
static const uint8_t tiny_lab[3] = {0, 9, 3};

static void write_tiny(tmp_dir *t, int gz, const char *img, const char *lab) {
  const uint32_t idims[3] = {3, 2, 3}, ldims[1] = {3};
  write_idx(tmp_path(t, 0, img), gz, 0x803, idims, 3, tiny_px, 18);
  write_idx(tmp_path(t, 1, lab), gz, 0x801, ldims, 1, tiny_lab, 3);
}

static void check_tiny(const data_set *ds) {
  assert_int_equal(ds->n, 3);
  assert_int_equal(ds->rows, 2);
  assert_int_equal(ds->cols, 3);
  assert_int_equal(ds->classes, 10);
  float x[6];
  for (uint32_t i = 0; i < 3; i++) {
    worker_data_sample(ds, i, x);
    for (int j = 0; j < 6; j++)
      assert_float_equal(x[j], tiny_px[6 * i + j] / 255.0f, 1e-7f);
  }
  assert_memory_equal(ds->y, tiny_lab, 3);
}

/* ---- IDX loading -------------------------------------------------------- */

static void test_idx_plain_loads(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512] = "";
  write_tiny(t, 0, "img", "lab");
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[1], &ds, err, sizeof err), 0);
  check_tiny(&ds);
  worker_data_free(&ds);
  assert_null(ds.px);
  assert_int_equal(ds.n, 0);
}

static void test_idx_gzip_loads(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512] = "";
  write_tiny(t, 1, "img.gz", "lab.gz");
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[1], &ds, err, sizeof err), 0);
  check_tiny(&ds);
  worker_data_free(&ds);
}

static void test_idx_bad_magic(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512];
  write_tiny(t, 0, "img", "lab");
  /* Swapped: the label file where images are expected, and vice versa. */
  assert_int_equal(
      worker_data_load_idx(t->path[1], t->path[0], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[1], "bad magic", "0x00000801", "0x00000803",
                 NULL);
  assert_null(ds.px);
  const uint32_t ldims[1] = {3};
  write_idx(tmp_path(t, 2, "lab_bad"), 0, 0x802, ldims, 1, tiny_lab, 3);
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[2], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "bad magic", "0x00000802", NULL);
}

static void test_idx_truncated(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512];
  const uint32_t idims[3] = {3, 2, 3}, ldims[1] = {3};
  write_tiny(t, 0, "img", "lab");
  write_idx(tmp_path(t, 2, "img_short"), 0, 0x803, idims, 3, tiny_px, 17);
  assert_int_equal(
      worker_data_load_idx(t->path[2], t->path[1], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "truncated", "18", "17", NULL);
  write_idx(tmp_path(t, 2, "lab_short"), 0, 0x801, ldims, 1, tiny_lab, 2);
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[2], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "truncated", "labels", NULL);
  write_idx(tmp_path(t, 2, "hdr_short"), 0, 0x803, idims, 1, NULL, 0);
  assert_int_equal(
      worker_data_load_idx(t->path[2], t->path[1], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "truncated", "header", NULL);
}

/* A gzip stream cut in the middle reads as truncated, not as garbage. */
static void test_idx_truncated_gzip(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512];
  enum { N = 50, PX = N * 28 * 28 };
  static uint8_t px[PX];
  uint64_t s = 7;
  for (int i = 0; i < PX; i++) /* noise: compresses poorly, so the cut */
    px[i] = (uint8_t)((s = s * 6364136223846793005ULL + 1) >> 56); /* bites */
  const uint32_t idims[3] = {N, 28, 28}, ldims[1] = {N};
  uint8_t lab[N] = {0};
  write_idx(tmp_path(t, 0, "img.gz"), 1, 0x803, idims, 3, px, PX);
  write_idx(tmp_path(t, 1, "lab.gz"), 1, 0x801, ldims, 1, lab, N);
  struct stat st;
  assert_int_equal(stat(t->path[0], &st), 0);
  assert_int_equal(truncate(t->path[0], st.st_size / 2), 0);
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[1], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[0], "truncated", "pixels", NULL);
}

static void test_idx_count_mismatch(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512];
  const uint32_t ldims[1] = {2};
  write_tiny(t, 0, "img", "lab");
  write_idx(tmp_path(t, 2, "lab2"), 0, 0x801, ldims, 1, tiny_lab, 2);
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[2], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], t->path[0], "2 labels", "3 images", NULL);
  assert_null(ds.px);
  assert_null(ds.y);
}

static void test_idx_label_out_of_range(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512];
  const uint32_t ldims[1] = {3};
  const uint8_t bad[3] = {1, 2, 10};
  write_tiny(t, 0, "img", "lab");
  write_idx(tmp_path(t, 2, "lab10"), 0, 0x801, ldims, 1, bad, 3);
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[2], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "label 10", "sample 2", "out of range", NULL);
}

static void test_idx_missing_file(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512];
  write_tiny(t, 0, "img", "lab");
  tmp_path(t, 2, "nope");
  assert_int_equal(
      worker_data_load_idx(t->path[2], t->path[1], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "no such file", "dataset-fashion-mnist",
                 "scripts/setup.sh", NULL);
  assert_int_equal(
      worker_data_load_idx(t->path[0], t->path[2], &ds, err, sizeof err), -1);
  assert_err_has(err, t->path[2], "no such file", NULL);
  /* worker_data_load_fashion names the standard file in the given directory. */
  assert_int_equal(
      worker_data_load_fashion(t->dir, false, &ds, err, sizeof err), -1);
  assert_err_has(err, t->dir, "t10k-images-idx3-ubyte.gz", "no such file",
                 NULL);
}

/* worker_data_load_fashion falls back to uncompressed files of the standard
 * names. */
static void test_fashion_uncompressed_names(void **state) {
  tmp_dir *t = *state;
  data_set ds;
  char err[512] = "";
  write_tiny(t, 0, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  assert_int_equal(worker_data_load_fashion(t->dir, true, &ds, err, sizeof err),
                   0);
  check_tiny(&ds);
  worker_data_free(&ds);
}

static void test_fashion_real_test_set(void **unused) {
  (void)unused;
  data_set ds;
  char err[512] = "";
  if (access(DATA_FASHION_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
    print_message("skipped: %s absent (apt-get install dataset-fashion-mnist)"
                  "\n",
                  DATA_FASHION_DIR);
    skip();
  }
  assert_int_equal(worker_data_load_fashion(NULL, false, &ds, err, sizeof err),
                   0);
  assert_int_equal(ds.n, 10000);
  assert_int_equal(ds.rows, 28);
  assert_int_equal(ds.cols, 28);
  unsigned count[10] = {0};
  for (uint32_t i = 0; i < ds.n; i++) {
    assert_true(ds.y[i] < 10);
    count[ds.y[i]]++;
  }
  for (int c = 0; c < 10; c++) /* the test set is balanced */
    assert_int_equal(count[c], 1000);
  float lo = 1, hi = 0;
  double sum = 0;
  float x[784];
  for (uint32_t i = 0; i < ds.n; i++) {
    worker_data_sample(&ds, i, x);
    for (int j = 0; j < 784; j++) {
      lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
      sum += x[j];
    }
  }
  assert_float_equal(lo, 0.0f, 0.0f);
  assert_float_equal(hi, 1.0f, 0.0f);
  assert_float_equal(sum / ((double)ds.n * 784), DATA_FASHION_MEAN, 0.01);
  worker_data_free(&ds);
}

/* ---- synthetic data, normalisation, gather ------------------------------ */

static void test_synthetic(void **unused) {
  (void)unused;
  data_set a, b, c;
  assert_int_equal(worker_data_synthetic(500, 7, 5, 42, &a), 0);
  assert_int_equal(worker_data_synthetic(500, 7, 5, 42, &b), 0);
  assert_int_equal(worker_data_synthetic(500, 7, 5, 43, &c), 0);
  assert_int_equal(a.n, 500);
  assert_int_equal(a.rows * a.cols, 7);
  assert_int_equal(a.classes, 5);
  float xa[500 * 7], xb[500 * 7], xc[500 * 7];
  uint32_t all[500];
  for (uint32_t i = 0; i < 500; i++)
    all[i] = i;
  worker_data_gather(&a, all, 500, xa, NULL);
  worker_data_gather(&b, all, 500, xb, NULL);
  worker_data_gather(&c, all, 500, xc, NULL);
  assert_memory_equal(xa, xb, sizeof xa);
  assert_memory_equal(a.y, b.y, 500);
  assert_memory_not_equal(xa, xc, sizeof xa);
  /* Noise of standard deviation 0.5 around prototypes in [0,1). */
  double mean = 0, sq = 0;
  for (uint32_t i = 0; i < 500 * 7; i++) {
    double d = xa[i] - a.proto[a.y[i / 7] * 7 + i % 7];
    mean += d, sq += d * d;
  }
  mean /= 500 * 7;
  assert_true(fabs(mean) < 0.05);
  assert_true(fabs(sqrt(sq / (500 * 7) - mean * mean) - 0.5) < 0.05);
  /* No two samples share their noise. */
  for (uint32_t i = 1; i < 500; i++) {
    float d0[7], d1[7];
    for (int j = 0; j < 7; j++) {
      d0[j] = xa[j] - a.proto[a.y[0] * 7 + j];
      d1[j] = xa[7 * i + j] - a.proto[a.y[i] * 7 + j];
    }
    assert_memory_not_equal(d0, d1, sizeof d0);
  }
  unsigned count[5] = {0};
  for (int i = 0; i < 500; i++) {
    assert_true(a.y[i] < 5);
    count[a.y[i]]++;
  }
  for (int k = 0; k < 5; k++) /* uniform labels: 100 expected per class */
    assert_in_range(count[k], 60, 140);
  worker_data_free(&a), worker_data_free(&b), worker_data_free(&c);
  assert_int_equal(worker_data_synthetic(10, 7, 1, 1, &a), -1);
  assert_int_equal(worker_data_synthetic(0, 7, 3, 1, &a), -1);
}

static void test_gather_and_normalize(void **unused) {
  (void)unused;
  data_set ds;
  assert_int_equal(worker_data_synthetic(20, 4, 3, 9, &ds), 0);
  const uint32_t idx[3] = {17, 0, 5};
  float x[12];
  uint8_t y[3];
  worker_data_gather(&ds, idx, 3, x, y);
  for (int i = 0; i < 3; i++) {
    float one[4];
    worker_data_sample(&ds, idx[i], one);
    assert_memory_equal(x + 4 * i, one, sizeof one);
    assert_int_equal(y[i], ds.y[idx[i]]);
  }
  worker_data_normalize(&ds, 0.25f, 0.5f);
  worker_data_gather(&ds, idx, 3, x + 0, NULL);
  float again[4];
  ds.mul = 1.0f, ds.add = 0.0f; /* the raw values once more */
  worker_data_sample(&ds, idx[1], again);
  assert_float_equal(x[4 + 2], (again[2] - 0.25f) / 0.5f, 1e-6f);
  worker_data_free(&ds);
}

/* ---- sampler ------------------------------------------------------------ */

/* W ranks with batch b see, step by step, exactly one rank's batch W*b. */
static void test_sampler_partition(void **unused) {
  (void)unused;
  enum { N = 103, W = 3, B = 5 };
  data_sampler r[W], one;
  for (uint32_t k = 0; k < W; k++)
    assert_int_equal(worker_data_sampler_init(&r[k], N, W, k, B, 77), 0);
  assert_int_equal(worker_data_sampler_init(&one, N, 1, 0, W * B, 77), 0);
  assert_int_equal(worker_data_sampler_steps(&one), N / (W * B));
  assert_int_equal(worker_data_sampler_steps(&r[1]), 6);
  for (uint32_t epoch = 0; epoch < 3; epoch++) {
    for (uint32_t k = 0; k < W; k++)
      worker_data_sampler_epoch(&r[k], epoch);
    worker_data_sampler_epoch(&one, epoch);
    for (uint32_t step = 0; step < worker_data_sampler_steps(&one); step++) {
      const uint32_t *all = worker_data_sampler_batch(&one, step);
      uint8_t seen[N] = {0};
      for (uint32_t k = 0; k < W; k++) {
        const uint32_t *mine = worker_data_sampler_batch(&r[k], step);
        assert_non_null(mine);
        assert_memory_equal(mine, all + k * B, B * sizeof *mine);
        for (int i = 0; i < B; i++) {
          assert_true(mine[i] < N);
          assert_int_equal(seen[mine[i]]++, 0); /* disjoint */
        }
      }
    }
    assert_null(
        worker_data_sampler_batch(&r[0], worker_data_sampler_steps(&r[0])));
  }
  for (uint32_t k = 0; k < W; k++)
    worker_data_sampler_free(&r[k]);
  worker_data_sampler_free(&one);
}

static void test_sampler_epochs(void **unused) {
  (void)unused;
  data_sampler s;
  uint32_t e0[103];
  assert_int_equal(worker_data_sampler_init(&s, 103, 1, 0, 15, 5), 0);
  memcpy(e0, s.perm, sizeof e0);
  uint8_t seen[103] = {0};
  for (int i = 0; i < 103; i++) /* a permutation */
    assert_int_equal(seen[e0[i]]++, 0);
  worker_data_sampler_epoch(&s, 1);
  assert_memory_not_equal(s.perm, e0, sizeof e0);
  worker_data_sampler_epoch(&s, 0); /* deterministic */
  assert_memory_equal(s.perm, e0, sizeof e0);
  worker_data_sampler_free(&s);
  assert_null(s.perm);
}

static void test_sampler_bad_args(void **unused) {
  (void)unused;
  data_sampler s;
  assert_int_equal(worker_data_sampler_init(&s, 103, 3, 0, 35, 1), -1);
  assert_null(s.perm);
  assert_int_equal(worker_data_sampler_init(&s, 103, 3, 3, 5, 1), -1);
  assert_int_equal(worker_data_sampler_init(&s, 103, 0, 0, 5, 1), -1);
  assert_int_equal(worker_data_sampler_init(&s, 103, 1, 0, 0, 1), -1);
  assert_int_equal(worker_data_sampler_init(&s, 15, 3, 2, 5, 1), 0);
  assert_int_equal(worker_data_sampler_steps(&s), 1);
  worker_data_sampler_free(&s);
}

/* ---- model_mlp_parse
 * ---------------------------------------------------------- */

static void test_mlp_parse_good(void **unused) {
  (void)unused;
  uint32_t w[8], n = 0;
  char err[256];
  assert_int_equal(
      model_mlp_parse("mlp:784,512,256,10", w, 8, &n, err, sizeof err), 0);
  assert_int_equal(n, 4);
  assert_int_equal(w[0], 784);
  assert_int_equal(w[1], 512);
  assert_int_equal(w[2], 256);
  assert_int_equal(w[3], 10);
  assert_int_equal(model_mlp_parse("mlp:1,1000000", w, 2, &n, err, sizeof err),
                   0);
  assert_int_equal(n, 2);
  assert_int_equal(w[1], 1000000);
}

static void test_mlp_parse_bad(void **unused) {
  (void)unused;
  uint32_t w[4], n = 99;
  char err[256];
  static const struct {
    const char *desc, *says;
  } cases[] = {
      {"784,10", "expected 'mlp:'"},
      {"cnn:784,10", "expected 'mlp:'"},
      {"mlp:", "width 1 is not"},
      {"mlp:784", "at least 2 widths"},
      {"mlp:784,", "width 2 is not"},
      {"mlp:784,,10", "width 2 is not"},
      {"mlp:784,-5", "width 2 is not"},
      {"mlp:784,ten", "width 2 is not"},
      {"mlp:784,10x", "width 2 is not"},
      {"mlp:784, 10", "width 2 is not"},
      {"mlp:784,0", "width 2 must be 1..1000000"},
      {"mlp:784,1000001", "width 2 must be 1..1000000"},
      {"mlp:784,99999999999999999999999", "width 2 must be 1..1000000"},
      {"mlp:1,2,3,4,5", "more than 4 widths"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    err[0] = '\0';
    assert_int_equal(model_mlp_parse(cases[i].desc, w, 4, &n, err, sizeof err),
                     -1);
    assert_err_has(err, cases[i].says, cases[i].desc, NULL);
  }
  assert_int_equal(n, 99); /* untouched on failure */
  assert_int_equal(model_mlp_parse(NULL, w, 4, &n, err, sizeof err), -1);
}

/* ---- mlp ---------------------------------------------------------------- */

static void test_mlp_shapes(void **unused) {
  (void)unused;
  const uint32_t w[4] = {784, 512, 256, 10};
  mlp *m = model_mlp_create(w, 4, 64);
  assert_non_null(m);
  assert_int_equal(model_mlp_num_layers(m), 3);
  assert_int_equal(model_mlp_width(m, 3), 10);
  assert_int_equal(model_mlp_layer_size(m, 0), 512 * 784 + 512);
  assert_int_equal(model_mlp_layer_size(m, 2), 10 * 256 + 10);
  /* outputs 512+256+10 plus two gradient buffers of 512, per row */
  assert_int_equal(model_mlp_workspace_bytes(w, 4, 64),
                   64 * 4 * (512 + 256 + 10 + 2 * 512));
  model_mlp_destroy(m);
  const uint32_t bad[2] = {5, 0};
  assert_null(model_mlp_create(bad, 2, 4));
  assert_null(model_mlp_create(w, 1, 4));
  assert_null(model_mlp_create(w, 4, 0));
}

/* Forward against a naive double-precision reference of the same net. */
static void test_mlp_forward_reference(void **unused) {
  (void)unused;
  enum { B = 3 };
  const uint32_t w[3] = {6, 5, 4};
  float p0[5 * 6 + 5], p1[4 * 5 + 4], x[B * 6];
  fill_uniform(p0, 35, 1, 0.8f);
  fill_uniform(p1, 24, 2, 0.8f);
  fill_uniform(x, B * 6, 3, 1.0f);
  mlp *m = model_mlp_create(w, 3, B);
  assert_non_null(m);
  model_mlp_forward_layer(m, 0, p0, x, B);
  model_mlp_forward_layer(m, 1, p1, NULL, B);
  const float *out = model_mlp_output(m);
  for (int i = 0; i < B; i++) {
    double h[5];
    for (int o = 0; o < 5; o++) {
      h[o] = p0[30 + o];
      for (int k = 0; k < 6; k++)
        h[o] += (double)p0[o * 6 + k] * x[i * 6 + k];
      h[o] = h[o] > 0 ? h[o] : 0;
    }
    for (int o = 0; o < 4; o++) {
      double y = p1[20 + o];
      for (int k = 0; k < 5; k++)
        y += (double)p1[o * 5 + k] * h[k];
      assert_float_equal(out[i * 4 + o], y, 1e-5);
    }
  }
  model_mlp_destroy(m);
}

/* Zero weights make the logits the bias: check loss, argmax and stability. */
static void test_mlp_loss_values(void **unused) {
  (void)unused;
  const uint32_t w[2] = {2, 3};
  float p[3 * 2 + 3] = {0}, x[4] = {1, 2, 3, 4};
  const uint8_t y[2] = {0, 2};
  uint32_t correct = 99;
  mlp *m = model_mlp_create(w, 2, 2);
  assert_non_null(m);
  model_mlp_forward_layer(m, 0, p, x, 2);
  assert_float_equal(model_mlp_loss(m, y, 2, &correct), logf(3.0f), 1e-6);
  assert_int_equal(correct, 1);                 /* ties: argmax is class 0 */
  p[6] = 1000.0f, p[7] = 0.0f, p[8] = -1000.0f; /* huge logits stay finite */
  model_mlp_forward_layer(m, 0, p, x, 2);
  float loss = model_mlp_loss(m, y, 2, &correct);
  assert_true(isfinite(loss));
  assert_float_equal(loss, 2000.0f / 2, 1e-3); /* (0 + 2000) / 2 */
  assert_int_equal(correct, 1);
  const uint8_t out_of_range[2] = {0, 3};
  assert_true(isnan(model_mlp_loss(m, out_of_range, 2, NULL)));
  model_mlp_destroy(m);
}

/* Analytic gradients of every weight and bias against central differences. */
static void gradcheck(const uint32_t *w, uint32_t nw, uint32_t b,
                      uint64_t seed) {
  const uint32_t L = nw - 1;
  float *p[8], *g[8], x[64];
  uint8_t y[16];
  mlp *m = model_mlp_create(w, nw, b);
  assert_non_null(m);
  fill_uniform(x, (size_t)b * w[0], seed, 1.0f);
  for (uint32_t i = 0; i < b; i++)
    y[i] = (uint8_t)((i * 7 + seed) % w[L]);
  for (uint32_t l = 0; l < L; l++) {
    size_t n = model_mlp_layer_size(m, l);
    p[l] = malloc(n * sizeof(float)), g[l] = malloc(n * sizeof(float));
    assert_true(p[l] != NULL && g[l] != NULL);
    fill_uniform(p[l], n, seed * 31 + l, 0.7f);
  }
  model_mlp_eval_batch(m, (const float *const *)p, x, y, b, NULL);
  for (uint32_t l = L; l-- > 0;)
    model_mlp_backward_layer(m, l, p[l], g[l], b);
  const float eps = 1e-3f;
  double worst = 0;
  for (uint32_t l = 0; l < L; l++) {
    for (size_t i = 0; i < model_mlp_layer_size(m, l); i++) {
      float keep = p[l][i];
      p[l][i] = keep + eps;
      double up =
          model_mlp_eval_batch(m, (const float *const *)p, x, y, b, NULL);
      p[l][i] = keep - eps;
      double down =
          model_mlp_eval_batch(m, (const float *const *)p, x, y, b, NULL);
      p[l][i] = keep;
      double num = (up - down) / (2 * eps), ana = g[l][i];
      double rel = fabs(num - ana) / fmax(fmax(fabs(num), fabs(ana)), 1e-2);
      if (rel >= 1e-2)
        fail_msg("layer %u element %zu: analytic %.6g, numeric %.6g", l, i, ana,
                 num);
      worst = fmax(worst, rel);
    }
  }
  print_message("gradcheck: worst relative error %.2g\n", worst);
  for (uint32_t l = 0; l < L; l++)
    free(p[l]), free(g[l]);
  model_mlp_destroy(m);
}

static void test_mlp_gradcheck_2_layers(void **unused) {
  (void)unused;
  const uint32_t w[3] = {5, 4, 3};
  gradcheck(w, 3, 2, 11);
}

static void test_mlp_gradcheck_3_layers(void **unused) {
  (void)unused;
  const uint32_t w[4] = {6, 5, 4, 3};
  gradcheck(w, 4, 3, 12);
}

/* Backward with the gradient written over the parameters gives, bit for
 * bit, the gradient and the input gradients of the two-buffer backward,
 * at a size where OpenBLAS blocks the products. */
static void test_mlp_backward_inplace_same_bits(void **unused) {
  (void)unused;
  enum { B = 64, L = 3 };
  const uint32_t w[L + 1] = {300, 257, 130, 10};
  uint8_t y[B];
  float *x = malloc((size_t)B * w[0] * sizeof(float)), *p[L], *g[L], *q[L];
  fill_uniform(x, (size_t)B * w[0], 5, 1.0f);
  for (uint32_t i = 0; i < B; i++)
    y[i] = (uint8_t)(i * 7 % 10);
  mlp *m = model_mlp_create(w, L + 1, B);
  assert_non_null(m);
  for (uint32_t l = 0; l < L; l++) {
    size_t n = model_mlp_layer_size(m, l);
    p[l] = malloc(n * 4), g[l] = malloc(n * 4), q[l] = malloc(n * 4);
    fill_uniform(p[l], n, 40 + l, 0.2f);
    memcpy(q[l], p[l], n * 4);
  }
  model_mlp_eval_batch(m, (const float *const *)p, x, y, B, NULL);
  for (uint32_t l = L; l-- > 0;)
    model_mlp_backward_layer(m, l, p[l], g[l], B);
  model_mlp_eval_batch(m, (const float *const *)p, x, y, B, NULL);
  for (uint32_t l = L; l-- > 0;)
    model_mlp_backward_layer_inplace(m, l, q[l], B);
  for (uint32_t l = 0; l < L; l++) {
    if (memcmp(g[l], q[l], model_mlp_layer_size(m, l) * 4) != 0)
      fail_msg("layer %u: the in-place gradient differs", l);
    free(p[l]), free(g[l]), free(q[l]);
  }
  model_mlp_destroy(m);
  free(x);
}

/* He-uniform weights and nn.Linear's bias init, as the spec declares. */
static void init_layer(float *p, uint32_t in, uint32_t out, uint64_t seed) {
  fill_uniform(p, (size_t)out * in, seed, sqrtf(6.0f / in));
  fill_uniform(p + (size_t)out * in, out, seed + 1000, 1.0f / sqrtf(in));
}

/* Fraction of ds classified correctly, in batches of b. */
static double accuracy(mlp *m, float *const *p, const data_set *ds, uint32_t b,
                       float *x, uint8_t *y) {
  uint32_t hits = 0, c, idx[256];
  for (uint32_t s = 0; s + b <= ds->n; s += b) {
    for (uint32_t i = 0; i < b; i++)
      idx[i] = s + i;
    worker_data_gather(ds, idx, b, x, y);
    model_mlp_eval_batch(m, (const float *const *)p, x, y, b, &c);
    hits += c;
  }
  return (double)hits / (ds->n / b * b);
}

static void test_mlp_sgd_learns(void **unused) {
  (void)unused;
  enum { N = 1024, D = 20, C = 4, B = 32, STEPS = 50 };
  const uint32_t w[3] = {D, 32, C};
  const float lr = 0.2f;
  data_set ds;
  data_sampler s;
  float *p[2], *g[2], x[B * D];
  uint8_t y[B];
  assert_int_equal(worker_data_synthetic(N, D, C, 3, &ds), 0);
  assert_int_equal(worker_data_sampler_init(&s, N, 1, 0, B, 4), 0);
  mlp *m = model_mlp_create(w, 3, B);
  assert_non_null(m);
  for (uint32_t l = 0; l < 2; l++) {
    size_t n = model_mlp_layer_size(m, l);
    p[l] = malloc(n * sizeof(float)), g[l] = malloc(n * sizeof(float));
    assert_true(p[l] != NULL && g[l] != NULL);
    init_layer(p[l], w[l], w[l + 1], 100 + l);
  }
  double first = 0, last = 0;
  for (uint32_t t = 0; t < STEPS; t++) {
    uint32_t k = t % worker_data_sampler_steps(&s);
    if (k == 0 && t > 0)
      worker_data_sampler_epoch(&s, t / worker_data_sampler_steps(&s));
    worker_data_gather(&ds, worker_data_sampler_batch(&s, k), B, x, y);
    double loss =
        model_mlp_eval_batch(m, (const float *const *)p, x, y, B, NULL);
    for (uint32_t l = 2; l-- > 0;) {
      model_mlp_backward_layer(m, l, p[l], g[l], B);
      for (size_t i = 0; i < model_mlp_layer_size(m, l); i++)
        p[l][i] -= lr * g[l][i];
    }
    first += t < 5 ? loss / 5 : 0;
    last += t >= STEPS - 5 ? loss / 5 : 0;
  }
  double acc = accuracy(m, p, &ds, B, x, y);
  print_message("sgd: loss %.3f -> %.3f, accuracy %.3f\n", first, last, acc);
  assert_true(last < first / 2);
  assert_true(acc > 0.7); /* chance is 0.25 */
  for (uint32_t l = 0; l < 2; l++)
    free(p[l]), free(g[l]);
  model_mlp_destroy(m);
  worker_data_sampler_free(&s);
  worker_data_free(&ds);
}

/* ---- status page ----------------------------------------------------------
 */

/* The figures after step k of a run at 100 steps/s, 10 samples a step. */
static worker_now tick(uint64_t k) {
  return (worker_now){.seconds = (double)k * 0.01,
                      .step = k,
                      .total_steps = 10,
                      .samples = k * 10,
                      .epoch = 1,
                      .epochs = 2,
                      .loss = 0.25,
                      .samples_per_s = 1000,
                      .wait_fraction = 0.5,
                      .accuracy = 0.125};
}

/* However long the run, the points stay within bounds, in order, and
 * exact: each the mean loss of its own steps (the batch loss of step k is
 * k, so the mean over (a, b] is (a + 1 + b) / 2), and the rate of its
 * interval (1000 samples/s throughout). */
static void test_history_bounded_and_exact(void **unused) {
  (void)unused;
  worker_history *h = worker_history_create(8);
  worker_point pts[9];
  worker_now now;
  assert_int_equal(worker_history_cap(h), 9);
  assert_int_equal(worker_history_read(h, &now, pts, 9), 0);
  assert_true(isnan(now.loss) && isnan(now.accuracy) && now.step == 0);
  for (uint64_t k = 1; k <= 4000; k++) {
    worker_now w = tick(k);
    worker_history_record(h, &w, (double)k);
  }
  size_t n = worker_history_read(h, &now, pts, 9);
  assert_true(n >= 4 && n <= 9);
  assert_int_equal(now.step, 4000);
  assert_true(isnan(now.accuracy)); /* set only by worker_history_accuracy */
  assert_int_equal(pts[n - 1].step, 4000);
  for (size_t i = 0; i < n; i++) {
    uint64_t prev = i ? pts[i - 1].step : 0;
    assert_true(pts[i].step > prev);
    assert_true(fabs(pts[i].loss - (double)(prev + 1 + pts[i].step) / 2) <
                1e-9);
    assert_true(fabs(pts[i].samples_per_s - 1000) < 1e-6);
  }
  worker_history_accuracy(h, 0.875);
  worker_now w = tick(4001);
  worker_history_record(h, &w, 1);
  worker_history_read(h, &now, pts, 9);
  assert_true(now.accuracy == 0.875 && now.step == 4001);
  worker_history_destroy(h);
  assert_null(worker_history_create(1));
}

static void contains(const char *text, const char *want) {
  if (strstr(text, want) == NULL)
    fail_msg("missing \"%s\" in:\n%s", want, text);
}

/* A page before any step, then after three (two intervals closed, one
 * open): its JSON and HTML carry the figures and the chart, and the model
 * string, which comes from the command line, escaped. */
static void test_worker_page(void **unused) {
  (void)unused;
  worker_history *h = worker_history_create(16);
  worker_page p = {.rank = 1,
                   .world = 2,
                   .model = "mlp:<b>&\"x\"</b>",
                   .mode = "bsp",
                   .history = h};
  size_t len = 0;
  char *j = worker_page_json(&p, &len);
  assert_int_equal(len, strlen(j));
  contains(j,
           "{\"process\":\"fsps-worker\",\"rank\":1,\"world\":2,"
           "\"model\":\"mlp:\\u003cb\\u003e\\u0026\\\"x\\\"\\u003c/b\\u003e\"");
  contains(j, "\"loss\":null,");
  contains(j, "\"step\":[],\"loss\":[]");
  free(j);
  double at[] = {0.6, 1.2, 1.3}, loss[] = {2, 1, 0.5};
  for (int k = 0; k < 3; k++) {
    worker_now w = tick((uint64_t)k + 1);
    w.seconds = at[k];
    worker_history_record(h, &w, loss[k]);
  }
  j = worker_page_json(&p, NULL);
  contains(j, "\"step\":3,\"total_steps\":10,\"samples\":30,\"loss\":0.25,");
  contains(j, "\"test_accuracy\":null");
  contains(j, "\"step\":[1,2,3],\"loss\":[2,1,0.5],\"samples_per_s\":[");
  free(j);
  char *html = worker_page_html(&p, NULL);
  contains(html, "<title>fsps-worker 1 of 2</title>");
  contains(html, "mlp:&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;");
  assert_null(strstr(html, "<b>"));
  contains(html, "id=\"step\">3 of 10</div>");
  contains(html, "id=\"loss\">0.2500</div>");
  contains(html, "id=\"loss-line\" stroke=\"#c2410c\" "
                 "points=\"50.0,8.0 300.0,75.0 550.0,108.5\"");
  contains(html, "<text id=\"loss-ymax\" x=\"46\" y=\"16\" "
                 "text-anchor=\"end\">2.00</text>");
  contains(html, "id=\"rate-line\"");
  contains(html, "poll('/status.json',2000,show);");
  free(html);
  worker_history_destroy(h);
}

int main(void) {
#define TMP_TEST(f) cmocka_unit_test_setup_teardown(f, tmp_setup, tmp_teardown)
  const struct CMUnitTest tests[] = {
      TMP_TEST(test_idx_plain_loads),
      TMP_TEST(test_idx_gzip_loads),
      TMP_TEST(test_idx_bad_magic),
      TMP_TEST(test_idx_truncated),
      TMP_TEST(test_idx_truncated_gzip),
      TMP_TEST(test_idx_count_mismatch),
      TMP_TEST(test_idx_label_out_of_range),
      TMP_TEST(test_idx_missing_file),
      TMP_TEST(test_fashion_uncompressed_names),
      cmocka_unit_test(test_fashion_real_test_set),
      cmocka_unit_test(test_synthetic),
      cmocka_unit_test(test_gather_and_normalize),
      cmocka_unit_test(test_sampler_partition),
      cmocka_unit_test(test_sampler_epochs),
      cmocka_unit_test(test_sampler_bad_args),
      cmocka_unit_test(test_mlp_parse_good),
      cmocka_unit_test(test_mlp_parse_bad),
      cmocka_unit_test(test_mlp_shapes),
      cmocka_unit_test(test_mlp_forward_reference),
      cmocka_unit_test(test_mlp_loss_values),
      cmocka_unit_test(test_mlp_gradcheck_2_layers),
      cmocka_unit_test(test_mlp_gradcheck_3_layers),
      cmocka_unit_test(test_mlp_backward_inplace_same_bits),
      cmocka_unit_test(test_mlp_sgd_learns),
      cmocka_unit_test(test_history_bounded_and_exact),
      cmocka_unit_test(test_worker_page),
  };
#undef TMP_TEST
  return cmocka_run_group_tests(tests, NULL, NULL);
}
