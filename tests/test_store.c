/* test_store.c: unit tests of server/store.h without a network — declaring
 * a model, pushes from W workers, the version barrier, deterministic sums,
 * rollback, snapshots and --worker-timeout on a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store.h"

/* ---- a fake monotonic clock ----
 * The test links with -Wl,--wrap=clock_gettime, so the store's calls (and
 * only ours) come here: CLOCK_MONOTONIC runs `skew` seconds ahead of the
 * real one, which lets --worker-timeout expire without sleeping. */

int __real_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts);

static time_t skew;

int __wrap_clock_gettime(clockid_t id, struct timespec *ts) {
  int rc = __real_clock_gettime(id, ts);
  if (rc == 0 && id == CLOCK_MONOTONIC)
    ts->tv_sec += skew;
  return rc;
}

/* ---- the model ----
 * Layer 0 "a": 20 elements, all 1.0 (hand computations start there).
 * Layer 1 "b": a 3x4 uniform weight and a bias of 0.25 (15 elements).
 * Layer 2 "big" (with big): 262160 zeros, two push chunks. One server
 * holds every slice whole. */

#define A_N 20
#define B_N 15
#define BIG_N (SHARD_CHUNK_ELEMS + 16)

static server_config config(uint32_t W) {
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

static shard_spec *model(double lr, double momentum, bool big) {
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

/* open_store makes a store for c and declares the model on it. */
static store *open_store(const server_config *c, double lr, bool big) {
  store *st = store_create(c);
  assert_non_null(st);
  char msg[512] = "";
  bool created = false;
  int rc =
      store_init(st, model(lr, 0, big), "spec", 4, &created, msg, sizeof msg);
  if (rc != FSPS_OK)
    fail_msg("store_init: %s", msg);
  assert_true(created);
  return st;
}

/* ---- pushing ---- */

typedef struct {
  int calls;
  bool duplicate, applied;
  uint64_t version;
} ack_rec;

static void on_ack(void *arg, bool duplicate, bool applied, uint64_t version) {
  ack_rec *a = arg;
  a->calls++;
  a->duplicate = duplicate;
  a->applied = applied;
  a->version = version;
}

/* push sends g (the layer's whole slice) for (l, step, w) chunk by chunk,
 * as push.c does; returns the first failure, *a filled by the ack. */
static int push(store *st, uint32_t l, uint64_t step, uint32_t w,
                const float *g, ack_rec *a) {
  store_layer *L = store_layer_get(st, l);
  store_layer_info in;
  store_info(L, &in);
  store_push p;
  char msg[512];
  *a = (ack_rec){0};
  int rc = store_push_begin(L, step, w, &p, msg, sizeof msg);
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
    rc = store_push_commit(&p, on_ack, a, msg, sizeof msg);
  if (rc != FSPS_OK)
    store_push_abort(&p);
  return rc;
}

/* push_const pushes the constant gradient v and expects it taken. */
static ack_rec push_const(store *st, uint32_t l, uint64_t step, uint32_t w,
                          float v) {
  static float g[BIG_N];
  for (size_t i = 0; i < BIG_N; i++)
    g[i] = v;
  ack_rec a;
  assert_int_equal(push(st, l, step, w, g, &a), FSPS_OK);
  assert_int_equal(a.calls, 1);
  return a;
}

/* ---- looking ---- */

static uint64_t version_of(store *st, uint32_t l) {
  store_layer_info in;
  store_info(store_layer_get(st, l), &in);
  return in.version;
}

/* params copies layer l's parameters (no state) into out. */
static void params(store *st, uint32_t l, float *out) {
  store_layer *L = store_layer_get(st, l);
  float *all = malloc(store_layer_floats(L) * sizeof *all + 4);
  assert_non_null(all);
  store_copy_now(L, all);
  store_layer_info in;
  store_info(L, &in);
  memcpy(out, all, in.count * sizeof *out);
  free(all);
}

/* A pull parked through the public waiter interface. */
typedef struct {
  store_waiter w;
  int woken;
  fbuf *params;
  uint64_t version;
} waiter;

static void on_ready(store_waiter *sw, fbuf *p, uint64_t version) {
  waiter *w = (waiter *)sw;
  w->woken++;
  w->params = p;
  w->version = version;
}

static int pull(store *st, uint32_t l, uint64_t min_version, waiter *w) {
  memset(w, 0, sizeof *w);
  w->w.min_version = min_version;
  w->w.ready = on_ready;
  return store_pull(store_layer_get(st, l), &w->w, &w->params, &w->version);
}

static void release(waiter *w) {
  if (w->params)
    fbuf_unref(w->params);
  w->params = NULL;
}

/* ---- declaring the model ---- */

static void test_init(void **unused) {
  (void)unused;
  server_config c = config(2);
  store *st = store_create(&c);
  assert_false(store_ready(st));
  assert_null(store_layer_get(st, 0));
  assert_int_equal(store_num_layers(st), 0);
  char msg[512] = "";
  bool created = false;
  shard_spec *s = model(0.5, 0, false);
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
  assert_int_equal(
      store_init(st, model(0.5, 0, false), "xy", 2, &created, msg, sizeof msg),
      FSPS_OK);
  assert_false(created);
  /* Another spec: refused, naming both hashes. */
  assert_int_equal(
      store_init(st, model(0.25, 0, false), "z", 1, &created, msg, sizeof msg),
      FSPS_FAILED_PRECONDITION);
  char hex[17];
  shard_spec_hash_hex(h, hex);
  assert_non_null(strstr(msg, hex));
  assert_int_equal(store_hash(st), h);
  store_destroy(st);
}

static void test_init_invalid(void **unused) {
  (void)unused;
  server_config c = config(1);
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
  server_config c = config(1);
  store *st = open_store(&c, 0.5, false);
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
  params(st, 1, got);
  shard_spec *s = model(0.5, 0, false);
  assert_int_equal(shard_init_fill(s, 1, 0, B_N, want), FSPS_OK);
  shard_spec_destroy(s);
  assert_memory_equal(got, want, sizeof want);
  params(st, 0, got); /* A_N > B_N */
  for (int i = 0; i < A_N; i++)
    assert_true(got[i] == 1.0f);
  store_destroy(st);
}

/* A server slicing a layer: server 1 of 2 holds [16, 20) of layer "a". */
static void test_slice(void **unused) {
  (void)unused;
  server_config c = config(1);
  c.num_servers = 2;
  c.index = 1;
  store *st = open_store(&c, 0.5, false);
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
      store_push_begin(store_layer_get(st, 1), 0, 0, &p, msg, sizeof msg),
      FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "holds no elements"));
  store_destroy(st);
}

