/* test_store_values.c: test_store's group for values a client gives
 * (store_values_*): a client layer awaits them (pulls park, pushes are
 * refused), takes them whole and finite or not at all, acknowledges the
 * same values again, refuses others and a layer that began training, and
 * comes back to them, never to zeros, when rolled back to version 0; each
 * allocation failing in turn changes nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_fail.h"
#include "store_fixture.h"

#define G_N 20 /* layer 0 "given": a client layer of one chunk */

/* The model: layer 0 "given" (client, G_N), layer 1 "drawn" (constant
 * 0.5, 8 elements), layer 2 "bigc" (client, BIG_N: two chunks). */
static store *open_store(uint32_t W) {
  server_config c = fx_config(W);
  store *st = store_create(&c);
  shard_spec *s = shard_spec_create(3);
  uint64_t g[] = {4, 5}, d[] = {8}, b[] = {BIG_N};
  shard_spec_add_layer(s, "given");
  shard_spec_add_tensor(s, "w", 2, g, SHARD_INIT_CLIENT, 0, 0);
  shard_spec_add_layer(s, "drawn");
  shard_spec_add_tensor(s, "w", 1, d, SHARD_INIT_CONSTANT, 0.5, 0);
  shard_spec_add_layer(s, "bigc");
  shard_spec_add_tensor(s, "w", 1, b, SHARD_INIT_CLIENT, 0, 0);
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_SGD, &o);
  o.lr = 0.5;
  shard_spec_set_optim(s, &o);
  char msg[512] = "";
  bool created;
  assert_int_equal(store_init(st, s, "", 0, &created, msg, sizeof msg),
                   FSPS_OK);
  return st;
}

static float g_values[BIG_N];

/* ramp fills g_values with distinct finite values starting at base. */
static const float *ramp(float base) {
  for (size_t i = 0; i < BIG_N; i++)
    g_values[i] = base + 0.001f * (float)i;
  return g_values;
}

/* send stages v (layer l's slice) chunk by chunk, as values.c does, and
 * commits it; the first `chunks` chunks only when chunks is smaller.
 * Returns the first failure; msg says why. */
static int send(store *st, uint32_t l, const float *v, uint64_t chunks,
                uint64_t epoch, bool *dup, char *msg) {
  store_layer *L = store_layer_get(st, l);
  store_layer_info in;
  store_info(L, &in);
  store_push p;
  *dup = false;
  int rc = store_values_begin(L, epoch, &p, msg, 512);
  for (uint64_t i = 0;
       rc == FSPS_OK && i < shard_num_chunks(in.count) && i < chunks; i++) {
    uint64_t o, len;
    shard_chunk(in.count, i, &o, &len);
    float *dst = store_push_chunk(&p, in.offset + o, len, msg, 512);
    if (dst == NULL)
      rc = FSPS_INVALID_ARGUMENT;
    else
      memcpy(dst, v + o, len * sizeof *v);
    if (dst != NULL && store_any_nonfinite(dst, len))
      rc = store_values_check(&p, dst, len, msg, 512);
  }
  if (rc == FSPS_OK)
    return store_values_commit(&p, dup, msg, 512);
  store_push_abort(&p);
  return rc;
}

static int give(store *st, uint32_t l, const float *v, bool *dup, char *msg) {
  return send(st, l, v, UINT64_MAX, 0, dup, msg);
}

static bool awaiting(store *st, uint32_t l) {
  store_layer_info in;
  store_info(store_layer_get(st, l), &in);
  return in.awaiting;
}

/* assert_params checks layer l's parameters against want[0..n), bits. */
static void assert_params(store *st, uint32_t l, const float *want,
                          uint64_t n) {
  float *have = malloc(n * sizeof *have);
  fx_params(st, l, have);
  assert_memory_equal(have, want, n * sizeof *have);
  free(have);
}

