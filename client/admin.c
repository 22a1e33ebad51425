/* admin.c: the operator's calls — every server's state as an opaque
 * fsps_status object with accessors (Status), and Checkpoint and Rollback
 * for a whole cluster, what fsps-ctl is built on. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

#define EPOCH_CHANGING UINT64_MAX /* a server being rolled back */
#define ROLLBACK_SALT 0x6f70657261746f72ull /* "operator" */

typedef struct {
  int rc;
  char *msg;
  const char *addr;
  Fsps__V1__StatusReply *r; /* NULL when the server did not answer */
} status_server;

struct fsps_status {
  uint32_t S;
  char **addr; /* copies of the client's addresses */
  status_server *srv;
};

uint32_t fsps_num_servers(const fsps_client *c) { return c ? c->S : 0; }

/* ---- fsps_status_get ---- */

static int ask_one(fsps_client *c, uint32_t s, status_server *out) {
  Fsps__V1__StatusRequest req = FSPS__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *reply = NULL;
  rpc_status st;
  out->rc = client_unary(c, s, WIRE_PATH_STATUS, &req.base,
                         &fsps__v1__status_reply__descriptor, &reply, &st);
  if (out->rc == FSPS_OK)
    out->r = (Fsps__V1__StatusReply *)reply;
  else if (reply != NULL)
    protobuf_c_message_free_unpacked(reply, NULL);
  out->msg = strdup(out->rc == FSPS_OK ? "" : st.msg);
  return out->msg == NULL ? FSPS_NOMEM : FSPS_OK;
}

static fsps_status *status_alloc(const fsps_client *c) {
  fsps_status *st = calloc(1, sizeof *st);
  if (st == NULL)
    return NULL;
  st->S = c->S;
  st->addr = calloc(c->S, sizeof *st->addr);
  st->srv = calloc(c->S, sizeof *st->srv);
  bool ok = st->addr != NULL && st->srv != NULL;
  for (uint32_t s = 0; ok && s < c->S; s++) {
    st->addr[s] = strdup(c->addr[s]);
    st->srv[s].addr = st->addr[s];
    ok = st->addr[s] != NULL;
  }
  if (!ok) {
    fsps_status_free(st);
    return NULL;
  }
  return st;
}

/* first_failure returns the first server's error in st, stored in c's
 * message, or FSPS_OK. */
static int first_failure(fsps_client *c, const fsps_status *st) {
  for (uint32_t s = 0; s < st->S; s++)
    if (st->srv[s].rc != FSPS_OK)
      return client_fail(c, st->srv[s].rc, "status of server %u (%s): %s", s,
                         st->addr[s], st->srv[s].msg);
  return FSPS_OK;
}

int fsps_status_get(fsps_client *c, fsps_status **out) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || out == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "out is NULL")
             : FSPS_INVALID_ARGUMENT;
  fsps_status *st = status_alloc(c);
  int rc = st == NULL ? FSPS_NOMEM : FSPS_OK;
  for (uint32_t s = 0; rc == FSPS_OK && s < c->S; s++)
    rc = ask_one(c, s, &st->srv[s]);
  if (rc != FSPS_OK) {
    fsps_status_free(st);
    return client_fail(c, rc, "status: out of memory");
  }
  *out = st;
  return first_failure(c, st);
}

void fsps_status_free(fsps_status *st) {
  if (st == NULL)
    return;
  for (uint32_t s = 0; st->srv != NULL && s < st->S; s++) {
    free(st->srv[s].msg);
    if (st->srv[s].r != NULL)
      protobuf_c_message_free_unpacked(&st->srv[s].r->base, NULL);
  }
  for (uint32_t s = 0; st->addr != NULL && s < st->S; s++)
    free(st->addr[s]);
  free(st->addr);
  free(st->srv);
  free(st);
}

/* ---- accessors ---- */

/* reply returns server s's answer, or NULL (out of range, no answer). */
static const Fsps__V1__StatusReply *reply(const fsps_status *st, uint32_t s) {
  return st != NULL && s < st->S ? st->srv[s].r : NULL;
}

