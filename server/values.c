/* values.c: the SetValues method — a client gives a layer's version-0
 * values, this server's slice streamed in chunks cut as a push's; they are
 * staged whole and taken only when complete and finite, so a broken or bad
 * stream changes nothing. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "fsps.pb-c.h"
#include "log.h"
#include "service.h"

typedef struct {
  store_push p; /* the staged values (store_values_begin) */
  bool begun;
  uint32_t layer;
} values_state;

void server_values_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)msg;
  service *svc = ctx;
  values_state *vs = calloc(1, sizeof *vs);
  if (vs == NULL) {
    server_service_reject(svc, call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  rpc_call_set_user(call, vs);
}

/* begin handles the first chunk's header: which layer, in which epoch. */
static int begin(service *svc, values_state *vs, const uint64_t *v, char *err,
                 size_t errlen) {
  if (!store_ready(svc->st)) {
    snprintf(err, errlen, "no model is declared on this server yet (Init)");
    return FSPS_FAILED_PRECONDITION;
  }
  if (v[WIRE_VALUES_LAYER] > UINT32_MAX) {
    snprintf(err, errlen, "layer number out of range");
    return FSPS_INVALID_ARGUMENT;
  }
  vs->layer = (uint32_t)v[WIRE_VALUES_LAYER];
  store_layer *L = store_layer_get(svc->st, vs->layer);
  if (L == NULL) {
    snprintf(err, errlen, "layer %u does not exist: the model has %u layers",
             vs->layer, store_num_layers(svc->st));
    return FSPS_NOT_FOUND;
  }
  vs->begun = true;
  return store_values_begin(L, v[WIRE_VALUES_EPOCH], &vs->p, err, errlen);
}

/* same_stream checks that a later chunk names the layer and epoch the
 * first one did. */
static int same_stream(const values_state *vs, const uint64_t *v, char *err,
                       size_t errlen) {
  if (v[WIRE_VALUES_LAYER] == vs->layer && v[WIRE_VALUES_EPOCH] == vs->p.epoch)
    return FSPS_OK;
  snprintf(err, errlen,
           "chunks of one SetValues stream must share layer and epoch (got "
           "%" PRIu64 "/%016" PRIx64 " after %u/%016" PRIx64 ")",
           v[WIRE_VALUES_LAYER], v[WIRE_VALUES_EPOCH], vs->layer, vs->p.epoch);
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
 * buffer, refusing NaN and Inf. */
static int chunk(service *svc, values_state *vs, rpc_msg *msg, char *err,
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
  int rc = vs->begun ? FSPS_OK : begin(svc, vs, h.v, err, errlen);
  if (rc == FSPS_OK)
    rc = same_stream(vs, h.v, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  uint64_t count = bytes / sizeof(float);
  float *dst =
      store_push_chunk(&vs->p, h.v[WIRE_VALUES_OFFSET], count, err, errlen);
  if (dst == NULL)
    return FSPS_INVALID_ARGUMENT;
  bool nonfinite = false;
  rpc_msg_copy_payload_each(msg, dst, scan_piece, &nonfinite);
  return nonfinite ? store_values_check(&vs->p, dst, count, err, errlen)
                   : FSPS_OK;
}

static void finish(service *svc, rpc_call *call, values_state *vs) {
  char err[512];
  if (!vs->begun) {
    server_service_reject(svc, call, FSPS_INVALID_ARGUMENT,
                          "SetValues stream carried no chunks");
    return;
  }
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

void server_values_message(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  values_state *vs = rpc_call_user(call);
  if (vs == NULL)
    return;
  if (msg == NULL) {
    finish(svc, call, vs);
    return;
  }
  char err[512];
  int rc = chunk(svc, vs, msg, err, sizeof err);
  if (rc != FSPS_OK)
    server_service_reject(svc, call, rc, err);
}

void server_values_done(rpc_call *call, void *ctx) {
  (void)ctx;
  values_state *vs = rpc_call_user(call);
  if (vs == NULL)
    return;
  store_push_abort(&vs->p);
  free(vs);
}
