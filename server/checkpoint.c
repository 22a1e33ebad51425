/* checkpoint.c: writes and restores one server's checkpoint files.
 *
 * Layout (little-endian): "FSPSCKP1", u32 format, u32 S, u32 s, u32 W,
 * u64 spec hash, u64 version tag, u32 layers, u32 spec length, the spec as
 * the client encoded it (ModelSpec), then per layer u32 index, u64 slice
 * count, u64 version, u64 floats and the floats (parameters, then optimizer
 * state), and last a CRC32C of everything before it. A file is written
 * under a temporary name, fsynced, renamed and its folder fsynced, so a
 * crash mid-write leaves the previous checkpoint intact. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "log.h"
#include "service.h"

#define MAGIC "FSPSCKP1"
#define FORMAT 1u
#define MAX_FILES 1024

/* Lock order: a layer's lock may be held while taking hmu (the store's
 * hook runs under it), never the other way; mu (one file at a time) is
 * taken before layer locks and never with hmu. */
struct ckpt {
  store *st;
  server_config cfg;
  pthread_mutex_t mu;
  pthread_mutex_t hmu; /* guards what follows */
  pthread_cond_t cv;
  pthread_t thread;
  bool running, stop;
  uint64_t pending, ready; /* step-boundary version being collected */
  uint32_t reported;
  uint64_t seen[SHARD_MAX_LAYERS]; /* per layer: last version reported */
};

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

/* ---- writing ---- */

typedef struct {
  FILE *f;
  uint32_t crc;
  uint64_t bytes;
  bool failed;
} out;

static void put(out *o, const void *p, size_t n) {
  if (o->failed || n == 0)
    return;
  o->crc = crc32c(o->crc, p, n);
  o->bytes += n;
  o->failed = fwrite(p, 1, n, o->f) != n;
}

static void put32(out *o, uint32_t v) {
  put(o, &v, 4);
}

static void put64(out *o, uint64_t v) {
  put(o, &v, 8);
}

static void put_header(out *o, ckpt *k, uint64_t tag) {
  size_t bloblen;
  const void *blob = store_blob(k->st, &bloblen);
  put(o, MAGIC, 8);
  put32(o, FORMAT);
  put32(o, k->cfg.num_servers);
  put32(o, k->cfg.index);
  put32(o, k->cfg.workers);
  put64(o, store_hash(k->st));
  put64(o, tag);
  put32(o, store_num_layers(k->st));
  put32(o, (uint32_t)bloblen);
  put(o, blob, bloblen);
}

/* put_layer writes layer l from its step-boundary copy at `tag`, or, when
 * snapshot is false, as it is now (copied through buf). */
