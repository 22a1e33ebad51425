/* init.c: deterministic initial values: Philox4x32-10 keyed by the seed with
 * counter (element, layer), so a value never depends on how layers are
 * sliced across servers. */
#include "shard.h"
#include "shard_int.h"

#include <math.h>

#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)
#define TWO_PI 6.283185307179586476925286766559

static void philox_round(uint32_t c[4], const uint32_t k[2]) {
  uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
  uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
  uint32_t c1 = c[1], c3 = c[3];

  c[0] = (uint32_t)(p1 >> 32) ^ c1 ^ k[0];
  c[1] = (uint32_t)p1;
  c[2] = (uint32_t)(p0 >> 32) ^ c3 ^ k[1];
  c[3] = (uint32_t)p0;
}

void shard_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
                         uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  uint32_t k[2] = {key[0], key[1]};

  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k[0] += PHILOX_W0;
      k[1] += PHILOX_W1;
    }
    philox_round(c, k);
  }
  for (int i = 0; i < 4; i++)
    out[i] = c[i];
}

/* The 128 random bits of element index of layer l. Word 3 of the counter is
 * 0: it is left free for other random streams (dropout, say). */
static void element_bits(uint64_t seed, uint32_t l, uint64_t index,
                         uint32_t out[4]) {
  const uint32_t ctr[4] = {(uint32_t)index, (uint32_t)(index >> 32), l, 0};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};

  shard_philox4x32_10(ctr, key, out);
}

/* A double in [0, 1) from the top 53 of the 64 bits hi:lo. */
static double unit53(uint32_t hi, uint32_t lo) {
  uint64_t x = (uint64_t)hi << 32 | lo;
  return (double)(x >> 11) * 0x1p-53;
}

double shard_rand_uniform(uint64_t seed, uint32_t layer, uint64_t index) {
  uint32_t w[4];

  element_bits(seed, layer, index, w);
  return unit53(w[0], w[1]);
}

/* How one tensor's elements are drawn, prepared once per fill. */
typedef struct {
  enum { GEN_CONSTANT, GEN_UNIFORM, GEN_NORMAL } how;
  double a, b; /* constant a; uniform [a, b); normal mean a, std b */
} gen;

/* fan_in and fan_out as PyTorch's _calculate_fan_in_and_fan_out computes
 * them; doubles, since only their square roots matter. */
static void fans(const shard_tensor *t, double *fan_in, double *fan_out) {
  double field = 1;

  for (uint32_t d = 2; d < t->ndims; d++)
    field *= (double)t->dims[d];
  *fan_in = (double)t->dims[1] * field;
  *fan_out = (double)t->dims[0] * field;
}

static gen make_gen(const shard_tensor *t) {
  double fan_in = 1, fan_out = 1, bound = 0;

  if (t->ndims >= 2)
    fans(t, &fan_in, &fan_out);
  switch (t->init) {
  case SHARD_INIT_ZEROS:
  case SHARD_INIT_CLIENT: /* a placeholder until a client gives them */
    break;
  case SHARD_INIT_CONSTANT:
    return (gen){GEN_CONSTANT, t->init_a, 0};
  case SHARD_INIT_UNIFORM:
    return (gen){GEN_UNIFORM, t->init_a, t->init_b};
  case SHARD_INIT_NORMAL:
    return (gen){GEN_NORMAL, t->init_a, t->init_b};
  case SHARD_INIT_XAVIER_UNIFORM:
    bound = (t->init_a == 0 ? 1 : t->init_a) * sqrt(6 / (fan_in + fan_out));
    return (gen){GEN_UNIFORM, -bound, bound};
  case SHARD_INIT_HE_UNIFORM:
    bound = sqrt(6 / fan_in);
    return (gen){GEN_UNIFORM, -bound, bound};
  }
  return (gen){GEN_CONSTANT, 0, 0};
}

/* a + (b-a)u rounded to float. Rounding can land on b itself; the float
 * just below is then <= the exact value < b, keeping the range [a, b). */
static float uniform(const gen *g, double u) {
  float f = (float)(g->a + (g->b - g->a) * u);

  if (f >= g->b && g->a < g->b)
    f = nextafterf(f, -INFINITY);
  return f;
}

/* Box-Muller's cosine branch; 1 - u1 lies in (0, 1], so log never sees 0. */
static float normal(const gen *g, const uint32_t w[4]) {
  double u1 = unit53(w[0], w[1]), u2 = unit53(w[2], w[3]);
  double z = sqrt(-2.0 * log(1.0 - u1)) * cos(TWO_PI * u2);

  return (float)(g->a + g->b * z);
}

/* Writes elements [first, first+n) of the layer, all inside one tensor. */
static void fill_tensor(const gen *g, uint64_t seed, uint32_t l, uint64_t first,
                        uint64_t n, float *out) {
  uint32_t w[4];

  for (uint64_t i = 0; i < n; i++) {
    if (g->how == GEN_CONSTANT) {
      out[i] = (float)g->a;
      continue;
    }
    element_bits(seed, l, first + i, w);
    out[i] =
        g->how == GEN_UNIFORM ? uniform(g, unit53(w[0], w[1])) : normal(g, w);
  }
}

int shard_init_fill(const shard_spec *spec, uint32_t l, uint64_t offset,
                    uint64_t count, float *out) {
  const shard_layer *L = spec ? shard_spec_layer(spec, l) : NULL;

  if (L == NULL || offset > L->n || count > L->n - offset ||
      (out == NULL && count > 0))
    return FSPS_INVALID_ARGUMENT;
  uint64_t seed = shard_spec_seed(spec), end = offset + count;
  for (uint32_t i = 0; i < L->ntensors && offset < end; i++) {
    const shard_tensor *t = &L->tensors[i];
    /* numel saturates on overflow in an unvalidated spec; so does t_end. */
    uint64_t t_end =
        t->numel > UINT64_MAX - t->offset ? UINT64_MAX : t->offset + t->numel;
    if (t->numel == 0 || t_end <= offset)
      continue;
    uint64_t n = (t_end < end ? t_end : end) - offset;
    gen g = make_gen(t);
    fill_tensor(&g, seed, l, offset, n, out);
    out += n;
    offset += n;
  }
  return FSPS_OK;
}
