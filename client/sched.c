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
 * would not reuse are kept after forward all the same (plan.c).
 *
 * A layer may be cut into pieces (fsps_set_pieces): each piece is then
 * gathered, held and released on its own, and its gradient is copied into
 * the layer's streamed push as soon as it is written (client_push_open), so the
 * worker never holds a whole layer. Units number the pieces of every layer
 * in forward order; a layer in one piece is one unit, handled as before. */
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

/* How the layers are cut: unit u is elements [lo[u], hi[u]) of layer
 * layer_of[u]; layer l's units are first[l] .. first[l + 1] - 1. */
struct sched_units {
  uint32_t L, U;
  uint32_t *first;    /* L + 1 */
  uint32_t *layer_of; /* U */
  uint64_t *lo, *hi;  /* U */
  uint32_t *done;     /* per layer: pieces whose gradient is written */
  push **stream;      /* per layer: its streamed push, while open */
  uint64_t **bounds;  /* per layer: its cut (np + 1 bounds), or NULL */
  bool pieced;        /* some layer is in more than one piece */
};

static void units_free(sched_units *u) {
  if (u == NULL)
    return;
  for (uint32_t l = 0; u->bounds != NULL && l < u->L; l++)
    free(u->bounds[l]);
  free(u->bounds);
  free(u->first);
  free(u->layer_of);
  free(u->lo);
  free(u->hi);
  free(u->done);
  free(u->stream);
  free(u);
}

static sched_units *units_alloc(uint32_t L, uint32_t U) {
  sched_units *u = calloc(1, sizeof *u);
  if (u == NULL)
    return NULL;
  u->L = L;
  u->U = U;
  u->bounds = calloc(L + 1, sizeof *u->bounds);
  u->first = calloc(L + 1, sizeof *u->first);
  u->layer_of = calloc(U + 1, sizeof *u->layer_of);
  u->lo = calloc(U + 1, sizeof *u->lo);
  u->hi = calloc(U + 1, sizeof *u->hi);
  u->done = calloc(L + 1, sizeof *u->done);
  u->stream = calloc(L + 1, sizeof *u->stream);
  if (u->bounds && u->first && u->layer_of && u->lo && u->hi && u->done &&
      u->stream)
    return u;
  units_free(u);
  return NULL;
}

/* copy_cut returns a copy of the np + 1 bounds of a cut (false when out of
 * memory); a layer in one piece has none. */
static bool copy_cut(uint64_t **dst, uint32_t np, const uint64_t *src) {
  if (np < 2)
    return true;
  if ((*dst = malloc((np + 1) * sizeof **dst)) == NULL)
    return false;
  memcpy(*dst, src, (np + 1) * sizeof **dst);
  return true;
}

/* units_new lays out c's layers, layer l cut at bounds[l][0..np[l]] (one
 * piece where np is NULL or np[l] < 2), or NULL when out of memory. */
static sched_units *units_new(const fsps_client *c, const uint32_t *np,
                              uint64_t *const *bounds) {
  uint32_t U = 0;
  for (uint32_t l = 0; l < c->L; l++)
    U += np && np[l] > 1 ? np[l] : 1;
  sched_units *u = units_alloc(c->L, U);
  for (uint32_t l = 0, k = 0; u != NULL && l < c->L; l++) {
    uint32_t n = np && np[l] > 1 ? np[l] : 1;
    if (!copy_cut(&u->bounds[l], n, n > 1 ? bounds[l] : NULL)) {
      units_free(u);
      return NULL;
    }
    u->first[l] = k;
    u->pieced |= n > 1;
    for (uint32_t i = 0; i < n; i++, k++) {
      u->layer_of[k] = l;
      u->lo[k] = n > 1 ? bounds[l][i] : 0;
      u->hi[k] = n > 1 ? bounds[l][i + 1] : client_layer_n(c, l);
    }
  }
  if (u != NULL)
    u->first[c->L] = U;
  return u;
}

/* npieces returns how many pieces layer l is in. */
static uint32_t npieces(const fsps_client *c, uint32_t l) {
  return c->units->first[l + 1] - c->units->first[l];
}

int client_sched_init(fsps_client *c) {
  c->units = units_new(c, NULL, NULL);
  c->slots = c->units ? calloc(c->units->U + 1, sizeof *c->slots) : NULL;
  c->keep = calloc(c->L ? c->L : 1, sizeof *c->keep);
  return c->slots && c->keep ? FSPS_OK : FSPS_NOMEM;
}

