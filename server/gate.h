/* gate.h: the server's admission gate — every call's bearer token looked
 * up in the token table (auth.h) and its role checked against the method
 * before the method sees the call; the table reloaded on SIGHUP. */
#ifndef FSPS_SERVER_GATE_H
#define FSPS_SERVER_GATE_H

#include <stddef.h>

#include "auth.h"
#include "rpc.h"

typedef struct server_auth server_auth;

/* server_auth_create loads the token file at path (--auth-tokens).
 * Returns NULL with err naming the file and line when it cannot be used. */
server_auth *server_auth_create(const char *path, char *err, size_t errlen);

/* server_auth_destroy frees a (NULL is fine) once no call can reach it. */
void server_auth_destroy(server_auth *a);

/* server_auth_reload reads the token file again and, if it is good, puts
 * it in force for every call from then on (calls already admitted go on).
 * A file that cannot be used leaves the tokens in force as they were. Logs
 * the outcome; returns 0 when the new file is in force. Main thread. */
int server_auth_reload(server_auth *a);

/* server_auth_gate is the rpc gate (rpc_gate_fn) of a server with
 * --auth-tokens; ctx is its service. Health checks pass without a token;
 * any other call needs `authorization: Bearer TOKEN` with a token of the
 * table (else UNAUTHENTICATED) whose role may call the method (else
 * PERMISSION_DENIED). An admitted call keeps its role (rpc_call_auth);
 * each refusal is logged, naming peer, method and role, never the token. */
int server_auth_gate(rpc_call *call, const char *path, char *msg, size_t msglen,
                     void *ctx);

/* server_auth_refused logs a refusal as the gate does (and counts it in
 * the metrics, m may be NULL): for a method that refuses a role after
 * reading the request (a worker's Init of another model). */
struct server_metrics;
void server_auth_refused(struct server_metrics *m, const rpc_call *call,
                         const char *path, const char *role, int code,
                         const char *why);

#endif
