/* test_optim.c: unit tests of optim/ — hand-derived steps, trajectories
 * against an independent double-precision reference, schedules, clipping. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "optim.h"

/* ---- helpers ------------------------------------------------------------ */

/* Fails unless |got - want| <= rel * |want| (rel 0: exact equality). */
#define assert_close(got, want, rel)                                           \
  check_close((got), (want), (rel), #got, __FILE__, __LINE__)

static void check_close(double got, double want, double rel, const char *what,
                        const char *file, int line) {
  if (fabs(got - want) <= rel * fabs(want))
    return;
  print_error("%s = %.9g, want %.9g (rel tol %g)\n", what, got, want, rel);
  _fail(file, line);
}

/* Bitwise equality of two float arrays (NaN-safe, distinguishes -0). */
static void assert_same_floats(const float *a, const float *b, size_t n) {
  assert_int_equal(memcmp(a, b, n * sizeof *a), 0);
}

/* Deterministic uniform floats in [-scale, scale) from a 64-bit LCG. */
static void fill_uniform(float *x, size_t n, uint64_t seed, float scale) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x[i] = scale * ((float)(s >> 40) / 8388608.0f - 1.0f);
  }
}

/* Runs `steps` updates of cfg from p with grads[t-1], at a constant lr. */
static void run_steps(const optim_config *cfg, float *p, float *state,
                      const float *grads, size_t n, int steps, float scale) {
  optim_state_init(cfg, state, n);
  for (int t = 1; t <= steps; t++)
    optim_step(cfg, (uint64_t)t, cfg->lr, scale, p, grads + (t - 1) * n, state,
               n);
}

/* ---- config and state --------------------------------------------------- */

static void test_config_defaults(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  assert_int_equal(c.kind, OPTIM_SGD);
  assert_true(c.lr == 1e-3 && c.momentum == 0.0 && c.dampening == 0.0);
  assert_true(!c.nesterov && c.weight_decay == 0.0 && !c.maximize);
  optim_config_defaults(OPTIM_ADAM, &c); /* PyTorch's doubles, not floats */
  assert_true(c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999);
  assert_true(c.eps == 1e-8 && c.weight_decay == 0.0);
  optim_config_defaults(OPTIM_ADAMW, &c);
  assert_int_equal(c.kind, OPTIM_ADAMW);
  assert_true(c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999);
  assert_true(c.eps == 1e-8 && c.weight_decay == 1e-2);
  optim_config_defaults(OPTIM_ADAGRAD, &c);
  assert_true(c.lr == 1e-2 && c.lr_decay == 0.0 && c.eps == 1e-10);
  assert_true(c.weight_decay == 0.0 && c.initial_accumulator_value == 0.0);
  assert_true(c.beta1 == 0.0 && c.momentum == 0.0); /* unused: zero */
}

static void test_state_per_elem(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  assert_int_equal(optim_state_per_elem(&c), 0);
  c.momentum = 0.9f;
  assert_int_equal(optim_state_per_elem(&c), 1);
  optim_config_defaults(OPTIM_ADAM, &c);
  assert_int_equal(optim_state_per_elem(&c), 2);
  optim_config_defaults(OPTIM_ADAMW, &c);
  assert_int_equal(optim_state_per_elem(&c), 2);
  optim_config_defaults(OPTIM_ADAGRAD, &c);
  assert_int_equal(optim_state_per_elem(&c), 1);
}

static void test_state_init(void **unused) {
  (void)unused;
  float s[2 * 5 + 1];
  optim_config c;
  optim_config_defaults(OPTIM_ADAM, &c);
  for (size_t i = 0; i < 11; i++)
    s[i] = 7.0f;
  optim_state_init(&c, s, 5); /* m and v: 10 zeros, s[10] untouched */
  for (size_t i = 0; i < 10; i++)
    assert_true(s[i] == 0.0f);
  assert_true(s[10] == 7.0f);
  optim_config_defaults(OPTIM_ADAGRAD, &c);
  c.initial_accumulator_value = 0.125f;
  optim_state_init(&c, s, 5); /* state_sum: 5 x 0.125, s[5] untouched */
  for (size_t i = 0; i < 5; i++)
    assert_true(s[i] == 0.125f);
  assert_true(s[5] == 0.0f);
  optim_config_defaults(OPTIM_SGD, &c);
  c.momentum = 0.5f;
  s[0] = 3.0f;
  optim_state_init(&c, s, 1);
  assert_true(s[0] == 0.0f);
  c.momentum = 0.0f;
  optim_state_init(&c, NULL, 5); /* no state: nothing written */
}

/* ---- hand-derived steps --------------------------------------------------
 * Hyper-parameters and data are dyadic where possible, so most expected
 * values are exact in float and the assertions exact. */

/* lr 0.5, p = (1, -2, 0.5).
 * t=1, g = (0.5, -1, 2):  p = p - 0.5 g = (0.75, -1.5, -0.5)
 * t=2, g = (1, 0.25, -0.5): p = (0.25, -1.625, -0.25) */
static void test_sgd_plain(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.5f;
  float p[3] = {1.0f, -2.0f, 0.5f};
  const float g[2][3] = {{0.5f, -1.0f, 2.0f}, {1.0f, 0.25f, -0.5f}};
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], NULL, 3);
  assert_true(p[0] == 0.75f && p[1] == -1.5f && p[2] == -0.5f);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], NULL, 3);
  assert_true(p[0] == 0.25f && p[1] == -1.625f && p[2] == -0.25f);
}

