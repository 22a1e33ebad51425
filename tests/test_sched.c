/* test_sched.c: the step scheduler against real fsps-server processes —
 * with reshard_after_forward and gradients written over the parameters, the
 * parameters a worker sees and the model it trains are bit for bit those of
 * a single-process reference, and it holds at most prefetch + 1 layer
 * buffers at once. */
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

#include <cmocka.h>

#include <fsps/fsps.h>

#include "cluster.h"
#include "optim/optim.h"

#define STEPS 4
#define LR 0.01
#define MAX_LAYERS 8

/* Layer sizes: small first and last layers, three big ones in between
 * (several 1 MiB chunks per slice), so that buffers are reused across
 * sizes and backward's prefetches have gradients to wait for. */
static const uint64_t sizes[] = {1000, 300000, 300000, 300000, 10};
#define LAYERS (sizeof sizes / sizeof sizes[0])

static fsps_spec *make_spec(void) {
  fsps_spec *spec = fsps_spec_create(7);
  for (uint32_t l = 0; l < LAYERS; l++) {
    char name[16];
    snprintf(name, sizeof name, "l%u", l);
    assert_int_equal(fsps_spec_add_layer(spec, name), FSPS_OK);
    assert_int_equal(
        fsps_spec_add_tensor(spec, "v", 1, &sizes[l], "normal", 0, 1), 0);
  }
  assert_int_equal(fsps_spec_set_optimizer(spec, "adam", LR), FSPS_OK);
  return spec;
}

/* A cut of each 300000-element layer into uneven pieces that straddle
 * chunk (262144) and, for S = 2 and 3, slice boundaries. */
static const uint64_t cut[] = {0,      1,      70000,  150001,
                               262144, 262145, 299990, 300000};
#define NCUT ((uint32_t)(sizeof cut / sizeof cut[0]) - 1)
#define MAX_PIECES NCUT

/* grad is worker w's gradient for elements [at, at + n) of layer l at
 * step t: any fixed function of the element's index. */
static void fill_grad_at(float *g, uint64_t at, uint64_t n, uint32_t w,
                         uint64_t t, uint32_t l) {
  for (uint64_t i = 0; i < n; i++)
    g[i] =
        (float)sin(0.37 * w + 1.3 * (double)t + 0.001 * (double)(at + i) + l);
}

static void fill_grad(float *g, uint64_t n, uint32_t w, uint64_t t,
                      uint32_t l) {
  fill_grad_at(g, 0, n, w, t, l);
}

/* checksum is a position-weighted sum of a layer's bits. */
static uint64_t checksum(const float *p, uint64_t n) {
  uint64_t h = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &p[i], sizeof u);
    h = h * 1000003u + u;
  }
  return h;
}

/* reference trains p (layer l's initial values) as the servers do in
 * --deterministic mode: the W gradients summed in worker order, then Adam
 * with the mean. */
static void reference(float *p, uint64_t n, uint32_t l, uint32_t W) {
  float *acc = malloc(n * 4), *g = malloc(n * 4), *state = calloc(2 * n, 4);
  optim_config cfg;
  optim_config_defaults(OPTIM_ADAM, &cfg);
  cfg.lr = LR;
  optim_state_init(&cfg, state, n);
  for (uint64_t t = 0; t < STEPS; t++) {
    fill_grad(acc, n, 0, t, l);
    for (uint32_t w = 1; w < W; w++) {
      fill_grad(g, n, w, t, l);
      for (uint64_t i = 0; i < n; i++)
        acc[i] += g[i];
    }
    optim_step(&cfg, t + 1, cfg.lr, 1.0f / (float)W, p, acc, state, n);
  }
  free(acc);
  free(g);
  free(state);
}

typedef struct {
  const char *servers;
  uint32_t rank, world, prefetch;
  bool inplace_all; /* else odd layers in place, even ones separate */
  bool pieces;      /* the big layers cut at cut[] (in place) */
  int rc;
  char err[512];
  float *init[MAX_LAYERS], *final[MAX_LAYERS]; /* init: rank 0 only */
  uint64_t fwd_sum[STEPS][MAX_LAYERS];
  uint64_t piece_sum[STEPS][MAX_LAYERS][MAX_PIECES];
  uint32_t mismatches; /* backward saw other parameters than forward */
  uint64_t peak, gathered;
} worker_arg;

