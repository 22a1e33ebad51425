/* test_wire.c: unit tests of wire/ against the contract it restates: the
 * field numbers and types in the protobuf-c descriptors, the services in
 * proto/fsps.proto and health.proto, the proto enums, and the size limit.
 * The build runs it too (tests/CMakeLists.txt): a disagreement fails the
 * build, not only ctest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"
#include "test_wire_bf16.h"
#include "wire.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* What can be checked without running: rpc's framing carries the tensor
 * fields where wire says they are, and a message holds a chunk. */
_Static_assert(WIRE_PULL_DATA == RPC_TENSOR_FIELD, "PullChunk.data");
_Static_assert(WIRE_PUSH_DATA == RPC_TENSOR_FIELD, "PushChunk.data");
_Static_assert(WIRE_PULL_DATA_BF16 > RPC_TENSOR_FIELD &&
                   WIRE_PULL_DATA_BF16 <= RPC_TENSOR_FIELD_LAST &&
                   WIRE_PUSH_DATA_BF16 > RPC_TENSOR_FIELD &&
                   WIRE_PUSH_DATA_BF16 <= RPC_TENSOR_FIELD_LAST,
               "the bf16 payloads are among rpc's payload fields");
_Static_assert(WIRE_PULL_OFFSET <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_PULL_VERSION <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_PULL_LAYER <= RPC_TENSOR_MAX_VARINT,
               "PullChunk's varints are among rpc's");
_Static_assert(WIRE_PUSH_LAYER <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_PUSH_STEP <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_PUSH_WORKER <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_PUSH_OFFSET <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_PUSH_EPOCH <= RPC_TENSOR_MAX_VARINT,
               "PushChunk's varints are among rpc's");
_Static_assert(WIRE_VALUES_DATA == RPC_TENSOR_FIELD &&
                   WIRE_VALUES_LAYER <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_VALUES_OFFSET <= RPC_TENSOR_MAX_VARINT &&
                   WIRE_VALUES_EPOCH <= RPC_TENSOR_MAX_VARINT,
               "ValuesChunk's fields are where rpc's framing puts them");
/* A values stream is cut and checked as a push is: the same numbers. */
_Static_assert((int)WIRE_VALUES_LAYER == (int)WIRE_PUSH_LAYER &&
                   (int)WIRE_VALUES_OFFSET == (int)WIRE_PUSH_OFFSET &&
                   (int)WIRE_VALUES_EPOCH == (int)WIRE_PUSH_EPOCH &&
                   (int)WIRE_VALUES_DATA == (int)WIRE_PUSH_DATA,
               "ValuesChunk shares PushChunk's field numbers");
_Static_assert(RPC_TENSOR_HDR_MAX <= WIRE_TENSOR_HEADER_MAX,
               "wire's header bound covers rpc's framing");

/* ---- tensor fields ----------------------------------------------------- */

typedef struct {
  const char *name;
  unsigned number;
  ProtobufCType type;
} field;

static const field pull_fields[] = {
    {"layer", WIRE_PULL_LAYER, PROTOBUF_C_TYPE_UINT32},
    {"version", WIRE_PULL_VERSION, PROTOBUF_C_TYPE_UINT64},
    {"offset", WIRE_PULL_OFFSET, PROTOBUF_C_TYPE_UINT64},
    {"data", WIRE_PULL_DATA, PROTOBUF_C_TYPE_BYTES},
    {"data_bf16", WIRE_PULL_DATA_BF16, PROTOBUF_C_TYPE_BYTES},
};

static const field push_fields[] = {
    {"layer", WIRE_PUSH_LAYER, PROTOBUF_C_TYPE_UINT32},
    {"step", WIRE_PUSH_STEP, PROTOBUF_C_TYPE_UINT64},
    {"worker", WIRE_PUSH_WORKER, PROTOBUF_C_TYPE_UINT32},
    {"offset", WIRE_PUSH_OFFSET, PROTOBUF_C_TYPE_UINT64},
    {"epoch", WIRE_PUSH_EPOCH, PROTOBUF_C_TYPE_UINT64},
    {"data", WIRE_PUSH_DATA, PROTOBUF_C_TYPE_BYTES},
    {"data_bf16", WIRE_PUSH_DATA_BF16, PROTOBUF_C_TYPE_BYTES},
};

