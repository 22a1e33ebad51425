/* test_recover.c: fsps_recover against real fsps-server processes — a
 * worker whose step failed half-way goes on so that every step is computed
 * from exactly its version's parameters: when a layer has moved past the
 * step it must compute again, the cluster is rolled back into a new epoch,
 * and what the other worker computed before is refused, never counted.
 * The result is bit for bit a single-process reference's. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <fsps/fsps.h>

#include "cluster.h"
#include "optim/optim.h"

#define W 2
#define STEPS 2
#define LR 0.05
#define L0 40 /* layer 0's size */
#define L1 24 /* layer 1's size */

static const uint64_t sizes[] = {L0, L1};

static fsps_spec *make_spec(void) {
  fsps_spec *spec = fsps_spec_create(11);
  assert_int_equal(fsps_spec_add_layer(spec, "l0"), FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "w", 1, &sizes[0], "normal", 0, 1), FSPS_OK);
  assert_int_equal(fsps_spec_add_layer(spec, "l1"), FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "w", 1, &sizes[1], "normal", 0, 1), FSPS_OK);
  assert_int_equal(fsps_spec_set_optimizer(spec, "sgd", LR), FSPS_OK);
  return spec;
}

/* sum adds n floats in order: what layer 0's gradient depends on. */
static float sum(const float *p, uint64_t n) {
  float s = 0;
  for (uint64_t i = 0; i < n; i++)
    s += p[i];
  return s;
}

/* grad is worker w's gradient of a layer with parameters p: it depends on
 * the layer's own parameters and, for layer 0, on the sum of layer 1's, as
 * a lower layer's gradient depends on the layers above it. */
static void grad(float *g, const float *p, uint64_t n, uint32_t w, float s1) {
  for (uint64_t i = 0; i < n; i++)
    g[i] = 0.01f * (float)(w + 1) * (p[i] + s1);
}

static fsps_client *connect_rank(const char *servers, uint32_t rank,
                                 const fsps_spec *spec) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = servers;
  o.rank = rank;
  o.world = W;
  o.timeout_ms = 30000;
  fsps_client *c;
  char err[256];
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err), FSPS_OK);
  assert_int_equal(
      rank == 0 ? fsps_declare(c, spec) : fsps_attach(c, spec, 30000), FSPS_OK);
  return c;
}

/* step runs worker w's step t; with `half` it stops after layer 1's
 * gradient, as a worker does whose push failed. */
static int step(fsps_client *c, uint32_t w, uint64_t t, bool half) {
  const float *p;
  float *g, s1 = 0;
  int rc = fsps_step_begin(c, t);
  for (uint32_t l = 0; rc == FSPS_OK && l < 2; l++) {
    if ((rc = fsps_forward(c, l, &p)) == FSPS_OK && l == 1)
      s1 = sum(p, L1);
    if (rc == FSPS_OK)
      rc = fsps_forward_done(c, l);
  }
  for (uint32_t l = 2; rc == FSPS_OK && l-- > 0;) {
    if (half && l == 0)
      break;
    if ((rc = fsps_backward(c, l, &p, &g)) == FSPS_OK) {
      grad(g, p, sizes[l], w, l == 0 ? s1 : 0);
      rc = fsps_backward_done(c, l);
    }
  }
  int end = fsps_step_end(c);
  return rc != FSPS_OK ? rc : end;
}

/* reference trains the initial values init[] as the servers do with
 * --deterministic: gradients summed in worker order, SGD with the mean. */
static void reference(float *p0, float *p1) {
  optim_config cfg;
  optim_config_defaults(OPTIM_SGD, &cfg);
  cfg.lr = LR;
  float acc0[L0], acc1[L1], g0[L0], g1[L1];
  for (uint64_t t = 0; t < STEPS; t++) {
    float s1 = sum(p1, L1);
    for (uint32_t w = 0; w < W; w++) {
      grad(w ? g0 : acc0, p0, L0, w, s1);
      grad(w ? g1 : acc1, p1, L1, w, 0);
      for (uint64_t i = 0; w && i < L0; i++)
        acc0[i] += g0[i];
      for (uint64_t i = 0; w && i < L1; i++)
        acc1[i] += g1[i];
    }
    optim_step(&cfg, t + 1, cfg.lr, 1.0f / W, p0, acc0, NULL, L0);
    optim_step(&cfg, t + 1, cfg.lr, 1.0f / W, p1, acc1, NULL, L1);
  }
}

static void assert_layer(fsps_client *c, uint32_t l, const float *want) {
  float got[L0];
  uint64_t version;
  assert_int_equal(fsps_gather(c, l, STEPS, got, &version), FSPS_OK);
  assert_int_equal(version, STEPS);
  assert_memory_equal(got, want, sizes[l] * sizeof(float));
}

/* Two workers on two real servers, with the model's initial values. */
typedef struct {
  cluster cl;
  fsps_spec *spec;
  fsps_client *c0, *c1;
  float p0[L0], p1[L1]; /* initial values, then the reference's result */
} pair;

static void pair_start(pair *x, const char *const *flags) {
  assert_int_equal(test_cluster_start(&x->cl, 2, W, flags), 0);
  x->spec = make_spec();
  x->c0 = connect_rank(x->cl.servers, 0, x->spec);
  x->c1 = connect_rank(x->cl.servers, 1, x->spec);
  assert_int_equal(fsps_gather(x->c0, 0, 0, x->p0, NULL), FSPS_OK);
  assert_int_equal(fsps_gather(x->c0, 1, 0, x->p1, NULL), FSPS_OK);
}

/* pair_check says the servers hold what the single-process reference
 * trains from the initial values. */
static void pair_check(pair *x) {
  reference(x->p0, x->p1);
  assert_layer(x->c0, 0, x->p0);
  assert_layer(x->c0, 1, x->p1);
}

