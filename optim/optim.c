/* optim.c: the optimizer kernels (SGD, Adam/AdamW, Adagrad), their state and
 * the gradient-clipping helpers: float math over spans, one pass each. */

#include "optim.h"
#include "optim_int.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* The kernels below are written once, as a loop over flags that are constant
 * for the whole call (weight decay on or off, momentum mode, ...). Forcing
 * them inline and calling them with literal flags makes the compiler emit one
 * branch-free, vectorised loop per combination instead of testing the flags
 * per element. Where PyTorch rounds a*b + c once the code says fmaf; every
 * other a*b + c must stay two roundings: GCC guarantees that in ISO C mode
 * (-std=c11 implies -ffp-contract=off), Clang needs to be told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif
#if defined(__GNUC__)
#define KERNEL static inline __attribute__((always_inline))
#else
#define KERNEL static inline
#endif

/* Sign and scale folded into one factor: -(g * s) == g * -s exactly. */
static float signed_scale(const optim_config *cfg, float grad_scale) {
  return cfg->maximize ? -grad_scale : grad_scale;
}

void optim_config_defaults(optim_kind kind, optim_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->kind = kind;
  switch (kind) {
  case OPTIM_SGD:
    cfg->lr = 1e-3;
    break;
  case OPTIM_ADAM:
  case OPTIM_ADAMW:
    cfg->lr = 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->weight_decay = kind == OPTIM_ADAMW ? 1e-2 : 0.0;
    break;
  case OPTIM_ADAGRAD:
    cfg->lr = 1e-2;
    cfg->eps = 1e-10;
    break;
  }
}

size_t optim_state_per_elem(const optim_config *cfg) {
  switch (cfg->kind) {
  case OPTIM_SGD:
    return cfg->momentum != 0.0 ? 1 : 0;
  case OPTIM_ADAM:
  case OPTIM_ADAMW:
    return 2;
  case OPTIM_ADAGRAD:
    return 1;
  }
  return 0;
}

void optim_state_init(const optim_config *cfg, float *state, size_t n) {
  size_t len = optim_state_per_elem(cfg) * n;
  if (cfg->kind == OPTIM_ADAGRAD) {
    const float init = (float)cfg->initial_accumulator_value; /* full_like */
    for (size_t i = 0; i < len; i++)
      state[i] = init;
  } else if (len > 0) {
    memset(state, 0, len * sizeof *state); /* all-zero bits is 0.0f */
  }
}

/* ---- SGD ---------------------------------------------------------------- */

/* Float coefficients of one SGD call, as PyTorch rounds them. */
typedef struct {
  float scale; /* signed grad_scale */
  float wd;    /* grad.add(param, alpha=weight_decay) */
  float mom;   /* buf.mul_(momentum), grad.add(buf, alpha=momentum) */
  float damp1; /* buf.add_(grad, alpha=1 - dampening) */
  float nlr;   /* param.add_(grad, alpha=-lr) */
} sgd_coef;

typedef enum { MOM_NONE, MOM_FIRST, MOM_LATER } mom_mode;

/* Every add with alpha is ATen's fmadd(other, alpha, self): one fmaf. */
KERNEL void sgd_loop(const sgd_coef *k, float *restrict p,
                     const float *restrict g, float *restrict b, size_t n,
                     bool l2, mom_mode mode, bool nesterov) {
  const float scale = k->scale, wd = k->wd, mom = k->mom;
  const float damp1 = k->damp1, nlr = k->nlr;
  for (size_t i = 0; i < n; i++) {
    float d = g[i] * scale;
    if (l2)
      d = fmaf(p[i], wd, d);
    if (mode != MOM_NONE) {
      float buf = mode == MOM_FIRST ? d : fmaf(d, damp1, b[i] * mom);
      b[i] = buf;
      d = nesterov ? fmaf(buf, mom, d) : buf;
    }
    p[i] = fmaf(d, nlr, p[i]);
  }
}

