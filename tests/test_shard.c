/* test_shard.c: unit tests of shard/: slice and chunk arithmetic,
 * deterministic initialisation, spec hashing and validation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shard.h"
#include "shard_int.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- Slices ------------------------------------------------------------ */

static void test_stride_examples(void **state) {
  (void)state;
  assert_int_equal(shard_stride(100, 3), 48); /* ceil(100/3) = 34 -> 48 */
  assert_int_equal(shard_stride(16, 1), 16);
  assert_int_equal(shard_stride(17, 1), 32);
  assert_int_equal(shard_stride(1, 64), 16);
  assert_int_equal(shard_stride(0, 4), 0);
  assert_int_equal(shard_stride(10, 0), 0);

  uint64_t off, cnt;
  shard_slice(100, 3, 2, &off, &cnt);
  assert_int_equal(off, 96);
  assert_int_equal(cnt, 4);
  shard_slice(1, 4, 3, &off, &cnt); /* n < S: only server 0 holds data */
  assert_int_equal(off, 1);
  assert_int_equal(cnt, 0);
  shard_slice(100, 3, 3, &off, &cnt); /* s >= S */
  assert_int_equal(off, 100);
  assert_int_equal(cnt, 0);
}

/* Checks every property of the slicing of n over S, arithmetically. */
static void check_slicing(uint64_t n, uint32_t S) {
  uint64_t c = shard_stride(n, S), per = n / S + (n % S != 0);
  uint64_t next = 0, prev_cnt = 0;
  assert_int_equal(c % SHARD_STRIPE, 0);
  assert_true(c * S >= n);
  assert_true(c < per + SHARD_STRIPE);

  for (uint32_t s = 0; s < S; s++) {
    uint64_t off, cnt;
    shard_slice(n, S, s, &off, &cnt);
    if (cnt == 0) { /* empty: past the end, and so is every later slice */
      assert_int_equal(off, n);
      assert_true((uint64_t)s * c >= n);
      continue;
    }
    assert_int_equal(off, next); /* contiguous, in order, hence disjoint */
    assert_int_equal(off, (uint64_t)s * c);
    assert_true(cnt <= c);
    if (s > 0) /* every non-empty slice but the last is full */
      assert_int_equal(prev_cnt, c);
    next += cnt;
    prev_cnt = cnt;
    assert_int_equal(shard_owner(n, S, off), s);
    assert_int_equal(shard_owner(n, S, off + cnt - 1), s);
    if (s > 0)
      assert_int_equal(shard_owner(n, S, off - 1), s - 1);
  }
  assert_int_equal(next, n); /* sum of counts is n */
  assert_int_equal(shard_owner(n, S, n), S);
}

static void test_slices_cover_layer(void **state) {
  static const uint64_t ns[] = {1,    2,    15,    16,      17,       100,
                                1000, 4099, 65537, 1000003, 100000000};
  static const uint32_t Ss[] = {1, 2, 3, 4, 7, 8, 16, 64};
  (void)state;
  for (size_t i = 0; i < COUNT(ns); i++)
    for (size_t j = 0; j < COUNT(Ss); j++)
      check_slicing(ns[i], Ss[j]);
}

static void test_slices_full_except_last(void **state) {
  (void)state;
  /* 1000 over 7: c = 144; six full slices of 144, the last holds 136. */
  for (uint32_t s = 0; s < 7; s++) {
    uint64_t off, cnt;
    shard_slice(1000, 7, s, &off, &cnt);
    assert_int_equal(off, 144u * s);
    assert_int_equal(cnt, s < 6 ? 144 : 136);
  }
  /* 17 over 4: c = 16; server 0 holds 16, server 1 holds 1, 2 and 3 none. */
  uint64_t cnt;
  shard_slice(17, 4, 1, NULL, &cnt);
  assert_int_equal(cnt, 1);
  shard_slice(17, 4, 2, NULL, &cnt);
  assert_int_equal(cnt, 0);
}

/* ---- Chunks ------------------------------------------------------------ */

static void test_chunks_reassemble(void **state) {
  static const uint64_t counts[] = {0,
                                    1,
                                    SHARD_CHUNK_ELEMS - 1,
                                    SHARD_CHUNK_ELEMS,
                                    SHARD_CHUNK_ELEMS + 1,
                                    3 * (uint64_t)SHARD_CHUNK_ELEMS + 5};
  static const uint64_t expect[] = {0, 1, 1, 1, 2, 4};
  (void)state;
  assert_int_equal(SHARD_CHUNK_ELEMS * 4, 1u << 20);
  for (size_t i = 0; i < COUNT(counts); i++) {
    uint64_t k = shard_num_chunks(counts[i]), next = 0;
    assert_int_equal(k, expect[i]);
    for (uint64_t j = 0; j < k; j++) {
      uint64_t off, len;
      shard_chunk(counts[i], j, &off, &len);
      assert_int_equal(off, next);
      assert_true(len >= 1 && len <= SHARD_CHUNK_ELEMS);
      if (j + 1 < k)
        assert_int_equal(len, SHARD_CHUNK_ELEMS);
      next += len;
    }
    assert_int_equal(next, counts[i]);
    uint64_t off, len;
    shard_chunk(counts[i], k, &off, &len); /* one past the end */
    assert_int_equal(off, counts[i]);
    assert_int_equal(len, 0);
  }
}

/* ---- Initialisation ---------------------------------------------------- */

