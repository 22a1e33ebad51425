/* test_serve_online.c: serve/online over real gRPC on loopback — the open
 * inference protocol's methods driven by rpc/'s client: readiness, metadata,
 * ModelInfer equal bit for bit to serve_snapshot_predict over the batch the
 * reply names, versions swapped mid-stream, each bad input's status,
 * deadlines, and a stop that answers what is queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc_predict_v2.pb-c.h"
#include "online.h"
#include "rpc.h"

#define W0 12
#define CLASSES 5
#define MAX_MSG (64 << 20)
#define PATH(m) "/inference.GRPCInferenceService/" m
#define MAX_VERSIONS 16

static const uint32_t widths[] = {W0, 16, CLASSES};

/* ---- a model of known weights, one per version ---- */

static float lcg(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((*s >> 40) / (double)(1ull << 24)) - 0.5f;
}

static serve_snapshot *make_snapshot(uint64_t version) {
  serve_snapshot *s = serve_snapshot_new(widths, 3, version);
  assert_non_null(s);
  uint64_t seed = 1000 + version;
  for (uint32_t l = 0; l < 2; l++)
    for (uint64_t i = 0; i < serve_snapshot_layer_size(s, l); i++)
      s->params[l][i] = lcg(&seed);
  return s;
}

static void fill_rows(float *x, uint32_t rows, uint64_t seed) {
  for (uint32_t i = 0; i < rows * W0; i++)
    x[i] = 4 * lcg(&seed);
}

typedef struct {
  serve_slot *slot;
  serve_snapshot *versions[MAX_VERSIONS]; /* the test's own references */
  serve_online *srv;
  rpc_channel *ch;
} fixture;

static void publish(fixture *f, uint64_t version) {
  serve_snapshot *s = make_snapshot(version);
  f->versions[version] = s;
  serve_snapshot_ref(s);
  serve_slot_publish(f->slot, s);
}

static void start(fixture *f, uint32_t max_batch, uint32_t delay_us,
                  uint32_t threads) {
  memset(f, 0, sizeof *f);
  f->slot = serve_slot_create();
  serve_online_config cfg = {.listen = "127.0.0.1:0",
                             .max_batch = max_batch,
                             .max_delay_us = delay_us,
                             .threads = threads};
  char msg[512];
  f->srv = serve_online_start(&cfg, f->slot, msg, sizeof msg);
  if (f->srv == NULL)
    fail_msg("serve_online_start: %s", msg);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", serve_online_port(f->srv));
  rpc_status st;
  f->ch = rpc_channel_create(target, MAX_MSG, &st);
  assert_non_null(f->ch);
}

static void stop(fixture *f) {
  rpc_channel_destroy(f->ch);
  serve_online_stop(f->srv);
  serve_slot_destroy(f->slot);
  for (int i = 0; i < MAX_VERSIONS; i++)
    serve_snapshot_unref(f->versions[i]);
}

/* ---- requests ---- */

typedef struct {
  Inference__ModelInferRequest req;
  Inference__ModelInferRequest__InferInputTensor in, *inp;
  int64_t shape[2];
  ProtobufCBinaryData raw;
  Inference__InferTensorContents contents;
  Inference__ModelInferRequest__InferRequestedOutputTensor out[2], *outp[2];
} infer_req;

static void make_req(infer_req *r, const float *x, uint32_t rows, bool raw) {
  *r = (infer_req){.req = INFERENCE__MODEL_INFER_REQUEST__INIT,
                   .in =
                       INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT,
                   .contents = INFERENCE__INFER_TENSOR_CONTENTS__INIT};
  r->req.model_name = "fsps-mlp";
  r->req.id = "req-1";
  r->in.name = "input";
  r->in.datatype = "FP32";
  r->shape[0] = rows;
  r->shape[1] = W0;
  r->in.shape = r->shape;
  r->in.n_shape = 2;
  r->inp = &r->in;
  r->req.inputs = &r->inp;
  r->req.n_inputs = 1;
  if (raw) {
    r->raw.data = (uint8_t *)x;
    r->raw.len = (size_t)rows * W0 * sizeof(float);
    r->req.raw_input_contents = &r->raw;
    r->req.n_raw_input_contents = 1;
  } else {
    r->contents.fp32_contents = (float *)x;
    r->contents.n_fp32_contents = (size_t)rows * W0;
    r->in.contents = &r->contents;
  }
}

static void want_outputs(infer_req *r, const char *a, const char *b) {
  const char *names[2] = {a, b};
  for (int i = 0; i < 2 && names[i]; i++) {
    r->out[i] = (Inference__ModelInferRequest__InferRequestedOutputTensor)
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    r->out[i].name = (char *)names[i];
    r->outp[i] = &r->out[i];
    r->req.n_outputs = (size_t)i + 1;
  }
  r->req.outputs = r->outp;
}

