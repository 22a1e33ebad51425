/* optim: optimizers over float spans (SGD, Adam, AdamW, Adagrad), their state,
 * learning-rate schedules and gradient-clipping helpers. Pure math, no I/O. */
#ifndef FSPS_OPTIM_H
#define FSPS_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Conventions shared by every function below.
 *
 * - Arithmetic follows PyTorch's single-tensor (foreach=False, fused=False)
 *   CPU path operation for operation: element-wise work in float32, scalar
 *   coefficients (bias corrections, step sizes) computed once per call in
 *   double and rounded to float where PyTorch hands a Python float to a
 *   float32 tensor op. Nothing is fused into an FMA, so results do not depend
 *   on the instruction set. (PyTorch's own AVX2 kernels fuse some a + s*b
 *   into FMAs, so it may differ from itself, and from us, by one ulp.)
 * - Hyper-parameters are floats: a coefficient PyTorch derives from the
 *   Python double 0.9 is derived here from 0.9f (1 - beta1 is 0.100000024,
 *   not 0.1), a difference below one float ulp of that coefficient.
 * - Hyper-parameters are not validated here (the server validates the model
 *   spec); out-of-range values give IEEE results (inf, NaN), never UB.
 * - Spans of n floats must not overlap one another (the kernels are written
 *   with restrict pointers); n == 0 is a no-op.
 * - Thread-safety: no function keeps state of its own, so concurrent calls on
 *   disjoint buffers are safe. None allocates or blocks. */

typedef enum { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW, OPTIM_ADAGRAD } optim_kind;

typedef struct {
  optim_kind kind;
  float lr; /* base learning rate (the schedule scales it) */
  float momentum, dampening;
  bool nesterov;           /* SGD */
  float weight_decay;      /* SGD/Adam/Adagrad: L2 added to the gradient;
                              AdamW: decoupled, p *= 1 - lr*weight_decay */
  float beta1, beta2, eps; /* Adam/AdamW; eps also Adagrad */
  float lr_decay, initial_accumulator_value; /* Adagrad */
  bool maximize; /* PyTorch's maximize flag: ascend instead of descend */
} optim_config;

/* Fills *cfg with PyTorch's defaults for `kind` (torch.optim, 2.x):
 *   SGD     lr 1e-3, momentum 0, dampening 0, nesterov off, weight_decay 0
 *   Adam    lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0
 *   AdamW   as Adam but weight_decay 1e-2
 *   Adagrad lr 1e-2, lr_decay 0, weight_decay 0, initial_accumulator_value 0,
 *           eps 1e-10
 * Every field that `kind` does not use is zero; maximize is false. */
void optim_config_defaults(optim_kind kind, optim_config *cfg);

/* Returns the number of floats of optimizer state per parameter element:
 * SGD 1 if momentum != 0 else 0; Adam and AdamW 2 (exp_avg, exp_avg_sq);
 * Adagrad 1 (state_sum). */
size_t optim_state_per_elem(const optim_config *cfg);

/* Initialises the state of n parameters. `state` holds
 * optim_state_per_elem(cfg) * n floats laid out as consecutive arrays of n
 * (Adam: exp_avg = state, exp_avg_sq = state + n). Adagrad's state_sum is
 * filled with initial_accumulator_value, all other state with 0. `state` may
 * be NULL when optim_state_per_elem(cfg) is 0. */
void optim_state_init(const optim_config *cfg, float *state, size_t n);

/* Applies one update of cfg->kind to n parameters, dispatching to the kernels
 * below (state laid out as optim_state_init describes).
 *   t          1-based number of this update (t >= 1): bias correction, SGD's
 *              first-step momentum buffer, Adagrad's lr decay.
 *   lr         learning rate of this step (the scheduled one; cfg->lr is not
 *              read).
 *   grad_scale multiplies the gradient before anything else (the server
 *              passes 1/W to average W workers' summed gradients).
 * grad is read only; param and state are updated in place, in one pass. */
void optim_step(const optim_config *cfg, uint64_t t, float lr, float grad_scale,
                float *param, const float *grad, float *state, size_t n);

/* SGD, torch.optim.SGD. With mu = momentum, tau = dampening,
 * lambda = weight_decay, gamma = lr, s = grad_scale, per element:
 *   g = s * grad;  if maximize: g = -g
 *   if lambda != 0: g = g + lambda * p
 *   if mu != 0:
 *     b = (t == 1) ? g : mu * b + (1 - tau) * g
 *     g = nesterov ? g + mu * b : b
 *   p = p - gamma * g
 * (PyTorch negates g at the start for maximize, as here; its documentation's
 * "p = p + gamma*g" at the end would differ once weight_decay != 0.)
 * `buf` is the momentum buffer b (n floats); it may be NULL when mu == 0, and
 * its contents are ignored (overwritten) when t == 1. */
void optim_sgd_step(const optim_config *cfg, uint64_t t, float lr,
                    float grad_scale, float *param, const float *grad,
                    float *buf, size_t n);

