/* chunk_stream.c: a client stream of tensor chunks staged whole before a
 * method commits it — the header checks, offsets, the one receive copy and
 * its NaN/Inf scan that Push and SetValues share. */
#include <stdio.h>
#include <stdlib.h>

#include "chunk_stream.h"

void server_chunks_start(service *svc, rpc_call *call) {
  chunk_stream *cs = calloc(1, sizeof *cs);
  if (cs == NULL) {
    server_service_reject(svc, call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (svc->m != NULL)
    cs->t0 = metrics_now_s();
  rpc_call_set_user(call, cs);
}

/* begin handles the first chunk's header: which layer, then what the
 * method reads from the rest. */
static int begin(service *svc, chunk_stream *cs, const chunk_kind *k,
                 const uint64_t *v, char *err, size_t errlen) {
  if (!store_ready(svc->st)) {
    snprintf(err, errlen, "no model is declared on this server yet (Init)");
    return FSPS_FAILED_PRECONDITION;
  }
  int rc = k->in_range(v, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  cs->layer = (uint32_t)v[k->layer_field];
  store_layer *L = store_layer_get(svc->st, cs->layer);
  if (L == NULL) {
    snprintf(err, errlen, "layer %u does not exist: the model has %u layers",
             cs->layer, store_num_layers(svc->st));
    return FSPS_NOT_FOUND;
  }
  cs->begun = true;
  return k->begin(L, v, &cs->p, err, errlen);
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
static int chunk(service *svc, chunk_stream *cs, const chunk_kind *k,
                 rpc_msg *msg, char *err, size_t errlen) {
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
  int rc = cs->begun ? FSPS_OK : begin(svc, cs, k, h.v, err, errlen);
  if (rc == FSPS_OK)
    rc = k->same(cs, h.v, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  uint64_t count = bytes / sizeof(float);
  float *dst =
      store_push_chunk(&cs->p, h.v[k->offset_field], count, err, errlen);
  if (dst == NULL)
    return FSPS_INVALID_ARGUMENT;
  metrics_add(SM(svc->m, rx_bytes), bytes);
  bool nonfinite = false;
  rpc_msg_copy_payload_each(msg, dst, scan_piece, &nonfinite);
  /* Only a chunk with NaN/Inf takes the method's full check, which
   * rejects or zeroes them, naming the first. */
  return nonfinite ? k->check(&cs->p, dst, count, err, errlen) : FSPS_OK;
}

void server_chunks_message(service *svc, rpc_call *call, rpc_msg *msg,
                           const chunk_kind *k) {
  chunk_stream *cs = rpc_call_user(call);
  if (cs == NULL)
    return;
  char err[512];
  if (msg == NULL && !cs->begun) {
    snprintf(err, sizeof err, "%s stream carried no chunks", k->name);
    server_service_reject(svc, call, FSPS_INVALID_ARGUMENT, err);
    return;
  }
  if (msg == NULL) {
    k->finish(svc, call, cs);
    return;
  }
  int rc = chunk(svc, cs, k, msg, err, sizeof err);
  if (rc != FSPS_OK)
    server_service_reject(svc, call, rc, err);
}

void server_chunks_done(rpc_call *call) {
  chunk_stream *cs = rpc_call_user(call);
  if (cs == NULL)
    return;
  store_push_abort(&cs->p);
  free(cs);
}
