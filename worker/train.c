/* train.c: fsps-worker's training loop — data-parallel steps through the
 * libfsps step scheduler, test-set evaluation, progress lines and the final
 * JSON summary. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "train.h"

#define MAX_WIDTHS 64

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t train_peak_rss(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)ru.ru_maxrss * 1024;
}

/* ---- model spec ---- */

static int set_optimizer(fsps_spec *spec, const worker_opts *o,
                         uint64_t steps) {
  int rc = fsps_spec_set_optimizer(spec, o->optimizer, o->lr);
  if (rc == FSPS_OK && strcmp(o->schedule, "cosine") == 0) {
    rc = fsps_spec_set_schedule(spec, "cosine");
    if (rc == FSPS_OK)
      rc = fsps_spec_set_param(spec, "t_max", (double)steps);
  }
  if (rc == FSPS_OK && o->weight_decay > 0)
    rc = fsps_spec_set_param(spec, "weight_decay", o->weight_decay);
  if (rc == FSPS_OK && o->momentum > 0)
    rc = fsps_spec_set_param(spec, "momentum", o->momentum);
  return rc;
}

fsps_spec *train_spec(const uint32_t *w, uint32_t nw, const worker_opts *o,
                      uint64_t steps, char *err, size_t errlen) {
  fsps_spec *spec = fsps_spec_create(o->seed);
  int rc = spec ? FSPS_OK : FSPS_NOMEM;
  for (uint32_t l = 0; rc == FSPS_OK && l + 1 < nw; l++) {
    char name[32];
    uint64_t wd[2] = {w[l + 1], w[l]}, bd[1] = {w[l + 1]};
    double bound = 1.0 / sqrt((double)w[l]); /* nn.Linear's bias init */
    snprintf(name, sizeof name, "fc%u", l + 1);
    rc = fsps_spec_add_layer(spec, name);
    if (rc == FSPS_OK)
      rc = fsps_spec_add_tensor(spec, "weight", 2, wd, "he_uniform", 0, 0);
    if (rc == FSPS_OK)
      rc = fsps_spec_add_tensor(spec, "bias", 1, bd, "uniform", -bound, bound);
  }
  if (rc == FSPS_OK)
    rc = set_optimizer(spec, o, steps);
  if (rc == FSPS_OK)
    rc = fsps_spec_set_wire_dtype(spec, o->wire_dtype);
  if (rc == FSPS_OK)
    rc = fsps_spec_validate(spec, err, errlen);
  else
    snprintf(err, errlen,
             "cannot build the model spec: %s (check "
             "--optimizer and --lr)",
             fsps_strerror(rc));
  if (rc != FSPS_OK) {
    fsps_spec_destroy(spec);
    return NULL;
  }
  return spec;
}

/* ---- layers in pieces ---- */

/* piece_rows returns the weight rows per piece of layer l under
 * --piece-mb, or 0 when the layer goes whole. Pieces: row blocks of that
 * many rows, the last (perhaps shorter) with the bias, which follows the
 * weight in the layer's vector. */
static uint32_t piece_rows(const trainer *t, uint32_t l) {
  double cap = t->opts->piece_mb * 1048576.0 / sizeof(float);
  uint32_t in = model_mlp_width(t->net, l),
           out = model_mlp_width(t->net, l + 1);
  if (cap <= 0 || (double)model_mlp_layer_size(t->net, l) <= cap)
    return 0;
  double r = floor(cap / in);
  return r < 1 ? 1 : r >= out ? out : (uint32_t)r;
}

static uint32_t num_pieces(const trainer *t, uint32_t l) {
  uint32_t r = piece_rows(t, l), out = model_mlp_width(t->net, l + 1);
  return r ? (out + r - 1) / r : 1;
}

/* piece_row0 returns piece p's first weight row; p = num_pieces gives the
 * row count. */
static uint32_t piece_row0(const trainer *t, uint32_t l, uint32_t p) {
  return p < num_pieces(t, l) ? p * piece_rows(t, l)
                              : model_mlp_width(t->net, l + 1);
}

