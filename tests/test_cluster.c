/* test_cluster.c: real fsps-server processes on loopback driven by W
 * libfsps clients (one thread each): S x W runs against a single-process
 * reference, bit for bit in --deterministic mode, with the fp32 and the
 * bf16 wire dtype; a worker of the other wire dtype refused; and the BSP,
 * SSP and ASP consistency guarantees. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <fsps/fsps.h>

#include "cluster.h"
#include "optim/optim.h"
#include "shard/shard.h"

#define LAYERS 3
#define STEPS 3
#define LR 0.01
#define WD 0.001

/* The model: a small dense layer, a layer of 600000 elements (more than
 * one 1 MiB chunk per slice for S <= 2), and a 1-element layer (empty
 * slices on every server but the first). */
static void build(fsps_spec *spec) {
  uint64_t w[2] = {37, 53}, b[1] = {37}, big[1] = {600000}, one[1] = {1};
  assert_int_equal(fsps_spec_add_layer(spec, "dense"), FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "weight", 2, w, "he_uniform", 0, 0), 0);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "bias", 1, b, "uniform", -0.1, 0.1), 0);
  assert_int_equal(fsps_spec_add_layer(spec, "big"), FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "v", 1, big, "normal", 0, 1), 0);
  assert_int_equal(fsps_spec_add_layer(spec, "scalar"), FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "s", 1, one, "constant", 2, 0),
                   0);
  assert_int_equal(fsps_spec_set_optimizer(spec, "adam", LR), FSPS_OK);
  assert_int_equal(fsps_spec_set_param(spec, "weight_decay", WD), FSPS_OK);
}

static fsps_spec *make_spec(void) {
  fsps_spec *spec = fsps_spec_create(42);
  build(spec);
  return spec;
}

/* grad is worker w's gradient for layer l at step t: any fixed function. */
static float grad(uint32_t w, uint64_t t, uint32_t l, uint64_t i) {
  return (float)sin(0.37 * (double)w + 1.3 * (double)t + 0.001 * (double)i +
                    (double)l);
}

static void fill_grad(float *g, uint64_t n, uint32_t w, uint64_t t,
                      uint32_t l) {
  for (uint64_t i = 0; i < n; i++)
    g[i] = grad(w, t, l, i);
}

/* bf16 returns x as the bf16 wire carries it: rounded to nearest even
 * (no NaN here), and back to float exactly. */
static float bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  memcpy(&x, &u, sizeof x);
  return x;
}

static void round_bf16(float *v, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    v[i] = bf16(v[i]);
}

/* reference runs the same training in one process: the mean of the W
 * gradients (summed in worker order) through the same optimizer, on float32
 * parameters. With the bf16 wire each worker's gradient is rounded to bf16
 * before the sum (in float32), and the parameters gathered at the end are
 * the master's rounded to bf16. */
static float *reference(uint32_t l, uint32_t W, bool wire_bf16,
                        uint64_t *n_out) {
  fsps_spec *fs = make_spec();
  uint64_t n = fsps_spec_layer_size(fs, l);
  fsps_spec_destroy(fs);
  /* Initial values: the server fills them with shard_init_fill; build the
   * identical shard spec to ask for the whole layer. */
  shard_spec *ss = shard_spec_create(42);
  uint64_t w[2] = {37, 53}, b[1] = {37}, big[1] = {600000}, one[1] = {1};
  shard_spec_add_layer(ss, "dense");
  shard_spec_add_tensor(ss, "weight", 2, w, SHARD_INIT_HE_UNIFORM, 0, 0);
  shard_spec_add_tensor(ss, "bias", 1, b, SHARD_INIT_UNIFORM, -0.1, 0.1);
  shard_spec_add_layer(ss, "big");
  shard_spec_add_tensor(ss, "v", 1, big, SHARD_INIT_NORMAL, 0, 1);
  shard_spec_add_layer(ss, "scalar");
  shard_spec_add_tensor(ss, "s", 1, one, SHARD_INIT_CONSTANT, 2, 0);
  float *p = malloc(n * 4), *acc = malloc(n * 4), *g = malloc(n * 4);
  float *state = calloc(2 * n, 4);
  assert_int_equal(shard_init_fill(ss, l, 0, n, p), FSPS_OK);
  shard_spec_destroy(ss);
  optim_config cfg;
  optim_config_defaults(OPTIM_ADAM, &cfg);
  cfg.lr = LR;
  cfg.weight_decay = WD;
  optim_state_init(&cfg, state, n);
  for (uint64_t t = 0; t < STEPS; t++) {
    fill_grad(acc, n, 0, t, l);
    if (wire_bf16)
      round_bf16(acc, n);
    for (uint32_t wk = 1; wk < W; wk++) {
      fill_grad(g, n, wk, t, l);
      if (wire_bf16)
        round_bf16(g, n);
      for (uint64_t i = 0; i < n; i++)
        acc[i] += g[i];
    }
    optim_step(&cfg, t + 1, cfg.lr, 1.0f / (float)W, p, acc, state, n);
  }
  if (wire_bf16)
    round_bf16(p, n);
  free(acc);
  free(g);
  free(state);
  *n_out = n;
  return p;
}

