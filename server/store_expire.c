/* store_expire.c: --worker-timeout — a step whose last workers do not push
 * in time goes on without them or fails the pulls waiting on it. */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "log.h"
#include "store_int.h"

int64_t store_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* missing lists the workers slot s waits for ("1, 3") into out and marks
 * them absent when mark is set. */
static void missing(store_layer *L, const slot *s, bool mark, char *out,
                    size_t outlen) {
  size_t used = 0;
  out[0] = '\0';
  for (uint32_t w = 0; w < L->st->cfg.workers; w++) {
    if (s->pushed[w] || L->absent[w])
      continue;
    if (used < outlen)
      used += (size_t)snprintf(out + used, outlen - used, "%s%u",
                               used ? ", " : "", w);
    if (mark) {
      L->absent[w] = 1;
      L->nabsent++;
    }
  }
}

/* take_all moves every parked waiter onto a private list, each told why it
 * fails. */
static store_waiter *take_all(store_layer *L) {
  store_waiter *all = NULL;
  while (L->waiters != NULL) {
    store_waiter *w = L->waiters;
    store_unlink_waiter(L, w);
    w->failed_code = FSPS_ABORTED;
    snprintf(w->failed, sizeof w->failed, "%s", L->timeout_msg);
    w->next = all;
    all = w;
  }
  return all;
}

/* timeout handles a step that waited too long, L->mu held: proceed without
 * the missing workers, or fail what waits on the step. Returns the waiters
 * to wake (proceed) or fail. */
static store_waiter *timeout(store_layer *L, slot *s) {
  const server_config *cfg = &L->st->cfg;
  char who[160];
  missing(L, s, cfg->timeout_proceed, who, sizeof who);
  uint32_t secs = cfg->worker_timeout_s;
  if (cfg->timeout_proceed) {
    LOGW("layer '%s' step %" PRIu64 ": going on without worker(s) %s, which "
         "did not push within %u s (--worker-timeout, --on-worker-timeout "
         "proceed)",
         L->spec->name, L->version, who, secs);
    if (store_spare_ready(L) == FSPS_OK)
      store_advance(L);
    return store_take_ready(L);
  }
  L->timed_out = true;
  snprintf(L->timeout_msg, sizeof L->timeout_msg,
           "layer '%s' step %" PRIu64 ": worker(s) %s did not push within "
           "%u s (--worker-timeout); restart them with the same --rank",
           L->spec->name, L->version, who, secs);
  LOGE("%s", L->timeout_msg);
  return take_all(L);
}

static void expire_layer(store_layer *L, int64_t now, int64_t limit_ns) {
  store_waiter *list = NULL;
  pthread_mutex_lock(&L->mu);
  slot *s = &L->slots[L->version % L->nslots];
  int64_t since = s->first_ns > L->version_ns ? s->first_ns : L->version_ns;
  if (s->step == L->version && s->count > 0 && !L->timed_out &&
      now - since >= limit_ns)
    list = timeout(L, s);
  bool failed = L->timed_out;
  fbuf *params = L->cur;
  uint64_t version = L->version;
  pthread_mutex_unlock(&L->mu);
  if (!failed) {
    store_wake(list, params, version);
    return;
  }
  store_fail(list, version);
}

void store_expire(store *st) {
  uint32_t secs = st->cfg.worker_timeout_s;
  if (secs == 0 || st->cfg.mode == MODE_ASP || !store_ready(st))
    return;
  int64_t now = store_now_ns();
  for (uint32_t l = 0; l < st->nlayers; l++)
    if (st->layers[l].cnt > 0)
      expire_layer(&st->layers[l], now, (int64_t)secs * 1000000000);
}