/* await_slot waits for unit u's gather and takes its buffer as the slot's
 * parameters; on failure the buffer goes back to the pool. */
static int await_slot(fsps_client *c, uint32_t u) {
  layer_slot *sl = &c->slots[u];
  if (sl->g == NULL)
    return FSPS_OK;
  int rc = client_gather_wait(c, sl->g, NULL);
  if (rc == FSPS_OK)
    sl->params = client_gather_take_buf(sl->g);
  client_gather_free(sl->g); /* returns the buffer if not taken */
  sl->g = NULL;
  return rc;
}

/* release_params gives unit u's parameters back to the pool. A prefetch
 * still in flight is waited for (the buffer is its destination); its
 * failure concerns nobody now, so the client's message is kept. */
static void release_params(fsps_client *c, uint32_t u) {
  layer_slot *sl = &c->slots[u];
  if (sl->g != NULL) {
    char keep[CLIENT_MSG_MAX];
    memcpy(keep, c->err, sizeof keep);
    if (await_slot(c, u) != FSPS_OK)
      memcpy(c->err, keep, sizeof keep);
  }
  if (sl->params != NULL)
    client_pool_put(c, sl->params);
  sl->params = NULL;
}

/* release_slot empties unit u completely (parameters and gradient). */
static void release_slot(fsps_client *c, uint32_t u) {
  release_params(c, u);
  if (c->slots[u].grad != NULL)
    client_pool_put(c, c->slots[u].grad);
  c->slots[u].grad = NULL;
  c->slots[u].inplace = false;
}

/* release_all empties every slot and ends the streamed pushes left open
 * (a step abandoned halfway: their servers count nothing). */
static void release_all(fsps_client *c) {
  for (uint32_t u = 0; c->slots != NULL && c->units && u < c->units->U; u++)
    release_slot(c, u);
  for (uint32_t l = 0; c->units != NULL && l < c->L; l++) {
    if (c->units->stream[l] != NULL)
      client_push_close(c->units->stream[l]);
    c->units->stream[l] = NULL;
    c->units->done[l] = 0;
  }
}

void client_sched_abandon(fsps_client *c) {
  if (c->slots != NULL)
    release_all(c);
  c->in_step = false;
}

void client_sched_destroy(fsps_client *c) {
  release_all(c);
  free(c->slots);
  free(c->keep);
  units_free(c->units);
  c->slots = NULL;
  c->keep = NULL;
  c->units = NULL;
}

/* ensure starts gathering unit u unless it is held already; with defer,
 * only once no push is in flight (client_gather_start_range). The pieces of a
 * cut layer never wait so: the push in flight may be their own layer's, which
 * needs them to finish. */
static int ensure(fsps_client *c, uint32_t u, bool defer) {
  layer_slot *sl = &c->slots[u];
  const sched_units *un = c->units;
  uint32_t l = un->layer_of[u];
  if (sl->params != NULL || sl->g != NULL)
    return FSPS_OK;
  unsigned flags = defer && npieces(c, l) == 1 ? GATHER_DEFER : 0;
  if (c->o.mode == FSPS_BSP) /* a BSP step computes from its version only */
    flags |= GATHER_EXACT;
  return client_gather_start_range(c, l, c->min_version, un->lo[u], un->hi[u],
                                   flags, &sl->g);
}

/* prefetch ensures the next `prefetch` units after u in direction dir
 * (+1 forward, -1 backward) are in flight. Backward prefetches wait for
 * the pushes in flight, whose buffers they reuse. */
static int prefetch(fsps_client *c, uint32_t u, int dir) {
  int rc = FSPS_OK;
  for (uint32_t i = 1; rc == FSPS_OK && i <= c->o.prefetch; i++) {
    int64_t j = (int64_t)u + dir * (int64_t)i;
    if (j < 0 || j >= (int64_t)c->units->U)
      break;
    rc = ensure(c, (uint32_t)j, dir < 0);
  }
  return rc;
}

/* get_params makes unit u ready, with the next units in flight. */
static int get_params(fsps_client *c, uint32_t u, int dir,
                      const float **params) {
  int rc = ensure(c, u, false);
  if (rc == FSPS_OK)
    rc = prefetch(c, u, dir);
  if (rc == FSPS_OK)
    rc = await_slot(c, u);
  if (rc == FSPS_OK)
    *params = c->slots[u].params->p;
  return rc;
}

