/* optim_int.h: private to optim.c — four-lane float vectors (GCC/Clang vector
 * extensions) for the kernels whose square root GCC will not vectorise. */
#ifndef FSPS_OPTIM_INT_H
#define FSPS_OPTIM_INT_H

#include <math.h>
#include <string.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* GCC only vectorises sqrtf under -fno-math-errno, which neither the build
 * flags nor `#pragma GCC optimize` (ignored for this by GCC 12) provide, so
 * Adam and Adagrad spell out their 4-wide vectors. Arithmetic on v4f is
 * element-wise IEEE float arithmetic, rounded exactly like the scalar code;
 * a scalar operand is broadcast to all lanes. */
typedef float v4f __attribute__((vector_size(16)));

enum { V4 = 4 };

/* Unaligned load and store: memcpy compiles to a single movups. */
static inline v4f v4_load(const float *p) {
  v4f x;
  memcpy(&x, p, sizeof x);
  return x;
}

static inline void v4_store(float *p, v4f x) {
  memcpy(p, &x, sizeof x);
}

/* Correctly rounded square root of each lane (sqrtps on x86). */
static inline v4f v4_sqrt(v4f x) {
#if defined(__SSE__)
  return (v4f)_mm_sqrt_ps((__m128)x);
#else
  for (int i = 0; i < V4; i++)
    x[i] = sqrtf(x[i]);
  return x;
#endif
}

#endif /* FSPS_OPTIM_INT_H */
