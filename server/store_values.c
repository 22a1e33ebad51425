/* store_values.c: values a client gives — a layer of init client tensors
 * awaits them, takes them once whole and finite, keeps a copy for
 * rollbacks to version 0, and answers the pulls that waited for them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

bool store_values_started(const store_layer *L) {
  if (L->version > 0)
    return true;
  for (uint32_t i = 0; i < L->nslots; i++)
    if (L->slots[i].step != FREE_STEP) /* a push of it counted */
      return true;
  return false;
}

/* started_why says that L began training, for a refusal. */
static int started_why(const store_layer *L, char *msg, size_t msglen) {
  snprintf(msg, msglen,
           "layer '%s' has begun training (version %" PRIu64 "%s): its values "
           "can be given only before its first push is counted",
           L->spec->name, L->version,
           L->version == 0 ? ", a push of step 0 counted" : "");
  return FSPS_FAILED_PRECONDITION;
}

/* values_allowed checks what can be known before the values arrive: the
 * epoch, the layer's init, this server's slice, training not begun. */
static int values_allowed(store_layer *L, uint64_t epoch, char *msg,
                          size_t msglen) {
  if (!store_epoch_current(L->st, epoch)) {
    store_epoch_why(L->st, epoch, msg, msglen);
    return FSPS_FAILED_PRECONDITION;
  }
  if (!L->client) {
    snprintf(msg, msglen,
             "layer '%s' is initialised by the servers (init %s): only a "
             "layer whose tensors all have init client takes values from a "
             "client",
             L->spec->name, shard_init_kind_name(L->spec->tensors[0].init));
    return FSPS_FAILED_PRECONDITION;
  }
  if (L->cnt == 0) {
    snprintf(msg, msglen, "server %u holds no elements of layer '%s'",
             L->st->cfg.index, L->spec->name);
    return FSPS_INVALID_ARGUMENT;
  }
  pthread_mutex_lock(&L->mu);
  int rc = store_values_started(L) ? started_why(L, msg, msglen) : FSPS_OK;
  pthread_mutex_unlock(&L->mu);
  return rc;
}

int store_values_begin(store_layer *L, uint64_t epoch, store_push *p, char *msg,
                       size_t msglen) {
  memset(p, 0, sizeof *p);
  int rc = values_allowed(L, epoch, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  return store_push_stage(L, epoch, p, "the values", msg, msglen);
}

int store_values_check(store_push *p, float *dst, uint64_t count, char *msg,
                       size_t msglen) {
  uint64_t bad = store_first_nonfinite(dst, count);
  if (bad == count)
    return FSPS_OK;
  snprintf(msg, msglen,
           "the values of layer '%s' hold %s at element %" PRIu64
           ": given values must be finite",
           p->layer->spec->name, dst[bad] != dst[bad] ? "NaN" : "Inf",
           (uint64_t)(dst - p->buf->data) + p->layer->off + bad);
  return FSPS_INVALID_ARGUMENT;
}

/* compare_locked settles values sent to a layer that holds some already:
 * the same bits are a duplicate, others are refused. L->mu held. */
static int compare_locked(store_layer *L, const float *v, bool *duplicate,
                          char *msg, size_t msglen) {
  const float *have = L->cur->data;
  if (memcmp(have, v, L->cnt * sizeof(float)) == 0) {
    *duplicate = true;
    return FSPS_OK;
  }
  uint64_t i = 0;
  while (memcmp(&have[i], &v[i], sizeof(float)) == 0)
    i++;
  snprintf(msg, msglen,
           "layer '%s' holds other values already (element %" PRIu64
           " is %.9g, not %.9g): a layer's values are given once",
           L->spec->name, L->off + i, (double)have[i], (double)v[i]);
  return FSPS_ALREADY_EXISTS;
}

/* take_locked makes the staged values L's parameters and `copy` the copy
 * kept of them; returns the pulls they satisfy. L->mu held. */
static store_waiter *take_locked(store_layer *L, store_push *p, float **copy) {
  store_fbuf_unref(L->cur); /* no pull holds it: none could read it */
  L->cur = p->buf;
  p->buf = NULL;
  store_params_changed_locked(L);
  L->given = *copy;
  *copy = NULL;
  L->awaiting = false;
  L->version_ns = store_now_ns();
  return store_take_ready(L);
}

/* settle_locked takes or compares the values of a complete stream.
 * L->mu held. */
static int settle_locked(store_push *p, float **copy, bool *duplicate,
                         store_waiter **ready, char *msg, size_t msglen) {
  store_layer *L = p->layer;
  if (!store_epoch_current(L->st, p->epoch)) {
    store_epoch_why(L->st, p->epoch, msg, msglen);
    return FSPS_FAILED_PRECONDITION;
  }
  if (store_values_started(L))
    return started_why(L, msg, msglen);
  if (!L->awaiting)
    return compare_locked(L, p->buf->data, duplicate, msg, msglen);
  *ready = take_locked(L, p, copy);
  return FSPS_OK;
}

int store_values_commit(store_push *p, bool *duplicate, char *msg,
                        size_t msglen) {
  store_layer *L = p->layer;
  *duplicate = false;
  if (p->received != p->chunks) {
    snprintf(msg, msglen,
             "the values of layer '%s' ended after %" PRIu64 " of %" PRIu64
             " chunks",
             L->spec->name, p->received, p->chunks);
    store_push_abort(p);
    return FSPS_INVALID_ARGUMENT;
  }
  float *copy = store_big_alloc(L->cnt * sizeof(float));
  int rc = copy && store_fbuf_wire(L, p->buf) == FSPS_OK
               ? FSPS_OK
               : FSPS_RESOURCE_EXHAUSTED;
  store_waiter *ready = NULL;
  if (rc != FSPS_OK)
    snprintf(msg, msglen, "out of memory keeping the values of layer '%s'",
             L->spec->name);
  else
    memcpy(copy, p->buf->data, L->cnt * sizeof(float));
  pthread_mutex_lock(&L->mu);
  if (rc == FSPS_OK)
    rc = settle_locked(p, &copy, duplicate, &ready, msg, msglen);
  fbuf *params = L->cur;
  uint64_t version = L->version;
  pthread_mutex_unlock(&L->mu);
  store_wake(ready, params, version);
  free(copy);
  store_push_abort(p);
  return rc;
}

uint32_t store_awaiting(store *st, uint32_t *first) {
  uint32_t n = 0;
  for (uint32_t l = 0; l < store_num_layers(st); l++) {
    store_layer *L = &st->layers[l];
    pthread_mutex_lock(&L->mu);
    bool awaiting = L->awaiting;
    pthread_mutex_unlock(&L->mu);
    if (awaiting && n++ == 0 && first != NULL)
      *first = l;
  }
  return n;
}

bool store_initial_held(store_layer *L) {
  pthread_mutex_lock(&L->mu);
  bool held = !L->client || L->cnt == 0 || L->given != NULL;
  pthread_mutex_unlock(&L->mu);
  return held;
}

void store_values_keep(store_layer *L) {
  if (!L->client)
    return;
  if (L->given == NULL)
    L->given = store_big_alloc((L->cnt ? L->cnt : 1) * sizeof(float));
  if (L->given != NULL)
    memcpy(L->given, L->cur->data, L->cnt * sizeof(float));
}
