/* test_values.c: explicit values (init "client", fsps_set_values) against
 * real fsps-server processes, S = 1, 2, 3: a gather of a layer waits until
 * its values arrive and then returns exactly them, a layer of several
 * chunks a slice included, and training goes on from them bit for bit;
 * each refusal (a layer of another init, NaN, other values, a layer that
 * began training) changes nothing; a rollback to version 0 brings the
 * given values back, never zeros. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <fsps/fsps.h>

#include "cluster.h"
#include "optim/optim.h"

#define W 2
#define LR 0.05
#define N_GIVEN (37 * 53 + 37) /* layer 0: weight and bias, client */
#define N_BIG 600000           /* layer 1: client, > 1 chunk a slice (S<=2) */
#define N_DRAWN 32             /* layer 2: he_uniform, drawn by the servers */
#define LAYERS 3

static const uint64_t sizes[LAYERS] = {N_GIVEN, N_BIG, N_DRAWN};

static fsps_spec *make_spec(void) {
  fsps_spec *spec = fsps_spec_create(5);
  uint64_t w[2] = {37, 53}, b[1] = {37}, big[1] = {N_BIG}, d[2] = {4, 8};
  assert_int_equal(fsps_spec_add_layer(spec, "given"), FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "weight", 2, w, "client", 0, 0),
                   FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "bias", 1, b, "client", 0, 0),
                   FSPS_OK);
  assert_int_equal(fsps_spec_add_layer(spec, "big"), FSPS_OK);
  assert_int_equal(fsps_spec_add_tensor(spec, "v", 1, big, "client", 0, 0),
                   FSPS_OK);
  assert_int_equal(fsps_spec_add_layer(spec, "drawn"), FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "weight", 2, d, "he_uniform", 0, 0), FSPS_OK);
  assert_int_equal(fsps_spec_set_optimizer(spec, "sgd", LR), FSPS_OK);
  return spec;
}

/* values returns layer l's values to give: a fixed function, finite. */
static float *values(uint32_t l, float base) {
  float *v = malloc(sizes[l] * sizeof *v);
  assert_non_null(v);
  for (uint64_t i = 0; i < sizes[l]; i++)
    v[i] = base + (float)sin(0.001 * (double)i + (double)l);
  return v;
}

static fsps_client *connect_rank(const char *servers, uint32_t rank,
                                 int64_t timeout_ms, const fsps_spec *spec) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = servers;
  o.rank = rank;
  o.world = W;
  o.timeout_ms = timeout_ms;
  fsps_client *c;
  char err[256];
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err), FSPS_OK);
  assert_int_equal(
      rank == 0 ? fsps_declare(c, spec) : fsps_attach(c, spec, 30000), FSPS_OK);
  return c;
}

/* A cluster of S servers and W workers, and a client whose calls give up
 * after 300 ms: how a test sees that a gather does not succeed. */
typedef struct {
  cluster cl;
  fsps_spec *spec;
  fsps_client *c0, *c1, *quick;
} setup;

static void setup_start(setup *x, int S, const char *const *flags) {
  assert_int_equal(test_cluster_start(&x->cl, S, W, flags), 0);
  x->spec = make_spec();
  x->c0 = connect_rank(x->cl.servers, 0, 30000, x->spec);
  x->c1 = connect_rank(x->cl.servers, 1, 30000, x->spec);
  x->quick = connect_rank(x->cl.servers, 1, 300, x->spec);
}

static void setup_stop(setup *x) {
  fsps_close(x->c0);
  fsps_close(x->c1);
  fsps_close(x->quick);
  fsps_spec_destroy(x->spec);
  assert_int_equal(test_cluster_stop(&x->cl), 0);
}

/* assert_waits checks that a gather of layer l does not succeed (yet). */
static void assert_waits(setup *x, uint32_t l) {
  float *buf = malloc(sizes[l] * sizeof *buf);
  assert_int_equal(fsps_gather(x->quick, l, 0, buf, NULL),
                   FSPS_DEADLINE_EXCEEDED);
  free(buf);
}

/* assert_layer gathers layer l at version (exactly) and compares its bits
 * with want. */