static void test_philox_known_answers(void **state) {
  /* Random123's tests/kat_vectors, philox4x32 10 rounds. */
  static const uint32_t kat[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
       0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
       0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}};
  (void)state;
  for (size_t i = 0; i < COUNT(kat); i++) {
    uint32_t out[4];
    shard_philox4x32_10(&kat[i][0], &kat[i][4], out);
    assert_memory_equal(out, &kat[i][6], sizeof(out));
  }
}

/* Layer "fc1": weight 37x53 he_uniform, bias 37 U(-0.25, 0.5); layer "fc2":
 * the same shapes again. */
static shard_spec *two_layer_spec(uint64_t seed) {
  static const uint64_t w[2] = {37, 53}, b[1] = {37};
  shard_spec *s = shard_spec_create(seed);
  assert_non_null(s);
  const char *names[2] = {"fc1", "fc2"};
  for (int l = 0; l < 2; l++) {
    assert_int_equal(shard_spec_add_layer(s, names[l]), FSPS_OK);
    assert_int_equal(
        shard_spec_add_tensor(s, "weight", 2, w, SHARD_INIT_HE_UNIFORM, 0, 0),
        FSPS_OK);
    assert_int_equal(
        shard_spec_add_tensor(s, "bias", 1, b, SHARD_INIT_UNIFORM, -0.25, 0.5),
        FSPS_OK);
  }
  assert_int_equal(shard_spec_validate(s, NULL, 0), FSPS_OK);
  return s;
}

static float *fill_all(const shard_spec *s, uint32_t l) {
  uint64_t n = shard_spec_layer(s, l)->n;
  float *v = malloc(n * sizeof(float));
  assert_non_null(v);
  assert_int_equal(shard_init_fill(s, l, 0, n, v), FSPS_OK);
  return v;
}

static void test_init_same_for_any_S(void **state) {
  static const uint32_t Ss[] = {2, 3, 7};
  (void)state;
  shard_spec *s = two_layer_spec(42);
  uint64_t n = shard_spec_layer(s, 0)->n;
  assert_int_equal(n, 37 * 53 + 37);
  float *ref = fill_all(s, 0), *cat = malloc(n * sizeof(float));
  assert_non_null(cat);
  for (size_t i = 0; i < COUNT(Ss); i++) {
    memset(cat, 0xff, n * sizeof(float));
    for (uint32_t srv = 0; srv < Ss[i]; srv++) {
      uint64_t off, cnt;
      shard_slice(n, Ss[i], srv, &off, &cnt);
      assert_int_equal(shard_init_fill(s, 0, off, cnt, cat + off), FSPS_OK);
    }
    assert_memory_equal(cat, ref, n * sizeof(float)); /* bitwise */
  }
  free(cat);
  free(ref);
  shard_spec_destroy(s);
}

static void test_init_subrange_matches_full(void **state) {
  (void)state;
  shard_spec *s = two_layer_spec(7);
  float *ref = fill_all(s, 1), part[80];
  uint64_t first = 37 * 53 - 40; /* spans the weight/bias boundary */
  assert_int_equal(shard_init_fill(s, 1, first, 77, part), FSPS_OK);
  assert_memory_equal(part, ref + first, 77 * sizeof(float));
  assert_int_equal(shard_init_fill(s, 1, 5, 0, NULL), FSPS_OK);
  free(ref);
  shard_spec_destroy(s);
}

static void test_init_refuses_bad_range(void **state) {
  (void)state;
  shard_spec *s = two_layer_spec(1);
  uint64_t n = shard_spec_layer(s, 0)->n;
  float v[2];
  assert_int_equal(shard_init_fill(s, 0, n - 1, 1, v), FSPS_OK);
  assert_int_equal(shard_init_fill(s, 0, n, 0, v), FSPS_OK);
  assert_int_equal(shard_init_fill(s, 0, n - 1, 2, v), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_init_fill(s, 0, n + 1, 0, v), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_init_fill(s, 0, 1, UINT64_MAX, v),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_init_fill(s, 2, 0, 1, v), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_init_fill(s, 0, 0, 1, NULL), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_init_fill(NULL, 0, 0, 1, v), FSPS_INVALID_ARGUMENT);
  shard_spec_destroy(s);
}

static size_t count_equal(const float *a, const float *b, size_t n) {
  size_t same = 0;
  for (size_t i = 0; i < n; i++)
    same += memcmp(&a[i], &b[i], sizeof(float)) == 0;
  return same;
}

static void test_init_differs_across_seeds_and_layers(void **state) {
  (void)state;
  shard_spec *s1 = two_layer_spec(1), *s2 = two_layer_spec(2);
  uint64_t n = shard_spec_layer(s1, 0)->n;
  float *a0 = fill_all(s1, 0), *a1 = fill_all(s1, 1), *b0 = fill_all(s2, 0);
  assert_true(count_equal(a0, b0, n) < 5);
  assert_true(count_equal(a0, a1, n) < 5);
  assert_true(shard_rand_uniform(1, 0, 0) != shard_rand_uniform(2, 0, 0));
  assert_true(shard_rand_uniform(1, 0, 0) != shard_rand_uniform(1, 1, 0));
  assert_true(shard_rand_uniform(1, 0, 0) != shard_rand_uniform(1, 0, 1));
  free(a0);
  free(a1);
  free(b0);
  shard_spec_destroy(s1);
  shard_spec_destroy(s2);
}

