/* infer.c: a ModelInfer request checked field by field against the model
 * served, and the reply built around the batch's outputs. */
#include "infer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsps_err.h"

static int fail(char *msg, size_t msglen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t msglen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (msglen > 0)
    vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
  return code;
}

/* parse_version reads a decimal version with nothing around it. */
static bool parse_version(const char *s, uint64_t *v) {
  if (s[0] < '0' || s[0] > '9')
    return false;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  *v = x;
  return true;
}

static int check_model(const Inference__ModelInferRequest *req,
                       const serve_infer_model *m, serve_infer_req *out,
                       char *msg, size_t msglen) {
  if (strcmp(req->model_name, m->name) != 0)
    return fail(msg, msglen, FSPS_NOT_FOUND,
                "model '%.128s' is not served here; this server serves '%s'",
                req->model_name, m->name);
  if (req->model_version[0] == '\0')
    return FSPS_OK;
  out->pinned = true;
  if (!parse_version(req->model_version, &out->version) ||
      out->version != m->version)
    return fail(msg, msglen, FSPS_NOT_FOUND,
                "version '%.64s' of model '%s' is not served; the version "
                "served is %" PRIu64 " (leave model_version empty for it)",
                req->model_version, m->name, m->version);
  return FSPS_OK;
}

/* shape_text writes a shape as "[a, b, ...]" (at most 8 dimensions). */
static void shape_text(const int64_t *d, size_t n, char *buf, size_t len) {
  size_t at = (size_t)snprintf(buf, len, "[");
  for (size_t i = 0; i < n && i < 8 && at < len; i++)
    at +=
        (size_t)snprintf(buf + at, len - at, "%s%" PRId64, i ? ", " : "", d[i]);
  if (at < len)
    snprintf(buf + at, len - at, "%s]", n > 8 ? ", ..." : "");
}

static int check_input(const Inference__ModelInferRequest__InferInputTensor *in,
                       const serve_infer_model *m, char *msg, size_t msglen) {
  if (strcmp(in->name, SERVE_INFER_INPUT) != 0)
    return fail(
        msg, msglen, FSPS_INVALID_ARGUMENT,
        "unknown input '%.128s': model '%s' has one input, '" SERVE_INFER_INPUT
        "'",
        in->name, m->name);
  if (strcmp(in->datatype, "FP32") != 0)
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "input '" SERVE_INFER_INPUT "' has datatype '%.32s'; this "
                "model takes FP32",
                in->datatype);
  char shape[160];
  shape_text(in->shape, in->n_shape, shape, sizeof shape);
  if (in->n_shape != 2 || in->shape[1] != (int64_t)m->width || in->shape[0] < 0)
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "input '" SERVE_INFER_INPUT "' has shape %s; this model "
                "takes [rows, %" PRIu32 "]",
                shape, m->width);
  if (in->shape[0] == 0)
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "input '" SERVE_INFER_INPUT "' has shape %s: an empty "
                "batch (give at least one row)",
                shape);
  return FSPS_OK;
}

/* check_size refuses a request whose input or reply would not fit in a
 * message: each row takes width floats in, classes floats and an INT64
 * out. */
static int check_size(int64_t rows, const serve_infer_model *m, char *msg,
                      size_t msglen) {
  uint64_t in = (uint64_t)m->width * sizeof(float);
  uint64_t out = (uint64_t)m->classes * sizeof(float) + sizeof(int64_t);
  uint64_t most = SERVE_INFER_MAX_MESSAGE / (in > out ? in : out);
  if ((uint64_t)rows <= most)
    return FSPS_OK;
  return fail(msg, msglen, FSPS_RESOURCE_EXHAUSTED,
              "%" PRId64 " rows are more than one request may carry: its "
              "input and its reply must each fit in %d bytes, %" PRIu64
              " rows of this model",
              rows, SERVE_INFER_MAX_MESSAGE, most);
}

static bool other_contents(const Inference__InferTensorContents *c) {
  return c->n_bool_contents || c->n_int_contents || c->n_int64_contents ||
         c->n_uint_contents || c->n_uint64_contents || c->n_fp64_contents ||
         c->n_bytes_contents;
}