/* layer returns layer l of server s's answer, or NULL. */
static const Fsps__V1__LayerStatus *layer(const fsps_status *st, uint32_t s,
                                          uint32_t l) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r != NULL && l < r->n_layers ? r->layers[l] : NULL;
}

uint32_t fsps_status_num_servers(const fsps_status *st) {
  return st ? st->S : 0;
}

const char *fsps_status_address(const fsps_status *st, uint32_t s) {
  return st != NULL && s < st->S ? st->addr[s] : "";
}

int fsps_status_error(const fsps_status *st, uint32_t s, const char **msg) {
  bool in = st != NULL && s < st->S;
  if (msg != NULL)
    *msg = in ? st->srv[s].msg : "no such server";
  return in ? st->srv[s].rc : FSPS_INVALID_ARGUMENT;
}

bool fsps_status_initialized(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r != NULL && r->initialized;
}

uint32_t fsps_status_server_index(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r ? r->server_index : 0;
}

uint32_t fsps_status_server_count(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r ? r->num_servers : 0;
}

uint32_t fsps_status_num_workers(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r ? r->num_workers : 0;
}

const char *fsps_status_mode(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r != NULL && r->mode != NULL ? r->mode : "";
}

uint64_t fsps_status_spec_hash(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r != NULL && r->initialized ? r->spec_hash : 0;
}

uint64_t fsps_status_incarnation(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r ? r->incarnation : 0;
}

uint64_t fsps_status_epoch(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r ? r->epoch : 0;
}

uint32_t fsps_status_checkpoints(const fsps_status *st, uint32_t s,
                                 const uint64_t **versions) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  if (versions != NULL)
    *versions = r ? r->checkpoint_versions : NULL;
  return r ? (uint32_t)r->n_checkpoint_versions : 0;
}

const void *fsps_status_model_spec(const fsps_status *st, uint32_t s,
                                   size_t *len) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  *len = r ? r->model_spec.len : 0;
  return *len ? r->model_spec.data : NULL;
}

uint32_t fsps_status_num_layers(const fsps_status *st, uint32_t s) {
  const Fsps__V1__StatusReply *r = reply(st, s);
  return r ? (uint32_t)r->n_layers : 0;
}

const char *fsps_status_layer_name(const fsps_status *st, uint32_t s,
                                   uint32_t l) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls != NULL && ls->name != NULL ? ls->name : "";
}

uint64_t fsps_status_layer_size(const fsps_status *st, uint32_t s,
                                uint32_t l) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? ls->n : 0;
}

uint64_t fsps_status_layer_slice_count(const fsps_status *st, uint32_t s,
                                       uint32_t l) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? ls->slice_count : 0;
}

uint64_t fsps_status_layer_version(const fsps_status *st, uint32_t s,
                                   uint32_t l) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? ls->version : 0;
}

uint64_t fsps_status_layer_pending_step(const fsps_status *st, uint32_t s,
                                        uint32_t l) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? ls->pending_step : 0;
}

bool fsps_status_layer_awaiting_values(const fsps_status *st, uint32_t s,
                                       uint32_t l) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls != NULL && ls->awaiting_values;
}

static uint32_t list(const uint32_t *ids, size_t n, const uint32_t **out) {
  if (out != NULL)
    *out = n > 0 ? ids : NULL;
  return (uint32_t)n;
}

uint32_t fsps_status_layer_pushed(const fsps_status *st, uint32_t s,
                                  uint32_t l, const uint32_t **workers) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? list(ls->pushed, ls->n_pushed, workers) : list(NULL, 0, workers);
}

uint32_t fsps_status_layer_missing(const fsps_status *st, uint32_t s,
                                   uint32_t l, const uint32_t **workers) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? list(ls->missing, ls->n_missing, workers)
            : list(NULL, 0, workers);
}