static void assert_layer(fsps_client *c, uint32_t l, uint64_t version,
                         const float *want) {
  float *buf = malloc(sizes[l] * sizeof *buf);
  uint64_t v = UINT64_MAX;
  assert_int_equal(fsps_gather(c, l, version, buf, &v), FSPS_OK);
  assert_int_equal(v, version);
  assert_memory_equal(buf, want, sizes[l] * sizeof *buf);
  free(buf);
}

/* A gather on another thread, to see it blocked and then answered. */
typedef struct {
  fsps_client *c;
  uint32_t layer;
  float *buf;
  int rc;
  atomic_bool done;
} bg_gather;

static void *bg_main(void *arg) {
  bg_gather *g = arg;
  g->rc = fsps_gather(g->c, g->layer, 0, g->buf, NULL);
  atomic_store(&g->done, true);
  return NULL;
}

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* reference is layer l after one SGD step from v with worker w's gradient
 * g(w) = w + 1, as the servers compute it: the mean of the W gradients. */
static float *reference(uint32_t l, const float *v) {
  float *p = malloc(sizes[l] * sizeof *p), *g = malloc(sizes[l] * sizeof *g);
  memcpy(p, v, sizes[l] * sizeof *p);
  for (uint64_t i = 0; i < sizes[l]; i++)
    g[i] = 1.0f + 2.0f; /* worker 0's 1 plus worker 1's 2, in worker order */
  optim_config cfg;
  optim_config_defaults(OPTIM_SGD, &cfg);
  cfg.lr = (float)LR;
  optim_step(&cfg, 1, cfg.lr, 1.0f / W, p, g, NULL, sizes[l]);
  free(g);
  return p;
}

/* push_all pushes worker w's gradient (w + 1 everywhere) of every layer
 * for step 0 and waits. */
static int push_all(fsps_client *c, uint32_t w) {
  float *g = malloc(N_BIG * sizeof *g);
  for (uint64_t i = 0; i < N_BIG; i++)
    g[i] = (float)(w + 1);
  for (uint32_t l = 0; l < LAYERS; l++)
    assert_int_equal(fsps_push(c, l, 0, g), FSPS_OK);
  int rc = fsps_push_wait(c);
  free(g);
  return rc;
}

/* Gathers wait for the values, get exactly them once given, and training
 * goes on from them as from any initial values. */
static void values_case(int S) {
  static const char *const det[] = {"--deterministic", NULL};
  setup x;
  setup_start(&x, S, det);
  float *v0 = values(0, 1.0f), *v1 = values(1, -2.0f);
  assert_waits(&x, 0);
  assert_waits(&x, 1);
  bg_gather g = {.c = x.c1, .layer = 0, .buf = malloc(N_GIVEN * 4)};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, bg_main, &g), 0);
  nap_ms(200);
  assert_false(atomic_load(&g.done)); /* parked until the values come */
  assert_int_equal(fsps_set_values(x.c0, 0, v0), FSPS_OK);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(g.rc, FSPS_OK);
  assert_memory_equal(g.buf, v0, N_GIVEN * sizeof(float));
  assert_waits(&x, 1); /* layer by layer */
  assert_int_equal(fsps_set_values(x.c1, 1, v1), FSPS_OK);
  assert_layer(x.c0, 1, 0, v1);
  assert_int_equal(push_all(x.c0, 0), FSPS_OK);
  assert_int_equal(push_all(x.c1, 1), FSPS_OK);
  float *r0 = reference(0, v0), *r1 = reference(1, v1);
  assert_layer(x.c0, 0, 1, r0);
  assert_layer(x.c1, 1, 1, r1);
  free(r0);
  free(r1);
  free(g.buf);
  free(v0);
  free(v1);
  setup_stop(&x);
}

static void test_values_S1(void **state) {
  (void)state;
  values_case(1);
}

static void test_values_S2(void **state) {
  (void)state;
  values_case(2);
}

static void test_values_S3(void **state) {
  (void)state;
  values_case(3);
}

