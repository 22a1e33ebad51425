/* fuzz_health.c: libFuzzer target for grpc.health.v1.Health/Check. Input:
 * one byte choosing how the request is cut into slices, then the request.
 * Beyond not crashing, the answer must be the one the request calls for:
 * INVALID_ARGUMENT when it is not a HealthCheckRequest, SERVING for "" and
 * WIRE_SERVICE, NOT_FOUND for any other service. */
#include <string.h>

#include "fuzz.h"
#include "grpc/health/v1/health.pb-c.h"

/* expected returns the status code the request calls for. */
static int expected(const uint8_t *req, size_t n) {
  Grpc__Health__V1__HealthCheckRequest *r =
      grpc__health__v1__health_check_request__unpack(NULL, n, req);
  if (r == NULL)
    return FSPS_INVALID_ARGUMENT;
  bool known = r->service[0] == '\0' ||
               strcmp(r->service, WIRE_SERVICE) == 0;
  grpc__health__v1__health_check_request__free_unpacked(r, NULL);
  return known ? FSPS_OK : FSPS_NOT_FOUND;
}

static void check_serving(void *arg, rpc_call *c) {
  (void)arg;
  size_t len;
  const uint8_t *reply = fuzz_call_reply(c, &len);
  if (fuzz_call_code(c) != FSPS_OK)
    return;
  Grpc__Health__V1__HealthCheckResponse *r =
      grpc__health__v1__health_check_response__unpack(NULL, len, reply);
  fuzz_check(r != NULL);
  fuzz_check(r->status ==
             GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  grpc__health__v1__health_check_response__free_unpacked(r, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static service svc;
  static const rpc_method *m;
  if (m == NULL) {
    server_config c;
    fuzz_quiet();
    fuzz_config(&c, 0);
    fuzz_service_open(&svc, &c, NULL);
    m = fuzz_method(&svc, WIRE_PATH_HEALTH_CHECK);
  }
  fuzz_in in = {data, size};
  unsigned split = fuzz_u8(&in);
  int code = fuzz_unary(m, in.p, in.n, split, check_serving, NULL);
  fuzz_check(code == expected(in.p, in.n));
  return 0;
}
