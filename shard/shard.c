/* shard.c: slice arithmetic, wire chunking, the names of the spec's enums
 * and PyTorch's optimizer defaults. */
#include "shard.h"

#include <stdio.h>
#include <string.h>

static const char *const opt_names[] = {"sgd", "adam", "adamw", "adagrad"};
static const char *const init_names[] = {
    "zeros",          "constant",   "uniform", "normal",
    "xavier_uniform", "he_uniform", "client"};
static const char *const sched_names[] = {"constant", "step", "cosine"};
static const char *const dtype_names[] = {"fp32", "bf16"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

uint64_t shard_stride(uint64_t n, uint32_t S) {
  if (n == 0 || S == 0)
    return 0;
  uint64_t per = n / S + (n % S != 0);
  return (per + SHARD_STRIPE - 1) / SHARD_STRIPE * SHARD_STRIPE;
}

void shard_slice(uint64_t n, uint32_t S, uint32_t s, uint64_t *offset,
                 uint64_t *count) {
  uint64_t c = shard_stride(n, S);
  uint64_t start = n, len = 0;

  /* s < S and c < n/S + SHARD_STRIPE + 1 keep s*c below n + 17*S. */
  if (s < S && (uint64_t)s * c < n) {
    start = (uint64_t)s * c;
    len = n - start < c ? n - start : c;
  }
  if (offset)
    *offset = start;
  if (count)
    *count = len;
}

uint32_t shard_owner(uint64_t n, uint32_t S, uint64_t e) {
  if (S == 0 || e >= n)
    return S;
  return (uint32_t)(e / shard_stride(n, S));
}

uint64_t shard_num_chunks(uint64_t count) {
  return count / SHARD_CHUNK_ELEMS + (count % SHARD_CHUNK_ELEMS != 0);
}

void shard_chunk(uint64_t count, uint64_t i, uint64_t *offset, uint64_t *len) {
  uint64_t start = count, n = 0;

  if (i < shard_num_chunks(count)) {
    start = i * SHARD_CHUNK_ELEMS;
    n = count - start < SHARD_CHUNK_ELEMS ? count - start : SHARD_CHUNK_ELEMS;
  }
  if (offset)
    *offset = start;
  if (len)
    *len = n;
}

/* Looks name up in names[0..n); returns its index or -1. */
static int find_name(const char *const *names, size_t n, const char *name) {
  if (name == NULL)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (strcmp(names[i], name) == 0)
      return (int)i;
  return -1;
}

/* Writes "unknown <what> '<name>'; expected one of: a, b, c" into msg. */
static void unknown_name(char *msg, size_t msglen, const char *what,
                         const char *name, const char *const *names, size_t n) {
  if (msg == NULL || msglen == 0)
    return;
  int len = snprintf(msg, msglen, "unknown %s '%s'; expected one of: ", what,
                     name ? name : "(null)");
  for (size_t i = 0; i < n && len >= 0 && (size_t)len < msglen; i++)
    len += snprintf(msg + len, msglen - (size_t)len, "%s%s", i ? ", " : "",
                    names[i]);
}

/* The shared body of the *_parse_msg functions. */
static int parse_kind(const char *const *names, size_t n, const char *what,
                      const char *name, int *out, char *msg, size_t msglen) {
  int i = find_name(names, n, name);

  if (i < 0) {
    unknown_name(msg, msglen, what, name, names, n);
    return FSPS_INVALID_ARGUMENT;
  }
  *out = i;
  return FSPS_OK;
}

int shard_opt_kind_parse_msg(const char *name, shard_opt_kind *out, char *msg,
                             size_t msglen) {
  int i = 0;
  int rc = parse_kind(opt_names, COUNT(opt_names), "optimizer", name, &i, msg,
                      msglen);
  if (rc == FSPS_OK && out)
    *out = (shard_opt_kind)i;
  return rc;
}

int shard_init_kind_parse_msg(const char *name, shard_init_kind *out, char *msg,
                              size_t msglen) {
  int i = 0;
  int rc = parse_kind(init_names, COUNT(init_names), "init kind", name, &i, msg,
                      msglen);
  if (rc == FSPS_OK && out)
    *out = (shard_init_kind)i;
  return rc;
}

int shard_sched_kind_parse_msg(const char *name, shard_sched_kind *out,
                               char *msg, size_t msglen) {
  int i = 0;
  int rc = parse_kind(sched_names, COUNT(sched_names), "lr schedule", name, &i,
                      msg, msglen);
  if (rc == FSPS_OK && out)
    *out = (shard_sched_kind)i;
  return rc;
}

int shard_wire_dtype_parse_msg(const char *name, shard_wire_dtype *out,
                               char *msg, size_t msglen) {
  int i = 0;
  int rc = parse_kind(dtype_names, COUNT(dtype_names), "wire dtype", name, &i,
                      msg, msglen);
  if (rc == FSPS_OK && out)
    *out = (shard_wire_dtype)i;
  return rc;
}

int shard_opt_kind_parse(const char *name, shard_opt_kind *out) {
  return shard_opt_kind_parse_msg(name, out, NULL, 0);
}

int shard_init_kind_parse(const char *name, shard_init_kind *out) {
  return shard_init_kind_parse_msg(name, out, NULL, 0);
}

int shard_sched_kind_parse(const char *name, shard_sched_kind *out) {
  return shard_sched_kind_parse_msg(name, out, NULL, 0);
}

int shard_wire_dtype_parse(const char *name, shard_wire_dtype *out) {
  return shard_wire_dtype_parse_msg(name, out, NULL, 0);
}

/* Enum values are compared as unsigned so that a negative value stored in
 * an enum of either signedness is out of range too. */
const char *shard_opt_kind_name(shard_opt_kind kind) {
  return (unsigned)kind < COUNT(opt_names) ? opt_names[kind] : "unknown";
}

const char *shard_init_kind_name(shard_init_kind kind) {
  return (unsigned)kind < COUNT(init_names) ? init_names[kind] : "unknown";
}

const char *shard_sched_kind_name(shard_sched_kind kind) {
  return (unsigned)kind < COUNT(sched_names) ? sched_names[kind] : "unknown";
}

const char *shard_wire_dtype_name(shard_wire_dtype dtype) {
  return (unsigned)dtype < COUNT(dtype_names) ? dtype_names[dtype] : "unknown";
}

int shard_optim_defaults(shard_opt_kind kind, shard_optim_spec *o) {
  if (o == NULL)
    return FSPS_INVALID_ARGUMENT;
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  o->lr = 0.01;
  o->schedule = SHARD_SCHED_CONSTANT;
  o->gamma = 0.1;
  o->warmup_start_factor = 1.0 / 3.0;
  switch (kind) {
  case SHARD_OPT_SGD:
    return FSPS_OK;
  case SHARD_OPT_ADAMW:
    o->weight_decay = 0.01;
    /* fall through */
  case SHARD_OPT_ADAM:
    o->lr = 1e-3;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    return FSPS_OK;
  case SHARD_OPT_ADAGRAD:
    o->eps = 1e-10;
    return FSPS_OK;
  }
  return FSPS_INVALID_ARGUMENT;
}