static const field values_fields[] = {
    {"layer", WIRE_VALUES_LAYER, PROTOBUF_C_TYPE_UINT32},
    {"offset", WIRE_VALUES_OFFSET, PROTOBUF_C_TYPE_UINT64},
    {"epoch", WIRE_VALUES_EPOCH, PROTOBUF_C_TYPE_UINT64},
    {"data", WIRE_VALUES_DATA, PROTOBUF_C_TYPE_BYTES},
};

/* check_fields looks every field up by name and checks its number, type
 * and label; the message may have no field wire does not know (rpc would
 * skip it, or read a varint where the proto has something else). */
static void check_fields(const ProtobufCMessageDescriptor *d, const field *f,
                         size_t n) {
  for (size_t i = 0; i < n; i++) {
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field_by_name(d, f[i].name);
    if (fd == NULL)
      fail_msg("%s has no field '%s'", d->name, f[i].name);
    if (fd->id != f[i].number || fd->type != f[i].type)
      fail_msg("%s.%s is field %u of type %d; wire says %u of type %d", d->name,
               f[i].name, fd->id, (int)fd->type, f[i].number, (int)f[i].type);
    assert_int_equal(fd->label, PROTOBUF_C_LABEL_NONE); /* not repeated */
  }
  assert_int_equal(d->n_fields, n);
}

static void test_pull_chunk_fields(void **state) {
  (void)state;
  check_fields(&fsps__v1__pull_chunk__descriptor, pull_fields,
               COUNT(pull_fields));
}

static void test_push_chunk_fields(void **state) {
  (void)state;
  check_fields(&fsps__v1__push_chunk__descriptor, push_fields,
               COUNT(push_fields));
}

static void test_values_chunk_fields(void **state) {
  (void)state;
  check_fields(&fsps__v1__values_chunk__descriptor, values_fields,
               COUNT(values_fields));
}

/* ---- method paths ------------------------------------------------------ */

/* read_file returns path's contents, NUL-terminated (the caller frees). */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    fail_msg("cannot open %s", path);
  char *text = calloc(1, 1 << 20);
  assert_non_null(text);
  size_t n = fread(text, 1, (1 << 20) - 1, f);
  fclose(f);
  text[n] = '\0';
  return text;
}

/* service_block returns the body of `service name {...}` in the proto
 * text (cut at its closing brace), or fails. */
static char *service_block(char *text, const char *name) {
  char head[128];
  snprintf(head, sizeof head, "service %s {", name);
  char *b = strstr(text, head);
  if (b == NULL)
    fail_msg("proto/fsps.proto has no %s", head);
  char *end = strchr(b, '}');
  assert_non_null(end);
  *end = '\0';
  return b;
}

/* count_rpcs counts the `rpc Name(` lines of a service block. */
static size_t count_rpcs(const char *block) {
  size_t n = 0;
  for (const char *p = block; (p = strstr(p, "\n  rpc ")) != NULL; p++)
    n++;
  return n;
}

static void test_paths_match_fsps_proto(void **state) {
  (void)state;
  char *text = read_file(FSPS_PROTO_FILE);
  assert_non_null(strstr(text, "\npackage fsps.v1;"));
  assert_string_equal(WIRE_SERVICE, "fsps.v1.ParameterServer");
  char *block = service_block(text, "ParameterServer");
  const char *prefix = "/" WIRE_SERVICE "/";
  size_t ours = 0;
  for (size_t i = 0; i < WIRE_NUM_METHODS; i++) {
    const char *p = wire_method_paths[i];
    if (strncmp(p, prefix, strlen(prefix)) != 0)
      continue;
    char rpc[128];
    snprintf(rpc, sizeof rpc, "\n  rpc %s(", p + strlen(prefix));
    if (strstr(block, rpc) == NULL)
      fail_msg("%s is not a method of proto/fsps.proto's service", p);
    ours++;
  }
  assert_int_equal(ours, count_rpcs(block)); /* and none is missing */
  free(text);
}

