/* wpage.h: fsps-worker's status page on the metrics address — `/`, an HTML
 * page that keeps itself up to date, with the epoch, step, loss and
 * samples/s and charts of loss and samples/s over the run so far, and
 * `/status.json`, what it shows. */
#ifndef FSPS_WORKER_WPAGE_H
#define FSPS_WORKER_WPAGE_H

#include <stddef.h>
#include <stdint.h>

#include "history.h"

/* What a page shows: who the worker is (the strings as given on its
 * command line; they must outlive the page) and its progress. */
typedef struct {
  uint32_t rank, world;
  const char *model, *mode;
  worker_history *history;
} worker_page;

/* worker_page_json and worker_page_html render the page (arg is the
 * worker_page) as metrics_page renderers: a malloc'd body, NULL if out of
 * memory. Safe on the HTTP thread while the trainer records. */
char *worker_page_json(void *arg, size_t *len);
char *worker_page_html(void *arg, size_t *len);

#endif
