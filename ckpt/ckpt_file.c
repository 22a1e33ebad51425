/* ckpt_file.c: the checkpoint file format (see ckpt_file.h): CRC32C, the
 * crash-safe writer (temporary name, fsync, rename, folder fsync) and the
 * reader that verifies a whole file before handing out its layers. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "fsps_err.h"

#define MAGIC "FSPSCKP1"
#define FORMAT 1u
#define MAX_SPEC (64u << 20)
#define MAX_FLOATS (UINT64_C(1) << 40)
#define VERIFY_BUF (1u << 20)

/* ---- CRC32C (Castagnoli) ---- */

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
}

__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    crc = (uint32_t)__builtin_ia32_crc32di(crc, v);
  }
  for (; n > 0; n--)
    crc = __builtin_ia32_crc32qi(crc, *p++);
  return crc;
}

/* crc32c continues crc (start with 0) over n bytes. */
static uint32_t crc32c(uint32_t crc, const void *buf, size_t n) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  const uint8_t *p = buf;
  crc = ~crc;
  if (__builtin_cpu_supports("sse4.2")) {
    crc = crc_hw(crc, p, n);
  } else {
    pthread_once(&once, crc_init);
    for (; n > 0; n--)
      crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  }
  return ~crc;
}

/* ---- names ---- */

void ckpt_file_name(char *out, size_t outlen, const char *dir, uint32_t s,
                    uint32_t S, uint64_t tag) {
  snprintf(out, outlen,
           "%s/ckpt-s%" PRIu32 "of%" PRIu32 "-v%020" PRIu64 ".fsps", dir, s, S,
           tag);
}

bool ckpt_file_parse_name(const char *name, uint32_t *s, uint32_t *S,
                          uint64_t *tag) {
  unsigned a, b;
  unsigned long long v;
  int used = 0;
  if (sscanf(name, "ckpt-s%uof%u-v%llu.fsps%n", &a, &b, &v, &used) != 3 ||
      name[used] != '\0')
    return false;
  *s = a;
  *S = b;
  *tag = v;
  return true;
}

/* ---- writing ---- */

struct ckpt_writer {
  FILE *f;
  uint32_t crc;
  uint64_t bytes;
  uint64_t owed; /* floats the current layer still needs */
  int err;       /* errno of the first failure; 0 while all is well */
  bool miscounted, synced, published;
  char dir[4096], path[4200], tmp[4210];
};

static void put(ckpt_writer *w, const void *p, size_t n) {
  if (w->err || n == 0)
    return;
  w->crc = crc32c(w->crc, p, n);
  w->bytes += n;
  if (fwrite(p, 1, n, w->f) != n)
    w->err = errno ? errno : EIO;
}

static void put32(ckpt_writer *w, uint32_t v) {
  put(w, &v, 4);
}

static void put64(ckpt_writer *w, uint64_t v) {
  put(w, &v, 8);
}

static void put_header(ckpt_writer *w, const ckpt_header *h) {
  put(w, MAGIC, 8);
  put32(w, FORMAT);
  put32(w, h->S);
  put32(w, h->s);
  put32(w, h->W);
  put64(w, h->hash);
  put64(w, h->tag);
  put32(w, h->nlayers);
  put32(w, h->speclen);
  put(w, h->spec, h->speclen);
}

ckpt_writer *ckpt_writer_open(const char *dir, const ckpt_header *h, char *msg,
                              size_t msglen) {
  ckpt_writer *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  if (strlen(dir) >= sizeof w->dir) {
    snprintf(msg, msglen, "folder name too long: %.200s...", dir);
    free(w);
    return NULL;
  }
  snprintf(w->dir, sizeof w->dir, "%s", dir);
  ckpt_file_name(w->path, sizeof w->path, dir, h->s, h->S, h->tag);
  snprintf(w->tmp, sizeof w->tmp, "%s.tmp", w->path);
  if ((w->f = fopen(w->tmp, "wb")) == NULL) {
    snprintf(msg, msglen, "cannot create %s: %s", w->tmp, strerror(errno));
    free(w);
    return NULL;
  }
  put_header(w, h);
  return w;
}

