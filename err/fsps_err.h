/* fsps_err.h: the one error type of fsps, shared by every module and by the
 * public client API (installed as <fsps/fsps_err.h>).
 *
 * Codes 0..16 equal gRPC's status codes, so rpc/ passes them across its
 * edge unchanged (rpc_from_grpc, rpc_to_grpc); codes from 64 on are local
 * failures that never cross the wire as such: a server that answers with
 * one sends the nearest gRPC code instead. */
#ifndef FSPS_ERR_H
#define FSPS_ERR_H

/* X(name, value, description): the single list both the enum and
 * fsps_strerror() are generated from. */
#define FSPS_ERR_MAP(X)                                                        \
  X(OK, 0, "success")                                                          \
  X(CANCELLED, 1, "operation cancelled")                                       \
  X(UNKNOWN, 2, "unknown error")                                               \
  X(INVALID_ARGUMENT, 3, "invalid argument")                                   \
  X(DEADLINE_EXCEEDED, 4, "deadline exceeded")                                 \
  X(NOT_FOUND, 5, "not found")                                                 \
  X(ALREADY_EXISTS, 6, "already exists")                                       \
  X(PERMISSION_DENIED, 7, "permission denied")                                 \
  X(RESOURCE_EXHAUSTED, 8, "resource exhausted")                               \
  X(FAILED_PRECONDITION, 9, "failed precondition")                             \
  X(ABORTED, 10, "aborted")                                                    \
  X(OUT_OF_RANGE, 11, "out of range")                                          \
  X(UNIMPLEMENTED, 12, "unimplemented")                                        \
  X(INTERNAL, 13, "internal error")                                            \
  X(UNAVAILABLE, 14, "unavailable")                                            \
  X(DATA_LOSS, 15, "data loss")                                                \
  X(UNAUTHENTICATED, 16, "unauthenticated")                                    \
  X(NOMEM, 64, "out of memory")                                                \
  X(IO, 65, "input/output error")                                              \
  X(CORRUPT, 66, "corrupt data")

typedef enum {
#define FSPS_ERR_ENUM(name, value, desc) FSPS_##name = value,
  FSPS_ERR_MAP(FSPS_ERR_ENUM)
#undef FSPS_ERR_ENUM
} fsps_err;

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/* fsps_strerror returns a static, human-readable description of err, or
 * "unrecognised error code" for a value outside the list. Thread-safe. */
const char *fsps_strerror(int err);

/* fsps_err_name returns the code's symbolic name without the prefix, e.g.
 * "INVALID_ARGUMENT", or "?" for a value outside the list. Thread-safe. */
const char *fsps_err_name(int err);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
