/* store.h: the shard store of one fsps-server — for every layer its slice
 * of parameters, optimizer state, per-step accumulators, contributor
 * bitmaps and the pulls waiting for a version, under one lock per layer. */
#ifndef FSPS_SERVER_STORE_H
#define FSPS_SERVER_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "shard/shard.h"

typedef struct store store;
typedef struct store_layer store_layer;

/* A float buffer of one layer's slice size, recycled through the layer's
 * pool; refcounted when published as parameters that pulls send from. A
 * buffer that holds a bf16 model's parameters also holds them as bf16,
 * which its pulls send (encoded once per version, by the first pull). */
typedef struct fbuf {
  atomic_int refs;
  store_layer *layer;
  struct fbuf *next_free;
  float *data;
  uint16_t *wire; /* data as bf16 (NULL: none yet); valid when wire_ok */
  bool wire_ok;   /* under the layer's lock */
} fbuf;

/* A Pull parked until its layer reaches min_version. */
typedef struct store_waiter {
  uint64_t min_version;
  uint64_t epoch; /* the client's (store_epoch) */
  bool parked;
  struct store_waiter *prev, *next;
  /* Called (outside any lock) when the version is reached, with a
   * reference to the parameters at that version; or with params NULL when
   * the step it waits on failed (--worker-timeout), `failed` saying why. */
  void (*ready)(struct store_waiter *w, fbuf *params, uint64_t version);
  int failed_code; /* FSPS_ABORTED (timed out) or FSPS_FAILED_PRECONDITION */
  char failed[256];
} store_waiter;

/* What one layer's slice on this server looks like; awaiting: its values
 * are to be given by a client and have not arrived (store_values_*). */
typedef struct {
  const char *name;
  uint64_t n, offset, count;
  uint64_t version;
  bool awaiting;
} store_layer_info;

/* store_memory_bytes returns the memory this process may use: the
 * machine's, or less when its cgroup is limited (a container's
 * memory.max, or cgroup v1's memory.limit_in_bytes). Reads /proc and /sys:
 * call it at start, not on a call thread. */
double store_memory_bytes(void);

/* store_create makes an empty store (no model yet) for this server. */
store *store_create(const server_config *cfg);
void store_destroy(store *st);

/* store_init declares the model: takes ownership of spec on success
 * and keeps a copy of blob (the spec as the client encoded it, written into
 * checkpoints)
 * (FSPS_OK, *created true) or when the same spec is already declared
 * (FSPS_OK, *created false; spec is freed). A different spec is
 * FSPS_FAILED_PRECONDITION naming both hashes; an invalid one
 * FSPS_INVALID_ARGUMENT. msg says why. Thread-safe. */
int store_init(store *st, shard_spec *spec, const void *blob, size_t bloblen,
               bool *created, char *msg, size_t msglen);

/* store_ready returns whether a model is declared; store_hash its hash;
 * store_wire_dtype how its pulls and pushes travel (a bf16 model's
 * parameters handed to pulls hold their bf16 copy in fbuf.wire). */
bool store_ready(const store *st);
uint64_t store_hash(const store *st);
shard_wire_dtype store_wire_dtype(const store *st);
uint32_t store_num_layers(const store *st);
const server_config *store_config(const store *st);

/* store_layer_get returns layer l, or NULL if there is no model or no such
 * layer. */
store_layer *store_layer_get(store *st, uint32_t l);

/* store_info fills info about layer l (version read under its lock). */
void store_info(store_layer *L, store_layer_info *info);

/* store_pushed fills pushed[w] with whether worker w has pushed the step
 * the layer is collecting (its version, except in ASP), and absent[w] with
 * whether the layer stopped waiting for w (--on-worker-timeout proceed);
 * returns that step. */
uint64_t store_pushed(store_layer *L, bool *pushed, bool *absent);

/* ---- epochs ----
 * The cluster epoch (StatusReply.epoch) fences rollbacks: a pull or push of
 * another epoch than the store's is refused, also one that began before the
 * epoch changed and commits after, so that nothing computed before a
 * rollback counts after it. STORE_EPOCH_CHANGING while a rollback runs:
 * everything is refused then. */
#define STORE_EPOCH_CHANGING UINT64_MAX

uint64_t store_epoch(const store *st);
void store_set_epoch(store *st, uint64_t epoch);

/* store_new_epoch starts L afresh in the store's new epoch (after
 * store_set_epoch): its pending pushes, of the old one, are dropped, and
 * its pulls parked in the old one fail. */
