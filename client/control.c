/* control.c: the unary control calls — declaring the model on every server
 * (Init), attaching to a declared model and reading versions (Status). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "client_int.h"

#define ATTACH_POLL_MS 50

static void sleep_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                        .tv_nsec = (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

int client_unary(fsps_client *c, uint32_t s, const char *path,
                 const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc,
                 ProtobufCMessage **reply, rpc_status *st) {
  int rc;
  for (uint32_t attempt = 1;; attempt++) {
    rc = rpc_unary(c->ch[s], path, req, desc, reply, client_timeout_ms(c), st);
    if (rc != FSPS_UNAVAILABLE || attempt > client_retries(c))
      return rc;
    sleep_ms(client_backoff_ms(attempt));
  }
}

static const char *mode_name(fsps_mode m) {
  return m == FSPS_SSP ? "ssp" : m == FSPS_ASP ? "asp" : "bsp";
}

/* check_identity compares what server s says about itself with what this
 * client expects. */
static int check_identity(fsps_client *c, uint32_t s, uint32_t S, uint32_t idx,
                          uint32_t W) {
  if (S != c->S || idx != s)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "server %u (%s) says it is server %u of %u, but this "
                       "client lists it as server %u of %u",
                       s, c->addr[s], idx, S, s, c->S);
  if (W != 0 && W != c->o.world)
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "server %u (%s) waits for %u workers, but this worker "
                       "was started with world %u",
                       s, c->addr[s], W, c->o.world);
  return FSPS_OK;
}

static int check_hash(fsps_client *c, uint32_t s, uint64_t have,
                      uint64_t want) {
  if (have == want)
    return FSPS_OK;
  char h[17], w[17];
  shard_spec_hash_hex(have, h);
  shard_spec_hash_hex(want, w);
  c->refused_hash = have;
  return client_fail(c, FSPS_FAILED_PRECONDITION,
                     "server %u (%s) holds model %s, not this model %s", s,
                     c->addr[s], h, w);
}

/* explain_dtype adds to the client's error, after check_hash refused ss,
 * when the servers hold the same model with the other wire dtype. */
static void explain_dtype(fsps_client *c, const shard_spec *ss) {
  shard_spec *other = client_spec_clone(ss);
  if (other == NULL)
    return;
  shard_wire_dtype mine = shard_spec_wire_dtype(ss);
  shard_spec_set_wire_dtype(other, mine == SHARD_WIRE_BF16 ? SHARD_WIRE_FP32
                                                           : SHARD_WIRE_BF16);
  size_t n = strlen(c->err);
  if (shard_spec_hash(other) == c->refused_hash && n < sizeof c->err)
    snprintf(c->err + n, sizeof c->err - n,
             ": the servers hold this model with wire dtype %s, this worker "
             "asks for %s (--wire-dtype)",
             shard_wire_dtype_name(shard_spec_wire_dtype(other)),
             shard_wire_dtype_name(mine));
  shard_spec_destroy(other);
}

/* note_server records server s's incarnation and, from server 0, the
 * cluster epoch the client's pulls and pushes carry. Servers in other
 * epochs refuse them (FAILED_PRECONDITION), which fsps_recover settles. */
static void note_server(fsps_client *c, uint32_t s, uint64_t incarnation,
                        uint64_t epoch) {
  c->incarnation[s] = incarnation;
  if (s == 0)
    atomic_store(&c->epoch, epoch);
}

/* ---- declare ---- */

static int init_one(fsps_client *c, uint32_t s, Fsps__V1__ModelSpec *m,
                    uint64_t hash) {
  Fsps__V1__InitRequest req = FSPS__V1__INIT_REQUEST__INIT;
  req.spec = m;
  req.num_servers = c->S;
  req.server_index = s;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  int rc = client_unary(c, s, WIRE_PATH_INIT, &req.base,
                        &fsps__v1__init_reply__descriptor, &out, &st);
  if (rc != FSPS_OK)
    return client_fail(c, rc, "declare on server %u of %u: %s", s, c->S,
                       st.msg);
  Fsps__V1__InitReply *r = (Fsps__V1__InitReply *)out;
  rc = check_hash(c, s, r->spec_hash, hash);
  if (rc == FSPS_OK)
    rc = check_identity(c, s, r->num_servers, r->server_index, r->num_workers);
  if (rc == FSPS_OK)
    note_server(c, s, r->incarnation, r->epoch);
  protobuf_c_message_free_unpacked(out, NULL);
  return rc;
}

int client_init_one(fsps_client *c, uint32_t s) {
  wire_spec_msg m;
  int rc = wire_spec_to_proto(&m, c->spec);
  if (rc == FSPS_OK)
    rc = init_one(c, s, &m.model, shard_spec_hash(c->spec));
  else
    client_fail(c, rc, "out of memory building the Init request");
  wire_spec_msg_free(&m);
  return rc;
}

