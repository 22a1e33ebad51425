/* spec.c: the public model-spec builder (fsps_spec over shard_spec); wire/
 * turns it into the ModelSpec message that Init carries. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

struct fsps_spec {
  shard_spec *s;
  /* The first problem met by a setter whose input could not be stored
   * (unknown name or key); validation reports it first. */
  char error[256];
};

/* remember records the first building problem; returns
 * FSPS_INVALID_ARGUMENT. */
static int remember(fsps_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int remember(fsps_spec *spec, const char *fmt, ...) {
  if (spec->error[0] != '\0')
    return FSPS_INVALID_ARGUMENT;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(spec->error, sizeof spec->error, fmt, ap);
  va_end(ap);
  return FSPS_INVALID_ARGUMENT;
}

/* remember_msg records msg (a parse error) as the building problem. */
static int remember_msg(fsps_spec *spec, const char *msg) {
  return remember(spec, "%s", msg);
}

fsps_spec *fsps_spec_create(uint64_t seed) {
  fsps_spec *spec = calloc(1, sizeof *spec);
  if (spec == NULL)
    return NULL;
  spec->s = shard_spec_create(seed);
  if (spec->s == NULL) {
    free(spec);
    return NULL;
  }
  shard_optim_spec o;
  shard_optim_defaults(SHARD_OPT_ADAM, &o);
  shard_spec_set_optim(spec->s, &o);
  return spec;
}

fsps_spec *fsps_spec_decode(const void *bytes, size_t len, char *err,
                            size_t errlen) {
  fsps_spec *spec = calloc(1, sizeof *spec);
  if (spec == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  spec->s = bytes && len ? wire_spec_unpack(bytes, len, err, errlen) : NULL;
  if (spec->s == NULL && (bytes == NULL || len == 0))
    snprintf(err, errlen, "no model spec (empty)");
  if (spec->s != NULL &&
      shard_spec_validate(spec->s, err, errlen) == FSPS_OK)
    return spec;
  fsps_spec_destroy(spec);
  return NULL;
}

void fsps_spec_destroy(fsps_spec *spec) {
  if (spec == NULL)
    return;
  shard_spec_destroy(spec->s);
  free(spec);
}

const shard_spec *client_spec_shard(const fsps_spec *spec) {
  return spec->s;
}

int fsps_spec_add_layer(fsps_spec *spec, const char *name) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  return shard_spec_add_layer(spec->s, name);
}

int fsps_spec_add_tensor(fsps_spec *spec, const char *name, uint32_t ndims,
                         const uint64_t *dims, const char *init, double a,
                         double b) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  shard_init_kind kind;
  char msg[200];
  if (shard_init_kind_parse_msg(init, &kind, msg, sizeof msg) != FSPS_OK)
    return remember(spec, "tensor '%s': %s", name ? name : "(null)", msg);
  return shard_spec_add_tensor(spec->s, name, ndims, dims, kind, a, b);
}

int fsps_spec_set_optimizer(fsps_spec *spec, const char *name, double lr) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  shard_opt_kind kind;
  char msg[200];
  if (shard_opt_kind_parse_msg(name, &kind, msg, sizeof msg) != FSPS_OK)
    return remember_msg(spec, msg);
  /* A new optimizer resets the optimizer's hyper-parameters to PyTorch's
   * defaults but keeps the learning-rate schedule already chosen. */
  shard_optim_spec o, old = *shard_spec_optim(spec->s);
  shard_optim_defaults(kind, &o);
  o.lr = lr;
  o.schedule = old.schedule;
  o.step_size = old.step_size;
  o.gamma = old.gamma;
  o.t_max = old.t_max;
  o.eta_min = old.eta_min;
  o.warmup_steps = old.warmup_steps;
  o.warmup_start_factor = old.warmup_start_factor;
  shard_spec_set_optim(spec->s, &o);
  return FSPS_OK;
}

typedef enum { P_DOUBLE, P_BOOL, P_U64 } param_type;

typedef struct {
  const char *key;
  size_t off;
  param_type type;
} param_def;