/* lr 0.5, momentum 0.5, dampening 0.5, p = (1, -1).
 * t=1, g = (1, 2):     b = g = (1, 2) (no dampening on the first step)
 *                      p = p - 0.5 b = (0.5, -2)
 * t=2, g = (0.5, -2):  b = 0.5 b + 0.5 g = (0.75, 0);  p = (0.125, -2)
 * t=3, g = (-1, 0):    b = (0.375 - 0.5, 0) = (-0.125, 0)
 *                      p = (0.125 + 0.0625, -2) = (0.1875, -2) */
static void test_sgd_momentum_dampening(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.5f;
  c.momentum = 0.5f;
  c.dampening = 0.5f;
  float p[2] = {1.0f, -1.0f}, b[2] = {99.0f, 99.0f}; /* t=1 ignores b */
  const float g[3][2] = {{1.0f, 2.0f}, {0.5f, -2.0f}, {-1.0f, 0.0f}};
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], b, 2);
  assert_true(b[0] == 1.0f && b[1] == 2.0f);
  assert_true(p[0] == 0.5f && p[1] == -2.0f);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], b, 2);
  assert_true(b[0] == 0.75f && b[1] == 0.0f);
  assert_true(p[0] == 0.125f && p[1] == -2.0f);
  optim_step(&c, 3, c.lr, 1.0f, p, g[2], b, 2);
  assert_true(b[0] == -0.125f && b[1] == 0.0f);
  assert_true(p[0] == 0.1875f && p[1] == -2.0f);
}

/* lr 0.25, momentum 0.5, nesterov, weight_decay 0.5, p = (2, -1).
 * t=1, g = (1, 1):   d = g + 0.5 p = (2, 0.5);  b = d = (2, 0.5)
 *                    d = d + 0.5 b = (3, 0.75)
 *                    p = p - 0.25 d = (1.25, -1.1875)
 * t=2, g = (-1, 0.5): d = g + 0.5 p = (-0.375, -0.09375)
 *                    b = 0.5 b + d = (0.625, 0.15625)
 *                    d = d + 0.5 b = (-0.0625, -0.015625)
 *                    p = p - 0.25 d = (1.265625, -1.18359375) */
static void test_sgd_nesterov_wd(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.25f;
  c.momentum = 0.5f;
  c.nesterov = true;
  c.weight_decay = 0.5f;
  float p[2] = {2.0f, -1.0f}, b[2];
  const float g[2][2] = {{1.0f, 1.0f}, {-1.0f, 0.5f}};
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], b, 2);
  assert_true(b[0] == 2.0f && b[1] == 0.5f);
  assert_true(p[0] == 1.25f && p[1] == -1.1875f);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], b, 2);
  assert_true(b[0] == 0.625f && b[1] == 0.15625f);
  assert_true(p[0] == 1.265625f && p[1] == -1.18359375f);
}

/* maximize negates the gradient before weight decay (PyTorch's code):
 * lr 0.5, weight_decay 0.5, p = 1, g = 1: d = -1 + 0.5 = -0.5,
 * p = 1 + 0.25 = 1.25 (the parameter climbs, the decay still pulls). */
static void test_sgd_maximize(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.5f;
  c.weight_decay = 0.5f;
  c.maximize = true;
  float p[1] = {1.0f};
  const float g[1] = {1.0f};
  optim_step(&c, 1, c.lr, 1.0f, p, g, NULL, 1);
  assert_true(p[0] == 1.25f);
}

/* Adam with lr 0.125, beta1 0.75, beta2 0.5, eps 1e-8, p = (1, -0.5):
 * t=1, g = (0.5, -2): m = 0.25 g = (0.125, -0.5); v = 0.5 g^2 = (0.125, 2)
 *   bc1 = 0.25, bc2 = 0.5, step_size = 0.5
 *   denom = sqrt(v)/sqrt(0.5) + eps = |g| + eps = (0.5, 2) (+1e-8)
 *   p = p - 0.5 m/denom = (1 - 0.125, -0.5 + 0.125) = (0.875, -0.375)
 *   (eps moves p by ~2.5e-9 relative to the 0.125 step: below 1e-6)
 * t=2, g = (0.25, 1): m = m + 0.25 (g - m) = (0.15625, -0.125)
 *   v = 0.5 v + 0.5 g^2 = (0.09375, 1.5)
 *   bc1 = 1 - 0.5625 = 0.4375, bc2 = 0.75, step_size = 2/7
 *   denom = sqrt(v / 0.75) = (sqrt(0.125), sqrt(2)) = (0.35355339, 1.4142136)
 *   p = (0.875 - (2/7)(0.15625)/0.35355339, -0.375 + (2/7)(0.125)/1.4142136)
 *     = (0.875 - 0.12626907, -0.375 + 0.02525381)
 *     = (0.74873094, -0.34974619) */
