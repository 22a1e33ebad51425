/* store.c: the shard store — layers' slices, optimizer state, per-step
 * accumulators and the version barrier that parked pulls wait on. */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <time.h>

#include "log.h"
#include "optim/optim.h"
#include "store.h"

#define FREE_STEP UINT64_MAX

/* The pushes collected for one step of one layer. */
typedef struct {
  uint64_t step; /* FREE_STEP when unused */
  uint32_t count;
  uint8_t *pushed; /* W flags */
  int64_t first_ns; /* when its first push arrived */
  fbuf *acc;       /* running sum (default mode) */
  fbuf **wbuf;     /* each worker's slice (--deterministic) */
} slot;

struct store_layer {
  pthread_mutex_t mu;
  float *snap; /* params then state, copied at snap_version */
  uint64_t snap_version;
  bool snap_busy; /* being written: do not overwrite */
  store *st;
  uint32_t index;
  const shard_layer *spec;
  uint64_t off, cnt;
  uint64_t version;
  fbuf *cur;   /* parameters at `version` */
  fbuf *spare; /* taken by spare_ready for apply's copy */
  float *state;
  slot *slots;
  uint32_t nslots;
  uint64_t *asp_next; /* ASP: each worker's next unseen step */
  /* --worker-timeout: when the version last advanced; the workers steps
   * no longer wait for (proceed); whether the current step timed out and
   * why (fail). */
  int64_t version_ns;
  uint8_t *absent;
  uint32_t nabsent;
  bool timed_out;
  char timeout_msg[256];
  store_waiter *waiters;
  pthread_mutex_t pool_mu; /* nests inside mu */
  fbuf *free_list;
};

struct store {
  server_config cfg;
  pthread_mutex_t init_mu;
  atomic_bool ready;
  _Atomic uint64_t epoch; /* see store_epoch */
  shard_spec *spec;
  uint64_t hash;
  optim_config ocfg;
  optim_schedule sched;
  uint32_t nlayers, nonempty;
  store_layer *layers;
  void *blob; /* the declared spec as the client sent it (for checkpoints) */
  size_t bloblen;
  /* --checkpoint-every: each layer copies itself when it reaches a
   * multiple of the period; the hook hears of each copy. */
  uint64_t every;
  void (*snap_hook)(void *arg, uint32_t layer, uint64_t version);
  void *snap_arg;
};

/* ---- buffers ---- */

/* Buffers of a huge page or more are aligned to one and advised to use
 * huge pages: first touching memory costs 10-15 us per 4 KiB page on some
 * VMs (230 ms for a 64 MiB slice), about 20x less in 2 MiB pages. That
 * cost hits a layer's first push, and a pull-time copy of parameters
 * (apply) whenever the pool has no free buffer. */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

