/* store_push.c: pushes into the store — staging a worker's gradient chunk
 * by chunk, collecting it into its step's slot, and applying the optimizer
 * once the step is complete. */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smetrics.h"
#include "store_int.h"

void store_slot_release(slot *s, uint32_t W) {
  if (s->acc)
    store_fbuf_unref(s->acc);
  s->acc = NULL;
  for (uint32_t w = 0; s->wbuf && w < W; w++) {
    if (s->wbuf[w])
      store_fbuf_unref(s->wbuf[w]);
    s->wbuf[w] = NULL;
  }
  memset(s->pushed, 0, W);
  s->count = 0;
  s->step = FREE_STEP;
}

/* push_fits checks a push's header against the server: its epoch, step,
 * worker, and that this server holds part of the layer. */
static int push_fits(store_layer *L, uint64_t step, uint32_t worker,
                     uint64_t epoch, char *msg, size_t msglen) {
  const server_config *cfg = &L->st->cfg;
  if (!store_epoch_current(L->st, epoch)) {
    store_epoch_why(L->st, epoch, msg, msglen);
    return FSPS_FAILED_PRECONDITION;
  }
  if (step == UINT64_MAX) { /* its version, step + 1, could not exist */
    snprintf(msg, msglen, "step %" PRIu64 " is out of range", step);
    return FSPS_INVALID_ARGUMENT;
  }
  if (worker >= cfg->workers) {
    snprintf(msg, msglen,
             "worker %u is out of range: this server counts %u workers "
             "(--workers)",
             worker, cfg->workers);
    return FSPS_INVALID_ARGUMENT;
  }
  if (L->cnt == 0) {
    snprintf(msg, msglen, "server %u holds no elements of layer '%s'",
             cfg->index, L->spec->name);
    return FSPS_INVALID_ARGUMENT;
  }
  return FSPS_OK;
}

/* push_due checks that the layer can take a push for step now: it holds
 * its values, and the step is within the staleness of its version. */
static int push_due(store_layer *L, uint64_t step, char *msg, size_t msglen) {
  const server_config *cfg = &L->st->cfg;
  pthread_mutex_lock(&L->mu);
  uint64_t version = L->version;
  bool awaiting = L->awaiting;
  pthread_mutex_unlock(&L->mu);
  if (awaiting) {
    snprintf(msg, msglen,
             "layer '%s' awaits its values (init client): give them "
             "(SetValues, fsps_set_values) before pushing to it",
             L->spec->name);
    return FSPS_FAILED_PRECONDITION;
  }
  if (cfg->mode != MODE_ASP && step > version + cfg->staleness) {
    snprintf(msg, msglen,
             "push for step %" PRIu64 " of layer '%s' is ahead of its version "
             "%" PRIu64 " by more than the staleness %u",
             step, L->spec->name, version, cfg->staleness);
    return FSPS_FAILED_PRECONDITION;
  }
  return FSPS_OK;
}

