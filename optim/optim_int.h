/* optim_int.h: private to optim.c — four-lane float vectors (GCC/Clang vector
 * extensions) for the kernels whose square root GCC will not vectorise, and
 * the per-CPU clones of the kernels. */
#ifndef FSPS_OPTIM_INT_H
#define FSPS_OPTIM_INT_H

#include <math.h>
#include <string.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* The kernels round a*b + c once wherever PyTorch's kernels do, with fmaf.
 * Built for baseline x86-64, fmaf is a call into libm (exact, but a call per
 * element), so on x86-64 each kernel is also compiled for x86-64-v3 (AVX2
 * and FMA), where fmaf is one instruction and vectorises, and the loader
 * picks the clone the CPU runs (an ifunc). Both clones compute the same
 * bits: fmaf is exact either way. Elsewhere (e.g. AArch64, where FMA is
 * baseline) there is one version, and so under ThreadSanitizer. */
#if defined(__SANITIZE_THREAD__)
#define OPTIM_TSAN 1 /* GCC's -fsanitize=thread */
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OPTIM_TSAN 1 /* Clang's */
#endif
#endif
/* Not under ThreadSanitizer: the loader runs ifunc resolvers before the
 * sanitizer's runtime is up, and an instrumented resolver crashes there. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) &&        \
    !defined(OPTIM_TSAN)
#define OPTIM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define OPTIM_CLONES
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

/* x in every lane. */
static inline v4f v4_splat(float x) {
  return (v4f){x, x, x, x};
}

/* a*b + c rounded once in each lane; one vfmadd in an x86-64-v3 clone. */
static inline v4f v4_fma(v4f a, v4f b, v4f c) {
  v4f r;
  for (int i = 0; i < V4; i++)
    r[i] = fmaf(a[i], b[i], c[i]);
  return r;
}

#endif /* FSPS_OPTIM_INT_H */
