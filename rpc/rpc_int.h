/* rpc_int.h: what rpc/'s own files share and nobody else sees: status code
 * translation, the received message wrapper and byte-buffer helpers. */
#ifndef FSPS_RPC_INT_H
#define FSPS_RPC_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <time.h>

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
#define RPC_CHANNEL_ARGS 5
typedef struct {
  grpc_arg arg[RPC_CHANNEL_ARGS];
  grpc_channel_args args;
} rpc_args;

/* rpc_channel_args fills a with rpc's channel and server arguments and the
 * message size limit (0: gRPC's default) and returns &a->args, which gRPC
 * copies when it creates the channel or server. */
grpc_channel_args *rpc_channel_args(rpc_args *a, int max_message_bytes);

/* rpc_channel_args_name adds to a (filled by rpc_channel_args) the name a
 * TLS channel checks in the server's certificate instead of the target's
 * host; name must outlive the channel's creation. */
void rpc_channel_args_name(rpc_args *a, const char *name);

/* ---- TLS files (tls.c) ---- */

/* The PEM texts of one set of TLS files (NULL where no file was named). */
typedef struct {
  char *cert, *key, *ca;
} rpc_pem_set;

/* What a log line tells about a certificate. */
typedef struct {
  char subject[256];
  time_t not_before, not_after;
  char not_after_text[32]; /* ISO 8601, UTC */
  bool expired, not_yet_valid;
} rpc_cert_info;

/* rpc_read_file reads a whole (small) file into *out (free it); on failure
 * st names the file as the `what` it was meant to be. */
int rpc_read_file(const char *path, const char *what, char **out,
                  rpc_status *st);

/* rpc_tls_load reads and checks a set of TLS files: cert_file (a PEM
 * certificate chain, leaf first) with key_file (its unencrypted PEM key;
 * both or neither), and ca_file (PEM certificates; may be NULL), called
 * ca_what in messages. Fills p (free with rpc_pem_set_free) and, if not
 * NULL, info about the leaf. Returns FSPS_OK, FSPS_IO (unreadable) or
 * FSPS_INVALID_ARGUMENT (not PEM, key not the certificate's), with st
 * naming the file. */
int rpc_tls_load(const char *cert_file, const char *key_file,
                 const char *ca_file, const char *ca_what, rpc_pem_set *p,
                 rpc_cert_info *info, rpc_status *st);
void rpc_pem_set_free(rpc_pem_set *p);

/* The gRPC credentials and target-name override of client credentials. */
grpc_channel_credentials *rpc_creds_channel(const rpc_creds *c);
const char *rpc_creds_server_name(const rpc_creds *c);

/* ---- the server's certificates, reloaded (tls_server.c) ---- */
typedef struct rpc_tls_watch rpc_tls_watch;

/* rpc_tls_watch_create loads tls's files (st says what is wrong with them)
 * and returns the watcher whose credentials re-read them when they change. */
rpc_tls_watch *rpc_tls_watch_create(const rpc_server_tls *tls, rpc_status *st);

/* rpc_tls_watch_creds returns new server credentials (the caller releases
 * them) that ask the watcher for the certificates at every handshake. */
grpc_server_credentials *rpc_tls_watch_creds(rpc_tls_watch *w);

/* rpc_tls_watch_poll re-reads the files if they changed, so a reload (or
 * a refusal) is logged without waiting for a connection. Any thread. */
void rpc_tls_watch_poll(rpc_tls_watch *w);

/* rpc_tls_watch_destroy frees w, once no server uses its credentials. */
void rpc_tls_watch_destroy(rpc_tls_watch *w);

#endif
