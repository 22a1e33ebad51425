/* server.c: the gRPC server side — one completion queue per thread, method
 * registration, and each call a small state machine whose tags live in the
 * call itself. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "rpc_int.h"

/* Pending requests kept per (method, queue), so bursts are accepted. */
#define REQUESTS_PER_METHOD 4

typedef enum {
  TAG_NEW,
  TAG_GENERIC_NEW,
  TAG_RECV,
  TAG_SEND,
  TAG_STATUS,
  TAG_CLOSE,
  TAG_SHUTDOWN,
} tag_kind;

typedef struct {
  tag_kind kind;
  void *obj;
} tag;

/* One outstanding grpc_server_request_(registered_)call. */
typedef struct {
  tag t;
  rpc_server *srv;
  const rpc_method *m; /* NULL: generic (unregistered) request */
  void *reg;
  int cq;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_call_details details;
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
} pending;

struct rpc_call {
  rpc_server *srv;
  const rpc_method *m;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  pthread_mutex_t mu;
  atomic_int refs;
  bool md_sent, finished, sending, status_done, close_done, life_dropped;
  int close_cancelled;
  grpc_byte_buffer *recv_bb, *send_bb, *status_bb;
  grpc_slice details;
  tag t_recv, t_send, t_status, t_close;
  void *user;
  int auth; /* what the gate said the caller may do (rpc_call_set_auth) */
};

struct rpc_server {
  grpc_server *server;
  int nthreads, port;
  grpc_completion_queue **cqs;
  pthread_t *threads;
  const rpc_method *methods;
  size_t nmethods;
  void **reg;
  tag t_shutdown;
  bool stopping; /* under mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool shutdown_done, started, destroyed;
  rpc_gate_fn gate; /* NULL: every call passes */
  void *gate_ctx;
  rpc_tls_watch *tls; /* NULL: plaintext */
};

static void unimplemented_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)msg;
  (void)ctx;
  rpc_call_finish(call, NULL, FSPS_UNIMPLEMENTED, "unknown method");
}

static const rpc_method unimplemented = {
    .path = "", .kind = RPC_UNARY, .on_start = unimplemented_start};

/* ---- requesting calls ---- */

static void request(pending *p) {
  rpc_server *srv = p->srv;
  grpc_completion_queue *cq = srv->cqs[p->cq];
  grpc_call_error e;
  p->call = NULL;
  p->payload = NULL;
  grpc_metadata_array_init(&p->md);
  RPC_HANDOFF(&p->t);
  if (p->m == NULL) {
    grpc_call_details_init(&p->details);
    e = grpc_server_request_call(srv->server, &p->call, &p->details, &p->md, cq,
                                 cq, &p->t);
  } else {
    bool want = p->m->kind != RPC_CLIENT_STREAMING;
    e = grpc_server_request_registered_call(
        srv->server, p->reg, &p->call, &p->deadline, &p->md,
        want ? &p->payload : NULL, cq, cq, &p->t);
  }
  if (e != GRPC_CALL_OK) {
    grpc_metadata_array_destroy(&p->md);
    if (p->m == NULL)
      grpc_call_details_destroy(&p->details);
    free(p);
  }
}

static int add_request(rpc_server *srv, const rpc_method *m, void *reg,
                       int cq) {
  pending *p = calloc(1, sizeof *p);
  if (p == NULL)
    return FSPS_RESOURCE_EXHAUSTED;
  p->t.kind = m ? TAG_NEW : TAG_GENERIC_NEW;
  p->t.obj = p;
  p->srv = srv;
  p->m = m;
  p->reg = reg;
  p->cq = cq;
  request(p);
  return FSPS_OK;
}

/* ---- call lifecycle ---- */

void rpc_call_ref(rpc_call *call) {
  atomic_fetch_add(&call->refs, 1);
}

void rpc_call_unref(rpc_call *call) {
  if (atomic_fetch_sub(&call->refs, 1) != 1)
    return;
  if (call->m->on_done)
    call->m->on_done(call, call->m->ctx);
  grpc_metadata_array_destroy(&call->md);
  grpc_call_unref(call->call);
  pthread_mutex_destroy(&call->mu);
  free(call);
}

