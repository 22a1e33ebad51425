/* text.c: a growing text buffer (what /metrics and the status pages are
 * rendered into) and the escaping that HTML and JSON need — of names that
 * come from clients, so of any bytes: invalid UTF-8 becomes U+FFFD. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* grow makes room for n more bytes and a NUL; false (and failed) if it
 * cannot. */
static bool grow(metrics_text *t, size_t n) {
  if (t->failed)
    return false;
  if (t->len + n + 1 <= t->cap)
    return true;
  size_t cap = (t->cap + n + 1) * 2;
  char *p = realloc(t->p, cap < 256 ? 256 : cap);
  if (p == NULL) {
    t->failed = true;
    return false;
  }
  t->p = p;
  t->cap = cap < 256 ? 256 : cap;
  return true;
}

static void put_bytes(metrics_text *t, const char *s, size_t n) {
  if (!grow(t, n))
    return;
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
}

void metrics_text_put(metrics_text *t, const char *s) {
  put_bytes(t, s, strlen(s));
}

void metrics_text_printf(metrics_text *t, const char *fmt, ...) {
  for (int tries = 0; tries < 2 && grow(t, 0); tries++) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = true;
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    grow(t, (size_t)n);
  }
}

/* utf8_seq returns the length of the valid UTF-8 sequence at s (1 to 4;
 * overlong forms, surrogates and code points past U+10FFFF are not), or 0.
 * Stops at a NUL, which is never a continuation byte. */
static size_t utf8_seq(const unsigned char *s) {
  unsigned char c = s[0];
  size_t n = c < 0x80   ? 1
             : c < 0xc2 ? 0
             : c < 0xe0 ? 2
             : c < 0xf0 ? 3
             : c < 0xf5 ? 4
                        : 0;
  if (n < 2)
    return n;
  unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
  unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return n;
}

/* put_escaped copies s, valid multi-byte sequences as they are, each
 * ASCII character through ascii() (which writes it, escaped or not) and
 * each invalid byte as `bad`. */
static void put_escaped(metrics_text *t, const char *s,
                        void (*ascii)(metrics_text *, char), const char *bad) {
  const unsigned char *u = (const unsigned char *)s;
  while (*u) {
    size_t n = utf8_seq(u);
    if (n == 0)
      metrics_text_put(t, bad);
    else if (n == 1)
      ascii(t, (char)*u);
    else
      put_bytes(t, (const char *)u, n);
    u += n ? n : 1;
  }
}

/* html_char: the five characters that matter in text and in quoted
 * attributes; control characters (but tab and newlines) are U+FFFD. */
static void html_char(metrics_text *t, char c) {
  static const char *const esc[] = {['&'] = "&amp;",
                                    ['<'] = "&lt;",
                                    ['>'] = "&gt;",
                                    ['"'] = "&quot;",
                                    ['\''] = "&#39;"};
  if ((size_t)c < sizeof esc / sizeof esc[0] && esc[(size_t)c] != NULL)
    metrics_text_put(t, esc[(size_t)c]);
  else if ((c >= 0 && c < 0x20 && c != '\t' && c != '\n' && c != '\r') ||
           c == 0x7f)
    metrics_text_put(t, "\xef\xbf\xbd");
  else
    put_bytes(t, &c, 1);
}

void metrics_text_html(metrics_text *t, const char *s) {
  put_escaped(t, s ? s : "", html_char, "\xef\xbf\xbd");
}

/* json_char: quote, backslash and control characters as JSON wants them,
 * and <, >, & as \u escapes, so that the text is safe inside HTML too. */
static void json_char(metrics_text *t, char c) {
  if (c == '"' || c == '\\')
    metrics_text_printf(t, "\\%c", c);
  else if (c == '\n')
    metrics_text_put(t, "\\n");
  else if (c == '\t')
    metrics_text_put(t, "\\t");
  else if ((c >= 0 && c < 0x20) || c == '<' || c == '>' || c == '&')
    metrics_text_printf(t, "\\u%04x", (unsigned)c);
  else
    put_bytes(t, &c, 1);
}

void metrics_text_json(metrics_text *t, const char *s) {
  metrics_text_put(t, "\"");
  put_escaped(t, s ? s : "", json_char, "\\ufffd");
  metrics_text_put(t, "\"");
}

void metrics_text_json_num(metrics_text *t, double v) {
  if (!isfinite(v))
    metrics_text_put(t, "null");
  else if (v == floor(v) && fabs(v) < 1e15)
    metrics_text_printf(t, "%.0f", v);
  else
    metrics_text_printf(t, "%.9g", v);
}

char *metrics_text_take(metrics_text *t, size_t *len) {
  if (grow(t, 0)) /* nothing written yet: an empty string */
    t->p[t->len] = '\0';
  char *p = t->failed ? NULL : t->p;
  if (p == NULL)
    free(t->p);
  else if (len != NULL)
    *len = t->len;
  *t = (metrics_text){0};
  return p;
}
