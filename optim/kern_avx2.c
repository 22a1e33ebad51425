/* kern_avx2.c: the optimizer kernels eight lanes wide with AVX2 and FMA,
 * each function compiled for that instruction set alone (a target
 * attribute), run only where isa.c found it; kern_body.h holds them. */

#include "optim_int.h"

#if OPTIM_X86
#include <immintrin.h>

#define KERN_TARGET __attribute__((target("avx2,fma")))
#define VF_FN static inline __attribute__((always_inline)) KERN_TARGET

typedef __m256 vf;

enum { VL = 8 };

VF_FN vf vf_load(const float *p) {
  return _mm256_loadu_ps(p);
}

VF_FN void vf_store(float *p, vf x) {
  _mm256_storeu_ps(p, x);
}

/* Lanes below r set (all bits), the others clear. */
VF_FN __m256i lanes_below(size_t r) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)r),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Masked-off lanes are neither read nor written (nor can they fault). */
VF_FN vf vf_load_part(const float *p, size_t r) {
  return _mm256_maskload_ps(p, lanes_below(r));
}

VF_FN void vf_store_part(float *p, vf x, size_t r) {
  _mm256_maskstore_ps(p, lanes_below(r), x);
}

VF_FN vf vf_splat(float x) {
  return _mm256_set1_ps(x);
}

VF_FN vf vf_mul(vf a, vf b) {
  return _mm256_mul_ps(a, b);
}

VF_FN vf vf_add(vf a, vf b) {
  return _mm256_add_ps(a, b);
}

VF_FN vf vf_div(vf a, vf b) {
  return _mm256_div_ps(a, b);
}

VF_FN vf vf_sqrt(vf x) {
  return _mm256_sqrt_ps(x);
}

VF_FN vf vf_fma(vf a, vf b, vf c) {
  return _mm256_fmadd_ps(a, b, c);
}

#include "kern_body.h"

const optim_kernels optim_kernels_avx2 = {sgd_kernel, adam_kernel,
                                          adagrad_kernel};
#endif /* OPTIM_X86 */