static void test_adam(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAM, &c);
  c.lr = 0.125f;
  c.beta1 = 0.75f;
  c.beta2 = 0.5f;
  float p[2] = {1.0f, -0.5f}, s[4];
  const float g[2][2] = {{0.5f, -2.0f}, {0.25f, 1.0f}};
  optim_state_init(&c, s, 2);
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], s, 2);
  assert_true(s[0] == 0.125f && s[1] == -0.5f); /* m */
  assert_true(s[2] == 0.125f && s[3] == 2.0f);  /* v */
  assert_close(p[0], 0.875, 1e-6);
  assert_close(p[1], -0.375, 1e-6);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], s, 2);
  assert_true(s[0] == 0.15625f && s[1] == -0.125f);
  assert_true(s[2] == 0.09375f && s[3] == 1.5f);
  assert_close(p[0], 0.74873094, 1e-6);
  assert_close(p[1], -0.34974619, 1e-6);
}

/* Adam as above with L2 weight_decay 0.5 and g1 = (-0.25, -2):
 * t=1: d = g + 0.5 p = (0.25, -2.25): the decay flips the first sign.
 *   m = 0.25 d = (0.0625, -0.5625), v = 0.5 d^2 = (0.03125, 2.53125)
 *   denom = |d|, so p = p - 0.5 * 0.25 sign(d) = (0.875, -0.375)
 * t=2, g = (0.25, 1): d = g + 0.5 p = (0.6875, 0.8125)
 *   m = m + 0.25 (d - m) = (0.21875, -0.21875)
 *   v = 0.5 v + 0.5 d^2 = (0.251953125, 1.595703125)
 *   denom = sqrt(v / 0.75) = (0.57961360, 1.45863671)
 *   p = (0.875 - (2/7)(0.21875)/0.57961360,
 *        -0.375 + (2/7)(0.21875)/1.45863671)
 *     = (0.76716723, -0.33215160) */
static void test_adam_wd(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAM, &c);
  c.lr = 0.125f;
  c.beta1 = 0.75f;
  c.beta2 = 0.5f;
  c.weight_decay = 0.5f;
  float p[2] = {1.0f, -0.5f}, s[4];
  const float g[2][2] = {{-0.25f, -2.0f}, {0.25f, 1.0f}};
  optim_state_init(&c, s, 2);
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], s, 2);
  assert_true(s[0] == 0.0625f && s[1] == -0.5625f);
  assert_true(s[2] == 0.03125f && s[3] == 2.53125f);
  assert_close(p[0], 0.875, 1e-6);
  assert_close(p[1], -0.375, 1e-6);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], s, 2);
  assert_true(s[0] == 0.21875f && s[1] == -0.21875f);
  assert_true(s[2] == 0.251953125f && s[3] == 1.595703125f);
  assert_close(p[0], 0.76716723, 1e-6);
  assert_close(p[1], -0.33215160, 1e-6);
}

/* AdamW, data of test_adam, weight_decay 0.5: each step first multiplies p
 * by 1 - lr*wd = 0.9375, then applies the plain Adam step (no L2 term):
 * t=1: p = (0.9375, -0.46875) - 0.125 sign(g) = (0.8125, -0.34375)
 * t=2: p = (0.76171875, -0.322265625) + (-0.12626907, 0.02525381)
 *        = (0.63544968, -0.29701181) */
static void test_adamw(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAMW, &c);
  c.lr = 0.125f;
  c.beta1 = 0.75f;
  c.beta2 = 0.5f;
  c.weight_decay = 0.5f;
  float p[2] = {1.0f, -0.5f}, s[4];
  const float g[2][2] = {{0.5f, -2.0f}, {0.25f, 1.0f}};
  optim_state_init(&c, s, 2);
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], s, 2);
  assert_true(s[0] == 0.125f && s[3] == 2.0f); /* moments as plain Adam */
  assert_close(p[0], 0.8125, 1e-6);
  assert_close(p[1], -0.34375, 1e-6);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], s, 2);
  assert_close(p[0], 0.63544968, 1e-6);
  assert_close(p[1], -0.29701181, 1e-6);
}

/* beta1 0.25, same data as test_adam: m = 0.25 m + 0.75 g.
 * t=1: m = 0.75 g = (0.375, -1.5); p = (0.875, -0.375) again
 * t=2: m = 0.25 m + 0.75 g = (0.28125, 0.375), bc1 = 1 - 1/16 = 0.9375
 *   p = (0.875 - (0.125/0.9375)(0.28125)/0.35355339,
 *        -0.375 - (0.125/0.9375)(0.375)/1.4142136)
 *     = (0.76893399, -0.41035534) */
static void test_adam_small_beta1(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAM, &c);
  c.lr = 0.125f;
  c.beta1 = 0.25f;
  c.beta2 = 0.5f;
  float p[2] = {1.0f, -0.5f}, s[4];
  const float g[2][2] = {{0.5f, -2.0f}, {0.25f, 1.0f}};
  optim_state_init(&c, s, 2);
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], s, 2);
  assert_true(s[0] == 0.375f && s[1] == -1.5f);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], s, 2);
  assert_true(s[0] == 0.28125f && s[1] == 0.375f);
  assert_close(p[0], 0.76893399, 1e-6);
  assert_close(p[1], -0.41035534, 1e-6);
}

