/* wire.c: the method path table, the enum mappings between shard's enums
 * and the proto's (tied together at compile time), and the wire dtypes'
 * sizes and fields. */
#include <limits.h>

#include "wire.h"

const char *const wire_method_paths[WIRE_NUM_METHODS] = {
    WIRE_PATH_INIT,       WIRE_PATH_PULL,         WIRE_PATH_PUSH,
    WIRE_PATH_STATUS,     WIRE_PATH_CHECKPOINT,   WIRE_PATH_ROLLBACK,
    WIRE_PATH_SET_VALUES, WIRE_PATH_HEALTH_CHECK,
};

/* A chunk must fit in one message, or every pull and push of a full
 * chunk would fail with RESOURCE_EXHAUSTED; and gRPC takes the limit as
 * an int. */
_Static_assert(WIRE_MAX_MESSAGE_BYTES >=
                   SHARD_CHUNK_BYTES + WIRE_TENSOR_HEADER_MAX,
               "a message must hold a whole chunk and its header");
_Static_assert(WIRE_MAX_MESSAGE_BYTES <= INT_MAX,
               "gRPC's message size limit is an int");

/* Equal values let a cast convert; the range checks below and the count
 * of proto values in tests/test_wire.c cover the ends of each enum. */
#define SAME(a, b) _Static_assert((int)(a) == (int)(b), #a " != " #b)
SAME(SHARD_INIT_ZEROS, FSPS__V1__INIT_KIND__INIT_ZEROS);
SAME(SHARD_INIT_CONSTANT, FSPS__V1__INIT_KIND__INIT_CONSTANT);
SAME(SHARD_INIT_UNIFORM, FSPS__V1__INIT_KIND__INIT_UNIFORM);
SAME(SHARD_INIT_NORMAL, FSPS__V1__INIT_KIND__INIT_NORMAL);
SAME(SHARD_INIT_XAVIER_UNIFORM, FSPS__V1__INIT_KIND__INIT_XAVIER_UNIFORM);
SAME(SHARD_INIT_HE_UNIFORM, FSPS__V1__INIT_KIND__INIT_HE_UNIFORM);
SAME(SHARD_INIT_CLIENT, FSPS__V1__INIT_KIND__INIT_CLIENT);
SAME(SHARD_SCHED_CONSTANT, FSPS__V1__SCHEDULE__SCHEDULE_CONSTANT);
SAME(SHARD_SCHED_STEP, FSPS__V1__SCHEDULE__SCHEDULE_STEP);
SAME(SHARD_SCHED_COSINE, FSPS__V1__SCHEDULE__SCHEDULE_COSINE);
SAME(SHARD_WIRE_FP32, FSPS__V1__WIRE_DTYPE__WIRE_DTYPE_FP32);
SAME(SHARD_WIRE_BF16, FSPS__V1__WIRE_DTYPE__WIRE_DTYPE_BF16);
/* PullChunk and PushChunk number their payloads alike (wire_data_field). */
SAME(WIRE_PULL_DATA, WIRE_PUSH_DATA);
SAME(WIRE_PULL_DATA_BF16, WIRE_PUSH_DATA_BF16);

Fsps__V1__InitKind wire_init_to_proto(shard_init_kind kind) {
  return (Fsps__V1__InitKind)kind;
}

Fsps__V1__Schedule wire_schedule_to_proto(shard_sched_kind kind) {
  return (Fsps__V1__Schedule)kind;
}

Fsps__V1__WireDtype wire_dtype_to_proto(shard_wire_dtype dtype) {
  return (Fsps__V1__WireDtype)dtype;
}

bool wire_dtype_from_proto(int value, shard_wire_dtype *out) {
  if (value < SHARD_WIRE_FP32 || value > SHARD_WIRE_BF16)
    return false;
  *out = (shard_wire_dtype)value;
  return true;
}

size_t wire_dtype_bytes(shard_wire_dtype dtype) {
  return dtype == SHARD_WIRE_BF16 ? 2 : 4;
}

unsigned wire_data_field(shard_wire_dtype dtype) {
  return dtype == SHARD_WIRE_BF16 ? WIRE_PUSH_DATA_BF16 : WIRE_PUSH_DATA;
}

bool wire_init_from_proto(int value, shard_init_kind *out) {
  if (value < SHARD_INIT_ZEROS || value > SHARD_INIT_CLIENT)
    return false;
  *out = (shard_init_kind)value;
  return true;
}

bool wire_schedule_from_proto(int value, shard_sched_kind *out) {
  if (value < SHARD_SCHED_CONSTANT || value > SHARD_SCHED_COSINE)
    return false;
  *out = (shard_sched_kind)value;
  return true;
}

const char *wire_optimizer_name(shard_opt_kind kind) {
  return shard_opt_kind_name(kind);
}
