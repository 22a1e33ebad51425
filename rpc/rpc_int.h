/* rpc_int.h: what rpc/'s own files share and nobody else sees: status code
 * translation, the received message wrapper and byte-buffer helpers. */
#ifndef FSPS_RPC_INT_H
#define FSPS_RPC_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "rpc.h"

/* gRPC and abseil from Debian are not built with ThreadSanitizer, so the
 * ordering they give between starting a batch and its completion is
 * invisible to it; these annotations state it. No-ops otherwise. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RPC_HANDOFF(tag) __tsan_release(tag)
#define RPC_RECEIVED(tag) __tsan_acquire(tag)
#else
#define RPC_HANDOFF(tag) ((void)(tag))
#define RPC_RECEIVED(tag) ((void)(tag))
#endif

/* rpc_from_grpc translates a status that arrived from gRPC into an
 * fsps_err: codes 0..16 as they are, any other number as FSPS_UNKNOWN. The
 * one place a gRPC status enters fsps. */
fsps_err rpc_from_grpc(grpc_status_code code);

/* rpc_to_grpc translates the fsps_err a server answers with into the
 * status code sent: codes 0..16 as they are, FSPS_NOMEM as
 * RESOURCE_EXHAUSTED, FSPS_CORRUPT as DATA_LOSS, the rest (FSPS_IO) as
 * INTERNAL. Every status a server sends passes through it. */
grpc_status_code rpc_to_grpc(int err);

/* Segments beyond this many are held in a heap array. */
#define RPC_MSG_INLINE_SEGS 32

struct rpc_msg {
  grpc_byte_buffer *bb;
  grpc_byte_buffer_reader reader;
  size_t size;
  size_t nseg;
  const uint8_t **seg_ptr;
  size_t *seg_len;
  const uint8_t *inline_ptr[RPC_MSG_INLINE_SEGS];
  size_t inline_len[RPC_MSG_INLINE_SEGS];
  /* the payload (field 8 or 9), set by rpc_msg_tensor */
  size_t pay_seg, pay_off, pay_len;
};

/* rpc_msg_open wraps a received byte buffer (not taking ownership). */
int rpc_msg_open(rpc_msg *m, grpc_byte_buffer *bb);
/* rpc_msg_close releases what rpc_msg_open took (not the byte buffer). */
void rpc_msg_close(rpc_msg *m);

/* rpc_pack_message serialises a protobuf-c message into a new byte buffer
 * (NULL on failure). */
grpc_byte_buffer *rpc_pack_message(const ProtobufCMessage *msg);

/* rpc_pack_tensor builds a tensor message byte buffer whose payload slice
 * points at data (see rpc_call_send_tensor). */
grpc_byte_buffer *rpc_pack_tensor(const rpc_tensor_hdr *h, const void *data,
                                  size_t nbytes, rpc_release_fn release,
                                  void *arg);

/* rpc_deadline converts a timeout in ms (<= 0: none) to a gpr deadline. */
gpr_timespec rpc_deadline(int64_t timeout_ms);

/* The arguments of every channel and server rpc creates. */
#define RPC_CHANNEL_ARGS 4
typedef struct {
  grpc_arg arg[RPC_CHANNEL_ARGS];
  grpc_channel_args args;
} rpc_args;

/* rpc_channel_args fills a with rpc's channel and server arguments and the
 * message size limit (0: gRPC's default) and returns &a->args, which gRPC
 * copies when it creates the channel or server. */
grpc_channel_args *rpc_channel_args(rpc_args *a, int max_message_bytes);

#endif
