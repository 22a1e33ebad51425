/* status.c: the edge between fsps_err and gRPC's status codes, both ways,
 * and the rpc_status a call's outcome is told in. */
#include <stdarg.h>
#include <stdio.h>

#include "rpc_int.h"

/* The codes 0..16 of fsps_err are gRPC's by design (fsps_err.h); checked
 * here, so the translations below may pass them through unchanged. */
#define SAME(name)                                                             \
  _Static_assert((int)FSPS_##name == (int)GRPC_STATUS_##name, #name)
SAME(OK);
SAME(CANCELLED);
SAME(UNKNOWN);
SAME(INVALID_ARGUMENT);
SAME(DEADLINE_EXCEEDED);
SAME(NOT_FOUND);
SAME(ALREADY_EXISTS);
SAME(PERMISSION_DENIED);
SAME(RESOURCE_EXHAUSTED);
SAME(FAILED_PRECONDITION);
SAME(ABORTED);
SAME(OUT_OF_RANGE);
SAME(UNIMPLEMENTED);
SAME(INTERNAL);
SAME(UNAVAILABLE);
SAME(DATA_LOSS);
SAME(UNAUTHENTICATED);
#undef SAME

fsps_err rpc_from_grpc(grpc_status_code code) {
  if (code >= GRPC_STATUS_OK && code <= GRPC_STATUS_UNAUTHENTICATED)
    return (fsps_err)code;
  /* A peer may send any number. gRPC asks clients to read one they do not
   * know as UNKNOWN; it must never pass for one of fsps's local codes. */
  return FSPS_UNKNOWN;
}

grpc_status_code rpc_to_grpc(int err) {
  if (err >= FSPS_OK && err <= FSPS_UNAUTHENTICATED)
    return (grpc_status_code)err;
  /* Local failures have no wire code of their own: each goes as the one a
   * client can act on (retry later, or distrust the data). */
  if (err == FSPS_NOMEM)
    return GRPC_STATUS_RESOURCE_EXHAUSTED;
  if (err == FSPS_CORRUPT)
    return GRPC_STATUS_DATA_LOSS;
  return GRPC_STATUS_INTERNAL; /* FSPS_IO, and anything outside fsps_err */
}

int rpc_status_set(rpc_status *st, int code, const char *fmt, ...) {
  if (st == NULL)
    return code;
  st->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->msg, sizeof st->msg, fmt, ap);
  va_end(ap);
  return code;
}
