/* sched.c: the FSDP step scheduler — layers gathered just in time with
 * prefetch, freed or kept after forward, re-gathered for backward, and
 * gradients pushed as soon as each layer's backward is done.
 *
 * Memory with reshard_after_forward: forward holds the layer in use and
 * the `prefetch` gathered ahead. Backward holds as many: a prefetch waits
 * (on the timer thread, never blocking the trainer) until the gradients
 * being pushed have gone, and takes over one of their buffers; a trainer
 * that writes each gradient over its parameters (fsps_backward_inplace)
 * needs no buffer beyond those. Layers whose buffers the rest of the step
 * would not reuse are kept after forward all the same (plan.c). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

struct layer_slot {
  pool_buf *params; /* parameters gathered and awaited, or NULL */
  gather *g;        /* the gather in flight (it holds its buffer), or NULL */
  pool_buf *grad;   /* the gradient buffer handed out by fsps_backward */
  bool inplace;     /* grad is the parameters' buffer (backward_inplace) */
};

int sched_init(fsps_client *c) {
  c->slots = calloc(c->L ? c->L : 1, sizeof *c->slots);
  c->keep = calloc(c->L ? c->L : 1, sizeof *c->keep);
  return c->slots && c->keep ? FSPS_OK : FSPS_NOMEM;
}

/* await_slot waits for slot l's gather and takes its buffer as the slot's
 * parameters; on failure the buffer goes back to the pool. */
static int await_slot(fsps_client *c, uint32_t l) {
  layer_slot *sl = &c->slots[l];
  if (sl->g == NULL)
    return FSPS_OK;
  int rc = gather_wait(c, sl->g, NULL);
  if (rc == FSPS_OK)
    sl->params = gather_take_buf(sl->g);
  gather_free(sl->g); /* returns the buffer if not taken */
  sl->g = NULL;
  return rc;
}

/* release_params gives slot l's parameters back to the pool. A prefetch
 * still in flight is waited for (the buffer is its destination); its
 * failure concerns nobody now, so the client's message is kept. */
static void release_params(fsps_client *c, uint32_t l) {
  layer_slot *sl = &c->slots[l];
  if (sl->g != NULL) {
    char keep[CLIENT_MSG_MAX];
    memcpy(keep, c->err, sizeof keep);
    if (await_slot(c, l) != FSPS_OK)
      memcpy(c->err, keep, sizeof keep);
  }
  if (sl->params != NULL)
    pool_put(c, sl->params);
  sl->params = NULL;
}

/* release_slot empties slot l completely (parameters and gradient). */
static void release_slot(fsps_client *c, uint32_t l) {
  release_params(c, l);
  if (c->slots[l].grad != NULL)
    pool_put(c, c->slots[l].grad);
  c->slots[l].grad = NULL;
  c->slots[l].inplace = false;
}

void sched_destroy(fsps_client *c) {
  for (uint32_t l = 0; c->slots != NULL && l < c->L; l++)
    release_slot(c, l);
  free(c->slots);
  free(c->keep);
  c->slots = NULL;
  c->keep = NULL;
}

/* ensure starts gathering layer l unless it is held already; with defer,
 * only once no push is in flight (gather_start_pooled). */
static int ensure(fsps_client *c, uint32_t l, bool defer) {
  layer_slot *sl = &c->slots[l];
  if (sl->params != NULL || sl->g != NULL)
    return FSPS_OK;
  return gather_start_pooled(c, l, c->min_version, defer, &sl->g);
}

/* prefetch ensures the next `prefetch` layers after l in direction dir
 * (+1 forward, -1 backward) are in flight. Backward prefetches wait for
 * the pushes in flight, whose buffers they reuse. */
static int prefetch(fsps_client *c, uint32_t l, int dir) {
  int rc = FSPS_OK;
  for (uint32_t i = 1; rc == FSPS_OK && i <= c->o.prefetch; i++) {
    int64_t j = (int64_t)l + dir * (int64_t)i;
    if (j < 0 || j >= (int64_t)c->L)
      break;
    rc = ensure(c, (uint32_t)j, dir < 0);
  }
  return rc;
}

/* get_params makes layer l ready, with the next layers in flight. */
static int get_params(fsps_client *c, uint32_t l, int dir,
                      const float **params) {
  int rc = ensure(c, l, false);
  if (rc == FSPS_OK)
    rc = prefetch(c, l, dir);
  if (rc == FSPS_OK)
    rc = await_slot(c, l);
  if (rc == FSPS_OK)
    *params = c->slots[l].params->p;
  return rc;
}

/* check_layer validates a scheduler call on layer l. */
static int check_layer(fsps_client *c, uint32_t l, const char *fn) {
  if (!c->in_step)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "%s(%u) outside a step: call fsps_step_begin first", fn,
                       l);
  if (l >= c->L)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "%s: no layer %u (the model has %u)", fn, l, c->L);
  return FSPS_OK;
}

uint64_t sched_min_version(fsps_mode mode, uint32_t staleness, uint64_t step) {
  if (mode == FSPS_ASP)
    return 0;
  if (mode == FSPS_SSP)
    return step > staleness ? step - staleness : 0;
  return step;
}

