/* store.c: the shard store — creating it, declaring the model, each
 * layer's facts, and the version barrier that parked pulls wait on. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spec_optim.h"
#include "store_int.h"

/* ---- store lifecycle ---- */

/* cgroup_limit reads a cgroup memory limit file: its bytes, or 0 when the
 * file is absent or says "max" (no limit). */
static double cgroup_limit(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  unsigned long long v = 0;
  int got = fscanf(f, "%llu", &v);
  fclose(f);
  return got == 1 ? (double)v : 0;
}

/* tightest lowers *have to the limits of cgroup `path` (under root, with
 * limit file `file`) and of each of its ancestors: the one that binds. */
static void tightest(const char *root, char *path, const char *file,
                     double *have) {
  for (;;) {
    char f[1400];
    snprintf(f, sizeof f, "%s%s/%s", root, path, file);
    double lim = cgroup_limit(f);
    if (lim > 0 && lim < *have)
      *have = lim;
    char *slash = strrchr(path, '/');
    if (slash == NULL)
      return;
    *slash = '\0'; /* the parent; "" is the root */
  }
}

double store_memory_bytes(void) {
  double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
  FILE *f = fopen("/proc/self/cgroup", "r");
  char line[1200];
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
    if (path == NULL)
      continue;
    *path++ = '\0';
    ctl++;
    if (strcmp(line, "0") == 0 && *ctl == '\0') /* cgroup v2 */
      tightest("/sys/fs/cgroup", path, "memory.max", &have);
    else if (strstr(ctl, "memory") != NULL) /* cgroup v1 */
      tightest("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes", &have);
  }
  if (f != NULL)
    fclose(f);
  return have;
}

store *store_create(const server_config *cfg) {
  store *st = calloc(1, sizeof *st);
  if (st == NULL)
    return NULL;
  st->cfg = *cfg;
  st->memory = store_memory_bytes();
  pthread_mutex_init(&st->init_mu, NULL);
  atomic_init(&st->ready, false);
  return st;
}

static void layer_free(store *st, store_layer *L) {
  uint32_t W = st->cfg.workers;
  for (uint32_t i = 0; L->slots && i < L->nslots; i++) {
    if (L->slots[i].pushed)
      store_slot_release(&L->slots[i], W);
    free(L->slots[i].pushed);
    free(L->slots[i].wbuf);
  }
  free(L->slots);
  if (L->cur)
    store_fbuf_unref(L->cur);
  if (L->spare)
    store_fbuf_unref(L->spare);
  store_pool_free(L);
  free(L->state);
  free(L->snap);
  free(L->asp_next);
  free(L->absent);
  free(L->given);
  pthread_mutex_destroy(&L->mu);
  pthread_mutex_destroy(&L->pool_mu);
}

void store_destroy(store *st) {
  if (st == NULL)
    return;
  for (uint32_t l = 0; st->layers && l < st->nlayers; l++)
    layer_free(st, &st->layers[l]);
  free(st->layers);
  free(st->blob);
  shard_spec_destroy(st->spec);
  pthread_mutex_destroy(&st->init_mu);
  free(st);
}

/* ---- declaring the model ---- */

static int slots_init(store *st, store_layer *L) {
  uint32_t W = st->cfg.workers;
  L->nslots = st->cfg.mode == MODE_ASP ? 0 : st->cfg.staleness + 1;
  if (st->cfg.mode == MODE_ASP)
    return (L->asp_next = calloc(W, sizeof *L->asp_next)) ? FSPS_OK
                                                          : FSPS_NOMEM;
  L->slots = calloc(L->nslots, sizeof *L->slots);
  L->absent = calloc(W, 1);
  if (L->slots == NULL || L->absent == NULL)
    return FSPS_NOMEM;
  for (uint32_t i = 0; i < L->nslots; i++) {
    slot *s = &L->slots[i];
    s->step = FREE_STEP;
    s->pushed = calloc(W, 1);
    if (st->cfg.deterministic)
      s->wbuf = calloc(W, sizeof *s->wbuf);
    if (s->pushed == NULL || (st->cfg.deterministic && s->wbuf == NULL))
      return FSPS_NOMEM;
  }
  return FSPS_OK;
}

