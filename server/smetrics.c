/* smetrics.c: declares fsps-server's metrics, reads the per-layer ones
 * from the store at each scrape, and runs the /metrics endpoint with the
 * status page beside it. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsps_err.h"
#include "smetrics.h"
#include "spage.h"
#include "store.h"

/* Latency buckets, 100 µs to 30 s: a push or pull of a small layer on
 * loopback takes ~100 µs, a pull parked at the step barrier seconds. */
static const double latency_buckets[] = {1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                                         5e-3, 1e-2,   2.5e-2, 5e-2, 0.1,
                                         0.25, 0.5,    1,      2.5,  5,
                                         10,   30};
#define NLAT (sizeof latency_buckets / sizeof latency_buckets[0])

static metrics_series *counter(server_metrics *m, const char *name,
                               const char *help) {
  return metrics_counter_declare(m->reg, name, help);
}

static metrics_series *gauge(server_metrics *m, const char *name,
                             const char *help) {
  return metrics_gauge_declare(m->reg, name, help);
}

static metrics_series *histogram(server_metrics *m, const char *name,
                                 const char *help) {
  return metrics_series_get(metrics_histogram_add(m->reg, name, help, NULL,
                                                  latency_buckets, NLAT),
                            NULL);
}

static void declare_calls(server_metrics *m) {
  metrics_family *pushes = metrics_family_add(
      m->reg, METRICS_COUNTER, "fsps_pushes_total",
      "Gradient pushes committed, by result: counted (new) or duplicate "
      "(a retry of one already counted, ignored).",
      "result");
  m->pushes_counted = metrics_series_get1(pushes, "counted");
  m->pushes_duplicate = metrics_series_get1(pushes, "duplicate");
  m->pushes = counter(m, "fsps_push_calls_total", "Push calls received.");
  m->pulls = counter(m, "fsps_pull_calls_total", "Pull calls received.");
  m->rejected = metrics_family_add(
      m->reg, METRICS_COUNTER, "fsps_rejected_requests_total",
      "Requests refused, by reason (the gRPC status code).", "reason");
  m->rx_bytes = counter(m, "fsps_received_bytes_total",
                        "Tensor bytes received (pushes and given values).");
  m->tx_bytes =
      counter(m, "fsps_sent_bytes_total", "Tensor bytes sent (pulls).");
  m->push_seconds = histogram(m, "fsps_push_duration_seconds",
                              "Time from a Push call's start to its commit.");
  m->pull_seconds =
      histogram(m, "fsps_pull_duration_seconds",
                "Time from a Pull call's start to its last chunk queued, "
                "waiting for the version included.");
}

static void declare_work(server_metrics *m) {
  m->sum_seconds = counter(m, "fsps_sum_seconds_total",
                           "Seconds spent adding workers' gradients.");
  m->optim_seconds = counter(m, "fsps_optimizer_seconds_total",
                             "Seconds spent in the optimizer.");
  m->layer_version =
      metrics_family_add(m->reg, METRICS_GAUGE, "fsps_layer_version",
                         "Optimizer updates applied to the layer.", "layer,name");
  m->layer_missing = metrics_family_add(
      m->reg, METRICS_GAUGE, "fsps_layer_missing_workers",
      "Workers the layer's pending step still waits for.", "layer,name");
  m->ckpt_last_success =
      gauge(m, "fsps_checkpoint_last_success_timestamp_seconds",
            "When the last checkpoint file was written (Unix time).");
  m->ckpt_duration = gauge(m, "fsps_checkpoint_duration_seconds",
                           "How long the last checkpoint file took.");
  m->ckpt_failures = counter(m, "fsps_checkpoint_failures_total",
                             "Checkpoint files that could not be written.");
  m->ckpt_writes = counter(m, "fsps_checkpoints_total",
                           "Checkpoint files written.");
  m->rollbacks = counter(m, "fsps_rollbacks_total",
                         "Rollbacks that restored layers.");
}

/* collect_layers sets each layer's version and missing workers. */
static void collect_layers(void *arg) {
  server_metrics *m = arg;
  if (!store_ready(m->st))
    return;
  uint32_t W = store_config(m->st)->workers;
  bool *pushed = calloc(2 * (size_t)W, sizeof *pushed);
  for (uint32_t l = 0; pushed != NULL && l < store_num_layers(m->st); l++) {
    store_layer *L = store_layer_get(m->st, l);
    store_layer_info in;
    store_info(L, &in);
    store_pushed(L, pushed, pushed + W);
    uint32_t missing = 0;
    for (uint32_t w = 0; w < W; w++)
      missing += !pushed[w] && !pushed[W + w];
    char idx[16];
    snprintf(idx, sizeof idx, "%u", l);
    const char *labels[2] = {idx, in.name};
    metrics_set(metrics_series_get(m->layer_version, labels),
                (double)in.version);
    metrics_set(metrics_series_get(m->layer_missing, labels), missing);
  }
  free(pushed);
}

server_metrics *server_metrics_create(struct store *st,
                                      const server_config *cfg) {
  (void)cfg;
  server_metrics *m = calloc(1, sizeof *m);
  if (m == NULL || (m->reg = metrics_registry_create()) == NULL) {
    free(m);
    return NULL;
  }
  m->st = st;
  declare_calls(m);
  declare_work(m);
  m->page = server_page_create(m);
  if (m->page == NULL || metrics_process_register(m->reg) != 0 ||
      metrics_on_collect(m->reg, collect_layers, m) != 0 ||
      m->rollbacks == NULL || m->rx_bytes == NULL || m->pull_seconds == NULL) {
    server_metrics_destroy(m);
    return NULL;
  }
  return m;
}

int server_metrics_write_port(const char *path, int port) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0 || rename(tmp, path) != 0)
    return -1;
  return 0;
}

int server_metrics_listen(server_metrics *m, const server_config *cfg,
                          char *err, size_t errlen) {
  const metrics_page pages[] = {
      {"/", "text/html; charset=utf-8", server_page_html, m->page},
      {"/status.json", "application/json", server_page_json, m->page}};
  m->http = metrics_http_start_pages(m->reg, cfg->metrics_listen, pages, 2,
                                     err, errlen);
  if (m->http == NULL)
    return -1;
  const char *pf = cfg->metrics_port_file;
  if (pf[0] && server_metrics_write_port(pf, metrics_http_port(m->http))) {
    snprintf(err, errlen, "cannot write the metrics port to %s", pf);
    return -1;
  }
  return 0;
}

void server_metrics_destroy(server_metrics *m) {
  if (m == NULL)
    return;
  metrics_http_stop(m->http);
  server_page_destroy(m->page);
  metrics_registry_destroy(m->reg);
  free(m);
}

void server_metrics_tick(server_metrics *m) {
  if (m != NULL)
    server_page_sample(m->page);
}

void server_metrics_reject(server_metrics *m, int code) {
  if (m == NULL)
    return;
  char reason[40];
  snprintf(reason, sizeof reason, "%s", fsps_err_name(code));
  for (char *c = reason; *c; c++)
    *c = (char)tolower((unsigned char)*c);
  metrics_add(metrics_series_get1(m->rejected, reason), 1);
}

void server_metrics_checkpoint(server_metrics *m, bool ok, double seconds) {
  if (m == NULL)
    return;
  if (!ok) {
    metrics_add(m->ckpt_failures, 1);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  metrics_add(m->ckpt_writes, 1);
  metrics_set(m->ckpt_duration, seconds);
  metrics_set(m->ckpt_last_success, (double)ts.tv_sec + ts.tv_nsec * 1e-9);
}
