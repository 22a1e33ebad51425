/* snapshot.c: versioned, reference-counted parameter copies, the slot that
 * swaps them, and predictions from one. */
#include "snapshot.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct serve_slot {
  pthread_mutex_t mu;
  serve_snapshot *cur;
};

uint64_t serve_snapshot_layer_size(const serve_snapshot *s, uint32_t l) {
  uint64_t in = s->widths[l], out = s->widths[l + 1];
  return out * in + out;
}

serve_snapshot *serve_snapshot_new(const uint32_t *widths, uint32_t nwidths,
                                   uint64_t version) {
  if (widths == NULL || nwidths < 2 || nwidths > SERVE_MAX_WIDTHS)
    return NULL;
  for (uint32_t i = 0; i < nwidths; i++)
    if (widths[i] == 0 || widths[i] > MLP_MAX_WIDTH)
      return NULL;
  serve_snapshot *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->version = version;
  s->nwidths = nwidths;
  memcpy(s->widths, widths, nwidths * sizeof *widths);
  atomic_init(&s->refs, 1);
  s->params = calloc(nwidths - 1, sizeof *s->params);
  for (uint32_t l = 0; s->params != NULL && l + 1 < nwidths; l++) {
    s->params[l] = calloc(serve_snapshot_layer_size(s, l), sizeof(float));
    if (s->params[l] == NULL) {
      serve_snapshot_unref(s);
      return NULL;
    }
  }
  if (s->params == NULL) {
    free(s);
    return NULL;
  }
  return s;
}

void serve_snapshot_ref(serve_snapshot *s) {
  if (s != NULL)
    atomic_fetch_add(&s->refs, 1);
}

void serve_snapshot_unref(serve_snapshot *s) {
  if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  for (uint32_t l = 0; s->params != NULL && l + 1 < s->nwidths; l++)
    free(s->params[l]);
  free(s->params);
  free(s);
}

/* Softmax of each of the b rows of z [b][k] into p, with each row's first
 * maximum into cls (when non-NULL). */
static void softmax_rows(const float *z, uint32_t b, uint32_t k, float *p,
                         uint32_t *cls) {
  for (uint32_t i = 0; i < b; i++) {
    const float *zi = z + (size_t)i * k;
    float *pi = p + (size_t)i * k;
    uint32_t best = 0;
    for (uint32_t j = 1; j < k; j++)
      if (zi[j] > zi[best])
        best = j;
    double sum = 0;
    for (uint32_t j = 0; j < k; j++)
      sum += (pi[j] = expf(zi[j] - zi[best]));
    for (uint32_t j = 0; j < k; j++)
      pi[j] = (float)(pi[j] / sum);
    if (cls != NULL)
      cls[i] = best;
  }
}

int serve_snapshot_predict(const serve_snapshot *s, mlp *m, const float *x,
                           uint32_t b, float *probs, uint32_t *classes_out) {
  uint32_t L = s->nwidths - 1;
  if (model_mlp_num_layers(m) != L)
    return -1;
  for (uint32_t i = 0; i <= L; i++)
    if (model_mlp_width(m, i) != s->widths[i])
      return -1;
  for (uint32_t l = 0; l < L; l++)
    model_mlp_forward_layer(m, l, s->params[l], x, b);
  softmax_rows(model_mlp_output(m), b, s->widths[L], probs, classes_out);
  return 0;
}

serve_slot *serve_slot_create(void) {
  serve_slot *slot = calloc(1, sizeof *slot);
  if (slot != NULL)
    pthread_mutex_init(&slot->mu, NULL);
  return slot;
}

void serve_slot_destroy(serve_slot *slot) {
  if (slot == NULL)
    return;
  serve_snapshot_unref(slot->cur);
  pthread_mutex_destroy(&slot->mu);
  free(slot);
}

void serve_slot_publish(serve_slot *slot, serve_snapshot *s) {
  pthread_mutex_lock(&slot->mu);
  serve_snapshot *old = slot->cur;
  slot->cur = s;
  pthread_mutex_unlock(&slot->mu);
  serve_snapshot_unref(old);
}

serve_snapshot *serve_slot_acquire(serve_slot *slot) {
  pthread_mutex_lock(&slot->mu);
  serve_snapshot *s = slot->cur;
  serve_snapshot_ref(s);
  pthread_mutex_unlock(&slot->mu);
  return s;
}

uint64_t serve_slot_version(serve_slot *slot) {
  pthread_mutex_lock(&slot->mu);
  uint64_t v = slot->cur != NULL ? slot->cur->version : UINT64_MAX;
  pthread_mutex_unlock(&slot->mu);
  return v;
}
