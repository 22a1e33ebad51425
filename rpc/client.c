/* client.c: the gRPC client side — completion-queue threads (loops) shared
 * by channels, blocking unary calls, and callback-driven streaming calls. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "rpc_int.h"

#define MAX_METHODS 16

typedef enum { ST_START, ST_RECV, ST_SEND, ST_CLOSE, ST_STATUS } stag_kind;

typedef struct {
  stag_kind kind;
  rpc_stream *s;
} stag;

struct rpc_stream {
  rpc_channel *ch;
  grpc_call *call;
  rpc_kind kind;
  rpc_stream_cbs cbs;
  atomic_int refs;
  pthread_mutex_t mu;
  bool sending;
  grpc_metadata_array init_md, trail_md;
  grpc_status_code status;
  grpc_slice details;
  const char *error_string;
  grpc_byte_buffer *recv_bb, *send_bb, *req_bb, *reply_bb;
  stag t_start, t_recv, t_send, t_close, t_status;
  rpc_stream *prev, *next; /* the channel's live streams */
};

typedef struct {
  const char *path;
  void *handle;
} method_entry;

struct rpc_loop {
  grpc_completion_queue *cq;
  pthread_t thread;
};

struct rpc_channel {
  grpc_channel *ch;
  char *target;
  rpc_loop *loop;
  bool own_loop; /* made by rpc_channel_create, destroyed with it */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  rpc_stream *live;
  method_entry methods[MAX_METHODS];
  int nmethods;
  grpc_metadata auth; /* authorization: Bearer TOKEN */
  size_t nauth;       /* 1 when a token is set, else 0 */
  char *auth_value;   /* the value auth's slice points at */
  size_t auth_len;
};

/* ---- loops ---- */

static void *loop_thread(void *arg);