static void test_health_path_matches_health_proto(void **state) {
  (void)state;
  const ProtobufCServiceDescriptor *d = &grpc__health__v1__health__descriptor;
  assert_string_equal(d->name, WIRE_HEALTH_SERVICE);
  assert_non_null(protobuf_c_service_descriptor_get_method_by_name(d, "Check"));
  assert_string_equal(WIRE_PATH_HEALTH_CHECK, "/grpc.health.v1.Health/Check");
  size_t found = 0;
  for (size_t i = 0; i < WIRE_NUM_METHODS; i++)
    found += strcmp(wire_method_paths[i], WIRE_PATH_HEALTH_CHECK) == 0;
  assert_int_equal(found, 1);
}

/* ---- enums ------------------------------------------------------------- */

/* proto_value returns the value of prefix + upper(shard_name) in d. */
static int proto_value(const ProtobufCEnumDescriptor *d, const char *prefix,
                       const char *shard_name) {
  char name[64];
  size_t n = (size_t)snprintf(name, sizeof name, "%s", prefix);
  for (const char *s = shard_name; *s && n + 1 < sizeof name; s++)
    name[n++] = (char)(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s);
  name[n] = '\0';
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value_by_name(d, name);
  if (v == NULL)
    fail_msg("%s has no value %s", d->name, name);
  return v->value;
}

static void test_init_kinds_match_by_name(void **state) {
  (void)state;
  const ProtobufCEnumDescriptor *d = &fsps__v1__init_kind__descriptor;
  assert_int_equal(d->n_values, SHARD_INIT_CLIENT + 1);
  for (int k = SHARD_INIT_ZEROS; k <= SHARD_INIT_CLIENT; k++) {
    int v = proto_value(d, "INIT_", shard_init_kind_name(k));
    assert_int_equal(wire_init_to_proto(k), v);
    shard_init_kind back;
    assert_true(wire_init_from_proto(v, &back));
    assert_int_equal(back, k);
  }
  shard_init_kind out = SHARD_INIT_ZEROS;
  assert_false(wire_init_from_proto(SHARD_INIT_CLIENT + 1, &out));
  assert_false(wire_init_from_proto(-1, &out));
  assert_int_equal(out, SHARD_INIT_ZEROS);
}

static void test_schedules_match_by_name(void **state) {
  (void)state;
  const ProtobufCEnumDescriptor *d = &fsps__v1__schedule__descriptor;
  assert_int_equal(d->n_values, SHARD_SCHED_COSINE + 1);
  for (int k = SHARD_SCHED_CONSTANT; k <= SHARD_SCHED_COSINE; k++) {
    int v = proto_value(d, "SCHEDULE_", shard_sched_kind_name(k));
    assert_int_equal(wire_schedule_to_proto(k), v);
    shard_sched_kind back;
    assert_true(wire_schedule_from_proto(v, &back));
    assert_int_equal(back, k);
  }
  shard_sched_kind out;
  assert_false(wire_schedule_from_proto(SHARD_SCHED_COSINE + 1, &out));
  assert_false(wire_schedule_from_proto(-3, &out));
}

static void test_wire_dtypes_match_by_name(void **state) {
  (void)state;
  const ProtobufCEnumDescriptor *d = &fsps__v1__wire_dtype__descriptor;
  assert_int_equal(d->n_values, SHARD_WIRE_BF16 + 1);
  for (int k = SHARD_WIRE_FP32; k <= SHARD_WIRE_BF16; k++) {
    int v = proto_value(d, "WIRE_DTYPE_", shard_wire_dtype_name(k));
    assert_int_equal(wire_dtype_to_proto(k), v);
    shard_wire_dtype back;
    assert_true(wire_dtype_from_proto(v, &back));
    assert_int_equal(back, k);
  }
  shard_wire_dtype out = SHARD_WIRE_FP32;
  assert_false(wire_dtype_from_proto(SHARD_WIRE_BF16 + 1, &out));
  assert_false(wire_dtype_from_proto(-1, &out));
  assert_int_equal(out, SHARD_WIRE_FP32);
  assert_int_equal(wire_dtype_bytes(SHARD_WIRE_FP32), 4);
  assert_int_equal(wire_dtype_bytes(SHARD_WIRE_BF16), 2);
  assert_int_equal(wire_data_field(SHARD_WIRE_FP32), WIRE_PUSH_DATA);
  assert_int_equal(wire_data_field(SHARD_WIRE_BF16), WIRE_PUSH_DATA_BF16);
}