static rpc_call *call_new(pending *p, const rpc_method *m) {
  rpc_call *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->srv = p->srv;
  c->m = m;
  c->call = p->call;
  c->deadline = p->m ? p->deadline : p->details.deadline;
  c->md = p->md; /* moves the array */
  pthread_mutex_init(&c->mu, NULL);
  atomic_init(&c->refs, 1);
  c->t_recv = (tag){TAG_RECV, c};
  c->t_send = (tag){TAG_SEND, c};
  c->t_status = (tag){TAG_STATUS, c};
  c->t_close = (tag){TAG_CLOSE, c};
  return c;
}

/* start runs a batch holding a reference; false if gRPC refused it. */
static bool start(rpc_call *c, const grpc_op *ops, size_t n, tag *t) {
  rpc_call_ref(c);
  RPC_HANDOFF(t);
  if (grpc_call_start_batch(c->call, ops, n, t, NULL) == GRPC_CALL_OK)
    return true;
  atomic_fetch_sub(&c->refs, 1);
  return false;
}

/* mark_done records that the status (or close) op is over and drops the
 * call's life reference once both are. */
static void mark_done(rpc_call *c, bool *flag) {
  pthread_mutex_lock(&c->mu);
  *flag = true;
  bool drop = c->status_done && c->close_done && !c->life_dropped;
  if (drop)
    c->life_dropped = true;
  pthread_mutex_unlock(&c->mu);
  if (drop)
    rpc_call_unref(c);
}

static void start_recv(rpc_call *c) {
  grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
  op.data.recv_message.recv_message = &c->recv_bb;
  start(c, &op, 1, &c->t_recv);
}

static void deliver(rpc_call *c, grpc_byte_buffer *bb,
                    void (*fn)(rpc_call *, rpc_msg *, void *)) {
  rpc_msg msg;
  if (bb == NULL) {
    fn(c, NULL, c->m->ctx);
    return;
  }
  if (rpc_msg_open(&msg, bb) != FSPS_OK) {
    rpc_call_finish(c, NULL, FSPS_RESOURCE_EXHAUSTED, "cannot read message");
    return;
  }
  fn(c, &msg, c->m->ctx);
  rpc_msg_close(&msg);
}

static void drop_pending(pending *p) {
  if (p->call)
    grpc_call_unref(p->call);
  if (p->payload)
    grpc_byte_buffer_destroy(p->payload);
  grpc_metadata_array_destroy(&p->md);
  if (p->m == NULL)
    grpc_call_details_destroy(&p->details);
  free(p);
}

/* rerequest asks for the next call of p's method on p's queue, unless the
 * server is stopping. Under srv->mu so that no request can start once
 * rpc_server_shutdown has set `stopping` (the server is destroyed next). */
static bool rerequest(pending *p) {
  rpc_server *srv = p->srv;
  pthread_mutex_lock(&srv->mu);
  bool go = !srv->stopping;
  if (go)
    request(p);
  pthread_mutex_unlock(&srv->mu);
  return go;
}

/* call_path copies the method path of p's call into out. */
static void call_path(const pending *p, char *out, size_t outlen) {
  if (p->m != NULL) {
    snprintf(out, outlen, "%s", p->m->path);
    return;
  }
  size_t n = GRPC_SLICE_LENGTH(p->details.method);
  if (n >= outlen)
    n = outlen - 1;
  memcpy(out, GRPC_SLICE_START_PTR(p->details.method), n);
  out[n] = '\0';
}

/* admitted asks the gate about a new call; a refused call is finished
 * here, before its method sees it. */
static bool admitted(rpc_server *srv, rpc_call *c, const char *path) {
  if (srv->gate == NULL)
    return true;
  char msg[512] = "";
  int rc = srv->gate(c, path, msg, sizeof msg, srv->gate_ctx);
  if (rc == FSPS_OK)
    return true;
  rpc_call_finish(c, NULL, rc, msg);
  return false;
}

/* begin_call hands a new, admitted call to its method: a client stream
 * starts receiving, other calls get their request. */
static void begin_call(rpc_call *c, const rpc_method *m,
                       grpc_byte_buffer *payload) {
  if (m->kind == RPC_CLIENT_STREAMING) {
    m->on_start(c, NULL, m->ctx);
    pthread_mutex_lock(&c->mu);
    bool go = !c->finished;
    pthread_mutex_unlock(&c->mu);
    if (go)
      start_recv(c);
  } else if (payload == NULL && m != &unimplemented) {
    rpc_call_finish(c, NULL, FSPS_INVALID_ARGUMENT, "request has no message");
  } else {
    deliver(c, payload, m->on_start);
  }
}

