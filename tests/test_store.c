/* test_store.c: unit tests of server/store.h without a network — declaring
 * a model, pushes from W workers, the version barrier, deterministic sums,
 * rollback, snapshots and --worker-timeout on a fake clock (values a client
 * gives: test_store_values.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_fixture.h"

/* ---- declaring the model ---- */

static void test_init(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  store *st = store_create(&c);
  assert_false(store_ready(st));
  assert_null(store_layer_get(st, 0));
  assert_int_equal(store_num_layers(st), 0);
  char msg[512] = "";
  bool created = false;
  shard_spec *s = fx_model(0.5, 0, false);
  uint64_t h = shard_spec_hash(s);
  assert_int_equal(store_init(st, s, "xy", 2, &created, msg, sizeof msg),
                   FSPS_OK);
  assert_true(created);
  assert_true(store_ready(st));
  assert_int_equal(store_hash(st), h);
  assert_int_equal(store_num_layers(st), 2);
  assert_int_equal(store_nonempty_layers(st), 2);
  size_t len;
  assert_memory_equal(store_blob(st, &len), "xy", 2);
  assert_int_equal(len, 2);
  /* The same spec again: OK, not created. */
  assert_int_equal(store_init(st, fx_model(0.5, 0, false), "xy", 2, &created,
                              msg, sizeof msg),
                   FSPS_OK);
  assert_false(created);
  /* Another spec: refused, naming both hashes. */
  assert_int_equal(store_init(st, fx_model(0.25, 0, false), "z", 1, &created,
                              msg, sizeof msg),
                   FSPS_FAILED_PRECONDITION);
  char hex[17];
  shard_spec_hash_hex(h, hex);
  assert_non_null(strstr(msg, hex));
  assert_int_equal(store_hash(st), h);
  store_destroy(st);
}

