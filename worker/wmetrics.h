/* wmetrics.h: fsps-worker's Prometheus metrics — progress, loss, network
 * share and bytes moved, read from the trainer and libfsps's public
 * counters after each step, served on --metrics-listen with the status
 * page (wpage.h) beside them. */
#ifndef FSPS_WORKER_WMETRICS_H
#define FSPS_WORKER_WMETRICS_H

#include <stddef.h>

#include "metrics.h"
#include "opts.h"
#include "wpage.h"

typedef struct worker_metrics {
  metrics_registry *reg;
  metrics_http *http;
  metrics_series *step, *epoch, *samples, *rate, *loss, *wait_fraction;
  metrics_series *wait_seconds, *gathered, *pushed, *peak_buffer;
  metrics_series *failures, *recoveries, *accuracy;
  worker_history *history; /* what the status page shows */
  worker_page page;        /* `/` and `/status.json` */
} worker_metrics;

/* How many points the status page's charts keep of the run (history.h). */
#define WORKER_PAGE_POINTS 400

/* worker_metrics_start declares the metrics and serves them, and the
 * status page, on o->metrics_listen, writing the port to
 * o->metrics_port_file if it is not empty (o must outlive m). NULL with
 * err (the worker then stops before it does anything else). */
worker_metrics *worker_metrics_start(const worker_opts *o, char *err,
                                     size_t errlen);

/* worker_metrics_stop stops serving and frees m (NULL is a no-op). */
void worker_metrics_stop(worker_metrics *m);

#endif