KERNEL void sgd_by_nesterov(const sgd_coef *k, float *p, const float *g,
                            float *b, size_t n, bool l2, mom_mode mode,
                            bool nesterov) {
  if (nesterov)
    sgd_loop(k, p, g, b, n, l2, mode, true);
  else
    sgd_loop(k, p, g, b, n, l2, mode, false);
}

KERNEL void sgd_by_mode(const sgd_coef *k, float *p, const float *g, float *b,
                        size_t n, bool l2, mom_mode mode, bool nesterov) {
  switch (mode) {
  case MOM_NONE:
    sgd_loop(k, p, g, b, n, l2, MOM_NONE, false);
    break;
  case MOM_FIRST:
    sgd_by_nesterov(k, p, g, b, n, l2, MOM_FIRST, nesterov);
    break;
  case MOM_LATER:
    sgd_by_nesterov(k, p, g, b, n, l2, MOM_LATER, nesterov);
    break;
  }
}

OPTIM_CLONES
void optim_sgd_step(const optim_config *cfg, uint64_t t, double lr,
                    float grad_scale, float *param, const float *grad,
                    float *buf, size_t n) {
  sgd_coef k = {
      .scale = signed_scale(cfg, grad_scale),
      .wd = (float)cfg->weight_decay,
      .mom = (float)cfg->momentum,
      .damp1 = (float)(1.0 - cfg->dampening),
      .nlr = (float)-lr,
  };
  mom_mode mode = cfg->momentum == 0.0 ? MOM_NONE
                  : t <= 1             ? MOM_FIRST
                                       : MOM_LATER;
  if (cfg->weight_decay != 0.0)
    sgd_by_mode(&k, param, grad, buf, n, true, mode, cfg->nesterov);
  else
    sgd_by_mode(&k, param, grad, buf, n, false, mode, cfg->nesterov);
}

/* ---- Adam / AdamW ------------------------------------------------------- */

/* Float coefficients of one Adam call, as PyTorch rounds them. */
typedef struct {
  float scale; /* signed grad_scale */
  float decay; /* AdamW: param.mul_(1 - lr*wd); exactly 1 for Adam */
  float wd;    /* Adam: grad.add(param, alpha=weight_decay) */
  float beta1; /* exp_avg.mul_(beta1) */
  float c1;    /* .add_(grad, alpha=1 - beta1) */
  float beta2; /* exp_avg_sq.mul_(beta2) */
  float c2;    /* .addcmul_(grad, grad, value=1 - beta2) */
  float bc2s;  /* / math.sqrt(1 - beta2^t) */
  float eps;   /* .add_(eps) */
  float nstep; /* param.addcdiv_(exp_avg, denom, value=-lr/(1 - beta1^t)) */
} adam_coef;

/* Four elements of Adam or AdamW at p, g, m, v. ATen's addcmul computes
 * self + value*t1*t2, which GCC contracts in torch's build into
 * fma(value*t1, t2, self); addcdiv's self + value*t1/t2 has no product to
 * fuse. Multiplying p by decay == 1 (Adam) returns p unchanged, NaN and inf
 * included, so Adam and AdamW share the code without a flag. */
KERNEL void adam4(const adam_coef *k, float *p, const float *g, float *m,
                  float *v, bool l2) {
  v4f pi = v4_load(p) * k->decay;
  v4f d = v4_load(g) * k->scale;
  if (l2)
    d = v4_fma(pi, v4_splat(k->wd), d);
  v4f mi = v4_fma(d, v4_splat(k->c1), v4_load(m) * k->beta1);
  v4f vi = v4_fma(k->c2 * d, d, v4_load(v) * k->beta2);
  v4f denom = v4_sqrt(vi) / k->bc2s + k->eps;
  v4_store(m, mi);
  v4_store(v, vi);
  v4_store(p, pi + (k->nstep * mi) / denom);
}

