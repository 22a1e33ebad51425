/* test_serve_load.c: unit tests of what fsps-serve and fsps-export load and
 * write without a network — ckpt/'s sets of files written at S = 1, 2, 3
 * reassembled into whole layers, and the safetensors writer against a
 * header written out by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "ckpt_set.h"
#include "fmt.h"
#include "fsps_err.h"
#include "mlp_spec.h"
#include "safetensors.h"
#include "shard.h"

#define PER 3 /* floats per element: the parameter and two state vectors */

static const uint64_t sizes[] = {50, 5, 33}; /* 5: empty slices at S=3 */
#define NL (sizeof sizes / sizeof sizes[0])

/* value is the float vector j of layer l holds at element i. */
static float value(uint32_t l, uint32_t j, uint64_t i) {
  return (float)(1000 * l + 100 * j) + (float)i * 0.5f;
}

static void make_dir(char *dir, size_t len) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, len, "%s/test_serve_load.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* write_file writes server s of S's checkpoint at version tag. */
static void write_file(const char *dir, uint32_t s, uint32_t S, uint64_t tag) {
  char msg[512];
  ckpt_header h = {.S = S, .s = s, .W = 1, .nlayers = NL, .hash = 42,
                   .tag = tag, .spec = "spec", .speclen = 4};
  ckpt_writer *w = ckpt_writer_open(dir, &h, msg, sizeof msg);
  assert_non_null(w);
  for (uint32_t l = 0; l < NL; l++) {
    uint64_t off, cnt;
    shard_slice(sizes[l], S, s, &off, &cnt);
    ckpt_writer_layer(w, &(ckpt_layer_head){l, cnt, tag, PER * cnt});
    for (uint32_t j = 0; j < PER; j++)
      for (uint64_t i = off; i < off + cnt; i++) {
        float v = value(l, j, i);
        ckpt_writer_floats(w, &v, 1);
      }
  }
  assert_int_equal(ckpt_writer_commit(w, msg, sizeof msg), FSPS_OK);
  ckpt_writer_destroy(w);
}

/* check_set reads every layer of the set back, keeping `keep` vectors. */
static void check_set(ckpt_set *set, uint32_t per, uint32_t keep,
                      uint64_t tag) {
  char msg[1024];
  for (uint32_t l = 0; l < NL; l++) {
    float *buf = calloc(sizes[l] * keep, sizeof(float));
    uint64_t v = 0;
    ckpt_layer_req q = {l, "layer", sizes[l], per, keep};
    assert_int_equal(ckpt_set_read_layer(set, &q, buf, &v, msg, sizeof msg),
                     FSPS_OK);
    assert_int_equal(v, tag);
    for (uint32_t j = 0; j < keep; j++)
      for (uint64_t i = 0; i < sizes[l]; i++)
        assert_true(buf[j * sizes[l] + i] == value(l, j, i));
    free(buf);
  }
  assert_int_equal(ckpt_set_end(set, msg, sizeof msg), FSPS_OK);
}

static void assembles_at_S(uint32_t S) {
  char dir[4096], msg[1024];
  make_dir(dir, sizeof dir);
  for (uint32_t s = 0; s < S; s++)
    write_file(dir, s, S, 7);
  for (uint32_t keep = 1; keep <= PER; keep += PER - 1)
    for (uint32_t per = 0; per <= PER; per += PER) {
      ckpt_set *set = NULL;
      ckpt_set_opts o = {.dir = dir, .tool = "test"};
      assert_int_equal(ckpt_set_open(&o, &set, msg, sizeof msg), FSPS_OK);
      assert_int_equal(ckpt_set_servers(set), S);
      assert_int_equal(ckpt_set_version(set), 7);
      check_set(set, per, keep, 7);
      ckpt_set_close(set);
    }
  remove_dir(dir);
}

static void assembles_S1(void **state) {
  (void)state;
  assembles_at_S(1);
}

static void assembles_S2(void **state) {
  (void)state;
  assembles_at_S(2);
}

static void assembles_S3(void **state) {
  (void)state;
  assembles_at_S(3);
}

/* A newer set missing a server's file is refused by name; the older
 * complete one is opened. Alone, the incomplete set is an error. */
