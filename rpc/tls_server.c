/* tls_server.c: a TLS server's certificates, re-read when their files
 * change. gRPC core asks for the certificate configuration at every new
 * handshake (the SSL credentials' config fetcher); the watcher answers
 * UNCHANGED until a file's identity or time changes (cert-manager and the
 * kubelet replace Secret files by swapping a symlink: stat() follows it to
 * the new inode), then reads and checks the files again. A new set that
 * cannot be read or does not hold together is refused, logged once, and
 * handshakes keep the previous certificate. Connections already open are
 * never touched, so calls in flight finish. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rpc_int.h"

enum { F_CERT, F_KEY, F_CA, NFILES };

/* What stat() says about one file: any change in it is a new file. */
typedef struct {
  int err; /* errno of stat, 0 when it worked */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime, ctime;
} stamp;

struct rpc_tls_watch {
  char *path[NFILES]; /* F_CA NULL without client certificates */
  rpc_log_fn log;
  void *log_arg;
  grpc_ssl_client_certificate_request_type request;
  pthread_mutex_t mu;
  stamp seen[NFILES]; /* the files when last read, loaded or refused */
  rpc_pem_set cur;    /* what new handshakes get */
  bool pending;       /* cur not yet handed to gRPC */
};

static void say(rpc_tls_watch *w, rpc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(rpc_tls_watch *w, rpc_log_level level, const char *fmt, ...) {
  if (w->log == NULL)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  w->log(w->log_arg, level, msg);
}

static void take_stamps(const rpc_tls_watch *w, stamp *s) {
  memset(s, 0, NFILES * sizeof *s);
  for (int i = 0; i < NFILES; i++) {
    struct stat sb;
    if (w->path[i] == NULL)
      continue;
    if (stat(w->path[i], &sb) != 0) {
      s[i].err = errno;
      continue;
    }
    s[i] = (stamp){0, sb.st_dev, sb.st_ino, sb.st_size, sb.st_mtim, sb.st_ctim};
  }
}

static bool same_time(struct timespec a, struct timespec b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* same_stamps compares field by field (a struct's padding is not data). */
static bool same_stamps(const stamp *a, const stamp *b) {
  for (int i = 0; i < NFILES; i++)
    if (a[i].err != b[i].err || a[i].dev != b[i].dev || a[i].ino != b[i].ino ||
        a[i].size != b[i].size || !same_time(a[i].mtime, b[i].mtime) ||
        !same_time(a[i].ctime, b[i].ctime))
      return false;
  return true;
}

static bool same_text(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* tell logs the certificate now served, warning when clients will refuse
 * it for its dates. */
static void tell(rpc_tls_watch *w, const char *verb,
                 const rpc_cert_info *info) {
  say(w, RPC_LOG_INFO, "TLS: %s certificate %s from %s (valid until %s)%s%s",
      verb, info->subject, w->path[F_CERT], info->not_after_text,
      w->path[F_CA] ? "; client certificates signed by the CAs of " : "",
      w->path[F_CA] ? w->path[F_CA] : "");
  if (info->expired || info->not_yet_valid)
    say(w, RPC_LOG_WARN,
        "TLS: the certificate %s is %s: clients will refuse it until the "
        "file is replaced",
        w->path[F_CERT], info->expired ? "expired" : "not valid yet");
}

/* reload reads the files after a change (w->mu held). */
static void reload(rpc_tls_watch *w, const stamp *before) {
  rpc_pem_set p;
  rpc_cert_info info;
  rpc_status st;
  int rc = rpc_tls_load(w->path[F_CERT], w->path[F_KEY], w->path[F_CA],
                        "client CA file", &p, &info, &st);
  stamp after[NFILES];
  take_stamps(w, after);
  if (!same_stamps(before, after)) { /* still being written: next time */
    rpc_pem_set_free(&p);
    return;
  }
  memcpy(w->seen, after, sizeof w->seen);
  if (rc != FSPS_OK) {
    say(w, RPC_LOG_ERROR,
        "TLS: the changed files are refused (%s); new connections keep the "
        "certificate loaded before",
        st.msg);
    return;
  }
  if (same_text(p.cert, w->cur.cert) && same_text(p.key, w->cur.key) &&
      same_text(p.ca, w->cur.ca)) {
    rpc_pem_set_free(&p); /* touched, not changed */
    return;
  }
  rpc_pem_set_free(&w->cur);
  w->cur = p;
  w->pending = true;
  tell(w, "reloaded", &info);
}

/* check re-reads the files if they changed since last read (w->mu held). */
static void check(rpc_tls_watch *w) {
  stamp now[NFILES];
  take_stamps(w, now);
  if (!same_stamps(now, w->seen))
    reload(w, now);
}

static grpc_ssl_certificate_config_reload_status
fetch(void *arg, grpc_ssl_server_certificate_config **config) {
  rpc_tls_watch *w = arg;
  pthread_mutex_lock(&w->mu);
  check(w);
  grpc_ssl_certificate_config_reload_status rc =
      GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  if (w->pending) {
    grpc_ssl_pem_key_cert_pair pair = {w->cur.key, w->cur.cert};
    /* gRPC 1.51 asserts (and aborts) when a fetched configuration has no
     * root certificates, although without client certificates they are
     * never used: the server's own chain stands in for them then. gRPC
     * copies the texts. */
    const char *roots = w->cur.ca ? w->cur.ca : w->cur.cert;
    *config = grpc_ssl_server_certificate_config_create(roots, &pair, 1);
    w->pending = *config == NULL;
    rc = *config ? GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW
                 : GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

void rpc_tls_watch_poll(rpc_tls_watch *w) {
  pthread_mutex_lock(&w->mu);
  check(w);
  pthread_mutex_unlock(&w->mu);
}

static int copy_paths(rpc_tls_watch *w, const rpc_server_tls *tls) {
  const char *src[NFILES] = {tls->cert_file, tls->key_file,
                             tls->client_ca_file};
  for (int i = 0; i < NFILES; i++)
    if (src[i] != NULL && (w->path[i] = strdup(src[i])) == NULL)
      return FSPS_NOMEM;
  return FSPS_OK;
}

rpc_tls_watch *rpc_tls_watch_create(const rpc_server_tls *tls, rpc_status *st) {
  if (tls->cert_file == NULL || tls->key_file == NULL) {
    rpc_status_set(st, FSPS_INVALID_ARGUMENT,
                   "TLS needs both a certificate and its key");
    return NULL;
  }
  rpc_tls_watch *w = calloc(1, sizeof *w);
  if (w != NULL)
    pthread_mutex_init(&w->mu, NULL);
  if (w == NULL || copy_paths(w, tls) != FSPS_OK) {
    rpc_tls_watch_destroy(w);
    rpc_status_set(st, FSPS_NOMEM, "out of memory");
    return NULL;
  }
  w->log = tls->log;
  w->log_arg = tls->log_arg;
  w->request = tls->client_ca_file
                   ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  take_stamps(w, w->seen);
  rpc_cert_info info;
  if (rpc_tls_load(w->path[F_CERT], w->path[F_KEY], w->path[F_CA],
                   "client CA file", &w->cur, &info, st) != FSPS_OK) {
    rpc_tls_watch_destroy(w);
    return NULL;
  }
  w->pending = true;
  tell(w, "serving", &info);
  return w;
}

int rpc_server_tls_check(const rpc_server_tls *tls, rpc_status *st) {
  rpc_pem_set p;
  int rc = rpc_tls_load(tls->cert_file, tls->key_file, tls->client_ca_file,
                        "client CA file", &p, NULL, st);
  rpc_pem_set_free(&p);
  return rc;
}

grpc_server_credentials *rpc_tls_watch_creds(rpc_tls_watch *w) {
  grpc_ssl_server_credentials_options *o =
      grpc_ssl_server_credentials_create_options_using_config_fetcher(
          w->request, fetch, w);
  return o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
}

void rpc_tls_watch_destroy(rpc_tls_watch *w) {
  if (w == NULL)
    return;
  for (int i = 0; i < NFILES; i++)
    free(w->path[i]);
  rpc_pem_set_free(&w->cur);
  pthread_mutex_destroy(&w->mu);
  free(w);
}