static void on_new_call(pending *p, bool ok) {
  rpc_server *srv = p->srv;
  const rpc_method *m = p->m ? p->m : &unimplemented;
  pthread_mutex_lock(&srv->mu);
  bool stopping = srv->stopping;
  pthread_mutex_unlock(&srv->mu);
  if (!ok || stopping) {
    drop_pending(p);
    return;
  }
  char path[256];
  call_path(p, path, sizeof path);
  rpc_call *c = call_new(p, m);
  grpc_byte_buffer *payload = p->payload;
  if (p->m == NULL)
    grpc_call_details_destroy(&p->details);
  p->call = NULL;
  p->payload = NULL;
  if (!rerequest(p)) { /* the next call of this method on this queue */
    grpc_metadata_array_init(&p->md); /* moved into c: give drop a fresh one */
    if (p->m == NULL)
      grpc_call_details_init(&p->details);
    drop_pending(p);
  }
  if (c == NULL) {
    if (payload)
      grpc_byte_buffer_destroy(payload);
    return;
  }
  grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
  op.data.recv_close_on_server.cancelled = &c->close_cancelled;
  start(c, &op, 1, &c->t_close);
  if (admitted(srv, c, path))
    begin_call(c, m, payload);
  if (payload)
    grpc_byte_buffer_destroy(payload);
}

static void on_recv(rpc_call *c, bool ok) {
  grpc_byte_buffer *bb = c->recv_bb;
  c->recv_bb = NULL;
  if (ok && c->m->on_message)
    deliver(c, bb, c->m->on_message);
  if (bb)
    grpc_byte_buffer_destroy(bb);
  pthread_mutex_lock(&c->mu);
  bool go = ok && bb != NULL && !c->finished;
  pthread_mutex_unlock(&c->mu);
  if (go)
    start_recv(c);
}

static void on_send(rpc_call *c, bool ok) {
  pthread_mutex_lock(&c->mu);
  grpc_byte_buffer *bb = c->send_bb;
  c->send_bb = NULL;
  c->sending = false;
  pthread_mutex_unlock(&c->mu);
  if (bb)
    grpc_byte_buffer_destroy(bb);
  if (c->m->on_sent)
    c->m->on_sent(c, ok, c->m->ctx);
}

static void on_status(rpc_call *c) {
  if (c->status_bb)
    grpc_byte_buffer_destroy(c->status_bb);
  c->status_bb = NULL;
  grpc_slice_unref(c->details);
  mark_done(c, &c->status_done);
}

static void on_close(rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  bool cancelled = c->close_cancelled && !c->finished;
  pthread_mutex_unlock(&c->mu);
  if (cancelled) {
    if (c->m->on_cancel)
      c->m->on_cancel(c, c->m->ctx);
    rpc_call_finish(c, NULL, FSPS_CANCELLED, "call cancelled");
  }
  mark_done(c, &c->close_done);
}

static void dispatch(rpc_server *srv, tag *t, bool ok) {
  rpc_call *c = t->obj;
  switch (t->kind) {
  case TAG_NEW:
  case TAG_GENERIC_NEW:
    on_new_call(t->obj, ok);
    return;
  case TAG_SHUTDOWN:
    pthread_mutex_lock(&srv->mu);
    srv->shutdown_done = true;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    return;
  case TAG_RECV:
    on_recv(c, ok);
    break;
  case TAG_SEND:
    on_send(c, ok);
    break;
  case TAG_STATUS:
    on_status(c);
    break;
  case TAG_CLOSE:
    on_close(c);
    break;
  }
  rpc_call_unref(c); /* the batch's reference */
}

typedef struct {
  rpc_server *srv;
  int cq;
} thread_arg;

static void *cq_thread(void *arg) {
  thread_arg a = *(thread_arg *)arg;
  free(arg);
  grpc_completion_queue *cq = a.srv->cqs[a.cq];
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      return NULL;
    if (ev.type == GRPC_OP_COMPLETE) {
      RPC_RECEIVED(ev.tag);
      dispatch(a.srv, ev.tag, ev.success != 0);
    }
  }
}

/* ---- public call API ---- */

void rpc_call_set_user(rpc_call *call, void *user) {
  call->user = user;
}

void *rpc_call_user(const rpc_call *call) {
  return call->user;
}

