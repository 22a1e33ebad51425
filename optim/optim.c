/* optim.c: the optimizers' entry points (SGD, Adam/AdamW, Adagrad), their
 * coefficients and state, and the gradient-clipping helpers. */

#include "optim.h"
#include "optim_int.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* The kernels themselves live in kern_body.h, built once per instruction
 * set (kern_portable.c, kern_avx2.c, kern_avx512.c); isa.c picks the one
 * that runs. Here: the coefficients, in double as PyTorch computes them and
 * rounded to float once, and the optimizers' state. */

/* Sign and scale folded into one factor: -(g * s) == g * -s exactly for
 * every number (a NaN keeps its sign, where torch's negation flips it). */
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

/* ---- steps -------------------------------------------------------------- */

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
  optim_kernels_current()->sgd(&k, param, grad, buf, n,
                               cfg->weight_decay != 0.0, mode, cfg->nesterov);
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

void optim_adam_step(const optim_config *cfg, uint64_t t, double lr,
                     float grad_scale, float *param, const float *grad,
                     float *m, float *v, size_t n, bool decoupled) {
  adam_coef k = adam_coefs(cfg, t, lr, grad_scale, decoupled);
  bool l2 = !decoupled && cfg->weight_decay != 0.0;
  optim_kernels_current()->adam(&k, param, grad, m, v, n, l2);
}

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
  optim_kernels_current()->adagrad(&k, param, grad, sum, n,
                                   cfg->weight_decay != 0.0);
}

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
