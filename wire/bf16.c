/* bf16.c: bfloat16 on the wire — float32 rounded to its top 16 bits (to
 * nearest, ties to even) and back, in loops the compiler vectorises, and
 * the reader that decodes a payload arriving in pieces of any length. */
#include <string.h>

#include "wire.h"

#define F32_SIGN_MASK 0x7fffffffu
#define F32_INF 0x7f800000
#define F32_QUIET 0x00400000u /* the top mantissa bit: quiet NaN */
#define BF16_QUIET 0x0040u

/* to_bf16 rounds float bits u to bf16 bits. Adding 0x7fff plus the lowest
 * kept bit rounds to nearest with ties to even: the carry overflows into
 * the exponent exactly when the value rounds up to the next binade, which
 * takes the largest finite floats to Inf, as IEEE rounding does. A NaN
 * must not take that path (its mantissa could carry into Inf, or round to
 * zero payload bits, which is Inf too): it keeps its sign and top bits and
 * is made quiet. The magnitude compare is signed because SSE2 and AVX2
 * have no unsigned one; the mask keeps it non-negative. */
static inline __attribute__((always_inline)) uint16_t to_bf16(uint32_t u) {
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t quiet = (u >> 16) | BF16_QUIET;
  int32_t mag = (int32_t)(u & F32_SIGN_MASK);
  return (uint16_t)(mag > F32_INF ? quiet : rounded);
}

/* from_bf16 widens bf16 bits exactly; a signalling NaN comes out quiet. */
static inline __attribute__((always_inline)) uint32_t from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  int32_t mag = (int32_t)(u & F32_SIGN_MASK);
  return mag > F32_INF ? u | F32_QUIET : u;
}

/* The loops read and write through memcpy, so any alignment is fine (gRPC's
 * slices may start at an odd address) and GCC still vectorises them. */
static inline __attribute__((always_inline)) void
encode_loop(unsigned char *restrict dst, const float *restrict src, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &src[i], sizeof u);
    uint16_t h = to_bf16(u);
    memcpy(dst + 2 * i, &h, sizeof h);
  }
}

static inline __attribute__((always_inline)) void
decode_loop(float *restrict dst, const unsigned char *restrict src, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, src + 2 * i, sizeof h);
    uint32_t u = from_bf16(h);
    memcpy(&dst[i], &u, sizeof u);
  }
}

/* The same loops built for AVX2 convert twice the elements an instruction;
 * the CPU is asked once which to run (as store_any_nonfinite does). */
__attribute__((target("avx2"))) static void
encode_avx2(unsigned char *restrict dst, const float *restrict src, size_t n) {
  encode_loop(dst, src, n);
}

__attribute__((target("avx2"))) static void
decode_avx2(float *restrict dst, const unsigned char *restrict src, size_t n) {
  decode_loop(dst, src, n);
}

static void encode_base(unsigned char *restrict dst, const float *restrict src,
                        size_t n) {
  encode_loop(dst, src, n);
}

static void decode_base(float *restrict dst, const unsigned char *restrict src,
                        size_t n) {
  decode_loop(dst, src, n);
}

void wire_bf16_encode(void *dst, const float *src, size_t n) {
  if (__builtin_cpu_supports("avx2"))
    encode_avx2(dst, src, n);
  else
    encode_base(dst, src, n);
}

void wire_bf16_decode(float *dst, const void *src, size_t n) {
  if (__builtin_cpu_supports("avx2"))
    decode_avx2(dst, src, n);
  else
    decode_base(dst, src, n);
}

/* Each block is copied aside first, so the encoding never reads what it
 * has overwritten (the bf16 of block i ends where block i's floats began
 * at the latest) and the loop keeps its non-overlapping, vectorised form;
 * the copy stays in L1. */
#define IN_PLACE_BLOCK 1024

void wire_bf16_encode_in_place(float *buf, size_t n) {
  float tmp[IN_PLACE_BLOCK];
  for (size_t i = 0; i < n; i += IN_PLACE_BLOCK) {
    size_t k = n - i < IN_PLACE_BLOCK ? n - i : IN_PLACE_BLOCK;
    memcpy(tmp, buf + i, k * sizeof *tmp);
    wire_bf16_encode((char *)buf + 2 * i, tmp, k);
  }
}

float wire_bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  u = from_bf16(to_bf16(u));
  memcpy(&x, &u, sizeof x);
  return x;
}

/* ---- a payload in pieces ---- */

void wire_bf16_read_start(wire_bf16_reader *r, float *dst) {
  *r = (wire_bf16_reader){.dst = dst};
}

/* put_one decodes one element from its two bytes. */
static void put_one(wire_bf16_reader *r, uint8_t lo, uint8_t hi) {
  unsigned char b[2] = {lo, hi};
  wire_bf16_decode(r->dst++, b, 1);
  r->elements++;
}

void wire_bf16_read(wire_bf16_reader *r, const void *bytes, size_t len) {
  const uint8_t *p = bytes;
  if (len > 0 && r->has_half) {
    put_one(r, r->half, p[0]);
    r->has_half = false;
    p++;
    len--;
  }
  size_t n = len / 2;
  wire_bf16_decode(r->dst, p, n);
  r->dst += n;
  r->elements += n;
  if (len % 2 != 0) {
    r->half = p[len - 1];
    r->has_half = true;
  }
}