/* Adagrad, lr 0.5, lr_decay 0.5, initial_accumulator_value 0.75,
 * eps 1e-10, p = (1, -1):
 * t=1, g = (0.5, -1): clr = 0.5; sum = (1, 1.75)
 *   p = p - 0.5 g/sqrt(sum) = (1 - 0.25, -1 + 0.5/1.3228757)
 *     = (0.75, -0.62203553)
 * t=2, g = (1, 0.5): clr = 0.5/(1 + 0.5) = 1/3; sum = (2, 2)
 *   p = (0.75 - (1/3)/1.4142136, -0.62203553 - (1/6)/1.4142136)
 *     = (0.51429774, -0.73988666) */
static void test_adagrad_lr_decay(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAGRAD, &c);
  c.lr = 0.5f;
  c.lr_decay = 0.5f;
  c.initial_accumulator_value = 0.75f;
  float p[2] = {1.0f, -1.0f}, s[2];
  const float g[2][2] = {{0.5f, -1.0f}, {1.0f, 0.5f}};
  optim_state_init(&c, s, 2);
  optim_step(&c, 1, c.lr, 1.0f, p, g[0], s, 2);
  assert_true(s[0] == 1.0f && s[1] == 1.75f);
  assert_close(p[0], 0.75, 1e-6);
  assert_close(p[1], -0.62203553, 1e-6);
  optim_step(&c, 2, c.lr, 1.0f, p, g[1], s, 2);
  assert_true(s[0] == 2.0f && s[1] == 2.0f);
  assert_close(p[0], 0.51429774, 1e-6);
  assert_close(p[1], -0.73988666, 1e-6);
}

/* ---- reference trajectories ----------------------------------------------
 * An independent double-precision implementation written from the
 * algorithm boxes of the PyTorch documentation (torch.optim.SGD, Adam,
 * AdamW, Adagrad), with m_hat and v_hat as documented rather than the
 * library's folded step_size and denominator. (One deliberate departure:
 * SGD's box applies maximize as p + lr*g at the end, which PyTorch's code
 * does not do; the reference negates the gradient first, as the code and
 * the library do.) It also tracks, per element,
 * mag = |p_0| + sum over steps of |every term added to p|.
 *
 * Tolerance. p_t = p_0 + (sum of updates) is a sum of float-rounded terms,
 * so any float32 implementation carries an absolute error proportional to
 * the size of those terms (unit roundoff 6e-8 each), not to |p_t|. Where the
 * sum cancels to near zero, the pure relative error |a-b| / max(|b|, 1e-6)
 * is unbounded: the runs print it, up to 1.2e-4 here, on elements whose
 * |p_t| is a few thousandths of their terms. So each element must satisfy
 * |a - b| <= 1e-6 * max(|b|, mag): the same 1e-6, measured against the
 * magnitude of what was summed; wherever |b| >= mag that is the plain
 * relative test. Observed maximum: 2.5e-7. */

enum { REF_N = 1000, REF_STEPS = 5 };

typedef struct {
  double p[REF_N], s1[REF_N], s2[REF_N], mag[REF_N];
} ref_state;

static void ref_sgd(const optim_config *c, int t, double gs, ref_state *r,
                    const float *grad) {
  for (size_t i = 0; i < REF_N; i++) {
    double g = (c->maximize ? -gs : gs) * grad[i];
    g += (double)c->weight_decay * r->p[i];
    if (c->momentum != 0.0f) {
      double b = t > 1 ? (double)c->momentum * r->s1[i] +
                             (1.0 - (double)c->dampening) * g
                       : g;
      r->s1[i] = b;
      g = c->nesterov ? g + (double)c->momentum * b : b;
    }
    r->p[i] -= (double)c->lr * g;
    r->mag[i] += fabs((double)c->lr * g);
  }
}

static void ref_adam(const optim_config *c, int t, double gs, ref_state *r,
                     const float *grad) {
  double b1 = c->beta1, b2 = c->beta2, lr = c->lr, wd = c->weight_decay;
  for (size_t i = 0; i < REF_N; i++) {
    double g = (c->maximize ? -gs : gs) * grad[i];
    if (c->kind == OPTIM_ADAMW) {
      r->mag[i] += fabs(lr * wd * r->p[i]);
      r->p[i] -= lr * wd * r->p[i];
    } else {
      g += wd * r->p[i];
    }
    r->s1[i] = b1 * r->s1[i] + (1.0 - b1) * g;
    r->s2[i] = b2 * r->s2[i] + (1.0 - b2) * g * g;
    double m_hat = r->s1[i] / (1.0 - pow(b1, t));
    double v_hat = r->s2[i] / (1.0 - pow(b2, t));
    double u = lr * m_hat / (sqrt(v_hat) + (double)c->eps);
    r->p[i] -= u;
    r->mag[i] += fabs(u);
  }
}

static void ref_adagrad(const optim_config *c, int t, double gs, ref_state *r,
                        const float *grad) {
  double clr = (double)c->lr / (1.0 + (t - 1) * (double)c->lr_decay);
  for (size_t i = 0; i < REF_N; i++) {
    double g = (c->maximize ? -gs : gs) * grad[i];
    g += (double)c->weight_decay * r->p[i];
    r->s1[i] += g * g;
    double u = clr * g / (sqrt(r->s1[i]) + (double)c->eps);
    r->p[i] -= u;
    r->mag[i] += fabs(u);
  }
}