static int infer(rpc_channel *ch, infer_req *r,
                 Inference__ModelInferResponse **rep, int64_t timeout_ms,
                 rpc_status *st) {
  return rpc_unary(ch, PATH("ModelInfer"), &r->req.base,
                   &inference__model_infer_response__descriptor,
                   (ProtobufCMessage **)rep, timeout_ms, st);
}

static int64_t param(const Inference__ModelInferResponse *rep,
                     const char *key) {
  for (size_t i = 0; i < rep->n_parameters; i++)
    if (strcmp(rep->parameters[i]->key, key) == 0)
      return rep->parameters[i]->value->int64_param;
  fail_msg("reply has no parameter %s", key);
  return -1;
}

/* unary makes a call of another method and returns its status code. */
static int unary(fixture *f, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *d, ProtobufCMessage **rep) {
  rpc_status st;
  int rc = rpc_unary(f->ch, path, req, d, rep, 10000, &st);
  return rc;
}

/* server_flag asks ServerLive (live) or ServerReady, which must answer,
 * and returns the answer's one field. */
static bool server_flag(fixture *f, bool live) {
  Inference__ServerLiveRequest lq = INFERENCE__SERVER_LIVE_REQUEST__INIT;
  Inference__ServerReadyRequest rq = INFERENCE__SERVER_READY_REQUEST__INIT;
  ProtobufCMessage *rep;
  assert_int_equal(unary(f, live ? PATH("ServerLive") : PATH("ServerReady"),
                         live ? &lq.base : &rq.base,
                         live ? &inference__server_live_response__descriptor
                              : &inference__server_ready_response__descriptor,
                         &rep),
                   FSPS_OK);
  bool v = live ? ((Inference__ServerLiveResponse *)rep)->live
                : ((Inference__ServerReadyResponse *)rep)->ready;
  protobuf_c_message_free_unpacked(rep, NULL);
  return v;
}

/* model_ready asks ModelReady about name (at version, if not NULL): its
 * status code, and *ready when FSPS_OK. */
static int model_ready(fixture *f, const char *name, const char *version,
                       bool *ready) {
  Inference__ModelReadyRequest q = INFERENCE__MODEL_READY_REQUEST__INIT;
  Inference__ModelReadyResponse *rep;
  q.name = (char *)name;
  q.version = version ? (char *)version : "";
  int rc = unary(f, PATH("ModelReady"), &q.base,
                 &inference__model_ready_response__descriptor,
                 (ProtobufCMessage **)&rep);
  if (rc == FSPS_OK) {
    *ready = rep->ready;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  }
  return rc;
}

/* health asks grpc.health.v1's Check about service: its status code, and
 * *serving when FSPS_OK. */
static int health(fixture *f, const char *service, int *serving) {
  Grpc__Health__V1__HealthCheckRequest q =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *rep;
  q.service = service ? (char *)service : "";
  int rc = unary(f, "/grpc.health.v1.Health/Check", &q.base,
                 &grpc__health__v1__health_check_response__descriptor,
                 (ProtobufCMessage **)&rep);
  if (rc == FSPS_OK) {
    *serving = rep->status;
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  }
  return rc;
}

/* model_metadata asks ModelMetadata about name: its status code, and *md
 * (the caller frees it) when FSPS_OK. */
static int model_metadata(fixture *f, const char *name,
                          Inference__ModelMetadataResponse **md) {
  Inference__ModelMetadataRequest q = INFERENCE__MODEL_METADATA_REQUEST__INIT;
  q.name = (char *)name;
  return unary(f, PATH("ModelMetadata"), &q.base,
               &inference__model_metadata_response__descriptor,
               (ProtobufCMessage **)md);
}

/* infer_ok makes the call, which must be answered, and returns the reply
 * (the caller frees it). */
static Inference__ModelInferResponse *infer_ok(fixture *f, infer_req *r) {
  Inference__ModelInferResponse *rep = NULL;
  rpc_status st;
  assert_int_equal(infer(f->ch, r, &rep, 10000, &st), FSPS_OK);
  return rep;
}

