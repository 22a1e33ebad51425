/* rollback.c: the Rollback method — bring every layer back to a version
 * from this server's checkpoint of it (or the initial values for version
 * 0, values a client gave included), so that after a server restarted from an
 * older checkpoint all servers are at the same step again. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "log.h"
#include "service.h"

/* versions finds the lowest and highest version over non-empty layers. */
static void versions(store *st, uint64_t *lo, uint64_t *hi, uint32_t *low) {
  *lo = UINT64_MAX;
  *hi = 0;
  *low = 0;
  for (uint32_t l = 0; l < store_num_layers(st); l++) {
    store_layer_info in;
    store_info(store_layer_get(st, l), &in);
    if (in.count == 0)
      continue;
    if (in.version < *lo)
      *low = l;
    *lo = in.version < *lo ? in.version : *lo;
    *hi = in.version > *hi ? in.version : *hi;
  }
}

static int refuse(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int refuse(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* check refuses what cannot be rolled back; FSPS_OK otherwise. */
static int check(service *svc, const Fsps__V1__RollbackRequest *req, char *err,
                 size_t errlen) {
  store *st = svc->st;
  uint64_t lo, hi;
  uint32_t low;
  if (!store_ready(st))
    return refuse(err, errlen, FSPS_FAILED_PRECONDITION,
                  "no model is declared on this server yet (Init)");
  if (req->spec_hash != store_hash(st))
    return refuse(err, errlen, FSPS_FAILED_PRECONDITION,
                  "rollback for model %016" PRIx64 ", but this server holds "
                  "model %016" PRIx64,
                  req->spec_hash, store_hash(st));
  if (store_config(st)->mode == MODE_ASP)
    return refuse(err, errlen, FSPS_FAILED_PRECONDITION,
                  "rollback needs --mode bsp or ssp");
  versions(st, &lo, &hi, &low);
  if (lo != UINT64_MAX && lo < req->version)
    return refuse(err, errlen, FSPS_FAILED_PRECONDITION,
                  "layer %u is at version %" PRIu64 ", behind version "
                  "%" PRIu64 ": a rollback cannot go forward",
                  low, lo, req->version);
  return FSPS_OK;
}

/* initial_held checks, before any layer changes, that every layer past
 * version 0 can go back to its initial values: a layer whose values a
 * client gave cannot when this server holds no copy of them. */
static int initial_held(store *st, char *err, size_t errlen) {
  for (uint32_t l = 0; l < store_num_layers(st); l++) {
    store_layer *L = store_layer_get(st, l);
    store_layer_info in;
    store_info(L, &in);
    if (in.count && in.version > 0 && !store_initial_held(L))
      return refuse(err, errlen, FSPS_FAILED_PRECONDITION,
                    "layer %u '%s' took its values from a client and this "
                    "server holds no copy of them (it was restored from a "
                    "checkpoint of a later version): it cannot go back to "
                    "version 0 without a checkpoint of version 0",
                    l, in.name);
  }
  return FSPS_OK;
}

/* to_initial rolls every layer past version 0 back to its initial values
 * (the values given by a client, for a client layer). */
static uint32_t to_initial(store *st) {
  uint32_t n = 0;
  for (uint32_t l = 0; l < store_num_layers(st); l++) {
    store_layer *L = store_layer_get(st, l);
    store_layer_info in;
    store_info(L, &in);
    if (in.count && in.version > 0 && store_rollback_layer(L, NULL, 0) == 0)
      n++;
  }
  return n;
}

/* enter_epoch ends a rollback: the server takes epoch `to`, and on every
 * layer what the old epoch left pending (pushes, parked pulls) is dropped,
 * so that every worker starts the new timeline from the same state. */
static void enter_epoch(store *st, uint64_t to) {
  store_set_epoch(st, to);
  for (uint32_t l = 0; l < store_num_layers(st); l++)
    store_new_epoch(store_layer_get(st, l));
}

/* roll performs the rollback; FSPS_OK with *restored and src set. */
static int roll(service *svc, uint64_t version, uint32_t *restored, char *src,
                size_t srclen, char *err, size_t errlen) {
  uint64_t lo, hi;
  uint32_t low;
  versions(svc->st, &lo, &hi, &low);
  *restored = 0;
  snprintf(src, srclen, "nothing to do: every layer is at version %" PRIu64,
           version);
  if (lo == UINT64_MAX || hi == version)
    return FSPS_OK;
  int rc = FSPS_NOT_FOUND;
  if (svc->ck != NULL)
    rc = ckpt_rollback(svc->ck, version, restored, src, srclen, err, errlen);
  else
    snprintf(err, errlen, "this server has no --checkpoint-dir");
  if (rc == FSPS_NOT_FOUND && version == 0 &&
      (rc = initial_held(svc->st, err, errlen)) == FSPS_OK) {
    *restored = to_initial(svc->st);
    snprintf(src, srclen, "initial values");
  }
  return rc == FSPS_NOT_FOUND ? FSPS_FAILED_PRECONDITION : rc;
}

/* perform does the rollback req asks for, one at a time; FSPS_OK with r
 * and src filled, or an error with err. */
static int perform(service *svc, const Fsps__V1__RollbackRequest *req,
                   Fsps__V1__RollbackReply *r, char *src, size_t srclen,
                   char *err, size_t errlen) {
  static pthread_mutex_t one_at_a_time = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&one_at_a_time);
  uint64_t was = store_epoch(svc->st);
  int rc = check(svc, req, err, errlen);
  bool done = rc == FSPS_OK && req->epoch != 0 && req->epoch == was;
  if (done) /* another worker made this very rollback: nothing to do */
    snprintf(src, srclen, "already done: the server is in epoch %016" PRIx64,
             was);
  bool moves = rc == FSPS_OK && !done && req->epoch != 0;
  if (moves) /* refuse every pull and push until the epoch is the new one */
    store_set_epoch(svc->st, STORE_EPOCH_CHANGING);
  if (rc == FSPS_OK && !done)
    rc = roll(svc, req->version, &r->layers_restored, src, srclen, err, errlen);
  /* A rollback that failed half-way leaves the server refusing pulls and
   * pushes until one succeeds: its layers are of two timelines. */
  if (moves && rc == FSPS_OK)
    enter_epoch(svc->st, req->epoch);
  else if (moves)
    store_set_epoch(svc->st, rc == FSPS_DATA_LOSS ? STORE_EPOCH_CHANGING : was);
  pthread_mutex_unlock(&one_at_a_time);
  return rc;
}

/* run performs a Rollback and answers it; on the checkpoint thread when
 * the server has one (it reads checkpoint files). */
static void run(service *svc, rpc_call *call, void *arg) {
  Fsps__V1__RollbackRequest *req = arg;
  if (call == NULL) { /* refused before it ran */
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return;
  }
  char err[1600], src[1400];
  Fsps__V1__RollbackReply r = FSPS__V1__ROLLBACK_REPLY__INIT;
  int rc = perform(svc, req, &r, src, sizeof src, err, sizeof err);
  if (rc == FSPS_OK && r.layers_restored)
    metrics_add(SM(svc->m, rollbacks), 1);
  if (rc == FSPS_OK && r.layers_restored)
    LOGW("rolled back %u layers to version %" PRIu64 " from %s",
         r.layers_restored, req->version, src);
  uint64_t version = req->version;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  if (rc != FSPS_OK) {
    LOGE("rollback to version %" PRIu64 " failed: %s", version, err);
    rpc_call_finish(call, NULL, rc, err);
    return;
  }
  r.source = src;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

void server_rollback_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  ProtobufCMessage *m;
  rpc_status st;
  if (rpc_msg_unpack(msg, &fsps__v1__rollback_request__descriptor, &m, &st)) {
    server_service_reject(svc, call, st.code, st.msg);
    return;
  }
  if (svc->ck != NULL)
    server_service_later(svc, call, run, m);
  else /* no files: only version 0, the initial values, in memory */
    run(svc, call, m);
}
