/* metrics.h: a small Prometheus metrics registry — counters, gauges and
 * histograms with fixed buckets and labels, cheap atomics on the hot path,
 * the text exposition format (0.0.4), the standard process_* metrics, and
 * an HTTP endpoint (libmicrohttpd) serving /metrics. Depends on libc,
 * pthreads and libmicrohttpd only. */
#ifndef FSPS_METRICS_H
#define FSPS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct metrics_registry metrics_registry;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;
typedef struct metrics_http metrics_http;

typedef enum {
  METRICS_COUNTER,
  METRICS_GAUGE,
  METRICS_HISTOGRAM
} metrics_type;

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_BUCKETS 32

/* metrics_registry_create makes an empty registry (NULL if out of memory);
 * metrics_registry_destroy frees it with every family and series it holds,
 * after which no series pointer it handed out may be used. */
metrics_registry *metrics_registry_create(void);
void metrics_registry_destroy(metrics_registry *r);

/* metrics_family_add declares a counter or gauge family named `name` with
 * help text `help` and label names `labels` (comma-separated, "" or NULL for
 * none, at most METRICS_MAX_LABELS). Returns it (owned by r, lives as long
 * as r), or NULL for an invalid name, a name already declared, or out of
 * memory. Thread-safe. */
metrics_family *metrics_family_add(metrics_registry *r, metrics_type type,
                                   const char *name, const char *help,
                                   const char *labels);

/* metrics_histogram_add declares a histogram family with nb upper bounds
 * (strictly increasing, finite, nb <= METRICS_MAX_BUCKETS); +Inf is
 * implied. NULL as metrics_family_add. */
metrics_family *metrics_histogram_add(metrics_registry *r, const char *name,
                                      const char *help, const char *labels,
                                      const double *bounds, size_t nb);

/* metrics_series_get returns the series of f for the label values
 * values[0..number of f's labels) (NULL when f has no labels), creating it
 * at zero the first time. The pointer lives as long as the registry: look it
 * up once, not on the hot path (this takes a lock). NULL when f is NULL or
 * out of memory. metrics_series_get1 is the one-label shorthand. */
metrics_series *metrics_series_get(metrics_family *f,
                                   const char *const *values);
metrics_series *metrics_series_get1(metrics_family *f, const char *value);

/* metrics_counter_declare / metrics_gauge_declare declare an unlabelled
 * family and return its one series (NULL when r is NULL or on failure). */
metrics_series *metrics_counter_declare(metrics_registry *r, const char *name,
                                        const char *help);
metrics_series *metrics_gauge_declare(metrics_registry *r, const char *name,
                                      const char *help);

/* Hot path: lock-free, callable from any thread; a NULL series is a no-op,
 * so code runs unchanged with metrics off. metrics_add adds n to a counter
 * or gauge; metrics_add_f adds v (a counter must not be given v < 0);
 * metrics_set sets a gauge (or a counter read from elsewhere, as the
 * process_* ones); metrics_observe records v in a histogram. */
void metrics_add(metrics_series *s, uint64_t n);
void metrics_add_f(metrics_series *s, double v);
void metrics_set(metrics_series *s, double v);
void metrics_observe(metrics_series *s, double v);

/* metrics_value returns a counter's or gauge's value, a histogram's sum;
 * metrics_count a histogram's count of observations (0 otherwise). */
double metrics_value(const metrics_series *s);
uint64_t metrics_count(const metrics_series *s);

/* metrics_on_collect registers fn(arg), run before each rendering (one
 * rendering at a time) to set values read from elsewhere: it may call
 * metrics_series_get and metrics_set. At most 8 per registry; -1 past. */
int metrics_on_collect(metrics_registry *r, void (*fn)(void *), void *arg);

/* metrics_render returns the registry in the Prometheus text exposition
 * format 0.0.4 as a malloc'd NUL-terminated string the caller frees
 * (*len its length if len is not NULL), after running the collectors; NULL
 * when out of memory. Thread-safe. */
char *metrics_render(metrics_registry *r, size_t *len);

/* metrics_process_register adds the standard process_* metrics
 * (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds), read from /proc at each rendering. 0 or -1. */
int metrics_process_register(metrics_registry *r);

/* metrics_now_s returns CLOCK_MONOTONIC in seconds (for latencies). */
double metrics_now_s(void);

/* The content type of metrics_render's text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* metrics_http_start listens on addr ("host:port", "[v6]:port" or ":port";
 * port 0 picks a free one) and serves GET /metrics from r on a thread of
 * its own. Returns the server, or NULL with a message in err (address that
 * does not resolve, is not this machine's, or is in use): nothing is then
 * left listening. r must outlive the server. */
metrics_http *metrics_http_start(metrics_registry *r, const char *addr,
                                 char *err, size_t errlen);
/* metrics_http_port returns the port it listens on. */
int metrics_http_port(const metrics_http *h);
/* metrics_http_stop stops listening, waits for the scrapes in flight and
 * frees h (NULL is a no-op). */
void metrics_http_stop(metrics_http *h);

#endif
