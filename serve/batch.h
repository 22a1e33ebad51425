/* batch.h: fsps-serve's batch scoring — an IDX image file or raw float32
 * rows in, predictions (class and probabilities) out as CSV or JSON lines,
 * streamed in chunks of max_batch rows through the slot's current snapshot,
 * in memory bounded by one chunk. */
#ifndef FSPS_SERVE_BATCH_H
#define FSPS_SERVE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

typedef struct {
  const char *input, *output;
  const char *labels;        /* IDX labels for an accuracy line, or NULL */
  const char *input_format;  /* "idx", "f32", or NULL: by extension/content */
  const char *output_format; /* "csv", "jsonl", or NULL: by extension */
  uint32_t max_batch;        /* rows per chunk (64) */
  bool normalize;            /* fsps-worker's --normalize, for IDX input */
  double progress_secs;      /* between progress lines on stderr (0: none) */
  const char *tool;
} serve_batch_config;

typedef struct {
  uint64_t rows;
  uint64_t labelled, correct; /* with labels */
  uint64_t first_version, last_version;
} serve_batch_result;

/* serve_batch_run scores cfg->input with the slot's snapshot (re-acquired
 * for each chunk, so a live source's newer version takes over between
 * chunks; each output row names the version that computed it in JSON
 * lines). The output is written under a temporary name and renamed into
 * place only when every row is written: on any failure the output file is
 * not created (nor changed). IDX images are scaled as fsps-worker scales
 * them (pixel/255, then (x-0.286)/0.353 with normalize); f32 rows are taken
 * as they are, and a row holding NaN or an infinity refuses the whole file.
 * Returns FSPS_OK with *res, or an error with msg naming the file and what
 * is wrong. */
int serve_batch_run(const serve_batch_config *cfg, serve_slot *slot,
                    serve_batch_result *res, char *msg, size_t msglen);

/* ---- the input reader (batch_input.c) ---- */

typedef struct batch_input batch_input;

/* batch_input_open opens path as `format` ("idx", "f32", NULL: guess) for
 * rows of `width` floats: FSPS_OK with *out, or an error with msg (missing
 * file, bad header, wrong width). *rows gets the row count, or UINT64_MAX
 * when unknown (a compressed f32 file). */
int batch_input_open(const char *path, const char *format, uint32_t width,
                     bool normalize, batch_input **out, uint64_t *rows,
                     char *msg, size_t msglen);

/* batch_input_read reads up to max rows into x ([max][width]); *got gets
 * how many (0 at the end). FSPS_OK, or an error with msg (truncated, not
 * finite). */
int batch_input_read(batch_input *in, float *x, uint32_t max, uint32_t *got,
                     char *msg, size_t msglen);

void batch_input_close(batch_input *in);

/* batch_labels_open opens an IDX label file that must hold `rows` labels;
 * batch_labels_read reads the next n into y. */
int batch_labels_open(const char *path, uint64_t rows, batch_input **out,
                      char *msg, size_t msglen);
int batch_labels_read(batch_input *in, uint8_t *y, uint32_t n, char *msg,
                      size_t msglen);

#endif
