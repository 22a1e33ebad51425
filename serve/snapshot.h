/* snapshot.h: one immutable, versioned copy of a model's parameters that
 * fsps-serve computes predictions from, and the slot that holds the current
 * one, so a newer version can replace it between batches while batches in
 * flight finish on the version they started with. */
#ifndef FSPS_SERVE_SNAPSHOT_H
#define FSPS_SERVE_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mlp.h"

/* Most widths a served MLP may have (input, hidden..., classes). */
#define SERVE_MAX_WIDTHS 64u

/* A model at one version. Layer l's parameters are params[l], a flat vector
 * of out*in + out floats in model_mlp's layout (weight [out][in] row-major,
 * then bias [out]). Immutable once published; shared by reference count. */
typedef struct {
  uint64_t version;  /* every layer's version (all equal) */
  uint32_t nwidths;  /* L + 1 */
  uint32_t widths[SERVE_MAX_WIDTHS];
  float **params;    /* L vectors, allocated with the snapshot */
  atomic_uint refs;
} serve_snapshot;

/* serve_snapshot_new allocates a snapshot for widths[0..nwidths) (2..
 * SERVE_MAX_WIDTHS widths, each 1..MLP_MAX_WIDTH) with zeroed parameters to
 * be filled by the caller, holding one reference. NULL if an argument is
 * invalid or memory runs out. */
serve_snapshot *serve_snapshot_new(const uint32_t *widths, uint32_t nwidths,
                                   uint64_t version);

/* serve_snapshot_layer_size returns layer l's parameter count. */
uint64_t serve_snapshot_layer_size(const serve_snapshot *s, uint32_t l);

/* serve_snapshot_ref adds a reference; serve_snapshot_unref drops one and
 * frees the snapshot with the last. NULL is a no-op for both. Thread-safe. */
void serve_snapshot_ref(serve_snapshot *s);
void serve_snapshot_unref(serve_snapshot *s);

/* serve_snapshot_predict computes, for the b rows of x ([b][widths[0]],
 * row-major), the softmax probabilities into probs ([b][classes]) and, when
 * classes_out is non-NULL, each row's class (first maximum) into it. m must
 * have been made by model_mlp_create for s's widths with max_batch >= b
 * (each thread keeps its own m). Inputs that are not finite make NaN rows:
 * check inputs before. Returns 0, or -1 if m's widths do not match s. */
int serve_snapshot_predict(const serve_snapshot *s, mlp *m, const float *x,
                           uint32_t b, float *probs, uint32_t *classes_out);

/* The slot: the snapshot now served (none at first). */
typedef struct serve_slot serve_slot;

serve_slot *serve_slot_create(void);
void serve_slot_destroy(serve_slot *slot); /* drops the current snapshot */

/* serve_slot_publish makes s (whose reference the slot takes over) the
 * current snapshot and drops the slot's reference to the previous one;
 * callers that acquired it keep theirs. Thread-safe. */
void serve_slot_publish(serve_slot *slot, serve_snapshot *s);

/* serve_slot_acquire returns the current snapshot with a reference for the
 * caller (serve_snapshot_unref when done), or NULL when there is none yet
 * (not ready). Thread-safe. */
serve_snapshot *serve_slot_acquire(serve_slot *slot);

/* serve_slot_version returns the current snapshot's version, or UINT64_MAX
 * when there is none. Thread-safe. */
uint64_t serve_slot_version(serve_slot *slot);

#endif