void store_new_epoch(store_layer *L);

/* store_pull asks for the layer's parameters at version >= w->min_version.
 * STORE_PULL_READY: they are there now, *params referenced (release with
 * store_fbuf_unref) and *version set. STORE_PULL_PARKED: w waits, and w->ready
 * runs later from the thread that advances the version or fails the step.
 * STORE_PULL_FAILED (w->failed_code and w->failed say why): w->epoch is
 * not the store's, the step it would wait on timed out, or it asks for
 * more than version + 1, which no worker of the
 * cluster can (a worker pulls version t only after every worker pushed
 * step t - 1 of the layer, so the layer is at t - 1 at least): the server
 * restarted or rolled back since that worker last looked. */
enum { STORE_PULL_READY, STORE_PULL_PARKED, STORE_PULL_FAILED };
int store_pull(store_layer *L, store_waiter *w, fbuf **params,
               uint64_t *version);

/* store_unpark removes w if it is still parked; true if it was. */
bool store_unpark(store_layer *L, store_waiter *w);

/* A gradient slice arriving for (layer, step, worker): stage it chunk by
 * chunk into a buffer from the layer's pool, then commit it whole. */
typedef struct {
  store_layer *layer;
  uint64_t step;
  uint32_t worker;
  uint64_t epoch; /* the worker's (store_epoch) */
  fbuf *buf;
  uint64_t chunks, received;
  uint8_t *got;
  uint64_t nonfinite;
} store_push;

/* store_push_begin validates (worker, step, epoch) against the layer and
 * takes a staging buffer. FSPS_OK, or an error with msg. */
int store_push_begin(store_layer *L, uint64_t step, uint32_t worker,
                     uint64_t epoch, store_push *p, char *msg, size_t msglen);

/* store_push_chunk returns where chunk at layer offset `offset` with
 * `count` floats goes (after checking it is exactly one whole, new chunk
 * of the slice), or NULL with msg. */
float *store_push_chunk(store_push *p, uint64_t offset, uint64_t count,
                        char *msg, size_t msglen);

/* store_any_nonfinite returns whether d[0..n) holds a NaN or an Inf: one
 * cheap pass, so a receiver can scan pieces of a chunk as they are copied. */
bool store_any_nonfinite(const float *d, uint64_t n);

/* store_push_check scans the chunk just copied to dst for NaN/Inf: under
 * --nan-policy reject it fails with msg, under skip it zeroes them. */
int store_push_check(store_push *p, float *dst, uint64_t count, char *msg,
                     size_t msglen);

/* store_ack_fn hears a push's outcome: *duplicate* if this contribution
 * had already been counted, *applied* if it completes a step, and the
 * layer's version once the optimizer has run. */
typedef void (*store_ack_fn)(void *arg, bool duplicate, bool applied,
                             uint64_t version);

/* store_push_commit adds a complete push to its step, applying the
 * optimizer when the step is complete. fn(arg, ...) is called exactly once
 * on success, as soon as the outcome is certain and before the sums and the
 * optimizer run, so that a reply sent from it travels while they do; it
 * runs under the layer's lock and must not call into the store. Pulls of
 * the new version still wait for the optimizer. On failure (FSPS_NOMEM for
 * a copy of parameters a pull is still sending, FSPS_FAILED_PRECONDITION
 * when the layer was rolled back since the push began) fn is not called,
 * nothing changes, and msg says why. */
int store_push_commit(store_push *p, store_ack_fn fn, void *arg, char *msg,
                      size_t msglen);

/* store_push_abort releases what a push holds (after any failure). */
void store_push_abort(store_push *p);

/* ---- values given by a client ----
 * A layer whose tensors' init is client (shard_layer_client) awaits its
 * values until a client gives them (SetValues): until then its pulls park,
 * as for a version not reached yet, and its pushes are refused. The values
 * arrive as a push does, chunk by chunk into a staging buffer (a store_push
 * filled through store_push_chunk), and are taken whole or not at all. */

/* store_values_begin checks that L takes values now (its init is client,
 * this server holds part of it, it has not begun training, epoch is the
 * store's) and takes a staging buffer. FSPS_OK, or an error with msg
 * (FSPS_FAILED_PRECONDITION, FSPS_INVALID_ARGUMENT for an empty slice,
 * FSPS_RESOURCE_EXHAUSTED); release p with store_push_abort either way. */
int store_values_begin(store_layer *L, uint64_t epoch, store_push *p, char *msg,
                       size_t msglen);