static void test_optimizer_names_parse_back(void **state) {
  (void)state;
  for (int k = SHARD_OPT_SGD; k <= SHARD_OPT_ADAGRAD; k++) {
    shard_opt_kind back;
    assert_int_equal(shard_opt_kind_parse(wire_optimizer_name(k), &back),
                     FSPS_OK);
    assert_int_equal(back, k);
  }
}

/* ---- spec <-> ModelSpec ------------------------------------------------ */

/* full_spec uses every kind of field: two layers, several tensors and init
 * kinds, a non-default optimizer and schedule. */
static shard_spec *full_spec(void) {
  shard_spec *s = shard_spec_create(0x1234abcd);
  assert_non_null(s);
  const uint64_t w[] = {8, 4}, b[] = {8}, conv[] = {3, 2, 2, 2};
  assert_int_equal(shard_spec_add_layer(s, "fc1"), FSPS_OK);
  assert_int_equal(shard_spec_add_tensor(s, "weight", 2, w,
                                         SHARD_INIT_XAVIER_UNIFORM, 1.5, 0),
                   FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(s, "bias", 1, b, SHARD_INIT_UNIFORM, -0.1, 0.1),
      FSPS_OK);
  assert_int_equal(shard_spec_add_layer(s, "conv"), FSPS_OK);
  assert_int_equal(
      shard_spec_add_tensor(s, "kernel", 4, conv, SHARD_INIT_NORMAL, 0, 0.02),
      FSPS_OK);
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_ADAMW, &o);
  o.lr = 3e-4;
  o.schedule = SHARD_SCHED_COSINE;
  o.t_max = 1000;
  o.eta_min = 1e-6;
  o.warmup_steps = 50;
  shard_spec_set_optim(s, &o);
  assert_int_equal(shard_spec_validate(s, NULL, 0), FSPS_OK);
  return s;
}

/* pack encodes m (the caller frees). */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  assert_non_null(buf);
  assert_int_equal(protobuf_c_message_pack(m, buf), *len);
  return buf;
}

static void test_spec_round_trip(void **state) {
  (void)state;
  shard_spec *s = full_spec();
  wire_spec_msg m;
  assert_int_equal(wire_spec_to_proto(&m, s), FSPS_OK);
  assert_string_equal(m.model.optimizer->name, "adamw");
  assert_int_equal(m.model.optimizer->schedule,
                   FSPS__V1__SCHEDULE__SCHEDULE_COSINE);
  size_t len;
  uint8_t *buf = pack(&m.model.base, &len);
  char msg[256];
  shard_spec *back = wire_spec_unpack(buf, len, msg, sizeof msg);
  assert_non_null(back);
  assert_true(shard_spec_equal(s, back));
  assert_true(shard_spec_hash(s) == shard_spec_hash(back));
  shard_spec_destroy(back);
  free(buf);
  wire_spec_msg_free(&m);
  shard_spec_destroy(s);
}

/* A bf16 model's spec travels with its dtype and hashes differently from
 * the same model in fp32, whose hash has no dtype in it. */
static void test_spec_wire_dtype_round_trip(void **state) {
  (void)state;
  shard_spec *s = full_spec();
  uint64_t fp32 = shard_spec_hash(s);
  shard_spec_set_wire_dtype(s, SHARD_WIRE_BF16);
  assert_true(shard_spec_hash(s) != fp32);
  wire_spec_msg m;
  assert_int_equal(wire_spec_to_proto(&m, s), FSPS_OK);
  assert_int_equal(m.model.wire_dtype, FSPS__V1__WIRE_DTYPE__WIRE_DTYPE_BF16);
  size_t len;
  uint8_t *buf = pack(&m.model.base, &len);
  char msg[256];
  shard_spec *back = wire_spec_unpack(buf, len, msg, sizeof msg);
  assert_non_null(back);
  assert_int_equal(shard_spec_wire_dtype(back), SHARD_WIRE_BF16);
  assert_true(shard_spec_equal(s, back));
  assert_true(shard_spec_hash(s) == shard_spec_hash(back));
  shard_spec_set_wire_dtype(back, SHARD_WIRE_FP32);
  assert_false(shard_spec_equal(s, back));
  assert_true(shard_spec_hash(back) == fp32);
  m.model.wire_dtype = (Fsps__V1__WireDtype)7; /* a newer peer's */
  assert_null(wire_spec_from_proto(&m.model, msg, sizeof msg));
  assert_non_null(strstr(msg, "unknown wire dtype 7"));
  shard_spec_destroy(back);
  free(buf);
  wire_spec_msg_free(&m);
  shard_spec_destroy(s);
}