/* check_reply checks rep's outputs against probs and cls of rows rows. */
static void check_reply(const Inference__ModelInferResponse *rep, uint32_t rows,
                        const float *probs, const uint32_t *cls) {
  assert_int_equal(rep->n_outputs, 2);
  assert_int_equal(rep->n_raw_output_contents, 2);
  assert_string_equal(rep->outputs[0]->name, "probabilities");
  assert_string_equal(rep->outputs[0]->datatype, "FP32");
  assert_int_equal(rep->outputs[0]->n_shape, 2);
  assert_int_equal(rep->outputs[0]->shape[0], rows);
  assert_int_equal(rep->outputs[0]->shape[1], CLASSES);
  assert_string_equal(rep->outputs[1]->name, "class");
  assert_string_equal(rep->outputs[1]->datatype, "INT64");
  assert_int_equal(rep->outputs[1]->n_shape, 1);
  assert_int_equal(rep->outputs[1]->shape[0], rows);
  assert_int_equal(rep->raw_output_contents[0].len,
                   rows * CLASSES * sizeof(float));
  assert_memory_equal(rep->raw_output_contents[0].data, probs,
                      rows * CLASSES * sizeof(float));
  assert_int_equal(rep->raw_output_contents[1].len, rows * sizeof(int64_t));
  for (uint32_t i = 0; i < rows; i++) {
    int64_t c;
    memcpy(&c, rep->raw_output_contents[1].data + 8 * i, 8);
    assert_int_equal(c, cls[i]);
  }
}

/* predict computes rows rows of x with snapshot s, max_batch at a time. */
static void predict(const serve_snapshot *s, const float *x, uint32_t rows,
                    uint32_t max_batch, float *probs, uint32_t *cls) {
  mlp *m = model_mlp_create(widths, 3, max_batch);
  for (uint32_t at = 0; at < rows; at += max_batch) {
    uint32_t n = rows - at < max_batch ? rows - at : max_batch;
    assert_int_equal(serve_snapshot_predict(s, m, x + at * W0, n,
                                            probs + at * CLASSES, cls + at),
                     0);
  }
  model_mlp_destroy(m);
}

/* ---- tests ---- */

#define NOT_SERVING                                                            \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING

static void check_metadata(const Inference__ModelMetadataResponse *md) {
  assert_string_equal(md->name, "fsps-mlp");
  assert_int_equal(md->n_versions, 1);
  assert_string_equal(md->versions[0], "3");
  assert_int_equal(md->n_inputs, 1);
  assert_string_equal(md->inputs[0]->name, "input");
  assert_string_equal(md->inputs[0]->datatype, "FP32");
  assert_int_equal(md->inputs[0]->n_shape, 2);
  assert_int_equal(md->inputs[0]->shape[0], -1);
  assert_int_equal(md->inputs[0]->shape[1], W0);
  assert_int_equal(md->n_outputs, 2);
  assert_string_equal(md->outputs[0]->name, "probabilities");
  assert_int_equal(md->outputs[0]->shape[1], CLASSES);
  assert_string_equal(md->outputs[1]->name, "class");
  assert_string_equal(md->outputs[1]->datatype, "INT64");
}

/* Before a model is published: live, nothing ready, no metadata, no
 * inference. */
static void not_ready_yet(fixture *f) {
  assert_true(server_flag(f, true));
  assert_false(server_flag(f, false));
  bool ready = true;
  assert_int_equal(model_ready(f, "fsps-mlp", NULL, &ready), FSPS_OK);
  assert_false(ready);
  int serving = -1;
  assert_int_equal(health(f, NULL, &serving), FSPS_OK);
  assert_int_equal(serving, NOT_SERVING);
  Inference__ModelMetadataResponse *md;
  assert_int_equal(model_metadata(f, "fsps-mlp", &md), FSPS_UNAVAILABLE);
  float x[W0] = {0};
  infer_req r;
  make_req(&r, x, 1, true);
  Inference__ModelInferResponse *rep;
  rpc_status st;
  assert_int_equal(infer(f->ch, &r, &rep, 10000, &st), FSPS_UNAVAILABLE);
}

