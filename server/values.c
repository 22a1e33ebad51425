/* values.c: the SetValues method — a client gives a layer's version-0
 * values, this server's slice streamed in chunks cut as a push's; they are
 * staged whole and taken only when complete and finite, so a broken or bad
 * stream changes nothing. */
#include <inttypes.h>
#include <stdio.h>

#include "chunk_stream.h"
#include "fsps.pb-c.h"
#include "log.h"

void server_values_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)msg;
  server_chunks_start(ctx, call);
}

/* in_range: the layer fits the store's 32-bit numbers. */
static int in_range(const uint64_t *v, char *err, size_t errlen) {
  if (v[WIRE_VALUES_LAYER] <= UINT32_MAX)
    return FSPS_OK;
  snprintf(err, errlen, "layer number out of range");
  return FSPS_INVALID_ARGUMENT;
}

/* begin reads the first chunk's epoch. */
static int begin(store_layer *L, const uint64_t *v, store_push *p, char *err,
                 size_t errlen) {
  return store_values_begin(L, v[WIRE_VALUES_EPOCH], p, err, errlen);
}

/* same_stream checks that a later chunk names the layer and epoch the
 * first one did. */
static int same_stream(const chunk_stream *vs, const uint64_t *v, char *err,
                       size_t errlen) {
  if (v[WIRE_VALUES_LAYER] == vs->layer && v[WIRE_VALUES_EPOCH] == vs->p.epoch)
    return FSPS_OK;
  snprintf(err, errlen,
           "chunks of one SetValues stream must share layer and epoch (got "
           "%" PRIu64 "/%016" PRIx64 " after %u/%016" PRIx64 ")",
           v[WIRE_VALUES_LAYER], v[WIRE_VALUES_EPOCH], vs->layer, vs->p.epoch);
  return FSPS_INVALID_ARGUMENT;
}

static void finish(service *svc, rpc_call *call, chunk_stream *vs) {
  char err[512];
  bool duplicate = false;
  int rc = store_values_commit(&vs->p, &duplicate, err, sizeof err);
  if (rc != FSPS_OK) {
    server_service_reject(svc, call, rc, err);
    return;
  }
  Fsps__V1__ValuesReply reply = FSPS__V1__VALUES_REPLY__INIT;
  reply.duplicate = duplicate;
  reply.layers_awaiting = store_awaiting(svc->st, NULL);
  if (!duplicate)
    LOGI("layer %u: values given (%u layers still await theirs)", vs->layer,
         reply.layers_awaiting);
  rpc_call_finish(call, &reply.base, FSPS_OK, NULL);
}

static const chunk_kind values_kind = {
    .name = "SetValues",
    .layer_field = WIRE_VALUES_LAYER,
    .offset_field = WIRE_VALUES_OFFSET,
    .in_range = in_range,
    .begin = begin,
    .same = same_stream,
    .check = store_values_check,
    .finish = finish,
};

void server_values_message(rpc_call *call, rpc_msg *msg, void *ctx) {
  server_chunks_message(ctx, call, msg, &values_kind);
}

void server_values_done(rpc_call *call, void *ctx) {
  (void)ctx;
  server_chunks_done(call);
}