static int connect_worker(worker_arg *a, fsps_client **c, fsps_spec *spec) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = a->servers;
  o.rank = a->rank;
  o.world = a->world;
  o.prefetch = a->prefetch;
  o.reshard_after_forward = true;
  o.timeout_ms = 30000;
  int rc = fsps_connect(&o, c, a->err, sizeof a->err);
  if (rc != FSPS_OK)
    return rc;
  return a->rank == 0 ? fsps_declare(*c, spec) : fsps_attach(*c, spec, 30000);
}

/* ---- layers in pieces ---- */

static int forward_pieces(worker_arg *a, fsps_client *c, uint64_t t,
                          uint32_t l) {
  for (uint32_t p = 0; p < NCUT; p++) {
    const float *w;
    int rc = fsps_forward_piece(c, l, p, &w);
    if (rc != FSPS_OK)
      return rc;
    a->piece_sum[t][l][p] = checksum(w, cut[p + 1] - cut[p]);
    if ((rc = fsps_forward_piece_done(c, l, p)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

static int backward_pieces(worker_arg *a, fsps_client *c, uint64_t t,
                           uint32_t l) {
  for (uint32_t p = NCUT; p-- > 0;) {
    float *g;
    uint64_t n = cut[p + 1] - cut[p];
    int rc = fsps_backward_piece(c, l, p, &g);
    if (rc != FSPS_OK)
      return rc;
    a->mismatches += checksum(g, n) != a->piece_sum[t][l][p];
    fill_grad_at(g, cut[p], n, a->rank, t, l);
    if ((rc = fsps_backward_piece_done(c, l, p)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

static int forward(worker_arg *a, fsps_client *c, uint64_t t) {
  for (uint32_t l = 0; l < LAYERS; l++) {
    if (fsps_num_pieces(c, l) > 1) {
      int rc = forward_pieces(a, c, t, l);
      if (rc != FSPS_OK)
        return rc;
      continue;
    }
    const float *w;
    int rc = fsps_forward(c, l, &w);
    if (rc != FSPS_OK)
      return rc;
    a->fwd_sum[t][l] = checksum(w, sizes[l]);
    if ((rc = fsps_forward_done(c, l)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

/* backward_layer hands out layer l's gradient one way or the other and
 * checks that the parameters are those forward saw. */
static int backward_layer(worker_arg *a, fsps_client *c, uint64_t t,
                          uint32_t l) {
  if (fsps_num_pieces(c, l) > 1)
    return backward_pieces(a, c, t, l);
  const float *w;
  float *g;
  int rc = a->inplace_all || l % 2 ? fsps_backward_inplace(c, l, &g)
                                   : fsps_backward(c, l, &w, &g);
  if (rc != FSPS_OK)
    return rc;
  if (a->inplace_all || l % 2)
    w = g;
  a->mismatches += checksum(w, sizes[l]) != a->fwd_sum[t][l];
  fill_grad(g, sizes[l], a->rank, t, l);
  return fsps_backward_done(c, l);
}

/* cut_layers cuts the big layers at cut[] and checks what is refused: a
 * bad cut, and layer-wide calls on a layer in pieces. */
static int cut_layers(fsps_client *c) {
  static const uint64_t bad[] = {0, 5, 5, 300000};
  if (fsps_set_pieces(c, 1, 3, bad) != FSPS_INVALID_ARGUMENT ||
      fsps_set_pieces(c, 1, 1, cut) != FSPS_OK)
    return FSPS_INTERNAL;
  for (uint32_t l = 0; l < LAYERS; l++)
    if (sizes[l] == cut[NCUT] && fsps_set_pieces(c, l, NCUT, cut) != FSPS_OK)
      return FSPS_INTERNAL;
  const float *w;
  float *g;
  int rc = fsps_step_begin(c, 0);
  if (rc == FSPS_OK &&
      (fsps_forward(c, 1, &w) != FSPS_INVALID_ARGUMENT ||
       fsps_set_pieces(c, 1, 1, NULL) != FSPS_FAILED_PRECONDITION ||
       fsps_num_pieces(c, 1) != NCUT || fsps_num_pieces(c, 0) != 1))
    rc = FSPS_INTERNAL;
  /* Half a gradient: its streamed push ends short, counts nothing, and
   * step_end says so. */
  for (uint32_t l = 0; rc == FSPS_OK && l < LAYERS; l++)
    for (uint32_t p = 0; rc == FSPS_OK && p < fsps_num_pieces(c, l); p++)
      if ((rc = fsps_forward_piece(c, l, p, &w)) == FSPS_OK)
        rc = fsps_forward_piece_done(c, l, p);
  if (rc == FSPS_OK &&
      (rc = fsps_backward_piece(c, 3, NCUT - 1, &g)) == FSPS_OK) {
    memset(g, 0, (cut[NCUT] - cut[NCUT - 1]) * sizeof *g);
    rc = fsps_backward_piece_done(c, 3, NCUT - 1);
  }
  if (rc == FSPS_OK && fsps_step_end(c) != FSPS_FAILED_PRECONDITION)
    rc = FSPS_INTERNAL;
  return rc;
}

/* abandon leaves a step halfway, a streamed push open, for fsps_close:
 * which must end it rather than wait for it. */
static void abandon(fsps_client *c) {
  const float *w;
  float *g;
  if (fsps_step_begin(c, STEPS) != FSPS_OK)
    return;
  for (uint32_t l = 0; l < LAYERS; l++)
    for (uint32_t p = 0; p < fsps_num_pieces(c, l); p++)
      if (fsps_forward_piece(c, l, p, &w) != FSPS_OK ||
          fsps_forward_piece_done(c, l, p) != FSPS_OK)
        return;
  if (fsps_backward_piece(c, 3, NCUT - 1, &g) == FSPS_OK) {
    memset(g, 0, (cut[NCUT] - cut[NCUT - 1]) * sizeof *g);
    fsps_backward_piece_done(c, 3, NCUT - 1);
  }
}

static int train(worker_arg *a, fsps_client *c) {
  int rc = a->pieces ? cut_layers(c) : FSPS_OK;
  for (uint32_t l = 0; l < LAYERS && a->rank == 0 && rc == FSPS_OK; l++) {
    uint64_t v = 1;
    a->init[l] = malloc(sizes[l] * 4);
    rc = fsps_gather(c, l, 0, a->init[l], &v); /* before anyone pushed */
    if (rc == FSPS_OK && v != 0)
      rc = FSPS_INTERNAL; /* reported as a failure of the worker */
  }
  for (uint64_t t = 0; t < STEPS && rc == FSPS_OK; t++) {
    if ((rc = fsps_step_begin(c, t)) == FSPS_OK)
      rc = forward(a, c, t);
    for (uint32_t l = LAYERS; l-- > 0 && rc == FSPS_OK;)
      rc = backward_layer(a, c, t, l);
    if (rc == FSPS_OK)
      rc = fsps_step_end(c);
  }
  for (uint32_t l = 0; l < LAYERS && rc == FSPS_OK; l++) {
    a->final[l] = malloc(sizes[l] * 4);
    rc = fsps_gather(c, l, STEPS, a->final[l], NULL);
  }
  if (rc == FSPS_OK && a->pieces)
    abandon(c);
  return rc;
}

static void *worker_main(void *arg) {
  worker_arg *a = arg;
  fsps_spec *spec = make_spec();
  fsps_client *c = NULL;
  a->rc = connect_worker(a, &c, spec);
  if (a->rc == FSPS_OK)
    a->rc = train(a, c);
  if (a->rc != FSPS_OK && c != NULL)
    snprintf(a->err, sizeof a->err, "%s", fsps_last_error(c));
  a->peak = fsps_peak_buffer_bytes(c);
  fsps_bytes_moved(c, &a->gathered, NULL);
  fsps_close(c);
  fsps_spec_destroy(spec);
  return NULL;
}

static void free_worker(worker_arg *a) {
  for (uint32_t l = 0; l < LAYERS; l++) {
    free(a->init[l]);
    free(a->final[l]);
  }
}

/* run_case trains with S servers and W workers and checks the result;
 * with max_peak_floats, the buffers held, and with gathered_floats, what
 * rank 1 gathered. */
static void run_case_cut(int S, uint32_t W, uint32_t prefetch, bool inplace_all,
                         bool pieces, uint64_t max_peak_floats,
                         uint64_t gathered_floats) {
  static const char *const det[] = {"--deterministic", NULL};
  cluster cl;
  assert_int_equal(test_cluster_start(&cl, S, (int)W, det), 0);
  worker_arg a[4] = {{0}};
  pthread_t th[4];
  for (uint32_t w = 0; w < W; w++) {
    a[w] = (worker_arg){.servers = cl.servers,
                        .rank = w,
                        .world = W,
                        .prefetch = prefetch,
                        .inplace_all = inplace_all,
                        .pieces = pieces};
    pthread_create(&th[w], NULL, worker_main, &a[w]);
  }
  for (uint32_t w = 0; w < W; w++)
    pthread_join(th[w], NULL);
  for (uint32_t w = 0; w < W; w++) {
    if (a[w].rc != FSPS_OK)
      fail_msg("worker %u: %s: %s", w, fsps_err_name(a[w].rc), a[w].err);
    assert_int_equal(a[w].mismatches, 0);
    if (max_peak_floats && a[w].peak > max_peak_floats * 4)
      fail_msg("worker %u held %" PRIu64
               " bytes of buffers, more than %" PRIu64,
               w, a[w].peak, max_peak_floats * 4);
  }
  if (gathered_floats && a[1].gathered != gathered_floats * 4)
    fail_msg("worker 1 gathered %" PRIu64 " bytes, not %" PRIu64, a[1].gathered,
             gathered_floats * 4);
  for (uint32_t l = 0; l < LAYERS; l++) {
    reference(a[0].init[l], sizes[l], l, W);
    for (uint32_t w = 0; w < W; w++)
      if (memcmp(a[0].init[l], a[w].final[l], sizes[l] * 4) != 0)
        fail_msg("S=%d W=%u layer %u: worker %u differs from the reference", S,
                 W, l, w);
  }
  for (uint32_t w = 0; w < W; w++)
    free_worker(&a[w]);
  assert_int_equal(test_cluster_stop(&cl), 0);
}

static void run_case(int S, uint32_t W, uint32_t prefetch, bool inplace_all,
                     uint64_t max_peak_floats, uint64_t gathered_floats) {
  run_case_cut(S, W, prefetch, inplace_all, false, max_peak_floats,
               gathered_floats);
}

/* In place, prefetch 1: two big buffers and a small one, never a third
 * big one (a prefetch in backward waits for the pushed gradient's buffer
 * instead of taking a new one), plus at most 1/64 for the keep plan. The
 * first step gathers layers 0-2 again for backward (3 and 4 are kept);
 * the plan made from its pool keeps 0 and 2 too (2 at the cost of a
 * buffer for layer 4), so later steps gather only layer 1 again. Then
 * rank 1 gathers the final model (and, unlike rank 0, no initial one). */
static void test_inplace_two_buffers(void **state) {
  (void)state;
  const uint64_t model = 1000 + 3 * 300000 + 10, pool = 2 * 300000 + 1000;
  run_case(2, 2, 1, true, pool + pool / 64,
           model + 601000 + (STEPS - 1) * (model + 300000) + model);
}

/* Mixed in-place and separate gradients, deeper prefetch, other S and W:
 * the same training, bit for bit. */
static void test_mixed_gradients(void **state) {
  (void)state;
  run_case(1, 1, 1, false, 0, 0);
  run_case(3, 2, 2, false, 0, 0);
  run_case(2, 3, 0, true, 0, 0);
}

/* The big layers in uneven pieces, gathered by range and pushed as
 * streamed chunks: the same training, bit for bit, and every piece's
 * parameters in backward are those forward saw. */
static void test_pieces(void **state) {
  (void)state;
  run_case_cut(2, 2, 1, true, true, 0, 0);
  run_case_cut(3, 2, 2, true, true, 0, 0);
  run_case_cut(1, 1, 0, true, true, 0, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pieces),
      cmocka_unit_test(test_inplace_two_buffers),
      cmocka_unit_test(test_mixed_gradients),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