/* from_proto_fails expects m to be refused with a message holding want. */
static void from_proto_fails(const Fsps__V1__ModelSpec *m, const char *want) {
  char msg[256];
  shard_spec *s = wire_spec_from_proto(m, msg, sizeof msg);
  if (s != NULL)
    fail_msg("accepted; expected a refusal naming '%s'", want);
  if (strstr(msg, want) == NULL)
    fail_msg("refused with '%s'; expected '%s'", msg, want);
}

static void test_spec_from_proto_refusals(void **state) {
  (void)state;
  shard_spec *s = full_spec();
  wire_spec_msg m;
  assert_int_equal(wire_spec_to_proto(&m, s), FSPS_OK);
  m.tensors[1].init = (Fsps__V1__InitKind)(SHARD_INIT_CLIENT + 1);
  from_proto_fails(&m.model, "bad init kind");
  m.tensors[1].init = FSPS__V1__INIT_KIND__INIT_ZEROS;
  m.optim.schedule = (Fsps__V1__Schedule)7;
  from_proto_fails(&m.model, "unknown schedule 7");
  m.optim.schedule = FSPS__V1__SCHEDULE__SCHEDULE_STEP;
  m.optim.name = "lion";
  from_proto_fails(&m.model, "lion");
  m.model.optimizer = NULL;
  from_proto_fails(&m.model, "no optimizer");
  wire_spec_msg_free(&m);
  shard_spec_destroy(s);
  char msg[256];
  const uint8_t junk[] = {0x0a, 0xff, 0xff, 0x01}; /* a length past the end */
  assert_null(wire_spec_unpack(junk, sizeof junk, msg, sizeof msg));
  assert_non_null(strstr(msg, "not a ModelSpec"));
}

/* ---- optimizer defaults ------------------------------------------------ */

/* Every double of OptimizerSpec has presence (a oneof of its own) and is
 * in WIRE_OPTIM_PRESENT_FIELDS, and every field listed is such a double:
 * a hyper-parameter added without presence would read unset as 0. */
static void test_optim_fields_have_presence(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *d = &fsps__v1__optimizer_spec__descriptor;
#define NAME(f, F) #f,
  const char *listed[] = {WIRE_OPTIM_PRESENT_FIELDS(NAME)};
#undef NAME
  size_t doubles = 0;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_DOUBLE)
      continue;
    doubles++;
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
      fail_msg("OptimizerSpec.%s has no presence (not in a oneof)", f->name);
  }
  assert_int_equal(doubles, COUNT(listed));
  for (size_t i = 0; i < COUNT(listed); i++) {
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(d, listed[i]);
    assert_non_null(f);
    assert_int_equal(f->type, PROTOBUF_C_TYPE_DOUBLE);
  }
}

/* spec_of decodes a ModelSpec of one small layer around optimizer o. */
static shard_spec *spec_of(Fsps__V1__OptimizerSpec *o, char *msg,
                           size_t msglen) {
  uint64_t dims[] = {3};
  Fsps__V1__TensorSpec t = FSPS__V1__TENSOR_SPEC__INIT, *tp = &t;
  t.name = "w";
  t.n_dims = 1;
  t.dims = dims;
  Fsps__V1__LayerSpec l = FSPS__V1__LAYER_SPEC__INIT, *lp = &l;
  l.name = "l";
  l.n_tensors = 1;
  l.tensors = &tp;
  Fsps__V1__ModelSpec m = FSPS__V1__MODEL_SPEC__INIT;
  m.n_layers = 1;
  m.layers = &lp;
  m.optimizer = o;
  m.seed = 3;
  return wire_spec_from_proto(&m, msg, msglen);
}

/* Only the name set: every hyper-parameter is PyTorch's default for it, and
 * the spec is the one with those defaults written out (same hash). */