/* piece_start returns where piece p of layer l starts (in elements). */
static uint64_t piece_start(const trainer *t, uint32_t l, uint32_t p) {
  return (uint64_t)piece_row0(t, l, p) * model_mlp_width(t->net, l);
}

/* piece_len returns piece p's length (the last one has the bias). */
static uint64_t piece_len(const trainer *t, uint32_t l, uint32_t p) {
  uint64_t end = p + 1 == num_pieces(t, l) ? model_mlp_layer_size(t->net, l)
                                           : piece_start(t, l, p + 1);
  return end - piece_start(t, l, p);
}

/* pieced says whether --piece-mb cuts some layer. */
static bool pieced(const trainer *t) {
  for (uint32_t l = 0; l < t->layers; l++)
    if (num_pieces(t, l) > 1)
      return true;
  return false;
}

/* piece_buffer allocates t->piece_buf once, for the longest piece (or
 * whole layer) under --piece-mb. */
static int piece_buffer(trainer *t) {
  uint64_t most = 0;
  for (uint32_t l = 0; l < t->layers; l++)
    for (uint32_t p = 0; p < num_pieces(t, l); p++)
      most = piece_len(t, l, p) > most ? piece_len(t, l, p) : most;
  if (t->piece_buf == NULL)
    t->piece_buf = malloc(most * sizeof(float));
  return t->piece_buf ? FSPS_OK : FSPS_NOMEM;
}

