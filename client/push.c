/* push.c: reduce-scattered pushes — slice s of a gradient streamed to
 * server s in 1 MiB chunks that point into the caller's buffer (no copy),
 * or, for a bf16 model, into the gradient encoded once as bf16; or, for a
 * gradient computed piece by piece (client_push_open), copied (encoded)
 * into staged chunks as it is written and sent as each chunk becomes
 * whole. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

typedef struct {
  push *p;
  uint32_t s;
  client_slice sl; /* the server's slice; its releases under c->mu */
  uint32_t attempts;
  bool ended; /* final outcome known; under c->mu */
  retry_item retry;
  /* streamed pushes only */
  rpc_stream *stream;        /* the one attempt, until close_sent */
  stage *partial;            /* chunks being filled; trainer thread */
  stage *ready, *ready_tail; /* whole chunks to send; under c->mu */
  uint64_t staged;           /* chunks made whole; trainer thread */
  bool sending;              /* a chunk is with gRPC; under c->mu */
  bool closing, close_sent;  /* under c->mu */
} push_part;

/* A staged chunk of a streamed push (chunk idx of its part's slice). */
struct stage {
  stage *next;
  push_part *pp;
  uint64_t idx, len, filled; /* len elements, filled so far */
  uint64_t cap;              /* floats data holds */
  float data[];              /* the chunk: float32, or bf16 in its start */
};

struct push {
  fsps_client *c;
  uint32_t layer, nparts;
  bool streamed;     /* client_push_open: no retries, the data is gone */
  uint32_t pending;  /* parts not complete, plus one while starting */
  uint64_t seq;      /* the client's push number */
  uint64_t epoch;    /* the client's when the push began: every retry and
                      * chunk carries it, so none counts after a rollback */
  push *prev, *next; /* the client's pushes in flight; under c->mu */
  uint64_t step;
  const float *grad;
  pool_buf *owned;  /* returned to the pool at completion */
  pool_buf *wire;   /* a bf16 model's encoding of a grad it does not own */
  const void *sent; /* what the parts send: grad, or its bf16 encoding */
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
    client_pool_put_locked(c, p->owned);
  if (p->wire != NULL)
    client_pool_put_locked(c, p->wire);
  c->pushes--;
  *(p->prev ? &p->prev->next : &c->push_head) = p->next;
  *(p->next ? &p->next->prev : &c->push_tail) = p->prev;
  client_run_deferred_locked(c); /* prefetches waiting for this buffer */
  pthread_cond_broadcast(&c->cv);
  free(p);
}

uint64_t client_push_low_water_locked(const fsps_client *c) {
  return c->push_head ? c->push_head->seq : c->push_next;
}

static void drop_pending_locked(push *p) {
  if (--p->pending == 0)
    push_complete_locked(p);
}

/* A part is complete when its outcome is known and gRPC has let go of
 * every payload it was handed, so the caller may reuse the buffer. */
static void part_check_locked(push_part *pp) {
  if (pp->ended && pp->sl.releases == 0)
    drop_pending_locked(pp->p);
}

static void payload_released(void *arg) {
  push_part *pp = arg;
  fsps_client *c = pp->p->c;
  pthread_mutex_lock(&c->mu);
  pp->sl.releases--;
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
           p->streamed        ? " (streamed as computed: not retried)"
           : pp->attempts > 1 ? " (retries exhausted)"
                              : "",
           st->msg);
}

/* part_result ends an attempt: a retry after a backoff for UNAVAILABLE
 * (the server drops duplicates), else the part's outcome. */
static void part_result(push_part *pp, const rpc_status *st) {
  fsps_client *c = pp->p->c;
  pthread_mutex_lock(&c->mu);
  if (st->code == FSPS_UNAVAILABLE && !pp->p->streamed &&
      pp->attempts <= client_retries(c) &&
      client_retry_schedule(c, &pp->retry, pp->attempts)) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  if (st->code != FSPS_OK)
    record_locked(pp->p, pp, st);
  pp->ended = true;
  part_check_locked(pp); /* may free pp */
  pthread_mutex_unlock(&c->mu);
}