void ckpt_writer_layer(ckpt_writer *w, const ckpt_layer_head *lh) {
  w->miscounted |= w->owed != 0;
  put32(w, lh->index);
  put64(w, lh->count);
  put64(w, lh->version);
  put64(w, lh->floats);
  w->owed = lh->floats;
}

void ckpt_writer_floats(ckpt_writer *w, const float *data, size_t n) {
  w->miscounted |= n > w->owed;
  w->owed -= n > w->owed ? w->owed : n;
  put(w, data, n * sizeof(float));
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int ckpt_writer_sync(ckpt_writer *w, char *msg, size_t msglen) {
  if (w->miscounted || w->owed != 0 || w->f == NULL) {
    snprintf(msg, msglen, "%s: its layers' floats do not add up (a bug)",
             w->path);
    return FSPS_INTERNAL;
  }
  uint32_t crc = w->crc;
  put(w, &crc, 4);
  if (!w->err && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
    w->err = errno ? errno : EIO;
  if (fclose(w->f) != 0 && !w->err)
    w->err = errno ? errno : EIO;
  w->f = NULL;
  if (w->err) {
    snprintf(msg, msglen, "cannot write %s: %s", w->path, strerror(w->err));
    return FSPS_IO;
  }
  w->synced = true;
  return FSPS_OK;
}

int ckpt_writer_publish(ckpt_writer *w, char *msg, size_t msglen) {
  if (!w->synced) {
    snprintf(msg, msglen, "%s: published before it was synced (a bug)",
             w->path);
    return FSPS_INTERNAL;
  }
  if (rename(w->tmp, w->path) != 0) {
    snprintf(msg, msglen, "cannot rename %s to %s: %s", w->tmp, w->path,
             strerror(errno));
    return FSPS_IO;
  }
  w->published = true;
  if (fsync_dir(w->dir) != 0) {
    snprintf(msg, msglen, "cannot fsync the folder %s: %s", w->dir,
             strerror(errno));
    return FSPS_IO;
  }
  return FSPS_OK;
}

int ckpt_writer_commit(ckpt_writer *w, char *msg, size_t msglen) {
  int rc = ckpt_writer_sync(w, msg, msglen);
  return rc == FSPS_OK ? ckpt_writer_publish(w, msg, msglen) : rc;
}

const char *ckpt_writer_path(const ckpt_writer *w) {
  return w->path;
}

uint64_t ckpt_writer_bytes(const ckpt_writer *w) {
  return w->bytes;
}

void ckpt_writer_destroy(ckpt_writer *w) {
  if (w == NULL)
    return;
  if (w->f)
    fclose(w->f);
  if (!w->published)
    unlink(w->tmp);
  free(w);
}

/* ---- reading ---- */

struct ckpt_reader {
  FILE *f;
  uint32_t crc, stored; /* running CRC of what was read; the file's own */
  void *spec;
};

static bool get(ckpt_reader *r, void *p, size_t n) {
  if (n && fread(p, 1, n, r->f) != n)
    return false;
  r->crc = crc32c(r->crc, p, n);
  return true;
}

static bool get32(ckpt_reader *r, uint32_t *v) {
  return get(r, v, 4);
}

static bool get64(ckpt_reader *r, uint64_t *v) {
  return get(r, v, 8);
}

/* expected_size walks the file's headers (without reading payloads) and
 * returns the size they describe, or 0 if the headers themselves are cut
 * or absurd. */
static uint64_t expected_size(FILE *f) {
  uint32_t nlayers, speclen;
  uint64_t pos = 8 + 4 * 4 + 8 + 8;
  if (fseek(f, (long)pos, SEEK_SET) != 0 || fread(&nlayers, 4, 1, f) != 1 ||
      fread(&speclen, 4, 1, f) != 1)
    return 0;
  pos += 8 + speclen;
  for (uint32_t l = 0; l < nlayers; l++) {
    uint64_t floats;
    if (fseek(f, (long)(pos + 4 + 8 + 8), SEEK_SET) != 0 ||
        fread(&floats, 8, 1, f) != 1 || floats > MAX_FLOATS)
      return 0;
    pos += 4 + 8 + 8 + 8 + floats * 4;
  }
  return pos + 4;
}

/* crc_of computes the CRC32C of the file's first `len` bytes; NULL, or
 * why not. */
static const char *crc_of(FILE *f, uint64_t len, uint32_t *crc) {
  char *buf = malloc(VERIFY_BUF);
  if (buf == NULL)
    return "cannot be read (out of memory)";
  *crc = 0;
  rewind(f);
  while (len > 0) {
    size_t n = len < VERIFY_BUF ? (size_t)len : VERIFY_BUF;
    if (fread(buf, 1, n, f) != n)
      break;
    *crc = crc32c(*crc, buf, n);
    len -= n;
  }
  free(buf);
  return len == 0 ? NULL : "is truncated";
}

/* verify checks the file's length against its headers, then its CRC in one
 * streaming pass; NULL when sound, else why not. */
static const char *verify(ckpt_reader *r) {
  struct stat sb;
  uint64_t want = expected_size(r->f);
  if (fstat(fileno(r->f), &sb) != 0 || want == 0 || (uint64_t)sb.st_size < want)
    return "is truncated";
  if ((uint64_t)sb.st_size > want)
    return "has bytes past its end (corrupt)";
  uint32_t crc;
  const char *why = crc_of(r->f, want - 4, &crc);
  if (why != NULL)
    return why;
  if (fread(&r->stored, 1, 4, r->f) != 4)
    return "is truncated";
  if (crc != r->stored)
    return "fails its CRC32C check (corrupt)";
  rewind(r->f);
  return NULL;
}

static const char *read_header(ckpt_reader *r, ckpt_header *h) {
  char magic[8];
  uint32_t format = 0;
  if (!get(r, magic, 8) || memcmp(magic, MAGIC, 8) != 0)
    return "is not an fsps checkpoint (bad magic)";
  bool ok = get32(r, &format) && get32(r, &h->S) && get32(r, &h->s) &&
            get32(r, &h->W) && get64(r, &h->hash) && get64(r, &h->tag) &&
            get32(r, &h->nlayers) && get32(r, &h->speclen);
  if (!ok || h->speclen > MAX_SPEC)
    return "is truncated";
  if (format != FORMAT)
    return "has an unknown format version";
  if ((r->spec = malloc(h->speclen ? h->speclen : 1)) == NULL)
    return "cannot be read (out of memory)";
  if (!get(r, r->spec, h->speclen))
    return "is truncated";
  h->spec = r->spec;
  return NULL;
}

ckpt_reader *ckpt_reader_open(const char *path, ckpt_header *h,
                              const char **why) {
  ckpt_reader *r = calloc(1, sizeof *r);
  *why = r ? NULL : "cannot be read (out of memory)";
  if (r && (r->f = fopen(path, "rb")) == NULL)
    *why = "cannot be opened";
  if (*why == NULL)
    *why = verify(r);
  if (*why == NULL)
    *why = read_header(r, h);
  if (*why == NULL)
    return r;
  ckpt_reader_close(r);
  return NULL;
}

const char *ckpt_reader_layer(ckpt_reader *r, ckpt_layer_head *lh) {
  bool ok = get32(r, &lh->index) && get64(r, &lh->count) &&
            get64(r, &lh->version) && get64(r, &lh->floats);
  if (!ok)
    return "is truncated";
  /* No layer gets there: its next step would wrap the version to 0. */
  return lh->version == UINT64_MAX ? "holds an impossible layer version" : NULL;
}

const char *ckpt_reader_floats(ckpt_reader *r, float *out, size_t n) {
  return get(r, out, n * sizeof(float)) ? NULL : "is truncated";
}

const char *ckpt_reader_skip(ckpt_reader *r, uint64_t n) {
  float buf[4096];
  while (n > 0) {
    size_t k = n < 4096 ? (size_t)n : 4096;
    if (!get(r, buf, k * sizeof(float)))
      return "is truncated";
    n -= k;
  }
  return NULL;
}

const char *ckpt_reader_end(ckpt_reader *r) {
  uint32_t stored;
  if (fread(&stored, 1, 4, r->f) != 4 || stored != r->stored ||
      r->crc != stored)
    return "changed while it was being read";
  return NULL;
}

void ckpt_reader_close(ckpt_reader *r) {
  if (r == NULL)
    return;
  if (r->f)
    fclose(r->f);
  free(r->spec);
  free(r);
}
