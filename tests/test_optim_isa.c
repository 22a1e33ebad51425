/* test_optim_isa.c: unit tests of optim/'s instruction sets — choosing and
 * forcing one, and every path this CPU runs equal to the portable one bit
 * for bit: odd lengths, tails, unaligned and mutually misaligned spans,
 * NaN, infinities, zeros of both signs and denormals. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"

enum { NISA = OPTIM_ISA_AVX512 + 1, STEPS = 4, MAXN = 1001, PAD = 16 };

/* The instruction set chosen before any test forced one. */
static optim_isa initial;

/* ---- the first choice, raced --------------------------------------------- */

enum { RACERS = 4, RACE_N = 257 };

typedef struct {
  float p[RACE_N], g[RACE_N], s[2 * RACE_N];
  optim_isa seen;
} racer;

/* A step as the process's first use of optim, from several threads at once
 * (main runs this before anything else): every thread must see the same
 * choice, and ThreadSanitizer (scripts/test.sh) sees the race on it. */
static void *race_first_step(void *arg) {
  racer *r = arg;
  optim_config c;
  optim_config_defaults(OPTIM_ADAM, &c);
  for (size_t i = 0; i < RACE_N; i++) {
    r->p[i] = (float)i / RACE_N;
    r->g[i] = 0.5f - r->p[i];
  }
  optim_state_init(&c, r->s, RACE_N);
  optim_step(&c, 1, c.lr, 1.0f, r->p, r->g, r->s, RACE_N);
  r->seen = optim_isa_current();
  return NULL;
}

/* Returns the choice all racers saw, or -1 if they disagree or a thread
 * could not start. */
static int race_first_choice(void) {
  static racer r[RACERS];
  pthread_t th[RACERS];
  int started = 0, agreed = 1;
  for (; started < RACERS; started++)
    if (pthread_create(&th[started], NULL, race_first_step, &r[started]) != 0)
      break;
  for (int i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    agreed &= r[i].seen == r[0].seen;
  }
  return started == RACERS && agreed ? (int)r[0].seen : -1;
}

/* ---- choosing an instruction set ---------------------------------------- */

static void test_isa_names(void **unused) {
  (void)unused;
  const char *names[NISA] = {"portable", "avx2", "avx512"};
  for (int i = 0; i < NISA; i++) {
    optim_isa isa = (optim_isa)-1;
    assert_string_equal(optim_isa_name((optim_isa)i), names[i]);
    assert_int_equal(optim_isa_parse(names[i], &isa), 0);
    assert_int_equal(isa, i);
  }
  optim_isa isa = OPTIM_ISA_AVX2;
  assert_int_equal(optim_isa_parse("AVX2", &isa), -1);
  assert_int_equal(optim_isa_parse("", &isa), -1);
  assert_int_equal(optim_isa_parse("auto", &isa), -1);
  assert_int_equal(isa, OPTIM_ISA_AVX2); /* untouched on failure */
  assert_string_equal(optim_isa_name((optim_isa)NISA), "unknown");
}

/* Unless FSPS_OPTIM_ISA caps it, the first choice is the widest path the
 * CPU runs; optim_isa_set switches paths and refuses what the CPU lacks. */
static void test_isa_choice(void **unused) {
  (void)unused;
  int widest = OPTIM_ISA_PORTABLE;
  for (int i = 0; i < NISA; i++) {
    if (optim_isa_supported((optim_isa)i)) {
      print_message("supported: %s\n", optim_isa_name((optim_isa)i));
      widest = i;
    }
  }
  print_message("chosen at start: %s (FSPS_OPTIM_ISA=%s)\n",
                optim_isa_name(initial),
                getenv("FSPS_OPTIM_ISA") ? getenv("FSPS_OPTIM_ISA") : "");
  assert_true(optim_isa_supported(OPTIM_ISA_PORTABLE));
  assert_true(optim_isa_supported(initial));
  if (getenv("FSPS_OPTIM_ISA") == NULL)
    assert_int_equal(initial, widest);
  for (int i = 0; i < NISA; i++) {
    int rc = optim_isa_set((optim_isa)i);
    assert_int_equal(rc, optim_isa_supported((optim_isa)i) ? 0 : -1);
    if (rc == 0)
      assert_int_equal(optim_isa_current(), i);
  }
  assert_false(optim_isa_supported((optim_isa)NISA));
  assert_int_equal(optim_isa_set((optim_isa)NISA), -1);
  assert_int_equal(optim_isa_set(initial), 0);
}

/* ---- every path equals the portable one --------------------------------- */

enum { NCASES = 10 };

/* Ten configurations covering every branch of the kernels: SGD plain, with
 * weight decay, momentum with dampening, Nesterov with decay and maximize;
 * Adam plain and with decay and maximize; AdamW without and with decay;
 * Adagrad plain and with decay, lr decay and an initial accumulator. */