rpc_loop *rpc_loop_create(rpc_status *st) {
  rpc_loop *l = calloc(1, sizeof *l);
  if (l == NULL) {
    rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  rpc_init();
  l->cq = grpc_completion_queue_create_for_next(NULL);
  if (pthread_create(&l->thread, NULL, loop_thread, l) != 0) {
    rpc_status_set(st, FSPS_INTERNAL, "cannot start a completion-queue thread");
    grpc_completion_queue_shutdown(l->cq);
    grpc_completion_queue_destroy(l->cq);
    free(l);
    rpc_shutdown();
    return NULL;
  }
  return l;
}

void rpc_loop_destroy(rpc_loop *l) {
  if (l == NULL)
    return;
  grpc_completion_queue_shutdown(l->cq);
  pthread_join(l->thread, NULL);
  grpc_completion_queue_destroy(l->cq);
  free(l);
  rpc_shutdown();
}

/* ---- channels ---- */

/* open_channel makes ch's gRPC channel, over TLS when creds are given. */
static void open_channel(rpc_channel *ch, int max_message_bytes,
                         const rpc_creds *creds) {
  rpc_args a;
  grpc_channel_args *args = rpc_channel_args(&a, max_message_bytes);
  if (creds != NULL && rpc_creds_server_name(creds) != NULL)
    rpc_channel_args_name(&a, rpc_creds_server_name(creds));
  grpc_channel_credentials *c =
      creds ? rpc_creds_channel(creds) : grpc_insecure_credentials_create();
  ch->ch = grpc_channel_create(ch->target, c, args);
  if (creds == NULL)
    grpc_channel_credentials_release(c);
}

static rpc_channel *channel_on(const char *target, rpc_loop *loop,
                               int max_message_bytes, const rpc_creds *creds,
                               rpc_status *st) {
  rpc_channel *ch = calloc(1, sizeof *ch);
  if (ch == NULL || (ch->target = strdup(target)) == NULL) {
    free(ch);
    rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  rpc_init();
  open_channel(ch, max_message_bytes, creds);
  ch->loop = loop;
  pthread_mutex_init(&ch->mu, NULL);
  pthread_cond_init(&ch->cv, NULL);
  return ch;
}

rpc_channel *rpc_channel_create_tls(const char *target, rpc_loop *loop,
                                    int max_message_bytes,
                                    const rpc_creds *creds, rpc_status *st) {
  if (loop != NULL)
    return channel_on(target, loop, max_message_bytes, creds, st);
  rpc_loop *l = rpc_loop_create(st);
  if (l == NULL)
    return NULL;
  rpc_channel *ch = channel_on(target, l, max_message_bytes, creds, st);
  if (ch == NULL) {
    rpc_loop_destroy(l);
    return NULL;
  }
  ch->own_loop = true;
  return ch;
}

const char *rpc_token_check(const char *token) {
  size_t n = strlen(token);
  if (n == 0)
    return "the token is empty";
  if (n > RPC_TOKEN_MAX)
    return "the token is longer than 4096 bytes";
  for (size_t i = 0; i < n; i++)
    if (token[i] < 0x21 || token[i] > 0x7e)
      return "the token holds a space, a control or a non-ASCII character, "
             "which a gRPC header cannot carry";
  return NULL;
}

/* drop_token forgets ch's token, wiping the copy first. */
static void drop_token(rpc_channel *ch) {
  if (ch->auth_value == NULL)
    return;
  explicit_bzero(ch->auth_value, ch->auth_len);
  free(ch->auth_value);
  ch->auth_value = NULL;
  ch->nauth = 0;
}

int rpc_channel_set_token(rpc_channel *ch, const char *token, rpc_status *st) {
  drop_token(ch);
  if (token == NULL || token[0] == '\0')
    return FSPS_OK;
  const char *why = rpc_token_check(token);
  if (why != NULL)
    return rpc_status_set(st, FSPS_INVALID_ARGUMENT, "%s", why);
  size_t n = strlen("Bearer ") + strlen(token);
  if ((ch->auth_value = malloc(n + 1)) == NULL)
    return rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  snprintf(ch->auth_value, n + 1, "Bearer %s", token);
  ch->auth_len = n;
  /* Slices over our own memory (static key, value freed by drop_token):
   * gRPC copies what it sends, and no call outlives the channel. */
  ch->auth.key = grpc_slice_from_static_string("authorization");
  ch->auth.value = grpc_slice_from_static_buffer(ch->auth_value, n);
  ch->nauth = 1;
  return FSPS_OK;
}

rpc_channel *rpc_channel_create_on(const char *target, rpc_loop *loop,
                                   int max_message_bytes, rpc_status *st) {
  return channel_on(target, loop, max_message_bytes, NULL, st);
}

rpc_channel *rpc_channel_create(const char *target, int max_message_bytes,
                                rpc_status *st) {
  return rpc_channel_create_tls(target, NULL, max_message_bytes, NULL, st);
}

void rpc_channel_destroy(rpc_channel *ch) {
  if (ch == NULL)
    return;
  pthread_mutex_lock(&ch->mu);
  for (rpc_stream *s = ch->live; s != NULL; s = s->next)
    grpc_call_cancel(s->call, NULL);
  while (ch->live != NULL)
    pthread_cond_wait(&ch->cv, &ch->mu);
  pthread_mutex_unlock(&ch->mu);
  /* Every stream has ended: the loop holds no event of this channel. */
  if (ch->own_loop)
    rpc_loop_destroy(ch->loop);
  grpc_channel_destroy(ch->ch);
  drop_token(ch);
  pthread_mutex_destroy(&ch->mu);
  pthread_cond_destroy(&ch->cv);
  free(ch->target);
  free(ch);
  rpc_shutdown();
}

const char *rpc_channel_target(const rpc_channel *ch) {
  return ch->target;
}

/* method_handle returns the registered-call handle for path, registering
 * it the first time (paths are string literals that outlive the channel). */
static void *method_handle(rpc_channel *ch, const char *path) {
  void *h = NULL;
  pthread_mutex_lock(&ch->mu);
  for (int i = 0; i < ch->nmethods && h == NULL; i++)
    if (strcmp(ch->methods[i].path, path) == 0)
      h = ch->methods[i].handle;
  if (h == NULL) {
    h = grpc_channel_register_call(ch->ch, path, NULL, NULL);
    if (ch->nmethods < MAX_METHODS)
      ch->methods[ch->nmethods++] = (method_entry){path, h};
  }
  pthread_mutex_unlock(&ch->mu);
  return h;
}

static grpc_call *new_call(rpc_channel *ch, const char *path,
                           grpc_completion_queue *cq, int64_t timeout_ms) {
  return grpc_channel_create_registered_call(
      ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method_handle(ch, path),
      rpc_deadline(timeout_ms), NULL);
}

/* fill_status turns gRPC's status into an rpc_status naming the server. */
static int fill_status(rpc_channel *ch, grpc_status_code code,
                       grpc_slice details, const char *error_string,
                       rpc_status *st) {
  fsps_err err = rpc_from_grpc(code);
  if (err == FSPS_OK)
    return rpc_status_set(st, FSPS_OK, "OK");
  char *d = grpc_slice_to_c_string(details);
  if (err == FSPS_UNAUTHENTICATED || err == FSPS_PERMISSION_DENIED)
    rpc_status_set(st, err, "server %s refused the call (%s): %s%s", ch->target,
                   fsps_err_name(err), d,
                   err == FSPS_UNAUTHENTICATED && ch->nauth == 0
                       ? " (this client sends no token)"
                       : "");
  else
    rpc_status_set(st, err, "server %s: %s: %s%s%s", ch->target,
                   fsps_err_name(err), d, error_string && !*d ? " " : "",
                   error_string && !*d ? error_string : "");
  gpr_free(d);
  return err;
}

/* ---- unary ---- */

int rpc_unary(rpc_channel *ch, const char *path, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *reply_desc,
              ProtobufCMessage **reply, int64_t timeout_ms, rpc_status *st) {
  *reply = NULL;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call = new_call(ch, path, cq, timeout_ms);
  grpc_byte_buffer *req_bb = rpc_pack_message(req), *reply_bb = NULL;
  grpc_metadata_array init_md, trail_md;
  grpc_metadata_array_init(&init_md);
  grpc_metadata_array_init(&trail_md);
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  const char *err = NULL;
  grpc_op ops[6] = {{.op = GRPC_OP_SEND_INITIAL_METADATA},
                    {.op = GRPC_OP_SEND_MESSAGE},
                    {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT},
                    {.op = GRPC_OP_RECV_INITIAL_METADATA},
                    {.op = GRPC_OP_RECV_MESSAGE},
                    {.op = GRPC_OP_RECV_STATUS_ON_CLIENT}};
  ops[0].data.send_initial_metadata.count = ch->nauth;
  ops[0].data.send_initial_metadata.metadata = &ch->auth;
  ops[1].data.send_message.send_message = req_bb;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
  ops[4].data.recv_message.recv_message = &reply_bb;
  ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &details;
  ops[5].data.recv_status_on_client.error_string = &err;
  int rc = FSPS_INTERNAL;
  if (grpc_call_start_batch(call, ops, 6, ops, NULL) == GRPC_CALL_OK) {
    grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                NULL);
    rc = fill_status(ch, code, details, err, st);
  } else {
    rpc_status_set(st, rc, "server %s: cannot start call %s", ch->target, path);
  }
  if (rc == FSPS_OK && reply_bb == NULL)
    rc = rpc_status_set(st, FSPS_INTERNAL, "server %s: %s sent no reply",
                        ch->target, path);
  if (rc == FSPS_OK) {
    rpc_msg m;
    rc = rpc_msg_open(&m, reply_bb);
    if (rc == FSPS_OK) {
      rc = rpc_msg_unpack(&m, reply_desc, reply, st);
      rpc_msg_close(&m);
    }
  }
  if (reply_bb)
    grpc_byte_buffer_destroy(reply_bb);
  grpc_byte_buffer_destroy(req_bb);
  grpc_metadata_array_destroy(&init_md);
  grpc_metadata_array_destroy(&trail_md);
  grpc_slice_unref(details);
  gpr_free((void *)err);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
  return rc;
}

/* ---- streams ---- */

static void stream_unref(rpc_stream *s);

static bool sstart(rpc_stream *s, const grpc_op *ops, size_t n, stag *t) {
  atomic_fetch_add(&s->refs, 1);
  RPC_HANDOFF(t);
  if (grpc_call_start_batch(s->call, ops, n, t, NULL) == GRPC_CALL_OK)
    return true;
  atomic_fetch_sub(&s->refs, 1);
  return false;
}

static void stream_recv(rpc_stream *s) {
  grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
  op.data.recv_message.recv_message = &s->recv_bb;
  sstart(s, &op, 1, &s->t_recv);
}

static void stream_free(rpc_stream *s) {
  RPC_RECEIVED(s); /* see rpc_stream_cancel */
  rpc_channel *ch = s->ch;
  pthread_mutex_lock(&ch->mu);
  if (s->prev)
    s->prev->next = s->next;
  else
    ch->live = s->next;
  if (s->next)
    s->next->prev = s->prev;
  pthread_cond_broadcast(&ch->cv);
  pthread_mutex_unlock(&ch->mu);
  grpc_metadata_array_destroy(&s->init_md);
  grpc_metadata_array_destroy(&s->trail_md);
  grpc_slice_unref(s->details);
  gpr_free((void *)s->error_string);
  if (s->req_bb)
    grpc_byte_buffer_destroy(s->req_bb);
  grpc_call_unref(s->call);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* finish_stream runs on_done once every batch is over. */
static void finish_stream(rpc_stream *s) {
  rpc_status st;
  fill_status(s->ch, s->status, s->details, s->error_string, &st);
  rpc_msg m, *reply = NULL;
  if (s->reply_bb && rpc_msg_open(&m, s->reply_bb) == FSPS_OK)
    reply = &m;
  if (s->cbs.on_done)
    s->cbs.on_done(s, &st, reply, s->cbs.ctx);
  if (reply)
    rpc_msg_close(reply);
  if (s->reply_bb)
    grpc_byte_buffer_destroy(s->reply_bb);
  stream_free(s);
}

static void stream_unref(rpc_stream *s) {
  if (atomic_fetch_sub(&s->refs, 1) == 1)
    finish_stream(s);
}

static void on_stream_recv(rpc_stream *s, bool ok) {
  grpc_byte_buffer *bb = s->recv_bb;
  s->recv_bb = NULL;
  if (s->kind == RPC_CLIENT_STREAMING) {
    s->reply_bb = bb; /* the single reply, handed to on_done */
    return;
  }
  if (!ok || bb == NULL) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
    return;
  }
  rpc_msg m;
  if (rpc_msg_open(&m, bb) == FSPS_OK) {
    if (s->cbs.on_message)
      s->cbs.on_message(s, &m, s->cbs.ctx);
    rpc_msg_close(&m);
  } else {
    grpc_call_cancel(s->call, NULL);
  }
  grpc_byte_buffer_destroy(bb);
  stream_recv(s);
}

static void on_stream_send(rpc_stream *s, bool ok) {
  pthread_mutex_lock(&s->mu);
  grpc_byte_buffer *bb = s->send_bb;
  s->send_bb = NULL;
  s->sending = false;
  pthread_mutex_unlock(&s->mu);
  if (bb)
    grpc_byte_buffer_destroy(bb);
  if (s->cbs.on_sent)
    s->cbs.on_sent(s, ok, s->cbs.ctx);
}

static void *loop_thread(void *arg) {
  rpc_loop *l = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        l->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      return NULL;
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    stag *t = ev.tag;
    RPC_RECEIVED(t);
    if (t->kind == ST_RECV)
      on_stream_recv(t->s, ev.success != 0);
    else if (t->kind == ST_SEND)
      on_stream_send(t->s, ev.success != 0);
    stream_unref(t->s);
  }
}