int train_set_pieces(trainer *t) {
  for (uint32_t l = 0; l < t->layers; l++) {
    uint32_t np = num_pieces(t, l);
    if (np == 1)
      continue;
    uint64_t *b = malloc((np + 1) * sizeof *b);
    if (b == NULL)
      return FSPS_NOMEM;
    for (uint32_t p = 0; p < np; p++)
      b[p] = piece_start(t, l, p);
    b[np] = model_mlp_layer_size(t->net, l);
    int rc = fsps_set_pieces(t->client, l, np, b);
    free(b);
    if (rc != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

/* forward_pieces runs layer l's forward a piece at a time. */
static int forward_pieces(trainer *t, uint32_t l, const float *x) {
  bool local = t->opts->local;
  uint32_t np = num_pieces(t, l), b = t->opts->batch;
  for (uint32_t p = 0; p < np; p++) {
    uint32_t r0 = piece_row0(t, l, p), r1 = piece_row0(t, l, p + 1);
    const float *w = local ? t->params[l] + piece_start(t, l, p) : NULL;
    int rc = local ? FSPS_OK : fsps_forward_piece(t->client, l, p, &w);
    if (rc != FSPS_OK)
      return rc;
    model_mlp_forward_rows(t->net, l, r0, r1, w, x, b);
    if (p + 1 == np) /* the bias follows the last rows */
      model_mlp_forward_bias(
          t->net, l, w + (size_t)(r1 - r0) * model_mlp_width(t->net, l), b);
    if (!local && (rc = fsps_forward_piece_done(t->client, l, p)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

/* backward_pieces runs layer l's backward a piece at a time, last piece
 * first; through the servers each piece's gradient is written over its
 * parameters. */
static int backward_pieces(trainer *t, uint32_t l) {
  bool local = t->opts->local;
  uint32_t np = num_pieces(t, l), b = t->opts->batch;
  for (uint32_t p = np; p-- > 0;) {
    uint32_t r0 = piece_row0(t, l, p), r1 = piece_row0(t, l, p + 1);
    uint64_t at = piece_start(t, l, p);
    float *w = local ? t->params[l] + at : NULL;
    float *g = local ? t->local_grad + at : NULL;
    int rc = local ? FSPS_OK : fsps_backward_piece(t->client, l, p, &w);
    if (rc != FSPS_OK)
      return rc;
    g = local ? g : w;
    if (p + 1 == np) /* reads no parameters */
      model_mlp_backward_bias(
          t->net, l, g + (size_t)(r1 - r0) * model_mlp_width(t->net, l), b);
    model_mlp_backward_rows(t->net, l, r0, r1, w, g, b);
    if (!local && (rc = fsps_backward_piece_done(t->client, l, p)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

/* ---- one step ---- */

/* With --local the parameters are a local copy and gradients go nowhere:
 * the same compute with no network, the limit bench/train compares to. */
static int forward(trainer *t, const float *x) {
  bool local = t->opts->local;
  for (uint32_t l = 0; l < t->layers; l++) {
    if (num_pieces(t, l) > 1) {
      int rc = forward_pieces(t, l, x);
      if (rc != FSPS_OK)
        return rc;
      continue;
    }
    const float *w = local ? t->params[l] : NULL;
    int rc = local ? FSPS_OK : fsps_forward(t->client, l, &w);
    if (rc != FSPS_OK)
      return rc;
    model_mlp_forward_layer(t->net, l, w, x, t->opts->batch);
    if (!local && (rc = fsps_forward_done(t->client, l)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

/* Through the servers each gradient is written over its layer's
 * parameters, which are not needed after it: one buffer per layer. */
static int backward(trainer *t) {
  bool local = t->opts->local;
  for (uint32_t l = t->layers; l-- > 0;) {
    if (num_pieces(t, l) > 1) {
      int rc = backward_pieces(t, l);
      if (rc != FSPS_OK)
        return rc;
      continue;
    }
    if (local) {
      model_mlp_backward_layer(t->net, l, t->params[l], t->local_grad,
                                t->opts->batch);
      continue;
    }
    float *wg;
    int rc = fsps_backward_inplace(t->client, l, &wg);
    if (rc != FSPS_OK)
      return rc;
    model_mlp_backward_layer_inplace(t->net, l, wg, t->opts->batch);
    if ((rc = fsps_backward_done(t->client, l)) != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

static int step(trainer *t, uint64_t gstep, const uint32_t *idx) {
  uint32_t b = t->opts->batch, correct;
  worker_data_gather(&t->train, idx, b, t->x, t->y);
  int rc = t->opts->local ? FSPS_OK : fsps_step_begin(t->client, gstep);
  if (rc == FSPS_OK)
    rc = forward(t, t->x);
  if (rc != FSPS_OK)
    return rc;
  t->last_loss = model_mlp_loss(t->net, t->y, b, &correct);
  t->loss_sum += t->last_loss;
  t->loss_n++;
  rc = backward(t);
  if (rc == FSPS_OK && !t->opts->local)
    rc = fsps_step_end(t->client);
  t->samples += b;
  return rc;
}

/* ---- evaluation ---- */

/* gather_all gathers every layer at min_version into t->params. */
static int gather_all(trainer *t, uint64_t min_version) {
  for (uint32_t l = 0; l < t->layers; l++) {
    int rc = fsps_gather(t->client, l, min_version, t->params[l], NULL);
    if (rc != FSPS_OK)
      return rc;
  }
  return FSPS_OK;
}

int train_alloc_params(trainer *t) {
  if (t->params != NULL)
    return FSPS_OK;
  t->params = calloc(t->layers, sizeof *t->params);
  if (t->params == NULL)
    return FSPS_NOMEM;
  for (uint32_t l = 0; l < t->layers; l++)
    if ((t->params[l] = malloc(model_mlp_layer_size(t->net, l) * 4)) == NULL)
      return FSPS_NOMEM;
  return FSPS_OK;
}

/* eval_layer_pieces runs layer l's forward on one test batch, each piece
 * gathered at version into t->piece_buf just before its share of the
 * layer is computed, so that evaluation too holds one piece at a time. */
static int eval_layer_pieces(trainer *t, uint32_t l, uint64_t version,
                             uint32_t b) {
  uint32_t np = num_pieces(t, l);
  float *w = t->piece_buf;
  for (uint32_t p = 0; p < np; p++) {
    int rc = fsps_gather_range(t->client, l, version, piece_start(t, l, p),
                               piece_len(t, l, p), w, NULL);
    if (rc != FSPS_OK)
      return rc;
    if (np == 1) {
      model_mlp_forward_layer(t->net, l, w, t->x, b);
      break;
    }
    uint32_t r0 = piece_row0(t, l, p), r1 = piece_row0(t, l, p + 1);
    model_mlp_forward_rows(t->net, l, r0, r1, w, t->x, b);
    if (p + 1 == np)
      model_mlp_forward_bias(
          t->net, l, w + (size_t)(r1 - r0) * model_mlp_width(t->net, l), b);
  }
  return FSPS_OK;
}

/* eval_forward runs one test batch through the model: layers whole from
 * t->params, or, under --piece-mb, a piece at a time. */
static int eval_forward(trainer *t, uint64_t version, uint32_t b) {
  for (uint32_t l = 0; l < t->layers; l++) {
    int rc = t->piece_buf ? eval_layer_pieces(t, l, version, b) : FSPS_OK;
    if (rc != FSPS_OK)
      return rc;
    if (t->piece_buf == NULL)
      model_mlp_forward_layer(t->net, l, t->params[l], t->x, b);
  }
  return FSPS_OK;
}

/* eval_params gets what evaluation reads: a piece buffer under
 * --piece-mb, else the whole model gathered at version. */
static int eval_params(trainer *t, uint64_t version) {
  if (pieced(t))
    return piece_buffer(t);
  int rc = train_alloc_params(t);
  return rc == FSPS_OK ? gather_all(t, version) : rc;
}

int train_evaluate(trainer *t, uint64_t version, double *accuracy) {
  int rc = eval_params(t, version);
  if (rc != FSPS_OK)
    return rc;
  uint32_t b = t->opts->batch;
  uint64_t correct = 0, seen = 0;
  for (uint32_t start = 0; start + b <= t->test.n; start += b) {
    for (uint32_t i = 0; i < b; i++)
      t->eval_idx[i] = start + i;
    worker_data_gather(&t->test, t->eval_idx, b, t->x, t->y);
    if ((rc = eval_forward(t, version, b)) != FSPS_OK)
      return rc;
    uint32_t c;
    model_mlp_loss(t->net, t->y, b, &c);
    correct += c;
    seen += b;
  }
  *accuracy = seen ? (double)correct / (double)seen : 0.0;
  return FSPS_OK;
}

/* ---- progress ---- */

static double wait_s(const trainer *t) {
  return t->client ? fsps_wait_seconds(t->client) : 0.0;
}

/* run_fields starts the fields a progress and an epoch line share: the
 * rank, epoch (1-based), global step, loss, this worker's samples/s and
 * the share of time it waited on the network, all since the start. */
static void run_fields(const trainer *t, logfmt_fields *f, uint32_t epoch,
                       uint64_t step, double loss) {
  double el = now_s() - t->start;
  logfmt_fields_init(f);
  logfmt_field_u64(f, "rank", t->opts->rank);
  logfmt_field_u64(f, "epoch", epoch + 1);
  logfmt_field_u64(f, "step", step);
  logfmt_field_num(f, "loss", loss, 6);
  logfmt_field_num(f, "samples_per_s", el > 0 ? t->samples / el : 0, 6);
  logfmt_field_num(f, "wait_fraction", el > 0 ? wait_s(t) / el : 0, 4);
  logfmt_field_num(f, "seconds", el, 6);
}

static void progress(trainer *t, uint32_t epoch, uint32_t k, uint32_t steps,
                     bool force) {
  double now = now_s();
  if (!force && now - t->last_report < t->opts->progress_secs)
    return;
  double el = now - t->start, rate = el > 0 ? (double)t->samples / el : 0;
  uint64_t done = (uint64_t)epoch * steps + k, total = t->total_steps;
  double eta = done ? el * (double)(total - done) / (double)done : 0;
  double loss = t->loss_n ? t->loss_sum / t->loss_n : 0.0;
  logfmt_fields f;
  run_fields(t, &f, epoch, done, loss);
  worker_jsonl_write(t->jsonl, "progress", &f);
  logfmt_field_num(&f, "eta_s", eta, 4);
  worker_log(WORKER_LOG_INFO, &f,
             "epoch %u/%u step %u/%u loss %.4f samples/s %.0f "
             "comm-wait %.0f%% eta %.0fs",
             epoch + 1, t->opts->epochs, k, steps, loss, rate,
             el > 0 ? 100 * wait_s(t) / el : 0.0, eta);
  t->last_report = now;
}

/* record_page records the step just done for the status page. */
static void record_page(trainer *t, uint64_t steps, uint32_t epoch, double el) {
  worker_now now = {.seconds = el,
                    .step = steps,
                    .total_steps = t->total_steps,
                    .samples = t->samples,
                    .epoch = epoch + 1,
                    .epochs = t->opts->epochs,
                    .loss = t->loss_n ? t->loss_sum / t->loss_n : t->last_loss,
                    .samples_per_s = el > 0 ? (double)t->samples / el : 0,
                    .wait_fraction = el > 0 ? wait_s(t) / el : 0};
  worker_history_record(t->metrics->history, &now, t->last_loss);
}

/* set_metrics publishes the trainer's figures after a step (on the
 * trainer thread: libfsps's counters are read only from here). */
static void set_metrics(trainer *t, uint64_t steps, uint32_t epoch) {
  worker_metrics *m = t->metrics;
  if (m == NULL)
    return;
  double el = now_s() - t->start;
  metrics_set(m->step, (double)steps);
  metrics_set(m->epoch, epoch + 1);
  metrics_set(m->samples, (double)t->samples);
  metrics_set(m->rate, el > 0 ? (double)t->samples / el : 0);
  metrics_set(m->loss, t->loss_n ? t->loss_sum / t->loss_n : t->last_loss);
  metrics_set(m->wait_seconds, wait_s(t));
  metrics_set(m->wait_fraction, el > 0 ? wait_s(t) / el : 0);
  /* After fsps_worker_step: the page never shows a step /metrics has not
   * (the status_page test compares them). */
  record_page(t, steps, epoch, el);
  if (t->client == NULL)
    return;
  uint64_t gathered, pushed;
  fsps_bytes_moved(t->client, &gathered, &pushed);
  metrics_set(m->gathered, (double)gathered);
  metrics_set(m->pushed, (double)pushed);
  metrics_set(m->peak_buffer, (double)fsps_peak_buffer_bytes(t->client));
}

/* evaluate_epoch evaluates on rank 0 and says so; true if it did. */
static bool evaluate_epoch(trainer *t, uint32_t epoch, uint64_t version) {
  if (t->opts->rank != 0 || !t->opts->eval || t->test.n == 0 || t->opts->local)
    return false;
  t->evaluated = train_evaluate(t, version, &t->accuracy) == FSPS_OK;
  logfmt_fields f;
  logfmt_fields_init(&f);
  logfmt_field_u64(&f, "epoch", epoch + 1);
  if (t->evaluated) {
    logfmt_field_num(&f, "test_accuracy", t->accuracy, 6);
    worker_log(WORKER_LOG_INFO, &f, "epoch %u test accuracy %.4f", epoch + 1,
               t->accuracy);
  } else
    worker_log(WORKER_LOG_ERROR, &f, "evaluation failed: %s",
               fsps_last_error(t->client));
  return t->evaluated;
}

static void epoch_end(trainer *t, uint32_t epoch, uint64_t step,
                      uint64_t version) {
  t->final_loss = t->loss_n ? t->loss_sum / t->loss_n : t->last_loss;
  t->loss_sum = 0;
  t->loss_n = 0;
  bool evaluated = evaluate_epoch(t, epoch, version);
  if (evaluated && t->metrics != NULL) {
    metrics_set(t->metrics->accuracy, t->accuracy);
    worker_history_accuracy(t->metrics->history, t->accuracy);
  }
  logfmt_fields f;
  run_fields(t, &f, epoch, step, t->final_loss);
  if (evaluated)
    logfmt_field_num(&f, "test_accuracy", t->accuracy, 6);
  else
    logfmt_field_str(&f, "test_accuracy", NULL);
  worker_jsonl_write(t->jsonl, "epoch", &f);
}

/* ---- the loop ---- */

static uint64_t min_version_after(const trainer *t, uint64_t steps_done) {
  return strcmp(t->opts->mode, "bsp") == 0 ? steps_done : 0;
}

uint64_t train_total_steps(const trainer *t) {
  uint64_t total =
      (uint64_t)worker_data_sampler_steps(&t->sampler) * t->opts->epochs;
  if (t->opts->max_steps && t->opts->max_steps < total)
    total = t->opts->max_steps;
  return total;
}

/* A failed step is worth fsps_recover when a server went away, restarted
 * or rolled back; at most this many times in a row without a step done. */
#define MAX_RECOVERIES 5

static bool recoverable(int rc) {
  return rc == FSPS_UNAVAILABLE || rc == FSPS_FAILED_PRECONDITION ||
         rc == FSPS_DEADLINE_EXCEEDED;
}

/* recover finds the step to go on from after step g failed. */
static int recover(trainer *t, uint64_t g, uint64_t *next) {
  logfmt_fields f;
  logfmt_fields_init(&f);
  logfmt_field_u64(&f, "step", g);
  logfmt_field_str(&f, "error", fsps_last_error(t->client));
  worker_log(WORKER_LOG_WARN, &f, "step %" PRIu64 " failed: %s; recovering", g,
             fsps_last_error(t->client));
  metrics_add(t->metrics ? t->metrics->failures : NULL, 1);
  int rc = fsps_recover(t->client, next);
  logfmt_fields_init(&f);
  logfmt_field_u64(&f, "step", *next);
  if (rc == FSPS_OK) {
    metrics_add(t->metrics ? t->metrics->recoveries : NULL, 1);
    worker_log(WORKER_LOG_INFO, &f, "going on from step %" PRIu64, *next);
  }
  return rc;
}

/* first_step is where this worker starts: the step the cluster is at, so
 * that a restarted worker rejoins the others (0 on a fresh cluster). */
static int first_step(trainer *t, uint64_t *g) {
  *g = 0;
  if (t->opts->local)
    return FSPS_OK;
  int rc = fsps_recover(t->client, g);
  if (rc == FSPS_OK && *g > 0)
    worker_log(WORKER_LOG_INFO, NULL, "joining the cluster at step %" PRIu64,
               *g);
  return rc;
}

int train_run(trainer *t) {
  uint32_t steps = worker_data_sampler_steps(&t->sampler), epoch = UINT32_MAX;
  uint32_t tries = 0;
  t->total_steps = train_total_steps(t);
  t->start = t->last_report = now_s();
  uint64_t g;
  int rc = first_step(t, &g);
  while (rc == FSPS_OK && g < t->total_steps) {
    uint32_t e = (uint32_t)(g / steps), k = (uint32_t)(g % steps);
    if (e != epoch)
      worker_data_sampler_epoch(&t->sampler, epoch = e);
    rc = step(t, g, worker_data_sampler_batch(&t->sampler, k));
    if (rc != FSPS_OK) {
      if (t->opts->local || !recoverable(rc) || ++tries > MAX_RECOVERIES)
        return rc;
      rc = recover(t, g, &g);
      continue;
    }
    tries = 0;
    g++;
    if (t->warm_end == 0) { /* the first step this process made */
      t->warm_end = now_s();
      t->warm_samples = t->samples;
    }
    bool last = k + 1 == steps || g == t->total_steps;
    set_metrics(t, g, e);
    progress(t, e, k + 1, steps, last);
    if (last) {
      epoch_end(t, e, g, min_version_after(t, g));
      t->epochs_done = e + 1;
    }
  }
  t->elapsed = now_s() - t->start;
  t->steps_done = g;
  return rc;
}

/* steady_rate returns samples/s after the first step, which also pays
 * for faulting in every buffer (the whole run's rate if it had one step). */
static double steady_rate(const trainer *t) {
  double el = t->start + t->elapsed - t->warm_end;
  if (t->steps_done < 2 || el <= 0)
    return (double)t->samples / (t->elapsed > 0 ? t->elapsed : 1e-9);
  return (double)(t->samples - t->warm_samples) / el;
}

void train_summary(const trainer *t) {
  double el = t->elapsed > 0 ? t->elapsed : 1e-9;
  uint64_t gathered, pushed;
  fsps_bytes_moved(t->client, &gathered, &pushed);
  char acc[32] = "null"; /* only rank 0 evaluates */
  if (t->evaluated)
    snprintf(acc, sizeof acc, "%.4f", t->accuracy);
  printf("{\"event\":\"done\",\"rank\":%u,\"epochs\":%u,\"steps\":%" PRIu64
         ",\"test_accuracy\":%s,\"final_loss\":%.5f,\"samples_per_s\":%.1f,"
         "\"steady_samples_per_s\":%.1f,\"first_step_seconds\":%.3f,"
         "\"comm_wait_fraction\":%.4f,\"peak_rss_bytes\":%" PRIu64
         ",\"peak_buffer_bytes\":%" PRIu64 ",\"gathered_bytes\":%" PRIu64
         ",\"pushed_bytes\":%" PRIu64 ",\"seconds\":%.2f,"
         "\"wire_dtype\":\"%s\"}\n",
         t->opts->rank, t->epochs_done, t->steps_done, acc, t->final_loss,
         (double)t->samples / el, steady_rate(t), t->warm_end - t->start,
         wait_s(t) / el, train_peak_rss(),
         t->client ? fsps_peak_buffer_bytes(t->client) : 0, gathered, pushed,
         t->elapsed, t->opts->wire_dtype);
  fflush(stdout);
}

/* dump_pieces writes the model at version piece by piece (--piece-mb). */
static int dump_pieces(trainer *t, uint64_t version, FILE *f) {
  int rc = piece_buffer(t);
  for (uint32_t l = 0; rc == FSPS_OK && l < t->layers; l++)
    for (uint32_t p = 0; rc == FSPS_OK && p < num_pieces(t, l); p++) {
      uint64_t n = piece_len(t, l, p);
      rc = fsps_gather_range(t->client, l, version, piece_start(t, l, p), n,
                             t->piece_buf, NULL);
      if (rc == FSPS_OK && fwrite(t->piece_buf, sizeof(float), n, f) != n)
        rc = FSPS_IO;
    }
  return rc;
}

/* dump_whole writes the whole model at version, gathered layer by layer. */
static int dump_whole(trainer *t, uint64_t version, FILE *f) {
  int rc = train_alloc_params(t);
  if (rc == FSPS_OK)
    rc = gather_all(t, version);
  for (uint32_t l = 0; rc == FSPS_OK && l < t->layers; l++) {
    uint64_t n = model_mlp_layer_size(t->net, l);
    if (fwrite(t->params[l], sizeof(float), n, f) != n)
      rc = FSPS_IO;
  }
  return rc;
}

/* The dump is written under a temporary name and renamed when whole, so a
 * failed gather or write never leaves a truncated file at path. */
int train_dump(trainer *t, const char *path) {
  uint64_t version = min_version_after(t, t->steps_done);
  char tmp[sizeof t->opts->dump +
           32]; /* one per process: ranks may share path */
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (f == NULL)
    return FSPS_IO;
  int rc = pieced(t) ? dump_pieces(t, version, f) : dump_whole(t, version, f);
  if (fclose(f) != 0 && rc == FSPS_OK)
    rc = FSPS_IO;
  if (rc == FSPS_OK && rename(tmp, path) != 0)
    rc = FSPS_IO;
  if (rc != FSPS_OK)
    remove(tmp);
  return rc;
}