/* The last n % 4 elements go through adam4 via zero-padded copies. */
KERNEL void adam_tail(const adam_coef *k, float *p, const float *g, float *m,
                      float *v, size_t r, bool l2) {
  float tp[V4] = {0}, tg[V4] = {0}, tm[V4] = {0}, tv[V4] = {0};
  memcpy(tp, p, r * sizeof *p);
  memcpy(tg, g, r * sizeof *g);
  memcpy(tm, m, r * sizeof *m);
  memcpy(tv, v, r * sizeof *v);
  adam4(k, tp, tg, tm, tv, l2);
  memcpy(p, tp, r * sizeof *p);
  memcpy(m, tm, r * sizeof *m);
  memcpy(v, tv, r * sizeof *v);
}

KERNEL void adam_loop(const adam_coef *k, float *restrict p,
                      const float *restrict g, float *restrict m,
                      float *restrict v, size_t n, bool l2) {
  size_t i = 0;
  for (; i + V4 <= n; i += V4)
    adam4(k, p + i, g + i, m + i, v + i, l2);
  if (i < n)
    adam_tail(k, p + i, g + i, m + i, v + i, n - i, l2);
}

/* The double arithmetic of _single_tensor_adam(w) before its tensor ops. */
static adam_coef adam_coefs(const optim_config *cfg, uint64_t t, double lr,
                            float grad_scale, bool decoupled) {
  double b1 = cfg->beta1, b2 = cfg->beta2, dt = (double)t;
  double bc1 = 1.0 - pow(b1, dt), bc2 = 1.0 - pow(b2, dt);
  adam_coef k = {
      .scale = signed_scale(cfg, grad_scale),
      .decay = decoupled ? (float)(1.0 - lr * cfg->weight_decay) : 1.0f,
      .wd = (float)cfg->weight_decay,
      .beta1 = (float)b1,
      .c1 = (float)(1.0 - b1),
      .beta2 = (float)b2,
      .c2 = (float)(1.0 - b2),
      .bc2s = (float)sqrt(bc2),
      .eps = (float)cfg->eps,
      .nstep = (float)-(lr / bc1),
  };
  return k;
}

OPTIM_CLONES
void optim_adam_step(const optim_config *cfg, uint64_t t, double lr,
                     float grad_scale, float *param, const float *grad,
                     float *m, float *v, size_t n, bool decoupled) {
  adam_coef k = adam_coefs(cfg, t, lr, grad_scale, decoupled);
  if (!decoupled && cfg->weight_decay != 0.0)
    adam_loop(&k, param, grad, m, v, n, true);
  else
    adam_loop(&k, param, grad, m, v, n, false);
}

/* ---- Adagrad ------------------------------------------------------------ */

/* Float coefficients of one Adagrad call, as PyTorch rounds them. */
typedef struct {
  float scale; /* signed grad_scale */
  float wd;    /* grad.add(param, alpha=weight_decay) */
  float eps;   /* state_sum.sqrt().add_(eps) */
  float nclr;  /* param.addcdiv_(grad, std, value=-clr) */
} adagrad_coef;

/* Four elements of Adagrad at p, g, sum; addcmul_(g, g, value=1) is
 * fma(1*g, g, sum) = fma(g, g, sum). */
KERNEL void adagrad4(const adagrad_coef *k, float *p, const float *g,
                     float *sum, bool l2) {
  v4f pi = v4_load(p);
  v4f d = v4_load(g) * k->scale;
  if (l2)
    d = v4_fma(pi, v4_splat(k->wd), d);
  v4f s = v4_fma(d, d, v4_load(sum));
  v4f std = v4_sqrt(s) + k->eps;
  v4_store(sum, s);
  v4_store(p, pi + (k->nclr * d) / std);
}

