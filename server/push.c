/* push.c: the Push method — a worker's gradient slice for one (layer,
 * step) arrives as chunks, is staged whole, and only then counted, so a
 * broken or bad stream changes nothing. */
#include <inttypes.h>
#include <stdio.h>

#include "chunk_stream.h"
#include "fsps.pb-c.h"
#include "log.h"

void server_push_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)msg;
  service *svc = ctx;
  atomic_fetch_add(&svc->pushes, 1);
  metrics_add(SM(svc->m, pushes), 1);
  server_chunks_start(svc, call);
}

/* in_range: the layer and worker fit the store's 32-bit numbers. */
static int in_range(const uint64_t *v, char *err, size_t errlen) {
  if (v[WIRE_PUSH_LAYER] <= UINT32_MAX && v[WIRE_PUSH_WORKER] <= UINT32_MAX)
    return FSPS_OK;
  snprintf(err, errlen, "layer or worker number out of range");
  return FSPS_INVALID_ARGUMENT;
}

/* begin reads the first chunk's step, worker and epoch. */
static int begin(store_layer *L, const uint64_t *v, store_push *p, char *err,
                 size_t errlen) {
  return store_push_begin(L, v[WIRE_PUSH_STEP], (uint32_t)v[WIRE_PUSH_WORKER],
                          v[WIRE_PUSH_EPOCH], p, err, errlen);
}

/* same_push checks that a later chunk's header names the push the first
 * one began. */
static int same_push(const chunk_stream *ps, const uint64_t *v, char *err,
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
  metrics_add(duplicate ? SM(a->svc->m, pushes_duplicate)
                        : SM(a->svc->m, pushes_counted),
              1);
  Fsps__V1__PushReply reply = FSPS__V1__PUSH_REPLY__INIT;
  reply.version = version;
  reply.duplicate = duplicate;
  reply.applied = applied;
  rpc_call_finish(a->call, &reply.base, FSPS_OK, NULL);
}

static void finish(service *svc, rpc_call *call, chunk_stream *ps) {
  char err[512];
  uint64_t nonfinite = ps->p.nonfinite;
  ack_ctx a = {svc, call};
  int rc = store_push_commit(&ps->p, ack, &a, err, sizeof err);
  if (rc != FSPS_OK) {
    server_service_reject(svc, call, rc, err);
    return;
  }
  if (svc->m != NULL)
    metrics_observe(svc->m->push_seconds, metrics_now_s() - ps->t0);
  if (nonfinite)
    LOGW("zeroed %" PRIu64 " NaN/Inf gradient elements of layer %u from "
         "worker %u (--nan-policy skip)",
         nonfinite, ps->layer, ps->p.worker);
}

static const chunk_kind push_kind = {
    .name = "push",
    .layer_field = WIRE_PUSH_LAYER,
    .offset_field = WIRE_PUSH_OFFSET,
    .model_dtype = true,
    .in_range = in_range,
    .begin = begin,
    .same = same_push,
    .check = store_push_check,
    .finish = finish,
};

void server_push_message(rpc_call *call, rpc_msg *msg, void *ctx) {
  server_chunks_message(ctx, call, msg, &push_kind);
}

void server_push_done(rpc_call *call, void *ctx) {
  (void)ctx;
  server_chunks_done(call);
}
