/* export_main.c: fsps-export — writes a model (checkpoint folder or live
 * servers) as safetensors with PyTorch's nn.Sequential names. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "fsps_err.h"
#include "serve_opts.h"
#include "safetensors.h"
#include "source.h"
#include "tool.h"

#ifndef FSPS_VERSION
#define FSPS_VERSION "0.0.0"
#endif

static int export_slot(const serve_opts *o, serve_slot *slot) {
  char msg[4096];
  serve_snapshot *s = serve_slot_acquire(slot);
  int rc = s ? serve_safetensors_write(o->output, s, FSPS_VERSION, msg,
                                       sizeof msg)
             : FSPS_FAILED_PRECONDITION;
  if (rc == FSPS_OK) {
    fprintf(stderr, "fsps-export: wrote %s: model version %" PRIu64 ", widths",
            o->output, s->version);
    for (uint32_t i = 0; i < s->nwidths; i++)
      fprintf(stderr, "%s%" PRIu32, i ? "," : " ", s->widths[i]);
    fprintf(stderr, "\n");
  } else {
    fprintf(stderr, "fsps-export: %s\n", s ? msg : "no model loaded");
  }
  serve_snapshot_unref(s);
  return rc == FSPS_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  static serve_opts o;
  char err[4096];
  int prc = serve_opts_parse(OPTS_EXPORT, argc, argv, &o, err, sizeof err);
  if (prc != 0) {
    if (prc < 0)
      fprintf(stderr, "fsps-export: %s\n", err);
    return prc < 0 ? 2 : 0;
  }
  serve_source_config sc;
  serve_tool_source(&o, "fsps-export", false, &sc);
  serve_slot *slot = serve_slot_create();
  serve_source *src = slot ? serve_source_open(&sc, slot, err, sizeof err)
                           : NULL;
  int rc = 1;
  if (src == NULL)
    fprintf(stderr, "fsps-export: %s\n", slot ? err : "out of memory");
  else
    rc = export_slot(&o, slot);
  serve_source_close(src);
  serve_slot_destroy(slot);
  return rc;
}
