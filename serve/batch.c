/* batch.c: fsps-serve's batch scoring loop (see batch.h) — read a chunk,
 * predict it with the slot's current snapshot, write its rows as CSV or
 * JSON lines to a temporary file renamed into place at the end. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "fmt.h"
#include "fsps_err.h"

typedef struct {
  const serve_batch_config *cfg;
  serve_slot *slot;
  batch_input *in, *labels;
  FILE *out;
  char tmp[4200];
  bool jsonl;
  uint32_t width, classes;
  uint64_t rows; /* UINT64_MAX when unknown */
  mlp *m;
  float *x, *probs;
  uint32_t *cls;
  uint8_t *y;
  double started, last_progress;
  serve_batch_result *res;
} run;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static int pick_output_format(run *r, char *msg, size_t msglen) {
  const char *f = r->cfg->output_format, *o = r->cfg->output;
  if (f == NULL)
    f = ends_with(o, ".jsonl") || ends_with(o, ".json") ||
                ends_with(o, ".ndjson")
            ? "jsonl"
            : "csv";
  if (strcmp(f, "csv") != 0 && strcmp(f, "jsonl") != 0) {
    snprintf(msg, msglen, "--output-format must be csv or jsonl, not '%s'", f);
    return FSPS_INVALID_ARGUMENT;
  }
  r->jsonl = strcmp(f, "jsonl") == 0;
  return FSPS_OK;
}

static int open_output(run *r, char *msg, size_t msglen) {
  snprintf(r->tmp, sizeof r->tmp, "%s.tmp-%ld", r->cfg->output,
           (long)getpid());
  if ((r->out = fopen(r->tmp, "w")) == NULL) {
    snprintf(msg, msglen, "cannot create %s: %s", r->tmp, strerror(errno));
    return FSPS_IO;
  }
  if (!r->jsonl) {
    fprintf(r->out, "index,class");
    for (uint32_t k = 0; k < r->classes; k++)
      fprintf(r->out, ",p%" PRIu32, k);
    fputc('\n', r->out);
  }
  return FSPS_OK;
}

/* alloc_run sizes the chunk buffers and the model's workspace. */
static int alloc_run(run *r, const serve_snapshot *s, char *msg,
                     size_t msglen) {
  uint32_t b = r->cfg->max_batch;
  r->width = s->widths[0];
  r->classes = s->widths[s->nwidths - 1];
  r->m = model_mlp_create(s->widths, s->nwidths, b);
  r->x = malloc((size_t)b * r->width * sizeof(float));
  r->probs = malloc((size_t)b * r->classes * sizeof(float));
  r->cls = malloc((size_t)b * sizeof(uint32_t));
  r->y = malloc(b);
  if (r->m && r->x && r->probs && r->cls && r->y)
    return FSPS_OK;
  snprintf(msg, msglen, "out of memory for chunks of %" PRIu32 " rows", b);
  return FSPS_NOMEM;
}

static void write_rows(run *r, uint64_t first, uint32_t n, uint64_t version) {
  for (uint32_t i = 0; i < n; i++) {
    const float *p = r->probs + (size_t)i * r->classes;
    if (r->jsonl)
      fprintf(r->out, "{\"index\":%" PRIu64 ",\"class\":%" PRIu32
              ",\"probs\":[", first + i, r->cls[i]);
    else
      fprintf(r->out, "%" PRIu64 ",%" PRIu32, first + i, r->cls[i]);
    for (uint32_t k = 0; k < r->classes; k++) {
      char num[SERVE_FMT_G9_MAX + 1];
      size_t len = 0;
      if (k > 0 || !r->jsonl)
        num[len++] = ',';
      len += serve_fmt_g9(p[k], num + len); /* printf's "%.9g", faster */
      fwrite(num, 1, len, r->out);
    }
    if (r->jsonl)
      fprintf(r->out, "],\"version\":%" PRIu64 "}\n", version);
    else
      fputc('\n', r->out);
  }
}

static void progress(run *r, bool last) {
  double t = now_s();
  if (r->cfg->progress_secs <= 0 ||
      (!last && t - r->last_progress < r->cfg->progress_secs))
    return;
  r->last_progress = t;
  double el = t - r->started;
  fprintf(stderr, "%s: %" PRIu64, r->cfg->tool, r->res->rows);
  if (r->rows != UINT64_MAX)
    fprintf(stderr, "/%" PRIu64 " rows (%.0f%%)", r->rows,
            r->rows ? 100.0 * (double)r->res->rows / (double)r->rows : 100.0);
  else
    fprintf(stderr, " rows");
  fprintf(stderr, ", %.0f rows/s, version %" PRIu64 "\n",
          el > 0 ? (double)r->res->rows / el : 0.0, r->res->last_version);
}

