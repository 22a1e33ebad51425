/* serve_metrics.h: fsps-serve's Prometheus metrics at --metrics-listen
 * (FSPS_METRICS_LISTEN, as the chart sets it): the version served, whether
 * a model is loaded, the online server's request counters, and the
 * process_* metrics. */
#ifndef FSPS_SERVE_METRICS_H
#define FSPS_SERVE_METRICS_H

#include <stddef.h>

#include "online.h"
#include "snapshot.h"

typedef struct serve_metrics serve_metrics;

/* serve_metrics_start serves /metrics on addr (host:port, port 0 = any),
 * reading slot (and online, when set with serve_metrics_online) at each
 * scrape; writes the bound port to port_file when it is not NULL. NULL
 * with err when the address cannot be served. */
serve_metrics *serve_metrics_start(const char *addr, const char *port_file,
                                   serve_slot *slot, char *err, size_t errlen);

/* serve_metrics_online makes later scrapes report on's counters (NULL:
 * none); call it before serve_online_stop frees on. */
void serve_metrics_online(serve_metrics *m, serve_online *on);

/* serve_metrics_stop stops serving and frees m. NULL is a no-op. */
void serve_metrics_stop(serve_metrics *m);

#endif
