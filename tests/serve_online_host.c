/* serve_online_host.c: a test fixture that hosts serve/online for tests
 * and benchmarks until fsps-serve's own main does: a model of given widths
 * whose parameters come from a raw float32 file (or a seeded generator),
 * served on the open inference protocol until SIGTERM or SIGINT; then it
 * prints its counters as one JSON line on stdout and exits 0.
 *
 *   serve_online_host --widths mlp:W0,...,WL [--params FILE] [--seed N]
 *       [--version V] [--listen ADDR] [--port-file PATH] [--model-name N]
 *       [--max-batch N] [--max-delay-us N] [--threads N] [--wait-usr1]
 *       [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
 *
 * --params holds every layer's vector in order (weight [out][in], then
 * bias [out]), little-endian float32, nothing else. --wait-usr1 serves
 * with no model loaded (not ready) until SIGUSR1 arrives. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "online.h"

typedef struct {
  const char *widths, *params;
  uint64_t seed, version;
  bool wait_usr1;
  serve_online_config cfg;
} host_opts;

static int usage(void) {
  fprintf(stderr,
          "usage: serve_online_host --widths mlp:W0,...,WL [--params FILE] "
          "[--seed N] [--version V] [--listen ADDR] [--port-file PATH] "
          "[--model-name NAME] [--max-batch N] [--max-delay-us N] "
          "[--threads N] [--wait-usr1] [--tls-cert PEM --tls-key PEM "
          "[--tls-client-ca PEM]]\n");
  return 2;
}

static int number(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || s[0] < '0' || s[0] > '9')
    return -1;
  *out = v;
  return 0;
}

static int parse(int argc, char **argv, host_opts *o) {
  static const struct option lo[] = {{"widths", 1, NULL, 'w'},
                                     {"params", 1, NULL, 'p'},
                                     {"seed", 1, NULL, 's'},
                                     {"version", 1, NULL, 'v'},
                                     {"listen", 1, NULL, 'l'},
                                     {"port-file", 1, NULL, 'f'},
                                     {"model-name", 1, NULL, 'n'},
                                     {"max-batch", 1, NULL, 'b'},
                                     {"max-delay-us", 1, NULL, 'd'},
                                     {"threads", 1, NULL, 't'},
                                     {"wait-usr1", 0, NULL, 'u'},
                                     {"tls-cert", 1, NULL, 'C'},
                                     {"tls-key", 1, NULL, 'K'},
                                     {"tls-client-ca", 1, NULL, 'A'},
                                     {NULL, 0, NULL, 0}};
  *o = (host_opts){.seed = 1,
                   .cfg = {.listen = "127.0.0.1:0", .max_delay_us = 500}};
  int c;
  uint64_t v = 0;
  while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    bool num = strchr("svbdt", c) != NULL;
    if (c == '?' || (num && number(optarg, &v) != 0))
      return -1;
    switch (c) {
    case 'w':
      o->widths = optarg;
      break;
    case 'p':
      o->params = optarg;
      break;
    case 's':
      o->seed = v;
      break;
    case 'v':
      o->version = v;
      break;
    case 'l':
      o->cfg.listen = optarg;
      break;
    case 'f':
      o->cfg.port_file = optarg;
      break;
    case 'n':
      o->cfg.model_name = optarg;
      break;
    case 'b':
      o->cfg.max_batch = (uint32_t)v;
      break;
    case 'd':
      o->cfg.max_delay_us = (uint32_t)v;
      break;
    case 't':
      o->cfg.threads = (uint32_t)v;
      break;
    case 'u':
      o->wait_usr1 = true;
      break;
    case 'C':
      o->cfg.tls_cert = optarg;
      break;
    case 'K':
      o->cfg.tls_key = optarg;
      break;
    case 'A':
      o->cfg.tls_client_ca = optarg;
      break;
    }
  }
  return o->widths != NULL && optind == argc ? 0 : -1;
}

/* load fills s's parameters from path, which must hold exactly them. */
static int load(serve_snapshot *s, const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "serve_online_host: cannot open %s: %s\n", path,
            strerror(errno));
    return -1;
  }
  int rc = 0;
  for (uint32_t l = 0; rc == 0 && l + 1 < s->nwidths; l++) {
    size_t n = serve_snapshot_layer_size(s, l);
    if (fread(s->params[l], sizeof(float), n, f) != n)
      rc = -1;
  }
  if (rc == 0 && fgetc(f) != EOF)
    rc = -1;
  fclose(f);
  if (rc != 0)
    fprintf(stderr,
            "serve_online_host: %s does not hold exactly the "
            "model's parameters\n",
            path);
  return rc;
}

