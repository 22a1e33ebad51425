/* history.c: the worker's progress for its status page — the last step's
 * figures and a bounded, ever coarser history of the whole run (see
 * history.h), behind one lock: the trainer records once a step, the HTTP
 * thread reads a copy. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "history.h"

/* A point as kept: where its interval ends, and its loss as a sum, so
 * that two neighbours merge exactly. */
typedef struct {
  double seconds;
  uint64_t step, samples;
  double loss_sum;
  uint64_t loss_n;
} kept;

struct worker_history {
  pthread_mutex_t mu;
  worker_now now;
  kept *pts;
  size_t n, cap;
  double interval; /* an interval closes once it spans this many seconds */
  kept open;       /* the interval being filled */
};

worker_history *worker_history_create(size_t cap) {
  worker_history *h = cap >= 2 ? calloc(1, sizeof *h) : NULL;
  if (h == NULL)
    return NULL;
  h->pts = calloc(cap, sizeof *h->pts);
  if (h->pts == NULL) {
    free(h);
    return NULL;
  }
  pthread_mutex_init(&h->mu, NULL);
  h->cap = cap;
  h->interval = WORKER_HISTORY_INTERVAL;
  h->now.loss = h->now.accuracy = NAN;
  return h;
}

void worker_history_destroy(worker_history *h) {
  if (h == NULL)
    return;
  pthread_mutex_destroy(&h->mu);
  free(h->pts);
  free(h);
}

/* halve merges the points two by two (the last alone if they are odd),
 * and doubles the interval new points span. */
static void halve(worker_history *h) {
  size_t k = 0;
  for (size_t i = 0; i + 1 < h->n; i += 2) {
    kept m = h->pts[i + 1];
    m.loss_sum += h->pts[i].loss_sum;
    m.loss_n += h->pts[i].loss_n;
    h->pts[k++] = m;
  }
  if (h->n % 2)
    h->pts[k++] = h->pts[h->n - 1];
  h->n = k;
  h->interval *= 2;
}

static double last_seconds(const worker_history *h) {
  return h->n ? h->pts[h->n - 1].seconds : 0.0;
}

void worker_history_record(worker_history *h, const worker_now *now,
                           double batch_loss) {
  if (h == NULL)
    return;
  pthread_mutex_lock(&h->mu);
  double accuracy = h->now.accuracy;
  h->now = *now;
  h->now.accuracy = accuracy;
  h->open.seconds = now->seconds;
  h->open.step = now->step;
  h->open.samples = now->samples;
  h->open.loss_sum += batch_loss;
  h->open.loss_n++;
  if (now->seconds - last_seconds(h) >= h->interval) {
    if (h->n == h->cap)
      halve(h);
    h->pts[h->n++] = h->open;
    h->open = (kept){0};
  }
  pthread_mutex_unlock(&h->mu);
}

void worker_history_accuracy(worker_history *h, double accuracy) {
  if (h == NULL)
    return;
  pthread_mutex_lock(&h->mu);
  h->now.accuracy = accuracy;
  pthread_mutex_unlock(&h->mu);
}

/* point makes the chart point of k, whose interval began at prev. */
static worker_point point(const kept *k, const kept *prev) {
  double dt = k->seconds - (prev ? prev->seconds : 0.0);
  uint64_t ds = k->samples - (prev ? prev->samples : 0);
  return (worker_point){.seconds = k->seconds,
                        .step = k->step,
                        .loss =
                            k->loss_n ? k->loss_sum / (double)k->loss_n : NAN,
                        .samples_per_s = dt > 0 ? (double)ds / dt : NAN};
}

size_t worker_history_read(worker_history *h, worker_now *now,
                           worker_point *pts, size_t cap) {
  pthread_mutex_lock(&h->mu);
  *now = h->now;
  size_t n = 0;
  for (; n < h->n && n < cap; n++)
    pts[n] = point(&h->pts[n], n ? &h->pts[n - 1] : NULL);
  if (h->open.loss_n > 0 && n < cap)
    pts[n++] = point(&h->open, h->n ? &h->pts[h->n - 1] : NULL);
  pthread_mutex_unlock(&h->mu);
  return n;
}

size_t worker_history_cap(const worker_history *h) {
  return h->cap + 1;
}