/* refused asserts that rc is code with a message holding frag. */
static void refused(fsps_client *c, int rc, int code, const char *frag) {
  if (rc != code || strstr(fsps_last_error(c), frag) == NULL)
    fail_msg("rc %d (%s), expected %d with \"%s\"", rc, fsps_last_error(c),
             code, frag);
}

static void test_values_refusals_change_nothing(void **state) {
  (void)state;
  setup x;
  setup_start(&x, 2, NULL);
  float *v = values(0, 3.0f), *d = values(2, 0.0f);
  refused(x.c0, fsps_set_values(x.c0, 2, d), FSPS_FAILED_PRECONDITION,
          "layer 2 'drawn' is initialised by the servers (init he_uniform)");
  v[77] = NAN;
  refused(x.c0, fsps_set_values(x.c0, 0, v), FSPS_INVALID_ARGUMENT,
          "values[77] of layer 0 'given' is NaN");
  refused(x.c0, fsps_set_values(x.c0, 5, v), FSPS_INVALID_ARGUMENT, "layer 5");
  v[77] = 0.5f;
  float *g = calloc(N_GIVEN, sizeof *g);
  assert_int_equal(fsps_push(x.c0, 0, 0, g), FSPS_OK);
  refused(x.c0, fsps_push_wait(x.c0), FSPS_FAILED_PRECONDITION,
          "'given' awaits its values");
  assert_waits(&x, 0);
  assert_int_equal(fsps_set_values(x.c0, 0, v), FSPS_OK);
  assert_int_equal(fsps_set_values(x.c1, 0, v), FSPS_OK); /* the same */
  float keep = v[1000];
  v[1000] = keep + 1.0f;
  refused(x.c1, fsps_set_values(x.c1, 0, v), FSPS_ALREADY_EXISTS,
          "holds other values already (element 1000");
  v[1000] = keep;
  assert_layer(x.c1, 0, 0, v);
  assert_int_equal(fsps_push(x.c0, 0, 0, g), FSPS_OK); /* training begins */
  assert_int_equal(fsps_push_wait(x.c0), FSPS_OK);
  refused(x.c1, fsps_set_values(x.c1, 0, v), FSPS_FAILED_PRECONDITION,
          "has begun training");
  assert_layer(x.c1, 0, 0, v);
  free(g);
  free(v);
  free(d);
  setup_stop(&x);
}

/* Worker 0 makes step 0; worker 1 pushes layer 1 only, which completes it
 * (version 1), and fails before layer 0. Recovery rolls the cluster back
 * to version 0: the layers come back to the given values, not zeros, and
 * giving them again is a duplicate. */
static void test_values_come_back_after_rollback(void **state) {
  (void)state;
  static const char *const det[] = {"--deterministic", NULL};
  setup x;
  setup_start(&x, 2, det);
  float *v0 = values(0, 4.0f), *v1 = values(1, 5.0f);
  assert_int_equal(fsps_set_values(x.c0, 0, v0), FSPS_OK);
  assert_int_equal(fsps_set_values(x.c0, 1, v1), FSPS_OK);
  assert_int_equal(push_all(x.c0, 0), FSPS_OK);
  float *g = malloc(N_BIG * sizeof *g);
  for (uint64_t i = 0; i < N_BIG; i++)
    g[i] = 2.0f;
  assert_int_equal(fsps_push(x.c1, 1, 0, g), FSPS_OK);
  assert_int_equal(fsps_push_wait(x.c1), FSPS_OK);
  uint64_t version, next;
  assert_int_equal(fsps_layer_version(x.c1, 1, &version), FSPS_OK);
  assert_int_equal(version, 1);
  assert_int_equal(fsps_recover(x.c1, &next), FSPS_OK);
  assert_int_equal(next, 0);
  assert_layer(x.c1, 1, 0, v1);
  assert_layer(x.c1, 0, 0, v0);
  assert_int_equal(fsps_set_values(x.c1, 1, v1), FSPS_OK);
  free(g);
  free(v0);
  free(v1);
  setup_stop(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_S1),
      cmocka_unit_test(test_values_S2),
      cmocka_unit_test(test_values_S3),
      cmocka_unit_test(test_values_refusals_change_nothing),
      cmocka_unit_test(test_values_come_back_after_rollback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