static void test_init_he_and_uniform_bounds(void **state) {
  (void)state;
  shard_spec *s = two_layer_spec(3);
  float *v = fill_all(s, 0), lo = 1, hi = -1;
  float bound = (float)sqrt(6.0 / 53); /* fan_in of a 37x53 weight is 53 */
  for (size_t i = 0; i < 37 * 53; i++) {
    assert_true(v[i] >= -bound && v[i] < bound);
    lo = fminf(lo, v[i]);
    hi = fmaxf(hi, v[i]);
  }
  assert_true(lo < -0.9f * bound && hi > 0.9f * bound); /* range is used */
  for (size_t i = 37 * 53; i < 37 * 53 + 37; i++)
    assert_true(v[i] >= -0.25f && v[i] < 0.5f);
  free(v);
  shard_spec_destroy(s);
}

/* One layer holding one tensor of the given shape and init. */
static shard_spec *one_tensor_spec(uint32_t ndims, const uint64_t *dims,
                                   shard_init_kind k, double a, double b) {
  shard_spec *s = shard_spec_create(99);
  assert_non_null(s);
  assert_int_equal(shard_spec_add_layer(s, "l"), FSPS_OK);
  assert_int_equal(shard_spec_add_tensor(s, "t", ndims, dims, k, a, b),
                   FSPS_OK);
  return s;
}

static void test_init_xavier_conv_bounds(void **state) {
  static const uint64_t conv[4] = {8, 3, 3, 3};
  (void)state;
  /* fan_in = 3*9 = 27, fan_out = 8*9 = 72; gain 2. */
  shard_spec *s = one_tensor_spec(4, conv, SHARD_INIT_XAVIER_UNIFORM, 2, 0);
  float *v = fill_all(s, 0), bound = (float)(2 * sqrt(6.0 / 99)), hi = 0;
  for (size_t i = 0; i < 216; i++) {
    assert_true(fabsf(v[i]) <= bound);
    hi = fmaxf(hi, fabsf(v[i]));
  }
  assert_true(hi > 0.8f * bound);
  free(v);
  shard_spec_destroy(s);
}

static void test_init_uniform_many(void **state) {
  static const uint64_t n[1] = {100000};
  (void)state;
  shard_spec *s = one_tensor_spec(1, n, SHARD_INIT_UNIFORM, 1, 2);
  float *v = fill_all(s, 0), lo = 2, hi = 1;
  for (size_t i = 0; i < n[0]; i++) {
    assert_true(v[i] >= 1.0f && v[i] < 2.0f);
    lo = fminf(lo, v[i]);
    hi = fmaxf(hi, v[i]);
  }
  assert_true(lo < 1.001f && hi > 1.999f);
  free(v);
  shard_spec_destroy(s);
}

static void test_init_normal_moments(void **state) {
  static const uint64_t n[1] = {100000};
  (void)state;
  shard_spec *s = one_tensor_spec(1, n, SHARD_INIT_NORMAL, 1.5, 2);
  float *v = fill_all(s, 0);
  double sum = 0, sq = 0;
  for (size_t i = 0; i < n[0]; i++) {
    assert_true(isfinite(v[i]));
    sum += v[i];
  }
  double mean = sum / n[0];
  for (size_t i = 0; i < n[0]; i++)
    sq += (v[i] - mean) * (v[i] - mean);
  double sd = sqrt(sq / (n[0] - 1));
  /* Standard errors: 2/sqrt(1e5) = 0.0063 (mean), ~0.0045 (std). */
  assert_true(fabs(mean - 1.5) < 0.03);
  assert_true(fabs(sd - 2.0) < 0.03);
  free(v);
  shard_spec_destroy(s);
}

static void test_init_constant_and_zeros_exact(void **state) {
  static const uint64_t d[2] = {3, 5};
  (void)state;
  shard_spec *s = one_tensor_spec(2, d, SHARD_INIT_CONSTANT, 0.1, 0);
  assert_int_equal(shard_spec_add_tensor(s, "z", 2, d, SHARD_INIT_ZEROS, 0, 0),
                   FSPS_OK);
  float *v = fill_all(s, 0);
  for (size_t i = 0; i < 15; i++)
    assert_true(v[i] == 0.1f);
  for (size_t i = 15; i < 30; i++)
    assert_true(v[i] == 0.0f && !signbit(v[i]));
  free(v);
  shard_spec_destroy(s);
}

static void expect_invalid(shard_spec *s, const char *frag1, const char *frag2);

/* A client-given layer: its name, its placeholder zeros, its own hash,
 * and validation refusing a layer that mixes it with drawn tensors. */
