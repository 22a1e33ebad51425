/* store_fixture.c: test_store's fixture (store_fixture.h) — the model, a
 * fake clock, pushes and pulls through the store's public interface. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_fixture.h"

/* ---- a fake monotonic clock ----
 * With -Wl,--wrap=clock_gettime the calls of our own code (the store's)
 * come here; those inside libc do not. */

int __real_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts);

time_t fx_skew;

int __wrap_clock_gettime(clockid_t id, struct timespec *ts) {
  int rc = __real_clock_gettime(id, ts);
  if (rc == 0 && id == CLOCK_MONOTONIC)
    ts->tv_sec += fx_skew;
  return rc;
}

/* ---- the model ---- */

server_config fx_config(uint32_t W) {
  server_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.listen, sizeof c.listen, "127.0.0.1:0");
  c.num_servers = 1;
  c.workers = W;
  c.threads = 1;
  c.mode = MODE_BSP;
  c.log_level = LOG_ERROR;
  c.keep = 1;
  return c;
}

shard_spec *fx_model(double lr, double momentum, bool big) {
  shard_spec *s = shard_spec_create(7);
  assert_non_null(s);
  uint64_t a[] = {A_N}, w[] = {3, 4}, b[] = {3}, g[] = {BIG_N};
  assert_int_equal(shard_spec_add_layer(s, "a"), FSPS_OK);
  shard_spec_add_tensor(s, "w", 1, a, SHARD_INIT_CONSTANT, 1.0, 0);
  assert_int_equal(shard_spec_add_layer(s, "b"), FSPS_OK);
  shard_spec_add_tensor(s, "w", 2, w, SHARD_INIT_UNIFORM, -1.0, 1.0);
  shard_spec_add_tensor(s, "bias", 1, b, SHARD_INIT_CONSTANT, 0.25, 0);
  if (big) {
    assert_int_equal(shard_spec_add_layer(s, "big"), FSPS_OK);
    shard_spec_add_tensor(s, "w", 1, g, SHARD_INIT_ZEROS, 0, 0);
  }
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_SGD, &o);
  o.lr = lr;
  o.momentum = momentum;
  shard_spec_set_optim(s, &o);
  return s;
}

store *fx_open(const server_config *c, double lr, bool big) {
  store *st = store_create(c);
  assert_non_null(st);
  char msg[512] = "";
  bool created = false;
  int rc = store_init(st, fx_model(lr, 0, big), "spec", 4, &created, msg,
                      sizeof msg);
  if (rc != FSPS_OK)
    fail_msg("store_init: %s", msg);
  assert_true(created);
  return st;
}

/* ---- pushing ---- */

void fx_on_ack(void *arg, bool duplicate, bool applied, uint64_t version) {
  fx_ack *a = arg;
  a->calls++;
  a->duplicate = duplicate;
  a->applied = applied;
  a->version = version;
}

int fx_push(store *st, uint32_t l, uint64_t step, uint32_t w, const float *g,
            fx_ack *a) {
  store_layer *L = store_layer_get(st, l);
  store_layer_info in;
  store_info(L, &in);
  store_push p;
  char msg[512];
  *a = (fx_ack){0};
  int rc = store_push_begin(L, step, w, 0, &p, msg, sizeof msg);
  for (uint64_t i = 0; rc == FSPS_OK && i < shard_num_chunks(in.count); i++) {
    uint64_t o, len;
    shard_chunk(in.count, i, &o, &len);
    float *dst = store_push_chunk(&p, in.offset + o, len, msg, sizeof msg);
    if (dst == NULL)
      rc = FSPS_INVALID_ARGUMENT;
    else
      memcpy(dst, g + o, len * sizeof *g);
    if (dst != NULL && store_any_nonfinite(dst, len))
      rc = store_push_check(&p, dst, len, msg, sizeof msg);
  }
  if (rc == FSPS_OK)
    rc = store_push_commit(&p, fx_on_ack, a, msg, sizeof msg);
  if (rc != FSPS_OK)
    store_push_abort(&p);
  return rc;
}

fx_ack fx_push_const(store *st, uint32_t l, uint64_t step, uint32_t w,
                     float v) {
  static float g[BIG_N];
  for (size_t i = 0; i < BIG_N; i++)
    g[i] = v;
  fx_ack a;
  assert_int_equal(fx_push(st, l, step, w, g, &a), FSPS_OK);
  assert_int_equal(a.calls, 1);
  return a;
}

/* ---- looking ---- */

uint64_t fx_version(store *st, uint32_t l) {
  store_layer_info in;
  store_info(store_layer_get(st, l), &in);
  return in.version;
}

void fx_params(store *st, uint32_t l, float *out) {
  store_layer *L = store_layer_get(st, l);
  float *all = malloc(store_layer_floats(L) * sizeof *all + 4);
  assert_non_null(all);
  store_copy_now(L, all);
  store_layer_info in;
  store_info(L, &in);
  memcpy(out, all, in.count * sizeof *out);
  free(all);
}

static void fx_on_ready(store_waiter *sw, fbuf *p, uint64_t version) {
  fx_waiter *w = (fx_waiter *)sw;
  w->woken++;
  w->params = p;
  w->version = version;
}

int fx_pull(store *st, uint32_t l, uint64_t min_version, fx_waiter *w) {
  memset(w, 0, sizeof *w);
  w->w.min_version = min_version;
  w->w.ready = fx_on_ready;
  return store_pull(store_layer_get(st, l), &w->w, &w->params, &w->version);
}

void fx_release(fx_waiter *w) {
  if (w->params)
    store_fbuf_unref(w->params);
  w->params = NULL;
}

/* ---- snapshots ---- */

void fx_on_snap(void *arg, uint32_t layer, uint64_t version) {
  fx_snap *r = arg;
  r->calls++;
  r->layer = layer;
  r->version = version;
}

void fx_step(store *st, uint32_t l, uint64_t t, uint32_t W) {
  for (uint32_t w = 0; w < W; w++)
    fx_push_const(st, l, t, w, 1.0f);
}