static void check_unset_is_default(const char *name, shard_opt_kind kind) {
  Fsps__V1__OptimizerSpec o = FSPS__V1__OPTIMIZER_SPEC__INIT;
  o.name = (char *)name;
  char msg[256];
  shard_spec *unset = spec_of(&o, msg, sizeof msg);
  assert_non_null(unset);
  shard_optim_spec want;
  shard_optim_defaults(kind, &want);
  const shard_optim_spec *got = shard_spec_optim(unset);
  assert_true(got->lr == want.lr && got->beta1 == want.beta1);
  assert_true(got->beta2 == want.beta2 && got->eps == want.eps);
  assert_true(got->weight_decay == want.weight_decay);
  assert_true(got->gamma == 0.1 && got->warmup_start_factor == 1.0 / 3.0);
  shard_spec *explicit = shard_spec_create(3);
  const uint64_t dims[] = {3};
  shard_spec_add_layer(explicit, "l");
  shard_spec_add_tensor(explicit, "w", 1, dims, SHARD_INIT_ZEROS, 0, 0);
  shard_spec_set_optim(explicit, &want);
  assert_true(shard_spec_equal(unset, explicit));
  assert_true(shard_spec_hash(unset) == shard_spec_hash(explicit));
  assert_int_equal(shard_spec_validate(unset, msg, sizeof msg), FSPS_OK);
  shard_spec_destroy(explicit);
  shard_spec_destroy(unset);
}

static void test_optim_unset_fields_take_torch_defaults(void **state) {
  (void)state;
  check_unset_is_default("adam", SHARD_OPT_ADAM);
  check_unset_is_default("adamw", SHARD_OPT_ADAMW);
  check_unset_is_default("adagrad", SHARD_OPT_ADAGRAD);
  /* The values PyTorch 1.13's signatures give, spelled out once here. */
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_ADAMW, &o);
  assert_true(o.lr == 1e-3 && o.beta1 == 0.9 && o.beta2 == 0.999);
  assert_true(o.eps == 1e-8 && o.weight_decay == 1e-2);
  shard_optim_defaults(SHARD_OPT_ADAGRAD, &o);
  assert_true(o.lr == 1e-2 && o.eps == 1e-10 && o.lr_decay == 0);
}

/* A field set to 0 is 0, not the default: AdamW's weight_decay 0 stays 0. */
static void test_optim_explicit_zero_is_kept(void **state) {
  (void)state;
  Fsps__V1__OptimizerSpec o = FSPS__V1__OPTIMIZER_SPEC__INIT;
  o.name = "adamw";
  o.weight_decay = 0.0;
  o._weight_decay_case = FSPS__V1__OPTIMIZER_SPEC___WEIGHT_DECAY_WEIGHT_DECAY;
  o.beta1 = 0.5;
  o._beta1_case = FSPS__V1__OPTIMIZER_SPEC___BETA1_BETA1;
  char msg[256];
  shard_spec *s = spec_of(&o, msg, sizeof msg);
  assert_non_null(s);
  assert_true(shard_spec_optim(s)->weight_decay == 0.0);
  assert_true(shard_spec_optim(s)->beta1 == 0.5);
  assert_true(shard_spec_optim(s)->beta2 == 0.999); /* unset: default */
  shard_spec_destroy(s);
}

/* torch.optim.SGD has no default lr (1.13): unset, the spec is refused,
 * naming the field; set (even to 0), it is taken. */
static void test_optim_sgd_needs_lr(void **state) {
  (void)state;
  Fsps__V1__OptimizerSpec o = FSPS__V1__OPTIMIZER_SPEC__INIT;
  o.name = "sgd";
  o.momentum = 0.9;
  o._momentum_case = FSPS__V1__OPTIMIZER_SPEC___MOMENTUM_MOMENTUM;
  char msg[256];
  assert_null(spec_of(&o, msg, sizeof msg));
  assert_non_null(strstr(msg, "lr is not set"));
  o._lr_case = FSPS__V1__OPTIMIZER_SPEC___LR_LR;
  o.lr = 0.0;
  shard_spec *s = spec_of(&o, msg, sizeof msg);
  assert_non_null(s);
  assert_true(shard_spec_optim(s)->lr == 0.0);
  assert_true(shard_spec_optim(s)->momentum == 0.9);
  shard_spec_destroy(s);
}

/* wire_spec_to_proto sends every hyper-parameter set, with the value in
 * effect, so a server never substitutes a default of its own. */
