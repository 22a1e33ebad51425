/* main.c: fsps-worker's entry point — options, data, model declaration,
 * training and clean-up. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

#define MAX_WIDTHS 64

static int load_data(trainer *t, uint32_t in, uint32_t classes, char *err,
                     size_t errlen) {
  const worker_opts *o = t->opts;
  if (o->synthetic) {
    if (worker_data_synthetic(o->synthetic, in, classes, o->seed, &t->train) !=
            0 ||
        worker_data_synthetic(o->synthetic / 5 + 1, in, classes, o->seed,
                              &t->test) != 0) {
      snprintf(err, errlen, "out of memory for synthetic data");
      return -1;
    }
    return 0;
  }
  if (worker_data_load_fashion(o->data_dir, true, &t->train, err, errlen) !=
          0 ||
      worker_data_load_fashion(o->data_dir, false, &t->test, err, errlen) != 0)
    return -1;
  if (t->train.rows * t->train.cols != in) {
    snprintf(err, errlen,
             "the model's input width %u does not match the data's %u "
             "features (%ux%u images)",
             in, t->train.rows * t->train.cols, t->train.rows, t->train.cols);
    return -1;
  }
  if (o->train_limit && o->train_limit < t->train.n)
    t->train.n = o->train_limit;
  if (o->normalize) {
    worker_data_normalize(&t->train, 0.2860f, 0.3530f);
    worker_data_normalize(&t->test, 0.2860f, 0.3530f);
  }
  return 0;
}

static int setup(trainer *t, const uint32_t *w, uint32_t nw, char *err,
                 size_t errlen) {
  const worker_opts *o = t->opts;
  if (load_data(t, w[0], w[nw - 1], err, errlen) != 0)
    return -1;
  if (worker_data_sampler_init(&t->sampler, t->train.n, o->world, o->rank,
                               o->batch, o->seed) != 0) {
    snprintf(err, errlen,
             "%u workers x batch %u = %u samples per step, more than the "
             "%u training samples",
             o->world, o->batch, o->world * o->batch, t->train.n);
    return -1;
  }
  t->net = model_mlp_create(w, nw, o->batch);
  t->layers = nw - 1;
  t->x = malloc((size_t)o->batch * w[0] * sizeof(float));
  t->y = malloc(o->batch);
  t->eval_idx = malloc(o->batch * sizeof(uint32_t));
  if (!t->net || !t->x || !t->y || !t->eval_idx) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* connect_with_token connects with the token of --token-file,
 * FSPS_TOKEN_FILE or FSPS_TOKEN (none: no token), wiped once copied. */
static int connect_with_token(const worker_opts *o, fsps_options *fo,
                              fsps_client **c, char *err, size_t errlen) {
  char token[4097];
  int rc = fsps_token_load(o->token_file, token, sizeof token, err, errlen);
  if (rc == FSPS_OK || rc == FSPS_NOT_FOUND) {
    err[0] = '\0'; /* "no token given" is no error: none is sent */
    fo->token = token;
    rc = fsps_connect(fo, c, err, errlen);
  }
  explicit_bzero(token, sizeof token);
  return rc;
}

/* set_tls passes --tls-* on (unset flags stay NULL). */
static void set_tls(fsps_options *fo, const worker_opts *o) {
  fo->tls_ca = o->tls_ca[0] ? o->tls_ca : NULL;
  fo->tls_cert = o->tls_cert[0] ? o->tls_cert : NULL;
  fo->tls_key = o->tls_key[0] ? o->tls_key : NULL;
  fo->tls_server_name = o->tls_server_name[0] ? o->tls_server_name : NULL;
}