/* check_unit validates a scheduler call on piece p of layer l and sets *u
 * to its unit; whole is set for the calls that take a layer in one piece. */
static int check_unit(fsps_client *c, uint32_t l, uint32_t p, bool whole,
                      const char *fn, uint32_t *u) {
  if (!c->in_step)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "%s(%u) outside a step: call fsps_step_begin first", fn,
                       l);
  if (l >= c->L)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "%s: no layer %u (the model has %u)", fn, l, c->L);
  if (whole && npieces(c, l) > 1)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "%s: layer %u is cut into %u pieces: use the _piece "
                       "calls",
                       fn, l, npieces(c, l));
  if (p >= npieces(c, l))
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "%s: no piece %u of layer %u (it has %u)", fn, p, l,
                       npieces(c, l));
  *u = c->units->first[l] + p;
  return FSPS_OK;
}

uint64_t client_sched_min_version(fsps_mode mode, uint32_t staleness,
                                  uint64_t step) {
  if (mode == FSPS_ASP)
    return 0;
  if (mode == FSPS_SSP)
    return step > staleness ? step - staleness : 0;
  return step;
}

/* plan decides which layers this step keeps after forward (plan.c): with
 * resharding, after a step whose backward wrote every gradient in place
 * (the plan's model of it), made again only when the pool has changed.
 * Cut layers are never kept: their point is to hold a piece at a time. */
static void plan(fsps_client *c) {
  bool ok = c->o.reshard_after_forward && c->bw_inplace > 0 &&
            c->bw_separate == 0 && !c->units->pieced;
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
  c->plan_ok = client_plan_keep(c, c->keep, c->plan_base, bytes) == FSPS_OK;
  c->plan_bytes = bytes;
}

int fsps_step_begin(fsps_client *c, uint64_t step) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  release_all(c); /* left over by an abandoned step */
  plan(c);
  c->step = step;
  c->min_version = client_sched_min_version(c->o.mode, c->o.staleness, step);
  c->in_step = true;
  if (c->L == 0)
    return FSPS_OK;
  int rc = ensure(c, 0, false);
  return rc == FSPS_OK ? prefetch(c, 0, +1) : rc;
}

/* forward gives unit u's parameters for forward. */
static int forward(fsps_client *c, uint32_t u, const float **params) {
  return get_params(c, u, +1, params);
}

/* forward_done releases unit u after forward when resharding. Backward
 * starts with the last unit and the `prefetch` before it: gathering them
 * again at once would take as many buffers as forward holds now, so they
 * are kept, which costs no memory and saves their transfer. */
static int forward_done(fsps_client *c, uint32_t u) {
  if (c->o.reshard_after_forward && u + 1 + c->o.prefetch < c->units->U &&
      !c->keep[c->units->layer_of[u]])
    release_params(c, u);
  return FSPS_OK;
}

/* The public calls check their arguments, then act on one unit; whole is
 * set for the layer-wide ones. */
static int forward_call(fsps_client *c, uint32_t layer, uint32_t piece,
                        bool whole, const float **params) {
  if (c == NULL || params == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "params is NULL")
             : FSPS_INVALID_ARGUMENT;
  uint32_t u = 0;
  int rc = check_unit(c, layer, piece, whole, "fsps_forward", &u);
  return rc == FSPS_OK ? forward(c, u, params) : rc;
}

static int forward_done_call(fsps_client *c, uint32_t layer, uint32_t piece,
                             bool whole) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  uint32_t u = 0;
  int rc = check_unit(c, layer, piece, whole, "fsps_forward_done", &u);
  return rc == FSPS_OK ? forward_done(c, u) : rc;
}

int fsps_forward(fsps_client *c, uint32_t layer, const float **params) {
  return forward_call(c, layer, 0, true, params);
}

int fsps_forward_done(fsps_client *c, uint32_t layer) {
  return forward_done_call(c, layer, 0, true);
}

int fsps_forward_piece(fsps_client *c, uint32_t layer, uint32_t piece,
                       const float **params) {
  return forward_call(c, layer, piece, false, params);
}

int fsps_forward_piece_done(fsps_client *c, uint32_t layer, uint32_t piece) {
  return forward_done_call(c, layer, piece, false);
}