static void pair_stop(pair *x) {
  fsps_close(x->c0);
  fsps_close(x->c1);
  fsps_spec_destroy(x->spec);
  assert_int_equal(test_cluster_stop(&x->cl), 0);
}

/* Worker 1 pushes layer 1 of step 0, which completes it (version 1), and
 * fails before layer 0: computing step 0 again would see layer 1 at
 * version 1. Recovery rolls the cluster back to version 0 in a new epoch;
 * worker 0, which had finished step 0, is refused and computes it again. */
static void test_half_step_is_computed_again_exactly(void **state) {
  (void)state;
  static const char *const flags[] = {"--deterministic", NULL};
  pair x;
  pair_start(&x, flags);
  fsps_client *c0 = x.c0, *c1 = x.c1;
  assert_int_equal(step(c0, 0, 0, false), FSPS_OK);
  step(c1, 1, 0, true); /* layer 0 never pushed: step_end has no error */
  uint64_t v, next;
  assert_int_equal(fsps_layer_version(c1, 1, &v), FSPS_OK);
  assert_int_equal(v, 1); /* layer 1 moved past step 0 */
  assert_int_equal(fsps_recover(c1, &next), FSPS_OK);
  assert_int_equal(next, 0);
  assert_int_equal(fsps_layer_version(c1, 1, &v), FSPS_OK);
  assert_int_equal(v, 0); /* rolled back */
  assert_int_equal(step(c1, 1, 0, false), FSPS_OK);
  /* Worker 0 is in the old epoch: its next step is refused at once. */
  assert_int_equal(step(c0, 0, 1, false), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(c0), "epoch"));
  assert_int_equal(fsps_recover(c0, &next), FSPS_OK);
  assert_int_equal(next, 0);
  assert_int_equal(step(c0, 0, 0, false), FSPS_OK);
  for (uint64_t t = 1; t < STEPS; t++) {
    assert_int_equal(step(c0, 0, t, false), FSPS_OK);
    assert_int_equal(step(c1, 1, t, false), FSPS_OK);
  }
  pair_check(&x);
  pair_stop(&x);
}

/* A worker whose pushes were all counted, though it did not hear so, goes
 * on with the next step: nothing is computed or sent twice. */
static void test_counted_step_is_not_computed_again(void **state) {
  (void)state;
  static const char *const flags[] = {"--deterministic", NULL};
  pair x;
  pair_start(&x, flags);
  fsps_client *c0 = x.c0, *c1 = x.c1;
  assert_int_equal(step(c1, 1, 0, false), FSPS_OK);
  uint64_t next;
  assert_int_equal(fsps_recover(c1, &next), FSPS_OK);
  assert_int_equal(next, 1); /* step 0 is pushed: worker 0 is behind */
  assert_int_equal(fsps_recover(c0, &next), FSPS_OK);
  assert_int_equal(next, 0);
  pair_stop(&x);
}

/* ckpt_path names server s of 2's checkpoint file of version v in dir. */
static void ckpt_path(char *out, size_t len, const char *dir, int s,
                      uint64_t v) {
  snprintf(out, len, "%s/ckpt-s%dof2-v%020" PRIu64 ".fsps", dir, s, v);
}

/* wait_file waits (10 s at most) until path exists. */
static void wait_file(const char *path) {
  struct timespec ts = {0, 10000000};
  for (int i = 0; i < 1000 && access(path, F_OK) != 0; i++)
    nanosleep(&ts, NULL);
  assert_int_equal(access(path, F_OK), 0);
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[512];
  while (d != NULL && (e = readdir(d)) != NULL) {
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (e->d_name[0] != '.')
      unlink(path);
  }
  if (d != NULL)
    closedir(d);
  rmdir(dir);
}

/* A rollback to a version one server has lost the file of (it lists it
 * still) fails there; recovery tries an older version, here the initial
 * values, and the result is still exact. */
static void test_missing_file_falls_back_to_an_older_version(void **state) {
  (void)state;
  char dir[] = "/tmp/fsps-ckpt-XXXXXX", path[512];
  assert_non_null(mkdtemp(dir));
  const char *const flags[] = {"--deterministic",
                               "--checkpoint-dir",
                               dir,
                               "--checkpoint-every",
                               "1",
                               NULL};
  pair x;
  pair_start(&x, flags);
  fsps_client *c0 = x.c0, *c1 = x.c1;
  assert_int_equal(step(c0, 0, 0, false), FSPS_OK);
  assert_int_equal(step(c1, 1, 0, false), FSPS_OK);
  for (int s = 0; s < 2; s++) {
    ckpt_path(path, sizeof path, dir, s, 1);
    wait_file(path);
  }
  assert_int_equal(step(c0, 0, 1, false), FSPS_OK);
  step(c1, 1, 1, true);              /* layer 1 moves on to version 2 */
  assert_int_equal(unlink(path), 0); /* server 1's file of version 1 */
  uint64_t next;
  assert_int_equal(fsps_recover(c1, &next), FSPS_OK);
  assert_int_equal(next, 0);
  assert_int_equal(step(c0, 0, 2, false), FSPS_FAILED_PRECONDITION);
  assert_int_equal(fsps_recover(c0, &next), FSPS_OK);
  assert_int_equal(next, 0);
  for (uint64_t t = 0; t < STEPS; t++) {
    assert_int_equal(step(c0, 0, t, false), FSPS_OK);
    assert_int_equal(step(c1, 1, t, false), FSPS_OK);
  }
  pair_check(&x);
  pair_stop(&x);
  remove_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_half_step_is_computed_again_exactly),
      cmocka_unit_test(test_counted_step_is_not_computed_again),
      cmocka_unit_test(test_missing_file_falls_back_to_an_older_version),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
