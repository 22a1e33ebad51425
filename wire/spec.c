/* spec.c: a shard spec as the ModelSpec message Init carries and
 * checkpoint files keep, and back. The message side never validates: the
 * shard spec built from it is checked by shard_spec_validate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* ---- shard spec -> ModelSpec ---- */

/* The set value of field f's presence case (see WIRE_OPTIM_PRESENT_FIELDS). */
#define OPTIM_SET(F) FSPS__V1__OPTIMIZER_SPEC___##F##_##F

/* Every hyper-parameter is sent, set, with the value in effect: the
 * receiver never falls back on a default of its own. */
static void optim_msg(Fsps__V1__OptimizerSpec *m, const shard_optim_spec *o) {
  fsps__v1__optimizer_spec__init(m);
  m->name = (char *)wire_optimizer_name(o->kind);
#define PUT(f, F)                                                              \
  m->f = o->f;                                                                 \
  m->_##f##_case = OPTIM_SET(F);
  WIRE_OPTIM_PRESENT_FIELDS(PUT)
#undef PUT
  m->nesterov = o->nesterov;
  m->schedule = wire_schedule_to_proto(o->schedule);
  m->step_size = o->step_size;
  m->t_max = o->t_max;
  m->warmup_steps = o->warmup_steps;
}

/* The message only reads names and dims, so it points into the spec; the
 * casts drop const for protobuf-c's field types. */
static void tensor_msg(Fsps__V1__TensorSpec *m, const shard_tensor *t) {
  fsps__v1__tensor_spec__init(m);
  m->name = (char *)t->name;
  m->n_dims = t->ndims;
  m->dims = (uint64_t *)t->dims;
  m->init = wire_init_to_proto(t->init);
  m->init_a = t->init_a;
  m->init_b = t->init_b;
}

static size_t count_tensors(const shard_spec *spec) {
  size_t n = 0;
  for (uint32_t l = 0; l < shard_spec_num_layers(spec); l++)
    n += shard_spec_layer(spec, l)->ntensors;
  return n;
}

static void layers_msg(wire_spec_msg *m, const shard_spec *spec) {
  size_t k = 0;
  for (uint32_t l = 0; l < shard_spec_num_layers(spec); l++) {
    const shard_layer *L = shard_spec_layer(spec, l);
    Fsps__V1__LayerSpec *lm = &m->layers[l];
    fsps__v1__layer_spec__init(lm);
    lm->name = (char *)L->name;
    lm->n_tensors = L->ntensors;
    lm->tensors = &m->tensor_ptrs[k];
    for (uint32_t i = 0; i < L->ntensors; i++, k++) {
      tensor_msg(&m->tensors[k], &L->tensors[i]);
      m->tensor_ptrs[k] = &m->tensors[k];
    }
    m->layer_ptrs[l] = lm;
  }
}

int wire_spec_to_proto(wire_spec_msg *m, const shard_spec *spec) {
  memset(m, 0, sizeof *m);
  uint32_t nl = shard_spec_num_layers(spec);
  size_t nt = count_tensors(spec);
  m->layers = calloc(nl + 1, sizeof *m->layers);
  m->layer_ptrs = calloc(nl + 1, sizeof *m->layer_ptrs);
  m->tensors = calloc(nt + 1, sizeof *m->tensors);
  m->tensor_ptrs = calloc(nt + 1, sizeof *m->tensor_ptrs);
  if (!m->layers || !m->layer_ptrs || !m->tensors || !m->tensor_ptrs)
    return FSPS_NOMEM;
  layers_msg(m, spec);
  optim_msg(&m->optim, shard_spec_optim(spec));
  fsps__v1__model_spec__init(&m->model);
  m->model.n_layers = nl;
  m->model.layers = m->layer_ptrs;
  m->model.optimizer = &m->optim;
  m->model.seed = shard_spec_seed(spec);
  m->model.wire_dtype = wire_dtype_to_proto(shard_spec_wire_dtype(spec));
  return FSPS_OK;
}

void wire_spec_msg_free(wire_spec_msg *m) {
  free(m->layers);
  free(m->layer_ptrs);
  free(m->tensors);
  free(m->tensor_ptrs);
  memset(m, 0, sizeof *m);
}

/* ---- ModelSpec -> shard spec ---- */

static int add_tensor(shard_spec *spec, const Fsps__V1__TensorSpec *t) {
  shard_init_kind init;
  if (!wire_init_from_proto(t->init, &init) || t->n_dims > SHARD_MAX_DIMS)
    return FSPS_INVALID_ARGUMENT;
  return shard_spec_add_tensor(spec, t->name, (uint32_t)t->n_dims, t->dims,
                               init, t->init_a, t->init_b);
}

