/* service.h: fsps-server's gRPC methods — Init, Pull, Push, Status,
 * Checkpoint, Rollback, SetValues and grpc.health.v1.Health/Check —
 * bridging protobuf and the shard store. */
#ifndef FSPS_SERVER_SERVICE_H
#define FSPS_SERVER_SERVICE_H

#include <stdatomic.h>
#include <stddef.h>

#include "rpc.h"
#include "smetrics.h"
#include "store.h"
#include "wire.h"

struct ckpt;
struct server_auth;

#define SERVICE_METHODS WIRE_NUM_METHODS /* wire's paths, each served */

typedef struct {
  store *st;
  struct ckpt *ck; /* NULL without --checkpoint-dir */
  server_metrics *m; /* NULL without --metrics-listen */
  atomic_ullong pulls, pushes, rejected;
  uint64_t incarnation; /* random, drawn at start (StatusReply) */
  rpc_method methods[SERVICE_METHODS]; /* see server_service_methods */
  /* The admission gate's tokens; NULL without --auth-tokens: no gate. */
  struct server_auth *auth;
  rpc_method health[1];                /* see server_health_method */
} service;

/* server_service_methods fills svc's method table, whose handlers all get svc
 * as their context, and returns it (it lives as long as svc). */
const rpc_method *server_service_methods(service *svc, size_t *n);

/* server_health_method returns a one-method table: svc's
 * grpc.health.v1.Health/Check, for a port that serves nothing else. */
const rpc_method *server_health_method(service *svc);

/* Handlers of the streaming methods, in pull.c, push.c and values.c. */
void server_pull_start(rpc_call *call, rpc_msg *msg, void *ctx);
void server_pull_sent(rpc_call *call, bool ok, void *ctx);
void server_pull_cancel(rpc_call *call, void *ctx);
void server_pull_done(rpc_call *call, void *ctx);
void server_push_start(rpc_call *call, rpc_msg *msg, void *ctx);
void server_push_message(rpc_call *call, rpc_msg *msg, void *ctx);
void server_push_done(rpc_call *call, void *ctx);
void server_values_start(rpc_call *call, rpc_msg *msg, void *ctx);
void server_values_message(rpc_call *call, rpc_msg *msg, void *ctx);
void server_values_done(rpc_call *call, void *ctx);
void server_rollback_start(rpc_call *call, rpc_msg *msg, void *ctx);

/* server_service_later runs fn(svc, call, req) on the checkpoint thread
 * (svc->ck must exist), which answers the call: how a method does file work
 * without blocking a call thread. If it cannot be queued (stopping, out of
 * memory) the call is refused here and fn(svc, NULL, req) runs at once, only to
 * free req. */
void server_service_later(service *svc, rpc_call *call,
                          void (*fn)(service *, rpc_call *, void *), void *req);

/* server_service_reject counts a refused request and fails the call with msg.
 */
void server_service_reject(service *svc, rpc_call *call, int code,
                           const char *msg);

#endif