int fsps_backward(fsps_client *c, uint32_t layer, const float **params,
                  float **grad) {
  if (c == NULL || params == NULL || grad == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "params or grad NULL")
             : FSPS_INVALID_ARGUMENT;
  uint32_t u = 0;
  int rc = check_unit(c, layer, 0, true, "fsps_backward", &u);
  if (rc == FSPS_OK)
    rc = get_params(c, u, -1, params);
  if (rc != FSPS_OK)
    return rc;
  layer_slot *sl = &c->slots[u];
  uint64_t n = client_layer_n(c, layer);
  c->bw_separate++;
  /* Gradients still being pushed hold their buffers: at most `prefetch`
   * (at least one) stay in flight, so memory stays bounded by a few
   * layers even when the network is slower than backward. */
  if (sl->grad == NULL)
    client_push_wait_below(c, c->o.prefetch ? c->o.prefetch : 1);
  if (sl->grad == NULL && (sl->grad = client_pool_get(c, n)) == NULL)
    return client_fail(c, FSPS_NOMEM,
                       "out of memory for the gradient of layer %u "
                       "(%" PRIu64 " floats)",
                       layer, n);
  *grad = sl->grad->p;
  return FSPS_OK;
}

/* backward_inplace hands unit u's parameters' buffer over for its
 * gradient. */
static int backward_inplace(fsps_client *c, uint32_t u, float **buf) {
  layer_slot *sl = &c->slots[u];
  if (sl->inplace) {
    *buf = sl->grad->p; /* called again: the same buffer, as written */
    return FSPS_OK;
  }
  const float *params;
  int rc = get_params(c, u, -1, &params);
  if (rc != FSPS_OK)
    return rc;
  if (sl->grad != NULL) /* a separate one from fsps_backward: unused */
    client_pool_put(c, sl->grad);
  sl->grad = sl->params; /* the parameters' buffer becomes the gradient's */
  sl->params = NULL;
  sl->inplace = true;
  c->bw_inplace++;
  *buf = sl->grad->p;
  return FSPS_OK;
}

static int backward_call(fsps_client *c, uint32_t layer, uint32_t piece,
                         bool whole, float **buf) {
  if (c == NULL || buf == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "buf is NULL")
             : FSPS_INVALID_ARGUMENT;
  uint32_t u = 0;
  int rc = check_unit(c, layer, piece, whole, "fsps_backward_inplace", &u);
  return rc == FSPS_OK ? backward_inplace(c, u, buf) : rc;
}

int fsps_backward_inplace(fsps_client *c, uint32_t layer, float **buf) {
  return backward_call(c, layer, 0, true, buf);
}

int fsps_backward_piece(fsps_client *c, uint32_t layer, uint32_t piece,
                        float **buf) {
  return backward_call(c, layer, piece, false, buf);
}

/* stream_piece copies unit u's gradient into its layer's streamed push,
 * opened by the layer's first piece done and closed by its last. */
static int stream_piece(fsps_client *c, uint32_t u, const float *grad) {
  sched_units *un = c->units;
  uint32_t l = un->layer_of[u];
  int rc = FSPS_OK;
  if (un->stream[l] == NULL)
    rc = client_push_open(c, l, c->step, &un->stream[l]);
  if (rc == FSPS_OK)
    rc = client_push_write(un->stream[l], un->lo[u], grad,
                           un->hi[u] - un->lo[u]);
  if (rc == FSPS_OK && ++un->done[l] == npieces(c, l)) {
    client_push_close(un->stream[l]);
    un->stream[l] = NULL;
    un->done[l] = 0;
  }
  return rc;
}

/* backward_done pushes unit u's gradient and releases its parameters. */
static int backward_done(fsps_client *c, uint32_t layer, uint32_t u) {
  layer_slot *sl = &c->slots[u];
  if (sl->grad == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "fsps_backward_done(%u) without fsps_backward", layer);
  pool_buf *grad = sl->grad;
  sl->grad = NULL;
  sl->inplace = false;
  int rc;
  if (npieces(c, layer) > 1) {
    rc = stream_piece(c, u, grad->p);
    client_pool_put(c, grad);
  } else if ((rc = client_push_start(c, layer, c->step, grad->p, grad)) !=
             FSPS_OK) {
    client_pool_put(c, grad);
  }
  release_params(c, u);
  return rc;
}

