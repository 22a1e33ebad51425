/* spage.h: fsps-server's status page on the metrics address — `/`, an HTML
 * page that keeps itself up to date, and `/status.json`, what it shows:
 * the layers, their versions, the pending step and the workers it still
 * waits for, and push and pull rates. */
#ifndef FSPS_SERVER_SPAGE_H
#define FSPS_SERVER_SPAGE_H

#include <stddef.h>

struct server_metrics;
typedef struct server_page server_page;

/* server_page_create makes the page of the server whose metrics are m
 * (read at each request; m must outlive the page). NULL if out of memory. */
server_page *server_page_create(const struct server_metrics *m);
void server_page_destroy(server_page *p);

/* server_page_sample records the push, pull and byte counters now; the
 * rates are taken over the last ten samples (before ten, since start).
 * Call it once a second, from one thread. */
void server_page_sample(server_page *p);

/* server_page_json and server_page_html render the page (arg is the
 * server_page) as metrics_page renderers: a malloc'd body, NULL if out of
 * memory. Safe on the HTTP thread while the server serves. */
char *server_page_json(void *arg, size_t *len);
char *server_page_html(void *arg, size_t *len);

#endif
