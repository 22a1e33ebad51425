/* test_ckpt_file.c: unit tests of ckpt/ckpt_file.h — the checkpoint file
 * format byte by byte, writing and reading back, and every way a file is
 * refused: CRC, truncation at every length, magic, format version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc_fail.h"
#include "ckpt_file.h"
#include "fsps_err.h"

/* ---- a folder per test ---- */

static int make_dir(void **state) {
  const char *tmp = getenv("TMPDIR");
  char *dir = malloc(4096);
  snprintf(dir, 4096, "%s/test_ckpt_file.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL) {
    free(dir);
    return -1;
  }
  *state = dir;
  return 0;
}

static int remove_dir(void **state) {
  char *dir = *state;
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
      unlink(path);
  }
  if (d)
    closedir(d);
  rmdir(dir);
  free(dir);
  return 0;
}

/* count_files returns how many entries dir holds (not . and ..). */
static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  while (d && (e = readdir(d)) != NULL)
    n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  if (d)
    closedir(d);
  return n;
}

/* ---- an independent CRC32C (bit by bit) ---- */

static uint32_t crc32c(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

/* ---- the sample file ----
 * Server 1 of 3, 2 workers, two layers: layer 0 with 5 parameters and 5
 * of optimizer state at version 7, layer 2 with 3 parameters at 9. */

static const char spec_bytes[] = "\x0a\x03"
                                 "abc";
#define SPEC_LEN 5

static const ckpt_header sample = {.S = 3,
                                   .s = 1,
                                   .W = 2,
                                   .nlayers = 2,
                                   .hash = 0x1122334455667788u,
                                   .tag = 42,
                                   .spec = spec_bytes,
                                   .speclen = SPEC_LEN};

static void floats_of(uint32_t layer, float *out, size_t n) {
  for (size_t i = 0; i < n; i++)
    out[i] = (float)layer * 100.0f + (float)i * 0.5f;
}

/* write_sample writes the sample file into dir and returns its size; its
 * path goes to path. */
static size_t write_sample(const char *dir, char *path, size_t pathlen) {
  char msg[512] = "";
  ckpt_writer *w = ckpt_writer_open(dir, &sample, msg, sizeof msg);
  assert_non_null(w);
  float f[10];
  floats_of(0, f, 10);
  ckpt_writer_layer(w, &(ckpt_layer_head){0, 5, 7, 10});
  ckpt_writer_floats(w, f, 4); /* in pieces, as the server writes */
  ckpt_writer_floats(w, f + 4, 6);
  floats_of(2, f, 3);
  ckpt_writer_layer(w, &(ckpt_layer_head){2, 3, 9, 3});
  ckpt_writer_floats(w, f, 3);
  size_t bytes = (size_t)ckpt_writer_bytes(w) + 4; /* and the CRC */
  if (ckpt_writer_commit(w, msg, sizeof msg) != FSPS_OK)
    fail_msg("commit: %s", msg);
  snprintf(path, pathlen, "%s", ckpt_writer_path(w));
  ckpt_writer_destroy(w);
  return bytes;
}

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  rewind(f);
  uint8_t *b = malloc(*n + 1);
  assert_int_equal(fread(b, 1, *n, f), *n);
  fclose(f);
  return b;
}

static void spill(const char *path, const uint8_t *b, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b, 1, n, f), n);
  fclose(f);
}

/* refusal returns why path is refused at open (NULL: it opens). */
static const char *refusal(const char *path) {
  ckpt_header h;
  const char *why;
  ckpt_reader *r = ckpt_reader_open(path, &h, &why);
  ckpt_reader_close(r);
  return r ? NULL : why;
}

/* fix_crc rewrites the last 4 bytes of b[0..n) as the CRC of the rest. */
static void fix_crc(uint8_t *b, size_t n) {
  uint32_t c = crc32c(b, n - 4);
  memcpy(b + n - 4, &c, 4);
}

/* ---- names ---- */