static void test_init_client(void **state) {
  static const uint64_t d[2] = {3, 5};
  (void)state;
  shard_init_kind k = SHARD_INIT_ZEROS;
  assert_int_equal(shard_init_kind_parse("client", &k), FSPS_OK);
  assert_int_equal(k, SHARD_INIT_CLIENT);
  shard_spec *s = one_tensor_spec(2, d, SHARD_INIT_CLIENT, 0, 0);
  shard_spec *z = one_tensor_spec(2, d, SHARD_INIT_ZEROS, 0, 0);
  assert_int_equal(shard_spec_validate(s, NULL, 0), FSPS_OK);
  assert_true(shard_layer_client(shard_spec_layer(s, 0)));
  assert_false(shard_layer_client(shard_spec_layer(z, 0)));
  assert_true(shard_spec_hash(s) != shard_spec_hash(z));
  float *v = fill_all(s, 0);
  for (size_t i = 0; i < 15; i++)
    assert_true(v[i] == 0.0f);
  free(v);
  assert_int_equal(shard_spec_add_tensor(s, "b", 1, d, SHARD_INIT_CLIENT, 0, 0),
                   FSPS_OK);
  assert_int_equal(shard_spec_validate(s, NULL, 0), FSPS_OK);
  assert_int_equal(shard_spec_add_tensor(s, "c", 1, d, SHARD_INIT_ZEROS, 0, 0),
                   FSPS_OK);
  expect_invalid(s, "layer 0 'l': tensor 't' has init client but tensor 'c'",
                 "either every tensor of a layer has init client");
  assert_int_equal(shard_spec_add_tensor(z, "c", 1, d, SHARD_INIT_CLIENT, 0, 0),
                   FSPS_OK);
  expect_invalid(z, "tensor 't' has init zeros but tensor 'c' has init client",
                 NULL);
}

static void test_rand_uniform_unit_interval(void **state) {
  double sum = 0;
  (void)state;
  for (uint64_t i = 0; i < 10000; i++) {
    double u = shard_rand_uniform(5, 3, i);
    assert_true(u >= 0 && u < 1);
    sum += u;
  }
  assert_true(fabs(sum / 10000 - 0.5) < 0.02);
  assert_true(shard_rand_uniform(5, 3, 17) == shard_rand_uniform(5, 3, 17));
}

/* ---- Spec building, hash and equality ---------------------------------- */

/* Each mutation changes one field of the base spec (M_NONE changes none). */
enum {
  M_NONE,
  M_SEED,
  M_LAYER_NAME,
  M_TENSOR_NAME,
  M_DIM,
  M_NDIMS,
  M_INIT_KIND,
  M_INIT_A,
  M_INIT_B,
  M_OPT_KIND,
  M_LR,
  M_MOMENTUM,
  M_DAMPENING,
  M_WEIGHT_DECAY,
  M_BETA1,
  M_BETA2,
  M_EPS,
  M_LR_DECAY,
  M_INIT_ACC,
  M_NESTEROV,
  M_SCHEDULE,
  M_STEP_SIZE,
  M_GAMMA,
  M_T_MAX,
  M_ETA_MIN,
  M_WARMUP_STEPS,
  M_WARMUP_FACTOR,
  M_EXTRA_TENSOR,
  M_EXTRA_LAYER,
  M_SWAP_LAYERS,
  M_WIRE_DTYPE,
  M_COUNT
};

static void mutate_optim(shard_optim_spec *o, int m) {
  switch (m) {
  case M_OPT_KIND:
    o->kind = SHARD_OPT_ADAM;
    break;
  case M_LR:
    o->lr = 0.0011;
    break;
  case M_MOMENTUM:
    o->momentum = 0.5;
    break;
  case M_DAMPENING:
    o->dampening = 0.1;
    break;
  case M_WEIGHT_DECAY:
    o->weight_decay = 0.02;
    break;
  case M_BETA1:
    o->beta1 = 0.8;
    break;
  case M_BETA2:
    o->beta2 = 0.99;
    break;
  case M_EPS:
    o->eps = 1e-7;
    break;
  case M_LR_DECAY:
    o->lr_decay = 1e-4;
    break;
  case M_INIT_ACC:
    o->initial_accumulator_value = 0.1;
    break;
  case M_NESTEROV:
    o->nesterov = true;
    break;
  case M_SCHEDULE:
    o->schedule = SHARD_SCHED_COSINE;
    break;
  case M_STEP_SIZE:
    o->step_size = 11;
    break;
  case M_GAMMA:
    o->gamma = 0.2;
    break;
  case M_T_MAX:
    o->t_max = 1001;
    break;
  case M_ETA_MIN:
    o->eta_min = 1e-6;
    break;
  case M_WARMUP_STEPS:
    o->warmup_steps = 101;
    break;
  case M_WARMUP_FACTOR:
    o->warmup_start_factor = 0.5;
    break;
  }
}

static void add_layer2(shard_spec *s, const char *name) {
  static const uint64_t d[1] = {10};
  assert_int_equal(shard_spec_add_layer(s, name), FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(s, "w", 1, d, SHARD_INIT_NORMAL, 0, 0.02), FSPS_OK);
}

