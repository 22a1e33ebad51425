/* smetrics.h: fsps-server's Prometheus metrics — what each part of the
 * server counts and times, and the /metrics endpoint (--metrics-listen),
 * beside which the status page (spage.h) is served. */
#ifndef FSPS_SERVER_SMETRICS_H
#define FSPS_SERVER_SMETRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "metrics.h"

struct store;
struct server_page;

typedef struct server_metrics {
  metrics_registry *reg;
  metrics_http *http;
  struct store *st;
  metrics_family *rejected, *layer_version, *layer_missing;
  metrics_series *pushes, *pushes_counted, *pushes_duplicate, *pulls;
  metrics_series *rx_bytes, *tx_bytes, *push_seconds, *pull_seconds;
  metrics_series *sum_seconds, *optim_seconds;
  metrics_series *ckpt_last_success, *ckpt_duration, *ckpt_failures;
  metrics_series *ckpt_writes, *rollbacks;
  struct server_page *page; /* `/` and `/status.json` */
} server_metrics;

/* SM(m, field) is the series m->field, or NULL (a no-op for metrics_*)
 * when metrics are off (m NULL). */
#define SM(m, field) ((m) != NULL ? (m)->field : NULL)

/* server_metrics_create declares every metric of the server over store st
 * (read at each scrape); NULL when out of memory. */
server_metrics *server_metrics_create(struct store *st,
                                      const server_config *cfg);

/* server_metrics_listen serves /metrics and the status page (`/`,
 * `/status.json`) on cfg->metrics_listen and writes the port to
 * cfg->metrics_port_file if set. 0, or -1 with err. */
int server_metrics_listen(server_metrics *m, const server_config *cfg,
                          char *err, size_t errlen);

/* server_metrics_destroy stops the endpoint (scrapes in flight finish) and
 * frees m; NULL is a no-op. Call before the store is destroyed. */
void server_metrics_destroy(server_metrics *m);

/* server_metrics_tick samples the counters the status page's rates come
 * from; call it once a second from the main loop (NULL is a no-op). */
void server_metrics_tick(server_metrics *m);

/* server_metrics_reject counts a refused request by its fsps_err code. */
void server_metrics_reject(server_metrics *m, int code);

/* server_metrics_checkpoint records one checkpoint file written (ok) or
 * failed, which took `seconds`. */
void server_metrics_checkpoint(server_metrics *m, bool ok, double seconds);

/* server_metrics_write_port writes port to path atomically (as --port-file
 * does); 0 or -1. */
int server_metrics_write_port(const char *path, int port);

#endif
