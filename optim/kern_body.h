/* kern_body.h: the optimizer kernels, written once over a vector of VL
 * floats. Each kern_<isa>.c defines that vector and its operations, then
 * includes this file, so every instruction set runs the very same
 * operations in the same order, and fuses a multiply-add (vf_fma) exactly
 * where the formulas of optim.h say fma and nowhere else.
 *
 * Before including it a kern_<isa>.c defines:
 *   KERN_TARGET     the target attribute of every function here (or empty)
 *   vf, VL          the vector type and its number of lanes
 *   vf_load(p), vf_store(p, x)   unaligned load and store of VL floats
 *   vf_load_part(p, r)   the first r < VL floats at p, the other lanes 0;
 *                        reads nothing past p + r
 *   vf_store_part(p, x, r)       stores the first r < VL lanes of x
 *   vf_splat(f), vf_mul, vf_add, vf_div, vf_sqrt   IEEE float operations,
 *                        rounded once each, lane by lane
 *   vf_fma(a, b, c)      a*b + c rounded once, lane by lane
 * Lanes never mix, so an element's result does not depend on where it sits
 * in the span (body or tail), nor on the vector width. */
#ifndef FSPS_OPTIM_KERN_BODY_H
#define FSPS_OPTIM_KERN_BODY_H

#include "optim_int.h"

/* vf_mul and vf_add are plain vector arithmetic in GCC's and Clang's
 * intrinsics headers, which a compiler allowed to contract would fuse into
 * an FMA torch does not have (AdamW's p*decay + step, for one): the build
 * says -ffp-contract=off, and Clang hears it here too. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Helpers are forced inline and called with literal flags, so each
 * combination of flags becomes one branch-free loop. */
#if defined(__GNUC__) || defined(__clang__)
#define KERN_INLINE static inline __attribute__((always_inline)) KERN_TARGET
#else
#define KERN_INLINE static inline
#endif
#define KERN_ENTRY static KERN_TARGET

/* r == VL (a literal in the loops' bodies) folds to the plain access. */
KERN_INLINE vf load_n(const float *p, size_t r) {
  return r == VL ? vf_load(p) : vf_load_part(p, r);
}

KERN_INLINE void store_n(float *p, vf x, size_t r) {
  if (r == VL)
    vf_store(p, x);
  else
    vf_store_part(p, x, r);
}

/* ---- SGD ---------------------------------------------------------------- */

typedef struct {
  vf scale, wd, mom, damp1, nlr;
} sgd_vcoef;

/* SGD on the r elements at i; `b` is not touched without momentum (it may be
 * NULL then) and not read on the first step. Every add with alpha is ATen's
 * fmadd(other, alpha, self): one vf_fma. */
KERN_INLINE void sgd_span(const sgd_vcoef *c, float *p, const float *g,
                          float *b, size_t i, size_t r, bool l2, mom_mode mode,
                          bool nesterov) {
  vf pi = load_n(p + i, r);
  vf d = vf_mul(load_n(g + i, r), c->scale);
  if (l2)
    d = vf_fma(pi, c->wd, d);
  if (mode != MOM_NONE) {
    vf buf = d;
    if (mode == MOM_LATER)
      buf = vf_fma(d, c->damp1, vf_mul(load_n(b + i, r), c->mom));
    store_n(b + i, buf, r);
    d = nesterov ? vf_fma(buf, c->mom, d) : buf;
  }
  store_n(p + i, vf_fma(d, c->nlr, pi), r);
}

KERN_INLINE void sgd_loop(const sgd_coef *k, float *restrict p,
                          const float *restrict g, float *restrict b, size_t n,
                          bool l2, mom_mode mode, bool nesterov) {
  const sgd_vcoef c = {vf_splat(k->scale), vf_splat(k->wd), vf_splat(k->mom),
                       vf_splat(k->damp1), vf_splat(k->nlr)};
  size_t i = 0;
  for (; i + VL <= n; i += VL)
    sgd_span(&c, p, g, b, i, VL, l2, mode, nesterov);
  if (i < n)
    sgd_span(&c, p, g, b, i, n - i, l2, mode, nesterov);
}

KERN_INLINE void sgd_by_nesterov(const sgd_coef *k, float *p, const float *g,
                                 float *b, size_t n, bool l2, mom_mode mode,
                                 bool nesterov) {
  if (nesterov)
    sgd_loop(k, p, g, b, n, l2, mode, true);
  else
    sgd_loop(k, p, g, b, n, l2, mode, false);
}