/* A small fixed spec, with mutation m applied. */
static shard_spec *base_spec(int m) {
  uint64_t w[2] = {4, m == M_DIM ? 7 : 6}, flat[1] = {24}, b[1] = {4};
  shard_spec *s = shard_spec_create(m == M_SEED ? 43 : 42);
  assert_non_null(s);
  if (m == M_SWAP_LAYERS)
    add_layer2(s, "emb");
  assert_int_equal(shard_spec_add_layer(s, m == M_LAYER_NAME ? "fc0" : "fc1"),
                   FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(
          s, m == M_TENSOR_NAME ? "w" : "weight", m == M_NDIMS ? 1 : 2,
          m == M_NDIMS ? flat : w,
          m == M_INIT_KIND ? SHARD_INIT_HE_UNIFORM : SHARD_INIT_XAVIER_UNIFORM,
          m == M_INIT_A ? 2.0 : 1.0, m == M_INIT_B ? 0.5 : 0.0),
      FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(s, "bias", 1, b, SHARD_INIT_UNIFORM, -0.1, 0.1),
      FSPS_OK);
  if (m == M_EXTRA_TENSOR)
    assert_int_equal(
        shard_spec_add_tensor(s, "gamma", 1, b, SHARD_INIT_CONSTANT, 1, 0),
        FSPS_OK);
  if (m != M_SWAP_LAYERS)
    add_layer2(s, "emb");
  if (m == M_EXTRA_LAYER)
    add_layer2(s, "head");
  shard_optim_spec o;
  assert_int_equal(shard_optim_defaults(SHARD_OPT_SGD, &o), FSPS_OK);
  o.step_size = 10;
  o.t_max = 1000;
  o.warmup_steps = 100;
  mutate_optim(&o, m);
  shard_spec_set_optim(s, &o);
  if (m == M_WIRE_DTYPE)
    shard_spec_set_wire_dtype(s, SHARD_WIRE_BF16);
  return s;
}

static void test_hash_same_spec_same_hash(void **state) {
  (void)state;
  shard_spec *a = base_spec(M_NONE), *b = base_spec(M_NONE);
  assert_true(shard_spec_hash(a) == shard_spec_hash(b));
  assert_true(shard_spec_equal(a, b));
  assert_true(shard_spec_equal(NULL, NULL));
  assert_false(shard_spec_equal(a, NULL));
  shard_spec_destroy(a);
  shard_spec_destroy(b);
}

static void test_hash_every_field_matters(void **state) {
  uint64_t h[M_COUNT];
  (void)state;
  shard_spec *base = base_spec(M_NONE);
  for (int m = 0; m < M_COUNT; m++) {
    shard_spec *s = base_spec(m);
    h[m] = shard_spec_hash(s);
    if (m != M_NONE && (h[m] == h[M_NONE] || shard_spec_equal(s, base)))
      fail_msg("mutation %d does not change the hash or equality", m);
    shard_spec_destroy(s);
  }
  for (int i = 0; i < M_COUNT; i++) /* all pairwise distinct, too */
    for (int j = i + 1; j < M_COUNT; j++)
      assert_true(h[i] != h[j]);
  shard_spec_destroy(base);
}

static void test_hash_pinned(void **state) {
  char hex[17];
  (void)state;
  shard_spec *s = base_spec(M_NONE);
  /* Guards cross-machine and cross-version stability: servers compare spec
   * hashes on Init and store them in checkpoints, so a different value here
   * is a wire- and checkpoint-compatibility break. Do not update it to make
   * the test pass; bump the encoding's version tag instead, deliberately. */
  assert_int_equal(shard_spec_hash(s), UINT64_C(0x6368f5f7fc6d0154));
  shard_spec_hash_hex(shard_spec_hash(s), hex);
  assert_string_equal(hex, "6368f5f7fc6d0154");
  shard_spec_hash_hex(UINT64_C(0x0123456789abcdef), hex);
  assert_string_equal(hex, "0123456789abcdef");
  shard_spec_destroy(s);
  /* An fp32 spec set explicitly hashes as one that never heard of wire
   * dtypes (the value above); bf16 is pinned as well. */
  s = base_spec(M_NONE);
  shard_spec_set_wire_dtype(s, SHARD_WIRE_FP32);
  assert_int_equal(shard_spec_hash(s), UINT64_C(0x6368f5f7fc6d0154));
  shard_spec_set_wire_dtype(s, SHARD_WIRE_BF16);
  assert_int_equal(shard_spec_hash(s), UINT64_C(0x02b43d2c0e7e5efd));
  shard_spec_destroy(s);
}

static void test_spec_accessors(void **state) {
  uint32_t idx = 99;
  (void)state;
  shard_spec *s = base_spec(M_NONE);
  assert_int_equal(shard_spec_seed(s), 42);
  assert_int_equal(shard_spec_num_layers(s), 2);
  const shard_layer *L = shard_spec_layer(s, 0);
  assert_string_equal(L->name, "fc1");
  assert_int_equal(L->ntensors, 2);
  assert_int_equal(L->n, 28);
  assert_int_equal(L->tensors[0].numel, 24);
  assert_int_equal(L->tensors[1].offset, 24);
  assert_int_equal(L->tensors[1].numel, 4);
  assert_null(shard_spec_layer(s, 2));
  assert_int_equal(shard_spec_find_layer(s, "emb", &idx), FSPS_OK);
  assert_int_equal(idx, 1);
  assert_int_equal(shard_spec_find_layer(s, "nope", &idx), FSPS_NOT_FOUND);
  assert_int_equal(shard_spec_optim(s)->step_size, 10);
  assert_int_equal(shard_spec_validate(s, NULL, 0), FSPS_OK);
  shard_spec_destroy(s);
  shard_spec_destroy(NULL);
}

