/* push.c: reduce-scattered pushes — slice s of a gradient streamed to
 * server s in 1 MiB chunks that point into the caller's buffer (no copy). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

typedef struct {
  push *p;
  uint32_t s;
  uint64_t off, cnt;      /* the server's slice */
  uint64_t nchunks, next; /* chunks in the slice; next to send */
  uint32_t attempts;
  uint32_t releases; /* payloads gRPC still references; under c->mu */
  bool ended;        /* final outcome known; under c->mu */
  retry_item retry;
} push_part;

struct push {
  fsps_client *c;
  uint32_t layer, nparts;
  uint32_t pending;  /* parts not complete, plus one while starting */
  uint64_t seq;      /* the client's push number */
  push *prev, *next; /* the client's pushes in flight; under c->mu */
  uint64_t step;
  const float *grad;
  pool_buf *owned; /* returned to the pool at completion */
  int rc;
  char msg[CLIENT_MSG_MAX];
  push_part parts[];
};

/* push_complete_locked ends push p: its first error becomes the client's
 * (if it has none), its buffer goes back to the pool (c->mu held). */
static void push_complete_locked(push *p) {
  fsps_client *c = p->c;
  if (p->rc != FSPS_OK && c->push_rc == FSPS_OK) {
    c->push_rc = p->rc;
    memcpy(c->push_msg, p->msg, sizeof c->push_msg);
  }
  if (p->owned != NULL)
    pool_put_locked(c, p->owned);
  c->pushes--;
  *(p->prev ? &p->prev->next : &c->push_head) = p->next;
  *(p->next ? &p->next->prev : &c->push_tail) = p->prev;
  run_deferred_locked(c); /* prefetches waiting for this buffer */
  pthread_cond_broadcast(&c->cv);
  free(p);
}

uint64_t push_low_water_locked(const fsps_client *c) {
  return c->push_head ? c->push_head->seq : c->push_next;
}

static void drop_pending_locked(push *p) {
  if (--p->pending == 0)
    push_complete_locked(p);
}

/* A part is complete when its outcome is known and gRPC has let go of
 * every payload it was handed, so the caller may reuse the buffer. */
static void part_check_locked(push_part *pp) {
  if (pp->ended && pp->releases == 0)
    drop_pending_locked(pp->p);
}

static void payload_released(void *arg) {
  push_part *pp = arg;
  fsps_client *c = pp->p->c;
  pthread_mutex_lock(&c->mu);
  pp->releases--;
  part_check_locked(pp);
  pthread_mutex_unlock(&c->mu);
}

static void record_locked(push *p, const push_part *pp, const rpc_status *st) {
  if (p->rc != FSPS_OK)
    return;
  p->rc = st->code;
  snprintf(p->msg, sizeof p->msg,
           "push layer %u step %" PRIu64 " to server %u of %u%s: %s", p->layer,
           p->step, pp->s, p->c->S,
           pp->attempts > 1 ? " (retries exhausted)" : "", st->msg);
}

/* part_result ends an attempt: a retry after a backoff for UNAVAILABLE
 * (the server drops duplicates), else the part's outcome. */
static void part_result(push_part *pp, const rpc_status *st) {
  fsps_client *c = pp->p->c;
  pthread_mutex_lock(&c->mu);
  if (st->code == RPC_UNAVAILABLE && pp->attempts <= client_retries(c) &&
      retry_schedule(c, &pp->retry, pp->attempts)) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  if (st->code != RPC_OK)
    record_locked(pp->p, pp, st);
  pp->ended = true;
  part_check_locked(pp); /* may free pp */
  pthread_mutex_unlock(&c->mu);
}

/* send_next sends pp's next chunk, or half-closes after the last one. */
static void send_next(push_part *pp, rpc_stream *s) {
  push *p = pp->p;
  if (pp->next == pp->nchunks) {
    rpc_stream_close_send(s);
    return;
  }
  uint64_t o, len;
  shard_chunk(pp->cnt, pp->next, &o, &len);
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, 1, p->layer);
  rpc_hdr_set(&h, 2, p->step);
  rpc_hdr_set(&h, 3, p->c->o.rank);
  rpc_hdr_set(&h, 4, pp->off + o);
  pp->next++;
  pthread_mutex_lock(&p->c->mu);
  pp->releases++;
  pthread_mutex_unlock(&p->c->mu);
  if (rpc_stream_send_tensor(s, &h, p->grad + pp->off + o, len * sizeof(float),
                             payload_released, pp) != RPC_OK)
    rpc_stream_close_send(s); /* on_done follows with the reason */
}

static void push_sent(rpc_stream *s, bool ok, void *ctx) {
  if (ok)
    send_next(ctx, s);
  else
    rpc_stream_close_send(s);
}

