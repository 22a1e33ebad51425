/* chunk_stream.h: what the Push and SetValues methods share — a client
 * stream of one layer's slice in tensor chunks, each copied (or decoded from
 * bf16) once into a store_push's float32 staging buffer, and the call's life
 * around it. */
#ifndef FSPS_SERVER_CHUNK_STREAM_H
#define FSPS_SERVER_CHUNK_STREAM_H

#include "service.h"

/* One call's stream, begun by its first chunk. */
typedef struct {
  store_push p; /* the staging (store_push_begin, store_values_begin) */
  bool begun;
  uint32_t layer;
  double t0; /* metrics_now_s() at the call's start, with metrics on */
} chunk_stream;

/* What a method makes of its stream. The functions return FSPS_OK or an
 * fsps_err with a message in err[0..errlen). */
typedef struct {
  const char *name;                   /* for a stream of no chunks */
  unsigned layer_field, offset_field; /* header fields (wire.h) */
  /* The payload is in the model's wire dtype (a push), or always float32
   * (values). */
  bool model_dtype;
  /* in_range checks the first chunk's header numbers, layer included,
   * before the layer is looked up. */
  int (*in_range)(const uint64_t *v, char *err, size_t errlen);
  /* begin starts the staging p for layer L from the first chunk's header
   * (p is released with store_push_abort whatever it returns). */
  int (*begin)(store_layer *L, const uint64_t *v, store_push *p, char *err,
               size_t errlen);
  /* same checks that a chunk's header names the stream the first began. */
  int (*same)(const chunk_stream *cs, const uint64_t *v, char *err,
              size_t errlen);
  /* check takes a chunk just copied to dst that holds a NaN or an Inf. */
  int (*check)(store_push *p, float *dst, uint64_t count, char *err,
               size_t errlen);
  /* finish answers the call once the client closed a stream that began. */
  void (*finish)(service *svc, rpc_call *call, chunk_stream *cs);
} chunk_kind;

/* server_chunks_start gives the call a fresh chunk_stream (or refuses it
 * when out of memory): the on_start of a method built on it. */
void server_chunks_start(service *svc, rpc_call *call);

/* server_chunks_message takes the stream's next message (NULL: the client
 * closed its side) as kind k says, refusing the call at the first bad
 * chunk: the on_message. */
void server_chunks_message(service *svc, rpc_call *call, rpc_msg *msg,
                           const chunk_kind *k);

/* server_chunks_done releases what the stream holds: the on_done. */
void server_chunks_done(rpc_call *call);

#endif