/* ---- workers ---- */

/* How many steps a worker has completed, for another to wait on. */
struct progress {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t steps;
};

static void progress_add(struct progress *p) {
  pthread_mutex_lock(&p->mu);
  p->steps++;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* progress_wait waits (up to 60 s) for n completed steps. */
static bool progress_wait(struct progress *p, uint64_t n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 60;
  pthread_mutex_lock(&p->mu);
  while (p->steps < n && pthread_cond_timedwait(&p->cv, &p->mu, &ts) == 0)
    ;
  bool ok = p->steps >= n;
  pthread_mutex_unlock(&p->mu);
  return ok;
}

typedef struct {
  const char *servers;
  uint32_t rank, world;
  fsps_mode mode;
  uint32_t staleness;
  useconds_t delay;      /* per step, to make workers drift apart */
  struct progress *lead; /* SSP test: rank 0's completed steps */
  uint64_t hold_until;   /* wait for lead to reach this before step 0 */
  int rc;
  uint64_t bad_version;  /* a version outside the mode's bounds, +1 */
  uint64_t min_seen_lag; /* max over steps of t - version gathered */
  /* The bf16 wire: in the spec (even ranks) or in the options (odd). */
  bool wire_bf16;
  float *final[LAYERS];
  char err[512];
} worker_arg;

static int worker_connect(worker_arg *a, fsps_client **c, fsps_spec *spec) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = a->servers;
  o.rank = a->rank;
  o.world = a->world;
  o.mode = a->mode;
  o.staleness = a->staleness;
  o.timeout_ms = 30000;
  if (a->wire_bf16 && a->rank % 2 == 1)
    o.wire_dtype = FSPS_WIRE_BF16;
  else if (a->wire_bf16 && fsps_spec_set_wire_dtype(spec, "bf16") != FSPS_OK)
    return FSPS_INVALID_ARGUMENT;
  int rc = fsps_connect(&o, c, a->err, sizeof a->err);
  if (rc != FSPS_OK)
    return rc;
  rc = a->rank == 0 ? fsps_declare(*c, spec) : fsps_attach(*c, spec, 30000);
  if (rc != FSPS_OK)
    snprintf(a->err, sizeof a->err, "%s", fsps_last_error(*c));
  return rc;
}

static uint64_t min_version(const worker_arg *a, uint64_t t) {
  if (a->mode == FSPS_BSP)
    return t;
  if (a->mode == FSPS_SSP)
    return t > a->staleness ? t - a->staleness : 0;
  return 0;
}

/* check_version records a gathered version outside the mode's bounds. */
static void check_version(worker_arg *a, uint64_t t, uint64_t v) {
  bool ok = a->mode == FSPS_BSP   ? v == t
            : a->mode == FSPS_SSP ? v + a->staleness >= t && v <= t
                                  : true;
  if (!ok && !a->bad_version)
    a->bad_version = v + 1;
  if (v < t && t - v > a->min_seen_lag)
    a->min_seen_lag = t - v;
}

static int one_step(worker_arg *a, fsps_client *c, fsps_spec *spec, uint64_t t,
                    float **bufs, float **grads) {
  for (uint32_t l = 0; l < LAYERS; l++) {
    uint64_t v, n = fsps_spec_layer_size(spec, l);
    int rc = fsps_gather(c, l, min_version(a, t), bufs[l], &v);
    if (rc != FSPS_OK)
      return rc;
    check_version(a, t, v);
    fill_grad(grads[l], n, a->rank, t, l);
    if ((rc = fsps_push(c, l, t, grads[l])) != FSPS_OK)
      return rc;
  }
  return fsps_push_wait(c);
}

