/* test_serve.c: unit tests of serve/ — snapshots, the slot that swaps them,
 * and predictions checked against a hand computation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "snapshot.h"

static void rejects_bad_widths(void **state) {
  (void)state;
  uint32_t zero[] = {3, 0, 2}, ok[] = {3, 2};
  assert_null(serve_snapshot_new(zero, 3, 0));
  assert_null(serve_snapshot_new(ok, 1, 0));
  assert_null(serve_snapshot_new(NULL, 2, 0));
  uint32_t huge[] = {3, MLP_MAX_WIDTH + 1};
  assert_null(serve_snapshot_new(huge, 2, 0));
}

/* 3 inputs -> 2 classes, one layer: logits = W x + b by hand. */
static void predicts_softmax_of_logits(void **state) {
  (void)state;
  uint32_t w[] = {3, 2};
  serve_snapshot *s = serve_snapshot_new(w, 2, 7);
  assert_non_null(s);
  assert_int_equal(serve_snapshot_layer_size(s, 0), 8);
  const float p[] = {1, 0, -1, 0.5f, 0.5f, 0.5f, 0.25f, -0.25f};
  for (int i = 0; i < 8; i++)
    s->params[0][i] = p[i];
  mlp *m = model_mlp_create(w, 2, 4);
  assert_non_null(m);
  const float x[] = {1, 2, 3, -1, 0, 4};
  float probs[4];
  uint32_t cls[2];
  assert_int_equal(serve_snapshot_predict(s, m, x, 2, probs, cls), 0);
  for (int r = 0; r < 2; r++) {
    const float *xr = x + 3 * r;
    double z0 = xr[0] - xr[2] + 0.25, z1 = 0.5 * (xr[0] + xr[1] + xr[2]) - 0.25;
    double p0 = 1 / (1 + exp(z1 - z0));
    assert_float_equal(probs[2 * r], p0, 1e-6);
    assert_float_equal(probs[2 * r + 1], 1 - p0, 1e-6);
    assert_int_equal(cls[r], z0 >= z1 ? 0u : 1u);
  }
  uint32_t other[] = {3, 3};
  mlp *m2 = model_mlp_create(other, 2, 4);
  assert_int_equal(serve_snapshot_predict(s, m2, x, 2, probs, NULL), -1);
  model_mlp_destroy(m2);
  model_mlp_destroy(m);
  serve_snapshot_unref(s);
}

/* A reader keeps its version after a newer one is published. */
static void slot_swaps_between_readers(void **state) {
  (void)state;
  uint32_t w[] = {2, 2};
  serve_slot *slot = serve_slot_create();
  assert_null(serve_slot_acquire(slot));
  assert_true(serve_slot_version(slot) == UINT64_MAX);
  serve_slot_publish(slot, serve_snapshot_new(w, 2, 1));
  serve_snapshot *held = serve_slot_acquire(slot);
  assert_int_equal(held->version, 1);
  serve_slot_publish(slot, serve_snapshot_new(w, 2, 2));
  assert_int_equal(serve_slot_version(slot), 2);
  assert_int_equal(held->version, 1);
  held->params[0][0] = 1; /* still ours: ASan would catch a free */
  serve_snapshot_unref(held);
  serve_snapshot *now = serve_slot_acquire(slot);
  assert_int_equal(now->version, 2);
  serve_snapshot_unref(now);
  serve_slot_destroy(slot);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rejects_bad_widths),
      cmocka_unit_test(predicts_softmax_of_logits),
      cmocka_unit_test(slot_swaps_between_readers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
