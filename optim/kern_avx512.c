/* kern_avx512.c: the optimizer kernels sixteen lanes wide with AVX-512F,
 * each function compiled for that instruction set alone (a target
 * attribute), run only where isa.c found it; kern_body.h holds them. */

#include "optim_int.h"

#if OPTIM_X86
#include <immintrin.h>

#define KERN_TARGET __attribute__((target("avx512f")))
#define VF_FN static inline __attribute__((always_inline)) KERN_TARGET

typedef __m512 vf;

enum { VL = 16 };

VF_FN vf vf_load(const float *p) {
  return _mm512_loadu_ps(p);
}

VF_FN void vf_store(float *p, vf x) {
  _mm512_storeu_ps(p, x);
}

/* Lanes below r; masked-off lanes are neither read nor written (nor can
 * they fault). */
VF_FN __mmask16 lanes_below(size_t r) {
  return (__mmask16)((1u << r) - 1u);
}

VF_FN vf vf_load_part(const float *p, size_t r) {
  return _mm512_maskz_loadu_ps(lanes_below(r), p);
}

VF_FN void vf_store_part(float *p, vf x, size_t r) {
  _mm512_mask_storeu_ps(p, lanes_below(r), x);
}

VF_FN vf vf_splat(float x) {
  return _mm512_set1_ps(x);
}

VF_FN vf vf_mul(vf a, vf b) {
  return _mm512_mul_ps(a, b);
}

VF_FN vf vf_add(vf a, vf b) {
  return _mm512_add_ps(a, b);
}

VF_FN vf vf_div(vf a, vf b) {
  return _mm512_div_ps(a, b);
}

VF_FN vf vf_sqrt(vf x) {
  return _mm512_sqrt_ps(x);
}

VF_FN vf vf_fma(vf a, vf b, vf c) {
  return _mm512_fmadd_ps(a, b, c);
}

#include "kern_body.h"

const optim_kernels optim_kernels_avx512 = {sgd_kernel, adam_kernel,
                                            adagrad_kernel};
#endif /* OPTIM_X86 */
