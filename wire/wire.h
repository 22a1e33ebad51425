/* wire.h: what client, server and tools must agree on about the wire, said
 * once: method paths, the tensor messages' field numbers, ModelSpec <-> shard
 * spec, the enum mappings behind it, and the message size limit. */
#ifndef FSPS_WIRE_H
#define FSPS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsps.pb-c.h"
#include "shard.h"

/* ---- method paths ------------------------------------------------------
 * The services of proto/fsps.proto and grpc/health/v1/health.proto. Macros,
 * so that static method tables can use them; wire_method_paths lists them
 * all (tests compare the list with the proto files). */
#define WIRE_SERVICE "fsps.v1.ParameterServer"
#define WIRE_HEALTH_SERVICE "grpc.health.v1.Health"
#define WIRE_PATH_INIT "/" WIRE_SERVICE "/Init"
#define WIRE_PATH_PULL "/" WIRE_SERVICE "/Pull"
#define WIRE_PATH_PUSH "/" WIRE_SERVICE "/Push"
#define WIRE_PATH_STATUS "/" WIRE_SERVICE "/Status"
#define WIRE_PATH_CHECKPOINT "/" WIRE_SERVICE "/Checkpoint"
#define WIRE_PATH_ROLLBACK "/" WIRE_SERVICE "/Rollback"
#define WIRE_PATH_SET_VALUES "/" WIRE_SERVICE "/SetValues"
#define WIRE_PATH_HEALTH_CHECK "/" WIRE_HEALTH_SERVICE "/Check"

#define WIRE_NUM_METHODS 8 /* the paths above */
extern const char *const wire_method_paths[WIRE_NUM_METHODS];

/* ---- tensor messages ---------------------------------------------------
 * PullChunk, PushChunk and ValuesChunk travel hand-framed (rpc's tensor
 * messages: varint fields, then the float32 payload last). These are their
 * field numbers in proto/fsps.proto; tests/test_wire.c checks each against the
 * protobuf-c descriptors, as a build step, and that rpc's framing can carry
 * them. */
enum {
  WIRE_PULL_LAYER = 1,
  WIRE_PULL_VERSION = 2,
  WIRE_PULL_OFFSET = 3,
  WIRE_PULL_DATA = 8,      /* float32 payload (WIRE_DTYPE_FP32) */
  WIRE_PULL_DATA_BF16 = 9, /* bfloat16 payload (WIRE_DTYPE_BF16) */
};
enum {
  WIRE_PUSH_LAYER = 1,
  WIRE_PUSH_STEP = 2,
  WIRE_PUSH_WORKER = 3,
  WIRE_PUSH_OFFSET = 4,
  WIRE_PUSH_EPOCH = 5,
  WIRE_PUSH_DATA = 8,      /* float32 payload (WIRE_DTYPE_FP32) */
  WIRE_PUSH_DATA_BF16 = 9, /* bfloat16 payload (WIRE_DTYPE_BF16) */
};
/* ValuesChunk: PushChunk's numbers for the fields it has (a values stream
 * is cut and checked as a push is). Its payload is float32 whatever the
 * model's wire dtype. */
enum {
  WIRE_VALUES_LAYER = 1,
  WIRE_VALUES_OFFSET = 4,
  WIRE_VALUES_EPOCH = 5,
  WIRE_VALUES_DATA = 8,
};

/* ---- wire dtype --------------------------------------------------------
 * A model's pulls and pushes carry float32 (field 8) or bfloat16 (field 9),
 * as its spec's wire dtype says (ModelSpec.wire_dtype). */

/* wire_dtype_bytes returns the bytes an element takes on the wire: 4 for
 * fp32, 2 for bf16. */
size_t wire_dtype_bytes(shard_wire_dtype dtype);

/* wire_data_field returns the payload field of a PullChunk or PushChunk of
 * a model of this dtype (the two messages number them alike). */
unsigned wire_data_field(shard_wire_dtype dtype);

/* ---- bfloat16 ----------------------------------------------------------
 * bf16 is a float32's top 16 bits, sent little-endian, 2 bytes an element.
 * Encoding rounds to nearest, ties to even (so the largest floats round up
 * to Inf, denormals keep their bits, Inf stays Inf) and turns every NaN into
 * a quiet NaN of the same sign; decoding is exact (bits << 16), and quiets
 * a signalling NaN. Both loops are plain C that GCC vectorises (SSE2, and
 * AVX2 where the CPU has it). Thread-safe; the ranges must not overlap. */

/* wire_bf16_encode writes n bf16 of src into dst (2n bytes, any alignment). */
void wire_bf16_encode(void *dst, const float *src, size_t n);

/* wire_bf16_encode_in_place encodes the n floats at buf over themselves:
 * the bf16 take buf's first 2n bytes (the rest is left as it was), so a
 * buffer that is sent as bf16 needs no second one. */
void wire_bf16_encode_in_place(float *buf, size_t n);

/* wire_bf16_decode writes n floats into dst from 2n bytes of bf16 at src
 * (any alignment). */
void wire_bf16_decode(float *dst, const void *src, size_t n);

/* wire_bf16_round returns x as bf16 would carry it: encoded and decoded. */
float wire_bf16_round(float x);

/* A bf16 payload arrives in pieces of any length (gRPC's slices), so an
 * element may straddle two; a reader decodes them in order into floats. */
