/* safetensors.h: a served model written as safetensors, the file format
 * PyTorch and Hugging Face load, under the names and shapes PyTorch gives
 * nn.Sequential(Linear, ReLU, Linear, ..., Linear): "0.weight" [out,in],
 * "0.bias" [out], "2.weight", ... */
#ifndef FSPS_SERVE_SAFETENSORS_H
#define FSPS_SERVE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

/* serve_safetensors_header writes s's JSON header (tensors in layer order,
 * dtype "F32", their data_offsets back to back, and __metadata__ with
 * "format":"pt", fsps_version, model_version and widths "784,128,10"),
 * padded with spaces to a multiple of 8 bytes, into a malloc'd string
 * (*len bytes, NUL-terminated). NULL when out of memory. */
char *serve_safetensors_header(const serve_snapshot *s, const char *fsps_version,
                               size_t *len);

/* serve_safetensors_write writes s to path: the header's length (u64
 * little-endian), the header, then every layer's floats (weight row-major,
 * then bias), under a temporary name renamed into place once complete.
 * FSPS_OK, or FSPS_IO / FSPS_NOMEM with msg; on failure path is not
 * created. */
int serve_safetensors_write(const char *path, const serve_snapshot *s,
                            const char *fsps_version, char *msg,
                            size_t msglen);

#endif