static int add_layers(shard_spec *spec, const Fsps__V1__ModelSpec *m, char *msg,
                      size_t msglen) {
  for (size_t l = 0; l < m->n_layers; l++) {
    const Fsps__V1__LayerSpec *L = m->layers[l];
    int rc = shard_spec_add_layer(spec, L->name);
    for (size_t t = 0; rc == FSPS_OK && t < L->n_tensors; t++) {
      rc = add_tensor(spec, L->tensors[t]);
      if (rc != FSPS_OK)
        snprintf(msg, msglen,
                 "layer %zu ('%s') tensor %zu ('%s'): bad init kind or more "
                 "than %d dims",
                 l, L->name, t, L->tensors[t]->name, SHARD_MAX_DIMS);
    }
    if (rc != FSPS_OK && !*msg)
      shard_spec_validate(spec, msg, msglen);
    if (rc != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

/* optim_fields copies the hyper-parameters, which keep their meaning, over
 * s's defaults: a field the message leaves unset keeps PyTorch's default
 * for the optimizer (s comes from shard_optim_defaults). */
static void optim_fields(shard_optim_spec *s,
                         const Fsps__V1__OptimizerSpec *o) {
#define TAKE(f, F)                                                             \
  if (o->_##f##_case == OPTIM_SET(F))                                          \
    s->f = o->f;
  WIRE_OPTIM_PRESENT_FIELDS(TAKE)
#undef TAKE
  s->nesterov = o->nesterov;
  s->step_size = o->step_size;
  s->t_max = o->t_max;
  s->warmup_steps = o->warmup_steps;
}

static int set_optim(shard_spec *spec, const Fsps__V1__OptimizerSpec *o,
                     char *msg, size_t msglen) {
  shard_optim_spec s;
  shard_opt_kind kind;
  shard_sched_kind sched;
  if (o == NULL) {
    snprintf(msg, msglen, "the model spec has no optimizer");
    return FSPS_INVALID_ARGUMENT;
  }
  int rc = shard_opt_kind_parse_msg(o->name, &kind, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  if (!wire_schedule_from_proto(o->schedule, &sched)) {
    snprintf(msg, msglen, "unknown schedule %d", (int)o->schedule);
    return FSPS_INVALID_ARGUMENT;
  }
  if (kind == SHARD_OPT_SGD && o->_lr_case != OPTIM_SET(LR)) {
    snprintf(msg, msglen,
             "optimizer: lr is not set, and sgd has no default learning "
             "rate (torch.optim.SGD requires one)");
    return FSPS_INVALID_ARGUMENT;
  }
  shard_optim_defaults(kind, &s);
  optim_fields(&s, o);
  s.schedule = sched;
  shard_spec_set_optim(spec, &s);
  return FSPS_OK;
}

static int set_wire_dtype(shard_spec *spec, int value, char *msg,
                          size_t msglen) {
  shard_wire_dtype dtype;
  if (!wire_dtype_from_proto(value, &dtype)) {
    snprintf(msg, msglen,
             "unknown wire dtype %d; expected fp32 (0) or bf16 (1)", value);
    return FSPS_INVALID_ARGUMENT;
  }
  shard_spec_set_wire_dtype(spec, dtype);
  return FSPS_OK;
}

shard_spec *wire_spec_from_proto(const Fsps__V1__ModelSpec *m, char *msg,
                                 size_t msglen) {
  *msg = '\0';
  shard_spec *spec = shard_spec_create(m->seed);
  if (spec == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  if (add_layers(spec, m, msg, msglen) != FSPS_OK ||
      set_optim(spec, m->optimizer, msg, msglen) != FSPS_OK ||
      set_wire_dtype(spec, m->wire_dtype, msg, msglen) != FSPS_OK) {
    shard_spec_destroy(spec);
    return NULL;
  }
  return spec;
}

shard_spec *wire_spec_unpack(const void *bytes, size_t len, char *msg,
                             size_t msglen) {
  Fsps__V1__ModelSpec *m = fsps__v1__model_spec__unpack(NULL, len, bytes);
  if (m == NULL) {
    snprintf(msg, msglen, "the bytes are not a ModelSpec message");
    return NULL;
  }
  shard_spec *spec = wire_spec_from_proto(m, msg, msglen);
  fsps__v1__model_spec__free_unpacked(m, NULL);
  return spec;
}