/* find_data points out->x at the input's rows, in raw_input_contents or
 * in contents.fp32_contents. */
static int find_data(const Inference__ModelInferRequest *req,
                     serve_infer_req *out, char *msg, size_t msglen) {
  const Inference__InferTensorContents *c = req->inputs[0]->contents;
  size_t want = (size_t)out->rows * out->width;
  bool typed = c != NULL && (c->n_fp32_contents || other_contents(c));
  if (req->n_raw_input_contents > 1 || (req->n_raw_input_contents && typed))
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "raw_input_contents must hold one entry for the one input, "
                "and then contents must be empty");
  if (req->n_raw_input_contents == 1) {
    const ProtobufCBinaryData *raw = &req->raw_input_contents[0];
    if (raw->len != want * sizeof(float))
      return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                  "raw_input_contents holds %zu bytes; shape [%" PRIu32
                  ", %" PRIu32 "] of FP32 is %zu bytes",
                  raw->len, out->rows, out->width, want * sizeof(float));
    if ((uintptr_t)raw->data % alignof(float) == 0) {
      out->x = (const float *)raw->data;
    } else if ((out->own = malloc(raw->len)) != NULL) {
      memcpy(out->own, raw->data, raw->len);
      out->x = out->own;
    } else {
      return fail(msg, msglen, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    }
    return FSPS_OK;
  }
  if (c == NULL || c->n_fp32_contents != want || other_contents(c))
    return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                "input '" SERVE_INFER_INPUT "' needs %zu FP32 values, in "
                "raw_input_contents or in contents.fp32_contents; the "
                "request has %zu in fp32_contents%s",
                want, c ? c->n_fp32_contents : 0,
                c && other_contents(c) ? " and others of other types" : "");
  out->x = c->fp32_contents;
  return FSPS_OK;
}

static int check_finite(const serve_infer_req *r, char *msg, size_t msglen) {
  size_t n = (size_t)r->rows * r->width;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(r->x[i]))
      return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                  "input row %zu, column %zu is %s: every value must be "
                  "finite",
                  i / r->width, i % r->width,
                  isnan(r->x[i]) ? "NaN" : "infinite");
  return FSPS_OK;
}

static int check_outputs(const Inference__ModelInferRequest *req,
                         serve_infer_req *out, char *msg, size_t msglen) {
  if (req->n_outputs == 0) {
    out->outputs[0] = SERVE_OUT_PROBS;
    out->outputs[1] = SERVE_OUT_CLASS;
    out->noutputs = 2;
    return FSPS_OK;
  }
  for (size_t i = 0; i < req->n_outputs; i++) {
    const char *name = req->outputs[i]->name;
    serve_out o;
    if (strcmp(name, SERVE_INFER_PROBS) == 0)
      o = SERVE_OUT_PROBS;
    else if (strcmp(name, SERVE_INFER_CLASS) == 0)
      o = SERVE_OUT_CLASS;
    else
      return fail(msg, msglen, FSPS_INVALID_ARGUMENT,
                  "unknown output '%.128s': the outputs are '" SERVE_INFER_PROBS
                  "' and '" SERVE_INFER_CLASS "'",
                  name);
    if (out->noutputs == 0 || out->outputs[0] != o)
      out->outputs[out->noutputs++] = o;
  }
  return FSPS_OK;
}

