/* source_live.c: the model from live fsps-servers through libfsps's public
 * API — the spec from Status, every layer's slices gathered at one common
 * version (read last layer first, the first a training step changes, and
 * read again at the newer version when a slice moved on), and a thread
 * that polls for newer versions and publishes each complete one. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fsps/fsps.h>

#include "mlp_spec.h"
#include "source_int.h"
#include "wire.h"

#define ATTEMPTS 50 /* reads of one snapshot before waiting for a poll */

struct source_live {
  serve_source_config cfg;
  serve_slot *slot;
  fsps_client *c;
  uint32_t S, widths[SERVE_MAX_WIDTHS], nw;
  uint32_t world; /* the servers' W and mode, which attaching checks */
  fsps_mode mode;
  uint64_t n[SERVE_MAX_WIDTHS];
  bool down; /* an outage was logged */
  bool started, stop;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

/* ---- connecting and learning the model ---- */

static int connect_client(source_live *lv, char *msg, size_t msglen) {
  const serve_source_config *cfg = &lv->cfg;
  fsps_options fo;
  char token[4097];
  fsps_options_init(&fo);
  fo.servers = cfg->servers;
  fo.world = lv->world ? lv->world : 1;
  fo.mode = lv->mode;
  fo.timeout_ms = cfg->timeout_ms;
  fo.retries = 2;
  fo.tls_ca = cfg->tls_ca;
  fo.tls_cert = cfg->tls_cert;
  fo.tls_key = cfg->tls_key;
  fo.tls_server_name = cfg->tls_server_name;
  int rc = fsps_token_load(cfg->token_file, token, sizeof token, msg, msglen);
  if (rc == FSPS_OK || rc == FSPS_NOT_FOUND) {
    fo.token = rc == FSPS_OK ? token : NULL;
    rc = fsps_connect(&fo, &lv->c, msg, msglen);
  }
  explicit_bzero(token, sizeof token);
  if (rc == FSPS_OK)
    lv->S = fsps_num_servers(lv->c);
  return rc;
}

/* same_cluster reconnects as a reader (rank 0, never pushing) of the
 * servers' W and mode when the client was made for others: attaching
 * checks them. */
static int same_cluster(source_live *lv, const fsps_status *st, char *msg,
                        size_t msglen) {
  const char *m = fsps_status_mode(st, 0);
  fsps_mode mode = strcmp(m, "asp") == 0   ? FSPS_ASP
                   : strcmp(m, "ssp") == 0 ? FSPS_SSP
                                           : FSPS_BSP;
  uint32_t W = fsps_status_num_workers(st, 0);
  if (W == (lv->world ? lv->world : 1) && mode == lv->mode)
    return FSPS_OK;
  lv->world = W;
  lv->mode = mode;
  fsps_close(lv->c);
  lv->c = NULL;
  return connect_client(lv, msg, msglen);
}

/* learn_spec reads the declared spec from server 0's Status, checks that
 * it is an MLP fsps-serve computes and attaches the client to it. */
static int learn_spec(source_live *lv, const fsps_status *st, char *msg,
                      size_t msglen) {
  size_t len;
  char err[1024] = "";
  const void *bytes = fsps_status_model_spec(st, 0, &len);
  if (bytes == NULL) {
    snprintf(msg, msglen, "%s has no model declared yet%s",
             fsps_status_address(st, 0),
             fsps_status_initialized(st, 0)
                 ? " (it is initialized but does not hand out its spec: an "
                   "fsps-server older than this fsps-serve)"
                 : "");
    return FSPS_UNAVAILABLE;
  }
  shard_spec *sp = wire_spec_unpack(bytes, len, err, sizeof err);
  int rc = sp ? serve_mlp_widths(sp, lv->widths, &lv->nw, err, sizeof err)
              : FSPS_CORRUPT;
  for (uint32_t l = 0; rc == FSPS_OK && l + 1 < lv->nw; l++)
    lv->n[l] = shard_spec_layer(sp, l)->n;
  shard_spec_destroy(sp);
  fsps_spec *fs = rc == FSPS_OK ? fsps_spec_decode(bytes, len, err, sizeof err)
                                : NULL;
  if (rc == FSPS_OK && fs == NULL)
    rc = FSPS_CORRUPT;
  if (rc == FSPS_OK && (rc = same_cluster(lv, st, msg, msglen)) != FSPS_OK) {
    fsps_spec_destroy(fs);
    return rc;
  }
  if (rc == FSPS_OK && (rc = fsps_attach(lv->c, fs, lv->cfg.timeout_ms)) != 0)
    snprintf(err, sizeof err, "%s", fsps_last_error(lv->c));
  fsps_spec_destroy(fs);
  if (rc != FSPS_OK)
    snprintf(msg, msglen, "%s: %s", lv->cfg.servers, err);
  return rc;
}

/* newest is the lowest version any non-empty slice of any layer is at. */
static uint64_t newest(const source_live *lv, const fsps_status *st) {
  uint64_t v = UINT64_MAX;
  for (uint32_t s = 0; s < lv->S; s++)
    for (uint32_t l = 0; l + 1 < lv->nw; l++) {
      uint64_t x = fsps_status_layer_version(st, s, l);
      if (fsps_status_layer_slice_count(st, s, l) > 0 && x < v)
        v = x;
    }
  return v == UINT64_MAX ? 0 : v;
}

/* look connects if need be and returns the servers' newest version. */
static int look(source_live *lv, uint64_t *version, char *msg, size_t msglen) {
  fsps_status *st = NULL;
  bool fresh = lv->c == NULL; /* a new client: learn the spec, attach */
  int rc = fresh ? connect_client(lv, msg, msglen) : FSPS_OK;
  if (rc == FSPS_OK && (rc = fsps_status_get(lv->c, &st)) != FSPS_OK)
    snprintf(msg, msglen, "%s", fsps_last_error(lv->c));
  if (rc == FSPS_OK && fresh)
    rc = learn_spec(lv, st, msg, msglen);
  if (rc != FSPS_OK && fresh && lv->c != NULL) {
    fsps_close(lv->c); /* attach again on the next look */
    lv->c = NULL;
  }
  if (rc == FSPS_OK)
    *version = newest(lv, st);
  fsps_status_free(st);
  return rc;
}

/* ---- one snapshot at one version ---- */

/* read_at gathers every slice at version >= v into snap, last layer
 * first; *seen gets the highest version a slice held (v when all were at
 * v). */
static int read_at(source_live *lv, serve_snapshot *snap, uint64_t v,
                   uint64_t *seen) {
  *seen = v;
  for (uint32_t l = lv->nw - 1; l-- > 0;)
    for (uint32_t s = 0; s < lv->S; s++) {
      uint64_t off, cnt, got;
      shard_slice(lv->n[l], lv->S, s, &off, &cnt);
      if (cnt == 0)
        continue;
      int rc = fsps_gather_range(lv->c, l, v, off, cnt, snap->params[l] + off,
                                 &got);
      if (rc != FSPS_OK)
        return rc;
      if (got > *seen)
        *seen = got;
    }
  return FSPS_OK;
}

/* take reads a complete snapshot at one version, v or newer. */
static int take(source_live *lv, uint64_t v, serve_snapshot **out, char *msg,
                size_t msglen) {
  serve_snapshot *snap = serve_snapshot_new(lv->widths, lv->nw, v);
  int rc = snap ? FSPS_ABORTED : FSPS_NOMEM;
  for (int i = 0; snap != NULL && i < ATTEMPTS && rc == FSPS_ABORTED; i++) {
    uint64_t seen;
    if ((rc = read_at(lv, snap, v, &seen)) == FSPS_OK && seen != v) {
      v = seen; /* a slice moved on while reading: all again, at it */
      rc = FSPS_ABORTED;
    }
  }
  if (rc == FSPS_OK) {
    snap->version = v;
    *out = snap;
    return FSPS_OK;
  }
  serve_snapshot_unref(snap);
  snprintf(msg, msglen, "%s%s",
           rc == FSPS_ABORTED ? "training moved on during every read of one "
                                "version; trying again at the next poll"
           : lv->c            ? fsps_last_error(lv->c)
                              : "out of memory",
           rc == FSPS_DEADLINE_EXCEEDED
               ? " (waiting for every layer to reach one version: training "
                 "that stopped half-way through a step leaves the layers at "
                 "two versions, and no snapshot of one to take)"
               : "");
  return rc;
}

/* refresh publishes the servers' newest version when it is not the one
 * served. */
static int refresh(source_live *lv, char *msg, size_t msglen) {
  uint64_t v;
  serve_snapshot *snap = NULL;
  int rc = look(lv, &v, msg, msglen);
  if (rc != FSPS_OK || v == serve_slot_version(lv->slot))
    return rc;
  if ((rc = take(lv, v, &snap, msg, msglen)) == FSPS_OK)
    serve_slot_publish(lv->slot, snap);
  return rc;
}

/* ---- following ---- */

static bool wait_poll(source_live *lv) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)lv->cfg.poll_ms * 1000000u;
  ts.tv_sec += (time_t)(ns / 1000000000u);
  ts.tv_nsec = (long)(ns % 1000000000u);
  pthread_mutex_lock(&lv->mu);
  while (!lv->stop &&
         pthread_cond_timedwait(&lv->cv, &lv->mu, &ts) == 0)
    ;
  bool stop = lv->stop;
  pthread_mutex_unlock(&lv->mu);
  return !stop;
}