static int train(worker_arg *a, fsps_client *c, fsps_spec *spec) {
  float *grads[LAYERS];
  for (uint32_t l = 0; l < LAYERS; l++) {
    a->final[l] = malloc(fsps_spec_layer_size(spec, l) * 4);
    grads[l] = malloc(fsps_spec_layer_size(spec, l) * 4);
  }
  int rc = FSPS_OK;
  for (uint64_t t = 0; t < STEPS && rc == FSPS_OK; t++) {
    if (a->delay)
      usleep(a->delay);
    if (t == 0 && a->hold_until && !progress_wait(a->lead, a->hold_until)) {
      snprintf(a->err, sizeof a->err,
               "the other worker never got %" PRIu64 " steps ahead",
               a->hold_until);
      rc = FSPS_DEADLINE_EXCEEDED;
      break;
    }
    rc = one_step(a, c, spec, t, a->final, grads);
    if (rc == FSPS_OK && a->lead && !a->hold_until)
      progress_add(a->lead);
  }
  for (uint32_t l = 0; l < LAYERS && rc == FSPS_OK; l++)
    rc = fsps_gather(c, l, a->mode == FSPS_BSP ? STEPS : 0, a->final[l], NULL);
  for (uint32_t l = 0; l < LAYERS; l++)
    free(grads[l]);
  return rc;
}

static void *worker_main(void *arg) {
  worker_arg *a = arg;
  fsps_spec *spec = make_spec();
  fsps_client *c = NULL;
  a->rc = worker_connect(a, &c, spec);
  if (a->rc == FSPS_OK) {
    a->rc = train(a, c, spec);
    if (a->rc != FSPS_OK)
      snprintf(a->err, sizeof a->err, "%s", fsps_last_error(c));
  }
  fsps_close(c);
  fsps_spec_destroy(spec);
  return NULL;
}

static void run_workers(worker_arg *args, uint32_t W) {
  pthread_t th[8];
  for (uint32_t w = 0; w < W; w++)
    pthread_create(&th[w], NULL, worker_main, &args[w]);
  for (uint32_t w = 0; w < W; w++)
    pthread_join(th[w], NULL);
  for (uint32_t w = 0; w < W; w++)
    if (args[w].rc != FSPS_OK)
      fail_msg("worker %u: %s: %s", w, fsps_err_name(args[w].rc), args[w].err);
}

static void free_workers(worker_arg *args, uint32_t W) {
  for (uint32_t w = 0; w < W; w++)
    for (uint32_t l = 0; l < LAYERS; l++)
      free(args[w].final[l]);
}

/* ---- tests ---- */

static void run_matrix_case(int S, uint32_t W, bool wire_bf16) {
  static const char *const det[] = {"--deterministic", NULL};
  cluster cl;
  assert_int_equal(test_cluster_start(&cl, S, (int)W, det), 0);
  worker_arg args[8];
  memset(args, 0, sizeof args);
  for (uint32_t w = 0; w < W; w++)
    args[w] = (worker_arg){.servers = cl.servers,
                           .rank = w,
                           .world = W,
                           .mode = FSPS_BSP,
                           .delay = (useconds_t)(w * 3000),
                           .wire_bf16 = wire_bf16};
  run_workers(args, W);
  for (uint32_t l = 0; l < LAYERS; l++) {
    uint64_t n;
    float *ref = reference(l, W, wire_bf16, &n);
    for (uint32_t w = 0; w < W; w++) {
      if (memcmp(ref, args[w].final[l], n * 4) != 0)
        fail_msg("S=%d W=%u %s layer %u: worker %u's parameters differ from "
                 "the reference",
                 S, W, wire_bf16 ? "bf16" : "fp32", l, w);
    }
    free(ref);
    for (uint32_t w = 0; w < W; w++)
      assert_int_equal(args[w].bad_version, 0); /* BSP: version == t */
  }
  free_workers(args, W);
  assert_int_equal(test_cluster_stop(&cl), 0);
}

static void test_matrix_bit_exact(void **state) {
  (void)state;
  static const int servers[] = {1, 2, 3};
  static const uint32_t workers[] = {1, 2, 4};
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      run_matrix_case(servers[i], workers[j], false);
}

/* The bf16 wire, deterministic: every S gives the reference's bits (the
 * master in float32, gradients rounded to bf16 before the sum), so every S
 * gives the same bits; ranks choose bf16 through the spec or the options. */
static void test_matrix_bf16_bit_exact(void **state) {
  (void)state;
  static const int servers[] = {1, 2, 3};
  static const uint32_t workers[] = {1, 2, 3};
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      run_matrix_case(servers[i], workers[j], true);
}

/* connect_rank connects worker rank of 2 to cl with wire dtype opt. */
static fsps_client *connect_rank(const cluster *cl, uint32_t rank,
                                 fsps_wire_dtype opt) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = cl->servers;
  o.rank = rank;
  o.world = 2;
  o.timeout_ms = 30000;
  o.wire_dtype = opt;
  fsps_client *c = NULL;
  char err[256];
  if (fsps_connect(&o, &c, err, sizeof err) != FSPS_OK)
    fail_msg("connect: %s", err);
  return c;
}

