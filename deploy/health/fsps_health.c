/* fsps_health.c: fsps-health, a gRPC health-check client shipped in the
 * container image for the Helm chart's `helm test` pod and the workers'
 * wait-for-servers init container (and for people debugging a cluster).
 * For every HOST:PORT given it calls grpc.health.v1.Health/Check through
 * rpc/ and exits 0 only if each answers SERVING.
 *
 *   fsps-health [--timeout-ms MS] [--service NAME] [--token-file FILE]
 *               [--tls-ca FILE [--tls-cert FILE --tls-key FILE]
 *               [--tls-server-name NAME]] HOST:PORT...
 *
 * Health checks need no token: a server with --auth-tokens answers them
 * for anyone (they tell only whether it serves). A token (--token-file,
 * FSPS_TOKEN_FILE or FSPS_TOKEN, as the other tools) is sent if given, so
 * one environment serves every tool, and a proxy in front that wants one
 * gets it.
 *
 * The --tls-* flags (or FSPS_TLS_CA, FSPS_TLS_CERT, FSPS_TLS_KEY,
 * FSPS_TLS_SERVER_NAME) ask over TLS, as libfsps's clients do.
 *
 * Exit codes: 0 all SERVING, 1 some target not SERVING or unreachable,
 * 2 usage error (a TLS file unreadable or wrong included). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <fsps/fsps.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"
#include "wire.h"

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING

/* The token sent with each check ("" : none). */
static char token[RPC_TOKEN_MAX + 1];

static void usage(FILE *f) {
  fputs("Usage: fsps-health [--timeout-ms MS] [--service NAME]\n"
        "                   [--token-file FILE] [--tls-ca FILE\n"
        "                   [--tls-cert FILE --tls-key FILE]\n"
        "                   [--tls-server-name NAME]] HOST:PORT...\n"
        "Calls grpc.health.v1.Health/Check on every target; exits 0 only if\n"
        "each answers SERVING within the timeout (default 5000 ms; the call\n"
        "waits for the connection to come up until then). Checks need no\n"
        "token; one given by --token-file FILE, FSPS_TOKEN_FILE or\n"
        "FSPS_TOKEN is sent along.\n"
        "  --tls-ca FILE          over TLS: the CAs that sign the servers'\n"
        "                         certificates [FSPS_TLS_CA]\n"
        "  --tls-cert FILE        mutual TLS: this client's certificate\n"
        "                         chain [FSPS_TLS_CERT]\n"
        "  --tls-key FILE         its private key [FSPS_TLS_KEY]\n"
        "  --tls-server-name NAME the name the certificates must carry\n"
        "                         instead of each target's host\n"
        "                         [FSPS_TLS_SERVER_NAME]\n",
        f);
}

/* TLS credentials, shared by every check; NULL for plaintext. */
static rpc_creds *g_creds;

/* check_once asks one target once; returns 0 when it answers SERVING,
 * else 1 with why in msg (msglen bytes) and the call's code in *code. */
