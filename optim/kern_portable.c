/* kern_portable.c: the optimizer kernels in portable C, four lanes wide (GCC
 * and Clang vector extensions), for any CPU; kern_body.h holds the kernels. */

#include <math.h>
#include <string.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "optim_int.h"

/* Built for baseline x86-64, fmaf is a call into libm: exact, and so the
 * same bits as one FMA instruction, but a call per element; this path is
 * for CPUs without AVX2 and FMA (and for the tests, which hold the others
 * to it). Arithmetic on v4f is element-wise IEEE float arithmetic, rounded
 * exactly like scalar code; GCC only vectorises sqrtf under
 * -fno-math-errno, hence the explicit square root. */
typedef float vf __attribute__((vector_size(16)));

enum { VL = 4 };

#define KERN_TARGET

/* Unaligned load and store: memcpy compiles to a single movups. */
static inline vf vf_load(const float *p) {
  vf x;
  memcpy(&x, p, sizeof x);
  return x;
}

static inline void vf_store(float *p, vf x) {
  memcpy(p, &x, sizeof x);
}

static inline vf vf_load_part(const float *p, size_t r) {
  float t[VL] = {0};
  memcpy(t, p, r * sizeof *p);
  return vf_load(t);
}

static inline void vf_store_part(float *p, vf x, size_t r) {
  float t[VL];
  vf_store(t, x);
  memcpy(p, t, r * sizeof *p);
}

static inline vf vf_splat(float x) {
  return (vf){x, x, x, x};
}

static inline vf vf_mul(vf a, vf b) {
  return a * b;
}

static inline vf vf_add(vf a, vf b) {
  return a + b;
}

static inline vf vf_div(vf a, vf b) {
  return a / b;
}

/* Correctly rounded square root of each lane (sqrtps on x86). */
static inline vf vf_sqrt(vf x) {
#if defined(__SSE__)
  return (vf)_mm_sqrt_ps((__m128)x);
#else
  for (int i = 0; i < VL; i++)
    x[i] = sqrtf(x[i]);
  return x;
#endif
}

/* a*b + c rounded once in each lane. */
static inline vf vf_fma(vf a, vf b, vf c) {
  vf r;
  for (int i = 0; i < VL; i++)
    r[i] = fmaf(a[i], b[i], c[i]);
  return r;
}

#include "kern_body.h"

const optim_kernels optim_kernels_portable = {sgd_kernel, adam_kernel,
                                              adagrad_kernel};