/* send_next sends pp's next chunk, or half-closes after the last one. */
static void send_next(push_part *pp, rpc_stream *s) {
  push *p = pp->p;
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_PUSH_LAYER, p->layer);
  rpc_hdr_set(&h, WIRE_PUSH_STEP, p->step);
  rpc_hdr_set(&h, WIRE_PUSH_WORKER, p->c->o.rank);
  rpc_hdr_set(&h, WIRE_PUSH_EPOCH, p->epoch);
  client_slice_send(&pp->sl, s, &h, WIRE_PUSH_OFFSET, p->sent);
}

static void push_sent(rpc_stream *s, bool ok, void *ctx) {
  if (ok)
    send_next(ctx, s);
  else
    rpc_stream_close_send(s);
}

static void push_done(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                      void *ctx) {
  (void)s;
  push_part *pp = ctx;
  rpc_status res = *st;
  client_slice_reply(&pp->sl, pp->p->c->addr[pp->s], reply,
                     &fsps__v1__push_reply__descriptor, &res);
  part_result(pp, &res);
}

static void part_start(push_part *pp) {
  fsps_client *c = pp->p->c;
  pp->sl.next = 0;
  pp->attempts++;
  rpc_stream_cbs cbs = {.on_sent = push_sent, .on_done = push_done, .ctx = pp};
  rpc_status st;
  rpc_stream *s =
      rpc_stream_start(c->ch[pp->s], WIRE_PATH_PUSH, RPC_CLIENT_STREAMING, NULL,
                       client_timeout_ms(c), &cbs, &st);
  if (s == NULL)
    part_result(pp, &st);
  else
    send_next(pp, s);
}

static void push_retry(retry_item *it, bool abort) {
  push_part *pp = (push_part *)((char *)it - offsetof(push_part, retry));
  if (abort)
    part_result(pp, &(rpc_status){FSPS_CANCELLED, "the client is closing"});
  else
    part_start(pp);
}

static push *push_new(fsps_client *c, uint32_t layer, uint64_t n) {
  uint32_t np = 0;
  uint64_t off, cnt;
  for (uint32_t s = 0; client_plan_next(n, c->S, &s, &off, &cnt); s++)
    np++;
  push *p = calloc(1, sizeof *p + np * sizeof(push_part));
  if (p == NULL)
    return NULL;
  push_part *pp = p->parts;
  for (uint32_t s = 0; client_plan_next(n, c->S, &s, &off, &cnt); s++, pp++) {
    *pp = (push_part){.p = p, .s = s};
    client_slice_init(&pp->sl, off, cnt, &c->mu, payload_released, pp);
    pp->sl.dtype = client_wire_dtype(c);
    pp->retry.fire = push_retry;
  }
  p->c = c;
  p->layer = layer;
  p->nparts = np;
  p->pending = np + 1;
  return p;
}

/* enlist makes p the client's newest push in flight. */
static void enlist(fsps_client *c, push *p) {
  pthread_mutex_lock(&c->mu);
  c->pushes++;
  p->seq = c->push_next++;
  p->prev = c->push_tail;
  *(c->push_tail ? &c->push_tail->next : &c->push_head) = p;
  c->push_tail = p;
  pthread_mutex_unlock(&c->mu);
}

/* encode gives p the bf16 encoding of its gradient (n elements), which its
 * parts send and retry from: over the gradient itself when the push owns
 * its buffer (no memory more than a float32 push), else in a pool buffer.
 * FSPS_OK or FSPS_NOMEM. */
static int encode(fsps_client *c, push *p, pool_buf *owned, uint64_t n) {
  if (owned != NULL && owned->p == p->grad) {
    wire_bf16_encode_in_place(owned->p, n);
    p->sent = owned->p;
    return FSPS_OK;
  }
  if ((p->wire = client_pool_get(c, (n + 1) / 2)) == NULL)
    return FSPS_NOMEM;
  wire_bf16_encode(p->wire->p, p->grad, n);
  p->sent = p->wire->p;
  return FSPS_OK;
}