static int put_layer(out *o, ckpt *k, uint32_t l, uint64_t tag, bool snapshot,
                     float *buf, uint64_t *min_version) {
  store_layer *L = store_layer_get(k->st, l);
  store_layer_info in;
  store_info(L, &in);
  size_t floats = in.count ? store_layer_floats(L) : 0;
  const float *data = buf;
  uint64_t version = in.version;
  if (in.count && snapshot) {
    if ((data = store_snapshot_hold(L, tag)) == NULL)
      return FSPS_ABORTED; /* this layer moved on before it was copied */
    version = tag;
  } else if (in.count) {
    version = store_copy_now(L, buf);
  }
  put32(o, l);
  put64(o, in.count);
  put64(o, version);
  put64(o, floats);
  put(o, data, floats * sizeof(float));
  if (in.count && snapshot)
    store_snapshot_release(L);
  if (in.count && version < *min_version)
    *min_version = version;
  return FSPS_OK;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* finish flushes, fsyncs and renames tmp to path; false on any failure. */
static bool finish(out *o, const char *tmp, const char *path, const char *dir) {
  uint32_t crc = o->crc;
  put(o, &crc, 4);
  bool ok = !o->failed && fflush(o->f) == 0 && fsync(fileno(o->f)) == 0;
  ok = fclose(o->f) == 0 && ok;
  ok = ok && rename(tmp, path) == 0 && fsync_dir(dir) == 0;
  if (!ok)
    unlink(tmp);
  return ok;
}

static size_t max_layer_floats(ckpt *k) {
  size_t most = 1;
  for (uint32_t l = 0; l < store_num_layers(k->st); l++) {
    size_t f = store_layer_floats(store_layer_get(k->st, l));
    most = f > most ? f : most;
  }
  return most;
}

static int put_layers(out *o, ckpt *k, uint64_t tag, bool snapshot,
                      uint64_t *min_version) {
  float *buf = snapshot ? NULL : malloc(max_layer_floats(k) * sizeof(float));
  if (!snapshot && buf == NULL)
    return FSPS_NOMEM;
  int rc = FSPS_OK;
  for (uint32_t l = 0; rc == FSPS_OK && l < store_num_layers(k->st); l++)
    rc = put_layer(o, k, l, tag, snapshot, buf, min_version);
  free(buf);
  return rc;
}

static void prune(ckpt *k);

/* write_file writes a checkpoint tagged `tag` (k->mu held). */
static int write_file(ckpt *k, uint64_t tag, bool snapshot, char *path,
                      size_t pathlen, uint64_t *bytes, uint64_t *min_version,
                      char *msg, size_t msglen) {
  char tmp[1200];
  snprintf(path, pathlen, "%s/ckpt-s%uof%u-v%020" PRIu64 ".fsps",
           k->cfg.checkpoint_dir, k->cfg.index, k->cfg.num_servers, tag);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  out o = {.f = fopen(tmp, "wb")};
  if (o.f == NULL) {
    snprintf(msg, msglen, "cannot create %s: %s", tmp, strerror(errno));
    return FSPS_IO;
  }
  *min_version = UINT64_MAX;
  put_header(&o, k, tag);
  int rc = put_layers(&o, k, tag, snapshot, min_version);
  if (rc == FSPS_OK && !finish(&o, tmp, path, k->cfg.checkpoint_dir)) {
    snprintf(msg, msglen,
             "cannot write %s: %s (the previous checkpoint is "
             "kept)",
             path, strerror(errno ? errno : EIO));
    return FSPS_IO;
  }
  if (rc != FSPS_OK) {
    fclose(o.f);
    unlink(tmp);
    snprintf(msg, msglen, "checkpoint at version %" PRIu64 " abandoned: %s",
             tag, fsps_strerror(rc));
    return rc;
  }
  *bytes = o.bytes;
  if (*min_version == UINT64_MAX)
    *min_version = 0;
  prune(k);
  return FSPS_OK;
}

int ckpt_write_now(ckpt *k, char *path, size_t pathlen, uint64_t *bytes,
                   uint64_t *min_version, char *msg, size_t msglen) {
  if (!store_ready(k->st)) {
    snprintf(msg, msglen, "no model is declared on this server yet (Init)");
    return FSPS_FAILED_PRECONDITION;
  }
  pthread_mutex_lock(&k->mu);
  uint64_t lowest = UINT64_MAX;
  for (uint32_t l = 0; l < store_num_layers(k->st); l++) {
    store_layer_info in;
    store_info(store_layer_get(k->st, l), &in);
    if (in.count && in.version < lowest)
      lowest = in.version;
  }
  int rc = write_file(k, lowest == UINT64_MAX ? 0 : lowest, false, path,
                      pathlen, bytes, min_version, msg, msglen);
  pthread_mutex_unlock(&k->mu);
  return rc;
}

/* ---- listing and pruning ---- */

typedef struct {
  char name[300];
  uint64_t version;
} entry;

static int by_version_desc(const void *a, const void *b) {
  const entry *x = a, *y = b;
  return x->version < y->version ? 1 : x->version > y->version ? -1 : 0;
}

/* list finds this server's checkpoint files (by name), newest first. */
static int list(ckpt *k, entry *e, int max) {
  DIR *d = opendir(k->cfg.checkpoint_dir);
  if (d == NULL)
    return 0;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL && n < max) {
    unsigned s, S;
    unsigned long long v;
    int used = 0;
    if (sscanf(de->d_name, "ckpt-s%uof%u-v%llu.fsps%n", &s, &S, &v, &used) !=
            3 ||
        de->d_name[used] != '\0')
      continue;
    snprintf(e[n].name, sizeof e[n].name, "%s", de->d_name);
    e[n++].version = v;
  }
  closedir(d);
  qsort(e, (size_t)n, sizeof *e, by_version_desc);
  return n;
}

