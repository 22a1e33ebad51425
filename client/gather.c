/* gather.c: gathers — one Pull per server in parallel, each answer copied
 * (or decoded from bf16) straight into its slice of the layer buffer,
 * checked chunk by chunk. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

typedef struct {
  gather *g;
  uint32_t s;
  uint64_t off, cnt; /* the server's slice */
  uint64_t filled;   /* elements received in this attempt */
  uint64_t version;  /* of this attempt's chunks */
  uint32_t attempts;
  bool bad;           /* a chunk failed our checks: the error is recorded */
  bool ended;         /* under cancel_mu: on_done began for this attempt */
  rpc_stream *stream; /* under cancel_mu: the live attempt, or NULL */
  retry_item retry;
} pull_part;

struct gather {
  fsps_client *c;
  uint32_t layer, nparts;
  uint32_t pending;              /* parts not finished; under c->mu */
  uint32_t holds;                /* threads still touching g; under c->mu */
  uint64_t base, n, min_version; /* elements [base, base + n) */
  bool exact;                    /* only min_version will do */
  shard_wire_dtype dtype;        /* how the answers carry the layer */
  uint64_t version;              /* lowest version received; under c->mu */
  float *dst;                    /* where element base goes */
  pool_buf *buf;         /* a pooled gather's destination, until taken */
  bool whole;            /* of a whole layer, not a piece */
  retry_item start;      /* a deferred gather's start (GATHER_DEFER) */
  atomic_bool cancelled; /* another part failed: stop the rest */
  int rc;                /* first error; under c->mu */
  char msg[CLIENT_MSG_MAX];
  pull_part parts[];
};

/* record sets g's first error (c->mu held). */
static void record(gather *g, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void record(gather *g, int rc, const char *fmt, ...) {
  if (g->rc != FSPS_OK)
    return;
  g->rc = rc;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->msg, sizeof g->msg, fmt, ap);
  va_end(ap);
}

/* part_bad records that server p sent something we refuse, and stops its
 * stream (the handle is valid: we are inside one of its callbacks). */
static void part_bad(pull_part *p, rpc_stream *s, int rc, const char *why) {
  gather *g = p->g;
  pthread_mutex_lock(&g->c->mu);
  record(g, rc, "pull layer %u from server %u of %u (%s): %s", g->layer, p->s,
         g->c->S, g->c->addr[p->s], why);
  pthread_mutex_unlock(&g->c->mu);
  p->bad = true;
  rpc_stream_cancel(s);
}

/* check_chunk returns NULL when a chunk with header h and nbytes of
 * payload continues p's slice, else what is wrong (in why). */
static const char *check_chunk(pull_part *p, const rpc_tensor_hdr *h,
                               size_t nbytes, char *why, size_t len) {
  shard_wire_dtype dt = p->g->dtype;
  size_t eb = wire_dtype_bytes(dt);
  uint64_t off = h->v[WIRE_PULL_OFFSET], elems = nbytes / eb;
  if (h->v[WIRE_PULL_LAYER] != p->g->layer)
    snprintf(why, len, "chunk for layer %" PRIu64, h->v[WIRE_PULL_LAYER]);
  else if (h->payload_field != wire_data_field(dt))
    snprintf(why, len,
             "chunk's payload is in field %u, but the model's wire dtype %s "
             "puts it in field %u",
             h->payload_field, shard_wire_dtype_name(dt), wire_data_field(dt));
  else if (nbytes == 0 || nbytes % eb != 0)
    snprintf(why, len, "chunk of %zu bytes is not whole %s elements", nbytes,
             shard_wire_dtype_name(dt));
  else if (off != p->off + p->filled || elems > p->cnt - p->filled)
    snprintf(why, len,
             "chunk [%" PRIu64 ", +%" PRIu64 ") does not continue the slice "
             "[%" PRIu64 ", %" PRIu64 ") at %" PRIu64,
             off, elems, p->off, p->off + p->cnt, p->off + p->filled);
  else if (p->filled > 0 && h->v[WIRE_PULL_VERSION] != p->version)
    snprintf(why, len, "chunk version %" PRIu64 " after version %" PRIu64,
             h->v[WIRE_PULL_VERSION], p->version);
  else
    return NULL;
  return why;
}

/* decode_span decodes a piece of a bf16 answer as gRPC holds it. */
static void decode_span(void *arg, const void *bytes, size_t len) {
  wire_bf16_read(arg, bytes, len);
}

/* take_payload puts a checked chunk's payload into the layer buffer at
 * dst: the one copy (or bf16 decode) a receive makes. */
static void take_payload(const gather *g, rpc_msg *m, float *dst) {
  if (g->dtype != SHARD_WIRE_BF16) {
    rpc_msg_copy_payload(m, dst);
    return;
  }
  wire_bf16_reader r;
  wire_bf16_read_start(&r, dst);
  rpc_msg_payload_spans(m, decode_span, &r);
}