static void readiness_and_metadata(void **state) {
  (void)state;
  fixture f;
  start(&f, 8, 100, 1);
  not_ready_yet(&f);
  publish(&f, 3);
  assert_true(server_flag(&f, false));
  bool ready = false;
  assert_int_equal(model_ready(&f, "fsps-mlp", NULL, &ready), FSPS_OK);
  assert_true(ready);
  assert_int_equal(model_ready(&f, "fsps-mlp", "2", &ready), FSPS_OK);
  assert_false(ready);
  assert_int_equal(model_ready(&f, "other", "2", &ready), FSPS_NOT_FOUND);
  int serving = -1;
  assert_int_equal(health(&f, NULL, &serving), FSPS_OK);
  assert_int_equal(serving, SERVING);
  assert_int_equal(health(&f, "no.such.Service", &serving), FSPS_NOT_FOUND);
  Inference__ModelMetadataResponse *md;
  assert_int_equal(model_metadata(&f, "fsps-mlp", &md), FSPS_OK);
  check_metadata(md);
  protobuf_c_message_free_unpacked(&md->base, NULL);
  assert_int_equal(model_metadata(&f, "nope", &md), FSPS_NOT_FOUND);

  Inference__ServerMetadataRequest sreq =
      INFERENCE__SERVER_METADATA_REQUEST__INIT;
  Inference__ServerMetadataResponse *smd;
  assert_int_equal(unary(&f, PATH("ServerMetadata"), &sreq.base,
                         &inference__server_metadata_response__descriptor,
                         (ProtobufCMessage **)&smd),
                   FSPS_OK);
  assert_string_equal(smd->name, "fsps-serve");
  assert_true(smd->version[0] != '\0');
  protobuf_c_message_free_unpacked(&smd->base, NULL);
  stop(&f);
}

/* One client, one request at a time: each batch is that request alone, so
 * each reply equals serve_snapshot_predict of its own rows, in pieces of
 * max_batch for a request larger than that. */
