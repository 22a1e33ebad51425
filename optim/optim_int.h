/* optim_int.h: private to optim/ — the float coefficients each kernel takes,
 * and the table of kernels one instruction set provides (kern_*.c), chosen
 * at run time by isa.c. */
#ifndef FSPS_OPTIM_INT_H
#define FSPS_OPTIM_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "optim.h"

/* The AVX2 and AVX-512 kernels are compiled per function for their
 * instruction set (a target attribute), never for the whole build, so the
 * library still runs on any x86-64; they need GCC or Clang on x86-64. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OPTIM_X86 1
#else
#define OPTIM_X86 0
#endif

/* Float coefficients of one SGD call, as PyTorch rounds them. */
typedef struct {
  float scale; /* signed grad_scale */
  float wd;    /* grad.add(param, alpha=weight_decay) */
  float mom;   /* buf.mul_(momentum), grad.add(buf, alpha=momentum) */
  float damp1; /* buf.add_(grad, alpha=1 - dampening) */
  float nlr;   /* param.add_(grad, alpha=-lr) */
} sgd_coef;

/* Momentum: none, the first step (the buffer is the gradient), later. */
typedef enum { MOM_NONE, MOM_FIRST, MOM_LATER } mom_mode;

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

/* Float coefficients of one Adagrad call, as PyTorch rounds them. */
typedef struct {
  float scale; /* signed grad_scale */
  float wd;    /* grad.add(param, alpha=weight_decay) */
  float eps;   /* state_sum.sqrt().add_(eps) */
  float nclr;  /* param.addcdiv_(grad, std, value=-clr) */
} adagrad_coef;

/* One instruction set's kernels. Each applies its optimizer's per-element
 * formula (optim.h) to n elements, with `l2` (weight decay added to the
 * gradient), `mode` and `nesterov` constant for the call. Every table
 * computes the same bits (but for the NaN sign optim.h allows): the same
 * operations in the same order, fused exactly where the formulas say fma,
 * on lanes that never mix. */
typedef struct {
  void (*sgd)(const sgd_coef *k, float *p, const float *g, float *b, size_t n,
              bool l2, mom_mode mode, bool nesterov);
  void (*adam)(const adam_coef *k, float *p, const float *g, float *m, float *v,
               size_t n, bool l2);
  void (*adagrad)(const adagrad_coef *k, float *p, const float *g, float *sum,
                  size_t n, bool l2);
} optim_kernels;

extern const optim_kernels optim_kernels_portable;
#if OPTIM_X86
extern const optim_kernels optim_kernels_avx2;   /* AVX2 and FMA */
extern const optim_kernels optim_kernels_avx512; /* AVX-512F */
#endif

/* The table of optim_isa_current(). */
const optim_kernels *optim_kernels_current(void);

#endif /* FSPS_OPTIM_INT_H */
