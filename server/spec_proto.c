/* spec_proto.c: turns the ModelSpec of an Init request into a shard spec;
 * every value is checked later by shard_spec_validate. */
#include <stdio.h>
#include <string.h>

#include "fsps.pb-c.h"
#include "service.h"

static int add_tensor(shard_spec *spec, const Fsps__V1__TensorSpec *t) {
  if ((unsigned)t->init > SHARD_INIT_HE_UNIFORM || t->n_dims > SHARD_MAX_DIMS)
    return FSPS_INVALID_ARGUMENT;
  return shard_spec_add_tensor(spec, t->name, (uint32_t)t->n_dims, t->dims,
                               (shard_init_kind)t->init, t->init_a, t->init_b);
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

static int set_optim(shard_spec *spec, const Fsps__V1__OptimizerSpec *o,
                     char *msg, size_t msglen) {
  shard_optim_spec s;
  shard_opt_kind kind;
  if (o == NULL) {
    snprintf(msg, msglen, "the model spec has no optimizer");
    return FSPS_INVALID_ARGUMENT;
  }
  int rc = shard_opt_kind_parse_msg(o->name, &kind, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  if ((unsigned)o->schedule > SHARD_SCHED_COSINE) {
    snprintf(msg, msglen, "unknown schedule %d", (int)o->schedule);
    return FSPS_INVALID_ARGUMENT;
  }
  shard_optim_defaults(kind, &s);
  s.lr = o->lr;
  s.momentum = o->momentum;
  s.dampening = o->dampening;
  s.nesterov = o->nesterov;
  s.weight_decay = o->weight_decay;
  s.beta1 = o->beta1;
  s.beta2 = o->beta2;
  s.eps = o->eps;
  s.lr_decay = o->lr_decay;
  s.initial_accumulator_value = o->initial_accumulator_value;
  s.schedule = (shard_sched_kind)o->schedule;
  s.step_size = o->step_size;
  s.gamma = o->gamma;
  s.t_max = o->t_max;
  s.eta_min = o->eta_min;
  s.warmup_steps = o->warmup_steps;
  s.warmup_start_factor = o->warmup_start_factor;
  shard_spec_set_optim(spec, &s);
  return FSPS_OK;
}

shard_spec *spec_from_proto(const Fsps__V1__ModelSpec *m, char *msg,
                            size_t msglen) {
  *msg = '\0';
  shard_spec *spec = shard_spec_create(m->seed);
  if (spec == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  if (add_layers(spec, m, msg, msglen) != FSPS_OK ||
      set_optim(spec, m->optimizer, msg, msglen) != FSPS_OK) {
    shard_spec_destroy(spec);
    return NULL;
  }
  return spec;
}
