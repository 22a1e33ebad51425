/* test_wire_bf16.c: wire/'s bfloat16 conversion (part of test_wire): ties
 * to even, NaN, Inf, overflow of the largest floats, denormals and zeros,
 * against an arithmetic reference over a sweep of float bit patterns, the
 * vectorised arrays at every alignment against the scalar rounding, and a
 * payload decoded in pieces of any length. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_wire_bf16.h"
#include "wire.h"

static float from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

static uint32_t bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

/* enc returns the bf16 bits wire_bf16_encode makes of float bits u. */
static uint16_t enc(uint32_t u) {
  float x = from_bits(u);
  uint16_t h;
  wire_bf16_encode(&h, &x, 1);
  return h;
}

/* dec returns the float bits wire_bf16_decode makes of bf16 bits h. */
static uint32_t dec(uint16_t h) {
  float x;
  wire_bf16_decode(&x, &h, 1);
  return bits(x);
}

/* bf16_mag returns |value| of bf16 bits h as a double, taking the bits
 * past the largest finite bf16 (0x7f80, Inf) as 2^128: the next value if
 * the exponent went on, which is where IEEE rounding sends an overflow. */
static double bf16_mag(uint16_t h) {
  if ((h & 0x7fff) == 0x7f80)
    return ldexp(1.0, 128);
  return fabs((double)from_bits((uint32_t)h << 16));
}

/* ref_bf16 rounds by arithmetic rather than bits: of the two bf16 around
 * x (its bits cut, and the next one away from zero), the nearer; a tie
 * goes to the one whose last bit is 0. NaN: quiet, sign and top bits kept. */
static uint16_t ref_bf16(uint32_t u) {
  float x = from_bits(u);
  if (isnan(x))
    return (uint16_t)((u >> 16) | 0x40);
  if (isinf(x))
    return (uint16_t)(u >> 16);
  uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
  double below = fabs((double)x) - bf16_mag(lo);
  double above = bf16_mag(hi) - fabs((double)x);
  if (below != above)
    return below < above ? lo : hi;
  return (lo & 1) ? hi : lo;
}

static void test_ties_to_even(void **state) {
  (void)state;
  /* 1 + 2^-8 lies halfway between 1 (0x3f80, even) and 1 + 2^-7. */
  assert_int_equal(enc(0x3f808000), 0x3f80);
  assert_int_equal(enc(0x3f818000), 0x3f82); /* 0x3f81 is odd: up */
  assert_int_equal(enc(0x3f807fff), 0x3f80); /* just below: down */
  assert_int_equal(enc(0x3f808001), 0x3f81); /* just above: up */
  assert_int_equal(enc(0xbf808000), 0xbf80); /* negatives alike */
  assert_int_equal(enc(0xbf818000), 0xbf82);
  assert_int_equal(enc(0x3f80ffff), 0x3f81);
  /* A carry into the exponent: 2 - 2^-9 rounds up to 2. */
  assert_int_equal(enc(0x3fffc000), 0x4000);
  assert_true(wire_bf16_round(1.00390625f) == 1.0f);
  assert_true(wire_bf16_round(3.0f) == 3.0f); /* exact stays exact */
}

static void test_nan_stays_quiet_nan(void **state) {
  (void)state;
  assert_int_equal(enc(0x7fc00000), 0x7fc0);
  assert_int_equal(enc(0xffc00000), 0xffc0);
  /* Signalling NaNs, whose payload is all in the bits cut off: rounding
   * as a number would make them Inf; they stay NaN, and quiet. */
  assert_int_equal(enc(0x7f800001), 0x7fc0);
  assert_int_equal(enc(0xff800001), 0xffc0);
  assert_int_equal(enc(0x7f80ffff), 0x7fc0);
  /* A payload that would carry into the sign bit. */
  assert_int_equal(enc(0x7fffffff), 0x7fff);
  assert_int_equal(enc(0xffffffff), 0xffff);
  assert_true(isnan(wire_bf16_round(NAN)));
  /* Decoding keeps a NaN a NaN and quiets a signalling one. */
  assert_int_equal(dec(0x7fc0), 0x7fc00000u);
  assert_int_equal(dec(0x7f81), 0x7fc10000u);
  assert_int_equal(dec(0xff81), 0xffc10000u);
}

static void test_inf_and_overflow(void **state) {
  (void)state;
  assert_int_equal(enc(0x7f800000), 0x7f80);
  assert_int_equal(enc(0xff800000), 0xff80);
  assert_int_equal(dec(0x7f80), 0x7f800000u);
  assert_int_equal(dec(0xff80), 0xff800000u);
  /* FLT_MAX is above the midpoint between the largest bf16 (0x7f7f) and
   * 2^128: round to nearest overflows to Inf, as IEEE says. */
  assert_int_equal(enc(bits(FLT_MAX)), 0x7f80);
  assert_int_equal(enc(bits(-FLT_MAX)), 0xff80);
  assert_true(isinf(wire_bf16_round(FLT_MAX)));
  assert_int_equal(enc(0x7f7f8000), 0x7f80); /* the tie: 0x7f7f is odd */
  assert_int_equal(enc(0x7f7f7fff), 0x7f7f); /* below it: stays finite */
  assert_int_equal(enc(0x7f7f0000), 0x7f7f);
}