static int layer_init(store *st, uint32_t l, store_layer *L) {
  L->st = st;
  L->index = l;
  L->spec = shard_spec_layer(st->spec, l);
  pthread_mutex_init(&L->mu, NULL);
  pthread_mutex_init(&L->pool_mu, NULL);
  shard_slice(L->spec->n, st->cfg.num_servers, st->cfg.index, &L->off, &L->cnt);
  size_t k = optim_state_per_elem(&st->ocfg);
  L->cur = store_fbuf_get(L);
  L->state =
      k ? store_big_alloc(k * (L->cnt ? L->cnt : 1) * sizeof(float)) : NULL;
  if (L->cur == NULL || (k && L->state == NULL) ||
      store_fbuf_wire(L, L->cur) != FSPS_OK)
    return FSPS_NOMEM;
  int rc = shard_init_fill(st->spec, l, L->off, L->cnt, L->cur->data);
  if (rc != FSPS_OK)
    return rc;
  if (k)
    optim_state_init(&st->ocfg, L->state, L->cnt);
  L->client = shard_layer_client(L->spec);
  L->awaiting = L->client && L->cnt > 0; /* until SetValues brings them */
  return slots_init(st, L);
}

/* fits checks, before anything is allocated, that this server's slices
 * (parameters, optimizer state, one staging buffer per layer, and the copy
 * of values given by a client) take at most 3/4 of the memory it may use (the
 * container's limit, if lower): a model too large is refused, rather than the
 * server being killed by the OOM killer while it initialises. */
static bool fits(const shard_spec *spec, const server_config *cfg,
                 const optim_config *oc, double have, char *msg,
                 size_t msglen) {
  double need = 0;
  for (uint32_t l = 0; l < shard_spec_num_layers(spec); l++) {
    const shard_layer *L = shard_spec_layer(spec, l);
    uint64_t off, cnt;
    shard_slice(L->n, cfg->num_servers, cfg->index, &off, &cnt);
    size_t copies = 2 + optim_state_per_elem(oc) + shard_layer_client(L);
    /* bf16: the parameters' and their spare's bf16 copies, 2 bytes each. */
    copies += shard_spec_wire_dtype(spec) == SHARD_WIRE_BF16;
    need += (double)cnt * 4.0 * (double)copies;
  }
  if (need <= 0.75 * have)
    return true;
  snprintf(msg, msglen,
           "this server's share of the model needs %.1f GiB, more than 3/4 "
           "of its %.1f GiB of memory: use more servers",
           need / (1 << 30), have / (1 << 30));
  return false;
}

static int build(store *st, shard_spec *spec, char *msg, size_t msglen) {
  optim_config oc;
  optim_schedule sc;
  server_spec_optim_config(shard_spec_optim(spec), &oc, &sc);
  if (!fits(spec, &st->cfg, &oc, st->memory, msg, msglen))
    return FSPS_RESOURCE_EXHAUSTED;
  st->spec = spec;
  st->wire = shard_spec_wire_dtype(spec);
  st->nlayers = shard_spec_num_layers(spec);
  server_spec_optim_config(shard_spec_optim(spec), &st->ocfg, &st->sched);
  st->layers = calloc(st->nlayers, sizeof *st->layers);
  int rc = st->layers ? FSPS_OK : FSPS_NOMEM;
  uint32_t done = 0;
  for (; rc == FSPS_OK && done < st->nlayers; done++) {
    rc = layer_init(st, done, &st->layers[done]);
    st->nonempty += st->layers[done].cnt > 0;
  }
  if (rc == FSPS_OK)
    return FSPS_OK;
  st->nonempty = 0;
  for (uint32_t l = 0; l < done; l++)
    layer_free(st, &st->layers[l]);
  free(st->layers);
  st->layers = NULL;
  st->spec = NULL;
  snprintf(msg, msglen, "cannot hold the model's slices on this server: %s",
           fsps_strerror(rc));
  return FSPS_RESOURCE_EXHAUSTED;
}