static int check_spec_arg(fsps_client *c, const fsps_spec *spec) {
  if (spec == NULL)
    return client_fail(c, FSPS_INVALID_ARGUMENT, "no spec (NULL)");
  char msg[512];
  if (fsps_spec_validate(spec, msg, sizeof msg) != FSPS_OK)
    return client_fail(c, FSPS_INVALID_ARGUMENT, "invalid model spec: %s", msg);
  return FSPS_OK;
}

/* with_options returns the spec c declares or attaches with: spec's own,
 * or, when c's options name a wire dtype, a copy with it in *copy (which
 * the caller frees; NULL when none was made). NULL when out of memory. */
static const shard_spec *with_options(fsps_client *c, const fsps_spec *spec,
                                      shard_spec **copy) {
  *copy = NULL;
  const shard_spec *ss = client_spec_shard(spec);
  if (c->o.wire_dtype == FSPS_WIRE_AS_SPEC)
    return ss;
  if ((*copy = client_spec_clone(ss)) != NULL)
    shard_spec_set_wire_dtype(*copy, c->o.wire_dtype == FSPS_WIRE_BF16
                                         ? SHARD_WIRE_BF16
                                         : SHARD_WIRE_FP32);
  return *copy;
}

/* declare_spec declares ss on every server and adopts it. */
static int declare_spec(fsps_client *c, const shard_spec *ss) {
  wire_spec_msg m;
  int rc = wire_spec_to_proto(&m, ss);
  if (rc != FSPS_OK) {
    wire_spec_msg_free(&m);
    return client_fail(c, rc, "out of memory building the Init request");
  }
  size_t bytes = protobuf_c_message_get_packed_size(&m.model.base);
  if (bytes > WIRE_SPEC_MAX_BYTES)
    rc = client_fail(c, FSPS_RESOURCE_EXHAUSTED,
                     "the model spec encodes to %zu bytes; at most %u fit in "
                     "one message",
                     bytes, WIRE_SPEC_MAX_BYTES);
  uint64_t hash = shard_spec_hash(ss);
  for (uint32_t s = 0; rc == FSPS_OK && s < c->S; s++)
    rc = init_one(c, s, &m.model, hash);
  wire_spec_msg_free(&m);
  return rc == FSPS_OK ? client_adopt_spec(c, ss) : rc;
}

int fsps_declare(fsps_client *c, const fsps_spec *spec) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = check_spec_arg(c, spec);
  if (rc != FSPS_OK)
    return rc;
  shard_spec *copy;
  const shard_spec *ss = with_options(c, spec, &copy);
  c->refused_hash = 0;
  rc = ss ? declare_spec(c, ss)
          : client_fail(c, FSPS_NOMEM, "out of memory copying the spec");
  if (rc == FSPS_FAILED_PRECONDITION && c->refused_hash != 0)
    explain_dtype(c, ss);
  shard_spec_destroy(copy);
  return rc;
}

/* ---- status ---- */

static int status_call(fsps_client *c, uint32_t s, int64_t timeout_ms,
                       Fsps__V1__StatusReply **out, rpc_status *st) {
  Fsps__V1__StatusRequest req = FSPS__V1__STATUS_REQUEST__INIT;
  return rpc_unary(c->ch[s], WIRE_PATH_STATUS, &req.base,
                   &fsps__v1__status_reply__descriptor,
                   (ProtobufCMessage **)out, timeout_ms, st);
}

static int check_attached(fsps_client *c, uint32_t s,
                          const Fsps__V1__StatusReply *r, uint64_t hash) {
  int rc = check_hash(c, s, r->spec_hash, hash);
  if (rc == FSPS_OK)
    rc = check_identity(c, s, r->num_servers, r->server_index, r->num_workers);
  if (rc == FSPS_OK && r->mode != NULL && r->mode[0] != '\0' &&
      strcasecmp(r->mode, mode_name(c->o.mode)) != 0)
    rc = client_fail(c, FSPS_FAILED_PRECONDITION,
                     "server %u (%s) runs in mode %s, but this worker in %s", s,
                     c->addr[s], r->mode, mode_name(c->o.mode));
  return rc;
}

/* poll_one asks server s once; *done tells whether the answer settles it
 * (then the result is the check's), else st says what the server said. */