int64_t rpc_call_deadline_ms(const rpc_call *call) {
  gpr_timespec d = gpr_convert_clock_type(call->deadline, GPR_CLOCK_MONOTONIC);
  if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
    return INT64_MAX;
  gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
  return gpr_time_to_millis(left);
}

size_t rpc_call_metadata_raw(const rpc_call *call, const char *key,
                             const char **val, size_t *len) {
  size_t klen = strlen(key), n = 0;
  for (size_t i = 0; i < call->md.count; i++) {
    const grpc_metadata *md = &call->md.metadata[i];
    if (GRPC_SLICE_LENGTH(md->key) != klen ||
        memcmp(GRPC_SLICE_START_PTR(md->key), key, klen) != 0)
      continue;
    if (n++ == 0) {
      *val = (const char *)GRPC_SLICE_START_PTR(md->value);
      *len = GRPC_SLICE_LENGTH(md->value);
    }
  }
  return n;
}

void rpc_call_set_auth(rpc_call *call, int auth) {
  call->auth = auth;
}

int rpc_call_auth(const rpc_call *call) {
  return call->auth;
}

void rpc_call_peer(const rpc_call *call, char *out, size_t outlen) {
  char *peer = grpc_call_get_peer(call->call);
  snprintf(out, outlen, "%s", peer ? peer : "unknown peer");
  gpr_free(peer);
}

bool rpc_call_metadata(const rpc_call *call, const char *key, char *out,
                       size_t outlen) {
  size_t klen = strlen(key);
  for (size_t i = 0; i < call->md.count; i++) {
    const grpc_metadata *md = &call->md.metadata[i];
    if (GRPC_SLICE_LENGTH(md->key) != klen ||
        memcmp(GRPC_SLICE_START_PTR(md->key), key, klen) != 0)
      continue;
    size_t vlen = GRPC_SLICE_LENGTH(md->value);
    if (vlen >= outlen)
      vlen = outlen - 1;
    memcpy(out, GRPC_SLICE_START_PTR(md->value), vlen);
    out[vlen] = '\0';
    return true;
  }
  return false;
}

int rpc_call_send_tensor(rpc_call *call, const rpc_tensor_hdr *h,
                         const void *data, size_t nbytes,
                         rpc_release_fn release, void *arg) {
  pthread_mutex_lock(&call->mu);
  if (call->finished || call->sending) {
    int rc = call->finished ? FSPS_CANCELLED : FSPS_INTERNAL;
    pthread_mutex_unlock(&call->mu);
    if (release)
      release(arg);
    return rc;
  }
  grpc_op ops[2] = {{.op = GRPC_OP_SEND_INITIAL_METADATA},
                    {.op = GRPC_OP_SEND_MESSAGE}};
  call->send_bb = rpc_pack_tensor(h, data, nbytes, release, arg);
  ops[1].data.send_message.send_message = call->send_bb;
  size_t first = call->md_sent ? 1 : 0;
  call->md_sent = true;
  call->sending = true;
  bool ok = start(call, ops + first, 2 - first, &call->t_send);
  if (!ok) {
    call->sending = false;
    grpc_byte_buffer_destroy(call->send_bb);
    call->send_bb = NULL;
  }
  pthread_mutex_unlock(&call->mu);
  return ok ? FSPS_OK : FSPS_CANCELLED;
}

void rpc_call_finish(rpc_call *call, const ProtobufCMessage *reply, int code,
                     const char *details) {
  pthread_mutex_lock(&call->mu);
  if (call->finished) {
    pthread_mutex_unlock(&call->mu);
    return;
  }
  call->finished = true;
  grpc_op ops[3];
  size_t n = 0;
  if (!call->md_sent)
    ops[n++] = (grpc_op){.op = GRPC_OP_SEND_INITIAL_METADATA};
  call->md_sent = true;
  if (reply && code == FSPS_OK && !call->sending) {
    call->status_bb = rpc_pack_message(reply);
    ops[n] = (grpc_op){.op = GRPC_OP_SEND_MESSAGE};
    ops[n++].data.send_message.send_message = call->status_bb;
  }
  call->details = grpc_slice_from_copied_string(details ? details : "");
  ops[n] = (grpc_op){.op = GRPC_OP_SEND_STATUS_FROM_SERVER};
  ops[n].data.send_status_from_server.status = rpc_to_grpc(code);
  ops[n++].data.send_status_from_server.status_details = &call->details;
  if (!start(call, ops, n, &call->t_status)) {
    /* The call is already over; account for the status as done. */
    if (call->status_bb)
      grpc_byte_buffer_destroy(call->status_bb);
    call->status_bb = NULL;
    grpc_slice_unref(call->details);
    call->status_done = true;
  }
  pthread_mutex_unlock(&call->mu);
}

