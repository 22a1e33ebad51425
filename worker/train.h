/* train.h: the trainer state shared by fsps-worker's main and its
 * training loop. */
#ifndef FSPS_WORKER_TRAIN_H
#define FSPS_WORKER_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include <fsps/fsps.h>

#include "data.h"
#include "logging.h"
#include "mlp.h"
#include "opts.h"
#include "wmetrics.h"

typedef struct {
  const worker_opts *opts;
  fsps_client *client;
  mlp *net;
  uint32_t layers;
  data_set train, test;
  data_sampler sampler;
  float *x;           /* one batch of inputs */
  uint8_t *y;         /* its labels */
  uint32_t *eval_idx; /* indices of one evaluation batch */
  float **params;     /* full model, only for evaluation and --dump */
  float *local_grad;  /* --local: where gradients go */
  float *piece_buf;   /* --piece-mb: one piece, for evaluation and --dump */
  FILE *jsonl;        /* --log-jsonl, or NULL */
  double start, last_report, elapsed;
  double warm_end;       /* when the first step ended (buffers faulted in) */
  uint64_t warm_samples; /* samples by then */
  uint64_t warm_steps;   /* steps by then */
  /* this process's CPU seconds (user, system) and context switches
   * (voluntary, involuntary) when the first step ended and at the end */
  double warm_cpu[4], end_cpu[4];
  uint64_t samples, total_steps, steps_done;
  uint32_t epochs_done;
  bool evaluated;
  double loss_sum, last_loss, final_loss, accuracy;
  uint64_t loss_n;
  worker_metrics *metrics; /* NULL without --metrics-listen */
} trainer;

/* train_spec builds the fsps model spec of an MLP with widths w: layer l
 * is "fc<l+1>" with "weight" [out, in] (he_uniform) and "bias" [out]
 * (uniform +-1/sqrt(in)), as PyTorch's nn.Linear. steps is the run's
 * length (a cosine schedule's t_max). NULL with err. */
fsps_spec *train_spec(const uint32_t *w, uint32_t nw, const worker_opts *o,
                      uint64_t steps, char *err, size_t errlen);

/* train_total_steps returns the run's step count (epochs or --max-steps). */
uint64_t train_total_steps(const trainer *t);

/* train_set_pieces cuts, for --piece-mb, every layer above that size
 * into row blocks and its bias (fsps_set_pieces). Returns an fsps_err. */
int train_set_pieces(trainer *t);

/* train_run runs every epoch (or --max-steps), evaluating on rank 0 at
 * each epoch's end. Returns an fsps_err. */
int train_run(trainer *t);

/* train_evaluate gathers the model at version and returns test accuracy. */
int train_evaluate(trainer *t, uint64_t version, double *accuracy);

/* train_summary prints the final one-line JSON summary on stdout. */
void train_summary(const trainer *t);

/* train_dump gathers the final parameters and writes them, layer after
 * layer (a piece at a time under --piece-mb), as raw float32 to path,
 * through a temporary file renamed when complete. */
int train_dump(trainer *t, const char *path);

/* train_alloc_params allocates t->params (the whole model) once. */
int train_alloc_params(trainer *t);

/* train_peak_rss returns the process's peak resident set in bytes. */
uint64_t train_peak_rss(void);

#endif