static int check_once(const char *target, const char *service, long timeout_ms,
                      int *code, char *msg, size_t msglen) {
  rpc_status st;
  rpc_channel *ch = rpc_channel_create_tls(target, NULL, WIRE_MAX_MESSAGE_BYTES,
                                           g_creds, &st);
  if (ch != NULL && rpc_channel_set_token(ch, token, &st) != FSPS_OK) {
    rpc_channel_destroy(ch);
    ch = NULL;
  }
  *code = ch ? FSPS_OK : st.code;
  if (ch == NULL) {
    snprintf(msg, msglen, "%s: %s", target, st.msg);
    return 1;
  }
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  ProtobufCMessage *reply;
  *code = rpc_unary(ch, WIRE_PATH_HEALTH_CHECK, &req.base,
                    &grpc__health__v1__health_check_response__descriptor,
                    &reply, timeout_ms, &st);
  int status = -1;
  if (*code == FSPS_OK) {
    status = ((Grpc__Health__V1__HealthCheckResponse *)reply)->status;
    protobuf_c_message_free_unpacked(reply, NULL);
  }
  rpc_channel_destroy(ch);
  if (*code != FSPS_OK)
    snprintf(msg, msglen, "%s", st.msg);
  else if (status != SERVING)
    snprintf(msg, msglen, "%s: not serving (status %d)", target, status);
  return *code == FSPS_OK && status == SERVING ? 0 : 1;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* check asks until the target answers SERVING or timeout_ms has passed: a
 * server still starting (connection refused) is asked again every 200 ms,
 * and only the last failure is reported — with, when the last attempt ran
 * out of time, the last one that said more (a refused handshake). */
static int check(const char *target, const char *service, long timeout_ms) {
  long deadline = now_ms() + timeout_ms;
  char msg[600], why[600] = "";
  for (;;) {
    long left = deadline - now_ms();
    int code;
    if (check_once(target, service, left > 0 ? left : 1, &code, msg,
                   sizeof msg) == 0) {
      printf("%s: SERVING\n", target);
      return 0;
    }
    if (left <= 200) {
      bool more = code == FSPS_DEADLINE_EXCEEDED && why[0];
      fprintf(stderr, "fsps-health: %s%s%s%s\n", msg,
              more ? " (an earlier attempt: " : "", more ? why : "",
              more ? ")" : "");
      return 1;
    }
    if (code != FSPS_DEADLINE_EXCEEDED)
      snprintf(why, sizeof why, "%s", msg);
    struct timespec pause = {0, 200 * 1000000L};
    nanosleep(&pause, NULL);
  }
}

/* parse_timeout reads a whole number of milliseconds in [1, 86400000]. */
static long parse_timeout(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return errno || end == s || *end || v < 1 || v > 86400000 ? -1 : v;
}

/* load_token reads the token of --token-file, FSPS_TOKEN_FILE or
 * FSPS_TOKEN (none is fine); false with a message when unusable. */
static bool load_token(const char *path) {
  char err[1200];
  int rc = fsps_token_load(path, token, sizeof token, err, sizeof err);
  if (rc == FSPS_OK || rc == FSPS_NOT_FOUND)
    return true;
  fprintf(stderr, "fsps-health: %s\n", err);
  return false;
}

typedef struct {
  long timeout_ms;
  const char *service;
  const char *token_file; /* NULL: FSPS_TOKEN_FILE, FSPS_TOKEN or none */
  rpc_client_tls tls;
} health_opts;

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* flag_value finds where flag name's value goes; NULL if unknown. */
static const char **flag_value(const char *name, health_opts *o) {
  static const char *timeout;
  const char *names[] = {"--timeout-ms",     "--service",  "--token-file",
                         "--tls-ca",         "--tls-cert", "--tls-key",
                         "--tls-server-name"};
  const char **dst[] = {&timeout,           &o->service,       &o->token_file,
                        &o->tls.ca_file,    &o->tls.cert_file, &o->tls.key_file,
                        &o->tls.server_name};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(name, names[i]))
      return dst[i];
  return NULL;
}

/* parse reads the flags; returns the index of the first target, 0 after
 * --help, -1 on a usage error. */
static int parse(int argc, char **argv, health_opts *o) {
  *o = (health_opts){.timeout_ms = 5000,
                     .service = "",
                     .tls = {env("FSPS_TLS_CA"), env("FSPS_TLS_CERT"),
                             env("FSPS_TLS_KEY"), env("FSPS_TLS_SERVER_NAME")}};
  int i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    if (!strcmp(argv[i], "--help"))
      return 0;
    const char **dst = flag_value(argv[i], o);
    if (dst == NULL || i + 1 >= argc)
      return -1;
    *dst = argv[i + 1];
    if (!strcmp(argv[i], "--timeout-ms") &&
        (o->timeout_ms = parse_timeout(argv[i + 1])) < 0)
      return -1;
  }
  return i < argc ? i : -1;
}

/* open_tls reads the TLS files when a CA is given; 0 on success. */
static int open_tls(const health_opts *o) {
  if (o->tls.ca_file == NULL) {
    if (o->tls.cert_file || o->tls.key_file || o->tls.server_name) {
      fprintf(stderr, "fsps-health: --tls-cert, --tls-key and "
                      "--tls-server-name need --tls-ca\n");
      return -1;
    }
    return 0;
  }
  rpc_status st;
  g_creds = rpc_creds_create(&o->tls, &st);
  if (g_creds == NULL)
    fprintf(stderr, "fsps-health: TLS: %s\n", st.msg);
  return g_creds ? 0 : -1;
}

/* quiet drops gRPC core's own log lines (a refused handshake, again at
 * every retry): the status reported at the end carries the last error. */
static void quiet(void *arg, rpc_log_level level, const char *msg) {
  (void)arg;
  (void)level;
  (void)msg;
}

int main(int argc, char **argv) {
  rpc_set_log(quiet, NULL);
  health_opts o;
  int i = parse(argc, argv, &o);
  if (i <= 0) {
    usage(i == 0 ? stdout : stderr);
    return i == 0 ? 0 : 2;
  }
  if (!load_token(o.token_file) || open_tls(&o) != 0)
    return 2;
  int failed = 0;
  for (; i < argc; i++)
    failed |= check(argv[i], o.service, o.timeout_ms);
  rpc_creds_destroy(g_creds);
  return failed;
}