static void pull_message(rpc_stream *s, rpc_msg *m, void *ctx) {
  pull_part *p = ctx;
  if (p->bad)
    return;
  rpc_tensor_hdr h;
  size_t nbytes;
  rpc_status st;
  char why[256];
  if (rpc_msg_tensor(m, &h, &nbytes, &st) != FSPS_OK) {
    part_bad(p, s, FSPS_DATA_LOSS, st.msg);
    return;
  }
  if (check_chunk(p, &h, nbytes, why, sizeof why) != NULL) {
    part_bad(p, s, FSPS_DATA_LOSS, why);
    return;
  }
  if (h.v[WIRE_PULL_VERSION] < p->g->min_version) {
    snprintf(why, sizeof why, "sent version %" PRIu64 " < min_version %" PRIu64,
             h.v[WIRE_PULL_VERSION], p->g->min_version);
    part_bad(p, s, FSPS_INTERNAL, why);
    return;
  }
  if (h.v[WIRE_PULL_VERSION] != p->g->min_version && p->g->exact) {
    snprintf(why, sizeof why,
             "the layer is at version %" PRIu64 " already, but this step "
             "computes from version %" PRIu64 ": the cluster moved on "
             "without this worker (recover)",
             h.v[WIRE_PULL_VERSION], p->g->min_version);
    part_bad(p, s, FSPS_FAILED_PRECONDITION, why);
    return;
  }
  take_payload(p->g, m, p->g->dst + (h.v[WIRE_PULL_OFFSET] - p->g->base));
  p->version = h.v[WIRE_PULL_VERSION];
  p->filled += nbytes / wire_dtype_bytes(p->g->dtype);
}

/* cancel_parts stops every running attempt of g (called with a hold). */
static void cancel_parts(gather *g) {
  pthread_mutex_lock(&g->c->cancel_mu);
  for (uint32_t i = 0; i < g->nparts; i++)
    if (g->parts[i].stream != NULL)
      rpc_stream_cancel(g->parts[i].stream);
  pthread_mutex_unlock(&g->c->cancel_mu);
}

static void wake_if_done(gather *g) {
  if (g->pending == 0 && g->holds == 0)
    pthread_cond_broadcast(&g->c->cv);
}

/* finish_locked settles part p's outcome (c->mu held); returns true when
 * the caller must cancel the other parts (a hold was taken for it). */
static bool finish_locked(pull_part *p, const rpc_status *st) {
  gather *g = p->g;
  fsps_client *c = g->c;
  if (p->bad) {
    /* recorded when the chunk arrived */
  } else if (st->code != FSPS_OK) {
    record(g, st->code, "pull layer %u from server %u of %u%s: %s", g->layer,
           p->s, c->S, p->attempts > 1 ? " (retries exhausted)" : "", st->msg);
  } else if (p->filled != p->cnt) {
    record(g, FSPS_DATA_LOSS,
           "pull layer %u from server %u of %u (%s): the answer ended after "
           "%" PRIu64 " of %" PRIu64 " elements",
           g->layer, p->s, c->S, c->addr[p->s], p->filled, p->cnt);
  } else if (p->version < g->version) {
    g->version = p->version;
  }
  bool cancel = g->rc != FSPS_OK && g->pending > 1 &&
                !atomic_exchange(&g->cancelled, true);
  g->holds += cancel;
  g->pending--;
  wake_if_done(g);
  return cancel;
}

/* part_result ends an attempt: a retry after a backoff for UNAVAILABLE,
 * else the part's outcome. Runs without locks. */
static void part_result(pull_part *p, const rpc_status *st) {
  gather *g = p->g;
  fsps_client *c = g->c;
  pthread_mutex_lock(&c->mu);
  if (!p->bad && st->code == FSPS_UNAVAILABLE &&
      p->attempts <= client_retries(c) && !atomic_load(&g->cancelled) &&
      client_retry_schedule(c, &p->retry, p->attempts)) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  bool cancel = finish_locked(p, st);
  pthread_mutex_unlock(&c->mu);
  if (!cancel)
    return; /* g may be gone now */
  cancel_parts(g);
  pthread_mutex_lock(&c->mu);
  g->holds--;
  wake_if_done(g);
  pthread_mutex_unlock(&c->mu);
}

static void pull_done(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                      void *ctx) {
  (void)s;
  (void)reply;
  pull_part *p = ctx;
  pthread_mutex_lock(&p->g->c->cancel_mu);
  p->ended = true;
  p->stream = NULL;
  pthread_mutex_unlock(&p->g->c->cancel_mu);
  part_result(p, st);
}

/* keep_handle remembers a started attempt's handle so that another part's
 * failure can cancel it, unless it has already ended. */
