/* mlp.c: layer-wise forward/backward of a ReLU multi-layer perceptron with
 * softmax cross-entropy, on OpenBLAS sgemm, over externally owned params. */
#include "mlp.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

struct mlp {
  uint32_t layers;    /* L */
  uint32_t max_batch; /* workspaces hold this many rows */
  uint32_t batch;     /* b of the pass in progress */
  uint32_t *w;        /* L+1 widths */
  const float *x0;    /* layer 0's input of the pass (not owned) */
  /* act[l]: layer l's output [max_batch][w[l+1]], post-ReLU except for the
   * last layer (the logits). ReLU's mask needs no pre-activation copy:
   * relu(z) > 0 exactly where z > 0. */
  float **act;
  /* The gradient of layer l's output lives in dy[l & 1]: backward of layer
   * l reads dy[l & 1] and writes layer l-1's into the other buffer. */
  float *dy[2];
  float *slab; /* one allocation behind act and dy */
};

/* ---- Parsing ------------------------------------------------------------ */

/* Formats into err (nothing when err is NULL or errlen 0). */
__attribute__((format(printf, 3, 4))) static void
mlp_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Parses one width at *p (decimal digits up to ',' or the end) into *out
 * and advances *p past it. Returns -1 if it is empty or not all digits;
 * values above MLP_MAX_WIDTH are returned as MLP_MAX_WIDTH + 1. */
static int parse_width(const char **p, uint32_t *out) {
  const char *s = *p;
  uint64_t v = 0;
  for (; *s >= '0' && *s <= '9'; s++)
    if ((v = v * 10 + (uint64_t)(*s - '0')) > MLP_MAX_WIDTH)
      v = MLP_MAX_WIDTH + 1;
  if (s == *p || (*s != ',' && *s != '\0'))
    return -1;
  *out = (uint32_t)v;
  *p = s;
  return 0;
}

int model_mlp_parse(const char *desc, uint32_t *widths, uint32_t max,
                     uint32_t *nwidths, char *err, size_t errlen) {
  static const char eg[] = "e.g. mlp:784,512,256,10";
  if (desc == NULL || strncmp(desc, "mlp:", 4) != 0) {
    mlp_err(err, errlen,
                      "model '%s': expected 'mlp:' and comma-separated "
                      "layer widths, %s",
                      desc ? desc : "(null)", eg);
    return -1;
  }
  uint32_t n = 0;
  for (const char *p = desc + 4;; p++) {
    if (n == max) {
      mlp_err(err, errlen, "model '%s': more than %u widths", desc,
                        max);
      return -1;
    }
    if (parse_width(&p, &widths[n]) != 0) {
      mlp_err(err, errlen,
                        "model '%s': width %u is not a positive decimal "
                        "integer, %s",
                        desc, n + 1, eg);
      return -1;
    }
    if (widths[n] == 0 || widths[n] > MLP_MAX_WIDTH) {
      mlp_err(err, errlen, "model '%s': width %u must be 1..%u", desc,
                        n + 1, MLP_MAX_WIDTH);
      return -1;
    }
    n++;
    if (*p == '\0')
      break;
  }
  if (n < 2) {
    mlp_err(err, errlen,
                      "model '%s': needs at least 2 widths (inputs and "
                      "classes), %s",
                      desc, eg);
    return -1;
  }
  *nwidths = n;
  return 0;
}

/* ---- Lifetime ----------------------------------------------------------- */

/* Floats of workspace per batch row: every layer's output plus two gradient
 * buffers of the widest output. 0 if a width is 0 or nwidths < 2. */
static uint64_t floats_per_row(const uint32_t *widths, uint32_t nwidths) {
  uint64_t sum = 0, widest = 0;
  if (nwidths < 2 || widths[0] == 0)
    return 0;
  for (uint32_t i = 1; i < nwidths; i++) {
    if (widths[i] == 0)
      return 0;
    sum += widths[i];
    widest = widths[i] > widest ? widths[i] : widest;
  }
  return sum + 2 * widest;
}

uint64_t model_mlp_workspace_bytes(const uint32_t *widths, uint32_t nwidths,
                                    uint32_t max_batch) {
  uint64_t per = floats_per_row(widths, nwidths);
  if (per == 0 || max_batch == 0 ||
      per > UINT64_MAX / sizeof(float) / max_batch)
    return 0;
  return per * max_batch * sizeof(float);
}

/* Points act[] and dy[] into the slab. */
static void carve(mlp *m) {
  float *p = m->slab;
  uint32_t widest = 0;
  for (uint32_t l = 0; l < m->layers; l++) {
    m->act[l] = p;
    p += (size_t)m->max_batch * m->w[l + 1];
    widest = m->w[l + 1] > widest ? m->w[l + 1] : widest;
  }
  m->dy[0] = p;
  m->dy[1] = p + (size_t)m->max_batch * widest;
}

