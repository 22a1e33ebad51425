/* secure.c: fsps-server's TLS set-up (rpc's certificate watcher logging
 * through the server's log) and the plaintext port that serves
 * grpc.health.v1 alone, for probes that cannot speak TLS. */
#include <stdio.h>

#include "log.h"
#include "secure.h"
#include "wire.h"

static void tls_log(void *arg, rpc_log_level level, const char *msg) {
  (void)arg;
  server_log_msg(level == RPC_LOG_ERROR  ? LOG_ERROR
                 : level == RPC_LOG_WARN ? LOG_WARN
                 : level == RPC_LOG_INFO ? LOG_INFO
                                         : LOG_DEBUG,
                 "%s", msg);
}

void server_rpc_log(void) {
  rpc_set_log(tls_log, NULL);
}

const rpc_server_tls *server_tls_opts(const server_config *cfg,
                                      rpc_server_tls *tls) {
  if (!cfg->tls_cert[0])
    return NULL;
  *tls = (rpc_server_tls){.cert_file = cfg->tls_cert,
                          .key_file = cfg->tls_key,
                          .client_ca_file =
                              cfg->tls_client_ca[0] ? cfg->tls_client_ca : NULL,
                          .log = tls_log};
  return tls;
}

static int write_port(const char *path, int port) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  return fclose(f) != 0 || rename(tmp, path) != 0 ? -1 : 0;
}

rpc_server *server_health_start(const server_config *cfg, service *svc) {
  if (!cfg->health_listen[0])
    return NULL;
  rpc_server_opts o = {.listen = cfg->health_listen,
                       .threads = 1,
                       .max_message_bytes = WIRE_MAX_MESSAGE_BYTES};
  rpc_status st;
  rpc_server *h = rpc_server_create(&o, server_health_method(svc), 1, &st);
  if (h == NULL) {
    LOGE("--health-listen: %s", st.msg);
    return NULL;
  }
  if (rpc_server_start(h, &st) != FSPS_OK) {
    LOGE("--health-listen: %s", st.msg);
    rpc_server_destroy(h);
    return NULL;
  }
  int port = rpc_server_port(h);
  if (cfg->health_port_file[0] && write_port(cfg->health_port_file, port) != 0)
    LOGW("cannot write the health port to %s", cfg->health_port_file);
  LOGI("grpc.health.v1 alone, in plaintext, on %s (port %d)",
       cfg->health_listen, port);
  return h;
}

void server_health_stop(rpc_server *h) {
  if (h == NULL)
    return;
  rpc_server_shutdown(h, 0);
  rpc_server_destroy(h);
}