static int keep_blob(store *st, const void *blob, size_t len, char *msg,
                     size_t msglen) {
  free(st->blob);
  st->blob = malloc(len ? len : 1);
  st->bloblen = len;
  if (st->blob == NULL) {
    snprintf(msg, msglen, "out of memory");
    return FSPS_RESOURCE_EXHAUSTED;
  }
  if (len)
    memcpy(st->blob, blob, len);
  return FSPS_OK;
}

/* mismatch says why spec (hash h) is not the declared model, naming the
 * wire dtypes when they differ: the mismatch a flag most easily makes. */
static void mismatch(const store *st, const shard_spec *spec, uint64_t h,
                     char *msg, size_t msglen) {
  shard_wire_dtype have = st->wire, want = shard_spec_wire_dtype(spec);
  char dtypes[96] = "";
  if (have != want)
    snprintf(dtypes, sizeof dtypes,
             "; its wire dtype is %s, the request's %s (--wire-dtype)",
             shard_wire_dtype_name(have), shard_wire_dtype_name(want));
  snprintf(msg, msglen,
           "another model is declared here: its spec hash is %016" PRIx64
           ", the request's is %016" PRIx64
           "%s (restart the servers to train a different model)",
           st->hash, h, dtypes);
}

int store_init(store *st, shard_spec *spec, const void *blob, size_t bloblen,
               bool *created, char *msg, size_t msglen) {
  int rc = shard_spec_validate(spec, msg, msglen);
  if (rc != FSPS_OK) {
    shard_spec_destroy(spec);
    return FSPS_INVALID_ARGUMENT;
  }
  uint64_t h = shard_spec_hash(spec);
  *created = false;
  pthread_mutex_lock(&st->init_mu);
  if (atomic_load(&st->ready)) {
    if (h != st->hash) {
      mismatch(st, spec, h, msg, msglen);
      rc = FSPS_FAILED_PRECONDITION;
    }
    shard_spec_destroy(spec);
  } else if ((rc = keep_blob(st, blob, bloblen, msg, msglen)) != FSPS_OK) {
    shard_spec_destroy(spec);
  } else if ((rc = build(st, spec, msg, msglen)) == FSPS_OK) {
    st->hash = h;
    *created = true;
    atomic_store(&st->ready, true);
  } else {
    shard_spec_destroy(spec);
  }
  pthread_mutex_unlock(&st->init_mu);
  return rc;
}

void store_set_metrics(store *st, struct server_metrics *m) {
  st->metrics = m;
}

struct server_metrics *store_metrics(const store *st) {
  return st->metrics;
}

bool store_ready(const store *st) {
  return atomic_load(&st->ready);
}

uint64_t store_hash(const store *st) {
  return store_ready(st) ? st->hash : 0;
}

shard_wire_dtype store_wire_dtype(const store *st) {
  return st->wire;
}

uint32_t store_num_layers(const store *st) {
  return store_ready(st) ? st->nlayers : 0;
}

const server_config *store_config(const store *st) {
  return &st->cfg;
}

store_layer *store_layer_get(store *st, uint32_t l) {
  if (!store_ready(st) || l >= st->nlayers)
    return NULL;
  return &st->layers[l];
}

void store_info(store_layer *L, store_layer_info *info) {
  pthread_mutex_lock(&L->mu);
  *info = (store_layer_info){.name = L->spec->name,
                             .n = L->spec->n,
                             .offset = L->off,
                             .count = L->cnt,
                             .version = L->version,
                             .awaiting = L->awaiting};
  pthread_mutex_unlock(&L->mu);
}

uint64_t store_pushed(store_layer *L, bool *pushed, bool *absent) {
  uint32_t W = L->st->cfg.workers;
  pthread_mutex_lock(&L->mu);
  uint64_t step = L->version;
  for (uint32_t w = 0; w < W; w++) {
    absent[w] = false;
    if (L->st->cfg.mode == MODE_ASP) {
      pushed[w] = false;
      continue;
    }
    const slot *s = &L->slots[step % L->nslots];
    pushed[w] = s->step == step && s->pushed[w];
    absent[w] = L->absent[w];
  }
  pthread_mutex_unlock(&L->mu);
  return step;
}

/* ---- epochs ---- */