static int backward_done_call(fsps_client *c, uint32_t layer, uint32_t piece,
                              bool whole) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  uint32_t u = 0;
  int rc = check_unit(c, layer, piece, whole, "fsps_backward_done", &u);
  return rc == FSPS_OK ? backward_done(c, layer, u) : rc;
}

int fsps_backward_done(fsps_client *c, uint32_t layer) {
  return backward_done_call(c, layer, 0, true);
}

int fsps_backward_piece_done(fsps_client *c, uint32_t layer, uint32_t piece) {
  return backward_done_call(c, layer, piece, false);
}

/* unfinished returns a layer whose streamed push lacks pieces, or L. */
static uint32_t unfinished(const fsps_client *c) {
  for (uint32_t l = 0; l < c->L; l++)
    if (c->units->stream[l] != NULL && c->units->done[l] < npieces(c, l))
      return l;
  return c->L;
}

int fsps_step_end(fsps_client *c) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  uint32_t l = unfinished(c), done = l < c->L ? c->units->done[l] : 0;
  release_all(c); /* an unfinished push ends short: nothing counted */
  int rc = client_push_wait_all(c);
  c->in_step = false;
  if (l < c->L)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "fsps_step_end: the gradient of layer %u has %u of its "
                       "%u pieces: its push ended short and counts for nothing",
                       l, done, npieces(c, l));
  return rc;
}

/* ---- cutting layers into pieces ---- */

/* check_bounds validates a cut of layer l into np pieces at bounds. */
static int check_bounds(fsps_client *c, uint32_t l, uint32_t np,
                        const uint64_t *bounds) {
  uint64_t n = client_layer_n(c, l);
  if (np == 0 || (np > 1 && bounds == NULL))
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "fsps_set_pieces: layer %u: %u pieces, bounds %s", l, np,
                       bounds ? "given" : "NULL");
  if (np > 1 && (bounds[0] != 0 || bounds[np] != n))
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "fsps_set_pieces: layer %u: bounds must run from 0 to "
                       "its %" PRIu64 " elements",
                       l, n);
  for (uint32_t i = 0; np > 1 && i < np; i++)
    if (bounds[i] >= bounds[i + 1])
      return client_fail(c, FSPS_INVALID_ARGUMENT,
                         "fsps_set_pieces: layer %u: piece %u [%" PRIu64
                         ", %" PRIu64 ") is empty",
                         l, i, bounds[i], bounds[i + 1]);
  return FSPS_OK;
}

/* recut lays the units out again with layer l cut at bounds. */
static int recut(fsps_client *c, uint32_t l, uint32_t np,
                 const uint64_t *bounds) {
  uint32_t *counts = calloc(c->L, sizeof *counts);
  uint64_t **cuts = calloc(c->L, sizeof *cuts);
  sched_units *u = NULL;
  if (counts != NULL && cuts != NULL) {
    for (uint32_t k = 0; k < c->L; k++) {
      counts[k] = k == l ? np : npieces(c, k);
      cuts[k] = k == l ? (uint64_t *)bounds : c->units->bounds[k];
    }
    u = units_new(c, counts, cuts);
  }
  free(counts);
  free(cuts);
  layer_slot *slots = u ? calloc(u->U + 1, sizeof *slots) : NULL;
  if (slots == NULL) {
    units_free(u);
    return client_fail(c, FSPS_NOMEM, "fsps_set_pieces: out of memory");
  }
  release_all(c);
  free(c->slots);
  units_free(c->units);
  c->slots = slots;
  c->units = u;
  c->plan_ok = false;
  return FSPS_OK;
}

int fsps_set_pieces(fsps_client *c, uint32_t layer, uint32_t npieces_,
                    const uint64_t *bounds) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  if (c->spec == NULL)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "no model: call fsps_declare or fsps_attach first");
  if (c->in_step)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "fsps_set_pieces inside a step: call it between steps");
  if (layer >= c->L)
    return client_fail(c, FSPS_INVALID_ARGUMENT,
                       "fsps_set_pieces: no layer %u (the model has %u)", layer,
                       c->L);
  int rc = check_bounds(c, layer, npieces_, bounds);
  return rc == FSPS_OK ? recut(c, layer, npieces_, bounds) : rc;
}

uint32_t fsps_num_pieces(const fsps_client *c, uint32_t layer) {
  return c != NULL && c->units != NULL && layer < c->L ? npieces(c, layer) : 0;
}