static void test_optim_defaults(void **state) {
  shard_optim_spec o;
  (void)state;
  assert_int_equal(shard_optim_defaults(SHARD_OPT_SGD, &o), FSPS_OK);
  assert_true(o.lr == 0.01 && o.momentum == 0 && o.dampening == 0 &&
              !o.nesterov && o.weight_decay == 0);
  assert_true(o.schedule == SHARD_SCHED_CONSTANT && o.gamma == 0.1 &&
              o.warmup_start_factor == 1.0 / 3.0);
  assert_int_equal(shard_optim_defaults(SHARD_OPT_ADAM, &o), FSPS_OK);
  assert_true(o.lr == 1e-3 && o.beta1 == 0.9 && o.beta2 == 0.999 &&
              o.eps == 1e-8 && o.weight_decay == 0);
  assert_int_equal(shard_optim_defaults(SHARD_OPT_ADAMW, &o), FSPS_OK);
  assert_true(o.lr == 1e-3 && o.weight_decay == 0.01 && o.eps == 1e-8);
  assert_int_equal(shard_optim_defaults(SHARD_OPT_ADAGRAD, &o), FSPS_OK);
  assert_true(o.lr == 0.01 && o.lr_decay == 0 && o.eps == 1e-10 &&
              o.initial_accumulator_value == 0);
  assert_int_equal(shard_optim_defaults((shard_opt_kind)9, &o),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_optim_defaults(SHARD_OPT_SGD, NULL),
                   FSPS_INVALID_ARGUMENT);
}