static void keep_handle(pull_part *p, rpc_stream *h) {
  pthread_mutex_lock(&p->g->c->cancel_mu);
  if (!p->ended) {
    p->stream = h;
    if (atomic_load(&p->g->cancelled))
      rpc_stream_cancel(h);
  }
  pthread_mutex_unlock(&p->g->c->cancel_mu);
}

/* start_attempt starts one Pull of part p, or settles it at once. */
static void start_attempt(pull_part *p) {
  gather *g = p->g;
  fsps_client *c = g->c;
  rpc_status st;
  p->filled = 0;
  p->version = 0;
  p->attempts++;
  pthread_mutex_lock(&c->cancel_mu);
  p->ended = false;
  p->stream = NULL;
  pthread_mutex_unlock(&c->cancel_mu);
  if (atomic_load(&g->cancelled)) {
    part_result(p, &(rpc_status){FSPS_CANCELLED, "cancelled"});
    return;
  }
  Fsps__V1__PullRequest req = FSPS__V1__PULL_REQUEST__INIT;
  req.layer = g->layer;
  req.min_version = g->min_version;
  req.epoch = atomic_load(&c->epoch);
  req.offset = p->off; /* a part of the slice, or all of it */
  req.count = p->cnt;
  rpc_stream_cbs cbs = {
      .on_message = pull_message, .on_done = pull_done, .ctx = p};
  rpc_stream *h =
      rpc_stream_start(c->ch[p->s], WIRE_PATH_PULL, RPC_SERVER_STREAMING,
                       &req.base, client_timeout_ms(c), &cbs, &st);
  if (h == NULL)
    part_result(p, &st);
  else
    keep_handle(p, h);
}

/* part_start runs an attempt under a hold: the attempt may finish the
 * whole gather on a channel thread before start_attempt returns, and the
 * hold keeps the trainer from freeing g under our feet (retries start on
 * the timer thread). */
static void part_start(pull_part *p) {
  gather *g = p->g;
  fsps_client *c = g->c;
  pthread_mutex_lock(&c->mu);
  g->holds++;
  pthread_mutex_unlock(&c->mu);
  start_attempt(p);
  pthread_mutex_lock(&c->mu);
  g->holds--;
  wake_if_done(g);
  pthread_mutex_unlock(&c->mu);
}

static void pull_retry(retry_item *it, bool abort) {
  pull_part *p = (pull_part *)((char *)it - offsetof(pull_part, retry));
  if (abort)
    part_result(p, &(rpc_status){FSPS_CANCELLED, "the client is closing"});
  else
    part_start(p);
}

/* clip narrows a slice [*off, *off + *cnt) to [a, b); false if they do
 * not meet. */
static bool clip(uint64_t a, uint64_t b, uint64_t *off, uint64_t *cnt) {
  uint64_t lo = *off > a ? *off : a, hi = *off + *cnt < b ? *off + *cnt : b;
  if (lo >= hi)
    return false;
  *off = lo;
  *cnt = hi - lo;
  return true;
}

/* gather_new makes the gather of elements [a, b) of a layer of n: one part
 * per server whose slice meets the range. */
static gather *gather_new(fsps_client *c, uint32_t layer, uint64_t n,
                          uint64_t a, uint64_t b) {
  uint32_t np = 0;
  uint64_t off, cnt;
  for (uint32_t s = 0; client_plan_next(n, c->S, &s, &off, &cnt); s++)
    np += clip(a, b, &off, &cnt);
  gather *g = calloc(1, sizeof *g + np * sizeof(pull_part));
  if (g == NULL)
    return NULL;
  pull_part *p = g->parts;
  for (uint32_t s = 0; client_plan_next(n, c->S, &s, &off, &cnt); s++) {
    if (!clip(a, b, &off, &cnt))
      continue;
    *p = (pull_part){.g = g, .s = s, .off = off, .cnt = cnt};
    p++->retry.fire = pull_retry;
  }
  g->c = c;
  g->layer = layer;
  g->whole = a == 0 && b == n;
  g->base = a;
  g->n = b - a;
  g->nparts = g->pending = np;
  g->version = UINT64_MAX;
  g->dtype = client_wire_dtype(c);
  atomic_init(&g->cancelled, false);
  return g;
}

/* start_parts starts every part of g into g->dst (trainer thread, or the
 * timer thread under a hold). */
static void start_parts(gather *g) {
  for (uint32_t i = 0; i < g->nparts; i++)
    part_start(&g->parts[i]);
}

/* settle_parts ends every part of a gather that never started with st. */
static void settle_parts(gather *g, const rpc_status *st) {
  for (uint32_t i = 0; i < g->nparts; i++)
    part_result(&g->parts[i], st);
}

/* take_buf takes a pooled gather's buffer: a piece's is rounded to a size
 * class, so that pieces of different layers share buffers. */
