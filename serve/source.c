/* source.c: serve_source_open/close (see source.h) — a checkpoint folder
 * read once, or live servers (source_live.c) followed by a thread. */
#include <stdio.h>
#include <stdlib.h>

#include "fsps_err.h"
#include "source.h"
#include "source_int.h"

struct serve_source {
  source_live *live; /* NULL for a checkpoint folder */
};

serve_source *serve_source_open(const serve_source_config *cfg,
                                serve_slot *slot, char *msg, size_t msglen) {
  serve_source *src = calloc(1, sizeof *src);
  if (src == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  if (cfg->checkpoint_dir != NULL) {
    int rc;
    serve_snapshot *s = serve_source_load_dir(cfg, &rc, msg, msglen);
    if (s != NULL) {
      serve_slot_publish(slot, s);
      return src;
    }
  } else if ((src->live = source_live_start(cfg, slot, msg, msglen)) != NULL) {
    return src;
  }
  free(src);
  return NULL;
}

void serve_source_close(serve_source *src) {
  if (src == NULL)
    return;
  source_live_stop(src->live);
  free(src);
}