int store_push_begin(store_layer *L, uint64_t step, uint32_t worker,
                     uint64_t epoch, store_push *p, char *msg, size_t msglen) {
  memset(p, 0, sizeof *p);
  int rc = push_fits(L, step, worker, epoch, msg, msglen);
  if (rc == FSPS_OK)
    rc = push_due(L, step, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  p->step = step;
  p->worker = worker;
  return store_push_stage(L, epoch, p, "a push", msg, msglen);
}

int store_push_stage(store_layer *L, uint64_t epoch, store_push *p,
                     const char *what, char *msg, size_t msglen) {
  p->layer = L;
  p->epoch = epoch;
  p->chunks = shard_num_chunks(L->cnt);
  p->buf = store_fbuf_get(L);
  p->got = calloc(p->chunks, 1);
  if (p->buf == NULL || p->got == NULL) {
    store_push_abort(p);
    snprintf(msg, msglen, "out of memory staging %s", what);
    return FSPS_RESOURCE_EXHAUSTED;
  }
  return FSPS_OK;
}

float *store_push_chunk(store_push *p, uint64_t offset, uint64_t count,
                        char *msg, size_t msglen) {
  store_layer *L = p->layer;
  if (offset < L->off || offset >= L->off + L->cnt) {
    snprintf(msg, msglen,
             "offset %" PRIu64 " is outside this server's slice [%" PRIu64
             ", %" PRIu64 ") of layer '%s'",
             offset, L->off, L->off + L->cnt, L->spec->name);
    return NULL;
  }
  uint64_t rel = offset - L->off, i = rel / SHARD_CHUNK_ELEMS, o, len;
  shard_chunk(L->cnt, i, &o, &len);
  if (rel != o || count != len) {
    snprintf(msg, msglen,
             "bad chunk at offset %" PRIu64 " of layer '%s': %" PRIu64
             " floats, expected chunk %" PRIu64 " at offset %" PRIu64
             " with %" PRIu64 " floats",
             offset, L->spec->name, count, i, L->off + o, len);
    return NULL;
  }
  if (p->got[i]) {
    snprintf(msg, msglen, "chunk %" PRIu64 " of layer '%s' sent twice", i,
             L->spec->name);
    return NULL;
  }
  p->got[i] = 1;
  p->received++;
  return p->buf->data + rel;
}

/* A float is NaN or +-Inf exactly when its exponent bits are all ones.
 * Testing the bits is integer work the compiler vectorises; a float-sum
 * probe is one long dependency chain and cost more than the receive copy
 * itself. */
#define FLOAT_EXP_BITS 0x7f800000u

static inline __attribute__((always_inline)) bool nonfinite_bits(const float *d,
                                                                 uint64_t n) {
  uint32_t bad = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &d[i], sizeof u);
    bad |= (u & FLOAT_EXP_BITS) == FLOAT_EXP_BITS;
  }
  return bad != 0;
}

/* The same loop built for AVX2 scans twice as fast as the SSE2 baseline;
 * it runs on every byte a push brings. */
__attribute__((target("avx2"))) static bool nonfinite_avx2(const float *d,
                                                           uint64_t n) {
  return nonfinite_bits(d, n);
}

bool store_any_nonfinite(const float *d, uint64_t n) {
  if (__builtin_cpu_supports("avx2"))
    return nonfinite_avx2(d, n);
  return nonfinite_bits(d, n);
}

uint64_t store_first_nonfinite(const float *d, uint64_t n) {
  if (!store_any_nonfinite(d, n))
    return n;
  for (uint64_t i = 0; i < n; i++)
    if (!isfinite(d[i]))
      return i;
  return n;
}

int store_push_check(store_push *p, float *dst, uint64_t count, char *msg,
                     size_t msglen) {
  uint64_t bad = store_first_nonfinite(dst, count);
  if (bad == count)
    return FSPS_OK;
  if (!p->layer->st->cfg.nan_skip) {
    snprintf(msg, msglen,
             "gradient of layer '%s' for step %" PRIu64 " from worker %u "
             "holds %s at element %" PRIu64
             " (the server runs with --nan-policy reject)",
             p->layer->spec->name, p->step, p->worker,
             dst[bad] != dst[bad] ? "NaN" : "Inf",
             (uint64_t)(dst - p->buf->data) + p->layer->off + bad);
    return FSPS_INVALID_ARGUMENT;
  }
  for (uint64_t i = bad; i < count; i++) {
    if (!isfinite(dst[i])) {
      dst[i] = 0.0f;
      p->nonfinite++;
    }
  }
  return FSPS_OK;
}

void store_push_abort(store_push *p) {
  if (p->buf)
    store_fbuf_unref(p->buf);
  p->buf = NULL;
  free(p->got);
  p->got = NULL;
}

/* ---- the version advances ---- */

/* store_spare_ready makes sure the next apply cannot fail: when a pull still
 * sends from the current parameters, the buffer they will be copied into is
 * taken now, before any push is acknowledged. Called with L->mu held; refs
 * cannot rise while it is (pulls take theirs under the lock). */
int store_spare_ready(store_layer *L) {
  if (L->spare == NULL && atomic_load(&L->cur->refs) > 1)
    L->spare = store_fbuf_get(L);
  if (L->spare != NULL && store_fbuf_wire(L, L->spare) != FSPS_OK) {
    store_fbuf_unref(L->spare); /* never made the next parameters */
    L->spare = NULL;
  }
  return L->spare != NULL || atomic_load(&L->cur->refs) == 1 ? FSPS_OK
                                                             : FSPS_NOMEM;
}

