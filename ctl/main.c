/* main.c: fsps-ctl, the operator's tool: `status`, `checkpoint` and
 * `rollback` of a running cluster over libfsps's public API. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

#define CTL_RETRIES 2 /* UNAVAILABLE asked again after 100 and 200 ms */

int ctl_exit_code(int rc) {
  if (rc == FSPS_OK)
    return CTL_OK;
  if (rc == FSPS_UNAVAILABLE || rc == FSPS_DEADLINE_EXCEEDED)
    return CTL_UNREACHABLE;
  return CTL_FAILED;
}

/* connect_with_token connects with the token of --token-file,
 * FSPS_TOKEN_FILE or FSPS_TOKEN (none: no token), wiped once copied. */
static int connect_with_token(const ctl_opts *o, fsps_options *fo,
                              fsps_client **c, char *err, size_t errlen) {
  char token[4097];
  int rc = fsps_token_load(o->token_file, token, sizeof token, err, errlen);
  if (rc == FSPS_OK || rc == FSPS_NOT_FOUND) {
    err[0] = '\0'; /* "no token given" is no error: none is sent */
    fo->token = token;
    rc = fsps_connect(fo, c, err, errlen);
  } else {
    fprintf(stderr, "fsps-ctl %s: %s\n", o->cmd, err);
    rc = -1;
  }
  explicit_bzero(token, sizeof token);
  return rc;
}

static int connect_all(const ctl_opts *o, fsps_client **c) {
  fsps_options fo;
  fsps_options_init(&fo);
  fo.servers = o->servers;
  fo.timeout_ms = (int64_t)(o->timeout_s * 1000.0 + 0.5);
  fo.retries = CTL_RETRIES;
  fo.tls_ca = o->tls_ca;
  fo.tls_cert = o->tls_cert;
  fo.tls_key = o->tls_key;
  fo.tls_server_name = o->tls_server_name;
  char err[512];
  int rc = connect_with_token(o, &fo, c, err, sizeof err);
  if (rc == FSPS_OK)
    return CTL_OK;
  if (rc < 0) /* the token: told already */
    return CTL_USAGE;
  if (strncmp(err, "TLS: ", 5) == 0) /* the files, not the servers */
    fprintf(stderr, "fsps-ctl %s: %s\n", o->cmd, err);
  else
    fprintf(stderr, "fsps-ctl %s: --servers '%s': %s\n", o->cmd, o->servers,
            err);
  return rc == FSPS_INVALID_ARGUMENT ? CTL_USAGE : CTL_FAILED;
}

int main(int argc, char **argv) {
  ctl_opts o;
  int code = ctl_parse(argc, argv, &o);
  if (code >= 0)
    return code;
  fsps_client *c = NULL;
  code = connect_all(&o, &c);
  if (code != CTL_OK)
    return code;
  if (strcmp(o.cmd, "status") == 0)
    code = ctl_status(c, &o);
  else if (strcmp(o.cmd, "checkpoint") == 0)
    code = ctl_checkpoint(c, &o);
  else
    code = ctl_rollback(c, &o);
  fsps_close(c);
  return code;
}