/* ---- pushes and the version barrier ---- */

/* Three workers: the version moves only with the third push, and the
 * parameters are 1 - lr * mean(g) element by element. */
static void test_bsp_step(void **unused) {
  (void)unused;
  server_config c = config(3);
  store *st = open_store(&c, 0.5, false);
  float g[3][A_N];
  for (int w = 0; w < 3; w++)
    for (int i = 0; i < A_N; i++)
      g[w][i] = (float)(w + 1) * 0.5f + (float)i * 0.25f;
  ack_rec a;
  bool pushed[3], absent[3];
  for (uint32_t w = 0; w < 2; w++) {
    assert_int_equal(push(st, 0, 0, w, g[w], &a), FSPS_OK);
    assert_false(a.duplicate);
    assert_false(a.applied);
    assert_int_equal(a.version, 0);
    assert_int_equal(version_of(st, 0), 0);
  }
  assert_int_equal(store_pushed(store_layer_get(st, 0), pushed, absent), 0);
  assert_true(pushed[0] && pushed[1] && !pushed[2]);
  assert_false(absent[0] || absent[1] || absent[2]);
  assert_int_equal(push(st, 0, 0, 2, g[2], &a), FSPS_OK);
  assert_true(a.applied);
  assert_int_equal(a.version, 1);
  assert_int_equal(version_of(st, 0), 1);
  assert_int_equal(version_of(st, 1), 0); /* layers advance on their own */
  float got[A_N];
  params(st, 0, got);
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
  server_config c = config(2);
  store *st = open_store(&c, 0.5, false);
  push_const(st, 0, 0, 0, 1.0f);
  ack_rec a = push_const(st, 0, 0, 0, 100.0f);
  assert_true(a.duplicate);
  assert_false(a.applied);
  assert_int_equal(version_of(st, 0), 0);
  a = push_const(st, 0, 0, 1, 3.0f);
  assert_false(a.duplicate);
  assert_true(a.applied);
  a = push_const(st, 0, 0, 1, 100.0f); /* step 0 is past */
  assert_true(a.duplicate);
  assert_int_equal(a.version, 1);
  float got[A_N];
  params(st, 0, got);
  for (int i = 0; i < A_N; i++)
    assert_true(got[i] == 1.0f - 0.5f * 2.0f); /* mean of 1 and 3 */
  store_destroy(st);
}

