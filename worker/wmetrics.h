/* wmetrics.h: fsps-worker's Prometheus metrics — progress, loss, network
 * share and bytes moved, read from the trainer and libfsps's public
 * counters after each step, served on --metrics-listen. */
#ifndef FSPS_WORKER_WMETRICS_H
#define FSPS_WORKER_WMETRICS_H

#include <stddef.h>

#include "metrics.h"

typedef struct worker_metrics {
  metrics_registry *reg;
  metrics_http *http;
  metrics_series *step, *epoch, *samples, *rate, *loss, *wait_fraction;
  metrics_series *wait_seconds, *gathered, *pushed, *peak_buffer;
  metrics_series *failures, *recoveries, *accuracy;
} worker_metrics;

/* worker_metrics_start declares the metrics and serves them on addr,
 * writing the port to port_file if it is not empty. NULL with err (the
 * worker then stops before it does anything else). */
worker_metrics *worker_metrics_start(const char *addr, const char *port_file,
                                     char *err, size_t errlen);

/* worker_metrics_stop stops serving and frees m (NULL is a no-op). */
void worker_metrics_stop(worker_metrics *m);

#endif