static rpc_stream *stream_new(rpc_channel *ch, rpc_kind kind,
                              const rpc_stream_cbs *cbs) {
  rpc_stream *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->ch = ch;
  s->kind = kind;
  s->cbs = *cbs;
  atomic_init(&s->refs, 1);
  pthread_mutex_init(&s->mu, NULL);
  grpc_metadata_array_init(&s->init_md);
  grpc_metadata_array_init(&s->trail_md);
  s->details = grpc_empty_slice();
  s->status = GRPC_STATUS_UNKNOWN;
  s->t_start = (stag){ST_START, s};
  s->t_recv = (stag){ST_RECV, s};
  s->t_send = (stag){ST_SEND, s};
  s->t_close = (stag){ST_CLOSE, s};
  s->t_status = (stag){ST_STATUS, s};
  return s;
}

static void link_live(rpc_stream *s) {
  rpc_channel *ch = s->ch;
  pthread_mutex_lock(&ch->mu);
  s->next = ch->live;
  if (ch->live)
    ch->live->prev = s;
  ch->live = s;
  pthread_mutex_unlock(&ch->mu);
}

/* start_ops starts the opening batches of a stream. */
static bool start_ops(rpc_stream *s, const ProtobufCMessage *req) {
  grpc_op ops[4] = {{.op = GRPC_OP_SEND_INITIAL_METADATA},
                    {.op = GRPC_OP_RECV_INITIAL_METADATA}};
  ops[0].data.send_initial_metadata.count = s->ch->nauth;
  ops[0].data.send_initial_metadata.metadata = &s->ch->auth;
  ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
  size_t n = 2;
  if (s->kind == RPC_SERVER_STREAMING) {
    s->req_bb = rpc_pack_message(req);
    ops[n] = (grpc_op){.op = GRPC_OP_SEND_MESSAGE};
    ops[n++].data.send_message.send_message = s->req_bb;
    ops[n++] = (grpc_op){.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
  }
  grpc_op st = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
  st.data.recv_status_on_client.trailing_metadata = &s->trail_md;
  st.data.recv_status_on_client.status = &s->status;
  st.data.recv_status_on_client.status_details = &s->details;
  st.data.recv_status_on_client.error_string = &s->error_string;
  if (!sstart(s, ops, n, &s->t_start) || !sstart(s, &st, 1, &s->t_status))
    return false;
  stream_recv(s);
  return true;
}

rpc_stream *rpc_stream_start(rpc_channel *ch, const char *path, rpc_kind kind,
                             const ProtobufCMessage *req, int64_t timeout_ms,
                             const rpc_stream_cbs *cbs, rpc_status *st) {
  rpc_stream *s = stream_new(ch, kind, cbs);
  if (s == NULL) {
    rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  s->call = new_call(ch, path, ch->loop->cq, timeout_ms);
  link_live(s);
  if (!start_ops(s, req)) {
    /* Batches that did start complete (cancelled) and drop their refs. */
    rpc_status_set(st, FSPS_INTERNAL, "server %s: cannot start %s", ch->target,
                   path);
    s->cbs.on_done = NULL;
    grpc_call_cancel(s->call, NULL);
    stream_unref(s);
    return NULL;
  }
  /* A server stream needs nothing more from the caller: drop the creator's
   * reference. A client stream keeps it until rpc_stream_close_send. */
  if (kind == RPC_SERVER_STREAMING)
    stream_unref(s);
  return s;
}

int rpc_stream_send_tensor(rpc_stream *s, const rpc_tensor_hdr *h,
                           const void *data, size_t nbytes,
                           rpc_release_fn release, void *arg) {
  pthread_mutex_lock(&s->mu);
  if (s->sending) {
    pthread_mutex_unlock(&s->mu);
    if (release)
      release(arg);
    return FSPS_INTERNAL;
  }
  s->send_bb = rpc_pack_tensor(h, data, nbytes, release, arg);
  grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
  op.data.send_message.send_message = s->send_bb;
  s->sending = true;
  bool ok = sstart(s, &op, 1, &s->t_send);
  if (!ok) {
    s->sending = false;
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
  }
  pthread_mutex_unlock(&s->mu);
  return ok ? FSPS_OK : FSPS_CANCELLED;
}

int rpc_stream_close_send(rpc_stream *s) {
  grpc_op op = {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
  int rc = sstart(s, &op, 1, &s->t_close) ? FSPS_OK : FSPS_CANCELLED;
  stream_unref(s); /* the creator's reference */
  return rc;
}

void rpc_stream_cancel(rpc_stream *s) {
  grpc_call *call = s->call;
  /* The cancel completes the call's batches, after which the loop thread
   * frees s (stream_free): an order gRPC gives and TSan cannot see. */
  RPC_HANDOFF(s);
  grpc_call_cancel(call, NULL);
}
