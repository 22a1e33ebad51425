/* ctl_driver.c: puts a cluster in a known state for the fsps-ctl test
 * (tests/integration/test_ctl.py): declares a 2-layer model for 2 workers
 * and, as both workers, pushes steps [FIRST, LAST); with PARTIAL 1 worker
 * 0 alone then pushes step LAST, which leaves every layer waiting for
 * worker 1. A C program, so that it runs in the sanitizer builds too.
 *
 *   ctl_driver SERVERS FIRST LAST PARTIAL */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <fsps/fsps.h>

#define W 2

static const uint64_t sizes[] = {40, 24};

static fsps_spec *make_spec(void) {
  fsps_spec *spec = fsps_spec_create(7);
  fsps_spec_add_layer(spec, "fc1");
  fsps_spec_add_tensor(spec, "weight", 1, &sizes[0], "normal", 0, 1);
  fsps_spec_add_layer(spec, "fc2");
  fsps_spec_add_tensor(spec, "weight", 1, &sizes[1], "normal", 0, 1);
  fsps_spec_set_optimizer(spec, "sgd", 0.1);
  return spec;
}

static int push_step(fsps_client *c, uint64_t t) {
  static const float g[40] = {0.5f};
  int rc = FSPS_OK;
  for (uint32_t l = 0; rc == FSPS_OK && l < 2; l++)
    rc = fsps_push(c, l, t, g);
  int end = fsps_push_wait(c);
  return rc != FSPS_OK ? rc : end;
}

static int fail(fsps_client *c, const char *what, int rc) {
  fprintf(stderr, "ctl_driver: %s: %s (%s)\n", what,
          c ? fsps_last_error(c) : "", fsps_err_name(rc));
  return 1;
}

static int run(fsps_client **w, const fsps_spec *spec, uint64_t first,
               uint64_t last, int partial) {
  int rc = fsps_declare(w[0], spec);
  if (rc != FSPS_OK)
    return fail(w[0], "declare", rc);
  if ((rc = fsps_attach(w[1], spec, 10000)) != FSPS_OK)
    return fail(w[1], "attach", rc);
  for (uint64_t t = first; t < last; t++)
    for (uint32_t r = 0; r < W; r++)
      if ((rc = push_step(w[r], t)) != FSPS_OK)
        return fail(w[r], "push", rc);
  if (partial && (rc = push_step(w[0], last)) != FSPS_OK)
    return fail(w[0], "push", rc);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: ctl_driver SERVERS FIRST LAST PARTIAL\n");
    return 2;
  }
  fsps_client *w[W] = {NULL, NULL};
  for (uint32_t r = 0; r < W; r++) {
    fsps_options o;
    fsps_options_init(&o);
    o.servers = argv[1];
    o.rank = r;
    o.world = W;
    o.timeout_ms = 20000;
    char err[256];
    int rc = fsps_connect(&o, &w[r], err, sizeof err);
    if (rc != FSPS_OK) {
      fprintf(stderr, "ctl_driver: connect: %s\n", err);
      fsps_close(w[0]);
      return 1;
    }
  }
  fsps_spec *spec = make_spec();
  int code = run(w, spec, strtoull(argv[2], NULL, 10),
                 strtoull(argv[3], NULL, 10), atoi(argv[4]));
  for (uint32_t r = 0; r < W; r++)
    fsps_close(w[r]);
  fsps_spec_destroy(spec);
  return code;
}