static void infer_equals_predict(void **state) {
  (void)state;
  fixture f;
  start(&f, 8, 100, 2);
  publish(&f, 5);
  const uint32_t sizes[] = {1, 3, 8, 20};
  for (int k = 0; k < 4; k++) {
    for (int raw = 0; raw < 2; raw++) {
      uint32_t rows = sizes[k];
      float x[20 * W0], probs[20 * CLASSES];
      uint32_t cls[20];
      fill_rows(x, rows, 77 + (uint64_t)k);
      predict(f.versions[5], x, rows, 8, probs, cls);
      infer_req r;
      make_req(&r, x, rows, raw);
      Inference__ModelInferResponse *rep = infer_ok(&f, &r);
      assert_string_equal(rep->model_name, "fsps-mlp");
      assert_string_equal(rep->model_version, "5");
      assert_string_equal(rep->id, "req-1");
      check_reply(rep, rows, probs, cls);
      assert_int_equal(param(rep, "fsps_batch_requests"), 1);
      assert_int_equal(param(rep, "fsps_batch_offset"), 0);
      assert_int_equal(param(rep, "fsps_batch_rows"), rows < 8 ? rows : 8);
      protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
  }
  /* the version served, asked for by name: answered */
  float x[2 * W0];
  fill_rows(x, 1, 6);
  infer_req r;
  make_req(&r, x, 1, true);
  r.req.model_version = "5";
  Inference__ModelInferResponse *rep = infer_ok(&f, &r);
  assert_string_equal(rep->model_version, "5");
  protobuf_c_message_free_unpacked(&rep->base, NULL);
  /* outputs named: only those, in the order asked */
  fill_rows(x, 2, 5);
  make_req(&r, x, 2, true);
  want_outputs(&r, "class", NULL);
  rep = infer_ok(&f, &r);
  assert_int_equal(rep->n_outputs, 1);
  assert_string_equal(rep->outputs[0]->name, "class");
  assert_int_equal(rep->raw_output_contents[0].len, 2 * sizeof(int64_t));
  protobuf_c_message_free_unpacked(&rep->base, NULL);
  want_outputs(&r, "class", "probabilities");
  rep = infer_ok(&f, &r);
  assert_int_equal(rep->n_outputs, 2);
  assert_string_equal(rep->outputs[0]->name, "class");
  assert_string_equal(rep->outputs[1]->name, "probabilities");
  protobuf_c_message_free_unpacked(&rep->base, NULL);
  serve_online_stats s;
  serve_online_get_stats(f.srv, &s);
  assert_int_equal(s.requests, 11);
  assert_int_equal(s.answered, 11);
  assert_int_equal(s.rows, 2 * (1 + 3 + 8 + 20) + 1 + 4);
  stop(&f);
}

/* ---- many clients while versions change ---- */

#define CLIENTS 8
#define PER_CLIENT 12

typedef struct {
  uint32_t rows;
  float x[4 * W0];
  uint64_t version, seq;
  int64_t nreq, brows, offset;
  float probs[4 * CLASSES];
  uint32_t cls[4];
  int code;
} result;

typedef struct {
  fixture *f;
  int client;
  result *res; /* PER_CLIENT */
} client_arg;

static void *client_thread(void *arg) {
  client_arg *a = arg;
  for (int k = 0; k < PER_CLIENT; k++) {
    result *r = &a->res[k];
    r->rows = 1 + (uint32_t)((a->client + k) % 4);
    fill_rows(r->x, r->rows, (uint64_t)(a->client * 1000 + k));
    infer_req q;
    make_req(&q, r->x, r->rows, (a->client + k) % 2);
    Inference__ModelInferResponse *rep;
    rpc_status st;
    r->code = infer(a->f->ch, &q, &rep, 30000, &st);
    if (r->code != FSPS_OK)
      continue;
    r->version = strtoull(rep->model_version, NULL, 10);
    r->seq = (uint64_t)param(rep, "fsps_batch");
    r->nreq = param(rep, "fsps_batch_requests");
    r->brows = param(rep, "fsps_batch_rows");
    r->offset = param(rep, "fsps_batch_offset");
    if (rep->n_raw_output_contents == 2 &&
        rep->raw_output_contents[0].len == r->rows * CLASSES * sizeof(float)) {
      memcpy(r->probs, rep->raw_output_contents[0].data,
             r->rows * CLASSES * sizeof(float));
      for (uint32_t i = 0; i < r->rows; i++) {
        int64_t c;
        memcpy(&c, rep->raw_output_contents[1].data + 8 * i, 8);
        r->cls[i] = (uint32_t)c;
      }
    } else {
      r->code = -1;
    }
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  }
  return NULL;
}

/* check_batch rebuilds batch seq from the replies that name it (in offset
 * order), computes it with the version they name and compares bit for
 * bit. Returns the requests it held. */
static int check_batch(fixture *f, result *all, int n, uint64_t seq) {
  result *in[CLIENTS * PER_CLIENT];
  int m = 0;
  for (int i = 0; i < n; i++)
    if (all[i].seq == seq)
      in[m++] = &all[i];
  float x[CLIENTS * 4 * W0], probs[CLIENTS * 4 * CLASSES];
  uint32_t cls[CLIENTS * 4], rows = 0;
  for (uint32_t off = 0; (int64_t)off < in[0]->brows;) {
    int j = 0;
    while (j < m && in[j]->offset != off)
      j++;
    assert_true(j < m); /* every row of the batch is some reply's */
    assert_int_equal(in[j]->version, in[0]->version);
    assert_int_equal(in[j]->nreq, m);
    memcpy(x + rows * W0, in[j]->x, in[j]->rows * W0 * sizeof(float));
    rows += in[j]->rows;
    off += in[j]->rows;
  }
  assert_int_equal(rows, in[0]->brows);
  predict(f->versions[in[0]->version], x, rows, rows, probs, cls);
  for (int j = 0; j < m; j++) {
    assert_memory_equal(in[j]->probs, probs + in[j]->offset * CLASSES,
                        in[j]->rows * CLASSES * sizeof(float));
    assert_memory_equal(in[j]->cls, cls + in[j]->offset,
                        in[j]->rows * sizeof(uint32_t));
  }
  return m;
}

static void versions_swap_between_batches(void **state) {
  (void)state;
  fixture f;
  start(&f, 16, 3000, 2);
  publish(&f, 1);
  static result res[CLIENTS * PER_CLIENT];
  memset(res, 0, sizeof res);
  pthread_t t[CLIENTS];
  client_arg a[CLIENTS];
  for (int c = 0; c < CLIENTS; c++) {
    a[c] = (client_arg){&f, c, res + c * PER_CLIENT};
    pthread_create(&t[c], NULL, client_thread, &a[c]);
  }
  /* New versions while the clients run, each once some replies came. */
  for (uint64_t v = 2; v <= 6; v++) {
    serve_online_stats s;
    do {
      serve_online_get_stats(f.srv, &s);
      nanosleep(&(struct timespec){0, 1000000}, NULL);
    } while (s.answered < (v - 1) * CLIENTS * PER_CLIENT / 6 &&
             s.answered + s.refused < CLIENTS * PER_CLIENT);
    publish(&f, v);
  }
  for (int c = 0; c < CLIENTS; c++)
    pthread_join(t[c], NULL);
  int n = CLIENTS * PER_CLIENT, checked = 0, most = 0;
  bool seen[MAX_VERSIONS] = {false};
  for (int i = 0; i < n; i++)
    assert_int_equal(res[i].code, FSPS_OK);
  for (int i = 0; i < n; i++) {
    bool first = true;
    for (int j = 0; j < i; j++)
      first = first && res[j].seq != res[i].seq;
    if (!first)
      continue;
    int m = check_batch(&f, res, n, res[i].seq);
    checked += m;
    most = m > most ? m : most;
    seen[res[i].version] = true;
  }
  assert_int_equal(checked, n);
  int versions = 0;
  for (int v = 0; v < MAX_VERSIONS; v++)
    versions += seen[v];
  print_message("%d requests in batches of up to %d, from %d versions\n", n,
                most, versions);
  assert_true(seen[1]);
  stop(&f);
}

typedef struct {
  fixture *f;
  int i;
  int code;
  int64_t seq, nreq;
} one_arg;

static void *one_row_client(void *arg) {
  one_arg *a = arg;
  float x[W0];
  fill_rows(x, 1, (uint64_t)a->i);
  infer_req r;
  make_req(&r, x, 1, true);
  Inference__ModelInferResponse *rep = NULL;
  rpc_status st;
  a->code = infer(a->f->ch, &r, &rep, 60000, &st);
  if (rep) {
    a->seq = param(rep, "fsps_batch");
    a->nreq = param(rep, "fsps_batch_requests");
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  }
  return NULL;
}

/* With a delay longer than any test, a batch goes when max_batch rows
 * wait: 8 concurrent one-row requests are computed as one batch. */
static void full_batch_goes_at_once(void **state) {
  (void)state;
  fixture f;
  start(&f, 8, 60000000, 1);
  publish(&f, 1);
  one_arg a[8];
  pthread_t t[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (one_arg){.f = &f, .i = i};
    pthread_create(&t[i], NULL, one_row_client, &a[i]);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(a[i].code, FSPS_OK);
    assert_int_equal(a[i].seq, a[0].seq);
    assert_int_equal(a[i].nreq, 8);
  }
  serve_online_stats s;
  serve_online_get_stats(f.srv, &s);
  assert_int_equal(s.batches, 1);
  assert_int_equal(s.rows, 8);
  stop(&f);
}

/* ---- bad input ---- */

static int infer_code(fixture *f, infer_req *r, char *msg) {
  Inference__ModelInferResponse *rep = NULL;
  rpc_status st;
  int rc = infer(f->ch, r, &rep, 10000, &st);
  if (rep)
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  if (msg)
    snprintf(msg, 512, "%s", st.msg);
  return rc;
}

/* One bad request: 3 rows, raw or typed, broken by break_req; the status
 * it must get and a word its message must hold (NULL: any). */
typedef struct {
  bool raw;
  int code;
  const char *says;
} bad_case;

static const bad_case bad_cases[] = {
    {true, FSPS_NOT_FOUND, "resnet"},
    {true, FSPS_NOT_FOUND, NULL},
    {true, FSPS_INVALID_ARGUMENT, "FP64"},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, "bytes"},
    {false, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, "empty"},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, "NaN"},
    {false, FSPS_INVALID_ARGUMENT, "infinite"},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {false, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_INVALID_ARGUMENT, NULL},
    {true, FSPS_RESOURCE_EXHAUSTED, NULL},
};
#define NBAD (sizeof bad_cases / sizeof bad_cases[0])

