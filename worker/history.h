/* history.h: fsps-worker's progress as its status page shows it — the
 * figures of the last step, and a bounded history of the whole run for
 * its charts: at most `cap` points, each the mean over an interval, the
 * intervals doubling (and neighbours merging) whenever the points would
 * outgrow cap, so that a run of any length fits. The trainer thread
 * records; the HTTP thread reads, under a lock. */
#ifndef FSPS_WORKER_HISTORY_H
#define FSPS_WORKER_HISTORY_H

#include <stddef.h>
#include <stdint.h>

/* The figures after the last step, as the logs and /metrics give them. */
typedef struct {
  double seconds; /* since training started */
  uint64_t step, total_steps, samples;
  uint32_t epoch, epochs; /* epoch: the one being trained, 1-based */
  double loss;            /* mean training loss of the epoch so far */
  double samples_per_s;   /* since training started */
  double wait_fraction;   /* of the time since, spent on the network */
  double accuracy;        /* test accuracy of the last epoch; NaN: none */
} worker_now;

/* A chart point: the interval (previous point, seconds] of the run, ending
 * at step; loss is the mean batch loss of its steps, samples_per_s its
 * rate. */
typedef struct {
  double seconds;
  uint64_t step;
  double loss, samples_per_s;
} worker_point;

typedef struct worker_history worker_history;

/* The first interval (seconds); doubled each time the points are halved. */
#define WORKER_HISTORY_INTERVAL 0.5

/* worker_history_create keeps at most cap (>= 2) points; NULL if out of
 * memory or cap < 2. worker_history_destroy frees it (NULL: no-op). */
worker_history *worker_history_create(size_t cap);
void worker_history_destroy(worker_history *h);

/* worker_history_record takes the figures after a step whose batch loss
 * was batch_loss (one call per step; NULL h is a no-op). */
void worker_history_record(worker_history *h, const worker_now *now,
                           double batch_loss);

/* worker_history_accuracy sets the test accuracy the page shows. */
void worker_history_accuracy(worker_history *h, double accuracy);

/* worker_history_read copies the last figures into *now (all zero, loss
 * and accuracy NaN, before the first step) and up to cap points, oldest
 * first, into pts: the points kept, then the interval still open, if it
 * has steps. Returns how many points it wrote. */
size_t worker_history_read(worker_history *h, worker_now *now,
                           worker_point *pts, size_t cap);

/* worker_history_cap returns the most points read can write (cap + 1). */
size_t worker_history_cap(const worker_history *h);

#endif