/* store_values_check refuses a chunk just copied to dst that holds a NaN
 * or an Inf (FSPS_INVALID_ARGUMENT naming the first, whatever
 * --nan-policy says): given values must be finite. It never writes dst;
 * dst is not const so that it has store_push_check's type, and the
 * handlers can name either as their stream's check. */
int store_values_check(store_push *p, float *dst, uint64_t count, char *msg,
                       size_t msglen);

/* store_values_commit takes the complete values staged in p: L's version-0
 * parameters become them, a copy is kept for rollbacks to version 0, and
 * the pulls waiting for them are answered. *duplicate: L held exactly
 * these values already, and nothing changes. Refused, changing nothing,
 * with msg: chunks missing (FSPS_INVALID_ARGUMENT); L began training, or
 * the epoch changed (FSPS_FAILED_PRECONDITION); L holds other values
 * (FSPS_ALREADY_EXISTS); no memory for the copy (FSPS_RESOURCE_EXHAUSTED).
 * Releases what p holds. */
int store_values_commit(store_push *p, bool *duplicate, char *msg,
                        size_t msglen);

/* store_awaiting returns how many layers of this server await their
 * values, and sets *first (if not NULL) to the first of them. */
uint32_t store_awaiting(store *st, uint32_t *first);

/* store_initial_held tells whether L can go back to its initial values
 * (store_rollback_layer with no data): always, unless its values were
 * given by a client and this server holds no copy of them. */
bool store_initial_held(store_layer *L);

/* store_expire applies --worker-timeout to every layer: a step that has
 * waited longer than it for its last workers' pushes (counting from its
 * first push or the previous step, whichever is later) either goes on
 * without them (--on-worker-timeout proceed: averaged over the workers
 * that pushed; later steps stop waiting for the missing ones until they
 * push again) or fails the pulls waiting on it, and those that come until
 * it completes, naming the missing workers. Call it periodically. */
void store_expire(store *st);

/* store_now_ns returns CLOCK_MONOTONIC in nanoseconds. */
int64_t store_now_ns(void);

/* store_rollback_layer brings L back to `version` while serving: its
 * parameters and state become data (as written by store_copy_now), or the
 * initial values when data is NULL (a client layer's given values);
 * pending pushes are dropped, and pulls parked for versions past version +
 * 1 or of another epoch fail. FSPS_OK, FSPS_NOMEM, or
 * FSPS_FAILED_PRECONDITION for initial values that are not held
 * (store_initial_held); L is then unchanged. */
int store_rollback_layer(store_layer *L, const float *data, uint64_t version);

/* ---- checkpoints ----
 * A layer's checkpoint data is store_layer_floats(L) floats: its slice of
 * parameters followed by its optimizer state. */

/* store_blob returns the declared spec's bytes (see store_init). */
const void *store_blob(const store *st, size_t *len);
size_t store_layer_floats(store_layer *L);

/* store_nonempty_layers counts the layers whose slice here is not empty
 * (fixed once the model is declared). No lock. */
uint32_t store_nonempty_layers(const store *st);

/* store_set_snapshots makes every layer copy itself each time its version
 * reaches a multiple of `every` (0: never) and then call hook(arg, layer,
 * version), from the thread that applied the update. Set before serving. */
void store_set_snapshots(store *st, uint64_t every,
                         void (*hook)(void *, uint32_t, uint64_t), void *arg);

/* store_copy_now copies layer L as it is now into out; returns its
 * version. */
uint64_t store_copy_now(store_layer *L, float *out);

/* store_snapshot_hold returns L's copy taken at `version` and keeps it
 * from being overwritten until store_snapshot_release; NULL if L holds no
 * copy of that version. */
const float *store_snapshot_hold(store_layer *L, uint64_t version);
void store_snapshot_release(store_layer *L);

/* store_restore_layer sets L's parameters and state (as written by
 * store_copy_now) and its version; before serving only. A client layer
 * then holds its values (at version 0 they are kept as the given ones). */
void store_restore_layer(store_layer *L, const float *data, uint64_t version);

/* store_set_metrics makes the store time its sums and optimizer steps
 * into m (NULL: off). Set before serving; store_metrics returns it. */
struct server_metrics;
void store_set_metrics(store *st, struct server_metrics *m);
struct server_metrics *store_metrics(const store *st);
/* store_fbuf_ref / store_fbuf_unref manage published parameter buffers. */
void store_fbuf_ref(fbuf *b);
void store_fbuf_unref(fbuf *b);

#endif
