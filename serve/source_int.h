/* source_int.h: serve/source's private half — following live servers
 * (source_live.c). */
#ifndef FSPS_SERVE_SOURCE_INT_H
#define FSPS_SERVE_SOURCE_INT_H

#include "source.h"

typedef struct source_live source_live;

/* source_live_start connects to cfg->servers, publishes the model at one
 * version into slot and, with cfg->follow, starts the thread that follows
 * newer versions. NULL with msg when no model could be loaded. */
source_live *source_live_start(const serve_source_config *cfg,
                               serve_slot *slot, char *msg, size_t msglen);

/* source_live_stop stops the thread and disconnects. NULL is a no-op. */
void source_live_stop(source_live *live);

#endif