mlp *model_mlp_create(const uint32_t *widths, uint32_t nwidths,
                       uint32_t max_batch) {
  uint64_t bytes = model_mlp_workspace_bytes(widths, nwidths, max_batch);
  if (bytes == 0 || bytes > SIZE_MAX)
    return NULL;
  mlp *m = calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  m->layers = nwidths - 1;
  m->max_batch = max_batch;
  m->w = malloc(nwidths * sizeof *m->w);
  m->act = malloc(m->layers * sizeof *m->act);
  m->slab = malloc((size_t)bytes);
  if (m->w == NULL || m->act == NULL || m->slab == NULL) {
    model_mlp_destroy(m);
    return NULL;
  }
  memcpy(m->w, widths, nwidths * sizeof *m->w);
  /* Touch every page now: first-touch faults are slow on these machines and
   * must not land in the first training steps. */
  memset(m->slab, 0, (size_t)bytes);
  carve(m);
  return m;
}

void model_mlp_destroy(mlp *m) {
  if (m == NULL)
    return;
  free(m->slab);
  free(m->act);
  free(m->w);
  free(m);
}

uint32_t model_mlp_num_layers(const mlp *m) {
  return m->layers;
}

uint32_t model_mlp_width(const mlp *m, uint32_t i) {
  assert(i <= m->layers);
  return m->w[i];
}

uint64_t model_mlp_layer_size(const mlp *m, uint32_t l) {
  assert(l < m->layers);
  uint64_t in = m->w[l], out = m->w[l + 1];
  return out * in + out;
}

const float *model_mlp_output(const mlp *m) {
  return m->act[m->layers - 1];
}

/* ---- Forward ------------------------------------------------------------ */

static void relu(float *y, size_t n) {
  for (size_t i = 0; i < n; i++)
    y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

void model_mlp_forward_layer(mlp *m, uint32_t l, const float *params,
                              const float *x_in, uint32_t b) {
  assert(l < m->layers && b >= 1 && b <= m->max_batch);
  if (l == 0) {
    m->x0 = x_in;
    m->batch = b;
  }
  assert(b == m->batch);
  const int in = (int)m->w[l], out = (int)m->w[l + 1];
  const float *x = l == 0 ? m->x0 : m->act[l - 1];
  const float *bias = params + (size_t)out * in;
  float *y = m->act[l];
  for (uint32_t i = 0; i < b; i++) /* Y = bias, then Y += X * W^T */
    memcpy(y + (size_t)i * out, bias, (size_t)out * sizeof *y);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, out, in, 1.0f, x,
              in, params, in, 1.0f, y, out);
  if (l + 1 < m->layers)
    relu(y, (size_t)b * out);
}

/* ---- Loss --------------------------------------------------------------- */

/* Softmax cross-entropy of one row of c logits z with label y: writes
 * (softmax - onehot) * scale into g, returns the loss, sets *argmax. */
static double row_loss(const float *z, uint32_t c, uint32_t y, float scale,
                       float *g, uint32_t *argmax) {
  uint32_t best = 0;
  for (uint32_t j = 1; j < c; j++)
    best = z[j] > z[best] ? j : best;
  const float max = z[best];
  double sum = 0.0;
  for (uint32_t j = 0; j < c; j++)
    sum += (g[j] = expf(z[j] - max));
  const float inv = (float)(1.0 / sum) * scale;
  for (uint32_t j = 0; j < c; j++)
    g[j] *= inv;
  g[y] -= scale;
  *argmax = best;
  return log(sum) - (double)(z[y] - max);
}

float model_mlp_loss(mlp *m, const uint8_t *labels, uint32_t b,
                      uint32_t *correct) {
  assert(b == m->batch);
  const uint32_t c = m->w[m->layers];
  const float *z = m->act[m->layers - 1];
  float *g = m->dy[(m->layers - 1) & 1];
  const float scale = 1.0f / (float)b;
  double total = 0.0;
  uint32_t hits = 0, argmax;
  for (uint32_t i = 0; i < b; i++) {
    if (labels[i] >= c) { /* documented as the caller's bug: poison, no UB */
      memset(g + (size_t)i * c, 0, c * sizeof *g);
      total = NAN;
      continue;
    }
    total += row_loss(z + (size_t)i * c, c, labels[i], scale, g + (size_t)i * c,
                      &argmax);
    hits += argmax == labels[i];
  }
  if (correct != NULL)
    *correct = hits;
  return (float)(total / b);
}

/* ---- Backward ----------------------------------------------------------- */

/* db[j] = sum over rows of dy[i][j]. */
static void column_sums(const float *dy, uint32_t b, uint32_t out, float *db) {
  memset(db, 0, out * sizeof *db);
  for (uint32_t i = 0; i < b; i++) {
    const float *row = dy + (size_t)i * out;
    for (uint32_t j = 0; j < out; j++)
      db[j] += row[j];
  }
}

/* Zeroes g where the ReLU output a was not positive. */
static void relu_mask(float *g, const float *a, size_t n) {
  for (size_t i = 0; i < n; i++)
    g[i] = a[i] > 0.0f ? g[i] : 0.0f;
}