/* plan decides which layers this step keeps after forward (plan.c): with
 * resharding, after a step whose backward wrote every gradient in place
 * (the plan's model of it), made again only when the pool has changed. */
static void plan(fsps_client *c) {
  bool ok =
      c->o.reshard_after_forward && c->bw_inplace > 0 && c->bw_separate == 0;
  c->bw_inplace = c->bw_separate = 0;
  pthread_mutex_lock(&c->mu);
  uint64_t bytes = c->bytes;
  pthread_mutex_unlock(&c->mu);
  if (ok && c->plan_ok && bytes == c->plan_bytes)
    return; /* the same pool: the same plan */
  memset(c->keep, 0, c->L * sizeof *c->keep);
  c->plan_ok = false;
  if (!ok)
    return;
  if (c->plan_base == 0)
    c->plan_base = bytes; /* the pool strict resharding built */
  c->plan_ok = plan_keep(c, c->keep, c->plan_base, bytes) == FSPS_OK;
  c->plan_bytes = bytes;
}

int fsps_step_begin(fsps_client *c, uint64_t step) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  for (uint32_t l = 0; l < c->L; l++) /* left over by an abandoned step */
    release_slot(c, l);
  plan(c);
  c->step = step;
  c->min_version = sched_min_version(c->o.mode, c->o.staleness, step);
  c->in_step = true;
  if (c->L == 0)
    return FSPS_OK;
  int rc = ensure(c, 0, false);
  return rc == FSPS_OK ? prefetch(c, 0, +1) : rc;
}

int fsps_forward(fsps_client *c, uint32_t layer, const float **params) {
  if (c == NULL || params == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "params is NULL")
             : FSPS_INVALID_ARGUMENT;
  int rc = check_layer(c, layer, "fsps_forward");
  return rc == FSPS_OK ? get_params(c, layer, +1, params) : rc;
}

int fsps_forward_done(fsps_client *c, uint32_t layer) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = check_layer(c, layer, "fsps_forward_done");
  if (rc != FSPS_OK)
    return rc;
  /* Backward starts with the last layer and the `prefetch` before it:
   * gathering them again at once would take as many buffers as forward
   * holds now, so they are kept, which costs no memory and saves their
   * transfer. */
  if (c->o.reshard_after_forward && layer + 1 + c->o.prefetch < c->L &&
      !c->keep[layer])
    release_params(c, layer);
  return FSPS_OK;
}

int fsps_backward(fsps_client *c, uint32_t layer, const float **params,
                  float **grad) {
  if (c == NULL || params == NULL || grad == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "params or grad NULL")
             : FSPS_INVALID_ARGUMENT;
  int rc = check_layer(c, layer, "fsps_backward");
  if (rc == FSPS_OK)
    rc = get_params(c, layer, -1, params);
  if (rc != FSPS_OK)
    return rc;
  layer_slot *sl = &c->slots[layer];
  uint64_t n = client_layer_n(c, layer);
  c->bw_separate++;
  /* Gradients still being pushed hold their buffers: at most `prefetch`
   * (at least one) stay in flight, so memory stays bounded by a few
   * layers even when the network is slower than backward. */
  if (sl->grad == NULL)
    push_wait_below(c, c->o.prefetch ? c->o.prefetch : 1);
  if (sl->grad == NULL && (sl->grad = pool_get(c, n)) == NULL)
    return client_fail(c, FSPS_NOMEM,
                       "out of memory for the gradient of layer %u "
                       "(%" PRIu64 " floats)",
                       layer, n);
  *grad = sl->grad->p;
  return FSPS_OK;
}

int fsps_backward_inplace(fsps_client *c, uint32_t layer, float **buf) {
  if (c == NULL || buf == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "buf is NULL")
             : FSPS_INVALID_ARGUMENT;
  int rc = check_layer(c, layer, "fsps_backward_inplace");
  if (rc != FSPS_OK)
    return rc;
  layer_slot *sl = &c->slots[layer];
  if (sl->inplace) {
    *buf = sl->grad->p; /* called again: the same buffer, as written */
    return FSPS_OK;
  }
  const float *params;
  if ((rc = get_params(c, layer, -1, &params)) != FSPS_OK)
    return rc;
  if (sl->grad != NULL) /* a separate one from fsps_backward: unused */
    pool_put(c, sl->grad);
  sl->grad = sl->params; /* the parameters' buffer becomes the gradient's */
  sl->params = NULL;
  sl->inplace = true;
  c->bw_inplace++;
  *buf = sl->grad->p;
  return FSPS_OK;
}

int fsps_backward_done(fsps_client *c, uint32_t layer) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = check_layer(c, layer, "fsps_backward_done");
  if (rc != FSPS_OK)
    return rc;
  layer_slot *sl = &c->slots[layer];
  if (sl->grad == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "fsps_backward_done(%u) without fsps_backward", layer);
  pool_buf *grad = sl->grad;
  sl->grad = NULL;
  sl->inplace = false;
  rc = push_start(c, layer, c->step, grad->p, grad);
  if (rc != FSPS_OK)
    pool_put(c, grad);
  release_params(c, layer);
  return rc;
}

int fsps_step_end(fsps_client *c) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = push_wait_all(c);
  for (uint32_t l = 0; l < c->L; l++)
    release_slot(c, l);
  c->in_step = false;
  return rc;
}
