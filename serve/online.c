/* online.c: the open inference protocol's methods (inference.
 * GRPCInferenceService) and grpc.health.v1.Health on rpc/'s server, in
 * front of the dynamic batcher (batcher.c); start, port and stop. */
#include "online.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "online_int.h"

#define SERVICE "inference.GRPCInferenceService"
#define PATH(m) "/" SERVICE "/" m
#define HEALTH_PATH "/grpc.health.v1.Health/Check"
#define NMETHODS 7

/* Completion-queue threads: they read requests, check and decode them, and
 * send the replies the compute threads build. */
#define RPC_THREADS 2

/* How long serve_online_stop lets calls in flight finish before it cancels
 * them: far more than a batch takes. */
#define STOP_GRACE_MS 30000

struct serve_online {
  char *listen, *name, *port_file, *cert, *key, *client_ca;
  uint32_t max_batch, max_delay_us, threads;
  serve_slot *slot;
  serve_counters c;
  serve_batcher *batcher;
  rpc_server *srv;
  rpc_server_tls tls;
  rpc_method methods[NMETHODS];
};

/* unpack decodes a request of type d, or answers INVALID_ARGUMENT and
 * returns NULL. */
static void *unpack(rpc_call *call, rpc_msg *msg,
                    const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m;
  rpc_status st;
  if (rpc_msg_unpack(msg, d, &m, &st) == FSPS_OK)
    return m;
  rpc_call_finish(call, NULL, st.code, st.msg);
  return NULL;
}

static bool ready(serve_online *s) {
  return serve_slot_version(s->slot) != UINT64_MAX;
}