/* break_req breaks r as bad case k says; x holds 4 good rows (a case
 * claims one value more than sent), with_nan and with_inf its first 3
 * rows with one value made NaN, or -infinity. */
static void break_req(size_t k, infer_req *r, float *x, float *with_nan,
                      float *with_inf) {
  switch (k) {
  case 0:
    r->req.model_name = "resnet";
    break;
  case 1:
    r->req.model_version = "7";
    break;
  case 2:
    r->in.datatype = "FP64";
    break;
  case 3:
    r->shape[1] = W0 + 1;
    break;
  case 4:
    r->in.n_shape = 1;
    break;
  case 5:
    r->raw.len -= 4;
    break;
  case 6:
    r->contents.n_fp32_contents++;
    break;
  case 7:
    r->shape[0] = 0, r->raw.len = 0;
    break;
  case 8:
    r->shape[0] = -3;
    break;
  case 9:
    r->raw.data = (uint8_t *)with_nan;
    break;
  case 10:
    r->contents.fp32_contents = with_inf;
    break;
  case 11:
    r->in.name = "pixels";
    break;
  case 12: /* raw and typed data at once */
    r->in.contents = &r->contents;
    r->contents.fp32_contents = x;
    r->contents.n_fp32_contents = 3 * W0;
    break;
  case 13:
    r->in.contents = NULL;
    break; /* no data at all */
  case 14:
    want_outputs(r, "logits", NULL);
    break;
  case 15:
    r->req.n_inputs = 0;
    break;
  case 16:
    r->shape[0] = 10000000;
    break; /* 480 MB of input */
  }
}