static void test_denormals_and_zeros(void **state) {
  (void)state;
  assert_int_equal(enc(0x00000000), 0x0000);
  assert_int_equal(enc(0x80000000), 0x8000);
  assert_int_equal(enc(0x00000001), 0x0000); /* the least denormal: to 0 */
  assert_int_equal(enc(0x80000001), 0x8000); /* to -0, sign kept */
  assert_int_equal(enc(0x00008000), 0x0000); /* a tie: even is 0 */
  assert_int_equal(enc(0x00018000), 0x0002); /* a tie: 1 is odd */
  assert_int_equal(enc(0x00010000), 0x0001); /* a bf16 denormal: exact */
  assert_int_equal(dec(0x0001), 0x00010000u);
  /* The largest denormal rounds up into the least normal. */
  assert_int_equal(enc(0x007fffff), 0x0080);
  assert_int_equal(enc(0x807fffff), 0x8080);
}

/* Every rounding case against the arithmetic reference: a sweep over the
 * float bit patterns, and for every top half the low halves around a tie. */
static void test_matches_reference(void **state) {
  (void)state;
  static const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000,
                                  0x8001, 0xfffe, 0xffff};
  for (uint64_t u = 0; u <= UINT32_MAX; u += 10007)
    if (enc((uint32_t)u) != ref_bf16((uint32_t)u))
      fail_msg("0x%08x: 0x%04x, reference 0x%04x", (unsigned)u,
               enc((uint32_t)u), ref_bf16((uint32_t)u));
  for (uint32_t top = 0; top <= 0xffff; top++) {
    for (size_t i = 0; i < sizeof lows / sizeof lows[0]; i++) {
      uint32_t u = top << 16 | lows[i];
      if (enc(u) != ref_bf16(u))
        fail_msg("0x%08x: 0x%04x, reference 0x%04x", u, enc(u), ref_bf16(u));
    }
  }
}

/* Decoding is exact: every bf16 but a NaN comes back from float unchanged. */
static void test_decode_is_exact(void **state) {
  (void)state;
  for (uint32_t h = 0; h <= 0xffff; h++) {
    uint32_t u = dec((uint16_t)h);
    if (isnan(from_bits(u)))
      assert_int_equal(enc(u), h | 0x40);
    else if (enc(u) != h || (u & 0xffff) != 0)
      fail_msg("bf16 0x%04x decodes to 0x%08x", h, u);
  }
}

/* The arrays' loops (vectorised, any alignment) against the scalar one. */
static void test_arrays_any_alignment(void **state) {
  (void)state;
  float src[80], out[80];
  unsigned char buf[2 * 80 + 4];
  for (int i = 0; i < 80; i++)
    src[i] = from_bits(0x3f800000u + (uint32_t)i * 0x8000u + (i % 3) * 0x7fffu);
  src[5] = NAN;
  src[6] = -INFINITY;
  src[7] = FLT_MAX;
  src[8] = from_bits(0x00018000);
  for (size_t n = 0; n <= 80; n++) {
    for (size_t at = 0; at < 4; at++) {
      wire_bf16_encode(buf + at, src, n);
      wire_bf16_decode(out, buf + at, n);
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, buf + at + 2 * i, sizeof h);
        assert_int_equal(h, enc(bits(src[i])));
        assert_int_equal(bits(out[i]), bits(wire_bf16_round(src[i])));
      }
    }
  }
}

/* Encoding in place gives the bytes encoding into another buffer gives,
 * over several blocks and a partial one. */
static void test_encode_in_place(void **state) {
  (void)state;
  enum { N = 3 * 1024 + 77 };
  float *buf = malloc(N * sizeof *buf), *src = malloc(N * sizeof *src);
  uint16_t *want = malloc(N * sizeof *want);
  assert_non_null(buf);
  assert_non_null(src);
  assert_non_null(want);
  for (int i = 0; i < N; i++)
    src[i] = (float)cos(i) * (float)(i + 1);
  src[17] = NAN;
  src[2000] = -INFINITY;
  memcpy(buf, src, N * sizeof *buf);
  wire_bf16_encode(want, src, N);
  wire_bf16_encode_in_place(buf, N);
  assert_memory_equal(buf, want, N * sizeof *want);
  free(buf);
  free(src);
  free(want);
}

/* A payload read in two or three pieces, cut anywhere (an element split
 * across pieces too), decodes as it does whole. */
static void test_reader_any_pieces(void **state) {
  (void)state;
  enum { N = 37 };
  float src[N], whole[N], got[N + 1];
  unsigned char payload[2 * N];
  for (int i = 0; i < N; i++)
    src[i] = (float)sin(i) * 100.0f;
  wire_bf16_encode(payload, src, N);
  wire_bf16_decode(whole, payload, N);
  for (size_t a = 0; a <= 2 * N; a++) {
    for (size_t b = a; b <= 2 * N; b += 3) {
      wire_bf16_reader r;
      got[N] = 12345.0f; /* never written */
      wire_bf16_read_start(&r, got);
      wire_bf16_read(&r, payload, a);
      wire_bf16_read(&r, payload + a, b - a);
      wire_bf16_read(&r, payload + b, 2 * N - b);
      assert_int_equal(r.elements, N);
      assert_false(r.has_half);
      assert_memory_equal(got, whole, sizeof whole);
      assert_true(got[N] == 12345.0f);
    }
  }
}

int wire_bf16_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ties_to_even),
      cmocka_unit_test(test_nan_stays_quiet_nan),
      cmocka_unit_test(test_inf_and_overflow),
      cmocka_unit_test(test_denormals_and_zeros),
      cmocka_unit_test(test_matches_reference),
      cmocka_unit_test(test_decode_is_exact),
      cmocka_unit_test(test_arrays_any_alignment),
      cmocka_unit_test(test_encode_in_place),
      cmocka_unit_test(test_reader_any_pieces),
  };
  return cmocka_run_group_tests_name("wire_bf16", tests, NULL, NULL);
}
