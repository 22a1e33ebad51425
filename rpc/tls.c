/* tls.c: the PEM files of TLS — read whole, and checked with OpenSSL's
 * parsers before gRPC sees them (a certificate is there, the key is one and
 * matches it, a CA file holds certificates), so a wrong file is a message
 * naming it at start instead of handshakes that fail later. No crypto is
 * done here: gRPC core's SSL credentials do the TLS. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "rpc_int.h"

/* Certificate and key files are small; anything larger is not one. */
#define PEM_MAX_BYTES (1 << 20)

int rpc_read_file(const char *path, const char *what, char **out,
                  rpc_status *st) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return rpc_status_set(st, FSPS_IO, "cannot read the %s %s: %s", what, path,
                          strerror(errno));
  char *buf = malloc(PEM_MAX_BYTES + 1);
  size_t n = buf ? fread(buf, 1, PEM_MAX_BYTES + 1, f) : 0;
  int err = ferror(f) ? errno : 0;
  fclose(f);
  if (buf == NULL)
    return rpc_status_set(st, FSPS_NOMEM, "out of memory reading %s", path);
  if (err != 0 || n > PEM_MAX_BYTES) {
    free(buf);
    return rpc_status_set(st, FSPS_IO, "cannot read the %s %s: %s", what, path,
                          err ? strerror(err) : "larger than 1 MiB");
  }
  buf[n] = '\0';
  *out = buf;
  return FSPS_OK;
}

/* no_passphrase keeps OpenSSL from prompting on the terminal for the
 * passphrase of an encrypted key: such a key is refused instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

/* certs_in reads every certificate of a PEM text; returns how many (0 when
 * none parses), and the first in *first if wanted (the caller frees it). */
static int certs_in(const char *pem, X509 **first) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  int n = 0;
  X509 *x;
  while (b != NULL && (x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL))) {
    if (n++ == 0 && first != NULL)
      *first = x;
    else
      X509_free(x);
  }
  BIO_free(b);
  ERR_clear_error(); /* the end of the text reads as an error */
  return n;
}

static EVP_PKEY *key_in(const char *pem) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : 0;
  BIO_free(b);
  ERR_clear_error();
  return k;
}

/* describe fills info with what a log line says about certificate x. */
static void describe(X509 *x, rpc_cert_info *info) {
  memset(info, 0, sizeof *info);
  X509_NAME_oneline(X509_get_subject_name(x), info->subject,
                    sizeof info->subject);
  struct tm tm;
  if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
    info->not_after = timegm(&tm);
  if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) == 1)
    info->not_before = timegm(&tm);
  strftime(info->not_after_text, sizeof info->not_after_text,
           "%Y-%m-%dT%H:%M:%SZ", gmtime(&info->not_after));
  time_t now = time(NULL);
  info->expired = X509_cmp_time(X509_get0_notAfter(x), &now) < 0;
  info->not_yet_valid = X509_cmp_time(X509_get0_notBefore(x), &now) > 0;
}

/* check_pair checks that cert_pem holds certificates whose first matches
 * the key in key_pem. */
static int check_pair(const rpc_pem_set *p, const char *cert_file,
                      const char *key_file, rpc_cert_info *info,
                      rpc_status *st) {
  X509 *leaf = NULL;
  if (certs_in(p->cert, &leaf) == 0)
    return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                          "%s holds no PEM certificate (expected -----BEGIN "
                          "CERTIFICATE-----)",
                          cert_file);
  EVP_PKEY *key = key_in(p->key);
  int rc = FSPS_OK;
  if (key == NULL)
    rc = rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                        "%s holds no PEM private key (or an encrypted one, "
                        "which is not supported)",
                        key_file);
  else if (X509_check_private_key(leaf, key) != 1)
    rc = rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                        "the key %s does not match the certificate %s (the "
                        "first in the file)",
                        key_file, cert_file);
  if (rc == FSPS_OK && info != NULL)
    describe(leaf, info);
  ERR_clear_error();
  EVP_PKEY_free(key);
  X509_free(leaf);
  return rc;
}

void rpc_pem_set_free(rpc_pem_set *p) {
  free(p->cert);
  free(p->key);
  free(p->ca);
  memset(p, 0, sizeof *p);
}

/* read_all reads the files named (any may be NULL). */
static int read_all(const char *cert_file, const char *key_file,
                    const char *ca_file, const char *ca_what, rpc_pem_set *p,
                    rpc_status *st) {
  int rc = FSPS_OK;
  if (cert_file != NULL)
    rc = rpc_read_file(cert_file, "TLS certificate", &p->cert, st);
  if (rc == FSPS_OK && key_file != NULL)
    rc = rpc_read_file(key_file, "TLS key", &p->key, st);
  if (rc == FSPS_OK && ca_file != NULL)
    rc = rpc_read_file(ca_file, ca_what, &p->ca, st);
  return rc;
}

int rpc_tls_load(const char *cert_file, const char *key_file,
                 const char *ca_file, const char *ca_what, rpc_pem_set *p,
                 rpc_cert_info *info, rpc_status *st) {
  memset(p, 0, sizeof *p);
  if (info != NULL)
    memset(info, 0, sizeof *info);
  if ((cert_file == NULL) != (key_file == NULL)) {
    return rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                          "a TLS certificate needs its key and a key its "
                          "certificate: give both files");
  }
  int rc = read_all(cert_file, key_file, ca_file, ca_what, p, st);
  if (rc == FSPS_OK && cert_file != NULL)
    rc = check_pair(p, cert_file, key_file, info, st);
  if (rc == FSPS_OK && ca_file != NULL && certs_in(p->ca, NULL) == 0)
    rc = rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                        "the %s %s holds no PEM certificate (expected "
                        "-----BEGIN CERTIFICATE-----)",
                        ca_what, ca_file);
  if (rc != FSPS_OK)
    rpc_pem_set_free(p);
  return rc;
}