/* note logs an outage once, and the servers' return. */
static void note(source_live *lv, int rc, const char *msg) {
  const char *tool = lv->cfg.tool ? lv->cfg.tool : "fsps-serve";
  uint64_t v = serve_slot_version(lv->slot);
  char now[64] = "nothing served yet (not ready)";
  if (v != UINT64_MAX)
    snprintf(now, sizeof now, "still serving version %" PRIu64, v);
  if (rc != FSPS_OK && rc != FSPS_ABORTED && !lv->down)
    fprintf(stderr, "%s: %s (%s): %s, retrying every %" PRIu32 " ms\n",
            tool,
            rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED
                ? "the servers do not answer"
                : "cannot load the model from the servers",
            msg, now, lv->cfg.poll_ms);
  else if (rc == FSPS_OK && lv->down)
    fprintf(stderr, "%s: the servers answer again; serving version %" PRIu64
            "\n", tool, serve_slot_version(lv->slot));
  if (rc != FSPS_ABORTED)
    lv->down = rc != FSPS_OK;
  if (rc != FSPS_OK && rc != FSPS_ABORTED && lv->c) {
    fsps_close(lv->c); /* reconnect afresh: a server may have restarted */
    lv->c = NULL;
  }
}

static void *follow(void *arg) {
  source_live *lv = arg;
  char msg[1024];
  bool now = serve_slot_version(lv->slot) == UINT64_MAX; /* background */
  while (now || wait_poll(lv)) {
    int rc = refresh(lv, msg, sizeof msg);
    note(lv, rc, msg);
    now = false;
  }
  return NULL;
}