static void case_config(int i, optim_config *c) {
  static const optim_kind kinds[NCASES] = {
      OPTIM_SGD,  OPTIM_SGD,   OPTIM_SGD,   OPTIM_SGD,     OPTIM_ADAM,
      OPTIM_ADAM, OPTIM_ADAMW, OPTIM_ADAMW, OPTIM_ADAGRAD, OPTIM_ADAGRAD};
  optim_config_defaults(kinds[i], c);
  c->lr = 0.037;
  c->weight_decay = i % 2 ? 0.013 : 0.0;
  c->maximize = i == 3 || i == 5;
  if (i == 2 || i == 3) {
    c->momentum = 0.87;
    c->dampening = i == 2 ? 0.15 : 0.0;
    c->nesterov = i == 3;
  }
  if (c->kind == OPTIM_ADAM || c->kind == OPTIM_ADAMW) {
    c->beta1 = 0.83;
    c->beta2 = 0.9937;
    c->eps = 1.3e-7;
  }
  if (i == 9) {
    c->lr_decay = 0.013;
    c->initial_accumulator_value = 0.21;
    c->eps = 1.7e-7;
  }
}

/* Values the kernels must carry through exactly as the portable path does:
 * NaN of both signs, infinities, signed zeros, denormals (with neither
 * flush-to-zero nor denormals-are-zero set, every path rounds them as IEEE
 * says), the smallest and largest normals, and magnitudes whose squares
 * are denormal (Adam's exp_avg_sq, Adagrad's sum). */
static const float SPECIALS[] = {
    NAN,    -NAN,    INFINITY, -INFINITY,    0.0f,   -0.0f,
    1e-40f, -3e-42f, FLT_MIN,  FLT_TRUE_MIN, 1e-20f, -1e-22f,
    2e-19f, FLT_MAX, -FLT_MAX, 1e19f,
};

/* Uniform floats in [-1, 1) from a 64-bit LCG, one in sixteen replaced by
 * a special value and one in sixteen scaled to about 1e-20; and every
 * element whose index is 5 mod 13 scaled to about 1e-20 too, so that in
 * every array of every step the same elements are tiny and their squares
 * accumulate into denormal state. */
static void fill_data(float *x, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    float u = (float)(s >> 40) / 8388608.0f - 1.0f;
    unsigned pick = (unsigned)(s >> 20) & 15u;
    if (pick == 0)
      u = SPECIALS[(s >> 24) % (sizeof SPECIALS / sizeof *SPECIALS)];
    else if (pick == 1 || i % 13 == 5)
      u *= 1e-20f;
    x[i] = u;
  }
}

/* One run: parameters, gradients of STEPS steps, state, each at its own
 * offset in floats from a 64-byte boundary. */
typedef struct {
  _Alignas(64) float p[MAXN + PAD];
  _Alignas(64) float g[STEPS * MAXN + PAD];
  _Alignas(64) float s[2 * MAXN + PAD];
} run_bufs;

typedef struct {
  size_t n, op, og, os; /* length and offsets of p, g, state */
} layout;

/* STEPS steps of c under `isa` on fresh data; lr and grad_scale away from
 * round numbers, t from 1 so SGD's first-step momentum is covered. */
static void run_on(optim_isa isa, const optim_config *c, const layout *l,
                   run_bufs *b) {
  float *p = b->p + l->op, *g = b->g + l->og, *s = b->s + l->os;
  fill_data(p, l->n, 11 + l->n);
  for (size_t t = 0; t < STEPS; t++)
    fill_data(g + t * l->n, l->n, 17 + t + l->n);
  optim_state_init(c, s, l->n);
  assert_int_equal(optim_isa_set(isa), 0);
  for (uint64_t t = 1; t <= STEPS; t++)
    optim_step(c, t, c->lr * (1.0 + 0.1 * (double)t), 1.0f / 3.0f, p,
               g + (t - 1) * l->n, s, l->n);
}

/* Where two NaNs meet in one operation (a NaN parameter plus a NaN step,
 * say), x86 hands on the first operand's; which operand is first is the
 * compiler's choice, as IEEE 754 leaves open which NaN propagates. GCC
 * orders them alike in every path (and as torch's build does), and is held
 * to it; under another compiler NaNs that differ only in sign are counted
 * and reported, not failed. */
#if defined(__GNUC__) && !defined(__clang__)
enum { NAN_SIGN_FREE = 0 };
#else
enum { NAN_SIGN_FREE = 1 };
#endif

static size_t nan_sign_only; /* NaNs allowed through by NAN_SIGN_FREE */