static void falls_back_past_an_incomplete_set(void **state) {
  (void)state;
  char dir[4096], msg[2048];
  make_dir(dir, sizeof dir);
  write_file(dir, 0, 3, 9);
  write_file(dir, 2, 3, 9);
  ckpt_set *set = NULL;
  ckpt_set_opts o = {.dir = dir, .tool = "test"};
  assert_int_not_equal(ckpt_set_open(&o, &set, msg, sizeof msg), FSPS_OK);
  assert_null(set);
  assert_non_null(strstr(msg, "ckpt-s1of3-v00000000000000000009.fsps is "
                              "missing"));
  write_file(dir, 0, 2, 4);
  write_file(dir, 1, 2, 4);
  assert_int_equal(ckpt_set_open(&o, &set, msg, sizeof msg), FSPS_OK);
  assert_int_equal(ckpt_set_servers(set), 2);
  check_set(set, PER, 1, 4);
  ckpt_set_close(set);
  remove_dir(dir);
}

/* A reader asking for more vectors than the files hold is refused. */
static void refuses_a_wrong_vector_count(void **state) {
  (void)state;
  char dir[4096], msg[1024];
  make_dir(dir, sizeof dir);
  write_file(dir, 0, 1, 1);
  ckpt_set *set = NULL;
  ckpt_set_opts o = {.dir = dir};
  assert_int_equal(ckpt_set_open(&o, &set, msg, sizeof msg), FSPS_OK);
  float buf[200];
  uint64_t v;
  ckpt_layer_req q = {0, "fc1", sizes[0], PER + 1, 1};
  assert_int_equal(ckpt_set_read_layer(set, &q, buf, &v, msg, sizeof msg),
                   FSPS_CORRUPT);
  assert_non_null(strstr(msg, "does not match its model's layers"));
  ckpt_set_close(set);
  remove_dir(dir);
}

/* ---- which specs fsps-serve computes ---- */

static void add_linear(shard_spec *sp, const char *name, uint64_t out,
                       uint64_t in) {
  uint64_t wd[2] = {out, in}, bd[1] = {out};
  assert_int_equal(shard_spec_add_layer(sp, name), FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(sp, "weight", 2, wd, SHARD_INIT_ZEROS, 0, 0),
      FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(sp, "bias", 1, bd, SHARD_INIT_ZEROS, 0, 0),
      FSPS_OK);
}

static void reads_an_mlps_widths(void **state) {
  (void)state;
  shard_spec *sp = shard_spec_create(1);
  add_linear(sp, "fc1", 256, 784);
  add_linear(sp, "fc2", 128, 256);
  add_linear(sp, "fc3", 10, 128);
  uint32_t w[SERVE_MAX_WIDTHS], nw = 0;
  char msg[512];
  assert_int_equal(serve_mlp_widths(sp, w, &nw, msg, sizeof msg), FSPS_OK);
  assert_int_equal(nw, 4);
  assert_int_equal(w[0], 784);
  assert_int_equal(w[1], 256);
  assert_int_equal(w[2], 128);
  assert_int_equal(w[3], 10);
  shard_spec_destroy(sp);
}

static void refuses_what_is_not_an_mlp(void **state) {
  (void)state;
  char msg[512];
  uint32_t w[SERVE_MAX_WIDTHS], nw;
  uint64_t k[4] = {8, 1, 3, 3}, b[1] = {8};
  shard_spec *sp = shard_spec_create(1);
  add_linear(sp, "fc1", 8, 9);
  shard_spec_add_layer(sp, "conv1");
  shard_spec_add_tensor(sp, "weight", 4, k, SHARD_INIT_ZEROS, 0, 0);
  shard_spec_add_tensor(sp, "bias", 1, b, SHARD_INIT_ZEROS, 0, 0);
  assert_int_equal(serve_mlp_widths(sp, w, &nw, msg, sizeof msg),
                   FSPS_UNIMPLEMENTED);
  assert_string_equal(msg, "cannot serve: layer 'conv1' has tensors weight "
                           "[8,1,3,3], bias [8]; fsps-serve computes MLPs "
                           "made of weight [out,in] + bias [out] layers");
  shard_spec_destroy(sp);
  sp = shard_spec_create(1); /* widths that do not chain */
  add_linear(sp, "fc1", 8, 9);
  add_linear(sp, "fc2", 2, 7);
  assert_int_equal(serve_mlp_widths(sp, w, &nw, msg, sizeof msg),
                   FSPS_UNIMPLEMENTED);
  assert_non_null(strstr(msg, "layer 'fc2' takes 7 inputs but layer 'fc1' "
                              "before it gives 8"));
  shard_spec_destroy(sp);
}