/* prune keeps the newest --keep files of this server (k->mu held). */
static void prune(ckpt *k) {
  static entry e[MAX_FILES];
  int n = list(k, e, MAX_FILES), kept = 0;
  char mine[64], path[1400];
  snprintf(mine, sizeof mine, "ckpt-s%uof%u-", k->cfg.index,
           k->cfg.num_servers);
  for (int i = 0; i < n; i++) {
    if (strncmp(e[i].name, mine, strlen(mine)) != 0 ||
        ++kept <= (int)k->cfg.keep)
      continue;
    snprintf(path, sizeof path, "%s/%.299s", k->cfg.checkpoint_dir, e[i].name);
    unlink(path);
  }
}

/* ---- reading ---- */

typedef struct {
  FILE *f;
  uint32_t crc;
  bool short_read;
} in;

static bool get(in *r, void *p, size_t n) {
  if (n && fread(p, 1, n, r->f) != n) {
    r->short_read = true;
    return false;
  }
  r->crc = crc32c(r->crc, p, n);
  return true;
}

static uint32_t get32(in *r) {
  uint32_t v = 0;
  get(r, &v, 4);
  return v;
}

static uint64_t get64(in *r) {
  uint64_t v = 0;
  get(r, &v, 8);
  return v;
}

/* expected_size walks the file's headers (without reading payloads) and
 * returns the size they describe, or 0 if the headers themselves are cut. */
static uint64_t expected_size(FILE *f) {
  uint32_t nlayers, bloblen;
  uint64_t pos = 8 + 4 * 4 + 8 + 8;
  if (fseek(f, (long)pos, SEEK_SET) != 0 || fread(&nlayers, 4, 1, f) != 1 ||
      fread(&bloblen, 4, 1, f) != 1)
    return 0;
  pos += 8 + bloblen;
  for (uint32_t l = 0; l < nlayers; l++) {
    uint64_t floats;
    if (fseek(f, (long)(pos + 4 + 8 + 8), SEEK_SET) != 0 ||
        fread(&floats, 8, 1, f) != 1 || floats > (1ull << 40))
      return 0;
    pos += 4 + 8 + 8 + 8 + floats * 4;
  }
  return pos + 4;
}

/* verify checks the file's length against its headers, then its CRC in one
 * streaming pass; NULL when sound, else why not. */
static const char *verify(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return "cannot be opened";
  struct stat sb;
  uint64_t want = expected_size(f);
  if (fstat(fileno(f), &sb) != 0 || want == 0 || (uint64_t)sb.st_size < want) {
    fclose(f);
    return "is truncated";
  }
  if ((uint64_t)sb.st_size > want) {
    fclose(f);
    return "has bytes past its end (corrupt)";
  }
  uint64_t left = want - 4;
  uint32_t crc = 0, stored = 0;
  static char buf[1 << 20];
  rewind(f);
  while (left > 0) {
    size_t n = left < sizeof buf ? (size_t)left : sizeof buf;
    if (fread(buf, 1, n, f) != n)
      break;
    crc = crc32c(crc, buf, n);
    left -= n;
  }
  bool ok = left == 0 && fread(&stored, 1, 4, f) == 4;
  fclose(f);
  if (!ok)
    return "is truncated";
  return crc == stored ? NULL : "fails its CRC32C check (corrupt)";
}

typedef struct {
  uint32_t format, S, s, W, nlayers, bloblen;
  uint64_t hash, tag;
} header;

