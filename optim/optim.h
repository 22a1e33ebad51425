/* optim: optimizers over float spans (SGD, Adam, AdamW, Adagrad), their state,
 * learning-rate schedules and gradient-clipping helpers. Pure math, no I/O. */
#ifndef FSPS_OPTIM_H
#define FSPS_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Conventions shared by every function below.
 *
 * - Arithmetic is PyTorch 1.13's single-tensor CPU path (foreach=None,
 *   fused=False: what Debian's python3-torch runs), operation for operation,
 *   with the rounding of the kernels it dispatches to on a CPU with AVX2 and
 *   FMA (ATen's AVX2 and AVX512 kernels agree): element-wise work in
 *   float32, and where those kernels fuse a multiply-add into one rounding
 *   (add with alpha, i.e. Vectorized fmadd, and addcmul) so does fsps, with
 *   fmaf (whose scalar tails fuse too, so an element's result does not
 *   depend on its position); everything else (mul, div, sqrt, addcdiv) is
 *   rounded per operation. fsps's results are the same on every machine
 *   (fmaf is exact whatever the instruction set) and equal torch's wherever
 *   torch runs those kernels (tests/optim_torch.py checks it against torch
 *   itself). torch's DEFAULT kernels (a CPU without AVX2, or
 *   ATEN_CPU_CAPABILITY=default) fuse nothing and differ in last bits.
 * - Hyper-parameters are doubles, as PyTorch's Python floats are. Each
 *   coefficient derived from them (1 - beta1, lr / (1 - beta1^t), ...) is
 *   computed in double, as PyTorch computes it in Python, and rounded to
 *   float once, where PyTorch hands it to a float32 tensor op.
 * - Hyper-parameters are not validated here (the server validates the model
 *   spec); out-of-range values give IEEE results (inf, NaN), never UB.
 * - Spans of n floats must not overlap one another (the kernels are written
 *   with restrict pointers); n == 0 is a no-op.
 * - With maximize, a NaN gradient keeps its sign here (g * -grad_scale)
 *   where torch's negation flips it; every number comes out the same.
 * - Thread-safety: no function keeps state of its own (but for the
 *   instruction set, chosen once: optim_isa_current), so concurrent calls
 *   on disjoint buffers are safe. None allocates or blocks. */

typedef enum { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW, OPTIM_ADAGRAD } optim_kind;

typedef struct {
  optim_kind kind;
  double lr; /* base learning rate (the schedule scales it) */
  double momentum, dampening;
  bool nesterov;            /* SGD */
  double weight_decay;      /* SGD/Adam/Adagrad: L2 added to the gradient;
                               AdamW: decoupled, p *= 1 - lr*weight_decay */
  double beta1, beta2, eps; /* Adam/AdamW; eps also Adagrad */
  double lr_decay, initial_accumulator_value; /* Adagrad */
  bool maximize; /* PyTorch's maximize flag: ascend instead of descend */
} optim_config;

/* Fills *cfg with PyTorch 1.13's defaults for `kind` (torch.optim):
 *   SGD     lr 1e-3, momentum 0, dampening 0, nesterov off, weight_decay 0
 *           (torch 1.13 has no default lr for SGD, it is required; 1e-3 is
 *           torch 2's, a placeholder for callers that set their own)
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
 *   t          1-based number of this update (t >= 1), PyTorch's state
 *              "step" after its increment: bias correction, SGD's first-step
 *              momentum buffer, Adagrad's lr decay.
 *   lr         learning rate of this step, a double as PyTorch's group["lr"]
 *              (the scheduled one; cfg->lr is not read).
 *   grad_scale multiplies the gradient before anything else (the server
 *              passes 1/W to average W workers' summed gradients; 1 leaves
 *              the gradient exactly as it is, as PyTorch sees it).
 * grad is read only; param and state are updated in place, in one pass. */
void optim_step(const optim_config *cfg, uint64_t t, double lr,
                float grad_scale, float *param, const float *grad, float *state,
                size_t n);

/* Instruction sets the kernels are built for. Every one computes the same
 * bits (the same operations in the same order, on lanes that never mix),
 * so the choice changes only the speed. One freedom remains: where two
 * NaNs meet in one operation, the result carries the sign of the one the
 * compiler put first (IEEE 754 leaves open which NaN propagates); GCC puts
 * them alike on every path, as torch's build does, and the tests hold it
 * to that. */
typedef enum {
  OPTIM_ISA_PORTABLE, /* C with four-lane vectors: any CPU */
  OPTIM_ISA_AVX2,     /* x86-64 with AVX2 and FMA: eight lanes */
  OPTIM_ISA_AVX512    /* x86-64 with AVX-512F: sixteen lanes */
} optim_isa;

/* Returns whether this build and this CPU (and its OS, which must save the
 * wider registers) can run `isa`. Thread-safe. */
bool optim_isa_supported(optim_isa isa);

/* Returns the instruction set optim_step and the per-optimizer steps use.
 * Decided once per process, on the first call (a step's or this one):
 * the widest the CPU supports, capped by the environment variable
 * FSPS_OPTIM_ISA when it names one ("portable", "avx2" or "avx512"; a
 * capped choice falls back to the widest supported below the cap, so
 * "avx512" on an AVX2 CPU runs avx2; "auto", empty, unset or any other value
 * leaves no cap), unless optim_isa_set chose first. Thread-safe: threads
 * racing on the first call decide the same. */
optim_isa optim_isa_current(void);

/* Makes `isa` the instruction set of every later call in the process.
 * Returns 0, or -1 (and changes nothing) when !optim_isa_supported(isa).
 * Thread-safe; a step running concurrently uses the old or the new one,
 * which compute the same bits. For tests and benchmarks. */