/* backward_grad writes layer l's gradient: dW = dY^T * X, db = column
 * sums of dY. Reads activations only, never the parameters. */
static void backward_grad(mlp *m, uint32_t l, float *grad, uint32_t b) {
  const int in = (int)m->w[l], out = (int)m->w[l + 1];
  const float *x = l == 0 ? m->x0 : m->act[l - 1];
  const float *dy = m->dy[l & 1];
  /* dW [out][in] = dY^T [out][b] * X [b][in] */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, (int)b, 1.0f,
              dy, out, x, in, 0.0f, grad, in);
  column_sums(dy, b, (uint32_t)out, grad + (size_t)out * in);
}

/* backward_input stores the gradient of layer l-1's output (l > 0):
 * dX = dY * W through layer l-1's ReLU. The last read of the parameters. */
static void backward_input(mlp *m, uint32_t l, const float *params,
                           uint32_t b) {
  const int in = (int)m->w[l], out = (int)m->w[l + 1];
  /* dX [b][in] = dY [b][out] * W [out][in], through layer l-1's ReLU. */
  float *dx = m->dy[(l - 1) & 1];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, in, out, 1.0f,
              m->dy[l & 1], out, params, in, 0.0f, dx, in);
  relu_mask(dx, m->act[l - 1], (size_t)b * in);
}

void model_mlp_backward_layer(mlp *m, uint32_t l, const float *params,
                               float *grad, uint32_t b) {
  assert(l < m->layers && b == m->batch);
  backward_grad(m, l, grad, b);
  if (l > 0)
    backward_input(m, l, params, b);
}

void model_mlp_backward_layer_inplace(mlp *m, uint32_t l, float *params_grad,
                                       uint32_t b) {
  assert(l < m->layers && b == m->batch);
  /* The same two products as model_mlp_backward_layer, in the other order:
   * neither reads what the other writes, so the results are the same. */
  if (l > 0)
    backward_input(m, l, params_grad, b);
  backward_grad(m, l, params_grad, b);
}

/* ---- Layers in pieces --------------------------------------------------- */

void model_mlp_forward_rows(mlp *m, uint32_t l, uint32_t r0, uint32_t r1,
                             const float *w_rows, const float *x_in,
                             uint32_t b) {
  assert(l < m->layers && r0 < r1 && r1 <= m->w[l + 1]);
  assert(b >= 1 && b <= m->max_batch);
  if (l == 0 && r0 == 0) {
    m->x0 = x_in;
    m->batch = b;
  }
  assert(b == m->batch);
  const int in = (int)m->w[l], out = (int)m->w[l + 1];
  const float *x = l == 0 ? m->x0 : m->act[l - 1];
  /* Y[:, r0:r1] [b][r1-r0] (row stride out) = X [b][in] * W_rows^T */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)(r1 - r0),
              in, 1.0f, x, in, w_rows, in, 0.0f, m->act[l] + r0, out);
}

void model_mlp_forward_bias(mlp *m, uint32_t l, const float *bias,
                             uint32_t b) {
  assert(l < m->layers && b == m->batch);
  const uint32_t out = m->w[l + 1];
  float *y = m->act[l];
  for (uint32_t i = 0; i < b; i++)
    for (uint32_t j = 0; j < out; j++)
      y[(size_t)i * out + j] += bias[j];
  if (l + 1 < m->layers)
    relu(y, (size_t)b * out);
}

void model_mlp_backward_bias(mlp *m, uint32_t l, float *db, uint32_t b) {
  assert(l < m->layers && b == m->batch);
  column_sums(m->dy[l & 1], b, m->w[l + 1], db);
}

void model_mlp_backward_rows(mlp *m, uint32_t l, uint32_t r0, uint32_t r1,
                              const float *w_rows, float *g_rows, uint32_t b) {
  assert(l < m->layers && r0 < r1 && r1 <= m->w[l + 1] && b == m->batch);
  const int in = (int)m->w[l], out = (int)m->w[l + 1], k = (int)(r1 - r0);
  const float *dy = m->dy[l & 1] + r0, *x = l == 0 ? m->x0 : m->act[l - 1];
  if (l > 0) { /* dX [b][in] (+)= dY[:, r0:r1] * W_rows: reads W first */
    float *dx = m->dy[(l - 1) & 1];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, in, k, 1.0f,
                dy, out, w_rows, in, r1 == (uint32_t)out ? 0.0f : 1.0f, dx, in);
    if (r0 == 0)
      relu_mask(dx, m->act[l - 1], (size_t)b * in);
  }
  /* dW_rows [k][in] = dY[:, r0:r1]^T * X */
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, in, (int)b, 1.0f, dy,
              out, x, in, 0.0f, g_rows, in);
}

float model_mlp_eval_batch(mlp *m, const float *const *params, const float *x,
                            const uint8_t *y, uint32_t b, uint32_t *correct) {
  for (uint32_t l = 0; l < m->layers; l++)
    model_mlp_forward_layer(m, l, params[l], x, b);
  return model_mlp_loss(m, y, b, correct);
}
