/* test_admin.c: the operator's calls of libfsps (fsps_status_get and its
 * accessors, fsps_checkpoint, fsps_rollback) against real fsps-server
 * processes: what they report, what they change, and what they refuse
 * without changing anything. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <fsps/fsps.h>

#include "cluster.h"

#define S 2
#define W 2
#define N0 40 /* layer 0's size */
#define N1 24 /* layer 1's size */

static const uint64_t sizes[] = {N0, N1};

static fsps_spec *make_spec(void) {
  fsps_spec *spec = fsps_spec_create(7);
  assert_int_equal(fsps_spec_add_layer(spec, "fc1"), FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "w", 1, &sizes[0], "normal", 0, 1), FSPS_OK);
  assert_int_equal(fsps_spec_add_layer(spec, "fc2"), FSPS_OK);
  assert_int_equal(
      fsps_spec_add_tensor(spec, "w", 1, &sizes[1], "normal", 0, 1), FSPS_OK);
  assert_int_equal(fsps_spec_set_optimizer(spec, "sgd", 0.1), FSPS_OK);
  return spec;
}

static fsps_client *open_client(const char *servers, uint32_t rank) {
  fsps_options o;
  fsps_options_init(&o);
  o.servers = servers;
  o.rank = rank;
  o.world = W;
  o.timeout_ms = 10000;
  o.retries = 1;
  fsps_client *c = NULL;
  char err[256];
  assert_int_equal(fsps_connect(&o, &c, err, sizeof err), FSPS_OK);
  return c;
}

/* push_step pushes a constant gradient of both layers for step t. */
static int push_step(fsps_client *c, uint64_t t) {
  static float g[N0];
  for (int i = 0; i < N0; i++)
    g[i] = 0.5f;
  int rc = FSPS_OK;
  for (uint32_t l = 0; rc == FSPS_OK && l < 2; l++)
    rc = fsps_push(c, l, t, g);
  int end = fsps_push_wait(c);
  return rc != FSPS_OK ? rc : end;
}

typedef struct {
  cluster cl;
  char dir[64];
  fsps_spec *spec;
  fsps_client *w[W]; /* workers 0 and 1 */
  fsps_client *admin;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/fsps-admin-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  const char *const flags[] = {"--checkpoint-dir", f->dir, NULL};
  assert_int_equal(test_cluster_start(&f->cl, S, W, flags), 0);
  f->spec = make_spec();
  for (uint32_t r = 0; r < W; r++)
    f->w[r] = open_client(f->cl.servers, r);
  f->admin = open_client(f->cl.servers, 0);
  *state = f;
  return 0;
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

static int teardown(void **state) {
  fixture *f = *state;
  for (uint32_t r = 0; r < W; r++)
    fsps_close(f->w[r]);
  fsps_close(f->admin);
  fsps_spec_destroy(f->spec);
  assert_int_equal(test_cluster_stop(&f->cl), 0);
  remove_dir(f->dir);
  free(f);
  return 0;
}

/* declare_and_train declares the model and runs full steps [0, steps),
 * then worker 0 alone pushes step `steps`. */
static void declare_and_train(fixture *f, uint64_t steps) {
  assert_int_equal(fsps_declare(f->w[0], f->spec), FSPS_OK);
  assert_int_equal(fsps_attach(f->w[1], f->spec, 10000), FSPS_OK);
  for (uint64_t t = 0; t < steps; t++)
    for (uint32_t r = 0; r < W; r++)
      assert_int_equal(push_step(f->w[r], t), FSPS_OK);
  assert_int_equal(push_step(f->w[0], steps), FSPS_OK);
}

/* expect_layers checks every layer on every server is at version v. */
static void expect_versions(fsps_client *admin, uint64_t v) {
  fsps_status *st = NULL;
  assert_int_equal(fsps_status_get(admin, &st), FSPS_OK);
  for (uint32_t s = 0; s < S; s++)
    for (uint32_t l = 0; l < 2; l++)
      assert_int_equal(fsps_status_layer_version(st, s, l), v);
  fsps_status_free(st);
}

static void test_status_without_model(void **state) {
  fixture *f = *state;
  fsps_status *st = NULL;
  assert_int_equal(fsps_status_get(f->admin, &st), FSPS_OK);
  assert_int_equal(fsps_status_num_servers(st), S);
  assert_int_equal(fsps_num_servers(f->admin), S);
  for (uint32_t s = 0; s < S; s++) {
    const char *msg = NULL;
    assert_int_equal(fsps_status_error(st, s, &msg), FSPS_OK);
    assert_string_equal(msg, "");
    assert_false(fsps_status_initialized(st, s));
    assert_int_equal(fsps_status_num_layers(st, s), 0);
    assert_int_equal(fsps_status_server_index(st, s), s);
    assert_int_equal(fsps_status_server_count(st, s), S);
    assert_int_equal(fsps_status_num_workers(st, s), W);
    assert_string_equal(fsps_status_mode(st, s), "bsp");
    assert_int_not_equal(fsps_status_incarnation(st, s), 0);
    assert_non_null(strstr(f->cl.servers, fsps_status_address(st, s)));
  }
  /* out of range: zeros, never a crash */
  assert_int_equal(fsps_status_num_layers(st, S), 0);
  assert_string_equal(fsps_status_layer_name(st, 0, 9), "");
  assert_int_equal(fsps_status_layer_missing(st, 0, 9, NULL), 0);
  assert_int_equal(fsps_status_error(st, S, NULL), FSPS_INVALID_ARGUMENT);
  assert_int_equal(fsps_status_num_servers(NULL), 0);
  fsps_status_free(st);
  fsps_status_free(NULL);
  assert_int_equal(fsps_status_get(f->admin, NULL), FSPS_INVALID_ARGUMENT);
  /* no model: nothing to roll back */
  assert_int_equal(fsps_rollback(f->admin, 0, NULL), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(f->admin), "no model"));
}