static void test_values_awaited_then_taken(void **unused) {
  (void)unused;
  store *st = open_store(2);
  uint32_t first = 99;
  assert_int_equal(store_awaiting(st, &first), 2);
  assert_int_equal(first, 0);
  assert_true(awaiting(st, 0) && !awaiting(st, 1) && awaiting(st, 2));
  fx_waiter w, w1;
  assert_int_equal(fx_pull(st, 0, 0, &w), STORE_PULL_PARKED);
  assert_int_equal(fx_pull(st, 0, 1, &w1), STORE_PULL_PARKED);
  fx_ack a;
  float g[G_N] = {0};
  assert_int_equal(fx_push(st, 0, 0, 0, g, &a), FSPS_FAILED_PRECONDITION);
  assert_int_equal(a.calls, 0);
  char msg[512];
  bool dup = true;
  const float *v = ramp(1.0f);
  assert_int_equal(give(st, 0, v, &dup, msg), FSPS_OK);
  assert_false(dup);
  assert_int_equal(w.woken, 1); /* the parked pull is answered, at 0 */
  assert_int_equal(w.version, 0);
  assert_memory_equal(w.params->data, v, G_N * sizeof(float));
  fx_release(&w);
  assert_int_equal(w1.woken, 0); /* version 1 is still to come */
  assert_true(store_unpark(store_layer_get(st, 0), &w1.w));
  assert_false(awaiting(st, 0));
  assert_int_equal(store_awaiting(st, &first), 1);
  assert_int_equal(first, 2);
  assert_int_equal(fx_pull(st, 0, 0, &w), STORE_PULL_READY);
  fx_release(&w);
  assert_int_equal(give(st, 2, ramp(-3.0f), &dup, msg), FSPS_OK);
  assert_int_equal(store_awaiting(st, NULL), 0);
  assert_params(st, 2, g_values, BIG_N);
  fx_step(st, 0, 0, 2); /* trains like any layer now */
  assert_int_equal(fx_version(st, 0), 1);
  store_destroy(st);
}

/* refused asserts that a send of v failed with code and a message holding
 * frag, and that layer l still awaits its values. */
static void refused(store *st, uint32_t l, const float *v, uint64_t chunks,
                    uint64_t epoch, int code, const char *frag) {
  char msg[512] = "";
  bool dup;
  int rc = send(st, l, v, chunks, epoch, &dup, msg);
  if (rc != code || strstr(msg, frag) == NULL)
    fail_msg("rc %d (%s), expected %d with \"%s\"", rc, msg, code, frag);
  assert_true(l != 0 || awaiting(st, 0));
}

static void test_values_refusals_change_nothing(void **unused) {
  (void)unused;
  store *st = open_store(2);
  float *v = (float *)ramp(2.0f);
  refused(st, 1, v, UINT64_MAX, 0, FSPS_FAILED_PRECONDITION,
          "layer 'drawn' is initialised by the servers (init constant)");
  v[7] = NAN;
  refused(st, 0, v, UINT64_MAX, 0, FSPS_INVALID_ARGUMENT,
          "values of layer 'given' hold NaN at element 7");
  v[7] = -INFINITY;
  refused(st, 0, v, UINT64_MAX, 0, FSPS_INVALID_ARGUMENT, "Inf at element 7");
  v[7] = 1.0f;
  refused(st, 2, v, 1, 0, FSPS_INVALID_ARGUMENT, "ended after 1 of 2 chunks");
  refused(st, 0, v, UINT64_MAX, 5, FSPS_FAILED_PRECONDITION, "epoch");
  assert_int_equal(store_awaiting(st, NULL), 2);
  float zeros[G_N] = {0};
  assert_params(st, 0, zeros, G_N);
  /* A chunk of the wrong length or offset: store_push_chunk refuses it. */
  store_push p;
  char msg[512];
  store_layer *L = store_layer_get(st, 0);
  assert_int_equal(store_values_begin(L, 0, &p, msg, sizeof msg), FSPS_OK);
  assert_null(store_push_chunk(&p, 0, G_N - 1, msg, sizeof msg));
  assert_null(store_push_chunk(&p, 1, G_N - 1, msg, sizeof msg));
  assert_null(store_push_chunk(&p, G_N, 1, msg, sizeof msg));
  store_push_abort(&p);
  assert_true(awaiting(st, 0));
  store_destroy(st);
}