KERN_INLINE void sgd_by_mode(const sgd_coef *k, float *p, const float *g,
                             float *b, size_t n, bool l2, mom_mode mode,
                             bool nesterov) {
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

KERN_ENTRY void sgd_kernel(const sgd_coef *k, float *p, const float *g,
                           float *b, size_t n, bool l2, mom_mode mode,
                           bool nesterov) {
  if (l2)
    sgd_by_mode(k, p, g, b, n, true, mode, nesterov);
  else
    sgd_by_mode(k, p, g, b, n, false, mode, nesterov);
}

/* ---- Adam / AdamW ------------------------------------------------------- */

typedef struct {
  vf scale, decay, wd, beta1, c1, beta2, c2, bc2s, eps, nstep;
} adam_vcoef;

/* Adam or AdamW on the r elements at i. ATen's addcmul computes
 * self + value*t1*t2, which GCC contracts in torch's build into
 * fma(value*t1, t2, self); addcdiv's self + value*t1/t2 has no product to
 * fuse. Multiplying p by decay == 1 (Adam) returns p unchanged, NaN and inf
 * included, so Adam and AdamW share the code without a flag. */
KERN_INLINE void adam_span(const adam_vcoef *c, float *p, const float *g,
                           float *m, float *v, size_t i, size_t r, bool l2) {
  vf pi = vf_mul(load_n(p + i, r), c->decay);
  vf d = vf_mul(load_n(g + i, r), c->scale);
  if (l2)
    d = vf_fma(pi, c->wd, d);
  vf mi = vf_fma(d, c->c1, vf_mul(load_n(m + i, r), c->beta1));
  vf vi = vf_fma(vf_mul(c->c2, d), d, vf_mul(load_n(v + i, r), c->beta2));
  vf denom = vf_add(vf_div(vf_sqrt(vi), c->bc2s), c->eps);
  store_n(m + i, mi, r);
  store_n(v + i, vi, r);
  store_n(p + i, vf_add(pi, vf_div(vf_mul(c->nstep, mi), denom)), r);
}

KERN_INLINE void adam_loop(const adam_coef *k, float *restrict p,
                           const float *restrict g, float *restrict m,
                           float *restrict v, size_t n, bool l2) {
  const adam_vcoef c = {vf_splat(k->scale), vf_splat(k->decay),
                        vf_splat(k->wd),    vf_splat(k->beta1),
                        vf_splat(k->c1),    vf_splat(k->beta2),
                        vf_splat(k->c2),    vf_splat(k->bc2s),
                        vf_splat(k->eps),   vf_splat(k->nstep)};
  size_t i = 0;
  for (; i + VL <= n; i += VL)
    adam_span(&c, p, g, m, v, i, VL, l2);
  if (i < n)
    adam_span(&c, p, g, m, v, i, n - i, l2);
}

KERN_ENTRY void adam_kernel(const adam_coef *k, float *p, const float *g,
                            float *m, float *v, size_t n, bool l2) {
  if (l2)
    adam_loop(k, p, g, m, v, n, true);
  else
    adam_loop(k, p, g, m, v, n, false);
}

/* ---- Adagrad ------------------------------------------------------------ */

typedef struct {
  vf scale, wd, eps, nclr;
} adagrad_vcoef;

/* Adagrad on the r elements at i; addcmul_(g, g, value=1) is
 * fma(1*g, g, sum) = fma(g, g, sum). */
KERN_INLINE void adagrad_span(const adagrad_vcoef *c, float *p, const float *g,
                              float *sum, size_t i, size_t r, bool l2) {
  vf pi = load_n(p + i, r);
  vf d = vf_mul(load_n(g + i, r), c->scale);
  if (l2)
    d = vf_fma(pi, c->wd, d);
  vf s = vf_fma(d, d, load_n(sum + i, r));
  vf std = vf_add(vf_sqrt(s), c->eps);
  store_n(sum + i, s, r);
  store_n(p + i, vf_add(pi, vf_div(vf_mul(c->nclr, d), std)), r);
}

KERN_INLINE void adagrad_loop(const adagrad_coef *k, float *restrict p,
                              const float *restrict g, float *restrict sum,
                              size_t n, bool l2) {
  const adagrad_vcoef c = {vf_splat(k->scale), vf_splat(k->wd),
                           vf_splat(k->eps), vf_splat(k->nclr)};
  size_t i = 0;
  for (; i + VL <= n; i += VL)
    adagrad_span(&c, p, g, sum, i, VL, l2);
  if (i < n)
    adagrad_span(&c, p, g, sum, i, n - i, l2);
}

KERN_ENTRY void adagrad_kernel(const adagrad_coef *k, float *p, const float *g,
                               float *sum, size_t n, bool l2) {
  if (l2)
    adagrad_loop(k, p, g, sum, n, true);
  else
    adagrad_loop(k, p, g, sum, n, false);
}

#endif /* FSPS_OPTIM_KERN_BODY_H */