static const char *read_header(in *r, header *h, void **blob) {
  char magic[8];
  if (!get(r, magic, 8) || memcmp(magic, MAGIC, 8) != 0)
    return "is not an fsps checkpoint (bad magic)";
  h->format = get32(r);
  h->S = get32(r);
  h->s = get32(r);
  h->W = get32(r);
  h->hash = get64(r);
  h->tag = get64(r);
  h->nlayers = get32(r);
  h->bloblen = get32(r);
  if (r->short_read || h->bloblen > (64u << 20))
    return "is truncated";
  if (h->format != FORMAT)
    return "has an unknown format version";
  *blob = malloc(h->bloblen ? h->bloblen : 1);
  if (*blob == NULL || !get(r, *blob, h->bloblen))
    return "is truncated";
  return NULL;
}

/* declare rebuilds the model from the checkpoint's spec. */
static const char *declare(ckpt *k, const header *h, const void *blob) {
  Fsps__V1__ModelSpec *m = fsps__v1__model_spec__unpack(NULL, h->bloblen, blob);
  if (m == NULL)
    return "holds an unreadable model spec";
  char err[512];
  bool created;
  shard_spec *spec = spec_from_proto(m, err, sizeof err);
  fsps__v1__model_spec__free_unpacked(m, NULL);
  if (spec == NULL || shard_spec_hash(spec) != h->hash) {
    shard_spec_destroy(spec);
    return "holds a model spec that does not match its hash";
  }
  if (store_init(k->st, spec, blob, h->bloblen, &created, err, sizeof err))
    return "holds a model this server cannot declare";
  return NULL;
}

static const char *load_layers(ckpt *k, in *r, const header *h) {
  if (h->nlayers != store_num_layers(k->st))
    return "has the wrong number of layers";
  float *buf = malloc(max_layer_floats(k) * sizeof(float));
  const char *why = buf ? NULL : "cannot be loaded (out of memory)";
  for (uint32_t l = 0; why == NULL && l < h->nlayers; l++) {
    store_layer *L = store_layer_get(k->st, l);
    store_layer_info info;
    store_info(L, &info);
    uint32_t idx = get32(r);
    uint64_t count = get64(r), version = get64(r), floats = get64(r);
    size_t want = info.count ? store_layer_floats(L) : 0;
    if (idx != l || count != info.count || floats != want)
      why = "does not match its model's layers";
    else if (!get(r, buf, floats * sizeof(float)))
      why = "is truncated";
    else if (info.count)
      store_restore_layer(L, buf, version);
  }
  free(buf);
  return why;
}

/* try_file loads one file; NULL on success, else why it was refused. */
static const char *try_file(ckpt *k, const char *path, uint64_t *tag) {
  const char *why = verify(path);
  if (why)
    return why;
  in r = {.f = fopen(path, "rb")};
  header h;
  void *blob = NULL;
  if (r.f == NULL)
    return "cannot be opened";
  why = read_header(&r, &h, &blob);
  if (why == NULL && (h.S != k->cfg.num_servers || h.s != k->cfg.index))
    why = "belongs to another server (other --index or --num-servers)";
  if (why == NULL)
    why = declare(k, &h, blob);
  if (why == NULL)
    why = load_layers(k, &r, &h);
  *tag = h.tag;
  free(blob);
  fclose(r.f);
  return why;
}

int ckpt_restore(ckpt *k, char *msg, size_t msglen) {
  static entry e[MAX_FILES];
  int n = list(k, e, MAX_FILES);
  for (int i = 0; i < n; i++) {
    char path[1400];
    uint64_t tag = 0;
    snprintf(path, sizeof path, "%s/%.299s", k->cfg.checkpoint_dir, e[i].name);
    const char *why = try_file(k, path, &tag);
    if (why == NULL) {
      snprintf(msg, msglen, "restored %s (version %" PRIu64 ")", path, tag);
      return FSPS_OK;
    }
    LOGW("refusing checkpoint %s: it %s", path, why);
    if (store_ready(k->st)) {
      snprintf(msg, msglen,
               "checkpoint %s %s after it was partly loaded: "
               "restart without it",
               path, why);
      return FSPS_DATA_LOSS;
    }
  }
  snprintf(msg, msglen, "no usable checkpoint in %s", k->cfg.checkpoint_dir);
  return FSPS_NOT_FOUND;
}

/* ---- rollback ---- */

/* rollback_pass reads the layers of a verified file: when apply is false
 * it only checks that every non-empty layer is there at `version`; when
 * true it brings each layer past `version` back to it. */