/* ---- batch input ---- */

/* write_idx writes an IDX ubyte file of n 3x3 images, cut to `keep`
 * pixel bytes. */
static void write_idx(const char *path, uint32_t n, size_t keep) {
  unsigned char h[16] = {0, 0, 8, 3, 0, 0, 0, (unsigned char)n,
                         0, 0, 0, 3, 0, 0, 0, 3};
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fwrite(h, 1, 16, f);
  for (size_t i = 0; i < keep; i++)
    fputc((int)(i * 25 % 256), f);
  fclose(f);
}

static void reads_idx_as_fsps_worker_scales_it(void **state) {
  (void)state;
  char dir[4096], path[4200], msg[512];
  make_dir(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/x.idx", dir);
  write_idx(path, 2, 18);
  batch_input *in;
  uint64_t rows;
  assert_int_equal(batch_input_open(path, NULL, 9, false, &in, &rows, msg,
                                    sizeof msg),
                   FSPS_OK);
  assert_int_equal(rows, 2);
  float x[18];
  uint32_t got;
  assert_int_equal(batch_input_read(in, x, 64, &got, msg, sizeof msg),
                   FSPS_OK);
  assert_int_equal(got, 2);
  for (int i = 0; i < 18; i++) /* worker/data.c: px * (1/255) + 0 */
    assert_true(x[i] == (float)(i * 25 % 256) * (1.0f / 255.0f) + 0.0f);
  assert_int_equal(batch_input_read(in, x, 64, &got, msg, sizeof msg),
                   FSPS_OK);
  assert_int_equal(got, 0);
  batch_input_close(in);
  assert_int_equal(batch_input_open(path, "idx", 8, false, &in, &rows, msg,
                                    sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "its rows hold 9 values but the model takes 8"));
  write_idx(path, 2, 13); /* cut inside the second image */
  assert_int_equal(batch_input_open(path, NULL, 9, false, &in, &rows, msg,
                                    sizeof msg),
                   FSPS_OK);
  assert_int_equal(batch_input_read(in, x, 64, &got, msg, sizeof msg),
                   FSPS_CORRUPT);
  assert_non_null(strstr(msg, "truncated"));
  batch_input_close(in);
  remove_dir(dir);
}

static void refuses_f32_rows_that_are_not_finite(void **state) {
  (void)state;
  char dir[4096], path[4200], msg[512];
  make_dir(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/x.f32", dir);
  float v[12] = {0};
  v[7] = NAN;
  FILE *f = fopen(path, "wb");
  fwrite(v, 4, 12, f);
  fclose(f);
  batch_input *in;
  uint64_t rows;
  float x[12];
  uint32_t got;
  assert_int_equal(batch_input_open(path, NULL, 5, false, &in, &rows, msg,
                                    sizeof msg),
                   FSPS_INVALID_ARGUMENT); /* 12 floats: no whole rows of 5 */
  assert_int_equal(batch_input_open(path, NULL, 4, false, &in, &rows, msg,
                                    sizeof msg),
                   FSPS_OK);
  assert_int_equal(rows, 3);
  assert_int_equal(batch_input_read(in, x, 3, &got, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "row 1 holds NaN at column 3"));
  batch_input_close(in);
  remove_dir(dir);
}

/* ---- safetensors ---- */

static serve_snapshot *small_model(void) {
  uint32_t w[] = {3, 2, 1};
  serve_snapshot *s = serve_snapshot_new(w, 3, 7);
  for (uint32_t l = 0; l < 2; l++)
    for (uint64_t i = 0; i < serve_snapshot_layer_size(s, l); i++)
      s->params[l][i] = (float)(10 * l + i);
  return s;
}

static const char want_header[] =
    "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]},"
    "\"2.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[32,40]},"
    "\"2.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[40,44]},"
    "\"__metadata__\":{\"format\":\"pt\",\"fsps_version\":\"9.9.9\","
    "\"model_version\":\"7\",\"widths\":\"3,2,1\"}}";

static void safetensors_header_by_hand(void **state) {
  (void)state;
  serve_snapshot *s = small_model();
  size_t len;
  char *h = serve_safetensors_header(s, "9.9.9", &len);
  size_t n = strlen(want_header);
  assert_int_equal(len % 8, 0);
  assert_true(len >= n && len < n + 8);
  assert_memory_equal(h, want_header, n);
  for (size_t i = n; i < len; i++)
    assert_int_equal(h[i], ' ');
  free(h);
  serve_snapshot_unref(s);
}

static void safetensors_file_by_hand(void **state) {
  (void)state;
  char dir[4096], path[4200], msg[512];
  make_dir(dir, sizeof dir);
  snprintf(path, sizeof path, "%s/m.safetensors", dir);
  serve_snapshot *s = small_model();
  assert_int_equal(serve_safetensors_write(path, s, "9.9.9", msg, sizeof msg),
                   FSPS_OK);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  uint64_t hlen;
  assert_int_equal(fread(&hlen, 8, 1, f), 1);
  assert_int_equal(hlen, (strlen(want_header) + 7) / 8 * 8);
  assert_int_equal(fseek(f, (long)(8 + hlen), SEEK_SET), 0);
  float data[12];
  assert_int_equal(fread(data, 4, 12, f), 11);
  fclose(f);
  const float want[11] = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12};
  assert_memory_equal(data, want, sizeof want);
  /* an unwritable place: an error, and no file */
  snprintf(path, sizeof path, "%s/no/such/m.safetensors", dir);
  assert_int_equal(serve_safetensors_write(path, s, "9.9.9", msg, sizeof msg),
                   FSPS_IO);
  assert_non_null(strstr(msg, "cannot write"));
  serve_snapshot_unref(s);
  remove_dir(dir);
}

/* ---- serve_fmt_g9 against printf's "%.9g" ---- */

static void same_as_printf(float f) {
  char want[64], got[SERVE_FMT_G9_MAX];
  snprintf(want, sizeof want, "%.9g", (double)f);
  size_t n = serve_fmt_g9(f, got);
  if (strcmp(want, got) != 0 || n != strlen(want))
    fail_msg("%a: printf says %s, serve_fmt_g9 %s (%zu)", (double)f, want,
             got, n);
}

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Every float from bits lo for n consecutive bit patterns. */
static void sweep(uint32_t lo, uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    same_as_printf(from_bits(lo + i));
}

static void fmt_g9_is_printfs(void **state) {
  (void)state;
  const float fixed[] = {0.0f, -0.0f, 1.0f, 0.5f, 0.1f, 1e-4f, 9.99999e-5f,
                         1e-5f, 0.25f, 123456789.0f, 1e9f, 99999999.0f,
                         1e-13f, 1e13f, 3.4e38f, 1e-45f, INFINITY,
                         -INFINITY, NAN, -0.1f, 0.999999999f, 1e8f};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    same_as_printf(fixed[i]);
  /* Around each power of ten from 1e-14 to 1e14 (exponent changes). */
  for (int e = -14; e <= 14; e++) {
    float p = (float)pow(10.0, e);
    uint32_t u;
    memcpy(&u, &p, sizeof u);
    sweep(u - 2000, 4000);
  }
  /* Dense runs where softmax outputs live, and pseudo-random bit
   * patterns over the whole float range (both signs). */
  sweep(0x3f000000u, 300000); /* 0.5 up */
  sweep(0x38d1b717u, 300000); /* 1e-4 up */
  sweep(0x3dcccccdu, 300000); /* 0.1 up */
  uint64_t x = 88172645463325252u;
  for (int i = 0; i < 2000000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    same_as_printf(from_bits((uint32_t)x));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(assembles_S1),
      cmocka_unit_test(assembles_S2),
      cmocka_unit_test(assembles_S3),
      cmocka_unit_test(falls_back_past_an_incomplete_set),
      cmocka_unit_test(refuses_a_wrong_vector_count),
      cmocka_unit_test(reads_idx_as_fsps_worker_scales_it),
      cmocka_unit_test(refuses_f32_rows_that_are_not_finite),
      cmocka_unit_test(reads_an_mlps_widths),
      cmocka_unit_test(refuses_what_is_not_an_mlp),
      cmocka_unit_test(safetensors_header_by_hand),
      cmocka_unit_test(safetensors_file_by_hand),
      cmocka_unit_test(fmt_g9_is_printfs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