static void test_optim_round_trip_sets_every_field(void **state) {
  (void)state;
  shard_spec *s = full_spec();
  wire_spec_msg m;
  assert_int_equal(wire_spec_to_proto(&m, s), FSPS_OK);
#define IS_SET(f, F)                                                           \
  assert_int_equal(m.optim._##f##_case, FSPS__V1__OPTIMIZER_SPEC___##F##_##F);
  WIRE_OPTIM_PRESENT_FIELDS(IS_SET)
#undef IS_SET
  wire_spec_msg_free(&m);
  shard_spec_destroy(s);
}

/* ---- size limits ------------------------------------------------------- */

static void test_full_chunk_fits_in_a_message(void **state) {
  (void)state;
  uint8_t *data = calloc(1, SHARD_CHUNK_BYTES);
  assert_non_null(data);
  Fsps__V1__PushChunk c = FSPS__V1__PUSH_CHUNK__INIT;
  c.layer = UINT32_MAX;
  c.step = c.offset = c.epoch = UINT64_MAX;
  c.worker = UINT32_MAX;
  c.data = (ProtobufCBinaryData){SHARD_CHUNK_BYTES, data};
  size_t n = protobuf_c_message_get_packed_size(&c.base);
  assert_true(n <= SHARD_CHUNK_BYTES + WIRE_TENSOR_HEADER_MAX);
  assert_true(n <= WIRE_MAX_MESSAGE_BYTES);
  Fsps__V1__PullChunk p = FSPS__V1__PULL_CHUNK__INIT;
  p.layer = UINT32_MAX;
  p.version = p.offset = UINT64_MAX;
  p.data = c.data;
  assert_true(protobuf_c_message_get_packed_size(&p.base) <=
              SHARD_CHUNK_BYTES + WIRE_TENSOR_HEADER_MAX);
  free(data);
}

/* An InitRequest around the largest spec the client sends still fits. */
static void test_largest_spec_fits_in_init(void **state) {
  (void)state;
  Fsps__V1__ModelSpec spec = FSPS__V1__MODEL_SPEC__INIT;
  spec.seed = UINT64_MAX;
  size_t base = protobuf_c_message_get_packed_size(&spec.base);
  /* one layer whose name fills the spec to within 16 bytes of the bound */
  Fsps__V1__LayerSpec layer = FSPS__V1__LAYER_SPEC__INIT, *lp = &layer;
  size_t name_len = WIRE_SPEC_MAX_BYTES - base - 16;
  layer.name = malloc(name_len + 1);
  assert_non_null(layer.name);
  memset(layer.name, 'x', name_len);
  layer.name[name_len] = '\0';
  spec.n_layers = 1;
  spec.layers = &lp;
  size_t s = protobuf_c_message_get_packed_size(&spec.base);
  assert_true(s <= WIRE_SPEC_MAX_BYTES && s + 16 > WIRE_SPEC_MAX_BYTES);
  Fsps__V1__InitRequest req = FSPS__V1__INIT_REQUEST__INIT;
  req.spec = &spec;
  req.num_servers = req.server_index = UINT32_MAX;
  assert_true(protobuf_c_message_get_packed_size(&req.base) <=
              WIRE_MAX_MESSAGE_BYTES);
  free(layer.name);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pull_chunk_fields),
      cmocka_unit_test(test_push_chunk_fields),
      cmocka_unit_test(test_optim_fields_have_presence),
      cmocka_unit_test(test_optim_unset_fields_take_torch_defaults),
      cmocka_unit_test(test_optim_explicit_zero_is_kept),
      cmocka_unit_test(test_optim_sgd_needs_lr),
      cmocka_unit_test(test_optim_round_trip_sets_every_field),
      cmocka_unit_test(test_values_chunk_fields),
      cmocka_unit_test(test_paths_match_fsps_proto),
      cmocka_unit_test(test_health_path_matches_health_proto),
      cmocka_unit_test(test_init_kinds_match_by_name),
      cmocka_unit_test(test_schedules_match_by_name),
      cmocka_unit_test(test_optimizer_names_parse_back),
      cmocka_unit_test(test_spec_round_trip),
      cmocka_unit_test(test_spec_wire_dtype_round_trip),
      cmocka_unit_test(test_wire_dtypes_match_by_name),
      cmocka_unit_test(test_spec_from_proto_refusals),
      cmocka_unit_test(test_full_chunk_fits_in_a_message),
      cmocka_unit_test(test_largest_spec_fits_in_init),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  return failed + wire_bf16_tests();
}