static int poll_one(fsps_client *c, uint32_t s, uint64_t hash,
                    int64_t timeout_ms, bool *done, rpc_status *st) {
  Fsps__V1__StatusReply *r = NULL;
  int rc = status_call(c, s, timeout_ms, &r, st);
  *done = false;
  if (rc == FSPS_OK && r->initialized) {
    *done = true;
    rc = check_attached(c, s, r, hash);
    if (rc == FSPS_OK)
      note_server(c, s, r->incarnation, r->epoch);
  } else if (rc == FSPS_OK) {
    rpc_status_set(st, FSPS_NOT_FOUND, "server %s: no model declared yet",
                   c->addr[s]);
  } else if (rc != FSPS_UNAVAILABLE && rc != FSPS_DEADLINE_EXCEEDED) {
    *done = true;
    client_fail(c, rc, "attach to server %u of %u: %s", s, c->S, st->msg);
  }
  if (r != NULL)
    protobuf_c_message_free_unpacked(&r->base, NULL);
  return *done ? rc : FSPS_OK;
}

/* attach_one polls server s until it has a model or deadline_ns passes. */
static int attach_one(fsps_client *c, uint32_t s, uint64_t hash,
                      int64_t deadline_ns) {
  rpc_status st;
  for (;;) {
    bool done;
    int64_t left_ms = (deadline_ns - client_now_ns()) / 1000000;
    if (left_ms > client_timeout_ms(c))
      left_ms = client_timeout_ms(c);
    int rc = poll_one(c, s, hash, left_ms > 0 ? left_ms : 1, &done, &st);
    if (done)
      return rc;
    if (client_now_ns() >= deadline_ns)
      return client_fail(c, FSPS_DEADLINE_EXCEEDED,
                         "attach: server %u of %u has no model after waiting "
                         "(last answer: %s)",
                         s, c->S, st.msg);
    sleep_ms(ATTACH_POLL_MS);
  }
}

/* attach_spec waits for every server to hold ss, then adopts it. */
static int attach_spec(fsps_client *c, const shard_spec *ss,
                       int64_t timeout_ms) {
  if (timeout_ms <= 0)
    timeout_ms = client_timeout_ms(c);
  int64_t deadline = client_now_ns() + timeout_ms * 1000000;
  uint64_t hash = shard_spec_hash(ss);
  int rc = FSPS_OK;
  for (uint32_t s = 0; rc == FSPS_OK && s < c->S; s++)
    rc = attach_one(c, s, hash, deadline);
  return rc == FSPS_OK ? client_adopt_spec(c, ss) : rc;
}

int fsps_attach(fsps_client *c, const fsps_spec *spec, int64_t timeout_ms) {
  if (c == NULL)
    return FSPS_INVALID_ARGUMENT;
  int rc = check_spec_arg(c, spec);
  if (rc != FSPS_OK)
    return rc;
  shard_spec *copy;
  const shard_spec *ss = with_options(c, spec, &copy);
  c->refused_hash = 0;
  rc = ss ? attach_spec(c, ss, timeout_ms)
          : client_fail(c, FSPS_NOMEM, "out of memory copying the spec");
  if (rc == FSPS_FAILED_PRECONDITION && c->refused_hash != 0)
    explain_dtype(c, ss);
  shard_spec_destroy(copy);
  return rc;
}

/* ---- versions ---- */

static int version_one(fsps_client *c, uint32_t s, uint32_t layer,
                       uint64_t *version) {
  Fsps__V1__StatusRequest req = FSPS__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  int rc = client_unary(c, s, WIRE_PATH_STATUS, &req.base,
                        &fsps__v1__status_reply__descriptor, &out, &st);
  if (rc != FSPS_OK)
    return client_fail(c, rc, "status of server %u of %u: %s", s, c->S, st.msg);
  Fsps__V1__StatusReply *r = (Fsps__V1__StatusReply *)out;
  if (!r->initialized)
    rc = client_fail(c, FSPS_NOT_FOUND, "server %u (%s) has no model declared",
                     s, c->addr[s]);
  else if (layer >= r->n_layers)
    rc = client_fail(c, FSPS_NOT_FOUND,
                     "server %u (%s) has %zu layers; there is no layer %u", s,
                     c->addr[s], r->n_layers, layer);
  else if (r->layers[layer]->slice_count > 0 &&
           r->layers[layer]->version < *version)
    *version = r->layers[layer]->version; /* empty slices never advance */
  protobuf_c_message_free_unpacked(out, NULL);
  return rc;
}

int fsps_layer_version(fsps_client *c, uint32_t layer, uint64_t *version) {
  if (c == NULL || version == NULL)
    return c ? client_fail(c, FSPS_INVALID_ARGUMENT, "version is NULL")
             : FSPS_INVALID_ARGUMENT;
  uint64_t v = UINT64_MAX;
  int rc = FSPS_OK;
  for (uint32_t s = 0; rc == FSPS_OK && s < c->S; s++)
    rc = version_one(c, s, layer, &v);
  if (rc == FSPS_OK)
    *version = v;
  return rc;
}