static void bad_inputs_get_their_status(void **state) {
  (void)state;
  fixture f;
  start(&f, 8, 100, 1);
  publish(&f, 2);
  float x[4 * W0], with_nan[3 * W0], with_inf[3 * W0];
  fill_rows(x, 4, 9);
  memcpy(with_nan, x, sizeof with_nan);
  memcpy(with_inf, x, sizeof with_inf);
  with_nan[W0 + 2] = NAN;
  with_inf[W0 + 2] = -INFINITY;
  infer_req r;
  char msg[512];
  for (size_t k = 0; k < NBAD; k++) {
    make_req(&r, x, 3, bad_cases[k].raw);
    break_req(k, &r, x, with_nan, with_inf);
    assert_int_equal(infer_code(&f, &r, msg), bad_cases[k].code);
    if (bad_cases[k].says && strstr(msg, bad_cases[k].says) == NULL)
      fail_msg("case %zu: '%s' does not say %s", k, msg, bad_cases[k].says);
  }
  /* bytes that are not a ModelInferRequest: a varint where field 2 is a
   * string */
  Inference__InferParameter p = INFERENCE__INFER_PARAMETER__INIT;
  p.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
  p.int64_param = 5;
  Inference__ModelInferResponse *rep;
  rpc_status st;
  assert_int_equal(rpc_unary(f.ch, PATH("ModelInfer"), &p.base,
                             &inference__model_infer_response__descriptor,
                             (ProtobufCMessage **)&rep, 10000, &st),
                   FSPS_INVALID_ARGUMENT);
  serve_online_stats s;
  serve_online_get_stats(f.srv, &s);
  assert_int_equal(s.batches, 0); /* nothing was computed */
  assert_int_equal(s.refused, NBAD + 1);
  make_req(&r, x, 3, true);
  assert_int_equal(infer_code(&f, &r, NULL), FSPS_OK);
  stop(&f);
}

/* wait_stats polls f's counters until the one at offset reaches want (or
 * 60 s pass) and returns them. */
static serve_online_stats wait_stats(fixture *f, size_t offset, uint64_t want) {
  serve_online_stats s;
  for (int i = 0; i < 6000; i++) {
    serve_online_get_stats(f->srv, &s);
    uint64_t v;
    memcpy(&v, (const char *)&s + offset, sizeof v);
    if (v >= want)
      break;
    nanosleep(&(struct timespec){0, 10000000}, NULL);
  }
  return s;
}

typedef struct {
  pthread_mutex_t mu;
  bool done;
  int code;
} cancel_state;

static void cancel_done(rpc_stream *st, const rpc_status *status,
                        rpc_msg *reply, void *ctx) {
  (void)st;
  (void)reply;
  cancel_state *c = ctx;
  pthread_mutex_lock(&c->mu);
  c->done = true;
  c->code = status->code;
  pthread_mutex_unlock(&c->mu);
}

static void on_message_ignored(rpc_stream *st, rpc_msg *msg, void *ctx) {
  (void)st;
  (void)msg;
  (void)ctx;
}

/* A call the client cancels while it waits for its batch is dropped from
 * it, never computed; the next request is answered. */
static void cancelled_call_dropped(void **state) {
  (void)state;
  fixture f;
  start(&f, 8, 60000000, 1); /* a batch goes only when 8 rows wait */
  publish(&f, 1);
  float x[8 * W0];
  fill_rows(x, 8, 11);
  infer_req r;
  make_req(&r, x, 1, true);
  /* The unary call made as a server-streaming one (the same bytes on the
   * wire), since rpc's streams can be cancelled. */
  cancel_state c = {.mu = PTHREAD_MUTEX_INITIALIZER};
  rpc_stream_cbs cbs = {
      .on_message = on_message_ignored, .on_done = cancel_done, .ctx = &c};
  rpc_status st;
  rpc_stream *s =
      rpc_stream_start(f.ch, PATH("ModelInfer"), RPC_SERVER_STREAMING,
                       &r.req.base, 60000, &cbs, &st);
  assert_non_null(s);
  assert_int_equal(
      wait_stats(&f, offsetof(serve_online_stats, requests), 1).requests, 1);
  rpc_stream_cancel(s);
  assert_int_equal(
      wait_stats(&f, offsetof(serve_online_stats, cancelled), 1).cancelled, 1);
  pthread_mutex_lock(&c.mu);
  bool done = c.done;
  pthread_mutex_unlock(&c.mu);
  for (int i = 0; !done && i < 6000; i++) {
    nanosleep(&(struct timespec){0, 10000000}, NULL);
    pthread_mutex_lock(&c.mu);
    done = c.done;
    pthread_mutex_unlock(&c.mu);
  }
  assert_true(done);
  assert_int_equal(c.code, FSPS_CANCELLED);
  make_req(&r, x, 8, true); /* 9 rows wait: the cancelled one goes alone */
  Inference__ModelInferResponse *rep;
  assert_int_equal(infer(f.ch, &r, &rep, 60000, &st), FSPS_OK);
  assert_int_equal(param(rep, "fsps_batch_requests"), 1);
  protobuf_c_message_free_unpacked(&rep->base, NULL);
  serve_online_stats now;
  serve_online_get_stats(f.srv, &now);
  assert_int_equal(now.requests, 2);
  assert_int_equal(now.answered, 1);
  assert_int_equal(now.rows, 8);
  assert_int_equal(now.batches, 1);
  stop(&f);
}

