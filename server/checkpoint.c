/* checkpoint.c: writes and restores one server's checkpoint files, from
 * and into its store; the file format itself is ckpt_file.c's (written
 * under a temporary name, fsynced, renamed and its folder fsynced, so a
 * crash mid-write leaves the previous checkpoint intact). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "ckpt_file.h"
#include "log.h"
#include "service.h"

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
  uint64_t rollbacks;      /* how many: a copy taken before one is void */
  uint32_t reported;
  uint64_t seen[SHARD_MAX_LAYERS]; /* per layer: last version reported */
  uint64_t have[CKPT_LIST_MAX];   /* this server's files' versions, newest */
  uint32_t nhave;                 /* first (ckpt_versions) */
  struct task *tasks, *last;      /* for the thread, oldest first */
  bool closing, busy;             /* no more tasks; one is running */
  pthread_cond_t idle;            /* no task queued or running */
};

/* Work a call hands to the checkpoint thread (ckpt_run_later). */
typedef struct task {
  ckpt_task_fn fn;
  void *arg;
  struct task *next;
} task;

/* ---- writing ---- */

/* put_layer writes layer l from its step-boundary copy at `tag`, or, when
 * snapshot is false, as it is now (copied through buf). */
static int put_layer(ckpt_writer *w, ckpt *k, uint32_t l, uint64_t tag,
                     bool snapshot, float *buf, uint64_t *min_version) {
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
  ckpt_writer_layer(w, &(ckpt_layer_head){l, in.count, version, floats});
  ckpt_writer_floats(w, data, floats);
  if (in.count && snapshot)
    store_snapshot_release(L);
  if (in.count && version < *min_version)
    *min_version = version;
  return FSPS_OK;
}

static size_t max_layer_floats(ckpt *k) {
  size_t most = 1;
  for (uint32_t l = 0; l < store_num_layers(k->st); l++) {
    size_t f = store_layer_floats(store_layer_get(k->st, l));
    most = f > most ? f : most;
  }
  return most;
}

static int put_layers(ckpt_writer *w, ckpt *k, uint64_t tag, bool snapshot,
                      uint64_t *min_version) {
  float *buf = snapshot ? NULL : malloc(max_layer_floats(k) * sizeof(float));
  if (!snapshot && buf == NULL)
    return FSPS_NOMEM;
  int rc = FSPS_OK;
  for (uint32_t l = 0; rc == FSPS_OK && l < store_num_layers(k->st); l++)
    rc = put_layer(w, k, l, tag, snapshot, buf, min_version);
  free(buf);
  return rc;
}

/* header_of describes this server's file at `tag`. */
static ckpt_header header_of(ckpt *k, uint64_t tag) {
  size_t speclen;
  const void *spec = store_blob(k->st, &speclen);
  return (ckpt_header){.S = k->cfg.num_servers,
                       .s = k->cfg.index,
                       .W = k->cfg.workers,
                       .nlayers = store_num_layers(k->st),
                       .hash = store_hash(k->st),
                       .tag = tag,
                       .spec = spec,
                       .speclen = (uint32_t)speclen};
}

static void prune(ckpt *k);

