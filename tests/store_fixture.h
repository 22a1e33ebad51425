/* store_fixture.h: what test_store's files share — a small model declared
 * on a store without a network, pushes as push.c makes them, pulls as
 * pull.c parks them, and a monotonic clock the tests can move. */
#ifndef FSPS_TESTS_STORE_FIXTURE_H
#define FSPS_TESTS_STORE_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "store.h"

/* The model: layer 0 "a", 20 elements, all 1.0 (hand computations start
 * there); layer 1 "b", a 3x4 uniform weight and a bias of 0.25 (15
 * elements); with big, layer 2 "big", 262160 zeros in two push chunks. A
 * store of fx_config holds every slice whole (one server). */
#define A_N 20
#define B_N 15
#define BIG_N (SHARD_CHUNK_ELEMS + 16)

/* The store's CLOCK_MONOTONIC runs fx_skew seconds ahead of the real one
 * (test_store links with -Wl,--wrap=clock_gettime), so --worker-timeout
 * expires without sleeping. */
extern time_t fx_skew;

/* fx_config is server 0 of 1 for W workers, BSP, errors-only log. */
server_config fx_config(uint32_t W);

/* fx_model builds the model with SGD at lr and momentum (see above). */
shard_spec *fx_model(double lr, double momentum, bool big);

/* fx_open makes a store for c and declares fx_model(lr, 0, big) on it. */
store *fx_open(const server_config *c, double lr, bool big);

/* What a push's acknowledgement said (store_ack_fn). */
typedef struct {
  int calls;
  bool duplicate, applied;
  uint64_t version;
} fx_ack;

/* fx_on_ack is a store_ack_fn recording into the fx_ack at arg. */
void fx_on_ack(void *arg, bool duplicate, bool applied, uint64_t version);

/* fx_push sends g (layer l's whole slice) for (step, w) chunk by chunk, as
 * push.c does; returns the first failure, *a filled by the ack. */
int fx_push(store *st, uint32_t l, uint64_t step, uint32_t w, const float *g,
            fx_ack *a);

/* fx_push_const pushes the constant gradient v and asserts it is taken. */
fx_ack fx_push_const(store *st, uint32_t l, uint64_t step, uint32_t w, float v);

/* fx_step pushes 1.0 from each of W workers for step t of layer l. */
void fx_step(store *st, uint32_t l, uint64_t t, uint32_t W);

/* fx_version returns layer l's version; fx_params copies its parameters
 * (not its optimizer state) into out. */
uint64_t fx_version(store *st, uint32_t l);
void fx_params(store *st, uint32_t l, float *out);

/* A pull, parked (or not) through the store's waiter interface. */
typedef struct {
  store_waiter w;
  int woken;
  fbuf *params;
  uint64_t version;
} fx_waiter;

/* fx_pull asks for layer l at min_version (store_pull); fx_release drops
 * the parameters w holds, if any. */
int fx_pull(store *st, uint32_t l, uint64_t min_version, fx_waiter *w);
void fx_release(fx_waiter *w);

/* What the snapshot hook heard last (store_set_snapshots). */
typedef struct {
  int calls;
  uint32_t layer;
  uint64_t version;
} fx_snap;

void fx_on_snap(void *arg, uint32_t layer, uint64_t version);

/* store_alloc_tests runs test_store_alloc.c's group (allocation
 * failures); returns how many of its tests failed. */
int store_alloc_tests(void);

/* store_values_tests runs test_store_values.c's group (values a client
 * gives); returns how many of its tests failed. */
int store_values_tests(void);

/* store_page_tests runs test_store_page.c's group (the status page);
 * returns how many of its tests failed. */
int store_page_tests(void);

#endif
