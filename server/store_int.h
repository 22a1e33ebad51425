/* store_int.h: what the store's files (store.c, store_pool.c,
 * store_push.c, store_expire.c, store_snap.c) share and nothing else may
 * touch — the layer and store structures and the helpers between them. */
#ifndef FSPS_SERVER_STORE_INT_H
#define FSPS_SERVER_STORE_INT_H

#include <pthread.h>

#include "optim/optim.h"
#include "store.h"

/* A slot holding no step. */
#define FREE_STEP UINT64_MAX

/* The pushes collected for one step of one layer. */
typedef struct {
  uint64_t step; /* FREE_STEP when unused */
  uint32_t count;
  uint8_t *pushed;  /* W flags */
  int64_t first_ns; /* when its first push arrived */
  fbuf *acc;        /* running sum (default mode) */
  fbuf **wbuf;      /* each worker's slice (--deterministic) */
} slot;

struct store_layer {
  pthread_mutex_t mu;
  float *snap; /* params then state, copied at snap_version */
  uint64_t snap_version;
  bool snap_busy; /* being written: do not overwrite */
  store *st;
  uint32_t index;
  const shard_layer *spec;
  uint64_t off, cnt;
  uint64_t version;
  fbuf *cur;   /* parameters at `version` */
  fbuf *spare; /* taken by store_spare_ready for apply's copy */
  float *state;
  slot *slots;
  uint32_t nslots;
  uint64_t *asp_next; /* ASP: each worker's next unseen step */
  /* --worker-timeout: when the version last advanced; the workers steps
   * no longer wait for (proceed); whether the current step timed out and
   * why (fail). */
  int64_t version_ns;
  uint8_t *absent;
  uint32_t nabsent;
  bool timed_out;
  char timeout_msg[256];
  store_waiter *waiters;
  /* Values given by a client (a layer of init client tensors): whether
   * they are still awaited here, and the copy kept of them, which a
   * rollback to version 0 restores (NULL until they arrive, and when the
   * layer was restored from a checkpoint of a later version). */
  bool client, awaiting;
  float *given;
  pthread_mutex_t pool_mu; /* nests inside mu */
  fbuf *free_list;
};

struct store {
  server_config cfg;
  pthread_mutex_t init_mu;
  atomic_bool ready;
  _Atomic uint64_t epoch; /* see store_epoch */
  double memory;          /* bytes this process may use (store_memory_bytes) */
  shard_spec *spec;
  uint64_t hash;
  optim_config ocfg;
  optim_schedule sched;
  uint32_t nlayers, nonempty;
  store_layer *layers;
  void *blob; /* the declared spec as the client sent it (for checkpoints) */
  size_t bloblen;
  /* --checkpoint-every: each layer copies itself when it reaches a
   * multiple of the period; the hook hears of each copy. */
  uint64_t every;
  void (*snap_hook)(void *arg, uint32_t layer, uint64_t version);
  void *snap_arg;
  struct server_metrics *metrics; /* NULL: off (store_set_metrics) */
  shard_wire_dtype wire;          /* the spec's, once declared */
};

/* store_floats is the number of floats of L's checkpoint data: its slice
 * of parameters followed by its optimizer state. */
static inline size_t store_floats(const store_layer *L) {
  return (1 + optim_state_per_elem(&L->st->ocfg)) * L->cnt;
}

/* ---- buffer pool (store_pool.c) ---- */

/* store_big_alloc allocates bytes aligned for vector loads, and to a huge
 * page when it is one or more; free with free. */
void *store_big_alloc(size_t bytes);

/* store_fbuf_get takes a buffer of L's slice size from its pool (or a new
 * one), holding one reference; NULL when out of memory. */
fbuf *store_fbuf_get(store_layer *L);

/* store_pool_free frees the buffers in L's pool. */
void store_pool_free(store_layer *L);

/* ---- bf16 copies of parameters (store_pool.c) ----
 * A bf16 model's pulls send L->cur->wire, encoded from L->cur->data by the
 * first pull handed the buffer after its data changed. Parameters change
 * only while no pull holds them (apply and rollback copy them into the spare
 * buffer otherwise), so a copy a pull sends from never changes under it. */

/* store_fbuf_wire gives b room for its bf16 copy if L's model is bf16 and
 * b has none: call it before b becomes L->cur. FSPS_OK or FSPS_NOMEM. */
int store_fbuf_wire(store_layer *L, fbuf *b);

/* store_params_changed_locked says L->cur's data changed: its bf16 copy is
 * stale. L->mu held. */
void store_params_changed_locked(store_layer *L);

/* store_params_out_locked makes L->cur's bf16 copy current (a bf16 model)
 * before a pull gets a reference to it. L->mu held. */
void store_params_out_locked(store_layer *L);

/* ---- waiters (store.c) ---- */

/* store_unlink_waiter removes parked w from L's list. L->mu held. */
void store_unlink_waiter(store_layer *L, store_waiter *w);

/* store_take_ready moves the waiters the current version satisfies onto a
 * private list, each holding a reference to the parameters. L->mu held. */
store_waiter *store_take_ready(store_layer *L);

/* store_wake runs ready() on each waiter of a list from store_take_ready,
 * with the lock released. */
void store_wake(store_waiter *ready, fbuf *params, uint64_t version);

/* store_fail runs ready(w, NULL, version) on each waiter of a private list
 * whose failed_code and failed say why, with the lock released. */
void store_fail(store_waiter *list, uint64_t version);

/* store_epoch_current tells whether epoch is the store's (and no rollback
 * runs); store_epoch_why says why it is not, for a refusal. */
bool store_epoch_current(const store *st, uint64_t epoch);
void store_epoch_why(const store *st, uint64_t epoch, char *why, size_t len);

/* ---- push slots and apply (store_push.c) ---- */

/* store_first_nonfinite returns the index of the first NaN/Inf of d[0..n),
 * or n when there is none. */
uint64_t store_first_nonfinite(const float *d, uint64_t n);

/* store_push_stage takes the staging buffer and chunk flags for a stream
 * of L's slice into p (zeroed, or holding only the caller's fields), for
 * pushes and given values alike. FSPS_OK, or FSPS_RESOURCE_EXHAUSTED with
 * msg naming `what` was being staged (p released). */
int store_push_stage(store_layer *L, uint64_t epoch, store_push *p,
                     const char *what, char *msg, size_t msglen);

/* store_slot_release drops what slot s holds and frees it for a new step. */
void store_slot_release(slot *s, uint32_t W);

/* store_spare_ready makes sure the next apply cannot fail (FSPS_OK) or
 * returns FSPS_NOMEM. L->mu held. */
int store_spare_ready(store_layer *L);

/* store_advance applies every complete step in order. L->mu held. */
void store_advance(store_layer *L);

/* ---- values given by a client (store_values.c) ---- */

/* store_values_started returns whether L has begun training: a version
 * past 0, or a push of it counted. L->mu held. */
bool store_values_started(const store_layer *L);

/* store_values_keep copies L's parameters into its copy of the given
 * values (taking memory for it if need be: without it, none is kept), for
 * a client layer that reaches version 0 from a checkpoint. L->mu held. */
void store_values_keep(store_layer *L);

/* ---- snapshots (store_snap.c) ---- */

/* store_snap_locked copies L at its version for a step-boundary
 * checkpoint and tells the hook. L->mu held. */
void store_snap_locked(store_layer *L);

#endif