/* assert_untouched checks layer 2 ("big") is still at version 0 with its
 * zeros and no push counted. */
static void assert_untouched(store *st) {
  static float got[BIG_N];
  bool pushed[2], absent[2];
  assert_int_equal(version_of(st, 2), 0);
  store_pushed(store_layer_get(st, 2), pushed, absent);
  assert_false(pushed[0] || pushed[1]);
  params(st, 2, got);
  for (size_t i = 0; i < BIG_N; i++)
    assert_true(got[i] == 0.0f);
}

/* Wrong worker, step or chunk is refused with a reason and changes
 * nothing. */
static void test_refusals(void **unused) {
  (void)unused;
  server_config c = config(2);
  store *st = open_store(&c, 0.5, true);
  store_layer *L = store_layer_get(st, 2);
  store_push p;
  char msg[512];
  assert_int_equal(store_push_begin(L, 0, 2, &p, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "worker 2 is out of range"));
  assert_int_equal(store_push_begin(L, UINT64_MAX, 0, &p, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(store_push_begin(L, 1, 0, &p, msg, sizeof msg),
                   FSPS_FAILED_PRECONDITION); /* ahead of version 0 */
  assert_int_equal(store_push_begin(L, 0, 1, &p, msg, sizeof msg), FSPS_OK);
  uint64_t n0 = SHARD_CHUNK_ELEMS;
  assert_null(store_push_chunk(&p, BIG_N, 16, msg, sizeof msg));
  assert_non_null(strstr(msg, "outside this server's slice"));
  assert_null(store_push_chunk(&p, 0, n0 - 1, msg, sizeof msg));
  assert_non_null(strstr(msg, "bad chunk"));
  assert_null(store_push_chunk(&p, 16, 16, msg, sizeof msg));
  assert_non_null(store_push_chunk(&p, n0, 16, msg, sizeof msg));
  assert_null(store_push_chunk(&p, n0, 16, msg, sizeof msg));
  assert_non_null(strstr(msg, "sent twice"));
  ack_rec a = {0};
  assert_int_equal(store_push_commit(&p, on_ack, &a, msg, sizeof msg),
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
  server_config c = config(1);
  store *st = open_store(&c, 0.5, false);
  float g[A_N] = {0};
  g[3] = NAN;
  ack_rec a;
  assert_int_equal(push(st, 0, 0, 0, g, &a), FSPS_INVALID_ARGUMENT);
  assert_int_equal(a.calls, 0);
  assert_int_equal(version_of(st, 0), 0);
  store_destroy(st);
  c.nan_skip = true;
  st = open_store(&c, 0.5, false);
  g[3] = INFINITY;
  g[4] = 2.0f;
  assert_int_equal(push(st, 0, 0, 0, g, &a), FSPS_OK);
  assert_true(a.applied);
  float got[A_N];
  params(st, 0, got);
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
    server_config c = config(4);
    c.deterministic = det;
    store *st = open_store(&c, 0.5, false);
    for (int k = 0; k < 3; k++)
      push_const(st, 0, 0, order[k], g[order[k]]);
    ack_rec a = push_const(st, 0, 0, 3, 0.0f);
    assert_true(a.applied);
    float got[A_N];
    params(st, 0, got);
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
  server_config c = config(1);
  store *st = store_create(&c);
  char msg[256];
  bool created;
  assert_int_equal(
      store_init(st, model(0.5, 0.5, false), "", 0, &created, msg, sizeof msg),
      FSPS_OK);
  store_layer *L = store_layer_get(st, 0);
  assert_int_equal(store_layer_floats(L), 2 * A_N);
  push_const(st, 0, 0, 0, 2.0f);
  push_const(st, 0, 1, 0, 4.0f);
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
  server_config c = config(2);
  c.mode = MODE_SSP;
  c.staleness = 1;
  store *st = open_store(&c, 0.5, false);
  push_const(st, 0, 0, 0, 1.0f);
  push_const(st, 0, 1, 0, 1.0f);
  store_push p;
  char msg[256];
  assert_int_equal(
      store_push_begin(store_layer_get(st, 0), 2, 0, &p, msg, sizeof msg),
      FSPS_FAILED_PRECONDITION);
  push_const(st, 0, 1, 1, 1.0f); /* step 1 complete, step 0 not yet */
  assert_int_equal(version_of(st, 0), 0);
  ack_rec a = push_const(st, 0, 0, 1, 1.0f);
  assert_true(a.applied);
  assert_int_equal(a.version, 2); /* the ack tells both steps */
  assert_int_equal(version_of(st, 0), 2);
  store_destroy(st);
}

/* ASP applies every push on arrival, scaled by 1/W; a worker's step it
 * already pushed is a duplicate. */
static void test_asp(void **unused) {
  (void)unused;
  server_config c = config(2);
  c.mode = MODE_ASP;
  store *st = open_store(&c, 0.5, false);
  ack_rec a = push_const(st, 0, 5, 1, 2.0f);
  assert_true(a.applied);
  assert_int_equal(a.version, 1);
  a = push_const(st, 0, 3, 1, 2.0f);
  assert_true(a.duplicate);
  push_const(st, 0, 0, 0, 2.0f);
  assert_int_equal(version_of(st, 0), 2);
  float got[A_N];
  params(st, 0, got);
  assert_true(got[0] == 1.0f - 2 * 0.5f * (2.0f * 0.5f));
  store_destroy(st);
}

/* ---- pulls ---- */

static void test_pull(void **unused) {
  (void)unused;
  server_config c = config(2);
  store *st = open_store(&c, 0.5, false);
  waiter now, later, gone, far;
  assert_int_equal(pull(st, 0, 0, &now), STORE_PULL_READY);
  assert_int_equal(now.version, 0);
  assert_true(now.params->data[0] == 1.0f);
  assert_int_equal(pull(st, 0, 1, &later), STORE_PULL_PARKED);
  assert_int_equal(pull(st, 0, 1, &gone), STORE_PULL_PARKED);
  assert_true(store_unpark(store_layer_get(st, 0), &gone.w));
  assert_false(store_unpark(store_layer_get(st, 0), &gone.w));
  assert_int_equal(pull(st, 0, 2, &far), STORE_PULL_FAILED);
  assert_int_equal(far.w.failed_code, FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(far.w.failed, "version 2"));
  push_const(st, 0, 0, 0, 1.0f);
  assert_int_equal(later.woken, 0);
  push_const(st, 0, 0, 1, 1.0f);
  assert_int_equal(later.woken, 1);
  assert_int_equal(later.version, 1);
  assert_true(later.params->data[0] == 0.5f);
  assert_int_equal(gone.woken, 0);
  /* The first pull still sends version 0: the update went elsewhere. */
  assert_true(now.params->data[0] == 1.0f);
  release(&now);
  release(&later);
  store_destroy(st);
}

/* ---- rollback ---- */

static void test_rollback(void **unused) {
  (void)unused;
  server_config c = config(2);
  store *st = open_store(&c, 0.5, false);
  store_layer *L = store_layer_get(st, 0);
  push_const(st, 0, 0, 0, 1.0f);
  push_const(st, 0, 0, 1, 1.0f);
  float v1[A_N];
  assert_int_equal(store_copy_now(L, v1), 1);
  push_const(st, 0, 1, 0, 1.0f);
  push_const(st, 0, 1, 1, 1.0f);
  push_const(st, 0, 2, 0, 1.0f); /* pending when the rollback comes */
  waiter held, next, past;
  assert_int_equal(pull(st, 0, 2, &held), STORE_PULL_READY);
  assert_int_equal(pull(st, 0, 3, &past), STORE_PULL_PARKED);
  assert_int_equal(store_rollback_layer(L, v1, 1), FSPS_OK);
  assert_int_equal(version_of(st, 0), 1);
  assert_int_equal(past.woken, 1); /* 3 > 1 + 1: abandoned */
  assert_null(past.params);
  assert_int_equal(past.w.failed_code, FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(past.w.failed, "rolled back to version 1"));
  float got[A_N];
  params(st, 0, got);
  assert_memory_equal(got, v1, sizeof v1);
  assert_true(held.params->data[0] == 0.0f); /* its pull's copy stays */
  release(&held);
  bool pushed[2], absent[2];
  assert_int_equal(store_pushed(L, pushed, absent), 1);
  assert_false(pushed[0] || pushed[1]); /* the pending push was dropped */
  assert_int_equal(pull(st, 0, 2, &next), STORE_PULL_PARKED);
  push_const(st, 0, 1, 0, 1.0f);
  push_const(st, 0, 1, 1, 1.0f);
  assert_int_equal(next.version, 2);
  release(&next);
  /* Back to the initial values. */
  assert_int_equal(store_rollback_layer(L, NULL, 0), FSPS_OK);
  params(st, 0, got);
  assert_true(got[0] == 1.0f && got[A_N - 1] == 1.0f);
  assert_int_equal(version_of(st, 0), 0);
  store_destroy(st);
}

/* ---- snapshots ---- */

typedef struct {
  int calls;
  uint32_t layer;
  uint64_t version;
} snap_rec;

static void on_snap(void *arg, uint32_t layer, uint64_t version) {
  snap_rec *r = arg;
  r->calls++;
  r->layer = layer;
  r->version = version;
}

static void step(store *st, uint32_t l, uint64_t t, uint32_t W) {
  for (uint32_t w = 0; w < W; w++)
    push_const(st, l, t, w, 1.0f);
}

static void test_snapshots(void **unused) {
  (void)unused;
  server_config c = config(1);
  store *st = open_store(&c, 0.5, false);
  snap_rec r = {0};
  store_set_snapshots(st, 2, on_snap, &r);
  store_layer *L = store_layer_get(st, 0);
  step(st, 0, 0, 1);
  assert_int_equal(r.calls, 0);
  step(st, 0, 1, 1);
  assert_int_equal(r.calls, 1);
  assert_int_equal(r.layer, 0);
  assert_int_equal(r.version, 2);
  assert_null(store_snapshot_hold(L, 1));
  const float *snap = store_snapshot_hold(L, 2);
  assert_non_null(snap);
  assert_true(snap[0] == 0.0f); /* 1 - 0.5 - 0.5 */
  /* While held, version 4's copy is skipped and 2's stays whole. */
  step(st, 0, 2, 1);
  step(st, 0, 3, 1);
  assert_int_equal(r.calls, 1);
  assert_true(snap[0] == 0.0f);
  assert_null(store_snapshot_hold(L, 4));
  store_snapshot_release(L);
  step(st, 0, 4, 1);
  step(st, 0, 5, 1);
  assert_int_equal(r.calls, 2);
  assert_int_equal(r.version, 6);
  snap = store_snapshot_hold(L, 6);
  assert_non_null(snap);
  assert_true(snap[0] == -2.0f);
  store_snapshot_release(L);
  store_set_snapshots(st, 0, NULL, NULL);
  step(st, 0, 6, 1);
  step(st, 0, 7, 1);
  assert_int_equal(r.calls, 2);
  store_destroy(st);
}

/* store_restore_layer sets parameters and version before serving. */
static void test_restore(void **unused) {
  (void)unused;
  server_config c = config(1);
  store *st = open_store(&c, 0.5, false);
  store_layer *L = store_layer_get(st, 0);
  float data[A_N];
  for (int i = 0; i < A_N; i++)
    data[i] = (float)i;
  store_restore_layer(L, data, 41);
  float got[A_N];
  assert_int_equal(store_copy_now(L, got), 41);
  assert_memory_equal(got, data, sizeof data);
  ack_rec a = push_const(st, 0, 41, 0, 2.0f);
  assert_int_equal(a.version, 42);
  store_destroy(st);
}

/* ---- --worker-timeout ---- */

/* Under fail: a step that waited too long fails its parked pulls and the
 * ones that come later, naming the missing worker; its push still
 * completes the step. */
static void test_expire_fail(void **unused) {
  (void)unused;
  server_config c = config(3);
  c.worker_timeout_s = 5;
  store *st = open_store(&c, 0.5, false);
  skew = 0;
  push_const(st, 0, 0, 0, 1.0f);
  push_const(st, 0, 0, 2, 1.0f);
  waiter w, late;
  assert_int_equal(pull(st, 0, 1, &w), STORE_PULL_PARKED);
  skew = 4;
  store_expire(st);
  assert_int_equal(w.woken, 0);
  skew = 6;
  store_expire(st);
  assert_int_equal(w.woken, 1);
  assert_null(w.params);
  assert_int_equal(w.w.failed_code, FSPS_ABORTED);
  assert_non_null(strstr(w.w.failed, "worker(s) 1 did not push"));
  assert_int_equal(pull(st, 0, 1, &late), STORE_PULL_FAILED);
  assert_int_equal(late.w.failed_code, FSPS_ABORTED);
  assert_int_equal(version_of(st, 0), 0);
  assert_int_equal(version_of(st, 1), 0); /* no push there: no timeout */
  push_const(st, 0, 0, 1, 1.0f);
  assert_int_equal(version_of(st, 0), 1);
  assert_int_equal(pull(st, 0, 1, &late), STORE_PULL_READY);
  release(&late);
  skew = 0;
  store_destroy(st);
}

/* Under proceed: the step is applied over the workers that pushed, and the
 * next steps do not wait for the missing one until it pushes again. */
static void test_expire_proceed(void **unused) {
  (void)unused;
  server_config c = config(3);
  c.worker_timeout_s = 5;
  c.timeout_proceed = true;
  store *st = open_store(&c, 0.5, false);
  skew = 0;
  push_const(st, 0, 0, 0, 1.0f);
  push_const(st, 0, 0, 1, 3.0f);
  waiter w;
  assert_int_equal(pull(st, 0, 1, &w), STORE_PULL_PARKED);
  skew = 10;
  store_expire(st);
  assert_int_equal(w.woken, 1);
  assert_int_equal(w.version, 1);
  assert_true(w.params->data[0] == 1.0f - 0.5f * 2.0f); /* mean of 1, 3 */
  release(&w);
  bool pushed[3], absent[3];
  store_pushed(store_layer_get(st, 0), pushed, absent);
  assert_true(absent[2] && !absent[0] && !absent[1]);
  ack_rec a = push_const(st, 0, 1, 0, 1.0f);
  assert_false(a.applied);
  a = push_const(st, 0, 1, 1, 1.0f);
  assert_true(a.applied);        /* without worker 2 */
  push_const(st, 0, 2, 2, 1.0f); /* back: waited for again */
  store_pushed(store_layer_get(st, 0), pushed, absent);
  assert_false(absent[2]);
  push_const(st, 0, 2, 0, 1.0f);
  a = push_const(st, 0, 2, 1, 1.0f);
  assert_true(a.applied);
  assert_int_equal(version_of(st, 0), 3);
  skew = 0;
  store_destroy(st);
}

int main(void) {
  log_set(LOG_ERROR, "test_store");
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
  return cmocka_run_group_tests(tests, NULL, NULL);
}
