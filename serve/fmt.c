/* fmt.c: "%.9g" of a float without printf (see fmt.h): the value scaled
 * by one exact power of ten, so one rounding, rounded to 9 digits unless
 * that rounding is too close to a tie to trust, then laid out as %g does
 * (fixed for exponents -4..8, else d.dddddddde±XX; no trailing zeros). */
#include "fmt.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,
                               1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
                               1e18, 1e19, 1e20, 1e21, 1e22};

static size_t fallback(float f, char *buf) {
  return (size_t)snprintf(buf, SERVE_FMT_G9_MAX, "%.9g", (double)f);
}

/* scaled is a * 10^k with one rounding (10^|k| <= 1e22 is exact). */
static double scaled(double a, int k) {
  return k >= 0 ? a * POW10[k] : a / POW10[-k];
}

/* digits9 finds a's 9 significant digits and decimal exponent; false when
 * the rounding is too close to a tie to decide with doubles. */
static int digits9(double a, uint32_t *digits, int *exp10) {
  int e = (int)floor(log10(a));
  double s = scaled(a, 8 - e);
  if (s < 1e8)
    s = scaled(a, 8 - --e);
  else if (s >= 1e9)
    s = scaled(a, 8 - ++e);
  double r = floor(s), frac = s - r; /* s < 2^30: exact */
  /* s is within 2^-23 of a * 10^(8-e); a tie must be told apart by more. */
  if (fabs(frac - 0.5) < 1e-6)
    return 0;
  uint32_t d = (uint32_t)r + (frac > 0.5);
  if (d >= 1000000000u) {
    d /= 10;
    e++;
  }
  *digits = d;
  *exp10 = e;
  return 1;
}

/* layout writes digits (9 of them, d0 first) at decimal exponent e as %g. */
static size_t layout(const char d[9], int e, int neg, char *buf) {
  int n = 9;
  while (n > 1 && d[n - 1] == '0')
    n--; /* significant digits kept */
  char *p = buf;
  if (neg)
    *p++ = '-';
  if (e >= -4 && e < 9) {
    if (e < 0) {
      *p++ = '0';
      *p++ = '.';
      for (int i = 0; i < -e - 1; i++)
        *p++ = '0';
      memcpy(p, d, (size_t)n);
      p += n;
    } else {
      memcpy(p, d, (size_t)e + 1);
      p += e + 1;
      if (n > e + 1) {
        *p++ = '.';
        memcpy(p, d + e + 1, (size_t)(n - e - 1));
        p += n - e - 1;
      }
    }
  } else {
    *p++ = d[0];
    if (n > 1) {
      *p++ = '.';
      memcpy(p, d + 1, (size_t)n - 1);
      p += n - 1;
    }
    int x = e < 0 ? -e : e; /* < 100: |a| is within [1e-13, 1e13) */
    *p++ = 'e';
    *p++ = e < 0 ? '-' : '+';
    *p++ = (char)('0' + x / 10);
    *p++ = (char)('0' + x % 10);
  }
  *p = '\0';
  return (size_t)(p - buf);
}

size_t serve_fmt_g9(float f, char *buf) {
  double v = (double)f, a = fabs(v);
  uint32_t digits;
  int e;
  if (!(a >= 1e-13 && a < 1e13) || !digits9(a, &digits, &e))
    return fallback(f, buf);
  char d[9];
  for (int i = 8; i >= 0; i--, digits /= 10)
    d[i] = (char)('0' + digits % 10);
  return layout(d, e, v < 0, buf);
}
