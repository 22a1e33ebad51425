/* service.c: the unary methods (Init, Status, health Check) and the
 * method table of fsps.v1.ParameterServer. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fsps.pb-c.h"
#include "gate.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "service.h"

void server_service_reject(service *svc, rpc_call *call, int code,
                           const char *msg) {
  atomic_fetch_add(&svc->rejected, 1);
  server_metrics_reject(svc->m, code);
  LOGD("refused a request: %s: %s", fsps_err_name(code), msg);
  rpc_call_finish(call, NULL, code, msg);
}

/* unpack decodes the request or refuses the call; NULL when refused. */
static ProtobufCMessage *unpack(service *svc, rpc_call *call, rpc_msg *msg,
                                const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m;
  rpc_status st;
  if (rpc_msg_unpack(msg, d, &m, &st) == FSPS_OK)
    return m;
  server_service_reject(svc, call, st.code, st.msg);
  return NULL;
}

static int check_placement(const server_config *cfg,
                           const Fsps__V1__InitRequest *req, char *err,
                           size_t errlen) {
  if (req->num_servers == cfg->num_servers && req->server_index == cfg->index)
    return FSPS_OK;
  snprintf(err, errlen,
           "this is server %u of %u, but the client expected server %u of %u "
           "at this address: list the servers in index order, all of them",
           cfg->index, cfg->num_servers, req->server_index, req->num_servers);
  return FSPS_FAILED_PRECONDITION;
}

