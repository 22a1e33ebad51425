/* registry.c: declaring metric families and their labelled series, and
 * the lock-free updates the hot path makes to them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics_int.h"

metrics_registry *metrics_registry_create(void) {
  metrics_registry *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  pthread_mutex_init(&r->lock, NULL);
  pthread_mutex_init(&r->collect_lock, NULL);
  r->families_tail = &r->families;
  return r;
}

static void series_free(metrics_series *s) {
  free(s->labels);
  free((void *)s->buckets);
  free(s);
}

static void family_free(metrics_family *f) {
  for (metrics_series *s = f->series, *n; s != NULL; s = n) {
    n = s->next;
    series_free(s);
  }
  for (size_t i = 0; i < f->nlabels; i++)
    free(f->label_names[i]);
  free(f->name);
  free(f->help);
  free(f);
}

void metrics_registry_destroy(metrics_registry *r) {
  if (r == NULL)
    return;
  for (metrics_family *f = r->families, *n; f != NULL; f = n) {
    n = f->next;
    family_free(f);
  }
  pthread_mutex_destroy(&r->lock);
  pthread_mutex_destroy(&r->collect_lock);
  free(r->process);
  free(r);
}

/* valid_name: Prometheus's [a-zA-Z_:][a-zA-Z0-9_:]* (colons too for metric
 * names, not for label names). */
static bool valid_name(const char *s, bool colon) {
  if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || (colon && *s == ':')))
      return false;
  return true;
}

/* split_labels fills f's label names from "a,b"; false if one is invalid,
 * reserved ("le", "__*") or too many. */
static bool split_labels(metrics_family *f, const char *labels) {
  if (labels == NULL || *labels == '\0')
    return true;
  char *copy = strdup(labels), *save = NULL;
  bool ok = copy != NULL;
  for (char *t = ok ? strtok_r(copy, ",", &save) : NULL; t && ok;
       t = strtok_r(NULL, ",", &save)) {
    ok = f->nlabels < METRICS_MAX_LABELS && valid_name(t, false) &&
         strcmp(t, "le") != 0 && strncmp(t, "__", 2) != 0 &&
         (f->label_names[f->nlabels++] = strdup(t)) != NULL;
  }
  free(copy);
  return ok;
}

static metrics_family *find(metrics_registry *r, const char *name) {
  for (metrics_family *f = r->families; f != NULL; f = f->next)
    if (strcmp(f->name, name) == 0)
      return f;
  return NULL;
}

/* attach adds f to r unless its name is taken; frees it then. */
static metrics_family *attach(metrics_registry *r, metrics_family *f) {
  pthread_mutex_lock(&r->lock);
  bool taken = find(r, f->name) != NULL;
  if (!taken) {
    *r->families_tail = f;
    r->families_tail = &f->next;
  }
  pthread_mutex_unlock(&r->lock);
  if (taken)
    family_free(f);
  return taken ? NULL : f;
}

static metrics_family *family_new(metrics_registry *r, metrics_type type,
                                  const char *name, const char *help,
                                  const char *labels) {
  if (r == NULL || !valid_name(name, true))
    return NULL;
  metrics_family *f = calloc(1, sizeof *f);
  if (f == NULL)
    return NULL;
  f->reg = r;
  f->type = type;
  f->series_tail = &f->series;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  if (f->name == NULL || f->help == NULL || !split_labels(f, labels)) {
    family_free(f);
    return NULL;
  }
  return f;
}

metrics_family *metrics_family_add(metrics_registry *r, metrics_type type,
                                   const char *name, const char *help,
                                   const char *labels) {
  if (type == METRICS_HISTOGRAM)
    return NULL;
  metrics_family *f = family_new(r, type, name, help, labels);
  return f ? attach(r, f) : NULL;
}

static bool bounds_ok(const double *bounds, size_t nb) {
  if (nb > METRICS_MAX_BUCKETS || (nb > 0 && bounds == NULL))
    return false;
  for (size_t i = 0; i < nb; i++)
    if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
      return false;
  return true;
}

metrics_family *metrics_histogram_add(metrics_registry *r, const char *name,
                                      const char *help, const char *labels,
                                      const double *bounds, size_t nb) {
  if (!bounds_ok(bounds, nb))
    return NULL;
  metrics_family *f = family_new(r, METRICS_HISTOGRAM, name, help, labels);
  if (f == NULL)
    return NULL;
  if (nb > 0)
    memcpy(f->bounds, bounds, nb * sizeof *bounds);
  f->nb = nb;
  return attach(r, f);
}

metrics_series *metrics_counter_declare(metrics_registry *r, const char *name,
                                        const char *help) {
  return metrics_series_get(
      metrics_family_add(r, METRICS_COUNTER, name, help, NULL), NULL);
}

metrics_series *metrics_gauge_declare(metrics_registry *r, const char *name,
                                      const char *help) {
  return metrics_series_get(
      metrics_family_add(r, METRICS_GAUGE, name, help, NULL), NULL);
}