void rpc_call_failf(rpc_call *call, int code, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  rpc_call_finish(call, NULL, code, buf);
}

/* ---- server lifecycle ---- */

static int register_all(rpc_server *srv, rpc_status *st) {
  srv->reg = calloc(srv->nmethods, sizeof *srv->reg);
  if (srv->reg == NULL)
    return rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < srv->nmethods; i++) {
    const rpc_method *m = &srv->methods[i];
    grpc_server_register_method_payload_handling ph =
        m->kind == RPC_CLIENT_STREAMING
            ? GRPC_SRM_PAYLOAD_NONE
            : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
    srv->reg[i] =
        grpc_server_register_method(srv->server, m->path, NULL, ph, 0);
    if (srv->reg[i] == NULL)
      return rpc_status_set(st, FSPS_INTERNAL, "cannot register method %s",
                            m->path);
  }
  return FSPS_OK;
}

/* new_queue creates queue i of n. Only the first half (rounded up) poll
 * the sockets; the others just run handlers. With epoll1 every polling
 * thread takes part in reading every connection, and the poller role moves
 * to another thread on each event: with two pollers one stream's messages
 * bounced between threads, costing 30-50% more server CPU per byte and a
 * slower push on two cores. Non-polling queues still spread handler work
 * (copies, the optimizer) over threads while pollers read. */
static grpc_completion_queue *new_queue(int i, int n) {
  grpc_completion_queue_attributes attr = {
      .version = GRPC_CQ_CURRENT_VERSION,
      .cq_completion_type = GRPC_CQ_NEXT,
      .cq_polling_type =
          i < (n + 1) / 2 ? GRPC_CQ_DEFAULT_POLLING : GRPC_CQ_NON_POLLING,
  };
  return grpc_completion_queue_create(
      grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
}

static int create_queues(rpc_server *srv, rpc_status *st) {
  srv->cqs = calloc((size_t)srv->nthreads, sizeof *srv->cqs);
  srv->threads = calloc((size_t)srv->nthreads, sizeof *srv->threads);
  if (srv->cqs == NULL || srv->threads == NULL)
    return rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; i < srv->nthreads; i++) {
    srv->cqs[i] = new_queue(i, srv->nthreads);
    grpc_server_register_completion_queue(srv->server, srv->cqs[i], NULL);
  }
  return FSPS_OK;
}

/* server_creds makes the port's credentials: TLS alone when asked for (a
 * TLS port never takes a plaintext connection), else plaintext. */
static grpc_server_credentials *
server_creds(rpc_server *srv, const rpc_server_tls *tls, rpc_status *st) {
  if (tls == NULL)
    return grpc_insecure_server_credentials_create();
  srv->tls = rpc_tls_watch_create(tls, st);
  if (srv->tls == NULL)
    return NULL;
  grpc_server_credentials *c = rpc_tls_watch_creds(srv->tls);
  if (c == NULL)
    rpc_status_set(st, FSPS_INTERNAL, "gRPC refused the TLS credentials");
  return c;
}

static int bind_port(rpc_server *srv, const char *listen,
                     const rpc_server_tls *tls, rpc_status *st) {
  grpc_server_credentials *creds = server_creds(srv, tls, st);
  if (creds == NULL)
    return st ? st->code : FSPS_INTERNAL;
  srv->port = grpc_server_add_http2_port(srv->server, listen, creds);
  grpc_server_credentials_release(creds);
  if (srv->port == 0)
    return rpc_status_set(st, FSPS_UNAVAILABLE,
                          "cannot listen on %s (address in use, or not an "
                          "address of this machine?)",
                          listen);
  return FSPS_OK;
}