static void expect_ids(uint32_t n, const uint32_t *ids, uint32_t want_n,
                       const uint32_t *want) {
  assert_int_equal(n, want_n);
  for (uint32_t i = 0; i < n; i++)
    assert_int_equal(ids[i], want[i]);
}

/* After 3 full steps and worker 0's push of step 3, every layer is at
 * version 3 and waits for worker 1. */
static void test_status_names_the_missing_worker(void **state) {
  fixture *f = *state;
  declare_and_train(f, 3);
  fsps_status *st = NULL;
  assert_int_equal(fsps_status_get(f->admin, &st), FSPS_OK);
  static const uint32_t zero[] = {0}, one[] = {1};
  for (uint32_t s = 0; s < S; s++) {
    assert_true(fsps_status_initialized(st, s));
    assert_int_equal(fsps_status_spec_hash(st, s), fsps_spec_hash(f->spec));
    assert_int_equal(fsps_status_epoch(st, s), 0);
    assert_int_equal(fsps_status_num_layers(st, s), 2);
    for (uint32_t l = 0; l < 2; l++) {
      const uint32_t *ids;
      assert_string_equal(fsps_status_layer_name(st, s, l), l ? "fc2" : "fc1");
      assert_int_equal(fsps_status_layer_size(st, s, l), sizes[l]);
      assert_int_equal(fsps_status_layer_version(st, s, l), 3);
      assert_int_equal(fsps_status_layer_pending_step(st, s, l), 3);
      assert_false(fsps_status_layer_awaiting_values(st, s, l));
      uint32_t n = fsps_status_layer_pushed(st, s, l, &ids);
      expect_ids(n, ids, 1, zero); /* ids is set by the call before */
      n = fsps_status_layer_missing(st, s, l, &ids);
      expect_ids(n, ids, 1, one);
      assert_int_equal(fsps_status_layer_absent(st, s, l, &ids), 0);
    }
  }
  fsps_status_free(st);
}

/* A checkpoint on each server, then two more steps; a rollback to a
 * version without checkpoint is refused and changes nothing; one to the
 * checkpoint takes every server back, into a new epoch that refuses the
 * workers' old one. */
