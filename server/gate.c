/* gate.c: the admission gate of a server with --auth-tokens: reads each
 * call's bearer token, finds its role, checks it against the method, logs
 * refusals; swaps in a reloaded token table under a lock. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate.h"
#include "log.h"
#include "service.h"

struct server_auth {
  pthread_rwlock_t mu; /* guards t: calls read, a reload swaps it */
  server_tokens *t;
  char path[1024];
};

/* log_loaded says which tokens are in force. */
static void log_loaded(const char *what, const char *path,
                       const server_tokens *t) {
  LOGI("%s %u tokens from %s (%u admin, %u worker, %u reader)", what,
       server_tokens_count(t, AUTH_OPEN), path,
       server_tokens_count(t, AUTH_ADMIN), server_tokens_count(t, AUTH_WORKER),
       server_tokens_count(t, AUTH_READER));
}

server_auth *server_auth_create(const char *path, char *err, size_t errlen) {
  server_auth *a = calloc(1, sizeof *a);
  if (a == NULL || strlen(path) >= sizeof a->path) {
    snprintf(err, errlen, a ? "the path is too long" : "out of memory");
    free(a);
    return NULL;
  }
  strcpy(a->path, path);
  if ((a->t = server_tokens_read(path, err, errlen)) == NULL) {
    free(a);
    return NULL;
  }
  pthread_rwlock_init(&a->mu, NULL);
  log_loaded("loaded", path, a->t);
  return a;
}

void server_auth_destroy(server_auth *a) {
  if (a == NULL)
    return;
  server_tokens_free(a->t);
  pthread_rwlock_destroy(&a->mu);
  free(a);
}

int server_auth_reload(server_auth *a) {
  char err[1400];
  server_tokens *t = server_tokens_read(a->path, err, sizeof err);
  if (t == NULL) {
    LOGE("SIGHUP: not reloading the tokens, the ones loaded before stay in "
         "force: %s",
         err);
    return -1;
  }
  log_loaded("SIGHUP: reloaded", a->path, t);
  pthread_rwlock_wrlock(&a->mu);
  server_tokens *old = a->t;
  a->t = t;
  pthread_rwlock_unlock(&a->mu);
  server_tokens_free(old);
  return 0;
}

void server_auth_refused(struct server_metrics *m, const rpc_call *call,
                         const char *path, const char *role, int code,
                         const char *why) {
  char peer[256];
  rpc_call_peer(call, peer, sizeof peer);
  logfmt_fields f;
  logfmt_fields_init(&f);
  logfmt_field_str(&f, "peer", peer);
  logfmt_field_str(&f, "method", path);
  logfmt_field_str(&f, "role", role);
  logfmt_field_str(&f, "code", fsps_err_name(code));
  server_log_fields(LOG_WARN, &f, "refused %s from %s (role %s): %s: %s",
                    server_auth_method_name(path), peer, role,
                    fsps_err_name(code), why);
  server_metrics_reject(m, code);
}

/* identify returns the role of the call's token, or -1 with msg saying
 * why there is none; *who names the caller for the log. */
static int identify(server_auth *a, const rpc_call *call, char *msg,
                    size_t msglen, const char **who) {
  const char *val = NULL, *tok;
  size_t len = 0, toklen;
  size_t n = rpc_call_metadata_raw(call, "authorization", &val, &len);
  *who = n == 0 ? "none" : "unknown";
  if (n == 0) {
    snprintf(msg, msglen,
             "no token: this server takes only calls that carry "
             "`authorization: Bearer TOKEN` metadata");
    return -1;
  }
  if (n > 1) {
    snprintf(msg, msglen, "more than one authorization metadata entry");
    return -1;
  }
  if (!server_auth_bearer(val, len, &tok, &toklen)) {
    snprintf(msg, msglen,
             "the authorization metadata is not of the form `Bearer TOKEN`");
    return -1;
  }
  pthread_rwlock_rdlock(&a->mu);
  int role = server_tokens_find(a->t, tok, toklen);
  pthread_rwlock_unlock(&a->mu);
  if (role < 0)
    snprintf(msg, msglen, "token not known to this server");
  else
    *who = server_auth_role_name((auth_role)role);
  return role;
}

int server_auth_gate(rpc_call *call, const char *path, char *msg, size_t msglen,
                     void *ctx) {
  service *svc = ctx;
  if (!server_auth_needs_token(path))
    return FSPS_OK;
  const char *who;
  msg[0] = '\0';
  int role = identify(svc->auth, call, msg, msglen, &who);
  int rc = role < 0 ? FSPS_UNAUTHENTICATED : FSPS_OK;
  if (rc == FSPS_OK && server_auth_may((auth_role)role, path) == AUTH_DENY) {
    snprintf(msg, msglen, "role %s may not call %s (it may call %s)", who,
             server_auth_method_name(path),
             server_auth_role_rights((auth_role)role));
    rc = FSPS_PERMISSION_DENIED;
  }
  if (rc != FSPS_OK) {
    server_auth_refused(svc->m, call, path, who, rc, msg);
    return rc;
  }
  rpc_call_set_auth(call, role);
  return FSPS_OK;
}
