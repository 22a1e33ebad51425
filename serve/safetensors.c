/* safetensors.c: the safetensors writer (see safetensors.h): a JSON header
 * naming each tensor's dtype, shape and byte range, then the raw
 * little-endian float32 data, as the format's specification lays out. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsps_err.h"
#include "safetensors.h"

typedef struct {
  char *buf;
  size_t len, cap;
  bool oom;
} sbuf;

static void add(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (b->oom || n < 0)
    return;
  if (b->len + (size_t)n + 1 > b->cap) {
    size_t cap = (b->len + (size_t)n + 1) * 2;
    char *grown = realloc(b->buf, cap);
    if (grown == NULL) {
      b->oom = true;
      return;
    }
    b->buf = grown;
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* add_layer adds layer l's "2l.weight" and "2l.bias" entries; *off is the
 * byte offset where the layer's data starts and is moved past it. */
static void add_layer(sbuf *b, const serve_snapshot *s, uint32_t l,
                      uint64_t *off) {
  uint64_t in = s->widths[l], out = s->widths[l + 1];
  uint64_t w_end = *off + out * in * 4, b_end = w_end + out * 4;
  add(b, "%s\"%" PRIu32 ".weight\":{\"dtype\":\"F32\",\"shape\":[%" PRIu64
      ",%" PRIu64 "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]},",
      l ? "," : "", 2 * l, out, in, *off, w_end);
  add(b, "\"%" PRIu32 ".bias\":{\"dtype\":\"F32\",\"shape\":[%" PRIu64
      "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
      2 * l, out, w_end, b_end);
  *off = b_end;
}

char *serve_safetensors_header(const serve_snapshot *s, const char *fsps_version,
                               size_t *len) {
  sbuf b = {0};
  uint64_t off = 0;
  add(&b, "{");
  for (uint32_t l = 0; l + 1 < s->nwidths; l++)
    add_layer(&b, s, l, &off);
  add(&b, ",\"__metadata__\":{\"format\":\"pt\",\"fsps_version\":\"%s\","
      "\"model_version\":\"%" PRIu64 "\",\"widths\":\"",
      fsps_version, s->version);
  for (uint32_t i = 0; i < s->nwidths; i++)
    add(&b, "%s%" PRIu32, i ? "," : "", s->widths[i]);
  add(&b, "\"}}");
  while (b.len % 8 != 0)
    add(&b, " ");
  if (b.oom) {
    free(b.buf);
    return NULL;
  }
  *len = b.len;
  return b.buf;
}

static int write_all(FILE *f, const serve_snapshot *s, const char *hdr,
                     size_t hlen) {
  uint64_t n = hlen; /* little-endian hosts only, as the data below */
  bool ok = fwrite(&n, 8, 1, f) == 1 && fwrite(hdr, 1, hlen, f) == hlen;
  for (uint32_t l = 0; ok && l + 1 < s->nwidths; l++) {
    size_t k = (size_t)serve_snapshot_layer_size(s, l);
    ok = fwrite(s->params[l], sizeof(float), k, f) == k;
  }
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  return ok ? 0 : -1;
}

int serve_safetensors_write(const char *path, const serve_snapshot *s,
                            const char *fsps_version, char *msg,
                            size_t msglen) {
  size_t hlen;
  char tmp[4200];
  char *hdr = serve_safetensors_header(s, fsps_version, &hlen);
  if (hdr == NULL) {
    snprintf(msg, msglen, "out of memory");
    return FSPS_NOMEM;
  }
  snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  int err = f == NULL || write_all(f, s, hdr, hlen) != 0 ? (errno ? errno : EIO)
                                                         : 0;
  if (f != NULL && fclose(f) != 0 && err == 0)
    err = errno ? errno : EIO;
  if (f != NULL && err == 0 && rename(tmp, path) != 0)
    err = errno;
  free(hdr);
  if (err == 0 && f != NULL)
    return FSPS_OK;
  if (f != NULL)
    unlink(tmp);
  snprintf(msg, msglen, "cannot write %s: %s", f ? path : tmp,
           strerror(err ? err : EIO));
  return FSPS_IO;
}
