/* secure.h: fsps-server's TLS options for rpc, and the plaintext
 * health-only port (--health-listen). */
#ifndef FSPS_SERVER_SECURE_H
#define FSPS_SERVER_SECURE_H

#include "config.h"
#include "rpc.h"
#include "service.h"

/* server_tls_opts fills tls from --tls-* (reloads and refusals go to the
 * server's log) and returns it, or NULL when TLS is off. */
const rpc_server_tls *server_tls_opts(const server_config *cfg,
                                      rpc_server_tls *tls);

/* server_rpc_log sends gRPC core's log lines (refused handshakes) to the
 * server's log. */
void server_rpc_log(void);

/* server_health_start serves svc's health check alone, in plaintext, on
 * --health-listen and writes --health-port-file. Returns the server, or
 * NULL when there is no --health-listen or it failed (logged: check
 * cfg->health_listen to tell). */
rpc_server *server_health_start(const server_config *cfg, service *svc);

/* server_health_stop stops and frees h (NULL is fine). */
void server_health_stop(rpc_server *h);

#endif
