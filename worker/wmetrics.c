/* wmetrics.c: declares fsps-worker's metrics and serves them with the
 * status page. The trainer thread sets them, and records the page's
 * history, after each step (train.c): libfsps's counters may only be read
 * from the thread that drives the client, never from a scrape. */
#include <stdio.h>
#include <stdlib.h>

#include "wmetrics.h"

static metrics_series *counter(worker_metrics *m, const char *name,
                               const char *help) {
  return metrics_counter_declare(m->reg, name, help);
}

static metrics_series *gauge(worker_metrics *m, const char *name,
                             const char *help) {
  return metrics_gauge_declare(m->reg, name, help);
}

static void declare_progress(worker_metrics *m) {
  m->step = gauge(m, "fsps_worker_step", "Training steps done.");
  m->epoch = gauge(m, "fsps_worker_epoch", "The epoch being trained, 1-based.");
  m->samples = counter(m, "fsps_worker_samples_total",
                       "Training samples this worker has processed.");
  m->rate = gauge(m, "fsps_worker_samples_per_second",
                  "Samples per second since training started.");
  m->loss = gauge(m, "fsps_worker_loss",
                  "Mean training loss of the epoch so far.");
  m->accuracy = gauge(m, "fsps_worker_test_accuracy",
                      "Test accuracy after the last epoch (rank 0).");
}

static void declare_network(worker_metrics *m) {
  m->wait_fraction =
      gauge(m, "fsps_worker_network_wait_ratio",
            "Fraction of the time since training started spent waiting on "
            "the network.");
  m->wait_seconds = counter(m, "fsps_worker_network_wait_seconds_total",
                            "Seconds spent waiting on the network.");
  metrics_family *moved = metrics_family_add(
      m->reg, METRICS_COUNTER, "fsps_worker_moved_bytes_total",
      "Bytes of layers gathered and of gradients pushed (fsps_bytes_moved), "
      "each counted once however often it was retried.",
      "direction");
  m->gathered = metrics_series_get1(moved, "gathered");
  m->pushed = metrics_series_get1(moved, "pushed");
  m->peak_buffer = gauge(m, "fsps_worker_peak_buffer_bytes",
                         "Most bytes of layer and gradient buffers held at "
                         "once.");
  m->failures = counter(m, "fsps_worker_step_failures_total",
                        "Steps that failed and were tried again.");
  m->recoveries = counter(m, "fsps_worker_recoveries_total",
                          "Successful recoveries (fsps_recover) after a "
                          "failed step.");
}

static int write_port(const char *path, int port) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  return fclose(f) != 0 || rename(tmp, path) != 0 ? -1 : 0;
}

/* serve starts the endpoint with the status page beside /metrics. */
static int serve(worker_metrics *m, const worker_opts *o, char *err,
                 size_t errlen) {
  m->page = (worker_page){.rank = o->rank, .world = o->world,
                          .model = o->model, .mode = o->mode,
                          .history = m->history};
  const metrics_page pages[] = {
      {"/", "text/html; charset=utf-8", worker_page_html, &m->page},
      {"/status.json", "application/json", worker_page_json, &m->page}};
  m->http = metrics_http_start_pages(m->reg, o->metrics_listen, pages, 2, err,
                                     errlen);
  if (m->http == NULL)
    return -1;
  const char *pf = o->metrics_port_file;
  if (pf[0] && write_port(pf, metrics_http_port(m->http)) != 0) {
    snprintf(err, errlen, "cannot write the metrics port to %s", pf);
    return -1;
  }
  return 0;
}

worker_metrics *worker_metrics_start(const worker_opts *o, char *err,
                                     size_t errlen) {
  worker_metrics *m = calloc(1, sizeof *m);
  if (m == NULL || (m->reg = metrics_registry_create()) == NULL) {
    free(m);
    snprintf(err, errlen, "out of memory for metrics");
    return NULL;
  }
  declare_progress(m);
  declare_network(m);
  m->history = worker_history_create(WORKER_PAGE_POINTS);
  if (metrics_process_register(m->reg) != 0 || m->recoveries == NULL ||
      m->pushed == NULL || m->history == NULL) {
    snprintf(err, errlen, "out of memory for metrics");
    worker_metrics_stop(m);
    return NULL;
  }
  if (serve(m, o, err, errlen) == 0)
    return m;
  worker_metrics_stop(m);
  return NULL;
}

void worker_metrics_stop(worker_metrics *m) {
  if (m == NULL)
    return;
  metrics_http_stop(m->http);
  worker_history_destroy(m->history);
  metrics_registry_destroy(m->reg);
  free(m);
}
