/* spec.c: the model spec: building it, reading it, validating it, and its
 * canonical encoding, which both the hash and the equality test use. */
#include "shard.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shard_spec {
  uint64_t seed;
  uint32_t nlayers;
  shard_layer *layers;
  shard_optim_spec optim;
  shard_wire_dtype wire_dtype;
  /* The first problem met by an add call that could not store its input
   * ("" when none); validation reports it before anything else. */
  char error[256];
};

/* ---- Building ---------------------------------------------------------- */

shard_spec *shard_spec_create(uint64_t seed) {
  shard_spec *spec = calloc(1, sizeof(*spec));

  if (spec == NULL)
    return NULL;
  spec->seed = seed;
  shard_optim_defaults(SHARD_OPT_SGD, &spec->optim);
  return spec;
}

void shard_spec_destroy(shard_spec *spec) {
  if (spec == NULL)
    return;
  for (uint32_t l = 0; l < spec->nlayers; l++)
    free(spec->layers[l].tensors);
  free(spec->layers);
  free(spec);
}

/* Records the first building problem; always returns FSPS_INVALID_ARGUMENT. */
static int sticky(shard_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int sticky(shard_spec *spec, const char *fmt, ...) {
  va_list ap;

  if (spec->error[0] != '\0')
    return FSPS_INVALID_ARGUMENT;
  va_start(ap, fmt);
  vsnprintf(spec->error, sizeof(spec->error), fmt, ap);
  va_end(ap);
  return FSPS_INVALID_ARGUMENT;
}

/* Returns the capacity, in elements, an array needs before element n is
 * appended, or 0 when it already has room. Capacity is the next power of
 * two, so it is implied by n and needs no field of its own. */
static size_t room_for(uint32_t n) {
  if (n != 0 && (n & (n - 1)) != 0)
    return 0;
  return n ? 2 * (size_t)n : 1;
}

/* strlen capped at max, so an unterminated name is never overrun (strnlen is
 * POSIX, not C11). */
static size_t name_len(const char *s, size_t max) {
  size_t n = 0;
  while (n < max && s[n] != '\0')
    n++;
  return n;
}

/* Records a sticky error when name cannot be stored; where says whose name
 * it is. Returns FSPS_OK when it can. */
static int check_name(shard_spec *spec, const char *where, const char *name) {
  if (name == NULL)
    return sticky(spec, "%s: name is missing (NULL)", where);
  if (name_len(name, SHARD_NAME_MAX) >= SHARD_NAME_MAX)
    return sticky(spec, "%s: name '%.40s...' is longer than %d bytes", where,
                  name, SHARD_NAME_MAX - 1);
  return FSPS_OK;
}

int shard_spec_add_layer(shard_spec *spec, const char *name) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  uint32_t l = spec->nlayers;
  char where[32];
  snprintf(where, sizeof(where), "layer %" PRIu32, l);
  if (check_name(spec, where, name) != FSPS_OK)
    return FSPS_INVALID_ARGUMENT;
  if (l >= SHARD_MAX_LAYERS)
    return sticky(spec,
                  "layer %" PRIu32 " '%s': too many layers; the limit "
                  "is %d",
                  l, name, SHARD_MAX_LAYERS);
  size_t cap = room_for(l);
  if (cap) {
    shard_layer *p = realloc(spec->layers, cap * sizeof(*p));
    if (p == NULL)
      return FSPS_NOMEM;
    spec->layers = p;
  }
  shard_layer *L = &spec->layers[l];
  memset(L, 0, sizeof(*L));
  memcpy(L->name, name, strlen(name) + 1);
  spec->nlayers++;
  return FSPS_OK;
}

