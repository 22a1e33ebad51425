/* mlp_spec.h: which model specs fsps-serve can compute — the MLPs
 * fsps-worker trains, each layer a weight [out,in] then a bias [out] — and
 * their widths. */
#ifndef FSPS_SERVE_MLP_SPEC_H
#define FSPS_SERVE_MLP_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "shard.h"

/* serve_mlp_widths reads spec's widths (input, hidden..., classes) into
 * widths[0..*nwidths) (room for SERVE_MAX_WIDTHS). FSPS_OK, or
 * FSPS_UNIMPLEMENTED with msg ("cannot serve: layer 'x' has tensors ...")
 * when the spec is not an MLP fsps-serve computes. Thread-safe. */
int serve_mlp_widths(const shard_spec *spec, uint32_t *widths,
                     uint32_t *nwidths, char *msg, size_t msglen);

#endif