/* A worker whose wire dtype differs from the declared model's is refused
 * like any other spec mismatch, saying so; the servers keep the model. */
static void test_other_wire_dtype_refused(void **state) {
  (void)state;
  cluster cl;
  assert_int_equal(test_cluster_start(&cl, 2, 2, NULL), 0);
  fsps_spec *bf = make_spec(), *fp = make_spec();
  assert_int_equal(fsps_spec_set_wire_dtype(bf, "bf16"), FSPS_OK);
  assert_string_equal(fsps_spec_wire_dtype(bf), "bf16");
  assert_string_equal(fsps_spec_wire_dtype(fp), "fp32");
  assert_true(fsps_spec_hash(bf) != fsps_spec_hash(fp));
  fsps_client *c0 = connect_rank(&cl, 0, FSPS_WIRE_AS_SPEC);
  assert_int_equal(fsps_declare(c0, bf), FSPS_OK);
  fsps_client *c1 = connect_rank(&cl, 1, FSPS_WIRE_AS_SPEC);
  assert_int_equal(fsps_attach(c1, fp, 5000), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(c1), "wire dtype bf16, this worker "
                                              "asks for fp32"));
  assert_int_equal(fsps_declare(c1, fp), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(c1), "its wire dtype is bf16, the "
                                              "request's fp32"));
  fsps_close(c1);
  /* The options' fp32 over a bf16 spec is the same refusal; their bf16
   * over an fp32 spec attaches. */
  c1 = connect_rank(&cl, 1, FSPS_WIRE_FP32);
  assert_int_equal(fsps_attach(c1, bf, 5000), FSPS_FAILED_PRECONDITION);
  fsps_close(c1);
  c1 = connect_rank(&cl, 1, FSPS_WIRE_BF16);
  assert_int_equal(fsps_attach(c1, fp, 5000), FSPS_OK);
  fsps_close(c1);
  assert_int_equal(fsps_spec_set_wire_dtype(fp, "fp16"), FSPS_INVALID_ARGUMENT);
  char msg[256];
  assert_int_equal(fsps_spec_validate(fp, msg, sizeof msg),
                   FSPS_INVALID_ARGUMENT);
  assert_non_null(strstr(msg, "unknown wire dtype 'fp16'"));
  fsps_close(c0);
  fsps_spec_destroy(bf);
  fsps_spec_destroy(fp);
  assert_int_equal(test_cluster_stop(&cl), 0);
}

static void test_ssp_bounded_staleness(void **state) {
  (void)state;
  static const char *const flags[] = {"--mode", "ssp", "--staleness", "2",
                                      NULL};
  cluster cl;
  assert_int_equal(test_cluster_start(&cl, 2, 2, flags), 0);
  struct progress lead = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                          0};
  /* Worker 1 starts only once worker 0 has finished all STEPS = 3 steps,
   * which SSP with staleness 2 allows (step 2 needs version >= 0) and BSP
   * would not: worker 0 must see versions 2 behind. */
  worker_arg args[2] = {{.servers = cl.servers,
                         .rank = 0,
                         .world = 2,
                         .mode = FSPS_SSP,
                         .staleness = 2,
                         .lead = &lead},
                        {.servers = cl.servers,
                         .rank = 1,
                         .world = 2,
                         .mode = FSPS_SSP,
                         .staleness = 2,
                         .lead = &lead,
                         .hold_until = STEPS}};
  run_workers(args, 2);
  for (int w = 0; w < 2; w++)
    assert_int_equal(args[w].bad_version, 0);
  assert_int_equal(args[0].min_seen_lag, 2);
  free_workers(args, 2);
  assert_int_equal(test_cluster_stop(&cl), 0);
}

static void test_asp_pulls_never_wait(void **state) {
  (void)state;
  static const char *const flags[] = {"--mode", "asp", NULL};
  cluster cl;
  assert_int_equal(test_cluster_start(&cl, 2, 2, flags), 0);
  /* Worker 1 never pushes; worker 0 still completes every step. */
  worker_arg a = {
      .servers = cl.servers, .rank = 0, .world = 2, .mode = FSPS_ASP};
  worker_main(&a);
  if (a.rc != FSPS_OK)
    fail_msg("%s", a.err);
  free_workers(&a, 1);
  assert_int_equal(test_cluster_stop(&cl), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matrix_bit_exact),
      cmocka_unit_test(test_matrix_bf16_bit_exact),
      cmocka_unit_test(test_other_wire_dtype_refused),
      cmocka_unit_test(test_ssp_bounded_staleness),
      cmocka_unit_test(test_asp_pulls_never_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