rpc_server *rpc_server_create(const rpc_server_opts *opts,
                              const rpc_method *methods, size_t nmethods,
                              rpc_status *st) {
  if (opts->threads < 1 || opts->max_message_bytes < 0) {
    rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                   "threads must be >= 1 and max_message_bytes >= 0");
    return NULL;
  }
  rpc_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return NULL;
  rpc_init();
  srv->nthreads = opts->threads;
  srv->methods = methods;
  srv->nmethods = nmethods;
  srv->t_shutdown = (tag){TAG_SHUTDOWN, srv};
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->cv, NULL);
  rpc_args a;
  srv->server =
      grpc_server_create(rpc_channel_args(&a, opts->max_message_bytes), NULL);
  if (register_all(srv, st) != FSPS_OK || create_queues(srv, st) != FSPS_OK ||
      bind_port(srv, opts->listen, opts->tls, st) != FSPS_OK) {
    rpc_server_destroy(srv);
    return NULL;
  }
  return srv;
}

void rpc_server_set_gate(rpc_server *srv, rpc_gate_fn gate, void *ctx) {
  srv->gate = gate;
  srv->gate_ctx = ctx;
}

int rpc_server_port(const rpc_server *srv) {
  return srv->port;
}

void rpc_server_tls_poll(rpc_server *srv) {
  if (srv->tls != NULL)
    rpc_tls_watch_poll(srv->tls);
}

int rpc_server_start(rpc_server *srv, rpc_status *st) {
  grpc_server_start(srv->server);
  srv->started = true;
  for (int q = 0; q < srv->nthreads; q++) {
    for (size_t i = 0; i < srv->nmethods; i++)
      for (int k = 0; k < REQUESTS_PER_METHOD; k++)
        add_request(srv, &srv->methods[i], srv->reg[i], q);
    add_request(srv, NULL, NULL, q);
  }
  for (int q = 0; q < srv->nthreads; q++) {
    thread_arg *a = malloc(sizeof *a);
    if (a == NULL)
      return rpc_status_set(st, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    *a = (thread_arg){srv, q};
    if (pthread_create(&srv->threads[q], NULL, cq_thread, a) != 0) {
      free(a);
      return rpc_status_set(st, FSPS_INTERNAL, "cannot start thread %d", q);
    }
  }
  return FSPS_OK;
}

/* wait_shutdown waits for the shutdown tag, for at most ms (<= 0: no
 * limit); true once it has arrived. */
static bool wait_shutdown(rpc_server *srv, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&srv->mu);
  while (!srv->shutdown_done) {
    if (ms <= 0)
      pthread_cond_wait(&srv->cv, &srv->mu);
    else if (pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) != 0)
      break;
  }
  bool done = srv->shutdown_done;
  pthread_mutex_unlock(&srv->mu);
  return done;
}

void rpc_server_shutdown(rpc_server *srv, int64_t grace_ms) {
  if (!srv->started)
    return;
  pthread_mutex_lock(&srv->mu);
  srv->stopping = true;
  pthread_mutex_unlock(&srv->mu);
  RPC_HANDOFF(&srv->t_shutdown);
  grpc_server_shutdown_and_notify(srv->server, srv->cqs[0], &srv->t_shutdown);
  if (!wait_shutdown(srv, grace_ms > 0 ? grace_ms : 1)) {
    grpc_server_cancel_all_calls(srv->server);
    wait_shutdown(srv, 0);
  }
  grpc_server_destroy(srv->server);
  srv->destroyed = true;
  for (int q = 0; q < srv->nthreads; q++)
    grpc_completion_queue_shutdown(srv->cqs[q]);
  for (int q = 0; q < srv->nthreads; q++)
    pthread_join(srv->threads[q], NULL);
  srv->started = false;
}

void rpc_server_destroy(rpc_server *srv) {
  if (srv == NULL)
    return;
  if (srv->started)
    rpc_server_shutdown(srv, 0);
  if (srv->server && !srv->destroyed) {
    grpc_server_destroy(srv->server);
    for (int q = 0; srv->cqs && q < srv->nthreads; q++)
      if (srv->cqs[q])
        grpc_completion_queue_shutdown(srv->cqs[q]);
  }
  for (int q = 0; srv->cqs && q < srv->nthreads; q++) {
    if (srv->cqs[q]) {
      while (grpc_completion_queue_next(
                 srv->cqs[q], gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
                 .type != GRPC_QUEUE_SHUTDOWN)
        ;
      grpc_completion_queue_destroy(srv->cqs[q]);
    }
  }
  free(srv->cqs);
  free(srv->threads);
  free(srv->reg);
  /* After grpc_server_destroy: no handshake asks for certificates now. */
  rpc_tls_watch_destroy(srv->tls);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->cv);
  free(srv);
  rpc_shutdown();
}