static void test_names(void **unused) {
  (void)unused;
  char name[256];
  ckpt_file_name(name, sizeof name, "/d", 1, 3, 42);
  assert_string_equal(name, "/d/ckpt-s1of3-v00000000000000000042.fsps");
  uint32_t s, S;
  uint64_t tag;
  assert_true(ckpt_file_parse_name(name + 3, &s, &S, &tag));
  assert_int_equal(s, 1);
  assert_int_equal(S, 3);
  assert_int_equal(tag, 42);
  ckpt_file_name(name, sizeof name, ".", 0, 1, UINT64_MAX);
  assert_true(ckpt_file_parse_name(name + 2, &s, &S, &tag));
  assert_true(tag == UINT64_MAX);
  static const char *bad[] = {
      "ckpt-s1of3-v00000000000000000042.fsps.tmp",
      "ckpt-s1of3-v42.fsp",
      "ckpt-s1of3-v.fsps",
      "ckpt-sof3-v42.fsps",
      "xckpt-s1of3-v42.fsps",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_false(ckpt_file_parse_name(bad[i], &s, &S, &tag));
  ckpt_file_name(name, 8, "/d", 1, 3, 42); /* truncated, terminated */
  assert_string_equal(name, "/d/ckpt");
}

/* ---- writing and reading back ---- */

/* The bytes are what ckpt_file.h says, little-endian. */
static void test_layout(void **state) {
  char path[4400];
  size_t n = write_sample(*state, path, sizeof path), got;
  uint8_t *b = slurp(path, &got);
  assert_int_equal(got, n);
  size_t want = 8 + 4 * 4 + 8 + 8 + 4 + 4 + SPEC_LEN + 2 * 28 + 13 * 4 + 4;
  assert_int_equal(n, want);
  assert_memory_equal(b, "FSPSCKP1", 8);
  uint32_t u32[4];
  uint64_t u64[2];
  memcpy(u32, b + 8, 16);
  assert_int_equal(u32[0], 1); /* format */
  assert_int_equal(u32[1], 3);
  assert_int_equal(u32[2], 1);
  assert_int_equal(u32[3], 2);
  memcpy(u64, b + 24, 16);
  assert_true(u64[0] == sample.hash && u64[1] == 42);
  memcpy(u32, b + 40, 8);
  assert_int_equal(u32[0], 2);
  assert_int_equal(u32[1], SPEC_LEN);
  assert_memory_equal(b + 48, spec_bytes, SPEC_LEN);
  uint32_t crc;
  memcpy(&crc, b + n - 4, 4);
  assert_int_equal(crc, crc32c(b, n - 4));
  free(b);
}

static void test_round_trip(void **state) {
  char path[4400];
  write_sample(*state, path, sizeof path);
  assert_int_equal(count_files(*state), 1); /* no .tmp left */
  ckpt_header h;
  const char *why = "unset";
  ckpt_reader *r = ckpt_reader_open(path, &h, &why);
  assert_non_null(r);
  assert_null(why);
  assert_true(h.S == 3 && h.s == 1 && h.W == 2 && h.nlayers == 2);
  assert_true(h.hash == sample.hash && h.tag == 42);
  assert_int_equal(h.speclen, SPEC_LEN);
  assert_memory_equal(h.spec, spec_bytes, SPEC_LEN);
  ckpt_layer_head lh;
  float got[10], want[10];
  assert_null(ckpt_reader_layer(r, &lh));
  assert_true(lh.index == 0 && lh.count == 5 && lh.version == 7 &&
              lh.floats == 10);
  assert_null(ckpt_reader_floats(r, got, 3));
  assert_null(ckpt_reader_floats(r, got + 3, 7));
  floats_of(0, want, 10);
  assert_memory_equal(got, want, sizeof want);
  assert_null(ckpt_reader_layer(r, &lh));
  assert_true(lh.index == 2 && lh.count == 3 && lh.version == 9);
  assert_null(ckpt_reader_floats(r, got, 3));
  floats_of(2, want, 3);
  assert_memory_equal(got, want, 3 * sizeof *want);
  assert_null(ckpt_reader_end(r));
  ckpt_reader_close(r);
}

/* A writer that is not committed leaves nothing; one whose floats do not
 * add up refuses to sync. */
static void test_writer_refusals(void **state) {
  char msg[512] = "";
  ckpt_writer *w = ckpt_writer_open(*state, &sample, msg, sizeof msg);
  ckpt_writer_layer(w, &(ckpt_layer_head){0, 5, 7, 10});
  ckpt_writer_floats(w, (float[10]){0}, 10);
  assert_int_equal(count_files(*state), 1);
  ckpt_writer_destroy(w); /* abandoned */
  assert_int_equal(count_files(*state), 0);
  w = ckpt_writer_open(*state, &sample, msg, sizeof msg);
  assert_int_equal(ckpt_writer_publish(w, msg, sizeof msg), FSPS_INTERNAL);
  ckpt_writer_layer(w, &(ckpt_layer_head){0, 5, 7, 10});
  ckpt_writer_floats(w, (float[10]){0}, 9); /* one short */
  ckpt_writer_layer(w, &(ckpt_layer_head){2, 3, 9, 3});
  ckpt_writer_floats(w, (float[3]){0}, 3);
  assert_int_equal(ckpt_writer_commit(w, msg, sizeof msg), FSPS_INTERNAL);
  assert_non_null(strstr(msg, "do not add up"));
  ckpt_writer_destroy(w);
  assert_int_equal(count_files(*state), 0);
  char missing[4400];
  snprintf(missing, sizeof missing, "%s/no/such/folder", (char *)*state);
  assert_null(ckpt_writer_open(missing, &sample, msg, sizeof msg));
  assert_non_null(strstr(msg, "cannot create"));
}

/* ---- what a reader refuses ---- */

static void test_crc_mismatch(void **state) {
  char path[4400];
  size_t n = write_sample(*state, path, sizeof path);
  uint8_t *b = slurp(path, &n);
  for (size_t at = 0; at < n; at += 7) { /* a flipped bit anywhere */
    b[at] ^= 0x10;
    spill(path, b, n);
    const char *why = refusal(path);
    b[at] ^= 0x10;
    assert_non_null(why);
  }
  b[60] ^= 1; /* in layer 0's head: its length fields stay sound */
  spill(path, b, n);
  assert_string_equal(refusal(path), "fails its CRC32C check (corrupt)");
  b[60] ^= 1;
  b[n - 1] ^= 0x80; /* the CRC itself */
  spill(path, b, n);
  assert_string_equal(refusal(path), "fails its CRC32C check (corrupt)");
  free(b);
}

static void test_truncated(void **state) {
  char path[4400];
  size_t n = write_sample(*state, path, sizeof path);
  uint8_t *b = slurp(path, &n);
  for (size_t len = 0; len < n; len++) {
    spill(path, b, len);
    const char *why = refusal(path);
    if (why == NULL || strcmp(why, "is truncated") != 0)
      fail_msg("a file cut at %zu of %zu bytes: %s", len, n,
               why ? why : "accepted");
  }
  uint8_t *more = malloc(n + 1);
  memcpy(more, b, n);
  more[n] = 0;
  spill(path, more, n + 1);
  assert_string_equal(refusal(path), "has bytes past its end (corrupt)");
  free(more);
  free(b);
}

static void test_magic_and_format(void **state) {
  char path[4400];
  size_t n = write_sample(*state, path, sizeof path);
  uint8_t *b = slurp(path, &n);
  b[7] = '2'; /* "FSPSCKP2" with a CRC that matches */
  fix_crc(b, n);
  spill(path, b, n);
  assert_string_equal(refusal(path), "is not an fsps checkpoint (bad magic)");
  b[7] = '1';
  uint32_t format = 2;
  memcpy(b + 8, &format, 4);
  fix_crc(b, n);
  spill(path, b, n);
  assert_string_equal(refusal(path), "has an unknown format version");
  format = 1;
  memcpy(b + 8, &format, 4);
  fix_crc(b, n);
  spill(path, b, n);
  assert_null(refusal(path));
  assert_string_equal(refusal("/no/such/file"), "cannot be opened");
  free(b);
}

/* A layer at version 2^64 - 1 could never take another step. */
static void test_impossible_version(void **state) {
  char path[4400];
  size_t n = write_sample(*state, path, sizeof path);
  uint8_t *b = slurp(path, &n);
  uint64_t v = UINT64_MAX;
  memcpy(b + 48 + SPEC_LEN + 4 + 8, &v, 8); /* layer 0's version */
  fix_crc(b, n);
  spill(path, b, n);
  ckpt_header h;
  const char *why;
  ckpt_reader *r = ckpt_reader_open(path, &h, &why);
  assert_non_null(r);
  ckpt_layer_head lh;
  assert_string_equal(ckpt_reader_layer(r, &lh),
                      "holds an impossible layer version");
  ckpt_reader_close(r);
  free(b);
}

/* A file rewritten between open and the last read is caught at the end:
 * one layer of 64 KiB, so that the change lies past what stdio has
 * buffered when it is made. */
static void test_changed_while_read(void **state) {
  enum { N = 16384 };
  static float f[N];
  char msg[512];
  ckpt_header one = sample;
  one.nlayers = 1;
  ckpt_writer *w = ckpt_writer_open(*state, &one, msg, sizeof msg);
  ckpt_writer_layer(w, &(ckpt_layer_head){0, N, 1, N});
  ckpt_writer_floats(w, f, N);
  assert_int_equal(ckpt_writer_commit(w, msg, sizeof msg), FSPS_OK);
  char path[4400];
  snprintf(path, sizeof path, "%s", ckpt_writer_path(w));
  ckpt_writer_destroy(w);
  ckpt_header h;
  const char *why;
  ckpt_reader *r = ckpt_reader_open(path, &h, &why);
  assert_non_null(r);
  FILE *g = fopen(path, "r+b"); /* the last float's first byte */
  fseek(g, -8, SEEK_END);
  fputc(1, g);
  fclose(g);
  ckpt_layer_head lh;
  assert_null(ckpt_reader_layer(r, &lh));
  assert_null(ckpt_reader_floats(r, f, N));
  assert_string_equal(ckpt_reader_end(r), "changed while it was being read");
  ckpt_reader_close(r);
}

/* ---- allocation failures (alloc_fail.h) ---- */

typedef struct {
  const char *dir;
  char path[4400];
  ckpt_writer *w;
  ckpt_reader *r;
  const char *why;
  int rc;
  char msg[512];
} alloc_ctx;

static void write_op(void *arg) {
  alloc_ctx *x = arg;
  x->msg[0] = '\0';
  x->w = ckpt_writer_open(x->dir, &sample, x->msg, sizeof x->msg);
  if (x->w == NULL)
    return;
  ckpt_writer_layer(x->w, &(ckpt_layer_head){0, 5, 7, 10});
  ckpt_writer_floats(x->w, (float[10]){0}, 10);
  ckpt_writer_layer(x->w, &(ckpt_layer_head){2, 3, 9, 3});
  ckpt_writer_floats(x->w, (float[3]){0}, 3);
  x->rc = ckpt_writer_commit(x->w, x->msg, sizeof x->msg);
  ckpt_writer_destroy(x->w);
}

/* A writer that cannot start says so and leaves no file. */
static void write_check(void *arg, bool failed) {
  alloc_ctx *x = arg;
  if (failed) {
    assert_null(x->w);
    assert_string_equal(x->msg, "out of memory");
    assert_int_equal(count_files(x->dir), 0);
  } else {
    assert_int_equal(x->rc, FSPS_OK);
    assert_int_equal(count_files(x->dir), 1);
  }
}

static void test_alloc_write(void **state) {
  alloc_ctx x = {.dir = *state};
  assert_int_equal(alloc_fail_loop(NULL, write_op, write_check, &x, 100), 1);
  ckpt_file_name(x.path, sizeof x.path, x.dir, 1, 3, 42);
  assert_null(refusal(x.path));
}

static void read_op(void *arg) {
  alloc_ctx *x = arg;
  ckpt_header h;
  ckpt_layer_head lh;
  float f[10];
  x->r = ckpt_reader_open(x->path, &h, &x->why);
  for (uint32_t l = 0; x->r != NULL && x->why == NULL && l < h.nlayers; l++)
    if ((x->why = ckpt_reader_layer(x->r, &lh)) == NULL)
      x->why = ckpt_reader_floats(x->r, f, (size_t)lh.floats);
  if (x->r != NULL && x->why == NULL)
    x->why = ckpt_reader_end(x->r);
  ckpt_reader_close(x->r);
}

/* A reader without memory says so, not that the file is bad. */
static void read_check(void *arg, bool failed) {
  alloc_ctx *x = arg;
  if (failed) {
    assert_null(x->r);
    assert_string_equal(x->why, "cannot be read (out of memory)");
  } else {
    assert_non_null(x->r);
    assert_null(x->why);
  }
}

/* The reader, its verifying buffer and the spec's bytes. */
static void test_alloc_read(void **state) {
  alloc_ctx x = {.dir = *state};
  write_sample(x.dir, x.path, sizeof x.path);
  assert_int_equal(alloc_fail_loop(NULL, read_op, read_check, &x, 100), 3);
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, make_dir, remove_dir)
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names), T(test_layout),
      T(test_round_trip),           T(test_writer_refusals),
      T(test_crc_mismatch),         T(test_truncated),
      T(test_magic_and_format),     T(test_impossible_version),
      T(test_changed_while_read),   T(test_alloc_write),
      T(test_alloc_read),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
