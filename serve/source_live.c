/* source_live.c: the model from live fsps-servers. Not in this build: the
 * servers do not yet hand out the model spec (tensor shapes) that a
 * snapshot needs, so --servers is refused with a clear message. */
#include <stdio.h>

#include "source_int.h"

source_live *source_live_start(const serve_source_config *cfg,
                               serve_slot *slot, char *msg, size_t msglen) {
  (void)slot;
  snprintf(msg, msglen,
           "--servers %s: loading from live servers is not in this build "
           "yet (the servers do not hand out the model spec); use "
           "--checkpoint-dir",
           cfg->servers);
  return NULL;
}

void source_live_stop(source_live *live) {
  (void)live;
}