static void test_checkpoint_and_rollback(void **state) {
  fixture *f = *state;
  declare_and_train(f, 2);
  for (uint32_t s = 0; s < S; s++) {
    char path[512];
    uint64_t v = 99, bytes = 0;
    assert_int_equal(
        fsps_checkpoint(f->admin, s, path, sizeof path, &v, &bytes), FSPS_OK);
    assert_int_equal(v, 2);
    assert_true(bytes > 0);
    assert_non_null(strstr(path, f->dir));
    assert_int_equal(access(path, R_OK), 0);
  }
  assert_int_equal(fsps_checkpoint(f->admin, S, NULL, 0, NULL, NULL),
                   FSPS_INVALID_ARGUMENT);
  assert_int_equal(push_step(f->w[1], 2), FSPS_OK);
  for (uint32_t r = 0; r < W; r++)
    assert_int_equal(push_step(f->w[r], 3), FSPS_OK);
  expect_versions(f->admin, 4);

  assert_int_equal(fsps_rollback(f->admin, 3, NULL), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(f->admin), "no checkpoint of it"));
  assert_int_equal(fsps_rollback(f->admin, 5, NULL), FSPS_FAILED_PRECONDITION);
  assert_non_null(strstr(fsps_last_error(f->admin), "forward"));
  expect_versions(f->admin, 4);

  uint64_t epoch = 0;
  assert_int_equal(fsps_rollback(f->admin, 2, &epoch), FSPS_OK);
  assert_int_not_equal(epoch, 0);
  expect_versions(f->admin, 2);
  fsps_status *st = NULL;
  assert_int_equal(fsps_status_get(f->admin, &st), FSPS_OK);
  for (uint32_t s = 0; s < S; s++) {
    const uint64_t *v;
    assert_int_equal(fsps_status_epoch(st, s), epoch);
    assert_true(fsps_status_checkpoints(st, s, &v) >= 1);
    assert_int_equal(v[0], 2);
  }
  fsps_status_free(st);
  /* a worker of the old epoch is refused, recovers and goes on from 2 */
  assert_int_equal(push_step(f->w[0], 2), FSPS_FAILED_PRECONDITION);
  uint64_t next = 0;
  assert_int_equal(fsps_recover(f->w[0], &next), FSPS_OK);
  assert_int_equal(next, 2);
  assert_int_equal(push_step(f->w[0], 2), FSPS_OK);
}

/* A server that does not answer is named; the others are still read. */
static void test_status_of_an_unreachable_server(void **state) {
  fixture *f = *state;
  char servers[512];
  /* port 1 on loopback: nobody listens there */
  snprintf(servers, sizeof servers, "%s,127.0.0.1:1", f->cl.servers);
  fsps_options o;
  fsps_options_init(&o);
  o.servers = servers;
  o.retries = 0;
  o.timeout_ms = 5000;
  fsps_client *c = NULL;
  assert_int_equal(fsps_connect(&o, &c, NULL, 0), FSPS_OK);
  fsps_status *st = NULL;
  assert_int_equal(fsps_status_get(c, &st), FSPS_UNAVAILABLE);
  assert_non_null(st);
  assert_non_null(strstr(fsps_last_error(c), "server 2 (127.0.0.1:1)"));
  const char *msg = NULL;
  assert_int_equal(fsps_status_error(st, 0, NULL), FSPS_OK);
  assert_int_equal(fsps_status_error(st, 2, &msg), FSPS_UNAVAILABLE);
  assert_true(strlen(msg) > 0);
  assert_string_equal(fsps_status_mode(st, 2), "");
  assert_string_equal(fsps_status_mode(st, 0), "bsp");
  fsps_status_free(st);
  assert_int_equal(fsps_rollback(c, 0, NULL), FSPS_UNAVAILABLE);
  fsps_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_status_without_model, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_status_names_the_missing_worker,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_checkpoint_and_rollback, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_status_of_an_unreachable_server,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
