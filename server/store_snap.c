/* store_snap.c: the store's checkpoint side — rolling a layer back while
 * serving, step-boundary snapshots, and copying and restoring layers. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_int.h"

/* ---- rollback ---- */

/* take_abandoned moves the waiters for versions past version + 1, which a
 * rollback to `version` abandons, and those of another epoch than the
 * store's, onto a private list, each told why. */
static store_waiter *take_abandoned(store_layer *L) {
  store_waiter *out = NULL;
  for (store_waiter *w = L->waiters, *next; w != NULL; w = next) {
    next = w->next;
    if (w->min_version <= L->version + 1 &&
        store_epoch_current(L->st, w->epoch))
      continue;
    store_unlink_waiter(L, w);
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
 * or to the initial values when data is NULL (for a client layer the
 * values it was given, which the caller made sure it holds), and drops
 * every pending push. */
static void reset_locked(store_layer *L, const float *data) {
  store *st = L->st;
  if (data != NULL) {
    memcpy(L->cur->data, data, L->cnt * sizeof(float));
    if (store_floats(L) > L->cnt)
      memcpy(L->state, data + L->cnt,
             (store_floats(L) - L->cnt) * sizeof(float));
  } else {
    if (L->client && L->given != NULL)
      memcpy(L->cur->data, L->given, L->cnt * sizeof(float));
    else
      shard_init_fill(st->spec, L->index, L->off, L->cnt, L->cur->data);
    if (L->state)
      optim_state_init(&st->ocfg, L->state, L->cnt);
  }
  store_params_changed_locked(L);
  for (uint32_t i = 0; i < L->nslots; i++)
    store_slot_release(&L->slots[i], st->cfg.workers);
  if (L->asp_next)
    memset(L->asp_next, 0, st->cfg.workers * sizeof *L->asp_next);
  if (L->absent)
    memset(L->absent, 0, st->cfg.workers);
  L->nabsent = 0;
  L->timed_out = false;
  L->version_ns = store_now_ns();
}

int store_rollback_layer(store_layer *L, const float *data, uint64_t version) {
  pthread_mutex_lock(&L->mu);
  int rc = data == NULL && L->client && L->cnt > 0 && L->given == NULL
               ? FSPS_FAILED_PRECONDITION /* store_initial_held */
               : store_spare_ready(L);
  if (rc != FSPS_OK) {
    pthread_mutex_unlock(&L->mu);
    return rc;
  }
  if (atomic_load(&L->cur->refs) > 1) { /* pulls still send the old ones */
    store_fbuf_unref(L->cur);
    L->cur = L->spare;
    L->spare = NULL;
  }
  reset_locked(L, data);
  L->version = version;
  if (data != NULL && version == 0) /* a checkpoint's copy of them */
    store_values_keep(L);
  if (!L->snap_busy) /* a copy of the abandoned timeline is void */
    L->snap_version = FREE_STEP;
  store_waiter *gone = take_abandoned(L);
  pthread_mutex_unlock(&L->mu);
  store_fail(gone, version);
  return FSPS_OK;
}

void store_new_epoch(store_layer *L) {
  pthread_mutex_lock(&L->mu);
  for (uint32_t i = 0; i < L->nslots; i++)
    store_slot_release(&L->slots[i], L->st->cfg.workers);
  store_waiter *gone = take_abandoned(L);
  uint64_t version = L->version;
  pthread_mutex_unlock(&L->mu);
  store_fail(gone, version);
}

/* ---- checkpoints ---- */

/* store_snap_locked copies the layer at its version for a step-boundary
 * checkpoint, unless the previous copy is still being written. L->mu held. */
void store_snap_locked(store_layer *L) {
  store *st = L->st;
  if (L->snap_busy) { /* the hook sees no copy: this checkpoint is skipped */
    LOGW("checkpoint at version %" PRIu64 " skipped: the previous one is "
         "still being written",
         L->version);
    return;
  }
  if (L->snap == NULL && (L->snap = malloc(store_floats(L) * 4 + 4)) == NULL) {
    LOGW("checkpoint at version %" PRIu64 " skipped: no memory to copy "
         "layer '%s'",
         L->version, L->spec->name);
    return;
  }
  memcpy(L->snap, L->cur->data, L->cnt * sizeof(float));
  if (store_floats(L) > L->cnt)
    memcpy(L->snap + L->cnt, L->state,
           (store_floats(L) - L->cnt) * sizeof(float));
  L->snap_version = L->version;
  if (st->snap_hook)
    st->snap_hook(st->snap_arg, L->index, L->version);
}

const void *store_blob(const store *st, size_t *len) {
  *len = st->bloblen;
  return st->blob;
}

uint32_t store_nonempty_layers(const store *st) {
  return store_ready(st) ? st->nonempty : 0;
}

size_t store_layer_floats(store_layer *L) {
  return store_floats(L);
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
  if (store_floats(L) > L->cnt)
    memcpy(out + L->cnt, L->state, (store_floats(L) - L->cnt) * sizeof(float));
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
  store_params_changed_locked(L);
  if (store_floats(L) > L->cnt)
    memcpy(L->state, data + L->cnt, (store_floats(L) - L->cnt) * sizeof(float));
  L->version = version;
  L->awaiting = false; /* a client layer's values came with the file */
  if (version == 0)
    store_values_keep(L);
  pthread_mutex_unlock(&L->mu);
}