static pool_buf *take_buf(gather *g) {
  return client_pool_get(g->c, g->whole ? g->n : client_pool_size_class(g->n));
}

/* deferred_fire starts a deferred gather on the timer thread, now that the
 * pushes before it have let go of their buffers: takes its buffer from the
 * pool, then pulls. At close (abort) or without memory its parts end at
 * once instead. */
static void deferred_fire(retry_item *it, bool abort) {
  gather *g = (gather *)((char *)it - offsetof(gather, start));
  fsps_client *c = g->c;
  pthread_mutex_lock(&c->mu);
  g->holds++; /* the trainer may free g once the last part settles */
  pthread_mutex_unlock(&c->mu);
  if (abort)
    settle_parts(g, &(rpc_status){FSPS_CANCELLED, "the client is closing"});
  else if ((g->buf = take_buf(g)) == NULL)
    settle_parts(g, &(rpc_status){FSPS_NOMEM, "out of memory for the layer"});
  else {
    g->dst = g->buf->p;
    start_parts(g);
  }
  pthread_mutex_lock(&c->mu);
  g->holds--;
  wake_if_done(g);
  pthread_mutex_unlock(&c->mu);
}

int client_gather_start_range(fsps_client *c, uint32_t layer,
                              uint64_t min_version, uint64_t a, uint64_t b,
                              unsigned flags, gather **out) {
  gather *g = gather_new(c, layer, client_layer_n(c, layer), a, b);
  if (g == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory starting a gather");
  g->min_version = min_version;
  g->exact = flags & GATHER_EXACT;
  bool defer = flags & GATHER_DEFER;
  g->start.fire = deferred_fire;
  *out = g;
  c->gathered += g->n * wire_dtype_bytes(g->dtype);
  pthread_mutex_lock(&c->mu);
  bool later = defer && c->pushes > 0;
  if (later)
    client_defer_locked(c, &g->start);
  pthread_mutex_unlock(&c->mu);
  if (later)
    return FSPS_OK;
  if ((g->buf = take_buf(g)) == NULL) {
    free(g);
    *out = NULL;
    return client_fail(c, FSPS_NOMEM,
                       "out of memory for layer %u [%" PRIu64 ", %" PRIu64 ")",
                       layer, a, b);
  }
  g->dst = g->buf->p;
  start_parts(g);
  return FSPS_OK;
}

int client_gather_start(fsps_client *c, uint32_t layer, uint64_t min_version,
                        uint64_t a, uint64_t b, float *dst, gather **out) {
  gather *g = gather_new(c, layer, client_layer_n(c, layer), a, b);
  if (g == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory starting a gather");
  g->min_version = min_version;
  g->dst = dst;
  c->gathered += g->n * wire_dtype_bytes(g->dtype);
  /* The trainer thread alone waits for and frees g, so g outlives this
   * loop even when every part finishes before it ends. */
  start_parts(g);
  *out = g;
  return FSPS_OK;
}

int client_gather_wait(fsps_client *c, gather *g, uint64_t *version) {
  pthread_mutex_lock(&c->mu);
  while (g->pending > 0 || g->holds > 0)
    client_wait(c);
  pthread_mutex_unlock(&c->mu);
  if (g->rc != FSPS_OK)
    return client_fail(c, g->rc, "%s", g->msg);
  if (version != NULL)
    *version = g->version;
  return FSPS_OK;
}

pool_buf *client_gather_take_buf(gather *g) {
  pool_buf *b = g->buf;
  g->buf = NULL;
  return b;
}

void client_gather_free(gather *g) {
  if (g != NULL && g->buf != NULL)
    client_pool_put(g->c, g->buf);
  free(g);
}

/* ---- public ---- */

int fsps_gather_range(fsps_client *c, uint32_t layer, uint64_t min_version,
                      uint64_t offset, uint64_t count, float *dst,
                      uint64_t *version) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  if (layer >= c->L || dst == NULL)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "gather: layer %u (of %u) or dst NULL", layer, c->L);
  uint64_t n = client_layer_n(c, layer);
  if (count == 0 || offset > n || count > n - offset)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "gather: range [%" PRIu64 ", +%" PRIu64
                       ") is empty or outside layer %u of %" PRIu64 " elements",
                       offset, count, layer, n);
  gather *g;
  int rc = client_gather_start(c, layer, min_version, offset, offset + count,
                               dst, &g);
  if (rc != FSPS_OK)
    return rc;
  rc = client_gather_wait(c, g, version);
  client_gather_free(g);
  return rc;
}

int fsps_gather(fsps_client *c, uint32_t layer, uint64_t min_version,
                float *dst, uint64_t *version) {
  uint64_t n = c && c->spec && layer < c->L ? client_layer_n(c, layer) : 0;
  return fsps_gather_range(c, layer, min_version, 0, n ? n : 1, dst, version);
}
