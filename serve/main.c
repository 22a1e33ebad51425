/* main.c: fsps-serve — loads the model (checkpoint folder or live servers)
 * and scores a file in batch (--input/--output), or serves online on the
 * open inference protocol until SIGTERM or SIGINT. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "fsps_err.h"
#include "online.h"
#include "serve_metrics.h"
#include "serve_opts.h"
#include "source.h"
#include "tool.h"

static int batch(const serve_opts *o, serve_slot *slot) {
  char msg[4096];
  serve_batch_result res;
  serve_batch_config bc = {
      .input = o->input,
      .output = o->output,
      .labels = o->labels[0] ? o->labels : NULL,
      .input_format = o->input_format[0] ? o->input_format : NULL,
      .output_format = o->output_format[0] ? o->output_format : NULL,
      .max_batch = o->online.max_batch,
      .normalize = o->normalize,
      .progress_secs = o->progress_secs,
      .tool = "fsps-serve",
  };
  if (serve_batch_run(&bc, slot, &res, msg, sizeof msg) != FSPS_OK) {
    fprintf(stderr, "fsps-serve: %s\n", msg);
    return 1;
  }
  fprintf(stderr, "fsps-serve: wrote %" PRIu64 " predictions to %s (model "
          "version %" PRIu64, res.rows, o->output, res.first_version);
  if (res.last_version != res.first_version)
    fprintf(stderr, " to %" PRIu64, res.last_version);
  fprintf(stderr, ")\n");
  if (res.labelled > 0)
    fprintf(stderr, "fsps-serve: accuracy %.4f (%" PRIu64 "/%" PRIu64 ")\n",
            (double)res.correct / (double)res.labelled, res.correct,
            res.labelled);
  return 0;
}

static const char *or_null(const char *s) {
  return s[0] ? s : NULL;
}

/* online serves on the open inference protocol (serve/online.h) until one
 * of `stop` (blocked in every thread since before the first started)
 * arrives; then answers the calls in flight and returns. */
static int online(const serve_opts *o, serve_slot *slot, serve_metrics *sm,
                  const sigset_t *stop) {
  char msg[1024];
  serve_online_config oc = {
      .listen = o->online.listen,
      .model_name = o->online.model_name,
      .max_batch = o->online.max_batch,
      .max_delay_us = o->online.max_delay_us,
      .threads = o->online.threads,
      .port_file = or_null(o->online.port_file),
      .tls_cert = or_null(o->online.tls_cert),
      .tls_key = or_null(o->online.tls_key),
      .tls_client_ca = or_null(o->online.tls_client_ca),
  };
  serve_online *on = serve_online_start(&oc, slot, msg, sizeof msg);
  if (on == NULL) {
    fprintf(stderr, "fsps-serve: %s\n", msg);
    return 1;
  }
  fprintf(stderr, "fsps-serve: serving '%s' on port %d (%s)\n",
          o->online.model_name, serve_online_port(on),
          serve_slot_version(slot) == UINT64_MAX ? "not ready: loading"
                                                  : "ready");
  serve_metrics_online(sm, on);
  int sig = 0;
  sigwait(stop, &sig);
  serve_metrics_online(sm, NULL);
  fprintf(stderr, "fsps-serve: %s: answering the calls in flight, then "
          "stopping\n", strsignal(sig));
  serve_online_stop(on);
  return 0;
}

int main(int argc, char **argv) {
  static serve_opts o;
  char err[4096];
  int prc = serve_opts_parse(OPTS_SERVE, argc, argv, &o, err, sizeof err);
  if (prc != 0) {
    if (prc < 0)
      fprintf(stderr, "fsps-serve: %s\n", err);
    return prc < 0 ? 2 : 0;
  }
  serve_source_config sc;
  serve_tool_source(&o, "fsps-serve", true, &sc);
  sc.background = !o.input[0]; /* online: not ready until loaded */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (!o.input[0]) /* before any thread starts, so each inherits it */
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
  serve_slot *slot = serve_slot_create();
  serve_metrics *sm = NULL;
  if (slot && o.metrics_listen[0] &&
      (sm = serve_metrics_start(o.metrics_listen,
                                o.metrics_port_file[0] ? o.metrics_port_file
                                                       : NULL,
                                slot, err, sizeof err)) == NULL) {
    fprintf(stderr, "fsps-serve: --metrics-listen %s: %s\n", o.metrics_listen,
            err);
    serve_slot_destroy(slot);
    return 1;
  }
  serve_source *src = slot ? serve_source_open(&sc, slot, err, sizeof err)
                           : NULL;
  int rc = 1;
  if (src == NULL)
    fprintf(stderr, "fsps-serve: %s\n", slot ? err : "out of memory");
  else
    rc = o.input[0] ? batch(&o, slot) : online(&o, slot, sm, &stop);
  serve_source_close(src);
  serve_metrics_stop(sm);
  serve_slot_destroy(slot);
  return rc;
}