static void *big_alloc(size_t bytes) {
  if (bytes < HUGE_PAGE_BYTES)
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
  bytes = (bytes + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
  void *p = aligned_alloc(HUGE_PAGE_BYTES, bytes);
  if (p != NULL)
    madvise(p, bytes, MADV_HUGEPAGE); /* only a hint: failure is harmless */
  return p;
}

static fbuf *fbuf_get(store_layer *L) {
  pthread_mutex_lock(&L->pool_mu);
  fbuf *b = L->free_list;
  if (b)
    L->free_list = b->next_free;
  pthread_mutex_unlock(&L->pool_mu);
  if (b == NULL) {
    b = calloc(1, sizeof *b);
    size_t bytes = (L->cnt ? L->cnt : 1) * sizeof(float);
    if (b == NULL || (b->data = big_alloc(bytes)) == NULL) {
      free(b);
      return NULL;
    }
    b->layer = L;
  }
  atomic_init(&b->refs, 1);
  return b;
}

static void fbuf_put(fbuf *b) {
  store_layer *L = b->layer;
  pthread_mutex_lock(&L->pool_mu);
  b->next_free = L->free_list;
  L->free_list = b;
  pthread_mutex_unlock(&L->pool_mu);
}

void fbuf_ref(fbuf *b) {
  atomic_fetch_add(&b->refs, 1);
}

void fbuf_unref(fbuf *b) {
  if (atomic_fetch_sub(&b->refs, 1) == 1)
    fbuf_put(b);
}

static void pool_free(store_layer *L) {
  for (fbuf *b = L->free_list, *next; b != NULL; b = next) {
    next = b->next_free;
    free(b->data);
    free(b);
  }
  L->free_list = NULL;
}

/* ---- store lifecycle ---- */

store *store_create(const server_config *cfg) {
  store *st = calloc(1, sizeof *st);
  if (st == NULL)
    return NULL;
  st->cfg = *cfg;
  pthread_mutex_init(&st->init_mu, NULL);
  atomic_init(&st->ready, false);
  return st;
}

static void slot_release(slot *s, uint32_t W) {
  if (s->acc)
    fbuf_unref(s->acc);
  s->acc = NULL;
  for (uint32_t w = 0; s->wbuf && w < W; w++) {
    if (s->wbuf[w])
      fbuf_unref(s->wbuf[w]);
    s->wbuf[w] = NULL;
  }
  memset(s->pushed, 0, W);
  s->count = 0;
  s->step = FREE_STEP;
}

static void layer_free(store *st, store_layer *L) {
  uint32_t W = st->cfg.workers;
  for (uint32_t i = 0; L->slots && i < L->nslots; i++) {
    if (L->slots[i].pushed)
      slot_release(&L->slots[i], W);
    free(L->slots[i].pushed);
    free(L->slots[i].wbuf);
  }
  free(L->slots);
  if (L->cur)
    fbuf_unref(L->cur);
  if (L->spare)
    fbuf_unref(L->spare);
  pool_free(L);
  free(L->state);
  free(L->snap);
  free(L->asp_next);
  free(L->absent);
  pthread_mutex_destroy(&L->mu);
  pthread_mutex_destroy(&L->pool_mu);
}

void store_destroy(store *st) {
  if (st == NULL)
    return;
  for (uint32_t l = 0; st->layers && l < st->nlayers; l++)
    layer_free(st, &st->layers[l]);
  free(st->layers);
  free(st->blob);
  shard_spec_destroy(st->spec);
  pthread_mutex_destroy(&st->init_mu);
  free(st);
}

/* ---- declaring the model ---- */

static void optim_from_spec(const shard_optim_spec *o, optim_config *c,
                            optim_schedule *s) {
  static const optim_kind kinds[] = {OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW,
                                     OPTIM_ADAGRAD};
  static const optim_sched_kind scheds[] = {
      OPTIM_SCHED_CONSTANT, OPTIM_SCHED_STEP, OPTIM_SCHED_COSINE};
  optim_config_defaults(kinds[o->kind], c);
  c->lr = (float)o->lr;
  c->momentum = (float)o->momentum;
  c->dampening = (float)o->dampening;
  c->nesterov = o->nesterov;
  c->weight_decay = (float)o->weight_decay;
  c->beta1 = (float)o->beta1;
  c->beta2 = (float)o->beta2;
  c->eps = (float)o->eps;
  c->lr_decay = (float)o->lr_decay;
  c->initial_accumulator_value = (float)o->initial_accumulator_value;
  *s = (optim_schedule){scheds[o->schedule],
                        o->step_size,
                        (float)o->gamma,
                        o->t_max,
                        (float)o->eta_min,
                        o->warmup_steps,
                        (float)o->warmup_start_factor};
}

static int slots_init(store *st, store_layer *L) {
  uint32_t W = st->cfg.workers;
  L->nslots = st->cfg.mode == MODE_ASP ? 0 : st->cfg.staleness + 1;
  if (st->cfg.mode == MODE_ASP)
    return (L->asp_next = calloc(W, sizeof *L->asp_next)) ? FSPS_OK
                                                          : FSPS_NOMEM;
  L->slots = calloc(L->nslots, sizeof *L->slots);
  L->absent = calloc(W, 1);
  if (L->slots == NULL || L->absent == NULL)
    return FSPS_NOMEM;
  for (uint32_t i = 0; i < L->nslots; i++) {
    slot *s = &L->slots[i];
    s->step = FREE_STEP;
    s->pushed = calloc(W, 1);
    if (st->cfg.deterministic)
      s->wbuf = calloc(W, sizeof *s->wbuf);
    if (s->pushed == NULL || (st->cfg.deterministic && s->wbuf == NULL))
      return FSPS_NOMEM;
  }
  return FSPS_OK;
}

static int layer_init(store *st, uint32_t l, store_layer *L) {
  L->st = st;
  L->index = l;
  L->spec = shard_spec_layer(st->spec, l);
  pthread_mutex_init(&L->mu, NULL);
  pthread_mutex_init(&L->pool_mu, NULL);
  shard_slice(L->spec->n, st->cfg.num_servers, st->cfg.index, &L->off, &L->cnt);
  size_t k = optim_state_per_elem(&st->ocfg);
  L->cur = fbuf_get(L);
  L->state = k ? big_alloc(k * (L->cnt ? L->cnt : 1) * sizeof(float)) : NULL;
  if (L->cur == NULL || (k && L->state == NULL))
    return FSPS_NOMEM;
  int rc = shard_init_fill(st->spec, l, L->off, L->cnt, L->cur->data);
  if (rc != FSPS_OK)
    return rc;
  if (k)
    optim_state_init(&st->ocfg, L->state, L->cnt);
  return slots_init(st, L);
}

/* fits checks, before anything is allocated, that this server's slices
 * (parameters, optimizer state and one staging buffer per layer) take at
 * most 3/4 of physical memory: a model too large for the machine is
 * refused, rather than the server being killed by the OOM killer while it
 * initialises. */
static bool fits(const shard_spec *spec, const server_config *cfg,
                 const optim_config *oc, char *msg, size_t msglen) {
  double need = 0;
  for (uint32_t l = 0; l < shard_spec_num_layers(spec); l++) {
    uint64_t off, cnt;
    shard_slice(shard_spec_layer(spec, l)->n, cfg->num_servers, cfg->index,
                &off, &cnt);
    need += (double)cnt * 4.0 * (double)(2 + optim_state_per_elem(oc));
  }
  double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
  if (need <= 0.75 * have)
    return true;
  snprintf(msg, msglen,
           "this server's share of the model needs %.1f GiB, more than 3/4 "
           "of its %.1f GiB of memory: use more servers",
           need / (1 << 30), have / (1 << 30));
  return false;
}

static int build(store *st, shard_spec *spec, char *msg, size_t msglen) {
  optim_config oc;
  optim_schedule sc;
  optim_from_spec(shard_spec_optim(spec), &oc, &sc);
  if (!fits(spec, &st->cfg, &oc, msg, msglen))
    return FSPS_RESOURCE_EXHAUSTED;
  st->spec = spec;
  st->nlayers = shard_spec_num_layers(spec);
  optim_from_spec(shard_spec_optim(spec), &st->ocfg, &st->sched);
  st->layers = calloc(st->nlayers, sizeof *st->layers);
  int rc = st->layers ? FSPS_OK : FSPS_NOMEM;
  uint32_t done = 0;
  for (; rc == FSPS_OK && done < st->nlayers; done++) {
    rc = layer_init(st, done, &st->layers[done]);
    st->nonempty += st->layers[done].cnt > 0;
  }
  if (rc == FSPS_OK)
    return FSPS_OK;
  st->nonempty = 0;
  for (uint32_t l = 0; l < done; l++)
    layer_free(st, &st->layers[l]);
  free(st->layers);
  st->layers = NULL;
  st->spec = NULL;
  snprintf(msg, msglen, "cannot hold the model's slices on this server: %s",
           fsps_strerror(rc));
  return FSPS_RESOURCE_EXHAUSTED;
}

static int keep_blob(store *st, const void *blob, size_t len, char *msg,
                     size_t msglen) {
  free(st->blob);
  st->blob = malloc(len ? len : 1);
  st->bloblen = len;
  if (st->blob == NULL) {
    snprintf(msg, msglen, "out of memory");
    return FSPS_RESOURCE_EXHAUSTED;
  }
  if (len)
    memcpy(st->blob, blob, len);
  return FSPS_OK;
}

int store_init(store *st, shard_spec *spec, const void *blob, size_t bloblen,
               bool *created, char *msg, size_t msglen) {
  int rc = shard_spec_validate(spec, msg, msglen);
  if (rc != FSPS_OK) {
    shard_spec_destroy(spec);
    return FSPS_INVALID_ARGUMENT;
  }
  uint64_t h = shard_spec_hash(spec);
  *created = false;
  pthread_mutex_lock(&st->init_mu);
  if (atomic_load(&st->ready)) {
    if (h != st->hash) {
      snprintf(msg, msglen,
               "another model is declared here: its spec hash is %016" PRIx64
               ", the request's is %016" PRIx64
               " (restart the servers to train a different model)",
               st->hash, h);
      rc = FSPS_FAILED_PRECONDITION;
    }
    shard_spec_destroy(spec);
  } else if ((rc = keep_blob(st, blob, bloblen, msg, msglen)) != FSPS_OK) {
    shard_spec_destroy(spec);
  } else if ((rc = build(st, spec, msg, msglen)) == FSPS_OK) {
    st->hash = h;
    *created = true;
    atomic_store(&st->ready, true);
  } else {
    shard_spec_destroy(spec);
  }
  pthread_mutex_unlock(&st->init_mu);
  return rc;
}

bool store_ready(const store *st) {
  return atomic_load(&st->ready);
}

uint64_t store_hash(const store *st) {
  return store_ready(st) ? st->hash : 0;
}

uint32_t store_num_layers(const store *st) {
  return store_ready(st) ? st->nlayers : 0;
}

const server_config *store_config(const store *st) {
  return &st->cfg;
}

store_layer *store_layer_get(store *st, uint32_t l) {
  if (!store_ready(st) || l >= st->nlayers)
    return NULL;
  return &st->layers[l];
}

void store_info(store_layer *L, store_layer_info *info) {
  pthread_mutex_lock(&L->mu);
  *info =
      (store_layer_info){L->spec->name, L->spec->n, L->off, L->cnt, L->version};
  pthread_mutex_unlock(&L->mu);
}

uint64_t store_pushed(store_layer *L, bool *pushed, bool *absent) {
  uint32_t W = L->st->cfg.workers;
  pthread_mutex_lock(&L->mu);
  uint64_t step = L->version;
  for (uint32_t w = 0; w < W; w++) {
    absent[w] = false;
    if (L->st->cfg.mode == MODE_ASP) {
      pushed[w] = false;
      continue;
    }
    const slot *s = &L->slots[step % L->nslots];
    pushed[w] = s->step == step && s->pushed[w];
    absent[w] = L->absent[w];
  }
  pthread_mutex_unlock(&L->mu);
  return step;
}

/* ---- pulls and the version barrier ---- */

/* ---- epochs ---- */

uint64_t store_epoch(const store *st) {
  return atomic_load(&st->epoch);
}

void store_set_epoch(store *st, uint64_t epoch) {
  atomic_store(&st->epoch, epoch);
}

static bool epoch_current(const store *st, uint64_t epoch) {
  uint64_t now = store_epoch(st);
  return epoch == now && now != STORE_EPOCH_CHANGING;
}

/* stale_epoch returns whether epoch is not the store's (then why is set). */
static bool stale_epoch(const store *st, uint64_t epoch, char *why,
                        size_t len) {
  uint64_t now = store_epoch(st);
  if (epoch_current(st, epoch))
    return false;
  if (now == STORE_EPOCH_CHANGING)
    snprintf(why, len, "this server is being rolled back: recover and go on "
             "from the version the cluster agrees on");
  else
    snprintf(why, len,
             "the cluster is in epoch %016" PRIx64 ", not %016" PRIx64
             ": it was rolled back (or this server restarted) since; recover "
             "and go on from the version the cluster agrees on",
             now, epoch);
  return true;
}

int store_pull(store_layer *L, store_waiter *w, fbuf **params,
               uint64_t *version) {
  pthread_mutex_lock(&L->mu);
  int rc = STORE_PULL_PARKED;
  if (stale_epoch(L->st, w->epoch, w->failed, sizeof w->failed)) {
    rc = STORE_PULL_FAILED;
    w->failed_code = FSPS_FAILED_PRECONDITION;
  } else if (L->version >= w->min_version) {
    rc = STORE_PULL_READY;
    fbuf_ref(L->cur);
    *params = L->cur;
    *version = L->version;
  } else if (w->min_version > L->version + 1) {
    rc = STORE_PULL_FAILED; /* see store_pull's contract */
    w->failed_code = FSPS_FAILED_PRECONDITION;
    snprintf(w->failed, sizeof w->failed,
             "layer '%s' is at version %" PRIu64 ": no worker of this "
             "cluster can wait for version %" PRIu64 " (the server restarted "
             "or rolled back; recover and go on from its version)",
             L->spec->name, L->version, w->min_version);
  } else if (L->timed_out) {
    rc = STORE_PULL_FAILED;
    w->failed_code = FSPS_ABORTED;
    snprintf(w->failed, sizeof w->failed, "%s", L->timeout_msg);
  } else {
    w->parked = true;
    w->prev = NULL;
    w->next = L->waiters;
    if (L->waiters)
      L->waiters->prev = w;
    L->waiters = w;
  }
  pthread_mutex_unlock(&L->mu);
  return rc;
}

static void unlink_waiter(store_layer *L, store_waiter *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    L->waiters = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->parked = false;
  w->prev = w->next = NULL;
}

bool store_unpark(store_layer *L, store_waiter *w) {
  pthread_mutex_lock(&L->mu);
  bool was = w->parked;
  if (was)
    unlink_waiter(L, w);
  pthread_mutex_unlock(&L->mu);
  return was;
}

/* take_ready moves the waiters the current version satisfies onto a
 * private list, each holding a reference to the parameters. */
static store_waiter *take_ready(store_layer *L) {
  store_waiter *ready = NULL;
  for (store_waiter *w = L->waiters, *next; w != NULL; w = next) {
    next = w->next;
    if (w->min_version > L->version)
      continue;
    unlink_waiter(L, w);
    fbuf_ref(L->cur);
    w->next = ready;
    ready = w;
  }
  return ready;
}

static void wake(store_waiter *ready, fbuf *params, uint64_t version) {
  for (store_waiter *w = ready, *next; w != NULL; w = next) {
    next = w->next;
    w->next = NULL;
    w->ready(w, params, version);
  }
}

/* ---- pushes ---- */

int store_push_begin(store_layer *L, uint64_t step, uint32_t worker,
                     uint64_t epoch, store_push *p, char *msg, size_t msglen) {
  const server_config *cfg = &L->st->cfg;
  memset(p, 0, sizeof *p);
  if (stale_epoch(L->st, epoch, msg, msglen))
    return FSPS_FAILED_PRECONDITION;
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
  pthread_mutex_lock(&L->mu);
  uint64_t version = L->version;
  pthread_mutex_unlock(&L->mu);
  if (cfg->mode != MODE_ASP && step > version + cfg->staleness) {
    snprintf(msg, msglen,
             "push for step %" PRIu64 " of layer '%s' is ahead of its version "
             "%" PRIu64 " by more than the staleness %u",
             step, L->spec->name, version, cfg->staleness);
    return FSPS_FAILED_PRECONDITION;
  }
  p->layer = L;
  p->step = step;
  p->worker = worker;
  p->epoch = epoch;
  p->chunks = shard_num_chunks(L->cnt);
  p->buf = fbuf_get(L);
  p->got = calloc(p->chunks, 1);
  if (p->buf == NULL || p->got == NULL) {
    store_push_abort(p);
    snprintf(msg, msglen, "out of memory staging a push");
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

/* first_nonfinite returns the index of the first NaN/Inf, or n. */
static uint64_t first_nonfinite(const float *d, uint64_t n) {
  if (!store_any_nonfinite(d, n))
    return n;
  for (uint64_t i = 0; i < n; i++)
    if (!isfinite(d[i]))
      return i;
  return n;
}

int store_push_check(store_push *p, float *dst, uint64_t count, char *msg,
                     size_t msglen) {
  uint64_t bad = first_nonfinite(dst, count);
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
    fbuf_unref(p->buf);
  p->buf = NULL;
  free(p->got);
  p->got = NULL;
}

static size_t layer_floats(const store_layer *L) {
  return (1 + optim_state_per_elem(&L->st->ocfg)) * L->cnt;
}

/* snap_locked copies the layer at its version for a step-boundary
 * checkpoint, unless the previous copy is still being written. L->mu held. */
static void snap_locked(store_layer *L) {
  store *st = L->st;
  if (L->snap_busy) { /* the hook sees no copy: this checkpoint is skipped */
    LOGW("checkpoint at version %" PRIu64 " skipped: the previous one is "
         "still being written",
         L->version);
    return;
  }
  if (L->snap == NULL && (L->snap = malloc(layer_floats(L) * 4 + 4)) == NULL)
    return;
  memcpy(L->snap, L->cur->data, L->cnt * sizeof(float));
  if (layer_floats(L) > L->cnt)
    memcpy(L->snap + L->cnt, L->state,
           (layer_floats(L) - L->cnt) * sizeof(float));
  L->snap_version = L->version;
  if (st->snap_hook)
    st->snap_hook(st->snap_arg, L->index, L->version);
}

/* spare_ready makes sure the next apply cannot fail: when a pull still
 * sends from the current parameters, the buffer they will be copied into is
 * taken now, before any push is acknowledged. Called with L->mu held; refs
 * cannot rise while it is (pulls take theirs under the lock). */
static int spare_ready(store_layer *L) {
  if (L->spare == NULL && atomic_load(&L->cur->refs) > 1)
    L->spare = fbuf_get(L);
  return L->spare != NULL || atomic_load(&L->cur->refs) == 1 ? FSPS_OK
                                                             : FSPS_NOMEM;
}

/* apply runs the optimizer on the layer with the step's summed gradient.
 * Parameters still being sent by pulls are copied first (into the buffer
 * spare_ready took), never changed under them. Called with L->mu held. */
static void apply(store_layer *L, const float *grad, uint32_t contributors) {
  store *st = L->st;
  if (atomic_load(&L->cur->refs) > 1) {
    assert(L->spare != NULL); /* spare_ready ran before the ack */
    memcpy(L->spare->data, L->cur->data, L->cnt * sizeof(float));
    fbuf_unref(L->cur);
    L->cur = L->spare;
    L->spare = NULL;
  }
  float lr = optim_schedule_lr(&st->sched, st->ocfg.lr, L->version);
  optim_step(&st->ocfg, L->version + 1, lr, 1.0f / (float)contributors,
             L->cur->data, grad, L->state, L->cnt);
  L->version++;
  L->version_ns = store_now_ns();
  L->timed_out = false;
  if (st->every && L->version % st->every == 0)
    snap_locked(L);
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
static void advance(store_layer *L) {
  while (slot_complete(L, 0)) {
    slot *s = &L->slots[L->version % L->nslots];
    apply(L, slot_sum(L, s), s->count);
    slot_release(s, L->st->cfg.workers);
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

/* collect adds a push to its step's slot. The outcome — duplicate, or
 * counted and how far the version will advance — is settled and
 * acknowledged first; the sums and the optimizer run after, while the
 * reply travels. Called with L->mu held. */
static int collect(store_push *p, ack a) {
  store_layer *L = p->layer;
  if (!epoch_current(L->st, p->epoch))
    return FSPS_ABORTED; /* rolled back since it began */
  if (L->absent[p->worker]) { /* back after --worker-timeout: wait again */
    L->absent[p->worker] = 0;
    L->nabsent--;
  }
  if (p->step < L->version) /* every worker made that step */
    return (a.fn(a.arg, true, false, L->version), FSPS_OK);
  if (p->step > L->version + L->st->cfg.staleness)
    return FSPS_FAILED_PRECONDITION; /* rolled back since it began */
  slot *s = &L->slots[p->step % L->nslots];
  if (s->step != FREE_STEP && s->pushed[p->worker])
    return (a.fn(a.arg, true, false, L->version), FSPS_OK);
  if (spare_ready(L) != FSPS_OK)
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
    add_into(s->acc->data, p->buf->data, L->cnt);
    fbuf_unref(p->buf);
  }
  p->buf = NULL;
  advance(L);
  return FSPS_OK;
}

static int collect_asp(store_push *p, ack a) {
  store_layer *L = p->layer;
  if (!epoch_current(L->st, p->epoch))
    return FSPS_ABORTED; /* rolled back since it began */
  if (p->step < L->asp_next[p->worker])
    return (a.fn(a.arg, true, false, L->version), FSPS_OK);
  if (spare_ready(L) != FSPS_OK)
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
  store_waiter *ready = version != before ? take_ready(L) : NULL;
  fbuf *params = L->cur;
  pthread_mutex_unlock(&L->mu);
  wake(ready, params, version);
  store_push_abort(p);
  if (rc == FSPS_NOMEM)
    snprintf(msg, msglen, "out of memory for the layer's next parameters");
  else if (rc == FSPS_ABORTED)
    stale_epoch(L->st, p->epoch, msg, msglen);
  else if (rc != FSPS_OK)
    snprintf(msg, msglen,
             "layer '%s' was rolled back to version %" PRIu64 " while step "
             "%" PRIu64 " was being pushed: recover and push again",
             L->spec->name, version, p->step);
  return rc == FSPS_ABORTED ? FSPS_FAILED_PRECONDITION : rc;
}

/* ---- --worker-timeout ---- */

int64_t store_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* missing lists the workers slot s waits for ("1, 3") into out and marks
 * them absent when mark is set. */
static void missing(store_layer *L, const slot *s, bool mark, char *out,
                    size_t outlen) {
  size_t used = 0;
  out[0] = '\0';
  for (uint32_t w = 0; w < L->st->cfg.workers; w++) {
    if (s->pushed[w] || L->absent[w])
      continue;
    if (used < outlen)
      used += (size_t)snprintf(out + used, outlen - used, "%s%u",
                               used ? ", " : "", w);
    if (mark) {
      L->absent[w] = 1;
      L->nabsent++;
    }
  }
}

/* take_all moves every parked waiter onto a private list, each told why it
 * fails. */
static store_waiter *take_all(store_layer *L) {
  store_waiter *all = NULL;
  while (L->waiters != NULL) {
    store_waiter *w = L->waiters;
    unlink_waiter(L, w);
    w->failed_code = FSPS_ABORTED;
    snprintf(w->failed, sizeof w->failed, "%s", L->timeout_msg);
    w->next = all;
    all = w;
  }
  return all;
}

/* timeout handles a step that waited too long, L->mu held: proceed without
 * the missing workers, or fail what waits on the step. Returns the waiters
 * to wake (proceed) or fail. */
static store_waiter *timeout(store_layer *L, slot *s) {
  const server_config *cfg = &L->st->cfg;
  char who[160];
  missing(L, s, cfg->timeout_proceed, who, sizeof who);
  uint32_t secs = cfg->worker_timeout_s;
  if (cfg->timeout_proceed) {
    LOGW("layer '%s' step %" PRIu64 ": going on without worker(s) %s, which "
         "did not push within %u s (--worker-timeout, --on-worker-timeout "
         "proceed)",
         L->spec->name, L->version, who, secs);
    if (spare_ready(L) == FSPS_OK)
      advance(L);
    return take_ready(L);
  }
  L->timed_out = true;
  snprintf(L->timeout_msg, sizeof L->timeout_msg,
           "layer '%s' step %" PRIu64 ": worker(s) %s did not push within "
           "%u s (--worker-timeout); restart them with the same --rank",
           L->spec->name, L->version, who, secs);
  LOGE("%s", L->timeout_msg);
  return take_all(L);
}

static void expire_layer(store_layer *L, int64_t now, int64_t limit_ns) {
  store_waiter *list = NULL;
  pthread_mutex_lock(&L->mu);
  slot *s = &L->slots[L->version % L->nslots];
  int64_t since = s->first_ns > L->version_ns ? s->first_ns : L->version_ns;
  if (s->step == L->version && s->count > 0 && !L->timed_out &&
      now - since >= limit_ns)
    list = timeout(L, s);
  bool failed = L->timed_out;
  fbuf *params = L->cur;
  uint64_t version = L->version;
  pthread_mutex_unlock(&L->mu);
  if (!failed) {
    wake(list, params, version);
    return;
  }
  for (store_waiter *w = list, *next; w != NULL; w = next) {
    next = w->next;
    w->next = NULL;
    w->ready(w, NULL, version);
  }
}

void store_expire(store *st) {
  uint32_t secs = st->cfg.worker_timeout_s;
  if (secs == 0 || st->cfg.mode == MODE_ASP || !store_ready(st))
    return;
  int64_t now = store_now_ns();
  for (uint32_t l = 0; l < st->nlayers; l++)
    if (st->layers[l].cnt > 0)
      expire_layer(&st->layers[l], now, (int64_t)secs * 1000000000);
}

/* ---- rollback ---- */

/* take_abandoned moves the waiters for versions past version + 1, which a
 * rollback to `version` abandons, and those of another epoch than the
 * store's, onto a private list, each told why. */
static store_waiter *take_abandoned(store_layer *L) {
  store_waiter *out = NULL;
  for (store_waiter *w = L->waiters, *next; w != NULL; w = next) {
    next = w->next;
    if (w->min_version <= L->version + 1 && epoch_current(L->st, w->epoch))
      continue;
    unlink_waiter(L, w);
    w->failed_code = FSPS_FAILED_PRECONDITION;
    snprintf(w->failed, sizeof w->failed,
             "layer '%s' was rolled back to version %" PRIu64
             " while this pull waited for version %" PRIu64,
             L->spec->name, L->version, w->min_version);
    w->next = out;
    out = w;
  }
  return out;
}

/* reset_locked sets L's parameters and state to data (params then state),
 * or to the initial values when data is NULL, and drops every pending push. */
static void reset_locked(store_layer *L, const float *data) {
  store *st = L->st;
  if (data != NULL) {
    memcpy(L->cur->data, data, L->cnt * sizeof(float));
    if (layer_floats(L) > L->cnt)
      memcpy(L->state, data + L->cnt,
             (layer_floats(L) - L->cnt) * sizeof(float));
  } else {
    shard_init_fill(st->spec, L->index, L->off, L->cnt, L->cur->data);
    if (L->state)
      optim_state_init(&st->ocfg, L->state, L->cnt);
  }
  for (uint32_t i = 0; i < L->nslots; i++)
    slot_release(&L->slots[i], st->cfg.workers);
  if (L->asp_next)
    memset(L->asp_next, 0, st->cfg.workers * sizeof *L->asp_next);
  if (L->absent)
    memset(L->absent, 0, st->cfg.workers);
  L->nabsent = 0;
  L->timed_out = false;
  L->version_ns = store_now_ns();
}

/* fail_all tells each waiter of a private list that it failed. */
static void fail_all(store_waiter *gone, uint64_t version) {
  for (store_waiter *w = gone, *next; w != NULL; w = next) {
    next = w->next;
    w->next = NULL;
    w->ready(w, NULL, version);
  }
}

void store_new_epoch(store_layer *L) {
  pthread_mutex_lock(&L->mu);
  for (uint32_t i = 0; i < L->nslots; i++)
    slot_release(&L->slots[i], L->st->cfg.workers);
  store_waiter *gone = take_abandoned(L);
  uint64_t version = L->version;
  pthread_mutex_unlock(&L->mu);
  fail_all(gone, version);
}

int store_rollback_layer(store_layer *L, const float *data, uint64_t version) {
  pthread_mutex_lock(&L->mu);
  if (spare_ready(L) != FSPS_OK) {
    pthread_mutex_unlock(&L->mu);
    return FSPS_NOMEM;
  }
  if (atomic_load(&L->cur->refs) > 1) { /* pulls still send the old ones */
    fbuf_unref(L->cur);
    L->cur = L->spare;
    L->spare = NULL;
  }
  reset_locked(L, data);
  L->version = version;
  if (!L->snap_busy) /* a copy of the abandoned timeline is void */
    L->snap_version = FREE_STEP;
  store_waiter *gone = take_abandoned(L);
  pthread_mutex_unlock(&L->mu);
  fail_all(gone, version);
  return FSPS_OK;
}

/* ---- checkpoints ---- */

const void *store_blob(const store *st, size_t *len) {
  *len = st->bloblen;
  return st->blob;
}

uint32_t store_nonempty_layers(const store *st) {
  return store_ready(st) ? st->nonempty : 0;
}

size_t store_layer_floats(store_layer *L) {
  return layer_floats(L);
}

void store_set_snapshots(store *st, uint64_t every,
                         void (*hook)(void *, uint32_t, uint64_t), void *arg) {
  st->every = every;
  st->snap_hook = hook;
  st->snap_arg = arg;
}

uint64_t store_copy_now(store_layer *L, float *out) {
  pthread_mutex_lock(&L->mu);
  memcpy(out, L->cur->data, L->cnt * sizeof(float));
  if (layer_floats(L) > L->cnt)
    memcpy(out + L->cnt, L->state, (layer_floats(L) - L->cnt) * sizeof(float));
  uint64_t v = L->version;
  pthread_mutex_unlock(&L->mu);
  return v;
}

const float *store_snapshot_hold(store_layer *L, uint64_t version) {
  pthread_mutex_lock(&L->mu);
  bool ok = L->snap != NULL && L->snap_version == version;
  if (ok)
    L->snap_busy = true;
  pthread_mutex_unlock(&L->mu);
  return ok ? L->snap : NULL;
}

void store_snapshot_release(store_layer *L) {
  pthread_mutex_lock(&L->mu);
  L->snap_busy = false;
  pthread_mutex_unlock(&L->mu);
}

void store_restore_layer(store_layer *L, const float *data, uint64_t version) {
  pthread_mutex_lock(&L->mu);
  memcpy(L->cur->data, data, L->cnt * sizeof(float));
  if (layer_floats(L) > L->cnt)
    memcpy(L->state, data + L->cnt, (layer_floats(L) - L->cnt) * sizeof(float));
  L->version = version;
  pthread_mutex_unlock(&L->mu);
}
