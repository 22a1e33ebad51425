/* batch_input.c: the rows fsps-serve scores in batch — IDX ubyte files
 * (plain or gzip, as fsps-worker reads them) scaled as fsps-worker scales
 * them, or raw little-endian float32 — read a chunk at a time, and IDX
 * labels for an accuracy line. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "batch.h"
#include "fsps_err.h"

#define IDX_LABELS_MAGIC 0x00000801u

struct batch_input {
  gzFile f;
  const char *path;
  bool idx;
  uint32_t width;
  uint64_t rows, done; /* rows: UINT64_MAX when unknown */
  float mul, add;
  uint8_t *px; /* an IDX chunk's bytes */
  unsigned char pre[4]; /* bytes sniffed, to be read again (no rewind: */
  size_t npre;          /* the input may be a pipe) */
  uint32_t px_rows;
};

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

/* read_full reads len bytes; FSPS_OK with *got (short at the end), or
 * FSPS_IO with msg. */
static int read_full(batch_input *in, void *buf, size_t len, size_t *got,
                     char *msg, size_t msglen) {
  *got = in->npre < len ? in->npre : len;
  memcpy(buf, in->pre, *got);
  memmove(in->pre, in->pre + *got, in->npre - *got);
  in->npre -= *got;
  while (*got < len) {
    int r = gzread(in->f, (char *)buf + *got, (unsigned)(len - *got));
    if (r < 0) {
      int e;
      const char *why = gzerror(in->f, &e);
      snprintf(msg, msglen, "%s: cannot be read: %s", in->path,
               e == Z_BUF_ERROR ? "the gzip stream is cut short" : why);
      return FSPS_IO;
    }
    if (r == 0)
      break;
    *got += (size_t)r;
  }
  return FSPS_OK;
}

static bool has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static int open_file(const char *path, batch_input **out, char *msg,
                     size_t msglen) {
  batch_input *in = calloc(1, sizeof *in);
  *out = NULL;
  if (in == NULL) {
    snprintf(msg, msglen, "out of memory");
    return FSPS_NOMEM;
  }
  in->path = path;
  errno = 0;
  if ((in->f = gzopen(path, "rb")) == NULL) {
    snprintf(msg, msglen, "%s: cannot be opened: %s", path,
             errno ? strerror(errno) : "out of memory");
    free(in);
    return errno == ENOENT ? FSPS_NOT_FOUND : FSPS_IO;
  }
  gzbuffer(in->f, 128 * 1024);
  *out = in;
  return FSPS_OK;
}

/* idx_dims reads an IDX ubyte header after its magic: n rows of the
 * product of the other dimensions. */
static int idx_dims(batch_input *in, unsigned ndims, char *msg,
                    size_t msglen) {
  unsigned char h[16];
  size_t got;
  int rc = read_full(in, h, 4 * (size_t)ndims, &got, msg, msglen);
  if (rc == FSPS_OK && got < 4 * (size_t)ndims) {
    snprintf(msg, msglen, "%s: truncated IDX header", in->path);
    return FSPS_CORRUPT;
  }
  uint64_t per = 1;
  for (unsigned d = 1; rc == FSPS_OK && d < ndims; d++)
    per *= be32(h + 4 * d);
  if (rc != FSPS_OK)
    return rc;
  in->rows = be32(h);
  if (per != in->width) {
    snprintf(msg, msglen, "%s: its rows hold %" PRIu64 " values but the "
             "model takes %" PRIu32 " inputs", in->path, per, in->width);
    return FSPS_INVALID_ARGUMENT;
  }
  return FSPS_OK;
}

/* f32_rows works out a plain f32 file's row count from its size. */
static int f32_rows(batch_input *in, char *msg, size_t msglen) {
  struct stat sb;
  uint64_t row = (uint64_t)in->width * 4;
  in->rows = UINT64_MAX;
  if (gzdirect(in->f) == 0 || stat(in->path, &sb) != 0 ||
      !S_ISREG(sb.st_mode)) /* compressed, or a pipe: counted as read */
    return FSPS_OK;
  if ((uint64_t)sb.st_size % row != 0) {
    snprintf(msg, msglen, "%s holds %lld bytes, not a whole number of rows of "
             "%" PRIu32 " float32 (%" PRIu64 " bytes each): the model takes "
             "%" PRIu32 " inputs", in->path, (long long)sb.st_size,
             in->width, row, in->width);
    return FSPS_INVALID_ARGUMENT;
  }
  in->rows = (uint64_t)sb.st_size / row;
  return FSPS_OK;
}

/* sniff decides the format (IDX ubyte magic 00 00 08 nd, else f32) unless
 * given, and reads an IDX header. */
static int sniff(batch_input *in, const char *format, char *msg,
                 size_t msglen) {
  unsigned char m[4] = {0};
  size_t got = 0;
  bool is_idx_magic = false;
  if (format == NULL && (has_suffix(in->path, ".f32") ||
                         has_suffix(in->path, ".f32.gz")))
    format = "f32";
  if (format == NULL || strcmp(format, "idx") == 0) {
    int rc = read_full(in, m, 4, &got, msg, msglen);
    if (rc != FSPS_OK)
      return rc;
    is_idx_magic = got == 4 && m[0] == 0 && m[1] == 0 && m[2] == 0x08 &&
                   m[3] >= 1 && m[3] <= 4;
    if (format == NULL && !is_idx_magic) {
      memcpy(in->pre, m, got);
      in->npre = got;
    }
  }
  in->idx = format ? strcmp(format, "idx") == 0 : is_idx_magic;
  if (in->idx && !is_idx_magic) {
    snprintf(msg, msglen, "%s is not an IDX ubyte file (magic %02x %02x %02x "
             "%02x; expected 00 00 08 01..04)", in->path, m[0], m[1], m[2],
             m[3]);
    return FSPS_INVALID_ARGUMENT;
  }
  return in->idx ? idx_dims(in, m[3], msg, msglen) : f32_rows(in, msg, msglen);
}

