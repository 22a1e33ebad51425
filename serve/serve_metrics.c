/* serve_metrics.c: fsps-serve's /metrics (see serve_metrics.h); values are
 * read from the slot and the online server's counters at each scrape. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics.h"
#include "serve_metrics.h"

struct serve_metrics {
  metrics_registry *reg;
  metrics_http *http;
  serve_slot *slot;
  pthread_mutex_t mu; /* guards on against serve_metrics_online */
  serve_online *on;
  metrics_series *version, *ready, *requests, *refused, *batches, *rows,
      *answered, *deadline, *cancelled;
};

static void collect(void *arg) {
  serve_metrics *m = arg;
  uint64_t v = serve_slot_version(m->slot);
  metrics_set(m->ready, v != UINT64_MAX);
  metrics_set(m->version, v == UINT64_MAX ? -1 : (double)v);
  pthread_mutex_lock(&m->mu);
  serve_online_stats st = {0};
  bool online = m->on != NULL;
  if (online)
    serve_online_get_stats(m->on, &st);
  pthread_mutex_unlock(&m->mu);
  if (!online)
    return;
  metrics_set(m->requests, (double)st.requests);
  metrics_set(m->refused, (double)st.refused);
  metrics_set(m->batches, (double)st.batches);
  metrics_set(m->rows, (double)st.rows);
  metrics_set(m->answered, (double)st.answered);
  metrics_set(m->deadline, (double)st.deadline_exceeded);
  metrics_set(m->cancelled, (double)st.cancelled);
}

static metrics_series *counter(serve_metrics *m, const char *name,
                               const char *help) {
  return metrics_counter_declare(m->reg, name, help);
}

static void declare(serve_metrics *m) {
  m->version = metrics_gauge_declare(
      m->reg, "fsps_serve_model_version",
      "The model version served (-1: none loaded yet).");
  m->ready = metrics_gauge_declare(m->reg, "fsps_serve_ready",
                                   "1 once a model is loaded, else 0.");
  m->requests = counter(m, "fsps_serve_requests_total",
                        "ModelInfer calls accepted into a batch.");
  m->refused = counter(m, "fsps_serve_refused_requests_total",
                       "ModelInfer calls refused when checked.");
  m->batches = counter(m, "fsps_serve_batches_total",
                       "Batches computed (one sgemm per layer each).");
  m->rows = counter(m, "fsps_serve_rows_total", "Rows computed.");
  m->answered = counter(m, "fsps_serve_answered_total",
                        "ModelInfer calls answered with a result.");
  m->deadline = counter(m, "fsps_serve_deadline_exceeded_total",
                        "Calls dropped uncomputed: their deadline passed.");
  m->cancelled = counter(m, "fsps_serve_cancelled_total",
                         "Calls cancelled by their client.");
}

static int write_port(const char *path, int port) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  return fclose(f) != 0 || rename(tmp, path) != 0 ? -1 : 0;
}

serve_metrics *serve_metrics_start(const char *addr, const char *port_file,
                                   serve_slot *slot, char *err,
                                   size_t errlen) {
  serve_metrics *m = calloc(1, sizeof *m);
  if (m == NULL || (m->reg = metrics_registry_create()) == NULL) {
    snprintf(err, errlen, "out of memory");
    free(m);
    return NULL;
  }
  m->slot = slot;
  pthread_mutex_init(&m->mu, NULL);
  declare(m);
  metrics_process_register(m->reg);
  metrics_on_collect(m->reg, collect, m);
  m->http = metrics_http_start(m->reg, addr, err, errlen);
  if (m->http != NULL && port_file != NULL &&
      write_port(port_file, metrics_http_port(m->http)) != 0) {
    snprintf(err, errlen, "cannot write the metrics port to %s", port_file);
    metrics_http_stop(m->http);
    m->http = NULL;
  }
  if (m->http == NULL) {
    serve_metrics_stop(m);
    return NULL;
  }
  return m;
}

void serve_metrics_online(serve_metrics *m, serve_online *on) {
  if (m == NULL)
    return;
  pthread_mutex_lock(&m->mu);
  m->on = on;
  pthread_mutex_unlock(&m->mu);
}

void serve_metrics_stop(serve_metrics *m) {
  if (m == NULL)
    return;
  metrics_http_stop(m->http);
  metrics_registry_destroy(m->reg);
  pthread_mutex_destroy(&m->mu);
  free(m);
}
