/* push.c: the Push method — a worker's gradient slice for one (layer,
 * step) arrives as chunks, is staged whole, and only then counted, so a
 * broken or bad stream changes nothing. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "fsps.pb-c.h"
#include "log.h"
#include "service.h"

typedef struct {
  store_push p;
  bool begun;
  uint32_t layer;
} push_state;

void server_push_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)msg;
  service *svc = ctx;
  atomic_fetch_add(&svc->pushes, 1);
  push_state *ps = calloc(1, sizeof *ps);
  if (ps == NULL) {
    server_service_reject(svc, call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  rpc_call_set_user(call, ps);
}

/* begin handles the first chunk's header: which layer, step, worker and
 * epoch. */
static int begin(service *svc, push_state *ps, const uint64_t *v, char *err,
                 size_t errlen) {
  if (!store_ready(svc->st)) {
    snprintf(err, errlen, "no model is declared on this server yet (Init)");
    return FSPS_FAILED_PRECONDITION;
  }
  if (v[WIRE_PUSH_LAYER] > UINT32_MAX || v[WIRE_PUSH_WORKER] > UINT32_MAX) {
    snprintf(err, errlen, "layer or worker number out of range");
    return FSPS_INVALID_ARGUMENT;
  }
  ps->layer = (uint32_t)v[WIRE_PUSH_LAYER];
  store_layer *L = store_layer_get(svc->st, ps->layer);
  if (L == NULL) {
    snprintf(err, errlen, "layer %u does not exist: the model has %u layers",
             ps->layer, store_num_layers(svc->st));
    return FSPS_NOT_FOUND;
  }
  ps->begun = true;
  return store_push_begin(L, v[WIRE_PUSH_STEP], (uint32_t)v[WIRE_PUSH_WORKER],
                          v[WIRE_PUSH_EPOCH], &ps->p, err, errlen);
}

/* same_push checks that a later chunk's header names the push the first
 * one began. */
static int same_push(const push_state *ps, const uint64_t *v, char *err,
                     size_t errlen) {
  if (v[WIRE_PUSH_LAYER] == ps->layer && v[WIRE_PUSH_STEP] == ps->p.step &&
      v[WIRE_PUSH_WORKER] == ps->p.worker && v[WIRE_PUSH_EPOCH] == ps->p.epoch)
    return FSPS_OK;
  snprintf(err, errlen,
           "chunks of one push must share layer, step, worker and epoch "
           "(got %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%016" PRIx64
           " after %u/%" PRIu64 "/%u/%016" PRIx64 ")",
           v[WIRE_PUSH_LAYER], v[WIRE_PUSH_STEP], v[WIRE_PUSH_WORKER],
           v[WIRE_PUSH_EPOCH], ps->layer, ps->p.step, ps->p.worker,
           ps->p.epoch);
  return FSPS_INVALID_ARGUMENT;
}

/* scan_piece notes whether a piece of a chunk, just copied and still in
 * cache, holds NaN/Inf. */
static void scan_piece(void *arg, void *piece, size_t len) {
  bool *nonfinite = arg;
  if (store_any_nonfinite(piece, len / sizeof(float)))
    *nonfinite = true;
}

/* chunk checks one message and copies its payload into the staging
 * buffer: the one copy a receive makes. */
static int chunk(service *svc, push_state *ps, rpc_msg *msg, char *err,
                 size_t errlen) {
  rpc_tensor_hdr h;
  size_t bytes;
  rpc_status st;
  if (rpc_msg_tensor(msg, &h, &bytes, &st) != FSPS_OK) {
    snprintf(err, errlen, "%s", st.msg);
    return st.code;
  }
  if (bytes % sizeof(float) != 0) {
    snprintf(err, errlen, "payload of %zu bytes is not whole float32s", bytes);
    return FSPS_INVALID_ARGUMENT;
  }
  int rc = ps->begun ? FSPS_OK : begin(svc, ps, h.v, err, errlen);
  if (rc == FSPS_OK)
    rc = same_push(ps, h.v, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  uint64_t count = bytes / sizeof(float);
  float *dst =
      store_push_chunk(&ps->p, h.v[WIRE_PUSH_OFFSET], count, err, errlen);
  if (dst == NULL)
    return FSPS_INVALID_ARGUMENT;
  bool nonfinite = false;
  rpc_msg_copy_payload_each(msg, dst, scan_piece, &nonfinite);
  /* Only a chunk with NaN/Inf takes the full check that rejects or zeroes
   * them, naming the first. */
  return nonfinite ? store_push_check(&ps->p, dst, count, err, errlen)
                   : FSPS_OK;
}

/* lose_reply decides, for --inject-reply-drops, whether this reply is
 * "lost": a splitmix64 sequence, distinct per server, shared by threads. */
static bool lose_reply(const server_config *cfg) {
  static atomic_ullong counter;
  if (cfg->reply_drops <= 0.0)
    return false;
  uint64_t z =
      atomic_fetch_add(&counter, 1) + 0x9e3779b97f4a7c15ull * (cfg->index + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (double)(z >> 11) * 0x1.0p-53 < cfg->reply_drops;
}

typedef struct {
  service *svc;
  rpc_call *call;
} ack_ctx;

/* ack replies to the push from inside the store's commit, before the
 * optimizer runs. */
static void ack(void *arg, bool duplicate, bool applied, uint64_t version) {
  ack_ctx *a = arg;
  if (lose_reply(store_config(a->svc->st))) {
    rpc_call_finish(a->call, NULL, FSPS_UNAVAILABLE,
                    "reply dropped on purpose (--inject-reply-drops)");
    return;
  }
  Fsps__V1__PushReply reply = FSPS__V1__PUSH_REPLY__INIT;
  reply.version = version;
  reply.duplicate = duplicate;
  reply.applied = applied;
  rpc_call_finish(a->call, &reply.base, FSPS_OK, NULL);
}

static void finish(service *svc, rpc_call *call, push_state *ps) {
  char err[512];
  if (!ps->begun) {
    server_service_reject(svc, call, FSPS_INVALID_ARGUMENT,
                          "push stream carried no chunks");
    return;
  }
  uint64_t nonfinite = ps->p.nonfinite;
  ack_ctx a = {svc, call};
  int rc = store_push_commit(&ps->p, ack, &a, err, sizeof err);
  if (rc != FSPS_OK) {
    server_service_reject(svc, call, rc, err);
    return;
  }
  if (nonfinite)
    LOGW("zeroed %" PRIu64 " NaN/Inf gradient elements of layer %u from "
         "worker %u (--nan-policy skip)",
         nonfinite, ps->layer, ps->p.worker);
}

void server_push_message(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  push_state *ps = rpc_call_user(call);
  if (ps == NULL)
    return;
  if (msg == NULL) {
    finish(svc, call, ps);
    return;
  }
  char err[512];
  int rc = chunk(svc, ps, msg, err, sizeof err);
  if (rc != FSPS_OK)
    server_service_reject(svc, call, rc, err);
}

void server_push_done(rpc_call *call, void *ctx) {
  (void)ctx;
  push_state *ps = rpc_call_user(call);
  if (ps == NULL)
    return;
  store_push_abort(&ps->p);
  free(ps);
}