KERNEL void adagrad_tail(const adagrad_coef *k, float *p, const float *g,
                         float *sum, size_t r, bool l2) {
  float tp[V4] = {0}, tg[V4] = {0}, ts[V4] = {0};
  memcpy(tp, p, r * sizeof *p);
  memcpy(tg, g, r * sizeof *g);
  memcpy(ts, sum, r * sizeof *sum);
  adagrad4(k, tp, tg, ts, l2);
  memcpy(p, tp, r * sizeof *p);
  memcpy(sum, ts, r * sizeof *sum);
}

KERNEL void adagrad_loop(const adagrad_coef *k, float *restrict p,
                         const float *restrict g, float *restrict sum, size_t n,
                         bool l2) {
  size_t i = 0;
  for (; i + V4 <= n; i += V4)
    adagrad4(k, p + i, g + i, sum + i, l2);
  if (i < n)
    adagrad_tail(k, p + i, g + i, sum + i, n - i, l2);
}

OPTIM_CLONES
void optim_adagrad_step(const optim_config *cfg, uint64_t t, double lr,
                        float grad_scale, float *param, const float *grad,
                        float *sum, size_t n) {
  double clr = lr / (1.0 + (double)(t - 1) * cfg->lr_decay);
  adagrad_coef k = {
      .scale = signed_scale(cfg, grad_scale),
      .wd = (float)cfg->weight_decay,
      .eps = (float)cfg->eps,
      .nclr = (float)-clr,
  };
  if (cfg->weight_decay != 0.0)
    adagrad_loop(&k, param, grad, sum, n, true);
  else
    adagrad_loop(&k, param, grad, sum, n, false);
}

/* ---- dispatch ----------------------------------------------------------- */

/* Defined after the kernels: Clang accepts target_clones only on a
 * function's first declaration, before any call to it. */
void optim_step(const optim_config *cfg, uint64_t t, double lr,
                float grad_scale, float *param, const float *grad, float *state,
                size_t n) {
  assert(t >= 1);
  switch (cfg->kind) {
  case OPTIM_SGD:
    optim_sgd_step(cfg, t, lr, grad_scale, param, grad, state, n);
    break;
  case OPTIM_ADAM:
  case OPTIM_ADAMW:
    optim_adam_step(cfg, t, lr, grad_scale, param, grad, state, state + n, n,
                    cfg->kind == OPTIM_ADAMW);
    break;
  case OPTIM_ADAGRAD:
    optim_adagrad_step(cfg, t, lr, grad_scale, param, grad, state, n);
    break;
  }
}

/* ---- clipping ----------------------------------------------------------- */

/* Eight independent partial sums: a single double accumulator would chain
 * every addition on the previous one (latency-bound, and the compiler may
 * not reorder it); eight lanes vectorise and keep a fixed summation order. */
enum { SQ_LANES = 8 };

double optim_sq_norm(const float *g, size_t n) {
  double acc[SQ_LANES] = {0};
  size_t i = 0;
  for (; i + SQ_LANES <= n; i += SQ_LANES)
    for (size_t j = 0; j < SQ_LANES; j++)
      acc[j] += (double)g[i + j] * (double)g[i + j];
  for (size_t j = 0; i < n; i++, j++)
    acc[j] += (double)g[i] * (double)g[i];
  double total = 0.0;
  for (size_t j = 0; j < SQ_LANES; j++)
    total += acc[j];
  return total;
}

void optim_scale(float *g, size_t n, float s) {
  for (size_t i = 0; i < n; i++)
    g[i] = g[i] * s;
}

void optim_clip_value(float *g, size_t n, float clip) {
  const float lo = -clip;
  for (size_t i = 0; i < n; i++) {
    float x = g[i];
    x = x < lo ? lo : x; /* comparisons with NaN are false: NaN stays */
    g[i] = x > clip ? clip : x;
  }
}

float optim_clip_norm_coef(double total_sq_norm, float max_norm) {
  double coef = (double)max_norm / (sqrt(total_sq_norm) + 1e-6);
  return coef > 1.0 ? 1.0f : (float)coef; /* a NaN norm gives NaN, as torch */
}