static const char *rollback_pass(ckpt *k, in *r, const header *h,
                                 uint64_t version, bool apply, float *buf,
                                 uint32_t *restored) {
  if (h->nlayers != store_num_layers(k->st))
    return "has the wrong number of layers";
  for (uint32_t l = 0; l < h->nlayers; l++) {
    store_layer *L = store_layer_get(k->st, l);
    store_layer_info info;
    store_info(L, &info);
    uint32_t idx = get32(r);
    uint64_t count = get64(r), v = get64(r), floats = get64(r);
    size_t want = info.count ? store_layer_floats(L) : 0;
    if (r->short_read || idx != l || count != info.count || floats != want)
      return "does not match its model's layers";
    if (info.count && v != version)
      return "holds another version of a layer (not a step boundary)";
    bool take = apply && info.count && info.version > version;
    if (!take) {
      if (fseek(r->f, (long)(floats * sizeof(float)), SEEK_CUR) != 0)
        return "is truncated";
      continue;
    }
    if (!get(r, buf, floats * sizeof(float)))
      return "is truncated";
    if (store_rollback_layer(L, buf, version) != FSPS_OK)
      return "cannot be loaded (out of memory)";
    (*restored)++;
  }
  return NULL;
}

/* rollback_file rolls the store back to `version` from one file. */
static const char *rollback_file(ckpt *k, const char *path, uint64_t version,
                                 uint32_t *restored) {
  const char *why = verify(path);
  if (why)
    return why;
  in r = {.f = fopen(path, "rb")};
  header h;
  void *blob = NULL;
  float *buf = malloc(max_layer_floats(k) * sizeof(float) + 1);
  if (r.f == NULL || buf == NULL)
    why = r.f ? "cannot be loaded (out of memory)" : "cannot be opened";
  if (why == NULL)
    why = read_header(&r, &h, &blob);
  if (why == NULL && (h.S != k->cfg.num_servers || h.s != k->cfg.index))
    why = "belongs to another server (other --index or --num-servers)";
  if (why == NULL && h.hash != store_hash(k->st))
    why = "holds another model (spec hash differs)";
  long start = r.f ? ftell(r.f) : 0;
  if (why == NULL)
    why = rollback_pass(k, &r, &h, version, false, buf, restored);
  if (why == NULL && fseek(r.f, start, SEEK_SET) != 0)
    why = "cannot be read";
  if (why == NULL)
    why = rollback_pass(k, &r, &h, version, true, buf, restored);
  free(buf);
  free(blob);
  if (r.f)
    fclose(r.f);
  return why;
}

/* forget_after removes this server's files past `version` (they describe
 * a timeline the rollback abandons) and resets the step-boundary writer.
 * k->mu held. */
static void forget_after(ckpt *k, uint64_t version) {
  static entry e[MAX_FILES];
  int n = list(k, e, MAX_FILES);
  char mine[64], path[1400];
  snprintf(mine, sizeof mine, "ckpt-s%uof%u-", k->cfg.index,
           k->cfg.num_servers);
  for (int i = 0; i < n; i++) {
    if (e[i].version <= version ||
        strncmp(e[i].name, mine, strlen(mine)) != 0)
      continue;
    snprintf(path, sizeof path, "%s/%.299s", k->cfg.checkpoint_dir, e[i].name);
    if (unlink(path) == 0)
      LOGW("removed %s: rolled back to version %" PRIu64 " before it", path,
           version);
  }
  pthread_mutex_lock(&k->hmu);
  k->pending = version;
  k->ready = 0;
  k->reported = 0;
  memset(k->seen, 0, sizeof k->seen);
  pthread_mutex_unlock(&k->hmu);
}