/* tic reads the clock for toc, which adds the seconds since to a metric;
 * with the store's metrics off neither reads the clock. */
static double tic(const store *st) {
  return st->metrics != NULL ? metrics_now_s() : 0.0;
}

static void toc(metrics_series *s, double t0) {
  if (s != NULL)
    metrics_add_f(s, metrics_now_s() - t0);
}

/* apply runs the optimizer on the layer with the step's summed gradient.
 * Parameters still being sent by pulls are copied first (into the buffer
 * store_spare_ready took), never changed under them. Called with L->mu held. */
static void apply(store_layer *L, const float *grad, uint32_t contributors) {
  store *st = L->st;
  if (atomic_load(&L->cur->refs) > 1) {
    assert(L->spare != NULL); /* store_spare_ready ran before the ack */
    memcpy(L->spare->data, L->cur->data, L->cnt * sizeof(float));
    store_fbuf_unref(L->cur);
    L->cur = L->spare;
    L->spare = NULL;
  }
  double lr = optim_schedule_lr(&st->sched, st->ocfg.lr, L->version);
  double t0 = tic(st);
  optim_step(&st->ocfg, L->version + 1, lr, 1.0f / (float)contributors,
             L->cur->data, grad, L->state, L->cnt);
  store_params_changed_locked(L);
  toc(SM(st->metrics, optim_seconds), t0);
  L->version++;
  L->version_ns = store_now_ns();
  L->timed_out = false;
  if (st->every && L->version % st->every == 0)
    store_snap_locked(L);
}

/* slot_sum returns the step's summed gradient: in deterministic mode the
 * slices of the workers that pushed, added in worker order. */
static const float *slot_sum(store_layer *L, slot *s) {
  if (s->wbuf == NULL)
    return s->acc->data;
  uint32_t W = L->st->cfg.workers, first = 0;
  while (s->wbuf[first] == NULL) /* a complete slot holds at least one */
    first++;
  float *acc = s->wbuf[first]->data;
  for (uint32_t w = first + 1; w < W; w++) {
    const float *g = s->wbuf[w] ? s->wbuf[w]->data : NULL;
    for (uint64_t i = 0; g != NULL && i < L->cnt; i++)
      acc[i] += g[i];
  }
  return acc;
}

/* awaited returns how many workers slot s still waits for: those that
 * have not pushed, less those the layer no longer waits for. */
static uint32_t awaited(const store_layer *L, const slot *s) {
  uint32_t W = L->st->cfg.workers, gone = 0;
  for (uint32_t w = 0; L->nabsent > 0 && w < W; w++)
    gone += L->absent[w] && !s->pushed[w];
  return W - s->count - gone;
}

/* slot_complete returns whether the slot holds every awaited push of the
 * step the layer is at plus k. */
static bool slot_complete(const store_layer *L, uint64_t k) {
  const slot *s = &L->slots[(L->version + k) % L->nslots];
  return s->step == L->version + k && s->count > 0 && awaited(L, s) == 0;
}

/* advance applies every complete step in order. Called with L->mu held. */
void store_advance(store_layer *L) {
  while (slot_complete(L, 0)) {
    slot *s = &L->slots[L->version % L->nslots];
    double t0 = tic(L->st);
    const float *sum = slot_sum(L, s);
    toc(SM(L->st->metrics, sum_seconds), t0);
    apply(L, sum, s->count);
    store_slot_release(s, L->st->cfg.workers);
  }
}

static void add_into(float *acc, const float *g, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    acc[i] += g[i];
}

/* How a commit acknowledges its push (see store_push_commit). */
typedef struct {
  store_ack_fn fn;
  void *arg;
} ack;

/* count adds a push to its step's slot. The outcome — duplicate, or
 * counted and how far the version will advance — is settled and
 * acknowledged first; the sums and the optimizer run after, while the
 * reply travels. Called with L->mu held. */