static void init_reply(service *svc, rpc_call *call, bool created) {
  const server_config *cfg = store_config(svc->st);
  uint32_t L = store_num_layers(svc->st);
  uint64_t *versions = calloc(L ? L : 1, sizeof *versions);
  if (versions == NULL) {
    server_service_reject(svc, call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  for (uint32_t l = 0; l < L; l++) {
    store_layer_info info;
    store_info(store_layer_get(svc->st, l), &info);
    versions[l] = info.version;
  }
  Fsps__V1__InitReply r = FSPS__V1__INIT_REPLY__INIT;
  r.spec_hash = store_hash(svc->st);
  r.created = created;
  r.num_servers = cfg->num_servers;
  r.server_index = cfg->index;
  r.num_workers = cfg->workers;
  r.n_layer_versions = L;
  r.layer_versions = versions;
  r.incarnation = svc->incarnation;
  r.epoch = store_epoch(svc->st);
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
  free(versions);
}

/* init_store declares spec, keeping its wire encoding for checkpoints. */
static int init_store(service *svc, const Fsps__V1__ModelSpec *m,
                      shard_spec *spec, bool *created, char *err,
                      size_t errlen) {
  size_t len = protobuf_c_message_get_packed_size(&m->base);
  uint8_t *blob = malloc(len ? len : 1);
  if (blob == NULL) {
    shard_spec_destroy(spec);
    snprintf(err, errlen, "out of memory");
    return FSPS_RESOURCE_EXHAUSTED;
  }
  protobuf_c_message_pack(&m->base, blob);
  int rc = store_init(svc->st, spec, blob, len, created, err, errlen);
  free(blob);
  return rc;
}

/* may_join decides a worker's Init (server_auth_may's AUTH_JOIN): only the
 * model this server holds already, so that a worker token cannot declare one.
 * The declared model never changes once set, so this check stays true
 * until store_init runs. */
static int may_join(service *svc, const shard_spec *spec, char *err,
                    size_t errlen) {
  if (!store_ready(svc->st)) {
    snprintf(err, errlen,
             "role worker may only join the declared model, and none is "
             "declared here yet (an admin token declares it)");
    return FSPS_PERMISSION_DENIED;
  }
  uint64_t h = shard_spec_hash(spec);
  if (h == store_hash(svc->st))
    return FSPS_OK;
  snprintf(err, errlen,
           "role worker may only join the declared model (spec hash "
           "%016" PRIx64 "), not declare another (%016" PRIx64 ")",
           store_hash(svc->st), h);
  return FSPS_PERMISSION_DENIED;
}

/* init_refused checks a worker's Init before it can declare anything: a
 * refusal is answered here (true). */
static bool init_refused(service *svc, rpc_call *call, shard_spec *spec) {
  if (spec == NULL || rpc_call_auth(call) != AUTH_WORKER)
    return false;
  char err[512];
  int rc = may_join(svc, spec, err, sizeof err);
  if (rc == FSPS_OK)
    return false;
  shard_spec_destroy(spec);
  server_auth_refused(svc->m, call, WIRE_PATH_INIT, "worker", rc, err);
  rpc_call_finish(call, NULL, rc, err);
  return true;
}

static void init_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  Fsps__V1__InitRequest *req = (Fsps__V1__InitRequest *)unpack(
      svc, call, msg, &fsps__v1__init_request__descriptor);
  if (req == NULL)
    return;
  char err[512] = "";
  bool created = false;
  int rc = check_placement(store_config(svc->st), req, err, sizeof err);
  if (rc == FSPS_OK && req->spec == NULL) {
    rc = FSPS_INVALID_ARGUMENT;
    snprintf(err, sizeof err, "Init carries no model spec");
  }
  shard_spec *spec =
      rc == FSPS_OK ? wire_spec_from_proto(req->spec, err, sizeof err) : NULL;
  if (rc == FSPS_OK && spec == NULL)
    rc = FSPS_INVALID_ARGUMENT;
  if (rc == FSPS_OK && init_refused(svc, call, spec)) {
    protobuf_c_message_free_unpacked(&req->base, NULL);
    return;
  }
  if (rc == FSPS_OK)
    rc = init_store(svc, req->spec, spec, &created, err, sizeof err);
  protobuf_c_message_free_unpacked(&req->base, NULL);
  if (rc != FSPS_OK) {
    server_service_reject(svc, call, rc, err);
    return;
  }
  if (created)
    LOGI("model declared: %u layers, spec hash %016" PRIx64,
         store_num_layers(svc->st), store_hash(svc->st));
  init_reply(svc, call, created);
}

/* layer_status fills one LayerStatus; its arrays live in ws/wm. */
/* layer_status fills ls; flags has room for 2W bools, ids for 3W. */
static void layer_status(store_layer *Lp, uint32_t W, bool *flags,
                         uint32_t *ids, Fsps__V1__LayerStatus *ls) {
  bool *pushed = flags, *absent = flags + W;
  store_layer_info info;
  store_info(Lp, &info);
  ls->name = (char *)info.name;
  ls->n = info.n;
  ls->slice_offset = info.offset;
  ls->slice_count = info.count;
  ls->version = info.version;
  ls->awaiting_values = info.awaiting;
  ls->pending_step = store_pushed(Lp, pushed, absent);
  ls->pushed = ids;
  ls->missing = ids + W;
  ls->absent = ids + 2 * W;
  for (uint32_t w = 0; w < W; w++) {
    if (pushed[w])
      ls->pushed[ls->n_pushed++] = w;
    else if (absent[w])
      ls->absent[ls->n_absent++] = w;
    else
      ls->missing[ls->n_missing++] = w;
  }
}

static void status_fill(service *svc, Fsps__V1__StatusReply *r) {
  const server_config *cfg = store_config(svc->st);
  r->initialized = store_ready(svc->st);
  r->spec_hash = store_hash(svc->st);
  r->num_servers = cfg->num_servers;
  r->server_index = cfg->index;
  r->num_workers = cfg->workers;
  r->mode = (char *)server_config_mode_name(cfg->mode);
  r->staleness = cfg->staleness;
  r->deterministic = cfg->deterministic;
  r->pulls = atomic_load(&svc->pulls);
  r->pushes = atomic_load(&svc->pushes);
  r->rejected = atomic_load(&svc->rejected);
  r->incarnation = svc->incarnation;
  r->epoch = store_epoch(svc->st);
  if (r->initialized) {
    size_t len = 0;
    const void *blob = store_blob(svc->st, &len);
    r->model_spec.data = (uint8_t *)blob;
    r->model_spec.len = blob ? len : 0;
  }
}

static void status_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  ProtobufCMessage *req =
      unpack(svc, call, msg, &fsps__v1__status_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked(req, NULL);
  Fsps__V1__StatusReply r = FSPS__V1__STATUS_REPLY__INIT;
  status_fill(svc, &r);
  uint64_t ckpts[CKPT_LIST_MAX];
  r.checkpoint_versions = ckpts;
  r.n_checkpoint_versions =
      svc->ck ? ckpt_versions(svc->ck, ckpts, CKPT_LIST_MAX) : 0;
  uint32_t L = store_num_layers(svc->st), W = store_config(svc->st)->workers;
  Fsps__V1__LayerStatus *ls = calloc(L ? L : 1, sizeof *ls);
  Fsps__V1__LayerStatus **lp = calloc(L ? L : 1, sizeof *lp);
  uint32_t *ids = calloc(3 * (size_t)L * W + 1, sizeof *ids);
  bool *pushed = calloc(2 * (size_t)W, sizeof *pushed);
  if (ls && lp && ids && pushed) {
    for (uint32_t l = 0; l < L; l++) {
      fsps__v1__layer_status__init(&ls[l]);
      layer_status(store_layer_get(svc->st, l), W, pushed,
                   ids + 3 * (size_t)l * W, &ls[l]);
      lp[l] = &ls[l];
    }
    r.n_layers = L;
    r.layers = lp;
    rpc_call_finish(call, &r.base, FSPS_OK, NULL);
  } else {
    server_service_reject(svc, call, FSPS_RESOURCE_EXHAUSTED, "out of memory");
  }
  free(ls);
  free(lp);
  free(ids);
  free(pushed);
}

/* write_checkpoint writes the file a Checkpoint call asked for and
 * answers it: on the checkpoint thread (server_service_later). */
static void write_checkpoint(service *svc, rpc_call *call, void *req) {
  (void)req;
  if (call == NULL) /* refused: nothing to free */
    return;
  char path[1200], err[512];
  Fsps__V1__CheckpointReply r = FSPS__V1__CHECKPOINT_REPLY__INIT;
  int rc = ckpt_write_now(svc->ck, path, sizeof path, &r.bytes, &r.min_version,
                          err, sizeof err);
  if (rc != FSPS_OK) {
    LOGE("%s", err);
    rpc_call_finish(call, NULL, rc, err);
    return;
  }
  LOGI("checkpoint written on request: %s", path);
  r.path = path;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

static void checkpoint_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  ProtobufCMessage *req =
      unpack(svc, call, msg, &fsps__v1__checkpoint_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked(req, NULL);
  if (svc->ck == NULL) {
    server_service_reject(svc, call, FSPS_FAILED_PRECONDITION,
                          "this server has no --checkpoint-dir");
    return;
  }
  server_service_later(svc, call, write_checkpoint, NULL);
}

/* A call's work handed to the checkpoint thread. */
typedef struct {
  service *svc;
  rpc_call *call;
  void (*fn)(service *, rpc_call *, void *);
  void *req;
} later;

static void run_later(void *arg) {
  later *l = arg;
  l->fn(l->svc, l->call, l->req);
  rpc_call_unref(l->call);
  free(l);
}

void server_service_later(service *svc, rpc_call *call,
                          void (*fn)(service *, rpc_call *, void *),
                          void *req) {
  later *l = malloc(sizeof *l);
  int rc = l ? FSPS_OK : FSPS_NOMEM;
  if (l != NULL) {
    *l = (later){svc, call, fn, req};
    rpc_call_ref(call); /* until fn has answered it */
    if ((rc = ckpt_run_later(svc->ck, run_later, l)) != FSPS_OK) {
      rpc_call_unref(call);
      free(l);
    }
  }
  if (rc != FSPS_OK) {
    fn(svc, NULL, req); /* frees what req holds */
    server_service_reject(svc, call, rc,
                          rc == FSPS_NOMEM ? "out of memory"
                                           : "the server is stopping");
  }
}

static void health_start(rpc_call *call, rpc_msg *msg, void *ctx) {
  service *svc = ctx;
  Grpc__Health__V1__HealthCheckRequest *req =
      (Grpc__Health__V1__HealthCheckRequest *)unpack(
          svc, call, msg, &grpc__health__v1__health_check_request__descriptor);
  if (req == NULL)
    return;
  bool known = req->service == NULL || req->service[0] == '\0' ||
               strcmp(req->service, WIRE_SERVICE) == 0;
  protobuf_c_message_free_unpacked(&req->base, NULL);
  if (!known) {
    rpc_call_finish(call, NULL, FSPS_NOT_FOUND, "unknown service");
    return;
  }
  Grpc__Health__V1__HealthCheckResponse r =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  rpc_call_finish(call, &r.base, FSPS_OK, NULL);
}

const rpc_method *server_service_methods(service *svc, size_t *n) {
  /* One entry per path of wire's list (asserted below). */
  static const rpc_method m[] = {
      {.path = WIRE_PATH_INIT, .kind = RPC_UNARY, .on_start = init_start},
      {.path = WIRE_PATH_PULL,
       .kind = RPC_SERVER_STREAMING,
       .on_start = server_pull_start,
       .on_sent = server_pull_sent,
       .on_cancel = server_pull_cancel,
       .on_done = server_pull_done},
      {.path = WIRE_PATH_PUSH,
       .kind = RPC_CLIENT_STREAMING,
       .on_start = server_push_start,
       .on_message = server_push_message,
       .on_done = server_push_done},
      {.path = WIRE_PATH_STATUS, .kind = RPC_UNARY, .on_start = status_start},
      {.path = WIRE_PATH_CHECKPOINT,
       .kind = RPC_UNARY,
       .on_start = checkpoint_start},
      {.path = WIRE_PATH_ROLLBACK,
       .kind = RPC_UNARY,
       .on_start = server_rollback_start},
      {.path = WIRE_PATH_SET_VALUES,
       .kind = RPC_CLIENT_STREAMING,
       .on_start = server_values_start,
       .on_message = server_values_message,
       .on_done = server_values_done},
      {.path = WIRE_PATH_HEALTH_CHECK,
       .kind = RPC_UNARY,
       .on_start = health_start},
  };
  _Static_assert(sizeof m / sizeof m[0] == SERVICE_METHODS,
                 "one handler per method path of wire.h");
  *n = SERVICE_METHODS;
  for (size_t i = 0; i < *n; i++) { /* each service its own table */
    svc->methods[i] = m[i];
    svc->methods[i].ctx = svc;
  }
  return svc->methods;
}

const rpc_method *server_health_method(service *svc) {
  svc->health[0] = (rpc_method){.path = WIRE_PATH_HEALTH_CHECK,
                                .kind = RPC_UNARY,
                                .on_start = health_start,
                                .ctx = svc};
  return svc->health;
}