int ckpt_rollback(ckpt *k, uint64_t version, uint32_t *restored, char *src,
                  size_t srclen, char *msg, size_t msglen) {
  static entry e[MAX_FILES];
  char name[64];
  snprintf(name, sizeof name, "ckpt-s%uof%u-v%020" PRIu64 ".fsps",
           k->cfg.index, k->cfg.num_servers, version);
  *restored = 0;
  pthread_mutex_lock(&k->mu);
  int n = list(k, e, MAX_FILES), rc = FSPS_NOT_FOUND;
  snprintf(msg, msglen, "no checkpoint of version %" PRIu64 " in %s", version,
           k->cfg.checkpoint_dir);
  for (int i = 0; i < n && rc == FSPS_NOT_FOUND; i++) {
    if (strcmp(e[i].name, name) != 0)
      continue;
    snprintf(src, srclen, "%s/%s", k->cfg.checkpoint_dir, name);
    const char *why = rollback_file(k, src, version, restored);
    rc = why == NULL ? FSPS_OK : *restored ? FSPS_DATA_LOSS : FSPS_NOT_FOUND;
    if (why != NULL)
      snprintf(msg, msglen, "cannot roll back to checkpoint %s: it %s", src,
               why);
  }
  if (rc == FSPS_OK)
    forget_after(k, version);
  pthread_mutex_unlock(&k->mu);
  return rc;
}

/* ---- step-boundary checkpoints ---- */

/* on_snapshot hears that layer l copied itself at version v. */
static void on_snapshot(void *arg, uint32_t l, uint64_t v) {
  ckpt *k = arg;
  pthread_mutex_lock(&k->hmu);
  if (v > k->pending) {
    k->pending = v;
    k->reported = 0;
  }
  if (v == k->pending && k->seen[l] != v) {
    k->seen[l] = v;
    if (++k->reported == store_nonempty_layers(k->st)) {
      k->ready = v;
      pthread_cond_signal(&k->cv);
    }
  }
  pthread_mutex_unlock(&k->hmu);
}

/* next_ready waits for a complete step-boundary copy; 0 when stopping. */
static uint64_t next_ready(ckpt *k) {
  pthread_mutex_lock(&k->hmu);
  while (!k->stop && k->ready == 0)
    pthread_cond_wait(&k->cv, &k->hmu);
  uint64_t v = k->stop ? 0 : k->ready;
  k->ready = 0;
  pthread_mutex_unlock(&k->hmu);
  return v;
}

static void *writer(void *arg) {
  ckpt *k = arg;
  uint64_t v;
  while ((v = next_ready(k)) != 0) {
    uint64_t bytes, lowest;
    char path[1200], msg[512];
    pthread_mutex_lock(&k->mu);
    int rc = write_file(k, v, true, path, sizeof path, &bytes, &lowest, msg,
                        sizeof msg);
    pthread_mutex_unlock(&k->mu);
    if (rc == FSPS_OK)
      LOGI("checkpoint at version %" PRIu64 ": %s (%" PRIu64 " bytes)", v, path,
           bytes);
    else
      LOGE("%s", msg);
  }
  return NULL;
}

ckpt *ckpt_create(store *st, const server_config *cfg, char *msg,
                  size_t msglen) {
  if (mkdir(cfg->checkpoint_dir, 0755) != 0 && errno != EEXIST) {
    snprintf(msg, msglen, "cannot create --checkpoint-dir %s: %s",
             cfg->checkpoint_dir, strerror(errno));
    return NULL;
  }
  ckpt *k = calloc(1, sizeof *k);
  if (k == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  k->st = st;
  k->cfg = *cfg;
  pthread_mutex_init(&k->mu, NULL);
  pthread_mutex_init(&k->hmu, NULL);
  pthread_cond_init(&k->cv, NULL);
  if (cfg->checkpoint_every) {
    store_set_snapshots(st, cfg->checkpoint_every, on_snapshot, k);
    k->running = pthread_create(&k->thread, NULL, writer, k) == 0;
  }
  return k;
}

void ckpt_destroy(ckpt *k) {
  if (k == NULL)
    return;
  if (k->running) {
    pthread_mutex_lock(&k->hmu);
    k->stop = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->hmu);
    pthread_join(k->thread, NULL);
  }
  store_set_snapshots(k->st, 0, NULL, NULL);
  pthread_mutex_destroy(&k->mu);
  pthread_mutex_destroy(&k->hmu);
  pthread_cond_destroy(&k->cv);
  free(k);
}
