/* logfmt.c: JSON log lines — escaping (with UTF-8 validation), RFC 3339
 * timestamps, key/value fields — formatted into callers' buffers. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "logfmt.h"

int logfmt_parse_format(const char *name) {
  if (strcmp(name, "text") == 0)
    return LOGFMT_TEXT;
  if (strcmp(name, "json") == 0)
    return LOGFMT_JSON;
  return -1;
}

/* utf8_len returns the length (1..4) of the valid UTF-8 sequence s starts
 * with, or 0 when it is not one (overlong forms and surrogates included).
 * It stops at the first bad byte, so it never reads past a NUL. */
static size_t utf8_len(const unsigned char *s) {
  unsigned char c = s[0], lo = 0x80, hi = 0xBF;
  size_t n;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    lo = c == 0xE0 ? 0xA0 : lo;
    hi = c == 0xED ? 0x9F : hi;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    lo = c == 0xF0 ? 0x90 : lo;
    hi = c == 0xF4 ? 0x8F : hi;
  } else
    return 0;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  return n;
}

/* escape_one encodes the character at s into out (*used bytes) and returns
 * how many bytes of s it took. */
static size_t escape_one(const unsigned char *s, char out[8], size_t *used) {
  static const char named[] = "\"\"\\\\\bb\ff\nn\rr\tt";
  const char *e = *s ? strchr(named, *s) : NULL;
  if (e != NULL && (e - named) % 2 == 0) {
    out[0] = '\\';
    out[1] = e[1];
    *used = 2;
    return 1;
  }
  if (*s < 0x20 || *s == 0x7f) {
    *used = (size_t)snprintf(out, 8, "\\u%04x", *s);
    return 1;
  }
  size_t n = utf8_len(s);
  if (n == 0) { /* not UTF-8: the replacement character */
    memcpy(out, "\\ufffd", 6);
    *used = 6;
    return 1;
  }
  memcpy(out, s, n);
  *used = n;
  return n;
}

size_t logfmt_escape(char *dst, size_t cap, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t len = 0;
  while (*p) {
    char enc[8];
    size_t k, took = escape_one(p, enc, &k);
    if (len + k >= cap)
      break;
    memcpy(dst + len, enc, k);
    len += k;
    p += took;
  }
  dst[len] = '\0';
  return len;
}

size_t logfmt_time(char *dst, size_t cap) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(dst, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  int m = snprintf(dst + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return m < 0 || (size_t)m >= cap - n ? n : n + (size_t)m;
}

void logfmt_fields_init(logfmt_fields *f) {
  f->len = 0;
  f->buf[0] = '\0';
  f->truncated = false;
}

/* put appends ,"key":<quote>value<quote> whole, or sets truncated. */
static void put(logfmt_fields *f, const char *key, const char *value,
                bool quote) {
  char k[128];
  logfmt_escape(k, sizeof k, key);
  const char *q = quote ? "\"" : "";
  size_t room = sizeof f->buf - f->len;
  int n = snprintf(f->buf + f->len, room, "%s\"%s\":%s%s%s", f->len ? "," : "",
                   k, q, value, q);
  if (n < 0 || (size_t)n >= room) {
    f->buf[f->len] = '\0';
    f->truncated = true;
    return;
  }
  f->len += (size_t)n;
}

void logfmt_field_str(logfmt_fields *f, const char *key, const char *value) {
  char esc[sizeof f->buf];
  if (value == NULL) {
    put(f, key, "null", false);
    return;
  }
  if (logfmt_escape(esc, sizeof esc, value) < strlen(value)) {
    /* escaping only lengthens: shorter means it was cut, so drop it */
    f->truncated = true;
    return;
  }
  put(f, key, esc, true);
}

void logfmt_field_u64(logfmt_fields *f, const char *key, uint64_t value) {
  char v[24];
  snprintf(v, sizeof v, "%llu", (unsigned long long)value);
  put(f, key, v, false);
}

void logfmt_field_num(logfmt_fields *f, const char *key, double value,
                      int digits) {
  char v[40] = "null";
  if (isfinite(value))
    snprintf(v, sizeof v, "%.*g",
             digits < 1    ? 1
             : digits > 17 ? 17
                           : digits,
             value);
  put(f, key, v, false);
}

size_t logfmt_line(char *line, size_t cap, const char *level,
                   const char *process, const logfmt_fields *ident,
                   const char *message, const logfmt_fields *fields) {
  char t[40];
  logfmt_time(t, sizeof t);
  const char *fs = fields ? fields->buf : "", *id = ident ? ident->buf : "";
  int n = snprintf(line, cap,
                   "{\"time\":\"%s\",\"level\":\"%s\",\"process\":\"%s\"%s%s"
                   ",\"message\":\"",
                   t, level, process, *id ? "," : "", id);
  size_t tail = strlen(fs) + sizeof "\",\"fields\":{}}\n";
  if (n < 0 || (size_t)n + tail + 1 > cap)
    return 0;
  size_t len = (size_t)n;
  len += logfmt_escape(line + len, cap - len - tail, message);
  n = snprintf(line + len, cap - len, "\",\"fields\":{%s}}\n", fs);
  return len + (size_t)n;
}