/* reply_status checks a finished push's reply; the server counted the
 * contribution only if every chunk went out and it answered. */
static void reply_status(const push_part *pp, rpc_msg *reply, rpc_status *st) {
  if (st->code != RPC_OK)
    return;
  const char *addr = pp->p->c->addr[pp->s];
  ProtobufCMessage *m = NULL;
  if (pp->next != pp->nchunks)
    rpc_status_set(st, RPC_INTERNAL, "server %s: stream ended early", addr);
  else if (reply == NULL)
    rpc_status_set(st, RPC_INTERNAL, "server %s: no PushReply", addr);
  else if (rpc_msg_unpack(reply, &fsps__v1__push_reply__descriptor, &m, NULL) !=
           RPC_OK)
    rpc_status_set(st, RPC_DATA_LOSS, "server %s: malformed PushReply", addr);
  if (m != NULL)
    protobuf_c_message_free_unpacked(m, NULL);
}

static void push_done(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                      void *ctx) {
  (void)s;
  push_part *pp = ctx;
  rpc_status res = *st;
  reply_status(pp, reply, &res);
  part_result(pp, &res);
}

static void part_start(push_part *pp) {
  fsps_client *c = pp->p->c;
  pp->next = 0;
  pp->attempts++;
  rpc_stream_cbs cbs = {.on_sent = push_sent, .on_done = push_done, .ctx = pp};
  rpc_status st;
  rpc_stream *s =
      rpc_stream_start(c->ch[pp->s], PATH_PUSH, RPC_CLIENT_STREAMING, NULL,
                       client_timeout_ms(c), &cbs, &st);
  if (s == NULL)
    part_result(pp, &st);
  else
    send_next(pp, s);
}

static void push_retry(retry_item *it, bool abort) {
  push_part *pp = (push_part *)((char *)it - offsetof(push_part, retry));
  if (abort)
    part_result(pp, &(rpc_status){RPC_CANCELLED, "the client is closing"});
  else
    part_start(pp);
}

static push *push_new(fsps_client *c, uint32_t layer, uint64_t n) {
  uint32_t np = 0;
  uint64_t off, cnt;
  for (uint32_t s = 0; plan_next(n, c->S, &s, &off, &cnt); s++)
    np++;
  push *p = calloc(1, sizeof *p + np * sizeof(push_part));
  if (p == NULL)
    return NULL;
  push_part *pp = p->parts;
  for (uint32_t s = 0; plan_next(n, c->S, &s, &off, &cnt); s++, pp++) {
    *pp = (push_part){.p = p, .s = s, .off = off, .cnt = cnt};
    pp->nchunks = shard_num_chunks(cnt);
    pp->retry.fire = push_retry;
  }
  p->c = c;
  p->layer = layer;
  p->nparts = np;
  p->pending = np + 1;
  return p;
}

int push_start(fsps_client *c, uint32_t layer, uint64_t step, const float *grad,
               pool_buf *owned) {
  push *p = push_new(c, layer, client_layer_n(c, layer));
  if (p == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory starting a push");
  p->step = step;
  p->grad = grad;
  p->owned = owned;
  c->pushed += client_layer_n(c, layer) * sizeof(float);
  pthread_mutex_lock(&c->mu);
  c->pushes++;
  p->seq = c->push_next++;
  p->prev = c->push_tail;
  *(c->push_tail ? &c->push_tail->next : &c->push_head) = p;
  c->push_tail = p;
  pthread_mutex_unlock(&c->mu);
  for (uint32_t i = 0; i < p->nparts; i++)
    part_start(&p->parts[i]);
  /* The extra pending count kept p alive through the loop. */
  pthread_mutex_lock(&c->mu);
  drop_pending_locked(p);
  pthread_mutex_unlock(&c->mu);
  return FSPS_OK;
}

int push_wait_all(fsps_client *c) {
  pthread_mutex_lock(&c->mu);
  while (c->pushes > 0)
    client_wait(c);
  int rc = c->push_rc;
  if (rc != FSPS_OK)
    memcpy(c->err, c->push_msg, sizeof c->err);
  c->push_rc = FSPS_OK;
  pthread_mutex_unlock(&c->mu);
  return rc;
}

void push_wait_below(fsps_client *c, uint32_t max) {
  pthread_mutex_lock(&c->mu);
  while (c->pushes > max)
    client_wait(c);
  pthread_mutex_unlock(&c->mu);
}

/* ---- public ---- */

int fsps_push(fsps_client *c, uint32_t layer, uint64_t step,
              const float *grad) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  if (layer >= c->L || grad == NULL)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "push: layer %u (of %u) or grad NULL", layer, c->L);
  return push_start(c, layer, step, grad, NULL);
}

int fsps_push_wait(fsps_client *c) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  return push_wait_all(c);
}