/* first loads the first snapshot, retrying what may pass (servers not up,
 * no model yet) until the timeout. */
static int first(source_live *lv, char *msg, size_t msglen) {
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    int rc = refresh(lv, msg, msglen);
    if (rc == FSPS_OK || (rc != FSPS_UNAVAILABLE && rc != FSPS_ABORTED &&
                          rc != FSPS_DEADLINE_EXCEEDED))
      return rc;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double ms = (double)(t.tv_sec - t0.tv_sec) * 1e3 +
                (double)(t.tv_nsec - t0.tv_nsec) * 1e-6;
    if (ms > (double)lv->cfg.timeout_ms)
      return rc;
    if (lv->c && rc != FSPS_ABORTED) {
      fsps_close(lv->c);
      lv->c = NULL;
    }
    nanosleep(&(struct timespec){0, 100 * 1000000}, NULL);
  }
}

source_live *source_live_start(const serve_source_config *cfg,
                               serve_slot *slot, char *msg, size_t msglen) {
  source_live *lv = calloc(1, sizeof *lv);
  if (lv == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  lv->cfg = *cfg;
  if (lv->cfg.timeout_ms <= 0)
    lv->cfg.timeout_ms = 120000;
  if (lv->cfg.poll_ms == 0)
    lv->cfg.poll_ms = 1000;
  lv->slot = slot;
  pthread_mutex_init(&lv->mu, NULL);
  pthread_cond_init(&lv->cv, NULL);
  if (!cfg->background && first(lv, msg, msglen) != FSPS_OK) {
    source_live_stop(lv);
    return NULL;
  }
  if ((cfg->follow || cfg->background) &&
      pthread_create(&lv->th, NULL, follow, lv) == 0)
    lv->started = true;
  if (cfg->background && !lv->started) {
    snprintf(msg, msglen, "cannot start the thread that loads the model");
    source_live_stop(lv);
    return NULL;
  }
  return lv;
}

void source_live_stop(source_live *lv) {
  if (lv == NULL)
    return;
  pthread_mutex_lock(&lv->mu);
  lv->stop = true;
  pthread_cond_broadcast(&lv->cv);
  pthread_mutex_unlock(&lv->mu);
  if (lv->started)
    pthread_join(lv->th, NULL);
  fsps_close(lv->c);
  pthread_mutex_destroy(&lv->mu);
  pthread_cond_destroy(&lv->cv);
  free(lv);
}