static int connect_and_declare(trainer *t, const fsps_spec *spec, char *err,
                               size_t errlen) {
  const worker_opts *o = t->opts;
  fsps_options fo;
  fsps_options_init(&fo);
  fo.servers = o->servers;
  fo.rank = o->rank;
  fo.world = o->world;
  fo.mode = !strcmp(o->mode, "ssp")   ? FSPS_SSP
            : !strcmp(o->mode, "asp") ? FSPS_ASP
                                      : FSPS_BSP;
  fo.staleness = o->staleness;
  fo.prefetch = o->prefetch;
  fo.reshard_after_forward = o->reshard;
  fo.timeout_ms = o->timeout_ms;
  set_tls(&fo, o);
  int rc = connect_with_token(o, &fo, &t->client, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  rc = o->rank == 0 ? fsps_declare(t->client, spec)
                    : fsps_attach(t->client, spec, o->timeout_ms);
  if (rc == FSPS_OK)
    rc = train_set_pieces(t);
  if (rc != FSPS_OK)
    snprintf(err, errlen, "%s", fsps_last_error(t->client));
  return rc;
}

/* local_params fills a local copy of the model with small fixed values. */
static int local_params(trainer *t) {
  uint64_t most = 0;
  int rc = train_alloc_params(t);
  for (uint32_t l = 0; rc == FSPS_OK && l < t->layers; l++) {
    uint64_t n = model_mlp_layer_size(t->net, l);
    for (uint64_t i = 0; i < n; i++)
      t->params[l][i] = 0.01f * (float)((int)(i % 7) - 3);
    most = n > most ? n : most;
  }
  if (rc == FSPS_OK && (t->local_grad = malloc(most * sizeof(float))) == NULL)
    rc = FSPS_NOMEM;
  return rc;
}

static void cleanup(trainer *t) {
  fsps_close(t->client);
  for (uint32_t l = 0; t->params && l < t->layers; l++)
    free(t->params[l]);
  free(t->params);
  model_mlp_destroy(t->net);
  worker_data_sampler_free(&t->sampler);
  worker_data_free(&t->train);
  worker_data_free(&t->test);
  free(t->x);
  free(t->y);
  free(t->eval_idx);
  free(t->local_grad);
  free(t->piece_buf);
  if (t->jsonl != NULL)
    fclose(t->jsonl);
}

static int run(trainer *t, char *err, size_t errlen) {
  uint32_t w[MAX_WIDTHS], nw;
  if (model_mlp_parse(t->opts->model, w, MAX_WIDTHS, &nw, err, errlen) != 0 ||
      setup(t, w, nw, err, errlen) != 0)
    return 2;
  /* Before any server is asked: a bad path leaves no model declared. */
  if (t->opts->log_jsonl[0] &&
      (t->jsonl = worker_jsonl_open(t->opts->log_jsonl, err, errlen)) == NULL)
    return 2;
  fsps_spec *spec =
      train_spec(w, nw, t->opts, train_total_steps(t), err, errlen);
  if (spec == NULL)
    return 2;
  int rc = t->opts->local ? local_params(t)
                          : connect_and_declare(t, spec, err, errlen);
  fsps_spec_destroy(spec);
  if (rc == FSPS_OK)
    rc = train_run(t);
  if (rc == FSPS_OK && t->opts->dump[0] &&
      (rc = train_dump(t, t->opts->dump)) == FSPS_IO)
    snprintf(err, errlen, "cannot write --dump %.900s: %s", t->opts->dump,
             strerror(errno));
  if (rc != FSPS_OK) {
    if (t->client && !err[0])
      snprintf(err, errlen, "%s", fsps_last_error(t->client));
    return 1;
  }
  train_summary(t);
  return 0;
}

int main(int argc, char **argv) {
  worker_opts o;
  char err[1024] = "";
  int rc = worker_opts_parse(argc, argv, &o, err, sizeof err);
  if (rc != 0) {
    if (rc < 0)
      fprintf(stderr, "fsps-worker: %s\n", err);
    return rc < 0 ? 2 : 0;
  }
  /* gRPC's receive buffers then reuse pages already faulted in. */
  fsps_tune_malloc();
  worker_log_setup(o.rank, (logfmt_format)logfmt_parse_format(o.log_format));
  trainer t = {.opts = &o};
  /* Metrics first: a bad address stops the worker before it starts. */
  if (o.metrics_listen[0] &&
      (t.metrics = worker_metrics_start(&o, err, sizeof err)) == NULL) {
    fprintf(stderr, "fsps-worker %u: %s\n", o.rank, err);
    return 1;
  }
  rc = run(&t, err, sizeof err);
  if (rc != 0)
    worker_log_fatal(err);
  cleanup(&t);
  worker_metrics_stop(t.metrics);
  return rc;
}