uint64_t store_epoch(const store *st) {
  return atomic_load(&st->epoch);
}

void store_set_epoch(store *st, uint64_t epoch) {
  atomic_store(&st->epoch, epoch);
}

bool store_epoch_current(const store *st, uint64_t epoch) {
  uint64_t now = store_epoch(st);
  return epoch == now && now != STORE_EPOCH_CHANGING;
}

void store_epoch_why(const store *st, uint64_t epoch, char *why, size_t len) {
  uint64_t now = store_epoch(st);
  if (now == STORE_EPOCH_CHANGING)
    snprintf(why, len,
             "this server is being rolled back: recover and go on "
             "from the version the cluster agrees on");
  else
    snprintf(why, len,
             "the cluster is in epoch %016" PRIx64 ", not %016" PRIx64
             ": it was rolled back (or this server restarted) since; recover "
             "and go on from the version the cluster agrees on",
             now, epoch);
}

/* ---- pulls and the version barrier ---- */

int store_pull(store_layer *L, store_waiter *w, fbuf **params,
               uint64_t *version) {
  pthread_mutex_lock(&L->mu);
  int rc = STORE_PULL_PARKED;
  if (!store_epoch_current(L->st, w->epoch)) {
    rc = STORE_PULL_FAILED;
    w->failed_code = FSPS_FAILED_PRECONDITION;
    store_epoch_why(L->st, w->epoch, w->failed, sizeof w->failed);
  } else if (L->version >= w->min_version && !L->awaiting) {
    rc = STORE_PULL_READY;
    store_params_out_locked(L);
    store_fbuf_ref(L->cur);
    *params = L->cur;
    *version = L->version;
  } else if (w->min_version > L->version + 1) {
    rc = STORE_PULL_FAILED; /* see store_pull's contract */
    w->failed_code = FSPS_FAILED_PRECONDITION;
    snprintf(w->failed, sizeof w->failed,
             "layer '%s' is at version %" PRIu64 ": no worker of this "
             "cluster can wait for version %" PRIu64 " (the server restarted "
             "or rolled back; recover and go on from its version)",
             L->spec->name, L->version, w->min_version);
  } else if (L->timed_out) {
    rc = STORE_PULL_FAILED;
    w->failed_code = FSPS_ABORTED;
    snprintf(w->failed, sizeof w->failed, "%s", L->timeout_msg);
  } else {
    w->parked = true;
    w->prev = NULL;
    w->next = L->waiters;
    if (L->waiters)
      L->waiters->prev = w;
    L->waiters = w;
  }
  pthread_mutex_unlock(&L->mu);
  return rc;
}

void store_unlink_waiter(store_layer *L, store_waiter *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    L->waiters = w->next;
  if (w->next)
    w->next->prev = w->prev;
  w->parked = false;
  w->prev = w->next = NULL;
}

bool store_unpark(store_layer *L, store_waiter *w) {
  pthread_mutex_lock(&L->mu);
  bool was = w->parked;
  if (was)
    store_unlink_waiter(L, w);
  pthread_mutex_unlock(&L->mu);
  return was;
}

/* store_take_ready moves the waiters the current version satisfies onto a
 * private list, each holding a reference to the parameters; none while the
 * layer awaits its values. */
store_waiter *store_take_ready(store_layer *L) {
  store_waiter *ready = NULL;
  for (store_waiter *w = L->awaiting ? NULL : L->waiters, *next; w != NULL;
       w = next) {
    next = w->next;
    if (w->min_version > L->version)
      continue;
    store_unlink_waiter(L, w);
    store_params_out_locked(L);
    store_fbuf_ref(L->cur);
    w->next = ready;
    ready = w;
  }
  return ready;
}

void store_wake(store_waiter *ready, fbuf *params, uint64_t version) {
  for (store_waiter *w = ready, *next; w != NULL; w = next) {
    next = w->next;
    w->next = NULL;
    w->ready(w, params, version);
  }
}

void store_fail(store_waiter *list, uint64_t version) {
  for (store_waiter *w = list, *next; w != NULL; w = next) {
    next = w->next;
    w->next = NULL;
    w->ready(w, NULL, version);
  }
}
