/* main.c: fsps-serve — loads the model (checkpoint folder or live servers)
 * and scores a file in batch (--input/--output), or serves online. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "batch.h"
#include "fsps_err.h"
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

/* online serves on the open inference protocol. ---- ONLINE MODE ----
 * At merge, with serve/online.h (#include "online.h"): copy o->online's
 * fields into a serve_online_config (same names; "" is NULL), call
 * serve_online_start(&cfg, slot, msg, sizeof msg), wait for SIGTERM/SIGINT,
 * then serve_online_stop. */
static int online(const serve_opts *o, serve_slot *slot) {
  (void)o;
  (void)slot;
  fprintf(stderr, "fsps-serve: online serving is not in this build; score a "
                  "file with --input FILE --output FILE\n");
  return 1;
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
  serve_slot *slot = serve_slot_create();
  serve_source *src = slot ? serve_source_open(&sc, slot, err, sizeof err)
                           : NULL;
  int rc = 1;
  if (src == NULL)
    fprintf(stderr, "fsps-serve: %s\n", slot ? err : "out of memory");
  else
    rc = o.input[0] ? batch(&o, slot) : online(&o, slot);
  serve_source_close(src);
  serve_slot_destroy(slot);
  return rc;
}
