/* rpc.h: the one thin layer over gRPC C core. Completion-queue loops,
 * method registration, unary and streaming calls, protobuf-c <-> byte
 * buffers, zero-copy tensor messages, and status codes with messages.
 * Nothing outside rpc/ includes a gRPC header. */
#ifndef FSPS_RPC_H
#define FSPS_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "fsps_err.h"

/* A call's outcome: an fsps_err and a message for a person. A status from
 * the wire is one of the codes 0..16; rpc's own failures (no memory, a
 * call that cannot start) use the same codes gRPC would. */
typedef struct {
  fsps_err code;
  char msg[512];
} rpc_status;

/* rpc_status_set fills st (if not NULL) and returns code. */
int rpc_status_set(rpc_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* rpc_init / rpc_shutdown wrap grpc_init / grpc_shutdown; each rpc object
 * (server, channel) also holds one reference while it lives. The last
 * rpc_shutdown waits (up to 5 s) for gRPC core's own clean-up to finish, so
 * no gRPC thread outlives the last rpc object. */
void rpc_init(void);
void rpc_shutdown(void);

/* ---- tensor messages -------------------------------------------------
 * A tensor message is protobuf with varint fields 1..7 and one `bytes`
 * payload, written last: field 8 (little-endian float32) or field 9 (the
 * same tensor in another encoding; what it is, the caller knows). The
 * header is encoded by hand and the payload slice points at the caller's
 * memory, so a send copies nothing; the result is valid protobuf for any
 * parser. */
#define RPC_TENSOR_FIELD 8
#define RPC_TENSOR_FIELD_LAST 9 /* payload fields are 8..9 */
#define RPC_TENSOR_MAX_VARINT 7
/* The longest header rpc writes before a payload: each varint field with
 * its tag (11 bytes), then the payload's tag and length. */
#define RPC_TENSOR_HDR_MAX (RPC_TENSOR_MAX_VARINT * 11 + 12)

typedef struct {
  uint64_t v[RPC_TENSOR_MAX_VARINT + 1]; /* v[1]..v[7]; v[0] unused */
  uint32_t present;                      /* bit i set: field i present */
  /* The payload's field: a send puts it there (0: RPC_TENSOR_FIELD);
   * rpc_msg_tensor sets the field it found (0: the message had none). */
  unsigned payload_field;
} rpc_tensor_hdr;

/* rpc_hdr_set sets varint field `field` (1..7) to value. */
void rpc_hdr_set(rpc_tensor_hdr *h, unsigned field, uint64_t value);

/* A received message, valid only during the callback that hands it over. */
typedef struct rpc_msg rpc_msg;

/* rpc_msg_size returns the message's length in bytes. */
size_t rpc_msg_size(const rpc_msg *m);

/* rpc_msg_unpack decodes m as a protobuf-c message of type desc into *out
 * (free with protobuf_c_message_free_unpacked). Returns FSPS_OK, or
 * FSPS_INVALID_ARGUMENT with st filled when the bytes are not such a
 * message. */
int rpc_msg_unpack(const rpc_msg *m, const ProtobufCMessageDescriptor *desc,
                   ProtobufCMessage **out, rpc_status *st);

/* rpc_msg_tensor parses m as a tensor message: fills h with the varint
 * fields and the payload's field, and *payload_bytes with the payload's
 * length (0 if absent). Fields 1..7 must be varints and 8..9
 * length-delimited (another wire type is malformed, not a default value),
 * with at most one payload; unknown fields (above 9) of any wire type are
 * skipped. Returns FSPS_OK or FSPS_INVALID_ARGUMENT with st filled. Must
 * precede rpc_msg_copy_payload and its variants. */
int rpc_msg_tensor(rpc_msg *m, rpc_tensor_hdr *h, size_t *payload_bytes,
                   rpc_status *st);

/* rpc_msg_copy_payload copies the payload found by rpc_msg_tensor into dst
 * (payload_bytes bytes): the one copy a receive makes. */
void rpc_msg_copy_payload(const rpc_msg *m, void *dst);

/* Pieces of a payload copied by rpc_msg_copy_payload_each: at most this
 * many bytes, a multiple of 4, so each is still in L1 when visited. */
#define RPC_PIECE_BYTES (16 << 10)

/* Called on each piece [piece, piece + len) of dst just after it is copied. */
typedef void (*rpc_piece_fn)(void *arg, void *piece, size_t len);

/* rpc_msg_copy_payload_each copies like rpc_msg_copy_payload and hands each
 * piece to fn right after copying it, so a receiver can check (or fix) what
 * arrived while it is in cache instead of reading a 1 MiB chunk back from
 * memory in a second pass. */
void rpc_msg_copy_payload_each(const rpc_msg *m, void *dst, rpc_piece_fn fn,
                               void *arg);

/* Called with each contiguous piece of a payload, in order. */
typedef void (*rpc_span_fn)(void *arg, const void *bytes, size_t len);

/* rpc_msg_payload_spans hands the payload found by rpc_msg_tensor to fn as
 * the pieces gRPC holds it in (of any length, an odd one too), without
 * copying: for a receiver that decodes rather than copies. The pieces are
 * valid during the call only. */
void rpc_msg_payload_spans(const rpc_msg *m, rpc_span_fn fn, void *arg);

/* Called when gRPC no longer references a payload handed to a send. */
typedef void (*rpc_release_fn)(void *arg);

/* ---- TLS --------------------------------------------------------------
 * TLS is gRPC core's SSL credentials; rpc reads the PEM files itself and
 * checks them first (readable, PEM, the key the certificate's), so that a
 * wrong file is a message naming it when a server or client starts rather
 * than handshakes failing later. */

typedef enum {
  RPC_LOG_DEBUG,
  RPC_LOG_INFO,
  RPC_LOG_WARN,
  RPC_LOG_ERROR
} rpc_log_level;

/* Where rpc tells what a person should hear (certificates reloaded or
 * refused); may run on any thread. */
typedef void (*rpc_log_fn)(void *arg, rpc_log_level level, const char *msg);

/* rpc_set_log sends gRPC core's own log lines (a refused handshake and
 * why, ...) to fn, prefixed "gRPC: ", instead of gRPC's format on stderr,
 * so that they follow the program's log format. Process-wide; call once at
 * start, before any rpc object exists. */
void rpc_set_log(rpc_log_fn fn, void *arg);

typedef struct {
  const char *cert_file;      /* certificate chain, PEM, leaf first */
  const char *key_file;       /* its private key, PEM, unencrypted */
  const char *client_ca_file; /* NULL: no client certificate is asked for;
                                 else one signed by these CAs is required
                                 (mutual TLS) */
  rpc_log_fn log;             /* NULL: silent */
  void *log_arg;
} rpc_server_tls;

/* rpc_server_tls_check reads and checks tls's files as rpc_server_create
 * does, so that a program refuses bad ones before it starts anything else.
 * Returns FSPS_OK, or the error with st naming the file. */
int rpc_server_tls_check(const rpc_server_tls *tls, rpc_status *st);

typedef struct {
  const char *ca_file;     /* the CAs that sign the servers' certificates */
  const char *cert_file;   /* mutual TLS: this client's chain, or NULL */
  const char *key_file;    /* its key, with cert_file */
  const char *server_name; /* the name servers' certificates must carry;
                              NULL: each target's host (DNS name or IP) */
} rpc_client_tls;

/* Client credentials, shared by any number of channels. */
typedef struct rpc_creds rpc_creds;

/* rpc_creds_create reads and checks tls's files. A client certificate that
 * has expired is refused here (every server asking for one would refuse
 * it). Returns NULL with st filled (naming the file) on failure. */
rpc_creds *rpc_creds_create(const rpc_client_tls *tls, rpc_status *st);

/* rpc_creds_destroy drops the caller's reference: channels created with
 * the credentials keep their own. */
void rpc_creds_destroy(rpc_creds *c);

/* ---- server ----------------------------------------------------------- */
typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

typedef enum {
  RPC_UNARY,            /* one request, one reply */
  RPC_SERVER_STREAMING, /* one request, a stream of replies */
  RPC_CLIENT_STREAMING, /* a stream of requests, one reply */
} rpc_kind;

/* A method's handlers. All run on completion-queue threads; a call's
 * callbacks never run concurrently with each other. */
typedef struct {
  const char *path; /* "/fsps.v1.ParameterServer/Pull" */
  rpc_kind kind;
  /* A call arrived. For unary and server-streaming methods msg is the
   * request; for client streaming it is NULL. Required. */
  void (*on_start)(rpc_call *call, rpc_msg *msg, void *ctx);
  /* Client streaming: the next request message, or NULL once the client
   * has closed its side. rpc reads the next one after this returns, unless
   * the call has been finished. */
  void (*on_message)(rpc_call *call, rpc_msg *msg, void *ctx);
  /* Server streaming: the last rpc_call_send_tensor completed; ok false
   * when the call broke. */
  void (*on_sent)(rpc_call *call, bool ok, void *ctx);
  /* The client cancelled or the deadline passed before the call finished.
   * At most once. If the handler does not finish the call here, rpc
   * finishes it with CANCELLED. */
  void (*on_cancel)(rpc_call *call, void *ctx);
  /* Last callback of every call: release what rpc_call_user points at. */
  void (*on_done)(rpc_call *call, void *ctx);
  void *ctx;
} rpc_method;

/* Every channel and server is given the largest message it sends and
 * accepts (a larger one fails with RESOURCE_EXHAUSTED): the caller's to
 * choose, since both ends of a call must agree on it (fsps's is wire's
 * WIRE_MAX_MESSAGE_BYTES). 0 leaves gRPC's defaults (4 MiB received). */
typedef struct {
  const char *listen;    /* "127.0.0.1:7000", "[::]:0" */
  int threads;           /* completion-queue threads, >= 1 */
  int max_message_bytes; /* see above; >= 0 */
  const rpc_server_tls *tls; /* NULL: plaintext; else TLS only, its files
                                re-read when they change */
} rpc_server_opts;

/* rpc_server_create binds opts->listen and registers the methods (the
 * array must outlive the server). It does not serve until rpc_server_start.
 * Returns NULL with st filled on failure (address in use, bad address). */
rpc_server *rpc_server_create(const rpc_server_opts *opts,
                              const rpc_method *methods, size_t nmethods,
                              rpc_status *st);

/* An admission gate sees every call before its method does (see
 * rpc_server_set_gate). It returns FSPS_OK to let the call through, or the
 * code (with a message in msg) the call is refused with: then the method's
 * on_start never runs, no message of a client stream is read, and only
 * on_done follows. path is the method's ("/pkg.Service/Method"), also for
 * methods the server does not know. Runs on completion-queue threads,
 * concurrently for distinct calls. */
typedef int (*rpc_gate_fn)(rpc_call *call, const char *path, char *msg,
                           size_t msglen, void *ctx);

/* rpc_server_set_gate installs gate (NULL: none, every call passes) with
 * its context. Call before rpc_server_start. */
void rpc_server_set_gate(rpc_server *srv, rpc_gate_fn gate, void *ctx);

/* rpc_server_port returns the bound port (useful with port 0). */
int rpc_server_port(const rpc_server *srv);

/* rpc_server_tls_poll re-reads a TLS server's certificate files if they
 * changed (handshakes do too), so that a reload or a refused new set is
 * logged without waiting for a connection. Any thread; nothing without
 * TLS. */
void rpc_server_tls_poll(rpc_server *srv);

/* rpc_server_start starts the completion-queue threads. */
int rpc_server_start(rpc_server *srv, rpc_status *st);

/* rpc_server_shutdown stops accepting calls, lets calls in flight finish
 * for up to grace_ms, cancels the rest, and joins the threads. Then
 * rpc_server_destroy frees it. Call from a thread that is not a CQ thread. */
void rpc_server_shutdown(rpc_server *srv, int64_t grace_ms);
void rpc_server_destroy(rpc_server *srv);

/* Per-call state for the handler. */
void rpc_call_set_user(rpc_call *call, void *user);
void *rpc_call_user(const rpc_call *call);

/* rpc_call_ref / rpc_call_unref keep a call's memory alive while another
 * thread holds it (a parked Pull in a waiter list). */
void rpc_call_ref(rpc_call *call);
void rpc_call_unref(rpc_call *call);

/* rpc_call_deadline_ms returns the milliseconds left before the call's
 * deadline (INT64_MAX when none). */
int64_t rpc_call_deadline_ms(const rpc_call *call);

/* rpc_call_metadata copies the value of request metadata `key` (lowercase)
 * into out; returns false when absent. */
bool rpc_call_metadata(const rpc_call *call, const char *key, char *out,
                       size_t outlen);

/* rpc_call_metadata_raw finds request metadata `key` (lowercase): returns
 * how many entries carry it and points *val and *len at the first one's
 * value (not NUL-terminated, any bytes; valid while the call lives). */
size_t rpc_call_metadata_raw(const rpc_call *call, const char *key,
                             const char **val, size_t *len);

/* rpc_call_set_auth / rpc_call_auth: a number the gate keeps with the call
 * for its method (what the caller may do); 0 until set. */
void rpc_call_set_auth(rpc_call *call, int auth);
int rpc_call_auth(const rpc_call *call);

/* rpc_call_peer writes the caller's address as gRPC names it
 * ("ipv4:127.0.0.1:51234") into out. */
void rpc_call_peer(const rpc_call *call, char *out, size_t outlen);

/* rpc_call_send_tensor sends one tensor message on a server-streaming call;
 * on_sent follows. data must stay unchanged until release(arg) is called
 * (release may be NULL when the caller guarantees that otherwise). One send
 * at a time. Returns FSPS_OK, or FSPS_CANCELLED if the call has finished (in
 * which case release has already been called). Any thread. */
int rpc_call_send_tensor(rpc_call *call, const rpc_tensor_hdr *h,
                         const void *data, size_t nbytes,
                         rpc_release_fn release, void *arg);

/* rpc_call_finish ends the call: sends reply (unary and client streaming;
 * NULL for none) if code is FSPS_OK, then the status. code is any fsps_err:
 * a local one goes on the wire as the nearest gRPC code (FSPS_NOMEM as
 * RESOURCE_EXHAUSTED, FSPS_CORRUPT as DATA_LOSS, FSPS_IO as INTERNAL).
 * Idempotent: later calls do nothing. Any thread. */
void rpc_call_finish(rpc_call *call, const ProtobufCMessage *reply, int code,
                     const char *details);

/* rpc_call_failf finishes the call with an error status and a formatted
 * message. */
void rpc_call_failf(rpc_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- client ----------------------------------------------------------- */
typedef struct rpc_loop rpc_loop;
typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;

/* An rpc_loop is one completion-queue thread: it runs the stream callbacks
 * (copies included) of every channel created on it. Each such thread also
 * polls every connection of the process, and gRPC's epoll poller hands its
 * role to another polling thread on every event, so two loops serving one
 * gather each bounce work between them: one loop for a client's S channels
 * used 20-35% less CPU per byte (S=2 on two cores). More loops spread the
 * copies of many fast connections over cores. rpc_loop_create returns NULL
 * with st filled on failure. */
rpc_loop *rpc_loop_create(rpc_status *st);

/* rpc_loop_destroy stops and frees l once every channel created on it has
 * been destroyed. */
void rpc_loop_destroy(rpc_loop *l);

/* rpc_channel_create_on opens a channel to target ("host:port") whose
 * streams run on loop, with max_message_bytes as rpc_server_opts says;
 * connection happens lazily. Returns NULL with st filled on failure. */
rpc_channel *rpc_channel_create_on(const char *target, rpc_loop *loop,
                                   int max_message_bytes, rpc_status *st);

/* rpc_channel_create is rpc_channel_create_on with a loop of the channel's
 * own, destroyed with it. */
rpc_channel *rpc_channel_create(const char *target, int max_message_bytes,
                                rpc_status *st);

/* Bearer tokens: at most this many bytes, each a visible ASCII character
 * other than a space (what a gRPC header value can carry unchanged). */
#define RPC_TOKEN_MAX 4096

/* rpc_token_check returns NULL if token can travel as a bearer token, else
 * why not (a reason that never quotes the token). */
const char *rpc_token_check(const char *token);

/* rpc_channel_set_token makes every later call on ch carry the metadata
 * `authorization: Bearer TOKEN` (token copied; NULL or "" sends none). Call
 * it before the channel's first call, from the thread that created it.
 * Returns FSPS_OK, or FSPS_INVALID_ARGUMENT with st filled when
 * rpc_token_check refuses the token. */
int rpc_channel_set_token(rpc_channel *ch, const char *token, rpc_status *st);
/* rpc_channel_create_tls is rpc_channel_create_on (loop NULL: as
 * rpc_channel_create) over TLS with creds (NULL: plaintext). */
rpc_channel *rpc_channel_create_tls(const char *target, rpc_loop *loop,
                                    int max_message_bytes,
                                    const rpc_creds *creds, rpc_status *st);

/* rpc_channel_destroy cancels the channel's streams, waits for their
 * on_done, and frees it (and its own loop, if it has one). */
void rpc_channel_destroy(rpc_channel *ch);

/* rpc_channel_target returns the target given at creation. */
const char *rpc_channel_target(const rpc_channel *ch);

/* rpc_unary makes a blocking unary call. On FSPS_OK *reply holds the decoded
 * reply (free with protobuf_c_message_free_unpacked); otherwise st says
 * why. timeout_ms <= 0 means no deadline. Thread-safe. */
int rpc_unary(rpc_channel *ch, const char *path, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *reply_desc,
              ProtobufCMessage **reply, int64_t timeout_ms, rpc_status *st);

/* Stream callbacks, run on the channel's loop thread, never concurrently
 * for one stream. */
typedef struct {
  /* Server streaming: the next message; rpc reads the next after return. */
  void (*on_message)(rpc_stream *s, rpc_msg *msg, void *ctx);
  /* Client streaming: the last rpc_stream_send_tensor completed. */
  void (*on_sent)(rpc_stream *s, bool ok, void *ctx);
  /* Last callback: the call's status and, for client streaming, its reply
   * message (NULL if none). The stream is freed after this returns. */
  void (*on_done)(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                  void *ctx);
  void *ctx;
} rpc_stream_cbs;

/* rpc_stream_start starts a streaming call. For server streaming, req is
 * the request, and the returned handle is valid only until on_done starts.
 * For client streaming req is NULL; the caller sends with
 * rpc_stream_send_tensor and must call rpc_stream_close_send exactly once
 * (also after a failed send), and the handle stays valid until then.
 * Returns NULL with st filled if the call could not start (no on_done
 * then). */
rpc_stream *rpc_stream_start(rpc_channel *ch, const char *path, rpc_kind kind,
                             const ProtobufCMessage *req, int64_t timeout_ms,
                             const rpc_stream_cbs *cbs, rpc_status *st);

/* rpc_stream_send_tensor: as rpc_call_send_tensor, for client streams. */
int rpc_stream_send_tensor(rpc_stream *s, const rpc_tensor_hdr *h,
                           const void *data, size_t nbytes,
                           rpc_release_fn release, void *arg);

/* rpc_stream_close_send half-closes a client stream (after the last
 * on_sent) and gives up the caller's handle: on_done may run at once. */
int rpc_stream_close_send(rpc_stream *s);

/* rpc_stream_cancel cancels the call; on_done still follows. Any thread,
 * while the handle is valid (see rpc_stream_start). */
void rpc_stream_cancel(rpc_stream *s);

#endif