uint32_t fsps_status_layer_absent(const fsps_status *st, uint32_t s,
                                  uint32_t l, const uint32_t **workers) {
  const Fsps__V1__LayerStatus *ls = layer(st, s, l);
  return ls ? list(ls->absent, ls->n_absent, workers) : list(NULL, 0, workers);
}

/* ---- checkpoint ---- */

static void copy_path(char *path, size_t pathlen, const char *from) {
  if (path != NULL && pathlen > 0)
    snprintf(path, pathlen, "%s", from ? from : "");
}

int fsps_checkpoint(fsps_client *c, uint32_t s, char *path, size_t pathlen,
                    uint64_t *min_version, uint64_t *bytes) {
  if (c == NULL || s >= c->S)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT,
                           "checkpoint: no server %u (there are %u)", s, c->S)
             : FSPS_INVALID_ARGUMENT;
  copy_path(path, pathlen, "");
  Fsps__V1__CheckpointRequest req = FSPS__V1__CHECKPOINT_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  int rc = client_unary(c, s, WIRE_PATH_CHECKPOINT, &req.base,
                        &fsps__v1__checkpoint_reply__descriptor, &out, &st);
  if (rc != FSPS_OK)
    return client_fail(c, rc, "checkpoint of server %u (%s): %s", s,
                       c->addr[s], st.msg);
  Fsps__V1__CheckpointReply *r = (Fsps__V1__CheckpointReply *)out;
  copy_path(path, pathlen, r->path);
  if (min_version != NULL)
    *min_version = r->min_version;
  if (bytes != NULL)
    *bytes = r->bytes;
  protobuf_c_message_free_unpacked(out, NULL);
  return FSPS_OK;
}

/* ---- rollback ---- */

/* The versions of the layers server s slices (lo > hi: it slices none). */
static void layer_range(const Fsps__V1__StatusReply *r, uint64_t *lo,
                        uint64_t *hi) {
  *lo = UINT64_MAX;
  *hi = 0;
  for (size_t l = 0; l < r->n_layers; l++) {
    if (r->layers[l]->slice_count == 0)
      continue; /* empty slices never advance */
    uint64_t v = r->layers[l]->version;
    *lo = v < *lo ? v : *lo;
    *hi = v > *hi ? v : *hi;
  }
}

static bool holds_checkpoint(const Fsps__V1__StatusReply *r, uint64_t v) {
  for (size_t i = 0; i < r->n_checkpoint_versions; i++)
    if (r->checkpoint_versions[i] == v)
      return true;
  return false;
}

/* held lists r's checkpoint versions in buf ("none" when there are none). */
static void held(const Fsps__V1__StatusReply *r, char *buf, size_t len) {
  size_t at = (size_t)snprintf(buf, len, "%s",
                               r->n_checkpoint_versions ? "" : "none");
  for (size_t i = 0; i < r->n_checkpoint_versions && at < len; i++)
    at += (size_t)snprintf(buf + at, len - at, "%s%" PRIu64, i ? ", " : "",
                           r->checkpoint_versions[i]);
}

/* can_return says whether server s (answer r) can go back to version;
 * if not, c's message says why. */
static int can_return(fsps_client *c, uint32_t s,
                      const Fsps__V1__StatusReply *r, uint64_t version) {
  uint64_t lo, hi;
  layer_range(r, &lo, &hi);
  if (lo <= hi && version > lo)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "server %u (%s) cannot go forward to version %" PRIu64
                       ": its layers are at version %" PRIu64 " (lowest)",
                       s, c->addr[s], version, lo);
  if (lo > hi || version == 0 || holds_checkpoint(r, version) ||
      (lo == hi && version == lo))
    return FSPS_OK;
  char versions[256];
  held(r, versions, sizeof versions);
  return client_fail(c, FSPS_FAILED_PRECONDITION,
                     "server %u (%s) cannot go back to version %" PRIu64
                     ": it holds no checkpoint of it (its layers are at "
                     "%" PRIu64 "..%" PRIu64 "; checkpoints: %s; 0 is always "
                     "possible)",
                     s, c->addr[s], version, lo, hi, versions);
}