/* write_file writes a checkpoint tagged `tag` (k->mu held). */
static int write_one(ckpt *k, uint64_t tag, bool snapshot, char *path,
                      size_t pathlen, uint64_t *bytes, uint64_t *min_version,
                      char *msg, size_t msglen) {
  ckpt_header h = header_of(k, tag);
  ckpt_file_name(path, pathlen, k->cfg.checkpoint_dir, h.s, h.S, tag);
  ckpt_writer *w = ckpt_writer_open(k->cfg.checkpoint_dir, &h, msg, msglen);
  if (w == NULL)
    return FSPS_IO;
  if (k->cfg.ckpt_delay_ms) { /* --inject-checkpoint-delay-ms: a slow disk */
    struct timespec ts = {k->cfg.ckpt_delay_ms / 1000,
                          (long)(k->cfg.ckpt_delay_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  *min_version = UINT64_MAX;
  int rc = put_layers(w, k, tag, snapshot, min_version);
  if (rc != FSPS_OK)
    snprintf(msg, msglen, "checkpoint at version %" PRIu64 " abandoned: %s",
             tag, fsps_strerror(rc));
  else if ((rc = ckpt_writer_commit(w, msg, msglen)) != FSPS_OK)
    snprintf(msg + strlen(msg), msglen - strlen(msg),
             " (the previous checkpoint is kept)");
  *bytes = ckpt_writer_bytes(w);
  ckpt_writer_destroy(w);
  if (rc != FSPS_OK)
    return rc;
  if (*min_version == UINT64_MAX)
    *min_version = 0;
  prune(k);
  return FSPS_OK;
}

/* write_file is write_file_timed, counted in the server's metrics. */
static int write_file(ckpt *k, uint64_t tag, bool snapshot, char *path,
                      size_t pathlen, uint64_t *bytes, uint64_t *min_version,
                      char *msg, size_t msglen) {
  double t0 = metrics_now_s();
  int rc = write_one(k, tag, snapshot, path, pathlen, bytes,
                            min_version, msg, msglen);
  server_metrics_checkpoint(store_metrics(k->st), rc == FSPS_OK,
                            metrics_now_s() - t0);
  return rc;
}

/* complete refuses a checkpoint of a model with a layer still awaiting
 * its values: the file would hold none for it, and a server restored from
 * it would take the placeholder zeros for them. Values, once there, stay,
 * so a model complete now is complete when written. */
static int complete(ckpt *k, char *msg, size_t msglen) {
  uint32_t first = 0, n = store_awaiting(k->st, &first);
  if (n == 0)
    return FSPS_OK;
  store_layer_info in;
  store_info(store_layer_get(k->st, first), &in);
  snprintf(msg, msglen,
           "layer %u '%s' (and %u more) awaits its values (init client): "
           "give them (SetValues) before checkpointing",
           first, in.name, n - 1);
  return FSPS_FAILED_PRECONDITION;
}

int ckpt_write_now(ckpt *k, char *path, size_t pathlen, uint64_t *bytes,
                   uint64_t *min_version, char *msg, size_t msglen) {
  if (!store_ready(k->st)) {
    snprintf(msg, msglen, "no model is declared on this server yet (Init)");
    return FSPS_FAILED_PRECONDITION;
  }
  int rc = complete(k, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  pthread_mutex_lock(&k->mu);
  uint64_t lowest = UINT64_MAX;
  for (uint32_t l = 0; l < store_num_layers(k->st); l++) {
    store_layer_info in;
    store_info(store_layer_get(k->st, l), &in);
    if (in.count && in.version < lowest)
      lowest = in.version;
  }
  rc = write_file(k, lowest == UINT64_MAX ? 0 : lowest, false, path, pathlen,
                  bytes, min_version, msg, msglen);
  pthread_mutex_unlock(&k->mu);
  return rc;
}

/* ---- listing and pruning ---- */

typedef struct {
  char name[300];
  uint32_t s, S;
  uint64_t version;
} entry;

static int by_version_desc(const void *a, const void *b) {
  const entry *x = a, *y = b;
  return x->version < y->version ? 1 : x->version > y->version ? -1 : 0;
}

/* list finds the checkpoint files (by name) in the folder, newest first. */
static int list(ckpt *k, entry *e, int max) {
  DIR *d = opendir(k->cfg.checkpoint_dir);
  if (d == NULL)
    return 0;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL && n < max) {
    if (strlen(de->d_name) >= sizeof e[n].name ||
        !ckpt_file_parse_name(de->d_name, &e[n].s, &e[n].S, &e[n].version))
      continue;
    snprintf(e[n].name, sizeof e[n].name, "%s", de->d_name);
    n++;
  }
  closedir(d);
  qsort(e, (size_t)n, sizeof *e, by_version_desc);
  return n;
}

/* mine tells whether a listed file is this server's. */
static bool mine(const ckpt *k, const entry *e) {
  return e->s == k->cfg.index && e->S == k->cfg.num_servers;
}

/* note_versions records the versions of this server's files in e[0..n)
 * (newest first) for ckpt_versions (k->mu held). */
static void note_versions(ckpt *k, const entry *e, int n) {
  pthread_mutex_lock(&k->hmu);
  k->nhave = 0;
  for (int i = 0; i < n && k->nhave < CKPT_LIST_MAX; i++)
    if (mine(k, &e[i]) &&
        (k->nhave == 0 || k->have[k->nhave - 1] != e[i].version))
      k->have[k->nhave++] = e[i].version;
  pthread_mutex_unlock(&k->hmu);
}

/* prune keeps the newest --keep files of this server (k->mu held). */
static void prune(ckpt *k) {
  static entry e[MAX_FILES];
  int n = list(k, e, MAX_FILES), kept = 0;
  char path[1400];
  for (int i = 0; i < n; i++) {
    if (!mine(k, &e[i]) || ++kept <= (int)k->cfg.keep)
      continue;
    snprintf(path, sizeof path, "%s/%.299s", k->cfg.checkpoint_dir, e[i].name);
    if (unlink(path) == 0)
      e[i].s = UINT32_MAX; /* gone: not listed below */
  }
  note_versions(k, e, n);
}

uint32_t ckpt_versions(ckpt *k, uint64_t *out, uint32_t max) {
  pthread_mutex_lock(&k->hmu);
  uint32_t n = k->nhave < max ? k->nhave : max;
  memcpy(out, k->have, n * sizeof *out);
  pthread_mutex_unlock(&k->hmu);
  return n;
}

/* ---- reading ---- */

/* declare rebuilds the model from the checkpoint's spec. */
static const char *declare(ckpt *k, const ckpt_header *h) {
  char err[512];
  bool created;
  shard_spec *spec = wire_spec_unpack(h->spec, h->speclen, err, sizeof err);
  if (spec == NULL)
    return "holds an unreadable model spec";
  if (shard_spec_hash(spec) != h->hash) {
    shard_spec_destroy(spec);
    return "holds a model spec that does not match its hash";
  }
  if (store_init(k->st, spec, h->spec, h->speclen, &created, err, sizeof err))
    return "holds a model this server cannot declare";
  return NULL;
}

/* read_head reads layer l's head into *lh and checks that it describes the
 * store's layer l (*L, *info): same index, same slice, and the floats this
 * server keeps for it (none when it holds no part of the layer). Loading
 * and rollback share it so both refuse a file for the same reasons. */
static const char *read_head(ckpt *k, ckpt_reader *r, uint32_t l,
                             store_layer **L, store_layer_info *info,
                             ckpt_layer_head *lh) {
  *L = store_layer_get(k->st, l);
  store_info(*L, info);
  const char *why = ckpt_reader_layer(r, lh);
  if (why != NULL)
    return why;
  size_t want = info->count ? store_layer_floats(*L) : 0;
  if (lh->index != l || lh->count != info->count || lh->floats != want)
    return "does not match its model's layers";
  return NULL;
}

/* load_layer reads layer l's head and floats (through buf) into the store. */
static const char *load_layer(ckpt *k, ckpt_reader *r, uint32_t l, float *buf) {
  store_layer *L;
  store_layer_info info;
  ckpt_layer_head lh;
  const char *why = read_head(k, r, l, &L, &info, &lh);
  if (why == NULL)
    why = ckpt_reader_floats(r, buf, lh.floats);
  if (why == NULL && info.count)
    store_restore_layer(L, buf, lh.version);
  return why;
}

static const char *load_layers(ckpt *k, ckpt_reader *r, const ckpt_header *h) {
  if (h->nlayers != store_num_layers(k->st))
    return "has the wrong number of layers";
  float *buf = malloc(max_layer_floats(k) * sizeof(float));
  const char *why = buf ? NULL : "cannot be loaded (out of memory)";
  for (uint32_t l = 0; why == NULL && l < h->nlayers; l++)
    why = load_layer(k, r, l, buf);
  free(buf);
  return why ? why : ckpt_reader_end(r);
}

/* try_file loads one file; NULL on success, else why it was refused. */
static const char *try_file(ckpt *k, const char *path, uint64_t *tag) {
  ckpt_header h;
  const char *why;
  ckpt_reader *r = ckpt_reader_open(path, &h, &why);
  if (r == NULL)
    return why;
  if (h.S != k->cfg.num_servers || h.s != k->cfg.index)
    why = "belongs to another server (other --index or --num-servers)";
  if (why == NULL)
    why = declare(k, &h);
  if (why == NULL)
    why = load_layers(k, r, &h);
  *tag = h.tag;
  ckpt_reader_close(r);
  return why;
}

int ckpt_restore(ckpt *k, char *msg, size_t msglen) {
  static entry e[MAX_FILES];
  int n = list(k, e, MAX_FILES);
  note_versions(k, e, n);
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

/* rollback_layer reads layer l of a file (through buf): when apply is
 * false it only checks that the layer is there at `version` (if this server
 * holds some of it); when true it brings the layer back to it if it is
 * past it, counting it in *restored. */
static const char *rollback_layer(ckpt *k, ckpt_reader *r, uint32_t l,
                                  uint64_t version, bool apply, float *buf,
                                  uint32_t *restored) {
  store_layer *L;
  store_layer_info info;
  ckpt_layer_head lh;
  const char *why = read_head(k, r, l, &L, &info, &lh);
  if (why == NULL && info.count && lh.version != version)
    why = "holds another version of a layer (not a step boundary)";
  if (why == NULL)
    why = ckpt_reader_floats(r, buf, lh.floats);
  if (why != NULL || !apply || !info.count || info.version <= version)
    return why;
  if (store_rollback_layer(L, buf, version) != FSPS_OK)
    return "cannot be loaded (out of memory)";
  (*restored)++;
  return NULL;
}

/* rollback_pass reads a whole file once (see rollback_layer). */
static const char *rollback_pass(ckpt *k, const char *path, uint64_t version,
                                 bool apply, float *buf, uint32_t *restored) {
  ckpt_header h;
  const char *why;
  ckpt_reader *r = ckpt_reader_open(path, &h, &why);
  if (r == NULL)
    return why;
  if (h.S != k->cfg.num_servers || h.s != k->cfg.index)
    why = "belongs to another server (other --index or --num-servers)";
  else if (h.hash != store_hash(k->st))
    why = "holds another model (spec hash differs)";
  else if (h.nlayers != store_num_layers(k->st))
    why = "has the wrong number of layers";
  for (uint32_t l = 0; why == NULL && l < h.nlayers; l++)
    why = rollback_layer(k, r, l, version, apply, buf, restored);
  if (why == NULL)
    why = ckpt_reader_end(r);
  ckpt_reader_close(r);
  return why;
}

/* rollback_file rolls the store back to `version` from one file: a first
 * pass checks every layer, so that a file that cannot serve changes
 * nothing. */
static const char *rollback_file(ckpt *k, const char *path, uint64_t version,
                                 uint32_t *restored) {
  float *buf = malloc(max_layer_floats(k) * sizeof(float) + 1);
  if (buf == NULL)
    return "cannot be loaded (out of memory)";
  const char *why = rollback_pass(k, path, version, false, buf, restored);
  if (why == NULL)
    why = rollback_pass(k, path, version, true, buf, restored);
  free(buf);
  return why;
}

/* forget_after removes this server's files past `version` (they describe
 * a timeline the rollback abandons) and resets the step-boundary writer.
 * k->mu held. */
static void forget_after(ckpt *k, uint64_t version) {
  static entry e[MAX_FILES];
  int n = list(k, e, MAX_FILES);
  char path[1400];
  for (int i = 0; i < n; i++) {
    if (e[i].version <= version || !mine(k, &e[i]))
      continue;
    snprintf(path, sizeof path, "%s/%.299s", k->cfg.checkpoint_dir, e[i].name);
    if (unlink(path) == 0) {
      LOGW("removed %s: rolled back to version %" PRIu64 " before it", path,
           version);
      e[i].s = UINT32_MAX; /* gone: not listed below */
    }
  }
  note_versions(k, e, n);
  pthread_mutex_lock(&k->hmu);
  k->rollbacks++;
  k->pending = version;
  k->ready = 0;
  k->reported = 0;
  memset(k->seen, 0, sizeof k->seen);
  pthread_mutex_unlock(&k->hmu);
}

int ckpt_rollback(ckpt *k, uint64_t version, uint32_t *restored, char *src,
                  size_t srclen, char *msg, size_t msglen) {
  *restored = 0;
  ckpt_file_name(src, srclen, k->cfg.checkpoint_dir, k->cfg.index,
                 k->cfg.num_servers, version);
  pthread_mutex_lock(&k->mu);
  int rc = FSPS_NOT_FOUND;
  const char *why = access(src, F_OK) == 0
                        ? rollback_file(k, src, version, restored)
                        : "is not there";
  if (why == NULL) {
    rc = FSPS_OK;
    forget_after(k, version);
  } else {
    rc = *restored ? FSPS_DATA_LOSS : FSPS_NOT_FOUND;
    snprintf(msg, msglen, "no checkpoint of version %" PRIu64 " to roll back "
             "to: %s %s", version, src, why);
  }
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

/* What the thread does next: a queued task (first), a step-boundary
 * checkpoint of `version` taken in rollback generation `gen`, or stop. */
typedef struct {
  task *t;
  uint64_t version, gen;
} job;

/* next_job waits for work; version 0 and no task when stopping (queued
 * tasks run first even then, so that their calls are answered). */
static job next_job(ckpt *k) {
  pthread_mutex_lock(&k->hmu);
  while (!k->stop && k->ready == 0 && k->tasks == NULL)
    pthread_cond_wait(&k->cv, &k->hmu);
  job j = {NULL, 0, k->rollbacks};
  if ((j.t = k->tasks) != NULL) {
    k->tasks = j.t->next;
    k->busy = true;
  } else if (!k->stop) {
    j.version = k->ready;
    k->ready = 0;
  }
  pthread_mutex_unlock(&k->hmu);
  return j;
}

/* task_done marks the running task over and wakes ckpt_drain if idle. */
static void task_done(ckpt *k, task *t) {
  free(t);
  pthread_mutex_lock(&k->hmu);
  k->busy = false;
  if (k->tasks == NULL)
    pthread_cond_broadcast(&k->idle);
  pthread_mutex_unlock(&k->hmu);
}

int ckpt_run_later(ckpt *k, ckpt_task_fn fn, void *arg) {
  task *t = malloc(sizeof *t);
  if (t == NULL)
    return FSPS_NOMEM;
  *t = (task){fn, arg, NULL};
  pthread_mutex_lock(&k->hmu);
  bool open = !k->closing && !k->stop;
  if (open) {
    *(k->tasks ? &k->last->next : &k->tasks) = t;
    k->last = t;
    pthread_cond_signal(&k->cv);
  }
  pthread_mutex_unlock(&k->hmu);
  if (!open)
    free(t);
  return open ? FSPS_OK : FSPS_UNAVAILABLE;
}

void ckpt_drain(ckpt *k) {
  pthread_mutex_lock(&k->hmu);
  k->closing = true;
  while (k->tasks != NULL || k->busy)
    pthread_cond_wait(&k->idle, &k->hmu);
  pthread_mutex_unlock(&k->hmu);
}

/* rolled_back_since tells whether a rollback came after generation gen:
 * the copies of the timeline it abandoned must not become a file. */
static bool rolled_back_since(ckpt *k, uint64_t gen) {
  pthread_mutex_lock(&k->hmu);
  bool since = k->rollbacks != gen;
  pthread_mutex_unlock(&k->hmu);
  return since;
}

/* write_boundary writes the step-boundary checkpoint of version v, taken
 * in rollback generation gen. */
static void write_boundary(ckpt *k, uint64_t v, uint64_t gen) {
  uint64_t bytes, lowest;
  char path[1200], msg[512];
  pthread_mutex_lock(&k->mu);
  int rc = FSPS_ABORTED;
  if (rolled_back_since(k, gen))
    snprintf(msg, sizeof msg, "checkpoint at version %" PRIu64 " dropped: "
             "the server was rolled back before it was written", v);
  else
    rc = write_file(k, v, true, path, sizeof path, &bytes, &lowest, msg,
                    sizeof msg);
  pthread_mutex_unlock(&k->mu);
  if (rc == FSPS_OK)
    LOGI("checkpoint at version %" PRIu64 ": %s (%" PRIu64 " bytes)", v, path,
         bytes);
  else if (rc == FSPS_ABORTED) /* a rollback or a fast layer: no fault */
    LOGW("%s", msg);
  else
    LOGE("%s", msg);
}

/* The checkpoint thread: every file the server writes or reads while it
 * serves is written or read here, never on a call thread. */
static void *writer(void *arg) {
  ckpt *k = arg;
  for (;;) {
    job j = next_job(k);
    if (j.t != NULL) {
      j.t->fn(j.t->arg);
      task_done(k, j.t);
    } else if (j.version != 0) {
      write_boundary(k, j.version, j.gen);
    } else {
      return NULL;
    }
  }
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
  pthread_cond_init(&k->idle, NULL);
  int err = pthread_create(&k->thread, NULL, writer, k);
  if (err != 0) { /* without it no checkpoint could be written */
    snprintf(msg, msglen, "cannot start the checkpoint thread: %s",
             strerror(err));
    ckpt_destroy(k);
    return NULL;
  }
  k->running = true;
  if (cfg->checkpoint_every)
    store_set_snapshots(st, cfg->checkpoint_every, on_snapshot, k);
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
  pthread_cond_destroy(&k->idle);
  free(k);
}
