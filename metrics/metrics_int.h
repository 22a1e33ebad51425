/* metrics_int.h: the registry's structures, shared by registry.c (which
 * builds and updates them) and expose.c (which renders them); not for
 * other modules. */
#ifndef FSPS_METRICS_INT_H
#define FSPS_METRICS_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "metrics.h"

/* A double kept as its bits in an atomic word: updated by compare-and-swap,
 * since C11 has no atomic add for floating types. */
typedef _Atomic uint64_t metrics_dbl;

struct metrics_series {
  metrics_series *next;
  metrics_family *family;
  char *labels;         /* rendered and escaped: `a="x",b="y"`, or "" */
  _Atomic uint64_t u;   /* integer part of a counter or gauge */
  metrics_dbl d;        /* the rest; a gauge's value once set */
  _Atomic uint64_t *buckets; /* histogram: nb + 1 counts, not cumulative */
};

struct metrics_family {
  metrics_family *next;
  metrics_registry *reg;
  metrics_type type;
  char *name, *help;
  char *label_names[METRICS_MAX_LABELS];
  size_t nlabels;
  double bounds[METRICS_MAX_BUCKETS];
  size_t nb;
  metrics_series *series, **series_tail;
};

typedef struct {
  void (*fn)(void *);
  void *arg;
} metrics_collector;

struct metrics_registry {
  pthread_mutex_t lock;         /* the lists of families and series */
  pthread_mutex_t collect_lock; /* one rendering (and its collectors) at a time */
  metrics_family *families, **families_tail;
  metrics_collector collectors[8];
  int ncollectors;
  void *process; /* process.c's series, freed with the registry */
};

/* metrics_dbl_load reads a metrics_dbl. */
double metrics_dbl_load(const metrics_dbl *d);

#endif