int client_push_start(fsps_client *c, uint32_t layer, uint64_t step,
                      const float *grad, pool_buf *owned) {
  uint64_t n = client_layer_n(c, layer);
  push *p = push_new(c, layer, n);
  if (p == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory starting a push");
  p->step = step;
  p->epoch = atomic_load(&c->epoch);
  p->grad = p->sent = grad;
  if (client_wire_dtype(c) == SHARD_WIRE_BF16 &&
      encode(c, p, owned, n) != FSPS_OK) {
    free(p);
    return client_fail(c, FSPS_NOMEM, "out of memory encoding a push");
  }
  p->owned = owned;
  c->pushed += n * wire_dtype_bytes(client_wire_dtype(c));
  enlist(c, p);
  for (uint32_t i = 0; i < p->nparts; i++)
    part_start(&p->parts[i]);
  /* The extra pending count kept p alive through the loop. */
  pthread_mutex_lock(&c->mu);
  drop_pending_locked(p);
  pthread_mutex_unlock(&c->mu);
  return FSPS_OK;
}

int client_push_wait_all(fsps_client *c) {
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

void client_push_wait_below(fsps_client *c, uint32_t max) {
  pthread_mutex_lock(&c->mu);
  while (c->pushes > max)
    client_wait(c);
  pthread_mutex_unlock(&c->mu);
}

/* ---- streamed pushes ---- */

/* stage_put_locked returns st to the client's free stages (c->mu held). */
static void stage_put_locked(fsps_client *c, stage *st) {
  st->next = c->stage_free;
  c->stage_free = st;
  c->stages_busy--;
  pthread_cond_broadcast(&c->cv);
}

/* stage_released: gRPC let go of a sent chunk. */
static void stage_released(void *arg) {
  stage *st = arg;
  push_part *pp = st->pp;
  fsps_client *c = pp->p->c;
  pthread_mutex_lock(&c->mu);
  stage_put_locked(c, st);
  pp->sl.releases--;
  part_check_locked(pp); /* may free pp */
  pthread_mutex_unlock(&c->mu);
}

/* take_free_locked removes and returns a free stage of at least len
 * floats; failing that, frees a smaller one (so that their number stays
 * bounded) and returns NULL (c->mu held). */
static stage *take_free_locked(fsps_client *c, uint64_t len) {
  stage **q = &c->stage_free;
  while (*q != NULL && (*q)->cap < len)
    q = &(*q)->next;
  stage *st = *q;
  if (st != NULL) {
    *q = st->next;
  } else if ((st = c->stage_free) != NULL) {
    c->stage_free = st->next;
    c->bytes -= st->cap * sizeof(float);
    free(st);
    st = NULL;
  }
  return st;
}

/* stage_get returns a free stage of at least len floats (room for a
 * chunk), waiting while PUSH_STAGES are busy and some of them are on
 * their way out (never when all are being filled: nothing would free
 * one); NULL when out of memory. */
static stage *stage_get(fsps_client *c, uint64_t len) {
  pthread_mutex_lock(&c->mu);
  while (c->stage_free == NULL && c->stages_busy >= PUSH_STAGES &&
         c->stages_busy > c->stages_partial)
    client_wait(c);
  stage *st = take_free_locked(c, len);
  pthread_mutex_unlock(&c->mu);
  if (st == NULL) {
    if ((st = malloc(sizeof *st + len * sizeof(float))) == NULL)
      return NULL;
    st->cap = len;
    pthread_mutex_lock(&c->mu);
    c->bytes += len * sizeof(float);
    c->peak_bytes = c->bytes > c->peak_bytes ? c->bytes : c->peak_bytes;
    pthread_mutex_unlock(&c->mu);
  }
  pthread_mutex_lock(&c->mu);
  c->stages_busy++;
  c->stages_partial++;
  pthread_mutex_unlock(&c->mu);
  return st;
}

void client_push_free_stages(fsps_client *c) {
  while (c->stage_free != NULL) {
    stage *st = c->stage_free;
    c->stage_free = st->next;
    c->bytes -= st->cap * sizeof(float);
    free(st);
  }
}

/* drain_locked frees the chunks pp will never send (c->mu held). */
static void drain_locked(push_part *pp) {
  while (pp->ready != NULL) {
    stage *st = pp->ready;
    pp->ready = st->next;
    stage_put_locked(pp->p->c, st);
  }
  pp->ready_tail = NULL;
}

/* next_action takes pp's next step under c->mu: a chunk to send (returned,
 * counted as sent), or *close when the stream must be half-closed (every
 * chunk sent, or a failure); NULL and no close when there is nothing to do
 * now. */
static stage *next_action(push_part *pp, bool *close) {
  *close = false;
  if (pp->sending || pp->close_sent)
    return NULL;
  if (pp->closing || pp->sl.next == pp->sl.nchunks) {
    drain_locked(pp);
    pp->close_sent = *close = true;
    return NULL;
  }
  stage *st = pp->ready;
  if (st == NULL)
    return NULL;
  if ((pp->ready = st->next) == NULL)
    pp->ready_tail = NULL;
  pp->sending = true;
  pp->sl.next++;
  pp->sl.releases++;
  return st;
}

/* stream_kick sends pp's next whole chunk if none is with gRPC, or
 * half-closes the stream when its time has come. Any thread, no lock. */
static void stream_kick(push_part *pp) {
  fsps_client *c = pp->p->c;
  for (;;) {
    bool close;
    pthread_mutex_lock(&c->mu);
    stage *st = next_action(pp, &close);
    pthread_mutex_unlock(&c->mu);
    if (close)
      rpc_stream_close_send(pp->stream); /* on_done follows */
    if (st == NULL)
      return;
    rpc_tensor_hdr h = {0};
    rpc_hdr_set(&h, WIRE_PUSH_LAYER, pp->p->layer);
    rpc_hdr_set(&h, WIRE_PUSH_STEP, pp->p->step);
    rpc_hdr_set(&h, WIRE_PUSH_WORKER, c->o.rank);
    rpc_hdr_set(&h, WIRE_PUSH_OFFSET, pp->sl.off + st->idx * SHARD_CHUNK_ELEMS);
    rpc_hdr_set(&h, WIRE_PUSH_EPOCH, pp->p->epoch);
    h.payload_field = wire_data_field(pp->sl.dtype);
    if (rpc_stream_send_tensor(pp->stream, &h, st->data,
                               st->len * wire_dtype_bytes(pp->sl.dtype),
                               stage_released, st) == FSPS_OK)
      return; /* stream_sent goes on */
    pthread_mutex_lock(&c->mu);
    pp->sending = false;
    pp->closing = true;
    pthread_mutex_unlock(&c->mu);
  }
}

static void stream_sent(rpc_stream *s, bool ok, void *ctx) {
  (void)s;
  push_part *pp = ctx;
  fsps_client *c = pp->p->c;
  pthread_mutex_lock(&c->mu);
  pp->sending = false;
  pp->closing |= !ok; /* on_done will say why */
  pthread_mutex_unlock(&c->mu);
  stream_kick(pp);
}

/* stage_ready hands a whole chunk to its part's stream (or frees it if
 * the stream has failed). */
static void stage_ready(push_part *pp, stage *st) {
  fsps_client *c = pp->p->c;
  pp->staged++;
  pthread_mutex_lock(&c->mu);
  c->stages_partial--;
  if (pp->closing || pp->close_sent) {
    stage_put_locked(c, st);
  } else {
    st->next = NULL;
    *(pp->ready_tail ? &pp->ready_tail->next : &pp->ready) = st;
    pp->ready_tail = st;
  }
  pthread_mutex_unlock(&c->mu);
  stream_kick(pp);
}

/* find_stage returns the stage of chunk idx of pp being filled, taking a
 * new one if there is none (NULL when out of memory). */
static stage *find_stage(push_part *pp, uint64_t idx) {
  for (stage *st = pp->partial; st != NULL; st = st->next)
    if (st->idx == idx)
      return st;
  uint64_t len;
  shard_chunk(pp->sl.cnt, idx, &(uint64_t){0}, &len);
  /* A bf16 chunk takes half the room: 2 bytes an element. */
  stage *st = stage_get(pp->p->c,
                        pp->sl.dtype == SHARD_WIRE_BF16 ? (len + 1) / 2 : len);
  if (st == NULL)
    return NULL;
  st->pp = pp;
  st->idx = idx;
  st->filled = 0;
  st->len = len;
  st->next = pp->partial;
  pp->partial = st;
  return st;
}

/* unlink_partial removes st from pp's chunks being filled. */
static void unlink_partial(push_part *pp, stage *st) {
  stage **q = &pp->partial;
  while (*q != st)
    q = &(*q)->next;
  *q = st->next;
}

/* stage_put copies n elements from src into st at element at: float32,
 * or encoded as bf16 (the one conversion a bf16 push makes). */
static void stage_put(const push_part *pp, stage *st, uint64_t at,
                      const float *src, uint64_t n) {
  if (pp->sl.dtype == SHARD_WIRE_BF16)
    wire_bf16_encode((char *)st->data + 2 * at, src, n);
  else
    memcpy(st->data + at, src, n * sizeof(float));
}

/* part_write copies layer elements [a, b) (inside pp's slice) from src,
 * which holds element a, into pp's chunks. */
static int part_write(push_part *pp, uint64_t a, uint64_t b, const float *src) {
  while (a < b) {
    uint64_t rel = a - pp->sl.off, idx = rel / SHARD_CHUNK_ELEMS;
    stage *st = find_stage(pp, idx);
    if (st == NULL)
      return FSPS_NOMEM;
    uint64_t at = rel - idx * SHARD_CHUNK_ELEMS, n = st->len - at;
    n = n < b - a ? n : b - a;
    stage_put(pp, st, at, src, n);
    st->filled += n;
    a += n;
    src += n;
    if (st->filled == st->len) {
      unlink_partial(pp, st);
      stage_ready(pp, st);
    }
  }
  return FSPS_OK;
}

int client_push_write(push *p, uint64_t a, const float *src, uint64_t n) {
  for (uint32_t i = 0; i < p->nparts; i++) {
    push_part *pp = &p->parts[i];
    uint64_t lo = a > pp->sl.off ? a : pp->sl.off;
    uint64_t end = pp->sl.off + pp->sl.cnt, hi = a + n < end ? a + n : end;
    if (lo < hi && part_write(pp, lo, hi, src + (lo - a)) != FSPS_OK)
      return client_fail(p->c, FSPS_NOMEM,
                         "out of memory staging the gradient of layer %u",
                         p->layer);
  }
  return FSPS_OK;
}

/* stream_open starts part pp's one Push stream. */
static void stream_open(push_part *pp) {
  fsps_client *c = pp->p->c;
  pp->attempts = 1;
  rpc_stream_cbs cbs = {
      .on_sent = stream_sent, .on_done = push_done, .ctx = pp};
  rpc_status st;
  pp->stream =
      rpc_stream_start(c->ch[pp->s], WIRE_PATH_PUSH, RPC_CLIENT_STREAMING, NULL,
                       client_timeout_ms(c), &cbs, &st);
  if (pp->stream != NULL)
    return;
  pthread_mutex_lock(&c->mu);
  pp->close_sent = true; /* there is no stream to close */
  pthread_mutex_unlock(&c->mu);
  part_result(pp, &st);
}

int client_push_open(fsps_client *c, uint32_t layer, uint64_t step,
                     push **out) {
  push *p = push_new(c, layer, client_layer_n(c, layer));
  if (p == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory starting a push");
  p->step = step;
  p->epoch = atomic_load(&c->epoch);
  p->streamed = true;
  c->pushed +=
      client_layer_n(c, layer) * wire_dtype_bytes(client_wire_dtype(c));
  enlist(c, p);
  for (uint32_t i = 0; i < p->nparts; i++)
    stream_open(&p->parts[i]);
  *out = p;
  return FSPS_OK;
}

void client_push_close(push *p) {
  fsps_client *c = p->c;
  for (uint32_t i = 0; i < p->nparts; i++) {
    push_part *pp = &p->parts[i];
    while (pp->partial != NULL) { /* an abandoned gradient */
      stage *st = pp->partial;
      pp->partial = st->next;
      pthread_mutex_lock(&c->mu);
      c->stages_partial--;
      stage_put_locked(c, st);
      pthread_mutex_unlock(&c->mu);
    }
    if (pp->staged == pp->sl.nchunks)
      continue;
    pthread_mutex_lock(&c->mu);
    pp->closing = true; /* the server hears a short stream, counts nothing */
    pthread_mutex_unlock(&c->mu);
    stream_kick(pp);
  }
  pthread_mutex_lock(&c->mu);
  drop_pending_locked(p); /* may free p */
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
  return client_push_start(c, layer, step, grad, NULL);
}

int fsps_push_wait(fsps_client *c) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  return client_push_wait_all(c);
}