/* Adam and AdamW, torch.optim.Adam / torch.optim.AdamW (amsgrad off).
 * With beta1, beta2, eps, lambda = weight_decay, gamma = lr, s = grad_scale,
 * per element:
 *   g = s * grad;  if maximize: g = -g
 *   AdamW (decoupled):        p = p * (1 - gamma * lambda)
 *   Adam, if lambda != 0:     g = g + lambda * p
 *   m = lerp(m, g, 1 - beta1) = m + (1 - beta1) * (g - m)
 *       (when 1 - beta1 >= 0.5, PyTorch's lerp computes
 *        g - (g - m) * (1 - (1 - beta1)), and so do we)
 *   v = beta2 * v + (1 - beta2) * g * g
 *   bc1 = 1 - beta1^t,  bc2 = 1 - beta2^t            (double, once per call)
 *   step_size = gamma / bc1                          (double, once per call)
 *   denom = sqrt(v) / sqrt(bc2) + eps
 *   p = p - step_size * m / denom
 * which is the documented m_hat = m / bc1, v_hat = v / bc2,
 * p = p - gamma * m_hat / (sqrt(v_hat) + eps) with PyTorch's evaluation order.
 * `decoupled` selects AdamW; cfg->kind is not read. m (exp_avg) and v
 * (exp_avg_sq) are n floats each. */
void optim_adam_step(const optim_config *cfg, uint64_t t, float lr,
                     float grad_scale, float *param, const float *grad,
                     float *m, float *v, size_t n, bool decoupled);

/* Adagrad, torch.optim.Adagrad. With eta = lr_decay, lambda = weight_decay,
 * gamma = lr, s = grad_scale, per element:
 *   g = s * grad;  if maximize: g = -g
 *   clr = gamma / (1 + (t - 1) * eta)                 (double, once per call)
 *   if lambda != 0: g = g + lambda * p
 *   sum = sum + g * g
 *   p = p - clr * g / (sqrt(sum) + eps)
 * `sum` (state_sum) is n floats. */
void optim_adagrad_step(const optim_config *cfg, uint64_t t, float lr,
                        float grad_scale, float *param, const float *grad,
                        float *sum, size_t n);

/* Returns the sum of g[i]^2 over n elements, accumulated in double, for a
 * global-norm clip: the caller adds the totals of all its spans (and
 * servers) and takes the square root. The summation order is fixed, so the
 * result is the same on every machine. */
double optim_sq_norm(const float *g, size_t n);

/* Multiplies n elements of g by s in place (g[i] = g[i] * s). */
void optim_scale(float *g, size_t n, float s);

/* Clamps n elements of g to [-clip, clip] in place, as
 * torch.nn.utils.clip_grad_value_ does; NaN stays NaN. clip must be >= 0. */
void optim_clip_value(float *g, size_t n, float clip);

/* Returns the factor torch.nn.utils.clip_grad_norm_ multiplies gradients by,
 * given the global sum of squares (the combined optim_sq_norm totals):
 * min(1, max_norm / (sqrt(total_sq_norm) + 1e-6)). Pass it to optim_scale, or
 * fold it into optim_step's grad_scale to save a pass. */
float optim_clip_norm_coef(double total_sq_norm, float max_norm);

/* Learning-rate schedules (schedule.c). A zero-initialised optim_schedule is
 * the constant schedule without warm-up. */
typedef enum {
  OPTIM_SCHED_CONSTANT,
  OPTIM_SCHED_STEP,
  OPTIM_SCHED_COSINE
} optim_sched_kind;

typedef struct {
  optim_sched_kind kind;
  uint64_t step_size;        /* STEP: decay every step_size steps */
  float gamma;               /* STEP: decay factor */
  uint64_t t_max;            /* COSINE: steps from base_lr down to eta_min */
  float eta_min;             /* COSINE: floor */
  uint64_t warmup_steps;     /* 0 = no warm-up */
  float warmup_start_factor; /* warm-up factor at step 0, rising to 1 */
} optim_schedule;

/* Returns the learning rate of 0-based step `step`, in closed form (computed
 * in double, rounded to float), as PyTorch's schedulers give it:
 *   CONSTANT  base_lr
 *   STEP      base_lr * gamma^floor(step / step_size)            (StepLR)
 *   COSINE    eta_min + (base_lr - eta_min) * (1 + cos(pi * k / t_max)) / 2,
 *             k = min(step, t_max): it stays at eta_min after t_max
 *             (CosineAnnealingLR's closed form, without its restart)
 * multiplied, when warmup_steps > 0, by LinearLR's factor
 *   f = start + (1 - start) * min(step, warmup_steps) / warmup_steps
 * (start = warmup_start_factor; ChainedScheduler semantics). step_size 0
 * means no decay and t_max 0 means eta_min from step 0 (PyTorch would divide
 * by zero). */
float optim_schedule_lr(const optim_schedule *s, float base_lr, uint64_t step);

#endif /* FSPS_OPTIM_H */