static void test_init_invalid(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  store *st = store_create(&c);
  shard_spec *s = shard_spec_create(1);
  shard_spec_add_layer(s, "empty"); /* a layer without tensors */
  char msg[512] = "";
  bool created = true;
  assert_int_equal(store_init(st, s, "", 0, &created, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_true(msg[0] != '\0');
  assert_false(store_ready(st));
  store_destroy(st);
}

static void test_layers(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  store *st = fx_open(&c, 0.5, false);
  store_layer_info in;
  store_info(store_layer_get(st, 1), &in);
  assert_string_equal(in.name, "b");
  assert_int_equal(in.n, B_N);
  assert_int_equal(in.offset, 0);
  assert_int_equal(in.count, B_N);
  assert_int_equal(in.version, 0);
  assert_null(store_layer_get(st, 2));
  /* The initial values are the spec's, whatever the slicing. */
  float got[A_N], want[B_N];
  fx_params(st, 1, got);
  shard_spec *s = fx_model(0.5, 0, false);
  assert_int_equal(shard_init_fill(s, 1, 0, B_N, want), FSPS_OK);
  shard_spec_destroy(s);
  assert_memory_equal(got, want, sizeof want);
  fx_params(st, 0, got); /* A_N > B_N */
  for (int i = 0; i < A_N; i++)
    assert_true(got[i] == 1.0f);
  store_destroy(st);
}

/* A server slicing a layer: server 1 of 2 holds [16, 20) of layer "a". */
static void test_slice(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  c.num_servers = 2;
  c.index = 1;
  store *st = fx_open(&c, 0.5, false);
  store_layer_info in;
  store_info(store_layer_get(st, 0), &in);
  assert_int_equal(in.offset, 16);
  assert_int_equal(in.count, 4);
  store_info(store_layer_get(st, 1), &in); /* 15 elements: all on server 0 */
  assert_int_equal(in.count, 0);
  assert_int_equal(store_nonempty_layers(st), 1);
  store_push p;
  char msg[256];
  assert_int_equal(
      store_push_begin(store_layer_get(st, 1), 0, 0, 0, &p, msg, sizeof msg),
      FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "holds no elements"));
  store_destroy(st);
}

/* ---- pushes and the version barrier ---- */

/* Three workers: the version moves only with the third push, and the
 * parameters are 1 - lr * mean(g) element by element. */
static void test_bsp_step(void **unused) {
  (void)unused;
  server_config c = fx_config(3);
  store *st = fx_open(&c, 0.5, false);
  float g[3][A_N];
  for (int w = 0; w < 3; w++)
    for (int i = 0; i < A_N; i++)
      g[w][i] = (float)(w + 1) * 0.5f + (float)i * 0.25f;
  fx_ack a;
  bool pushed[3], absent[3];
  for (uint32_t w = 0; w < 2; w++) {
    assert_int_equal(fx_push(st, 0, 0, w, g[w], &a), FSPS_OK);
    assert_false(a.duplicate);
    assert_false(a.applied);
    assert_int_equal(a.version, 0);
    assert_int_equal(fx_version(st, 0), 0);
  }
  assert_int_equal(store_pushed(store_layer_get(st, 0), pushed, absent), 0);
  assert_true(pushed[0] && pushed[1] && !pushed[2]);
  assert_false(absent[0] || absent[1] || absent[2]);
  assert_int_equal(fx_push(st, 0, 0, 2, g[2], &a), FSPS_OK);
  assert_true(a.applied);
  assert_int_equal(a.version, 1);
  assert_int_equal(fx_version(st, 0), 1);
  assert_int_equal(fx_version(st, 1), 0); /* layers advance on their own */
  float got[A_N];
  fx_params(st, 0, got);
  for (int i = 0; i < A_N; i++) {
    /* mean = (3 + 0.75 i) / 3 = 1 + 0.25 i */
    double want = 1.0 - 0.5 * (1.0 + 0.25 * i);
    assert_true(fabs(got[i] - want) <= 1e-6);
  }
  store_pushed(store_layer_get(st, 0), pushed, absent);
  assert_false(pushed[0] || pushed[1] || pushed[2]);
  store_destroy(st);
}

/* A retried push is acknowledged as a duplicate and counted once, both
 * while its step collects and after the step was applied. */
static void test_duplicates(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  store *st = fx_open(&c, 0.5, false);
  fx_push_const(st, 0, 0, 0, 1.0f);
  fx_ack a = fx_push_const(st, 0, 0, 0, 100.0f);
  assert_true(a.duplicate);
  assert_false(a.applied);
  assert_int_equal(fx_version(st, 0), 0);
  a = fx_push_const(st, 0, 0, 1, 3.0f);
  assert_false(a.duplicate);
  assert_true(a.applied);
  a = fx_push_const(st, 0, 0, 1, 100.0f); /* step 0 is past */
  assert_true(a.duplicate);
  assert_int_equal(a.version, 1);
  float got[A_N];
  fx_params(st, 0, got);
  for (int i = 0; i < A_N; i++)
    assert_true(got[i] == 1.0f - 0.5f * 2.0f); /* mean of 1 and 3 */
  store_destroy(st);
}

/* assert_untouched checks layer 2 ("big") is still at version 0 with its
 * zeros and no push counted. */
static void assert_untouched(store *st) {
  static float got[BIG_N];
  bool pushed[2], absent[2];
  assert_int_equal(fx_version(st, 2), 0);
  store_pushed(store_layer_get(st, 2), pushed, absent);
  assert_false(pushed[0] || pushed[1]);
  fx_params(st, 2, got);
  for (size_t i = 0; i < BIG_N; i++)
    assert_true(got[i] == 0.0f);
}

/* Wrong worker, step or chunk is refused with a reason and changes
 * nothing. */
static void test_refusals(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  store *st = fx_open(&c, 0.5, true);
  store_layer *L = store_layer_get(st, 2);
  store_push p;
  char msg[512];
  assert_int_equal(store_push_begin(L, 0, 2, 0, &p, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "worker 2 is out of range"));
  assert_int_equal(store_push_begin(L, UINT64_MAX, 0, 0, &p, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(store_push_begin(L, 1, 0, 0, &p, msg, sizeof msg),
                   FSPS_FAILED_PRECONDITION); /* ahead of version 0 */
  assert_int_equal(store_push_begin(L, 0, 1, 0, &p, msg, sizeof msg), FSPS_OK);
  uint64_t n0 = SHARD_CHUNK_ELEMS;
  assert_null(store_push_chunk(&p, BIG_N, 16, msg, sizeof msg));
  assert_non_null(strstr(msg, "outside this server's slice"));
  assert_null(store_push_chunk(&p, 0, n0 - 1, msg, sizeof msg));
  assert_non_null(strstr(msg, "bad chunk"));
  assert_null(store_push_chunk(&p, 16, 16, msg, sizeof msg));
  assert_non_null(store_push_chunk(&p, n0, 16, msg, sizeof msg));
  assert_null(store_push_chunk(&p, n0, 16, msg, sizeof msg));
  assert_non_null(strstr(msg, "sent twice"));
  fx_ack a = {0};
  assert_int_equal(store_push_commit(&p, fx_on_ack, &a, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT); /* chunk 0 never came */
  assert_non_null(strstr(msg, "after 1 of 2 chunks"));
  assert_int_equal(a.calls, 0);
  store_push_abort(&p);
  assert_untouched(st);
  store_destroy(st);
}

/* NaN and Inf: refused under --nan-policy reject (nothing counted), zeroed
 * under skip. */
static void test_nonfinite(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  store *st = fx_open(&c, 0.5, false);
  float g[A_N] = {0};
  g[3] = NAN;
  fx_ack a;
  assert_int_equal(fx_push(st, 0, 0, 0, g, &a), FSPS_INVALID_ARGUMENT);
  assert_int_equal(a.calls, 0);
  assert_int_equal(fx_version(st, 0), 0);
  store_destroy(st);
  c.nan_skip = true;
  st = fx_open(&c, 0.5, false);
  g[3] = INFINITY;
  g[4] = 2.0f;
  assert_int_equal(fx_push(st, 0, 0, 0, g, &a), FSPS_OK);
  assert_true(a.applied);
  float got[A_N];
  fx_params(st, 0, got);
  assert_true(got[3] == 1.0f);
  assert_true(got[4] == 0.0f);
  store_destroy(st);
}

/* --deterministic sums in worker order whatever the arrival order: with
 * g0 = 2^25, g1 = -2^25, g2 = 1, (g0 + g1) + g2 = 1 but (g2 + g0) + g1 = 0
 * in float, which is what arriving 2, 0, 1 gives without it. */
static void test_deterministic(void **unused) {
  (void)unused;
  const float g[3] = {33554432.0f, -33554432.0f, 1.0f};
  const uint32_t order[3] = {2, 0, 1};
  for (int det = 0; det < 2; det++) {
    server_config c = fx_config(4);
    c.deterministic = det;
    store *st = fx_open(&c, 0.5, false);
    for (int k = 0; k < 3; k++)
      fx_push_const(st, 0, 0, order[k], g[order[k]]);
    fx_ack a = fx_push_const(st, 0, 0, 3, 0.0f);
    assert_true(a.applied);
    float got[A_N];
    fx_params(st, 0, got);
    float sum = det ? 1.0f : 0.0f; /* mean = sum / 4 */
    for (int i = 0; i < A_N; i++)
      assert_true(got[i] == 1.0f - 0.5f * (sum * 0.25f));
    store_destroy(st);
  }
}

/* SGD with momentum 0.5 over two steps, and its state in the copy a
 * checkpoint takes: buf1 = g1, p1 = p0 - lr g1; buf2 = 0.5 buf1 + g2,
 * p2 = p1 - lr buf2. */
static void test_momentum(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  store *st = store_create(&c);
  char msg[256];
  bool created;
  assert_int_equal(store_init(st, fx_model(0.5, 0.5, false), "", 0, &created,
                              msg, sizeof msg),
                   FSPS_OK);
  store_layer *L = store_layer_get(st, 0);
  assert_int_equal(store_layer_floats(L), 2 * A_N);
  fx_push_const(st, 0, 0, 0, 2.0f);
  fx_push_const(st, 0, 1, 0, 4.0f);
  float all[2 * A_N];
  assert_int_equal(store_copy_now(L, all), 2);
  for (int i = 0; i < A_N; i++) {
    assert_true(all[i] == 1.0f - 0.5f * 2.0f - 0.5f * 5.0f); /* -2.5 */
    assert_true(all[A_N + i] == 5.0f);
  }
  store_destroy(st);
}

/* SSP with staleness 1: a worker may push step 1 before step 0 is
 * complete; both apply in order once the others catch up. */
static void test_ssp(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  c.mode = MODE_SSP;
  c.staleness = 1;
  store *st = fx_open(&c, 0.5, false);
  fx_push_const(st, 0, 0, 0, 1.0f);
  fx_push_const(st, 0, 1, 0, 1.0f);
  store_push p;
  char msg[256];
  assert_int_equal(
      store_push_begin(store_layer_get(st, 0), 2, 0, 0, &p, msg, sizeof msg),
      FSPS_FAILED_PRECONDITION);
  fx_push_const(st, 0, 1, 1, 1.0f); /* step 1 complete, step 0 not yet */
  assert_int_equal(fx_version(st, 0), 0);
  fx_ack a = fx_push_const(st, 0, 0, 1, 1.0f);
  assert_true(a.applied);
  assert_int_equal(a.version, 2); /* the ack tells both steps */
  assert_int_equal(fx_version(st, 0), 2);
  store_destroy(st);
}

/* ASP applies every push on arrival, scaled by 1/W; a worker's step it
 * already pushed is a duplicate. */
static void test_asp(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  c.mode = MODE_ASP;
  store *st = fx_open(&c, 0.5, false);
  fx_ack a = fx_push_const(st, 0, 5, 1, 2.0f);
  assert_true(a.applied);
  assert_int_equal(a.version, 1);
  a = fx_push_const(st, 0, 3, 1, 2.0f);
  assert_true(a.duplicate);
  fx_push_const(st, 0, 0, 0, 2.0f);
  assert_int_equal(fx_version(st, 0), 2);
  float got[A_N];
  fx_params(st, 0, got);
  assert_true(got[0] == 1.0f - 2 * 0.5f * (2.0f * 0.5f));
  store_destroy(st);
}

/* ---- pulls ---- */

static void test_pull(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  store *st = fx_open(&c, 0.5, false);
  fx_waiter now, later, gone, far;
  assert_int_equal(fx_pull(st, 0, 0, &now), STORE_PULL_READY);
  assert_int_equal(now.version, 0);
  assert_true(now.params->data[0] == 1.0f);
  assert_int_equal(fx_pull(st, 0, 1, &later), STORE_PULL_PARKED);
  assert_int_equal(fx_pull(st, 0, 1, &gone), STORE_PULL_PARKED);
  assert_true(store_unpark(store_layer_get(st, 0), &gone.w));
  assert_false(store_unpark(store_layer_get(st, 0), &gone.w));
  assert_int_equal(fx_pull(st, 0, 2, &far), STORE_PULL_FAILED);
  assert_int_equal(far.w.failed_code, FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(far.w.failed, "version 2"));
  fx_push_const(st, 0, 0, 0, 1.0f);
  assert_int_equal(later.woken, 0);
  fx_push_const(st, 0, 0, 1, 1.0f);
  assert_int_equal(later.woken, 1);
  assert_int_equal(later.version, 1);
  assert_true(later.params->data[0] == 0.5f);
  assert_int_equal(gone.woken, 0);
  /* The first pull still sends version 0: the update went elsewhere. */
  assert_true(now.params->data[0] == 1.0f);
  fx_release(&now);
  fx_release(&later);
  store_destroy(st);
}

/* ---- rollback ---- */

static void test_rollback(void **unused) {
  (void)unused;
  server_config c = fx_config(2);
  store *st = fx_open(&c, 0.5, false);
  store_layer *L = store_layer_get(st, 0);
  fx_push_const(st, 0, 0, 0, 1.0f);
  fx_push_const(st, 0, 0, 1, 1.0f);
  float v1[A_N];
  assert_int_equal(store_copy_now(L, v1), 1);
  fx_push_const(st, 0, 1, 0, 1.0f);
  fx_push_const(st, 0, 1, 1, 1.0f);
  fx_push_const(st, 0, 2, 0, 1.0f); /* pending when the rollback comes */
  fx_waiter held, next, past;
  assert_int_equal(fx_pull(st, 0, 2, &held), STORE_PULL_READY);
  assert_int_equal(fx_pull(st, 0, 3, &past), STORE_PULL_PARKED);
  assert_int_equal(store_rollback_layer(L, v1, 1), FSPS_OK);
  assert_int_equal(fx_version(st, 0), 1);
  assert_int_equal(past.woken, 1); /* 3 > 1 + 1: abandoned */
  assert_null(past.params);
  assert_int_equal(past.w.failed_code, FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(past.w.failed, "rolled back to version 1"));
  float got[A_N];
  fx_params(st, 0, got);
  assert_memory_equal(got, v1, sizeof v1);
  assert_true(held.params->data[0] == 0.0f); /* its pull's copy stays */
  fx_release(&held);
  bool pushed[2], absent[2];
  assert_int_equal(store_pushed(L, pushed, absent), 1);
  assert_false(pushed[0] || pushed[1]); /* the pending push was dropped */
  assert_int_equal(fx_pull(st, 0, 2, &next), STORE_PULL_PARKED);
  fx_push_const(st, 0, 1, 0, 1.0f);
  fx_push_const(st, 0, 1, 1, 1.0f);
  assert_int_equal(next.version, 2);
  fx_release(&next);
  /* Back to the initial values. */
  assert_int_equal(store_rollback_layer(L, NULL, 0), FSPS_OK);
  fx_params(st, 0, got);
  assert_true(got[0] == 1.0f && got[A_N - 1] == 1.0f);
  assert_int_equal(fx_version(st, 0), 0);
  store_destroy(st);
}

/* ---- snapshots ---- */

static void test_snapshots(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  store *st = fx_open(&c, 0.5, false);
  fx_snap r = {0};
  store_set_snapshots(st, 2, fx_on_snap, &r);
  store_layer *L = store_layer_get(st, 0);
  fx_step(st, 0, 0, 1);
  assert_int_equal(r.calls, 0);
  fx_step(st, 0, 1, 1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.layer, 0);
  assert_int_equal(r.version, 2);
  assert_null(store_snapshot_hold(L, 1));
  const float *snap = store_snapshot_hold(L, 2);
  assert_non_null(snap);
  assert_true(snap[0] == 0.0f); /* 1 - 0.5 - 0.5 */
  /* While held, version 4's copy is skipped and 2's stays whole. */
  fx_step(st, 0, 2, 1);
  fx_step(st, 0, 3, 1);
  assert_int_equal(r.calls, 1);
  assert_true(snap[0] == 0.0f);
  assert_null(store_snapshot_hold(L, 4));
  store_snapshot_release(L);
  fx_step(st, 0, 4, 1);
  fx_step(st, 0, 5, 1);
  assert_int_equal(r.calls, 2);
  assert_int_equal(r.version, 6);
  snap = store_snapshot_hold(L, 6);
  assert_non_null(snap);
  assert_true(snap[0] == -2.0f);
  store_snapshot_release(L);
  store_set_snapshots(st, 0, NULL, NULL);
  fx_step(st, 0, 6, 1);
  fx_step(st, 0, 7, 1);
  assert_int_equal(r.calls, 2);
  store_destroy(st);
}

/* store_restore_layer sets parameters and version before serving. */
static void test_restore(void **unused) {
  (void)unused;
  server_config c = fx_config(1);
  store *st = fx_open(&c, 0.5, false);
  store_layer *L = store_layer_get(st, 0);
  float data[A_N];
  for (int i = 0; i < A_N; i++)
    data[i] = (float)i;
  store_restore_layer(L, data, 41);
  float got[A_N];
  assert_int_equal(store_copy_now(L, got), 41);
  assert_memory_equal(got, data, sizeof data);
  fx_ack a = fx_push_const(st, 0, 41, 0, 2.0f);
  assert_int_equal(a.version, 42);
  store_destroy(st);
}

/* ---- --worker-timeout ---- */

/* Under fail: a step that waited too long fails its parked pulls and the
 * ones that come later, naming the missing worker; its push still
 * completes the step. */
static void test_expire_fail(void **unused) {
  (void)unused;
  server_config c = fx_config(3);
  c.worker_timeout_s = 5;
  store *st = fx_open(&c, 0.5, false);
  fx_skew = 0;
  fx_push_const(st, 0, 0, 0, 1.0f);
  fx_push_const(st, 0, 0, 2, 1.0f);
  fx_waiter w, late;
  assert_int_equal(fx_pull(st, 0, 1, &w), STORE_PULL_PARKED);
  fx_skew = 4;
  store_expire(st);
  assert_int_equal(w.woken, 0);
  fx_skew = 6;
  store_expire(st);
  assert_int_equal(w.woken, 1);
  assert_null(w.params);
  assert_int_equal(w.w.failed_code, FSPS_ABORTED);
  assert_non_null(strstr(w.w.failed, "worker(s) 1 did not push"));
  assert_int_equal(fx_pull(st, 0, 1, &late), STORE_PULL_FAILED);
  assert_int_equal(late.w.failed_code, FSPS_ABORTED);
  assert_int_equal(fx_version(st, 0), 0);
  assert_int_equal(fx_version(st, 1), 0); /* no push there: no timeout */
  fx_push_const(st, 0, 0, 1, 1.0f);
  assert_int_equal(fx_version(st, 0), 1);
  assert_int_equal(fx_pull(st, 0, 1, &late), STORE_PULL_READY);
  fx_release(&late);
  fx_skew = 0;
  store_destroy(st);
}

/* Under proceed: the step is applied over the workers that pushed, and the
 * next steps do not wait for the missing one until it pushes again. */
static void test_expire_proceed(void **unused) {
  (void)unused;
  server_config c = fx_config(3);
  c.worker_timeout_s = 5;
  c.timeout_proceed = true;
  store *st = fx_open(&c, 0.5, false);
  fx_skew = 0;
  fx_push_const(st, 0, 0, 0, 1.0f);
  fx_push_const(st, 0, 0, 1, 3.0f);
  fx_waiter w;
  assert_int_equal(fx_pull(st, 0, 1, &w), STORE_PULL_PARKED);
  fx_skew = 10;
  store_expire(st);
  assert_int_equal(w.woken, 1);
  assert_int_equal(w.version, 1);
  assert_true(w.params->data[0] == 1.0f - 0.5f * 2.0f); /* mean of 1, 3 */
  fx_release(&w);
  bool pushed[3], absent[3];
  store_pushed(store_layer_get(st, 0), pushed, absent);
  assert_true(absent[2] && !absent[0] && !absent[1]);
  fx_ack a = fx_push_const(st, 0, 1, 0, 1.0f);
  assert_false(a.applied);
  a = fx_push_const(st, 0, 1, 1, 1.0f);
  assert_true(a.applied);           /* without worker 2 */
  fx_push_const(st, 0, 2, 2, 1.0f); /* back: waited for again */
  store_pushed(store_layer_get(st, 0), pushed, absent);
  assert_false(absent[2]);
  fx_push_const(st, 0, 2, 0, 1.0f);
  a = fx_push_const(st, 0, 2, 1, 1.0f);
  assert_true(a.applied);
  assert_int_equal(fx_version(st, 0), 3);
  fx_skew = 0;
  store_destroy(st);
}

int main(void) {
  server_log_set(LOG_ERROR, "test_store");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init),
      cmocka_unit_test(test_init_invalid),
      cmocka_unit_test(test_layers),
      cmocka_unit_test(test_slice),
      cmocka_unit_test(test_bsp_step),
      cmocka_unit_test(test_duplicates),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_nonfinite),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_momentum),
      cmocka_unit_test(test_ssp),
      cmocka_unit_test(test_asp),
      cmocka_unit_test(test_pull),
      cmocka_unit_test(test_rollback),
      cmocka_unit_test(test_snapshots),
      cmocka_unit_test(test_restore),
      cmocka_unit_test(test_expire_fail),
      cmocka_unit_test(test_expire_proceed),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  return failed + store_values_tests() + store_alloc_tests() +
         store_page_tests();
}