int optim_isa_set(optim_isa isa);

/* Returns the name of `isa` ("portable", "avx2", "avx512"), a static
 * string, or "unknown" for a value outside the enum. */
const char *optim_isa_name(optim_isa isa);

/* Parses a name optim_isa_name returns into *isa; returns 0, or -1 for
 * anything else (*isa untouched). */
int optim_isa_parse(const char *name, optim_isa *isa);

/* In the formulas below, every variable is a float32 and every operation is
 * rounded to float32, except where noted: fma(a, b, c) is a*b + c rounded
 * once, and "(f)" marks a coefficient computed in double from the
 * hyper-parameters and rounded to float once. */

/* SGD, torch.optim.SGD. With mu = momentum, tau = dampening,
 * lambda = weight_decay, gamma = lr, s = grad_scale, per element:
 *   g = s * grad;  if maximize: g = -g
 *   if lambda != 0: g = fma(p, lambda, g)           grad.add(p, alpha=lambda)
 *   if mu != 0:
 *     b = (t == 1) ? g : fma(g, (f)(1 - tau), b * mu)
 *                          buf.mul_(mu).add_(g, alpha=1 - tau)
 *     g = nesterov ? fma(b, mu, g) : b              g.add(buf, alpha=mu)
 *   p = fma(g, (f)(-gamma), p)                      p.add_(g, alpha=-lr)
 * (PyTorch negates g at the start for maximize, as here; its documentation's
 * "p = p + gamma*g" at the end would differ once weight_decay != 0.)
 * `buf` is the momentum buffer b (n floats); it may be NULL when mu == 0, and
 * its contents are ignored (overwritten) when t == 1. */
void optim_sgd_step(const optim_config *cfg, uint64_t t, double lr,
                    float grad_scale, float *param, const float *grad,
                    float *buf, size_t n);

/* Adam and AdamW, torch.optim.Adam / torch.optim.AdamW (amsgrad off).
 * With beta1, beta2, eps, lambda = weight_decay, gamma = lr, s = grad_scale,
 * per element:
 *   g = s * grad;  if maximize: g = -g
 *   AdamW (decoupled):     p = p * (f)(1 - gamma * lambda)
 *   Adam, if lambda != 0:  g = fma(p, lambda, g)
 *   m = fma(g, (f)(1 - beta1), m * beta1)     mul_(beta1).add_(g, alpha=..)
 *   v = fma((f)(1 - beta2) * g, g, v * beta2) mul_(beta2).addcmul_(g, g, ..)
 *   bc1 = 1 - beta1^t,  bc2 = 1 - beta2^t     (double)
 *   denom = sqrt(v) / (f)sqrt(bc2) + eps
 *   p = p + ((f)(-gamma / bc1) * m) / denom   addcdiv_(m, denom, value=..)
 * which is the documented m_hat = m / bc1, v_hat = v / bc2,
 * p = p - gamma * m_hat / (sqrt(v_hat) + eps) in PyTorch's evaluation order.
 * (PyTorch 2 moved m to lerp_; 1.13, matched here, has mul_ and add_.)
 * `decoupled` selects AdamW; cfg->kind is not read. m (exp_avg) and v
 * (exp_avg_sq) are n floats each. */
void optim_adam_step(const optim_config *cfg, uint64_t t, double lr,
                     float grad_scale, float *param, const float *grad,
                     float *m, float *v, size_t n, bool decoupled);

/* Adagrad, torch.optim.Adagrad. With eta = lr_decay, lambda = weight_decay,
 * gamma = lr, s = grad_scale, per element:
 *   g = s * grad;  if maximize: g = -g
 *   if lambda != 0: g = fma(p, lambda, g)
 *   clr = gamma / (1 + (t - 1) * eta)                 (double)
 *   sum = fma(g, g, sum)                              addcmul_(g, g, value=1)
 *   p = p + ((f)(-clr) * g) / (sqrt(sum) + eps)       addcdiv_(g, std, ..)
 * `sum` (state_sum) is n floats, initially (f)initial_accumulator_value. */
void optim_adagrad_step(const optim_config *cfg, uint64_t t, double lr,
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
  uint64_t step_size;         /* STEP: decay every step_size steps */
  double gamma;               /* STEP: decay factor */
  uint64_t t_max;             /* COSINE: steps from base_lr down to eta_min */
  double eta_min;             /* COSINE: floor */
  uint64_t warmup_steps;      /* 0 = no warm-up */
  double warmup_start_factor; /* warm-up factor at step 0, rising to 1 */
} optim_schedule;

/* Returns the learning rate of 0-based step `step`, in closed form, in
 * double (a Python float in PyTorch), as PyTorch's schedulers give it:
 *   CONSTANT  base_lr
 *   STEP      base_lr * gamma^floor(step / step_size)            (StepLR)
 *   COSINE    eta_min + (base_lr - eta_min) * (1 + cos(pi * k / t_max)) / 2,
 *             k = min(step, t_max): it stays at eta_min after t_max
 *             (CosineAnnealingLR's closed form, without its restart)
 * multiplied, when warmup_steps > 0, by LinearLR's factor
 *   f = start + (1 - start) * min(step, warmup_steps) / warmup_steps
 * (start = warmup_start_factor; ChainedScheduler semantics). step_size 0
 * means no decay and t_max 0 means eta_min from step 0 (PyTorch would divide
 * by zero). PyTorch's schedulers update lr recursively, step by step, so
 * their lr can differ from this closed form in the last bits of a double. */
double optim_schedule_lr(const optim_schedule *s, double base_lr,
                         uint64_t step);

#endif /* FSPS_OPTIM_H */