static uint64_t sat_mul(uint64_t a, uint64_t b) {
  return a != 0 && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

static uint64_t sat_add(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

/* Checks what add_tensor cannot store; returns FSPS_OK or a sticky error. */
static int check_storable(shard_spec *spec, const char *name, uint32_t ndims,
                          const uint64_t *dims) {
  if (spec->nlayers == 0)
    return sticky(spec, "tensor '%.63s' was added before any layer",
                  name ? name : "");
  uint32_t l = spec->nlayers - 1;
  const shard_layer *L = &spec->layers[l];
  char where[128];
  snprintf(where, sizeof(where), "layer %" PRIu32 " '%s', tensor %" PRIu32, l,
           L->name, L->ntensors);
  if (check_name(spec, where, name) != FSPS_OK)
    return FSPS_INVALID_ARGUMENT;
  if (ndims > SHARD_MAX_DIMS || (dims == NULL && ndims > 0))
    return sticky(spec,
                  "layer %" PRIu32 " '%s', tensor '%s': %" PRIu32
                  " dims %s; at most %d are supported",
                  l, L->name, name, ndims, dims ? "given" : "but no dims array",
                  SHARD_MAX_DIMS);
  if (L->ntensors >= SHARD_MAX_TENSORS)
    return sticky(spec,
                  "layer %" PRIu32 " '%s', tensor '%s': too many "
                  "tensors; the limit is %d per layer",
                  l, L->name, name, SHARD_MAX_TENSORS);
  return FSPS_OK;
}

int shard_spec_add_tensor(shard_spec *spec, const char *name, uint32_t ndims,
                          const uint64_t *dims, shard_init_kind init, double a,
                          double b) {
  if (spec == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = check_storable(spec, name, ndims, dims);
  if (rc != FSPS_OK)
    return rc;
  shard_layer *L = &spec->layers[spec->nlayers - 1];
  size_t cap = room_for(L->ntensors);
  if (cap) {
    shard_tensor *p = realloc(L->tensors, cap * sizeof(*p));
    if (p == NULL)
      return FSPS_NOMEM;
    L->tensors = p;
  }
  shard_tensor *t = &L->tensors[L->ntensors++];
  memset(t, 0, sizeof(*t));
  memcpy(t->name, name, strlen(name) + 1);
  t->ndims = ndims;
  t->numel = ndims ? 1 : 0; /* a tensor without a shape holds nothing */
  for (uint32_t d = 0; d < ndims; d++) {
    t->dims[d] = dims[d];
    t->numel = sat_mul(t->numel, dims[d]);
  }
  t->init = init;
  t->init_a = a;
  t->init_b = b;
  t->offset = L->n;
  L->n = sat_add(L->n, t->numel);
  return FSPS_OK;
}

void shard_spec_set_optim(shard_spec *spec, const shard_optim_spec *o) {
  if (spec && o)
    spec->optim = *o;
}

void shard_spec_set_wire_dtype(shard_spec *spec, shard_wire_dtype dtype) {
  if (spec)
    spec->wire_dtype = dtype;
}

/* ---- Reading ----------------------------------------------------------- */

uint64_t shard_spec_seed(const shard_spec *spec) {
  return spec->seed;
}

uint32_t shard_spec_num_layers(const shard_spec *spec) {
  return spec->nlayers;
}

const shard_layer *shard_spec_layer(const shard_spec *spec, uint32_t l) {
  return l < spec->nlayers ? &spec->layers[l] : NULL;
}

const shard_optim_spec *shard_spec_optim(const shard_spec *spec) {
  return &spec->optim;
}

shard_wire_dtype shard_spec_wire_dtype(const shard_spec *spec) {
  return spec->wire_dtype;
}

bool shard_layer_client(const shard_layer *L) {
  return L != NULL && L->ntensors > 0 &&
         L->tensors[0].init == SHARD_INIT_CLIENT;
}

int shard_spec_find_layer(const shard_spec *spec, const char *name,
                          uint32_t *index) {
  if (spec == NULL || name == NULL || index == NULL)
    return FSPS_INVALID_ARGUMENT;
  for (uint32_t l = 0; l < spec->nlayers; l++) {
    if (strcmp(spec->layers[l].name, name) == 0) {
      *index = l;
      return FSPS_OK;
    }
  }
  return FSPS_NOT_FOUND;
}

/* ---- Validation -------------------------------------------------------- */

/* Writes a message into msg (if any); returns FSPS_INVALID_ARGUMENT. */
static int fail(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *msg, size_t msglen, const char *fmt, ...) {
  va_list ap;

  if (msg == NULL || msglen == 0)
    return FSPS_INVALID_ARGUMENT;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
  return FSPS_INVALID_ARGUMENT;
}

/* A named number, so checks can loop over the optimizer's fields. */
typedef struct {
  const char *name;
  double v;
} field;

static int check_finite(const shard_optim_spec *o, char *msg, size_t len) {
  const field f[] = {
      {"lr", o->lr},
      {"momentum", o->momentum},
      {"dampening", o->dampening},
      {"weight_decay", o->weight_decay},
      {"beta1", o->beta1},
      {"beta2", o->beta2},
      {"eps", o->eps},
      {"lr_decay", o->lr_decay},
      {"initial_accumulator_value", o->initial_accumulator_value},
      {"gamma", o->gamma},
      {"eta_min", o->eta_min},
      {"warmup_start_factor", o->warmup_start_factor}};

  for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
    if (!isfinite(f[i].v))
      return fail(msg, len, "optimizer: %s is %g; it must be a finite number",
                  f[i].name, f[i].v);
  return FSPS_OK;
}

/* Refuses a field below its minimum (or at it, when strict). */
static int check_min(const char *name, double v, double min, bool strict,
                     char *msg, size_t len) {
  if (strict ? v > min : v >= min)
    return FSPS_OK;
  return fail(msg, len, "optimizer: %s is %g; it must be %s %g", name, v,
              strict ? ">" : ">=", min);
}

static int check_beta(const char *name, double v, char *msg, size_t len) {
  if (v >= 0 && v < 1)
    return FSPS_OK;
  return fail(msg, len, "optimizer: %s is %g; it must be in [0, 1)", name, v);
}

static int check_sgd(const shard_optim_spec *o, char *msg, size_t len) {
  int rc = check_min("momentum", o->momentum, 0, false, msg, len);
  if (rc != FSPS_OK)
    return rc;
  if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    return fail(msg, len,
                "optimizer: nesterov requires momentum > 0 and dampening 0 "
                "(momentum is %g, dampening is %g)",
                o->momentum, o->dampening);
  return FSPS_OK;
}

static int check_adam(const shard_optim_spec *o, char *msg, size_t len) {
  int rc = check_beta("beta1", o->beta1, msg, len);
  if (rc == FSPS_OK)
    rc = check_beta("beta2", o->beta2, msg, len);
  if (rc == FSPS_OK)
    rc = check_min("eps", o->eps, 0, true, msg, len);
  return rc;
}

static int check_adagrad(const shard_optim_spec *o, char *msg, size_t len) {
  int rc = check_min("eps", o->eps, 0, true, msg, len);
  if (rc == FSPS_OK)
    rc = check_min("lr_decay", o->lr_decay, 0, false, msg, len);
  if (rc == FSPS_OK)
    rc = check_min("initial_accumulator_value", o->initial_accumulator_value, 0,
                   false, msg, len);
  return rc;
}

static int check_schedule(const shard_optim_spec *o, char *msg, size_t len) {
  int rc = FSPS_OK;

  if (o->schedule == SHARD_SCHED_STEP) {
    if (o->step_size == 0)
      return fail(msg, len, "optimizer: step schedule needs step_size > 0");
    rc = check_min("gamma", o->gamma, 0, true, msg, len);
  } else if (o->schedule == SHARD_SCHED_COSINE) {
    if (o->t_max == 0)
      return fail(msg, len, "optimizer: cosine schedule needs t_max > 0");
    rc = check_min("eta_min", o->eta_min, 0, false, msg, len);
  }
  if (rc != FSPS_OK)
    return rc;
  if (!(o->warmup_start_factor > 0 && o->warmup_start_factor <= 1))
    return fail(msg, len,
                "optimizer: warmup_start_factor is %g; it must be in (0, 1]",
                o->warmup_start_factor);
  return FSPS_OK;
}

/* Checks the fields each optimizer kind uses. */
static int check_kind_fields(const shard_optim_spec *o, char *msg, size_t len) {
  if (o->kind != SHARD_OPT_SGD && o->nesterov)
    return fail(msg, len, "optimizer: nesterov applies only to sgd, not %s",
                shard_opt_kind_name(o->kind));
  switch (o->kind) {
  case SHARD_OPT_SGD:
    return check_sgd(o, msg, len);
  case SHARD_OPT_ADAM:
  case SHARD_OPT_ADAMW:
    return check_adam(o, msg, len);
  case SHARD_OPT_ADAGRAD:
    return check_adagrad(o, msg, len);
  }
  return FSPS_OK;
}

static int check_optim(const shard_optim_spec *o, char *msg, size_t len) {
  if ((unsigned)o->kind > SHARD_OPT_ADAGRAD)
    return fail(msg, len,
                "optimizer: kind %d is unknown; expected sgd, adam, adamw or "
                "adagrad",
                (int)o->kind);
  if ((unsigned)o->schedule > SHARD_SCHED_COSINE)
    return fail(msg, len,
                "optimizer: schedule %d is unknown; expected constant, step "
                "or cosine",
                (int)o->schedule);
  int rc = check_finite(o, msg, len);
  if (rc == FSPS_OK)
    rc = check_min("lr", o->lr, 0, false, msg, len);
  if (rc == FSPS_OK)
    rc = check_min("weight_decay", o->weight_decay, 0, false, msg, len);
  if (rc == FSPS_OK)
    rc = check_kind_fields(o, msg, len);
  if (rc == FSPS_OK)
    rc = check_schedule(o, msg, len);
  return rc;
}

/* Refuses an init parameter that is not a finite float32. */
static int check_param(const char *where, const char *name, double v, char *msg,
                       size_t len) {
  if (!isfinite(v))
    return fail(msg, len, "%s: %s is %g; it must be a finite number", where,
                name, v);
  if (fabs(v) > FLT_MAX)
    return fail(msg, len, "%s: %s is %g, which does not fit in float32", where,
                name, v);
  return FSPS_OK;
}

/* Checks the parameters of the tensor's init kind; a and b are finite. */
static int check_init_kind(const char *where, const shard_tensor *t, char *msg,
                           size_t len) {
  double a = t->init_a, b = t->init_b;

  switch (t->init) {
  case SHARD_INIT_ZEROS:
  case SHARD_INIT_CONSTANT:
  case SHARD_INIT_CLIENT:
    return FSPS_OK;
  case SHARD_INIT_UNIFORM:
    if (a > b)
      return fail(msg, len, "%s: uniform low %g is above high %g", where, a, b);
    return FSPS_OK;
  case SHARD_INIT_NORMAL:
    if (b < 0)
      return fail(msg, len, "%s: normal std %g is negative", where, b);
    /* Box-Muller's |z| stays below 8.6 with 53-bit uniforms. */
    if (fabs(a) + 9 * b > FLT_MAX)
      return fail(msg, len, "%s: normal(%g, %g) overflows float32", where, a,
                  b);
    return FSPS_OK;
  case SHARD_INIT_XAVIER_UNIFORM:
    if (a < 0 || a > FLT_MAX / 2) /* the bound is at most gain*sqrt(3) */
      return fail(msg, len, "%s: xavier gain %g must be in [0, %g]", where, a,
                  FLT_MAX / 2);
    /* fall through */
  case SHARD_INIT_HE_UNIFORM:
    if (t->ndims < 2)
      return fail(msg, len,
                  "%s: %s init needs at least 2 dims (out, in) to compute "
                  "fan_in/fan_out, but the tensor has %" PRIu32,
                  where, shard_init_kind_name(t->init), t->ndims);
    return FSPS_OK;
  }
  return fail(msg, len, "%s: init kind %d is unknown; expected %s", where,
              (int)t->init,
              "zeros, constant, uniform, normal, xavier_uniform, he_uniform or "
              "client");
}

static int check_init(const char *where, const shard_tensor *t, char *msg,
                      size_t len) {
  int rc = check_param(where, "init_a", t->init_a, msg, len);
  if (rc == FSPS_OK)
    rc = check_param(where, "init_b", t->init_b, msg, len);
  if (rc == FSPS_OK)
    rc = check_init_kind(where, t, msg, len);
  return rc;
}

static int check_tensor(const shard_layer *L, uint32_t l, uint32_t i, char *msg,
                        size_t len) {
  const shard_tensor *t = &L->tensors[i];
  char where[192];

  snprintf(where, sizeof(where),
           "layer %" PRIu32 " '%s', tensor %" PRIu32 " '%s'", l, L->name, i,
           t->name);
  if (t->name[0] == '\0')
    return fail(msg, len, "%s: tensor name is empty", where);
  for (uint32_t j = 0; j < i; j++)
    if (strcmp(L->tensors[j].name, t->name) == 0)
      return fail(msg, len,
                  "%s: duplicate tensor name (tensor %" PRIu32 " has it too)",
                  where, j);
  if (t->ndims == 0 || t->ndims > SHARD_MAX_DIMS)
    return fail(msg, len, "%s: ndims is %" PRIu32 "; it must be 1 to %d", where,
                t->ndims, SHARD_MAX_DIMS);
  for (uint32_t d = 0; d < t->ndims; d++)
    if (t->dims[d] == 0)
      return fail(msg, len,
                  "%s: dims[%" PRIu32 "] is 0 (zero-size tensor); every "
                  "dimension must be at least 1",
                  where, d);
  return check_init(where, t, msg, len);
}

/* Refuses a layer mixing client-given tensors with drawn ones: a client
 * gives a whole layer's values (SetValues), so a drawn tensor in it would
 * be overwritten. */
static int check_client_layer(const shard_layer *L, uint32_t l, char *msg,
                              size_t len) {
  bool first = L->tensors[0].init == SHARD_INIT_CLIENT;
  for (uint32_t i = 1; i < L->ntensors; i++) {
    const shard_tensor *t = &L->tensors[i];
    if ((t->init == SHARD_INIT_CLIENT) != first)
      return fail(msg, len,
                  "layer %" PRIu32 " '%s': tensor '%s' has init %s but "
                  "tensor '%s' has init %s; a client gives a whole layer's "
                  "values, so either every tensor of a layer has init client "
                  "or none has",
                  l, L->name, L->tensors[0].name,
                  shard_init_kind_name(L->tensors[0].init), t->name,
                  shard_init_kind_name(t->init));
  }
  return FSPS_OK;
}

static int check_layer(const shard_layer *L, uint32_t l, char *msg,
                       size_t len) {
  if (L->name[0] == '\0')
    return fail(msg, len, "layer %" PRIu32 ": layer name is empty", l);
  if (L->ntensors == 0)
    return fail(msg, len,
                "layer %" PRIu32 " '%s' has no tensors; add at least one", l,
                L->name);
  for (uint32_t i = 0; i < L->ntensors; i++) {
    int rc = check_tensor(L, l, i, msg, len);
    if (rc != FSPS_OK)
      return rc;
  }
  int rc = check_client_layer(L, l, msg, len);
  if (rc != FSPS_OK)
    return rc;
  if (L->n == UINT64_MAX)
    return fail(msg, len,
                "layer %" PRIu32 " '%s' has more than 2^64 elements (its "
                "dims overflow); the limit is 2^40 per layer",
                l, L->name);
  if (L->n > SHARD_MAX_LAYER_ELEMS)
    return fail(msg, len,
                "layer %" PRIu32 " '%s' has %" PRIu64 " elements; the limit "
                "is 2^40 per layer",
                l, L->name, L->n);
  return FSPS_OK;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * UINT64_C(0x100000001b3);
  return h;
}

#define FNV_BASIS UINT64_C(0xcbf29ce484222325)
#define NAME_SLOTS 8192 /* a power of two above 2 * SHARD_MAX_LAYERS */

/* Finds duplicate layer names in linear time with an open-addressed table
 * of layer index + 1 (0 = empty); 16 KiB on the stack. */
static int check_layer_names(const shard_spec *spec, char *msg, size_t len) {
  uint16_t slot[NAME_SLOTS] = {0};

  for (uint32_t l = 0; l < spec->nlayers; l++) {
    const char *name = spec->layers[l].name;
    size_t i = fnv1a(FNV_BASIS, name, strlen(name)) & (NAME_SLOTS - 1);
    for (; slot[i] != 0; i = (i + 1) & (NAME_SLOTS - 1)) {
      uint32_t other = slot[i] - 1u;
      if (strcmp(spec->layers[other].name, name) == 0)
        return fail(msg, len,
                    "layers %" PRIu32 " and %" PRIu32 " are both named '%s'; "
                    "layer names must be unique",
                    other, l, name);
    }
    slot[i] = (uint16_t)(l + 1);
  }
  return FSPS_OK;
}

int shard_spec_validate(const shard_spec *spec, char *msg, size_t msglen) {
  if (spec == NULL)
    return fail(msg, msglen, "model spec is missing (NULL)");
  if (spec->error[0] != '\0')
    return fail(msg, msglen, "%s", spec->error);
  if (spec->nlayers == 0)
    return fail(msg, msglen, "model spec has no layers; add at least one");
  if ((unsigned)spec->wire_dtype > SHARD_WIRE_BF16)
    return fail(msg, msglen, "unknown wire dtype %d; expected fp32 or bf16",
                (int)spec->wire_dtype);
  int rc = check_optim(&spec->optim, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  for (uint32_t l = 0; l < spec->nlayers && rc == FSPS_OK; l++)
    rc = check_layer(&spec->layers[l], l, msg, msglen);
  if (rc == FSPS_OK)
    rc = check_layer_names(spec, msg, msglen);
  return rc;
}

/* ---- Canonical encoding, hash, equality -------------------------------- */

/* The spec is encoded piece by piece (header, optimizer, each layer's head,
 * each tensor) into a small buffer, little-endian, doubles by bit pattern,
 * strings as u32 length + bytes. The hash feeds every piece to FNV-1a; the
 * equality test compares the pieces, so the two cannot disagree. Changing
 * this encoding changes every hash: it is a wire-compatibility break. */
typedef struct {
  unsigned char b[256];
  size_t n;
} enc;

static void put_u64(enc *e, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; i++)
    e->b[e->n++] = (unsigned char)(v >> (8 * i));
}

static void put_f64(enc *e, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  put_u64(e, bits, 8);
}

static void put_str(enc *e, const char *s) {
  size_t len = name_len(s, SHARD_NAME_MAX - 1);
  put_u64(e, len, 4);
  memcpy(e->b + e->n, s, len);
  e->n += len;
}

static void enc_head(enc *e, const shard_spec *spec) {
  e->n = 0;
  put_str(e, "fsps.spec.v1");
  put_u64(e, spec->seed, 8);
  put_u64(e, spec->nlayers, 4);
}

static void enc_optim(enc *e, const shard_optim_spec *o) {
  e->n = 0;
  put_u64(e, (uint32_t)o->kind, 4);
  put_f64(e, o->lr);
  put_f64(e, o->momentum);
  put_f64(e, o->dampening);
  put_f64(e, o->weight_decay);
  put_f64(e, o->beta1);
  put_f64(e, o->beta2);
  put_f64(e, o->eps);
  put_f64(e, o->lr_decay);
  put_f64(e, o->initial_accumulator_value);
  put_u64(e, o->nesterov ? 1 : 0, 1);
  put_u64(e, (uint32_t)o->schedule, 4);
  put_u64(e, o->step_size, 8);
  put_f64(e, o->gamma);
  put_u64(e, o->t_max, 8);
  put_f64(e, o->eta_min);
  put_u64(e, o->warmup_steps, 8);
  put_f64(e, o->warmup_start_factor);
}

static void enc_layer(enc *e, const shard_layer *L) {
  e->n = 0;
  put_str(e, L->name);
  put_u64(e, L->ntensors, 4);
}

static void enc_tensor(enc *e, const shard_tensor *t) {
  e->n = 0;
  put_str(e, t->name);
  put_u64(e, t->ndims, 4);
  for (uint32_t d = 0; d < t->ndims && d < SHARD_MAX_DIMS; d++)
    put_u64(e, t->dims[d], 8);
  put_u64(e, (uint32_t)t->init, 4);
  put_f64(e, t->init_a);
  put_f64(e, t->init_b);
}

/* enc_wire encodes the wire dtype: nothing for fp32, so that a float32
 * model hashes as it did before the dtype was part of the spec. */
static void enc_wire(enc *e, const shard_spec *spec) {
  e->n = 0;
  if (spec->wire_dtype == SHARD_WIRE_FP32)
    return;
  put_str(e, "wire_dtype");
  put_u64(e, (uint32_t)spec->wire_dtype, 4);
}

/* murmur3's fmix64: spreads FNV's weak high-bit mixing over all 64 bits. */
static uint64_t fmix64(uint64_t h) {
  h ^= h >> 33;
  h *= UINT64_C(0xff51afd7ed558ccd);
  h ^= h >> 33;
  h *= UINT64_C(0xc4ceb9fe1a85ec53);
  h ^= h >> 33;
  return h;
}

uint64_t shard_spec_hash(const shard_spec *spec) {
  enc e;
  uint64_t h = FNV_BASIS;

  if (spec == NULL)
    return 0;
  enc_head(&e, spec);
  h = fnv1a(h, e.b, e.n);
  enc_optim(&e, &spec->optim);
  h = fnv1a(h, e.b, e.n);
  for (uint32_t l = 0; l < spec->nlayers; l++) {
    const shard_layer *L = &spec->layers[l];
    enc_layer(&e, L);
    h = fnv1a(h, e.b, e.n);
    for (uint32_t i = 0; i < L->ntensors; i++) {
      enc_tensor(&e, &L->tensors[i]);
      h = fnv1a(h, e.b, e.n);
    }
  }
  enc_wire(&e, spec);
  h = fnv1a(h, e.b, e.n);
  return fmix64(h);
}

void shard_spec_hash_hex(uint64_t hash, char out[17]) {
  static const char digits[] = "0123456789abcdef";

  for (int i = 15; i >= 0; i--, hash >>= 4)
    out[i] = digits[hash & 15];
  out[16] = '\0';
}

static bool same(const enc *x, const enc *y) {
  return x->n == y->n && memcmp(x->b, y->b, x->n) == 0;
}

static bool same_layer(const shard_layer *a, const shard_layer *b) {
  enc x, y;

  enc_layer(&x, a);
  enc_layer(&y, b);
  if (!same(&x, &y))
    return false;
  for (uint32_t i = 0; i < a->ntensors; i++) {
    enc_tensor(&x, &a->tensors[i]);
    enc_tensor(&y, &b->tensors[i]);
    if (!same(&x, &y))
      return false;
  }
  return true;
}

bool shard_spec_equal(const shard_spec *a, const shard_spec *b) {
  enc x, y;

  if (a == NULL || b == NULL)
    return a == b;
  enc_head(&x, a);
  enc_head(&y, b);
  if (!same(&x, &y))
    return false;
  enc_optim(&x, &a->optim);
  enc_optim(&y, &b->optim);
  if (!same(&x, &y) || a->wire_dtype != b->wire_dtype)
    return false;
  for (uint32_t l = 0; l < a->nlayers; l++)
    if (!same_layer(&a->layers[l], &b->layers[l]))
      return false;
  return true;
}