int batch_input_open(const char *path, const char *format, uint32_t width,
                     bool normalize, batch_input **out, uint64_t *rows,
                     char *msg, size_t msglen) {
  int rc = open_file(path, out, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  batch_input *in = *out;
  in->width = width;
  /* fsps-worker's scaling, operation for operation (worker/data.c). */
  in->mul = 1.0f / 255.0f;
  in->add = 0.0f;
  if (normalize) {
    float inv = 1.0f / 0.3530f;
    in->add = (in->add - 0.2860f) * inv;
    in->mul *= inv;
  }
  rc = sniff(in, format, msg, msglen);
  if (rc != FSPS_OK) {
    batch_input_close(in);
    *out = NULL;
    return rc;
  }
  *rows = in->rows;
  return FSPS_OK;
}

static int ensure_px(batch_input *in, uint32_t max, char *msg, size_t msglen) {
  if (in->px_rows >= max)
    return FSPS_OK;
  free(in->px);
  in->px_rows = 0;
  if ((in->px = malloc((size_t)max * in->width)) == NULL) {
    snprintf(msg, msglen, "out of memory for a chunk of %" PRIu32 " rows", max);
    return FSPS_NOMEM;
  }
  in->px_rows = max;
  return FSPS_OK;
}

static int read_idx(batch_input *in, float *x, uint32_t n, char *msg,
                    size_t msglen) {
  size_t len = (size_t)n * in->width, got;
  int rc = ensure_px(in, n, msg, msglen);
  if (rc == FSPS_OK)
    rc = read_full(in, in->px, len, &got, msg, msglen);
  if (rc == FSPS_OK && got < len) {
    snprintf(msg, msglen, "%s: truncated: its header promises %" PRIu64
             " rows, the file ends in row %" PRIu64, in->path, in->rows,
             in->done + got / in->width);
    return FSPS_CORRUPT;
  }
  for (size_t j = 0; rc == FSPS_OK && j < len; j++)
    x[j] = (float)in->px[j] * in->mul + in->add;
  return rc;
}

/* read_f32 reads n rows (fewer at the end of a file of unknown length) and
 * refuses values that are not finite. */
static int read_f32(batch_input *in, float *x, uint32_t *n, char *msg,
                    size_t msglen) {
  size_t len = (size_t)*n * in->width * 4, got;
  int rc = read_full(in, x, len, &got, msg, msglen);
  if (rc == FSPS_OK && got % ((size_t)in->width * 4) != 0) {
    snprintf(msg, msglen, "%s ends inside a row: not a whole number of rows "
             "of %" PRIu32 " float32", in->path, in->width);
    return FSPS_INVALID_ARGUMENT;
  }
  *n = rc == FSPS_OK ? (uint32_t)(got / ((size_t)in->width * 4)) : 0;
  for (size_t j = 0; j < (size_t)*n * in->width; j++)
    if (!isfinite(x[j])) {
      snprintf(msg, msglen, "%s: row %" PRIu64 " holds %s at column %zu: "
               "the file is refused (fsps-serve scores finite inputs only)",
               in->path, in->done + j / in->width,
               isnan(x[j]) ? "NaN" : "an infinity", j % in->width);
      return FSPS_INVALID_ARGUMENT;
    }
  return rc;
}

int batch_input_read(batch_input *in, float *x, uint32_t max, uint32_t *got,
                     char *msg, size_t msglen) {
  uint64_t left = in->rows - in->done;
  uint32_t n = left < max ? (uint32_t)left : max;
  int rc = n == 0         ? FSPS_OK
           : in->idx      ? read_idx(in, x, n, msg, msglen)
                          : read_f32(in, x, &n, msg, msglen);
  *got = rc == FSPS_OK ? n : 0;
  in->done += *got;
  return rc;
}

void batch_input_close(batch_input *in) {
  if (in == NULL)
    return;
  gzclose(in->f);
  free(in->px);
  free(in);
}

int batch_labels_open(const char *path, uint64_t rows, batch_input **out,
                      char *msg, size_t msglen) {
  unsigned char h[8];
  size_t got;
  int rc = open_file(path, out, msg, msglen);
  if (rc == FSPS_OK)
    rc = read_full(*out, h, 8, &got, msg, msglen);
  if (rc == FSPS_OK && (got < 8 || be32(h) != IDX_LABELS_MAGIC)) {
    snprintf(msg, msglen, "%s is not an IDX label file (magic 0x00000801)",
             path);
    rc = FSPS_INVALID_ARGUMENT;
  } else if (rc == FSPS_OK && rows != UINT64_MAX && be32(h + 4) != rows) {
    snprintf(msg, msglen, "%s holds %" PRIu32 " labels for %" PRIu64 " rows",
             path, be32(h + 4), rows);
    rc = FSPS_INVALID_ARGUMENT;
  }
  if (rc != FSPS_OK && *out != NULL) {
    batch_input_close(*out);
    *out = NULL;
  }
  return rc;
}

int batch_labels_read(batch_input *in, uint8_t *y, uint32_t n, char *msg,
                      size_t msglen) {
  size_t got;
  int rc = read_full(in, y, n, &got, msg, msglen);
  if (rc == FSPS_OK && got < n) {
    snprintf(msg, msglen, "%s: truncated", in->path);
    return FSPS_CORRUPT;
  }
  return rc;
}