typedef struct {
  float *dst;        /* where the next whole element goes */
  uint8_t half;      /* the first byte of a straddling element */
  bool has_half;     /* half holds one */
  uint64_t elements; /* decoded so far */
} wire_bf16_reader;

/* wire_bf16_read_start starts a reader writing from dst on. */
void wire_bf16_read_start(wire_bf16_reader *r, float *dst);

/* wire_bf16_read decodes the next len bytes of the payload. */
void wire_bf16_read(wire_bf16_reader *r, const void *bytes, size_t len);

/* ---- size limits -------------------------------------------------------
 * A chunk's header: at most 7 varint fields of 11 bytes with their tags,
 * then the payload's tag and length, well under this bound. */
#define WIRE_TENSOR_HEADER_MAX 128
/* The largest message servers and clients send and accept, handed to rpc
 * for every channel and server: a whole chunk (SHARD_CHUNK_BYTES of
 * payload) with its header, with room to spare. A larger message fails
 * with RESOURCE_EXHAUSTED. */
#define WIRE_MAX_MESSAGE_BYTES (SHARD_CHUNK_BYTES + (64u << 10))
/* The largest encoded ModelSpec: an InitRequest wraps it in fields 1..3,
 * which take less than 64 bytes. */
#define WIRE_SPEC_MAX_BYTES (WIRE_MAX_MESSAGE_BYTES - 64)

/* ---- enum mappings -----------------------------------------------------
 * shard's enums and the proto's have the same values (wire.c asserts it at
 * compile time); these convert with a range check for what arrives. */
Fsps__V1__InitKind wire_init_to_proto(shard_init_kind kind);
Fsps__V1__Schedule wire_schedule_to_proto(shard_sched_kind kind);
Fsps__V1__WireDtype wire_dtype_to_proto(shard_wire_dtype dtype);

/* wire_init_from_proto / wire_schedule_from_proto set *out and return true,
 * or return false for a value no shard enum has (a newer peer's). */
bool wire_init_from_proto(int value, shard_init_kind *out);
bool wire_schedule_from_proto(int value, shard_sched_kind *out);
bool wire_dtype_from_proto(int value, shard_wire_dtype *out);

/* The optimizer travels by name (OptimizerSpec.name): shard's names. */
const char *wire_optimizer_name(shard_opt_kind kind);

/* ---- spec <-> ModelSpec ------------------------------------------------ */

/* The OptimizerSpec fields with presence, as X(field, FIELD): each is the
 * only member of a oneof named `_field` (proto3 `optional` spelled out), so
 * protoc-c gives it a `_field_case` whose set value is
 * FSPS__V1__OPTIMIZER_SPEC___FIELD_FIELD. wire_spec_to_proto sets every one;
 * wire_spec_from_proto gives an unset one PyTorch's default for the
 * optimizer named (shard_optim_defaults). test_wire checks the list against
 * the descriptors. */
#define WIRE_OPTIM_PRESENT_FIELDS(X)                                           \
  X(lr, LR)                                                                    \
  X(momentum, MOMENTUM)                                                        \
  X(dampening, DAMPENING)                                                      \
  X(weight_decay, WEIGHT_DECAY)                                                \
  X(beta1, BETA1)                                                              \
  X(beta2, BETA2)                                                              \
  X(eps, EPS)                                                                  \
  X(lr_decay, LR_DECAY)                                                        \
  X(initial_accumulator_value, INITIAL_ACCUMULATOR_VALUE)                      \
  X(gamma, GAMMA)                                                              \
  X(eta_min, ETA_MIN)                                                          \
  X(warmup_start_factor, WARMUP_START_FACTOR)

/* A ModelSpec message built over a shard spec: names and dims point into
 * the shard spec, which must outlive it. */
typedef struct {
  Fsps__V1__ModelSpec model;
  Fsps__V1__OptimizerSpec optim;
  Fsps__V1__LayerSpec *layers, **layer_ptrs;
  Fsps__V1__TensorSpec *tensors, **tensor_ptrs;
} wire_spec_msg;

/* wire_spec_to_proto fills m from spec; FSPS_OK or FSPS_NOMEM. Free it with
 * wire_spec_msg_free (also after a failure). */
int wire_spec_to_proto(wire_spec_msg *m, const shard_spec *spec);
void wire_spec_msg_free(wire_spec_msg *m);

/* wire_spec_from_proto builds a shard spec from a ModelSpec (the caller
 * owns it; shard_spec_validate checks its values later). An unset
 * optimizer hyper-parameter takes PyTorch's default for the optimizer.
 * Returns NULL with a sentence in msg when a value has no shard equivalent
 * (unknown init kind, optimizer, schedule or wire dtype, too many dims, no
 * optimizer),
 * when sgd comes without lr (PyTorch has no default for it), or out of
 * memory. */
shard_spec *wire_spec_from_proto(const Fsps__V1__ModelSpec *m, char *msg,
                                 size_t msglen);

/* wire_spec_unpack decodes an encoded ModelSpec (as checkpoint files keep
 * it) into a shard spec, as wire_spec_from_proto; NULL with msg when the
 * bytes are not a ModelSpec or the spec has no shard equivalent. */
shard_spec *wire_spec_unpack(const void *bytes, size_t len, char *msg,
                             size_t msglen);

#endif
