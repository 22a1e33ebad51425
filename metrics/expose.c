/* expose.c: renders a registry in the Prometheus text exposition format
 * 0.0.4 — # HELP and # TYPE per family, then one line per series (and per
 * bucket, _sum and _count for histograms). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"

/* fmt_num writes v as the format wants a float: Go's +Inf, -Inf, NaN, and
 * integers without a fraction. */
static const char *fmt_num(char *out, size_t n, double v) {
  if (isnan(v))
    return "NaN";
  if (isinf(v))
    return v > 0 ? "+Inf" : "-Inf";
  if (v == floor(v) && fabs(v) < 1e15)
    snprintf(out, n, "%.0f", v);
  else if (snprintf(out, n, "%.15g", v) > 0 && strtod(out, NULL) != v)
    snprintf(out, n, "%.17g", v); /* the shortest that reads back as v */
  return out;
}

/* put_help writes HELP text escaped: backslash and newline. */
static void put_help(metrics_text *b, const metrics_family *f) {
  metrics_text_printf(b, "# HELP %s ", f->name);
  for (const char *c = f->help; *c; c++) {
    char one[2] = {*c, '\0'};
    metrics_text_put(b, *c == '\\' ? "\\\\" : *c == '\n' ? "\\n" : one);
  }
  metrics_text_put(b, "\n");
}

static void put_value(metrics_text *b, const metrics_family *f,
                      const metrics_series *s) {
  char num[64];
  const char *v = fmt_num(num, sizeof num, metrics_value(s));
  if (s->labels[0])
    metrics_text_printf(b, "%s{%s} %s\n", f->name, s->labels, v);
  else
    metrics_text_printf(b, "%s %s\n", f->name, v);
}

static void put_histogram(metrics_text *b, const metrics_family *f,
                          const metrics_series *s) {
  char num[64], sum[64];
  const char *sep = s->labels[0] ? "," : "";
  uint64_t cum = 0;
  for (size_t i = 0; i <= f->nb; i++) {
    cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    const char *le = i < f->nb ? fmt_num(num, sizeof num, f->bounds[i]) : "+Inf";
    metrics_text_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep, le,
        (unsigned long long)cum);
  }
  /* _count is the +Inf bucket, read once, so the two always agree. */
  const char *open = s->labels[0] ? "{" : "", *close = s->labels[0] ? "}" : "";
  metrics_text_printf(b, "%s_sum%s%s%s %s\n", f->name, open, s->labels, close,
      fmt_num(sum, sizeof sum, metrics_dbl_load(&s->d)));
  metrics_text_printf(b, "%s_count%s%s%s %llu\n", f->name, open, s->labels, close,
      (unsigned long long)cum);
}

static void put_family(metrics_text *b, const metrics_family *f) {
  static const char *types[] = {"counter", "gauge", "histogram"};
  if (f->series == NULL)
    return; /* a family with no series yet says nothing */
  put_help(b, f);
  metrics_text_printf(b, "# TYPE %s %s\n", f->name, types[f->type]);
  for (const metrics_series *s = f->series; s != NULL; s = s->next) {
    if (f->type == METRICS_HISTOGRAM)
      put_histogram(b, f, s);
    else
      put_value(b, f, s);
  }
}

static void collect(metrics_registry *r) {
  for (int i = 0; i < r->ncollectors; i++)
    r->collectors[i].fn(r->collectors[i].arg);
}

char *metrics_render(metrics_registry *r, size_t *len) {
  if (r == NULL)
    return NULL;
  metrics_text b = {0};
  pthread_mutex_lock(&r->collect_lock);
  collect(r);
  pthread_mutex_lock(&r->lock);
  for (const metrics_family *f = r->families; f != NULL; f = f->next)
    put_family(&b, f);
  pthread_mutex_unlock(&r->lock);
  pthread_mutex_unlock(&r->collect_lock);
  return metrics_text_take(&b, len);
}