/* check_model makes sure every server holds one model (c's, if c has
 * one) and is not being rolled back; *hash gets the model's hash. */
static int check_model(fsps_client *c, const fsps_status *st, uint64_t *hash) {
  *hash = c->spec ? shard_spec_hash(c->spec) : reply(st, 0)->spec_hash;
  for (uint32_t s = 0; s < st->S; s++) {
    const Fsps__V1__StatusReply *r = reply(st, s);
    char have[17], want[17];
    shard_spec_hash_hex(r->spec_hash, have);
    shard_spec_hash_hex(*hash, want);
    if (!r->initialized)
      return client_fail(c, FSPS_FAILED_PRECONDITION,
                         "server %u (%s) has no model declared", s,
                         c->addr[s]);
    if (r->spec_hash != *hash)
      return client_fail(c, FSPS_FAILED_PRECONDITION,
                         "server %u (%s) holds model %s, not %s (%s)", s,
                         c->addr[s], have, want,
                         c->spec ? "this client's" : "server 0's");
    if (r->epoch == EPOCH_CHANGING)
      return client_fail(c, FSPS_ABORTED,
                         "server %u (%s) is being rolled back by another "
                         "client; try again",
                         s, c->addr[s]);
  }
  return FSPS_OK;
}

/* operator_epoch names the new timeline from what every server said, so
 * that the same states give the same epoch, and differs from the epoch a
 * worker's fsps_recover would choose from them (the salt). */
static uint64_t operator_epoch(const fsps_status *st, uint64_t hash,
                               uint64_t version) {
  uint64_t h = client_mix(client_mix(hash, ROLLBACK_SALT), version);
  for (uint32_t s = 0; s < st->S; s++)
    h = client_mix(client_mix(h, reply(st, s)->incarnation),
                   reply(st, s)->epoch);
  return h == 0 || h == EPOCH_CHANGING ? 1 : h;
}

static int rollback_one(fsps_client *c, uint32_t s, uint64_t version,
                        uint64_t hash, uint64_t epoch) {
  Fsps__V1__RollbackRequest req = FSPS__V1__ROLLBACK_REQUEST__INIT;
  req.version = version;
  req.spec_hash = hash;
  req.epoch = epoch;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  int rc = client_unary(c, s, WIRE_PATH_ROLLBACK, &req.base,
                        &fsps__v1__rollback_reply__descriptor, &out, &st);
  if (out != NULL)
    protobuf_c_message_free_unpacked(out, NULL);
  if (rc != FSPS_OK)
    client_fail(c, rc,
                "rollback of server %u (%s) to version %" PRIu64 ": %s%s", s,
                c->addr[s], version, st.msg,
                s > 0 ? " (the servers before it were rolled back; run it "
                        "again once this is fixed)"
                      : "");
  return rc;
}

/* plan_rollback checks that every server can go back to version and picks
 * the spec hash and the new epoch. */
static int plan_rollback(fsps_client *c, uint64_t version, uint64_t *hash,
                         uint64_t *epoch) {
  fsps_status *st = NULL;
  int rc = fsps_status_get(c, &st);
  if (rc == FSPS_OK)
    rc = check_model(c, st, hash);
  for (uint32_t s = 0; rc == FSPS_OK && s < st->S; s++)
    rc = can_return(c, s, reply(st, s), version);
  if (rc == FSPS_OK)
    *epoch = operator_epoch(st, *hash, version);
  fsps_status_free(st);
  return rc;
}

int fsps_rollback(fsps_client *c, uint64_t version, uint64_t *epoch) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  uint64_t hash = 0, e = 0;
  int rc = plan_rollback(c, version, &hash, &e);
  for (uint32_t s = 0; rc == FSPS_OK && s < c->S; s++)
    rc = rollback_one(c, s, version, hash, e);
  if (rc != FSPS_OK)
    return rc;
  atomic_store(&c->epoch, e);
  if (epoch != NULL)
    *epoch = e;
  return FSPS_OK;
}