/* A request whose deadline passes while its batch forms is answered
 * DEADLINE_EXCEEDED and never computed. */
static void deadline_passes_in_queue(void **state) {
  (void)state;
  fixture f;
  start(&f, 64, 2000000, 1); /* a batch waits 2 s for more requests */
  publish(&f, 1);
  float x[W0];
  fill_rows(x, 1, 3);
  infer_req r;
  make_req(&r, x, 1, true);
  Inference__ModelInferResponse *rep = NULL;
  rpc_status st;
  assert_int_equal(infer(f.ch, &r, &rep, 200, &st), FSPS_DEADLINE_EXCEEDED);
  serve_online_stats s =
      wait_stats(&f, offsetof(serve_online_stats, deadline_exceeded), 1);
  assert_int_equal(s.deadline_exceeded, 1);
  assert_int_equal(s.cancelled, 0);
  assert_int_equal(s.rows, 0);
  assert_int_equal(s.batches, 0);
  stop(&f);
}

typedef struct {
  fixture *f;
  float x[2 * W0];
  int code;
  char version[8];
} drain_arg;

static void *drain_client(void *arg) {
  drain_arg *a = arg;
  infer_req r;
  make_req(&r, a->x, 2, true);
  Inference__ModelInferResponse *rep = NULL;
  rpc_status st;
  a->code = infer(a->f->ch, &r, &rep, 60000, &st);
  if (rep) {
    snprintf(a->version, sizeof a->version, "%s", rep->model_version);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
  }
  return NULL;
}

/* serve_online_stop answers the requests queued when it is called, at
 * once: without waiting the batch's delay out (which would take longer
 * than the stop's grace, and the calls would be cancelled). */
static void stop_answers_queued_calls(void **state) {
  (void)state;
  fixture f;
  start(&f, 64, 600000000, 1); /* batches would wait 10 minutes */
  publish(&f, 4);
  enum { N = 6 };
  drain_arg a[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    a[i] = (drain_arg){.f = &f};
    fill_rows(a[i].x, 2, (uint64_t)i);
    pthread_create(&t[i], NULL, drain_client, &a[i]);
  }
  serve_online_stats s;
  do {
    nanosleep(&(struct timespec){0, 1000000}, NULL);
    serve_online_get_stats(f.srv, &s);
  } while (s.requests < N);
  serve_online_stop(f.srv);
  f.srv = NULL;
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(a[i].code, FSPS_OK);
    assert_string_equal(a[i].version, "4");
  }
  stop(&f);
}

static void bad_config_refused(void **state) {
  (void)state;
  serve_slot *slot = serve_slot_create();
  char msg[512];
  serve_online_config c = {.listen = "127.0.0.1:0",
                           .max_batch = SERVE_ONLINE_MAX_BATCH + 1};
  assert_null(serve_online_start(&c, slot, msg, sizeof msg));
  assert_non_null(strstr(msg, "--max-batch"));
  c = (serve_online_config){.listen = "127.0.0.1:0", .tls_cert = "x.pem"};
  assert_null(serve_online_start(&c, slot, msg, sizeof msg));
  assert_non_null(strstr(msg, "TLS"));
  c = (serve_online_config){.listen = "256.1.1.1:0"};
  assert_null(serve_online_start(&c, slot, msg, sizeof msg));
  c = (serve_online_config){.listen = "127.0.0.1:0",
                            .port_file = "/nonexistent/dir/port"};
  assert_null(serve_online_start(&c, slot, msg, sizeof msg));
  assert_non_null(strstr(msg, "/nonexistent/dir/port"));
  serve_slot_destroy(slot);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(readiness_and_metadata),
      cmocka_unit_test(infer_equals_predict),
      cmocka_unit_test(versions_swap_between_batches),
      cmocka_unit_test(full_batch_goes_at_once),
      cmocka_unit_test(bad_inputs_get_their_status),
      cmocka_unit_test(deadline_passes_in_queue),
      cmocka_unit_test(cancelled_call_dropped),
      cmocka_unit_test(stop_answers_queued_calls),
      cmocka_unit_test(bad_config_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
