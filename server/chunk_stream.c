/* chunk_stream.c: a client stream of tensor chunks staged whole before a
 * method commits it — the header checks, offsets, the one receive copy (or
 * bf16 decode) and its NaN/Inf scan that Push and SetValues share. */
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

/* A bf16 payload decoded into the staging buffer, and whether what it
 * decoded to holds NaN/Inf. */
typedef struct {
  wire_bf16_reader r;
  bool nonfinite;
} bf16_in;

/* decode_span decodes a piece of a bf16 payload as gRPC holds it, in
 * pieces that fill at most RPC_PIECE_BYTES of floats, each scanned for
 * NaN/Inf while still in cache: the check runs after the conversion. */
static void decode_span(void *arg, const void *bytes, size_t len) {
  bf16_in *in = arg;
  const uint8_t *p = bytes;
  for (size_t done = 0, n; done < len; done += n) {
    n = len - done < RPC_PIECE_BYTES / 2 ? len - done : RPC_PIECE_BYTES / 2;
    float *from = in->r.dst;
    wire_bf16_read(&in->r, p + done, n);
    in->nonfinite |= store_any_nonfinite(from, (uint64_t)(in->r.dst - from));
  }
}

/* receive puts the payload of msg into dst as float32 (a copy, or a decode
 * from bf16); returns whether it holds NaN/Inf. */
static bool receive(rpc_msg *msg, shard_wire_dtype dtype, float *dst) {
  if (dtype == SHARD_WIRE_BF16) {
    bf16_in in = {.nonfinite = false};
    wire_bf16_read_start(&in.r, dst);
    rpc_msg_payload_spans(msg, decode_span, &in);
    return in.nonfinite;
  }
  bool nonfinite = false;
  rpc_msg_copy_payload_each(msg, dst, scan_piece, &nonfinite);
  return nonfinite;
}

/* payload_ok checks that a chunk's payload is in the field of dtype and is
 * whole elements of it. */
static int payload_ok(const chunk_kind *k, shard_wire_dtype dtype,
                      const rpc_tensor_hdr *h, size_t bytes, char *err,
                      size_t errlen) {
  unsigned want = wire_data_field(dtype);
  if (h->payload_field != 0 && h->payload_field != want) {
    snprintf(err, errlen,
             "%s chunk has its payload in field %u, but %s takes %s in field "
             "%u (%s)",
             k->name, h->payload_field, k->model_dtype ? "this model" : "it",
             shard_wire_dtype_name(dtype), want,
             k->model_dtype ? "the model's wire dtype"
                            : "values are float32 whatever the wire dtype");
    return FSPS_INVALID_ARGUMENT;
  }
  if (bytes % wire_dtype_bytes(dtype) == 0)
    return FSPS_OK;
  if (dtype == SHARD_WIRE_BF16)
    snprintf(err, errlen,
             "payload of %zu bytes is not whole bf16 elements (2 bytes each)",
             bytes);
  else
    snprintf(err, errlen, "payload of %zu bytes is not whole float32s", bytes);
  return FSPS_INVALID_ARGUMENT;
}

/* header checks a message's header against the stream (beginning it with
 * the first) and its payload against the dtype. */
static int header(service *svc, chunk_stream *cs, const chunk_kind *k,
                  const rpc_tensor_hdr *h, size_t bytes,
                  shard_wire_dtype *dtype, char *err, size_t errlen) {
  int rc = cs->begun ? FSPS_OK : begin(svc, cs, k, h->v, err, errlen);
  if (rc == FSPS_OK)
    rc = k->same(cs, h->v, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  *dtype = k->model_dtype ? store_wire_dtype(svc->st) : SHARD_WIRE_FP32;
  return payload_ok(k, *dtype, h, bytes, err, errlen);
}

/* chunk checks one message and copies (or decodes) its payload into the
 * staging buffer: the one copy a receive makes. */
static int chunk(service *svc, chunk_stream *cs, const chunk_kind *k,
                 rpc_msg *msg, char *err, size_t errlen) {
  rpc_tensor_hdr h;
  size_t bytes;
  rpc_status st;
  shard_wire_dtype dtype;
  if (rpc_msg_tensor(msg, &h, &bytes, &st) != FSPS_OK) {
    snprintf(err, errlen, "%s", st.msg);
    return st.code;
  }
  int rc = header(svc, cs, k, &h, bytes, &dtype, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  uint64_t count = bytes / wire_dtype_bytes(dtype);
  float *dst =
      store_push_chunk(&cs->p, h.v[k->offset_field], count, err, errlen);
  if (dst == NULL)
    return FSPS_INVALID_ARGUMENT;
  metrics_add(SM(svc->m, rx_bytes), bytes);
  /* Only a chunk with NaN/Inf takes the method's full check, which
   * rejects or zeroes them, naming the first. */
  if (receive(msg, dtype, dst))
    return k->check(&cs->p, dst, count, err, errlen);
  return FSPS_OK;
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
