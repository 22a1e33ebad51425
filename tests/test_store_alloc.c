/* test_store_alloc.c: test_store's allocation-failure group — each
 * allocation of store_create, store_init, a push, a rollback and a
 * step-boundary snapshot fails in turn (alloc_fail.h); the operation must
 * fail cleanly and change nothing, and nothing may leak (ASan builds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <string.h>

#include "alloc_fail.h"
#include "store_fixture.h"

#define LIMIT 1000 /* runs before alloc_fail_loop gives up */

/* ---- store_create ---- */

typedef struct {
  server_config c;
  store *st;
} create_ctx;

static void create_op(void *arg) {
  create_ctx *x = arg;
  x->st = store_create(&x->c);
}

static void create_check(void *arg, bool failed) {
  create_ctx *x = arg;
  if (failed)
    assert_null(x->st);
  else
    assert_non_null(x->st);
  store_destroy(x->st);
}

static void test_alloc_create(void **unused) {
  (void)unused;
  create_ctx x = {fx_config(2), NULL};
  assert_int_equal(alloc_fail_loop(NULL, create_op, create_check, &x, LIMIT),
                   1);
}

/* ---- store_init ---- */

typedef struct {
  server_config c;
  store *st;
  shard_spec *spec;
  int rc;
  bool created;
  char msg[512];
} init_ctx;

static void init_setup(void *arg) {
  init_ctx *x = arg;
  x->st = store_create(&x->c);
  x->spec = fx_model(0.5, 0.9, true);
  x->msg[0] = '\0';
}

static void init_op(void *arg) {
  init_ctx *x = arg;
  x->rc =
      store_init(x->st, x->spec, "spec", 4, &x->created, x->msg, sizeof x->msg);
}

/* A refused Init leaves no model; an accepted one holds the spec's initial
 * values and serves. */
static void init_check(void *arg, bool failed) {
  init_ctx *x = arg;
  if (failed) {
    assert_int_equal(x->rc, FSPS_RESOURCE_EXHAUSTED);
    assert_true(x->msg[0] != '\0');
    assert_false(store_ready(x->st));
    assert_int_equal(store_num_layers(x->st), 0);
  } else {
    assert_int_equal(x->rc, FSPS_OK);
    assert_true(x->created);
    assert_int_equal(store_num_layers(x->st), 3);
    float got[A_N];
    fx_params(x->st, 0, got);
    assert_true(got[0] == 1.0f && got[A_N - 1] == 1.0f);
    fx_step(x->st, 0, 0, x->c.workers); /* ASP: one update per push */
    assert_int_equal(fx_version(x->st, 0),
                     x->c.mode == MODE_ASP ? x->c.workers : 1);
  }
  store_destroy(x->st);
}

/* Every mode allocates its own: BSP with --deterministic a buffer list per
 * slot, SSP several slots, ASP each worker's next step instead. Momentum
 * gives every layer optimizer state. */
static void test_alloc_init(void **unused) {
  (void)unused;
  for (int mode = 0; mode < 3; mode++) {
    init_ctx x = {.c = fx_config(3)};
    x.c.deterministic = mode == 0;
    x.c.mode = mode == 1 ? MODE_SSP : mode == 2 ? MODE_ASP : MODE_BSP;
    x.c.staleness = mode == 1 ? 2 : 0;
    uint64_t n = alloc_fail_loop(init_setup, init_op, init_check, &x, LIMIT);
    assert_true(n > 3 * 4); /* a blob, layers, and per layer 4 or more */
  }
}

/* ---- a push ---- */

typedef struct {
  server_config c;
  store *st;
  fx_waiter held;
  uint32_t worker;
  uint64_t version;
  bool absent; /* the worker was absent (--on-worker-timeout proceed) */
  int rc;
  fx_ack ack;
  float before[A_N];
} push_ctx;

/* push_setup: worker 0 has pushed step 0 of 2, and a pull still sends
 * version 0, so the update will need a copy. */
static void push_setup(void *arg) {
  push_ctx *x = arg;
  x->st = fx_open(&x->c, 0.5, false);
  fx_push_const(x->st, 0, 0, 0, 1.0f);
  assert_int_equal(fx_pull(x->st, 0, 0, &x->held), STORE_PULL_READY);
  fx_params(x->st, 0, x->before);
}

static void push_op(void *arg) {
  push_ctx *x = arg;
  float g[A_N];
  for (int i = 0; i < A_N; i++)
    g[i] = 3.0f;
  x->rc = fx_push(x->st, 0, x->version, x->worker, g, &x->ack);
}

/* A refused push is not acknowledged and counts for nothing; the pull's
 * copy never changes. */
static void push_check(void *arg, bool failed) {
  push_ctx *x = arg;
  bool pushed[3], absent[3];
  float now[A_N];
  store_pushed(store_layer_get(x->st, 0), pushed, absent);
  fx_params(x->st, 0, now);
  if (failed) { /* staging (begin) or the next parameters (commit) */
    assert_true(x->rc == FSPS_RESOURCE_EXHAUSTED || x->rc == FSPS_NOMEM);
    assert_int_equal(x->ack.calls, 0);
    assert_int_equal(fx_version(x->st, 0), x->version);
    assert_false(pushed[x->worker]);
    assert_int_equal(absent[x->worker], x->absent);
    assert_memory_equal(now, x->before, sizeof now);
  } else {
    assert_int_equal(x->rc, FSPS_OK);
    assert_int_equal(x->ack.calls, 1);
    assert_false(x->ack.duplicate);
    assert_false(absent[x->worker]);
  }
  assert_true(x->held.params->data[0] == x->before[0]);
  fx_release(&x->held);
  store_destroy(x->st);
}

/* The push that completes a step: a staging buffer (2 allocations), its
 * chunk map, and the copy for the update (2) in push_commit. */