int serve_infer_check(const Inference__ModelInferRequest *req,
                      const serve_infer_model *model, serve_infer_req *out,
                      char *msg, size_t msglen) {
  memset(out, 0, sizeof *out);
  int rc = check_model(req, model, out, msg, msglen);
  if (rc == FSPS_OK && req->n_inputs != 1)
    rc = fail(msg, msglen, FSPS_INVALID_ARGUMENT,
              "model '%s' has one input, '" SERVE_INFER_INPUT "'; the "
              "request has %zu",
              model->name, req->n_inputs);
  if (rc == FSPS_OK)
    rc = check_input(req->inputs[0], model, msg, msglen);
  if (rc == FSPS_OK)
    rc = check_size(req->inputs[0]->shape[0], model, msg, msglen);
  if (rc != FSPS_OK)
    return rc;
  out->rows = (uint32_t)req->inputs[0]->shape[0];
  out->width = model->width;
  out->id = req->id;
  if ((rc = find_data(req, out, msg, msglen)) == FSPS_OK &&
      (rc = check_finite(out, msg, msglen)) == FSPS_OK)
    rc = check_outputs(req, out, msg, msglen);
  if (rc != FSPS_OK)
    serve_infer_req_free(out);
  return rc;
}

void serve_infer_req_free(serve_infer_req *r) {
  free(r->own);
  r->own = NULL;
  r->x = NULL;
}

/* ---- the reply ---- */

static void set_param(serve_infer_reply *rep, int i, const char *key,
                      int64_t v) {
  rep->val[i] = (Inference__InferParameter)INFERENCE__INFER_PARAMETER__INIT;
  rep->val[i].parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
  rep->val[i].int64_param = v;
  rep->par[i] = (Inference__ModelInferResponse__ParametersEntry)
      INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
  rep->par[i].key = (char *)key;
  rep->par[i].value = &rep->val[i];
  rep->parp[i] = &rep->par[i];
}

static void set_output(serve_infer_reply *rep, int i, serve_out o,
                       uint32_t rows, uint32_t classes, const float *probs) {
  Inference__ModelInferResponse__InferOutputTensor *t = &rep->out[i];
  *t = (Inference__ModelInferResponse__InferOutputTensor)
      INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
  bool p = o == SERVE_OUT_PROBS;
  t->name = p ? SERVE_INFER_PROBS : SERVE_INFER_CLASS;
  t->datatype = p ? "FP32" : "INT64";
  rep->shape[i][0] = rows;
  rep->shape[i][1] = classes;
  t->shape = rep->shape[i];
  t->n_shape = p ? 2 : 1;
  rep->raw[i].data = p ? (uint8_t *)probs : (uint8_t *)rep->classes;
  rep->raw[i].len = p ? (size_t)rows * classes * sizeof(float)
                      : (size_t)rows * sizeof(int64_t);
  rep->outp[i] = t;
}

int serve_infer_reply_build(serve_infer_reply *rep, const serve_infer_req *r,
                            const char *name, uint64_t version,
                            uint32_t classes, const float *probs,
                            const uint32_t *cls,
                            const serve_infer_batch *batch) {
  memset(rep, 0, sizeof *rep);
  rep->msg =
      (Inference__ModelInferResponse)INFERENCE__MODEL_INFER_RESPONSE__INIT;
  rep->classes = malloc((size_t)r->rows * sizeof(int64_t));
  if (rep->classes == NULL)
    return -1;
  for (uint32_t i = 0; i < r->rows; i++)
    rep->classes[i] = cls[i];
  snprintf(rep->version, sizeof rep->version, "%" PRIu64, version);
  rep->msg.model_name = (char *)name;
  rep->msg.model_version = rep->version;
  rep->msg.id = (char *)r->id;
  for (uint32_t i = 0; i < r->noutputs; i++)
    set_output(rep, (int)i, r->outputs[i], r->rows, classes, probs);
  rep->msg.n_outputs = rep->msg.n_raw_output_contents = r->noutputs;
  rep->msg.outputs = rep->outp;
  rep->msg.raw_output_contents = rep->raw;
  set_param(rep, 0, "fsps_batch", (int64_t)batch->seq);
  set_param(rep, 1, "fsps_batch_requests", batch->requests);
  set_param(rep, 2, "fsps_batch_rows", batch->rows);
  set_param(rep, 3, "fsps_batch_offset", batch->offset);
  rep->msg.n_parameters = 4;
  rep->msg.parameters = rep->parp;
  return 0;
}

void serve_infer_reply_free(serve_infer_reply *rep) {
  free(rep->classes);
  rep->classes = NULL;
}