static void test_kind_names_round_trip(void **state) {
  (void)state;
  for (int k = SHARD_OPT_SGD; k <= SHARD_OPT_ADAGRAD; k++) {
    shard_opt_kind out = SHARD_OPT_SGD;
    assert_int_equal(shard_opt_kind_parse(shard_opt_kind_name(k), &out), 0);
    assert_int_equal(out, k);
  }
  for (int k = SHARD_INIT_ZEROS; k <= SHARD_INIT_CLIENT; k++) {
    shard_init_kind out = SHARD_INIT_ZEROS;
    assert_int_equal(shard_init_kind_parse(shard_init_kind_name(k), &out), 0);
    assert_int_equal(out, k);
  }
  for (int k = SHARD_SCHED_CONSTANT; k <= SHARD_SCHED_COSINE; k++) {
    shard_sched_kind out = SHARD_SCHED_CONSTANT;
    assert_int_equal(shard_sched_kind_parse(shard_sched_kind_name(k), &out), 0);
    assert_int_equal(out, k);
  }
  for (int k = SHARD_WIRE_FP32; k <= SHARD_WIRE_BF16; k++) {
    shard_wire_dtype out = SHARD_WIRE_FP32;
    assert_int_equal(shard_wire_dtype_parse(shard_wire_dtype_name(k), &out), 0);
    assert_int_equal(out, k);
  }
  char msg[128];
  shard_wire_dtype d = SHARD_WIRE_BF16;
  assert_int_equal(shard_wire_dtype_parse_msg("fp16", &d, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(d, SHARD_WIRE_BF16);
  assert_string_equal(msg, "unknown wire dtype 'fp16'; expected one of: "
                           "fp32, bf16");
  assert_string_equal(shard_wire_dtype_name((shard_wire_dtype)2), "unknown");
  assert_string_equal(shard_opt_kind_name(SHARD_OPT_ADAMW), "adamw");
  assert_string_equal(shard_init_kind_name(SHARD_INIT_XAVIER_UNIFORM),
                      "xavier_uniform");
  assert_string_equal(shard_opt_kind_name((shard_opt_kind)17), "unknown");
}

static void test_unknown_optimizer_name(void **state) {
  shard_opt_kind k = SHARD_OPT_ADAGRAD;
  char msg[160];
  (void)state;
  assert_int_equal(shard_opt_kind_parse("adamx", &k), FSPS_INVALID_ARGUMENT);
  assert_int_equal(k, SHARD_OPT_ADAGRAD); /* untouched */
  assert_int_equal(shard_opt_kind_parse(NULL, &k), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_opt_kind_parse("Adam", &k), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_opt_kind_parse_msg("adamx", &k, msg, sizeof(msg)),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "'adamx'"));
  assert_non_null(strstr(msg, "sgd, adam, adamw, adagrad"));
  shard_init_kind ik;
  assert_int_equal(shard_init_kind_parse_msg("glorot", &ik, msg, sizeof(msg)),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "'glorot'"));
  shard_sched_kind sk;
  assert_int_equal(shard_sched_kind_parse_msg("cos", &sk, msg, 8),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(strlen(msg), 7); /* truncated, still terminated */
}

/* ---- Validation -------------------------------------------------------- */

/* Asserts that s fails validation with a message containing each of the
 * (up to two) fragments, then destroys s. */
static void expect_invalid(shard_spec *s, const char *frag1,
                           const char *frag2) {
  char msg[256] = "";
  int rc = shard_spec_validate(s, msg, sizeof(msg));
  if (rc != FSPS_INVALID_ARGUMENT || strstr(msg, frag1) == NULL ||
      (frag2 && strstr(msg, frag2) == NULL))
    fail_msg("rc %d, message \"%s\", expected \"%s\" and \"%s\"", rc, msg,
             frag1, frag2 ? frag2 : "");
  shard_spec_destroy(s);
}

static void test_refuses_zero_size_tensor(void **state) {
  static const uint64_t d[2] = {4, 0};
  (void)state;
  shard_spec *s = one_tensor_spec(2, d, SHARD_INIT_ZEROS, 0, 0);
  expect_invalid(s, "tensor 0 't'", "dims[1] is 0");
  s = one_tensor_spec(0, NULL, SHARD_INIT_ZEROS, 0, 0);
  expect_invalid(s, "tensor 0 't': ndims is 0", NULL);
}

static void test_refuses_duplicate_layers(void **state) {
  (void)state;
  shard_spec *s = base_spec(M_NONE);
  add_layer2(s, "fc1");
  expect_invalid(s, "layers 0 and 2", "'fc1'");
}

static void test_refuses_duplicate_tensors(void **state) {
  static const uint64_t d[1] = {3};
  (void)state;
  shard_spec *s = base_spec(M_NONE);
  assert_int_equal(shard_spec_add_tensor(s, "w", 1, d, SHARD_INIT_ZEROS, 0, 0),
                   FSPS_OK);
  expect_invalid(s, "layer 1 'emb', tensor 1 'w'", "duplicate tensor name");
}

static shard_spec *with_optim(void (*edit)(shard_optim_spec *)) {
  shard_spec *s = base_spec(M_NONE);
  shard_optim_spec o = *shard_spec_optim(s);
  edit(&o);
  shard_spec_set_optim(s, &o);
  return s;
}

static void neg_lr(shard_optim_spec *o) {
  o->lr = -0.1;
}
static void nan_lr(shard_optim_spec *o) {
  o->lr = NAN;
}
static void nesterov_no_momentum(shard_optim_spec *o) {
  o->nesterov = true;
}
static void nesterov_dampening(shard_optim_spec *o) {
  o->nesterov = true;
  o->momentum = 0.9;
  o->dampening = 0.1;
}
static void bad_kind(shard_optim_spec *o) {
  o->kind = (shard_opt_kind)7;
}
static void bad_beta(shard_optim_spec *o) {
  shard_optim_defaults(SHARD_OPT_ADAM, o);
  o->beta2 = 1.0;
}
static void zero_eps(shard_optim_spec *o) {
  shard_optim_defaults(SHARD_OPT_ADAGRAD, o);
  o->eps = 0;
}
static void neg_momentum(shard_optim_spec *o) {
  o->momentum = -1;
}
static void step_no_size(shard_optim_spec *o) {
  o->schedule = SHARD_SCHED_STEP;
  o->step_size = 0;
}
static void cosine_no_tmax(shard_optim_spec *o) {
  o->schedule = SHARD_SCHED_COSINE;
  o->t_max = 0;
}
static void bad_warmup(shard_optim_spec *o) {
  o->warmup_start_factor = 1.5;
}
static void neg_wd(shard_optim_spec *o) {
  o->weight_decay = -0.01;
}

static void test_refuses_bad_optimizer(void **state) {
  (void)state;
  expect_invalid(with_optim(neg_lr), "lr is -0.1", NULL);
  expect_invalid(with_optim(nan_lr), "lr is nan", "finite");
  expect_invalid(with_optim(nesterov_no_momentum), "nesterov", "momentum");
  expect_invalid(with_optim(nesterov_dampening), "nesterov", "dampening");
  expect_invalid(with_optim(bad_kind), "optimizer: kind 7", NULL);
  expect_invalid(with_optim(bad_beta), "beta2 is 1", "[0, 1)");
  expect_invalid(with_optim(zero_eps), "eps is 0", "> 0");
  expect_invalid(with_optim(neg_momentum), "momentum is -1", NULL);
  expect_invalid(with_optim(step_no_size), "step_size", NULL);
  expect_invalid(with_optim(cosine_no_tmax), "t_max", NULL);
  expect_invalid(with_optim(bad_warmup), "warmup_start_factor is 1.5", NULL);
  expect_invalid(with_optim(neg_wd), "weight_decay is -0.01", NULL);
}

static void test_refuses_unknown_wire_dtype(void **state) {
  (void)state;
  shard_spec *s = base_spec(M_WIRE_DTYPE);
  char msg[256];
  assert_int_equal(shard_spec_validate(s, msg, sizeof msg), FSPS_OK);
  assert_int_equal(shard_spec_wire_dtype(s), SHARD_WIRE_BF16);
  shard_spec_set_wire_dtype(s, (shard_wire_dtype)5);
  assert_int_equal(shard_spec_validate(s, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_string_equal(msg, "unknown wire dtype 5; expected fp32 or bf16");
  shard_spec_destroy(s);
}

static void test_refuses_xavier_on_1d(void **state) {
  static const uint64_t d[1] = {64};
  (void)state;
  shard_spec *s = one_tensor_spec(1, d, SHARD_INIT_XAVIER_UNIFORM, 1, 0);
  expect_invalid(s, "tensor 0 't'", "xavier_uniform init needs at least 2");
  s = one_tensor_spec(1, d, SHARD_INIT_HE_UNIFORM, 0, 0);
  expect_invalid(s, "tensor 0 't'", "he_uniform");
}

static void test_refuses_bad_init_params(void **state) {
  static const uint64_t d[1] = {8};
  (void)state;
  expect_invalid(one_tensor_spec(1, d, SHARD_INIT_UNIFORM, 1, 0),
                 "'t': uniform low 1 is above high 0", NULL);
  expect_invalid(one_tensor_spec(1, d, SHARD_INIT_NORMAL, 0, -1),
                 "'t': normal std -1", NULL);
  expect_invalid(one_tensor_spec(1, d, SHARD_INIT_CONSTANT, INFINITY, 0),
                 "init_a is inf", NULL);
  expect_invalid(one_tensor_spec(1, d, SHARD_INIT_CONSTANT, 1e300, 0),
                 "init_a is 1e+300", "float32");
  expect_invalid(one_tensor_spec(1, d, SHARD_INIT_NORMAL, 0, 1e38),
                 "normal(0, 1e+38) overflows float32", NULL);
  expect_invalid(one_tensor_spec(1, d, (shard_init_kind)11, 0, 0),
                 "init kind 11 is unknown", NULL);
}

static void test_refuses_empty_specs(void **state) {
  (void)state;
  shard_spec *s = shard_spec_create(1);
  expect_invalid(s, "no layers", NULL);
  s = base_spec(M_NONE);
  assert_int_equal(shard_spec_add_layer(s, "head"), FSPS_OK);
  expect_invalid(s, "layer 2 'head' has no tensors", NULL);
  s = base_spec(M_NONE);
  add_layer2(s, "");
  expect_invalid(s, "layer 2", "empty");
  expect_invalid(NULL, "NULL", NULL);
}

static void test_refuses_unstorable_input(void **state) {
  static const uint64_t d[5] = {1, 2, 3, 4, 5};
  char longname[80];
  (void)state;
  memset(longname, 'x', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';

  shard_spec *s = base_spec(M_NONE);
  assert_int_equal(shard_spec_add_layer(s, longname), FSPS_INVALID_ARGUMENT);
  assert_int_equal(shard_spec_num_layers(s), 2);
  expect_invalid(s, "layer 2: name 'xxx", "longer than 63 bytes");

  s = base_spec(M_NONE);
  assert_int_equal(shard_spec_add_tensor(s, "t5", 5, d, SHARD_INIT_ZEROS, 0, 0),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(s, "tensor 't5': 5 dims", "at most 4");

  s = shard_spec_create(1);
  assert_int_equal(shard_spec_add_tensor(s, "w", 1, d, SHARD_INIT_ZEROS, 0, 0),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(s, "'w' was added before any layer", NULL);

  s = base_spec(M_NONE);
  assert_int_equal(shard_spec_add_tensor(s, NULL, 1, d, SHARD_INIT_ZEROS, 0, 0),
                   FSPS_INVALID_ARGUMENT);
  expect_invalid(s, "tensor 1: name is missing", NULL);
}

static void test_refuses_huge_layer(void **state) {
  static const uint64_t d[2] = {UINT64_C(1) << 21, UINT64_C(1) << 20};
  static const uint64_t big[2] = {UINT64_C(1) << 40, UINT64_C(1) << 40};
  (void)state;
  shard_spec *s = one_tensor_spec(2, d, SHARD_INIT_ZEROS, 0, 0);
  expect_invalid(s, "layer 0 'l' has 2199023255552 elements", "2^40");
  s = one_tensor_spec(2, big, SHARD_INIT_ZEROS, 0, 0); /* 2^80 overflows */
  expect_invalid(s, "more than 2^64 elements", "2^40");
}

static void test_too_many_layers(void **state) {
  char name[16];
  (void)state;
  shard_spec *s = shard_spec_create(1);
  for (int l = 0; l < SHARD_MAX_LAYERS; l++) {
    snprintf(name, sizeof(name), "l%d", l);
    add_layer2(s, name);
  }
  assert_int_equal(shard_spec_validate(s, NULL, 0), FSPS_OK);
  assert_int_equal(shard_spec_add_layer(s, "one_more"), FSPS_INVALID_ARGUMENT);
  expect_invalid(s, "too many layers", "4096");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stride_examples),
      cmocka_unit_test(test_slices_cover_layer),
      cmocka_unit_test(test_slices_full_except_last),
      cmocka_unit_test(test_chunks_reassemble),
      cmocka_unit_test(test_philox_known_answers),
      cmocka_unit_test(test_init_same_for_any_S),
      cmocka_unit_test(test_init_subrange_matches_full),
      cmocka_unit_test(test_init_refuses_bad_range),
      cmocka_unit_test(test_init_differs_across_seeds_and_layers),
      cmocka_unit_test(test_init_he_and_uniform_bounds),
      cmocka_unit_test(test_init_xavier_conv_bounds),
      cmocka_unit_test(test_init_uniform_many),
      cmocka_unit_test(test_init_normal_moments),
      cmocka_unit_test(test_init_constant_and_zeros_exact),
      cmocka_unit_test(test_init_client),
      cmocka_unit_test(test_rand_uniform_unit_interval),
      cmocka_unit_test(test_hash_same_spec_same_hash),
      cmocka_unit_test(test_hash_every_field_matters),
      cmocka_unit_test(test_hash_pinned),
      cmocka_unit_test(test_spec_accessors),
      cmocka_unit_test(test_optim_defaults),
      cmocka_unit_test(test_kind_names_round_trip),
      cmocka_unit_test(test_unknown_optimizer_name),
      cmocka_unit_test(test_refuses_zero_size_tensor),
      cmocka_unit_test(test_refuses_duplicate_layers),
      cmocka_unit_test(test_refuses_duplicate_tensors),
      cmocka_unit_test(test_refuses_bad_optimizer),
      cmocka_unit_test(test_refuses_xavier_on_1d),
      cmocka_unit_test(test_refuses_unknown_wire_dtype),
      cmocka_unit_test(test_refuses_bad_init_params),
      cmocka_unit_test(test_refuses_empty_specs),
      cmocka_unit_test(test_refuses_unstorable_input),
      cmocka_unit_test(test_refuses_huge_layer),
      cmocka_unit_test(test_too_many_layers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
