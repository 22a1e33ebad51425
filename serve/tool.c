/* tool.c: the source configuration fsps-serve and fsps-export build from
 * their flags (see tool.h). */
#include "tool.h"

static const char *or_null(const char *s) {
  return s[0] ? s : NULL;
}

void serve_tool_source(const serve_opts *o, const char *tool, bool follow,
                       serve_source_config *cfg) {
  *cfg = (serve_source_config){
      .checkpoint_dir = or_null(o->checkpoint_dir),
      .pick_version = o->pick_version,
      .version = o->checkpoint_version,
      .servers = or_null(o->servers),
      .token_file = or_null(o->token_file),
      .tls_ca = or_null(o->tls_ca),
      .tls_cert = or_null(o->tls_cert),
      .tls_key = or_null(o->tls_key),
      .tls_server_name = or_null(o->tls_server_name),
      .timeout_ms = (int64_t)o->timeout_ms,
      .poll_ms = o->poll_ms,
      .follow = follow,
      .tool = tool,
  };
}
