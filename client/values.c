/* values.c: fsps_set_values — a layer's version-0 values given by the
 * trainer: slice s streamed to server s (SetValues) in 1 MiB chunks that
 * point into the caller's array, every server at once, each retried on
 * UNAVAILABLE (a server takes the same values twice as a duplicate). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "client_int.h"

typedef struct values_call values_call;

/* One server's slice and its stream. The fields under v->mu are touched by
 * the stream's callbacks; the others by one thread at a time. */
typedef struct {
  values_call *v;
  uint32_t s;
  client_slice sl; /* the server's slice; its releases under v->mu */
  uint32_t attempts;
  bool running;  /* under v->mu: an attempt is in flight */
  rpc_status st; /* the last attempt's outcome (FSPS_UNAVAILABLE before
                    the first) */
} values_part;

struct values_call {
  fsps_client *c;
  uint32_t layer, nparts;
  uint64_t epoch;
  const float *values;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  values_part parts[];
};

/* released: gRPC let go of one of p's chunks. */
static void released(void *arg) {
  values_part *p = arg;
  pthread_mutex_lock(&p->v->mu);
  p->sl.releases--;
  pthread_cond_broadcast(&p->v->cv);
  pthread_mutex_unlock(&p->v->mu);
}

static values_call *call_new(fsps_client *c, uint32_t layer,
                             const float *values) {
  uint64_t n = client_layer_n(c, layer), off, cnt;
  uint32_t np = 0;
  for (uint32_t s = 0; client_plan_next(n, c->S, &s, &off, &cnt); s++)
    np++;
  values_call *v = calloc(1, sizeof *v + np * sizeof(values_part));
  if (v == NULL)
    return NULL;
  *v = (values_call){.c = c, .layer = layer, .nparts = np, .values = values};
  v->epoch = atomic_load(&c->epoch);
  pthread_mutex_init(&v->mu, NULL);
  pthread_cond_init(&v->cv, NULL);
  values_part *p = v->parts;
  for (uint32_t s = 0; client_plan_next(n, c->S, &s, &off, &cnt); s++, p++) {
    *p = (values_part){.v = v, .s = s};
    client_slice_init(&p->sl, off, cnt, &v->mu, released, p);
    p->st.code = FSPS_UNAVAILABLE; /* not sent yet */
  }
  return v;
}

static void call_free(values_call *v) {
  pthread_mutex_destroy(&v->mu);
  pthread_cond_destroy(&v->cv);
  free(v);
}

/* send_next sends p's next chunk, or half-closes after the last one. */
static void send_next(values_part *p, rpc_stream *s) {
  rpc_tensor_hdr h = {0};
  rpc_hdr_set(&h, WIRE_VALUES_LAYER, p->v->layer);
  rpc_hdr_set(&h, WIRE_VALUES_EPOCH, p->v->epoch);
  client_slice_send(&p->sl, s, &h, WIRE_VALUES_OFFSET, p->v->values);
}

static void values_sent(rpc_stream *s, bool ok, void *ctx) {
  if (ok)
    send_next(ctx, s);
  else
    rpc_stream_close_send(s);
}

/* ended records an attempt's outcome and wakes the caller. */
static void ended(values_part *p, const rpc_status *st) {
  pthread_mutex_lock(&p->v->mu);
  p->st = *st;
  p->running = false;
  pthread_cond_broadcast(&p->v->cv);
  pthread_mutex_unlock(&p->v->mu);
}

static void values_done(rpc_stream *s, const rpc_status *st, rpc_msg *reply,
                        void *ctx) {
  (void)s;
  values_part *p = ctx;
  rpc_status res = *st;
  client_slice_reply(&p->sl, p->v->c->addr[p->s], reply,
                     &fsps__v1__values_reply__descriptor, &res);
  ended(p, &res);
}

static void part_start(values_part *p) {
  fsps_client *c = p->v->c;
  p->sl.next = 0;
  p->attempts++;
  pthread_mutex_lock(&p->v->mu);
  p->running = true;
  pthread_mutex_unlock(&p->v->mu);
  rpc_stream_cbs cbs = {
      .on_sent = values_sent, .on_done = values_done, .ctx = p};
  rpc_status st;
  rpc_stream *s =
      rpc_stream_start(c->ch[p->s], WIRE_PATH_SET_VALUES, RPC_CLIENT_STREAMING,
                       NULL, client_timeout_ms(c), &cbs, &st);
  if (s == NULL)
    ended(p, &st);
  else
    send_next(p, s);
}

/* run_round starts every part that has not succeeded and waits until
 * each has ended and gRPC has let go of its payloads. */
static void run_round(values_call *v) {
  for (uint32_t i = 0; i < v->nparts; i++)
    if (v->parts[i].st.code != FSPS_OK)
      part_start(&v->parts[i]);
  pthread_mutex_lock(&v->mu);
  for (uint32_t i = 0; i < v->nparts; i++)
    while (v->parts[i].running || v->parts[i].sl.releases > 0)
      pthread_cond_wait(&v->cv, &v->mu);
  pthread_mutex_unlock(&v->mu);
}

/* outcome returns the first error of a part that a retry cannot mend
 * (message in c->err), or FSPS_OK; *retry tells whether some part is worth
 * another attempt (UNAVAILABLE, retries left). */
static int outcome(values_call *v, bool *retry) {
  fsps_client *c = v->c;
  *retry = false;
  for (uint32_t i = 0; i < v->nparts; i++) {
    const values_part *p = &v->parts[i];
    if (p->st.code == FSPS_OK)
      continue;
    bool again =
        p->st.code == FSPS_UNAVAILABLE && p->attempts <= client_retries(c);
    if (!again || !*retry)
      client_fail(c, p->st.code,
                  "set values of layer %u on server %u of %u (%s)%s: %s",
                  v->layer, p->s, c->S, c->addr[p->s],
                  p->attempts > 1 ? " (retries exhausted)" : "", p->st.msg);
    if (!again)
      return p->st.code;
    *retry = true;
  }
  return FSPS_OK;
}

static void nap_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                        .tv_nsec = (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

/* check_args refuses what no server would take, before anything is sent. */
static int check_args(fsps_client *c, uint32_t layer, const float *values) {
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  if (layer >= c->L || values == NULL)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "set values: layer %u (of %u) or values NULL", layer,
                       c->L);
  const shard_layer *L = shard_spec_layer(c->spec, layer);
  if (!shard_layer_client(L))
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "layer %u '%s' is initialised by the servers (init "
                       "%s): only a layer whose tensors all have init "
                       "\"client\" takes values",
                       layer, L->name,
                       shard_init_kind_name(L->tensors[0].init));
  for (uint64_t i = 0; i < L->n; i++)
    if (!isfinite(values[i]))
      return client_fail(c, FSPS_INVALID_ARGUMENT,
                         "values[%" PRIu64 "] of layer %u '%s' is %s: given "
                         "values must be finite",
                         i, layer, L->name, isnan(values[i]) ? "NaN" : "Inf");
  return FSPS_OK;
}

int fsps_set_values(fsps_client *c, uint32_t layer, const float *values) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = check_args(c, layer, values);
  if (rc != FSPS_OK)
    return rc;
  values_call *v = call_new(c, layer, values);
  if (v == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory setting values");
  bool retry = true;
  for (uint32_t round = 1; retry; round++) {
    if (round > 1)
      nap_ms(client_backoff_ms(round - 1));
    run_round(v);
    rc = outcome(v, &retry);
  }
  call_free(v);
  return rc;
}