static void test_alloc_push(void **unused) {
  (void)unused;
  push_ctx x = {.c = fx_config(2), .worker = 1};
  assert_int_equal(alloc_fail_loop(push_setup, push_op, push_check, &x, LIMIT),
                   5);
}

/* push_absent_setup: step 0 went on without worker 2 (--worker-timeout,
 * proceed), worker 0 pushed step 1 and a pull sends version 1. */
static void push_absent_setup(void *arg) {
  push_ctx *x = arg;
  x->st = fx_open(&x->c, 0.5, false);
  fx_skew = 0;
  fx_push_const(x->st, 0, 0, 0, 1.0f);
  fx_push_const(x->st, 0, 0, 1, 1.0f);
  fx_skew = 10;
  store_expire(x->st);
  fx_skew = 0;
  fx_push_const(x->st, 0, 1, 0, 1.0f);
  assert_int_equal(fx_pull(x->st, 0, 1, &x->held), STORE_PULL_READY);
  fx_params(x->st, 0, x->before);
}

/* The same from the worker the layer stopped waiting for: a refused push
 * leaves it absent, as if it had not come back. (Step 0 left a buffer in
 * the pool: only the chunk map and the copy are allocated.) */
static void test_alloc_push_absent(void **unused) {
  (void)unused;
  push_ctx x = {.c = fx_config(3), .worker = 2, .version = 1, .absent = true};
  x.c.worker_timeout_s = 5;
  x.c.timeout_proceed = true;
  assert_int_equal(
      alloc_fail_loop(push_absent_setup, push_op, push_check, &x, LIMIT), 3);
}

/* ---- a rollback ---- */

typedef struct {
  server_config c;
  store *st;
  fx_waiter held;
  store_push staged;
  int rc;
} rollback_ctx;

/* rollback_setup: version 1, a pull sending it, and a staged push holding
 * the pool's free buffer, so the rollback must allocate one. */
static void rollback_setup(void *arg) {
  rollback_ctx *x = arg;
  char msg[256];
  x->st = fx_open(&x->c, 0.5, false);
  fx_push_const(x->st, 0, 0, 0, 1.0f);
  assert_int_equal(store_push_begin(store_layer_get(x->st, 0), 1, 0, 0, &x->staged,
                                    msg, sizeof msg),
                   FSPS_OK);
  assert_int_equal(fx_pull(x->st, 0, 1, &x->held), STORE_PULL_READY);
}

static void rollback_op(void *arg) {
  rollback_ctx *x = arg;
  x->rc = store_rollback_layer(store_layer_get(x->st, 0), NULL, 0);
}

static void rollback_check(void *arg, bool failed) {
  rollback_ctx *x = arg;
  float now[A_N];
  fx_params(x->st, 0, now);
  assert_int_equal(x->rc, failed ? FSPS_NOMEM : FSPS_OK);
  assert_int_equal(fx_version(x->st, 0), failed ? 1 : 0);
  assert_true(now[0] == (failed ? 0.5f : 1.0f));
  assert_true(x->held.params->data[0] == 0.5f);
  fx_release(&x->held);
  store_push_abort(&x->staged);
  store_destroy(x->st);
}

static void test_alloc_rollback(void **unused) {
  (void)unused;
  rollback_ctx x = {.c = fx_config(1)};
  assert_int_equal(
      alloc_fail_loop(rollback_setup, rollback_op, rollback_check, &x, LIMIT),
      2);
}

/* ---- a step-boundary snapshot ---- */

typedef struct {
  server_config c;
  store *st;
  int rc;
  fx_snap heard;
} snap_ctx;

static void snap_setup(void *arg) {
  snap_ctx *x = arg;
  x->st = fx_open(&x->c, 0.5, false);
  x->heard = (fx_snap){0};
  store_set_snapshots(x->st, 1, fx_on_snap, &x->heard);
}

static void snap_op(void *arg) {
  snap_ctx *x = arg;
  static const float g[A_N];
  fx_ack a;
  x->rc = fx_push(x->st, 0, 0, 0, g, &a);
}

/* The push fails and changes nothing, or it succeeds and only its
 * checkpoint is skipped (no copy, the hook not called), as when the
 * previous copy is still being written; the next one is taken. */
static void snap_check(void *arg, bool failed) {
  snap_ctx *x = arg;
  store_layer *L = store_layer_get(x->st, 0);
  assert_true(x->rc == FSPS_OK || failed);
  assert_int_equal(fx_version(x->st, 0), x->rc == FSPS_OK ? 1 : 0);
  if (x->rc == FSPS_OK) {
    const float *copy = store_snapshot_hold(L, 1);
    assert_int_equal(x->heard.calls, failed ? 0 : 1);
    assert_true(failed ? copy == NULL : copy != NULL);
    if (copy)
      store_snapshot_release(L);
    fx_step(x->st, 0, 1, 1);
    assert_int_equal(x->heard.version, 2);
    assert_non_null(store_snapshot_hold(L, 2));
    store_snapshot_release(L);
  }
  store_destroy(x->st);
}

static void test_alloc_snapshot(void **unused) {
  (void)unused;
  snap_ctx x = {.c = fx_config(1)};
  assert_int_equal(alloc_fail_loop(snap_setup, snap_op, snap_check, &x, LIMIT),
                   4);
}

int store_alloc_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alloc_create),
      cmocka_unit_test(test_alloc_init),
      cmocka_unit_test(test_alloc_push),
      cmocka_unit_test(test_alloc_push_absent),
      cmocka_unit_test(test_alloc_rollback),
      cmocka_unit_test(test_alloc_snapshot),
  };
  return cmocka_run_group_tests_name("store allocation failures", tests, NULL,
                                     NULL);
}