#define PD(key, type)                                                          \
  { #key, offsetof(shard_optim_spec, key), type }
static const param_def params[] = {
    PD(lr, P_DOUBLE),           PD(momentum, P_DOUBLE),
    PD(dampening, P_DOUBLE),    PD(nesterov, P_BOOL),
    PD(weight_decay, P_DOUBLE), PD(beta1, P_DOUBLE),
    PD(beta2, P_DOUBLE),        PD(eps, P_DOUBLE),
    PD(lr_decay, P_DOUBLE),     PD(initial_accumulator_value, P_DOUBLE),
    PD(step_size, P_U64),       PD(gamma, P_DOUBLE),
    PD(t_max, P_U64),           PD(eta_min, P_DOUBLE),
    PD(warmup_steps, P_U64),    PD(warmup_start_factor, P_DOUBLE),
};
#undef PD
#define NPARAMS (sizeof params / sizeof params[0])

static const param_def *find_param(const char *key) {
  for (size_t i = 0; key != NULL && i < NPARAMS; i++)
    if (strcmp(params[i].key, key) == 0)
      return &params[i];
  return NULL;
}

/* store_param writes value into the field d describes; false when value
 * does not fit the field's type. */
static bool store_param(shard_optim_spec *o, const param_def *d, double v) {
  char *field = (char *)o + d->off;
  if (d->type == P_DOUBLE) {
    memcpy(field, &v, sizeof v);
    return true;
  }
  if (d->type == P_BOOL) {
    bool b = v != 0.0;
    memcpy(field, &b, sizeof b);
    return v == 0.0 || v == 1.0;
  }
  if (!(v >= 0.0 && v < 18446744073709551616.0) || v != floor(v))
    return false;
  uint64_t u = (uint64_t)v;
  memcpy(field, &u, sizeof u);
  return true;
}

int fsps_spec_set_param(fsps_spec *spec, const char *key, double value) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  const param_def *d = find_param(key);
  if (d == NULL)
    return remember(spec,
                    "unknown optimizer parameter '%s'; expected one of: "
                    "momentum, dampening, nesterov, weight_decay, beta1, "
                    "beta2, eps, lr_decay, initial_accumulator_value, "
                    "step_size, gamma, t_max, eta_min, warmup_steps, "
                    "warmup_start_factor, lr",
                    key ? key : "(null)");
  shard_optim_spec o = *shard_spec_optim(spec->s);
  if (!store_param(&o, d, value))
    return remember(
        spec, "optimizer parameter '%s' = %g: expected %s", key, value,
        d->type == P_BOOL ? "0 or 1" : "a non-negative whole number");
  shard_spec_set_optim(spec->s, &o);
  return FSPS_OK;
}

int fsps_spec_set_schedule(fsps_spec *spec, const char *name) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  shard_sched_kind kind;
  char msg[200];
  if (shard_sched_kind_parse_msg(name, &kind, msg, sizeof msg) != FSPS_OK)
    return remember_msg(spec, msg);
  shard_optim_spec o = *shard_spec_optim(spec->s);
  o.schedule = kind;
  shard_spec_set_optim(spec->s, &o);
  return FSPS_OK;
}

int fsps_spec_set_wire_dtype(fsps_spec *spec, const char *dtype) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  shard_wire_dtype d;
  char msg[200];
  if (shard_wire_dtype_parse_msg(dtype, &d, msg, sizeof msg) != FSPS_OK)
    return remember_msg(spec, msg);
  shard_spec_set_wire_dtype(spec->s, d);
  return FSPS_OK;
}

const char *fsps_spec_wire_dtype(const fsps_spec *spec) {
  return shard_wire_dtype_name(spec ? shard_spec_wire_dtype(spec->s)
                                    : SHARD_WIRE_FP32);
}

int fsps_spec_validate(const fsps_spec *spec, char *msg, size_t msglen) {
  if (spec == NULL) {
    if (msg != NULL && msglen > 0)
      snprintf(msg, msglen, "no spec (NULL)");
    return FSPS_INVALID_ARGUMENT;
  }
  if (spec->error[0] != '\0') {
    if (msg != NULL && msglen > 0)
      snprintf(msg, msglen, "%s", spec->error);
    return FSPS_INVALID_ARGUMENT;
  }
  return shard_spec_validate(spec->s, msg, msglen);
}

uint32_t fsps_spec_num_layers(const fsps_spec *spec) {
  return spec ? shard_spec_num_layers(spec->s) : 0;
}

uint64_t fsps_spec_layer_size(const fsps_spec *spec, uint32_t layer) {
  const shard_layer *L = spec ? shard_spec_layer(spec->s, layer) : NULL;
  return L ? L->n : 0;
}

uint64_t fsps_spec_hash(const fsps_spec *spec) {
  return spec ? shard_spec_hash(spec->s) : 0;
}

/* ---- copies and messages ---- */

static int clone_layer(shard_spec *dst, const shard_layer *L) {
  int rc = shard_spec_add_layer(dst, L->name);
  for (uint32_t i = 0; rc == FSPS_OK && i < L->ntensors; i++) {
    const shard_tensor *t = &L->tensors[i];
    rc = shard_spec_add_tensor(dst, t->name, t->ndims, t->dims, t->init,
                               t->init_a, t->init_b);
  }
  return rc;
}

shard_spec *client_spec_clone(const shard_spec *spec) {
  shard_spec *dst = shard_spec_create(shard_spec_seed(spec));
  if (dst == NULL)
    return NULL;
  for (uint32_t l = 0; l < shard_spec_num_layers(spec); l++) {
    if (clone_layer(dst, shard_spec_layer(spec, l)) != FSPS_OK) {
      shard_spec_destroy(dst);
      return NULL;
    }
  }
  shard_spec_set_optim(dst, shard_spec_optim(spec));
  shard_spec_set_wire_dtype(dst, shard_spec_wire_dtype(spec));
  return dst;
}