static void ref_run(const optim_config *c, ref_state *r, const float *p0,
                    const float *grads, float scale) {
  for (size_t i = 0; i < REF_N; i++) {
    r->p[i] = p0[i];
    r->mag[i] = fabs((double)p0[i]);
    r->s1[i] = c->kind == OPTIM_ADAGRAD ? c->initial_accumulator_value : 0.0;
    r->s2[i] = 0.0;
  }
  for (int t = 1; t <= REF_STEPS; t++) {
    const float *g = grads + (size_t)(t - 1) * REF_N;
    if (c->kind == OPTIM_SGD)
      ref_sgd(c, t, scale, r, g);
    else if (c->kind == OPTIM_ADAGRAD)
      ref_adagrad(c, t, scale, r, g);
    else
      ref_adam(c, t, scale, r, g);
  }
}

/* Library vs reference over REF_STEPS steps from the same float data. */
static void check_against_reference(const optim_config *c, const char *name) {
  static float p[REF_N], p0[REF_N], grads[REF_STEPS * REF_N];
  static float state[2 * REF_N];
  static ref_state r;
  const float scale = 0.25f; /* as if averaging 4 workers */
  fill_uniform(p0, REF_N, 1, 1.0f);
  fill_uniform(grads, REF_STEPS * REF_N, 2, 4.0f);
  memcpy(p, p0, sizeof p);
  run_steps(c, p, state, grads, REF_N, REF_STEPS, scale);
  ref_run(c, &r, p0, grads, scale);
  double max_rel = 0.0, max_comb = 0.0;
  for (size_t i = 0; i < REF_N; i++) {
    double err = fabs((double)p[i] - r.p[i]);
    double rel = err / fmax(fabs(r.p[i]), 1e-6);
    double comb = err / fmax(fabs(r.p[i]), r.mag[i]);
    max_rel = fmax(max_rel, rel);
    max_comb = fmax(max_comb, comb);
  }
  print_message("%-14s max rel err %.3g, max err / max(|ref|, mag) %.3g\n",
                name, max_rel, max_comb);
  assert_true(max_comb <= 1e-6);
}

static void test_reference_sgd_momentum(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.1f;
  c.momentum = 0.9f;
  c.dampening = 0.1f;
  c.weight_decay = 1e-2f;
  check_against_reference(&c, "sgd_momentum");
}

static void test_reference_sgd_nesterov(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.05f;
  c.momentum = 0.9f;
  c.nesterov = true;
  c.weight_decay = 1e-3f;
  c.maximize = true;
  check_against_reference(&c, "sgd_nesterov");
}

static void test_reference_adam(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAM, &c);
  c.lr = 0.05f;
  c.weight_decay = 1e-2f;
  check_against_reference(&c, "adam");
}

static void test_reference_adamw(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAMW, &c);
  c.lr = 0.05f;
  c.weight_decay = 0.1f;
  check_against_reference(&c, "adamw");
}

static void test_reference_adagrad(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_ADAGRAD, &c);
  c.lr = 0.1f;
  c.lr_decay = 0.05f;
  c.weight_decay = 1e-2f;
  c.initial_accumulator_value = 0.1f;
  check_against_reference(&c, "adagrad");
}

/* ---- float32 order, tails, grad_scale ------------------------------------ */

/* PyTorch 1.13's _single_tensor_* paths written out scalar, op by op in
 * float, with the rounding of ATen's AVX2 kernels: add with alpha and
 * addcmul fused (fmaf), everything else rounded per op, double scalars
 * rounded to float once. The library must agree bit for bit, whichever of
 * its vector body and tail computes an element, on every instruction set
 * this CPU runs. (tests/optim_torch.py checks the library against torch
 * itself where torch is installed.) */
static void torch_order_sgd(const optim_config *c, uint64_t t, float *p,
                            const float *grad, float *b, size_t n) {
  float wd = (float)c->weight_decay, mom = (float)c->momentum;
  float damp1 = (float)(1.0 - c->dampening), nlr = (float)-c->lr;
  for (size_t i = 0; i < n; i++) {
    float g = c->maximize ? -grad[i] : grad[i];
    if (c->weight_decay != 0.0)
      g = fmaf(p[i], wd, g);
    if (c->momentum != 0.0) {
      b[i] = t == 1 ? g : fmaf(g, damp1, b[i] * mom);
      g = c->nesterov ? fmaf(b[i], mom, g) : b[i];
    }
    p[i] = fmaf(g, nlr, p[i]);
  }
}

/* Adam/AdamW (neg, add, mul_, add_, mul_, addcmul_, sqrt, div, add_,
 * addcdiv_). */
static void torch_order_adam(const optim_config *c, uint64_t t, float *p,
                             const float *grad, float *m, float *v, size_t n) {
  double bc1 = 1.0 - pow(c->beta1, (double)t);
  double bc2 = 1.0 - pow(c->beta2, (double)t);
  float c1 = (float)(1.0 - c->beta1), c2 = (float)(1.0 - c->beta2);
  float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps;
  float bc2s = (float)sqrt(bc2), neg_step = (float)-(c->lr / bc1);
  float decay = (float)(1.0 - c->lr * c->weight_decay);
  float wd = (float)c->weight_decay;
  bool adamw = c->kind == OPTIM_ADAMW;
  for (size_t i = 0; i < n; i++) {
    float g = c->maximize ? -grad[i] : grad[i];
    if (adamw)
      p[i] = p[i] * decay;
    else if (c->weight_decay != 0.0)
      g = fmaf(p[i], wd, g);
    m[i] = fmaf(g, c1, m[i] * b1);
    v[i] = fmaf(c2 * g, g, v[i] * b2);
    float denom = sqrtf(v[i]) / bc2s;
    denom = denom + eps;
    p[i] = p[i] + neg_step * m[i] / denom;
  }
}

