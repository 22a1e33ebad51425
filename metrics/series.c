/* series.c: the labelled series of a family — found or made under the
 * registry's lock, then updated with relaxed atomics only, so that the hot
 * path never waits on a scrape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics_int.h"

double metrics_dbl_load(const metrics_dbl *d) {
  uint64_t bits = atomic_load_explicit(d, memory_order_relaxed);
  double v;
  memcpy(&v, &bits, sizeof v);
  return v;
}

static void dbl_store(metrics_dbl *d, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  atomic_store_explicit(d, bits, memory_order_relaxed);
}

static void dbl_add(metrics_dbl *d, double v) {
  uint64_t old = atomic_load_explicit(d, memory_order_relaxed), nw;
  do {
    double x;
    memcpy(&x, &old, sizeof x);
    x += v;
    memcpy(&nw, &x, sizeof nw);
  } while (!atomic_compare_exchange_weak_explicit(
      d, &old, nw, memory_order_relaxed, memory_order_relaxed));
}

/* escape_len / escape write a label value as the text format wants it:
 * backslash, double quote and newline escaped. */
static size_t escape_len(const char *v) {
  size_t n = 0;
  for (; *v; v++)
    n += (*v == '\\' || *v == '"' || *v == '\n') ? 2 : 1;
  return n;
}

static char *escape(char *out, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"' || *v == '\n')
      *out++ = '\\';
    *out++ = *v == '\n' ? 'n' : *v;
  }
  return out;
}

/* render_labels makes `a="x",b="y"` from f's names and values. */
static char *render_labels(const metrics_family *f, const char *const *values) {
  size_t n = 1;
  for (size_t i = 0; i < f->nlabels; i++)
    n += strlen(f->label_names[i]) + escape_len(values[i] ? values[i] : "") + 4;
  char *s = malloc(n), *p = s;
  if (s == NULL)
    return NULL;
  for (size_t i = 0; i < f->nlabels; i++) {
    p += sprintf(p, "%s%s=\"", i ? "," : "", f->label_names[i]);
    p = escape(p, values[i] ? values[i] : "");
    *p++ = '"';
  }
  *p = '\0';
  return s;
}

static metrics_series *series_new(metrics_family *f, char *labels) {
  metrics_series *s = calloc(1, sizeof *s);
  if (s != NULL && f->type == METRICS_HISTOGRAM)
    s->buckets = calloc(f->nb + 1, sizeof *s->buckets);
  if (s == NULL || (f->type == METRICS_HISTOGRAM && s->buckets == NULL)) {
    free(s);
    free(labels);
    return NULL;
  }
  s->family = f;
  s->labels = labels;
  *f->series_tail = s;
  f->series_tail = &s->next;
  return s;
}

metrics_series *metrics_series_get(metrics_family *f,
                                   const char *const *values) {
  if (f == NULL || (f->nlabels > 0 && values == NULL))
    return NULL;
  char *labels = render_labels(f, values);
  if (labels == NULL)
    return NULL;
  pthread_mutex_lock(&f->reg->lock);
  metrics_series *s = f->series;
  while (s != NULL && strcmp(s->labels, labels) != 0)
    s = s->next;
  if (s != NULL)
    free(labels);
  else
    s = series_new(f, labels);
  pthread_mutex_unlock(&f->reg->lock);
  return s;
}

metrics_series *metrics_series_get1(metrics_family *f, const char *value) {
  return metrics_series_get(f, &value);
}

void metrics_add(metrics_series *s, uint64_t n) {
  if (s != NULL)
    atomic_fetch_add_explicit(&s->u, n, memory_order_relaxed);
}

void metrics_add_f(metrics_series *s, double v) {
  if (s != NULL)
    dbl_add(&s->d, v);
}

void metrics_set(metrics_series *s, double v) {
  if (s == NULL)
    return;
  atomic_store_explicit(&s->u, 0, memory_order_relaxed);
  dbl_store(&s->d, v);
}

void metrics_observe(metrics_series *s, double v) {
  if (s == NULL || s->buckets == NULL)
    return;
  const metrics_family *f = s->family;
  size_t i = 0;
  while (i < f->nb && v > f->bounds[i])
    i++;
  atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
  dbl_add(&s->d, v);
}

double metrics_value(const metrics_series *s) {
  if (s == NULL)
    return 0;
  return (double)atomic_load_explicit(&s->u, memory_order_relaxed) +
         metrics_dbl_load(&s->d);
}

uint64_t metrics_count(const metrics_series *s) {
  uint64_t n = 0;
  if (s == NULL || s->buckets == NULL)
    return 0;
  for (size_t i = 0; i <= s->family->nb; i++)
    n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
  return n;
}

int metrics_on_collect(metrics_registry *r, void (*fn)(void *), void *arg) {
  int rc = -1;
  pthread_mutex_lock(&r->collect_lock);
  if (r->ncollectors < 8) {
    r->collectors[r->ncollectors++] = (metrics_collector){fn, arg};
    rc = 0;
  }
  pthread_mutex_unlock(&r->collect_lock);
  return rc;
}

double metrics_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