/* score_chunk predicts n rows of r->x with the current snapshot. */
static int score_chunk(run *r, uint32_t n, char *msg, size_t msglen) {
  serve_snapshot *s = serve_slot_acquire(r->slot);
  int rc = FSPS_OK;
  if (s == NULL || serve_snapshot_predict(s, r->m, r->x, n, r->probs,
                                          r->cls) != 0) {
    snprintf(msg, msglen, s ? "the model's widths changed while scoring"
                            : "no model loaded (not ready)");
    rc = FSPS_FAILED_PRECONDITION;
  }
  if (rc == FSPS_OK) {
    if (r->res->rows == 0)
      r->res->first_version = s->version;
    r->res->last_version = s->version;
    write_rows(r, r->res->rows, n, s->version);
  }
  serve_snapshot_unref(s);
  return rc;
}

static int count_labels(run *r, uint32_t n, char *msg, size_t msglen) {
  if (r->labels == NULL)
    return FSPS_OK;
  int rc = batch_labels_read(r->labels, r->y, n, msg, msglen);
  for (uint32_t i = 0; rc == FSPS_OK && i < n; i++)
    r->res->correct += r->cls[i] == r->y[i];
  r->res->labelled += rc == FSPS_OK ? n : 0;
  return rc;
}

static int loop(run *r, char *msg, size_t msglen) {
  for (;;) {
    uint32_t n;
    int rc = batch_input_read(r->in, r->x, r->cfg->max_batch, &n, msg, msglen);
    if (rc != FSPS_OK || n == 0)
      return rc;
    if ((rc = score_chunk(r, n, msg, msglen)) != FSPS_OK ||
        (rc = count_labels(r, n, msg, msglen)) != FSPS_OK)
      return rc;
    r->res->rows += n;
    progress(r, false);
  }
}

/* finish flushes and renames the output into place. */
static int finish(run *r, char *msg, size_t msglen) {
  int bad = ferror(r->out) || fflush(r->out) != 0 || fsync(fileno(r->out));
  bad |= fclose(r->out) != 0;
  r->out = NULL;
  if (bad || rename(r->tmp, r->cfg->output) != 0) {
    snprintf(msg, msglen, "cannot write %s: %s", r->cfg->output,
             strerror(errno ? errno : EIO));
    return FSPS_IO;
  }
  return FSPS_OK;
}

static int open_all(run *r, char *msg, size_t msglen) {
  serve_snapshot *s = serve_slot_acquire(r->slot);
  int rc = s ? pick_output_format(r, msg, msglen) : FSPS_FAILED_PRECONDITION;
  if (s == NULL)
    snprintf(msg, msglen, "no model loaded (not ready)");
  if (rc == FSPS_OK)
    rc = alloc_run(r, s, msg, msglen);
  serve_snapshot_unref(s);
  if (rc == FSPS_OK)
    rc = batch_input_open(r->cfg->input, r->cfg->input_format, r->width,
                          r->cfg->normalize, &r->in, &r->rows, msg, msglen);
  if (rc == FSPS_OK && r->cfg->labels)
    rc = batch_labels_open(r->cfg->labels, r->rows, &r->labels, msg, msglen);
  if (rc == FSPS_OK)
    rc = open_output(r, msg, msglen);
  return rc;
}

static void close_all(run *r) {
  if (r->out != NULL) {
    fclose(r->out);
    unlink(r->tmp);
  }
  batch_input_close(r->in);
  batch_input_close(r->labels);
  model_mlp_destroy(r->m);
  free(r->x);
  free(r->probs);
  free(r->cls);
  free(r->y);
}

int serve_batch_run(const serve_batch_config *cfg, serve_slot *slot,
                    serve_batch_result *res, char *msg, size_t msglen) {
  run r = {.cfg = cfg, .slot = slot, .res = res, .started = now_s()};
  memset(res, 0, sizeof *res);
  if (cfg->max_batch == 0) {
    snprintf(msg, msglen, "--max-batch must be at least 1");
    return FSPS_INVALID_ARGUMENT;
  }
  int rc = open_all(&r, msg, msglen);
  if (rc == FSPS_OK)
    rc = loop(&r, msg, msglen);
  if (rc == FSPS_OK && res->rows == 0) {
    snprintf(msg, msglen, "%s holds no rows to score", cfg->input);
    rc = FSPS_INVALID_ARGUMENT;
  } else if (rc == FSPS_OK && r.rows != UINT64_MAX && res->rows != r.rows) {
    snprintf(msg, msglen, "%s: read %" PRIu64 " rows of %" PRIu64,
             cfg->input, res->rows, r.rows);
    rc = FSPS_CORRUPT;
  }
  if (rc == FSPS_OK) {
    progress(&r, true);
    rc = finish(&r, msg, msglen);
  }
  close_all(&r);
  return rc;
}
