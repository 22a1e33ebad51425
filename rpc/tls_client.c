/* tls_client.c: a client's TLS credentials — the CA that signs the
 * servers' certificates and, for mutual TLS, the client's own certificate
 * and key, read and checked once, then shared by every channel. */
#include <stdlib.h>
#include <string.h>

#include "rpc_int.h"

struct rpc_creds {
  grpc_channel_credentials *creds;
  char *server_name; /* NULL: each target's host */
};

/* refuse_expired fails when the client's own certificate has expired: a
 * server asking for it would refuse every handshake, with a less telling
 * message than this one. (One not valid yet is left to the server, which
 * may allow for clock skew.) */
static int refuse_expired(const rpc_client_tls *tls, const rpc_cert_info *i,
                          rpc_status *st) {
  if (tls->cert_file == NULL || !i->expired)
    return FSPS_OK;
  return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                        "the client certificate %s (%s) expired on %s",
                        tls->cert_file, i->subject, i->not_after_text);
}

static int check_tls(const rpc_client_tls *tls, rpc_status *st) {
  if (tls->ca_file == NULL || !*tls->ca_file)
    return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                          "TLS needs the CA file that signs the servers' "
                          "certificates");
  if ((tls->cert_file && !*tls->cert_file) ||
      (tls->key_file && !*tls->key_file) ||
      (tls->server_name && !*tls->server_name))
    return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                          "an empty TLS file or server name");
  return FSPS_OK;
}

static rpc_creds *make(const rpc_client_tls *tls, const rpc_pem_set *p,
                       rpc_status *st) {
  rpc_creds *c = calloc(1, sizeof *c);
  if (c != NULL && tls->server_name != NULL &&
      (c->server_name = strdup(tls->server_name)) == NULL) {
    free(c);
    c = NULL;
  }
  if (c == NULL) {
    rpc_status_set(st, FSPS_NOMEM, "out of memory");
    return NULL;
  }
  rpc_init();
  grpc_ssl_pem_key_cert_pair pair = {p->key, p->cert};
  /* gRPC copies the texts. */
  c->creds =
      grpc_ssl_credentials_create_ex(p->ca, p->cert ? &pair : NULL, NULL, NULL);
  if (c->creds == NULL) {
    rpc_status_set(st, FSPS_INTERNAL, "gRPC refused the TLS credentials");
    rpc_creds_destroy(c);
    return NULL;
  }
  return c;
}

rpc_creds *rpc_creds_create(const rpc_client_tls *tls, rpc_status *st) {
  if (check_tls(tls, st) != FSPS_OK)
    return NULL;
  rpc_pem_set p;
  rpc_cert_info info;
  if (rpc_tls_load(tls->cert_file, tls->key_file, tls->ca_file, "TLS CA file",
                   &p, &info, st) != FSPS_OK)
    return NULL;
  rpc_creds *c = NULL;
  if (refuse_expired(tls, &info, st) == FSPS_OK)
    c = make(tls, &p, st);
  rpc_pem_set_free(&p);
  return c;
}

void rpc_creds_destroy(rpc_creds *c) {
  if (c == NULL)
    return;
  if (c->creds != NULL)
    grpc_channel_credentials_release(c->creds);
  free(c->server_name);
  free(c);
  rpc_shutdown(); /* make's rpc_init */
}

grpc_channel_credentials *rpc_creds_channel(const rpc_creds *c) {
  return c->creds;
}

const char *rpc_creds_server_name(const rpc_creds *c) {
  return c->server_name;
}