/* fill draws parameters in [-0.5, 0.5) / sqrt(in) from a seeded LCG. */
static void fill(serve_snapshot *s, uint64_t seed) {
  for (uint32_t l = 0; l + 1 < s->nwidths; l++) {
    float scale = 1.0f / sqrtf((float)s->widths[l]);
    for (uint64_t i = 0; i < serve_snapshot_layer_size(s, l); i++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      s->params[l][i] =
          scale * ((float)((seed >> 40) / (double)(1ull << 24)) - 0.5f);
    }
  }
}

static serve_snapshot *make_model(const host_opts *o) {
  uint32_t w[SERVE_MAX_WIDTHS], n;
  char err[256];
  if (model_mlp_parse(o->widths, w, SERVE_MAX_WIDTHS, &n, err, sizeof err) !=
      0) {
    fprintf(stderr, "serve_online_host: %s\n", err);
    return NULL;
  }
  serve_snapshot *s = serve_snapshot_new(w, n, o->version);
  if (s == NULL)
    return NULL;
  if (o->params == NULL)
    fill(s, o->seed);
  else if (load(s, o->params) != 0) {
    serve_snapshot_unref(s);
    return NULL;
  }
  return s;
}

static void print_stats(const serve_online_stats *s) {
  printf("{\"requests\":%" PRIu64 ",\"refused\":%" PRIu64
         ",\"batches\":%" PRIu64 ",\"rows\":%" PRIu64 ",\"answered\":%" PRIu64
         ",\"deadline_exceeded\":%" PRIu64 ",\"cancelled\":%" PRIu64 "}\n",
         s->requests, s->refused, s->batches, s->rows, s->answered,
         s->deadline_exceeded, s->cancelled);
  fflush(stdout);
}

/* serve waits for signals: SIGUSR1 publishes the model (once), SIGTERM
 * and SIGINT stop. */
static void serve(serve_online *srv, serve_slot *slot, serve_snapshot *model,
                  const sigset_t *set) {
  for (;;) {
    int sig;
    if (sigwait(set, &sig) != 0)
      continue;
    if (sig == SIGUSR1 && model != NULL) {
      serve_slot_publish(slot, model);
      model = NULL;
    } else if (sig != SIGUSR1) {
      break;
    }
  }
  serve_snapshot_unref(model);
  serve_online_stats st;
  serve_online_get_stats(srv, &st);
  serve_online_stop(srv);
  print_stats(&st);
}

int main(int argc, char **argv) {
  host_opts o;
  if (parse(argc, argv, &o) != 0)
    return usage();
  serve_snapshot *model = make_model(&o);
  if (model == NULL)
    return 1;
  /* Signals are taken by sigwait alone: blocked before any thread starts,
   * so every thread inherits the mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  serve_slot *slot = serve_slot_create();
  if (!o.wait_usr1) {
    serve_slot_publish(slot, model);
    model = NULL;
  }
  char msg[512];
  serve_online *srv = serve_online_start(&o.cfg, slot, msg, sizeof msg);
  if (srv == NULL) {
    fprintf(stderr, "serve_online_host: %s\n", msg);
    serve_snapshot_unref(model);
    serve_slot_destroy(slot);
    return 1;
  }
  serve(srv, slot, model, &set);
  serve_slot_destroy(slot);
  return 0;
}