static void test_values_given_once(void **unused) {
  (void)unused;
  store *st = open_store(2);
  char msg[512];
  bool dup;
  float v[G_N];
  memcpy(v, ramp(1.0f), sizeof v);
  assert_int_equal(give(st, 0, v, &dup, msg), FSPS_OK);
  assert_int_equal(give(st, 0, v, &dup, msg), FSPS_OK);
  assert_true(dup); /* a retry, or another worker giving the same */
  float other[G_N];
  memcpy(other, v, sizeof v);
  other[3] = v[3] + 1.0f;
  assert_int_equal(give(st, 0, other, &dup, msg), FSPS_ALREADY_EXISTS);
  assert_non_null(strstr(msg, "'given' holds other values already (element 3"));
  assert_params(st, 0, v, G_N);
  fx_push_const(st, 0, 0, 0, 1.0f); /* counted, the step not complete */
  assert_int_equal(give(st, 0, v, &dup, msg), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(msg, "a push of step 0 counted"));
  assert_params(st, 0, v, G_N);
  fx_push_const(st, 0, 0, 1, 1.0f); /* version 1 */
  assert_int_equal(give(st, 0, v, &dup, msg), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(msg, "'given' has begun training (version 1)"));
  store_destroy(st);
}

static void test_values_come_back_on_rollback(void **unused) {
  (void)unused;
  store *st = open_store(1);
  char msg[512];
  bool dup;
  float v[G_N];
  memcpy(v, ramp(4.0f), sizeof v);
  store_layer *L = store_layer_get(st, 0);
  assert_false(store_initial_held(L)); /* awaiting: nothing to go back to */
  assert_int_equal(give(st, 0, v, &dup, msg), FSPS_OK);
  assert_true(store_initial_held(L));
  fx_step(st, 0, 0, 1);
  fx_step(st, 0, 1, 1);
  float now[G_N];
  fx_params(st, 0, now);
  assert_true(now[0] != v[0]);
  assert_int_equal(store_rollback_layer(L, NULL, 0), FSPS_OK);
  assert_int_equal(fx_version(st, 0), 0);
  assert_params(st, 0, v, G_N); /* the given values, not zeros */
  store_destroy(st);
}

/* A server restored from a checkpoint of a later version holds the
 * layer's values but no copy of those it was given: a rollback to the
 * initial values is refused and changes nothing; one to a checkpoint of
 * version 0 brings the copy back. */
static void test_values_restored(void **unused) {
  (void)unused;
  store *st = open_store(1);
  store_layer *L = store_layer_get(st, 0);
  float data[G_N];
  memcpy(data, ramp(5.0f), sizeof data);
  store_restore_layer(L, data, 3);
  assert_false(awaiting(st, 0));
  assert_false(store_initial_held(L));
  assert_int_equal(store_rollback_layer(L, NULL, 0), FSPS_FAILED_PRECONDITION);
  assert_int_equal(fx_version(st, 0), 3);
  assert_params(st, 0, data, G_N);
  float v0[G_N];
  memcpy(v0, ramp(6.0f), sizeof v0);
  assert_int_equal(store_rollback_layer(L, v0, 0), FSPS_OK);
  assert_true(store_initial_held(L));
  fx_step(st, 0, 0, 1);
  assert_int_equal(store_rollback_layer(L, NULL, 0), FSPS_OK);
  assert_params(st, 0, v0, G_N);
  store_destroy(st);
}

/* Each allocation of giving values fails in turn: refused with
 * RESOURCE_EXHAUSTED, the layer still awaits them; then they are taken. */
typedef struct {
  store *st;
  int rc;
  char msg[512];
} alloc_ctx;

static void alloc_setup(void *arg) {
  alloc_ctx *x = arg;
  x->st = open_store(1);
}

static void alloc_op(void *arg) {
  alloc_ctx *x = arg;
  bool dup;
  x->rc = give(x->st, 0, ramp(1.0f), &dup, x->msg);
}

static void alloc_check(void *arg, bool failed) {
  alloc_ctx *x = arg;
  assert_int_equal(x->rc, failed ? FSPS_RESOURCE_EXHAUSTED : FSPS_OK);
  assert_int_equal(awaiting(x->st, 0), failed);
  if (!failed)
    assert_params(x->st, 0, ramp(1.0f), G_N);
  store_destroy(x->st);
}

static void test_values_alloc_failures(void **unused) {
  (void)unused;
  alloc_ctx x;
  assert_true(alloc_fail_loop(alloc_setup, alloc_op, alloc_check, &x, 100) > 0);
}

int store_values_tests(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_awaited_then_taken),
      cmocka_unit_test(test_values_refusals_change_nothing),
      cmocka_unit_test(test_values_given_once),
      cmocka_unit_test(test_values_come_back_on_rollback),
      cmocka_unit_test(test_values_restored),
      cmocka_unit_test(test_values_alloc_failures),
  };
  return cmocka_run_group_tests_name("store_values", tests, NULL, NULL);
}