static bool same_bits(float a, float b) {
  uint32_t x, y;
  memcpy(&x, &a, sizeof x);
  memcpy(&y, &b, sizeof y);
  if (x == y)
    return true;
  if (!NAN_SIGN_FREE || !isnan(a) || !isnan(b) || (x ^ y) != 0x80000000u)
    return false;
  nan_sign_only++;
  return true;
}

/* Fails, naming the first differing element, unless a and b are the same
 * bits (NaN payloads and signs and the sign of zero included). */
static void check_same(const float *a, const float *b, size_t n,
                       const char *what, const char *isa, int kase,
                       const layout *l) {
  size_t i = 0;
  while (i < n && same_bits(a[i], b[i]))
    i++;
  if (i == n)
    return;
  uint32_t x, y;
  memcpy(&x, a + i, sizeof x);
  memcpy(&y, b + i, sizeof y);
  print_error("%s case %d n=%zu offsets %zu/%zu/%zu: %s[%zu] = %.9g (%08x), "
              "portable %.9g (%08x)\n",
              isa, kase, l->n, l->op, l->og, l->os, what, i, (double)a[i], x,
              (double)b[i], y);
  fail();
}

static void check_layout(optim_isa isa, int kase, const layout *l) {
  static run_bufs want, got;
  optim_config c;
  case_config(kase, &c);
  run_on(OPTIM_ISA_PORTABLE, &c, l, &want);
  run_on(isa, &c, l, &got);
  size_t ns = optim_state_per_elem(&c) * l->n;
  const char *name = optim_isa_name(isa);
  check_same(got.p + l->op, want.p + l->op, l->n, "param", name, kase, l);
  check_same(got.s + l->os, want.s + l->os, ns, "state", name, kase, l);
}

/* Lengths 1..40 (every tail of every width, alone and after a body), a few
 * around 64 and an odd 1001; each at three offset patterns: aligned, and
 * p, g and state misaligned from the boundary and from one another. */
static void check_isa(optim_isa isa) {
  static const size_t offsets[3][3] = {{0, 0, 0}, {1, 2, 3}, {3, 1, 0}};
  static const size_t extra[] = {63, 64, 65, 127, MAXN};
  for (int kase = 0; kase < NCASES; kase++) {
    for (int o = 0; o < 3; o++) {
      layout l = {0, offsets[o][0], offsets[o][1], offsets[o][2]};
      for (l.n = 1; l.n <= 40; l.n++)
        check_layout(isa, kase, &l);
      for (size_t e = 0; e < sizeof extra / sizeof *extra; e++) {
        l.n = extra[e];
        check_layout(isa, kase, &l);
      }
    }
  }
}

static void test_paths_equal_portable(void **unused) {
  (void)unused;
  for (int i = OPTIM_ISA_PORTABLE + 1; i < NISA; i++) {
    if (!optim_isa_supported((optim_isa)i)) {
      print_message("%s: not on this CPU, not checked\n",
                    optim_isa_name((optim_isa)i));
      continue;
    }
    check_isa((optim_isa)i);
    print_message("%s: bit for bit the portable path\n",
                  optim_isa_name((optim_isa)i));
  }
  if (nan_sign_only > 0) {
    print_message("(%zu NaNs differed only in sign: this compiler orders "
                  "operands as it likes)\n",
                  nan_sign_only);
  }
  assert_int_equal(optim_isa_set(initial), 0);
}

/* The data must exercise what the test claims: the special values reach
 * the parameters (NaN and infinities come out of some steps), and the
 * tiny gradients make denormal state somewhere. */
static void test_data_has_specials(void **unused) {
  (void)unused;
  static run_bufs b;
  optim_config c;
  case_config(4, &c); /* Adam */
  layout l = {MAXN, 0, 0, 0};
  run_on(OPTIM_ISA_PORTABLE, &c, &l, &b);
  int nan = 0, inf = 0, denormal_state = 0;
  for (size_t i = 0; i < MAXN; i++) {
    nan += isnan(b.p[i]) != 0;
    inf += isinf(b.p[i]) != 0;
    denormal_state += fpclassify(b.s[MAXN + i]) == FP_SUBNORMAL;
  }
  print_message("Adam on %d elements: %d NaN, %d infinite parameters, %d "
                "denormal exp_avg_sq\n",
                MAXN, nan, inf, denormal_state);
  assert_true(nan > 0 && inf > 0 && denormal_state >= MAXN / 20);
  assert_int_equal(optim_isa_set(initial), 0);
}

int main(void) {
  int raced = race_first_choice();
  if (raced < 0) {
    fprintf(stderr, "test_optim_isa: racing first steps disagreed\n");
    return 1;
  }
  initial = optim_isa_current();
  if ((int)initial != raced) {
    fprintf(stderr, "test_optim_isa: the choice changed after the race\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_isa_names),
      cmocka_unit_test(test_isa_choice),
      cmocka_unit_test(test_data_has_specials),
      cmocka_unit_test(test_paths_equal_portable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
