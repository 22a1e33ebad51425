/* tool.h: what fsps-serve's and fsps-export's main programs share — the
 * source configuration built from their flags. */
#ifndef FSPS_SERVE_TOOL_H
#define FSPS_SERVE_TOOL_H

#include "serve_opts.h"
#include "source.h"

/* serve_tool_source fills *cfg from o (strings point into o). */
void serve_tool_source(const serve_opts *o, const char *tool, bool follow,
                       serve_source_config *cfg);

#endif