static int count(store_push *p, ack a) {
  store_layer *L = p->layer;
  if (p->step < L->version) /* every worker made that step */
    return (a.fn(a.arg, true, false, L->version), FSPS_OK);
  if (p->step > L->version + L->st->cfg.staleness)
    return FSPS_FAILED_PRECONDITION; /* rolled back since it began */
  slot *s = &L->slots[p->step % L->nslots];
  if (s->step != FREE_STEP && s->pushed[p->worker])
    return (a.fn(a.arg, true, false, L->version), FSPS_OK);
  if (store_spare_ready(L) != FSPS_OK)
    return FSPS_NOMEM;
  if (s->step == FREE_STEP) {
    s->step = p->step;
    s->first_ns = store_now_ns();
  }
  s->pushed[p->worker] = 1;
  s->count++;
  uint64_t k = 0;
  while (k < L->nslots && slot_complete(L, k))
    k++;
  a.fn(a.arg, false, k > 0, L->version + k);
  if (s->wbuf) {
    s->wbuf[p->worker] = p->buf;
  } else if (s->acc == NULL) {
    s->acc = p->buf;
  } else {
    double t0 = tic(L->st);
    add_into(s->acc->data, p->buf->data, L->cnt);
    toc(SM(L->st->metrics, sum_seconds), t0);
    store_fbuf_unref(p->buf);
  }
  p->buf = NULL;
  store_advance(L);
  return FSPS_OK;
}

static void set_absent(store_layer *L, uint32_t w, uint8_t absent) {
  if (L->absent[w] != absent)
    L->nabsent = absent ? L->nabsent + 1 : L->nabsent - 1;
  L->absent[w] = absent;
}

/* collect counts a push (see count). A worker the layer stopped waiting
 * for (--worker-timeout proceed) is back and waited for again; unless its
 * push is refused, which changes nothing. Called with L->mu held. */
static int collect(store_push *p, ack a) {
  if (!store_epoch_current(p->layer->st, p->epoch))
    return FSPS_ABORTED; /* rolled back since it began */
  uint8_t was = p->layer->absent[p->worker];
  set_absent(p->layer, p->worker, 0);
  int rc = count(p, a);
  if (rc != FSPS_OK)
    set_absent(p->layer, p->worker, was);
  return rc;
}

static int collect_asp(store_push *p, ack a) {
  store_layer *L = p->layer;
  if (!store_epoch_current(L->st, p->epoch))
    return FSPS_ABORTED; /* rolled back since it began */
  if (p->step < L->asp_next[p->worker])
    return (a.fn(a.arg, true, false, L->version), FSPS_OK);
  if (store_spare_ready(L) != FSPS_OK)
    return FSPS_NOMEM;
  a.fn(a.arg, false, true, L->version + 1);
  apply(L, p->buf->data, L->st->cfg.workers);
  L->asp_next[p->worker] = p->step + 1;
  return FSPS_OK;
}

int store_push_commit(store_push *p, store_ack_fn fn, void *arg, char *msg,
                      size_t msglen) {
  store_layer *L = p->layer;
  if (p->received != p->chunks) {
    snprintf(msg, msglen,
             "push of layer '%s' ended after %" PRIu64 " of %" PRIu64 " chunks",
             L->spec->name, p->received, p->chunks);
    return FSPS_INVALID_ARGUMENT;
  }
  ack a = {fn, arg};
  pthread_mutex_lock(&L->mu);
  uint64_t before = L->version;
  int rc = L->st->cfg.mode == MODE_ASP ? collect_asp(p, a) : collect(p, a);
  uint64_t version = L->version;
  store_waiter *ready = version != before ? store_take_ready(L) : NULL;
  fbuf *params = L->cur;
  pthread_mutex_unlock(&L->mu);
  store_wake(ready, params, version);
  store_push_abort(p);
  if (rc == FSPS_NOMEM)
    snprintf(msg, msglen, "out of memory for the layer's next parameters");
  else if (rc == FSPS_ABORTED)
    store_epoch_why(L->st, p->epoch, msg, msglen);
  else if (rc != FSPS_OK)
    snprintf(msg, msglen,
             "layer '%s' was rolled back to version %" PRIu64 " while step "
             "%" PRIu64 " was being pushed: recover and push again",
             L->spec->name, version, p->step);
  return rc == FSPS_ABORTED ? FSPS_FAILED_PRECONDITION : rc;
}