static void live_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  Inference__ServerLiveRequest *req =
      unpack(call, msg, &inference__server_live_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
  r.live = 1;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

static void ready_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  Inference__ServerReadyRequest *req =
      unpack(call, msg, &inference__server_ready_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
  r.ready = ready(ctx);
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

/* check_name answers NOT_FOUND and returns false unless name (and version,
 * when not empty) is the model served now; *version gets that version
 * (UINT64_MAX when none is loaded). */
static bool check_name(serve_online *s, rpc_call *call, const char *name,
                       const char *version, uint64_t *now) {
  *now = serve_slot_version(s->slot);
  char cur[24];
  snprintf(cur, sizeof cur, "%" PRIu64, *now);
  if (strcmp(name, s->name) != 0)
    rpc_call_failf(call, FSPS_NOT_FOUND,
                   "model '%.128s' is not served here; this server serves "
                   "'%s'",
                   name, s->name);
  else if (version[0] != '\0' && (*now == UINT64_MAX || strcmp(version, cur)))
    rpc_call_failf(
        call, FSPS_NOT_FOUND,
        "version '%.64s' of model '%s' is not served; %s%s", version, s->name,
        *now == UINT64_MAX ? "none is loaded yet" : "the version served is ",
        *now == UINT64_MAX ? "" : cur);
  else
    return true;
  return false;
}

static void model_ready_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  Inference__ModelReadyRequest *req =
      unpack(call, msg, &inference__model_ready_request__descriptor);
  if (req == NULL)
    return;
  uint64_t now;
  if (check_name(ctx, call, req->name, "", &now)) {
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    char cur[24];
    snprintf(cur, sizeof cur, "%" PRIu64, now);
    r.ready = now != UINT64_MAX &&
              (req->version[0] == '\0' || strcmp(req->version, cur) == 0);
    rpc_call_finish(call, &r.base, FSPS_OK, NULL);
  }
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

static void server_metadata_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  (void)ctx;
  Inference__ServerMetadataRequest *req =
      unpack(call, msg, &inference__server_metadata_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  Inference__ServerMetadataResponse r =
      INFERENCE__SERVER_METADATA_RESPONSE__INIT;
  r.name = "fsps-serve";
  r.version = FSPS_SERVE_VERSION;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

/* send_metadata answers ModelMetadata from snapshot snap. */
static void send_metadata(serve_online *s, rpc_call *call,
                          const serve_snapshot *snap) {
  typedef Inference__ModelMetadataResponse__TensorMetadata tensor;
  tensor t[3], *in[1] = {&t[0]}, *out[2] = {&t[1], &t[2]};
  int64_t shape_in[2] = {-1, snap->widths[0]};
  int64_t shape_p[2] = {-1, snap->widths[snap->nwidths - 1]}, shape_c[1] = {-1};
  const char *names[3] = {SERVE_INFER_INPUT, SERVE_INFER_PROBS,
                          SERVE_INFER_CLASS};
  int64_t *shapes[3] = {shape_in, shape_p, shape_c};
  for (int i = 0; i < 3; i++) {
    t[i] = (tensor)INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
    t[i].name = (char *)names[i];
    t[i].datatype = i == 2 ? "INT64" : "FP32";
    t[i].shape = shapes[i];
    t[i].n_shape = i == 2 ? 1 : 2;
  }
  char version[24], *versions[1] = {version};
  snprintf(version, sizeof version, "%" PRIu64, snap->version);
  Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
  r.name = s->name;
  r.versions = versions;
  r.n_versions = 1;
  r.platform = "fsps_mlp";
  r.inputs = in;
  r.n_inputs = 1;
  r.outputs = out;
  r.n_outputs = 2;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

static void model_metadata_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  serve_online *s = ctx;
  Inference__ModelMetadataRequest *req =
      unpack(call, msg, &inference__model_metadata_request__descriptor);
  if (req == NULL)
    return;
  uint64_t now;
  serve_snapshot *snap = NULL;
  if (check_name(s, call, req->name, req->version, &now)) {
    snap = serve_slot_acquire(s->slot);
    if (snap == NULL)
      rpc_call_failf(call, FSPS_UNAVAILABLE, "model '%s' is not loaded yet",
                     s->name);
    else
      send_metadata(s, call, snap);
  }
  serve_snapshot_unref(snap);
  protobuf_c_message_free_unpacked(&req->base, NULL);
}

/* ---- ModelInfer ---- */

void serve_job_free(serve_job *j) {
  if (j == NULL)
    return;
  serve_infer_req_free(&j->req);
  if (j->msg != NULL)
    protobuf_c_message_free_unpacked(&j->msg->base, NULL);
  free(j);
}

/* check_infer checks the job's request against the snapshot now served. */
static int check_infer(serve_online *s, serve_job *j, char *msg,
                       size_t msglen) {
  serve_snapshot *snap = serve_slot_acquire(s->slot);
  if (snap == NULL) {
    snprintf(msg, msglen,
             "model '%s' is not loaded yet: retry once "
             "ServerReady says true",
             s->name);
    return FSPS_UNAVAILABLE;
  }
  serve_infer_model m = {.name = s->name,
                         .width = snap->widths[0],
                         .classes = snap->widths[snap->nwidths - 1],
                         .version = snap->version};
  serve_snapshot_unref(snap);
  return serve_infer_check(j->msg, &m, &j->req, msg, msglen);
}

static void infer_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  serve_online *s = ctx;
  serve_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    rpc_call_finish(call, NULL, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  j->call = call;
  atomic_init(&j->cancelled, false);
  char err[512];
  rpc_status st;
  int rc = rpc_msg_unpack(msg, &inference__model_infer_request__descriptor,
                          (ProtobufCMessage **)&j->msg, &st);
  if (rc != FSPS_OK)
    snprintf(err, sizeof err, "%s", st.msg);
  else
    rc = check_infer(s, j, err, sizeof err);
  if (rc == FSPS_OK) {
    rpc_call_set_user(call, j); /* on_done frees it */
    rc = serve_batcher_submit(s->batcher, j, err, sizeof err);
    if (rc == FSPS_OK)
      return;
  }
  atomic_fetch_add(&s->c.refused, 1); /* before the client can see it */
  rpc_call_finish(call, NULL, rc, err);
  if (rpc_call_user(call) == NULL)
    serve_job_free(j);
}

/* A call cancelled before its answer: its batch drops it, uncomputed,
 * unless it is already being computed. gRPC cancels a call whose deadline
 * passes too; those count as deadline_exceeded, in their batch. */
static void infer_cancel(rpc_call *call, void *ctx) {
  serve_online *s = ctx;
  serve_job *j = rpc_call_user(call);
  if (j == NULL)
    return;
  if (rpc_call_deadline_ms(call) > 0)
    atomic_fetch_add(&s->c.cancelled, 1);
  atomic_store(&j->cancelled, true);
}

static void infer_done(rpc_call *call, void *ctx) {
  (void)ctx;
  serve_job_free(rpc_call_user(call));
}

/* ---- health ---- */

static void health_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  Grpc__Health__V1__HealthCheckRequest *req =
      unpack(call, msg, &grpc__health__v1__health_check_request__descriptor);
  if (req == NULL)
    return;
  bool known = req->service[0] == '\0' || strcmp(req->service, SERVICE) == 0;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  if (!known) {
    rpc_call_finish(call, NULL, FSPS_NOT_FOUND, "unknown service");
    return;
  }
  Grpc__Health__V1__HealthCheckResponse r =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status =
      ready(ctx)
          ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

static void set_methods(serve_online *s) {
  static const rpc_method m[NMETHODS] = {
      {.path = PATH("ServerLive"), .on_start = live_start},
      {.path = PATH("ServerReady"), .on_start = ready_start},
      {.path = PATH("ModelReady"), .on_start = model_ready_start},
      {.path = PATH("ServerMetadata"), .on_start = server_metadata_start},
      {.path = PATH("ModelMetadata"), .on_start = model_metadata_start},
      {.path = PATH("ModelInfer"),
       .on_start = infer_start,
       .on_cancel = infer_cancel,
       .on_done = infer_done},
      {.path = HEALTH_PATH, .on_start = health_start},
  };
  for (int i = 0; i < NMETHODS; i++) {
    s->methods[i] = m[i];
    s->methods[i].kind = RPC_UNARY;
    s->methods[i].ctx = s;
  }
}

/* ---- life ---- */

static int write_port_file(const char *path, int port) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0 || rename(tmp, path) != 0)
    return -1;
  return 0;
}

static char *dup_or(const char *v, const char *dflt) {
  v = v != NULL ? v : dflt;
  return v != NULL ? strdup(v) : NULL;
}

/* copy_config takes cfg's values (with defaults) into s; a sentence in msg
 * and -1 when one is out of range. */
static int copy_config(serve_online *s, const serve_online_config *cfg,
                       char *msg, size_t msglen) {
  s->max_batch = cfg->max_batch ? cfg->max_batch : 64;
  s->max_delay_us = cfg->max_delay_us; /* 0: no wait for more requests */
  s->threads = cfg->threads ? cfg->threads : 1;
  s->listen = dup_or(cfg->listen, "0.0.0.0:8001");
  s->name = dup_or(cfg->model_name, "fsps-mlp");
  s->port_file = dup_or(cfg->port_file, NULL);
  s->cert = dup_or(cfg->tls_cert, NULL);
  s->key = dup_or(cfg->tls_key, NULL);
  s->client_ca = dup_or(cfg->tls_client_ca, NULL);
  if (s->listen == NULL || s->name == NULL)
    snprintf(msg, msglen, "out of memory");
  else if (s->max_batch > SERVE_ONLINE_MAX_BATCH)
    snprintf(msg, msglen, "--max-batch %" PRIu32 " is more than %u",
             s->max_batch, SERVE_ONLINE_MAX_BATCH);
  else if (s->threads > SERVE_ONLINE_MAX_THREADS)
    snprintf(msg, msglen, "--threads %" PRIu32 " is more than %u", s->threads,
             SERVE_ONLINE_MAX_THREADS);
  else if (s->name[0] == '\0')
    snprintf(msg, msglen, "--model-name must not be empty");
  else if ((s->cert == NULL) != (s->key == NULL) ||
           (s->client_ca != NULL && s->cert == NULL))
    snprintf(msg, msglen,
             "TLS needs both a certificate and its key (and a "
             "client CA only with them)");
  else
    return 0;
  return -1;
}

static int start_rpc(serve_online *s, char *msg, size_t msglen) {
  rpc_server_opts o = {.listen = s->listen,
                       .threads = RPC_THREADS,
                       .max_message_bytes = SERVE_INFER_MAX_MESSAGE};
  if (s->cert != NULL) {
    s->tls = (rpc_server_tls){.cert_file = s->cert,
                              .key_file = s->key,
                              .client_ca_file = s->client_ca};
    o.tls = &s->tls;
  }
  set_methods(s);
  rpc_status st = {.code = FSPS_INTERNAL,
                   .msg = "cannot start the gRPC server"};
  s->srv = rpc_server_create(&o, s->methods, NMETHODS, &st);
  if (s->srv == NULL || rpc_server_start(s->srv, &st) != FSPS_OK) {
    snprintf(msg, msglen, "%s", st.msg);
    return -1;
  }
  return 0;
}

static void free_online(serve_online *s) {
  free(s->listen);
  free(s->name);
  free(s->port_file);
  free(s->cert);
  free(s->key);
  free(s->client_ca);
  free(s);
}

serve_online *serve_online_start(const serve_online_config *cfg,
                                 serve_slot *slot, char *msg, size_t msglen) {
  serve_online *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(msg, msglen, "out of memory");
    return NULL;
  }
  s->slot = slot;
  if (copy_config(s, cfg, msg, msglen) != 0 ||
      (s->batcher =
           serve_batcher_create(slot, s->name, s->max_batch, s->max_delay_us,
                                s->threads, &s->c, msg, msglen)) == NULL ||
      start_rpc(s, msg, msglen) != 0) {
    serve_online_stop(s);
    return NULL;
  }
  int port = rpc_server_port(s->srv);
  if (s->port_file != NULL && write_port_file(s->port_file, port) != 0) {
    snprintf(msg, msglen, "cannot write the port to %s", s->port_file);
    serve_online_stop(s);
    return NULL;
  }
  return s;
}

int serve_online_port(const serve_online *s) {
  return rpc_server_port(s->srv);
}

void serve_online_stop(serve_online *s) {
  if (s == NULL)
    return;
  /* The batcher still computes while the server waits for calls in
   * flight: they are answered, not cancelled, and at once rather than
   * after --max-delay-us. */
  if (s->batcher != NULL)
    serve_batcher_drain(s->batcher);
  if (s->srv != NULL)
    rpc_server_shutdown(s->srv, STOP_GRACE_MS);
  serve_batcher_stop(s->batcher);
  rpc_server_destroy(s->srv);
  free_online(s);
}

void serve_online_get_stats(const serve_online *s, serve_online_stats *out) {
  serve_counters *c = (serve_counters *)&s->c;
  *out = (serve_online_stats){.requests = atomic_load(&c->requests),
                              .refused = atomic_load(&c->refused),
                              .batches = atomic_load(&c->batches),
                              .rows = atomic_load(&c->rows),
                              .answered = atomic_load(&c->answered),
                              .deadline_exceeded =
                                  atomic_load(&c->deadline_exceeded),
                              .cancelled = atomic_load(&c->cancelled)};
}