/* Adagrad (neg, add, addcmul_, sqrt, add_, addcdiv_). */
static void torch_order_adagrad(const optim_config *c, uint64_t t, float *p,
                                const float *grad, float *sum, size_t n) {
  double clr = c->lr / (1.0 + (double)(t - 1) * c->lr_decay);
  float neg_clr = (float)-clr, wd = (float)c->weight_decay;
  for (size_t i = 0; i < n; i++) {
    float g = c->maximize ? -grad[i] : grad[i];
    if (c->weight_decay != 0.0)
      g = fmaf(p[i], wd, g);
    sum[i] = fmaf(1.0f * g, g, sum[i]);
    float std = sqrtf(sum[i]);
    std = std + (float)c->eps;
    p[i] = p[i] + neg_clr * g / std;
  }
}

static void torch_order_step(const optim_config *c, uint64_t t, float *p,
                             const float *g, float *s, size_t n) {
  if (c->kind == OPTIM_SGD)
    torch_order_sgd(c, t, p, g, s, n);
  else if (c->kind == OPTIM_ADAGRAD)
    torch_order_adagrad(c, t, p, g, s, n);
  else
    torch_order_adam(c, t, p, g, s, s + n, n);
}

/* 5 steps of the library and of the scalar float emulation on N elements
 * (odd: vector body and tail); params and state must be bitwise equal. */
static void check_torch_order_here(const optim_config *c) {
  enum { N = 1001 };
  static float p[N], q[N], g[N], s[2 * N], ref_s[2 * N];
  fill_uniform(p, N, 3, 1.0f);
  memcpy(q, p, sizeof p);
  optim_state_init(c, s, N);
  optim_state_init(c, ref_s, N);
  for (uint64_t t = 1; t <= 5; t++) {
    fill_uniform(g, N, 10 + t, 1.0f);
    optim_step(c, t, c->lr, 1.0f, p, g, s, N);
    torch_order_step(c, t, q, g, ref_s, N);
  }
  assert_same_floats(p, q, N);
  assert_same_floats(s, ref_s, optim_state_per_elem(c) * N);
}

/* Sets the next instruction set this CPU runs after *isa (start from -1);
 * after the last, restores `before` and returns false. */
static bool next_isa(int *isa, optim_isa before) {
  while (++*isa <= OPTIM_ISA_AVX512)
    if (optim_isa_set((optim_isa)*isa) == 0)
      return true;
  assert_int_equal(optim_isa_set(before), 0);
  return false;
}

/* check_torch_order_here on every instruction set this CPU runs. */
static void check_torch_order(const optim_config *c) {
  optim_isa before = optim_isa_current();
  for (int isa = -1; next_isa(&isa, before);)
    check_torch_order_here(c);
}

static void test_bitwise_torch_order(void **unused) {
  (void)unused;
  optim_config c;
  optim_config_defaults(OPTIM_SGD, &c);
  c.lr = 0.1;
  c.momentum = 0.9;
  c.dampening = 0.1;
  c.weight_decay = 0.01;
  check_torch_order(&c);
  c.dampening = 0.0;
  c.nesterov = true;
  c.maximize = true;
  check_torch_order(&c);
  optim_config_defaults(OPTIM_ADAM, &c);
  c.lr = 0.01;
  c.weight_decay = 0.01;
  check_torch_order(&c);
  optim_config_defaults(OPTIM_ADAMW, &c);
  c.lr = 0.01;
  c.beta1 = 0.3;
  c.maximize = true;
  check_torch_order(&c);
  optim_config_defaults(OPTIM_ADAGRAD, &c);
  c.lr_decay = 0.1;
  c.weight_decay = 0.01;
  c.initial_accumulator_value = 0.1;
  c.eps = 1e-3; /* large enough to tell sqrt(s) + eps from sqrt(s + eps) */
  check_torch_order(&c);
}

/* The first 13 elements of a 16-element update equal a 13-element update:
 * the tail path computes exactly what the vector body does. */
static void check_tail_matches_body(optim_kind kind) {
  optim_config c;
  optim_config_defaults(kind, &c);
  c.momentum = 0.9f;
  float a[16], b[16], g[3 * 16], sa[32], sb[26];
  fill_uniform(a, 16, 4, 1.0f);
  memcpy(b, a, sizeof a);
  fill_uniform(g, 3 * 16, 5, 1.0f);
  optim_state_init(&c, sa, 16);
  optim_state_init(&c, sb, 13);
  for (uint64_t t = 1; t <= 3; t++) {
    optim_step(&c, t, c.lr, 1.0f, a, g + 16 * (t - 1), sa, 16);
    optim_step(&c, t, c.lr, 1.0f, b, g + 16 * (t - 1), sb, 13);
  }
  assert_same_floats(a, b, 13);
  assert_same_floats(sa, sb, 13); /* momentum, exp_avg or state_sum */
  if (optim_state_per_elem(&c) == 2)
    assert_same_floats(sa + 16, sb + 13, 13); /* exp_avg_sq */
}

