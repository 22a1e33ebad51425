/* plan.c: which layers the step scheduler keeps after forward although
 * reshard_after_forward is set — those whose buffers the rest of the step
 * would not reuse, found by playing the step's buffer takes and returns
 * over the pool's buffers, so keeping them costs (almost) no memory and
 * saves gathering them again for backward. */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/* Plans are made only when L * L * buffers stays below this: a model of
 * thousands of layers reshards strictly rather than spend time here. */
#define PLAN_MAX_WORK 50000000ull

/* The pool as a plan sees it: every buffer's capacity, which are taken,
 * and what the plan may allocate on top (small buffers only). */
typedef struct {
  const fsps_client *c;
  uint64_t *cap;
  bool *used;
  int64_t *held; /* per layer: the buffer holding it, or -1 */
  uint32_t nbufs, maxbufs;
  uint64_t spare; /* floats the plan may still allocate */
} sim;

/* sim_take makes layer l held, taking the smallest free buffer that fits
 * (as client_pool_get does) or, within sim->spare, a new one; false if neither.
 */
static bool sim_take(sim *s, uint32_t l) {
  uint64_t n = client_layer_n(s->c, l);
  int64_t best = -1;
  if (s->held[l] >= 0)
    return true;
  for (uint32_t b = 0; b < s->nbufs; b++)
    if (!s->used[b] && s->cap[b] >= n && (best < 0 || s->cap[b] < s->cap[best]))
      best = b;
  if (best < 0 && n <= s->spare && s->nbufs < s->maxbufs) {
    s->spare -= n;
    s->cap[best = s->nbufs++] = n;
  }
  if (best < 0)
    return false;
  s->used[best] = true;
  s->held[l] = best;
  return true;
}

static void sim_give(sim *s, int64_t l) {
  if (l >= 0 && s->held[l] >= 0)
    s->used[s->held[l]] = false;
  if (l >= 0)
    s->held[l] = -1;
}

/* sim_forward plays forward: each layer and the `prefetch` after it held,
 * then released unless kept (or in the tail backward starts with). */
static bool sim_forward(sim *s, const bool *keep) {
  uint32_t L = s->c->L, k = s->c->o.prefetch;
  for (uint32_t l = 0; l < L; l++) {
    for (uint32_t j = l; j <= l + k && j < L; j++)
      if (!sim_take(s, j))
        return false;
    if (!keep[l] && l + 1 + k < L)
      sim_give(s, l);
  }
  return true;
}

/* sim_backward plays backward with gradients written in place: the layer
 * itself first (at once), then the pushed gradient's buffer comes back,
 * then the prefetches (deferred until the pushes are gone). */
static bool sim_backward(sim *s) {
  uint32_t k = s->c->o.prefetch;
  int64_t pushed = -1;
  for (int64_t l = (int64_t)s->c->L - 1; l >= 0; l--) {
    if (!sim_take(s, (uint32_t)l))
      return false;
    sim_give(s, pushed);
    for (int64_t j = l - 1; j >= 0 && j >= l - (int64_t)k; j--)
      if (!sim_take(s, (uint32_t)j))
        return false;
    pushed = l;
  }
  return true;
}

/* sim_step plays a whole step with the layers in keep kept after forward;
 * true if the pool (and the spare) serves every gather. */
static bool sim_step(sim *s, const bool *keep, uint32_t nbufs, uint64_t spare) {
  s->nbufs = nbufs;
  s->spare = spare;
  memset(s->used, 0, s->maxbufs * sizeof *s->used);
  for (uint32_t l = 0; l < s->c->L; l++)
    s->held[l] = -1;
  return sim_forward(s, keep) && sim_backward(s);
}

/* pool_caps fills cap with the capacities of the pool's free buffers (all
 * of them at a step's start); returns how many. */
static uint32_t pool_caps(fsps_client *c, uint64_t *cap, uint32_t max) {
  uint32_t n = 0;
  pthread_mutex_lock(&c->mu);
  for (pool_buf *b = c->free_bufs; b != NULL && n < max; b = b->next)
    cap[n++] = b->cap;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* greedy keeps each layer in turn, first to last, if the step still fits. */
static void greedy(sim *s, bool *keep, uint32_t nbufs, uint64_t spare) {
  memset(keep, 0, s->c->L * sizeof *keep);
  if (!sim_step(s, keep, nbufs, spare))
    return; /* the pool does not even serve strict resharding */
  for (uint32_t l = 0; l + 1 + s->c->o.prefetch < s->c->L; l++) {
    keep[l] = true;
    keep[l] = sim_step(s, keep, nbufs, spare);
  }
}

int client_plan_keep(fsps_client *c, bool *keep, uint64_t base_bytes,
                     uint64_t pool_bytes) {
  uint32_t L = c->L, max = 2 * L + 2 * (c->o.prefetch + 1);
  memset(keep, 0, L * sizeof *keep);
  sim s = {.c = c, .maxbufs = max};
  s.cap = calloc(max, sizeof *s.cap);
  s.used = calloc(max, sizeof *s.used);
  s.held = calloc(L ? L : 1, sizeof *s.held);
  int rc = s.cap && s.used && s.held ? FSPS_OK : FSPS_NOMEM;
  uint32_t nbufs = rc == FSPS_OK ? pool_caps(c, s.cap, L + 1) : 0;
  uint64_t grown = pool_bytes > base_bytes ? pool_bytes - base_bytes : 0;
  uint64_t allow = base_bytes / PLAN_SPARE_DIV;
  if (rc == FSPS_OK && nbufs > 0 && grown < allow &&
      (uint64_t)L * L * nbufs <= PLAN_MAX_WORK)
    greedy(&s, keep, nbufs, (allow - grown) / sizeof(float));
  free(s.cap);
  free(s.used);
  free(s.held);
  return rc;
}
