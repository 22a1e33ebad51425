/* fsps_health.c: fsps-health, a gRPC health-check client shipped in the
 * container image for the Helm chart's `helm test` pod and the workers'
 * wait-for-servers init container (and for people debugging a cluster).
 * For every HOST:PORT given it calls grpc.health.v1.Health/Check through
 * rpc/ and exits 0 only if each answers SERVING.
 *
 *   fsps-health [--timeout-ms MS] [--service NAME] [--token-file FILE]
 *               HOST:PORT...
 *
 * Health checks need no token: a server with --auth-tokens answers them
 * for anyone (they tell only whether it serves). A token (--token-file,
 * FSPS_TOKEN_FILE or FSPS_TOKEN, as the other tools) is sent if given, so
 * one environment serves every tool, and a proxy in front that wants one
 * gets it.
 *
 * Exit codes: 0 all SERVING, 1 some target not SERVING or unreachable,
 * 2 usage error. */
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
        "                   [--token-file FILE] HOST:PORT...\n"
        "Calls grpc.health.v1.Health/Check on every target; exits 0 only if\n"
        "each answers SERVING within the timeout (default 5000 ms; the call\n"
        "waits for the connection to come up until then). Checks need no\n"
        "token; one given by --token-file FILE, FSPS_TOKEN_FILE or\n"
        "FSPS_TOKEN is sent along.\n",
        f);
}

/* check asks one target once; returns 0 when it answers SERVING. */
static int check_once(const char *target, const char *service, long timeout_ms,
                      bool quiet) {
  rpc_status st;
  rpc_channel *ch = rpc_channel_create(target, WIRE_MAX_MESSAGE_BYTES, &st);
  if (ch != NULL && rpc_channel_set_token(ch, token, &st) != FSPS_OK) {
    rpc_channel_destroy(ch);
    ch = NULL;
  }
  if (ch == NULL) {
    fprintf(stderr, "fsps-health: %s: %s\n", target, st.msg);
    return 1;
  }
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  ProtobufCMessage *reply;
  int rc = rpc_unary(ch, WIRE_PATH_HEALTH_CHECK, &req.base,
                     &grpc__health__v1__health_check_response__descriptor,
                     &reply, timeout_ms, &st);
  int status = -1;
  if (rc == FSPS_OK) {
    status = ((Grpc__Health__V1__HealthCheckResponse *)reply)->status;
    protobuf_c_message_free_unpacked(reply, NULL);
  }
  rpc_channel_destroy(ch);
  if (quiet && !(rc == FSPS_OK && status == SERVING))
    return 1;
  if (rc != FSPS_OK)
    fprintf(stderr, "fsps-health: %s\n", st.msg);
  else if (status !=
           GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    fprintf(stderr, "fsps-health: %s: not serving (status %d)\n", target,
            status);
  else
    printf("%s: SERVING\n", target);
  return rc == FSPS_OK && status == SERVING ? 0 : 1;
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* check asks until the target answers SERVING or timeout_ms has passed: a
 * server still starting (connection refused) is asked again every 200 ms,
 * and only the last failure is reported. */
static int check(const char *target, const char *service, long timeout_ms) {
  long deadline = now_ms() + timeout_ms;
  for (;;) {
    long left = deadline - now_ms();
    bool last = left <= 200;
    if (check_once(target, service, left > 0 ? left : 1, !last) == 0)
      return 0;
    if (last)
      return 1;
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

int main(int argc, char **argv) {
  long timeout_ms = 5000;
  const char *service = "", *token_file = NULL;
  int i = 1;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    if (!strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    }
    bool known = !strcmp(argv[i], "--timeout-ms") ||
                 !strcmp(argv[i], "--service") ||
                 !strcmp(argv[i], "--token-file");
    if (!known || i + 1 >= argc ||
        (!strcmp(argv[i], "--timeout-ms") &&
         (timeout_ms = parse_timeout(argv[i + 1])) < 0)) {
      usage(stderr);
      return 2;
    }
    if (!strcmp(argv[i], "--service"))
      service = argv[i + 1];
    if (!strcmp(argv[i], "--token-file"))
      token_file = argv[i + 1];
  }
  if (i >= argc) {
    usage(stderr);
    return 2;
  }
  if (!load_token(token_file))
    return 2;
  int failed = 0;
  for (; i < argc; i++)
    failed |= check(argv[i], service, timeout_ms);
  return failed;
}