/* On every instruction set this CPU runs: 16 is one AVX-512 vector, two
 * AVX2 ones, four portable ones; 13 leaves a tail on each. */
static void test_tail_matches_body(void **unused) {
  (void)unused;
  const optim_kind kinds[] = {OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW,
                              OPTIM_ADAGRAD};
  optim_isa before = optim_isa_current();
  for (int isa = -1; next_isa(&isa, before);)
    for (size_t k = 0; k < 4; k++)
      check_tail_matches_body(kinds[k]);
}

/* grad_scale multiplies the gradient before anything else: a step with
 * grad g and scale s is bit for bit a step with grad g*s and scale 1. With
 * s = 1/4, g*s is exactly g/4; with W = 3, g*(1/3) and g/3 differ by
 * rounding, so that pair agrees to float precision. */
static void check_grad_scale(optim_kind kind, float w) {
  enum { N = 37 };
  float p0[N], g[N], gs[N], gw[N], a[N], b[N], d[N];
  float sa[2 * N], sb[2 * N], sd[2 * N];
  optim_config c;
  optim_config_defaults(kind, &c);
  c.momentum = 0.9f;
  c.weight_decay = 0.01f;
  fill_uniform(p0, N, 6, 1.0f);
  fill_uniform(g, N, 7, 3.0f);
  for (size_t i = 0; i < N; i++) {
    gs[i] = g[i] * (1.0f / w);
    gw[i] = g[i] / w;
  }
  memcpy(a, p0, sizeof a);
  memcpy(b, p0, sizeof b);
  memcpy(d, p0, sizeof d);
  run_steps(&c, a, sa, g, N, 1, 1.0f / w);
  run_steps(&c, b, sb, gs, N, 1, 1.0f);
  run_steps(&c, d, sd, gw, N, 1, 1.0f);
  assert_same_floats(a, b, N);
  for (size_t i = 0; i < N; i++)
    assert_close(a[i], d[i], 1e-6);
}

static void test_grad_scale(void **unused) {
  (void)unused;
  const optim_kind kinds[] = {OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW,
                              OPTIM_ADAGRAD};
  for (size_t k = 0; k < 4; k++) {
    check_grad_scale(kinds[k], 4.0f);
    check_grad_scale(kinds[k], 3.0f);
  }
}

/* ---- schedules ----------------------------------------------------------- */

static void test_schedule_constant(void **unused) {
  (void)unused;
  optim_schedule s;
  memset(&s, 0, sizeof s); /* zeroed: constant, no warm-up */
  assert_true(optim_schedule_lr(&s, 0.1f, 0) == 0.1f);
  assert_true(optim_schedule_lr(&s, 0.1f, 1000000) == 0.1f);
}

/* StepLR, step_size 10, gamma 0.5, base 0.1: 0.1 through step 9, 0.05 at
 * 10..19, 0.025 at 20. */
static void test_schedule_step(void **unused) {
  (void)unused;
  optim_schedule s = {.kind = OPTIM_SCHED_STEP, .step_size = 10, .gamma = 0.5f};
  assert_close(optim_schedule_lr(&s, 0.1f, 0), 0.1, 1e-7);
  assert_close(optim_schedule_lr(&s, 0.1f, 9), 0.1, 1e-7);
  assert_close(optim_schedule_lr(&s, 0.1f, 10), 0.05, 1e-7);
  assert_close(optim_schedule_lr(&s, 0.1f, 19), 0.05, 1e-7);
  assert_close(optim_schedule_lr(&s, 0.1f, 20), 0.025, 1e-7);
  s.step_size = 0; /* no decay rather than a division by zero */
  assert_close(optim_schedule_lr(&s, 0.1f, 20), 0.1, 1e-7);
}

/* Cosine, t_max 100, eta_min 0.001, base 0.1: 0.1 at 0; at 50
 * 0.001 + 0.099 * (1 + cos(pi/2))/2 = 0.0505; 0.001 at 100 and after. */
static void test_schedule_cosine(void **unused) {
  (void)unused;
  optim_schedule s = {
      .kind = OPTIM_SCHED_COSINE, .t_max = 100, .eta_min = 0.001f};
  assert_close(optim_schedule_lr(&s, 0.1f, 0), 0.1, 1e-7);
  assert_close(optim_schedule_lr(&s, 0.1f, 50), 0.0505, 1e-6);
  assert_close(optim_schedule_lr(&s, 0.1f, 100), 0.001, 1e-7);
  assert_close(optim_schedule_lr(&s, 0.1f, 105), 0.001, 1e-7);
  s.t_max = 0;
  assert_close(optim_schedule_lr(&s, 0.1f, 0), 0.001, 1e-7);
}

/* Warm-up over 10 steps from 0.1 on a constant 1.0: factor
 * 0.1 + 0.9 * min(step, 10)/10 = 0.1 at 0, 0.91 at 9, 1 at 10 and after. */
static void test_schedule_warmup(void **unused) {
  (void)unused;
  optim_schedule s = {.warmup_steps = 10, .warmup_start_factor = 0.1f};
  assert_close(optim_schedule_lr(&s, 1.0f, 0), 0.1, 1e-6);
  assert_close(optim_schedule_lr(&s, 1.0f, 9), 0.91, 1e-6);
  assert_close(optim_schedule_lr(&s, 1.0f, 10), 1.0, 0);
  assert_close(optim_schedule_lr(&s, 1.0f, 50), 1.0, 0);
}

