/* mlp_spec.c: a model spec checked against what fsps-serve computes (the
 * MLP family fsps-worker trains) and its widths read off it. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mlp.h"
#include "mlp_spec.h"
#include "snapshot.h"

#define COMPUTES                                                               \
  "fsps-serve computes MLPs made of weight [out,in] + bias [out] layers"

/* describe writes "a [d0,d1], b [d0]" for layer L's tensors. */
static void describe(const shard_layer *L, char *out, size_t len) {
  size_t w = 0;
  out[0] = '\0';
  for (uint32_t t = 0; t < L->ntensors && w + 1 < len; t++) {
    const shard_tensor *T = &L->tensors[t];
    w += (size_t)snprintf(out + w, len - w, "%s%s [", t ? ", " : "", T->name);
    for (uint32_t d = 0; d < T->ndims && w + 1 < len; d++)
      w += (size_t)snprintf(out + w, len - w, "%s%" PRIu64, d ? "," : "",
                            T->dims[d]);
    if (w + 1 < len)
      w += (size_t)snprintf(out + w, len - w, "]");
  }
}

/* is_linear says whether layer L is weight [out,in] then bias [out]. */
static bool is_linear(const shard_layer *L) {
  if (L->ntensors != 2)
    return false;
  const shard_tensor *w = &L->tensors[0], *b = &L->tensors[1];
  return strcmp(w->name, "weight") == 0 && strcmp(b->name, "bias") == 0 &&
         w->ndims == 2 && b->ndims == 1 && w->dims[0] == b->dims[0] &&
         w->dims[0] >= 1 && w->dims[1] >= 1 && w->dims[0] <= MLP_MAX_WIDTH &&
         w->dims[1] <= MLP_MAX_WIDTH;
}

static int refuse_layer(const shard_layer *L, char *msg, size_t msglen) {
  char t[512];
  describe(L, t, sizeof t);
  snprintf(msg, msglen, "cannot serve: layer '%s' has tensors %s; " COMPUTES,
           L->name, L->ntensors ? t : "(none)");
  return FSPS_UNIMPLEMENTED;
}

int serve_mlp_widths(const shard_spec *spec, uint32_t *widths,
                     uint32_t *nwidths, char *msg, size_t msglen) {
  uint32_t L = shard_spec_num_layers(spec);
  if (L == 0 || L + 1 > SERVE_MAX_WIDTHS) {
    snprintf(msg, msglen, "cannot serve: the model has %" PRIu32
             " layers (1..%u served); " COMPUTES, L, SERVE_MAX_WIDTHS - 1);
    return FSPS_UNIMPLEMENTED;
  }
  for (uint32_t l = 0; l < L; l++) {
    const shard_layer *ly = shard_spec_layer(spec, l);
    if (!is_linear(ly))
      return refuse_layer(ly, msg, msglen);
    uint32_t in = (uint32_t)ly->tensors[0].dims[1];
    if (l > 0 && in != widths[l]) {
      snprintf(msg, msglen,
               "cannot serve: layer '%s' takes %" PRIu32 " inputs but layer "
               "'%s' before it gives %" PRIu32 "; " COMPUTES,
               ly->name, in, shard_spec_layer(spec, l - 1)->name, widths[l]);
      return FSPS_UNIMPLEMENTED;
    }
    widths[l] = in;
    widths[l + 1] = (uint32_t)ly->tensors[0].dims[0];
  }
  *nwidths = L + 1;
  return FSPS_OK;
}
