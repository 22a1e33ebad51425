/* metrics.h: a small Prometheus metrics registry — counters, gauges and
 * histograms with fixed buckets and labels, cheap atomics on the hot path,
 * the text exposition format (0.0.4), the standard process_* metrics, and
 * an HTTP endpoint (libmicrohttpd) serving /metrics and the pages its
 * users register (fsps-server's and fsps-worker's status pages), with the
 * escaping and the shared look those need. Depends on libc, pthreads and
 * libmicrohttpd only. */
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

/* ---- text for pages ----
 * A growing text buffer: zero-initialise it, append, then take the text.
 * An allocation that fails sticks (failed), and metrics_text_take then
 * returns NULL, so that appends need no checks. */
typedef struct {
  char *p;
  size_t len, cap;
  bool failed;
} metrics_text;

/* metrics_text_put appends s as it is; metrics_text_printf formats. */
void metrics_text_put(metrics_text *t, const char *s);
void metrics_text_printf(metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* metrics_text_html appends s (NULL: "") escaped for HTML text and quoted
 * attribute values (& < > " '); metrics_text_json appends it as a JSON
 * string, quotes included, with <, > and & as \u00XX escapes, so that it
 * is also safe inside HTML. Both take any bytes: invalid UTF-8 becomes
 * U+FFFD, and control characters are escaped (JSON) or U+FFFD (HTML). */
void metrics_text_html(metrics_text *t, const char *s);
void metrics_text_json(metrics_text *t, const char *s);

/* metrics_text_json_num appends v as a JSON number: integers without a
 * fraction, null for NaN and infinities (which JSON cannot hold). */
void metrics_text_json_num(metrics_text *t, double v);

/* metrics_text_take returns the text (malloc'd, NUL-terminated, "" if
 * nothing was appended; the caller frees it; *len its length if len is not
 * NULL) and resets t; NULL if an allocation failed. */
char *metrics_text_take(metrics_text *t, size_t *len);

/* metrics_page_begin starts a self-contained status page: doctype, title
 * (escaped), the shared inline style, and a header with the title and an
 * element #live saying when the page was rendered, which the script's
 * poll() then keeps saying whether the process answers. Nothing is loaded
 * from elsewhere: the pages must work on clusters cut off from the
 * Internet. Then the page writes its body (inside <main>). */
void metrics_page_begin(metrics_text *t, const char *title);

/* metrics_page_end closes the page: a footer linking json_path (the
 * page's data) and /metrics, the shared inline script — helpers el(id),
 * setText(id, s), fix(v, digits), poll(url, ms, show) — then script (the
 * page's own: static, trusted text). */
void metrics_page_end(metrics_text *t, const char *json_path,
                      const char *script);

/* ---- the HTTP endpoint ---- */

/* A page served beside /metrics on the same address, such as a status
 * page and its JSON. render(arg, &len) returns the body, malloc'd (the
 * server frees it), or NULL (answered 500). It runs on the HTTP thread,
 * concurrently with the rest of the process: read only what is safe to
 * read from there. path and content_type must outlive the server. */
typedef struct {
  const char *path;
  const char *content_type;
  char *(*render)(void *arg, size_t *len);
  void *arg;
} metrics_page;

#define METRICS_MAX_PAGES 8

/* metrics_http_start listens on addr ("host:port", "[v6]:port" or ":port";
 * port 0 picks a free one) and serves GET /metrics from r on a thread of
 * its own. Returns the server, or NULL with a message in err (address that
 * does not resolve, is not this machine's, or is in use): nothing is then
 * left listening. r must outlive the server. */
metrics_http *metrics_http_start(metrics_registry *r, const char *addr,
                                 char *err, size_t errlen);
/* metrics_http_start_pages is metrics_http_start that also serves pages
 * [0, npages) (npages <= METRICS_MAX_PAGES; their array is copied), each
 * at its path, for GET and HEAD. Every answer carries a
 * Content-Security-Policy that lets a page load nothing from elsewhere. */
metrics_http *metrics_http_start_pages(metrics_registry *r, const char *addr,
                                       const metrics_page *pages,
                                       size_t npages, char *err,
                                       size_t errlen);
/* metrics_http_port returns the port it listens on. */
int metrics_http_port(const metrics_http *h);
/* metrics_http_stop stops listening, waits for the scrapes in flight and
 * frees h (NULL is a no-op). */
void metrics_http_stop(metrics_http *h);

#endif