/* Warm-up (10 steps from 0.25) times cosine (t_max 100, eta_min 0), base
 * 0.2: at 0, 0.2 * 0.25 = 0.05; at 5, 0.2 (1 + cos(0.05 pi))/2 * 0.625 =
 * 0.12423052; at 9, 0.2 (1 + cos(0.09 pi))/2 * 0.925 = 0.18132717; at 10,
 * 0.2 (1 + cos(0.1 pi))/2 = 0.19510565 (factor 1); at 50, 0.1. */
static void test_schedule_warmup_cosine(void **unused) {
  (void)unused;
  optim_schedule s = {.kind = OPTIM_SCHED_COSINE,
                      .t_max = 100,
                      .warmup_steps = 10,
                      .warmup_start_factor = 0.25f};
  assert_close(optim_schedule_lr(&s, 0.2f, 0), 0.05, 1e-6);
  assert_close(optim_schedule_lr(&s, 0.2f, 5), 0.12423052, 1e-6);
  assert_close(optim_schedule_lr(&s, 0.2f, 9), 0.18132717, 1e-6);
  assert_close(optim_schedule_lr(&s, 0.2f, 10), 0.19510565, 1e-6);
  assert_close(optim_schedule_lr(&s, 0.2f, 50), 0.1, 1e-6);
}

/* ---- clipping ------------------------------------------------------------ */

static void test_sq_norm(void **unused) {
  (void)unused;
  const float g[2] = {3.0f, 4.0f};
  assert_true(optim_sq_norm(g, 2) == 25.0);
  assert_true(optim_sq_norm(g, 0) == 0.0);
  float h[19]; /* 19 = two blocks of 8 and a tail of 3 */
  for (int i = 0; i < 19; i++)
    h[i] = (float)(i + 1);
  assert_true(optim_sq_norm(h, 19) == 2470.0); /* 19*20*39/6 */
  const float big[2] = {1e20f, 1e20f};         /* squares overflow float */
  assert_close(optim_sq_norm(big, 2), 2.0 * (double)1e20f * (double)1e20f,
               1e-15);
}

static void test_scale(void **unused) {
  (void)unused;
  float g[5] = {1.0f, -2.0f, 4.0f, 0.0f, 8.0f};
  optim_scale(g, 5, 0.5f);
  assert_true(g[0] == 0.5f && g[1] == -1.0f && g[2] == 2.0f);
  assert_true(g[3] == 0.0f && g[4] == 4.0f);
  optim_scale(g, 2, 2.0f); /* only the first two */
  assert_true(g[0] == 1.0f && g[1] == -2.0f && g[2] == 2.0f);
}

static void test_clip_value(void **unused) {
  (void)unused;
  float g[6] = {-3.0f, -1.0f, 0.5f, 2.0f, 1.0f, NAN};
  optim_clip_value(g, 6, 1.0f);
  assert_true(g[0] == -1.0f && g[1] == -1.0f && g[2] == 0.5f);
  assert_true(g[3] == 1.0f && g[4] == 1.0f);
  assert_true(isnan(g[5]));
}

/* clip_grad_norm_: coef = max_norm / (norm + 1e-6), at most 1. */
static void test_clip_norm_coef(void **unused) {
  (void)unused;
  assert_close(optim_clip_norm_coef(25.0, 1.0f), 1.0 / (5.0 + 1e-6), 1e-7);
  assert_true(optim_clip_norm_coef(25.0, 10.0f) == 1.0f);
  assert_true(optim_clip_norm_coef(0.0, 1.0f) == 1.0f);
  assert_true(isnan(optim_clip_norm_coef(NAN, 1.0f)));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_state_per_elem),
      cmocka_unit_test(test_state_init),
      cmocka_unit_test(test_sgd_plain),
      cmocka_unit_test(test_sgd_momentum_dampening),
      cmocka_unit_test(test_sgd_nesterov_wd),
      cmocka_unit_test(test_sgd_maximize),
      cmocka_unit_test(test_adam),
      cmocka_unit_test(test_adam_wd),
      cmocka_unit_test(test_adamw),
      cmocka_unit_test(test_adam_small_beta1),
      cmocka_unit_test(test_adagrad_lr_decay),
      cmocka_unit_test(test_reference_sgd_momentum),
      cmocka_unit_test(test_reference_sgd_nesterov),
      cmocka_unit_test(test_reference_adam),
      cmocka_unit_test(test_reference_adamw),
      cmocka_unit_test(test_reference_adagrad),
      cmocka_unit_test(test_bitwise_torch_order),
      cmocka_unit_test(test_tail_matches_body),
      cmocka_unit_test(test_grad_scale),
      cmocka_unit_test(test_schedule_constant),
      cmocka_unit_test(test_schedule_step),
      cmocka_unit_test(test_schedule_cosine),
      cmocka_unit_test(test_schedule_warmup),
      cmocka_unit_test(test_schedule_warmup_cosine),
      cmocka_unit_test(test_sq_norm),
      cmocka_unit_test(test_scale),
      cmocka_unit_test(test_clip_value),
      cmocka_unit_test(test_clip_norm_coef),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
